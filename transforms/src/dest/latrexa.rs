//! Latrexa integration API (the vendor's sync agent document): the JSON bodies of the five
//! endpoints, shared by the connector in `channels` and the sandbox server so both ends use the
//! exact same types.
//!
//! The seed lists the endpoints but not their bodies; these shapes are ours, documented here:
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | [`PENDING_PATH`] | - | [`PendingBookings`] |
//! | POST | [`UPLOAD_PATH`] | [`UploadRequest`] | [`UploadResponse`] |
//! | POST | [`CONFIRM_PATH`] | [`ConfirmRequest`] | [`SyncResponse`] |
//! | POST | [`REJECT_PATH`] | [`RejectRequest`] | [`SyncResponse`] |
//! | POST | [`HEARTBEAT_PATH`] | [`Heartbeat`] | [`HeartbeatResponse`] |
//!
//! Every error answer is an [`ErrorBody`]. The SignalR hub at [`HUB_PATH`] pushes a
//! [`PendingBooking`] as the only argument of [`HUB_EVENTS`] (JSON hub protocol, records ended
//! by [`RECORD_SEPARATOR`]).
//!
//! Times are local clinic time without offset, `YYYY-MM-DDTHH:MM:SS`, as a HIS schedules them.
//! HIS -> Latrexa: [`render`] turns an appointment event into one upload item. Latrexa -> HIS:
//! `from_json::latrexa` turns a [`PendingBooking`] into a canonical event and `to_v2` into
//! SIU^S12/S13/S15 for the HIS.

use serde::{Deserialize, Serialize};

use super::{MappingError, Rendered};
use crate::model::{AppointmentStatus, ContactUse, EncounterClass, Event, EventKind, Timestamp};

/// Download bookings awaiting HIS sync.
pub const PENDING_PATH: &str = "/api/integration/appointments/pending";
/// Upload HIS appointments.
pub const UPLOAD_PATH: &str = "/api/integration/appointments/upload";
/// Confirm a successful HIS write.
pub const CONFIRM_PATH: &str = "/api/integration/appointments/confirm";
/// Reject a booking the HIS refused (slot unavailable).
pub const REJECT_PATH: &str = "/api/integration/appointments/reject";
/// Agent health check.
pub const HEARTBEAT_PATH: &str = "/api/integration/heartbeat";
/// The SignalR hub (negotiate is `HUB_PATH` + `/negotiate`).
pub const HUB_PATH: &str = "/hubs/integration";
/// Hub event: a booking was made online (action `create`).
pub const APPOINTMENT_CREATED: &str = "AppointmentCreated";
/// Hub event: a booking was changed online (action `create` while the HIS has not confirmed
/// it yet, `reschedule` after).
pub const APPOINTMENT_UPDATED: &str = "AppointmentUpdated";
/// Hub event: a booking was cancelled online (action `cancel`).
pub const APPOINTMENT_CANCELLED: &str = "AppointmentCancelled";
/// The three hub events that carry a booking.
pub const HUB_EVENTS: [&str; 3] = [
    APPOINTMENT_CREATED,
    APPOINTMENT_UPDATED,
    APPOINTMENT_CANCELLED,
];
/// The SignalR record separator that ends every hub protocol message.
pub const RECORD_SEPARATOR: char = '\u{1e}';

/// What Latrexa wants done with a pending booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BookingAction {
    /// A new online booking: SIU^S12 to the HIS.
    #[default]
    Create,
    /// A booking moved to another time: SIU^S13.
    Reschedule,
    /// A booking cancelled by the patient: SIU^S15.
    Cancel,
}

/// Answer of `GET /api/integration/appointments/pending`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingBookings {
    /// Bookings in the order Latrexa received them.
    pub appointments: Vec<PendingBooking>,
}

