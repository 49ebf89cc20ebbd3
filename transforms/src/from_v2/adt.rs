//! ADT to canonical: patient demographics, the visit and its locations, merges, moves,
//! identifier changes, links and allergies. Every trigger A01-A62 of HL7 v2.8 that is an ADT
//! message maps (A19 and A56-A59 are queries and responses, QRY/ADR/QBP/RSP, not ADT).
//!
//! | trigger | structure | event kind |
//! |---|---|---|
//! | A01 admit | ADT_A01 | `encounter_admitted` |
//! | A02 transfer | ADT_A02 | `encounter_transferred` |
//! | A03 discharge / end visit | ADT_A03 | `encounter_discharged` |
//! | A04 register (outpatient) | ADT_A01 | `patient_registered` |
//! | A05 pre-admit | ADT_A05 | `encounter_preadmitted` |
//! | A06 outpatient to inpatient, A07 inpatient to outpatient | ADT_A06 | `encounter_class_changed` |
//! | A08 update patient information | ADT_A01 | `patient_updated` |
//! | A09 patient departing, A10 patient arriving (tracking) | ADT_A09 | `patient_departed`, `patient_arrived` |
//! | A11 cancel admit / visit, A38 cancel pre-admit | ADT_A09, ADT_A38 | `encounter_cancelled` |
//! | A12 cancel transfer | ADT_A12 | `encounter_transfer_cancelled` |
//! | A13 cancel discharge | ADT_A01 | `encounter_discharge_cancelled` |
//! | A14 pending admit | ADT_A05 | `encounter_admit_pending` |
//! | A15 pending transfer | ADT_A15 | `encounter_transfer_pending` |
//! | A16 pending discharge | ADT_A16 | `encounter_discharge_pending` |
//! | A17 swap patients | ADT_A17 | `patients_swapped` (second PID/PV1 in `other_patient`) |
//! | A18 merge patient information, A30 merge person, A34 merge patient id only, A36 merge patient id and account, A39 merge person, A40 merge patient | ADT_A18, ADT_A30, ADT_A39 | `patient_merged` (MRG) |
//! | A20 bed status update | ADT_A20 | `bed_status_updated` (NPU, no patient) |
//! | A21 leave of absence out, A22 back | ADT_A21 | `leave_of_absence_started`, `leave_of_absence_ended` |
//! | A23 delete visit | ADT_A21 | `encounter_deleted` |
//! | A24 link, A37 unlink | ADT_A24, ADT_A37 | `patients_linked`, `patients_unlinked` (`other_patient`) |
//! | A25, A26, A27 cancel pending discharge / transfer / admit | ADT_A21 | `encounter_pending_cancelled` |
//! | A28 add person | ADT_A05 | `patient_registered` |
//! | A29 delete person | ADT_A21 | `patient_deleted` |
//! | A31 update person | ADT_A05 | `patient_updated` |
//! | A32 cancel arriving, A33 cancel departing | ADT_A21 | `patient_tracking_cancelled` |
//! | A35 merge account only, A41 merge account | ADT_A30, ADT_A39 | `account_merged` (MRG-3) |
//! | A42 merge visit | ADT_A39 | `visit_merged` (MRG-5) |
//! | A43, A44, A45 move identifier list / account / visit | ADT_A43, ADT_A44, ADT_A45 | `record_moved` (MRG: the source) |
//! | A46-A49 change patient id / identifier list / alternate id / account, A50, A51 change visit number / alternate visit id | ADT_A30, ADT_A50 | `identifier_changed` (MRG: the prior value) |
//! | A52 cancel leave of absence, A53 cancel return from it | ADT_A52 | `leave_of_absence_cancelled` |
//! | A54 change attending doctor | ADT_A54 | `attending_doctor_changed` |
//! | A55, A62 cancel change of attending / consulting doctor | ADT_A54, ADT_A61 | `doctor_change_cancelled` |
//! | A60 update allergy information | ADT_A60 | `allergies_updated` (IAM) |
//! | A61 change consulting doctor | ADT_A61 | `consulting_doctor_changed` |
//!
//! Merges: the A40 patient group (PID, PD1, MRG, PV1) repeats, one group per patient merged.
//! The first group gives [`Event::patient`](crate::model::Event::patient) and
//! [`Event::merge`](crate::model::Event::merge); each further group one
//! [`PatientMerge`] in `additional_merges`, in message order. A group's MRG is the first MRG
//! after its PID and before the next PID; every group must have one. The same rule reads every
//! message with MRG (merges, moves, identifier changes); where one PID has several MRG (A45,
//! one per visit moved), each further MRG is a further pair with the same patient.
//!
//! Two-patient events (A17 swap, A24 link, A37 unlink): the first PID and its PV1 are the
//! event's patient and encounter, the second PID and the PV1 after it `other_patient`.
//!
//! Allergies: every AL1 of any ADT message, and every IAM of A60, become the patient's
//! `allergies` (IAM-6 action code kept: A60 sends changes, not the whole list).
//!
//! The patient comes from PID ([`patient_from_pid`]), the visit from PV1/IN1
//! ([`encounter_from_pv1`]); both are reused by the other families.
//!
//! Visit timeline (PX360): PV1-44 gives `admitted`, PV1-45 `discharged`, and each `ZVT`
//! segment (site-agreed Z-segment, as HL7 v2 has none for it) one step: ZVT-2 step type (CWE;
//! code, else text, lower-cased snake_case: `Prescribed Drugs` -> `prescribed_drugs`), ZVT-3
//! time, ZVT-4 description. Events that did not (or no longer) admit or discharge leave the
//! step out: A05 pre-admit and A11 cancel admit have no `admitted`, A13 has no `discharged`.
//!
//! Version differences handled here: v2.3 senders often put the hospital number in PID-2
//! (external id) or PID-4 (alternate id) and the national id in PID-19 (SSN); from v2.5 these
//! are kept only for backward compatibility and PID-3 is the list. All are read, PID-3 first.
//! From v2.7 PID-13/PID-14 are deprecated in favour of PID-40; all three are read.

use super::datatypes::UpperCode;
use crate::hl7v2::access::{Components, FieldRef, SegmentRef, V2Message};
use crate::model::{
    Allergy, Coded, Contact, ContactUse, Coverage, Diagnosis, Encounter, EncounterClass, Event,
    EventKind, Facility, Gender, Guarantor, Identifier, IdentifierKind, Insured, LinkedPatient,
    Location, LocationStatus, LocationStay, MergedPatient, OtherName, Patient, PatientMerge,
    Procedure, Timestamp, VisitEvent,
};

use super::datatypes::{self, Telecom};
use super::{
    collect_practitioners, decimal_value, new_event, source_from_msh, ts, ts_value, MappingError,
};

