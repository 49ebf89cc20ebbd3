//! Clinical assertions on the HL7 v2 mappings, and the error and unsupported outcomes.
//!
//! The golden tests pin the whole JSON; these say, in plain asserts, what must be true.

use std::fs;
use std::path::Path;

use transforms::hl7v2::access::V2Message;
use transforms::model::{
    AppointmentStatus, BusinessKey, BusinessKeyKind, ChargeStatus, ContactUse, Event, EventKind,
    Gender, IdentifierKind, LocationStatus, OrderStatus, PaymentResult, Priority, ResultStatus,
    TransactionType,
};
use transforms::{v2_to_event, Mapped, MappingError};

fn fixture(trigger: &str, variant: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/hl7v2")
        .join(trigger)
        .join(format!("{variant}.hl7"));
    fs::read_to_string(path).expect("fixture exists")
}

fn map_text(text: &str) -> Result<Mapped, MappingError> {
    v2_to_event(&V2Message::parse(text).expect("message parses"))
}

fn event(text: &str) -> Event {
    match map_text(text) {
        Ok(Mapped::Event(e)) => *e,
        other => panic!("expected an event, got {other:?}"),
    }
}

fn error(text: &str) -> MappingError {
    match map_text(text) {
        Err(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// A segment with the given fields set (1-based numbers), the rest empty.
fn seg(name: &str, fields: &[(usize, &str)]) -> String {
    let n = fields.iter().map(|(i, _)| *i).max().unwrap_or(0);
    let mut values = vec![""; n];
    for (i, v) in fields {
        values[i - 1] = v;
    }
    format!("{name}|{}", values.join("|"))
}

fn key(kind: BusinessKeyKind, value: &str) -> BusinessKey {
    BusinessKey {
        kind,
        value: value.into(),
    }
}

#[test]
fn adt_a04_full_carries_what_opsport_and_px360_need() {
    let e = event(&fixture("adt_a04", "full"));
    assert_eq!(e.kind, EventKind::PatientRegistered);
    assert_eq!(e.source.message_type, "ADT^A04");
    assert_eq!(e.source.control_id, "FULL-A04");
    assert_eq!(
        e.source.event_time.map(|t| t.to_iso()).as_deref(),
        Some("2026-06-15T10:25:00+03:00"),
        "EVN-6 (occurred) wins over EVN-2 (recorded)"
    );
    let p = e.patient.as_ref().expect("patient");
    assert_eq!(e.partition_key().as_deref(), Some("MRN-200417"));
    let nid = p
        .identifier_of(IdentifierKind::NationalId)
        .expect("national id");
    assert_eq!(nid.value, "2098765432");
    assert_eq!(nid.assigning_authority.as_deref(), Some("MOI"));
    assert_eq!(
        p.identifier_of(IdentifierKind::Passport)
            .map(|i| i.value.as_str()),
        Some("P7788123")
    );
    assert_eq!(p.name.full(), "Yousef Bin Khalid");
    let ar = p.second_language_name.as_ref().expect("Arabic name");
    assert_eq!(ar.language.as_deref(), Some("ar"));
    assert_eq!(ar.given.as_deref(), Some("يوسف"));
    assert_eq!(
        p.birth_date.map(|d| d.date_iso()).as_deref(),
        Some("1994-09-20")
    );
    assert_eq!(p.gender, Some(Gender::Male));
    assert_eq!(p.email.as_deref(), Some("yousef.khalid@example.org"));
    let mobile = p
        .phones
        .iter()
        .find(|ph| ph.use_ == Some(ContactUse::Mobile))
        .expect("mobile");
    assert_eq!(mobile.number, "+966 50 2222222");
    assert_eq!(p.blood_type.as_deref(), Some("O+"));
    assert_eq!(
        p.nationality.as_ref().and_then(|n| n.code.as_deref()),
        Some("SAU")
    );
    assert!(!p.vip);
    let enc = e.encounter.as_ref().expect("encounter");
    assert_eq!(enc.visit_number.as_deref(), Some("V-2026-000981"));
    let doc = enc.attending.as_ref().expect("attending");
    assert_eq!(doc.code.as_deref(), Some("DOC-SARAH-04"));
    assert_eq!(doc.licence_number.as_deref(), Some("LIC-PED-9988"));
    assert_eq!(doc.registration_number.as_deref(), Some("M-20412"));
    let clinic = enc.location.as_ref().expect("clinic");
    assert_eq!(clinic.code.as_deref(), Some("CLN-PED-01"));
    assert_eq!(clinic.floor.as_deref(), Some("1"));
    assert_eq!(clinic.branch.as_deref(), Some("RUH"));
    assert_eq!(enc.insurer.as_deref(), Some("Bupa Arabia"));
    let keys = e.business_keys();
    assert!(keys.contains(&key(BusinessKeyKind::PatientId, "MRN-200417")));
    assert!(keys.contains(&key(BusinessKeyKind::PatientId, "2098765432")));
    assert!(keys.contains(&key(BusinessKeyKind::VisitNumber, "V-2026-000981")));
}

#[test]
fn adt_a01_vip_and_a03_discharge_and_a05_no_admission_yet() {
    let a01 = event(&fixture("adt_a01", "full"));
    assert_eq!(a01.kind, EventKind::EncounterAdmitted);
    assert!(a01.patient.as_ref().expect("patient").vip, "PV1-16 = Y");

    let a03 = event(&fixture("adt_a03", "full"));
    assert_eq!(a03.kind, EventKind::EncounterDischarged);
    let enc = a03.encounter.expect("encounter");
    assert_eq!(
        enc.discharge_time.map(|t| t.to_iso()).as_deref(),
        Some("2026-06-15T12:30:00+03:00")
    );
    let kinds: Vec<_> = enc.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["admitted", "consultation", "prescribed_drugs", "discharged"],
        "PX360 timeline: PV1-44, ZVT steps, PV1-45"
    );
    assert_eq!(
        enc.events[1].description.as_deref(),
        Some("Seen by Dr Al-Otaibi")
    );

    let a05 = event(&fixture("adt_a05", "full"));
    assert_eq!(a05.kind, EventKind::EncounterPreadmitted);
    let enc = a05.encounter.expect("encounter");
    assert!(enc.admit_time.is_some(), "expected admission time is kept");
    assert!(enc.events.is_empty(), "nobody was admitted yet");
}

#[test]
fn adt_v23_reads_pid2_and_pid19() {
    let e = event(&fixture("adt_a01", "awkward"));
    let p = e.patient.expect("patient");
    assert_eq!(p.identifiers[0].value, "H-55501");
    assert_eq!(
        p.identifier_of(IdentifierKind::NationalId)
            .map(|i| i.value.as_str()),
        Some("1122334455")
    );
    assert_eq!(p.name.family.as_deref(), Some("Núñez"));
    assert_eq!(
        p.birth_date.map(|t| t.to_iso()).as_deref(),
        Some("1977-11-02T04:15")
    );
}

#[test]
fn adt_a28_bare_pv1_is_not_an_encounter() {
    let e = event(&fixture("adt_a28", "minimal"));
    assert_eq!(e.kind, EventKind::PatientRegistered);
    assert!(e.encounter.is_none());
}

#[test]
fn adt_a40_merge_keeps_both_records_keys() {
    let e = event(&fixture("adt_a40", "full"));
    assert_eq!(e.kind, EventKind::PatientMerged);
    assert_eq!(e.partition_key().as_deref(), Some("MRN-200417"));
    let merge = e.merge.as_ref().expect("merge");
    assert_eq!(merge.identifiers[0].value, "MRN-200399");
    assert_eq!(merge.visit_number.as_deref(), Some("V-2026-000500"));
    let keys = e.business_keys();
    assert!(keys.contains(&key(BusinessKeyKind::PatientId, "MRN-200399")));
    assert!(keys.contains(&key(BusinessKeyKind::PatientId, "MRN-200417")));
}

#[test]
fn custom_delimiters_map_like_standard_ones() {
    let standard = fixture("adt_a08", "minimal");
    let custom: String = standard
        .chars()
        .map(|c| match c {
            '|' => '#',
            '^' => '$',
            '~' => '*',
            '\\' => '!',
            '&' => '%',
            c => c,
        })
        .collect();
    let (a, b) = (event(&standard), event(&custom));
    assert_eq!(a.patient, b.patient);
    assert_eq!(
        a.id, b.id,
        "same sender and control id give the same event id"
    );
}

#[test]
fn siu_statuses_follow_trigger_and_sch25() {
    let cases = [
        (
            "siu_s12",
            "full",
            EventKind::AppointmentBooked,
            AppointmentStatus::Booked,
        ),
        (
            "siu_s12",
            "awkward",
            EventKind::AppointmentBooked,
            AppointmentStatus::Pending,
        ),
        (
            "siu_s13",
            "full",
            EventKind::AppointmentRescheduled,
            AppointmentStatus::Booked,
        ),
        (
            "siu_s14",
            "awkward",
            EventKind::AppointmentModified,
            AppointmentStatus::Arrived,
        ),
        (
            "siu_s15",
            "awkward",
            EventKind::AppointmentCancelled,
            AppointmentStatus::Cancelled,
        ),
        (
            "siu_s16",
            "full",
            EventKind::AppointmentDiscontinued,
            AppointmentStatus::Cancelled,
        ),
        (
            "siu_s17",
            "full",
            EventKind::AppointmentDeleted,
            AppointmentStatus::EnteredInError,
        ),
        (
            "siu_s26",
            "awkward",
            EventKind::AppointmentNoShow,
            AppointmentStatus::NoShow,
        ),
    ];
    for (trigger, variant, kind, status) in cases {
        let e = event(&fixture(trigger, variant));
        assert_eq!(e.kind, kind, "{trigger}/{variant}");
        assert_eq!(
            e.appointment.expect("appointment").status,
            status,
            "{trigger}/{variant}"
        );
    }
}

#[test]
fn siu_full_timing_resources_and_ids() {
    let e = event(&fixture("siu_s12", "full"));
    let a = e.appointment.as_ref().expect("appointment");
    assert_eq!(a.placer_id.as_deref(), Some("WEB-55012"));
    assert_eq!(a.filler_id.as_deref(), Some("APT-77001"));
    assert_eq!(
        a.start.map(|t| t.to_iso()).as_deref(),
        Some("2026-06-16T10:00:00+03:00")
    );
    assert_eq!(
        a.end.map(|t| t.to_iso()).as_deref(),
        Some("2026-06-16T10:30:00+03:00")
    );
    assert_eq!(a.duration_minutes, Some(30));
    assert_eq!(
        a.practitioner.as_ref().and_then(|p| p.code.as_deref()),
        Some("DOC-SARAH-04")
    );
    assert_eq!(
        a.location.as_ref().and_then(|l| l.code.as_deref()),
        Some("CLN-PED-01")
    );
    assert_eq!(
        a.service.as_ref().and_then(|s| s.code.as_deref()),
        Some("CONS-PED")
    );
    assert_eq!(a.notes.as_deref(), Some("Bring previous X-ray films."));
    assert_eq!(
        a.patient.as_ref().map(|i| i.value.as_str()),
        Some("MRN-200417")
    );
    let keys = e.business_keys();
    assert!(keys.contains(&key(BusinessKeyKind::AppointmentId, "APT-77001")));
    assert!(keys.contains(&key(BusinessKeyKind::AppointmentId, "WEB-55012")));
    // Duration in hours (v2.3) and in seconds (AIS-8 = S).
    let h = event(&fixture("siu_s12", "awkward"))
        .appointment
        .expect("appointment");
    assert_eq!(h.duration_minutes, Some(60));
    let s = event(&fixture("siu_s14", "awkward"))
        .appointment
        .expect("appointment");
    assert_eq!(s.duration_minutes, Some(45));
    assert_eq!(
        s.end.map(|t| t.to_iso()).as_deref(),
        Some("2026-06-19T08:45:00")
    );
}

#[test]
fn orders_placed_cancelled_and_scheduled() {
    let e = event(&fixture("orm_o01", "full"));
    assert_eq!(e.kind, EventKind::OrderPlaced);
    let o = &e.orders[0];
    assert_eq!(o.placer_number.as_deref(), Some("ORD-5002"));
    assert_eq!(o.filler_number.as_deref(), Some("RAD-9002"));
    assert_eq!(o.priority, Some(Priority::Routine));
    assert_eq!(o.status, OrderStatus::Placed);
    let appt = e
        .appointment
        .as_ref()
        .expect("scheduled order has an appointment");
    assert_eq!(
        appt.start.map(|t| t.to_iso()).as_deref(),
        Some("2026-06-16T09:00:00+03:00")
    );
    assert_eq!(appt.duration_minutes, Some(15));

    let c = event(&fixture("orm_o01", "awkward"));
    assert_eq!(c.kind, EventKind::OrderCancelled);
    assert_eq!(c.orders.len(), 2);
    assert!(c.orders.iter().all(|o| o.status == OrderStatus::Cancelled));
    assert_eq!(c.orders[0].priority, Some(Priority::Stat), "OBR-5 in v2.3");
    assert!(c.appointment.is_none());

    let oml = event(&fixture("oml_o21", "full"));
    assert_eq!(oml.orders[0].status, OrderStatus::Scheduled);
    assert_eq!(oml.orders[0].priority, Some(Priority::Asap), "TQ1-9");
    assert_eq!(
        oml.appointment
            .and_then(|a| a.start)
            .map(|t| t.to_iso())
            .as_deref(),
        Some("2026-06-16T07:30:00+03:00")
    );
    let xo = event(&fixture("oml_o21", "awkward"));
    assert_eq!(xo.kind, EventKind::OrderUpdated);
    assert_eq!(
        xo.orders[0].notes.as_deref(),
        Some("Draw after 08:00 & before 10:00\nLabel: ^urgent^")
    );
}

#[test]
fn oru_observations_values_units_ranges_flags() {
    let e = event(&fixture("oru_r01", "full"));
    assert_eq!(e.kind, EventKind::ResultReported);
    assert_eq!(e.results.len(), 2);
    let lipid = &e.results[0];
    assert_eq!(lipid.status, Some(ResultStatus::Final));
    assert_eq!(lipid.order.status, OrderStatus::Completed);
    let chol = &lipid.observations[0];
    assert_eq!(chol.code.code.as_deref(), Some("2093-3"));
    assert_eq!(chol.numeric_value.as_ref().map(|d| d.as_str()), Some("6.2"));
    assert_eq!(
        chol.units.as_ref().and_then(|u| u.code.as_deref()),
        Some("mmol/L")
    );
    assert_eq!(chol.reference_range.as_deref(), Some("<5.2"));
    assert_eq!(chol.abnormal_flags, ["H"]);
    assert_eq!(
        lipid.observations[1].notes.as_deref(),
        Some("Borderline; repeat in 3 months.")
    );
    assert_eq!(e.results[1].status, Some(ResultStatus::Preliminary));
    let keys = e.business_keys();
    assert!(keys.contains(&key(BusinessKeyKind::OrderNumber, "LIS-88002")));

    let awk = event(&fixture("oru_r01", "awkward"));
    let obs = &awk.results[0].observations;
    assert_eq!(obs[0].value.as_deref(), Some("1:128"), "SN rendered");
    assert_eq!(obs[1].value.as_deref(), Some("<0.5"));
    assert!(obs[1].numeric_value.is_none(), "not a number, kept as text");
    assert!(obs[2]
        .value
        .as_deref()
        .is_some_and(|v| v.contains("hemolysed\nResult")));
    assert_eq!(obs[3].status, Some(ResultStatus::EnteredInError));
    assert!(obs[3].value.is_none(), "\"\" is a null, not text");
}

#[test]
fn dft_amounts_reversals_and_payment_outcomes() {
    let e = event(&fixture("dft_p03", "full"));
    assert_eq!(e.kind, EventKind::ChargePosted);
    let c = &e.charges;
    assert_eq!(c.len(), 3);
    assert_eq!(c[0].amount.as_ref().map(|d| d.as_str()), Some("300.00"));
    assert_eq!(c[0].currency.as_deref(), Some("SAR"));
    assert_eq!(c[0].account.as_deref(), Some("ACC-778812"));
    assert_eq!(c[0].visit_number.as_deref(), Some("V-2026-000981"));
    assert_eq!(c[1].quantity.as_ref().map(|d| d.as_str()), Some("2"));
    assert_eq!(
        c[1].unit_amount.as_ref().and_then(|d| d.to_minor_units(2)),
        Some(4525)
    );
    assert_eq!(c[2].transaction_type, TransactionType::Payment);
    let pay = c[2].payment.as_ref().expect("payment outcome");
    assert_eq!(pay.result, PaymentResult::Success);
    assert_eq!(pay.reference.as_deref(), Some("GW-7781-22"));

    let r = event(&fixture("dft_p03", "awkward"));
    assert_eq!(r.charges[0].status, ChargeStatus::Reversed, "CD credit");
    assert_eq!(
        r.charges[1].status,
        ChargeStatus::Reversed,
        "negative charge"
    );
    assert_eq!(
        r.charges[0].code.as_ref().and_then(|c| c.text.as_deref()),
        Some("GP consultation (reversal)")
    );
    let failed = r.charges[2].payment.as_ref().expect("payment outcome");
    assert_eq!(failed.result, PaymentResult::Failure);
    assert_eq!(failed.reason.as_deref(), Some("Card declined by issuer"));
    assert_eq!(
        r.kind,
        EventKind::ChargePosted,
        "not every line is reversed"
    );

    let p11 = event(&fixture("dft_p11", "full"));
    assert_eq!(
        p11.charges[0]
            .transaction_date
            .map(|t| t.to_iso())
            .as_deref(),
        Some("2026-06-15T10:30:00+03:00"),
        "start of the FT1-4 range (v2.5+)"
    );
}

#[test]
fn all_reversed_lines_make_a_charge_reversed_event() {
    let text = "MSH|^~\\&|HIS|RUH|||20260615||DFT^P03|R1|P|2.5\rPID|1||MRN-1^^^HIS^MR\r\
FT1|1|TX-1||20260615||CD|CONS^Consultation|||1|150.00\r";
    assert_eq!(event(text).kind, EventKind::ChargeReversed);
}

#[test]
fn errors_name_the_field_and_never_the_value() {
    let no_id =
        "MSH|^~\\&|HIS|RUH|||20260615||ADT^A04|E1|P|2.5\rPID|1||||Secretname^Person||19900101\r";
    let e = error(no_id);
    assert_eq!(e.path(), "PID-3");
    assert!(!e.to_string().contains("Secretname"));

    let mut pv1 = vec![""; 45];
    (pv1[0], pv1[1], pv1[18], pv1[43]) = ("1", "I", "V1", "20261345XYZ");
    let bad_date = format!(
        "MSH|^~\\&|HIS|RUH|||20260615||ADT^A01|E2|P|2.5\rPID|1||M1^^^HIS^MR\rPV1|{}\r",
        pv1.join("|")
    );
    let bad_date = bad_date.as_str();
    let e = error(bad_date);
    assert!(matches!(e, MappingError::BadDateTime { .. }));
    assert_eq!(e.path(), "PV1-44");
    assert!(!e.to_string().contains("20261345"));

    let bad_status = format!(
        "MSH|^~\\&|HIS|RUH|||20260615||SIU^S12|E3|P|2.5\r{}\rPID|1||M1^^^HIS^MR\r",
        seg("SCH", &[(2, "A1"), (25, "Maybe")])
    );
    let bad_status = bad_status.as_str();
    let e = error(bad_status);
    assert!(matches!(e, MappingError::UnknownCode { .. }));
    assert_eq!(e.path(), "SCH-25");

    let no_appt_id = format!(
        "MSH|^~\\&|HIS|RUH|||20260615||SIU^S12|E4|P|2.5\r{}\r",
        seg("SCH", &[(25, "Booked")])
    );
    assert_eq!(error(&no_appt_id).path(), "SCH-1");

    let bad_amount = "MSH|^~\\&|HIS|RUH|||20260615||DFT^P03|E5|P|2.5\rPID|1||M1^^^HIS^MR\r\
FT1|1|T1||20260615||CG|X|||1|10.00\rFT1|2|T2||20260615||CG|Y|||1|12,50\r";
    let e = error(bad_amount);
    assert!(matches!(e, MappingError::BadNumber { .. }));
    assert_eq!(e.path(), "FT1[2]-11");

    let no_ft1 = "MSH|^~\\&|HIS|RUH|||20260615||DFT^P03|E6|P|2.5\rPID|1||M1^^^HIS^MR\r";
    assert_eq!(error(no_ft1).path(), "FT1");

    let no_mrg = "MSH|^~\\&|HIS|RUH|||20260615||ADT^A40|E7|P|2.5\rPID|1||M1^^^HIS^MR\r";
    assert_eq!(error(no_mrg).path(), "MRG");

    let no_control_id = "MSH|^~\\&|HIS|RUH|||20260615||ADT^A08||P|2.5\rPID|1||M1^^^HIS^MR\r";
    assert_eq!(error(no_control_id).path(), "MSH-10");

    let bad_obx = "MSH|^~\\&|LIS|LAB|||20260615||ORU^R01|E8|P|2.5\rPID|1||M1^^^HIS^MR\rOBR|1|O1||GLU\rOBX|1|NM|GLU||5.4||||||Q\r";
    assert_eq!(error(bad_obx).path(), "OBX-11");
}

#[test]
fn unsupported_types_are_an_outcome_not_an_error() {
    for (text, expected) in [
        (
            "MSH|^~\\&|HIS|RUH|||20260615||QRY^A19|U1|P|2.5\rQRD|20260615|R|I|Q1\r",
            "QRY^A19",
        ),
        (
            "MSH|^~\\&|HIS|RUH|||20260615||ACK|U2|P|2.5\rMSA|AA|X\r",
            "ACK",
        ),
        (
            "MSH|^~\\&|HIS|RUH|||20260615||SIU^S25|U3|P|2.5\r",
            "SIU^S25",
        ),
        (
            "MSH|^~\\&|HIS|RUH|||20260615||MDM^T02|U4|P|2.5\r",
            "MDM^T02",
        ),
    ] {
        match map_text(text) {
            Ok(Mapped::Unsupported { message_type }) => assert_eq!(message_type, expected),
            other => panic!("{expected}: {other:?}"),
        }
    }
}

#[test]
fn event_ids_are_deterministic_per_sender_and_control_id() {
    let text = fixture("adt_a08", "full");
    assert_eq!(event(&text).id, event(&text).id);
    let other = text.replace("FULL-A08", "FULL-A08-2");
    assert_ne!(event(&text).id, event(&other).id);
}

#[test]
fn adt_a40_maps_every_pid_mrg_pair() {
    let e = event(&fixture("adt_a40", "multi_pair"));
    assert_eq!(e.kind, EventKind::PatientMerged);
    assert_eq!(e.partition_key().as_deref(), Some("MRN-300101"));
    assert_eq!(e.additional_merges.len(), 2);
    assert_eq!(
        e.additional_merges[1].merged.visit_number.as_deref(),
        Some("V-2026-002950")
    );
    let keys = e.business_keys();
    for id in [
        "MRN-300090",
        "MRN-300095",
        "TMP-88123",
        "MRN-300099",
        "MRN-300103",
    ] {
        assert!(
            keys.contains(&key(BusinessKeyKind::PatientId, id)),
            "{id} not a business key: {keys:?}"
        );
    }
    // The first group's PV1 is the first patient's visit.
    assert_eq!(
        e.encounter.and_then(|v| v.visit_number).as_deref(),
        Some("V-2026-003001")
    );
}

#[test]
fn adt_a40_pair_without_mrg_names_its_pid() {
    let text = [
        "MSH|^~\\&|HIS|RUH|||20260615103000||ADT^A40|A40-BAD|P|2.5",
        "PID|1||MRN-1^^^HIS^MR",
        "MRG|MRN-0^^^HIS^MR",
        "PID|2||MRN-2^^^HIS^MR",
        // A visit that belongs to the second patient is not the first patient's encounter.
        "PV1|1|O|CLN-1||||||||||||||||V-9",
    ]
    .join("\r");
    let e = error(&text);
    assert_eq!(e.path(), "MRG after PID[2]");
    let text = text.replace(
        "PID|2||MRN-2^^^HIS^MR",
        "PID|2||MRN-2^^^HIS^MR\rMRG|||||V-0",
    );
    assert_eq!(error(&text).path(), "MRG[2]-1");
    let ok = text.replace("MRG|||||V-0", "MRG|MRN-00");
    let e = event(&ok);
    assert!(e.encounter.is_none(), "{:?}", e.encounter);
    assert_eq!(e.additional_merges[0].merged.identifiers[0].value, "MRN-00");
}

#[test]
fn siu_aig_person_is_the_practitioner_only_without_aip() {
    let e = event(&fixture("siu_s12", "resources"));
    let a = e.appointment.expect("appointment");
    assert_eq!(
        a.practitioner.and_then(|p| p.code).as_deref(),
        Some("NUR-22")
    );
    let codes: Vec<_> = a
        .resources
        .iter()
        .map(|r| r.resource.code.as_deref())
        .collect();
    assert_eq!(codes, [Some("ULTRA-03"), Some("GEL-W")]);
    assert_eq!(a.resources[1].quantity, Some(2));
    // AIG-8 gives the start when AIS, AIP and AIL have none.
    assert_eq!(
        a.start.map(|t| t.to_string()).as_deref(),
        Some("2026-06-18T09:15:00+03:00")
    );

    let e = event(&fixture("siu_s14", "resources"));
    let a = e.appointment.expect("appointment");
    assert_eq!(
        a.practitioner.and_then(|p| p.code).as_deref(),
        Some("DOC-RAD-02")
    );
    assert_eq!(
        a.resources.len(),
        2,
        "the nurse stays a resource beside the AIP"
    );
}

#[test]
fn siu_aig_quantity_must_be_a_whole_number() {
    let text = [
        "MSH|^~\\&|HIS|RUH|||20260615103000||SIU^S12|AIG-Q|P|2.5",
        "SCH||APT-1^HIS",
        "AIG|1|A|BED-1^Bed|EQUIP||1.5",
    ]
    .join("\r");
    assert_eq!(
        error(&text),
        MappingError::BadNumber {
            path: "AIG-6".into()
        }
    );
}

#[test]
fn adt_a02_keeps_the_location_history_of_the_transfer() {
    let e = event(&fixture("adt_a02", "full"));
    assert_eq!(e.kind, EventKind::EncounterTransferred);
    let enc = e.encounter.expect("a transfer has its visit");
    let history: Vec<_> = enc
        .location_history
        .iter()
        .map(|s| (s.location.code.as_deref(), s.status))
        .collect();
    assert_eq!(
        history,
        vec![
            (Some("WARD-3"), LocationStatus::Completed),
            (Some("WARD-5"), LocationStatus::Active),
        ]
    );
    // The move happened at EVN-6: it ends the prior stay and starts the new one.
    let moved = e.source.event_time.expect("EVN-6");
    assert_eq!(enc.location_history[0].end, Some(moved));
    assert_eq!(enc.location_history[1].start, Some(moved));
    assert_eq!(enc.location.and_then(|l| l.code).as_deref(), Some("WARD-5"));
    // Every AL1 is an allergy of the patient.
    let allergies = e.patient.expect("patient").allergies;
    assert_eq!(allergies.len(), 2);
    assert_eq!(allergies[0].reactions, vec!["Hives", "Wheezing"]);
}

#[test]
fn a_pending_transfer_plans_its_location_and_a_plain_visit_has_no_history() {
    let e = event(&fixture("adt_a15", "minimal"));
    let stays = e.encounter.expect("visit").location_history;
    assert_eq!(
        stays.last().map(|s| s.status),
        Some(LocationStatus::Planned)
    );
    let e = event(&fixture("adt_a01", "full"));
    assert!(e.encounter.expect("visit").location_history.is_empty());
}

#[test]
fn a_swap_carries_both_patients_and_their_visits() {
    let e = event(&fixture("adt_a17", "minimal"));
    assert_eq!(e.kind, EventKind::PatientsSwapped);
    assert_eq!(e.partition_key().as_deref(), Some("MRN-100234"));
    assert_eq!(
        e.encounter.and_then(|v| v.visit_number).as_deref(),
        Some("V-1001")
    );
    let other = e.other_patient.expect("the second patient");
    assert_eq!(other.patient.identifiers[0].value, "MRN-100777");
    assert_eq!(
        other.encounter.and_then(|v| v.visit_number).as_deref(),
        Some("V-1002")
    );
    // A link names two patients: without the second PID it is an error, not half an event.
    let text = fixture("adt_a24", "minimal");
    let one = text.split('\r').take(4).collect::<Vec<_>>().join("\r") + "\r";
    match map_text(&one) {
        Err(MappingError::Missing { path, .. }) => assert_eq!(path, "PID[2]"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a60_allergies_keep_their_action() {
    let e = event(&fixture("adt_a60", "full"));
    assert_eq!(e.kind, EventKind::AllergiesUpdated);
    let actions: Vec<_> = e
        .patient
        .expect("patient")
        .allergies
        .into_iter()
        .map(|a| (a.allergen.code, a.action))
        .collect();
    assert_eq!(
        actions,
        vec![
            (Some("70618".into()), Some("A".into())),
            (Some("256349002".into()), Some("D".into())),
        ]
    );
}

#[test]
fn a20_bed_status_needs_no_patient() {
    let e = event(&fixture("adt_a20", "minimal"));
    assert_eq!(e.kind, EventKind::BedStatusUpdated);
    assert!(e.patient.is_none());
    let bed = e.encounter.and_then(|v| v.location).expect("the bed");
    assert_eq!(bed.bed.as_deref(), Some("1"));
    assert_eq!(bed.bed_status.and_then(|s| s.code).as_deref(), Some("U"));
}

#[test]
fn a45_moves_every_visit_it_names() {
    let e = event(&fixture("adt_a45", "full"));
    assert_eq!(e.kind, EventKind::RecordMoved);
    let visits: Vec<_> = e
        .merge
        .iter()
        .chain(e.additional_merges.iter().map(|m| &m.merged))
        .map(|m| m.visit_number.as_deref())
        .collect();
    assert_eq!(visits, vec![Some("V-2026-000500"), Some("V-2026-000501")]);
}

#[test]
fn hl7_v21_and_v22_adt_take_the_trigger_from_evn() {
    for version in ["2.1", "2.2"] {
        let text = format!(
            "MSH|^~\\&|LAB|RUH|||20260615103000||ADT|OLD-1|P|{version}\r\
             EVN|A02|20260615103000\r\
             PID|1||MRN-100234||Haddad^Layla||19880312|F\r\
             PV1|1|I|WARD-5^502^2|||WARD-3^301^1||||||||||||V-1001\r"
        );
        let e = event(&text);
        assert_eq!(e.kind, EventKind::EncounterTransferred, "{version}");
        assert_eq!(e.source.message_type, "ADT^A02");
        assert_eq!(e.source.version.as_deref(), Some(version));
    }
    // v2.3 and later: MSH-9.2 wins over a stale EVN-1.
    let text = "MSH|^~\\&|LAB|RUH|||20260615103000||ADT^A08|N-1|P|2.3\r\
                EVN|A02|20260615103000\r\
                PID|1||MRN-100234||Haddad^Layla\r";
    assert_eq!(event(text).kind, EventKind::PatientUpdated);
}

#[test]
fn order_numbers_fall_back_from_orc2_to_obr2_then_orc3_and_obr3() {
    let base = "MSH|^~\\&|HIS|RUH|||20260615103000||ORM^O01|O-1|P|2.5\r\
                PID|1||MRN-100234^^^HIS^MR||Haddad^Layla\r";
    for (segments, placer, filler) in [
        ("ORC|NW|P-1\rOBR|1|P-2|F-2|CBC\r", Some("P-1"), Some("F-2")),
        ("ORC|NW||F-1\rOBR|1|P-2||CBC\r", Some("P-2"), Some("F-1")),
        ("ORC|NW\rOBR|1||F-2|CBC\r", None, Some("F-2")),
        ("ORC|NW||F-1\rOBR|1|||CBC\r", None, Some("F-1")),
    ] {
        let e = event(&format!("{base}{segments}"));
        let o = &e.orders[0];
        assert_eq!(o.placer_number.as_deref(), placer, "{segments}");
        assert_eq!(o.filler_number.as_deref(), filler, "{segments}");
        // The FHIR side keys the ServiceRequest on whichever number there is.
        let bundle =
            transforms::fhir::transaction_bundle(&e, &transforms::fhir::BundleOptions::default())
                .expect("bundle");
        let json = fhirbolt::json::to_string(&bundle, None).expect("json");
        assert!(json.contains("ServiceRequest"), "{segments}: {json}");
    }
    match map_text(&format!("{base}ORC|NW\rOBR|1|||CBC\r")) {
        Err(MappingError::Missing { path, .. }) => assert_eq!(path, "ORC-2"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn siu_times_come_from_tq1_before_sch11() {
    // v2.5 with both: TQ1 wins over a stale SCH-11.
    let text = "MSH|^~\\&|HIS|RUH|||20260615103000||SIU^S12|T-1|P|2.5\r\
                SCH||APT-1^HIS|||||||||^^^202606161000^202606161030\r\
                TQ1|1||||||202606171100|202606171145\r\
                PID|1||MRN-100234^^^HIS^MR||Haddad^Layla\r";
    let a = event(text).appointment.expect("appointment");
    assert_eq!(
        a.start.map(|t| t.to_string()).as_deref(),
        Some("2026-06-17T11:00")
    );
    assert_eq!(
        a.end.map(|t| t.to_string()).as_deref(),
        Some("2026-06-17T11:45")
    );
    // v2.4 without TQ1: SCH-11 is the timing.
    let old = text
        .replace("|P|2.5\r", "|P|2.4\r")
        .replace("TQ1|1||||||202606171100|202606171145\r", "");
    let a = event(&old).appointment.expect("appointment");
    assert_eq!(
        a.start.map(|t| t.to_string()).as_deref(),
        Some("2026-06-16T10:00")
    );
    // v2.7 withdrew SCH-11: it is not read at all.
    let new = old.replace("|P|2.4\r", "|P|2.7\r");
    assert_eq!(event(&new).appointment.expect("appointment").start, None);
}
