//! The repository's own test inputs, found from this crate's place in the workspace (so a test
//! of any crate, and the bench, read the same files whatever their working directory).

use std::path::PathBuf;

/// The workspace root (the directory holding `tests/` and `examples/`).
pub fn repo_root() -> PathBuf {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    PathBuf::from(root).canonicalize().unwrap_or_else(|e| panic!("the workspace root {root}: {e}"))
}

/// The bytes of `tests/fixtures/{file}` (e.g. `bootstrap.py`, the Lambda Runtime API bootstrap).
pub fn fixture_file(file: &str) -> Vec<u8> {
    let path = repo_root().join("tests/fixtures").join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// The wasm guest `tests/fixtures/{name}.wat`, compiled from its text.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = repo_root().join(format!("tests/fixtures/{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// The committed build of the example `examples/{name}/{name}.wasm`.
pub fn example(name: &str) -> Vec<u8> {
    let path = repo_root().join(format!("examples/{name}/{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("example {}: {e}", path.display()))
}