/// The event kind of an ADT trigger (see the table of this module), `None` outside A01-A62
/// and for the query triggers A19 and A56-A59.
pub fn kind_for(trigger: &str) -> Option<EventKind> {
    Some(match trigger {
        "A01" => EventKind::EncounterAdmitted,
        "A02" => EventKind::EncounterTransferred,
        "A03" => EventKind::EncounterDischarged,
        "A04" | "A28" => EventKind::PatientRegistered,
        "A05" => EventKind::EncounterPreadmitted,
        "A06" | "A07" => EventKind::EncounterClassChanged,
        "A08" | "A31" => EventKind::PatientUpdated,
        "A09" => EventKind::PatientDeparted,
        "A10" => EventKind::PatientArrived,
        "A11" | "A38" => EventKind::EncounterCancelled,
        "A12" => EventKind::EncounterTransferCancelled,
        "A13" => EventKind::EncounterDischargeCancelled,
        "A14" => EventKind::EncounterAdmitPending,
        "A15" => EventKind::EncounterTransferPending,
        "A16" => EventKind::EncounterDischargePending,
        "A17" => EventKind::PatientsSwapped,
        "A18" | "A30" | "A34" | "A36" | "A39" | "A40" => EventKind::PatientMerged,
        "A20" => EventKind::BedStatusUpdated,
        "A21" => EventKind::LeaveOfAbsenceStarted,
        "A22" => EventKind::LeaveOfAbsenceEnded,
        "A23" => EventKind::EncounterDeleted,
        "A24" => EventKind::PatientsLinked,
        "A25" | "A26" | "A27" => EventKind::EncounterPendingCancelled,
        "A29" => EventKind::PatientDeleted,
        "A32" | "A33" => EventKind::PatientTrackingCancelled,
        "A35" | "A41" => EventKind::AccountMerged,
        "A37" => EventKind::PatientsUnlinked,
        "A42" => EventKind::VisitMerged,
        "A43" | "A44" | "A45" => EventKind::RecordMoved,
        "A46" | "A47" | "A48" | "A49" | "A50" | "A51" => EventKind::IdentifierChanged,
        "A52" | "A53" => EventKind::LeaveOfAbsenceCancelled,
        "A54" => EventKind::AttendingDoctorChanged,
        "A55" | "A62" => EventKind::DoctorChangeCancelled,
        "A60" => EventKind::AllergiesUpdated,
        "A61" => EventKind::ConsultingDoctorChanged,
        _ => return None,
    })
}

/// True for the kinds whose message pairs each PID with an MRG (merges, moves, identifier
/// changes).
fn has_mrg(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::PatientMerged
            | EventKind::AccountMerged
            | EventKind::VisitMerged
            | EventKind::RecordMoved
            | EventKind::IdentifierChanged
    )
}

/// Maps an ADT message whose trigger gave `kind`.
///
/// # Errors
/// [`MappingError`] without PID or patient identifier, without MRG for a merge, or with
/// unparsable dates.
pub fn event_from_adt(msg: &V2Message<'_>, kind: EventKind) -> Result<Box<Event>, MappingError> {
    let mut event = new_event(kind, source_from_msh(msg)?);
    if kind == EventKind::BedStatusUpdated {
        event.encounter = Some(bed_status(msg)?);
        return Ok(event);
    }
    // Filled in place: Patient (2 KB) and Encounter (5 KB) returned by value would be
    // copied at every layer they pass through.
    patient_from_adt_into(msg, event.patient.insert(Patient::default()))?;
    let pv1 = msg.segment("PV1");
    if let Some(pv1) = &pv1 {
        let moved_at = event.source.event_time;
        encounter_into(msg, pv1, moved_at, &mut event.encounter)?;
    }
    let second_pid = msg.segment_n("PID", 2);
    if let (Some(pid), Some(pv1)) = (&second_pid, &pv1) {
        // The first PV1 is the first patient's visit only if it comes before the second PID.
        if pv1.index() > pid.index() {
            event.encounter = None;
        }
    }
    if let Some(encounter) = &mut event.encounter {
        trim_timeline(msg, kind, encounter);
    }
    if has_mrg(kind) {
        let (merge, additional) = merge_pairs(msg)?;
        event.merge = Some(merge);
        event.additional_merges = additional;
    }
    if matches!(
        kind,
        EventKind::PatientsSwapped | EventKind::PatientsLinked | EventKind::PatientsUnlinked
    ) {
        let pid = second_pid.ok_or(MappingError::Missing {
            path: "PID[2]".into(),
            reason: "a swap or link names two patients",
        })?;
        // The second patient's visit is the first PV1 after their PID.
        let pv1 = msg
            .segments()
            .skip(pid.index() + 1)
            .find(|s| s.name() == "PV1");
        let encounter = match &pv1 {
            Some(pv1) => encounter_from_pv1_segment(msg, pv1, event.source.event_time)?,
            None => None,
        };
        event.other_patient = Some(Box::new(LinkedPatient {
            patient: patient_from_pid_segment(msg, &pid, pv1.as_ref())?,
            encounter,
        }));
    }
    collect_practitioners(&mut event);
    Ok(event)
}

/// Drops the timeline steps that did not happen: a pre-admission, a pending or cancelled
/// admission has not admitted anyone (PV1-44 is then the expected time), and a pending or
/// cancelled discharge did not discharge.
fn trim_timeline(msg: &V2Message<'_>, kind: EventKind, encounter: &mut Encounter) {
    let cancels_admit = msg.segment("MSH").is_some_and(|msh| {
        let trigger = msh.get_comp(9, 2);
        trigger
            .text()
            .is_some_and(|t| UpperCode::new(t.trim()).as_str() == "A27")
    });
    encounter.events.retain(|e| match kind {
        EventKind::EncounterPreadmitted
        | EventKind::EncounterCancelled
        | EventKind::EncounterAdmitPending => e.kind != "admitted",
        EventKind::EncounterDischargeCancelled | EventKind::EncounterDischargePending => {
            e.kind != "discharged"
        }
        EventKind::EncounterPendingCancelled => {
            e.kind != "discharged" && !(cancels_admit && e.kind == "admitted")
        }
        _ => true,
    });
}

/// ADT^A20: NPU-1 bed location and NPU-2 bed status, as an encounter without visit or
/// patient (the message names none).
///
/// # Errors
/// [`MappingError::Missing`] without NPU or NPU-1.
fn bed_status(msg: &V2Message<'_>) -> Result<Encounter, MappingError> {
    let missing = |path: &str| MappingError::Missing {
        path: path.into(),
        reason: "a bed status update names the bed",
    };
    let npu = msg.segment("NPU").ok_or_else(|| missing("NPU"))?;
    let mut location = datatypes::location(&npu.field(1).rep(1)).ok_or_else(|| missing("NPU-1"))?;
    location.bed_status = datatypes::coded(&npu.field(2));
    Ok(Encounter {
        location: Some(location),
        ..Encounter::default()
    })
}

/// The patient of an ADT message: PID, plus the blood group from an OBX with LOINC 882-1
/// (ABO and Rh group), since PID has no field for it.
///
/// # Errors
/// [`MappingError::Missing`] without PID or without any patient identifier;
/// [`MappingError::BadDateTime`] for PID-7/PID-29 that do not parse.
pub fn patient_from_adt(msg: &V2Message<'_>) -> Result<Patient, MappingError> {
    let mut patient = Patient::default();
    patient_from_adt_into(msg, &mut patient)?;
    Ok(patient)
}

