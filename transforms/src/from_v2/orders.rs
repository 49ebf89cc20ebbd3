//! ORM^O01, OML^O21 and OMI^O23 to canonical orders (and an appointment when the order is scheduled).
//!
//! Each ORC starts an order; the OBR, TQ1 and NTE segments after it (up to the next ORC)
//! belong to it. Numbers: placer ORC-2 else OBR-2, filler ORC-3 else OBR-3 (EI-1). Procedure:
//! OBR-4. Ordering provider: ORC-12 else OBR-16. Requested start: TQ1-7 (v2.5+), else ORC-7.4
//! (TQ start, v2.3/v2.4), else OBR-27.4. Priority: TQ1-9, else ORC-7.6, else OBR-27.6, else
//! OBR-5 (v2.3).
//!
//! Status: ORC-5 (table 0038) when sent, else implied by ORC-1 (table 0119): `NW`/`SN`/`XO`/
//! `XX`/`RO`/`RL`/`SC` keep the order active (`placed`, or `scheduled` for `SC`), `CA`/`OC`/`CR`
//! cancel it, `DC`/`OD`/`DR` discontinue it, `HD`/`OH` hold it.
//!
//! Event kind: from the first order's ORC-1: `NW`/`SN` → `order_placed`; `CA`/`OC`/`CR`/`DC`/
//! `OD`/`DR` → `order_cancelled`; other known codes → `order_updated`.
//!
//! Imaging (`imaging`): the IPC of an OMI^O23 order (IPC-1 accession number, IPC-2
//! requested procedure id, IPC-3 study instance UID, IPC-4 scheduled procedure step id, IPC-5
//! modality, IPC-9 scheduled station AE title); without IPC, an OBR-24 that is a DICOM
//! modality code (`CT`, `MR`, `US`, ...) gives the modality. What a DICOM modality worklist
//! builds its items from.
//!
//! Roles: a ROL right after an ORC or OBR (NTE, TQ1 between) is a role of that order
//! (`roles`, with its ROL-2 action code); any other ROL is the visit's.
//!
//! Specimens: every SPM of an order group (OML^O21: after the OBR) is a specimen of that
//! order; in OML^O33 and O35 the SPM comes first and is the specimen of every order after it
//! (see [`specimen`] for the fields).
//!
//! Charges: every FT1 (ORM^O01 and the OML financial group) is a charge of the event, read
//! as a DFT's FT1 ([`super::dft::charge_from_ft1`]), with PID-18 account and PV1-19 visit.
//!
//! Appointment: when the first order has a requested start, the event also carries an
//! appointment for it: ids are the order numbers (placer → `placer_id`, filler →
//! `filler_id`), the service is the procedure, the end is TQ1-8 or ORC-7.5, and the status is
//! `cancelled` for a cancelled/discontinued order, else `booked`.

use super::datatypes::UpperCode;
use crate::hl7v2::access::{SegmentRef, V2Message};
use crate::model::{
    Appointment, AppointmentStatus, Event, EventKind, Order, OrderStatus, Patient, Priority,
    Specimen,
};

use super::adt::{
    coverages, diagnoses, encounter_from_pv1_into, guarantors, patient_from_pid_into,
};
use super::{
    collect_practitioners, datatypes, new_event, notes, source_from_msh, ts, ts_value, MappingError,
};

/// The segments of one order: its ORC (absent for an OBR-only ORU), OBR, TQ1, notes and
/// specimens.
pub(crate) struct OrderSegments<'s, 'm> {
    pub orc: Option<SegmentRef<'s, 'm>>,
    pub obr: Option<SegmentRef<'s, 'm>>,
    pub tq1: Option<SegmentRef<'s, 'm>>,
    pub ntes: Vec<SegmentRef<'s, 'm>>,
    pub specimens: Vec<SegmentRef<'s, 'm>>,
    pub roles: Vec<SegmentRef<'s, 'm>>,
    /// The IPC segments of the order (OMI^O23: imaging procedure control).
    pub ipcs: Vec<SegmentRef<'s, 'm>>,
}

