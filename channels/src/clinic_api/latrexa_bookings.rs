//! Latrexa -> HIS, the protocol side: how the engine fetches online bookings from Latrexa and
//! answers for them (seed `latrexa-sync-agent.txt`, wire types in
//! [`transforms::dest::latrexa`]).
//!
//! - [`BookingsConfig`] is the `[source]` table of a channel with `type = "latrexa"`.
//! - [`LatrexaApi`] makes the REST calls: `pending`, `confirm`, `reject`, `heartbeat`, each
//!   with `Authorization: Bearer <api key>` and `X-Organization-Code: <organization code>`.
//! - [`run_hub`] keeps a connection to the SignalR hub (negotiate, WebSocket, JSON hub
//!   protocol with its 0x1E record separator, handshake, pings both ways) and hands every
//!   `AppointmentCreated`, `AppointmentUpdated` and `AppointmentCancelled` booking to the
//!   engine; when the hub is unreachable it says so (the engine then polls) and tries again
//!   with exponential backoff.
//!
//! Not here: the store, the id mapping, the SIU exchange with the HIS and the decision to
//! confirm or reject; those are in the engine (`engine::latrexa_bookings`).

use crate::mllp::sender::{OnError, SenderConfig};
use crate::secret::SecretRef;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use transforms::dest::latrexa::{
    ConfirmRequest, ErrorBody, Heartbeat, PendingBooking, RejectRequest, CONFIRM_PATH,
    HEARTBEAT_PATH, HUB_EVENTS, HUB_PATH, PENDING_PATH, RECORD_SEPARATOR, REJECT_PATH,
};

/// A channel that takes online bookings from Latrexa and writes them into the HIS
/// (`[source] type = "latrexa"`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BookingsConfig {
    /// Base URL of your Latrexa clinic, e.g. `https://clinic.latrexa.example`; the integration
    /// API (`/api/integration/...`) and the hub (`/hubs/integration`) are below it.
    pub base_url: String,
    /// The integration API key from Clinic Admin -> Settings -> Integration (sent as
    /// `Authorization: Bearer`), as `{ env = "NAME" }` or `{ file = "path" }`.
    pub api_key: SecretRef,
    /// Your organization code (Latrexa subdomain / clinic identifier), sent as
    /// `X-Organization-Code`.
    pub organization_code: String,
    /// Seconds between two fetches of the pending bookings while the hub is not connected
    /// (or `hub = false`). With the hub connected, pending bookings are fetched once after
    /// each (re)connection and then arrive in real time.
    #[serde(default = "default_poll_interval_secs")]
    pub poll_interval_secs: u64,
    /// Receive bookings in real time over the SignalR hub; polling takes over whenever the
    /// hub is unreachable.
    #[serde(default = "default_hub")]
    pub hub: bool,
    /// Longest wait between two hub connection attempts, in seconds (the first retry is after
    /// 1 s, then the wait doubles).
    #[serde(default = "default_hub_reconnect_max_secs")]
    pub hub_reconnect_max_secs: u64,
    /// Seconds without any message from the hub (it pings every 15 s) after which the
    /// connection is taken for dead and made again.
    #[serde(default = "default_hub_timeout_secs")]
    pub hub_timeout_secs: u64,
    /// Seconds between two heartbeats (`POST /api/integration/heartbeat`, shown in Clinic
    /// Admin).
    #[serde(default = "default_heartbeat_interval_secs")]
    pub heartbeat_interval_secs: u64,
    /// Seconds to wait for one answer of the Latrexa API.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// First retry delay in milliseconds when Latrexa or the HIS is unreachable; doubles
    /// each attempt, with jitter. A booking is never given up for unavailability.
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
    /// Longest retry delay in milliseconds.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// A booking the HIS accepted is confirmed at Latrexa only with the HIS's own appointment
    /// id, never with the Latrexa id: from the SCH-2 of the HIS's answer (the SRR^S01 of
    /// `book_with = "srm"`, or an ACK that carries an SCH segment), else from the HIS's next
    /// SIU naming the booking (SCH-1 = the Latrexa id, SCH-2 = its id) on a channel whose
    /// Latrexa upload destination has `bookings_channel` set to this channel. Until then the
    /// booking stays pending at Latrexa and waits in the store (across restarts) while the
    /// other bookings go on. After this many seconds of waiting it is reported: a warning in
    /// the log and the error "no HIS appointment id yet" on its message record (status
    /// `retrying`). 0 reports it at once.
    #[serde(default = "default_his_id_wait_secs")]
    pub his_id_wait_secs: u64,
    /// How a new online booking is written into the HIS: `"siu"` (the default) notifies it
    /// with SIU^S12 and takes the ACK; `"srm"` requests it with SRM^S01 and reads the HIS's
    /// appointment id from SCH-2 of the SRR^S01 answer (MSA-1 AA accepts, AE/AR refuses with
    /// MSA-3). Changes and cancellations go as SIU^S13/S15 either way.
    #[serde(default)]
    pub book_with: BookWith,
    /// The HIS that receives each booking as SIU^S12/S13/S15 over MLLP (`[source.his]`).
    pub his: HisPeer,
}

