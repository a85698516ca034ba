//! Event source mappings as the Lambda API shows them (`2015-03-31/event-source-mappings`):
//! Create, Get, Update, Delete and List, for gust queues (`EventSourceArn` an SQS queue ARN of
//! gust's). The caller needs Deploy on the function (Read to look), and, as for queues, no
//! limit to some functions.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use gust_core::access::Action;
use gust_core::lambda::function_arn;
use gust_core::limits::MAX_CONFIG_BODY_BYTES;
use gust_core::queue::{queue_arn, queue_of_arn, EventSourceMapping};
use serde::Deserialize;
use serde_json::{json, Value};

use super::functions::json_body;
use super::{target, AwsError, AwsResult, QueryMap};
use crate::access::Access;
use crate::AppState;

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct MappingIn {
    event_source_arn: Option<String>,
    function_name: Option<String>,
    enabled: Option<bool>,
    batch_size: Option<u32>,
    maximum_batching_window_in_seconds: Option<u32>,
    function_response_types: Option<Vec<String>>,
    scaling_config: Option<ScalingIn>,
    filter_criteria: Option<Value>,
    starting_position: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ScalingIn {
    maximum_concurrency: Option<u32>,
}

fn shown(m: &EventSourceMapping) -> Value {
    let mut v = json!({
        "UUID": m.uuid,
        "BatchSize": m.batch_size,
        "MaximumBatchingWindowInSeconds": m.maximum_batching_window_s,
        "EventSourceArn": queue_arn(&m.queue),
        "FunctionArn": function_arn(&m.function, m.qualifier.as_deref()),
        "LastModified": m.updated_at as f64 / 1000.0,
        "State": if m.enabled { "Enabled" } else { "Disabled" },
        "StateTransitionReason": "USER_INITIATED",
        "FunctionResponseTypes": if m.report_batch_item_failures { vec!["ReportBatchItemFailures"] } else { vec![] },
    });
    if let Some(c) = m.maximum_concurrency {
        v["ScalingConfig"] = json!({ "MaximumConcurrency": c });
    }
    if !m.filters.is_empty() {
        let filters: Vec<Value> = m.filters.iter().map(|p| json!({ "Pattern": p })).collect();
        v["FilterCriteria"] = json!({ "Filters": filters });
    }
    v
}

/// The caller may `action` mappings of `function` (and so read its queues).
fn allow(access: &Access, action: Action, function: &str) -> Result<(), AwsError> {
    access.check(action, Some(function)).map_err(AwsError::from)?;
    if access.0.functions.is_some() {
        return Err(AwsError::new(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            format!("{} is limited to some functions and has no queues", access.0.principal),
        ));
    }
    Ok(())
}

/// Applies what the request gives over `m`.
fn apply(m: &mut EventSourceMapping, b: MappingIn) -> Result<(), AwsError> {
    if let Some(criteria) = &b.filter_criteria {
        // `{"Filters": [{"Pattern": "..."}]}`; `{}` or no filters clears them.
        let filters = match criteria.get("Filters") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .map(|f| f.get("Pattern").and_then(Value::as_str).map(str::to_string))
                .collect::<Option<Vec<String>>>()
                .ok_or_else(|| {
                    AwsError::invalid("each of FilterCriteria.Filters is {\"Pattern\": \"...\"}")
                })?,
            Some(_) => return Err(AwsError::invalid("FilterCriteria.Filters must be a list")),
        };
        m.filters = filters;
    }
    if b.starting_position.is_some() {
        return Err(AwsError::invalid("StartingPosition is for streams; gust queues have none"));
    }
    if let Some(e) = b.enabled {
        m.enabled = e;
    }
    if let Some(n) = b.batch_size {
        m.batch_size = n;
    }
    if let Some(w) = b.maximum_batching_window_in_seconds {
        m.maximum_batching_window_s = w;
    }
    if let Some(types) = b.function_response_types {
        if types.iter().any(|t| t != "ReportBatchItemFailures") {
            return Err(AwsError::invalid("FunctionResponseTypes may only be [\"ReportBatchItemFailures\"]"));
        }
        m.report_batch_item_failures = !types.is_empty();
    }
    if let Some(s) = b.scaling_config {
        m.maximum_concurrency = s.maximum_concurrency;
    }
    Ok(())
}

