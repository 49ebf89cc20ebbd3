//! The sandbox: in-process stand-ins for the cloud clinic APIs and a hospital information system.
//!
//! Each server follows the documented contract of its vendor (as the vendor publishes it): paths,
//! headers, field names, status codes and error bodies. They serve the end-to-end tests of the
//! engine and the `switchboard sandbox` command, so that a channel configuration can be tried
//! against realistic peers before going live. They are not production servers: state lives in
//! memory and is lost when the sandbox stops.
//!
//! One HTTP listener serves every vendor under its own path prefix, so a destination's
//! `base_url` is for example `http://127.0.0.1:PORT/opsport`:
//!
//! | prefix | module | what |
//! |---|---|---|
//! | `/opsport` | [`opsport`] | OpsPort healthcare upsert API |
//! | `/latrexa` | [`latrexa`] | Latrexa integration API and SignalR hub |
//! | `/buktor` | [`buktor`] | Buktor HIS webhook receiver |
//! | `/px360` | [`px360`] | PX360 HIS patient-data endpoint |
//! | `/his` | [`his`] | state of the simulated HIS (which itself speaks MLLP) |
//!
//! Every vendor also has test-control endpoints that start with an underscore (`/_state`,
//! `/_requests`, ...); they need no credentials. [`traffic`] generates synthetic HL7 traffic.
//! Start reading at [`start`]; `docs/SANDBOX.md` is the user documentation.
//!
//! # What it shares with the engine, and what not
//!
//! A vendor server is written from the vendor's document, never from Switchboard's client: the
//! wire types here (paths, bodies, headers) are the sandbox's own, so a client that drifts from
//! the documented contract fails against the sandbox instead of both ends changing together.
//! This crate therefore takes no vendor contract type from `transforms::dest` or
//! `channels::clinic_api`. It depends on two workspace crates for what is not a vendor's
//! contract but HL7's standard, which the simulated HIS speaks like any HL7 peer:
//!
//! - `transforms`, for HL7 v2 (`transforms::hl7v2`: reading MSH, building ACKs and NAKs);
//! - `channels`, for MLLP framing only (`channels::mllp::codec`; its tests also use the
//!   MLLP client).
//!
//! Nothing was copied to make this crate: the generic serving helpers it needs (request log,
//! credential checks) are its own. A test (`imports_no_vendor_contract`) reads this crate's
//! sources and fails on any other path into those two crates.
#![forbid(unsafe_code)]

pub mod buktor;
pub mod his;
pub mod latrexa;
pub mod latrexa_wire;
pub mod opsport;
pub mod px360;
pub mod traffic;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use buktor::BuktorMapping;
pub use his::SlotRefusal;

/// Everything the sandbox needs to start; every field has a documented default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// HTTP address for all four APIs (default `127.0.0.1:8990`; port 0 picks a free port).
    pub listen: SocketAddr,
    /// MLLP address of the simulated HIS (default `127.0.0.1:2576`).
    pub his_mllp_listen: SocketAddr,
    /// The `X-API-Key` OpsPort expects (default `sandbox-opsport-key`).
    pub opsport_api_key: String,
    /// The bearer API key Latrexa expects (default `sandbox-latrexa-key`).
    pub latrexa_api_key: String,
    /// The `X-Organization-Code` Latrexa expects (default `sandbox-clinic`).
    pub latrexa_org_code: String,
    /// How often the Latrexa hub pings an open connection, in milliseconds (default 15000,
    /// SignalR's keep-alive interval).
    pub latrexa_hub_ping_ms: u64,
    /// The bearer token Buktor expects (default `sandbox-buktor-token`).
    pub buktor_token: String,
    /// The shared secret of the `Buktor-Signature` HMAC (default `sandbox-buktor-secret`).
    pub buktor_secret: String,
    /// The Buktor client the token belongs to (default `1001`, as in the seed).
    pub buktor_client_id: String,
    /// The per-client field mapping; `None` uses the seed's sample (client 1001,
    /// `appointment.created` only).
    pub buktor_mapping: Option<BuktorMapping>,
    /// How many Buktor requests answer 500 right after start (default 0); the count can
    /// also be set at run time with `POST /buktor/_fault`.
    pub buktor_fail_next: u32,
    /// The HTTP status of Buktor's "No mapping found" error body (default 422). The seed shows
    /// the body but not its status; a deployment that answers it with 200 is tried with 200.
    pub buktor_mapping_error_status: u16,
    /// The `X-API-Key` PX360 expects; `None` (the default) accepts requests without a key,
    /// as the seed's endpoint does.
    pub px360_api_key: Option<String>,
    /// Hospital codes (`HospitalName`) PX360 knows (default `["ALH-main"]`).
    pub px360_hospitals: Vec<String>,
    /// Which SIU bookings the HIS refuses with AE "slot unavailable" (default none).
    pub his_refuse_slots: SlotRefusal,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8990)),
            his_mllp_listen: SocketAddr::from(([127, 0, 0, 1], 2576)),
            opsport_api_key: "sandbox-opsport-key".into(),
            latrexa_api_key: "sandbox-latrexa-key".into(),
            latrexa_org_code: "sandbox-clinic".into(),
            latrexa_hub_ping_ms: 15_000,
            buktor_token: "sandbox-buktor-token".into(),
            buktor_secret: "sandbox-buktor-secret".into(),
            buktor_client_id: "1001".into(),
            buktor_mapping: None,
            buktor_fail_next: 0,
            buktor_mapping_error_status: 422,
            px360_api_key: None,
            px360_hospitals: vec!["ALH-main".into()],
            his_refuse_slots: SlotRefusal::None,
        }
    }
}

