//! gust's service layer: the one place the platform's business rules live. Both HTTP APIs
//! (native `/v1` and, later, the AWS-compatible one) are thin translations onto [`Service`].
//!
//! - control plane: functions, code, versions, aliases (CAS on revisions, validated input);
//! - admission: qualifier resolution, weighted routing, idempotency, durable async ingest;
//! - execution: the hot path of a sync invocation, and the dispatcher that claims queued
//!   work for the local worker, renews leases, completes with the attempt epoch, and sweeps
//!   expired leases, due retries and too-old events.
//!
//! Architecture invariant: this crate talks to persistence only through `gust_store::Store`
//! and to execution only through [`Executor`]; it knows no SQL, no HTTP and no wasmtime.

mod cache;
mod clock;
mod concurrency;
mod control;
mod direct;
mod dispatch;
pub use dispatch::{Background, Drained};
mod error;
pub mod gc;
mod ingest;
mod invoke;
pub mod keys;
mod mappings;
mod metrics;
mod peers;
pub use peers::{Handover, Peers};
mod queues;
pub mod retention;
mod schedules;
pub mod stats;
mod urls;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use gust_core::{Deployment, FunctionErrorBody, InvocationId, Runtime, WorkerId};
use gust_store::Store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use control::{CodeUploaded, Deployed, FunctionView};
pub use error::ServiceError;
pub use invoke::{HttpInvoke, InvokeInput, Invoked, SyncOutcome};
pub use keys::{ApiKeys, IssuedKey};
pub use metrics::Metrics;
pub use retention::{QueueCaps, Retention};
pub use schedules::{FiringView, ScheduleView, DEFAULT_MAX_SCHEDULES, DEFAULT_MAX_SCHEDULE_GROUPS};
pub use urls::UrlPatch;
pub use workers::{
    Assignment, HeartbeatReply, IssuedCredential, DEFAULT_ENROLLED_CREDENTIAL_TTL, HEARTBEAT_INTERVAL,
    LIVENESS_BOUND, WORKER_PROTOCOL,
};

/// How one execution ended, as the service records it.
#[derive(Debug, Clone)]
pub struct Execution {
    /// The function's result, or its error.
    pub result: Result<Bytes, FunctionErrorBody>,
    pub log: String,
    /// What the attempt measured (Lambda's REPORT figures), where it ran at all.
    pub report: Option<gust_core::Report>,
}

/// Runs invocations: the local worker in the embedded shape.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// Runs one invocation; waits for a free slot. Never fails: problems are outcomes.
    async fn execute(
        &self, deployment: &Deployment, id: &InvocationId, payload: Bytes,
        call: &gust_core::lambda::CallContext<'_>,
    ) -> Execution;
    /// Whether `deployment` serves an HTTP request as it came (a wasi:http component whose code
    /// is ready here), so that a function URL need not make it an event.
    fn serves_http(&self, _deployment: &Deployment) -> bool {
        false
    }
    /// Slots free right now.
    fn free_slots(&self) -> usize;
    /// Appends the per-function figures of the attempts it ran (Prometheus text format).
    fn write_metrics(&self, _out: &mut String) {}
    /// Drops a deleted function's figures.
    fn forget_function(&self, _function: &str) {}
    /// Validates and prepares code at upload, so that invalid code is refused before it is
    /// stored and the first invocation does not compile: `InvalidCode` for code that cannot
    /// run, `InsufficientStorage` when the disk that holds prepared code is full.
    async fn prepare_code(&self, runtime: Runtime, sha256: &str, code: Bytes) -> Result<(), ServiceError>;
    /// Reaps idle environments; returns how many.
    fn reap_idle(&self) -> usize;
    /// Warm environments right now.
    fn warm_environments(&self) -> usize;
    /// Whether this executor can run functions of `runtime`'s family (start-up detection).
    fn runs(&self, runtime: Runtime) -> bool;
    /// Drops cached code (task roots, compiled modules) whose sha256 is not in `keep`, that
    /// nothing uses and that was not used or prepared within `grace` ([`gc`]).
    async fn collect_cache(
        &self, keep: std::collections::HashSet<String>, grace: Duration,
    ) -> gc::CacheCollected;
}

