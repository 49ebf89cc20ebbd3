//! The command line: `check` and `send`, as an operator runs them.

use crate::support::*;
use std::process::Command;

#[test]
fn check_accepts_the_shipped_conf() {
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf");
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(&conf)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("OK, 1 channel(s), "), "{stdout}");
    // The only warning the shipped conf may give is a port held by something else running
    // on this machine (such as an engine started from it).
    for line in stdout.lines().filter(|l| l.starts_with("warning: ")) {
        assert!(line.contains(" is in use"), "{stdout}");
    }
}

#[test]
fn check_reports_every_problem_with_file_key_and_hint() {
    let cfg = TestConfig::new("colour = \"blue\"", "");
    std::fs::write(
        cfg.conf().join("channels/bad.toml"),
        "name = \"bad\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"not-an-address\"\nmax_conections = 5\n",
    )
    .expect("write");
    std::fs::write(
        cfg.conf().join("channels/worse.toml"),
        "name = \"worse\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:1\"\n[accept]\nmessage_types = [\"ADT^A04^X\"]\n",
    )
    .expect("write");
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(cfg.conf())
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for expect in [
        "switchboard.toml: colour: unknown key 'colour'",
        "bad.toml: source.max_conections: unknown key 'max_conections'",
        "worse.toml: accept.message_types[0]: 'ADT^A04^X' is not a message type pattern (hint: use *, ADT^*, or ADT^A04)",
        ": 3 error(s)",
    ] {
        assert!(stdout.contains(expect), "missing {expect:?} in:\n{stdout}");
    }
}

#[test]
fn run_refuses_a_broken_config_with_exit_2() {
    let cfg = TestConfig::new("durability = \"sometimes\"", "");
    let out = Command::new(binary())
        .args(["run", "--config"])
        .arg(cfg.conf())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("durability: unknown value 'sometimes'"),
        "{stderr}"
    );
}

#[test]
fn send_prints_one_line_per_message_and_exits_by_the_answers() {
    let cfg = TestConfig::new("", "");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let dir = cfg.root.path();
    // Three messages with LF endings, separated by a blank line.
    let several = format!("{}\n\n{}\n{}", adt("S1"), adt("S2"), adt("S3")).replace('\r', "\n");
    std::fs::write(dir.join("several.hl7"), several).expect("write");
    // An FHS/BHS batch with CRLF endings.
    let batch = format!(
        "FHS|^~\\&|HIS\rBHS|^~\\&|HIS\r{}{}BTS|2\rFTS|1\r",
        adt("B1"),
        adt("B2")
    )
    .replace('\r', "\r\n");
    std::fs::write(dir.join("batch.hl7"), batch).expect("write");
    let out = Command::new(binary())
        .args(["send", "--to", &engine.mllp("lab")])
        .arg(dir.join("several.hl7"))
        .arg(dir.join("batch.hl7"))
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    assert!(lines[0].ends_with("several.hl7#1 AA S1"), "{stdout}");
    assert!(lines[4].ends_with("batch.hl7#2 AA B2"), "{stdout}");

    std::fs::write(
        dir.join("bad.hl7"),
        "MSH|^~\\&|HIS|MAIN|SB|HUB|2025||ADT^A04|X1|P|2.0\r",
    )
    .expect("write");
    let out = Command::new(binary())
        .args(["send", "--to", &engine.mllp("lab")])
        .arg(dir.join("bad.hl7"))
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("AR X1 version '2.0' is not accepted on this channel"),
        "{stdout}"
    );

    // Load mode prints a summary and the messages are all stored.
    let out = Command::new(binary())
        .args([
            "send",
            "--to",
            &engine.mllp("lab"),
            "--connections",
            "4",
            "--repeat",
            "25",
        ])
        .arg(dir.join("several.hl7"))
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.starts_with("sent 300 in "), "{stdout}");
    assert!(stdout.contains("positive 300, negative 0"), "{stdout}");

    // `messages list` reads the same API.
    let out = Command::new(binary())
        .args([
            "messages",
            "--admin",
            &engine.admin(),
            "list",
            "--control-id",
            "S2",
        ])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("1 message(s)"), "{stdout}");
}

