//! Retention: removes messages older than their channel's retention, oldest first, and only
//! messages that are finished.
//!
//! Message ids are time-ordered, so the candidates are a key range from the front of
//! `messages`. A candidate older than its channel's retention is still kept while:
//! - a delivery is pending (queued or retrying), or the record is `received` (not routed yet);
//! - a delivery is dead-lettered: the message stays until an operator retries or discards
//!   its dead letters (a discarded delivery no longer holds it);
//! - it is the revision of a Latrexa online booking that is not settled at Latrexa (neither
//!   confirmed nor rejected there, see [`super::id_map`]): such a booking has no deliveries.
//!
//! Everything else goes in one sled transaction with what hangs off it: its raw bytes, its
//! control-id, business-key and FHIR-id index entries, its attempts, the appointment ledger entries it
//! wrote last (see [`super::ledger`]), the visit timelines it is the newest message of (see
//! [`super::journey`]), and its `dedup` entry. The
//! transaction first checks that the record is still the one read (a reprocess or a dead-letter
//! retry in the meantime keeps it for the next pass), so a message is never removed from under
//! a delivery that just started.
//!
//! The `dedup` entry: a record names the exact key it claimed (`dedup_key`); a record written
//! before that field existed has it derived the way ingest derived it then
//! ([`legacy_dedup_key`]). The entry is removed only while its value starts with this
//! message's id (8 bytes, big-endian; a content digest may follow): a later message may have
//! taken the key over.
//!
//! A pass shares the machine with ingest ([`Pace`]): the engine's passes rest after each
//! slice of candidates for a multiple of the time the slice took, so a pass over a day's
//! messages takes longer but costs ingest a small share of its throughput while it runs
//! (each removal is a sled transaction, which holds sled's one write lock over the whole
//! database: every ingest write waits while it runs). A pass stopped early (shutdown) keeps
//! what it removed; the next pass starts again from the oldest message.
//!
//! Each pass writes one audit record per channel it found old messages in (action
//! `retention`, with the counts of [`ChannelPrune`]) and returns them in a [`PruneReport`]
//! for the engine to log and count. Retention removes and so is not refused under the
//! free-space reserve; its audit records are, and are then skipped with a warning.

use super::kind::Named;
use super::outbox::{AuditRecord, DeliveryState, DeliveryStatus};
use super::{keys, Status, Store, StoreError};
use channels::source::{JsonFormat, RecordFormat, WebhookFormat};
use serde::Deserialize;
use sled::transaction::TransactionError;
use sled::{IVec, Transactional};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::warn;
use transforms::model::{stable_id, BusinessKey};

/// What one pruning pass did in one channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelPrune {
    /// Messages removed.
    pub removed: u64,
    /// Old messages kept because a delivery is pending or they are not routed yet.
    pub kept_pending: u64,
    /// Old messages kept because a delivery is in the dead letters.
    pub kept_dead_lettered: u64,
    /// Old Latrexa booking revisions kept because they are not settled at Latrexa.
    pub kept_unsettled_bookings: u64,
    /// `dedup` entries removed with their messages.
    pub dedup_removed: u64,
}

impl ChannelPrune {
    /// The counts by name, as written in the audit record.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        [
            ("removed", self.removed),
            ("kept_pending", self.kept_pending),
            ("kept_dead_lettered", self.kept_dead_lettered),
            ("kept_unsettled_bookings", self.kept_unsettled_bookings),
            ("dedup_removed", self.dedup_removed),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// What one pruning pass did: per channel in which it found messages older than the
/// channel's retention (channels with none are not listed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Channel name -> what was removed and kept there.
    pub channels: BTreeMap<String, ChannelPrune>,
}

impl PruneReport {
    /// Messages removed, over all channels.
    pub fn removed(&self) -> u64 {
        self.channels.values().map(|c| c.removed).sum()
    }
}

/// Retention per channel, in days, and the default for channels not listed.
#[derive(Debug, Clone)]
pub struct RetentionPolicy {
    /// Days for channels not in `per_channel`.
    pub default_days: u32,
    /// Channel name -> days.
    pub per_channel: HashMap<String, u32>,
}

impl RetentionPolicy {
    fn cutoff_ms(&self, channel: &str, now_ms: u64) -> u64 {
        let days = self
            .per_channel
            .get(channel)
            .copied()
            .unwrap_or(self.default_days);
        now_ms.saturating_sub(u64::from(days) * 86_400_000)
    }
}