/// One online booking awaiting HIS sync.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingBooking {
    /// Latrexa booking id (`latrexaId` in confirm/reject).
    pub id: String,
    /// What to do in the HIS.
    #[serde(default)]
    pub action: BookingAction,
    /// HIS appointment id, known once the booking was confirmed (reschedule, cancel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub his_appointment_id: Option<String>,
    /// HIS patient number when the patient is known to the HIS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_no: Option<String>,
    /// National id number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub national_id: Option<String>,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Mobile number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile: Option<String>,
    /// E-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_of_birth: Option<String>,
    /// `male` / `female` / `other` / `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<String>,
    /// HIS doctor code.
    pub doctor_code: String,
    /// HIS clinic code.
    pub clinic_code: String,
    /// Service / visit type code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_code: Option<String>,
    /// Start, local time `YYYY-MM-DDTHH:MM:SS`.
    pub start: String,
    /// End, local time `YYYY-MM-DDTHH:MM:SS`.
    pub end: String,
    /// Reason for the visit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Free-text notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// When the patient booked, local time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Increases with every change made online (1 for a new booking); lets the agent tell a
    /// change from a repeat and drop stale hub messages. 0 when Latrexa does not send it.
    #[serde(default)]
    pub version: u32,
}

/// Body of `POST /api/integration/appointments/upload`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadRequest {
    /// HIS appointments (walk-in and desk bookings, changes and cancellations).
    pub appointments: Vec<HisAppointment>,
}

/// One HIS appointment uploaded to Latrexa.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HisAppointment {
    /// HIS appointment id (the upsert key on Latrexa's side).
    pub his_appointment_id: String,
    /// Latrexa id when the appointment started as an online booking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latrexa_id: Option<String>,
    /// HIS patient number.
    pub patient_no: String,
    /// Patient full name.
    pub patient_name: String,
    /// Mobile number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile: Option<String>,
    /// HIS doctor code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doctor_code: Option<String>,
    /// HIS clinic code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clinic_code: Option<String>,
    /// Service / visit type code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_code: Option<String>,
    /// Start, local time `YYYY-MM-DDTHH:MM:SS` (may be absent for a cancellation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// End, local time `YYYY-MM-DDTHH:MM:SS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// `booked`, `arrived`, `completed`, `cancelled`, `no_show`.
    pub status: String,
    /// Free-text notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// Answer of the upload: how many were stored and the id pairs Latrexa assigned.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadResponse {
    /// Number of appointments stored.
    pub accepted: u32,
    /// HIS id <-> Latrexa id for each stored appointment.
    #[serde(default)]
    pub mappings: Vec<IdPair>,
}

/// A HIS id and the Latrexa id of the same appointment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdPair {
    /// HIS appointment id.
    pub his_appointment_id: String,
    /// Latrexa booking id.
    pub latrexa_id: String,
}

/// Body of `POST /api/integration/appointments/confirm`, sent after the HIS answered AA.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfirmRequest {
    /// Latrexa booking id.
    pub latrexa_id: String,
    /// Id the HIS gave the appointment (SCH-2 of its answer, or our placer id).
    pub his_appointment_id: String,
}

/// Body of `POST /api/integration/appointments/reject`, sent after the HIS answered AE/AR.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RejectRequest {
    /// Latrexa booking id.
    pub latrexa_id: String,
    /// Why, e.g. `slot unavailable` (no PHI).
    pub reason: String,
}

/// Body of `POST /api/integration/heartbeat`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// Agent name and version, e.g. `switchboard/0.1.0`.
    pub agent: String,
    /// Whether the HIS link (MLLP peer) is up.
    pub his_connected: bool,
    /// Bookings received but not yet confirmed or rejected.
    pub pending: u32,
    /// When the heartbeat was made, RFC 3339 UTC.
    pub timestamp: String,
}

/// Where a booking stands with the HIS, as Latrexa records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncStatus {
    /// Awaiting the HIS (listed by `pending`).
    Pending,
    /// Written by the HIS.
    Confirmed,
    /// Refused by the HIS.
    Rejected,
}

