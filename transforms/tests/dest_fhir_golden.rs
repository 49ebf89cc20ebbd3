//! Golden tests: canonical model fixtures -> destination payloads and FHIR, compared with the
//! files under `fixtures/dest/` and `fixtures/fhir/`. Run with `UPDATE_GOLDEN=1` to rewrite
//! the goldens after an intended change, then review the diff.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};

use serde_json::Value;
use transforms::dest::{buktor, latrexa, opsport, px360};
use transforms::fhir;
use transforms::model::Event;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn read_event(p: &Path) -> Event {
    let text = std::fs::read_to_string(p).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Canonical inputs: `fixtures/model/_dest_inputs/<case>.json` (named `<case>`) and the
/// v2 mapping goldens `fixtures/model/<type>/<case>.json` (named `<type>_<case>`; a master
/// file's events `<type>_<case>_<record>`).
fn inputs() -> Vec<(String, Event)> {
    let root = fixtures().join("model");
    let mut out = Vec::new();
    for dir in std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()) {
        if !dir.is_dir() {
            continue;
        }
        let prefix = dir.file_name().unwrap().to_string_lossy().into_owned();
        for p in std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()) {
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            let name = if prefix == "_dest_inputs" {
                stem
            } else {
                format!("{prefix}_{stem}")
            };
            // A master file golden holds one event per record: each is an input of its own.
            if prefix.starts_with("mfn_") {
                let text = std::fs::read_to_string(&p).unwrap();
                let mf: transforms::from_v2::mfn::MasterFile =
                    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                for (i, e) in mf.events.into_iter().enumerate() {
                    out.push((format!("{name}_{}", i + 1), e));
                }
                continue;
            }
            out.push((name, read_event(&p)));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "no inputs in {}", root.display());
    out
}

/// Compares `actual` with the golden file, or writes it when `UPDATE_GOLDEN` is set.
fn check(path: &Path, actual: &Value) -> Result<(), String> {
    let pretty = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, pretty).unwrap();
        return Ok(());
    }
    let expected = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()))?;
    let expected: Value = serde_json::from_str(&expected).unwrap();
    if &expected == actual {
        Ok(())
    } else {
        Err(format!(
            "{} differs:\n--- expected\n{}\n--- actual\n{}",
            path.display(),
            serde_json::to_string_pretty(&expected).unwrap(),
            pretty
        ))
    }
}

