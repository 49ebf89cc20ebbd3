//! The operations surface in `dashboards/`: it names only metrics the engine exports, the
//! exported list matches a running engine's `/metrics`, `promtool` accepts the rules and the
//! example config, and a real Prometheus scrapes a real engine with the rules loaded.
//!
//! `promtool` and `prometheus` must be installed (`apt-get install prometheus`; `.ci/run` does
//! it). These tests fail, rather than skip, when they are missing.

use crate::support::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The files in `dashboards/` that name metrics.
const USERS: &[&str] = &["switchboard-overview.json", "alerts.yml", "alerts_test.yml"];

/// The alert rules `alerts.yml` must define.
const ALERTS: &[&str] = &[
    "SwitchboardDown",
    "DestinationDown",
    "OldestUndeliveredTooOld",
    "NakRateHigh",
    "DeadLettersRising",
    "StoreNearDiskLimit",
    "IngestLatencyHigh",
    "TlsCertificateExpiresSoon",
    "SwitchboardClusterNodeDown",
    "SwitchboardClusterLagGrowing",
    "SwitchboardClusterCannotOpen",
];

fn dashboards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .join("dashboards")
}

fn read(name: &str) -> String {
    let path = dashboards().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Metric family names in `text`: `switchboard_*` and the standard `process_*`, histogram
/// suffixes removed.
fn names_in(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\b(?:switchboard|process)_[a-z0-9_]+").expect("valid regex");
    re.find_iter(text)
        .map(|m| {
            let n = m.as_str();
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n)
                .to_string()
        })
        .collect()
}

/// Family names from the `# TYPE` lines of a Prometheus text exposition.
fn families(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect()
}

fn exported() -> BTreeSet<String> {
    engine::metrics::exported_names()
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// Every `expr` of the dashboard's panels.
fn dashboard_exprs(dash: &serde_json::Value) -> Vec<String> {
    dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| {
            t["expr"]
                .as_str()
                .expect("every target has an expr")
                .to_string()
        })
        .collect()
}

#[test]
fn dashboards_use_only_exported_names() {
    let exported = exported();
    assert_eq!(
        exported.len(),
        engine::metrics::exported_names().len(),
        "a name is listed twice"
    );
    for file in USERS {
        let used = names_in(&read(file));
        assert!(used.len() >= 5, "{file} names hardly any metric: {used:?}");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "dashboards/{file} uses names the engine does not export: {unknown:?}"
        );
    }
    // The dashboard covers every family the engine exports except the ones only for debugging.
    let used = names_in(&read("switchboard-overview.json"));
    let not_shown: Vec<_> = exported
        .difference(&used)
        .filter(|n| n.as_str() != "process_virtual_memory_bytes")
        .collect();
    assert!(
        not_shown.is_empty(),
        "exported but not on the dashboard: {not_shown:?}"
    );
}

#[test]
fn dashboard_is_importable_grafana_json() {
    let dash: serde_json::Value =
        serde_json::from_str(&read("switchboard-overview.json")).expect("valid JSON");
    assert!(dash["schemaVersion"].as_u64().expect("schemaVersion") >= 36);
    assert_eq!(dash["uid"], "switchboard-overview");
    let vars = dash["templating"]["list"].as_array().expect("variables");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no {name} variable"))
    };
    assert_eq!(var("DS_PROMETHEUS")["type"], "datasource");
    assert_eq!(var("DS_PROMETHEUS")["query"], "prometheus");
    assert_eq!(
        var("instance")["query"]["query"],
        "label_values(switchboard_build_info, instance)"
    );
    for (name, label) in [("channel", "channel)"), ("destination", "destination)")] {
        let v = var(name);
        assert_eq!(v["type"], "query");
        let q = v["query"]["query"].as_str().expect("query");
        assert!(
            q.starts_with("label_values(switchboard_") && q.ends_with(label),
            "{name}: {q}"
        );
    }
    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "duplicate id {p}"
        );
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().expect("title");
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            let expr = t["expr"].as_str().expect("expr");
            assert!(
                expr.contains("switchboard_") || expr.contains("process_"),
                "{title}: {t}"
            );
            // Two engines never merge into one line: every query keeps the instance.
            assert!(expr.contains("instance=~\"$instance\""), "{title}: {expr}");
            if expr.contains("by (") {
                assert!(expr.contains("by (instance"), "{title}: {expr}");
            }
        }
    }
    assert!(panels.len() >= 20, "{} panels", panels.len());
}

