//! Abuse: slow senders, many idle connections, connection floods and peers that never read
//! their ACKs. The engine cuts what abuses it and keeps serving everyone else.

use crate::support::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A config whose channel `lab` has `source_extra` in its `[source]` table.
fn config(source_extra: &str) -> TestConfig {
    let cfg = TestConfig::new("", "");
    std::fs::write(
        cfg.conf().join("channels/lab.toml"),
        format!("name = \"lab\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n{source_extra}\n"),
    )
    .expect("write channel");
    cfg
}

/// Reads until the peer closes or resets; returns the bytes read.
async fn read_to_close(stream: &mut TcpStream) -> usize {
    let mut total = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return total,
            Ok(n) => total += n,
        }
    }
}

/// Sends one ADT on a new connection and asserts AA.
async fn assert_serves(addr: &str, control_id: &str) {
    let mut client = connect(addr).await;
    let ack = send(&mut client, adt(control_id).as_bytes()).await;
    assert_eq!(segment(&ack, "MSA")[1], "AA", "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_of_one_byte_a_second_is_cut_at_the_frame_timeout() {
    let cfg = config("frame_timeout_secs = 3\nidle_timeout_secs = 60");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let addr = engine.mllp("lab");
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    let wire = channels::mllp::codec::frame(adt("SLOW1").as_bytes());
    let started = Instant::now();
    let mut sent = 0;
    let mut cut = false;
    // The whole frame would take over 100 s at this pace; the engine cuts it after 3.
    while sent < wire.len() && started.elapsed() < Duration::from_secs(30) {
        if stream.write_all(&wire[sent..sent + 1]).await.is_err() {
            cut = true;
            break;
        }
        sent += 1;
        // Between two bytes, see whether the engine has closed the connection.
        let mut probe = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut = true;
                break;
            }
            Ok(Ok(_)) => panic!("an answer to a frame that was never complete"),
            Err(_) => {} // a second passed, nothing to read: send the next byte
        }
    }
    let after = started.elapsed();
    assert!(cut, "the slow sender was not cut within {after:?}");
    assert!(sent < wire.len(), "the whole frame went through");
    assert!(
        after >= Duration::from_millis(2800) && after < Duration::from_secs(15),
        "cut after {after:?} and {sent} bytes; the frame timeout is 3 s"
    );
    println!(
        "slow sender cut after {after:?}, {sent} of {} bytes",
        wire.len()
    );
    let metrics = metrics_text(&engine).await;
    assert_eq!(
        metric_value(&metrics, "switchboard_mllp_timeouts_total{channel=\"lab\"}"),
        1.0
    );
    let list = get_json(&format!("{}/api/messages?limit=10", engine.admin())).await;
    assert_eq!(list["count"], 0, "a frame never completed is never stored");
    assert_serves(&addr, "SLOW2").await;
}

