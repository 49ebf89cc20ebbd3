//! `switchboard test`: the test cases shipped in conf/tests/ pass, a changed mapping fails
//! with a diff naming the case and the field, and a broken test file is exit 2 naming the
//! file and the key. `check` reports the same mistakes of a test file.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn shipped_conf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf")
}

/// Runs `switchboard ARGS --config CONF` and returns (exit code, stdout).
fn run(args: &[&str], conf: &Path) -> (Option<i32>, String) {
    let out = Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(conf)
        .output()
        .expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A copy of the shipped conf/ (channels, examples, tests) in a temporary folder.
fn copy_of_conf() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read_dir") {
            let entry = entry.expect("entry");
            let target = to.join(entry.file_name());
            if entry.file_type().expect("type").is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).expect("copy");
            }
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    copy(&shipped_conf(), &dir.path().join("conf"));
    dir
}

fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).expect("read");
    assert!(text.contains(from), "{from:?} not in {}", file.display());
    std::fs::write(file, text.replacen(from, to, 1)).expect("write");
}

#[test]
fn the_shipped_test_cases_pass() {
    let (code, out) = run(&["test"], &shipped_conf());
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(" failed"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    // The shipped channel and every example channel have test cases.
    let tests = shipped_conf().join("tests");
    assert!(tests.join("his-adt.toml").exists());
    for entry in std::fs::read_dir(shipped_conf().join("examples")).expect("examples") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|x| x == "toml") {
            // A DICOM source takes associations, not messages: its channels are driven with
            // dcmtk by tests/dicom.rs, and `switchboard test` refuses them with a reason.
            let channel: toml::Table = std::fs::read_to_string(&path)
                .expect("read")
                .parse()
                .expect("TOML");
            let source_type = channel
                .get("source")
                .and_then(|s| s.get("type"))
                .and_then(|t| t.as_str())
                .unwrap_or_default();
            if source_type.starts_with("dicom_") {
                continue;
            }
            let stem = path
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .into_owned();
            let test = tests.join(format!("example-{stem}.toml"));
            assert!(test.exists(), "no test file for {}", path.display());
            assert!(
                out.contains(&format!("example-{stem}.toml case[")),
                "no case of {} ran:\n{out}",
                test.display()
            );
        }
    }
    // JSON: every case, each passed.
    let (code, json) = run(&["test", "--json"], &shipped_conf());
    assert_eq!(code, Some(0), "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(v["failed"], 0, "{json}");
    assert!(v["passed"].as_u64().unwrap_or_default() >= 20, "{json}");
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{json}");
}

/// Every destination of every tested channel is expected by at least one case.
#[test]
fn each_channel_has_a_case_per_destination() {
    let tests = shipped_conf().join("tests");
    for entry in std::fs::read_dir(&tests).expect("tests") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let test: toml::Table = std::fs::read_to_string(&path)
            .expect("read")
            .parse()
            .expect("TOML");
        let channel_file = match test.get("channel_file").and_then(|v| v.as_str()) {
            Some(rel) => tests.join(rel),
            None => shipped_conf().join(format!(
                "channels/{}.toml",
                test["channel"].as_str().expect("channel")
            )),
        };
        let channel: toml::Table = std::fs::read_to_string(&channel_file)
            .expect("channel file")
            .parse()
            .expect("TOML");
        let destinations: Vec<String> = match channel.get("destination") {
            Some(toml::Value::Array(ds)) => ds
                .iter()
                .map(|d| d["name"].as_str().expect("name").to_string())
                .collect(),
            // A Latrexa bookings channel writes to its HIS.
            _ => vec!["his".to_string()],
        };
        let cases = test["case"].as_array().expect("cases");
        for d in &destinations {
            assert!(
                cases
                    .iter()
                    .any(|c| c.get("expect").and_then(|e| e.get(d)).is_some_and(|e| e
                        .get("nothing")
                        .is_none_or(|n| n.as_bool() != Some(true)))),
                "{}: no case expects a delivery to '{d}'",
                path.display()
            );
        }
    }
}

