//! Kinds as stored records name them: a record's `format`, an outbox item's `payload`, an
//! attempt's `outcome`, an audit record's `action`. Each is a closed set of the engine's own ([`Kind`]), kept in the store,
//! sent between cluster nodes and shown by the admin API as its name, the same string every
//! earlier version wrote.
//!
//! A name this version does not know (a record a newer version wrote, read after a downgrade
//! or from a newer cluster node) is read as [`Named::Unknown`], never as one of the known
//! kinds and never as an error: the record stays readable (listed, shown, removed by
//! retention), a rewrite of it (a status update) writes the name back unchanged, and each
//! place that decides by the kind says what it does with one it does not know (the engine
//! finds no canonical mapping for an unknown format, refuses to resend it, ...). An error
//! instead would make every listing, retention pass and replica that meets the record fail.

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A closed set of kinds that the store keeps by name.
pub trait Kind: Copy + Eq + 'static {
    /// Every kind.
    fn all() -> impl Iterator<Item = Self>;

    /// The name stored records keep.
    fn name(self) -> &'static str;
}

/// A kind as a stored record names it: one this version knows, or the name of one it does not
/// (see the module documentation). Serialized as the name alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Named<T> {
    /// A kind this version knows.
    Known(T),
    /// A name this version does not know, kept as read.
    Unknown(String),
}

impl<T: Kind> Named<T> {
    /// The kind, when this version knows it.
    pub fn known(&self) -> Option<T> {
        match self {
            Named::Known(k) => Some(*k),
            Named::Unknown(_) => None,
        }
    }

    /// The name, as stored.
    pub fn as_str(&self) -> &str {
        match self {
            Named::Known(k) => k.name(),
            Named::Unknown(name) => name,
        }
    }
}

impl<T> From<T> for Named<T> {
    fn from(kind: T) -> Self {
        Named::Known(kind)
    }
}

/// A stored kind equals a known kind only when it is that kind (an unknown name equals none).
impl<T: Kind> PartialEq<T> for Named<T> {
    fn eq(&self, other: &T) -> bool {
        self.known() == Some(*other)
    }
}

impl<T: Kind> fmt::Display for Named<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<T: Kind> Serialize for Named<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de, T: Kind> Deserialize<'de> for Named<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name<T>(std::marker::PhantomData<T>);

        impl<T: Kind> Visitor<'_> for Name<T> {
            type Value = Named<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a kind's name")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<Named<T>, E> {
                Ok(match T::all().find(|k| k.name() == name) {
                    Some(k) => Named::Known(k),
                    None => Named::Unknown(name.to_owned()),
                })
            }
        }

        d.deserialize_str(Name(std::marker::PhantomData))
    }
}

impl Kind for channels::source::RecordFormat {
    fn all() -> impl Iterator<Item = Self> {
        channels::source::RecordFormat::all()
    }

    fn name(self) -> &'static str {
        self.as_str()
    }
}

/// What an outbox item carries ([`super::outbox::OutboxItem::payload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemPayload {
    /// A body rendered by a route's payload (`hl7`, `canonical`, a vendor's, ...).
    Rendered(channels::kind::PayloadKind),
    /// `mapping_failed`: the rendering failed; the delivery worker moves the item to the dead
    /// letters at once with its `last_error` (the field path and the reason).
    MappingFailed,
}

impl Kind for ItemPayload {
    fn all() -> impl Iterator<Item = Self> {
        channels::kind::PayloadKind::all()
            .map(ItemPayload::Rendered)
            .chain([ItemPayload::MappingFailed])
    }

    fn name(self) -> &'static str {
        match self {
            ItemPayload::Rendered(kind) => kind.as_str(),
            ItemPayload::MappingFailed => "mapping_failed",
        }
    }
}

/// How one delivery attempt ended ([`super::outbox::Attempt::outcome`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// `delivered`: the destination confirmed it.
    Delivered,
    /// `retry`: it failed and is tried again later.
    Retry,
    /// `dead_letter`: it failed for good and went to the dead letters.
    DeadLetter,
}

impl Kind for Outcome {
    fn all() -> impl Iterator<Item = Self> {
        [Outcome::Delivered, Outcome::Retry, Outcome::DeadLetter].into_iter()
    }

    fn name(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retry => "retry",
            Outcome::DeadLetter => "dead_letter",
        }
    }
}

/// What an audit record tells ([`super::outbox::AuditRecord::action`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// `reprocess`: one message reprocessed.
    Reprocess,
    /// `reprocess_bulk`: one `POST /api/reprocess`, with its filter and counts.
    ReprocessBulk,
    /// `resend`: a message edited and sent again.
    Resend,
    /// `dead_letter_retry`: dead letters queued again.
    DeadLetterRetry,
    /// `dead_letter_discard`: dead letters discarded.
    DeadLetterDiscard,
    /// `channel_pause`: a channel paused.
    ChannelPause,
    /// `channel_resume`: a channel resumed.
    ChannelResume,
    /// `reload`: a configuration applied.
    Reload,
    /// `reload_refused`: a configuration refused; the running one stays.
    ReloadRefused,
    /// `retention`: one channel's retention pass.
    Retention,
}

