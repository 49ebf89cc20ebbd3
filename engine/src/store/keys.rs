//! The business-key index: patient identifiers, visit numbers, appointment ids and order
//! numbers -> the messages that carry them, so that a search by key reads a key range
//! instead of scanning every message.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `by_business_key` | kind (1 byte), value, 0x00, message id (u64 BE) | empty |
//!
//! A message's keys are [`super::MessageRecord::business_keys`], taken from its canonical
//! event (`transforms::model::Event::business_keys`) at ingest. [`Store::put`] writes the
//! index entries with the message, and retention removes them with it. The index holds
//! identifiers (that is its job); nothing here logs them. With encryption on, the index and
//! the record hold keyed hashes of the values instead ([`stored_keys`]), and a search looks
//! the hash up.

use super::seal::Seal;
use super::{Store, StoreError};
use transforms::model::{BusinessKey, BusinessKeyKind};

/// Every kind, in index order.
pub const KINDS: [BusinessKeyKind; 4] = [
    BusinessKeyKind::PatientId,
    BusinessKeyKind::VisitNumber,
    BusinessKeyKind::AppointmentId,
    BusinessKeyKind::OrderNumber,
];

fn kind_byte(kind: BusinessKeyKind) -> u8 {
    match kind {
        BusinessKeyKind::PatientId => 1,
        BusinessKeyKind::VisitNumber => 2,
        BusinessKeyKind::AppointmentId => 3,
        BusinessKeyKind::OrderNumber => 4,
    }
}

/// Parses a `key_type` of the admin API: the kind's name or a short alias
/// (`mrn`/`patient`, `visit`, `appointment`, `order`).
pub fn parse_kind(s: &str) -> Option<BusinessKeyKind> {
    match s {
        "patient_id" | "patient" | "mrn" => Some(BusinessKeyKind::PatientId),
        "visit_number" | "visit" => Some(BusinessKeyKind::VisitNumber),
        "appointment_id" | "appointment" => Some(BusinessKeyKind::AppointmentId),
        "order_number" | "order" => Some(BusinessKeyKind::OrderNumber),
        _ => None,
    }
}

fn prefix(kind: BusinessKeyKind, value: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(value.len() + 10);
    k.push(kind_byte(kind));
    k.extend_from_slice(value.as_bytes());
    k.push(0);
    k
}

