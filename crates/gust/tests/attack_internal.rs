//! Attacks on the internal surfaces, black box: a worker holding a valid credential of its own
//! (enrolled with the enrollment token, as any worker machine can) sending what no real worker
//! sends, and a function answering its URL with what no web framework answers. Each test
//! asserts what the server must keep doing for everyone else.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{create_url, enroll, url_client, wasm_config, Server, REMOTE_ONLY};
use gust_testkit::fixture;
use reqwest::blocking::Response;
use serde_json::{json, Value};

fn post_as(s: &Server, secret: &str, path: &str, body: &Value) -> Response {
    s.client().post(format!("{}{path}", s.url)).bearer_auth(secret).json(body).send().unwrap()
}

/// A heartbeat as `id` reporting `runtimes` (as JSON strings), `capacity` and a snapshot far
/// ahead, so placement finds it able to run anything deployed.
fn heartbeat(s: &Server, secret: &str, id: &str, runtimes: Value, capacity: u32) -> Response {
    let revision =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let hb = json!({
        "id": id, "revision": revision, "runtimes": runtimes, "capacity": capacity,
        "running": 0, "warm": [], "snapshot_version": 1u64 << 40,
    });
    post_as(s, secret, "/internal/v1/workers/heartbeat", &hb)
}

/// A WASI command module whose result (stdout) is exactly `out`.
fn answers(out: &[u8]) -> Vec<u8> {
    let mut escaped = String::with_capacity(out.len() * 3);
    for b in out {
        escaped.push_str(&format!("\\{b:02x}"));
    }
    let pages = (out.len() + 2048).div_ceil(65536) + 1;
    let wat = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") {pages})
  (data (i32.const 1024) "{escaped}")
  (func (export "_start")
    (local $at i32) (local $left i32)
    (local.set $at (i32.const 1024))
    (local.set $left (i32.const {len}))
    (block $done
      (loop $write
        (br_if $done (i32.eqz (local.get $left)))
        (i32.store (i32.const 0) (local.get $at))
        (i32.store (i32.const 4) (local.get $left))
        (br_if $done (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))
        (br_if $done (i32.eqz (i32.load (i32.const 16))))
        (local.set $at (i32.add (local.get $at) (i32.load (i32.const 16))))
        (local.set $left (i32.sub (local.get $left) (i32.load (i32.const 16))))
        (br $write)))))"#,
        len = out.len()
    );
    wat::parse_str(&wat).expect("the module assembles")
}

// ---- a function's URL answer -----------------------------------------------------------------

/// A structured answer (`statusCode`, `headers`) with more distinct header names than an
/// `http::HeaderMap` holds (24,576): the URL must answer 502 as for any malformed answer, not
/// panic in the handler and drop the caller's connection.
#[test]
fn a_url_answer_with_too_many_headers_is_a_bad_gateway_not_a_dropped_connection() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let headers: serde_json::Map<String, Value> =
        (0..30_000).map(|i| (format!("h{i}"), json!("v"))).collect();
    let answer = json!({ "statusCode": 200, "headers": headers, "body": "hi" }).to_string();
    s.deploy("many-headers", wasm_config(10_000), answers(answer.as_bytes()));
    // The same answer through the invoke API is just its result: the function is fine.
    let r = s.invoke("many-headers", None, b"{}", &[]);
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().len(), answer.len());

    let url = create_url(&s.url, "many-headers", json!({ "auth_type": "NONE" }), None);
    let base = url["function_url"].as_str().unwrap().to_string();
    let r = url_client().get(&base).send();
    let r = r.unwrap_or_else(|e| {
        panic!("the URL dropped the connection instead of answering (a handler panic?): {e:?}")
    });
    assert_eq!(r.status(), 502, "a malformed answer is a bad gateway");
    assert_eq!(s.get("/healthz").status(), 200);
}

/// Path-based URLs share the API's (and the console's) origin, which is why their
/// `Set-Cookie`s are confined under `/url/<id>/`. `Clear-Site-Data` is not confinable: it
/// wipes every cookie of the site (every tenant's, whatever its path) and its storage, so a
/// tenant's function must not be able to send it from the shared origin.
#[test]
fn a_path_based_url_cannot_clear_the_shared_origins_cookies_and_storage() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let answer = json!({
        "statusCode": 200, "body": "bye",
        "headers": {
            "clear-site-data": "\"cookies\", \"storage\"",
            "service-worker-allowed": "/",
            "strict-transport-security": "max-age=31536000; includeSubDomains",
            "alt-svc": "h2=\"evil.example:443\"",
        },
    });
    s.deploy("wiper", wasm_config(10_000), answers(answer.to_string().as_bytes()));
    let url = create_url(&s.url, "wiper", json!({ "auth_type": "NONE" }), None);
    let r = url_client().get(url["function_url"].as_str().unwrap()).send().unwrap();
    assert_eq!(r.status(), 200);
    for name in ["clear-site-data", "service-worker-allowed", "strict-transport-security", "alt-svc"] {
        assert!(
            r.headers().get(name).is_none(),
            "a tenant's function set {name} on the shared origin: {:?}",
            r.headers().get(name)
        );
    }
}

// ---- the worker protocol ---------------------------------------------------------------------

/// The server stores every heartbeat and reads the live workers' rows several times a second
/// (placer, live-worker view): what a worker reports must stay small. `warm` is bounded
/// (`MAX_WARM_REPORTED`); `runtimes` must be too.
#[test]
fn a_heartbeat_cannot_make_the_server_store_megabytes_of_runtimes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &REMOTE_ONLY);
    let (id, secret) = enroll(&s, "bloat");
    let runtimes = Value::Array(vec![json!("wasm"); 1_000_000]);
    // A worker heartbeats twice a second: for a second, as it would.
    let cpu = common::cpu_seconds(s.pid());
    let started = Instant::now();
    let mut status = 0;
    for _ in 0..2 {
        status = heartbeat(&s, &secret, &id, runtimes.clone(), 0).status().as_u16();
        std::thread::sleep(Duration::from_millis(500).saturating_sub(started.elapsed() / 2));
    }
    let cpu = common::cpu_seconds(s.pid()) - cpu;
    let took = started.elapsed();
    let listed = s.get("/v1/workers").bytes().unwrap().len();
    assert_eq!(
        status, 400,
        "a heartbeat reporting a million runtimes was taken ({status}); the server now lists \
         {listed} bytes of workers, and spent {cpu:.1} s of CPU in the {took:?} this worker \
         heartbeated"
    );
    // A real worker's heartbeat is still taken.
    assert_eq!(heartbeat(&s, &secret, &id, json!(["wasm", "provided.al2023"]), 4).status(), 200);
    assert!(s.get("/v1/workers").bytes().unwrap().len() < 64 * 1024);
    // As is its capacity, up to the most a worker may have.
    let most = gust_core::protocol::MAX_WORKER_CAPACITY as u32;
    assert_eq!(heartbeat(&s, &secret, &id, json!(["wasm"]), most).status(), 200);
    assert_eq!(heartbeat(&s, &secret, &id, json!(["wasm"]), most + 1).status(), 400);
}

