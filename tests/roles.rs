//! Admin API roles and business-key search, over HTTP against the real binary.
//!
//! Three tokens: `admin.token` (operator, named `admin`), a read-only `viewer` and an
//! operator `ops` from `[[admin.tokens]]`. Read endpoints take any of them; reprocess,
//! dead-letter retry/discard and reload need an operator (403 otherwise); no or a wrong
//! token is 401. Audit records name the token. Then messages are found by patient id,
//! visit number and appointment id through the `by_business_key` index, over HTTP and with
//! `switchboard messages list --key`.

use crate::support::*;
use reqwest::StatusCode;

const ADMIN: &str = "legacy-admin-t0ken";
const VIEWER: &str = "viewer-t0ken-123";
const OPS: &str = "ops-t0ken-456";

/// An engine with three tokens and channel `lab` routing HL7 to `sink`.
fn engine_with_roles(sink: &HttpSink) -> (TestConfig, EngineProcess) {
    let channel = format!(
        "[[route]]\nto = [\"hook\"]\npayload = \"hl7\"\n[[destination]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{}\"\n{FAST_RETRY}",
        sink.url
    );
    let cfg = TestConfig::new("", &channel);
    let secret = |name: &str, value: &str| {
        let path = cfg.root.path().join(name);
        std::fs::write(&path, format!("{value}\n")).expect("write token");
        path.display().to_string()
    };
    let (admin, viewer, ops) = (
        secret("admin.tok", ADMIN),
        secret("viewer.tok", VIEWER),
        secret("ops.tok", OPS),
    );
    let main = std::fs::read_to_string(cfg.conf().join("switchboard.toml")).expect("read");
    let main = main.replace(
        "[admin]\n",
        &format!("[admin]\ntoken = {{ file = \"{admin}\" }}\n"),
    );
    let main = format!(
        "{main}\n[[admin.tokens]]\nname = \"viewer\"\nrole = \"read_only\"\ntoken = {{ file = \"{viewer}\" }}\n\n[[admin.tokens]]\nname = \"ops\"\nrole = \"operator\"\ntoken = {{ file = \"{ops}\" }}\n"
    );
    std::fs::write(cfg.conf().join("switchboard.toml"), main).expect("write config");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    (cfg, engine)
}

async fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("admin API reachable");
    let status = resp.status();
    let json = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, json)
}

async fn get(url: &str, token: Option<&str>) -> (StatusCode, serde_json::Value) {
    call(reqwest::Method::GET, url, token, None).await
}

async fn post(url: &str, token: &str, body: serde_json::Value) -> (StatusCode, serde_json::Value) {
    call(reqwest::Method::POST, url, Some(token), Some(body)).await
}

/// An ADT^A01 for patient `mrn` admitted under visit `visit` (synthetic).
fn admission(mrn: &str, visit: &str, control_id: &str) -> String {
    format!(
        "MSH|^~\\&|HIS|MAIN|SB|HUB|20250101120000||ADT^A01^ADT_A01|{control_id}|P|2.5.1\rEVN|A01|20250101120000\rPID|1||{mrn}^^^MAIN^MR||Testperson^Alex||19800101|U\rPV1|1|I|WARD-3^301^1||||||||||||||||{visit}\r"
    )
}

/// An SIU^S12 booking appointment `appointment` for patient `mrn` (synthetic).
fn booking(mrn: &str, appointment: &str, control_id: &str) -> String {
    format!(
        "MSH|^~\\&|HIS|MAIN|SB|HUB|20250101120000||SIU^S12^SIU_S12|{control_id}|P|2.5.1\rSCH||{appointment}^HIS|||||||||^^^202606161000\rPID|1||{mrn}^^^MAIN^MR||Testperson^Alex||19800101|U\r"
    )
}