#[test]
fn sandbox_starts_every_peer_and_drives_an_engine_channel() {
    use std::io::{BufRead, BufReader};
    let cfg = TestConfig::new("", "");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut child = Command::new(binary())
        .args([
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--his-listen",
            "127.0.0.1:0",
            "--patients",
            "3",
            "--send-to",
            &engine.mllp("lab"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("runs");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        match rx.recv_timeout(std::time::Duration::from_millis(200)) {
            Ok(l) => {
                let done = l.contains("sandbox running");
                lines.push(l);
                if done {
                    break;
                }
            }
            Err(_) => continue,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = lines.join("\n");
    for vendor in [
        "opsport  http://127.0.0.1:",
        "latrexa  http://127.0.0.1:",
        "buktor   http://127.0.0.1:",
        "px360    http://127.0.0.1:",
        "his      mllp://127.0.0.1:",
    ] {
        assert!(text.contains(vendor), "missing {vendor:?} in:\n{text}");
    }
    assert!(text.contains("sent 12 messages for 3 patients"), "{text}");
    assert!(text.contains("12 accepted, 0 not"), "{text}");
}

#[test]
fn every_example_channel_passes_check() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&examples).expect("conf/examples") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            // conf/examples/mappings/ holds field mappings, tested by the transform test.
            continue;
        }
        let cfg = TestConfig::new("", "");
        std::fs::copy(
            &path,
            cfg.conf()
                .join("channels")
                .join(path.file_name().expect("name")),
        )
        .expect("copy");
        // The certificates conf/examples/mllp-tls.toml names, relative to the working folder.
        crate::tls::write_example_pki(cfg.root.path());
        let out = Command::new(binary())
            .args(["check", "--config"])
            .arg(cfg.conf())
            .current_dir(cfg.root.path())
            .env("PORTAL_TOKEN", "example-token")
            .env("PORTAL_SIGNING_SECRET", "example-secret")
            .env("SFTP_PRIVATE_KEY", "example-key")
            .env("LAB_SFTP_PASSWORD", "example-password")
            .env("OPSPORT_API_KEY", "example-key")
            .env("BUKTOR_TOKEN", "example-token")
            .env("BUKTOR_SIGNING_SECRET", "example-secret")
            .env("LATREXA_API_KEY", "example-key")
            .env("FHIR_INBOUND_TOKEN", "example-token")
            .env("FHIR_CLIENT_SECRET", "example-secret")
            .env("FHIR_SERVER_TOKEN", "example-token")
            .env("BUKTOR_INBOUND_TOKEN", "example-token")
            .env("BUKTOR_INBOUND_SECRET", "example-secret")
            .env("DESKTOP_SYNC_API_KEY", "example-key")
            .env("PX360_INBOUND_KEY", "example-key")
            .output()
            .expect("runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}: {stdout}", path.display());
        n += 1;
    }
    assert!(n >= 1);
}

#[test]
fn check_names_unknown_destinations_and_missing_secrets() {
    let cfg = TestConfig::new(
        "",
        "[[route]]\nto = [\"nowhere\"]\n[[destination]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\nbearer_token = { env = \"SWITCHBOARD_TEST_UNSET_TOKEN\" }\n",
    );
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(cfg.conf())
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("lab.toml: route[0].to[0]: unknown destination 'nowhere' (hint: destinations of this channel: hook)"), "{stdout}");
    assert!(stdout.contains("lab.toml: destination[0].bearer_token: environment variable SWITCHBOARD_TEST_UNSET_TOKEN is not set"), "{stdout}");
}

