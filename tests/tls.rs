//! TLS and transport security: the MLLP listener over mutual TLS with a client-name
//! allow-list, the MLLP sender over TLS, `switchboard send --tls-*`, the certificate-expiry
//! and handshake-failure metrics, and the peer address allow-list. Certificates are made
//! here with rcgen.

use crate::support::*;
use channels::mllp::client::MllpClient;
use channels::tls::{ClientTls, ClientTlsConfig, PemSource, ServerTlsConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A test CA that signs leaves into files.
pub(crate) struct Ca {
    name: String,
    pub(crate) pem: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
}

/// Paths of a certificate and its key.
pub(crate) struct Leaf {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

impl Ca {
    pub(crate) fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed");
        let pem = dir.join(format!("{name}.pem"));
        std::fs::write(&pem, cert.pem()).expect("write CA");
        Ca {
            name: name.to_string(),
            pem,
            issuer: Issuer::new(params, key),
            dir: dir.to_path_buf(),
        }
    }

    pub(crate) fn leaf(&self, cn: &str, sans: &[&str]) -> Leaf {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        let leaf = Leaf {
            cert: self.dir.join(format!("{}-{cn}.pem", self.name)),
            key: self.dir.join(format!("{}-{cn}.key", self.name)),
        };
        std::fs::write(&leaf.cert, cert.pem()).expect("write cert");
        std::fs::write(&leaf.key, key.serialize_pem()).expect("write key");
        leaf
    }
}

fn client_tls(trust: &Ca, leaf: Option<&Leaf>) -> ClientTls {
    ClientTlsConfig {
        ca: PemSource::Path(trust.pem.clone()),
        cert: leaf.map(|l| PemSource::Path(l.cert.clone())),
        key: leaf.map(|l| PemSource::Path(l.key.clone())),
        server_name: Some("localhost".into()),
    }
    .load()
    .expect("client TLS loads")
}

/// Writes channel `lab` with `source` (the `[source]` body and subtables) and `rest`.
fn write_channel(cfg: &TestConfig, source: &str, rest: &str) {
    std::fs::write(
        cfg.conf().join("channels/lab.toml"),
        format!("name = \"lab\"\n{rest}\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n{source}"),
    )
    .expect("write channel");
}

async fn metrics(engine: &EngineProcess) -> String {
    reqwest::get(format!("{}/metrics", engine.admin()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

async fn stored(engine: &EngineProcess) -> Vec<String> {
    let list = get_json(&format!(
        "{}/api/messages?channel=lab&limit=100",
        engine.admin()
    ))
    .await;
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| m["control_id"].as_str().expect("control id").to_string())
        .collect()
}

/// Sends one message and expects no ACK: the connection (or its handshake) fails.
async fn refused(addr: &str, tls: Option<&ClientTls>, control_id: &str) -> String {
    let timeout = Duration::from_secs(10);
    let client = match tls {
        Some(t) => MllpClient::connect_tls(addr, timeout, t).await,
        None => MllpClient::connect(addr, timeout).await,
    };
    match client {
        Err(e) => e.to_string(),
        // TLS 1.3: the client finishes its half of the handshake before the server checks
        // the client certificate; the refusal arrives as an alert on the first read.
        Ok(mut c) => match c.send(adt(control_id).as_bytes()).await {
            Ok(answer) => panic!(
                "{control_id}: got an answer: {}",
                String::from_utf8_lossy(&answer)
            ),
            Err(e) => e.to_string(),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mllp_over_mutual_tls_answers_only_allowed_client_certificates() {
    let cfg = TestConfig::new("", "");
    let pki = cfg.root.path().join("pki");
    std::fs::create_dir_all(&pki).expect("mkdir");
    let server_ca = Ca::new(&pki, "server-ca");
    let client_ca = Ca::new(&pki, "client-ca");
    let rogue_ca = Ca::new(&pki, "rogue-ca");
    let server = server_ca.leaf("switchboard", &["localhost", "127.0.0.1"]);
    let analyzer = client_ca.leaf("lab-analyzer-1", &["analyzer1.lab.test"]);
    let other = client_ca.leaf("billing-app", &["billing.lab.test"]);
    let impostor = rogue_ca.leaf("lab-analyzer-1", &["analyzer1.lab.test"]);
    write_channel(
        &cfg,
        &format!(
            "[source.tls]\ncert = \"{}\"\nkey = {{ file = \"{}\" }}\nclient_ca = \"{}\"\nallowed_client_names = [\"analyzer1.lab.test\"]\n",
            server.cert.display(),
            server.key.display(),
            client_ca.pem.display()
        ),
        "",
    );
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let addr = engine.mllp("lab");

    // A client with a certificate from the client CA, named on the allow-list: AA.
    let mut good = MllpClient::connect_tls(
        &addr,
        Duration::from_secs(10),
        &client_tls(&server_ca, Some(&analyzer)),
    )
    .await
    .expect("handshake with a valid client certificate");
    let ack = send(&mut good, adt("TLS-1").as_bytes()).await;
    assert_eq!(&segment(&ack, "MSA")[1..3], ["AA", "TLS-1"], "{ack}");
    drop(good);

    // The same by hand, as an operator would: switchboard send --tls-*.
    let file = cfg.root.path().join("one.hl7");
    std::fs::write(&file, adt("TLS-CLI")).expect("write");
    let out = Command::new(binary())
        .args(["send", "--to", &addr, "--tls-ca"])
        .arg(&server_ca.pem)
        .arg("--tls-cert")
        .arg(&analyzer.cert)
        .arg("--tls-key")
        .arg(&analyzer.key)
        .args(["--tls-server-name", "localhost"])
        .arg(&file)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.ends_with("one.hl7#1 AA TLS-CLI\n"), "{stdout}");
    // Without a client certificate the CLI gets no answer and says why.
    let out = Command::new(binary())
        .args(["send", "--to", &addr, "--tls-ca"])
        .arg(&server_ca.pem)
        .args(["--tls-server-name", "localhost", "--timeout", "10"])
        .arg(&file)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("AA"),
        "{stderr}"
    );

    // Refused at the handshake: no certificate, an untrusted one, a name not on the list,
    // and plain MLLP on the TLS port.
    refused(&addr, Some(&client_tls(&server_ca, None)), "TLS-NOCERT").await;
    refused(
        &addr,
        Some(&client_tls(&server_ca, Some(&impostor))),
        "TLS-ROGUE",
    )
    .await;
    refused(
        &addr,
        Some(&client_tls(&server_ca, Some(&other))),
        "TLS-NAME",
    )
    .await;
    refused(&addr, None, "TLS-PLAIN").await;
    // A client that does not trust the listener's certificate gives up itself.
    let e = refused(
        &addr,
        Some(&client_tls(&rogue_ca, Some(&analyzer))),
        "TLS-TRUST",
    )
    .await;
    assert!(
        e.contains("TLS handshake") && e.contains("UnknownIssuer"),
        "{e}"
    );

    let mut ids = stored(&engine).await;
    ids.sort();
    assert_eq!(
        ids,
        ["TLS-1", "TLS-CLI"],
        "nothing from refused clients is stored"
    );

    let want = [
        "switchboard_tls_handshake_failures_total{channel=\"lab\",reason=\"no_certificate\"} 2",
        "switchboard_tls_handshake_failures_total{channel=\"lab\",reason=\"bad_certificate\"} 1",
        "switchboard_tls_handshake_failures_total{channel=\"lab\",reason=\"name_not_allowed\"} 1",
    ];
    let mut text = String::new();
    let ok = {
        let mut ok = false;
        for _ in 0..100 {
            text = metrics(&engine).await;
            if want.iter().all(|w| text.lines().any(|l| l == *w))
                && text.contains("reason=\"protocol\"} ")
            {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ok
    };
    assert!(ok, "{want:?}\n{text}");
    let protocol: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "switchboard_tls_handshake_failures_total{channel=\"lab\",reason=\"protocol\"} ",
            )
        })
        .and_then(|v| v.parse().ok())
        .expect("protocol series");
    assert!(
        protocol >= 1,
        "the plain client and the untrusting one: {text}"
    );
    // rcgen's default validity ends in 4096; the gauge holds that notAfter.
    for role in ["server", "client_ca"] {
        let prefix = format!(
            "switchboard_tls_cert_expiry_timestamp_seconds{{channel=\"lab\",endpoint=\"source\",role=\"{role}\"}} "
        );
        let v: i64 = text
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix}: {text}"));
        assert!(v > 4_000_000_000, "{role}: {v}");
    }
}

/// A TLS MLLP peer that requires a client certificate from `client_ca` and answers AA;
/// returns its address and the control ids it received.
async fn tls_mllp_peer(server: &Leaf, client_ca: &Ca) -> (String, Arc<Mutex<Vec<String>>>) {
    use futures::{SinkExt, StreamExt};
    let tls = ServerTlsConfig {
        cert: PemSource::Path(server.cert.clone()),
        key: PemSource::Path(server.key.clone()),
        client_ca: Some(PemSource::Path(client_ca.pem.clone())),
        allowed_client_names: vec![],
        handshake_timeout_secs: 10,
    }
    .load()
    .expect("peer TLS loads");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let seen: Arc<Mutex<Vec<String>>> = Default::default();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        let failures = channels::tls::HandshakeFailures::unregistered();
        loop {
            let Ok((s, peer)) = listener.accept().await else {
                return;
            };
            let Ok(s) = tls.accept(s, peer, "peer", &failures).await else {
                continue;
            };
            let seen = seen2.clone();
            tokio::spawn(async move {
                let mut framed =
                    tokio_util::codec::Framed::new(s, channels::mllp::MllpCodec::new(1024 * 1024));
                while let Some(Ok(channels::mllp::MllpFrame::Message(m))) = framed.next().await {
                    let text = String::from_utf8_lossy(&m).to_string();
                    let ctrl = segment(&text, "MSH")[9].clone();
                    seen.lock().expect("lock").push(ctrl.clone());
                    let ack = format!(
                        "MSH|^~\\&|PEER|X|SB|HUB|2025||ACK^A08^ACK|P{ctrl}|P|2.5.1\rMSA|AA|{ctrl}\r"
                    );
                    if framed.send(ack.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mllp_sender_delivers_over_tls_and_retries_an_untrusted_peer() {
    let root = tempfile::tempdir().expect("tempdir");
    let peer_ca = Ca::new(root.path(), "peer-ca");
    let other_ca = Ca::new(root.path(), "other-ca");
    let client_ca = Ca::new(root.path(), "sb-client-ca");
    let peer_cert = peer_ca.leaf("his", &["localhost", "127.0.0.1"]);
    let sb_cert = client_ca.leaf("switchboard-out", &["switchboard.lab.test"]);
    let (addr, seen) = tls_mllp_peer(&peer_cert, &client_ca).await;

    let dest = |name: &str, ca: &Path| {
        format!(
            "[[destination]]\nname = \"{name}\"\ntype = \"mllp\"\naddress = \"{addr}\"\nack_timeout_secs = 5\n[destination.tls]\nca = \"{}\"\ncert = \"{}\"\nkey = {{ file = \"{}\" }}\n{FAST_RETRY}",
            ca.display(),
            sb_cert.cert.display(),
            sb_cert.key.display()
        )
    };
    let channel = format!(
        "[[route]]\nto = [\"his\", \"wrong-ca\"]\n{}{}",
        dest("his", &peer_ca.pem),
        dest("wrong-ca", &other_ca.pem)
    );
    let cfg = TestConfig::new("", &channel);
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("lab")).await;
    let ack = send(&mut client, adt_for("P1", "OUT-1").as_bytes()).await;
    assert_eq!(segment(&ack, "MSA")[1], "AA", "{ack}");

    assert!(
        eventually(20, || seen
            .lock()
            .expect("lock")
            .contains(&"OUT-1".to_string()))
        .await,
        "the TLS peer received the message"
    );
    let url = format!("{}/api/messages?control_id=OUT-1", engine.admin());
    let mut detail = serde_json::Value::Null;
    for _ in 0..200 {
        let list = get_json(&url).await;
        let id = list["items"][0]["id"].as_str().expect("stored").to_string();
        detail = get_json(&format!("{}/api/messages/{id}", engine.admin())).await;
        let attempts = detail["attempts"].as_array().cloned().unwrap_or_default();
        let of = |d: &str| {
            attempts
                .iter()
                .filter(|a| a["destination"] == format!("lab/{d}"))
                .cloned()
                .collect::<Vec<_>>()
        };
        if of("his").iter().any(|a| a["outcome"] == "delivered") && of("wrong-ca").len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let attempts = detail["attempts"].as_array().expect("attempts");
    let wrong: Vec<_> = attempts
        .iter()
        .filter(|a| a["destination"] == "lab/wrong-ca")
        .collect();
    assert!(wrong.len() >= 2, "retried: {detail}");
    for a in &wrong {
        assert_eq!(a["outcome"], "retry", "{a}");
        let reason = a["detail"].as_str().expect("detail");
        assert!(
            reason.contains("TLS handshake with") && reason.contains("UnknownIssuer"),
            "a clear reason: {reason}"
        );
    }
    assert!(
        attempts
            .iter()
            .any(|a| a["destination"] == "lab/his" && a["outcome"] == "delivered"),
        "{detail}"
    );
    assert_eq!(
        seen.lock().expect("lock").as_slice(),
        ["OUT-1"],
        "only the trusting destination got through"
    );
    let text = metrics(&engine).await;
    for (endpoint, role) in [("his", "ca"), ("his", "client"), ("wrong-ca", "ca")] {
        assert!(
            text.contains(&format!(
                "switchboard_tls_cert_expiry_timestamp_seconds{{channel=\"lab\",endpoint=\"{endpoint}\",role=\"{role}\"}}"
            )),
            "{endpoint}/{role}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_outside_the_allow_list_are_refused_and_counted() {
    let cfg = TestConfig::new("", "");
    write_channel(
        &cfg,
        "allowed_peers = [\"10.0.0.0/8\", \"192.0.2.7\"]\n",
        "",
    );
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let addr = engine.mllp("lab");
    refused(&addr, None, "PEER-1").await;
    assert!(stored(&engine).await.is_empty());
    let line = "switchboard_mllp_connections_refused_total{channel=\"lab\"} 1";
    let mut text = String::new();
    for _ in 0..100 {
        text = metrics(&engine).await;
        if text.lines().any(|l| l == line) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(text.lines().any(|l| l == line), "{text}");
    drop(engine);

    // 127.0.0.0/8 lets the loopback client in.
    let cfg = TestConfig::new("", "");
    write_channel(&cfg, "allowed_peers = [\"127.0.0.0/8\"]\n", "");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("lab")).await;
    let ack = send(&mut client, adt("PEER-2").as_bytes()).await;
    assert_eq!(segment(&ack, "MSA")[1], "AA", "{ack}");
}

#[test]
fn check_names_the_tls_key_that_is_wrong() {
    let cfg = TestConfig::new("", "");
    let pki = cfg.root.path().join("pki");
    std::fs::create_dir_all(&pki).expect("mkdir");
    let ca = Ca::new(&pki, "ca");
    let a = ca.leaf("a", &["localhost"]);
    let b = ca.leaf("b", &["localhost"]);
    let garbage = pki.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    write_channel(
        &cfg,
        &format!(
            "[source.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
            a.cert.display(),
            b.key.display(),
            garbage.display()
        ),
        &format!(
            "[[route]]\nto = [\"out\"]\n[[destination]]\nname = \"out\"\ntype = \"mllp\"\naddress = \"127.0.0.1:1\"\n[destination.tls]\nca = \"{}\"\n",
            pki.join("missing-ca.pem").display()
        ),
    );
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(cfg.conf())
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for want in [
        "lab.toml: source.tls.key: the private key does not belong to the certificate",
        "lab.toml: source.tls.client_ca: ",
        "lab.toml: destination[0].tls.ca: cannot read PEM file",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in {stdout}");
    }
    assert!(stdout.contains("missing-ca.pem"), "{stdout}");
    assert!(!stdout.contains("PRIVATE KEY"), "no key material: {stdout}");
}

/// Writes, under `dir/tls/`, the certificate files `conf/examples/mllp-tls.toml` names, so
/// that `switchboard check` run in `dir` can load that example.
pub fn write_example_pki(dir: &Path) {
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).expect("mkdir");
    let ours = Ca::new(&tls, "ours");
    let clients = Ca::new(&tls, "lab-clients");
    let his = Ca::new(&tls, "his");
    let copy = |from: &Path, to: &str| {
        std::fs::copy(from, tls.join(to)).expect("copy");
    };
    let server = ours.leaf("switchboard", &["switchboard.example.org"]);
    copy(&server.cert, "switchboard.pem");
    copy(&server.key, "switchboard.key");
    let client = ours.leaf("switchboard-client", &["switchboard.example.org"]);
    copy(&client.cert, "switchboard-client.pem");
    copy(&client.key, "switchboard-client.key");
    copy(&clients.pem, "lab-clients-ca.pem");
    copy(&his.pem, "his-ca.pem");
}

/// The HTTP sources speak TLS with the same `[source.tls]` table: a client trusting the
/// server's CA creates a Patient over HTTPS; plain HTTP to the same port gets no answer.
#[tokio::test]
async fn fhir_rest_source_over_tls_accepts_https_and_refuses_plain_http() {
    let cfg = TestConfig::new("", "");
    let pki = cfg.root.path().join("pki");
    std::fs::create_dir_all(&pki).expect("mkdir");
    let server_ca = Ca::new(&pki, "server-ca");
    let server = server_ca.leaf("switchboard", &["localhost", "127.0.0.1"]);
    std::fs::write(
        cfg.conf().join("channels/fhir.toml"),
        format!(
            "name = \"fhir\"\n[source]\ntype = \"fhir_rest\"\nlisten = \"127.0.0.1:0\"\n[source.tls]\ncert = \"{}\"\nkey = {{ file = \"{}\" }}\n",
            server.cert.display(),
            server.key.display()
        ),
    )
    .expect("write channel");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let port = engine.info.channels["fhir"].port();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&server_ca.pem).expect("CA"))
        .expect("CA PEM");
    let https = reqwest::Client::builder()
        .add_root_certificate(ca)
        .tls_built_in_root_certs(false)
        .build()
        .expect("client");
    let patient = include_str!("../fixtures/fhir/patient/full.input.json");
    let resp = https
        .post(format!("https://localhost:{port}/Patient"))
        .header("content-type", "application/fhir+json")
        .body(patient)
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
    let list = get_json(&format!(
        "{}/api/messages?channel=fhir&limit=10",
        engine.admin()
    ))
    .await;
    assert_eq!(list["count"], 1, "{list}");

    let plain = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/Patient"))
        .header("content-type", "application/fhir+json")
        .body(patient)
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP must not be answered: {plain:?}");
    // Counted once the refused connection is closed: poll for it.
    let counted =
        "switchboard_tls_handshake_failures_total{channel=\"fhir\",reason=\"protocol\"} 1";
    let mut m = String::new();
    for _ in 0..100 {
        m = metrics(&engine).await;
        if m.lines().any(|l| l == counted) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(m.lines().any(|l| l == counted), "{m}");
    let list = get_json(&format!(
        "{}/api/messages?channel=fhir&limit=10",
        engine.admin()
    ))
    .await;
    assert_eq!(list["count"], 1, "nothing stored from plain HTTP: {list}");
}

/// A TLS channel added by a reload gets its certificate expiry (so its alert can fire); a
/// channel removed by a reload loses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_expiry_follows_reloads() {
    let cfg = TestConfig::new("", "");
    write_channel(&cfg, "", "");
    let pki = cfg.root.path().join("pki");
    std::fs::create_dir_all(&pki).expect("mkdir");
    let ca = Ca::new(&pki, "server-ca");
    let server = ca.leaf("switchboard", &["localhost", "127.0.0.1"]);
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let series = "switchboard_tls_cert_expiry_timestamp_seconds{channel=\"secure\",endpoint=\"source\",role=\"server\"} ";
    assert!(!metrics(&engine).await.contains(series));

    let secure = cfg.conf().join("channels/secure.toml");
    std::fs::write(
        &secure,
        format!(
            "name = \"secure\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n[source.tls]\ncert = \"{}\"\nkey = {{ file = \"{}\" }}\n",
            server.cert.display(),
            server.key.display()
        ),
    )
    .expect("write channel");
    let reload = |admin: String| async move {
        let resp = reqwest::Client::new()
            .post(format!("{admin}/api/reload"))
            .send()
            .await
            .expect("admin API reachable");
        assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    };
    reload(engine.admin()).await;
    let text = metrics(&engine).await;
    let v: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no expiry for the channel added by the reload: {text}"));
    assert!(
        v > 4_000_000_000,
        "rcgen's default notAfter is in 4096: {v}"
    );

    std::fs::remove_file(&secure).expect("remove channel");
    reload(engine.admin()).await;
    let text = metrics(&engine).await;
    assert!(
        !text.contains(series),
        "the removed channel's expiry is still served: {text}"
    );
}
