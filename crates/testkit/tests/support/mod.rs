//! The harness of the service's lifecycle tests: a [`Service`] over a temporary SQLite store,
//! with a [`ManualClock`] and a [`FakeExecutor`]; no server, no runtime, no sleeping. The
//! background loops are not started: a test calls their single passes and moves the clock
//! itself.
#![allow(dead_code)] // Each test file uses part of it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use gust_core::protocol::{CompleteReply, Verdict};
use gust_core::{
    AttemptOutcome, Deployment, ErrorKind, FunctionErrorBody, FunctionSpec, InvocationId, Mode, Runtime,
    StateName, WorkerId, WorkerState,
};
use gust_service::{
    Assignment, Execution, Executor, InvokeInput, Invoked, ManualClock, Service, ServiceConfig, ServiceError,
};
use gust_store::{Claimed, Completion};
use gust_testkit::TempSqlite;
use parking_lot::Mutex;
use tokio::sync::Semaphore;

/// An executor that answers scripted results in order (a success once the script is empty),
/// counts its calls, and can hold every call until the test releases it.
pub struct FakeExecutor {
    script: Mutex<VecDeque<Result<Bytes, FunctionErrorBody>>>,
    calls: AtomicUsize,
    holding: AtomicBool,
    /// One permit per call that has started.
    entered: Semaphore,
    /// Calls held return once they take a permit.
    released: Semaphore,
}

impl Default for FakeExecutor {
    fn default() -> Self {
        FakeExecutor {
            script: Mutex::default(),
            calls: AtomicUsize::new(0),
            holding: AtomicBool::new(false),
            entered: Semaphore::new(0),
            released: Semaphore::new(0),
        }
    }
}

impl FakeExecutor {
    pub fn answer(&self, result: Result<Bytes, FunctionErrorBody>) {
        self.script.lock().push_back(result);
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// From now on each call waits for [`FakeExecutor::release`].
    pub fn hold(&self) {
        self.holding.store(true, Ordering::SeqCst);
    }

    /// Waits until a call has started.
    pub async fn entered(&self) {
        self.entered.acquire().await.expect("open").forget();
    }

    pub fn release(&self, calls: usize) {
        self.released.add_permits(calls);
    }
}

#[async_trait]
impl Executor for FakeExecutor {
    async fn execute(
        &self, _deployment: &Deployment, _id: &InvocationId, _payload: Bytes,
        _call: &gust_core::lambda::CallContext<'_>,
    ) -> Execution {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.entered.add_permits(1);
        if self.holding.load(Ordering::SeqCst) {
            self.released.acquire().await.expect("open").forget();
        }
        let result = self.script.lock().pop_front().unwrap_or_else(|| Ok(Bytes::from_static(b"\"ok\"")));
        Execution { result, log: String::new(), report: None }
    }

    fn free_slots(&self) -> usize {
        8
    }

    async fn prepare_code(&self, _runtime: Runtime, _sha256: &str, _code: Bytes) -> Result<(), ServiceError> {
        Ok(())
    }

    fn reap_idle(&self) -> usize {
        0
    }

    fn warm_environments(&self) -> usize {
        0
    }

    fn runs(&self, _runtime: Runtime) -> bool {
        true
    }

    async fn collect_cache(
        &self, _keep: std::collections::HashSet<String>, _grace: Duration,
    ) -> gust_service::gc::CacheCollected {
        gust_service::gc::CacheCollected::default()
    }
}

/// An invocation of `function` with an empty event, as a client makes it.
async fn invoke(
    service: &Arc<Service>, function: &str, mode: Mode, key: Option<&str>,
) -> Result<Invoked, ServiceError> {
    service
        .invoke(InvokeInput {
            function: function.into(),
            qualifier: None,
            payload: Bytes::from_static(b"{}"),
            mode,
            idempotency_key: key.map(str::to_string),
            client_context: None,
            stream: None,
            http: None,
            trace: None,
        })
        .await
}

/// Where the manual clock starts (any fixed time: tests only move it forward).
pub const T0: gust_core::Millis = 1_700_000_000_000;
pub const LEASE: Duration = Duration::from_secs(10);

pub struct Harness {
    pub service: Arc<Service>,
    pub executor: Arc<FakeExecutor>,
    pub clock: ManualClock,
    _store: TempSqlite,
}

impl Harness {
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    pub fn with(configure: impl FnOnce(&mut ServiceConfig)) -> Self {
        let store = TempSqlite::new();
        let executor = Arc::new(FakeExecutor::default());
        let clock = ManualClock::at(T0);
        let mut cfg = ServiceConfig::new(WorkerId("test-worker".into()));
        cfg.lease = LEASE;
        configure(&mut cfg);
        let service = Service::new(store.store.clone(), executor.clone(), Arc::new(clock.clone()), cfg);
        Harness { service, executor, clock, _store: store }
    }