/// Maps an ORM^O01 or OML^O21.
///
/// # Errors
/// [`MappingError`] without ORC, with an unknown ORC-1/ORC-5, without order numbers, or with
/// unparsable dates; without PID or patient identifier.
pub fn event_from_order(msg: &V2Message<'_>) -> Result<Box<Event>, MappingError> {
    // OML^O33 and OML^O35 put the specimen first and the orders on it after it.
    let specimen_first = msg.segment("MSH").is_some_and(|msh| {
        msh.get_comp(9, 2)
            .text()
            .is_some_and(|t| matches!(UpperCode::new(t.trim()).as_str(), "O33" | "O35"))
    });
    let groups = order_groups(msg, specimen_first);
    let Some(first) = groups.first() else {
        return Err(MappingError::Missing {
            path: "ORC".into(),
            reason: "no common order segment",
        });
    };
    let first_control = control(msg, first)?;
    let kind = match first_control.as_str() {
        "NW" | "SN" => EventKind::OrderPlaced,
        "CA" | "OC" | "CR" | "DC" | "OD" | "DR" => EventKind::OrderCancelled,
        _ => EventKind::OrderUpdated,
    };
    let mut event = new_event(kind, source_from_msh(msg)?);
    let patient = event.patient.insert(Patient::default());
    patient_from_pid_into(msg, patient)?;
    // DG1 of the order's patient-visit or order group: the IG maps it to a Condition, as in ADT.
    patient.diagnoses = diagnoses(msg)?;
    // GT1 of the patient group (ORM_O01, OML_O21/O33/O35): the account's guarantors.
    patient.guarantors = guarantors(msg)?;
    // IN1/IN2 of the patient group (ORM_O01, OML_O21/O33/O35): Coverages.
    patient.coverages = coverages(msg)?;
    encounter_from_pv1_into(msg, &mut event.encounter)?;
    for group in &groups {
        let mut order = order_from_segments(msg, group)?;
        order.imaging = imaging(group);
        event.orders.push(order);
    }
    let first_order = &event.orders[0];
    if let Some(start) = first_order.requested_start {
        let end = match (&first.tq1, &first.orc) {
            (Some(tq1), _) => ts(msg, tq1, 8)?,
            (None, Some(orc)) => ts_value(msg, orc, 7, orc.get_comp(7, 5))?,
            (None, None) => None,
        };
        let status = match first_order.status {
            OrderStatus::Cancelled | OrderStatus::Discontinued => AppointmentStatus::Cancelled,
            _ => AppointmentStatus::Booked,
        };
        event.appointment = Some(Appointment {
            placer_id: first_order.placer_number.clone(),
            filler_id: first_order.filler_number.clone(),
            remote_id: None,
            patient: event
                .patient
                .as_ref()
                .and_then(|p| p.primary_identifier())
                .cloned(),
            practitioner: None,
            location: None,
            resources: Vec::new(),
            service: first_order.procedure.clone(),
            services: Vec::new(),
            personnel: Vec::new(),
            locations: Vec::new(),
            appointment_type: None,
            start: Some(start),
            end,
            duration_minutes: end
                .and_then(|e| start.minutes_until(&e))
                .and_then(|m| u32::try_from(m).ok()),
            status,
            reason: first_order.reason.clone(),
            event_reason: None,
            notes: None,
            roles: Vec::new(),
        });
    }
    // FT1 in an order (ORM^O01 and OML's financial group): the charges of the order, as a
    // DFT carries them, with the account (PID-18) and the visit (PV1-19).
    // Most orders have no FT1: no account or visit number read (and allocated) for them.
    if msg.segment("FT1").is_some() {
        let account = msg.segment("PID").and_then(|pid| pid.get(18).string());
        let visit_number = msg.segment("PV1").and_then(|pv1| pv1.get(19).string());
        for ft1 in msg.segments_named("FT1") {
            let mut charge = super::dft::charge_from_ft1(msg, &ft1, None)?;
            charge.account.clone_from(&account);
            charge.visit_number.clone_from(&visit_number);
            event.charges.push(charge);
        }
    }
    collect_practitioners(&mut event);
    Ok(event)
}

