//! The business-key index: patient identifiers, visit numbers, appointment ids and order
//! numbers -> the messages that carry them, so that a search by key reads a key range
//! instead of scanning every message.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `by_business_key` | kind (1 byte), value, 0x00, message id (u64 BE) | empty |
//!
//! A message's keys are [`super::MessageRecord::business_keys`], taken from its canonical
//! event (`transforms::model::Event::business_keys`) at ingest, plus the words of its
//! patient's name (kind `patient_name`, lower case, see [`name_tokens`] and
//! `crate::keys::business_keys_of`), so that an operator finds a patient's messages by name:
//! every word of the query must be a word of the name, in any order. [`Store::put`] writes the
//! index entries with the message, and retention removes them with it. The index holds
//! identifiers (that is its job); nothing here logs them. With encryption on, the index and
//! the record hold keyed hashes of the values instead ([`stored_keys`]), and a search looks
//! the hash up.

use super::seal::Seal;
use super::{Store, StoreError};
use transforms::model::{BusinessKey, BusinessKeyKind};

/// Every identifier kind, in index order: what a search by key "of any kind" looks under
/// (the words of a name are searched separately, see [`Store::ids_by_text`]).
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
        BusinessKeyKind::PatientName => 5,
    }
}

/// Most words of one name that are indexed.
const MAX_NAME_TOKENS: usize = 16;

/// The words of a name as the index holds them (and as a search looks them up): lower case,
/// split at every character that is not a letter or digit, each at most 64 characters,
/// deduplicated, at most 16.
pub fn name_tokens(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        let token: String = word.to_lowercase().chars().take(64).collect();
        if !out.contains(&token) {
            out.push(token);
            if out.len() == MAX_NAME_TOKENS {
                break;
            }
        }
    }
    out
}

