//! The FHIR REST source: create (`POST [base]/{type}`), update (`PUT [base]/{type}/{id}`),
//! read (`GET [base]/{type}/{id}`), transaction/batch Bundles (`POST [base]/`) and the
//! CapabilityStatement (`GET [base]/metadata`), in `application/fhir+json`.
//!
//! [`route`] is the one routing table: it accepts a type-level request only for an interaction
//! of [`TypeInteraction::ALL`] on a type of [`RESOURCE_TYPES`], and [`capability_statement`]
//! lists exactly those, so what the statement says and what is served cannot drift.
//!
//! The HTTP layer checks, in this order, and answers each failure with an OperationOutcome:
//! peer allowed (403), credentials in headers (401), endpoint and method (404/405), content
//! type of a body (415), size (413, from `Content-Length` before reading, else while reading),
//! HMAC signature when configured (401; a GET is signed over its empty body). Then a write goes
//! to the engine, which parses, validates, maps, stores and decides the answer (201/200,
//! 400/422, 503; see `engine/src/ingest_http.rs`); a read asks the [`ResourceReader`] (the
//! engine's store) for what the channel received (200, 404, 503). Every answer is
//! `application/fhir+json; charset=utf-8`.

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
use tracing::{debug, warn};

/// The resource types a FHIR REST source serves (create, read, update).
pub const RESOURCE_TYPES: &[&str] = &[
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Location",
    "HealthcareService",
    "Schedule",
    "Slot",
    "Encounter",
    "Appointment",
    "ChargeItem",
    "ServiceRequest",
    "Observation",
    "DiagnosticReport",
    "MedicationRequest",
    "MedicationDispense",
];

/// The FHIR JSON media type (what a request body must be).
pub const FHIR_JSON: &str = "application/fhir+json";

/// The `Content-Type` of every FHIR answer.
pub const FHIR_JSON_UTF8: &str = "application/fhir+json; charset=utf-8";

/// The FHIR version served.
pub const FHIR_VERSION: &str = "4.0.1";

/// An interaction on a resource type, as FHIR names it. [`route`] serves exactly these (on
/// every type of [`RESOURCE_TYPES`]) and [`capability_statement`] lists exactly these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeInteraction {
    /// `GET [base]/{type}/{id}`: the resource as last received.
    Read,
    /// `POST [base]/{type}`.
    Create,
    /// `PUT [base]/{type}/{id}`.
    Update,
}

impl TypeInteraction {
    /// Every type-level interaction served.
    pub const ALL: [TypeInteraction; 3] = [
        TypeInteraction::Read,
        TypeInteraction::Create,
        TypeInteraction::Update,
    ];

    /// The FHIR code (`CapabilityStatement.rest.resource.interaction.code`).
    pub fn code(self) -> &'static str {
        match self {
            TypeInteraction::Read => "read",
            TypeInteraction::Create => "create",
            TypeInteraction::Update => "update",
        }
    }

    /// The HTTP method.
    pub fn method(self) -> Method {
        match self {
            TypeInteraction::Read => Method::GET,
            TypeInteraction::Create => Method::POST,
            TypeInteraction::Update => Method::PUT,
        }
    }

    /// True when the path names an id (`{type}/{id}`), false for `{type}`.
    pub fn takes_id(self) -> bool {
        match self {
            TypeInteraction::Read | TypeInteraction::Update => true,
            TypeInteraction::Create => false,
        }
    }

    /// True when the request carries a resource.
    fn has_body(self) -> bool {
        match self {
            TypeInteraction::Create | TypeInteraction::Update => true,
            TypeInteraction::Read => false,
        }
    }

    fn usage(self) -> String {
        let path = if self.takes_id() {
            "[base]/{type}/{id}"
        } else {
            "[base]/{type}"
        };
        format!("{} {path}", self.method())
    }
}

