//! TLS end to end, with certificates from CAs each test makes (rcgen): the CLI, a remote worker
//! and boto3 over https with a private CA, and refused without it; certificate reloads on SIGHUP
//! and on file change (a bad pair keeps the old one); plain HTTP to the TLS port and a silent
//! TLS client; the refusal to listen beyond loopback without TLS; and the PostgreSQL store's
//! `sslmode` against the throwaway server of `scripts/with-postgres` (which signs its
//! certificate with `GUST_TEST_POSTGRES_CA` and has a role that may connect only over TLS).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{metric, wasm_config, Server, Worker, GUST, REMOTE_ONLY};
use gust_testkit::process::Process;
use gust_testkit::{fixture, python, unique_schema, wait_until};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use reqwest::blocking::Client;
use serde_json::Value;

/// A certificate authority made for one test; its certificate is written to `pem`.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("gust test CA {name}"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pem = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem, issuer.pem()).unwrap();
        Ca { issuer, pem }
    }

    /// A server certificate for `names` and its key, both PEM.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.is_ca = IsCa::ExplicitNoCa;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn path(&self) -> &str {
        self.pem.to_str().unwrap()
    }
}

/// The server's certificate and key files; `install` replaces them by rename, as certificate
/// tools do, so the server never reads a half-written file.
struct ServerFiles {
    cert: PathBuf,
    key: PathBuf,
}

impl ServerFiles {
    fn new(dir: &Path, ca: &Ca) -> ServerFiles {
        let files = ServerFiles { cert: dir.join("server.pem"), key: dir.join("server.key") };
        let (cert, key) = ca.issue(&["localhost", "127.0.0.1"]);
        files.install(&cert, &key);
        files
    }

    fn install(&self, cert: &str, key: &str) {
        for (path, text) in [(&self.cert, cert), (&self.key, key)] {
            let tmp = path.with_extension("new");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }
}

fn start_tls(dir: &Path, files: &ServerFiles, extra: &[&str]) -> Server {
    let mut args = files.args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = Server::start(dir, &args);
    assert!(s.url.starts_with("https://127.0.0.1:"), "the start line says https: {}", s.url);
    s
}

/// A fresh client (no pooled connection from before a reload) trusting `ca` if given.
fn client(ca: Option<&Ca>) -> Client {
    let mut b = Client::builder().timeout(Duration::from_secs(30)).pool_max_idle_per_host(0);
    if let Some(ca) = ca {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca.pem).unwrap()).unwrap());
    }
    b.build().unwrap()
}

/// Whether a client trusting only `ca` gets `/healthz` answered.
fn trusted_by(s: &Server, ca: &Ca) -> bool {
    client(Some(ca)).get(format!("{}/healthz", s.url)).send().is_ok_and(|r| r.status() == 200)
}

