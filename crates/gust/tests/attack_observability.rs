//! The observability surfaces attacked from outside, as a hostile tenant, client, function
//! author, remote worker or network neighbour would: log streams (`/v1/functions/{name}/logs`),
//! charts (`/stats`), invocation listings by time, trace headers, request ids, `/metrics` (the
//! server's and a worker's `--metrics-listen`), the OTLP exporter, the figures a remote worker
//! reports, and the CLI that prints all of it (`gust logs`, `gust init`, profiles).
//!
//! Each test says the attack and what a correct defence does. Tests of weaknesses fail against
//! the code they were written for; the others are regression guards for attacks it withstands.

mod common;

use std::io::{Read as _, Write as _};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{accepted_id, enroll, wasm_config, Server, REMOTE_ONLY};
use gust_testkit::fixture;
use reqwest::blocking::{Client, Response};
use reqwest::Method;
use serde_json::{json, Value};

const ADMIN: &str = "attack-observability-admin-token";

/// A WASI command that writes its event (stdin) to its log (stderr) and answers `"ok"`.
const LOG_ECHO: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 512) "\"ok\"")
  (func (export "_start")
    (local $n i32)
    (loop $copy
      (i32.store (i32.const 0) (i32.const 1024))
      (i32.store (i32.const 4) (i32.const 65536))
      (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16)))
      (local.set $n (i32.load (i32.const 16)))
      (if (i32.gt_u (local.get $n) (i32.const 0))
        (then
          (i32.store (i32.const 4) (local.get $n))
          (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 20)))
          (br $copy))))
    (i32.store (i32.const 32) (i32.const 512))
    (i32.store (i32.const 36) (i32.const 4))
    (drop (call $fd_write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 40)))))
"#;

/// As [`LOG_ECHO`], writing its event to its log, and also to its result, then exiting 1 (a
/// function error whose log and output hold the event).
const LOG_FAIL: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (local $n i32)
    (loop $copy
      (i32.store (i32.const 0) (i32.const 1024))
      (i32.store (i32.const 4) (i32.const 65536))
      (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16)))
      (local.set $n (i32.load (i32.const 16)))
      (if (i32.gt_u (local.get $n) (i32.const 0))
        (then
          (i32.store (i32.const 4) (local.get $n))
          (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 20)))
          (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 20)))
          (br $copy))))
    (call $proc_exit (i32.const 1))))
"#;

fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("a valid module")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A request as `token` (none: unauthenticated).
fn call(s: &Server, token: Option<&str>, method: Method, path: &str, body: Option<&Value>) -> Response {
    let mut rb = s.client().request(method, format!("{}{path}", s.url));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(b);
    }
    rb.send().unwrap()
}

/// Creates function `name` with `code` as `token` (one atomic request).
fn create(s: &Server, token: Option<&str>, name: &str, config: Value, code: &[u8]) {
    let body = json!({ "name": name, "config": config, "code_b64": b64(code) });
    let r = call(s, token, Method::POST, "/v1/functions", Some(&body));
    assert!(r.status().is_success(), "creating {name}: {}", r.text().unwrap());
}

/// A named key (`POST /v1/tokens` as the admin): its bearer token.
fn key(s: &Server, name: &str, role: &str, functions: Option<&str>) -> String {
    let body = json!({ "name": name, "role": role, "functions": functions });
    let r = call(s, Some(ADMIN), Method::POST, "/v1/tokens", Some(&body));
    assert_eq!(r.status(), 201, "creating key {name}");
    r.json::<Value>().unwrap()["token"].as_str().unwrap().to_string()
}

/// A sync invocation as `token`: its id (the call must be answered 200).
fn invoke_as(s: &Server, token: Option<&str>, name: &str, payload: &[u8]) -> String {
    let mut rb = s.client().post(format!("{}/v1/functions/{name}/invoke", s.url)).body(payload.to_vec());
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let r = rb.send().unwrap();
    assert_eq!(r.status(), 200, "invoking {name}");
    r.headers()["gust-invocation-id"].to_str().unwrap().to_string()
}

/// The invocation record as `token`, or `None` while there is none.
fn record_as(s: &Server, token: Option<&str>, id: &str) -> Option<Value> {
    let r = call(s, token, Method::GET, &format!("/v1/invocations/{id}"), None);
    (r.status() == 200).then(|| r.json().unwrap())
}

fn wait_ended(s: &Server, token: Option<&str>, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = record_as(s, token, id) {
            if matches!(v["state"].as_str(), Some("SUCCEEDED" | "FAILED" | "EXPIRED")) {
                return v;
            }
        }
        assert!(Instant::now() < deadline, "invocation {id} never ended");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Opens a log stream as `token`: its status and its events (id, data) on a channel that
/// closes when the stream ends. The response is held (and the stream open) by a thread.
fn follow(
    s: &Server, token: Option<&str>, path: &str, headers: &[(&str, &str)],
) -> (u16, mpsc::Receiver<(String, Value)>) {
    use std::io::BufRead as _;
    let client = Client::builder().timeout(None).build().unwrap();
    let mut rb = client.get(format!("{}{path}", s.url));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().unwrap();
    let status = r.status().as_u16();
    let (tx, rx) = mpsc::channel();
    if status == 200 {
        std::thread::spawn(move || {
            let mut id = String::new();
            for line in std::io::BufReader::new(r).lines() {
                let Ok(line) = line else { return };
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.to_string();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    if tx.send((id.clone(), serde_json::from_str(v).unwrap())).is_err() {
                        return;
                    }
                }
            }
        });
    }
    (status, rx)
}

// ---------------------------------------------------------------------------------------------
// Log streams
// ---------------------------------------------------------------------------------------------

