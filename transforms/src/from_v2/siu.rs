//! SIU (scheduling) to canonical appointments.
//!
//! | trigger | event kind | status |
//! |---|---|---|
//! | S12 new appointment | `appointment_booked` | SCH-25, else `booked` |
//! | S13 reschedule | `appointment_rescheduled` | SCH-25, else `booked` |
//! | S14 modification | `appointment_modified` | SCH-25, else `booked` |
//! | S15 cancellation | `appointment_cancelled` | `cancelled` |
//! | S16 discontinuation | `appointment_discontinued` | `cancelled` |
//! | S17 deletion | `appointment_deleted` | `entered_in_error` |
//! | S18 service/resource added | `appointment_resource_added` | SCH-25, else `booked` |
//! | S19 service/resource modified | `appointment_resource_modified` | SCH-25, else `booked` |
//! | S20 service/resource cancelled | `appointment_resource_cancelled` | SCH-25, else `booked` |
//! | S21 service/resource discontinued | `appointment_resource_discontinued` | SCH-25, else `booked` |
//! | S22 service/resource deleted | `appointment_resource_deleted` | SCH-25, else `booked` |
//! | S23 time slot blocked | `slot_blocked` | `blocked` |
//! | S24 time slot opened | `slot_opened` | `cancelled` (the block no longer holds) |
//! | S26 no-show | `appointment_no_show` | `no_show` |
//!
//! S25 is a schedule query (SQM/SQR), not a SIU message. A resource change (S18-S22) does
//! not change the appointment itself: its status is SCH-25, and the resources are those the
//! message sends (the AIS/AIG/AIL/AIP the change is about).
//!
//! For S15, S16, S17, S23, S24 and S26 the trigger is the statement of what happened and wins
//! over a stale SCH-25. SCH-25 (filler status code, HL7 table 0278) is read otherwise and must be a
//! known code: `Pending`, `Waitlist`, `Booked`, `Overbook`, `Started`, `Complete`, `Cancelled`,
//! `Dc`, `Deleted`, `Blocked`, `Noshow` (case-insensitive).
//!
//! Resources, as the v2-to-FHIR IG maps AIS, AIG, AIL and AIP to Appointment: every AIS
//! (`services`), AIP (`personnel`), AIL (`locations`) and AIG (`resources`), wherever they sit
//! (with or without RGS), in message order, each with its own time: its start (AIS-4, AIP-6,
//! AIL-6, AIG-8; else the appointment's start plus its offset, AIS-5/6, AIP-7/8, AIL-7/8,
//! AIG-9/10) and its duration (AIS-7/8, AIP-9/10, AIL-9/10, AIG-11/12). The first service,
//! person and location are also `service`, `practitioner` and `location`, for destinations
//! that take one. AIP-4 resource type is the person's `specialisation`, AIL-4 location type
//! the location's. AIG-4 resource type decides what an AIG is: when its code (else its text)
//! is a person type (`PERSONNEL`, `PRACTITIONER`, `PHYSICIAN`, `DOCTOR`, `PROVIDER`, `STAFF`,
//! `NURSE`, case-insensitive; HL7 leaves AIG-4 to a site table) and there is no AIP, the first
//! such AIG is the person booked (AIG-3 code as practitioner code, its text whole as the name,
//! since a CWE does not split names). Every other AIG (equipment, rooms, teams, and person
//! AIGs beside an AIP) is kept in `resources`: AIG-3 resource, AIG-4 type, AIG-6 quantity (a
//! whole number). An AIS without AIS-3, an AIP without AIP-3, an AIL without AIL-3 and an AIG
//! without AIG-3 are ignored.
//!
//! Timing of the appointment (the v2-to-FHIR IG reads it from TQ1): start from TQ1-7, else
//! the first AIS-4, else AIP-6, else AIL-6, else AIG-8, else SCH-11.4 (TQ start); duration
//! from AIS-7/AIS-8 when the SIU books one service (with several, each keeps its own), else
//! SCH-9/SCH-10, else end - start; end from TQ1-8, else SCH-11.5, else start + duration.
//! SCH-11 is the timing before v2.5; v2.5 and v2.6 keep it for backward compatibility only, so
//! it is read last there and a stale copy never wins over TQ1; from v2.7, which withdrew it,
//! it is not read at all. (Ignoring it already from v2.5 would drop the only time of the many
//! v2.5 senders that still fill SCH-11 alone.) Duration and offset units (AIS-6/8, AIP-8/10,
//! AIL-8/10, AIG-10/12, SCH-10, table ISO+ / ANSI): `MIN`/`M`/`MINUTES`, `H`/`HR`/`HOURS`,
//! `S`/`SEC`/`SECONDS`, and absent means minutes.
//!
//! Schedule time (`slots`): S23 and S24 change one slot, the block's time (start to end) in
//! the schedule of every resource the block names (AIP, AIL, AIG), `busy_unavailable`
//! when blocked and `free` when opened. S18-S22 change each booked resource's own time (its
//! start, else the appointment's; its duration, else to the appointment's end) in that
//! resource's schedule (one slot per AIP, AIL and general AIG): `busy` when a resource is
//! added or modified (S18, S19; `busy_unavailable` when the appointment is a block), `free`
//! when it is cancelled, discontinued or deleted (S20-S22). AIS services are no schedule of
//! their own: they are each slot's `services`. The slot's id is the appointment's (SCH-2,
//! else SCH-1), its reason SCH-6 (else SCH-7), its comment the NTEs. Other triggers change
//! no schedule time (the appointment says what it holds).
//!
//! Roles: no SIU structure defines ROL or PRT; one a site profile sends (after PID or PV1) is
//! a role of the appointment (see `super::role`).

