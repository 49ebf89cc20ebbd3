//! The Latrexa sandbox's own wire types, written from the shapes documented in
//! `docs/ASSUMPTIONS.md` (the seed names the endpoints, not their bodies). They are deliberately
//! not the connector's types (`transforms::dest::latrexa`): a change on one side that the other
//! does not follow fails the tests instead of changing both ends at once. Request bodies refuse
//! fields they do not know.

use serde::{Deserialize, Serialize};

/// Hub event: a booking was made online (action `create`).
pub const APPOINTMENT_CREATED: &str = "AppointmentCreated";

/// Hub event: a booking was changed online (action `create` while the HIS has not confirmed
/// it yet, `reschedule` after).
pub const APPOINTMENT_UPDATED: &str = "AppointmentUpdated";

/// Hub event: a booking was cancelled online (action `cancel`).
pub const APPOINTMENT_CANCELLED: &str = "AppointmentCancelled";

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
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UploadRequest {
    /// HIS appointments (walk-in and desk bookings, changes and cancellations).
    pub appointments: Vec<HisAppointment>,
}

/// One HIS appointment uploaded to Latrexa.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
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
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfirmRequest {
    /// Latrexa booking id.
    pub latrexa_id: String,
    /// Id the HIS gave the appointment (SCH-2 of its answer, or our placer id).
    pub his_appointment_id: String,
}

/// Body of `POST /api/integration/appointments/reject`, sent after the HIS answered AE/AR.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RejectRequest {
    /// Latrexa booking id.
    pub latrexa_id: String,
    /// Why, e.g. `slot unavailable` (no PHI).
    pub reason: String,
}

/// Body of `POST /api/integration/heartbeat`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
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
