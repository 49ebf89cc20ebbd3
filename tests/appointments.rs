//! Appointments over time against the sandbox's vendors (issue 17): what OpsPort holds after a
//! sequence of SIU messages (reschedule, cancel, delete, no-show), after a kill -9 between the
//! close of the old slot and the upsert of the new one, for a patient known only by national
//! id; and a 2xx answer whose body says error.

use crate::connectors::{dead_letters, secret, until, Sandbox};
use crate::support::*;
use serde_json::Value;
use switchboard_sandbox::SandboxConfig;

/// A synthetic SIU for appointment `placer`/`filler` of patient `pid3` starting at `start`
/// (`YYYYMMDDHHMM`, 30 minutes).
fn siu(trigger: &str, control_id: &str, appointment: &str, pid3: &str, start: &str) -> String {
    format!(
        "MSH|^~\\&|HIS|RUH|SB|CLOUD|20260615090000||SIU^{trigger}^SIU_S12|{control_id}|P|2.5.1\r\
         SCH|PL-{appointment}^HIS|HIS-{appointment}^HIS|||||||30|MIN|^^^{start}\r\
         PID|1||{pid3}||Khalid^Yousef||19940920|M|||||^PRN^CP^^966^50^2222222\r\
         AIL|1|A|CLN-PED-01\r\
         AIP|1|A|DOC-SARAH-04^Al-Otaibi^Sarah\r"
    )
}

const MRN: &str = "MRN-7001^^^HIS^MR";

/// Starts the engine with one OpsPort destination of the sandbox.
fn opsport_engine(sb: &Sandbox) -> (TestConfig, EngineProcess) {
    let cfg = TestConfig::new("", "");
    let key = secret(&cfg, "opsport-key", "sandbox-opsport-key");
    let channel = format!(
        "name = \"lab\"\n[[route]]\nto = [\"ops\"]\n[[destination]]\nname = \"ops\"\ntype = \"opsport\"\nbase_url = \"{}\"\napi_key = {key}\n{FAST_RETRY}\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n",
        sb.base("opsport")
    );
    std::fs::write(cfg.conf().join("channels/lab.toml"), channel).expect("write channel");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    (cfg, engine)
}

async fn send_all(engine: &EngineProcess, messages: &[String]) {
    let mut client = connect(&engine.mllp("lab")).await;
    for m in messages {
        let ack = send(&mut client, m.as_bytes()).await;
        assert!(
            matches!(segment(&ack, "MSA")[1].as_str(), "AA" | "CA"),
            "{ack}"
        );
    }
}

