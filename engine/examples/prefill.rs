//! Fills a data dir with routed and delivered ADT messages, as the engine stores a message
//! a channel received and delivered to a file destination, for the store-size benchmarks
//! (`tests/store-scale.sh`, docs/PERFORMANCE.md).
//!
//! ```sh
//! cargo run --profile profiling -p engine --example prefill -- DATA_DIR COUNT [DAYS_OLD] [CHANNEL] [FIRST]
//! ```
//!
//! Writes COUNT synthetic ADT^A04 messages numbered from FIRST (default 0; a second fill of
//! the same store starts after the first so that control ids differ) on CHANNEL (default
//! `perf`), one a millisecond,
//! the newest DAYS_OLD days old (default 0: up to now), through the store API in the order
//! ingest and delivery use it: the `dedup` claim, the record (with its business keys, the
//! answer sent and its delivery to `CHANNEL/files`) with its raw bytes beside it, its
//! control-id and business-key index entries and its outbox item, the group commit, then
//! the delivery's outcome (the attempt, kept on the record as the engine does without
//! encryption, and the outbox item removed). Every message ends `delivered`, so retention may
//! remove it once it is old enough. Prints a progress line (rate, ETA) every 100,000 to
//! stderr and a summary to stdout.

use engine::config::Durability;
use engine::metrics::Metrics;
use engine::store::dedup::{dedup_key, Claim, Pending};
use engine::store::kind::{ItemPayload, Outcome};
use engine::store::outbox::{attach, Attempt, OutboxItem};
use engine::store::{MessageRecord, Status, Store};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use transforms::model::{BusinessKey, BusinessKeyKind};

const DAY_MS: u64 = 86_400_000;
/// Messages written between two group commits.
const BATCH: u64 = 2_000;
/// Messages between two progress lines.
const PROGRESS: u64 = 100_000;

/// The synthetic message `n`: its control id and raw bytes (about 340 bytes, no real person).
fn message(n: u64) -> (String, Vec<u8>) {
    let control_id = format!("SB{n:010}");
    let raw = format!(
        "MSH|^~\\&|HIS|MAIN|SB|HUB|20250101120000||ADT^A04^ADT_A01|{control_id}|P|2.5.1|||AL|NE\r\
         EVN|A04|20250101120000|||OPERATOR^Test^Op\r\
         PID|1||P{n:08}^^^MAIN^MR~{n:09}^^^NHS^NH||Testperson^Alex^J||19800101|U|||\
         1 Example Street^^Testtown^^AB1 2CD^GBR^H||^PRN^PH^^^^^0100000000\r\
         PV1|1|O|CLINIC^ROOM1^BED1^MAIN||||DOC1^Doctor^Dana|||MED||||1|||DOC1^Doctor^Dana|OP|V{n:08}\r"
    );
    (control_id, raw.into_bytes())
}

/// The answer the channel sent (an AA naming the message).
fn ack(control_id: &str, id: u64) -> String {
    format!(
        "MSH|^~\\&|SB|HUB|HIS|MAIN|20250101120000||ACK^A04^ACK|{id}|P|2.5.1\rMSA|AA|{control_id}\r"
    )
}

/// The business keys routing read from the message (patient ids, visit number, name words).
fn business_keys(n: u64) -> Vec<BusinessKey> {
    let key = |kind, value: String| BusinessKey { kind, value };
    vec![
        key(BusinessKeyKind::PatientId, format!("P{n:08}")),
        key(BusinessKeyKind::PatientId, format!("{n:09}")),
        key(BusinessKeyKind::VisitNumber, format!("V{n:08}")),
        key(BusinessKeyKind::PatientName, "testperson".into()),
        key(BusinessKeyKind::PatientName, "alex".into()),
    ]
}

/// The record of message `id` as ingest writes it, its delivery attached.
fn record(
    id: u64,
    at_ms: u64,
    channel: &str,
    (control_id, raw): (&str, &[u8]),
    (n, dedup): (u64, &str),
    item: &OutboxItem,
) -> MessageRecord {
    let mut rec = MessageRecord {
        id,
        channel: channel.into(),
        received_at_ms: at_ms,
        peer: "127.0.0.1:40000".into(),
        format: channels::source::RecordFormat::Hl7v2.into(),
        message_type: "ADT^A04".into(),
        control_id: control_id.into(),
        sending_application: "HIS".into(),
        sending_facility: "MAIN".into(),
        version: "2.5.1".into(),
        charset: "utf-8".into(),
        size: raw.len(),
        truncated: false,
        status: Status::Received,
        ack_code: "AA".into(),
        ack: ack(control_id, id),
        errors: Vec::new(),
        config_version: "prefill".into(),
        deliveries: Vec::new(),
        business_keys: business_keys(n),
        dedup_key: dedup.into(),
        resent_from: None,
    };
    attach(&mut rec, std::slice::from_ref(item));
    rec
}

