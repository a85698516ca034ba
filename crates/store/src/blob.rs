//! Content-addressed artifacts on the local filesystem: `<dir>/<sha256 hex>`.
//!
//! A write goes to a temporary file that is fsynced and renamed into place, then the directory
//! is fsynced, so a crash leaves either the whole artifact or none. Every read re-hashes.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::{Kind, Result, StoreError};

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn io_err(e: std::io::Error) -> StoreError {
    StoreError::Backend(format!("artifact store: {e}"))
}

#[derive(Debug, Clone)]
pub(crate) struct BlobDir {
    dir: PathBuf,
}

impl BlobDir {
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).map_err(io_err)?;
        // Function code is the tenants' property: only gust reads it.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err)?;
        Ok(BlobDir { dir: dir.to_path_buf() })
    }

    /// Blocking: call from a blocking thread.
    pub(crate) fn put(&self, bytes: &[u8]) -> Result<String> {
        let sha = sha256_hex(bytes);
        let path = self.dir.join(&sha);
        if path.exists() {
            return Ok(sha);
        }
        let tmp = self.dir.join(format!(".tmp-{sha}-{}", uuid::Uuid::new_v4()));
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err)?;
        file.write_all(bytes).map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io_err)?;
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
}