/// Attack: a reader key is leaked (or its tenant leaves); the operator revokes it. The holder
/// had opened `GET /v1/functions/{name}/logs` before, and that stream was authorized once, at
/// connect time: it keeps delivering every new outcome (results, logs) for as long as the
/// holder keeps the connection, though every new request with the key is refused (401).
/// Defence: a follower re-checks its key (at least as often as the key cache lives, 1 s) and
/// ends the stream once the key is revoked.
#[test]
fn a_revoked_key_s_open_log_stream_stops_delivering() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--token", ADMIN]);
    create(&s, Some(ADMIN), "shop-orders", wasm_config(3000), &fixture("echo"));
    let leaked = key(&s, "leaked", "reader", Some("shop-*"));

    let (status, events) = follow(&s, Some(&leaked), "/v1/functions/shop-orders/logs", &[]);
    assert_eq!(status, 200);
    let first = invoke_as(&s, Some(ADMIN), "shop-orders", b"{\"card\":\"4111-before\"}");
    let (_, got) = events.recv_timeout(Duration::from_secs(10)).expect("the stream works before revocation");
    assert_eq!(got["invocation_id"], first.as_str());

    let r = call(&s, Some(ADMIN), Method::DELETE, "/v1/tokens/leaked", None);
    assert!(r.status().is_success(), "revoking: {}", r.status());
    let r = call(&s, Some(&leaked), Method::GET, "/v1/functions/shop-orders", None);
    assert_eq!(r.status(), 401, "the revoked key is refused on new requests");
    std::thread::sleep(Duration::from_secs(2));

    let after = invoke_as(&s, Some(ADMIN), "shop-orders", b"{\"card\":\"4111-after\"}");
    // Ended, or at least silent, is the defence.
    if let Ok((_, v)) = events.recv_timeout(Duration::from_secs(8)) {
        panic!(
            "a revoked key's stream still delivered invocation {} (after revocation: {after}): {v}",
            v["invocation_id"]
        );
    }
}

/// Attack: a follower of a function that is then deleted. `logs.rs` and `gust logs --follow`
/// say a deleted function ends its stream, but the follower's store query
/// (`list_invocations` by name) never fails for a missing function: the stream, and its place
/// among the server's 64, lives on forever, polling the store 4 times a second, and delivers
/// the outcomes of whatever function is created under that name later.
/// Defence: a follower checks that its function still exists (the same incarnation, e.g. by
/// `created_at`) each idle turn, and ends the stream when it does not.
#[test]
fn a_deleted_function_s_log_stream_ends() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create(&s, None, "gone", wasm_config(3000), &fixture("echo"));
    let client = Client::builder().timeout(None).build().unwrap();
    let mut r = client.get(format!("{}/v1/functions/gone/logs", s.url)).send().unwrap();
    assert_eq!(r.status(), 200);
    let (tx, ended) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        let _ = tx.send(());
    });
    assert!(s.delete("/v1/functions/gone").status().is_success());
    assert!(
        ended.recv_timeout(Duration::from_secs(12)).is_ok(),
        "the log stream of a deleted function is still open 12 s later"
    );
}

/// Attack: the 64 followers a server serves are one pool for everyone. A tenant with a reader
/// key limited to its own functions opens 64 streams of its own function and holds them (an
/// idle stream costs it nothing); every other tenant, the administrator included, is refused
/// 429 `TooManyFollowers` for as long as it likes.
/// Defence: a per-key (per-principal) share of the followers, well below the server's bound,
/// so one key is refused before it can exhaust the pool.
#[test]
fn one_tenant_cannot_take_every_log_follower() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--token", ADMIN]);
    create(&s, Some(ADMIN), "a-fn", wasm_config(3000), &fixture("echo"));
    create(&s, Some(ADMIN), "b-fn", wasm_config(3000), &fixture("echo"));
    let a = key(&s, "tenant-a", "reader", Some("a-*"));
    let b = key(&s, "tenant-b", "reader", Some("b-*"));

    let client = Client::builder().timeout(None).build().unwrap();
    let open = |token: &str, function: &str| {
        client.get(format!("{}/v1/functions/{function}/logs", s.url)).bearer_auth(token).send().unwrap()
    };
    // Tenant A grabs what it can (the server's bound is 64).
    let held: Vec<Response> = (0..64).map(|_| open(&a, "a-fn")).filter(|r| r.status() == 200).collect();
    let victim = open(&b, "b-fn");
    assert_eq!(
        victim.status(),
        200,
        "tenant B is refused a log stream because tenant A holds {} of them",
        held.len()
    );
    let admin = open(ADMIN, "b-fn");
    assert_eq!(admin.status(), 200, "even the administrator is refused a log stream");
}

/// Guard. Attack: a function writes into its log what would end the current server-sent event
/// and start forged ones (blank lines, `id:`/`event:`/`data:` lines, lone `\r`, which the SSE
/// format also takes as a line end, NEL and the Unicode separators), hoping a follower (`gust
/// logs --follow`, a browser's EventSource) sees an invented invocation or a moved cursor.
/// Holds: each event's data is one line of JSON, where every line end is escaped.
#[test]
fn a_function_s_log_cannot_forge_log_stream_events() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create(&s, None, "chatty", wasm_config(3000), &wat(LOG_ECHO));
    let forged =
        "start\n\nid: 9999999999999:forged\nevent: invocation\ndata: {\"invocation_id\":\"forged\"}\n\n\
                  \rid: 9999999999999:cr\r\rdata: {\"invocation_id\":\"cr\"}\r\r\
                  \r\nretry: 1\r\n\r\n\u{85}data: x\u{2028}data: y\u{2029}end";

    let client = Client::builder().timeout(None).build().unwrap();
    let mut resp = client.get(format!("{}/v1/functions/chatty/logs", s.url)).send().unwrap();
    assert_eq!(resp.status(), 200);
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n) = resp.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let id = invoke_as(&s, None, "chatty", forged.as_bytes());
    let mut raw = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&raw).contains(&id) {
        let left = deadline.saturating_duration_since(Instant::now());
        raw.extend(rx.recv_timeout(left).expect("the event never came"));
    }
    // A little longer: anything forged would follow at once.
    while let Ok(more) = rx.recv_timeout(Duration::from_millis(1500)) {
        raw.extend(more);
    }
    let text = String::from_utf8(raw).unwrap();
    // Parse as the SSE specification does: CRLF, LF and CR each end a line.
    let mut events: Vec<(String, String)> = Vec::new();
    let (mut ev_id, mut data) = (String::new(), String::new());
    for line in text.replace("\r\n", "\n").replace('\r', "\n").split('\n') {
        if line.is_empty() {
            if !data.is_empty() {
                events.push((ev_id.clone(), std::mem::take(&mut data)));
            }
            continue;
        }
        let (field, value) =
            line.split_once(':').map_or((line, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
        match field {
            "id" => ev_id = value.to_string(),
            "data" => data.push_str(value),
            _ => {}
        }
    }
    assert_eq!(events.len(), 1, "one invocation, one event: {events:?}");
    let (event_id, data) = &events[0];
    assert!(event_id.ends_with(&id), "the cursor is the invocation's own: {event_id}");
    let v: Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["invocation_id"], id.as_str());
    assert_eq!(v["log"], forged, "the log arrives whole, as data");
}

