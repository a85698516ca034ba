//! What operators and Lambda's tools read of an invocation: the REPORT line with its figures,
//! the trace id in X-Ray's form (and a caller's W3C `traceparent` carried into it), the ARN the
//! caller invoked.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{wasm_config, Server};
use gust_testkit::fixture;
use serde_json::{json, Value};

/// An AWS API sync invoke of `name` with `LogType: Tail`: (request id, the decoded log tail).
fn invoke_tail(s: &Server, name: &str, headers: &[(&str, &str)]) -> (String, String) {
    let mut rb = s
        .client()
        .post(format!("{}/2015-03-31/functions/{name}/invocations", s.url))
        .header("x-amz-log-type", "Tail")
        .body("{}");
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-amzn-requestid"].to_str().unwrap().to_string();
    let tail = r.headers()["x-amz-log-result"].to_str().unwrap().to_string();
    let text = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(tail).unwrap()).unwrap();
    (id, text)
}

/// The value of `field` (e.g. `Duration`) in a REPORT line, without its unit.
fn field(line: &str, name: &str) -> Option<f64> {
    line.split('\t').find_map(|f| f.strip_prefix(&format!("{name}: "))).map(|v| {
        v.split(' ')
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("{name} is not a number: {line}"))
    })
}

fn report_line(log: &str) -> &str {
    log.lines()
        .find(|l| l.starts_with("REPORT RequestId: "))
        .unwrap_or_else(|| panic!("no REPORT line in {log}"))
}

#[test]
fn the_report_line_carries_lambda_s_figures_and_init_only_when_cold() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    s.deploy("echo", json!({ "timeout_ms": 3000, "memory_mb": 64 }), fixture("echo"));

    let (id, cold) = invoke_tail(&s, "echo", &[]);
    let line = report_line(&cold);
    assert!(line.starts_with(&format!("REPORT RequestId: {id}\tDuration: ")), "{line}");
    let duration = field(line, "Duration").unwrap();
    let billed = field(line, "Billed Duration").unwrap();
    assert!(duration > 0.0, "{line}");
    assert_eq!(field(line, "Memory Size"), Some(64.0), "{line}");
    let used = field(line, "Max Memory Used").expect("a wasm function's memory is known");
    assert!((1.0..=64.0).contains(&used), "the instance's linear memory, within its limit: {line}");
    let init = field(line, "Init Duration").expect("the first invocation loaded the module: a cold start");
    assert!(billed >= (duration + init).floor() && billed.fract() == 0.0, "billed whole ms: {line}");
    let lines: Vec<&str> = cold.lines().collect();
    assert_eq!(lines[0], format!("START RequestId: {id} Version: $LATEST"));
    assert_eq!(lines[lines.len() - 2], format!("END RequestId: {id}"));

    let (_, warm) = invoke_tail(&s, "echo", &[]);
    let line = report_line(&warm);
    assert_eq!(field(line, "Init Duration"), None, "a warm invocation has no init: {line}");
    assert!(field(line, "Max Memory Used").is_some(), "{line}");

    // The record keeps the figures (written behind), and shows the same line.
    let rec = s.wait_terminal(&id, Duration::from_secs(5));
    assert_eq!(rec["report"]["memory_mb"], 64, "{rec}");
    assert!(rec["report"]["duration_us"].as_u64().unwrap() > 0, "{rec}");
    assert!(rec["report"]["init_us"].as_u64().is_some(), "{rec}");
    assert!(rec["report"]["started_at"].as_i64().unwrap() >= rec["received_at"].as_i64().unwrap(), "{rec}");
    assert_eq!(rec["report_line"], report_line(&cold), "{rec}");
}

