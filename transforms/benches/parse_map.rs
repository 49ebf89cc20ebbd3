//! Parse + HL7 v2 -> canonical throughput per message family, on the fixture messages.
//!
//! Run: `cargo bench -p transforms --bench parse_map`. Each family iterates over all its
//! fixtures (minimal, full, awkward of every trigger) per iteration, so the figure is for a
//! realistic mix of sizes; throughput is reported in bytes and in messages.
#![allow(missing_docs)] // criterion_group! generates an undocumented public function.

use std::fs;
use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use transforms::hl7v2::access::V2Message;
use transforms::{v2_to_event, Mapped};

/// The engine's allocator: the mappings allocate the model's strings, so the allocator is part
/// of what the engine pays per message.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn family(prefixes: &[&str]) -> Vec<String> {
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

fn parse_map(c: &mut Criterion) {
    let families: [(&str, &[&str]); 5] = [
        ("adt", &["adt_"]),
        ("siu", &["siu_"]),
        ("orm_oml", &["orm_", "oml_"]),
        ("oru", &["oru_"]),
        ("dft", &["dft_"]),
    ];
    for (name, prefixes) in families {
        let messages = family(prefixes);
        let bytes: usize = messages.iter().map(String::len).sum();
        let mut group = c.benchmark_group(format!("parse_map/{name}"));
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function("bytes", |b| {
            b.iter(|| {
                for text in &messages {
                    let msg = V2Message::parse(black_box(text)).expect("fixture parses");
                    let mapped = v2_to_event(&msg).expect("fixture maps");
                    assert!(matches!(mapped, Mapped::Event(_)));
                    black_box(mapped);
                }
            })
        });
        group.throughput(Throughput::Elements(messages.len() as u64));
        group.bench_function("messages", |b| {
            b.iter(|| {
                for text in &messages {
                    let msg = V2Message::parse(black_box(text)).expect("fixture parses");
                    black_box(v2_to_event(&msg).expect("fixture maps"));
                }
            })
        });
        group.finish();
    }
    // Parse alone, to see how the cost splits between hl7-parser and the mapping.
    let all = family(&["adt_", "siu_", "orm_", "oml_", "oru_", "dft_"]);
    let bytes: usize = all.iter().map(String::len).sum();
    let mut group = c.benchmark_group("parse_only/all");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("bytes", |b| {
        b.iter(|| {
            for text in &all {
                black_box(V2Message::parse(black_box(text)).expect("fixture parses"));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, parse_map);
criterion_main!(benches);
