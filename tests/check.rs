//! `switchboard check` as an operator runs it: every mistake of every file with its key
//! path, errors apart from warnings, `--json`, `--deny-warnings`, and `--connect` against a
//! real OpenSSH server whose host key is not the configured one.

use crate::sftp::{poller_config, Sshd};
use crate::support::*;
use std::path::Path;
use std::process::{Command, Output};

fn check(conf: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out: Output = Command::new(binary())
        .arg("check")
        .args(args)
        .arg("--config")
        .arg(conf)
        .output()
        .expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn write(conf: &Path, name: &str, text: &str) {
    std::fs::write(conf.join(name), text).expect("write");
}

/// Ten mistakes of different kinds (wrong types inside `source` and `destination`, unknown
/// keys, unknown values, a log level the engine would not log at) across three files.
fn ten_mistakes(conf: &Path) {
    write(
        conf,
        "switchboard.toml",
        "data_dir = \"data\"\nretention_days = \"ninety\"\n[admin]\nlisten = \"127.0.0.1:0\"\nlistn = \"x\"\n[log]\nlevel = \"verbose\"\n",
    );
    write(
        conf,
        "channels/a.toml",
        "name = \"a\"\nack = \"sometimes\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\nmax_connections = \"many\"\nidle_timeout_secs = -5\n[accept]\nversions = \"2.5\"\n",
    );
    write(
        conf,
        "channels/b.toml",
        "name = \"b\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n\
         [[route]]\nwhen = { message_typ = [\"ADT^A04\"] }\nto = [\"archive\"]\n\
         [[destination]]\nname = \"archive\"\ntype = \"file\"\nfolder = \"out\"\nextention = \"hl7\"\n\
         [[destination]]\nname = \"his\"\ntype = \"mllp\"\naddress = \"127.0.0.1:9\"\nconnections = \"many\"\n",
    );
}

#[test]
fn check_lists_all_ten_planted_mistakes_with_their_key_paths() {
    let cfg = TestConfig::new("", "");
    std::fs::remove_file(cfg.conf().join("channels/lab.toml")).expect("rm");
    ten_mistakes(&cfg.conf());
    let (code, stdout) = check(&cfg.conf(), &[]);
    assert_eq!(code, Some(1), "{stdout}");
    for expect in [
        "switchboard.toml: retention_days: invalid type: string \"ninety\", expected u32 (hint: give a whole number",
        "switchboard.toml: admin.listn: unknown key 'listn' (hint: check the spelling; expected one of listen, token, tokens)",
        "switchboard.toml: log.level: 'verbose' is not a log level",
        "a.toml: ack: unknown value 'sometimes' (hint: expected on_persist or on_delivery)",
        "a.toml: source.max_connections: invalid type: string \"many\", expected usize",
        "a.toml: source.idle_timeout_secs: invalid value: integer `-5`, expected u64",
        "a.toml: accept.versions: invalid type: string \"2.5\", expected a sequence (hint: give a list",
        "b.toml: route[0].when.message_typ: unknown key 'message_typ'",
        "b.toml: destination[0].extention: unknown key 'extention'",
        "b.toml: destination[1].connections: invalid type: string \"many\", expected usize",
    ] {
        assert!(stdout.contains(expect), "missing {expect:?} in:\n{stdout}");
    }
    assert!(
        stdout.contains(": 10 error(s)"),
        "exactly ten errors:\n{stdout}"
    );

    let (code, json) = check(&cfg.conf(), &["--json"]);
    assert_eq!(code, Some(1), "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).expect("--json prints JSON");
    let errors = v["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 10, "{json}");
    for e in errors {
        for field in ["file", "key", "message", "hint"] {
            assert!(e[field].is_string(), "{field} in {e}");
        }
        assert!(!e["key"].as_str().unwrap_or_default().is_empty(), "{e}");
    }
    assert!(v["warnings"].is_array(), "{json}");
}

#[test]
fn warnings_alone_exit_0_unless_denied() {
    let cfg = TestConfig::new("", "");
    // A route that can never match, a destination no route uses, a channel without routes,
    // and a listen port another program holds.
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("addr").port();
    write(
        &cfg.conf(),
        "channels/lab.toml",
        "name = \"lab\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n\
         [[route]]\nwhen = { message_type = [\"ORU-R01\"] }\nto = [\"archive\"]\n\
         [[destination]]\nname = \"archive\"\ntype = \"file\"\nfolder = \"out\"\n\
         [[destination]]\nname = \"spare\"\ntype = \"file\"\nfolder = \"spare\"\n",
    );
    write(
        &cfg.conf(),
        "channels/quiet.toml",
        &format!(
            "name = \"quiet\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    );
    let (code, stdout) = check(&cfg.conf(), &[]);
    assert_eq!(code, Some(0), "{stdout}");
    for expect in [
        "warning: ",
        "lab.toml: route[0].when.message_type[0]: 'ORU-R01' can never match a message: 'ORU-R01' is not a message code (three letters, such as ADT); did you mean ORU^R01?",
        "lab.toml: destination[1]: destination 'spare' is in no route's `to`",
        "quiet.toml: route: the channel has no [[route]]",
        &format!("quiet.toml: source.listen: port {port} is in use"),
        "OK, 2 channel(s), 4 warning(s)",
    ] {
        assert!(stdout.contains(expect), "missing {expect:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("error:"), "{stdout}");

    let (code, stdout) = check(&cfg.conf(), &["--deny-warnings"]);
    assert_eq!(code, Some(1), "{stdout}");

    let (code, json) = check(&cfg.conf(), &["--json"]);
    assert_eq!(code, Some(0), "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(v["errors"].as_array().map(Vec::len), Some(0), "{json}");
    let keys: Vec<&str> = v["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter_map(|w| w["key"].as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "route[0].when.message_type[0]",
            "destination[1]",
            "route",
            "source.listen"
        ],
        "{json}"
    );
    drop(held);

    // No channel at all is a warning too.
    for f in ["lab.toml", "quiet.toml"] {
        std::fs::remove_file(cfg.conf().join("channels").join(f)).expect("rm");
    }
    let (code, stdout) = check(&cfg.conf(), &[]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("no channel files"), "{stdout}");
}

#[test]
fn check_connect_reports_a_wrong_ssh_host_key_as_down() {
    let sshd = Sshd::start();
    let wrong = sshd.other_host_key();
    let out = sshd.folder("out");
    let lab = format!(
        "[[route]]\nto = [\"wrong-key\", \"right-key\"]\n\
         [[destination]]\nname = \"wrong-key\"\ntype = \"sftp\"\nfolder = \"{out}\"\n[destination.server]\n{wrong_table}\
         [[destination]]\nname = \"right-key\"\ntype = \"sftp\"\nfolder = \"{out}\"\n[destination.server]\n{right_table}",
        out = out.display(),
        wrong_table = sshd.server_table(&wrong),
        right_table = sshd.server_table(&sshd.host_key),
    );
    // The SFTP source polls with the right key.
    let cfg = poller_config(&sshd, &sshd.host_key, &lab);
    let (code, stdout) = check(&cfg.conf(), &[]);
    assert_eq!(code, Some(0), "the files themselves are right:\n{stdout}");

    let started = std::time::Instant::now();
    let (code, stdout) = check(&cfg.conf(), &["--connect"]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "bounded"
    );
    let line = |target: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(target))
            .unwrap_or_else(|| panic!("no line for {target} in:\n{stdout}"))
            .to_string()
    };
    let wrong_line = line("lab/wrong-key: ");
    assert!(
        wrong_line.contains("DOWN")
            && wrong_line.contains("does not match the configured host_key"),
        "{wrong_line}"
    );
    let right_line = line("lab/right-key: ");
    assert!(
        right_line.contains("up: ") && right_line.contains("host key matches, logged in"),
        "{right_line}"
    );
    assert!(line("drop/source: ").contains("up: "), "{stdout}");
    assert!(
        line("lab/source: ").contains("can be listened on"),
        "{stdout}"
    );

    let (_, json) = check(&cfg.conf(), &["--connect", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let down: Vec<&str> = v["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .filter(|p| p["up"] == false)
        .filter_map(|p| p["target"].as_str())
        .collect();
    assert_eq!(down, ["lab/wrong-key"], "{json}");
}
