//! The worker protocol, version 1: HTTP/JSON under `/internal/v1`, authenticated with the
//! worker token. A worker heartbeats (its state), polls for invocations placed on it (each
//! arrives with its exact deployment), renews the leases of what it runs, completes with the
//! attempt epoch, and fetches code by sha256. A completion from a fenced attempt is refused
//! with 409 `Fenced`. A worker shutting down releases (hands back) the attempts it will not
//! finish, so they are redelivered at once.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use bytes::Bytes;
use gust_core::{AttemptOutcome, FunctionErrorBody, InvocationId, Runtime, WorkerId, WorkerState};
use gust_store::Completion;
use serde::Deserialize;
use serde_json::json;

use crate::body::{parse_json, read_bounded};
use crate::{ApiError, AppState};

type ApiResult = Result<Response, ApiError>;

/// Largest worker request body (completions carry results up to 6 MB, base64-encoded).
const MAX_WORKER_BODY: usize = 9 * 1024 * 1024;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/internal/v1/workers/heartbeat", post(heartbeat))
        .route("/internal/v1/workers/{id}/poll", post(poll))
        .route("/internal/v1/workers/{id}/renew", post(renew))
        .route("/internal/v1/workers/{id}/release", post(release))
        .route("/internal/v1/workers/{id}/complete", post(complete))
        .route("/internal/v1/artifacts/{sha}", get(artifact))
        .route("/internal/v1/snapshot", get(snapshot))
}

fn worker_id(id: &str) -> Result<WorkerId, ApiError> {
    let ok = (1..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(WorkerId(id.to_string()))
    } else {
        Err(ApiError::bad_request("InvalidWorker", "worker ids are 1-128 characters of [A-Za-z0-9._-]"))
    }
}

async fn json_body<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    parse_json(&read_bounded(body, MAX_WORKER_BODY, "the request").await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Heartbeat {
    id: String,
    revision: u64,
    runtimes: Vec<Runtime>,
    capacity: u32,
    running: u32,
    warm: Vec<String>,
    snapshot_version: u64,
}

async fn heartbeat(State(s): State<AppState>, body: Body) -> ApiResult {
    let hb: Heartbeat = json_body(body).await?;
    if hb.warm.len() > 100_000 {
        return Err(ApiError::bad_request("InvalidRequest", "too many warm environments reported"));
    }
    let state = WorkerState {
        id: worker_id(&hb.id)?,
        revision: hb.revision,
        runtimes: hb.runtimes,
        capacity: hb.capacity,
        running: hb.running,
        warm: hb.warm,
        snapshot_version: hb.snapshot_version,
        last_heartbeat: 0,
    };
    Ok(Json(s.service.worker_heartbeat(state).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Poll {
    max: usize,
    wait_ms: u64,
}

async fn poll(State(s): State<AppState>, Path(id): Path<String>, body: Body) -> ApiResult {
    let worker = worker_id(&id)?;
    let p: Poll = json_body(body).await?;
    let wait = std::time::Duration::from_millis(p.wait_ms);
    let assignments = s.service.worker_poll(&worker, p.max, wait).await?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let items: Vec<_> = assignments
        .iter()
        .map(|a| {
            let req = &a.claimed.request;
            json!({
                "invocation_id": req.id,
                "epoch": a.claimed.epoch,
                "lease_expires_at": a.claimed.lease_expires_at,
                "mode": req.mode,
                "deployment": &*a.deployment,
                "payload_b64": b64.encode(&req.payload),
            })
        })
        .collect();
    Ok(Json(json!({ "assignments": items })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Renew {
    attempts: Vec<(String, u64)>,
}

async fn renew(State(s): State<AppState>, Path(id): Path<String>, body: Body) -> ApiResult {
    let worker = worker_id(&id)?;
    let r: Renew = json_body(body).await?;
    let attempts = r.attempts.into_iter().map(|(id, epoch)| (InvocationId(id), epoch)).collect();
    let results = s.service.worker_renew(&worker, attempts).await?;
    let items: Vec<_> = results.iter().map(|r| r.as_ref().err().map(|e| e.to_string())).collect();
    Ok(Json(json!({ "results": items })).into_response())
}

/// `{attempts: [[id, epoch]]}` (the shape of a renewal): each attempt's lease ends now and it
/// is recovered at once; per entry `null` or why it was refused.
async fn release(State(s): State<AppState>, Path(id): Path<String>, body: Body) -> ApiResult {
    let worker = worker_id(&id)?;
    let r: Renew = json_body(body).await?;
    let attempts = r.attempts.into_iter().map(|(id, epoch)| (InvocationId(id), epoch)).collect();
    let results = s.service.worker_release(&worker, attempts).await?;
    let items: Vec<_> = results.iter().map(|r| r.as_ref().err().map(|e| e.to_string())).collect();
    Ok(Json(json!({ "results": items })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Complete {
    invocation_id: String,
    epoch: u64,
    succeeded: bool,
    result_b64: Option<String>,
    error: Option<FunctionErrorBody>,
    log: String,
}

async fn complete(State(s): State<AppState>, Path(id): Path<String>, body: Body) -> ApiResult {
    worker_id(&id)?;
    let c: Complete = json_body(body).await?;
    let result = c
        .result_b64
        .map(|r| base64::engine::general_purpose::STANDARD.decode(r))
        .transpose()
        .map_err(|_| ApiError::bad_request("InvalidRequest", "result_b64 is not base64"))?
        .map(Bytes::from);
    let completion = Completion {
        id: InvocationId(c.invocation_id),
        epoch: c.epoch,
        outcome: if c.succeeded { AttemptOutcome::Succeeded } else { AttemptOutcome::FunctionError },
        result,
        error: c.error,
        log: c.log,
    };
    let lc = s.service.worker_complete(completion).await?;
    Ok(Json(json!({ "state": lc.state.name() })).into_response())
}

async fn artifact(State(s): State<AppState>, Path(sha): Path<String>, _headers: HeaderMap) -> ApiResult {
    let bytes = s.service.artifact(&sha).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Since {
    since: u64,
}

async fn snapshot(
    State(s): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<Since>,
) -> ApiResult {
    let (version, changed) = s.service.snapshot_delta(q.since).await?;
    let functions: Vec<_> = changed
        .iter()
        .map(|f| json!({ "name": f.name, "revision": f.revision, "runtime": f.spec.runtime, "code_sha256": f.code_sha256 }))
        .collect();
    Ok(Json(json!({ "snapshot_version": version, "functions": functions })).into_response())
}
