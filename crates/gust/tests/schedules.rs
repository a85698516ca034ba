//! Schedules on the real binary. `rate(N seconds)` is gust's own extension (EventBridge's finest
//! rate is a minute), used here so the ticks come in seconds:
//! - across two servers on PostgreSQL each scheduled time fires exactly once, and after every
//!   server was down for several ticks the missed ones fire once each on restart;
//! - a firing a target refuses goes to the dead-letter queue; a queue target gets messages; a
//!   one-time schedule deleted after completion goes once it fired;
//! - the CLI creates, changes, disables, shows and deletes schedules, with its history;
//! - keys that may not write schedules (Read, limited to some functions) cannot.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{wasm_config, Server, GUST};
use gust_testkit::{fixture, unique_schema};
use serde_json::{json, Value};

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn put_schedule(s: &Server, name: &str, body: Value) -> Value {
    let r = s.client().put(format!("{}/v1/schedules/{name}", s.url)).json(&body).send().unwrap();
    let status = r.status();
    let v: Value = r.json().unwrap();
    assert!(status.is_success(), "PUT schedule {name}: {status} {v}");
    v
}

fn history(s: &Server, name: &str) -> Vec<Value> {
    let v: Value = s.get(&format!("/v1/schedules/{name}/history?limit=1000")).json().unwrap();
    let mut firings = v["firings"].as_array().cloned().unwrap_or_default();
    firings.reverse();
    firings
}

