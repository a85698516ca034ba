//! Bounded body reading and content-type checks.
//!
//! A body is bounded three ways: in size (the caller's limit), in time (a grace period plus a
//! rate floor, so a client trickling bytes cannot hold a connection and a buffer), and in
//! memory across requests (a process-wide budget of bytes being buffered, shared by all
//! reads; a read that cannot get its share in time is a 503).

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::ApiError;

/// After a body exceeds its limit, up to this many more bytes are read and discarded so the
/// client gets the 413 instead of a connection reset mid-upload.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// Every body gets this long to arrive, plus a second per [`MIN_BODY_BYTES_PER_S`] bytes that
/// did arrive: a 50 MB upload may take 30 s + 800 s, a client sending 1 byte a second is cut
/// off after ~30 s.
pub(crate) const BODY_GRACE: Duration = Duration::from_secs(30);

/// The slowest average rate at which a body may arrive once its grace period is spent.
pub(crate) const MIN_BODY_BYTES_PER_S: u64 = 64 * 1024;

/// Bytes of request bodies being buffered at once, across all requests (the 70 MB AWS
/// CreateFunction body fits seven times). What a handler holds after the read is not counted.
pub(crate) const MAX_BODY_BYTES_IN_FLIGHT: usize = 512 * 1024 * 1024;

/// Bytes of bodies being buffered at once before anyone knows who sent them: an AWS request
/// that declares no payload hash (botocore's and the JS SDK's way) is signed over its body, so
/// its signature can only be checked once the body is read. Anyone can start such a read (a
/// wrong signature under a real key id), so these reads have a budget of their own and never
/// take room from authenticated requests' (one 70 MB CreateFunction fits, with room for many
/// small requests).
pub(crate) const MAX_UNAUTHENTICATED_BYTES_IN_FLIGHT: usize = 128 * 1024 * 1024;

/// How long a read waits for room in that budget before its request gets a 503.
const BODY_BUDGET_WAIT: Duration = Duration::from_secs(2);

/// Counted in KiB (the semaphore takes `u32` counts). A read takes its share as bytes arrive,
/// doubling it each time (at most twice what it holds, never more than its limit), so a body
/// in many small frames touches the semaphore a few times, not per frame.
static BODY_BUDGET: Semaphore = Semaphore::const_new(MAX_BODY_BYTES_IN_FLIGHT / 1024);

/// The budget of [`read_unauthenticated`], in KiB.
static UNAUTHENTICATED_BUDGET: Semaphore = Semaphore::const_new(MAX_UNAUTHENTICATED_BYTES_IN_FLIGHT / 1024);

/// The rules a body read keeps: [`read_bounded`] uses [`ReadRules::DEFAULT`]; tests
/// shorten them and bring their own budget.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadRules {
    pub(crate) grace: Duration,
    pub(crate) min_bytes_per_s: u64,
    pub(crate) budget: &'static Semaphore,
    pub(crate) budget_wait: Duration,
}

impl ReadRules {
    pub(crate) const DEFAULT: ReadRules = ReadRules {
        grace: BODY_GRACE,
        min_bytes_per_s: MIN_BODY_BYTES_PER_S,
        budget: &BODY_BUDGET,
        budget_wait: BODY_BUDGET_WAIT,
    };

    /// A body read before its sender is authenticated: the same bounds, its own budget.
    pub(crate) const UNAUTHENTICATED: ReadRules =
        ReadRules { budget: &UNAUTHENTICATED_BUDGET, ..ReadRules::DEFAULT };

    /// When the next frame must have arrived, `received` bytes into the body.
    fn deadline(&self, start: tokio::time::Instant, received: usize) -> tokio::time::Instant {
        let earned =
            Duration::from_millis((received as u64).saturating_mul(1000) / self.min_bytes_per_s.max(1));
        start + self.grace + earned
    }
}

/// This read's share of the body budget, returned when the read ends.
struct Share {
    budget: &'static Semaphore,
    wait: Duration,
    /// The read's size limit in KiB: no share grows past it.
    limit_kib: u32,
    permit: Option<SemaphorePermit<'static>>,
    kib: u32,
}

