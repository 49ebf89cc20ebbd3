//! The canonical event: what happened, to whom, and which message said so.

use serde::{Deserialize, Serialize};

use super::{
    Appointment, Charge, Encounter, Identifier, ImagingStudy, Location, MedicationOrder, Order,
    Patient, Practitioner, ResultReport, Schedule, Service, Slot, Timestamp,
};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A new patient record (ADT^A04 register, ADT^A28 add person).
    PatientRegistered,
    /// Demographics changed (ADT^A08, ADT^A31).
    PatientUpdated,
    /// Two patient records became one (ADT^A18, A30, A34, A36, A39, A40); see [`Event::merge`].
    PatientMerged,
    /// Inpatient admission (ADT^A01).
    EncounterAdmitted,
    /// Pre-admission (ADT^A05).
    EncounterPreadmitted,
    /// Discharge / end of visit (ADT^A03).
    EncounterDischarged,
    /// An admission, visit or pre-admission was cancelled (ADT^A11, ADT^A38).
    EncounterCancelled,
    /// A discharge was cancelled (ADT^A13): the encounter is open again.
    EncounterDischargeCancelled,
    /// The patient moved to another location (ADT^A02); the encounter's location history has
    /// the prior location completed and the new one active.
    EncounterTransferred,
    /// A transfer was cancelled (ADT^A12): the patient is back at PV1-3.
    EncounterTransferCancelled,
    /// The patient class changed: outpatient to inpatient (ADT^A06) or back (ADT^A07).
    EncounterClassChanged,
    /// The patient left for another area without a transfer (ADT^A09, tracking).
    PatientDeparted,
    /// The patient arrived at a location without a transfer (ADT^A10, tracking).
    PatientArrived,
    /// A tracked arrival or departure was cancelled (ADT^A32, ADT^A33).
    PatientTrackingCancelled,
    /// An admission is planned (ADT^A14 pending admit).
    EncounterAdmitPending,
    /// A transfer is planned (ADT^A15 pending transfer); the pending location is planned in
    /// the location history.
    EncounterTransferPending,
    /// A discharge is planned (ADT^A16 pending discharge).
    EncounterDischargePending,
    /// A pending discharge, transfer or admission was cancelled (ADT^A25, A26, A27).
    EncounterPendingCancelled,
    /// Two patients swapped locations (ADT^A17); the second is [`Event::other_patient`].
    PatientsSwapped,
    /// A bed's status changed (ADT^A20, NPU): no patient, the location is the encounter's.
    BedStatusUpdated,
    /// The patient went on leave of absence (ADT^A21).
    LeaveOfAbsenceStarted,
    /// The patient returned from leave of absence (ADT^A22).
    LeaveOfAbsenceEnded,
    /// A leave of absence or the return from it was cancelled (ADT^A52, ADT^A53).
    LeaveOfAbsenceCancelled,
    /// A visit record was deleted (ADT^A23), e.g. entered in error.
    EncounterDeleted,
    /// A person record was deleted (ADT^A29).
    PatientDeleted,
    /// Two patient records were linked (ADT^A24); the second is [`Event::other_patient`].
    PatientsLinked,
    /// A link between two patient records was removed (ADT^A37).
    PatientsUnlinked,
    /// Two accounts of a patient became one (ADT^A35, ADT^A41); MRG-3 is the prior account.
    AccountMerged,
    /// Two visits became one (ADT^A42); MRG-5 is the prior visit.
    VisitMerged,
    /// An identifier, account or visit moved from one patient to another (ADT^A43, A44,
    /// A45); [`Event::merge`] names the source patient and what moved.
    RecordMoved,
    /// A patient, account or visit identifier was changed (ADT^A46-A51); [`Event::merge`]
    /// holds the prior value.
    IdentifierChanged,
    /// The attending doctor changed (ADT^A54).
    AttendingDoctorChanged,
    /// The consulting doctors changed (ADT^A61).
    ConsultingDoctorChanged,
    /// A change of attending or consulting doctor was cancelled (ADT^A55, ADT^A62).
    DoctorChangeCancelled,
    /// The patient's allergies changed (ADT^A60, IAM).
    AllergiesUpdated,
    /// New appointment (SIU^S12).
    AppointmentBooked,
    /// New time for an appointment (SIU^S13).
    AppointmentRescheduled,
    /// Other details changed (SIU^S14).
    AppointmentModified,
    /// Cancelled before it started (SIU^S15).
    AppointmentCancelled,
    /// Stopped after it started (SIU^S16).
    AppointmentDiscontinued,
    /// Removed from the schedule (SIU^S17).
    AppointmentDeleted,
    /// The patient did not come (SIU^S26).
    AppointmentNoShow,
    /// A service or resource was added to an appointment (SIU^S18).
    AppointmentResourceAdded,
    /// A service or resource of an appointment changed (SIU^S19).
    AppointmentResourceModified,
    /// A service or resource of an appointment was cancelled (SIU^S20).
    AppointmentResourceCancelled,
    /// A service or resource of an appointment was discontinued (SIU^S21).
    AppointmentResourceDiscontinued,
    /// A service or resource was removed from an appointment (SIU^S22).
    AppointmentResourceDeleted,
    /// Schedule time was blocked (SIU^S23): no patient, the appointment is the block.
    SlotBlocked,
    /// Blocked schedule time was opened again (SIU^S24).
    SlotOpened,
    /// New order (ORM^O01 / OML^O21, O33, O35 with ORC-1 `NW`, or `SN`).
    OrderPlaced,
    /// Order cancelled or discontinued (ORC-1 `CA`, `OC`, `CR`, `DC`, `OD`, `DR`).
    OrderCancelled,
    /// Order changed or its status changed (ORC-1 `XO`, `XX`, `SC`, `HD`, `RL`, …).
    OrderUpdated,
    /// Results for an order (ORU^R01), or point-of-care results (ORU^R30, R31, R32).
    ResultReported,
    /// Charges posted (DFT^P03 / DFT^P11).
    ChargePosted,
    /// Charges reversed (DFT whose every FT1 is a credit or a negative charge).
    ChargeReversed,
    /// A location (clinic, ward, room) was added to the location master (MFN^M05 `MAD`).
    LocationCreated,
    /// A location's master record changed or was reactivated (MFN^M05 `MUP`, `MAC`).
    LocationUpdated,
    /// A location was deactivated: kept, but no longer in use (MFN^M05 `MDC`).
    LocationDeactivated,
    /// A location was removed from the location master (MFN^M05 `MDL`).
    LocationDeleted,
    /// A practitioner was added to the staff master (MFN^M02 `MAD`).
    PractitionerCreated,
    /// A practitioner's master record changed or was reactivated (MFN^M02 `MUP`, `MAC`).
    PractitionerUpdated,
    /// A practitioner was deactivated (MFN^M02 `MDC`).
    PractitionerDeactivated,
    /// A practitioner was removed from the staff master (MFN^M02 `MDL`).
    PractitionerDeleted,
    /// A service was added to the charge description master (MFN^M04 `MAD`).
    ServiceCreated,
    /// A service's master record changed or was reactivated (MFN^M04 `MUP`, `MAC`).
    ServiceUpdated,
    /// A service was deactivated (MFN^M04 `MDC`).
    ServiceDeactivated,
    /// A service was removed from the charge description master (MFN^M04 `MDL`).
    ServiceDeleted,
    /// An imaging study was received in full by a DICOM storage source (no new instance for
    /// its quiet period): [`Event::imaging_study`] says what it holds.
    StudyAvailable,
    /// A new medication order (RDE^O11/O25 with ORC-1 `NW` or `SN`; a FHIR MedicationRequest
    /// posted or active).
    MedicationOrderCreated,
    /// A medication order changed, was renewed or its status changed (ORC-1 `XO`, `XX`,
    /// `RF`, `HD`, `RL`, `SC`, …).
    MedicationOrderUpdated,
    /// A medication order was cancelled or discontinued (ORC-1 `CA`, `OC`, `CR`, `DC`, `OD`,
    /// `DR`; a MedicationRequest `cancelled`, `stopped` or `entered-in-error`).
    MedicationOrderCancelled,
    /// Medication was dispensed for an order (RDS^O13; a FHIR MedicationDispense).
    MedicationDispensed,
    /// A schedule (a practitioner's, location's or resource's availability) was created or
    /// changed (FHIR Schedule, active or unsaid): [`Event::schedule`].
    ScheduleUpdated,
    /// A schedule was taken out of use (FHIR Schedule with `active` false).
    ScheduleDeactivated,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 74] = [
        EventKind::PatientRegistered,
        EventKind::PatientUpdated,
        EventKind::PatientMerged,
        EventKind::EncounterAdmitted,
        EventKind::EncounterPreadmitted,
        EventKind::EncounterDischarged,
        EventKind::EncounterCancelled,
        EventKind::EncounterDischargeCancelled,
        EventKind::EncounterTransferred,
        EventKind::EncounterTransferCancelled,
        EventKind::EncounterClassChanged,
        EventKind::PatientDeparted,
        EventKind::PatientArrived,
        EventKind::PatientTrackingCancelled,
        EventKind::EncounterAdmitPending,
        EventKind::EncounterTransferPending,
        EventKind::EncounterDischargePending,
        EventKind::EncounterPendingCancelled,
        EventKind::PatientsSwapped,
        EventKind::BedStatusUpdated,
        EventKind::LeaveOfAbsenceStarted,
        EventKind::LeaveOfAbsenceEnded,
        EventKind::LeaveOfAbsenceCancelled,
        EventKind::EncounterDeleted,
        EventKind::PatientDeleted,
        EventKind::PatientsLinked,
        EventKind::PatientsUnlinked,
        EventKind::AccountMerged,
        EventKind::VisitMerged,
        EventKind::RecordMoved,
        EventKind::IdentifierChanged,
        EventKind::AttendingDoctorChanged,
        EventKind::ConsultingDoctorChanged,
        EventKind::DoctorChangeCancelled,
        EventKind::AllergiesUpdated,
        EventKind::AppointmentBooked,
        EventKind::AppointmentRescheduled,
        EventKind::AppointmentModified,
        EventKind::AppointmentCancelled,
        EventKind::AppointmentDiscontinued,
        EventKind::AppointmentDeleted,
        EventKind::AppointmentNoShow,
        EventKind::AppointmentResourceAdded,
        EventKind::AppointmentResourceModified,
        EventKind::AppointmentResourceCancelled,
        EventKind::AppointmentResourceDiscontinued,
        EventKind::AppointmentResourceDeleted,
        EventKind::SlotBlocked,
        EventKind::SlotOpened,
        EventKind::OrderPlaced,
        EventKind::OrderCancelled,
        EventKind::OrderUpdated,
        EventKind::ResultReported,
        EventKind::ChargePosted,
        EventKind::ChargeReversed,
        EventKind::LocationCreated,
        EventKind::LocationUpdated,
        EventKind::LocationDeactivated,
        EventKind::LocationDeleted,
        EventKind::PractitionerCreated,
        EventKind::PractitionerUpdated,
        EventKind::PractitionerDeactivated,
        EventKind::PractitionerDeleted,
        EventKind::ServiceCreated,
        EventKind::ServiceUpdated,
        EventKind::ServiceDeactivated,
        EventKind::ServiceDeleted,
        EventKind::StudyAvailable,
        EventKind::MedicationOrderCreated,
        EventKind::MedicationOrderUpdated,
        EventKind::MedicationOrderCancelled,
        EventKind::MedicationDispensed,
        EventKind::ScheduleUpdated,
        EventKind::ScheduleDeactivated,
    ];

    /// True for master-data and schedule changes (locations, practitioners, services,
    /// schedules): what other messages reference, delivered ahead of them.
    pub const fn is_master_data(self) -> bool {
        matches!(
            self,
            EventKind::LocationCreated
                | EventKind::LocationUpdated
                | EventKind::LocationDeactivated
                | EventKind::LocationDeleted
                | EventKind::PractitionerCreated
                | EventKind::PractitionerUpdated
                | EventKind::PractitionerDeactivated
                | EventKind::PractitionerDeleted
                | EventKind::ServiceCreated
                | EventKind::ServiceUpdated
                | EventKind::ServiceDeactivated
                | EventKind::ServiceDeleted
                | EventKind::ScheduleUpdated
                | EventKind::ScheduleDeactivated
        )
    }

    /// The snake_case name of the kind: its JSON form, and part of [`Event::id`].
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::PatientRegistered => "patient_registered",
            EventKind::PatientUpdated => "patient_updated",
            EventKind::PatientMerged => "patient_merged",
            EventKind::EncounterAdmitted => "encounter_admitted",
            EventKind::EncounterPreadmitted => "encounter_preadmitted",
            EventKind::EncounterDischarged => "encounter_discharged",
            EventKind::EncounterCancelled => "encounter_cancelled",
            EventKind::EncounterDischargeCancelled => "encounter_discharge_cancelled",
            EventKind::EncounterTransferred => "encounter_transferred",
            EventKind::EncounterTransferCancelled => "encounter_transfer_cancelled",
            EventKind::EncounterClassChanged => "encounter_class_changed",
            EventKind::PatientDeparted => "patient_departed",
            EventKind::PatientArrived => "patient_arrived",
            EventKind::PatientTrackingCancelled => "patient_tracking_cancelled",
            EventKind::EncounterAdmitPending => "encounter_admit_pending",
            EventKind::EncounterTransferPending => "encounter_transfer_pending",
            EventKind::EncounterDischargePending => "encounter_discharge_pending",
            EventKind::EncounterPendingCancelled => "encounter_pending_cancelled",
            EventKind::PatientsSwapped => "patients_swapped",
            EventKind::BedStatusUpdated => "bed_status_updated",
            EventKind::LeaveOfAbsenceStarted => "leave_of_absence_started",
            EventKind::LeaveOfAbsenceEnded => "leave_of_absence_ended",
            EventKind::LeaveOfAbsenceCancelled => "leave_of_absence_cancelled",
            EventKind::EncounterDeleted => "encounter_deleted",
            EventKind::PatientDeleted => "patient_deleted",
            EventKind::PatientsLinked => "patients_linked",
            EventKind::PatientsUnlinked => "patients_unlinked",
            EventKind::AccountMerged => "account_merged",
            EventKind::VisitMerged => "visit_merged",
            EventKind::RecordMoved => "record_moved",
            EventKind::IdentifierChanged => "identifier_changed",
            EventKind::AttendingDoctorChanged => "attending_doctor_changed",
            EventKind::ConsultingDoctorChanged => "consulting_doctor_changed",
            EventKind::DoctorChangeCancelled => "doctor_change_cancelled",
            EventKind::AllergiesUpdated => "allergies_updated",
            EventKind::AppointmentBooked => "appointment_booked",
            EventKind::AppointmentRescheduled => "appointment_rescheduled",
            EventKind::AppointmentModified => "appointment_modified",
            EventKind::AppointmentCancelled => "appointment_cancelled",
            EventKind::AppointmentDiscontinued => "appointment_discontinued",
            EventKind::AppointmentDeleted => "appointment_deleted",
            EventKind::AppointmentNoShow => "appointment_no_show",
            EventKind::AppointmentResourceAdded => "appointment_resource_added",
            EventKind::AppointmentResourceModified => "appointment_resource_modified",
            EventKind::AppointmentResourceCancelled => "appointment_resource_cancelled",
            EventKind::AppointmentResourceDiscontinued => "appointment_resource_discontinued",
            EventKind::AppointmentResourceDeleted => "appointment_resource_deleted",
            EventKind::SlotBlocked => "slot_blocked",
            EventKind::SlotOpened => "slot_opened",
            EventKind::OrderPlaced => "order_placed",
            EventKind::OrderCancelled => "order_cancelled",
            EventKind::OrderUpdated => "order_updated",
            EventKind::ResultReported => "result_reported",
            EventKind::ChargePosted => "charge_posted",
            EventKind::ChargeReversed => "charge_reversed",
            EventKind::LocationCreated => "location_created",
            EventKind::LocationUpdated => "location_updated",
            EventKind::LocationDeactivated => "location_deactivated",
            EventKind::LocationDeleted => "location_deleted",
            EventKind::PractitionerCreated => "practitioner_created",
            EventKind::PractitionerUpdated => "practitioner_updated",
            EventKind::PractitionerDeactivated => "practitioner_deactivated",
            EventKind::PractitionerDeleted => "practitioner_deleted",
            EventKind::ServiceCreated => "service_created",
            EventKind::ServiceUpdated => "service_updated",
            EventKind::ServiceDeactivated => "service_deactivated",
            EventKind::ServiceDeleted => "service_deleted",
            EventKind::StudyAvailable => "study_available",
            EventKind::MedicationOrderCreated => "medication_order_created",
            EventKind::MedicationOrderUpdated => "medication_order_updated",
            EventKind::MedicationOrderCancelled => "medication_order_cancelled",
            EventKind::MedicationDispensed => "medication_dispensed",
            EventKind::ScheduleUpdated => "schedule_updated",
            EventKind::ScheduleDeactivated => "schedule_deactivated",
        }
    }
}

