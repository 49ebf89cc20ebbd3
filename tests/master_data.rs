//! Master data end to end: HL7 master files (MFN) into the real engine, answered record by
//! record (MFK), and the clinics, doctors, locations and schedule blocks they describe at the
//! OpsPort and Buktor sandboxes.

use crate::connectors::{dead_letters, secret, until, Sandbox};
use crate::support::*;
use serde_json::Value;
use switchboard_sandbox::SandboxConfig;

fn fixture(path: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../fixtures/hl7v2/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

fn len(v: &Value) -> usize {
    v.as_array().map(Vec::len).unwrap_or(0)
}

/// Every segment of `name` in an answer, split into fields.
fn segments(text: &str, name: &str) -> Vec<Vec<String>> {
    text.split('\r')
        .filter(|s| s.starts_with(name))
        .map(|s| s.split('|').map(str::to_owned).collect())
        .collect()
}

fn find<'a>(list: &'a Value, key: &str, value: &str) -> &'a Value {
    list.as_array()
        .and_then(|l| l.iter().find(|x| x[key] == value))
        .unwrap_or(&Value::Null)
}

fn channel(dest: &str) -> String {
    format!(
        "name = \"his\"\n[[route]]\nto = [\"d\"]\n{dest}\n{FAST_RETRY}\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfn_clinics_and_doctors_reach_opsport_with_every_field_and_a_bad_record_is_rejected_alone()
{
    let sb = Sandbox::start(SandboxConfig::for_tests()).await;
    let cfg = TestConfig::new("", "");
    let key = secret(&cfg, "opsport-key", "sandbox-opsport-key");
    let dest = format!(
        "[[destination]]\nname = \"d\"\ntype = \"opsport\"\nbase_url = \"{}\"\napi_key = {key}",
        sb.base("opsport")
    );
    std::fs::write(cfg.conf().join("channels/his.toml"), channel(&dest)).expect("write channel");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("his")).await;
    let state_url = format!("{}/_state", sb.base("opsport"));

    // Locations first: the doctors name their clinic, which OpsPort must already have.
    let mfk = send(&mut client, fixture("mfn_m05/full.hl7").as_bytes()).await;
    assert!(mfk.contains("MFK^M05^MFK_M01"), "{mfk}");
    assert!(
        matches!(segment(&mfk, "MSA")[1].as_str(), "AA" | "CA"),
        "{mfk}"
    );
    let mfa = segments(&mfk, "MFA");
    assert_eq!(mfa.len(), 3, "{mfk}");
    assert!(mfa.iter().all(|m| m[4] == "S"), "{mfk}");
    assert_eq!(mfa[0][1], "MAD");
    assert_eq!(mfa[0][2], "R1");
    let state = until(30, &state_url, |s| len(&s["clinics"]) >= 3).await;
    let clinic = find(&state["clinics"], "code", "CLN-PED-01");
    let expected = serde_json::json!({
        "name": "General Pediatric Clinic",
        "code": "CLN-PED-01",
        "number": "104",
        "specialization": "Pediatrics",
        "clinicType": "Outpatient",
        "branch": "RUH",
        "floor": "1st Floor",
        "location": "Building A, West Wing",
        "accountNo": "GL-1200",
        "costCenterNo": "CC-901",
        "address": "Olaya Street, Riyadh, SAU",
        "phone": "+966500000000",
        "email": "pediatrics@example.org",
        "isActive": true
    });
    for (k, v) in expected.as_object().expect("object") {
        assert_eq!(&clinic[k], v, "clinic field {k}: {state}");
    }
    assert_eq!(
        find(&state["clinics"], "code", "CLN-DERM-02")["isActive"],
        false
    );
    assert_eq!(
        find(&state["clinics"], "code", "CLN-OLD-09")["isActive"],
        false
    );

    // Doctors: every one of OpsPort's 17 doctor fields from STF, PRA and ORG.
    let mfk = send(&mut client, fixture("mfn_m02/full.hl7").as_bytes()).await;
    assert!(mfk.contains("MFK^M02^MFK_M01"), "{mfk}");
    assert!(segments(&mfk, "MFA").iter().all(|m| m[4] == "S"), "{mfk}");
    let state = until(30, &state_url, |s| len(&s["doctors"]) >= 2).await;
    let doctor = find(&state["doctors"], "code", "DOC-SARAH-04");
    let expected = serde_json::json!({
        "name": "Dr Sarah Al-Otaibi",
        "aName": "د. سارة العتيبي",
        "code": "DOC-SARAH-04",
        "branch": "Riyadh Main",
        "gender": "Female",
        "dateOfBirth": "1985-05-12",
        "medicalRegNumber": "M-20412",
        "idNumber": "1098473521",
        "accountNo": "GL-3100",
        "costCenter": "CC-901",
        "description": "Consultant Pediatrician with 12+ years experience.",
        "email": "s.otaibi@example.org",
        "phone": "+966501111111",
        "specialization": "Pediatrics",
        "licenseNumber": "LIC-PED-9988",
        "isActive": true,
        "clinicCodes": ["CLN-PED-01"]
    });
    assert_eq!(expected.as_object().map(|o| o.len()), Some(17));
    for (k, v) in expected.as_object().expect("object") {
        assert_eq!(&doctor[k], v, "doctor field {k}: {state}");
    }
    assert_eq!(
        find(&state["doctors"], "code", "DOC-OMAR-07")["isActive"],
        false
    );

    // One bad record among good ones: the others are posted, that one is rejected with the
    // reason, in the MFK and in the stored message.
    let file = "MSH|^~\\&|HIS|RUH|SB|HUB|20260615103000||MFN^M02^MFN_M02|MFN-BAD-1|P|2.5\r\
                MFI|STF||UPD|||AL\r\
                MFE|MAD|G1||DOC-NEW-11|CWE\rSTF|DOC-NEW-11||Nasser^Ali^^^Dr||M\r\
                MFE|MAD|B2|||CWE\rSTF|||Nameless^Someone\r\
                MFE|MAD|G3||DOC-NEW-12|CWE\rSTF|DOC-NEW-12||Saleh^Mona^^^Dr||F\r";
    let mfk = send(&mut client, file.as_bytes()).await;
    assert_eq!(segment(&mfk, "MSA")[1], "AA", "{mfk}");
    let mfa = segments(&mfk, "MFA");
    assert_eq!(mfa.len(), 3, "{mfk}");
    assert_eq!(mfa[0][4], "S", "{mfk}");
    assert_eq!(mfa[2][4], "S", "{mfk}");
    assert_eq!(mfa[1][2], "B2", "{mfk}");
    assert!(
        mfa[1][4].starts_with("U^missing STF[2]-1: no primary key")
            && mfa[1][4].ends_with("^HL70181"),
        "{mfk}"
    );
    assert!(
        !mfk.contains("Nameless"),
        "no record content in the answer: {mfk}"
    );
    let state = until(30, &state_url, |s| len(&s["doctors"]) >= 4).await;
    assert_eq!(len(&state["doctors"]), 4, "{state}");
    assert_eq!(
        find(&state["doctors"], "code", "DOC-NEW-12")["gender"],
        "Female"
    );
    let stored = until(
        10,
        &format!("{}/api/messages?control_id=MFN-BAD-1", engine.admin()),
        |v| v["items"][0]["status"] == "delivered",
    )
    .await;
    let id = stored["items"][0]["id"].as_str().expect("id").to_owned();
    let detail = get_json(&format!("{}/api/messages/{id}", engine.admin())).await;
    assert_eq!(detail["status"], "delivered", "{detail}");
    let errors = detail["errors"].to_string();
    assert!(errors.contains("MFE[2]: missing STF[2]-1"), "{detail}");
    assert!(!errors.contains("Nameless"), "{detail}");
    // The stored answer is the MFK that was sent.
    let stored_ack = detail["ack"].as_str().unwrap_or_default();
    assert!(
        stored_ack.contains("MFK^M02")
            && stored_ack.contains("\rMFA|MAD|B2|")
            && stored_ack.contains("|U^missing STF[2]-1"),
        "{detail}"
    );
    assert!(dead_letters(&engine, 0, 1).await.is_empty());

    // A file with no good record is answered AE, with the reason.
    let none = "MSH|^~\\&|HIS|RUH|SB|HUB|20260615103000||MFN^M02^MFN_M02|MFN-BAD-2|P|2.5\r\
                MFI|STF||UPD|||ER\r\
                MFE|MXX|B1||DOC-X|CWE\rSTF|DOC-X\r";
    let mfk = send(&mut client, none.as_bytes()).await;
    let msa = segment(&mfk, "MSA");
    assert_eq!(msa[1], "AE", "{mfk}");
    assert!(msa[3].contains("table 0180"), "{mfk}");
    assert!(segments(&mfk, "MFA")[0][4].starts_with("U^"), "{mfk}");
    engine.terminate();
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfn_clinic_and_blocked_slot_reach_buktor_as_location_and_schedule_events() {
    let mapping = serde_json::json!({"clients": {"1001": {"mappings": {
        "location.created": {"fields": {"his_location_id": "buktor_location_id", "his_location_name": "buktor_name", "his_location_type": "buktor_type"}},
        "schedule.created": {"fields": {"his_schedule_id": "buktor_schedule_id", "his_status": "buktor_status", "his_doctor_id": "buktor_doctor_id", "his_start_at": "buktor_start"}},
        "schedule.deleted": {"fields": {"his_schedule_id": "buktor_schedule_id", "his_status": "buktor_status"}},
        "service.created": {"fields": {"his_service_id": "buktor_service_id", "his_price": "buktor_price"}},
        "service.updated": {"fields": {"his_service_id": "buktor_service_id", "his_is_active": "buktor_active"}}
    }}}});
    let sb = Sandbox::start(SandboxConfig {
        buktor_mapping: Some(serde_json::from_value(mapping).expect("mapping")),
        ..SandboxConfig::for_tests()
    })
    .await;
    let cfg = TestConfig::new("", "");
    let token = secret(&cfg, "buktor-token", "sandbox-buktor-token");
    let signing = secret(&cfg, "buktor-secret", "sandbox-buktor-secret");
    let dest = format!(
        "[[destination]]\nname = \"d\"\ntype = \"buktor\"\nbase_url = \"{}\"\nbearer_token = {token}\nsigning_secret = {signing}",
        sb.base("buktor")
    );
    std::fs::write(cfg.conf().join("channels/his.toml"), channel(&dest)).expect("write channel");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("his")).await;
    for (file, n) in [
        ("mfn_m05/minimal.hl7", 1),
        ("siu_s23/full.hl7", 2),
        ("siu_s24/full.hl7", 3),
        ("mfn_m04/full.hl7", 5),
    ] {
        let ack = send(&mut client, fixture(file).as_bytes()).await;
        assert!(
            matches!(segment(&ack, "MSA")[1].as_str(), "AA" | "CA"),
            "{file}: {ack}"
        );
        // One at a time, so the order at Buktor is the order sent.
        let state = until(30, &format!("{}/_state", sb.base("buktor")), |s| {
            len(&s["events"]) >= n
        })
        .await;
        assert_eq!(len(&state["events"]), n, "{file}: {state}");
    }
    let state = crate::support::get_json(&format!("{}/_state", sb.base("buktor"))).await;
    let events = state["events"].as_array().expect("events");
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        types,
        [
            "location.created",
            "schedule.created",
            "schedule.deleted",
            "service.created",
            "service.updated"
        ]
    );
    assert_eq!(events[0]["operation"], "created");
    assert_eq!(events[0]["mapped"]["buktor_location_id"], "CLN-PED-01");
    assert_eq!(
        events[0]["mapped"]["buktor_name"],
        "General Pediatric Clinic"
    );
    assert_eq!(events[0]["mapped"]["buktor_type"], "Clinic");
    assert_eq!(events[1]["mapped"]["buktor_schedule_id"], "BLK-4401");
    assert_eq!(events[1]["mapped"]["buktor_status"], "blocked");
    assert_eq!(events[1]["mapped"]["buktor_doctor_id"], "DOC-SARAH-04");
    assert_eq!(events[1]["mapped"]["buktor_start"], "2026-06-19T12:00:00");
    assert_eq!(events[2]["operation"], "deleted");
    assert_eq!(events[2]["mapped"]["buktor_status"], "open");
    assert_eq!(events[3]["mapped"]["buktor_price"], "250.00");
    assert_eq!(events[4]["mapped"]["buktor_active"], false);
    // Deterministic ids: every event its own, each `evt_` + 32 hex digits.
    let mut ids: Vec<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap_or(""))
        .collect();
    assert!(
        ids.iter().all(|i| i.len() == 36 && i.starts_with("evt_")),
        "{ids:?}"
    );
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5);
    engine.terminate();
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_location_and_healthcare_service_reach_buktor_as_master_data_events() {
    let mapping = serde_json::json!({"clients": {"1001": {"mappings": {
        "location.updated": {"fields": {"his_location_id": "buktor_location_id", "his_location_name": "buktor_name"}},
        "service.updated": {"fields": {"his_service_id": "buktor_service_id", "his_service_name": "buktor_name", "his_is_active": "buktor_active"}}
    }}}});
    let (sb, _cfg, engine, base) = fhir_to_buktor(mapping).await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        client
            .post(format!("{base}{path}"))
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
    };
    // Buktor's envelope needs the time of the change: the resources say when they changed.
    let location = serde_json::json!({"resourceType": "Location",
        "meta": {"lastUpdated": "2026-06-15T07:30:00Z"},
        "identifier": [{"system": "urn:switchboard:location", "value": "CLN-EYE-03"}],
        "status": "active", "name": "Eye Clinic"});
    let resp = post("/Location", location).await.expect("posts");
    assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
    let service = serde_json::json!({"resourceType": "HealthcareService",
        "meta": {"lastUpdated": "2026-06-15T07:31:00Z"},
        "identifier": [{"system": "urn:switchboard:service", "value": "CONS-EYE"}],
        "active": false, "name": "Eye consultation"});
    let resp = post("/HealthcareService", service).await.expect("posts");
    assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
    let state = until(30, &format!("{}/_state", sb.base("buktor")), |s| {
        len(&s["events"]) >= 2
    })
    .await;
    let events = state["events"].as_array().expect("events");
    // A resource on its own, unlike a Bundle entry, carries no method: an upsert, `updated`.
    let location = events.iter().find(|e| e["type"] == "location.updated");
    assert_eq!(
        location.map(|e| &e["mapped"]["buktor_location_id"]),
        Some(&Value::from("CLN-EYE-03")),
        "{state}"
    );
    // An inactive service posted is a deactivation: `service.updated` with the flag false.
    let service = events.iter().find(|e| e["type"] == "service.updated");
    assert_eq!(
        service.map(|e| &e["mapped"]["buktor_active"]),
        Some(&Value::Bool(false)),
        "{state}"
    );
    assert_eq!(
        service.map(|e| &e["mapped"]["buktor_name"]),
        Some(&Value::from("Eye consultation")),
        "{state}"
    );
    engine.terminate();
    sb.stop().await;
}

