//! The local worker's side of the lifecycle: claim queued work, run it, renew leases while it
//! runs, complete with the attempt epoch; the sweeper that recovers expired leases, due
//! retries and too-old events; and graceful shutdown.
//!
//! # Shutdown
//!
//! [`Service::begin_shutdown`] refuses new invocations (`ShuttingDown`), stops the dispatcher
//! claiming and remote polls receiving work; what runs goes on, its leases renewed. From then
//! on a keyless sync invocation answers only once its record is written. The caller waits
//! (within its grace) for [`Service::attempts_finished`], then [`Service::finish_shutdown`]
//! hands back what still runs and writes every queued record. Handing back an attempt ends
//! its lease now and recovers it at once (`renew_leases` to `now`, then `recover(now)`, under
//! the renewer's lock so no renewal slips in between): an async invocation is queued again for
//! any server, a sync one fails as worker lost (never re-run); its epoch no longer runs, so a
//! late completion of it is fenced, and this process drops its result without reporting it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use gust_core::{AttemptOutcome, InvocationId, InvocationRecord, Lifecycle, Rejected, WorkerId};
use gust_store::space::LogEvery;
use gust_store::{Claimed, Completion, StoreError};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use crate::{Execution, Metrics, Service};

/// Sweeps between two reaps of idle environments.
const SWEEPS_PER_REAP: u32 = 40;
/// Keyless sync records waiting to be written behind; past this they are dropped (and counted).
const WRITE_BEHIND_QUEUE: usize = 20_000;
/// Bytes (payload, result, error, log) of the keyless sync records waiting to be written
/// behind; past this they are dropped (and counted), so a store that cannot take them for a
/// while (a full disk) costs bounded memory whatever the payloads' sizes.
const WRITE_BEHIND_MAX_BYTES: u64 = 256 << 20;
/// While the store's disk is full, the write-behind task retries its batch this often at first,
/// backing off to [`WRITE_BEHIND_FULL_RETRY_MAX`].
const WRITE_BEHIND_FULL_RETRY: Duration = Duration::from_millis(250);
const WRITE_BEHIND_FULL_RETRY_MAX: Duration = Duration::from_secs(2);
/// Tries of a batch on a full disk once shutdown has begun, before its records are given up
/// (a shutdown must end).
const WRITE_BEHIND_TRIES_AT_SHUTDOWN: u32 = 3;
/// How often a lasting condition (a full disk, records dropped) is logged again.
const REPEATED_WARNING_EVERY: Duration = Duration::from_secs(30);
/// Most records written behind in one store call.
const WRITE_BEHIND_BATCH: usize = 2_000;
/// How long the write-behind task gathers records before writing a partial batch.
const WRITE_BEHIND_LINGER: Duration = Duration::from_millis(20);
/// How long a read waits for records queued before it to be written (a stalled store must not
/// hang reads; past this the read answers with what the store has).
const WRITE_BEHIND_READ_WAIT: Duration = Duration::from_secs(2);

