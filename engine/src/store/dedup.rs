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
//! A resend is answered only once the original is durable. While the original is between
//! its claim and the end of its group commit it is *in flight* ([`InFlight`]): a resend
//! waits for that outcome. If the original's write or flush failed, its claim and record
//! are taken back ([`Pending::failed`]) and the resend is processed as a new message.

use super::outbox::outbox_key;
use super::{MessageRecord, Store, StoreError};
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

/// [`InFlight`] and the dedup tree, as a [`Pending`] needs them to settle.
#[derive(Clone)]
struct InFlightHandle {
    inflight: InFlight,
    dedup: sled::Tree,
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
        let dedup = &self.inflight.dedup;
        if let Ok(Some(v)) = dedup.get(&self.key) {
            if v.starts_with(&self.id.to_be_bytes()) {
                let _ = dedup.compare_and_swap(&self.key, Some(v), None as Option<&[u8]>);
            }
        }
        let _ = tx.send(Some(false));
        self.inflight.inflight.remove(self.id);
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
    /// [`StoreError`] when sled fails.
    pub async fn claim(
        &self,
        key: &str,
        digest: &ContentDigest,
        id: u64,
    ) -> Result<Claim, StoreError> {
        let ours = encode(id, digest);
        let outcome = self.inflight.insert(id);
        let pending = |outcome| Pending {
            key: key.as_bytes().to_vec(),
            id,
            outcome: Some(outcome),
            inflight: InFlightHandle {
                inflight: self.inflight.clone(),
                dedup: self.dedup.clone(),
            },
        };
        let mut expected: Option<sled::IVec> = None;
        let mut reused: Option<u64> = None;
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
            let mut idx = Vec::with_capacity(record.control_id.len() + 9);
            idx.extend_from_slice(record.control_id.as_bytes());
            idx.push(0);
            idx.extend_from_slice(&key);
            self.by_control_id.remove(idx)?;
        }
        self.unindex_business_keys(record)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use crate::metrics::Metrics;
    use crate::store::tests::record;
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