#[test]
fn trace_ids_are_x_ray_s_form_and_a_caller_s_trace_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    s.deploy("echo", wasm_config(3000), fixture("echo"));
    let trace_of = |headers: &[(&str, &str)]| -> String {
        let r = s.invoke("echo", None, b"{}", headers);
        assert_eq!(r.status(), 200);
        let id = r.headers()["gust-invocation-id"].to_str().unwrap().to_string();
        s.wait_terminal(&id, Duration::from_secs(5))["trace_id"].as_str().unwrap().to_string()
    };
    // None given: a new one, `Root=1-<start time in seconds, 8 hex>-<24 hex>`.
    let fresh = trace_of(&[]);
    let root = fresh.strip_prefix("Root=1-").unwrap().split(';').next().unwrap();
    let (time, rest) = root.split_once('-').unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(now.abs_diff(u64::from_str_radix(time, 16).unwrap()) < 60, "{fresh}");
    assert!(rest.len() == 24 && rest.bytes().all(|b| b.is_ascii_hexdigit()), "{fresh}");
    assert_ne!(trace_of(&[]), fresh, "each invocation starts its own trace");
    // W3C traceparent: the same trace and parent, in X-Ray's form.
    let w3c = trace_of(&[("traceparent", "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01")]);
    assert_eq!(w3c, "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1");
    // X-Ray's own header, with a key gust does not pass on.
    let xray =
        trace_of(&[("x-amzn-trace-id", "Root=1-11111111-222222222222222222222222;Lineage=a:1;Sampled=0")]);
    assert_eq!(xray, "Root=1-11111111-222222222222222222222222;Sampled=0");
    // An attacker's header is not passed on at all: a new trace is started instead.
    let junk = trace_of(&[("x-amzn-trace-id", "Root=1-11111111-2222;Parent=$(reboot)")]);
    assert!(
        junk.starts_with("Root=1-") && !junk.contains("reboot") && !junk.contains("11111111-2222;"),
        "{junk}"
    );
}

/// A `provided` runtime is told the ARN as the caller used it (unqualified when unqualified)
/// and the trace in X-Ray's form, in the embedded shape (a remote worker's is tested in
/// workers.rs).
#[test]
fn a_runtime_is_told_the_arn_as_invoked_and_the_trace() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let code = gust_testkit::zip(&[("bootstrap", &gust_testkit::fixture_file("bootstrap.py"), 0o755)]);
    s.deploy_zip("lam", json!({ "runtime": "provided.al2023", "timeout_ms": 5000 }), code);
    let context = |qualifier: Option<&str>, headers: &[(&str, &str)]| -> Value {
        let r = s.invoke("lam", qualifier, b"{}", headers);
        assert_eq!(r.status(), 200);
        r.json::<Value>().unwrap()["context"].clone()
    };
    let unqualified = context(None, &[]);
    assert!(unqualified["arn"].as_str().unwrap().ends_with(":function:lam"), "{unqualified}");
    let latest = context(Some("$LATEST"), &[]);
    assert!(latest["arn"].as_str().unwrap().ends_with(":function:lam:$LATEST"), "{latest}");
    let traced = context(None, &[("traceparent", "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-00")]);
    assert_eq!(
        traced["trace_id"],
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0"
    );
    // The record of an unqualified invocation says so (and which version ran).
    let r = s.invoke("lam", None, b"{}", &[]);
    let id = r.headers()["gust-invocation-id"].to_str().unwrap().to_string();
    let rec = s.wait_terminal(&id, Duration::from_secs(5));
    assert_eq!(rec["qualifier"], Value::Null, "{rec}");
    assert_eq!(rec["executed_version"], "$LATEST", "{rec}");
}

