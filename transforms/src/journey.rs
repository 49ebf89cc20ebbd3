//! The patient journey of one visit: what happened during the visit, step by step, built from
//! standard HL7 v2 events (and the site-specific `ZVT` steps where a site sends them).
//!
//! The engine keeps, per visit ([`visit_key`]: PV1-19 visit number, else the PID-18 account),
//! one [`JourneyDelta`] per message in its store, and folds them into a [`Timeline`] with
//! [`Timeline::apply`]. [`delta_of`] is what one event adds: registration, admission or
//! pre-admission (A04/A01/A05), the chief complaint (PV2-3), consultations (the first
//! attending doctor, then each change: PV1-7, A54), transfers (A02), orders and results by
//! department (ORM/OML/ORU: lab, radiology, other), prescriptions (RDE) and their dispenses
//! (RDS), charges (DFT), the discharge (A03), their cancels (A11, A12, A13, A55, order and
//! prescription cancels, charge reversals) and each `ZVT` step.
//!
//! What PX360 shows of the timeline (its visit types) is decided in `dest::px360`; this
//! module is about the facts. It does no IO: the caller passes the timeline read from its
//! store.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Event, EventKind, MedicationOrder, Order, ResultReport, Timestamp};

/// What kind of step of a visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Outpatient registration (A04).
    Registration,
    /// Admission (A01).
    Admission,
    /// Pre-admission (A05).
    Preadmission,
    /// The chief complaint recorded for the visit (PV2-3 admit reason).
    ChiefComplaint,
    /// The first attending doctor of the visit (PV1-7).
    Consultation,
    /// A later attending doctor (a PV1-7 change, A54).
    DoctorVisit,
    /// A transfer (A02).
    Transfer,
    /// A laboratory order (ORM/OML).
    LabOrder,
    /// A laboratory result (ORU).
    LabResult,
    /// A radiology order.
    RadiologyOrder,
    /// A radiology result.
    RadiologyResult,
    /// An order of another department.
    Order,
    /// A result of another department.
    Result,
    /// A prescription: a medication order (RDE, FHIR MedicationRequest).
    Prescription,
    /// A dispense of a prescription (RDS, FHIR MedicationDispense).
    Dispense,
    /// A charge (DFT FT1).
    Charge,
    /// The discharge (A03).
    Discharge,
    /// A step the site sends in a `ZVT` segment; its key is derived from its text.
    Site,
}

impl StepKind {
    /// Every kind but [`StepKind::Site`], in the order of the docs.
    pub const STANDARD: [StepKind; 17] = [
        StepKind::Registration,
        StepKind::Admission,
        StepKind::Preadmission,
        StepKind::ChiefComplaint,
        StepKind::Consultation,
        StepKind::DoctorVisit,
        StepKind::Transfer,
        StepKind::LabOrder,
        StepKind::LabResult,
        StepKind::RadiologyOrder,
        StepKind::RadiologyResult,
        StepKind::Order,
        StepKind::Result,
        StepKind::Prescription,
        StepKind::Dispense,
        StepKind::Charge,
        StepKind::Discharge,
    ];

    /// The snake_case name, the key of the visit type table.
    pub const fn as_str(self) -> &'static str {
        match self {
            StepKind::Registration => "registration",
            StepKind::Admission => "admission",
            StepKind::Preadmission => "preadmission",
            StepKind::ChiefComplaint => "chief_complaint",
            StepKind::Consultation => "consultation",
            StepKind::DoctorVisit => "doctor_visit",
            StepKind::Transfer => "transfer",
            StepKind::LabOrder => "lab_order",
            StepKind::LabResult => "lab_result",
            StepKind::RadiologyOrder => "radiology_order",
            StepKind::RadiologyResult => "radiology_result",
            StepKind::Order => "order",
            StepKind::Result => "result",
            StepKind::Prescription => "prescription",
            StepKind::Dispense => "dispense",
            StepKind::Charge => "charge",
            StepKind::Discharge => "discharge",
            StepKind::Site => "site",
        }
    }
}

