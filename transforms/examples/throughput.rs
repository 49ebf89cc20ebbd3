//! Parse + HL7 v2 -> canonical throughput per message family, as the best and the median of
//! many short batches, so a noisy machine (a shared VM) still shows what one core does.
//!
//! Run: `cargo run --release -p transforms --example throughput [-- SECONDS_PER_FAMILY]`.
//! The criterion benchmark (`cargo bench -p transforms --bench parse_map`) reports the mean
//! with its confidence interval; this tool reports the spread instead: on a quiet machine
//! best and median are close, on a busy one the best is the figure for the code.
//!
//! `throughput --rounds N [FAMILY]` instead maps every fixture of the family (or of all)
//! N times and prints nothing: under `valgrind --tool=callgrind` that gives an instruction
//! count, which is the same from run to run whatever else the machine does, for comparing
//! two versions of the code.
#![allow(missing_docs)]

#[path = "../benches/support/fixtures.rs"]
mod fixtures;

use std::hint::black_box;
use std::time::{Duration, Instant};

use fixtures::{family, FAMILIES};
use transforms::hl7v2::access::V2Message;
use transforms::{v2_to_event, Mapped};

/// The engine's allocator, as in the benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long one batch runs; long enough for the clock, short enough that a burst of noise
/// spoils only a few batches.
const BATCH: Duration = Duration::from_millis(20);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--rounds") {
        let rounds: usize = args
            .get(1)
            .and_then(|n| n.parse().ok())
            .expect("--rounds takes a number");
        count_rounds(rounds, args.get(2).map(String::as_str));
        return;
    }
    let seconds: f64 = args
        .first()
        .map(|s| s.parse().expect("SECONDS_PER_FAMILY is a number"))
        .unwrap_or(3.0);
    println!(
        "{:<8} {:>9} {:>10} {:>12} {:>12} {:>12}",
        "family", "messages", "bytes", "best MB/s", "median MB/s", "best msgs/s"
    );
    for (name, prefixes) in FAMILIES {
        let messages = family(prefixes);
        let bytes: usize = messages.iter().map(String::len).sum();
        let run_once = || {
            for text in &messages {
                let msg = V2Message::parse(black_box(text)).expect("fixture parses");
                let mapped = v2_to_event(&msg).expect("fixture maps");
                assert!(matches!(mapped, Mapped::Event(_)));
                black_box(mapped);
            }
        };
        // Warm up caches, the allocator and the CPU's clock.
        let warm = Instant::now();
        while warm.elapsed() < Duration::from_millis(300) {
            run_once();
        }
        let mut rates = Vec::new();
        let all = Instant::now();
        while all.elapsed().as_secs_f64() < seconds {
            let start = Instant::now();
            let mut rounds = 0u64;
            while start.elapsed() < BATCH {
                run_once();
                rounds += 1;
            }
            rates.push(rounds as f64 / start.elapsed().as_secs_f64());
        }
        rates.sort_by(f64::total_cmp);
        let best = rates[rates.len() - 1];
        let median = rates[rates.len() / 2];
        println!(
            "{:<8} {:>9} {:>10} {:>12.1} {:>12.1} {:>12.0}",
            name,
            messages.len(),
            bytes,
            best * bytes as f64 / 1e6,
            median * bytes as f64 / 1e6,
            best * messages.len() as f64,
        );
    }
}

/// Maps the fixtures of `only` (or of every family) `rounds` times, for an instruction count.
fn count_rounds(rounds: usize, only: Option<&str>) {
    let known = FAMILIES.iter().any(|(name, _)| Some(*name) == only);
    assert!(only.is_none() || known, "unknown family {only:?}");
    for (name, prefixes) in FAMILIES {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let messages = family(prefixes);
        for _ in 0..rounds {
            for text in &messages {
                let msg = V2Message::parse(black_box(text)).expect("fixture parses");
                black_box(v2_to_event(&msg).expect("fixture maps"));
            }
        }
    }
}
