//! Hostile functions against the sandbox, black box: each test is an attack that succeeded
//! against an earlier gust (the function's environment loaded into the root-owned sandbox init;
//! functions ran as root when `nobody` could not reach their code; /tmp filled the host's disk;
//! the host's filesystem was visible and partly writable), and asserts the host is untouched
//! and the server keeps serving.

mod common;

use common::{error_code, Server};
use gust_testkit::{is_root, zip};
use serde_json::{json, Value};
use sha2::Digest as _;

/// A `provided` bootstrap that runs the shell command in the event's "sh" field and answers
/// `{"out": its output, "code": its exit status}`.
const SHELL_BOOTSTRAP: &[u8] = br#"#!/bin/sh
api="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation"
headers="$(mktemp)"
while true; do
    event="$(curl -sS -D "$headers" "$api/next")" || exit 1
    id="$(grep -i '^lambda-runtime-aws-request-id:' "$headers" | tr -d '\r' | cut -d' ' -f2)"
    cmd="$(printf '%s' "$event" | sed -n 's/^{"sh":"\(.*\)"}$/\1/p')"
    out="$(sh -c "$cmd" 2>&1)"
    code=$?
    printf '%s' "$out" > /tmp/out
    curl -sS -o /dev/null -X POST "$api/$id/response" --data-binary @- <<EOF
{"code":$code,"out":"$(tr '\n"\\' '|  ' < /tmp/out)"}
EOF
done
"#;

fn namespaces_and_root() -> bool {
    let root = is_root();
    let ns = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount", "--net", "true"])
        .status()
        .is_ok_and(|s| s.success());
    root && ns
}

fn deploy(s: &Server, name: &str, config: Value, files: &[(&str, &[u8], u32)]) -> String {
    s.deploy_zip(name, config, zip(files))["code_sha256"].as_str().unwrap().to_string()
}

fn sh(s: &Server, name: &str, cmd: &str) -> (i64, String) {
    let r = s.invoke(name, None, json!({ "sh": cmd }).to_string().as_bytes(), &[]);
    let text = r.text().unwrap();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (v["code"].as_i64().unwrap_or(-1), v["out"].as_str().unwrap_or("").to_string())
}

#[test]
fn a_functions_environment_never_reaches_the_privileged_sandbox_init() {
    if !namespaces_and_root() {
        eprintln!("skipped: needs root and namespaces");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The preloaded library writes a marker wherever it is loaded; loaded by the sandbox init
    // (root, the host's mount namespace), the marker would appear on the host.
    let marker_dir = dir.path().join("host-only");
    std::fs::create_dir(&marker_dir).unwrap();
    let marker = marker_dir.join("pwned");
    let c = dir.path().join("x.c");
    std::fs::write(
        &c,
        br#"#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void pwn(void) {
    const char *m = getenv("GUST_MARKER");
    FILE *f = m ? fopen(m, "w") : NULL;
    if (f) { fputs("loaded", f); fclose(f); }
    f = fopen("/tmp/preloaded", "w");
    if (f) { fputs("loaded", f); fclose(f); }
}
"#,
    )
    .unwrap();
    let so = dir.path().join("x.so");
    let built = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&c)
        .status()
        .is_ok_and(|s| s.success());
    assert!(built, "cc builds the attack library (gcc is on gust's build machines)");
    let data = dir.path().join("data");
    let s = Server::start(&data, &[]);
    let files: Vec<(&str, &[u8], u32)> = vec![("bootstrap", SHELL_BOOTSTRAP, 0o755)];
    let so_bytes = std::fs::read(&so).unwrap();
    let mut with_so = files.clone();
    with_so.push(("x.so", &so_bytes, 0o755));
    let sha = hex::encode(sha2::Sha256::digest(zip(&with_so)));
    let preload = data.join("tasks").join(&sha).join("x.so");
    let config = json!({ "runtime": "provided", "env": {
        "LD_PRELOAD": preload, "GUST_MARKER": marker,
    }});
    assert_eq!(deploy(&s, "pre", config, &with_so), sha);
    let (code, out) = sh(&s, "pre", "cat /tmp/preloaded; echo; id -u");
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "loaded|65534", "the function itself (as nobody) may preload what it likes");
    assert!(!marker.exists(), "nothing ran on the host side with the function's environment");
    assert_eq!(s.get("/healthz").status(), 200);
}