use super::datatypes::UpperCode;
use crate::hl7v2::access::{SegmentRef, V2Message, Version};
use crate::model::{
    Appointment, AppointmentLocation, AppointmentPerson, AppointmentResource, AppointmentService,
    AppointmentStatus, Coded, Event, EventKind, HumanName, Patient, Practitioner, Schedule, Slot,
    SlotStatus, Timestamp,
};

use super::adt::{encounter_from_pv1_into, patient_from_pid_into};
use super::{
    collect_practitioners, datatypes, decimal_value, new_event, notes, source_from_msh, ts,
    ts_value, MappingError,
};

/// The event kind of a SIU trigger (see the table of this module), `None` outside S12-S26
/// and for the query trigger S25.
pub fn kind_for(trigger: &str) -> Option<EventKind> {
    Some(match trigger {
        "S12" => EventKind::AppointmentBooked,
        "S13" => EventKind::AppointmentRescheduled,
        "S14" => EventKind::AppointmentModified,
        "S15" => EventKind::AppointmentCancelled,
        "S16" => EventKind::AppointmentDiscontinued,
        "S17" => EventKind::AppointmentDeleted,
        "S18" => EventKind::AppointmentResourceAdded,
        "S19" => EventKind::AppointmentResourceModified,
        "S20" => EventKind::AppointmentResourceCancelled,
        "S21" => EventKind::AppointmentResourceDiscontinued,
        "S22" => EventKind::AppointmentResourceDeleted,
        "S23" => EventKind::SlotBlocked,
        "S24" => EventKind::SlotOpened,
        "S26" => EventKind::AppointmentNoShow,
        _ => return None,
    })
}

/// Maps a SIU message whose trigger gave `kind`.
///
/// # Errors
/// [`MappingError`] without SCH or appointment id, with an unknown SCH-25, unknown duration
/// units, or unparsable dates and numbers. A SIU without PID maps (the patient is optional in
/// the SIU structure) but then has no partition key.
pub fn event_from_siu(msg: &V2Message<'_>, kind: EventKind) -> Result<Box<Event>, MappingError> {
    let mut event = new_event(kind, source_from_msh(msg)?);
    if msg.segment("PID").is_some() {
        patient_from_pid_into(msg, event.patient.insert(Patient::default()))?;
    }
    encounter_from_pv1_into(msg, &mut event.encounter)?;
    let mut appointment = appointment_from_siu(msg, kind)?;
    appointment.patient = event
        .patient
        .as_ref()
        .and_then(|p| p.primary_identifier())
        .cloned();
    // No SIU structure defines ROL or PRT; one a site profile sends (after PID or PV1) is a
    // role of the appointment, not of the visit the SIU names for context.
    // The encounter's mapping read them already (the same `visit_roles`): moved, not read
    // again.
    appointment.roles = match &mut event.encounter {
        Some(e) => std::mem::take(&mut e.roles),
        None => super::visit_roles(msg)?,
    };
    event.slots = slots_of(&appointment, kind);
    event.appointment = Some(appointment);
    collect_practitioners(&mut event);
    Ok(event)
}

