//! Buktor HIS webhook receiver (seed `buktor-his-webhook.txt`), served under `/buktor`.
//!
//! `POST /his/receive` checks, in this order:
//!
//! 1. `Authorization: Bearer <token>`: missing or wrong -> 401
//!    `{"status":"error","message":"Unauthorized"}`. The token decides the Client-ID.
//! 2. `Buktor-Signature`, lowercase hex HMAC-SHA256 of the exact raw body with the shared
//!    secret, verified in constant time before the body is parsed: missing -> 401
//!    `{"status":"error","message":"Missing Buktor-Signature header."}`, wrong -> 403
//!    `{"status":"error","message":"Invalid signature."}`.
//! 3. The body: not JSON, or no event type -> 400 `{"status":"error","message":...}`.
//! 4. The fault switch (`POST /_fault {"count":N}`): the next N requests that got this far
//!    answer 500 `{"status":"error","message":"Internal Server Error"}` and store nothing,
//!    like the seed's "database connectivity issue".
//! 5. `event_id`: an id already processed answers success again without storing twice (and
//!    is counted as a duplicate). Events without `event_id` (the seed's cURL example) are
//!    processed every time.
//! 6. The client's mapping for the event type: none -> 422 (`buktor_mapping_error_status`)
//!    `{"status":"error","message":"No mapping found for event_type '<type>' and Client-ID <id>."}`.
//! 7. Success: 200 `{"status":"success","message":"Data received and processed successfully."}`.
//!
//! Both event shapes of the seed are accepted: the documented envelope (`type`, `data`) and
//! the flat cURL example (`event_type` and the fields at the top level).
//!
//! Test control: `GET /_state` (stored events with their mapped fields, duplicate count,
//! requests by status), `POST /_fault` and `GET /_requests` (every request received).

use crate::{json, lock, secret_eq, SandboxConfig, Shared};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// The per-client field mappings, the shape of the seed's `his-json-mapping.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuktorMapping {
    /// Client-ID -> that client's mappings.
    pub clients: BTreeMap<String, BuktorClientMapping>,
}

/// The mappings of one Buktor client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuktorClientMapping {
    /// Event type (`appointment.created`) -> its field mapping.
    pub mappings: BTreeMap<String, BuktorEventMapping>,
}

/// How the fields of one event type are renamed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuktorEventMapping {
    /// HIS field name -> Buktor field name; fields not listed are dropped.
    pub fields: BTreeMap<String, String>,
}

