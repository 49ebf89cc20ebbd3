//! The `fhir_ids` tree: for every FHIR resource a `fhir_rest` source accepted, the messages
//! that carried it, so that `GET [base]/{type}/{id}` reads it back without scanning.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `fhir_ids` | channel, 0x00, `{type}/{id}`, 0x00, message id (u64 BE) | empty |
//!
//! The references of a message are read from its stored answer ([`references`]): a created or
//! updated resource is answered with itself (type and id), an accepted Bundle with a
//! `transaction-response` whose entries name each resource's `Location`. [`Store::put`] writes
//! the entries before the record (the record is written last and makes the message exist), and
//! retention removes them with the message, reading the same answer. A rejected message is
//! answered with an OperationOutcome and indexes nothing.
//!
//! An id may be the sender's own (the id of an update), so with encryption on the reference is
//! replaced by its keyed hash, as business keys are ([`super::seal::Seal::index_tag`]); a look-up
//! tries the clear form and the hash under every configured key.

use super::kind::Named;
use super::{MessageRecord, Status, Store, StoreError};
use channels::source::{JsonFormat, RecordFormat};
use serde_json::Value;

/// `{type}/{id}` of every resource the stored answer of `record` names; empty for records
/// that are not accepted FHIR messages.
pub fn references(format: &Named<RecordFormat>, status: Status, ack: &str) -> Vec<String> {
    if *format != RecordFormat::Json(JsonFormat::Fhir) || status == Status::Rejected {
        return Vec::new();
    }
    let Ok(answer) = serde_json::from_str::<Value>(ack) else {
        return Vec::new();
    };
    let rtype = answer
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match rtype {
        "" | "OperationOutcome" => Vec::new(),
        "Bundle" => answer
            .get("entry")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| e.pointer("/response/location").and_then(Value::as_str))
            .map(str::to_owned)
            .collect(),
        _ => answer
            .get("id")
            .and_then(Value::as_str)
            .map(|id| vec![format!("{rtype}/{id}")])
            .unwrap_or_default(),
    }
}

fn prefix(channel: &str, reference: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(channel.len() + reference.len() + 10);
    k.extend_from_slice(channel.as_bytes());
    k.push(0);
    k.extend_from_slice(reference.as_bytes());
    k.push(0);
    k
}

impl Store {
    /// The forms `reference` may be indexed under: in clear and, with encryption, its keyed
    /// hash under every key (newest first).
    fn reference_forms(&self, reference: &str) -> Vec<String> {
        let mut forms = vec![reference.to_owned()];
        forms.extend(self.seal.index_tags(reference));
        forms
    }

    /// The `fhir_ids` keys of `record` as [`Store::put`] writes them.
    pub(crate) fn fhir_index_keys(&self, record: &MessageRecord) -> Vec<Vec<u8>> {
        references(&record.format, record.status, &record.ack)
            .iter()
            .filter(|r| !r.contains('\0'))
            .map(|r| {
                let form = self.seal.index_tag(r).unwrap_or_else(|| r.clone());
                let mut k = prefix(&record.channel, &form);
                k.extend_from_slice(&record.id.to_be_bytes());
                k
            })
            .collect()
    }

    /// Every key message `id` of `channel` may hold in `fhir_ids` for the answer `ack` (each
    /// form of each reference), for retention to remove.
    pub(crate) fn fhir_index_keys_any_form(
        &self,
        channel: &str,
        id: u64,
        (format, status, ack): (&Named<RecordFormat>, Status, &str),
    ) -> Vec<Vec<u8>> {
        references(format, status, ack)
            .iter()
            .flat_map(|r| self.reference_forms(r))
            .map(|form| {
                let mut k = prefix(channel, &form);
                k.extend_from_slice(&id.to_be_bytes());
                k
            })
            .collect()
    }