/// An OpsPort channel whose destination is `base` (a sandbox that may not be up yet), with the
/// appointment's own clinic and doctor upserts off, so that an appointment that overtook its
/// clinic or doctor would be refused by OpsPort (404, a dead letter).
fn opsport_channel(cfg: &TestConfig, base: &str, extra: &str) -> String {
    let key = secret(cfg, "opsport-key", "sandbox-opsport-key");
    let dest = format!(
        "[[destination]]\nname = \"d\"\ntype = \"opsport\"\nbase_url = \"{base}\"\napi_key = {key}\n[destination.options]\nupsert_references = false"
    );
    format!("{extra}{}", channel(&dest))
}

/// The sandbox on a port chosen before the engine sends to it.
async fn sandbox_on(port: u16) -> Sandbox {
    let mut sc = SandboxConfig::for_tests();
    sc.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    Sandbox::start(sc).await
}

/// Status of the stored message with `control_id`, polled until `want` or `secs` pass.
async fn message_status(engine: &EngineProcess, control_id: &str, want: &str, secs: u64) -> String {
    let url = format!("{}/api/messages?control_id={control_id}", engine.admin());
    let v = until(secs, &url, |v| v["items"][0]["status"] == want).await;
    v["items"][0]["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Master data goes ahead of what references it: the clinic (MFN^M05) and the doctor
/// (MFN^M02) reach OpsPort before the appointment (SIU^S12) that names both, though all
/// three were queued while OpsPort was down and the appointment belongs to another
/// partition (its patient). Without the master-data partition the appointment, retried in
/// parallel, reaches OpsPort first and is refused (unknown doctor or clinic).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clinics_and_doctors_reach_opsport_before_an_appointment_queued_while_it_was_down() {
    let port = free_port();
    let cfg = TestConfig::new("", "");
    let base = format!("http://127.0.0.1:{port}/opsport");
    std::fs::write(
        cfg.conf().join("channels/his.toml"),
        opsport_channel(&cfg, &base, ""),
    )
    .expect("write channel");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("his")).await;
    for (file, control_id) in [
        ("mfn_m05/full.hl7", "FULL-M05"),
        ("mfn_m02/full.hl7", "FULL-M02"),
        ("siu_s12/full.hl7", "FULL-S12"),
    ] {
        let ack = send(&mut client, fixture(file).as_bytes()).await;
        assert!(
            matches!(segment(&ack, "MSA")[1].as_str(), "AA" | "CA"),
            "{control_id}: {ack}"
        );
    }
    // OpsPort is down: the first clinic was tried and waits for a retry.
    assert_eq!(
        message_status(&engine, "FULL-M05", "retrying", 30).await,
        "retrying"
    );
    let sb = sandbox_on(port).await;
    let state_url = format!("{}/_state", sb.base("opsport"));
    let state = until(60, &state_url, |s| len(&s["appointments"]) >= 1).await;
    assert_eq!(len(&state["appointments"]), 1, "{state}");
    assert!(dead_letters(&engine, 0, 1).await.is_empty());
    let requests = sb.requests("opsport").await;
    let order: Vec<(String, u64)> = requests
        .iter()
        .map(|r| {
            let path = r["path"].as_str().unwrap_or_default();
            let kind = path.rsplit('/').next().unwrap_or_default().to_owned();
            (kind, r["status"].as_u64().unwrap_or_default())
        })
        .collect();
    assert!(order.iter().all(|(_, s)| *s == 200), "{order:?}");
    let last = |k: &str| order.iter().rposition(|(kind, _)| kind == k);
    let first = |k: &str| order.iter().position(|(kind, _)| kind == k);
    assert!(last("clinic") < first("doctor"), "{order:?}");
    assert!(last("doctor") < first("appointment"), "{order:?}");
    assert_eq!(
        message_status(&engine, "FULL-S12", "delivered", 10).await,
        "delivered"
    );
    engine.terminate();
    sb.stop().await;
}

