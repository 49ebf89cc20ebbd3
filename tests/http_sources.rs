//! HTTP sources end to end: FHIR REST (create, update, transaction Bundles, errors, the
//! CapabilityStatement and reads of what was received) and the
//! webhook source (Buktor signatures and replays, PX360 validation, OpsPort bulk), against
//! the real binary on 127.0.0.1.

use crate::support::*;
use serde_json::{json, Value};

const PATIENT: &str = include_str!("../fixtures/fhir/patient/full.input.json");
const PATIENT_UNKNOWN_ELEMENT: &str =
    include_str!("../fixtures/fhir/patient/unknown_element.input.json");
const APPOINTMENT: &str = include_str!("../fixtures/fhir/appointment/booked.input.json");
const TRANSACTION: &str =
    include_str!("../fixtures/fhir/transaction/patient_and_appointment.input.json");
const TRANSACTION_BAD_ENTRY: &str =
    include_str!("../fixtures/fhir/transaction/bad_entry.input.json");

/// Writes a secret file and returns its path as TOML-ready text.
fn secret(cfg: &TestConfig, name: &str, value: &str) -> String {
    let path = cfg.root.path().join(name);
    std::fs::write(&path, value).expect("write secret");
    path.display().to_string()
}

fn add_channel(cfg: &TestConfig, name: &str, text: &str) {
    std::fs::write(cfg.conf().join(format!("channels/{name}.toml")), text).expect("write channel");
}

