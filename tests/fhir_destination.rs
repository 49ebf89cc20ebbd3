//! The FHIR server destination against an in-test FHIR server and OAuth2 token endpoint on
//! 127.0.0.1: transaction and conditional update delivered, OperationOutcome 4xx to the dead
//! letters, 503 retried, the OAuth2 token fetched once, renewed after expiry and after a 401.

use crate::support::*;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

/// How the in-test FHIR server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Up,
    Down,
    Reject,
}

#[derive(Debug)]
struct Seen {
    method: String,
    uri: String,
    auth: String,
    body: Value,
}

struct ServerState {
    mode: Mode,
    /// Tokens issued, in order; only the last one is accepted.
    tokens: Vec<String>,
    /// The last token is refused once (as if revoked).
    revoke_next: bool,
    token_lifetime_secs: u64,
    accepted: Vec<Seen>,
    requests: usize,
    static_token: Option<String>,
}

type Shared = Arc<Mutex<ServerState>>;

struct FhirServer {
    base: String,
    token_url: String,
    state: Shared,
}

impl FhirServer {
    async fn start(token_lifetime_secs: u64, static_token: Option<&str>) -> FhirServer {
        let state: Shared = Arc::new(Mutex::new(ServerState {
            mode: Mode::Up,
            tokens: Vec::new(),
            revoke_next: false,
            token_lifetime_secs,
            accepted: Vec::new(),
            requests: 0,
            static_token: static_token.map(str::to_owned),
        }));
        async fn token(State(s): State<Shared>, body: String) -> Response {
            let mut g = s.lock().expect("lock");
            let ok = body.contains("grant_type=client_credentials")
                && body.contains("client_id=switchboard")
                && body.contains("client_secret=cs-secret");
            if !ok {
                return (StatusCode::UNAUTHORIZED, "{\"error\":\"invalid_client\"}")
                    .into_response();
            }
            let t = format!("tok-{}", g.tokens.len() + 1);
            g.tokens.push(t.clone());
            axum::Json(json!({"access_token": t, "token_type": "bearer", "expires_in": g.token_lifetime_secs}))
                .into_response()
        }
        async fn fhir(
            State(s): State<Shared>,
            method: Method,
            uri: Uri,
            headers: HeaderMap,
            body: String,
        ) -> Response {
            let mut g = s.lock().expect("lock");
            g.requests += 1;
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let expected = match &g.static_token {
                Some(t) => Some(t.clone()),
                None => g.tokens.last().cloned(),
            };
            let authorised = expected.is_some_and(|t| auth == format!("Bearer {t}"));
            if !authorised || g.revoke_next {
                g.revoke_next = false;
                return (StatusCode::UNAUTHORIZED, "{\"resourceType\":\"OperationOutcome\",\"issue\":[{\"severity\":\"error\",\"code\":\"login\"}]}").into_response();
            }
            match g.mode {
                Mode::Down => (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "0")], "{}").into_response(),
                Mode::Reject => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    [("content-type", "application/fhir+json")],
                    "{\"resourceType\":\"OperationOutcome\",\"issue\":[{\"severity\":\"error\",\"code\":\"invalid\",\"diagnostics\":\"Patient.birthDate is required by this server\"}]}",
                )
                    .into_response(),
                Mode::Up => {
                    g.accepted.push(Seen {
                        method: method.to_string(),
                        uri: uri.to_string(),
                        auth,
                        body: serde_json::from_str(&body).unwrap_or(Value::Null),
                    });
                    let status = if method == Method::POST && uri.path().ends_with("/r4") {
                        StatusCode::OK
                    } else {
                        StatusCode::CREATED
                    };
                    (status, [("content-type", "application/fhir+json")], "{\"resourceType\":\"Bundle\",\"type\":\"transaction-response\"}").into_response()
                }
            }
        }
        let app = axum::Router::new()
            .route("/oauth/token", axum::routing::post(token))
            .fallback(fhir)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FhirServer {
            base: format!("http://{addr}/r4"),
            token_url: format!("http://{addr}/oauth/token"),
            state,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut ServerState) -> T) -> T {
        f(&mut self.state.lock().expect("lock"))
    }
}

