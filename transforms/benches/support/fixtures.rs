//! The fixture messages of each message family, shared by the `parse_map` benchmark and the
//! `throughput` example.

use std::fs;
use std::path::Path;

/// The families measured, with the fixture directory prefixes of each.
pub const FAMILIES: [(&str, &[&str]); 5] = [
    ("adt", &["adt_"]),
    ("siu", &["siu_"]),
    ("orm_oml", &["orm_", "oml_"]),
    ("oru", &["oru_"]),
    ("dft", &["dft_"]),
];

/// Every `.hl7` fixture under `fixtures/hl7v2/<prefix>*/`, in path order.
pub fn family(prefixes: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/hl7v2");
    let mut out = Vec::new();
    let mut dirs: Vec<_> = fs::read_dir(&root)
        .expect("fixtures/hl7v2 exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            prefixes.iter().any(|pre| n.starts_with(pre))
        })
        .collect();
    dirs.sort();
    for dir in dirs {
        let mut files: Vec<_> = fs::read_dir(&dir)
            .expect("fixture dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
            .collect();
        files.sort();
        for f in files {
            out.push(fs::read_to_string(f).expect("UTF-8 fixture"));
        }
    }
    out
}
