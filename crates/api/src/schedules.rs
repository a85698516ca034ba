//! Schedules on the native API (`/v1/schedules`), snake_case shapes over the same service
//! calls as the EventBridge Scheduler API (`aws::scheduler`):
//!
//! - `PUT /v1/schedules/{name}?group=G` creates or replaces:
//!   `{"expression", "function"? (NAME or NAME:QUALIFIER) | "queue"?, "input"?, "timezone"?,
//!   "enabled"?, "start"?, "end"? (ms), "flexible_window_minutes"?, "max_event_age_seconds"?,
//!   "max_retry_attempts"?, "dead_letter_queue"?, "description"?, "delete_after_completion"?}`
//! - `GET /v1/schedules?group=&prefix=&after=GROUP/NAME&limit=`, `GET|DELETE /v1/schedules/{name}`
//! - `GET /v1/schedules/{name}/history?group=&before=&limit=`: firings, newest first
//! - `POST /v1/schedule-groups` `{"name"}`, `GET /v1/schedule-groups`, `DELETE /v1/schedule-groups/{name}`
//!
//! Reading needs Read; writing needs Deploy (and Deploy on the target function); a key limited
//! to some functions has no schedules.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use gust_core::access::Action;
use gust_core::lambda::function_arn;
use gust_core::queue::{queue_arn, queue_of_arn};
use gust_core::schedule::{iso_seconds, RetryPolicy, Schedule, Target, TargetKind, DEFAULT_GROUP};
use gust_core::Millis;
use gust_service::{FiringView, ScheduleView, ServiceError};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::access::Access;
use crate::{ApiError, AppState};

type ApiResult = Result<Response, ApiError>;
type Params = HashMap<String, String>;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/schedules", get(list))
        .route("/v1/schedules/{name}", get(show).put(put).delete(remove))
        .route("/v1/schedules/{name}/history", get(history))
        .route("/v1/schedule-groups", get(list_groups).post(create_group))
        .route("/v1/schedule-groups/{name}", delete(delete_group))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleIn {
    expression: String,
    function: Option<String>,
    queue: Option<String>,
    input: Option<String>,
    timezone: Option<String>,
    enabled: Option<bool>,
    start: Option<Millis>,
    end: Option<Millis>,
    flexible_window_minutes: Option<u32>,
    max_event_age_seconds: Option<u32>,
    max_retry_attempts: Option<u32>,
    dead_letter_queue: Option<String>,
    /// A FIFO queue target's message group.
    message_group_id: Option<String>,
    description: Option<String>,
    #[serde(default)]
    delete_after_completion: bool,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("InvalidSchedule", message)
}

fn schedule_of(group: &str, name: &str, b: ScheduleIn) -> Result<Schedule, ApiError> {
    let arn = match (b.function.as_deref(), b.queue.as_deref()) {
        (Some(f), None) => match f.split_once(':') {
            Some((f, q)) => function_arn(f, Some(q)),
            None => function_arn(f, None),
        },
        (None, Some(q)) => queue_arn(q),
        _ => return Err(invalid("a schedule targets either a \"function\" or a \"queue\"")),
    };
    let defaults = RetryPolicy::default();
    Ok(Schedule {
        group: group.to_string(),
        name: name.to_string(),
        expression: b.expression,
        timezone: b.timezone.unwrap_or_else(|| "UTC".into()),
        start: b.start,
        end: b.end,
        enabled: b.enabled.unwrap_or(true),
        flexible_window_minutes: b.flexible_window_minutes,
        target: Target {
            arn,
            role_arn: String::new(),
            input: b.input,
            retry_policy: RetryPolicy {
                maximum_event_age_seconds: b
                    .max_event_age_seconds
                    .unwrap_or(defaults.maximum_event_age_seconds),
                maximum_retry_attempts: b.max_retry_attempts.unwrap_or(defaults.maximum_retry_attempts),
            },
            dead_letter_arn: b.dead_letter_queue.as_deref().map(queue_arn),
            message_group_id: b.message_group_id,
        },
        description: b.description.unwrap_or_default(),
        delete_after_completion: b.delete_after_completion,
        kms_key_arn: None,
        created_at: 0,
        updated_at: 0,
    })
}

