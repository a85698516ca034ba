//! Bounded disk: retention of ended invocation records, and caps on waiting async work.
//!
//! - **Retention.** A background task deletes the records of ended invocations older than
//!   [`Retention::max_age`], then, while the ended records hold more than
//!   [`Retention::max_bytes`], the oldest of them, a batch per store call so the single writer
//!   is never held for long. Work in flight is never touched. An idempotency key is remembered
//!   as long as its record is.
//! - **Queue caps.** An async invocation is refused (429) when its function already has
//!   [`QueueCaps::per_function`] invocations waiting (queued, placed or in retry backoff), or all
//!   functions together [`QueueCaps::total`]. The counts come from the store once a second,
//!   plus what this server admitted since, so the check costs no store round trip; other
//!   servers' admissions since the last refresh are not seen, so a cluster may overshoot by
//!   about one second of ingest.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gust_core::Millis;
use parking_lot::Mutex;

use crate::{Service, ServiceError};

type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// Records deleted per store call.
const PRUNE_BATCH: usize = 1000;
/// Pause between two batches, so retention never crowds out the hot path's writes.
const PRUNE_PAUSE: Duration = Duration::from_millis(5);
/// How often the waiting-work counts are read from the store.
const BACKLOG_REFRESH: Duration = Duration::from_secs(1);

/// How long ended invocations are kept, and how many bytes of them at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Records of invocations that ended longer ago are deleted; `None` keeps them.
    pub max_age: Option<Duration>,
    /// While ended records hold more bytes (payloads, results, errors, logs), the oldest go.
    pub max_bytes: Option<u64>,
    /// How often retention runs.
    pub interval: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: Some(DEFAULT_RETAIN_AGE),
            max_bytes: Some(DEFAULT_RETAIN_BYTES),
            interval: Duration::from_secs(60),
        }
    }
}

/// Ended invocations are kept a week by default.
pub const DEFAULT_RETAIN_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// And at most 1 GiB of them.
pub const DEFAULT_RETAIN_BYTES: u64 = 1 << 30;

/// Most async invocations waiting to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCaps {
    pub per_function: u64,
    pub total: u64,
}

impl Default for QueueCaps {
    fn default() -> Self {
        QueueCaps { per_function: 100_000, total: 1_000_000 }
    }
}

/// What retention freed in one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retained {
    pub by_age: gust_store::Pruned,
    pub by_bytes: gust_store::Pruned,
}

/// The waiting async work as last read, plus this server's admissions since.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    inner: Mutex<BacklogCounts>,
}

#[derive(Debug, Default)]
struct BacklogCounts {
    per_function: HashMap<String, u64>,
    total: u64,
}

impl Backlog {
    /// Counts one more waiting invocation of `function`, unless a cap is reached.
    fn admit(&self, function: &str, caps: QueueCaps) -> Result<()> {
        let mut b = self.inner.lock();
        if b.total >= caps.total {
            return Err(ServiceError::QueueFull {
                function: function.to_string(),
                waiting: b.total,
                limit: caps.total,
                scope: "all functions",
            });
        }
        let waiting = b.per_function.get(function).copied().unwrap_or(0);
        if waiting >= caps.per_function {
            return Err(ServiceError::QueueFull {
                function: function.to_string(),
                waiting,
                limit: caps.per_function,
                scope: "the function",
            });
        }
        *b.per_function.entry(function.to_string()).or_default() += 1;
        b.total += 1;
        Ok(())
    }

    fn replace(&self, counts: Vec<(String, u64)>) {
        let total = counts.iter().map(|(_, n)| n).sum();
        let per_function = counts.into_iter().collect();
        *self.inner.lock() = BacklogCounts { per_function, total };
    }
}

impl Service {
    /// Admits one async invocation of `function` under the queue caps.
    pub(crate) fn admit_async(&self, function: &str) -> Result<()> {
        let admitted = self.backlog.admit(function, self.cfg.queue_caps);
        if admitted.is_err() {
            crate::Metrics::inc(&self.metrics.queue_full);
        }
        admitted
    }

    /// Keeps the waiting-work counts fresh.
    pub(crate) async fn backlog_refresher(self: Arc<Self>) {
        loop {
            match self.store.async_backlog().await {
                Ok(counts) => self.backlog.replace(counts),
                Err(e) => tracing::debug!(error = %e, "reading the async backlog failed"),
            }
            tokio::time::sleep(BACKLOG_REFRESH).await;
        }
    }

