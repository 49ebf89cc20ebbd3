//! FHIR R4 <-> canonical model, over fhirbolt's typed R4 resources.
//!
//! Inbound: [`fhir_to_events`] takes the JSON of a resource or a transaction/batch Bundle
//! (Patient, Practitioner, Location, Encounter, Appointment, ChargeItem, ServiceRequest,
//! Observation, DiagnosticReport, MedicationRequest, MedicationDispense; in a Bundle also the AllergyIntolerance, Condition,
//! Procedure, Coverage, Account, RelatedPerson, Organization, Specimen, Schedule and Slot the
//! outbound side writes) and returns canonical events; errors name the element path
//! and tell 400 (not JSON, not FHIR) from 422 (valid FHIR, unusable), see [`FhirError`].
//! MedicationRequest and MedicationDispense are read and written in [`medication`].
//! Outbound: [`event_to_resources`] and [`transaction_bundle`] build resources with
//! deterministic ids (a [`stable_id`](crate::model::stable_id) of their source identifiers) and
//! conditional PUTs by identifier, so a replay updates instead of duplicating.
//!
//! Start with `to_model.rs` (inbound) and `from_model.rs` (outbound).

pub mod code_systems;
mod error;
mod from_model;
pub mod medication;
mod to_model;

pub use error::FhirError;
pub use from_model::{
    event_to_resources, render_bundle, resource_id, transaction_bundle, BundleOptions,
};
pub use to_model::{fhir_to_events, resource_to_events};

/// Identifier systems used when a canonical identifier carries no assigning authority.
pub mod systems {
    /// Medical record number.
    pub const MRN: &str = "urn:switchboard:mrn";
    /// Patient number.
    pub const PATIENT_NUMBER: &str = "urn:switchboard:patient-number";
    /// National id.
    pub const NATIONAL_ID: &str = "urn:switchboard:national-id";
    /// Passport number.
    pub const PASSPORT: &str = "urn:switchboard:passport";
    /// Account number.
    pub const ACCOUNT: &str = "urn:switchboard:account";
    /// Other patient identifiers.
    pub const OTHER: &str = "urn:switchboard:patient-id";
    /// Practitioner codes.
    pub const PRACTITIONER: &str = "urn:switchboard:practitioner";
    /// Practitioner licence numbers.
    pub const LICENCE: &str = "urn:switchboard:licence";
    /// Practitioner registration numbers.
    pub const REGISTRATION: &str = "urn:switchboard:registration";
    /// Location (clinic) codes.
    pub const LOCATION: &str = "urn:switchboard:location";
    /// Service codes (a charge description master's CDM-1).
    pub const SERVICE: &str = "urn:switchboard:service";
    /// Visit numbers.
    pub const VISIT: &str = "urn:switchboard:visit";
    /// Appointment placer ids.
    pub const APPOINTMENT_PLACER: &str = "urn:switchboard:appointment-placer";
    /// Appointment filler ids.
    pub const APPOINTMENT_FILLER: &str = "urn:switchboard:appointment-filler";
    /// Appointment ids on a remote (cloud) system.
    pub const APPOINTMENT_REMOTE: &str = "urn:switchboard:appointment-remote";
    /// Order placer numbers.
    pub const ORDER_PLACER: &str = "urn:switchboard:order-placer";
    /// Order filler numbers.
    pub const ORDER_FILLER: &str = "urn:switchboard:order-filler";
    /// Charge transaction ids.
    pub const CHARGE: &str = "urn:switchboard:charge";
    /// DICOM UIDs (ImagingStudy identifiers, `urn:oid:` values), as FHIR's ImagingStudy says.
    pub const DICOM_UID: &str = "urn:dicom:uid";
    /// DICOM modality codes (ImagingStudy modality, DICOM CID 29).
    pub const DICOM_DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
    /// HL7 identifier types (table 0203): `ACSN` for an accession number.
    pub const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";
    /// Extension: language of a HumanName (`valueCode`, e.g. `ar`).
    pub const EXT_NAME_LANGUAGE: &str = "urn:switchboard:fhir:name-language";
    /// Extension: marks the second-language name among a patient's names (`valueBoolean`).
    pub const EXT_SECOND_LANGUAGE_NAME: &str = "urn:switchboard:fhir:second-language-name";
    /// Extension: patient VIP flag (`valueBoolean`).
    pub const EXT_VIP: &str = "urn:switchboard:fhir:vip";
    /// Extension: blood type (`valueString`).
    pub const EXT_BLOOD_TYPE: &str = "urn:switchboard:fhir:blood-type";
    /// Extension: nationality (`valueCodeableConcept`).
    pub const EXT_NATIONALITY: &str = "urn:switchboard:fhir:nationality";
    /// Extension: payment outcome on ChargeItem (`valueCode` success/failure).
    pub const EXT_PAYMENT_RESULT: &str = "urn:switchboard:fhir:payment-result";
    /// Extension: payment reason on ChargeItem (`valueString`).
    pub const EXT_PAYMENT_REASON: &str = "urn:switchboard:fhir:payment-reason";
    /// Extension: payment reference on ChargeItem (`valueString`).
    pub const EXT_PAYMENT_REFERENCE: &str = "urn:switchboard:fhir:payment-reference";
    /// Extension: visit event on Encounter (`valueString` kind; period in a sibling).
    pub const EXT_VISIT_EVENT: &str = "urn:switchboard:fhir:visit-event";
}
