//! The AWS Lambda API driven by the real AWS clients, unmodified: the boto3 + AWS CLI v1 suite
//! (`tests/aws`, pytest), the @aws-sdk/client-lambda suite (`tests/aws/node`) and SQS's query
//! protocol from a 2023 botocore (`tests/aws-legacy`) each run against a fresh `gust server`
//! with SigV4 authentication on. `./scripts/test` installs the
//! clients (PyPI into the venv of `GUST_TEST_PYTHON`, npm into `tests/aws/node/node_modules`).

mod common;

use std::process::Command;

use common::Server;
use gust_testkit::{python, repo_root};

const NATIVE_TOKEN: &str = "gust-native-test-token";
const ACCESS_KEY_ID: &str = "AKIDGUSTTEST";
const SECRET_ACCESS_KEY: &str = "gust-secret-key";

/// A server with the native token, one AWS credential, and the test interpreter for python3.x.
fn start_server(dir: &std::path::Path, python: &str) -> Server {
    let credential = format!("{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}");
    Server::start(dir, &["--token", NATIVE_TOKEN, "--aws-credential", &credential, "--python", python])
}

/// Runs a client suite with the server's coordinates in its environment; fails with its
/// output unless it exits 0.
fn run_suite(what: &str, mut cmd: Command, server: &Server) {
    cmd.current_dir(repo_root())
        .env("GUST_AWS_ENDPOINT", &server.url)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_REGION", "us-east-1")
        .env("GUST_NATIVE_TOKEN", NATIVE_TOKEN)
        // Only these credentials: no profile, config file or instance metadata of the host.
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

#[test]
fn boto3_and_the_aws_cli_drive_the_lambda_api() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(dir.path(), &python);
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "pytest", "tests/aws", "-q", "-p", "no:cacheprovider"]);
    run_suite("the boto3 / AWS CLI suite (tests/aws)", cmd, &s);
}

#[test]
fn the_javascript_sdk_drives_the_lambda_api() {
    let python = python();
    let sdk = repo_root().join("tests/aws/node/node_modules/@aws-sdk/client-lambda");
    assert!(
        sdk.is_dir(),
        "{} is missing: run ./scripts/test (it runs npm ci --prefix tests/aws/node)",
        sdk.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(dir.path(), &python);
    let mut cmd = Command::new("node");
    cmd.arg("tests/aws/node/test.mjs");
    run_suite("the @aws-sdk/client-lambda suite (tests/aws/node)", cmd, &s);
}

#[test]
fn an_sdk_of_2023_drives_sqs_over_the_query_protocol() {
    let legacy = std::env::var("GUST_TEST_LEGACY_BOTO").expect(
        "GUST_TEST_LEGACY_BOTO is not set: run the suite with ./scripts/test (it installs boto3 1.28.0 \
         / botocore 1.31.0 into target/py-legacy-boto)",
    );
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(dir.path(), &python);
    let mut cmd = Command::new(&python);
    cmd.arg("tests/aws-legacy/sqs_query.py").env("PYTHONPATH", legacy);
    run_suite("SQS's query protocol from botocore 1.31.0 (tests/aws-legacy)", cmd, &s);
}