/// Guard. Attack: a key limited to some functions asks for another tenant's logs, charts and
/// invocation listing, by name and by percent-encoded name.
/// Holds: the route table names these routes' function in the path, checked before the
/// handler runs (403).
#[test]
fn a_scoped_key_cannot_follow_chart_or_list_another_tenant_s_function() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--token", ADMIN]);
    create(&s, Some(ADMIN), "a-fn", wasm_config(3000), &fixture("echo"));
    create(&s, Some(ADMIN), "b-fn", wasm_config(3000), &fixture("echo"));
    invoke_as(&s, Some(ADMIN), "b-fn", b"{}");
    let a = key(&s, "tenant-a", "reader", Some("a-?n"));
    for path in [
        "/v1/functions/b-fn/logs",
        "/v1/functions/b-fn/logs?since=0",
        "/v1/functions/b%2Dfn/logs",
        "/v1/functions/b-fn/stats",
        "/v1/functions/b-fn/stats?window=24h&step=6m",
        "/v1/functions/b-fn/invocations?received_before=99999999999999",
        "/v1/functions/%62-fn/invocations",
    ] {
        let r = call(&s, Some(&a), Method::GET, path, None);
        assert_eq!(r.status(), 403, "{path}: {}", r.text().unwrap());
    }
    // Its own function, by name and percent-encoded: the glob sees the decoded name.
    for path in ["/v1/functions/a-fn/logs?since=1m", "/v1/functions/a-%66n/stats"] {
        let r = call(&s, Some(&a), Method::GET, path, None);
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = call(&s, None, Method::GET, "/v1/functions/b-fn/logs", None);
    assert_eq!(r.status(), 401, "no key, no stream");
}

/// Guard. Attack: absurd query parameters on the new read endpoints (overflowing durations,
/// negative times, zero steps, a million buckets, junk cursors) to make the server panic,
/// divide by zero, allocate without bound or answer 5xx.
/// Holds: every one is refused with 400 (or answered sanely), and the server stays up.
#[test]
fn absurd_windows_steps_cursors_and_times_are_refused_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create(&s, None, "f", wasm_config(3000), &fixture("echo"));
    invoke_as(&s, None, "f", b"{}");
    let refused = [
        "/v1/functions/f/stats?window=0",
        "/v1/functions/f/stats?window=9223372036854775807",
        "/v1/functions/f/stats?window=9223372036854775807d",
        "/v1/functions/f/stats?window=99999999999999999999999",
        "/v1/functions/f/stats?window=-1h",
        "/v1/functions/f/stats?window=1h&step=0",
        "/v1/functions/f/stats?window=1h&step=1",
        "/v1/functions/f/stats?window=24h&step=1s",
        "/v1/functions/f/stats?window=25h",
        "/v1/functions/f/stats?window=1h&step=2h",
        "/v1/functions/f/stats?window=1&step=1000",
        "/v1/functions/f/stats?window=1%E2%80%8Bh",
        "/v1/functions/f/stats?window=1h&other=1",
        "/v1/functions/f/logs?since=-1",
        "/v1/functions/f/logs?since=99999999999999999999d",
        "/v1/functions/f/logs?state=RUNNING",
        "/v1/functions/f/invocations?received_before=99999999999999999999",
        "/v1/functions/f/invocations?received_before=1e3",
    ];
    for path in refused {
        let r = s.get(path);
        let status = r.status();
        // (A stream answered 200 would never end: its body is not read.)
        assert_eq!(status, 400, "{path}: {}", if status == 400 { r.text().unwrap() } else { String::new() });
    }
    // A duration back past the epoch starts at the epoch (a stream, not an overflow).
    for path in ["/v1/functions/f/logs?since=9223372036854775807d", "/v1/functions/f/logs?since=0"] {
        assert_eq!(s.get(path).status(), 200, "{path}");
    }
    let answered = [
        "/v1/functions/f/stats?window=240000&step=1000",
        "/v1/functions/f/stats?window=24h&step=6m",
        "/v1/functions/f/invocations?received_before=-9223372036854775808",
        "/v1/functions/f/invocations?received_before=9223372036854775807",
        "/v1/functions/f/invocations?received_before=0&limit=0",
        "/v1/functions/f/invocations?before=%27%3B%20DROP%20TABLE%20invocations%3B--",
    ];
    for path in answered {
        let r = s.get(path);
        assert_eq!(r.status(), 200, "{path}: {}", r.text().unwrap());
    }
    let buckets = s.get("/v1/functions/f/stats?window=24h&step=6m").json::<Value>().unwrap();
    assert!(buckets["buckets"].as_array().unwrap().len() <= 241, "{buckets}");
    // Junk cursors are ignored (the stream starts now), never fatal.
    for junk in ["-9223372036854775808:x", "9223372036854775807:", ":", "1:\u{e9}", "1:a'b"] {
        let client = Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        let r = client
            .get(format!("{}/v1/functions/f/logs", s.url))
            .header("last-event-id", junk.as_bytes())
            .send();
        if let Ok(r) = r {
            assert!(r.status() == 200 || r.status() == 400, "{junk:?}: {}", r.status());
        }
    }
    assert_eq!(s.get("/healthz").status(), 200, "the server survived");
    assert_eq!(s.get("/v1/invocations/nope").status(), 404);
}

// ---------------------------------------------------------------------------------------------
// A remote worker's figures
// ---------------------------------------------------------------------------------------------

/// A worker speaking the protocol by hand (raw JSON, so it can send anything).
struct RawWorker<'s> {
    server: &'s Server,
    id: String,
    secret: String,
}