pub(crate) struct DispatchState {
    /// Attempts this process is running: invocation id → attempt epoch (renewed together).
    running: Mutex<HashMap<InvocationId, u64>>,
    /// Attempts handed back at shutdown, still executing: their results are dropped, never
    /// reported. Lock order: `running`, then this.
    handed_back: Mutex<HashSet<(InvocationId, u64)>>,
    /// Attempts no longer tracked whose completion is being written right now: shutdown waits
    /// for them too, or a completion could be cut off by the exit.
    completing: std::sync::atomic::AtomicUsize,
    /// Woken whenever an attempt stops being tracked or its completion is written (shutdown
    /// waits for none to be left).
    attempt_ended: Notify,
    /// Held by the renewer across one renewal round, and by a hand-back, so a renewal never
    /// lands between a hand-back's lease end and its recovery.
    renewing: tokio::sync::Mutex<()>,
    /// Set once shutdown begins: no new invocations, no new claims.
    draining: AtomicBool,
    wake: Notify,
    pub(crate) write_behind: mpsc::Sender<InvocationRecord>,
    write_behind_rx: Mutex<Option<mpsc::Receiver<InvocationRecord>>>,
    /// Records ever queued for writing behind (counted before the send, so a reader that sees
    /// a count is sure every record queued before it is included).
    behind_queued: AtomicU64,
    /// Records settled: written (or failed to write) by the task, or dropped on a full queue.
    /// A read waits until this reaches what was queued when it began.
    behind_settled: watch::Sender<u64>,
    /// Records whose write failed (settled, but not in the store).
    behind_lost: AtomicU64,
    /// Bytes of the records queued and not yet settled ([`WRITE_BEHIND_MAX_BYTES`]).
    behind_bytes: AtomicU64,
    /// Set while the store's disk is full and the task holds a batch it cannot write: reads
    /// then do not wait for records that cannot land yet.
    behind_stalled: AtomicBool,
    /// Warnings about records dropped, and about store calls failing on a full disk, said at
    /// most once per [`REPEATED_WARNING_EVERY`].
    dropped_log: LogEvery,
    full_disk_log: LogEvery,
    /// Asks the write-behind task to write what it holds now instead of lingering.
    behind_flush: Notify,
    /// Callers waiting for an invocation's outcome on this server, woken when a completion
    /// arrives here (polling the store stays the safety net, e.g. for other servers).
    waiters: Mutex<HashMap<InvocationId, (Arc<Notify>, usize)>>,
}

/// A registration in the waiters map, removed when the last waiter for that id leaves.
pub(crate) struct Waiter<'a> {
    state: &'a DispatchState,
    id: InvocationId,
    pub(crate) notify: Arc<Notify>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut waiters = self.state.waiters.lock();
        if let Some((_, n)) = waiters.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                waiters.remove(&self.id);
            }
        }
    }
}

impl DispatchState {
    pub(crate) fn wait_for(&self, id: &InvocationId) -> Waiter<'_> {
        let mut waiters = self.waiters.lock();
        let entry = waiters.entry(id.clone()).or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Waiter { state: self, id: id.clone(), notify: entry.0.clone() }
    }

    pub(crate) fn completed(&self, id: &InvocationId) {
        if let Some((n, _)) = self.waiters.lock().get(id) {
            n.notify_waiters();
        }
    }
}

impl DispatchState {
    /// Queues a finished record to be written behind; drops it (returning false) when the
    /// queue is full, in records or bytes, rather than slowing the caller down.
    pub(crate) fn write_behind(&self, record: InvocationRecord) -> bool {
        self.behind_queued.fetch_add(1, Ordering::SeqCst);
        let size = record_bytes(&record);
        let held = self.behind_bytes.fetch_add(size, Ordering::Relaxed) + size;
        if held <= WRITE_BEHIND_MAX_BYTES && self.write_behind.try_send(record).is_ok() {
            return true;
        }
        self.behind_bytes.fetch_sub(size, Ordering::Relaxed);
        self.settle(1);
        if let Some(held) = self.dropped_log.allow() {
            tracing::warn!(
                dropped_meanwhile = held,
                "the write-behind queue is full ({WRITE_BEHIND_QUEUE} records or {WRITE_BEHIND_MAX_BYTES} bytes): a keyless sync invocation's record is dropped (its caller had the answer; counted in gust_records_dropped_total)"
            );
        }
        false
    }

    /// Logs a background store call that failed: a full disk is said once in a while (it
    /// lasts, and the call is retried at its own pace), anything else every time.
    pub(crate) fn store_failed(&self, what: &str, e: &StoreError) {
        self.failed_for_space(what, matches!(e, StoreError::Full(_)), e);
    }

    /// [`DispatchState::store_failed`] for an error already in the service's terms.
    pub(crate) fn failed_for_space(&self, what: &str, disk_full: bool, e: &dyn std::fmt::Display) {
        if !disk_full {
            tracing::error!(error = %e, "{what} failed");
        } else if let Some(held) = self.full_disk_log.allow() {
            tracing::warn!(error = %e, repeated = held, "{what} failed: the disk is full; retrying until space is freed");
        }
    }

    fn settle(&self, n: usize) {
        self.behind_settled.send_modify(|v| *v += n as u64);
    }

