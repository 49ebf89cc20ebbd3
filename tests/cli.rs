//! The command line: `check`, `send`, `messages`, `sandbox` and start-up errors, as an
//! operator runs them.

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
fn sandbox_starts_every_peer_and_stops_on_a_signal() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(binary())
        .args([
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--his-listen",
            "127.0.0.1:0",
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
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let text = lines.join("\n");
    for vendor in [
        "opsport  http://127.0.0.1:",
        "latrexa  http://127.0.0.1:",
        "buktor   http://127.0.0.1:",
        "px360    http://127.0.0.1:",
        "his      mllp://127.0.0.1:",
        "sandbox running",
    ] {
        assert!(text.contains(vendor), "missing {vendor:?} in:\n{text}");
    }
    // Stopped by its handler, installed before "sandbox running" is printed: exit 0.
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM stops the sandbox cleanly: {status:?}"
    );
}

#[test]
fn sandbox_traffic_mode_sends_and_exits() {
    let cfg = TestConfig::new("", "");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let out = output_within(
        Command::new(binary()).args([
            "sandbox",
            "--patients",
            "3",
            "--send-to",
            &engine.mllp("lab"),
        ]),
        60,
    )
    .expect("traffic mode exits by itself when every message is sent");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("sent 12 messages for 3 patients"),
        "{stdout}"
    );
    assert!(stdout.contains("12 accepted, 0 not"), "{stdout}");
    assert!(
        !stdout.contains("sandbox running"),
        "no peers in traffic mode: {stdout}"
    );

    // A channel that refuses the messages (ADT only, no SIU/DFT): exit 1.
    let strict = TestConfig::new("", "[accept]\nmessage_types = [\"ADT^*\"]\n");
    let strict_engine = EngineProcess::start(&strict.conf(), &strict.data());
    let out = output_within(
        Command::new(binary()).args([
            "sandbox",
            "--patients",
            "2",
            "--send-to",
            &strict_engine.mllp("lab"),
        ]),
        60,
    )
    .expect("exits");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("4 accepted, 4 not"), "{stdout}");
}

/// Writes `switchboard.toml` of `cfg` again: its data folder, then `body`.
fn rewrite_engine_config(cfg: &TestConfig, body: &str) {
    std::fs::write(
        cfg.conf().join("switchboard.toml"),
        format!(
            "data_dir = \"{}\"\nshutdown_grace_secs = 5\n{body}\n",
            cfg.data().display()
        ),
    )
    .expect("write config");
}

/// Runs `switchboard ARGS` from `dir` (so no `conf/` is found by accident) with `env`.
fn switchboard_in(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    output_within(
        Command::new(binary())
            .args(args)
            .current_dir(dir)
            .env_remove("SWITCHBOARD_ADMIN_TOKEN")
            .env_remove("SWITCHBOARD_ADMIN__LISTEN")
            .envs(env.iter().copied()),
        60,
    )
    .expect("the command ends")
}

