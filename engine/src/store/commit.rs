//! Group commit: many writers wait for one flush and one fsync.
//!
//! A writer finishes its sled writes, then calls [`GroupCommit::commit`], which queues a
//! waiter. The committer thread takes every queued waiter, runs one sled flush, then one
//! `fdatasync` of the files sled wrote ([`DiskSync`]), and only then answers them all.
//! Writers that arrive during a flush wait for the next one, so the batch grows with the
//! load and an idle engine flushes at once.
//!
//! Why the extra sync: sled 0.34.7 ends its flush in `sync_file_range`, which writes the
//! dirty pages but does not persist the file's size or extents nor flush the disk's cache.
//! It survives a crash of the process, not a power cut. The `fdatasync` here is what makes
//! "flushed" mean "on disk".
//!
//! A failed fdatasync poisons the committer: every later commit fails until a restart (see
//! `run`). The committer is a plain thread: flush and fsync block, and a dedicated thread
//! keeps them off the async workers and the blocking pool alike.

use crate::metrics::Metrics;
use crate::store::StoreError;
use prometheus::{Histogram, IntCounter};
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

/// When a positive answer may be sent (`[engine] durability`; the store's own type, so the
/// store does not depend on the configuration).
#[derive(Debug, Clone, Copy, Default, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// After the group-committed flush and fdatasync that cover the message.
    #[default]
    Fsync,
    /// After the write into the store, before it reaches the disk. Loses messages on a crash
    /// or power cut: for tests only (logged as a warning at start).
    Os,
}

type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// Handle to the committer thread.
#[derive(Clone)]
pub struct GroupCommit {
    tx: Option<mpsc::UnboundedSender<Waiter>>,
}

/// What the committer calls, in this order, before it answers a batch.
pub(crate) trait Durable: Send + 'static {
    /// Writes sled's in-memory log to its files (sled's own flush).
    fn flush(&mut self) -> Result<(), StoreError>;
    /// Makes what the flush wrote durable.
    fn sync(&mut self) -> io::Result<()>;
}

/// The metrics the committer reports.
pub(crate) struct CommitMetrics {
    duration: Histogram,
    batch_size: Histogram,
    errors: IntCounter,
    fsyncs: IntCounter,
}

impl CommitMetrics {
    pub(crate) fn of(metrics: &Metrics) -> CommitMetrics {
        CommitMetrics {
            duration: metrics.commit_duration.clone(),
            batch_size: metrics.commit_batch.clone(),
            errors: metrics.store_errors.with_label_values(&["flush"]),
            fsyncs: metrics.store_fsyncs.clone(),
        }
    }
}

impl GroupCommit {
    /// Starts the committer for the sled database `db` in `sled_dir`.
    ///
    /// With [`Durability::Os`] nothing is awaited: answers go out before the disk has the
    /// message. That is for tests only, and says so in the log and in
    /// `switchboard_store_fsync_enabled`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled's files cannot be opened for syncing.
    pub fn start(
        db: sled::Db,
        sled_dir: &Path,
        durability: Durability,
        metrics: &Metrics,
    ) -> Result<GroupCommit, StoreError> {
        if durability == Durability::Os {
            metrics.store_fsync_enabled.set(0);
            warn!(
                "durability = \"os\": messages are answered before they are on disk; a crash or power cut loses them. Never use this in production."
            );
            return Ok(GroupCommit { tx: None });
        }
        metrics.store_fsync_enabled.set(1);
        let sync = DiskSync::open(sled_dir)
            .map_err(|e| StoreError::Sled(format!("cannot open the store files for fsync: {e}")))?;
        Ok(Self::spawn(
            SledDurable { db, sync },
            CommitMetrics::of(metrics),
        ))
    }

    /// Runs the committer over any [`Durable`] (the store's, or a test's).
    pub(crate) fn spawn<D: Durable>(durable: D, metrics: CommitMetrics) -> GroupCommit {
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("sb-committer".into())
            .spawn(move || run(durable, rx, metrics))
            .expect("the OS starts the committer thread");
        GroupCommit { tx: Some(tx) }
    }

    /// Waits for a flush and fsync that cover every write completed before this call.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when that flush or fsync failed or the committer is gone.
    pub async fn commit(&self) -> Result<(), StoreError> {
        let Some(tx) = &self.tx else { return Ok(()) };
        let (done, wait) = oneshot::channel();
        tx.send(done)
            .map_err(|_| StoreError::Sled("store committer stopped".into()))?;
        wait.await
            .map_err(|_| StoreError::Sled("store committer stopped".into()))?
    }
}

fn run<D: Durable>(mut durable: D, mut rx: mpsc::UnboundedReceiver<Waiter>, m: CommitMetrics) {
    let mut batch = Vec::with_capacity(1024);
    // After a failed fdatasync the kernel may have dropped the pages it could not write
    // and a later fdatasync can succeed without them: nothing is answered positively
    // again until a restart has read back what the disk really holds.
    let mut poisoned: Option<StoreError> = None;
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while let Ok(w) = rx.try_recv() {
            batch.push(w);
        }
        let started = Instant::now();
        let result = match &poisoned {
            Some(e) => Err(e.clone()),
            None => durable.flush().and_then(|()| {
                durable.sync().map_err(|e| {
                    let e = StoreError::Sled(format!(
                        "fdatasync of the store failed ({e}); restart the engine once the disk is checked"
                    ));
                    poisoned = Some(e.clone());
                    e
                })
            }),
        };
        m.duration.observe(started.elapsed().as_secs_f64());
        m.batch_size.observe(batch.len() as f64);
        match &result {
            Ok(()) => m.fsyncs.inc(),
            Err(e) => {
                m.errors.inc();
                error!(error = %e, waiting = batch.len(), "Store flush failed; answering the waiting messages negatively.");
            }
        }
        for waiter in batch.drain(..) {
            let _ = waiter.send(result.clone());
        }
    }
}