/// Answer of confirm and reject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncResponse {
    /// The booking's Latrexa id.
    pub latrexa_id: String,
    /// Its sync status after the call.
    pub sync_status: SyncStatus,
}

/// Answer of heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatResponse {
    /// Always true.
    pub ok: bool,
    /// Latrexa's clock (RFC 3339 UTC), to spot skew.
    pub server_time: String,
}

/// Every error answer of the Latrexa API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// `unauthorized`, `bad_request`, `not_found`, `conflict` or `unavailable`.
    pub error: String,
    /// A sentence for the operator.
    pub message: String,
}

/// `YYYY-MM-DDTHH:MM:SS` local time, the form of every Latrexa time.
pub fn local_time(ts: &Timestamp) -> String {
    ts.naive_date_time().format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// The upload item for a canonical appointment event.
///
/// # Errors
/// [`MappingError::MissingField`] without a HIS appointment id (filler or placer id), a patient
/// identifier, or a start time (except for a cancellation).
pub fn his_appointment(event: &Event) -> Result<HisAppointment, MappingError> {
    let a = event
        .appointment
        .as_ref()
        .ok_or_else(|| super::missing("appointment"))?;
    let his_appointment_id = a
        .filler_id
        .clone()
        .or_else(|| a.placer_id.clone())
        .ok_or_else(|| super::missing("appointment.filler_id"))?;
    let patient_no = event
        .patient
        .as_ref()
        .and_then(|p| p.primary_identifier())
        .or(a.patient.as_ref())
        .ok_or_else(|| super::missing("appointment.patient"))?
        .value
        .clone();
    let status = if matches!(
        event.kind,
        EventKind::AppointmentCancelled
            | EventKind::AppointmentDeleted
            | EventKind::AppointmentDiscontinued
    ) {
        AppointmentStatus::Cancelled
    } else {
        a.status
    };
    if a.start.is_none() && status != AppointmentStatus::Cancelled {
        return Err(super::missing("appointment.start"));
    }
    Ok(HisAppointment {
        his_appointment_id,
        latrexa_id: a.remote_id.clone(),
        patient_no,
        patient_name: event
            .patient
            .as_ref()
            .map(|p| p.name.full())
            .unwrap_or_default(),
        mobile: event.patient.as_ref().and_then(|p| {
            p.phones
                .iter()
                .find(|ph| ph.use_ == Some(ContactUse::Mobile))
                .or_else(|| p.phones.first())
                .map(|ph| ph.number.clone())
        }),
        doctor_code: a.practitioner.as_ref().and_then(|p| p.code.clone()),
        clinic_code: a.location.as_ref().and_then(|l| l.code.clone()),
        service_code: a.service.as_ref().and_then(|c| c.code.clone()),
        start: a.start.as_ref().map(local_time),
        end: a.end.as_ref().map(local_time),
        status: super::opsport::status_key(status).to_owned(),
        notes: a.notes.clone(),
    })
}

/// Latrexa destination options (the `walk_in_registrations` key of its destination).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatrexaOptions {
    /// Also upload walk-ins the HIS reports only as a registration ([`render_walk_in`]).
    #[serde(default)]
    pub walk_in_registrations: bool,
}

/// Renders an appointment event as one upload request (HIS -> Latrexa); other events give
/// nothing. Appointments that came from Latrexa itself (the event's source format is
/// `latrexa`) are not uploaded back.
///
/// # Errors
/// See [`his_appointment`].
pub fn render(event: &Event) -> Result<Vec<Rendered>, MappingError> {
    let is_appointment = matches!(
        event.kind,
        EventKind::AppointmentBooked
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
    );
    if !is_appointment || event.source.format == "latrexa" {
        return Ok(Vec::new());
    }
    let item = his_appointment(event)?;
    let key = crate::model::stable_id(&["latrexa", &event.id, &item.his_appointment_id]);
    upload(item, key)
}

