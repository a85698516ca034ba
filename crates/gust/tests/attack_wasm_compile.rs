//! Compiling an untrusted WebAssembly module is bounded in memory and time by a child process:
//! a module that cannot compile in bounds is a 400 at deploy and leaves nothing running.

mod common;

use std::time::{Duration, Instant};

use common::{wasm_config, Server};
use gust_testkit::{costly_to_compile, fixture, is_root, large_module, with_custom_section};
use serde_json::{json, Value};

/// The cost of compiling in a child process: the first-ever upload of a ~1 MB module.
#[test]
#[ignore = "a measurement: cargo nextest run -p gust --test attack_wasm_compile --run-ignored all measure"]
fn measure_first_compile_of_a_1mb_module() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let mut times = Vec::new();
    for i in 0..8 {
        // A distinct module each time (a custom section), so every upload compiles.
        let name = format!("m{i}");
        let module = with_custom_section(&large_module(), "id", name.as_bytes());
        let r = s.put_json(&format!("/v1/functions/{name}"), &json!({}));
        assert_eq!(r.status(), 200);
        let t = Instant::now();
        let r = s.put_bytes(&format!("/v1/functions/{name}/code"), module);
        assert_eq!(r.status(), 200, "{}", r.text().unwrap());
        times.push(t.elapsed());
    }
    eprintln!("first-ever compile of a {} byte module: {times:?}", large_module().len());
}

/// The compiler children (`gust __compile`) of the server, alive or not yet reaped.
fn compiler_children(s: &Server) -> Vec<String> {
    let server = s.pid().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid ...: the command name may hold spaces, so split after it.
        let Some((_, after_comm)) = stat.rsplit_once(") ") else { continue };
        let ppid = after_comm.split(' ').nth(1);
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let is_compiler = cmdline.split(|&b| b == 0).nth(1) == Some(b"__compile".as_slice());
        // A zombie has no command line left: count every child of the server that is one.
        let zombie = after_comm.starts_with("Z ");
        if ppid == Some(server.as_str()) && (is_compiler || zombie) {
            found.push(format!("{pid}: {stat}"));
        }
    }
    found
}

/// Threads of the server that compile in process (what a compiler that cannot be stopped
/// leaves behind).
fn compiler_threads(s: &Server) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{}/task", s.pid())).unwrap();
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .filter(|comm| comm.starts_with("gust-wasm-comp"))
        .collect()
}

/// CPU time the server process itself has used (user + system).
fn server_cpu(s: &Server) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", s.pid())).unwrap();
    let (_, after_comm) = stat.rsplit_once(") ").unwrap();
    let fields: Vec<&str> = after_comm.split(' ').collect();
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the command name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on every Linux architecture gust runs on.
    Duration::from_millis(ticks * 10)
}

/// Asserts that nothing compiles any more: no compiler process, no compiler thread, and the
/// server's CPU time does not grow as it would under a compilation left running.
fn nothing_compiles(s: &Server) {
    let left = compiler_children(s);
    assert!(left.is_empty(), "no compiler process is left: {left:?}");
    let threads = compiler_threads(s);
    assert!(threads.is_empty(), "no compiler thread is left: {threads:?}");
    let before = server_cpu(s);
    std::thread::sleep(Duration::from_secs(1));
    let used = server_cpu(s) - before;
    assert!(used < Duration::from_millis(500), "the server used {used:?} of CPU in 1 s of idling");
}

/// Uploads `code` as the code of a new function `name`; the response.
fn upload(s: &Server, name: &str, code: Vec<u8>) -> (u16, Value) {
    let r = s.put_json(&format!("/v1/functions/{name}"), &wasm_config(3000));
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let r = s.put_bytes(&format!("/v1/functions/{name}/code"), code);
    let status = r.status().as_u16();
    (status, r.json().unwrap())
}

/// The server keeps serving: a normal module deploys and runs.
fn still_serves(s: &Server, name: &str) {
    s.deploy(name, wasm_config(3000), fixture("echo"));
    let r = s.invoke(name, None, br#"{"ok":1}"#, &[]);
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
}

#[test]
fn a_module_that_needs_more_memory_to_compile_than_allowed_is_a_400_and_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--compile-memory-mb", "64"]);
    let started = Instant::now();
    let (status, body) = upload(&s, "hungry", costly_to_compile(2000, 2000));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "InvalidCode", "{body}");
    assert_eq!(
        body["error"]["message"],
        "the module is too large or complex to compile: it needs more than 64 MB of memory to compile",
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(30), "refused at the limit, not at the deadline");
    nothing_compiles(&s);
    // The same module again: refused the same way (no half-written cache entry accepted it).
    let (status, body) = upload(&s, "hungry-again", costly_to_compile(2000, 2000));
    assert_eq!(status, 400, "{body}");
    assert!(compiler_children(&s).is_empty());
    // A module that compiles within the same 64 MB still deploys and runs.
    still_serves(&s, "normal");
}

#[test]
fn a_module_that_compiles_too_slowly_is_a_400_and_its_compiler_is_gone_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--compile-timeout-ms", "300"]);
    let started = Instant::now();
    let (status, body) = upload(&s, "slow", costly_to_compile(3000, 4000));
    let took = started.elapsed();
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["message"],
        "the module is too large or complex to compile: it did not compile within 300ms",
        "{body}"
    );
    assert!(took < Duration::from_secs(5), "the deploy does not wait for the compiler: {took:?}");
    // Right after the answer: the compiler was killed and reaped before it was sent.
    nothing_compiles(&s);
    still_serves(&s, "normal");
}

#[test]
fn an_invalid_module_is_refused_with_the_compilers_own_words() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    // Valid up to the code section, whose body refers to a local that does not exist.
    // Well-formed, but the body reads a local that does not exist.
    let invalid = wat::parse_str("(module (func (export \"_start\") (drop (local.get 5))))").unwrap();
    let (status, body) = upload(&s, "invalid", invalid);
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("invalid WebAssembly module: "), "{message}");
    assert!(message.contains("local"), "{message}");
    assert!(compiler_children(&s).is_empty());
}

#[test]
fn the_compiler_of_untrusted_code_never_runs_as_root() {
    if !is_root() {
        eprintln!("skipped: gust drops to the sandbox user only when it runs as root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--compile-timeout-ms", "5000"]);
    std::thread::scope(|scope| {
        let upload = scope.spawn(|| upload(&s, "slow", costly_to_compile(3000, 4000)));
        // Catch the compiler while it works and read its ids.
        let deadline = Instant::now() + Duration::from_secs(5);
        let uids = loop {
            let found = compiler_children(&s).into_iter().find_map(|child| {
                // "PID: stat line"
                let pid = child.split(':').next()?;
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;

                let uid = status.lines().find(|l| l.starts_with("Uid:"))?.to_string();
                // Just forked, before the child dropped root itself: look again.
                (!uid.starts_with("Uid:\t0\t")).then_some(uid)
            });
            if let Some(uids) = found {
                break uids;
            }
            assert!(Instant::now() < deadline, "no compiler seen running as anything but root");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(uids.split_whitespace().skip(1).collect::<Vec<_>>(), ["65534"; 4], "{uids}");
        // Compiled in time or refused at the deadline: either way an answer, not a hang.
        let (status, body) = upload.join().unwrap();
        assert!(status == 200 || status == 400, "{status} {body}");
    });
}