impl SandboxConfig {
    /// The defaults, with both listeners on `127.0.0.1:0` (what tests want).
    pub fn for_tests() -> Self {
        SandboxConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            his_mllp_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..SandboxConfig::default()
        }
    }
}

/// Why the sandbox could not start.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A started sandbox: where it listens and how to wait for it to stop.
#[derive(Debug)]
pub struct RunningSandbox {
    /// The bound HTTP address (all vendors, under their prefixes).
    pub http_addr: SocketAddr,
    /// The bound MLLP address of the simulated HIS.
    pub his_mllp_addr: SocketAddr,
    tasks: TaskTracker,
}

impl RunningSandbox {
    /// `http://<http_addr>/<vendor>`: the base URL a destination of that vendor uses.
    pub fn base_url(&self, vendor: &str) -> String {
        format!("http://{}/{vendor}", self.http_addr)
    }

    /// Waits until every server task has stopped (after the shutdown token is cancelled).
    pub async fn stopped(self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Binds the HTTP and MLLP listeners and serves until `shutdown` is cancelled.
///
/// # Errors
///
/// [`SandboxError::Bind`] when a listener cannot be bound.
pub async fn start(
    cfg: SandboxConfig,
    shutdown: CancellationToken,
) -> Result<RunningSandbox, SandboxError> {
    let http = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| SandboxError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let mllp = TcpListener::bind(cfg.his_mllp_listen)
        .await
        .map_err(|source| SandboxError::Bind {
            addr: cfg.his_mllp_listen,
            source,
        })?;
    let http_addr = http.local_addr().map_err(|source| SandboxError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let his_mllp_addr = mllp.local_addr().map_err(|source| SandboxError::Bind {
        addr: cfg.his_mllp_listen,
        source,
    })?;

    let tasks = TaskTracker::new();
    let his_state = his::HisState::new(cfg.his_refuse_slots.clone());
    let app = Router::new()
        .nest("/opsport", with_request_log(opsport::router(&cfg)))
        .nest(
            "/latrexa",
            with_request_log(latrexa::router(&cfg, shutdown.clone())),
        )
        .nest("/buktor", with_request_log(buktor::router(&cfg)))
        .nest("/px360", with_request_log(px360::router(&cfg)))
        .nest("/his", his::router(his_state.clone()));

    let http_shutdown = shutdown.clone();
    tasks.spawn(async move {
        let served = axum::serve(http, app)
            .with_graceful_shutdown(http_shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "Sandbox HTTP server stopped with an error.");
        }
    });
    tasks.spawn(his::serve(mllp, his_state, shutdown, tasks.clone()));
    tracing::info!(%http_addr, %his_mllp_addr, "Sandbox started.");
    Ok(RunningSandbox {
        http_addr,
        his_mllp_addr,
        tasks,
    })
}

/// Largest request or response body the request log keeps (4 MiB); larger requests get 413.
const MAX_LOGGED_BODY: usize = 4 << 20;

/// Adds `GET /_requests` (every request the vendor received, oldest first) to a vendor router.
///
/// Each entry has `method`, `path` (below the vendor prefix), `query`, `headers` (values of
/// `authorization` and `x-api-key` redacted), `status`, `receivedAt`, `body` and `response`
/// (JSON when they parse, text otherwise). Test-control paths (`/_...`) are not logged.
fn with_request_log(router: Router) -> Router {
    let log: Shared<Vec<serde_json::Value>> = Shared::default();
    let view_log = log.clone();
    router
        .route(
            "/_requests",
            axum::routing::get(move || {
                let entries = lock(&view_log).clone();
                async move { json(StatusCode::OK, serde_json::Value::Array(entries)) }
            }),
        )
        .layer(axum::middleware::from_fn_with_state(log, record_request))
}

/// A body as JSON when it parses, else as (lossy) text.
fn body_value(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

async fn record_request(
    axum::extract::State(log): axum::extract::State<Shared<Vec<serde_json::Value>>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::body::{to_bytes, Body};
    let path = req.uri().path().to_string();
    if path.starts_with("/_") {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_LOGGED_BODY).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let shown = match name.as_str() {
                "authorization" | "x-api-key" => "<redacted>".to_string(),
                _ => String::from_utf8_lossy(value.as_bytes()).into_owned(),
            };
            (name.to_string(), serde_json::Value::String(shown))
        })
        .collect();
    let mut entry = serde_json::json!({
        "method": parts.method.as_str(),
        "path": path,
        "query": parts.uri.query(),
        "headers": headers,
        "receivedAt": now_rfc3339(),
        "body": body_value(&bytes),
    });
    let response = next
        .run(axum::extract::Request::from_parts(parts, Body::from(bytes)))
        .await;
    entry["status"] = response.status().as_u16().into();
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        lock(&log).push(entry);
        return response;
    }
    let (rparts, rbody) = response.into_parts();
    let rbytes = to_bytes(rbody, MAX_LOGGED_BODY).await.unwrap_or_default();
    entry["response"] = body_value(&rbytes);
    lock(&log).push(entry);
    Response::from_parts(rparts, Body::from(rbytes))
}

