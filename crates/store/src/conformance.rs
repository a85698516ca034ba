//! The store conformance suite: the behaviour every backend must show, written once against
//! the [`Store`] trait. A backend runs all of it with [`store_conformance_tests!`]:
//!
//! ```ignore
//! async fn make() -> Arc<dyn Store> { /* a fresh, empty store */ }
//! gust_store::store_conformance_tests!(make);
//! ```
//!
//! Races use real concurrency: many tasks on a multi-threaded runtime hit the store at once,
//! and the assertions are about outcomes (exactly one winner), never about timing.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use gust_core::{
    AttemptOutcome, ErrorKind, FunctionErrorBody, FunctionSpec, InvocationId, InvocationRequest, Lifecycle,
    Mode, Rejected, Resolved, RetryPolicy, Routing, Runtime, State, StateName, WorkerId, WorkerState,
};

use crate::{
    Completion, CredentialOrigin, Inserted, InvocationFilter, NewInvocation, Pruned, Store, StoreError,
    WorkerCredential,
};

/// Runs every conformance case as its own test against stores made by `$make`.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:path) => {
        $crate::store_conformance_tests!(@cases $make;
            function_revisions_are_cas_guarded,
            concurrent_writers_with_one_revision_have_one_winner,
            revisions_are_never_reused_across_delete,
            publish_freezes_config_and_code,
            aliases_route_only_to_published_versions_under_cas,
            artifacts_are_content_addressed,
            idempotency_key_race_creates_one_invocation,
            idempotency_key_with_different_request_is_refused,
            an_ingest_batch_is_answered_entry_by_entry_in_its_order,
            concurrent_claimers_of_one_invocation_have_one_winner_per_epoch,
            concurrent_queue_claimers_never_share_an_invocation,
            completion_is_guarded_by_the_attempt_epoch,
            lease_renewal_is_fenced,
            recovery_requeues_async_and_fails_sync,
            function_errors_retry_then_fail,
            old_events_expire,
            deleting_a_function_cancels_its_pending_invocations,
            invocation_listing_is_newest_first_and_paged,
            finished_records_are_written_once,
            worker_heartbeats_are_monotonic,
            the_cluster_secret_is_the_first_one_stored,
            placed_work_is_claimed_only_by_its_worker,
            functions_are_created_with_their_code_at_once,
            config_and_code_are_replaced_together_under_cas,
            versions_routed_by_an_alias_are_not_deleted,
            finishing_writes_the_destination_invocation_it_owes,
            versions_and_aliases_keep_their_own_descriptions,
            completion_is_accepted_only_from_the_attempts_worker,
            assigned_deployments_are_the_workers_own,
            worker_credentials_are_found_by_their_secret_hash,
            silent_enrolled_credentials_are_pruned,
            api_keys_have_unique_names_and_revoking_frees_the_name,
            concurrent_creators_of_one_api_key_name_have_one_winner,
            api_key_last_use_only_moves_forward,
            retention_prunes_only_ended_records_oldest_first,
            ended_totals_stay_exact_across_every_way_records_end_and_go,
            ended_totals_stay_exact_under_concurrent_writes_prunes_and_reads,
            code_collection_frees_only_unreferenced_old_code,
            code_stored_again_is_fresh_again,
            code_collection_racing_deploys_never_frees_referenced_code,
            the_completion_that_ended_an_invocation_is_recorded_with_it,
            a_large_code_upload_does_not_hold_up_ingest,
            function_urls_are_one_per_target_and_go_with_their_alias_and_function,
            concurrent_receivers_never_share_a_message_within_its_visibility,
            a_receipt_works_only_until_its_message_is_received_again,
            hidden_messages_come_back_after_their_visibility_timeout,
            messages_received_too_often_move_to_the_dead_letter_queue,
            queues_are_created_once_and_go_with_their_messages,
            concurrent_schedule_claimers_fire_each_scheduled_time_once,
            firings_missed_in_downtime_are_one_row_and_recent_ones_fire,
            firing_deliveries_are_leased_and_settled_once,
            schedules_live_in_groups_and_go_with_them,
            finishing_sends_to_queue_destinations_and_the_dead_letter_queue,
            fifo_groups_go_in_order_to_one_receiver_at_a_time_and_duplicates_are_dropped,
            dead_letters_go_back_to_their_source_or_where_they_are_sent,
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let store = $make().await;
                $crate::conformance::$case(store).await;
            }
        )*
    };
}

const NOW: i64 = 1_700_000_000_000;

fn spec() -> FunctionSpec {
    FunctionSpec::default()
}

fn worker(name: &str) -> WorkerId {
    WorkerId(name.to_string())
}

fn request(function: &str, mode: Mode, key: Option<&str>, payload: &str) -> InvocationRequest {
    InvocationRequest {
        id: InvocationId(uuid::Uuid::now_v7().to_string()),
        function: function.to_string(),
        qualifier: "$LATEST".to_string(),
        resolved: Resolved::Version(1),
        payload: Bytes::from(payload.to_string()),
        mode,
        idempotency_key: key.map(str::to_string),
        fingerprint: key.map(|_| crate::sha256_hex(payload.as_bytes())),
        received_at: NOW,
        retry: RetryPolicy {
            max_retries: 2,
            max_event_age_s: 3600,
            base_delay_ms: 1000,
            ..RetryPolicy::default()
        },
        client_context: None,
        trace_id: Some(TRACE.to_string()),
    }
}

const TRACE: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0";

/// The figures attempt `epoch` reports.
fn figures(epoch: u64) -> gust_core::Report {
    gust_core::Report {
        started_at: NOW + epoch as i64,
        duration_us: 1_000 * epoch,
        init_us: (epoch == 1).then_some(50_000),
        memory_mb: 128,
        max_memory_mb: Some(40),
    }
}

async fn enqueue(store: &dyn Store, req: InvocationRequest) -> InvocationId {
    let id = req.id.clone();
    let mut r =
        store.insert_invocations(vec![NewInvocation { request: req, lifecycle: Lifecycle::queued() }]).await;
    match r.as_mut().map(|v| v.pop()) {
        Ok(Some(Ok(Inserted::Created))) => id,
        other => panic!("enqueue failed: {other:?}"),
    }
}

async fn state_of(store: &dyn Store, id: &InvocationId) -> Lifecycle {
    store.get_invocation(id).await.unwrap().expect("invocation exists").lifecycle
}

/// The report of attempt `epoch` of `id` by worker `by`.
fn completion(by: &str, id: &InvocationId, epoch: u64, outcome: AttemptOutcome) -> Completion {
    Completion {
        id: id.clone(),
        worker: worker(by),
        epoch,
        outcome,
        result: Some(Bytes::from_static(b"result")),
        error: match outcome {
            AttemptOutcome::Succeeded => None,
            AttemptOutcome::FunctionError | AttemptOutcome::Throttled => {
                Some(FunctionErrorBody::new(ErrorKind::FunctionError, "boom"))
            }
        },
        log: "log line".into(),
        report: Some(figures(epoch)),
    }
}

async fn deployable(store: &dyn Store, name: &str) -> u64 {
    store.put_function(name, spec(), None, NOW).await.unwrap();
    let sha = store.put_artifact(Bytes::from(format!("code of {name}"))).await.unwrap();
    store.set_function_code(name, &sha, None, NOW).await.unwrap().revision
}

pub async fn function_revisions_are_cas_guarded(store: Arc<dyn Store>) {
    let f1 = store.put_function("f", spec(), Some(0), NOW).await.unwrap();
    assert!(f1.revision > 0);
    let again = store.put_function("f", spec(), Some(0), NOW).await;
    assert!(matches!(again, Err(StoreError::RevisionMismatch { expected: 0, .. })), "{again:?}");
    let mut changed = spec();
    changed.memory_mb = 256;
    let stale = store.put_function("f", changed.clone(), Some(f1.revision + 100), NOW).await;
    assert!(matches!(stale, Err(StoreError::RevisionMismatch { .. })));
    assert_eq!(
        store.get_function("f").await.unwrap().unwrap().spec.memory_mb,
        128,
        "a refused write changes nothing"
    );
    let f2 = store.put_function("f", changed, Some(f1.revision), NOW).await.unwrap();
    assert!(f2.revision > f1.revision, "revisions are monotonic");
    assert_eq!(store.get_function("f").await.unwrap().unwrap().revision, f2.revision);
    assert!(store.snapshot_version().await.unwrap() >= f2.revision);
}

pub async fn concurrent_writers_with_one_revision_have_one_winner(store: Arc<dyn Store>) {
    let base = store.put_function("race", spec(), None, NOW).await.unwrap().revision;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut s = spec();
                s.memory_mb = 128 + i;
                store.put_function("race", s, Some(base), NOW).await
            })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => winners += 1,
            Err(StoreError::RevisionMismatch { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(winners, 1, "exactly one CAS writer wins");
}

pub async fn revisions_are_never_reused_across_delete(store: Arc<dyn Store>) {
    let r1 = deployable(&*store, "gone").await;
    store.delete_function("gone", None, NOW).await.unwrap();
    assert!(store.get_function("gone").await.unwrap().is_none());
    assert!(store.get_deployment("gone", Resolved::Latest { revision: r1 }).await.unwrap().is_none());
    let r2 = store.put_function("gone", spec(), Some(0), NOW).await.unwrap().revision;
    assert!(r2 > r1, "a re-created function never reuses a revision ({r2} vs {r1})");
    let missing = store.delete_function("never", None, NOW).await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })));
}

pub async fn publish_freezes_config_and_code(store: Arc<dyn Store>) {
    store.put_function("p", spec(), None, NOW).await.unwrap();
    let no_code = store.publish_version("p", None, None, NOW).await;
    assert!(matches!(no_code, Err(StoreError::Invalid(_))), "{no_code:?}");
    let rev = deployable(&*store, "p").await;
    let v1 = store.publish_version("p", None, None, NOW).await.unwrap();
    assert_eq!(v1.number, 1);
    assert_eq!(v1.from_revision, rev);
    let same = store.publish_version("p", None, None, NOW).await.unwrap();
    assert_eq!(same.number, 1, "publishing an unchanged function returns the newest version");
    let mut s2 = spec();
    s2.timeout_ms = 9000;
    let head = store.put_function("p", s2, None, NOW).await.unwrap();
    let v2 = store.publish_version("p", Some(head.revision), None, NOW).await.unwrap();
    assert_eq!(v2.number, 2);
    let frozen = store.get_deployment("p", Resolved::Version(1)).await.unwrap().unwrap();
    assert_eq!(frozen.spec.timeout_ms, spec().timeout_ms, "version 1 kept the config it was published with");
    let head_then = store.get_deployment("p", Resolved::Latest { revision: rev }).await.unwrap().unwrap();
    assert_eq!(head_then.spec.timeout_ms, spec().timeout_ms, "$LATEST at an old revision is immutable too");
    let listed: Vec<u64> =
        store.list_versions("p", None, 10).await.unwrap().iter().map(|v| v.number).collect();
    assert_eq!(listed, vec![1, 2]);
    assert_eq!(store.list_versions("p", Some(1), 10).await.unwrap().len(), 1);
    let stale = store.publish_version("p", Some(rev), None, NOW).await;
    assert!(matches!(stale, Err(StoreError::RevisionMismatch { .. })));
}

pub async fn aliases_route_only_to_published_versions_under_cas(store: Arc<dyn Store>) {
    deployable(&*store, "a").await;
    store.publish_version("a", None, None, NOW).await.unwrap();
    let mut routing = Routing::single(1);
    routing.weights.insert(2, 0.5);
    let unpublished = store.put_alias("a", "live", routing, "", None, NOW).await;
    assert!(matches!(unpublished, Err(StoreError::NotFound { .. })), "{unpublished:?}");
    assert!(store.get_alias("a", "live").await.unwrap().is_none(), "nothing half-written");
    let created = store.put_alias("a", "live", Routing::single(1), "", Some(0), NOW).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let rev = created.revision;
            tokio::spawn(
                async move { store.put_alias("a", "live", Routing::single(1), "", Some(rev), NOW).await },
            )
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one alias CAS writer wins");
    let current = store.get_alias("a", "live").await.unwrap().unwrap();
    assert!(current.revision > created.revision);
    assert!(matches!(
        store.delete_alias("a", "live", Some(created.revision), NOW).await,
        Err(StoreError::RevisionMismatch { .. })
    ));
    store.delete_alias("a", "live", Some(current.revision), NOW).await.unwrap();
    assert!(store.list_aliases("a").await.unwrap().is_empty());
}

pub async fn artifacts_are_content_addressed(store: Arc<dyn Store>) {
    let bytes = Bytes::from_static(b"\0asm some module bytes");
    let sha = store.put_artifact(bytes.clone()).await.unwrap();
    assert_eq!(sha, crate::sha256_hex(&bytes));
    assert_eq!(store.put_artifact(bytes.clone()).await.unwrap(), sha, "idempotent");
    assert_eq!(store.get_artifact(&sha).await.unwrap(), bytes);
    let missing = store.get_artifact(&"0".repeat(64)).await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })));
    let hostile = store.get_artifact("../../etc/passwd").await;
    assert!(matches!(hostile, Err(StoreError::NotFound { .. })));
    store.put_function("c", spec(), None, NOW).await.unwrap();
    let unknown = store.set_function_code("c", &"1".repeat(64), None, NOW).await;
    assert!(unknown.is_err(), "code must point at a stored artifact");
}