/// A renewal (or release) names a list of attempts; a completion call is capped at 256, but
/// a renewal was not: one worker's 7 MB list of made-up attempts is one store transaction of
/// a million lookups and counter bumps, and on SQLite every write of the server (async
/// ingest, deploys, completions) waits behind it.
#[test]
fn a_huge_renewal_list_does_not_stall_the_servers_writes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &REMOTE_ONLY);
    let (id, secret) = enroll(&s, "renewer");
    // Capacity 0: nothing is placed on it, so async work is taken and waits.
    assert_eq!(heartbeat(&s, &secret, &id, json!(["wasm"]), 0).status(), 200);
    s.deploy("ingest", wasm_config(3_000), fixture("echo"));
    let baseline = Instant::now();
    assert_eq!(s.invoke("ingest", None, b"{}", &[("invocation-type", "async")]).status(), 202);
    let baseline = baseline.elapsed();

    // Ids are any string: one letter keeps a million under the 9 MB worker body limit.
    let attempts = Value::Array(vec![json!(["a", 1]); 1_000_000]);
    let body = json!({ "attempts": attempts });
    let (url, path) = (s.url.clone(), format!("/internal/v1/workers/{id}/renew"));
    let renewer = std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
        let started = Instant::now();
        let r = client.post(format!("{url}{path}")).bearer_auth(secret).json(&body).send().unwrap();
        (r.status().as_u16(), started.elapsed())
    });
    // Once the list is in (it takes a moment to send and parse), time an async invocation.
    std::thread::sleep(Duration::from_millis(1_500));
    let started = Instant::now();
    let r = s.invoke("ingest", None, b"{}", &[("invocation-type", "async")]);
    let ingest = started.elapsed();
    assert_eq!(r.status(), 202);
    let (renew_status, renew_took) = renewer.join().unwrap();
    assert!(
        ingest < Duration::from_secs(1),
        "an async invocation took {ingest:?} (before: {baseline:?}) while a worker's renewal of a \
         million made-up attempts ran ({renew_status} after {renew_took:?})"
    );
    assert_eq!(renew_status, 400, "a renewal of a million attempts is refused (took {renew_took:?})");
}

/// A remote worker's completion is bounded "as a local attempt's is" (its log, its error):
/// its result must be too. A local attempt answering more than 6 MB fails
/// (`ResultTooLarge`); a worker's 6.5 MB report was taken and handed to the sync caller whole.
#[test]
fn a_worker_cannot_report_a_result_past_the_result_limit() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &REMOTE_ONLY);
    let (id, secret) = enroll(&s, "big-result");
    assert_eq!(heartbeat(&s, &secret, &id, json!(["wasm"]), 1).status(), 200);
    s.deploy("f", wasm_config(10_000), fixture("echo"));
    assert_eq!(heartbeat(&s, &secret, &id, json!(["wasm"]), 1).status(), 200);

    let (url, client) = (s.url.clone(), s.client().clone());
    let caller = std::thread::spawn(move || {
        let r = client.post(format!("{url}/v1/functions/f/invoke")).body("{}").send().unwrap();
        (r.status().as_u16(), r.bytes().unwrap().len())
    });
    let poll = post_as(
        &s,
        &secret,
        &format!("/internal/v1/workers/{id}/poll"),
        &json!({ "max": 1, "wait_ms": 5000 }),
    );
    assert_eq!(poll.status(), 200);
    let poll: Value = poll.json().unwrap();
    let assignment = &poll["assignments"][0];
    assert!(assignment.is_object(), "the sync invocation was handed to the worker: {poll}");
    let big = vec![b'a'; 6 * 1024 * 1024 + 512 * 1024];
    let report = json!({
        "invocation_id": assignment["invocation_id"], "epoch": assignment["epoch"], "succeeded": true,
        "result_b64": base64::engine::general_purpose::STANDARD.encode(&big), "error": null, "log": "",
    });
    let r = post_as(&s, &secret, &format!("/internal/v1/workers/{id}/complete"), &report);
    let completed = r.status().as_u16();
    let (status, len) = caller.join().unwrap();
    assert!(
        len <= gust_core::limits::MAX_RESULT_BYTES,
        "the worker's report ({completed}) reached the caller as a {status} of {len} bytes, past \
         the {} byte result limit",
        gust_core::limits::MAX_RESULT_BYTES
    );
}

