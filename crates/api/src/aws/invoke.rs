//! `Invoke`: RequestResponse (200, even when the function fails), Event (202) and DryRun (204).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use gust_core::lambda::error_payload;
use gust_core::limits::MAX_SYNC_PAYLOAD_BYTES;
use gust_core::Mode;
use gust_service::{InvokeInput, Invoked, SyncOutcome};

use super::{non_latest, target, AwsError, AwsResult, QueryMap};
use crate::body::read_bounded;
use crate::AppState;

/// `X-Amz-Log-Result` carries at most this much of the log's tail.
const LOG_TAIL_BYTES: usize = 4096;
/// Largest `X-Amz-Client-Context` (base64), as Lambda.
const MAX_CLIENT_CONTEXT_BYTES: usize = 3583;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, AwsError> {
    crate::body::header_str(headers, name).map_err(|e| AwsError::invalid(e.message))
}

fn set(resp: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}

/// Lambda's log shape around the function's own output (its REPORT line with the attempt's
/// figures), cut to its last 4 KB.
fn log_tail(id: &str, version: &str, log: &str, report: Option<&gust_core::Report>) -> String {
    let mut text = format!("START RequestId: {id} Version: {version}\n{log}");
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let report = report.map_or_else(|| format!("REPORT RequestId: {id}"), |r| r.line(id));
    text.push_str(&format!("END RequestId: {id}\n{report}\n"));
    let mut start = text.len().saturating_sub(LOG_TAIL_BYTES);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    base64::engine::general_purpose::STANDARD.encode(&text.as_bytes()[start..])
}

/// `X-Amz-Log-Type`: `Tail` asks for the log's tail.
fn log_tail_wanted(headers: &HeaderMap) -> Result<bool, AwsError> {
    match header(headers, "x-amz-log-type")?.unwrap_or("None") {
        "None" => Ok(false),
        "Tail" => Ok(true),
        other => {
            Err(AwsError::invalid(format!("LogType must be None or Tail, got {:?}", super::truncate(other))))
        }
    }
}

/// `X-Amz-Client-Context`: base64 JSON, passed to the runtime decoded (as Lambda does).
fn client_context(headers: &HeaderMap) -> Result<Option<String>, AwsError> {
    Ok(match header(headers, "x-amz-client-context")? {
        None => None,
        Some(cc) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(cc)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|s| {
                    cc.len() <= MAX_CLIENT_CONTEXT_BYTES
                        && serde_json::from_str::<serde_json::Value>(s).is_ok()
                });
            Some(decoded.ok_or_else(|| {
                AwsError::invalid(format!(
                    "ClientContext must be base64 JSON of at most {MAX_CLIENT_CONTEXT_BYTES} bytes"
                ))
            })?)
        }
    })
}

