//! Schedules and slots: whose time can be booked (a practitioner's, a location's, a device's)
//! and what became of a stretch of it (booked, blocked, opened).
//!
//! A [`Schedule`] is the availability of one or more resources (FHIR `Schedule` and its
//! actors; HL7 has no schedule segment, so from SIU it is the resources a message names). A
//! [`Slot`] is a stretch of that schedule with its state (FHIR `Slot`; from SIU^S18-S24 the
//! time a resource was booked for, blocked, or given back).

use serde::{Deserialize, Serialize};

use super::{Coded, Location, Practitioner, Timestamp};

/// The availability of a practitioner, location or other resource.
///
/// JSON: `{"id": "SCH-DOC-04", "practitioners": [{"code": "DOC-SARAH-04"}],
/// "locations": [{"code": "CLN-PED-01"}], "services": [{"code": "CONS-PED"}], "active": true}`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// The schedule's own id as the sender names it (FHIR `Schedule.identifier`); absent
    /// when the sender names none (SIU): the schedule is then known by its resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The practitioners whose time it is (AIP, FHIR actor Practitioner/PractitionerRole).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub practitioners: Vec<Practitioner>,
    /// The locations whose time it is (AIL, FHIR actor Location).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<Location>,
    /// Other resources whose time it is: equipment, rooms as resources (AIG, FHIR actor
    /// Device).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<Coded>,
    /// The services that can be booked in it (AIS-3, FHIR `serviceType`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Coded>,
    /// The specialty it serves (FHIR `specialty`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specialty: Option<Coded>,
    /// The period it covers (FHIR `planningHorizon`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planning_start: Option<Timestamp>,
    /// End of the period it covers (FHIR `planningHorizon.end`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planning_end: Option<Timestamp>,
    /// Whether it is in use (FHIR `active`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// Free text (FHIR `comment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl Schedule {
    /// True when the schedule names no resource and no id.
    pub fn is_empty(&self) -> bool {
        self.id.is_none()
            && self.practitioners.is_empty()
            && self.locations.is_empty()
            && self.resources.is_empty()
    }
}

/// The state of a slot, as FHIR's SlotStatus names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotStatus {
    /// Open for booking (`free`; SIU^S24, a resource cancelled, discontinued or deleted).
    Free,
    /// Taken by an appointment (`busy`; SIU^S18, S19).
    Busy,
    /// Blocked, not bookable (`busy-unavailable`; SIU^S23, a block's resources).
    BusyUnavailable,
    /// Held, not yet confirmed (`busy-tentative`).
    BusyTentative,
    /// Sent in error (`entered-in-error`).
    EnteredInError,
}

impl SlotStatus {
    /// The FHIR code (`busy-unavailable`...).
    pub const fn fhir_code(self) -> &'static str {
        match self {
            SlotStatus::Free => "free",
            SlotStatus::Busy => "busy",
            SlotStatus::BusyUnavailable => "busy-unavailable",
            SlotStatus::BusyTentative => "busy-tentative",
            SlotStatus::EnteredInError => "entered-in-error",
        }
    }

    /// The status of a FHIR code; `None` for a code outside FHIR's SlotStatus.
    pub fn from_fhir_code(code: &str) -> Option<SlotStatus> {
        Some(match code {
            "free" => SlotStatus::Free,
            "busy" => SlotStatus::Busy,
            "busy-unavailable" => SlotStatus::BusyUnavailable,
            "busy-tentative" => SlotStatus::BusyTentative,
            "entered-in-error" => SlotStatus::EnteredInError,
            _ => return None,
        })
    }
}

/// A stretch of a schedule and its state.
///
/// JSON: `{"id": "APT-77001", "schedule": {"practitioners": [...]}, "status": "busy",
/// "start": "2026-06-16T10:00:00+03:00", "end": "2026-06-16T10:30:00+03:00"}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The id of what holds (or held) the time: the block's or appointment's id (SCH-2
    /// filler id, else SCH-1), or the FHIR Slot's identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The schedule the slot belongs to: the resources whose time it is.
    pub schedule: Schedule,
    /// Its state after the event.
    pub status: SlotStatus,
    /// When it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Timestamp>,
    /// When it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Timestamp>,
    /// The services it is for (AIS-3, FHIR `serviceType`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Coded>,
    /// The kind of appointment it is for (SCH-8, FHIR `appointmentType`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appointment_type: Option<Coded>,
    /// Why the time is blocked or changed (SCH-6 event reason, else SCH-7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Coded>,
    /// Free text (NTE, FHIR `comment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}