/// Tunables of the service, each with a documented default.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The local worker's id (stable name plus a boot id).
    pub worker_id: WorkerId,
    /// Lease granted per attempt and renewed while it runs.
    pub lease: Duration,
    /// How often expired leases, due retries and old events are swept.
    pub sweep_interval: Duration,
    /// How often the dispatcher looks for queued work when nothing woke it.
    pub poll_interval: Duration,
    /// How often the control-plane cache checks the store's snapshot version (other servers
    /// may write); a server's own writes invalidate the cache at once.
    pub snapshot_poll_interval: Duration,
    /// Most queued invocations claimed in one store call.
    pub claim_batch: usize,
    /// Whether this server runs invocations itself (the embedded shape's local worker).
    /// Without it, all work, sync included, goes to remote workers.
    pub local_worker: bool,
    /// How long an enrolled worker's credential outlives its last heartbeat
    /// ([`workers::DEFAULT_ENROLLED_CREDENTIAL_TTL`]).
    pub enrolled_credential_ttl: Duration,
    /// How long and how much of ended invocations is kept.
    pub retention: Retention,
    /// Most async invocations waiting to run, per function and in total.
    pub queue_caps: QueueCaps,
    /// Most schedules in the store (all groups), and most schedule groups.
    pub max_schedules: u64,
    pub max_schedule_groups: u64,
    /// Whether the traces this server starts are marked sampled (it exports traces: OTLP).
    pub sample_new_traces: bool,
    /// Where peer servers reach this one to hand it invocations for its workers (stamped on
    /// their heartbeats); `None`: peers reach its workers through the store.
    pub advertise: Option<String>,
}

impl ServiceConfig {
    pub fn new(worker_id: WorkerId) -> Self {
        ServiceConfig {
            worker_id,
            lease: Duration::from_millis(gust_core::limits::DEFAULT_LEASE_MS as u64),
            sweep_interval: Duration::from_millis(250),
            poll_interval: Duration::from_millis(200),
            snapshot_poll_interval: Duration::from_millis(500),
            claim_batch: 64,
            local_worker: true,
            enrolled_credential_ttl: workers::DEFAULT_ENROLLED_CREDENTIAL_TTL,
            retention: Retention::default(),
            queue_caps: QueueCaps::default(),
            max_schedules: DEFAULT_MAX_SCHEDULES,
            max_schedule_groups: DEFAULT_MAX_SCHEDULE_GROUPS,
            sample_new_traces: false,
            advertise: None,
        }
    }
}

/// The platform's service layer. Cheap to share (`Arc`).
pub struct Service {
    store: Arc<dyn Store>,
    executor: Arc<dyn Executor>,
    clock: Arc<dyn Clock>,
    cfg: ServiceConfig,
    cache: cache::ControlCache,
    dispatch: dispatch::DispatchState,
    ingest: ingest::IngestState,
    metrics: Metrics,
    concurrency: concurrency::Limiter,
    /// Wakes the placer (new queued work, a worker's heartbeat).
    placement_wake: tokio::sync::Notify,
    /// Receives waiting for messages, by queue, and how many may wait at once.
    queue_waits: queues::Waits,
    long_polls: tokio::sync::Semaphore,
    /// Wakes remote workers' open polls: each worker's on a placement for it, all at shutdown.
    polls: workers::Polls,
    /// Keyless sync invocations handed to remote workers attached here, skipping the store.
    direct: direct::Direct,
    /// The live workers sync invocations are placed among (read at most 4 times a second).
    live_workers: workers::LiveWorkers,
    /// Concurrency slots held for async attempts on this server's remote workers.
    remote_slots: concurrency::RemoteSlots,
    /// Worker credentials checked recently.
    credentials: workers::CredentialCache,
    /// Throttled calls per function and minute (the console's charts).
    throttles: stats::Throttles,
    /// Where this server's own spans go (OTLP), once set.
    span_sink: std::sync::OnceLock<Arc<dyn gust_core::trace::SpanSink>>,
    /// Async work waiting, for the queue caps.
    backlog: retention::Backlog,
    /// Where keyless sync invocations for workers attached to other servers go, once set.
    peers: std::sync::OnceLock<Arc<dyn peers::Peers>>,
}

impl Service {
    pub fn new(
        store: Arc<dyn Store>, executor: Arc<dyn Executor>, clock: Arc<dyn Clock>, cfg: ServiceConfig,
    ) -> Arc<Self> {
        Arc::new(Service {
            store,
            executor,
            clock,
            cfg,
            cache: cache::ControlCache::default(),
            dispatch: dispatch::DispatchState::default(),
            ingest: ingest::IngestState::default(),
            metrics: Metrics::default(),
            concurrency: concurrency::Limiter::default(),
            placement_wake: tokio::sync::Notify::new(),
            queue_waits: queues::Waits::default(),
            long_polls: tokio::sync::Semaphore::new(queues::MAX_LONG_POLLS),
            polls: workers::Polls::default(),
            direct: direct::Direct::default(),
            live_workers: workers::LiveWorkers::default(),
            remote_slots: concurrency::RemoteSlots::default(),
            credentials: workers::CredentialCache::default(),
            throttles: stats::Throttles::default(),
            span_sink: std::sync::OnceLock::new(),
            backlog: retention::Backlog::default(),
            peers: std::sync::OnceLock::new(),
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The service's clock (injected; the system clock in production).
    pub fn now(&self) -> gust_core::Millis {
        self.clock.now()
    }

    pub fn worker_id(&self) -> &WorkerId {
        &self.cfg.worker_id
    }

    pub fn executor(&self) -> &Arc<dyn Executor> {
        &self.executor
    }
}