pub async fn idempotency_key_race_creates_one_invocation(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let req = request("idem", Mode::Async, Some("key-1"), "same payload");
                let new = NewInvocation { request: req.clone(), lifecycle: Lifecycle::queued() };
                match store.insert_invocations(vec![new]).await.unwrap().pop().unwrap().unwrap() {
                    Inserted::Created => req.id,
                    Inserted::Existing(rec) => rec.request.id,
                }
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 1, "50 concurrent requests with one key make one invocation");
    let page =
        store.list_invocations("idem", InvocationFilter { limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(page.len(), 1);
}

pub async fn idempotency_key_with_different_request_is_refused(store: Arc<dyn Store>) {
    let first = enqueue(&*store, request("k", Mode::Async, Some("key"), "one")).await;
    let batch = vec![
        NewInvocation {
            request: request("k", Mode::Async, Some("key"), "two"),
            lifecycle: Lifecycle::queued(),
        },
        NewInvocation {
            request: request("other", Mode::Async, Some("key"), "two"),
            lifecycle: Lifecycle::queued(),
        },
    ];
    let mut out = store.insert_invocations(batch).await.unwrap();
    assert!(matches!(out.pop().unwrap(), Ok(Inserted::Created)), "keys are scoped by function");
    match out.pop().unwrap() {
        Err(StoreError::KeyMismatch { existing }) => assert_eq!(existing, first),
        other => panic!("expected a key mismatch, got {other:?}"),
    }
}

/// An ingest batch as the service sends it under load: more plain async events than one
/// statement holds (they go in chunks), a keyed one between them, and an id already stored.
/// Each entry gets its own answer, in order, and exactly the new ones are stored.
pub async fn an_ingest_batch_is_answered_entry_by_entry_in_its_order(store: Arc<dyn Store>) {
    let stored = request("ingest", Mode::Async, None, "first");
    enqueue(&*store, stored.clone()).await;
    let mut batch: Vec<NewInvocation> = (0..75)
        .map(|i| NewInvocation {
            request: request("ingest", Mode::Async, None, &format!("event {i}")),
            lifecycle: Lifecycle::queued(),
        })
        .collect();
    let keyed = request("ingest", Mode::Async, Some("the key"), "keyed");
    batch.insert(10, NewInvocation { request: keyed.clone(), lifecycle: Lifecycle::queued() });
    let mut again = stored.clone();
    again.payload = Bytes::from_static(b"second");
    batch.insert(70, NewInvocation { request: again, lifecycle: Lifecycle::queued() });
    let sent: Vec<InvocationRequest> = batch.iter().map(|n| n.request.clone()).collect();
    let out = store.insert_invocations(batch).await.unwrap();
    assert_eq!(out.len(), sent.len());
    for (i, (req, answer)) in sent.iter().zip(&out).enumerate() {
        let got = store.get_invocation(&req.id).await.unwrap().expect("every entry's id is stored");
        if i == 70 {
            assert!(matches!(answer, Err(StoreError::Invalid(_))), "an id already stored: {answer:?}");
            assert_eq!(got.request.payload, stored.payload, "the stored invocation is left as it was");
        } else {
            assert!(matches!(answer, Ok(Inserted::Created)), "entry {i}: {answer:?}");
            assert_eq!(got.request.payload, req.payload, "entry {i} is stored as it was sent");
            assert_eq!(got.lifecycle.state, State::Queued);
        }
    }
    assert_eq!(
        store.async_backlog().await.unwrap(),
        vec![("ingest".to_string(), 77)],
        "75 events, the keyed one and the one stored before"
    );
}

pub async fn concurrent_claimers_of_one_invocation_have_one_winner_per_epoch(store: Arc<dyn Store>) {
    let id = enqueue(&*store, request("claim", Mode::Async, None, "{}")).await;
    for (round, now) in [(1u64, NOW), (2, NOW + 10_000)] {
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (store, id) = (store.clone(), id.clone());
                tokio::spawn(
                    async move { store.claim(&id, &worker(&format!("w{i}")), now + 5_000, now).await },
                )
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(c) => winners.push(c.epoch),
                Err(StoreError::Rejected(Rejected::InvalidTransition { .. })) => {}
                Err(e) => panic!("unexpected claim error: {e}"),
            }
        }
        assert_eq!(winners, vec![round], "exactly one claimer wins epoch {round}");
        // The winner dies: its lease expires and recovery puts the invocation back.
        let report = store.recover(now + 5_000).await.unwrap();
        assert_eq!(report.requeued, 1);
    }
}

pub async fn concurrent_queue_claimers_never_share_an_invocation(store: Arc<dyn Store>) {
    let batch: Vec<_> = (0..300)
        .map(|i| NewInvocation {
            request: request("q", Mode::Async, None, &i.to_string()),
            lifecycle: Lifecycle::queued(),
        })
        .collect();
    store.insert_invocations(batch).await.unwrap();
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let me = worker(&format!("w{i}"));
                let mut mine = Vec::new();
                loop {
                    let got = store.claim_queued(&me, 7, NOW + 5_000, NOW).await.unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|c| (c.request.id, c.epoch)));
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for t in tasks {
        for (id, epoch) in t.await.unwrap() {
            assert_eq!(epoch, 1);
            assert!(seen.insert(id), "an invocation was handed to two claimers");
        }
    }
    assert_eq!(seen.len(), 300, "every invocation was claimed");
}

pub async fn completion_is_guarded_by_the_attempt_epoch(store: Arc<dyn Store>) {
    let id = enqueue(&*store, request("c", Mode::Async, None, "{}")).await;
    let first = store.claim(&id, &worker("a"), NOW + 5_000, NOW).await.unwrap();
    store.recover(NOW + 5_000).await.unwrap();
    let second = store.claim(&id, &worker("b"), NOW + 15_000, NOW + 10_000).await.unwrap();
    assert_eq!((first.epoch, second.epoch), (1, 2));
    let stale = store.complete(completion("a", &id, 1, AttemptOutcome::Succeeded), NOW + 11_000).await;
    assert!(
        matches!(stale, Err(StoreError::Rejected(Rejected::Fenced { current: 2, given: 1 }))),
        "{stale:?}"
    );
    assert_eq!(store.counters().await.unwrap().fenced_completions, 1, "the fenced completion is counted");
    assert_eq!(state_of(&*store, &id).await.state.name(), StateName::Running, "it changed nothing");
    let done =
        store.complete(completion("b", &id, 2, AttemptOutcome::Succeeded), NOW + 11_000).await.unwrap();
    assert_eq!(done.state, State::Succeeded);
    let twice = store.complete(completion("b", &id, 2, AttemptOutcome::FunctionError), NOW + 12_000).await;
    assert!(
        matches!(twice, Err(StoreError::Rejected(Rejected::AlreadyCompleted(2)))),
        "a repeated report of the accepted attempt is recognised, and changes nothing: {twice:?}"
    );
    let rec = store.get_invocation(&id).await.unwrap().unwrap();
    assert_eq!(rec.result.as_deref(), Some(&b"result"[..]));
    assert_eq!(rec.log, "log line");
    assert!(rec.error.is_none() && rec.finished_at.is_some());
    assert_eq!(rec.report, Some(figures(2)), "the accepted attempt's figures, not the fenced one's");
    // Its history: each attempt with its epoch and worker, the expiry between them, the end.
    let history: Vec<serde_json::Value> =
        rec.history.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let events: Vec<(&str, Option<u64>, Option<&str>)> = history
        .iter()
        .map(|h| (h["event"].as_str().unwrap(), h["epoch"].as_u64(), h["worker"].as_str()))
        .collect();
    assert_eq!(
        events,
        vec![
            ("started", Some(1), Some("a")),
            ("lease expired", Some(1), None),
            ("started", Some(2), Some("b")),
            ("completed", Some(2), Some("b")),
        ],
        "{}",
        rec.history
    );
    assert_eq!(history[0]["at"], NOW);
    assert_eq!(
        (history[3]["outcome"].as_str(), history[3]["state"].as_str()),
        (Some("Succeeded"), Some("SUCCEEDED"))
    );
    assert_eq!(rec.request.trace_id.as_deref(), Some(TRACE));

    // Racing completions of the same attempt: exactly one is accepted.
    let id = enqueue(&*store, request("c", Mode::Async, None, "{}")).await;
    let claimed = store.claim(&id, &worker("a"), NOW + 5_000, NOW).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, id) = (store.clone(), id.clone());
            tokio::spawn(async move {
                store.complete(completion("a", &id, claimed.epoch, AttemptOutcome::Succeeded), NOW + 1).await
            })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 1, "one terminal outcome");
}

pub async fn lease_renewal_is_fenced(store: Arc<dyn Store>) {
    let id = enqueue(&*store, request("r", Mode::Async, None, "{}")).await;
    let c = store.claim(&id, &worker("a"), NOW + 5_000, NOW).await.unwrap();
    let ok = store
        .renew_leases(&worker("a"), vec![(id.clone(), c.epoch)], NOW + 9_000, NOW + 4_000)
        .await
        .unwrap();
    assert_eq!(ok, vec![Ok(())]);
    assert_eq!(store.recover(NOW + 6_000).await.unwrap().requeued, 0, "a renewed lease does not expire");
    assert_eq!(store.recover(NOW + 9_000).await.unwrap().requeued, 1);
    let late = store.renew_leases(&worker("a"), vec![(id.clone(), c.epoch)], NOW + 20_000, NOW + 9_500).await;
    assert!(matches!(late.unwrap()[0], Err(Rejected::Fenced { .. })), "a recovered attempt cannot renew");
    assert_eq!(store.counters().await.unwrap().fenced_renewals, 1);
    // Several at once, named out of id order (rows are locked in id order): each answer is in
    // the caller's place.
    let b = enqueue(&*store, request("r", Mode::Async, None, "b")).await;
    let cb = store.claim(&b, &worker("a"), NOW + 20_000, NOW + 10_000).await.unwrap();
    let (mut first, mut second) = ((b.clone(), cb.epoch), (id.clone(), c.epoch));
    if first.0 < second.0 {
        std::mem::swap(&mut first, &mut second);
    }
    let fenced_first = first.0 == id;
    let both =
        store.renew_leases(&worker("a"), vec![first, second], NOW + 30_000, NOW + 10_500).await.unwrap();
    assert_eq!(both[usize::from(fenced_first)], Ok(()), "{both:?}");
    assert!(matches!(both[usize::from(!fenced_first)], Err(Rejected::Fenced { .. })), "{both:?}");
    assert_eq!(store.counters().await.unwrap().fenced_renewals, 2);
}

pub async fn recovery_requeues_async_and_fails_sync(store: Arc<dyn Store>) {
    let a = enqueue(&*store, request("rec", Mode::Async, None, "{}")).await;
    store.claim(&a, &worker("dead"), NOW + 5_000, NOW).await.unwrap();
    let s = request("rec", Mode::Sync, Some("sync-key"), "{}");
    let sid = s.id.clone();
    let reserved = NewInvocation { request: s, lifecycle: Lifecycle::claimed(worker("dead"), NOW + 5_000) };
    store.insert_invocations(vec![reserved]).await.unwrap();
    assert_eq!(store.recover(NOW + 4_999).await.unwrap(), Default::default(), "leases still valid");
    let report = store.recover(NOW + 5_000).await.unwrap();
    assert_eq!((report.requeued, report.lost), (1, 1));
    let lc = state_of(&*store, &a).await;
    assert_eq!((lc.state.clone(), lc.lost_attempts), (State::Queued, 1));
    let sync = store.get_invocation(&sid).await.unwrap().unwrap();
    assert_eq!(sync.lifecycle.state, State::Failed);
    assert_eq!(sync.error.unwrap().error_type, ErrorKind::WorkerLost);
}

pub async fn function_errors_retry_then_fail(store: Arc<dyn Store>) {
    let id = enqueue(&*store, request("retry", Mode::Async, None, "{}")).await;
    let mut now = NOW;
    for attempt in 1..=3u64 {
        let c = store.claim_queued(&worker("w"), 10, now + 5_000, now).await.unwrap();
        assert_eq!(c.len(), 1, "attempt {attempt} is claimable");
        assert_eq!(c[0].epoch, attempt);
        let lc = store
            .complete(completion("w", &id, attempt, AttemptOutcome::FunctionError), now + 1)
            .await
            .unwrap();
        if attempt < 3 {
            let State::RetryWait { not_before } = lc.state else { panic!("expected RETRY_WAIT, got {lc:?}") };
            assert!(store.claim_queued(&worker("w"), 10, now + 5_000, now + 2).await.unwrap().is_empty());
            assert_eq!(store.recover(not_before - 1).await.unwrap().retries_due, 0, "not before the backoff");
            assert_eq!(store.recover(not_before).await.unwrap().retries_due, 1);
            now = not_before;
        } else {
            assert_eq!(lc.state, State::Failed, "two retries, then failed");
        }
    }
    let rec = store.get_invocation(&id).await.unwrap().unwrap();
    assert_eq!(rec.lifecycle.function_errors, 3);
    assert_eq!(rec.error.unwrap().error_message, "boom");
}

pub async fn old_events_expire(store: Arc<dyn Store>) {
    let id = enqueue(&*store, request("old", Mode::Async, None, "{}")).await;
    let late = NOW + 3_600_001;
    let claimed = store.claim_queued(&worker("w"), 10, late + 5_000, late).await.unwrap();
    assert!(claimed.is_empty(), "a too-old event is not run");
    // Expired by the claim itself or, at the latest, by the next recovery sweep.
    store.recover(late).await.unwrap();
    let rec = store.get_invocation(&id).await.unwrap().unwrap();
    assert_eq!(rec.lifecycle.state, State::Expired);
    assert_eq!(rec.error.unwrap().error_type, ErrorKind::Expired);
    let id2 = enqueue(&*store, request("old", Mode::Async, None, "{}")).await;
    assert_eq!(store.recover(late).await.unwrap().expired, 1, "only the new event was left to expire");
    assert_eq!(state_of(&*store, &id2).await.state, State::Expired);
}

pub async fn deleting_a_function_cancels_its_pending_invocations(store: Arc<dyn Store>) {
    deployable(&*store, "del").await;
    let queued = enqueue(&*store, request("del", Mode::Async, None, "1")).await;
    let running = enqueue(&*store, request("del", Mode::Async, None, "2")).await;
    let c = store.claim(&running, &worker("w"), NOW + 5_000, NOW).await.unwrap();
    assert_eq!(store.delete_function("del", None, NOW).await.unwrap(), 2);
    for id in [&queued, &running] {
        let rec = store.get_invocation(id).await.unwrap().unwrap();
        assert_eq!(rec.lifecycle.state, State::Failed);
        assert_eq!(rec.error.unwrap().error_type, ErrorKind::FunctionDeleted);
    }
    let late = store.complete(completion("w", &running, c.epoch, AttemptOutcome::Succeeded), NOW + 1).await;
    assert!(
        matches!(late, Err(StoreError::Rejected(Rejected::Terminal(StateName::Failed)))),
        "a cancelled attempt's completion is not mistaken for an accepted one: {late:?}"
    );
}