#[test]
fn names_lambda_reserves_are_refused_at_deploy_as_lambda_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    for key in ["_HANDLER", "AWS_REGION", "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "AWS_ACCESS_KEY_ID"] {
        let r = s.put_json("/v1/functions/f", &json!({ "runtime": "wasm", "env": { key: "x" } }));
        let msg = r.text().unwrap();
        assert!(msg.contains("Reserved keys used in this request") && msg.contains(key), "{key}: {msg}");
    }
    let r = s.put_json("/v1/functions/f", &json!({ "runtime": "wasm", "env": { "AWS_REGION": "x" } }));
    assert_eq!(error_code(r, 400), "InvalidConfig");
    let r = s
        .client()
        .post(format!("{}/2015-03-31/functions", s.url))
        .json(&json!({
            "FunctionName": "g", "Runtime": "wasm", "Role": "arn:aws:iam::000000000000:role/x",
            "Environment": { "Variables": { "AWS_LAMBDA_FUNCTION_NAME": "evil" } },
            "Code": { "ZipFile": "AGFzbQEAAAA=" }
        }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-amzn-errortype"], "InvalidParameterValueException");
    assert_eq!(s.get("/v1/functions/f").status(), 404, "nothing was half-written");
}

#[test]
fn a_function_never_runs_as_root_and_sees_a_read_only_root_of_its_own() {
    if !namespaces_and_root() {
        eprintln!("skipped: needs root and namespaces");
        return;
    }
    // The data dir below a directory only root may enter: gust used to fall back to running
    // the function as root here.
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    let s = Server::start(&locked.join("data"), &[]);
    deploy(
        &s,
        "box",
        json!({ "runtime": "provided", "memory_mb": 1024 }),
        &[("bootstrap", SHELL_BOOTSTRAP, 0o755)],
    );
    assert_eq!(sh(&s, "box", "id -u").1, "65534", "nobody, never root");
    for path in ["/etc/gust-x", "/usr/gust-x", "/gust-x", "/sys/gust-x"] {
        let (code, out) = sh(&s, "box", &format!("touch {path}"));
        assert_ne!(code, 0, "{path} must not be writable: {out}");
    }
    let (code, out) = sh(&s, "box", "touch /tmp/ok && echo yes");
    assert_eq!((code, out.as_str()), (0, "yes"), "/tmp is the function's own");
    let (_, top) = sh(&s, "box", "ls -A /");
    for absent in ["home", "run", "var", "mnt", "srv", "media", "boot"] {
        assert!(!top.split('|').any(|e| e == absent), "/{absent} is not in the function's root: {top}");
    }
    let (_, dev) = sh(&s, "box", "ls -A /dev");
    let mut dev: Vec<&str> = dev.split('|').collect();
    dev.sort();
    assert_eq!(dev, ["fd", "full", "null", "random", "shm", "stderr", "stdin", "stdout", "urandom", "zero"]);
    // No terminal: the operator's shell is out of reach (no /dev/tty, no controlling tty).
    let (code, out) = sh(&s, "box", "echo hi > /dev/tty 2>&1");
    assert_ne!(code, 0, "no terminal: {out}");
    let (code, out) = sh(&s, "box", "ls /sys 2>&1");
    assert_ne!(code, 0, "no /sys: {out}");
    let (code, out) = sh(&s, "box", "ls /run/dbus /var/run/docker.sock /run/systemd 2>&1");
    assert_ne!(code, 0, "no host sockets: {out}");
    assert!(!dir.path().join("locked/data/gust-x").exists());
    // seccomp: nobody may make user namespaces on this host, but not inside a function.
    let (code, out) = sh(&s, "box", "unshare -U true 2>&1");
    assert_ne!(code, 0, "no new user namespaces: {out}");
    let (code, out) = sh(&s, "box", "unshare -r -m true 2>&1; echo $?");
    assert!(code == 0 && !out.ends_with("|0"), "no mount namespace either: {out}");
}

#[test]
fn descriptors_gust_inherited_never_reach_a_function() {
    // gust started with an open descriptor it did not ask for (a shell's `77<secret`, a
    // supervisor's pipe): the function must not be able to read it, sandboxed or not.
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "TOP-SECRET-HOST-FILE").unwrap();
    let file = std::fs::File::open(&secret).unwrap();
    // Inherited by the server this test process spawns (not close-on-exec), at fd 77.
    nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&file), 77).unwrap();
    let isolations: &[&str] = if namespaces_and_root() { &["best-effort", "none"] } else { &["none"] };
    for isolation in isolations {
        let data = dir.path().join(isolation);
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
        let s = Server::start(&data, &["--isolation", isolation]);
        deploy(&s, "fds", json!({ "runtime": "provided" }), &[("bootstrap", SHELL_BOOTSTRAP, 0o755)]);
        // bash: dash's redirections take one-digit descriptors only. The bootstrap turns the
        // listing's newlines into `|`.
        let (_, out) = sh(&s, "fds", "ls /proc/self/fd; bash -c 'cat <&77' 2>&1");
        assert!(!out.contains("TOP-SECRET"), "{isolation}: the function read gust's descriptor: {out}");
        let open: Vec<&str> = out.split(['|', ' ']).filter(|t| !t.is_empty()).collect();
        assert!(open.contains(&"2"), "the listing ran: {out}");
        assert!(!open.contains(&"77"), "{isolation}: fd 77 is open in the function: {out}");
    }
    nix::unistd::close(77).unwrap();
}

