//! Orders (ORM/OML, FHIR ServiceRequest) and results (ORU, FHIR Observation/DiagnosticReport).

use serde::{Deserialize, Serialize};

use super::{Coded, Decimal, Practitioner, Role, Timestamp};

/// Priority of an order (TQ1-9 / TQ-6 / OBR-5, HL7 table 0485 / 0027).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// `S` stat.
    Stat,
    /// `A` as soon as possible.
    Asap,
    /// `R` routine.
    Routine,
    /// `P` pre-operative.
    Preop,
    /// `C` callback.
    Callback,
    /// `T` timing critical.
    TimingCritical,
    /// `PRN` as needed.
    AsNeeded,
}

/// Status of an order (ORC-5 order status, HL7 table 0038, or implied by ORC-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// New order, not yet started (ORC-1 `NW`, ORC-5 empty).
    Placed,
    /// Scheduled (`SC`).
    Scheduled,
    /// In process (`IP`), or some results available (`A`).
    InProgress,
    /// Completed (`CM`).
    Completed,
    /// On hold (`HD`).
    OnHold,
    /// Cancelled (`CA`, ORC-1 `CA`/`OC`/`CR`).
    Cancelled,
    /// Discontinued (`DC`, ORC-1 `DC`/`OD`).
    Discontinued,
    /// Replaced (`RP`).
    Replaced,
    /// Error (`ER`).
    Error,
}

/// An order for a procedure or test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Placer order number (ORC-2, else OBR-2; EI-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placer_number: Option<String>,
    /// Filler order number (ORC-3, else OBR-3; EI-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filler_number: Option<String>,
    /// Placer group number (ORC-4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_number: Option<String>,
    /// The order control code as sent (ORC-1), e.g. `NW`, `CA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
    /// What is ordered (OBR-4 universal service id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub procedure: Option<Coded>,
    /// Priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Status after this event.
    pub status: OrderStatus,
    /// When the order was placed (ORC-9 transaction time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordered_at: Option<Timestamp>,
    /// Requested start (TQ1-7, else ORC-7 TQ-4, else OBR-27 TQ-4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_start: Option<Timestamp>,
    /// Ordering provider (ORC-12, else OBR-16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_provider: Option<Practitioner>,
    /// Reason / diagnosis for the order (OBR-31 first repetition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Coded>,
    /// Free-text notes (NTE-3 after the order, joined with newlines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// The specimens of the order (SPM of its order group), in message order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub specimens: Vec<Specimen>,
    /// The roles of the order group (ROL after its ORC or OBR), in message order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
    /// For an imaging order: what a DICOM modality worklist needs (IPC of OMI^O23, OBR-24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imaging: Option<ImagingOrder>,
}

/// The imaging details of an order (HL7 IPC, OBR-24): what a modality worklist item needs
/// beyond the order itself. Absent values are left for the worklist to derive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImagingOrder {
    /// Accession number (IPC-1, EI-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accession_number: Option<String>,
    /// Requested procedure id (IPC-2, EI-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_procedure_id: Option<String>,
    /// Study instance UID (IPC-3, EI-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study_instance_uid: Option<String>,
    /// Scheduled procedure step id (IPC-4, EI-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
    /// DICOM modality (IPC-5, CWE-1; else OBR-24 when it is a DICOM modality code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modality: Option<String>,
    /// Scheduled station AE title (IPC-9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub station_ae_title: Option<String>,
}

/// A specimen taken for an order or reported with a result (HL7 SPM; FHIR Specimen).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Specimen {
    /// The placer's specimen id (SPM-2.1, EIP placer assigned identifier, EI-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placer_id: Option<String>,
    /// The filler's specimen id (SPM-2.2, EIP filler assigned identifier, EI-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filler_id: Option<String>,
    /// What kind of specimen (SPM-4, table 0487: `SER` serum, `BLD` whole blood, `UR` urine…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specimen_type: Option<Coded>,
    /// Where on the body it was taken (SPM-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_site: Option<Coded>,
    /// When it was collected, or the start of the collection (SPM-17.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collected_at: Option<Timestamp>,
    /// The end of the collection, for a collection over a period (SPM-17.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection_end: Option<Timestamp>,
    /// When the lab received it (SPM-18).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<Timestamp>,
}

/// Status of a result (OBR-25, HL7 table 0123; OBX-11, table 0085).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    /// No result yet: OBR-25 `O`, `I`, `S`; OBX-11 `I`, `O`.
    Registered,
    /// Preliminary or partial: OBR-25 `P`, `A`, `R`; OBX-11 `P`, `R`, `S`.
    Preliminary,
    /// Final: `F`; OBX-11 `U` (changed to final without retransmitting the value).
    Final,
    /// Corrected or amended after final: `C`; OBR-25 `M`.
    Corrected,
    /// Cancelled or not obtained: `X`; OBX-11 `D` (deleted) and `N` (not asked).
    Cancelled,
    /// OBX-11 `W`: posted to the wrong patient.
    EnteredInError,
}

/// One observation (HL7 OBX).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// What was observed (OBX-3).
    pub code: Coded,
    /// Observation sub-id (OBX-4), distinguishes repeated codes in one report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_id: Option<String>,
    /// HL7 value type (OBX-2), e.g. `NM`, `ST`, `CWE`, `TX`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_type: Option<String>,
    /// The value as text (OBX-5; repetitions joined with newlines). For coded values, the text
    /// (or code) of the coded value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The value as an exact number when OBX-2 is `NM` and OBX-5 parses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numeric_value: Option<Decimal>,
    /// The value as a code when OBX-2 is `CE`/`CWE`/`CNE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coded_value: Option<Coded>,
    /// The value as an attachment when OBX-2 is `ED` (encapsulated data) or `RP` (reference
    /// pointer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Attachment>,
    /// Units (OBX-6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<Coded>,
    /// Reference range as sent (OBX-7), e.g. `3.5-5.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_range: Option<String>,
    /// Abnormal flags (OBX-8, table 0078), e.g. `H`, `LL`, `A`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub abnormal_flags: Vec<String>,
    /// Result status (OBX-11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ResultStatus>,
    /// When observed (OBX-14).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Timestamp>,
    /// Free-text comments (NTE-3 after the OBX, joined with newlines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// Data an observation carries or points at (HL7 ED, RP; FHIR Attachment).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// MIME type from the type of data and its subtype (ED-2/ED-3, RP-3/RP-4), e.g.
    /// `application/pdf`, when they tell one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The data, base64 (ED-5 when ED-4 is `Base64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Where the data is (RP-1 pointer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A result report: one OBR with its observations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultReport {
    /// The order this answers (ORC/OBR numbers and procedure).
    pub order: Order,
    /// Report status (OBR-25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ResultStatus>,
    /// Specimen collection / observation time (OBR-7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Timestamp>,
    /// When the result was reported or last changed (OBR-22).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_at: Option<Timestamp>,
    /// Diagnostic service section (OBR-24), e.g. `HM`, `CH`, `RAD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
    /// The observations, in message order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub observations: Vec<Observation>,
}