pub async fn invocation_listing_is_newest_first_and_paged(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(enqueue(&*store, request("list", Mode::Async, None, &i.to_string())).await);
    }
    store.claim(&ids[4], &worker("w"), NOW + 5_000, NOW).await.unwrap();
    let page1 =
        store.list_invocations("list", InvocationFilter { limit: 2, ..Default::default() }).await.unwrap();
    let got: Vec<_> = page1.iter().map(|r| r.request.id.clone()).collect();
    assert_eq!(got, vec![ids[4].clone(), ids[3].clone()]);
    let page2 = store
        .list_invocations(
            "list",
            InvocationFilter { limit: 10, before: Some(ids[3].clone()), ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!(page2.len(), 3);
    let running = store
        .list_invocations(
            "list",
            InvocationFilter { limit: 10, state: Some(StateName::Running), ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!(running.len(), 1);
    let counts = store.count_by_state().await.unwrap();
    assert!(
        counts.contains(&(StateName::Queued, 4)) && counts.contains(&(StateName::Running, 1)),
        "{counts:?}"
    );

    // The tail of outcomes: ended ones, in the order they finished (not the order they came),
    // after a `(finished_at, id)` cursor, optionally of one state.
    let finish = |i: usize, at: i64, outcome: AttemptOutcome| {
        let (store, id) = (store.clone(), ids[i].clone());
        async move {
            let epoch = store.claim(&id, &worker("w"), at + 5_000, at).await.map_or(1, |c| c.epoch);
            store.complete(completion("w", &id, epoch, outcome), at).await.unwrap()
        }
    };
    finish(4, NOW + 100, AttemptOutcome::Succeeded).await;
    finish(0, NOW + 200, AttemptOutcome::Succeeded).await;
    finish(2, NOW + 200, AttemptOutcome::Succeeded).await;
    let tail = |after: (i64, InvocationId), state: Option<StateName>| {
        let store = store.clone();
        async move {
            let filter = InvocationFilter {
                limit: 10,
                state,
                finished_after: Some(after),
                light: true,
                ..Default::default()
            };
            let page = store.list_invocations("list", filter).await.unwrap();
            for r in &page {
                // Read light: no payload, no result (the rest as stored).
                assert!(r.request.payload.is_empty() && r.result.as_deref().unwrap_or_default().is_empty());
                assert_eq!(r.log, "log line");
            }
            page.into_iter().map(|r| r.request.id).collect::<Vec<_>>()
        }
    };
    let none = InvocationId(String::new());
    let (first, second) = if ids[0].0 < ids[2].0 { (&ids[0], &ids[2]) } else { (&ids[2], &ids[0]) };
    assert_eq!(tail((NOW, none.clone()), None).await, vec![ids[4].clone(), first.clone(), second.clone()]);
    assert_eq!(tail((NOW + 200, first.clone()), None).await, vec![second.clone()], "a tie is broken by id");
    assert_eq!(tail((NOW + 200, second.clone()), None).await, Vec::<InvocationId>::new());
    assert_eq!(tail((NOW, none), Some(StateName::Failed)).await, Vec::<InvocationId>::new());
}

pub async fn finished_records_are_written_once(store: Arc<dyn Store>) {
    let req = request("wb", Mode::Sync, None, "{}");
    let id = req.id.clone();
    let rec = gust_core::InvocationRecord {
        request: req,
        lifecycle: Lifecycle {
            state: State::Succeeded,
            attempt_epoch: 1,
            function_errors: 0,
            lost_attempts: 0,
        },
        result: Some(Bytes::from_static(b"out")),
        error: None,
        log: String::new(),
        updated_at: NOW,
        finished_at: Some(NOW),
        report: Some(figures(1)),
        history: String::new(),
    };
    store.record_finished(vec![rec.clone()]).await.unwrap();
    let mut again = rec;
    again.result = Some(Bytes::from_static(b"other"));
    store.record_finished(vec![again]).await.unwrap();
    let stored = store.get_invocation(&id).await.unwrap().unwrap();
    assert_eq!(stored.result.as_deref(), Some(&b"out"[..]), "a record is never overwritten");
    assert_eq!(stored.lifecycle.state, State::Succeeded);
    assert_eq!(stored.report, Some(figures(1)), "a written-behind record keeps its figures");

    // A batch as the write-behind queue sends it: more rows than one statement holds (they go
    // in chunks), with the stored record among them and one record twice.
    let mut batch: Vec<gust_core::InvocationRecord> = (0..73)
        .map(|i| {
            let mut r = stored.clone();
            r.request = request("wb", Mode::Sync, None, "{}");
            r.result = Some(Bytes::from(format!("out {i}")));
            r
        })
        .collect();
    let mut overwrite = stored.clone();
    overwrite.result = Some(Bytes::from_static(b"other"));
    batch.insert(40, overwrite);
    batch.push(batch[3].clone());
    assert_eq!(batch.len(), 75);
    store.record_finished(batch.clone()).await.unwrap();
    for (i, rec) in batch.iter().enumerate().filter(|(i, _)| *i != 40) {
        let got = store
            .get_invocation(&rec.request.id)
            .await
            .unwrap()
            .expect("every record of the batch is stored");
        assert_eq!(got.result, rec.result, "record {i} is stored as it was sent");
        assert_eq!(got.request.payload, rec.request.payload);
        assert_eq!(got.finished_at, rec.finished_at);
    }
    let stored = store.get_invocation(&id).await.unwrap().unwrap();
    assert_eq!(stored.result.as_deref(), Some(&b"out"[..]), "nor overwritten from within a batch");
}

fn heartbeat(id: &str, revision: u64, running: u32, at: i64) -> WorkerState {
    WorkerState {
        id: worker(id),
        revision,
        runtimes: vec![Runtime::Wasm],
        capacity: 8,
        running,
        warm: vec![],
        snapshot_version: 1,
        last_heartbeat: at,
        server: None,
    }
}

pub async fn the_cluster_secret_is_the_first_one_stored(store: Arc<dyn Store>) {
    assert_eq!(store.cluster_secret("peer", "first").await.unwrap(), "first");
    assert_eq!(
        store.cluster_secret("peer", "second").await.unwrap(),
        "first",
        "a later server gets the stored one"
    );
    assert_eq!(store.cluster_secret("other", "x").await.unwrap(), "x", "each name has its own");
}

pub async fn worker_heartbeats_are_monotonic(store: Arc<dyn Store>) {
    assert!(store.put_worker(heartbeat("w1", 5, 1, NOW)).await.unwrap());
    assert!(!store.put_worker(heartbeat("w1", 4, 7, NOW + 1)).await.unwrap(), "an older revision is ignored");
    assert!(!store.put_worker(heartbeat("w1", 5, 7, NOW + 1)).await.unwrap(), "so is a repeated one");
    assert!(store.put_worker(heartbeat("w1", 6, 2, NOW + 2)).await.unwrap());
    assert!(store.put_worker(heartbeat("w2", 1, 0, NOW - 60_000)).await.unwrap());
    let live = store.list_workers(NOW - 1_000).await.unwrap();
    assert_eq!(live.len(), 1, "only workers heard from since the bound");
    assert_eq!((live[0].revision, live[0].running), (6, 2));
    assert_eq!(store.list_workers(0).await.unwrap().len(), 2);
}

pub async fn placed_work_is_claimed_only_by_its_worker(store: Arc<dyn Store>) {
    let a = enqueue(&*store, request("pl", Mode::Async, None, "1")).await;
    let b = enqueue(&*store, request("pl", Mode::Async, None, "2")).await;
    let queued: Vec<_> = store.queued(10).await.unwrap().into_iter().map(|q| q.0).collect();
    assert_eq!(queued, vec![a.clone(), b.clone()], "oldest first");
    let placed = store.place(vec![(a.clone(), worker("w1")), (b.clone(), worker("w2"))], NOW).await.unwrap();
    assert_eq!(placed, vec![Ok(()), Ok(())]);
    let again = store.place(vec![(a.clone(), worker("w2"))], NOW).await.unwrap();
    assert!(matches!(again[0], Err(Rejected::InvalidTransition { .. })), "placed once");
    let mut counts = store.placed_counts().await.unwrap();
    counts.sort_by(|x, y| x.0 .0.cmp(&y.0 .0));
    assert_eq!(counts, vec![(worker("w1"), 1), (worker("w2"), 1)]);
    let stolen = store.claim(&a, &worker("w2"), NOW + 5_000, NOW).await;
    assert!(matches!(stolen, Err(StoreError::Rejected(Rejected::NotOwner))), "{stolen:?}");
    let mine = store.claim_placed(&worker("w1"), 10, NOW + 5_000, NOW).await.unwrap();
    assert_eq!(mine.iter().map(|c| c.request.id.clone()).collect::<Vec<_>>(), vec![a.clone()]);
    assert_eq!(mine[0].epoch, 1);
    // A worker that never claims loses its placement after the timeout.
    let report = store.recover(NOW + 60_000).await.unwrap();
    assert_eq!(report.unplaced, 1);
    assert_eq!(state_of(&*store, &b).await.state, State::Queued);
}

/// For backends shared by several servers: a placement committed through `placer` is announced
/// to `listener` (another server's store) with its worker, so that server wakes the worker's
/// poll at once; a refused placement announces nothing.
pub async fn placements_are_announced_to_every_server(placer: Arc<dyn Store>, listener: Arc<dyn Store>) {
    let mut events = listener.placement_events().expect("a shared store announces placements");
    // The listener's LISTEN may still be on its way: place until one announcement arrives.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let heard = loop {
        let id = enqueue(&*placer, request("ann", Mode::Async, None, "1")).await;
        assert_eq!(placer.place(vec![(id, worker("w-ann"))], NOW).await.unwrap(), vec![Ok(())]);
        match tokio::time::timeout(std::time::Duration::from_millis(500), events.recv()).await {
            Ok(heard) => break heard.unwrap(),
            Err(_) => assert!(std::time::Instant::now() < deadline, "no placement was announced"),
        }
    };
    assert_eq!(heard, worker("w-ann"));
    while events.try_recv().is_ok() {}
    let id = enqueue(&*placer, request("ann", Mode::Async, None, "2")).await;
    assert_eq!(placer.place(vec![(id.clone(), worker("w-one"))], NOW).await.unwrap(), vec![Ok(())]);
    let refused = placer.place(vec![(id, worker("w-two"))], NOW).await.unwrap();
    assert!(refused[0].is_err(), "placed once");
    let heard = tokio::time::timeout(std::time::Duration::from_secs(5), events.recv()).await;
    assert_eq!(heard.expect("announced").unwrap(), worker("w-one"));
    let more = tokio::time::timeout(std::time::Duration::from_millis(300), events.recv()).await;
    assert!(more.is_err(), "a refused placement is not announced: {more:?}");
    // An invocation inserted already placed is announced too.
    let placed_at_ingest = Lifecycle {
        state: State::Placed { worker: worker("w-ingest"), placed_at: NOW },
        ..Lifecycle::queued()
    };
    let new = NewInvocation { request: request("ann", Mode::Sync, None, "3"), lifecycle: placed_at_ingest };
    assert!(matches!(placer.insert_invocations(vec![new]).await.unwrap()[0], Ok(Inserted::Created)));
    let heard = tokio::time::timeout(std::time::Duration::from_secs(5), events.recv()).await;
    assert_eq!(heard.expect("announced").unwrap(), worker("w-ingest"));
    // And so is each of a batch inserted already placed (one statement for the batch).
    let short = |i: usize| format!("w-batch-{i}");
    assert_batch_announced(&*placer, &mut events, 9, 9, short).await;
    // A full ingest batch on many workers with long ids: more than one announcement can hold,
    // still every worker heard, and the batch not refused for it.
    let long = |i: usize| format!("{}-{i:04}", "w".repeat(75));
    assert_batch_announced(&*placer, &mut events, 300, 150, long).await;
}

/// Inserts `n` async invocations already placed, the `i`-th on worker `name(i % workers)`,
/// and asserts all are created and every one of those workers is announced.
async fn assert_batch_announced(
    placer: &dyn Store, events: &mut tokio::sync::broadcast::Receiver<WorkerId>, n: usize, workers: usize,
    name: impl Fn(usize) -> String,
) {
    let batch: Vec<NewInvocation> = (0..n)
        .map(|i| NewInvocation {
            request: request("ann", Mode::Async, None, &format!("batch of {n}: {i}")),
            lifecycle: Lifecycle {
                state: State::Placed { worker: worker(&name(i % workers)), placed_at: NOW },
                ..Lifecycle::queued()
            },
        })
        .collect();
    let out = placer.insert_invocations(batch).await.unwrap();
    assert!(out.iter().all(|r| matches!(r, Ok(Inserted::Created))), "{out:?}");
    let mut heard = std::collections::BTreeSet::new();
    while heard.len() < workers {
        match tokio::time::timeout(std::time::Duration::from_secs(5), events.recv()).await {
            Ok(w) => heard.insert(w.unwrap().0),
            Err(_) => panic!("{} of {workers} workers heard: {heard:?}", heard.len()),
        };
    }
    assert_eq!(heard, (0..workers).map(name).collect());
}

/// For backends shared by several servers: reserved concurrency counted across them. At most
/// `limit` slots are held at once whoever asks, however many ask at once; a released slot and
/// one whose holder stopped renewing it are taken again; renewing keeps a slot.
pub async fn concurrency_slots_hold_across_servers(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    assert!(a.shared() && b.shared());
    let until = NOW + 10_000;
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { store.acquire_slot("lim", 3, &format!("h{i}"), until, NOW).await })
        })
        .collect();
    let mut won = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        if let Some(slot) = t.await.unwrap().unwrap() {
            won.push((i, slot));
        }
    }
    let mut slots: Vec<u32> = won.iter().map(|(_, s)| *s).collect();
    slots.sort_unstable();
    assert_eq!(slots, vec![0, 1, 2], "exactly the limit, each slot once: {won:?}");
    assert_eq!(a.acquire_slot("lim", 3, "late", until, NOW).await.unwrap(), None, "at the limit");
    assert!(a.acquire_slot("other", 1, "late", until, NOW).await.unwrap().is_some(), "per function");
    let (first, slot) = won[0];
    b.release_slot("lim", slot, "someone-else").await.unwrap();
    assert_eq!(
        a.acquire_slot("lim", 3, "late", until, NOW).await.unwrap(),
        None,
        "only its holder releases it"
    );
    a.release_slot("lim", slot, &format!("h{first}")).await.unwrap();
    assert_eq!(
        a.acquire_slot("lim", 3, "late", until, NOW).await.unwrap(),
        Some(slot),
        "released, taken again"
    );
    // Renewed slots stay held past their first expiry; the others free themselves.
    let (renewer, _) = won[1];
    assert_eq!(b.renew_slots(&format!("h{renewer}"), NOW + 60_000).await.unwrap(), 1);
    let after = until + 1;
    let mut again = Vec::new();
    while let Some(s) = a.acquire_slot("lim", 3, "next", after + 10_000, after).await.unwrap() {
        again.push(s);
    }
    again.sort_unstable();
    let mut expected: Vec<u32> = vec![0, 1, 2];
    expected.retain(|s| *s != won[1].1);
    assert_eq!(again, expected, "the slots nobody renewed are free again");
}

