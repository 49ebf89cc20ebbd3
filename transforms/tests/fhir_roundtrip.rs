//! Property test: canonical -> FHIR transaction Bundle -> JSON -> canonical keeps identifiers,
//! names, birth date, gender, appointment times and charge amounts.
//!
//! The values are generated canonical events (the v2 -> canonical mapping of `from_v2` was
//! not merged when this was written); see `golden.rs` for fixed fixtures.
#![allow(clippy::unwrap_used, missing_docs)]

use proptest::prelude::*;
use transforms::fhir::{fhir_to_events, transaction_bundle, BundleOptions};
use transforms::model::{
    Appointment, AppointmentStatus, Charge, ChargeStatus, Decimal, Event, EventKind, Gender,
    HumanName, Identifier, IdentifierKind, Patient, Precision, Source, Timestamp, TransactionType,
};

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z'-]{0,11}"
}

fn id_value() -> impl Strategy<Value = String> {
    "[A-Z0-9][A-Z0-9-]{0,11}"
}

fn identifiers() -> impl Strategy<Value = Vec<Identifier>> {
    let kind = prop_oneof![
        Just(IdentifierKind::Mrn),
        Just(IdentifierKind::PatientNumber),
        Just(IdentifierKind::NationalId),
        Just(IdentifierKind::Passport),
    ];
    (id_value(), prop::collection::vec((kind, id_value()), 0..3)).prop_map(|(mrn, more)| {
        let mut ids = vec![Identifier {
            value: mrn,
            kind: IdentifierKind::Mrn,
            type_code: None,
            assigning_authority: None,
        }];
        ids.extend(more.into_iter().map(|(kind, value)| Identifier {
            value,
            kind,
            type_code: None,
            assigning_authority: None,
        }));
        ids
    })
}

fn name() -> impl Strategy<Value = HumanName> {
    (
        prop::option::of(token()),
        token(),
        prop::option::of(token()),
        prop::option::of(token()),
    )
        .prop_map(|(family, given, middle, prefix)| HumanName {
            family,
            given: Some(given),
            middle,
            prefix,
            ..HumanName::default()
        })
}

fn birth_date() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        (1900i32..2030, 1u8..=12, 1u8..=28).prop_map(|(y, m, d)| Timestamp::date(y, m, d).unwrap()),
        (1900i32..2030).prop_map(|y| {
            Timestamp::from_parts(Precision::Year, y, 1, 1, 0, 0, 0, 0, 0, None).unwrap()
        }),
    ]
}

fn date_time() -> impl Strategy<Value = Timestamp> {
    (
        2000i32..2040,
        1u8..=12,
        1u8..=28,
        0u8..24,
        0u8..60,
        0u8..60,
        prop::option::of((-48i16..=56).prop_map(|q| q * 15)),
    )
        .prop_map(|(y, mo, d, h, mi, s, off)| {
            Timestamp::from_parts(Precision::Second, y, mo, d, h, mi, s, 0, 0, off).unwrap()
        })
}

fn gender() -> impl Strategy<Value = Gender> {
    prop_oneof![
        Just(Gender::Male),
        Just(Gender::Female),
        Just(Gender::Other),
        Just(Gender::Unknown)
    ]
}

fn patient() -> impl Strategy<Value = Patient> {
    (
        identifiers(),
        name(),
        prop::option::of(birth_date()),
        prop::option::of(gender()),
    )
        .prop_map(|(identifiers, name, birth_date, gender)| Patient {
            identifiers,
            name,
            birth_date,
            gender,
            ..Patient::default()
        })
}

fn event(kind: EventKind, patient: Patient) -> Event {
    Event {
        id: "prop".into(),
        kind,
        source: Source {
            format: "hl7v2".into(),
            message_type: "SIU^S12".into(),
            control_id: "C1".into(),
            ..Source::default()
        },
        patient: Some(patient),
        merge: None,
        encounter: None,
        appointment: None,
        orders: Vec::new(),
        results: Vec::new(),
        charges: Vec::new(),
        practitioners: Vec::new(),
    }
}