/// `ack = "on_delivery"` on a master file: the MFK is sent once the destination answered and
/// says per record what became of it. While OpsPort is down the answer is AE and no record
/// is said to be posted; a resend once it is up gets AA, the good records `S` and the bad one
/// `U` with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_delivery_mfk_says_per_record_what_the_destination_did() {
    let port = free_port();
    let cfg = TestConfig::new("", "");
    let base = format!("http://127.0.0.1:{port}/opsport");
    std::fs::write(
        cfg.conf().join("channels/his.toml"),
        opsport_channel(&cfg, &base, "ack = \"on_delivery\"\nack_timeout_secs = 2\n"),
    )
    .expect("write channel");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("his")).await;
    let file = "MSH|^~\\&|HIS|RUH|SB|HUB|20260615103000||MFN^M05^MFN_M05|MFN-OD-1|P|2.5\r\
                MFI|LOC||UPD|||AL\r\
                MFE|MAD|G1||CLN-OD-1|PL\rLOC|CLN-OD-1|First Clinic|C\r\
                MFE|MAD|B2|||PL\rLOC\r\
                MFE|MAD|G3||CLN-OD-3|PL\rLOC|CLN-OD-3|Third Clinic|C\r";
    let mfk = send(&mut client, file.as_bytes()).await;
    assert!(mfk.contains("MFK^M05^MFK_M01"), "{mfk}");
    assert_eq!(segment(&mfk, "MSA")[1], "AE", "{mfk}");
    let mfa = segments(&mfk, "MFA");
    assert_eq!(mfa.len(), 3, "{mfk}");
    assert!(
        mfa[0][4].starts_with("U^not confirmed by the destinations")
            && mfa[2][4].starts_with("U^not confirmed by the destinations"),
        "{mfk}"
    );
    assert!(mfa[1][4].starts_with("U^missing LOC"), "{mfk}");

    let sb = sandbox_on(port).await;
    let mfk = send(&mut client, file.as_bytes()).await;
    assert_eq!(segment(&mfk, "MSA")[1], "AA", "{mfk}");
    let mfa = segments(&mfk, "MFA");
    assert_eq!(mfa.len(), 3, "{mfk}");
    assert_eq!(
        (mfa[0][4].as_str(), mfa[2][4].as_str()),
        ("S", "S"),
        "{mfk}"
    );
    assert!(mfa[1][4].starts_with("U^missing LOC"), "{mfk}");
    let state = until(10, &format!("{}/_state", sb.base("opsport")), |s| {
        len(&s["clinics"]) >= 2
    })
    .await;
    assert_eq!(len(&state["clinics"]), 2, "{state}");
    engine.terminate();
    sb.stop().await;
}

