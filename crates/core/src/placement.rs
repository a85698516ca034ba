//! Placement: which worker runs an invocation. Pure: the caller gathers worker states and the
//! invocation's needs; this module decides.
//!
//! Rules (issue 5, DESIGN.md): only live workers (a heartbeat within the liveness bound), with
//! a free slot, the invocation's runtime, and a snapshot that contains the resolved version
//! (or that will pull it: `snapshot_version >= needed`); among those, prefer a worker with a
//! warm environment for the code, then the least loaded, then the lowest id (deterministic).

use serde::{Deserialize, Serialize};

use crate::{Millis, Runtime, WorkerId};

/// What a worker last reported about itself (its heartbeat), as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerState {
    pub id: WorkerId,
    /// Monotonic per worker: a heartbeat with an older revision is ignored.
    pub revision: u64,
    pub runtimes: Vec<Runtime>,
    /// Invocations it can run at once.
    pub capacity: u32,
    /// Invocations it is running.
    pub running: u32,
    /// Code hashes (sha256) with a warm environment.
    pub warm: Vec<String>,
    /// The control-plane snapshot version it has applied.
    pub snapshot_version: u64,
    pub last_heartbeat: Millis,
    /// Where the server it heartbeats to takes invocations handed over by its peers (that
    /// server's advertised URL, stamped by that server; a worker cannot set it). `None`: that
    /// server takes none, so peers reach this worker through the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

impl WorkerState {
    pub fn is_live(&self, now: Millis, liveness_ms: i64) -> bool {
        now.saturating_sub(self.last_heartbeat) <= liveness_ms
    }
}

/// What one invocation needs from a worker.
#[derive(Debug, Clone, Copy)]
pub struct Need<'a> {
    pub runtime: Runtime,
    pub code_sha256: &'a str,
    /// Snapshot version at which the resolved version existed.
    pub snapshot_version: u64,
}

/// A candidate worker with what placement has already given it this round.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub state: &'a WorkerState,
    /// Invocations placed on it and not yet claimed.
    pub placed: u32,
}

impl Candidate<'_> {
    fn load(&self) -> u32 {
        self.state.running + self.placed
    }

    fn free(&self) -> u32 {
        self.state.capacity.saturating_sub(self.load())
    }
}

/// Picks the worker for one invocation, or `None` if no worker qualifies.
pub fn choose<'c>(
    need: &Need<'_>, candidates: &'c [Candidate<'c>], now: Millis, liveness_ms: i64,
) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            c.state.is_live(now, liveness_ms)
                && c.free() > 0
                && c.state.runtimes.iter().any(|r| r.same_family(need.runtime))
                && c.state.snapshot_version >= need.snapshot_version
        })
        .min_by(|(_, a), (_, b)| {
            let warm = |c: &Candidate<'_>| !c.state.warm.iter().any(|w| w == need.code_sha256);
            (warm(a), a.load(), &a.state.id.0).cmp(&(warm(b), b.load(), &b.state.id.0))
        })
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(
        id: &str, capacity: u32, running: u32, warm: &[&str], snapshot: u64, heartbeat: Millis,
    ) -> WorkerState {
        WorkerState {
            id: WorkerId(id.into()),
            revision: 1,
            runtimes: vec![Runtime::Wasm],
            capacity,
            running,
            warm: warm.iter().map(|s| s.to_string()).collect(),
            snapshot_version: snapshot,
            last_heartbeat: heartbeat,
            server: None,
        }
    }

    fn need(snapshot: u64) -> Need<'static> {
        Need { runtime: Runtime::Wasm, code_sha256: "abc", snapshot_version: snapshot }
    }

    fn pick(states: &[WorkerState], placed: &[u32], n: &Need<'_>) -> Option<String> {
        let cands: Vec<_> =
            states.iter().zip(placed).map(|(s, p)| Candidate { state: s, placed: *p }).collect();
        choose(n, &cands, 10_000, 3_000).map(|i| states[i].id.0.clone())
    }

    #[test]
    fn prefers_warm_then_least_loaded() {
        let ws = [
            worker("a", 4, 0, &[], 5, 10_000),
            worker("b", 4, 3, &["abc"], 5, 10_000),
            worker("c", 4, 1, &[], 5, 10_000),
        ];
        assert_eq!(pick(&ws, &[0, 0, 0], &need(5)).as_deref(), Some("b"), "warm wins over load");
        let cold = Need { code_sha256: "zzz", ..need(5) };
        assert_eq!(pick(&ws, &[0, 0, 0], &cold).as_deref(), Some("a"), "then the least loaded");
        assert_eq!(pick(&ws, &[2, 0, 0], &cold).as_deref(), Some("c"), "placed-but-unclaimed counts as load");
    }

    #[test]
    fn never_places_on_dead_full_stale_or_incompatible_workers() {
        let dead = worker("dead", 4, 0, &["abc"], 5, 6_999);
        let full = worker("full", 2, 2, &["abc"], 5, 10_000);
        let stale = worker("stale", 4, 0, &["abc"], 4, 10_000);
        let mut other = worker("other", 4, 0, &["abc"], 5, 10_000);
        other.runtimes.clear();
        let ws = [dead, full, stale, other];
        assert_eq!(pick(&ws, &[0, 0, 0, 0], &need(5)), None);
        let ok = worker("ok", 1, 0, &[], 9, 7_000);
        assert_eq!(
            pick(std::slice::from_ref(&ok), &[0], &need(5)).as_deref(),
            Some("ok"),
            "liveness bound is inclusive"
        );
        assert_eq!(pick(&[ok], &[1], &need(5)), None, "a placement fills the last slot");
    }
}
