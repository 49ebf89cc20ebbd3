//! Parse + HL7 v2 -> canonical throughput per message family, on the fixture messages.
//!
//! Run: `cargo bench -p transforms --bench parse_map`. Each family iterates over all its
//! fixtures (minimal, full, awkward of every trigger) per iteration, so the figure is for a
//! realistic mix of sizes; throughput is reported in bytes and in messages.
#![allow(missing_docs)] // criterion_group! generates an undocumented public function.

#[path = "support/fixtures.rs"]
mod fixtures;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fixtures::{family, FAMILIES};
use transforms::hl7v2::access::V2Message;
use transforms::{v2_to_event, Mapped};

/// The engine's allocator: the mappings allocate the model's strings, so the allocator is part
/// of what the engine pays per message.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn parse_map(c: &mut Criterion) {
    for (name, prefixes) in FAMILIES {
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