/// Creates `name` running the echo fixture through the native API over https.
fn deploy_echo(c: &Client, url: &str, name: &str) {
    let r = c.put(format!("{url}/v1/functions/{name}")).json(&wasm_config(3000)).send().unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let r = c
        .put(format!("{url}/v1/functions/{name}/code"))
        .header("content-type", "application/wasm")
        .body(fixture("echo"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
}

fn gust(server: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    common::cli(server).args(args).env_remove("GUST_CA").envs(env.iter().copied()).output().expect("run gust")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Runs `gust server ARGS`, which must refuse to start: returns what it said. A server that
/// starts instead is killed and the test fails.
fn refused(dir: &Path, args: &[&str]) -> String {
    let mut server = Process::spawn(
        Command::new(GUST)
            .arg("server")
            .args(args)
            .arg("--data-dir")
            .arg(dir)
            .env("GUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .unwrap();
    let Some(status) = server.wait_exit(Duration::from_secs(30)) else {
        panic!("gust server {args:?} started instead of refusing");
    };
    let child = server.child_mut();
    let mut out = String::new();
    child.stderr.take().unwrap().read_to_string(&mut out).unwrap();
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    assert!(!status.success(), "gust server {args:?} exited 0: {out}");
    assert!(!stdout.contains("listening"), "it listened before refusing: {stdout}");
    out
}

#[test]
fn the_cli_deploys_and_invokes_over_https_and_names_an_untrusted_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "main");
    let files = ServerFiles::new(dir.path(), &ca);
    let s = start_tls(dir.path(), &files, &[]);
    let code = dir.path().join("echo.wasm");
    std::fs::write(&code, fixture("echo")).unwrap();
    let code = code.to_str().unwrap();

    let o = gust(&s.url, &["deploy", "echo", "--code", code, "--ca", ca.path()], &[]);
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("deployed echo"), "{o:?}");
    // GUST_CA is the same as --ca.
    let o = gust(&s.url, &["invoke", "echo", "--payload", "over https"], &[("GUST_CA", ca.path())]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "over https");

    // Without the CA: a clear certificate error and the unreachable exit code.
    let o = gust(&s.url, &["functions"], &[]);
    assert_eq!(o.status.code(), Some(6), "{o:?}");
    let e = stderr(&o);
    assert!(e.contains("TLS certificate") && e.contains("not signed by a certificate authority"), "{e}");
    assert!(e.contains("--ca FILE"), "the message says what to do: {e}");
    // Another CA is no better.
    let other = Ca::new(dir.path(), "other");
    let o = gust(&s.url, &["functions", "--ca", other.path()], &[]);
    assert_eq!(o.status.code(), Some(6), "{o:?}");
    assert!(stderr(&o).contains("not signed by a certificate authority"), "{o:?}");
    // A --ca that holds no certificate is refused before anything is sent.
    let o = gust(&s.url, &["functions", "--ca", files.key.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(stderr(&o).contains("no PEM certificate"), "{o:?}");
    // http:// to the TLS port: the server's plain answer says what to use.
    let o = gust(&s.url.replace("https://", "http://"), &["functions"], &[]);
    assert_eq!(o.status.code(), Some(7), "the server's 400: {o:?}");
    assert!(stderr(&o).contains("use an https:// URL"), "{o:?}");
}

#[test]
fn a_worker_joins_over_https_with_its_ca_and_runs_a_function() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "main");
    let files = ServerFiles::new(dir.path(), &ca);
    let s = start_tls(dir.path(), &files, &REMOTE_ONLY);
    let _trusting = Worker::start(&s.url, dir.path(), "trusting", &["--ca", ca.path()]);
    // A worker without the CA never joins, and says why.
    let untrusting = UntrustingWorker::start(&s.url, dir.path());
    let c = client(Some(&ca));
    deploy_echo(&c, &s.url, "echo");
    wait_until("the trusting worker joins with the new code", Duration::from_secs(10), || {
        let v: Value = c.get(format!("{}/v1/workers", s.url)).send().unwrap().json().unwrap();
        v["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["live"] == true && w["snapshot_version"].as_u64() >= Some(1))
    });
    let r = c.post(format!("{}/v1/functions/echo/invoke", s.url)).body("via an https worker").send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "via an https worker");
    untrusting.wait_for_log("not signed by a certificate authority this client trusts");
    let v: Value = c.get(format!("{}/v1/workers", s.url)).send().unwrap().json().unwrap();
    let ids: Vec<&str> = v["workers"].as_array().unwrap().iter().map(|w| w["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "{v}");
    assert!(ids[0].starts_with("trusting-"), "{v}");
}

/// A `gust worker` without `--ca`, its log read line by line; killed when dropped.
struct UntrustingWorker {
    _process: Process,
    lines: std::sync::mpsc::Receiver<String>,
}

impl UntrustingWorker {
    fn start(url: &str, dir: &Path) -> UntrustingWorker {
        let mut process = Process::spawn(
            Command::new(GUST)
                .args([
                    "worker",
                    "--server",
                    url,
                    "--worker-token",
                    "test-worker-token",
                    "--name",
                    "untrusting",
                ])
                .arg("--data-dir")
                .arg(dir.join("untrusting"))
                .env("GUST_LOG", "warn")
                .env_remove("GUST_CA")
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        )
        .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let stderr = std::io::BufReader::new(process.child_mut().stderr.take().unwrap());
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in stderr.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        UntrustingWorker { _process: process, lines }
    }

    fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if line.contains(needle) {
                return;
            }
            seen.push(line);
        }
        panic!("the worker never logged {needle:?}; it logged:\n{}", seen.join("\n"));
    }
}

const BOTO3_OVER_HTTPS: &str = r#"
import os, sys
import boto3, botocore
from botocore.config import Config

endpoint, ca, module_path = sys.argv[1:4]
config = Config(retries={"max_attempts": 1}, connect_timeout=10, read_timeout=30)

def lam(**kw):
    return boto3.client("lambda", endpoint_url=endpoint, region_name="us-east-1", config=config, **kw)

c = lam(verify=ca)
with open(module_path, "rb") as f:
    module = f.read()
c.create_function(FunctionName="tlsecho", Runtime="wasm", Role="arn:aws:iam::000000000000:role/x",
                  Handler="x", Code={"ZipFile": module})
out = c.invoke(FunctionName="tlsecho", Payload=b"boto3 over https")["Payload"].read()
assert out == b"boto3 over https", out

os.environ["AWS_CA_BUNDLE"] = ca
assert lam().get_function(FunctionName="tlsecho")["Configuration"]["Runtime"] == "wasm"
del os.environ["AWS_CA_BUNDLE"]

try:
    lam().list_functions()
except botocore.exceptions.SSLError as e:
    print("untrusted:", e)
else:
    sys.exit("a certificate from an unknown CA was accepted")
print("ok")
"#;

#[test]
fn boto3_speaks_to_the_aws_api_over_https_with_verify_ca() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "main");
    let files = ServerFiles::new(dir.path(), &ca);
    let s = start_tls(dir.path(), &files, &["--token", "native", "--aws-credential", "AKIDTLS:tls-secret"]);
    let module = dir.path().join("echo.wasm");
    std::fs::write(&module, fixture("echo")).unwrap();
    let out = Command::new(&python)
        .args(["-c", BOTO3_OVER_HTTPS, &s.url, ca.path(), module.to_str().unwrap()])
        .env("AWS_ACCESS_KEY_ID", "AKIDTLS")
        .env("AWS_SECRET_ACCESS_KEY", "tls-secret")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_CA_BUNDLE")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("CERTIFICATE_VERIFY_FAILED"), "{stdout}");
}

