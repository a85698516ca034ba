//! `GET /v1/functions/{name}/stats?window=1h&step=60s`: a function's figures over time (the
//! console's charts), computed by [`gust_service::stats`].

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use gust_core::Millis;
use serde::Deserialize;

use crate::{ApiError, AppState};

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/v1/functions/{name}/stats", get(stats))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    window: Option<String>,
    step: Option<String>,
}

/// A duration as the query gives it: `90s`, `15m`, `6h`, `1d`, `500ms`, or bare milliseconds.
fn millis(text: &str, what: &str) -> Result<Millis, ApiError> {
    let bad = || {
        ApiError::bad_request("InvalidRequest", format!("{what} must be a duration such as 60s, 15m or 1h"))
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: Millis = n.parse().map_err(|_| bad())?;
    let per = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(per).ok_or_else(bad)
}

/// Stats answers computed at once, at most (each reads up to 50,000 records, without their
/// payloads and results); past it, 429.
pub const MAX_CONCURRENT: usize = 4;

static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_CONCURRENT);

async fn stats(
    State(s): State<AppState>, Path(name): Path<String>, Query(q): Query<StatsQuery>,
) -> Result<Response, ApiError> {
    let Ok(_running) = RUNNING.try_acquire() else {
        return Err(ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            &format!("this server already computes {MAX_CONCURRENT} stats answers; try again shortly"),
        ));
    };
    let window = q.window.as_deref().map(|w| millis(w, "window")).transpose()?.unwrap_or(3_600_000);
    // By default about 60 buckets, at least a second each.
    let step = q.step.as_deref().map(|w| millis(w, "step")).transpose()?.unwrap_or((window / 60).max(1_000));
    let stats = s.service.function_stats(&name, window, step).await?;
    Ok(Json(stats).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_have_units() {
        assert_eq!(millis("90s", "w").unwrap(), 90_000);
        assert_eq!(millis("15m", "w").unwrap(), 900_000);
        assert_eq!(millis("1d", "w").unwrap(), 86_400_000);
        assert_eq!(millis("250", "w").unwrap(), 250);
        for bad in ["", "m", "5x", "99999999999999999999d", "-5s"] {
            assert!(millis(bad, "w").is_err(), "{bad:?}");
        }
    }
}