impl Kind for AuditAction {
    fn all() -> impl Iterator<Item = Self> {
        [
            AuditAction::Reprocess,
            AuditAction::ReprocessBulk,
            AuditAction::Resend,
            AuditAction::DeadLetterRetry,
            AuditAction::DeadLetterDiscard,
            AuditAction::ChannelPause,
            AuditAction::ChannelResume,
            AuditAction::Reload,
            AuditAction::ReloadRefused,
            AuditAction::Retention,
        ]
        .into_iter()
    }

    fn name(self) -> &'static str {
        match self {
            AuditAction::Reprocess => "reprocess",
            AuditAction::ReprocessBulk => "reprocess_bulk",
            AuditAction::Resend => "resend",
            AuditAction::DeadLetterRetry => "dead_letter_retry",
            AuditAction::DeadLetterDiscard => "dead_letter_discard",
            AuditAction::ChannelPause => "channel_pause",
            AuditAction::ChannelResume => "channel_resume",
            AuditAction::Reload => "reload",
            AuditAction::ReloadRefused => "reload_refused",
            AuditAction::Retention => "retention",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use channels::kind::PayloadKind;
    use channels::source::{JsonFormat, RecordFormat, WebhookFormat};
    use transforms::dest::Vendor;

    /// Every kind serializes as exactly the name earlier versions wrote, and reads back as
    /// itself.
    fn same_names<T: Kind + fmt::Debug>(old: &[&str]) {
        let kinds: Vec<T> = T::all().collect();
        assert_eq!(kinds.len(), old.len(), "{kinds:?}");
        for (kind, name) in kinds.into_iter().zip(old) {
            let json = serde_json::to_string(&Named::Known(kind)).expect("serialize");
            assert_eq!(json, format!("\"{name}\""), "{kind:?}");
            let back: Named<T> = serde_json::from_str(&json).expect("read");
            assert_eq!(back, Named::Known(kind));
            assert_eq!(back.as_str(), *name);
        }
    }

    #[test]
    fn record_formats_keep_their_names() {
        same_names::<RecordFormat>(&[
            "hl7v2", "fhir", "buktor", "px360", "opsport", "latrexa", "dicom",
        ]);
        let f: Named<RecordFormat> = serde_json::from_str("\"px360\"").expect("read");
        assert_eq!(
            f,
            RecordFormat::Json(JsonFormat::Webhook(WebhookFormat::Px360))
        );
    }

    #[test]
    fn item_payloads_keep_their_names() {
        same_names::<ItemPayload>(&[
            "hl7",
            "canonical",
            "fhir",
            "opsport",
            "buktor",
            "px360",
            "latrexa",
            "dicom",
            "mapping_failed",
        ]);
        let p: Named<ItemPayload> = serde_json::from_str("\"buktor\"").expect("read");
        assert_eq!(
            p,
            ItemPayload::Rendered(PayloadKind::Vendor(Vendor::Buktor))
        );
    }

    #[test]
    fn outcomes_keep_their_names() {
        same_names::<Outcome>(&["delivered", "retry", "dead_letter"]);
    }

    #[test]
    fn audit_actions_keep_their_names() {
        same_names::<AuditAction>(&[
            "reprocess",
            "reprocess_bulk",
            "resend",
            "dead_letter_retry",
            "dead_letter_discard",
            "channel_pause",
            "channel_resume",
            "reload",
            "reload_refused",
            "retention",
        ]);
    }

    /// Records as this and earlier versions write them, their kinds as strings: each reads
    /// with its kinds known and writes back the same JSON.
    #[test]
    fn records_written_with_string_kinds_read_unchanged() {
        use crate::store::outbox::{Attempt, OutboxItem};
        use crate::store::MessageRecord;
        fn same<T: Serialize + serde::de::DeserializeOwned>(old: serde_json::Value) -> T {
            let read: T = serde_json::from_value(old.clone()).expect("read");
            assert_eq!(serde_json::to_value(&read).expect("write"), old);
            read
        }
        let record: MessageRecord = same(serde_json::json!({
            "id": 1u64 << 20, "channel": "px", "received_at_ms": 1, "peer": "127.0.0.1:1",
            "format": "px360", "message_type": "appointment.created", "control_id": "E-1",
            "sending_application": "", "sending_facility": "", "version": "", "charset": "utf-8",
            "size": 2, "truncated": false, "status": "routed", "ack_code": "200", "ack": "",
            "errors": [], "config_version": "v1", "deliveries": []
        }));
        assert_eq!(
            record.format,
            RecordFormat::Json(JsonFormat::Webhook(WebhookFormat::Px360))
        );
        let head = |payload: &str| {
            serde_json::json!({
                "destination": "lab/ops", "seq": 3, "message_id": 1u64 << 20, "partition": "",
                "created_at_ms": 1, "attempts": 0, "next_attempt_ms": 1, "last_error": "",
                "content_type": "application/json", "idempotency_key": "1048576-ops",
                "control_id": null, "path": null, "payload": payload
            })
        };
        let item: OutboxItem = same(head("opsport"));
        assert_eq!(
            item.payload,
            ItemPayload::Rendered(PayloadKind::Vendor(Vendor::Opsport))
        );
        let failed: OutboxItem = same(head("mapping_failed"));
        assert_eq!(failed.payload, ItemPayload::MappingFailed);
        let attempt: Attempt = same(serde_json::json!({
            "destination": "lab/ops", "attempt": 2, "at_ms": 5, "outcome": "dead_letter",
            "status": 400, "detail": "bad request", "duration_ms": 3
        }));
        assert_eq!(attempt.outcome, Outcome::DeadLetter);
        let audit: crate::store::outbox::AuditRecord = same(serde_json::json!({
            "at_ms": 5, "who": "ops", "action": "dead_letter_discard",
            "target": "lab/ops#3", "count": 1
        }));
        assert_eq!(audit.action, AuditAction::DeadLetterDiscard);
    }

    /// A record a newer version wrote, with kinds this version does not know: it reads, each
    /// unknown kind is kept as read (not taken for a known one) and written back unchanged.
    #[test]
    fn a_record_with_unknown_kinds_reads_and_writes_back_unchanged() {
        use crate::store::outbox::Attempt;
        use crate::store::MessageRecord;
        let old = serde_json::json!({
            "id": 1u64 << 20, "channel": "x", "received_at_ms": 1, "peer": "127.0.0.1:1",
            "format": "hl7v3", "message_type": "", "control_id": "", "sending_application": "",
            "sending_facility": "", "version": "", "charset": "utf-8", "size": 2,
            "truncated": false, "status": "routed", "ack_code": "", "ack": "", "errors": [],
            "config_version": "v9", "deliveries": []
        });
        let record: MessageRecord = serde_json::from_value(old.clone()).expect("read");
        assert_eq!(record.format, Named::Unknown("hl7v3".into()));
        assert!(record.format != RecordFormat::Hl7v2);
        assert_eq!(serde_json::to_value(&record).expect("write"), old);
        // Not read as any format: no canonical events, no patient, even for HL7 v2 bytes.
        let raw =
            b"MSH|^~\\&|HIS|MAIN|SB|HUB|20250101120000||ADT^A04|C1|P|2.5\rPID|1||P-1^^^MAIN^MR\r";
        match crate::formats::events_of(&record, raw) {
            crate::formats::Meaning::Failed(e) => {
                assert_eq!(e, "no canonical mapping for format 'hl7v3'")
            }
            other => panic!("{other:?}"),
        }
        assert!(crate::keys::patient_of(&record, raw).is_none());
        let v2 = MessageRecord {
            format: RecordFormat::Hl7v2.into(),
            ..record.clone()
        };
        assert!(
            crate::keys::patient_of(&v2, raw).is_some(),
            "read as HL7 v2"
        );
        let attempt: Attempt = serde_json::from_value(serde_json::json!({
            "destination": "x/y", "attempt": 1, "at_ms": 5, "outcome": "skipped",
            "status": null, "detail": "", "duration_ms": 0
        }))
        .expect("read");
        assert_eq!(attempt.outcome.known(), None);
        assert_eq!(attempt.outcome.as_str(), "skipped");
    }

    #[test]
    fn an_unknown_name_is_kept_as_read_and_matches_no_kind() {
        for name in ["xml", "HL7v2", "", "mapping_failed "] {
            let f: Named<RecordFormat> =
                serde_json::from_str(&serde_json::to_string(name).expect("json")).expect("read");
            assert_eq!(f, Named::Unknown(name.to_owned()));
            assert_eq!(f.known(), None);
            assert!(RecordFormat::all().all(|k| f != k), "{name:?}");
            assert_eq!(f.to_string(), name);
            // Written back exactly as read.
            assert_eq!(
                serde_json::to_string(&f).expect("write"),
                serde_json::to_string(name).expect("json")
            );
        }
        let p: Named<ItemPayload> = serde_json::from_str("\"hl7_batch\"").expect("read");
        assert_eq!(p, Named::Unknown("hl7_batch".into()));
        let o: Named<Outcome> = serde_json::from_str("\"skipped\"").expect("read");
        assert_eq!(o.as_str(), "skipped");
        // Not a string: still an error, as any malformed field.
        assert!(serde_json::from_str::<Named<Outcome>>("3").is_err());
    }
}