#[test]
fn sighup_reloads_the_certificate_and_a_bad_pair_keeps_the_one_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (Ca::new(dir.path(), "old"), Ca::new(dir.path(), "new"));
    let files = ServerFiles::new(dir.path(), &old_ca);
    // No polling within the test's time: only the signal reloads.
    let mut s = start_tls(dir.path(), &files, &["--tls-poll-ms", "3600000"]);
    assert!(trusted_by(&s, &old_ca) && !trusted_by(&s, &new_ca));

    let (cert, key) = new_ca.issue(&["localhost", "127.0.0.1"]);
    files.install(&cert, &key);
    std::thread::sleep(Duration::from_millis(300));
    assert!(trusted_by(&s, &old_ca), "nothing changes before the signal");
    s.signal("-HUP");
    wait_until("the new certificate is served after SIGHUP", Duration::from_secs(5), || {
        trusted_by(&s, &new_ca)
    });
    assert!(!trusted_by(&s, &old_ca), "new connections get only the new certificate");

    // A key that is not the certificate's: the reload fails and the pair in force stays.
    let (cert, _) = old_ca.issue(&["localhost", "127.0.0.1"]);
    let (_, wrong_key) = old_ca.issue(&["localhost"]);
    files.install(&cert, &wrong_key);
    s.signal("-HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert!(trusted_by(&s, &new_ca) && !trusted_by(&s, &old_ca), "a bad pair is not served");
    assert_eq!(metric(&client(Some(&new_ca)), &s.url, "gust_tls_reloads_total"), 1);
    assert_eq!(s.wait_exit(Duration::ZERO), None, "SIGHUP does not stop the server");
}

