//! Profiling aid: runs one fixture guest in a loop on one task and prints the cost per run.
//! `cargo run --release -p gust-runtime --example run_loop -- noop 100000`

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use gust_runtime::wasm::{CompileLimits, Compiler, WasmConfig, WasmRuntime};
use gust_runtime::RunRequest;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map_or("noop", String::as_str);
    let n: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let path = format!("{}/../../tests/fixtures/{name}.wat", env!("CARGO_MANIFEST_DIR"));
    let code = wat::parse_file(&path).expect("fixture");
    let dir = tempfile::tempdir().expect("temp dir");
    // A fixture of this repository: trusted, compiled in process.
    let rt = WasmRuntime::new(WasmConfig {
        cache_dir: dir.path().to_path_buf(),
        max_instances: 16,
        compile_limits: CompileLimits::default(),
        compiler: Compiler::InProcess,
        allow_private_outbound: false,
    })
    .expect("runtime");
    let prepared = rt.prepare("sha", &code).expect("prepare");
    let env = BTreeMap::new();
    let payload = Bytes::from_static(b"{}");
    let started = Instant::now();
    for _ in 0..n {
        let req = RunRequest {
            function: "f",
            version_label: "1",
            invocation_id: "id",
            payload: payload.clone(),
            env: &env,
            memory_mb: 128,
            timeout_ms: 3000,
            http: None,
            allowed_outbound_hosts: &[],
            stream: None,
            trace_id: None,
        };
        let out = rt.run(&prepared, req).await;
        assert!(out.stdout.len() < 1 << 20);
    }
    let per = started.elapsed() / n;
    println!("{name}: {per:?} per run over {n} runs");
}
