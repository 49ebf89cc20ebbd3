//! ADT to canonical: patient demographics, the visit, merges.
//!
//! | trigger | event kind |
//! |---|---|
//! | A01 admit | `encounter_admitted` |
//! | A04 register (outpatient) | `patient_registered` |
//! | A05 pre-admit | `encounter_preadmitted` |
//! | A08 update patient information | `patient_updated` |
//! | A28 add person | `patient_registered` |
//! | A31 update person | `patient_updated` |
//! | A03 discharge / end visit | `encounter_discharged` |
//! | A11 cancel admit / visit | `encounter_cancelled` |
//! | A13 cancel discharge | `encounter_discharge_cancelled` |
//! | A40 merge patient identifier list | `patient_merged` (MRG) |
//!
//! Merges: the A40 patient group (PID, PD1, MRG, PV1) repeats, one group per patient merged.
//! The first group gives [`Event::patient`](crate::model::Event::patient) and
//! [`Event::merge`](crate::model::Event::merge); each further group one
//! [`PatientMerge`] in `additional_merges`, in message order. A group's MRG is the first MRG
//! after its PID and before the next PID; every group must have one.
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
use crate::hl7v2::access::{SegmentRef, V2Message};
use crate::model::{
    ContactUse, Encounter, EncounterClass, Event, EventKind, Gender, Identifier, IdentifierKind,
    MergedPatient, Patient, PatientMerge, VisitEvent,
};

use super::datatypes::{self, Telecom};
use super::{collect_practitioners, new_event, source_from_msh, ts, MappingError};

/// The event kind of an ADT trigger, `None` for triggers not mapped (A02, A06…).
pub fn kind_for(trigger: &str) -> Option<EventKind> {
    Some(match trigger {
        "A01" => EventKind::EncounterAdmitted,
        "A04" | "A28" => EventKind::PatientRegistered,
        "A05" => EventKind::EncounterPreadmitted,
        "A08" | "A31" => EventKind::PatientUpdated,
        "A03" => EventKind::EncounterDischarged,
        "A11" => EventKind::EncounterCancelled,
        "A13" => EventKind::EncounterDischargeCancelled,
        "A40" => EventKind::PatientMerged,
        _ => return None,
    })
}

/// Maps an ADT message whose trigger gave `kind`.
///
/// # Errors
/// [`MappingError`] without PID or patient identifier, without MRG for a merge, or with
/// unparsable dates.
pub fn event_from_adt(msg: &V2Message<'_>, kind: EventKind) -> Result<Box<Event>, MappingError> {
    let mut event = new_event(kind, source_from_msh(msg)?);
    event.patient = Some(patient_from_adt(msg)?);
    event.encounter = encounter_from_pv1(msg)?;
    if kind == EventKind::PatientMerged {
        // The first PV1 is the first patient's visit only if it comes before the second PID.
        let second_pid = msg.segment_n("PID", 2).map(|s| s.index());
        let first_pv1 = msg.segment("PV1").map(|s| s.index());
        if let (Some(pid), Some(pv1)) = (second_pid, first_pv1) {
            if pv1 > pid {
                event.encounter = None;
            }
        }
    }
    if let Some(encounter) = &mut event.encounter {
        // The timeline says what happened: a pre-admission or a cancelled admission has not
        // admitted anyone, and a cancelled discharge did not discharge.
        encounter.events.retain(|e| match kind {
            EventKind::EncounterPreadmitted | EventKind::EncounterCancelled => e.kind != "admitted",
            EventKind::EncounterDischargeCancelled => e.kind != "discharged",
            _ => true,
        });
    }
    if kind == EventKind::PatientMerged {
        let mut pairs = merge_pairs(msg)?.into_iter();
        event.merge = pairs.next().map(|p| p.merged);
        event.additional_merges = pairs.collect();
    }
    collect_practitioners(&mut event);
    Ok(event)
}