impl<'s> RawWorker<'s> {
    fn join(server: &'s Server, name: &str) -> RawWorker<'s> {
        let (id, secret) = enroll(server, name);
        RawWorker { server, id, secret }
    }

    fn post(&self, path: &str, body: &Value) -> Response {
        let url = format!("{}{path}", self.server.url);
        self.server.client().post(url).bearer_auth(&self.secret).json(body).send().unwrap()
    }

    fn heartbeat(&self, snapshot: u64) {
        let revision = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let hb = json!({
            "id": self.id, "revision": revision as u64, "runtimes": ["wasm"], "capacity": 4,
            "running": 0, "warm": [], "snapshot_version": snapshot,
        });
        let r = self.post("/internal/v1/workers/heartbeat", &hb);
        assert_eq!(r.status(), 200, "heartbeat: {}", r.text().unwrap());
    }

    /// Polls until invocation `id` is handed over: its epoch.
    fn claim(&self, snapshot: u64, id: &str) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.heartbeat(snapshot);
            let r = self.post(
                &format!("/internal/v1/workers/{}/poll", self.id),
                &json!({ "max": 4, "wait_ms": 500 }),
            );
            let v: Value = r.json().unwrap();
            if let Some(a) = v["assignments"].as_array().unwrap().iter().find(|a| a["invocation_id"] == id) {
                return a["epoch"].as_u64().unwrap();
            }
            assert!(Instant::now() < deadline, "invocation {id} was never handed over");
        }
    }

    fn complete(&self, report: Value) -> Response {
        self.post(&format!("/internal/v1/workers/{}/complete", self.id), &report)
    }
}

/// A server that runs work only on remote workers, with wasm function `f` (64 MB, 5 s).
fn remote_only_with_f(dir: &std::path::Path) -> (Server, u64) {
    let s = Server::start(dir, &REMOTE_ONLY[..3]);
    let config = json!({ "runtime": "wasm", "memory_mb": 64, "timeout_ms": 5000 });
    let snapshot = s.deploy("f", config, fixture("noop"))["revision"].as_u64().unwrap();
    (s, snapshot)
}

/// A GET that may find the server's connection dropped (a handler that panicked): the status
/// and body, or why there was none.
fn try_get(s: &Server, path: &str) -> Result<(u16, String), String> {
    let r = s.client().get(format!("{}{path}", s.url)).send().map_err(|e| format!("{e:?}"))?;
    let status = r.status().as_u16();
    Ok((status, r.text().map_err(|e| format!("{e:?}"))?))
}

/// Attack: a remote worker (any holder of the enrollment token, or a compromised worker host)
/// completes attempts with absurd REPORT figures: a duration and init of u64::MAX µs, memory
/// of u32::MAX MB, a start before the epoch. The server stores them as they came
/// (`internal.rs` `completion` copies `report` through), and every reader then computes with
/// them: `Report::line` adds duration and init (`u64` overflow: a panic in a debug build, a
/// wrapped "Billed Duration: 1 ms" in a release build), the stats add durations per bucket
/// (overflow again), so the record, its log stream event, `gust logs` and the function's
/// charts break, for every reader, for as long as the record is kept.
/// Defence: the server bounds a worker's figures at completion (duration and init within the
/// longest timeout, memory within the largest, `started_at` within the attempt) and readers
/// use saturating arithmetic. (Not to the deployment's own timeout and memory: that would cost
/// a lookup per completion, and a worker trusted with the result is trusted that far.)
#[test]
fn a_remote_worker_s_absurd_report_figures_are_refused_or_clamped() {
    let dir = tempfile::tempdir().unwrap();
    let (s, snapshot) = remote_only_with_f(dir.path());
    let w = RawWorker::join(&s, "evil");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let id = accepted_id(s.invoke("f", None, b"{}", &[("invocation-type", "async")]));
        let epoch = w.claim(snapshot, &id);
        let r = w.complete(json!({
            "invocation_id": id, "epoch": epoch, "succeeded": true, "result_b64": null,
            "error": null, "log": "",
            "report": {
                "started_at": i64::MIN, "duration_us": u64::MAX, "init_us": u64::MAX,
                "memory_mb": u32::MAX, "max_memory_mb": u32::MAX,
            },
        }));
        let status = r.status().as_u16();
        assert!(status == 200 || (400..500).contains(&status), "completion: {status}");
        ids.push(id);
    }

    let mut broken = Vec::new();
    for id in &ids {
        match try_get(&s, &format!("/v1/invocations/{id}")) {
            Err(e) => broken.push(format!("GET /v1/invocations/{id} got no answer: {e}")),
            Ok((status, _)) if status != 200 => broken.push(format!("GET /v1/invocations/{id}: {status}")),
            Ok((_, body)) => {
                let v: Value = serde_json::from_str(&body).unwrap();
                let r = &v["report"];
                if !r.is_null() {
                    let received = v["received_at"].as_i64().unwrap();
                    if r["duration_us"].as_u64().unwrap() > 900_000_000 {
                        broken.push(format!("a duration past the longest timeout was kept: {r}"));
                    }
                    if r["init_us"].as_u64().is_some_and(|i| i > 900_000_000) {
                        broken.push(format!("an init past the longest timeout was kept: {r}"));
                    }
                    if r["memory_mb"].as_u64().unwrap() > 4096
                        || r["max_memory_mb"].as_u64().is_some_and(|m| m > 4096)
                    {
                        broken.push(format!("memory figures past the largest were kept: {r}"));
                    }
                    if r["started_at"].as_i64().unwrap() < received {
                        broken.push(format!("a start before the invocation was received was kept: {r}"));
                    }
                }
            }
        }
    }
    match try_get(&s, "/v1/functions/f/stats?window=1h&step=1h") {
        Err(e) => broken.push(format!("the function's stats got no answer: {e}")),
        Ok((status, body)) if status != 200 => broken.push(format!("stats: {status} {body}")),
        Ok((_, body)) => {
            let v: Value = serde_json::from_str(&body).unwrap();
            for b in v["buckets"].as_array().unwrap() {
                // Two attempts in an hour, each at most 15 minutes: at most half a slot.
                if b["concurrency"].as_f64().unwrap() > 1.0
                    || b["p99_ms"].as_f64().is_some_and(|p| p > 900_000.0)
                {
                    broken.push(format!("stats chart absurd figures: {b}"));
                }
            }
        }
    }
    // The log stream of the function (`gust logs f --follow --since 10m`).
    let stream = Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    match stream.get(format!("{}/v1/functions/f/logs?since=10m", s.url)).send() {
        Err(e) => broken.push(format!("the function's log stream got no answer: {e:?}")),
        Ok(mut r) => {
            let mut text = Vec::new();
            let _ = r.read_to_end(&mut text); // until the 5 s timeout, or the stream breaks
            let events = String::from_utf8_lossy(&text).matches("\ndata: ").count();
            if events < ids.len() {
                broken
                    .push(format!("the function's log stream broke after {events} of {} events", ids.len()));
            }
        }
    }
    assert!(broken.is_empty(), "a hostile worker's figures broke readers:\n{}", broken.join("\n"));
}