/// One step of a visit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JourneyStep {
    /// What kind of step.
    pub kind: StepKind,
    /// When it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Timestamp>,
    /// The HIS's own text for it: the ZVT-2 text, the order's or charge's name, the chief
    /// complaint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// What a later cancel names: the order number, the charge's transaction id, the doctor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Cancelled by a later message (A11, A12, A13, A55, an order cancel, a reversal).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
}

impl JourneyStep {
    fn new(kind: StepKind, time: Option<Timestamp>) -> Self {
        JourneyStep {
            kind,
            time,
            text: None,
            reference: None,
            cancelled: false,
        }
    }

    fn text(mut self, text: Option<&str>) -> Self {
        self.text = text.filter(|t| !t.trim().is_empty()).map(str::to_owned);
        self
    }

    fn reference(mut self, reference: Option<&str>) -> Self {
        self.reference = reference.filter(|r| !r.is_empty()).map(str::to_owned);
        self
    }

    /// The key of the visit type table: the kind's name, or for a site step its text in
    /// snake_case (`Prescribed Drugs` -> `prescribed_drugs`, as `ZVT` steps always were).
    pub fn table_key(&self) -> String {
        match self.kind {
            StepKind::Site => snake(self.text.as_deref().unwrap_or_default()),
            other => other.as_str().to_owned(),
        }
    }

    /// The same fact (a resend, an A08 repeating its ZVT segments): kind, time, text and
    /// reference equal.
    fn same_as(&self, other: &JourneyStep) -> bool {
        self.kind == other.kind
            && self.time == other.time
            && self.text == other.text
            && self.reference == other.reference
    }
}

/// `Prescribed Drugs` -> `prescribed_drugs`.
pub fn snake(text: &str) -> String {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join("_")
}

/// A cancel: the latest step of `kind` not yet cancelled (with `reference`, when given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {
    /// The kind of step cancelled.
    pub kind: StepKind,
    /// Only a step with this reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// What one message adds to its visit's timeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JourneyDelta {
    /// New steps, in the order they happened.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<JourneyStep>,
    /// Steps this message cancels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cancels: Vec<Cancel>,
}

impl JourneyDelta {
    /// Nothing to add or cancel.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.cancels.is_empty()
    }
}

/// A visit's timeline so far: every step in the order it was learnt, cancelled ones marked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// The steps, in the order the messages brought them.
    pub steps: Vec<JourneyStep>,
}

