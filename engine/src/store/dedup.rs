//! Recognising resends: the `dedup` tree, and the originals still being committed.
//!
//! The `dedup` key is the channel and the sender's key for the message (HL7: MSH-3, MSH-4,
//! MSH-10; HTTP: see `ingest_http`); its value is the original's message id (8 bytes,
//! big-endian) and a digest of its content (32 bytes; HL7: the bytes without MSH-7). The
//! channel is part of the key, so the same analyzer message sent to two channels is two
//! messages; the digest is part of the value, so a different message that reuses a control
//! id (a sender's counter reset) is stored as a new one instead of being answered as a
//! resend.
//!
//! An HL7 v2 message's key starts with its control id ([`hl7_dedup_key`]: 0x00, MSH-10,
//! 0x00, then the key above), so that its claim is also its entry in the control-id index:
//! [`Store::ids_by_control_id`] reads both, and [`Store::put`] writes no `by_control_id` entry
//! for a message whose claim names it, which saves ingest one write per message. A message
//! that loses its claim while its record stays gets a `by_control_id` entry first: when a
//! message with other content takes the key over (a reuse), and when a record is kept
//! without its claim (cluster mode: the stream refused the message). A store written before
//! this form holds HL7 keys without the prefix; a claim looks the original up under that key
//! too while its own key is unclaimed, so a resend of a message stored by an earlier
//! version is still recognised, and retention removes either form by the key the record
//! names.
//!
//! A resend is answered only once the original is durable. While the original is between
//! its claim and the end of its group commit it is *in flight* ([`InFlight`]): a resend
//! waits for that outcome. If the original's write or flush failed, its claim and record
//! are taken back ([`Pending::failed`]) and the resend is processed as a new message.

use super::outbox::outbox_key;
use super::{control_id_index_key, MessageRecord, Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// SHA-256 of what makes a message itself (HL7: every byte but MSH-7).
pub type ContentDigest = [u8; 32];

/// What claiming a dedup key found.
#[derive(Debug)]
pub enum Claim {
    /// First time this key is seen: it now points at the new message.
    New(Pending),
    /// A resend of a durable original, with the same content: the original's record.
    Duplicate(Box<MessageRecord>),
    /// The key was seen before with other content: it now points at the new message.
    Reused {
        /// The earlier message that used the key.
        previous: u64,
        /// The new message's claim.
        pending: Pending,
    },
}

/// Messages claimed but not yet committed, by id; each with the outcome to come
/// (`Some(true)`: durable, `Some(false)`: failed and taken back).
#[derive(Clone, Default)]
pub(crate) struct InFlight(Arc<Mutex<HashMap<u64, watch::Receiver<Option<bool>>>>>);

impl InFlight {
    fn insert(&self, id: u64) -> watch::Sender<Option<bool>> {
        let (tx, rx) = watch::channel(None);
        self.0
            .lock()
            .expect("in-flight map not poisoned")
            .insert(id, rx);
        tx
    }

    fn get(&self, id: u64) -> Option<watch::Receiver<Option<bool>>> {
        self.0
            .lock()
            .expect("in-flight map not poisoned")
            .get(&id)
            .cloned()
    }

    fn remove(&self, id: u64) {
        self.0
            .lock()
            .expect("in-flight map not poisoned")
            .remove(&id);
    }
}

/// A claim whose message is being written: settle it with [`Pending::durable`] after the
/// group commit, or [`Pending::failed`]. Dropped unsettled, it counts as failed.
#[derive(Debug)]
pub struct Pending {
    key: Vec<u8>,
    id: u64,
    outcome: Option<watch::Sender<Option<bool>>>,
    inflight: InFlightHandle,
}

/// [`InFlight`] and the trees a [`Pending`] needs to settle.
#[derive(Clone)]
struct InFlightHandle {
    inflight: InFlight,
    dedup: sled::Tree,
    messages: sled::Tree,
    by_control_id: sled::Tree,
}

impl std::fmt::Debug for InFlightHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InFlightHandle")
    }
}

