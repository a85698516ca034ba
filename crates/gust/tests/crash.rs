//! kill -9 the server with acknowledged async invocations in flight, restart it on the same
//! data directory: every acknowledged invocation completes with exactly one terminal outcome,
//! running attempts are recovered through lease expiry, and idempotency keys still dedupe.

mod common;

use std::time::{Duration, Instant};

use common::{accepted_id, wasm_config, Server};
use gust_testkit::fixture;
use serde_json::Value;

#[test]
fn kill9_and_restart_loses_no_acknowledged_invocation() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ["--lease-ms", "1000", "--max-concurrency", "2"];
    let s = Server::start(dir.path(), &opts);
    s.deploy("work", wasm_config(5000), fixture("burn"));

    let mut acknowledged = Vec::new();
    for i in 0..150 {
        let key = format!("job-{i}");
        let id = accepted_id(s.invoke(
            "work",
            None,
            b"50",
            &[("invocation-type", "async"), ("idempotency-key", &key)],
        ));
        acknowledged.push((key, id));
    }
    // Let some run, then kill -9 with work queued and running.
    std::thread::sleep(Duration::from_millis(300));
    let before: Value = s.get("/v1/functions/work/invocations?state=SUCCEEDED&limit=1000").json().unwrap();
    let done_before = before["invocations"].as_array().unwrap().len();
    assert!(done_before < acknowledged.len(), "the kill must happen with work in flight");
    s.kill9();

    let s = Server::start(dir.path(), &opts);
    // Idempotency keys survive the crash.
    for (key, id) in acknowledged.iter().step_by(37) {
        let r = s.invoke("work", None, b"50", &[("invocation-type", "async"), ("idempotency-key", key)]);
        assert_eq!(&accepted_id(r), id);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut recovered = 0;
    for (_, id) in &acknowledged {
        let rec = s.wait_terminal(id, deadline.saturating_duration_since(Instant::now()));
        assert_eq!(rec["state"], "SUCCEEDED", "{rec}");
        assert_eq!(rec["result"], "50");
        assert!(rec["attempts"].as_u64().unwrap() >= 1);
        if rec["lost_attempts"].as_u64().unwrap() > 0 {
            recovered += 1;
        }
    }
    let all: Value = s.get("/v1/functions/work/invocations?limit=1000").json().unwrap();
    assert_eq!(all["invocations"].as_array().unwrap().len(), acknowledged.len(), "no duplicates, none lost");
    assert!(recovered >= 1, "at least one running attempt was recovered through lease expiry");
    eprintln!("crash test: {done_before} done before kill -9, {recovered} recovered via lease expiry");
}