pub(crate) async fn create(State(s): State<AppState>, access: Access, body: Body) -> AwsResult {
    let b: MappingIn = json_body(body, MAX_CONFIG_BODY_BYTES).await?;
    let arn = b.event_source_arn.clone().ok_or_else(|| AwsError::invalid("EventSourceArn is required"))?;
    let queue = queue_of_arn(&arn)
        .ok_or_else(|| {
            AwsError::invalid(format!("EventSourceArn {} is not a gust queue's ARN", super::truncate(&arn)))
        })?
        .to_string();
    let raw = b.function_name.clone().ok_or_else(|| AwsError::invalid("FunctionName is required"))?;
    let (function, qualifier) = target(&raw, None)?;
    allow(&access, Action::Deploy, &function)?;
    let mut m = EventSourceMapping {
        uuid: String::new(),
        queue,
        function,
        qualifier: super::non_latest(qualifier),
        batch_size: 10,
        maximum_batching_window_s: 0,
        enabled: true,
        report_batch_item_failures: false,
        maximum_concurrency: None,
        filters: Vec::new(),
        updated_at: 0,
    };
    apply(&mut m, b)?;
    let m = s.service.create_mapping(m).await?;
    Ok((StatusCode::ACCEPTED, Json(shown(&m))).into_response())
}

/// A mapping's uuid as the path gives it: anything but a UUID names no mapping.
fn uuid_of(raw: &str) -> Result<String, AwsError> {
    uuid::Uuid::parse_str(raw).map(|u| u.to_string()).map_err(|_| {
        AwsError::not_found(format!(
            "The resource you requested does not exist. (Service: Lambda; UUID: {})",
            super::truncate(raw)
        ))
    })
}

pub(crate) async fn get(State(s): State<AppState>, access: Access, Path(uuid): Path<String>) -> AwsResult {
    let uuid = uuid_of(&uuid)?;
    let m = s.service.mapping(&uuid).await?;
    allow(&access, Action::Read, &m.function)?;
    Ok(Json(shown(&m)).into_response())
}

pub(crate) async fn update(
    State(s): State<AppState>, access: Access, Path(uuid): Path<String>, body: Body,
) -> AwsResult {
    let uuid = uuid_of(&uuid)?;
    let b: MappingIn = json_body(body, MAX_CONFIG_BODY_BYTES).await?;
    let mut m = s.service.mapping(&uuid).await?;
    allow(&access, Action::Deploy, &m.function)?;
    if let Some(raw) = b.function_name.clone() {
        let (function, qualifier) = target(&raw, None)?;
        allow(&access, Action::Deploy, &function)?;
        m.function = function;
        m.qualifier = super::non_latest(qualifier);
    }
    if b.event_source_arn.is_some() {
        return Err(AwsError::invalid("a mapping's EventSourceArn cannot change: create another"));
    }
    apply(&mut m, b)?;
    let m = s.service.update_mapping(m).await?;
    Ok((StatusCode::ACCEPTED, Json(shown(&m))).into_response())
}

pub(crate) async fn delete(State(s): State<AppState>, access: Access, Path(uuid): Path<String>) -> AwsResult {
    let uuid = uuid_of(&uuid)?;
    let m = s.service.mapping(&uuid).await?;
    allow(&access, Action::Deploy, &m.function)?;
    let m = s.service.delete_mapping(&uuid).await?;
    let mut v = shown(&m);
    v["State"] = json!("Deleting");
    Ok((StatusCode::ACCEPTED, Json(v)).into_response())
}

pub(crate) async fn list(State(s): State<AppState>, access: Access, Query(q): Query<QueryMap>) -> AwsResult {
    let function = match q.get("FunctionName") {
        Some(raw) => Some(target(raw, None)?.0),
        None => None,
    };
    let queue = q.get("EventSourceArn").map(|a| queue_of_arn(a).map(str::to_string));
    let all = s.service.list_mappings().await?;
    let shown: Vec<Value> = all
        .iter()
        .filter(|m| function.as_ref().is_none_or(|f| &m.function == f))
        .filter(|m| queue.as_ref().is_none_or(|q| q.as_deref() == Some(m.queue.as_str())))
        .filter(|m| access.covers(&m.function) && access.0.functions.is_none())
        .map(shown)
        .collect();
    Ok(Json(json!({ "EventSourceMappings": shown })).into_response())
}