/// The rendered delivery of message `id` to `CHANNEL/files` (the message as received).
fn item(store: &Store, channel: &str, id: u64, at_ms: u64, raw: &[u8]) -> OutboxItem {
    OutboxItem {
        destination: format!("{channel}/files"),
        seq: store.next_seq(),
        message_id: id,
        partition: String::new(),
        created_at_ms: at_ms,
        attempts: 0,
        next_attempt_ms: at_ms,
        last_error: String::new(),
        content_type: "application/hl7-v2".into(),
        idempotency_key: format!("{id}-files"),
        control_id: None,
        message_type: "ADT_A04".into(),
        path: None,
        payload: ItemPayload::Rendered(channels::kind::PayloadKind::Hl7).into(),
        appointment: None,
        reference: None,
        master: false,
        body: raw.to_vec(),
    }
}

/// One message written and delivered, waiting for its batch's commit.
struct Written {
    item: OutboxItem,
    attempt: Attempt,
    detail: String,
    pending: Pending,
}

/// Writes message `n` as ingest does (claim, record, raw bytes, indexes, outbox item).
async fn write_one(
    store: &Store,
    channel: &str,
    n: u64,
    at_ms: u64,
) -> Result<Written, Box<dyn std::error::Error>> {
    let (control_id, raw) = message(n);
    let id = store.next_id(at_ms);
    let dedup = dedup_key(channel, &format!("HIS\u{1f}MAIN\u{1f}{control_id}"));
    let digest: [u8; 32] = Sha256::digest(&raw).into();
    let pending = match store.claim(&dedup, &digest, id).await? {
        Claim::New(p) | Claim::Reused { pending: p, .. } => p,
        Claim::Duplicate(_) => return Err(format!("message {n} is already stored").into()),
    };
    let item = item(store, channel, id, at_ms, &raw);
    let rec = record(id, at_ms, channel, (&control_id, &raw), (n, &dedup), &item);
    store.put(&rec, &raw, std::slice::from_ref(&item))?;
    let detail = format!("{control_id}.hl7");
    let attempt = Attempt {
        destination: item.destination.clone(),
        attempt: 1,
        at_ms: at_ms + 2,
        outcome: Outcome::Delivered.into(),
        status: None,
        detail: detail.clone(),
        duration_ms: 1,
        answer: None,
    };
    Ok(Written {
        item,
        attempt,
        detail,
        pending,
    })
}

/// Commits a batch, then records each delivery's outcome as the file destination does.
async fn settle(store: &Store, batch: Vec<Written>) -> Result<(), Box<dyn std::error::Error>> {
    store.commit().await?;
    let done: Vec<(&OutboxItem, &Attempt, &str)> = batch
        .iter()
        .map(|w| (&w.item, &w.attempt, w.detail.as_str()))
        .collect();
    store.finish_delivered_all(&done)?;
    for w in batch {
        w.pending.durable();
    }
    Ok(())
}

fn progress(n: u64, count: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    let rate = n as f64 / secs.max(0.001);
    let eta = (count - n) as f64 / rate.max(1.0);
    eprintln!(
        "prefill: {n} of {count} written, {rate:.0} msgs/s, {secs:.0} s so far, ETA {eta:.0} s"
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: prefill DATA_DIR COUNT [DAYS_OLD] [CHANNEL] [FIRST]";
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let count: u64 = args.next().ok_or(usage)?.parse()?;
    let days_old: u64 = args.next().map_or(Ok(0), |d| d.parse())?;
    let channel = args.next().unwrap_or_else(|| "perf".into());
    let first: u64 = args.next().map_or(Ok(0), |f| f.parse())?;
    let store = Store::open(&dir, Durability::Os, &Metrics::new("prefill"))?;
    let now_ms = u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
    let start_ms = now_ms - days_old * DAY_MS - count;
    let started = Instant::now();
    let mut batch = Vec::with_capacity(BATCH as usize);
    for n in 0..count {
        batch.push(write_one(&store, &channel, first + n, start_ms + n).await?);
        if batch.len() as u64 == BATCH {
            settle(&store, std::mem::take(&mut batch)).await?;
        }
        if (n + 1) % PROGRESS == 0 {
            progress(n + 1, count, started);
        }
    }
    settle(&store, batch).await?;
    store.flush().await?;
    println!(
        "prefill: {count} delivered messages, the newest {days_old} days old, written to {} in {:.1?}",
        dir.display(),
        started.elapsed()
    );
    Ok(())
}
