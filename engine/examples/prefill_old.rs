//! Fills a data dir with old, already answered messages, for measuring what a retention pass
//! costs the ingest running next to it (`tests/perf.sh`, docs/PERFORMANCE.md).
//!
//! ```sh
//! cargo run --release -p engine --example prefill_old -- DATA_DIR COUNT [CHANNEL] [DAYS_OLD]
//! ```
//!
//! Writes COUNT synthetic ADT^A04 records received DAYS_OLD days ago (default 100, so past
//! the default 90-day retention) on CHANNEL (default `perf`), with the engine's own store
//! code, then flushes. Their status is `filtered` (answered, no route matched, nothing
//! pending), so retention may remove them. Prints progress every 50,000.

use engine::config::Durability;
use engine::metrics::Metrics;
use engine::store::{MessageRecord, Status, Store};
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const DAY_MS: u64 = 86_400_000;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: prefill_old DATA_DIR COUNT [CHANNEL] [DAYS_OLD]";
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let count: u64 = args.next().ok_or(usage)?.parse()?;
    let channel = args.next().unwrap_or_else(|| "perf".into());
    let days_old: u64 = args.next().map_or(Ok(100), |d| d.parse())?;
    let store = Store::open(&dir, Durability::Os, &Metrics::new("prefill"))?;
    let now_ms = u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
    let start_ms = now_ms - days_old * DAY_MS;
    let started = Instant::now();
    for n in 0..count {
        // One message a millisecond, oldest first, as the engine would have written them.
        let at_ms = start_ms + n;
        let control_id = format!("OLD{n:08}");
        let raw = format!(
            "MSH|^~\\&|HIS|MAIN|SB|HUB|20250101120000||ADT^A04^ADT_A01|{control_id}|P|2.5.1\r\
             EVN|A04|20250101120000\rPID|1||P-{n}^^^MAIN^MR||Testperson^Alex||19800101|U\r\
             PV1|1|O\r"
        );
        let record = MessageRecord {
            id: store.next_id(at_ms),
            channel: channel.clone(),
            received_at_ms: at_ms,
            peer: "127.0.0.1:9".into(),
            format: channels::source::RecordFormat::Hl7v2.into(),
            message_type: "ADT^A04".into(),
            control_id,
            sending_application: "HIS".into(),
            sending_facility: "MAIN".into(),
            version: "2.5.1".into(),
            charset: "utf-8".into(),
            size: raw.len(),
            truncated: false,
            status: Status::Filtered,
            ack_code: "AA".into(),
            ack: String::new(),
            errors: Vec::new(),
            config_version: String::new(),
            deliveries: Vec::new(),
            business_keys: Vec::new(),
            dedup_key: String::new(),
            resent_from: None,
        };
        store.put(&record, raw.as_bytes(), &[])?;
        if (n + 1) % 50_000 == 0 {
            store.commit().await?;
            eprintln!("{} of {count} written ({:.0?})", n + 1, started.elapsed());
        }
    }
    store.commit().await?;
    store.flush().await?;
    println!(
        "{count} messages, {days_old} days old, written to {} in {:.1?}",
        dir.display(),
        started.elapsed()
    );
    Ok(())
}