pub async fn functions_are_created_with_their_code_at_once(store: Arc<dyn Store>) {
    let sha = store.put_artifact(Bytes::from_static(b"code")).await.unwrap();
    let f = store.create_function("c", spec(), &sha, NOW).await.unwrap();
    assert_eq!(f.code_sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(store.get_function("c").await.unwrap().unwrap(), f);
    let again = store.create_function("c", spec(), &sha, NOW).await;
    assert!(matches!(again, Err(StoreError::RevisionMismatch { expected: 0, .. })), "{again:?}");
    let d = store.get_deployment("c", Resolved::Latest { revision: f.revision }).await.unwrap().unwrap();
    assert_eq!(d.code_sha256, sha);
}

/// A deploy of config and code is one write: a stale revision, a name that exists when it must
/// not, or code that was never stored changes neither; the one that wins changes both, in one
/// revision, and of racing deployers from one revision exactly one wins.
pub async fn config_and_code_are_replaced_together_under_cas(store: Arc<dyn Store>) {
    let a = store.put_artifact(Bytes::from_static(b"code a")).await.unwrap();
    let b = store.put_artifact(Bytes::from_static(b"code b")).await.unwrap();
    let created = store.put_function_with_code("d", spec(), &a, Some(0), NOW).await.unwrap();
    assert_eq!(created.code_sha256.as_deref(), Some(a.as_str()));
    let again = store.put_function_with_code("d", spec(), &a, Some(0), NOW).await;
    assert!(matches!(again, Err(StoreError::RevisionMismatch { expected: 0, .. })), "{again:?}");

    let mut bigger = spec();
    bigger.memory_mb = 512;
    bigger.env.insert("K".into(), "v".into());
    let stale =
        store.put_function_with_code("d", bigger.clone(), &b, Some(created.revision + 100), NOW).await;
    assert!(matches!(stale, Err(StoreError::RevisionMismatch { .. })), "{stale:?}");
    let never_stored = "1".repeat(64);
    let unknown =
        store.put_function_with_code("d", bigger.clone(), &never_stored, Some(created.revision), NOW);
    assert!(unknown.await.is_err(), "code must point at a stored artifact");
    assert_eq!(store.get_function("d").await.unwrap().unwrap(), created, "a refused deploy changes nothing");

    let deployed =
        store.put_function_with_code("d", bigger.clone(), &b, Some(created.revision), NOW).await.unwrap();
    assert!(deployed.revision > created.revision);
    assert_eq!((deployed.spec.memory_mb, deployed.code_sha256.as_deref()), (512, Some(b.as_str())));
    assert_eq!(store.get_function("d").await.unwrap().unwrap(), deployed);
    let at =
        store.get_deployment("d", Resolved::Latest { revision: deployed.revision }).await.unwrap().unwrap();
    assert_eq!((at.spec, at.code_sha256), (bigger, b.clone()), "one revision holds both");
    let before = store.get_deployment("d", Resolved::Latest { revision: created.revision }).await.unwrap();
    assert_eq!(before.unwrap().code_sha256, a, "the revision before keeps its own code");

    let base = deployed.revision;
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let (store, code) = (store.clone(), if i % 2 == 0 { a.clone() } else { b.clone() });
            tokio::spawn(async move {
                let mut s = spec();
                s.memory_mb = 128 + i;
                store.put_function_with_code("d", s, &code, Some(base), NOW).await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(f) => winners.push(f),
            Err(StoreError::RevisionMismatch { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one deployer wins");
    assert_eq!(store.get_function("d").await.unwrap().unwrap(), winners[0], "its config and code, together");
}

pub async fn versions_routed_by_an_alias_are_not_deleted(store: Arc<dyn Store>) {
    deployable(&*store, "v").await;
    store.publish_version("v", None, None, NOW).await.unwrap();
    let mut changed = spec();
    changed.memory_mb = 256;
    store.put_function("v", changed, None, NOW).await.unwrap();
    store.publish_version("v", None, None, NOW).await.unwrap();
    let mut routing = Routing::single(1);
    routing.weights.insert(2, 0.25);
    let alias = store.put_alias("v", "live", routing, "", None, NOW).await.unwrap();
    for n in [1, 2] {
        let refused = store.delete_version("v", n, NOW).await;
        assert!(matches!(refused, Err(StoreError::Invalid(_))), "{refused:?}");
    }
    store.put_alias("v", "live", Routing::single(2), "", Some(alias.revision), NOW).await.unwrap();
    store.delete_version("v", 1, NOW).await.unwrap();
    assert!(store.get_version("v", 1).await.unwrap().is_none());
    assert!(store.get_version("v", 2).await.unwrap().is_some());
    let missing = store.delete_version("v", 1, NOW).await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })), "{missing:?}");
}

pub async fn finishing_writes_the_destination_invocation_it_owes(store: Arc<dyn Store>) {
    deployable(&*store, "dest").await;
    let mut ok = request("src", Mode::Async, None, r#"{"n":1}"#);
    ok.retry.on_success = Some("dest".into());
    ok.retry.on_failure = Some("dest".into());
    ok.retry.max_retries = 0;
    let mut failing = ok.clone();
    failing.id = InvocationId(uuid::Uuid::now_v7().to_string());
    let ok_id = enqueue(&*store, ok).await;
    let failing_id = enqueue(&*store, failing).await;
    let claimed = store.claim_queued(&worker("w"), 10, NOW + 5_000, NOW).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let mut done = completion("w", &ok_id, 1, AttemptOutcome::Succeeded);
    done.result = Some(Bytes::from_static(br#"{"answer":42}"#));
    store.complete(done.clone(), NOW + 1).await.unwrap();
    store.complete(completion("w", &failing_id, 1, AttemptOutcome::FunctionError), NOW + 1).await.unwrap();
    assert!(store.complete(done, NOW + 2).await.is_err(), "a repeated report is refused");
    let filter = InvocationFilter { limit: 10, ..InvocationFilter::default() };
    let delivered = store.list_invocations("dest", filter).await.unwrap();
    assert_eq!(delivered.len(), 2, "one record per finish, no more: {delivered:?}");
    let mut conditions = Vec::new();
    for d in &delivered {
        assert_eq!(d.request.mode, Mode::Async);
        assert_eq!(d.lifecycle.state, State::Queued);
        let record: serde_json::Value = serde_json::from_slice(&d.request.payload).unwrap();
        assert_eq!(record["version"], "1.0");
        assert_eq!(record["requestPayload"], serde_json::json!({"n": 1}));
        assert_eq!(record["requestContext"]["approximateInvokeCount"], 1);
        let condition = record["requestContext"]["condition"].as_str().unwrap().to_string();
        if condition == "Success" {
            assert_eq!(record["requestContext"]["requestId"], ok_id.0.as_str());
            assert_eq!(record["responsePayload"], serde_json::json!({"answer": 42}));
        } else {
            assert_eq!(record["requestContext"]["requestId"], failing_id.0.as_str());
            assert_eq!(record["responseContext"]["functionError"], "Unhandled");
            assert_eq!(record["responsePayload"]["errorMessage"], "boom");
        }
        conditions.push(condition);
    }
    conditions.sort();
    assert_eq!(conditions, ["RetriesExhausted", "Success"]);
}

pub async fn finishing_sends_to_queue_destinations_and_the_dead_letter_queue(store: Arc<dyn Store>) {
    let done_q = store.create_queue(queue_named("done", Default::default())).await.unwrap();
    let dead_q = store.create_queue(queue_named("dead", Default::default())).await.unwrap();
    let mut ok = request("src", Mode::Async, None, r#"{"n":1}"#);
    ok.retry.on_success = Some(gust_core::queue::queue_arn("done"));
    ok.retry.on_failure = Some(gust_core::queue::queue_arn("done"));
    ok.retry.dead_letter_queue = Some("dead".into());
    ok.retry.max_retries = 0;
    let mut failing = ok.clone();
    failing.id = InvocationId(uuid::Uuid::now_v7().to_string());
    failing.payload = Bytes::from_static(br#"{"n":2}"#);
    let ok_id = enqueue(&*store, ok).await;
    let failing_id = enqueue(&*store, failing).await;
    assert_eq!(store.claim_queued(&worker("w"), 10, NOW + 5_000, NOW).await.unwrap().len(), 2);
    let done = completion("w", &ok_id, 1, AttemptOutcome::Succeeded);
    store.complete(done.clone(), NOW + 1).await.unwrap();
    store.complete(completion("w", &failing_id, 1, AttemptOutcome::FunctionError), NOW + 1).await.unwrap();
    assert!(store.complete(done, NOW + 2).await.is_err(), "a repeated report is refused");
    let records = store.receive_messages(&done_q, 10, 1_000, NOW + 3).await.unwrap();
    let mut conditions: Vec<String> = records
        .iter()
        .map(|m| {
            let record: serde_json::Value = serde_json::from_str(&m.message.body).unwrap();
            record["requestContext"]["condition"].as_str().unwrap().to_string()
        })
        .collect();
    conditions.sort();
    assert_eq!(conditions, ["RetriesExhausted", "Success"], "one record per finish, no more");
    let dead = store.receive_messages(&dead_q, 10, 1_000, NOW + 3).await.unwrap();
    assert_eq!(dead.len(), 1, "only the failure goes to the dead-letter queue");
    assert_eq!(dead[0].message.body, r#"{"n":2}"#, "the event as it came");
    assert_eq!(dead[0].message.attributes["RequestID"].string_value.as_deref(), Some(failing_id.0.as_str()));
    assert_eq!(dead[0].message.attributes["ErrorMessage"].string_value.as_deref(), Some("boom"));
}

pub async fn versions_and_aliases_keep_their_own_descriptions(store: Arc<dyn Store>) {
    deployable(&*store, "d").await;
    let v1 = store.publish_version("d", None, Some("first"), NOW).await.unwrap();
    assert_eq!(v1.spec.description, "first");
    let same = store.publish_version("d", None, Some("other words"), NOW).await.unwrap();
    assert_eq!(same.number, 1, "a description alone makes no new version");
    assert_eq!(store.get_version("d", 1).await.unwrap().unwrap().spec.description, "first");
    let a = store.put_alias("d", "live", Routing::single(1), "half and half", Some(0), NOW).await.unwrap();
    assert_eq!(a.description, "half and half");
    assert_eq!(store.get_alias("d", "live").await.unwrap().unwrap().description, "half and half");
    store.put_alias("d", "live", Routing::single(1), "", Some(a.revision), NOW).await.unwrap();
    assert_eq!(store.list_aliases("d").await.unwrap()[0].description, "");
}

pub async fn completion_is_accepted_only_from_the_attempts_worker(store: Arc<dyn Store>) {
    let id = enqueue(&*store, request("own", Mode::Async, None, "{}")).await;
    let c = store.claim(&id, &worker("a"), NOW + 5_000, NOW).await.unwrap();
    let foreign = store.complete(completion("b", &id, c.epoch, AttemptOutcome::Succeeded), NOW + 1).await;
    assert!(matches!(foreign, Err(StoreError::Rejected(Rejected::NotOwner))), "{foreign:?}");
    let lc = state_of(&*store, &id).await;
    assert_eq!((lc.state.name(), lc.attempt_epoch), (StateName::Running, c.epoch), "it changed nothing");
    let renewed = store.renew_leases(&worker("b"), vec![(id.clone(), c.epoch)], NOW + 9_000, NOW + 1).await;
    assert_eq!(renewed.unwrap(), vec![Err(Rejected::NotOwner)], "nor renews another worker's lease");
    store.complete(completion("a", &id, c.epoch, AttemptOutcome::Succeeded), NOW + 2).await.unwrap();
    // After the owner's completion, a repeat is recognised only from the owner.
    let repeat = store.complete(completion("a", &id, c.epoch, AttemptOutcome::Succeeded), NOW + 3).await;
    assert!(matches!(repeat, Err(StoreError::Rejected(Rejected::AlreadyCompleted(1)))), "{repeat:?}");
    let late = store.complete(completion("b", &id, c.epoch, AttemptOutcome::FunctionError), NOW + 3).await;
    assert!(matches!(late, Err(StoreError::Rejected(Rejected::NotOwner))), "{late:?}");
    let rec = store.get_invocation(&id).await.unwrap().unwrap();
    assert_eq!((rec.lifecycle.state, rec.error), (State::Succeeded, None));
}

pub async fn assigned_deployments_are_the_workers_own(store: Arc<dyn Store>) {
    let mut pinned = request("one", Mode::Async, None, "1");
    pinned.resolved = Resolved::Version(3);
    let placed = enqueue(&*store, pinned).await;
    let running = enqueue(&*store, request("two", Mode::Async, None, "2")).await;
    let finished = enqueue(&*store, request("three", Mode::Async, None, "3")).await;
    store.place(vec![(placed.clone(), worker("w1"))], NOW).await.unwrap();
    store.claim(&running, &worker("w1"), NOW + 5_000, NOW).await.unwrap();
    let done = store.claim(&finished, &worker("w1"), NOW + 5_000, NOW).await.unwrap();
    store.complete(completion("w1", &finished, done.epoch, AttemptOutcome::Succeeded), NOW).await.unwrap();
    let mut mine = store.assigned_deployments(&worker("w1")).await.unwrap();
    mine.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        mine,
        vec![("one".to_string(), Resolved::Version(3)), ("two".to_string(), Resolved::Version(1))]
    );
    assert!(store.assigned_deployments(&worker("w2")).await.unwrap().is_empty(), "nothing is w2's");
}

fn credential(id: &str, secret: &str, origin: CredentialOrigin, created_at: i64) -> WorkerCredential {
    WorkerCredential {
        worker: worker(id),
        secret_sha256: crate::sha256_hex(secret.as_bytes()),
        origin,
        created_at,
    }
}

pub async fn worker_credentials_are_found_by_their_secret_hash(store: Arc<dyn Store>) {
    let w1 = credential("w1", "secret-1", CredentialOrigin::Enrolled, NOW);
    store.create_worker_credential(w1.clone()).await.unwrap();
    let again =
        store.create_worker_credential(credential("w1", "other", CredentialOrigin::Provisioned, NOW)).await;
    assert!(matches!(again, Err(StoreError::Invalid(_))), "one credential per worker: {again:?}");
    let found = store.find_worker_credential(&w1.secret_sha256).await.unwrap().expect("found by its hash");
    assert_eq!((found.credential, found.last_heartbeat), (w1.clone(), None), "the first one is kept");
    assert!(store.find_worker_credential(&crate::sha256_hex(b"other")).await.unwrap().is_none());
    store.put_worker(heartbeat("w1", 1, 0, NOW + 500)).await.unwrap();
    let found = store.find_worker_credential(&w1.secret_sha256).await.unwrap().unwrap();
    assert_eq!(found.last_heartbeat, Some(NOW + 500), "with its worker's last heartbeat");
    store
        .create_worker_credential(credential("w0", "secret-0", CredentialOrigin::Provisioned, NOW))
        .await
        .unwrap();
    let all = store.list_worker_credentials().await.unwrap();
    let ids: Vec<_> = all.iter().map(|f| f.credential.worker.0.as_str()).collect();
    assert_eq!(ids, vec!["w0", "w1"]);
    assert!(store.delete_worker_credential(&worker("w1")).await.unwrap());
    assert!(!store.delete_worker_credential(&worker("w1")).await.unwrap(), "deleted once");
    assert!(store.find_worker_credential(&w1.secret_sha256).await.unwrap().is_none(), "revoked");
}

pub async fn silent_enrolled_credentials_are_pruned(store: Arc<dyn Store>) {
    for (id, origin) in [
        ("quiet", CredentialOrigin::Enrolled),
        ("talking", CredentialOrigin::Enrolled),
        ("fresh", CredentialOrigin::Enrolled),
        ("kept", CredentialOrigin::Provisioned),
    ] {
        let created = if id == "fresh" { NOW + 10_000 } else { NOW };
        store.create_worker_credential(credential(id, id, origin, created)).await.unwrap();
    }
    store.put_worker(heartbeat("quiet", 1, 0, NOW + 1_000)).await.unwrap();
    store.put_worker(heartbeat("talking", 1, 0, NOW + 20_000)).await.unwrap();
    assert_eq!(store.prune_enrolled_credentials(NOW + 5_000).await.unwrap(), 1);
    let left: Vec<_> =
        store.list_worker_credentials().await.unwrap().into_iter().map(|f| f.credential.worker.0).collect();
    assert_eq!(left, vec!["fresh", "kept", "talking"], "silent and enrolled: pruned; the rest stay");
}

fn api_key(name: &str, id_seed: u32) -> gust_core::ApiKey {
    gust_core::ApiKey {
        name: name.to_string(),
        id: format!("K{:019}", id_seed),
        role: gust_core::Role::Deployer,
        functions: Some(gust_core::FunctionGlob::parse("app-*").unwrap()),
        bearer_sha256: format!("{:064x}", id_seed),
        sigv4_secret: format!("sigv4-secret-{id_seed}"),
        created_at: NOW,
        last_used_at: None,
    }
}

pub async fn api_keys_have_unique_names_and_revoking_frees_the_name(store: Arc<dyn Store>) {
    let ci = api_key("ci", 1);
    store.create_api_key(ci.clone()).await.unwrap();
    assert_eq!(store.get_api_key(&ci.id).await.unwrap(), Some(ci.clone()), "read back whole, secret opened");
    let mut reader = api_key("reader", 2);
    reader.role = gust_core::Role::Reader;
    reader.functions = None;
    store.create_api_key(reader.clone()).await.unwrap();
    let same_name = api_key("ci", 3);
    assert!(matches!(store.create_api_key(same_name.clone()).await, Err(StoreError::Invalid(_))));
    assert_eq!(store.get_api_key(&same_name.id).await.unwrap(), None, "a refused create writes nothing");
    assert_eq!(store.get_api_key("K0000000000000000099").await.unwrap(), None);
    let names: Vec<_> = store.list_api_keys().await.unwrap().into_iter().map(|k| k.name).collect();
    assert_eq!(names, ["ci", "reader"]);

    assert!(store.revoke_api_key("ci").await.unwrap());
    assert_eq!(store.get_api_key(&ci.id).await.unwrap(), None, "a revoked key is gone");
    assert!(!store.revoke_api_key("ci").await.unwrap(), "nothing left to revoke");
    store.create_api_key(same_name.clone()).await.unwrap();
    assert_eq!(store.get_api_key(&same_name.id).await.unwrap(), Some(same_name), "the name is free again");
    assert_eq!(store.get_api_key(&ci.id).await.unwrap(), None, "the old key stays revoked");
    assert_eq!(store.list_api_keys().await.unwrap().len(), 2);
}

pub async fn concurrent_creators_of_one_api_key_name_have_one_winner(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.create_api_key(api_key("race", 100 + i)).await })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => won += 1,
            Err(StoreError::Invalid(_)) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(won, 1, "exactly one creator wins a name");
    assert_eq!(store.list_api_keys().await.unwrap().len(), 1);
}

pub async fn api_key_last_use_only_moves_forward(store: Arc<dyn Store>) {
    let k = api_key("used", 7);
    store.create_api_key(k.clone()).await.unwrap();
    store.touch_api_key(&k.id, NOW + 100).await.unwrap();
    store.touch_api_key(&k.id, NOW + 50).await.unwrap();
    assert_eq!(store.get_api_key(&k.id).await.unwrap().unwrap().last_used_at, Some(NOW + 100));
    store.touch_api_key("K0000000000000000099", NOW).await.unwrap();
}

pub async fn retention_prunes_only_ended_records_oldest_first(store: Arc<dyn Store>) {
    // Ended records of 10, 20 and 30 payload bytes (plus a 3-byte result each), finished in
    // that order; and async work still waiting, which retention never touches.
    let ended = |finished_at: i64, payload_len: usize| gust_core::InvocationRecord {
        request: request("kept", Mode::Sync, None, &"x".repeat(payload_len)),
        lifecycle: Lifecycle {
            state: State::Succeeded,
            attempt_epoch: 1,
            function_errors: 0,
            lost_attempts: 0,
        },
        result: Some(Bytes::from_static(b"out")),
        error: None,
        log: String::new(),
        updated_at: finished_at,
        finished_at: Some(finished_at),
        report: None,
        history: String::new(),
    };
    let records = [ended(NOW + 20, 30), ended(NOW, 10), ended(NOW + 10, 20)];
    let ids: Vec<InvocationId> = records.iter().map(|r| r.request.id.clone()).collect();
    store.record_finished(records.to_vec()).await.unwrap();
    let waiting = enqueue(&*store, request("busy", Mode::Async, None, "{}")).await;
    enqueue(&*store, request("busy", Mode::Async, None, "{}")).await;
    assert_eq!(store.async_backlog().await.unwrap(), vec![("busy".to_string(), 2)]);
    assert_eq!(store.ended_invocations().await.unwrap(), Pruned { invocations: 3, bytes: 13 + 23 + 33 });

    // Finished before NOW + 15: the 10- and 20-byte records, and nothing else.
    let pruned = store.prune_invocations(NOW + 15, 100).await.unwrap();
    assert_eq!(pruned, Pruned { invocations: 2, bytes: 13 + 23 });
    assert!(store.get_invocation(&ids[1]).await.unwrap().is_none());
    assert!(store.get_invocation(&ids[2]).await.unwrap().is_none());
    assert!(store.get_invocation(&ids[0]).await.unwrap().is_some());
    assert_eq!(store.ended_invocations().await.unwrap(), Pruned { invocations: 1, bytes: 33 });

    // A budget pass takes the oldest first, a batch at a time; waiting work stays.
    assert_eq!(store.prune_invocations(i64::MAX, 1).await.unwrap(), Pruned { invocations: 1, bytes: 33 });
    assert_eq!(store.prune_invocations(i64::MAX, 100).await.unwrap(), Pruned::default());
    assert_eq!(state_of(&*store, &waiting).await.state, State::Queued);
    assert_eq!(store.async_backlog().await.unwrap(), vec![("busy".to_string(), 2)]);
}

/// Record `i` of a run of sync invocations that succeeded, finished `i` ms after [`NOW`], with
/// `i` payload bytes and a log of multi-byte characters; as the write-behind queue sends them.
pub fn ended_record(i: usize) -> gust_core::InvocationRecord {
    gust_core::InvocationRecord {
        request: request("wb", Mode::Sync, None, &"p".repeat(i)),
        lifecycle: Lifecycle {
            state: State::Succeeded,
            attempt_epoch: 1,
            function_errors: 0,
            lost_attempts: 0,
        },
        result: Some(Bytes::from(format!("out {i}"))),
        error: None,
        log: format!("line {i} \u{e9}\u{1f600}\n"),
        updated_at: NOW + i as i64,
        finished_at: Some(NOW + i as i64),
        report: None,
        history: String::new(),
    }
}

/// What an ended record holds in retention's terms: payload, result, error (as stored, JSON)
/// and log bytes.
pub fn held(rec: &gust_core::InvocationRecord) -> u64 {
    let error = rec.error.as_ref().map_or(0, |e| serde_json::to_string(e).unwrap().len());
    (rec.request.payload.len() + rec.result.as_ref().map_or(0, |r| r.len()) + error + rec.log.len()) as u64
}

/// What retention's byte budget reads (`ended_invocations`) is kept as the records change, not
/// counted by reading them all; it must stay exactly what the kept records hold through every
/// way a record ends (written behind its answer, completed, expired, failed by recovery) or
/// goes (pruned), a record written twice counted once, and any number of reads.
pub async fn ended_totals_stay_exact_across_every_way_records_end_and_go(store: Arc<dyn Store>) {
    let mut ended: Vec<InvocationId> = Vec::new();
    let expect = |store: Arc<dyn Store>, ids: Vec<InvocationId>| async move {
        let mut want = Pruned::default();
        for id in &ids {
            let rec = store.get_invocation(id).await.unwrap().expect("kept");
            assert!(rec.finished_at.is_some(), "{id} has ended");
            want.invocations += 1;
            want.bytes += held(&rec);
        }
        for _ in 0..2 {
            assert_eq!(store.ended_invocations().await.unwrap(), want, "every read answers the same");
        }
    };
    expect(store.clone(), ended.clone()).await;

    // Written behind, in chunks, one record twice and one already stored.
    let mut batch: Vec<_> = (0..75).map(ended_record).collect();
    store.record_finished(batch[..5].to_vec()).await.unwrap();
    batch.push(batch[7].clone());
    store.record_finished(batch.clone()).await.unwrap();
    ended.extend(batch[..75].iter().map(|r| r.request.id.clone()));
    expect(store.clone(), ended.clone()).await;

    // Ended by a completion, by expiry, and by recovery (a sync attempt whose worker was lost);
    // work still waiting or running is not counted.
    let done = enqueue(&*store, request("c", Mode::Async, None, "{\"k\": 1}")).await;
    let claimed = store.claim(&done, &worker("a"), NOW + 5_000, NOW).await.unwrap();
    store.complete(completion("a", &done, claimed.epoch, AttemptOutcome::Succeeded), NOW + 1).await.unwrap();
    let old = enqueue(&*store, request("c", Mode::Async, None, "{}")).await;
    let lost = enqueue(&*store, request("c", Mode::Sync, None, "{}")).await;
    store.claim(&lost, &worker("a"), NOW + 5_000, NOW).await.unwrap();
    let running = enqueue(&*store, request("c", Mode::Async, None, "{}")).await;
    store.claim(&running, &worker("a"), NOW + 10_000_000, NOW).await.unwrap();
    enqueue(&*store, request("c", Mode::Async, None, "{}")).await;
    let late = NOW + 3_600_001;
    store.recover(late).await.unwrap();
    // The waiting one expired too: it is as old.
    let states = store.count_by_state().await.unwrap();
    let expired = states.iter().find(|(s, _)| *s == StateName::Expired).map_or(0, |(_, n)| *n);
    assert_eq!(expired, 2, "{states:?}");
    assert_eq!(state_of(&*store, &old).await.state, State::Expired);
    assert_eq!(state_of(&*store, &lost).await.state.name(), StateName::Failed);
    assert_eq!(state_of(&*store, &running).await.state.name(), StateName::Running);
    let filter = InvocationFilter { state: Some(StateName::Expired), limit: 10, ..Default::default() };
    let expired_ids = store.list_invocations("c", filter).await.unwrap();
    ended.extend([done, lost]);
    ended.extend(expired_ids.into_iter().map(|r| r.request.id));
    expect(store.clone(), ended.clone()).await;

    // Pruned by age, then by budget: what goes is taken off, to the last record.
    let pruned = store.prune_invocations(NOW + 30, 10).await.unwrap();
    assert_eq!(pruned.invocations, 10);
    let mut kept = Vec::new();
    for id in &ended {
        if store.get_invocation(id).await.unwrap().is_some() {
            kept.push(id.clone());
        }
    }
    assert_eq!(kept.len(), ended.len() - 10);
    expect(store.clone(), kept).await;
    while store.prune_invocations(i64::MAX, 7).await.unwrap().invocations > 0 {}
    expect(store.clone(), Vec::new()).await;
    assert_eq!(state_of(&*store, &running).await.state.name(), StateName::Running, "running work stays");
}

/// Servers sharing a store write, prune and read (fold) the ended totals at once: no count is
/// lost or taken twice.
pub async fn ended_totals_stay_exact_under_concurrent_writes_prunes_and_reads(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for writer in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for batch in 0..8 {
                let records: Vec<_> = (0..10).map(|i| ended_record(writer * 100 + batch * 10 + i)).collect();
                ids.extend(records.iter().map(|r| r.request.id.clone()));
                store.record_finished(records).await.unwrap();
            }
            ids
        }));
    }
    for _ in 0..2 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                store.ended_invocations().await.unwrap();
                store.prune_invocations(NOW + 150, 3).await.unwrap();
                tokio::task::yield_now().await;
            }
            Vec::new()
        }));
    }
    let mut written = Vec::new();
    for task in tasks {
        written.extend(task.await.unwrap());
    }
    let mut want = Pruned::default();
    for id in &written {
        if let Some(rec) = store.get_invocation(id).await.unwrap() {
            want.invocations += 1;
            want.bytes += held(&rec);
        }
    }
    assert!(want.invocations < 320, "some were pruned meanwhile");
    assert_eq!(store.ended_invocations().await.unwrap(), want);
}