/// Shared, lock-protected state of one vendor server.
pub(crate) type Shared<T> = Arc<Mutex<T>>;

/// Locks `m`, carrying on after a panic in another handler (the state is test data).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A JSON response with the given status.
pub(crate) fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Compares a secret in constant time (lengths may leak, contents do not).
pub(crate) fn secret_eq(given: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// A header's value as text, if present and readable.
pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok()
}

/// The current time as RFC 3339 with seconds, for state records.
pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A started sandbox on loopback ports and the token that stops it.
    pub(crate) struct TestSandbox {
        pub(crate) sb: RunningSandbox,
        pub(crate) stop: CancellationToken,
        pub(crate) http: reqwest::Client,
    }

    impl TestSandbox {
        pub(crate) async fn start(cfg: SandboxConfig) -> TestSandbox {
            let stop = CancellationToken::new();
            let sb = super::start(cfg, stop.clone())
                .await
                .expect("sandbox starts");
            let http = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .build()
                .expect("client builds");
            TestSandbox { sb, stop, http }
        }

        pub(crate) fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.sb.http_addr)
        }

        pub(crate) async fn get_json(&self, path: &str) -> serde_json::Value {
            self.http
                .get(self.url(path))
                .send()
                .await
                .expect("request sent")
                .json()
                .await
                .expect("json body")
        }
    }

    impl Drop for TestSandbox {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    /// Status and JSON body of a response.
    pub(crate) async fn status_json(r: reqwest::Response) -> (u16, serde_json::Value) {
        let status = r.status().as_u16();
        let body = r.json().await.expect("json body");
        (status, body)
    }

    #[tokio::test]
    async fn stops_when_cancelled() {
        let stop = CancellationToken::new();
        let sb = super::start(SandboxConfig::for_tests(), stop.clone())
            .await
            .expect("sandbox starts");
        assert_ne!(sb.http_addr.port(), 0);
        assert_ne!(sb.his_mllp_addr.port(), 0);
        assert!(sb.base_url("opsport").ends_with("/opsport"));
        stop.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), sb.stopped())
            .await
            .expect("sandbox stops after cancel");
    }

    #[test]
    fn config_deserializes_with_defaults_for_missing_keys() {
        let cfg: SandboxConfig = serde_json::from_value(serde_json::json!({
            "listen": "127.0.0.1:0",
            "buktor_fail_next": 2,
            "his_refuse_slots": {"mode": "doctors", "codes": ["DOC-1"]},
            "buktor_mapping": {"clients": {"7": {"mappings": {"payment.failed": {"fields": {"a": "b"}}}}}}
        }))
        .expect("config parses");
        assert_eq!(cfg.listen.port(), 0);
        assert_eq!(cfg.buktor_fail_next, 2);
        assert_eq!(
            cfg.his_refuse_slots,
            SlotRefusal::Doctors {
                codes: vec!["DOC-1".into()]
            }
        );
        assert!(cfg
            .buktor_mapping
            .is_some_and(|m| m.lookup("7", "payment.failed").is_some()));
        assert_eq!(cfg.opsport_api_key, "sandbox-opsport-key");
        let unknown = serde_json::from_value::<SandboxConfig>(serde_json::json!({"lisen": "x"}));
        assert!(unknown.is_err(), "unknown keys are refused");
    }

    #[tokio::test]
    async fn stops_with_an_open_hub_connection() {
        use futures::SinkExt;
        let stop = CancellationToken::new();
        let sb = super::start(SandboxConfig::for_tests(), stop.clone())
            .await
            .expect("sandbox starts");
        let http = reqwest::Client::new();
        let n: serde_json::Value = http
            .post(format!(
                "{}/hubs/integration/negotiate?negotiateVersion=1",
                sb.base_url("latrexa")
            ))
            .bearer_auth("sandbox-latrexa-key")
            .header("X-Organization-Code", "sandbox-clinic")
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        let token = n["connectionToken"].as_str().expect("token");
        let url = format!(
            "ws://{}/latrexa/hubs/integration?id={token}&access_token=sandbox-latrexa-key",
            sb.http_addr
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connects");
        ws.send(tokio_tungstenite::tungstenite::Message::text(
            "{\"protocol\":\"json\",\"version\":1}\u{1e}",
        ))
        .await
        .expect("handshake sent");
        let mllp = tokio::net::TcpStream::connect(sb.his_mllp_addr)
            .await
            .expect("mllp connects");
        stop.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), sb.stopped())
            .await
            .expect("sandbox stops with open connections");
        drop((ws, mllp));
    }
}

