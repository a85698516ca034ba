//! Content-addressed artifacts on the local filesystem: `<dir>/<sha256 hex>`.
//!
//! A write goes to a temporary file that is fsynced and renamed into place, then the directory
//! is fsynced, so a crash leaves either the whole artifact or none. Every read re-hashes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use parking_lot::RwLock;

use gust_store::{sha256_hex, Kind, Result, StoreError};

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn io_err(e: std::io::Error) -> StoreError {
    StoreError::Backend(format!("artifact store: {e}"))
}

/// A temporary file older than this is left over from a crash and removed by a collection.
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub(crate) struct BlobDir {
    dir: PathBuf,
    /// Shared by writers, exclusive for a collection: a `put` of an artifact that exists
    /// refreshes its time under the shared lock, so a collection that decided on the old time
    /// cannot delete it after the `put` has answered.
    collecting: Arc<RwLock<()>>,
}

/// What one collection of a blob directory removed.
#[derive(Debug, Default)]
pub(crate) struct Removed {
    pub artifacts: Vec<String>,
    pub bytes: u64,
}

impl BlobDir {
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).map_err(io_err)?;
        // Function code is the tenants' property: only gust reads it.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err)?;
        Ok(BlobDir { dir: dir.to_path_buf(), collecting: Arc::default() })
    }

    /// Blocking: call from a blocking thread.
    pub(crate) fn put(&self, bytes: &[u8]) -> Result<String> {
        let sha = sha256_hex(bytes);
        let path = self.dir.join(&sha);
        let _writing = self.collecting.read();
        if path.exists() {
            // Stored again: the collection grace starts over (the upload's config write follows).
            std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(SystemTime::now()))
                .map_err(io_err)?;
            return Ok(sha);
        }
        let tmp = self.dir.join(format!(".tmp-{sha}-{}", uuid::Uuid::new_v4()));
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            drop(file);
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            // A full disk (or any failure) leaves no partial file behind.
            let _ = std::fs::remove_file(&tmp);
            return Err(gust_store::space::io_error("artifact store", e));
        }
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io_err)?;
        Ok(sha)
    }

    /// Blocking: call from a blocking thread.
    pub(crate) fn get(&self, sha: &str) -> Result<Bytes> {
        let not_found =
            || StoreError::NotFound { kind: Kind::Artifact, name: sha.chars().take(80).collect() };
        if !is_sha256_hex(sha) {
            return Err(not_found());
        }
        let bytes = match std::fs::read(self.dir.join(sha)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err(io_err(e)),
        };
        if sha256_hex(&bytes) != sha {
            return Err(StoreError::Corrupt(sha.to_string()));
        }
        Ok(Bytes::from(bytes))
    }

    /// Whether an artifact is stored (no read, no hash). Blocking.
    pub(crate) fn exists(&self, sha: &str) -> bool {
        is_sha256_hex(sha) && self.dir.join(sha).is_file()
    }

    /// Removes up to `limit` artifacts last stored before `older_than` for which `garbage`
    /// says yes, and temporary files a crash left behind. Exclusive with `put`. Blocking: the
    /// caller holds whatever makes `garbage`'s answer current (SQLite: the writer).
    pub(crate) fn remove_garbage(
        &self, garbage: impl Fn(&str) -> bool, older_than: SystemTime, limit: usize,
    ) -> Result<Removed> {
        let _exclusive = self.collecting.write();
        let mut removed = Removed::default();
        for entry in std::fs::read_dir(&self.dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata() else { continue };
            let modified = meta.modified().map_err(io_err)?;
            if name.starts_with(".tmp-") {
                if modified.elapsed().is_ok_and(|age| age > STALE_TEMP_AGE) {
                    let _ = std::fs::remove_file(entry.path());
                }
                continue;
            }
            if removed.artifacts.len() >= limit
                || !is_sha256_hex(&name)
                || modified >= older_than
                || !garbage(&name)
            {
                continue;
            }
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    removed.bytes += meta.len();
                    removed.artifacts.push(name);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(e)),
            }
        }
        if !removed.artifacts.is_empty() {
            std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io_err)?;
        }
        removed.artifacts.sort();
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small tmpfs mounted on a temp dir (root only), unmounted when dropped.
    struct Tmpfs(tempfile::TempDir);

    impl Tmpfs {
        fn mount(size: &str) -> Option<Tmpfs> {
            let dir = tempfile::tempdir().ok()?;
            let mounted = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            mounted.then_some(Tmpfs(dir))
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0.path()).status();
        }
    }

    #[test]
    fn a_full_disk_refuses_an_artifact_and_leaves_no_partial_file() {
        let Some(fs) = Tmpfs::mount("1m") else {
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        };
        let blobs = BlobDir::open(&fs.0.path().join("artifacts")).unwrap();
        let big = vec![7u8; 2 << 20];
        match blobs.put(&big) {
            Err(StoreError::Full(m)) => assert!(m.contains("No space left"), "{m}"),
            other => panic!("expected Full, got {other:?}"),
        }
        let left: Vec<_> = std::fs::read_dir(fs.0.path().join("artifacts")).unwrap().collect();
        assert!(left.is_empty(), "a partial artifact was left behind: {left:?}");
        // The same store takes what fits, at once.
        let sha = blobs.put(b"small").unwrap();
        assert_eq!(blobs.get(&sha).unwrap().as_ref(), b"small");
    }
}
