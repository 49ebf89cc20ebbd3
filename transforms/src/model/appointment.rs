//! Appointments (HL7 SIU, FHIR Appointment, Latrexa/OpsPort/Buktor bookings).

use serde::{Deserialize, Serialize};

use super::{Coded, Identifier, Location, Practitioner, Role, Timestamp};

/// Status of an appointment, following the HL7 table 0278 to FHIR AppointmentStatus map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppointmentStatus {
    /// Requested, not yet confirmed (`Pending`).
    Pending,
    /// On the waiting list (`Waitlist`).
    Waitlisted,
    /// Confirmed (`Booked`, `Overbook`).
    Booked,
    /// The patient arrived / the visit started (`Started`).
    Arrived,
    /// Done (`Complete`).
    Completed,
    /// Cancelled or discontinued (`Cancelled`, `Dc`).
    Cancelled,
    /// The patient did not come (`Noshow`).
    NoShow,
    /// Removed from the schedule as an error (`Deleted`).
    EnteredInError,
    /// A time block, not a patient booking (`Blocked`).
    Blocked,
}

/// A general resource an appointment needs besides its practitioner and location: equipment,
/// a device, a team (HL7 AIG).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppointmentResource {
    /// The resource (AIG-3 resource id, CWE: code and name).
    pub resource: Coded,
    /// What kind of resource (AIG-4 resource type), e.g. `EQUIP`, `ROOM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<Coded>,
    /// How many are needed (AIG-6 resource quantity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u32>,
    /// When the resource is needed from (AIG-8, else the appointment's start plus the AIG-9
    /// offset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Timestamp>,
    /// For how long, in minutes (AIG-11 with AIG-12 units).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_minutes: Option<u32>,
}

/// A service an appointment books (HL7 AIS), with its own time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppointmentService {
    /// The service (AIS-3 universal service identifier).
    pub service: Coded,
    /// When it starts (AIS-4, else the appointment's start plus the AIS-5 offset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Timestamp>,
    /// For how long, in minutes (AIS-7 with AIS-8 units).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_minutes: Option<u32>,
}

/// A person an appointment books (HL7 AIP, or an AIG whose type names a person when the SIU
/// has no AIP), with their own time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppointmentPerson {
    /// The person (AIP-3, with AIP-4 resource type as `specialisation`).
    pub practitioner: Practitioner,
    /// When they are needed from (AIP-6, else the appointment's start plus the AIP-7 offset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Timestamp>,
    /// For how long, in minutes (AIP-9 with AIP-10 units).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_minutes: Option<u32>,
}

/// A location an appointment books (HL7 AIL), with its own time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppointmentLocation {
    /// The location (AIL-3, with AIL-4 location type as `specialisation`).
    pub location: Location,
    /// When it is needed from (AIL-6, else the appointment's start plus the AIL-7 offset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Timestamp>,
    /// For how long, in minutes (AIL-9 with AIL-10 units).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_minutes: Option<u32>,
}

/// An appointment with identifiers from both sides.
///
/// JSON: `{"placer_id": "...", "filler_id": "A123", "start": "2026-06-15T10:30",
/// "end": "2026-06-15T11:00", "duration_minutes": 30, "status": "booked", ...}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appointment {
    /// The requester's id (SCH-1 placer appointment id, EI-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placer_id: Option<String>,
    /// The scheduler's id (SCH-2 filler appointment id, EI-1): the HIS appointment id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filler_id: Option<String>,
    /// The id on the remote (cloud) side, when known from the id map or a FHIR identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_id: Option<String>,
    /// The patient's primary identifier (the full patient travels in the event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<Identifier>,
    /// The practitioner seen (first AIP-3 personnel resource, else the first AIG whose
    /// resource type names a person; see `from_v2::siu`): the first of `personnel`, for
    /// destinations that take one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub practitioner: Option<Practitioner>,
    /// Where (first AIL): the first of `locations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// General resources (AIG) that are not people booked, in message order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<AppointmentResource>,
    /// The service booked (first AIS-3 universal service id): the first of `services`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Coded>,
    /// Every service booked (every AIS), each with its time, in message order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<AppointmentService>,
    /// Every person booked (every AIP, or the person AIG that stands for the practitioner),
    /// each with their time, in message order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub personnel: Vec<AppointmentPerson>,
    /// Every location booked (every AIL), each with its time, in message order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<AppointmentLocation>,
    /// Appointment type (SCH-8), e.g. `Routine`, `Walkin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appointment_type: Option<Coded>,
    /// Start (TQ1-7, else the first AIS/AIP/AIL/AIG start, else SCH-11 TQ-4; see
    /// `from_v2::siu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Timestamp>,
    /// End (TQ1-8, else SCH-11 TQ-5, else start + duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Timestamp>,
    /// Duration in minutes (SCH-9/SCH-10, AIS-7/AIS-8, or end - start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_minutes: Option<u32>,
    /// Status after this event.
    pub status: AppointmentStatus,
    /// Why the appointment exists (SCH-7 appointment reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Coded>,
    /// Why this event happened (SCH-6 event reason), e.g. the cancellation reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_reason: Option<Coded>,
    /// Free-text notes (NTE-3, joined with newlines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// The roles a SIU names (ROL or PRT; no SIU structure defines them, but site profiles
    /// send them after PID/PV1), in message order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
}