/// Reserved concurrency across a cluster counts async attempts on remote workers with a slot
/// the worker's server holds until the attempt completes or is handed back. Any worker
/// (another tenant's machine, any holder of the enrollment token) could end that slot by
/// naming the attempt in a release or a stale completion of its own: the store refused the
/// release as not its attempt, but the server had already given the slot back, so a second
/// attempt ran past the limit. (PostgreSQL only: an embedded server's limit is in memory.)
#[test]
fn a_worker_cannot_free_the_concurrency_slot_of_another_workers_attempt() {
    let Some(pg) = gust_testkit::postgres_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let schema = gust_testkit::unique_schema("slots");
    let mut flags: Vec<&str> = REMOTE_ONLY.to_vec();
    flags.extend(["--store", &pg, "--store-schema", &schema]);
    let s = Server::start(dir.path(), &flags);
    let (a, a_secret) = enroll(&s, "honest");
    assert_eq!(heartbeat(&s, &a_secret, &a, json!(["wasm"]), 2).status(), 200);
    let mut config = wasm_config(60_000);
    config["reserved_concurrency"] = 1.into();
    config["retry"] = json!({ "max_retries": 0, "base_delay_ms": 0, "max_event_age_s": 600 });
    s.deploy("limited", config, fixture("echo"));

    // The honest worker keeps itself live and its attempts leased.
    let held: std::sync::Arc<parking_lot::Mutex<Vec<(String, u64)>>> = Default::default();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let keeper = {
        let (url, secret, id, held, stop) =
            (s.url.clone(), a_secret.clone(), a.clone(), held.clone(), stop.clone());
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let revision =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
                        as u64;
                let hb = json!({
                    "id": id, "revision": revision, "runtimes": ["wasm"], "capacity": 2,
                    "running": held.lock().len(), "warm": [], "snapshot_version": 1u64 << 40,
                });
                let _ = client
                    .post(format!("{url}/internal/v1/workers/heartbeat"))
                    .bearer_auth(&secret)
                    .json(&hb)
                    .send();
                let attempts: Vec<Value> = held.lock().iter().map(|(i, e)| json!([i, e])).collect();
                if !attempts.is_empty() {
                    let _ = client
                        .post(format!("{url}/internal/v1/workers/{id}/renew"))
                        .bearer_auth(&secret)
                        .json(&json!({ "attempts": attempts }))
                        .send();
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let poll = |wait_ms: u64| -> Vec<(String, u64)> {
        let r = post_as(
            &s,
            &a_secret,
            &format!("/internal/v1/workers/{a}/poll"),
            &json!({ "max": 2, "wait_ms": wait_ms }),
        );
        assert_eq!(r.status(), 200);
        let v: Value = r.json().unwrap();
        let got: Vec<(String, u64)> = v["assignments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x["invocation_id"].as_str().unwrap().to_string(), x["epoch"].as_u64().unwrap()))
            .collect();
        held.lock().extend(got.iter().cloned());
        got
    };
    let poll_until = |id: &str, within: Duration| -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if poll(500).iter().any(|(i, _)| i == id) {
                return true;
            }
        }
        false
    };

    let first = common::accepted_id(s.invoke("limited", None, b"{}", &[("invocation-type", "async")]));
    assert!(poll_until(&first, Duration::from_secs(10)), "the first attempt reaches the worker");
    // At its limit of 1: a second one waits (throttled, handed back) while the first runs.
    let second = common::accepted_id(s.invoke("limited", None, b"{}", &[("invocation-type", "async")]));
    assert!(!poll_until(&second, Duration::from_secs(2)), "the limit holds before the attack");
    assert!(s.metric("gust_throttled_total") >= 1, "the second was tried, and throttled");

    // Mallory names the first attempt in a release (and a stale completion) of her own.
    let (m, m_secret) = enroll(&s, "mallory");
    assert_eq!(heartbeat(&s, &m_secret, &m, json!(["wasm"]), 0).status(), 200);
    let r = post_as(
        &s,
        &m_secret,
        &format!("/internal/v1/workers/{m}/release"),
        &json!({ "attempts": [[first, 0]] }),
    );
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_ne!(v["verdicts"][0], "accepted", "not her attempt: {v}");
    let ran_past_the_limit = poll_until(&second, Duration::from_secs(5));
    let first_state = s.invocation(&first)["state"].clone();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    keeper.join().unwrap();
    assert!(
        !ran_past_the_limit,
        "after another worker's refused release of the first attempt (still {first_state}), the \
         second ran beside it past the reserved concurrency of 1"
    );
}

// ---- recursive parsers reachable by a deployer ---------------------------------------------

/// Checking a zip package resolves each link's target component by component, and each step
/// looked up the whole path walked so far: a 4 KB target of 2,048 components cost ~2 million
/// hashed path components, per link, in the server's process (a blocking thread, no deadline;
/// 80 ms a link in a debug build). A package of 20,000 such links (MAX_ENTRIES) is tens of
/// kilobytes compressed and held a core for about half an hour. Now the walk looks up no path
/// deeper than the deepest link, and the whole package's links get a budget of steps: such a
/// package is refused, with a message saying why, as soon as the budget is spent.
#[test]
fn a_package_of_long_link_targets_is_refused_not_checked_for_minutes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let target = format!("{}y", "y/".repeat(2047));
    assert_eq!(target.len(), 4095);
    let config = json!({ "runtime": "provided.al2023", "timeout_ms": 3_000 });
    assert_eq!(s.put_json("/v1/functions/links", &config).status(), 200);
    let upload = |n: usize| {
        let names: Vec<String> = (0..n).map(|i| format!("l{i}")).collect();
        let links: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), target.as_str())).collect();
        let package =
            gust_testkit::zip_with_links(&[("bootstrap", b"#!/bin/sh\nexit 0\n", 0o755)], &links, false);
        s.put_zip("/v1/functions/links/code", package)
    };
    assert_eq!(upload(200).status(), 200, "200 long links are within the budget");
    // 2,000 of them (8 MB stored) would have taken minutes; they are past the budget.
    let r = upload(2_000);
    assert_eq!(r.status(), 400);
    let body = r.text().unwrap();
    assert!(body.contains("links are too long to follow"), "{body}");
}

// ---- wasi:http components --------------------------------------------------------------------

