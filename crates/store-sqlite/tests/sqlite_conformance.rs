//! The store conformance suite against the SQLite backend, plus what only SQLite can show.

use std::sync::Arc;

use gust_store::{Store, StoreError};
use gust_store_sqlite::{SqliteOptions, SqliteStore};

async fn make() -> Arc<dyn Store> {
    let dir = tempfile::tempdir().unwrap().keep();
    Arc::new(SqliteStore::open(&dir, SqliteOptions::default()).unwrap())
}

gust_store::store_conformance_tests!(make);

#[tokio::test]
async fn state_survives_reopen_and_corrupt_artifacts_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let sha = {
        let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
        store.put_function("f", Default::default(), None, 1).await.unwrap();
        store.put_artifact(bytes::Bytes::from_static(b"abc")).await.unwrap()
    };
    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
    assert!(store.get_function("f").await.unwrap().is_some());
    std::fs::write(dir.path().join("artifacts").join(&sha), b"abd").unwrap();
    assert!(matches!(store.get_artifact(&sha).await, Err(StoreError::Corrupt(_))));
}

/// Retention's byte budget reads totals kept as records end and go: they persist across a
/// restart, and a database written before they were kept has them counted from its records
/// once, when it is upgraded.
#[tokio::test]
async fn ended_totals_survive_restarts_and_are_seeded_on_upgrade() {
    use gust_store::conformance::{ended_record, held};
    use gust_store::Pruned;

    let dir = tempfile::tempdir().unwrap();
    let records: Vec<_> = (0..20).map(ended_record).collect();
    let want = Pruned { invocations: 20, bytes: records.iter().map(held).sum() };
    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
    store.record_finished(records).await.unwrap();
    assert_eq!(store.ended_invocations().await.unwrap(), want);
    drop(store);
    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
    assert_eq!(store.ended_invocations().await.unwrap(), want, "after a restart");
    drop(store);

    // As a gust from before the totals left it: no table (nor the later steps' index), the
    // schema two versions older.
    let db = rusqlite::Connection::open(dir.path().join("gust.db")).unwrap();
    let version: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    db.execute_batch(&format!(
        "DROP TABLE ended_totals; DROP INDEX workers_heartbeat; PRAGMA user_version = {};",
        version - 2
    ))
    .unwrap();
    drop(db);
    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
    assert_eq!(store.ended_invocations().await.unwrap(), want, "seeded from the records kept");
}

/// Every scan the service repeats while it runs (the queue caps' count once a second, the
/// dispatcher's and the recoverer's scans, placement counts) reads an index of the work it
/// is after, never every record kept: a busy server keeps millions of ended records, and one
/// full scan a second once cost a whole core. The same for the live workers among every worker
/// ever seen.
#[test]
fn the_repeated_scans_never_read_every_record() {
    use gust_store::ops::Scan;
    use gust_store::rows;

    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap());
    let db = rusqlite::Connection::open(dir.path().join("gust.db")).unwrap();
    let worker = gust_core::WorkerId("w".into());
    let scans = [
        Scan::LeaseExpired { now: 0, limit: 1 },
        Scan::RetryDue { now: 0, limit: 1 },
        Scan::Unclaimed { placed_before: 0, limit: 1 },
        Scan::TooOld { now: 0, limit: 1 },
        Scan::Queued { limit: 1 },
        Scan::PlacedOn { worker: &worker, limit: 1 },
    ];
    let mut statements: Vec<&str> = scans.iter().map(|s| s.statement().0).collect();
    statements.extend([
        rows::ASYNC_BACKLOG,
        rows::QUEUED,
        rows::PLACED_COUNTS,
        rows::ASSIGNED,
        rows::COUNT_ENDED,
        // The live workers (every worker ever seen keeps its row).
        rows::LIST_WORKERS,
    ]);
    // A partial index holds only the work it is about; scanning one is fine.
    let partial: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND sql LIKE '% WHERE %'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for sql in statements {
        let mut plan = db.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let unbound = rusqlite::params_from_iter(vec![rusqlite::types::Null; plan.parameter_count()]);
        let steps: Vec<String> =
            plan.query_map(unbound, |r| r.get::<_, String>(3)).unwrap().map(Result::unwrap).collect();
        let invocations: Vec<&String> =
            steps.iter().filter(|s| s.contains(" invocations") || s.contains(" workers")).collect();
        assert!(!invocations.is_empty(), "{sql}: {steps:?}");
        for step in invocations {
            let bounded = step.starts_with("SEARCH")
                || partial.iter().any(|index| step.ends_with(&format!("INDEX {index}")));
            assert!(bounded, "{sql} reads every record: {step}");
        }
    }
}
