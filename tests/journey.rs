//! The patient journey end to end: a standard HL7 feed (no `ZVT`) through the real engine to
//! the PX360 sandbox, with the visit's timeline kept in the engine's store; and the engine's
//! own PX360-format webhook source answering the document's success body on both of its
//! endpoints (the legacy `his-events` one included), over real HTTP.

use crate::connectors::{until, Sandbox};
use crate::support::*;
use serde_json::{json, Value};
use switchboard_sandbox::SandboxConfig;

fn journey_fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../fixtures/journey/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

fn stages(journey: &Value) -> Vec<String> {
    journey["stages"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["stage"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A01 -> A02 -> ORM -> ORU -> A03 of one visit, none with a ZVT segment, reaches PX360 as
/// one journey with its stages completed and one survey; the A08 after the A03 is delivered
/// and does not reopen it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_visit_completes_its_px360_journey_and_a_later_a08_does_not_reopen_it() {
    let sb = Sandbox::start(SandboxConfig {
        px360_hospitals: vec!["RUH".into()],
        ..SandboxConfig::for_tests()
    })
    .await;
    let cfg = TestConfig::new("", "");
    std::fs::write(
        cfg.conf().join("channels/his.toml"),
        format!(
            "name = \"his\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n\
             [[route]]\nwhen = {{ message_type = [\"ADT^*\", \"ORM^*\", \"ORU^*\"] }}\nto = [\"px\"]\n\
             [[destination]]\nname = \"px\"\ntype = \"px360\"\nbase_url = \"{}\"\n{FAST_RETRY}\
             [destination.options]\nhospital_id = \"1\"\nhospital_name = \"RUH\"\n",
            sb.base("px360")
        ),
    )
    .expect("write channel");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("his")).await;
    for name in ["a01.hl7", "a02.hl7", "orm.hl7", "oru.hl7", "a03.hl7"] {
        let ack = send(&mut client, journey_fixture(name).as_bytes()).await;
        assert!(
            matches!(segment(&ack, "MSA")[1].as_str(), "AA" | "CA"),
            "{name}: {ack}"
        );
    }
    let state_url = format!("{}/_state", sb.base("px360"));
    let state = until(60, &state_url, |s| {
        s["journeys"][0]["status"] == "completed" && s["responses_by_status"]["200"] == 5
    })
    .await;
    assert_eq!(
        state["journeys"].as_array().map(Vec::len),
        Some(1),
        "{state}"
    );
    let journey = &state["journeys"][0];
    assert_eq!(journey["encounter_id"], "V-JRN-001", "{state}");
    assert_eq!(journey["status"], "completed", "{state}");
    assert_eq!(journey["surveys_sent"], 1, "{state}");
    let done = stages(journey);
    for stage in [
        "MD Consultation",
        "MD Visit",
        "Clinical Assessment",
        "Patient Assessment",
    ] {
        assert!(done.iter().any(|s| s == stage), "{stage} missing: {state}");
    }
    // The HIS's text, never a snake_case name, for what PX360 has no stage for.
    let skipped = journey["skipped_visit_types"].to_string();
    assert!(
        skipped.contains("Admission")
            && skipped.contains("Transfer")
            && skipped.contains("Lab Order")
            && skipped.contains("Discharge"),
        "{skipped}"
    );
    assert!(!skipped.contains('_'), "{skipped}");

    let ack = send(&mut client, journey_fixture("a08.hl7").as_bytes()).await;
    assert!(
        matches!(segment(&ack, "MSA")[1].as_str(), "AA" | "CA"),
        "{ack}"
    );
    let after = until(60, &state_url, |s| s["responses_by_status"]["200"] == 6).await;
    assert_eq!(
        after["responses_by_status"]["200"], 6,
        "the A08 was sent: {after}"
    );
    let journey = &after["journeys"][0];
    assert_eq!(journey["status"], "completed", "not reopened: {after}");
    assert_eq!(journey["surveys_sent"], 1, "one survey: {after}");
    assert_eq!(
        after["patients"][0]["MobileNo"], "+966 50 1000002",
        "the update itself reached PX360: {after}"
    );
    engine.terminate();
    sb.stop().await;
}

fn document_sample() -> Value {
    json!({
        "FetchPatientDataTimeStampList": [{
            "Type": "Patient Demographic details",
            "PatientID": "JRN-WH-1", "AdmissionID": "ADM-WH-1", "HospitalID": "1",
            "HospitalName": "ALH-main", "AdmitDate": "05-Jun-2025 11:06",
            "DischargeDate": "05-Jun-2025 15:30", "SSN": "1000000002",
            "PatientName": "Testperson Webhook", "MobileNo": "0500000002"
        }],
        "FetchPatientDataTimeStampVisitDataList": [
            {"Type": "Consultation", "BillDate": "05-Jun-2025 11:06"},
            {"Type": "Doctor Visited", "BillDate": "05-Jun-2025 11:20"},
            {"Type": "Clinical Condtion", "BillDate": "05-Jun-2025 11:30"},
            {"Type": "ChiefComplaint", "BillDate": "05-Jun-2025 11:35"},
            {"Type": "Prescribed Drugs", "BillDate": "05-Jun-2025 12:00"},
            {"Type": "Lab Order", "BillDate": "05-Jun-2025 12:10"}
        ],
        "Code": 200,
        "Status": "Success"
    })
}

/// The PX360-format webhook source serves the document's endpoint and its legacy
/// `his-events` endpoint, each answering the document's success body; both are stored, told
/// apart by their message type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_px360_webhook_serves_the_legacy_endpoint_and_the_documents_success_body() {
    let cfg = TestConfig::new("", "");
    std::fs::write(
        cfg.conf().join("channels/px360-in.toml"),
        "name = \"px360-in\"\n[source]\ntype = \"webhook\"\nformat = \"px360\"\nlisten = \"127.0.0.1:0\"\n",
    )
    .expect("write channel");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let client = reqwest::Client::new();
    let base = format!("http://{}", engine.info.channels["px360-in"]);
    let mut answers = Vec::new();
    for path in [
        "/api/simulator/his-patient-data/",
        "/api/simulator/his-events/",
    ] {
        let mut body = document_sample();
        if path.contains("events") {
            body["FetchPatientDataTimeStampList"][0]["AdmissionID"] = json!("ADM-WH-2");
            body["FetchPatientDataTimeStampList"][0]
                .as_object_mut()
                .expect("object")
                .remove("DischargeDate");
        }
        let resp = client
            .post(format!("{base}{path}"))
            .json(&body)
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status(), 200, "{path}");
        answers.push(resp.json::<Value>().await.expect("json"));
    }
    let first = &answers[0];
    let uuid = |v: &Value| v.as_str().map(|s| (s.len(), s.matches('-').count()));
    assert_eq!(uuid(&first["patient_id"]), Some((36, 4)), "{first}");
    assert_eq!(uuid(&first["journey_id"]), Some((36, 4)), "{first}");
    let expected = json!({
        "success": true,
        "message": "Patient data processed successfully. Journey created with 5 stages completed.",
        "patient_id": first["patient_id"],
        "patient_mrn": "JRN-WH-1",
        "patient_name": "Testperson Webhook",
        "journey_id": first["journey_id"],
        "encounter_id": "ADM-WH-1",
        "completed_stages": ["Consultation", "Doctor Visited", "Clinical Condtion", "ChiefComplaint", "Prescribed Drugs"],
        "survey_triggered": true,
        "journey_status": "completed"
    });
    assert_eq!(first, &expected);
    let legacy = &answers[1];
    assert_eq!(legacy["success"], true, "{legacy}");
    assert_eq!(
        legacy["patient_id"], first["patient_id"],
        "same patient: {legacy}"
    );
    assert_ne!(
        legacy["journey_id"], first["journey_id"],
        "another admission"
    );
    assert_eq!(legacy["encounter_id"], "ADM-WH-2");
    assert_eq!(legacy["journey_status"], "active");
    assert_eq!(legacy["survey_triggered"], false);

    let stored = get_json(&format!(
        "{}/api/messages?channel=px360-in&limit=10",
        engine.admin()
    ))
    .await;
    let types: Vec<&str> = stored["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|m| m["message_type"].as_str())
        .collect();
    assert_eq!(types, ["his-events", "his-patient-data"], "{stored}");
    // An unknown path under the simulator API is not an endpoint.
    let resp = client
        .post(format!("{base}/api/simulator/his-other/"))
        .json(&document_sample())
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 404);
    engine.terminate();
}