async fn messages(engine: &EngineProcess, channel: &str) -> Vec<Value> {
    get_json(&format!(
        "{}/api/messages?channel={channel}&limit=100",
        engine.admin()
    ))
    .await["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn metrics(engine: &EngineProcess) -> String {
    reqwest::get(format!("{}/metrics", engine.admin()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

struct Fhir {
    base: String,
    client: reqwest::Client,
}

impl Fhir {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &str,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let resp = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("content-type", "application/fhir+json")
            .bearer_auth("fhir-token")
            .body(body.to_string())
            .send()
            .await
            .expect("FHIR source reachable");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, v)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_rest_creates_events_answers_in_fhir_terms_and_keeps_bundles_whole() {
    let sink = HttpSink::start(SinkMode::Up).await;
    let cfg = TestConfig::new("", "");
    fhir_channel_with(&cfg, &sink, "max_body_bytes = 65536\n", "");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let fhir = Fhir {
        base: format!("http://{}/fhir", engine.info.channels["fhir"]),
        client: reqwest::Client::new(),
    };
    use reqwest::Method;

    // Create: 201, Location, the resource with its id; the event reaches the destination.
    let (status, headers, body) = fhir.send(Method::POST, "/Patient", PATIENT).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("an id").to_string();
    assert_eq!(body["resourceType"], "Patient");
    assert_eq!(headers["location"], format!("Patient/{id}").as_str());
    assert_eq!(
        headers["content-type"],
        "application/fhir+json; charset=utf-8"
    );
    let (status, _, body) = fhir.send(Method::POST, "/Appointment", APPOINTMENT).await;
    assert_eq!(status, 201, "{body}");
    assert!(
        eventually(20, || sink.received().len() >= 2).await,
        "two events delivered"
    );
    let kinds: Vec<String> = sink
        .received()
        .iter()
        .map(|(_, b)| {
            serde_json::from_str::<Value>(b).expect("canonical JSON")["kind"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(kinds.iter().any(|k| k.starts_with("patient_")), "{kinds:?}");
    assert!(
        kinds.contains(&"appointment_booked".to_string()),
        "{kinds:?}"
    );
    let stored = messages(&engine, "fhir").await;
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|m| m["ack_code"] == "201"), "{stored:?}");

    // A resend gets the first answer and is not processed again.
    let (status, headers, body) = fhir.send(Method::POST, "/Patient", PATIENT).await;
    assert_eq!((status, body["id"].as_str()), (201, Some(id.as_str())));
    assert_eq!(headers["location"], format!("Patient/{id}").as_str());
    assert_eq!(messages(&engine, "fhir").await.len(), 2);

    // Update: 200 with the id of the URL.
    let mut updated: Value = serde_json::from_str(PATIENT).expect("fixture");
    updated["id"] = json!("pat-77");
    updated["gender"] = json!("female");
    let (status, headers, body) = fhir
        .send(Method::PUT, "/Patient/pat-77", &updated.to_string())
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["location"], "Patient/pat-77");
    let (status, _, body) = fhir
        .send(Method::PUT, "/Patient/other", &updated.to_string())
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["issue"][0]["expression"][0], "Patient.id");

    // An invalid resource: 400, an OperationOutcome naming the element, stored as rejected.
    let (status, _, body) = fhir
        .send(Method::POST, "/Patient", PATIENT_UNKNOWN_ELEMENT)
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["resourceType"], "OperationOutcome");
    assert_eq!(
        body["issue"][0]["expression"][0],
        "Patient.name[0].nickname"
    );
    let rejected = get_json(&format!(
        "{}/api/messages?channel=fhir&status=rejected",
        engine.admin()
    ))
    .await;
    assert_eq!(
        rejected["items"].as_array().map(Vec::len),
        Some(2),
        "{rejected}"
    );

    // A transaction Bundle: all of it, or (one bad entry) none of it.
    assert!(
        eventually(20, || sink.received().len() >= 3).await,
        "the update's event"
    );
    let before = sink.received().len();
    let (status, _, body) = fhir.send(Method::POST, "/", TRANSACTION_BAD_ENTRY).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["issue"][0]["expression"][0],
        "Bundle.entry[1].resource.minutesDuration"
    );
    let (status, _, body) = fhir.send(Method::POST, "/", TRANSACTION).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "transaction-response");
    let entries = body["entry"].as_array().expect("entries");
    assert!(
        entries.iter().all(|e| e["response"]["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("20"))),
        "{body}"
    );
    let expected: usize = serde_json::from_str::<Value>(include_str!(
        "../fixtures/fhir/transaction/patient_and_appointment.expected.json"
    ))
    .expect("fixture")["events"]
        .as_array()
        .map(Vec::len)
        .expect("events");
    assert!(eventually(20, || sink.received().len() >= before + expected).await);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        sink.received().len(),
        before + expected,
        "the good Bundle's events only; nothing of the bad Bundle"
    );

    // Transport errors: 415, 413, 401, 404, all OperationOutcomes.
    let resp = fhir
        .client
        .post(format!("{}/Patient", fhir.base))
        .header("content-type", "application/json")
        .bearer_auth("fhir-token")
        .body(PATIENT)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 415);
    let big = format!(
        "{{\"resourceType\":\"Patient\",\"text\":\"{}\"}}",
        "x".repeat(70_000)
    );
    let (status, _, body) = fhir.send(Method::POST, "/Patient", &big).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["issue"][0]["code"], "too-costly");
    let resp = fhir
        .client
        .post(format!("{}/Patient", fhir.base))
        .header("content-type", "application/fhir+json")
        .bearer_auth("wrong")
        .body(PATIENT)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["issue"][0]["code"], "login");
    let (status, _, _) = fhir.send(Method::POST, "/Medication", PATIENT).await;
    assert_eq!(status, 404);
    let m = metrics(&engine).await;
    assert!(
        m.contains("switchboard_http_auth_failures_total{channel=\"fhir\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("switchboard_duplicates_total{channel=\"fhir\"} 1"),
        "{m}"
    );
}

impl Fhir {
    async fn get(&self, path: &str, token: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("FHIR source reachable");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, v)
    }
}

/// A FHIR source `fhir` under `/fhir` with bearer token `fhir-token`, routing to `sink`.
fn fhir_channel(cfg: &TestConfig, sink: &HttpSink) {
    fhir_channel_with(cfg, sink, "", "");
}

/// [`fhir_channel`] with more source keys (`source_keys`, lines of `[source]`) and delivery
/// keys (`delivery_keys`, after the fast-retry table).
fn fhir_channel_with(cfg: &TestConfig, sink: &HttpSink, source_keys: &str, delivery_keys: &str) {
    let token = secret(cfg, "fhir-token", "fhir-token\n");
    add_channel(
        cfg,
        "fhir",
        &format!(
            "name = \"fhir\"\n[source]\ntype = \"fhir_rest\"\nlisten = \"127.0.0.1:0\"\nbase_path = \"/fhir\"\n{source_keys}[source.auth]\nbearer_token = {{ file = \"{token}\" }}\n[[route]]\nto = [\"hook\"]\n[[destination]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{}\"\n{FAST_RETRY}{delivery_keys}",
            sink.url
        ),
    );
}