impl Pending {
    /// The dedup key claimed (stored on the record, for retention).
    pub fn key(&self) -> String {
        String::from_utf8_lossy(&self.key).into_owned()
    }

    /// The message is durable: resends waiting for it are answered from its record.
    pub fn durable(mut self) {
        if let Some(tx) = self.outcome.take() {
            let _ = tx.send(Some(true));
        }
        self.inflight.inflight.remove(self.id);
    }

    /// The message could not be stored (its write or its flush failed, so its sender was
    /// told to send again): its claim, record and deliveries are taken back, and a resend
    /// is processed as a new message.
    pub fn failed(mut self, store: &Store, record: &MessageRecord) {
        if let Err(e) = store.take_back(record) {
            tracing::warn!(id = record.id, error = %e, "Cannot take back a message that failed to commit; its resend is still processed anew.");
        }
        self.release();
    }

    fn release(&mut self) {
        let Some(tx) = self.outcome.take() else {
            return;
        };
        // Only if it still points at this message.
        let h = &self.inflight;
        if let Ok(Some(v)) = h.dedup.get(&self.key) {
            if v.starts_with(&self.id.to_be_bytes()) && self.index_kept_record() {
                let _ = h
                    .dedup
                    .compare_and_swap(&self.key, Some(v), None as Option<&[u8]>);
            }
        }
        let _ = tx.send(Some(false));
        self.inflight.inflight.remove(self.id);
    }

