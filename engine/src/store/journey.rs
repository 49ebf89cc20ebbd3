//! Visit timelines (the patient journey PX360 shows): per visit, what each message added to
//! or cancelled in its timeline ([`JourneyDelta`]), folded in message order into a
//! [`Timeline`] when a payload is rendered.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `journey` | visit (len-prefixed), message id | [`JourneyDelta`] as JSON, sealed |
//! | `journey_by_message` | message id, visit (len-prefixed) | empty: which visits a message wrote |
//!
//! The visit is `transforms::journey::visit_key` (`v:` + PV1-19, else `a:` + PID-18); with
//! encryption at rest on, its keyed hash (`index_tag`), so no visit or account number is
//! kept in a key.
//!
//! [`Store::journey_step`] reads a visit's deltas, asks the caller for this message's (from the
//! timeline so far), and writes it, under one lock, so of two messages of one visit rendered
//! at the same moment the second sees the first's steps (for a sender that waits for each
//! answer, as HL7 senders do, that is the order it sent them in). The delta is written before the
//! message record, like its outbox items ([`Store::put`] writes the record last), and covered
//! by the same group commit; a message whose record could not be written has its deltas taken
//! back ([`Store::journey_forget`]). A message routed again (reprocess) finds its own delta
//! and reuses it, so the timeline is not counted twice.
//!
//! Retention: a visit's timeline lives as long as its newest message. Pruning a message
//! removes its `journey_by_message` rows; when no later message of the visit is left, the
//! whole timeline goes with it (see `retention`).

use super::ledger::tx_err;
use super::space::WritePath;
use super::{Store, StoreError};
use sled::transaction::TransactionError;
use sled::Transactional;
use transforms::journey::{JourneyDelta, Timeline};

/// The stored form of a visit key: its keyed hash with encryption on, else itself.
fn visit_id(store: &Store, visit: &str) -> String {
    store
        .seal
        .index_tag(visit)
        .unwrap_or_else(|| visit.to_owned())
}

fn prefix(visit: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(visit.len() + 1);
    k.push(visit.len().min(255) as u8);
    k.extend_from_slice(&visit.as_bytes()[..visit.len().min(255)]);
    k
}

/// A message and the index of its event (a message may carry several).
pub type EventRef = (u64, u16);

fn row_key(visit: &str, (message_id, n): EventRef) -> Vec<u8> {
    let mut k = prefix(visit);
    k.extend_from_slice(&message_id.to_be_bytes());
    k.extend_from_slice(&n.to_be_bytes());
    k
}

fn by_message_key((message_id, n): EventRef, visit: &str) -> Vec<u8> {
    let mut k = message_id.to_be_bytes().to_vec();
    k.extend_from_slice(&n.to_be_bytes());
    k.extend_from_slice(&prefix(visit));
    k
}

/// The message and event at the end of a `journey` key.
fn event_of(key: &[u8]) -> Option<EventRef> {
    let at = key.len().checked_sub(10)?;
    let id = key[at..at + 8].try_into().ok().map(u64::from_be_bytes)?;
    let n = key[at + 8..].try_into().ok().map(u16::from_be_bytes)?;
    Some((id, n))
}

fn message_of(key: &[u8]) -> Option<u64> {
    event_of(key).map(|(id, _)| id)
}

/// Keys retention removes with a message (see [`Store::journey_rows_of`]).
#[derive(Debug, Default)]
pub(crate) struct JourneyRows {
    /// `journey` keys.
    pub(crate) rows: Vec<Vec<u8>>,
    /// `journey_by_message` keys.
    pub(crate) index: Vec<Vec<u8>>,
}

impl Store {
    fn decode_delta(&self, stored: &[u8]) -> Result<JourneyDelta, StoreError> {
        let json = self.seal.open(b"journey", stored)?;
        serde_json::from_slice(&json).map_err(|e| StoreError::Codec(e.to_string()))
    }