fn view(v: &ScheduleView) -> Value {
    let s = &v.schedule;
    let mut out = json!({
        "group": s.group,
        "name": s.name,
        "arn": s.arn(),
        "expression": s.expression,
        "timezone": s.timezone,
        "enabled": s.enabled,
        "max_event_age_seconds": s.target.retry_policy.maximum_event_age_seconds,
        "max_retry_attempts": s.target.retry_policy.maximum_retry_attempts,
        "delete_after_completion": s.delete_after_completion,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "next_fire_at": v.next_at,
    });
    match s.target_kind() {
        Ok(TargetKind::Function { name, qualifier }) => {
            out["function"] = json!(match qualifier {
                Some(q) => format!("{name}:{q}"),
                None => name,
            })
        }
        Ok(TargetKind::Queue(q)) => out["queue"] = json!(q),
        Err(_) => out["target_arn"] = json!(s.target.arn),
    }
    let optional = [
        ("input", s.target.input.clone().map(Value::from)),
        ("start", s.start.map(Value::from)),
        ("end", s.end.map(Value::from)),
        ("flexible_window_minutes", s.flexible_window_minutes.map(Value::from)),
        ("dead_letter_queue", s.target.dead_letter_arn.as_deref().and_then(queue_of_arn).map(Value::from)),
        ("message_group_id", s.target.message_group_id.clone().map(Value::from)),
        ("next_fire_time", v.next_at.map(|t| Value::from(iso_seconds(t)))),
        ("description", Some(s.description.clone()).filter(|d| !d.is_empty()).map(Value::from)),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            out[key] = value;
        }
    }
    out
}

fn firing_view(f: &FiringView) -> Value {
    let firing = &f.firing;
    let mut out = json!({
        "scheduled_at": firing.scheduled_at,
        "scheduled_time": iso_seconds(firing.scheduled_at),
        "fire_at": firing.fire_at,
        "state": firing.state.as_str(),
        "attempts": firing.attempts,
    });
    if let Some(id) = &firing.invocation_id {
        out["invocation_id"] = json!(id);
    }
    if let Some(state) = f.invocation_state {
        out["invocation_state"] = json!(state.as_str());
    }
    if let Some(d) = &firing.detail {
        out["detail"] = json!(d);
    }
    if let Some((n, until)) = firing.missed {
        out["missed_count"] = json!(n);
        out["missed_until"] = json!(until);
    }
    out
}

fn allow(access: &Access, action: Action, target: Option<&Schedule>) -> Result<(), ApiError> {
    access.check(action, None)?;
    if access.0.functions.is_some() {
        let message = format!("{} is limited to some functions and has no schedules", access.0.principal);
        return Err(ApiError::new(StatusCode::FORBIDDEN, "Forbidden", &message));
    }
    if let Some(Ok(TargetKind::Function { name, .. })) = target.map(Schedule::target_kind) {
        access.check(Action::Deploy, Some(&name))?;
    }
    Ok(())
}

/// Every name a request carries is checked before anything reaches the store (a NUL byte is
/// a database error on PostgreSQL, not a missing schedule).
fn checked<'a>(what: &str, name: &'a str) -> Result<&'a str, ApiError> {
    gust_core::schedule::validate_name(what, name).map_err(invalid)?;
    Ok(name)
}

fn group_of(q: &Params) -> Result<&str, ApiError> {
    checked("group", q.get("group").map_or(DEFAULT_GROUP, String::as_str))
}

fn limit_of(q: &Params) -> Result<usize, ApiError> {
    match q.get("limit") {
        Some(l) => {
            l.parse::<usize>().ok().filter(|l| (1..=gust_core::limits::MAX_PAGE_SIZE).contains(l)).ok_or_else(
                || invalid(format!("limit must be from 1 to {}", gust_core::limits::MAX_PAGE_SIZE)),
            )
        }
        None => Ok(100),
    }
}

