//! The webhook source: JSON events from HIS systems and desktop clinic apps, in one of three
//! formats (`format` in `[source]`):
//!
//! - `buktor`: Buktor event envelopes on `POST /his/receive` (also `/his-receive`, as the seed
//!   writes it). Bearer token and `Buktor-Signature` (lowercase hex HMAC-SHA256 of the exact
//!   body) are checked in constant time before the body is parsed; then the event's
//!   `timestamp` must lie within `timestamp_window_secs` of now (replays are refused). Answers
//!   are the seed's: `{"status":"success","message":"Data received and processed
//!   successfully."}`, errors `{"status":"error","message":...}` (401 `Unauthorized`, 401
//!   `Missing Buktor-Signature header.`, 403 `Invalid signature.`, 401 for a stale timestamp,
//!   400 for a body that is not an event).
//! - `px360`: HIS patient-data JSON on `POST /api/simulator/his-patient-data/` and on the
//!   legacy `POST /api/simulator/his-events/` the PX360 document keeps for backward
//!   compatibility (same body; the record's message type tells them apart); the answer is
//!   PX360's success body, an invalid body gets PX360's
//!   `{"error":"Invalid HIS data format","details":{...}}` (400).
//! - `opsport`: OpsPort-shaped upserts on `POST /api/healthcare/{clinic,doctor,patient,
//!   appointment}` (one object) and the plural paths (a JSON array), with `X-API-Key`.
//!
//! Resends are answered with the first answer by the engine (`event_id` for Buktor, a hash of
//! the body otherwise). Credentials are whatever `[source.auth]` configures.

use crate::http_auth::{Auth, AuthConfig, AuthFailure};
use crate::http_source::{
    announced_too_large, closing, json_response, media_type, read_body, refuse, reply_response,
    submit, BodyError,
};
use crate::mllp::listener::ListenerTask;
use crate::peers::PeerRange;
use crate::source::{BuildError, JsonBody, JsonFormat, SourceContext};
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::debug;

pub use crate::source::WebhookFormat;

/// Configuration of a webhook source (`type = "webhook"` in a channel's `[source]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Address to listen on, such as `0.0.0.0:8081`; port 0 picks a free port.
    pub listen: String,
    /// TLS (`[source.tls]`, as for the MLLP listener): HTTPS only; with `client_ca`, mutual
    /// TLS. See `conf/examples/mllp-tls.toml` for the keys.
    #[serde(default)]
    pub tls: Option<crate::tls::ServerTlsConfig>,
    /// `buktor`, `px360` or `opsport`.
    pub format: WebhookFormat,
    /// Largest accepted body in bytes; larger ones get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Buktor: seconds an event's `timestamp` may differ from now; older (or future) events
    /// are refused as replays. 0 turns the check off.
    #[serde(default = "default_timestamp_window_secs")]
    pub timestamp_window_secs: u64,
    /// Peer addresses or CIDR ranges allowed to connect; empty allows every peer (others
    /// get 403).
    #[serde(default)]
    pub allowed_peers: Vec<PeerRange>,
    /// Credentials every request must carry (`[source.auth]`).
    #[serde(default)]
    pub auth: AuthConfig,
    /// Seconds a client has to send the request line and headers; a client still sending
    /// them is cut (this is also how long an idle keep-alive connection stays open).
    #[serde(default = "crate::http_source::default_header_timeout_secs")]
    pub header_timeout_secs: u64,
    /// Seconds a client has to send the body once its headers are in; then it gets 408 and
    /// the connection is closed.
    #[serde(default = "crate::http_source::default_body_timeout_secs")]
    pub body_timeout_secs: u64,
    /// Most connections open at once on this source. When it is reached, the connection
    /// idle longest (no request in flight) is closed to admit the new one; a newcomer is
    /// refused only when every connection has a request in flight.
    #[serde(default = "crate::http_source::default_max_connections")]
    pub max_connections: usize,
    /// Most connections open at once from one peer address; more from it are refused
    /// (closed without an answer, counted, logged at most once a minute per address).
    #[serde(default = "crate::http_source::default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
}

fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_timestamp_window_secs() -> u64 {
    300
}

impl ReceiverConfig {
    /// The connection caps and header timeout of this source.
    pub fn limits(&self) -> crate::http_source::HttpLimits {
        crate::http_source::HttpLimits {
            header_timeout: std::time::Duration::from_secs(self.header_timeout_secs),
            caps: crate::admission::Caps {
                max_connections: self.max_connections,
                max_connections_per_peer: self.max_connections_per_peer,
            },
        }
    }