/// The schedule time a SIU changed (see the module's slot rule): empty outside S18-S24.
fn slots_of(a: &Appointment, kind: EventKind) -> Vec<Slot> {
    let blocked = a.status == AppointmentStatus::Blocked;
    let status = match kind {
        EventKind::SlotBlocked => SlotStatus::BusyUnavailable,
        EventKind::SlotOpened => SlotStatus::Free,
        EventKind::AppointmentResourceAdded | EventKind::AppointmentResourceModified if blocked => {
            SlotStatus::BusyUnavailable
        }
        EventKind::AppointmentResourceAdded | EventKind::AppointmentResourceModified => {
            SlotStatus::Busy
        }
        EventKind::AppointmentResourceCancelled
        | EventKind::AppointmentResourceDiscontinued
        | EventKind::AppointmentResourceDeleted => SlotStatus::Free,
        _ => return Vec::new(),
    };
    let slot = |schedule: Schedule, start: Option<Timestamp>, minutes: Option<u32>| {
        let start = start.or(a.start);
        let end = match minutes {
            Some(m) => start.and_then(|s| s.plus_minutes(i64::from(m))),
            None => a.end,
        };
        Slot {
            id: a.filler_id.clone().or_else(|| a.placer_id.clone()),
            schedule,
            status,
            start,
            end,
            services: a.services.iter().map(|s| s.service.clone()).collect(),
            appointment_type: a.appointment_type.clone(),
            reason: a.event_reason.clone().or_else(|| a.reason.clone()),
            comment: a.notes.clone(),
        }
    };
    if matches!(kind, EventKind::SlotBlocked | EventKind::SlotOpened) {
        // A block holds every resource it names for the block's time: one slot.
        let schedule = Schedule {
            practitioners: a.personnel.iter().map(|p| p.practitioner.clone()).collect(),
            locations: a.locations.iter().map(|l| l.location.clone()).collect(),
            resources: a.resources.iter().map(|r| r.resource.clone()).collect(),
            ..Schedule::default()
        };
        return vec![slot(schedule, None, None)];
    }
    // A resource change: each resource's own time, in its own schedule.
    let mut out = Vec::new();
    for p in &a.personnel {
        let schedule = Schedule {
            practitioners: vec![p.practitioner.clone()],
            ..Schedule::default()
        };
        out.push(slot(schedule, p.start, p.duration_minutes));
    }
    for l in &a.locations {
        let schedule = Schedule {
            locations: vec![l.location.clone()],
            ..Schedule::default()
        };
        out.push(slot(schedule, l.start, l.duration_minutes));
    }
    for r in &a.resources {
        let schedule = Schedule {
            resources: vec![r.resource.clone()],
            ..Schedule::default()
        };
        out.push(slot(schedule, r.start, r.duration_minutes));
    }
    out
}