/// Attack: a remote worker completes with a log of megabytes (the protocol's body bound is
/// 9 MB). A local attempt's log is kept to its last 64 KiB (`MAX_LOG_BYTES`), but the server
/// stores a remote worker's as it came, so each record, each log stream event, each page of
/// `gust logs` (100 records per follower page) carries it: store and memory amplification.
/// Defence: the server keeps a completion's log to the same 64 KiB tail (and bounds the error
/// message likewise).
#[test]
fn a_remote_worker_s_log_is_bounded_like_a_local_one() {
    let dir = tempfile::tempdir().unwrap();
    let (s, snapshot) = remote_only_with_f(dir.path());
    let w = RawWorker::join(&s, "chatty");
    let id = accepted_id(s.invoke("f", None, b"{}", &[("invocation-type", "async")]));
    let epoch = w.claim(snapshot, &id);
    let log = "x".repeat(4 * 1024 * 1024);
    let message = "y".repeat(2 * 1024 * 1024);
    let r = w.complete(json!({
        "invocation_id": id, "epoch": epoch, "succeeded": false, "result_b64": null,
        "error": { "errorType": "FunctionError", "errorMessage": message }, "log": log,
    }));
    assert!(r.status().is_success() || r.status().is_client_error(), "{}", r.status());
    if let Some(v) = record_as(&s, None, &id) {
        let kept = v["log"].as_str().unwrap_or("").len();
        assert!(kept <= 64 * 1024, "a remote worker's log was kept whole: {kept} bytes");
        let kept = v["error"]["errorMessage"].as_str().unwrap_or("").len();
        assert!(kept <= 64 * 1024, "a remote worker's error message was kept whole: {kept} bytes");
    }
}

// ---------------------------------------------------------------------------------------------
// Stats
// ---------------------------------------------------------------------------------------------

/// Attack: a reader asks for a function's charts. `function_stats` lists the function's
/// invocation records a thousand at a time and keeps up to 50,000 of them, each whole: the
/// event (up to 6 MB), the result (up to 6 MB), the log, to use three numbers of each. Any
/// invoker can make such records (a function that echoes a large event), and any reader can
/// then ask for the chart, concurrently, unbounded: the server's memory grows by the records'
/// size per request (here 4 requests over 16 records of 2 x 3 MB). `logs` followers read
/// pages of 100 whole records the same way (and the stream never sends the payload).
/// Defence: the charts (and the log stream) read only the columns they use (finished_at,
/// state, report; the stream: no payload), and concurrent chart requests are bounded.
#[test]
fn charts_do_not_load_every_payload_and_result_into_memory() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create(
        &s,
        None,
        "big",
        json!({ "runtime": "wasm", "memory_mb": 64, "timeout_ms": 10_000 }),
        &fixture("echo"),
    );
    let payload = vec![b'a'; 3 * 1024 * 1024];
    let mut ids = Vec::new();
    for _ in 0..16 {
        ids.push(invoke_as(&s, None, "big", &payload));
    }
    for id in &ids {
        wait_ended(&s, None, id);
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = common::peak_rss_kib(s.pid());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("{}/v1/functions/big/stats?window=1h", s.url);
            std::thread::spawn(move || {
                Client::builder()
                    .timeout(Duration::from_secs(120))
                    .build()
                    .unwrap()
                    .get(url)
                    .send()
                    .unwrap()
                    .status()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    let after = common::peak_rss_kib(s.pid());
    let grown_mib = after.saturating_sub(before) / 1024;
    assert!(
        grown_mib < 64,
        "four chart requests over 16 records grew the server's peak memory by {grown_mib} MiB ({} -> {} MiB)",
        before / 1024,
        after / 1024
    );
}

// ---------------------------------------------------------------------------------------------
// Traces and request ids
// ---------------------------------------------------------------------------------------------

/// Guard. Attack: a caller's trace headers carry extra keys, control characters, non-UTF-8
/// bytes, kilobytes of junk or a second header, hoping they reach a runtime's
/// `Lambda-Runtime-Trace-Id` header (header injection into the Runtime API), the record or the
/// OTLP export as they came.
/// Holds: a trace is parsed and rebuilt from its hex parts; anything else is dropped and a
/// fresh trace is started.
#[test]
fn hostile_trace_headers_reach_a_runtime_only_rebuilt_from_hex() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let code = gust_testkit::zip(&[("bootstrap", &gust_testkit::fixture_file("bootstrap.py"), 0o755)]);
    s.deploy_zip("lam", json!({ "runtime": "provided.al2023", "timeout_ms": 5000 }), code);
    let root = "Root=1-5759e988-bd862e3fe1be46a994272793";
    let long = format!("{root};Parent=53995c3f42cd8ad8;Sampled=1;Lineage={}", "a".repeat(16 * 1024));
    // (headers sent, the trace the runtime must see: `None` for a fresh one)
    type Case<'a> = (Vec<(&'a str, Vec<u8>)>, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            vec![(
                "x-amzn-trace-id",
                format!("{root};Parent=53995c3f42cd8ad8;Sampled=1;Lineage=\"x\";Self=1-2-3;Evil=\t")
                    .into_bytes(),
            )],
            Some("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"),
        ),
        (vec![("x-amzn-trace-id", format!("{root}0").into_bytes())], None),
        (vec![("x-amzn-trace-id", [root.as_bytes(), b";Parent=\xff\xfe\xfd"].concat())], None),
        (vec![("x-amzn-trace-id", long.into_bytes())], None),
        (vec![("x-amzn-trace-id", b"Root=1-5759e988-bd862e3fe1be46a994272793%0d%0aX-Evil:1".to_vec())], None),
        (
            vec![("traceparent", b"00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01;Evil=1".to_vec())],
            None,
        ),
        (vec![("traceparent", b"00-5759E988BD862E3FE1BE46A994272793-53995c3f42cd8ad8-01".to_vec())], None),
        (
            vec![
                ("x-amzn-trace-id", b"junk".to_vec()),
                ("traceparent", b"00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-00".to_vec()),
            ],
            Some("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0"),
        ),
    ];
    // `Root=1-XXXXXXXX-X{24}[;Parent=X{16}];Sampled=0|1`, lower-case hex only.
    let canonical = |t: &str| {
        let hex = |s: &str, n: usize| {
            s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let parts: Vec<&str> = t.split(';').collect();
        let root_ok = parts[0]
            .strip_prefix("Root=1-")
            .is_some_and(|r| r.len() == 33 && hex(&r[..8], 8) && &r[8..9] == "-" && hex(&r[9..], 24));
        let (middle, last) = (&parts[1..parts.len() - 1], parts[parts.len() - 1]);
        let parent_ok =
            middle.len() <= 1 && middle.iter().all(|p| p.strip_prefix("Parent=").is_some_and(|v| hex(v, 16)));
        root_ok && parent_ok && parts.len() >= 2 && (last == "Sampled=0" || last == "Sampled=1")
    };
    for (headers, expected) in cases {
        let mut rb = s.client().post(format!("{}/v1/functions/lam/invoke", s.url)).body("{}");
        for (k, v) in &headers {
            rb = rb.header(*k, reqwest::header::HeaderValue::from_bytes(v).unwrap());
        }
        let r = rb.send().unwrap();
        assert_eq!(r.status(), 200, "{headers:?}");
        let id = r.headers()["gust-invocation-id"].to_str().unwrap().to_string();
        let seen = r.json::<Value>().unwrap()["context"]["trace_id"].as_str().unwrap().to_string();
        assert!(canonical(&seen), "the runtime was handed {seen:?} for {headers:?}");
        assert!(seen.len() < 100, "{seen}");
        if let Some(e) = expected {
            assert_eq!(seen, e);
        } else {
            assert!(!seen.contains("5759e988-bd862e3fe1be46a994272793"), "a refused header was used: {seen}");
        }
        let rec = wait_ended(&s, None, &id);
        assert_eq!(rec["trace_id"], seen.as_str(), "the record names the trace the runtime saw");
    }
}

