//! `GET /v1/functions/{name}/logs`: a function's invocation outcomes as they end, with their
//! logs, as server-sent events (what `gust logs NAME --follow` reads).
//!
//! Each ended invocation is one `invocation` event, in the order invocations finished, whose
//! data is the invocation as `GET /v1/invocations/{id}` shows it (log and REPORT line included,
//! payload left out) and whose id is its `(finished_at, id)` cursor, so a client that
//! reconnects with `Last-Event-ID` misses nothing and sees nothing twice. `?since=` starts
//! earlier than now (milliseconds since the epoch, or a duration back: `90s`, `5m`, `2h`);
//! `?state=` keeps one end state. Comments keep an idle stream open through proxies.
//!
//! The store is read every [`POLL`] per follower, so followers are bounded per server
//! ([`MAX_FOLLOWERS`]) and per caller ([`MAX_FOLLOWERS_PER_CALLER`]); past either, 429. Records
//! are read without payloads and results (a page of them could be hundreds of megabytes), and
//! events carry neither. Every [`RECHECK`] a stream checks that its caller's token is still
//! valid (a revoked key's stream ends) and that its function is still the one it followed (a
//! deleted function's stream ends, even if the name is taken again).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use gust_core::{InvocationId, InvocationRecord, Millis, StateName};
use gust_store::InvocationFilter;
use serde::Deserialize;

use crate::{views, ApiError, AppState};

/// Followers one server serves at once.
pub const MAX_FOLLOWERS: usize = 64;
/// Followers one caller (one token) may hold at once.
pub const MAX_FOLLOWERS_PER_CALLER: usize = 8;
/// How often a stream checks its caller's token and its function.
pub const RECHECK: Duration = Duration::from_secs(1);
/// How often an idle follower looks for new outcomes.
pub const POLL: Duration = Duration::from_millis(250);
/// An idle stream's keep-alive comment, this often.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// Outcomes read per look.
const PAGE: usize = 100;

static FOLLOWERS: AtomicUsize = AtomicUsize::new(0);
/// Followers per caller (by the sha256 of its token; "" without one).
static BY_CALLER: std::sync::LazyLock<parking_lot::Mutex<std::collections::HashMap<String, usize>>> =
    std::sync::LazyLock::new(Default::default);

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/v1/functions/{name}/logs", get(follow))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FollowQuery {
    since: Option<String>,
    state: Option<String>,
}

/// A follower's place in the store: held while its stream lives.
struct Follower {
    _slot: Slot,
    app: AppState,
    /// The caller's bearer token (`None` on a server without one), checked again as it runs.
    bearer: Option<String>,
    /// The function followed, as it was when the stream began.
    created_at: Millis,
    checked: tokio::time::Instant,
    function: String,
    state: Option<StateName>,
    cursor: (Millis, InvocationId),
    pending: VecDeque<InvocationRecord>,
    idle_since: tokio::time::Instant,
}

/// One follower's place: in the server's count and its caller's.
struct Slot {
    caller: String,
}

impl Slot {
    fn take(caller: String) -> Option<Slot> {
        let mut by_caller = BY_CALLER.lock();
        let held = by_caller.get(&caller).copied().unwrap_or(0);
        if held >= MAX_FOLLOWERS_PER_CALLER {
            return None;
        }
        FOLLOWERS
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < MAX_FOLLOWERS).then_some(n + 1))
            .ok()?;
        by_caller.insert(caller.clone(), held + 1);
        Some(Slot { caller })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut by_caller = BY_CALLER.lock();
        if let Some(n) = by_caller.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                by_caller.remove(&self.caller);
            }
        }
        FOLLOWERS.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Follower {
    /// Whether the stream may go on: its caller's token still valid, its function still the
    /// one it followed.
    async fn still_allowed(&self) -> bool {
        if let Some(bearer) = &self.bearer {
            if !matches!(crate::caller_by_bearer(&self.app, bearer).await, Ok(Some(_))) {
                return false;
            }
        }
        matches!(self.app.service.get_function(&self.function).await, Ok(f) if f.config.created_at == self.created_at)
    }
}

/// `since` as a time: milliseconds since the epoch, or a duration back from `now`.
fn since(text: &str, now: Millis) -> Result<Millis, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "InvalidRequest",
            "since must be milliseconds since the epoch or a duration back such as 90s, 5m or 2h",
        )
    };
    if let Ok(ms) = text.parse::<Millis>() {
        return if ms >= 0 { Ok(ms) } else { Err(bad()) };
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = text.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    Ok(now.saturating_sub(n.saturating_mul(ms)).max(0))
}

/// `Last-Event-ID` as a cursor: `FINISHED_AT:ID`.
fn resume_from(headers: &HeaderMap) -> Option<(Millis, InvocationId)> {
    let text = headers.get("last-event-id")?.to_str().ok()?;
    let (at, id) = text.split_once(':')?;
    let valid_id = id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    valid_id.then(|| Some((at.parse().ok()?, InvocationId(id.to_string()))))?
}

