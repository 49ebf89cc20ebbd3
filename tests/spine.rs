//! The spine: MLLP in, durable store, correct ACKs, admin API, restart.

use crate::support::*;
use std::collections::HashSet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_messages_over_eight_connections_all_acked_and_stored() {
    let cfg = TestConfig::new("", "");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let addr = engine.mllp("lab");
    let mut tasks = Vec::new();
    for conn in 0..8 {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = connect(&addr).await;
            for i in 0..125 {
                let id = format!("C{conn}-{i}");
                let ack = send(&mut client, adt(&id).as_bytes()).await;
                let msa = segment(&ack, "MSA");
                assert_eq!(
                    (msa[1].as_str(), msa[2].as_str()),
                    ("AA", id.as_str()),
                    "{ack}"
                );
                let msh = segment(&ack, "MSH");
                assert_eq!(
                    &msh[2..6],
                    ["SB", "HUB", "HIS", "MAIN"],
                    "sender and receiver swapped"
                );
                assert_eq!(msh[8], "ACK^A04^ACK");
                assert_eq!(msh[11], "2.5.1");
            }
        }));
    }
    for t in tasks {
        t.await.expect("sender task");
    }
    let list = get_json(&format!(
        "{}/api/messages?channel=lab&limit=5000",
        engine.admin()
    ))
    .await;
    assert_eq!(list["count"], 1000);
    let ids: HashSet<String> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| m["control_id"].as_str().expect("control id").to_string())
        .collect();
    assert_eq!(ids.len(), 1000);
    assert!(ids.contains("C7-124"));

    let one = get_json(&format!("{}/api/messages?control_id=C3-7", engine.admin())).await;
    let id = one["items"][0]["id"].as_str().expect("id").to_string();
    let detail = get_json(&format!("{}/api/messages/{id}", engine.admin())).await;
    assert_eq!(detail["raw"], adt("C3-7"));
    assert_eq!(
        detail["status"], "filtered",
        "no route: kept, delivered nowhere"
    );
    assert!(detail["ack"].as_str().expect("ack").contains("MSA|AA|C3-7"));

    let metrics = reqwest::get(format!("{}/metrics", engine.admin()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(
            "switchboard_messages_received_total{channel=\"lab\",message_type=\"ADT_A04\"} 1000"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("switchboard_acks_sent_total{channel=\"lab\",code=\"AA\"} 1000"));
    assert!(metrics.contains("switchboard_mllp_connections_opened_total{channel=\"lab\"} 8"));
    assert!(metrics.contains("switchboard_store_commit_batch_size_count"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_get_the_documented_nak_and_are_stored_as_rejected() {
    let cfg = TestConfig::new("", "");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("lab")).await;
    struct Case {
        bytes: Vec<u8>,
        code: &'static str,
        msa2: &'static str,
        err: &'static str,
    }
    let cases = [
        // No MSH at all: default delimiters, empty MSA-2, ERR 100.
        Case { bytes: b"PID|1||X\r".to_vec(), code: "AE", msa2: "", err: "ERR|||100^Segment sequence error^HL70357|E||||message does not start with an MSH segment" },
        // Empty MSH-9.
        Case { bytes: b"MSH|^~\\&|HIS|MAIN|SB|HUB|2025|||M9|P|2.5\rPID|1\r".to_vec(), code: "AE", msa2: "M9", err: "ERR||MSH^1^9^1^1|101^Required field missing^HL70357|E||||MSH-9 message type is empty" },
        // Bad MSH-2: the answer keeps MSH-1, falls back to the default encoding characters
        // and still echoes MSH-10.
        Case { bytes: b"MSH|^^|HIS|MAIN|SB|HUB|2025||ADT^A04|M2|P|2.5\r".to_vec(), code: "AE", msa2: "M2", err: "ERR||MSH^1^2|102^Data type error^HL70357|E||||MSH-2 encoding characters are invalid" },
        // Bytes that are not UTF-8 (no MSH-18, channel fallback utf-8).
        Case { bytes: b"MSH|^~\\&|HIS|MAIN|SB|HUB|2025||ADT^A04|U8|P|2.5\rPID|1||\xff\xfe\r".to_vec(), code: "AE", msa2: "U8", err: "ERR|||102^Data type error^HL70357|E||||bytes at offset 55 are not valid utf-8" },
        // Unsupported version and processing id: rejects.
        Case { bytes: b"MSH|^~\\&|HIS|MAIN|SB|HUB|2025||ADT^A04|V1|P|2.0\r".to_vec(), code: "AR", msa2: "V1", err: "ERR|MSH^1^12^203&Unsupported version id&HL70357" },
        Case { bytes: b"MSH|^~\\&|HIS|MAIN|SB|HUB|2025||ADT^A04|P1|X|2.5\r".to_vec(), code: "AR", msa2: "P1", err: "ERR||MSH^1^11|202^Unsupported processing id^HL70357" },
        // A NUL byte inside PID-5.
        Case { bytes: b"MSH|^~\\&|HIS|MAIN|SB|HUB|2025||ADT^A04|N1|P|2.5\rPID|1||X||A\x00B\r".to_vec(), code: "AE", msa2: "N1", err: "ERR||PID^1^5|102^Data type error^HL70357|E||||control character in field" },
    ];
    for c in &cases {
        let ack = send(&mut client, &c.bytes).await;
        let msa = segment(&ack, "MSA");
        assert_eq!(msa[1], c.code, "{ack:?}");
        assert_eq!(msa[2], c.msa2, "{ack:?}");
        assert!(ack.contains(c.err), "expected {:?} in {ack:?}", c.err);
    }
    // Still up, still accepting.
    let ack = send(&mut client, adt("OK1").as_bytes()).await;
    assert_eq!(segment(&ack, "MSA")[1], "AA");
    let rejected = get_json(&format!(
        "{}/api/messages?status=rejected&limit=100",
        engine.admin()
    ))
    .await;
    assert_eq!(rejected["count"], cases.len());
    let m = get_json(&format!("{}/api/messages?control_id=U8", engine.admin())).await;
    let id = m["items"][0]["id"].as_str().expect("id");
    let detail = get_json(&format!("{}/api/messages/{id}", engine.admin())).await;
    assert_eq!(detail["status"], "rejected");
    assert_eq!(
        detail["errors"][0],
        "102: bytes at offset 55 are not valid utf-8"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_gets_the_first_ack_and_one_record() {
    let cfg = TestConfig::new("", "");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("lab")).await;
    let first = send(&mut client, adt("DUP1").as_bytes()).await;
    let mut other = connect(&engine.mllp("lab")).await;
    let second = send(&mut other, adt("DUP1").as_bytes()).await;
    assert_eq!(first, second, "the resend gets the very same ACK");
    let list = get_json(&format!("{}/api/messages?control_id=DUP1", engine.admin())).await;
    assert_eq!(list["count"], 1);
    let metrics = reqwest::get(format!("{}/metrics", engine.admin()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("switchboard_duplicates_total{channel=\"lab\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_sent_back_to_back_are_answered_in_order() {
    let cfg = TestConfig::new("", "");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut stream = tokio::net::TcpStream::connect(engine.mllp("lab"))
        .await
        .expect("connect");
    let mut wire = b"\r\nleading junk".to_vec();
    for i in 0..20 {
        wire.extend(channels::mllp::codec::frame(
            adt(&format!("B{i}")).as_bytes(),
        ));
    }
    stream.write_all(&wire).await.expect("write");
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while got.iter().filter(|&&b| b == 0x1c).count() < 20 {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("answers in time")
            .expect("read");
        assert!(n > 0, "connection closed early");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    let order: Vec<String> = text
        .split('\x0b')
        .filter(|f| !f.is_empty())
        .map(|f| segment(f, "MSA")[2].clone())
        .collect();
    let expect: Vec<String> = (0..20).map(|i| format!("B{i}")).collect();
    assert_eq!(order, expect);
    let metrics = reqwest::get(format!("{}/metrics", engine.admin()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("switchboard_mllp_junk_bytes_total{channel=\"lab\"} 14"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frame_gets_nak_and_connection_resyncs() {
    let cfg = TestConfig::new("", "");
    std::fs::write(
        cfg.conf().join("channels/lab.toml"),
        "name = \"lab\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\nmax_message_bytes = 4096\n",
    )
    .expect("write");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("lab")).await;
    let mut big = adt("BIG1");
    big.push_str(&format!("NTE|1||{}\r", "x".repeat(10_000)));
    let ack = send(&mut client, big.as_bytes()).await;
    assert_eq!(segment(&ack, "MSA")[1..3], ["AE", "BIG1"]);
    assert!(ack.contains("104^Value too long^HL70357"), "{ack}");
    let ack = send(&mut client, adt("SMALL1").as_bytes()).await;
    assert_eq!(segment(&ack, "MSA")[1..3], ["AA", "SMALL1"]);
    let stored = get_json(&format!("{}/api/messages?control_id=BIG1", engine.admin())).await;
    assert_eq!(stored["items"][0]["status"], "rejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enhanced_mode_answers_commit_acks() {
    let cfg = TestConfig::new("", "");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("lab")).await;
    let msg = "MSH|^~\\&|LAB|N|SB|HUB|2025||ORU^R01^ORU_R01|E1|P|2.5|||AL|NE\rPID|1||M1\r";
    let ack = send(&mut client, msg.as_bytes()).await;
    assert_eq!(segment(&ack, "MSA")[1..3], ["CA", "E1"]);
    let msh = segment(&ack, "MSH");
    assert_eq!((msh[14].as_str(), msh[15].as_str()), ("NE", "NE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_everything_and_sigterm_exits_zero() {
    let cfg = TestConfig::new("", "");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("lab")).await;
    for i in 0..50 {
        let ack = send(&mut client, adt(&format!("R{i}")).as_bytes()).await;
        assert_eq!(segment(&ack, "MSA")[1], "AA");
    }
    drop(client);
    assert_eq!(engine.terminate(), Some(0));
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let list = get_json(&format!("{}/api/messages?limit=1000", engine.admin())).await;
    assert_eq!(list["count"], 50);
    // A resend after the restart is still recognised.
    let mut client = connect(&engine.mllp("lab")).await;
    let ack = send(&mut client, adt("R7").as_bytes()).await;
    assert_eq!(segment(&ack, "MSA")[1..3], ["AA", "R7"]);
    let list = get_json(&format!("{}/api/messages?limit=1000", engine.admin())).await;
    assert_eq!(list["count"], 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_requires_the_token_when_configured() {
    let cfg = TestConfig::new("", "");
    let token_file = cfg.root.path().join("token");
    std::fs::write(&token_file, "t0ken\n").expect("write");
    let main = std::fs::read_to_string(cfg.conf().join("switchboard.toml")).expect("read");
    std::fs::write(
        cfg.conf().join("switchboard.toml"),
        main.replace(
            "[admin]\n",
            &format!(
                "[admin]\ntoken = {{ file = \"{}\" }}\n",
                token_file.display()
            ),
        ),
    )
    .expect("write");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let url = format!("{}/api/messages", engine.admin());
    let anon = reqwest::get(&url).await.expect("reachable");
    assert_eq!(anon.status(), 401);
    let body: serde_json::Value = anon.json().await.expect("json");
    assert_eq!(body["error"], "unauthorized");
    let ok = reqwest::Client::new()
        .get(&url)
        .bearer_auth("t0ken")
        .send()
        .await
        .expect("reachable");
    assert_eq!(ok.status(), 200);
    assert_eq!(
        reqwest::get(format!("{}/health", engine.admin()))
            .await
            .expect("health")
            .status(),
        200
    );
}
