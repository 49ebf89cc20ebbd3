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

/// `switchboard sandbox` on free loopback ports, stopped when dropped.
struct SandboxProcess {
    child: std::process::Child,
    http: String,
    his: String,
}

impl SandboxProcess {
    fn start() -> SandboxProcess {
        use std::io::BufRead;
        let (http, his) = (
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        );
        let mut child = Command::new(binary())
            .args(["sandbox", "--listen", &http, "--his-listen", &his])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("sandbox starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.starts_with("sandbox running") => break,
                Some(Ok(_)) => {}
                _ => panic!("the sandbox stopped before it ran"),
            }
        }
        SandboxProcess { child, http, his }
    }

    fn base(&self, vendor: &str) -> String {
        format!("http://{}/{vendor}", self.http)
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `check --connect` makes an authenticated request that changes nothing where the vendor
/// has one (OpsPort: a bulk upsert of no record; Latrexa: the pending bookings, for the upload
/// destination and the bookings source): a wrong key is DOWN with the vendor's answer, the
/// right one up. Buktor and PX360 document no such request, and the output says so.
#[test]
fn check_connect_sends_the_credentials_where_the_vendor_has_a_harmless_request() {
    let sb = SandboxProcess::start();
    let cfg = TestConfig::new("", "");
    let conf = cfg.conf();
    write(
        &conf,
        "channels/lab.toml",
        &format!(
            "name = \"lab\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n\
             [[route]]\nto = [\"ops-right\", \"ops-wrong\", \"lx-right\", \"lx-wrong\", \"buktor\", \"px360\"]\n\
             [[destination]]\nname = \"ops-right\"\ntype = \"opsport\"\nbase_url = \"{ops}\"\napi_key = {{ env = \"T_OPS_RIGHT\" }}\n\
             [[destination]]\nname = \"ops-wrong\"\ntype = \"opsport\"\nbase_url = \"{ops}\"\napi_key = {{ env = \"T_OPS_WRONG\" }}\n\
             [[destination]]\nname = \"lx-right\"\ntype = \"latrexa\"\nbase_url = \"{lx}\"\napi_key = {{ env = \"T_LX_RIGHT\" }}\norganization_code = \"sandbox-clinic\"\n\
             [[destination]]\nname = \"lx-wrong\"\ntype = \"latrexa\"\nbase_url = \"{lx}\"\napi_key = {{ env = \"T_LX_WRONG\" }}\norganization_code = \"sandbox-clinic\"\n\
             [[destination]]\nname = \"buktor\"\ntype = \"buktor\"\nbase_url = \"{bk}\"\nbearer_token = {{ env = \"T_LX_WRONG\" }}\nsigning_secret = {{ env = \"T_LX_WRONG\" }}\n\
             [[destination]]\nname = \"px360\"\ntype = \"px360\"\nbase_url = \"{px}\"\n",
            ops = sb.base("opsport"),
            lx = sb.base("latrexa"),
            bk = sb.base("buktor"),
            px = sb.base("px360"),
        ),
    );
    write(
        &conf,
        "channels/bookings.toml",
        &format!(
            "name = \"bookings\"\n[source]\ntype = \"latrexa\"\nbase_url = \"{lx}\"\napi_key = {{ env = \"T_LX_WRONG\" }}\norganization_code = \"sandbox-clinic\"\n\
             [source.his]\naddress = \"{his}\"\n",
            lx = sb.base("latrexa"),
            his = sb.his,
        ),
    );
    let out = Command::new(binary())
        .args(["check", "--connect", "--config"])
        .arg(&conf)
        .env("T_OPS_RIGHT", "sandbox-opsport-key")
        .env("T_OPS_WRONG", "not-the-key")
        .env("T_LX_RIGHT", "sandbox-latrexa-key")
        .env("T_LX_WRONG", "not-the-key")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = |target: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(target))
            .unwrap_or_else(|| panic!("no line for {target} in:\n{stdout}"))
            .to_string()
    };
    let ops_right = line("lab/ops-right: ");
    assert!(
        ops_right.contains(": up: ")
            && ops_right.contains("POST /api/healthcare/clinics [] (an upsert of no record) answered 200: credentials accepted"),
        "{ops_right}"
    );
    let ops_wrong = line("lab/ops-wrong: ");
    assert!(
        ops_wrong.contains(": DOWN: ")
            && ops_wrong.contains("answered 401: credentials refused: Invalid or missing API key."),
        "{ops_wrong}"
    );
    let lx_right = line("lab/lx-right: ");
    assert!(
        lx_right.contains(": up: ")
            && lx_right.contains(
                "GET /api/integration/appointments/pending answered 200: credentials accepted"
            ),
        "{lx_right}"
    );
    let lx_wrong = line("lab/lx-wrong: ");
    assert!(
        lx_wrong.contains(": DOWN: ")
            && lx_wrong.contains("answered 401: credentials refused: ")
            && lx_wrong.contains("Missing or invalid API key or organization code."),
        "{lx_wrong}"
    );
    let bookings = line("bookings/source: ");
    assert!(
        bookings.contains(": DOWN: ") && bookings.contains("answered 401"),
        "{bookings}"
    );
    let buktor = line("lab/buktor: ");
    assert!(
        buktor.contains(": up: ") && buktor.contains("credentials not checked: Buktor's"),
        "{buktor}"
    );
    let px360 = line("lab/px360: ");
    assert!(
        px360.contains(": up: ") && px360.contains("PX360's contract takes no credentials"),
        "{px360}"
    );
    // Nothing was stored at OpsPort: the empty bulk upsert changed nothing.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let state: serde_json::Value = rt.block_on(async {
        reqwest::get(format!("{}/_state", sb.base("opsport")))
            .await
            .expect("state")
            .json()
            .await
            .expect("JSON")
    });
    for kind in ["clinics", "doctors", "patients", "appointments"] {
        assert_eq!(
            state[kind].as_array().map(Vec::len),
            Some(0),
            "{kind}: {state}"
        );
    }

    // The bookings source with the right key is up.
    let out = Command::new(binary())
        .args(["check", "--connect", "--config"])
        .arg(&conf)
        .env("T_OPS_RIGHT", "sandbox-opsport-key")
        .env("T_OPS_WRONG", "sandbox-opsport-key")
        .env("T_LX_RIGHT", "sandbox-latrexa-key")
        .env("T_LX_WRONG", "sandbox-latrexa-key")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("bookings/source: up: ")
            && stdout.contains("GET /api/integration/appointments/pending: credentials accepted (0 booking(s) pending)"),
        "{stdout}"
    );
}