    /// Problems the loader cannot see: (key, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.listen.parse::<SocketAddr>().is_err() {
            out.push((
                "listen".into(),
                format!("'{}' is not an address (use IP:PORT)", self.listen),
            ));
        }
        if self.max_body_bytes < 64 {
            out.push(("max_body_bytes".into(), "must be at least 64".into()));
        }
        out.extend(crate::http_source::limit_problems(
            self.header_timeout_secs,
            self.body_timeout_secs,
            self.max_connections,
            self.max_connections_per_peer,
        ));
        if self.format == WebhookFormat::Buktor
            && (self.auth.bearer_token.is_none() || self.auth.hmac_secret.is_none())
        {
            out.push((
                "auth".into(),
                "the Buktor format needs auth.bearer_token and auth.hmac_secret".into(),
            ));
        }
        out
    }

    /// Resolves the secrets, binds and starts serving.
    ///
    /// # Errors
    ///
    /// [`BuildError::Config`] for a secret that cannot be read, [`BuildError::Bind`] when the
    /// address is taken.
    pub async fn build(&self, cx: SourceContext) -> Result<ListenerTask, BuildError> {
        let default_header = match self.format {
            WebhookFormat::Buktor => "Buktor-Signature",
            WebhookFormat::Px360 | WebhookFormat::Opsport => "X-Switchboard-Signature",
        };
        let auth = self
            .auth
            .resolve(default_header)
            .map_err(BuildError::Config)?;
        let state = Arc::new(Receiver {
            cfg: self.clone(),
            auth,
            cx: cx.clone(),
        });
        let app = axum::Router::new().fallback(handle).with_state(state);
        crate::http_source::serve(
            &self.listen,
            "webhook",
            app,
            &cx,
            self.tls.as_ref(),
            self.limits(),
        )
        .await
    }
}

struct Receiver {
    cfg: ReceiverConfig,
    auth: Auth,
    cx: SourceContext,
}

/// The OpsPort path kinds, singular and plural.
pub const OPSPORT_KINDS: &[&str] = &[
    "clinic",
    "clinics",
    "doctor",
    "doctors",
    "patient",
    "patients",
    "appointment",
    "appointments",
];

/// The endpoint a path names for `format`, or `None`.
pub fn endpoint(format: WebhookFormat, path: &str) -> Option<String> {
    let path = path.trim_end_matches('/');
    match format {
        WebhookFormat::Buktor => {
            matches!(path, "/his/receive" | "/his-receive").then(|| "his/receive".into())
        }
        WebhookFormat::Px360 => match path {
            "/api/simulator/his-patient-data" => Some("his-patient-data".into()),
            // The legacy endpoint the PX360 document keeps for backward compatibility.
            "/api/simulator/his-events" => Some("his-events".into()),
            _ => None,
        },
        WebhookFormat::Opsport => path
            .strip_prefix("/api/healthcare/")
            .filter(|k| OPSPORT_KINDS.contains(k))
            .map(str::to_owned),
    }
}

impl Receiver {
    fn error(&self, status: u16, message: &str) -> Response {
        json_response(
            status,
            "application/json",
            self.cfg.format.error_body(message).to_string(),
        )
    }

    fn refuse(&self, failure: AuthFailure) -> Response {
        self.cx.metrics.auth_failures.inc();
        debug!(channel = %self.cx.channel, failure = ?failure, "Webhook request refused: credentials.");
        let buktor = self.cfg.format == WebhookFormat::Buktor;
        match failure {
            AuthFailure::Bearer => self.error(401, "Unauthorized"),
            AuthFailure::ApiKey if !buktor => self.error(401, "Invalid or missing API key."),
            AuthFailure::ApiKey => self.error(401, "Unauthorized"),
            AuthFailure::MissingSignature if buktor => {
                self.error(401, "Missing Buktor-Signature header.")
            }
            AuthFailure::MissingSignature => self.error(401, "Missing signature header."),
            AuthFailure::BadSignature => self.error(403, "Invalid signature."),
        }
    }

