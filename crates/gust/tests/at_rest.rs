//! What gust leaves on disk is its own: a new data directory lets others only traverse it, and
//! the database, artifacts and compiled modules are readable by gust alone.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{fixture, wasm_config, Server};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

#[test]
fn the_data_dir_database_and_code_are_not_readable_by_others() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("new/data");
    let s = Server::start(&data, &[]);
    let f = s.deploy("echo", wasm_config(1000), fixture("echo"));
    assert_eq!(s.invoke("echo", None, b"{}", &[]).status(), 200);
    let sha = f["code_sha256"].as_str().unwrap();
    assert_eq!(mode(&data), 0o711, "others may only traverse the data dir");
    for file in ["gust.db", "gust.db-wal"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&data.join("artifacts")), 0o700);
    assert_eq!(mode(&data.join("artifacts").join(sha)), 0o600);
    assert_eq!(mode(&data.join("modules")), 0o700);
}
