//! Power cuts: the engine's data folder on a disk that loses what was not fsynced.
//!
//! The disk is `lazyfs` (tests/lazyfs/), a FUSE filesystem over a temporary folder that
//! keeps written data in memory until the application fsyncs the file, and throws it away
//! on a `cut`. A power cut here is: SIGKILL the engine, `cut`, unmount, mount afresh (so that
//! nothing the kernel still holds hides the loss), start the engine again. A kill -9 alone
//! (tests/crash.rs) cannot find a missing fsync; this can.
//!
//! Mounting needs /dev/fuse and root (or `fusermount3`, Debian's `fuse3`, which `.ci/run`
//! installs). Without them these tests fail; they never skip.

use crate::sftp::{names, poller_config, Sshd};
use crate::support::*;
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// A `lazyfs` mount at a path of the test's choosing, over a backing folder of its own.
/// Dropping it unmounts, whatever state the daemon is in.
pub struct PowerCutDisk {
    backing: tempfile::TempDir,
    mountpoint: PathBuf,
    daemon: Option<Daemon>,
}

struct Daemon {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl PowerCutDisk {
    /// Mounts a fresh, empty disk at `mountpoint` (created if missing).
    pub fn mount(mountpoint: &Path) -> PowerCutDisk {
        std::fs::create_dir_all(mountpoint).expect("create the mountpoint");
        let mut disk = PowerCutDisk {
            backing: tempfile::tempdir().expect("backing tempdir"),
            mountpoint: mountpoint
                .canonicalize()
                .expect("the mountpoint has a canonical path"),
            daemon: None,
        };
        disk.start();
        disk
    }

    fn start(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lazyfs"))
            .arg(self.backing.path())
            .arg(&self.mountpoint)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the lazyfs binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        self.daemon = Some(Daemon {
            child,
            stdin,
            lines,
        });
        let ready = self.answer();
        assert_eq!(
            ready,
            "ready",
            "lazyfs did not mount on {} (needs /dev/fuse, and root or fusermount3: apt-get install fuse3)",
            self.mountpoint.display()
        );
        assert!(
            mounted(&self.mountpoint),
            "lazyfs says ready but {} is not in /proc/self/mountinfo",
            self.mountpoint.display()
        );
    }

    fn answer(&mut self) -> String {
        let daemon = self.daemon.as_mut().expect("lazyfs is running");
        match daemon.lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(e) => panic!(
                "no answer from lazyfs ({e}); exit status: {:?}",
                daemon.child.try_wait()
            ),
        }
    }

    fn command(&mut self, command: &str) -> String {
        let daemon = self.daemon.as_mut().expect("lazyfs is running");
        let stdin = daemon.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .expect("lazyfs reads commands");
        self.answer()
    }

    /// The power cut: unsynced data and size changes are gone. Kill every writer first.
    /// Returns the dirty bytes thrown away.
    pub fn cut(&mut self) -> u64 {
        let answer = self.command("cut");
        field(&answer, "bytes").unwrap_or_else(|| panic!("unexpected answer to cut: {answer}"))
    }

    /// A counter from `stats` (`fsyncs`, `fsyncdirs`, `writes`, `cuts`, `pending_files`,
    /// `pending_bytes`).
    pub fn stat(&mut self, name: &str) -> u64 {
        let answer = self.command("stats");
        field(&answer, name).unwrap_or_else(|| panic!("no {name} in {answer}"))
    }

    /// Unmounts and mounts again with an empty cache, as after a reboot.
    pub fn remount(&mut self) {
        self.stop();
        assert!(
            !mounted(&self.mountpoint),
            "{} still mounted",
            self.mountpoint.display()
        );
        self.start();
    }

    /// Ends the daemon (end of input: unmount, exit), forcibly if it does not go, and makes
    /// sure nothing stays mounted.
    fn stop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            drop(daemon.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(20);
            while daemon.child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = daemon.child.kill();
                    let _ = daemon.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if mounted(&self.mountpoint) {
            // The daemon died or could not unmount (busy): detach the mount lazily.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mountpoint)
                .status();
        }
    }
}

