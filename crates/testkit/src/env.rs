//! What the test machine provides, as `./scripts/test` and `./scripts/with-postgres` prepare it:
//! the interpreters and runtime clients of the process runtimes, the throwaway PostgreSQL, and
//! whether the tests run as root.

/// The Python interpreter of `target/py-venv` (`GUST_TEST_PYTHON`), with awslambdaric, boto3,
/// the AWS CLI and pytest installed; panics saying how to get it when unset.
pub fn python() -> String {
    std::env::var("GUST_TEST_PYTHON").expect(
        "GUST_TEST_PYTHON is not set: run the suite with ./scripts/test (it installs awslambdaric, \
         boto3, awscli and pytest into target/py-venv)",
    )
}

/// AWS's Node.js runtime interface client (`GUST_TEST_NODE_RIC`, the `aws-lambda-ric` package
/// directory); panics saying how to get it when unset.
pub fn node_ric() -> String {
    std::env::var("GUST_TEST_NODE_RIC").expect(
        "GUST_TEST_NODE_RIC is not set: run the suite with ./scripts/test (it installs aws-lambda-ric)",
    )
}

/// The URL of the throwaway PostgreSQL (`GUST_TEST_POSTGRES`); panics saying how to get it when
/// unset, for tests that are about PostgreSQL.
pub fn postgres() -> String {
    std::env::var("GUST_TEST_POSTGRES")
        .expect("GUST_TEST_POSTGRES is not set: run the suite with ./scripts/test (it starts PostgreSQL)")
}

/// The URL of the throwaway PostgreSQL, or `None` after saying the test is skipped, for tests
/// that run on PostgreSQL only as one more shape.
pub fn postgres_or_skip() -> Option<String> {
    let url = std::env::var("GUST_TEST_POSTGRES").ok();
    if url.is_none() {
        eprintln!("skipped: GUST_TEST_POSTGRES is not set (run under ./scripts/with-postgres)");
    }
    url
}

/// A PostgreSQL schema name of this test's own (`{tag}_{pid}_{nanos}`): tests and runs that
/// share the database never share a schema.
pub fn unique_schema(tag: &str) -> String {
    let nanos = std::time::UNIX_EPOCH.elapsed().expect("the clock is after 1970").as_nanos();
    format!("{tag}_{}_{nanos}", std::process::id())
}

/// Whether this process runs as root (effective uid 0), as gust's test machines do.
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective =
        status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|ids| ids.split_whitespace().nth(1));
    effective == Some("0")
}