/// The wall clock in ms: artifacts are stamped with it when stored (the embedded store uses
/// the file's modification time).
fn wall_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

pub async fn code_collection_frees_only_unreferenced_old_code(store: Arc<dyn Store>) {
    let put = |bytes: &'static str| {
        let store = store.clone();
        async move { store.put_artifact(Bytes::from_static(bytes.as_bytes())).await.unwrap() }
    };
    // f: code a (published as version 1), b (a queued invocation resolved to that revision),
    // c (superseded, nothing needs it), d (current). e was uploaded and never used. g's code
    // goes with g.
    let a = put("code a").await;
    store.create_function("f", spec(), &a, NOW).await.unwrap();
    assert_eq!(store.publish_version("f", None, None, NOW).await.unwrap().number, 1);
    let b = put("code b").await;
    let on_b = store.set_function_code("f", &b, None, NOW).await.unwrap().revision;
    let mut queued = request("f", Mode::Async, None, "{}");
    queued.resolved = Resolved::Latest { revision: on_b };
    let queued = enqueue(&*store, queued).await;
    let c = put("code c").await;
    let on_c = store.set_function_code("f", &c, None, NOW).await.unwrap().revision;
    let d = put("code d").await;
    let current = store.set_function_code("f", &d, None, NOW).await.unwrap().revision;
    let e = put("code e").await;
    let g = put("code of g").await;
    store.create_function("g", spec(), &g, NOW).await.unwrap();
    store.delete_function("g", None, NOW).await.unwrap();
    let mut referenced = store.referenced_code().await.unwrap();
    referenced.sort();
    let mut expected = vec![a.clone(), b.clone(), c.clone(), d.clone()];
    expected.sort();
    assert_eq!(referenced, expected, "before collection, every revision still names its code");

    // Within the grace (stored after the cutoff), no artifact goes; superseded revisions that
    // nothing runs do (they were written at NOW, long before the cutoff).
    let fresh = store.collect_code(wall_now() - 3_600_000, 100).await.unwrap();
    assert!(fresh.artifacts.is_empty(), "{fresh:?}");
    assert_eq!(fresh.revisions, 2, "the create's and c's revisions; b's is needed by queued work");
    assert!(store.get_deployment("f", Resolved::Latest { revision: on_c }).await.unwrap().is_none());
    for sha in [&a, &b, &c, &d, &e, &g] {
        store.get_artifact(sha).await.unwrap();
    }

    // Past the grace: exactly the unreferenced ones go.
    let collected = store.collect_code(wall_now() + 1_000, 100).await.unwrap();
    let mut gone = vec![c.clone(), e.clone(), g.clone()];
    gone.sort();
    assert_eq!(collected.artifacts, gone);
    assert_eq!(collected.bytes, ("code c".len() + "code e".len() + "code of g".len()) as u64);
    for sha in &gone {
        assert!(
            matches!(store.get_artifact(sha).await, Err(StoreError::NotFound { .. })),
            "{sha} stays deleted"
        );
    }
    assert_eq!(store.get_artifact(&a).await.unwrap(), Bytes::from_static(b"code a"), "version 1's code");
    assert_eq!(store.get_artifact(&d).await.unwrap(), Bytes::from_static(b"code d"), "$LATEST's code");
    let pending = store.get_deployment("f", Resolved::Latest { revision: on_b }).await.unwrap();
    assert_eq!(pending.expect("the queued invocation can still run").code_sha256, b);
    store.get_artifact(&b).await.unwrap();
    assert_eq!(
        store.get_deployment("f", Resolved::Latest { revision: current }).await.unwrap().unwrap().code_sha256,
        d
    );

    // Idempotent: a second pass finds nothing.
    assert_eq!(store.collect_code(wall_now() + 1_000, 100).await.unwrap(), crate::CollectedCode::default());
    // Gone code cannot be pointed at; stored again, it can.
    let stale = store.set_function_code("f", &c, None, NOW).await;
    assert!(matches!(stale, Err(StoreError::NotFound { .. })), "{stale:?}");
    let created = store.create_function("h", spec(), &e, NOW).await;
    assert!(matches!(created, Err(StoreError::NotFound { .. })), "{created:?}");
    assert!(store.get_function("h").await.unwrap().is_none());
    assert_eq!(put("code c").await, c);
    store.set_function_code("f", &c, None, NOW).await.unwrap();
    store.set_function_code("f", &d, None, NOW).await.unwrap();

    // Once the queued invocation has ended, its revision and code go too.
    let claimed = store.claim(&queued, &worker("w"), NOW + 5_000, NOW).await.unwrap();
    store.complete(completion("w", &queued, claimed.epoch, AttemptOutcome::Succeeded), NOW).await.unwrap();
    let after = store.collect_code(wall_now() + 1_000, 100).await.unwrap();
    let mut gone = vec![b.clone(), c.clone()];
    gone.sort();
    assert_eq!(after.artifacts, gone);
    assert!(store.get_deployment("f", Resolved::Latest { revision: on_b }).await.unwrap().is_none());

    // Deleting the function frees the rest, its published version's code included.
    store.delete_function("f", None, NOW).await.unwrap();
    let last = store.collect_code(wall_now() + 1_000, 100).await.unwrap();
    let mut gone = vec![a, d];
    gone.sort();
    assert_eq!(last.artifacts, gone);
    assert!(store.referenced_code().await.unwrap().is_empty());
}

