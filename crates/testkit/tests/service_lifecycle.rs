//! The lifecycle the service drives, unit-tested against a temporary SQLite store with a
//! [`ManualClock`] and a [`FakeExecutor`]: no server, no runtime, no sleeping. The background
//! loops are not started; each test calls their single passes ([`Service::claim_for_local`] +
//! [`Service::run_claimed`] for the dispatcher, [`Service::sweep_once`] for the sweeper) and
//! moves the clock past leases, backoffs and event ages itself.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use gust_core::{
    Deployment, ErrorKind, FunctionErrorBody, FunctionSpec, InvocationId, Mode, Runtime, State, WorkerId,
};
use gust_store::{Completion, StoreError};
use gust_testkit::TempSqlite;
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use gust_service::{
    Clock, Execution, Executor, InvokeInput, Invoked, ManualClock, QueueCaps, Service, ServiceConfig,
    ServiceError, SyncOutcome,
};

/// An executor that answers scripted results in order (a success once the script is empty),
/// counts its calls, and can hold every call until the test releases it.
struct FakeExecutor {
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
    fn answer(&self, result: Result<Bytes, FunctionErrorBody>) {
        self.script.lock().push_back(result);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// From now on each call waits for [`FakeExecutor::release`].
    fn hold(&self) {
        self.holding.store(true, Ordering::SeqCst);
    }

    /// Waits until a call has started.
    async fn entered(&self) {
        self.entered.acquire().await.expect("open").forget();
    }

    fn release(&self, calls: usize) {
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
        Execution { result, log: String::new() }
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

/// Where the manual clock starts (any fixed time: tests only move it forward).
const T0: gust_core::Millis = 1_700_000_000_000;
const LEASE: Duration = Duration::from_secs(10);

struct Harness {
    service: Arc<Service>,
    executor: Arc<FakeExecutor>,
    clock: ManualClock,
    _store: TempSqlite,
}

impl Harness {
    fn new() -> Self {
        Self::with(|_| {})
    }

    fn with(configure: impl FnOnce(&mut ServiceConfig)) -> Self {
        let store = TempSqlite::new();
        let executor = Arc::new(FakeExecutor::default());
        let clock = ManualClock::at(T0);
        let mut cfg = ServiceConfig::new(WorkerId("test-worker".into()));
        cfg.lease = LEASE;
        configure(&mut cfg);
        let service = Service::new(store.store.clone(), executor.clone(), Arc::new(clock.clone()), cfg);
        Harness { service, executor, clock, _store: store }
    }

    async fn function(&self, name: &str, configure: impl FnOnce(&mut FunctionSpec)) {
        let mut spec = FunctionSpec::default();
        configure(&mut spec);
        self.service.create_function(name, spec, Bytes::from_static(b"code")).await.expect("create");
    }

    async fn invoke(&self, function: &str, mode: Mode, key: Option<&str>) -> Result<Invoked, ServiceError> {
        self.service
            .invoke(InvokeInput {
                function: function.into(),
                qualifier: None,
                payload: Bytes::from_static(b"{}"),
                mode,
                idempotency_key: key.map(str::to_string),
                client_context: None,
            })
            .await
    }

    async fn enqueue(&self, function: &str) -> InvocationId {
        match self.invoke(function, Mode::Async, None).await.expect("enqueue") {
            Invoked::Accepted { id, existing: false } => id,
            other => panic!("expected a new async invocation, got {other:?}"),
        }
    }

    /// One dispatcher pass, each claimed attempt run to its completion.
    async fn dispatch(&self) -> usize {
        let (_, claimed) = self.service.claim_for_local().await;
        let n = claimed.len();
        for c in claimed {
            self.service.clone().run_claimed(c).await;
        }
        n
    }

    async fn state(&self, id: &InvocationId) -> gust_core::InvocationRecord {
        self.service.store().get_invocation(id).await.expect("read").expect("exists")
    }
}

fn function_error() -> Result<Bytes, FunctionErrorBody> {
    Err(FunctionErrorBody::new(ErrorKind::FunctionError, "boom"))
}

#[tokio::test]
async fn a_failing_async_invocation_is_retried_with_backoff_then_fails() {
    let h = Harness::new();
    h.function("f", |s| {
        s.retry.max_retries = 2;
        s.retry.base_delay_ms = 1_000;
    })
    .await;
    for _ in 0..3 {
        h.executor.answer(function_error());
    }
    let id = h.enqueue("f").await;

    // Attempt 1 fails: it waits for its backoff (1 s, then 2 s), not a moment less.
    for (retry, backoff) in [(1, 1_000), (2, 2_000)] {
        assert_eq!(h.dispatch().await, 1);
        let rec = h.state(&id).await;
        assert_eq!(rec.lifecycle.function_errors, retry);
        let State::RetryWait { not_before } = rec.lifecycle.state else {
            panic!("expected RETRY_WAIT after attempt {retry}, got {:?}", rec.lifecycle.state)
        };
        assert_eq!(not_before, h.clock.now() + backoff);
        h.clock.set(not_before - 1);
        h.service.sweep_once().await.expect("sweep");
        assert_eq!(h.dispatch().await, 0, "retry {retry} ran before its backoff elapsed");
        h.clock.set(not_before);
        assert_eq!(h.service.sweep_once().await.expect("sweep").retries_due, 1);
    }
    assert_eq!(h.dispatch().await, 1);
    let rec = h.state(&id).await;
    assert_eq!(rec.lifecycle.state, State::Failed);
    assert_eq!(rec.lifecycle.function_errors, 3);
    assert_eq!(rec.error.expect("an error").error_message, "boom");
    assert_eq!(h.executor.calls(), 3);
    // Nothing is left to run, however late it gets.
    h.clock.advance(Duration::from_secs(3600));
    h.service.sweep_once().await.expect("sweep");
    assert_eq!(h.dispatch().await, 0);
}

#[tokio::test]
async fn an_expired_lease_requeues_async_work() {
    let h = Harness::new();
    h.function("f", |_| {}).await;
    let id = h.enqueue("f").await;
    let (_, claimed) = h.service.claim_for_local().await;
    assert_eq!(claimed.len(), 1);
    // The worker goes silent: no renewal, no completion.
    h.clock.advance(LEASE - Duration::from_millis(1));
    assert_eq!(h.service.sweep_once().await.expect("sweep").requeued, 0);
    assert!(matches!(h.state(&id).await.lifecycle.state, State::Running { .. }));
    h.clock.advance(Duration::from_millis(1));
    assert_eq!(h.service.sweep_once().await.expect("sweep").requeued, 1);
    let rec = h.state(&id).await;
    assert_eq!(rec.lifecycle.state, State::Queued);
    assert_eq!(rec.lifecycle.lost_attempts, 1);
    // It runs again, as a new epoch, and succeeds.
    assert_eq!(h.dispatch().await, 1);
    let rec = h.state(&id).await;
    assert_eq!(rec.lifecycle.state, State::Succeeded);
    assert_eq!(rec.lifecycle.attempt_epoch, 2);
}

#[tokio::test]
async fn an_expired_lease_fails_sync_work_as_worker_lost() {
    let h = Harness::new();
    h.function("f", |_| {}).await;
    h.executor.hold();
    // A keyed sync invocation is recorded RUNNING under a lease while it executes.
    let service = h.service.clone();
    let call = tokio::spawn(async move {
        service
            .invoke(InvokeInput {
                function: "f".into(),
                qualifier: None,
                payload: Bytes::from_static(b"{}"),
                mode: Mode::Sync,
                idempotency_key: Some("k1".into()),
                client_context: None,
            })
            .await
    });
    h.executor.entered().await;
    h.clock.advance(LEASE);
    assert_eq!(h.service.sweep_once().await.expect("sweep").lost, 1);
    // The late result is fenced; the caller is told the one recorded outcome.
    h.executor.release(1);
    let Invoked::Completed { id, outcome: SyncOutcome::Failed(error), .. } =
        call.await.expect("join").expect("invoke")
    else {
        panic!("expected the sync invocation to fail")
    };
    assert_eq!(error.error_type, ErrorKind::WorkerLost);
    let rec = h.state(&id).await;
    assert_eq!(rec.lifecycle.state, State::Failed);
    assert_eq!(rec.result, None);
    assert_eq!(h.executor.calls(), 1, "a sync invocation is never re-run");
}

#[tokio::test]
async fn a_completion_from_a_fenced_epoch_changes_nothing() {
    let h = Harness::new();
    h.function("f", |_| {}).await;
    let id = h.enqueue("f").await;
    let (_, first) = h.service.claim_for_local().await;
    assert_eq!(first[0].epoch, 1);
    h.clock.advance(LEASE);
    h.service.sweep_once().await.expect("sweep");
    let (_, second) = h.service.claim_for_local().await;
    assert_eq!(second[0].epoch, 2);
    let before = h.state(&id).await;

    let stale = Execution { result: Ok(Bytes::from_static(b"\"stale\"")), log: "stale".into() };
    let refused = h.service.finish_attempt(&id, 1, stale).await;
    assert!(
        matches!(refused, Err(StoreError::Rejected(gust_core::Rejected::Fenced { current: 2, given: 1 }))),
        "{refused:?}"
    );
    assert_eq!(h.state(&id).await, before, "a fenced completion changed the record");
    assert_eq!(h.service.metrics().fenced_completions.load(Ordering::Relaxed), 1);
    // So does a raw completion from the stale epoch, straight to the store.
    let raw = Completion {
        id: id.clone(),
        worker: h.service.worker_id().clone(),
        epoch: 1,
        outcome: gust_core::AttemptOutcome::Succeeded,
        result: Some(Bytes::from_static(b"\"stale\"")),
        error: None,
        log: String::new(),
    };
    assert!(h.service.store().complete(raw, h.clock.now()).await.is_err());
    assert_eq!(h.state(&id).await, before);

    // The current epoch completes.
    h.service.clone().run_claimed(second.into_iter().next().expect("claimed")).await;
    let rec = h.state(&id).await;
    assert_eq!(rec.lifecycle.state, State::Succeeded);
    assert_eq!(rec.result.as_deref(), Some(&b"\"ok\""[..]));
}

#[tokio::test]
async fn reserved_concurrency_throttles_sync_invocations() {
    let h = Harness::new();
    h.function("f", |s| s.reserved_concurrency = Some(1)).await;
    h.executor.hold();
    let service = h.service.clone();
    let first = tokio::spawn(async move {
        service
            .invoke(InvokeInput {
                function: "f".into(),
                qualifier: None,
                payload: Bytes::from_static(b"{}"),
                mode: Mode::Sync,
                idempotency_key: None,
                client_context: None,
            })
            .await
    });
    h.executor.entered().await;
    // Bounded so that a broken limit fails here instead of hanging on the held executor.
    let throttled = tokio::time::timeout(Duration::from_secs(5), h.invoke("f", Mode::Sync, None))
        .await
        .expect("a throttled invocation must answer at once, not run");
    assert!(matches!(throttled, Err(ServiceError::Throttled { limit: 1, .. })), "{throttled:?}");
    assert_eq!(h.executor.calls(), 1);
    h.executor.release(2);
    let done = first.await.expect("join").expect("invoke");
    assert!(matches!(done, Invoked::Completed { outcome: SyncOutcome::Succeeded(_), .. }), "{done:?}");
    // The slot is free again.
    let again = h.invoke("f", Mode::Sync, None).await.expect("invoke");
    assert!(matches!(again, Invoked::Completed { outcome: SyncOutcome::Succeeded(_), .. }), "{again:?}");
}

#[tokio::test]
async fn an_event_older_than_its_maximum_age_expires_on_sweep() {
    let h = Harness::new();
    h.function("f", |s| s.retry.max_event_age_s = 60).await;
    let id = h.enqueue("f").await;
    h.clock.advance(Duration::from_secs(59));
    assert_eq!(h.service.sweep_once().await.expect("sweep").expired, 0);
    assert_eq!(h.state(&id).await.lifecycle.state, State::Queued);
    h.clock.advance(Duration::from_secs(2));
    assert_eq!(h.service.sweep_once().await.expect("sweep").expired, 1);
    let rec = h.state(&id).await;
    assert_eq!(rec.lifecycle.state, State::Expired);
    assert_eq!(rec.error.expect("an error").error_type, ErrorKind::Expired);
    assert_eq!(h.dispatch().await, 0);
    assert_eq!(h.executor.calls(), 0);
}

#[tokio::test]
async fn the_queue_caps_refuse_past_the_cap() {
    let h = Harness::with(|cfg| cfg.queue_caps = QueueCaps { per_function: 2, total: 3 });
    h.function("f", |_| {}).await;
    h.function("g", |_| {}).await;
    h.enqueue("f").await;
    h.enqueue("f").await;
    let refused = h.invoke("f", Mode::Async, None).await;
    assert!(
        matches!(&refused, Err(ServiceError::QueueFull { waiting: 2, limit: 2, scope: "the function", .. })),
        "{refused:?}"
    );
    h.enqueue("g").await;
    let refused = h.invoke("g", Mode::Async, None).await;
    assert!(
        matches!(&refused, Err(ServiceError::QueueFull { waiting: 3, limit: 3, scope: "all functions", .. })),
        "{refused:?}"
    );
    // Sync invocations do not queue, so the caps do not apply to them.
    assert!(h.invoke("g", Mode::Sync, None).await.is_ok());
    assert_eq!(h.service.metrics().queue_full.load(Ordering::Relaxed), 2);
}