impl Timeline {
    /// Folds the deltas of a visit, in message order.
    pub fn from_deltas<'a>(deltas: impl IntoIterator<Item = &'a JourneyDelta>) -> Timeline {
        let mut t = Timeline::default();
        for d in deltas {
            t.apply(d);
        }
        t
    }

    /// Adds a delta: its cancels first (they name steps of earlier messages), then each new
    /// step that is not already there.
    pub fn apply(&mut self, delta: &JourneyDelta) {
        for c in &delta.cancels {
            let hit = self.steps.iter_mut().rev().find(|s| {
                s.kind == c.kind
                    && !s.cancelled
                    && c.reference
                        .as_deref()
                        .is_none_or(|r| s.reference.as_deref() == Some(r))
            });
            if let Some(step) = hit {
                step.cancelled = true;
            }
        }
        for step in &delta.steps {
            if !self.has(step) {
                self.steps.push(step.clone());
            }
        }
    }

    fn has(&self, step: &JourneyStep) -> bool {
        self.steps.iter().any(|s| !s.cancelled && s.same_as(step))
    }

    /// The steps in effect (not cancelled).
    pub fn active(&self) -> impl Iterator<Item = &JourneyStep> {
        self.steps.iter().filter(|s| !s.cancelled)
    }

    fn latest(&self, kind: StepKind) -> Option<&JourneyStep> {
        self.active().filter(|s| s.kind == kind).last()
    }

    /// The discharge in effect: the visit is closed until an A13 cancels it.
    pub fn discharged_at(&self) -> Option<Timestamp> {
        self.latest(StepKind::Discharge).and_then(|s| s.time)
    }

    /// Whether the visit is discharged (a discharge step in effect, with or without a time).
    pub fn is_discharged(&self) -> bool {
        self.latest(StepKind::Discharge).is_some()
    }

    /// Whether a discharge of the visit was cancelled (A13) and none is in effect.
    pub fn discharge_cancelled(&self) -> bool {
        !self.is_discharged()
            && self
                .steps
                .iter()
                .any(|s| s.kind == StepKind::Discharge && s.cancelled)
    }

    /// When the visit began: its admission, registration or pre-admission in effect.
    pub fn admitted_at(&self) -> Option<Timestamp> {
        self.active()
            .filter(|s| {
                matches!(
                    s.kind,
                    StepKind::Admission | StepKind::Registration | StepKind::Preadmission
                )
            })
            .find_map(|s| s.time)
    }

    /// The attending doctor the timeline last saw.
    fn attending(&self) -> Option<&str> {
        self.active()
            .filter(|s| matches!(s.kind, StepKind::Consultation | StepKind::DoctorVisit))
            .last()
            .and_then(|s| s.reference.as_deref())
    }
}

/// The visit an event is about: `v:` + PV1-19 visit number, else `a:` + PID-18 account
/// number (else a charge's visit number or account). `None`: no journey.
pub fn visit_key(event: &Event) -> Option<String> {
    let non_empty = |s: &Option<String>| s.clone().filter(|v| !v.trim().is_empty());
    if let Some(v) = event
        .encounter
        .as_ref()
        .and_then(|e| non_empty(&e.visit_number))
    {
        return Some(format!("v:{v}"));
    }
    if let Some(v) = event
        .charges
        .iter()
        .find_map(|c| non_empty(&c.visit_number))
    {
        return Some(format!("v:{v}"));
    }
    if let Some(a) = event
        .patient
        .as_ref()
        .and_then(|p| non_empty(&p.account_number))
    {
        return Some(format!("a:{a}"));
    }
    event
        .charges
        .iter()
        .find_map(|c| non_empty(&c.account))
        .map(|a| format!("a:{a}"))
}

/// The department of an order or result, for the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Department {
    /// Laboratory.
    Lab,
    /// Radiology / imaging.
    Radiology,
}

/// Default department table: HL7 table 0074 diagnostic service sections (OBR-24) and the
/// usual filler application names (MSH-5 of an order, MSH-3 of a result).
pub fn default_departments() -> BTreeMap<String, Department> {
    let lab = [
        "LAB", "BG", "BLB", "CG", "CH", "CP", "GE", "HM", "IMM", "MB", "MCB", "MYC", "OSL", "PAR",
        "PAT", "SP", "SR", "TX", "URN", "VR", "LIS",
    ];
    let radiology = [
        "RAD", "CT", "NMR", "NMS", "OUS", "RUS", "RX", "VUS", "XRC", "RIS", "PACS",
    ];
    lab.into_iter()
        .map(|c| (c.to_owned(), Department::Lab))
        .chain(
            radiology
                .into_iter()
                .map(|c| (c.to_owned(), Department::Radiology)),
        )
        .collect()
}

fn lookup(table: &BTreeMap<String, Department>, code: Option<&str>) -> Option<Department> {
    let code = code?.trim();
    table
        .get(code)
        .or_else(|| table.get(&code.to_ascii_uppercase()))
        .copied()
}

/// The department of an order: an imaging order (IPC, or OBR-24 a DICOM modality) is
/// radiology; else the table by the result's OBR-24 section, then by the filler application.
fn department(
    order: &Order,
    section: Option<&str>,
    filler_app: Option<&str>,
    table: &BTreeMap<String, Department>,
) -> Option<Department> {
    if order.imaging.is_some() {
        return Some(Department::Radiology);
    }
    lookup(table, section).or_else(|| lookup(table, filler_app))
}