pub async fn code_stored_again_is_fresh_again(store: Arc<dyn Store>) {
    let code = Bytes::from_static(b"uploaded twice");
    let sha = store.put_artifact(code.clone()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let between = wall_now();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // The second upload (the first half of a deploy) starts the grace over.
    assert_eq!(store.put_artifact(code.clone()).await.unwrap(), sha);
    let kept = store.collect_code(between, 100).await.unwrap();
    assert!(kept.artifacts.is_empty(), "{kept:?}");
    store.create_function("f", spec(), &sha, NOW).await.unwrap();
    store.delete_function("f", None, NOW).await.unwrap();
    let gone = store.collect_code(wall_now() + 1_000, 100).await.unwrap();
    assert_eq!(gone.artifacts, vec![sha.clone()]);
    // A limit bounds one pass.
    for i in 0..3 {
        store.put_artifact(Bytes::from(format!("orphan {i}"))).await.unwrap();
    }
    assert_eq!(store.collect_code(wall_now() + 1_000, 2).await.unwrap().artifacts.len(), 2);
    assert_eq!(store.collect_code(wall_now() + 1_000, 2).await.unwrap().artifacts.len(), 1);
}

/// Deploys (upload, then point `$LATEST` at it, then maybe publish) race collections that have no
/// grace at all: every upload is garbage the moment it is stored, so a deploy either commits
/// its reference first or is refused with `NotFound`; never does a function or version end up
/// naming code that is gone.
pub async fn code_collection_racing_deploys_never_frees_referenced_code(store: Arc<dyn Store>) {
    const DEPLOYERS: usize = 4;
    const DEPLOYS: usize = 25;
    for d in 0..DEPLOYERS {
        let sha = store.put_artifact(Bytes::from(format!("first code of d{d}"))).await.unwrap();
        store.create_function(&format!("d{d}"), spec(), &sha, NOW).await.unwrap();
    }
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let mut freed = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                freed += store.collect_code(wall_now() + 60_000, 1_000).await.unwrap().artifacts.len();
                tokio::task::yield_now().await;
            }
            freed + store.collect_code(wall_now() + 60_000, 1_000).await.unwrap().artifacts.len()
        })
    };
    let mut deployers = Vec::new();
    for d in 0..DEPLOYERS {
        let store = store.clone();
        deployers.push(tokio::spawn(async move {
            let (name, mut refused) = (format!("d{d}"), 0);
            for i in 0..DEPLOYS {
                let sha = store.put_artifact(Bytes::from(format!("code {i} of {name}"))).await.unwrap();
                match store.set_function_code(&name, &sha, None, NOW).await {
                    // Every other deploy is published; the rest become garbage when superseded.
                    Ok(_) if i % 2 == 0 => {
                        store.publish_version(&name, None, None, NOW).await.unwrap();
                    }
                    Ok(_) => {}
                    Err(StoreError::NotFound { .. }) => refused += 1,
                    Err(e) => panic!("deploy failed: {e}"),
                }
            }
            refused
        }));
    }
    for d in deployers {
        d.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(collector.await.unwrap() > 0, "the collector ran and freed superseded code");
    for d in 0..DEPLOYERS {
        let name = format!("d{d}");
        let f = store.get_function(&name).await.unwrap().unwrap();
        let current = f.code_sha256.unwrap();
        store.get_artifact(&current).await.unwrap_or_else(|e| panic!("{name}'s $LATEST code is gone: {e}"));
        for v in store.list_versions(&name, None, 1_000).await.unwrap() {
            store
                .get_artifact(&v.code_sha256)
                .await
                .unwrap_or_else(|e| panic!("{name}:{} code is gone: {e}", v.number));
        }
    }
    // What the collections left is referenced, all of it.
    for sha in store.referenced_code().await.unwrap() {
        store.get_artifact(&sha).await.unwrap();
    }
}

/// Both backends record the accepted completion (`completed_epoch`, `completed_by`) in the
/// guarded write that accepts it, and only then: an invocation that ended without a completion
/// (lost, cancelled) refuses a late report as ended, never as "already completed".
pub async fn the_completion_that_ended_an_invocation_is_recorded_with_it(store: Arc<dyn Store>) {
    // Epoch 1 fails and waits for a retry; epoch 2 succeeds.
    let id = enqueue(&*store, request("ce", Mode::Async, None, "{}")).await;
    store.claim(&id, &worker("a"), NOW + 5_000, NOW).await.unwrap();
    let waiting =
        store.complete(completion("a", &id, 1, AttemptOutcome::FunctionError), NOW + 1).await.unwrap();
    assert_eq!(waiting.state.name(), StateName::RetryWait);
    assert_eq!(store.recover(NOW + 60_000).await.unwrap().retries_due, 1);
    store.claim(&id, &worker("b"), NOW + 65_000, NOW + 60_000).await.unwrap();
    store.complete(completion("b", &id, 2, AttemptOutcome::Succeeded), NOW + 60_001).await.unwrap();
    let repeat = store.complete(completion("b", &id, 2, AttemptOutcome::Succeeded), NOW + 60_002).await;
    assert!(matches!(repeat, Err(StoreError::Rejected(Rejected::AlreadyCompleted(2)))), "{repeat:?}");
    let other = store.complete(completion("a", &id, 2, AttemptOutcome::Succeeded), NOW + 60_002).await;
    assert!(matches!(other, Err(StoreError::Rejected(Rejected::NotOwner))), "{other:?}");
    let older = store.complete(completion("a", &id, 1, AttemptOutcome::Succeeded), NOW + 60_002).await;
    assert!(
        matches!(older, Err(StoreError::Rejected(Rejected::Fenced { current: 2, given: 1 }))),
        "{older:?}"
    );

    // A sync attempt lost with its worker: ended, but never completed.
    let id = enqueue(&*store, request("ce", Mode::Sync, None, "{}")).await;
    store.claim(&id, &worker("a"), NOW + 5_000, NOW).await.unwrap();
    assert_eq!(store.recover(NOW + 5_000).await.unwrap().lost, 1);
    let late = store.complete(completion("a", &id, 1, AttemptOutcome::Succeeded), NOW + 5_001).await;
    assert!(matches!(late, Err(StoreError::Rejected(Rejected::Terminal(StateName::Failed)))), "{late:?}");
}

/// Pointing a function at 50 MB of code (the upload limit) must not stall async ingest: the
/// artifact is hashed before the store's write (SQLite: never inside the writer's group
/// transaction), so an insert waits at most for the group commit in progress, never for the
/// bytes. Measured: the slowest insert while the code is set, against how long setting it takes.
pub async fn a_large_code_upload_does_not_hold_up_ingest(store: Arc<dyn Store>) {
    use std::time::{Duration, Instant};
    deployable(&*store, "big").await;
    let ingest = |n: usize| NewInvocation {
        request: request("big", Mode::Async, None, &format!("{{\"n\": {n}}}")),
        lifecycle: Lifecycle::queued(),
    };
    let mut code = vec![0x5a_u8; 50 << 20];
    code[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    // What one insert costs alone (its group commit), at worst of a few.
    let mut commit = Duration::ZERO;
    for n in 0..10 {
        let started = Instant::now();
        store.insert_invocations(vec![ingest(n)]).await.unwrap();
        commit = commit.max(started.elapsed());
    }
    // What hashing the code costs here: the least an insert queued behind a hash would wait.
    let hash_started = Instant::now();
    crate::sha256_hex(&code);
    let hashing = hash_started.elapsed();
    let upload_started = Instant::now();
    let sha = store.put_artifact(Bytes::from(code)).await.unwrap();
    let upload = upload_started.elapsed();
    let set_code = {
        let store = store.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            store.set_function_code("big", &sha, None, NOW).await.unwrap();
            started.elapsed()
        })
    };
    let (mut slowest, mut inserted) = (Duration::ZERO, 10);
    while !set_code.is_finished() {
        let started = Instant::now();
        let r = store.insert_invocations(vec![ingest(inserted)]).await.unwrap();
        assert!(matches!(r.as_slice(), [Ok(Inserted::Created)]), "{r:?}");
        slowest = slowest.max(started.elapsed());
        inserted += 1;
    }
    let setting = set_code.await.unwrap();
    eprintln!(
        "50 MB: hashed in {hashing:?}, stored in {upload:?}, set in {setting:?}; a commit alone {commit:?}; \
         {} inserts meanwhile, the slowest {slowest:?}",
        inserted - 10
    );
    // Queued behind a hash in the writer, an insert would wait for reading and hashing the
    // bytes and then its own commit.
    assert!(
        slowest < hashing + commit,
        "an insert waited {slowest:?}: more than hashing the code ({hashing:?}) and a commit ({commit:?})"
    );
    assert!(slowest < Duration::from_secs(1), "an insert waited {slowest:?}");
}

fn url(id: &str, function: &str, qualifier: &str) -> gust_core::FunctionUrl {
    gust_core::FunctionUrl {
        url_id: format!("{id:a<32}"),
        function: function.to_string(),
        qualifier: qualifier.to_string(),
        config: gust_core::UrlConfig::default(),
        created_at: NOW,
        updated_at: NOW,
    }
}

pub async fn function_urls_are_one_per_target_and_go_with_their_alias_and_function(store: Arc<dyn Store>) {
    use crate::ops::UrlLookup;
    let by_id = |id: &str| UrlLookup::Id(format!("{id:a<32}"));
    let missing = store.create_url(url("x", "nope", "$LATEST")).await;
    assert!(matches!(missing, Err(StoreError::NotFound { kind: crate::Kind::Function, .. })), "{missing:?}");
    deployable(&*store, "a").await;
    let missing_alias = store.create_url(url("x", "a", "live")).await;
    assert!(matches!(missing_alias, Err(StoreError::NotFound { kind: crate::Kind::Alias, .. })));
    assert!(store.urls(by_id("x")).await.unwrap().is_empty(), "nothing half-written");

    // Concurrent creators of one target's URL: exactly one wins, the others are refused.
    let before = store.snapshot_version().await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.create_url(url(&format!("c{i}"), "a", "$LATEST")).await })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(u) => winners.push(u),
            Err(e) => assert!(matches!(e, StoreError::Invalid(_)), "{e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "one URL per target");
    let latest = winners.pop().unwrap();
    assert!(store.snapshot_version().await.unwrap() > before, "other servers see the new URL");
    assert_eq!(store.urls(UrlLookup::Id(latest.url_id.clone())).await.unwrap(), vec![latest.clone()]);

    store.publish_version("a", None, None, NOW).await.unwrap();
    store.put_alias("a", "live", Routing::single(1), "", None, NOW).await.unwrap();
    let live = store.create_url(url("live", "a", "live")).await.unwrap();
    let listed = store.urls(UrlLookup::Function("a".into())).await.unwrap();
    assert_eq!(listed.iter().map(|u| u.qualifier.as_str()).collect::<Vec<_>>(), ["$LATEST", "live"]);

    let mut config = gust_core::UrlConfig { auth_type: gust_core::AuthType::Iam, ..Default::default() };
    config.cors = Some(gust_core::Cors { allow_origins: vec!["*".into()], ..Default::default() });
    let updated = store.update_url("a", "live", config.clone(), NOW + 5).await.unwrap();
    assert_eq!(
        (updated.config.clone(), updated.updated_at, updated.url_id.clone()),
        (config, NOW + 5, live.url_id.clone())
    );
    assert_eq!(store.urls(UrlLookup::Id(live.url_id.clone())).await.unwrap(), vec![updated]);
    let absent = store.update_url("a", "other", gust_core::UrlConfig::default(), NOW).await;
    assert!(matches!(absent, Err(StoreError::NotFound { .. })), "{absent:?}");

    // An alias's URL goes with the alias; a function's URLs go with the function.
    store.delete_alias("a", "live", None, NOW).await.unwrap();
    assert!(store.urls(UrlLookup::Id(live.url_id)).await.unwrap().is_empty());
    store.delete_url("a", "$LATEST").await.unwrap();
    assert!(matches!(store.delete_url("a", "$LATEST").await, Err(StoreError::NotFound { .. })));
    let again = store.create_url(url("again", "a", "$LATEST")).await.unwrap();
    store.delete_function("a", None, NOW).await.unwrap();
    assert!(store.urls(UrlLookup::Id(again.url_id)).await.unwrap().is_empty());
    assert!(store.urls(UrlLookup::Function("a".into())).await.unwrap().is_empty());
}