/// The patient of an ADT message: PID, plus the blood group from an OBX with LOINC 882-1
/// (ABO and Rh group), since PID has no field for it.
///
/// # Errors
/// [`MappingError::Missing`] without PID or without any patient identifier;
/// [`MappingError::BadDateTime`] for PID-7/PID-29 that do not parse.
pub fn patient_from_adt(msg: &V2Message<'_>) -> Result<Patient, MappingError> {
    let mut patient = patient_from_pid(msg)?;
    patient.blood_type = msg
        .segments_named("OBX")
        .find(|obx| obx.get_comp(3, 1).text() == Some("882-1"))
        .and_then(|obx| {
            let value = obx.field(5).rep(1);
            // A coded value (CWE) carries the group as text in component 2, or as the code.
            value.get(2).string().or_else(|| value.get(1).string())
        });
    Ok(patient)
}

/// The patient from the first PID segment.
///
/// Identifiers: PID-3 (untyped repetitions count as MRN, PID-3 being the patient identifier
/// list of the HIS), then PID-2 and PID-4 (v2.3 external/alternate ids), then PID-19 (SSN, a
/// national id) and PID-20 (driver's licence), without duplicates.
///
/// Names: PID-5 repetitions. The primary name is the first with XPN-7 `L` (legal), else the
/// first; the second-language name is the first other repetition in a different script (Arabic
/// beside Latin, as Gulf HIS send them). Other repetitions (aliases) are not kept.
///
/// # Errors
/// [`MappingError::Missing`] without PID or without any patient identifier;
/// [`MappingError::BadDateTime`] for PID-7/PID-29 that do not parse.
pub fn patient_from_pid(msg: &V2Message<'_>) -> Result<Patient, MappingError> {
    let pid = msg.segment("PID").ok_or(MappingError::Missing {
        path: "PID".into(),
        reason: "no patient identification segment",
    })?;
    patient_from_pid_segment(msg, &pid, msg.segment("PV1").as_ref())
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

    let mut patient = Patient {
        identifiers,
        birth_date: ts(msg, pid, 7)?,
        gender: gender(pid.get(8).text()),
        death_time: ts(msg, pid, 29)?,
        ..Patient::default()
    };
    names(pid, &mut patient);
    telecoms(pid, &mut patient);
    patient.address = pid.field(11).reps().find_map(|r| datatypes::address(&r));
    patient.vip = pv1.is_some_and(vip);
    patient.language = datatypes::coded(&pid.field(15));
    patient.marital_status = datatypes::coded(&pid.field(16));
    // PID-28 nationality; PID-26 citizenship when a sender uses that instead.
    patient.nationality =
        datatypes::coded(&pid.field(28)).or_else(|| datatypes::coded(&pid.field(26)));
    Ok(patient)
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
fn gender(code: Option<&str>) -> Option<Gender> {
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
    patient.second_language_name = reps
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != primary)
        .map(|(_, r)| datatypes::name_at(r, 1))
        .find(|n| !n.is_empty() && n.language != patient.name.language);
}

fn telecoms(pid: &SegmentRef<'_, '_>, patient: &mut Patient) {
    let fields = [(13, None), (14, Some(ContactUse::Work)), (40, None)];
    for (field, default_use) in fields {
        for rep in pid.field(field).reps() {
            match datatypes::telecom(&rep, default_use) {
                Some(Telecom::Phone(p)) if !patient.phones.contains(&p) => patient.phones.push(p),
                Some(Telecom::Phone(_)) => {}
                Some(Telecom::Email(e)) => {
                    patient.email.get_or_insert(e);
                }
                None => {}
            }
            // A phone repetition can carry the e-mail too (XTN-4).
            if patient.email.is_none() {
                patient.email = rep.get(4).string();
            }
        }
    }
}

/// PV1-16 VIP indicator (user table 0099): any value but `N`/`NO`/`0` marks a VIP.
fn vip(pv1: &SegmentRef<'_, '_>) -> bool {
    pv1.get(16)
        .text()
        .is_some_and(|v| !matches!(UpperCode::new(v.trim()).as_str(), "N" | "NO" | "0"))
}