async fn follow(
    State(s): State<AppState>, Path(name): Path<String>, Query(q): Query<FollowQuery>, headers: HeaderMap,
) -> Result<Response, ApiError> {
    let state = q
        .state
        .map(|st| {
            StateName::parse(&st).filter(|s| s.is_terminal()).ok_or_else(|| {
                ApiError::bad_request(
                    "InvalidRequest",
                    format!(
                        "state must be an end state (SUCCEEDED, FAILED or EXPIRED), got {:?}",
                        truncate(&st)
                    ),
                )
            })
        })
        .transpose()?;
    let now = s.service.now();
    let start = q.since.as_deref().map(|t| since(t, now)).transpose()?.unwrap_or(now);
    // 404 for a function that does not exist (a typo should not wait forever).
    let created_at = s.service.get_function(&name).await?.config.created_at;
    let bearer = s.cfg.token.as_ref().and(crate::bearer(&headers)).map(str::to_string);
    let caller = bearer.as_deref().map(|b| gust_store::sha256_hex(b.as_bytes())).unwrap_or_default();
    let Some(slot) = Slot::take(caller) else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyFollowers",
            &format!(
                "this server already streams {MAX_FOLLOWERS} logs, or {MAX_FOLLOWERS_PER_CALLER} to this caller; \
                 try again later"
            ),
        ));
    };
    let follower = Follower {
        _slot: slot,
        app: s.clone(),
        bearer,
        created_at,
        checked: tokio::time::Instant::now(),
        function: name,
        state,
        cursor: resume_from(&headers).unwrap_or((start, InvocationId(String::new()))),
        pending: VecDeque::new(),
        idle_since: tokio::time::Instant::now(),
    };
    let events = futures_util::stream::unfold(follower, |mut f| async move {
        loop {
            if let Some(rec) = f.pending.pop_front() {
                f.idle_since = tokio::time::Instant::now();
                return Some((Ok::<_, std::io::Error>(event(&rec)), f));
            }
            if f.checked.elapsed() >= RECHECK {
                if !f.still_allowed().await {
                    return None;
                }
                f.checked = tokio::time::Instant::now();
            }
            if f.idle_since.elapsed() >= KEEPALIVE {
                f.idle_since = tokio::time::Instant::now();
                return Some((Ok(bytes::Bytes::from_static(b": keep-alive\n\n")), f));
            }
            let filter = InvocationFilter {
                state: f.state,
                limit: PAGE,
                finished_after: Some(f.cursor.clone()),
                light: true,
                ..Default::default()
            };
            match f.app.service.list_invocations(&f.function, filter).await {
                Ok(page) => {
                    let full = page.len() == PAGE;
                    if let Some(last) = page.last() {
                        f.cursor = (last.finished_at.unwrap_or(f.cursor.0), last.request.id.clone());
                    }
                    f.pending.extend(page);
                    if !full && f.pending.is_empty() {
                        tokio::time::sleep(POLL).await;
                    }
                }
                // The function was deleted, or the store is gone: the stream ends (a client
                // reconnects with its last event id).
                Err(e) => {
                    tracing::debug!(function = %f.function, error = %e, "a log stream ends");
                    return None;
                }
            }
        }
    });
    let mut resp = Body::from_stream(events).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
    Ok(resp)
}

fn event(rec: &InvocationRecord) -> bytes::Bytes {
    let mut view = views::invocation(rec, false);
    // Read without it: `GET /v1/invocations/{id}` shows it.
    if let Some(o) = view.as_object_mut() {
        o.remove("result");
    }
    let data = view.to_string();
    let id = format!("{}:{}", rec.finished_at.unwrap_or(0), rec.request.id);
    bytes::Bytes::from(format!("id: {id}\nevent: invocation\ndata: {data}\n\n"))
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_time_or_a_duration_back() {
        assert_eq!(since("1700000000000", 5).unwrap(), 1_700_000_000_000);
        assert_eq!(since("90s", 100_000).unwrap(), 10_000);
        assert_eq!(since("5m", 600_000).unwrap(), 300_000);
        assert_eq!(since("2h", 1).unwrap(), 0, "never before the epoch");
        for bad in ["", "-5", "5x", "m", "9999999999999999999999s", "5 m"] {
            assert!(since(bad, 0).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_last_event_id_is_a_cursor_or_nothing() {
        let mut h = HeaderMap::new();
        h.insert("last-event-id", "1700:0190a-bc".parse().unwrap());
        assert_eq!(resume_from(&h), Some((1700, InvocationId("0190a-bc".into()))));
        h.insert("last-event-id", "x:1".parse().unwrap());
        assert_eq!(resume_from(&h), None);
        h.insert("last-event-id", "1:a'b".parse().unwrap());
        assert_eq!(resume_from(&h), None);
    }
}