// ---- queues ------------------------------------------------------------------------------------

fn queue_named(name: &str, attributes: gust_core::queue::QueueAttributes) -> gust_core::queue::Queue {
    gust_core::queue::Queue {
        name: name.to_string(),
        id: uuid::Uuid::new_v4().simple().to_string(),
        attributes,
        created_at: NOW,
        updated_at: NOW,
    }
}

fn messages(n: usize, visible_at: i64) -> Vec<gust_core::queue::NewMessage> {
    (0..n)
        .map(|i| gust_core::queue::NewMessage {
            id: uuid::Uuid::new_v4().to_string(),
            body: format!("message {i}"),
            attributes: Default::default(),
            visible_at,
            fifo: None,
        })
        .collect()
}

const HOUR: i64 = 3_600_000;

pub async fn concurrent_receivers_never_share_a_message_within_its_visibility(store: Arc<dyn Store>) {
    let queue = store.create_queue(queue_named("race", Default::default())).await.unwrap();
    store.send_messages(&queue.id, messages(300, NOW), NOW, NOW + HOUR).await.unwrap();
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let (store, queue) = (store.clone(), queue.clone());
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = store.receive_messages(&queue, 7, 30_000, NOW + 1).await.unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|r| r.message.id));
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for t in tasks {
        for id in t.await.unwrap() {
            assert!(seen.insert(id), "a message was handed to two receivers within its visibility timeout");
        }
    }
    assert_eq!(seen.len(), 300, "every message was received");
}

pub async fn a_receipt_works_only_until_its_message_is_received_again(store: Arc<dyn Store>) {
    let queue = store.create_queue(queue_named("receipts", Default::default())).await.unwrap();
    store.send_messages(&queue.id, messages(1, NOW), NOW, NOW + HOUR).await.unwrap();
    let first = store.receive_messages(&queue, 1, 1_000, NOW).await.unwrap().remove(0);
    // Visible again after a second: received again, with a new receipt.
    let second = store.receive_messages(&queue, 1, 1_000, NOW + 1_001).await.unwrap().remove(0);
    assert_eq!(second.message.id, first.message.id);
    assert_eq!(second.message.receive_count, 2);
    assert_eq!(second.message.first_received_at, Some(NOW));
    assert_ne!(second.receipt, first.receipt);
    let id = &first.message.id;
    assert!(!store.change_visibility(&queue.id, id, &first.receipt, NOW, NOW + 1_002).await.unwrap());
    assert!(
        !store.delete_message(&queue.id, id, &first.receipt).await.unwrap(),
        "an old receipt deletes nothing"
    );
    assert!(store.delete_message(&queue.id, id, &second.receipt).await.unwrap());
    assert!(store.receive_messages(&queue, 1, 1_000, NOW + HOUR - 1).await.unwrap().is_empty());
}

pub async fn hidden_messages_come_back_after_their_visibility_timeout(store: Arc<dyn Store>) {
    let queue = store.create_queue(queue_named("visibility", Default::default())).await.unwrap();
    store.send_messages(&queue.id, messages(2, NOW), NOW, NOW + HOUR).await.unwrap();
    store.send_messages(&queue.id, messages(1, NOW + 5_000), NOW, NOW + HOUR).await.unwrap();
    let got = store.receive_messages(&queue, 10, 10_000, NOW).await.unwrap();
    assert_eq!(got.len(), 2, "the delayed message is not visible yet");
    let counts = store.queue_counts(&queue.id, NOW).await.unwrap();
    assert_eq!((counts.visible, counts.in_flight, counts.delayed), (0, 2, 1));
    assert_eq!(store.receive_messages(&queue, 10, 10_000, NOW + 5_000).await.unwrap().len(), 1);
    assert!(store.receive_messages(&queue, 10, 10_000, NOW + 9_999).await.unwrap().is_empty());
    // A visibility change makes one visible at once; the rest return when their time is up.
    let back = store.receive_messages(&queue, 10, 10_000, NOW + 10_000).await.unwrap();
    assert_eq!(back.len(), 2);
    let r = &back[0];
    assert!(store
        .change_visibility(&queue.id, &r.message.id, &r.receipt, NOW + 10_001, NOW + 10_001)
        .await
        .unwrap());
    let again = store.receive_messages(&queue, 10, 10_000, NOW + 10_001).await.unwrap();
    assert_eq!(again.iter().map(|r| &r.message.id).collect::<Vec<_>>(), vec![&r.message.id]);
    // Past its retention a message is gone, and the expiry sweep deletes it.
    assert!(!store.any_visible(&queue.id, NOW).await.unwrap());
    assert!(store.any_visible(&queue.id, NOW + 20_001).await.unwrap());
    assert_eq!(store.expire_messages(NOW + HOUR - 1, 100).await.unwrap(), 0);
    assert_eq!(store.expire_messages(NOW + HOUR, 2).await.unwrap(), 2, "a batch at most");
    assert_eq!(store.expire_messages(NOW + HOUR, 100).await.unwrap(), 1);
    assert!(store.receive_messages(&queue, 10, 10_000, NOW + HOUR).await.unwrap().is_empty());
    assert_eq!(
        store.queue_counts(&queue.id, NOW + HOUR).await.unwrap(),
        gust_core::queue::QueueCounts::default()
    );
}

pub async fn messages_received_too_often_move_to_the_dead_letter_queue(store: Arc<dyn Store>) {
    let dlq = store.create_queue(queue_named("dead", Default::default())).await.unwrap();
    let attributes = gust_core::queue::QueueAttributes {
        redrive_policy: Some(gust_core::queue::RedrivePolicy {
            dead_letter_queue: "dead".into(),
            max_receive_count: 2,
        }),
        ..Default::default()
    };
    let src = store.create_queue(queue_named("source", attributes)).await.unwrap();
    store.send_messages(&src.id, messages(3, NOW), NOW, NOW + HOUR).await.unwrap();
    for round in 0..2 {
        let got = store.receive_messages(&src, 10, 1_000, NOW + round * 1_000).await.unwrap();
        assert_eq!(got.len(), 3, "round {round}");
    }
    assert!(store.receive_messages(&src, 10, 1_000, NOW + 2_000).await.unwrap().is_empty());
    let moved = store.receive_messages(&dlq, 10, 1_000, NOW + 2_000).await.unwrap();
    assert_eq!(moved.len(), 3, "every message went to the dead-letter queue, once");
    assert!(moved.iter().all(|r| r.message.receive_count == 1));
    // A redrive policy must name another existing queue.
    let orphan = gust_core::queue::QueueAttributes {
        redrive_policy: Some(gust_core::queue::RedrivePolicy {
            dead_letter_queue: "missing".into(),
            max_receive_count: 1,
        }),
        ..Default::default()
    };
    assert!(matches!(store.create_queue(queue_named("orphan", orphan)).await, Err(StoreError::Invalid(_))));
}

pub async fn queues_are_created_once_and_go_with_their_messages(store: Arc<dyn Store>) {
    let made: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(
                async move { store.create_queue(queue_named("once", Default::default())).await.unwrap() },
            )
        })
        .collect();
    let mut ids = HashSet::new();
    for t in made {
        ids.insert(t.await.unwrap().id);
    }
    assert_eq!(ids.len(), 1, "racing creators of one name got one queue");
    let queue = store.get_queue("once").await.unwrap().unwrap();
    let other = gust_core::queue::QueueAttributes { visibility_timeout: 5, ..Default::default() };
    assert!(matches!(
        store.create_queue(queue_named("once", other.clone())).await,
        Err(StoreError::Invalid(_))
    ));
    store.set_queue_attributes("once", other.clone(), NOW + 1).await.unwrap();
    assert_eq!(store.get_queue("once").await.unwrap().unwrap().attributes, other);
    store.send_messages(&queue.id, messages(4, NOW), NOW, NOW + HOUR).await.unwrap();
    assert_eq!(store.list_queues("on", None, 10).await.unwrap().len(), 1);
    assert!(store.list_queues("onf", None, 10).await.unwrap().is_empty());
    store.delete_queue("once").await.unwrap();
    assert!(store.get_queue("once").await.unwrap().is_none());
    // A queue made again under the name is a new one: nothing of the old reaches it.
    let again = store.create_queue(queue_named("once", Default::default())).await.unwrap();
    assert_ne!(again.id, queue.id);
    assert!(store.receive_messages(&again, 10, 1_000, NOW).await.unwrap().is_empty());
    assert_eq!(store.queue_counts(&queue.id, NOW).await.unwrap(), gust_core::queue::QueueCounts::default());
    assert!(matches!(store.delete_queue("never").await, Err(StoreError::NotFound { .. })));
}

// ---- schedules -------------------------------------------------------------------------------

const MINUTE: i64 = 60_000;

fn schedule_named(group: &str, name: &str, expression: &str) -> gust_core::schedule::Schedule {
    gust_core::schedule::Schedule {
        group: group.to_string(),
        name: name.to_string(),
        expression: expression.to_string(),
        timezone: "UTC".into(),
        start: None,
        end: None,
        enabled: true,
        flexible_window_minutes: None,
        target: gust_core::schedule::Target {
            arn: gust_core::lambda::function_arn("f", None),
            role_arn: "arn:aws:iam::000000000000:role/r".into(),
            input: None,
            retry_policy: Default::default(),
            dead_letter_arn: None,
            message_group_id: None,
        },
        description: String::new(),
        delete_after_completion: false,
        kms_key_arn: None,
        created_at: NOW,
        updated_at: NOW,
    }
}

pub async fn concurrent_schedule_claimers_fire_each_scheduled_time_once(store: Arc<dyn Store>) {
    for i in 0..5 {
        store
            .put_schedule(schedule_named("default", &format!("s{i}"), "rate(1 minute)"), true, NOW, u64::MAX)
            .await
            .unwrap();
    }
    // Eight servers claim as time goes on, each at its own moments, all at once.
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut written = 0;
                for step in 0..20 {
                    let now = NOW + step * 30_000 + t * 1_000;
                    written += store.claim_due_schedules(now, 100).await.unwrap();
                }
                written
            })
        })
        .collect();
    let mut written = 0;
    for t in tasks {
        written += t.await.unwrap();
    }
    // By NOW + 9.5 min + 7 s, each schedule was due at NOW + 1..=9 minutes.
    assert_eq!(written, 5 * 9, "each scheduled time of each schedule was written once");
    for i in 0..5 {
        let history = store.schedule_history("default", &format!("s{i}"), None, 100).await.unwrap();
        let times: Vec<i64> = history.iter().map(|f| f.scheduled_at).collect();
        assert_eq!(times, (1..=9).rev().map(|k| NOW + k * MINUTE).collect::<Vec<_>>());
    }
    // Takers race for the firings: each is taken by one of them.
    let takers: Vec<_> = (0..6)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..10 {
                    for (f, _) in store.take_due_firings(NOW + HOUR, 30_000, 7).await.unwrap() {
                        got.push((f.schedule, f.scheduled_at));
                    }
                }
                got
            })
        })
        .collect();
    let mut taken = Vec::new();
    for t in takers {
        taken.extend(t.await.unwrap());
    }
    let distinct: HashSet<_> = taken.iter().cloned().collect();
    assert_eq!((taken.len(), distinct.len()), (45, 45), "every firing taken once, none twice");
}

pub async fn firings_missed_in_downtime_are_one_row_and_recent_ones_fire(store: Arc<dyn Store>) {
    let mut s = schedule_named("default", "down", "rate(1 minute)");
    s.target.retry_policy.maximum_event_age_seconds = 600;
    store.put_schedule(s, true, NOW, u64::MAX).await.unwrap();
    // Nobody claimed for two hours.
    let now = NOW + 2 * HOUR + 30_000;
    assert_eq!(store.claim_due_schedules(now, 10).await.unwrap(), 10, "the last ten minutes fire");
    assert_eq!(store.claim_due_schedules(now, 10).await.unwrap(), 0, "once");
    let history = store.schedule_history("default", "down", None, 100).await.unwrap();
    assert_eq!(history.len(), 11);
    let missed = history.last().unwrap();
    assert_eq!(missed.state, gust_core::schedule::FiringState::Missed);
    assert_eq!((missed.scheduled_at, missed.missed), (NOW + MINUTE, Some((110, NOW + 110 * MINUTE))));
    let next = store.get_schedule("default", "down").await.unwrap().unwrap().next_at;
    assert_eq!(next, Some(NOW + 121 * MINUTE));
    // Disabled, it is never due; enabled again, it counts from then (no firings for the gap).
    let mut s = store.get_schedule("default", "down").await.unwrap().unwrap().schedule;
    s.enabled = false;
    store.put_schedule(s.clone(), false, now, u64::MAX).await.unwrap();
    assert_eq!(store.claim_due_schedules(now + 10 * HOUR, 10).await.unwrap(), 0);
    s.enabled = true;
    store.put_schedule(s, false, now + 10 * HOUR, u64::MAX).await.unwrap();
    assert_eq!(store.claim_due_schedules(now + 10 * HOUR + 2 * MINUTE, 10).await.unwrap(), 2);
}