    /// Buktor replay window: an event whose `timestamp` is too far from now is refused. Runs
    /// after the signature check, so the timestamp is the sender's.
    fn stale(&self, body: &[u8]) -> bool {
        if self.cfg.format != WebhookFormat::Buktor || self.cfg.timestamp_window_secs == 0 {
            return false;
        }
        #[derive(Deserialize)]
        struct Stamp {
            timestamp: Option<String>,
        }
        // A body that is not JSON, or a timestamp that is not one, is the engine's to reject
        // (stored, with its reason).
        let Some(text) = serde_json::from_slice::<Stamp>(body)
            .ok()
            .and_then(|s| s.timestamp)
        else {
            return false;
        };
        let Ok(at) = chrono::DateTime::parse_from_rfc3339(&text) else {
            return false;
        };
        let skew = (chrono::Utc::now() - at.with_timezone(&chrono::Utc))
            .num_seconds()
            .unsigned_abs();
        skew > self.cfg.timestamp_window_secs
    }
}

async fn handle(
    State(s): State<Arc<Receiver>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !crate::peers::allowed(&s.cfg.allowed_peers, peer.ip()) {
        s.cx.metrics.connections_refused.inc();
        debug!(channel = %s.cx.channel, peer = %peer, "Webhook request refused: peer not allowed.");
        return refuse(body, s.error(403, "Forbidden")).await;
    }
    if let Err(f) = s.auth.check_headers(&headers) {
        return refuse(body, s.refuse(f)).await;
    }
    let Some(interaction) = endpoint(s.cfg.format, uri.path()) else {
        return refuse(body, s.error(404, "Unknown endpoint.")).await;
    };
    if method != Method::POST {
        return refuse(body, s.error(405, "Method not allowed; use POST.")).await;
    }
    if media_type(&headers) != "application/json" {
        return refuse(body, s.error(415, "Content-Type must be application/json.")).await;
    }
    let limit = s.cfg.max_body_bytes;
    let too_large =
        || closing(s.error(413, &format!("Request body is larger than {limit} bytes.")));
    if announced_too_large(&headers, limit) {
        return too_large();
    }
    let body_timeout = std::time::Duration::from_secs(s.cfg.body_timeout_secs);
    let bytes = match read_body(body, limit, body_timeout).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return too_large(),
        Err(BodyError::Broken) => return s.error(400, "Request body could not be read."),
        Err(BodyError::TimedOut) => {
            s.cx.metrics.timeouts.inc();
            debug!(channel = %s.cx.channel, peer = %peer, "Webhook request cut: body not complete in time.");
            let text = format!(
                "Request body did not arrive within {} s.",
                s.cfg.body_timeout_secs
            );
            return closing(s.error(408, &text));
        }
    };
    if let Err(f) = s.auth.check_signature(&headers, &bytes) {
        return s.refuse(f);
    }
    if s.stale(&bytes) {
        s.cx.metrics.auth_failures.inc();
        debug!(channel = %s.cx.channel, "Webhook request refused: timestamp outside the window.");
        return s.error(401, "Event timestamp is outside the allowed window.");
    }
    let request = JsonBody {
        format: JsonFormat::Webhook(s.cfg.format),
        interaction,
        resource_type: None,
        resource_id: None,
        body: bytes,
    };
    let format = s.cfg.format;
    match submit(&s.cx, peer, request).await {
        Some(reply) => reply_response(reply, |_| {
            (
                format
                    .error_body("Service unavailable, send it again later.")
                    .to_string(),
                "application/json",
            )
        }),
        None => s.error(503, "Service unavailable, send it again later."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_by_format() {
        assert_eq!(
            endpoint(WebhookFormat::Buktor, "/his/receive").as_deref(),
            Some("his/receive")
        );
        assert_eq!(
            endpoint(WebhookFormat::Buktor, "/his-receive").as_deref(),
            Some("his/receive")
        );
        assert_eq!(endpoint(WebhookFormat::Buktor, "/other"), None);
        assert_eq!(
            endpoint(WebhookFormat::Px360, "/api/simulator/his-patient-data/").as_deref(),
            Some("his-patient-data")
        );
        assert_eq!(
            endpoint(WebhookFormat::Px360, "/api/simulator/his-events/").as_deref(),
            Some("his-events")
        );
        assert_eq!(
            endpoint(WebhookFormat::Px360, "/api/simulator/other/"),
            None
        );
        assert_eq!(
            endpoint(WebhookFormat::Opsport, "/api/healthcare/patients").as_deref(),
            Some("patients")
        );
        assert_eq!(endpoint(WebhookFormat::Opsport, "/api/healthcare/x"), None);
    }
}
