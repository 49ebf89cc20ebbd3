//! One unit of cluster work on the wire: a stored message, its raw bytes and its rendered
//! deliveries, as the receiving node wrote them, in one JetStream message.
//!
//! Layout: a 4-byte big-endian length, that many bytes of JSON ([`Head`]: the record and the
//! delivery heads with the lengths of what follows), then the raw message, then each
//! delivery's body in order. Bodies travel as rendered, so every node delivers the same bytes
//! with the same idempotency key.
//!
//! With `[encryption]`, the whole envelope is sealed ([`seal`]) with the store's key ring
//! before it is published, in the store's sealed-value format (magic, key id, nonce,
//! ChaCha20-Poly1305 ciphertext) under the purpose `cluster_work`, and opened by the owner
//! ([`open`]). Without it the envelope goes as it is; an owner with keys reads an unsealed
//! envelope too (no magic prefix), so nodes can turn encryption on one after the other.

use crate::store::outbox::OutboxItem;
use crate::store::seal::Seal;
use crate::store::MessageRecord;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::borrow::Cow;

/// The associated data of a sealed envelope: a work envelope cannot be passed off as a
/// store value or a completion notice.
const WORK_PURPOSE: &[u8] = b"cluster_work";

/// The JSON part of an envelope.
#[derive(Serialize, Deserialize)]
struct Head {
    record: MessageRecord,
    items: Vec<OutboxItem>,
    raw_len: usize,
    body_lens: Vec<usize>,
}

/// A message and its deliveries, decoded from an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Work {
    /// The record as the receiving node stored it.
    pub record: MessageRecord,
    /// The raw message.
    pub raw: Vec<u8>,
    /// Its rendered deliveries (`seq` is the receiving node's; the owner assigns its own).
    pub items: Vec<OutboxItem>,
}

/// Encodes a message and its deliveries.
///
/// # Errors
///
/// A sentence when the record cannot be written as JSON.
pub fn encode(record: &MessageRecord, raw: &[u8], items: &[OutboxItem]) -> Result<Vec<u8>, String> {
    let head = Head {
        record: record.clone(),
        items: items.to_vec(),
        raw_len: raw.len(),
        body_lens: items.iter().map(|i| i.body.len()).collect(),
    };
    let head = serde_json::to_vec(&head).map_err(|e| format!("cannot encode the work: {e}"))?;
    let bodies: usize = items.iter().map(|i| i.body.len()).sum();
    let mut out = Vec::with_capacity(4 + head.len() + raw.len() + bodies);
    out.extend_from_slice(&u32::try_from(head.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(raw);
    for i in items {
        out.extend_from_slice(&i.body);
    }
    Ok(out)
}

/// Decodes an envelope.
///
/// # Errors
///
/// A sentence naming what is wrong (never the content).
pub fn decode(bytes: &[u8]) -> Result<Work, String> {
    let short = || "the work message is shorter than its header says".to_string();
    let len = u32::from_be_bytes(
        bytes
            .get(..4)
            .ok_or_else(short)?
            .try_into()
            .map_err(|_| short())?,
    ) as usize;
    let head: Head = serde_json::from_slice(bytes.get(4..4 + len).ok_or_else(short)?)
        .map_err(|e| format!("the work message's header does not decode: {e}"))?;
    if head.body_lens.len() != head.items.len() {
        return Err("the work message's body count does not match its deliveries".into());
    }
    let mut at = 4 + len;
    let mut take = |n: usize| {
        let part = bytes.get(at..at + n).ok_or_else(short)?.to_vec();
        at += n;
        Ok::<_, String>(part)
    };
    let raw = take(head.raw_len)?;
    let mut items = head.items;
    for (item, n) in items.iter_mut().zip(head.body_lens) {
        item.body = take(n)?;
    }
    Ok(Work {
        record: head.record,
        raw,
        items,
    })
}

/// Seals an encoded envelope under the newest key of `seal` (as it is without keys).
///
/// # Errors
///
/// A sentence when the cipher fails (it does not for valid input).
pub fn seal(seal: &Seal, envelope: Vec<u8>) -> Result<Vec<u8>, String> {
    if !seal.is_on() {
        return Ok(envelope);
    }
    seal.seal(WORK_PURPOSE, &envelope)
        .map(Cow::into_owned)
        .map_err(|e| format!("cannot seal the work: {e}"))
}

/// Opens a published envelope: a sealed one with the key it names, an unsealed one as it
/// is.
///
/// # Errors
///
/// A sentence naming the key id when the envelope is sealed under a key this node does not
/// have, or does not open with it (wrong key, damaged); never the content.
pub fn open<'a>(seal: &Seal, published: &'a [u8]) -> Result<Cow<'a, [u8]>, String> {
    seal.open(WORK_PURPOSE, published)
        .map_err(|e| format!("the work message cannot be opened: {e}"))
}

/// The delivery partition of a message's deliveries, 0 to `partitions - 1`: a hash of the
/// first non-empty partition key (the patient by default), so that one patient's messages
/// are always in one partition. Every node computes the same (SHA-256, not a seeded hash).
pub fn partition_of(items: &[OutboxItem], partitions: u32) -> u32 {
    let key = items
        .iter()
        .map(|i| i.partition.as_str())
        .find(|p| !p.is_empty())
        .unwrap_or_default();
    partition_of_key(key, partitions)
}

/// The delivery partition of one partition key (an HL7 message's PID-3 identifier by
/// default), 0 to `partitions - 1`: what [`partition_of`] computes for deliveries with that
/// key, for a test or a tool that must know which node delivers a patient's messages.
pub fn partition_of_key(key: &str, partitions: u32) -> u32 {
    let digest = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(partitions.max(1))) as u32
}

