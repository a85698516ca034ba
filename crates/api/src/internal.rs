//! The worker protocol, version 1: HTTP/JSON under `/internal/v1`. A worker enrolls with the
//! shared enrollment token (`--worker-token`) and gets its own id and secret, or starts with a
//! secret an administrator provisioned; every other call is authenticated with that secret
//! and acts as that worker only: a call about another worker id is refused (403) before the
//! service sees it, and the store refuses to renew or complete an attempt the worker does not
//! own. A worker heartbeats (its state), polls for invocations placed on it (each arrives with
//! its exact deployment), renews the leases of what it runs, completes with the attempt epoch,
//! and fetches code it may run by sha256. A completion answers its verdict (`accepted`, or
//! `already_completed` for a repeat of the accepted report whose reply was lost); one from a
//! fenced attempt is refused with 409 `Fenced`. A worker shutting down releases (hands back)
//! the attempts it will not finish, so they are redelivered at once, and deregisters.
//!
//! Every message is a type of `gust_core::protocol`, the one definition the worker uses too;
//! this module adds the routes, authentication, body limits and status codes.
//!
//! Also here: the administrators' side of worker credentials under `/v1/workers` (provision,
//! list, revoke), mounted with the rest of `/v1` and behind its authentication.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::{Extension, Json, Router};
use base64::Engine as _;
use bytes::Bytes;
use gust_core::protocol::{
    self, AttemptsReply, AttemptsRequest, CompleteRequest, CompletionVerdict, CompletionsReply,
    CompletionsRequest, EnrollRequest, ErrorCode, Heartbeat, IssuedCredential, PollReply, PollRequest,
    SnapshotFunction, SnapshotQuery, SnapshotReply, Verdict, WorkerCall,
};
use gust_core::{AttemptOutcome, WorkerId};
use gust_service::ServiceError;
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
const ENROLL_PATH: &str = protocol::ENROLL_PATH;

pub(crate) fn routes() -> Router<AppState> {
    let mut router = Router::new()
        .route(ENROLL_PATH, post(enroll))
        .route(protocol::HEARTBEAT_PATH, post(heartbeat))
        .route(&format!("{}/{{sha}}", protocol::ARTIFACTS_PATH), get(artifact))
        .route(protocol::SNAPSHOT_PATH, get(snapshot));
    for call in WorkerCall::ALL {
        router = router.route(
            call.route(),
            match call {
                WorkerCall::Poll => post(poll),
                WorkerCall::Renew => attempts_route(AttemptsCall::Renew),
                WorkerCall::Release => attempts_route(AttemptsCall::Release),
                WorkerCall::Complete => post(complete),
                WorkerCall::Completions => post(completions),
                WorkerCall::Deregister => post(deregister),
            },
        );
    }
    router
}

/// Administrators' routes, mounted under `/v1` (so behind its authentication).
pub(crate) fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/workers", post(provision))
        .route("/v1/workers/credentials", get(list_credentials))
        .route("/v1/workers/{id}", delete(revoke))
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
    ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized.as_str(), message).into_response()
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
                ErrorCode::EnrollmentDisabled.as_str(),
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
    let ok = (1..=protocol::MAX_WORKER_ID_BYTES).contains(&id.len())
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
            code: ErrorCode::Forbidden.as_str(),
            message: format!("this credential is worker {}'s; it cannot act as worker {worker}", auth.0),
        });
    }
    Ok(worker)
}

async fn json_body<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    parse_json(&read_bounded(body, MAX_WORKER_BODY, "the request").await?)
}

/// The worker a call about itself (`/workers/{id}/…`) names, which must be the authenticated
/// one (403 otherwise).
struct OwnWorker(WorkerId);

/// [`OwnWorker`] and the call's JSON body, read only once the worker is checked.
struct OwnCall<T>(WorkerId, T);

impl FromRequestParts<AppState> for OwnWorker {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Path(id) =
            Path::<String>::from_request_parts(parts, state).await.map_err(|e| e.into_response())?;
        let Some(auth) = parts.extensions.get::<AuthenticatedWorker>() else {
            // `authenticate` runs before every worker call: a routing mistake; refuse.
            let message = "the request reached a worker call without authentication";
            return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal", message).into_response());
        };
        own_id(auth, &id).map(OwnWorker).map_err(|e| e.into_response())
    }
}

impl<T: serde::de::DeserializeOwned> FromRequest<AppState> for OwnCall<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let OwnWorker(worker) = OwnWorker::from_request_parts(&mut parts, state).await?;
        let body = json_body(body).await.map_err(|e| e.into_response())?;
        Ok(OwnCall(worker, body))
    }
}