fn control_ids(list: &serde_json::Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| m["control_id"].as_str().expect("control_id").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_tokens_read_and_operators_act() {
    let sink = HttpSink::start(SinkMode::RejectBad).await;
    let (_cfg, engine) = engine_with_roles(&sink);
    let admin = engine.admin();
    let mut mllp = connect(&engine.mllp("lab")).await;
    let ack = send(&mut mllp, adt_for("P-ROLE", "ROLE-1").as_bytes()).await;
    assert_eq!(segment(&ack, "MSA")[1], "AA", "{ack}");
    let bad = adt_for("P-ROLE", "ROLE-BAD").replace("Testperson", "BAD");
    send(&mut mllp, bad.as_bytes()).await;
    let list_url = format!("{admin}/api/messages?control_id=ROLE-1");

    // No token, a wrong one, or one with a byte missing: 401 with a JSON error.
    for token in [None, Some("wrong"), Some(&VIEWER[..VIEWER.len() - 1])] {
        let (status, body) = get(&list_url, token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(body["error"], "unauthorized", "{body}");
    }
    // Every token reads.
    for token in [VIEWER, OPS, ADMIN] {
        let (status, body) = get(&list_url, Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{token}");
        assert_eq!(control_ids(&body), ["ROLE-1"]);
    }
    let (_, me) = get(&format!("{admin}/api/whoami"), Some(VIEWER)).await;
    assert_eq!(
        me,
        serde_json::json!({"name": "viewer", "role": "read_only"})
    );
    let (_, me) = get(&format!("{admin}/api/whoami"), Some(ADMIN)).await;
    assert_eq!(me, serde_json::json!({"name": "admin", "role": "operator"}));
    let (status, _) = get(&format!("{admin}/api/channels"), Some(VIEWER)).await;
    assert_eq!(status, StatusCode::OK);
    let events = reqwest::get(format!("{admin}/api/events?access_token={VIEWER}"))
        .await
        .expect("events");
    assert_eq!(
        events.status(),
        StatusCode::OK,
        "the stream is for readers too"
    );
    drop(events);

    let (_, listed) = get(&list_url, Some(VIEWER)).await;
    let id = listed["items"][0]["id"].as_str().expect("id").to_string();
    let reprocess = format!("{admin}/api/messages/{id}/reprocess");
    // The dead letter appears once the sink refused it.
    let dead_url = format!("{admin}/api/dead-letters");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let dead = loop {
        let dead = get(&dead_url, Some(VIEWER)).await.1;
        if dead["count"] == 1 || std::time::Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(dead["count"], 1, "{dead}");
    let item = serde_json::json!({"items": [{
        "destination": dead["items"][0]["destination"],
        "seq": dead["items"][0]["seq"],
    }]});

    // The read-only token may not act: 403, a JSON error naming the token, nothing done.
    for (url, body) in [
        (reprocess.clone(), serde_json::json!({})),
        (format!("{admin}/api/reprocess"), serde_json::json!({})),
        (format!("{dead_url}/retry"), item.clone()),
        (format!("{dead_url}/discard"), item.clone()),
        (format!("{admin}/api/reload"), serde_json::json!({})),
    ] {
        let (status, err) = post(&url, VIEWER, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{url}: {err}");
        assert_eq!(err["error"], "forbidden", "{err}");
        let detail = err["detail"].as_str().expect("detail");
        assert!(
            detail.contains("'viewer'") && detail.contains("operator"),
            "{detail}"
        );
    }
    let (_, dead_after) = get(&dead_url, Some(VIEWER)).await;
    assert_eq!(dead_after["count"], 1, "the refused retry did nothing");
    let (_, audit) = get(&format!("{admin}/api/audit"), Some(VIEWER)).await;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(0), "{audit}");

    // Operators act, and the audit names their token.
    let (status, r) = post(&reprocess, OPS, serde_json::json!({})).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    sink.set(SinkMode::Up);
    let (status, r) = post(&format!("{dead_url}/retry"), ADMIN, item).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["retried"], 1, "{r}");
    let (_, audit) = get(&format!("{admin}/api/audit"), Some(OPS)).await;
    let who: Vec<(&str, &str)> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|a| {
            (
                a["action"].as_str().expect("action"),
                a["who"].as_str().expect("who"),
            )
        })
        .collect();
    assert_eq!(
        who,
        [("dead_letter_retry", "admin"), ("reprocess", "ops")],
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_found_by_patient_visit_and_appointment() {
    let sink = HttpSink::start(SinkMode::Up).await;
    let (_cfg, engine) = engine_with_roles(&sink);
    let admin = engine.admin();
    let mut mllp = connect(&engine.mllp("lab")).await;
    for m in [
        admission("MRN-KEY-1", "VN-KEY-7", "KEY-A01"),
        booking("MRN-KEY-1", "APT-KEY-9", "KEY-S12"),
        admission("MRN-KEY-10", "VN-KEY-8", "KEY-OTHER"),
    ] {
        let ack = send(&mut mllp, m.as_bytes()).await;
        assert_eq!(segment(&ack, "MSA")[1], "AA", "{ack}");
    }
    let search = |q: &str| {
        let url = format!("{admin}/api/messages?{q}");
        async move {
            let (status, body) = get(&url, Some(VIEWER)).await;
            assert_eq!(status, StatusCode::OK, "{url}: {body}");
            control_ids(&body)
        }
    };
    // Newest first; MRN-KEY-1 is no prefix match of MRN-KEY-10.
    assert_eq!(search("key=MRN-KEY-1").await, ["KEY-S12", "KEY-A01"]);
    assert_eq!(
        search("key=MRN-KEY-1&key_type=mrn").await,
        ["KEY-S12", "KEY-A01"]
    );
    assert_eq!(search("key=VN-KEY-7&key_type=visit").await, ["KEY-A01"]);
    assert_eq!(search("key=VN-KEY-7").await, ["KEY-A01"]);
    assert_eq!(
        search("key=APT-KEY-9&key_type=appointment").await,
        ["KEY-S12"]
    );
    assert_eq!(search("key=MRN-KEY-10&channel=lab").await, ["KEY-OTHER"]);
    assert!(search("key=MRN-KEY-1&key_type=visit").await.is_empty());
    assert!(search("key=NOBODY").await.is_empty());
    let (status, err) = get(
        &format!("{admin}/api/messages?key=X&key_type=surname"),
        Some(VIEWER),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(err["detail"]
        .as_str()
        .is_some_and(|d| d.contains("key_type")));
    let (_, shown) = get(
        &format!(
            "{admin}/api/messages/{}",
            get(
                &format!("{admin}/api/messages?control_id=KEY-A01"),
                Some(VIEWER)
            )
            .await
            .1["items"][0]["id"]
                .as_str()
                .expect("id")
        ),
        Some(VIEWER),
    )
    .await;
    let keys = shown["business_keys"].to_string();
    assert!(
        keys.contains("\"patient_id\"") && keys.contains("VN-KEY-7"),
        "{keys}"
    );

    // The CLI searches the same index.
    let out = std::process::Command::new(binary())
        .args(["messages", "--admin", &admin, "list", "--key", "APT-KEY-9"])
        .env("SWITCHBOARD_ADMIN_TOKEN", VIEWER)
        .output()
        .expect("cli runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("KEY-S12") && !text.contains("KEY-A01"),
        "{text}"
    );
    assert!(text.contains("1 message(s)"), "{text}");
}