impl Drop for PowerCutDisk {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `name=N` in a `lazyfs` answer.
fn field(answer: &str, name: &str) -> Option<u64> {
    answer
        .split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

/// Whether `path` is a mountpoint of this process's mount namespace.
fn mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let path = path.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(path.as_ref()))
}

/// A small pseudo-random sequence (xorshift), seeded from the clock and printed, so that
/// the kill times differ from run to run and a failing run can be told apart.
struct Jitter(u64);

impl Jitter {
    fn from_clock(what: &str) -> Jitter {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15)
            | 1;
        eprintln!("{what}: jitter seed {seed}");
        Jitter(seed)
    }

    /// A number in `lo..hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo)
    }
}

/// Control ids of every stored message (of `channel`, or all), read page by page.
async fn stored_control_ids(engine: &EngineProcess, channel: Option<&str>) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut before: Option<String> = None;
    loop {
        let mut url = format!("{}/api/messages?limit=10000", engine.admin());
        if let Some(c) = channel {
            url.push_str(&format!("&channel={c}"));
        }
        if let Some(b) = &before {
            url.push_str(&format!("&before={b}"));
        }
        let page = get_json(&url).await;
        let items = page["items"].as_array().expect("items");
        for m in items {
            ids.insert(m["control_id"].as_str().expect("control id").to_string());
        }
        match items.last() {
            Some(last) if items.len() == 10_000 => {
                before = Some(last["id"].as_str().expect("id").to_string());
            }
            _ => return ids,
        }
    }
}

/// Fails with the first few of `expected` that are not in `stored`.
fn assert_all_stored<'a>(
    expected: impl IntoIterator<Item = &'a String>,
    stored: &HashSet<String>,
    when: &str,
) {
    let mut missing: Vec<&String> = expected
        .into_iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "{when}: {} acknowledged messages lost, e.g. {:?}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
}

/// Load for a power cut: `connections` MLLP clients on `addr`, each sending at most
/// `per_connection` ADTs with control ids `<prefix>-<conn>-<i>` until `stop` (or the engine is
/// gone), adding every id answered AA/CA to `acked`.
fn burst(
    addr: &str,
    connections: usize,
    per_connection: usize,
    prefix: &str,
    acked: &Arc<Mutex<HashSet<String>>>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..connections)
        .map(|conn| {
            let (addr, acked, stop) = (addr.to_string(), acked.clone(), stop.clone());
            let prefix = prefix.to_string();
            tokio::spawn(async move {
                let Ok(mut client) =
                    channels::mllp::client::MllpClient::connect(&addr, Duration::from_secs(5))
                        .await
                else {
                    return;
                };
                for i in 0..per_connection {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let id = format!("{prefix}-{conn}-{i}");
                    let Ok(bytes) = client.send(adt(&id).as_bytes()).await else {
                        return; // the engine is gone
                    };
                    let text = String::from_utf8_lossy(&bytes);
                    if matches!(segment(&text, "MSA")[1].as_str(), "AA" | "CA") {
                        acked.lock().expect("lock").insert(id);
                    }
                }
            })
        })
        .collect()
}