#[test]
fn a_changed_mapping_fails_with_a_diff_naming_the_case_and_the_field() {
    let dir = copy_of_conf();
    let conf = dir.path().join("conf");
    // The OpsPort example maps the canonical status "booked" to "Confirmed"; make it "Booked".
    edit(
        &conf.join("examples/opsport.toml"),
        "booked = \"Confirmed\"",
        "booked = \"Booked\"",
    );
    let (code, out) = run(&["test"], &conf);
    assert_eq!(code, Some(1), "{out}");
    for expect in [
        "FAIL  ",
        "tests/example-opsport.toml case[0] \"a booking (SIU^S12) upserts clinic, doctor, patient and appointment, in that order\"",
        "destination \"opsport\", delivery 4: payload differs (at case[0].expect.opsport[3])",
        "--- expected (case[0].expect.opsport[3].payload)",
        "+++ actual",
        "-  \"status\": \"Confirmed\",",
        "+  \"status\": \"Booked\",",
        " passed, 1 failed",
    ] {
        assert!(out.contains(expect), "missing {expect:?} in:\n{out}");
    }
    // Only that case failed; the filter runs one file.
    let (code, out) = run(&["test", "his-adt"], &conf);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("4 passed, 0 failed"), "{out}");

    // An expected field changed instead: the diff shows the field, expected against actual.
    let dir = copy_of_conf();
    let conf = dir.path().join("conf");
    edit(
        &conf.join("tests/example-px360.toml"),
        "\"/FetchPatientDataTimeStampList/0/HospitalName\" = \"ALH-main\"",
        "\"/FetchPatientDataTimeStampList/0/HospitalName\" = \"ALH-north\"",
    );
    let (code, out) = run(&["test", "--json"], &conf);
    assert_eq!(code, Some(1), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let failed: Vec<&serde_json::Value> = v["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|c| c["passed"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{out}");
    assert!(failed[0]["file"]
        .as_str()
        .unwrap_or_default()
        .ends_with("example-px360.toml"));
    let f = &failed[0]["failures"][0];
    assert_eq!(f["destination"], "px360");
    assert_eq!(f["message"], "fields differ");
    let diff = f["diff"].as_str().unwrap_or_default();
    assert!(
        diff.contains("-/FetchPatientDataTimeStampList/0/HospitalName = \"ALH-north\"\n+/FetchPatientDataTimeStampList/0/HospitalName = \"ALH-main\""),
        "{diff}"
    );
}

#[test]
fn a_broken_test_file_is_exit_2_naming_file_and_key_and_check_reports_it() {
    let dir = copy_of_conf();
    let conf = dir.path().join("conf");
    std::fs::write(
        conf.join("tests/broken.toml"),
        "channel = \"his-adt\"\n\
         [[case]]\nname = \"missing file\"\ninput = { hl7_file = \"messages/nope.hl7\" }\nexpect.archive = { nothing = true }\n\
         [[case]]\nname = \"unknown destination\"\ninput = { hl7_file = \"messages/adt_a04.hl7\" }\nexpect.archiv = { nothing = true }\n\
         [[case]]\nname = \"unknown key\"\ninput = { hl7_file = \"messages/adt_a04.hl7\" }\nexpect.archive = { nothing = true, payloud = \"x\" }\n",
    )
    .expect("write");
    std::fs::write(
        conf.join("tests/other.toml"),
        "channel = \"his-adtt\"\n[[case]]\nname = \"x\"\ninput.hl7 = \"MSH|^~\\\\&|A\"\nexpect.archive = { nothing = true }\n",
    )
    .expect("write");
    let expected = [
        "broken.toml: case[0].input.hl7_file: cannot read ",
        "broken.toml: case[1].expect.archiv: unknown destination 'archiv' of channel 'his-adt' (hint: destinations of the channel: archive)",
        "broken.toml: case[2].expect.archive.payloud: unknown key 'payloud'",
        "other.toml: channel: unknown channel 'his-adtt' (hint: channels in channels/: his-adt; or give channel_file)",
    ];
    let (code, out) = run(&["test"], &conf);
    assert_eq!(code, Some(2), "{out}");
    for expect in expected {
        assert!(out.contains(expect), "missing {expect:?} in:\n{out}");
    }
    // The good files still ran.
    assert!(
        out.contains(" passed, 0 failed, 4 problem(s) in test files"),
        "{out}"
    );

    let (code, out) = run(&["check"], &conf);
    assert_eq!(code, Some(1), "{out}");
    for expect in expected {
        assert!(
            out.contains(&format!("error: {}", conf.join("tests").display()))
                && out.contains(expect),
            "missing {expect:?} in:\n{out}"
        );
    }
    assert!(
        out.contains("4 error(s) in test files (the engine would start"),
        "{out}"
    );
}
