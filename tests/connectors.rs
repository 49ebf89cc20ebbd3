//! Cloud clinic connectors end to end: the real engine delivering to the in-repo sandbox
//! (OpsPort, Buktor, PX360, Latrexa) on 127.0.0.1, asserted through the sandbox's GET state.

use crate::support::*;
use serde_json::Value;
use switchboard_sandbox::{start, RunningSandbox, SandboxConfig};
use tokio_util::sync::CancellationToken;

pub(crate) struct Sandbox {
    running: Option<RunningSandbox>,
    stop: CancellationToken,
}

impl Sandbox {
    pub(crate) async fn start(cfg: SandboxConfig) -> Sandbox {
        let stop = CancellationToken::new();
        let running = start(cfg, stop.clone()).await.expect("sandbox starts");
        Sandbox {
            running: Some(running),
            stop,
        }
    }

    pub(crate) fn base(&self, vendor: &str) -> String {
        self.running.as_ref().expect("running").base_url(vendor)
    }

    pub(crate) async fn requests(&self, vendor: &str) -> Vec<Value> {
        get_json(&format!("{}/_requests", self.base(vendor)))
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) async fn stop(mut self) {
        self.stop.cancel();
        if let Some(r) = self.running.take() {
            r.stopped().await;
        }
    }
}

/// A secret file in the test's temp folder, as `{ file = ... }`.
pub(crate) fn secret(cfg: &TestConfig, name: &str, value: &str) -> String {
    let path = cfg.root.path().join(name);
    std::fs::write(&path, value).expect("write secret");
    format!("{{ file = \"{}\" }}", path.display())
}

fn fixture(path: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../fixtures/hl7v2/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
    .replace("\r\n", "\r")
    .replace('\n', "\r")
}

