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