#[test]
fn transform_dry_run_prints_what_a_message_becomes() {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/hl7v2/siu_s12/full.hl7");
    let out = Command::new(binary())
        .args(["transform", "--to", "canonical"])
        .arg(&fixture)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("pretty JSON");
    assert_eq!(v["kind"], "appointment_booked");
    assert_eq!(v["source"]["control_id"], "FULL-S12");

    let out = Command::new(binary())
        .args(["transform", "--to", "opsport"])
        .arg(&fixture)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let paths: Vec<&str> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["path"].as_str().expect("path"))
        .collect();
    assert_eq!(
        paths.last(),
        Some(&"/api/healthcare/appointment"),
        "clinic and doctor come first: {paths:?}"
    );
    assert_eq!(paths[0], "/api/healthcare/clinic");

    let cfg = TestConfig::new("", "");
    let file = cfg.root.path().join("mfn.hl7");
    std::fs::write(&file, "MSH|^~\\&|A|B|C|D|2025||MFN^M02|X1|P|2.5\rMFI|1\r").expect("write");
    let out = Command::new(binary())
        .args(["transform", "--to", "canonical"])
        .arg(&file)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("MFN^M02 is not mapped"), "{stdout}");
}

#[test]
fn transform_applies_a_mapping_file_and_reports_its_problems() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let fixture = root.join("fixtures/hl7v2/siu_s12/full.hl7");
    // Every example mapping under conf/ loads and applies.
    let example = root.join("conf/examples/mappings/buktor-client.toml");
    let out = Command::new(binary())
        .args(["transform", "--to", "buktor", "--mapping"])
        .arg(&example)
        .arg(&fixture)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let body = &v[0]["body"];
    assert_eq!(body["source"], "RUH-HIS", "{body}");
    assert_eq!(body["data"]["booking_ref"], "APT-77001", "{body}");
    assert_eq!(body["data"]["state"], "CONFIRMED", "{body}");
    assert!(body["data"].get("his_status").is_none(), "{body}");
    assert!(body["data"].get("his_created_at").is_none(), "{body}");

    // Canonical output is one body: the mapping applies to it as a whole.
    let cfg = TestConfig::new("", "");
    let mapping = cfg.root.path().join("canonical.toml");
    std::fs::write(
        &mapping,
        "constant = { \"routed_by\" = \"dry-run\" }\ndrop = [\"source\"]\n",
    )
    .expect("write");
    let out = Command::new(binary())
        .args(["transform", "--to", "canonical", "--mapping"])
        .arg(&mapping)
        .arg(&fixture)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(v["routed_by"], "dry-run");
    assert!(v.get("source").is_none(), "{v}");
    assert_eq!(v["kind"], "appointment_booked");

    // Problems found by FieldMapping::validate: every one, with the file and the key.
    let bad = cfg.root.path().join("bad.toml");
    std::fs::write(
        &bad,
        "drop = [\"data.x\", \"data.x\"]\n[rename]\n\"data..y\" = \"z\"\n[values.\"data.s\"]\n",
    )
    .expect("write");
    let out = Command::new(binary())
        .args(["transform", "--to", "buktor", "--mapping"])
        .arg(&bad)
        .arg(&fixture)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    let shown = bad.display().to_string();
    for key in ["rename.\"data..y\"", "values.\"data.s\"", "drop[1]"] {
        assert!(
            stdout.contains(&format!("{shown}: {key}: ")),
            "{key} missing in: {stdout}"
        );
    }

    // A key FieldMapping does not know: named with the file (TOML error with line).
    let unknown = cfg.root.path().join("unknown.toml");
    std::fs::write(&unknown, "[renames]\na = \"b\"\n").expect("write");
    let out = Command::new(binary())
        .args(["transform", "--to", "buktor", "--mapping"])
        .arg(&unknown)
        .arg(&fixture)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains(&unknown.display().to_string()), "{stdout}");
    assert!(stdout.contains("unknown field `renames`"), "{stdout}");

    // A mapping error of the message itself prints its field path.
    let no_id = cfg.root.path().join("no-id.hl7");
    std::fs::write(
        &no_id,
        "MSH|^~\\&|HIS|RUH|||20260615103000||ADT^A04|NOID-1|P|2.5\rPID|1||||Haddad^Layla\r",
    )
    .expect("write");
    let out = Command::new(binary())
        .args(["transform", "--to", "canonical", "--mapping"])
        .arg(&example)
        .arg(&no_id)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("mapping error: missing PID-3"), "{stdout}");
}
