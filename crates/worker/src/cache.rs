//! Garbage collection of a worker's code caches: unpacked task roots (`tasks/<sha256>`) and
//! compiled modules (`modules/<sha256>-<engine>.cwasm`).
//!
//! What is kept: code the caller names (what the store, or the worker's snapshot, still
//! references), code in use (an invocation running or being prepared holds its code from
//! before it looks at the disk until it ends; a warm process environment runs in its task
//! root), and code used, prepared or unpacked within the grace. Everything else goes, and a
//! compiled module leaves the in-memory cache with its file.
//!
//! The decision and the removal happen under the lock that starting a use of code takes, so
//! nothing can start using code between the two; a task root is renamed away under it (one
//! atomic step, after which an unpack of the same code makes a fresh one) and deleted after.
//! Must not: touch anything that is not named like cached code (other files are left alone).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::Worker;

/// A temporary entry (an unpack or compilation in progress) older than this was left by a
/// crash; a collection removes it.
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

/// What one collection of a worker's code caches removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCollected {
    pub task_roots: u64,
    pub modules: u64,
    pub bytes: u64,
}

/// Per code hash: invocations or preparations using it now, and when it was last used.
#[derive(Debug)]
pub(crate) struct CodeUse {
    running: usize,
    last_used: Instant,
}

pub(crate) type CodeUses = parking_lot::Mutex<HashMap<String, CodeUse>>;

/// Holds code in use until dropped; a collection skips it meanwhile.
pub(crate) struct InUse<'a> {
    uses: &'a CodeUses,
    sha256: &'a str,
}

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        if let Some(u) = self.uses.lock().get_mut(self.sha256) {
            u.running -= 1;
            u.last_used = Instant::now();
        }
    }
}

/// Marks `sha256` in use (before anything looks for it on disk).
/// (On every warm invocation: no allocation once the code is known here.)
pub(crate) fn hold<'a>(uses: &'a CodeUses, sha256: &'a str) -> InUse<'a> {
    let now = Instant::now();
    let mut map = uses.lock();
    match map.get_mut(sha256) {
        Some(u) => {
            u.running += 1;
            u.last_used = now;
        }
        None => {
            map.insert(sha256.to_string(), CodeUse { running: 1, last_used: now });
        }
    }
    InUse { uses, sha256 }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether a temporary entry named `.tmp-<sha>-<pid>-<n>` belongs to another (dead) process and
/// is old: one of this process may be in progress.
fn stale_temp(name: &str, modified: SystemTime) -> bool {
    let ours = format!("-{}-", std::process::id());
    name.starts_with(".tmp-")
        && !name.contains(&ours)
        && modified.elapsed().is_ok_and(|age| age > STALE_TEMP_AGE)
}

/// Bytes under `path` (not following links).
fn size_of(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path).map(|entries| entries.flatten().map(|e| size_of(&e.path())).sum()).unwrap_or(0)
}

static NEXT_TRASH: AtomicU64 = AtomicU64::new(0);

impl Worker {
    /// Removes cached code not in `keep`, not in use and not used, prepared or unpacked within
    /// `grace`. Blocking (file system work): call it from a blocking thread.
    pub fn collect_cache(&self, keep: &HashSet<String>, grace: Duration) -> CacheCollected {
        let mut collected = CacheCollected::default();
        let cutoff = SystemTime::now().checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut trash: Vec<PathBuf> = Vec::new();
        {
            // Held until every decision is carried out: a use of code starts under it.
            let uses = self.code_use.lock();
            // Warm process environments, by their key `function:resolved:sha256`.
            let warm: HashSet<String> = self
                .process
                .warm_keys()
                .into_iter()
                .filter_map(|key| key.rsplit(':').next().map(str::to_string))
                .collect();
            let now = Instant::now();
            let needed = |sha: &str| {
                keep.contains(sha)
                    || warm.contains(sha)
                    || uses.get(sha).is_some_and(|u| u.running > 0 || now.duration_since(u.last_used) < grace)
            };
            for (name, path, modified) in entries(&self.tasks_dir) {
                if name.starts_with(".gc-") {
                    // A collection's leftover (killed before it deleted it): nobody uses it.
                    trash.push(path);
                } else if stale_temp(&name, modified) {
                    trash.push(path);
                } else if is_sha256_hex(&name) && modified < cutoff && !needed(&name) {
                    let n = NEXT_TRASH.fetch_add(1, Ordering::Relaxed);
                    let away = self.tasks_dir.join(format!(".gc-{name}-{}-{n}", std::process::id()));
                    if std::fs::rename(&path, &away).is_ok() {
                        collected.task_roots += 1;
                        trash.push(away);
                    }
                }
            }
            for (name, path, modified) in entries(&self.modules_dir) {
                if stale_temp(&name, modified) {
                    collected.bytes += size_of(&path);
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                let Some(sha) = name.strip_suffix(".cwasm").and_then(|n| n.get(..64)) else { continue };
                if !is_sha256_hex(sha) || modified >= cutoff || needed(sha) {
                    continue;
                }
                let size = size_of(&path);
                if std::fs::remove_file(&path).is_ok() {
                    self.wasm.evict(sha);
                    self.warm.lock().remove(sha);
                    collected.modules += 1;
                    collected.bytes += size;
                }
            }
            // Forget what is neither in use nor recent, so the map stays as small as the cache.
            drop(uses);
            self.code_use.lock().retain(|_, u| u.running > 0 || now.duration_since(u.last_used) < grace);
        }
        for path in trash {
            collected.bytes += size_of(&path);
            // remove_dir_all does not follow the links it meets (it unlinks them).
            if let Err(e) = std::fs::remove_dir_all(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a collected task root");
            }
        }
        collected
    }
}

/// `(name, path, modified)` of every entry of `dir` (none if it cannot be read).
fn entries(dir: &Path) -> Vec<(String, PathBuf, SystemTime)> {
    let Ok(read) = std::fs::read_dir(dir) else { return Vec::new() };
    read.flatten()
        .filter_map(|e| {
            let modified = e.metadata().ok()?.modified().ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), e.path(), modified))
        })
        .collect()
}
