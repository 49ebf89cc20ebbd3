//! Latrexa integration API and SignalR hub (seed `latrexa-sync-agent.txt`), served under `/latrexa`.
//!
//! The seed lists the endpoints but not their bodies; the wire types are the sandbox's own
//! ([`crate::latrexa_wire`], written from `docs/ASSUMPTIONS.md`), not the connector's, so a
//! connector that drifts from the documented shapes fails against the sandbox. Every API call needs `Authorization: Bearer <api key>` and
//! `X-Organization-Code`; either missing or wrong answers 401 [`ErrorBody`]
//! (`{"error":"unauthorized","message":...}`).
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/api/integration/appointments/pending` | | [`PendingBookings`] |
//! | POST | `/api/integration/appointments/upload` | [`UploadRequest`] | [`UploadResponse`] |
//! | POST | `/api/integration/appointments/confirm` | [`ConfirmRequest`] | [`SyncResponse`] |
//! | POST | `/api/integration/appointments/reject` | [`RejectRequest`] | [`SyncResponse`] |
//! | POST | `/api/integration/heartbeat` | [`Heartbeat`] | [`HeartbeatResponse`] |
//!
//! A booking is *pending* (listed by `pending`) until the HIS confirms or rejects it. Its
//! `action` is `create` until the HIS confirmed it; a change made online after that makes it
//! pending again as `reschedule`, a cancellation as `cancel`, each carrying the
//! `hisAppointmentId` the HIS gave it and a higher `version` (a rejected booking that is
//! cancelled stays rejected; a cancelled booking cannot change). Confirming twice with the same
//! `hisAppointmentId` is idempotent (200); with another id, or confirming a rejected booking, is
//! 409. Rejecting needs a non-empty `reason` (400 otherwise), a second reject is idempotent,
//! rejecting a confirmed booking is 409. Unknown ids are 404. Uploads are keyed by
//! `hisAppointmentId`: uploading one again updates it and returns the same `latrexaId`; a new
//! `hisAppointmentId` uploaded with a `latrexaId` (an online booking the HIS wrote) is paired
//! with that id instead of getting a new one. Bad
//! JSON or a body of the wrong shape is 400 [`ErrorBody`] `bad_request`; a time that is not
//! local `YYYY-MM-DDTHH:MM:SS` is 400 too.
//!
//! **SignalR hub** at `/hubs/integration` (JSON hub protocol, WebSockets transport):
//! `POST /hubs/integration/negotiate?negotiateVersion=1` returns a connection id and token;
//! the WebSocket at `/hubs/integration?id=<connectionToken>` expects the handshake
//! `{"protocol":"json","version":1}` + 0x1E, answers `{}` + 0x1E, sends a ping (`{"type":6}`)
//! every 15 s (configurable) and an invocation (`{"type":1,"target":"AppointmentCreated","arguments":[booking]}`)
//! whenever a booking is created (`AppointmentCreated`), changed (`AppointmentUpdated`) or
//! cancelled (`AppointmentCancelled`); the argument is the [`PendingBooking`]. Negotiate needs
//! the API key (bearer header or `access_token` query, as SignalR clients send it) and the
//! organization code header; the socket needs the API key and a token from negotiate (used
//! once). `POST /_hub/down` makes the hub unavailable (negotiate and the socket answer 503,
//! open sockets get a close message `{"type":7,...}` and are closed) so the polling fallback can
//! be tested; `POST /_hub/up` brings it back. `POST /_api/down` makes the REST API answer 503
//! `unavailable` (to test an agent's retries) until `POST /_api/up`; with a body
//! `{"endpoints":["confirm"]}` only the named endpoints (`pending`, `upload`, `confirm`,
//! `reject`, `heartbeat`) are down.
//!
//! Test control (no credentials): `POST /_bookings` ([`NewBooking`] -> the [`PendingBooking`]),
//! `POST /_bookings/{id}/update` ([`BookingUpdate`]), `POST /_bookings/{id}/cancel`,
//! `GET /_state` (bookings with their sync status and reject reason, confirm and reject calls,
//! uploads, heartbeats).

pub use crate::latrexa_wire::RECORD_SEPARATOR;
use crate::latrexa_wire::{
    BookingAction, ConfirmRequest, ErrorBody, Heartbeat, HeartbeatResponse, HisAppointment, IdPair,
    PendingBooking, PendingBookings, RejectRequest, SyncResponse, SyncStatus, UploadRequest,
    UploadResponse, APPOINTMENT_CANCELLED, APPOINTMENT_CREATED, APPOINTMENT_UPDATED,
};
use crate::{json, lock, secret_eq, SandboxConfig, Shared};
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// How long the hub waits for a client's handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// The form of every Latrexa time: local clinic time without offset.
const LOCAL_TIME: &str = "%Y-%m-%dT%H:%M:%S";

/// Body of the test-control `POST /_bookings`: a booking made online (the fields of a
/// [`PendingBooking`] that the patient chooses; times are local `YYYY-MM-DDTHH:MM:SS`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewBooking {
    /// HIS patient number, when the patient is already known to the HIS.
    #[serde(default)]
    pub patient_no: Option<String>,
    /// National id number.
    #[serde(default)]
    pub national_id: Option<String>,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Mobile number.
    #[serde(default)]
    pub mobile: Option<String>,
    /// E-mail address.
    #[serde(default)]
    pub email: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default)]
    pub date_of_birth: Option<String>,
    /// `male` / `female` / `other` / `unknown`.
    #[serde(default)]
    pub gender: Option<String>,
    /// HIS doctor code.
    pub doctor_code: String,
    /// HIS clinic code.
    pub clinic_code: String,
    /// Service / visit type code.
    #[serde(default)]
    pub service_code: Option<String>,
    /// Slot start.
    pub start: String,
    /// Slot end.
    pub end: String,
    /// Reason for the visit.
    #[serde(default)]
    pub reason: Option<String>,
    /// Free text.
    #[serde(default)]
    pub notes: Option<String>,
}

/// Body of the test-control `POST /_bookings/{id}/update`: fields to change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BookingUpdate {
    /// New doctor.
    #[serde(default)]
    pub doctor_code: Option<String>,
    /// New clinic.
    #[serde(default)]
    pub clinic_code: Option<String>,
    /// New start, local time.
    #[serde(default)]
    pub start: Option<String>,
    /// New end, local time.
    #[serde(default)]
    pub end: Option<String>,
    /// New notes.
    #[serde(default)]
    pub notes: Option<String>,
}

#[derive(Debug, Clone)]
struct BookingRecord {
    booking: PendingBooking,
    sync: SyncStatus,
    reject_reason: Option<String>,
}

#[derive(Debug, Default)]
struct Db {
    bookings: BTreeMap<String, BookingRecord>,
    uploads: BTreeMap<String, (String, HisAppointment)>,
    heartbeats: u64,
    last_heartbeat: Option<Heartbeat>,
    next_booking: u64,
    next_upload: u64,
    hub_down: bool,
    /// Endpoints answering 503 (`pending`, `upload`, `confirm`, `reject`, `heartbeat`).
    api_down: std::collections::BTreeSet<String>,
    /// Every confirm and reject call that was answered 200, in order.
    sync_calls: Vec<serde_json::Value>,
    /// Connection token -> connection id, from negotiate, used once by the socket.
    connection_tokens: HashMap<String, String>,
    next_connection: u64,
    hub_connections: u64,
}

/// What the hub sends to every open connection.
#[derive(Debug, Clone)]
enum HubEvent {
    /// A whole hub message, record separator included.
    Send(String),
    /// The hub goes down: close the connection.
    Close,
}

#[derive(Debug, Clone)]
struct Latrexa {
    api_key: Arc<str>,
    org_code: Arc<str>,
    db: Shared<Db>,
    hub: broadcast::Sender<HubEvent>,
    ping: Duration,
    shutdown: CancellationToken,
}

/// The Latrexa routes, to be nested under `/latrexa`; open sockets close on `shutdown`.
pub(crate) fn router(cfg: &SandboxConfig, shutdown: CancellationToken) -> Router {
    let (hub, _) = broadcast::channel(256);
    let state = Latrexa {
        api_key: cfg.latrexa_api_key.as_str().into(),
        org_code: cfg.latrexa_org_code.as_str().into(),
        db: Shared::default(),
        hub,
        ping: Duration::from_millis(cfg.latrexa_hub_ping_ms.max(1)),
        shutdown,
    };
    Router::new()
        .route("/api/integration/appointments/pending", get(pending))
        .route("/api/integration/appointments/upload", post(upload))
        .route("/api/integration/appointments/confirm", post(confirm))
        .route("/api/integration/appointments/reject", post(reject))
        .route("/api/integration/heartbeat", post(heartbeat))
        .route("/hubs/integration/negotiate", post(negotiate))
        .route("/hubs/integration", get(hub_socket))
        .route("/_bookings", post(new_booking))
        .route("/_bookings/{id}/update", post(update_booking))
        .route("/_bookings/{id}/cancel", post(cancel_booking))
        .route("/_hub/down", post(hub_down))
        .route("/_hub/up", post(hub_up))
        .route("/_api/down", post(api_down))
        .route("/_api/up", post(api_up))
        .route("/_state", get(state_view))
        .with_state(state)
}

fn error(status: StatusCode, error: &str, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: error.into(),
        message: message.into(),
    };
    (status, axum::Json(body)).into_response()
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Missing or invalid API key or organization code.",
    )
}

fn ok<T: Serialize>(body: &T) -> Response {
    (StatusCode::OK, axum::Json(body)).into_response()
}

impl Latrexa {
    fn key_ok(&self, given: Option<&str>) -> bool {
        given.is_some_and(|k| secret_eq(k, &self.api_key))
    }

    fn org_ok(&self, headers: &HeaderMap) -> bool {
        crate::header(headers, "x-organization-code").is_some_and(|o| o == &*self.org_code)
    }

    /// The API's check: bearer key and organization code, then the down switch of `endpoint`;
    /// the error answer when one fails.
    fn check(&self, headers: &HeaderMap, endpoint: &str) -> Option<Response> {
        if !(self.key_ok(crate::bearer(headers)) && self.org_ok(headers)) {
            return Some(unauthorized());
        }
        if lock(&self.db).api_down.contains(endpoint) {
            return Some(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "The integration API is unavailable.",
            ));
        }
        None
    }

    /// Sends a hub invocation of `target` with `booking` to every open connection.
    fn push(&self, target: &str, booking: &PendingBooking) {
        let msg = json!({"type": 1, "target": target, "arguments": [booking]});
        // No receiver (no open connection) is not an error: the agent polls.
        let _ = self
            .hub
            .send(HubEvent::Send(format!("{msg}{RECORD_SEPARATOR}")));
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(body)
}

fn bad_request(e: &serde_json::Error) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
}

async fn pending(State(s): State<Latrexa>, headers: HeaderMap) -> Response {
    if let Some(r) = s.check(&headers, "pending") {
        return r;
    }
    let db = lock(&s.db);
    let items = db
        .bookings
        .values()
        .filter(|r| r.sync == SyncStatus::Pending)
        .map(|r| r.booking.clone())
        .collect();
    ok(&PendingBookings {
        appointments: items,
    })
}

async fn confirm(State(s): State<Latrexa>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = s.check(&headers, "confirm") {
        return r;
    }
    let req: ConfirmRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(&e),
    };
    let mut db = lock(&s.db);
    let Some(rec) = db.bookings.get_mut(&req.latrexa_id) else {
        return error(StatusCode::NOT_FOUND, "not_found", "Unknown latrexaId.");
    };
    match rec.sync {
        SyncStatus::Rejected => {
            return error(
                StatusCode::CONFLICT,
                "conflict",
                "The booking was rejected.",
            )
        }
        SyncStatus::Confirmed
            if rec.booking.his_appointment_id.as_deref() != Some(&req.his_appointment_id) =>
        {
            return error(
                StatusCode::CONFLICT,
                "conflict",
                "The booking was confirmed with another hisAppointmentId.",
            )
        }
        SyncStatus::Confirmed => {}
        SyncStatus::Pending => {
            rec.sync = SyncStatus::Confirmed;
            rec.booking.his_appointment_id = Some(req.his_appointment_id.clone());
        }
    }
    let version = rec.booking.version;
    db.sync_calls
        .push(json!({"call": "confirm", "request": req, "version": version}));
    ok(&SyncResponse {
        latrexa_id: req.latrexa_id,
        sync_status: SyncStatus::Confirmed,
    })
}

async fn reject(State(s): State<Latrexa>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = s.check(&headers, "reject") {
        return r;
    }
    let req: RejectRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(&e),
    };
    if req.reason.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "reason is required.",
        );
    }
    let mut db = lock(&s.db);
    let Some(rec) = db.bookings.get_mut(&req.latrexa_id) else {
        return error(StatusCode::NOT_FOUND, "not_found", "Unknown latrexaId.");
    };
    match rec.sync {
        SyncStatus::Confirmed => {
            return error(
                StatusCode::CONFLICT,
                "conflict",
                "The booking was already confirmed.",
            )
        }
        SyncStatus::Rejected => {}
        SyncStatus::Pending => {
            rec.sync = SyncStatus::Rejected;
            rec.reject_reason = Some(req.reason.clone());
        }
    }
    let version = rec.booking.version;
    db.sync_calls
        .push(json!({"call": "reject", "request": req, "version": version}));
    ok(&SyncResponse {
        latrexa_id: req.latrexa_id,
        sync_status: SyncStatus::Rejected,
    })
}

/// An error answer when `value` is not local `YYYY-MM-DDTHH:MM:SS`.
fn local_time_problem(field: &str, value: &str) -> Option<Response> {
    chrono::NaiveDateTime::parse_from_str(value, LOCAL_TIME)
        .is_err()
        .then(|| {
            error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{field} must be local time YYYY-MM-DDTHH:MM:SS."),
            )
        })
}

async fn upload(State(s): State<Latrexa>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = s.check(&headers, "upload") {
        return r;
    }
    let req: UploadRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(&e),
    };
    let mut db = lock(&s.db);
    let mut ids = Vec::with_capacity(req.appointments.len());
    for appt in req.appointments {
        let his_id = appt.his_appointment_id.clone();
        // Known HIS id: the same Latrexa appointment. Otherwise an upload that names its
        // Latrexa id (an online booking the HIS wrote) is that appointment, not a new one.
        let latrexa_id = match (db.uploads.get(&his_id), &appt.latrexa_id) {
            (Some((id, _)), _) => id.clone(),
            (None, Some(id)) if !id.is_empty() => id.clone(),
            (None, _) => {
                db.next_upload += 1;
                format!("LX-AP-{:06}", db.next_upload)
            }
        };
        db.uploads
            .insert(his_id.clone(), (latrexa_id.clone(), appt));
        ids.push(IdPair {
            his_appointment_id: his_id,
            latrexa_id,
        });
    }
    ok(&UploadResponse {
        accepted: u32::try_from(ids.len()).unwrap_or(u32::MAX),
        mappings: ids,
    })
}

async fn heartbeat(State(s): State<Latrexa>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = s.check(&headers, "heartbeat") {
        return r;
    }
    let beat: Heartbeat = match parse(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(&e),
    };
    let mut db = lock(&s.db);
    db.heartbeats += 1;
    db.last_heartbeat = Some(beat);
    ok(&HeartbeatResponse {
        ok: true,
        server_time: crate::now_rfc3339(),
    })
}

/// Query of negotiate and of the hub socket.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HubQuery {
    #[serde(default)]
    negotiate_version: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "access_token")]
    access_token: Option<String>,
}

fn hub_unavailable() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "The integration hub is unavailable.",
    )
}

fn random_token(seed: &str, n: u64) -> String {
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    hex::encode(Sha256::digest(format!("{seed}/{n}/{nanos}")))[..22].to_string()
}

async fn negotiate(
    State(s): State<Latrexa>,
    Query(q): Query<HubQuery>,
    headers: HeaderMap,
) -> Response {
    let key = crate::bearer(&headers).or(q.access_token.as_deref());
    if !s.key_ok(key) || !s.org_ok(&headers) {
        return unauthorized();
    }
    let mut db = lock(&s.db);
    if db.hub_down {
        return hub_unavailable();
    }
    db.next_connection += 1;
    let n = db.next_connection;
    let connection_id = random_token("id", n);
    let version = q.negotiate_version.unwrap_or(0).min(1);
    // Version 0 clients connect with the connection id itself.
    let token = if version >= 1 {
        random_token("token", n)
    } else {
        connection_id.clone()
    };
    db.connection_tokens
        .insert(token.clone(), connection_id.clone());
    let transports = json!([{"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}]);
    let body = if version >= 1 {
        json!({"negotiateVersion": 1, "connectionId": connection_id,
               "connectionToken": token, "availableTransports": transports})
    } else {
        json!({"negotiateVersion": 0, "connectionId": connection_id,
               "availableTransports": transports})
    };
    json(StatusCode::OK, body)
}

async fn hub_socket(
    State(s): State<Latrexa>,
    Query(q): Query<HubQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let key = crate::bearer(&headers).or(q.access_token.as_deref());
    if !s.key_ok(key) {
        return unauthorized();
    }
    let events = {
        let mut db = lock(&s.db);
        if db.hub_down {
            return hub_unavailable();
        }
        let known =
            q.id.as_ref()
                .and_then(|id| db.connection_tokens.remove(id))
                .is_some();
        if !known {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                "No connection with that ID.",
            );
        }
        db.hub_connections += 1;
        // Subscribed before the handshake answer, so nothing sent after it is missed.
        s.hub.subscribe()
    };
    let (ping, shutdown) = (s.ping, s.shutdown.clone());
    ws.on_upgrade(move |socket| hub_session(socket, events, ping, shutdown))
}

/// Whole records (without the separator) in `text`, and what is left after the last one.
fn records(text: &str) -> (Vec<&str>, &str) {
    let mut parts: Vec<&str> = text.split(RECORD_SEPARATOR).collect();
    let rest = parts.pop().unwrap_or_default();
    (parts, rest)
}

async fn send_text(socket: &mut WebSocket, text: String) -> bool {
    socket.send(Message::Text(text.into())).await.is_ok()
}

/// Reads the client's handshake; `Err` holds the error to answer, `Ok(false)` a closed socket.
async fn read_handshake(socket: &mut WebSocket) -> Result<bool, String> {
    let mut buffer = String::new();
    loop {
        let msg = match socket.recv().await {
            Some(Ok(m)) => m,
            Some(Err(_)) | None => return Ok(false),
        };
        match msg {
            Message::Text(t) => buffer.push_str(t.as_str()),
            Message::Binary(b) => buffer.push_str(&String::from_utf8_lossy(&b)),
            Message::Close(_) => return Ok(false),
            Message::Ping(_) | Message::Pong(_) => continue,
        }
        let (complete, _) = records(&buffer);
        let Some(first) = complete.first() else {
            continue;
        };
        let hs: serde_json::Value =
            serde_json::from_str(first).map_err(|_| "Handshake was not valid JSON.".to_string())?;
        return match hs["protocol"].as_str() {
            Some("json") => Ok(true),
            Some(other) => Err(format!("The protocol '{other}' is not supported.")),
            None => Err("Handshake is missing the protocol.".into()),
        };
    }
}

async fn hub_session(
    mut socket: WebSocket,
    mut events: broadcast::Receiver<HubEvent>,
    ping_every: Duration,
    shutdown: CancellationToken,
) {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, read_handshake(&mut socket)).await {
        Ok(Ok(true)) => {
            if !send_text(&mut socket, format!("{{}}{RECORD_SEPARATOR}")).await {
                return;
            }
        }
        Ok(Ok(false)) => return,
        Ok(Err(reason)) => {
            let answer = json!({ "error": reason });
            let _ = send_text(&mut socket, format!("{answer}{RECORD_SEPARATOR}")).await;
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
        Err(_) => {
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
    }
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    let close_msg = |reason: &str| {
        format!(
            "{}{RECORD_SEPARATOR}",
            json!({"type": 7, "error": reason, "allowReconnect": true})
        )
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                let _ = send_text(&mut socket, close_msg("Server is shutting down.")).await;
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
            ev = events.recv() => match ev {
                Ok(HubEvent::Send(text)) => {
                    if !send_text(&mut socket, text).await {
                        break;
                    }
                }
                Ok(HubEvent::Close) | Err(broadcast::error::RecvError::Closed) => {
                    let _ = send_text(&mut socket, close_msg("The hub is unavailable.")).await;
                    let _ = socket.send(Message::Close(None)).await;
                    break;
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
            },
            _ = ping.tick() => {
                if !send_text(&mut socket, format!("{{\"type\":6}}{RECORD_SEPARATOR}")).await {
                    break;
                }
            }
            msg = socket.recv() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t.as_str().to_string(),
                    Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                };
                if !answer_client(&mut socket, &text).await {
                    break;
                }
            }
        }
    }
}

/// Handles hub messages from the client; false when the connection should end.
async fn answer_client(socket: &mut WebSocket, text: &str) -> bool {
    let (complete, _) = records(text);
    for record in complete {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(record) else {
            continue;
        };
        match msg["type"].as_u64() {
            Some(7) => return false,
            // The hub has no methods for clients to call: answer invocations that want one.
            Some(1 | 4) => {
                if let Some(id) = msg["invocationId"].as_str() {
                    let target = msg["target"].as_str().unwrap_or_default();
                    let completion = json!({"type": 3, "invocationId": id,
                        "error": format!("Unknown hub method '{target}'")});
                    if !send_text(socket, format!("{completion}{RECORD_SEPARATOR}")).await {
                        return false;
                    }
                }
            }
            _ => {}
        }
    }
    true
}

async fn hub_down(State(s): State<Latrexa>) -> Response {
    lock(&s.db).hub_down = true;
    let _ = s.hub.send(HubEvent::Close);
    json(StatusCode::OK, json!({"hub": "down"}))
}

async fn hub_up(State(s): State<Latrexa>) -> Response {
    lock(&s.db).hub_down = false;
    json(StatusCode::OK, json!({"hub": "up"}))
}

/// Body of the test-control `POST /_api/down`: which endpoints answer 503 (all when empty).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiDown {
    #[serde(default)]
    endpoints: Vec<String>,
}

const ENDPOINTS: [&str; 5] = ["pending", "upload", "confirm", "reject", "heartbeat"];

async fn api_down(State(s): State<Latrexa>, body: Bytes) -> Response {
    let req: ApiDown = if body.is_empty() {
        ApiDown::default()
    } else {
        match parse(&body) {
            Ok(r) => r,
            Err(e) => return bad_request(&e),
        }
    };
    if let Some(bad) = req
        .endpoints
        .iter()
        .find(|e| !ENDPOINTS.contains(&e.as_str()))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("unknown endpoint '{bad}'; use {}", ENDPOINTS.join(", ")),
        );
    }
    let down: Vec<String> = if req.endpoints.is_empty() {
        ENDPOINTS.iter().map(|e| e.to_string()).collect()
    } else {
        req.endpoints
    };
    let mut db = lock(&s.db);
    db.api_down.extend(down);
    json(StatusCode::OK, json!({"down": db.api_down}))
}

async fn api_up(State(s): State<Latrexa>) -> Response {
    let mut db = lock(&s.db);
    db.api_down.clear();
    json(StatusCode::OK, json!({"down": db.api_down}))
}

async fn new_booking(State(s): State<Latrexa>, body: Bytes) -> Response {
    let req: NewBooking = match parse(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(&e),
    };
    for (field, value) in [("start", &req.start), ("end", &req.end)] {
        if let Some(r) = local_time_problem(field, value) {
            return r;
        }
    }
    let booking = {
        let mut db = lock(&s.db);
        db.next_booking += 1;
        let booking = PendingBooking {
            id: format!("LX-BK-{:06}", db.next_booking),
            action: BookingAction::Create,
            his_appointment_id: None,
            patient_no: req.patient_no,
            national_id: req.national_id,
            first_name: req.first_name,
            last_name: req.last_name,
            mobile: req.mobile,
            email: req.email,
            date_of_birth: req.date_of_birth,
            gender: req.gender,
            doctor_code: req.doctor_code,
            clinic_code: req.clinic_code,
            service_code: req.service_code,
            start: req.start,
            end: req.end,
            reason: req.reason,
            notes: req.notes,
            created_at: Some(Utc::now().format(LOCAL_TIME).to_string()),
            version: 1,
        };
        db.bookings.insert(
            booking.id.clone(),
            BookingRecord {
                booking: booking.clone(),
                sync: SyncStatus::Pending,
                reject_reason: None,
            },
        );
        booking
    };
    s.push(APPOINTMENT_CREATED, &booking);
    (StatusCode::CREATED, axum::Json(booking)).into_response()
}

/// Applies `change` to booking `id` and pushes `target` to the hub.
///
/// A cancelled booking cannot change any more (409; cancelling it again answers it unchanged).
/// The change makes the booking pending again, except a cancellation of a booking the HIS
/// rejected: the HIS never had it, so there is nothing to sync. A change of a booking the HIS
/// confirmed (it has a `hisAppointmentId`) is a `reschedule`; before that it stays a `create`.
fn change_booking(
    s: &Latrexa,
    id: &str,
    target: &str,
    change: impl FnOnce(&mut PendingBooking),
) -> Response {
    let cancelling = target == APPOINTMENT_CANCELLED;
    let booking = {
        let mut db = lock(&s.db);
        let Some(rec) = db.bookings.get_mut(id) else {
            return error(StatusCode::NOT_FOUND, "not_found", "Unknown booking id.");
        };
        if rec.booking.action == BookingAction::Cancel {
            if cancelling {
                return ok(&rec.booking);
            }
            return error(
                StatusCode::CONFLICT,
                "conflict",
                "The booking is cancelled.",
            );
        }
        change(&mut rec.booking);
        rec.booking.action = if cancelling {
            BookingAction::Cancel
        } else if rec.booking.his_appointment_id.is_some() {
            BookingAction::Reschedule
        } else {
            BookingAction::Create
        };
        rec.booking.version += 1;
        if !(cancelling && rec.sync == SyncStatus::Rejected) {
            rec.sync = SyncStatus::Pending;
            rec.reject_reason = None;
        }
        rec.booking.clone()
    };
    s.push(target, &booking);
    ok(&booking)
}

async fn update_booking(State(s): State<Latrexa>, Path(id): Path<String>, body: Bytes) -> Response {
    let upd: BookingUpdate = match parse(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(&e),
    };
    for (field, value) in [("start", &upd.start), ("end", &upd.end)] {
        if let Some(r) = value.as_deref().and_then(|v| local_time_problem(field, v)) {
            return r;
        }
    }
    change_booking(&s, &id, APPOINTMENT_UPDATED, |b| {
        if let Some(v) = upd.doctor_code {
            b.doctor_code = v;
        }
        if let Some(v) = upd.clinic_code {
            b.clinic_code = v;
        }
        if let Some(v) = upd.start {
            b.start = v;
        }
        if let Some(v) = upd.end {
            b.end = v;
        }
        if upd.notes.is_some() {
            b.notes = upd.notes;
        }
    })
}

async fn cancel_booking(State(s): State<Latrexa>, Path(id): Path<String>) -> Response {
    change_booking(&s, &id, APPOINTMENT_CANCELLED, |_| {})
}

async fn state_view(State(s): State<Latrexa>) -> Response {
    let db = lock(&s.db);
    let bookings: Vec<_> = db
        .bookings
        .values()
        .map(|r| {
            json!({"booking": r.booking, "syncStatus": r.sync, "rejectReason": r.reject_reason})
        })
        .collect();
    let uploads: Vec<_> = db
        .uploads
        .values()
        .map(|(id, a)| json!({"latrexaId": id, "appointment": a}))
        .collect();
    json(
        StatusCode::OK,
        json!({
            "bookings": bookings,
            "uploads": uploads,
            "syncCalls": db.sync_calls,
            "heartbeats": {"count": db.heartbeats, "last": db.last_heartbeat},
            "hub": {"down": db.hub_down, "connections": db.hub_connections},
            "api": {"down": db.api_down},
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{status_json, TestSandbox};
    use crate::SandboxConfig;
    use futures::{SinkExt, StreamExt};
    use serde_json::Value;
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    const KEY: &str = "sandbox-latrexa-key";
    const ORG: &str = "sandbox-clinic";

    fn api(t: &TestSandbox, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        t.http
            .request(method, t.url(&format!("/latrexa/api/integration/{path}")))
            .bearer_auth(KEY)
            .header("X-Organization-Code", ORG)
    }

    fn new_booking_body(doctor: &str) -> Value {
        json!({
            "firstName": "Léa", "lastName": "Haddad", "mobile": "+966500000001", "gender": "female",
            "doctorCode": doctor, "clinicCode": "CLN-1",
            "start": "2026-06-15T10:30:00", "end": "2026-06-15T11:00:00"
        })
    }

    async fn book(t: &TestSandbox, doctor: &str) -> PendingBooking {
        let r = t
            .http
            .post(t.url("/latrexa/_bookings"))
            .json(&new_booking_body(doctor))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 201);
        r.json().await.expect("booking")
    }

    async fn pending_ids(t: &TestSandbox) -> Vec<String> {
        let r = api(t, reqwest::Method::GET, "appointments/pending")
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 200);
        let p: PendingBookings = r.json().await.expect("pending");
        p.appointments.into_iter().map(|b| b.id).collect()
    }

    #[tokio::test]
    async fn missing_key_or_org_code_is_401() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        let url = t.url("/latrexa/api/integration/appointments/pending");
        let r = t
            .http
            .get(&url)
            .header("X-Organization-Code", ORG)
            .send()
            .await
            .expect("sent");
        let (status, body) = status_json(r).await;
        assert_eq!(status, 401);
        assert_eq!(body["error"], "unauthorized");
        let r = t
            .http
            .get(&url)
            .bearer_auth(KEY)
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 401);
        let r = t
            .http
            .get(&url)
            .bearer_auth(KEY)
            .header("X-Organization-Code", "other")
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 401);
        let r = t
            .http
            .get(&url)
            .bearer_auth("wrong")
            .header("X-Organization-Code", ORG)
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 401);
    }

    #[tokio::test]
    async fn confirmed_booking_leaves_pending_and_confirm_is_idempotent() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        let b = book(&t, "DOC-1").await;
        let other = book(&t, "DOC-2").await;
        assert_eq!(pending_ids(&t).await, [b.id.clone(), other.id.clone()]);
        let confirm = json!({"latrexaId": b.id, "hisAppointmentId": "HIS-77"});
        for _ in 0..2 {
            let r = api(&t, reqwest::Method::POST, "appointments/confirm")
                .json(&confirm)
                .send()
                .await
                .expect("sent");
            let (status, body) = status_json(r).await;
            assert_eq!(
                (status, body),
                (200, json!({"latrexaId": b.id, "syncStatus": "confirmed"}))
            );
        }
        assert_eq!(pending_ids(&t).await, std::slice::from_ref(&other.id));
        let clash = json!({"latrexaId": b.id, "hisAppointmentId": "HIS-78"});
        let r = api(&t, reqwest::Method::POST, "appointments/confirm")
            .json(&clash)
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 409);
        let unknown = json!({"latrexaId": "LX-BK-999", "hisAppointmentId": "H"});
        let r = api(&t, reqwest::Method::POST, "appointments/confirm")
            .json(&unknown)
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 404);
        let state = t.get_json("/latrexa/_state").await;
        assert_eq!(state["bookings"][0]["syncStatus"], "confirmed");
        assert_eq!(
            state["bookings"][0]["booking"]["hisAppointmentId"],
            "HIS-77"
        );
    }

    #[tokio::test]
    async fn change_after_confirm_is_a_reschedule_and_times_are_local() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        let mut body = new_booking_body("DOC-1");
        body["start"] = json!("2026-06-15T10:30:00Z");
        let r = t
            .http
            .post(t.url("/latrexa/_bookings"))
            .json(&body)
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 400, "an offset is not local time");
        let b = book(&t, "DOC-1").await;
        assert_eq!((b.action, b.version), (BookingAction::Create, 1));
        let update = |id: String| {
            t.http
                .post(t.url(&format!("/latrexa/_bookings/{id}/update")))
                .json(&json!({"notes": "later"}))
                .send()
        };
        let before: PendingBooking = update(b.id.clone())
            .await
            .expect("sent")
            .json()
            .await
            .expect("booking");
        assert_eq!(
            (before.action, before.version),
            (BookingAction::Create, 2),
            "not confirmed yet: still a create"
        );
        api(&t, reqwest::Method::POST, "appointments/confirm")
            .json(&json!({"latrexaId": b.id, "hisAppointmentId": "HIS-1"}))
            .send()
            .await
            .expect("sent");
        let after: PendingBooking = update(b.id.clone())
            .await
            .expect("sent")
            .json()
            .await
            .expect("booking");
        assert_eq!(
            (
                after.action,
                after.version,
                after.his_appointment_id.as_deref()
            ),
            (BookingAction::Reschedule, 3, Some("HIS-1"))
        );
        t.http
            .post(t.url("/latrexa/_api/down"))
            .send()
            .await
            .expect("sent");
        let r = api(&t, reqwest::Method::GET, "appointments/pending")
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 503);
        t.http
            .post(t.url("/latrexa/_api/up"))
            .send()
            .await
            .expect("sent");
        assert_eq!(pending_ids(&t).await, std::slice::from_ref(&b.id));
        let state = t.get_json("/latrexa/_state").await;
        assert_eq!(state["syncCalls"][0]["call"], "confirm");
        assert_eq!(state["syncCalls"][0]["version"], 2);
    }

    #[tokio::test]
    async fn reject_with_reason_is_kept_and_cancel_after_confirm_is_pending_again() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        let b = book(&t, "DOC-1").await;
        let no_reason = json!({"latrexaId": b.id, "reason": " "});
        let r = api(&t, reqwest::Method::POST, "appointments/reject")
            .json(&no_reason)
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 400);
        let reject = json!({"latrexaId": b.id, "reason": "slot unavailable"});
        let r = api(&t, reqwest::Method::POST, "appointments/reject")
            .json(&reject)
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 200);
        assert!(pending_ids(&t).await.is_empty());
        let state = t.get_json("/latrexa/_state").await;
        assert_eq!(state["bookings"][0]["syncStatus"], "rejected");
        assert_eq!(state["bookings"][0]["rejectReason"], "slot unavailable");

        let c = book(&t, "DOC-2").await;
        let confirm = json!({"latrexaId": c.id, "hisAppointmentId": "HIS-9"});
        api(&t, reqwest::Method::POST, "appointments/confirm")
            .json(&confirm)
            .send()
            .await
            .expect("sent");
        let r = t
            .http
            .post(t.url(&format!("/latrexa/_bookings/{}/cancel", c.id)))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 200);
        let r = api(&t, reqwest::Method::GET, "appointments/pending")
            .send()
            .await
            .expect("sent");
        let p: PendingBookings = r.json().await.expect("pending");
        assert_eq!(p.appointments.len(), 1);
        assert_eq!(p.appointments[0].action, BookingAction::Cancel);
        assert_eq!(
            p.appointments[0].his_appointment_id.as_deref(),
            Some("HIS-9")
        );
        assert_eq!(p.appointments[0].version, 2);

        let r = t
            .http
            .post(t.url(&format!("/latrexa/_bookings/{}/cancel", b.id)))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 200);
        let r = t
            .http
            .post(t.url(&format!("/latrexa/_bookings/{}/update", c.id)))
            .json(&json!({"notes": "too late"}))
            .send()
            .await
            .expect("sent");
        assert_eq!(
            r.status().as_u16(),
            409,
            "a cancelled booking cannot change"
        );
        let state = t.get_json("/latrexa/_state").await;
        assert_eq!(
            state["bookings"][0]["syncStatus"], "rejected",
            "cancelling a rejected booking syncs nothing"
        );
        assert_eq!(pending_ids(&t).await, std::slice::from_ref(&c.id));
    }

    #[tokio::test]
    async fn upload_is_keyed_by_his_id_and_heartbeats_are_counted() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        let appt = json!({"hisAppointmentId": "H-1", "patientNo": "P-1", "patientName": "A B", "doctorCode": "D", "clinicCode": "C",
            "start": "2026-06-15T10:30:00", "end": "2026-06-15T11:00:00", "status": "booked"});
        let r = api(&t, reqwest::Method::POST, "appointments/upload")
            .json(&json!({"appointments": [appt]}))
            .send()
            .await
            .expect("sent");
        let first: UploadResponse = r.json().await.expect("upload response");
        assert_eq!(first.accepted, 1);
        let r = api(&t, reqwest::Method::POST, "appointments/upload")
            .json(&json!({"appointments": [appt]}))
            .send()
            .await
            .expect("sent");
        let second: UploadResponse = r.json().await.expect("upload response");
        assert_eq!(second.mappings, first.mappings);
        let r = api(&t, reqwest::Method::POST, "appointments/upload")
            .json(&json!({"appointments": "x"}))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 400);
        // A field the documented shape does not have is refused, not ignored.
        let mut drifted = appt.clone();
        drifted["hisAppointmentNo"] = json!("H-1");
        let r = api(&t, reqwest::Method::POST, "appointments/upload")
            .json(&json!({"appointments": [drifted]}))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 400);
        // A new HIS id naming a Latrexa id is paired with it, not given a new one.
        let mut echo = appt.clone();
        echo["hisAppointmentId"] = json!("H-2");
        echo["latrexaId"] = json!("LX-ONLINE-1");
        let r = api(&t, reqwest::Method::POST, "appointments/upload")
            .json(&json!({"appointments": [echo]}))
            .send()
            .await
            .expect("sent");
        let paired: UploadResponse = r.json().await.expect("upload response");
        assert_eq!(paired.mappings[0].latrexa_id, "LX-ONLINE-1");
        for _ in 0..2 {
            let r = api(&t, reqwest::Method::POST, "heartbeat")
                .json(&json!({"agent": "switchboard/1.2.0", "hisConnected": true, "pending": 0, "timestamp": "2026-06-15T07:00:00Z"}))
                .send()
                .await
                .expect("sent");
            assert_eq!(r.status().as_u16(), 200);
        }
        let state = t.get_json("/latrexa/_state").await;
        assert_eq!(state["uploads"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            state["uploads"][0]["appointment"]["start"],
            "2026-06-15T10:30:00"
        );
        assert_eq!(state["heartbeats"]["count"], 2);
        assert_eq!(state["heartbeats"]["last"]["agent"], "switchboard/1.2.0");
    }

    type Ws = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    async fn negotiate(t: &TestSandbox) -> reqwest::Response {
        t.http
            .post(t.url("/latrexa/hubs/integration/negotiate?negotiateVersion=1"))
            .bearer_auth(KEY)
            .header("X-Organization-Code", ORG)
            .send()
            .await
            .expect("sent")
    }

    /// Next hub record from the server, skipping pings.
    async fn next_record(ws: &mut Ws) -> Value {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .expect("hub answers in time")
                .expect("socket open")
                .expect("frame");
            let WsMessage::Text(text) = msg else { continue };
            let text = text.as_str();
            assert!(text.ends_with(RECORD_SEPARATOR), "{text:?}");
            let v: Value =
                serde_json::from_str(text.trim_end_matches(RECORD_SEPARATOR)).expect("json record");
            if v["type"] != 6 {
                return v;
            }
        }
    }

    async fn connect_hub(t: &TestSandbox) -> Ws {
        let (status, n) = status_json(negotiate(t).await).await;
        assert_eq!(status, 200);
        assert_eq!(n["availableTransports"][0]["transport"], "WebSockets");
        let token = n["connectionToken"].as_str().expect("token");
        let url = format!(
            "ws://{}/latrexa/hubs/integration?id={token}&access_token={KEY}",
            t.sb.http_addr
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        ws.send(WsMessage::text(format!(
            "{{\"protocol\":\"json\",\"version\":1}}{RECORD_SEPARATOR}"
        )))
        .await
        .expect("handshake sent");
        assert_eq!(next_record(&mut ws).await, json!({}), "handshake answer");
        ws
    }

    #[tokio::test]
    async fn hub_pushes_created_updated_and_cancelled_bookings() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        let r = t
            .http
            .post(t.url("/latrexa/hubs/integration/negotiate?negotiateVersion=1"))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 401, "negotiate needs the key");
        let mut ws = connect_hub(&t).await;
        let b = book(&t, "DOC-1").await;
        let msg = next_record(&mut ws).await;
        assert_eq!(msg["type"], 1);
        assert_eq!(msg["target"], "AppointmentCreated");
        let pushed: PendingBooking =
            serde_json::from_value(msg["arguments"][0].clone()).expect("booking");
        assert_eq!(pushed, b);
        t.http
            .post(t.url(&format!("/latrexa/_bookings/{}/update", b.id)))
            .json(&json!({"start": "2026-06-16T10:30:00", "end": "2026-06-16T11:00:00"}))
            .send()
            .await
            .expect("sent");
        let msg = next_record(&mut ws).await;
        assert_eq!(
            (
                msg["target"].clone(),
                msg["arguments"][0]["version"].clone()
            ),
            (json!("AppointmentUpdated"), json!(2))
        );
        t.http
            .post(t.url(&format!("/latrexa/_bookings/{}/cancel", b.id)))
            .send()
            .await
            .expect("sent");
        let msg = next_record(&mut ws).await;
        assert_eq!(
            (msg["target"].clone(), msg["arguments"][0]["action"].clone()),
            (json!("AppointmentCancelled"), json!("cancel"))
        );
    }

    #[tokio::test]
    async fn hub_pings_open_connections() {
        let mut cfg = SandboxConfig::for_tests();
        cfg.latrexa_hub_ping_ms = 20;
        let t = TestSandbox::start(cfg).await;
        let mut ws = connect_hub(&t).await;
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("ping in time")
            .expect("socket open")
            .expect("frame");
        assert_eq!(
            msg,
            WsMessage::text(format!("{{\"type\":6}}{RECORD_SEPARATOR}"))
        );
    }

    #[tokio::test]
    async fn hub_socket_needs_key_and_a_negotiated_token() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        let (_, n) = status_json(negotiate(&t).await).await;
        let token = n["connectionToken"].as_str().expect("token");
        let no_key = format!(
            "ws://{}/latrexa/hubs/integration?id={token}",
            t.sb.http_addr
        );
        assert!(tokio_tungstenite::connect_async(no_key).await.is_err());
        let bad_id = format!(
            "ws://{}/latrexa/hubs/integration?id=nope&access_token={KEY}",
            t.sb.http_addr
        );
        assert!(tokio_tungstenite::connect_async(bad_id).await.is_err());
    }

    #[tokio::test]
    async fn hub_down_closes_sockets_and_answers_503_until_up() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        let mut ws = connect_hub(&t).await;
        let r = t
            .http
            .post(t.url("/latrexa/_hub/down"))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 200);
        let msg = next_record(&mut ws).await;
        assert_eq!(msg["type"], 7, "close message");
        let (status, body) = status_json(negotiate(&t).await).await;
        assert_eq!((status, body["error"].clone()), (503, json!("unavailable")));
        let b = book(&t, "DOC-1").await;
        assert_eq!(
            pending_ids(&t).await,
            [b.id],
            "polling still works while the hub is down"
        );
        t.http
            .post(t.url("/latrexa/_hub/up"))
            .send()
            .await
            .expect("sent");
        assert_eq!(negotiate(&t).await.status().as_u16(), 200);
    }
}