/// [`patient_from_adt`] into a patient that is still empty.
///
/// # Errors
/// As [`patient_from_adt`].
fn patient_from_adt_into(msg: &V2Message<'_>, patient: &mut Patient) -> Result<(), MappingError> {
    patient_from_pid_into(msg, patient)?;
    patient.allergies = allergies(msg)?;
    patient.contacts = msg
        .segments_named("NK1")
        .filter_map(|nk1| contact(&nk1))
        .collect();
    patient.diagnoses = diagnoses(msg)?;
    patient.procedures = procedures(msg)?;
    patient.coverages = coverages(msg)?;
    patient.guarantors = guarantors(msg)?;
    // Every OBX of an ADT (the IG maps OBX to Observation in any message), with the NTEs
    // right after it as its notes.
    let mut obxs: Vec<(SegmentRef<'_, '_>, Vec<SegmentRef<'_, '_>>)> = Vec::new();
    // Whether the NTEs seen now follow an OBX (and not, say, a PID or an AL1).
    let mut after_obx = false;
    for seg in msg.segments() {
        match seg.name() {
            "OBX" => {
                obxs.push((seg, Vec::new()));
                after_obx = true;
            }
            "NTE" if after_obx => {
                if let Some((_, ntes)) = obxs.last_mut() {
                    ntes.push(seg);
                }
            }
            _ => after_obx = false,
        }
    }
    for (obx, ntes) in &obxs {
        patient
            .observations
            .push(super::oru::observation(msg, obx, ntes)?);
    }
    patient.blood_type = msg
        .segments_named("OBX")
        .find(|obx| obx.get_comp(3, 1).text() == Some("882-1"))
        .and_then(|obx| {
            let value = obx.field(5).rep(1);
            // A coded value (CWE) carries the group as text in component 2, or as the code.
            value.get(2).string().or_else(|| value.get(1).string())
        });
    Ok(())
}

/// The patient from the first PID segment.
///
/// Identifiers: PID-3 (untyped repetitions count as MRN, PID-3 being the patient identifier
/// list of the HIS), then PID-2 and PID-4 (v2.3 external/alternate ids), then PID-19 (SSN, a
/// national id) and PID-20 (driver's licence), without duplicates.
///
/// Names: PID-5 repetitions. The primary name is the first with XPN-7 `L` (legal), else the
/// first; the second-language name is the first other repetition in a different script (Arabic
/// beside Latin, as Gulf HIS send them). Every other repetition (aliases, maiden names…) is
/// kept in `other_names` with its XPN-7 type. Addresses: the first PID-11 repetition is
/// `address`, every further one is in `other_addresses`. PD1-4 is the primary care provider.
///
/// # Errors
/// [`MappingError::Missing`] without PID or without any patient identifier;
/// [`MappingError::BadDateTime`] for PID-7/PID-29 that do not parse.
pub fn patient_from_pid(msg: &V2Message<'_>) -> Result<Patient, MappingError> {
    let mut patient = Patient::default();
    patient_from_pid_into(msg, &mut patient)?;
    Ok(patient)
}

/// [`patient_from_pid`] into a patient that is still empty, for a mapping that fills the
/// event's patient in place.
///
/// # Errors
/// As [`patient_from_pid`].
pub(crate) fn patient_from_pid_into(
    msg: &V2Message<'_>,
    patient: &mut Patient,
) -> Result<(), MappingError> {
    let pid = msg.segment("PID").ok_or(MappingError::Missing {
        path: "PID".into(),
        reason: "no patient identification segment",
    })?;
    pid_into(msg, &pid, msg.segment("PV1").as_ref(), patient)?;
    // PD1 belongs to the message's (first) patient in every structure that has it.
    if let Some(pd1) = msg.segment("PD1") {
        pd1_fields(&pd1, patient);
    }
    Ok(())
}

/// PD1, as the v2-to-FHIR IG maps it to Patient: PD1-3 primary facility (XON: XON-10, else
/// XON-3, as id; XON-1 as name), PD1-4 primary care provider (its repetitions are one doctor's
/// identifiers, read as PV1-7's are), PD1-6 handicap, PD1-14 place of worship (XON-1); and
/// PD1-11 publicity code and PD1-12 protection indicator (`Y`/`N`), which the IG leaves for
/// when ARV is mapped to security labels.
fn pd1_fields(pd1: &SegmentRef<'_, '_>, patient: &mut Patient) {
    patient.primary_care_provider = datatypes::practitioner(&pd1.field(4));
    let facility = pd1.field(3).rep(1);
    let facility = Facility {
        id: facility
            .get(10)
            .string()
            .or_else(|| facility.get(3).string()),
        name: facility.get(1).string(),
    };
    patient.primary_facility = (facility != Facility::default()).then_some(facility);
    patient.disability = datatypes::coded(&pd1.field(6));
    patient.publicity_code = datatypes::coded(&pd1.field(11));
    patient.protected = match pd1
        .get(12)
        .text()
        .map(|t| UpperCode::new(t.trim()))
        .as_deref()
    {
        Some("Y") => Some(true),
        Some("N") => Some(false),
        _ => None,
    };
    patient.place_of_worship = pd1.get(14).string();
}

/// The patient from one PID segment, as [`patient_from_pid`] reads the first; `pv1` is the
/// visit of the same patient group (for the VIP indicator).
///
/// # Errors
/// As [`patient_from_pid`]; paths name this PID's occurrence (`PID[2]-3`).
pub fn patient_from_pid_segment(
    msg: &V2Message<'_>,
    pid: &SegmentRef<'_, '_>,
    pv1: Option<&SegmentRef<'_, '_>>,
) -> Result<Patient, MappingError> {
    let mut patient = Patient::default();
    pid_into(msg, pid, pv1, &mut patient)?;
    Ok(patient)
}

/// [`patient_from_pid_segment`] into a patient that is still empty.
fn pid_into(
    msg: &V2Message<'_>,
    pid: &SegmentRef<'_, '_>,
    pv1: Option<&SegmentRef<'_, '_>>,
    patient: &mut Patient,
) -> Result<(), MappingError> {
    let mut identifiers: Vec<Identifier> = Vec::new();
    let sources = [
        (3, IdentifierKind::Mrn),
        (2, IdentifierKind::Other),
        (4, IdentifierKind::Other),
    ];
    for (field, default) in sources {
        for rep in pid.field(field).reps() {
            if let Some(id) = datatypes::identifier(&rep, default) {
                push_identifier(&mut identifiers, id);
            }
        }
    }
    for (field, kind, code) in [
        (19, IdentifierKind::NationalId, "SS"),
        (20, IdentifierKind::Other, "DL"),
    ] {
        if let Some(value) = pid.get(field).string() {
            push_identifier(
                &mut identifiers,
                Identifier {
                    value,
                    kind,
                    type_code: Some(code.into()),
                    assigning_authority: None,
                },
            );
        }
    }
    if identifiers.is_empty() {
        return Err(MappingError::Missing {
            path: msg.field_path(pid, 3),
            reason: "no patient identifier",
        });
    }

    patient.identifiers = identifiers;
    patient.birth_date = ts(msg, pid, 7)?;
    patient.gender = gender(pid.get(8).text());
    patient.death_time = ts(msg, pid, 29)?;
    patient.account_number = pid.get(18).string();
    names(pid, patient);
    telecoms(pid, patient);
    let mut addresses = pid.field(11).reps().filter_map(|r| datatypes::address(&r));
    patient.address = addresses.next();
    patient.other_addresses = addresses.collect();
    patient.vip = pv1.is_some_and(vip);
    patient.language = datatypes::coded(&pid.field(15));
    patient.marital_status = datatypes::coded(&pid.field(16));
    // PID-28 nationality; PID-26 citizenship when a sender uses that instead.
    patient.nationality =
        datatypes::coded(&pid.field(28)).or_else(|| datatypes::coded(&pid.field(26)));
    Ok(())
}

