//! The wasm runtime against real guests: results, logs, exit codes, traps, timeouts, memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gust_core::ErrorKind;
use gust_runtime::wasm::{CompileLimits, Compiler, WasmConfig, WasmRuntime};
use gust_runtime::{PrepareError, RunOutcome, RunRequest, Status};
use gust_testkit::{fixture, leb128};

fn runtime(dir: &std::path::Path) -> Arc<WasmRuntime> {
    runtime_with(dir, CompileLimits::default())
}

/// A runtime that compiles in process: this crate has no binary with a `__compile` entry point
/// (the compiler child is tested through the gust binary, `crates/gust/tests/attack_wasm_compile.rs`).
fn runtime_with(dir: &std::path::Path, compile_limits: CompileLimits) -> Arc<WasmRuntime> {
    let cfg = WasmConfig {
        cache_dir: dir.join("modules"),
        max_instances: 8,
        compile_limits,
        compiler: Compiler::InProcess,
        allow_private_outbound: false,
    };
    WasmRuntime::new(cfg).unwrap()
}

/// A command whose `_start` is `body_bytes` of `nop`s: valid, cheap to compile, and as large
/// as asked.
fn command_with_body(body_bytes: usize) -> Vec<u8> {
    let mut body = vec![0x00]; // no locals
    body.resize(1 + body_bytes, 0x01); // nop
    body.push(0x0b); // end
    let mut code = vec![0x01];
    leb128(body.len(), &mut code);
    code.extend(body);
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    module.extend([0x01, 0x04, 0x01, 0x60, 0x00, 0x00]); // type: () -> ()
    module.extend([0x03, 0x02, 0x01, 0x00]); // one function of that type
    module.extend([0x07, 0x0a, 0x01, 0x06]); // export "_start" = function 0
    module.extend(b"_start");
    module.extend([0x00, 0x00]);
    module.push(0x0a);
    leb128(code.len(), &mut module);
    module.extend(code);
    module
}

async fn run(rt: &WasmRuntime, name: &str, payload: &str, memory_mb: u32, timeout_ms: u64) -> RunOutcome {
    let code = fixture(name);
    let sha = format!("{name}-test");
    let prepared = rt.prepare(&sha, &code).unwrap();
    run_prepared(rt, &prepared, payload, memory_mb, timeout_ms).await
}

