//! Free space on the disk under a store's data directory, and the reserve kept on it for
//! finishing work already acknowledged.
//!
//! A full disk must not lose what was acknowledged, and the work acknowledged needs a little
//! room to finish (a claim, lease renewals, a completion are all writes). So a store refuses
//! *new* work (deploys, code, async invocations, idempotency-key reservations, records written
//! behind) with [`StoreError::Full`] while free space is below its reserve, and lets the writes
//! that finish acknowledged work spend the reserve. A write that still meets ENOSPC or EDQUOT
//! is refused the same way and leaves nothing half written (SQLite rolls its transaction back;
//! a partly written file is removed).
//!
//! Looking costs one `statvfs`, at most once per [`SPACE_CHECK_INTERVAL`], so admission pays a
//! clock read and an uncontended lock, not a syscall.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::{Result, StoreError};

/// Free space the embedded store keeps for finishing acknowledged work: below it, new work is
/// refused. 64 MiB holds the completions of a few thousand invocations with large results and
/// a WAL that has grown to its checkpoint size; at most [`MAX_RESERVE_PERCENT`] of the disk.
pub const DEFAULT_DISK_RESERVE_BYTES: u64 = 64 << 20;
/// The reserve is at most this share (percent) of the filesystem, so a small disk is not all
/// reserve.
pub const MAX_RESERVE_PERCENT: u64 = 2;
/// How long one look at free space is trusted: new work is refused (and admitted again after
/// space is freed) within this much of the disk crossing the reserve.
pub const SPACE_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Whether an I/O error means the disk (or the user's quota on it) is full.
pub fn is_out_of_space(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    matches!(Errno::from_io_error(e), Some(Errno::NOSPC | Errno::DQUOT))
}

/// The store error for an I/O error: [`StoreError::Full`] when the disk is full, else a
/// backend error. `what` says what was being written.
pub fn io_error(what: &str, e: std::io::Error) -> StoreError {
    if is_out_of_space(&e) {
        StoreError::Full(format!("{what}: {e}"))
    } else {
        StoreError::Backend(format!("{what}: {e}"))
    }
}

/// What one look at the filesystem found.
#[derive(Debug, Clone, Copy)]
struct Look {
    at: Instant,
    free: u64,
    reserve: u64,
}

/// Free space under one directory, against a reserve.
#[derive(Debug)]
pub struct DiskSpace {
    dir: PathBuf,
    /// The reserve asked for; the one applied is capped by the filesystem's size.
    reserve: u64,
    last: Mutex<Option<Look>>,
}

impl DiskSpace {
    pub fn new(dir: &Path, reserve: u64) -> Self {
        DiskSpace { dir: dir.to_path_buf(), reserve, last: Mutex::new(None) }
    }

    /// Free bytes (for an unprivileged user) and the reserve applied, looked at no more often
    /// than [`SPACE_CHECK_INTERVAL`]. A filesystem that cannot be looked at counts as roomy:
    /// the writes themselves still report a full disk.
    fn look(&self) -> Look {
        let mut last = self.last.lock();
        if let Some(look) = *last {
            if look.at.elapsed() < SPACE_CHECK_INTERVAL {
                return look;
            }
        }
        let look = match rustix::fs::statvfs(&self.dir) {
            Ok(st) => {
                let size = st.f_blocks.saturating_mul(st.f_frsize);
                Look {
                    at: Instant::now(),
                    free: st.f_bavail.saturating_mul(st.f_frsize),
                    reserve: self.reserve.min(size / 100 * MAX_RESERVE_PERCENT),
                }
            }
            Err(_) => Look { at: Instant::now(), free: u64::MAX, reserve: 0 },
        };
        *last = Some(look);
        look
    }

    /// `Err(Full)` while free space is below the reserve: new work must wait.
    pub fn admit(&self) -> Result<()> {
        let look = self.look();
        if look.free < look.reserve {
            return Err(StoreError::Full(format!(
                "{} free in {}, below the {} kept for finishing work already accepted",
                mib(look.free),
                self.dir.display(),
                mib(look.reserve)
            )));
        }
        Ok(())
    }

    /// Whether free space is below the reserve right now (within the look's interval).
    pub fn is_low(&self) -> bool {
        let look = self.look();
        look.free < look.reserve
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Lets a repeated warning through at most once per interval, counting the ones it held back,
/// so a condition that lasts (a full disk) is said once in a while rather than at the rate it
/// is met.
#[derive(Debug)]
pub struct LogEvery {
    every: Duration,
    start: Instant,
    /// Milliseconds after `start` of the last line let through, plus one (0: none yet).
    last: AtomicU64,
    held: AtomicU64,
}

impl LogEvery {
    pub fn new(every: Duration) -> Self {
        LogEvery { every, start: Instant::now(), last: AtomicU64::new(0), held: AtomicU64::new(0) }
    }

    /// `Some(lines held back since the last one)` when a line may be written now.
    pub fn allow(&self) -> Option<u64> {
        let now = self.start.elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= self.every.as_millis() as u64;
        if due && self.last.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            return Some(self.held.swap(0, Ordering::Relaxed));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_space_errors_are_told_apart() {
        let nospc = std::io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error());
        let dquot = std::io::Error::from_raw_os_error(rustix::io::Errno::DQUOT.raw_os_error());
        let eio = std::io::Error::from_raw_os_error(rustix::io::Errno::IO.raw_os_error());
        assert!(is_out_of_space(&nospc) && is_out_of_space(&dquot));
        assert!(!is_out_of_space(&eio));
        assert!(!is_out_of_space(&std::io::Error::other("no space left on device")));
        assert!(matches!(io_error("artifact", nospc), StoreError::Full(m) if m.starts_with("artifact: ")));
        assert!(matches!(io_error("artifact", eio), StoreError::Backend(_)));
    }

    #[test]
    fn the_reserve_is_capped_by_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        assert!(DiskSpace::new(dir.path(), 0).admit().is_ok(), "nothing reserved: always admitted");
        // A reserve larger than any disk is capped at a share of it, so it is not all reserve.
        let look = DiskSpace::new(dir.path(), u64::MAX).look();
        let st = rustix::fs::statvfs(dir.path()).unwrap();
        assert_eq!(look.reserve, st.f_blocks * st.f_frsize / 100 * MAX_RESERVE_PERCENT);
    }

    #[test]
    fn new_work_is_refused_below_the_reserve_and_admitted_above_it() {
        let dir = tempfile::tempdir().unwrap();
        let space = DiskSpace::new(dir.path(), 1 << 20);
        *space.last.lock() = Some(Look { at: Instant::now(), free: 4096, reserve: 1 << 20 });
        assert!(space.is_low());
        match space.admit() {
            Err(StoreError::Full(m)) => assert!(m.contains(&dir.path().display().to_string()), "{m}"),
            other => panic!("expected Full, got {other:?}"),
        }
        *space.last.lock() = Some(Look { at: Instant::now(), free: 2 << 20, reserve: 1 << 20 });
        assert!(!space.is_low());
        assert!(space.admit().is_ok());
        // A look is trusted only for a moment: then the filesystem is asked again.
        *space.last.lock() = Some(Look { at: Instant::now() - SPACE_CHECK_INTERVAL, free: 0, reserve: 1 });
        assert!(space.look().at.elapsed() < SPACE_CHECK_INTERVAL);
    }

    #[test]
    fn repeated_warnings_are_let_through_once_per_interval() {
        let quiet = LogEvery::new(Duration::from_millis(200));
        assert_eq!(quiet.allow(), Some(0));
        for _ in 0..1000 {
            assert_eq!(quiet.allow(), None);
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(quiet.allow(), Some(1000), "the next line says how many were held back");
        assert_eq!(quiet.allow(), None);
    }
}