/// Polls `url` until `check` holds on its JSON (at most `secs`); returns the last document.
pub(crate) async fn until(secs: u64, url: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let v = get_json(url).await;
        if check(&v) || std::time::Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

pub(crate) async fn dead_letters(engine: &EngineProcess, n: usize, secs: u64) -> Vec<Value> {
    let v = until(secs, &format!("{}/api/dead-letters", engine.admin()), |v| {
        v["count"].as_u64().unwrap_or(0) as usize >= n
    })
    .await;
    v["items"].as_array().cloned().unwrap_or_default()
}

fn len(v: &Value) -> usize {
    v.as_array().map(Vec::len).unwrap_or(0)
}

/// Writes a Buktor mapping for the event types the tests send.
fn buktor_sandbox() -> SandboxConfig {
    let mapping = serde_json::json!({"clients": {"1001": {"mappings": {
        "appointment.created": {"fields": {"his_appointment_id": "buktor_appointment_id"}},
        "payment.successful": {"fields": {"his_payment_id": "buktor_payment_id", "his_amount": "buktor_amount"}}
    }}}});
    SandboxConfig {
        buktor_mapping: Some(serde_json::from_value(mapping).expect("mapping")),
        px360_hospitals: vec!["RUH".into(), "ALH-main".into()],
        ..SandboxConfig::for_tests()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opsport_one_patient_updated_and_appointment_after_its_clinic_and_doctor() {
    let sb = Sandbox::start(SandboxConfig::for_tests()).await;
    let cfg = TestConfig::new("", "");
    let key = secret(&cfg, "opsport-key", "sandbox-opsport-key");
    let channel = format!(
        "[[route]]\nto = [\"ops\"]\n[[destination]]\nname = \"ops\"\ntype = \"opsport\"\nbase_url = \"{}\"\napi_key = {key}\n{FAST_RETRY}",
        sb.base("opsport")
    );
    std::fs::write(
        cfg.conf().join("channels/lab.toml"),
        format!("name = \"lab\"\n{channel}\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n"),
    )
    .expect("write channel");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let traffic =
        switchboard_sandbox::traffic::generate(&switchboard_sandbox::traffic::TrafficConfig::new(
            1,
            7,
            chrono::DateTime::parse_from_rfc3339("2026-06-01T08:00:00Z")
                .expect("time")
                .with_timezone(&chrono::Utc),
        ));
    let (a04, s12, a08) = (&traffic[0], &traffic[1], &traffic[2]);
    let mut client = connect(&engine.mllp("lab")).await;
    for m in [a04, a08, s12] {
        let ack = send(&mut client, m.as_bytes()).await;
        assert!(
            matches!(segment(&ack, "MSA")[1].as_str(), "AA" | "CA"),
            "{ack}"
        );
    }
    let state = until(30, &format!("{}/_state", sb.base("opsport")), |s| {
        len(&s["appointments"]) == 1
    })
    .await;
    assert_eq!(len(&state["patients"]), 1, "one patient, not two: {state}");
    assert_eq!(len(&state["appointments"]), 1, "{state}");
    assert_eq!(len(&state["clinics"]), 1, "{state}");
    assert_eq!(len(&state["doctors"]), 1, "{state}");
    let pid = segment(a04, "PID")[3]
        .split('^')
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(state["patients"][0]["patientNo"], pid.as_str());
    let appt = &state["appointments"][0];
    assert_eq!(appt["patientNo"], pid.as_str());
    assert_eq!(appt["doctorCode"], state["doctors"][0]["code"], "{state}");
    assert_eq!(appt["clinicCode"], state["clinics"][0]["code"], "{state}");
    let aip = segment(s12, "AIP")[3]
        .split('^')
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(appt["doctorCode"], aip.as_str());
    // Order on the wire: the patient twice (A04 created, A08 updated), then clinic and doctor
    // before the appointment that names them.
    let paths: Vec<String> = sb
        .requests("opsport")
        .await
        .iter()
        .filter(|r| r["method"] == "POST")
        .map(|r| {
            format!(
                "{} {}",
                r["path"].as_str().unwrap_or(""),
                r["response"]["action"].as_str().unwrap_or("")
            )
        })
        .collect();
    let pos = |p: &str| {
        paths
            .iter()
            .position(|x| x.starts_with(p))
            .unwrap_or(usize::MAX)
    };
    assert!(
        paths.iter().any(|p| p == "/api/healthcare/patient updated"),
        "{paths:?}"
    );
    assert!(
        pos("/api/healthcare/clinic") < pos("/api/healthcare/appointment"),
        "{paths:?}"
    );
    assert!(
        pos("/api/healthcare/doctor") < pos("/api/healthcare/appointment"),
        "{paths:?}"
    );
    engine.terminate();
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opsport_bulk_burst_with_partial_failure_loses_and_duplicates_nothing() {
    let sb = Sandbox::start(SandboxConfig::for_tests()).await;
    let cfg = TestConfig::new("", "");
    let key = secret(&cfg, "opsport-key", "sandbox-opsport-key");
    // Patients whose number starts with BAD lose their lookup keys through a route mapping,
    // so OpsPort refuses those items inside an otherwise good bulk request.
    let channel = format!(
        "[[route]]\nwhen = {{ field = [{{ path = \"PID.3.1\", regex = \"^BAD\" }}] }}\nto = [\"ops\"]\n[route.mapping]\ndrop = [\"patientNo\"]\n\
         [[route]]\nwhen = {{ field = [{{ path = \"PID.3.1\", regex = \"^BAD\", not = true }}] }}\nto = [\"ops\"]\n\
         [[destination]]\nname = \"ops\"\ntype = \"opsport\"\nbase_url = \"{}\"\napi_key = {key}\nbulk = {{ size = 10, linger_ms = 1500 }}\n{FAST_RETRY}",
        sb.base("opsport")
    );
    std::fs::write(
        cfg.conf().join("channels/lab.toml"),
        format!("name = \"lab\"\n{channel}\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n"),
    )
    .expect("write channel");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("lab")).await;
    let mut good = Vec::new();
    for i in 0..24 {
        let patient = if i % 8 == 3 {
            format!("BAD{i:03}")
        } else {
            good.push(format!("OK{i:03}"));
            format!("OK{i:03}")
        };
        let ack = send(&mut client, adt_for(&patient, &format!("B-{i}")).as_bytes()).await;
        assert_eq!(segment(&ack, "MSA")[1], "AA");
    }
    let state = until(40, &format!("{}/_state", sb.base("opsport")), |s| {
        len(&s["patients"]) >= good.len()
    })
    .await;
    let mut stored: Vec<String> = state["patients"]
        .as_array()
        .expect("patients")
        .iter()
        .map(|p| p["patientNo"].as_str().unwrap_or_default().to_string())
        .collect();
    stored.sort();
    assert_eq!(stored, good, "every good patient exactly once");
    let dead = dead_letters(&engine, 3, 30).await;
    assert_eq!(dead.len(), 3, "{dead:?}");
    for d in &dead {
        let reason = d.to_string();
        assert!(
            reason.contains("item") && reason.contains("required"),
            "{reason}"
        );
    }
    let posts: Vec<Value> = sb
        .requests("opsport")
        .await
        .into_iter()
        .filter(|r| r["method"] == "POST")
        .collect();
    let bulk_items: usize = posts
        .iter()
        .filter(|r| r["path"] == "/api/healthcare/patients")
        .map(|r| len(&r["body"]))
        .sum();
    let singles = posts
        .iter()
        .filter(|r| r["path"] == "/api/healthcare/patient")
        .count();
    assert_eq!(bulk_items + singles, 24, "each item sent once: {posts:?}");
    assert!(
        posts.len() <= 12 && bulk_items >= 12,
        "a burst goes in bulk calls: {} calls, {bulk_items} items in bulk",
        posts.len()
    );
    assert!(
        posts
            .iter()
            .any(|r| r["status"] == 400 && r["path"] == "/api/healthcare/patients"),
        "a partial failure happened"
    );
    // Nothing left behind, nothing retried.
    let after = until(
        10,
        &format!("{}/api/messages?control_id=B-0", engine.admin()),
        |_| true,
    )
    .await;
    assert_eq!(after["items"][0]["status"], "delivered", "{after}");
    engine.terminate();
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buktor_payment_signed_once_and_px360_timeline_and_validation_error() {
    let sb = Sandbox::start(buktor_sandbox()).await;
    let cfg = TestConfig::new("", "");
    let token = secret(&cfg, "buktor-token", "sandbox-buktor-token");
    let signing = secret(&cfg, "buktor-secret", "sandbox-buktor-secret");
    let channel = format!(
        "[[route]]\nwhen = {{ message_type = [\"DFT^*\"] }}\nto = [\"buk\"]\n\
         [[route]]\nwhen = {{ message_type = [\"ADT^*\"], field = [{{ path = \"MSH.10\", equals = \"BAD-A03\" }}] }}\nto = [\"px\"]\n[route.mapping]\nconstant = {{ Code = \"two hundred\" }}\n\
         [[route]]\nwhen = {{ message_type = [\"ADT^*\"] }}\nto = [\"px\"]\n\
         [[destination]]\nname = \"buk\"\ntype = \"buktor\"\nbase_url = \"{}\"\nbearer_token = {token}\nsigning_secret = {signing}\n{FAST_RETRY}\
         [[destination]]\nname = \"px\"\ntype = \"px360\"\nbase_url = \"{}\"\n{FAST_RETRY}",
        sb.base("buktor"),
        sb.base("px360")
    );
    std::fs::write(
        cfg.conf().join("channels/lab.toml"),
        format!("name = \"lab\"\n{channel}\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n"),
    )
    .expect("write channel");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("lab")).await;
    let dft = fixture("dft_p03/full.hl7");
    for _ in 0..2 {
        let ack = send(&mut client, dft.as_bytes()).await;
        assert!(
            matches!(segment(&ack, "MSA")[1].as_str(), "AA" | "CA"),
            "{ack}"
        );
    }
    let a03 = fixture("adt_a03/full.hl7");
    let ack = send(&mut client, a03.as_bytes()).await;
    assert!(
        matches!(segment(&ack, "MSA")[1].as_str(), "AA" | "CA"),
        "{ack}"
    );
    let bad = a03.replace("|FULL-A03|", "|BAD-A03|");
    let ack = send(&mut client, bad.as_bytes()).await;
    assert!(
        matches!(segment(&ack, "MSA")[1].as_str(), "AA" | "CA"),
        "{ack}"
    );

    // Buktor: one payment.successful, signature verified (stored), the resend a duplicate.
    let state = until(30, &format!("{}/_state", sb.base("buktor")), |s| {
        len(&s["events"]) >= 1
    })
    .await;
    let payments: Vec<&Value> = state["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "payment.successful")
        .collect();
    assert_eq!(payments.len(), 1, "{state}");
    assert_eq!(payments[0]["mapped"]["buktor_amount"], "390.50", "{state}");
    let statuses = state["responses_by_status"].to_string();
    assert!(
        !statuses.contains("403") && !statuses.contains("401"),
        "{statuses}"
    );

    // PX360: the journey with the visit timeline, and the invalid one in the dead letters.
    let px = until(30, &format!("{}/_state", sb.base("px360")), |s| {
        len(&s["journeys"]) >= 1
    })
    .await;
    assert_eq!(len(&px["patients"]), 1, "{px}");
    assert!(px["patients"][0].to_string().contains("MRN-200417"), "{px}");
    let journey = px["journeys"][0].to_string();
    assert!(
        journey.contains("MD Consultation") && journey.contains("Pharmacy"),
        "{journey}"
    );
    let dead = dead_letters(&engine, 1, 30).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = dead[0].to_string();
    assert!(
        reason.contains("Invalid HIS data format")
            && reason.contains("A valid integer is required"),
        "{reason}"
    );
    assert!(
        !reason.contains("Khalid"),
        "no patient data in the reason: {reason}"
    );
    engine.terminate();
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_dead_letter_at_once_without_a_retry_storm() {
    let sb = Sandbox::start(buktor_sandbox()).await;
    let cfg = TestConfig::new("", "");
    let bad_key = secret(&cfg, "opsport-key", "not-the-key");
    let token = secret(&cfg, "buktor-token", "sandbox-buktor-token");
    let bad_token = secret(&cfg, "buktor-bad-token", "not-the-token");
    let signing = secret(&cfg, "buktor-secret", "sandbox-buktor-secret");
    let bad_signing = secret(&cfg, "buktor-bad-secret", "not-the-secret");
    let lx_key = secret(&cfg, "latrexa-bad-key", "not-the-latrexa-key");
    let retry = "[destination.delivery]\nbackoff_base_ms = 50\nbackoff_max_ms = 200\n";
    let channel = format!(
        "[[route]]\nwhen = {{ message_type = [\"ADT^*\"] }}\nto = [\"ops\"]\n\
         [[route]]\nwhen = {{ message_type = [\"DFT^*\"] }}\nto = [\"buk-token\", \"buk-sig\"]\n\
         [[route]]\nwhen = {{ message_type = [\"SIU^*\"] }}\nto = [\"lx\"]\n\
         [[destination]]\nname = \"ops\"\ntype = \"opsport\"\nbase_url = \"{ops}\"\napi_key = {bad_key}\n{retry}\
         [[destination]]\nname = \"buk-token\"\ntype = \"buktor\"\nbase_url = \"{buk}\"\nbearer_token = {bad_token}\nsigning_secret = {signing}\n{retry}\
         [[destination]]\nname = \"buk-sig\"\ntype = \"buktor\"\nbase_url = \"{buk}\"\nbearer_token = {token}\nsigning_secret = {bad_signing}\n{retry}\
         [[destination]]\nname = \"lx\"\ntype = \"latrexa\"\nbase_url = \"{lx}\"\napi_key = {lx_key}\norganization_code = \"sandbox-clinic\"\n{retry}",
        ops = sb.base("opsport"),
        buk = sb.base("buktor"),
        lx = sb.base("latrexa"),
    );
    std::fs::write(
        cfg.conf().join("channels/lab.toml"),
        format!("name = \"lab\"\n{channel}\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n"),
    )
    .expect("write channel");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("lab")).await;
    let traffic =
        switchboard_sandbox::traffic::generate(&switchboard_sandbox::traffic::TrafficConfig::new(
            1,
            11,
            chrono::DateTime::parse_from_rfc3339("2026-06-01T08:00:00Z")
                .expect("time")
                .with_timezone(&chrono::Utc),
        ));
    for m in [
        traffic[0].clone(),
        fixture("dft_p03/full.hl7"),
        traffic[1].clone(),
    ] {
        let ack = send(&mut client, m.as_bytes()).await;
        assert!(
            matches!(segment(&ack, "MSA")[1].as_str(), "AA" | "CA"),
            "{ack}"
        );
    }
    let dead = dead_letters(&engine, 4, 30).await;
    assert_eq!(dead.len(), 4, "{dead:?}");
    let text = serde_json::to_string(&dead).expect("json");
    for expect in [
        "Invalid or missing API key.",
        "Unauthorized",
        "Invalid signature.",
        "Missing or invalid API key or organization code.",
    ] {
        assert!(text.contains(expect), "{expect} in {text}");
    }
    // Give a retry storm the time to show, then count the requests.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        sb.requests("opsport").await.len(),
        1,
        "one attempt at OpsPort"
    );
    let buktor_posts = sb.requests("buktor").await.len();
    assert_eq!(buktor_posts, 2, "one attempt per Buktor destination");
    let lx_posts = sb
        .requests("latrexa")
        .await
        .iter()
        .filter(|r| r["path"] == "/api/integration/appointments/upload")
        .count();
    assert_eq!(lx_posts, 1, "one attempt at Latrexa");
    engine.terminate();
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn his_siu_is_uploaded_to_latrexa_and_a_mapping_failure_is_a_dead_letter() {
    let sb = Sandbox::start(SandboxConfig::for_tests()).await;
    let cfg = TestConfig::new("", "");
    let key = secret(&cfg, "latrexa-key", "sandbox-latrexa-key");
    let channel = format!(
        "[[route]]\nwhen = {{ message_type = [\"SIU^*\"] }}\nto = [\"lx\"]\n\
         [[destination]]\nname = \"lx\"\ntype = \"latrexa\"\nbase_url = \"{}\"\napi_key = {key}\norganization_code = \"sandbox-clinic\"\n{FAST_RETRY}",
        sb.base("latrexa")
    );
    std::fs::write(
        cfg.conf().join("channels/lab.toml"),
        format!("name = \"lab\"\n{channel}\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n"),
    )
    .expect("write channel");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("lab")).await;
    let traffic =
        switchboard_sandbox::traffic::generate(&switchboard_sandbox::traffic::TrafficConfig::new(
            1,
            5,
            chrono::DateTime::parse_from_rfc3339("2026-06-01T08:00:00Z")
                .expect("time")
                .with_timezone(&chrono::Utc),
        ));
    let s12 = &traffic[1];
    let ack = send(&mut client, s12.as_bytes()).await;
    assert!(
        matches!(segment(&ack, "MSA")[1].as_str(), "AA" | "CA"),
        "{ack}"
    );
    let state = until(30, &format!("{}/_state", sb.base("latrexa")), |s| {
        len(&s["uploads"]) >= 1
    })
    .await;
    assert_eq!(len(&state["uploads"]), 1, "{state}");
    let upload = state["uploads"][0].to_string();
    let pid = segment(s12, "PID")[3]
        .split('^')
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(upload.contains(&pid), "{upload}");

    // An SIU without any appointment start cannot be uploaded: a dead letter naming the field.
    let broken: String = s12
        .split('\r')
        .map(|seg| {
            if seg.starts_with("SCH")
                || seg.starts_with("AIS")
                || seg.starts_with("AIL")
                || seg.starts_with("AIP")
            {
                let mut f: Vec<&str> = seg.split('|').collect();
                if seg.starts_with("SCH") && f.len() > 11 {
                    f[11] = "";
                }
                if !seg.starts_with("SCH") {
                    for v in f.iter_mut().skip(4) {
                        *v = "";
                    }
                }
                f.join("|")
            } else {
                seg.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r")
        .replace(&segment(s12, "MSH")[9], "NO-START");
    let ack = send(&mut client, broken.as_bytes()).await;
    assert!(
        matches!(segment(&ack, "MSA")[1].as_str(), "AA" | "CA"),
        "{ack}"
    );
    let dead = dead_letters(&engine, 1, 30).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = dead[0].to_string();
    assert!(
        reason.contains("mapping failed") && reason.contains("appointment.start"),
        "{reason}"
    );
    let m = until(
        10,
        &format!("{}/api/messages?control_id=NO-START", engine.admin()),
        |v| v["items"][0]["status"] == "failed",
    )
    .await;
    assert_eq!(m["items"][0]["status"], "failed", "{m}");
    let cli = std::process::Command::new(binary())
        .args(["messages", "--admin", &engine.admin(), "dead-letters"])
        .output()
        .expect("cli runs");
    let out = String::from_utf8_lossy(&cli.stdout);
    assert!(
        out.contains("appointment.start"),
        "{out} {}",
        String::from_utf8_lossy(&cli.stderr)
    );
    engine.terminate();
    sb.stop().await;
}

#[test]
fn check_reports_vendor_options_and_mappings_with_file_and_key() {
    let cfg = TestConfig::new(
        "",
        "[[route]]\nto = [\"ops\"]\n[route.mapping]\nrename = { \"data.status\" = \"a.b\" }\n\
         [[destination]]\nname = \"ops\"\ntype = \"opsport\"\nbase_url = \"http://127.0.0.1:9\"\napi_key = { env = \"SWITCHBOARD_TEST_UNSET_OPSPORT\" }\n\
         [destination.options]\nstatuses = { arived = \"Arrived\" }\n\
         [[destination]]\nname = \"lx\"\ntype = \"latrexa\"\nbase_url = \"ftp://x\"\napi_key = { env = \"SWITCHBOARD_TEST_UNSET_LATREXA\" }\norganization_code = \" \"\n",
    );
    let out = std::process::Command::new(binary())
        .args(["check", "--config"])
        .arg(cfg.conf())
        .output()
        .expect("runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    for expect in [
        "lab.toml",
        "destination[0].options.statuses.arived",
        "route[0].mapping.rename",
        "destination[0].api_key",
        "destination[1].base_url",
        "destination[1].organization_code",
    ] {
        assert!(text.contains(expect), "{expect} in {text}");
    }
}