fn push_identifier(list: &mut Vec<Identifier>, id: Identifier) {
    let dup = list
        .iter()
        .any(|i| i.value == id.value && i.assigning_authority == id.assigning_authority);
    if !dup {
        list.push(id);
    }
}

/// HL7 table 0001; full words are accepted because some HIS send them. Other codes read as
/// unknown rather than failing: the field is administrative and `U` means exactly that.
pub(super) fn gender(code: Option<&str>) -> Option<Gender> {
    Some(match UpperCode::new(code?.trim()).as_str() {
        "M" | "MALE" => Gender::Male,
        "F" | "FEMALE" => Gender::Female,
        "O" | "OTHER" => Gender::Other,
        "A" => Gender::Ambiguous,
        "N" => Gender::NotApplicable,
        _ => Gender::Unknown,
    })
}

fn names(pid: &SegmentRef<'_, '_>, patient: &mut Patient) {
    let reps: Vec<_> = pid.field(5).reps().collect();
    let primary = reps
        .iter()
        .position(|r| r.get(7).text() == Some("L"))
        .unwrap_or(0);
    let Some(first) = reps.get(primary) else {
        return;
    };
    patient.name = datatypes::name_at(first, 1);
    let second = reps
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != primary)
        .map(|(i, r)| (i, datatypes::name_at(r, 1)))
        .find(|(_, n)| !n.is_empty() && n.language != patient.name.language);
    let second_index = second.as_ref().map(|(i, _)| *i);
    patient.second_language_name = second.map(|(_, n)| n);
    patient.other_names = reps
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != primary && Some(*i) != second_index)
        .filter_map(|(_, r)| {
            let name = datatypes::name_at(r, 1);
            (!name.is_empty()).then(|| OtherName {
                name,
                name_type: r.get(7).upper_string(),
            })
        })
        .collect();
}

/// PID-13 (home), PID-14 (business) and PID-40 (v2.7+) telecoms: every phone, every e-mail
/// (the first in `email`, the others in `other_emails`), without duplicates.
fn telecoms(pid: &SegmentRef<'_, '_>, patient: &mut Patient) {
    let fields = [(13, None), (14, Some(ContactUse::Work)), (40, None)];
    for (field, default_use) in fields {
        for rep in pid.field(field).reps() {
            let parts = rep.components();
            match datatypes::telecom_in(&parts, default_use) {
                Some(Telecom::Phone(p)) => {
                    if !patient.phones.contains(&p) {
                        patient.phones.push(p);
                    }
                    // A phone repetition can carry an e-mail too (XTN-4).
                    if let Some(e) = parts.get(4).string() {
                        add_email(patient, e);
                    }
                }
                Some(Telecom::Email(e)) => add_email(patient, e),
                None => {}
            }
        }
    }
}

/// Adds an e-mail address: the first is `email`, the others `other_emails`, once each.
fn add_email(patient: &mut Patient, email: String) {
    match &patient.email {
        None => patient.email = Some(email),
        Some(first) if *first == email || patient.other_emails.contains(&email) => {}
        Some(_) => patient.other_emails.push(email),
    }
}

/// PV1-16 VIP indicator (user table 0099): any value but `N`/`NO`/`0` marks a VIP.
fn vip(pv1: &SegmentRef<'_, '_>) -> bool {
    pv1.get(16)
        .text()
        .is_some_and(|v| !matches!(UpperCode::new(v.trim()).as_str(), "N" | "NO" | "0"))
}

/// The visit from the first PV1 (and IN1-4 for the insurer); see
/// [`encounter_from_pv1_segment`].
///
/// # Errors
/// [`MappingError::BadDateTime`] for PV1-44/PV1-45 that do not parse.
pub fn encounter_from_pv1(msg: &V2Message<'_>) -> Result<Option<Encounter>, MappingError> {
    let mut encounter = None;
    encounter_from_pv1_into(msg, &mut encounter)?;
    Ok(encounter)
}

/// [`encounter_from_pv1`] into `slot` (left as it is without a visit), for a mapping that
/// fills the event's encounter in place.
///
/// # Errors
/// As [`encounter_from_pv1`].
pub(crate) fn encounter_from_pv1_into(
    msg: &V2Message<'_>,
    slot: &mut Option<Encounter>,
) -> Result<(), MappingError> {
    match msg.segment("PV1") {
        Some(pv1) => encounter_into(msg, &pv1, None, slot),
        None => Ok(()),
    }
}

/// The visit from one PV1, the PV2 of its group (the first PV2 after it, before the next PID)
/// and IN1-4 for the insurer, as the v2-to-FHIR IG maps PV1 and PV2 to Encounter.
///
/// PV1: PV1-2 class, PV1-3 location (with PV1-40 bed status when PV1-3 names a room or bed),
/// PV1-4 admission type, PV1-5 preadmit number, PV1-7 attending, PV1-8 referring, PV1-9
/// consulting (one practitioner per repetition, unlike PV1-7, whose repetitions are one
/// doctor's identifiers), PV1-10 hospital service, PV1-13 re-admission, PV1-14 admit source,
/// PV1-15 ambulatory status (every repetition), PV1-16 VIP indicator, PV1-17 admitting
/// doctor, PV1-18 patient type, PV1-19 visit number (CX-1, CX-4 authority), PV1-20 financial
/// class, PV1-36 discharge disposition, PV1-37 discharged to (DLD-1), PV1-38 diet, PV1-39
/// servicing facility, PV1-41 account status, PV1-44/45 admit and discharge times, PV1-50
/// alternate visit ids (every repetition), PV1-52 other providers (one per repetition).
/// PV1-6, PV1-11, PV1-42 and PV1-43 feed the location history.
///
/// PV2: PV2-1 prior pending location (history), PV2-3 admit reason, PV2-4 transfer reason,
/// PV2-7 visit user codes, PV2-8/9 expected admit and discharge times, PV2-10/11 estimated and
/// actual length of stay (days), PV2-12 visit description, PV2-13 referral sources (one per
/// repetition), PV2-21 publicity code, PV2-22 protection indicator (`Y`/`N`), PV2-25 visit
/// priority, PV2-38 mode of arrival, PV2-40 admission level of care. The other PV1/PV2 fields
/// (billing, bad debt, contracts, valuables, purge, military, newborn…) have no place in the
/// IG's Encounter and are not read (`docs/MAPPING.md`, "Dropped on purpose").
///
/// Timeline: `admitted` (PV1-44), then one step per `ZVT` segment in message order (see
/// the ZVT rule in this module), then `discharged` (PV1-45).
///
/// Location history, prior locations first: PV1-6 prior location and PV1-43 prior temporary
/// location (`completed`), PV1-3 assigned location and PV1-11 temporary location (`active`),
/// PV2-1 prior pending location and PV1-42 pending location (`planned`). When a prior location
/// is named, the patient moved at `moved_at` (the event time of a transfer): it ends the prior
/// stays and starts the current ones; otherwise the assigned location starts at PV1-44. A PV1
/// that names only PV1-3 has no history (its `location` says it all).
///
/// A PV1 that only fills the mandatory placeholder (`PV1|1|N`, as A28/A31 carry) is not a
/// visit: an encounter is returned only when PV1 has a visit number, a location, an
/// attending doctor or an admit time.
///
/// # Errors
/// [`MappingError::BadDateTime`] for PV1-44/45 or PV2-8/9 that do not parse;
/// [`MappingError::BadNumber`] for PV2-10/11 that are not numbers.
pub fn encounter_from_pv1_segment(
    msg: &V2Message<'_>,
    pv1: &SegmentRef<'_, '_>,
    moved_at: Option<Timestamp>,
) -> Result<Option<Encounter>, MappingError> {
    let mut encounter = None;
    encounter_into(msg, pv1, moved_at, &mut encounter)?;
    Ok(encounter)
}

