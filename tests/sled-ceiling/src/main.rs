//! What sled 0.34 can commit durably on this machine, measured beside a plain log.
//!
//! Every mode runs W writer threads in a closed loop: a writer writes one message, hands a
//! waiter to the committer and waits for it, then writes the next. The committer is the
//! engine's group commit (engine/src/store/commit.rs): it takes every waiting writer, makes
//! what they wrote durable once, and answers them all. So each figure is "messages per second
//! that could be acknowledged", with no network, parsing or routing in it:
//!
//! - `file`: the message (400 bytes) appended to one file, one `fdatasync` per batch: the
//!   floor server's own work without its sockets.
//! - `sled:N`: N sled inserts per message, as the engine's ingest makes them: the record
//!   with the raw bytes (1,400 bytes, key = a sequence number), then an outbox item with a
//!   rendered body (700 bytes) when N >= 2, then N - 2 index keys (48-byte keys, 16-byte
//!   values) over four other trees; the commit is sled's `flush` then `fdatasync` of its file.
//! - `sled-nofsync:N`: the same writes with only sled's `flush` (its `sync_file_range`), which
//!   is what the engine did before it fsynced: the part of the cost that is sled's own.
//! - `sled-batch:N`: the record and the outbox item as in `sled:N`, but the N - 2 index keys
//!   handed to the committer, which writes those of every message of the group commit with
//!   one `Tree::apply_batch` per index tree before its flush: whether batching the small
//!   writes of a group commit per tree makes them cheaper.
//! - `sled-later:N`: the record and the outbox item as in `sled:N`; the N - 2 index keys go
//!   to one indexer thread (through a queue of at most 256 messages, so that writers wait
//!   when it falls behind), which inserts them key by key after the answer: the index off the
//!   answer's path.
//!
//! Usage: `sled-ceiling --dir DIR [--writers 64] [--secs 5] [--inserts "1 2 6 10"]`.
//! Everything is written under DIR (removed at the end); nothing listens on the network.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One way of making a batch of writes durable.
trait Durable: Send + 'static {
    fn commit(&mut self) -> std::io::Result<()>;
}

/// An append-only file: one fdatasync per batch.
struct FileLog {
    file: File,
}

