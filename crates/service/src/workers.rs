//! The server's side of remote workers: heartbeats (worker state), placement of queued work
//! onto live workers, and the calls a worker makes to run what it was given (poll, renew,
//! complete, fetch code). Workers never open the database: every state change they cause is a
//! guarded store transition made here.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gust_core::placement::{choose, Candidate, Need};
use gust_core::{Deployment, InvocationId, Lifecycle, Mode, Rejected, Resolved, WorkerId, WorkerState};
use gust_store::{Claimed, Completion, StoreError};
use serde::Serialize;

use crate::{Metrics, Service, ServiceError};

type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// Version of the worker protocol spoken by this server.
pub const WORKER_PROTOCOL: u32 = 1;
/// How often workers heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// A worker not heard from for this long gets no new work.
pub const LIVENESS_BOUND: Duration = Duration::from_millis(2_000);
/// Most queued invocations placed in one round.
const PLACEMENT_BATCH: usize = 512;
/// Longest a worker's poll waits for work.
pub const MAX_POLL_WAIT: Duration = Duration::from_secs(5);

/// What a heartbeat answers: the control-plane snapshot and the protocol's timings.
#[derive(Debug, Clone, Serialize)]
pub struct HeartbeatReply {
    pub protocol: u32,
    pub snapshot_version: u64,
    pub lease_ms: u64,
    pub heartbeat_ms: u64,
}

/// One invocation handed to a worker: everything it needs to run it, including the exact
/// deployment resolved at ingest (so a worker never runs a stale or wrong version).
#[derive(Debug, Clone)]
pub struct Assignment {
    pub claimed: Claimed,
    pub deployment: Arc<Deployment>,
}

/// The snapshot version at which a resolved version became visible: `$LATEST@r` needs a worker
/// that has seen revision `r`; published versions are immutable and pulled on a miss.
fn needed_snapshot(resolved: Resolved) -> u64 {
    match resolved {
        Resolved::Latest { revision } => revision,
        Resolved::Version(_) => 0,
    }
}

impl Service {
    /// Records a worker's heartbeat (its state, stamped with the server's clock).
    pub async fn worker_heartbeat(&self, mut state: WorkerState) -> Result<HeartbeatReply> {
        state.last_heartbeat = self.clock.now();
        self.store.put_worker(state).await?;
        self.placement_wake.notify_one();
        Ok(HeartbeatReply {
            protocol: WORKER_PROTOCOL,
            snapshot_version: self.store.snapshot_version().await?,
            lease_ms: self.cfg.lease.as_millis() as u64,
            heartbeat_ms: HEARTBEAT_INTERVAL.as_millis() as u64,
        })
    }

    /// Workers heard from recently, for operators.
    pub async fn workers(&self) -> Result<Vec<WorkerState>> {
        Ok(self.store.list_workers(self.clock.now() - 3_600_000).await?)
    }

