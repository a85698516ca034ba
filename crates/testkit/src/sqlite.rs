//! A real SQLite store in a temporary directory, for tests that need persistence but not a
//! server process.

use std::sync::Arc;

use gust_store_sqlite::{SqliteOptions, SqliteStore};

/// A SQLite store in a fresh temporary directory, deleted when this is dropped (keep it alive
/// as long as the store is used).
pub struct TempSqlite {
    pub store: Arc<SqliteStore>,
    dir: tempfile::TempDir,
}

impl TempSqlite {
    /// Opens a store without fsync (tests need no durability against power loss) and without
    /// a disk reserve (a nearly full test machine must not refuse work).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let opts = SqliteOptions { fsync_every_commit: false, disk_reserve_bytes: 0 };
        let store = Arc::new(SqliteStore::open(dir.path(), opts).expect("open a SQLite store"));
        TempSqlite { store, dir }
    }

    /// The directory holding the database and the artifacts.
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Default for TempSqlite {
    fn default() -> Self {
        Self::new()
    }
}