    pub async fn function(&self, name: &str, configure: impl FnOnce(&mut FunctionSpec)) {
        let mut spec = FunctionSpec::default();
        configure(&mut spec);
        self.service.create_function(name, spec, Bytes::from_static(b"code")).await.expect("create");
    }

    pub async fn invoke(
        &self, function: &str, mode: Mode, key: Option<&str>,
    ) -> Result<Invoked, ServiceError> {
        invoke(&self.service, function, mode, key).await
    }

    /// [`Harness::invoke`] on a task of its own (a caller that waits while the test acts).
    pub fn spawn_invoke(
        &self, function: &str, mode: Mode, key: Option<&str>,
    ) -> tokio::task::JoinHandle<Result<Invoked, ServiceError>> {
        let (service, function, key) = (self.service.clone(), function.to_string(), key.map(str::to_string));
        tokio::spawn(async move { invoke(&service, &function, mode, key.as_deref()).await })
    }

    pub async fn enqueue(&self, function: &str) -> InvocationId {
        match self.invoke(function, Mode::Async, None).await.expect("enqueue") {
            Invoked::Accepted { id, existing: false } => id,
            other => panic!("expected a new async invocation, got {other:?}"),
        }
    }

    /// A function "f" and one async invocation of it, claimed by this server's dispatcher and
    /// not run yet: the invocation and its first attempt.
    pub async fn one_claimed(&self) -> (InvocationId, Claimed) {
        self.function("f", |_| {}).await;
        let id = self.enqueue("f").await;
        let (_, mut claimed) = self.service.claim_for_local().await;
        assert_eq!(claimed.len(), 1, "one invocation claimed");
        let attempt = claimed.remove(0);
        assert_eq!((&attempt.request.id, attempt.epoch), (&id, 1));
        (id, attempt)
    }

    /// One dispatcher pass, each claimed attempt run to its completion.
    pub async fn dispatch(&self) -> usize {
        let (_, claimed) = self.service.claim_for_local().await;
        let n = claimed.len();
        for c in claimed {
            self.service.clone().run_claimed(c).await;
        }
        n
    }

    pub async fn state(&self, id: &InvocationId) -> gust_core::InvocationRecord {
        self.service.store().get_invocation(id).await.expect("read").expect("exists")
    }
}

pub fn function_error() -> Result<Bytes, FunctionErrorBody> {
    Err(FunctionErrorBody::new(ErrorKind::FunctionError, "boom"))
}

// ---- a remote worker: the service calls its protocol handlers make ----

pub fn worker(id: &str) -> WorkerId {
    WorkerId(id.to_string())
}

/// The version the control plane is at (a worker must have applied it to get `$LATEST`).
pub async fn snapshot(h: &Harness) -> u64 {
    h.service.store().snapshot_version().await.expect("snapshot version")
}

/// A heartbeat of worker `id`: the runtimes it runs, its free capacity (0 while it shuts
/// down) and the snapshot it has applied; stamped with the harness's clock. Each has a newer
/// revision than the last, as a worker's do (the server ignores an older or equal one).
pub async fn heartbeat(h: &Harness, id: &str, runtimes: &[Runtime], capacity: u32, snapshot: u64) {
    static REVISION: AtomicU64 = AtomicU64::new(0);
    let state = WorkerState {
        id: worker(id),
        revision: REVISION.fetch_add(1, Ordering::Relaxed) + 1,
        runtimes: runtimes.to_vec(),
        capacity,
        running: 0,
        warm: Vec::new(),
        snapshot_version: snapshot,
        last_heartbeat: 0,
        server: None,
    };
    h.service.worker_heartbeat(state).await.expect("heartbeat");
}

/// What worker `id` gets from one poll that does not wait.
pub async fn poll(h: &Harness, id: &str) -> Vec<Assignment> {
    h.service.worker_poll(&worker(id), 8, Duration::ZERO).await.expect("poll")
}

/// Worker `by` reports attempt `epoch` of `id` as succeeded with `result`.
pub async fn complete(
    h: &Harness, by: &str, id: &InvocationId, epoch: u64, result: &'static [u8],
) -> Result<CompleteReply, ServiceError> {
    let completion = Completion {
        id: id.clone(),
        worker: worker(by),
        epoch,
        outcome: AttemptOutcome::Succeeded,
        result: Some(Bytes::from_static(result)),
        error: None,
        log: String::new(),
        report: None,
    };
    h.service.worker_complete(completion).await
}

pub fn accepted(state: StateName) -> CompleteReply {
    CompleteReply { state, verdict: Verdict::Accepted }
}