fn round_trip(event: &Event) -> Vec<Event> {
    let bundle = transaction_bundle(event, &BundleOptions::default()).unwrap();
    let json = fhirbolt::json::to_string(&bundle, None).unwrap();
    fhir_to_events(&json).unwrap()
}

fn same_instant(a: &Timestamp, b: &Timestamp) -> bool {
    a.naive_date_time() == b.naive_date_time() && a.offset_minutes() == b.offset_minutes()
}

proptest! {
    #[test]
    fn appointment_events_keep_their_values(
        patient in patient(),
        start in date_time(),
        minutes in 5u32..240,
        placer in id_value(),
    ) {
        let end = Timestamp::parse_iso(
            &(start.naive_date_time() + chrono::Duration::minutes(i64::from(minutes)))
                .format("%Y-%m-%dT%H:%M:%S")
                .to_string(),
        )
        .unwrap();
        let mut ev = event(EventKind::AppointmentBooked, patient.clone());
        ev.appointment = Some(Appointment {
            placer_id: Some(placer.clone()),
            filler_id: None,
            remote_id: None,
            patient: patient.primary_identifier().cloned(),
            practitioner: None,
            location: None,
            service: None,
            appointment_type: None,
            start: Some(start),
            end: Some(end),
            duration_minutes: Some(minutes),
            status: AppointmentStatus::Booked,
            reason: None,
            event_reason: None,
            notes: None,
        });
        let back = round_trip(&ev);
        prop_assert_eq!(back.len(), 1);
        let b = &back[0];
        prop_assert_eq!(b.kind, EventKind::AppointmentBooked);
        let bp = b.patient.as_ref().unwrap();
        prop_assert_eq!(&bp.identifiers, &patient.identifiers);
        prop_assert_eq!(&bp.name, &patient.name);
        prop_assert_eq!(bp.birth_date, patient.birth_date);
        prop_assert_eq!(bp.gender, patient.gender);
        let ba = b.appointment.as_ref().unwrap();
        prop_assert_eq!(ba.placer_id.as_deref(), Some(placer.as_str()));
        prop_assert_eq!(ba.patient.as_ref(), patient.primary_identifier());
        prop_assert!(same_instant(ba.start.as_ref().unwrap(), &start));
        prop_assert!(same_instant(ba.end.as_ref().unwrap(), &end));
        prop_assert_eq!(ba.duration_minutes, Some(minutes));
    }

    #[test]
    fn charge_events_keep_amounts_and_times(
        patient in patient(),
        items in prop::collection::vec((0i64..10_000_000, prop::bool::ANY, date_time()), 1..4),
    ) {
        let mut ev = event(EventKind::ChargePosted, patient);
        ev.charges = items
            .iter()
            .enumerate()
            .map(|(i, (cents, sar, when))| Charge {
                transaction_id: Some(format!("TX-{i}")),
                batch_id: None,
                account: None,
                visit_number: Some("V-1".into()),
                transaction_date: Some(*when),
                posting_date: None,
                transaction_type: TransactionType::Charge,
                transaction_type_code: "CG".into(),
                code: None,
                quantity: Some(Decimal::parse("1").unwrap()),
                amount: Some(Decimal::parse(&format!("{}.{:02}", cents / 100, cents % 100)).unwrap()),
                unit_amount: None,
                currency: Some(if *sar { "SAR" } else { "USD" }.into()),
                status: ChargeStatus::Posted,
                payment: None,
                department: None,
                location: None,
                performed_by: None,
                ordered_by: None,
                procedure: None,
            })
            .collect();
        let back = round_trip(&ev);
        prop_assert_eq!(back.len(), 1);
        let charges = &back[0].charges;
        prop_assert_eq!(charges.len(), ev.charges.len());
        for (a, b) in ev.charges.iter().zip(charges) {
            prop_assert_eq!(&a.transaction_id, &b.transaction_id);
            prop_assert_eq!(&a.amount, &b.amount);
            prop_assert_eq!(&a.currency, &b.currency);
            prop_assert_eq!(&a.quantity, &b.quantity);
            prop_assert_eq!(&a.visit_number, &b.visit_number);
            prop_assert!(same_instant(a.transaction_date.as_ref().unwrap(), b.transaction_date.as_ref().unwrap()));
        }
    }
}