/// The message a new online booking is written into the HIS with (`book_with`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BookWith {
    /// SIU^S12, answered by an ACK.
    #[default]
    Siu,
    /// SRM^S01, answered by SRR^S01 naming the HIS's appointment id in SCH-2.
    Srm,
}

/// The HIS's MLLP listener and the MSH values of the SIU messages sent to it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HisPeer {
    /// `host:port` of the HIS's MLLP listener.
    pub address: String,
    /// Seconds to wait for a connection.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Seconds to wait for the ACK of one message.
    #[serde(default = "default_ack_timeout_secs")]
    pub ack_timeout_secs: u64,
    /// MSH-3 of the SIU messages.
    #[serde(default = "default_sending_application")]
    pub sending_application: String,
    /// MSH-4 of the SIU messages.
    #[serde(default = "default_sending_facility")]
    pub sending_facility: String,
    /// MSH-5 of the SIU messages.
    #[serde(default = "default_receiving_application")]
    pub receiving_application: String,
    /// MSH-6 of the SIU messages (default empty).
    #[serde(default)]
    pub receiving_facility: String,
    /// `[source.his.tls]`: speak TLS to the HIS (see `conf/examples/mllp-tls.toml`).
    #[serde(default)]
    pub tls: Option<crate::tls::ClientTlsConfig>,
    /// MSH-11 processing id: `P` (production), `T` (training) or `D` (debugging).
    #[serde(default = "default_processing_id")]
    pub processing_id: String,
}

fn default_his_id_wait_secs() -> u64 {
    300
}
fn default_poll_interval_secs() -> u64 {
    60
}
fn default_hub() -> bool {
    true
}
fn default_hub_reconnect_max_secs() -> u64 {
    60
}
fn default_hub_timeout_secs() -> u64 {
    30
}
fn default_heartbeat_interval_secs() -> u64 {
    60
}
fn default_request_timeout_secs() -> u64 {
    30
}
fn default_retry_base_ms() -> u64 {
    1000
}
fn default_retry_max_ms() -> u64 {
    300_000
}
fn default_connect_timeout_secs() -> u64 {
    5
}
fn default_ack_timeout_secs() -> u64 {
    30
}
fn default_sending_application() -> String {
    "SWITCHBOARD".into()
}
fn default_sending_facility() -> String {
    "LATREXA".into()
}
fn default_receiving_application() -> String {
    "HIS".into()
}
fn default_processing_id() -> String {
    "P".into()
}