#[test]
fn changed_certificate_files_are_picked_up_without_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (Ca::new(dir.path(), "old"), Ca::new(dir.path(), "new"));
    let files = ServerFiles::new(dir.path(), &old_ca);
    let s = start_tls(dir.path(), &files, &["--tls-poll-ms", "200"]);
    assert!(trusted_by(&s, &old_ca));
    let (cert, key) = new_ca.issue(&["localhost", "127.0.0.1"]);
    files.install(&cert, &key);
    wait_until("the renewed certificate is served", Duration::from_secs(5), || trusted_by(&s, &new_ca));
    assert!(!trusted_by(&s, &old_ca));
}

/// Whether the server closed `tcp` (EOF or reset) within `wait`.
fn closed_by_server(tcp: &mut TcpStream, wait: Duration) -> bool {
    tcp.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 64];
    match tcp.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(_) => true,
    }
}

#[test]
fn plain_http_to_the_tls_port_fails_cleanly_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "main");
    let files = ServerFiles::new(dir.path(), &ca);
    let s = start_tls(dir.path(), &files, &[]);
    let addr = s.addr().to_string();

    // A plain request gets a plain answer that says what to use, then the connection closes.
    let mut tcp = TcpStream::connect(&addr).unwrap();
    tcp.write_all(b"GET /v1/functions HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("TlsRequired") && answer.contains("https://"), "{answer}");
    let r = Client::new().get(format!("http://{addr}/healthz")).send().unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().unwrap()["error"]["code"], "TlsRequired");

    // Garbage after a TLS record header: the handshake fails and the connection closes.
    let mut tcp = TcpStream::connect(&addr).unwrap();
    tcp.write_all(&[0x16, 0x03, 0x01, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    assert!(closed_by_server(&mut tcp, Duration::from_secs(5)), "a broken handshake is closed at once");

    let c = client(Some(&ca));
    assert_eq!(c.get(format!("{}/healthz", s.url)).send().unwrap().status(), 200, "still serving");
    assert_eq!(metric(&c, &s.url, "gust_tls_plain_http_total"), 2);
    assert!(metric(&c, &s.url, "gust_tls_handshake_failures_total") >= 1);

    // The other way round: https:// to a plain-HTTP server says so.
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = Server::start(plain_dir.path(), &[]);
    let o = gust(&plain.url.replace("http://", "https://"), &["functions"], &[]);
    assert_eq!(o.status.code(), Some(6), "{o:?}");
    assert!(stderr(&o).contains("is it serving plain HTTP?"), "{o:?}");
}

#[test]
fn a_client_that_never_finishes_its_handshake_is_closed_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "main");
    let files = ServerFiles::new(dir.path(), &ca);
    let s = start_tls(dir.path(), &files, &["--header-read-timeout-ms", "1500"]);
    let addr = s.addr().to_string();
    let started = Instant::now();
    // One never sends a byte; one sends a record header announcing a ClientHello it never sends.
    let mut silent = TcpStream::connect(&addr).unwrap();
    let mut stalled = TcpStream::connect(&addr).unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
    assert!(!closed_by_server(&mut silent, Duration::from_millis(500)), "closed before the timeout");
    assert!(trusted_by(&s, &ca), "the server answers others meanwhile");
    for tcp in [&mut silent, &mut stalled] {
        assert!(
            closed_by_server(tcp, Duration::from_secs(5)),
            "a silent TLS client holds its slot past the timeout"
        );
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1400) && took < Duration::from_secs(5), "{took:?}");
    assert!(metric(&client(Some(&ca)), &s.url, "gust_tls_handshake_failures_total") >= 2);
}

#[test]
fn beyond_loopback_the_server_needs_tls_or_insecure_http() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let e = refused(&data, &["--listen", "0.0.0.0:0", "--token", "x"]);
    assert!(e.contains("without TLS") && e.contains("--insecure-http") && e.contains("--tls-cert"), "{e}");
    // The token is still required, TLS or not.
    let ca = Ca::new(dir.path(), "main");
    let files = ServerFiles::new(dir.path(), &ca);
    let (cert, key) = (files.cert.to_str().unwrap(), files.key.to_str().unwrap());
    let e = refused(&data, &["--listen", "0.0.0.0:0", "--tls-cert", cert, "--tls-key", key]);
    assert!(e.contains("without --token"), "{e}");
    // Half a pair, or files that are not one, are refused with what is wrong.
    let e = refused(&data, &["--tls-cert", cert]);
    assert!(e.contains("--tls-key"), "{e}");
    let e = refused(&data, &["--tls-cert", key, "--tls-key", key]);
    assert!(e.contains("no PEM certificate"), "{e}");
    let e = refused(&data, &["--tls-cert", cert, "--tls-key", ca.path()]);
    assert!(e.contains("no PEM private key"), "{e}");

    let s = Server::start_at(&data, "0.0.0.0:0", &["--token", "x", "--insecure-http"]);
    assert!(s.url.starts_with("http://0.0.0.0:"), "{}", s.url);
    drop(s);
    let s = Server::start_at(&data, "0.0.0.0:0", &["--token", "x", "--tls-cert", cert, "--tls-key", key]);
    assert!(s.url.starts_with("https://0.0.0.0:"), "{}", s.url);
}