/// Where an event came from: the message header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Format of the source message: `hl7v2`, `fhir`, `webhook`.
    pub format: String,
    /// Message type with trigger, e.g. `ADT^A04` (MSH-9.1^MSH-9.2).
    pub message_type: String,
    /// Message control id (MSH-10).
    pub control_id: String,
    /// HL7 version (MSH-12), e.g. `2.5.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Sending application (MSH-3.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sending_application: Option<String>,
    /// Sending facility (MSH-4.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sending_facility: Option<String>,
    /// Receiving application (MSH-5.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_application: Option<String>,
    /// Receiving facility (MSH-6.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_facility: Option<String>,
    /// When the message was created (MSH-7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_time: Option<Timestamp>,
    /// When the event happened (EVN-6 occurred, else EVN-2 recorded, else MSH-7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<Timestamp>,
}

/// The record that disappeared in a merge (HL7 MRG).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergedPatient {
    /// Prior patient identifiers (MRG-1, MRG-2 alternate id, MRG-4 prior patient id).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifiers: Vec<Identifier>,
    /// Prior account number (MRG-3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Prior visit number (MRG-5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visit_number: Option<String>,
}

/// One more PID/MRG pair of a merge: an ADT^A40 may merge several patients at once (its
/// patient group repeats). The first pair is [`Event::patient`] and [`Event::merge`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientMerge {
    /// The surviving patient (the pair's PID).
    pub patient: Patient,
    /// The record merged into it (the pair's MRG).
    pub merged: MergedPatient,
}

