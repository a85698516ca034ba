use std::sync::atomic::{AtomicU64, Ordering};

/// Process-local counters, exported on `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub sync_invocations: AtomicU64,
    pub async_invocations: AtomicU64,
    pub attempts_succeeded: AtomicU64,
    pub attempts_failed: AtomicU64,
    /// Completions this server's worker reported that the store refused as fenced.
    pub fenced_completions: AtomicU64,
    /// Completions a remote worker reported again after they were accepted (the first reply
    /// was lost), acknowledged as `already_completed`.
    pub repeated_completions: AtomicU64,
    /// Attempts this server's worker abandoned because lease renewal was refused.
    pub fenced_renewals: AtomicU64,
    /// Write-behind records of keyless sync invocations dropped because the queue was full.
    pub records_dropped: AtomicU64,
    pub recovered_leases: AtomicU64,
    pub expired_events: AtomicU64,
    /// Invocations refused (sync) or handed back (async) at a reserved-concurrency limit.
    pub throttled: AtomicU64,
    /// Async invocations refused because too many were already waiting.
    pub queue_full: AtomicU64,
    /// Ended invocation records deleted by retention.
    pub records_pruned: AtomicU64,
    /// Keyless sync invocations this server handed to the server of a worker attached there.
    pub peer_handovers: AtomicU64,
    /// Of those, the ones sent that got no answer (failed as worker lost).
    pub peer_handovers_lost: AtomicU64,
    /// Keyless sync invocations peer servers handed to this one for its workers.
    pub peer_handovers_served: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// `(name, help, value)` for each counter.
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("gust_sync_invocations_total", "Sync invocations admitted", get(&self.sync_invocations)),
            (
                "gust_peer_handovers_total",
                "Keyless sync invocations handed to the server of the worker that runs them",
                get(&self.peer_handovers),
            ),
            (
                "gust_peer_handovers_lost_total",
                "Invocations handed to a peer server that sent no answer (failed as worker lost)",
                get(&self.peer_handovers_lost),
            ),
            (
                "gust_peer_handovers_served_total",
                "Keyless sync invocations peer servers handed to this one",
                get(&self.peer_handovers_served),
            ),
            ("gust_async_invocations_total", "Async invocations acknowledged", get(&self.async_invocations)),
            ("gust_attempts_succeeded_total", "Attempts that succeeded", get(&self.attempts_succeeded)),
            ("gust_attempts_failed_total", "Attempts that failed", get(&self.attempts_failed)),
            (
                "gust_fenced_completions_total",
                "Completions refused for a stale attempt epoch",
                get(&self.fenced_completions),
            ),
            (
                "gust_repeated_completions_total",
                "Completions reported again after they were accepted (a lost reply)",
                get(&self.repeated_completions),
            ),
            (
                "gust_fenced_renewals_total",
                "Lease renewals refused for a stale attempt epoch",
                get(&self.fenced_renewals),
            ),
            (
                "gust_records_dropped_total",
                "Keyless sync records dropped from the write-behind queue",
                get(&self.records_dropped),
            ),
            (
                "gust_recovered_leases_total",
                "Attempts recovered after their lease expired",
                get(&self.recovered_leases),
            ),
            (
                "gust_expired_events_total",
                "Async events dropped for exceeding their maximum age",
                get(&self.expired_events),
            ),
            (
                "gust_throttled_total",
                "Invocations throttled at their function's reserved concurrency",
                get(&self.throttled),
            ),
            (
                "gust_queue_full_total",
                "Async invocations refused because too many were already waiting",
                get(&self.queue_full),
            ),
            (
                "gust_records_pruned_total",
                "Ended invocation records deleted by retention",
                get(&self.records_pruned),
            ),
        ]
    }
}