impl BookingsConfig {
    /// Problems the loader cannot see: (key below `source`, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            out.push((
                "base_url".into(),
                format!("'{}' is not an http(s) URL", self.base_url),
            ));
        }
        if self.organization_code.trim().is_empty() {
            out.push(("organization_code".into(), "must not be empty".into()));
        }
        for (key, v) in [
            ("poll_interval_secs", self.poll_interval_secs),
            ("hub_reconnect_max_secs", self.hub_reconnect_max_secs),
            ("hub_timeout_secs", self.hub_timeout_secs),
            ("heartbeat_interval_secs", self.heartbeat_interval_secs),
            ("request_timeout_secs", self.request_timeout_secs),
            ("retry_base_ms", self.retry_base_ms),
            ("his.connect_timeout_secs", self.his.connect_timeout_secs),
            ("his.ack_timeout_secs", self.his.ack_timeout_secs),
        ] {
            if v == 0 {
                out.push((key.into(), "must be at least 1".into()));
            }
        }
        if self.his_id_wait_secs > 86_400 {
            out.push((
                "his_id_wait_secs".into(),
                "must be at most 86400 (a day)".into(),
            ));
        }
        if self.retry_max_ms < self.retry_base_ms {
            out.push((
                "retry_max_ms".into(),
                "must not be below retry_base_ms".into(),
            ));
        }
        if !matches!(self.his.processing_id.as_str(), "P" | "T" | "D") {
            out.push((
                "his.processing_id".into(),
                format!("'{}' is not P, T or D", self.his.processing_id),
            ));
        }
        let msh_values = [
            ("his.sending_application", &self.his.sending_application),
            ("his.sending_facility", &self.his.sending_facility),
            ("his.receiving_application", &self.his.receiving_application),
            ("his.receiving_facility", &self.his.receiving_facility),
        ];
        for (key, v) in msh_values {
            if v.contains(['|', '^', '~', '\\', '&', '\r', '\n']) {
                out.push((
                    key.into(),
                    "must not contain HL7 separators (| ^ ~ \\ &)".into(),
                ));
            }
        }
        let his = self.his.sender_config();
        out.extend(
            his.problems()
                .into_iter()
                .map(|(k, m)| (format!("his.{k}"), m)),
        );
        out
    }

    /// The secret references, by key, so the loader can check they resolve.
    pub fn secrets(&self) -> Vec<(&'static str, &SecretRef)> {
        vec![("api_key", &self.api_key)]
    }
}

impl HisPeer {
    /// The MLLP sender settings for this peer: one connection, one message at a time, MSA-2
    /// checked against the sent MSH-10 (see [`crate::mllp::sender`]).
    pub fn sender_config(&self) -> SenderConfig {
        SenderConfig {
            name: "his".into(),
            address: self.address.clone(),
            connect_timeout_secs: self.connect_timeout_secs,
            ack_timeout_secs: self.ack_timeout_secs,
            on_application_error: OnError::DeadLetter,
            connections: 1,
            delivery: crate::destination::DeliveryConfig::default(),
            tls: self.tls.clone(),
        }
    }
}

/// Why a Latrexa API call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Latrexa could not be reached or answered 5xx/429: try again later.
    #[error("{endpoint}: {reason}")]
    Unavailable {
        /// The path called.
        endpoint: &'static str,
        /// What happened.
        reason: String,
    },
    /// Latrexa refused the call (4xx): trying again unchanged will not help.
    #[error("{endpoint} answered {status}: {message}")]
    Refused {
        /// The path called.
        endpoint: &'static str,
        /// The HTTP status.
        status: u16,
        /// Latrexa's `error: message`, or the start of the body.
        message: String,
    },
    /// The answer was not the documented JSON.
    #[error("{endpoint}: unreadable answer: {reason}")]
    Invalid {
        /// The path called.
        endpoint: &'static str,
        /// What did not fit.
        reason: String,
    },
}

impl ApiError {
    /// True when trying again later can help (unreachable, 5xx, 429, unreadable answer).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ApiError::Refused { status, .. } if *status != 429 && *status != 408)
    }
}

/// One item of a pending list or hub message: a booking, or what could not be read as one.
#[derive(Debug, Clone, PartialEq)]
pub enum BookingInput {
    /// A booking of the documented shape.
    Booking(Box<PendingBooking>),
    /// Not a booking: the JSON as received and why (field path, never content).
    Invalid {
        /// The item as received.
        raw: serde_json::Value,
        /// Why it is not a booking.
        reason: String,
    },
}

impl BookingInput {
    /// Reads one item.
    pub fn from_value(raw: serde_json::Value) -> BookingInput {
        match serde_json::from_value::<PendingBooking>(raw.clone()) {
            Ok(b) => BookingInput::Booking(Box::new(b)),
            Err(e) => BookingInput::Invalid {
                raw,
                reason: format!("not a Latrexa booking: {}", serde_error_text(&e)),
            },
        }
    }
}

/// serde's message without the echoed value (which could be patient data).
fn serde_error_text(e: &serde_json::Error) -> String {
    transforms::serde_reason::of_json(e)
}

/// The Latrexa integration API of one organization.
#[derive(Debug, Clone)]
pub struct LatrexaApi {
    http: reqwest::Client,
    base: String,
    api_key: String,
    organization_code: String,
}

