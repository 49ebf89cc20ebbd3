//! Faults: a full disk, a misbehaving destination network, and SIGKILL again and again.

use crate::fault_proxy::{Fault, FaultProxy};
use crate::support::*;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A tmpfs mounted on a folder for the length of a test; unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (such as `24m`) on `dir`, or says why it cannot.
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("mount cannot run: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// Fills the filesystem of `dir` with a file until `leave` bytes are free (roughly).
fn fill(dir: &Path, leave: u64) -> PathBuf {
    let file = dir.join("filler");
    let free = engine::metrics::disk_available_bytes(dir).expect("statvfs");
    let size = free.saturating_sub(leave);
    let chunk = vec![0xAAu8; 1024 * 1024];
    let mut f = std::fs::File::create(&file).expect("filler");
    let mut written = 0u64;
    while written < size {
        let n = (size - written).min(chunk.len() as u64) as usize;
        if std::io::Write::write_all(&mut f, &chunk[..n]).is_err() {
            break;
        }
        written += n as u64;
    }
    file
}

/// `(MSA-1, ERR-3 code)` of an answer.
fn code_and_err(ack: &str) -> (String, String) {
    let msa = segment(ack, "MSA")[1].clone();
    let err = ack
        .split('\r')
        .find(|s| s.starts_with("ERR"))
        .map(|s| {
            s.split('|')
                .nth(3)
                .unwrap_or_default()
                .split('^')
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_default();
    (msa, err)
}

/// An ADT^A04 asking for enhanced-mode commit ACKs.
fn adt_enhanced(control_id: &str) -> String {
    adt(control_id).replacen("|P|2.5.1\r", "|P|2.5.1|||AL|NE\r", 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_answers_ar_207_never_aa_and_recovers_when_space_returns() {
    let cfg = TestConfig::new("min_free_disk_bytes = 4194304", "");
    let data = cfg.data();
    let _tmpfs = match Tmpfs::mount(&data, "48m") {
        Ok(t) => t,
        Err(why) => {
            println!("SKIPPED disk-full test: cannot mount a tmpfs ({why})");
            return;
        }
    };
    let engine = EngineProcess::start(&cfg.conf(), &data);
    let mut client = connect(&engine.mllp("lab")).await;
    for i in 0..20 {
        let ack = send(&mut client, adt(&format!("DF-OK{i}")).as_bytes()).await;
        assert_eq!(segment(&ack, "MSA")[1], "AA", "{ack}");
    }
    // The disk fills up (by someone else): leave less than the 4 MiB reserve.
    let filler = fill(&data, 1024 * 1024);
    // The engine re-reads free space every 50 ms (store/space.rs); give it many of those.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..20 {
        let ack = send(&mut client, adt(&format!("DF-FULL{i}")).as_bytes()).await;
        assert_eq!(code_and_err(&ack), ("AR".into(), "207".into()), "{ack}");
    }
    let ack = send(&mut client, adt_enhanced("DF-FULL-E").as_bytes()).await;
    assert_eq!(code_and_err(&ack), ("CR".into(), "207".into()), "{ack}");
    // The sender resends what was refused: still refused, never AA, while the disk is full.
    let ack = send(&mut client, adt("DF-FULL0").as_bytes()).await;
    assert_eq!(code_and_err(&ack), ("AR".into(), "207".into()), "{ack}");
    // Nothing of those was stored (it could not be).
    let list = get_json(&format!("{}/api/messages?limit=100", engine.admin())).await;
    assert_eq!(list["count"], 20, "{list}");
    // Space comes back: AA again, without a restart.
    std::fs::remove_file(&filler).expect("remove filler");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ack = send(&mut client, adt("DF-BACK").as_bytes()).await;
        match code_and_err(&ack) {
            (c, _) if c == "AA" => break,
            (c, e) if c == "AR" && e == "207" && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => panic!("after space returned: {other:?} {ack}"),
        }
    }
    for i in 0..20 {
        let ack = send(&mut client, adt(&format!("DF-AFTER{i}")).as_bytes()).await;
        assert_eq!(segment(&ack, "MSA")[1], "AA", "{ack}");
    }
    // Resends of the refused originals are new messages now, stored and answered AA.
    for i in 0..20 {
        let ack = send(&mut client, adt(&format!("DF-FULL{i}")).as_bytes()).await;
        assert_eq!(segment(&ack, "MSA")[1], "AA", "{ack}");
    }
    let m = metrics_text(&engine).await;
    assert!(
        metric_value(
            &m,
            "switchboard_messages_rejected_total{channel=\"lab\",reason=\"store_error\"}"
        ) >= 21.0,
        "{m}"
    );
    // Every accepted message is there after a restart.
    drop(client);
    assert_eq!(engine.terminate(), Some(0));
    let engine = EngineProcess::start(&cfg.conf(), &data);
    let list = get_json(&format!("{}/api/messages?limit=100", engine.admin())).await;
    assert_eq!(list["count"], 61, "{list}");
    engine.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_faults_through_a_proxy_lose_nothing_once_it_heals() {
    let sink = HttpSink::start(SinkMode::Up).await;
    let target = sink
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/hook")
        .to_string();
    let proxy = FaultProxy::start(&target).await;
    let channel = format!(
        "[[route]]\nto = [\"hook\"]\npayload = \"hl7\"\n[[destination]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://{}/hook\"\ntimeout_secs = 1\n{FAST_RETRY}max_attempts = 100000\n",
        proxy.addr
    );
    let cfg = TestConfig::new("", &channel);
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    // Retries every 50-200 ms through ~10 s of faults: far more attempts than the default
    // limit of 20, which would (rightly) dead-letter them; this test is about healing.
    let mut client = connect(&engine.mllp("lab")).await;
    let faults = [
        Fault::Reset,
        Fault::Drop,
        Fault::Delay(Duration::from_millis(1500)),
        Fault::BlackHole,
        Fault::Delay(Duration::from_millis(50)),
        Fault::Reset,
    ];
    let mut sent = Vec::new();
    for (round, fault) in faults.iter().enumerate() {
        proxy.set(*fault);
        // Ten patients a round, so several partitions are in flight at once.
        for i in 0..10 {
            let id = format!("PX{round}-{i}");
            let ack = send(&mut client, adt_for(&format!("P{i}"), &id).as_bytes()).await;
            assert_eq!(
                segment(&ack, "MSA")[1],
                "AA",
                "the sender never waits for a destination"
            );
            sent.push(id);
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    assert!(
        proxy.accepted() > 0,
        "the destination was tried through the proxy"
    );
    proxy.set(Fault::Pass);
    let all_there = |sink: &HttpSink| {
        let got: HashSet<String> = sink
            .received()
            .iter()
            .map(|(_, b)| segment(b, "MSH")[9].clone())
            .collect();
        sent.iter().all(|id| got.contains(id))
    };
    assert!(
        eventually(60, || all_there(&sink)).await,
        "after healing, {} of {} delivered",
        sink.received().len(),
        sent.len()
    );
    // At least once, and each message under one idempotency key however often it was tried.
    let mut keys_per_message: std::collections::HashMap<String, HashSet<String>> =
        std::collections::HashMap::new();
    for (key, body) in sink.received() {
        keys_per_message
            .entry(segment(&body, "MSH")[9].clone())
            .or_default()
            .insert(key);
    }
    for id in &sent {
        assert_eq!(keys_per_message[id].len(), 1, "{id} under one key");
    }
    // The store agrees: every message delivered, no dead letter.
    let ok = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let list = get_json(&format!(
                "{}/api/messages?status=delivered&limit=1000",
                engine.admin()
            ))
            .await;
            if list["count"] == sent.len() {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert!(ok, "not every message is marked delivered");
    let m = metrics_text(&engine).await;
    assert_eq!(
        metric_value(
            &m,
            "switchboard_dead_letters_total{channel=\"lab\",destination=\"hook\"}"
        ),
        0.0
    );
    println!(
        "fault proxy: {} connections, {} requests reached the sink for {} messages",
        proxy.accepted(),
        sink.requests(),
        sent.len()
    );
}

/// Every control id in the store, paging through the admin API.
async fn stored_control_ids(admin: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut before = String::new();
    loop {
        let url = if before.is_empty() {
            format!("{admin}/api/messages?limit=5000")
        } else {
            format!("{admin}/api/messages?limit=5000&before={before}")
        };
        let list = get_json(&url).await;
        let items = list["items"].as_array().expect("items");
        if items.is_empty() {
            return out;
        }
        for m in items {
            out.insert(m["control_id"].as_str().expect("control id").to_string());
        }
        before = items[items.len() - 1]["id"]
            .as_str()
            .expect("id")
            .to_string();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_load_twenty_times_loses_no_acked_message_and_restarts_fast() {
    const ROUNDS: usize = 20;
    let cfg = TestConfig::new("", "");
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut restarts = Vec::new();
    for round in 0..ROUNDS {
        let started = Instant::now();
        let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
        let restart = started.elapsed();
        restarts.push(restart);
        let addr = engine.mllp("lab");
        let mut tasks = Vec::new();
        for conn in 0..8 {
            let addr = addr.clone();
            let acked = acked.clone();
            tasks.push(tokio::spawn(async move {
                let Ok(mut client) =
                    channels::mllp::client::MllpClient::connect(&addr, Duration::from_secs(5))
                        .await
                else {
                    return;
                };
                for i in 0..1000 {
                    let id = format!("KK{round}-{conn}-{i}");
                    match client.send(adt(&id).as_bytes()).await {
                        Ok(bytes) => {
                            let text = String::from_utf8_lossy(&bytes);
                            if segment(&text, "MSA")[1] == "AA" {
                                acked.lock().expect("lock").insert(id);
                            }
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        // Kill at a different moment each round.
        tokio::time::sleep(Duration::from_millis(150 + (round as u64 * 37) % 300)).await;
        engine.kill();
        for t in tasks {
            let _ = t.await;
        }
    }
    let started = Instant::now();
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    restarts.push(started.elapsed());
    let stored = stored_control_ids(&engine.admin()).await;
    let acked = acked.lock().expect("lock").clone();
    let worst = restarts.iter().max().copied().unwrap_or_default();
    let mean = restarts.iter().sum::<Duration>() / restarts.len() as u32;
    println!(
        "SIGKILL x{ROUNDS}: {} ACKed, {} stored; restart (spawn to ports bound) mean {mean:?}, worst {worst:?}",
        acked.len(),
        stored.len()
    );
    assert!(
        acked.len() > 500,
        "too few ACKs to mean anything: {}",
        acked.len()
    );
    let missing: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} ACKed messages lost, e.g. {:?}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    // Generous: the goal is 5 s; only a pathological start fails this.
    assert!(worst < Duration::from_secs(30), "a restart took {worst:?}");
}
