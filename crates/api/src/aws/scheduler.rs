//! The EventBridge Scheduler API (rest-json, `2021-06-30`, signing name `scheduler`):
//! CreateSchedule, GetSchedule, UpdateSchedule, DeleteSchedule, ListSchedules and the schedule
//! group operations, with Scheduler's shapes and errors (`ValidationException`,
//! `ResourceNotFoundException`, `ConflictException`, ...), so boto3's `scheduler` client and
//! the AWS SDKs work with `--endpoint-url`.
//!
//! Targets are gust functions (Lambda ARNs) and gust queues (SQS ARNs). Reading needs Read;
//! writing needs Deploy, on the target function too; a key limited to some functions has no
//! schedules (a schedule outlives the functions it names, as a queue does).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use gust_core::access::Action;
use gust_core::limits::MAX_CONFIG_BODY_BYTES;
use gust_core::schedule::{
    group_arn, schedule_arn, RetryPolicy, Schedule, Target, TargetKind, DEFAULT_GROUP,
};
use gust_core::Millis;
use gust_service::{ScheduleView, ServiceError};
use gust_store::ScheduleGroup;
use serde::Deserialize;
use serde_json::{json, Value};

use super::functions::json_body;
use super::{AwsError, QueryMap};
use crate::access::Access;
use crate::AppState;

/// An error as Scheduler names it.
pub(crate) struct SchedulerError(AwsError);

type Result<T, E = SchedulerError> = std::result::Result<T, E>;

impl From<AwsError> for SchedulerError {
    fn from(e: AwsError) -> Self {
        SchedulerError(e.renamed(|exception| match exception {
            "InvalidParameterValueException"
            | "InvalidRequestContentException"
            | "RequestTooLargeException" => "ValidationException",
            "ResourceConflictException" => "ConflictException",
            "TooManyRequestsException" => "ThrottlingException",
            "ServiceException" => "InternalServerException",
            other => other,
        }))
    }
}

impl From<ServiceError> for SchedulerError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound { kind, name } => {
                let what = match kind {
                    gust_store::Kind::ScheduleGroup => "Schedule group",
                    _ => "Schedule",
                };
                SchedulerError(AwsError::not_found(format!("{what} {name} does not exist.")))
            }
            other => AwsError::from(other).into(),
        }
    }
}

impl SchedulerError {
    fn validation(message: impl Into<String>) -> Self {
        SchedulerError(AwsError::new(StatusCode::BAD_REQUEST, "ValidationException", message))
    }
}

