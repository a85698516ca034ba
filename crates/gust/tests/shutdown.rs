//! Graceful shutdown: SIGTERM to `gust server` stops taking invocations (503 `ShuttingDown`),
//! finishes what runs within `--shutdown-grace`, hands back the async attempts still running
//! at the deadline (redelivered at once, not after a lease expiry), writes every answered
//! keyless sync record, and exits 0. SIGTERM to `gust worker` stops polling, finishes its
//! attempts within its grace, hands back the rest, and exits 0.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{accepted_id, deploy_to_workers, wasm_config, Server, Worker};
use gust_testkit::fixture;
use serde_json::Value;

/// Remote-only server flags with a long lease, so a lease expiry is easy to tell from a
/// hand-back.
const REMOTE_LONG_LEASE: [&str; 5] =
    ["--no-local-worker", "--worker-token", "test-worker-token", "--lease-ms", "10000"];

fn running(v: &Value) -> bool {
    v["state"] == "RUNNING"
}

#[test]
fn sigterm_under_load_keeps_every_answered_record_and_every_acknowledged_invocation() {
    let dir = tempfile::tempdir().unwrap();
    let grace = Duration::from_secs(10);
    let mut s = Server::start(dir.path(), &["--shutdown-grace", "10"]);
    s.deploy("echo", wasm_config(3000), fixture("echo"));

    let sent = AtomicUsize::new(0);
    let signalled = AtomicBool::new(false);
    let answered = Mutex::new(Vec::<(String, String)>::new()); // sync 200: (id, payload)
    let accepted = Mutex::new(Vec::<String>::new()); // async 202
    let refused = AtomicUsize::new(0); // 503 ShuttingDown
    let url = s.url.clone();
    let elapsed = std::thread::scope(|scope| {
        for t in 0..8 {
            let (url, sent, signalled, answered, accepted, refused) =
                (&url, &sent, &signalled, &answered, &accepted, &refused);
            scope.spawn(move || {
                let client =
                    reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
                for i in 0..10_000 {
                    let payload = format!("t{t}-{i}");
                    let is_async = i % 5 == 4;
                    let mut rb = client.post(format!("{url}/v1/functions/echo/invoke")).body(payload.clone());
                    if is_async {
                        rb = rb.header("invocation-type", "async");
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                    let r = match rb.send() {
                        Ok(r) => r,
                        // Refused connections once the server stops listening.
                        Err(_) if signalled.load(Ordering::SeqCst) => return,
                        Err(e) => panic!("invocation failed before shutdown: {e}"),
                    };
                    match r.status().as_u16() {
                        200 => {
                            let id = r.headers()["gust-invocation-id"].to_str().unwrap().to_string();
                            assert_eq!(r.text().unwrap(), payload);
                            answered.lock().unwrap().push((id, payload));
                        }
                        202 => accepted.lock().unwrap().push(accepted_id(r)),
                        503 => {
                            assert_eq!(common::error_code(r, 503), "ShuttingDown");
                            refused.fetch_add(1, Ordering::SeqCst);
                        }
                        other => panic!("unexpected status {other}: {}", r.text().unwrap_or_default()),
                    }
                }
            });
        }
        // SIGTERM in the middle of the load.
        while sent.load(Ordering::SeqCst) < 450 {
            std::thread::sleep(Duration::from_millis(1));
        }
        signalled.store(true, Ordering::SeqCst);
        let t0 = Instant::now();
        s.signal("-TERM");
        let status = s.wait_exit(grace + Duration::from_secs(10)).expect("the server did not exit");
        assert!(status.success(), "the server must exit 0 after SIGTERM: {status:?}");
        t0.elapsed()
    });
    let answered = answered.into_inner().unwrap();
    let accepted = accepted.into_inner().unwrap();
    eprintln!(
        "{} sent, {} sync answered, {} async accepted, {} refused; exited {elapsed:?} after SIGTERM",
        sent.load(Ordering::SeqCst),
        answered.len(),
        accepted.len(),
        refused.load(Ordering::SeqCst)
    );
    assert!(elapsed < grace, "the server exits once drained, within its grace: {elapsed:?}");
    assert!(answered.len() >= 300 && !accepted.is_empty());

    let s = Server::start(dir.path(), &[]);
    // Every answered keyless sync invocation has its record, right after the restart.
    let mut missing = Vec::new();
    for (id, payload) in &answered {
        let r = s.get(&format!("/v1/invocations/{id}"));
        if r.status() != 200 {
            missing.push(id.clone());
            continue;
        }
        let rec: Value = r.json().unwrap();
        assert_eq!(
            (rec["state"].as_str(), rec["result"].as_str()),
            (Some("SUCCEEDED"), Some(payload.as_str()))
        );
    }
    assert!(missing.is_empty(), "{} of {} answered sync records were lost", missing.len(), answered.len());
    // Every acknowledged async invocation reaches one terminal state, run once.
    for id in &accepted {
        let rec = s.wait_terminal(id, Duration::from_secs(30));
        assert_eq!(rec["state"], "SUCCEEDED", "{rec}");
        assert_eq!(rec["attempts"], 1, "an echo finishes within the grace: run once: {rec}");
    }
    let all: Value = s.get("/v1/functions/echo/invocations?state=SUCCEEDED&limit=1000").json().unwrap();
    let ids: Vec<&str> =
        all["invocations"].as_array().unwrap().iter().map(|r| r["invocation_id"].as_str().unwrap()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no invocation recorded twice");
}

#[test]
fn a_request_arriving_during_shutdown_gets_503_shutting_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &["--shutdown-grace", "10"]);
    s.deploy("echo", wasm_config(3000), fixture("echo"));
    // A connection the server accepted before the signal, whose request is finished after it.
    let addr = s.addr().to_string();
    let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
    tcp.write_all(format!("POST /v1/functions/echo/invoke HTTP/1.1\r\nHost: {addr}\r\n").as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    s.signal("-TERM");
    std::thread::sleep(Duration::from_millis(300));
    tcp.write_all(b"Content-Length: 2\r\n\r\nhi").unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reply = String::new();
    let _ = tcp.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {reply}"));
    assert_eq!(v["error"]["code"], "ShuttingDown", "{reply}");
    drop(tcp);
    let status = s.wait_exit(Duration::from_secs(10)).expect("the server did not exit");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_running_async_attempt_finishes_within_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &["--shutdown-grace", "10", "--lease-ms", "10000"]);
    s.deploy("burn", wasm_config(20_000), fixture("burn"));
    let id = accepted_id(s.invoke("burn", None, b"1500", &[("invocation-type", "async")]));
    s.wait_record(&id, Duration::from_secs(10), running);
    let t0 = Instant::now();
    s.signal("-TERM");
    let status = s.wait_exit(Duration::from_secs(15)).expect("the server did not exit");
    let elapsed = t0.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        elapsed < Duration::from_secs(5),
        "it exits once the attempt is done, not at the deadline: {elapsed:?}"
    );

    let s = Server::start(dir.path(), &[]);
    let rec = s.invocation(&id);
    assert_eq!((rec["state"].as_str(), rec["attempts"].as_u64()), (Some("SUCCEEDED"), Some(1)), "{rec}");
    assert_eq!(rec["result"], "1500");
}