    /// A worker asks for up to `max` invocations placed on it; waits up to `wait` for some.
    pub async fn worker_poll(
        &self,
        worker: &WorkerId,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Assignment>> {
        let deadline = tokio::time::Instant::now() + wait.min(MAX_POLL_WAIT);
        loop {
            let notified = self.worker_wake.notified();
            // A server shutting down hands out no more work (and holds no poll open).
            if self.is_shutting_down() {
                return Ok(Vec::new());
            }
            let now = self.clock.now();
            let lease_until = now + self.cfg.lease.as_millis() as i64;
            let claimed = self.store.claim_placed(worker, max.min(256), lease_until, now).await?;
            if !claimed.is_empty() || tokio::time::Instant::now() >= deadline {
                let mut out = Vec::with_capacity(claimed.len());
                for c in claimed {
                    match self.deployment(&c.request.function, c.request.resolved).await? {
                        Some(deployment) => out.push(Assignment { claimed: c, deployment }),
                        None => {
                            // The version is gone (function deleted): fail the attempt now.
                            let completion = Completion {
                                id: c.request.id.clone(),
                                epoch: c.epoch,
                                outcome: gust_core::AttemptOutcome::FunctionError,
                                result: None,
                                error: Some(gust_core::FunctionErrorBody::new(
                                    gust_core::ErrorKind::InitError,
                                    format!(
                                        "{}:{} no longer exists",
                                        c.request.function,
                                        c.request.resolved.label()
                                    ),
                                )),
                                log: String::new(),
                            };
                            let _ = self.store.complete(completion, self.clock.now()).await;
                        }
                    }
                }
                return Ok(out);
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    pub async fn worker_renew(
        &self,
        worker: &WorkerId,
        attempts: Vec<(InvocationId, u64)>,
    ) -> Result<Vec<std::result::Result<(), Rejected>>> {
        let now = self.clock.now();
        let until = now + self.cfg.lease.as_millis() as i64;
        Ok(self.store.renew_leases(worker, attempts, until, now).await?)
    }

    /// A worker reports an attempt's outcome. A fenced attempt is refused (and counted).
    pub async fn worker_complete(&self, completion: Completion) -> Result<Lifecycle> {
        let id = completion.id.clone();
        let result = self.store.complete(completion, self.clock.now()).await;
        self.dispatch.completed(&id);
        match result {
            Ok(lc) => Ok(lc),
            // A retried report of the accepted attempt (the first reply was lost): ack it again.
            Err(StoreError::Rejected(Rejected::AlreadyCompleted(_))) => {
                let rec = self
                    .store
                    .get_invocation(&id)
                    .await?
                    .ok_or_else(|| ServiceError::Internal("vanished".into()))?;
                Ok(rec.lifecycle)
            }
            Err(StoreError::Rejected(r @ Rejected::Fenced { .. })) => {
                Metrics::inc(&self.metrics.fenced_completions);
                Err(ServiceError::Fenced(r.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The control-plane delta a worker pulls when its snapshot version moves: every function
    /// whose `$LATEST` changed after `since`, so the worker can fetch and compile new code before
    /// the first invocation needs it.
    pub async fn snapshot_delta(&self, since: u64) -> Result<(u64, Vec<gust_core::FunctionConfig>)> {
        let version = self.store.snapshot_version().await?;
        let mut changed = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.store.list_functions(after.as_deref(), 1000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.name.clone());
            let full = page.len() == 1000;
            changed.extend(page.into_iter().filter(|f| f.revision > since));
            if !full {
                break;
            }
        }
        Ok((version, changed))
    }

    pub async fn artifact(&self, sha256: &str) -> Result<Bytes> {
        Ok(self.store.get_artifact(sha256).await?)
    }

    /// Places queued invocations on live remote workers (pure policy in
    /// `gust_core::placement`), then wakes their polls.
    pub(crate) async fn placer(self: Arc<Self>) {
        loop {
            // A server shutting down places nothing more (its workers' polls get nothing).
            if self.is_shutting_down() {
                return;
            }
            match self.place_round().await {
                Ok(n) if n > 0 => {
                    self.worker_wake.notify_waiters();
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "placement round failed"),
            }
            tokio::select! {
                _ = self.placement_wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    async fn place_round(&self) -> Result<usize> {
        let now = self.clock.now();
        let liveness = LIVENESS_BOUND.as_millis() as i64;
        let workers = self.store.list_workers(now - liveness).await?;
        if workers.is_empty() {
            return Ok(0);
        }
        let queued = self.store.queued(PLACEMENT_BATCH).await?;
        if queued.is_empty() {
            return Ok(0);
        }
        let placed = self.store.placed_counts().await?;
        let mut candidates: Vec<Candidate<'_>> = workers
            .iter()
            .map(|w| Candidate {
                state: w,
                placed: placed.iter().find(|(id, _)| *id == w.id).map_or(0, |(_, n)| *n as u32),
            })
            .collect();
        let mut batch = Vec::new();
        for (id, function, resolved) in queued {
            let Some(d) = self.deployment(&function, resolved).await? else { continue };
            let need = Need {
                runtime: d.spec.runtime,
                code_sha256: &d.code_sha256,
                snapshot_version: needed_snapshot(resolved),
            };
            if let Some(i) = choose(&need, &candidates, now, liveness) {
                candidates[i].placed += 1;
                batch.push((id, candidates[i].state.id.clone()));
            }
        }
        if batch.is_empty() {
            return Ok(0);
        }
        let results = self.store.place(batch, now).await?;
        Ok(results.iter().filter(|r| r.is_ok()).count())
    }

    /// Sync invocations when this server has no local worker: queued for a remote worker, and
    /// the caller waits for the one outcome (a lost worker fails it: sync is never re-run).
    pub(crate) async fn run_sync_remote(
        &self,
        request: gust_core::InvocationRequest,
    ) -> Result<crate::Invoked> {
        debug_assert_eq!(request.mode, Mode::Sync);
        // Refuse at once, rather than after the timeout, when nothing could run it.
        let now = self.clock.now();
        if self.store.list_workers(now - LIVENESS_BOUND.as_millis() as i64).await?.is_empty() {
            return Err(ServiceError::Unavailable(
                "no live worker can run this invocation: start one with `gust worker`".into(),
            ));
        }
        let new = gust_store::NewInvocation { request, lifecycle: Lifecycle::queued() };
        let record = match self.insert_one(new.clone()).await? {
            Ok(gust_store::Inserted::Created) => {
                Metrics::inc(&self.metrics.sync_invocations);
                self.placement_wake.notify_one();
                gust_core::InvocationRecord::new(new.request, new.lifecycle)
            }
            Ok(gust_store::Inserted::Existing(rec)) => *rec,
            Err(e) => return Err(e.into()),
        };
        self.await_outcome(record).await
    }
}