    /// Runs retention every interval. With no byte budget (or no retention at all) it still
    /// reads the ended totals each interval: the read folds the rows every ended record adds
    /// to them, which would otherwise grow without bound.
    pub(crate) async fn retainer(self: Arc<Self>) {
        let r = self.cfg.retention;
        loop {
            tokio::time::sleep(r.interval).await;
            if r.max_bytes.is_none() {
                if let Err(e) = self.store.ended_invocations().await {
                    tracing::warn!(error = %e, "folding the ended totals failed; it runs again next interval");
                }
            }
            if r.max_age.is_none() && r.max_bytes.is_none() {
                continue;
            }
            match self.retain_once().await {
                Ok(done) if done != Retained::default() => tracing::info!(
                    by_age = done.by_age.invocations,
                    by_bytes = done.by_bytes.invocations,
                    bytes = done.by_age.bytes + done.by_bytes.bytes,
                    "retention deleted ended invocation records"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention failed; it runs again next interval"),
            }
        }
    }

    /// One retention pass: by age, then by the byte budget.
    pub async fn retain_once(&self) -> Result<Retained> {
        let r = self.cfg.retention;
        let mut done = Retained::default();
        if let Some(age) = r.max_age {
            let before: Millis = self.clock.now() - age.as_millis() as Millis;
            loop {
                let p = self.prune(before, PRUNE_BATCH).await?;
                done.by_age.invocations += p.invocations;
                done.by_age.bytes += p.bytes;
                if p.invocations < PRUNE_BATCH as u64 {
                    break;
                }
                tokio::time::sleep(PRUNE_PAUSE).await;
            }
        }
        if let Some(budget) = r.max_bytes {
            let kept = self.store.ended_invocations().await?;
            let excess = kept.bytes.saturating_sub(budget);
            // Records differ in size: delete as many of the oldest as the average size says
            // cover what is left of the excess, and look again.
            let average = kept.bytes.checked_div(kept.invocations).unwrap_or(1).max(1);
            while done.by_bytes.bytes < excess {
                let n = (excess - done.by_bytes.bytes).div_ceil(average).clamp(1, PRUNE_BATCH as u64);
                let p = self.prune(Millis::MAX, n as usize).await?;
                done.by_bytes.invocations += p.invocations;
                done.by_bytes.bytes += p.bytes;
                if p.invocations == 0 {
                    break;
                }
                tokio::time::sleep(PRUNE_PAUSE).await;
            }
        }
        Ok(done)
    }

    /// One batch: at most `limit` ended records finished before `before`, oldest first.
    async fn prune(&self, before: Millis, limit: usize) -> Result<gust_store::Pruned> {
        let p = self.store.prune_invocations(before, limit).await?;
        crate::Metrics::add(&self.metrics.records_pruned, p.invocations);
        Ok(p)
    }
}

/// Parses a duration such as `7d`, `12h`, `30m`, `45s` or `500ms`.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{s:?} is not a duration (e.g. 7d, 12h, 30m, 45s)"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m, h or d)")),
    };
    n.checked_mul(secs).map(Duration::from_secs).ok_or_else(|| format!("{s:?} is too long"))
}

/// Parses a size such as `1GB`, `512MB`, `64KiB` or `1000` (bytes); units are powers of 1024.
pub fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{s:?} is not a size (e.g. 1GB, 512MB)"))?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use KB, MB, GB or TB)")),
    };
    n.checked_mul(1 << shift).ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse_with_units() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "d", "7w", "-1d", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_bytes("1GB"), Ok(1 << 30));
        assert_eq!(parse_bytes("512mib"), Ok(512 << 20));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        for bad in ["", "GB", "1PB", "-1", "99999999999999999999TB"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_caps_hold_per_function_and_in_total() {
        let caps = QueueCaps { per_function: 2, total: 3 };
        let b = Backlog::default();
        b.admit("a", caps).unwrap();
        b.admit("a", caps).unwrap();
        assert!(matches!(b.admit("a", caps), Err(ServiceError::QueueFull { limit: 2, .. })));
        b.admit("b", caps).unwrap();
        assert!(matches!(b.admit("c", caps), Err(ServiceError::QueueFull { limit: 3, .. })));
        // A refresh from the store replaces the counts (work ran in the meantime).
        b.replace(vec![("a".into(), 1)]);
        b.admit("a", caps).unwrap();
        b.admit("c", caps).unwrap();
    }
}