#[test]
fn an_async_attempt_still_running_at_the_deadline_is_handed_back_and_redelivered_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // A lease of 10 s: a redelivery through lease expiry would take that long.
    let opts = ["--shutdown-grace", "1", "--lease-ms", "10000"];
    let mut s = Server::start(dir.path(), &opts);
    s.deploy("burn", wasm_config(20_000), fixture("burn"));
    let id = accepted_id(s.invoke("burn", None, b"3000", &[("invocation-type", "async")]));
    s.wait_record(&id, Duration::from_secs(10), running);
    let t0 = Instant::now();
    s.signal("-TERM");
    let status = s.wait_exit(Duration::from_secs(10)).expect("the server did not exit");
    let elapsed = t0.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(elapsed < Duration::from_secs(4), "it waits its grace (1 s), then hands back: {elapsed:?}");

    let t1 = Instant::now();
    let s = Server::start(dir.path(), &opts);
    // Redelivered at once: a second attempt starts right after the restart.
    let rec = s.wait_record(&id, Duration::from_secs(3), |v| v["attempts"].as_u64() >= Some(2));
    assert!(t1.elapsed() < Duration::from_secs(3), "redelivered within {:?}: {rec}", t1.elapsed());
    let rec = s.wait_terminal(&id, Duration::from_secs(10));
    eprintln!("handed-back attempt done {:?} after the restart", t1.elapsed());
    assert!(t1.elapsed() < Duration::from_secs(8), "it did not wait for the lease (10 s)");
    assert_eq!(rec["state"], "SUCCEEDED", "{rec}");
    assert_eq!(rec["attempts"], 2, "the handed-back attempt never completed: {rec}");
    assert_eq!(rec["result"], "3000");
}

