//! The FHIR REST source: create (`POST [base]/{type}`), update (`PUT [base]/{type}/{id}`) and
//! transaction/batch Bundles (`POST [base]/`), in `application/fhir+json`.
//!
//! The HTTP layer checks, in this order, and answers each failure with an OperationOutcome:
//! peer allowed (403), credentials in headers (401), endpoint and method (404/405), content
//! type (415), size (413, from `Content-Length` before reading, else while reading), HMAC
//! signature when configured (401). Then the engine parses, validates, maps, stores and decides
//! the answer (201/200, 400/422, 503); see `engine/src/ingest_http.rs`.

use crate::http_auth::{Auth, AuthConfig, AuthFailure};
use crate::http_source::{
    announced_too_large, closing, json_response, media_type, read_body, refuse, reply_response,
    submit, BodyError,
};
use crate::mllp::listener::ListenerTask;
use crate::peers::PeerRange;
use crate::source::{BuildError, JsonBody, SourceContext};
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Uri};
use axum::response::Response;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::debug;

/// The resource types a FHIR REST source accepts for create and update.
pub const RESOURCE_TYPES: &[&str] = &[
    "Patient",
    "Practitioner",
    "Location",
    "Encounter",
    "Appointment",
    "ChargeItem",
    "ServiceRequest",
    "Observation",
    "DiagnosticReport",
];

/// The FHIR JSON media type.
pub const FHIR_JSON: &str = "application/fhir+json";

/// Configuration of a FHIR REST source (`type = "fhir_rest"` in a channel's `[source]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FhirSourceConfig {
    /// Address to listen on, such as `0.0.0.0:8080`; port 0 picks a free port.
    pub listen: String,
    /// TLS (`[source.tls]`, as for the MLLP listener): HTTPS only; with `client_ca`, mutual
    /// TLS. See `conf/examples/mllp-tls.toml` for the keys.
    #[serde(default)]
    pub tls: Option<crate::tls::ServerTlsConfig>,
    /// Path the FHIR base is served under, such as `/fhir` (default `/`).
    #[serde(default = "default_base_path")]
    pub base_path: String,
    /// Largest accepted body in bytes; larger ones get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Peer addresses or CIDR ranges allowed to connect; empty allows every peer (others
    /// get 403).
    #[serde(default)]
    pub allowed_peers: Vec<PeerRange>,
    /// Credentials every request must carry (`[source.auth]`); none by default.
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

fn default_base_path() -> String {
    "/".into()
}
fn default_max_body_bytes() -> usize {
    4 * 1024 * 1024
}

impl FhirSourceConfig {
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
        if !self.base_path.starts_with('/') {
            out.push(("base_path".into(), "must start with '/'".into()));
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
        out
    }

    /// Resolves the secrets, binds and starts serving.
    ///
    /// # Errors
    ///
    /// [`BuildError::Config`] for a secret that cannot be read, [`BuildError::Bind`] when the
    /// address is taken.
    pub async fn build(&self, cx: SourceContext) -> Result<ListenerTask, BuildError> {
        let auth = self
            .auth
            .resolve("X-Switchboard-Signature")
            .map_err(BuildError::Config)?;
        let state = Arc::new(Fhir {
            cfg: self.clone(),
            auth,
            cx: cx.clone(),
        });
        let app = axum::Router::new().fallback(handle).with_state(state);
        crate::http_source::serve(
            &self.listen,
            "fhir_rest",
            app,
            &cx,
            self.tls.as_ref(),
            self.limits(),
        )
        .await
    }
}

struct Fhir {
    cfg: FhirSourceConfig,
    auth: Auth,
    cx: SourceContext,
}

/// A FHIR OperationOutcome with one issue.
pub fn operation_outcome(code: &str, diagnostics: &str) -> String {
    serde_json::json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}]
    })
    .to_string()
}

fn outcome(status: u16, code: &str, diagnostics: &str) -> Response {
    json_response(status, FHIR_JSON, operation_outcome(code, diagnostics))
}