/// How a pass shares the machine with ingest: after every `slice` candidates it rests for
/// `rest_factor` times the time the slice took (so it works `1 / (1 + rest_factor)` of the
/// wall time), and it stops at the next slice once `stop` is set. The default never rests
/// and never stops (tests, tools).
#[derive(Debug, Clone, Default)]
pub struct Pace {
    /// Candidates looked at between two rests; 0: no rest.
    pub slice: usize,
    /// The rest after a slice, as a multiple of the slice's time.
    pub rest_factor: u32,
    /// Set to end the pass early (what it removed stays removed).
    pub stop: Arc<AtomicBool>,
}

impl Pace {
    /// The engine's pace: slices of 64 candidates, resting 19 times their time (the pass
    /// works a twentieth of the wall time, about 1,700 removals a second on the 2-core
    /// machine of docs/PERFORMANCE.md).
    pub fn shared(stop: Arc<AtomicBool>) -> Pace {
        Pace {
            slice: 64,
            rest_factor: 19,
            stop,
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Rests after a slice that took `took`.
    fn rest(&self, took: Duration) {
        let rest = took.saturating_mul(self.rest_factor);
        // In short steps, so that a stop is seen soon.
        let until = Instant::now() + rest;
        while !self.stopped() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }
}

/// The fields of a stored [`super::MessageRecord`] that retention decides on; the rest
/// (answer, errors, ...) is not decoded.
#[derive(Debug, Deserialize)]
struct Candidate {
    channel: String,
    received_at_ms: u64,
    format: Named<RecordFormat>,
    status: Status,
    control_id: String,
    sending_application: String,
    sending_facility: String,
    #[serde(default)]
    deliveries: Vec<DeliveryState>,
    #[serde(default)]
    business_keys: Vec<BusinessKey>,
    /// The exact `dedup` key the message claimed; empty in records written before ingest
    /// kept it (and in messages that claimed none).
    #[serde(default)]
    dedup_key: String,
    /// The answer sent: for FHIR messages it names the resources indexed in `fhir_ids`.
    #[serde(default)]
    ack: String,
}

/// Why a candidate stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Remove,
    KeepPending,
    KeepDeadLettered,
    KeepUnsettledBooking,
}

fn verdict(c: &Candidate, id: u64, unsettled_bookings: &HashSet<u64>) -> Verdict {
    if unsettled_bookings.contains(&id) {
        Verdict::KeepUnsettledBooking
    } else if c.status == Status::Received
        || c.deliveries
            .iter()
            .any(|d| d.status == DeliveryStatus::Pending)
    {
        Verdict::KeepPending
    } else if c
        .deliveries
        .iter()
        .any(|d| d.status == DeliveryStatus::DeadLetter)
    {
        Verdict::KeepDeadLettered
    } else {
        Verdict::Remove
    }
}

/// The `dedup` key of a record without `dedup_key`, derived as ingest did when it wrote
/// such records: HL7 v2 by MSH-3, MSH-4 and MSH-10; the HTTP sources by channel and the
/// control id, which was their resend key (Buktor: a hash of the `event_id` the control id
/// holds). `None` for formats that claim no key (Latrexa bookings, DICOM records) and for a
/// format this version does not know (a newer version, which keeps `dedup_key`).
fn legacy_dedup_key(c: &Candidate) -> Option<String> {
    if c.control_id.is_empty() {
        return None;
    }
    match c.format.known()? {
        RecordFormat::Hl7v2 => Some(format!(
            "{}\u{1f}{}\u{1f}{}",
            c.sending_application, c.sending_facility, c.control_id
        )),
        RecordFormat::Json(
            JsonFormat::Fhir | JsonFormat::Webhook(WebhookFormat::Px360 | WebhookFormat::Opsport),
        ) => Some(format!("http\u{1f}{}\u{1f}{}", c.channel, c.control_id)),
        RecordFormat::Json(JsonFormat::Webhook(WebhookFormat::Buktor)) => Some(format!(
            "http\u{1f}{}\u{1f}{}",
            c.channel,
            stable_id(&["buktor", &c.control_id])
        )),
        RecordFormat::Latrexa | RecordFormat::Dicom => None,
    }
}

/// Whether a `dedup` value names message `key` (its first 8 bytes are the id).
fn names(value: &[u8], key: &[u8; 8]) -> bool {
    value.get(..8) == Some(&key[..])
}

impl Store {
    /// Removes what is older than the policy allows at `now_ms` (the clock is passed in) and
    /// is finished (see the module documentation), then writes one audit record per channel
    /// it found old messages in.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails or a record cannot be decoded; what was removed before
    /// stays removed.
    pub fn prune(&self, policy: &RetentionPolicy, now_ms: u64) -> Result<PruneReport, StoreError> {
        self.prune_paced(policy, now_ms, &Pace::default())
    }

