//! The business keys of a stored message: the identifiers its canonical events carry
//! (`transforms::model::Event::business_keys`) and the words of its patient's name, which
//! the store indexes for search; and the patient a message is about, as the console's
//! message list shows it ([`patient_of`]).
//!
//! The events come from [`crate::formats::events_of`], the same reading routing uses, so
//! every source format is indexed once it has a canonical mapping. A message that does not
//! map (an unsupported type, a mapping error) has no business keys; it is still found by
//! control id. Nothing here logs a value: names and identifiers go to the index (as keyed
//! hashes with encryption on, see `crate::store::keys`) and to the admin API, never to a log.

use crate::formats::{events_of, Meaning};
use crate::store::keys::name_tokens;
use crate::store::MessageRecord;
use channels::source::RecordFormat;
use serde::Serialize;
use transforms::hl7v2::access::V2Message;
use transforms::model::{BusinessKey, BusinessKeyKind, Event, HumanName};

/// The business keys of an accepted message, sorted and deduplicated; empty when it does
/// not map.
pub fn business_keys_of(record: &MessageRecord, raw: &[u8]) -> Vec<BusinessKey> {
    let Meaning::Events(events) = events_of(record, raw) else {
        return Vec::new();
    };
    keys_of_events(&events)
}

/// The business keys of canonical events: their identifiers, and each word of their
/// patient's name (primary and second-language) as a `patient_name` key; sorted and
/// deduplicated.
pub fn keys_of_events(events: &[Event]) -> Vec<BusinessKey> {
    let mut keys: Vec<BusinessKey> = events.iter().flat_map(|e| e.business_keys()).collect();
    for e in events {
        let Some(p) = &e.patient else { continue };
        let mut words = name_words(&p.name);
        if let Some(second) = &p.second_language_name {
            words.push(' ');
            words.push_str(&name_words(second));
        }
        keys.extend(name_tokens(&words).into_iter().map(|value| BusinessKey {
            kind: BusinessKeyKind::PatientName,
            value,
        }));
    }
    keys.sort();
    keys.dedup();
    keys
}

/// Family, given and middle names, space-separated.
fn name_words(n: &HumanName) -> String {
    [&n.family, &n.given, &n.middle]
        .iter()
        .filter_map(|p| p.as_deref())
        .collect::<Vec<_>>()
        .join(" ")
}

/// How a name is shown: `Family, Given Middle`, or whichever parts there are.
fn display_name(family: Option<&str>, given: &[&str]) -> String {
    let given = given
        .iter()
        .filter(|g| !g.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    match (family.filter(|f| !f.is_empty()), given.is_empty()) {
        (Some(f), false) => format!("{f}, {given}"),
        (Some(f), true) => f.to_string(),
        (None, _) => given,
    }
}

/// The patient a message is about, as the message list shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PatientSummary {
    /// `Family, Given Middle`; empty when the message names no one.
    pub name: String,
    /// The patient's primary identifier (the MRN when one is marked `MR`, else the first
    /// identifier); empty when none.
    pub mrn: String,
}

/// The patient of a stored message, read on the server from its decoded body (so nothing
/// more about the patient is kept in clear with encryption on): HL7 v2 from its first PID
/// (also for messages that were rejected or have no mapping), the JSON formats and Latrexa
/// bookings from their canonical event. `None` when the message names no patient.
pub fn patient_of(record: &MessageRecord, raw: &[u8]) -> Option<PatientSummary> {
    let summary = match record.format.known()? {
        RecordFormat::Hl7v2 => patient_of_v2(raw, &record.charset),
        RecordFormat::Latrexa => serde_json::from_slice(raw)
            .ok()
            .and_then(|b| transforms::from_json::latrexa::event_from_booking(&b).ok())
            .and_then(|e| patient_of_event(&e)),
        RecordFormat::Json(_) | RecordFormat::Dicom => match events_of(record, raw) {
            Meaning::Events(events) => events.iter().find_map(patient_of_event),
            Meaning::Unsupported(_) | Meaning::Failed(_) => None,
        },
    }?;
    (!summary.name.is_empty() || !summary.mrn.is_empty()).then_some(summary)
}

