//! Test support shared by gust's crates (tests and the bench), so that each helper is written
//! once:
//! - the repository's fixtures and examples ([`fixture`], [`fixture_file`], [`example`]);
//! - generated WebAssembly modules whose size or compile cost is known, so every crate measures
//!   and attacks the same thing ([`large_module`], [`costly_to_compile`]), and
//!   [`with_custom_section`] to make code new bytes;
//! - child processes killed when dropped ([`process::Process`]), [`wait_until`], and [`metric`]
//!   to read `/metrics`;
//! - what the test machine provides: [`python`], [`node_ric`], [`postgres`], [`is_root`];
//! - with the `zip` feature, zip packages (`zip`, `zip_with_links`);
//! - with the `sqlite` feature, a store in a temporary directory (`TempSqlite`).
//!
//! It depends on no service or API crate, so any of them can use it as a dev-dependency
//! without a cycle; and it knows nothing of gust's HTTP API (that lives with the black-box
//! tests, `crates/gust/tests/common`).

mod env;
mod files;
#[cfg(feature = "zip")]
mod package;
pub mod process;
#[cfg(feature = "sqlite")]
mod sqlite;
mod wasm;

use std::time::{Duration, Instant};

pub use env::{is_root, node_ric, postgres, postgres_or_skip, python, unique_schema};
pub use files::{example, fixture, fixture_file, repo_root};
#[cfg(feature = "zip")]
pub use package::{zip, zip_with_links};
#[cfg(feature = "sqlite")]
pub use sqlite::TempSqlite;
pub use wasm::{costly_to_compile, large_module, leb128, with_custom_section};

/// Polls `ok` every 50 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of the counter or gauge `name` in a Prometheus text exposition (`/metrics`).
pub fn metric(exposition: &str, name: &str) -> Option<u64> {
    exposition.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
