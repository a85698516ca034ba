//! `gust-bench`: measures gust's hot paths against what this machine can do at all, in one run.
//!
//! gust (this binary re-executed as `gust server`, release build) and a bare hyper server run
//! as separate processes on loopback; one load generator drives both. Every figure that can
//! have a baseline is printed beside it, as a ratio: absolute times on shared machines are
//! noise. `--quick` runs every phase for a moment (the test suite's smoke run).
//! The warm sync rows run twice, over plain HTTP and over TLS (a second gust server and a TLS
//! bare baseline, with a certificate made at start).

/// The gust binary's allocator: this binary runs gust's servers (and the bare baseline).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bare;
mod client;
mod loadgen;
mod procs;
mod tls;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use loadgen::{LoadResult, Stop, Target};
use procs::Proc;
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(about = "Benchmarks gust against a bare HTTP server on this machine")]
struct Args {
    /// Seconds per measured load phase.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Async invocations in the end-to-end drain.
    #[arg(long, default_value_t = 100_000)]
    drain: u64,
    /// A smoke run: every phase, briefly.
    #[arg(long)]
    quick: bool,
    /// Print JSON instead of Markdown.
    #[arg(long)]
    json: bool,
    /// A PostgreSQL database for the cluster rows (each run uses fresh schemas in it);
    /// `./scripts/with-postgres` starts a throwaway one and sets GUST_TEST_POSTGRES.
    #[arg(long, env = "GUST_TEST_POSTGRES", hide_env_values = true)]
    postgres: Option<String>,
}

/// A `provided` package whose bootstrap speaks the Lambda Runtime API (the test fixture, Python,
/// standard library only).
fn provided_package() -> Vec<u8> {
    gust_testkit::zip(&[("bootstrap", &gust_testkit::fixture_file("bootstrap.py"), 0o755)])
}

