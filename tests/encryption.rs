//! Encryption at rest with the real binary: bodies and payloads sealed on disk, readable
//! through the admin API, keys rotated, a wrong or missing key refused at start.

use crate::support::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A marker that appears only in the message bodies (PID-5) and rendered payloads.
const MARKER: &str = "Qxzzyvplank";

fn key_hex(byte: u8) -> String {
    format!("{byte:02x}").repeat(32)
}

/// `switchboard.toml` lines for `[encryption]` with keys (id, file), newest first.
fn encryption_toml(keys: &[(&str, &Path)]) -> String {
    let mut s = String::from("[encryption]\n");
    for (id, file) in keys {
        s.push_str(&format!(
            "[[encryption.keys]]\nid = \"{id}\"\nkey = {{ file = \"{}\" }}\n",
            file.display()
        ));
    }
    s
}

/// Rewrites `switchboard.toml` of `cfg` with `extra` appended (the same base TestConfig writes).
fn set_engine_config(cfg: &TestConfig, extra: &str) {
    std::fs::write(
        cfg.conf().join("switchboard.toml"),
        format!(
            "data_dir = \"{}\"\nshutdown_grace_secs = 5\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"warn\"\n{extra}\n",
            cfg.data().display()
        ),
    )
    .expect("write config");
}

/// The channel: ADT routed as HL7 to a webhook that is down, so the rendered payload stays
/// in the outbox (sealed) for the test to look at.
fn channel(cfg: &TestConfig) {
    std::fs::write(
        cfg.conf().join("channels/lab.toml"),
        "name = \"lab\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n[[route]]\nto = [\"hook\"]\npayload = \"hl7\"\n[[destination]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n[destination.delivery]\nbackoff_base_ms = 60000\nbackoff_max_ms = 60000\n",
    )
    .expect("write channel");
}

fn message_with_marker(control_id: &str) -> String {
    adt(control_id).replace("Testperson^Alex", &format!("{MARKER}^Alex"))
}

/// True when any file under `dir` contains `needle`.
fn on_disk(dir: &Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.filter_map(|e| e.ok()).any(|e| {
        let p = e.path();
        if p.is_dir() {
            on_disk(&p, needle)
        } else {
            std::fs::read(&p)
                .map(|b| b.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        }
    })
}

/// Runs the engine expecting it to refuse to start; returns its stderr.
fn refused(cfg: &TestConfig) -> String {
    let mut child = Command::new(binary())
        .args(["run", "--config"])
        .arg(cfg.conf())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("engine starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(!status.success(), "the engine should have refused to start");
            let out = child.wait_with_output().expect("output");
            return String::from_utf8_lossy(&out.stderr).into_owned();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the engine started although it should have refused");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn detail(engine: &EngineProcess, control_id: &str) -> serde_json::Value {
    let list = get_json(&format!(
        "{}/api/messages?control_id={control_id}",
        engine.admin()
    ))
    .await;
    let id = list["items"][0]["id"].as_str().expect("stored").to_string();
    get_json(&format!("{}/api/messages/{id}", engine.admin())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_store_round_trip_rotation_and_wrong_keys_refused() {
    let cfg = TestConfig::new("", "");
    channel(&cfg);
    let keys = tempfile::tempdir().expect("tempdir");
    let k1 = keys.path().join("k1");
    let k2 = keys.path().join("k2");
    let k1_wrong = keys.path().join("k1-wrong");
    std::fs::write(&k1, key_hex(0x11)).expect("key");
    std::fs::write(&k2, key_hex(0x22)).expect("key");
    std::fs::write(&k1_wrong, key_hex(0x99)).expect("key");

    // 1. Sealed under k1: readable through the API, not on disk.
    set_engine_config(&cfg, &encryption_toml(&[("k1", &k1)]));
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("lab")).await;
    let ack = send(&mut client, message_with_marker("ENC1").as_bytes()).await;
    assert_eq!(segment(&ack, "MSA")[1], "AA");
    let d = detail(&engine, "ENC1").await;
    assert!(d["raw"].as_str().expect("raw").contains(MARKER), "{d}");
    assert!(
        d["payloads"][0]["body"]
            .as_str()
            .expect("payload")
            .contains(MARKER),
        "{d}"
    );
    drop(client);
    assert_eq!(engine.terminate(), Some(0));
    assert!(
        !on_disk(&cfg.data(), MARKER.as_bytes()),
        "the plaintext is on disk"
    );
    assert!(
        on_disk(&cfg.data(), b"ENC1"),
        "the control id (metadata) is kept in clear"
    );
    assert!(
        !on_disk(&cfg.data(), b"MRNENC1"),
        "the MRN (PID-3) is on disk in clear: the business-key index must hold keyed hashes"
    );

    // 2. Wrong key, no key, dropped key: each refused, naming encryption.keys.
    set_engine_config(&cfg, &encryption_toml(&[("k1", &k1_wrong)]));
    let e = refused(&cfg);
    assert!(
        e.contains("encryption.keys[0] (id 'k1') is not the key"),
        "{e}"
    );
    set_engine_config(&cfg, "");
    let e = refused(&cfg);
    assert!(e.contains("set encryption.keys"), "{e}");
    set_engine_config(&cfg, &encryption_toml(&[("k2", &k2)]));
    let e = refused(&cfg);
    assert!(
        e.contains("key id 'k1', which encryption.keys does not list"),
        "{e}"
    );
    set_engine_config(
        &cfg,
        &encryption_toml(&[("k1", &keys.path().join("absent"))]),
    );
    let e = refused(&cfg);
    assert!(e.contains("encryption.keys[0].key"), "{e}");

    // 3. Rotation: k2 newest, k1 still listed. Old record readable, new one under k2.
    set_engine_config(&cfg, &encryption_toml(&[("k2", &k2), ("k1", &k1)]));
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("lab")).await;
    let ack = send(&mut client, message_with_marker("ENC2").as_bytes()).await;
    assert_eq!(segment(&ack, "MSA")[1], "AA");
    for id in ["ENC1", "ENC2"] {
        let d = detail(&engine, id).await;
        assert!(
            d["raw"].as_str().expect("raw").contains(MARKER),
            "{id}: {d}"
        );
        assert!(
            d["payloads"][0]["body"]
                .as_str()
                .expect("payload")
                .contains(MARKER),
            "{id}: {d}"
        );
    }
    // A search by MRN finds the message sealed under k1 and the one under k2.
    let found = get_json(&format!(
        "{}/api/messages?key=MRNENC1&key_type=mrn",
        engine.admin()
    ))
    .await;
    assert_eq!(found["items"].as_array().map(Vec::len), Some(1), "{found}");
    let found = get_json(&format!("{}/api/messages?key=MRNENC2", engine.admin())).await;
    assert_eq!(found["items"].as_array().map(Vec::len), Some(1), "{found}");
    drop(client);
    assert_eq!(engine.terminate(), Some(0));
    assert!(!on_disk(&cfg.data(), MARKER.as_bytes()));
    assert!(!on_disk(&cfg.data(), b"MRNENC2"));
    // k2 alone cannot read what k1 sealed: refused rather than half-readable.
    set_engine_config(&cfg, &encryption_toml(&[("k2", &k2)]));
    let e = refused(&cfg);
    assert!(e.contains("'k1'"), "{e}");
}
