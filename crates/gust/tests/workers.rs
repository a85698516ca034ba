//! Remote workers: placement, sync and async through a worker, `gust workers`, and a sync
//! invocation whose worker dies failing with "worker lost" (never re-run).

mod common;

use std::time::{Duration, Instant};

use common::{accepted_id, deploy_to_workers, wasm_config, Server, Worker, REMOTE_ONLY};
use gust_testkit::fixture;
use serde_json::Value;

#[test]
fn remote_workers_run_sync_and_async_and_report_state() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &REMOTE_ONLY);
    let _w1 = Worker::start(&s.url, dir.path(), "w1", &["--capacity", "4"]);
    let _w2 = Worker::start(&s.url, dir.path(), "w2", &["--capacity", "4"]);
    let deployed = s.deploy("echo", wasm_config(3000), fixture("echo"));

    // Snapshot propagation: workers pull what changed and compile new code before it is invoked.
    // The snapshot is for workers only (an enrolled one that reported the wasm runtime here),
    // not for the enrollment token.
    let snapshot = format!("{}/internal/v1/snapshot?since=0", s.url);
    let r = s.client().get(&snapshot).bearer_auth("test-worker-token").send().unwrap();
    assert_eq!(common::error_code(r, 401), "Unauthorized");
    let (id, secret) = common::enroll(&s, "observer");
    assert_eq!(common::heartbeat_as(&s, &secret, &id, &["wasm"], 0).status(), 200);
    let delta: Value = s.client().get(&snapshot).bearer_auth(&secret).send().unwrap().json().unwrap();
    assert_eq!(delta["functions"][0]["code_sha256"], deployed["code_sha256"], "{delta}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !["w1", "w2"].iter().all(|w| {
        std::fs::read_dir(dir.path().join(w).join("modules"))
            .map(|d| d.filter_map(Result::ok).any(|e| e.path().extension().is_some_and(|x| x == "cwasm")))
            .unwrap_or(false)
    }) {
        assert!(Instant::now() < deadline, "workers did not prepare the new code ahead of time");
        std::thread::sleep(Duration::from_millis(50));
    }

    let r = s.invoke("echo", None, b"via a worker", &[]);
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "via a worker");
    let id = accepted_id(s.invoke("echo", None, b"queued", &[("invocation-type", "async")]));
    let rec = s.wait_terminal(&id, Duration::from_secs(10));
    assert_eq!(rec["state"], "SUCCEEDED");
    assert_eq!(rec["result"], "queued");

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v: Value = s.get("/v1/workers").json().unwrap();
        let workers: Vec<Value> = v["workers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| [&_w1.id, &_w2.id].iter().any(|id| w["id"] == id.as_str()))
            .cloned()
            .collect();
        let warm: u64 = workers.iter().map(|w| w["warm_environments"].as_u64().unwrap()).sum();
        if workers.len() == 2 && warm >= 1 {
            assert!(workers.iter().all(|w| w["live"] == true && w["capacity"] == 4), "{v}");
            assert!(workers.iter().all(|w| w["snapshot_version"].as_u64().unwrap() >= 1), "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "workers did not report: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The worker protocol requires the worker token.
    let r = s.client().post(format!("{}/internal/v1/workers/heartbeat", s.url)).body("{}").send().unwrap();
    assert_eq!(r.status(), 401);
}

#[test]
fn a_sync_invocation_whose_worker_dies_fails_as_worker_lost() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &REMOTE_ONLY);
    let w = Worker::start(&s.url, dir.path(), "doomed", &["--capacity", "1"]);
    deploy_to_workers(&s, 1, "slow", wasm_config(10_000), fixture("burn"));
    std::thread::scope(|scope| {
        let call = scope.spawn(|| s.invoke("slow", None, b"5000", &[]));
        std::thread::sleep(Duration::from_millis(700));
        w.kill9();
        let r = call.join().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["gust-function-error"], "WorkerLost");
        let body: Value = r.json().unwrap();
        assert!(body["errorMessage"].as_str().unwrap().contains("lost"), "{body}");
    });
    let all: Value = s.get("/v1/functions/slow/invocations").json().unwrap();
    let rec = &all["invocations"][0];
    assert_eq!((rec["state"].as_str(), rec["attempts"].as_u64()), (Some("FAILED"), Some(1)), "never re-run");
}