#[test]
fn tmp_holds_the_ephemeral_storage_and_no_more() {
    if !namespaces_and_root() {
        eprintln!("skipped: needs root and namespaces");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let config = json!({ "runtime": "provided", "memory_mb": 1024, "ephemeral_storage_mb": 512, "timeout_ms": 20_000 });
    deploy(&s, "fill", config, &[("bootstrap", SHELL_BOOTSTRAP, 0o755)]);
    let (code, out) = sh(
        &s,
        "fill",
        "dd if=/dev/zero of=/tmp/fill bs=1M count=700 2>&1; du -m /tmp/fill | cut -f1; rm /tmp/fill",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("No space left on device"), "a write past the limit fails with ENOSPC: {out}");
    let used: u64 = out.rsplit('|').next().unwrap().trim().parse().unwrap();
    assert!(used <= 512, "at most the ephemeral storage: {used} MB");
    let r =
        s.put_json("/v1/functions/fill", &json!({ "runtime": "provided", "ephemeral_storage_mb": 20_000 }));
    assert_eq!(error_code(r, 400), "InvalidConfig");
    assert_eq!(s.get("/healthz").status(), 200);
}

#[test]
fn memory_is_a_limit_on_all_of_a_functions_processes_together() {
    if !namespaces_and_root() {
        eprintln!("skipped: needs root and namespaces");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let config = json!({ "runtime": "provided", "memory_mb": 128, "timeout_ms": 20_000 });
    deploy(&s, "hog", config, &[("bootstrap", SHELL_BOOTSTRAP, 0o755)]);
    // Six processes of 200 MB each (`tail` holds a line without newlines in memory), each
    // within its own address-space limit: 1.2 GB in a 128 MB function.
    let cmd = "for i in 1 2 3 4 5 6; do head -c 200M /dev/zero | tail > /dev/null & done; wait; echo done";
    let r = s.invoke("hog", None, json!({ "sh": cmd }).to_string().as_bytes(), &[]);
    let kind = r.headers().get("gust-function-error").map(|v| v.to_str().unwrap().to_string());
    let body = r.text().unwrap();
    assert_eq!(kind.as_deref(), Some("OutOfMemory"), "{body}");
    assert!(body.contains("Runtime.OutOfMemory"), "{body}");
    // The next invocation starts a fresh environment and works.
    assert_eq!(sh(&s, "hog", "echo fine"), (0, "fine".to_string()));
}

#[test]
fn a_fork_bomb_in_one_function_does_not_stop_another_from_starting() {
    if !namespaces_and_root() {
        eprintln!("skipped: needs root and namespaces");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    // Memory enough for a thousand processes: the process bound is what stops this one.
    let config = json!({ "runtime": "provided", "timeout_ms": 20_000, "memory_mb": 2048 });
    deploy(&s, "bomb", config.clone(), &[("bootstrap", SHELL_BOOTSTRAP, 0o755)]);
    deploy(&s, "victim", config, &[("bootstrap", SHELL_BOOTSTRAP, 0o755)]);
    // Far more processes than one environment may have (the subshell gives up at its first
    // failed fork); counted and waited for with shell builtins only, which need no fork.
    let bomb = "(for i in $(seq 3000); do sleep 3 >/dev/null 2>&1 & done) 2>/dev/null; \
                set -- /proc/[0-9]*; n=$#; while set -- /proc/[0-9]*; [ $# -gt 20 ]; do :; done; echo $n";
    let (_, out) = sh(&s, "bomb", bomb);
    let alive: u64 = out.trim().parse().unwrap_or(0);
    assert!(alive > 100 && alive <= 1024 + 8, "the environment's processes are bounded: {out}");
    // Another function still starts and answers.
    assert_eq!(sh(&s, "victim", "echo alive"), (0, "alive".to_string()));
}
