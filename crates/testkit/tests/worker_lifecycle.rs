//! The workers' side of the lifecycle, unit-tested like `service_lifecycle.rs` (a temporary
//! SQLite store, a manual clock, no server, no sleeping): placement on remote workers, what a
//! worker hands back when it shuts down, the verdicts of its completions, the lease renewer,
//! the embedded server's own shutdown, and how long an enrolled worker's credential lives.
//! The placer and the renewer are driven one pass at a time ([`Service::place_once`],
//! [`Service::renew_once`]); a remote worker is the service calls its protocol handlers make.
//!
//! [`Service::place_once`]: gust_service::Service::place_once
//! [`Service::renew_once`]: gust_service::Service::renew_once

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use gust_core::protocol::{CompleteReply, Verdict};
use gust_core::{InvocationId, Runtime, State, StateName};
use gust_service::{Clock, ServiceError, LIVENESS_BOUND};
use support::{accepted, complete, heartbeat, poll, snapshot, worker, Harness, LEASE};

/// A server whose work runs only on remote workers, with one wasm function, "f", and one
/// async invocation of it, queued; and the snapshot version a worker needs to run it.
async fn one_queued() -> (Harness, u64, InvocationId) {
    let h = Harness::with(|cfg| cfg.local_worker = false);
    h.function("f", |_| {}).await;
    let version = snapshot(&h).await;
    let id = h.enqueue("f").await;
    (h, version, id)
}

/// Worker `id` joins (wasm, one slot) and the queued invocation is placed on it and claimed:
/// the attempt's epoch.
async fn runs_on(h: &Harness, id: &str, version: u64) -> u64 {
    heartbeat(h, id, &[Runtime::Wasm], 1, version).await;
    assert_eq!(h.service.place_once().await.expect("place"), 1);
    let got = poll(h, id).await;
    assert_eq!(got.len(), 1, "{id} was given the invocation");
    got[0].claimed.epoch
}

#[tokio::test]
async fn work_is_placed_only_on_a_live_worker_that_can_run_it() {
    let (h, version, id) = one_queued().await;
    // None of these may get it: one silent past the liveness bound, one without the runtime,
    // one shutting down (no free slot), one that has not applied the version yet.
    heartbeat(&h, "silent", &[Runtime::Wasm], 4, version).await;
    h.clock.advance(LIVENESS_BOUND + Duration::from_millis(1));
    heartbeat(&h, "python", &[Runtime::Python { minor: 12 }], 4, version).await;
    heartbeat(&h, "draining", &[Runtime::Wasm], 0, version).await;
    heartbeat(&h, "behind", &[Runtime::Wasm], 4, version - 1).await;
    assert_eq!(h.service.place_once().await.expect("place"), 0);
    assert_eq!(
        h.state(&id).await.lifecycle.state,
        State::Queued,
        "it waits, queued, for a worker that can run it"
    );
    for w in ["silent", "python", "draining", "behind"] {
        assert!(poll(&h, w).await.is_empty(), "{w} got work it cannot run");
    }

    heartbeat(&h, "wasm", &[Runtime::Wasm], 1, version).await;
    assert_eq!(h.service.place_once().await.expect("place"), 1);
    let State::Placed { worker: placed_on, .. } = h.state(&id).await.lifecycle.state else {
        panic!("not placed: {:?}", h.state(&id).await.lifecycle.state)
    };
    assert_eq!(placed_on, worker("wasm"));
    assert!(poll(&h, "python").await.is_empty(), "a poll claims only what was placed on its worker");
    let got = poll(&h, "wasm").await;
    assert_eq!(got.len(), 1);
    assert_eq!((&got[0].claimed.request.id, got[0].claimed.epoch), (&id, 1));
    assert_eq!(got[0].deployment.spec.runtime, Runtime::Wasm);
}