/// Guard. Attack: with `--log-format json`, an `X-Request-Id` of JSON, quotes, line ends
/// (encoded), 8 KB, or non-UTF-8 bytes, to forge log lines or fields, or to bloat each line.
/// Holds: only 1-128 of `[A-Za-z0-9._:-]` is taken; anything else gets a fresh id.
#[test]
fn hostile_request_ids_are_replaced_not_logged() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let s = Server::start_logged(&dir.path().join("data"), &log, "info", &["--log-format", "json"]);
    let hostile: Vec<Vec<u8>> = vec![
        b"a\"}\n{\"level\":\"ERROR\",\"fields\":{\"message\":\"forged\"}}"
            .iter()
            .filter(|b| **b != b'\n')
            .copied()
            .collect(),
        "x".repeat(8 * 1024).into_bytes(),
        "x".repeat(129).into_bytes(),
        b"id\xff\xfe".to_vec(),
        b"id with spaces".to_vec(),
        b"%0d%0a{\"forged\":1}".to_vec(),
    ];
    for h in &hostile {
        let r = s
            .client()
            .get(format!("{}/v1/functions", s.url))
            .header("x-request-id", reqwest::header::HeaderValue::from_bytes(h).unwrap())
            .send()
            .unwrap();
        let own = r.headers()["x-request-id"].to_str().unwrap().to_string();
        assert!(own.len() == 32 && own.bytes().all(|b| b.is_ascii_hexdigit()), "{own}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.lines().count() > 0, "the server logged");
    for line in text.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        assert!(v["fields"]["message"] != "forged", "{line}");
    }
    assert!(!text.contains("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"));
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// Attack: a network neighbour with no token reads `/metrics` (public, for load balancers and
/// scrapers) on a server that requires a token for everything else. Since per-function labels,
/// it lists every tenant's function names and how often each is called and fails (a tenant's
/// product names, traffic and error rates; names a scoped key is not even allowed to list).
/// Defence: per-function series only for an authenticated scrape (a metrics or admin token,
/// or a separate metrics listener), the public `/metrics` keeping process-wide figures only.
#[test]
fn public_metrics_do_not_disclose_tenants_function_names() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--token", ADMIN]);
    create(&s, Some(ADMIN), "acme-merger-talks-q3", wasm_config(3000), &fixture("echo"));
    invoke_as(&s, Some(ADMIN), "acme-merger-talks-q3", b"{}");
    let r = call(&s, None, Method::GET, "/v1/functions", None);
    assert_eq!(r.status(), 401, "the function list needs a token");
    let r = call(&s, None, Method::GET, "/metrics", None);
    let text = r.text().unwrap();
    assert!(
        !text.contains("acme-merger-talks-q3"),
        "an unauthenticated /metrics names the function: {}",
        text.lines().find(|l| l.contains("acme-merger")).unwrap_or("")
    );
}