/// FHIR Schedule, Slot and PractitionerRole posted to the `fhir_rest` source, alone and in a
/// Bundle, reach Buktor as `schedule.*` events: a Schedule is `schedule.updated` (inactive:
/// `his_is_active` false), a blocked Slot `schedule.created`; the PractitionerRole is read
/// (a practitioner event, which Buktor does not take) and refuses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_schedule_slot_and_practitioner_role_reach_buktor_as_schedule_events() {
    let mapping = serde_json::json!({"clients": {"1001": {"mappings": {
        "schedule.updated": {"fields": {"his_schedule_id": "buktor_schedule_id", "his_doctor_id": "buktor_doctor_id", "his_is_active": "buktor_active"}},
        "schedule.created": {"fields": {"his_schedule_id": "buktor_schedule_id", "his_status": "buktor_status"}}
    }}}});
    let (sb, _cfg, engine, base) = fhir_to_buktor(mapping).await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        client
            .post(format!("{base}{path}"))
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
    };
    let doctor =
        serde_json::json!({"system": "urn:switchboard:practitioner", "value": "DOC-SARAH-04"});
    let schedule = serde_json::json!({"resourceType": "Schedule",
        "meta": {"lastUpdated": "2026-06-15T07:30:00Z"},
        "identifier": [{"system": "http://portal.example.org/schedule", "value": "SCH-PED-04"}],
        "active": true, "actor": [{"identifier": doctor}]});
    let resp = post("/Schedule", schedule).await.expect("posts");
    assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
    let slot = serde_json::json!({"resourceType": "Slot",
        "meta": {"lastUpdated": "2026-06-15T07:31:00Z"},
        "identifier": [{"system": "urn:switchboard:appointment-filler", "value": "BLK-7001"}],
        "schedule": {"identifier": {"system": "http://portal.example.org/schedule", "value": "SCH-PED-04"}},
        "status": "busy-unavailable",
        "start": "2026-07-02T12:00:00+03:00", "end": "2026-07-02T13:00:00+03:00"});
    let resp = post("/Slot", slot).await.expect("posts");
    assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
    let bundle = serde_json::json!({"resourceType": "Bundle", "type": "transaction",
    "timestamp": "2026-06-15T07:32:00Z",
    "entry": [
        {"resource": {"resourceType": "PractitionerRole", "active": true,
            "practitioner": {"identifier": doctor},
            "location": [{"identifier": {"system": "urn:switchboard:location", "value": "CLN-PED-01"}}]},
         "request": {"method": "POST", "url": "PractitionerRole"}},
        {"resource": {"resourceType": "Schedule", "active": false,
            "identifier": [{"system": "http://portal.example.org/schedule", "value": "SCH-PED-09"}],
            "actor": [{"identifier": doctor}]},
         "request": {"method": "POST", "url": "Schedule"}}
    ]});
    let resp = post("/", bundle).await.expect("posts");
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);
    let state = until(30, &format!("{}/_state", sb.base("buktor")), |s| {
        len(&s["events"]) >= 3
    })
    .await;
    let events = state["events"].as_array().expect("events");
    let of = |t: &str, id: &str| {
        events
            .iter()
            .find(|e| e["type"] == t && e["mapped"]["buktor_schedule_id"] == id)
            .map(|e| e["mapped"].clone())
    };
    let active = of("schedule.updated", "SCH-PED-04").expect("the schedule");
    assert_eq!(active["buktor_doctor_id"], "DOC-SARAH-04", "{state}");
    assert_eq!(active["buktor_active"], true, "{state}");
    let block = of("schedule.created", "BLK-7001").expect("the blocked slot");
    assert_eq!(block["buktor_status"], "blocked", "{state}");
    let inactive = of("schedule.updated", "SCH-PED-09").expect("the inactive schedule");
    assert_eq!(inactive["buktor_active"], false, "{state}");
    assert!(dead_letters(&engine, 0, 1).await.is_empty());
    engine.terminate();
    sb.stop().await;
}

