//! The outbox, attempts, dead letters and audit records.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `outbox` | destination name (len-prefixed), seq | [`OutboxItem`] |
//! | `dead_letters` | same key as in the outbox | [`OutboxItem`] with its last error |
//! | `attempts` | message id, seq, attempt number | [`Attempt`] as JSON |
//! | `audit` | unix ms, n | [`AuditRecord`] as JSON |
//!
//! Ingest writes a message's outbox items before its record (see [`Store::put`]); items left
//! without their record by a crash are removed when the store opens, never later (see
//! [`Store::drop_orphans`]). A reprocess adds items and the new status in one sled
//! transaction.

use super::kind::{AuditAction, ItemPayload, Named, Outcome};
use super::seal::Seal;
use super::space::WritePath;
use super::{MessageRecord, Status, Store, StoreError};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

/// One queued delivery. The body is rendered once, at enqueue, so a retry sends the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxItem {
    /// `channel/destination`.
    pub destination: String,
    /// Position in the destination's queue.
    pub seq: u64,
    /// The message it was rendered from.
    pub message_id: u64,
    /// FIFO partition (patient identifier, or empty).
    pub partition: String,
    /// Unix ms when it was queued.
    pub created_at_ms: u64,
    /// Attempts made so far.
    pub attempts: u32,
    /// Unix ms before which it is not tried again.
    pub next_attempt_ms: u64,
    /// The last failure, empty when none.
    pub last_error: String,
    /// Content type of the body.
    pub content_type: String,
    /// Stable idempotency key.
    pub idempotency_key: String,
    /// MSH-10 of an HL7 body.
    pub control_id: Option<String>,
    /// The message's type as the metrics label it (`ADT_A04`, `fhir`...), for the delivery's
    /// log span ([`crate::delivery::message_span`]); empty in items written before it was
    /// kept.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message_type: String,
    /// Path relative to the destination's base URL.
    pub path: Option<String>,
    /// Which payload rendered it (`hl7`, `canonical`, ...), or `mapping_failed`; a name this
    /// version does not know stays as read, and its body is sent as rendered (see
    /// [`super::kind`]).
    pub payload: Named<ItemPayload>,
    /// The appointment a vendor payload is about (its ids), so that delivery can read and
    /// write the appointment ledger (see [`super::ledger`]); `None` for everything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appointment: Option<super::ledger::AppointmentRef>,
    /// For the upsert of a reference record an appointment names (OpsPort's clinic or doctor,
    /// `clinic:<code>`): sent only while the destination has not had it from this engine, so
    /// the appointment's abbreviated record never overwrites the master record (see
    /// [`super::ledger`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// True for the upsert of a master-data record itself (an MFN or FHIR clinic or
    /// doctor): always sent, and once delivered its `reference` counts as sent, so a later
    /// appointment's abbreviated record of it is not sent over it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub master: bool,
    /// The rendered body.
    #[serde(skip)]
    pub body: Vec<u8>,
}

#[cfg(test)]
impl OutboxItem {
    /// A test item: the HL7 delivery `MSH|` of message `message_id` to `destination` (its key
    /// `<id>-<name>`), queued as `seq` and due at `at_ms`, never tried. Tests set what they
    /// need over it (`OutboxItem { partition, ..OutboxItem::sample(..) }`), so a field added
    /// to the item is added here once.
    pub(crate) fn sample(destination: &str, message_id: u64, seq: u64, at_ms: u64) -> OutboxItem {
        let name = destination.rsplit('/').next().unwrap_or(destination);
        OutboxItem {
            destination: destination.into(),
            seq,
            message_id,
            partition: String::new(),
            created_at_ms: at_ms,
            attempts: 0,
            next_attempt_ms: at_ms,
            last_error: String::new(),
            content_type: "application/hl7-v2".into(),
            idempotency_key: format!("{message_id}-{name}"),
            control_id: None,
            message_type: String::new(),
            path: None,
            payload: ItemPayload::Rendered(channels::kind::PayloadKind::Hl7).into(),
            appointment: None,
            reference: None,
            master: false,
            body: b"MSH|".to_vec(),
        }
    }
}

impl OutboxItem {
    /// The key in `outbox` and `dead_letters`.
    pub fn key(&self) -> Vec<u8> {
        outbox_key(&self.destination, self.seq)
    }

    pub(crate) fn encode(&self, seal: &Seal) -> Result<Vec<u8>, StoreError> {
        // The head is sealed too: its partition is a patient identifier, its path may name
        // one (a FHIR conditional update) and its last error may quote the destination.
        let head = serde_json::to_vec(self).map_err(|e| StoreError::Codec(e.to_string()))?;
        let head = seal.seal(b"outbox_head", &head)?;
        let body = seal.seal(b"payload", &self.body)?;
        let mut v = Vec::with_capacity(4 + head.len() + body.len());
        v.extend_from_slice(&(head.len() as u32).to_be_bytes());
        v.extend_from_slice(&head);
        v.extend_from_slice(&body);
        Ok(v)
    }

    fn decode(bytes: &[u8], seal: &Seal) -> Result<OutboxItem, StoreError> {
        let bad = || StoreError::Codec("bad outbox item".into());
        let len = u32::from_be_bytes(
            bytes
                .get(..4)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        ) as usize;
        let head = seal.open(b"outbox_head", bytes.get(4..4 + len).ok_or_else(bad)?)?;
        let mut item: OutboxItem =
            serde_json::from_slice(&head).map_err(|e| StoreError::Codec(e.to_string()))?;
        item.body = seal.open(b"payload", &bytes[4 + len..])?.into_owned();
        Ok(item)
    }
}

/// The key of a destination's item: name length, name, seq.
pub fn outbox_key(destination: &str, seq: u64) -> Vec<u8> {
    let mut k = outbox_prefix(destination);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn outbox_prefix(destination: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(destination.len() + 10);
    k.push(destination.len().min(255) as u8);
    k.extend_from_slice(destination.as_bytes());
    k
}

/// Where one delivery of a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Queued or being retried.
    Pending,
    /// The destination confirmed it.
    Delivered,
    /// Given up; in the dead letters.
    DeadLetter,
    /// Discarded from the dead letters by an operator.
    Discarded,
}