/// The second patient of a two-patient event (swap, link, unlink) and their visit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedPatient {
    /// The patient (the second PID of the message).
    pub patient: Patient,
    /// Their visit (the PV1 after that PID), when sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter: Option<Encounter>,
}

/// A canonical event.
///
/// JSON form: `{"id": "…32 hex…", "kind": "patient_registered", "source": {...},
/// "patient": {...}, "encounter": {...}}`; entity fields that do not apply are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Deterministic id: [`super::stable_id`] of the source format, sending application and
    /// facility, control id and kind; a resend of the same message gets the same id.
    pub id: String,
    /// What happened.
    pub kind: EventKind,
    /// The message that said so.
    pub source: Source,
    /// The patient concerned (the surviving record for a merge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<Patient>,
    /// The record merged away (ADT^A40).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<MergedPatient>,
    /// The further pairs of a merge of several patients (ADT^A40 with more than one PID/MRG
    /// pair), in message order. The event is one message, so it stays one event: the
    /// partition key is the first pair's patient, and every pair's identifiers are business
    /// keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_merges: Vec<PatientMerge>,
    /// The visit concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter: Option<Encounter>,
    /// The second patient of a swap (ADT^A17) or of a link or unlink (ADT^A24, ADT^A37),
    /// with their visit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_patient: Option<Box<LinkedPatient>>,
    /// The appointment concerned (SIU, or a scheduled order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appointment: Option<Appointment>,
    /// Orders concerned, in message order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orders: Vec<Order>,
    /// Result reports, in message order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<ResultReport>,
    /// Charges, in message order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub charges: Vec<Charge>,
    /// Every practitioner the event references, deduplicated, so destinations that need them
    /// upserted first (OpsPort doctors) find them in one place. For a practitioner master
    /// event (`practitioner_*`), the one practitioner the record describes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub practitioners: Vec<Practitioner>,
    /// The location a location master event (`location_*`) describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// The service a service master event (`service_*`) describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Service>,
    /// The imaging study of a `study_available` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imaging_study: Option<ImagingStudy>,
    /// Medication orders of a `medication_*` event, in message order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub medication_orders: Vec<MedicationOrder>,
    /// The schedule a schedule event (`schedule_*`) describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// The schedule time the event changed, in message order: the block of a `slot_*`
    /// event, the time each resource of an `appointment_resource_*` event was booked for or
    /// given back, a FHIR Slot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<Slot>,
}

