//! Latrexa online bookings -> HIS, end to end: the engine binary with a `type = "latrexa"`
//! channel against the sandbox's Latrexa server (REST API and SignalR hub) and simulated HIS,
//! all on 127.0.0.1.

use crate::support::{EngineProcess, TestConfig};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use switchboard_sandbox::{self as sandbox, RunningSandbox, SandboxConfig, SlotRefusal};
use tokio_util::sync::CancellationToken;

/// The sandbox, the engine's config folder and an HTTP client.
struct Setup {
    sb: RunningSandbox,
    stop: CancellationToken,
    cfg: TestConfig,
    http: reqwest::Client,
}

impl Setup {
    async fn start(sandbox: SandboxConfig, source_extra: &str) -> Setup {
        let stop = CancellationToken::new();
        let sb = sandbox::start(sandbox, stop.clone())
            .await
            .expect("sandbox starts");
        // fsync durability (the default): the restart test kills the engine.
        let cfg = TestConfig::new("", "");
        let key = cfg.root.path().join("latrexa.key");
        std::fs::write(&key, "sandbox-latrexa-key\n").expect("write key");
        let channel = format!(
            "name = \"bookings\"\n[source]\ntype = \"latrexa\"\nbase_url = \"{}\"\napi_key = {{ file = \"{}\" }}\norganization_code = \"sandbox-clinic\"\nretry_base_ms = 100\nretry_max_ms = 500\n{source_extra}\n[source.his]\naddress = \"{}\"\nack_timeout_secs = 10\n",
            sb.base_url("latrexa"),
            key.display(),
            sb.his_mllp_addr,
        );
        std::fs::write(cfg.conf().join("channels/bookings.toml"), channel).expect("write");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        Setup {
            sb,
            stop,
            cfg,
            http,
        }
    }