async fn run_prepared(
    rt: &WasmRuntime, prepared: &gust_runtime::wasm::Prepared, payload: &str, memory_mb: u32, timeout_ms: u64,
) -> RunOutcome {
    let env = BTreeMap::from([("GREETING".to_string(), "hi".to_string())]);
    rt.run(
        prepared,
        RunRequest {
            function: "f",
            version_label: "1",
            invocation_id: "id",
            payload: Bytes::from(payload.to_string()),
            env: &env,
            memory_mb,
            timeout_ms,
            http: None,
            allowed_outbound_hosts: &[],
            stream: None,
            trace_id: None,
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
async fn a_guest_sleeping_in_a_host_call_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let started = Instant::now();
    let out = run(&rt, "sleep", "", 128, 1000).await;
    assert_eq!(
        out.status,
        Status::Failed { kind: ErrorKind::Timeout, message: "the function timed out after 1000 ms".into() }
    );
    // Generous: the point is that the 8 s sleep is cut short, not how precisely.
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
    assert!(out.duration >= Duration::from_millis(1000), "{:?}", out.duration);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_guests_time_out_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    rt.prepare("sleep-test", &fixture("sleep")).unwrap();
    let started = Instant::now();
    let runs = (0..4).map(|_| {
        let rt = rt.clone();
        tokio::spawn(async move { run(&rt, "sleep", "", 128, 300).await })
    });
    for handle in runs.collect::<Vec<_>>() {
        let out = handle.await.unwrap();
        assert!(matches!(out.status, Status::Failed { kind: ErrorKind::Timeout, .. }), "{:?}", out.status);
    }
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_guest_looping_in_host_calls_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = run(&runtime(dir.path()), "chatty", "", 128, 200).await;
    assert_eq!(
        out.status,
        Status::Failed { kind: ErrorKind::Timeout, message: "the function timed out after 200 ms".into() }
    );
    assert!(out.log.ends_with("chatty\n"), "the log tail survives a timeout");
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
}

/// The attack: a guest leaves data in its memory for whoever gets its pooled slot next. Every
/// guest must start from zeroed memory, whatever the previous one wrote (within the slot's
/// resident bytes, beyond them, in memory it grew), however the pool resets slots.
#[tokio::test]
async fn a_pooled_slot_keeps_nothing_of_its_previous_guest() {
    let dir = tempfile::tempdir().unwrap();
    // One slot, so every run reuses the slot the run before it dirtied.
    let cfg = WasmConfig {
        cache_dir: dir.path().join("modules"),
        max_instances: 1,
        compile_limits: CompileLimits::default(),
        compiler: Compiler::InProcess,
        allow_private_outbound: false,
    };
    let rt = WasmRuntime::new(cfg).unwrap();
    let snoop = rt.prepare("snoop", &fixture("snoop")).unwrap();
    // Another tenant's module in the same slot: the slot's module affinity must not matter.
    let other = rt.prepare("other", &fixture("snoop")).unwrap();
    for (round, prepared) in [&snoop, &snoop, &other, &snoop, &other].into_iter().enumerate() {
        let out = run_prepared(&rt, prepared, "", 64, 5_000).await;
        assert_eq!(out.status, Status::Succeeded, "round {round}: {:?}", out.log);
        assert_eq!(&out.stdout[..], b"clean", "round {round}: the guest found its predecessor's bytes");
    }
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

#[test]
fn oversized_modules_and_functions_are_refused_at_prepare() {
    let dir = tempfile::tempdir().unwrap();
    let big_function = command_with_body(600 * 1024);
    let err = runtime(dir.path()).prepare("big-function", &big_function).map(|_| ()).unwrap_err();
    let PrepareError::TooComplex(message) = &err else { panic!("{err:?}") };
    // The body's size as encoded: the nops, its (empty) locals and its `end`.
    assert_eq!(message, "a function body is 614402 bytes, over the limit of 524288 bytes");

    let limits = CompileLimits { max_function_body_bytes: 1 << 20, ..CompileLimits::default() };
    assert!(
        runtime_with(dir.path(), limits).prepare("big-function", &big_function).is_ok(),
        "within a raised limit"
    );

    let limits = CompileLimits { max_module_bytes: 4096, ..CompileLimits::default() };
    let big_module = command_with_body(8192);
    let err = runtime_with(dir.path(), limits).prepare("big-module", &big_module).map(|_| ()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the module is too large or complex to compile: it is {} bytes, over the limit of 4096 bytes",
            big_module.len()
        )
    );
}

#[test]
fn a_module_that_compiles_too_slowly_is_refused_and_cannot_pile_up() {
    let dir = tempfile::tempdir().unwrap();
    let limits =
        CompileLimits { timeout: Duration::from_millis(100), max_concurrent: 1, ..CompileLimits::default() };
    let rt = runtime_with(dir.path(), limits);
    let started = Instant::now();
    let err = rt.prepare("slow", &gust_testkit::costly_to_compile(1000, 2000)).map(|_| ()).unwrap_err();
    assert_eq!(err, PrepareError::TooComplex("it did not compile within 100ms".into()));
    // Generous: the point is that the caller does not wait for the compiler.
    assert!(started.elapsed() < Duration::from_millis(1000), "{:?}", started.elapsed());
    // The abandoned compilation still holds the only slot: the next one waits, then gives up.
    let err = rt.prepare("echo", &fixture("echo")).map(|_| ()).unwrap_err();
    assert!(matches!(err, PrepareError::Busy(_)), "{err:?}");
    assert!(rt.prepared("slow").is_none(), "an abandoned compilation's result is discarded");
}

/// The wasi:http test component (tests/fixtures/wasi-http), served from a Lambda HTTP event.
#[tokio::test]
async fn a_wasi_http_component_answers_the_request_its_event_stands_for() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let code = std::fs::read(gust_testkit::repo_root().join("tests/fixtures/wasi-http/hello.wasm")).unwrap();
    assert!(gust_runtime::wasm::is_component(&code));
    let prepared = rt.prepare("hello-component", &code).unwrap();
    let call = |payload: &'static str| run_prepared(&rt, &prepared, payload, 128, 3000);
    let event = r#"{"version":"2.0","rawPath":"/hi","rawQueryString":"","headers":{"host":"x.test"},
        "requestContext":{"http":{"method":"GET"}},"isBase64Encoded":false}"#;
    let out = call(event).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.log);
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["statusCode"], 200);
    assert_eq!(answer["multiValueHeaders"]["content-type"], serde_json::json!(["text/plain"]));
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.decode(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, b"hello from a wasi:http component\n");
    let not_an_event = call("{}").await;
    assert!(
        matches!(&not_an_event.status, Status::Failed { kind: ErrorKind::FunctionError, message } if message.contains("function URL")),
        "{:?}",
        not_an_event.status
    );
    // A component that imports what the proxy world does not give (here: none of it, a core
    // module is no component) and a module that is not one are told apart at prepare.
    assert!(rt.prepare("not-a-component", &code[..code.len() / 2]).is_err());
}