#[cfg(test)]
mod tests {
    /// The paths into the workspace's client crates this crate may use: HL7 v2 and MLLP, the
    /// standard every HL7 peer speaks, and no vendor's contract (see the crate docs).
    const ALLOWED: [(&str, &[&str]); 2] = [("transforms", &["hl7v2::"]), ("channels", &["mllp::"])];

    #[test]
    fn imports_no_vendor_contract() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = 0;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("directory entry").path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            files += 1;
            let text = std::fs::read_to_string(&path).expect("source is readable");
            for (n, line) in text.lines().enumerate() {
                // Comments may name the clients' types, to say they are not used.
                let code = line.split("//").next().unwrap_or_default();
                for (krate, allowed) in ALLOWED {
                    let prefix = format!("{krate}::");
                    for (at, _) in code.match_indices(&prefix) {
                        let before = code[..at].chars().next_back();
                        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                            continue; // a longer name ending in the crate's name
                        }
                        let rest = &code[at + prefix.len()..];
                        if !allowed.iter().any(|a| rest.starts_with(a)) {
                            found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                        }
                    }
                }
            }
        }
        assert!(files >= 8, "read {files} source files in {}", dir.display());
        assert!(
            found.is_empty(),
            "paths into the clients' crates beyond HL7 v2 and MLLP:\n{}",
            found.join("\n")
        );
    }
}