    /// During shutdown: queues a record (waiting for room rather than dropping it) and
    /// returns once it is written, so the caller answers only with its record in the store.
    pub(crate) async fn write_behind_durably(&self, record: InvocationRecord) {
        let target = self.behind_queued.fetch_add(1, Ordering::SeqCst) + 1;
        let size = record_bytes(&record);
        self.behind_bytes.fetch_add(size, Ordering::Relaxed);
        if self.write_behind.send(record).await.is_err() {
            self.behind_bytes.fetch_sub(size, Ordering::Relaxed);
            self.settle(1);
            return;
        }
        self.flush_behind(target, None).await;
    }

    /// Waits until `target` records are settled, asking the task to write at once; `false`
    /// if `patience` ran out first.
    async fn flush_behind(&self, target: u64, patience: Option<Duration>) -> bool {
        let mut settled = self.behind_settled.subscribe();
        if *settled.borrow() >= target {
            return true;
        }
        self.behind_flush.notify_one();
        let wait = settled.wait_for(|v| *v >= target);
        match patience {
            Some(p) => matches!(tokio::time::timeout(p, wait).await, Ok(Ok(_))),
            None => wait.await.is_ok(),
        }
    }

    /// Waits until every record queued before this call is in the store, so a read right
    /// after a sync invocation's answer finds its record. Free when nothing is queued; the
    /// invocation itself never waits for this.
    pub(crate) async fn written_behind(&self) {
        if self.behind_stalled.load(Ordering::Relaxed) {
            return;
        }
        let target = self.behind_queued.load(Ordering::SeqCst);
        let mut settled = self.behind_settled.subscribe();
        if *settled.borrow() >= target {
            return;
        }
        self.behind_flush.notify_one();
        let _ = tokio::time::timeout(WRITE_BEHIND_READ_WAIT, settled.wait_for(|v| *v >= target)).await;
    }
}

impl Default for DispatchState {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(WRITE_BEHIND_QUEUE);
        DispatchState {
            running: Mutex::new(HashMap::new()),
            handed_back: Mutex::new(HashSet::new()),
            completing: Default::default(),
            attempt_ended: Notify::new(),
            renewing: tokio::sync::Mutex::new(()),
            draining: AtomicBool::new(false),
            wake: Notify::new(),
            write_behind: tx,
            write_behind_rx: Mutex::new(Some(rx)),
            behind_queued: AtomicU64::new(0),
            behind_settled: watch::Sender::new(0),
            behind_lost: AtomicU64::new(0),
            behind_bytes: AtomicU64::new(0),
            behind_stalled: AtomicBool::new(false),
            dropped_log: LogEvery::new(REPEATED_WARNING_EVERY),
            full_disk_log: LogEvery::new(REPEATED_WARNING_EVERY),
            behind_flush: Notify::new(),
            waiters: Mutex::new(HashMap::new()),
        }
    }
}

/// What [`Service::finish_shutdown`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    /// Attempts still running at the deadline, handed back for redelivery.
    pub handed_back: usize,
    /// Attempts still running at the deadline that the store would not hand back (they had
    /// just completed, or were fenced already).
    pub not_handed_back: usize,
    /// Whether every keyless sync record queued was written (or failed to be, see below).
    pub records_written: bool,
    /// Keyless sync records this process never got into the store (a full queue, a failed
    /// write), since it started.
    pub records_lost: u64,
}

/// The background tasks of a service; aborted when dropped.
pub struct Background {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Hands each event of a store's announcements to `on` (`None` after some were missed) until
/// the store stops announcing.
fn forward<T: Clone + Send + 'static>(
    mut events: tokio::sync::broadcast::Receiver<T>, on: impl Fn(Option<T>) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => on(Some(event)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => on(None),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    })
}

