//! Golden tests: every `fixtures/hl7v2/<trigger>/<variant>.hl7` maps to the canonical JSON in
//! `fixtures/model/<trigger>/<variant>.json`, one table-driven test per message family.
//!
//! Regenerate with `UPDATE_GOLDEN=1 cargo test -p transforms --test golden`, then review the
//! diff by eye: a golden is a clinical statement, not a snapshot of whatever the code did.

use std::fs;
use std::path::{Path, PathBuf};

use transforms::hl7v2::access::V2Message;
use transforms::{v2_to_event, Mapped};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// Maps every fixture whose trigger directory starts with one of `prefixes`; returns how many.
fn check_family(prefixes: &[&str]) -> usize {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let root = fixtures().join("hl7v2");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .expect("fixtures/hl7v2 exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            prefixes.iter().any(|pre| name.starts_with(pre))
        })
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no fixture directories for {prefixes:?}");
    let mut failures = Vec::new();
    let mut count = 0;
    for dir in dirs {
        let trigger = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 name")
            .to_owned();
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .expect("readable fixture dir")
            .map(|e| e.expect("readable entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
            .collect();
        files.sort();
        // Every trigger has a minimal and a full fixture; the older ones also an awkward one.
        for variant in ["minimal", "full"] {
            assert!(
                files
                    .iter()
                    .any(|f| f.file_stem().is_some_and(|s| s == variant)),
                "{trigger} lacks the {variant} fixture"
            );
        }
        for file in files {
            count += 1;
            let variant = file
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("utf-8 stem");
            let text = fs::read_to_string(&file).expect("fixture is UTF-8");
            assert!(
                !text.contains('\n'),
                "{trigger}/{variant}: segments must end with CR only"
            );
            let msg = V2Message::parse(&text)
                .unwrap_or_else(|e| panic!("{trigger}/{variant}: parse failed: {e}"));
            let event = match v2_to_event(&msg) {
                Ok(Mapped::Event(event)) => *event,
                Ok(Mapped::Unsupported { message_type }) => {
                    panic!("{trigger}/{variant}: unsupported {message_type}")
                }
                Ok(Mapped::MasterFile(_)) => {
                    panic!("{trigger}/{variant}: a master file (see master_file_goldens)")
                }
                Err(e) => panic!("{trigger}/{variant}: mapping failed: {e}"),
            };
            let mut json = serde_json::to_string_pretty(&event).expect("event serialises");
            json.push('\n');
            // The JSON form must read back to the same event.
            let back: transforms::model::Event =
                serde_json::from_str(&json).expect("golden JSON deserialises");
            assert_eq!(back, event, "{trigger}/{variant}: JSON round trip");
            let golden = fixtures()
                .join("model")
                .join(&trigger)
                .join(format!("{variant}.json"));
            if update {
                fs::create_dir_all(golden.parent().expect("has parent")).expect("mkdir");
                fs::write(&golden, &json).expect("write golden");
                continue;
            }
            match fs::read_to_string(&golden) {
                Ok(expected) if expected == json => {}
                Ok(_) => failures.push(format!(
                    "{trigger}/{variant}: differs from {}",
                    golden.display()
                )),
                Err(_) => failures.push(format!(
                    "{trigger}/{variant}: no golden at {}",
                    golden.display()
                )),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches (UPDATE_GOLDEN=1 to regenerate, then review):\n{}",
        failures.join("\n")
    );
    count
}

#[test]
fn adt_goldens() {
    assert_eq!(check_family(&["adt_"]), 133);
}

#[test]
fn siu_goldens() {
    assert_eq!(check_family(&["siu_"]), 40);
}

#[test]
fn order_goldens() {
    assert_eq!(check_family(&["orm_", "oml_"]), 13);
}

#[test]
fn oru_goldens() {
    assert_eq!(check_family(&["oru_"]), 12);
}

#[test]
fn pharmacy_goldens() {
    assert_eq!(check_family(&["rde_", "rds_"]), 7);
}

#[test]
fn dft_goldens() {
    assert_eq!(check_family(&["dft_"]), 11);
}

/// Master files: every `fixtures/hl7v2/mfn_*/<variant>.hl7` maps, record by record, to the
/// JSON in `fixtures/model/mfn_*/<variant>.json` (the events and each record's outcome).
#[test]
fn master_file_goldens() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    let mut count = 0;
    for trigger in [
        "mfn_m02", "mfn_m04", "mfn_m05", "mfn_m08", "mfn_m09", "mfn_m10",
    ] {
        for variant in ["minimal", "full"] {
            count += 1;
            let file = fixtures()
                .join("hl7v2")
                .join(trigger)
                .join(format!("{variant}.hl7"));
            let text = fs::read_to_string(&file).expect("fixture is UTF-8");
            assert!(!text.contains('\n'), "{trigger}/{variant}: CR only");
            let msg = V2Message::parse(&text).expect("fixture parses");
            let mf = match v2_to_event(&msg) {
                Ok(Mapped::MasterFile(mf)) => *mf,
                other => panic!("{trigger}/{variant}: not a master file: {other:?}"),
            };
            assert!(
                mf.records.iter().all(|r| r.accepted()),
                "{trigger}/{variant}: every fixture record is valid: {:?}",
                mf.rejections()
            );
            let mut json = serde_json::to_string_pretty(&mf).expect("serialises");
            json.push('\n');
            let back: transforms::from_v2::mfn::MasterFile =
                serde_json::from_str(&json).expect("golden JSON deserialises");
            assert_eq!(back, mf, "{trigger}/{variant}: JSON round trip");
            let golden = fixtures()
                .join("model")
                .join(trigger)
                .join(format!("{variant}.json"));
            if update {
                fs::create_dir_all(golden.parent().expect("has parent")).expect("mkdir");
                fs::write(&golden, &json).expect("write golden");
                continue;
            }
            if fs::read_to_string(&golden).ok().as_deref() != Some(json.as_str()) {
                failures.push(format!(
                    "{trigger}/{variant}: differs from {}",
                    golden.display()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches:\n{}",
        failures.join("\n")
    );
    assert_eq!(count, 12);
}
