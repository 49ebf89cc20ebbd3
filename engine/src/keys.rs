//! The business keys of a stored message: the identifiers its canonical events carry
//! (`transforms::model::Event::business_keys`), which the store indexes for search.
//!
//! The events come from [`crate::formats::events_of`], the same reading routing uses, so
//! every source format is indexed once it has a canonical mapping. A message that does not
//! map (an unsupported type, a mapping error) has no business keys; it is still found by
//! control id. Nothing here logs a value.

use crate::formats::{events_of, Meaning};
use crate::store::MessageRecord;
use transforms::model::BusinessKey;

/// The business keys of an accepted message, sorted and deduplicated; empty when it does
/// not map.
pub fn business_keys_of(record: &MessageRecord, raw: &[u8]) -> Vec<BusinessKey> {
    let Meaning::Events(events) = events_of(record, raw) else {
        return Vec::new();
    };
    let mut keys: Vec<BusinessKey> = events.iter().flat_map(|e| e.business_keys()).collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use transforms::model::BusinessKeyKind;

    fn record() -> MessageRecord {
        crate::store::tests::record(1, "c", "K", crate::store::Status::Received)
    }

    #[test]
    fn an_admission_yields_its_patient_and_visit() {
        let msg = "MSH|^~\\&|HIS|MAIN|SB|HUB|20250101120000||ADT^A01^ADT_A01|K1|P|2.5.1\rEVN|A01|20250101120000\rPID|1||MRN-77^^^MAIN^MR||Testperson^Alex||19800101|U\rPV1|1|I|||||||||||||||||VN-5\r";
        let keys = business_keys_of(&record(), msg.as_bytes());
        assert!(
            keys.contains(&BusinessKey {
                kind: BusinessKeyKind::PatientId,
                value: "MRN-77".into()
            }),
            "{keys:?}"
        );
        assert!(
            keys.contains(&BusinessKey {
                kind: BusinessKeyKind::VisitNumber,
                value: "VN-5".into()
            }),
            "{keys:?}"
        );
    }

    #[test]
    fn an_unmapped_message_has_none() {
        let msg = "MSH|^~\\&|HIS|MAIN|SB|HUB|20250101120000||ZZZ^Z01|K2|P|2.5.1\r";
        assert!(business_keys_of(&record(), msg.as_bytes()).is_empty());
    }
}