    /// [`Store::prune`] at `pace` (see [`Pace`]): the engine's passes, which share the
    /// machine with ingest. A pass stopped early writes its audit records for what it did.
    ///
    /// # Errors
    ///
    /// As [`Store::prune`].
    pub fn prune_paced(
        &self,
        policy: &RetentionPolicy,
        now_ms: u64,
        pace: &Pace,
    ) -> Result<PruneReport, StoreError> {
        let shortest = policy
            .per_channel
            .values()
            .copied()
            .chain([policy.default_days])
            .min()
            .unwrap_or(policy.default_days);
        // Nothing younger than the shortest retention can be due, so the scan stops there.
        let horizon = now_ms.saturating_sub(u64::from(shortest) * 86_400_000) << 20;
        let unsettled_bookings = self.unsettled_booking_messages()?;
        let mut report = PruneReport::default();
        let mut slice = (Instant::now(), 0);
        for item in self.messages.range(..horizon.to_be_bytes()) {
            if pace.slice > 0 {
                slice.1 += 1;
                if slice.1 >= pace.slice {
                    pace.rest(slice.0.elapsed());
                    slice = (Instant::now(), 0);
                }
                if pace.stopped() {
                    break;
                }
            }
            let (k, v) = item?;
            let Ok(key) = <[u8; 8]>::try_from(k.as_ref()) else {
                continue;
            };
            let c: Candidate = serde_json::from_slice(super::value::open(&v)?.json())
                .map_err(|e| StoreError::Codec(e.to_string()))?;
            if c.received_at_ms >= policy.cutoff_ms(&c.channel, now_ms) {
                continue;
            }
            let counts = report.channels.entry(c.channel.clone()).or_default();
            match verdict(&c, u64::from_be_bytes(key), &unsettled_bookings) {
                Verdict::KeepPending => counts.kept_pending += 1,
                Verdict::KeepDeadLettered => counts.kept_dead_lettered += 1,
                Verdict::KeepUnsettledBooking => counts.kept_unsettled_bookings += 1,
                Verdict::Remove => {
                    if let Some(dedup_removed) = self.remove_message(&key, &v, &c)? {
                        counts.removed += 1;
                        counts.dedup_removed += u64::from(dedup_removed);
                    }
                }
            }
        }
        for (channel, counts) in &report.channels {
            let record = AuditRecord {
                at_ms: now_ms,
                who: "retention".into(),
                action: super::kind::AuditAction::Retention.into(),
                target: format!("channel {channel}"),
                count: usize::try_from(counts.removed).unwrap_or(usize::MAX),
                counts: counts.counts(),
            };
            if let Err(e) = self.audit(&record) {
                warn!(channel = %channel, error = %e, "Cannot write the audit record of a retention pass; skipped.");
            }
        }
        Ok(report)
    }