#[test]
fn without_any_live_worker_a_sync_invocation_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &REMOTE_ONLY);
    s.deploy("echo", wasm_config(3000), fixture("echo"));
    let r = s.invoke("echo", None, b"nobody home", &[]);
    assert_eq!(common::error_code(r, 503), "Unavailable");
    let all: Value = s.get("/v1/functions/echo/invocations").json().unwrap();
    assert_eq!(all["invocations"].as_array().unwrap().len(), 0, "nothing was queued");
    // Async work is still accepted: it waits durably for a worker.
    let r = s.invoke("echo", None, b"later", &[("invocation-type", "async")]);
    assert_eq!(r.status(), 202);
}

/// What the embedded shape hands a runtime reaches one on a remote worker too: the ARN the
/// caller invoked (qualified as the caller qualified it, unqualified when the caller did not
/// qualify), Lambda's Client-Context and the trace id.
#[test]
fn the_caller_s_arn_and_client_context_reach_a_runtime_on_a_remote_worker() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &REMOTE_ONLY);
    let _w = Worker::start(&s.url, dir.path(), "w1", &["--capacity", "2"]);
    let code = gust_testkit::zip(&[("bootstrap", &gust_testkit::fixture_file("bootstrap.py"), 0o755)]);
    s.deploy_zip("lam", serde_json::json!({ "runtime": "provided.al2023", "timeout_ms": 5000 }), code);
    let version = s.publish("lam");
    let context = base64::engine::general_purpose::STANDARD.encode(r#"{"custom":{"tenant":"t-42"}}"#);
    let invoke = |qualifier: Option<String>| -> Value {
        let mut url = format!("{}/2015-03-31/functions/lam/invocations", s.url);
        if let Some(q) = qualifier {
            url.push_str(&format!("?Qualifier={q}"));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = s.client().post(&url).header("x-amz-client-context", &context).body("{}").send().unwrap();
            let (status, error) = (r.status(), r.headers().get("x-amz-function-error").cloned());
            let body = r.text().unwrap();
            if status == 200 && error.is_none() {
                return serde_json::from_str(&body).unwrap();
            }
            assert!(Instant::now() < deadline, "never ran on the worker: {status} {body}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let r = s.put_json("/v1/functions/lam/aliases/live", &serde_json::json!({ "version": version }));
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    // Through an alias: the runtime is told the alias's ARN (the worker used to name the
    // version it resolved to) and the caller's Client-Context (it used to get none).
    let v = invoke(Some("live".into()));
    let seen = &v["context"];
    let arn = seen["arn"].as_str().unwrap();
    assert!(arn.ends_with(":function:lam:live"), "the ARN the caller invoked: {seen}");
    let cc: Value = serde_json::from_str(seen["client_context"].as_str().unwrap()).unwrap();
    assert_eq!(cc["custom"]["tenant"], "t-42", "{seen}");
    // The trace in X-Ray's form: `Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=0`.
    let trace = seen["trace_id"].as_str().unwrap();
    let parts: Vec<&str> = trace.split(';').collect();
    assert_eq!(parts.len(), 3, "{trace}");
    let root = parts[0].strip_prefix("Root=1-").unwrap();
    assert!(root.len() == 33 && root.as_bytes()[8] == b'-', "{trace}");
    assert!(parts[1].strip_prefix("Parent=").is_some_and(|p| p.len() == 16), "{trace}");
    // Unqualified: the unqualified ARN, as Lambda and the embedded shape pass it.
    let v = invoke(None);
    assert!(v["context"]["arn"].as_str().unwrap().ends_with(":function:lam"), "{v}");
}
