//! The worker protocol, version 1: HTTP/JSON under `/internal/v1`. A worker enrolls with the
//! shared enrollment token (`--worker-token`) and gets its own id and secret, or starts with a
//! secret an administrator provisioned; every other call is authenticated with that secret
//! and acts as that worker only: a call about another worker id is refused (403) before the
//! service sees it, and the store refuses to renew or complete an attempt the worker does not
//! own. A worker heartbeats (its state), polls for invocations placed on it (each arrives with
//! its exact deployment), renews the leases of what it runs, completes with the attempt epoch,
//! and fetches code it may run by sha256. A completion from a fenced attempt is refused with
//! 409 `Fenced`. A worker shutting down releases (hands back) the attempts it will not finish,
//! so they are redelivered at once, and deregisters.
//!
//! Also here: the administrators' side of worker credentials under `/v1/workers` (provision,
//! list, revoke), mounted with the rest of `/v1` and behind its authentication.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use base64::Engine as _;
use bytes::Bytes;
use gust_core::{AttemptOutcome, FunctionErrorBody, InvocationId, Runtime, WorkerId, WorkerState};
use gust_store::Completion;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::body::{parse_json, read_bounded, require_content_type};
use crate::{ApiError, AppState};

type ApiResult = Result<Response, ApiError>;

/// Largest worker request body (completions carry results up to 6 MB, base64-encoded).
const MAX_WORKER_BODY: usize = 9 * 1024 * 1024;

/// Largest administrators' request body (a worker name).
const MAX_ADMIN_BODY: usize = 4 * 1024;

/// The one call the enrollment token is good for.
const ENROLL_PATH: &str = "/internal/v1/workers/enroll";

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(ENROLL_PATH, post(enroll))
        .route("/internal/v1/workers/heartbeat", post(heartbeat))
        .route("/internal/v1/workers/{id}/poll", post(poll))
        .route("/internal/v1/workers/{id}/renew", post(renew))
        .route("/internal/v1/workers/{id}/release", post(release))
        .route("/internal/v1/workers/{id}/complete", post(complete))
        .route("/internal/v1/workers/{id}/deregister", post(deregister))
        .route("/internal/v1/artifacts/{sha}", get(artifact))
        .route("/internal/v1/snapshot", get(snapshot))
}

/// Administrators' routes, mounted under `/v1` (so behind its authentication).
pub(crate) fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/workers", post(provision))
        .route("/v1/workers/credentials", get(list_credentials))
        .route("/v1/workers/{id}", delete(revoke))
}

/// Enrollment: `POST /internal/v1/workers/enroll`, authenticated with the enrollment token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The worker's name; its id will be `NAME-` and 16 random hex digits.
    pub name: String,
}

/// A new credential: the worker id it proves and its secret (shown once, stored hashed).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuedCredential {
    pub id: String,
    pub secret: String,
}

/// `POST /v1/workers`: provision a credential for the worker id `name`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionRequest {
    pub name: String,
}

/// The worker a request proved to be (set by [`authenticate`] on every call but enrollment).
#[derive(Debug, Clone)]
struct AuthenticatedWorker(WorkerId);

fn unauthorized(message: &str) -> Response {
    ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", message).into_response()
}

/// Authentication of the worker protocol, before any body is read: enrollment takes the
/// enrollment token; everything else takes a worker's own secret, which names the worker the
/// request acts as. The enrollment token is refused everywhere but enrollment.
pub(crate) async fn authenticate(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    if req.uri().path() == ENROLL_PATH {
        return match (&s.cfg.worker_token, presented) {
            (Some(token), Some(p)) if crate::constant_time_eq(p.as_bytes(), token.as_bytes()) => {
                next.run(req).await
            }
            (None, _) => ApiError::new(
                StatusCode::FORBIDDEN,
                "EnrollmentDisabled",
                "this server takes no enrollments (it has no --worker-token): use a provisioned credential",
            )
            .into_response(),
            _ => unauthorized("enrolling needs the server's enrollment token (--worker-token)"),
        };
    }
    let Some(secret) = presented else {
        return unauthorized("a worker credential is required (enroll, or use a provisioned secret)");
    };
    match s.service.authenticate_worker(&secret).await {
        Ok(Some(worker)) => {
            req.extensions_mut().insert(AuthenticatedWorker(worker));
            next.run(req).await
        }
        Ok(None) => unauthorized(
            "a valid worker credential is required: this one is unknown, revoked or expired \
             (the enrollment token only enrolls)",
        ),
        Err(e) => ApiError::from(e).into_response(),
    }
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

/// The worker `id` names, which must be the authenticated one.
fn own_id(auth: &AuthenticatedWorker, id: &str) -> Result<WorkerId, ApiError> {
    let worker = worker_id(id)?;
    if worker != auth.0 {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            code: "Forbidden",
            message: format!("this credential is worker {}'s; it cannot act as worker {worker}", auth.0),
        });
    }
    Ok(worker)
}

async fn json_body<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    parse_json(&read_bounded(body, MAX_WORKER_BODY, "the request").await?)
}