/// Sends traffic that touches every labelled family, then compares `/metrics` with
/// `exported_names()` in both directions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_names_are_exactly_what_a_running_engine_serves() {
    let sink = HttpSink::start(SinkMode::RejectBad).await;
    let channel = format!(
        "[[route]]\nto = [\"hook\"]\npayload = \"hl7\"\n[[destination]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{}\"\n{FAST_RETRY}",
        sink.url
    );
    let cfg = TestConfig::new("", &channel);
    // An SFTP channel whose server is down, so that the SFTP families are served too.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    std::fs::write(cfg.root.path().join("sftp-password"), "unused\n").expect("write");
    std::fs::write(
        cfg.conf().join("channels/drop.toml"),
        format!(
            "name = \"drop\"\n[source]\ntype = \"sftp\"\nfolder = \"/in\"\narchive_folder = \"/done\"\nerror_folder = \"/error\"\npoll_interval_secs = 1\n[source.server]\nhost = \"127.0.0.1\"\nport = {closed_port}\nusername = \"switchboard\"\npassword = {{ file = \"{}\" }}\nhost_key = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ\"\n",
            cfg.root.path().join("sftp-password").display()
        ),
    )
    .expect("write channel");
    // A Latrexa bookings channel (its peers unreachable): its families are served from start.
    let key = cfg.root.path().join("latrexa.key");
    std::fs::write(&key, "k").expect("key");
    std::fs::write(
        cfg.conf().join("channels/bookings.toml"),
        format!("name = \"bookings\"\n[source]\ntype = \"latrexa\"\nbase_url = \"http://127.0.0.1:9\"\napi_key = {{ file = \"{}\" }}\norganization_code = \"o\"\n[source.his]\naddress = \"127.0.0.1:9\"\n", key.display()),
    )
    .expect("channel");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let url = format!("{}/metrics", engine.admin());
    // Before any traffic: every family is there already, its configured series at 0, so a
    // fresh engine's dashboard shows 0 rather than "No data".
    let fresh = reqwest::get(&url)
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let not_yet: Vec<_> = exported()
        .difference(&families(&fresh))
        .filter(|n| !engine::metrics::CONDITIONAL.contains(&n.as_str()))
        .filter(|n| !engine::metrics::FIRST_EVENT.contains(&n.as_str()))
        .cloned()
        .collect();
    assert!(
        not_yet.is_empty(),
        "a fresh engine does not serve {not_yet:?}\n{fresh}"
    );
    for zero in [
        "switchboard_messages_rejected_total{channel=\"lab\",reason=\"data_type\"} 0",
        "switchboard_acks_sent_total{channel=\"lab\",code=\"AE\"} 0",
        "switchboard_dead_letters_total{channel=\"lab\",destination=\"hook\"} 0",
        "switchboard_dead_letters_outstanding{channel=\"lab\",destination=\"hook\"} 0",
        "switchboard_deliveries_total{channel=\"lab\",destination=\"hook\",outcome=\"dead_letter\"} 0",
    ] {
        assert!(
            fresh.lines().any(|l| l == zero),
            "a fresh engine does not serve `{zero}`\n{fresh}"
        );
    }
    // The console names where every source takes messages from, pollers included.
    let channels = get_json(&format!("{}/api/channels", engine.admin())).await;
    let endpoint = |name: &str| {
        channels["channels"]
            .as_array()
            .expect("channels")
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["endpoint"].as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|| panic!("no channel {name}: {channels}"))
    };
    assert_eq!(
        endpoint("drop"),
        format!("sftp://switchboard@127.0.0.1:{closed_port}/in")
    );
    assert_eq!(endpoint("bookings"), "http://127.0.0.1:9");
    assert_eq!(endpoint("lab"), engine.mllp("lab"));
    let mut client = connect(&engine.mllp("lab")).await;
    for i in 0..3 {
        let ack = send(&mut client, adt(&format!("OPS-{i}")).as_bytes()).await;
        assert_eq!(segment(&ack, "MSA")[1], "AA", "{ack}");
    }
    // A resend of OPS-0: answered from the store.
    send(&mut client, adt("OPS-0").as_bytes()).await;
    // Unsupported processing id: a NAK.
    let nak = send(
        &mut client,
        b"MSH|^~\\&|HIS|MAIN|SB|HUB|2025||ADT^A04|OPS-NAK|X|2.5\r",
    )
    .await;
    assert_eq!(segment(&nak, "MSA")[1], "AR", "{nak}");
    // The sink answers 400 to this one: a dead letter.
    let bad = adt("OPS-BAD").replace("Testperson", "BAD");
    send(&mut client, bad.as_bytes()).await;
    drop(client);

    let expect = [
        "switchboard_duplicates_total{channel=\"lab\"} 1",
        "switchboard_messages_rejected_total{channel=\"lab\",reason=\"unsupported_processing_id\"} 1",
        "switchboard_deliveries_total{channel=\"lab\",destination=\"hook\",outcome=\"delivered\"} 3",
        "switchboard_dead_letters_total{channel=\"lab\",destination=\"hook\"} 1",
        "switchboard_dead_letters_outstanding{channel=\"lab\",destination=\"hook\"} 1",
        "switchboard_mllp_connections_closed_total{channel=\"lab\"} 1",
        "switchboard_sftp_files_picked_total{channel=\"drop\"} 0",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = reqwest::get(&url)
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let missing: Vec<_> = expect
            .iter()
            .filter(|e| !text.lines().any(|l| l == **e))
            .collect();
        if missing.is_empty() {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the traffic did not show within 30 s: {missing:?}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let served = families(&text);
    let exported = exported();
    // Families behind a feature this config does not use (TLS) are checked where it is used.
    let missing: Vec<_> = exported
        .difference(&served)
        .filter(|n| !engine::metrics::CONDITIONAL.contains(&n.as_str()))
        .collect();
    let unlisted: Vec<_> = served.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "exported_names() lists families /metrics does not serve: {missing:?}"
    );
    assert!(
        unlisted.is_empty(),
        "/metrics serves families exported_names() does not list: {unlisted:?}"
    );
    // Discarding the dead letter brings the outstanding gauge back to 0 (re-read from the
    // store within DEAD_LETTERS_REFRESH_SECS), so an alert on it stops.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/dead-letters/discard", engine.admin()))
        .header("X-Switchboard-User", "ops-test")
        .json(&serde_json::json!({"all": true}))
        .send()
        .await
        .expect("discard");
    assert_eq!(resp.status(), 200);
    let settled = "switchboard_dead_letters_outstanding{channel=\"lab\",destination=\"hook\"} 0";
    let deadline =
        Instant::now() + Duration::from_secs(engine::metrics::DEAD_LETTERS_REFRESH_SECS + 10);
    loop {
        let now = reqwest::get(&url)
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        if now.lines().any(|l| l == settled) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the outstanding dead letters did not return to 0 after the discard\n{now}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let free = text
        .lines()
        .find_map(|l| l.strip_prefix("switchboard_store_disk_available_bytes "))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("a disk available sample");
    assert!(free > 0.0, "disk available {free}");
}

/// Runs `promtool` in `dashboards/`; fails clearly when it is not installed.
fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dashboards())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): install it with `apt-get install prometheus`")
        });
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn promtool_accepts_the_rules_their_unit_tests_and_the_example_config() {
    let (ok, out) = promtool(&["check", "rules", "alerts.yml"]);
    assert!(ok, "promtool check rules alerts.yml:\n{out}");
    assert!(
        out.contains(&format!("{} rules found", ALERTS.len())),
        "{out}"
    );
    let (ok, out) = promtool(&["test", "rules", "alerts_test.yml"]);
    assert!(ok, "promtool test rules alerts_test.yml:\n{out}");
    let (ok, out) = promtool(&["check", "config", "prometheus.yml"]);
    assert!(ok, "promtool check config prometheus.yml:\n{out}");
    let rules = read("alerts.yml");
    for alert in ALERTS {
        assert!(
            rules.contains(&format!("- alert: {alert}\n")),
            "{alert} missing"
        );
    }
    let config = read("prometheus.yml");
    for part in [
        "job_name: switchboard",
        "127.0.0.1:8080",
        "metrics_path: /metrics",
        "- alerts.yml",
    ] {
        assert!(config.contains(part), "prometheus.yml lacks {part}");
    }
}