pub(crate) async fn invoke(
    State(s): State<AppState>, Path(raw): Path<String>, Query(q): Query<QueryMap>, headers: HeaderMap,
    body: Body,
) -> AwsResult {
    let (name, qualifier) = target(&raw, q.get("Qualifier").map(String::as_str))?;
    let kind = header(&headers, "x-amz-invocation-type")?.unwrap_or("RequestResponse");
    let tail = log_tail_wanted(&headers)?;
    let client_context = client_context(&headers)?;
    // Read (or drain) the whole body first, so an oversized payload gets its 413 rather than a
    // connection closed mid-upload.
    let payload = read_bounded(body, MAX_SYNC_PAYLOAD_BYTES, "the request payload").await?;
    // An invocation without a payload gets the event `{}`, as on Lambda.
    let payload = if payload.is_empty() { bytes::Bytes::from_static(b"{}") } else { payload };
    let mode = match kind {
        "RequestResponse" => Mode::Sync,
        "Event" => Mode::Async,
        "DryRun" => {
            // Everything but running: the function and qualifier must exist.
            let qualified = non_latest(qualifier);
            match qualified {
                None => {
                    s.service.get_function(&name).await?;
                }
                Some(q) => match q.parse::<u64>() {
                    Ok(n) => {
                        s.service.get_version(&name, n).await?;
                    }
                    Err(_) => {
                        s.service.get_alias(&name, &q).await?;
                    }
                },
            }
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        other => {
            return Err(AwsError::invalid(format!(
                "InvocationType must be RequestResponse, Event or DryRun, got {:?}",
                super::truncate(other)
            )))
        }
    };
    // The SDKs keep `amz-sdk-invocation-id` across their retries: an Event retried after a
    // lost 202 is queued once.
    let idempotency_key = match mode {
        Mode::Async => header(&headers, "amz-sdk-invocation-id")?
            .filter(|k| !k.is_empty() && k.len() <= 200)
            .map(|k| format!("aws-sdk:{k}")),
        Mode::Sync => None,
    };
    let input = InvokeInput {
        function: name,
        qualifier: non_latest(qualifier),
        payload,
        mode,
        idempotency_key,
        client_context,
        stream: None,
        http: None,
        trace: gust_core::trace::Trace::from_headers(&headers),
    };
    match s.service.invoke(input).await.map_err(AwsError::from)? {
        Invoked::Accepted { id, .. } => {
            let mut resp = StatusCode::ACCEPTED.into_response();
            set(&mut resp, "x-amzn-RequestId", &id.0);
            Ok(resp)
        }
        Invoked::Completed { id, executed_version, outcome, log, report } => {
            let mut resp = match outcome {
                SyncOutcome::Succeeded(out) => {
                    ([(header::CONTENT_TYPE, "application/json")], out).into_response()
                }
                SyncOutcome::Failed(err) => {
                    let mut r =
                        ([(header::CONTENT_TYPE, "application/json")], error_payload(&err)).into_response();
                    set(&mut r, "X-Amz-Function-Error", "Unhandled");
                    r
                }
            };
            set(&mut resp, "x-amzn-RequestId", &id.0);
            set(&mut resp, "X-Amz-Executed-Version", &executed_version);
            if tail {
                set(
                    &mut resp,
                    "X-Amz-Log-Result",
                    &log_tail(&id.0, &executed_version, &log, report.as_ref()),
                );
            }
            Ok(resp)
        }
    }
}

/// `InvokeWithResponseStream`: the response as an AWS event stream of `PayloadChunk` events,
/// each sent as the function writes it, ended by `InvokeComplete` (with `ErrorCode` and
/// `ErrorDetails` when the function failed, and `LogResult` for `LogType: Tail`). A function
/// that does not stream answers in one chunk. Errors before the function runs (not found,
/// throttled, too large) are the usual HTTP errors.
pub(crate) async fn invoke_stream(
    State(s): State<AppState>, Path(raw): Path<String>, Query(q): Query<QueryMap>, headers: HeaderMap,
    body: Body,
) -> AwsResult {
    use crate::stream::Piece;
    let (name, qualifier) = target(&raw, q.get("Qualifier").map(String::as_str))?;
    match header(&headers, "x-amz-invocation-type")?.unwrap_or("RequestResponse") {
        "RequestResponse" => {}
        other => {
            return Err(AwsError::invalid(format!(
                "InvocationType must be RequestResponse for a streamed invocation, got {:?}",
                super::truncate(other)
            )))
        }
    }
    let tail = log_tail_wanted(&headers)?;
    let client_context = client_context(&headers)?;
    let payload = read_bounded(body, MAX_SYNC_PAYLOAD_BYTES, "the request payload").await?;
    let payload = if payload.is_empty() { bytes::Bytes::from_static(b"{}") } else { payload };
    let input = InvokeInput {
        function: name,
        qualifier: non_latest(qualifier),
        payload,
        mode: Mode::Sync,
        idempotency_key: None,
        client_context,
        stream: None,
        http: None,
        trace: gust_core::trace::Trace::from_headers(&headers),
    };
    let mut streaming = crate::stream::start(s.service.clone(), input);
    // Wait for the stream to begin, or for the invocation to end without streaming (or fail
    // before it ran: then the caller gets the usual error).
    if streaming.begin().await.is_none() {
        let done = streaming.end().await;
        let done = done.map_err(|e| AwsError::from(gust_service::ServiceError::Internal(e.to_string())))?;
        let mut resp = Response::new(Body::from(complete_events(done.map_err(AwsError::from)?, tail, true)));
        set(&mut resp, "content-type", "application/vnd.amazon.eventstream");
        return Ok(resp);
    }
    use futures_util::StreamExt as _;
    let events = streaming.rest().filter_map(move |piece| async move {
        let event = match piece {
            Piece::Chunk(c) => payload_chunk(&c),
            Piece::End(Ok(Ok(invoked))) => complete_events(invoked, tail, false),
            Piece::End(Ok(Err(e))) => {
                let details = serde_json::json!({ "errorMessage": e.to_string() }).to_string();
                invoke_complete(Some(("ServiceException", &details)), None)
            }
            // The invocation's task itself failed: the stream just ends.
            Piece::End(Err(_)) => return None,
        };
        Some(Ok::<_, std::io::Error>(event))
    });
    let mut resp = Response::new(Body::from_stream(events));
    set(&mut resp, "content-type", "application/vnd.amazon.eventstream");
    Ok(resp)
}

/// A `PayloadChunk` event.
fn payload_chunk(bytes: &[u8]) -> bytes::Bytes {
    crate::stream::event_message(
        &[
            (":event-type", "PayloadChunk"),
            (":message-type", "event"),
            (":content-type", "application/octet-stream"),
        ],
        bytes,
    )
}

/// The `InvokeComplete` event.
fn invoke_complete(error: Option<(&str, &str)>, log: Option<String>) -> bytes::Bytes {
    let mut v = serde_json::Map::new();
    if let Some((code, details)) = error {
        v.insert("ErrorCode".into(), serde_json::json!(code));
        v.insert("ErrorDetails".into(), serde_json::json!(details));
    }
    if let Some(log) = log {
        v.insert("LogResult".into(), serde_json::json!(log));
    }
    crate::stream::event_message(
        &[
            (":event-type", "InvokeComplete"),
            (":message-type", "event"),
            (":content-type", "application/json"),
        ],
        serde_json::Value::Object(v).to_string().as_bytes(),
    )
}

/// The events that end a streamed invocation: its whole result first when nothing was streamed
/// (`whole`), then `InvokeComplete`.
fn complete_events(invoked: Invoked, tail: bool, whole: bool) -> bytes::Bytes {
    let Invoked::Completed { id, executed_version, outcome, log, report } = invoked else {
        return invoke_complete(None, None);
    };
    let log = tail.then(|| log_tail(&id.0, &executed_version, &log, report.as_ref()));
    let mut out = Vec::new();
    match outcome {
        SyncOutcome::Succeeded(result) => {
            if whole && !result.is_empty() {
                out.extend_from_slice(&payload_chunk(&result));
            }
            out.extend_from_slice(&invoke_complete(None, log));
        }
        SyncOutcome::Failed(err) => {
            let details = String::from_utf8_lossy(&error_payload(&err)).into_owned();
            out.extend_from_slice(&invoke_complete(Some(("Unhandled", &details)), log));
        }
    }
    bytes::Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_is_bounded_and_on_a_char_boundary() {
        let long = "é".repeat(5000);
        let report = gust_core::Report {
            started_at: 0,
            duration_us: 2_500,
            init_us: None,
            memory_mb: 128,
            max_memory_mb: Some(2),
        };
        let b64 = log_tail("id", "$LATEST", &long, Some(&report));
        let text = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap();
        assert!(text.len() <= LOG_TAIL_BYTES);
        assert!(
            text.ends_with("END RequestId: id\nREPORT RequestId: id\tDuration: 2.50 ms\tBilled Duration: 3 ms\tMemory Size: 128 MB\tMax Memory Used: 2 MB\n"),
            "{text}"
        );
        let short = log_tail("id", "3", "hello", None);
        let text =
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(short).unwrap()).unwrap();
        assert!(text.starts_with("START RequestId: id Version: 3\nhello\nEND"));
    }
}