impl LatrexaApi {
    /// A client for `base_url` (without a trailing slash) with the resolved API key.
    ///
    /// # Errors
    ///
    /// A sentence when the HTTP client cannot be built.
    pub fn new(
        base_url: &str,
        api_key: String,
        organization_code: &str,
        timeout: Duration,
    ) -> Result<LatrexaApi, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(LatrexaApi {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            api_key,
            organization_code: organization_code.to_string(),
        })
    }

    /// The base URL, for logs.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.api_key)
            .header("X-Organization-Code", &self.organization_code)
    }

    async fn call(
        &self,
        endpoint: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Result<serde_json::Value, ApiError> {
        let resp = req.send().await.map_err(|e| ApiError::Unavailable {
            endpoint,
            reason: if e.is_timeout() {
                "no answer in time".into()
            } else {
                format!("cannot connect ({})", without_url(&e))
            },
        })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| ApiError::Unavailable {
            endpoint,
            reason: format!("answer cut off ({})", without_url(&e)),
        })?;
        if (200..300).contains(&status) {
            if bytes.is_empty() {
                return Ok(serde_json::Value::Null);
            }
            return serde_json::from_slice(&bytes).map_err(|e| ApiError::Invalid {
                endpoint,
                reason: serde_error_text(&e),
            });
        }
        let message = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => format!("{}: {}", b.error, b.message),
            Err(_) => String::from_utf8_lossy(&bytes).chars().take(200).collect(),
        };
        if status >= 500 || status == 429 || status == 408 {
            return Err(ApiError::Unavailable {
                endpoint,
                reason: format!("answered {status}: {message}"),
            });
        }
        Err(ApiError::Refused {
            endpoint,
            status,
            message,
        })
    }

    /// `GET /api/integration/appointments/pending`: the bookings awaiting HIS sync, each read
    /// on its own so that one bad item does not hide the others.
    ///
    /// # Errors
    ///
    /// [`ApiError`] when the call fails or the answer is not `{"appointments":[...]}`.
    pub async fn pending(&self) -> Result<Vec<BookingInput>, ApiError> {
        let v = self
            .call(
                PENDING_PATH,
                self.request(reqwest::Method::GET, PENDING_PATH),
            )
            .await?;
        match v.get("appointments") {
            Some(serde_json::Value::Array(items)) => Ok(items
                .iter()
                .cloned()
                .map(BookingInput::from_value)
                .collect()),
            _ => Err(ApiError::Invalid {
                endpoint: PENDING_PATH,
                reason: "no `appointments` array".into(),
            }),
        }
    }

    /// `POST /api/integration/appointments/confirm`.
    ///
    /// # Errors
    ///
    /// [`ApiError`] when Latrexa does not answer 2xx.
    pub async fn confirm(&self, body: &ConfirmRequest) -> Result<(), ApiError> {
        let req = self.request(reqwest::Method::POST, CONFIRM_PATH).json(body);
        self.call(CONFIRM_PATH, req).await.map(|_| ())
    }

    /// `POST /api/integration/appointments/reject`.
    ///
    /// # Errors
    ///
    /// [`ApiError`] when Latrexa does not answer 2xx.
    pub async fn reject(&self, body: &RejectRequest) -> Result<(), ApiError> {
        let req = self.request(reqwest::Method::POST, REJECT_PATH).json(body);
        self.call(REJECT_PATH, req).await.map(|_| ())
    }

    /// `POST /api/integration/heartbeat`.
    ///
    /// # Errors
    ///
    /// [`ApiError`] when Latrexa does not answer 2xx.
    pub async fn heartbeat(&self, body: &Heartbeat) -> Result<(), ApiError> {
        let req = self
            .request(reqwest::Method::POST, HEARTBEAT_PATH)
            .json(body);
        self.call(HEARTBEAT_PATH, req).await.map(|_| ())
    }

    /// Negotiates a hub connection and returns the WebSocket URL to open.
    async fn negotiate(&self) -> Result<String, ApiError> {
        const NEGOTIATE: &str = "/hubs/integration/negotiate";
        let path = format!("{HUB_PATH}/negotiate?negotiateVersion=1");
        let v = self
            .call(NEGOTIATE, self.request(reqwest::Method::POST, &path))
            .await?;
        let websockets = v["availableTransports"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["transport"] == "WebSockets"));
        if !websockets {
            return Err(ApiError::Invalid {
                endpoint: NEGOTIATE,
                reason: "the hub offers no WebSockets transport".into(),
            });
        }
        // negotiateVersion 1 gives a connectionToken; version 0 servers only a connectionId.
        let token = v["connectionToken"]
            .as_str()
            .or_else(|| v["connectionId"].as_str())
            .ok_or(ApiError::Invalid {
                endpoint: NEGOTIATE,
                reason: "no connectionToken".into(),
            })?;
        let ws_base = if let Some(rest) = self.base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = self.base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            self.base.clone()
        };
        Ok(format!("{ws_base}{HUB_PATH}?id={}", query_escape(token)))
    }
}

