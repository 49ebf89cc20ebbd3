//! Property tests: canonical -> FHIR transaction Bundle -> JSON -> canonical keeps identifiers,
//! names, birth date, gender, appointment times and charge amounts, both for generated
//! canonical events and for generated HL7 v2 messages mapped by `v2_to_event` (module
//! `from_v2`). Fixed cases are in `dest_fhir_golden.rs`.
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
    let source = Source {
        format: "hl7v2".into(),
        message_type: "SIU^S12".into(),
        control_id: "C1".into(),
        ..Source::default()
    };
    Event {
        patient: Some(patient),
        ..Event::empty("prop".into(), kind, source)
    }
}

fn round_trip(event: &Event) -> Vec<Event> {
    let bundle = transaction_bundle(event, &BundleOptions::default()).unwrap();
    let json = fhirbolt::json::to_string(&bundle, None).unwrap();
    fhir_to_events(&json).unwrap()
}

/// Same local date and time with the same offset; a time without an offset on one side and
/// UTC on the other also counts: FHIR R4 requires an offset on every time, and a time that
/// has none (its channel names no `timezone`) is written as UTC, the documented default.
fn same_instant(a: &Timestamp, b: &Timestamp) -> bool {
    let offsets = match (a.offset_minutes(), b.offset_minutes()) {
        (None, Some(0)) | (Some(0), None) => true,
        (x, y) => x == y,
    };
    a.naive_date_time() == b.naive_date_time() && offsets
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
            resources: Vec::new(),
            service: None,
            services: Vec::new(),
            personnel: Vec::new(),
            locations: Vec::new(),
            appointment_type: None,
            start: Some(start),
            end: Some(end),
            duration_minutes: Some(minutes),
            status: AppointmentStatus::Booked,
            reason: None,
            event_reason: None,
            notes: None,
            roles: Vec::new(),
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
                diagnoses: Vec::new(),
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

/// HL7 v2 -> canonical (the other engineer's `v2_to_event`) -> FHIR -> canonical.
mod from_v2 {
    use super::*;
    use transforms::hl7v2::access::V2Message;
    use transforms::{v2_to_event, Mapped};

    fn v2(text: &str) -> Event {
        let msg = V2Message::parse(text).unwrap();
        match v2_to_event(&msg).unwrap() {
            Mapped::Event(e) => *e,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn hl7_name() -> impl Strategy<Value = String> {
        "[A-Z][a-z]{1,9}"
    }

    proptest! {
        #[test]
        fn every_name_address_phone_and_allergy_survives_fhir(
            mrn in "[A-Z0-9]{3,10}",
            names in prop::collection::vec(
                (hl7_name(), hl7_name(), prop_oneof![Just("M"), Just("N"), Just("L"), Just("S")]),
                0..4,
            ),
            cities in prop::collection::vec(hl7_name(), 1..4),
            phones in prop::collection::vec("[1-9][0-9]{6,9}", 1..4),
            allergens in prop::collection::btree_set("[A-Z][A-Z0-9]{2,8}", 0..3),
            diagnoses in prop::collection::btree_set("[A-Z][0-9]{2}", 0..3),
            procedures in prop::collection::btree_set("[1-9][0-9]{4}", 0..3),
            gp in "GP[A-Z0-9]{2,6}",
            consultants in prop::collection::btree_set("C[A-Z0-9]{2,6}", 0..3),
            policies in prop::collection::btree_set(("[A-Z]{3,6}", "P[0-9]{4,9}"), 0..3),
            emails in prop::collection::btree_set("[a-z]{2,8}@[a-z]{2,6}\\.org", 1..4),
            alternates in prop::collection::btree_set("ALT[0-9]{2,6}", 0..3),
            others in prop::collection::btree_set("OT[A-Z0-9]{2,6}", 0..3),
            participations in prop::collection::vec(
                ("PX[A-Z0-9]{2,6}", prop_oneof![Just("AT"), Just("CP"), Just("RP")], 0u32..24),
                0..3,
            ),
            codes in prop::collection::vec("[A-Z][A-Z0-9]{0,4}", 12),
            (days, expected_hour) in ("[1-9][0-9]?", 0u32..24),
        ) {
            let mut pid5 = vec!["Main^Person^^^^^L".to_owned()];
            pid5.extend(names.iter().map(|(f, g, t)| format!("{f}^{g}^^^^^{t}")));
            let pid11: Vec<String> = cities.iter().map(|c| format!("1 Road^^{c}^^^SAU^H")).collect();
            let mut pid13: Vec<String> = phones.iter().map(|n| format!("^PRN^PH^^^^^^^^^{n}")).collect();
            // Every e-mail: NET repetitions, the last one on a phone repetition (XTN-4).
            let emails: Vec<&String> = emails.iter().collect();
            for (i, e) in emails.iter().enumerate() {
                if i + 1 == emails.len() && i > 0 {
                    pid13.push(format!("^PRN^CP^{e}^966^50^1234567"));
                } else {
                    pid13.push(format!("^NET^Internet^{e}"));
                }
            }
            let mut text = format!(
                "MSH|^~\\&|HIS|RUH|||20260615103000||ADT^A08|N-{mrn}|P|2.8\r\
                 EVN|A08|20260615103000\r\
                 PID|1||{mrn}^^^HIS^MR||{}||19800101|F|||{}||{}\r",
                pid5.join("~"),
                pid11.join("~"),
                pid13.join("~"),
            );
            text.push_str(&format!("PD1||||{gp}^Practitioner^General^^^Dr\r"));
            // PV1: current ward, prior ward (PV1-6), consulting doctors (PV1-9), visit, and
            // every other field the IG maps.
            let mut pv1 = vec![String::new(); 53];
            pv1[0] = "PV1".into();
            pv1[1] = "1".into();
            pv1[2] = "I".into();
            pv1[3] = "WARD-NEW^1^1".into();
            pv1[6] = "WARD-OLD^2^2".into();
            pv1[9] = consultants
                .iter()
                .map(|c| format!("{c}^Consultant^Some^^^Dr"))
                .collect::<Vec<_>>()
                .join("~");
            pv1[19] = format!("V-{mrn}^^^HIS^VN");
            let c = |i: usize, table: &str| format!("{}^Text {}^{table}", codes[i], codes[i]);
            pv1[4] = c(0, "HL70007");
            pv1[5] = format!("PRE-{mrn}");
            pv1[10] = c(1, "HL70069");
            pv1[11] = "XRAY^^^RUH".into();
            pv1[13] = c(2, "HL70092");
            pv1[14] = c(3, "HL70023");
            pv1[15] = format!("{}~{}", c(4, "HL70009"), c(5, "HL70009"));
            pv1[16] = c(6, "HL70099");
            pv1[17] = format!("ADM{mrn}^Admitter^Some^^^Dr");
            pv1[18] = c(7, "L");
            pv1[36] = c(8, "HL70112");
            pv1[37] = format!("DEST{mrn}&Destination&HL70113");
            pv1[38] = c(9, "HL70114");
            pv1[39] = format!("FAC{mrn}&Facility");
            pv1[41] = c(10, "HL70117");
            pv1[42] = "WARD-NEXT^3^3".into();
            pv1[43] = "LAB^^^RUH".into();
            pv1[44] = "20260615080000+0300".into();
            pv1[50] = alternates.iter().map(|a| format!("{a}^^^CLAIMS")).collect::<Vec<_>>().join("~");
            pv1[52] = others.iter().map(|o| format!("{o}^Other^Some^^^Dr")).collect::<Vec<_>>().join("~");
            text.push_str(&pv1.join("|"));
            text.push('\r');
            let mut pv2 = vec![String::new(); 41];
            pv2[0] = "PV2".into();
            pv2[1] = "WARD-PRIOR^4^4".into();
            pv2[3] = c(11, "L");
            pv2[4] = c(0, "L");
            pv2[7] = c(1, "HL70130");
            pv2[8] = format!("20260615{expected_hour:02}0000+0300");
            pv2[9] = format!("20260620{expected_hour:02}3000+0300");
            pv2[10] = days.clone();
            pv2[11] = days.clone();
            pv2[12] = "Seen \\T\\ admitted < 1h".into();
            pv2[13] = format!("RS{mrn}^Referrer^Source^^^Dr");
            pv2[21] = c(2, "HL70215");
            pv2[22] = "Y".into();
            pv2[25] = c(3, "HL70217");
            pv2[38] = c(4, "HL70430");
            pv2[40] = c(5, "HL70432");
            text.push_str(&pv2.join("|"));
            text.push('\r');
            for (i, (person, role, hour)) in participations.iter().enumerate() {
                text.push_str(&format!(
                    "PRT|{}|AD||{role}^Role^HL70912|{person}^Person^Some^^^Dr||||||20260615{hour:02}0000+0300|20260616{hour:02}0000+0300\r",
                    i + 1
                ));
            }
            for (i, a) in allergens.iter().enumerate() {
                text.push_str(&format!("AL1|{}|DA|{a}^{a}^L|SV|Rash\r", i + 1));
            }
            for (i, d) in diagnoses.iter().enumerate() {
                text.push_str(&format!("DG1|{}||{d}^Diagnosis {d}^I10||20260615103000|F\r", i + 1));
            }
            for (i, code) in procedures.iter().enumerate() {
                text.push_str(&format!(
                    "PR1|{}||{code}^Procedure {code}^C4||20260615110000|||||||{gp}^Practitioner^General^^^Dr\r",
                    i + 1
                ));
            }
            for (i, (company, policy)) in policies.iter().enumerate() {
                let mut in1 = vec![String::new(); 37];
                in1[0] = "IN1".into();
                in1[1] = (i + 1).to_string();
                in1[2] = format!("PLAN-{company}^Plan {company}");
                in1[3] = company.clone();
                in1[4] = format!("{company} Insurance");
                in1[12] = "20260101".into();
                in1[13] = "20261231".into();
                in1[17] = "SEL^Self^HL70063".into();
                in1[36] = policy.clone();
                text.push_str(&in1.join("|"));
                text.push('\r');
            }
            let original = v2(&text);
            let bundle = transaction_bundle(&original, &BundleOptions::default()).unwrap();
            let json = fhirbolt::json::to_string(&bundle, None).unwrap();
            let back = fhir_to_events(&json).unwrap();
            prop_assert_eq!(back.len(), 1);
            let (a, b) = (original.patient.as_ref().unwrap(), back[0].patient.as_ref().unwrap());
            // Every IN1: plan, company, policy number, dates and relationship (the plan's and
            // the relationship's v2 table names aside, as FHIR keeps codes).
            prop_assert_eq!(a.coverages.len(), policies.len());
            prop_assert_eq!(b.coverages.len(), a.coverages.len());
            for (x, y) in a.coverages.iter().zip(&b.coverages) {
                prop_assert_eq!(&x.plan, &y.plan);
                prop_assert_eq!(&x.company_id, &y.company_id);
                prop_assert_eq!(&x.company_name, &y.company_name);
                prop_assert_eq!(&x.policy_number, &y.policy_number);
                prop_assert_eq!(&x.start, &y.start);
                prop_assert_eq!(&x.end, &y.end);
                prop_assert_eq!(
                    x.relationship.as_ref().and_then(|r| r.code.as_deref()),
                    y.relationship.as_ref().and_then(|r| r.code.as_deref())
                );
            }
            prop_assert_eq!(&b.name, &a.name);
            let names_a: Vec<_> = a.other_names.iter().map(|n| &n.name).collect();
            let names_b: Vec<_> = b.other_names.iter().map(|n| &n.name).collect();
            prop_assert_eq!(names_a, names_b);
            prop_assert_eq!(a.other_names.len(), names.len());
            prop_assert_eq!(&b.address, &a.address);
            prop_assert_eq!(&b.other_addresses, &a.other_addresses);
            prop_assert_eq!(a.other_addresses.len() + 1, cities.len());
            prop_assert_eq!(&b.phones, &a.phones);
            // The given phones, and the mobile that carries the last e-mail when there are two.
            let carrier = usize::from(emails.len() > 1);
            prop_assert_eq!(a.phones.len(), phones.iter().collect::<std::collections::BTreeSet<_>>().len() + carrier);
            // FHIR has its own category and criticality codes: the v2 codes come back, their
            // table names do not.
            let key = |x: &transforms::model::Allergy| {
                (
                    x.allergen.clone(),
                    x.category.as_ref().and_then(|c| c.code.clone()),
                    x.severity.as_ref().and_then(|c| c.code.clone()),
                    x.reactions.clone(),
                )
            };
            let allergies_a: Vec<_> = a.allergies.iter().map(key).collect();
            let allergies_b: Vec<_> = b.allergies.iter().map(key).collect();
            prop_assert_eq!(allergies_a, allergies_b);
            prop_assert_eq!(a.allergies.len(), allergens.len());
            // PD1-4, every DG1 and PR1 (code, time, visit, performer).
            prop_assert_eq!(
                a.primary_care_provider.as_ref().and_then(|p| p.code.as_deref()),
                Some(gp.as_str())
            );
            prop_assert_eq!(&b.primary_care_provider, &a.primary_care_provider);
            prop_assert_eq!(a.diagnoses.len(), diagnoses.len());
            prop_assert_eq!(b.diagnoses.len(), a.diagnoses.len());
            for (x, y) in a.diagnoses.iter().zip(&b.diagnoses) {
                prop_assert_eq!(&x.code, &y.code);
                prop_assert_eq!(&x.visit_number, &y.visit_number);
                prop_assert!(same_instant(x.time.as_ref().unwrap(), y.time.as_ref().unwrap()));
            }
            prop_assert_eq!(a.procedures.len(), procedures.len());
            prop_assert_eq!(b.procedures.len(), a.procedures.len());
            for (x, y) in a.procedures.iter().zip(&b.procedures) {
                prop_assert_eq!(&x.code, &y.code);
                prop_assert_eq!(&x.visit_number, &y.visit_number);
                prop_assert_eq!(&x.performer, &y.performer);
                prop_assert!(same_instant(x.time.as_ref().unwrap(), y.time.as_ref().unwrap()));
            }
            // Every consulting doctor and the location history (prior ward completed,
            // current one active).
            let (ea, eb) = (original.encounter.as_ref().unwrap(), back[0].encounter.as_ref().unwrap());
            prop_assert_eq!(ea.consulting.len(), consultants.len());
            let codes = |e: &transforms::model::Encounter| -> Vec<Option<String>> {
                e.consulting.iter().map(|p| p.code.clone()).collect()
            };
            prop_assert_eq!(codes(ea), codes(eb));
            let stays = |e: &transforms::model::Encounter| -> Vec<(Option<String>, transforms::model::LocationStatus, bool)> {
                e.location_history.iter().map(|s| (s.location.code.clone(), s.status, s.temporary)).collect()
            };
            // PV1-6, PV1-43, PV1-3, PV1-11, PV2-1, PV1-42.
            prop_assert_eq!(ea.location_history.len(), 6);
            prop_assert_eq!(stays(ea), stays(eb));
            // Every e-mail, in order.
            prop_assert_eq!(a.email.as_deref(), Some(emails[0].as_str()));
            prop_assert_eq!(a.other_emails.len() + 1, emails.len());
            prop_assert_eq!(&b.email, &a.email);
            prop_assert_eq!(&b.other_emails, &a.other_emails);
            // PV1 and PV2 in full: identifiers, codes, people, dates, numbers, text.
            prop_assert_eq!(ea.alternate_visit_ids.len(), alternates.len());
            prop_assert_eq!(&eb.alternate_visit_ids, &ea.alternate_visit_ids);
            prop_assert_eq!(&eb.visit_number_authority, &ea.visit_number_authority);
            prop_assert_eq!(&eb.preadmit_number, &ea.preadmit_number);
            for (x, y) in [
                (&ea.admission_type, &eb.admission_type),
                (&ea.service, &eb.service),
                (&ea.readmission, &eb.readmission),
                (&ea.admit_source, &eb.admit_source),
                (&ea.vip_indicator, &eb.vip_indicator),
                (&ea.patient_type, &eb.patient_type),
                (&ea.discharge_disposition, &eb.discharge_disposition),
                (&ea.diet, &eb.diet),
                (&ea.account_status, &eb.account_status),
                (&ea.admit_reason, &eb.admit_reason),
                (&ea.transfer_reason, &eb.transfer_reason),
                (&ea.publicity_code, &eb.publicity_code),
                (&ea.priority, &eb.priority),
                (&ea.mode_of_arrival, &eb.mode_of_arrival),
                (&ea.admission_level_of_care, &eb.admission_level_of_care),
            ] {
                prop_assert!(x.is_some());
                prop_assert_eq!(x, y);
            }
            prop_assert_eq!(ea.ambulatory_status.len(), 2);
            prop_assert_eq!(&eb.ambulatory_status, &ea.ambulatory_status);
            prop_assert_eq!(&eb.visit_user_codes, &ea.visit_user_codes);
            // PV1-39's code (its coding system does not travel: a reference by identifier).
            let (facility, destination) = (format!("FAC{mrn}"), format!("DEST{mrn}"));
            prop_assert_eq!(
                eb.servicing_facility.as_ref().and_then(|f| f.code.as_deref()),
                Some(facility.as_str())
            );
            prop_assert_eq!(
                eb.discharged_to.as_ref().and_then(|l| l.code.as_deref()),
                Some(destination.as_str())
            );
            prop_assert_eq!(&eb.admitting, &ea.admitting);
            prop_assert_eq!(ea.other_providers.len(), others.len());
            prop_assert_eq!(&eb.other_providers, &ea.other_providers);
            prop_assert_eq!(ea.referral_sources.len(), 1);
            prop_assert_eq!(&eb.referral_sources, &ea.referral_sources);
            prop_assert_eq!(&eb.referring, &ea.referring);
            for (x, y) in [
                (&ea.admit_time, &eb.admit_time),
                (&ea.expected_admit_time, &eb.expected_admit_time),
                (&ea.expected_discharge_time, &eb.expected_discharge_time),
            ] {
                prop_assert!(same_instant(x.as_ref().unwrap(), y.as_ref().unwrap()));
            }
            prop_assert_eq!(&eb.expected_length_of_stay, &ea.expected_length_of_stay);
            prop_assert_eq!(&eb.length_of_stay, &ea.length_of_stay);
            prop_assert_eq!(ea.description.as_deref(), Some("Seen & admitted < 1h"));
            prop_assert_eq!(&eb.description, &ea.description);
            prop_assert_eq!(eb.protected, Some(true));
            // Every PRT of the visit: role, table, person and times.
            prop_assert_eq!(ea.roles.len(), participations.len());
            prop_assert_eq!(eb.roles.len(), ea.roles.len());
            for (x, y) in ea.roles.iter().zip(&eb.roles) {
                prop_assert!(x.participation && y.participation);
                prop_assert_eq!(&x.role.code, &y.role.code);
                prop_assert_eq!(&x.practitioner, &y.practitioner);
                prop_assert!(same_instant(x.start.as_ref().unwrap(), y.start.as_ref().unwrap()));
                prop_assert!(same_instant(x.end.as_ref().unwrap(), y.end.as_ref().unwrap()));
            }
        }

        #[test]
        fn every_siu_service_and_resource_keeps_its_time_through_fhir(
            mrn in "[A-Z0-9]{3,10}",
            services in prop::collection::btree_set("SV[A-Z0-9]{1,5}", 1..4),
            people in prop::collection::btree_set("DR[A-Z0-9]{1,5}", 1..4),
            rooms in prop::collection::btree_set("RM[A-Z0-9]{1,5}", 1..4),
            equipment in prop::collection::btree_set(("EQ[A-Z0-9]{1,5}", 1u32..5), 0..3),
            times in prop::collection::vec((0u32..12, 0u32..60, 5u32..90), 16),
        ) {
            let mut text = format!(
                "MSH|^~\\&|HIS|RUH|||20260615103000||SIU^S12|M-{mrn}|P|2.5.1\r\
                 SCH||APT-{mrn}^HIS||||||ROUTINE^Routine|60|MIN\r\
                 TQ1|1||||||20260618080000+0300|20260618200000+0300\r\
                 PID|1||{mrn}^^^HIS^MR||Saleh^Mariam||19790204|F\r\
                 RGS|1|A\r"
            );
            let at = |i: usize| {
                let (h, m, d) = times[i];
                (format!("20260618{:02}{m:02}00+0300", h + 8), d)
            };
            let mut n = 0;
            for s in &services {
                let (start, d) = at(n);
                n += 1;
                text.push_str(&format!("AIS|{n}|A|{s}^Service^L|{start}|||{d}|MIN\r"));
            }
            for p in &people {
                let (start, d) = at(n);
                n += 1;
                text.push_str(&format!("AIP|{n}|A|{p}^Doctor^Some^^^Dr|RAD^Radiology^L||{start}|||{d}|MIN\r"));
            }
            for r in &rooms {
                let (start, d) = at(n);
                n += 1;
                text.push_str(&format!("AIL|{n}|A|{r}^^^RUH|RAD^Radiology||{start}|||{d}|MIN\r"));
            }
            for (e, q) in &equipment {
                let (start, d) = at(n);
                n += 1;
                text.push_str(&format!("AIG|{n}|A|{e}^Equipment|EQUIP^Equipment^L||{q}||{start}|||{d}|MIN\r"));
            }
            let original = v2(&text);
            let back = fhir_to_events(
                &fhirbolt::json::to_string(
                    &transaction_bundle(&original, &BundleOptions::default()).unwrap(),
                    None,
                )
                .unwrap(),
            )
            .unwrap();
            prop_assert_eq!(back.len(), 1);
            let (a, b) = (original.appointment.as_ref().unwrap(), back[0].appointment.as_ref().unwrap());
            prop_assert_eq!(a.services.len(), services.len());
            prop_assert_eq!(a.personnel.len(), people.len());
            prop_assert_eq!(a.locations.len(), rooms.len());
            prop_assert_eq!(a.resources.len(), equipment.len());
            prop_assert_eq!(b.services.len(), a.services.len());
            for (x, y) in a.services.iter().zip(&b.services) {
                prop_assert_eq!(&x.service, &y.service);
                prop_assert!(same_instant(x.start.as_ref().unwrap(), y.start.as_ref().unwrap()));
                prop_assert_eq!(x.duration_minutes, y.duration_minutes);
            }
            prop_assert_eq!(b.personnel.len(), a.personnel.len());
            for (x, y) in a.personnel.iter().zip(&b.personnel) {
                prop_assert_eq!(&x.practitioner, &y.practitioner);
                prop_assert!(same_instant(x.start.as_ref().unwrap(), y.start.as_ref().unwrap()));
                prop_assert_eq!(x.duration_minutes, y.duration_minutes);
            }
            prop_assert_eq!(b.locations.len(), a.locations.len());
            for (x, y) in a.locations.iter().zip(&b.locations) {
                prop_assert_eq!(&x.location.code, &y.location.code);
                prop_assert!(same_instant(x.start.as_ref().unwrap(), y.start.as_ref().unwrap()));
                prop_assert_eq!(x.duration_minutes, y.duration_minutes);
            }
            prop_assert_eq!(b.resources.len(), a.resources.len());
            for (x, y) in a.resources.iter().zip(&b.resources) {
                prop_assert_eq!(&x.resource.code, &y.resource.code);
                prop_assert_eq!(&x.resource_type, &y.resource_type);
                prop_assert_eq!(x.quantity, y.quantity);
                prop_assert!(same_instant(x.start.as_ref().unwrap(), y.start.as_ref().unwrap()));
                prop_assert_eq!(x.duration_minutes, y.duration_minutes);
            }
            prop_assert_eq!(&b.practitioner, &a.practitioner);
            prop_assert_eq!(&b.service, &a.service);
        }

        #[test]
        fn adt_a04_patient_survives_fhir(
            mrn in "[A-Z0-9]{3,10}",
            national in "[0-9]{10}",
            family in hl7_name(),
            given in hl7_name(),
            (y, m, d) in (1920i32..2025, 1u32..=12, 1u32..=28),
            sex in prop_oneof![Just("M"), Just("F"), Just("O"), Just("U")],
            (h, mi) in (0u32..24, 0u32..60),
        ) {
            let visit = format!("V-{mrn}");
            let admit = format!("20260615{h:02}{mi:02}");
            let mut pv1 = vec![""; 45];
            pv1[0] = "PV1";
            pv1[1] = "1";
            pv1[2] = "O";
            pv1[3] = "CLN-1";
            pv1[19] = &visit;
            pv1[44] = &admit;
            let text = format!(
                "MSH|^~\\&|HIS|RUH|||20260615103000||ADT^A04|P-{mrn}|P|2.5\r\
                 EVN|A04|20260615103000\r\
                 PID|1||{mrn}^^^HIS^MR~{national}^^^MOI^NI||{family}^{given}||{y:04}{m:02}{d:02}|{sex}\r{}\r",
                pv1.join("|")
            );
            let original = v2(&text);
            let bundle = transaction_bundle(&original, &BundleOptions::default()).unwrap();
            let json = fhirbolt::json::to_string(&bundle, None).unwrap();
            let back = fhir_to_events(&json).unwrap();
            prop_assert_eq!(back.len(), 1);
            prop_assert_eq!(back[0].kind, original.kind);
            let (a, b) = (original.patient.as_ref().unwrap(), back[0].patient.as_ref().unwrap());
            prop_assert_eq!(&b.identifiers, &a.identifiers);
            prop_assert_eq!(&b.name, &a.name);
            prop_assert_eq!(b.birth_date, a.birth_date);
            prop_assert_eq!(b.gender, a.gender);
            let (ea, eb) = (original.encounter.as_ref().unwrap(), back[0].encounter.as_ref().unwrap());
            prop_assert_eq!(&eb.visit_number, &ea.visit_number);
            match (&ea.admit_time, &eb.admit_time) {
                (Some(x), Some(y)) => prop_assert!(same_instant(x, y)),
                (x, y) => prop_assert_eq!(x, y),
            }
        }

        #[test]
        fn siu_s12_times_survive_fhir(
            mrn in "[A-Z0-9]{3,10}",
            family in hl7_name(),
            (mo, d, h, mi) in (1u32..=12, 1u32..=28, 0u32..23, 0u32..60),
            minutes in 5u32..55,
        ) {
            let text = format!(
                "MSH|^~\\&|HIS|RUH|||20260615103000||SIU^S12|S-{mrn}|P|2.5\r\
                 SCH||APT-{mrn}^HIS|||||||{minutes}|MIN|^^^2026{mo:02}{d:02}{h:02}{mi:02}00+0300\r\
                 PID|1||{mrn}^^^HIS^MR||{family}^Test||19880312|F\r"
            );
            let original = v2(&text);
            let back = fhir_to_events(
                &fhirbolt::json::to_string(
                    &transaction_bundle(&original, &BundleOptions::default()).unwrap(),
                    None,
                )
                .unwrap(),
            )
            .unwrap();
            prop_assert_eq!(back.len(), 1);
            prop_assert_eq!(back[0].kind, EventKind::AppointmentBooked);
            let (a, b) = (original.appointment.as_ref().unwrap(), back[0].appointment.as_ref().unwrap());
            prop_assert_eq!(&b.filler_id, &a.filler_id);
            prop_assert_eq!(&b.patient, &a.patient);
            prop_assert!(same_instant(a.start.as_ref().unwrap(), b.start.as_ref().unwrap()));
            match (&a.end, &b.end) {
                (Some(x), Some(y)) => prop_assert!(same_instant(x, y)),
                (x, y) => prop_assert_eq!(x, y),
            }
        }

        #[test]
        fn dft_p03_amounts_survive_fhir(
            mrn in "[A-Z0-9]{3,10}",
            cents in 0i64..10_000_000,
            qty in 1u32..10,
        ) {
            let amount = format!("{}.{:02}", cents / 100, cents % 100);
            let text = format!(
                "MSH|^~\\&|HIS|RUH|||20260615103000||DFT^P03|D-{mrn}|P|2.3\r\
                 EVN|P03|20260615103000\r\
                 PID|1||{mrn}^^^HIS^MR||Haddad^Layla||19880312|F\r\
                 FT1|1|TX-{mrn}||20260615|20260615|CG|CONS-GP^GP consultation^L|||{qty}|{amount}\r"
            );
            let original = v2(&text);
            let back = fhir_to_events(
                &fhirbolt::json::to_string(
                    &transaction_bundle(&original, &BundleOptions::default()).unwrap(),
                    None,
                )
                .unwrap(),
            )
            .unwrap();
            prop_assert_eq!(back.len(), 1);
            let (a, b) = (&original.charges[0], &back[0].charges[0]);
            prop_assert_eq!(&b.transaction_id, &a.transaction_id);
            prop_assert_eq!(&b.amount, &a.amount);
            prop_assert_eq!(&b.quantity, &a.quantity);
            prop_assert_eq!(&b.currency, &a.currency);
            prop_assert_eq!(b.transaction_date, a.transaction_date);
        }
    }

    proptest! {
        /// A prescription (RDE^O11 with TQ1, RXR and RXC) reads back from its MedicationRequest
        /// with every number, code, dose, quantity, refill count, time and component, and the
        /// same event kind.
        #[test]
        fn rde_medication_orders_survive_fhir(
            number in "[A-Z0-9]{3,10}",
            code in "[0-9]{4,5}-[0-9]{3,4}",
            whole in 1u32..2000,
            refills in 0u32..12,
            qty in 1u32..200,
            control in prop::sample::select(vec!["NW", "XO", "DC", "CA"]),
        ) {
            let text = format!(
                "MSH|^~\\&|HIS|RUH|PHARM|RUH|20260615103000+0300||RDE^O11|R-{number}|P|2.5.1\r\
                 PID|1||MRN-{number}^^^HIS^MR||Haddad^Layla||19880312|F\r\
                 PV1|1|O|CLN-1||||||||||||||||V-{number}\r\
                 ORC|{control}|RX-{number}^HIS|PH-{number}^PHARM||||||20260615103000+0300\r\
                 RXE||{code}^Synthetic drug {number}^NDC|{whole}.5|{whole}.75|mg^milligram^UCUM||||\
                 |{qty}|{{tbl}}^tablet^UCUM|{refills}|||RX-{number}\r\
                 TQ1|1||BID^Twice a day^HL70335||||20260615120000+0300|20260625120000+0300|R\r\
                 RXR|PO^Oral^HL70162|MTH^Mouth^HL70163\r\
                 RXC|B|NS^Normal saline^L|{qty}|mL^milliliter^UCUM\r"
            );
            let original = v2(&text);
            let back = round_trip(&original);
            prop_assert_eq!(back.len(), 1);
            prop_assert_eq!(back[0].kind, original.kind);
            let (a, b) = (&original.medication_orders[0], &back[0].medication_orders[0]);
            prop_assert_eq!(&b.placer_number, &a.placer_number);
            prop_assert_eq!(&b.filler_number, &a.filler_number);
            prop_assert_eq!(&b.prescription_number, &a.prescription_number);
            prop_assert_eq!(&b.medication, &a.medication);
            prop_assert_eq!(&b.dose, &a.dose);
            prop_assert_eq!(&b.quantity, &a.quantity);
            prop_assert_eq!(b.refills, a.refills);
            prop_assert_eq!(&b.route, &a.route);
            prop_assert_eq!(&b.site, &a.site);
            prop_assert_eq!(&b.frequency, &a.frequency);
            prop_assert_eq!(b.start, a.start);
            prop_assert_eq!(b.end, a.end);
            prop_assert_eq!(b.ordered_at, a.ordered_at);
            prop_assert_eq!(&b.components, &a.components);
            prop_assert_eq!(
                back[0].encounter.as_ref().and_then(|e| e.visit_number.clone()),
                Some(format!("V-{number}"))
            );
        }
    }
}
