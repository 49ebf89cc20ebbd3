//! Reload without downtime and destination health, against the real binary.
//!
//! A reload (`POST /api/reload` or SIGHUP) restarts only the channels whose files changed:
//! an open MLLP connection to an unchanged channel keeps working (same connection, new
//! configuration version on its messages) while a changed channel applies its new accept
//! rule. A configuration with problems is refused whole, with every problem, and the running
//! one keeps working. Destination health checks report a webhook down while nothing listens
//! and up once it does, in `/metrics`, `/api/channels` and `switchboard check --connect`.

use crate::support::*;
use std::time::Duration;

fn write_channel(cfg: &TestConfig, name: &str, text: &str) {
    std::fs::write(cfg.conf().join(format!("channels/{name}.toml")), text).expect("write channel");
}

fn adt2(accept: &str) -> String {
    format!(
        "name = \"adt2\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n[accept]\nmessage_types = [{accept}]\n"
    )
}

async fn reload(admin: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(format!("{admin}/api/reload"))
        .send()
        .await
        .expect("admin API reachable");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON body"))
}

async fn metrics(admin: &str) -> String {
    reqwest::get(format!("{admin}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// The stored record of the newest message with `control_id`.
async fn stored(admin: &str, control_id: &str) -> serde_json::Value {
    let list = get_json(&format!("{admin}/api/messages?control_id={control_id}")).await;
    let id = list["items"][0]["id"].as_str().expect("stored").to_string();
    get_json(&format!("{admin}/api/messages/{id}")).await
}

fn sighup(engine: &EngineProcess) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &engine.info.pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_unchanged_channels_and_restarts_changed_ones() {
    let cfg = TestConfig::new("", "");
    write_channel(&cfg, "adt2", &adt2("\"*\""));
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let admin = engine.admin();
    let v1 = engine.info.config_version.clone();
    let mut lab = connect(&engine.mllp("lab")).await;
    let mut old_adt2 = connect(&engine.mllp("adt2")).await;
    assert_eq!(
        segment(&send(&mut lab, adt("RL-1").as_bytes()).await, "MSA")[1],
        "AA"
    );
    assert_eq!(
        segment(&send(&mut old_adt2, adt("RL-2").as_bytes()).await, "MSA")[1],
        "AA"
    );
    assert_eq!(stored(&admin, "RL-1").await["config_version"], v1.as_str());

    // adt2 now accepts only results.
    write_channel(&cfg, "adt2", &adt2("\"ORU^R01\""));
    let (status, report) = reload(&admin).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["status"], "reloaded");
    assert_eq!(report["restarted"], serde_json::json!(["adt2"]), "{report}");
    assert_eq!(report["unchanged"], serde_json::json!(["lab"]), "{report}");
    assert_eq!(report["previous_version"], v1.as_str());
    let v2 = report["config_version"]
        .as_str()
        .expect("version")
        .to_string();
    assert_ne!(v2, v1);

    // The open connection to the unchanged channel keeps working, under the new version.
    assert_eq!(
        segment(&send(&mut lab, adt("RL-3").as_bytes()).await, "MSA")[1],
        "AA"
    );
    assert_eq!(stored(&admin, "RL-3").await["config_version"], v2.as_str());
    let text = metrics(&admin).await;
    assert!(
        text.contains("switchboard_mllp_connections_opened_total{channel=\"lab\"} 1\n"),
        "no reconnect to lab: {text}"
    );
    assert!(
        text.contains("switchboard_config_reloads_total{outcome=\"ok\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("config_version=\"{v2}\""))
            && !text.contains(&format!("config_version=\"{v1}\"")),
        "build info names the new version"
    );

    // The changed channel was restarted: its old connection is closed, and a new one gets
    // the new accept rule.
    assert!(
        old_adt2.send(adt("RL-4").as_bytes()).await.is_err(),
        "the changed channel's connection was closed"
    );
    let info = runtime_info(&cfg.data());
    assert_eq!(info.config_version, v2);
    let mut new_adt2 = connect(&info.channels["adt2"].to_string()).await;
    let nak = send(&mut new_adt2, adt("RL-5").as_bytes()).await;
    assert_eq!(segment(&nak, "MSA")[1], "AR", "{nak}");
    assert_eq!(
        segment(&nak, "ERR")[3].split('^').next(),
        Some("200"),
        "{nak}"
    );
    let oru = "MSH|^~\\&|LAB|MAIN|SB|HUB|20250101120000||ORU^R01^ORU_R01|RL-6|P|2.5.1\rPID|1||MRN-RL^^^MAIN^MR||Testperson^Alex\rOBR|1|PL-1|FL-1|GLU^Glucose\rOBX|1|NM|GLU^Glucose||5.4|mmol/L|||||F\r";
    assert_eq!(
        segment(&send(&mut new_adt2, oru.as_bytes()).await, "MSA")[1],
        "AA"
    );
    let channels = get_json(&format!("{admin}/api/channels")).await;
    let addr = channels["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .find(|c| c["name"] == "adt2")
        .map(|c| c["address"].clone());
    assert_eq!(
        addr,
        Some(serde_json::json!(info.channels["adt2"].to_string()))
    );

    // An audit record of the reload.
    let audit = get_json(&format!("{admin}/api/audit")).await;
    assert_eq!(audit["items"][0]["action"], "reload", "{audit}");
    assert_eq!(audit["items"][0]["who"], "api", "{audit}");
    drop(lab);
    assert_eq!(engine.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_is_refused_whole_and_the_running_config_stays() {
    let cfg = TestConfig::new("", "");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let admin = engine.admin();
    let v1 = engine.info.config_version.clone();
    let mut lab = connect(&engine.mllp("lab")).await;

    // Two problems in a new channel, one in the engine file: all reported, nothing applied.
    write_channel(
        &cfg,
        "broken",
        "name = \"broken\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"nowhere\"\n[accept]\nmessage_types = [\"A B\"]\n",
    );
    let (status, err) = reload(&admin).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"], "config_invalid");
    let problems: Vec<String> = err["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| {
            format!(
                "{}|{}",
                p["file"]
                    .as_str()
                    .unwrap_or_default()
                    .rsplit('/')
                    .next()
                    .unwrap_or_default(),
                p["key"].as_str().unwrap_or_default()
            )
        })
        .collect();
    for expect in [
        "broken.toml|source.listen",
        "broken.toml|accept.message_types[0]",
    ] {
        assert!(
            problems.contains(&expect.to_string()),
            "{expect} in {problems:?}"
        );
    }
    assert_eq!(runtime_info(&cfg.data()).config_version, v1);
    assert_eq!(
        segment(&send(&mut lab, adt("BR-1").as_bytes()).await, "MSA")[1],
        "AA"
    );
    assert_eq!(stored(&admin, "BR-1").await["config_version"], v1.as_str());

    // SIGHUP with the same broken folder: refused and logged; the engine keeps running.
    sighup(&engine);
    let refused_twice = "switchboard_config_reloads_total{outcome=\"refused\"} 2\n";
    let mut text = String::new();
    for _ in 0..200 {
        text = metrics(&admin).await;
        if text.contains(refused_twice) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(text.contains(refused_twice), "{text}");
    assert_eq!(
        segment(&send(&mut lab, adt("BR-2").as_bytes()).await, "MSA")[1],
        "AA"
    );

    // A key a running engine cannot change is a refusal too.
    std::fs::remove_file(cfg.conf().join("channels/broken.toml")).expect("remove");
    let main = std::fs::read_to_string(cfg.conf().join("switchboard.toml")).expect("read");
    std::fs::write(
        cfg.conf().join("switchboard.toml"),
        main.replace("[admin]\n", "durability = \"os\"\n[admin]\n"),
    )
    .expect("write");
    let (status, err) = reload(&admin).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["problems"][0]["key"], "durability", "{err}");
    std::fs::write(cfg.conf().join("switchboard.toml"), &main).expect("write");

    // Fixed, a SIGHUP applies it: the new channel starts, lab keeps its connection.
    write_channel(&cfg, "adt2", &adt2("\"*\""));
    sighup(&engine);
    let mut info = runtime_info(&cfg.data());
    for _ in 0..200 {
        if info.channels.contains_key("adt2") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        info = runtime_info(&cfg.data());
    }
    assert!(info.channels.contains_key("adt2"), "{info:?}");
    assert_ne!(info.config_version, v1);
    assert_eq!(
        segment(&send(&mut lab, adt("BR-3").as_bytes()).await, "MSA")[1],
        "AA"
    );
    assert_eq!(
        stored(&admin, "BR-3").await["config_version"],
        info.config_version.as_str()
    );
    let mut adt2_client = connect(&info.channels["adt2"].to_string()).await;
    assert_eq!(
        segment(&send(&mut adt2_client, adt("BR-4").as_bytes()).await, "MSA")[1],
        "AA"
    );
    let text = metrics(&admin).await;
    assert!(
        text.contains("switchboard_config_reloads_total{outcome=\"ok\"} 1\n"),
        "{text}"
    );
    drop((lab, adt2_client));
    assert_eq!(engine.terminate(), Some(0));
}

fn check_connect(cfg: &TestConfig) -> (bool, String) {
    let out = std::process::Command::new(binary())
        .args(["check", "--connect", "--config"])
        .arg(cfg.conf())
        .output()
        .expect("check runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_health_is_down_until_the_peer_listens() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let channel = format!(
        "[[route]]\nto = [\"hook\"]\npayload = \"hl7\"\n[[destination]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{url}\"\n{FAST_RETRY}healthcheck_interval_secs = 1\n"
    );
    let cfg = TestConfig::new("", &channel);
    let (ok, out) = check_connect(&cfg);
    assert!(!ok, "{out}");
    assert!(out.contains("lab/hook: DOWN: 127.0.0.1:"), "{out}");

    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let admin = engine.admin();
    let series = "switchboard_destination_up{channel=\"lab\",destination=\"hook\"}";
    let wait_for = |value: &'static str| {
        let admin = admin.clone();
        async move {
            let line = format!("{series} {value}\n");
            let mut text = String::new();
            for _ in 0..300 {
                text = metrics(&admin).await;
                if text.contains(&line) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("{line} never appeared: {text}");
        }
    };
    wait_for("0").await;
    let channels = get_json(&format!("{admin}/api/channels")).await;
    assert_eq!(
        channels["channels"][0]["destinations"][0]["up"], false,
        "{channels}"
    );

    // The peer comes up: the checks that run while it is down notice.
    let sink = HttpSink::start_on(&format!("127.0.0.1:{port}"), SinkMode::Up).await;
    wait_for("1").await;
    let channels = get_json(&format!("{admin}/api/channels")).await;
    assert_eq!(
        channels["channels"][0]["destinations"][0]["up"], true,
        "{channels}"
    );
    let (ok, out) = check_connect(&cfg);
    assert!(ok, "{out}");
    assert!(out.contains("lab/hook: up"), "{out}");
    let mut mllp = connect(&engine.mllp("lab")).await;
    send(&mut mllp, adt("HC-1").as_bytes()).await;
    assert!(
        eventually(20, || sink
            .received()
            .iter()
            .any(|(_, b)| b.contains("|HC-1|")))
        .await,
        "delivered once up"
    );
}