/// The throwaway PostgreSQL's TLS-only URL and CA, or `None` (the test is skipped, saying why).
fn postgres_tls() -> Option<(String, String)> {
    match (std::env::var("GUST_TEST_POSTGRES_TLS"), std::env::var("GUST_TEST_POSTGRES_CA")) {
        (Ok(url), Ok(ca)) => Some((url, ca)),
        _ => {
            eprintln!(
                "skipped: GUST_TEST_POSTGRES_TLS and GUST_TEST_POSTGRES_CA are not set (run under ./scripts/with-postgres, which starts PostgreSQL with TLS)"
            );
            None
        }
    }
}

/// A server on the PostgreSQL store at `url` runs a function (so the store works for real).
fn runs_on_postgres(dir: &Path, url: &str) {
    let s = Server::start(dir, &["--store", url, "--store-schema", &unique_schema("tls_ok")]);
    s.deploy("echo", wasm_config(3000), fixture("echo"));
    let r = s.invoke("echo", None, b"stored over TLS", &[]);
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "stored over TLS");
}

#[test]
fn the_postgres_store_honours_sslmode() {
    let Some((tls_url, ca)) = postgres_tls() else { return };
    let dir = tempfile::tempdir().unwrap();
    // The role may connect only over TLS (pg_hba), so this proves the connections encrypted;
    // verify-full checks the chain and that the certificate names 127.0.0.1.
    runs_on_postgres(&dir.path().join("full"), &format!("{tls_url}?sslmode=verify-full&sslrootcert={ca}"));
    // The same role unencrypted is refused by the server: the check above is real.
    let e = refused(&dir.path().join("plain"), &["--store", &format!("{tls_url}?sslmode=disable")]);
    assert!(e.contains("no encryption"), "{e}");

    // Another CA: refused, saying why.
    let wrong = Ca::new(dir.path(), "wrong");
    let e = refused(
        &dir.path().join("wrong"),
        &["--store", &format!("{tls_url}?sslmode=verify-full&sslrootcert={}", wrong.path())],
    );
    assert!(e.contains("invalid peer certificate") && e.contains("UnknownIssuer"), "{e}");
    assert!(e.contains("sslmode=verify-full"), "{e}");

    // A host name the certificate does not carry (the address from hostaddr): verify-full
    // refuses, verify-ca checks the chain only and connects.
    let port = tls_url.rsplit_once(':').unwrap().1.split('/').next().unwrap();
    let misnamed =
        format!("postgres://gust_tls@not-in-the-certificate.example:{port}/postgres?hostaddr=127.0.0.1");
    let e = refused(
        &dir.path().join("misnamed"),
        &["--store", &format!("{misnamed}&sslmode=verify-full&sslrootcert={ca}")],
    );
    assert!(e.contains("not valid for name"), "{e}");
    runs_on_postgres(&dir.path().join("ca-only"), &format!("{misnamed}&sslmode=verify-ca&sslrootcert={ca}"));
    // require without a root certificate encrypts without checking.
    runs_on_postgres(&dir.path().join("require"), &format!("{tls_url}?sslmode=require"));

    // sslmode=disable still works for a role that may connect unencrypted.
    let plain = gust_testkit::postgres();
    assert!(plain.contains("sslmode=disable"), "{plain}");
    runs_on_postgres(&dir.path().join("disabled"), &plain);
}