/// One delivery of a message, as shown on the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryState {
    /// `channel/destination`.
    pub destination: String,
    /// Its outbox seq.
    pub seq: u64,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: u32,
    /// The last failure or the destination's answer.
    pub detail: String,
    /// The attempt that delivered it, when kept on the record instead of in `attempts` (one
    /// write less): an attempt without an answer, in a store without encryption (see
    /// [`Store::finish_delivered_all`]); [`Store::attempts_of`] lists it with the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<Attempt>,
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// `channel/destination`.
    pub destination: String,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Unix ms.
    pub at_ms: u64,
    /// `delivered`, `retry` or `dead_letter`; a name this version does not know stays as read
    /// (see [`super::kind`]).
    pub outcome: Named<Outcome>,
    /// HTTP status, when any.
    pub status: Option<u16>,
    /// The answer or the error.
    pub detail: String,
    /// Milliseconds the attempt took.
    pub duration_ms: u64,
    /// The peer's whole answer to this attempt (an MLLP peer's ACK, an HTTP response body),
    /// at most `channels::destination::MAX_ANSWER_BYTES`; sealed with the rest of the attempt
    /// when encryption is on. `None` when there was no answer (a timeout, a refused
    /// connection, a file written) and in attempts recorded before answers were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

/// Who did what: operator actions, reloads and retention passes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Unix ms.
    pub at_ms: u64,
    /// The actor (from the admin API's `X-Switchboard-User`, else `api`; `retention` for a
    /// retention pass).
    pub who: String,
    /// `reprocess`, `reprocess_bulk` (one record per `POST /api/reprocess`, with the filter
    /// and the `reprocessed`/`skipped` counts), `dead_letter_retry`, `dead_letter_discard`,
    /// `reload`, `retention`, ...: every [`AuditAction`]; a name this version does not know stays
    /// as read (see [`super::kind`]).
    pub action: Named<AuditAction>,
    /// What it applied to (ids, filters, `channel <name>`).
    pub target: String,
    /// How many items it touched.
    pub count: usize,
    /// Named counts, for an action that reports more than one (retention: `removed`,
    /// `kept_pending`, `kept_dead_lettered`, `kept_unsettled_bookings`, `dedup_removed`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, u64>,
}

/// Adds pending deliveries for `items` to a record and sets its status accordingly.
pub fn attach(record: &mut MessageRecord, items: &[OutboxItem]) {
    for item in items {
        record.deliveries.push(DeliveryState {
            destination: item.destination.clone(),
            seq: item.seq,
            status: DeliveryStatus::Pending,
            attempts: 0,
            detail: String::new(),
            attempt: None,
        });
    }
    record.status = status_of(&record.deliveries);
}

/// The status a message has given its deliveries.
pub fn status_of(deliveries: &[DeliveryState]) -> Status {
    if deliveries.is_empty() {
        return Status::Filtered;
    }
    let pending: Vec<&DeliveryState> = deliveries
        .iter()
        .filter(|d| d.status == DeliveryStatus::Pending)
        .collect();
    if pending.iter().any(|d| d.attempts > 0) {
        Status::Retrying
    } else if !pending.is_empty() {
        Status::Routed
    } else if deliveries
        .iter()
        .any(|d| d.status == DeliveryStatus::DeadLetter)
    {
        Status::Failed
    } else {
        Status::Delivered
    }
}

type TxResult<T> = Result<T, TransactionError<StoreError>>;

fn tx_err(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Sled(e.to_string()),
    }
}

fn abort<T>(e: StoreError) -> Result<T, ConflictableTransactionError<StoreError>> {
    Err(ConflictableTransactionError::Abort(e))
}