#[test]
fn destination_payloads_match_goldens() {
    let mut failures = Vec::new();
    for (name, event) in inputs() {
        let cases: [(&str, Result<Vec<transforms::dest::Rendered>, _>); 4] = [
            (
                "opsport",
                opsport::render(&event, &opsport::OpsportOptions::default()),
            ),
            (
                "buktor",
                buktor::render(&event, &buktor::BuktorOptions::default()),
            ),
            (
                "px360",
                px360::render(&event, &px360::Px360Options::default()),
            ),
            ("latrexa", latrexa::render(&event)),
        ];
        for (vendor, rendered) in cases {
            // A mapping error is a result too: the golden records it.
            let actual = match rendered {
                Ok(items) => serde_json::to_value(&items).unwrap(),
                Err(e) => serde_json::json!({"error": e.to_string()}),
            };
            let path = fixtures().join(format!("dest/{vendor}/{name}.json"));
            if let Err(e) = check(&path, &actual) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fhir_bundles_match_goldens_and_parse_back() {
    let mut failures = Vec::new();
    for (name, event) in inputs() {
        let bundle = match fhir::transaction_bundle(&event, &fhir::BundleOptions::default()) {
            Ok(bundle) => bundle,
            Err(e) => {
                let actual = serde_json::json!({"error": e.to_string()});
                if let Err(e) = check(
                    &fixtures().join(format!("fhir/bundle/{name}.json")),
                    &actual,
                ) {
                    failures.push(e);
                }
                continue;
            }
        };
        let text = fhirbolt::json::to_string_pretty(&bundle, None).unwrap();
        // Every resource we produce must parse back through fhirbolt in strict mode.
        let reparsed: fhirbolt::model::r4::Resource =
            fhirbolt::json::from_str(&text, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(reparsed, bundle, "{name}: fhirbolt round trip");
        let json: Value = serde_json::from_str(&text).unwrap();
        if let Err(e) = check(&fixtures().join(format!("fhir/bundle/{name}.json")), &json) {
            failures.push(e);
        }
        let events = fhir::fhir_to_events(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let back = serde_json::to_value(&events).unwrap();
        if let Err(e) = check(
            &fixtures().join(format!("fhir/bundle/{name}.events.json")),
            &back,
        ) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fhir_inputs_match_goldens() {
    let dir = fixtures().join("fhir");
    let mut failures = Vec::new();
    let mut count = 0;
    for resource_dir in std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()) {
        if !resource_dir.is_dir() || resource_dir.ends_with("bundle") {
            continue;
        }
        for input in std::fs::read_dir(&resource_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
        {
            let file = input.file_name().unwrap().to_string_lossy().into_owned();
            let Some(stem) = file.strip_suffix(".input.json") else {
                continue;
            };
            count += 1;
            let text = std::fs::read_to_string(&input).unwrap();
            let actual = match fhir::fhir_to_events(&text) {
                Ok(events) => serde_json::json!({"events": events}),
                Err(e) => serde_json::json!({
                    "error": {"status": e.http_status(), "path": e.path(), "message": e.to_string()}
                }),
            };
            if let Err(e) = check(&resource_dir.join(format!("{stem}.expected.json")), &actual) {
                failures.push(e);
            }
        }
    }
    assert!(count > 0, "no FHIR inputs under {}", dir.display());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every `Reference` of every transaction Bundle golden points at an entry of that Bundle (its
/// `urn:uuid:` fullUrl) or a resource contained in the entry's own resource (`#id`), or, when
/// the resource is not in the Bundle, is a conditional reference by identifier only: a server that checks referential integrity takes the Bundle as it is.
#[test]
fn every_reference_in_a_bundle_resolves_or_is_by_identifier() {
    fn walk(v: &Value, path: &str, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(map) => {
                let is_reference = map.contains_key("reference")
                    || (map.contains_key("identifier")
                        && map.get("identifier").is_some_and(Value::is_object)
                        && !map.contains_key("resourceType"));
                if is_reference {
                    out.push((path.to_owned(), v.clone()));
                }
                for (k, child) in map {
                    walk(child, &format!("{path}.{k}"), out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut failures = Vec::new();
    let mut checked = 0;
    let dir = fixtures().join("fhir/bundle");
    for p in std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".events.json") || !name.ends_with(".json") {
            continue;
        }
        let bundle: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        if bundle.get("type").and_then(Value::as_str) != Some("transaction") {
            continue;
        }
        let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
        let full_urls: std::collections::BTreeSet<String> = entries
            .iter()
            .filter_map(|e| e["fullUrl"].as_str().map(str::to_owned))
            .collect();
        for (i, entry) in entries.iter().enumerate() {
            let mut refs = Vec::new();
            walk(&entry["resource"], &format!("entry[{i}]"), &mut refs);
            // `#id` names a resource contained in the entry's resource.
            let contained: std::collections::BTreeSet<String> = entry["resource"]["contained"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["id"].as_str().map(|id| format!("#{id}")))
                .collect();
            for (path, r) in refs {
                checked += 1;
                match r.get("reference").and_then(Value::as_str) {
                    Some(url) if full_urls.contains(url) || contained.contains(url) => {}
                    Some(url) => failures.push(format!("{name} {path}: {url} is no entry")),
                    None if r.get("identifier").is_some() => {}
                    None => failures.push(format!("{name} {path}: neither entry nor identifier")),
                }
            }
        }
    }
    assert!(checked > 100, "only {checked} references checked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