/// The exposition's value of `series` (a name with its labels, as printed).
fn value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn metrics_have_per_function_histograms_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    s.deploy("echo", wasm_config(3000), fixture("echo"));
    s.deploy("fail", wasm_config(3000), fixture("fail"));
    for _ in 0..3 {
        assert_eq!(s.invoke("echo", None, b"{}", &[]).status(), 200);
    }
    assert_eq!(s.invoke("fail", None, b"{}", &[]).status(), 200);
    let id = common::accepted_id(s.invoke("echo", None, b"{}", &[("invocation-type", "async")]));
    s.wait_terminal(&id, Duration::from_secs(10));
    let text = s.get("/metrics").text().unwrap();
    let echo = |series: &str| value(&text, &series.replace("F", "function=\"echo\"")).unwrap_or(-1.0);
    assert_eq!(echo("gust_function_invocations_total{F,mode=\"sync\",outcome=\"success\"}"), 3.0, "{text}");
    assert_eq!(echo("gust_function_invocations_total{F,mode=\"async\",outcome=\"success\"}"), 1.0, "{text}");
    assert_eq!(
        value(&text, "gust_function_invocations_total{function=\"fail\",mode=\"sync\",outcome=\"error\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(echo("gust_invocation_duration_seconds_count{F}"), 4.0, "{text}");
    assert_eq!(echo("gust_invocation_duration_seconds_bucket{F,le=\"+Inf\"}"), 4.0, "{text}");
    assert!(echo("gust_invocation_duration_seconds_sum{F}") > 0.0, "{text}");
    assert_eq!(echo("gust_init_duration_seconds_count{F}"), 1.0, "one cold start: {text}");
    assert_eq!(echo("gust_queue_wait_seconds_count{F,mode=\"async\"}"), 1.0, "{text}");
    assert_eq!(echo("gust_end_to_end_seconds_count{F,mode=\"sync\"}"), 3.0, "{text}");
    assert_eq!(echo("gust_function_running{F}"), 0.0, "{text}");
    // Every histogram series is a valid exposition: buckets never decrease.
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("gust_invocation_duration_seconds_bucket{function=\"echo\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(buckets.len() > 10 && buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    // Store-wide figures say they are the cluster's.
    assert!(text.contains("gust_store_fenced_completions_total{scope=\"cluster\"} 0"), "{text}");
}

#[test]
fn a_worker_serves_health_readiness_and_the_figures_of_what_it_ran() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &common::REMOTE_ONLY);
    let (worker, mut lines) =
        common::worker_with_banners(&s.url, dir.path(), "m1", &["--metrics-listen", "127.0.0.1:0"]);
    let joined = lines.next().unwrap().unwrap();
    assert!(joined.starts_with("gust worker m1"), "{joined}");
    let banner = lines.next().unwrap().unwrap();
    let metrics_url = banner.strip_prefix("gust worker metrics on ").unwrap_or_else(|| panic!("{banner}"));
    let base = metrics_url.strip_suffix("/metrics").unwrap();
    let http = reqwest::blocking::Client::new();
    assert_eq!(http.get(format!("{base}/healthz")).send().unwrap().text().unwrap(), "ok");
    assert_eq!(http.get(format!("{base}/readyz")).send().unwrap().status(), 200);

    common::deploy_to_workers(&s, 1, "echo", wasm_config(3000), fixture("echo"));
    for _ in 0..2 {
        let r = s.invoke("echo", None, b"{}", &[]);
        assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    }
    let text = http.get(metrics_url).send().unwrap().text().unwrap();
    let ran = "gust_function_invocations_total{function=\"echo\",mode=\"sync\",outcome=\"success\"}";
    assert_eq!(value(&text, ran), Some(2.0), "the worker counts what it ran: {text}");
    assert_eq!(value(&text, "gust_worker_ready"), Some(1.0), "{text}");
    assert!(value(&text, "gust_worker_capacity").is_some_and(|c| c > 0.0), "{text}");
    assert!(value(&text, "gust_invocation_duration_seconds_count{function=\"echo\"}") == Some(2.0), "{text}");
    // Observed once, where it ran: the server (no local worker) does not count it again.
    let server = s.get("/metrics").text().unwrap();
    assert_eq!(value(&server, ran), None, "{server}");
    dashboard_queries_exist(&[&text, &server]);
    // Shutting down: no longer ready (or no longer answering at all).
    worker.signal("-TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match http.get(format!("{base}/readyz")).send() {
            Ok(r) if r.status() == 503 => break,
            Err(_) => break,
            _ => {}
        }
        assert!(std::time::Instant::now() < deadline, "still ready while shutting down");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every metric the sample Grafana dashboard queries is one gust exports (server or worker),
/// so the dashboard cannot silently rot as names change.
fn dashboard_queries_exist(expositions: &[&str]) {
    let path = gust_testkit::repo_root().join("examples/grafana/gust-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let typed: std::collections::HashSet<&str> = expositions
        .iter()
        .flat_map(|e| e.lines())
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .collect();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("gust_") {
                let name: String =
                    rest[at..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                rest = &rest[at + name.len()..];
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .fold(name.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
                assert!(
                    typed.contains(base),
                    "the dashboard queries {name}, which gust does not export ({expr})"
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 15, "the dashboard queries {queried} series");
}

#[test]
fn json_logs_name_each_request_s_id_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let admin = "observability-admin-token";
    let s = Server::start_logged(
        &dir.path().join("data"),
        &log,
        "info",
        &["--token", admin, "--log-format", "json"],
    );
    let create = |request_id: &str| {
        s.client()
            .post(format!("{}/v1/tokens", s.url))
            .bearer_auth(admin)
            .header("x-request-id", request_id)
            .json(&json!({ "name": format!("k{}", request_id.len()), "role": "invoker" }))
            .send()
            .unwrap()
    };
    let r = create("req-123.abc");
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    assert_eq!(r.headers()["x-request-id"], "req-123.abc", "the caller's id is answered back");
    let secret = r.json::<Value>().unwrap()["token"].as_str().unwrap().to_string();
    // A hostile id is not taken (nor logged): the request gets an id of its own.
    let r = create("evil\"} id;$(reboot)");
    let own = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(own.len() == 32 && own.bytes().all(|b| b.is_ascii_hexdigit()), "{own}");

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let lines: Vec<Value> = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
            .collect();
        if lines.iter().filter(|l| l["fields"]["message"] == "API key created").count() == 2 {
            break lines;
        }
        assert!(std::time::Instant::now() < deadline, "no key creation logged: {text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let created: Vec<&Value> = lines.iter().filter(|l| l["fields"]["message"] == "API key created").collect();
    assert_eq!(created[0]["span"]["request_id"], "req-123.abc", "{}", created[0]);
    assert_eq!(created[0]["span"]["path"], "/v1/tokens", "{}", created[0]);
    assert_eq!(created[1]["span"]["request_id"], own.as_str(), "{}", created[1]);
    assert!(created.iter().all(|l| l["level"] == "INFO" && l["timestamp"].is_string()));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(&secret) && !text.contains(admin), "no token reaches the log");
}

/// Opens `gust logs --follow`'s stream and hands its events (id, data) over a channel.
fn follow(
    s: &Server, path: &str, headers: &[(&str, &str)],
) -> (reqwest::StatusCode, std::sync::mpsc::Receiver<(String, Value)>) {
    use std::io::BufRead as _;
    let client = reqwest::blocking::Client::builder().timeout(None).build().unwrap();
    let mut rb = client.get(format!("{}{path}", s.url));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().unwrap();
    let status = r.status();
    let (tx, rx) = std::sync::mpsc::channel();
    if status == 200 {
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        std::thread::spawn(move || {
            let (mut id, mut kind) = (String::new(), String::new());
            for line in std::io::BufReader::new(r).lines() {
                let Ok(line) = line else { return };
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.to_string();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    kind = v.to_string();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    assert_eq!(kind, "invocation");
                    if tx.send((id.clone(), serde_json::from_str(v).unwrap())).is_err() {
                        return;
                    }
                }
            }
        });
    }
    (status, rx)
}

fn next_events(rx: &std::sync::mpsc::Receiver<(String, Value)>, n: usize) -> Vec<(String, Value)> {
    (0..n)
        .map(|i| {
            rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("event {i} of {n} never came"))
        })
        .collect()
}

#[test]
fn logs_follow_streams_outcomes_as_they_end_and_resumes_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    s.deploy("echo", wasm_config(3000), fixture("echo"));
    s.deploy("fail", wasm_config(3000), fixture("fail"));
    let before = s.invoke("echo", None, b"{}", &[]);
    let before = before.headers()["gust-invocation-id"].to_str().unwrap().to_string();
    s.wait_terminal(&before, Duration::from_secs(5));

    // From now: earlier outcomes are not replayed.
    let (status, all) = follow(&s, "/v1/functions/echo/logs", &[]);
    assert_eq!(status, 200);
    let (_, failed_only) = follow(&s, "/v1/functions/fail/logs?state=FAILED", &[]);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = s.invoke("echo", None, b"{}", &[]);
        ids.push(r.headers()["gust-invocation-id"].to_str().unwrap().to_string());
    }
    let async_id = common::accepted_id(s.invoke("echo", None, b"{}", &[("invocation-type", "async")]));
    ids.push(async_id);
    assert_eq!(s.invoke("fail", None, b"{}", &[]).status(), 200);
    let got = next_events(&all, 4);
    let seen: Vec<&str> = got.iter().map(|(_, v)| v["invocation_id"].as_str().unwrap()).collect();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut sorted = seen.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected, "each new outcome once, and not the one before the stream");
    for (event_id, v) in &got {
        assert_eq!(v["log"], "echo: invoked\n", "{v}");
        assert!(v["report_line"].as_str().unwrap().starts_with("REPORT RequestId: "), "{v}");
        assert!(v.get("payload").is_none(), "payloads are not streamed: {v}");
        assert!(event_id.ends_with(v["invocation_id"].as_str().unwrap()), "{event_id}");
    }
    let failed = next_events(&failed_only, 1);
    assert_eq!(failed[0].1["state"], "FAILED");

    // Reconnecting after the second event: the rest, nothing twice; `since` replays history.
    let last = got[1].0.clone();
    let (_, resumed) = follow(&s, "/v1/functions/echo/logs", &[("last-event-id", &last)]);
    let rest: Vec<String> = next_events(&resumed, 2)
        .iter()
        .map(|(_, v)| v["invocation_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(rest, vec![seen[2].to_string(), seen[3].to_string()]);
    let (_, history) = follow(&s, "/v1/functions/echo/logs?since=10m", &[]);
    assert_eq!(next_events(&history, 5)[0].1["invocation_id"], before.as_str(), "oldest first");

    // Refusals: an unknown function, a bad since, a state that is not an end.
    let status = |path: &str| s.get(path).status().as_u16();
    assert_eq!(status("/v1/functions/nope/logs"), 404);
    assert_eq!(status("/v1/functions/echo/logs?since=yesterday"), 400);
    assert_eq!(status("/v1/functions/echo/logs?state=RUNNING"), 400);
}

#[test]
fn log_followers_are_bounded_per_server() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    s.deploy("echo", wasm_config(3000), fixture("echo"));
    let client = reqwest::blocking::Client::builder().timeout(None).build().unwrap();
    let open = || client.get(format!("{}/v1/functions/echo/logs", s.url)).send().unwrap();
    // Per caller (here: every caller, the server has no token) 8 at once; per server 64.
    let held: Vec<_> = (0..8).map(|_| open()).collect();
    assert!(held.iter().all(|r| r.status() == 200));
    assert_eq!(common::error_code(open(), 429), "TooManyFollowers");
    drop(held);
    // A closed stream gives its place back (once the server notices: at its next keep-alive).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while open().status() != 200 {
        assert!(std::time::Instant::now() < deadline, "the places were never given back");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A stand-in OpenTelemetry collector: answers every OTLP/HTTP request 200 and hands over
/// each body's spans (the span objects of `resourceSpans[].scopeSpans[].spans`).
fn collector() -> (String, std::sync::mpsc::Receiver<(Value, Value)>) {
    use std::io::{BufRead as _, Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let (mut line, mut length, mut path) = (String::new(), 0usize, String::new());
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    path.push_str(line.split(' ').nth(1).unwrap_or(""));
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        if h == "\r\n" {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    assert_eq!(path, "/v1/traces");
                    let v: Value = serde_json::from_slice(&body).unwrap();
                    let resource = v["resourceSpans"][0]["resource"].clone();
                    for span in v["resourceSpans"][0]["scopeSpans"][0]["spans"].as_array().unwrap() {
                        let _ = tx.send((resource.clone(), span.clone()));
                    }
                    conn.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
                    )
                    .unwrap();
                }
            });
        }
    });
    (url, rx)
}

