//! The free-space guard: every store write is refused while the disk holding `data_dir` has
//! less free space than a reserve (`min_free_disk_bytes`), so sled itself never runs out.
//!
//! Why a guard and not just sled's own error: sled 0.34 records the first IO error of its log
//! writer (ENOSPC included) as a global error and fails every later operation until the
//! database is opened again, so an engine that let sled fill the disk would answer AR until
//! restarted even after space came back. With the guard, nothing is written while space is
//! short, and every path goes on by itself once it is back.
//!
//! What each write path does when the reserve is reached ([`WritePath`]):
//!
//! | path | writes | when refused |
//! |---|---|---|
//! | `ingest` | message record, raw bytes, indexes, outbox items, dedup claim | the sender gets AR/CR 207 or HTTP 503 and sends again; nothing is stored |
//! | `delivery` | attempts, retry schedule, delivered/dead-letter outcome | the worker starts no delivery while the reserve is reached, and keeps an outcome already received in memory, writing it again every second until it is stored (never sent twice for want of space) |
//! | `booking` | Latrexa booking revisions, their `id_map` entries and record status | the booking worker waits before each step (no SIU sent, no confirm or reject) and retries each write until it is stored; an unreadable booking is noted the next time Latrexa lists it |
//! | `operator` | reprocess, dead-letter retry and discard | the admin API answers 503 `disk_full`; nothing changed, the operator tries again |
//! | `status` | the answer recorded on a message (`ack = "on_delivery"`) | refused; the caller logs it and the message keeps its earlier answer |
//! | `audit` | audit records (operator actions, reloads, retention passes) | skipped with a warning; the action itself was done |
//!
//! Retention removes records and is not refused: removing is how space comes back (its audit
//! record is an `audit` write like any other). Every refusal is counted in
//! `switchboard_store_reserve_refusals_total{path}`; the guard logs once when the reserve is
//! reached and once when space is back.

use super::StoreError;
use prometheus::IntCounterVec;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// How long one `statvfs` reading is trusted.
const RECHECK: Duration = Duration::from_millis(50);

/// Which kind of store write asked, the `path` label of the refusals counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritePath {
    /// A new message: record, raw bytes, indexes, outbox items, dedup claim.
    Ingest,
    /// A delivery's attempts, retry schedule and outcome.
    Delivery,
    /// A Latrexa booking revision, its `id_map` entry and its record's status.
    Booking,
    /// An operator action: reprocess, dead-letter retry or discard.
    Operator,
    /// The answer recorded on a message.
    Status,
    /// An audit record.
    Audit,
}

impl WritePath {
    /// Every path, in the order of [`crate::metrics::STORE_WRITE_PATHS`].
    pub const ALL: [WritePath; 6] = [
        WritePath::Ingest,
        WritePath::Delivery,
        WritePath::Booking,
        WritePath::Operator,
        WritePath::Status,
        WritePath::Audit,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            WritePath::Ingest => "ingest",
            WritePath::Delivery => "delivery",
            WritePath::Booking => "booking",
            WritePath::Operator => "operator",
            WritePath::Status => "status",
            WritePath::Audit => "audit",
        }
    }
}

/// Refuses writes while free space is under the reserve.
#[derive(Debug)]
pub struct SpaceGuard {
    dir: PathBuf,
    reserve: AtomicU64,
    /// When free space was last read, and what it was.
    last: Mutex<Option<(Instant, u64)>>,
    /// True from the first refusal until a check finds the space back (for logging once).
    short: AtomicBool,
    /// `switchboard_store_reserve_refusals_total{path}`.
    refusals: IntCounterVec,
}

impl SpaceGuard {
    /// A guard for the filesystem of `dir` with no reserve (it never refuses); refusals are
    /// counted in `refusals` by path.
    pub fn new(dir: &Path, refusals: IntCounterVec) -> SpaceGuard {
        SpaceGuard {
            dir: dir.to_path_buf(),
            reserve: AtomicU64::new(0),
            last: Mutex::new(None),
            short: AtomicBool::new(false),
            refusals,
        }
    }