impl Service {
    /// Starts the dispatcher, lease renewer, sweeper and snapshot poller.
    pub fn start(self: &Arc<Self>) -> Background {
        let mut tasks = vec![
            tokio::spawn(self.clone().renewer()),
            tokio::spawn(self.clone().sweeper()),
            tokio::spawn(self.clone().snapshot_poller()),
            tokio::spawn(self.clone().placer()),
            tokio::spawn(self.clone().retainer()),
            tokio::spawn(self.clone().backlog_refresher()),
            tokio::spawn(self.clone().message_expirer()),
            tokio::spawn(self.clone().mapping_supervisor()),
            tokio::spawn(self.clone().scheduler()),
        ];
        if self.store.shared() {
            tasks.push(tokio::spawn(self.clone().slot_renewer()));
        }
        if self.cfg.local_worker {
            tasks.push(tokio::spawn(self.clone().dispatcher()));
        }
        if let Some(completed) = self.store.completion_events() {
            // Completions committed by other servers wake this server's waiting callers (a
            // caller that missed one finds its outcome by polling the store).
            let service = self.clone();
            tasks.push(forward(completed, move |id| {
                if let Some(id) = id {
                    service.dispatch.completed(&id);
                }
            }));
        }
        if let Some(placed) = self.store.placement_events() {
            // Placements committed by any server wake the polls of their workers held here;
            // after missed ones, every poll here checks again.
            let service = self.clone();
            tasks.push(forward(placed, move |worker| match worker {
                Some(worker) => service.polls.wake(&worker),
                None => service.polls.wake_all(),
            }));
        }
        if let Some(rx) = self.take_ingest_rx() {
            tasks.push(tokio::spawn(self.clone().ingest_batcher(rx)));
        }
        if let Some(rx) = self.dispatch.write_behind_rx.lock().take() {
            tasks.push(tokio::spawn(self.clone().write_behind_task(rx)));
        }
        Background { tasks }
    }

    /// Begins a graceful shutdown: new invocations are refused (`ShuttingDown`), the
    /// dispatcher claims nothing more and remote workers' polls get nothing; attempts running
    /// here go on, their leases renewed. Keyless sync invocations still finishing answer only
    /// once their records are written.
    pub fn begin_shutdown(&self) {
        self.dispatch.draining.store(true, Ordering::SeqCst);
        self.dispatch.wake.notify_one();
        self.polls.wake_all();
        self.direct.unhand_waiting();
    }