/// Which business identifier a [`BusinessKey`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusinessKeyKind {
    /// A patient identifier (any kind; also the prior ids of a merge).
    PatientId,
    /// A visit number.
    VisitNumber,
    /// An appointment id (placer, filler or remote).
    AppointmentId,
    /// An order number (placer or filler).
    OrderNumber,
    /// One word of the patient's name, in lower case: not an identifier, and never produced
    /// by [`Event::business_keys`]; the engine indexes a message's patient name under it so
    /// an operator can search by name.
    PatientName,
}

/// A business identifier under which the engine indexes the message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BusinessKey {
    /// What kind of identifier.
    pub kind: BusinessKeyKind,
    /// The identifier as sent.
    pub value: String,
}

impl Event {
    /// An event with nothing attached yet: every entity empty.
    #[inline]
    pub fn empty(id: String, kind: EventKind, source: Source) -> Event {
        Event {
            id,
            kind,
            source,
            patient: None,
            merge: None,
            additional_merges: Vec::new(),
            encounter: None,
            other_patient: None,
            appointment: None,
            orders: Vec::new(),
            results: Vec::new(),
            charges: Vec::new(),
            practitioners: Vec::new(),
            location: None,
            service: None,
            imaging_study: None,
            medication_orders: Vec::new(),
            schedule: None,
            slots: Vec::new(),
        }
    }

