//! The free-space guard: the store refuses new messages while the disk holding `data_dir`
//! has less free space than a reserve, so sled itself never runs out.
//!
//! Why a guard and not just sled's own error: sled 0.34 records the first IO error of its log
//! writer (ENOSPC included) as a global error and fails every later operation until the
//! database is opened again, so an engine that let sled fill the disk would answer AR until
//! restarted even after space came back. With the guard, a message that arrives while space
//! is short is answered AR/CR 207 (the sender keeps it and sends it again), nothing is
//! written, and the engine accepts again as soon as the space is back.

use super::StoreError;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one `statvfs` reading is trusted.
const RECHECK: Duration = Duration::from_millis(50);

/// Refuses writes while free space is under the reserve.
#[derive(Debug)]
pub struct SpaceGuard {
    dir: PathBuf,
    reserve: AtomicU64,
    /// When free space was last read, and what it was.
    last: Mutex<Option<(Instant, u64)>>,
}

impl SpaceGuard {
    /// A guard for the filesystem of `dir` with no reserve (it never refuses).
    pub fn new(dir: &Path) -> SpaceGuard {
        SpaceGuard {
            dir: dir.to_path_buf(),
            reserve: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }

    /// Sets the reserve in bytes; 0 turns the guard off.
    pub fn set_reserve(&self, bytes: u64) {
        self.reserve.store(bytes, Ordering::Relaxed);
    }

    /// Ok while at least the reserve is free (or free space cannot be read).
    ///
    /// # Errors
    ///
    /// [`StoreError::DiskFull`] when less than the reserve is free.
    pub fn check(&self) -> Result<(), StoreError> {
        let reserve = self.reserve.load(Ordering::Relaxed);
        if reserve == 0 {
            return Ok(());
        }
        let available = {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            match *last {
                Some((at, free)) if at.elapsed() < RECHECK => Some(free),
                _ => {
                    let free = crate::metrics::disk_available_bytes(&self.dir);
                    *last = free.map(|f| (Instant::now(), f));
                    free
                }
            }
        };
        match available {
            Some(available) if available < reserve => {
                Err(StoreError::DiskFull { available, reserve })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_refuses_under_the_reserve() {
        let dir = tempfile::tempdir().expect("tempdir");
        let g = SpaceGuard::new(dir.path());
        assert!(g.check().is_ok());
        g.set_reserve(u64::MAX);
        std::thread::sleep(RECHECK);
        match g.check() {
            Err(StoreError::DiskFull { reserve, .. }) => assert_eq!(reserve, u64::MAX),
            other => panic!("expected DiskFull, got {other:?}"),
        }
        g.set_reserve(1);
        std::thread::sleep(RECHECK);
        assert!(g.check().is_ok());
    }
}