fn destination(extra: &str) -> String {
    format!("[[route]]\nto = [\"fhir\"]\n[[destination]]\nname = \"fhir\"\ntype = \"fhir\"\n{extra}{FAST_RETRY}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_with_oauth2_token_cached_renewed_after_expiry_and_after_401() {
    let server = FhirServer::start(6, None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("cs");
    std::fs::write(&secret, "cs-secret").expect("secret");
    let cfg = TestConfig::new(
        "",
        &destination(&format!(
            "base_url = \"{}\"\nmode = \"transaction\"\n[destination.oauth2]\ntoken_url = \"{}\"\nclient_id = \"switchboard\"\nclient_secret = {{ file = \"{}\" }}\nscope = \"system/*.write\"\nrefresh_margin_secs = 1\n",
            server.base,
            server.token_url,
            secret.display()
        )),
    );
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("lab")).await;
    for i in 1..=2 {
        let ack = send(&mut client, adt_for("PT-1", &format!("TX-{i}")).as_bytes()).await;
        assert_eq!(segment(&ack, "MSA")[1], "AA");
    }
    assert!(
        eventually(20, || server.with(|s| s.accepted.len() >= 2)).await,
        "two transactions delivered"
    );
    server.with(|s| {
        assert_eq!(s.tokens.len(), 1, "one token for both deliveries");
        let first = &s.accepted[0];
        assert_eq!((first.method.as_str(), first.uri.as_str()), ("POST", "/r4"));
        assert_eq!(first.auth, "Bearer tok-1");
        assert_eq!(first.body["resourceType"], "Bundle");
        assert_eq!(first.body["type"], "transaction");
        let urls: Vec<&str> = first.body["entry"]
            .as_array()
            .expect("entries")
            .iter()
            .filter_map(|e| e["request"]["url"].as_str())
            .collect();
        assert!(
            urls.iter().any(|u| u.starts_with("Patient?identifier=")),
            "{urls:?}"
        );
    });
    // The token lives 6 s and is renewed 1 s before expiry.
    tokio::time::sleep(std::time::Duration::from_millis(5500)).await;
    send(&mut client, adt_for("PT-1", "TX-3").as_bytes()).await;
    assert!(eventually(20, || server.with(|s| s.accepted.len() >= 3)).await);
    server.with(|s| {
        assert_eq!(s.tokens.len(), 2, "renewed after expiry");
        assert_eq!(s.accepted[2].auth, "Bearer tok-2");
        s.revoke_next = true;
    });
    // A 401 renews the token once and the same delivery goes through.
    send(&mut client, adt_for("PT-1", "TX-4").as_bytes()).await;
    assert!(eventually(20, || server.with(|s| s.accepted.len() >= 4)).await);
    server.with(|s| {
        assert_eq!(s.tokens.len(), 3, "renewed after the 401");
        assert_eq!(s.accepted[3].auth, "Bearer tok-3");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_update_outcome_4xx_dead_letters_and_503_retries() {
    let server = FhirServer::start(300, Some("static-token")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "static-token\n").expect("token");
    let cfg = TestConfig::new(
        "",
        &destination(&format!(
            "base_url = \"{}\"\nmode = \"conditional_update\"\nbearer_token = {{ file = \"{}\" }}\n",
            server.base,
            token.display()
        )),
    );
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let admin = engine.admin();
    let mut client = connect(&engine.mllp("lab")).await;
    send(&mut client, adt_for("PC-1", "CU-1").as_bytes()).await;
    assert!(eventually(20, || server.with(|s| !s.accepted.is_empty())).await);
    server.with(|s| {
        let put = &s.accepted[0];
        assert_eq!(put.method, "PUT");
        assert!(
            put.uri.starts_with("/r4/Patient?identifier="),
            "{}",
            put.uri
        );
        assert_eq!(put.body["resourceType"], "Patient");
        assert_eq!(put.auth, "Bearer static-token");
    });

    // 422 with an OperationOutcome: dead letter at once, with the diagnostics.
    server.with(|s| s.mode = Mode::Reject);
    send(&mut client, adt_for("PC-2", "CU-2").as_bytes()).await;
    let mut dead = Value::Null;
    for _ in 0..200 {
        dead = get_json(&format!("{admin}/api/dead-letters")).await;
        if dead["count"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(dead["count"], 1, "{dead}");
    assert_eq!(dead["items"][0]["attempts"], 1, "a 4xx is not retried");
    let reason = dead["items"][0]["reason"].as_str().expect("reason");
    assert!(reason.contains("422"), "{reason}");
    assert!(
        reason.contains("Patient.birthDate is required by this server"),
        "{reason}"
    );

    // 503: retried until the server is back.
    server.with(|s| s.mode = Mode::Down);
    let before = server.with(|s| s.requests);
    send(&mut client, adt_for("PC-3", "CU-3").as_bytes()).await;
    assert!(
        eventually(20, || server.with(|s| s.requests >= before + 2)).await,
        "retried"
    );
    let accepted = server.with(|s| s.accepted.len());
    server.with(|s| s.mode = Mode::Up);
    assert!(
        eventually(20, || server.with(|s| s.accepted.len() > accepted)).await,
        "delivered after the outage"
    );
    assert_eq!(
        get_json(&format!("{admin}/api/dead-letters")).await["count"],
        1
    );
}
