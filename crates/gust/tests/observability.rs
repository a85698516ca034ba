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