fn patient_of_event(e: &Event) -> Option<PatientSummary> {
    if let Some(p) = &e.patient {
        let given: Vec<&str> = [&p.name.given, &p.name.middle]
            .iter()
            .filter_map(|g| g.as_deref())
            .collect();
        return Some(PatientSummary {
            name: display_name(p.name.family.as_deref(), &given),
            mrn: p
                .primary_identifier()
                .map(|i| i.value.clone())
                .unwrap_or_default(),
        });
    }
    e.appointment
        .as_ref()
        .and_then(|a| a.patient.as_ref())
        .map(|id| PatientSummary {
            name: String::new(),
            mrn: id.value.clone(),
        })
}

/// PID-5 (first repetition: family, given, middle) and PID-3 (the repetition typed `MR`,
/// else the first) of the first PID segment.
fn patient_of_v2(raw: &[u8], charset: &str) -> Option<PatientSummary> {
    let text = transforms::hl7v2::charset::decode_lossy(raw, charset);
    let message = V2Message::parse(&text).ok()?;
    let pid = message.segment("PID")?;
    let part = |field, rep, comp| pid.get_at(field, rep, comp, 1).string();
    let family = part(5, 1, 1);
    let given: Vec<String> = [part(5, 1, 2), part(5, 1, 3)]
        .into_iter()
        .flatten()
        .collect();
    let given: Vec<&str> = given.iter().map(String::as_str).collect();
    let mut first = None;
    let mut mrn = None;
    for rep in 1..=20 {
        if pid.get_at(3, rep, 1, 1).is_absent() && pid.get_at(3, rep, 5, 1).is_absent() {
            break;
        }
        let Some(id) = part(3, rep, 1) else { continue };
        if part(3, rep, 5).is_some_and(|t| t.eq_ignore_ascii_case("MR")) {
            mrn = Some(id);
            break;
        }
        first.get_or_insert(id);
    }
    Some(PatientSummary {
        name: display_name(family.as_deref(), &given),
        mrn: mrn.or(first).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> MessageRecord {
        crate::store::tests::record(1, "c", "K", crate::store::Status::Received)
    }

    #[test]
    fn an_admission_yields_its_patient_visit_and_name_words() {
        let msg = "MSH|^~\\&|HIS|MAIN|SB|HUB|20250101120000||ADT^A01^ADT_A01|K1|P|2.5.1\rEVN|A01|20250101120000\rPID|1||MRN-77^^^MAIN^MR||Testperson^Alex^Jo||19800101|U\rPV1|1|I|||||||||||||||||VN-5\r";
        let keys = business_keys_of(&record(), msg.as_bytes());
        for (kind, value) in [
            (BusinessKeyKind::PatientId, "MRN-77"),
            (BusinessKeyKind::VisitNumber, "VN-5"),
            (BusinessKeyKind::PatientName, "testperson"),
            (BusinessKeyKind::PatientName, "alex"),
            (BusinessKeyKind::PatientName, "jo"),
        ] {
            assert!(
                keys.contains(&BusinessKey {
                    kind,
                    value: value.into()
                }),
                "{kind:?} {value}: {keys:?}"
            );
        }
    }

    #[test]
    fn an_unmapped_message_has_none() {
        let msg = "MSH|^~\\&|HIS|MAIN|SB|HUB|20250101120000||ZZZ^Z01|K2|P|2.5.1\r";
        assert!(business_keys_of(&record(), msg.as_bytes()).is_empty());
    }

    #[test]
    fn the_patient_of_a_v2_message_is_its_pid() {
        let msg = "MSH|^~\\&|HIS|MAIN|SB|HUB|20250101120000||ADT^A08|K1|P|2.5.1\rPID|1||N1^^^MOI^NI~MRN-9^^^MAIN^MR||O'Brien^Mary^Ann~Other^Name\r";
        let p = patient_of(&record(), msg.as_bytes()).expect("a patient");
        assert_eq!(p.name, "O'Brien, Mary Ann");
        assert_eq!(p.mrn, "MRN-9", "the MR-typed identifier wins");
        // Without an MR: the first identifier; without PID-5: the identifier alone.
        let msg =
            "MSH|^~\\&|HIS|MAIN|SB|HUB|20250101120000||ZZZ^Z01|K1|P|2.5.1\rPID|1||P-1^^^MAIN~P-2\r";
        let p = patient_of(&record(), msg.as_bytes()).expect("a patient");
        assert_eq!((p.name.as_str(), p.mrn.as_str()), ("", "P-1"));
        let msg = "MSH|^~\\&|HIS|MAIN|SB|HUB|20250101120000||ZZZ^Z01|K1|P|2.5.1\rEVN|A01\r";
        assert_eq!(patient_of(&record(), msg.as_bytes()), None);
    }
}
