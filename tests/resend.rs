//! Resends: answered only once the original is durable, per channel, per content.

use crate::support::*;
use std::collections::HashMap;
use std::time::Duration;

/// Control ids (with their record counts) stored on `channel`.
async fn stored(admin: &str, channel: &str) -> HashMap<String, usize> {
    let list = get_json(&format!(
        "{admin}/api/messages?limit=10000&channel={channel}"
    ))
    .await;
    let mut out = HashMap::new();
    for m in list["items"].as_array().expect("items") {
        *out.entry(m["control_id"].as_str().expect("control id").to_string())
            .or_default() += 1;
    }
    out
}

/// A config with channels `lab` and `lab2`, both routing ADT to a file folder.
fn two_channels() -> TestConfig {
    let route = |name: &str| {
        format!(
            "[[route]]\nname = \"adt\"\nwhen = {{ message_type = [\"ADT^*\"] }}\npayload = \"hl7\"\nto = [\"files\"]\n\
             [[destination]]\nname = \"files\"\ntype = \"file\"\nfolder = \"{{DATA}}/out-{name}\"\nextension = \"hl7\"\n"
        )
    };
    let cfg = TestConfig::new("", "");
    let data = cfg.data();
    let fill = |s: String| s.replace("{DATA}", &data.display().to_string());
    let lab = cfg.conf().join("channels/lab.toml");
    let text = std::fs::read_to_string(&lab).expect("lab.toml");
    std::fs::write(&lab, format!("{text}{}", fill(route("lab")))).expect("write");
    std::fs::write(
        cfg.conf().join("channels/lab2.toml"),
        format!(
            "name = \"lab2\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n{}",
            fill(route("lab2"))
        ),
    )
    .expect("write lab2");
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_message_on_two_channels_is_two_messages_and_a_resend_on_one_is_one() {
    let cfg = two_channels();
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut a = connect(&engine.mllp("lab")).await;
    let mut b = connect(&engine.mllp("lab2")).await;
    let msg = adt("TWO-1");
    let first = send(&mut a, msg.as_bytes()).await;
    assert_eq!(segment(&first, "MSA")[1], "AA", "{first}");
    let other = send(&mut b, msg.as_bytes()).await;
    assert_eq!(segment(&other, "MSA")[1], "AA", "{other}");
    assert_ne!(
        segment(&first, "MSH")[9],
        segment(&other, "MSH")[9],
        "the second channel's answer is its own, not the first channel's"
    );
    // A resend on the first channel: the first answer again, byte for byte.
    let again = send(&mut a, msg.as_bytes()).await;
    assert_eq!(again, first);
    // Restamped MSH-7 is still the same message.
    let restamped = msg.replacen("|20250101120000||", "|20250101120500||", 1);
    assert_eq!(send(&mut a, restamped.as_bytes()).await, first);
    let admin = engine.admin();
    assert_eq!(stored(&admin, "lab").await.get("TWO-1"), Some(&1));
    assert_eq!(stored(&admin, "lab2").await.get("TWO-1"), Some(&1));
    // Both were routed: each channel's folder gets its file.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let count = |dir: &str| {
        std::fs::read_dir(cfg.data().join(dir))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    while (count("out-lab") < 1 || count("out-lab2") < 1) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!((count("out-lab"), count("out-lab2")), (1, 1));
    let m = metrics_text(&engine).await;
    assert_eq!(
        metric_value(&m, "switchboard_duplicates_total{channel=\"lab\"}"),
        2.0,
        "{m}"
    );
    engine.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_control_id_with_another_body_is_stored_as_a_new_message() {
    let cfg = TestConfig::new("", "");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut c = connect(&engine.mllp("lab")).await;
    let first = adt("RESET-1");
    // The HIS restarted its counter: same MSH-10, another patient.
    let second = first.replace("MRNRESET-1", "MRNOTHER-7");
    let a1 = send(&mut c, first.as_bytes()).await;
    let a2 = send(&mut c, second.as_bytes()).await;
    assert_eq!(segment(&a1, "MSA")[1], "AA");
    assert_eq!(segment(&a2, "MSA")[1], "AA");
    assert_ne!(a1, a2, "the second got its own answer");
    assert_eq!(
        stored(&engine.admin(), "lab").await.get("RESET-1"),
        Some(&2)
    );
    // A resend of the second is now the duplicate.
    assert_eq!(send(&mut c, second.as_bytes()).await, a2);
    assert_eq!(
        stored(&engine.admin(), "lab").await.get("RESET-1"),
        Some(&2)
    );
    let m = metrics_text(&engine).await;
    assert_eq!(
        metric_value(&m, "switchboard_control_id_reused_total{channel=\"lab\"}"),
        1.0,
        "{m}"
    );
    engine.kill();
}

/// The original on one connection, the resend 0.3 ms later on another, SIGKILL right after
/// the resend's answer: the message is on disk after the restart, 40 times out of 40.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_is_never_answered_before_its_original_is_durable() {
    let cfg = TestConfig::new("", "");
    let mut acked = Vec::new();
    for round in 0..40 {
        let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
        let addr = engine.mllp("lab");
        let mut a = connect(&addr).await;
        let mut b = connect(&addr).await;
        // Warm both connections so the race is between the two sends, not the connects.
        send(&mut a, adt(&format!("WARM-A{round}")).as_bytes()).await;
        send(&mut b, adt(&format!("WARM-B{round}")).as_bytes()).await;
        let id = format!("RACE-{round}");
        let msg = adt(&id);
        let m2 = msg.clone();
        let original = tokio::spawn(async move { a.send(msg.as_bytes()).await });
        tokio::time::sleep(Duration::from_micros(300)).await;
        let resend = b.send(m2.as_bytes()).await;
        engine.kill();
        let _ = original.await;
        if let Ok(bytes) = resend {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if segment(&text, "MSA")[1] == "AA" {
                acked.push(id);
            }
        }
    }
    assert!(
        acked.len() >= 30,
        "too few resends answered to mean anything: {}",
        acked.len()
    );
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let have = stored(&engine.admin(), "lab").await;
    let lost: Vec<_> = acked.iter().filter(|id| !have.contains_key(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} lost: {lost:?}",
        lost.len(),
        acked.len()
    );
    engine.kill();
}
