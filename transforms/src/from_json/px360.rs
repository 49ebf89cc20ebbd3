//! PX360 HIS patient-data JSON -> canonical events (HIS systems send this shape too).
//!
//! The body is checked with [`crate::dest::px360::validate`], the same function the sandbox's
//! PX360 uses, so a rejected body gets PX360's own error document.

use serde_json::Value;

use super::empty_event;
use crate::dest::px360::{validate, HisValidationError, Px360Options, DATE_TIME_FORMAT};
use crate::model::{
    stable_id, Coded, ContactUse, Encounter, Event, EventKind, Gender, HumanName, Identifier,
    IdentifierKind, Location, Patient, Phone, Practitioner, Precision, Source, Timestamp,
    VisitEvent,
};

fn his_time(text: &str) -> Option<Timestamp> {
    let dt = chrono::NaiveDateTime::parse_from_str(text, DATE_TIME_FORMAT).ok()?;
    use chrono::{Datelike, Timelike};
    Timestamp::from_parts(
        Precision::Minute,
        dt.year(),
        u8::try_from(dt.month()).ok()?,
        u8::try_from(dt.day()).ok()?,
        u8::try_from(dt.hour()).ok()?,
        u8::try_from(dt.minute()).ok()?,
        0,
        0,
        0,
        None,
    )
    .ok()
}

/// Splits `Ahmed Mohammed Ali` into given `Ahmed`, middle `Mohammed`, family `Ali`.
fn split_name(full: &str) -> HumanName {
    let parts: Vec<&str> = full.split_whitespace().collect();
    let (given, family, middle) = match parts.as_slice() {
        [] => (None, None, None),
        [one] => (Some(*one), None, None),
        [first, rest @ .., last] => (
            Some(*first),
            Some(*last),
            (!rest.is_empty()).then(|| rest.join(" ")),
        ),
    };
    HumanName {
        family: family.map(str::to_owned),
        given: given.map(str::to_owned),
        middle,
        ..HumanName::default()
    }
}

/// Converts a received HIS patient-data body into one event per demographic object
/// (admitted, or discharged when `DischargeDate` is set), with the visit timeline on the
/// encounter: HIS visit types become canonical visit kinds via `opts.visit_types`.
///
/// # Errors
/// [`HisValidationError`] (HTTP 400 with `to_body()`) when the body fails validation.
pub fn events_from_body(
    body: &Value,
    opts: &Px360Options,
) -> Result<Vec<Event>, HisValidationError> {
    let data = validate(body)?;
    let content = body.to_string();
    let mut events = Vec::new();
    for (i, d) in data.demographics.iter().enumerate() {
        let mut identifiers = vec![Identifier {
            value: d.patient_id.clone(),
            kind: IdentifierKind::Mrn,
            type_code: None,
            assigning_authority: None,
        }];
        if let Some(ssn) = d.ssn.clone().filter(|s| !s.is_empty()) {
            identifiers.push(Identifier {
                value: ssn,
                kind: IdentifierKind::NationalId,
                type_code: None,
                assigning_authority: None,
            });
        }
        let patient = Patient {
            identifiers,
            name: split_name(&d.patient_name),
            birth_date: d
                .dob
                .as_deref()
                .and_then(|s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
                .and_then(|date| {
                    use chrono::Datelike;
                    Timestamp::date(
                        date.year(),
                        u8::try_from(date.month()).ok()?,
                        u8::try_from(date.day()).ok()?,
                    )
                    .ok()
                }),
            gender: match d.gender.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("male" | "m") => Some(Gender::Male),
                Some("female" | "f") => Some(Gender::Female),
                Some("") | None => None,
                Some(_) => Some(Gender::Other),
            },
            phones: d
                .mobile_no
                .iter()
                .filter(|m| !m.is_empty())
                .map(|m| Phone {
                    number: m.clone(),
                    use_: Some(ContactUse::Mobile),
                })
                .collect(),
            nationality: d
                .patient_nationality
                .clone()
                .filter(|s| !s.is_empty())
                .map(|n| Coded {
                    text: Some(n),
                    ..Coded::default()
                }),
            vip: d
                .is_vip
                .as_deref()
                .is_some_and(|v| v.eq_ignore_ascii_case("yes")),
            ..Patient::default()
        };
        // Visits belong to the admission; the seed sends one demographic object per body.
        let visits = if i == 0 { data.visits.as_slice() } else { &[] };
        let encounter = Encounter {
            visit_number: Some(d.admission_id.clone()),
            location: Some(Location {
                code: Some(d.hospital_id.clone()),
                branch: Some(d.hospital_name.clone()),
                ..Location::default()
            }),
            attending: d
                .consultant_id
                .clone()
                .filter(|c| !c.is_empty())
                .map(|code| Practitioner {
                    code: Some(code),
                    name: d
                        .primary_doctor
                        .as_deref()
                        .map(split_name)
                        .unwrap_or_default(),
                    ..Practitioner::default()
                }),
            admit_time: his_time(&d.admit_date),
            discharge_time: d.discharge_date.as_deref().and_then(his_time),
            financial_class: d
                .bill_type
                .clone()
                .filter(|b| !b.is_empty())
                .map(|b| Coded {
                    text: Some(b),
                    ..Coded::default()
                }),
            insurer: d.insurance_company_name.clone().filter(|s| !s.is_empty()),
            events: visits
                .iter()
                .map(|v| VisitEvent {
                    kind: opts
                        .canonical_visit(&v.kind)
                        .map_or_else(|| v.kind.clone(), str::to_owned),
                    time: his_time(&v.bill_date),
                    description: None,
                    label: Some(v.kind.clone()),
                })
                .collect(),
            ..Encounter::default()
        };
        let kind = if encounter.discharge_time.is_some() {
            EventKind::EncounterDischarged
        } else {
            EventKind::EncounterAdmitted
        };
        let source = Source {
            format: "px360".into(),
            message_type: "his-patient-data".into(),
            control_id: stable_id(&["px360", &content]),
            sending_facility: Some(d.hospital_name.clone()),
            ..Source::default()
        };
        let mut ev = empty_event(
            stable_id(&["px360", &content, &i.to_string()]),
            kind,
            source,
        );
        ev.patient = Some(patient);
        ev.encounter = Some(encounter);
        events.push(ev);
    }
    Ok(events)
}