/// A bad `SWITCHBOARD_*` value is reported against the variable, not switchboard.toml.
#[test]
fn a_bad_environment_value_is_reported_against_the_variable() {
    let cfg = TestConfig::new("", "");
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(cfg.conf())
        .env("SWITCHBOARD_ADMIN__LISTEN", "notaport")
        .env("SWITCHBOARD_RETENTION_DAYS", "ninety")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for expect in [
        "error: environment variable SWITCHBOARD_ADMIN__LISTEN: admin.listen: 'notaport' is not an address (hint: use IP:PORT, such as 127.0.0.1:8080; the variable overrides switchboard.toml: fix or unset it)",
        "error: environment variable SWITCHBOARD_RETENTION_DAYS: retention_days: invalid type: string \"ninety\", expected u32",
    ] {
        assert!(stdout.contains(expect), "missing {expect:?} in:\n{stdout}");
    }
    assert!(
        !stdout.contains("switchboard.toml: admin.listen"),
        "{stdout}"
    );

    // `run` names the variable too, and the file's own mistakes stay the file's.
    std::fs::write(
        cfg.conf().join("switchboard.toml"),
        "shutdown_grace_secs = \"soon\"\n",
    )
    .expect("write");
    let out = Command::new(binary())
        .args(["run", "--config"])
        .arg(cfg.conf())
        .env("SWITCHBOARD_ADMIN__LISTEN", "notaport")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("environment variable SWITCHBOARD_ADMIN__LISTEN: admin.listen: 'notaport' is not an address"),
        "{stderr}"
    );
    assert!(
        stderr.contains("switchboard.toml: shutdown_grace_secs: invalid type"),
        "{stderr}"
    );
}