impl Store {
    /// A new outbox seq, greater than every earlier one.
    pub fn next_seq(&self) -> u64 {
        self.last_seq.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Routes a message: writes its outbox items and its new status in one transaction.
    /// `items` empty means no route matched (`filtered`). Items are appended to any
    /// deliveries the message already has (reprocess).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails or the message is missing; [`StoreError::DiskFull`] (nothing
    /// written) under the free-space reserve.
    pub fn route(&self, id: u64, items: &[OutboxItem]) -> Result<MessageRecord, StoreError> {
        self.space.check(WritePath::Operator)?;
        let encoded: Vec<(Vec<u8>, Vec<u8>)> = items
            .iter()
            .map(|i| Ok((i.key(), i.encode(&self.seal)?)))
            .collect::<Result<_, StoreError>>()?;
        let key = id.to_be_bytes();
        let r: TxResult<MessageRecord> = (&self.messages, &self.outbox).transaction(|(m, o)| {
            let Some(v) = m.get(key)? else {
                return abort(StoreError::Codec(format!("message {id} not found")));
            };
            let mut rec = match super::decode_record(&v) {
                Ok(r) => r,
                Err(e) => return abort(e),
            };
            for (item, (k, v)) in items.iter().zip(&encoded) {
                o.insert(k.as_slice(), v.as_slice())?;
                rec.deliveries.push(DeliveryState {
                    destination: item.destination.clone(),
                    seq: item.seq,
                    status: DeliveryStatus::Pending,
                    attempts: 0,
                    detail: String::new(),
                    attempt: None,
                });
            }
            rec.status = status_of(&rec.deliveries);
            let v = match super::replace_record(&v, &rec) {
                Ok(v) => v,
                Err(e) => return abort(e),
            };
            m.insert(&key, v)?;
            Ok(rec)
        });
        r.map_err(tx_err)
    }

    /// Removes every outbox item whose message does not exist, and returns how many. Items
    /// are written before their record ([`Store::put`]), so a crash part-way through a put
    /// leaves items of a message that was never acknowledged (its sender sends it again).
    /// Only [`Store::open`] calls this, before anything else can write: while the engine
    /// runs, an item without its record is one whose put is still under way, and a delivery
    /// worker starting at that moment (a restart under load, a reload) must keep it. An item
    /// that cannot be decoded is kept (its worker reports it). A removal, so not refused
    /// under the free-space reserve.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails.
    pub(super) fn drop_orphans(&self) -> Result<usize, StoreError> {
        let mut dropped = 0;
        for kv in self.outbox.iter() {
            let (k, v) = kv?;
            let Ok(item) = OutboxItem::decode(&v, &self.seal) else {
                continue;
            };
            if !self.messages.contains_key(item.message_id.to_be_bytes())? {
                self.outbox.remove(k)?;
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// One outbox item.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails or the item cannot be decoded.
    pub fn outbox_get(
        &self,
        destination: &str,
        seq: u64,
    ) -> Result<Option<OutboxItem>, StoreError> {
        self.outbox
            .get(outbox_key(destination, seq))?
            .map(|v| OutboxItem::decode(&v, &self.seal))
            .transpose()
    }

    /// Every queued item of a destination, in seq order.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails.
    pub fn outbox_items(&self, destination: &str) -> Result<Vec<OutboxItem>, StoreError> {
        self.outbox
            .scan_prefix(outbox_prefix(destination))
            .values()
            .map(|v| OutboxItem::decode(&v?, &self.seal))
            .collect()
    }

    /// How many deliveries of a destination wait in its outbox and in its dead letters,
    /// each counted up to `cap` (keys only, nothing decoded).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails.
    pub fn queue_counts(
        &self,
        destination: &str,
        cap: usize,
    ) -> Result<(usize, usize), StoreError> {
        let count = |tree: &sled::Tree| -> Result<usize, StoreError> {
            let mut n = 0;
            for k in tree
                .scan_prefix(outbox_prefix(destination))
                .keys()
                .take(cap)
            {
                k?;
                n += 1;
            }
            Ok(n)
        };
        Ok((count(&self.outbox)?, count(&self.dead_letters)?))
    }

    /// Saves a failed attempt's new schedule and marks the message as retrying.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails; [`StoreError::DiskFull`] (nothing written) under the
    /// free-space reserve.
    pub fn reschedule(&self, item: &OutboxItem) -> Result<(), StoreError> {
        self.space.check(WritePath::Delivery)?;
        let encoded = item.encode(&self.seal)?;
        let key = item.message_id.to_be_bytes();
        let r: TxResult<()> = (&self.messages, &self.outbox).transaction(|(m, o)| {
            o.insert(item.key(), encoded.as_slice())?;
            update_delivery(m, &key, item, DeliveryStatus::Pending, &item.last_error)?;
            Ok(())
        });
        r.map_err(tx_err)
    }

    /// Finishes a delivery: removes it from the outbox (into the dead letters unless
    /// delivered) and updates the message. Returns the message's new status.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails; [`StoreError::DiskFull`] (nothing written) under the
    /// free-space reserve.
    pub fn finish(
        &self,
        item: &OutboxItem,
        delivered: bool,
        detail: &str,
    ) -> Result<Status, StoreError> {
        self.finish_with_ledger(item, delivered, detail, None)
    }

    /// A delivery that succeeded and writes nothing but its message's record and its outbox
    /// item ([`Store::finish_with_ledger`] without a ledger entry or a reference); see
    /// [`Store::finish_delivered_all`], of which this is the one-item case without an attempt.
    pub(super) fn finish_delivered(
        &self,
        item: &OutboxItem,
        detail: &str,
    ) -> Result<Status, StoreError> {
        let status = self.update_records(&[(item, detail, None)])?;
        self.outbox
            .remove(outbox_key(&item.destination, item.seq))?;
        Ok(status[0])
    }

    /// Finishes several successful deliveries that write nothing but their attempts, their
    /// messages' records and their outbox items (no ledger entry, no reference): what a
    /// destination's answer to a batch, or deliveries finished close together, leave to
    /// record. Returns each item's message status after the update, in the order of `done`.
    ///
    /// The attempts first, then one compare-and-swap per message however many of its
    /// deliveries are in `done` (an outcome of another destination written meanwhile is
    /// read again, not lost), then the items' removals. An attempt without an answer, in a
    /// store without encryption, goes on the record with its delivery instead of in
    /// `attempts` (it holds nothing the record does not show in clear already), which saves
    /// a write per delivery. No sled transaction and no
    /// `sled::Batch`: sled 0.34 runs both under one write lock over the whole database
    /// (`concurrency_control::write`), which stops every other writer (ingest included)
    /// while it runs, and once taken makes every later read and write go through that lock.
    /// A crash part-way leaves items in the outbox whose records may already say delivered:
    /// they are sent again after the restart (at least once, as after a crash before any
    /// write), and finishing them again changes nothing. sled recovers a prefix of its log,
    /// so an item's removal is never durable without its record's update.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails or a record cannot be decoded (what was written before
    /// stays; writing the same outcomes again is harmless); [`StoreError::DiskFull`]
    /// (nothing written) under the free-space reserve.
    pub fn finish_delivered_all(
        &self,
        done: &[(&OutboxItem, &Attempt, &str)],
    ) -> Result<Vec<Status>, StoreError> {
        self.space.check(WritePath::Delivery)?;
        let beside = |a: &Attempt| !self.seal.is_on() && a.answer.is_none();
        for (item, attempt, _) in done.iter().filter(|(_, a, _)| !beside(a)) {
            self.insert_attempt(item, attempt)?;
        }
        let updates: Vec<Update<'_>> = done
            .iter()
            .map(|(i, a, d)| (*i, *d, beside(a).then_some(*a)))
            .collect();
        let statuses = self.update_records(&updates)?;
        for (item, _, _) in done {
            self.outbox
                .remove(outbox_key(&item.destination, item.seq))?;
        }
        Ok(statuses)
    }

    /// Marks each of `updates` delivered on its message's record, one compare-and-swap per
    /// message; returns each update's message status (`Delivered` for a message pruned
    /// meanwhile: nothing to update).
    fn update_records(&self, updates: &[Update<'_>]) -> Result<Vec<Status>, StoreError> {
        let mut by_message: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for (at, (item, _, _)) in updates.iter().enumerate() {
            by_message.entry(item.message_id).or_default().push(at);
        }
        let mut statuses = vec![Status::Delivered; updates.len()];
        for (id, ats) in by_message {
            let mine: Vec<Update<'_>> = ats.iter().map(|&at| updates[at]).collect();
            let status = self.update_record(id, &mine)?;
            for at in ats {
                statuses[at] = status;
            }
        }
        Ok(statuses)
    }

    /// One message's record with `updates` marked delivered, by compare-and-swap.
    fn update_record(&self, id: u64, updates: &[Update<'_>]) -> Result<Status, StoreError> {
        let key = id.to_be_bytes();
        loop {
            // Pruned by retention meanwhile: nothing to update.
            let Some(old) = self.messages.get(key)? else {
                return Ok(Status::Delivered);
            };
            let (new, status) = with_deliveries(&old, updates, DeliveryStatus::Delivered)?;
            if self
                .messages
                .compare_and_swap(key, Some(old), Some(new))?
                .is_ok()
            {
                return Ok(status);
            }
        }
    }

    /// Records one attempt (again with the same number: the same key, overwritten).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails; [`StoreError::DiskFull`] (nothing written) under the
    /// free-space reserve.
    pub fn record_attempt(&self, item: &OutboxItem, attempt: &Attempt) -> Result<(), StoreError> {
        self.space.check(WritePath::Delivery)?;
        self.insert_attempt(item, attempt)
    }

    fn insert_attempt(&self, item: &OutboxItem, attempt: &Attempt) -> Result<(), StoreError> {
        let mut k = Vec::with_capacity(20);
        k.extend_from_slice(&item.message_id.to_be_bytes());
        k.extend_from_slice(&item.seq.to_be_bytes());
        k.extend_from_slice(&attempt.attempt.to_be_bytes());
        // Sealed: the detail is the destination's answer, which may quote what it was sent.
        let v = serde_json::to_vec(attempt).map_err(|e| StoreError::Codec(e.to_string()))?;
        self.attempts
            .insert(k, self.seal.seal(b"attempt", &v)?.as_ref())?;
        Ok(())
    }

    /// Every attempt made for a message.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails.
    pub fn attempts_of(&self, message_id: u64) -> Result<Vec<Attempt>, StoreError> {
        // (seq, attempt): the order of the `attempts` keys, the record's own merged in.
        let mut all: Vec<(u64, Attempt)> = Vec::new();
        for kv in self.attempts.scan_prefix(message_id.to_be_bytes()) {
            let (k, v) = kv?;
            let seq = k
                .get(8..16)
                .and_then(|s| s.try_into().ok())
                .map_or(0, u64::from_be_bytes);
            let attempt = serde_json::from_slice(&self.seal.open(b"attempt", &v)?)
                .map_err(|e| StoreError::Codec(e.to_string()))?;
            all.push((seq, attempt));
        }
        if let Some(rec) = self.get(message_id)? {
            all.extend(
                rec.deliveries
                    .into_iter()
                    .filter_map(|d| d.attempt.map(|a| (d.seq, a))),
            );
        }
        all.sort_by_key(|(seq, a)| (*seq, a.attempt));
        Ok(all.into_iter().map(|(_, a)| a).collect())
    }

    /// The rendered payloads of a message still in the outbox or the dead letters.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails.
    pub fn payloads_of(&self, record: &MessageRecord) -> Result<Vec<OutboxItem>, StoreError> {
        let mut out = Vec::new();
        for d in &record.deliveries {
            let k = outbox_key(&d.destination, d.seq);
            if let Some(v) = self.outbox.get(&k)?.or(self.dead_letters.get(&k)?) {
                out.push(OutboxItem::decode(&v, &self.seal)?);
            }
        }
        Ok(out)
    }

    /// How many dead letters destination `channel/destination` has (keys only).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails.
    pub fn dead_letter_count(&self, destination: &str) -> Result<u64, StoreError> {
        let mut n = 0;
        for k in self
            .dead_letters
            .scan_prefix(outbox_prefix(destination))
            .keys()
        {
            k?;
            n += 1;
        }
        Ok(n)
    }

    /// Dead letters, optionally of one destination (`channel/destination`) or channel.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails.
    pub fn dead_letters(
        &self,
        destination: Option<&str>,
        channel: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let iter = match destination {
            Some(d) => self.dead_letters.scan_prefix(outbox_prefix(d)),
            None => self.dead_letters.iter(),
        };
        let mut out = Vec::new();
        for v in iter.values() {
            let item = OutboxItem::decode(&v?, &self.seal)?;
            if channel.is_none_or(|c| item.destination.split('/').next() == Some(c)) {
                out.push(item);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Moves a dead letter back into the outbox under a new seq, attempts reset.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails, [`StoreError::DiskFull`] (nothing written) under the
    /// free-space reserve; `Ok(None)` when there is no such dead letter.
    pub fn revive(
        &self,
        destination: &str,
        seq: u64,
        now_ms: u64,
    ) -> Result<Option<OutboxItem>, StoreError> {
        self.space.check(WritePath::Operator)?;
        let Some(v) = self.dead_letters.get(outbox_key(destination, seq))? else {
            return Ok(None);
        };
        let old = OutboxItem::decode(&v, &self.seal)?;
        let mut item = old.clone();
        item.seq = self.next_seq();
        item.attempts = 0;
        item.next_attempt_ms = now_ms;
        item.created_at_ms = now_ms;
        item.last_error.clear();
        let encoded = item.encode(&self.seal)?;
        let key = item.message_id.to_be_bytes();
        let r: TxResult<()> =
            (&self.messages, &self.outbox, &self.dead_letters).transaction(|(m, o, d)| {
                d.remove(old.key())?;
                o.insert(item.key(), encoded.as_slice())?;
                if let Some(v) = m.get(key)? {
                    if let Ok(mut rec) = super::decode_record(&v) {
                        for ds in rec
                            .deliveries
                            .iter_mut()
                            .filter(|ds| ds.destination == old.destination && ds.seq == old.seq)
                        {
                            ds.seq = item.seq;
                            ds.status = DeliveryStatus::Pending;
                            ds.attempts = 0;
                        }
                        rec.status = status_of(&rec.deliveries);
                        if let Ok(v) = super::replace_record(&v, &rec) {
                            m.insert(&key, v)?;
                        }
                    }
                }
                Ok(())
            });
        r.map_err(tx_err)?;
        Ok(Some(item))
    }

    /// Removes a dead letter for good; the message keeps a `discarded` delivery.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails, [`StoreError::DiskFull`] (nothing written) under the
    /// free-space reserve; `Ok(false)` when there is no such dead letter.
    pub fn discard(&self, destination: &str, seq: u64) -> Result<bool, StoreError> {
        self.take_dead_letter(destination, seq, "discarded by an operator")
    }

    /// One dead letter, `None` when there is no such one.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails or the item cannot be decoded.
    pub fn dead_letter(
        &self,
        destination: &str,
        seq: u64,
    ) -> Result<Option<OutboxItem>, StoreError> {
        self.dead_letters
            .get(outbox_key(destination, seq))?
            .map(|v| OutboxItem::decode(&v, &self.seal))
            .transpose()
    }

    /// Removes a dead letter whose retry went to the cluster stream (another node, or this
    /// one as the partition's owner, delivers it); the message keeps a `discarded` delivery
    /// that says so.
    ///
    /// # Errors
    ///
    /// As [`Store::discard`].
    pub fn hand_over(&self, destination: &str, seq: u64) -> Result<bool, StoreError> {
        self.take_dead_letter(destination, seq, "retried through the cluster stream")
    }

    fn take_dead_letter(
        &self,
        destination: &str,
        seq: u64,
        detail: &str,
    ) -> Result<bool, StoreError> {
        self.space.check(WritePath::Operator)?;
        let Some(v) = self.dead_letters.get(outbox_key(destination, seq))? else {
            return Ok(false);
        };
        let item = OutboxItem::decode(&v, &self.seal)?;
        let key = item.message_id.to_be_bytes();
        let r: TxResult<()> = (&self.messages, &self.dead_letters).transaction(|(m, d)| {
            d.remove(item.key())?;
            update_delivery(m, &key, &item, DeliveryStatus::Discarded, detail)?;
            Ok(())
        });
        r.map_err(tx_err)?;
        Ok(true)
    }

    /// Writes an audit record.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails; [`StoreError::DiskFull`] (nothing written) under the
    /// free-space reserve (callers skip the record with a warning: the action itself was done).
    pub fn audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        self.space.check(WritePath::Audit)?;
        let mut k = record.at_ms.to_be_bytes().to_vec();
        k.extend_from_slice(&self.next_seq().to_be_bytes());
        let v = serde_json::to_vec(record).map_err(|e| StoreError::Codec(e.to_string()))?;
        self.audit.insert(k, v)?;
        Ok(())
    }

    /// Audit records, newest first.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails.
    pub fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit
            .iter()
            .rev()
            .take(limit)
            .map(|kv| {
                let (_, v) = kv?;
                serde_json::from_slice(&v).map_err(|e| StoreError::Codec(e.to_string()))
            })
            .collect()
    }

    /// Replaces the answer recorded on a message (for `ack = "on_delivery"`).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails; [`StoreError::DiskFull`] (nothing written) under the
    /// free-space reserve.
    pub fn set_ack(&self, id: u64, code: &str, ack: &str) -> Result<(), StoreError> {
        self.space.check(WritePath::Status)?;
        self.messages.fetch_and_update(id.to_be_bytes(), |old| {
            let old = old?;
            // (`None` would remove the value: only for a value that is gone or unreadable.)
            let mut rec = super::decode_record(old).ok()?;
            rec.ack_code = code.to_string();
            rec.ack = ack.to_string();
            super::replace_record(old, &rec).ok()
        })?;
        Ok(())
    }

    /// Cluster mode: writes on message `id` the deliveries another node made of it (the
    /// partition owner's completion notice) and the status that follows from them; returns
    /// that status, or `None` when the message is not here (pruned). Writing the same
    /// deliveries again changes nothing and writes nothing.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails or the record cannot be decoded;
    /// [`StoreError::DiskFull`] (nothing written) under the free-space reserve.
    pub fn set_remote_deliveries(
        &self,
        id: u64,
        deliveries: &[DeliveryState],
    ) -> Result<Option<Status>, StoreError> {
        let key = id.to_be_bytes();
        let status = status_of(deliveries);
        loop {
            let Some(old) = self.messages.get(key)? else {
                return Ok(None);
            };
            let mut rec = super::decode_record(&old)?;
            if rec.deliveries == deliveries && rec.status == status {
                return Ok(Some(status));
            }
            self.space.check(WritePath::Delivery)?;
            rec.deliveries = deliveries.to_vec();
            rec.status = status;
            let new = super::replace_record(&old, &rec)?;
            if self
                .messages
                .compare_and_swap(key, Some(old), Some(new))?
                .is_ok()
            {
                return Ok(Some(status));
            }
        }
    }
}

pub(super) fn update_delivery(
    m: &sled::transaction::TransactionalTree,
    key: &[u8; 8],
    item: &OutboxItem,
    status: DeliveryStatus,
    detail: &str,
) -> Result<Status, ConflictableTransactionError<StoreError>> {
    let Some(v) = m.get(key)? else {
        // The message was pruned: nothing to update.
        return Ok(Status::Delivered);
    };
    let (v, status) = match with_delivery(&v, item, status, detail) {
        Ok(updated) => updated,
        Err(e) => return abort(e),
    };
    m.insert(key, v)?;
    Ok(status)
}

/// The stored record `v` with the delivery state of `item` set to `status`, re-encoded, and
/// the message's status that follows.
fn with_delivery(
    v: &[u8],
    item: &OutboxItem,
    status: DeliveryStatus,
    detail: &str,
) -> Result<(Vec<u8>, Status), StoreError> {
    with_deliveries(v, &[(item, detail, None)], status)
}

/// One delivery's new state on its record: the item, the detail, and the attempt kept on
/// the record (`None`: in `attempts`, or none).
type Update<'a> = (&'a OutboxItem, &'a str, Option<&'a Attempt>);

/// The stored record `v` with the delivery state of each item of `updates` set to `status`
/// (with its detail, and its attempt when given), re-encoded, and the message's status that
/// follows.
fn with_deliveries(
    v: &[u8],
    updates: &[Update<'_>],
    status: DeliveryStatus,
) -> Result<(Vec<u8>, Status), StoreError> {
    let mut rec = super::decode_record(v)?;
    for (item, detail, attempt) in updates {
        for d in rec
            .deliveries
            .iter_mut()
            .filter(|d| d.destination == item.destination && d.seq == item.seq)
        {
            d.status = status;
            d.attempts = item.attempts;
            d.detail = detail.chars().take(300).collect();
            if let Some(a) = attempt {
                d.attempt = Some((*a).clone());
            }
        }
    }
    rec.status = status_of(&rec.deliveries);
    Ok((super::replace_record(v, &rec)?, rec.status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::tests::{record, reopen};
    use crate::store::Durability;

    fn item(store: &Store, message_id: u64) -> OutboxItem {
        OutboxItem::sample("lab/files", message_id, store.next_seq(), 1)
    }

    #[test]
    fn deliveries_finished_one_by_one_update_the_record_and_empty_the_outbox() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Metrics::new("t");
        let s = Store::open(dir.path(), Durability::Os, &m).expect("open");
        let id = s.next_id(1000);
        let files = item(&s, id);
        let archive = OutboxItem {
            destination: "lab/archive".into(),
            ..item(&s, id)
        };
        let items = vec![files.clone(), archive.clone()];
        let mut rec = record(id, "lab", "C1", Status::Received);
        attach(&mut rec, &items);
        s.put(&rec, b"raw", &items).expect("put");

        let first = OutboxItem {
            attempts: 1,
            ..files
        };
        assert_eq!(
            s.finish(&first, true, "written").expect("finish"),
            Status::Routed
        );
        assert!(s.outbox_items("lab/files").expect("items").is_empty());
        assert_eq!(s.outbox_items("lab/archive").expect("items").len(), 1);
        let second = OutboxItem {
            attempts: 1,
            ..archive
        };
        assert_eq!(
            s.finish(&second, true, "written").expect("finish"),
            Status::Delivered
        );
        let stored = s.get(id).expect("get").expect("the record");
        assert_eq!(stored.status, Status::Delivered);
        assert!(stored
            .deliveries
            .iter()
            .all(|d| d.status == DeliveryStatus::Delivered && d.attempts == 1));
        assert!(s.outbox_items("lab/archive").expect("items").is_empty());
    }

    /// A completion notice from another node: the receiving node's record takes the
    /// deliveries and their status, keeps its body and answer, and a second notice with the
    /// same outcome changes nothing.
    #[test]
    fn remote_deliveries_are_written_once_and_keep_the_body() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Metrics::new("t");
        let s = Store::open(dir.path(), Durability::Os, &m).expect("open");
        let id = s.next_id(1000);
        s.put(&record(id, "lab", "C1", Status::Received), b"MSH|raw", &[])
            .expect("put");
        let state = |destination: &str, status| DeliveryState {
            destination: destination.into(),
            seq: 7,
            status,
            attempts: 2,
            detail: "200".into(),
            attempt: None,
        };
        let done = vec![
            state("lab/hook", DeliveryStatus::Delivered),
            state("lab/files", DeliveryStatus::DeadLetter),
        ];
        assert_eq!(
            s.set_remote_deliveries(id, &done).expect("apply"),
            Some(Status::Failed)
        );
        let stored = s.get(id).expect("get").expect("record");
        assert_eq!((stored.status, &stored.deliveries), (Status::Failed, &done));
        assert_eq!(stored.ack_code, "AA");
        assert_eq!(s.raw(id).expect("raw").as_deref(), Some(&b"MSH|raw"[..]));
        let before = s.messages.get(id.to_be_bytes()).expect("get");
        assert_eq!(
            s.set_remote_deliveries(id, &done).expect("again"),
            Some(Status::Failed)
        );
        assert_eq!(s.messages.get(id.to_be_bytes()).expect("get"), before);
        assert_eq!(
            s.set_remote_deliveries(id + 64, &done).expect("absent"),
            None
        );
    }

    fn attempt_of(item: &OutboxItem) -> Attempt {
        Attempt {
            destination: item.destination.clone(),
            attempt: item.attempts,
            at_ms: 5,
            outcome: Outcome::Delivered.into(),
            status: None,
            detail: "written".into(),
            duration_ms: 1,
            answer: None,
        }
    }

    /// A destination's answer to a batch: the items of three messages, two of them of one
    /// message, one of a message with another destination still pending, one of a message
    /// retention pruned meanwhile.
    #[test]
    fn a_batch_of_deliveries_is_settled_together_one_record_update_per_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Metrics::new("t");
        let s = Store::open(dir.path(), Durability::Os, &m).expect("open");
        let (both, half, pruned) = (s.next_id(1000), s.next_id(1000), s.next_id(1000));
        let b1 = item(&s, both);
        let b2 = OutboxItem {
            destination: "lab/archive".into(),
            ..item(&s, both)
        };
        let h1 = item(&s, half);
        let h2 = OutboxItem {
            destination: "lab/archive".into(),
            ..item(&s, half)
        };
        let p1 = item(&s, pruned);
        for (id, items) in [
            (both, vec![b1.clone(), b2.clone()]),
            (half, vec![h1.clone(), h2.clone()]),
            (pruned, vec![p1.clone()]),
        ] {
            let mut rec = record(id, "lab", "C1", Status::Received);
            attach(&mut rec, &items);
            s.put(&rec, b"raw", &items).expect("put");
        }
        s.messages.remove(pruned.to_be_bytes()).expect("prune");
        let done: Vec<OutboxItem> = [&b1, &h1, &b2, &p1]
            .into_iter()
            .map(|i| OutboxItem {
                attempts: 1,
                ..i.clone()
            })
            .collect();
        let attempts: Vec<Attempt> = done.iter().map(attempt_of).collect();
        let batch: Vec<(&OutboxItem, &Attempt, &str)> = done
            .iter()
            .zip(&attempts)
            .map(|(i, a)| (i, a, "written"))
            .collect();
        let statuses = s.finish_delivered_all(&batch).expect("settle");
        assert_eq!(
            statuses,
            [
                Status::Delivered,
                Status::Routed,
                Status::Delivered,
                Status::Delivered
            ]
        );
        let rec = s.get(both).expect("get").expect("record");
        assert_eq!(rec.status, Status::Delivered);
        assert!(rec
            .deliveries
            .iter()
            .all(|d| d.status == DeliveryStatus::Delivered
                && d.attempts == 1
                && d.detail == "written"));
        let rec = s.get(half).expect("get").expect("record");
        assert_eq!(rec.status, Status::Routed);
        assert_eq!(rec.deliveries[1].status, DeliveryStatus::Pending);
        assert!(s.get(pruned).expect("get").is_none(), "not brought back");
        assert_eq!(s.attempts_of(both).expect("attempts").len(), 2);
        assert!(
            s.attempts.is_empty(),
            "without answers, kept on the records"
        );
        assert_eq!(
            s.attempts_of(half).expect("attempts"),
            vec![attempts[1].clone()]
        );
        assert!(s.outbox_items("lab/files").expect("items").is_empty());
        assert_eq!(s.outbox_items("lab/archive").expect("items"), vec![h2]);
    }

    /// Where the attempt that delivered goes: on the record when it has no answer and the
    /// store is not encrypted, else in `attempts`, sealed; listed in order either way, after
    /// the failed attempts before it.
    #[test]
    fn the_delivering_attempt_is_kept_on_the_record_only_without_answer_or_encryption() {
        use crate::store::seal::{Seal, StoreKey};
        for seal in [
            Seal::plain(),
            Seal::new(&[StoreKey {
                id: "k1".into(),
                key: [7; 32],
            }]),
        ] {
            let sealed = seal.is_on();
            let dir = tempfile::tempdir().expect("tempdir");
            let s = Store::open_sealed(dir.path(), Durability::Os, &Metrics::new("t"), seal)
                .expect("open");
            let (quiet, answered) = (s.next_id(1000), s.next_id(1000));
            let (q, a) = (item(&s, quiet), item(&s, answered));
            for (id, i) in [(quiet, &q), (answered, &a)] {
                let mut rec = record(id, "lab", "C1", Status::Received);
                attach(&mut rec, std::slice::from_ref(i));
                s.put(&rec, b"raw", std::slice::from_ref(i)).expect("put");
            }
            let failed = Attempt {
                outcome: Outcome::Retry.into(),
                detail: "refused".into(),
                ..attempt_of(&OutboxItem {
                    attempts: 1,
                    ..q.clone()
                })
            };
            s.record_attempt(&q, &failed).expect("attempt");
            let q2 = OutboxItem {
                attempts: 2,
                ..q.clone()
            };
            let a1 = OutboxItem {
                attempts: 1,
                ..a.clone()
            };
            let (quiet_ok, answer_ok) = (
                attempt_of(&q2),
                Attempt {
                    answer: Some("MSA|AA|C1".into()),
                    ..attempt_of(&a1)
                },
            );
            s.finish_delivered_all(&[(&q2, &quiet_ok, "written"), (&a1, &answer_ok, "AA")])
                .expect("settle");
            assert_eq!(
                s.attempts_of(quiet).expect("attempts"),
                [failed.clone(), quiet_ok.clone()]
            );
            assert_eq!(s.attempts_of(answered).expect("attempts"), [answer_ok]);
            let on_record = s.get(quiet).expect("get").expect("record").deliveries[0]
                .attempt
                .clone();
            assert_eq!(on_record, (!sealed).then_some(quiet_ok), "sealed: {sealed}");
            assert!(s.get(answered).expect("get").expect("record").deliveries[0]
                .attempt
                .is_none());
            assert_eq!(s.attempts.len(), if sealed { 3 } else { 2 });
        }
    }

    #[test]
    fn a_delivery_of_a_pruned_message_finishes_without_bringing_its_record_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Metrics::new("t");
        let s = Store::open(dir.path(), Durability::Os, &m).expect("open");
        let id = s.next_id(1000);
        let files = item(&s, id);
        let mut rec = record(id, "lab", "C1", Status::Received);
        attach(&mut rec, std::slice::from_ref(&files));
        s.put(&rec, b"raw", std::slice::from_ref(&files))
            .expect("put");
        s.messages.remove(id.to_be_bytes()).expect("remove");
        assert_eq!(
            s.finish(&files, true, "written").expect("finish"),
            Status::Delivered
        );
        assert!(s.get(id).expect("get").is_none());
        assert!(s.outbox_items("lab/files").expect("items").is_empty());
    }

    #[test]
    fn items_of_a_put_cut_short_are_removed_at_open_and_only_then() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Metrics::new("t");
        let s = Store::open(dir.path(), Durability::Os, &m).expect("open");
        let stored = s.next_id(1000);
        let cut_short = s.next_id(1000);
        let kept = item(&s, stored);
        s.put(
            &record(stored, "lab", "C1", Status::Routed),
            b"raw",
            std::slice::from_ref(&kept),
        )
        .expect("put");
        // A put cut short: its item written, its record not (yet).
        let orphan = item(&s, cut_short);
        s.outbox
            .insert(orphan.key(), orphan.encode(&s.seal).expect("encode"))
            .expect("insert");
        // While the store is open, nothing takes the item away: its put may still finish.
        assert_eq!(s.outbox_items("lab/files").expect("items").len(), 2);
        s.db.flush().expect("flush");
        drop(s);
        let s = reopen(|| Store::open(dir.path(), Durability::Os, &m));
        let left = s.outbox_items("lab/files").expect("items");
        assert_eq!(
            left,
            vec![kept],
            "the orphan goes, the stored message's item stays"
        );
        assert!(
            s.next_seq() > orphan.seq,
            "a removed item's seq is not given again"
        );
    }

    /// A failed attempt's new schedule is kept in the outbox (a restart resumes it at its
    /// time, with its count) and the record says retrying with the error.
    #[test]
    fn a_retry_keeps_its_schedule_in_the_outbox_and_the_record_says_retrying() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        let m = Metrics::new("t");
        let s = Store::open(&path, Durability::Os, &m).expect("open");
        let id = s.next_id(1000);
        let queued = item(&s, id);
        let mut rec = record(id, "lab", "C1", Status::Received);
        attach(&mut rec, std::slice::from_ref(&queued));
        s.put(&rec, b"raw", std::slice::from_ref(&queued))
            .expect("put");
        let retried = OutboxItem {
            attempts: 2,
            next_attempt_ms: 65_000,
            last_error: "HTTP 503".into(),
            ..queued.clone()
        };
        s.reschedule(&retried).expect("reschedule");
        s.db.flush().expect("flush");
        drop(s);
        let s = reopen(|| Store::open(&path, Durability::Os, &m));
        let stored = s
            .outbox_get("lab/files", queued.seq)
            .expect("get")
            .expect("still queued");
        assert_eq!(stored, retried);
        let rec = s.get(id).expect("get").expect("record");
        assert_eq!(rec.status, Status::Retrying);
        let d = &rec.deliveries[0];
        assert_eq!(
            (d.status, d.attempts, d.detail.as_str()),
            (DeliveryStatus::Pending, 2, "HTTP 503")
        );
    }

    /// A dead letter leaves the outbox with its reason; an operator's retry puts it back
    /// under a new seq with its attempts reset, and a discard removes it for good while the
    /// message keeps the delivery as discarded.
    #[test]
    fn a_dead_letter_is_revived_under_a_new_seq_or_discarded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Metrics::new("t");
        let s = Store::open(dir.path(), Durability::Os, &m).expect("open");
        let id = s.next_id(1000);
        let queued = item(&s, id);
        let mut rec = record(id, "lab", "C1", Status::Received);
        attach(&mut rec, std::slice::from_ref(&queued));
        s.put(&rec, b"raw", std::slice::from_ref(&queued))
            .expect("put");
        let failed = OutboxItem {
            attempts: 3,
            last_error: "HTTP 400".into(),
            ..queued.clone()
        };
        assert_eq!(
            s.finish(&failed, false, "HTTP 400").expect("finish"),
            Status::Failed
        );
        assert!(s.outbox_items("lab/files").expect("items").is_empty());
        assert_eq!(s.dead_letter_count("lab/files").expect("count"), 1);
        assert_eq!(
            s.dead_letter("lab/files", queued.seq)
                .expect("get")
                .expect("dead letter")
                .last_error,
            "HTTP 400"
        );

        let revived = s
            .revive("lab/files", queued.seq, 5000)
            .expect("revive")
            .expect("there was one");
        assert!(revived.seq > queued.seq, "a new seq, queued after the rest");
        assert_eq!(
            (
                revived.attempts,
                revived.next_attempt_ms,
                revived.last_error.as_str()
            ),
            (0, 5000, "")
        );
        assert_eq!(revived.body, queued.body, "the same rendered bytes");
        assert_eq!(s.dead_letter_count("lab/files").expect("count"), 0);
        assert_eq!(
            s.outbox_items("lab/files").expect("items"),
            std::slice::from_ref(&revived)
        );
        let rec = s.get(id).expect("get").expect("record");
        assert_eq!(rec.status, Status::Routed);
        assert_eq!(
            (rec.deliveries[0].seq, rec.deliveries[0].status),
            (revived.seq, DeliveryStatus::Pending)
        );
        assert!(
            s.revive("lab/files", queued.seq, 6000)
                .expect("revive")
                .is_none(),
            "the old seq is gone"
        );

        let failed = OutboxItem {
            attempts: 1,
            ..revived.clone()
        };
        s.finish(&failed, false, "HTTP 400").expect("finish");
        assert!(s.discard("lab/files", revived.seq).expect("discard"));
        assert!(!s.discard("lab/files", revived.seq).expect("discard"));
        assert_eq!(s.dead_letter_count("lab/files").expect("count"), 0);
        let rec = s.get(id).expect("get").expect("record");
        assert_eq!(rec.deliveries[0].status, DeliveryStatus::Discarded);
        assert_eq!(rec.deliveries[0].detail, "discarded by an operator");
    }

    /// Each destination reads its own items only, in seq order, also when one name begins
    /// with another (the length byte in the key keeps the prefixes apart).
    #[test]
    fn outbox_items_are_per_destination_in_seq_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Metrics::new("t");
        let s = Store::open(dir.path(), Durability::Os, &m).expect("open");
        let mut files = Vec::new();
        for n in 0..4 {
            let id = s.next_id(1000 + n);
            let mine = item(&s, id);
            let other = OutboxItem {
                destination: "lab/files2".into(),
                ..item(&s, id)
            };
            let items = vec![mine.clone(), other];
            let mut rec = record(id, "lab", &format!("C{n}"), Status::Received);
            attach(&mut rec, &items);
            s.put(&rec, b"raw", &items).expect("put");
            files.push(mine);
        }
        assert_eq!(s.outbox_items("lab/files").expect("items"), files);
        assert_eq!(s.outbox_items("lab/files2").expect("items").len(), 4);
        assert_eq!(s.queue_counts("lab/files", 3).expect("counts"), (3, 0));
        assert_eq!(s.outbox_items("lab/file").expect("items"), []);
    }
}