async fn enroll(State(s): State<AppState>, body: Body) -> ApiResult {
    let r: EnrollRequest = json_body(body).await?;
    let issued = s.service.enroll_worker(&r.name).await?;
    let view = IssuedCredential { id: issued.worker.0, secret: issued.secret };
    Ok((StatusCode::CREATED, Json(view)).into_response())
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

async fn heartbeat(
    State(s): State<AppState>,
    Extension(auth): Extension<AuthenticatedWorker>,
    body: Body,
) -> ApiResult {
    let hb: Heartbeat = json_body(body).await?;
    let id = own_id(&auth, &hb.id)?;
    if hb.warm.len() > 100_000 {
        return Err(ApiError::bad_request("InvalidRequest", "too many warm environments reported"));
    }
    let state = WorkerState {
        id,
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

async fn poll(
    State(s): State<AppState>,
    Extension(auth): Extension<AuthenticatedWorker>,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let worker = own_id(&auth, &id)?;
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

/// `{attempts: [[id, epoch]]}`: per entry `null` or why it was refused (fenced, or not this
/// worker's attempt); a refused entry changes nothing.
async fn renew(
    State(s): State<AppState>,
    Extension(auth): Extension<AuthenticatedWorker>,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let worker = own_id(&auth, &id)?;
    let r: Renew = json_body(body).await?;
    let attempts = r.attempts.into_iter().map(|(id, epoch)| (InvocationId(id), epoch)).collect();
    let results = s.service.worker_renew(&worker, attempts).await?;
    let items: Vec<_> = results.iter().map(|r| r.as_ref().err().map(|e| e.to_string())).collect();
    Ok(Json(json!({ "results": items })).into_response())
}

/// `{attempts: [[id, epoch]]}` (the shape of a renewal): each attempt's lease ends now and it
/// is recovered at once; per entry `null` or why it was refused.
async fn release(
    State(s): State<AppState>,
    Extension(auth): Extension<AuthenticatedWorker>,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let worker = own_id(&auth, &id)?;
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

async fn complete(
    State(s): State<AppState>,
    Extension(auth): Extension<AuthenticatedWorker>,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let worker = own_id(&auth, &id)?;
    let c: Complete = json_body(body).await?;
    let result = c
        .result_b64
        .map(|r| base64::engine::general_purpose::STANDARD.decode(r))
        .transpose()
        .map_err(|_| ApiError::bad_request("InvalidRequest", "result_b64 is not base64"))?
        .map(Bytes::from);
    let completion = Completion {
        id: InvocationId(c.invocation_id),
        worker,
        epoch: c.epoch,
        outcome: if c.succeeded { AttemptOutcome::Succeeded } else { AttemptOutcome::FunctionError },
        result,
        error: c.error,
        log: c.log,
    };
    let lc = s.service.worker_complete(completion).await?;
    Ok(Json(json!({ "state": lc.state.name() })).into_response())
}

/// A worker stopping for good (after releasing what it ran): an enrolled credential ends here.
async fn deregister(
    State(s): State<AppState>,
    Extension(auth): Extension<AuthenticatedWorker>,
    Path(id): Path<String>,
) -> ApiResult {
    let worker = own_id(&auth, &id)?;
    s.service.deregister_worker(&worker).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn artifact(
    State(s): State<AppState>,
    Extension(auth): Extension<AuthenticatedWorker>,
    Path(sha): Path<String>,
) -> ApiResult {
    let bytes = s.service.worker_artifact(&auth.0, &sha).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Since {
    since: u64,
}

async fn snapshot(
    State(s): State<AppState>,
    Extension(auth): Extension<AuthenticatedWorker>,
    axum::extract::Query(q): axum::extract::Query<Since>,
) -> ApiResult {
    let (version, changed) = s.service.snapshot_delta(&auth.0, q.since).await?;
    let functions: Vec<_> = changed
        .iter()
        .map(|f| json!({ "name": f.name, "revision": f.revision, "runtime": f.spec.runtime, "code_sha256": f.code_sha256 }))
        .collect();
    Ok(Json(json!({ "snapshot_version": version, "functions": functions })).into_response())
}

/// `POST /v1/workers {name}`: a provisioned credential for worker `name` (201, secret shown
/// once); 409 if that worker has a credential.
async fn provision(State(s): State<AppState>, headers: HeaderMap, body: Body) -> ApiResult {
    require_content_type(&headers, &["application/json"])?;
    let r: ProvisionRequest = parse_json(&read_bounded(body, MAX_ADMIN_BODY, "the request").await?)?;
    let issued = s.service.provision_worker(&r.name).await?;
    let view = IssuedCredential { id: issued.worker.0, secret: issued.secret };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// `GET /v1/workers/credentials`: every worker credential (never a secret).
async fn list_credentials(State(s): State<AppState>) -> ApiResult {
    let items: Vec<_> = s
        .service
        .worker_credentials()
        .await?
        .into_iter()
        .map(|(f, valid)| {
            json!({
                "id": f.credential.worker,
                "origin": f.credential.origin,
                "created_at": f.credential.created_at,
                "last_heartbeat": f.last_heartbeat,
                "valid": valid,
            })
        })
        .collect();
    Ok(Json(json!({ "credentials": items })).into_response())
}

/// `DELETE /v1/workers/{id}`: revokes a worker's credential (204); 404 if it has none.
async fn revoke(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    s.service.revoke_worker(&worker_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
