//! Encounters (visits) and their timeline.

use serde::{Deserialize, Serialize};

use super::{Coded, Location, Practitioner, Timestamp};

/// Patient class of a visit (PV1-2, HL7 table 0004).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncounterClass {
    /// `E`.
    Emergency,
    /// `I`.
    Inpatient,
    /// `O`.
    Outpatient,
    /// `P`.
    Preadmit,
    /// `R`.
    RecurringPatient,
    /// `B`.
    Obstetrics,
    /// `C`.
    CommercialAccount,
    /// `N`.
    NotApplicable,
    /// `U`, or a code outside the table.
    Unknown,
}

/// One step of a visit timeline (admission, consultation, prescription, discharge…), as PX360
/// wants it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VisitEvent {
    /// What happened, as a short snake_case word (`admitted`, `discharged`, or the code sent
    /// by the HIS for other steps, e.g. `consultation`).
    pub kind: String,
    /// When it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Timestamp>,
    /// Free text the HIS attached to the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Where a stay in a location stands (FHIR `Encounter.location.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocationStatus {
    /// The patient is to go there (pending transfer, PV1-42).
    Planned,
    /// The patient is there now (PV1-3, PV1-11 temporary location).
    Active,
    /// The patient was there (PV1-6 prior location, PV1-43 prior temporary location).
    Completed,
}

/// One entry of a visit's location history.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LocationStay {
    /// The location.
    pub location: Location,
    /// Whether the patient is, was or will be there.
    pub status: LocationStatus,
    /// From when (the event time for the location a transfer moved the patient to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Timestamp>,
    /// Until when (the event time for the location a transfer moved the patient from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Timestamp>,
}

/// A visit of the patient (HL7 PV1/PV2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encounter {
    /// Visit number (PV1-19 CX-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visit_number: Option<String>,
    /// Patient class (PV1-2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<EncounterClass>,
    /// Admission type (PV1-4), e.g. `E` emergency, `R` routine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission_type: Option<Coded>,
    /// Hospital service (PV1-10), e.g. `CAR`, `PED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Coded>,
    /// Assigned location (PV1-3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// Attending doctor (PV1-7, first repetition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attending: Option<Practitioner>,
    /// Consulting doctors (PV1-9, every repetition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consulting: Vec<Practitioner>,
    /// Referring doctor (PV1-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referring: Option<Practitioner>,
    /// Admit time (PV1-44).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admit_time: Option<Timestamp>,
    /// Discharge time (PV1-45).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discharge_time: Option<Timestamp>,
    /// Discharge disposition (PV1-36).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discharge_disposition: Option<Coded>,
    /// Financial class / bill type (PV1-20), e.g. cash or insurance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub financial_class: Option<Coded>,
    /// Insurance company name (IN1-4), when sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insurer: Option<String>,
    /// Every location of the visit this message tells of, prior ones first (see
    /// `from_v2::adt` for the PV1 fields read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub location_history: Vec<LocationStay>,
    /// Timeline of the visit: admission, the steps the HIS reported (consultation,
    /// prescription…), discharge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<VisitEvent>,
    /// Every ROL of the patient and visit (not of an order group) (HL7 ROL: ROL-3 role, table
    /// 0443, such as `AT` attending, `CP` consulting, `PP` primary care; ROL-4 person; ROL-2
    /// action), in message order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
}

/// A person's role in a visit, an order or an appointment (HL7 ROL; FHIR
/// `Encounter.participant`, `ServiceRequest.performer`, `Appointment.participant`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Role {
    /// The role (ROL-3, HL7 table 0443).
    pub role: Coded,
    /// The person (ROL-4; its repetitions are one person's identifiers).
    pub practitioner: Practitioner,
    /// What the sender does with the role (ROL-2, HL7 table 0287: `AD` add, `CO` correct,
    /// `DE` delete, `LI` link, `UC` unchanged, `UN` unlink, `UP` update), as sent; absent
    /// when not sent. See [`Role::is_current`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

impl Role {
    /// False for a role the message removes (ROL-2 `DE` delete or `UN` unlink); every other
    /// action (`AD`, `CO`, `UP`, `LI`, `UC` unchanged) or none states a role that holds.
    pub fn is_current(&self) -> bool {
        !matches!(self.action.as_deref(), Some("DE" | "UN"))
    }
}