/// A wasi:http component (`hello`'s world) built with `wit-component` from this core module:
///
///     ;; A wasi:http component that keeps headers in the host's memory: N `fields` of ~120 KB each,
///     ;; never dropped, then answers 200 "held".
///     (module
///       (import "wasi:http/types@0.2.12" "[constructor]fields" (func $fields (result i32)))
///       (import "wasi:http/types@0.2.12" "[method]fields.append" (func $append (param i32 i32 i32 i32 i32 i32)))
///       (import "wasi:http/types@0.2.12" "[static]fields.from-list" (func $from_list (param i32 i32 i32)))
///       (import "wasi:http/types@0.2.12" "[constructor]outgoing-response" (func $response (param i32) (result i32)))
///       (import "wasi:http/types@0.2.12" "[method]outgoing-response.body" (func $response_body (param i32 i32)))
///       (import "wasi:http/types@0.2.12" "[method]outgoing-body.write" (func $body_write (param i32 i32)))
///       (import "wasi:http/types@0.2.12" "[static]outgoing-body.finish" (func $body_finish (param i32 i32 i32 i32)))
///       (import "wasi:http/types@0.2.12" "[static]response-outparam.set"
///         (func $outparam_set (param i32 i32 i32 i32 i64 i32 i32 i32 i32)))
///       (import "wasi:http/types@0.2.12" "[resource-drop]incoming-request" (func $drop_request (param i32)))
///       (import "wasi:io/streams@0.2.12" "[method]output-stream.blocking-write-and-flush"
///         (func $write (param i32 i32 i32 i32)))
///       (import "wasi:io/streams@0.2.12" "[resource-drop]output-stream" (func $drop_stream (param i32)))
///       (memory (export "memory") 3)
///       ;; 64: body "held\n"; 80: "a"; 81: "b"; 512+: return areas; 65536..125536: a 60,000-byte value.
///       (data (i32.const 64) "held\n")
///       (data (i32.const 80) "ab")
///       (func (export "wasi:http/incoming-handler@0.2.12#handle") (param $request i32) (param $out i32)
///         (local $i i32) (local $f i32) (local $headers i32) (local $resp i32) (local $body i32) (local $stream i32)
///         (memory.fill (i32.const 65536) (i32.const 0x61) (i32.const 60000))
///         (block $done
///           (loop $more
///             (br_if $done (i32.ge_u (local.get $i) (i32.const 4000)))
///             (local.set $f (call $fields))
///             (call $append (local.get $f) (i32.const 80) (i32.const 1) (i32.const 65536) (i32.const 60000) (i32.const 512))
///             (call $append (local.get $f) (i32.const 81) (i32.const 1) (i32.const 65536) (i32.const 60000) (i32.const 512))
///             (local.set $i (i32.add (local.get $i) (i32.const 1)))
///             (br $more)))
///         (call $from_list (i32.const 128) (i32.const 0) (i32.const 512))
///         (local.set $headers (i32.load (i32.const 516)))
///         (local.set $resp (call $response (local.get $headers)))
///         (call $response_body (local.get $resp) (i32.const 528))
///         (local.set $body (i32.load (i32.const 532)))
///         (call $body_write (local.get $body) (i32.const 544))
///         (local.set $stream (i32.load (i32.const 548)))
///         (call $outparam_set (local.get $out) (i32.const 0) (local.get $resp)
///           (i32.const 0) (i64.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))
///         (call $write (local.get $stream) (i32.const 64) (i32.const 5) (i32.const 560))
///         (call $drop_stream (local.get $stream))
///         (call $body_finish (local.get $body) (i32.const 0) (i32.const 0) (i32.const 576))
///         (call $drop_request (local.get $request)))
///       (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
///     )
///
/// Each `fields` it makes lives in the host's resource table, outside the guest's linear
/// memory and so outside its `memory_mb`; wasmtime bounds one `fields` (128 KiB) and the
/// table's entries (a million), not their sum.
const HEADER_HOG: &str = concat!(
    "AGFzbQ0AAQAHDQFCAQQABWVycm9yAwEKGQEAFHdhc2k6aW8vZXJyb3JAMC4yLjEyBQAGCgEDAAAFZXJyb3IHsgEBQgsEAA1v",
    "dXRwdXQtc3RyZWFtAwECAwIBAQQABWVycm9yAwABAWkCAXECFWxhc3Qtb3BlcmF0aW9uLWZhaWxlZAEDAAZjbG9zZWQAAAQA",
    "DHN0cmVhbS1lcnJvcgMABAFoAAFwfQFqAAEFAUACBHNlbGYGCGNvbnRlbnRzBwAIBAAuW21ldGhvZF1vdXRwdXQtc3RyZWFt",
    "LmJsb2NraW5nLXdyaXRlLWFuZC1mbHVzaAEJChsBABZ3YXNpOmlvL3N0cmVhbXNAMC4yLjEyBQIGEgEDAAENb3V0cHV0LXN0",
    "cmVhbQf7DgFCQQQABmZpZWxkcwMBAXMEAAlmaWVsZC1rZXkDAAEEAApmaWVsZC1uYW1lAwACAXB9BAALZmllbGQtdmFsdWUD",
    "AAQBcQMOaW52YWxpZC1zeW50YXgAAAlmb3JiaWRkZW4AAAlpbW11dGFibGUAAAQADGhlYWRlci1lcnJvcgMABgQAB2hlYWRl",
    "cnMDAAAEABFvdXRnb2luZy1yZXNwb25zZQMBBAANb3V0Z29pbmctYm9keQMBAgMCAQMEAA1vdXRwdXQtc3RyZWFtAwALBAAI",
    "dHJhaWxlcnMDAAABa3MBa3sBcgIFcmNvZGUOCWluZm8tY29kZQ8EABFETlMtZXJyb3ItcGF5bG9hZAMAEAFrfQFyAghhbGVy",
    "dC1pZBINYWxlcnQtbWVzc2FnZQ4EABpUTFMtYWxlcnQtcmVjZWl2ZWQtcGF5bG9hZAMAEwFreQFyAgpmaWVsZC1uYW1lDgpm",
    "aWVsZC1zaXplFQQAEmZpZWxkLXNpemUtcGF5bG9hZAMAFgFrdwFrFwFxJwtETlMtdGltZW91dAAACUROUy1lcnJvcgERABVk",
    "ZXN0aW5hdGlvbi1ub3QtZm91bmQAABdkZXN0aW5hdGlvbi11bmF2YWlsYWJsZQAAGWRlc3RpbmF0aW9uLUlQLXByb2hpYml0",
    "ZWQAABlkZXN0aW5hdGlvbi1JUC11bnJvdXRhYmxlAAASY29ubmVjdGlvbi1yZWZ1c2VkAAAVY29ubmVjdGlvbi10ZXJtaW5h",
    "dGVkAAASY29ubmVjdGlvbi10aW1lb3V0AAAXY29ubmVjdGlvbi1yZWFkLXRpbWVvdXQAABhjb25uZWN0aW9uLXdyaXRlLXRp",
    "bWVvdXQAABhjb25uZWN0aW9uLWxpbWl0LXJlYWNoZWQAABJUTFMtcHJvdG9jb2wtZXJyb3IAABVUTFMtY2VydGlmaWNhdGUt",
    "ZXJyb3IAABJUTFMtYWxlcnQtcmVjZWl2ZWQBFAATSFRUUC1yZXF1ZXN0LWRlbmllZAAAHEhUVFAtcmVxdWVzdC1sZW5ndGgt",
    "cmVxdWlyZWQAABZIVFRQLXJlcXVlc3QtYm9keS1zaXplARgAG0hUVFAtcmVxdWVzdC1tZXRob2QtaW52YWxpZAAAGEhUVFAt",
    "cmVxdWVzdC1VUkktaW52YWxpZAAAGUhUVFAtcmVxdWVzdC1VUkktdG9vLWxvbmcAACBIVFRQLXJlcXVlc3QtaGVhZGVyLXNl",
    "Y3Rpb24tc2l6ZQEVABhIVFRQLXJlcXVlc3QtaGVhZGVyLXNpemUBGQAhSFRUUC1yZXF1ZXN0LXRyYWlsZXItc2VjdGlvbi1z",
    "aXplARUAGUhUVFAtcmVxdWVzdC10cmFpbGVyLXNpemUBFwAYSFRUUC1yZXNwb25zZS1pbmNvbXBsZXRlAAAhSFRUUC1yZXNw",
    "b25zZS1oZWFkZXItc2VjdGlvbi1zaXplARUAGUhUVFAtcmVzcG9uc2UtaGVhZGVyLXNpemUBFwAXSFRUUC1yZXNwb25zZS1i",
    "b2R5LXNpemUBGAAiSFRUUC1yZXNwb25zZS10cmFpbGVyLXNlY3Rpb24tc2l6ZQEVABpIVFRQLXJlc3BvbnNlLXRyYWlsZXIt",
    "c2l6ZQEXAB1IVFRQLXJlc3BvbnNlLXRyYW5zZmVyLWNvZGluZwEOABxIVFRQLXJlc3BvbnNlLWNvbnRlbnQtY29kaW5nAQ4A",
    "FUhUVFAtcmVzcG9uc2UtdGltZW91dAAAE0hUVFAtdXBncmFkZS1mYWlsZWQAABNIVFRQLXByb3RvY29sLWVycm9yAAANbG9v",
    "cC1kZXRlY3RlZAAAE2NvbmZpZ3VyYXRpb24tZXJyb3IAAA5pbnRlcm5hbC1lcnJvcgEOAAQACmVycm9yLWNvZGUDABoEABFy",
    "ZXNwb25zZS1vdXRwYXJhbQMBBAAQaW5jb21pbmctcmVxdWVzdAMBAWkAAUAAAB4EABNbY29uc3RydWN0b3JdZmllbGRzAR8B",
    "bwIDBQFwIAFqAR4BBwFAAQdlbnRyaWVzIQAiBAAYW3N0YXRpY11maWVsZHMuZnJvbS1saXN0ASMBaAABagABBwFAAwRzZWxm",
    "JARuYW1lAwV2YWx1ZQUAJQQAFVttZXRob2RdZmllbGRzLmFwcGVuZAEmAWkcAWkJAWoBKAEbAUACBXBhcmFtJwhyZXNwb25z",
    "ZSkBAAQAHVtzdGF0aWNdcmVzcG9uc2Utb3V0cGFyYW0uc2V0ASoBaQgBQAEHaGVhZGVycysAKAQAHltjb25zdHJ1Y3Rvcl1v",
    "dXRnb2luZy1yZXNwb25zZQEsAWgJAWkKAWoBLgABQAEEc2VsZi0ALwQAHlttZXRob2Rdb3V0Z29pbmctcmVzcG9uc2UuYm9k",
    "eQEwAWgKAWkMAWoBMgABQAEEc2VsZjEAMwQAG1ttZXRob2Rdb3V0Z29pbmctYm9keS53cml0ZQE0AWkNAWs1AWoAARsBQAIE",
    "dGhpcy4IdHJhaWxlcnM2ADcEABxbc3RhdGljXW91dGdvaW5nLWJvZHkuZmluaXNoATgKGwEAFndhc2k6aHR0cC90eXBlc0Aw",
    "LjIuMTIFBAHSCQBhc20BAAAAAT0JYAABf2AGf39/f39/AGADf39/AGABfwF/YAJ/fwBgBH9/f38AYAl/f39/fn9/f38AYAF/",
    "AGAEf39/fwF/AtgECxZ3YXNpOmh0dHAvdHlwZXNAMC4yLjEyE1tjb25zdHJ1Y3Rvcl1maWVsZHMAABZ3YXNpOmh0dHAvdHlw",
    "ZXNAMC4yLjEyFVttZXRob2RdZmllbGRzLmFwcGVuZAABFndhc2k6aHR0cC90eXBlc0AwLjIuMTIYW3N0YXRpY11maWVsZHMu",
    "ZnJvbS1saXN0AAIWd2FzaTpodHRwL3R5cGVzQDAuMi4xMh5bY29uc3RydWN0b3Jdb3V0Z29pbmctcmVzcG9uc2UAAxZ3YXNp",
    "Omh0dHAvdHlwZXNAMC4yLjEyHlttZXRob2Rdb3V0Z29pbmctcmVzcG9uc2UuYm9keQAEFndhc2k6aHR0cC90eXBlc0AwLjIu",
    "MTIbW21ldGhvZF1vdXRnb2luZy1ib2R5LndyaXRlAAQWd2FzaTpodHRwL3R5cGVzQDAuMi4xMhxbc3RhdGljXW91dGdvaW5n",
    "LWJvZHkuZmluaXNoAAUWd2FzaTpodHRwL3R5cGVzQDAuMi4xMh1bc3RhdGljXXJlc3BvbnNlLW91dHBhcmFtLnNldAAGFndh",
    "c2k6aHR0cC90eXBlc0AwLjIuMTIfW3Jlc291cmNlLWRyb3BdaW5jb21pbmctcmVxdWVzdAAHFndhc2k6aW8vc3RyZWFtc0Aw",
    "LjIuMTIuW21ldGhvZF1vdXRwdXQtc3RyZWFtLmJsb2NraW5nLXdyaXRlLWFuZC1mbHVzaAAFFndhc2k6aW8vc3RyZWFtc0Aw",
    "LjIuMTIcW3Jlc291cmNlLWRyb3Bdb3V0cHV0LXN0cmVhbQAHAwMCBAgFAwEAAwdEAwZtZW1vcnkCACh3YXNpOmh0dHAvaW5j",
    "b21pbmctaGFuZGxlckAwLjIuMTIjaGFuZGxlAAsMY2FiaV9yZWFsbG9jAAwKxwECvgEBBn9BgIAEQeEAQeDUA/wLAAJAA0Ag",
    "AkGgH08NARAAIQMgA0HQAEEBQYCABEHg1ANBgAQQASADQdEAQQFBgIAEQeDUA0GABBABIAJBAWohAgwACwtBgAFBAEGABBAC",
    "QYQEKAIAIQQgBBADIQUgBUGQBBAEQZQEKAIAIQYgBkGgBBAFQaQEKAIAIQcgAUEAIAVBAEIAQQBBAEEAQQAQByAHQcAAQQVB",
    "sAQQCSAHEAogBkEAQQBBwAQQBiAAEAgLBQBBgAgLCxQCAEHAAAsFaGVsZAoAQdAACwJhYgDMAQRuYW1lAX4LAAZmaWVsZHMB",
    "BmFwcGVuZAIJZnJvbV9saXN0AwhyZXNwb25zZQQNcmVzcG9uc2VfYm9keQUKYm9keV93cml0ZQYLYm9keV9maW5pc2gHDG91",
    "dHBhcmFtX3NldAgMZHJvcF9yZXF1ZXN0CQV3cml0ZQoLZHJvcF9zdHJlYW0CNAELCAAHcmVxdWVzdAEDb3V0AgFpAwFmBAdo",
    "ZWFkZXJzBQRyZXNwBgRib2R5BwZzdHJlYW0DDwELAgAEZG9uZQEEbW9yZQAvCXByb2R1Y2VycwEMcHJvY2Vzc2VkLWJ5AQ13",
    "aXQtY29tcG9uZW50BzAuMjU0LjIBnAIAYXNtAQAAAAEvBmAGf39/f39/AGADf39/AGACf38AYAR/f39/AGAJf39/f35/f39/",
    "AGAEf39/fwADCAcAAQICAwQFBAUBcAEHBwcoCAEwAAABMQABATIAAgEzAAMBNAAEATUABQE2AAYIJGltcG9ydHMBAAp1BxMA",
    "IAAgASACIAMgBCAFQQARAAALDQAgACABIAJBAREBAAsLACAAIAFBAhECAAsLACAAIAFBAxECAAsPACAAIAEgAiADQQQRAwAL",
    "GQAgACABIAIgAyAEIAUgBiAHIAhBBREEAAsPACAAIAEgAiADQQYRBQALAC8JcHJvZHVjZXJzAQxwcm9jZXNzZWQtYnkBDXdp",
    "dC1jb21wb25lbnQHMC4yNTQuMgGuAQBhc20BAAAAAS8GYAZ/f39/f38AYAN/f38AYAJ/fwBgBH9/f38AYAl/f39/fn9/f38A",
    "YAR/f39/AAIzCAABMAAAAAExAAEAATIAAgABMwACAAE0AAMAATUABAABNgAFAAgkaW1wb3J0cwFwAQcHCQ0BAEEACwcAAQID",
    "BAUGAC8JcHJvZHVjZXJzAQxwcm9jZXNzZWQtYnkBDXdpdC1jb21wb25lbnQHMC4yNTQuMgIEAQABAAZBAwMAAhBpbmNvbWlu",
    "Zy1yZXF1ZXN0AwACEXJlc3BvbnNlLW91dHBhcmFtAQACE1tjb25zdHJ1Y3Rvcl1maWVsZHMIBQEBAAAABi8DAAABAAEwAAAB",
    "AAExAQACHltjb25zdHJ1Y3Rvcl1vdXRnb2luZy1yZXNwb25zZQgFAQEAAQAGLQUAAAEAATIAAAEAATMAAAEAATQAAAEAATUD",
    "AAIQaW5jb21pbmctcmVxdWVzdAgDAQMHAo0CAQEJE1tjb25zdHJ1Y3Rvcl1maWVsZHMAABVbbWV0aG9kXWZpZWxkcy5hcHBl",
    "bmQAARhbc3RhdGljXWZpZWxkcy5mcm9tLWxpc3QAAh5bY29uc3RydWN0b3Jdb3V0Z29pbmctcmVzcG9uc2UAAx5bbWV0aG9k",
    "XW91dGdvaW5nLXJlc3BvbnNlLmJvZHkABBtbbWV0aG9kXW91dGdvaW5nLWJvZHkud3JpdGUABRxbc3RhdGljXW91dGdvaW5n",
    "LWJvZHkuZmluaXNoAAYdW3N0YXRpY11yZXNwb25zZS1vdXRwYXJhbS5zZXQABx9bcmVzb3VyY2UtZHJvcF1pbmNvbWluZy1y",
    "ZXF1ZXN0AAgGGAIAAAEAATYDAAENb3V0cHV0LXN0cmVhbQgDAQMIAogBAgECLlttZXRob2Rdb3V0cHV0LXN0cmVhbS5ibG9j",
    "a2luZy13cml0ZS1hbmQtZmx1c2gACRxbcmVzb3VyY2UtZHJvcF1vdXRwdXQtc3RyZWFtAAoAAAIWd2FzaTpodHRwL3R5cGVz",
    "QDAuMi4xMhIBFndhc2k6aW8vc3RyZWFtc0AwLjIuMTISAgZDBAACAQMGbWVtb3J5AAEBAAgkaW1wb3J0cwEAAhVbbWV0aG9k",
    "XWZpZWxkcy5hcHBlbmQAAAEDDGNhYmlfcmVhbGxvYwgIAQEAAgIDAAAGHQEBAAIYW3N0YXRpY11maWVsZHMuZnJvbS1saXN0",
    "CAgBAQADAgMAAAYjAQEAAh5bbWV0aG9kXW91dGdvaW5nLXJlc3BvbnNlLmJvZHkIBwEBAAQBAwAGIAEBAAIbW21ldGhvZF1v",
    "dXRnb2luZy1ib2R5LndyaXRlCAcBAQAFAQMABiEBAQACHFtzdGF0aWNdb3V0Z29pbmctYm9keS5maW5pc2gICgEBAAYDAwAE",
    "CwAGIgEBAAIdW3N0YXRpY11yZXNwb25zZS1vdXRwYXJhbS5zZXQICAEBAAcCAwAABjMBAQABLlttZXRob2Rdb3V0cHV0LXN0",
    "cmVhbS5ibG9ja2luZy13cml0ZS1hbmQtZmx1c2gIBwEBAAgBAwACMAIBCAgkaW1wb3J0cwEAATAADAExAA0BMgAOATMADwE0",
    "ABABNQARATYAEgACAQASBAcgA2kFaQZAAgdyZXF1ZXN0CQxyZXNwb25zZS1vdXQKAQAGLgEAAAEDKHdhc2k6aHR0cC9pbmNv",
    "bWluZy1oYW5kbGVyQDAuMi4xMiNoYW5kbGUIBgEAABMACwSyAgBhc20NAAEACmQDABxpbXBvcnQtdHlwZS1pbmNvbWluZy1y",
    "ZXF1ZXN0AwEAHWltcG9ydC10eXBlLXJlc3BvbnNlLW91dHBhcmFtAwEAHWltcG9ydC10eXBlLWluY29taW5nLXJlcXVlc3Qw",
    "AwAABwMBaQIKJAEAHmltcG9ydC10eXBlLXJlc3BvbnNlLW91dHBhcmFtMAMAAQceAmkEQAIHcmVxdWVzdAMMcmVzcG9uc2Ut",
    "b3V0BQEAChcBABJpbXBvcnQtZnVuYy1oYW5kbGUBBgssAgAQaW5jb21pbmctcmVxdWVzdAMAAAARcmVzcG9uc2Utb3V0cGFy",
    "YW0DAQAHIANpB2kIQAIHcmVxdWVzdAkMcmVzcG9uc2Utb3V0CgEACw4BAAZoYW5kbGUBAAEBCwWZAQEAAAUSaW1wb3J0LWZ1",
    "bmMtaGFuZGxlAQkcaW1wb3J0LXR5cGUtaW5jb21pbmctcmVxdWVzdAMFHWltcG9ydC10eXBlLXJlc3BvbnNlLW91dHBhcmFt",
    "AwYdaW1wb3J0LXR5cGUtaW5jb21pbmctcmVxdWVzdDADBR5pbXBvcnQtdHlwZS1yZXNwb25zZS1vdXRwYXJhbTADBgsnAQAh",
    "d2FzaTpodHRwL2luY29taW5nLWhhbmRsZXJAMC4yLjEyBQMAAJYQDmNvbXBvbmVudC1uYW1lAf8HAAAUABNbY29uc3RydWN0",
    "b3JdZmllbGRzATVpbmRpcmVjdC13YXNpOmh0dHAvdHlwZXNAMC4yLjEyLVttZXRob2RdZmllbGRzLmFwcGVuZAI4aW5kaXJl",
    "Y3Qtd2FzaTpodHRwL3R5cGVzQDAuMi4xMi1bc3RhdGljXWZpZWxkcy5mcm9tLWxpc3QDHltjb25zdHJ1Y3Rvcl1vdXRnb2lu",
    "Zy1yZXNwb25zZQQ+aW5kaXJlY3Qtd2FzaTpodHRwL3R5cGVzQDAuMi4xMi1bbWV0aG9kXW91dGdvaW5nLXJlc3BvbnNlLmJv",
    "ZHkFO2luZGlyZWN0LXdhc2k6aHR0cC90eXBlc0AwLjIuMTItW21ldGhvZF1vdXRnb2luZy1ib2R5LndyaXRlBjxpbmRpcmVj",
    "dC13YXNpOmh0dHAvdHlwZXNAMC4yLjEyLVtzdGF0aWNdb3V0Z29pbmctYm9keS5maW5pc2gHPWluZGlyZWN0LXdhc2k6aHR0",
    "cC90eXBlc0AwLjIuMTItW3N0YXRpY11yZXNwb25zZS1vdXRwYXJhbS5zZXQIDXJlc291cmNlLmRyb3AJTmluZGlyZWN0LXdh",
    "c2k6aW8vc3RyZWFtc0AwLjIuMTItW21ldGhvZF1vdXRwdXQtc3RyZWFtLmJsb2NraW5nLXdyaXRlLWFuZC1mbHVzaAoNcmVz",
    "b3VyY2UuZHJvcAsHcmVhbGxvYww1aW5kaXJlY3Qtd2FzaTpodHRwL3R5cGVzQDAuMi4xMi1bbWV0aG9kXWZpZWxkcy5hcHBl",
    "bmQNOGluZGlyZWN0LXdhc2k6aHR0cC90eXBlc0AwLjIuMTItW3N0YXRpY11maWVsZHMuZnJvbS1saXN0Dj5pbmRpcmVjdC13",
    "YXNpOmh0dHAvdHlwZXNAMC4yLjEyLVttZXRob2Rdb3V0Z29pbmctcmVzcG9uc2UuYm9keQ87aW5kaXJlY3Qtd2FzaTpodHRw",
    "L3R5cGVzQDAuMi4xMi1bbWV0aG9kXW91dGdvaW5nLWJvZHkud3JpdGUQPGluZGlyZWN0LXdhc2k6aHR0cC90eXBlc0AwLjIu",
    "MTItW3N0YXRpY11vdXRnb2luZy1ib2R5LmZpbmlzaBE9aW5kaXJlY3Qtd2FzaTpodHRwL3R5cGVzQDAuMi4xMi1bc3RhdGlj",
    "XXJlc3BvbnNlLW91dHBhcmFtLnNldBJOaW5kaXJlY3Qtd2FzaTppby9zdHJlYW1zQDAuMi4xMi1bbWV0aG9kXW91dHB1dC1z",
    "dHJlYW0uYmxvY2tpbmctd3JpdGUtYW5kLWZsdXNoEyh3YXNpOmh0dHAvaW5jb21pbmctaGFuZGxlckAwLjIuMTIjaGFuZGxl",
    "AQ8AAQEACnNoaW0gdGFibGUBCwACAQAGbWVtb3J5ATkAEQMABG1haW4BGXdpdC1jb21wb25lbnQtc2hpbS1tb2R1bGUCE3dp",
    "dC1jb21wb25lbnQtZml4dXABaQASBgAbd2l0LWNvbXBvbmVudC1zaGltLWluc3RhbmNlARZ3YXNpOmh0dHAvdHlwZXNAMC4y",
    "LjEyAhZ3YXNpOmlvL3N0cmVhbXNAMC4yLjEyAwRtYWluBApmaXh1cC1hcmdzBQVmaXh1cAGcAQUFABR3YXNpOmlvL2Vycm9y",
    "QDAuMi4xMgEWd2FzaTppby9zdHJlYW1zQDAuMi4xMgIWd2FzaTpodHRwL3R5cGVzQDAuMi4xMgMvd2FzaTpodHRwL2luY29t",
    "aW5nLWhhbmRsZXJAMC4yLjEyLXNoaW0taW5zdGFuY2UEIXdhc2k6aHR0cC9pbmNvbWluZy1oYW5kbGVyQDAuMi4xMgGaAgEK",
    "ABNbY29uc3RydWN0b3JdZmllbGRzAR5bY29uc3RydWN0b3Jdb3V0Z29pbmctcmVzcG9uc2UCFVttZXRob2RdZmllbGRzLmFw",
    "cGVuZAMYW3N0YXRpY11maWVsZHMuZnJvbS1saXN0BB5bbWV0aG9kXW91dGdvaW5nLXJlc3BvbnNlLmJvZHkFG1ttZXRob2Rd",
    "b3V0Z29pbmctYm9keS53cml0ZQYcW3N0YXRpY11vdXRnb2luZy1ib2R5LmZpbmlzaAcdW3N0YXRpY11yZXNwb25zZS1vdXRw",
    "YXJhbS5zZXQILlttZXRob2Rdb3V0cHV0LXN0cmVhbS5ibG9ja2luZy13cml0ZS1hbmQtZmx1c2gJBmhhbmRsZQGtAQMJABd0",
    "eS13YXNpOmlvL2Vycm9yQDAuMi4xMgEFZXJyb3ICGXR5LXdhc2k6aW8vc3RyZWFtc0AwLjIuMTIDDW91dHB1dC1zdHJlYW0E",
    "GXR5LXdhc2k6aHR0cC90eXBlc0AwLjIuMTIFEGluY29taW5nLXJlcXVlc3QGEXJlc3BvbnNlLW91dHBhcmFtBxBpbmNvbWlu",
    "Zy1yZXF1ZXN0CA1vdXRwdXQtc3RyZWFtATQEAQAwd2FzaTpodHRwL2luY29taW5nLWhhbmRsZXJAMC4yLjEyLXNoaW0tY29t",
    "cG9uZW50AZwBBQUAFHdhc2k6aW8vZXJyb3JAMC4yLjEyARZ3YXNpOmlvL3N0cmVhbXNAMC4yLjEyAhZ3YXNpOmh0dHAvdHlw",
    "ZXNAMC4yLjEyAy93YXNpOmh0dHAvaW5jb21pbmctaGFuZGxlckAwLjIuMTItc2hpbS1pbnN0YW5jZQQhd2FzaTpodHRwL2lu",
    "Y29taW5nLWhhbmRsZXJAMC4yLjEyAC8JcHJvZHVjZXJzAQxwcm9jZXNzZWQtYnkBDXdpdC1jb21wb25lbnQHMC4yNTQuMg==",
);

