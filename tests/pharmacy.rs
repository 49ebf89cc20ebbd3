//! Prescriptions end to end: an RDE^O11 and its RDS^O13 over MLLP to the real engine reach an
//! in-test FHIR server as a MedicationRequest and a MedicationDispense in transaction Bundles
//! and the PX360 sandbox as the visit's Pharmacy stage; a MedicationRequest POSTed to the `fhir_rest` source is taken (201),
//! mapped and delivered, and one without any order number is answered 422 with an
//! OperationOutcome.

use crate::connectors::{until, Sandbox};
use crate::support::*;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use switchboard_sandbox::SandboxConfig;

/// A FHIR server on 127.0.0.1 that accepts everything and keeps each POSTed Bundle.
struct FhirPeer {
    base: String,
    bundles: Arc<Mutex<Vec<Value>>>,
}

impl FhirPeer {
    async fn start() -> FhirPeer {
        let bundles: Arc<Mutex<Vec<Value>>> = Arc::new(Mutex::new(Vec::new()));
        let kept = bundles.clone();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, body: String| {
            let kept = kept.clone();
            async move {
                if method == Method::POST && uri.path() == "/r4" {
                    let bundle = serde_json::from_str(&body).unwrap_or(Value::Null);
                    kept.lock().expect("lock").push(bundle);
                }
                let answer = json!({"resourceType": "Bundle", "type": "transaction-response"});
                let r: Response = (
                    StatusCode::OK,
                    [("content-type", "application/fhir+json")],
                    answer.to_string(),
                )
                    .into_response();
                r
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FhirPeer {
            base: format!("http://{addr}/r4"),
            bundles,
        }
    }

    /// The resources of every Bundle received so far with this `resourceType`.
    fn resources(&self, rtype: &str) -> Vec<Value> {
        self.bundles
            .lock()
            .expect("lock")
            .iter()
            .flat_map(|b| b["entry"].as_array().cloned().unwrap_or_default())
            .map(|e| e["resource"].clone())
            .filter(|r| r["resourceType"] == rtype)
            .collect()
    }
}

fn fhir_destination(peer: &FhirPeer) -> String {
    format!(
        "[[destination]]\nname = \"fhir\"\ntype = \"fhir\"\nbase_url = \"{}\"\nmode = \"transaction\"\n{FAST_RETRY}",
        peer.base
    )
}

/// An outpatient registration with its admit time (PV1-44), a prescription of the same visit
/// and its dispense.
fn visit_messages() -> [String; 3] {
    let pid = "PID|1||MRN-RX-001^^^HIS^MR||Testperson^Pharmacy||19880304|F";
    let pv1 = format!(
        "PV1|1|O|CLN-IM-02^R210^^RUH||||DOC-RX1^Alpha^Amal^^^Dr|||IM|||||||||V-RX-001{}20260615090000+0300",
        "|".repeat(25)
    );
    let a04 = format!(
        "MSH|^~\\&|HIS|RUH|SB|HUB|20260615090000+0300||ADT^A04^ADT_A01|RX-A04-1|P|2.5.1\r\
         EVN|A04|20260615090000+0300\r{pid}\r{pv1}\r"
    );
    let rde = format!(
        "MSH|^~\\&|HIS|RUH|PHARMACY|RUH|20260615110000+0300||RDE^O11^RDE_O11|RX-RDE-1|P|2.5.1\r\
         {pid}\r{pv1}\r\
         ORC|NW|RX-E2E-1^HIS|||||||20260615105500+0300|||DOC-RX1^Alpha^Amal^^^Dr\r\
         RXE||00093-7146^Amoxicillin 500 mg capsule^NDC|500||mg^milligram^UCUM|||||21|{{cap}}^capsule^UCUM|1\r\
         TQ1|1||TID^Three times a day^HL70335\r\
         RXR|PO^Oral^HL70162\r"
    );
    let rds = format!(
        "MSH|^~\\&|PHARMACY|RUH|HIS|RUH|20260615140000+0300||RDS^O13^RDS_O13|RX-RDS-1|P|2.5.1\r\
         {pid}\r{pv1}\r\
         ORC|RE|RX-E2E-1^HIS\r\
         RXD|1|00093-7146^Amoxicillin 500 mg capsule^NDC|20260615140000+0300|21|{{cap}}^capsule^UCUM||RX-E2E-P1\r"
    );
    [a04, rde, rds]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rde_and_its_rds_reach_the_fhir_server_and_the_px360_pharmacy_stage() {
    let sb = Sandbox::start(SandboxConfig {
        px360_hospitals: vec!["RUH".into()],
        ..SandboxConfig::for_tests()
    })
    .await;
    let peer = FhirPeer::start().await;
    let cfg = TestConfig::new("", "");
    std::fs::write(
        cfg.conf().join("channels/his.toml"),
        format!(
            "name = \"his\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n\
             [[route]]\nwhen = {{ message_type = [\"ADT^*\", \"RDE^*\", \"RDS^*\"] }}\nto = [\"px\"]\n\
             [[route]]\nwhen = {{ message_type = [\"RDE^*\", \"RDS^*\"] }}\nto = [\"fhir\"]\n\
             [[destination]]\nname = \"px\"\ntype = \"px360\"\nbase_url = \"{}\"\n{FAST_RETRY}\
             [destination.options]\nhospital_id = \"1\"\nhospital_name = \"RUH\"\n{}",
            sb.base("px360"),
            fhir_destination(&peer)
        ),
    )
    .expect("write channel");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("his")).await;
    for message in visit_messages() {
        let ack = send(&mut client, message.as_bytes()).await;
        assert_eq!(segment(&ack, "MSA")[1], "AA", "{ack}");
    }
    assert!(
        eventually(60, || !peer.resources("MedicationRequest").is_empty()).await,
        "no MedicationRequest reached the FHIR server"
    );
    let mr = &peer.resources("MedicationRequest")[0];
    assert_eq!(mr["status"], "active", "{mr}");
    assert_eq!(mr["intent"], "order", "{mr}");
    assert_eq!(mr["identifier"][0]["value"], "RX-E2E-1", "{mr}");
    let coding = &mr["medicationCodeableConcept"]["coding"][0];
    assert_eq!(coding["system"], "http://hl7.org/fhir/sid/ndc", "{mr}");
    assert_eq!(coding["code"], "00093-7146", "{mr}");
    assert_eq!(
        mr["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["code"], "mg",
        "{mr}"
    );
    assert_eq!(mr["dispenseRequest"]["numberOfRepeatsAllowed"], 1, "{mr}");
    // The subject is the Patient entry of the same Bundle.
    let bundle = peer.bundles.lock().expect("lock")[0].clone();
    let patient_url = bundle["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["resource"]["resourceType"] == "Patient")
        .map(|e| e["fullUrl"].clone())
        .expect("a Patient entry");
    assert_eq!(mr["subject"]["reference"], patient_url, "{bundle}");
    // The dispense: a MedicationDispense authorized by the same MedicationRequest.
    assert!(
        eventually(60, || !peer.resources("MedicationDispense").is_empty()).await,
        "no MedicationDispense reached the FHIR server"
    );
    let md = &peer.resources("MedicationDispense")[0];
    assert_eq!(md["status"], "completed", "{md}");
    assert_eq!(
        md["authorizingPrescription"][0]["identifier"]["value"], "RX-E2E-1",
        "{md}"
    );
    assert_eq!(md["whenHandedOver"], "2026-06-15T14:00:00+03:00", "{md}");
    let ids: Vec<Value> = peer
        .resources("MedicationRequest")
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert!(
        ids.len() >= 2 && ids.windows(2).all(|w| w[0] == w[1]),
        "the RDE and the RDS address one MedicationRequest: {ids:?}"
    );

    let state_url = format!("{}/_state", sb.base("px360"));
    let state = until(60, &state_url, |s| {
        s["responses_by_status"]["200"] == 3
            && s["journeys"][0]["stages"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["stage"] == "Pharmacy"))
    })
    .await;
    let journey = &state["journeys"][0];
    assert_eq!(journey["encounter_id"], "V-RX-001", "{state}");
    let stages: Vec<&str> = journey["stages"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["stage"].as_str()).collect())
        .unwrap_or_default();
    assert!(stages.contains(&"Pharmacy"), "{state}");
    engine.terminate();
    sb.stop().await;
}

fn medication_request(number: Option<&str>) -> Value {
    let mut mr = json!({
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{
            "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
            "code": "308182", "display": "Amoxicillin 250 MG Oral Capsule"}]},
        "subject": {"identifier": {"system": "urn:switchboard:mrn", "value": "MRN-RX-002"}},
        "authoredOn": "2026-06-18T09:15:00+03:00",
        "dosageInstruction": [{"text": "One capsule three times a day",
            "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "capsule",
                "system": "http://unitsofmeasure.org", "code": "{cap}"}}]}]
    });
    if let Some(n) = number {
        mr["identifier"] = json!([{"system": "urn:example:bioecko:prescription", "value": n}]);
    }
    mr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_medication_request_posted_to_the_fhir_source_is_mapped_and_delivered() {
    let peer = FhirPeer::start().await;
    let cfg = TestConfig::new("", "");
    let token = cfg.root.path().join("token");
    std::fs::write(&token, "fhir-in-token\n").expect("token");
    std::fs::write(
        cfg.conf().join("channels/fhir.toml"),
        format!(
            "name = \"fhir-in\"\n[source]\ntype = \"fhir_rest\"\nlisten = \"127.0.0.1:0\"\n\
             base_path = \"/fhir\"\n[source.auth]\nbearer_token = {{ file = \"{}\" }}\n\
             [[route]]\nto = [\"fhir\"]\n{}",
            token.display(),
            fhir_destination(&peer)
        ),
    )
    .expect("write channel");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let url = format!(
        "http://{}/fhir/MedicationRequest",
        engine.info.channels["fhir-in"]
    );
    let client = reqwest::Client::new();
    let post = |body: Value| {
        client
            .post(&url)
            .bearer_auth("fhir-in-token")
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
    };
    let resp = post(medication_request(Some("BE-RX-E2E-1")))
        .await
        .expect("sent");
    assert_eq!(resp.status(), 201);

    let resp = post(medication_request(None)).await.expect("sent");
    assert_eq!(resp.status(), 422);
    let outcome: Value = resp.json().await.expect("json");
    assert_eq!(outcome["resourceType"], "OperationOutcome", "{outcome}");
    assert!(
        outcome.to_string().contains("MedicationRequest.identifier"),
        "{outcome}"
    );

    assert!(
        eventually(60, || !peer.resources("MedicationRequest").is_empty()).await,
        "the MedicationRequest was not delivered"
    );
    let mr = &peer.resources("MedicationRequest")[0];
    assert_eq!(
        mr["identifier"][0],
        json!({"system": "urn:switchboard:order-placer", "value": "BE-RX-E2E-1"}),
        "{mr}"
    );
    assert_eq!(
        mr["medicationCodeableConcept"]["coding"][0]["code"], "308182",
        "{mr}"
    );
    assert_eq!(mr["subject"]["identifier"]["value"], "MRN-RX-002", "{mr}");
    let bundle = peer.bundles.lock().expect("lock")[0].clone();
    assert_eq!(
        bundle["meta"]["tag"][0]["code"], "medication_order_created",
        "{bundle}"
    );
    assert_eq!(
        peer.resources("MedicationRequest").len(),
        1,
        "the refused one was not delivered"
    );
    engine.terminate();
}
