//! The wasm runtime against real guests: results, logs, exit codes, traps, timeouts, memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use gust_core::ErrorKind;
use gust_runtime::wasm::{WasmConfig, WasmRuntime};
use gust_runtime::{PrepareError, RunOutcome, RunRequest, Status};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../../tests/fixtures/{name}.wat", env!("CARGO_MANIFEST_DIR"));
    wat::parse_file(&path).unwrap()
}

fn runtime(dir: &std::path::Path) -> Arc<WasmRuntime> {
    WasmRuntime::new(WasmConfig { cache_dir: dir.join("modules"), max_instances: 8 }).unwrap()
}

async fn run(rt: &WasmRuntime, name: &str, payload: &str, memory_mb: u32, timeout_ms: u64) -> RunOutcome {
    let code = fixture(name);
    let sha = format!("{name}-test");
    let prepared = rt.prepare(&sha, &code).unwrap();
    let env = BTreeMap::from([("GREETING".to_string(), "hi".to_string())]);
    rt.run(
        &prepared,
        RunRequest {
            function: "f",
            version_label: "1",
            invocation_id: "id",
            payload: Bytes::from(payload.to_string()),
            env: &env,
            memory_mb,
            timeout_ms,
        },
    )
    .await
}

#[tokio::test]
async fn echo_returns_stdin_and_logs_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let big = "x".repeat(200_000);
    let out = run(&rt, "echo", &big, 128, 3000).await;
    assert_eq!(out.status, Status::Succeeded);
    assert_eq!(out.stdout.len(), big.len());
    assert_eq!(out.log, "echo: invoked\n");
}

#[tokio::test]
async fn exit_code_is_a_function_error_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&runtime(dir.path()), "fail", "{}", 128, 3000).await;
    assert_eq!(
        out.status,
        Status::Failed { kind: ErrorKind::FunctionError, message: "the function exited with code 3".into() }
    );
    assert_eq!(out.log, "fail: bad input\n");
}

#[tokio::test]
async fn trap_is_a_readable_crash() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&runtime(dir.path()), "trap", "", 128, 3000).await;
    let Status::Failed { kind, message } = out.status else { panic!("trap succeeded") };
    assert_eq!(kind, ErrorKind::Crashed);
    assert!(message.contains("unreachable"), "{message}");
}

#[tokio::test]
async fn runaway_function_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&runtime(dir.path()), "spin", "", 128, 100).await;
    assert_eq!(
        out.status,
        Status::Failed { kind: ErrorKind::Timeout, message: "the function timed out after 100 ms".into() }
    );
    assert!(out.duration.as_millis() >= 100 && out.duration.as_millis() < 2000, "{:?}", out.duration);
}

#[tokio::test]
async fn memory_is_capped_by_the_function_setting() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&runtime(dir.path()), "hog", "", 32, 3000).await;
    assert_eq!(
        out.status,
        Status::Failed {
            kind: ErrorKind::OutOfMemory,
            message: "the function exceeded its memory limit of 32 MB".into()
        }
    );
}

#[tokio::test]
async fn invalid_modules_and_reactors_are_refused_at_prepare() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    assert!(matches!(rt.prepare("junk", b"not wasm at all"), Err(PrepareError::Invalid(_))));
    assert!(matches!(rt.prepare("reactor", &fixture("reactor")), Err(PrepareError::NotACommand(_))));
}

#[tokio::test]
async fn compiled_modules_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let code = fixture("echo");
    runtime(dir.path()).prepare("echo-sha", &code).unwrap();
    let cached: Vec<_> = std::fs::read_dir(dir.path().join("modules")).unwrap().collect();
    assert_eq!(cached.len(), 1, "one compiled module on disk");
    let again = runtime(dir.path());
    assert!(again.prepared("echo-sha").is_some(), "a new runtime loads the compiled module without the code");
    assert!(again.prepared("other").is_none());
}

#[tokio::test]
async fn guests_see_no_host_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&runtime(dir.path()), "sandbox", "", 128, 3000).await;
    assert_eq!(
        out.status,
        Status::Failed { kind: ErrorKind::FunctionError, message: "the function exited with code 8".into() },
        "fd 3 must not be a preopened directory (EBADF)"
    );
}