    /// The resource `{rtype}/{id}` as last received on `channel` (the newest message that
    /// carried it and is still stored), with the id this engine answered with; `None` when no
    /// such message is stored.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails or a stored body cannot be opened.
    pub fn fhir_resource(
        &self,
        channel: &str,
        rtype: &str,
        id: &str,
    ) -> Result<Option<Value>, StoreError> {
        let reference = format!("{rtype}/{id}");
        if channel.contains('\0') || reference.contains('\0') {
            return Ok(None);
        }
        let mut ids = Vec::new();
        for form in self.reference_forms(&reference) {
            let p = prefix(channel, &form);
            for k in self.fhir_ids.scan_prefix(&p).keys() {
                let k = k?;
                if let Some(id) = k[p.len()..].try_into().ok().map(u64::from_be_bytes) {
                    ids.push(id);
                }
            }
        }
        ids.sort_unstable_by(|a, b| b.cmp(a));
        for message in ids {
            let Some(record) = self.get(message)? else {
                continue;
            };
            if record.channel != channel || record.status == Status::Rejected {
                continue;
            }
            if let Some(resource) = self.resource_in(&record, rtype, id)? {
                return Ok(Some(resource));
            }
        }
        Ok(None)
    }

    /// `{rtype}/{id}` out of one stored message: its answer for a create or update, else the
    /// Bundle entry whose response names it (read from the raw Bundle, entry for entry).
    fn resource_in(
        &self,
        record: &MessageRecord,
        rtype: &str,
        id: &str,
    ) -> Result<Option<Value>, StoreError> {
        let Ok(answer) = serde_json::from_str::<Value>(&record.ack) else {
            return Ok(None);
        };
        let is =
            |v: &Value, key: &str, want: &str| v.get(key).and_then(Value::as_str) == Some(want);
        if is(&answer, "resourceType", rtype) && is(&answer, "id", id) {
            return Ok(Some(answer));
        }
        if !is(&answer, "resourceType", "Bundle") {
            return Ok(None);
        }
        let location = format!("{rtype}/{id}");
        let Some(at) = answer
            .get("entry")
            .and_then(Value::as_array)
            .and_then(|entries| {
                entries.iter().position(|e| {
                    e.pointer("/response/location").and_then(Value::as_str)
                        == Some(location.as_str())
                })
            })
        else {
            return Ok(None);
        };
        let Some(raw) = self.raw(record.id)? else {
            return Ok(None);
        };
        let Ok(bundle) = serde_json::from_slice::<Value>(&raw) else {
            return Ok(None);
        };
        let Some(mut resource) = bundle
            .pointer(&format!("/entry/{at}/resource"))
            .cloned()
            .filter(|r| is(r, "resourceType", rtype))
        else {
            return Ok(None);
        };
        if let Some(obj) = resource.as_object_mut() {
            obj.insert("id".into(), Value::String(id.to_owned()));
        }
        Ok(Some(resource))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_come_from_the_answer_of_accepted_fhir_messages_only() {
        let fhir = &Named::Known(RecordFormat::Json(JsonFormat::Fhir));
        let buktor = &Named::Known(RecordFormat::Json(JsonFormat::Webhook(
            channels::source::WebhookFormat::Buktor,
        )));
        let created = r#"{"resourceType":"Patient","id":"p1","name":[{"family":"X"}]}"#;
        assert_eq!(
            references(fhir, Status::Received, created),
            vec!["Patient/p1".to_owned()]
        );
        assert!(references(fhir, Status::Rejected, created).is_empty());
        assert!(references(buktor, Status::Received, created).is_empty());
        let bundle = r#"{"resourceType":"Bundle","type":"transaction-response","entry":[
            {"response":{"status":"201 Created","location":"Patient/a"}},
            {"response":{"status":"200 OK","location":"Encounter/b"}}]}"#;
        assert_eq!(
            references(fhir, Status::Delivered, bundle),
            vec!["Patient/a".to_owned(), "Encounter/b".to_owned()]
        );
        let outcome = r#"{"resourceType":"OperationOutcome","id":"x","issue":[]}"#;
        assert!(references(fhir, Status::Received, outcome).is_empty());
        assert!(references(fhir, Status::Received, "not json").is_empty());
        // A format this version does not know names no resources, even spelt like FHIR.
        let unknown = &Named::Unknown("fhir5".into());
        assert!(references(unknown, Status::Received, created).is_empty());
    }

    fn record(store: &Store, channel: &str, status: Status, ack: &str) -> MessageRecord {
        MessageRecord {
            id: store.next_id(1_000),
            channel: channel.into(),
            received_at_ms: 1_000,
            peer: String::new(),
            format: RecordFormat::Json(JsonFormat::Fhir).into(),
            message_type: "Patient".into(),
            control_id: String::new(),
            sending_application: String::new(),
            sending_facility: String::new(),
            version: "R4".into(),
            charset: "utf-8".into(),
            size: 0,
            truncated: false,
            status,
            ack_code: "201".into(),
            ack: ack.into(),
            errors: vec![],
            config_version: String::new(),
            deliveries: vec![],
            business_keys: vec![],
            dedup_key: String::new(),
            resent_from: None,
        }
    }

    fn open(dir: &tempfile::TempDir, seal: super::super::seal::Seal) -> Store {
        Store::open_sealed(
            dir.path(),
            crate::store::Durability::Os,
            &crate::metrics::Metrics::new("t"),
            seal,
        )
        .expect("open")
    }

    #[test]
    fn the_newest_accepted_version_is_read_back_per_channel() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = open(&dir, super::super::seal::Seal::plain());
        let v1 = r#"{"resourceType":"Patient","id":"p1","gender":"female"}"#;
        let v2 = r#"{"resourceType":"Patient","id":"p1","gender":"other"}"#;
        s.put(&record(&s, "fhir-in", Status::Delivered, v1), b"{}", &[])
            .expect("put");
        s.put(&record(&s, "fhir-in", Status::Routed, v2), b"{}", &[])
            .expect("put");
        let got = s.fhir_resource("fhir-in", "Patient", "p1").expect("read");
        assert_eq!(got.expect("found")["gender"], "other");
        assert_eq!(
            s.fhir_resource("other", "Patient", "p1").expect("read"),
            None
        );
        assert_eq!(
            s.fhir_resource("fhir-in", "Patient", "p2").expect("read"),
            None
        );
        assert_eq!(
            s.fhir_resource("fhir-in", "Encounter", "p1").expect("read"),
            None
        );
    }

    #[test]
    fn a_bundle_entry_is_read_from_the_raw_bundle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = open(&dir, super::super::seal::Seal::plain());
        let raw = br#"{"resourceType":"Bundle","type":"transaction","entry":[
            {"resource":{"resourceType":"Patient","gender":"male"},"request":{"method":"POST","url":"Patient"}},
            {"resource":{"resourceType":"Encounter","status":"finished"},"request":{"method":"PUT","url":"Encounter/e-9"}}]}"#;
        let answer = r#"{"resourceType":"Bundle","type":"transaction-response","entry":[
            {"response":{"status":"201 Created","location":"Patient/abc"}},
            {"response":{"status":"200 OK","location":"Encounter/e-9"}}]}"#;
        s.put(&record(&s, "fhir-in", Status::Filtered, answer), raw, &[])
            .expect("put");
        let p = s.fhir_resource("fhir-in", "Patient", "abc").expect("read");
        let p = p.expect("patient found");
        assert_eq!(
            (p["id"].as_str(), p["gender"].as_str()),
            (Some("abc"), Some("male"))
        );
        let e = s
            .fhir_resource("fhir-in", "Encounter", "e-9")
            .expect("read");
        assert_eq!(e.expect("encounter found")["status"], "finished");
    }

    #[test]
    fn with_encryption_no_reference_is_indexed_in_clear() {
        use super::super::seal::{Seal, StoreKey};
        let dir = tempfile::tempdir().expect("tempdir");
        let key = StoreKey {
            id: "k1".into(),
            key: [7; 32],
        };
        let s = open(&dir, Seal::new(&[key]));
        let ack = r#"{"resourceType":"Patient","id":"MRN-4711"}"#;
        s.put(&record(&s, "fhir-in", Status::Delivered, ack), b"{}", &[])
            .expect("put");
        for k in s.fhir_ids.iter().keys() {
            let k = k.expect("key");
            assert!(!k.windows(8).any(|w| w == b"MRN-4711"), "{k:?}");
        }
        assert_eq!(s.fhir_ids.len(), 1);
        let got = s
            .fhir_resource("fhir-in", "Patient", "MRN-4711")
            .expect("read");
        assert!(got.is_some());
    }

    #[test]
    fn a_rejected_message_is_not_indexed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = open(&dir, super::super::seal::Seal::plain());
        let ack = r#"{"resourceType":"Patient","id":"p1"}"#;
        s.put(&record(&s, "fhir-in", Status::Rejected, ack), b"{}", &[])
            .expect("put");
        assert_eq!(s.fhir_ids.len(), 0);
        assert_eq!(
            s.fhir_resource("fhir-in", "Patient", "p1").expect("read"),
            None
        );
    }
}