/// A walk-in the HIS reports only as a registration (ADT^A04; a registration or admission
/// event) of an outpatient or emergency visit, as one upload item: the visit number is the HIS appointment id, the admit time its
/// start, the attending doctor and the visit's clinic its doctor and clinic, status `arrived`.
/// Any other event, or a visit without a visit number or admit time, gives nothing.
///
/// # Errors
/// [`MappingError::MissingField`] when the registration has no patient identifier.
pub fn render_walk_in(event: &Event) -> Result<Vec<Rendered>, MappingError> {
    let Some(visit) = event.encounter.as_ref() else {
        return Ok(Vec::new());
    };
    let clinic_visit = matches!(
        visit.class,
        Some(EncounterClass::Outpatient | EncounterClass::Emergency)
    );
    let (Some(number), Some(admit)) = (&visit.visit_number, &visit.admit_time) else {
        return Ok(Vec::new());
    };
    let registration = matches!(
        event.kind,
        EventKind::PatientRegistered | EventKind::EncounterAdmitted
    );
    if !registration || !clinic_visit {
        return Ok(Vec::new());
    }
    let patient = event
        .patient
        .as_ref()
        .ok_or_else(|| super::missing("patient"))?;
    let patient_no = patient
        .primary_identifier()
        .ok_or_else(|| super::missing("patient.identifiers"))?
        .value
        .clone();
    let item = HisAppointment {
        his_appointment_id: number.clone(),
        latrexa_id: None,
        patient_no,
        patient_name: patient.name.full(),
        mobile: patient
            .phones
            .iter()
            .find(|ph| ph.use_ == Some(ContactUse::Mobile))
            .or_else(|| patient.phones.first())
            .map(|ph| ph.number.clone()),
        doctor_code: visit.attending.as_ref().and_then(|p| p.code.clone()),
        clinic_code: visit.location.as_ref().and_then(|l| l.code.clone()),
        service_code: visit.service.as_ref().and_then(|c| c.code.clone()),
        start: Some(local_time(admit)),
        end: None,
        status: super::opsport::status_key(AppointmentStatus::Arrived).to_owned(),
        notes: None,
    };
    let key = crate::model::stable_id(&["latrexa-walk-in", &event.id, number]);
    upload(item, key)
}

/// One upload request of one HIS appointment (the scheduler merges them into batches).
fn upload(item: HisAppointment, key: String) -> Result<Vec<Rendered>, MappingError> {
    let body = serde_json::to_value(UploadRequest {
        appointments: vec![item],
    })
    .map_err(|e| MappingError::InvalidValue {
        path: "latrexa".into(),
        reason: e.to_string(),
    })?;
    Ok(vec![Rendered {
        path: UPLOAD_PATH.to_owned(),
        body,
        idempotency_key: key,
        kind: "appointment".to_owned(),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Event {
        let path = format!(
            "{}/../fixtures/model/_dest_inputs/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).expect("fixture exists");
        serde_json::from_str(&text).expect("fixture is an event")
    }

    #[test]
    fn an_outpatient_registration_is_a_walk_in_and_nothing_else_is() {
        let event = fixture("adt_a04_registered");
        assert!(
            render(&event).expect("renders").is_empty(),
            "not an appointment"
        );
        let out = render_walk_in(&event).expect("renders");
        assert_eq!(out.len(), 1);
        let a = &out[0].body["appointments"][0];
        assert_eq!(a["hisAppointmentId"], "V-778812");
        assert_eq!(a["start"], "2025-06-05T11:06:00");
        assert_eq!(a["status"], "arrived");
        assert_eq!(a["clinicCode"], "CLN-PED-01");
        assert_eq!(a["doctorCode"], "DOC-SARAH-04");
        let mut inpatient = event.clone();
        if let Some(e) = inpatient.encounter.as_mut() {
            e.class = Some(EncounterClass::Inpatient);
        }
        assert!(render_walk_in(&inpatient).expect("renders").is_empty());
        assert!(render_walk_in(&fixture("siu_s12_booked"))
            .expect("renders")
            .is_empty());
    }
}