/// Waits (bounded) until `ok` holds of the schedule's history, oldest first.
fn wait_history(s: &Server, name: &str, timeout: Duration, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let h = history(s, name);
        if ok(&h) {
            return h;
        }
        assert!(Instant::now() < deadline, "the history of {name} never got there: {h:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn delivered(h: &[Value]) -> usize {
    h.iter().filter(|f| f["state"] == "DELIVERED").count()
}

#[test]
fn each_tick_fires_once_across_two_servers_and_missed_ticks_fire_once_after_downtime() {
    let args = [
        "--store".to_string(),
        gust_testkit::postgres(),
        "--store-schema".to_string(),
        unique_schema("sched"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Server::start(dir_a.path(), &args);
    let b = Server::start(dir_b.path(), &args);
    let (listen_a, listen_b) = (a.addr().to_string(), b.addr().to_string());
    a.deploy("tick", wasm_config(5_000), fixture("echo"));
    let input = r#"{"at":"<aws.scheduler.scheduled-time>","id":"<aws.scheduler.execution-id>"}"#;
    put_schedule(
        &a,
        "every-second",
        json!({ "expression": "rate(1 second)", "function": "tick", "input": input }),
    );
    // Both servers claim every tick; each scheduled time is written, and invoked, once.
    wait_history(&a, "every-second", Duration::from_secs(30), |h| delivered(h) >= 6);

    // Every server down for several ticks.
    a.kill9();
    b.kill9();
    std::thread::sleep(Duration::from_secs(4));
    let a = Server::start_at(dir_a.path(), &listen_a, &args);
    let b = Server::start_at(dir_b.path(), &listen_b, &args);
    let down_until = now_ms();
    let h = wait_history(&b, "every-second", Duration::from_secs(30), |h| {
        h.last().and_then(|f| f["scheduled_at"].as_i64()).is_some_and(|t| t > down_until + 2_000)
            && h.iter().all(|f| f["state"] != "PENDING")
    });
    let times: Vec<i64> = h.iter().map(|f| f["scheduled_at"].as_i64().unwrap()).collect();
    for pair in times.windows(2) {
        assert_eq!(pair[1] - pair[0], 1_000, "every second fired, none twice, none skipped: {times:?}");
    }
    assert!(h.iter().all(|f| f["state"] == "DELIVERED"), "within the retry window nothing is missed: {h:?}");
    let ids: HashSet<&str> = h.iter().map(|f| f["invocation_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), h.len(), "one invocation per firing");
    // Each invocation got its own scheduled time, and the function saw it.
    for f in h.iter().take(3).chain(h.iter().rev().take(3)) {
        let rec = a.wait_terminal(f["invocation_id"].as_str().unwrap(), Duration::from_secs(30));
        let event: Value = serde_json::from_str(rec["result"].as_str().unwrap()).unwrap();
        assert_eq!(event["at"], f["scheduled_time"]);
    }
    let listed: Value = a.get("/v1/functions/tick/invocations?limit=1000").json().unwrap();
    assert_eq!(listed["invocations"].as_array().unwrap().len(), h.len(), "no invocation but the firings'");
}

#[test]
fn refused_firings_go_to_the_dead_letter_queue_and_queue_targets_get_messages() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    for q in ["dlq", "jobs"] {
        let r = s.client().post(format!("{}/v1/queues", s.url)).json(&json!({ "name": q })).send().unwrap();
        assert!(r.status().is_success());
    }
    // The function does not exist: refused for good, at once, into the dead-letter queue.
    put_schedule(
        &s,
        "orphan",
        json!({ "expression": "rate(1 second)", "function": "missing", "dead_letter_queue": "dlq" }),
    );
    let h = wait_history(&s, "orphan", Duration::from_secs(20), |h| !h.is_empty());
    assert_eq!(h[0]["state"], "DEAD_LETTERED");
    assert!(h[0]["detail"].as_str().unwrap().contains("function missing not found"), "{h:?}");
    let got: Value = s
        .client()
        .post(format!("{}/v1/queues/dlq/receive", s.url))
        .json(&json!({ "max": 1, "wait_seconds": 5 }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let dead = &got["messages"][0];
    let event: Value = serde_json::from_str(dead["body"].as_str().unwrap()).unwrap();
    assert_eq!(event["detail-type"], "Scheduled Event");
    assert_eq!(event["resources"][0], "arn:aws:scheduler:us-east-1:000000000000:schedule/default/orphan");
    assert_eq!(dead["attributes"]["ERROR_CODE"]["StringValue"], "ResourceNotFound", "{dead}");
    assert_eq!(s.delete("/v1/schedules/orphan").status(), 204);

    // A one-time schedule to a queue, deleted once it fired.
    let at = gust_core::schedule::iso_seconds(now_ms() + 2_000);
    let at = at.trim_end_matches('Z');
    put_schedule(
        &s,
        "once",
        json!({ "expression": format!("at({at})"), "queue": "jobs", "input": "hello", "delete_after_completion": true }),
    );
    let got: Value = s
        .client()
        .post(format!("{}/v1/queues/jobs/receive", s.url))
        .json(&json!({ "max": 10, "wait_seconds": 10 }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(got["messages"][0]["body"], "hello");
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.get("/v1/schedules/once").status() != 404 {
        assert!(Instant::now() < deadline, "the one-time schedule was not deleted after completion");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn gust(server: &Server, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(GUST).args(args).env("GUST_SERVER", &server.url).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn the_cli_creates_changes_disables_shows_and_deletes_schedules() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    s.deploy("job", wasm_config(5_000), fixture("echo"));
    let (code, out, err) = gust(
        &s,
        &[
            "schedule",
            "create",
            "nightly",
            "--expression",
            "cron(30 2 * * ? *)",
            "--function",
            "job",
            "--timezone",
            "Europe/Paris",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("default/nightly  cron(30 2 * * ? *)  enabled")
            && out.contains("time zone Europe/Paris"),
        "{out}"
    );
    let (code, _, err) =
        gust(&s, &["schedule", "create", "nightly", "--expression", "rate(1 hour)", "--function", "job"]);
    assert_ne!(code, 0);
    assert!(err.contains("already exists"), "{err}");
    // Update changes what it names; the rest stays.
    let (code, out, err) = gust(&s, &["schedule", "update", "nightly", "--expression", "rate(2 hours)"]);
    assert_eq!(code, 0, "{err}");
    let shown: Value = s.get("/v1/schedules/nightly").json().unwrap();
    assert_eq!(
        (shown["expression"].as_str(), shown["timezone"].as_str()),
        (Some("rate(2 hours)"), Some("Europe/Paris")),
        "{out}"
    );
    let (code, out, _) = gust(&s, &["schedule", "disable", "nightly"]);
    assert_eq!(code, 0);
    assert!(out.contains("disabled") && out.contains("next   none"), "{out}");
    let (_, out, _) = gust(&s, &["schedule", "list"]);
    assert_eq!(out.trim(), "default/nightly  rate(2 hours)  disabled");
    let (code, out, _) = gust(&s, &["schedule", "history", "nightly"]);
    assert_eq!((code, out.trim()), (0, "no firings yet"));
    // Bad input: a clear message and a non-zero exit, nothing written.
    for (bad, says) in [
        (vec!["--expression", "cron(0 9 * * * *)", "--function", "job"], "exactly one of day-of-month"),
        (vec!["--expression", "rate(1 hour)", "--function", "job", "--timezone", "Mars/Base"], "IANA"),
        (vec!["--expression", "at(2001-01-01T00:00:00)", "--function", "job"], "never fire"),
        (vec!["--expression", "rate(1 hour)"], "--function or --queue"),
    ] {
        let mut args = vec!["schedule", "create", "bad"];
        args.extend(bad);
        let (code, _, err) = gust(&s, &args);
        assert!(code != 0 && err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(s.get("/v1/schedules/bad").status(), 404);
    let (code, _, _) = gust(&s, &["schedule", "delete", "nightly"]);
    assert_eq!(code, 0);
    let (code, _, err) = gust(&s, &["schedule", "get", "nightly"]);
    assert!(code != 0 && err.contains("not found"), "{err}");
}

#[test]
fn keys_that_may_not_write_schedules_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--token", "admin"]);
    let admin = reqwest::blocking::Client::new();
    let auth = |req: reqwest::blocking::RequestBuilder, token: &str| req.bearer_auth(token);
    let key = |name: &str, body: Value| -> String {
        let r = auth(admin.post(format!("{}/v1/tokens", s.url)), "admin").json(&body.clone()).send().unwrap();
        let v: Value = r.json().unwrap();
        v["token"].as_str().unwrap_or_else(|| panic!("key {name}: {v}")).to_string()
    };
    let reader = key("reader", json!({ "name": "reader", "role": "reader" }));
    let scoped = key("scoped", json!({ "name": "scoped", "role": "deployer", "functions": "mine-*" }));
    let body = json!({ "expression": "rate(1 minute)", "function": "mine-1" });
    for (token, status) in [(reader.as_str(), 403), (scoped.as_str(), 403)] {
        let r = auth(admin.put(format!("{}/v1/schedules/s", s.url)), token).json(&body).send().unwrap();
        assert_eq!(r.status().as_u16(), status, "{}", r.text().unwrap());
    }
    let r = auth(admin.get(format!("{}/v1/schedules", s.url)), &scoped).send().unwrap();
    assert_eq!(r.status().as_u16(), 403, "a key limited to some functions sees no schedules");
    let r = auth(admin.get(format!("{}/v1/schedules", s.url)), &reader).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = admin.get(format!("{}/v1/schedules", s.url)).send().unwrap();
    assert_eq!(r.status().as_u16(), 401, "no token, no schedules");
}

#[test]
fn what_a_schedule_may_hold_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--max-schedules", "3"]);
    let put = |name: &str, body: Value| {
        let r = s.client().put(format!("{}/v1/schedules/{name}", s.url)).json(&body).send().unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap_or(Value::Null))
    };
    let fine = json!({ "expression": "rate(1 hour)", "function": "f" });
    for i in 0..3 {
        assert_eq!(put(&format!("s{i}"), fine.clone()).0, 201);
    }
    let (status, v) = put("s3", fine.clone());
    assert_eq!((status, v["error"]["code"].as_str()), (403, Some("QuotaExceeded")), "{v}");
    assert_eq!(
        put("s0", json!({ "expression": "rate(2 hours)", "function": "f" })).0,
        200,
        "replacing is not creating"
    );
    assert_eq!(s.delete("/v1/schedules/s2").status(), 204);
    for (name, body, says) in [
        (
            "big",
            json!({ "expression": "rate(1 hour)", "function": "f", "input": "x".repeat(8193) }),
            "longer than 8192",
        ),
        (&"n".repeat(65), fine.clone(), "1-64"),
        ("odd", json!({ "expression": "rate(1 hour)", "function": "f", "role": "admin" }), "unknown field"),
        ("both", json!({ "expression": "rate(1 hour)", "function": "f", "queue": "q" }), "either"),
        (
            "dlq",
            json!({ "expression": "rate(1 hour)", "function": "f", "dead_letter_queue": "no/such" }),
            "DeadLetterConfig",
        ),
    ] {
        let (status, v) = put(name, body);
        assert_eq!(status, 400, "{name}: {v}");
        assert!(v["error"]["message"].as_str().unwrap_or_default().contains(says), "{name}: {v}");
    }
    let r = s.client().put(format!("{}/v1/schedules/x?group=a%2Fb", s.url)).json(&fine).send().unwrap();
    assert_eq!(r.status().as_u16(), 400, "a group name is checked like a name");
    let r = s.client().put(format!("{}/v1/schedules/x", s.url)).body(vec![b' '; 4 << 20]).send().unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let listed: Value = s.get("/v1/schedules").json().unwrap();
    assert_eq!(listed["schedules"].as_array().unwrap().len(), 2, "nothing half-written");
}