impl Share {
    /// Makes the share cover `bytes`, waiting a little for room.
    async fn cover(&mut self, bytes: usize) -> Result<(), ApiError> {
        let need = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        if need <= self.kib {
            return Ok(());
        }
        let more = need.max(self.kib.saturating_mul(2)).min(self.limit_kib.max(need)) - self.kib;
        let permit = match self.budget.try_acquire_many(more) {
            Ok(p) => p,
            Err(_) => match tokio::time::timeout(self.wait, self.budget.acquire_many(more)).await {
                Ok(Ok(p)) => p,
                Ok(Err(_)) | Err(_) => {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Busy",
                        "the server is receiving too many request bodies at once; retry shortly",
                    ))
                }
            },
        };
        match &mut self.permit {
            Some(held) => held.merge(permit),
            None => self.permit = Some(permit),
        }
        self.kib += more;
        Ok(())
    }
}

/// Reads at most `limit` bytes of `body`; more is a 413 naming `what` and the limit. A body
/// that arrives too slowly is a 408 (see [`BODY_GRACE`]), one that finds no room in the
/// process's body budget a 503.
pub(crate) async fn read_bounded(body: Body, limit: usize, what: &str) -> Result<Bytes, ApiError> {
    read_with(body, limit, what, ReadRules::DEFAULT).await
}

/// [`read_bounded`] for a body that must be read before its sender can be authenticated
/// (see [`MAX_UNAUTHENTICATED_BYTES_IN_FLIGHT`]).
pub(crate) async fn read_unauthenticated(body: Body, limit: usize, what: &str) -> Result<Bytes, ApiError> {
    read_with(body, limit, what, ReadRules::UNAUTHENTICATED).await
}

pub(crate) async fn read_with(
    body: Body, limit: usize, what: &str, rules: ReadRules,
) -> Result<Bytes, ApiError> {
    let mut body = body;
    let start = tokio::time::Instant::now();
    let mut share = Share {
        budget: rules.budget,
        wait: rules.budget_wait,
        limit_kib: u32::try_from(limit.div_ceil(1024)).unwrap_or(u32::MAX),
        permit: None,
        kib: 0,
    };
    // The common case is one frame: keep it as is, without a copy.
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    let mut total = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(rules.deadline(start, total), body.frame()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "BodyTimeout",
                    &format!(
                        "{what} did not arrive in time: a body must keep up {} KiB/s after its first {} s",
                        rules.min_bytes_per_s / 1024,
                        rules.grace.as_secs()
                    ),
                ))
            }
        };
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
        share.cover(total).await?;
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use hyper::body::Frame;

    use super::*;

    /// A body that sends `first` and then nothing, forever.
    struct Stalled(Option<Bytes>);

    impl hyper::body::Body for Stalled {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>, _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            match self.0.take() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => Poll::Pending,
            }
        }
    }

    fn rules(budget: &'static Semaphore) -> ReadRules {
        ReadRules {
            grace: Duration::from_millis(100),
            min_bytes_per_s: 1024,
            budget,
            budget_wait: Duration::from_millis(100),
        }
    }

    #[tokio::test]
    async fn a_stalled_body_times_out_after_its_grace_and_what_it_earned() {
        static BUDGET: Semaphore = Semaphore::const_new(1 << 20);
        let t = std::time::Instant::now();
        let body = Body::new(Stalled(Some(Bytes::from(vec![0u8; 512]))));
        let err = read_with(body, 1 << 20, "the body", rules(&BUDGET)).await.unwrap_err();
        assert_eq!((err.status, err.code), (StatusCode::REQUEST_TIMEOUT, "BodyTimeout"));
        // 100 ms of grace plus 500 ms earned by 512 bytes at 1 KiB/s.
        assert!(t.elapsed() >= Duration::from_millis(600), "{:?}", t.elapsed());
        assert_eq!(BUDGET.available_permits(), 1 << 20, "the share came back");
    }

    #[tokio::test]
    async fn a_body_that_finds_no_room_in_the_budget_is_a_503() {
        static BUDGET: Semaphore = Semaphore::const_new(1024);
        let held = BUDGET.acquire_many(1000).await.unwrap();
        let err = read_with(Body::from(vec![1u8; 100 * 1024]), 1 << 20, "the body", rules(&BUDGET))
            .await
            .unwrap_err();
        assert_eq!((err.status, err.code), (StatusCode::SERVICE_UNAVAILABLE, "Busy"));
        drop(held);
        let bytes =
            read_with(Body::from(vec![1u8; 100 * 1024]), 1 << 20, "the body", rules(&BUDGET)).await.unwrap();
        assert_eq!(bytes.len(), 100 * 1024);
        assert_eq!(BUDGET.available_permits(), 1024);
        let err = read_with(Body::from(vec![1u8; 2048]), 1024, "the body", rules(&BUDGET)).await.unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