    /// Before the claim goes: a record that stays (cluster mode keeps a message the stream
    /// refused, marked rejected) gets the control-id index entry its claim was. False when
    /// that entry could not be written: the claim then stays, so the record is still found.
    fn index_kept_record(&self) -> bool {
        let Some((control_id, _)) = control_id_form(&self.key) else {
            return true;
        };
        let h = &self.inflight;
        match h.messages.contains_key(self.id.to_be_bytes()) {
            Ok(false) => true,
            Ok(true) => h
                .by_control_id
                .insert(control_id_index_key(control_id, self.id), &[][..])
                .is_ok(),
            Err(_) => false,
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.release();
    }
}

/// The dedup tree value: message id, then the content digest.
fn encode(id: u64, digest: &ContentDigest) -> [u8; 40] {
    let mut v = [0u8; 40];
    v[..8].copy_from_slice(&id.to_be_bytes());
    v[8..].copy_from_slice(digest);
    v
}

/// The id and digest of a dedup value; entries of older versions have no digest.
pub(crate) fn decode(v: &[u8]) -> Result<(u64, Option<ContentDigest>), StoreError> {
    let bad = || StoreError::Codec("bad dedup entry".into());
    let id = u64::from_be_bytes(v.get(..8).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
    let digest = match v.len() {
        8 => None,
        40 => Some(v[8..].try_into().map_err(|_| bad())?),
        _ => return Err(bad()),
    };
    Ok((id, digest))
}

/// The dedup tree key of `sender_key` on `channel`.
pub fn dedup_key(channel: &str, sender_key: &str) -> String {
    format!("{channel}\u{1e}{sender_key}")
}

/// The dedup tree key of an HL7 v2 message with MSH-10 `control_id` and `sender_key` on
/// `channel`: 0x00, the control id, 0x00, then [`dedup_key`], so that the claim is also the
/// message's control-id index entry (see the module documentation). A control id the index
/// cannot hold (empty, or with a NUL) gets [`dedup_key`] alone.
pub fn hl7_dedup_key(channel: &str, control_id: &str, sender_key: &str) -> String {
    let key = dedup_key(channel, sender_key);
    if control_id.is_empty() || control_id.contains('\0') {
        return key;
    }
    format!("\0{control_id}\0{key}")
}

/// The control id and the key without it ([`dedup_key`], as versions before this form
/// wrote it) of a key in the control-id form ([`hl7_dedup_key`]); `None` for another key.
fn control_id_form(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = key.strip_prefix(&[0u8][..])?;
    let at = rest.iter().position(|b| *b == 0)?;
    Some((&rest[..at], &rest[at + 1..])).filter(|(control_id, _)| !control_id.is_empty())
}

/// Whether a record's `dedup_key` is in the control-id form of its own control id: its
/// claim is then its control-id index entry.
pub(crate) fn indexes_control_id(dedup_key: &str, control_id: &str) -> bool {
    control_id_form(dedup_key.as_bytes()).is_some_and(|(c, _)| c == control_id.as_bytes())
}

/// Where in the dedup tree the claims in the control-id form of `control_id` are.
pub(crate) fn control_id_prefix(control_id: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(control_id.len() + 2);
    p.push(0);
    p.extend_from_slice(control_id.as_bytes());
    p.push(0);
    p
}

/// What a claim found under the key of the earlier layout ([`Store::claimed_before`]).
enum Earlier {
    /// A stored original with the same content.
    Duplicate(Box<MessageRecord>),
    /// A stored message with other content.
    Other(u64),
}

impl Store {
    /// Claims `key` (see [`dedup_key`]) for message `id` with content `digest`, or finds the
    /// durable original it duplicates; waits while an original with the same content is
    /// still being committed.
    ///
    /// A key left pointing at a message that is not in the store (a crash between the
    /// claim and the record write; that message was never acknowledged) is taken over.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails, [`StoreError::DiskFull`] (nothing written) under the
    /// free-space reserve.
    pub async fn claim(
        &self,
        key: &str,
        digest: &ContentDigest,
        id: u64,
    ) -> Result<Claim, StoreError> {
        self.space.check(super::space::WritePath::Ingest)?;
        let ours = encode(id, digest);
        let outcome = self.inflight.insert(id);
        let pending = |outcome| Pending {
            key: key.as_bytes().to_vec(),
            id,
            outcome: Some(outcome),
            inflight: InFlightHandle {
                inflight: self.inflight.clone(),
                dedup: self.dedup.clone(),
                messages: self.messages.clone(),
                by_control_id: self.by_control_id.clone(),
            },
        };
        let mut expected: Option<sled::IVec> = None;
        let mut reused: Option<u64> = None;
        match self.claimed_before(key, digest) {
            Ok(None) => {}
            Ok(Some(Earlier::Duplicate(rec))) => {
                self.inflight.remove(id);
                return Ok(Claim::Duplicate(rec));
            }
            Ok(Some(Earlier::Other(previous))) => reused = Some(previous),
            Err(e) => {
                self.inflight.remove(id);
                return Err(e);
            }
        }
        loop {
            let cas = match self
                .dedup
                .compare_and_swap(key, expected.clone(), Some(&ours[..]))
            {
                Ok(cas) => cas,
                Err(e) => {
                    self.inflight.remove(id);
                    return Err(e.into());
                }
            };
            let current = match cas {
                Ok(()) => {
                    let pending = pending(outcome);
                    return Ok(match reused {
                        Some(previous) => Claim::Reused { previous, pending },
                        None => Claim::New(pending),
                    });
                }
                Err(cas) => cas.current,
            };
            let Some(current) = current else {
                expected = None;
                reused = None;
                continue;
            };
            let (original, their_digest) = match decode(&current) {
                Ok(d) => d,
                Err(e) => {
                    self.inflight.remove(id);
                    return Err(e);
                }
            };
            if their_digest.is_some_and(|d| d != *digest) {
                // The key moves to this message: the one it named gets a control-id index
                // entry of its own first (sled recovers a prefix of its log, so the move is
                // never durable without the entry).
                if let Err(e) = self.index_displaced(key, original) {
                    self.inflight.remove(id);
                    return Err(e);
                }
                reused = Some(original);
                expected = Some(current);
                continue;
            }
            reused = None;
            if let Some(mut rx) = self.inflight.get(original) {
                let durable = matches!(
                    rx.wait_for(Option::is_some).await.as_deref(),
                    Ok(Some(true))
                );
                if !durable {
                    // Taken back: look again (the resend may become the new original).
                    expected = None;
                    continue;
                }
            }
            match self.get(original) {
                Ok(Some(rec)) => {
                    self.inflight.remove(id);
                    return Ok(Claim::Duplicate(Box::new(rec)));
                }
                Ok(None) => expected = Some(current),
                Err(e) => {
                    self.inflight.remove(id);
                    return Err(e);
                }
            }
        }
    }

    /// For a `key` in the control-id form that nothing claimed yet: the message a version
    /// before that form recorded under the key without it, if it is stored.
    fn claimed_before(
        &self,
        key: &str,
        digest: &ContentDigest,
    ) -> Result<Option<Earlier>, StoreError> {
        let Some((_, earlier)) = control_id_form(key.as_bytes()) else {
            return Ok(None);
        };
        let Some(v) = self.dedup.get(earlier)? else {
            return Ok(None);
        };
        if self.dedup.contains_key(key)? {
            return Ok(None);
        }
        let (original, their_digest) = decode(&v)?;
        let Some(rec) = self.get(original)? else {
            return Ok(None);
        };
        Ok(Some(if their_digest.is_some_and(|d| d != *digest) {
            Earlier::Other(original)
        } else {
            Earlier::Duplicate(Box::new(rec))
        }))
    }

    /// Writes the control-id index entry of message `original` when `key`, in the
    /// control-id form, is about to stop naming it and it is stored or being stored.
    fn index_displaced(&self, key: &str, original: u64) -> Result<(), StoreError> {
        let Some((control_id, _)) = control_id_form(key.as_bytes()) else {
            return Ok(());
        };
        if self.inflight.get(original).is_some() || self.contains_message(original)? {
            self.by_control_id
                .insert(control_id_index_key(control_id, original), &[][..])?;
        }
        Ok(())
    }

    /// Takes back what [`Store::put`] wrote for a message whose commit failed (its
    /// deliveries are those attached to the record).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails.
    pub(crate) fn take_back(&self, record: &MessageRecord) -> Result<(), StoreError> {
        let key = record.id.to_be_bytes();
        self.messages.remove(key)?;
        self.raw.remove(key)?;
        for d in &record.deliveries {
            self.outbox.remove(outbox_key(&d.destination, d.seq))?;
        }
        if !record.control_id.is_empty() {
            self.by_control_id.remove(control_id_index_key(
                record.control_id.as_bytes(),
                record.id,
            ))?;
        }
        for k in record
            .business_keys
            .iter()
            .filter(|k| super::keys::indexable(k))
        {
            self.by_business_key
                .remove(super::keys::index_key(k, record.id))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::tests::record;
    use crate::store::Durability;
    use crate::store::Status;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path(), Durability::Os, &Metrics::new("t")).expect("open");
        (dir, s)
    }

    #[tokio::test]
    async fn a_resend_is_a_duplicate_once_the_original_is_durable() {
        let (_d, s) = store();
        let first = s.next_id(1);
        let Claim::New(p) = s.claim("k", &[1; 32], first).await.expect("claim") else {
            panic!("expected a new claim")
        };
        s.put(&record(first, "a", "C1", Status::Received), b"x", &[])
            .expect("put");
        // The resend waits while the original is in flight.
        let s2 = s.clone();
        let resend = tokio::spawn(async move { s2.claim("k", &[1; 32], s2.next_id(2)).await });
        tokio::task::yield_now().await;
        assert!(
            !resend.is_finished(),
            "answered before the original was durable"
        );
        p.durable();
        match resend.await.expect("task").expect("claim") {
            Claim::Duplicate(r) => assert_eq!(r.id, first),
            other => panic!("expected a duplicate, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_resend_after_a_failed_original_is_new() {
        let (_d, s) = store();
        let first = s.next_id(1);
        let Claim::New(p) = s.claim("k", &[1; 32], first).await.expect("claim") else {
            panic!("expected a new claim")
        };
        let rec = record(first, "a", "C1", Status::Received);
        s.put(&rec, b"x", &[]).expect("put");
        let s2 = s.clone();
        let second = s.next_id(2);
        let resend = tokio::spawn(async move { s2.claim("k", &[1; 32], second).await });
        tokio::task::yield_now().await;
        p.failed(&s, &rec);
        assert!(matches!(
            resend.await.expect("task").expect("claim"),
            Claim::New(_)
        ));
        assert_eq!(
            s.get(first).expect("get"),
            None,
            "the failed original is taken back"
        );
    }

    #[tokio::test]
    async fn other_content_under_the_same_key_is_a_reuse() {
        let (_d, s) = store();
        let first = s.next_id(1);
        let Claim::New(p) = s.claim("k", &[1; 32], first).await.expect("claim") else {
            panic!("expected a new claim")
        };
        s.put(&record(first, "a", "C1", Status::Received), b"x", &[])
            .expect("put");
        p.durable();
        match s.claim("k", &[2; 32], s.next_id(2)).await.expect("claim") {
            Claim::Reused { previous, pending } => {
                assert_eq!(previous, first);
                pending.durable();
            }
            other => panic!("expected a reuse, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn keys_are_per_channel_and_dangling_claims_are_taken_over() {
        let (_d, s) = store();
        assert_ne!(dedup_key("a", "HIS"), dedup_key("b", "HIS"));
        let lost = s.next_id(1);
        let Claim::New(p) = s.claim("k", &[1; 32], lost).await.expect("claim") else {
            panic!("expected a new claim")
        };
        // As after a crash between claim and record write: the claim stays, no record.
        p.durable();
        assert!(matches!(
            s.claim("k", &[1; 32], s.next_id(2)).await.expect("claim"),
            Claim::New(_)
        ));
    }

    /// An HL7 message, stored as ingest stores it: claimed under `key`, its record naming it.
    async fn ingest(s: &Store, key: &str, digest: u8, control_id: &str) -> (u64, Pending) {
        let id = s.next_id(1_000);
        let pending = match s.claim(key, &[digest; 32], id).await.expect("claim") {
            Claim::New(p) | Claim::Reused { pending: p, .. } => p,
            Claim::Duplicate(r) => panic!("expected a new message, got a duplicate of {}", r.id),
        };
        // Filtered: finished, so that retention takes it.
        let mut rec = record(id, "adt", control_id, Status::Filtered);
        rec.dedup_key = pending.key();
        s.put(&rec, b"MSH|x", &[]).expect("put");
        (id, pending)
    }

    fn by_control_id(s: &Store, control_id: &str) -> Vec<u64> {
        s.ids_by_control_id(control_id, 0, u64::MAX).expect("ids")
    }

    /// The claim is the message's control-id index entry: ingest writes none in
    /// `by_control_id`, yet the message is found by its control id; it gets one of its own
    /// when another message takes its key over, or when its record stays without its claim;
    /// retention removes either.
    #[tokio::test]
    async fn the_claim_is_the_control_id_index_entry_until_the_message_loses_it() {
        let (_d, s) = store();
        let key = hl7_dedup_key("adt", "C1", "HIS\u{1f}MAIN\u{1f}C1");
        assert!(key.starts_with("\0C1\0"), "{key:?}");
        let (first, p) = ingest(&s, &key, 1, "C1").await;
        p.durable();
        assert!(s.by_control_id.is_empty(), "one write less per message");
        assert_eq!(by_control_id(&s, "C1"), [first]);
        assert!(
            by_control_id(&s, "C").is_empty(),
            "a prefix is another control id"
        );

        // Another body under the same key: the key moves, the first keeps an entry.
        let (second, p) = ingest(&s, &key, 2, "C1").await;
        p.durable();
        assert_eq!(s.by_control_id.len(), 1);
        assert_eq!(by_control_id(&s, "C1"), [second, first]);

        // A record kept while its claim is let go (cluster mode: the stream refused it).
        let other = hl7_dedup_key("adt", "C2", "HIS\u{1f}MAIN\u{1f}C2");
        let (kept, p) = ingest(&s, &other, 1, "C2").await;
        drop(p);
        assert!(s.dedup.get(&other).expect("get").is_none(), "claim let go");
        assert_eq!(by_control_id(&s, "C2"), [kept]);

        // A message taken back leaves nothing behind.
        let third_key = hl7_dedup_key("adt", "C3", "HIS\u{1f}MAIN\u{1f}C3");
        let (third, p) = ingest(&s, &third_key, 1, "C3").await;
        let rec = s.get(third).expect("get").expect("record");
        p.failed(&s, &rec);
        assert!(by_control_id(&s, "C3").is_empty());

        let policy = crate::store::retention::RetentionPolicy {
            default_days: 1,
            per_channel: Default::default(),
        };
        s.prune(&policy, 10 * 86_400_000).expect("prune");
        assert!(by_control_id(&s, "C1").is_empty() && by_control_id(&s, "C2").is_empty());
        assert!(s.by_control_id.is_empty() && s.dedup.is_empty());
    }

    /// A store written before the control-id form: the original's claim under the key
    /// without the control id in front, its control id in `by_control_id`, byte for byte as
    /// that version wrote them. A resend of it is still a duplicate, a reuse still a reuse.
    #[tokio::test]
    async fn a_message_claimed_before_the_control_id_form_is_still_recognised() {
        let (_d, s) = store();
        let earlier = dedup_key("adt", "HIS\u{1f}MAIN\u{1f}OLD-1");
        let old = s.next_id(1);
        let mut rec = record(old, "adt", "OLD-1", Status::Received);
        rec.dedup_key = earlier.clone();
        s.put(&rec, b"MSH|old", &[]).expect("put");
        s.dedup
            .insert(earlier.as_bytes(), &encode(old, &[1; 32])[..])
            .expect("claim");
        assert_eq!(s.by_control_id.len(), 1, "as that version wrote it");

        let key = hl7_dedup_key("adt", "OLD-1", "HIS\u{1f}MAIN\u{1f}OLD-1");
        match s.claim(&key, &[1; 32], s.next_id(2)).await.expect("claim") {
            Claim::Duplicate(r) => assert_eq!(r.id, old),
            other => panic!("expected a duplicate, got {other:?}"),
        }
        assert!(s.dedup.get(&key).expect("get").is_none(), "nothing claimed");
        let reuse = s.next_id(3);
        match s.claim(&key, &[2; 32], reuse).await.expect("claim") {
            Claim::Reused { previous, pending } => {
                assert_eq!(previous, old);
                let mut rec = record(reuse, "adt", "OLD-1", Status::Received);
                rec.dedup_key = pending.key();
                s.put(&rec, b"MSH|new", &[]).expect("put");
                pending.durable();
            }
            other => panic!("expected a reuse, got {other:?}"),
        }
        assert_eq!(by_control_id(&s, "OLD-1"), [reuse, old]);
        // From now on the key in the control-id form answers.
        match s.claim(&key, &[2; 32], s.next_id(4)).await.expect("claim") {
            Claim::Duplicate(r) => assert_eq!(r.id, reuse),
            other => panic!("expected a duplicate, got {other:?}"),
        }
    }

    #[test]
    fn only_a_control_id_the_index_can_hold_goes_in_front() {
        assert_eq!(
            hl7_dedup_key("a", "", "H\u{1f}F\u{1f}"),
            dedup_key("a", "H\u{1f}F\u{1f}")
        );
        assert_eq!(
            hl7_dedup_key("a", "x\0y", "k"),
            dedup_key("a", "k"),
            "a NUL would end the control id early"
        );
        let key = hl7_dedup_key("a", "C9", "k");
        assert!(indexes_control_id(&key, "C9"));
        assert!(!indexes_control_id(&key, "C"));
        assert!(!indexes_control_id(&dedup_key("a", "k"), "C9"));
        assert_eq!(
            control_id_form(key.as_bytes()),
            Some((&b"C9"[..], dedup_key("a", "k").as_bytes()))
        );
    }

    #[test]
    fn values_decode_with_and_without_digest() {
        assert_eq!(decode(&7u64.to_be_bytes()).expect("old"), (7, None));
        assert_eq!(
            decode(&encode(9, &[3; 32])).expect("new"),
            (9, Some([3; 32]))
        );
        assert!(decode(b"bad").is_err());
    }
}
