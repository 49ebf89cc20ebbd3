//! Abuse: slow senders, many idle connections, connection floods from one address, peers
//! that never read their ACKs, stalled HTTP requests and messages built to be expensive to
//! parse. The engine cuts what abuses it and keeps serving everyone else.
//!
//! A second peer is a second loopback address: the client socket is bound to 127.0.0.2
//! before connecting (Linux routes all of 127/8 to `lo`).

use crate::support::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Held by the tests that load the machine (thousands of connections, big messages), so
/// that they do not run at the same time and one's latency figures are not the other's load.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Connects to `addr` from the loopback address 127.0.0.`from`.
async fn connect_from(addr: &str, from: u8) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::from(([127, 0, 0, from], 0)))?;
    let stream = socket
        .connect(addr.parse().expect("an IPv4 address"))
        .await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends one framed message on `stream` and reads its answer (10 s at most); `None` when
/// the connection was closed or gave no answer.
async fn exchange(stream: &mut TcpStream, message: &[u8]) -> Option<String> {
    stream
        .write_all(&channels::mllp::codec::frame(message))
        .await
        .ok()?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !answer.ends_with(&[channels::mllp::codec::END, channels::mllp::codec::CR]) {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => answer.extend_from_slice(&chunk[..n]),
        }
    }
    Some(String::from_utf8_lossy(&answer).into_owned())
}