/// The `Nats-Msg-Id` of a message: from the sender's key (MSH-3, MSH-4, MSH-10 by channel)
/// and the content when there is one, so that a resend of a message whose stream
/// acknowledgement was lost is recognised by JetStream; else from the message id.
pub fn message_id(record: &MessageRecord, raw: &[u8]) -> String {
    if record.dedup_key.is_empty() {
        return format!("id-{}", record.id);
    }
    let mut h = Sha256::new();
    h.update(record.dedup_key.as_bytes());
    h.update([0]);
    h.update(raw);
    format!("k-{}", hex::encode(&h.finalize()[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn item(partition: &str, body: &[u8]) -> OutboxItem {
        OutboxItem {
            partition: partition.into(),
            next_attempt_ms: 0,
            content_type: "application/json".into(),
            payload: crate::store::kind::ItemPayload::Rendered(
                channels::kind::PayloadKind::Canonical,
            )
            .into(),
            body: body.to_vec(),
            ..OutboxItem::sample("lab/sink", 42, 7, 1)
        }
    }

    fn record() -> MessageRecord {
        let mut r: MessageRecord = serde_json::from_value(serde_json::json!({
            "id": 42, "channel": "lab", "received_at_ms": 1, "peer": "127.0.0.1:1",
            "format": "hl7v2", "message_type": "ADT^A04", "control_id": "C1",
            "sending_application": "", "sending_facility": "", "version": "2.5",
            "charset": "", "size": 3, "truncated": false, "status": "received",
            "ack_code": "AA", "ack": "", "errors": [], "config_version": "v",
            "deliveries": []
        }))
        .expect("a record");
        r.dedup_key = "lab|APP|FAC|C1".into();
        r
    }

    #[test]
    fn a_message_and_its_bodies_come_back_as_they_went() {
        let items = vec![item("P1", b"{\"a\":1}"), item("P1", b"")];
        let bytes = encode(&record(), b"MSH|x", &items).expect("encodes");
        let work = decode(&bytes).expect("decodes");
        assert_eq!(work.record, record());
        assert_eq!(work.raw, b"MSH|x");
        assert_eq!(work.items, items);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    fn key(id: &str, byte: u8) -> crate::store::seal::StoreKey {
        crate::store::seal::StoreKey::sample(id, byte)
    }

    /// With keys, nothing of the message is readable on the wire, the owner with the same
    /// ring (or a rotated one that still lists the key) gets it back exactly, and a node
    /// with a wrong key, another key id or no key at all gets an error, never the content.
    #[test]
    fn a_sealed_envelope_opens_only_with_its_key() {
        let items = vec![item("MRN-4711", b"{\"name\":\"Testperson\"}")];
        let plain = encode(&record(), b"MSH|PID|||MRN-4711||Testperson", &items).expect("encodes");
        let ring = Seal::new(&[key("k1", 1)]);
        let sealed = seal(&ring, plain.clone()).expect("seals");
        for secret in [&b"MRN-4711"[..], b"Testperson", b"ADT^A04", b"lab|APP"] {
            assert!(
                !sealed.windows(secret.len()).any(|w| w == secret),
                "{} in clear",
                String::from_utf8_lossy(secret)
            );
        }
        let opened = open(&ring, &sealed).expect("opens");
        assert_eq!(decode(&opened).expect("decodes").items, items);
        let rotated = Seal::new(&[key("k2", 2), key("k1", 1)]);
        assert_eq!(
            open(&rotated, &sealed)
                .expect("rotated ring opens")
                .as_ref(),
            &plain[..]
        );

        let wrong = open(&Seal::new(&[key("k1", 9)]), &sealed).expect_err("wrong key");
        assert!(
            wrong.contains("'k1'") && wrong.contains("does not open"),
            "{wrong}"
        );
        let other = open(&Seal::new(&[key("k2", 2)]), &sealed).expect_err("other key id");
        assert!(
            other.contains("'k1'") && other.contains("does not list"),
            "{other}"
        );
        let none = open(&Seal::plain(), &sealed).expect_err("no key");
        assert!(none.contains("'k1'"), "{none}");
        assert!(!none.contains("Testperson") && !wrong.contains("MRN"));
        let mut damaged = sealed.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(
            open(&ring, &damaged).is_err(),
            "a damaged envelope does not open"
        );
    }

    /// Without keys the wire format is unchanged, and a node with keys reads it.
    #[test]
    fn an_unsealed_envelope_stays_as_it_was_and_opens_everywhere() {
        let plain = encode(&record(), b"MSH|x", &[item("P1", b"b")]).expect("encodes");
        assert_eq!(seal(&Seal::plain(), plain.clone()).expect("as is"), plain);
        let ring = Seal::new(&[key("k1", 1)]);
        assert_eq!(open(&ring, &plain).expect("opens").as_ref(), &plain[..]);
    }

    #[test]
    fn one_patient_always_lands_in_one_partition_and_patients_spread() {
        let p = partition_of(&[item("", b""), item("P1", b"")], 16);
        assert_eq!(p, partition_of(&[item("P1", b"")], 16));
        assert_eq!(p, partition_of_key("P1", 16));
        let seen: std::collections::BTreeSet<u32> = (0..200)
            .map(|n| partition_of(&[item(&format!("MRN{n}"), b"")], 16))
            .collect();
        assert_eq!(seen.len(), 16);
    }

    #[test]
    fn a_resend_has_the_same_stream_id_and_other_content_another() {
        let r = record();
        assert_eq!(message_id(&r, b"a"), message_id(&r, b"a"));
        assert_ne!(message_id(&r, b"a"), message_id(&r, b"b"));
        let mut anon = record();
        anon.dedup_key.clear();
        assert_eq!(message_id(&anon, b"a"), "id-42");
    }
}
