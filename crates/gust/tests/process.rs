//! Lambda-style functions on the process runtime, end to end over HTTP: a `provided` zip
//! package with a `bootstrap`, invoked sync and async, warm between invocations, and hostile
//! packages refused at upload.

mod common;

use std::time::Duration;

use common::{error_code, Server, GUST};
use gust_testkit::{fixture_file, is_root, node_ric, python, zip};
use serde_json::{json, Value};

#[test]
fn a_provided_function_runs_warm_and_reports_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let code = zip(&[("bootstrap", &fixture_file("bootstrap.py"), 0o755)]);
    let config = json!({ "runtime": "provided.al2023", "timeout_ms": 2000, "env": { "GREETING": "hey" } });
    s.deploy_zip("lam", config, code);

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

    let id = common::accepted_id(s.invoke("lam", None, br#"{"n": 2}"#, &[("invocation-type", "async")]));
    let rec = s.wait_terminal(&id, Duration::from_secs(10));
    assert_eq!(rec["state"], "SUCCEEDED");
    assert!(rec["log"].as_str().unwrap().starts_with("invocation "), "stdout is the log: {rec}");
}

#[test]
fn bad_packages_are_refused_at_upload() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    s.put_json("/v1/functions/lam", &json!({ "runtime": "provided" }));
    let upload = |code: Vec<u8>| s.put_zip("/v1/functions/lam/code", code);
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

#[test]
fn an_unmodified_python_lambda_handler_runs_on_awslambdaric() {
    let dir = tempfile::tempdir().unwrap();
    let python = python();
    // The interpreter lives under /root here, which only root may enter: it is bound into the
    // function's root.
    let s = Server::start(dir.path(), &[&["--python", &python][..], strict_where_possible()].concat());
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
    let config = json!({ "runtime": "python3.11", "handler": "app.handler", "timeout_ms": 10_000 });
    s.deploy_zip("py", config, zip(&[("app.py", app, 0o644)]));

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

/// A `provided` bootstrap that reports what it sees from inside its environment.
const INSPECTOR: &[u8] = br#"#!/usr/bin/env python3
import json, os, socket, subprocess, time, urllib.request
api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"
count = 0
while True:
    with urllib.request.urlopen(api + "/invocation/next") as r:
        rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(r.read() or b"{}")
    count += 1
    if event.get("hang"):
        subprocess.Popen(["sleep", event["hang"]])
        time.sleep(300)
    try:
        socket.create_connection(("127.0.0.1", event["port"]), timeout=2).close()
        host_port = "reached"
    except OSError as e:
        host_port = type(e).__name__
    with open("/tmp/scratch", "w") as f:
        f.write("private and writable")
    try:
        os.mkdir(os.path.join(os.environ["LAMBDA_TASK_ROOT"], "mine"))
        task_root = "writable"
    except OSError as e:
        task_root = type(e).__name__
    data = event["data_dir"]
    body = {
        "count": count,
        "pid": os.getpid(),
        "processes": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "uid": os.getuid(),
        "host_port": host_port,
        "hostname": socket.gethostname(),
        "data_dir": sorted(os.listdir(data)) if os.path.isdir(data) else None,
        "tasks": sorted(os.listdir(os.path.join(data, "tasks"))),
        "tmp": sorted(os.listdir("/tmp")),
        "task_root": task_root,
    }
    urllib.request.urlopen(urllib.request.Request(api + "/invocation/" + rid + "/response", data=json.dumps(body).encode(), method="POST"))
"#;

fn deploy_inspector(s: &Server) -> String {
    let config = json!({ "runtime": "provided.al2023", "timeout_ms": 2000 });
    let f = s.deploy_zip("inside", config, zip(&[("bootstrap", INSPECTOR, 0o755)]));
    f["code_sha256"].as_str().unwrap().to_string()
}

fn namespaces_available() -> bool {
    // What the sandbox needs as root (the tests run as root on gust's machines); elsewhere,
    // whatever `unshare` can do for an unprivileged user.
    std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--pid", "--fork", "--mount", "--net", "--ipc", "--uts", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Strict isolation where the host has it (namespaces, and root to make them), none elsewhere.
fn strict_where_possible() -> &'static [&'static str] {
    if namespaces_available() && is_root() {
        &["--isolation", "strict"]
    } else {
        &[]
    }
}

#[test]
fn a_function_runs_in_its_own_namespaces_and_still_talks_to_the_runtime_api() {
    if !namespaces_available() {
        eprintln!("skipped: this host cannot make namespaces");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--isolation", "strict"]);
    let sha = deploy_inspector(&s);
    // A port on the host's loopback that the function must not reach.
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let event = json!({ "port": host.local_addr().unwrap().port(), "data_dir": dir.path() }).to_string();

    let r = s.invoke("inside", None, event.as_bytes(), &[]);
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("gust-function-error").is_none(), "{}", r.text().unwrap());
    let v: Value = r.json().unwrap();
    assert!(v["pid"].as_u64().unwrap() <= 3, "a new pid namespace: {v}");
    let processes = v["processes"].as_array().unwrap();
    assert!(processes.len() <= 4, "only the environment's own processes are visible: {v}");
    assert_ne!(v["uid"], 0, "not root: {v}");
    assert_eq!(v["host_port"], "ConnectionRefusedError", "a new network namespace: {v}");
    assert_eq!(v["hostname"], "gust");
    assert_ne!(v["task_root"], "writable", "the shared task root is read-only: {v}");
    assert_eq!(v["data_dir"], json!(["tasks"]), "the database and artifacts are hidden: {v}");
    assert_eq!(v["tasks"], json!([sha]), "only this function's code is visible: {v}");
    // The environment's own /tmp: its scratch file, and the mount point of its task root (the
    // test's data dir is below /tmp).
    let mut tmp = vec!["scratch", dir.path().file_name().unwrap().to_str().unwrap()];
    tmp.sort();
    assert_eq!(v["tmp"], json!(tmp), "{v}");

    let v: Value = s.invoke("inside", None, event.as_bytes(), &[]).json().unwrap();
    assert_eq!(v["count"], 2, "the environment stayed warm through the bridge: {v}");

    // A timeout takes the whole environment down, children included.
    let marker = format!("301.{}", std::process::id());
    let hang = json!({ "port": 1, "data_dir": dir.path(), "hang": marker }).to_string();
    let r = s.invoke("inside", None, hang.as_bytes(), &[]);
    assert_eq!(r.headers()["gust-function-error"], "Timeout");
    std::thread::sleep(Duration::from_millis(300));
    let sleepers =
        std::process::Command::new("pgrep").args(["-f", &format!("sleep {marker}")]).output().unwrap();
    assert!(sleepers.stdout.is_empty(), "nothing is left of the environment");
    let v: Value = s.invoke("inside", None, event.as_bytes(), &[]).json().unwrap();
    assert_eq!(v["count"], 1, "a cold start after the timeout: {v}");
}

#[test]
fn strict_isolation_refuses_to_start_without_namespaces() {
    // Without CAP_SYS_ADMIN root cannot make namespaces; setpriv drops it for the server.
    let can_drop = std::process::Command::new("setpriv")
        .args(["--inh-caps=-sys_admin", "--bounding-set=-sys_admin", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !can_drop || !is_root() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--inh-caps=-sys_admin", "--bounding-set=-sys_admin", GUST])
        .args(["server", "--listen", "127.0.0.1:0", "--isolation", "strict", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--isolation strict") && stderr.contains("pid namespace"), "{stderr}");
    assert!(out.stdout.is_empty(), "it never listened");
}

#[test]
fn an_unmodified_node_lambda_handler_runs_on_aws_lambda_ric() {
    let dir = tempfile::tempdir().unwrap();
    let ric = node_ric();
    let s = Server::start(dir.path(), &[&["--node-ric", &ric][..], strict_where_possible()].concat());
    let app = br#"
let calls = 0;
export const handler = async (event, context) => {
  calls += 1;
  if (event.fail) throw new TypeError("no " + event.fail);
  return { hello: event.name, calls, function: context.functionName,
           remainingOk: context.getRemainingTimeInMillis() > 0, greeting: process.env.GREETING };
};
"#;
    let config = json!({ "runtime": "nodejs20.x", "handler": "index.handler", "timeout_ms": 10_000,
                         "env": { "GREETING": "hi" } });
    s.deploy_zip("js", config, zip(&[("index.mjs", app, 0o644)]));

    let r = s.invoke("js", None, br#"{"name": "Ada"}"#, &[]);
    assert!(r.headers().get("gust-function-error").is_none(), "{}", r.text().unwrap());
    let v: Value = r.json().unwrap();
    assert_eq!(
        v,
        json!({ "hello": "Ada", "calls": 1, "function": "js", "remainingOk": true, "greeting": "hi" })
    );
    let v: Value = s.invoke("js", None, br#"{"name": "Bo"}"#, &[]).json().unwrap();
    assert_eq!(v["calls"], 2, "module state survives between invocations");

    let r = s.invoke("js", None, br#"{"fail": "way"}"#, &[]);
    assert_eq!(r.headers()["gust-function-error"], "FunctionError");
    let err: Value = r.json().unwrap();
    assert_eq!(err["errorMessage"], "TypeError: no way", "errorType from the runtime's error body");
    let v: Value = s.invoke("js", None, br#"{"name": "Cy"}"#, &[]).json().unwrap();
    assert_eq!(v["calls"], 4, "a handled error keeps the environment warm");

    // A handler that does not exist is an init error on the invocation, not a hang.
    let r = s.put_json(
        "/v1/functions/js",
        &json!({ "runtime": "nodejs20.x", "handler": "index.nothere", "timeout_ms": 10_000 }),
    );
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let r = s.invoke("js", None, b"{}", &[]);
    let kind = r.headers()["gust-function-error"].to_str().unwrap().to_string();
    let err: Value = r.json().unwrap();
    assert_eq!(kind, "InitError", "{err}");
    assert!(err["errorMessage"].as_str().unwrap().contains("Runtime.HandlerNotFound"), "{err}");
}