/// The index key of `key` on message `id`.
pub(crate) fn index_key(key: &BusinessKey, id: u64) -> Vec<u8> {
    let mut k = prefix(key.kind, &key.value);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// True when a value can be indexed (a NUL would break the key layout; HL7 checks reject
/// control characters anyway).
pub(crate) fn indexable(key: &BusinessKey) -> bool {
    !key.value.is_empty() && key.value.len() <= 512 && !key.value.contains('\0')
}

/// `keys` as the store writes them (in the record and the index): as they are, or with
/// encryption on each value replaced by its keyed hash ([`Seal::index_tag`]), so that no
/// identifier is in clear on disk. Retention removes index entries from the record's keys,
/// so both must hold the same form.
pub(crate) fn stored_keys(seal: &Seal, keys: &[BusinessKey]) -> Vec<BusinessKey> {
    keys.iter()
        .map(|k| BusinessKey {
            kind: k.kind,
            value: seal.index_tag(&k.value).unwrap_or_else(|| k.value.clone()),
        })
        .collect()
}

impl Store {
    /// Ids of the messages carrying `value` (as any kind, or as `kind`), with ids in
    /// `lower..upper`, newest first.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails.
    pub fn ids_by_business_key(
        &self,
        kind: Option<BusinessKeyKind>,
        value: &str,
        lower: u64,
        upper: u64,
    ) -> Result<Vec<u64>, StoreError> {
        let kinds: Vec<BusinessKeyKind> = match kind {
            Some(k) => vec![k],
            None => KINDS.to_vec(),
        };
        // The value as indexed in clear (encryption off, or entries from before it was on)
        // and as indexed under each key.
        let mut forms = vec![value.to_string()];
        forms.extend(self.seal.index_tags(value));
        let mut ids = Vec::new();
        for (kind, form) in kinds
            .iter()
            .flat_map(|k| forms.iter().map(move |f| (*k, f)))
        {
            let p = prefix(kind, form);
            let mut from = p.clone();
            from.extend_from_slice(&lower.to_be_bytes());
            let mut to = p.clone();
            to.extend_from_slice(&upper.to_be_bytes());
            for k in self.by_business_key.range(from..to).keys() {
                let k = k?;
                if let Some(id) = k[p.len()..].try_into().ok().map(u64::from_be_bytes) {
                    ids.push(id);
                }
            }
        }
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use crate::metrics::Metrics;
    use crate::store::{Query, Status};

    fn key(kind: BusinessKeyKind, value: &str) -> BusinessKey {
        BusinessKey {
            kind,
            value: value.into(),
        }
    }

    #[tokio::test]
    async fn finds_messages_by_key_newest_first_and_forgets_pruned_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path(), Durability::Os, &Metrics::new("t")).expect("open");
        let day = 86_400_000u64;
        let now = 400 * day;
        let mut ids = Vec::new();
        for (i, (at, keys)) in [
            (now - 100 * day, vec![key(BusinessKeyKind::PatientId, "P1")]),
            (
                now - 2 * day,
                vec![
                    key(BusinessKeyKind::PatientId, "P1"),
                    key(BusinessKeyKind::VisitNumber, "V9"),
                ],
            ),
            (now - day, vec![key(BusinessKeyKind::PatientId, "P10")]),
            (now, vec![key(BusinessKeyKind::AppointmentId, "P1")]),
        ]
        .into_iter()
        .enumerate()
        {
            let id = s.next_id(at);
            let mut r = crate::store::tests::record(id, "a", &format!("C{i}"), Status::Filtered);
            r.received_at_ms = at;
            r.business_keys = keys;
            s.put(&r, b"x", &[]).expect("put");
            ids.push(id);
        }
        let q = |kind, value: &str| {
            s.list(&Query {
                business_key: Some(value.into()),
                business_key_kind: kind,
                limit: 10,
                ..Query::default()
            })
            .expect("list")
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
        };
        // "P1" is no prefix of "P10"; any kind by default, one kind when asked.
        assert_eq!(q(None, "P1"), [ids[3], ids[1], ids[0]]);
        assert_eq!(q(Some(BusinessKeyKind::PatientId), "P1"), [ids[1], ids[0]]);
        assert_eq!(q(Some(BusinessKeyKind::VisitNumber), "V9"), [ids[1]]);
        assert!(q(None, "nobody").is_empty());
        let policy = crate::store::retention::RetentionPolicy {
            default_days: 90,
            per_channel: Default::default(),
        };
        assert_eq!(s.prune(&policy, now).expect("prune").removed(), 1);
        assert_eq!(
            q(Some(BusinessKeyKind::PatientId), "P1"),
            [ids[1]],
            "pruned with its message"
        );
        assert_eq!(s.by_business_key.len(), 4);
    }

    #[test]
    fn kinds_have_aliases() {
        assert_eq!(parse_kind("mrn"), Some(BusinessKeyKind::PatientId));
        assert_eq!(parse_kind("visit"), Some(BusinessKeyKind::VisitNumber));
        assert_eq!(
            parse_kind("appointment_id"),
            Some(BusinessKeyKind::AppointmentId)
        );
        assert_eq!(parse_kind("order"), Some(BusinessKeyKind::OrderNumber));
        assert_eq!(parse_kind("name"), None);
    }

    /// With encryption on, neither the index nor the record holds an identifier in clear; a
    /// search by value still finds the message, also after a key rotation, and retention
    /// still removes the entries.
    #[tokio::test]
    async fn with_encryption_on_identifiers_are_keyed_hashes_and_still_found() {
        use crate::store::seal::{Seal, StoreKey};
        let k1 = StoreKey {
            id: "k1".into(),
            key: [1; 32],
        };
        let k2 = StoreKey {
            id: "k2".into(),
            key: [2; 32],
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Metrics::new("t");
        let mrn = "MRN-Zq81735";
        let day = 86_400_000u64;
        let now = 400 * day;
        let put = |s: &Store, at: u64, value: &str| {
            let id = s.next_id(at);
            let mut r = crate::store::tests::record(id, "a", &format!("C{id}"), Status::Filtered);
            r.received_at_ms = at;
            r.business_keys = vec![key(BusinessKeyKind::PatientId, value)];
            s.put(&r, b"x", &[]).expect("put");
            id
        };
        let find = |s: &Store, value: &str| -> Vec<u64> {
            s.list(&Query {
                business_key: Some(value.into()),
                limit: 10,
                ..Query::default()
            })
            .expect("list")
            .iter()
            .map(|r| r.id)
            .collect()
        };
        let old = {
            let s = Store::open_sealed(
                dir.path(),
                Durability::Os,
                &metrics,
                Seal::new(std::slice::from_ref(&k1)),
            )
            .expect("open");
            let old = put(&s, now - 100 * day, mrn);
            s.db.flush().expect("flush");
            old
        };
        let s = crate::store::tests::reopen(|| {
            Store::open_sealed(
                dir.path(),
                Durability::Os,
                &metrics,
                Seal::new(&[k2.clone(), k1.clone()]),
            )
        });
        let new = put(&s, now, mrn);
        put(&s, now, "MRN-other");
        assert_eq!(find(&s, mrn), [new, old], "found under both keys");
        let clear = |t: &sled::Tree| {
            t.iter().any(|kv| {
                let (k, v) = kv.expect("read");
                [k, v]
                    .iter()
                    .any(|b| b.windows(mrn.len()).any(|w| w == mrn.as_bytes()))
            })
        };
        assert!(
            !clear(&s.by_business_key),
            "the index holds the MRN in clear"
        );
        assert!(!clear(&s.messages), "a record holds the MRN in clear");
        let policy = crate::store::retention::RetentionPolicy {
            default_days: 90,
            per_channel: Default::default(),
        };
        assert_eq!(s.prune(&policy, now).expect("prune").removed(), 1);
        assert_eq!(find(&s, mrn), [new]);
        assert_eq!(
            s.by_business_key.len(),
            2,
            "the old entry went with its message"
        );
    }
}