#[tokio::test]
async fn work_a_worker_hands_back_at_shutdown_runs_again_elsewhere() {
    let (h, version, id) = one_queued().await;
    assert_eq!(runs_on(&h, "w1", version).await, 1);
    heartbeat(&h, "w2", &[Runtime::Wasm], 1, version).await;

    // w1 shuts down: it reports no free slot and hands back what it will not finish, long
    // before its lease would have expired.
    heartbeat(&h, "w1", &[Runtime::Wasm], 0, version).await;
    let released = h.service.worker_release(&worker("w1"), vec![(id.clone(), 1)]).await.expect("release");
    assert_eq!(released, [Ok(())]);
    assert_eq!(h.state(&id).await.lifecycle.state, State::Queued, "handed back, not lost");
    assert_eq!(h.service.place_once().await.expect("place"), 1);
    let again = poll(&h, "w2").await;
    assert_eq!(again.len(), 1, "placed on the worker that is not shutting down");
    assert_eq!(again[0].claimed.epoch, 2);

    // w1's attempt finished after all: its report is fenced and changes nothing.
    let late = complete(&h, "w1", &id, 1, b"\"late\"").await;
    assert!(matches!(late, Err(ServiceError::Fenced(_))), "{late:?}");
    assert_eq!(h.state(&id).await.lifecycle.attempt_epoch, 2);
    assert_eq!(
        complete(&h, "w2", &id, 2, b"\"w2\"").await.expect("complete"),
        accepted(StateName::Succeeded)
    );
    let rec = h.state(&id).await;
    assert_eq!(rec.result.as_deref(), Some(&b"\"w2\""[..]));
    assert_eq!(h.service.metrics().fenced_completions.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_repeated_completion_is_taken_again_as_already_completed() {
    let (h, version, id) = one_queued().await;
    let epoch = runs_on(&h, "w1", version).await;

    assert_eq!(
        complete(&h, "w1", &id, epoch, b"\"first\"").await.expect("complete"),
        accepted(StateName::Succeeded)
    );
    // The reply was lost and w1 sends its report again: taken, as a repeat, changing nothing.
    let repeat = complete(&h, "w1", &id, epoch, b"\"first\"").await.expect("a repeat is not refused");
    assert_eq!(repeat, CompleteReply { state: StateName::Succeeded, verdict: Verdict::AlreadyCompleted });
    assert_eq!(h.service.metrics().repeated_completions.load(Ordering::Relaxed), 1);
    assert_eq!(h.service.metrics().fenced_completions.load(Ordering::Relaxed), 0, "a repeat is not fenced");
    // The same epoch from any other worker was never its attempt.
    let forged = complete(&h, "w2", &id, epoch, b"\"forged\"").await;
    assert!(matches!(forged, Err(ServiceError::WorkerForbidden(_))), "{forged:?}");
    assert_eq!(h.state(&id).await.result.as_deref(), Some(&b"\"first\""[..]));
}

#[tokio::test]
async fn the_renewer_keeps_a_running_attempt_and_drops_a_fenced_one() {
    let h = Harness::new();
    let (id, _) = h.one_claimed().await;

    // Renewed half way, the attempt outlives its first lease.
    h.clock.advance(LEASE / 2);
    h.service.renew_once().await;
    h.clock.advance(LEASE / 2 + Duration::from_millis(1));
    assert_eq!(h.service.sweep_once().await.expect("sweep").requeued, 0, "a renewed lease was recovered");

    // This process stalls past the lease: the attempt is recovered, and its renewal is fenced.
    h.clock.advance(LEASE);
    assert_eq!(h.service.sweep_once().await.expect("sweep").requeued, 1);
    h.service.renew_once().await;
    assert_eq!(h.service.running_attempts(), 0, "a fenced attempt is no longer tracked");
    assert_eq!(h.service.metrics().fenced_renewals.load(Ordering::Relaxed), 1);
    // It is never renewed again: the next rounds renew only the new attempt.
    let (_, claimed) = h.service.claim_for_local().await;
    assert_eq!(claimed[0].epoch, 2);
    h.service.renew_once().await;
    h.service.renew_once().await;
    let counters = h.service.store().counters().await.expect("counters");
    assert_eq!(counters.fenced_renewals, 1, "the fenced attempt was renewed again");
    let State::Running { lease_expires_at, .. } = h.state(&id).await.lifecycle.state else {
        panic!("the new attempt is not running")
    };
    assert_eq!(lease_expires_at, h.clock.now() + LEASE.as_millis() as i64, "the new attempt is renewed");
}

#[tokio::test]
async fn what_runs_at_the_end_of_a_shutdown_is_handed_back_and_its_result_dropped() {
    let h = Harness::new();
    h.executor.hold();
    let (id, attempt) = h.one_claimed().await;
    let run = tokio::spawn(h.service.clone().run_claimed(attempt));
    h.executor.entered().await;

    h.service.begin_shutdown();
    let drained = h.service.finish_shutdown(None).await;
    assert_eq!((drained.handed_back, drained.not_handed_back), (1, 0));
    assert_eq!(
        h.state(&id).await.lifecycle.state,
        State::Queued,
        "queued again at once, not after the lease"
    );
    // The attempt ends after all: its result is dropped here, not reported (and fenced).
    h.executor.release(1);
    run.await.expect("join");
    let rec = h.state(&id).await;
    assert_eq!((rec.lifecycle.state, rec.result), (State::Queued, None));
    assert_eq!(h.service.metrics().fenced_completions.load(Ordering::Relaxed), 0);
    // Any server runs it again, as the next epoch.
    let now = h.clock.now();
    let lease_until = now + LEASE.as_millis() as i64;
    let again = h.service.store().claim_queued(&worker("other"), 1, lease_until, now).await.expect("claim");
    assert_eq!((&again[0].request.id, again[0].epoch), (&id, 2));
}

#[tokio::test]
async fn an_enrolled_worker_silent_past_its_credential_lifetime_is_refused() {
    const TTL: Duration = Duration::from_secs(600);
    let h = Harness::with(|cfg| {
        cfg.local_worker = false;
        cfg.enrolled_credential_ttl = TTL;
    });
    let silent = h.service.enroll_worker("silent").await.expect("enroll");
    let heard = h.service.enroll_worker("heard").await.expect("enroll");
    let provisioned = h.service.provision_worker("fixed").await.expect("provision");
    h.clock.advance(TTL / 2);
    heartbeat(&h, &heard.worker.0, &[Runtime::Wasm], 1, 0).await;
    h.clock.advance(TTL / 2 + Duration::from_millis(1));

    let auth = |secret: String| {
        let service = h.service.clone();
        async move { service.authenticate_worker(&secret).await.expect("authenticate") }
    };
    assert_eq!(auth(silent.secret).await, None, "silent for longer than its lifetime");
    assert_eq!(auth(heard.secret).await, Some(heard.worker.clone()), "a heartbeat keeps it");
    h.clock.advance(TTL * 100);
    assert_eq!(auth(provisioned.secret).await, Some(provisioned.worker), "a provisioned one never expires");
    let valid: Vec<(String, bool)> = h
        .service
        .worker_credentials()
        .await
        .expect("list")
        .into_iter()
        .map(|(f, valid)| (f.credential.worker.0, valid))
        .filter(|(w, _)| w == &heard.worker.0)
        .collect();
    assert_eq!(valid, [(heard.worker.0.clone(), false)], "silent since, it has expired too");
}