impl BuktorMapping {
    /// The seed's sample: client 1001 maps `appointment.created` only.
    pub fn seed_sample() -> Self {
        let fields = [
            ("his_appointment_id", "buktor_appointment_id"),
            ("his_patient_id", "buktor_patient_id"),
            ("his_doctor_id", "buktor_doctor_id"),
            ("his_status", "buktor_status"),
            ("his_created_at", "buktor_created_at"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let client = BuktorClientMapping {
            mappings: BTreeMap::from([(
                "appointment.created".to_string(),
                BuktorEventMapping { fields },
            )]),
        };
        BuktorMapping {
            clients: BTreeMap::from([("1001".to_string(), client)]),
        }
    }

    /// The field mapping of `event_type` for `client`, if there is one.
    pub fn lookup(&self, client: &str, event_type: &str) -> Option<&BuktorEventMapping> {
        self.clients.get(client)?.mappings.get(event_type)
    }
}

/// Lowercase hex HMAC-SHA256 of `body` with `secret`: the `Buktor-Signature` value.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = mac(secret);
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length")
}

/// True when `signature` (hex) is the HMAC of `body`; the comparison is constant time.
fn verify(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Ok(given) = hex::decode(signature.trim()) else {
        return false;
    };
    let mut mac = mac(secret);
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

#[derive(Debug, Default)]
struct Store {
    events: Vec<Value>,
    processed: HashSet<String>,
    duplicates: u64,
    fail_next: u32,
    statuses: BTreeMap<u16, u64>,
}

#[derive(Debug, Clone)]
struct Buktor {
    token: Arc<str>,
    secret: Arc<[u8]>,
    client_id: Arc<str>,
    mapping: Arc<BuktorMapping>,
    mapping_error_status: StatusCode,
    store: Shared<Store>,
}

/// The Buktor routes, to be nested under `/buktor`.
pub(crate) fn router(cfg: &SandboxConfig) -> Router {
    let state = Buktor {
        token: cfg.buktor_token.as_str().into(),
        secret: cfg.buktor_secret.as_bytes().into(),
        client_id: cfg.buktor_client_id.as_str().into(),
        mapping: Arc::new(
            cfg.buktor_mapping
                .clone()
                .unwrap_or_else(BuktorMapping::seed_sample),
        ),
        mapping_error_status: StatusCode::from_u16(cfg.buktor_mapping_error_status)
            .unwrap_or(StatusCode::UNPROCESSABLE_ENTITY),
        store: Shared::new(std::sync::Mutex::new(Store {
            fail_next: cfg.buktor_fail_next,
            ..Store::default()
        })),
    };
    Router::new()
        .route("/his/receive", post(receive))
        .route("/_state", get(state_view))
        .route("/_fault", post(set_fault))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> (StatusCode, Value) {
    (
        status,
        json!({"status": "error", "message": message.into()}),
    )
}

async fn receive(State(s): State<Buktor>, headers: HeaderMap, body: Bytes) -> Response {
    let (status, answer) = process(&s, &headers, &body);
    *lock(&s.store).statuses.entry(status.as_u16()).or_default() += 1;
    json(status, answer)
}

fn process(s: &Buktor, headers: &HeaderMap, body: &[u8]) -> (StatusCode, Value) {
    if !crate::bearer(headers).is_some_and(|t| secret_eq(t, &s.token)) {
        return error(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let Some(signature) = crate::header(headers, "buktor-signature") else {
        return error(StatusCode::UNAUTHORIZED, "Missing Buktor-Signature header.");
    };
    if !verify(&s.secret, body, signature) {
        return error(StatusCode::FORBIDDEN, "Invalid signature.");
    }
    let event: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(_) => return error(StatusCode::BAD_REQUEST, "Invalid JSON request body."),
    };
    let event_type = event
        .get("type")
        .or_else(|| event.get("event_type"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let Some(event_type) = event_type else {
        return error(StatusCode::BAD_REQUEST, "Missing event type.");
    };
    let event_id = event
        .get("event_id")
        .and_then(Value::as_str)
        .map(str::to_string);

    let mut store = lock(&s.store);
    if store.fail_next > 0 {
        store.fail_next -= 1;
        return error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    }
    let success = (
        StatusCode::OK,
        json!({"status": "success", "message": "Data received and processed successfully."}),
    );
    if let Some(id) = &event_id {
        if store.processed.contains(id) {
            store.duplicates += 1;
            return success;
        }
    }
    let Some(mapping) = s.mapping.lookup(&s.client_id, &event_type) else {
        return error(
            s.mapping_error_status,
            format!(
                "No mapping found for event_type '{event_type}' and Client-ID {}.",
                s.client_id
            ),
        );
    };
    // The documented envelope carries the fields in `data`; the flat form at the top level.
    let data = match event.get("data") {
        Some(Value::Object(d)) => d.clone(),
        _ => event.clone(),
    };
    let mapped: Map<String, Value> = mapping
        .fields
        .iter()
        .filter_map(|(his, buktor)| data.get(his).map(|v| (buktor.clone(), v.clone())))
        .collect();
    store.events.push(json!({
        "event_id": event_id,
        "type": event_type,
        "operation": event.get("operation"),
        "client_id": &*s.client_id,
        "mapped": mapped,
        "received_at": crate::now_rfc3339(),
    }));
    if let Some(id) = event_id {
        store.processed.insert(id);
    }
    success
}

async fn state_view(State(s): State<Buktor>) -> Response {
    let store = lock(&s.store);
    json(
        StatusCode::OK,
        json!({
            "events": store.events,
            "duplicates": store.duplicates,
            "fail_next": store.fail_next,
            "responses_by_status": store.statuses,
        }),
    )
}

/// Body of `POST /_fault`.
#[derive(Debug, Deserialize)]
struct Fault {
    count: u32,
}

async fn set_fault(State(s): State<Buktor>, body: Bytes) -> Response {
    match serde_json::from_slice::<Fault>(&body) {
        Ok(f) => {
            lock(&s.store).fail_next = f.count;
            json(StatusCode::OK, json!({"fail_next": f.count}))
        }
        Err(e) => json(StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{status_json, TestSandbox};
    use crate::SandboxConfig;

    const TOKEN: &str = "sandbox-buktor-token";
    const SECRET: &[u8] = b"sandbox-buktor-secret";

    fn event(id: &str, kind: &str) -> String {
        json!({
            "event_id": id, "timestamp": "2025-01-08T12:00:00Z", "type": kind, "operation": "created",
            "data": {"his_appointment_id": "A123", "his_patient_id": "P456", "his_doctor_id": "D789",
                     "his_status": "confirmed", "his_created_at": "2025-03-02T10:30:45", "extra": 1},
            "source": "HIS"
        })
        .to_string()
    }

    async fn send(
        t: &TestSandbox,
        body: &str,
        token: Option<&str>,
        sig: Option<String>,
    ) -> (u16, Value) {
        let mut req = t
            .http
            .post(t.url("/buktor/his/receive"))
            .header("Content-Type", "application/json")
            .body(body.to_string());
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(sig) = sig {
            req = req.header("Buktor-Signature", sig);
        }
        status_json(req.send().await.expect("sent")).await
    }

    async fn send_signed(t: &TestSandbox, body: &str) -> (u16, Value) {
        send(t, body, Some(TOKEN), Some(sign(SECRET, body.as_bytes()))).await
    }

    fn success() -> Value {
        json!({"status": "success", "message": "Data received and processed successfully."})
    }

    #[test]
    fn sign_matches_a_known_hmac_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[tokio::test]
    async fn signed_event_is_stored_with_mapped_fields() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        let (status, body) = send_signed(&t, &event("evt_1", "appointment.created")).await;
        assert_eq!((status, body), (200, success()));
        let state = t.get_json("/buktor/_state").await;
        assert_eq!(state["events"].as_array().map(Vec::len), Some(1));
        let mapped = &state["events"][0]["mapped"];
        assert_eq!(mapped["buktor_appointment_id"], "A123");
        assert_eq!(mapped["buktor_created_at"], "2025-03-02T10:30:45");
        assert!(mapped.get("extra").is_none(), "unmapped fields are dropped");
        let log = t.get_json("/buktor/_requests").await;
        assert_eq!(log[0]["path"], "/his/receive");
        assert_eq!(log[0]["headers"]["authorization"], "<redacted>");
        assert_eq!(
            log[0]["headers"]["buktor-signature"].as_str().map(str::len),
            Some(64)
        );
        assert_eq!(log[0]["body"]["event_id"], "evt_1");
        assert_eq!(log[0]["response"]["status"], "success");
    }

    #[tokio::test]
    async fn bad_token_missing_and_wrong_signature_are_refused() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        let body = event("evt_1", "appointment.created");
        let good = sign(SECRET, body.as_bytes());
        let (s, b) = send(&t, &body, None, Some(good.clone())).await;
        assert_eq!(
            (s, b),
            (401, json!({"status": "error", "message": "Unauthorized"}))
        );
        let (s, _) = send(&t, &body, Some("nope"), Some(good.clone())).await;
        assert_eq!(s, 401);
        let (s, b) = send(&t, &body, Some(TOKEN), None).await;
        assert_eq!(
            (s, b["message"].clone()),
            (401, json!("Missing Buktor-Signature header."))
        );
        let tampered = body.replace("A123", "A124");
        let (s, b) = send(&t, &tampered, Some(TOKEN), Some(good)).await;
        assert_eq!(
            (s, b),
            (
                403,
                json!({"status": "error", "message": "Invalid signature."})
            )
        );
        let wrong_secret = sign(b"other-secret", body.as_bytes());
        let (s, _) = send(&t, &body, Some(TOKEN), Some(wrong_secret)).await;
        assert_eq!(s, 403);
        let (s, _) = send(&t, &body, Some(TOKEN), Some("zz-not-hex".into())).await;
        assert_eq!(s, 403);
        let state = t.get_json("/buktor/_state").await;
        assert_eq!(state["events"], json!([]));
    }

    #[tokio::test]
    async fn signature_is_checked_before_parsing() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        let (s, _) = send(&t, "{not json", Some(TOKEN), Some("00".into())).await;
        assert_eq!(
            s, 403,
            "an unsigned bad body is a signature failure, not a parse error"
        );
        let (s, b) = send_signed(&t, "{not json").await;
        assert_eq!(
            (s, b),
            (
                400,
                json!({"status": "error", "message": "Invalid JSON request body."})
            )
        );
    }

    #[tokio::test]
    async fn resend_of_processed_event_id_answers_success_without_storing() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        let body = event("evt_dup", "appointment.created");
        assert_eq!(send_signed(&t, &body).await, (200, success()));
        assert_eq!(send_signed(&t, &body).await, (200, success()));
        let state = t.get_json("/buktor/_state").await;
        assert_eq!(state["events"].as_array().map(Vec::len), Some(1));
        assert_eq!(state["duplicates"], 1);
    }

    #[tokio::test]
    async fn unmapped_event_type_gets_the_documented_error() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        let (s, b) = send_signed(&t, &event("evt_2", "payment.failed")).await;
        assert_eq!(s, 422);
        assert_eq!(
            b,
            json!({"status": "error",
                   "message": "No mapping found for event_type 'payment.failed' and Client-ID 1001."})
        );
    }

    #[tokio::test]
    async fn flat_curl_form_is_accepted() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        let body = r#"{"event_type": "appointment.created", "his_appointment_id": "A9", "his_status": "confirmed"}"#;
        assert_eq!(send_signed(&t, body).await, (200, success()));
        let state = t.get_json("/buktor/_state").await;
        assert_eq!(
            state["events"][0]["mapped"],
            json!({"buktor_appointment_id": "A9", "buktor_status": "confirmed"})
        );
    }

    #[tokio::test]
    async fn fault_switch_answers_500_n_times_then_recovers() {
        let mut cfg = SandboxConfig::for_tests();
        cfg.buktor_fail_next = 1;
        let t = TestSandbox::start(cfg).await;
        let body = event("evt_f", "appointment.created");
        let server_error = json!({"status": "error", "message": "Internal Server Error"});
        assert_eq!(send_signed(&t, &body).await, (500, server_error.clone()));
        let r = t
            .http
            .post(t.url("/buktor/_fault"))
            .json(&json!({"count": 2}))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(send_signed(&t, &body).await.0, 500);
        assert_eq!(send_signed(&t, &body).await.0, 500);
        assert_eq!(send_signed(&t, &body).await, (200, success()));
        let state = t.get_json("/buktor/_state").await;
        assert_eq!(state["events"].as_array().map(Vec::len), Some(1));
        assert_eq!(state["duplicates"], 0, "failed attempts were not processed");
        assert_eq!(state["responses_by_status"]["500"], 3);
    }

    #[tokio::test]
    async fn custom_mapping_selects_the_client_of_the_token() {
        let mut cfg = SandboxConfig::for_tests();
        cfg.buktor_client_id = "2002".into();
        let mapping: BuktorMapping =
            serde_json::from_value(json!({"clients": {"2002": {"mappings": {
            "payment.successful": {"fields": {"amount": "buktor_amount"}}}}}}))
            .expect("mapping parses");
        cfg.buktor_mapping = Some(mapping);
        let t = TestSandbox::start(cfg).await;
        let body = json!({"event_id": "e", "type": "payment.successful", "data": {"amount": 12.5}})
            .to_string();
        assert_eq!(send_signed(&t, &body).await, (200, success()));
        let (s, b) = send_signed(&t, &event("e2", "appointment.created")).await;
        assert_eq!(s, 422);
        assert_eq!(
            b["message"],
            "No mapping found for event_type 'appointment.created' and Client-ID 2002."
        );
    }
}