/// Attack: `gust worker --metrics-listen` serves its figures (every function it ran, by name)
/// with a bare `axum::serve`: no header-read timeout, no idle timeout, no connection cap, no
/// Host check. A network neighbour (or a web page, by DNS rebinding to a loopback listener)
/// opens connections and never finishes a request: each is held forever, and enough of them
/// spend the worker's file descriptors, which its runtimes and its connection to the server
/// need.
/// Defence: serve the metrics listener through the same edge as the API (header-read timeout,
/// connection cap), or at least with hyper's header-read timeout.
#[test]
fn a_worker_s_metrics_listener_closes_connections_that_never_send_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &REMOTE_ONLY);
    let (_worker, mut lines) =
        common::worker_with_banners(&s.url, dir.path(), "m1", &["--metrics-listen", "127.0.0.1:0"]);
    let _joined = lines.next().unwrap().unwrap();
    let banner = lines.next().unwrap().unwrap();
    let url = banner.strip_prefix("gust worker metrics on http://").unwrap_or_else(|| panic!("{banner}"));
    let addr = url.strip_suffix("/metrics").unwrap().to_string();

    let mut stalled: Vec<std::net::TcpStream> = (0..50)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(&addr).unwrap();
            c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").unwrap();
            c.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            c
        })
        .collect();
    // The API's own edge closes such a connection after 10 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 64];
    loop {
        let open = stalled
            .iter_mut()
            .map(|c| match c.read(&mut buf) {
                Ok(_) => false,
                Err(e) => matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            })
            .filter(|open| *open)
            .count();
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} of 50 connections that never finished their request are still held after 20 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Attack: a tenant names a function `_other`, the label the exposition uses for "past the
/// label budget". Its figures merge with (or pose as) the overflow series, so a dashboard's
/// "labels exhausted" alert fires, or real overflow hides among a tenant's traffic.
/// Defence: the overflow label is one no function can have (names are `[A-Za-z0-9_-]`: e.g.
/// `function="~other"`, or an `overflow="true"` label), or the name is reserved.
#[test]
fn a_function_cannot_pose_as_the_metrics_overflow_series() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let r = call(
        &s,
        None,
        Method::POST,
        "/v1/functions",
        Some(&json!({ "name": "_other", "config": wasm_config(3000), "code_b64": b64(&fixture("echo")) })),
    );
    if !r.status().is_success() {
        return; // the name is reserved: the defence
    }
    invoke_as(&s, None, "_other", b"{}");
    let text = s.get("/metrics").text().unwrap();
    assert!(
        !text.contains("function=\"(other)\""),
        "a tenant's function shows as the overflow series: {}",
        text.lines().find(|l| l.contains("(other)")).unwrap_or("")
    );
    // And the overflow label itself is no function's name.
    let r = call(
        &s,
        None,
        Method::POST,
        "/v1/functions",
        Some(&json!({ "name": "(other)", "config": wasm_config(3000), "code_b64": b64(&fixture("echo")) })),
    );
    assert_eq!(r.status(), 400, "a function named as the overflow label");
}

/// Attack: the per-function label budget (1,000 functions, then `function="(other)"`) is one
/// pool for every tenant, and a label is never given back, not even when its function is
/// deleted. A deployer limited to `evil-*` creates, invokes once and deletes 1,000 functions
/// (seconds of work, nothing left behind); from then on every other tenant's functions, new or
/// renamed, are counted only under `_other`: their dashboards and alerts go blind.
/// Defence: a deleted function's series leave the exposition (its label is given back), and/or
/// labels go to the functions that ran recently (evict the idlest), or a per-tenant budget.
#[test]
fn one_tenant_cannot_spend_every_other_tenant_s_metric_labels() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--token", ADMIN]);
    let evil = key(&s, "evil", "deployer", Some("evil-*"));
    let noop = fixture("noop");
    for i in 0..1_000 {
        let name = format!("evil-{i}");
        create(&s, Some(&evil), &name, wasm_config(3000), &noop);
        invoke_as(&s, Some(&evil), &name, b"{}");
        let r = call(&s, Some(&evil), Method::DELETE, &format!("/v1/functions/{name}"), None);
        assert!(r.status().is_success());
    }
    create(&s, Some(ADMIN), "victim", wasm_config(3000), &fixture("echo"));
    invoke_as(&s, Some(ADMIN), "victim", b"{}");
    let text = call(&s, Some(ADMIN), Method::GET, "/metrics", None).text().unwrap();
    let evil_series =
        text.lines().filter(|l| l.starts_with("gust_function_running{function=\"evil-")).count();
    assert!(
        text.contains("gust_function_invocations_total{function=\"victim\""),
        "the victim function has no series of its own: {evil_series} deleted functions of one tenant hold the labels"
    );
}

/// Attack: the per-minute throttle series behind the charts' `throttles` are kept for at most
/// 1,000 functions, first come, never given back. A deployer limited to `evil-*` makes 1,000
/// functions with reserved concurrency 0, calls each once (throttled), deletes them; from then
/// on another tenant's throttled function charts 0 throttles for the next day: its outage is
/// invisible on its chart.
/// Defence: a deleted function's series is dropped, and the series with the oldest last minute
/// is evicted (series older than the day are pruned anyway) instead of refusing new functions.
#[test]
fn one_tenant_cannot_blind_another_s_throttle_chart() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--token", ADMIN]);
    let evil = key(&s, "evil", "deployer", Some("evil-*"));
    let noop = fixture("noop");
    let mut config = wasm_config(3000);
    config["reserved_concurrency"] = json!(0);
    let throttled = |token: &str, name: &str| {
        let r = s
            .client()
            .post(format!("{}/v1/functions/{name}/invoke", s.url))
            .bearer_auth(token)
            .body("{}")
            .send()
            .unwrap();
        assert_eq!(r.status(), 429, "{name} is throttled");
    };
    for i in 0..1_000 {
        let name = format!("evil-{i}");
        create(&s, Some(&evil), &name, config.clone(), &noop);
        throttled(&evil, &name);
        let r = call(&s, Some(&evil), Method::DELETE, &format!("/v1/functions/{name}"), None);
        assert!(r.status().is_success());
    }
    create(&s, Some(ADMIN), "victim", config.clone(), &fixture("echo"));
    for _ in 0..5 {
        throttled(ADMIN, "victim");
    }
    let v = call(&s, Some(ADMIN), Method::GET, "/v1/functions/victim/stats?window=1h", None)
        .json::<Value>()
        .unwrap();
    let charted: u64 =
        v["buckets"].as_array().unwrap().iter().map(|b| b["throttles"].as_u64().unwrap()).sum();
    assert_eq!(charted, 5, "the victim was throttled 5 times; its chart shows {charted}");
}

// ---------------------------------------------------------------------------------------------
// The OTLP exporter
// ---------------------------------------------------------------------------------------------

