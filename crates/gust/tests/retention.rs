//! Bounded disk, black box: the records of ended invocations are deleted after
//! `--retain-invocations` and beyond `--retain-invocation-bytes` (oldest first, waiting work
//! never), and async work past `--max-queued-async-per-function` / `--max-queued-async`
//! answers 429 on both APIs instead of growing the queue without bound.

mod common;

use std::time::Duration;

use common::{error_code, wasm_config, Server};
use gust_testkit::{fixture, wait_until};
use serde_json::Value;

/// The invocation id of an answer: the header of a sync one, the body of an async one.
fn id_of(r: reqwest::blocking::Response) -> String {
    assert!(r.status().is_success(), "{}", r.status());
    if let Some(id) = r.headers().get("gust-invocation-id") {
        return id.to_str().unwrap().to_string();
    }
    r.json::<Value>().unwrap()["invocation_id"].as_str().unwrap().to_string()
}

fn exists(s: &Server, id: &str) -> bool {
    let r = s.get(&format!("/v1/invocations/{id}"));
    match r.status().as_u16() {
        200 => true,
        404 => false,
        other => panic!("GET invocation {id}: {other}"),
    }
}

/// A server that keeps ended records for `age` and up to `bytes` (each may be `off`), with a
/// retention pass every 200 ms.
fn retaining(data_dir: &std::path::Path, age: &str, bytes: &str) -> Server {
    let args =
        ["--retain-invocations", age, "--retain-invocation-bytes", bytes, "--retention-interval-ms", "200"];
    Server::start(data_dir, &args)
}

#[test]
fn ended_records_go_after_their_retention_and_waiting_work_stays() {
    let dir = tempfile::tempdir().unwrap();
    let s = retaining(dir.path(), "2s", "off");
    s.deploy("echo", wasm_config(3000), fixture("echo"));
    let sync = id_of(s.invoke("echo", None, b"sync", &[]));
    let done = id_of(s.invoke("echo", None, b"async", &[("invocation-type", "async")]));
    s.wait_terminal(&sync, Duration::from_secs(10));
    s.wait_terminal(&done, Duration::from_secs(10));
    // Work still in flight: a failing async invocation waits out a long retry backoff.
    s.deploy(
        "fail",
        serde_json::json!({ "retry": { "max_retries": 2, "base_delay_ms": 60000 } }),
        fixture("fail"),
    );
    let waiting = id_of(s.invoke("fail", None, b"x", &[("invocation-type", "async")]));
    wait_until("the failing invocation waits for its retry", Duration::from_secs(10), || {
        s.invocation(&waiting)["state"] == "RETRY_WAIT"
    });
    assert!(exists(&s, &sync) && exists(&s, &done), "kept within their retention");
    wait_until("ended records deleted after 2 s", Duration::from_secs(15), || {
        !exists(&s, &sync) && !exists(&s, &done)
    });
    assert_eq!(s.invocation(&waiting)["state"], "RETRY_WAIT", "work in flight is never deleted");
    assert!(s.metric("gust_records_pruned_total") >= 2);
    // A fresh record is kept again until its own retention passes.
    let fresh = id_of(s.invoke("echo", None, b"fresh", &[]));
    s.wait_terminal(&fresh, Duration::from_secs(10));
    assert!(exists(&s, &fresh));
}

#[test]
fn the_byte_budget_keeps_the_newest_records() {
    let dir = tempfile::tempdir().unwrap();
    // Each record holds its 4 KB payload and the same 4 KB as its result: 8 KB. A 40 KB
    // budget keeps the newest five (or so), never the oldest.
    let s = retaining(dir.path(), "off", "40KB");
    s.deploy("echo", wasm_config(3000), fixture("echo"));
    let payload = vec![b'p'; 4096];
    let ids: Vec<String> = (0..12)
        .map(|_| {
            let id = id_of(s.invoke("echo", None, &payload, &[]));
            s.wait_terminal(&id, Duration::from_secs(10));
            id
        })
        .collect();
    wait_until("the oldest records deleted down to the budget", Duration::from_secs(15), || {
        !exists(&s, &ids[0]) && !exists(&s, &ids[5])
    });
    let kept: Vec<bool> = ids.iter().map(|id| exists(&s, id)).collect();
    assert!(kept[9..].iter().all(|k| *k), "the newest records stay: {kept:?}");
    let first_kept = kept.iter().position(|k| *k).unwrap();
    assert!(kept[first_kept..].iter().all(|k| *k), "deleted oldest first: {kept:?}");
    assert!(kept.iter().filter(|k| **k).count() <= 5, "within 40 KB: {kept:?}");
}

#[test]
fn async_work_past_its_caps_answers_429_on_both_apis() {
    let dir = tempfile::tempdir().unwrap();
    // No local worker and no remote one: async work waits, QUEUED, for good.
    let s = Server::start(
        dir.path(),
        &["--no-local-worker", "--max-queued-async-per-function", "3", "--max-queued-async", "5"],
    );
    s.deploy("a", wasm_config(3000), fixture("echo"));
    s.deploy("b", wasm_config(3000), fixture("echo"));
    let event = [("invocation-type", "async")];
    for _ in 0..3 {
        assert_eq!(s.invoke("a", None, b"{}", &event).status(), 202);
    }
    let r = s.invoke("a", None, b"{}", &event);
    let body: Value = {
        assert_eq!(r.status(), 429);
        r.json().unwrap()
    };
    assert_eq!(body["error"]["code"], "QueueFull", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("at most 3"), "{body}");

    // Another function may still queue, up to the total of 5.
    assert_eq!(s.invoke("b", None, b"{}", &event).status(), 202);
    assert_eq!(s.invoke("b", None, b"{}", &event).status(), 202);
    assert_eq!(error_code(s.invoke("b", None, b"{}", &event), 429), "QueueFull");

    // The AWS API answers as Lambda throttles: TooManyRequestsException.
    let r = s.invoke_aws_event("b");
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-amzn-errortype"], "TooManyRequestsException");

    // Still true once the counts come from the store (refreshed every second), and nothing
    // refused was queued.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(s.invoke("a", None, b"{}", &event).status(), 429);
    assert_eq!(s.metric("gust_queue_full_total"), 4);
    let listed: Value = s.get("/v1/functions/a/invocations").json().unwrap();
    assert_eq!(listed["invocations"].as_array().map(Vec::len), Some(3), "{listed}");
}

/// With retention off, nothing is deleted, but the ended totals (what a byte budget would read)
/// are still folded every interval: each ended record adds a row to them, and without the fold
/// they would grow with every invocation for as long as the server runs.
#[test]
fn with_retention_off_the_ended_totals_are_still_folded() {
    let dir = tempfile::tempdir().unwrap();
    let s = retaining(dir.path(), "off", "off");
    s.deploy("echo", wasm_config(3000), fixture("echo"));
    let ids: Vec<String> =
        (0..8).map(|_| id_of(s.invoke("echo", None, b"async", &[("invocation-type", "async")]))).collect();
    for id in &ids {
        s.wait_terminal(id, Duration::from_secs(10));
    }
    let db = rusqlite::Connection::open_with_flags(
        dir.path().join("gust.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let totals = || -> (i64, i64) {
        db.query_row("SELECT COUNT(*), COALESCE(SUM(records), 0) FROM ended_totals", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap()
    };
    wait_until("the ended totals folded into one row", Duration::from_secs(10), || totals().0 == 1);
    assert_eq!(totals().1, 8, "every ended record counted once");
    assert!(ids.iter().all(|id| exists(&s, id)), "nothing deleted");
}