/// FHIR records are delivered in one FIFO per patient, as HL7 messages are: a patient whose
/// deliveries the peer keeps refusing does not hold back another patient's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_rest_deliveries_queue_per_patient() {
    let sink = HttpSink::start(SinkMode::DownFor("P-20001")).await;
    let cfg = TestConfig::new("", "");
    fhir_channel_with(&cfg, &sink, "", "max_attempts = 100000\n");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let fhir = Fhir {
        base: format!("http://{}/fhir", engine.info.channels["fhir"]),
        client: reqwest::Client::new(),
    };
    let (status, _, body) = fhir.send(reqwest::Method::POST, "/Patient", PATIENT).await;
    assert_eq!(status, 201, "{body}");
    let other = PATIENT.replace("P-20001", "P-30002");
    let (status, _, body) = fhir.send(reqwest::Method::POST, "/Patient", &other).await;
    assert_eq!(status, 201, "{body}");
    assert!(
        eventually(20, || sink
            .received()
            .iter()
            .any(|(_, b)| b.contains("P-30002")))
        .await,
        "the second patient is delivered while the first is refused"
    );
    // The first is still being retried: nothing of it accepted, no dead letter.
    assert!(sink.received().iter().all(|(_, b)| !b.contains("P-20001")));
    let dead = get_json(&format!("{}/api/dead-letters", engine.admin())).await;
    assert_eq!(dead["count"], 0, "{dead}");
    // Different patients start in no set order: the first patient's refused attempt may come
    // just after the second patient's delivery.
    assert!(
        eventually(10, || sink.requests() >= 2).await,
        "the first patient's delivery was never attempted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_rest_states_its_capabilities_and_serves_exactly_them() {
    use reqwest::Method;
    let sink = HttpSink::start(SinkMode::Up).await;
    let cfg = TestConfig::new("", "");
    fhir_channel(&cfg, &sink);
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let fhir = Fhir {
        base: format!("http://{}/fhir", engine.info.channels["fhir"]),
        client: reqwest::Client::new(),
    };

    let (status, _, body) = fhir.get("/metadata", "wrong").await;
    assert_eq!((status, &body["issue"][0]["code"]), (401, &json!("login")));
    let (status, headers, cs) = fhir.get("/metadata", "fhir-token").await;
    assert_eq!(status, 200, "{cs}");
    assert_eq!(
        headers["content-type"],
        "application/fhir+json; charset=utf-8"
    );
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    assert_eq!(cs["kind"], "instance");
    assert_eq!(cs["format"], json!(["json"]));
    let rest = &cs["rest"][0];
    assert_eq!(rest["mode"], "server");
    let system: Vec<&str> = rest["interaction"]
        .as_array()
        .expect("system interactions")
        .iter()
        .filter_map(|i| i["code"].as_str())
        .collect();
    assert_eq!(system, ["transaction", "batch"]);

    // Each listed interaction is served (never 404/405) and the ones FHIR defines that are
    // not listed are refused with 405, for every listed type.
    let resources = rest["resource"].as_array().expect("resources");
    let types: Vec<&str> = resources
        .iter()
        .filter_map(|r| r["type"].as_str())
        .collect();
    assert_eq!(
        types,
        [
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
            "MedicationDispense"
        ]
    );
    for resource in resources {
        let rtype = resource["type"].as_str().expect("type");
        let mut codes: Vec<&str> = resource["interaction"]
            .as_array()
            .expect("interactions")
            .iter()
            .filter_map(|i| i["code"].as_str())
            .collect();
        codes.sort_unstable();
        assert_eq!(codes, ["create", "read", "update"], "{rtype}");
        // read: an unknown id is 404 not-found (the route exists).
        let (status, _, body) = fhir
            .get(&format!("/{rtype}/never-sent"), "fhir-token")
            .await;
        assert_eq!(
            (status, &body["issue"][0]["code"]),
            (404, &json!("not-found")),
            "{rtype}"
        );
        // create and update: an empty resource is refused by the engine's checks, not routing.
        let (status, _, body) = fhir.send(Method::POST, &format!("/{rtype}"), "{}").await;
        assert_eq!(status, 400, "create {rtype}: {body}");
        let (status, _, body) = fhir.send(Method::PUT, &format!("/{rtype}/x1"), "{}").await;
        assert_eq!(status, 400, "update {rtype}: {body}");
        for (method, path) in [
            (Method::DELETE, format!("/{rtype}/x1")),
            (Method::GET, format!("/{rtype}")),
            (Method::PATCH, format!("/{rtype}/x1")),
        ] {
            let (status, headers, body) = fhir.send(method.clone(), &path, "").await;
            assert_eq!(status, 405, "{method} {path}: {body}");
            assert_eq!(
                headers["content-type"],
                "application/fhir+json; charset=utf-8"
            );
        }
    }
    let (status, _, _) = fhir.get("/Medication/1", "fhir-token").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_rest_reads_back_what_it_received_from_the_store() {
    use reqwest::Method;
    let sink = HttpSink::start(SinkMode::Up).await;
    let cfg = TestConfig::new("", "");
    fhir_channel(&cfg, &sink);
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let fhir = Fhir {
        base: format!("http://{}/fhir", engine.info.channels["fhir"]),
        client: reqwest::Client::new(),
    };

    // A create is read back as answered: the resource as sent, with the id it was given.
    let (status, _, created) = fhir.send(Method::POST, "/Patient", PATIENT).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let (status, headers, read) = fhir.get(&format!("/Patient/{id}"), "fhir-token").await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(
        headers["content-type"],
        "application/fhir+json; charset=utf-8"
    );
    assert_eq!(read, created);
    let mut sent: Value = serde_json::from_str(PATIENT).expect("fixture");
    sent["id"] = json!(id);
    assert_eq!(read, sent, "what was received, with its id");

    // The source's credentials apply to reads.
    let (status, _, body) = fhir.get(&format!("/Patient/{id}"), "wrong").await;
    assert_eq!((status, &body["issue"][0]["code"]), (401, &json!("login")));

    // Updates: the newest accepted version is read; a rejected one changes nothing.
    let mut v1: Value = serde_json::from_str(PATIENT).expect("fixture");
    v1["id"] = json!("pat-77");
    v1["gender"] = json!("female");
    let (status, _, body) = fhir
        .send(Method::PUT, "/Patient/pat-77", &v1.to_string())
        .await;
    assert_eq!(status, 200, "{body}");
    let mut v2 = v1.clone();
    v2["gender"] = json!("other");
    let (status, _, body) = fhir
        .send(Method::PUT, "/Patient/pat-77", &v2.to_string())
        .await;
    assert_eq!(status, 200, "{body}");
    let mut bad = v1.clone();
    bad["birthDay"] = json!("1980-01-01");
    let (status, _, body) = fhir
        .send(Method::PUT, "/Patient/pat-77", &bad.to_string())
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _, read) = fhir.get("/Patient/pat-77", "fhir-token").await;
    assert_eq!((status, &read["gender"]), (200, &json!("other")), "{read}");
    let mut only_bad = bad.clone();
    only_bad["id"] = json!("pat-bad");
    let (status, _, _) = fhir
        .send(Method::PUT, "/Patient/pat-bad", &only_bad.to_string())
        .await;
    assert_eq!(status, 400);
    let (status, _, body) = fhir.get("/Patient/pat-bad", "fhir-token").await;
    assert_eq!(
        (status, &body["resourceType"]),
        (404, &json!("OperationOutcome"))
    );
    assert_eq!(body["issue"][0]["code"], "not-found");

    // Every entry of an accepted transaction is read at the Location its response named.
    let (status, _, answer) = fhir.send(Method::POST, "/", TRANSACTION).await;
    assert_eq!(status, 200, "{answer}");
    let bundle: Value = serde_json::from_str(TRANSACTION).expect("fixture");
    let entries = answer["entry"].as_array().expect("entries");
    assert_eq!(
        entries.len(),
        bundle["entry"].as_array().map_or(0, Vec::len)
    );
    for (i, entry) in entries.iter().enumerate() {
        let location = entry["response"]["location"].as_str().expect("location");
        let (rtype, rid) = location.split_once('/').expect("type/id");
        let (status, _, read) = fhir.get(&format!("/{location}"), "fhir-token").await;
        assert_eq!(status, 200, "{location}: {read}");
        assert_eq!(
            (read["resourceType"].as_str(), read["id"].as_str()),
            (Some(rtype), Some(rid))
        );
        let mut sent = bundle["entry"][i]["resource"].clone();
        sent["id"] = json!(rid);
        assert_eq!(read, sent, "entry {i}");
    }

    // From the store: the same after a restart.
    let data = cfg.data();
    assert_eq!(engine.terminate(), Some(0));
    let engine = EngineProcess::start(&cfg.conf(), &data);
    let fhir = Fhir {
        base: format!("http://{}/fhir", engine.info.channels["fhir"]),
        client: reqwest::Client::new(),
    };
    let (status, _, read) = fhir.get(&format!("/Patient/{id}"), "fhir-token").await;
    assert_eq!((status, read), (200, created));
    let (status, _, read) = fhir.get("/Patient/pat-77", "fhir-token").await;
    assert_eq!((status, &read["gender"]), (200, &json!("other")));
}