/// The appointment of a SIU message (without the patient reference, which the event sets).
///
/// # Errors
/// As [`event_from_siu`].
pub fn appointment_from_siu(
    msg: &V2Message<'_>,
    kind: EventKind,
) -> Result<Appointment, MappingError> {
    let sch = msg.segment("SCH").ok_or(MappingError::Missing {
        path: "SCH".into(),
        reason: "no schedule activity segment",
    })?;
    // SCH-1 placer and SCH-2 filler appointment ids (EI-1); one of them is required.
    let placer_id = sch.get(1).string();
    let filler_id = sch.get(2).string();
    if placer_id.is_none() && filler_id.is_none() {
        return Err(MappingError::Missing {
            path: "SCH-1".into(),
            reason: "no placer (SCH-1) or filler (SCH-2) appointment id",
        });
    }
    let tq1 = msg.segment("TQ1");
    // Every AIS, AIP, AIL and AIG, wherever they sit (with or without RGS), in message order.
    let mut aiss = Vec::new();
    let mut aips = Vec::new();
    let mut ails = Vec::new();
    let mut aigs = Vec::new();
    for seg in msg.segments() {
        match seg.name() {
            "AIS" => aiss.push(seg),
            "AIP" => aips.push(seg),
            "AIL" => ails.push(seg),
            "AIG" => aigs.push(seg),
            _ => {}
        }
    }

    // SCH-11 (TQ) is the timing before v2.5; v2.5 and v2.6 keep it for backward
    // compatibility only (read last, after TQ1 and the resources), v2.7 withdrew it. A message
    // without a readable MSH-12 is taken as old.
    let sch11 = msg.version().is_none_or(|v| v < Version::V2_7);
    let mut start = None;
    if let Some(tq1) = &tq1 {
        start = ts(msg, tq1, 7)?;
    }
    for (seg, field) in [
        (aiss.first(), 4),
        (aips.first(), 6),
        (ails.first(), 6),
        (aigs.first(), 8),
    ] {
        if let Some(seg) = seg {
            start = start.or(ts(msg, seg, field)?);
        }
    }
    if sch11 {
        start = start.or(ts_value(msg, &sch, 11, sch.get_comp(11, 4))?);
    }

    // Each resource's own time: its start field, else the appointment's start plus its offset
    // (AIS-5/6, AIG-9/10, AIL-7/8, AIP-7/8), and its duration.
    let timing = |seg: &SegmentRef<'_, '_>, start_field: usize| -> Result<Timing, MappingError> {
        let own = ts(msg, seg, start_field)?;
        let offset = minutes(msg, seg, start_field + 1, start_field + 2)?;
        let at = own.or_else(|| start?.plus_minutes(i64::from(offset?)));
        // AIS: duration at AIS-7/8 (after the offset); AIG: AIG-11/12; AIL, AIP: 9/10.
        let duration_field = if seg.name() == "AIG" {
            11
        } else {
            start_field + 3
        };
        Ok(Timing {
            start: at,
            duration_minutes: minutes(msg, seg, duration_field, duration_field + 1)?,
        })
    };

    // The duration of the one service booked is the appointment's; with several, each has
    // its own (kept on the service) and the appointment's is SCH-9, else end - start.
    let mut duration = None;
    if let [ais] = aiss.as_slice() {
        duration = minutes(msg, ais, 7, 8)?;
    }
    if duration.is_none() {
        duration = minutes(msg, &sch, 9, 10)?;
    }

    let mut end = None;
    if let Some(tq1) = &tq1 {
        end = ts(msg, tq1, 8)?;
    }
    if sch11 {
        end = end.or(ts_value(msg, &sch, 11, sch.get_comp(11, 5))?);
    }
    let end = end.or_else(|| start.and_then(|s| s.plus_minutes(i64::from(duration?))));
    let duration = duration.or_else(|| {
        let m = start?.minutes_until(&end?)?;
        u32::try_from(m).ok()
    });

    let mut services = Vec::with_capacity(aiss.len());
    for ais in &aiss {
        if let Some(service) = datatypes::coded(&ais.field(3)) {
            let t = timing(ais, 4)?;
            services.push(AppointmentService {
                service,
                start: t.start,
                duration_minutes: t.duration_minutes,
            });
        }
    }
    let mut personnel = Vec::with_capacity(aips.len());
    for aip in &aips {
        if let Some(mut practitioner) = datatypes::practitioner(&aip.field(3)) {
            // AIP-4 resource type (v2.5; "resource role" in v2.3): the specialty seen.
            practitioner.specialisation = datatypes::coded(&aip.field(4));
            let t = timing(aip, 6)?;
            personnel.push(AppointmentPerson {
                practitioner,
                start: t.start,
                duration_minutes: t.duration_minutes,
            });
        }
    }
    let mut resources = Vec::new();
    for aig in &aigs {
        let Some(resource) = datatypes::coded(&aig.field(3)) else {
            continue;
        };
        let resource_type = datatypes::coded(&aig.field(4));
        let t = timing(aig, 8)?;
        if personnel.is_empty() && resource_type.as_ref().is_some_and(is_person_type) {
            personnel.push(AppointmentPerson {
                practitioner: Practitioner {
                    code: resource.code,
                    name: HumanName {
                        family: resource.text,
                        ..HumanName::default()
                    },
                    ..Practitioner::default()
                },
                start: t.start,
                duration_minutes: t.duration_minutes,
            });
            continue;
        }
        let quantity = match decimal_value(msg, aig, 6, aig.get(6))? {
            None => None,
            Some(q) => Some(
                q.to_minor_units(0)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| MappingError::BadNumber {
                        path: msg.field_path(aig, 6),
                    })?,
            ),
        };
        resources.push(AppointmentResource {
            resource,
            resource_type,
            quantity,
            start: t.start,
            duration_minutes: t.duration_minutes,
        });
    }
    let mut locations = Vec::with_capacity(ails.len());
    for ail in &ails {
        if let Some(mut location) = datatypes::location(&ail.field(3).rep(1)) {
            // AIL-4 location type, e.g. the clinic's specialty.
            location.specialisation = datatypes::coded(&ail.field(4));
            let t = timing(ail, 6)?;
            locations.push(AppointmentLocation {
                location,
                start: t.start,
                duration_minutes: t.duration_minutes,
            });
        }
    }

    let status = status(&sch, kind)?;
    // The NTEs of the first SCH's group (the TQ1 and NTE right after it), as
    // `msg.groups("SCH", &["TQ1", "NTE"])` would give them, without building every group.
    let sch_ntes: Vec<_> = msg
        .segments()
        .skip(sch.index() + 1)
        .take_while(|s| matches!(s.name(), "TQ1" | "NTE"))
        .filter(|s| s.name() == "NTE")
        .collect();
    let sch_notes = notes(&sch_ntes);

    Ok(Appointment {
        placer_id,
        filler_id,
        remote_id: None,
        patient: None,
        practitioner: personnel.first().map(|p| p.practitioner.clone()),
        location: locations.first().map(|l| l.location.clone()),
        resources,
        service: services.first().map(|s| s.service.clone()),
        services,
        personnel,
        locations,
        appointment_type: datatypes::coded(&sch.field(8)),
        start,
        end,
        duration_minutes: duration,
        status,
        reason: datatypes::coded(&sch.field(7)),
        event_reason: datatypes::coded(&sch.field(6)),
        notes: sch_notes,
        roles: Vec::new(),
    })
}