/// The visit from PV1 (and IN1-4 for the insurer).
///
/// Timeline: `admitted` (PV1-44), then one step per `ZVT` segment in message order (see
/// the ZVT rule in this module), then `discharged` (PV1-45).
///
/// A PV1 that only fills the mandatory placeholder (`PV1|1|N`, as A28/A31 carry) is not a
/// visit: an encounter is returned only when PV1 has a visit number, a location, an
/// attending doctor or an admit time.
///
/// # Errors
/// [`MappingError::BadDateTime`] for PV1-44/PV1-45 that do not parse.
pub fn encounter_from_pv1(msg: &V2Message<'_>) -> Result<Option<Encounter>, MappingError> {
    let Some(pv1) = msg.segment("PV1") else {
        return Ok(None);
    };
    let mut encounter = Encounter {
        visit_number: pv1.get(19).string(),
        class: pv1.get(2).text().map(encounter_class),
        admission_type: datatypes::coded(&pv1.field(4)),
        service: datatypes::coded(&pv1.field(10)),
        location: pv1.field(3).reps().find_map(|r| datatypes::location(&r)),
        attending: datatypes::practitioner(&pv1.field(7)),
        referring: datatypes::practitioner(&pv1.field(8)),
        // PV1-44/45 are TS (v2.3-2.5) or DTM (v2.6+): component 1 is the time in both.
        admit_time: ts(msg, &pv1, 44)?,
        discharge_time: ts(msg, &pv1, 45)?,
        discharge_disposition: datatypes::coded(&pv1.field(36)),
        financial_class: datatypes::coded(&pv1.field(20)),
        insurer: msg.segment("IN1").and_then(|in1| in1.get(4).string()),
        events: Vec::new(),
    };
    if encounter.visit_number.is_none()
        && encounter.location.is_none()
        && encounter.attending.is_none()
        && encounter.admit_time.is_none()
    {
        return Ok(None);
    }
    if let (Some(loc), Some(service)) = (&mut encounter.location, &encounter.service) {
        loc.specialisation = Some(service.clone());
    }
    if let Some(t) = encounter.admit_time {
        encounter.events.push(VisitEvent {
            kind: "admitted".into(),
            time: Some(t),
            description: None,
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
        });
    }
    Ok(Some(encounter))
}

/// One visit timeline step from a `ZVT` segment (site-agreed Z-segment, since HL7 v2 has no
/// segment for it): ZVT-2 step type (CWE; code, else text, lower-cased snake_case, e.g.
/// `Consultation` -> `consultation`, `Prescribed Drugs` -> `prescribed_drugs`), ZVT-3 time,
/// ZVT-4 description. A ZVT without a step type is ignored.
fn visit_step(
    msg: &V2Message<'_>,
    zvt: &SegmentRef<'_, '_>,
) -> Result<Option<VisitEvent>, MappingError> {
    let Some(kind) = zvt
        .get_comp(2, 1)
        .string()
        .or_else(|| zvt.get_comp(2, 2).string())
    else {
        return Ok(None);
    };
    let kind = kind
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join("_");
    Ok(Some(VisitEvent {
        kind,
        time: ts(msg, zvt, 3)?,
        description: zvt.get(4).string(),
    }))
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

/// Every PID/MRG pair of a merge, in message order (see the module's merge rule).
///
/// # Errors
/// [`MappingError::Missing`] for a patient group without MRG or without any prior
/// identifier, and as [`patient_from_pid_segment`] for its PID.
fn merge_pairs(msg: &V2Message<'_>) -> Result<Vec<PatientMerge>, MappingError> {
    // (PID, its MRG, its PV1): each segment belongs to the last PID before it, so Z-segments
    // or PD1 between them do not matter.
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
            ("PV1", Some((_, _, pv1 @ None))) => *pv1 = Some(seg),
            _ => {}
        }
    }
    if groups.is_empty() {
        return Err(MappingError::Missing {
            path: "PID".into(),
            reason: "no patient identification segment",
        });
    }
    let mut pairs = Vec::with_capacity(groups.len());
    for (pid, mrg, pv1) in &groups {
        let Some(mrg) = mrg else {
            let n = msg.occurrence(pid);
            return Err(MappingError::Missing {
                path: if n == 1 {
                    "MRG".into()
                } else {
                    format!("MRG after PID[{n}]")
                },
                reason: "merge without MRG segment",
            });
        };
        pairs.push(PatientMerge {
            patient: patient_from_pid_segment(msg, pid, pv1.as_ref())?,
            merged: merged_from_mrg(msg, mrg)?,
        });
    }
    Ok(pairs)
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