/// What a request asks for, by method and path.
fn interaction(method: &Method, rest: &str) -> Result<JsonBody, Box<Response>> {
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let known = |t: &str| RESOURCE_TYPES.contains(&t);
    let body = |interaction: &str, rtype: Option<&str>, id: Option<&str>| JsonBody {
        format: "fhir".into(),
        interaction: interaction.into(),
        resource_type: rtype.map(str::to_owned),
        resource_id: id.map(str::to_owned),
        body: Default::default(),
    };
    match (method, parts.as_slice()) {
        (&Method::POST, []) => Ok(body("bundle", None, None)),
        (&Method::POST, [t]) if known(t) => Ok(body("create", Some(t), None)),
        (&Method::PUT, [t, id]) if known(t) => {
            let valid_id = id.len() <= 64
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if valid_id {
                Ok(body("update", Some(t), Some(id)))
            } else {
                Err(Box::new(outcome(
                    400,
                    "value",
                    "the id in the path is not a valid FHIR id",
                )))
            }
        }
        (_, [] | [_] | [_, _]) if parts.first().is_none_or(|t| known(t)) => Err(Box::new(outcome(
            405,
            "not-supported",
            "this endpoint takes POST [base]/ (Bundle), POST [base]/{type} and PUT [base]/{type}/{id}",
        ))),
        _ => Err(Box::new(outcome(
            404,
            "not-supported",
            &format!(
                "unknown endpoint; supported resource types: {}",
                RESOURCE_TYPES.join(", ")
            ),
        ))),
    }
}

fn auth_failure(s: &Fhir, failure: AuthFailure) -> Response {
    s.cx.metrics.auth_failures.inc();
    debug!(channel = %s.cx.channel, failure = ?failure, "FHIR request refused: credentials.");
    let text = match failure {
        AuthFailure::Bearer => "missing or invalid bearer token",
        AuthFailure::ApiKey => "missing or invalid API key",
        AuthFailure::MissingSignature => "missing request signature",
        AuthFailure::BadSignature => "the request signature does not match the body",
    };
    let mut resp = outcome(401, "login", text);
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

async fn handle(
    State(s): State<Arc<Fhir>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !crate::peers::allowed(&s.cfg.allowed_peers, peer.ip()) {
        s.cx.metrics.connections_refused.inc();
        debug!(channel = %s.cx.channel, peer = %peer, "FHIR request refused: peer not allowed.");
        return refuse(
            body,
            outcome(403, "forbidden", "this address may not use this endpoint"),
        )
        .await;
    }
    if let Err(f) = s.auth.check_headers(&headers) {
        return refuse(body, auth_failure(&s, f)).await;
    }
    let base = s.cfg.base_path.trim_end_matches('/');
    let Some(rest) = uri.path().strip_prefix(base) else {
        return refuse(
            body,
            outcome(404, "not-found", "outside the FHIR base path"),
        )
        .await;
    };
    let mut request = match interaction(&method, rest) {
        Ok(r) => r,
        Err(resp) => return refuse(body, *resp).await,
    };
    if media_type(&headers) != FHIR_JSON {
        let resp = outcome(
            415,
            "not-supported",
            "the body must be FHIR JSON (Content-Type: application/fhir+json)",
        );
        return refuse(body, resp).await;
    }
    let too_large = || {
        closing(outcome(
            413,
            "too-costly",
            &format!("the body is larger than {} bytes", s.cfg.max_body_bytes),
        ))
    };
    if announced_too_large(&headers, s.cfg.max_body_bytes) {
        return too_large();
    }
    let body_timeout = Duration::from_secs(s.cfg.body_timeout_secs);
    let bytes = match read_body(body, s.cfg.max_body_bytes, body_timeout).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return too_large(),
        Err(BodyError::Broken) => return outcome(400, "incomplete", "the body could not be read"),
        Err(BodyError::TimedOut) => {
            s.cx.metrics.timeouts.inc();
            debug!(channel = %s.cx.channel, peer = %peer, "FHIR request cut: body not complete in time.");
            let text = format!(
                "the body did not arrive within {} s",
                s.cfg.body_timeout_secs
            );
            return closing(outcome(408, "timeout", &text));
        }
    };
    if let Err(f) = s.auth.check_signature(&headers, &bytes) {
        return auth_failure(&s, f);
    }
    request.body = bytes;
    match submit(&s.cx, peer, request).await {
        Some(reply) => reply_response(reply, |_| {
            (
                operation_outcome("transient", "the server cannot take messages now"),
                FHIR_JSON,
            )
        }),
        None => outcome(
            503,
            "transient",
            "the server is shutting down; send it again later",
        ),
    }
}
