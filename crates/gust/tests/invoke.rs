//! Invocations over HTTP: sync outcomes, routing, async with status, retries, idempotency.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{accepted_id, error_code, wasm_config, Server};
use gust_testkit::{example, fixture};
use serde_json::{json, Value};

fn header(r: &reqwest::blocking::Response, name: &str) -> Option<String> {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_string())
}

#[test]
fn sync_outcomes_success_error_trap_timeout_memory() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    s.deploy("echo", wasm_config(3000), fixture("echo"));
    let r = s.invoke("echo", None, br#"{"hello":"world"}"#, &[]);
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "gust-executed-version").as_deref(), Some("$LATEST"));
    assert_eq!(header(&r, "gust-function-error"), None);
    let id = header(&r, "gust-invocation-id").unwrap();
    assert_eq!(r.bytes().unwrap().as_ref(), br#"{"hello":"world"}"#);

    // The record of a keyless sync invocation is written behind: visible shortly after.
    let rec = s.wait_terminal(&id, Duration::from_secs(5));
    assert_eq!(rec["state"], "SUCCEEDED");
    assert_eq!(rec["result"], r#"{"hello":"world"}"#);
    assert_eq!(rec["log"], "echo: invoked\n");
    assert_eq!(rec["mode"], "sync");

    let cases = [
        ("fail", wasm_config(3000), "FunctionError", "exited with code 3"),
        ("trap", wasm_config(3000), "Crashed", "unreachable"),
        ("spin", wasm_config(200), "Timeout", "timed out after 200 ms"),
        ("hog", json!({ "memory_mb": 32, "timeout_ms": 3000 }), "OutOfMemory", "memory limit of 32 MB"),
    ];
    for (name, config, kind, message) in cases {
        s.deploy(name, config, fixture(name));
        let r = s.invoke(name, None, b"{}", &[]);
        assert_eq!(r.status(), 200, "a function error is still a 200");
        assert_eq!(header(&r, "gust-function-error").as_deref(), Some(kind), "{name}");
        let id = header(&r, "gust-invocation-id").unwrap();
        let body: Value = r.json().unwrap();
        assert_eq!(body["errorType"], kind);
        assert!(body["errorMessage"].as_str().unwrap().contains(message), "{name}: {body}");
        let rec = s.wait_terminal(&id, Duration::from_secs(5));
        assert_eq!(rec["state"], "FAILED");
    }
    let rec: Value = s.get("/v1/functions/fail/invocations").json().unwrap();
    assert_eq!(rec["invocations"][0]["log"], "fail: bad input\n", "the function's stderr is its log");
}

#[test]
fn examples_run_and_env_is_passed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    s.deploy("hello", json!({ "env": { "GREETING": "Howdy" } }), example("hello"));
    let r = s.invoke("hello", None, br#"{"name":"Ada"}"#, &[]);
    assert_eq!(r.text().unwrap(), r#"{"message":"Howdy, Ada!","runtime":"gust wasm"}"#);
    s.deploy("wordcount", json!({}), example("wordcount"));
    let r = s.invoke("wordcount", None, b"the quick brown fox jumps over the lazy dog", &[]);
    let v: Value = r.json().unwrap();
    assert_eq!(v, json!({ "bytes": 43, "lines": 1, "words": 9, "top_word": "the", "top_count": 2 }));
}

#[test]
fn weighted_alias_routes_by_weight_and_versions_are_frozen() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    s.deploy("f", json!({ "env": { "GREETING": "v1" } }), example("hello"));
    assert_eq!(s.publish("f"), 1);
    s.put_json("/v1/functions/f", &json!({ "env": { "GREETING": "v2" } }));
    assert_eq!(s.publish("f"), 2);
    s.put_json("/v1/functions/f", &json!({ "env": { "GREETING": "latest" } }));
    let r = s.put_json("/v1/functions/f/aliases/live", &json!({ "version": 1, "weights": { "2": 0.2 } }));
    assert_eq!(r.status(), 200);

    let counts = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut on_v2 = 0;
                    for _ in 0..250 {
                        let r = s.invoke("f", Some("live"), br#"{"name":"x"}"#, &[]);
                        let version = header(&r, "gust-executed-version").unwrap();
                        let body = r.text().unwrap();
                        // The executed version's frozen config is what ran.
                        assert!(body.contains(&format!("v{version}, x")), "{version}: {body}");
                        on_v2 += usize::from(version == "2");
                    }
                    on_v2
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum::<usize>()
    });
    assert!((150..=250).contains(&counts), "1000 invocations at weight 0.2 sent {counts} to version 2");

    let r = s.invoke("f", Some("1"), br#"{"name":"x"}"#, &[]);
    assert_eq!(r.text().unwrap(), r#"{"message":"v1, x!","runtime":"gust wasm"}"#);
    let r = s.invoke("f", None, br#"{"name":"x"}"#, &[]);
    assert_eq!(r.text().unwrap(), r#"{"message":"latest, x!","runtime":"gust wasm"}"#);
}

#[test]
fn async_invocations_complete_and_failures_retry() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    s.deploy("echo", wasm_config(3000), fixture("echo"));
    let id = accepted_id(s.invoke("echo", None, b"async event", &[("invocation-type", "async")]));
    let rec = s.wait_terminal(&id, Duration::from_secs(10));
    assert_eq!(rec["state"], "SUCCEEDED");
    assert_eq!(rec["result"], "async event");
    assert_eq!(rec["payload"], "async event");
    assert_eq!(rec["attempts"], 1);

    // A failing async function is retried twice with backoff, then fails.
    s.deploy("fail", json!({ "retry": { "max_retries": 2, "base_delay_ms": 100 } }), fixture("fail"));
    let id = accepted_id(s.invoke("fail", None, b"{}", &[("invocation-type", "async")]));
    let rec = s.wait_terminal(&id, Duration::from_secs(20));
    assert_eq!(rec["state"], "FAILED");
    assert_eq!(rec["attempts"], 3, "{rec}");
    assert_eq!(rec["function_errors"], 3);
    assert_eq!(rec["error"]["errorType"], "FunctionError");
    assert_eq!(rec["log"], "fail: bad input\n");

    // With retries off, one attempt.
    s.deploy("fail0", json!({ "retry": { "max_retries": 0 } }), fixture("fail"));
    let id = accepted_id(s.invoke("fail0", None, b"{}", &[("invocation-type", "async")]));
    assert_eq!(s.wait_terminal(&id, Duration::from_secs(10))["attempts"], 1);

    // Listing by state, newest first.
    let failed: Value = s.get("/v1/functions/fail/invocations?state=FAILED").json().unwrap();
    assert_eq!(failed["invocations"].as_array().unwrap().len(), 1);
}

#[test]
fn idempotency_keys_deduplicate_sync_and_async() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    s.deploy("slow", wasm_config(5000), fixture("burn"));

    // 50 concurrent sync requests with one key: one invocation, one execution, one outcome.
    let ids: HashSet<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..50)
            .map(|_| {
                scope.spawn(|| {
                    let r = s.invoke("slow", None, b"300", &[("idempotency-key", "order-1")]);
                    assert_eq!(r.status(), 200);
                    let id = header(&r, "gust-invocation-id").unwrap();
                    assert_eq!(r.text().unwrap(), "300");
                    id
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(ids.len(), 1, "one invocation for one key");
    let id = ids.into_iter().next().unwrap();
    let rec = s.invocation(&id);
    assert_eq!((rec["state"].as_str(), rec["attempts"].as_u64()), (Some("SUCCEEDED"), Some(1)));
    let all: Value = s.get("/v1/functions/slow/invocations").json().unwrap();
    assert_eq!(all["invocations"].as_array().unwrap().len(), 1, "the function ran once");

    // A retry later gets the same outcome without running again.
    let r = s.invoke("slow", None, b"300", &[("idempotency-key", "order-1")]);
    assert_eq!(header(&r, "gust-invocation-id").unwrap(), id);

    // Same key, different payload: 409 naming the problem.
    let r = s.invoke("slow", None, b"301", &[("idempotency-key", "order-1")]);
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"]["code"], "IdempotencyKeyMismatch");
    assert!(v["error"]["message"].as_str().unwrap().contains(&id), "{v}");

    // Async: the same key returns the same id.
    let a1 = s.invoke("slow", None, b"1", &[("invocation-type", "async"), ("idempotency-key", "evt-9")]);
    let a2 = s.invoke("slow", None, b"1", &[("invocation-type", "async"), ("idempotency-key", "evt-9")]);
    assert_eq!((a1.status(), a2.status()), (reqwest::StatusCode::ACCEPTED, reqwest::StatusCode::ACCEPTED));
    let id1 = a1.json::<Value>().unwrap()["invocation_id"].clone();
    assert_eq!(id1, a2.json::<Value>().unwrap()["invocation_id"]);
    let r = s.invoke("slow", None, b"2", &[("invocation-type", "async"), ("idempotency-key", "evt-9")]);
    assert_eq!(error_code(r, 409), "IdempotencyKeyMismatch");
    assert_eq!(error_code(s.invoke("slow", None, b"1", &[("idempotency-key", "")]), 400), "InvalidRequest");
}

#[test]
fn a_function_running_longer_than_its_lease_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--lease-ms", "1000"]);
    s.deploy("slow", wasm_config(5000), fixture("burn"));
    let id = accepted_id(s.invoke("slow", None, b"2500", &[("invocation-type", "async")]));
    let rec = s.wait_terminal(&id, Duration::from_secs(10));
    assert_eq!(rec["state"], "SUCCEEDED");
    assert_eq!(rec["attempts"], 1, "renewal kept the lease: no second attempt: {rec}");
    assert_eq!(rec["lost_attempts"], 0);
}

/// A Client-Context is stored with the request and handed to whichever worker runs it, so a
/// hostile one is refused at the edge: too large, not base64, or not JSON is a 400 naming it,
/// and no invocation is recorded.
#[test]
fn a_hostile_client_context_is_refused_before_anything_is_stored() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    s.deploy("echo", wasm_config(3000), fixture("echo"));
    let b64 = base64::engine::general_purpose::STANDARD;
    let huge = b64.encode(format!(r#"{{"custom":{{"pad":"{}"}}}}"#, "x".repeat(4_000)));
    for (what, cc) in
        [("too large", huge), ("not base64", "%%%".into()), ("not JSON", b64.encode("not json"))]
    {
        let r = s
            .client()
            .post(format!("{}/2015-03-31/functions/echo/invocations", s.url))
            .header("x-amz-client-context", cc)
            .body("{}")
            .send()
            .unwrap();
        assert_eq!(r.status(), 400, "{what}");
        assert!(r.text().unwrap().contains("ClientContext"), "{what}: the error names the field");
    }
    let listed: serde_json::Value = s.get("/v1/functions/echo/invocations").json().unwrap();
    assert_eq!(listed["invocations"].as_array().map(Vec::len), Some(0), "nothing recorded: {listed}");
}