/// A resource's own start and duration (see [`appointment_from_siu`]).
struct Timing {
    start: Option<crate::model::Timestamp>,
    duration_minutes: Option<u32>,
}

/// AIG-4 resource types that name a person (see the module's resource rule).
fn is_person_type(kind: &Coded) -> bool {
    let word = kind.code.as_deref().or(kind.text.as_deref()).unwrap_or("");
    matches!(
        UpperCode::new(word.trim()).as_str(),
        "PERSONNEL" | "PRACTITIONER" | "PHYSICIAN" | "DOCTOR" | "PROVIDER" | "STAFF" | "NURSE"
    )
}

fn status(sch: &SegmentRef<'_, '_>, kind: EventKind) -> Result<AppointmentStatus, MappingError> {
    match kind {
        EventKind::AppointmentCancelled | EventKind::AppointmentDiscontinued => {
            return Ok(AppointmentStatus::Cancelled)
        }
        EventKind::AppointmentDeleted => return Ok(AppointmentStatus::EnteredInError),
        EventKind::AppointmentNoShow => return Ok(AppointmentStatus::NoShow),
        EventKind::SlotBlocked => return Ok(AppointmentStatus::Blocked),
        EventKind::SlotOpened => return Ok(AppointmentStatus::Cancelled),
        _ => {}
    }
    let sch25 = sch.get_comp(25, 1);
    let Some(code) = sch25.text() else {
        return Ok(AppointmentStatus::Booked);
    };
    Ok(match UpperCode::new(code.trim()).as_str() {
        "PENDING" => AppointmentStatus::Pending,
        "WAITLIST" => AppointmentStatus::Waitlisted,
        "BOOKED" | "OVERBOOK" => AppointmentStatus::Booked,
        "STARTED" => AppointmentStatus::Arrived,
        "COMPLETE" => AppointmentStatus::Completed,
        "CANCELLED" | "DC" => AppointmentStatus::Cancelled,
        "DELETED" => AppointmentStatus::EnteredInError,
        "BLOCKED" => AppointmentStatus::Blocked,
        "NOSHOW" => AppointmentStatus::NoShow,
        _ => {
            return Err(MappingError::UnknownCode {
                path: "SCH-25".into(),
                reason: "filler status code not in HL7 table 0278",
            })
        }
    })
}