pub async fn firing_deliveries_are_leased_and_settled_once(store: Arc<dyn Store>) {
    use crate::schedules::string_attribute;
    use crate::Delivery;
    use gust_core::schedule::FiringState;
    let dlq = store.create_queue(queue_named("dlq", Default::default())).await.unwrap();
    let jobs = store.create_queue(queue_named("jobs", Default::default())).await.unwrap();
    let mut s = schedule_named("default", "d", "rate(1 minute)");
    s.target.dead_letter_arn = Some(gust_core::queue::queue_arn("dlq"));
    store.put_schedule(s, true, NOW, u64::MAX).await.unwrap();
    let now = NOW + MINUTE;
    assert_eq!(store.claim_due_schedules(now, 10).await.unwrap(), 1);
    let (firing, schedule) = store.take_due_firings(now, 5_000, 10).await.unwrap().pop().unwrap();
    assert_eq!(schedule.name, "d");
    assert!(store.take_due_firings(now + 4_000, 5_000, 10).await.unwrap().is_empty(), "leased");
    // The target refused: the count of refusals guards the next settle.
    let refused = Delivery::Refused { reason: "throttled".into(), retry_at: now + 10_000 };
    assert!(store.settle_firing(firing.clone(), refused.clone(), now).await.unwrap());
    assert!(
        !store.settle_firing(firing.clone(), refused, now).await.unwrap(),
        "a stale settle changes nothing"
    );
    assert!(store.take_due_firings(now + 9_000, 5_000, 10).await.unwrap().is_empty());
    let (again, _) = store.take_due_firings(now + 10_000, 5_000, 10).await.unwrap().pop().unwrap();
    assert_eq!(again.attempts, 1);
    // A lease that ran out lets another server take it; both deliver, one settles.
    let (taken_twice, _) = store.take_due_firings(now + 16_000, 5_000, 10).await.unwrap().pop().unwrap();
    let message = gust_core::queue::NewMessage {
        id: uuid::Uuid::new_v4().to_string(),
        body: "the event".into(),
        attributes: [("ERROR_CODE".to_string(), string_attribute("Throttled"))].into(),
        visible_at: now,
        fifo: None,
    };
    let failed = Delivery::Failed { reason: "gave up".into(), dead_letter: Some(("dlq".into(), message)) };
    assert!(store.settle_firing(again, failed.clone(), now + 17_000).await.unwrap());
    assert!(store.settle_firing(taken_twice, failed, now + 17_000).await.is_err(), "no second dead letter");
    let dead = store.receive_messages(&dlq, 10, 1_000, now + 18_000).await.unwrap();
    assert_eq!(dead.len(), 1, "exactly one dead-letter message");
    assert_eq!(dead[0].message.attributes["ERROR_CODE"].string_value.as_deref(), Some("Throttled"));
    let history = store.schedule_history("default", "d", None, 10).await.unwrap();
    assert_eq!(
        (history[0].state, history[0].detail.as_deref()),
        (FiringState::DeadLettered, Some("gave up"))
    );

    store.delete_schedule("default", "d").await.unwrap();
    assert!(
        store.schedule_history("default", "d", None, 10).await.unwrap().is_empty(),
        "its history went too"
    );

    // A one-time schedule to a queue, deleted after completion: the message and the settle are
    // one transaction, and the schedule goes with its last firing.
    let mut once = schedule_named("default", "once", "at(2023-11-14T22:20:00)");
    once.target.arn = gust_core::queue::queue_arn("jobs");
    once.delete_after_completion = true;
    store.put_schedule(once, true, NOW, u64::MAX).await.unwrap();
    let at = store.get_schedule("default", "once").await.unwrap().unwrap().next_at.unwrap();
    assert_eq!(store.claim_due_schedules(at, 10).await.unwrap(), 1);
    assert!(store.get_schedule("default", "once").await.unwrap().is_some(), "kept until delivered");
    let (firing, _) = store.take_due_firings(at, 5_000, 10).await.unwrap().pop().unwrap();
    let message = gust_core::queue::NewMessage {
        id: "m-1".into(),
        body: "tick".into(),
        attributes: Default::default(),
        visible_at: at,
        fifo: None,
    };
    assert!(store.settle_firing(firing, Delivery::Send { queue: "jobs".into(), message }, at).await.unwrap());
    assert_eq!(store.receive_messages(&jobs, 10, 1_000, at).await.unwrap().len(), 1);
    assert!(store.get_schedule("default", "once").await.unwrap().is_none(), "deleted after completion");
}

pub async fn schedules_live_in_groups_and_go_with_them(store: Arc<dyn Store>) {
    assert!(store.get_schedule_group("default").await.unwrap().is_some(), "the default group always exists");
    assert!(matches!(store.delete_schedule_group("default").await, Err(StoreError::Invalid(_))));
    assert!(matches!(
        store.put_schedule(schedule_named("nightly", "a", "rate(1 hour)"), true, NOW, u64::MAX).await,
        Err(StoreError::NotFound { .. })
    ));
    let racers: Vec<_> = (0..6)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.create_schedule_group("nightly", NOW, u64::MAX).await.is_ok() })
        })
        .collect();
    let mut won = 0;
    for r in racers {
        won += usize::from(r.await.unwrap());
    }
    assert_eq!(won, 1, "one creator of a group name");
    for (g, n) in [("nightly", "b"), ("nightly", "a"), ("default", "a"), ("default", "z")] {
        store.put_schedule(schedule_named(g, n, "rate(1 hour)"), true, NOW, u64::MAX).await.unwrap();
    }
    assert!(matches!(
        store.put_schedule(schedule_named("nightly", "a", "rate(1 hour)"), true, NOW, u64::MAX).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.put_schedule(schedule_named("nightly", "c", "rate(1 hour)"), false, NOW, u64::MAX).await,
        Err(StoreError::NotFound { .. })
    ));
    let names = |v: Vec<crate::StoredSchedule>| -> Vec<String> {
        v.into_iter().map(|s| format!("{}/{}", s.schedule.group, s.schedule.name)).collect()
    };
    assert_eq!(
        names(store.list_schedules(None, "", None, 10).await.unwrap()),
        ["default/a", "default/z", "nightly/a", "nightly/b"]
    );
    assert_eq!(
        names(store.list_schedules(Some("nightly"), "", None, 10).await.unwrap()),
        ["nightly/a", "nightly/b"]
    );
    assert_eq!(names(store.list_schedules(None, "a", None, 10).await.unwrap()), ["default/a", "nightly/a"]);
    let after = Some(("default".to_string(), "z".to_string()));
    assert_eq!(names(store.list_schedules(None, "", after, 1).await.unwrap()), ["nightly/a"]);
    let groups: Vec<String> =
        store.list_schedule_groups("", None, 10).await.unwrap().into_iter().map(|g| g.name).collect();
    assert_eq!(groups, ["default", "nightly"]);
    store.delete_schedule_group("nightly").await.unwrap();
    assert_eq!(names(store.list_schedules(None, "", None, 10).await.unwrap()), ["default/a", "default/z"]);
    store.delete_schedule("default", "a").await.unwrap();
    assert!(matches!(store.delete_schedule("default", "a").await, Err(StoreError::NotFound { .. })));
}

fn fifo_message(group: &str, dedup: &str, body: &str) -> gust_core::queue::NewMessage {
    gust_core::queue::NewMessage {
        id: uuid::Uuid::new_v4().to_string(),
        body: body.to_string(),
        attributes: Default::default(),
        visible_at: NOW,
        fifo: Some(gust_core::queue::FifoIds { group: group.into(), deduplication: dedup.into() }),
    }
}

pub async fn fifo_groups_go_in_order_to_one_receiver_at_a_time_and_duplicates_are_dropped(
    store: Arc<dyn Store>,
) {
    let attributes = gust_core::queue::QueueAttributes { fifo: true, ..Default::default() };
    let queue = store.create_queue(queue_named("orders.fifo", attributes)).await.unwrap();
    // Four groups, ten messages each, sent interleaved by racing senders.
    let senders: Vec<_> = (0..4)
        .map(|g| {
            let (store, id) = (store.clone(), queue.id.clone());
            tokio::spawn(async move {
                for i in 0..10 {
                    let m = fifo_message(&format!("g{g}"), &format!("g{g}-{i}"), &format!("g{g}-{i}"));
                    store.send_messages(&id, vec![m], NOW, NOW + HOUR).await.unwrap();
                }
            })
        })
        .collect();
    for s in senders {
        s.await.unwrap();
    }
    // A second send of a deduplication id within five minutes stores nothing and answers the
    // first send's id and sequence number; after five minutes it is a new message.
    let first = store.receive_messages(&queue, 10, 1, NOW - 1).await.unwrap();
    assert!(first.is_empty(), "nothing visible before it was sent");
    let again =
        store.send_messages(&queue.id, vec![fifo_message("g0", "g0-0", "dup")], NOW + 1, NOW + HOUR).await;
    let again = again.unwrap().pop().unwrap();
    assert!(again.sequence.is_some());
    // Racing receivers: every group goes to one of them (its head hides the rest of it), in order.
    let receivers: Vec<_> = (0..6)
        .map(|_| {
            let (store, queue) = (store.clone(), queue.clone());
            tokio::spawn(async move { store.receive_messages(&queue, 10, 60_000, NOW + 2).await.unwrap() })
        })
        .collect();
    let mut holder: std::collections::HashMap<String, usize> = Default::default();
    let mut received: Vec<(usize, Vec<gust_core::queue::Received>)> = Vec::new();
    for (r, task) in receivers.into_iter().enumerate() {
        received.push((r, task.await.unwrap()));
    }
    let mut total = 0;
    for (r, got) in &received {
        let mut last_seq: std::collections::HashMap<&str, (i64, usize)> = Default::default();
        for m in got {
            let (ids, seq) = m.message.fifo.as_ref().expect("a FIFO message");
            let owner = *holder.entry(ids.group.clone()).or_insert(*r);
            assert_eq!(owner, *r, "group {} went to two receivers at once", ids.group);
            let index: usize = m.message.body.rsplit('-').next().unwrap().parse().unwrap();
            let (prev_seq, prev_index) = last_seq.get(ids.group.as_str()).copied().unwrap_or((-1, 0));
            assert!(*seq > prev_seq, "sequence numbers grow within a group");
            assert_eq!(
                index,
                if prev_seq < 0 { 0 } else { prev_index + 1 },
                "group {} out of order",
                ids.group
            );
            last_seq.insert(ids.group.as_str(), (*seq, index));
            total += 1;
        }
    }
    assert!(total > 0);
    // While they are in flight, nothing of those groups is visible to anyone else.
    let more = store.receive_messages(&queue, 10, 60_000, NOW + 3).await.unwrap();
    for m in &more {
        let group = &m.message.fifo.as_ref().unwrap().0.group;
        assert!(!holder.contains_key(group), "group {group} was received while in flight");
    }
    // Deleting a group's batch lets its next messages through, still in order, and the
    // duplicate never shows up.
    let mut bodies: Vec<String> =
        received.iter().flat_map(|(_, g)| g.iter().map(|m| m.message.body.clone())).collect();
    let mut pending: Vec<gust_core::queue::Received> =
        received.into_iter().flat_map(|(_, g)| g).chain(more).collect();
    let mut now = NOW + 4;
    while !pending.is_empty() {
        for m in &pending {
            assert!(store.delete_message(&queue.id, &m.message.id, &m.receipt).await.unwrap());
        }
        now += 1;
        pending = store.receive_messages(&queue, 10, 60_000, now).await.unwrap();
        bodies.extend(pending.iter().map(|m| m.message.body.clone()));
    }
    bodies.sort();
    let mut expected: Vec<String> = (0..4).flat_map(|g| (0..10).map(move |i| format!("g{g}-{i}"))).collect();
    expected.sort();
    assert_eq!(bodies, expected, "every message once, the duplicate never");
    let later = NOW + gust_core::queue::DEDUPLICATION_INTERVAL_MS + 10;
    store
        .send_messages(&queue.id, vec![fifo_message("g0", "g0-0", "again")], later, later + HOUR)
        .await
        .unwrap();
    let got = store.receive_messages(&queue, 10, 1_000, later).await.unwrap();
    assert_eq!(got.iter().map(|m| m.message.body.as_str()).collect::<Vec<_>>(), ["again"]);
}

pub async fn dead_letters_go_back_to_their_source_or_where_they_are_sent(store: Arc<dyn Store>) {
    let dlq = store.create_queue(queue_named("dlq", Default::default())).await.unwrap();
    let redrive = |max| gust_core::queue::QueueAttributes {
        redrive_policy: Some(gust_core::queue::RedrivePolicy {
            dead_letter_queue: "dlq".into(),
            max_receive_count: max,
        }),
        ..Default::default()
    };
    let a = store.create_queue(queue_named("a", redrive(1))).await.unwrap();
    let b = store.create_queue(queue_named("b", redrive(1))).await.unwrap();
    store.send_messages(&a.id, messages(3, NOW), NOW, NOW + HOUR).await.unwrap();
    store.send_messages(&b.id, messages(2, NOW), NOW, NOW + HOUR).await.unwrap();
    // Received once, then moved on the next receive.
    for q in [&a, &b] {
        assert!(!store.receive_messages(q, 10, 0, NOW).await.unwrap().is_empty());
        assert!(store.receive_messages(q, 10, 0, NOW + 1).await.unwrap().is_empty());
    }
    assert_eq!(store.queue_counts(&dlq.id, NOW + 2).await.unwrap().visible, 5);
    // Back to where each came from.
    assert_eq!(store.move_back(&dlq.id, None, 1_000, NOW + 2).await.unwrap(), 5);
    assert_eq!(store.queue_counts(&a.id, NOW + 2).await.unwrap().visible, 3);
    assert_eq!(store.queue_counts(&b.id, NOW + 2).await.unwrap().visible, 2);
    let back = store.receive_messages(&a, 10, 0, NOW + 3).await.unwrap();
    assert!(back.iter().all(|m| m.message.receive_count == 1), "counted afresh");
    // Dead again; a's queue goes: its dead letters stay, b's go elsewhere when told.
    store.receive_messages(&a, 10, 0, NOW + 4).await.unwrap();
    store.receive_messages(&b, 10, 0, NOW + 4).await.unwrap();
    store.receive_messages(&b, 10, 0, NOW + 5).await.unwrap();
    store.delete_queue("a").await.unwrap();
    assert_eq!(
        store.move_back(&dlq.id, None, 1_000, NOW + 6).await.unwrap(),
        2,
        "only b's have a source left"
    );
    assert_eq!(store.queue_counts(&dlq.id, NOW + 6).await.unwrap().visible, 3);
    let elsewhere = store.create_queue(queue_named("elsewhere", Default::default())).await.unwrap();
    assert_eq!(store.move_back(&dlq.id, Some(&elsewhere.id), 1_000, NOW + 7).await.unwrap(), 3);
    let task = crate::queues::MoveTask {
        handle: "h".into(),
        source: "dlq".into(),
        destination: Some("elsewhere".into()),
        moved: 3,
        to_move: 3,
        started_at: NOW + 7,
    };
    store.record_move_task(task.clone()).await.unwrap();
    assert_eq!(store.move_tasks("dlq", 10).await.unwrap(), vec![task]);
}
