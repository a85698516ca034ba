//! Keyless sync invocations handed straight to a remote worker attached to the server, with no
//! store on the way (`crates/service/src/direct.rs`), unit-tested like `worker_lifecycle.rs`: a
//! temporary SQLite store, a manual clock, the worker being the protocol handlers it calls.
//! The attempt is still fenced and leased in memory: only its worker may report or renew it,
//! only as epoch 1; a worker that goes silent fails it as worker lost; one that never picks it
//! up leaves it to the store path.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use gust_core::protocol::Verdict;
use gust_core::{ErrorKind, Mode, Rejected, Runtime, StateName};
use gust_service::{Invoked, ServiceError, SyncOutcome};
use support::{accepted, complete, heartbeat, snapshot, worker, Harness, LEASE};
use tokio::task::JoinHandle;

/// A server whose work runs only on remote workers, a function "f", and worker "w" attached
/// to it (wasm, one slot, up to date); then a keyless sync invocation of "f", waiting.
async fn one_handed() -> (Harness, JoinHandle<Result<Invoked, ServiceError>>) {
    let h = Harness::with(|cfg| cfg.local_worker = false);
    h.function("f", |_| {}).await;
    heartbeat(&h, "w", &[Runtime::Wasm], 1, snapshot(&h).await).await;
    let call = h.spawn_invoke("f", Mode::Sync, None);
    // Handed (and counted) before the test moves the clock.
    while h.service.metrics().sync_invocations.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    (h, call)
}

/// What worker `id` gets from a poll that waits up to a second.
async fn poll_waiting(h: &Harness, id: &str) -> Vec<gust_service::Assignment> {
    h.service.worker_poll(&worker(id), 8, Duration::from_secs(1)).await.expect("poll")
}

#[tokio::test]
async fn a_keyless_sync_invocation_reaches_an_attached_worker_without_the_store() {
    let (h, call) = one_handed().await;
    let got = poll_waiting(&h, "w").await;
    assert_eq!(got.len(), 1, "handed to the worker's poll");
    let (id, epoch) = (got[0].claimed.request.id.clone(), got[0].claimed.epoch);
    assert_eq!(epoch, 1);
    assert!(h.service.store().get_invocation(&id).await.unwrap().is_none(), "nothing written before it ran");

    // Fenced and owned as a stored attempt is.
    let stolen = complete(&h, "intruder", &id, 1, b"\"forged\"").await;
    assert!(matches!(stolen, Err(ServiceError::WorkerForbidden(_))), "{stolen:?}");
    let stale = complete(&h, "w", &id, 2, b"\"stale\"").await;
    assert!(matches!(stale, Err(ServiceError::Fenced(_))), "{stale:?}");
    let renewed = h.service.worker_renew(&worker("intruder"), vec![(id.clone(), 1)]).await.unwrap();
    assert_eq!(renewed, vec![Err(Rejected::NotOwner)]);
    let renewed = h.service.worker_renew(&worker("w"), vec![(id.clone(), 1)]).await.unwrap();
    assert_eq!(renewed, vec![Ok(())]);

    assert_eq!(complete(&h, "w", &id, 1, b"\"done\"").await.unwrap(), accepted(StateName::Succeeded));
    match call.await.unwrap().unwrap() {
        Invoked::Completed { id: answered, outcome: SyncOutcome::Succeeded(out), .. } => {
            assert_eq!((answered, out.as_ref()), (id.clone(), &b"\"done\""[..]));
        }
        other => panic!("the caller got {other:?}"),
    }
    let again = complete(&h, "w", &id, 1, b"\"done\"").await.unwrap();
    assert_eq!(again.verdict, Verdict::AlreadyCompleted, "a repeated report whose reply was lost");
}

#[tokio::test]
async fn a_handed_invocation_whose_worker_goes_silent_fails_as_worker_lost() {
    let (h, call) = one_handed().await;
    let got = poll_waiting(&h, "w").await;
    let id = got[0].claimed.request.id.clone();
    h.clock.advance(LEASE + Duration::from_secs(1));
    match call.await.unwrap().unwrap() {
        Invoked::Completed { outcome: SyncOutcome::Failed(e), .. } => {
            assert_eq!(e.error_type, ErrorKind::WorkerLost, "{e:?}");
        }
        other => panic!("the caller got {other:?}"),
    }
    // Never re-run, and the silent worker's late report is not taken.
    assert!(poll_waiting(&h, "w").await.is_empty());
    assert!(complete(&h, "w", &id, 1, b"\"late\"").await.is_err());
}

#[tokio::test]
async fn a_handed_invocation_no_worker_picks_up_goes_through_the_store() {
    let (h, call) = one_handed().await;
    // "w" never polls: once the pickup window has passed, the invocation is stored, placed on
    // a live worker that can run it, and claimed from the store like any other.
    h.clock.advance(Duration::from_secs(3));
    heartbeat(&h, "w", &[Runtime::Wasm], 1, snapshot(&h).await).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.service.store().placed_counts().await.unwrap().is_empty() {
        assert!(!call.is_finished(), "the call ended: {:?}", call.await);
        assert!(tokio::time::Instant::now() < deadline, "never reached the store");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = poll_waiting(&h, "w").await;
    let id = got[0].claimed.request.id.clone();
    assert_eq!(got[0].claimed.epoch, 1);
    assert!(h.service.store().get_invocation(&id).await.unwrap().is_some(), "stored");
    assert_eq!(complete(&h, "w", &id, 1, b"\"stored\"").await.unwrap(), accepted(StateName::Succeeded));
    match call.await.unwrap().unwrap() {
        Invoked::Completed { outcome: SyncOutcome::Succeeded(out), .. } => {
            assert_eq!(out.as_ref(), b"\"stored\"")
        }
        other => panic!("the caller got {other:?}"),
    }
}
