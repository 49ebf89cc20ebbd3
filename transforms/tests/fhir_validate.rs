//! Independent FHIR R4 validation: every HL7 v2 fixture (`fixtures/hl7v2/*/*.hl7`) and every
//! canonical input of the destination goldens (`fixtures/model/_dest_inputs/*.json`) becomes a
//! transaction Bundle, and `tests/fhir-validate/validate.js` checks each resource with the npm
//! `fhir` package (FHIR.js, R4 StructureDefinitions and value sets; see the script for what it
//! checks beside them). fhirbolt, which builds the Bundles, never judges its own output here.
//!
//! Needs `node` and the script's `node_modules`, which `.ci/run` installs with
//! `npm ci --prefix transforms/tests/fhir-validate`. Without them the test fails and says so:
//! a validator that did not run proves nothing.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

use transforms::fhir::{transaction_bundle, BundleOptions};
use transforms::hl7v2::access::V2Message;
use transforms::model::Event;
use transforms::{v2_to_event, Mapped};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn fixtures() -> PathBuf {
    root().join("../fixtures")
}

fn sorted_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    files
}

/// Every event the fixtures give, named after the fixture.
fn events() -> Vec<(String, Event)> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures().join("hl7v2"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let trigger = dir.file_name().unwrap().to_string_lossy().into_owned();
        for file in sorted_files(&dir, "hl7") {
            let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&file).unwrap();
            let msg = V2Message::parse(&text).unwrap();
            match v2_to_event(&msg) {
                Ok(Mapped::Event(e)) => out.push((format!("{trigger}_{stem}"), *e)),
                // A master file: one event per record.
                Ok(Mapped::MasterFile(mf)) => {
                    for (i, e) in mf.events.into_iter().enumerate() {
                        out.push((format!("{trigger}_{stem}_{}", i + 1), e));
                    }
                }
                other => panic!("{trigger}/{stem}: {other:?}"),
            }
        }
    }
    for file in sorted_files(&fixtures().join("model/_dest_inputs"), "json") {
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        let event = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        out.push((format!("dest_input_{stem}"), event));
    }
    out
}

/// Runs the validator on a folder of Bundles; `Err` with its report when it finds errors.
fn validate(dir: &Path) -> Result<String, String> {
    let script = root().join("tests/fhir-validate");
    assert!(
        script.join("node_modules/fhir").is_dir(),
        "the FHIR validator is not installed: run `npm ci --prefix transforms/tests/fhir-validate` \
         (.ci/run does) and make sure `node` is on PATH"
    );
    let out = Command::new("node")
        .arg(script.join("validate.js"))
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `node` ({e}): install nodejs (.ci/run does)"));
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => Ok(report),
        Some(1) => Err(report),
        _ => panic!("the validator failed to run: {report}"),
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchboard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn every_bundle_of_every_fixture_validates_as_fhir_r4() {
    let dir = temp_dir("fhir-validate");
    let events = events();
    assert!(events.len() > 180, "only {} fixtures", events.len());
    for (name, event) in &events {
        let bundle = transaction_bundle(event, &BundleOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let text = fhirbolt::json::to_string_pretty(&bundle, None).unwrap();
        std::fs::write(dir.join(format!("{name}.json")), text).unwrap();
    }
    let result = validate(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(report) => assert!(
            report.contains(" resources validated, 0 errors"),
            "unexpected report: {report}"
        ),
        Err(report) => panic!("FHIR R4 validation errors:\n{report}"),
    }
}

/// The validator must catch what it is here for: an element R4 does not define, a code
/// outside a required value set, a date-time with a time but no offset, and a list where R4
/// has one value. A validator that passes everything would make the test above worthless.
#[test]
fn the_validator_rejects_invalid_resources() {
    let dir = temp_dir("fhir-validate-bad");
    let cases = [
        r#"{"resourceType":"Patient","gender":"bloke"}"#,
        r#"{"resourceType":"Patient","favouriteColour":"blue"}"#,
        r#"{"resourceType":"Encounter","status":"finished","class":{"code":"IMP"},"period":{"start":"2026-06-15T08:00:00"}}"#,
        r#"{"resourceType":"Patient","name":[{"family":["Khalid"]}]}"#,
        r#"{"resourceType":"Patient","birthDate":"20260615"}"#,
        r#"{"resourceType":"Observation","code":{"text":"x"}}"#,
    ];
    for (i, resource) in cases.iter().enumerate() {
        let bundle = format!(
            r#"{{"resourceType":"Bundle","type":"transaction","entry":[{{"fullUrl":"urn:uuid:0","resource":{resource},"request":{{"method":"POST","url":"X"}}}}]}}"#
        );
        std::fs::write(dir.join(format!("case{i}.json")), bundle).unwrap();
    }
    let result = validate(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let report = result.expect_err("invalid resources must fail validation");
    for (i, case) in cases.iter().enumerate() {
        assert!(
            report.contains(&format!("case{i}.json ")),
            "case {i} ({case}) was not reported:\n{report}"
        );
    }
}
