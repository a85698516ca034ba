//! Lambda-style functions on the process runtime, end to end over HTTP: a `provided` zip
//! package with a `bootstrap`, invoked sync and async, warm between invocations, and hostile
//! packages refused at upload.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{error_code, Server};
use serde_json::{json, Value};

fn zip(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data, mode) in files {
        w.start_file(*name, zip::write::SimpleFileOptions::default().unix_permissions(*mode)).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn bootstrap() -> Vec<u8> {
    std::fs::read(format!("{}/../../tests/fixtures/bootstrap.py", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn a_provided_function_runs_warm_and_reports_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let code = zip(&[("bootstrap", &bootstrap(), 0o755)]);
    let r = s.put_json(
        "/v1/functions/lam",
        &json!({ "runtime": "provided.al2023", "timeout_ms": 2000, "env": { "GREETING": "hey" } }),
    );
    assert_eq!(r.status(), 200);
    let r = s
        .client()
        .put(format!("{}/v1/functions/lam/code", s.url))
        .header("content-type", "application/zip")
        .body(code)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());

    let r = s.invoke("lam", None, br#"{"n": 1}"#, &[]);
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!((v["count"].as_u64(), v["event"]["n"].as_u64()), (Some(1), Some(1)));
    assert_eq!(v["env"]["AWS_LAMBDA_FUNCTION_NAME"], "lam");
    assert_eq!(v["env"]["GREETING"], "hey");
    let v: Value = s.invoke("lam", None, b"{}", &[]).json().unwrap();
    assert_eq!(v["count"], 2, "the environment stayed warm");

    let r = s.invoke("lam", None, br#"{"action": "fail"}"#, &[]);
    assert_eq!(r.headers()["gust-function-error"], "FunctionError");
    let r = s.invoke("lam", None, br#"{"action": "hang"}"#, &[]);
    assert_eq!(r.headers()["gust-function-error"], "Timeout");

    let r = s.invoke("lam", None, br#"{"n": 2}"#, &[("invocation-type", "async")]);
    let id = r.json::<Value>().unwrap()["invocation_id"].as_str().unwrap().to_string();
    let rec = s.wait_terminal(&id, Duration::from_secs(10));
    assert_eq!(rec["state"], "SUCCEEDED");
    assert!(rec["log"].as_str().unwrap().starts_with("invocation "), "stdout is the log: {rec}");
}

#[test]
fn bad_packages_are_refused_at_upload() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    s.put_json("/v1/functions/lam", &json!({ "runtime": "provided" }));
    let upload = |code: Vec<u8>| {
        s.client()
            .put(format!("{}/v1/functions/lam/code", s.url))
            .header("content-type", "application/zip")
            .body(code)
            .send()
            .unwrap()
    };
    assert_eq!(error_code(upload(b"not a zip".to_vec()), 400), "InvalidCode");
    assert_eq!(error_code(upload(zip(&[("app.py", b"", 0o644)])), 400), "InvalidCode", "no bootstrap");
    assert_eq!(error_code(upload(zip(&[("../../evil", b"", 0o755)])), 400), "InvalidCode", "zip-slip");
    let f: Value = s.get("/v1/functions/lam").json().unwrap();
    assert!(f["code_sha256"].is_null(), "nothing was stored");
    assert_eq!(
        error_code(s.put_json("/v1/functions/py", &json!({ "runtime": "python3.12" })), 400),
        "InvalidConfig",
        "python needs a handler"
    );
}

/// The Python interpreter with `awslambdaric` that `./scripts/test` prepares.
fn test_python() -> String {
    std::env::var("GUST_TEST_PYTHON")
        .expect("GUST_TEST_PYTHON is not set: run the suite with ./scripts/test (it installs awslambdaric)")
}

#[test]
fn an_unmodified_python_lambda_handler_runs_on_awslambdaric() {
    let dir = tempfile::tempdir().unwrap();
    let python = test_python();
    let s = Server::start(dir.path(), &["--python", &python]);
    let app = br#"
import os
calls = 0

def handler(event, context):
    global calls
    calls += 1
    if event.get("fail"):
        raise ValueError("no " + event["fail"])
    return {"hello": event.get("name"), "calls": calls, "function": context.function_name,
            "remaining_ok": context.get_remaining_time_in_millis() > 0}
"#;
    let code = zip(&[("app.py", app, 0o644)]);
    let r = s.put_json(
        "/v1/functions/py",
        &json!({ "runtime": "python3.11", "handler": "app.handler", "timeout_ms": 10_000 }),
    );
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let r = s
        .client()
        .put(format!("{}/v1/functions/py/code", s.url))
        .header("content-type", "application/zip")
        .body(code)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());

    let r = s.invoke("py", None, br#"{"name": "Ada"}"#, &[]);
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("gust-function-error").is_none(), "{}", r.text().unwrap());
    let v: Value = r.json().unwrap();
    assert_eq!(v, json!({ "hello": "Ada", "calls": 1, "function": "py", "remaining_ok": true }));
    let v: Value = s.invoke("py", None, br#"{"name": "Bo"}"#, &[]).json().unwrap();
    assert_eq!(v["calls"], 2, "module state survives between invocations");

    let r = s.invoke("py", None, br#"{"fail": "way"}"#, &[]);
    assert_eq!(r.headers()["gust-function-error"], "FunctionError");
    let err: Value = r.json().unwrap();
    assert_eq!(err["errorMessage"], "ValueError: no way", "errorType from the runtime's error body");
}