fn first_component(s: Option<&String>) -> Option<&str> {
    s.map(|s| s.split('^').next().unwrap_or(s.as_str()))
}

/// When the event happened: EVN-2, else the message time.
fn event_time(event: &Event) -> Option<Timestamp> {
    event.source.event_time.or(event.source.message_time)
}

fn order_ref(order: &Order) -> Option<&str> {
    order
        .placer_number
        .as_deref()
        .or(order.filler_number.as_deref())
}

fn order_step(event: &Event, order: &Order, table: &BTreeMap<String, Department>) -> JourneyStep {
    let filler = first_component(event.source.receiving_application.as_ref());
    let kind = match department(order, None, filler, table) {
        Some(Department::Lab) => StepKind::LabOrder,
        Some(Department::Radiology) => StepKind::RadiologyOrder,
        None => StepKind::Order,
    };
    JourneyStep::new(kind, order.ordered_at.or_else(|| event_time(event)))
        .text(order.procedure.as_ref().and_then(|p| p.label()))
        .reference(order_ref(order))
}

fn result_step(
    event: &Event,
    result: &ResultReport,
    table: &BTreeMap<String, Department>,
) -> JourneyStep {
    let filler = first_component(event.source.sending_application.as_ref());
    let kind = match department(&result.order, result.section.as_deref(), filler, table) {
        Some(Department::Lab) => StepKind::LabResult,
        Some(Department::Radiology) => StepKind::RadiologyResult,
        None => StepKind::Result,
    };
    let time = result
        .reported_at
        .or(result.observed_at)
        .or_else(|| event_time(event));
    JourneyStep::new(kind, time)
        .text(result.order.procedure.as_ref().and_then(|p| p.label()))
        .reference(order_ref(&result.order))
}

/// A prescription step (the order's time, its medication, its number) or a dispense step (the
/// dispense's time).
fn medication_step(event: &Event, m: &MedicationOrder, kind: StepKind) -> JourneyStep {
    let dispensed = m
        .dispense
        .as_ref()
        .filter(|_| kind == StepKind::Dispense)
        .and_then(|d| d.dispensed_at);
    let time = dispensed.or(m.ordered_at).or_else(|| event_time(event));
    let number = m.placer_number.as_deref().or(m.filler_number.as_deref());
    JourneyStep::new(kind, time)
        .text(m.medication.as_ref().and_then(|c| c.label()))
        .reference(number)
}