/// A sandbox whose Buktor maps `mapping`, an engine whose `fhir_rest` channel sends to it,
/// and the channel's FHIR base URL.
async fn fhir_to_buktor(mapping: Value) -> (Sandbox, TestConfig, EngineProcess, String) {
    let sb = Sandbox::start(SandboxConfig {
        buktor_mapping: Some(serde_json::from_value(mapping).expect("mapping")),
        ..SandboxConfig::for_tests()
    })
    .await;
    let cfg = TestConfig::new("", "");
    let token = secret(&cfg, "buktor-token", "sandbox-buktor-token");
    let signing = secret(&cfg, "buktor-secret", "sandbox-buktor-secret");
    std::fs::write(
        cfg.conf().join("channels/fhir.toml"),
        format!(
            "name = \"fhir\"\n[source]\ntype = \"fhir_rest\"\nlisten = \"127.0.0.1:0\"\nbase_path = \"/fhir\"\n\
             [[route]]\nto = [\"d\"]\n[[destination]]\nname = \"d\"\ntype = \"buktor\"\nbase_url = \"{}\"\nbearer_token = {token}\nsigning_secret = {signing}\n{FAST_RETRY}",
            sb.base("buktor")
        ),
    )
    .expect("write channel");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let base = format!("http://{}/fhir", engine.info.channels["fhir"]);
    (sb, cfg, engine, base)
}