    /// Whether a shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.dispatch.draining.load(Ordering::Relaxed)
    }

    /// Resolves once no attempt runs on this process (async attempts of the dispatcher and
    /// sync attempts with an idempotency key).
    pub async fn attempts_finished(&self) {
        loop {
            let ended = self.dispatch.attempt_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.dispatch.running.lock().is_empty() && self.dispatch.completing.load(Ordering::SeqCst) == 0
            {
                return;
            }
            ended.await;
        }
    }

    /// Ends a shutdown begun by [`Service::begin_shutdown`]: hands back every attempt still
    /// running here (their results are then dropped), and writes every keyless sync record
    /// still queued. With `patience`, each step gives up after it (a forced shutdown).
    pub async fn finish_shutdown(&self, patience: Option<Duration>) -> Drained {
        let mut drained = Drained::default();
        let hand_back = self.hand_back_running();
        let handed = match patience {
            Some(p) => tokio::time::timeout(p, hand_back)
                .await
                .unwrap_or_else(|_| Err(StoreError::Backend("the store did not answer in time".into()))),
            None => hand_back.await,
        };
        match handed {
            Ok((requested, n)) => (drained.handed_back, drained.not_handed_back) = (n, requested - n),
            Err(e) => {
                tracing::error!(error = %e, "handing back running attempts failed; their leases will expire")
            }
        }
        let target = self.dispatch.behind_queued.load(Ordering::SeqCst);
        drained.records_written = self.dispatch.flush_behind(target, patience).await;
        drained.records_lost = self.dispatch.behind_lost.load(Ordering::Relaxed)
            + self.metrics.records_dropped.load(Ordering::Relaxed);
        drained
    }

    /// Hands back every attempt running on this process: `(attempts, handed back)`.
    async fn hand_back_running(&self) -> Result<(usize, usize), StoreError> {
        let _round = self.dispatch.renewing.lock().await;
        let attempts: Vec<(InvocationId, u64)> = {
            let mut running = self.dispatch.running.lock();
            let mut handed_back = self.dispatch.handed_back.lock();
            running
                .drain()
                .inspect(|(id, epoch)| {
                    handed_back.insert((id.clone(), *epoch));
                })
                .collect()
        };
        self.dispatch.attempt_ended.notify_waiters();
        if attempts.is_empty() {
            return Ok((0, 0));
        }
        let n = attempts.len();
        let results = self.hand_back(&self.cfg.worker_id, attempts.clone()).await?;
        for ((id, epoch), r) in attempts.iter().zip(&results) {
            match r {
                Ok(()) => tracing::info!(%id, epoch, "attempt handed back at shutdown"),
                Err(why) => tracing::info!(%id, epoch, %why, "attempt not handed back"),
            }
        }
        Ok((n, results.iter().filter(|r| r.is_ok()).count()))
    }

    /// Hands back attempts `worker` runs and will not finish: each lease ends now and the
    /// attempt is recovered at once (async: queued again for any server; sync: failed as
    /// worker lost, never re-run). Guarded like a renewal (the worker must own the current
    /// epoch); per entry, ok or why it was refused (already completed, fenced, not its own).
    /// The caller stops renewing these attempts first.
    pub(crate) async fn hand_back(
        &self, worker: &WorkerId, attempts: Vec<(InvocationId, u64)>,
    ) -> Result<Vec<Result<(), Rejected>>, StoreError> {
        let now = self.clock.now();
        let ids: Vec<InvocationId> = attempts.iter().map(|(id, _)| id.clone()).collect();
        let results = self.store.renew_leases(worker, attempts, now, now).await?;
        if results.iter().any(Result::is_ok) {
            let r = self.store.recover(now).await?;
            Metrics::add(&self.metrics.recovered_leases, r.requeued + r.lost);
            Metrics::add(&self.metrics.expired_events, r.expired);
            for id in &ids {
                self.dispatch.completed(id);
            }
            self.wake_dispatcher();
        }
        Ok(results)
    }

    /// Worker protocol: a worker shutting down hands back the attempts it will not finish (it
    /// has stopped renewing them), so they are redelivered now rather than after their lease.
    pub async fn worker_release(
        &self, worker: &WorkerId, attempts: Vec<(InvocationId, u64)>,
    ) -> Result<Vec<Result<(), Rejected>>, crate::ServiceError> {
        let until = self.clock.now();
        self.renew_or_release(worker, attempts, until, true).await
    }

    pub(crate) fn wake_dispatcher(&self) {
        self.dispatch.wake.notify_one();
        self.placement_wake.notify_one();
    }

    pub(crate) fn track_attempt(&self, id: &InvocationId, epoch: u64) {
        self.dispatch.running.lock().insert(id.clone(), epoch);
    }

    /// Stops tracking an attempt this process ran; `false` if it was handed back at shutdown
    /// (then its result must be dropped, not reported).
    fn untrack_attempt(&self, id: &InvocationId, epoch: u64) -> bool {
        let handed_back = {
            let mut running = self.dispatch.running.lock();
            if running.get(id) == Some(&epoch) {
                running.remove(id);
            }
            self.dispatch.handed_back.lock().remove(&(id.clone(), epoch))
        };
        self.dispatch.attempt_ended.notify_waiters();
        !handed_back
    }

    /// Attempts running on this process right now.
    pub fn running_attempts(&self) -> usize {
        self.dispatch.running.lock().len()
    }

    /// Guarded completion of an attempt this process ran. A refusal means the attempt was
    /// fenced (or the invocation already ended, or it was handed back): its result is dropped.
    #[doc(hidden)] // Reports an attempt this process ran; called directly by lifecycle tests.
    pub async fn finish_attempt(
        &self, id: &InvocationId, epoch: u64, exec: Execution,
    ) -> Result<Lifecycle, StoreError> {
        // Counted before the attempt stops being tracked, so shutdown never sees neither.
        self.dispatch.completing.fetch_add(1, Ordering::SeqCst);
        let r = self.complete_attempt(id, epoch, exec).await;
        self.dispatch.completing.fetch_sub(1, Ordering::SeqCst);
        self.dispatch.attempt_ended.notify_waiters();
        r
    }

    async fn complete_attempt(
        &self, id: &InvocationId, epoch: u64, exec: Execution,
    ) -> Result<Lifecycle, StoreError> {
        let ours = self.untrack_attempt(id, epoch);
        self.count_attempt(&exec);
        if !ours {
            tracing::info!(%id, epoch, "the attempt was handed back at shutdown; dropping its result");
            return Err(StoreError::Rejected(Rejected::Fenced { current: epoch, given: epoch }));
        }
        let (outcome, result, error) = match exec.result {
            Ok(out) => (AttemptOutcome::Succeeded, Some(out), None),
            Err(e) => (AttemptOutcome::FunctionError, None, Some(e)),
        };
        let completion = Completion {
            id: id.clone(),
            worker: self.cfg.worker_id.clone(),
            epoch,
            outcome,
            result,
            error,
            log: exec.log,
            report: exec.report,
        };
        let r = self.store.complete(completion, self.clock.now()).await;
        self.dispatch.completed(id);
        match &r {
            Ok(_) => {}
            Err(StoreError::Rejected(Rejected::Fenced { current, given })) => {
                Metrics::inc(&self.metrics.fenced_completions);
                tracing::warn!(%id, given, current, "completion refused: the attempt was fenced; dropping its result");
            }
            Err(StoreError::Rejected(other)) => {
                tracing::info!(%id, reason = %other, "completion refused; dropping its result");
            }
            Err(e @ StoreError::Full(_)) => {
                self.dispatch.store_failed("a completion (the lease will expire and recover it)", e)
            }
            Err(e) => {
                tracing::error!(%id, error = %e, "completion failed; the lease will expire and recover it")
            }
        }
        r
    }

    async fn dispatcher(self: Arc<Self>) {
        loop {
            if self.is_shutting_down() {
                return;
            }
            let (asked, claimed) = self.claim_for_local().await;
            let claimed_all = asked > 0 && claimed.len() == asked;
            for c in claimed {
                tokio::spawn(self.clone().run_claimed(c));
            }
            if claimed_all {
                // More work is likely waiting; yield, then claim again.
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                _ = self.dispatch.wake.notified() => {}
                _ = tokio::time::sleep(self.cfg.poll_interval) => {}
            }
        }
    }

    /// One claim of the dispatcher: up to the local worker's free slots (at most a batch),
    /// each claimed attempt tracked for renewal. Answers how many were asked for (0 when no
    /// slot is free) and what was claimed; the caller runs each with [`Service::run_claimed`].
    #[doc(hidden)] // A single pass of a background loop, for lifecycle tests.
    pub async fn claim_for_local(&self) -> (usize, Vec<Claimed>) {
        let free = self.executor.free_slots().min(self.cfg.claim_batch);
        if free == 0 {
            return (0, Vec::new());
        }
        let now = self.clock.now();
        let lease_until = now + self.cfg.lease.as_millis() as i64;
        match self.store.claim_queued(&self.cfg.worker_id, free, lease_until, now).await {
            Ok(claimed) => {
                for c in &claimed {
                    self.track_attempt(&c.request.id, c.epoch);
                }
                (free, claimed)
            }
            Err(e) => {
                self.dispatch.store_failed("claiming queued invocations", &e);
                (free, Vec::new())
            }
        }
    }

    #[doc(hidden)] // A single pass of a background loop, for lifecycle tests.
    pub async fn run_claimed(self: Arc<Self>, claimed: Claimed) {
        let req = &claimed.request;
        // At its reserved concurrency the attempt is handed back to wait (no error counted).
        let limit = self.cached_function(&req.function).await.ok().and_then(|f| f.spec.reserved_concurrency);
        let permit = self.concurrency.try_acquire(&req.function, limit);
        let slot = match &permit {
            Some(_) => self.cluster_slot(&req.function, limit).await.unwrap_or(Err(())),
            None => Err(()),
        };
        let (Some(_permit), Ok(_slot)) = (permit, slot) else {
            self.count_throttle(&req.function);
            let completion = Completion::not_run(
                &claimed,
                &self.cfg.worker_id,
                AttemptOutcome::Throttled,
                crate::concurrency::throttled(&req.function),
            );
            if !self.untrack_attempt(&req.id, claimed.epoch) {
                return;
            }
            if let Err(e) = self.store.complete(completion, self.clock.now()).await {
                tracing::warn!(id = %req.id, error = %e, "handing back a throttled attempt failed");
            }
            return;
        };
        let exec = match self.deployment(&req.function, req.resolved).await {
            Ok(Some(d)) => {
                let call = gust_core::lambda::CallContext {
                    qualifier: &req.qualifier,
                    client_context: None,
                    stream: None,
                    http: None,
                    trace_id: req.trace_id.as_deref(),
                    received_at: Some(req.received_at),
                    is_async: req.mode == gust_core::Mode::Async,
                };
                self.executor.execute(&d, &req.id, req.payload.clone(), &call).await
            }
            Ok(None) => Execution {
                result: Err(gust_core::FunctionErrorBody::new(
                    gust_core::ErrorKind::InitError,
                    format!("{}:{} no longer exists", req.function, req.resolved.label()),
                )),
                log: String::new(),
                report: None,
            },
            Err(e) => {
                // Leave the attempt to its lease: it is retried once the store is reachable.
                tracing::error!(id = %req.id, error = %e, "cannot load the deployment");
                self.untrack_attempt(&req.id, claimed.epoch);
                return;
            }
        };
        let _ = self.finish_attempt(&req.id, claimed.epoch, exec).await;
        self.wake_dispatcher();
    }

    async fn renewer(self: Arc<Self>) {
        let every = self.cfg.lease / gust_core::protocol::RENEWALS_PER_LEASE;
        loop {
            tokio::time::sleep(every).await;
            self.renew_once().await;
        }
    }

    /// One renewal round: extends the lease of every attempt running here by a lease from the
    /// clock's now; an attempt whose renewal is refused as fenced (or not this worker's) is no
    /// longer tracked, so it is renewed no more (and counted).
    #[doc(hidden)] // A single pass of a background loop, for lifecycle tests.
    pub async fn renew_once(&self) {
        let _round = self.dispatch.renewing.lock().await;
        let attempts: Vec<(InvocationId, u64)> =
            self.dispatch.running.lock().iter().map(|(id, epoch)| (id.clone(), *epoch)).collect();
        if attempts.is_empty() {
            return;
        }
        let now = self.clock.now();
        let until = now + self.cfg.lease.as_millis() as i64;
        match self.store.renew_leases(&self.cfg.worker_id, attempts.clone(), until, now).await {
            Ok(results) => {
                for ((id, epoch), r) in attempts.into_iter().zip(results) {
                    if let Err(Rejected::Fenced { .. } | Rejected::NotOwner) = r {
                        Metrics::inc(&self.metrics.fenced_renewals);
                        tracing::warn!(%id, epoch, "lease renewal refused: the attempt was fenced");
                        let mut running = self.dispatch.running.lock();
                        if running.get(&id) == Some(&epoch) {
                            running.remove(&id);
                            self.dispatch.attempt_ended.notify_waiters();
                        }
                    }
                }
            }
            Err(e) => self.dispatch.store_failed("lease renewal", &e),
        }
    }

    /// One recovery sweep at the clock's now: expired leases, due retries, unclaimed
    /// placements and too-old events; wakes the dispatcher when work was queued again.
    #[doc(hidden)] // A single pass of a background loop, for lifecycle tests.
    pub async fn sweep_once(&self) -> Result<gust_store::Recovered, StoreError> {
        let r = self.store.recover(self.clock.now()).await?;
        Metrics::add(&self.metrics.recovered_leases, r.requeued + r.lost);
        Metrics::add(&self.metrics.expired_events, r.expired);
        if r.requeued + r.retries_due + r.unplaced > 0 {
            self.wake_dispatcher();
        }
        Ok(r)
    }

    async fn sweeper(self: Arc<Self>) {
        let mut sweeps = 0u32;
        loop {
            tokio::time::sleep(self.cfg.sweep_interval).await;
            if let Err(e) = self.sweep_once().await {
                self.dispatch.store_failed("recovery sweep", &e);
            }
            sweeps += 1;
            if sweeps.is_multiple_of(SWEEPS_PER_REAP) {
                let reaped = self.executor.reap_idle();
                if reaped > 0 {
                    tracing::debug!(reaped, "reaped idle environments");
                }
            }
        }
    }

    /// Writes keyless sync records in batches: one store call (one commit) per batch.
    async fn write_behind_task(self: Arc<Self>, mut rx: mpsc::Receiver<InvocationRecord>) {
        let mut batch = Vec::with_capacity(WRITE_BEHIND_BATCH);
        while let Some(first) = rx.recv().await {
            batch.push(first);
            let linger = tokio::time::sleep(WRITE_BEHIND_LINGER);
            tokio::pin!(linger);
            while batch.len() < WRITE_BEHIND_BATCH {
                tokio::select! {
                    next = rx.recv() => match next {
                        Some(r) => batch.push(r),
                        None => break,
                    },
                    _ = &mut linger => break,
                    // A reader is waiting: take what is queued already and write it now.
                    _ = self.dispatch.behind_flush.notified() => {
                        while batch.len() < WRITE_BEHIND_BATCH {
                            match rx.try_recv() {
                                Ok(r) => batch.push(r),
                                Err(_) => break,
                            }
                        }
                        break;
                    }
                }
            }
            let n = batch.len();
            let bytes: u64 = batch.iter().map(record_bytes).sum();
            if !self.wait_for_room().await {
                tracing::error!(
                    records = n,
                    "shutdown: the disk is still full; these sync invocations' records are lost"
                );
                batch.clear();
                self.dispatch.behind_lost.fetch_add(n as u64, Ordering::Relaxed);
            } else if let Err(e) = self.store.record_finished(std::mem::take(&mut batch)).await {
                self.dispatch.store_failed("recording sync invocations (their records are lost)", &e);
                self.dispatch.behind_lost.fetch_add(n as u64, Ordering::Relaxed);
            }
            self.dispatch.behind_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.dispatch.settle(n);
        }
    }

    /// Waits while the store has no room for new records (a full disk), so the batch in hand
    /// is kept, not lost; meanwhile more records queue up to the queue's bounds and are dropped
    /// past them. `false` if shutdown began and the disk stayed full: the batch is given up.
    /// A disk that fills during the write itself still fails the batch (counted as lost).
    async fn wait_for_room(&self) -> bool {
        let mut wait = WRITE_BEHIND_FULL_RETRY;
        let mut tries_at_shutdown = 0;
        while let Err(e) = self.store.check_space() {
            self.dispatch.behind_stalled.store(true, Ordering::Relaxed);
            self.dispatch.store_failed("recording sync invocations", &e);
            if self.is_shutting_down() {
                tries_at_shutdown += 1;
                if tries_at_shutdown > WRITE_BEHIND_TRIES_AT_SHUTDOWN {
                    self.dispatch.behind_stalled.store(false, Ordering::Relaxed);
                    return false;
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(WRITE_BEHIND_FULL_RETRY_MAX);
        }
        self.dispatch.behind_stalled.store(false, Ordering::Relaxed);
        true
    }

    async fn snapshot_poller(self: Arc<Self>) {
        loop {
            if let Err(e) = self.refresh_snapshot().await {
                tracing::warn!(error = %e, "snapshot poll failed");
            }
            tokio::time::sleep(self.cfg.snapshot_poll_interval).await;
        }
    }
}

/// The bytes a record holds in memory that grow with use (for the write-behind queue's bound).
fn record_bytes(r: &InvocationRecord) -> u64 {
    let error = r
        .error
        .as_ref()
        .map_or(0, |e| e.error_message.len() + e.runtime_error.as_ref().map_or(0, String::len));
    (r.request.payload.len() + r.result.as_ref().map_or(0, |b| b.len()) + r.log.len() + error) as u64
}