    /// The deltas of a stored visit id, in message order.
    fn deltas(&self, visit: &str) -> Result<Vec<(EventRef, JourneyDelta)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.journey.scan_prefix(prefix(visit)) {
            let (k, v) = kv?;
            if let Some(id) = event_of(&k) {
                out.push((id, self.decode_delta(&v)?));
            }
        }
        Ok(out)
    }

    /// The timeline of `visit` with the delta of `event` (a message id and the index of the
    /// event in it) in it: its stored one when the message was routed before, else
    /// `delta(timeline so far)`, written now.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails or a delta does not open; [`StoreError::DiskFull`]
    /// (nothing written) under the free-space reserve.
    pub fn journey_step(
        &self,
        visit: &str,
        event: EventRef,
        delta: impl FnOnce(&Timeline) -> JourneyDelta,
    ) -> Result<Timeline, StoreError> {
        let visit = visit_id(self, visit);
        let _one_at_a_time = self
            .journey_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let deltas = self.deltas(&visit)?;
        if deltas.iter().any(|(id, _)| *id == event) {
            return Ok(Timeline::from_deltas(deltas.iter().map(|(_, d)| d)));
        }
        let mut timeline = Timeline::from_deltas(deltas.iter().map(|(_, d)| d));
        let new = delta(&timeline);
        if new.is_empty() {
            return Ok(timeline);
        }
        self.space.check(WritePath::Ingest)?;
        let json = serde_json::to_vec(&new).map_err(|e| StoreError::Codec(e.to_string()))?;
        let sealed = self.seal.seal(b"journey", &json)?.into_owned();
        let row = row_key(&visit, event);
        let index = by_message_key(event, &visit);
        let r: Result<(), TransactionError<StoreError>> = (&self.journey, &self.journey_by_message)
            .transaction(|(j, b)| {
                j.insert(row.as_slice(), sealed.as_slice())?;
                b.insert(index.as_slice(), &[][..])?;
                Ok(())
            });
        r.map_err(tx_err)?;
        timeline.apply(&new);
        Ok(timeline)
    }

    /// Takes back what message `message_id` wrote to timelines (its record could not be
    /// stored, so its sender will send it again).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails.
    pub fn journey_forget(&self, message_id: u64) -> Result<(), StoreError> {
        let _one_at_a_time = self
            .journey_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for k in self
            .journey_by_message
            .scan_prefix(message_id.to_be_bytes())
            .keys()
        {
            let k = k?;
            let mut row = k[10..].to_vec();
            row.extend_from_slice(&k[..10]);
            self.journey.remove(row)?;
            self.journey_by_message.remove(k)?;
        }
        Ok(())
    }

    /// What retention removes with message `id`: the `journey` rows of each visit with no
    /// later message (its whole timeline), and its `journey_by_message` rows.
    pub(crate) fn journey_rows_of(&self, id: u64) -> Result<JourneyRows, StoreError> {
        let mut out = JourneyRows::default();
        for k in self.journey_by_message.scan_prefix(id.to_be_bytes()).keys() {
            let k = k?;
            let rows: Vec<sled::IVec> = self
                .journey
                .scan_prefix(&k[10..])
                .keys()
                .collect::<Result<_, _>>()?;
            let later = rows.iter().any(|r| message_of(r).is_some_and(|m| m > id));
            if !later {
                out.rows.extend(rows.iter().map(|r| r.to_vec()));
            }
            out.index.push(k.to_vec());
        }
        Ok(out)
    }

    /// The timeline of a visit as stored (for the admin API and tests).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails or a delta does not open.
    pub fn journey_timeline(&self, visit: &str) -> Result<Timeline, StoreError> {
        let deltas = self.deltas(&visit_id(self, visit))?;
        Ok(Timeline::from_deltas(deltas.iter().map(|(_, d)| d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::Durability;
    use transforms::journey::{Cancel, JourneyStep, StepKind};

    fn step(kind: StepKind, minute: u8) -> JourneyStep {
        serde_json::from_value(serde_json::json!({
            "kind": kind,
            "time": format!("2026-06-15T10:{minute:02}:00"),
        }))
        .expect("step")
    }

    fn add(steps: Vec<JourneyStep>) -> impl FnOnce(&Timeline) -> JourneyDelta {
        move |_| JourneyDelta {
            steps,
            cancels: vec![],
        }
    }

    /// Deltas fold in message order across a reopen; a message routed again reuses its own
    /// delta (the closure is not asked); a cancel-discharge reopens the visit.
    #[test]
    fn timelines_fold_in_message_order_survive_a_reopen_and_are_not_counted_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Store::open(dir.path(), Durability::Os, &Metrics::new("t")).expect("open");
            s.journey_step("v:V-1", (10, 0), add(vec![step(StepKind::Admission, 0)]))
                .expect("step");
            let t = s
                .journey_step("v:V-1", (20, 0), |so_far| {
                    assert_eq!(so_far.steps.len(), 1, "sees the admission");
                    JourneyDelta {
                        steps: vec![step(StepKind::Discharge, 30)],
                        cancels: vec![],
                    }
                })
                .expect("step");
            assert!(t.is_discharged());
            let again = s
                .journey_step("v:V-1", (10, 0), |_| panic!("a reprocess reuses its delta"))
                .expect("step");
            assert_eq!(again.steps.len(), 2);
            s.journey_step("v:V-2", (15, 0), add(vec![step(StepKind::Registration, 5)]))
                .expect("step");
        }
        let s = crate::store::tests::reopen(|| {
            Store::open(dir.path(), Durability::Os, &Metrics::new("t"))
        });
        let t = s
            .journey_step("v:V-1", (30, 0), |_| JourneyDelta {
                steps: vec![],
                cancels: vec![Cancel {
                    kind: StepKind::Discharge,
                    reference: None,
                }],
            })
            .expect("step");
        assert!(!t.is_discharged());
        assert_eq!(t.active().count(), 1);
        assert_eq!(s.journey_timeline("v:V-2").expect("read").steps.len(), 1);
    }

    /// Retention keeps a visit's timeline while a later message of it is kept, and removes it
    /// whole with its newest message; a message that was never stored is taken back.
    #[test]
    fn a_timeline_goes_with_its_newest_message_and_a_failed_message_is_taken_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path(), Durability::Os, &Metrics::new("t")).expect("open");
        s.journey_step("v:V-1", (10, 0), add(vec![step(StepKind::Admission, 0)]))
            .expect("step");
        s.journey_step("v:V-1", (20, 0), add(vec![step(StepKind::Transfer, 10)]))
            .expect("step");
        let first = s.journey_rows_of(10).expect("rows");
        assert_eq!(
            (first.rows.len(), first.index.len()),
            (0, 1),
            "only its index row: message 20 is later"
        );
        let last = s.journey_rows_of(20).expect("rows");
        assert_eq!((last.rows.len(), last.index.len()), (2, 1), "both deltas");

        s.journey_step("v:V-3", (40, 0), add(vec![step(StepKind::Admission, 0)]))
            .expect("step");
        s.journey_forget(40).expect("forget");
        assert!(s.journey_timeline("v:V-3").expect("read").steps.is_empty());
        assert!(s.journey_rows_of(40).expect("rows").index.is_empty());
    }
}