impl Durable for FileLog {
    fn commit(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

/// Index entries waiting for the committer (`sled-batch`): the tree's number, key, value.
type Pending = Arc<Mutex<Vec<(usize, [u8; 48], [u8; 8])>>>;

/// sled's flush, then (with `fsync`) an fdatasync of its data file, as the engine commits;
/// with `batched`, first the waiting index entries, one `apply_batch` per tree.
struct SledLog {
    db: sled::Db,
    file: File,
    fsync: bool,
    batched: Option<(Pending, Vec<sled::Tree>)>,
}

impl Durable for SledLog {
    fn commit(&mut self) -> std::io::Result<()> {
        if let Some((pending, trees)) = &self.batched {
            let entries = std::mem::take(&mut *pending.lock().expect("pending lock"));
            let mut batches: Vec<sled::Batch> =
                trees.iter().map(|_| sled::Batch::default()).collect();
            for (t, k, v) in entries {
                batches[t].insert(&k[..], &v[..]);
            }
            for (tree, batch) in trees.iter().zip(batches) {
                tree.apply_batch(batch).map_err(std::io::Error::other)?;
            }
        }
        self.db.flush().map_err(std::io::Error::other)?;
        if self.fsync {
            self.file.sync_data()?;
        }
        Ok(())
    }
}

/// What one run measured.
struct Figures {
    messages: u64,
    batches: u64,
    secs: f64,
}

/// The committer: takes every waiting writer, commits once, answers them all.
fn committer<D: Durable>(mut d: D, rx: Receiver<SyncSender<()>>, batches: Arc<AtomicU64>) {
    let mut batch = Vec::with_capacity(1024);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while let Ok(w) = rx.try_recv() {
            batch.push(w);
        }
        d.commit().expect("the disk takes the commit");
        batches.fetch_add(1, Ordering::Relaxed);
        for w in batch.drain(..) {
            let _ = w.send(());
        }
    }
}

/// Runs `writers` threads calling `write(seq)` then waiting for the commit, for `secs`.
fn run<D: Durable, W: Fn(u64) + Send + Sync + 'static>(
    durable: D,
    write: W,
    writers: usize,
    secs: u64,
) -> Figures {
    let (tx, rx): (Sender<SyncSender<()>>, _) = channel();
    let batches = Arc::new(AtomicU64::new(0));
    let b = batches.clone();
    let committer = std::thread::spawn(move || committer(durable, rx, b));
    let stop = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let write = Arc::new(write);
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let (tx, stop, seq, done, write) = (
                tx.clone(),
                stop.clone(),
                seq.clone(),
                done.clone(),
                write.clone(),
            );
            std::thread::spawn(move || {
                let (reply, answer) = sync_channel(1);
                while !stop.load(Ordering::Relaxed) {
                    write(seq.fetch_add(1, Ordering::Relaxed));
                    tx.send(reply.clone()).expect("committer runs");
                    answer.recv().expect("committer answers");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let messages = done.load(Ordering::Relaxed);
    let batches_then = batches.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    for t in threads {
        t.join().expect("writer ends");
    }
    drop(tx);
    committer.join().expect("committer ends");
    Figures {
        messages,
        batches: batches_then,
        secs,
    }
}

fn file_mode(dir: &Path, writers: usize, secs: u64) -> Figures {
    let path = dir.join("log");
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("the log file opens");
    let shared = Arc::new(Mutex::new(file.try_clone().expect("the log file clones")));
    let message = vec![b'M'; 400];
    let figures = run(
        FileLog { file },
        move |_| {
            shared
                .lock()
                .expect("log lock")
                .write_all(&message)
                .expect("the log takes the write");
        },
        writers,
        secs,
    );
    let _ = std::fs::remove_file(path);
    figures
}

fn sled_mode(
    dir: &Path,
    inserts: usize,
    (fsync, batched, later): (bool, bool, bool),
    writers: usize,
    secs: u64,
) -> Figures {
    let path = dir.join(format!("sled-{inserts}-{fsync}-{batched}-{later}"));
    // As the engine opens its store (engine/src/store/mod.rs).
    let db = sled::Config::new()
        .path(&path)
        .cache_capacity(256 * 1024 * 1024)
        .flush_every_ms(Some(1000))
        .open()
        .expect("sled opens");
    let file = File::open(path.join("db")).expect("sled's data file opens");
    let messages = db.open_tree("messages").expect("tree");
    let outbox = db.open_tree("outbox").expect("tree");
    let index: Vec<sled::Tree> = (0..4)
        .map(|i| db.open_tree(format!("index{i}")).expect("tree"))
        .collect();
    let record = vec![b'R'; 1400];
    let body = vec![b'B'; 700];
    let pending: Pending = Arc::default();
    let to_commit = pending.clone();
    let (to_indexer, queue) = sync_channel::<Vec<(usize, [u8; 48], [u8; 8])>>(256);
    let indexer = {
        let index = index.clone();
        std::thread::spawn(move || {
            while let Ok(entries) = queue.recv() {
                for (t, k, v) in entries {
                    index[t].insert(k, &v[..]).expect("insert");
                }
            }
        })
    };
    let to_indexer = Mutex::new(to_indexer);
    let figures = run(
        SledLog {
            db: db.clone(),
            file,
            fsync,
            batched: batched.then(|| (pending, index.clone())),
        },
        move |seq| {
            let key = seq.to_be_bytes();
            messages.insert(key, record.as_slice()).expect("insert");
            if inserts >= 2 {
                outbox.insert(key, body.as_slice()).expect("insert");
            }
            let mut deferred = Vec::new();
            for i in 0..inserts.saturating_sub(2) {
                // Index keys sort by value, not by time: spread them as business keys do.
                let mut k = [0u8; 48];
                let h = seq
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .wrapping_add(i as u64);
                k[..8].copy_from_slice(&h.to_be_bytes());
                k[40..].copy_from_slice(&key);
                if batched {
                    to_commit
                        .lock()
                        .expect("pending lock")
                        .push((i % 4, k, key));
                } else if later {
                    deferred.push((i % 4, k, key));
                } else {
                    index[i % 4].insert(k, &key[..]).expect("insert");
                }
            }
            if !deferred.is_empty() {
                let tx = to_indexer.lock().expect("indexer lock").clone();
                tx.send(deferred).expect("indexer runs");
            }
        },
        writers,
        secs,
    );
    // `run` dropped the writers' closure, and with it the queue's sender.
    indexer.join().expect("indexer ends");
    drop(db);
    let _ = std::fs::remove_dir_all(path);
    figures
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(dir) = arg(&args, "--dir").map(PathBuf::from) else {
        eprintln!(
            "usage: sled-ceiling --dir DIR [--writers 64] [--secs 5] [--inserts \"1 2 6 10\"]"
        );
        std::process::exit(2);
    };
    let writers: usize = arg(&args, "--writers").map_or(64, |v| v.parse().expect("--writers N"));
    let secs: u64 = arg(&args, "--secs").map_or(5, |v| v.parse().expect("--secs N"));
    let inserts: Vec<usize> = arg(&args, "--inserts")
        .unwrap_or_else(|| "1 2 6 10".into())
        .split_whitespace()
        .map(|v| v.parse().expect("--inserts \"N N ...\""))
        .collect();
    std::fs::create_dir_all(&dir).expect("the folder is created");
    println!(
        "{:<16} {:>12} {:>10} {:>10} {:>8}",
        "mode", "msgs/s", "fsyncs/s", "batch", "vs file"
    );
    let show = |mode: &str, f: &Figures, floor: f64| {
        let rate = f.messages as f64 / f.secs;
        println!(
            "{:<16} {:>12.0} {:>10.0} {:>10.1} {:>8.2}",
            mode,
            rate,
            f.batches as f64 / f.secs,
            f.messages as f64 / f.batches.max(1) as f64,
            if floor > 0.0 { rate / floor } else { 0.0 }
        );
        rate
    };
    eprintln!("file ...");
    let floor = show("file", &file_mode(&dir, writers, secs), 0.0);
    for &n in &inserts {
        eprintln!("sled:{n} ...");
        show(
            &format!("sled:{n}"),
            &sled_mode(&dir, n, (true, false, false), writers, secs),
            floor,
        );
        eprintln!("sled-nofsync:{n} ...");
        show(
            &format!("sled-nofsync:{n}"),
            &sled_mode(&dir, n, (false, false, false), writers, secs),
            floor,
        );
        if n > 2 {
            eprintln!("sled-batch:{n} ...");
            show(
                &format!("sled-batch:{n}"),
                &sled_mode(&dir, n, (true, true, false), writers, secs),
                floor,
            );
            eprintln!("sled-later:{n} ...");
            show(
                &format!("sled-later:{n}"),
                &sled_mode(&dir, n, (true, false, true), writers, secs),
                floor,
            );
        }
    }
    eprintln!("file again ...");
    show("file", &file_mode(&dir, writers, secs), floor);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "({writers} writer threads, {secs} s per mode, writes under {})",
        dir.display()
    );
}
