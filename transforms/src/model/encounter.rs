//! Encounters (visits) and their timeline.

use serde::{Deserialize, Serialize};

use super::{is_false, Coded, Decimal, Identifier, Location, Practitioner, Timestamp};

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
    /// The HIS's own name of the step type, as sent (ZVT-2 code, else text; PX360's `Type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// Where a stay in a location stands (FHIR `Encounter.location.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocationStatus {
    /// The patient is to go there (PV1-42 pending location, PV2-1 prior pending location).
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
    /// A temporary location (PV1-11 temporary, PV1-43 prior temporary location), not the
    /// assigned one; FHIR: the `subject-locationClassification` extension the IG puts there.
    #[serde(default, skip_serializing_if = "is_false")]
    pub temporary: bool,
}

/// A visit of the patient (HL7 PV1/PV2), with every field the v2-to-FHIR IG maps to
/// Encounter (see `from_v2::adt::encounter_from_pv1_segment` for where each comes from, and
/// `docs/MAPPING.md` for the FHIR side).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encounter {
    /// Visit number (PV1-19 CX-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visit_number: Option<String>,
    /// Who issued the visit number (PV1-19 CX-4.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visit_number_authority: Option<String>,
    /// Alternate visit ids (PV1-50, every repetition), in message order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alternate_visit_ids: Vec<Identifier>,
    /// Preadmit number (PV1-5, CX-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preadmit_number: Option<String>,
    /// Patient class (PV1-2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<EncounterClass>,
    /// Admission type (PV1-4), e.g. `E` emergency, `R` routine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission_type: Option<Coded>,
    /// Hospital service (PV1-10), e.g. `CAR`, `PED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Coded>,
    /// Assigned location (PV1-3), with PV1-40 bed status when PV1-3 names a room or bed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// Attending doctor (PV1-7; its repetitions are one doctor's identifiers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attending: Option<Practitioner>,
    /// Consulting doctors (PV1-9, every repetition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consulting: Vec<Practitioner>,
    /// Referring doctor (PV1-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referring: Option<Practitioner>,
    /// Admitting doctor (PV1-17).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitting: Option<Practitioner>,
    /// Other healthcare providers (PV1-52, every repetition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_providers: Vec<Practitioner>,
    /// Referral sources (PV2-13, every repetition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub referral_sources: Vec<Practitioner>,
    /// Re-admission indicator (PV1-13, table 0092: `R` readmission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readmission: Option<Coded>,
    /// Admit source (PV1-14, table 0023), e.g. `1` physician referral, `7` emergency room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admit_source: Option<Coded>,
    /// Ambulatory status (PV1-15, table 0009, every repetition), e.g. `A0` no functional
    /// limitations, `B6` amputee.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ambulatory_status: Vec<Coded>,
    /// VIP indicator (PV1-16, table 0099) as sent; the patient's `vip` flag says whether it
    /// marks a VIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip_indicator: Option<Coded>,
    /// Patient type (PV1-18, a site table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_type: Option<Coded>,
    /// Admit time (PV1-44).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admit_time: Option<Timestamp>,
    /// Discharge time (PV1-45).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discharge_time: Option<Timestamp>,
    /// Expected admit time (PV2-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_admit_time: Option<Timestamp>,
    /// Expected discharge time (PV2-9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_discharge_time: Option<Timestamp>,
    /// Estimated length of the inpatient stay in days (PV2-10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_length_of_stay: Option<Decimal>,
    /// Actual length of the inpatient stay in days (PV2-11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length_of_stay: Option<Decimal>,
    /// Discharge disposition (PV1-36).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discharge_disposition: Option<Coded>,
    /// Where the patient was discharged to (PV1-37 DLD-1: its code and text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discharged_to: Option<Location>,
    /// Diet type (PV1-38, table 0114).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diet: Option<Coded>,
    /// Servicing facility (PV1-39): the facility the visit is at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub servicing_facility: Option<Coded>,
    /// Account status (PV1-41, table 0117).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_status: Option<Coded>,
    /// Financial class / bill type (PV1-20), e.g. cash or insurance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub financial_class: Option<Coded>,
    /// Insurance company name (IN1-4), when sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insurer: Option<String>,
    /// Admit reason (PV2-3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admit_reason: Option<Coded>,
    /// Transfer reason (PV2-4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_reason: Option<Coded>,
    /// Visit user codes (PV2-7, table 0130, every repetition), e.g. `TE` teaching.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub visit_user_codes: Vec<Coded>,
    /// Visit description (PV2-12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Visit publicity code (PV2-21, table 0215).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publicity_code: Option<Coded>,
    /// Visit protection indicator (PV2-22: `Y` the visit's information is to be protected,
    /// `N` not), absent when not sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected: Option<bool>,
    /// Visit priority (PV2-25, table 0217: `1` emergency, `2` urgent, `3` elective).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Coded>,
    /// Mode of arrival (PV2-38, table 0430), e.g. `A` ambulance, `C` car.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode_of_arrival: Option<Coded>,
    /// Admission level of care (PV2-40, table 0432), e.g. `AC` acute, `CR` critical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission_level_of_care: Option<Coded>,
    /// Every location of the visit this message tells of, prior ones first (see
    /// `from_v2::adt` for the PV1 and PV2 fields read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub location_history: Vec<LocationStay>,
    /// Timeline of the visit: admission, the steps the HIS reported (consultation,
    /// prescription…), discharge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<VisitEvent>,
    /// Every ROL and PRT of the patient and visit (not of an order group) (ROL-3 role, table
    /// 0443, such as `AT` attending, `CP` consulting, `PP` primary care; PRT-4, table 0912;
    /// the person; the action code), in message order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
}

/// A person's role in a visit, an order or an appointment (HL7 ROL, or PRT from v2.7; FHIR
/// `Encounter.participant`, `ServiceRequest.performer`, `Appointment.participant`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Role {
    /// The role (ROL-3, HL7 table 0443; PRT-4 role of participation, table 0912).
    pub role: Coded,
    /// The person (ROL-4, PRT-5; the repetitions are one person's identifiers), with PRT-6
    /// person provider type as `specialisation`.
    pub practitioner: Practitioner,
    /// What the sender does with the role (ROL-2, PRT-2, HL7 table 0287: `AD` add, `CO`
    /// correct, `DE` delete, `LI` link, `UC` unchanged, `UN` unlink, `UP` update), as sent;
    /// absent when not sent. See [`Role::is_current`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// From when the person has the role (ROL-5, PRT-11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Timestamp>,
    /// Until when (ROL-6, PRT-12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Timestamp>,
    /// True for a PRT participation (v2.7+; its role in table 0912), false for a ROL (table
    /// 0443).
    #[serde(default, skip_serializing_if = "is_false")]
    pub participation: bool,
}

impl Role {
    /// False for a role the message removes (ROL-2 `DE` delete or `UN` unlink); every other
    /// action (`AD`, `CO`, `UP`, `LI`, `UC` unchanged) or none states a role that holds.
    pub fn is_current(&self) -> bool {
        !matches!(self.action.as_deref(), Some("DE" | "UN"))
    }
}