/// Splits the message into orders: each ORC with the OBR, TQ1, NTE, SPM and ROL after it (a
/// ROL right after the ORC or OBR, see [`super::RoleContext`]). With
/// `specimen_first` (OML^O33, O35: a SPECIMEN group holds the orders on that specimen), an SPM
/// is the specimen of every order after it, up to the next SPM that follows an order.
fn order_groups<'s, 'm>(
    msg: &'s V2Message<'m>,
    specimen_first: bool,
) -> Vec<OrderSegments<'s, 'm>> {
    let mut groups: Vec<OrderSegments<'s, 'm>> = Vec::new();
    // The specimens the next orders are on (O33/O35), and whether an order came since.
    let mut leading: Vec<SegmentRef<'s, 'm>> = Vec::new();
    let mut ordered_since = false;
    let mut roles = super::RoleContext::default();
    for seg in msg.segments() {
        let place = roles.step(seg.name());
        match seg.name() {
            "ROL" | "PRT" if place == super::RolePlace::Order => {
                if let Some(g) = groups.last_mut() {
                    g.roles.push(seg);
                }
            }
            "ORC" => {
                ordered_since = true;
                groups.push(OrderSegments {
                    orc: Some(seg),
                    obr: None,
                    tq1: None,
                    ntes: Vec::new(),
                    specimens: leading.clone(),
                    roles: Vec::new(),
                    ipcs: Vec::new(),
                });
            }
            "OBR" => {
                if let Some(g) = groups.last_mut().filter(|g| g.obr.is_none()) {
                    g.obr = Some(seg);
                }
            }
            "TQ1" => {
                if let Some(g) = groups.last_mut().filter(|g| g.tq1.is_none()) {
                    g.tq1 = Some(seg);
                }
            }
            "NTE" => {
                if let Some(g) = groups.last_mut() {
                    g.ntes.push(seg);
                }
            }
            "IPC" => {
                if let Some(g) = groups.last_mut() {
                    g.ipcs.push(seg);
                }
            }
            "SPM" if specimen_first => {
                if ordered_since {
                    leading.clear();
                    ordered_since = false;
                }
                leading.push(seg);
            }
            "SPM" => {
                if let Some(g) = groups.last_mut() {
                    g.specimens.push(seg);
                }
            }
            _ => {}
        }
    }
    groups
}

/// A specimen from SPM, as the v2-to-FHIR IG maps SPM to Specimen: SPM-2 specimen id (EIP:
/// placer id in component 1, filler id in component 2, EI-1 each), SPM-4 type, SPM-8 source
/// site, SPM-17 collection time (DR: start, and end for a collection over a period), SPM-18
/// received time. `None` for an SPM with none of them.
///
/// # Errors
/// [`MappingError::BadDateTime`] for SPM-17 or SPM-18 that do not parse.
pub(crate) fn specimen(
    msg: &V2Message<'_>,
    spm: &SegmentRef<'_, '_>,
) -> Result<Option<Specimen>, MappingError> {
    let s = Specimen {
        placer_id: spm.get_at(2, 1, 1, 1).string(),
        filler_id: spm.get_at(2, 1, 2, 1).string(),
        specimen_type: datatypes::coded(&spm.field(4)),
        source_site: datatypes::coded(&spm.field(8)),
        // DR-1 and DR-2 are TS before v2.6 (DTM in component 1) and DTM after.
        collected_at: ts_value(msg, spm, 17, spm.get_at(17, 1, 1, 1))?,
        collection_end: ts_value(msg, spm, 17, spm.get_at(17, 1, 2, 1))?,
        received_at: ts(msg, spm, 18)?,
    };
    Ok((s != Specimen::default()).then_some(s))
}

fn control(msg: &V2Message<'_>, group: &OrderSegments<'_, '_>) -> Result<String, MappingError> {
    let orc = group.orc.as_ref().ok_or(MappingError::Missing {
        path: "ORC".into(),
        reason: "no common order segment",
    })?;
    orc.get(1)
        .upper_string()
        .ok_or_else(|| MappingError::Missing {
            path: msg.field_path(orc, 1),
            reason: "no order control code",
        })
}