    /// Removes message `key` and what hangs off it in one transaction, provided its record
    /// is still `seen`. `None` when the record changed (it is looked at again next pass),
    /// else whether its `dedup` entry went too.
    fn remove_message(
        &self,
        key: &[u8; 8],
        seen: &IVec,
        c: &Candidate,
    ) -> Result<Option<bool>, StoreError> {
        let id = u64::from_be_bytes(*key);
        let attempts: Vec<IVec> = self
            .attempts
            .scan_prefix(key)
            .keys()
            .collect::<Result<_, _>>()?;
        let control = (!c.control_id.is_empty()).then(|| {
            let mut idx = c.control_id.as_bytes().to_vec();
            idx.push(0);
            idx.extend_from_slice(key);
            idx
        });
        let business: Vec<Vec<u8>> = c
            .business_keys
            .iter()
            .filter(|k| keys::indexable(k))
            .map(|k| keys::index_key(k, id))
            .collect();
        let fhir_ids =
            self.fhir_index_keys_any_form(&c.channel, id, (&c.format, c.status, c.ack.as_str()));
        let ledger_rows = self.ledger_keys_of(id)?;
        let journey_rows = self.journey_rows_of(id)?;
        let dedup_key = if c.dedup_key.is_empty() {
            legacy_dedup_key(c)
        } else {
            Some(c.dedup_key.clone())
        };
        let r: Result<Option<bool>, TransactionError<StoreError>> = (
            &self.messages,
            &self.raw,
            &self.by_control_id,
            &self.by_business_key,
            &self.dedup,
            &self.attempts,
            &self.ledger,
            &self.ledger_by_message,
            &self.fhir_ids,
            &self.journey,
            &self.journey_by_message,
        )
            .transaction(
                |(
                    m,
                    raw,
                    by_control,
                    by_key,
                    dedup,
                    att,
                    ledger,
                    by_message,
                    by_fhir_id,
                    journey,
                    journey_by_message,
                )| {
                    if m.get(key)?.as_ref() != Some(seen) {
                        return Ok(None);
                    }
                    m.remove(&key[..])?;
                    raw.remove(&key[..])?;
                    if let Some(idx) = &control {
                        by_control.remove(idx.as_slice())?;
                    }
                    for k in &business {
                        by_key.remove(k.as_slice())?;
                    }
                    for k in &fhir_ids {
                        by_fhir_id.remove(k.as_slice())?;
                    }
                    for k in &attempts {
                        att.remove(k.clone())?;
                    }
                    // The appointment ledger entries this message wrote last go with it; an entry
                    // a later message rewrote names that message and stays.
                    for (row, ledger_key) in &ledger_rows {
                        by_message.remove(row.as_slice())?;
                        let names_this = ledger
                            .get(ledger_key.as_slice())?
                            .is_some_and(|v| v.get(..8) == Some(&key[..]));
                        if names_this {
                            ledger.remove(ledger_key.as_slice())?;
                        }
                    }
                    // The visit timelines this message is the newest of (see `super::journey`).
                    for k in &journey_rows.rows {
                        journey.remove(k.as_slice())?;
                    }
                    for k in &journey_rows.index {
                        journey_by_message.remove(k.as_slice())?;
                    }
                    let mut dedup_removed = false;
                    if let Some(k) = &dedup_key {
                        if dedup.get(k.as_bytes())?.is_some_and(|v| names(&v, key)) {
                            dedup.remove(k.as_bytes())?;
                            dedup_removed = true;
                        }
                    }
                    Ok(Some(dedup_removed))
                },
            );
        r.map_err(|e| match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::Sled(e.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::id_map::{BookingEntry, BookingState, RecordChange};
    use crate::store::outbox::OutboxItem;
    use crate::store::Durability;
    use crate::store::MessageRecord;
    use transforms::model::BusinessKeyKind;

    const DAY: u64 = 86_400_000;
    /// The injected clock: "now" for every pass below.
    const NOW: u64 = 400 * DAY;

    fn store(dir: &tempfile::TempDir) -> Store {
        Store::open(dir.path(), Durability::Os, &Metrics::new("t")).expect("open")
    }

    fn policy() -> RetentionPolicy {
        RetentionPolicy {
            default_days: 90,
            per_channel: [("b".to_string(), 10)].into_iter().collect(),
        }
    }

    fn record(store: &Store, channel: &str, at_ms: u64, control_id: &str) -> MessageRecord {
        MessageRecord {
            id: store.next_id(at_ms),
            channel: channel.into(),
            received_at_ms: at_ms,
            peer: String::new(),
            format: RecordFormat::Hl7v2.into(),
            message_type: "ADT^A04".into(),
            control_id: control_id.into(),
            sending_application: "HIS".into(),
            sending_facility: "MAIN".into(),
            version: "2.5".into(),
            charset: "utf-8".into(),
            size: 3,
            truncated: false,
            status: Status::Filtered,
            ack_code: "AA".into(),
            ack: String::new(),
            errors: vec![],
            config_version: String::new(),
            deliveries: vec![],
            business_keys: vec![],
            dedup_key: String::new(),
            resent_from: None,
        }
    }

    fn item(store: &Store, message_id: u64) -> OutboxItem {
        OutboxItem {
            idempotency_key: "k".into(),
            body: b"raw".to_vec(),
            ..OutboxItem::sample("a/x", message_id, store.next_seq(), NOW)
        }
    }

    /// A Latrexa booking revision as the bookings worker stores it, in `state`.
    fn booking(store: &Store, at_ms: u64, latrexa_id: &str, state: BookingState) -> u64 {
        let mut rec = record(store, "lx", at_ms, "");
        rec.control_id = rec.id.to_string();
        rec.format = RecordFormat::Latrexa.into();
        rec.message_type = "booking.create".into();
        rec.status = Status::Received;
        let mut entry = crate::store::id_map::tests::entry(rec.id, latrexa_id);
        entry.updated_at_ms = at_ms;
        store.put_booking(&rec, b"{}", &entry).expect("put booking");
        let status = match &state {
            BookingState::Confirmed => Some(Status::Delivered),
            BookingState::Rejected { .. } => Some(Status::Rejected),
            BookingState::Failed { .. } => Some(Status::Failed),
            BookingState::Received | BookingState::HisAccepted | BookingState::Refused { .. } => {
                Some(Status::Retrying)
            }
        };
        let entry = BookingEntry { state, ..entry };
        store
            .advance_booking(
                "lx",
                &entry,
                &RecordChange {
                    status,
                    ..RecordChange::default()
                },
            )
            .expect("advance");
        rec.id
    }

    /// Writes `rec` as ingest does once records name their `dedup` key.
    fn put_with_dedup_key(store: &Store, rec: &MessageRecord, dedup_key: &str) {
        store.put(rec, b"raw", &[]).expect("put");
        let mut v = serde_json::to_value(rec).expect("json");
        v["dedup_key"] = dedup_key.into();
        let key = rec.id.to_be_bytes();
        let old = store.messages.get(key).expect("get").expect("record");
        let value = crate::store::value::record_value(
            serde_json::to_vec(&v).expect("encode"),
            crate::store::value::open(&old).expect("open").raw(),
        );
        store.messages.insert(key, value).expect("insert");
    }

    /// A dedup value of the new shape: the id, then a 32-byte content digest.
    fn id_and_digest(id: u64) -> Vec<u8> {
        let mut v = id.to_be_bytes().to_vec();
        v.extend_from_slice(&[0xD1; 32]);
        v
    }

    fn exists(s: &Store, id: u64) -> bool {
        let rec = s.get(id).expect("get").is_some();
        assert_eq!(
            s.raw(id).expect("raw").is_some(),
            rec,
            "raw bytes go with the record"
        );
        rec
    }

    #[test]
    fn a_paced_pass_removes_the_same_and_a_stopped_one_stops_between_slices() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(&dir);
        let ids: Vec<u64> = (0..5)
            .map(|n| {
                let r = record(&s, "a", DAY + n, &format!("C{n}"));
                s.put(&r, b"raw", &[]).expect("put");
                r.id
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(true));
        let stopped = Pace {
            slice: 2,
            rest_factor: 0,
            stop: stop.clone(),
        };
        let report = s
            .prune_paced(&policy(), NOW, &stopped)
            .expect("stopped pass");
        assert_eq!(report.removed(), 0, "a stopped pass removes nothing more");
        assert!(ids.iter().all(|id| exists(&s, *id)));
        stop.store(false, Ordering::Relaxed);
        let paced = Pace {
            rest_factor: 1,
            ..stopped
        };
        let report = s.prune_paced(&policy(), NOW, &paced).expect("paced pass");
        assert_eq!(report.removed(), 5, "resting between slices skips nothing");
        assert!(ids.iter().all(|id| !exists(&s, *id)));
    }

    #[tokio::test]
    async fn an_appointment_ledger_entry_goes_only_with_the_last_message_that_wrote_it() {
        use crate::store::ledger::{AppointmentRef, LedgerEntry, LedgerWrite};
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(&dir);
        let appointment = AppointmentRef {
            placer_id: Some("PL-1".into()),
            filler_id: Some("HIS-1".into()),
            moved: false,
        };
        let deliver = |r: &MessageRecord, slot: &str| {
            s.put(r, b"raw", &[]).expect("put");
            let i = item(&s, r.id);
            s.route(r.id, std::slice::from_ref(&i)).expect("route");
            let w = LedgerWrite {
                destination: i.destination.clone(),
                entry: LedgerEntry {
                    appointment: appointment.clone(),
                    slot: slot.into(),
                    status: "Confirmed".into(),
                    closed: false,
                    remote_id: None,
                    body: "{}".into(),
                    message_id: r.id,
                    updated_at_ms: r.received_at_ms,
                },
            };
            s.finish_with_ledger(&i, true, "ok", Some(&w))
                .expect("delivered");
        };
        let booked = record(&s, "a", NOW - 200 * DAY, "S12");
        deliver(&booked, "10:00");
        let moved = record(&s, "a", NOW - 10 * DAY, "S13");
        deliver(&moved, "11:00");
        s.prune(&policy(), NOW).expect("prune");
        assert!(!exists(&s, booked.id), "the old message goes");
        let kept = s.ledger_get("a/x", &appointment).expect("get");
        assert_eq!(
            kept.map(|e| e.slot).as_deref(),
            Some("11:00"),
            "the S13 wrote it last"
        );
        s.prune(&policy(), NOW + 100 * DAY).expect("prune");
        assert!(!exists(&s, moved.id));
        assert_eq!(s.ledger_get("a/x", &appointment).expect("get"), None);
        assert!(s.ledger_by_message.is_empty());
    }

    /// A visit's timeline stays while a later message of the visit is kept, and goes whole
    /// with its newest message.
    #[tokio::test]
    async fn a_visit_timeline_goes_with_the_newest_message_of_the_visit() {
        use transforms::journey::{JourneyDelta, JourneyStep, StepKind};
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(&dir);
        let write = |r: &MessageRecord, kind: StepKind| {
            let step: JourneyStep =
                serde_json::from_value(serde_json::json!({"kind": kind})).expect("step");
            s.journey_step("v:V-9", (r.id, 0), |_| JourneyDelta {
                steps: vec![step],
                cancels: vec![],
            })
            .expect("step");
            s.put(r, b"raw", &[]).expect("put");
            let i = item(&s, r.id);
            s.route(r.id, std::slice::from_ref(&i)).expect("route");
            s.finish_with_ledger(&i, true, "ok", None)
                .expect("delivered");
        };
        let admitted = record(&s, "a", NOW - 200 * DAY, "A01");
        write(&admitted, StepKind::Admission);
        let discharged = record(&s, "a", NOW - 10 * DAY, "A03");
        write(&discharged, StepKind::Discharge);
        s.prune(&policy(), NOW).expect("prune");
        assert!(!exists(&s, admitted.id), "the old message goes");
        let t = s.journey_timeline("v:V-9").expect("read");
        assert_eq!(
            t.steps.len(),
            2,
            "the visit's newest message is kept: {t:?}"
        );
        s.prune(&policy(), NOW + 100 * DAY).expect("prune");
        assert!(!exists(&s, discharged.id));
        assert!(s.journey_timeline("v:V-9").expect("read").steps.is_empty());
        assert!(s.journey.is_empty() && s.journey_by_message.is_empty());
    }

    #[tokio::test]
    async fn keeps_what_is_not_finished_and_audits_the_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(&dir);
        // Channel a: default 90 days. Channel b: 10 days. Ids are made in time order.
        let old = NOW - 200 * DAY;
        let unrouted = {
            let mut r = record(&s, "a", old, "UNROUTED");
            r.status = Status::Received;
            s.put(&r, b"raw", &[]).expect("put");
            r.id
        };
        let pending = record(&s, "a", old, "PENDING");
        let dead = record(&s, "a", old, "DEAD");
        let delivered = record(&s, "a", old, "DELIVERED");
        for r in [&pending, &dead, &delivered] {
            s.put(r, b"raw", &[]).expect("put");
        }
        let pending_item = item(&s, pending.id);
        let dead_item = item(&s, dead.id);
        let delivered_item = item(&s, delivered.id);
        for (r, i) in [
            (&pending, &pending_item),
            (&dead, &dead_item),
            (&delivered, &delivered_item),
        ] {
            s.route(r.id, std::slice::from_ref(i)).expect("route");
        }
        s.record_attempt(
            &dead_item,
            &crate::store::outbox::Attempt {
                destination: dead_item.destination.clone(),
                attempt: 1,
                at_ms: NOW,
                outcome: crate::store::kind::Outcome::DeadLetter.into(),
                status: Some(400),
                detail: "bad".into(),
                duration_ms: 1,
                answer: None,
            },
        )
        .expect("attempt");
        s.finish(&dead_item, false, "bad request").expect("dead");
        s.finish(&delivered_item, true, "ok").expect("delivered");
        let retrying = booking(&s, old, "LX-RETRY", BookingState::Received);
        let accepted = booking(&s, old, "LX-HIS", BookingState::HisAccepted);
        let failed = booking(
            &s,
            old,
            "LX-FAILED",
            BookingState::Failed {
                reason: "404".into(),
            },
        );
        let confirmed = booking(&s, old, "LX-OK", BookingState::Confirmed);
        let old_b = record(&s, "b", NOW - 11 * DAY, "OLD-B");
        let young_a = record(&s, "a", NOW - 80 * DAY, "YOUNG-A");
        let young_b = record(&s, "b", NOW - 9 * DAY, "YOUNG-B");
        for r in [&old_b, &young_a, &young_b] {
            s.put(r, b"raw", &[]).expect("put");
        }

        let report = s.prune(&policy(), NOW).expect("prune");
        let a = ChannelPrune {
            removed: 1,
            kept_pending: 2,
            kept_dead_lettered: 1,
            ..ChannelPrune::default()
        };
        let lx = ChannelPrune {
            removed: 1,
            kept_unsettled_bookings: 3,
            ..ChannelPrune::default()
        };
        let b = ChannelPrune {
            removed: 1,
            ..ChannelPrune::default()
        };
        assert_eq!(
            report.channels,
            [
                ("a".to_string(), a),
                ("b".to_string(), b),
                ("lx".to_string(), lx)
            ]
            .into_iter()
            .collect()
        );
        assert_eq!(report.removed(), 3);
        for (id, kept, what) in [
            (unrouted, true, "not routed yet"),
            (pending.id, true, "pending delivery"),
            (dead.id, true, "dead-lettered delivery"),
            (delivered.id, false, "delivered"),
            (retrying, true, "booking still retrying"),
            (accepted, true, "booking accepted by the HIS, not confirmed"),
            (failed, true, "booking Latrexa refused our answer for"),
            (confirmed, false, "booking confirmed"),
            (old_b.id, false, "older than channel b's 10 days"),
            (young_a.id, true, "younger than 90 days"),
            (young_b.id, true, "younger than 10 days"),
        ] {
            assert_eq!(exists(&s, id), kept, "{what}");
        }
        assert_eq!(
            s.dead_letters(None, None, 10).expect("dead letters").len(),
            1,
            "the dead letter survives with its message"
        );
        assert_eq!(s.attempts_of(dead.id).expect("attempts").len(), 1);
        assert!(
            s.booking_entry("lx", "LX-OK").expect("entry").is_some(),
            "id map entries are never pruned"
        );
        // The audit records list the counts, one per channel.
        let audit: BTreeMap<String, AuditRecord> = s
            .audit_log(10)
            .expect("audit")
            .into_iter()
            .map(|r| (r.target.clone(), r))
            .collect();
        assert_eq!(audit.len(), 3, "{audit:?}");
        let rec = &audit["channel a"];
        assert_eq!(
            (rec.who.as_str(), rec.action.known(), rec.at_ms, rec.count),
            (
                "retention",
                Some(super::super::kind::AuditAction::Retention),
                NOW,
                1
            )
        );
        assert_eq!(rec.counts, a.counts());
        assert_eq!(rec.counts["kept_dead_lettered"], 1);
        assert_eq!(audit["channel lx"].counts["kept_unsettled_bookings"], 3);

        // Once finished, they go on the next pass: delivered, discarded, settled.
        s.finish(&pending_item, true, "ok").expect("finish");
        assert!(s.discard("a/x", dead_item.seq).expect("discard"));
        let mut e = s
            .booking_entry("lx", "LX-RETRY")
            .expect("get")
            .expect("entry");
        e.state = BookingState::Rejected {
            reason: "slot unavailable".into(),
        };
        s.advance_booking("lx", &e, &RecordChange::default())
            .expect("advance");
        let report = s.prune(&policy(), NOW).expect("prune");
        assert_eq!(report.channels["a"].removed, 2);
        assert_eq!(report.channels["a"].kept_pending, 1, "the unrouted one");
        assert_eq!(report.channels["lx"].removed, 1);
        assert_eq!(report.channels["lx"].kept_unsettled_bookings, 2);
        assert!(!exists(&s, pending.id) && !exists(&s, dead.id) && !exists(&s, retrying));
        assert!(s.attempts_of(dead.id).expect("attempts").is_empty());
    }

    #[tokio::test]
    async fn dedup_entries_go_with_their_messages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(&dir);
        let old = NOW - 100 * DAY;
        // Records written before `dedup_key`: HL7 by sender key, HTTP bodies by channel.
        let hl7 = record(&s, "a", old, "C1");
        let hl7_key = "HIS\u{1f}MAIN\u{1f}C1";
        let mut fhir = record(&s, "web", old, "c0ffee");
        fhir.format = RecordFormat::Json(JsonFormat::Fhir).into();
        let fhir_key = "http\u{1f}web\u{1f}c0ffee";
        let mut buktor = record(&s, "web", old, "evt-1");
        buktor.format = RecordFormat::Json(JsonFormat::Webhook(WebhookFormat::Buktor)).into();
        let buktor_key = format!("http\u{1f}web\u{1f}{}", stable_id(&["buktor", "evt-1"]));
        for (r, k) in [(&hl7, hl7_key), (&fhir, fhir_key), (&buktor, &buktor_key)] {
            // Entries of that time held the id alone.
            s.dedup.insert(k, &r.id.to_be_bytes()).expect("dedup");
            s.put(r, b"raw", &[]).expect("put");
        }
        // A record naming its key; the value is the id and a content digest.
        let named = record(&s, "a", old, "C2");
        let named_key = "a\u{1f}HIS\u{1f}MAIN\u{1f}C2";
        s.dedup
            .insert(named_key, id_and_digest(named.id))
            .expect("dedup");
        put_with_dedup_key(&s, &named, named_key);
        // An old message whose key a later message took over: the entry stays.
        let taken = record(&s, "a", old, "C3");
        let later = record(&s, "a", NOW, "C3");
        let taken_key = "a\u{1f}HIS\u{1f}MAIN\u{1f}C3";
        put_with_dedup_key(&s, &taken, taken_key);
        s.dedup
            .insert(taken_key, id_and_digest(later.id))
            .expect("dedup");
        put_with_dedup_key(&s, &later, taken_key);
        // A young message keeps its entry.
        let young = record(&s, "a", NOW - DAY, "C4");
        let young_key = "a\u{1f}HIS\u{1f}MAIN\u{1f}C4";
        s.dedup
            .insert(young_key, id_and_digest(young.id))
            .expect("dedup");
        put_with_dedup_key(&s, &young, young_key);

        let report = s.prune(&policy(), NOW).expect("prune");
        assert_eq!(report.removed(), 5);
        assert_eq!(report.channels["a"].dedup_removed, 2);
        assert_eq!(report.channels["web"].dedup_removed, 2);
        for k in [hl7_key, fhir_key, buktor_key.as_str(), named_key] {
            assert!(
                s.dedup.get(k).expect("get").is_none(),
                "{k:?} pruned with its message"
            );
        }
        assert_eq!(
            s.dedup.get(taken_key).expect("get").as_deref(),
            Some(&id_and_digest(later.id)[..]),
            "the later owner keeps its entry"
        );
        assert!(s.dedup.get(young_key).expect("get").is_some());
        assert_eq!(s.dedup.len(), 2);
        assert!(!exists(&s, taken.id) && exists(&s, later.id) && exists(&s, young.id));
        assert_eq!(
            s.by_control_id.len(),
            2,
            "control-id entries go with their messages"
        );
    }

    #[tokio::test]
    async fn fhir_id_entries_go_with_their_messages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(&dir);
        let fhir = |at_ms: u64, id: &str| {
            let mut r = record(&s, "web", at_ms, "");
            r.format = RecordFormat::Json(JsonFormat::Fhir).into();
            r.ack = format!(r#"{{"resourceType":"Patient","id":"{id}"}}"#);
            s.put(&r, b"{}", &[]).expect("put");
            r
        };
        let old = fhir(NOW - 100 * DAY, "p-old");
        let young = fhir(NOW - DAY, "p-young");
        assert_eq!(s.fhir_ids.len(), 2);
        let report = s.prune(&policy(), NOW).expect("prune");
        assert_eq!(report.removed(), 1);
        assert!(!exists(&s, old.id) && exists(&s, young.id));
        assert_eq!(s.fhir_ids.len(), 1, "the old message's entry went with it");
        assert!(s
            .fhir_resource("web", "Patient", "p-young")
            .expect("read")
            .is_some());
        assert!(s
            .fhir_resource("web", "Patient", "p-old")
            .expect("read")
            .is_none());
    }

    #[tokio::test]
    async fn a_record_changed_since_it_was_read_is_left_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(&dir);
        let mut r = record(&s, "a", NOW - 100 * DAY, "C1");
        r.business_keys = vec![BusinessKey {
            kind: BusinessKeyKind::PatientId,
            value: "P1".into(),
        }];
        s.put(&r, b"raw", &[]).expect("put");
        let key = r.id.to_be_bytes();
        let seen = s.messages.get(key).expect("get").expect("record");
        let c: Candidate =
            serde_json::from_slice(crate::store::value::open(&seen).expect("open").json())
                .expect("candidate");
        // A late answer is recorded on it between the read and the removal.
        s.set_ack(r.id, "AE", "MSA|AE|C1").expect("set ack");
        assert_eq!(s.remove_message(&key, &seen, &c).expect("remove"), None);
        assert!(exists(&s, r.id));
        assert_eq!((s.by_control_id.len(), s.by_business_key.len()), (1, 1));
        // Unchanged, it goes with its index entries.
        let seen = s.messages.get(key).expect("get").expect("record");
        assert_eq!(
            s.remove_message(&key, &seen, &c).expect("remove"),
            Some(false)
        );
        assert!(!exists(&s, r.id));
        assert_eq!((s.by_control_id.len(), s.by_business_key.len()), (0, 0));
    }
}