/// The spans of trace `trace_id` (hex) that arrive within a few seconds, `want` of them, and
/// the trace ids of every span that came meanwhile.
fn spans_of(
    rx: &std::sync::mpsc::Receiver<(Value, Value)>, trace_id: &str, want: usize,
) -> (Vec<Value>, Vec<String>) {
    let (mut got, mut seen) = (Vec::new(), Vec::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while got.len() < want {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok((resource, span)) = rx.recv_timeout(left) else {
            panic!("{} of {want} spans came: {got:?}", got.len())
        };
        seen.push(span["traceId"].as_str().unwrap().to_string());
        if span["traceId"] == trace_id {
            let mut span = span;
            // Which process sent it: its `service.name`.
            span["_service"] = resource["attributes"][0]["value"]["stringValue"].clone();
            got.push(span);
        }
    }
    (got, seen)
}

#[test]
fn traces_are_exported_over_otlp_in_the_caller_s_trace() {
    let (collector_url, spans) = collector();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--otlp-endpoint", &collector_url]);
    s.deploy("echo", wasm_config(3000), fixture("echo"));
    s.deploy("fail", wasm_config(3000), fixture("fail"));

    // In the caller's sampled trace: under its span, cold (init), with the FaaS attributes.
    let r = s.invoke(
        "echo",
        None,
        b"{}",
        &[("traceparent", "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01")],
    );
    let id = r.headers()["gust-invocation-id"].to_str().unwrap().to_string();
    let (got, _) = spans_of(&spans, "5759e988bd862e3fe1be46a994272793", 5);
    let named =
        |n: &str| got.iter().find(|s| s["name"] == n).unwrap_or_else(|| panic!("no {n} span: {got:?}"));
    // The server's span of the request, under the caller's; the attempt's under it.
    let request = named("gust.request");
    assert_eq!(request["parentSpanId"], "53995c3f42cd8ad8", "{request}");
    assert_eq!(request["kind"], 2, "SERVER");
    assert!(got.iter().all(|s| s["_service"] == "gust"), "{got:?}");
    let root = named("gust.invocation");
    assert_eq!(root["parentSpanId"], request["spanId"], "{root}");
    let attr = |span: &Value, key: &str| {
        span["attributes"].as_array().unwrap().iter().find(|a| a["key"] == key).map(|a| a["value"].clone())
    };
    assert_eq!(attr(root, "faas.invocation_id").unwrap()["stringValue"], id.as_str());
    assert_eq!(attr(root, "faas.invoked_name").unwrap()["stringValue"], "echo");
    assert_eq!(attr(root, "faas.coldstart").unwrap()["boolValue"], true);
    for child in ["gust.queue", "gust.init", "gust.run"] {
        assert_eq!(named(child)["parentSpanId"], root["spanId"], "{child}");
    }
    let ns = |s: &Value, k: &str| s[k].as_str().unwrap().parse::<u64>().unwrap();
    let run = named("gust.run");
    assert!(ns(root, "startTimeUnixNano") <= ns(run, "startTimeUnixNano"));
    assert!(ns(run, "startTimeUnixNano") <= ns(run, "endTimeUnixNano"));
    assert_eq!(ns(run, "endTimeUnixNano"), ns(root, "endTimeUnixNano"));

    // Not sampled by the caller: nothing exported. A trace gust starts is sampled: exported,
    // with the trace id the record shows.
    s.invoke(
        "echo",
        None,
        b"{}",
        &[("traceparent", "00-11111111111111111111111111111111-2222222222222222-00")],
    );
    let r = s.invoke("fail", None, b"{}", &[]);
    let id = r.headers()["gust-invocation-id"].to_str().unwrap().to_string();
    let trace = s.wait_terminal(&id, Duration::from_secs(5))["trace_id"].as_str().unwrap().to_string();
    let hex: String = trace["Root=1-".len()..].split(';').next().unwrap().replace('-', "");
    assert!(trace.ends_with(";Sampled=1"), "{trace}");
    let (failed, seen) = spans_of(&spans, &hex, 5);
    let run = failed.iter().find(|s| s["name"] == "gust.run").unwrap();
    assert_eq!(run["status"]["code"], 2, "{run}");
    assert_eq!(run["status"]["message"], "FunctionError", "the kind only, never the function's message");
    // Spans leave in the order attempts end: the unsampled one's would have come first.
    assert!(!seen.iter().any(|t| t == "11111111111111111111111111111111"), "{seen:?}");
    let request = failed.iter().find(|s| s["name"] == "gust.request").unwrap();
    assert_eq!(request["status"]["code"], 2, "the request's span says the function failed: {request}");
}

#[test]
fn a_trace_links_the_server_s_span_to_the_remote_worker_s() {
    let (collector_url, spans) = collector();
    let dir = tempfile::tempdir().unwrap();
    let mut flags = common::REMOTE_ONLY.to_vec();
    flags.extend(["--otlp-endpoint", &collector_url, "--otlp-service-name", "gust-server"]);
    let s = Server::start(dir.path(), &flags);
    let flags = ["--otlp-endpoint", &collector_url, "--otlp-service-name", "gust-worker"];
    let (_worker, mut lines) = common::worker_with_banners(&s.url, dir.path(), "t1", &flags);
    assert!(lines.next().unwrap().unwrap().starts_with("gust worker t1"));
    common::deploy_to_workers(&s, 1, "echo", wasm_config(3000), fixture("echo"));
    let cases = [
        ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "sync"),
        ("cccccccccccccccccccccccccccccccc", "dddddddddddddddd", "async"),
    ];
    for (trace, caller, mode) in cases {
        let traceparent = format!("00-{trace}-{caller}-01");
        let r = s.invoke("echo", None, b"{}", &[("traceparent", &traceparent), ("invocation-type", mode)]);
        assert!(r.status().is_success(), "{mode}: {}", r.text().unwrap());
        // The first is a cold start: it has an init span too.
        let (got, _) = spans_of(&spans, trace, if mode == "sync" { 5 } else { 4 });
        let from = |service: &str, name: &str| {
            got.iter()
                .find(|s| s["_service"] == service && s["name"] == name)
                .unwrap_or_else(|| panic!("{mode}: no {name} span from {service}: {got:?}"))
                .clone()
        };
        let request = from("gust-server", "gust.request");
        let invocation = from("gust-worker", "gust.invocation");
        assert_eq!(request["parentSpanId"], caller, "{mode}: the server's span is under the caller's");
        assert_eq!(invocation["parentSpanId"], request["spanId"], "{mode}: the worker's under the server's");
        assert_eq!(from("gust-worker", "gust.run")["parentSpanId"], invocation["spanId"], "{mode}");
    }
}