/// What `event` adds to (or cancels in) the visit whose timeline so far is `timeline`, with
/// `departments` telling lab from radiology (see [`default_departments`]).
///
/// A discharged visit stays discharged: an admission, registration or pre-admission of it
/// (a late A01/A04/A05) adds nothing; only a cancel-discharge (A13) reopens it. Steps already
/// in the timeline (a resend, an A08 repeating its ZVT segments) are not added again.
pub fn delta_of(
    event: &Event,
    timeline: &Timeline,
    departments: &BTreeMap<String, Department>,
) -> JourneyDelta {
    let mut d = JourneyDelta::default();
    let enc = event.encounter.as_ref();
    let closed = timeline.is_discharged();
    let now = event_time(event);
    let begin = |kind| JourneyStep::new(kind, enc.and_then(|e| e.admit_time).or(now));
    match event.kind {
        EventKind::EncounterAdmitted if !closed => d.steps.push(begin(StepKind::Admission)),
        EventKind::PatientRegistered if !closed && enc.is_some() => {
            d.steps.push(begin(StepKind::Registration));
        }
        EventKind::EncounterPreadmitted if !closed => d.steps.push(begin(StepKind::Preadmission)),
        EventKind::EncounterTransferred => d.steps.push(JourneyStep::new(StepKind::Transfer, now)),
        EventKind::EncounterDischarged => d.steps.push(JourneyStep::new(
            StepKind::Discharge,
            enc.and_then(|e| e.discharge_time).or(now),
        )),
        EventKind::EncounterCancelled => {
            for kind in [
                StepKind::Admission,
                StepKind::Registration,
                StepKind::Preadmission,
            ] {
                d.cancels.push(Cancel {
                    kind,
                    reference: None,
                });
            }
        }
        EventKind::EncounterTransferCancelled => d.cancels.push(Cancel {
            kind: StepKind::Transfer,
            reference: None,
        }),
        EventKind::EncounterDischargeCancelled => d.cancels.push(Cancel {
            kind: StepKind::Discharge,
            reference: None,
        }),
        EventKind::DoctorChangeCancelled => d.cancels.push(Cancel {
            kind: StepKind::DoctorVisit,
            reference: None,
        }),
        EventKind::OrderPlaced | EventKind::OrderUpdated => {
            for o in &event.orders {
                d.steps.push(order_step(event, o, departments));
            }
        }
        EventKind::OrderCancelled => {
            for o in &event.orders {
                let step = order_step(event, o, departments);
                d.cancels.push(Cancel {
                    kind: step.kind,
                    reference: step.reference,
                });
            }
        }
        EventKind::ResultReported => {
            for r in &event.results {
                d.steps.push(result_step(event, r, departments));
            }
        }
        EventKind::MedicationOrderCreated | EventKind::MedicationOrderUpdated => {
            for m in &event.medication_orders {
                d.steps.push(medication_step(event, m, StepKind::Prescription));
            }
        }
        EventKind::MedicationOrderCancelled => {
            for m in &event.medication_orders {
                let step = medication_step(event, m, StepKind::Prescription);
                d.cancels.push(Cancel {
                    kind: StepKind::Prescription,
                    reference: step.reference,
                });
            }
        }
        EventKind::MedicationDispensed => {
            for m in &event.medication_orders {
                d.steps.push(medication_step(event, m, StepKind::Dispense));
            }
        }
        EventKind::ChargePosted => {
            for c in &event.charges {
                d.steps.push(
                    JourneyStep::new(StepKind::Charge, c.transaction_date.or(now))
                        .text(c.code.as_ref().and_then(|c| c.label()))
                        .reference(c.transaction_id.as_deref()),
                );
            }
        }
        EventKind::ChargeReversed => {
            for c in &event.charges {
                d.cancels.push(Cancel {
                    kind: StepKind::Charge,
                    reference: c.transaction_id.clone().filter(|t| !t.is_empty()),
                });
            }
        }
        // Changes of the visit that are not steps of their own; a doctor change (A54), a
        // transfer or an update may still name a new attending doctor (below).
        EventKind::EncounterAdmitted
        | EventKind::PatientRegistered
        | EventKind::EncounterPreadmitted
        | EventKind::PatientUpdated
        | EventKind::PatientMerged
        | EventKind::EncounterClassChanged
        | EventKind::PatientDeparted
        | EventKind::PatientArrived
        | EventKind::PatientTrackingCancelled
        | EventKind::EncounterAdmitPending
        | EventKind::EncounterTransferPending
        | EventKind::EncounterDischargePending
        | EventKind::EncounterPendingCancelled
        | EventKind::PatientsSwapped
        | EventKind::BedStatusUpdated
        | EventKind::LeaveOfAbsenceStarted
        | EventKind::LeaveOfAbsenceEnded
        | EventKind::LeaveOfAbsenceCancelled
        | EventKind::EncounterDeleted
        | EventKind::PatientDeleted
        | EventKind::PatientsLinked
        | EventKind::PatientsUnlinked
        | EventKind::AccountMerged
        | EventKind::VisitMerged
        | EventKind::RecordMoved
        | EventKind::IdentifierChanged
        | EventKind::AttendingDoctorChanged
        | EventKind::ConsultingDoctorChanged
        | EventKind::AllergiesUpdated
        | EventKind::AppointmentBooked
        | EventKind::AppointmentRescheduled
        | EventKind::AppointmentModified
        | EventKind::AppointmentCancelled
        | EventKind::AppointmentDiscontinued
        | EventKind::AppointmentDeleted
        | EventKind::AppointmentNoShow
        | EventKind::AppointmentResourceAdded
        | EventKind::AppointmentResourceModified
        | EventKind::AppointmentResourceCancelled
        | EventKind::AppointmentResourceDiscontinued
        | EventKind::AppointmentResourceDeleted
        | EventKind::SlotBlocked
        | EventKind::SlotOpened
        // Master data is not about a visit.
        | EventKind::LocationCreated
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
        // A study's arrival: its report (ORU) is the radiology result step.
        | EventKind::StudyAvailable
        | EventKind::ScheduleUpdated
        | EventKind::ScheduleDeactivated => {}
    }
    if let Some(enc) = enc {
        let begins = matches!(
            event.kind,
            EventKind::EncounterAdmitted
                | EventKind::PatientRegistered
                | EventKind::EncounterPreadmitted
        );
        if begins && !closed {
            if let Some(reason) = enc.admit_reason.as_ref().and_then(|r| r.label()) {
                d.steps.push(
                    JourneyStep::new(StepKind::ChiefComplaint, enc.admit_time.or(now))
                        .text(Some(reason)),
                );
            }
        }
        // Orders, results and charges name the attending doctor of their own system (often
        // the orderer): only ADT messages say who attends the visit.
        let adt = !matches!(
            event.kind,
            EventKind::OrderPlaced
                | EventKind::OrderCancelled
                | EventKind::OrderUpdated
                | EventKind::ResultReported
                | EventKind::ChargePosted
                | EventKind::ChargeReversed
                | EventKind::MedicationOrderCreated
                | EventKind::MedicationOrderUpdated
                | EventKind::MedicationOrderCancelled
                | EventKind::MedicationDispensed
        );
        if adt {
            doctor_step(event, enc, timeline, &mut d);
        }
        for v in enc
            .events
            .iter()
            .filter(|v| !matches!(v.kind.as_str(), "admitted" | "discharged"))
        {
            // The HIS's own text (ZVT-2 as sent); events stored before it was kept have
            // only the snake_case kind.
            let text = v.label.clone().unwrap_or_else(|| v.kind.clone());
            d.steps
                .push(JourneyStep::new(StepKind::Site, v.time).text(Some(&text)));
        }
    }
    d.steps.retain(|s| !timeline.has(s));
    d
}