/// Guard. Attack: the collector (`--otlp-endpoint`) is hostile or stuck: it takes the request
/// and never answers. Invocations must not wait for it, the exporter must not queue without
/// bound, and what reaches it must hold no payload, log, result or function error message.
/// Holds: spans are queued with `try_send` (bounded, dropped past it), sent by one task with a
/// timeout, and carry error kinds only.
#[test]
fn a_stuck_collector_neither_stalls_invocations_nor_sees_payloads() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let collector = format!("http://{}", listener.local_addr().unwrap());
    let (tx, bodies) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                // Read what comes, never answer.
                let mut buf = vec![0u8; 1 << 16];
                let mut all = Vec::new();
                conn.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
                let until = Instant::now() + Duration::from_secs(60);
                while Instant::now() < until {
                    match conn.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => all.extend_from_slice(&buf[..n]),
                        Err(_) => {
                            if !all.is_empty() {
                                let _ = tx.send(std::mem::take(&mut all));
                            }
                        }
                    }
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--otlp-endpoint", &collector]);
    let config = json!({ "runtime": "wasm", "memory_mb": 64, "timeout_ms": 3000, "env": { "DB_PASSWORD": "ENV-SECRET-4242" } });
    create(&s, None, "leaky", config, &wat(LOG_FAIL));
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..40 {
        let t = Instant::now();
        let r = s
            .client()
            .post(format!("{}/v1/functions/leaky/invoke", s.url))
            .header("traceparent", format!("00-5759e988bd862e3fe1be46a9942727{i:02x}-53995c3f42cd8ad8-01"))
            .body("PAYLOAD-SECRET-1337 LOG-SECRET-9001")
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().contains_key("gust-function-error"));
        slowest = slowest.max(t.elapsed());
    }
    assert!(slowest < Duration::from_secs(3), "an invocation waited {slowest:?} for a stuck collector");
    assert!(started.elapsed() < Duration::from_secs(40));
    let mut seen = Vec::new();
    while let Ok(b) = bodies.recv_timeout(Duration::from_secs(3)) {
        seen.extend(b);
    }
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.contains("gust.invocation"), "the collector got spans: {seen}");
    for secret in ["PAYLOAD-SECRET", "LOG-SECRET", "ENV-SECRET"] {
        assert!(!seen.contains(secret), "a span carried {secret}");
    }
    assert_eq!(s.get("/healthz").status(), 200);
}

// ---------------------------------------------------------------------------------------------
// The CLI
// ---------------------------------------------------------------------------------------------

/// Guard. Attack: a function's log (and result, and error) carries terminal escape sequences
/// (OSC 0 to retitle the window, OSC 52 to set the clipboard, CSI to move the cursor and
/// overwrite lines, C1 CSI, BEL, a lone CR) to drive the terminal of whoever runs `gust logs`.
/// Holds: every control character is shown escaped.
#[test]
fn gust_logs_never_hands_a_function_s_escape_sequences_to_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create(&s, None, "ansi", wasm_config(3000), &wat(LOG_FAIL));
    let hostile = "\u{1b}]0;PWNED\u{7}\u{1b}]52;c;Y3VybCBldmlsfHNo\u{7}\u{1b}[2A\u{1b}[2K  state SUCCEEDED\u{9b}1A\rX\u{0}";
    let id = invoke_as(&s, None, "ansi", hostile.as_bytes());
    wait_ended(&s, None, &id);
    for args in [vec!["logs", "ansi"], vec!["logs", "ansi", "--state", "FAILED", "--all"]] {
        let out = common::cli(&s.url).args(&args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("PWNED"), "the log is shown: {text}");
        let bad: Vec<char> = text.chars().filter(|c| c.is_control() && *c != '\n' && *c != '\t').collect();
        assert!(bad.is_empty(), "control characters reached the terminal: {bad:?}");
    }
    // --follow prints the same way.
    let mut child = common::cli(&s.url)
        .args(["logs", "ansi", "--follow", "--since", "10m"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&got).contains("REPORT") {
        let left = deadline.saturating_duration_since(Instant::now());
        got.extend(rx.recv_timeout(left).expect("gust logs --follow printed the invocation"));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8(got).unwrap();
    let bad: Vec<char> = text.chars().filter(|c| c.is_control() && *c != '\n' && *c != '\t').collect();
    assert!(bad.is_empty(), "control characters reached the terminal: {bad:?}");
}

/// Guard. Attack: `gust init` with a NAME that is a path (`../x`, `/abs`, `a/b`), or a NAME
/// that is already a symlink to a directory elsewhere, to write a project outside the current
/// directory or into someone else's.
/// Holds: NAME must be a function name, the directory is created with `mkdir` (an existing
/// name, a symlink included, is refused) and each file with `O_EXCL`.
#[test]
fn gust_init_writes_only_a_new_directory_named_after_the_function() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, work.join("linked")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("dangling-target"), work.join("dangling")).unwrap();
    let abs = dir.path().join("abs").display().to_string();
    for name in ["../escape", abs.as_str(), "a/b", "..", ".", "linked", "dangling", "x\ny", "a b", ""] {
        let out = std::process::Command::new(common::GUST)
            .args(["init", name, "--template", "provided"])
            .current_dir(&work)
            .output()
            .unwrap();
        assert!(!out.status.success(), "gust init {name:?} succeeded");
    }
    assert!(!dir.path().join("escape").exists() && !dir.path().join("abs").exists());
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0, "nothing written through the symlink");
    assert!(!dir.path().join("dangling-target").exists(), "nothing created through a dangling symlink");
}

/// Attack (on the user, by accident): a profile's token is mistyped: unquoted (`token =
/// gust_...`, as it is pasted) or under a misspelt key. The CLI refuses the file, and its
/// message quotes the offending line, secret included, to stderr: into CI logs, screen shares
/// and bug reports.
/// Defence: a config error names the line and key but never echoes a value (or masks anything
/// that looks like a token: `gust_…`).
#[test]
fn a_mistyped_config_file_never_prints_the_token() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let secret = "gust_K3XAMPLE0000_9f2cdeadbeefcafe";
    for (i, text) in [
        format!("[profiles.default]\nserver = \"http://127.0.0.1:9\"\ntoken = {secret}\n"),
        format!("[profiles.default]\nserver = \"http://127.0.0.1:9\"\ntokn = \"{secret}\"\n"),
        format!("[profiles.default]\nserver = \"http://127.0.0.1:9\"\ntoken = \"{secret}\n"),
    ]
    .iter()
    .enumerate()
    {
        let cfg = dir.path().join(format!("config-{i}.toml"));
        std::fs::write(&cfg, text).unwrap();
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
        let out = std::process::Command::new(common::GUST)
            .args(["functions"])
            .env("GUST_CONFIG", &cfg)
            .env_remove("GUST_SERVER")
            .env_remove("GUST_TOKEN")
            .env_remove("GUST_TOKEN_FILE")
            .env_remove("GUST_PROFILE")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "config {i} is refused as a usage error");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("9f2cdeadbeefcafe"), "config {i}: the token was printed:\n{stderr}");
    }
}
