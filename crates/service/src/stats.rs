//! A function's figures over time, for the console's charts: invocations, errors, duration
//! p50/p99, concurrency and cold starts from the records of invocations that ended in a
//! window (bounded: past [`MAX_STATS_RECORDS`] the newest are used and the answer says it was
//! sampled), and throttles from this server's own count (throttled sync calls leave no record),
//! kept per minute for a day.

use std::collections::{HashMap, VecDeque};

use gust_core::{InvocationId, Millis, StateName};
use gust_store::InvocationFilter;
use parking_lot::Mutex;
use serde::Serialize;

use crate::{Service, ServiceError};

type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// Most records one answer reads.
pub const MAX_STATS_RECORDS: usize = 50_000;
/// The longest window.
pub const MAX_WINDOW_MS: Millis = 24 * 3_600_000;
/// Most buckets in one answer.
pub const MAX_BUCKETS: usize = 240;
/// Functions whose throttles are kept per minute, at most (the rest are counted only in the
/// `gust_throttled_total` counter).
pub const MAX_THROTTLED_FUNCTIONS: usize = 1_000;
const MINUTE_MS: Millis = 60_000;

/// One bucket of a [`FunctionStats`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Bucket {
    /// The bucket's start (ms since the epoch).
    pub at: Millis,
    /// Invocations that ended in it.
    pub invocations: u64,
    /// Of those, the ones that failed or expired.
    pub errors: u64,
    /// Throttled calls this server counted (a minute's count falls in the bucket its minute
    /// starts in).
    pub throttles: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Average attempts running over the bucket (their run time over its length).
    pub concurrency: f64,
    pub cold_starts: u64,
}

/// A function's figures over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionStats {
    pub function: String,
    pub from: Millis,
    pub to: Millis,
    pub step_ms: Millis,
    /// More records ended in the window than one answer reads: the oldest were left out.
    pub sampled: bool,
    pub buckets: Vec<Bucket>,
}

/// Throttles per function and minute, for the last day.
#[derive(Debug, Default)]
pub struct Throttles {
    by_function: Mutex<HashMap<String, VecDeque<(Millis, u64)>>>,
}

impl Throttles {
    pub fn record(&self, function: &str, now: Millis) {
        let minute = now - now.rem_euclid(MINUTE_MS);
        let mut all = self.by_function.lock();
        if !all.contains_key(function) && all.len() >= MAX_THROTTLED_FUNCTIONS {
            return;
        }
        let series = all.entry(function.to_string()).or_default();
        match series.back_mut() {
            Some((m, n)) if *m == minute => *n += 1,
            _ => series.push_back((minute, 1)),
        }
        while series.front().is_some_and(|(m, _)| *m < minute - MAX_WINDOW_MS) {
            series.pop_front();
        }
    }

    pub fn forget(&self, function: &str) {
        self.by_function.lock().remove(function);
    }

    fn within(&self, function: &str, from: Millis, to: Millis) -> Vec<(Millis, u64)> {
        let all = self.by_function.lock();
        all.get(function)
            .map(|s| s.iter().filter(|(m, _)| *m >= from - MINUTE_MS && *m < to).copied().collect())
            .unwrap_or_default()
    }
}

/// The `q`-quantile (0..1) of sorted values, nearest rank.
fn quantile(sorted: &[u64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1] as f64 / 1000.0)
}