/// [`encounter_from_pv1_segment`] into `slot`, which stays as it is when the PV1 is no visit.
/// The encounter (5 KB) is built where it stays, not returned through the callers.
///
/// # Errors
/// As [`encounter_from_pv1_segment`].
pub(crate) fn encounter_into(
    msg: &V2Message<'_>,
    pv1: &SegmentRef<'_, '_>,
    moved_at: Option<Timestamp>,
    slot: &mut Option<Encounter>,
) -> Result<(), MappingError> {
    let pv1 = *pv1;
    let visit = pv1.field(19).rep(1).components();
    let visit_number = visit.get(1).string();
    let location = pv1.field(3).reps().find_map(|r| datatypes::location(&r));
    let attending = datatypes::practitioner(&pv1.field(7));
    // PV1-44/45 are TS (v2.3-2.5) or DTM (v2.6+): component 1 is the time in both.
    let admit_time = ts(msg, &pv1, 44)?;
    if visit_number.is_none() && location.is_none() && attending.is_none() && admit_time.is_none() {
        return Ok(());
    }
    let encounter = slot.insert(Encounter::default());
    pv1_codes(&pv1, encounter, &visit, visit_number);
    encounter.location = location;
    encounter.attending = attending;
    encounter.admit_time = admit_time;
    encounter.discharge_time = ts(msg, &pv1, 45)?;
    encounter.alternate_visit_ids = pv1
        .field(50)
        .reps()
        .filter_map(|r| datatypes::identifier(&r, IdentifierKind::Other))
        .collect();
    encounter.other_providers = pv1
        .field(52)
        .reps()
        .filter_map(|r| datatypes::practitioner_of([r]))
        .collect();
    encounter.insurer = msg.segment("IN1").and_then(|in1| in1.get(4).string());
    // Every ROL and PRT of the patient and visit with a role and a person (the IG maps
    // them to Encounter.participant); one of an order group is the order's.
    encounter.roles = super::visit_roles(msg)?;
    // PV1-40 bed status (deprecated from v2.6, still sent): the IG puts it on the Location
    // when PV1-3 names a room or bed.
    if let Some(loc) = encounter
        .location
        .as_mut()
        .filter(|l| l.room.is_some() || l.bed.is_some())
    {
        loc.bed_status = datatypes::coded(&pv1.field(40));
    }
    let pv2 = pv2_of(msg, &pv1);
    if let Some(pv2) = &pv2 {
        pv2_fields(msg, pv2, encounter)?;
    }
    encounter.location_history =
        location_history(&pv1, pv2.as_ref(), encounter.admit_time, moved_at);
    if let (Some(loc), Some(service)) = (&mut encounter.location, &encounter.service) {
        loc.specialisation = Some(service.clone());
    }
    if let Some(t) = encounter.admit_time {
        encounter.events.push(VisitEvent {
            kind: "admitted".into(),
            time: Some(t),
            description: None,
            label: None,
        });
    }
    for zvt in msg.segments_named("ZVT") {
        if let Some(step) = visit_step(msg, &zvt)? {
            encounter.events.push(step);
        }
    }
    if let Some(t) = encounter.discharge_time {
        encounter.events.push(VisitEvent {
            kind: "discharged".into(),
            time: Some(t),
            description: None,
            label: None,
        });
    }
    Ok(())
}

/// The PV1 fields of [`encounter_into`] that are read as they are (codes, people, numbers).
fn pv1_codes(
    pv1: &SegmentRef<'_, '_>,
    encounter: &mut Encounter,
    visit: &Components<'_, '_>,
    visit_number: Option<String>,
) {
    encounter.visit_number_authority = visit
        .get_sub(4, 1)
        .string()
        .filter(|_| visit_number.is_some());
    encounter.visit_number = visit_number;
    encounter.class = pv1.get(2).text().map(encounter_class);
    encounter.admission_type = datatypes::coded(&pv1.field(4));
    encounter.preadmit_number = pv1.get(5).string();
    encounter.service = datatypes::coded(&pv1.field(10));
    encounter.referring = datatypes::practitioner(&pv1.field(8));
    encounter.consulting = pv1
        .field(9)
        .reps()
        .filter_map(|r| datatypes::practitioner_of([r]))
        .collect();
    encounter.readmission = datatypes::coded(&pv1.field(13));
    encounter.admit_source = datatypes::coded(&pv1.field(14));
    encounter.ambulatory_status = pv1
        .field(15)
        .reps()
        .filter_map(|r| datatypes::coded_at(&r, 1))
        .collect();
    encounter.vip_indicator = datatypes::coded(&pv1.field(16));
    encounter.admitting = datatypes::practitioner(&pv1.field(17));
    encounter.patient_type = datatypes::coded(&pv1.field(18));
    encounter.financial_class = datatypes::coded(&pv1.field(20));
    encounter.discharge_disposition = datatypes::coded(&pv1.field(36));
    encounter.discharged_to = discharged_to(pv1);
    encounter.diet = datatypes::coded(&pv1.field(38));
    encounter.servicing_facility = datatypes::coded(&pv1.field(39));
    encounter.account_status = datatypes::coded(&pv1.field(41));
}

/// PV1-37 discharged to location (DLD-1: IS before v2.7, CWE from it; its code and text).
fn discharged_to(pv1: &SegmentRef<'_, '_>) -> Option<Location> {
    let dld = pv1.field(37);
    if dld.is_empty() {
        return None;
    }
    let parts = dld.rep(1).components();
    let loc = Location {
        code: parts.get_sub(1, 1).string(),
        name: parts.get_sub(1, 2).string(),
        ..Location::default()
    };
    (!loc.is_empty()).then_some(loc)
}

