//! Bounded body reading and content-type checks.

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use crate::ApiError;

/// After a body exceeds its limit, up to this many more bytes are read and discarded so the
/// client gets the 413 instead of a connection reset mid-upload.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// Reads at most `limit` bytes of `body`; more is a 413 naming `what` and the limit.
pub(crate) async fn read_bounded(body: Body, limit: usize, what: &str) -> Result<Bytes, ApiError> {
    let mut body = body;
    // The common case is one frame: keep it as is, without a copy.
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request("InvalidBody", format!("cannot read the body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        total += data.len();
        if total > limit {
            if total > limit + DRAIN_LIMIT {
                break;
            }
            continue;
        }
        match first.take() {
            None if buf.is_empty() => first = Some(data),
            None => buf.extend_from_slice(&data),
            Some(f) => {
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&data);
            }
        }
    }
    if total > limit {
        return Err(ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "TooLarge",
            message: format!("{what} is over the limit of {limit} bytes"),
        });
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

/// Refuses a body whose declared content type is not one of `allowed` (a missing header is
/// accepted: curl and many clients omit it for raw uploads).
pub(crate) fn require_content_type(headers: &HeaderMap, allowed: &[&str]) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else { return Ok(()) };
    let mime = value.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if allowed.iter().any(|a| *a == mime) {
        Ok(())
    } else {
        Err(ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "UnsupportedMediaType",
            message: format!("content type {mime:?} is not accepted here; use one of {allowed:?}"),
        })
    }
}

/// A header's value as text; a value that is not ASCII is a 400.
pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str().map_err(|_| ApiError::bad_request("InvalidRequest", format!("{name} must be ASCII")))
        })
        .transpose()
}

/// Parses a JSON body into `T` with a message that names the problem.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("InvalidJson", format!("malformed JSON body: {e}")))
}

/// The revision an `If-Match` header names, if any (`5` or `"5"`).
pub(crate) fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let s = v.to_str().unwrap_or("").trim().trim_start_matches("W/").trim_matches('"');
    s.parse::<u64>()
        .map(Some)
        .map_err(|_| ApiError::bad_request("InvalidIfMatch", "If-Match must be a revision number"))
}