#[test]
fn the_disk_loses_what_was_not_fsynced_and_keeps_what_was() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("mnt");
    let mut disk = PowerCutDisk::mount(&mnt);
    let write = |name: &str, data: &[u8], sync: bool| {
        let mut f = std::fs::File::create(mnt.join(name)).expect("create");
        f.write_all(data).expect("write");
        if sync {
            f.sync_all().expect("fsync");
        }
    };
    write("synced", b"kept by fsync", true);
    write("unsynced", b"never synced", false);
    write("overwritten", b"old content", true);
    write("truncated", b"0123456789", true);
    write("appended", b"base", true);
    write("datasync", b"", true);
    {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(mnt.join("overwritten"))
            .expect("open");
        f.write_all_at(b"NEW", 0).expect("overwrite");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(mnt.join("truncated"))
            .expect("open");
        f.set_len(3).expect("truncate");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(mnt.join("appended"))
            .expect("open");
        f.write_all(b"+more").expect("append");
        // fdatasync through another descriptor than the one written: it syncs the file.
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .open(mnt.join("datasync"))
            .expect("open");
        w.write_all(b"kept by fdatasync").expect("write");
        drop(w); // close() is no sync
        std::fs::File::open(mnt.join("datasync"))
            .and_then(|r| r.sync_data())
            .expect("fdatasync");
        std::fs::File::open(&mnt)
            .and_then(|d| d.sync_all())
            .expect("fsync of the folder");
    }
    // Before the cut, every reader sees every write, synced or not.
    let read = |name: &str| std::fs::read(mnt.join(name)).expect("read");
    assert_eq!(read("unsynced"), b"never synced");
    assert_eq!(read("overwritten"), b"NEW content");
    assert_eq!(read("truncated"), b"012");
    assert_eq!(read("appended"), b"base+more");
    assert!(disk.stat("fsyncs") >= 6, "fsync reaches the filesystem");
    assert!(disk.stat("fsyncdirs") >= 1, "so does fsync of a folder");
    assert!(disk.stat("pending_files") >= 4);

    let dropped = disk.cut();
    assert!(dropped >= 3 * 4096, "three files' pages dropped: {dropped}");
    disk.remount();
    assert_eq!(read("synced"), b"kept by fsync");
    assert_eq!(read("datasync"), b"kept by fdatasync");
    assert_eq!(
        read("unsynced"),
        b"",
        "created (metadata is kept), data lost"
    );
    assert_eq!(read("overwritten"), b"old content");
    assert_eq!(read("truncated"), b"0123456789");
    assert_eq!(read("appended"), b"base");
    drop(disk);
    assert!(!mounted(&mnt), "dropping the disk unmounts it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_power_cuts_under_load_lose_no_acknowledged_message() {
    const CUTS: usize = 20;
    const CONNECTIONS: usize = 16;
    let started = Instant::now();
    let cfg = TestConfig::new("", "");
    let mut disk = PowerCutDisk::mount(&cfg.data());
    let mut jitter = Jitter::from_clock("power cuts under load");
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut dropped = Vec::new();
    for cut in 0..=CUTS {
        // The store must open after every cut, and hold everything acknowledged before it.
        let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
        if cut > 0 {
            let stored = stored_control_ids(&engine, None).await;
            let acked = acked.lock().expect("lock").clone();
            assert_all_stored(&acked, &stored, &format!("after power cut {cut}"));
        }
        if cut == CUTS {
            break;
        }
        let addr = engine.mllp("lab");
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = burst(&addr, CONNECTIONS, 2000, &format!("PC{cut}"), &acked, &stop);
        tokio::time::sleep(Duration::from_millis(jitter.between(200, 1200))).await;
        engine.kill();
        dropped.push(disk.cut());
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        disk.remount();
    }
    let acked = acked.lock().expect("lock").len();
    eprintln!(
        "power cuts under load: {CUTS} cuts, {acked} messages acknowledged and kept, {:.1} s; unsynced KiB dropped by each cut: {:?}",
        started.elapsed().as_secs_f64(),
        dropped.iter().map(|b| b / 1024).collect::<Vec<_>>()
    );
    assert!(
        acked >= 20 * CUTS,
        "the load produced too few ACKs to mean anything: {acked}"
    );
    // Each cut must have had something to lose, or it proved nothing.
    let idle = dropped.iter().filter(|&&b| b == 0).count();
    assert!(
        idle <= CUTS / 4,
        "{idle} of {CUTS} cuts found no unsynced data: {dropped:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_file_is_archived_or_deleted_only_after_its_messages_survive_a_power_cut() {
    const CUTS: usize = 6;
    const FILES: usize = 3;
    const MESSAGES: usize = 8;
    let started = Instant::now();
    let sshd = Sshd::start();
    let cfg = poller_config(&sshd, &sshd.host_key, "");
    let channel_file = cfg.conf().join("channels/drop.toml");
    let archiving = std::fs::read_to_string(&channel_file).expect("channel file");
    let deleting = archiving.replacen(
        "type = \"sftp\"\n",
        "type = \"sftp\"\nafter = \"delete\"\n",
        1,
    );
    assert_ne!(archiving, deleting);
    let mut disk = PowerCutDisk::mount(&cfg.data());
    let (inbox, archive) = (sshd.folder("in"), sshd.folder("archive"));
    // File name -> the control ids in it.
    let mut files: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // Files the engine took away (archived or deleted) before the last power cut.
    let mut taken: Vec<String> = Vec::new();
    for round in 0..=CUTS {
        // Even rounds archive, odd rounds delete; the last round, after the last cut,
        // archives what is left.
        let deletes = round % 2 == 1;
        let config = if deletes { &deleting } else { &archiving };
        std::fs::write(&channel_file, config).expect("write channel file");
        let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
        if round > 0 {
            let stored = stored_control_ids(&engine, Some("drop")).await;
            for name in &taken {
                assert_all_stored(
                    &files[name],
                    &stored,
                    &format!("{name} taken from the server, then power cut {round}"),
                );
            }
        }
        if round == CUTS {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !names(&inbox).is_empty() {
                assert!(
                    Instant::now() < deadline,
                    "inbox not emptied: {:?}",
                    names(&inbox)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let stored = stored_control_ids(&engine, Some("drop")).await;
            assert_all_stored(files.values().flatten(), &stored, "at the end");
            break;
        }
        let mut new = Vec::new();
        for f in 0..FILES {
            let name = format!("pc-{round}-{f}.hl7");
            let ids: Vec<String> = (0..MESSAGES)
                .map(|m| format!("SFTPPC-{round}-{f}-{m}"))
                .collect();
            let body: String = ids.iter().map(|id| adt(id)).collect();
            std::fs::write(inbox.join(&name), body).expect("write");
            files.insert(name.clone(), ids);
            new.push(name);
        }
        // Cut the power the moment a file of this round is taken away.
        let deadline = Instant::now() + Duration::from_secs(60);
        while new.iter().all(|n| inbox.join(n).exists()) {
            assert!(
                Instant::now() < deadline,
                "no file taken (deleting: {deletes}) within 60 s in round {round}; inbox: {:?}",
                names(&inbox)
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        engine.kill();
        disk.cut();
        disk.remount();
        taken = files
            .keys()
            .filter(|n| !inbox.join(n).exists())
            .cloned()
            .collect();
    }
    let archived = names(&archive);
    eprintln!(
        "sftp power cuts: {CUTS} cuts, {} files ({} archived, the others deleted), {} messages kept, {:.1} s",
        files.len(),
        archived.len(),
        files.values().map(Vec::len).sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        !archived.is_empty() && archived.len() < files.len(),
        "some files archived, the others deleted: {archived:?}"
    );
}

/// MSH-10 of every complete file in `folder`; panics on a file under its final name that is
/// empty or cut short (its data was not synced before it was reported delivered).
fn delivered_control_ids(folder: &Path) -> HashSet<String> {
    let mut ids = HashSet::new();
    let Ok(entries) = std::fs::read_dir(folder) else {
        return ids;
    };
    for e in entries {
        let e = e.expect("entry");
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue; // a temporary file: never reported delivered
        }
        let text = match std::fs::read_to_string(e.path()) {
            Ok(t) => t,
            // While the engine runs, a redelivery renames a new copy over the file; lazyfs
            // (a FUSE overlay) may show the name missing for that instant. The caller looks
            // again; after a cut nothing runs and every listed file must read.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("read a delivered file {name}: {e}"),
        };
        assert!(
            text.starts_with("MSH|") && text.ends_with("PV1|1|O\r"),
            "{name} is under its final name but incomplete ({} bytes)",
            text.len()
        );
        ids.insert(segment(&text, "MSH")[9].clone());
    }
    ids
}

/// What the store says about acknowledged messages missing from the file destination's
/// folder: how many per load round, and for the first few their status, deliveries, attempts
/// and queued payloads, and whether a file of their idempotency key exists.
async fn explain_missing(engine: &EngineProcess, folder: &Path, missing: &[String]) -> Vec<String> {
    let mut rounds: BTreeMap<String, usize> = BTreeMap::new();
    for id in missing {
        let round = id.split('-').next().unwrap_or_default().to_string();
        *rounds.entry(round).or_default() += 1;
    }
    let mut out = vec![format!("missing per load round: {rounds:?}")];
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for (n, control_id) in missing.iter().take(200).enumerate() {
        let page = get_json(&format!(
            "{}/api/messages?control_id={control_id}",
            engine.admin()
        ))
        .await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        let Some(first) = items.first() else {
            *statuses.entry("not stored".into()).or_default() += 1;
            continue;
        };
        *statuses
            .entry(first["status"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
        if n >= 8 {
            continue;
        }
        let id = first["id"].as_str().expect("id");
        let m = get_json(&format!("{}/api/messages/{id}", engine.admin())).await;
        let payloads: Vec<String> = m["payloads"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| {
                        format!(
                            "{} seq {} key {}",
                            p["destination"], p["seq"], p["idempotency_key"]
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let file = format!("{id}-files.hl7");
        out.push(format!(
            "{control_id}: message {id} ({} record(s)), status {}, deliveries {}, attempts {}, still queued: {payloads:?}, file {file} exists: {}",
            items.len(),
            first["status"],
            m["deliveries"],
            m["attempts"],
            folder.join(&file).exists()
        ));
    }
    out.insert(
        1,
        format!(
            "status of the first {}: {statuses:?}",
            missing.len().min(200)
        ),
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_written_by_the_file_destination_are_whole_after_power_cuts() {
    const CUTS: usize = 5;
    const CONNECTIONS: usize = 8;
    let cfg = TestConfig::new("", "");
    let out = cfg.data().join("out");
    let lab = cfg.conf().join("channels/lab.toml");
    let text = std::fs::read_to_string(&lab).expect("lab.toml");
    std::fs::write(
        &lab,
        format!(
            "{text}[[route]]\nname = \"adt\"\nwhen = {{ message_type = [\"ADT^*\"] }}\npayload = \"hl7\"\nto = [\"files\"]\n\
             [[destination]]\nname = \"files\"\ntype = \"file\"\nfolder = \"{}\"\nextension = \"hl7\"\n",
            out.display()
        ),
    )
    .expect("write lab.toml");
    let mut disk = PowerCutDisk::mount(&cfg.data());
    let mut jitter = Jitter::from_clock("file destination power cuts");
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut delivered_before_cuts = 0;
    for cut in 0..=CUTS {
        let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
        if cut == CUTS {
            // Whatever was acknowledged reaches the folder, at least once, after the last
            // restart; every file found is whole (asserted by `delivered_control_ids`).
            let acked = acked.lock().expect("lock").clone();
            let started = Instant::now();
            let deadline = started + Duration::from_secs(60);
            let mut missing: Vec<String> = acked.iter().cloned().collect();
            let mut progress = Vec::new();
            let mut next_report = started;
            while !missing.is_empty() && Instant::now() < deadline {
                let have = delivered_control_ids(&out);
                missing.retain(|id| !have.contains(id));
                if Instant::now() >= next_report {
                    progress.push(format!(
                        "{:.0} s: {}",
                        started.elapsed().as_secs_f64(),
                        missing.len()
                    ));
                    next_report += Duration::from_secs(5);
                }
                if !missing.is_empty() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            eprintln!(
                "file destination power cuts: {} acknowledged messages, all in the folder {:.1} s after the last restart (missing over time: {})",
                acked.len(),
                started.elapsed().as_secs_f64(),
                progress.join(", ")
            );
            if !missing.is_empty() {
                missing.sort();
                let why = explain_missing(&engine, &out, &missing).await;
                panic!(
                    "{} of {} acknowledged messages not in the folder 60 s after the last restart (missing over time: {}):\n{}",
                    missing.len(),
                    acked.len(),
                    progress.join(", "),
                    why.join("\n")
                );
            }
            break;
        }
        let addr = engine.mllp("lab");
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = burst(
            &addr,
            CONNECTIONS,
            1000,
            &format!("FPC{cut}"),
            &acked,
            &stop,
        );
        tokio::time::sleep(Duration::from_millis(jitter.between(400, 1500))).await;
        engine.kill();
        disk.cut();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        disk.remount();
        // Every file under its final name survived whole.
        delivered_before_cuts += delivered_control_ids(&out).len();
    }
    let acked = acked.lock().expect("lock").len();
    eprintln!(
        "file destination power cuts: {CUTS} cuts, {acked} messages acknowledged, {delivered_before_cuts} whole files found after the cuts"
    );
    assert!(
        delivered_before_cuts >= CUTS * 10,
        "too few files were delivered before the cuts to mean anything: {delivered_before_cuts}"
    );
}