impl Service {
    /// `function`'s figures over the `window_ms` before now, in buckets of `step_ms`.
    pub async fn function_stats(
        &self, function: &str, window_ms: Millis, step_ms: Millis,
    ) -> Result<FunctionStats> {
        let bad = |m: String| Err(ServiceError::InvalidRequest(m));
        if !(1..=MAX_WINDOW_MS).contains(&window_ms) {
            return bad(format!("window must be between 1 ms and {} hours", MAX_WINDOW_MS / 3_600_000));
        }
        if step_ms < 1_000 || step_ms > window_ms || window_ms / step_ms > MAX_BUCKETS as Millis {
            return bad(format!(
                "step must be at least 1s, at most the window, and give at most {MAX_BUCKETS} buckets"
            ));
        }
        self.get_function(function).await?;
        let now = self.clock.now();
        // Buckets aligned to the step, the last one holding now.
        let to = now - now.rem_euclid(step_ms) + step_ms;
        let from = to - (window_ms + step_ms - 1) / step_ms * step_ms;
        let n = ((to - from) / step_ms) as usize;
        let mut buckets: Vec<Bucket> =
            (0..n).map(|i| Bucket { at: from + i as Millis * step_ms, ..Bucket::default() }).collect();
        let mut durations: Vec<Vec<u64>> = vec![Vec::new(); n];
        let mut busy_us: Vec<u64> = vec![0; n];
        // Newest first (by when they came), until the window's start, with a slack for what
        // came earlier and ended in it (a run takes at most 15 minutes; a retried async event
        // longer: its last attempt is left out past the slack). Bounded: the newest are kept.
        let slack = gust_core::limits::MAX_TIMEOUT_MS as Millis;
        let mut before: Option<InvocationId> = None;
        let mut records = Vec::new();
        let mut sampled = false;
        loop {
            let filter =
                InvocationFilter { limit: 1_000, before: before.clone(), light: true, ..Default::default() };
            let page = self.list_invocations(function, filter).await?;
            let full = page.len() == 1_000;
            let oldest = page.last().map(|r| r.request.received_at);
            before = page.last().map(|r| r.request.id.clone());
            records.extend(page.into_iter().filter(|r| r.finished_at.is_some_and(|f| f >= from && f < to)));
            if records.len() >= MAX_STATS_RECORDS {
                records.truncate(MAX_STATS_RECORDS);
                sampled = full;
                break;
            }
            if !full || oldest.is_some_and(|t| t < from - slack) {
                break;
            }
        }
        for r in &records {
            let Some(finished) = r.finished_at else { continue };
            let i = ((finished - from) / step_ms) as usize;
            let Some(b) = buckets.get_mut(i) else { continue };
            b.invocations += 1;
            if matches!(r.lifecycle.state.name(), StateName::Failed | StateName::Expired) {
                b.errors += 1;
            }
            if let Some(rep) = &r.report {
                durations[i].push(rep.duration_us);
                busy_us[i] = busy_us[i].saturating_add(rep.duration_us);
                if rep.init_us.is_some() {
                    b.cold_starts += 1;
                }
            }
        }
        for (i, b) in buckets.iter_mut().enumerate() {
            durations[i].sort_unstable();
            b.p50_ms = quantile(&durations[i], 0.5);
            b.p99_ms = quantile(&durations[i], 0.99);
            b.concurrency = busy_us[i] as f64 / (step_ms as f64 * 1000.0);
        }
        for (minute, count) in self.throttles.within(function, from, to) {
            let i = ((minute.max(from) - from) / step_ms) as usize;
            if let Some(b) = buckets.get_mut(i) {
                b.throttles += count;
            }
        }
        Ok(FunctionStats { function: function.to_string(), from, to, step_ms, sampled, buckets })
    }

    /// Counts a throttled call of `function` (the counter and the per-minute series).
    pub(crate) fn count_throttle(&self, function: &str) {
        crate::Metrics::inc(&self.metrics.throttled);
        self.throttles.record(function, self.clock.now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&[7_000], 0.99), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn throttles_are_kept_per_minute_for_a_day_and_bounded_in_functions() {
        let t = Throttles::default();
        t.record("f", 60_000);
        t.record("f", 119_999);
        t.record("f", 120_000);
        assert_eq!(t.within("f", 0, 200_000), vec![(60_000, 2), (120_000, 1)]);
        t.record("f", 120_000 + MAX_WINDOW_MS + MINUTE_MS);
        assert_eq!(t.within("f", 0, i64::MAX).len(), 1, "a day later the old minutes are gone");
        for i in 0..MAX_THROTTLED_FUNCTIONS + 10 {
            t.record(&format!("g{i}"), 0);
        }
        assert_eq!(t.by_function.lock().len(), MAX_THROTTLED_FUNCTIONS);
    }
}
