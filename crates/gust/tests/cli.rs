//! The CLI against a real server: the tour from the README, exit codes and JSON output.

mod common;

use std::process::Output;

use common::Server;
use serde_json::Value;

fn gust(server: &Server, args: &[&str]) -> Output {
    common::cli(&server.url).args(args).output().expect("run gust")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn the_tour_works_with_exit_codes_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);

    let o = gust(&s, &["deploy", "hello", "--code", "examples/hello/hello.wasm", "--env", "GREETING=Hello"]);
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).starts_with("deployed hello"), "{o:?}");

    let o = gust(&s, &["invoke", "hello", "--payload", r#"{"name":"Ada"}"#]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), r#"{"message":"Hello, Ada!","runtime":"gust wasm"}"#);

    let o = gust(&s, &["invoke", "hello", "--payload", "{}"]);
    assert_eq!(o.status.code(), Some(1), "a function error exits 1");
    assert!(String::from_utf8_lossy(&o.stderr).contains("function error (FunctionError)"));

    let o = gust(&s, &["invoke", "nope"]);
    assert_eq!(o.status.code(), Some(3), "not found exits 3");
    assert!(String::from_utf8_lossy(&o.stderr).contains("function nope not found"), "{o:?}");

    assert!(gust(&s, &["publish", "hello"]).status.success());
    let o = gust(&s, &["deploy", "hello", "--code", "examples/hello/hello.wasm", "--env", "GREETING=Hi"]);
    assert!(o.status.success());
    assert_eq!(stdout(&gust(&s, &["publish", "hello"])), "published hello version 2");
    let o = gust(&s, &["alias", "hello", "live", "--version", "1", "--weight", "2=0.5"]);
    assert!(o.status.success(), "{o:?}");
    let o = gust(&s, &["alias", "hello", "live", "--version", "1", "--weight", "2=2"]);
    assert_eq!(o.status.code(), Some(7), "bad weight is refused by the server (400)");

    let o = gust(&s, &["invoke", "hello:1", "--payload", r#"{"name":"Bo"}"#, "--output", "json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["executed_version"], "1");
    assert!(v["body"].as_str().unwrap().contains("Hello, Bo!"));

    let o = gust(&s, &["invoke", "hello:live", "--payload", r#"{"name":"Cy"}"#, "--async"]);
    let id = stdout(&o);
    assert_eq!(id.len(), 36, "prints the invocation id: {o:?}");
    let state = s.wait_terminal(&id, std::time::Duration::from_secs(10));
    assert_eq!(state["state"], "SUCCEEDED");
    let o = gust(&s, &["invocation", &id, "--output", "json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["invocation_id"], id.as_str());
    assert!(stdout(&gust(&s, &["invocation", &id])).contains("SUCCEEDED"));

    let o = gust(&s, &["invoke", "hello", "--payload", r#"{"name":"Di"}"#, "--idempotency-key", "k1"]);
    let again = gust(&s, &["invoke", "hello", "--payload", r#"{"name":"Di"}"#, "--idempotency-key", "k1"]);
    assert_eq!(stdout(&o), stdout(&again));

    let o = gust(&s, &["functions", "--output", "json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["functions"][0]["name"], "hello");
    let logs = stdout(&gust(&s, &["logs", "hello", "--limit", "3"]));
    assert!(logs.contains("hello: greeting"), "{logs}");
    let versions = stdout(&gust(&s, &["versions", "hello"]));
    assert!(versions.lines().count() == 3, "{versions}");
}