/// How many idle connections the test aims for.
const IDLE_TARGET: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_with_bounded_memory_while_a_sender_is_served() {
    // One descriptor per connection here and one in the engine, which inherits the limit;
    // headroom for the other tests running in this process.
    let limit = raise_fd_limit(IDLE_TARGET as u64 + 4096);
    let idle = IDLE_TARGET.min((limit as usize).saturating_sub(2048));
    println!("open-file limit {limit}: holding {idle} idle connections (target {IDLE_TARGET})");
    assert!(
        idle >= 1000,
        "open-file limit {limit} is too low for the test"
    );
    let cfg = config(&format!(
        "max_connections = {}\nidle_timeout_secs = 600",
        idle + 100
    ));
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let addr = engine.mllp("lab");
    assert_serves(&addr, "WARM").await;
    let rss_before = rss_bytes(engine.pid()).expect("engine RSS");

    // Open the idle connections, 200 at a time.
    let connected_at = Instant::now();
    let mut held: Vec<TcpStream> = Vec::with_capacity(idle);
    while held.len() < idle {
        let batch = (idle - held.len()).min(100);
        let mut pending = Vec::with_capacity(batch);
        for _ in 0..batch {
            let addr = addr.clone();
            pending.push(tokio::spawn(async move { TcpStream::connect(addr).await }));
        }
        for p in pending {
            held.push(p.await.expect("task").expect("an idle connection"));
        }
        // Keep the listen backlog short: a connection the kernel completed but that
        // overflowed the accept queue would be lost to the test, not to the engine.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let m = metrics_text(&engine).await;
            let opened = metric_value(
                &m,
                "switchboard_mllp_connections_opened_total{channel=\"lab\"}",
            );
            if opened as usize + 200 >= held.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Wait until the engine has accepted them all (and the warm-up connection).
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut opened = 0.0;
    while (opened as usize) <= idle && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let m = metrics_text(&engine).await;
        opened = metric_value(
            &m,
            "switchboard_mllp_connections_opened_total{channel=\"lab\"}",
        );
    }
    println!(
        "{opened} connections accepted after {:?}",
        connected_at.elapsed()
    );
    assert!(
        opened as usize > idle,
        "the engine accepted {opened} of {idle} connections within 120 s"
    );
    let rss_idle = rss_bytes(engine.pid()).expect("engine RSS");

    // An active sender still gets every ACK while they are held.
    let mut client = connect(&addr).await;
    let mut worst = Duration::ZERO;
    for i in 0..200 {
        let t = Instant::now();
        let ack = send(&mut client, adt(&format!("ACT{i}")).as_bytes()).await;
        worst = worst.max(t.elapsed());
        assert_eq!(segment(&ack, "MSA")[1], "AA", "{ack}");
    }
    let m = metrics_text(&engine).await;
    let refused = metric_value(
        &m,
        "switchboard_mllp_connections_refused_total{channel=\"lab\"}",
    );
    assert_eq!(refused, 0.0, "no connection was refused");
    let per_conn = rss_idle.saturating_sub(rss_before) / idle as u64;
    println!(
        "engine RSS {} MiB before, {} MiB with {idle} idle connections ({per_conn} B each); slowest of 200 ACKs {worst:?}",
        rss_before >> 20,
        rss_idle >> 20
    );
    // Generous: 64 KiB per idle connection on top of what the engine had.
    assert!(
        rss_idle < rss_before + idle as u64 * 64 * 1024,
        "RSS grew from {rss_before} to {rss_idle} bytes"
    );
    // Every held connection is still open (none was cut) until we close them.
    let mut probe = [0u8; 1];
    for s in held.iter().step_by(997) {
        match tokio::time::timeout(Duration::from_millis(50), s.peek(&mut probe)).await {
            Err(_) => {} // nothing to read, still open
            Ok(r) => panic!("an idle connection was closed: {r:?}"),
        }
    }
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_beyond_max_connections_is_refused_and_existing_connections_keep_working() {
    const CAP: usize = 20;
    const FLOOD: usize = 300;
    let cfg = config(&format!("max_connections = {CAP}"));
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let addr = engine.mllp("lab");
    // Fill the cap with working connections.
    let mut existing = Vec::new();
    for i in 0..CAP {
        let mut c = connect(&addr).await;
        let ack = send(&mut c, adt(&format!("CAP{i}")).as_bytes()).await;
        assert_eq!(segment(&ack, "MSA")[1], "AA");
        existing.push(c);
    }
    // The flood: every extra connection is closed by the engine without an answer.
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        let addr = addr.clone();
        flood.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(&addr).await.ok()?;
            let _ = s
                .write_all(&channels::mllp::codec::frame(adt("FLOOD").as_bytes()))
                .await;
            tokio::time::timeout(Duration::from_secs(20), read_to_close(&mut s))
                .await
                .ok()
        }));
    }
    for f in flood {
        if let Some(read) = f.await.expect("flood task") {
            assert_eq!(read, 0, "a refused connection got an answer");
        } else {
            // Connect failed outright (backlog full) or timed out: the timeout is a failure.
        }
    }
    let m = metrics_text(&engine).await;
    let refused = metric_value(
        &m,
        "switchboard_mllp_connections_refused_total{channel=\"lab\"}",
    );
    assert_eq!(refused as usize, FLOOD, "{m}");
    // The existing ones were not harmed.
    for (i, c) in existing.iter_mut().enumerate() {
        let ack = send(c, adt(&format!("AFTER{i}")).as_bytes()).await;
        assert_eq!(segment(&ack, "MSA")[1], "AA");
    }
    let list = get_json(&format!("{}/api/messages?control_id=FLOOD", engine.admin())).await;
    assert_eq!(
        list["count"], 0,
        "nothing from a refused connection was stored"
    );
    // A slot freed is a slot usable again.
    drop(existing.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = connect(&addr).await;
        match c.send(adt("FREED").as_bytes()).await {
            Ok(bytes) => {
                assert!(String::from_utf8_lossy(&bytes).contains("MSA|AA|FREED"));
                break;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("the freed slot was not usable: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_its_acks_is_cut_by_the_write_timeout() {
    let cfg = config("write_timeout_secs = 2");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let addr = engine.mllp("lab");
    // Each ACK echoes MSH-5, so a long MSH-5 makes ~200 KB answers that fill the socket
    // buffers quickly; a small receive buffer on our side helps.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(16 * 1024).expect("rcvbuf");
    let mut stream = socket
        .connect(addr.parse().expect("addr"))
        .await
        .expect("connect");
    let big_receiver = "R".repeat(200_000);
    let started = Instant::now();
    let mut written = 0usize;
    for i in 0..60 {
        let msg = format!(
            "MSH|^~\\&|HIS|MAIN|{big_receiver}|HUB|20250101120000||ADT^A04^ADT_A01|NR{i}|P|2.5.1\rPID|1||MRN^^^MAIN^MR||Testperson^Alex\r"
        );
        let frame = channels::mllp::codec::frame(msg.as_bytes());
        match tokio::time::timeout(Duration::from_secs(5), stream.write_all(&frame)).await {
            Ok(Ok(())) => written += 1,
            // Our writes block once the engine stops reading, or fail once it has cut us.
            Ok(Err(_)) | Err(_) => break,
        }
    }
    // Still not reading: the engine's writer is stuck and gives up after 2 s.
    let cut = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let m = metrics_text(&engine).await;
            if metric_value(&m, "switchboard_mllp_timeouts_total{channel=\"lab\"}") >= 1.0 {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert!(
        cut,
        "the non-reading peer was not cut ({written} messages written)"
    );
    println!(
        "non-reading peer cut {:?} after the first write, {written} messages written",
        started.elapsed()
    );
    // Now read: what was buffered, then the close. Not every message was answered.
    let read = tokio::time::timeout(Duration::from_secs(20), read_to_close(&mut stream))
        .await
        .expect("the connection is closed");
    assert!(
        read < written * 200_000,
        "{read} bytes of answers for {written} messages: it was not cut"
    );
    let m = metrics_text(&engine).await;
    assert_eq!(
        metric_value(
            &m,
            "switchboard_mllp_connections_closed_total{channel=\"lab\"}"
        ),
        1.0
    );
    assert_serves(&addr, "READER").await;
}