/// The PV2 of a PV1's group: the first PV2 after it, unless another patient's PID comes first.
fn pv2_of<'s, 'm>(msg: &'s V2Message<'m>, pv1: &SegmentRef<'s, 'm>) -> Option<SegmentRef<'s, 'm>> {
    let at = pv1.index();
    let pv2 = msg.segments_named("PV2").find(|s| s.index() > at)?;
    let other_patient = msg
        .segments_named("PID")
        .any(|pid| pid.index() > at && pid.index() < pv2.index());
    (!other_patient).then_some(pv2)
}

/// The PV2 fields of [`encounter_from_pv1_segment`].
fn pv2_fields(
    msg: &V2Message<'_>,
    pv2: &SegmentRef<'_, '_>,
    e: &mut Encounter,
) -> Result<(), MappingError> {
    e.admit_reason = datatypes::coded(&pv2.field(3));
    e.transfer_reason = datatypes::coded(&pv2.field(4));
    e.visit_user_codes = pv2
        .field(7)
        .reps()
        .filter_map(|r| datatypes::coded_at(&r, 1))
        .collect();
    e.expected_admit_time = ts(msg, pv2, 8)?;
    e.expected_discharge_time = ts(msg, pv2, 9)?;
    e.expected_length_of_stay = decimal_value(msg, pv2, 10, pv2.get(10))?;
    e.length_of_stay = decimal_value(msg, pv2, 11, pv2.get(11))?;
    e.description = pv2.get(12).string();
    e.referral_sources = pv2
        .field(13)
        .reps()
        .filter_map(|r| datatypes::practitioner_of([r]))
        .collect();
    e.publicity_code = datatypes::coded(&pv2.field(21));
    e.protected = yes_no(pv2.get(22).text());
    e.priority = datatypes::coded(&pv2.field(25));
    e.mode_of_arrival = datatypes::coded(&pv2.field(38));
    e.admission_level_of_care = datatypes::coded(&pv2.field(40));
    Ok(())
}

/// An HL7 yes/no indicator (table 0136): `Y` true, `N` false, anything else absent.
fn yes_no(text: Option<&str>) -> Option<bool> {
    match text.map(|t| UpperCode::new(t.trim())).as_deref() {
        Some("Y") => Some(true),
        Some("N") => Some(false),
        _ => None,
    }
}

/// One visit timeline step from a `ZVT` segment (site-agreed Z-segment, since HL7 v2 has no
/// segment for it): ZVT-2 step type (CWE; code, else text, lower-cased snake_case, e.g.
/// `Consultation` -> `consultation`, `Prescribed Drugs` -> `prescribed_drugs`), ZVT-3 time,
/// ZVT-4 description. A ZVT without a step type is ignored.
fn visit_step(
    msg: &V2Message<'_>,
    zvt: &SegmentRef<'_, '_>,
) -> Result<Option<VisitEvent>, MappingError> {
    let Some(label) = zvt
        .get_comp(2, 1)
        .string()
        .or_else(|| zvt.get_comp(2, 2).string())
    else {
        return Ok(None);
    };
    Ok(Some(VisitEvent {
        kind: crate::journey::snake(&label),
        time: ts(msg, zvt, 3)?,
        description: zvt.get(4).string(),
        label: Some(label),
    }))
}

/// The locations one PV1 (and the PV2 of its group) names (see
/// [`encounter_from_pv1_segment`]).
fn location_history(
    pv1: &SegmentRef<'_, '_>,
    pv2: Option<&SegmentRef<'_, '_>>,
    admitted: Option<Timestamp>,
    moved_at: Option<Timestamp>,
) -> Vec<LocationStay> {
    let prior_pending = pv2.map(|s| s.field(1)).filter(|f| !f.is_empty());
    // Most PV1 name only PV1-3: no history, and nothing built to find that out.
    if prior_pending.is_none() && [6, 11, 42, 43].iter().all(|&f| pv1.field(f).is_empty()) {
        return Vec::new();
    }
    let stay = |field: FieldRef<'_, '_>, status, temporary| {
        let location = datatypes::location(&field.rep(1))?;
        Some(LocationStay {
            location,
            status,
            start: None,
            end: None,
            temporary,
        })
    };
    let mut history: Vec<LocationStay> = [
        stay(pv1.field(6), LocationStatus::Completed, false),
        stay(pv1.field(43), LocationStatus::Completed, true),
        stay(pv1.field(3), LocationStatus::Active, false),
        stay(pv1.field(11), LocationStatus::Active, true),
        prior_pending.and_then(|f| stay(f, LocationStatus::Planned, false)),
        stay(pv1.field(42), LocationStatus::Planned, false),
    ]
    .into_iter()
    .flatten()
    .collect();
    if history.len() == 1 && pv1.get(3).text().is_some() {
        return Vec::new();
    }
    let moved = history
        .iter()
        .any(|s| s.status == LocationStatus::Completed);
    for s in &mut history {
        match s.status {
            LocationStatus::Completed => s.end = moved_at,
            LocationStatus::Active if moved => s.start = moved_at,
            LocationStatus::Active => s.start = admitted,
            LocationStatus::Planned => {}
        }
    }
    history
}

/// Diagnoses: every DG1 (DG1-3 code, else DG1-4 description as text; DG1-6 type; DG1-5
/// time), in the visit of the message's PV1-19. A DG1 without code or description is ignored.
///
/// # Errors
/// [`MappingError::BadDateTime`] for a DG1-5 that does not parse.
pub fn diagnoses(msg: &V2Message<'_>) -> Result<Vec<Diagnosis>, MappingError> {
    let mut out = Vec::new();
    // Most messages have no DG1: no visit number read (and allocated) for them.
    if msg.segment("DG1").is_none() {
        return Ok(out);
    }
    let visit_number = msg.segment("PV1").and_then(|pv1| pv1.get(19).string());
    for dg1 in msg.segments_named("DG1") {
        out.extend(diagnosis(msg, &dg1, visit_number.clone())?);
    }
    Ok(out)
}

/// One DG1 (see [`diagnoses`]); `None` without code or description.
///
/// # Errors
/// [`MappingError::BadDateTime`] for a DG1-5 that does not parse.
pub fn diagnosis(
    msg: &V2Message<'_>,
    dg1: &SegmentRef<'_, '_>,
    visit_number: Option<String>,
) -> Result<Option<Diagnosis>, MappingError> {
    let code = datatypes::coded(&dg1.field(3)).or_else(|| {
        dg1.get(4).string().map(|text| Coded {
            text: Some(text),
            ..Coded::default()
        })
    });
    let Some(code) = code else {
        return Ok(None);
    };
    Ok(Some(Diagnosis {
        code,
        diagnosis_type: datatypes::coded(&dg1.field(6)),
        time: ts(msg, dg1, 5)?,
        visit_number,
    }))
}

