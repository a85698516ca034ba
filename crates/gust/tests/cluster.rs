//! The cluster shape: several gust servers on one PostgreSQL database, workers attached to
//! different servers. Needs the throwaway PostgreSQL that `./scripts/test` starts.

mod common;

use std::time::{Duration, Instant};

use common::{accepted_id, wasm_config, Server, Worker, REMOTE_ONLY};
use gust_testkit::{fixture, unique_schema};
use serde_json::Value;

/// Server flags for one cluster member: the shared database, in a schema of this test's own.
fn cluster_args(schema: &str) -> Vec<String> {
    let mut args: Vec<String> = REMOTE_ONLY.iter().map(|s| s.to_string()).collect();
    args.extend(["--store".into(), gust_testkit::postgres(), "--store-schema".into(), schema.into()]);
    args
}

#[test]
fn any_server_answers_and_sync_results_cross_servers() {
    let schema = unique_schema("c");
    let args = cluster_args(&schema);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Server::start(da.path(), &args);
    let b = Server::start(db.path(), &args);
    // The only worker is attached to server B.
    let _w = Worker::start(&b.url, db.path(), "wb", &["--capacity", "4"]);

    // Deploy through A, read and invoke through B and A.
    let deployed = a.deploy("echo", wasm_config(3000), fixture("echo"));
    let f: Value = b.get("/v1/functions/echo").json().unwrap();
    assert_eq!(f["code_sha256"], deployed["code_sha256"], "any server answers any API call");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = a.invoke("echo", None, b"from A", &[]);
        if r.status() == 200 && r.headers().get("gust-function-error").is_none() {
            assert_eq!(r.text().unwrap(), "from A", "a sync call at A ran on B's worker");
            break;
        }
        assert!(Instant::now() < deadline, "sync invocation through A never ran: {}", r.text().unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The placement B commits wakes the worker's poll at once (announced across servers), not
    // on the poll's next look at the store: the median call is far under a poll period. Loose
    // on purpose (the figure itself is gust-bench's); a polling path takes 100 ms or more.
    let mut took: Vec<Duration> = (0..15)
        .map(|_| {
            let t = Instant::now();
            let r = a.invoke("echo", None, b"again", &[]);
            assert_eq!(r.text().unwrap(), "again");
            t.elapsed()
        })
        .collect();
    took.sort();
    assert!(took[7] < Duration::from_millis(50), "a sync call at A waited for B's worker: {took:?}");
    let id = accepted_id(b.invoke("echo", None, b"queued at B", &[("invocation-type", "async")]));
    let rec = a.wait_terminal(&id, Duration::from_secs(10));
    assert_eq!(rec["result"], "queued at B", "status is visible from any server");
    let workers: Value = a.get("/v1/workers").json().unwrap();
    assert_eq!(workers["workers"].as_array().unwrap().len(), 1, "worker state is shared: {workers}");
}

/// A function URL made at one server is served by every server: B learns of it from the
/// store's snapshot version, and runs it on the cluster's only worker (attached to A).
#[test]
fn any_server_answers_any_function_url() {
    let schema = unique_schema("u");
    let args = cluster_args(&schema);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Server::start(da.path(), &args);
    let b = Server::start(db.path(), &args);
    let _w = Worker::start(&a.url, da.path(), "wa", &["--capacity", "4"]);
    a.deploy("echo", wasm_config(3000), fixture("echo"));
    let r = a
        .client()
        .post(format!("{}/v1/functions/echo/url", a.url))
        .json(&serde_json::json!({ "auth_type": "NONE" }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().unwrap()["url_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = b.client().get(format!("{}/url/{id}/from-b?x=1", b.url)).send().unwrap();
        if r.status() == 200 {
            let event: Value = r.json().unwrap();
            assert_eq!(event["rawPath"], "/from-b", "B served A's URL: {event}");
            break;
        }
        assert!(Instant::now() < deadline, "B never served the URL made at A: {}", r.status());
        std::thread::sleep(Duration::from_millis(100));
    }
    // A wasi:http component through a remote worker: its request goes as Lambda's event and
    // is rebuilt there.
    let hello = std::fs::read(gust_testkit::repo_root().join("tests/fixtures/wasi-http/hello.wasm")).unwrap();
    a.deploy("hello", wasm_config(3000), hello);
    let r = a
        .client()
        .post(format!("{}/v1/functions/hello/url", a.url))
        .json(&serde_json::json!({ "auth_type": "NONE" }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let hello_id = r.json::<Value>().unwrap()["url_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = b.client().get(format!("{}/url/{hello_id}/x", b.url)).send().unwrap();
        if r.status() == 200 {
            assert_eq!(r.headers()["content-type"], "text/plain");
            assert_eq!(r.text().unwrap(), "hello from a wasi:http component\n");
            break;
        }
        assert!(Instant::now() < deadline, "B never served the component's URL: {}", r.status());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Deleted at B, it is gone at A too (within a snapshot poll).
    assert_eq!(b.delete("/v1/functions/echo/url").status(), 204);
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.client().get(format!("{}/url/{id}/", a.url)).send().unwrap().status() != 404 {
        assert!(Instant::now() < deadline, "A still serves a URL deleted at B");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A function's reserved concurrency holds across servers: two servers (each with its own
/// worker) sharing one store admit at most the limit at once between them, and throttle the
/// rest (429). Each server alone would admit the whole limit.
#[test]
fn reserved_concurrency_holds_across_servers() {
    let schema = unique_schema("rc");
    let args = ["--store".to_string(), gust_testkit::postgres(), "--store-schema".into(), schema];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Server::start(da.path(), &args);
    let b = Server::start(db.path(), &args);
    let mut config = wasm_config(1500);
    config["reserved_concurrency"] = 5.into();
    a.deploy("slow", config, fixture("sleep"));
    // Each call holds its slot until the function times out (1.5 s): 16 at once, half at each
    // server.
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..16)
            .map(|i| {
                let s = if i % 2 == 0 { &a } else { &b };
                scope.spawn(move || s.invoke("slow", None, b"{}", &[]).status().as_u16())
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(admitted + throttled, 16, "{statuses:?}");
    assert!((1..=5).contains(&admitted), "at most 5 ran at once across both servers: {statuses:?}");
}

/// Async work on remote workers counts against the same cluster-wide limit: with two servers,
/// a worker on each and room for 8 at once, a limit of 2 throttles attempts, which wait (they
/// run later, and end with the function's own outcome, never a throttle error).
#[test]
fn reserved_concurrency_holds_for_async_work_on_remote_workers() {
    let schema = unique_schema("rca");
    let args = cluster_args(&schema);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Server::start(da.path(), &args);
    let b = Server::start(db.path(), &args);
    let _wa = Worker::start(&a.url, da.path(), "wa", &["--capacity", "4"]);
    let _wb = Worker::start(&b.url, db.path(), "wb", &["--capacity", "4"]);
    let mut config = wasm_config(600);
    config["reserved_concurrency"] = 2.into();
    config["retry"] = serde_json::json!({ "max_retries": 0, "base_delay_ms": 100, "max_event_age_s": 600 });
    common::deploy_to_workers(&a, 2, "slow", config, fixture("sleep"));
    let ids: Vec<String> = (0..6)
        .map(|i| {
            let s = if i % 2 == 0 { &a } else { &b };
            accepted_id(s.invoke("slow", None, b"{}", &[("invocation-type", "async")]))
        })
        .collect();
    for id in &ids {
        let rec = a.wait_terminal(id, Duration::from_secs(60));
        // Each ran once, to its own timeout: throttled attempts waited rather than failed.
        assert_eq!(rec["state"], "FAILED", "{rec}");
        assert!(rec["error"].to_string().contains("Timeout"), "{rec}");
    }
    let throttled = a.metric("gust_throttled_total") + b.metric("gust_throttled_total");
    assert!(throttled >= 1, "8 slots of workers, a limit of 2: some attempts must have waited");
}