/// A Prometheus server for one test, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port, scraping `target` every second with
    /// `alerts.yml` loaded, and waits (at most 60 s) until it is ready.
    async fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(
            dashboards().join("alerts.yml"),
            dir.path().join("alerts.yml"),
        )
        .expect("copy alerts.yml");
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - alerts.yml\nscrape_configs:\n  - job_name: switchboard\n    metrics_path: /metrics\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("write prometheus.yml");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start prometheus ({e}): install it with `apt-get install prometheus`"
                )
            });
        let mut p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/-/ready", p.url)).await {
                if r.status().is_success() {
                    return p;
                }
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", p.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 60 s:\n{}",
                p.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>` with `query`, as JSON; fails on an HTTP or API error.
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> serde_json::Value {
        let resp = reqwest::Client::new()
            .get(format!("{}/api/v1/{path}", self.url))
            .query(query)
            .send()
            .await
            .expect("prometheus reachable");
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.expect("JSON");
        assert!(
            status.is_success() && body["status"] == "success",
            "{path} {query:?}: {status} {body}"
        );
        body
    }

    /// Polls `check` on `GET /api/v1/<path>` for at most 60 s; returns the last answer.
    async fn until(
        &self,
        what: &str,
        path: &str,
        query: &[(&str, &str)],
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let body = self.api(path, query).await;
            if check(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within 60 s; last answer {body}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sum of the sample values of an instant query answer.
fn sum(body: &serde_json::Value) -> f64 {
    body["data"]["result"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_scrapes_the_engine_and_evaluates_the_rules() {
    let started = Instant::now();
    let sink = HttpSink::start(SinkMode::Up).await;
    let channel = format!(
        "[[route]]\nto = [\"hook\"]\npayload = \"hl7\"\n[[destination]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{}\"\n{FAST_RETRY}",
        sink.url
    );
    let cfg = TestConfig::new("", &channel);
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let prom = Prometheus::start(&engine.info.admin.to_string()).await;
    prom.until(
        "the engine is scraped",
        "query",
        &[("query", "up{job=\"switchboard\"}")],
        |b| sum(b) == 1.0,
    )
    .await;

    const N: usize = 25;
    let mut client = connect(&engine.mllp("lab")).await;
    for i in 0..N {
        let ack = send(&mut client, adt(&format!("PROM-{i}")).as_bytes()).await;
        assert_eq!(segment(&ack, "MSA")[1], "AA", "{ack}");
    }
    prom.until(
        "Prometheus sees every message received",
        "query",
        &[(
            "query",
            "switchboard_messages_received_total{channel=\"lab\"}",
        )],
        |b| sum(b) == N as f64,
    )
    .await;
    assert!(eventually(30, || sink.received().len() == N).await);
    prom.until(
        "Prometheus sees every delivery",
        "query",
        &[(
            "query",
            "switchboard_deliveries_total{channel=\"lab\",destination=\"hook\",outcome=\"delivered\"}",
        )],
        |b| sum(b) == N as f64,
    )
    .await;

    // Every rule loaded and evaluated without error against the real series.
    let rules = prom
        .until("every alert rule evaluated", "rules", &[], |b| {
            let rules: Vec<&serde_json::Value> = b["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|g| g["name"] == "switchboard")
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            rules.len() == ALERTS.len() && rules.iter().all(|r| r["health"] == "ok")
        })
        .await;
    let loaded: BTreeSet<&str> = rules["data"]["groups"][0]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            assert_eq!(r["type"], "alerting", "{r}");
            r["name"].as_str().expect("name")
        })
        .collect();
    assert_eq!(loaded, ALERTS.iter().copied().collect());
    // A healthy engine: nothing fires or is pending (the disk alert depends on this machine).
    let alerts = prom.api("alerts", &[]).await;
    let active: Vec<&serde_json::Value> = alerts["data"]["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter(|a| a["labels"]["alertname"] != "StoreNearDiskLimit")
        .collect();
    assert!(active.is_empty(), "{active:?}");

    // Every dashboard query parses and runs, with Grafana's variables filled in.
    let dash: serde_json::Value =
        serde_json::from_str(&read("switchboard-overview.json")).expect("valid JSON");
    for expr in dashboard_exprs(&dash) {
        let q = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*")
            .replace("$channel", ".*")
            .replace("$destination", ".*");
        prom.api("query", &[("query", &q)]).await;
    }
    eprintln!(
        "real Prometheus test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