#[test]
fn messages_find_the_engine_from_its_config_with_its_token() {
    let cfg = TestConfig::new("", "");
    let port = free_port();
    let token_file = cfg.root.path().join("admin-token");
    std::fs::write(&token_file, "cli-test-operator-token\n").expect("write token");
    rewrite_engine_config(
        &cfg,
        &format!(
            "[admin]\nlisten = \"0.0.0.0:{port}\"\ntoken = {{ file = \"{}\" }}\n[log]\nlevel = \"warn\"\n",
            token_file.display()
        ),
    );
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let dir = cfg.root.path();
    std::fs::write(dir.join("one.hl7"), adt("CFG-1")).expect("write");
    // A second message with a long channel-independent value: the control id.
    let long_id = "CFG-2-WITH-A-CONTROL-ID-LONGER-THAN-TWENTY";
    std::fs::write(dir.join("two.hl7"), adt(long_id)).expect("write");
    let out = switchboard_in(
        dir,
        &["send", "--to", &engine.mllp("lab"), "one.hl7", "two.hl7"],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // No --admin, no --token: the address and the token come from the config, as for `run`.
    let conf = cfg.conf().display().to_string();
    let out = switchboard_in(dir, &["messages", "--config", &conf, "list"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("2 message(s)"), "{stdout}");
    // Columns line up: each header starts where its values start, however long they are.
    let lines: Vec<&str> = stdout.lines().collect();
    let header = lines[0];
    for column in ["CHANNEL", "RECEIVED", "TYPE", "CONTROL ID", "STATUS", "ACK"] {
        let at = header.find(column).expect("column");
        for row in &lines[1..3] {
            assert!(
                row.len() > at && row[..at].ends_with("  ") && !row[at..].starts_with(' '),
                "column {column} misaligned in:\n{stdout}"
            );
        }
    }
    assert!(
        lines[1..3].iter().any(|l| l.contains(long_id)),
        "the long control id is listed: {stdout}"
    );

    // --json: one document with the API's items.
    let out = switchboard_in(
        dir,
        &[
            "messages",
            "--config",
            &conf,
            "--json",
            "list",
            "--control-id",
            "CFG-1",
        ],
        &[],
    );
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["items"][0]["control_id"], "CFG-1", "{v}");
    let id = v["items"][0]["id"].as_str().expect("id").to_string();
    let out = switchboard_in(
        dir,
        &["messages", "--config", &conf, "show", &id, "--json"],
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["id"], id.as_str(), "{v}");
    assert!(v["raw"].as_str().expect("raw").contains("CFG-1"), "{v}");
    let out = switchboard_in(
        dir,
        &["messages", "--config", &conf, "--json", "dead-letters"],
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["count"], 0, "{v}");

    // --admin as host:port and as a URL; the token still comes from the config.
    for admin in [
        format!("127.0.0.1:{port}"),
        format!("http://127.0.0.1:{port}/"),
    ] {
        let out = switchboard_in(
            dir,
            &["messages", "--config", &conf, "--admin", &admin, "list"],
            &[],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{admin}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("2 message(s)"), "{stdout}");
    }
    // A wrong token is refused, and said so.
    let out = switchboard_in(
        dir,
        &[
            "messages",
            "--config",
            &conf,
            "--token",
            "wrong-token-value",
            "list",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("admin API answered 401"), "{stderr}");
    drop(engine);
}

#[test]
fn messages_follow_switchboard_admin_listen_and_name_an_address_nobody_answers() {
    let cfg = TestConfig::new("", "");
    // The file names a port nobody listens on; the environment moves the engine elsewhere.
    let idle = free_port();
    let port = free_port();
    rewrite_engine_config(
        &cfg,
        &format!("[admin]\nlisten = \"127.0.0.1:{idle}\"\n[log]\nlevel = \"warn\"\n"),
    );
    let listen = format!("127.0.0.1:{port}");
    let env = [("SWITCHBOARD_ADMIN__LISTEN", listen.as_str())];
    let engine = EngineProcess::start_with(
        &cfg.conf(),
        &cfg.data(),
        std::process::Stdio::inherit(),
        &env,
    );
    assert_eq!(engine.info.admin.port(), port);
    let dir = cfg.root.path();
    std::fs::write(dir.join("one.hl7"), adt("ENV-1")).expect("write");
    let out = switchboard_in(dir, &["send", "--to", &engine.mllp("lab"), "one.hl7"], &[]);
    assert!(out.status.success());
    let conf = cfg.conf().display().to_string();

    let out = switchboard_in(dir, &["messages", "--config", &conf, "list"], &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ENV-1") && stdout.contains("1 message(s)"),
        "{stdout}"
    );

    // Without the variable the CLI goes where the file points, and says nobody answers there.
    let out = switchboard_in(dir, &["messages", "--config", &conf, "list"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let expect = format!(
        "switchboard: no engine answers at http://127.0.0.1:{idle} (admin.listen in {}): ",
        cfg.conf().join("switchboard.toml").display()
    );
    assert!(stderr.starts_with(&expect), "{stderr}");
    assert_eq!(stderr.matches("os error 111").count(), 1, "{stderr}");

    // Nor --admin on an idle port: the address named, the option named.
    let idle_admin = format!("127.0.0.1:{idle}");
    let out = switchboard_in(dir, &["messages", "--admin", &idle_admin, "list"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "no engine answers at http://127.0.0.1:{idle} (--admin)"
        )),
        "{stderr}"
    );
    let out = switchboard_in(dir, &["messages", "--admin", "ftp://x", "list"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--admin 'ftp://x' is neither host:port nor an http:// or https:// URL"),
        "{stderr}"
    );

    // The CLI's own SWITCHBOARD_ADMIN_TOKEN is not a config key: `run` and the CLI accept it.
    let out = switchboard_in(
        dir,
        &["messages", "--config", &conf, "list"],
        &[env[0], ("SWITCHBOARD_ADMIN_TOKEN", "unused-token")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(engine);
}

#[test]
fn messages_use_the_port_an_engine_picked_for_admin_listen_port_zero() {
    let cfg = TestConfig::new("", "");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let dir = cfg.root.path();
    std::fs::write(dir.join("one.hl7"), adt("ZERO-1")).expect("write");
    let out = switchboard_in(dir, &["send", "--to", &engine.mllp("lab"), "one.hl7"], &[]);
    assert!(out.status.success());
    let conf = cfg.conf().display().to_string();
    let out = switchboard_in(dir, &["messages", "--config", &conf, "list"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ZERO-1"), "{stdout}");
    drop(engine);
}

#[test]
fn a_port_in_use_is_reported_with_its_cause_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    // A channel on the taken port.
    let cfg = TestConfig::new("", "");
    std::fs::write(
        cfg.conf().join("channels/lab.toml"),
        format!("name = \"lab\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"{addr}\"\n"),
    )
    .expect("write");
    let out = switchboard_in(
        cfg.root.path(),
        &["run", "--config", &cfg.conf().display().to_string()],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("switchboard: cannot start: "), "{stderr}");
    assert!(
        last.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert_eq!(last.matches("os error 98").count(), 1, "{stderr}");
    assert_eq!(
        last.matches("Address already in use").count(),
        1,
        "{stderr}"
    );

    // The admin server on the taken port.
    let cfg = TestConfig::new("", "");
    rewrite_engine_config(&cfg, &format!("[admin]\nlisten = \"{addr}\"\n"));
    let out = switchboard_in(
        cfg.root.path(),
        &["run", "--config", &cfg.conf().display().to_string()],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains(&format!("admin server cannot listen on {addr}")),
        "{stderr}"
    );
    assert_eq!(last.matches("os error 98").count(), 1, "{stderr}");
    drop(taken);
}

#[test]
fn bad_log_color_and_level_are_config_errors_with_file_and_key() {
    let cfg = TestConfig::new("", "");
    let file = cfg.conf().join("switchboard.toml").display().to_string();
    let conf = cfg.conf().display().to_string();
    for (log, expect) in [
        (
            "[log]\ncolor = \"sometimes\"\n",
            format!("{file}: log.color: unknown value 'sometimes' (hint: expected one of auto, always, never)"),
        ),
        (
            "[log]\nlevel = \"verbose\"\n",
            format!("{file}: log.level: 'verbose' is not a log level"),
        ),
    ] {
        rewrite_engine_config(&cfg, &format!("[admin]\nlisten = \"127.0.0.1:0\"\n{log}"));
        let out = switchboard_in(cfg.root.path(), &["run", "--config", &conf], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(&expect), "missing {expect:?} in:\n{stderr}");
        assert!(stderr.contains("not starting"), "{stderr}");
    }
}

#[test]
fn log_color_always_colours_a_log_file_and_never_does_not() {
    for (color, coloured) in [("always", true), ("never", false)] {
        let cfg = TestConfig::new("", "");
        rewrite_engine_config(
            &cfg,
            &format!(
                "[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"info\"\ncolor = \"{color}\"\n"
            ),
        );
        let log = cfg.root.path().join("engine.log");
        let file = std::fs::File::create(&log).expect("log file");
        let engine = EngineProcess::start_with(&cfg.conf(), &cfg.data(), file.into(), &[]);
        assert_eq!(engine.terminate(), Some(0));
        let text = std::fs::read_to_string(&log).expect("log");
        assert!(text.contains("Switchboard started."), "{text}");
        assert_eq!(text.contains('\x1b'), coloured, "color = {color}: {text:?}");
    }
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
    let file = cfg.root.path().join("qbp.hl7");
    std::fs::write(&file, "MSH|^~\\&|A|B|C|D|2025||QBP^Q22|X1|P|2.5\rQPD|1\r").expect("write");
    let out = Command::new(binary())
        .args(["transform", "--to", "canonical"])
        .arg(&file)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("QBP^Q22 is not mapped"), "{stdout}");
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
