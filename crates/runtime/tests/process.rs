//! The process runtime against a real `bootstrap` that speaks the Lambda Runtime API (a small
//! Python program using only the standard library): results, warm state, handled errors,
//! crashes, timeouts that kill the process group, and init errors.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gust_core::ErrorKind;
use gust_runtime::package::{unpack, PackageLimits};
use gust_runtime::process::{Launch, ProcessConfig, ProcessFunction, ProcessRuntime};
use gust_runtime::{RunOutcome, Status};
use gust_testkit::{fixture_file, zip};

fn package(dir: &Path) -> std::path::PathBuf {
    let bytes = zip(&[("bootstrap", &fixture_file("bootstrap.py"), 0o755)]);
    unpack(&bytes, "pkg", dir, PackageLimits::default(), true).unwrap()
}

async fn run(
    rt: &Arc<ProcessRuntime>, root: &Path, env: &BTreeMap<String, String>, event: &str, timeout_ms: u64,
) -> RunOutcome {
    let f = ProcessFunction {
        key: "f:1:pkg".into(),
        task_root: root.to_path_buf(),
        launch: Launch::Bootstrap,
        function: "f",
        version: "1",
        handler: "app.handler",
        env,
        memory_mb: 128,
        ephemeral_storage_mb: 512,
        extra_address_space_mb: 0,
        timeout_ms,
    };
    rt.run(&f, &uuid_like(), Bytes::from(event.to_string()), &Default::default()).await
}

fn uuid_like() -> String {
    format!("{:032x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_warm_reports_errors_and_kills_on_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let root = package(dir.path());
    let rt = ProcessRuntime::new(ProcessConfig::unconfined(Duration::from_secs(60)));
    let env = BTreeMap::from([("GREETING".to_string(), "hi".to_string())]);

    let first = run(&rt, &root, &env, r#"{"n": 1}"#, 5_000).await;
    assert_eq!(first.status, Status::Succeeded, "{}", first.log);
    let v: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(v["count"], 1);
    assert_eq!(v["event"]["n"], 1);
    assert_eq!(v["env"]["AWS_LAMBDA_FUNCTION_NAME"], "f");
    assert_eq!(v["env"]["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "128");
    assert_eq!(v["env"]["_HANDLER"], "app.handler");
    assert_eq!(v["env"]["GREETING"], "hi");
    assert_eq!(v["deadline"], true);
    assert_eq!(first.log, "invocation 1\n");
    let tmp = std::path::PathBuf::from(v["tmp"].as_str().unwrap());
    assert!(tmp.join("scratch").exists(), "each environment has a private writable temp dir");

    let second = run(&rt, &root, &env, "{}", 5_000).await;
    let v: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(v["count"], 2, "the warm environment kept its module-level state");
    assert_eq!(rt.warm(), 1);

    let err = run(&rt, &root, &env, r#"{"action": "fail"}"#, 5_000).await;
    assert_eq!(
        err.status,
        Status::Failed { kind: ErrorKind::FunctionError, message: "ValueError: bad input".into() }
    );
    assert_eq!(rt.warm(), 1, "a handled error keeps the environment");

    let hog = run(&rt, &root, &env, r#"{"action": "alloc", "mb": 1024}"#, 5_000).await;
    assert!(matches!(hog.status, Status::Failed { .. }), "memory beyond the limit is refused");
    assert!(hog.log.contains("MemoryError"), "{}", hog.log);
    assert!(!tmp.exists(), "a discarded environment's temp dir is removed");

    let crash = run(&rt, &root, &env, r#"{"action": "exit"}"#, 5_000).await;
    let Status::Failed { kind, message } = crash.status else { panic!("exit succeeded") };
    assert_eq!(kind, ErrorKind::Crashed);
    assert!(message.contains("Runtime.ExitError") && message.contains("code 3"), "{message}");
    assert_eq!(rt.warm(), 0, "a crashed environment is discarded");

    // A child process with a marker of this test's own, to look for afterwards.
    let marker = format!("300.{}", std::process::id());
    let hang = run(&rt, &root, &env, &format!(r#"{{"action": "hang", "sleep": "{marker}"}}"#), 500).await;
    assert_eq!(
        hang.status,
        Status::Failed { kind: ErrorKind::Timeout, message: "the function timed out after 500 ms".into() }
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sleepers =
        std::process::Command::new("pgrep").args(["-f", &format!("sleep {marker}")]).output().unwrap();
    assert!(sleepers.stdout.is_empty(), "the whole process group was killed");

    let fresh = run(&rt, &root, &env, "{}", 5_000).await;
    let v: serde_json::Value = serde_json::from_slice(&fresh.stdout).unwrap();
    assert_eq!(v["count"], 1, "after a timeout the next invocation is a cold start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_error_is_reported_on_the_invocation() {
    let dir = tempfile::tempdir().unwrap();
    let root = package(dir.path());
    let rt = ProcessRuntime::new(ProcessConfig::unconfined(Duration::from_secs(60)));
    let env = BTreeMap::from([("FAIL_INIT".to_string(), "1".to_string())]);
    let out = run(&rt, &root, &env, "{}", 5_000).await;
    assert_eq!(
        out.status,
        Status::Failed { kind: ErrorKind::InitError, message: "InitBroken: cannot start".into() }
    );
    assert_eq!(rt.warm(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reachable_task_root_runs_as_an_unprivileged_user_when_gust_is_root() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = package(dir.path());
    let rt = ProcessRuntime::new(ProcessConfig::unconfined(Duration::from_secs(60)));
    let out = run(&rt, &root, &BTreeMap::new(), "{}", 5_000).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.log);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let euid = nix::unistd::geteuid();
    let want = if euid.is_root() { gust_runtime::sandbox::SANDBOX_UID } else { euid.as_raw() };
    assert_eq!(v["uid"], want, "functions never run as root when gust can drop privileges");
}