    /// The key of the per-patient FIFO: the value of the patient's primary identifier (see
    /// [`Patient::primary_identifier`]), or of the appointment's patient identifier when the
    /// event has no patient. `None` when no patient is known.
    pub fn partition_key(&self) -> Option<String> {
        self.patient
            .as_ref()
            .and_then(Patient::primary_identifier)
            .or_else(|| self.appointment.as_ref().and_then(|a| a.patient.as_ref()))
            .map(|id| id.value.clone())
    }

    /// Every business identifier in the event, deduplicated and sorted: patient identifiers
    /// (including those merged away), visit numbers, appointment ids and order numbers.
    pub fn business_keys(&self) -> Vec<BusinessKey> {
        let mut keys = Vec::new();
        let mut push = |kind, value: Option<&String>| {
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                keys.push(BusinessKey {
                    kind,
                    value: v.clone(),
                });
            }
        };
        if let Some(p) = &self.patient {
            for id in &p.identifiers {
                push(BusinessKeyKind::PatientId, Some(&id.value));
            }
        }
        if let Some(m) = &self.merge {
            for id in &m.identifiers {
                push(BusinessKeyKind::PatientId, Some(&id.value));
            }
            push(BusinessKeyKind::VisitNumber, m.visit_number.as_ref());
        }
        for pair in &self.additional_merges {
            let ids = pair
                .patient
                .identifiers
                .iter()
                .chain(&pair.merged.identifiers);
            for id in ids {
                push(BusinessKeyKind::PatientId, Some(&id.value));
            }
            push(
                BusinessKeyKind::VisitNumber,
                pair.merged.visit_number.as_ref(),
            );
        }
        if let Some(e) = &self.encounter {
            push(BusinessKeyKind::VisitNumber, e.visit_number.as_ref());
        }
        if let Some(other) = &self.other_patient {
            for id in &other.patient.identifiers {
                push(BusinessKeyKind::PatientId, Some(&id.value));
            }
            if let Some(e) = &other.encounter {
                push(BusinessKeyKind::VisitNumber, e.visit_number.as_ref());
            }
        }
        if let Some(a) = &self.appointment {
            push(
                BusinessKeyKind::PatientId,
                a.patient.as_ref().map(|i| &i.value),
            );
            push(BusinessKeyKind::AppointmentId, a.placer_id.as_ref());
            push(BusinessKeyKind::AppointmentId, a.filler_id.as_ref());
            push(BusinessKeyKind::AppointmentId, a.remote_id.as_ref());
        }
        let result_orders = self.results.iter().map(|r| &r.order);
        for o in self.orders.iter().chain(result_orders) {
            push(BusinessKeyKind::OrderNumber, o.placer_number.as_ref());
            push(BusinessKeyKind::OrderNumber, o.filler_number.as_ref());
        }
        for c in &self.charges {
            push(BusinessKeyKind::VisitNumber, c.visit_number.as_ref());
        }
        for m in &self.medication_orders {
            push(BusinessKeyKind::OrderNumber, m.placer_number.as_ref());
            push(BusinessKeyKind::OrderNumber, m.filler_number.as_ref());
        }
        if let Some(s) = &self.imaging_study {
            // The accession number is the order's (filler) number.
            push(BusinessKeyKind::OrderNumber, s.accession_number.as_ref());
        }
        keys.sort();
        keys.dedup();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IdentifierKind;