/// A duration in whole minutes from a number field and a units field (CE, code in comp 1).
fn minutes(
    msg: &V2Message<'_>,
    seg: &SegmentRef<'_, '_>,
    value_field: usize,
    units_field: usize,
) -> Result<Option<u32>, MappingError> {
    let Some(amount) = decimal_value(msg, seg, value_field, seg.get(value_field))? else {
        return Ok(None);
    };
    let bad = || MappingError::BadNumber {
        path: msg.field_path(seg, value_field),
    };
    let per_unit_seconds: i64 = match seg
        .get_comp(units_field, 1)
        .text()
        .map(|u| UpperCode::new(u.trim()))
        .as_deref()
    {
        None | Some("MIN" | "M" | "MINUTES" | "MINUTE") => 60,
        Some("H" | "HR" | "HOURS" | "HOUR") => 3600,
        Some("S" | "SEC" | "SECONDS" | "SECOND") => 1,
        Some(_) => {
            return Err(MappingError::UnknownCode {
                path: msg.field_path(seg, units_field),
                reason: "duration units other than minutes, hours or seconds",
            })
        }
    };
    // Durations are whole numbers in practice; allow a fraction that gives whole seconds.
    let seconds = amount
        .to_minor_units(3)
        .ok_or_else(bad)?
        .checked_mul(per_unit_seconds)
        .ok_or_else(bad)?
        / 1000;
    if seconds < 0 {
        return Err(bad());
    }
    u32::try_from(seconds / 60).map(Some).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(text: &str) -> Event {
        let msg = V2Message::parse(text).expect("parses");
        let code = msg
            .segment("MSH")
            .and_then(|m| m.get_comp(9, 2).string())
            .expect("trigger");
        *event_from_siu(&msg, kind_for(&code).expect("a SIU trigger")).expect("maps")
    }

    #[test]
    fn resource_changes_say_what_each_resource_schedule_now_holds() {
        let head = "MSH|^~\\&|HIS|RUH|||20260615103000||SIU^";
        let body = "|C1|P|2.5\rSCH||APT-1^HIS|||||||||^^^202606161000^202606161030\r\
                    AIP|1|A|DOC-1^Haddad^Omar||||||20|MIN\rAIL|1|A|CLN-1\r";
        let added = event(&format!("{head}S18{body}"));
        let statuses: Vec<SlotStatus> = added.slots.iter().map(|s| s.status).collect();
        assert_eq!(statuses, [SlotStatus::Busy, SlotStatus::Busy]);
        // The person's own duration; the location to the appointment's end.
        let end = |i: usize| added.slots[i].end.map(|t| t.to_iso());
        assert_eq!(end(0).as_deref(), Some("2026-06-16T10:20"));
        assert_eq!(end(1).as_deref(), Some("2026-06-16T10:30"));
        assert_eq!(added.slots[0].id.as_deref(), Some("APT-1"));
        let deleted = event(&format!("{head}S22{body}"));
        assert!(deleted.slots.iter().all(|s| s.status == SlotStatus::Free));
        // A block's resources stay unavailable, not booked.
        let block = format!("{head}S19{body}").replace(
            "|^^^202606161000^202606161030",
            "|^^^202606161000^202606161030||||||||||||||Blocked",
        );
        let changed = event(&block);
        assert!(changed
            .slots
            .iter()
            .all(|s| s.status == SlotStatus::BusyUnavailable));
        // A new appointment changes no schedule time here.
        assert!(event(&format!("{head}S12{body}")).slots.is_empty());
    }
}