/// A component may keep headers only within its memory: 4,000 `fields` of 120 KB each are
/// ~480 MB of the server's own memory, from a function limited to 64 MB (and a million of
/// them, which the table allows, are 120 GB: the server is killed for memory, with everyone's
/// work).
#[test]
fn a_wasi_http_component_cannot_hold_the_servers_memory_in_headers() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let component = base64::engine::general_purpose::STANDARD.decode(HEADER_HOG).unwrap();
    s.deploy("hog", wasm_config(10_000), component);
    let url = create_url(&s.url, "hog", json!({ "auth_type": "NONE" }), None);
    let before = common::peak_rss_kib(s.pid());
    let r = url_client().get(url["function_url"].as_str().unwrap()).send().unwrap();
    let status = r.status().as_u16();
    let body = r.text().unwrap_or_default();
    let grown = common::peak_rss_kib(s.pid()).saturating_sub(before);
    assert!(
        grown < 128 * 1024,
        "one invocation of a 64 MB component grew the server's peak memory by {} MB (it answered \
         {status} {body:?})",
        grown / 1024
    );
}

/// What the store keeps of a worker must read back as it was sent: a heartbeat revision past
/// 2^63 wrapped negative in the store, after which every later (smaller) revision of that
/// worker id was ignored as older, for good, even across a new credential; and `.` or `..` as
/// a worker's name made its own paths (`/internal/v1/workers/../poll`) unusable.
#[test]
fn a_worker_cannot_wedge_its_row_with_a_revision_or_a_name_no_path_can_carry() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &REMOTE_ONLY);
    let (id, secret) = enroll(&s, "wedge");
    let hb = |revision: u64| {
        let hb = json!({
            "id": id, "revision": revision, "runtimes": ["wasm"], "capacity": 1,
            "running": 0, "warm": [], "snapshot_version": 0,
        });
        post_as(&s, &secret, "/internal/v1/workers/heartbeat", &hb).status().as_u16()
    };
    assert_eq!(hb(u64::MAX), 400, "a revision the store cannot keep is refused");
    assert_eq!(hb(1u64 << 63), 400);
    assert_eq!(hb(7), 200, "and the worker's next heartbeat is taken");
    let workers: Value = s.get("/v1/workers").json().unwrap();
    assert!(workers.to_string().contains(&id), "{workers}");

    for name in [".", "..", "-x", ".hidden"] {
        let r =
            s.client().post(format!("{}/v1/workers", s.url)).json(&json!({ "name": name })).send().unwrap();
        assert_eq!(r.status(), 400, "a worker named {name:?}");
        assert_eq!(common::enroll_request(&s, name).status(), 400, "enrolled as {name:?}");
    }
}