    /// Sets the reserve in bytes; 0 turns the guard off.
    pub fn set_reserve(&self, bytes: u64) {
        self.reserve.store(bytes, Ordering::Relaxed);
    }

    /// Ok while at least the reserve is free (or free space cannot be read); a refusal is
    /// counted for `path`.
    ///
    /// # Errors
    ///
    /// [`StoreError::DiskFull`] when less than the reserve is free.
    pub fn check(&self, path: WritePath) -> Result<(), StoreError> {
        self.available().inspect_err(|e| self.refused(path, e))
    }

    /// Like [`SpaceGuard::check`] without counting: for a worker that asks before it starts
    /// work whose outcome it would have to write.
    ///
    /// # Errors
    ///
    /// [`StoreError::DiskFull`] when less than the reserve is free.
    pub fn available(&self) -> Result<(), StoreError> {
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
            _ => {
                if self.short.swap(false, Ordering::Relaxed) {
                    info!(dir = %self.dir.display(), reserve, "Free disk space is above the reserve again; store writes resume.");
                }
                Ok(())
            }
        }
    }

    /// Logs (once per shortage) and counts one refused write.
    fn refused(&self, path: WritePath, e: &StoreError) {
        self.refusals.with_label_values(&[path.as_str()]).inc();
        if self.short.swap(true, Ordering::Relaxed) {
            debug!(path = path.as_str(), error = %e, "Store write refused: disk reserve reached.");
        } else {
            warn!(dir = %self.dir.display(), path = path.as_str(), error = %e, "Free disk space is under the reserve; store writes are refused until it is back.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_refuses_under_the_reserve() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = crate::metrics::Metrics::new("t");
        let g = SpaceGuard::new(dir.path(), m.store_reserve_refusals.clone());
        assert!(g.check(WritePath::Ingest).is_ok());
        g.set_reserve(u64::MAX);
        std::thread::sleep(RECHECK);
        match g.check(WritePath::Delivery) {
            Err(StoreError::DiskFull { reserve, .. }) => assert_eq!(reserve, u64::MAX),
            other => panic!("expected DiskFull, got {other:?}"),
        }
        assert!(g.available().is_err(), "asking is not a refusal");
        let count = |p: WritePath| {
            m.store_reserve_refusals
                .with_label_values(&[p.as_str()])
                .get()
        };
        assert_eq!(
            (count(WritePath::Delivery), count(WritePath::Ingest)),
            (1, 0)
        );
        g.set_reserve(1);
        std::thread::sleep(RECHECK);
        assert!(g.check(WritePath::Delivery).is_ok());
        assert_eq!(count(WritePath::Delivery), 1);
    }

    /// A tree's name and its keys and values.
    type TreeContent = (Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

    /// Every tree and its content, to compare before and after.
    fn snapshot(s: &crate::store::Store) -> Vec<TreeContent> {
        s.db.tree_names()
            .into_iter()
            .map(|name| {
                let tree = s.db.open_tree(&name).expect("tree");
                let content = tree
                    .iter()
                    .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).expect("read"))
                    .collect();
                (name.to_vec(), content)
            })
            .collect()
    }

    #[tokio::test]
    async fn every_write_path_is_refused_under_the_reserve_and_goes_on_after() {
        use crate::store::id_map::{BookingEntry, BookingState, RecordChange};
        use crate::store::outbox::{Attempt, AuditRecord, OutboxItem};
        use crate::store::{Status, Store};
        let dir = tempfile::tempdir().expect("tempdir");
        let m = crate::metrics::Metrics::new("t");
        let s = Store::open(dir.path(), crate::store::Durability::Os, &m).expect("open");
        let id = s.next_id(1000);
        s.put(
            &crate::store::tests::record(id, "a", "C1", Status::Received),
            b"raw",
            &[],
        )
        .expect("put");
        let item = OutboxItem {
            attempts: 1,
            content_type: "text/plain".into(),
            idempotency_key: "k".into(),
            body: b"raw".to_vec(),
            ..OutboxItem::sample("a/x", id, s.next_seq(), 1000)
        };
        let dead = OutboxItem {
            seq: s.next_seq(),
            ..item.clone()
        };
        s.route(id, &[item.clone(), dead.clone()]).expect("route");
        s.finish(&dead, false, "gave up").expect("dead letter");
        let booking = crate::store::tests::record(s.next_id(1001), "lx", "B1", Status::Received);
        let entry = BookingEntry {
            latrexa_id: "LX-1".into(),
            his_appointment_id: None,
            his_accepted: false,
            booking: Default::default(),
            fingerprint: "f".into(),
            state: BookingState::Received,
            message_id: booking.id,
            control_id: "B1".into(),
            siu: String::new(),
            updated_at_ms: 1001,
        };
        s.put_booking(&booking, b"{}", &entry).expect("booking");
        let attempt = Attempt {
            destination: "a/x".into(),
            attempt: 1,
            at_ms: 1000,
            outcome: crate::store::kind::Outcome::Delivered.into(),
            status: Some(200),
            detail: String::new(),
            duration_ms: 1,
            answer: None,
        };
        let before = snapshot(&s);

        s.set_min_free_bytes(u64::MAX);
        let full = |r: Result<(), StoreError>| matches!(r, Err(StoreError::DiskFull { .. }));
        let next = crate::store::tests::record(s.next_id(1002), "a", "C2", Status::Received);
        assert!(full(s.put(&next, b"raw", &[])), "ingest");
        assert!(
            full(s.claim("k", &[0; 32], next.id).await.map(drop)),
            "dedup"
        );
        assert!(full(s.record_attempt(&item, &attempt)), "attempt");
        assert!(full(s.reschedule(&item)), "retry schedule");
        assert!(full(s.finish(&item, true, "ok").map(drop)), "delivered");
        assert!(
            full(s.finish(&item, false, "gave up").map(drop)),
            "dead letter"
        );
        assert!(full(s.route(id, &[]).map(drop)), "reprocess");
        assert!(full(s.revive("a/x", dead.seq, 2000).map(drop)), "revive");
        assert!(full(s.discard("a/x", dead.seq).map(drop)), "discard");
        assert!(full(s.set_ack(id, "AE", "MSA|AE|C1")), "answer");
        let changed = BookingEntry {
            state: BookingState::HisAccepted,
            ..entry.clone()
        };
        assert!(full(s.put_booking(&booking, b"{}", &entry)), "booking");
        assert!(
            full(s.advance_booking("lx", &changed, &RecordChange::default())),
            "booking step"
        );
        assert!(
            full(s.first_bad_booking("lx", "abc").map(drop)),
            "bad booking"
        );
        let audit = AuditRecord {
            at_ms: 1,
            who: "t".into(),
            action: crate::store::kind::AuditAction::Reprocess.into(),
            target: String::new(),
            count: 1,
            counts: Default::default(),
        };
        assert!(full(s.audit(&audit)), "audit");
        assert_eq!(snapshot(&s), before, "nothing was written");
        let refused: Vec<u64> = WritePath::ALL
            .iter()
            .map(|p| {
                m.store_reserve_refusals
                    .with_label_values(&[p.as_str()])
                    .get()
            })
            .collect();
        // ingest, delivery, booking, operator, status, audit
        assert_eq!(refused, [2, 4, 3, 3, 1, 1]);

        // Space is back: the same writes go through.
        s.set_min_free_bytes(0);
        s.record_attempt(&item, &attempt).expect("attempt");
        assert_eq!(s.finish(&item, true, "ok").expect("finish"), Status::Failed);
        s.advance_booking("lx", &changed, &RecordChange::default())
            .expect("booking step");
        s.audit(&audit).expect("audit");
        assert_eq!(s.attempts_of(id).expect("attempts"), [attempt]);
        assert_eq!(
            s.booking_entry("lx", "LX-1").expect("get").map(|e| e.state),
            Some(BookingState::HisAccepted)
        );
    }

    #[test]
    fn every_path_has_its_label() {
        let labels: Vec<&str> = WritePath::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(labels, crate::metrics::STORE_WRITE_PATHS);
    }
}