/// Procedures: every PR1 (PR1-3 code, else PR1-4 description as text; PR1-5 time; PR1-12
/// procedure practitioner, else PR1-11 surgeon), in the visit of the message's PV1-19, as the
/// v2-to-FHIR IG maps PR1 to Procedure. A PR1 without code or description is ignored.
///
/// # Errors
/// [`MappingError::BadDateTime`] for a PR1-5 that does not parse.
pub fn procedures(msg: &V2Message<'_>) -> Result<Vec<Procedure>, MappingError> {
    let mut out = Vec::new();
    if msg.segment("PR1").is_none() {
        return Ok(out);
    }
    let visit_number = msg.segment("PV1").and_then(|pv1| pv1.get(19).string());
    for pr1 in msg.segments_named("PR1") {
        let code = datatypes::coded(&pr1.field(3)).or_else(|| {
            pr1.get(4).string().map(|text| Coded {
                text: Some(text),
                ..Coded::default()
            })
        });
        let Some(code) = code else {
            continue;
        };
        out.push(Procedure {
            code,
            time: ts(msg, &pr1, 5)?,
            performer: datatypes::practitioner(&pr1.field(12))
                .or_else(|| datatypes::practitioner(&pr1.field(11))),
            visit_number: visit_number.clone(),
        });
    }
    Ok(out)
}

/// Insurance: every IN1 with the IN2 after it (before the next IN1), as the v2-to-FHIR IG maps
/// IN1 to Coverage: IN1-2 plan, IN1-3 company id, IN1-4 company name, IN1-5 company address,
/// IN1-8 group number, IN1-10/IN1-11 the insured's group employer (id, name), IN1-12/13 plan
/// dates, IN1-15 plan type, IN1-16 name of insured (with IN1-18 birth date, IN1-19 address,
/// IN1-43 sex), IN1-17 insured's relationship, IN1-36 policy number, IN1-49 insured's id
/// number. The IG lists IN2 as part of the Coverage but has no IN2 map yet; read here are the
/// fields Coverage has a place for: IN2-61 patient member number (a `Coverage.identifier` of
/// type `MB`), IN2-63 insured's home phone (the subscriber's telecom) and IN2-72 patient's
/// relationship to the insured (the relationship when IN1-17 is empty). An IN1 that names
/// neither plan nor company is ignored. The structures that carry the INSURANCE group are
/// ADT_A01, ADT_A03, ADT_A05, ADT_A06, ADT_A16, DFT_P03/P11, ORM_O01 and OML_O21/O33/O35.
///
/// # Errors
/// [`MappingError::BadDateTime`] for IN1-12, IN1-13 or IN1-18 that do not parse.
pub fn coverages(msg: &V2Message<'_>) -> Result<Vec<Coverage>, MappingError> {
    let mut out = Vec::new();
    // Most messages have no IN1: no walk over every segment for them.
    if msg.segment("IN1").is_none() {
        return Ok(out);
    }
    // Each IN1 with the IN2 of its INSURANCE group.
    let mut groups: Vec<(SegmentRef<'_, '_>, Option<SegmentRef<'_, '_>>)> = Vec::new();
    for seg in msg.segments() {
        match (seg.name(), groups.last_mut()) {
            ("IN1", _) => groups.push((seg, None)),
            ("IN2", Some((_, in2 @ None))) => *in2 = Some(seg),
            _ => {}
        }
    }
    for (in1, in2) in &groups {
        let in1 = *in1;
        let mut phones = Vec::new();
        for rep in in2.iter().flat_map(|s| s.field(63).reps()) {
            if let Some(Telecom::Phone(p)) = datatypes::telecom(&rep, Some(ContactUse::Home)) {
                if !phones.contains(&p) {
                    phones.push(p);
                }
            }
        }
        let insured = Insured {
            name: datatypes::name_at(&in1.field(16).rep(1), 1),
            birth_date: ts(msg, &in1, 18)?,
            gender: gender(in1.get(43).text()),
            address: in1.field(19).reps().find_map(|r| datatypes::address(&r)),
            phones,
        };
        let c = Coverage {
            plan: datatypes::coded(&in1.field(2)),
            company_id: in1.get(3).string(),
            company_name: in1.get(4).string(),
            group_number: in1.get(8).string(),
            policy_number: in1.get(36).string(),
            start: ts(msg, &in1, 12)?,
            end: ts(msg, &in1, 13)?,
            relationship: datatypes::coded(&in1.field(17))
                .or_else(|| in2.and_then(|s| datatypes::coded(&s.field(72)))),
            plan_type: datatypes::coded(&in1.field(15)),
            company_address: in1.field(5).reps().find_map(|r| datatypes::address(&r)),
            employer_id: in1.get(10).string(),
            employer_name: in1.get(11).string(),
            insured_id: in1.get(49).string(),
            member_number: in2.and_then(|s| s.get(61).string()),
            insured: (insured != Insured::default()).then_some(insured),
        };
        if c.plan.is_some() || c.company_id.is_some() || c.company_name.is_some() {
            out.push(c);
        }
    }
    Ok(out)
}

/// Guarantors: every GT1 (GT1-2 number, GT1-3 name, GT1-5 address, GT1-6/GT1-7 phones (home,
/// business), GT1-8 birth date, GT1-9 sex, GT1-11 relationship, GT1-13/14 dates, GT1-21
/// organization name). The structures that carry GT1 are ADT_A01 (A01, A04, A08, A13),
/// ADT_A03, ADT_A05 (A05, A14, A28, A31), ADT_A06, ADT_A16, DFT_P03/P11, ORM_O01 and
/// OML_O21/O33/O35; a GT1 is read wherever it stands. A GT1 that names no one (no name, no
/// organization, no number) is ignored.
///
/// The v2-to-FHIR IG has no GT1 map yet (its GT1 sheet is "under construction" and the
/// message maps leave GT1 unmapped); FHIR-Converter's templates make the party of
/// `Account.guarantor` an Organization when GT1-21 is valued, else the Patient when GT1-11 is
/// `SEL`, else a RelatedPerson, and `fhir::from_model` does the same.
///
/// # Errors
/// [`MappingError::BadDateTime`] for GT1-8, GT1-13 or GT1-14 that do not parse.
pub fn guarantors(msg: &V2Message<'_>) -> Result<Vec<Guarantor>, MappingError> {
    let mut out = Vec::new();
    for gt1 in msg.segments_named("GT1") {
        let mut phones = Vec::new();
        for (field, default_use) in [(6, Some(ContactUse::Home)), (7, Some(ContactUse::Work))] {
            for rep in gt1.field(field).reps() {
                if let Some(Telecom::Phone(p)) = datatypes::telecom(&rep, default_use) {
                    if !phones.contains(&p) {
                        phones.push(p);
                    }
                }
            }
        }
        let g = Guarantor {
            number: gt1.get(2).string(),
            name: datatypes::name_at(&gt1.field(3).rep(1), 1),
            address: gt1.field(5).reps().find_map(|r| datatypes::address(&r)),
            phones,
            birth_date: ts(msg, &gt1, 8)?,
            gender: gender(gt1.get(9).text()),
            relationship: datatypes::coded(&gt1.field(11)),
            start: ts(msg, &gt1, 13)?,
            end: ts(msg, &gt1, 14)?,
            organization_name: gt1.get(21).string(),
        };
        if !g.name.is_empty() || g.organization_name.is_some() || g.number.is_some() {
            out.push(g);
        }
    }
    Ok(out)
}