    fn id(value: &str, kind: IdentifierKind) -> Identifier {
        Identifier {
            value: value.into(),
            kind,
            type_code: None,
            assigning_authority: None,
        }
    }

    #[test]
    fn kind_names_are_the_json_form_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for kind in EventKind::ALL {
            let json = serde_json::to_value(kind).expect("serialises");
            assert_eq!(json.as_str(), Some(kind.as_str()), "{kind:?}");
            let back: EventKind = serde_json::from_value(json).expect("parses");
            assert_eq!(back, kind);
            assert!(seen.insert(kind.as_str()), "{kind:?} twice");
        }
    }

    fn event(patient: Option<Patient>) -> Event {
        Event {
            patient,
            ..Event::empty("x".into(), EventKind::PatientUpdated, Source::default())
        }
    }

    #[test]
    fn partition_key_prefers_mrn_over_earlier_national_id() {
        let p = Patient {
            identifiers: vec![
                id("1048291048", IdentifierKind::NationalId),
                id("P-10928", IdentifierKind::Mrn),
            ],
            ..Patient::default()
        };
        assert_eq!(event(Some(p)).partition_key().as_deref(), Some("P-10928"));
        assert_eq!(event(None).partition_key(), None);
    }

    #[test]
    fn business_keys_cover_merge_and_visit() {
        let mut e = event(Some(Patient {
            identifiers: vec![id("MRN1", IdentifierKind::Mrn)],
            ..Patient::default()
        }));
        e.merge = Some(MergedPatient {
            identifiers: vec![id("MRN0", IdentifierKind::Mrn)],
            ..MergedPatient::default()
        });
        e.encounter = Some(Encounter {
            visit_number: Some("V9".into()),
            ..Encounter::default()
        });
        let keys = e.business_keys();
        let values: Vec<_> = keys.iter().map(|k| (k.kind, k.value.as_str())).collect();
        assert_eq!(
            values,
            vec![
                (BusinessKeyKind::PatientId, "MRN0"),
                (BusinessKeyKind::PatientId, "MRN1"),
                (BusinessKeyKind::VisitNumber, "V9"),
            ]
        );
    }
}