/// A consultation when the event names an attending doctor the timeline has not seen last:
/// the visit's first is a [`StepKind::Consultation`], each later one a
/// [`StepKind::DoctorVisit`].
fn doctor_step(
    event: &Event,
    enc: &crate::model::Encounter,
    timeline: &Timeline,
    d: &mut JourneyDelta,
) {
    let Some(code) = enc
        .attending
        .as_ref()
        .and_then(|p| p.code.as_deref())
        .filter(|c| !c.is_empty())
    else {
        return;
    };
    if timeline.attending() == Some(code) || timeline.is_discharged() {
        return;
    }
    let first = timeline.attending().is_none();
    let kind = if first {
        StepKind::Consultation
    } else {
        StepKind::DoctorVisit
    };
    let time = if first {
        enc.admit_time.or_else(|| event_time(event))
    } else {
        event_time(event)
    };
    let name = enc
        .attending
        .as_ref()
        .map(|p| p.name.full())
        .filter(|n| !n.is_empty());
    d.steps.push(
        JourneyStep::new(kind, time)
            .text(name.as_deref())
            .reference(Some(code)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str, extra: serde_json::Value) -> Event {
        let mut v = json!({
            "id": format!("ev-{kind}"), "kind": kind,
            "source": {"format": "hl7v2", "message_type": "ADT", "control_id": "C1",
                       "event_time": "2026-06-15T09:00:00"},
            "patient": {"identifiers": [{"value": "MRN-1", "kind": "mrn"}]},
            "encounter": {"visit_number": "V-1", "admit_time": "2026-06-15T08:00:00",
                          "attending": {"code": "DOC-1", "name": {"family": "One"}},
                          "admit_reason": {"text": "Chest pain"}}
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            for (k, val) in e {
                o.insert(k.clone(), val.clone());
            }
        }
        serde_json::from_value(v).expect("valid event")
    }

    fn kinds(t: &Timeline) -> Vec<&'static str> {
        t.active().map(|s| s.kind.as_str()).collect()
    }

    fn run(events: &[Event]) -> Timeline {
        let table = default_departments();
        let mut t = Timeline::default();
        for e in events {
            let d = delta_of(e, &t, &table);
            t.apply(&d);
        }
        t
    }

    #[test]
    fn a_standard_inpatient_visit_builds_its_steps() {
        let t = run(&[
            event("encounter_admitted", json!({})),
            event(
                "encounter_transferred",
                json!({"encounter": {"visit_number": "V-1",
                "attending": {"code": "DOC-2", "name": {"family": "Two"}}}}),
            ),
            event(
                "order_placed",
                json!({"source": {"format": "hl7v2", "message_type": "ORM",
                "control_id": "C3", "receiving_application": "LIS"},
                "orders": [{"placer_number": "ORD-1", "status": "placed",
                            "procedure": {"code": "CBC", "text": "Complete blood count"}}]}),
            ),
            event(
                "result_reported",
                json!({"results": [{"order": {"placer_number": "ORD-1",
                "status": "completed"}, "section": "HM", "reported_at": "2026-06-15T12:00:00"}]}),
            ),
            event(
                "encounter_discharged",
                json!({"encounter": {"visit_number": "V-1",
                "discharge_time": "2026-06-16T10:00:00"}}),
            ),
        ]);
        assert_eq!(
            kinds(&t),
            [
                "admission",
                "chief_complaint",
                "consultation",
                "transfer",
                "doctor_visit",
                "lab_order",
                "lab_result",
                "discharge"
            ]
        );
        assert_eq!(
            t.discharged_at().map(|d| d.date_iso()).as_deref(),
            Some("2026-06-16")
        );
        assert!(t.admitted_at().is_some());
    }

    #[test]
    fn a_discharged_visit_is_reopened_only_by_a_cancel_discharge() {
        let mut events = vec![
            event("encounter_admitted", json!({})),
            event("encounter_discharged", json!({})),
            event(
                "patient_updated",
                json!({"encounter": {"visit_number": "V-1",
                "attending": {"code": "DOC-9"}}}),
            ),
            event("patient_registered", json!({})),
            event("encounter_admitted", json!({})),
        ];
        let t = run(&events);
        assert!(t.is_discharged());
        assert_eq!(
            kinds(&t),
            ["admission", "chief_complaint", "consultation", "discharge"]
        );
        events.push(event("encounter_discharge_cancelled", json!({})));
        let t = run(&events);
        assert!(!t.is_discharged());
    }

    #[test]
    fn cancels_resends_and_site_steps() {
        let zvt = json!({"encounter": {"visit_number": "V-1", "events": [
            {"kind": "prescribed_drugs", "time": "2026-06-15T10:00:00",
             "label": "Prescribed Drugs"},
            {"kind": "x_ray", "time": "2026-06-15T10:30:00"}]}});
        let t = run(&[
            event("encounter_admitted", json!({})),
            event("patient_updated", zvt.clone()),
            event("patient_updated", zvt),
            event("encounter_transferred", json!({})),
            event("encounter_transfer_cancelled", json!({})),
            event("encounter_cancelled", json!({})),
        ]);
        assert_eq!(
            kinds(&t),
            ["chief_complaint", "consultation", "site", "site"]
        );
        let keys: Vec<String> = t
            .active()
            .filter(|s| s.kind == StepKind::Site)
            .map(JourneyStep::table_key)
            .collect();
        assert_eq!(keys, ["prescribed_drugs", "x_ray"]);
        assert_eq!(
            t.active().last().and_then(|s| s.text.as_deref()),
            Some("x_ray")
        );
    }

    #[test]
    fn prescriptions_and_dispenses_are_steps_and_a_cancel_names_its_prescription() {
        let rx = |kind: &str, number: &str, extra: serde_json::Value| {
            let mut order = json!({"placer_number": number, "status": "placed",
                "medication": {"code": "00093-7146", "text": "Amoxicillin 500 mg capsule"},
                "ordered_at": "2026-06-15T10:55:00"});
            if let (Some(o), Some(e)) = (order.as_object_mut(), extra.as_object()) {
                for (k, v) in e {
                    o.insert(k.clone(), v.clone());
                }
            }
            event(kind, json!({"medication_orders": [order]}))
        };
        let t = run(&[
            event("encounter_admitted", json!({})),
            rx("medication_order_created", "RX-1", json!({})),
            rx("medication_order_created", "RX-2", json!({})),
            rx(
                "medication_dispensed",
                "RX-1",
                json!({"dispense": {"dispensed_at": "2026-06-15T14:00:00"}}),
            ),
            rx("medication_order_cancelled", "RX-2", json!({})),
        ]);
        let steps: Vec<(&str, Option<&str>)> = t
            .active()
            .filter(|s| matches!(s.kind, StepKind::Prescription | StepKind::Dispense))
            .map(|s| (s.kind.as_str(), s.reference.as_deref()))
            .collect();
        assert_eq!(
            steps,
            [("prescription", Some("RX-1")), ("dispense", Some("RX-1"))]
        );
        let dispense = t
            .active()
            .find(|s| s.kind == StepKind::Dispense)
            .and_then(|s| s.time)
            .map(|t| t.naive_date_time().to_string());
        assert_eq!(dispense.as_deref(), Some("2026-06-15 14:00:00"));
        // A prescription names no attending doctor of the visit: no doctor step of its own.
        assert_eq!(
            t.active()
                .filter(|s| matches!(s.kind, StepKind::DoctorVisit))
                .count(),
            0
        );
    }

    #[test]
    fn departments_come_from_the_section_the_filler_or_imaging() {
        let table = default_departments();
        let order: Order = serde_json::from_value(json!({"status": "placed"})).expect("order");
        assert_eq!(
            department(&order, Some("RAD"), None, &table),
            Some(Department::Radiology)
        );
        assert_eq!(
            department(&order, Some("ch"), None, &table),
            Some(Department::Lab)
        );
        assert_eq!(
            department(&order, None, Some("LIS"), &table),
            Some(Department::Lab)
        );
        assert_eq!(department(&order, Some("EC"), Some("CARDIO"), &table), None);
        let imaging: Order =
            serde_json::from_value(json!({"status": "placed", "imaging": {"modality": "CT"}}))
                .expect("order");
        assert_eq!(
            department(&imaging, None, None, &table),
            Some(Department::Radiology)
        );
    }

    #[test]
    fn the_visit_is_the_visit_number_else_the_account() {
        let e = event("encounter_admitted", json!({}));
        assert_eq!(visit_key(&e).as_deref(), Some("v:V-1"));
        let e = event(
            "encounter_admitted",
            json!({"encounter": {"admit_time": "2026-06-15T08:00:00"},
            "patient": {"identifiers": [{"value": "MRN-1", "kind": "mrn"}], "account_number": "ACC-1"}}),
        );
        assert_eq!(visit_key(&e).as_deref(), Some("a:ACC-1"));
    }
}
