//! A channel's `timezone`: an HL7 v2 time without a UTC offset reaches a destination payload
//! with the offset of the channel's zone on that date.

use crate::support::{connect, eventually, send, EngineProcess, TestConfig};

/// An ADT^A01 whose times (MSH-7, EVN-2, PV1-44) have no offset: the HIS's local time.
const ADMIT: &str = "MSH|^~\\&|HIS|MAIN|SB|HUB|20260615080500||ADT^A01^ADT_A01|TZ1|P|2.5.1\rEVN|A01|20260615080500\rPID|1||MRN-TZ1^^^MAIN^MR||Testperson^Alex||19800101|U\rPV1|1|I|WARD^12^1||||||||||||||||V-TZ1|||||||||||||||||||||||||20260615080000\r";

#[tokio::test]
async fn a_channel_timezone_puts_its_offset_on_local_times_in_the_fhir_payload() {
    let cfg = TestConfig::new("", "");
    let outbox = cfg.data().join("tz-out");
    std::fs::write(
        cfg.conf().join("channels/lab.toml"),
        format!(
            r#"name = "lab"
timezone = "Asia/Riyadh"
[source]
type = "mllp_listener"
listen = "127.0.0.1:0"
[[route]]
name = "fhir"
payload = "fhir"
to = ["drop"]
[[destination]]
name = "drop"
type = "file"
folder = "{}"
extension = "json"
"#,
            outbox.display()
        ),
    )
    .expect("write channel");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("lab")).await;
    let ack = send(&mut client, ADMIT.as_bytes()).await;
    assert!(ack.contains("MSA|AA|TZ1"), "{ack}");
    let files = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&outbox)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    };
    assert!(
        eventually(20, || !files().is_empty()).await,
        "no payload written"
    );
    let payload = std::fs::read_to_string(&files()[0]).expect("payload readable");
    let bundle: serde_json::Value = serde_json::from_str(&payload).expect("JSON payload");
    let encounter = bundle["entry"]
        .as_array()
        .expect("a Bundle")
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["resourceType"] == "Encounter")
        .expect("an Encounter");
    // Riyadh is UTC+3 all year: 08:00 local is 05:00 UTC, written with its offset.
    assert_eq!(
        encounter["period"]["start"], "2026-06-15T08:00:00+03:00",
        "{encounter}"
    );
    assert!(
        !payload.contains("T08:00:00Z") && !payload.contains("T08:05:00Z"),
        "a local time written as UTC: {payload}"
    );
    engine.kill();
}
