//! The business keys of a stored message: the identifiers its canonical event carries
//! (`transforms::model::Event::business_keys`), which the store indexes for search.
//!
//! The event is computed the way routing computes it (decode by the message's charset,
//! typed parse, `transforms::v2_to_event`). A message that does not map (an unsupported
//! type, a mapping error) has no business keys; it is still found by control id. Nothing
//! here logs a value.

use transforms::model::BusinessKey;

/// The business keys of an accepted HL7 v2 message; empty when it does not map.
pub fn business_keys_of(raw: &[u8], charset: &str) -> Vec<BusinessKey> {
    let text = transforms::hl7v2::charset::decode_lossy(raw, charset);
    match transforms::hl7v2::access::V2Message::parse(&text).map(|m| transforms::v2_to_event(&m)) {
        Ok(Ok(transforms::Mapped::Event(e))) => e.business_keys(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use transforms::model::BusinessKeyKind;

    #[test]
    fn an_admission_yields_its_patient_and_visit() {
        let msg = "MSH|^~\\&|HIS|MAIN|SB|HUB|20250101120000||ADT^A01^ADT_A01|K1|P|2.5.1\rEVN|A01|20250101120000\rPID|1||MRN-77^^^MAIN^MR||Testperson^Alex||19800101|U\rPV1|1|I|||||||||||||||||VN-5\r";
        let keys = business_keys_of(msg.as_bytes(), "utf-8");
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
        assert!(business_keys_of(msg.as_bytes(), "utf-8").is_empty());
    }
}
