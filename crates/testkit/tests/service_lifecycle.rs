//! The lifecycle the service drives, unit-tested against a temporary SQLite store with a
//! [`ManualClock`] and a [`FakeExecutor`]: no server, no runtime, no sleeping. The background
//! loops are not started; each test calls their single passes ([`Service::claim_for_local`] +
//! [`Service::run_claimed`] for the dispatcher, [`Service::sweep_once`] for the sweeper) and
//! moves the clock past leases, backoffs and event ages itself.
//!
//! [`ManualClock`]: gust_service::ManualClock
//! [`FakeExecutor`]: support::FakeExecutor
//! [`Service::claim_for_local`]: gust_service::Service::claim_for_local
//! [`Service::run_claimed`]: gust_service::Service::run_claimed
//! [`Service::sweep_once`]: gust_service::Service::sweep_once

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use gust_core::{ErrorKind, Mode, State};
use gust_service::{Clock, Execution, Invoked, QueueCaps, ServiceError, SyncOutcome};
use gust_store::{Completion, StoreError};
use support::{function_error, Harness, LEASE};

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
    let (id, _) = h.one_claimed().await;
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
    let call = h.spawn_invoke("f", Mode::Sync, Some("k1"));
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
    let (id, _) = h.one_claimed().await;
    h.clock.advance(LEASE);
    h.service.sweep_once().await.expect("sweep");
    let (_, second) = h.service.claim_for_local().await;
    assert_eq!(second[0].epoch, 2);
    let before = h.state(&id).await;

    let stale = Execution { result: Ok(Bytes::from_static(b"\"stale\"")), log: "stale".into(), report: None };
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
        report: None,
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
    let first = h.spawn_invoke("f", Mode::Sync, None);
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