/// Parses a `key_type` of the admin API: the kind's name or a short alias
/// (`mrn`/`patient`, `visit`, `appointment`, `order`).
pub fn parse_kind(s: &str) -> Option<BusinessKeyKind> {
    match s {
        "patient_id" | "patient" | "mrn" => Some(BusinessKeyKind::PatientId),
        "visit_number" | "visit" => Some(BusinessKeyKind::VisitNumber),
        "appointment_id" | "appointment" => Some(BusinessKeyKind::AppointmentId),
        "order_number" | "order" => Some(BusinessKeyKind::OrderNumber),
        "patient_name" | "name" => Some(BusinessKeyKind::PatientName),
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
    /// Ids of the messages carrying `value` (as any identifier kind, or as `kind`), with ids
    /// in `lower..upper`, newest first. With `kind` = `patient_name`, `value` is a name: the
    /// messages whose patient name has every word of it.
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
        if kind == Some(BusinessKeyKind::PatientName) {
            return self.ids_by_name(value, lower, upper);
        }
        let kinds: Vec<BusinessKeyKind> = match kind {
            Some(k) => vec![k],
            None => KINDS.to_vec(),
        };
        let mut ids = Vec::new();
        for kind in kinds {
            ids.extend(self.ids_under(kind, value, lower, upper)?);
        }
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        Ok(ids)
    }

    /// Ids of the messages whose patient name has every word of `name` (see
    /// [`name_tokens`]), in `lower..upper`, newest first; none for a name without words.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails.
    pub fn ids_by_name(&self, name: &str, lower: u64, upper: u64) -> Result<Vec<u64>, StoreError> {
        let mut found: Option<std::collections::BTreeSet<u64>> = None;
        for token in name_tokens(name) {
            let ids: std::collections::BTreeSet<u64> = self
                .ids_under(BusinessKeyKind::PatientName, &token, lower, upper)?
                .into_iter()
                .collect();
            found = Some(match found {
                None => ids,
                Some(before) => before.intersection(&ids).copied().collect(),
            });
            if found.as_ref().is_some_and(|f| f.is_empty()) {
                break;
            }
        }
        Ok(found.unwrap_or_default().into_iter().rev().collect())
    }

    /// Ids of the messages found by one search text: its control id (MSH-10), a business
    /// identifier of any kind, or the words of its patient's name; in `lower..upper`, newest
    /// first. This is the console's one search box.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails.
    pub fn ids_by_text(&self, text: &str, lower: u64, upper: u64) -> Result<Vec<u64>, StoreError> {
        let text = text.trim();
        let mut ids = self.ids_by_control_id(text, lower, upper)?;
        ids.extend(self.ids_by_business_key(None, text, lower, upper)?);
        ids.extend(self.ids_by_name(text, lower, upper)?);
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        Ok(ids)
    }

    /// Ids indexed under `value` as `kind`, in clear and as each key's keyed hash.
    fn ids_under(
        &self,
        kind: BusinessKeyKind,
        value: &str,
        lower: u64,
        upper: u64,
    ) -> Result<Vec<u64>, StoreError> {
        // The value as indexed in clear (encryption off, or entries from before it was on)
        // and as indexed under each key.
        let mut forms = vec![value.to_string()];
        forms.extend(self.seal.index_tags(value));
        let mut ids = Vec::new();
        for form in &forms {
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
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::Durability;
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
        assert_eq!(parse_kind("name"), Some(BusinessKeyKind::PatientName));
        assert_eq!(parse_kind("surname"), None);
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

    #[test]
    fn name_words_are_lower_case_and_split_at_punctuation() {
        assert_eq!(
            name_tokens("O'Brien, Mary-Ann  Mary"),
            ["o", "brien", "mary", "ann"]
        );
        assert_eq!(name_tokens("ÉLODIE Dupré"), ["élodie", "dupré"]);
        assert_eq!(name_tokens("خالد يوسف"), ["خالد", "يوسف"]);
        assert!(name_tokens(" ,.- ").is_empty());
        assert_eq!(name_tokens(&"a ".repeat(40)), ["a"]);
        let many: String = (0..40).map(|i| format!("w{i} ")).collect();
        assert_eq!(name_tokens(&many).len(), MAX_NAME_TOKENS);
    }

    /// A search by name needs every word, in any order and case; one search text finds a
    /// control id, an identifier or a name. With encryption on, the index and the records hold
    /// no word of the name in clear, and the search still finds it.
    #[tokio::test]
    async fn finds_messages_by_name_words_and_by_text_sealed_or_not() {
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
            let put = |control_id: &str, keys: Vec<BusinessKey>| {
                let id = s.next_id(1_000);
                let mut r = crate::store::tests::record(id, "a", control_id, Status::Filtered);
                r.business_keys = keys;
                s.put(&r, b"x", &[]).expect("put");
                id
            };
            let name = |words: &str| {
                name_tokens(words)
                    .into_iter()
                    .map(|w| key(BusinessKeyKind::PatientName, &w))
                    .collect::<Vec<_>>()
            };
            let mut k = name("Zyqlander Maja");
            k.push(key(BusinessKeyKind::PatientId, "MRN-5"));
            let maja = put("C-1", k);
            let other = put("C-2", name("Zyqlander Erik"));
            let order = put(
                "zyqlander",
                vec![key(BusinessKeyKind::OrderNumber, "ORD-9")],
            );
            let by_name = |text: &str| s.ids_by_name(text, 0, u64::MAX).expect("search");
            assert_eq!(by_name("maja zyqlander"), [maja], "sealed: {sealed}");
            assert_eq!(by_name("ZYQLANDER, Maja"), [maja]);
            assert_eq!(by_name("Zyqlander"), [other, maja]);
            assert!(by_name("zyql").is_empty(), "whole words only");
            assert!(by_name("maja erik").is_empty(), "every word");
            assert!(by_name("").is_empty());
            let text = |t: &str| s.ids_by_text(t, 0, u64::MAX).expect("search");
            assert_eq!(
                text("zyqlander"),
                [order, other, maja],
                "control id and names"
            );
            assert_eq!(text("MRN-5"), [maja]);
            assert_eq!(text(" ORD-9 "), [order]);
            assert_eq!(text("C-2"), [other]);
            let listed = s
                .list(&Query {
                    text: Some("maja".into()),
                    limit: 10,
                    ..Query::default()
                })
                .expect("list");
            assert_eq!(listed.iter().map(|r| r.id).collect::<Vec<_>>(), [maja]);
            let by_kind = s
                .ids_by_business_key(Some(BusinessKeyKind::PatientName), "maja", 0, u64::MAX)
                .expect("search");
            assert_eq!(by_kind, [maja]);
            let clear = |t: &sled::Tree| {
                t.iter().any(|kv| {
                    let (k, v) = kv.expect("read");
                    [k, v].iter().any(|b| {
                        ["maja", "zyqlander", "Zyqlander"]
                            .iter()
                            .any(|w| b.windows(w.len()).any(|x| x == w.as_bytes()))
                    })
                })
            };
            assert_eq!(
                clear(&s.by_business_key),
                !sealed,
                "index, sealed: {sealed}"
            );
            // The control id "zyqlander" of the third message is a control id, in clear by
            // design; the other records hold the name only as keyed hashes when sealed.
            let records_in_clear = [maja, other].iter().any(|id| {
                let v = s
                    .messages
                    .get(id.to_be_bytes())
                    .expect("get")
                    .expect("record");
                ["maja", "zyqlander"]
                    .iter()
                    .any(|w| v.windows(w.len()).any(|x| x == w.as_bytes()))
            });
            assert_eq!(records_in_clear, !sealed, "records, sealed: {sealed}");
        }
    }
}