fn main() -> std::process::ExitCode {
    // gust's servers run as this binary: its process environments start through the same
    // init, and its wasm modules compile in the same compiler child.
    if let Some(code) = gust::internal_command_if_requested() {
        return code;
    }
    match bench_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn bench_main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    match argv.get(1).map(String::as_str) {
        Some("__serve") => {
            let cli = gust::cli::Cli::parse_from(argv.iter().skip(1)).map_err(|e| anyhow::anyhow!("{e}"))?;
            return match cli.command {
                gust::cli::Command::Server(opts) => gust::server::run(opts),
                gust::cli::Command::Worker(opts) => gust::worker::run(opts),
                _ => anyhow::bail!("__serve runs `server` or `worker`"),
            };
        }
        Some("__bare") if argv.len() == 4 => {
            return bare::serve(Some((std::path::Path::new(&argv[2]), std::path::Path::new(&argv[3]))))
        }
        Some("__bare") => return bare::serve(None),
        // For profiling: `gust-bench __load ADDR FUNCTION CONNECTIONS SECONDS` loads a running server.
        Some("__load") if argv.len() == 6 => {
            let addr: SocketAddr = argv[2].parse()?;
            let (conns, secs): (usize, f64) = (argv[4].parse()?, argv[5].parse()?);
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let mut target = invoke_target(addr, &argv[3], "sync");
            if argv[3].starts_with('/') {
                target.path = argv[3].clone();
            }
            let r = rt.block_on(loadgen::run(&target, conns, Stop::After(Duration::from_secs_f64(secs))))?;
            println!(
                "{:.0} req/s, p50 {} µs, p99 {} µs, {} errors",
                r.rps(),
                r.percentile_us(0.5),
                r.percentile_us(0.99),
                r.errors
            );
            return Ok(());
        }
        // For iterating on the cluster shape: `gust-bench __cluster POSTGRES_URL [SECONDS]`
        // prints the latency and 64-connection rows of the cluster shape alone, as JSON.
        Some("__cluster") if (3..=4).contains(&argv.len()) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let seconds = argv.get(3).map_or("5", String::as_str);
            let args = Args::parse_from(["gust-bench", "--duration", seconds]);
            let rows = rt.block_on(async {
                let schema = remote_schema();
                let (ds, dw) = (tempfile::tempdir()?, tempfile::tempdir()?);
                let server = Proc::gust_with(
                    ds.path(),
                    &[
                        "--store",
                        &argv[2],
                        "--store-schema",
                        &schema,
                        "--no-local-worker",
                        "--worker-token",
                        "bench-token",
                    ],
                )?;
                let _worker = Proc::worker(server.addr, dw.path(), "bench-token")?;
                client::deploy(server.addr, "noop", "{}", gust_testkit::fixture("noop")).await?;
                until_ready(server.addr).await?;
                latency_rows(&argv[2], &args, &server).await
            })?;
            println!("{}", serde_json::to_string_pretty(&rows)?);
            return Ok(());
        }
        _ => {}
    }
    let mut args = Args::parse();
    if args.quick {
        args.duration = 0.3;
        args.drain = 2_000;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = rt.block_on(bench(&args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", markdown(&report));
    }
    Ok(())
}

/// A module as unique bytes: the no-op plus a custom section, so it has its own sha256.
fn unique_module(base: &[u8], tag: &str) -> Vec<u8> {
    gust_testkit::with_custom_section(base, "gust-bench", tag.as_bytes())
}

fn invoke_target(addr: SocketAddr, function: &str, mode: &str) -> Target {
    Target {
        addr,
        path: format!("/v1/functions/{function}/invoke"),
        headers: vec![("invocation-type", mode.to_string())],
        body: Bytes::from_static(b"{}"),
        expect_status: if mode == "async" { 202 } else { 200 },
        tls: None,
    }
}

fn load_json(r: &LoadResult) -> Value {
    json!({
        "requests": r.requests,
        "errors": r.errors,
        "rps": r.rps(),
        "p50_us": r.percentile_us(0.50),
        "p99_us": r.percentile_us(0.99),
    })
}

async fn bench(args: &Args) -> anyhow::Result<Value> {
    let phase = Duration::from_secs_f64(args.duration);
    let warmup = Duration::from_secs_f64((args.duration / 5.0).min(1.0));
    let data = tempfile::tempdir()?;
    let bare = Proc::bare()?;
    let mut gust = Proc::gust(data.path())?;
    let noop = gust_testkit::fixture("noop");
    client::deploy(gust.addr, "noop", "{}", noop.clone()).await?;
    client::ok(gust.addr, "POST", "/v1/functions/noop/invoke", &[], "{}").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = gust.rss_bytes();

    // 1. Warm sync invoke against the bare server, same generator, interleaved.
    let (warm, loaded_rss) = warm_rows(&gust, &bare, None, phase, warmup).await?;
    let mut loaded_rss = loaded_rss.max(idle_rss);

    // 1c. Function URLs: the same kind of load on a WASI p1 echo, through its URL (the event
    //     built, the answer mapped) and through the invoke API, beside the bare server.
    let urls = url_rows(&gust, &bare, phase, warmup).await?;

    // 1b. The same over TLS: a second gust server and the bare baseline serving a certificate
    //     made now; each connection's handshake is done before its requests are timed.
    let tls_dir = tempfile::tempdir()?;
    let bench_tls = tls::BenchTls::generate(tls_dir.path())?;
    let warm_tls = {
        let bare_tls = Proc::bare_tls(&bench_tls)?;
        let gust_tls = Proc::gust_tls(tls_dir.path(), &bench_tls)?;
        client::deploy_with(gust_tls.addr, Some(&bench_tls), "noop", "{}", noop.clone()).await?;
        client::ok_with(gust_tls.addr, Some(&bench_tls), "POST", "/v1/functions/noop/invoke", &[], "{}")
            .await?;
        let (mut rows, _) = warm_rows(&gust_tls, &bare_tls, Some(&bench_tls), phase, warmup).await?;
        for (row, plain) in rows.iter_mut().zip(&warm) {
            row["tls_over_plain_gust_throughput"] = json!(
                row["gust"]["rps"].as_f64().unwrap_or(0.0) / plain["gust"]["rps"].as_f64().unwrap_or(1.0)
            );
        }
        rows
    };

    // 2. Cold start: versions whose modules are compiled and cached on disk, first invocation
    //    after a restart (nothing in memory: module loaded from the disk cache, linked,
    //    instantiated; control-plane cache empty).
    let cold_n = if args.quick { 3 } else { 30 };
    for i in 0..cold_n {
        let name = format!("cold{i}");
        client::deploy(gust.addr, &name, "{}", unique_module(&noop, &name)).await?;
        client::ok(gust.addr, "POST", &format!("/v1/functions/{name}/versions"), &[], Bytes::new()).await?;
    }
    drop(gust);
    gust = Proc::gust(data.path())?;
    let mut first = Vec::new();
    let mut second = Vec::new();
    for i in 0..cold_n {
        let path = format!("/v1/functions/cold{i}/invoke?qualifier=1");
        let t = Instant::now();
        client::ok(gust.addr, "POST", &path, &[], "{}").await?;
        first.push(t.elapsed().as_micros() as f64);
        let t = Instant::now();
        client::ok(gust.addr, "POST", &path, &[], "{}").await?;
        second.push(t.elapsed().as_micros() as f64);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (cold_p50, warm_p50) = (median(&mut first), median(&mut second));

    // The first-ever compile of a ~1 MB module (upload = validate + compile + cache + store).
    let big = gust_testkit::large_module();
    client::ok(gust.addr, "PUT", "/v1/functions/big", &[("content-type", "application/json")], "{}").await?;
    let t = Instant::now();
    client::ok(
        gust.addr,
        "PUT",
        "/v1/functions/big/code",
        &[("content-type", "application/wasm")],
        big.clone(),
    )
    .await?;
    let compile_ms = t.elapsed().as_secs_f64() * 1000.0;

    // 4b. Memory per warm environment: K distinct modules, each invoked once.
    let env_n = if args.quick { 5 } else { 50 };
    for i in 0..env_n {
        client::deploy(gust.addr, &format!("env{i}"), "{}", unique_module(&noop, &format!("env{i}"))).await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before_envs = gust.rss_bytes();
    for i in 0..env_n {
        client::ok(gust.addr, "POST", &format!("/v1/functions/env{i}/invoke"), &[], "{}").await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let per_env = gust.rss_bytes().saturating_sub(before_envs) as f64 / env_n as f64;

    // 3. Async: durable ingest at 64 connections, then the end-to-end drain of N invocations.
    let a_target = invoke_target(gust.addr, "noop", "async");
    let done0 = client::metric(gust.addr, "gust_attempts_succeeded_total").await?;
    let started = Instant::now();
    let ingest = loadgen::run(&a_target, 64, Stop::Count(args.drain)).await?;
    anyhow::ensure!(ingest.errors == 0, "errors during async ingest");
    loaded_rss = loaded_rss.max(gust.rss_bytes());
    let drain_deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = client::metric(gust.addr, "gust_attempts_succeeded_total").await? - done0;
        if done >= args.drain {
            break;
        }
        anyhow::ensure!(Instant::now() < drain_deadline, "drain stalled at {done}/{}", args.drain);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_secs = started.elapsed().as_secs_f64();

    // 5. The process runtime: warm sync invokes of a `provided` function beside the bare
    //    server, and cold starts (a new process per version) beside the interpreter's own start.
    let process = process_rows(&gust, &bare, args).await?;
    let queues = queue_rows(&gust, args).await?;

    let cluster = match &args.postgres {
        Some(url) => Some(cluster_rows(url, args, &bare).await?),
        None => None,
    };

    let warm64 = &warm[2];
    let warm1 = &warm[0];
    let mut targets = vec![
        target(
            "warm sync throughput at 64 connections, gust/bare",
            ">= 0.5",
            warm64["throughput_ratio"].as_f64(),
            |v| v >= 0.5,
        ),
        target(
            "p50 overhead over bare at 1 connection (µs)",
            "<= 50",
            warm1["p50_overhead_us"].as_f64(),
            |v| v <= 50.0,
        ),
        target("wasm cold start, cached compiled module, p50 (µs)", "<= 1000", Some(cold_p50), |v| {
            v <= 1000.0
        }),
        target("durable async ingest (202/s)", ">= 20000", Some(ingest.rps()), |v| v >= 20_000.0),
        target("async drain (completed/s)", ">= 10000", Some(args.drain as f64 / drain_secs), |v| {
            v >= 10_000.0
        }),
        target("idle server RSS (MB)", "<= 30", Some(idle_rss as f64 / 1048576.0), |v| v <= 30.0),
    ];
    if let Some(pg) = &cluster {
        let best = |key: &str| {
            ["servers_1", "servers_2"]
                .iter()
                .filter_map(|s| pg[*s].pointer(key).and_then(Value::as_f64))
                .fold(0.0, f64::max)
        };
        targets.push(target(
            "PostgreSQL durable async ingest (202/s)",
            ">= 10000",
            Some(best("/ingest/rps")),
            |v| v >= 10_000.0,
        ));
        targets.push(target(
            "PostgreSQL drain (completed/s)",
            ">= 5000",
            Some(best("/drain_per_second")),
            |v| v >= 5_000.0,
        ));
    }
    Ok(json!({
        "warm_sync": warm,
        "warm_sync_tls": warm_tls,
        "function_urls": urls,
        "queues": queues,
        "cold_start": {
            "versions": cold_n,
            "first_invocation_p50_us": cold_p50,
            "second_invocation_p50_us": warm_p50,
            "cold_overhead_us": cold_p50 - warm_p50,
        },
        "compile_1mb": { "module_bytes": big.len(), "upload_ms": compile_ms },
        "async": {
            "ingest": load_json(&ingest),
            "drain_invocations": args.drain,
            "drain_seconds": drain_secs,
            "drain_per_second": args.drain as f64 / drain_secs,
        },
        "memory": {
            "idle_rss_mb": idle_rss as f64 / 1048576.0,
            "loaded_rss_mb": loaded_rss as f64 / 1048576.0,
            "per_warm_environment_kb": per_env / 1024.0,
            "environments": env_n,
        },
        "targets": targets,
        "postgres": cluster,
        "process": process,
        "quick": args.quick,
        "phase_seconds": args.duration,
    }))
}

/// Warm sync invokes of `noop` at 1, 16 and 64 connections, gust beside the bare server, over
/// TLS when `tls` is given; returns the rows and the largest gust RSS sampled.
async fn warm_rows(
    gust: &Proc, bare: &Proc, tls: Option<&tls::BenchTls>, phase: Duration, warmup: Duration,
) -> anyhow::Result<(Vec<Value>, u64)> {
    let mut warm = Vec::new();
    let mut loaded_rss = 0;
    for conns in [1usize, 16, 64] {
        let mut g_target = invoke_target(gust.addr, "noop", "sync");
        let mut b_target = invoke_target(bare.addr, "noop", "sync");
        g_target.tls = tls.cloned();
        b_target.tls = tls.cloned();
        loadgen::run(&g_target, conns, Stop::After(warmup)).await?;
        loadgen::run(&b_target, conns, Stop::After(warmup)).await?;
        let b = loadgen::run(&b_target, conns, Stop::After(phase)).await?;
        let g = loadgen::run(&g_target, conns, Stop::After(phase)).await?;
        loaded_rss = loaded_rss.max(gust.rss_bytes());
        anyhow::ensure!(g.errors == 0 && b.errors == 0, "errors during warm sync load");
        warm.push(json!({
            "connections": conns,
            "gust": load_json(&g),
            "bare": load_json(&b),
            "throughput_ratio": g.rps() / b.rps(),
            "p50_overhead_us": g.percentile_us(0.5) - b.percentile_us(0.5),
        }));
    }
    Ok((warm, loaded_rss))
}

/// A WASI p1 echo at 1 and 64 connections: through its function URL, through the invoke API,
/// and the bare server; the URL's cost over a direct invoke of the same function.
async fn url_rows(gust: &Proc, bare: &Proc, phase: Duration, warmup: Duration) -> anyhow::Result<Value> {
    client::deploy(gust.addr, "echo", "{}", gust_testkit::fixture("echo")).await?;
    let json_type = [("content-type", "application/json")];
    let created =
        client::ok(gust.addr, "POST", "/v1/functions/echo/url", &json_type, r#"{"auth_type":"NONE"}"#)
            .await?;
    let created: Value = serde_json::from_slice(&created)?;
    let id = created["url_id"].as_str().ok_or_else(|| anyhow::anyhow!("no url_id in {created}"))?;
    // The wasi:http hello component, served at its own URL.
    let component = std::fs::read(gust_testkit::repo_root().join("tests/fixtures/wasi-http/hello.wasm"))?;
    client::deploy(gust.addr, "hello", "{}", component).await?;
    let created =
        client::ok(gust.addr, "POST", "/v1/functions/hello/url", &json_type, r#"{"auth_type":"NONE"}"#)
            .await?;
    let created: Value = serde_json::from_slice(&created)?;
    let hello_id =
        created["url_id"].as_str().ok_or_else(|| anyhow::anyhow!("no url_id in {created}"))?.to_string();
    // The peer: the same component under `wasmtime serve` (same wasmtime version), if there
    // is one to run (GUST_BENCH_WASMTIME, or `wasmtime` on PATH).
    let peer =
        procs::WasmtimeServe::start(&gust_testkit::repo_root().join("tests/fixtures/wasi-http/hello.wasm"));
    let mut rows = Vec::new();
    for conns in [1usize, 64] {
        let invoke = invoke_target(gust.addr, "echo", "sync");
        let url = Target { path: format!("/url/{id}/items?x=1"), headers: vec![], ..invoke.clone() };
        let b_target = invoke_target(bare.addr, "noop", "sync");
        for t in [&invoke, &url, &b_target] {
            loadgen::run(t, conns, Stop::After(warmup)).await?;
        }
        let hello = Target { path: format!("/url/{hello_id}/"), headers: vec![], ..invoke.clone() };
        loadgen::run(&hello, conns, Stop::After(warmup)).await?;
        let b = loadgen::run(&b_target, conns, Stop::After(phase)).await?;
        let i = loadgen::run(&invoke, conns, Stop::After(phase)).await?;
        let u = loadgen::run(&url, conns, Stop::After(phase)).await?;
        let h = loadgen::run(&hello, conns, Stop::After(phase)).await?;
        anyhow::ensure!(
            b.errors + i.errors + u.errors + h.errors == 0,
            "errors during the function URL load"
        );
        let peer_load = match &peer {
            Some(p) => {
                let t = Target { addr: p.addr, path: "/".into(), headers: vec![], ..invoke.clone() };
                loadgen::run(&t, conns, Stop::After(warmup)).await?;
                let r = loadgen::run(&t, conns, Stop::After(phase)).await?;
                anyhow::ensure!(r.errors == 0, "errors during the wasmtime serve load");
                Some(r)
            }
            None => None,
        };
        rows.push(json!({
            "connections": conns,
            "url": load_json(&u),
            "invoke": load_json(&i),
            "bare": load_json(&b),
            "url_over_bare": u.rps() / b.rps(),
            "url_over_invoke": u.rps() / i.rps(),
            "url_p50_overhead_over_invoke_us": u.percentile_us(0.5) - i.percentile_us(0.5),
            "wasi_http": load_json(&h),
            "wasi_http_over_bare": h.rps() / b.rps(),
            "wasmtime_serve": peer_load.as_ref().map(load_json),
            "wasi_http_over_wasmtime_serve": peer_load.as_ref().map(|p| h.rps() / p.rps()),
        }));
    }
    Ok(json!(rows))
}

/// Queues: durable sends at 64 connections (SendMessage, beside the async ingest row), then
/// a queue drained through an event source mapping into a no-op wasm function in batches of
/// 10 (messages per second end to end; goal ≥ 10,000).
async fn queue_rows(gust: &Proc, args: &Args) -> anyhow::Result<Value> {
    let sqs = |op: &'static str| {
        vec![
            ("x-amz-target", format!("AmazonSQS.{op}")),
            ("content-type", "application/x-amz-json-1.0".to_string()),
        ]
    };
    let call = |op: &'static str, body: Value| {
        let headers = sqs(op);
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            client::ok(gust.addr, "POST", "/", &h, body.to_string()).await
        }
    };
    let created: Value =
        serde_json::from_slice(&call("CreateQueue", json!({ "QueueName": "bench" })).await?)?;
    let url = created["QueueUrl"].as_str().unwrap_or_default().to_string();
    let n = if args.quick { 2_000 } else { args.drain.min(50_000) };
    let send = Target {
        addr: gust.addr,
        path: "/".into(),
        headers: sqs("SendMessage"),
        body: Bytes::from(json!({ "QueueUrl": url, "MessageBody": "{\"order\":42}" }).to_string()),
        expect_status: 200,
        tls: None,
    };
    let sent = loadgen::run(&send, 64, Stop::Count(n)).await?;
    anyhow::ensure!(sent.errors == 0, "errors during queue sends");
    let received_per_second = receive_delete(gust.addr, &url, n as usize).await?;
    // Filled again, then drained through a mapping into the no-op function.
    let refill = loadgen::run(&send, 64, Stop::Count(n)).await?;
    anyhow::ensure!(refill.errors == 0, "errors during queue sends");
    let done0 = client::metric(gust.addr, "gust_attempts_succeeded_total").await?;
    let mapping = json!({
        "EventSourceArn": "arn:aws:sqs:us-east-1:000000000000:bench",
        "FunctionName": "noop",
        "BatchSize": 10,
        "ScalingConfig": { "MaximumConcurrency": 8 },
    });
    let started = Instant::now();
    client::ok(
        gust.addr,
        "POST",
        "/2015-03-31/event-source-mappings/",
        &[("content-type", "application/json")],
        mapping.to_string(),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let got: Value = serde_json::from_slice(
            &call("GetQueueAttributes", json!({ "QueueUrl": url, "AttributeNames": ["All"] })).await?,
        )?;
        let left = |k: &str| got["Attributes"][k].as_str().and_then(|v| v.parse::<u64>().ok()).unwrap_or(1);
        if left("ApproximateNumberOfMessages") + left("ApproximateNumberOfMessagesNotVisible") == 0 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the mapping never drained the queue");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let batches = client::metric(gust.addr, "gust_attempts_succeeded_total").await? - done0;
    Ok(json!({
        "messages": n,
        "send": load_json(&sent),
        "receive_delete_messages_per_second": received_per_second,
        "mapping_messages_per_second": n as f64 / secs,
        "mapping_batches": batches,
    }))
}

/// Receives and deletes `n` messages of `url` with 16 consumers, each receiving batches of 10
/// and deleting each batch in one call (as a worker does); messages per second.
async fn receive_delete(addr: std::net::SocketAddr, url: &str, n: usize) -> anyhow::Result<f64> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let done = std::sync::Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let consumers: Vec<_> = (0..16)
        .map(|_| {
            let (done, url) = (done.clone(), url.to_string());
            tokio::spawn(async move {
                let headers = |op: &str| {
                    [
                        ("x-amz-target", format!("AmazonSQS.{op}")),
                        ("content-type", "application/x-amz-json-1.0".into()),
                    ]
                };
                while done.load(Ordering::Relaxed) < n {
                    let h = headers("ReceiveMessage");
                    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    let body = json!({ "QueueUrl": url, "MaxNumberOfMessages": 10 }).to_string();
                    let got: Value = serde_json::from_slice(&client::ok(addr, "POST", "/", &h, body).await?)?;
                    let messages = got["Messages"].as_array().cloned().unwrap_or_default();
                    if messages.is_empty() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    let entries: Vec<Value> = messages
                        .iter()
                        .enumerate()
                        .map(|(i, m)| json!({ "Id": i.to_string(), "ReceiptHandle": m["ReceiptHandle"] }))
                        .collect();
                    let h = headers("DeleteMessageBatch");
                    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    let body = json!({ "QueueUrl": url, "Entries": entries }).to_string();
                    client::ok(addr, "POST", "/", &h, body).await?;
                    done.fetch_add(messages.len(), Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for c in consumers {
        c.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

fn target(name: &str, goal: &str, measured: Option<f64>, ok: impl Fn(f64) -> bool) -> Value {
    json!({ "target": name, "goal": goal, "measured": measured, "met": measured.map(ok) })
}

fn markdown(r: &Value) -> String {
    let f = |v: &Value| {
        v.as_f64()
            .map_or("-".into(), |x| if x.abs() >= 100.0 { format!("{x:.0}") } else { format!("{x:.2}") })
    };
    let mut out = String::new();
    // The warm rows, over plain HTTP and then over TLS: the same columns but the last.
    let warm_table = |out: &mut String, rows: &Value, last: (&str, &str)| {
        out.push_str(&format!(
            "| connections | gust req/s | bare req/s | gust/bare | gust p50 µs | bare p50 µs | p50 overhead µs | gust p99 µs | {} |\n",
            last.0
        ));
        out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for w in rows.as_array().into_iter().flatten() {
            let cells = [
                f(&w["gust"]["rps"]),
                f(&w["bare"]["rps"]),
                f(&w["throughput_ratio"]),
                f(&w["gust"]["p50_us"]),
                f(&w["bare"]["p50_us"]),
                f(&w["p50_overhead_us"]),
                f(&w["gust"]["p99_us"]),
                f(w.pointer(last.1).unwrap_or(&Value::Null)),
            ];
            out.push_str(&format!("| {} | {} |\n", w["connections"], cells.join(" | ")));
        }
    };
    out.push_str("### Warm sync invoke of a no-op wasm function (HTTP keep-alive)\n\n");
    warm_table(&mut out, &r["warm_sync"], ("bare p99 µs", "/bare/p99_us"));
    out.push_str("\n### The same over TLS (HTTPS keep-alive, TLS 1.3; handshakes before timing)\n\n");
    warm_table(&mut out, &r["warm_sync_tls"], ("gust TLS/plain req/s", "/tls_over_plain_gust_throughput"));
    out.push_str("\n### Function URLs: a WASI p1 echo through its URL and through the invoke API, a wasi:http component at its URL, and bare\n\n");
    out.push_str("| connections | URL req/s | invoke req/s | bare req/s | URL/bare | URL/invoke | URL p50 µs | invoke p50 µs | URL p50 over invoke µs | wasi:http hello at its URL, req/s (p50 µs) | wasi:http/bare (goal ≥ 0.5 at 64) | `wasmtime serve` of it, req/s (p50 µs) | gust/`wasmtime serve` |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for w in r["function_urls"].as_array().into_iter().flatten() {
        let cells = [
            f(&w["url"]["rps"]),
            f(&w["invoke"]["rps"]),
            f(&w["bare"]["rps"]),
            f(&w["url_over_bare"]),
            f(&w["url_over_invoke"]),
            f(&w["url"]["p50_us"]),
            f(&w["invoke"]["p50_us"]),
            f(&w["url_p50_overhead_over_invoke_us"]),
            format!("{} ({})", f(&w["wasi_http"]["rps"]), f(&w["wasi_http"]["p50_us"])),
            f(&w["wasi_http_over_bare"]),
            match &w["wasmtime_serve"] {
                Value::Null => "not installed".to_string(),
                p => format!("{} ({})", f(&p["rps"]), f(&p["p50_us"])),
            },
            f(&w["wasi_http_over_wasmtime_serve"]),
        ];
        out.push_str(&format!("| {} | {} |\n", w["connections"], cells.join(" | ")));
    }
    let q = &r["queues"];
    out.push_str("\n### Queues (SQS API, SQLite, durable)\n\n| measure | value |\n|---|---:|\n");
    out.push_str(&format!(
        "| SendMessage at 64 connections, messages/s (p50 µs) | {} ({}) |\n",
        f(&q["send"]["rps"]),
        f(&q["send"]["p50_us"])
    ));
    out.push_str(&format!(
        "| ReceiveMessage (10) + DeleteMessageBatch by 16 consumers, messages/s | {} |\n",
        f(&q["receive_delete_messages_per_second"])
    ));
    out.push_str(&format!(
        "| {} messages drained through an event source mapping (batches of 10) into a no-op wasm function, messages/s (goal ≥ 10,000) | {} ({} invocations) |\n",
        q["messages"], f(&q["mapping_messages_per_second"]), q["mapping_batches"]
    ));
    let c = &r["cold_start"];
    let a = &r["async"];
    let m = &r["memory"];
    out.push_str("\n### Cold start, async, memory\n\n| measure | value |\n|---|---:|\n");
    let rows = [
        (
            "first invocation of a version after restart (module on disk), p50 µs",
            f(&c["first_invocation_p50_us"]),
        ),
        ("second invocation of the same version, p50 µs", f(&c["second_invocation_p50_us"])),
        ("cold overhead (first - second), µs", f(&c["cold_overhead_us"])),
        ("first-ever compile of a ~1 MB module (upload), ms", f(&r["compile_1mb"]["upload_ms"])),
        ("durable async ingest at 64 connections, 202/s", f(&a["ingest"]["rps"])),
        (
            "async ingest p50 / p99 µs",
            format!("{} / {}", f(&a["ingest"]["p50_us"]), f(&a["ingest"]["p99_us"])),
        ),
        ("end-to-end drain of async no-ops, completed/s", f(&a["drain_per_second"])),
        ("server RSS idle, MB", f(&m["idle_rss_mb"])),
        ("server RSS under load (max sampled), MB", f(&m["loaded_rss_mb"])),
        ("memory per warm environment, KB", f(&m["per_warm_environment_kb"])),
    ];
    for (k, v) in rows {
        out.push_str(&format!("| {k} | {v} |\n"));
    }
    let p = &r["process"];
    out.push_str("\n### Process runtime (`provided` bootstrap in Python, Lambda Runtime API)\n\n");
    out.push_str("| connections | gust req/s | bare req/s | gust p50 µs | bare p50 µs | p50 overhead µs |\n|---:|---:|---:|---:|---:|---:|\n");
    for w in p["warm"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            w["connections"],
            f(&w["gust"]["rps"]),
            f(&w["bare"]["rps"]),
            f(&w["gust"]["p50_us"]),
            f(&w["bare"]["p50_us"]),
            f(&w["p50_overhead_us"])
        ));
    }
    out.push_str(&format!(
        "\n| measure | value |\n|---|---:|\n| cold start (first invocation of a version), full sandbox, p50 µs | {} |\n| cold start without the sandbox (`--isolation none`), p50 µs | {} |\n| the sandbox's share of a cold start, µs (target ≤ 5,000) | {} |\n| warm p50 at 1 connection without the sandbox, µs | {} |\n| the sandbox's share of a warm invocation, µs | {} |\n| the interpreter's own start (`python3 -c import …`), p50 µs | {} |\n| cold start over the runtime's own init, µs | {} |\n",
        f(&p["cold_start_p50_us"]),
        f(&p["cold_start_unsandboxed_p50_us"]),
        f(&p["sandbox_cold_overhead_us"]),
        f(&p["warm_unsandboxed_p50_us"]),
        f(&p["sandbox_warm_overhead_us"]),
        f(&p["interpreter_start_p50_us"]),
        f(&p["cold_overhead_us"])
    ));
    if let Some(pg) = r["postgres"].as_object() {
        out.push_str("\n### Cluster shape on PostgreSQL\n\n| measure | value |\n|---|---:|\n");
        for servers in [1, 2] {
            let row = &pg[&format!("servers_{servers}")];
            out.push_str(&format!(
                "| durable async ingest, {servers} server(s), 64 connections (nothing draining), 202/s | {} |\n",
                f(&row["ingest"]["rps"])
            ));
            out.push_str(&format!(
                "| drain of that backlog, {servers} server(s), completed/s | {} |\n",
                f(&row["drain_per_second"])
            ));
        }
        let rw = &pg["remote_worker_sync_16"];
        out.push_str(&format!(
            "| warm sync via a remote worker, 16 connections: gust / bare req/s (ratio) | {} / {} ({}) |\n",
            f(&rw["gust"]["rps"]),
            f(&rw["bare"]["rps"]),
            f(&rw["throughput_ratio"])
        ));
        out.push_str(&format!(
            "| warm sync via a remote worker, p50 / p99 µs | {} / {} |\n",
            f(&rw["gust"]["p50_us"]),
            f(&rw["gust"]["p99_us"])
        ));
        let lat = &pg["latency"];
        let t = &lat["sync_64"];
        out.push_str(&format!(
            "| warm sync at 64 connections: 2 servers with a remote worker each / embedded, req/s (ratio, goal ≥ 0.5) | {} / {} ({}) |\n",
            f(&t["two_servers_two_workers"]["rps"]),
            f(&t["embedded"]["rps"]),
            f(&t["ratio"])
        ));
        let e = &lat["embedded"];
        let shapes = [
            ("one server, its own worker", "embedded"),
            ("a remote worker, request at its server", "remote_own_server"),
            ("a remote worker, request at another server", "remote_other_server"),
        ];
        out.push_str("\n| one call at a time, new connection each | sync p50 / p90 µs | over embedded p50 µs (goal) | async ingest-to-start p50 / p90 µs (goal p50 ≤ 2,000) |\n|---|---:|---:|---:|\n");
        for (label, key) in shapes {
            let row = &lat[key];
            let over =
                row["sync"]["p50_us"].as_f64().unwrap_or(0.0) - e["sync"]["p50_us"].as_f64().unwrap_or(0.0);
            let goal = match key {
                "embedded" => "",
                "remote_own_server" => " (≤ 1,000)",
                _ => " (≤ 2,000)",
            };
            out.push_str(&format!(
                "| {label} | {} / {} | {}{goal} | {} / {} |\n",
                f(&row["sync"]["p50_us"]),
                f(&row["sync"]["p90_us"]),
                if key == "embedded" { "-".to_string() } else { format!("{over:.0}") },
                f(&row["async_ingest_to_start"]["p50_us"]),
                f(&row["async_ingest_to_start"]["p90_us"]),
            ));
        }
    }
    if let Some(fleet) = r["postgres"]["fleet"].as_object() {
        out.push_str(&format!(
            "\n### A simulated fleet: {FLEET_SERVERS} servers on one PostgreSQL, remote workers of capacity 4\n\n| workers | sync p50 / p90, one call at a time, at each server in turn, µs | sync at 64 connections over the servers, req/s (p99 µs) | store transactions/s while idle |\n|---:|---:|---:|---:|\n"
        ));
        for row in fleet.values() {
            out.push_str(&format!(
                "| {} | {} / {} | {} ({}) | {} |\n",
                f(&row["workers"]),
                f(&row["sync_one_at_a_time"]["p50_us"]),
                f(&row["sync_one_at_a_time"]["p90_us"]),
                f(&row["sync_64"]["rps"]),
                f(&row["sync_64"]["p99_us"]),
                f(&row["idle_store_transactions_per_second"]),
            ));
        }
    }
    out.push_str("\n### Targets\n\n| target | goal | measured | met |\n|---|---|---:|---|\n");
    for t in r["targets"].as_array().into_iter().flatten() {
        let met = match t["met"].as_bool() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            t["target"].as_str().unwrap_or(""),
            t["goal"].as_str().unwrap_or(""),
            f(&t["measured"]),
            met
        ));
    }
    out
}

/// Ingests `n` async no-ops at 64 connections spread over `servers`.
async fn ingest_only_run(servers: &[&Proc], n: u64) -> anyhow::Result<LoadResult> {
    let started = Instant::now();
    let share = n / servers.len() as u64;
    let runs: Vec<_> = servers
        .iter()
        .map(|s| {
            let target = invoke_target(s.addr, "noop", "async");
            let conns = 64 / servers.len();
            tokio::spawn(async move { loadgen::run(&target, conns, Stop::Count(share)).await })
        })
        .collect();
    let mut ingest = LoadResult::default();
    for r in runs {
        let r = r.await??;
        anyhow::ensure!(r.errors == 0, "errors during async ingest");
        ingest.requests += r.requests;
        ingest.latencies_us.extend(r.latencies_us);
    }
    ingest.elapsed = started.elapsed();
    ingest.latencies_us.sort_unstable();
    Ok(ingest)
}

/// The cluster shape on PostgreSQL: ingest (nothing draining) and then the drain of that
/// backlog, with one and two servers; and warm sync invokes through a server whose only worker
/// is a separate process.
async fn cluster_rows(url: &str, args: &Args, bare: &Proc) -> anyhow::Result<Value> {
    let n = if args.quick { 1_000 } else { args.drain.min(50_000) };
    let phase = Duration::from_secs_f64(args.duration);
    let mut rows = serde_json::Map::new();
    let noop = gust_testkit::fixture("noop");
    for servers in [1usize, 2] {
        // Ingest with nothing draining (servers without a local worker), then drain the
        // backlog with fresh servers that have one: two clean rates.
        let schema = format!("bench_{}_{servers}", std::process::id());
        let dirs: Vec<_> = (0..servers).map(|_| tempfile::tempdir()).collect::<Result<_, _>>()?;
        let ingest_only =
            ["--store", url, "--store-schema", &schema, "--no-local-worker", "--worker-token", "x"];
        let procs: Vec<Proc> =
            dirs.iter().map(|d| Proc::gust_with(d.path(), &ingest_only)).collect::<Result<_, _>>()?;
        client::deploy(procs[0].addr, "noop", "{}", noop.clone()).await?;
        tokio::time::sleep(Duration::from_millis(700)).await; // every server sees the deploy
        let refs: Vec<&Proc> = procs.iter().collect();
        let ingest = ingest_only_run(&refs, n).await?;
        drop(procs);
        let draining = ["--store", url, "--store-schema", &schema];
        let procs: Vec<Proc> =
            dirs.iter().map(|d| Proc::gust_with(d.path(), &draining)).collect::<Result<_, _>>()?;
        let started = Instant::now();
        let deadline = started + Duration::from_secs(600);
        loop {
            let mut done = 0;
            for p in &procs {
                done += client::metric(p.addr, "gust_attempts_succeeded_total").await?;
            }
            if done >= n {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "drain stalled at {done}/{n}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let drain = n as f64 / started.elapsed().as_secs_f64();
        rows.insert(
            format!("servers_{servers}"),
            json!({ "ingest": load_json(&ingest), "drain_per_second": drain, "invocations": n }),
        );
    }
    // Warm sync invoke through a server whose worker is remote, beside the bare server.
    let schema = remote_schema();
    let (ds, dw) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let server = Proc::gust_with(
        ds.path(),
        &["--store", url, "--store-schema", &schema, "--no-local-worker", "--worker-token", "bench-token"],
    )?;
    let _worker = Proc::worker(server.addr, dw.path(), "bench-token")?;
    client::deploy(server.addr, "noop", "{}", noop).await?;
    until_ready(server.addr).await?;
    let g_target = invoke_target(server.addr, "noop", "sync");
    let b_target = invoke_target(bare.addr, "noop", "sync");
    loadgen::run(&g_target, 16, Stop::After(phase / 5)).await?;
    let g = loadgen::run(&g_target, 16, Stop::After(phase)).await?;
    let b = loadgen::run(&b_target, 16, Stop::After(phase)).await?;
    rows.insert(
        "remote_worker_sync_16".into(),
        json!({ "gust": load_json(&g), "bare": load_json(&b), "throughput_ratio": g.rps() / b.rps() }),
    );
    rows.insert("latency".into(), latency_rows(url, args, &server).await?);
    drop((server, _worker));
    rows.insert("fleet".into(), fleet_rows(url, args).await?);
    Ok(Value::Object(rows))
}

/// Servers of the simulated fleet.
const FLEET_SERVERS: usize = 4;

/// A simulated fleet on this machine: [`FLEET_SERVERS`] servers sharing one PostgreSQL schema,
/// with 4, 16 and 64 remote worker processes (capacity 4 each) spread evenly over them. Per
/// size: the sync p50 of one call at a time at each server in turn (most calls arrive at a
/// server other than their worker's), sync throughput at 64 connections split over the
/// servers, and what the idle fleet costs the store (PostgreSQL transactions a second:
/// heartbeats, the polls' safety-net checks, snapshots).
async fn fleet_rows(url: &str, args: &Args) -> anyhow::Result<Value> {
    let sizes: &[usize] = if args.quick { &[4, 8] } else { &[4, 16, 64] };
    let calls = if args.quick { 40 } else { 400 };
    let phase = Duration::from_secs_f64(args.duration);
    let mut out = serde_json::Map::new();
    for &workers in sizes {
        let schema = format!("bench_{}_fleet_{workers}", std::process::id());
        let server_args =
            ["--store", url, "--store-schema", &schema, "--no-local-worker", "--worker-token", "fleet"];
        let dirs: Vec<_> =
            (0..FLEET_SERVERS + workers).map(|_| tempfile::tempdir()).collect::<Result<_, _>>()?;
        let servers: Vec<Proc> = dirs[..FLEET_SERVERS]
            .iter()
            .map(|d| Proc::gust_with(d.path(), &server_args))
            .collect::<Result<_, _>>()?;
        client::deploy(servers[0].addr, "noop", "{}", gust_testkit::fixture("noop")).await?;
        let fleet: Vec<Proc> = dirs[FLEET_SERVERS..]
            .iter()
            .enumerate()
            .map(|(i, d)| Proc::worker_with(servers[i % FLEET_SERVERS].addr, d.path(), "fleet", 4))
            .collect::<Result<_, _>>()?;
        for s in &servers {
            until_ready(s.addr).await?;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle = store_transactions_per_second(url, Duration::from_secs(3)).await?;
        let mut times = Vec::with_capacity(calls);
        for i in 0..calls {
            let t = Instant::now();
            let addr = servers[i % FLEET_SERVERS].addr;
            let (status, _) = client::call(addr, "POST", "/v1/functions/noop/invoke", &[], "{}").await?;
            anyhow::ensure!(status == 200, "fleet sync call: {status}");
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
        let load = split_load(&addrs, 64, phase).await?;
        out.insert(
            format!("workers_{workers:03}"),
            json!({
                "workers": workers,
                "sync_one_at_a_time": percentiles(times),
                "sync_64": load_json(&load),
                "idle_store_transactions_per_second": idle,
            }),
        );
        drop(fleet);
        drop(servers);
    }
    Ok(Value::Object(out))
}

/// PostgreSQL transactions a second in the store's database over `window` (committed and
/// rolled back, as `pg_stat_database` counts them; its counters are flushed at least once a
/// second, so the window is several seconds).
async fn store_transactions_per_second(url: &str, window: Duration) -> anyhow::Result<f64> {
    let (pg, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let conn = tokio::spawn(conn);
    let read = || async {
        let sql = "SELECT (xact_commit + xact_rollback)::BIGINT FROM pg_stat_database WHERE datname = current_database()";
        pg.query_one(sql, &[]).await.map(|r| r.get::<_, i64>(0))
    };
    // The first read opens a transaction of its own; so does the last.
    let (before, started) = (read().await?, Instant::now());
    tokio::time::sleep(window).await;
    let after = read().await?;
    let per_second = (after - before - 1) as f64 / started.elapsed().as_secs_f64();
    drop(pg);
    conn.abort();
    Ok(per_second)
}

/// Calls made one after another in each cluster shape, each on a new connection (keep-alive
/// off, as a load balancer in front of servers often is): sync p50/p90, and async ingest to
/// the function's start (the `clock` fixture answers the wall clock when it starts).
/// `remote` is a server without a local worker whose one remote worker polls it.
async fn latency_rows(url: &str, args: &Args, remote: &Proc) -> anyhow::Result<Value> {
    let calls = if args.quick { 20 } else { 400 };
    let schema = remote_schema();
    let (dl, db) = (tempfile::tempdir()?, tempfile::tempdir()?);
    // The embedded shape on the same store: one server, its own worker.
    let local = Proc::gust_with(dl.path(), &["--store", url, "--store-schema", &format!("{schema}_local")])?;
    // A second server of the remote worker's cluster: no worker polls it.
    let other = Proc::gust_with(
        db.path(),
        &["--store", url, "--store-schema", &schema, "--no-local-worker", "--worker-token", "bench-token"],
    )?;
    let clock = gust_testkit::fixture("clock");
    client::deploy(local.addr, "noop", "{}", gust_testkit::fixture("noop")).await?;
    client::deploy(local.addr, "clock", "{}", clock.clone()).await?;
    client::deploy(remote.addr, "clock", "{}", clock).await?;
    let mut out = serde_json::Map::new();
    for (name, proc) in [("embedded", &local), ("remote_own_server", remote), ("remote_other_server", &other)]
    {
        until_ready(proc.addr).await?;
        sequential(proc.addr, "noop", "sync", calls / 10).await?; // warm up
        let sync = sequential(proc.addr, "noop", "sync", calls).await?;
        let start = ingest_to_start(proc.addr, calls / 4).await?;
        out.insert(name.into(), json!({ "sync": sync, "async_ingest_to_start": start }));
    }
    // Then throughput at 64 connections (after the rows above: this attaches a worker to
    // `other` too): the embedded shape against two servers with one remote
    // worker each, the load split between the servers (as a load balancer would).
    let dw = tempfile::tempdir()?;
    let _second_worker = Proc::worker(other.addr, dw.path(), "bench-token")?;
    until_ready(local.addr).await?;
    until_ready(other.addr).await?;
    let phase = Duration::from_secs_f64(args.duration);
    let embedded = invoke_target(local.addr, "noop", "sync");
    loadgen::run(&embedded, 64, Stop::After(phase / 5)).await?;
    let e = loadgen::run(&embedded, 64, Stop::After(phase)).await?;
    let cluster = split_load(&[remote.addr, other.addr], 64, phase).await?;
    out.insert(
        "sync_64".into(),
        json!({
            "embedded": load_json(&e),
            "two_servers_two_workers": load_json(&cluster),
            "ratio": cluster.rps() / e.rps(),
        }),
    );
    Ok(Value::Object(out))
}

/// Warm sync load on `noop` for `phase`, `connections` split evenly over the servers at
/// `addrs` (as a load balancer would), merged into one result.
async fn split_load(addrs: &[SocketAddr], connections: usize, phase: Duration) -> anyhow::Result<LoadResult> {
    let started = Instant::now();
    let per_server = connections / addrs.len();
    let runs: Vec<_> = addrs
        .iter()
        .map(|&addr| {
            let target = invoke_target(addr, "noop", "sync");
            tokio::spawn(async move { loadgen::run(&target, per_server, Stop::After(phase)).await })
        })
        .collect();
    let mut load = LoadResult::default();
    for r in runs {
        let r = r.await??;
        load.requests += r.requests;
        load.errors += r.errors;
        load.latencies_us.extend(r.latencies_us);
    }
    load.elapsed = started.elapsed();
    load.latencies_us.sort_unstable();
    Ok(load)
}

/// Waits until `noop` answers a sync invocation at `addr` (its worker is up, the server has
/// seen the deploy).
async fn until_ready(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = client::call(addr, "POST", "/v1/functions/noop/invoke", &[], "{}").await?;
        if status == 200 && body.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "noop never answered at {addr}: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The schema of the remote-worker rows (their servers share it).
fn remote_schema() -> String {
    format!("bench_{}_remote", std::process::id())
}

/// p50 and p90 (µs) of `times`.
fn percentiles(mut times: Vec<f64>) -> Value {
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times.get(((times.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0);
    json!({ "p50_us": at(0.5), "p90_us": at(0.9), "calls": times.len() })
}

/// `n` invocations one after another, each on a new connection.
async fn sequential(addr: SocketAddr, function: &str, mode: &str, n: usize) -> anyhow::Result<Value> {
    let path = format!("/v1/functions/{function}/invoke");
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (status, body) = client::call(addr, "POST", &path, &[("invocation-type", mode)], "{}").await?;
        anyhow::ensure!(status == 200, "{function}: {status} {}", String::from_utf8_lossy(&body));
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(percentiles(times))
}

/// From just before an async invocation is sent to when the function starts (its own clock
/// reading), one at a time, so nothing queues behind another.
async fn ingest_to_start(addr: SocketAddr, n: usize) -> anyhow::Result<Value> {
    let unix_ns = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let sent = unix_ns();
        let (status, body) =
            client::call(addr, "POST", "/v1/functions/clock/invoke", &[("invocation-type", "async")], "{}")
                .await?;
        anyhow::ensure!(status == 202, "async clock: {status} {}", String::from_utf8_lossy(&body));
        let id = serde_json::from_slice::<Value>(&body)?["invocation_id"].as_str().unwrap_or("").to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        let started: u128 = loop {
            let (_, rec) = client::call(addr, "GET", &format!("/v1/invocations/{id}"), &[], "").await?;
            let rec: Value = serde_json::from_slice(&rec)?;
            match rec["state"].as_str() {
                Some("SUCCEEDED") => break rec["result"].as_str().unwrap_or("0").parse()?,
                Some("FAILED") => anyhow::bail!("async clock failed: {rec}"),
                _ => {}
            }
            anyhow::ensure!(Instant::now() < deadline, "async clock never finished: {rec}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        times.push(started.saturating_sub(sent) as f64 / 1e3);
    }
    Ok(percentiles(times))
}

async fn process_rows(gust: &Proc, bare: &Proc, args: &Args) -> anyhow::Result<Value> {
    let phase = Duration::from_secs_f64(args.duration);
    deploy_lam(gust.addr).await?;
    let g_target = invoke_target(gust.addr, "lam", "sync");
    let b_target = invoke_target(bare.addr, "lam", "sync");
    let mut warm = Vec::new();
    for conns in [1usize, 16] {
        loadgen::run(&g_target, conns, Stop::After(phase / 5)).await?;
        let g = loadgen::run(&g_target, conns, Stop::After(phase)).await?;
        let b = loadgen::run(&b_target, conns, Stop::After(phase)).await?;
        anyhow::ensure!(g.errors == 0, "errors during process-runtime load");
        warm.push(json!({
            "connections": conns,
            "gust": load_json(&g),
            "bare": load_json(&b),
            "p50_overhead_us": g.percentile_us(0.5) - b.percentile_us(0.5),
        }));
    }
    // Cold starts: each published version gets its own environment; the same on a server
    // whose environments have no sandbox (`--isolation none`), to price the sandbox.
    // The two alternate, one version at a time, so both see the same machine (a noisy
    // neighbour slows both, not one).
    let n = if args.quick { 2 } else { 20 };
    let bare_dir = tempfile::tempdir()?;
    let unsandboxed = Proc::gust_with(bare_dir.path(), &["--isolation", "none"])?;
    deploy_lam(unsandboxed.addr).await?;
    let (mut cold, mut cold_none) = (Vec::new(), Vec::new());
    for i in 0..n {
        cold.push(cold_start(gust.addr, i).await?);
        cold_none.push(cold_start(unsandboxed.addr, i).await?);
    }
    let u_target = invoke_target(unsandboxed.addr, "lam", "sync");
    loadgen::run(&u_target, 1, Stop::After(phase / 5)).await?;
    let u = loadgen::run(&u_target, 1, Stop::After(phase)).await?;
    anyhow::ensure!(u.errors == 0, "errors during unsandboxed process-runtime load");
    drop(unsandboxed);
    let mut interp = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        // The same interpreter the bootstrap gets: environments run with this PATH.
        let status = std::process::Command::new("python3")
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .args(["-c", "import json, os, subprocess, sys, time, urllib.request"])
            .status()?;
        anyhow::ensure!(status.success(), "python3 is needed for the process-runtime rows");
        interp.push(t.elapsed().as_micros() as f64);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (cold_p50, interp_p50) = (median(&mut cold), median(&mut interp));
    let cold_none_p50 = median(&mut cold_none);
    let warm1_p50 = warm[0]["gust"]["p50_us"].as_f64().unwrap_or(0.0);
    Ok(json!({
        "warm": warm,
        "cold_start_p50_us": cold_p50,
        "cold_start_unsandboxed_p50_us": cold_none_p50,
        "sandbox_cold_overhead_us": cold_p50 - cold_none_p50,
        "warm_unsandboxed_p50_us": u.percentile_us(0.5),
        "sandbox_warm_overhead_us": warm1_p50 - u.percentile_us(0.5),
        "interpreter_start_p50_us": interp_p50,
        "cold_overhead_us": cold_p50 - interp_p50,
    }))
}

/// Deploys `lam`, the Python `provided` bootstrap of the process-runtime rows.
async fn deploy_lam(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let json_ct = [("content-type", "application/json")];
    client::ok(addr, "PUT", "/v1/functions/lam", &json_ct, r#"{"runtime":"provided.al2023"}"#).await?;
    let zip_ct = [("content-type", "application/zip")];
    client::ok(addr, "PUT", "/v1/functions/lam/code", &zip_ct, provided_package()).await?;
    Ok(())
}

/// The cold start of a new version of `lam` (the `i`th; each gets its own environment), in µs.
async fn cold_start(addr: std::net::SocketAddr, i: usize) -> anyhow::Result<f64> {
    let json_ct = [("content-type", "application/json")];
    let cfg = format!(r#"{{"runtime":"provided","env":{{"V":"{i}"}}}}"#);
    client::ok(addr, "PUT", "/v1/functions/lam", &json_ct, cfg).await?;
    let v = client::ok(addr, "POST", "/v1/functions/lam/versions", &[], Bytes::new()).await?;
    let number =
        serde_json::from_slice::<Value>(&v).ok().and_then(|v| v["version"].as_u64()).unwrap_or(i as u64 + 1);
    let path = format!("/v1/functions/lam/invoke?qualifier={number}");
    let t = Instant::now();
    client::ok(addr, "POST", &path, &[], "{}").await?;
    Ok(t.elapsed().as_micros() as f64)
}