async fn enroll(State(s): State<AppState>, body: Body) -> ApiResult {
    let r: EnrollRequest = json_body(body).await?;
    let issued = s.service.enroll_worker(&r.name).await?;
    let view = IssuedCredential { id: issued.worker.0, secret: issued.secret };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn heartbeat(
    State(s): State<AppState>, Extension(auth): Extension<AuthenticatedWorker>, body: Body,
) -> ApiResult {
    let hb: Heartbeat = json_body(body).await?;
    let id = own_id(&auth, &hb.id.0)?;
    if hb.warm.len() > protocol::MAX_WARM_REPORTED {
        return Err(ApiError::bad_request("InvalidRequest", "too many warm environments reported"));
    }
    // The store keeps it as a signed 64-bit integer: past that it would wrap negative.
    if i64::try_from(hb.revision).is_err() {
        return Err(ApiError::bad_request("InvalidRequest", "revision must be below 2^63"));
    }
    if hb.runtimes.len() > protocol::MAX_RUNTIMES_REPORTED {
        return Err(ApiError::bad_request(
            "InvalidRequest",
            format!("at most {} runtimes may be reported", protocol::MAX_RUNTIMES_REPORTED),
        ));
    }
    if hb.capacity as usize > protocol::MAX_WORKER_CAPACITY {
        return Err(ApiError::bad_request(
            "InvalidRequest",
            format!("a worker's capacity is at most {}", protocol::MAX_WORKER_CAPACITY),
        ));
    }
    let digest = |w: &String| w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit());
    if !hb.warm.iter().all(digest) {
        return Err(ApiError::bad_request(
            "InvalidRequest",
            "warm code must be reported as SHA-256 hex digests",
        ));
    }
    // The server stamps the heartbeat with its own clock.
    let state = Heartbeat { id, ..hb }.into_state(0);
    Ok(Json(s.service.worker_heartbeat(state).await?).into_response())
}

async fn poll(State(s): State<AppState>, OwnCall(worker, p): OwnCall<PollRequest>) -> ApiResult {
    let wait = std::time::Duration::from_millis(p.wait_ms);
    let assignments = s.service.worker_poll(&worker, p.max, wait).await?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let assignments = assignments
        .into_iter()
        .map(|a| {
            let req = &a.claimed.request;
            protocol::Assignment {
                invocation_id: req.id.clone(),
                epoch: a.claimed.epoch,
                lease_expires_at: a.claimed.lease_expires_at,
                mode: req.mode,
                deployment: a.deployment,
                payload_b64: b64.encode(&req.payload),
                qualifier: Some(req.qualifier.clone()),
                client_context: req.client_context.clone(),
                trace_id: req.trace_id.clone(),
                received_at: Some(req.received_at),
            }
        })
        .collect();
    Ok(Json(PollReply { assignments }).into_response())
}

/// The two calls about a list of attempts, which share their shape.
#[derive(Debug, Clone, Copy)]
enum AttemptsCall {
    /// Renews the leases.
    Renew,
    /// Ends the leases now (a worker shutting down hands its attempts back): each attempt is
    /// recovered at once.
    Release,
}

fn attempts_route(call: AttemptsCall) -> MethodRouter<AppState> {
    post(move |State(s): State<AppState>, own: OwnCall<AttemptsRequest>| attempts(call, s, own))
}

/// Renewal or release: per attempt a verdict (and `null` or why it was refused: fenced, or not
/// this worker's attempt); a refused entry changes nothing.
async fn attempts(
    call: AttemptsCall, s: AppState, OwnCall(worker, r): OwnCall<AttemptsRequest>,
) -> ApiResult {
    if r.attempts.len() > protocol::MAX_WORKER_CAPACITY {
        return Err(ApiError::bad_request(
            "InvalidRequest",
            format!("at most {} attempts fit in one call (a worker's most)", protocol::MAX_WORKER_CAPACITY),
        ));
    }
    let results = match call {
        AttemptsCall::Renew => s.service.worker_renew(&worker, r.attempts).await?,
        AttemptsCall::Release => s.service.worker_release(&worker, r.attempts).await?,
    };
    Ok(Json(AttemptsReply::new(&results)).into_response())
}

/// A guarded completion: its verdict (`accepted`, or `already_completed` for a repeat of the
/// accepted report) and the state after it; 409 `Fenced` for a stale attempt, 403 `Forbidden`
/// for another worker's.
async fn complete(State(s): State<AppState>, OwnCall(worker, c): OwnCall<CompleteRequest>) -> ApiResult {
    let completion = completion(worker, c)?;
    Ok(Json(s.service.worker_complete(completion).await?).into_response())
}