#[test]
fn an_invocation_s_timeline_shows_each_attempt_with_its_epoch_worker_and_retry() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let config = json!({ "timeout_ms": 3000, "retry": { "max_retries": 1, "base_delay_ms": 50 } });
    s.deploy("fail", config, fixture("fail"));
    let id = common::accepted_id(s.invoke("fail", None, b"{}", &[("invocation-type", "async")]));
    let rec = s.wait_terminal(&id, Duration::from_secs(10));
    assert_eq!(rec["state"], "FAILED");
    let timeline = rec["timeline"].as_array().unwrap();
    let events: Vec<(&str, Option<u64>)> =
        timeline.iter().map(|e| (e["event"].as_str().unwrap(), e["epoch"].as_u64())).collect();
    assert_eq!(
        events,
        vec![
            ("received", None),
            ("started", Some(1)),
            ("completed", Some(1)),
            ("retry due", None),
            ("started", Some(2)),
            ("completed", Some(2)),
        ],
        "{rec}"
    );
    assert_eq!(timeline[2]["outcome"], "FunctionError");
    assert_eq!(timeline[2]["state"], "RETRY_WAIT");
    let retry_at = timeline[2]["retry_at"].as_i64().unwrap();
    assert!(retry_at >= timeline[2]["at"].as_i64().unwrap() + 50, "the backoff: {rec}");
    assert_eq!(timeline[5]["state"], "FAILED");
    assert!(timeline[1]["worker"].as_str().unwrap().starts_with("local-"), "{rec}");
    let at: Vec<i64> = timeline.iter().map(|e| e["at"].as_i64().unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "in order: {at:?}");

    // A keyless sync invocation (recorded after its answer): its run, from its figures.
    s.deploy("echo", wasm_config(3000), fixture("echo"));
    let r = s.invoke("echo", None, b"{}", &[]);
    let id = r.headers()["gust-invocation-id"].to_str().unwrap().to_string();
    let rec = s.wait_terminal(&id, Duration::from_secs(5));
    let events: Vec<&str> =
        rec["timeline"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["received", "started", "completed"], "{rec}");
}