/// The store's [`Durable`]: sled's flush, then [`DiskSync`].
struct SledDurable {
    db: sled::Db,
    sync: DiskSync,
}

impl Durable for SledDurable {
    fn flush(&mut self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(StoreError::from)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sync.sync()
    }
}

/// The files sled 0.34 writes, and the syncing they need after a flush.
///
/// - `db`, the log: rewritten in place and grown; `fdatasync` persists its data and size.
/// - `blobs/<lsn>`: values too large for a log segment are written as new files, with no
///   fsync of sled's own. Each new one is `fsync`ed once, and the folder after it, before
///   the flush that points at it is reported durable.
/// - `snap.*`: sled fsyncs its snapshots itself, and recovers from the log without them.
/// - `conf` and the folders: synced once at open.
pub(crate) struct DiskSync {
    db: File,
    blobs: PathBuf,
    synced_blobs: HashSet<OsString>,
}

impl DiskSync {
    /// Opens sled's files in `sled_dir` and syncs what an earlier run may have left unsynced
    /// (a process killed before the OS wrote its pages), so that what was read is durable.
    pub(crate) fn open(sled_dir: &Path) -> io::Result<DiskSync> {
        let db = File::open(sled_dir.join("db"))?;
        db.sync_all()?;
        if let Ok(conf) = File::open(sled_dir.join("conf")) {
            conf.sync_all()?;
        }
        let mut sync = DiskSync {
            db,
            blobs: sled_dir.join("blobs"),
            synced_blobs: HashSet::new(),
        };
        sync.sync_new_blobs()?;
        sync_dir(sled_dir)?;
        if let Some(parent) = sled_dir.parent() {
            sync_dir(parent)?;
        }
        Ok(sync)
    }

    /// One fdatasync of the log, and an fsync of every blob not synced before.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        self.db.sync_data()?;
        self.sync_new_blobs()
    }

    fn sync_new_blobs(&mut self) -> io::Result<()> {
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut present = HashSet::new();
        let mut new = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !self.synced_blobs.contains(&name) {
                match File::open(entry.path()) {
                    Ok(f) => f.sync_all()?,
                    // Rewritten and removed by sled since the listing: nothing to keep.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                new = true;
            }
            present.insert(name);
        }
        if new {
            sync_dir(&self.blobs)?;
        }
        self.synced_blobs = present;
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// Records the calls; `sync` holds until the test lets it go.
    struct Probe {
        flushed: Arc<AtomicUsize>,
        synced: Arc<AtomicUsize>,
        release: Arc<AtomicBool>,
        fail_sync: bool,
    }

    impl Durable for Probe {
        fn flush(&mut self) -> Result<(), StoreError> {
            self.flushed.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn sync(&mut self) -> io::Result<()> {
            while !self.release.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            if self.fail_sync {
                return Err(io::Error::other("injected"));
            }
            self.synced.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn probe(fail_sync: bool) -> (Probe, Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<AtomicBool>) {
        let flushed = Arc::new(AtomicUsize::new(0));
        let synced = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(AtomicBool::new(false));
        (
            Probe {
                flushed: flushed.clone(),
                synced: synced.clone(),
                release: release.clone(),
                fail_sync,
            },
            flushed,
            synced,
            release,
        )
    }

    #[tokio::test]
    async fn no_waiter_is_answered_before_the_fsync() {
        let m = Metrics::new("t");
        let (p, flushed, synced, release) = probe(false);
        let commit = GroupCommit::spawn(p, CommitMetrics::of(&m));
        let waiters: Vec<_> = (0..16)
            .map(|_| {
                let c = commit.clone();
                tokio::spawn(async move { c.commit().await })
            })
            .collect();
        // The flush has run and the sync is held: nobody may have been answered.
        while flushed.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        tokio::task::yield_now().await;
        assert!(waiters.iter().all(|w| !w.is_finished()));
        release.store(true, Ordering::SeqCst);
        for w in waiters {
            w.await.expect("task").expect("committed");
        }
        let syncs = synced.load(Ordering::SeqCst);
        assert!(
            syncs >= 1 && syncs <= flushed.load(Ordering::SeqCst),
            "one sync per flush"
        );
        assert!(
            syncs < 16,
            "waiters share a sync: {syncs} syncs for 16 waiters"
        );
        assert_eq!(m.store_fsyncs.get() as usize, syncs);
    }

    #[tokio::test]
    async fn a_failed_fsync_answers_every_waiter_negatively() {
        let m = Metrics::new("t");
        let (p, _, synced, release) = probe(true);
        release.store(true, Ordering::SeqCst);
        let commit = GroupCommit::spawn(p, CommitMetrics::of(&m));
        assert!(commit.commit().await.is_err());
        // Poisoned: later batches fail too, without another try.
        assert!(commit.commit().await.is_err());
        assert_eq!(synced.load(Ordering::SeqCst), 0);
        assert_eq!(m.store_fsyncs.get(), 0);
    }

    #[test]
    fn new_blobs_are_synced_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("db"), b"log").expect("db");
        std::fs::create_dir(dir.path().join("blobs")).expect("blobs");
        let mut s = DiskSync::open(dir.path()).expect("open");
        assert!(s.synced_blobs.is_empty());
        std::fs::write(dir.path().join("blobs/17"), b"large value").expect("blob");
        s.sync().expect("sync");
        assert!(s.synced_blobs.contains(&OsString::from("17")));
        std::fs::remove_file(dir.path().join("blobs/17")).expect("rm");
        s.sync().expect("sync");
        assert!(s.synced_blobs.is_empty(), "removed blobs are forgotten");
    }
}