fn buktor_event(event_id: &str, timestamp: &str) -> String {
    json!({
        "event_id": event_id,
        "timestamp": timestamp,
        "type": "appointment.created",
        "operation": "created",
        "data": {
            "his_appointment_id": "A-T1",
            "his_patient_id": "P-T1",
            "his_doctor_id": "D-T1",
            "his_status": "confirmed",
            "his_start_at": "2026-07-01T09:00:00",
            "his_created_at": "2026-06-01T10:30:45"
        },
        "source": "HIS"
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_sources_check_signatures_replays_and_answer_in_their_formats() {
    let cfg = TestConfig::new("", "");
    let token = secret(&cfg, "buktor-token", "bk-token");
    let hmac = secret(&cfg, "buktor-secret", "bk-shared-secret");
    let key = secret(&cfg, "opsport-key", "ops-key");
    add_channel(
        &cfg,
        "buktor-in",
        &format!("name = \"buktor-in\"\n[source]\ntype = \"webhook\"\nformat = \"buktor\"\nlisten = \"127.0.0.1:0\"\ntimestamp_window_secs = 300\n[source.auth]\nbearer_token = {{ file = \"{token}\" }}\nhmac_secret = {{ file = \"{hmac}\" }}\n"),
    );
    add_channel(
        &cfg,
        "px360-in",
        "name = \"px360-in\"\n[source]\ntype = \"webhook\"\nformat = \"px360\"\nlisten = \"127.0.0.1:0\"\n",
    );
    add_channel(
        &cfg,
        "opsport-in",
        &format!("name = \"opsport-in\"\n[source]\ntype = \"webhook\"\nformat = \"opsport\"\nlisten = \"127.0.0.1:0\"\n[source.auth]\napi_key = {{ file = \"{key}\" }}\n"),
    );
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let client = reqwest::Client::new();
    let buktor = format!("http://{}/his/receive", engine.info.channels["buktor-in"]);
    let post = |body: String, token: Option<&str>, signature: Option<String>| {
        let mut req = client
            .post(&buktor)
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(s) = signature {
            req = req.header("Buktor-Signature", s);
        }
        async move {
            let resp = req.send().await.expect("webhook reachable");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.expect("JSON answer"))
        }
    };
    let sign = |body: &str, secret: &str| {
        channels::webhook::sender::sign(secret.as_bytes(), body.as_bytes())
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let ok = json!({"status": "success", "message": "Data received and processed successfully."});

    let event = buktor_event("evt_t1", &now);
    let (status, body) = post(
        event.clone(),
        Some("bk-token"),
        Some(sign(&event, "bk-shared-secret")),
    )
    .await;
    assert_eq!((status, &body), (200, &ok));
    // The resend: the first answer, one record.
    let (status, body) = post(
        event.clone(),
        Some("bk-token"),
        Some(sign(&event, "bk-shared-secret")),
    )
    .await;
    assert_eq!((status, &body), (200, &ok));
    let stored = messages(&engine, "buktor-in").await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["control_id"], "evt_t1");
    assert_eq!(stored[0]["message_type"], "appointment.created");

    let error = |m: &str| json!({"status": "error", "message": m});
    let tampered = event.replace("A-T1", "A-T2");
    assert_eq!(
        post(
            tampered,
            Some("bk-token"),
            Some(sign(&event, "bk-shared-secret"))
        )
        .await,
        (403, error("Invalid signature."))
    );
    assert_eq!(
        post(
            event.clone(),
            Some("bk-token"),
            Some(sign(&event, "another-secret"))
        )
        .await,
        (403, error("Invalid signature."))
    );
    assert_eq!(
        post(event.clone(), Some("bk-token"), None).await,
        (401, error("Missing Buktor-Signature header."))
    );
    assert_eq!(
        post(event.clone(), None, Some(sign(&event, "bk-shared-secret"))).await,
        (401, error("Unauthorized"))
    );
    let stale = buktor_event("evt_t2", "2025-01-08T12:00:00Z");
    assert_eq!(
        post(
            stale.clone(),
            Some("bk-token"),
            Some(sign(&stale, "bk-shared-secret"))
        )
        .await,
        (401, error("Event timestamp is outside the allowed window."))
    );
    let not_json = "{\"event_id\": ".to_string();
    let (status, body) = post(
        not_json.clone(),
        Some("bk-token"),
        Some(sign(&not_json, "bk-shared-secret")),
    )
    .await;
    assert_eq!((status, &body["status"]), (400, &json!("error")), "{body}");
    assert_eq!(
        messages(&engine, "buktor-in").await.len(),
        2,
        "refused requests are not stored; the invalid body is"
    );
    let m = metrics(&engine).await;
    assert!(
        m.contains("switchboard_http_auth_failures_total{channel=\"buktor-in\"} 5"),
        "{m}"
    );

    // PX360: an invalid body gets PX360's validation document.
    let px = format!(
        "http://{}/api/simulator/his-patient-data/",
        engine.info.channels["px360-in"]
    );
    let resp = client
        .post(&px)
        .json(&json!({"FetchPatientDataTimeStampList": [{"Type": "Patient Demographic details", "PatientID": "T-1"}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "Invalid HIS data format", "{body}");
    assert_eq!(
        body["details"]["Code"],
        json!(["This field is required."]),
        "{body}"
    );
    assert_eq!(messages(&engine, "px360-in").await[0]["status"], "rejected");

    // OpsPort: the bulk path takes an array; a wrong key is refused.
    let ops = format!(
        "http://{}/api/healthcare/patients",
        engine.info.channels["opsport-in"]
    );
    let patients = json!([
        {"name": "Testperson One", "patientNo": "P-T1", "mobile": "+966500000001", "dateOfBirth": "1990-01-01", "gender": "Male"},
        {"name": "Testperson Two", "patientNo": "P-T2", "mobile": "+966500000002", "dateOfBirth": "1991-02-02", "gender": "Female"}
    ]);
    let resp = client
        .post(&ops)
        .header("X-API-Key", "ops-key")
        .json(&patients)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.expect("json"),
        json!({"success": true, "received": 2})
    );
    let resp = client
        .post(&ops)
        .header("X-API-Key", "nope")
        .json(&patients)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.json::<Value>().await.expect("json")["success"], false);
    let one = format!(
        "http://{}/api/healthcare/patient",
        engine.info.channels["opsport-in"]
    );
    let resp = client
        .post(&one)
        .header("X-API-Key", "ops-key")
        .json(&patients)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 400, "the singular path takes one object");
    let stored = messages(&engine, "opsport-in").await;
    assert_eq!(stored.len(), 2);
    assert!(
        stored
            .iter()
            .any(|m| m["status"] != "rejected" && m["message_type"] == "patients"),
        "{stored:?}"
    );
}

/// Retention over the data folder a real engine wrote: the resend keys of FHIR and Buktor
/// bodies go with their messages (retention used to derive the HL7 key shape for them, so
/// they were never removed), and each channel's pass is in the audit records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_resend_keys_are_pruned_with_their_messages() {
    use engine::store::retention::{ChannelPrune, RetentionPolicy};
    let cfg = TestConfig::new("", "");
    let fhir_token = secret(&cfg, "fhir-token", "fhir-token\n");
    let token = secret(&cfg, "buktor-token", "bk-token");
    let hmac = secret(&cfg, "buktor-secret", "bk-shared-secret");
    add_channel(
        &cfg,
        "fhir",
        &format!("name = \"fhir\"\n[source]\ntype = \"fhir_rest\"\nlisten = \"127.0.0.1:0\"\nbase_path = \"/fhir\"\n[source.auth]\nbearer_token = {{ file = \"{fhir_token}\" }}\n"),
    );
    add_channel(
        &cfg,
        "buktor-in",
        &format!("name = \"buktor-in\"\n[source]\ntype = \"webhook\"\nformat = \"buktor\"\nlisten = \"127.0.0.1:0\"\ntimestamp_window_secs = 300\n[source.auth]\nbearer_token = {{ file = \"{token}\" }}\nhmac_secret = {{ file = \"{hmac}\" }}\n"),
    );
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let fhir = Fhir {
        base: format!("http://{}/fhir", engine.info.channels["fhir"]),
        client: reqwest::Client::new(),
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let event = buktor_event("evt_prune", &now);
    let signature = channels::webhook::sender::sign(b"bk-shared-secret", event.as_bytes());
    let buktor = format!("http://{}/his/receive", engine.info.channels["buktor-in"]);
    // Each sent twice: the resend is answered from the store, one record each.
    for _ in 0..2 {
        let (status, _, body) = fhir.send(reqwest::Method::POST, "/Patient", PATIENT).await;
        assert_eq!(status, 201, "{body}");
        let resp = fhir
            .client
            .post(&buktor)
            .header("content-type", "application/json")
            .header("Buktor-Signature", &signature)
            .bearer_auth("bk-token")
            .body(event.clone())
            .send()
            .await
            .expect("webhook reachable");
        assert_eq!(resp.status().as_u16(), 200);
    }
    assert_eq!(messages(&engine, "fhir").await.len(), 1);
    assert_eq!(messages(&engine, "buktor-in").await.len(), 1);
    let m = metrics(&engine).await;
    for ch in ["fhir", "buktor-in"] {
        assert_eq!(
            metric_value(
                &m,
                &format!("switchboard_duplicates_total{{channel=\"{ch}\"}}")
            ),
            1.0,
            "{m}"
        );
        assert_eq!(
            metric_value(
                &m,
                &format!("switchboard_retention_removed_total{{channel=\"{ch}\"}}")
            ),
            0.0,
            "{m}"
        );
    }
    assert_eq!(engine.terminate(), Some(0));

    // The store the engine left, pruned with the clock 100 days on.
    let store = engine::store::Store::open(
        &cfg.data(),
        engine::config::Durability::Os,
        &engine::metrics::Metrics::new("t"),
    )
    .expect("the store opens once the engine is gone");
    let policy = RetentionPolicy {
        default_days: 90,
        per_channel: Default::default(),
    };
    let later = engine::delivery::now_ms() + 100 * 86_400_000;
    let report = store.prune(&policy, later).expect("prune");
    let one = ChannelPrune {
        removed: 1,
        dedup_removed: 1,
        ..ChannelPrune::default()
    };
    assert_eq!(
        report.channels,
        [("buktor-in".to_string(), one), ("fhir".to_string(), one)]
            .into_iter()
            .collect(),
        "the resend key of each message went with it"
    );
    assert_eq!(store.message_count(), 0);
    let audit = store.audit_log(10).expect("audit");
    let retention: Vec<_> = audit
        .iter()
        .filter(|r| r.action == engine::store::kind::AuditAction::Retention)
        .collect();
    assert_eq!(retention.len(), 2, "{audit:?}");
    for r in retention {
        assert_eq!(r.counts, one.counts(), "{r:?}");
    }
    assert!(
        store
            .prune(&policy, later)
            .expect("prune")
            .channels
            .is_empty(),
        "nothing old is left"
    );
}