/// A contact from NK1: NK1-2 name, NK1-3 relationship, NK1-4 address, NK1-5/NK1-6 phones
/// (home, business), NK1-7 contact role. An NK1 that names no one and no relationship is
/// ignored.
fn contact(nk1: &SegmentRef<'_, '_>) -> Option<Contact> {
    let mut phones = Vec::new();
    for (field, default_use) in [(5, None), (6, Some(ContactUse::Work))] {
        for rep in nk1.field(field).reps() {
            if let Some(Telecom::Phone(p)) = datatypes::telecom(&rep, default_use) {
                if !phones.contains(&p) {
                    phones.push(p);
                }
            }
        }
    }
    let c = Contact {
        name: datatypes::name_at(&nk1.field(2).rep(1), 1),
        relationship: datatypes::coded(&nk1.field(3)),
        role: datatypes::coded(&nk1.field(7)),
        phones,
        address: nk1.field(4).reps().find_map(|r| datatypes::address(&r)),
    };
    (!c.name.is_empty() || c.relationship.is_some()).then_some(c)
}

/// Allergies: every AL1 (AL1-2 type, AL1-3 allergen, AL1-4 severity, AL1-5 reactions, AL1-6
/// identified), and every IAM (ADT^A60: the same fields at IAM-2 to IAM-5, IAM-6 action code,
/// IAM-11 onset). An AL1 or IAM without allergen is ignored.
///
/// # Errors
/// [`MappingError::BadDateTime`] for AL1-6 or IAM-11 that do not parse.
fn allergies(msg: &V2Message<'_>) -> Result<Vec<Allergy>, MappingError> {
    let mut out = Vec::new();
    // By name, not by walking every segment: this runs for every ADT message.
    for seg in msg.segments_named("AL1").chain(msg.segments_named("IAM")) {
        let (is_iam, onset) = if seg.name() == "IAM" {
            (true, 11)
        } else {
            (false, 6)
        };
        let Some(allergen) = datatypes::coded(&seg.field(3)) else {
            continue;
        };
        out.push(Allergy {
            allergen,
            category: datatypes::coded(&seg.field(2)),
            severity: datatypes::coded(&seg.field(4)),
            reactions: seg
                .field(5)
                .reps()
                .filter_map(|r| r.text().trimmed().map(str::to_owned))
                .collect(),
            identified: ts_value(msg, &seg, onset, seg.get_comp(onset, 1))?,
            action: if is_iam {
                seg.get_comp(6, 1).upper_string()
            } else {
                None
            },
        });
    }
    Ok(out)
}

/// PV1-2 patient class, HL7 table 0004.
fn encounter_class(code: &str) -> EncounterClass {
    match UpperCode::new(code.trim()).as_str() {
        "E" => EncounterClass::Emergency,
        "I" => EncounterClass::Inpatient,
        "O" => EncounterClass::Outpatient,
        "P" => EncounterClass::Preadmit,
        "R" => EncounterClass::RecurringPatient,
        "B" => EncounterClass::Obstetrics,
        "C" => EncounterClass::CommercialAccount,
        "N" => EncounterClass::NotApplicable,
        _ => EncounterClass::Unknown,
    }
}

/// Every PID/MRG pair of a merge, in message order (see the module's merge rule): the first
/// pair's MRG, then the further pairs. The first pair's patient is the event's (the first
/// PID, mapped by [`patient_from_adt`] before this runs), so it is not mapped again here.
///
/// # Errors
/// [`MappingError::Missing`] for a patient group without MRG or without any prior
/// identifier, and as [`patient_from_pid_segment`] for its PID.
fn merge_pairs(msg: &V2Message<'_>) -> Result<(MergedPatient, Vec<PatientMerge>), MappingError> {
    // (PID, its MRG, its PV1): each segment belongs to the last PID before it, so Z-segments
    // or PD1 between them do not matter; a further MRG after the same PID is a further pair
    // with that patient.
    type Group<'s, 'm> = (
        SegmentRef<'s, 'm>,
        Option<SegmentRef<'s, 'm>>,
        Option<SegmentRef<'s, 'm>>,
    );
    let mut groups: Vec<Group<'_, '_>> = Vec::new();
    for seg in msg.segments() {
        match (seg.name(), groups.last_mut()) {
            ("PID", _) => groups.push((seg, None, None)),
            ("MRG", Some((_, mrg @ None, _))) => *mrg = Some(seg),
            // ADT^A45: one PID, a MERGE_INFO group (MRG, PV1) per visit moved.
            ("MRG", Some((pid, Some(_), _))) => {
                let pid = *pid;
                groups.push((pid, Some(seg), None));
            }
            ("PV1", Some((_, _, pv1 @ None))) => *pv1 = Some(seg),
            _ => {}
        }
    }
    let missing_mrg = |pid: &SegmentRef<'_, '_>| {
        let n = msg.occurrence(pid);
        MappingError::Missing {
            path: if n == 1 {
                "MRG".into()
            } else {
                format!("MRG after PID[{n}]")
            },
            reason: "merge without MRG segment",
        }
    };
    let Some(((pid, mrg, _), rest)) = groups.split_first() else {
        return Err(MappingError::Missing {
            path: "PID".into(),
            reason: "no patient identification segment",
        });
    };
    let first = merged_from_mrg(msg, mrg.as_ref().ok_or_else(|| missing_mrg(pid))?)?;
    let mut pairs = Vec::with_capacity(rest.len());
    for (pid, mrg, pv1) in rest {
        let mrg = mrg.as_ref().ok_or_else(|| missing_mrg(pid))?;
        pairs.push(PatientMerge {
            patient: patient_from_pid_segment(msg, pid, pv1.as_ref())?,
            merged: merged_from_mrg(msg, mrg)?,
        });
    }
    Ok((first, pairs))
}

/// The record merged away, from one MRG: MRG-1 prior patient identifier list, MRG-2 prior
/// alternate id, MRG-4 prior patient id (v2.3), MRG-3 prior account, MRG-5 prior visit.
fn merged_from_mrg(
    msg: &V2Message<'_>,
    mrg: &SegmentRef<'_, '_>,
) -> Result<MergedPatient, MappingError> {
    let mut identifiers = Vec::new();
    for (field, default) in [
        (1, IdentifierKind::Mrn),
        (2, IdentifierKind::Other),
        (4, IdentifierKind::Other),
    ] {
        for rep in mrg.field(field).reps() {
            if let Some(id) = datatypes::identifier(&rep, default) {
                push_identifier(&mut identifiers, id);
            }
        }
    }
    if identifiers.is_empty() {
        return Err(MappingError::Missing {
            path: msg.field_path(mrg, 1),
            reason: "no prior patient identifier",
        });
    }
    Ok(MergedPatient {
        identifiers,
        account: mrg.get(3).string(),
        visit_number: mrg.get(5).string(),
    })
}
