//! A newcomer's first ten minutes: gust started exactly as the README's "Run it" says (default
//! data dir, relative to a fresh working directory; default `--python`, found on PATH), the
//! README's tour pasted into a shell, a worker on its defaults, and the start-up runtime
//! report with its deploy-time refusal.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{error_code, GUST, REMOTE_ONLY};
use gust_testkit::process::Process;
use gust_testkit::{node_ric, python, repo_root, zip};
use reqwest::blocking::Client;
use serde_json::{json, Value};

/// The venv with awslambdaric that `./scripts/test` prepares; its bin directory goes first on
/// PATH, so the default `python3` is the one with the runtime client.
fn venv_bin() -> PathBuf {
    Path::new(&python()).parent().unwrap().to_path_buf()
}

fn path_with(first: &Path) -> String {
    format!("{}:{}", first.display(), std::env::var("PATH").unwrap_or_default())
}

/// The first ```bash block after `heading` in the README.
fn readme_block(heading: &str) -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let at = readme.find(heading).unwrap_or_else(|| panic!("README has no {heading:?}"));
    let rest = &readme[at..];
    let start = rest.find("```bash\n").expect("a bash block") + "```bash\n".len();
    let end = rest[start..].find("```").unwrap();
    rest[start..start + end].to_string()
}

/// A process started the way a user would, in `cwd` with `env`; killed when dropped.
struct Proc {
    _process: Process,
    stderr: PathBuf,
}