/// Several guarded completions, taken concurrently (the store groups them into one commit):
/// per completion what [`complete`] would answer, a refusal as its verdict. A store failure
/// fails the whole call (5xx) so the worker sends it again; a repeat is `already_completed`.
async fn completions(
    State(s): State<AppState>, OwnCall(worker, r): OwnCall<CompletionsRequest>,
) -> ApiResult {
    if r.completions.len() > protocol::MAX_COMPLETIONS_PER_CALL {
        return Err(ApiError::bad_request(
            "InvalidRequest",
            format!("at most {} completions fit in one call", protocol::MAX_COMPLETIONS_PER_CALL),
        ));
    }
    // Every entry is checked before any is taken, so a malformed one changes nothing.
    let taken: Vec<Completion> =
        r.completions.into_iter().map(|c| completion(worker.clone(), c)).collect::<Result<_, _>>()?;
    // Spawned, so a worker that hangs up does not cancel a completion halfway.
    let mut running = tokio::task::JoinSet::new();
    for (i, c) in taken.into_iter().enumerate() {
        let service = s.service.clone();
        running.spawn(async move { (i, service.worker_complete(c).await) });
    }
    let mut answers: Vec<_> = running.join_all().await;
    answers.sort_unstable_by_key(|(i, _)| *i);
    let mut replies = Vec::with_capacity(answers.len());
    for (_, answer) in answers {
        replies.push(match answer {
            Ok(reply) => CompletionVerdict { verdict: reply.verdict, state: Some(reply.state) },
            Err(ServiceError::Fenced(_)) => CompletionVerdict { verdict: Verdict::Fenced, state: None },
            Err(ServiceError::WorkerForbidden(_)) => {
                CompletionVerdict { verdict: Verdict::Forbidden, state: None }
            }
            Err(e) => {
                let e = ApiError::from(e);
                if !e.status.is_client_error() {
                    return Err(e);
                }
                CompletionVerdict { verdict: Verdict::Refused, state: None }
            }
        });
    }
    Ok(Json(CompletionsReply { replies }).into_response())
}

/// The store's completion of a worker's report (its result decoded).
fn completion(worker: WorkerId, c: CompleteRequest) -> Result<Completion, ApiError> {
    let result = c
        .result_b64
        .map(|r| base64::engine::general_purpose::STANDARD.decode(r))
        .transpose()
        .map_err(|_| ApiError::bad_request("InvalidRequest", "result_b64 is not base64"))?
        .map(Bytes::from);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as gust_core::Millis);
    // What a worker reports is bounded as a local attempt's is: its log to its tail, its error
    // and figures to what an attempt can produce, and a result past the limit fails the
    // attempt as a local one's does.
    let limit = gust_core::limits::MAX_RESULT_BYTES;
    let (succeeded, result, error) = match result {
        Some(r) if r.len() > limit => {
            let error = gust_core::FunctionErrorBody {
                error_type: gust_core::ErrorKind::ResultTooLarge,
                error_message: format!("the function's output exceeded {limit} bytes"),
                runtime_error: None,
            };
            (false, None, Some(error))
        }
        result => (c.succeeded, result, c.error.map(bounded_error)),
    };
    Ok(Completion {
        id: c.invocation_id,
        worker,
        epoch: c.epoch,
        outcome: if succeeded { AttemptOutcome::Succeeded } else { AttemptOutcome::FunctionError },
        result,
        error,
        log: tail(c.log, gust_core::limits::MAX_LOG_BYTES),
        report: c.report.map(|r| r.bounded(now)),
    })
}

/// The last `max` bytes of `text` (at a character boundary).
fn tail(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text.drain(..start);
    text
}

/// A worker's error body within a log's bound: its message and the runtime's error JSON cut.
fn bounded_error(mut e: gust_core::FunctionErrorBody) -> gust_core::FunctionErrorBody {
    let max = gust_core::limits::MAX_LOG_BYTES;
    if e.error_message.len() > max {
        let mut end = max;
        while !e.error_message.is_char_boundary(end) {
            end -= 1;
        }
        e.error_message.truncate(end);
    }
    // A runtime's error JSON cut short would not parse: past the bound it is dropped.
    if e.runtime_error.as_ref().is_some_and(|r| r.len() > max) {
        e.runtime_error = None;
    }
    e
}

/// A worker stopping for good (after releasing what it ran): an enrolled credential ends here.
async fn deregister(State(s): State<AppState>, OwnWorker(worker): OwnWorker) -> ApiResult {
    s.service.deregister_worker(&worker).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn artifact(
    State(s): State<AppState>, Extension(auth): Extension<AuthenticatedWorker>, Path(sha): Path<String>,
) -> ApiResult {
    let bytes = s.service.worker_artifact(&auth.0, &sha).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

async fn snapshot(
    State(s): State<AppState>, Extension(auth): Extension<AuthenticatedWorker>,
    axum::extract::Query(q): axum::extract::Query<SnapshotQuery>,
) -> ApiResult {
    let (snapshot_version, changed) = s.service.snapshot_delta(&auth.0, q.since).await?;
    let functions = changed
        .into_iter()
        .map(|f| SnapshotFunction {
            name: f.name,
            revision: f.revision,
            runtime: f.spec.runtime,
            code_sha256: f.code_sha256,
        })
        .collect();
    Ok(Json(SnapshotReply { snapshot_version, functions }).into_response())
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