/// The sandbox's appointments at `time` (`HH:MM:SS`) on 2026-06-16.
fn at<'a>(state: &'a Value, time: &str) -> Vec<&'a Value> {
    state["appointments"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|x| {
                    x["timeFrom"] == time
                        && x["date"]
                            .as_str()
                            .is_some_and(|d| d.starts_with("2026-06-16"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn live(state: &Value) -> Vec<&Value> {
    state["appointments"]
        .as_array()
        .map(|a| a.iter().filter(|x| x["status"] == "Confirmed").collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opsport_reschedule_moves_the_one_appointment_and_closing_triggers_close_the_slot() {
    let sb = Sandbox::start(SandboxConfig::for_tests()).await;
    let (_cfg, engine) = opsport_engine(&sb);
    let state_url = format!("{}/_state", sb.base("opsport"));
    send_all(
        &engine,
        &[
            siu("S12", "A-S12", "1", MRN, "202606161000"),
            siu("S12", "B-S12", "2", MRN, "202606161200"),
            siu("S12", "C-S12", "3", MRN, "202606161300"),
            siu("S12", "D-S12", "4", MRN, "202606161400"),
        ],
    )
    .await;
    let state = until(30, &state_url, |s| live(s).len() == 4).await;
    assert_eq!(live(&state).len(), 4, "{state}");
    send_all(
        &engine,
        &[
            siu("S13", "A-S13", "1", MRN, "202606161100"),
            siu("S15", "B-S15", "2", MRN, "202606161200"),
            siu("S17", "C-S17", "3", MRN, "202606161300"),
            siu("S26", "D-S26", "4", MRN, "202606161400"),
        ],
    )
    .await;
    let state = until(30, &state_url, |s| {
        live(s).len() == 1
            && at(s, "11:00:00").len() == 1
            && at(s, "10:00:00")[0]["status"] != "Confirmed"
    })
    .await;
    // The reschedule: one live appointment, at 11:00; the 10:00 slot closed, not deleted.
    let live_now = live(&state);
    assert_eq!(live_now.len(), 1, "{state}");
    assert_eq!(live_now[0]["timeFrom"], "11:00:00", "{state}");
    let ten = at(&state, "10:00:00");
    assert_eq!(ten.len(), 1, "{state}");
    assert_eq!(ten[0]["status"], "Cancelled", "{state}");
    // S15, S17, S26: the slot closed with a status from the table, never a canonical name.
    for (time, want) in [
        ("12:00:00", "Cancelled"),
        ("13:00:00", "Cancelled"),
        ("14:00:00", "NoShow"),
    ] {
        let slot = at(&state, time);
        assert_eq!(slot.len(), 1, "{time}: {state}");
        assert_eq!(slot[0]["status"], want, "{time}: {state}");
    }
    assert_eq!(len(&state["appointments"]), 5, "{state}");
    assert_eq!(len(&state["patients"]), 1, "{state}");
    let requests = sb.requests("opsport").await;
    assert!(
        requests.iter().all(|r| r["status"] == 200),
        "every request taken: {requests:?}"
    );
    // Eight appointment messages name the same clinic and doctor: each record went once.
    for path in ["/api/healthcare/clinic", "/api/healthcare/doctor"] {
        let n = requests.iter().filter(|r| r["path"] == path).count();
        assert_eq!(n, 1, "{path}: {requests:?}");
    }
    // The ledger knows the moved appointment by either id: its slot now, and OpsPort's id.
    let entry = ledger(&engine, "destination=lab/ops&placer=PL-1", |e| {
        e["status"] == "Confirmed"
    })
    .await;
    assert!(
        entry["slot"]
            .as_str()
            .is_some_and(|s| s.ends_with("|11:00:00")),
        "{entry}"
    );
    assert_eq!(
        (entry["status"].clone(), entry["closed"].clone()),
        ("Confirmed".into(), false.into())
    );
    assert!(entry["remote_id"].as_str().is_some(), "{entry}");
    let deleted = ledger(&engine, "destination=lab/ops&filler=HIS-3", |e| {
        e["closed"] == true
    })
    .await;
    assert_eq!(deleted["closed"], true, "{deleted}");
    let metrics = metrics_text(&engine).await;
    assert_eq!(
        metric_value(
            &metrics,
            "switchboard_appointment_slots_closed_total{channel=\"lab\",destination=\"ops\"}"
        ),
        1.0,
        "{metrics}"
    );
    engine.terminate();
    sb.stop().await;
}

/// An S13 for an appointment the engine never sent (booked before it, or its last message
/// pruned): the SIU names only the new slot and OpsPort cannot be asked for the old one, so
/// the new slot is upserted, the ledger starts from it, and the metric says an old slot may
/// remain. The next reschedule closes the slot the ledger now knows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reschedule_of_an_unknown_appointment_upserts_the_new_slot_and_says_so() {
    let sb = Sandbox::start(SandboxConfig::for_tests()).await;
    let (_cfg, engine) = opsport_engine(&sb);
    let state_url = format!("{}/_state", sb.base("opsport"));
    send_all(&engine, &[siu("S13", "U-S13", "9", MRN, "202606161100")]).await;
    let state = until(30, &state_url, |s| live(s).len() == 1).await;
    assert_eq!(live(&state)[0]["timeFrom"], "11:00:00", "{state}");
    let series =
        "switchboard_appointment_unknown_reschedules_total{channel=\"lab\",destination=\"ops\"}";
    assert_eq!(metric_value(&metrics_text(&engine).await, series), 1.0);
    let entry = ledger(&engine, "destination=lab/ops&filler=HIS-9", |e| {
        e["slot"].as_str().is_some_and(|s| s.ends_with("|11:00:00"))
    })
    .await;
    assert_eq!(entry["closed"], false, "{entry}");
    // Known from now on: the next reschedule closes 11:00 first, and is not counted.
    send_all(&engine, &[siu("S13", "U-S13b", "9", MRN, "202606161230")]).await;
    let state = until(30, &state_url, |s| {
        live(s).len() == 1 && live(s)[0]["timeFrom"] == "12:30:00"
    })
    .await;
    assert_eq!(at(&state, "11:00:00")[0]["status"], "Cancelled", "{state}");
    let metrics = metrics_text(&engine).await;
    assert_eq!(metric_value(&metrics, series), 1.0, "{metrics}");
    assert_eq!(
        metric_value(
            &metrics,
            "switchboard_appointment_slots_closed_total{channel=\"lab\",destination=\"ops\"}"
        ),
        1.0,
        "{metrics}"
    );
    engine.terminate();
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_the_old_slot_close_and_the_new_upsert_still_ends_with_one_live() {
    let sb = Sandbox::start(SandboxConfig::for_tests()).await;
    let (cfg, engine) = opsport_engine(&sb);
    let base = sb.base("opsport");
    let state_url = format!("{base}/_state");
    send_all(&engine, &[siu("S12", "K-S12", "9", MRN, "202606161000")]).await;
    let state = until(30, &state_url, |s| live(s).len() == 1).await;
    assert_eq!(live(&state).len(), 1, "{state}");
    // Every new live upsert now fails: the close of 10:00 goes through, 11:00 does not.
    let http = reqwest::Client::new();
    let fault = |count: u32| {
        http.post(format!("{base}/_fault"))
            .json(&serde_json::json!({"count": count, "status": "Confirmed"}))
            .send()
    };
    assert!(fault(100_000)
        .await
        .expect("fault set")
        .status()
        .is_success());
    send_all(&engine, &[siu("S13", "K-S13", "9", MRN, "202606161100")]).await;
    let state = until(30, &state_url, |s| live(s).is_empty()).await;
    assert!(live(&state).is_empty(), "10:00 closed first: {state}");
    let refused = |reqs: &[Value]| {
        reqs.iter()
            .filter(|r| r["status"] == 503 && r["body"]["timeFrom"] == "11:00:00")
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while refused(&sb.requests("opsport").await) == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        refused(&sb.requests("opsport").await) >= 1,
        "the new slot was tried"
    );
    engine.kill();
    assert!(fault(0).await.expect("fault cleared").status().is_success());

    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let state = until(30, &state_url, |s| live(s).len() == 1).await;
    let live_now = live(&state);
    assert_eq!(live_now.len(), 1, "{state}");
    assert_eq!(live_now[0]["timeFrom"], "11:00:00", "{state}");
    assert_eq!(at(&state, "10:00:00")[0]["status"], "Cancelled", "{state}");
    assert_eq!(len(&state["appointments"]), 2, "{state}");
    // The ledger kept the closed slot across the kill: 10:00 was closed once, not again.
    let closes = sb
        .requests("opsport")
        .await
        .iter()
        .filter(|r| r["body"]["timeFrom"] == "10:00:00" && r["body"]["status"] == "Cancelled")
        .count();
    assert_eq!(closes, 1);
    engine.terminate();
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_known_only_by_national_id_reaches_opsport_with_an_e164_mobile() {
    let sb = Sandbox::start(SandboxConfig::for_tests()).await;
    let (_cfg, engine) = opsport_engine(&sb);
    let state_url = format!("{}/_state", sb.base("opsport"));
    send_all(
        &engine,
        &[siu(
            "S12",
            "N-S12",
            "5",
            "2098765432^^^MOI^NI",
            "202606160900",
        )],
    )
    .await;
    let state = until(30, &state_url, |s| live(s).len() == 1).await;
    assert_eq!(len(&state["patients"]), 1, "{state}");
    let p = &state["patients"][0];
    assert_eq!(p["nationalID"], "2098765432", "{state}");
    assert!(p.get("patientNo").is_none(), "{state}");
    assert_eq!(p["mobile"], "+966502222222", "{state}");
    let a = &live(&state)[0];
    assert_eq!(a["nationalID"], "2098765432", "{state}");
    assert_eq!(a["patientId"], p["id"], "{state}");
    engine.terminate();
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_whose_body_says_error_is_a_dead_letter_with_the_vendors_message() {
    let sb = Sandbox::start(SandboxConfig {
        buktor_mapping_error_status: 200,
        ..SandboxConfig::for_tests()
    })
    .await;
    let cfg = TestConfig::new("", "");
    let token = secret(&cfg, "buktor-token", "sandbox-buktor-token");
    let signing = secret(&cfg, "buktor-secret", "sandbox-buktor-secret");
    let channel = format!(
        "name = \"lab\"\n[[route]]\nto = [\"buk\"]\n[[destination]]\nname = \"buk\"\ntype = \"buktor\"\nbase_url = \"{}\"\nbearer_token = {token}\nsigning_secret = {signing}\n{FAST_RETRY}\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n",
        sb.base("buktor")
    );
    std::fs::write(cfg.conf().join("channels/lab.toml"), channel).expect("write channel");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let dft = std::fs::read_to_string(format!(
        "{}/../fixtures/hl7v2/dft_p03/full.hl7",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
    .replace("\r\n", "\r")
    .replace('\n', "\r");
    send_all(&engine, &[dft]).await;
    let dead = dead_letters(&engine, 1, 30).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = dead[0].to_string();
    assert!(
        reason.contains("answered 200 with an error")
            && reason.contains("No mapping found for event_type 'payment.successful'"),
        "{reason}"
    );
    let requests = sb.requests("buktor").await;
    assert_eq!(requests.len(), 1, "dead-lettered at once: {requests:?}");
    assert_eq!(requests[0]["status"], 200);
    engine.terminate();
    sb.stop().await;
}

fn len(v: &Value) -> usize {
    v.as_array().map(Vec::len).unwrap_or(0)
}

/// Starts the engine with one Latrexa upload destination that uploads every 4 seconds, walk-in
/// registrations included.
fn latrexa_engine(sb: &Sandbox, cfg: &TestConfig) -> EngineProcess {
    let key = secret(cfg, "latrexa-key", "sandbox-latrexa-key");
    let channel = format!(
        "name = \"lab\"\n[[route]]\nto = [\"lx\"]\n[[destination]]\nname = \"lx\"\ntype = \"latrexa\"\nbase_url = \"{}\"\napi_key = {key}\norganization_code = \"sandbox-clinic\"\nupload_interval_secs = 4\nwalk_in_registrations = true\n{FAST_RETRY}\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n",
        sb.base("latrexa")
    );
    std::fs::write(cfg.conf().join("channels/lab.toml"), channel).expect("write channel");
    EngineProcess::start(&cfg.conf(), &cfg.data())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walk_ins_of_one_interval_go_in_one_upload_and_a_kill_in_between_uploads_nothing_twice() {
    let sb = Sandbox::start(SandboxConfig::for_tests()).await;
    let cfg = TestConfig::new("", "");
    let engine = latrexa_engine(&sb, &cfg);
    send_all(
        &engine,
        &[
            siu("S12", "W-1", "W1", "MRN-W1^^^HIS^MR", "202606160900"),
            siu("S12", "W-2", "W2", "MRN-W2^^^HIS^MR", "202606160930"),
        ],
    )
    .await;
    // Killed within the interval: the two wait in the outbox, nothing was uploaded.
    engine.kill();
    assert!(sb.requests("latrexa").await.is_empty());
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    // A walk-in the HIS reports only as an outpatient registration.
    let a04 = "MSH|^~\\&|HIS|RUH|SB|CLOUD|20260616100500||ADT^A04^ADT_A01|W-4|P|2.5.1\r\
               EVN|A04|20260616100500\r\
               PID|1||MRN-W4^^^HIS^MR||Walker^Wanda||19850101|F\r\
               PV1|1|O|CLN-PED-01||||DOC-SARAH-04^Al-Otaibi^Sarah||||||||||||V-W4|||||||||||||||||||||||||20260616100500\r"
        .to_string();
    send_all(
        &engine,
        &[
            siu("S12", "W-3", "W3", "MRN-W3^^^HIS^MR", "202606161000"),
            a04,
        ],
    )
    .await;
    let state = until(30, &format!("{}/_state", sb.base("latrexa")), |s| {
        len(&s["uploads"]) >= 4
    })
    .await;
    assert_eq!(len(&state["uploads"]), 4, "{state}");
    assert!(
        state["uploads"]
            .to_string()
            .contains("\"hisAppointmentId\":\"V-W4\""),
        "the registration as a walk-in: {state}"
    );
    // Nothing more arrives after another interval.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let uploads: Vec<Value> = sb
        .requests("latrexa")
        .await
        .into_iter()
        .filter(|r| r["path"] == "/api/integration/appointments/upload")
        .collect();
    assert_eq!(uploads.len(), 1, "one request: {uploads:?}");
    assert_eq!(len(&uploads[0]["body"]["appointments"]), 4, "{uploads:?}");
    assert_eq!(len(&uploads[0]["response"]["mappings"]), 4, "{uploads:?}");
    // Each appointment's Latrexa id from the answer is in the ledger.
    for n in ["W1", "W2", "W3"] {
        let query = format!("destination=lab/lx&filler=HIS-{n}");
        let entry = ledger(&engine, &query, |e| e["remote_id"].is_string()).await;
        let pair = uploads[0]["response"]["mappings"]
            .as_array()
            .and_then(|m| {
                m.iter()
                    .find(|p| p["hisAppointmentId"] == format!("HIS-{n}"))
            })
            .cloned()
            .unwrap_or_default();
        assert_eq!(entry["remote_id"], pair["latrexaId"], "{n}: {entry}");
        assert!(entry["remote_id"].as_str().is_some(), "{n}: {entry}");
    }
    engine.terminate();
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fhir_destination_keeps_the_appointment_in_the_ledger_too() {
    let sink = HttpSink::start(SinkMode::Up).await;
    let cfg = TestConfig::new(
        "",
        &format!(
            "[[route]]\nto = [\"fhir\"]\n[[destination]]\nname = \"fhir\"\ntype = \"fhir\"\nbase_url = \"{}\"\nmode = \"transaction\"\n{FAST_RETRY}",
            sink.url
        ),
    );
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    send_all(
        &engine,
        &[
            siu("S12", "F-S12", "F1", MRN, "202606160800"),
            siu("S15", "F-S15", "F1", MRN, "202606160800"),
        ],
    )
    .await;
    assert!(eventually(20, || sink.received().len() >= 2).await);
    let url = "destination=lab/fhir&filler=HIS-F1";
    let entry = ledger(&engine, url, |e| e["closed"] == true).await;
    assert_eq!(entry["status"], "cancelled", "{entry}");
    assert_eq!(entry["closed"], true, "{entry}");
    engine.terminate();
}

/// The ledger entry of `GET /api/appointments?{query}` once `check` holds on it (at most 10 s;
/// 404 until the delivery's outcome is written); the last answer otherwise.
async fn ledger(engine: &EngineProcess, query: &str, check: impl Fn(&Value) -> bool) -> Value {
    let url = format!("{}/api/appointments?{query}", engine.admin());
    let mut entry = Value::Null;
    for _ in 0..100 {
        let r = reqwest::get(&url).await.expect("admin API reachable");
        if r.status().is_success() {
            entry = r.json().await.expect("JSON body");
            if check(&entry) {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    entry
}

/// The id of the message with MSH-10 `control_id`.
async fn message_id(engine: &EngineProcess, control_id: &str) -> String {
    let v: Value = reqwest::get(format!(
        "{}/api/messages?control_id={control_id}&limit=5",
        engine.admin()
    ))
    .await
    .expect("admin API")
    .json()
    .await
    .expect("json");
    v["items"][0]["id"]
        .as_str()
        .expect("the message is stored")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reprocessing_the_s12_after_the_s13_does_not_move_the_slot_back() {
    let sb = Sandbox::start(SandboxConfig::for_tests()).await;
    let (_cfg, engine) = opsport_engine(&sb);
    let state_url = format!("{}/_state", sb.base("opsport"));
    send_all(&engine, &[siu("S12", "R-S12", "8", MRN, "202606161000")]).await;
    until(30, &state_url, |s| live(s).len() == 1).await;
    send_all(&engine, &[siu("S13", "R-S13", "8", MRN, "202606161100")]).await;
    let state = until(30, &state_url, |s| {
        live(s).len() == 1 && live(s)[0]["timeFrom"] == "11:00:00"
    })
    .await;
    assert_eq!(live(&state)[0]["timeFrom"], "11:00:00", "{state}");
    let appointment_requests = |reqs: Vec<Value>| {
        reqs.into_iter()
            .filter(|r| r["path"] == "/api/healthcare/appointment")
            .count()
    };
    let before = appointment_requests(sb.requests("opsport").await);

    // An operator replays the older S12.
    let id = message_id(&engine, "R-S12").await;
    let r = reqwest::Client::new()
        .post(format!("{}/api/messages/{id}/reprocess", engine.admin()))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("admin API");
    assert!(r.status().is_success(), "{}", r.status());
    let url = format!("{}/api/messages/{id}", engine.admin());
    let mut record = Value::Null;
    for _ in 0..100 {
        record = reqwest::get(&url)
            .await
            .expect("admin API")
            .json()
            .await
            .expect("json");
        if record
            .to_string()
            .contains("was applied to this appointment after this one")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        record
            .to_string()
            .contains("was applied to this appointment after this one"),
        "{record}"
    );
    let state: Value = reqwest::get(&state_url)
        .await
        .expect("sandbox")
        .json()
        .await
        .expect("json");
    let live_now = live(&state);
    assert_eq!(live_now.len(), 1, "{state}");
    assert_eq!(live_now[0]["timeFrom"], "11:00:00", "{state}");
    assert_eq!(at(&state, "10:00:00")[0]["status"], "Cancelled", "{state}");
    // The replay's patient upsert goes again (master data); no appointment upsert does.
    let after = appointment_requests(sb.requests("opsport").await);
    assert_eq!(after, before, "no appointment sent for the replay");
    // The ledger still names the S13's slot.
    let entry = ledger(&engine, "destination=lab/ops&filler=HIS-8", |e| {
        e["slot"].as_str().is_some_and(|s| s.ends_with("|11:00:00"))
    })
    .await;
    assert!(
        entry["slot"]
            .as_str()
            .is_some_and(|s| s.ends_with("|11:00:00")),
        "{entry}"
    );
    engine.terminate();
    sb.stop().await;
}

/// Three walk-ins of one patient (and one of another between them) within one interval: one
/// upload request carries all four, the patient's three in their order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_walk_ins_of_one_patient_in_one_interval_go_in_one_upload() {
    let sb = Sandbox::start(SandboxConfig::for_tests()).await;
    let cfg = TestConfig::new("", "");
    let engine = latrexa_engine(&sb, &cfg);
    send_all(
        &engine,
        &[
            siu("S12", "P-1", "P1", "MRN-P1^^^HIS^MR", "202606160900"),
            siu("S12", "P-2", "P2", "MRN-P1^^^HIS^MR", "202606161500"),
            siu("S12", "Q-1", "Q1", "MRN-Q1^^^HIS^MR", "202606161000"),
            siu("S12", "P-3", "P3", "MRN-P1^^^HIS^MR", "202606161200"),
        ],
    )
    .await;
    let state = until(30, &format!("{}/_state", sb.base("latrexa")), |s| {
        len(&s["uploads"]) >= 4
    })
    .await;
    assert_eq!(len(&state["uploads"]), 4, "{state}");
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let uploads: Vec<Value> = sb
        .requests("latrexa")
        .await
        .into_iter()
        .filter(|r| r["path"] == "/api/integration/appointments/upload")
        .collect();
    assert_eq!(uploads.len(), 1, "one request: {uploads:?}");
    let ids: Vec<&str> = uploads[0]["body"]["appointments"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["hisAppointmentId"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(ids.len(), 4, "every walk-in once: {uploads:?}");
    let patient: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|i| i.starts_with("HIS-P"))
        .collect();
    assert_eq!(
        patient,
        ["HIS-P1", "HIS-P2", "HIS-P3"],
        "in the patient's order: {uploads:?}"
    );
    for n in ["P1", "P2", "P3", "Q1"] {
        let entry = ledger(
            &engine,
            &format!("destination=lab/lx&filler=HIS-{n}"),
            |e| e["remote_id"].is_string(),
        )
        .await;
        assert!(entry["remote_id"].is_string(), "{n}: {entry}");
    }
    engine.terminate();
    sb.stop().await;
}