impl IntoResponse for SchedulerError {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ScheduleIn {
    group_name: Option<String>,
    schedule_expression: Option<String>,
    schedule_expression_timezone: Option<String>,
    start_date: Option<f64>,
    end_date: Option<f64>,
    description: Option<String>,
    state: Option<String>,
    kms_key_arn: Option<String>,
    target: Option<TargetIn>,
    flexible_time_window: Option<WindowIn>,
    client_token: Option<String>,
    action_after_completion: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct TargetIn {
    arn: Option<String>,
    role_arn: Option<String>,
    input: Option<String>,
    retry_policy: Option<RetryIn>,
    dead_letter_config: Option<DeadLetterIn>,
    sqs_parameters: Option<Value>,
    ecs_parameters: Option<Value>,
    event_bridge_parameters: Option<Value>,
    event_bridge_put_events_v2_parameters: Option<Value>,
    event_bridge_put_raw_events_parameters: Option<Value>,
    kinesis_parameters: Option<Value>,
    sage_maker_pipeline_parameters: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RetryIn {
    maximum_event_age_in_seconds: Option<u32>,
    maximum_retry_attempts: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct DeadLetterIn {
    arn: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct WindowIn {
    mode: Option<String>,
    maximum_window_in_minutes: Option<u32>,
}

/// Seconds (what rest-json carries) to milliseconds.
fn millis(seconds: f64) -> Result<Millis> {
    if !seconds.is_finite() || !(0.0..=7_258_118_400.0).contains(&seconds) {
        return Err(SchedulerError::validation("a date must be between 1970 and 2200"));
    }
    Ok((seconds * 1000.0).round() as Millis)
}

fn seconds(ms: Millis) -> f64 {
    ms as f64 / 1000.0
}

/// The schedule a Create or Update request describes (all of it: Update replaces).
fn schedule_of(name: &str, b: ScheduleIn) -> Result<Schedule> {
    let _ = &b.client_token;
    let expression =
        b.schedule_expression.ok_or_else(|| SchedulerError::validation("ScheduleExpression is required"))?;
    let t = b.target.ok_or_else(|| SchedulerError::validation("Target is required"))?;
    let window =
        b.flexible_time_window.ok_or_else(|| SchedulerError::validation("FlexibleTimeWindow is required"))?;
    let flexible_window_minutes = match (window.mode.as_deref(), window.maximum_window_in_minutes) {
        (Some("OFF"), None) => None,
        (Some("OFF"), Some(_)) => {
            return Err(SchedulerError::validation("MaximumWindowInMinutes is only for Mode FLEXIBLE"))
        }
        (Some("FLEXIBLE"), Some(m)) => Some(m),
        (Some("FLEXIBLE"), None) => {
            return Err(SchedulerError::validation("Mode FLEXIBLE needs MaximumWindowInMinutes"))
        }
        _ => return Err(SchedulerError::validation("FlexibleTimeWindow.Mode must be OFF or FLEXIBLE")),
    };
    let others = [
        ("EcsParameters", t.ecs_parameters.is_some()),
        ("EventBridgeParameters", t.event_bridge_parameters.is_some()),
        ("EventBridgePutEventsV2Parameters", t.event_bridge_put_events_v2_parameters.is_some()),
        ("EventBridgePutRawEventsParameters", t.event_bridge_put_raw_events_parameters.is_some()),
        ("KinesisParameters", t.kinesis_parameters.is_some()),
        ("SageMakerPipelineParameters", t.sage_maker_pipeline_parameters.is_some()),
    ];
    if let Some((what, _)) = others.iter().find(|(_, given)| *given) {
        return Err(SchedulerError::validation(format!(
            "Target.{what} is not supported by gust: targets are gust functions and queues"
        )));
    }
    let message_group_id = match &t.sqs_parameters {
        None | Some(Value::Null) => None,
        Some(p) => match p.get("MessageGroupId") {
            Some(Value::String(g)) => Some(g.clone()),
            _ => return Err(SchedulerError::validation("SqsParameters.MessageGroupId must be a string")),
        },
    };
    let retry = t.retry_policy.unwrap_or_default();
    let defaults = RetryPolicy::default();
    let enabled = match b.state.as_deref() {
        None | Some("ENABLED") => true,
        Some("DISABLED") => false,
        Some(other) => {
            return Err(SchedulerError::validation(format!("State {other:?} must be ENABLED or DISABLED")))
        }
    };
    let delete_after_completion = match b.action_after_completion.as_deref() {
        None | Some("NONE") => false,
        Some("DELETE") => true,
        Some(other) => {
            return Err(SchedulerError::validation(format!(
                "ActionAfterCompletion {other:?} must be NONE or DELETE"
            )))
        }
    };
    Ok(Schedule {
        group: b.group_name.unwrap_or_else(|| DEFAULT_GROUP.to_string()),
        name: name.to_string(),
        expression,
        timezone: b.schedule_expression_timezone.unwrap_or_else(|| "UTC".to_string()),
        start: b.start_date.map(millis).transpose()?,
        end: b.end_date.map(millis).transpose()?,
        enabled,
        flexible_window_minutes,
        target: Target {
            arn: t.arn.ok_or_else(|| SchedulerError::validation("Target.Arn is required"))?,
            role_arn: t.role_arn.ok_or_else(|| SchedulerError::validation("Target.RoleArn is required"))?,
            input: t.input,
            retry_policy: RetryPolicy {
                maximum_event_age_seconds: retry
                    .maximum_event_age_in_seconds
                    .unwrap_or(defaults.maximum_event_age_seconds),
                maximum_retry_attempts: retry
                    .maximum_retry_attempts
                    .unwrap_or(defaults.maximum_retry_attempts),
            },
            dead_letter_arn: t.dead_letter_config.and_then(|d| d.arn),
            message_group_id,
        },
        description: b.description.unwrap_or_default(),
        delete_after_completion,
        kms_key_arn: b.kms_key_arn,
        created_at: 0,
        updated_at: 0,
    })
}

fn shown(v: &ScheduleView) -> Value {
    let s = &v.schedule;
    let mut target = json!({
        "Arn": s.target.arn,
        "RoleArn": s.target.role_arn,
        "RetryPolicy": {
            "MaximumEventAgeInSeconds": s.target.retry_policy.maximum_event_age_seconds,
            "MaximumRetryAttempts": s.target.retry_policy.maximum_retry_attempts,
        },
    });
    if let Some(input) = &s.target.input {
        target["Input"] = json!(input);
    }
    if let Some(dlq) = &s.target.dead_letter_arn {
        target["DeadLetterConfig"] = json!({ "Arn": dlq });
    }
    if let Some(g) = &s.target.message_group_id {
        target["SqsParameters"] = json!({ "MessageGroupId": g });
    }
    let mut out = json!({
        "ActionAfterCompletion": if s.delete_after_completion { "DELETE" } else { "NONE" },
        "Arn": s.arn(),
        "CreationDate": seconds(s.created_at),
        "LastModificationDate": seconds(s.updated_at),
        "GroupName": s.group,
        "Name": s.name,
        "ScheduleExpression": s.expression,
        "ScheduleExpressionTimezone": s.timezone,
        "State": if s.enabled { "ENABLED" } else { "DISABLED" },
        "Target": target,
        "FlexibleTimeWindow": match s.flexible_window_minutes {
            Some(m) => json!({ "Mode": "FLEXIBLE", "MaximumWindowInMinutes": m }),
            None => json!({ "Mode": "OFF" }),
        },
    });
    if !s.description.is_empty() {
        out["Description"] = json!(s.description);
    }
    for (key, at) in [("StartDate", s.start), ("EndDate", s.end)] {
        if let Some(at) = at {
            out[key] = json!(seconds(at));
        }
    }
    if let Some(k) = &s.kms_key_arn {
        out["KmsKeyArn"] = json!(k);
    }
    out
}

fn group_shown(g: &ScheduleGroup) -> Value {
    json!({
        "Arn": group_arn(&g.name),
        "Name": g.name,
        "State": "ACTIVE",
        "CreationDate": seconds(g.created_at),
        "LastModificationDate": seconds(g.updated_at),
    })
}

/// The caller may `action` schedules (and, writing, the target function).
fn allow(access: &Access, action: Action, target: Option<&Schedule>) -> Result<()> {
    access.check(action, None).map_err(AwsError::from)?;
    if access.0.functions.is_some() {
        return Err(AwsError::new(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            format!("{} is limited to some functions and has no schedules", access.0.principal),
        )
        .into());
    }
    if let Some(Ok(TargetKind::Function { name, .. })) = target.map(Schedule::target_kind) {
        access.check(Action::Deploy, Some(&name)).map_err(AwsError::from)?;
    }
    Ok(())
}

/// Every name a request carries is checked before anything reaches the store (a NUL byte is
/// a database error on PostgreSQL, not a missing schedule).
fn checked<'a>(what: &str, name: &'a str) -> Result<&'a str> {
    gust_core::schedule::validate_name(what, name).map_err(SchedulerError::validation)?;
    Ok(name)
}

fn group_of(q: &QueryMap) -> Result<&str> {
    checked("groupName", q.get("groupName").map_or(DEFAULT_GROUP, String::as_str))
}

async fn put(s: &AppState, access: &Access, name: &str, body: Body, create: bool) -> Result<Response> {
    gust_core::schedule::validate_name("Name", name).map_err(SchedulerError::validation)?;
    let b: ScheduleIn = json_body(body, MAX_CONFIG_BODY_BYTES).await?;
    let schedule = schedule_of(name, b)?;
    allow(access, Action::Deploy, Some(&schedule))?;
    let v = s.service.put_schedule(schedule, create).await?;
    Ok(Json(json!({ "ScheduleArn": v.schedule.arn() })).into_response())
}

pub(crate) async fn create(
    State(s): State<AppState>, access: Access, Path(name): Path<String>, body: Body,
) -> Result<Response> {
    put(&s, &access, &name, body, true).await
}

pub(crate) async fn update(
    State(s): State<AppState>, access: Access, Path(name): Path<String>, body: Body,
) -> Result<Response> {
    put(&s, &access, &name, body, false).await
}

pub(crate) async fn get(
    State(s): State<AppState>, access: Access, Path(name): Path<String>, Query(q): Query<QueryMap>,
) -> Result<Response> {
    allow(&access, Action::Read, None)?;
    let v = s.service.schedule(group_of(&q)?, checked("Name", &name)?).await?;
    Ok(Json(shown(&v)).into_response())
}

pub(crate) async fn delete(
    State(s): State<AppState>, access: Access, Path(name): Path<String>, Query(q): Query<QueryMap>,
) -> Result<Response> {
    allow(&access, Action::Deploy, None)?;
    s.service.delete_schedule(group_of(&q)?, checked("Name", &name)?).await?;
    Ok(Json(json!({})).into_response())
}

/// `MaxResults`: 1-100, 100 when absent.
fn max_results(q: &QueryMap) -> Result<usize> {
    match q.get("MaxResults") {
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|m| (1..=100).contains(m))
            .ok_or_else(|| SchedulerError::validation("MaxResults must be from 1 to 100")),
        None => Ok(100),
    }
}

/// A page's size and where it starts: `NextToken` is the last (group, name) of the page before.
fn page(q: &QueryMap) -> Result<(usize, Option<(String, String)>)> {
    let limit = max_results(q)?;
    let after = match q.get("NextToken") {
        Some(t) => {
            let bad = || SchedulerError::validation("NextToken is not one gust gave");
            let (g, n) = t.split_once('/').ok_or_else(bad)?;
            if checked("NextToken", g).is_err() || checked("NextToken", n).is_err() {
                return Err(bad());
            }
            Some((g.to_string(), n.to_string()))
        }
        None => None,
    };
    Ok((limit, after))
}

pub(crate) async fn list(
    State(s): State<AppState>, access: Access, Query(q): Query<QueryMap>,
) -> Result<Response> {
    allow(&access, Action::Read, None)?;
    let (limit, after) = page(&q)?;
    let state = match q.get("State").map(String::as_str) {
        None => None,
        Some("ENABLED") => Some(true),
        Some("DISABLED") => Some(false),
        Some(_) => return Err(SchedulerError::validation("State must be ENABLED or DISABLED")),
    };
    let prefix = q.get("NamePrefix").map_or("", String::as_str);
    if !prefix.is_empty() {
        checked("NamePrefix", prefix)?;
    }
    let group = match q.get("ScheduleGroup") {
        Some(g) => Some(checked("ScheduleGroup", g)?),
        None => None,
    };
    // A State filter may skip rows: read on (in pages of 100, at most 1,000 rows a call) until
    // the page is full or the list ends; a page cut short by the bound still gives a token.
    let mut out = Vec::new();
    let mut cursor = after;
    let mut next = None;
    let mut scanned = 0;
    'pages: loop {
        let found = s.service.list_schedules(group, prefix, cursor.clone(), 100).await?;
        let full = found.len() == 100;
        for v in found {
            scanned += 1;
            cursor = Some((v.schedule.group.clone(), v.schedule.name.clone()));
            if state.is_none_or(|e| e == v.schedule.enabled) {
                out.push(v);
                if out.len() == limit {
                    next = cursor.clone();
                    break 'pages;
                }
            }
        }
        if !full {
            break;
        }
        if scanned >= 1_000 {
            next = cursor.clone();
            break;
        }
    }
    let next = next.map(|(g, n)| format!("{g}/{n}"));
    let schedules: Vec<Value> = out
        .iter()
        .map(|v| {
            let s = &v.schedule;
            json!({
                "Arn": schedule_arn(&s.group, &s.name),
                "Name": s.name,
                "GroupName": s.group,
                "State": if s.enabled { "ENABLED" } else { "DISABLED" },
                "CreationDate": seconds(s.created_at),
                "LastModificationDate": seconds(s.updated_at),
                "Target": { "Arn": s.target.arn },
            })
        })
        .collect();
    let mut body = json!({ "Schedules": schedules });
    if let Some(t) = next {
        body["NextToken"] = json!(t);
    }
    Ok(Json(body).into_response())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct GroupIn {
    client_token: Option<String>,
    tags: Option<Vec<Value>>,
}

pub(crate) async fn create_group(
    State(s): State<AppState>, access: Access, Path(name): Path<String>, body: Body,
) -> Result<Response> {
    allow(&access, Action::Deploy, None)?;
    let b: GroupIn = json_body(body, MAX_CONFIG_BODY_BYTES).await?;
    let _ = &b.client_token;
    if b.tags.is_some_and(|t| !t.is_empty()) {
        return Err(SchedulerError::validation("Tags are not supported by gust"));
    }
    let g = s.service.create_schedule_group(&name).await?;
    Ok(Json(json!({ "ScheduleGroupArn": group_arn(&g.name) })).into_response())
}

pub(crate) async fn get_group(
    State(s): State<AppState>, access: Access, Path(name): Path<String>,
) -> Result<Response> {
    allow(&access, Action::Read, None)?;
    Ok(Json(group_shown(&s.service.schedule_group(checked("Name", &name)?).await?)).into_response())
}

pub(crate) async fn delete_group(
    State(s): State<AppState>, access: Access, Path(name): Path<String>,
) -> Result<Response> {
    allow(&access, Action::Deploy, None)?;
    s.service.delete_schedule_group(checked("Name", &name)?).await?;
    Ok(Json(json!({})).into_response())
}

pub(crate) async fn list_groups(
    State(s): State<AppState>, access: Access, Query(q): Query<QueryMap>,
) -> Result<Response> {
    allow(&access, Action::Read, None)?;
    let limit = max_results(&q)?;
    let after = match q.get("NextToken") {
        Some(t) => Some(checked("NextToken", t)?),
        None => None,
    };
    let prefix = q.get("NamePrefix").map_or("", String::as_str);
    if !prefix.is_empty() {
        checked("NamePrefix", prefix)?;
    }
    let groups = s.service.list_schedule_groups(prefix, after, limit).await?;
    let mut body = json!({ "ScheduleGroups": groups.iter().map(group_shown).collect::<Vec<_>>() });
    if groups.len() == limit {
        body["NextToken"] = json!(groups.last().map(|g| g.name.clone()));
    }
    Ok(Json(body).into_response())
}

/// Tags: none are kept; listing a schedule's or group's tags answers none, adding some is refused.
pub(crate) async fn list_tags(access: Access) -> Result<Response> {
    allow(&access, Action::Read, None)?;
    Ok(Json(json!({ "Tags": [] })).into_response())
}

pub(crate) async fn change_tags(access: Access) -> Result<Response> {
    allow(&access, Action::Deploy, None)?;
    Err(SchedulerError::validation("Tags are not supported by gust"))
}
