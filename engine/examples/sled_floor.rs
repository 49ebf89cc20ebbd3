//! What sled 0.34 itself costs in memory and start-up time per stored key, without the
//! engine: the floor under the store's "memory flat in store size" and "ready in 5 s"
//! goals (docs/PERFORMANCE.md).
//!
//! `fill` writes COUNT keys (8-byte big-endian, in order, as message ids are) with
//! VALUE_BYTES-byte values into one tree, `open` opens the database afresh and prints the
//! time until it is open, the process's resident memory then, and after reading every key.
//! Run `open` in a new process after `fill` (a database just written holds its pages in
//! the cache), with the engine's page cache (256 MiB) unless `CACHE_MIB` says otherwise.
//!
//! ```sh
//! cargo build --profile profiling --workspace --bin switchboard --example prefill --example sled_floor
//! target/profiling/examples/sled_floor fill /tmp/floor 3000000 200
//! target/profiling/examples/sled_floor open /tmp/floor
//! ```

use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

fn config(dir: &str) -> sled::Config {
    let cache_mib: u64 = std::env::var("CACHE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    sled::Config::new()
        .path(std::path::Path::new(dir).join("sled"))
        .cache_capacity(cache_mib * 1024 * 1024)
        .flush_every_ms(Some(1000))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: sled_floor fill DIR COUNT VALUE_BYTES | sled_floor open DIR";
    match args.first().map(String::as_str) {
        Some("fill") if args.len() == 4 => {
            let count: u64 = args[2].parse()?;
            let value_bytes: usize = args[3].parse()?;
            let db = config(&args[1]).open()?;
            let tree = db.open_tree("messages")?;
            // Values that do not compress into nothing, as compressed records do not.
            let mut value = vec![0u8; value_bytes];
            let started = Instant::now();
            for n in 0..count {
                for (i, b) in value.iter_mut().enumerate() {
                    *b = (n as usize)
                        .wrapping_mul(31)
                        .wrapping_add(i.wrapping_mul(7)) as u8;
                }
                tree.insert(((1_796_000_000_000u64 + n) << 20).to_be_bytes(), &value[..])?;
                if (n + 1) % 1_000_000 == 0 {
                    eprintln!(
                        "sled_floor: {} of {count} written, {:.0} s",
                        n + 1,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            db.flush()?;
            println!(
                "filled {count} keys of {value_bytes} bytes in {:.1} s; {} bytes on disk",
                started.elapsed().as_secs_f64(),
                db.size_on_disk()?
            );
        }
        Some("open") if args.len() == 2 => {
            let before = rss_mib();
            let started = Instant::now();
            let db = config(&args[1]).open()?;
            let tree = db.open_tree("messages")?;
            let opened = started.elapsed();
            let open_rss = rss_mib();
            let keys = tree.len();
            println!(
                "{keys} keys: open in {:.2} s; RSS {open_rss} MiB after opening ({before} MiB before), \
                 {:.0} bytes a key",
                opened.as_secs_f64(),
                (open_rss.saturating_sub(before) * 1024 * 1024) as f64 / keys.max(1) as f64
            );
            println!(
                "RSS {} MiB after reading every key (page cache {} MiB)",
                rss_mib(),
                std::env::var("CACHE_MIB").unwrap_or_else(|_| "256".into())
            );
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}