/// The system-level interactions served, both by `POST [base]/` with a Bundle (the engine
/// takes Bundles of type `transaction` and `batch`).
pub const SYSTEM_INTERACTIONS: [&str; 2] = ["transaction", "batch"];

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET [base]/metadata`.
    Capabilities,
    /// `POST [base]/`: a transaction or batch Bundle.
    Bundle,
    /// A type-level interaction on `resource_type` (and `id` when it takes one).
    Type {
        /// The interaction.
        interaction: TypeInteraction,
        /// One of [`RESOURCE_TYPES`].
        resource_type: String,
        /// The id of the path (read, update).
        id: Option<String>,
    },
}

/// Where a FHIR source reads back what its channel received: the engine's store.
pub trait ResourceReader: Send + Sync {
    /// The resource `{resource_type}/{id}` as last received on `channel` (JSON), `Ok(None)`
    /// when no stored message carries it.
    ///
    /// # Errors
    ///
    /// A text for the log when the store cannot be read (answered 503).
    fn read(
        &self,
        channel: &str,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<serde_json::Value>, String>;
}

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

    /// Resolves the secrets, binds and starts serving; reads are answered from `reader`.
    ///
    /// # Errors
    ///
    /// [`BuildError::Config`] for a secret that cannot be read, [`BuildError::Bind`] when the
    /// address is taken.
    pub async fn build(
        &self,
        cx: SourceContext,
        reader: Arc<dyn ResourceReader>,
    ) -> Result<ListenerTask, BuildError> {
        let auth = self
            .auth
            .resolve("X-Switchboard-Signature")
            .map_err(BuildError::Config)?;
        let state = Arc::new(Fhir {
            cfg: self.clone(),
            auth,
            cx: cx.clone(),
            reader,
            started: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
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
    reader: Arc<dyn ResourceReader>,
    /// When the source was started (the CapabilityStatement's `date`).
    started: String,
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
    json_response(status, FHIR_JSON_UTF8, operation_outcome(code, diagnostics))
}

/// A FHIR id: 1 to 64 of `A-Z a-z 0-9 - .`.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// Every request this source serves, for the 405 answer.
fn usage() -> String {
    let mut all = vec![
        "GET [base]/metadata".to_owned(),
        "POST [base]/ (Bundle)".to_owned(),
    ];
    all.extend(TypeInteraction::ALL.iter().map(|i| i.usage()));
    all.join(", ")
}

/// What a request asks for, by method and `rest` (the path below the base): the one routing
/// table of this source.
///
/// # Errors
///
/// The answer to send instead: 400 for an invalid id, 405 for a method the path does not
/// take, 404 for an unknown path.
pub fn route(method: &Method, rest: &str) -> Result<Route, Box<Response>> {
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let known = |t: &str| RESOURCE_TYPES.contains(&t);
    let not_allowed = || {
        Box::new(outcome(
            405,
            "not-supported",
            &format!("this endpoint takes {}", usage()),
        ))
    };
    match parts.as_slice() {
        ["metadata"] if method == Method::GET => Ok(Route::Capabilities),
        ["metadata"] => Err(not_allowed()),
        [] if method == Method::POST => Ok(Route::Bundle),
        [] => Err(not_allowed()),
        [t, rest @ ..] if known(t) && rest.len() <= 1 => {
            let id = rest.first().copied();
            let Some(interaction) = TypeInteraction::ALL
                .into_iter()
                .find(|i| i.method() == method && i.takes_id() == id.is_some())
            else {
                return Err(not_allowed());
            };
            if id.is_some_and(|id| !valid_id(id)) {
                return Err(Box::new(outcome(
                    400,
                    "value",
                    "the id in the path is not a valid FHIR id",
                )));
            }
            Ok(Route::Type {
                interaction,
                resource_type: (*t).to_owned(),
                id: id.map(str::to_owned),
            })
        }
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

/// The CapabilityStatement of a FHIR source: FHIR 4.0.1, JSON, server mode, each type of
/// [`RESOURCE_TYPES`] with the interactions of [`TypeInteraction::ALL`], and
/// [`SYSTEM_INTERACTIONS`]; `date` is when the source was started with its configuration.
pub fn capability_statement(date: &str) -> serde_json::Value {
    let resources: Vec<serde_json::Value> = RESOURCE_TYPES
        .iter()
        .map(|t| {
            let interactions: Vec<serde_json::Value> = TypeInteraction::ALL
                .iter()
                .map(|i| serde_json::json!({"code": i.code()}))
                .collect();
            serde_json::json!({"type": t, "interaction": interactions})
        })
        .collect();
    let system: Vec<serde_json::Value> = SYSTEM_INTERACTIONS
        .iter()
        .map(|code| serde_json::json!({"code": code}))
        .collect();
    serde_json::json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "kind": "instance",
        "software": {"name": "Switchboard", "version": env!("CARGO_PKG_VERSION")},
        "fhirVersion": FHIR_VERSION,
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "resource": resources,
            "interaction": system,
        }],
    })
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
    let route = match route(&method, rest) {
        Ok(r) => r,
        Err(resp) => return refuse(body, *resp).await,
    };
    let has_body = match &route {
        Route::Bundle => true,
        Route::Type { interaction, .. } => interaction.has_body(),
        Route::Capabilities => false,
    };
    if has_body && media_type(&headers) != FHIR_JSON {
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
    let request = |interaction: &str, resource_type: Option<String>, id: Option<String>| JsonBody {
        format: crate::source::JsonFormat::Fhir,
        interaction: interaction.into(),
        resource_type,
        resource_id: id,
        body: bytes.clone(),
    };
    let request = match route {
        Route::Capabilities => {
            let statement = capability_statement(&s.started).to_string();
            return json_response(200, FHIR_JSON_UTF8, statement);
        }
        Route::Bundle => request("bundle", None, None),
        Route::Type {
            interaction: TypeInteraction::Read,
            resource_type,
            id,
        } => return read(&s, resource_type, id.unwrap_or_default()).await,
        Route::Type {
            interaction: interaction @ (TypeInteraction::Create | TypeInteraction::Update),
            resource_type,
            id,
        } => request(interaction.code(), Some(resource_type), id),
    };
    match submit(&s.cx, peer, request).await {
        Some(reply) => reply_response(reply, |_| {
            (
                operation_outcome("transient", "the server cannot take messages now"),
                FHIR_JSON_UTF8,
            )
        }),
        None => outcome(
            503,
            "transient",
            "the server is shutting down; send it again later",
        ),
    }
}

/// `GET [base]/{type}/{id}`: the resource as this channel last received it.
async fn read(s: &Arc<Fhir>, resource_type: String, id: String) -> Response {
    let (reader, channel) = (s.reader.clone(), s.cx.channel.clone());
    let found =
        tokio::task::spawn_blocking(move || reader.read(&channel, &resource_type, &id)).await;
    match found {
        Ok(Ok(Some(resource))) => json_response(200, FHIR_JSON_UTF8, resource.to_string()),
        Ok(Ok(None)) => outcome(
            404,
            "not-found",
            "no resource of this type with this id was received on this endpoint",
        ),
        Ok(Err(e)) => {
            warn!(channel = %s.cx.channel, error = %e, "FHIR read failed: the store could not be read.");
            unavailable()
        }
        Err(e) => {
            warn!(channel = %s.cx.channel, error = %e, "FHIR read failed.");
            unavailable()
        }
    }
}

fn unavailable() -> Response {
    let mut resp = outcome(
        503,
        "transient",
        "the store cannot be read now; try again later",
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(r: Result<Route, Box<Response>>) -> u16 {
        match r {
            Ok(_) => 200,
            Err(resp) => resp.status().as_u16(),
        }
    }

    /// The request that asks for `code` on `rtype`, as a client would send it.
    fn request_for(code: &str, rtype: &str) -> (Method, String) {
        let i = TypeInteraction::ALL
            .into_iter()
            .find(|i| i.code() == code)
            .unwrap_or_else(|| panic!("the statement lists '{code}', which is not served"));
        let path = if i.takes_id() {
            format!("/{rtype}/abc-1")
        } else {
            format!("/{rtype}")
        };
        (i.method(), path)
    }

    #[test]
    fn the_statement_lists_exactly_what_the_router_serves() {
        let cs = capability_statement("2026-01-01T00:00:00Z");
        assert_eq!(cs["resourceType"], "CapabilityStatement");
        assert_eq!(cs["fhirVersion"], "4.0.1");
        assert_eq!(cs["format"], serde_json::json!(["json"]));
        let rest = &cs["rest"][0];
        assert_eq!(rest["mode"], "server");
        let listed: Vec<&str> = rest["resource"]
            .as_array()
            .expect("resources")
            .iter()
            .map(|r| r["type"].as_str().expect("type"))
            .collect();
        assert_eq!(listed, RESOURCE_TYPES);
        for resource in rest["resource"].as_array().expect("resources") {
            let rtype = resource["type"].as_str().expect("type");
            let codes: Vec<&str> = resource["interaction"]
                .as_array()
                .expect("interactions")
                .iter()
                .map(|i| i["code"].as_str().expect("code"))
                .collect();
            // Every listed interaction is routed to itself...
            for code in &codes {
                let (method, path) = request_for(code, rtype);
                match route(&method, &path) {
                    Ok(Route::Type {
                        interaction,
                        resource_type,
                        ..
                    }) => assert_eq!((interaction.code(), &resource_type[..]), (*code, rtype)),
                    other => panic!("{method} {path}: {}", status(other)),
                }
            }
            // ...and every interaction FHIR defines on a type that is not listed is refused.
            for (method, path) in [
                (Method::DELETE, format!("/{rtype}/abc-1")),
                (Method::PATCH, format!("/{rtype}/abc-1")),
                (Method::GET, format!("/{rtype}")),
                (Method::POST, format!("/{rtype}/abc-1")),
                (Method::PUT, format!("/{rtype}")),
            ] {
                assert_eq!(status(route(&method, &path)), 405, "{method} {path}");
            }
            assert_eq!(
                status(route(&Method::GET, &format!("/{rtype}/abc-1/_history/2"))),
                404
            );
        }
        let system: Vec<&str> = rest["interaction"]
            .as_array()
            .expect("system interactions")
            .iter()
            .map(|i| i["code"].as_str().expect("code"))
            .collect();
        assert_eq!(system, ["transaction", "batch"]);
        assert_eq!(route(&Method::POST, "/").ok(), Some(Route::Bundle));
        assert_eq!(
            route(&Method::GET, "/metadata").ok(),
            Some(Route::Capabilities)
        );
        assert_eq!(status(route(&Method::POST, "/metadata")), 405);
        assert_eq!(status(route(&Method::GET, "/")), 405);
    }

    #[test]
    fn unknown_types_and_bad_ids_are_refused() {
        assert_eq!(status(route(&Method::GET, "/Medication/1")), 404);
        assert_eq!(status(route(&Method::GET, "/Patient/a_b")), 400);
        assert_eq!(
            status(route(&Method::PUT, &format!("/Patient/{}", "a".repeat(65)))),
            400
        );
        assert_eq!(status(route(&Method::GET, "/Patient/a.b-C9")), 200);
    }

    #[test]
    fn answers_are_utf8_fhir_json() {
        let resp = outcome(404, "not-found", "x");
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/fhir+json; charset=utf-8"
        );
    }
}