/// True when the engine has closed `stream` (end of stream or reset), without waiting.
fn is_closed(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    match stream.try_read(&mut probe) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Opens `count` idle connections from 127.0.0.`from`, 100 at a time, waiting after each
/// batch until the engine has taken (accepted or refused) nearly all of them, so that none
/// is lost to a full accept queue.
async fn open_idle(engine: &EngineProcess, addr: &str, from: u8, count: usize) -> Vec<TcpStream> {
    let taken = |m: &str| {
        metric_value(
            m,
            "switchboard_mllp_connections_opened_total{channel=\"lab\"}",
        ) + metric_value(
            m,
            "switchboard_mllp_connections_refused_total{channel=\"lab\"}",
        )
    };
    let base = taken(&metrics_text(engine).await) as usize;
    let mut held: Vec<TcpStream> = Vec::with_capacity(count);
    while held.len() < count {
        let batch = (count - held.len()).min(100);
        let mut pending = Vec::with_capacity(batch);
        for _ in 0..batch {
            let addr = addr.to_string();
            pending.push(tokio::spawn(async move { connect_from(&addr, from).await }));
        }
        for p in pending {
            held.push(p.await.expect("task").expect("a connection"));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let seen = taken(&metrics_text(engine).await) as usize;
            if seen + 100 >= base + held.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while (taken(&metrics_text(engine).await) as usize) < base + count {
        assert!(
            Instant::now() < deadline,
            "the engine did not take {count} connections within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    held
}

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
    let _heavy = HEAVY.lock().await;
    // One descriptor per connection here and one in the engine, which inherits the limit;
    // headroom for the other tests running in this process.
    let limit = raise_fd_limit(IDLE_TARGET as u64 + 4096);
    let idle = IDLE_TARGET.min((limit as usize).saturating_sub(2048));
    println!("open-file limit {limit}: holding {idle} idle connections (target {IDLE_TARGET})");
    assert!(
        idle >= 1000,
        "open-file limit {limit} is too low for the test"
    );
    // All from 127.0.0.1: the per-peer cap is raised with the channel's.
    let cfg = config(&format!(
        "max_connections = {}\nmax_connections_per_peer = {}\nidle_timeout_secs = 600",
        idle + 100,
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
async fn a_flood_from_one_address_over_its_cap_is_refused_logged_once_and_others_keep_working() {
    const CAP: usize = 20;
    const FLOOD: usize = 300;
    let cfg = config(&format!("max_connections_per_peer = {CAP}"));
    let log_path = cfg.root.path().join("engine.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let engine = EngineProcess::start_logging_to(&cfg.conf(), &cfg.data(), log.into());
    let addr = engine.mllp("lab");
    // Fill the address's cap with working connections (MllpClient connects from 127.0.0.1).
    let mut existing = Vec::new();
    for i in 0..CAP {
        let mut c = connect(&addr).await;
        let ack = send(&mut c, adt(&format!("CAP{i}")).as_bytes()).await;
        assert_eq!(segment(&ack, "MSA")[1], "AA");
        existing.push(c);
    }
    // The flood from the same address: every extra connection is closed without an answer.
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        let addr = addr.clone();
        flood.push(tokio::spawn(async move {
            let mut s = connect_from(&addr, 1).await.ok()?;
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
    // Meanwhile another address is served at once.
    let mut other = connect_from(&addr, 2)
        .await
        .expect("connect from 127.0.0.2");
    let ack = exchange(&mut other, adt("OTHER").as_bytes())
        .await
        .expect("the other address is answered");
    assert!(ack.contains("MSA|AA|OTHER"), "{ack}");
    let m = metrics_text(&engine).await;
    let series = |name: &str| metric_value(&m, &format!("{name}{{channel=\"lab\"}}"));
    assert_eq!(
        series("switchboard_mllp_connections_refused_total") as usize,
        FLOOD,
        "{m}"
    );
    assert_eq!(
        series("switchboard_connections_refused_per_peer_total") as usize,
        FLOOD
    );
    assert_eq!(series("switchboard_connections_evicted_total"), 0.0);
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
    // 300 refusals within a minute: one log line, the first, at once.
    let text = std::fs::read_to_string(&log_path).expect("engine log");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Connections refused"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "a log written to a file carries no colour codes: {}",
        lines[0]
    );
    assert!(lines[0].contains("127.0.0.1"), "{}", lines[0]);
    assert!(
        lines[0].contains("max_connections_per_peer"),
        "{}",
        lines[0]
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

/// Idle connections one peer opens in the tests below.
const HELD: usize = 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_opening_1024_idle_connections_gets_64_and_cannot_lock_out_a_second_peer() {
    let _heavy = HEAVY.lock().await;
    let limit = raise_fd_limit(3 * HELD as u64 + 4096);
    assert!(limit >= 2 * HELD as u64 + 512, "open-file limit {limit}");
    // The defaults: max_connections = 1024, max_connections_per_peer = 64.
    let engine_cfg = config("");
    let engine = EngineProcess::start(&engine_cfg.conf(), &engine_cfg.data());
    let addr = engine.mllp("lab");
    let held = open_idle(&engine, &addr, 1, HELD).await;
    let m = metrics_text(&engine).await;
    let series = |name: &str| metric_value(&m, &format!("{name}{{channel=\"lab\"}}"));
    assert_eq!(series("switchboard_mllp_connections_opened_total"), 64.0);
    assert_eq!(
        series("switchboard_connections_refused_per_peer_total") as usize,
        HELD - 64
    );
    // The second peer is served at once, on every try.
    for i in 0..20 {
        let started = Instant::now();
        let mut b = connect_from(&addr, 2)
            .await
            .expect("connect from 127.0.0.2");
        let ack = exchange(&mut b, adt(&format!("PEER2-{i}")).as_bytes())
            .await
            .expect("the second peer is answered");
        assert!(ack.contains(&format!("MSA|AA|PEER2-{i}")), "{ack}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    // The first peer's 64 are still open, the others were closed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let open = held.iter().filter(|s| !is_closed(s)).count();
    assert_eq!(open, 64, "of {HELD} connections from 127.0.0.1");
    println!(
        "127.0.0.1 opened {HELD} connections: 64 held, {} refused; 127.0.0.2 got 20 AAs",
        HELD - 64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_holding_every_slot_with_1024_idle_connections_cannot_lock_out_a_second_peer() {
    let _heavy = HEAVY.lock().await;
    let limit = raise_fd_limit(3 * HELD as u64 + 4096);
    assert!(limit >= 2 * HELD as u64 + 512, "open-file limit {limit}");
    // The first peer may hold the whole channel.
    let engine_cfg = config(&format!(
        "max_connections = {HELD}\nmax_connections_per_peer = {HELD}"
    ));
    let engine = EngineProcess::start(&engine_cfg.conf(), &engine_cfg.data());
    let addr = engine.mllp("lab");
    let held = open_idle(&engine, &addr, 1, HELD).await;
    let m = metrics_text(&engine).await;
    assert_eq!(
        metric_value(
            &m,
            "switchboard_mllp_connections_opened_total{channel=\"lab\"}"
        ) as usize,
        HELD,
        "every slot is taken"
    );
    // The second peer: each new connection is admitted by closing one idle connection of
    // the first peer, and answered.
    let mut seconds = Vec::new();
    for i in 0..5 {
        let mut b = connect_from(&addr, 2)
            .await
            .expect("connect from 127.0.0.2");
        let ack = exchange(&mut b, adt(&format!("FULL{i}")).as_bytes())
            .await
            .expect("the second peer is answered, not refused");
        assert!(ack.contains(&format!("MSA|AA|FULL{i}")), "{ack}");
        seconds.push(b);
    }
    let m = metrics_text(&engine).await;
    let series = |name: &str| metric_value(&m, &format!("{name}{{channel=\"lab\"}}"));
    assert_eq!(series("switchboard_connections_evicted_total"), 5.0);
    assert_eq!(series("switchboard_mllp_connections_refused_total"), 0.0);
    // Five of the first peer's connections were closed, among the first it opened (idle
    // longest); the second peer's stay open and keep working.
    let deadline = Instant::now() + Duration::from_secs(10);
    let closed = loop {
        let closed: Vec<usize> = (0..HELD).filter(|&i| is_closed(&held[i])).collect();
        if closed.len() >= 5 || Instant::now() > deadline {
            break closed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(closed.len(), 5, "{closed:?}");
    assert!(
        closed.iter().all(|&i| i < 200),
        "not the idle longest: {closed:?}"
    );
    for (i, b) in seconds.iter_mut().enumerate() {
        let ack = exchange(b, adt(&format!("AGAIN{i}")).as_bytes())
            .await
            .expect("the second peer's connections are kept");
        assert!(ack.contains("MSA|AA|"), "{ack}");
    }
    println!(
        "one peer held all {HELD} slots; 5 of its idle connections made room for a second peer"
    );
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

/// Stalled HTTP requests of each kind in the test below.
const STALLED_EACH: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_stalled_http_requests_are_cut_by_the_timeouts_and_normal_ones_succeed() {
    let _heavy = HEAVY.lock().await;
    let limit = raise_fd_limit(3 * 2 * STALLED_EACH as u64 + 4096);
    assert!(
        limit >= 4 * STALLED_EACH as u64 + 512,
        "open-file limit {limit}"
    );
    let cfg = TestConfig::new("", "");
    std::fs::write(
        cfg.conf().join("channels/fhir.toml"),
        format!(
            "name = \"fhir\"\n[source]\ntype = \"fhir_rest\"\nlisten = \"127.0.0.1:0\"\nheader_timeout_secs = 2\nbody_timeout_secs = 2\nmax_connections = {n}\nmax_connections_per_peer = {n}\n",
            n = 4 * STALLED_EACH
        ),
    )
    .expect("write channel");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let addr = engine.info.channels["fhir"].to_string();
    let patient = include_str!("../fixtures/fhir/patient/full.input.json");
    let create = |from: &'static str| {
        let url = format!("http://{addr}/Patient");
        async move {
            let client = reqwest::Client::builder()
                .local_address(from.parse::<std::net::IpAddr>().ok())
                .build()
                .expect("client");
            let resp = client
                .post(url)
                .header("content-type", "application/fhir+json")
                .body(patient)
                .timeout(Duration::from_secs(20))
                .send()
                .await
                .expect("a normal request is answered");
            resp.status().as_u16()
        }
    };
    assert_eq!(create("127.0.0.1").await, 201);

    // Headers never finished, and headers done but the body never finished.
    let head =
        "POST /Patient HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\n";
    let stalled_body = format!("{head}Content-Length: 4096\r\n\r\n{{\"resourceType\":");
    let started = Instant::now();
    let mut stalled = Vec::new();
    for i in 0..2 * STALLED_EACH {
        let addr = addr.clone();
        let bytes = if i % 2 == 0 {
            head.to_string()
        } else {
            stalled_body.clone()
        };
        stalled.push(tokio::spawn(async move {
            let mut s = connect_from(&addr, 1).await.expect("connect");
            s.write_all(bytes.as_bytes()).await.expect("write");
            let sent = Instant::now();
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut answer)).await;
            (
                i % 2 == 1,
                sent.elapsed(),
                String::from_utf8_lossy(&answer).into_owned(),
            )
        }));
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // While they are held, normal requests from both addresses succeed.
    assert_eq!(create("127.0.0.1").await, 201);
    assert_eq!(create("127.0.0.2").await, 201);
    let mut slowest = Duration::ZERO;
    for task in stalled {
        let (body, after, answer) = task.await.expect("stalled task");
        assert!(
            after >= Duration::from_millis(1500),
            "cut after {after:?}, before the 2 s timeout"
        );
        assert!(after < Duration::from_secs(30), "not cut: {after:?}");
        if body {
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        }
        slowest = slowest.max(after);
    }
    println!(
        "{} stalled requests all cut; slowest after {slowest:?}, all within {:?}",
        2 * STALLED_EACH,
        started.elapsed()
    );
    let m = metrics_text(&engine).await;
    assert_eq!(
        metric_value(&m, "switchboard_mllp_timeouts_total{channel=\"fhir\"}") as usize,
        2 * STALLED_EACH,
        "every stalled request is counted as a timeout"
    );
    assert_eq!(create("127.0.0.2").await, 201);
    let list = get_json(&format!(
        "{}/api/messages?channel=fhir&limit=10",
        engine.admin()
    ))
    .await;
    assert_eq!(
        list["count"], 1,
        "only the first normal request is stored (the others are its resends)"
    );
}

/// Sends `frames` one after another on `stream`, each waiting for its answer; returns how
/// long each took and the answers.
async fn send_frames(stream: &mut TcpStream, frames: &[Vec<u8>]) -> Vec<(Duration, String)> {
    let mut out = Vec::new();
    for frame in frames {
        let t = Instant::now();
        stream.write_all(frame).await.expect("write");
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        while !answer.ends_with(&[channels::mllp::codec::END, channels::mllp::codec::CR]) {
            let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
                .await
                .expect("answered within 30 s")
                .expect("read");
            assert!(n > 0, "closed without an answer");
            answer.extend_from_slice(&chunk[..n]);
        }
        out.push((t.elapsed(), String::from_utf8_lossy(&answer).into_owned()));
    }
    out
}

/// The `q`-th quantile (0..=1) of `samples`, sorted in place.
fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    let rank = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

/// Sends small messages on `second`, one at a time, while `busy` runs (and at least `min`
/// of them); returns each one's answer time.
async fn latencies_while<T: Send + 'static>(
    second: &mut TcpStream,
    next: &mut usize,
    min: usize,
    busy: tokio::task::JoinHandle<T>,
) -> (Vec<Duration>, T) {
    let mut took = Vec::new();
    while !busy.is_finished() || took.len() < min {
        let frame = channels::mllp::codec::frame(adt(&format!("B{next}")).as_bytes());
        let (t, ack) = send_frames(second, &[frame]).await.remove(0);
        assert!(ack.contains(&format!("MSA|AA|B{next}")), "{ack}");
        took.push(t);
        *next += 1;
    }
    (took, busy.await.expect("task"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_of_900000_repetition_separators_costs_a_few_times_its_size_and_stalls_no_one() {
    let _heavy = HEAVY.lock().await;
    const TIMES: usize = 20;
    let cfg = config("");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let addr = engine.mllp("lab");
    let big = |id: String, pid3: &str| {
        channels::mllp::codec::frame(
            format!(
                "MSH|^~\\&|HIS|MAIN|SB|HUB|20250101120000||ADT^A04^ADT_A01|{id}|P|2.5.1\rEVN|A04|20250101120000\rPID|1||{pid3}||Testperson^Alex||19800101|U\rPV1|1|O\r"
            )
            .as_bytes(),
        )
    };
    // Built before measuring, so that the test's own work does not compete with the engine.
    let tildes: Vec<Vec<u8>> = (0..TIMES)
        .map(|n| big(format!("TILDE{n}"), &"~".repeat(900_000)))
        .collect();
    let plains: Vec<Vec<u8>> = (0..TIMES)
        .map(|n| big(format!("PLAIN{n}"), &"x".repeat(900_000)))
        .collect();
    let size = tildes[0].len() as u64;
    let mut second = connect_from(&addr, 1).await.expect("connect");
    // Warm up, then the second sender's latency with nothing else going on.
    let warm: Vec<Vec<u8>> = (0..100)
        .map(|i| channels::mllp::codec::frame(adt(&format!("B{i}")).as_bytes()))
        .collect();
    for (_, ack) in send_frames(&mut second, &warm).await {
        assert!(ack.contains("MSA|AA|"), "{ack}");
    }
    let mut next = 100;
    let idle = tokio::spawn(async {});
    let (mut alone, ()) = latencies_while(&mut second, &mut next, 500, idle).await;
    let peak_before = peak_rss_bytes(engine.pid()).expect("VmHWM");

    // One sender sends the message again and again; the second sends small ones meanwhile.
    let attacker_addr = addr.clone();
    let attack = tokio::spawn(async move {
        let mut a = connect_from(&attacker_addr, 2).await.expect("connect");
        send_frames(&mut a, &tildes).await
    });
    let (mut during, answered) = latencies_while(&mut second, &mut next, 0, attack).await;
    let peak_after = peak_rss_bytes(engine.pid()).expect("VmHWM");
    for (n, (_, ack)) in answered.iter().enumerate() {
        assert!(ack.contains(&format!("MSA|AA|TILDE{n}")), "{ack}");
    }
    // For comparison: plain messages of the same size.
    let plain_addr = addr.clone();
    let plain = tokio::spawn(async move {
        let mut p = connect_from(&plain_addr, 3).await.expect("connect");
        send_frames(&mut p, &plains).await
    });
    let (mut during_plain, plain_answered) =
        latencies_while(&mut second, &mut next, 0, plain).await;
    let peak_plain = peak_rss_bytes(engine.pid()).expect("VmHWM");

    let growth = peak_after.saturating_sub(peak_before);
    let times = |a: &[(Duration, String)]| a.iter().map(|(d, _)| *d).collect::<Vec<_>>();
    let summary = |l: &mut Vec<Duration>| {
        let n = l.len();
        format!(
            "{n} ACKs, p50 {:?}, p99 {:?}, worst {:?}",
            quantile(l, 0.5),
            quantile(l, 0.99),
            quantile(l, 1.0)
        )
    };
    println!(
        "second sender alone: {}\na message of {size} bytes (900,000 '~' in PID-3) sent {TIMES} times, answered in {:?}; engine peak RSS {} -> {} KiB (+{} KiB, {:.1}x the message); second sender meanwhile: {}\n{TIMES} plain messages of the same size, answered in {:?}; peak RSS -> {} KiB (+{} KiB); second sender meanwhile: {}",
        summary(&mut alone),
        times(&answered),
        peak_before >> 10,
        peak_after >> 10,
        growth >> 10,
        growth as f64 / size as f64,
        summary(&mut during),
        times(&plain_answered),
        peak_plain >> 10,
        peak_plain.saturating_sub(peak_after) >> 10,
        summary(&mut during_plain),
    );
    // Handling one message costs a few times its size (the frame buffer, the record and its
    // store write, the typed reader's index); the store's cache keeps what it wrote, one
    // message each; the margin covers allocator and store buffers. Plain messages of the
    // same size cost as much (printed above); an hl7-parser tree of one of these was 375 MB.
    let bound = 8 * size + TIMES as u64 * size + (16 << 20);
    assert!(
        growth < bound,
        "peak RSS grew by {growth} bytes (bound {bound}) for {TIMES} messages of {size}"
    );
    // Under 10 ms on a quiet machine (the figure is printed above and recorded in
    // docs/HARDENING.md). Tests run side by side on two cores, so the bound also admits
    // what the same sender sees alone (three times over), or beside plain messages of the
    // same size (as much again, and twice over: a few slow answers among a few hundred move
    // the p99 of a busy run): a message that made the engine stall (before, one was checked
    // for over a second on an async worker, and an ACK waited 256 ms) is over all three.
    let p99 = quantile(&mut during, 0.99);
    let alone_p99 = quantile(&mut alone, 0.99);
    let plain_p99 = quantile(&mut during_plain, 0.99);
    let limit = Duration::from_millis(10)
        .max(alone_p99 * 3)
        .max(plain_p99 * 3);
    assert!(
        p99 < limit,
        "p99 ACK latency {p99:?} while the message was handled; alone {alone_p99:?}, beside plain messages {plain_p99:?}"
    );
    // And no answer waits behind the message: the slowest under 100 ms, or under what the
    // slowest was alone or beside plain messages, twice over.
    let worst = quantile(&mut during, 1.0);
    let alone_worst = quantile(&mut alone, 1.0);
    let plain_worst = quantile(&mut during_plain, 1.0);
    let limit = Duration::from_millis(100)
        .max(alone_worst * 2)
        .max(plain_worst * 2);
    assert!(
        worst < limit,
        "an ACK took {worst:?} while the message was handled; alone at most {alone_worst:?}, beside plain messages {plain_worst:?}"
    );
}