impl Proc {
    fn start(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> (Proc, String) {
        let stderr = cwd.join(format!("{}.stderr", args[0]));
        let mut cmd = Command::new(GUST);
        cmd.args(args).current_dir(cwd).stderr(std::fs::File::create(&stderr).unwrap());
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("GUST_") && !k.starts_with("GUST_TEST"))
        {
            cmd.env_remove(k);
        }
        cmd.env("GUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (process, banner) = Process::start(&mut cmd).expect("spawn gust");
        (Proc { _process: process, stderr }, banner)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

fn url_of(banner: &str) -> String {
    banner.strip_prefix("gust listening on ").unwrap_or_else(|| panic!("banner {banner:?}")).to_string()
}

/// A working directory as a fresh clone's: the examples, and AWS's Node.js runtime client
/// installed in ./node_modules (what `npm install aws-lambda-ric` there leaves).
fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(repo_root().join("examples"), dir.path().join("examples")).unwrap();
    std::os::unix::fs::symlink(Path::new(&node_ric()).parent().unwrap(), dir.path().join("node_modules"))
        .unwrap();
    dir
}

#[test]
fn the_readme_run_it_and_tour_work_when_pasted_into_a_shell() {
    let dir = workdir();
    let run_it = readme_block("## Run it");
    let command = run_it.lines().next().unwrap().split('#').next().unwrap().trim();
    let args: Vec<&str> = command
        .strip_prefix("cargo run --release -- ")
        .unwrap_or_else(|| panic!("Run it is not `cargo run --release -- ...`: {command:?}"))
        .split_whitespace()
        .collect();
    let path = path_with(&venv_bin());
    // Only the port differs from what the README runs: tests must not take 8080.
    let (server, banner) = Proc::start(&args, dir.path(), &[("PATH", &path), ("GUST_LISTEN", "127.0.0.1:0")]);
    let url = url_of(&banner);
    let log = server.log();
    for runtime in ["wasm", "provided", "python3.x", "nodejsN.x"] {
        assert!(
            log.contains(&format!("runtime {runtime}: available")),
            "{runtime} in the start-up report:\n{log}"
        );
    }
    assert!(log.contains(&venv_bin().display().to_string()), "python3 from PATH:\n{log}");

    let tour = readme_block("## A one-minute tour");
    assert!(!tour.contains("gust server"), "the tour must not start a second server:\n{tour}");
    let script: String = tour
        .lines()
        .map(|l| if l.starts_with("alias gust=") { "gust() { \"$GUST_BIN\" \"$@\"; }" } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    let out = Command::new("bash")
        .args(["-c", &format!("set -x\n{script}")])
        .current_dir(dir.path())
        .env("PATH", &path)
        .env("GUST_BIN", GUST)
        .env("GUST_SERVER", &url)
        .env("PS4", "+ ")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let said = |needle: &str, what: &str| assert!(text.contains(needle), "{what}: {needle:?} not in\n{text}");
    assert!(out.status.success(), "the tour failed:\n{text}");
    said("deployed hello (revision 1,", "a first deploy is one revision");
    said("Hello, Ada!", "the wasm example");
    said("exit 1", "a function error exits 1");
    said("published hello version 1", "publish");
    said("published hello version 2", "publish again");
    said(", Bob!", "the alias");
    said(r#"{"received":{"name":"Eve"},"function":"lam"}"#, "the provided example");
    said("Hello, Fay!", "the Python example");
    said("Hello, Gus!", "the Node.js example");
    said("greeting Fay", "the Python invocation's log, right after it ran");
    assert!(!text.contains("no invocations"), "a sync invocation's record is readable at once:\n{text}");
    let failures: Vec<&str> = text.lines().filter(|l| l.starts_with("gust: ")).collect();
    assert!(
        failures.len() == 1 && failures[0].starts_with("gust: function error (FunctionError)"),
        "only the function error the tour shows:\n{text}"
    );
    for f in ["hello", "lam", "py", "js"] {
        assert!(text.lines().any(|l| l.starts_with(&format!("{f} "))), "gust functions lists {f}:\n{text}");
    }
    assert!(text.contains("provided.al2023  "), "the runtime column holds provided.al2023:\n{text}");
    // Everything stayed in the working directory's ./.gust.
    assert!(dir.path().join(".gust/tasks").is_dir(), "task roots under ./.gust");
}

#[test]
fn a_worker_on_its_defaults_runs_zip_functions_and_reports_what_it_can_run() {
    let server_dir = workdir();
    let worker_dir = workdir();
    let (_server, banner) = Proc::start(
        &[&["server"], &REMOTE_ONLY[..]].concat(),
        server_dir.path(),
        &[("GUST_LISTEN", "127.0.0.1:0")],
    );
    let url = url_of(&banner);
    let c = Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    // No live worker yet: nothing to judge a runtime by, so the deploy is taken.
    let deploy = |name: &str, runtime: &str, handler: &str, code: Vec<u8>| {
        use base64::Engine as _;
        c.post(format!("{url}/v1/functions"))
            .json(&json!({
                "name": name,
                "config": if handler.is_empty() { json!({ "runtime": runtime }) } else { json!({ "runtime": runtime, "handler": handler }) },
                "code_b64": base64::engine::general_purpose::STANDARD.encode(code),
            }))
            .send()
            .unwrap()
    };
    let app = std::fs::read(repo_root().join("examples/python/app.py")).unwrap();
    let r = deploy("early", "python3.12", "app.handler", zip(&[("app.py", &app, 0o644)]));
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());

    // The worker as a user starts it: the README's flags only, default ./.gust-worker, the
    // first python3 on PATH; no Node.js runtime client in its working directory.
    std::fs::remove_file(worker_dir.path().join("node_modules")).unwrap();
    let path = path_with(&venv_bin());
    let (worker, banner) = Proc::start(
        &["worker", "--server", &url, "--worker-token", REMOTE_ONLY[2]],
        worker_dir.path(),
        &[("PATH", &path)],
    );
    assert!(banner.starts_with("gust worker "), "{banner}");
    let log = worker.log();
    assert!(log.contains("runtime python3.x: available"), "{log}");
    assert!(log.contains("runtime nodejsN.x: unavailable"), "{log}");
    wait_for_live_worker(&c, &url);

    let r = deploy("py", "python3.12", "app.handler", zip(&[("app.py", &app, 0o644)]));
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let bootstrap = std::fs::read(repo_root().join("examples/provided/bootstrap")).unwrap();
    let r = deploy("lam", "provided", "", zip(&[("bootstrap", &bootstrap, 0o755)]));
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let r = deploy(
        "js",
        "nodejs20.x",
        "index.handler",
        zip(&[("index.mjs", b"export const handler = 1;", 0o644)]),
    );
    assert_eq!(error_code(r, 400), "RuntimeUnavailable", "no live worker runs nodejs");

    for (name, expect) in [("py", "Hello, Ada!"), ("lam", r#""received":{"name":"Ada"}"#)] {
        let r = c.post(format!("{url}/v1/functions/{name}/invoke")).body(r#"{"name":"Ada"}"#).send().unwrap();
        let status = r.status();
        let body = r.text().unwrap();
        assert!(status == 200 && body.contains(expect), "{name}: {status} {body}\n{}", worker.log());
    }
    assert!(worker_dir.path().join(".gust-worker/tasks").is_dir(), "task roots under ./.gust-worker");
}

fn wait_for_live_worker(c: &Client, url: &str) {
    for _ in 0..200 {
        let v: Value = c.get(format!("{url}/v1/workers")).send().unwrap().json().unwrap();
        if v["workers"].as_array().is_some_and(|w| w.iter().any(|w| w["live"] == true)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the worker never became live");
}

#[test]
fn a_runtime_this_server_cannot_run_is_refused_at_deploy_and_a_bad_program_flag_at_start() {
    let dir = workdir();
    std::fs::remove_file(dir.path().join("node_modules")).unwrap();
    let empty = tempfile::tempdir().unwrap();
    let bare_path = empty.path().display().to_string();
    let (server, banner) =
        Proc::start(&["server"], dir.path(), &[("PATH", &bare_path), ("GUST_LISTEN", "127.0.0.1:0")]);
    let url = url_of(&banner);
    let log = server.log();
    assert!(log.contains("runtime python3.x: unavailable: no python3 on PATH"), "{log}");
    assert!(log.contains("runtime nodejsN.x: unavailable: no node on PATH"), "{log}");
    let c = Client::new();
    let put = |name: &str, runtime: &str| {
        c.put(format!("{url}/v1/functions/{name}"))
            .json(&json!({ "runtime": runtime, "handler": "app.handler" }))
            .send()
            .unwrap()
    };
    let r = put("py", "python3.12");
    assert_eq!(r.status(), 400);
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"]["code"], "RuntimeUnavailable");
    assert!(v["error"]["message"].as_str().unwrap().contains("--python"), "{v}");
    assert_eq!(error_code(put("js", "nodejs20.x"), 400), "RuntimeUnavailable");
    assert_eq!(put("lam", "provided.al2023").status(), 200, "provided needs nothing from PATH");
    // The AWS API refuses it the way the SDKs expect.
    let r = c
        .post(format!("{url}/2015-03-31/functions"))
        .json(&json!({
            "FunctionName": "py2", "Runtime": "python3.12", "Handler": "app.handler",
            "Role": "arn:aws:iam::000000000000:role/x", "Code": { "ZipFile": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA==" }
        }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-amzn-errortype"], "InvalidParameterValueException");
    drop(server);

    // An explicit program that is not there stops the start with a message naming the flag.
    for (flag, value) in [("--python", "no-such-python"), ("--node", "./bin/node"), ("--node-ric", "nowhere")]
    {
        let out = Command::new(GUST)
            .args(["server", "--listen", "127.0.0.1:0", flag, value])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(stderr.contains(flag), "{flag}: {stderr}");
    }
}

#[test]
fn a_sync_invocation_is_readable_as_soon_as_it_answered() {
    let dir = tempfile::tempdir().unwrap();
    let s = common::Server::start(dir.path(), &[]);
    s.deploy("echo", common::wasm_config(1000), gust_testkit::fixture("echo"));
    for i in 0..20 {
        let r = s.invoke("echo", None, format!("{{\"i\":{i}}}").as_bytes(), &[]);
        assert_eq!(r.status(), 200);
        let id = r.headers()["gust-invocation-id"].to_str().unwrap().to_string();
        let v = s.invocation(&id);
        assert_eq!(v["state"], "SUCCEEDED", "{v}");
        let list: Value = s.get("/v1/functions/echo/invocations?limit=1").json().unwrap();
        assert_eq!(list["invocations"][0]["invocation_id"], id.as_str());
    }
}

#[test]
fn a_server_whose_stdout_is_closed_keeps_serving() {
    // `gust server | head -1`, or a supervisor that read the banner and went: printing the
    // banner (and the URL listener's line after it) into a closed pipe must not end the server.
    let dir = workdir();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = Command::new(GUST);
    cmd.args(["server", "--listen", &format!("127.0.0.1:{port}"), "--url-listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .stdout(writer)
        .stderr(std::process::Stdio::null());
    let mut process = Process::spawn(&mut cmd).expect("spawn gust");
    let client = Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(process.is_running(), "the server ended when its stdout was closed");
        if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/healthz")).send() {
            assert_eq!(r.text().unwrap(), "ok");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the server never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(process.is_running(), "the server ended after its banner went into a closed pipe");
}