#[test]
fn stats_give_a_function_s_figures_over_time_and_invocations_filter_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    s.deploy("echo", wasm_config(3000), fixture("echo"));
    s.deploy("fail", wasm_config(3000), fixture("fail"));
    for _ in 0..5 {
        assert_eq!(s.invoke("echo", None, b"{}", &[]).status(), 200);
    }
    let ms =
        || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    std::thread::sleep(Duration::from_millis(5));
    let between = ms();
    std::thread::sleep(Duration::from_millis(5));
    for _ in 0..2 {
        assert_eq!(s.invoke("fail", None, b"{}", &[]).status(), 200);
    }
    // At a reserved concurrency of 0 every call is throttled (429), and counted.
    let r = s.put_json("/v1/functions/echo/concurrency", &json!({ "reserved_concurrency": 0 }));
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    assert_eq!(s.invoke("echo", None, b"{}", &[]).status(), 429);
    assert_eq!(s.invoke("echo", None, b"{}", &[]).status(), 429);

    let stats = |name: &str, query: &str| -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let v: Value = s.get(&format!("/v1/functions/{name}/stats{query}")).json().unwrap();
            let n: u64 =
                v["buckets"].as_array().unwrap().iter().map(|b| b["invocations"].as_u64().unwrap()).sum();
            if n > 0 || std::time::Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let sum = |v: &Value, k: &str| -> f64 {
        v["buckets"].as_array().unwrap().iter().map(|b| b[k].as_f64().unwrap_or(0.0)).sum()
    };
    let echo = stats("echo", "?window=15m&step=60s");
    assert_eq!(echo["step_ms"], 60_000);
    assert_eq!(echo["buckets"].as_array().unwrap().len(), 15, "{echo}");
    assert_eq!(sum(&echo, "invocations"), 5.0, "{echo}");
    assert_eq!(sum(&echo, "errors"), 0.0);
    assert_eq!(sum(&echo, "cold_starts"), 1.0, "{echo}");
    assert_eq!(sum(&echo, "throttles"), 2.0, "{echo}");
    assert!(sum(&echo, "concurrency") > 0.0, "{echo}");
    let busy =
        echo["buckets"].as_array().unwrap().iter().find(|b| b["invocations"].as_u64() > Some(0)).unwrap();
    assert!(
        busy["p50_ms"].as_f64().unwrap() > 0.0 && busy["p99_ms"].as_f64() >= busy["p50_ms"].as_f64(),
        "{busy}"
    );
    let fail = stats("fail", "");
    assert_eq!((sum(&fail, "invocations"), sum(&fail, "errors")), (2.0, 2.0), "{fail}");
    assert_eq!(fail["buckets"].as_array().unwrap().len(), 60, "an hour in 60 buckets by default");
    // Refusals: too many buckets, a window past a day, junk, an unknown function.
    for (query, status) in
        [("?window=1h&step=1s", 400), ("?window=2d", 400), ("?window=soon", 400), ("?bogus=1", 400)]
    {
        assert_eq!(s.get(&format!("/v1/functions/echo/stats{query}")).status().as_u16(), status, "{query}");
    }
    assert_eq!(s.get("/v1/functions/nope/stats").status(), 404);

    // Invocations received before a time: the echoes, not the failures.
    let listed = |name: &str, q: &str| -> usize {
        let v: Value = s.get(&format!("/v1/functions/{name}/invocations{q}")).json().unwrap();
        v["invocations"].as_array().unwrap().len()
    };
    assert_eq!(listed("echo", &format!("?received_before={between}")), 5);
    assert_eq!(listed("fail", &format!("?received_before={between}")), 0);
    assert_eq!(listed("fail", &format!("?received_before={}", ms() + 1000)), 2);
}