#[test]
fn a_worker_finishes_its_attempt_on_sigterm_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &REMOTE_LONG_LEASE);
    let mut w = Worker::start(&s.url, dir.path(), "w1", &["--capacity", "1", "--shutdown-grace", "10"]);
    deploy_to_workers(&s, 1, "burn", wasm_config(20_000), fixture("burn"));
    let id = accepted_id(s.invoke("burn", None, b"1500", &[("invocation-type", "async")]));
    s.wait_record(&id, Duration::from_secs(10), running);
    let t0 = Instant::now();
    w.signal("-TERM");
    let status = w.wait_exit(Duration::from_secs(15)).expect("the worker did not exit");
    assert!(status.success(), "the worker must exit 0 after SIGTERM: {status:?}");
    assert!(t0.elapsed() < Duration::from_secs(5), "it exits once its attempt is done: {:?}", t0.elapsed());
    let rec = s.invocation(&id);
    assert_eq!((rec["state"].as_str(), rec["attempts"].as_u64()), (Some("SUCCEEDED"), Some(1)), "{rec}");
}

#[test]
fn a_worker_hands_back_what_outlives_its_grace() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &REMOTE_LONG_LEASE);
    let mut w1 = Worker::start(&s.url, dir.path(), "w1", &["--capacity", "1", "--shutdown-grace", "1"]);
    deploy_to_workers(&s, 1, "burn", wasm_config(20_000), fixture("burn"));
    let id = accepted_id(s.invoke("burn", None, b"4000", &[("invocation-type", "async")]));
    s.wait_record(&id, Duration::from_secs(10), running);
    let t0 = Instant::now();
    w1.signal("-TERM");
    let status = w1.wait_exit(Duration::from_secs(10)).expect("the worker did not exit");
    assert!(status.success(), "{status:?}");
    assert!(t0.elapsed() < Duration::from_secs(4), "it waits its grace (1 s): {:?}", t0.elapsed());
    // Handed back: queued again at once, not running until its lease (10 s) expires.
    let rec = s.invocation(&id);
    assert_eq!((rec["state"].as_str(), rec["attempts"].as_u64()), (Some("QUEUED"), Some(1)), "{rec}");
    let log = std::fs::read_to_string(dir.path().join("attempts-w1.log")).unwrap();
    assert!(log.lines().any(|l| l.starts_with(&format!("handed-back {id} 1 "))), "{log}");
    assert!(!log.lines().any(|l| l.starts_with("accepted")), "a handed-back attempt never completes: {log}");

    let _w2 = Worker::start(&s.url, dir.path(), "w2", &["--capacity", "1"]);
    let rec = s.wait_terminal(&id, Duration::from_secs(15));
    assert_eq!((rec["state"].as_str(), rec["attempts"].as_u64()), (Some("SUCCEEDED"), Some(2)), "{rec}");
    assert_eq!(rec["result"], "4000");
}

#[test]
fn a_second_signal_cuts_the_grace_short_and_still_hands_back() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ["--shutdown-grace", "30", "--lease-ms", "10000"];
    let mut s = Server::start(dir.path(), &opts);
    s.deploy("burn", wasm_config(20_000), fixture("burn"));
    let id = accepted_id(s.invoke("burn", None, b"3000", &[("invocation-type", "async")]));
    s.wait_record(&id, Duration::from_secs(10), running);
    s.signal("-TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(s.wait_exit(Duration::ZERO).is_none(), "the first signal waits for the running attempt");
    let t0 = Instant::now();
    s.signal("-INT");
    let status = s.wait_exit(Duration::from_secs(10)).expect("the server did not exit");
    assert!(status.success(), "{status:?}");
    assert!(t0.elapsed() < Duration::from_secs(2), "the second signal exits at once: {:?}", t0.elapsed());

    let t1 = Instant::now();
    let s = Server::start(dir.path(), &opts);
    let rec = s.wait_record(&id, Duration::from_secs(3), |v| v["attempts"].as_u64() >= Some(2));
    assert!(t1.elapsed() < Duration::from_secs(3), "redelivered at once: {rec}");
    let rec = s.wait_terminal(&id, Duration::from_secs(10));
    assert_eq!((rec["state"].as_str(), rec["attempts"].as_u64()), (Some("SUCCEEDED"), Some(2)), "{rec}");
}
