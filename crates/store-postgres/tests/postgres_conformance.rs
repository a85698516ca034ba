//! The store conformance suite against the PostgreSQL backend, on a real server: each test
//! gets its own schema in the throwaway database that `./scripts/test` starts.

use std::sync::Arc;

use gust_store::Store;
use gust_store_postgres::PgStore;

async fn make() -> Arc<dyn Store> {
    let url = std::env::var("GUST_TEST_POSTGRES")
        .expect("GUST_TEST_POSTGRES is not set: run the suite with ./scripts/test (it starts PostgreSQL)");
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    Arc::new(PgStore::connect(&url, Some(&schema), 8).await.expect("connect to PostgreSQL"))
}

gust_store::store_conformance_tests!(make);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_servers_can_migrate_the_same_database_at_once() {
    let url = std::env::var("GUST_TEST_POSTGRES").expect("GUST_TEST_POSTGRES is not set");
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (url, schema) = (url.clone(), schema.clone());
            tokio::spawn(async move { PgStore::connect(&url, Some(&schema), 2).await.map(|_| ()) })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().expect("every concurrent start succeeds");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placements_are_announced_to_every_server() {
    let (a, b) = two_servers().await;
    gust_store::conformance::placements_are_announced_to_every_server(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_slots_hold_across_servers() {
    let (a, b) = two_servers().await;
    gust_store::conformance::concurrency_slots_hold_across_servers(a, b).await;
}

/// Two servers' stores on one schema of their own.
async fn two_servers() -> (Arc<dyn Store>, Arc<dyn Store>) {
    let url = std::env::var("GUST_TEST_POSTGRES").expect("GUST_TEST_POSTGRES is not set");
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let a: Arc<dyn Store> = Arc::new(PgStore::connect(&url, Some(&schema), 4).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(PgStore::connect(&url, Some(&schema), 4).await.unwrap());
    (a, b)
}