#[test]
fn gust_logs_follow_prints_each_invocation_as_it_ends() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    s.deploy("echo", wasm_config(3000), fixture("echo"));
    let earlier = s.invoke("echo", None, b"{}", &[]);
    let earlier = earlier.headers()["gust-invocation-id"].to_str().unwrap().to_string();
    s.wait_terminal(&earlier, Duration::from_secs(5));

    let mut child = common::cli(&s.url)
        .args(["logs", "echo", "--follow", "--since", "10m", "--output", "json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["invocation_id"], earlier.as_str(), "--since replays the last 10 minutes");
    let r = s.invoke("echo", None, b"{}", &[]);
    let later = r.headers()["gust-invocation-id"].to_str().unwrap().to_string();
    let second: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(second["invocation_id"], later.as_str(), "then each new one as it ends");
    assert_eq!(second["log"], "echo: invoked\n");
    let _ = child.kill();
    let _ = child.wait();

    // Text: the log and Lambda's REPORT figures.
    let mut child = common::cli(&s.url)
        .args(["logs", "echo", "-f", "--since", "10m"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut text = String::new();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    while !text.contains("Max Memory Used") {
        text.push_str(&lines.next().unwrap().unwrap());
        text.push('\n');
    }
    assert!(text.contains(&format!("invocation {earlier}")) && text.contains("echo: invoked"), "{text}");
    assert!(text.contains("REPORT RequestId: ") && text.contains("Billed Duration: "), "{text}");
    let _ = child.kill();
    let _ = child.wait();

    // --since means nothing without --follow: a usage error; an unknown function: not found.
    let out = common::cli(&s.url).args(["logs", "echo", "--since", "5m"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let out = common::cli(&s.url).args(["logs", "nope", "--follow"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
}