async fn put(
    State(s): State<AppState>, access: Access, Path(name): Path<String>, Query(q): Query<Params>, body: Body,
) -> ApiResult {
    let bytes =
        crate::body::read_bounded(body, gust_core::limits::MAX_CONFIG_BODY_BYTES, "the request").await?;
    checked("name", &name)?;
    let b: ScheduleIn = crate::body::parse_json(&bytes)?;
    let schedule = schedule_of(group_of(&q)?, &name, b)?;
    schedule.validate().map_err(invalid)?;
    allow(&access, Action::Deploy, Some(&schedule))?;
    let exists = match s.service.schedule(&schedule.group, &schedule.name).await {
        Ok(_) => true,
        Err(ServiceError::NotFound { .. }) => false,
        Err(e) => return Err(e.into()),
    };
    let v = s.service.put_schedule(schedule, !exists).await?;
    let status = if exists { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(view(&v))).into_response())
}

async fn show(
    State(s): State<AppState>, access: Access, Path(name): Path<String>, Query(q): Query<Params>,
) -> ApiResult {
    allow(&access, Action::Read, None)?;
    Ok(Json(view(&s.service.schedule(group_of(&q)?, checked("name", &name)?).await?)).into_response())
}

async fn remove(
    State(s): State<AppState>, access: Access, Path(name): Path<String>, Query(q): Query<Params>,
) -> ApiResult {
    allow(&access, Action::Deploy, None)?;
    s.service.delete_schedule(group_of(&q)?, checked("name", &name)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list(State(s): State<AppState>, access: Access, Query(q): Query<Params>) -> ApiResult {
    allow(&access, Action::Read, None)?;
    let limit = limit_of(&q)?;
    let after = match q.get("after") {
        Some(a) => {
            let (g, n) = a.split_once('/').ok_or_else(|| invalid("after is GROUP/NAME"))?;
            Some((checked("after", g)?.to_string(), checked("after", n)?.to_string()))
        }
        None => None,
    };
    let prefix = q.get("prefix").map_or("", String::as_str);
    if !prefix.is_empty() {
        checked("prefix", prefix)?;
    }
    let group = match q.get("group") {
        Some(g) => Some(checked("group", g)?),
        None => None,
    };
    let found = s.service.list_schedules(group, prefix, after, limit).await?;
    let next = (found.len() == limit)
        .then(|| found.last().map(|v| format!("{}/{}", v.schedule.group, v.schedule.name)))
        .flatten();
    Ok(Json(json!({ "schedules": found.iter().map(view).collect::<Vec<_>>(), "next": next })).into_response())
}

async fn history(
    State(s): State<AppState>, access: Access, Path(name): Path<String>, Query(q): Query<Params>,
) -> ApiResult {
    allow(&access, Action::Read, None)?;
    let limit = limit_of(&q)?;
    let before = match q.get("before") {
        Some(b) => Some(b.parse::<Millis>().map_err(|_| invalid("before is a scheduled time in ms"))?),
        None => None,
    };
    let firings = s.service.schedule_history(group_of(&q)?, checked("name", &name)?, before, limit).await?;
    let next = (firings.len() == limit).then(|| firings.last().map(|f| f.firing.scheduled_at)).flatten();
    Ok(Json(json!({ "firings": firings.iter().map(firing_view).collect::<Vec<_>>(), "next": next }))
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupIn {
    name: String,
}

async fn create_group(State(s): State<AppState>, access: Access, body: Body) -> ApiResult {
    allow(&access, Action::Deploy, None)?;
    let bytes =
        crate::body::read_bounded(body, gust_core::limits::MAX_CONFIG_BODY_BYTES, "the request").await?;
    let b: GroupIn = crate::body::parse_json(&bytes)?;
    let g = s.service.create_schedule_group(&b.name).await?;
    Ok((StatusCode::CREATED, Json(json!({ "name": g.name, "created_at": g.created_at }))).into_response())
}

async fn list_groups(State(s): State<AppState>, access: Access) -> ApiResult {
    allow(&access, Action::Read, None)?;
    let groups = s.service.list_schedule_groups("", None, gust_core::limits::MAX_PAGE_SIZE).await?;
    let groups: Vec<Value> =
        groups.iter().map(|g| json!({ "name": g.name, "created_at": g.created_at })).collect();
    Ok(Json(json!({ "groups": groups })).into_response())
}

async fn delete_group(State(s): State<AppState>, access: Access, Path(name): Path<String>) -> ApiResult {
    allow(&access, Action::Deploy, None)?;
    s.service.delete_schedule_group(checked("name", &name)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