/// A reqwest error's text without the URL (which is in every log line already).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text
            .replace(&format!(" ({url})"), "")
            .replace(url.as_str(), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// Percent-encodes a query value (the token is opaque to us).
fn query_escape(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// What the hub connection tells the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum HubUpdate {
    /// Connected and past the handshake: bookings arrive in real time from now on.
    Connected,
    /// Not connected (unreachable, refused, closed, silent); the engine polls meanwhile.
    Disconnected(String),
    /// A booking pushed by `AppointmentCreated`, `AppointmentUpdated` or
    /// `AppointmentCancelled`.
    Booking(BookingInput),
}

/// Timing of the hub connection.
#[derive(Debug, Clone, Copy)]
pub struct HubTiming {
    /// Longest wait between connection attempts.
    pub reconnect_max: Duration,
    /// Silence after which the connection is taken for dead.
    pub timeout: Duration,
    /// How often the client pings the hub (SignalR's keep-alive is 15 s).
    pub ping: Duration,
}

/// Why one hub session ended.
#[derive(Debug)]
enum SessionEnd {
    /// Shutdown was asked for.
    Shutdown,
    /// The engine stopped listening.
    Closed,
    /// Anything else, with a reason for the log; `connected` when the handshake had passed.
    Lost { reason: String, connected: bool },
}

/// Keeps a hub connection until `shutdown`, sending what happens to `out`. After a lost
/// connection it waits 1 s, then twice as long after each failed attempt, up to
/// `reconnect_max` (with jitter), and starts over from 1 s once a connection got through
/// the handshake.
pub async fn run_hub(
    api: LatrexaApi,
    timing: HubTiming,
    out: mpsc::Sender<HubUpdate>,
    shutdown: CancellationToken,
) {
    let mut failures: u32 = 0;
    loop {
        match session(&api, timing, &out, &shutdown).await {
            SessionEnd::Shutdown | SessionEnd::Closed => return,
            SessionEnd::Lost { reason, connected } => {
                if connected {
                    failures = 0;
                }
                failures = failures.saturating_add(1);
                if out
                    .send(HubUpdate::Disconnected(reason.clone()))
                    .await
                    .is_err()
                {
                    return;
                }
                let wait = reconnect_delay(failures, timing.reconnect_max);
                if failures == 1 {
                    warn!(url = %api.base_url(), error = %reason, retry_ms = wait.as_millis() as u64, "Latrexa hub not connected; polling meanwhile.");
                } else {
                    debug!(url = %api.base_url(), error = %reason, retry_ms = wait.as_millis() as u64, "Latrexa hub still not connected.");
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// 1 s * 2^(failures-1), capped, with jitter in [50%, 100%].
fn reconnect_delay(failures: u32, max: Duration) -> Duration {
    let ms = 1000u64
        .saturating_mul(1u64 << failures.saturating_sub(1).min(20))
        .min(max.as_millis() as u64)
        .max(1);
    Duration::from_millis(ms / 2 + rand::random_range(0..=ms / 2))
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn session(
    api: &LatrexaApi,
    timing: HubTiming,
    out: &mpsc::Sender<HubUpdate>,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let lost = |reason: String| SessionEnd::Lost {
        reason,
        connected: false,
    };
    let connect = async {
        let url = api.negotiate().await.map_err(|e| e.to_string())?;
        let mut request = url
            .into_client_request()
            .map_err(|e| format!("hub URL: {e}"))?;
        let headers = request.headers_mut();
        let bearer = HeaderValue::from_str(&format!("Bearer {}", api.api_key))
            .map_err(|_| "the API key is not a valid header value".to_string())?;
        headers.insert("Authorization", bearer);
        let org = HeaderValue::from_str(&api.organization_code)
            .map_err(|_| "the organization code is not a valid header value".to_string())?;
        headers.insert("X-Organization-Code", org);
        let (mut ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| format!("hub WebSocket: {e}"))?;
        ws.send(Message::text(format!(
            "{{\"protocol\":\"json\",\"version\":1}}{RECORD_SEPARATOR}"
        )))
        .await
        .map_err(|e| format!("hub handshake: {e}"))?;
        let mut buffer = String::new();
        loop {
            let text = next_text(&mut ws)
                .await
                .ok_or_else(|| "hub closed during the handshake".to_string())?;
            buffer.push_str(&text);
            if let Some(end) = buffer.find(RECORD_SEPARATOR) {
                let answer: serde_json::Value = serde_json::from_str(&buffer[..end])
                    .map_err(|_| "hub handshake answer is not JSON".to_string())?;
                if let Some(err) = answer.get("error").and_then(|e| e.as_str()) {
                    return Err(format!("hub refused the handshake: {err}"));
                }
                buffer.drain(..end + RECORD_SEPARATOR.len_utf8());
                return Ok((ws, buffer));
            }
        }
    };
    let connected = tokio::select! {
        () = shutdown.cancelled() => return SessionEnd::Shutdown,
        r = tokio::time::timeout(timing.timeout, connect) => r,
    };
    let (mut ws, mut buffer) = match connected {
        Ok(Ok(c)) => c,
        Ok(Err(reason)) => return lost(reason),
        Err(_) => return lost("hub did not complete the handshake in time".into()),
    };
    info!(url = %api.base_url(), "Latrexa hub connected.");
    if out.send(HubUpdate::Connected).await.is_err() {
        return SessionEnd::Closed;
    }
    let end = |reason: String| SessionEnd::Lost {
        reason,
        connected: true,
    };
    let mut ping = tokio::time::interval(timing.ping);
    ping.tick().await;
    let mut records = Vec::new();
    split_records(&mut buffer, &mut records);
    loop {
        for record in records.drain(..) {
            match handle_record(&record) {
                Record::Booking(input) => {
                    if out.send(HubUpdate::Booking(input)).await.is_err() {
                        return SessionEnd::Closed;
                    }
                }
                Record::Close(reason) => {
                    let _ = ws.close(None).await;
                    return end(reason);
                }
                Record::Other => {}
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => {
                let _ = ws.send(Message::text(format!("{{\"type\":7}}{RECORD_SEPARATOR}"))).await;
                let _ = ws.close(None).await;
                return SessionEnd::Shutdown;
            }
            _ = ping.tick() => {
                if let Err(e) = ws.send(Message::text(format!("{{\"type\":6}}{RECORD_SEPARATOR}"))).await {
                    return end(format!("hub ping failed: {e}"));
                }
            }
            next = tokio::time::timeout(timing.timeout, next_text(&mut ws)) => match next {
                Ok(Some(text)) => {
                    buffer.push_str(&text);
                    split_records(&mut buffer, &mut records);
                }
                Ok(None) => return end("hub closed the connection".into()),
                Err(_) => {
                    let _ = ws.close(None).await;
                    return end(format!("no message from the hub for {}s", timing.timeout.as_secs()));
                }
            }
        }
    }
}

/// The next text (or binary, read as UTF-8) frame; `None` when the socket closed.
async fn next_text(ws: &mut Ws) -> Option<String> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(t)) => return Some(t.as_str().to_string()),
            Ok(Message::Binary(b)) => return Some(String::from_utf8_lossy(&b).into_owned()),
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
            Ok(Message::Close(_)) | Err(_) => return None,
        }
    }
}

/// Moves every complete record (without its separator) from `buffer` to `records`.
fn split_records(buffer: &mut String, records: &mut Vec<String>) {
    while let Some(end) = buffer.find(RECORD_SEPARATOR) {
        records.push(buffer[..end].to_string());
        buffer.drain(..end + RECORD_SEPARATOR.len_utf8());
    }
}

/// What one hub protocol record means to us.
#[derive(Debug, PartialEq)]
enum Record {
    /// An invocation of one of the booking events.
    Booking(BookingInput),
    /// A close message (type 7), with its error when given.
    Close(String),
    /// Pings (type 6), invocations of other targets, anything else: nothing to do.
    Other,
}

fn handle_record(record: &str) -> Record {
    let Ok(msg) = serde_json::from_str::<serde_json::Value>(record) else {
        return Record::Other;
    };
    match msg["type"].as_u64() {
        Some(1) => {
            let target = msg["target"].as_str().unwrap_or_default();
            if !HUB_EVENTS.contains(&target) {
                return Record::Other;
            }
            match msg["arguments"].get(0) {
                Some(arg) => Record::Booking(BookingInput::from_value(arg.clone())),
                None => Record::Booking(BookingInput::Invalid {
                    raw: msg.clone(),
                    reason: format!("{target} without an argument"),
                }),
            }
        }
        Some(7) => Record::Close(match msg["error"].as_str() {
            Some(e) => format!("hub closed the connection: {e}"),
            None => "hub closed the connection".into(),
        }),
        _ => Record::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_split_on_the_separator_and_keep_the_rest() {
        let mut buffer = "{\"type\":6}\u{1e}{}\u{1e}{\"ty".to_string();
        let mut records = Vec::new();
        split_records(&mut buffer, &mut records);
        assert_eq!(records, ["{\"type\":6}", "{}"]);
        assert_eq!(buffer, "{\"ty");
    }

    #[test]
    fn invocations_of_booking_events_become_bookings() {
        let rec = r#"{"type":1,"target":"AppointmentCreated","arguments":[{"id":"LX-1","firstName":"A","lastName":"B","doctorCode":"D","clinicCode":"C","start":"2026-06-15T10:30:00","end":"2026-06-15T11:00:00","version":1}]}"#;
        match handle_record(rec) {
            Record::Booking(BookingInput::Booking(b)) => {
                assert_eq!((b.id.as_str(), b.version), ("LX-1", 1));
            }
            other => panic!("unexpected {other:?}"),
        }
        let other = r#"{"type":1,"target":"SomethingElse","arguments":[{}]}"#;
        assert_eq!(handle_record(other), Record::Other);
        assert_eq!(handle_record(r#"{"type":6}"#), Record::Other);
        assert_eq!(
            handle_record(r#"{"type":7,"error":"down"}"#),
            Record::Close("hub closed the connection: down".into())
        );
        let bad = r#"{"type":1,"target":"AppointmentUpdated","arguments":[{"id":"LX-2","firstName":"Secret Name"}]}"#;
        match handle_record(bad) {
            Record::Booking(BookingInput::Invalid { reason, .. }) => {
                assert!(reason.contains("missing field"), "{reason}");
                assert!(!reason.contains("Secret"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn only_client_errors_other_than_408_and_429_are_final() {
        let refused = |status| ApiError::Refused {
            endpoint: CONFIRM_PATH,
            status,
            message: String::new(),
        };
        assert!(!refused(409).is_retryable());
        assert!(!refused(401).is_retryable());
        assert!(refused(429).is_retryable());
        assert!(ApiError::Unavailable {
            endpoint: CONFIRM_PATH,
            reason: String::new()
        }
        .is_retryable());
    }

    #[test]
    fn reconnect_delay_doubles_up_to_the_cap() {
        let max = Duration::from_secs(8);
        assert!(reconnect_delay(1, max) <= Duration::from_secs(1));
        assert!(reconnect_delay(3, max) >= Duration::from_secs(2));
        assert!(reconnect_delay(30, max) <= max);
    }

    #[test]
    fn serde_errors_do_not_echo_values() {
        let e = serde_json::from_value::<PendingBooking>(serde_json::json!({
            "id": "X", "firstName": 5, "lastName": "L", "doctorCode": "D", "clinicCode": "C",
            "start": "s", "end": "e"
        }))
        .expect_err("bad type");
        let text = serde_error_text(&e);
        assert!(text.starts_with("invalid type"), "{text}");
        assert!(!text.contains('5'), "{text}");
        // An unknown `action` is an enum value serde would quote.
        let input = BookingInput::from_value(serde_json::json!({
            "id": "X", "action": "Qxzzyvplank", "firstName": "F", "lastName": "L",
            "doctorCode": "D", "clinicCode": "C", "start": "s", "end": "e"
        }));
        let BookingInput::Invalid { reason, .. } = input else {
            panic!("an unknown action is not a booking");
        };
        assert!(reason.contains("unknown variant"), "{reason}");
        assert!(!reason.contains("Qxzzyvplank"), "{reason}");
    }
}
