//! Routing and durable delivery: retries, dead letters, ordering, restarts, fan-out.

use crate::support::*;
use std::collections::HashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn webhook(name: &str, url: &str, extra: &str) -> String {
    format!("[[destination]]\nname = \"{name}\"\ntype = \"webhook\"\nurl = \"{url}\"\n{extra}{FAST_RETRY}")
}

async fn message(engine: &EngineProcess, control_id: &str) -> serde_json::Value {
    let list = get_json(&format!(
        "{}/api/messages?control_id={control_id}",
        engine.admin()
    ))
    .await;
    let id = list["items"][0]["id"].as_str().expect("stored").to_string();
    get_json(&format!("{}/api/messages/{id}", engine.admin())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_down_then_up_gets_everything_once_in_order_per_patient() {
    let sink = HttpSink::start(SinkMode::Down).await;
    let channel = format!(
        "[[route]]\nto = [\"hook\"]\npayload = \"hl7\"\n{}",
        webhook("hook", &sink.url, "")
    );
    let cfg = TestConfig::new("", &channel);
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("lab")).await;
    // Three patients, interleaved: the engine keeps answering AA while the destination is down.
    for i in 0..10 {
        for p in ["PA", "PB", "PC"] {
            let ack = send(&mut client, adt_for(p, &format!("{p}-{i}")).as_bytes()).await;
            assert_eq!(segment(&ack, "MSA")[1], "AA");
        }
    }
    assert!(
        eventually(10, || sink.requests() >= 3).await,
        "the destination was tried"
    );
    assert!(sink.received().is_empty());
    sink.set(SinkMode::Up);
    assert!(
        eventually(30, || sink.received().len() >= 30).await,
        "got {}",
        sink.received().len()
    );
    let got = sink.received();
    assert_eq!(got.len(), 30, "each message delivered once");
    for p in ["PA", "PB", "PC"] {
        let order: Vec<String> = got
            .iter()
            .filter(|(_, b)| b.contains(&format!("|{p}^^^MAIN")))
            .map(|(_, b)| segment(b, "MSH")[9].clone())
            .collect();
        let expect: Vec<String> = (0..10).map(|i| format!("{p}-{i}")).collect();
        assert_eq!(order, expect, "in order for {p}");
    }
    let keys: std::collections::HashSet<&String> = got.iter().map(|(k, _)| k).collect();
    assert_eq!(keys.len(), 30, "distinct idempotency keys");
    let m = message(&engine, "PB-4").await;
    assert_eq!(m["status"], "delivered");
    let attempts = m["attempts"].as_array().expect("attempts");
    assert!(!attempts.is_empty());
    assert_eq!(attempts.last().expect("one")["outcome"], "delivered");
    let metrics = reqwest::get(format!("{}/metrics", engine.admin()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("switchboard_deliveries_total{channel=\"lab\",destination=\"hook\",outcome=\"delivered\"} 30"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_error_goes_to_dead_letter_and_retry_delivers_it() {
    let sink = HttpSink::start(SinkMode::RejectBad).await;
    let channel = format!(
        "[[route]]\nto = [\"hook\"]\npayload = \"hl7\"\n{}",
        webhook("hook", &sink.url, "")
    );
    let cfg = TestConfig::new("", &channel);
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("lab")).await;
    let bad = adt_for("P1", "D1").replace("Testperson", "BAD");
    send(&mut client, bad.as_bytes()).await;
    send(&mut client, adt_for("P2", "D2").as_bytes()).await;
    let admin = engine.admin();
    let mut dead = serde_json::Value::Null;
    for _ in 0..100 {
        dead = get_json(&format!("{admin}/api/dead-letters")).await;
        if dead["count"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(dead["count"], 1, "{dead}");
    let item = &dead["items"][0];
    assert_eq!(item["attempts"], 1, "a 4xx is not retried");
    assert!(
        item["reason"]
            .as_str()
            .expect("reason")
            .contains("answered 400"),
        "{item}"
    );
    assert_eq!(message(&engine, "D1").await["status"], "failed");
    assert!(eventually(10, || sink.received().len() == 1).await);

    sink.set(SinkMode::Up);
    let resp = reqwest::Client::new()
        .post(format!("{admin}/api/dead-letters/retry"))
        .header("X-Switchboard-User", "nurse-it")
        .json(&serde_json::json!({"items": [{"destination": item["destination"], "seq": item["seq"]}]}))
        .send()
        .await
        .expect("retry");
    assert_eq!(resp.status(), 200);
    assert!(eventually(10, || sink.received().len() == 2).await);
    assert_eq!(message(&engine, "D1").await["status"], "delivered");
    assert_eq!(
        get_json(&format!("{admin}/api/dead-letters")).await["count"],
        0
    );
    let audit = get_json(&format!("{admin}/api/audit")).await;
    // The token's name, then the user the client named (X-Switchboard-User).
    assert_eq!(audit["items"][0]["who"], "api (nurse-it)");
    assert_eq!(audit["items"][0]["action"], "dead_letter_retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_a_full_outbox_then_restart_drains_it() {
    let sink = HttpSink::start(SinkMode::Down).await;
    let channel = format!(
        "[[route]]\nto = [\"hook\"]\npayload = \"hl7\"\n{}",
        webhook("hook", &sink.url, "")
    );
    let cfg = TestConfig::new("", &channel);
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("lab")).await;
    for i in 0..40 {
        let ack = send(
            &mut client,
            adt_for(&format!("K{}", i % 4), &format!("K-{i}")).as_bytes(),
        )
        .await;
        assert_eq!(segment(&ack, "MSA")[1], "AA");
    }
    engine.kill();
    sink.set(SinkMode::Up);
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    assert!(
        eventually(30, || sink.received().len() >= 40).await,
        "got {}",
        sink.received().len()
    );
    let mut ids: Vec<String> = sink
        .received()
        .iter()
        .map(|(_, b)| segment(b, "MSH")[9].clone())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40, "nothing lost");
    drop(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_where_one_destination_fails_leaves_the_other_unaffected() {
    let good = HttpSink::start(SinkMode::Up).await;
    let bad = HttpSink::start(SinkMode::Down).await;
    let channel = format!(
        "[[route]]\nwhen = {{ message_type = [\"ADT^*\"] }}\nto = [\"good\", \"bad\"]\npayload = \"hl7\"\n{}{}",
        webhook("good", &good.url, ""),
        webhook("bad", &bad.url, "")
    );
    let cfg = TestConfig::new("", &channel);
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("lab")).await;
    for i in 0..10 {
        send(&mut client, adt_for("F1", &format!("F-{i}")).as_bytes()).await;
    }
    assert!(eventually(10, || good.received().len() == 10).await);
    assert!(bad.requests() > 0);
    // The head of the patient's queue is retrying; the others wait behind it, in order.
    let m = message(&engine, "F-0").await;
    assert_eq!(m["status"], "retrying");
    assert_eq!(message(&engine, "F-3").await["status"], "routed");
    let states: HashMap<String, String> = m["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| {
            (
                d["destination"].as_str().expect("d").to_string(),
                d["status"].as_str().expect("s").to_string(),
            )
        })
        .collect();
    assert_eq!(states["lab/good"], "delivered");
    assert_eq!(states["lab/bad"], "pending");
    // A message no route matches is kept as filtered.
    send(
        &mut client,
        b"MSH|^~\\&|HIS|MAIN|SB|HUB|2025||SIU^S12|S-1|P|2.5\rSCH|1\r",
    )
    .await;
    assert!(eventually(5, || true).await);
    assert_eq!(message(&engine, "S-1").await["status"], "filtered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_on_delivery_waits_for_the_destination() {
    let sink = HttpSink::start(SinkMode::RejectBad).await;
    let channel = format!(
        "ack = \"on_delivery\"\nack_timeout_secs = 5\n[[route]]\nto = [\"hook\"]\npayload = \"hl7\"\n{}max_attempts = 1000\n",
        webhook("hook", &sink.url, "")
    );
    let cfg = TestConfig::new("", &channel);
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("lab")).await;
    let ack = send(&mut client, adt_for("P1", "OD-1").as_bytes()).await;
    assert_eq!(segment(&ack, "MSA")[1..3], ["AA", "OD-1"]);
    assert_eq!(sink.received().len(), 1, "delivered before the AA");
    let ack = send(
        &mut client,
        adt_for("P1", "OD-2")
            .replace("Testperson", "BAD")
            .as_bytes(),
    )
    .await;
    assert_eq!(segment(&ack, "MSA")[1..3], ["AE", "OD-2"], "{ack}");
    assert!(ack.contains("delivery failed"), "{ack}");
    sink.set(SinkMode::Down);
    let ack = send(&mut client, adt_for("P1", "OD-3").as_bytes()).await;
    assert_eq!(segment(&ack, "MSA")[1], "AE");
    assert!(
        ack.contains("not confirmed by every destination within 5 s"),
        "{ack}"
    );
}

/// `ack = "on_delivery"`: a resend is told the state now, and a late success is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_on_delivery_resend_gets_the_answer_of_the_state_now() {
    let sink = HttpSink::start(SinkMode::Down).await;
    let channel = format!(
        "ack = \"on_delivery\"\nack_timeout_secs = 1\n[[route]]\nto = [\"hook\"]\npayload = \"hl7\"\n{}max_attempts = 1000\n",
        webhook("hook", &sink.url, "")
    );
    let cfg = TestConfig::new("", &channel);
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("lab")).await;
    let msg = adt_for("P1", "ODR-1");
    let ack = send(&mut client, msg.as_bytes()).await;
    assert_eq!(segment(&ack, "MSA")[1..3], ["AE", "ODR-1"], "{ack}");
    // Still undelivered: the resend waits like the original did, and is told so.
    let ack = send(&mut client, msg.as_bytes()).await;
    assert_eq!(segment(&ack, "MSA")[1..3], ["AE", "ODR-1"], "{ack}");
    assert!(ack.contains("not confirmed"), "{ack}");
    // The destination comes back and the delivery succeeds after the answers.
    sink.set(SinkMode::Up);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let m = message(&engine, "ODR-1").await;
        if m["status"] == "delivered" && m["ack_code"] == "AA" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the late success is not recorded: {m}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let ack = send(&mut client, msg.as_bytes()).await;
    assert_eq!(segment(&ack, "MSA")[1..3], ["AA", "ODR-1"], "{ack}");
    let list = get_json(&format!("{}/api/messages?control_id=ODR-1", engine.admin())).await;
    assert_eq!(list["count"], 1, "{list}");
    assert_eq!(sink.received().len(), 1, "delivered once");
}

/// An MLLP peer that answers each message as `answer` says: (delay ms, ACK text or None).
pub(crate) async fn mllp_peer(
    answer: impl Fn(usize, &str) -> (u64, Option<String>) + Send + Sync + 'static,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let seen: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let seen2 = seen.clone();
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let seen = seen2.clone();
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 8192];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.iter().position(|&b| b == 0x1c) {
                        let frame: Vec<u8> = buf.drain(..=end).collect();
                        let text = String::from_utf8_lossy(&frame[1..frame.len() - 1]).to_string();
                        let n = {
                            let mut g = seen.lock().expect("lock");
                            g.push(text.clone());
                            g.len()
                        };
                        let (delay, ack) = answer(n, &text);
                        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                        if let Some(ack) = ack {
                            if s.write_all(&channels::mllp::codec::frame(ack.as_bytes()))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                    if buf.first() == Some(&0x0d) {
                        buf.remove(0);
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn ack_for(text: &str, code: &str) -> String {
    let ctrl = segment(text, "MSH")[9].clone();
    format!("MSH|^~\\&|PEER|X|SB|HUB|2025||ACK^A08^ACK|P{ctrl}|P|2.5.1\rMSA|{code}|{ctrl}|peer says {code}\r")
}

fn mllp_dest(addr: &str, extra: &str) -> String {
    format!("[[route]]\nto = [\"peer\"]\n[[destination]]\nname = \"peer\"\ntype = \"mllp\"\naddress = \"{addr}\"\nack_timeout_secs = 1\n{extra}{FAST_RETRY}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mllp_sender_checks_every_ack() {
    // Message M1: first answer late, second on time. M2: first answer names another message.
    // M3: AR then AA. M4: AE, which goes to the dead letters.
    let (addr, seen) = mllp_peer(|n, text| {
        let ctrl = segment(text, "MSH")[9].clone();
        match (ctrl.as_str(), n) {
            ("M1", 1) => (1500, Some(ack_for(text, "AA"))),
            ("M2", _) if text.contains("first") => (0, None),
            ("M3", 3) => (0, Some(ack_for(text, "AR"))),
            ("M4", _) => (0, Some(ack_for(text, "AE"))),
            _ => (0, Some(ack_for(text, "AA"))),
        }
    })
    .await;
    let cfg = TestConfig::new("", &mllp_dest(&addr, ""));
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("lab")).await;
    for id in ["M1", "M3", "M4"] {
        send(&mut client, adt_for("P9", id).as_bytes()).await;
    }
    assert!(
        eventually(20, || {
            let s = seen.lock().expect("lock");
            s.iter().filter(|t| t.contains("|M4|")).count() >= 1
                && s.iter().filter(|t| t.contains("|M3|")).count() >= 2
        })
        .await
    );
    let admin = engine.admin();
    assert!(eventually(20, || true).await);
    let mut m1 = serde_json::Value::Null;
    for _ in 0..200 {
        m1 = message(&engine, "M1").await;
        let m3 = message(&engine, "M3").await;
        let m4 = message(&engine, "M4").await;
        if m1["status"] == "delivered" && m3["status"] == "delivered" && m4["status"] == "failed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(m1["status"], "delivered", "{m1}");
    let outcomes: Vec<&str> = m1["attempts"]
        .as_array()
        .expect("a")
        .iter()
        .map(|a| a["outcome"].as_str().expect("o"))
        .collect();
    assert_eq!(
        outcomes,
        ["retry", "delivered"],
        "the late ACK was not credited"
    );
    assert!(m1["attempts"][0]["detail"]
        .as_str()
        .expect("d")
        .contains("no ACK"));
    let m3 = message(&engine, "M3").await;
    assert_eq!(m3["status"], "delivered");
    assert!(
        m3["attempts"][0]["detail"]
            .as_str()
            .expect("d")
            .contains("AR"),
        "{m3}"
    );
    let dead = get_json(&format!("{admin}/api/dead-letters")).await;
    assert_eq!(dead["count"], 1);
    assert!(
        dead["items"][0]["reason"]
            .as_str()
            .expect("r")
            .contains("answered AE peer says AE"),
        "{dead}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mllp_sender_refuses_an_ack_for_another_message() {
    // The first answer names a control id that was never sent; the retry gets the right one.
    let (addr, seen) = mllp_peer(|n, text| {
        if n == 1 {
            (0, Some(ack_for(&text.replace("|W1|", "|OTHER|"), "AA")))
        } else {
            (0, Some(ack_for(text, "AA")))
        }
    })
    .await;
    let cfg = TestConfig::new("", &mllp_dest(&addr, ""));
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("lab")).await;
    send(&mut client, adt_for("P1", "W1").as_bytes()).await;
    assert!(eventually(10, || seen.lock().expect("lock").len() >= 2).await);
    let mut m = serde_json::Value::Null;
    for _ in 0..100 {
        m = message(&engine, "W1").await;
        if m["status"] == "delivered" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(m["status"], "delivered");
    assert!(
        m["attempts"][0]["detail"]
            .as_str()
            .expect("d")
            .contains("names another message"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canonical_and_fhir_payloads_are_rendered_once_at_ingest() {
    let canon = HttpSink::start(SinkMode::Up).await;
    let fhir = HttpSink::start(SinkMode::Up).await;
    let channel = format!(
        "[[route]]\nto = [\"canon\"]\npayload = \"canonical\"\n[[route]]\nto = [\"fhir\"]\npayload = \"fhir\"\n{}{}",
        webhook("canon", &canon.url, ""),
        webhook("fhir", &fhir.url, "")
    );
    let cfg = TestConfig::new("", &channel);
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("lab")).await;
    let ack = send(&mut client, adt("CF-1").as_bytes()).await;
    assert_eq!(segment(&ack, "MSA")[1], "AA");
    assert!(
        eventually(10, || canon.received().len() == 1
            && fhir.received().len() == 1)
        .await
    );
    let event: serde_json::Value =
        serde_json::from_str(&canon.received()[0].1).expect("canonical JSON");
    assert_eq!(event["kind"], "patient_registered");
    assert_eq!(event["source"]["control_id"], "CF-1");
    let bundle: serde_json::Value = serde_json::from_str(&fhir.received()[0].1).expect("FHIR JSON");
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "transaction");
    let m = message(&engine, "CF-1").await;
    assert_eq!(m["status"], "delivered");
    let kinds: Vec<&str> = m["payloads"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["payload"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        kinds.is_empty(),
        "delivered payloads leave the outbox: {kinds:?}"
    );
}

/// `POST /api/reprocess` filters by message type before its limit (ORU with limit 2 among
/// newer ADT messages reprocesses two ORU), and writes one audit record for the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_reprocess_filters_before_its_limit_and_audits_once() {
    let sink = HttpSink::start(SinkMode::Up).await;
    let channel = format!(
        "[[route]]\nto = [\"hook\"]\npayload = \"hl7\"\n{}",
        webhook("hook", &sink.url, "")
    );
    let cfg = TestConfig::new("", &channel);
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let admin = engine.admin();
    let mut client = connect(&engine.mllp("lab")).await;
    // Three ORU first, then five newer ADT.
    for i in 0..3 {
        let oru = adt(&format!("BR-ORU-{i}")).replace("ADT^A04^ADT_A01", "ORU^R01^ORU_R01");
        let ack = send(&mut client, oru.as_bytes()).await;
        assert_eq!(segment(&ack, "MSA")[1], "AA", "{ack}");
    }
    for i in 0..5 {
        let ack = send(&mut client, adt(&format!("BR-ADT-{i}")).as_bytes()).await;
        assert_eq!(segment(&ack, "MSA")[1], "AA", "{ack}");
    }
    assert!(eventually(20, || sink.received().len() == 8).await);

    let listed = get_json(&format!("{admin}/api/messages?message_type=ORU&limit=2")).await;
    assert_eq!(listed["count"], 2, "{listed}");

    let resp = reqwest::Client::new()
        .post(format!("{admin}/api/reprocess"))
        .header("X-Switchboard-User", "integration-eng")
        .json(&serde_json::json!({"message_type": "ORU", "limit": 2}))
        .send()
        .await
        .expect("reprocess");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["reprocessed"], 2, "{body}");
    assert!(eventually(20, || sink.received().len() == 10).await);
    let again: Vec<String> = sink.received()[8..]
        .iter()
        .map(|(_, b)| segment(b, "MSH")[9].clone())
        .collect();
    assert!(
        again.iter().all(|c| c.starts_with("BR-ORU-")),
        "only ORU were sent again: {again:?}"
    );

    let audit = get_json(&format!("{admin}/api/audit")).await;
    let bulk: Vec<&serde_json::Value> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|a| a["action"] == "reprocess_bulk")
        .collect();
    assert_eq!(bulk.len(), 1, "one record for the request: {audit}");
    assert_eq!(bulk[0]["count"], 2);
    assert_eq!(bulk[0]["who"], "api (integration-eng)");
    assert!(
        bulk[0]["target"]
            .as_str()
            .is_some_and(|t| t.contains("message_type=ORU")),
        "{}",
        bulk[0]
    );
    assert!(
        !audit["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|a| a["action"] == "reprocess"),
        "no record per message: {audit}"
    );
}