/// One canonical order from its segments.
///
/// # Errors
/// [`MappingError`] for unknown ORC-1/ORC-5, missing order numbers, unparsable dates.
pub(crate) fn order_from_segments(
    msg: &V2Message<'_>,
    g: &OrderSegments<'_, '_>,
) -> Result<Order, MappingError> {
    let from = |orc_field: usize, obr_field: usize| {
        g.orc
            .and_then(|o| o.get(orc_field).string())
            .or_else(|| g.obr.and_then(|o| o.get(obr_field).string()))
    };
    let placer_number = from(2, 2);
    let filler_number = from(3, 3);
    if placer_number.is_none() && filler_number.is_none() {
        let path = match (&g.orc, &g.obr) {
            (Some(orc), _) => msg.field_path(orc, 2),
            (None, Some(obr)) => msg.field_path(obr, 2),
            (None, None) => "ORC-2".into(),
        };
        return Err(MappingError::Missing {
            path,
            reason: "no placer or filler order number",
        });
    }
    let control = match &g.orc {
        Some(_) => Some(control(msg, g)?),
        None => None,
    };
    let status = status(msg, g, control.as_deref())?;

    let mut requested_start = None;
    if let Some(tq1) = &g.tq1 {
        requested_start = ts(msg, tq1, 7)?;
    }
    if let Some(orc) = &g.orc {
        requested_start = requested_start.or(ts_value(msg, orc, 7, orc.get_comp(7, 4))?);
    }
    if let Some(obr) = &g.obr {
        requested_start = requested_start.or(ts_value(msg, obr, 27, obr.get_comp(27, 4))?);
    }
    let priority_code = g
        .tq1
        .and_then(|t| t.get(9).string())
        .or_else(|| g.orc.and_then(|o| o.get_comp(7, 6).string()))
        .or_else(|| g.obr.and_then(|o| o.get_comp(27, 6).string()))
        .or_else(|| g.obr.and_then(|o| o.get(5).string()));

    let ordered_at = match &g.orc {
        Some(orc) => ts(msg, orc, 9)?,
        None => None,
    };
    let mut specimens = Vec::with_capacity(g.specimens.len());
    for spm in &g.specimens {
        specimens.extend(specimen(msg, spm)?);
    }
    let ordering_provider = g
        .orc
        .and_then(|o| datatypes::practitioner(&o.field(12)))
        .or_else(|| g.obr.and_then(|o| datatypes::practitioner(&o.field(16))));
    Ok(Order {
        placer_number,
        filler_number,
        group_number: g.orc.and_then(|o| o.get(4).string()),
        control,
        procedure: g.obr.and_then(|o| datatypes::coded(&o.field(4))),
        priority: priority_code.as_deref().and_then(priority),
        status,
        ordered_at,
        requested_start,
        ordering_provider,
        reason: g.obr.and_then(|o| datatypes::coded(&o.field(31))),
        notes: notes(&g.ntes),
        specimens,
        roles: {
            let mut roles = Vec::with_capacity(g.roles.len());
            for r in &g.roles {
                roles.extend(super::role(msg, r)?);
            }
            roles
        },
        imaging: None,
    })
}

/// DICOM modality codes (PS3.3 C.7.3.1.1.1) that OBR-24 may carry for an imaging order.
const MODALITIES: [&str; 24] = [
    "CR", "CT", "MR", "NM", "US", "OT", "BI", "DG", "ES", "LS", "PT", "RG", "TG", "XA", "RF",
    "RTIMAGE", "HC", "DX", "MG", "IO", "PX", "GM", "SM", "XC",
];

