//! `POST /internal/v1/peer/invoke`: a keyless sync invocation a peer server hands over for a
//! worker attached here (see `gust_service`'s peers module). Only the cluster's servers may
//! call it: the peer secret they share through the store is checked before any body is read,
//! and neither a worker's credential, the enrollment token nor an API key is good for it.
//! The body is a [`gust_core::peer`] frame, bounded like a sync invocation's; the answer is
//! one too.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use gust_core::limits::MAX_SYNC_PAYLOAD_BYTES;
use gust_core::peer::{self, Answer};
use gust_service::{Invoked, SyncOutcome};

use crate::body::read_bounded;
use crate::{ApiError, AppState};

pub(crate) async fn invoke(State(s): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let Some(secret) = &s.cfg.peer_secret else {
        let message = "this server takes no invocations from peers (it advertises no URL)";
        return Err(ApiError::new(StatusCode::FORBIDDEN, "PeersDisabled", message));
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !presented.is_some_and(|p| crate::constant_time_eq(p.as_bytes(), secret.as_bytes())) {
        let message = "handing over an invocation takes the cluster's peer secret";
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", message));
    }
    let limit = 4 + peer::MAX_META_BYTES + MAX_SYNC_PAYLOAD_BYTES;
    let body = read_bounded(req.into_body(), limit, "the handed-over invocation").await?;
    let request =
        peer::read_request(&body).map_err(|e| ApiError::bad_request("InvalidRequest", e.to_string()))?;
    if request.payload.len() > MAX_SYNC_PAYLOAD_BYTES {
        let message = format!("the payload is larger than {MAX_SYNC_PAYLOAD_BYTES} bytes");
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "RequestTooLargeException", &message));
    }
    let answer = match s.service.run_for_peer(request).await? {
        None => peer::frame(&Answer::NotStarted, &[]),
        Some(Invoked::Completed { executed_version, outcome, log, report, .. }) => {
            let (error, result) = match outcome {
                SyncOutcome::Succeeded(result) => (None, result),
                SyncOutcome::Failed(error) => (Some(error), Default::default()),
            };
            peer::frame(&Answer::Finished { executed_version, error, log, report }, &result)
        }
        Some(Invoked::Accepted { .. }) => {
            let message = "a handed-over sync invocation was queued";
            return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal", message));
        }
    };
    Ok(([(header::CONTENT_TYPE, peer::CONTENT_TYPE)], answer).into_response())
}