    fn engine(&self) -> EngineProcess {
        EngineProcess::start(&self.cfg.conf(), &self.cfg.data())
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("http://{}{path}", self.sb.http_addr))
            .send()
            .await
            .expect("sandbox reachable")
            .json()
            .await
            .expect("json")
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("http://{}{path}", self.sb.http_addr))
            .json(&body)
            .send()
            .await
            .expect("sandbox reachable");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.expect("json")
    }

    /// Books online; returns the Latrexa id.
    async fn book(&self, doctor: &str, start: &str, end: &str) -> String {
        let b = self
            .post(
                "/latrexa/_bookings",
                json!({"firstName": "Testa", "lastName": "Person", "mobile": "+10000000001",
                       "doctorCode": doctor, "clinicCode": "CLN-T", "start": start, "end": end}),
            )
            .await;
        b["id"].as_str().expect("booking id").to_string()
    }

    /// The sandbox's record of booking `id`.
    async fn booking(&self, id: &str) -> Value {
        let state = self.get("/latrexa/_state").await;
        state["bookings"]
            .as_array()
            .expect("bookings")
            .iter()
            .find(|b| b["booking"]["id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Waits (at most `secs`) until booking `id` has sync status `status` and `version`.
    async fn wait_sync(&self, id: &str, status: &str, version: u64, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let b = self.booking(id).await;
            if b["syncStatus"] == status && b["booking"]["version"] == version {
                return b;
            }
            assert!(
                Instant::now() < deadline,
                "booking {id} not {status} (version {version}) within {secs} s: {b}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The messages the simulated HIS received whose SCH-1 (or ARQ-1, a booking request) is
    /// `id`: (type, ack code, raw).
    async fn his_messages(&self, id: &str) -> Vec<(String, String, String)> {
        let state = self.get("/his/_state").await;
        state["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter(|m| {
                m["raw"].as_str().is_some_and(|r| {
                    r.contains(&format!("\rSCH|{id}|")) || r.contains(&format!("\rARQ|{id}|"))
                })
            })
            .map(|m| {
                (
                    m["message_type"].as_str().unwrap_or_default().to_string(),
                    m["ack_code"].as_str().unwrap_or_default().to_string(),
                    m["raw"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The value of one metric line (`name{labels}`) of the engine, 0 when absent.
async fn metric(engine: &EngineProcess, series: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", engine.admin()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits (at most `secs`) until `series` has `value`.
async fn wait_metric(engine: &EngineProcess, series: &str, value: f64, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while metric(engine, series).await != value {
        assert!(
            Instant::now() < deadline,
            "{series} is not {value} within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The engine's message records of the bookings channel, newest first.
async fn records(engine: &EngineProcess) -> Vec<Value> {
    let v: Value = reqwest::get(format!(
        "{}/api/messages?channel=bookings&limit=50",
        engine.admin()
    ))
    .await
    .expect("admin API")
    .json()
    .await
    .expect("json");
    v["items"].as_array().cloned().unwrap_or_default()
}

/// SCH-2 of the HIS's SRR^S01 answer to the booking request for Latrexa booking `id`.
async fn his_answer_id(s: &Setup, id: &str) -> String {
    let state = s.get("/his/_state").await;
    let answer = state["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|m| {
            m["message_type"] == "SRM^S01"
                && m["raw"]
                    .as_str()
                    .is_some_and(|r| r.contains(&format!("\rARQ|{id}|")))
        })
        .and_then(|m| m["answer"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(answer.contains("SRR^S01"), "{answer}");
    answer
        .split('\r')
        .find(|seg| seg.starts_with("SCH|"))
        .and_then(|seg| seg.split('|').nth(2))
        .unwrap_or_default()
        .to_string()
}

const HUB: &str = "switchboard_latrexa_hub_connected{channel=\"bookings\"}";

/// Adds channel `his`: the HIS's own SIU over MLLP, uploaded to the sandbox's Latrexa by a
/// destination linked to the bookings channel.
fn his_channel(s: &Setup) {
    let his = format!(
        "name = \"his\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n[[route]]\nto = [\"lx\"]\n[[destination]]\nname = \"lx\"\ntype = \"latrexa\"\nbase_url = \"{}\"\napi_key = {{ file = \"{}\" }}\norganization_code = \"sandbox-clinic\"\nbookings_channel = \"bookings\"\n",
        s.sb.base_url("latrexa"),
        s.cfg.root.path().join("latrexa.key").display(),
    );
    std::fs::write(s.cfg.conf().join("channels/his.toml"), his).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_booking_is_requested_with_srm_confirmed_with_the_his_id_changed_and_a_refused_one_is_rejected(
) {
    let mut sandbox_cfg = SandboxConfig::for_tests();
    sandbox_cfg.his_refuse_slots = SlotRefusal::Doctors {
        codes: vec!["DOC-BUSY".into()],
    };
    // Poll rarely: these bookings must come over the hub. Booked with SRM^S01: the HIS
    // names its appointment id in SCH-2 of its SRR^S01 answer.
    let s = Setup::start(
        sandbox_cfg,
        "poll_interval_secs = 3600\nheartbeat_interval_secs = 1\nbook_with = \"srm\"\n",
    )
    .await;
    // The HIS's own SIU come in on a second channel and are uploaded to the same Latrexa.
    his_channel(&s);
    let engine = s.engine();
    wait_metric(&engine, HUB, 1.0, 30).await;

    let id = s
        .book("DOC-FREE", "2026-06-15T10:30:00", "2026-06-15T11:00:00")
        .await;
    let b = s.wait_sync(&id, "confirmed", 1, 30).await;
    let sent = s.his_messages(&id).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!((sent[0].0.as_str(), sent[0].1.as_str()), ("SRM^S01", "AA"));
    assert!(sent[0].2.contains("\rAIP|1|A|DOC-FREE"), "{}", sent[0].2);
    // The id confirmed is the one the HIS answered in SCH-2 of its SRR^S01.
    let his_id = his_answer_id(&s, &id).await;
    assert!(his_id.starts_with("HISAPT"), "{his_id}");
    assert_eq!(b["booking"]["hisAppointmentId"], his_id.as_str(), "{b}");
    let received =
        "switchboard_latrexa_bookings_received_total{channel=\"bookings\",source=\"hub\"}";
    wait_metric(&engine, received, 1.0, 10).await;
    wait_metric(
        &engine,
        "switchboard_latrexa_bookings_confirmed_total{channel=\"bookings\"}",
        1.0,
        10,
    )
    .await;

    // The HIS reports the booking under its own id only (SCH-1 empty): the same booking,
    // uploaded with its Latrexa id, so Latrexa holds one appointment.
    let report = format!(
        "MSH|^~\\&|HIS|RUH|SB|CLOUD|20260615090000||SIU^S12^SIU_S12|SRR-ECHO-1|P|2.5.1\r\
         SCH||{his_id}^HIS|||||||30|MIN|^^^202606151030\r\
         PID|1||MRN-LX2^^^HIS^MR||Person^Testa||19900101|F\r\
         AIP|1|A|DOC-FREE\r"
    );
    let mut client = crate::support::connect(&engine.mllp("his")).await;
    let ack = crate::support::send(&mut client, report.as_bytes()).await;
    assert!(ack.contains("MSA|AA") || ack.contains("MSA|CA"), "{ack}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let state = loop {
        let state = s.get("/latrexa/_state").await;
        if !state["uploads"].as_array().is_none_or(Vec::is_empty) || Instant::now() > deadline {
            break state;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let uploads = state["uploads"].as_array().expect("uploads");
    assert_eq!(uploads.len(), 1, "{state}");
    assert_eq!(
        uploads[0]["latrexaId"],
        id.as_str(),
        "the booking itself: {state}"
    );
    assert_eq!(
        uploads[0]["appointment"]["hisAppointmentId"],
        his_id.as_str()
    );

    // Moved online after the HIS confirmed it: S13 with the HIS id, confirmed again.
    s.post(
        &format!("/latrexa/_bookings/{id}/update"),
        json!({"start": "2026-06-16T09:00:00", "end": "2026-06-16T09:30:00"}),
    )
    .await;
    s.wait_sync(&id, "confirmed", 2, 30).await;
    // Cancelled online: S15.
    s.post(&format!("/latrexa/_bookings/{id}/cancel"), json!({}))
        .await;
    s.wait_sync(&id, "confirmed", 3, 30).await;
    let sent = s.his_messages(&id).await;
    let types: Vec<&str> = sent.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(types, ["SRM^S01", "SIU^S13", "SIU^S15"]);
    // S13 and S15: the Latrexa id as placer (SCH-1), the HIS's as filler (SCH-2).
    for m in &sent[1..] {
        assert!(
            m.2.contains(&format!("\rSCH|{id}|{his_id}|")),
            "{} names both ids: {}",
            m.0,
            m.2
        );
    }
    // Every confirm of the booking carried exactly the id of the HIS's answer.
    let state = s.get("/latrexa/_state").await;
    let confirms: Vec<&Value> = state["syncCalls"]
        .as_array()
        .expect("sync calls")
        .iter()
        .filter(|c| c["request"]["latrexaId"] == id.as_str())
        .collect();
    assert!(!confirms.is_empty(), "{}", state["syncCalls"]);
    for c in confirms {
        assert_eq!(c["request"]["hisAppointmentId"], his_id.as_str(), "{c}");
    }

    // The HIS refuses this doctor's slot: rejected at Latrexa with the HIS's reason.
    let busy = s
        .book("DOC-BUSY", "2026-06-15T12:00:00", "2026-06-15T12:30:00")
        .await;
    let b = s.wait_sync(&busy, "rejected", 1, 30).await;
    assert_eq!(b["rejectReason"], "slot unavailable");
    let sent = s.his_messages(&busy).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].1, "AE");
    wait_metric(
        &engine,
        "switchboard_latrexa_bookings_rejected_total{channel=\"bookings\"}",
        1.0,
        10,
    )
    .await;

    // Each revision is a message record in the store, visible in the admin API.
    let recs = records(&engine).await;
    let summary: Vec<(String, String)> = recs
        .iter()
        .map(|r| {
            (
                r["message_type"].as_str().unwrap_or_default().to_string(),
                r["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("booking.create".to_string(), "rejected".to_string()),
            ("booking.cancel".into(), "delivered".into()),
            ("booking.reschedule".into(), "delivered".into()),
            ("booking.create".into(), "delivered".into()),
        ],
        "{recs:?}"
    );
    let rejected: Value = reqwest::get(format!(
        "{}/api/messages/{}",
        engine.admin(),
        recs[0]["id"].as_str().expect("id")
    ))
    .await
    .expect("admin API")
    .json()
    .await
    .expect("json");
    assert_eq!(rejected["format"], "latrexa", "{rejected}");
    assert!(
        rejected["raw"]
            .as_str()
            .is_some_and(|r| r.contains(&format!("\"id\":\"{busy}\""))),
        "the booking as received: {rejected}"
    );
    assert!(
        rejected["errors"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e == "HIS answered AE: slot unavailable")),
        "{rejected}"
    );

    // Heartbeats on the timer, with the HIS link up.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = s.get("/latrexa/_state").await;
        let beats = &state["heartbeats"];
        if beats["count"].as_u64().unwrap_or(0) >= 2 && beats["last"]["hisConnected"] == true {
            assert!(
                beats["last"]["agent"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("switchboard/")),
                "{beats}"
            );
            assert_eq!(beats["last"]["pending"], 0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no two heartbeats within 20 s: {beats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let requests = s.get("/latrexa/_requests").await;
    let beat = requests
        .as_array()
        .expect("requests")
        .iter()
        .find(|r| r["path"] == "/api/integration/heartbeat")
        .expect("a heartbeat request");
    assert_eq!(beat["headers"]["x-organization-code"], "sandbox-clinic");
    assert_eq!(beat["headers"]["authorization"], "<redacted>");
    assert_eq!(beat["status"], 200);
    engine.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_hub_down_polling_delivers_and_a_restart_books_nothing_twice() {
    let s = Setup::start(
        SandboxConfig::for_tests(),
        "poll_interval_secs = 1\nhub_reconnect_max_secs = 1\nbook_with = \"srm\"\n",
    )
    .await;
    s.post("/latrexa/_hub/down", json!({})).await;
    let engine = s.engine();

    let first = s
        .book("DOC-1", "2026-06-20T08:00:00", "2026-06-20T08:30:00")
        .await;
    s.wait_sync(&first, "confirmed", 1, 30).await;
    wait_metric(
        &engine,
        "switchboard_latrexa_bookings_received_total{channel=\"bookings\",source=\"poll\"}",
        1.0,
        10,
    )
    .await;
    assert_eq!(metric(&engine, HUB).await, 0.0);

    // Confirm fails: the HIS has the booking, Latrexa does not know yet. Then a crash.
    s.post("/latrexa/_api/down", json!({"endpoints": ["confirm"]}))
        .await;
    let second = s
        .book("DOC-2", "2026-06-20T09:00:00", "2026-06-20T09:30:00")
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.his_messages(&second).await.is_empty() {
        assert!(Instant::now() < deadline, "the HIS never got {second}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let recs = records(&engine).await;
        if recs.first().is_some_and(|r| r["status"] == "retrying") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "confirm failure not recorded: {recs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    engine.kill();
    assert_eq!(s.booking(&second).await["syncStatus"], "pending");

    // Restart on the same data: the second booking is confirmed without a second SIU, the
    // first is not sent again; with the hub back, the engine reconnects.
    s.post("/latrexa/_api/up", json!({})).await;
    s.post("/latrexa/_hub/up", json!({})).await;
    let engine = s.engine();
    s.wait_sync(&second, "confirmed", 1, 30).await;
    wait_metric(&engine, HUB, 1.0, 30).await;
    let third = s
        .book("DOC-3", "2026-06-20T10:00:00", "2026-06-20T10:30:00")
        .await;
    s.wait_sync(&third, "confirmed", 1, 30).await;
    wait_metric(
        &engine,
        "switchboard_latrexa_bookings_received_total{channel=\"bookings\",source=\"hub\"}",
        1.0,
        10,
    )
    .await;
    for id in [&first, &second, &third] {
        let sent = s.his_messages(id).await;
        assert_eq!(sent.len(), 1, "{id} reached the HIS {} times", sent.len());
    }
    let state = s.get("/latrexa/_state").await;
    let confirms = state["syncCalls"]
        .as_array()
        .expect("sync calls")
        .iter()
        .filter(|c| c["request"]["latrexaId"] == second.as_str())
        .count();
    assert_eq!(confirms, 1, "{}", state["syncCalls"]);
    engine.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_booking_echoed_by_the_his_is_one_latrexa_appointment_moved_by_the_his() {
    let s = Setup::start(
        SandboxConfig::for_tests(),
        "poll_interval_secs = 1\nhis_id_wait_secs = 60\n",
    )
    .await;
    // The HIS's own SIU come in on a second channel and are uploaded to the same Latrexa.
    his_channel(&s);
    let engine = s.engine();
    let id = s
        .book("DOC-FREE", "2026-06-15T10:30:00", "2026-06-15T11:00:00")
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.his_messages(&id).await.is_empty() {
        assert!(Instant::now() < deadline, "the HIS never got the booking");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        s.booking(&id).await["syncStatus"],
        "pending",
        "waits for the HIS id"
    );

    // The HIS reports the booking it wrote with its own id in SCH-2, then moves it.
    let echo = |trigger: &str, control: &str, start: &str| {
        format!(
            "MSH|^~\\&|HIS|RUH|SB|CLOUD|20260615090000||SIU^{trigger}^SIU_S12|{control}|P|2.5.1\r\
             SCH|{id}^LATREXA|HIS-900^HIS|||||||30|MIN|^^^{start}\r\
             PID|1||MRN-LX1^^^HIS^MR||Person^Testa||19900101|F\r\
             AIP|1|A|DOC-FREE\r"
        )
    };
    let mut client = crate::support::connect(&engine.mllp("his")).await;
    for m in [
        echo("S12", "ECHO-1", "202606151030"),
        echo("S13", "ECHO-2", "202606151130"),
    ] {
        let ack = crate::support::send(&mut client, m.as_bytes()).await;
        assert!(ack.contains("MSA|AA") || ack.contains("MSA|CA"), "{ack}");
    }
    // Confirmed with the id the HIS gave, not the Latrexa id.
    let b = s.wait_sync(&id, "confirmed", 1, 30).await;
    assert_eq!(b["booking"]["hisAppointmentId"], "HIS-900", "{b}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let state = loop {
        let state = s.get("/latrexa/_state").await;
        let moved = state["uploads"][0]["appointment"]["start"] == "2026-06-15T11:30:00";
        if moved || Instant::now() > deadline {
            break state;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let uploads = state["uploads"].as_array().expect("uploads");
    assert_eq!(uploads.len(), 1, "one appointment at Latrexa: {state}");
    assert_eq!(
        uploads[0]["latrexaId"],
        id.as_str(),
        "the booking itself: {state}"
    );
    assert_eq!(uploads[0]["appointment"]["hisAppointmentId"], "HIS-900");
    assert_eq!(
        uploads[0]["appointment"]["start"], "2026-06-15T11:30:00",
        "moved at the HIS: {state}"
    );

    // Moved online afterwards: the HIS gets S13 with the Latrexa id as placer and its own id
    // (learnt from its SIU) as filler, and Latrexa is confirmed with the HIS's id.
    s.post(
        &format!("/latrexa/_bookings/{id}/update"),
        json!({"start": "2026-06-16T09:00:00", "end": "2026-06-16T09:30:00"}),
    )
    .await;
    let b = s.wait_sync(&id, "confirmed", 2, 30).await;
    assert_eq!(b["booking"]["hisAppointmentId"], "HIS-900", "{b}");
    let sent = s.his_messages(&id).await;
    let last = sent.last().expect("SIU to the HIS");
    assert_eq!(last.0, "SIU^S13");
    assert!(
        last.2.contains(&format!("\rSCH|{id}|HIS-900|")),
        "{}",
        last.2
    );
    engine.terminate();
}

/// Issue 17: the HIS's ACK names no appointment id, so nothing is confirmed until the HIS
/// names it in its own SIU; the Latrexa id is never sent as the HIS id. Meanwhile the other
/// bookings go on, the wait survives a kill -9, and neither the restart nor an operator's
/// reprocess of the HIS's SIU makes a second appointment at the HIS or at Latrexa.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_his_id_the_confirm_waits_durably_and_nothing_is_booked_twice() {
    let s = Setup::start(
        SandboxConfig::for_tests(),
        "poll_interval_secs = 1\nhis_id_wait_secs = 1\n",
    )
    .await;
    his_channel(&s);
    let engine = s.engine();
    let first = s
        .book("DOC-A", "2026-06-17T10:00:00", "2026-06-17T10:30:00")
        .await;
    let second = s
        .book("DOC-B", "2026-06-17T11:00:00", "2026-06-17T11:30:00")
        .await;
    // Both reach the HIS: the first, waiting for its id, does not hold up the second.
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in [&first, &second] {
        while s.his_messages(id).await.is_empty() {
            assert!(Instant::now() < deadline, "the HIS never got {id}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // After his_id_wait_secs the wait is reported on the record; nothing is confirmed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let recs = records(&engine).await;
        let flagged: Vec<&Value> = recs
            .iter()
            .filter(|r| r["status"] == "retrying" && r["ack_code"] == "AA")
            .collect();
        if flagged.len() == 2 {
            for r in flagged {
                let full: Value = reqwest::get(format!(
                    "{}/api/messages/{}",
                    engine.admin(),
                    r["id"].as_str().expect("id")
                ))
                .await
                .expect("admin API")
                .json()
                .await
                .expect("json");
                assert!(
                    full["errors"].as_array().is_some_and(|e| e.iter().any(|e| e
                        .as_str()
                        .is_some_and(|e| e.starts_with("no HIS appointment id yet")))),
                    "{full}"
                );
            }
            break;
        }
        assert!(Instant::now() < deadline, "wait not reported: {recs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in [&first, &second] {
        assert_eq!(s.booking(id).await["syncStatus"], "pending", "{id}");
    }
    let state = s.get("/latrexa/_state").await;
    assert_eq!(
        state["syncCalls"].as_array().map(Vec::len),
        Some(0),
        "nothing confirmed without the HIS id: {}",
        state["syncCalls"]
    );

    // A kill -9 while both wait; the HIS names its ids only after the restart.
    engine.kill();
    let engine = s.engine();
    let echo = |latrexa_id: &str, his_id: &str, control: &str, start: &str| {
        format!(
            "MSH|^~\\&|HIS|RUH|SB|CLOUD|20260617090000||SIU^S12^SIU_S12|{control}|P|2.5.1\r\
             SCH|{latrexa_id}^LATREXA|{his_id}^HIS|||||||30|MIN|^^^{start}\r\
             PID|1||MRN-LX2^^^HIS^MR||Person^Testa||19900101|F\r\
             AIP|1|A|DOC-A\r"
        )
    };
    let mut client = crate::support::connect(&engine.mllp("his")).await;
    for m in [
        echo(&first, "HIS-A1", "ECHO-A", "202606171000"),
        echo(&second, "HIS-B1", "ECHO-B", "202606171100"),
    ] {
        let ack = crate::support::send(&mut client, m.as_bytes()).await;
        assert!(ack.contains("MSA|AA") || ack.contains("MSA|CA"), "{ack}");
    }
    let a = s.wait_sync(&first, "confirmed", 1, 30).await;
    assert_eq!(a["booking"]["hisAppointmentId"], "HIS-A1", "{a}");
    let b = s.wait_sync(&second, "confirmed", 1, 30).await;
    assert_eq!(b["booking"]["hisAppointmentId"], "HIS-B1", "{b}");

    // An operator reprocesses the HIS's SIU of the first booking, then the engine restarts.
    let echo_id = {
        let v: Value = reqwest::get(format!(
            "{}/api/messages?channel=his&control_id=ECHO-A&limit=5",
            engine.admin()
        ))
        .await
        .expect("admin API")
        .json()
        .await
        .expect("json");
        v["items"][0]["id"]
            .as_str()
            .expect("the echo's id")
            .to_string()
    };
    let uploads_before = s.get("/latrexa/_state").await["uploads"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    let r = reqwest::Client::new()
        .post(format!(
            "{}/api/messages/{echo_id}/reprocess",
            engine.admin()
        ))
        .json(&json!({}))
        .send()
        .await
        .expect("admin API");
    assert!(r.status().is_success(), "{}", r.status());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let requests = s.get("/latrexa/_requests").await;
        let n = requests
            .as_array()
            .map(|r| {
                r.iter()
                    .filter(|r| r["path"] == "/api/integration/appointments/upload")
                    .count()
            })
            .unwrap_or(0);
        if n >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the reprocess was not uploaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    engine.kill();
    let engine = s.engine();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let state = s.get("/latrexa/_state").await;
    let uploads = state["uploads"].as_array().expect("uploads");
    assert_eq!(uploads.len(), uploads_before, "no new appointment: {state}");
    assert_eq!(uploads.len(), 2, "{state}");
    for (id, his_id) in [(&first, "HIS-A1"), (&second, "HIS-B1")] {
        let one: Vec<&Value> = uploads
            .iter()
            .filter(|u| u["appointment"]["hisAppointmentId"] == his_id)
            .collect();
        assert_eq!(one.len(), 1, "{state}");
        assert_eq!(
            one[0]["latrexaId"],
            id.as_str(),
            "the booking itself: {state}"
        );
        assert_eq!(
            s.his_messages(id).await.len(),
            1,
            "{id} reached the HIS once"
        );
    }
    let confirms: Vec<&Value> = state["syncCalls"]
        .as_array()
        .expect("sync calls")
        .iter()
        .collect();
    assert!(
        confirms.iter().all(|c| c["request"]["hisAppointmentId"]
            .as_str()
            .is_some_and(|h| h.starts_with("HIS-"))),
        "only HIS ids confirmed: {}",
        state["syncCalls"]
    );
    engine.terminate();
}

/// A paused bookings channel takes nothing: a booking the hub offers meanwhile stays pending
/// at Latrexa, nothing reaches the HIS or the store; after the resume the channel fetches it
/// and books it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_bookings_channel_takes_nothing_until_resumed() {
    let s = Setup::start(
        SandboxConfig::for_tests(),
        "poll_interval_secs = 1\nhub_reconnect_max_secs = 1\nbook_with = \"srm\"\n",
    )
    .await;
    let engine = s.engine();
    wait_metric(&engine, HUB, 1.0, 30).await;
    let admin = engine.admin();
    let paused = s
        .http
        .post(format!("{admin}/api/channels/bookings/pause"))
        .send()
        .await
        .expect("pause");
    assert_eq!(paused.status(), 200);
    let id = s
        .book("DOC-1", "2026-06-21T08:00:00", "2026-06-21T08:30:00")
        .await;
    // The hub offers it at once and the poll ticks every second: neither may take it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.booking(&id).await["syncStatus"], "pending");
    assert!(
        s.his_messages(&id).await.is_empty(),
        "sent to the HIS while paused"
    );
    assert!(records(&engine).await.is_empty(), "stored while paused");
    let resumed = s
        .http
        .post(format!("{admin}/api/channels/bookings/resume"))
        .send()
        .await
        .expect("resume");
    assert_eq!(resumed.status(), 200);
    s.wait_sync(&id, "confirmed", 1, 30).await;
    assert_eq!(s.his_messages(&id).await.len(), 1, "booked once");
    engine.terminate();
}