/// The imaging details of an order of an ORM/OMI: IPC-1 accession, IPC-2 requested procedure
/// id, IPC-3 study instance UID, IPC-4 step id (EI-1 each), IPC-5 modality, IPC-9 station AE
/// title; without IPC, OBR-24 when it is a DICOM modality code. `None` for other orders.
fn imaging(g: &OrderSegments<'_, '_>) -> Option<crate::model::ImagingOrder> {
    let modality_of_obr = g
        .obr
        .and_then(|o| o.get(24).string())
        .map(|m| m.trim().to_ascii_uppercase())
        .filter(|m| MODALITIES.contains(&m.as_str()));
    let ipc = g.ipcs.first();
    if ipc.is_none() && modality_of_obr.is_none() {
        return None;
    }
    let ei = |field: usize| ipc.and_then(|s| s.get_comp(field, 1).string());
    Some(crate::model::ImagingOrder {
        accession_number: ei(1),
        requested_procedure_id: ei(2),
        study_instance_uid: ei(3),
        step_id: ei(4),
        modality: ei(5).or(modality_of_obr),
        station_ae_title: ipc.and_then(|s| s.get(9).string()),
    })
}

/// Order status from ORC-5 (table 0038), else from ORC-1 (table 0119), else `placed` (an ORU
/// OBR without ORC).
fn status(
    msg: &V2Message<'_>,
    g: &OrderSegments<'_, '_>,
    control: Option<&str>,
) -> Result<OrderStatus, MappingError> {
    match &g.orc {
        Some(orc) => order_status(msg, orc, control),
        None => Ok(OrderStatus::Placed),
    }
}

/// Order status of an ORC: ORC-5 (table 0038) when sent, else implied by the control code
/// (ORC-1, table 0119); `placed` without either. Shared with the pharmacy orders.
///
/// # Errors
/// [`MappingError::UnknownCode`] for an ORC-5 or ORC-1 outside its table.
pub(crate) fn order_status(
    msg: &V2Message<'_>,
    orc: &SegmentRef<'_, '_>,
    control: Option<&str>,
) -> Result<OrderStatus, MappingError> {
    if let Some(code) = orc.get(5).text() {
        return Ok(match UpperCode::new(code.trim()).as_str() {
            "A" | "IP" => OrderStatus::InProgress,
            "CA" => OrderStatus::Cancelled,
            "CM" => OrderStatus::Completed,
            "DC" => OrderStatus::Discontinued,
            "ER" => OrderStatus::Error,
            "HD" => OrderStatus::OnHold,
            "RP" => OrderStatus::Replaced,
            "SC" => OrderStatus::Scheduled,
            _ => {
                return Err(MappingError::UnknownCode {
                    path: msg.field_path(orc, 5),
                    reason: "order status not in HL7 table 0038",
                })
            }
        });
    }
    let Some(control) = control else {
        return Ok(OrderStatus::Placed);
    };
    Ok(match control {
        "NW" | "SN" | "XO" | "XX" | "XR" | "RO" | "RL" | "OK" | "NA" | "OR" | "RP" | "RQ"
        | "RU" | "PA" | "PR" | "UA" | "UC" | "UD" | "UF" | "UH" | "UM" | "UN" | "UR" | "UX" => {
            OrderStatus::Placed
        }
        "SC" => OrderStatus::Scheduled,
        "CA" | "OC" | "CR" => OrderStatus::Cancelled,
        "DC" | "OD" | "DR" => OrderStatus::Discontinued,
        "HD" | "OH" | "HR" => OrderStatus::OnHold,
        "RE" | "SS" => OrderStatus::InProgress,
        _ => {
            return Err(MappingError::UnknownCode {
                path: msg.field_path(orc, 1),
                reason: "order control code not in HL7 table 0119",
            });
        }
    })
}

/// Priority from TQ1-9 / TQ-6 / OBR-5 (tables 0485, 0027). Unknown codes read as absent:
/// priority is advisory and a local code must not reject the order.
pub(crate) fn priority(code: &str) -> Option<Priority> {
    Some(match UpperCode::new(code.trim()).as_str() {
        "S" | "STAT" => Priority::Stat,
        "A" | "ASAP" => Priority::Asap,
        "R" | "ROUTINE" => Priority::Routine,
        "P" | "PREOP" => Priority::Preop,
        "C" | "CALLBACK" => Priority::Callback,
        "T" => Priority::TimingCritical,
        "PRN" => Priority::AsNeeded,
        _ => return None,
    })
}
