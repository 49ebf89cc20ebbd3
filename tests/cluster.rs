//! Cluster mode on NATS JetStream: three real `nats-server` processes (JetStream, R=3) and
//! three engine nodes on 127.0.0.1, each with its own data folder; one HTTP sink records
//! what every node delivers. The faults are real: kill -9 of an engine node and of a NATS
//! server under load, and JetStream out of reach for a single node.

use crate::support::*;
use channels::mllp::client::MllpClient;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The NATS server binary: `SWITCHBOARD_NATS_SERVER`, else the one `.ci/run` links in
/// /usr/local/bin (2.10 or later), else Debian's (2.9, which can lose acknowledged messages
/// when the stream's leader is killed).
fn nats_server() -> PathBuf {
    std::env::var_os("SWITCHBOARD_NATS_SERVER")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            [
                "/usr/local/bin/nats-server",
                "/usr/sbin/nats-server",
                "/usr/bin/nats-server",
            ]
            .iter()
            .map(PathBuf::from),
        )
        .find(|p| p.exists())
        .expect("nats-server is installed (.ci/run installs it)")
}

/// One NATS server of the test cluster, restartable on the same ports and store; its log
/// (stderr) is appended to `log`.
struct Nats {
    conf: PathBuf,
    log: PathBuf,
    port: u16,
    /// The monitoring port (`/healthz`).
    http: u16,
    child: Option<Child>,
}

impl Nats {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("NATS log");
        let child = Command::new(nats_server())
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Whether the process has exited (a port taken by another process, say).
    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
    }

    /// Whether `/healthz` answers 200: listening, and with JetStream's group formed.
    fn healthy(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", self.http)) else {
            return false;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let request = "GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        let mut answer = String::new();
        conn.write_all(request.as_bytes()).is_ok()
            && conn.read_to_string(&mut answer).is_ok()
            && answer.starts_with("HTTP/1.0 200")
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `n` NATS servers with JetStream, clustered when `n` > 1, stores under `dir`; returns once
/// every server reports itself healthy. A server that exits at start (a port taken between
/// choosing it and binding it: other tests start servers at the same time) makes a new
/// attempt on new ports.
fn nats_cluster(dir: &Path, n: usize) -> Vec<Nats> {
    for attempt in 0..3 {
        let servers = nats_attempt(&dir.join(format!("try{attempt}")), n);
        let Some(mut servers) = servers else { continue };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if servers.iter_mut().any(Nats::exited) {
                break;
            }
            if servers.iter().all(Nats::healthy) {
                return servers;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = servers
                    .iter()
                    .map(|s| {
                        let text = std::fs::read_to_string(&s.log).unwrap_or_default();
                        let lines: Vec<&str> = text.lines().collect();
                        lines[lines.len().saturating_sub(15)..].join("\n")
                    })
                    .collect();
                panic!(
                    "the NATS servers did not become healthy within 90 s:\n{}",
                    logs.join("\n---\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    panic!("the NATS servers exited at start three times (ports taken?)");
}

/// Writes the configurations of `n` servers on fresh ports under `dir` and starts them.
fn nats_attempt(dir: &Path, n: usize) -> Option<Vec<Nats>> {
    std::fs::create_dir_all(dir).ok()?;
    let ports: Vec<(u16, u16, u16)> = (0..n)
        .map(|_| (free_port(), free_port(), free_port()))
        .collect();
    let routes: Vec<String> = ports
        .iter()
        .map(|(_, c, _)| format!("\"nats-route://127.0.0.1:{c}\""))
        .collect();
    let mut servers = Vec::new();
    for (i, (port, cport, http)) in ports.iter().enumerate() {
        let store = dir.join(format!("nats{i}"));
        let mut text = format!(
            "server_name: n{i}\nlisten: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{http}\"\njetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}}\n",
            store.display()
        );
        if n > 1 {
            text.push_str(&format!(
                "cluster {{\n  name: sb\n  listen: \"127.0.0.1:{cport}\"\n  routes: [{}]\n}}\n",
                routes.join(", ")
            ));
        }
        let conf = dir.join(format!("nats{i}.conf"));
        std::fs::write(&conf, text).ok()?;
        let mut s = Nats {
            conf,
            log: dir.join(format!("nats{i}.log")),
            port: *port,
            http: *http,
            child: None,
        };
        s.start();
        servers.push(s);
    }
    Some(servers)
}

/// The partitions of the test clusters.
const PARTITIONS: u32 = 8;

/// An engine node's config: one MLLP channel `lab` to the sink, `[cluster]` as given.
fn node_config(name: &str, id: u8, urls: &[String], replicas: usize, sink: &str) -> TestConfig {
    node_config_with(name, id, urls, replicas, sink, "")
}

/// [`node_config`] with `engine_extra` added to `switchboard.toml` (before `[cluster]`).
fn node_config_with(
    name: &str,
    id: u8,
    urls: &[String],
    replicas: usize,
    sink: &str,
    engine_extra: &str,
) -> TestConfig {
    let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    let cluster = format!(
        "{engine_extra}\n[cluster]\nnode = \"{name}\"\nnode_id = {id}\nurls = [{}]\nreplicas = {replicas}\npartitions = {PARTITIONS}\nlease_secs = 3\npublish_timeout_ms = 2000\n",
        urls.join(", ")
    );
    TestConfig::new(&cluster, &hook_channel(sink))
}

/// The routes and destination of a channel that sends every message as HL7 to the sink.
fn hook_channel(sink: &str) -> String {
    format!(
        "[[route]]\nto = [\"hook\"]\npayload = \"hl7\"\n[[destination]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{sink}\"\n{FAST_RETRY}"
    )
}

/// `GET /api/cluster` of a node, `None` while it does not answer.
async fn cluster_view(engine: &EngineProcess) -> Option<serde_json::Value> {
    let resp = reqwest::get(format!("{}/api/cluster", engine.admin()))
        .await
        .ok()?;
    resp.json().await.ok()
}

/// How long a fresh cluster (NATS servers forming their JetStream group, then the nodes taking
/// leases) may take to settle: under a loaded CI machine, with the other tests starting
/// processes at the same time, placing the first replicated streams took more than a minute.
/// A take-over after a node dies is held to the issue's 10 s, not to this.
const STARTUP_SECS: u64 = 180;

/// Waits (at most `secs`) until every node sees `n` nodes and no partition without owner.
async fn wait_settled(engines: &[&EngineProcess], n: usize, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let mut settled = true;
        for e in engines {
            let v = cluster_view(e).await.unwrap_or_default();
            let nodes = v["nodes"].as_array().map(Vec::len).unwrap_or(0);
            let unowned = v["unowned"].as_array().map(Vec::len).unwrap_or(usize::MAX);
            settled &= nodes == n && unowned == 0 && v["connected"] == true;
        }
        if settled {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster did not settle on {n} nodes within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The MSA-1 code and ERR-3 identifier of an answer.
fn code_and_err(ack: &str) -> (String, String) {
    let msa = segment(ack, "MSA")[1].clone();
    let err = ack
        .split('\r')
        .find(|s| s.starts_with("ERR"))
        .and_then(|s| s.split('|').nth(3))
        .and_then(|f| f.split('^').next())
        .unwrap_or_default()
        .to_string();
    (msa, err)
}

/// One field of a delivered HL7 body: (MSH-10, PID-3's identifier).
fn control_and_patient(body: &str) -> (String, String) {
    let body = body
        .replace("\\r", "\r")
        .replace("\r\n", "\r")
        .replace('\n', "\r");
    let msh = segment(&body, "MSH");
    let pid = segment(&body, "PID");
    (
        msh[9].clone(),
        pid[3].split('^').next().unwrap_or_default().to_string(),
    )
}

/// What the load has had acknowledged: control id -> (patient, sequence number).
type Acked = Arc<Mutex<BTreeMap<String, (String, u32)>>>;

/// One sender: sends its patients' messages in order, each until it gets AA (a reject or a
/// lost connection: the same message again, to the next node, as a real sender does).
async fn sender(c: usize, addrs: Arc<Mutex<Vec<String>>>, stop: Arc<AtomicBool>, acked: Acked) {
    let mut target = c % 3;
    let mut client: Option<MllpClient> = None;
    let mut n = 0u32;
    while !stop.load(Ordering::SeqCst) {
        if client.is_none() {
            let addr = addrs.lock().expect("lock")[target].clone();
            match MllpClient::connect(&addr, Duration::from_secs(5)).await {
                Ok(cl) => client = Some(cl),
                Err(_) => {
                    target = (target + 1) % 3;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let patient = format!("P{c}x{}", n % 2);
        let control = format!("C{c}n{n}");
        let msg = adt_for(&patient, &control);
        let Some(cl) = client.as_mut() else { continue };
        match tokio::time::timeout(Duration::from_secs(10), cl.send(msg.as_bytes())).await {
            Ok(Ok(bytes)) => {
                let ack = String::from_utf8_lossy(&bytes).into_owned();
                let (code, err) = code_and_err(&ack);
                match code.as_str() {
                    "AA" => {
                        acked.lock().expect("lock").insert(control, (patient, n));
                        n += 1;
                    }
                    "AR" => {
                        assert_eq!(err, "207", "a reject in the cluster is 207: {ack}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    other => panic!("unexpected answer {other}: {ack}"),
                }
            }
            _ => {
                client = None;
                target = (target + 1) % 3;
            }
        }
    }
}

/// The log filter of the nodes of the load test: the cluster's steps at debug level.
const NODE_LOG: &str = "info,engine::cluster=debug,engine::delivery=debug";

/// Starts node `i` of `cfg` with its log appended to `logs/node<i>.log`.
fn start_logged(cfg: &TestConfig, logs: &Path, i: usize) -> EngineProcess {
    std::fs::create_dir_all(logs).expect("log folder");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join(format!("node{i}.log")))
        .expect("node log");
    EngineProcess::start_with(
        &cfg.conf(),
        &cfg.data(),
        Stdio::from(file),
        &[("RUST_LOG", NODE_LOG)],
    )
}

/// Copies the nodes' logs out of the test's temporary folder (to `cluster-logs-<pid>` in the
/// system's temporary folder) as `SWITCHBOARD_KEEP_LOGS` asks: `always`, or any other value
/// for a failed test only.
struct KeepLogs(PathBuf);

impl Drop for KeepLogs {
    fn drop(&mut self) {
        let keep = match std::env::var("SWITCHBOARD_KEEP_LOGS") {
            Ok(v) if v == "always" => true,
            Ok(_) => std::thread::panicking(),
            Err(_) => false,
        };
        if !keep {
            return;
        }
        let keep = std::env::temp_dir().join(format!("cluster-logs-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&keep);
        for i in 0..3 {
            let name = format!("node{i}.log");
            let _ = std::fs::copy(self.0.join(&name), keep.join(&name));
        }
        eprintln!("node logs kept in {}", keep.display());
    }
}

/// Prints the work stream's state and each partition consumer's position.
async fn explain_stream(urls: &[String]) {
    let Ok(client) = async_nats::connect(urls.join(",")).await else {
        eprintln!("no NATS server answers");
        return;
    };
    let js = async_nats::jetstream::new(client);
    match js.get_stream("SWITCHBOARD_WORK").await {
        Ok(mut stream) => {
            if let Ok(info) = stream.info().await {
                eprintln!("work stream: {:?}", info.state);
            }
            for p in 0..8 {
                match stream.consumer_info(format!("part-{p}")).await {
                    Ok(c) => eprintln!(
                        "part-{p}: delivered {:?} ack floor {:?} pending {} ack pending {} created {}",
                        c.delivered, c.ack_floor, c.num_pending, c.num_ack_pending, c.created
                    ),
                    Err(e) => eprintln!("part-{p}: {e}"),
                }
            }
        }
        Err(e) => eprintln!("work stream: {e}"),
    }
}

/// Prints what a failed run needs to be understood: each node's view of the cluster, each
/// node's record of the first missing messages, and the warnings and last lines of each log.
async fn explain_missing(alive: &[&EngineProcess], missing: &[&String], logs: &Path) {
    for e in alive {
        eprintln!(
            "cluster view: {}",
            cluster_view(e).await.unwrap_or_default()
        );
    }
    // Which senders' messages are missing, and which of their sequence numbers.
    let mut by_sender: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for c in missing {
        if let Some((sender, n)) = c.split_once('n') {
            by_sender
                .entry(sender)
                .or_default()
                .push(n.parse().unwrap_or(0));
        }
    }
    for (sender, ns) in &by_sender {
        eprintln!(
            "missing of {sender}: {} from {} to {}",
            ns.len(),
            ns.iter().min().unwrap_or(&0),
            ns.iter().max().unwrap_or(&0)
        );
    }
    for control in missing.iter().take(4) {
        for (i, e) in alive.iter().enumerate() {
            let rec = record_on(e, control).await.unwrap_or_default();
            eprintln!(
                "{control} on live node #{i}: id {} status {} node {} deliveries {}",
                rec["id"], rec["status"], rec["node"], rec["deliveries"]
            );
        }
    }
    for i in 0..3 {
        let text = std::fs::read_to_string(logs.join(format!("node{i}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let warnings: Vec<&&str> = lines
            .iter()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        eprintln!(
            "--- node{i}: {} log lines, {} warnings",
            lines.len(),
            warnings.len()
        );
        for l in warnings.iter().rev().take(40).rev() {
            eprintln!("{l}");
        }
        eprintln!("--- node{i}: last lines");
        for l in lines.iter().rev().take(30).rev() {
            eprintln!("{l}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_and_a_nats_server_die_under_load_and_every_acked_message_arrives_once_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nats = nats_cluster(dir.path(), 3);
    let urls: Vec<String> = nats.iter().map(Nats::url).collect();
    let sink = HttpSink::start(SinkMode::Up).await;
    let cfgs: Vec<TestConfig> = (0..3)
        .map(|i| node_config(&format!("node{i}"), i as u8 + 1, &urls, 3, &sink.url))
        .collect();
    let logs = dir.path().join("logs");
    let _keep = KeepLogs(logs.clone());
    let mut engines: Vec<Option<EngineProcess>> = cfgs
        .iter()
        .enumerate()
        .map(|(i, c)| Some(start_logged(c, &logs, i)))
        .collect();
    {
        let all: Vec<&EngineProcess> = engines.iter().flatten().collect();
        wait_settled(&all, 3, STARTUP_SECS).await;
    }
    let addrs = Arc::new(Mutex::new(
        engines
            .iter()
            .flatten()
            .map(|e| e.mllp("lab"))
            .collect::<Vec<_>>(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let senders: Vec<_> = (0..16)
        .map(|c| tokio::spawn(sender(c, addrs.clone(), stop.clone(), acked.clone())))
        .collect();
    let acked_count = |a: &Acked| a.lock().expect("lock").len();
    let at_least = |a: Acked, n: usize| async move {
        assert!(
            eventually(30, || acked_count(&a) >= n).await,
            "the load stalled at {} acknowledged messages",
            acked_count(&a)
        );
    };
    at_least(acked.clone(), 100).await;
    // kill -9 of an engine node under load.
    engines[1].take().expect("node1").kill();
    // Its partitions move to the survivors within 10 s (lease_secs = 3 here).
    {
        let survivors: Vec<&EngineProcess> = engines.iter().flatten().collect();
        wait_settled(&survivors, 2, 10).await;
    }
    let before = acked_count(&acked);
    at_least(acked.clone(), before + 100).await;
    // kill -9 of a NATS server under load (R=3: the stream keeps its quorum).
    nats[2].kill();
    let before = acked_count(&acked);
    at_least(acked.clone(), before + 100).await;
    // The killed node comes back with its data folder and takes work again.
    let node1 = start_logged(&cfgs[1], &logs, 1);
    addrs.lock().expect("lock")[1] = node1.mllp("lab");
    engines[1] = Some(node1);
    nats[2].start();
    let before = acked_count(&acked);
    at_least(acked.clone(), before + 100).await;
    stop.store(true, Ordering::SeqCst);
    for s in senders {
        s.await.expect("sender ends");
    }
    let acked = acked.lock().expect("lock").clone();

    // Every acknowledged message arrives (at least once).
    let delivered = |sink: &HttpSink| {
        sink.received()
            .iter()
            .map(|(_, body)| control_and_patient(body).0)
            .collect::<BTreeSet<String>>()
    };
    // The backlog drains at the partitions' pace, which a loaded machine slows: wait while
    // deliveries keep arriving, and give up only after 60 s without one new arrival.
    let mut last = (0, Instant::now());
    let all_in = loop {
        let got = delivered(&sink);
        if acked.keys().all(|c| got.contains(c)) {
            break true;
        }
        if got.len() > last.0 {
            last = (got.len(), Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(60) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let got = delivered(&sink);
    let missing: Vec<&String> = acked.keys().filter(|c| !got.contains(*c)).collect();
    if !all_in {
        let alive: Vec<&EngineProcess> = engines.iter().flatten().collect();
        explain_missing(&alive, &missing, &logs).await;
        explain_stream(&urls).await;
    }
    assert!(
        all_in,
        "{} acknowledged messages never arrived: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );

    // Exactly once after deduplication: one idempotency key per message; in order per
    // patient (first arrivals).
    let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut order: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut seen_keys = BTreeSet::new();
    for (key, body) in sink.received() {
        assert!(!key.is_empty(), "every delivery carries an idempotency key");
        let (control, patient) = control_and_patient(&body);
        keys.entry(control.clone()).or_default().insert(key.clone());
        if seen_keys.insert(key) {
            if let Some((p, n)) = acked.get(&control) {
                assert_eq!(p, &patient);
                order.entry(patient).or_default().push(*n);
            }
        }
    }
    for c in acked.keys() {
        assert_eq!(
            keys[c].len(),
            1,
            "message {c} was delivered under several keys: {:?}",
            keys[c]
        );
    }
    for (patient, ns) in &order {
        if let Some(w) = ns.windows(2).find(|w| w[0] >= w[1]) {
            let sender = patient
                .trim_start_matches('P')
                .split('x')
                .next()
                .unwrap_or("");
            let alive: Vec<&EngineProcess> = engines.iter().flatten().collect();
            for n in [w[0], w[1]] {
                let control = format!("C{sender}n{n}");
                for (i, e) in alive.iter().enumerate() {
                    let rec = record_on(e, &control).await.unwrap_or_default();
                    eprintln!(
                        "{control} on live node #{i}: id {} status {} deliveries {}",
                        rec["id"], rec["status"], rec["deliveries"]
                    );
                }
            }
        }
        assert!(
            ns.windows(2).all(|w| w[0] < w[1]),
            "patient {patient} out of order: {ns:?}"
        );
    }
    // The node that was killed holds partitions again.
    let alive: Vec<&EngineProcess> = engines.iter().flatten().collect();
    wait_settled(&alive, 3, STARTUP_SECS).await;
    let view = cluster_view(alive[1]).await.expect("node1 answers");
    let mine = view["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["node"] == "node1")
        .expect("node1 is listed");
    assert!(
        !mine["partitions"]
            .as_array()
            .expect("partitions")
            .is_empty(),
        "the node that rejoined took no partition: {view}"
    );
    eprintln!(
        "cluster load: {} messages acknowledged, {} deliveries received",
        acked.len(),
        sink.received().len()
    );
    for e in engines.into_iter().flatten() {
        e.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_out_of_reach_answers_ar_207_and_the_node_recovers_by_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nats = nats_cluster(dir.path(), 1);
    let sink = HttpSink::start(SinkMode::Up).await;
    let cfg = node_config("solo", 0, &[nats[0].url()], 1, &sink.url);
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    wait_settled(&[&engine], 1, STARTUP_SECS).await;
    let addr = engine.mllp("lab");
    let mut client = connect(&addr).await;
    let ack = send(&mut client, adt_for("PX", "UP1").as_bytes()).await;
    assert_eq!(code_and_err(&ack).0, "AA", "{ack}");

    nats[0].kill();
    let ack = send(&mut client, adt_for("PX", "DOWN1").as_bytes()).await;
    assert_eq!(code_and_err(&ack), ("AR".into(), "207".into()), "{ack}");
    // What was received is kept, with its reason.
    let list = get_json(&format!("{}/api/messages?control_id=DOWN1", engine.admin())).await;
    let id = list["items"][0]["id"].as_str().expect("stored").to_string();
    let record = get_json(&format!("{}/api/messages/{id}", engine.admin())).await;
    assert_eq!(record["status"], "rejected", "{record}");
    assert!(
        record["errors"].to_string().contains("cluster stream"),
        "{record}"
    );

    nats[0].start();
    // The sender sends it again until it is taken: never AA before the stream has it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ack = match tokio::time::timeout(
            Duration::from_secs(5),
            client.send(adt_for("PX", "DOWN1").as_bytes()),
        )
        .await
        {
            Ok(Ok(b)) => String::from_utf8_lossy(&b).into_owned(),
            _ => {
                client = connect(&addr).await;
                continue;
            }
        };
        match code_and_err(&ack) {
            (c, _) if c == "AA" => break,
            (c, e) => assert_eq!((c.as_str(), e.as_str()), ("AR", "207"), "{ack}"),
        }
        assert!(
            Instant::now() < deadline,
            "the node did not recover within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let arrived = eventually(30, || {
        let got: BTreeSet<String> = sink
            .received()
            .iter()
            .map(|(_, b)| control_and_patient(b).0)
            .collect();
        got.contains("UP1") && got.contains("DOWN1")
    })
    .await;
    assert!(
        arrived,
        "deliveries did not resume: {:?}",
        sink.received().len()
    );
    // The operator sees it: the refusals counted, the publish latency observed, the node
    // holding every partition again.
    let metrics = metrics_text(&engine).await;
    assert!(
        metric_value(&metrics, "switchboard_cluster_publish_failures_total") >= 1.0,
        "{metrics}"
    );
    assert!(
        metric_value(
            &metrics,
            "switchboard_cluster_publish_duration_seconds_count"
        ) >= 2.0,
        "{metrics}"
    );
    wait_settled(&[&engine], 1, STARTUP_SECS).await;
    let view = cluster_view(&engine).await.expect("GET /api/cluster");
    let held = view["nodes"][0]["partitions"].as_array().map(Vec::len);
    assert_eq!(held, Some(8), "{view}");
    let metrics = metrics_text(&engine).await;
    assert_eq!(
        metric_value(&metrics, "switchboard_cluster_owned_partitions"),
        8.0,
        "{metrics}"
    );
    engine.kill();
}

/// `switchboard check` with `--connect`, its stdout and exit code.
fn check(conf: &Path, connect: bool) -> (String, Option<i32>) {
    let mut cmd = Command::new(binary());
    cmd.arg("check");
    if connect {
        cmd.arg("--connect");
    }
    let out = output_within(cmd.arg("--config").arg(conf), 30).expect("check ends");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_each_wrong_cluster_key_and_connect_reaches_the_nats_servers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = nats_cluster(dir.path(), 1);
    let sink = "http://127.0.0.1:9/hook";
    let wrong = TestConfig::new(
        "[cluster]\nnode = \"a b\"\nnode_id = 64\nurls = [\"http://x\"]\nreplicas = 2\n",
        "",
    );
    let (out, code) = check(&wrong.conf(), false);
    assert_eq!(code, Some(1), "{out}");
    for key in [
        "cluster.node:",
        "cluster.node_id:",
        "cluster.urls[0]:",
        "cluster.replicas:",
    ] {
        assert!(
            out.contains(&format!("switchboard.toml: {key}")),
            "{key} not named:\n{out}"
        );
    }
    // ack = "on_delivery" is taken: the receiving node waits for the owner's notice.
    let on_delivery = node_config("a", 1, &[nats[0].url()], 1, sink);
    let channel = on_delivery.conf().join("channels/lab.toml");
    let text = std::fs::read_to_string(&channel).expect("channel");
    std::fs::write(&channel, format!("ack = \"on_delivery\"\n{text}")).expect("write");
    let (out, code) = check(&on_delivery.conf(), false);
    assert_eq!(code, Some(0), "{out}");

    // A node whose admin API listens on an unspecified address must say where the other
    // nodes call it.
    let any = node_config("a", 1, &[nats[0].url()], 1, sink);
    let main = any.conf().join("switchboard.toml");
    let text = std::fs::read_to_string(&main).expect("config");
    let text = text.replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\"");
    std::fs::write(&main, &text).expect("write");
    let (out, code) = check(&any.conf(), false);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("switchboard.toml: cluster.admin_url:"),
        "{out}"
    );
    let text = text.replace(
        "[cluster]\n",
        "[cluster]\nadmin_url = \"http://10.0.0.1:8080\"\n",
    );
    std::fs::write(&main, &text).expect("write");
    let (out, code) = check(&any.conf(), false);
    assert_eq!(code, Some(0), "{out}");

    let right = node_config("a", 1, &[nats[0].url()], 1, sink);
    let (out, code) = check(&right.conf(), false);
    assert_eq!(code, Some(0), "{out}");
    let mut up = false;
    for _ in 0..20 {
        let (out, _) = check(&right.conf(), true);
        if out.contains("cluster: up: connected") && out.contains("JetStream on") {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(up, "check --connect did not reach the NATS server");
    let down = node_config(
        "a",
        1,
        &[format!("nats://127.0.0.1:{}", free_port())],
        1,
        sink,
    );
    let (out, code) = check(&down.conf(), true);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("cluster: DOWN"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_answers_not_clustered_and_exports_no_cluster_metrics() {
    let cfg = TestConfig::new("", "");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let resp = reqwest::get(format!("{}/api/cluster", engine.admin()))
        .await
        .expect("admin API");
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().await.expect("JSON body");
    assert_eq!(body["error"], "not_clustered", "{body}");
    let metrics = metrics_text(&engine).await;
    assert!(!metrics.contains("switchboard_cluster_"), "{metrics}");
    engine.kill();
}

/// GET of an admin URL: (status, JSON body).
async fn get_any(url: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::get(url).await.expect("admin API reachable");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

/// POST of a JSON body to an admin URL: (status, JSON body).
async fn post_any(url: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("admin API reachable");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

/// Waits (at most 30 s) until every node's heartbeat, as `engine` sees it, carries the
/// admin URL the node bound.
async fn wait_admin_urls(engine: &EngineProcess, all: &[&EngineProcess]) {
    let want: BTreeSet<String> = all.iter().map(|e| e.admin()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view = cluster_view(engine).await.unwrap_or_default();
        let got: BTreeSet<String> = view["nodes"]
            .as_array()
            .map(|ns| {
                ns.iter()
                    .filter_map(|n| n["admin_url"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the heartbeats do not advertise the admin URLs {want:?}: {view}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Operators see every node's messages from any node: a message received by one node and
/// delivered by another is found, as delivered and with its deliveries, on a third node and
/// on the receiving node; a dead letter is listed on every node and a retry asked on a node
/// that does not hold it delivers it once, under its first idempotency key; a node killed
/// with SIGKILL is named unreachable while the others still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_shows_and_retries_the_messages_of_every_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = nats_cluster(dir.path(), 1);
    let urls = vec![nats[0].url()];
    let sink = HttpSink::start(SinkMode::RejectBad).await;
    let (_cfgs, started) = three_nodes(&urls, &sink.url, |_| {}).await;
    let mut engines: Vec<Option<EngineProcess>> = started.into_iter().map(Some).collect();
    let admins: Vec<String> = engines.iter().flatten().map(|e| e.admin()).collect();
    {
        let all: Vec<&EngineProcess> = engines.iter().flatten().collect();
        for e in &all {
            wait_admin_urls(e, &all).await;
        }
    }
    let a = engines[0].as_ref().expect("node0");
    let mut client = connect(&a.mllp("lab")).await;
    for n in 0..8 {
        let ack = send(
            &mut client,
            adt_for(&format!("XP{n}"), &format!("XN{n}")).as_bytes(),
        )
        .await;
        assert_eq!(code_and_err(&ack).0, "AA", "{ack}");
    }
    assert!(
        eventually(30, || sink.received().len() >= 8).await,
        "only {} of 8 delivered",
        sink.received().len()
    );

    // A message node0 received whose deliveries another node made (8 patients over 3
    // nodes' partitions), read from each node's own store.
    let mut picked = None;
    for n in 0..8 {
        let (_, list) = get_any(&format!(
            "{}/api/messages?control_id=XN{n}&scope=local",
            admins[0]
        ))
        .await;
        assert_eq!(list["count"], 1, "node0 keeps what it received: {list}");
        let own = &list["items"][0];
        let id = own["id"].as_str().expect("id").to_string();
        for (d, admin) in admins.iter().enumerate().skip(1) {
            let (status, copy) = get_any(&format!("{admin}/api/messages/{id}?scope=local")).await;
            if status == 200 && copy["status"] == "delivered" {
                picked = Some((n, id.clone(), d));
            }
        }
        if picked.is_some() {
            break;
        }
    }
    let (n, id, d) = picked.expect("a message node0 received was delivered by another node");
    let c = 3 - d;
    let (status, _) = get_any(&format!("{}/api/messages/{id}?scope=local", admins[0])).await;
    assert_eq!(status, 200);
    let (status, third) = get_any(&format!("{}/api/messages/{id}?scope=local", admins[c])).await;
    assert_eq!(status, 404, "node{c} holds no copy: {third}");

    // Found by a search on the third node, once, as delivered by node d.
    let (status, found) = get_any(&format!("{}/api/messages?control_id=XN{n}", admins[c])).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["count"], 1, "{found}");
    let item = &found["items"][0];
    assert_eq!(item["id"], id.as_str());
    assert_eq!(item["status"], "delivered", "{found}");
    // The receiving node's copy has the owner's outcome (its completion notice) as well: a
    // list shows either delivered copy.
    assert!(
        item["node"] == "node0" || item["node"] == format!("node{d}").as_str(),
        "{found}"
    );
    assert_eq!(
        item["copies"],
        serde_json::json!(["node0", format!("node{d}")]),
        "{found}"
    );
    assert_eq!(found["unreachable"], serde_json::json!([]));
    // Every message once in a search without filter.
    let (_, all) = get_any(&format!("{}/api/messages?limit=50", admins[c])).await;
    let ids: Vec<&str> = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 8, "{all}");
    assert!(ids
        .windows(2)
        .all(|w| w[0].parse::<u64>().ok() > w[1].parse::<u64>().ok()));
    // Shown on the receiving node with the deliveries and attempts of the node that
    // delivered it.
    let (status, shown) = get_any(&format!("{}/api/messages/{id}", admins[0])).await;
    assert_eq!(status, 200);
    assert_eq!(shown["status"], "delivered", "{shown}");
    assert_eq!(shown["node"], format!("node{d}"));
    assert_eq!(shown["deliveries"][0]["status"], "delivered", "{shown}");
    assert!(
        !shown["attempts"].as_array().expect("attempts").is_empty(),
        "{shown}"
    );

    // A permanent error (400) dead-letters a message; every node lists it.
    let ack = send(&mut client, adt_for("BADP", "BAD1").as_bytes()).await;
    assert_eq!(code_and_err(&ack).0, "AA", "{ack}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let (_, dl) = get_any(&format!("{}/api/dead-letters", admins[0])).await;
        if dl["count"] == 1 {
            break dl["items"][0].clone();
        }
        assert!(Instant::now() < deadline, "no dead letter: {dl}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let holder = dead["node"].as_str().expect("node").to_string();
    for admin in &admins {
        let (_, dl) = get_any(&format!("{admin}/api/dead-letters")).await;
        assert_eq!(dl["count"], 1, "{admin}: {dl}");
        assert_eq!(dl["items"][0]["node"], holder.as_str());
        assert_eq!(dl["items"][0]["message_id"], dead["message_id"]);
    }
    let dead_id = dead["message_id"].as_str().expect("message id");
    let (_, failed) = get_any(&format!("{}/api/messages/{dead_id}", admins[0])).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let key = failed["payloads"][0]["idempotency_key"]
        .as_str()
        .expect("an idempotency key")
        .to_string();

    // Fixed; retried on a node that does not hold it: delivered once, under the same key.
    sink.set(SinkMode::Up);
    let h: usize = holder[4..].parse().expect("node number");
    let r = (h + 1) % 3;
    let (status, retried) = post_any(
        &format!("{}/api/dead-letters/retry", admins[r]),
        serde_json::json!({"items": [{
            "destination": dead["destination"], "seq": dead["seq"], "node": holder
        }]}),
    )
    .await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["retried"], 1, "{retried}");
    assert_eq!(retried["not_found"], 0, "{retried}");
    let bad = |sink: &HttpSink| {
        sink.received()
            .into_iter()
            .filter(|(_, body)| body.contains("BAD1"))
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(30, || !bad(&sink).is_empty()).await,
        "the retry did not arrive"
    );
    for admin in &admins {
        let (_, dl) = get_any(&format!("{admin}/api/dead-letters")).await;
        assert_eq!(dl["count"], 0, "{admin}: {dl}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, m) = get_any(&format!("{}/api/messages/{dead_id}", admins[c])).await;
        if m["status"] == "delivered" {
            break;
        }
        assert!(Instant::now() < deadline, "not shown as delivered: {m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let arrived = bad(&sink);
    assert_eq!(arrived.len(), 1, "delivered once: {arrived:?}");
    assert_eq!(arrived[0].0, key, "under the dead letter's idempotency key");

    // kill -9 of a node: named unreachable, the others still answer.
    engines[2].take().expect("node2").kill();
    let (status, after) = get_any(&format!("{}/api/messages?limit=50", admins[0])).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(
        after["unreachable"],
        serde_json::json!(["node2"]),
        "{after}"
    );
    assert_eq!(after["count"], 9, "node0 received all nine: {after}");
    for e in engines.into_iter().flatten() {
        e.kill();
    }
}

/// The record of the message with MSH-10 `control` on a node, `None` while it has none.
async fn record_on(engine: &EngineProcess, control: &str) -> Option<serde_json::Value> {
    let list = get_json(&format!(
        "{}/api/messages?control_id={control}&scope=local",
        engine.admin()
    ))
    .await;
    let id = list["items"][0]["id"].as_str()?.to_string();
    Some(get_json(&format!("{}/api/messages/{id}?scope=local", engine.admin())).await)
}

/// Three nodes, `node0` to `node2` (node ids 1 to 3), on the NATS servers at `urls` with one
/// stream replica, delivering to `sink`; `tune` changes each configuration before its node
/// starts. Returns once every partition has an owner.
async fn three_nodes(
    urls: &[String],
    sink: &str,
    tune: impl Fn(&TestConfig),
) -> (Vec<TestConfig>, Vec<EngineProcess>) {
    let cfgs: Vec<TestConfig> = (0..3)
        .map(|i| node_config(&format!("node{i}"), i as u8 + 1, urls, 1, sink))
        .collect();
    for c in &cfgs {
        tune(c);
    }
    let engines: Vec<EngineProcess> = cfgs
        .iter()
        .map(|c| EngineProcess::start(&c.conf(), &c.data()))
        .collect();
    wait_settled(&engines.iter().collect::<Vec<_>>(), 3, STARTUP_SECS).await;
    (cfgs, engines)
}

/// Waits (at most `secs`) until a node's record of `control` satisfies `ok`; returns the
/// record as last seen.
async fn until_record(
    engine: &EngineProcess,
    control: &str,
    secs: u64,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let rec = record_on(engine, control).await.unwrap_or_default();
        if ok(&rec) || Instant::now() > deadline {
            return rec;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a node other than `engines[0]` holds a copy of `control`: it was its
/// partition's owner and delivered it.
async fn delivered_elsewhere(engines: &[EngineProcess], control: &str) -> bool {
    for e in &engines[1..] {
        if record_on(e, control).await.is_some() {
            return true;
        }
    }
    false
}

/// The MSH-10 values the sink accepted (of any message type).
fn controls_at(sink: &HttpSink) -> BTreeSet<String> {
    sink.received()
        .iter()
        .map(|(_, body)| {
            let body = body.replace("\\r", "\r").replace('\n', "\r");
            segment(&body, "MSH")[9].clone()
        })
        .collect()
}

/// A second channel `wait` on every node: `ack = "on_delivery"` (4 s) to the same sink.
fn add_on_delivery_channel(cfg: &TestConfig, sink: &str) {
    std::fs::write(
        cfg.conf().join("channels/wait.toml"),
        format!(
            "name = \"wait\"\nack = \"on_delivery\"\nack_timeout_secs = 4\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n{}max_attempts = 1000\n",
            hook_channel(sink)
        ),
    )
    .expect("write channel");
}

/// Three nodes, one sender talking to node0 only. Messages whose partition another node
/// owns end `delivered` on node0's record too (the owner's completion notice), and the
/// `on_delivery` channel answers AA only once the sink has the message, an MFK with its
/// per-record answers, and AE when the destination stays down past the timeout (its late
/// success then recorded on node0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiving_node_learns_the_owners_outcome_and_on_delivery_waits_for_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = nats_cluster(dir.path(), 1);
    let urls = vec![nats[0].url()];
    let sink = HttpSink::start(SinkMode::Up).await;
    let (_cfgs, engines) =
        three_nodes(&urls, &sink.url, |c| add_on_delivery_channel(c, &sink.url)).await;

    // 1. ack = "on_persist": node0's record follows the owner's outcome.
    let mut client = connect(&engines[0].mllp("lab")).await;
    let controls: Vec<String> = (0..10).map(|n| format!("N{n}")).collect();
    for (n, c) in controls.iter().enumerate() {
        let ack = send(&mut client, adt_for(&format!("PN{n}"), c).as_bytes()).await;
        assert_eq!(code_and_err(&ack).0, "AA", "{ack}");
    }
    let mut remote = 0;
    for c in &controls {
        let rec = until_record(&engines[0], c, 30, |r| r["status"] == "delivered").await;
        assert_eq!(rec["status"], "delivered", "{c} on node0: {rec}");
        assert_eq!(rec["deliveries"][0]["status"], "delivered", "{rec}");
        assert!(
            rec["deliveries"][0]["attempts"].as_u64() >= Some(1),
            "{rec}"
        );
        if delivered_elsewhere(&engines, c).await {
            remote += 1;
        }
    }
    assert!(
        remote > 0,
        "every partition was node0's: nothing crossed nodes"
    );
    let metrics = metrics_text(&engines[0]).await;
    assert!(
        metric_value(&metrics, "switchboard_cluster_notices_applied_total") >= remote as f64,
        "{metrics}"
    );

    // 2. ack = "on_delivery": AA only once the sink has it, whichever node delivers.
    let mut wait = connect(&engines[0].mllp("wait")).await;
    let mut remote_patient = None;
    for n in 0..8 {
        let (patient, c) = (format!("PW{n}"), format!("W{n}"));
        let ack = send(&mut wait, adt_for(&patient, &c).as_bytes()).await;
        assert_eq!(
            segment(&ack, "MSA")[1..3],
            ["AA".to_string(), c.clone()],
            "{ack}"
        );
        assert!(
            controls_at(&sink).contains(&c),
            "AA before the sink had {c}"
        );
        if delivered_elsewhere(&engines, &c).await {
            remote_patient = Some(patient);
        }
    }
    let remote_patient = remote_patient.expect("a message of `wait` delivered by another node");
    // A master file keeps its per-record answers.
    let file = "MSH|^~\\&|HIS|RUH|SB|HUB|20260615103000||MFN^M05^MFN_M05|MFN-C1|P|2.5\r\
                MFI|LOC||UPD|||AL\r\
                MFE|MAD|G1||CLN-C1|PL\rLOC|CLN-C1|First Clinic|C\r\
                MFE|MAD|B2|||PL\rLOC\r";
    let mfk = send(&mut wait, file.as_bytes()).await;
    assert_eq!(segment(&mfk, "MSA")[1], "AA", "{mfk}");
    let mfa: Vec<&str> = mfk.split('\r').filter(|s| s.starts_with("MFA")).collect();
    assert_eq!(mfa.len(), 2, "{mfk}");
    assert_eq!(mfa[0].split('|').nth(4), Some("S"), "{mfk}");
    assert!(
        mfa[1]
            .split('|')
            .nth(4)
            .is_some_and(|f| f.starts_with("U^")),
        "{mfk}"
    );
    assert!(controls_at(&sink).contains("MFN-C1"), "MFK before delivery");

    // 3. The destination down past the timeout: AE, and the late success recorded.
    sink.set(SinkMode::Down);
    let ack = send(&mut wait, adt_for(&remote_patient, "WD").as_bytes()).await;
    assert_eq!(segment(&ack, "MSA")[1..3], ["AE", "WD"], "{ack}");
    assert!(
        ack.contains("not confirmed by every destination within 4 s"),
        "{ack}"
    );
    assert!(
        delivered_elsewhere(&engines, "WD").await,
        "WD went to its owner"
    );
    sink.set(SinkMode::Up);
    let rec = until_record(&engines[0], "WD", 30, |r| {
        r["status"] == "delivered" && r["ack_code"] == "AA"
    })
    .await;
    assert_eq!(
        (&rec["status"], &rec["ack_code"]),
        (&"delivered".into(), &"AA".into()),
        "{rec}"
    );
    for e in engines {
        e.kill();
    }
}

/// A marker that appears only in the message bodies (PID-5).
const MARKER: &str = "Qxzzyvplank";

/// `[encryption]` on every node: the work stream holds no patient name, identifier or
/// message type (read back from JetStream itself), the sink still gets the right bodies,
/// and the notices (sealed too) reach the receiving nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_encryption_the_stream_holds_nothing_readable_and_the_sink_gets_the_bodies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = nats_cluster(dir.path(), 1);
    let urls = vec![nats[0].url()];
    let sink = HttpSink::start(SinkMode::Up).await;
    let key = dir.path().join("k1");
    std::fs::write(&key, "ab".repeat(32)).expect("write key");
    let enc = format!(
        "[encryption]\n[[encryption.keys]]\nid = \"k1\"\nkey = {{ file = \"{}\" }}\n",
        key.display()
    );
    let cfgs: Vec<TestConfig> = (0..2)
        .map(|i| node_config_with(&format!("node{i}"), i as u8 + 1, &urls, 1, &sink.url, &enc))
        .collect();
    let engines: Vec<EngineProcess> = cfgs
        .iter()
        .map(|c| EngineProcess::start(&c.conf(), &c.data()))
        .collect();
    wait_settled(&engines.iter().collect::<Vec<_>>(), 2, STARTUP_SECS).await;
    let mut sent = BTreeMap::new();
    for (i, e) in engines.iter().enumerate() {
        let mut client = connect(&e.mllp("lab")).await;
        for n in 0..4 {
            let (patient, c) = (format!("MRNZQ{i}{n}"), format!("E{i}{n}"));
            let msg = adt_for(&patient, &c).replace("Testperson", MARKER);
            let ack = send(&mut client, msg.as_bytes()).await;
            assert_eq!(code_and_err(&ack).0, "AA", "{ack}");
            sent.insert(c, (i, patient));
        }
    }
    let all_in = eventually(30, || sent.keys().all(|c| controls_at(&sink).contains(c))).await;
    assert!(
        all_in,
        "not every message arrived: {:?}",
        controls_at(&sink)
    );
    for (_, body) in sink.received() {
        let (c, patient) = control_and_patient(&body);
        assert_eq!(sent[&c].1, patient, "{body}");
        assert!(body.contains(MARKER), "the body as sent: {body}");
    }
    for (c, (i, _)) in &sent {
        let rec = until_record(&engines[*i], c, 30, |r| r["status"] == "delivered").await;
        assert_eq!(rec["status"], "delivered", "{c} on node{i}: {rec}");
    }

    // What JetStream holds, read with a client of its own.
    let client = async_nats::connect(nats[0].url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream("SWITCHBOARD_WORK")
        .await
        .expect("work stream");
    let state = stream.info().await.expect("stream info").state.clone();
    assert_eq!(state.messages, sent.len() as u64, "{state:?}");
    for seq in state.first_sequence..=state.last_sequence {
        let m = stream.get_raw_message(seq).await.expect("stored message");
        let payload = &m.payload[..];
        assert!(payload.len() > 100, "a whole envelope");
        let mut secrets: Vec<String> = vec![MARKER.into(), "ADT^A08".into(), "MRNZQ".into()];
        secrets.extend(sent.keys().cloned());
        for secret in &secrets {
            assert!(
                !payload
                    .windows(secret.len())
                    .any(|w| w == secret.as_bytes()),
                "{secret} in clear in stream message {seq}"
            );
        }
    }
    for e in engines {
        e.kill();
    }
}

/// The node that holds partition `p` in a view of the cluster (`GET /api/cluster`).
fn owner_of(view: &serde_json::Value, p: u32) -> Option<String> {
    view["nodes"]
        .as_array()?
        .iter()
        .find(|n| {
            n["partitions"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|x| x.as_u64() == Some(u64::from(p))))
        })
        .and_then(|n| n["node"].as_str().map(str::to_string))
}

/// `count` patient identifiers `<prefix><n>` whose partition `node` holds in `view`, as
/// every node computes it from PID-3.
fn patients_of(view: &serde_json::Value, node: &str, prefix: &str, count: usize) -> Vec<String> {
    let found: Vec<String> = (0..1000)
        .map(|n| format!("{prefix}{n}"))
        .filter(|patient| {
            let p = engine::cluster::envelope::partition_of_key(patient, PARTITIONS);
            owner_of(view, p).as_deref() == Some(node)
        })
        .take(count)
        .collect();
    assert_eq!(found.len(), count, "{node} holds no partition: {view}");
    found
}

/// Waits (at most `secs`) until `engine`'s view shows `n` nodes sharing every partition, none
/// above its fair share, unchanged over two lease rounds; returns that view. A cluster is
/// settled ([`wait_settled`]) as soon as every partition has an owner, possibly while a node
/// that saw fewer nodes still holds more than its share and gives some back at its next
/// round: a test that reads which node delivers which partition needs this balance.
async fn wait_balanced(engine: &EngineProcess, n: usize, secs: u64) -> serde_json::Value {
    let share = PARTITIONS.div_ceil(n as u32) as usize;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last: Option<serde_json::Value> = None;
    loop {
        let view = cluster_view(engine).await.unwrap_or_default();
        let counts: Vec<usize> = view["nodes"]
            .as_array()
            .map(|ns| {
                ns.iter()
                    .map(|n| n["partitions"].as_array().map_or(0, Vec::len))
                    .collect()
            })
            .unwrap_or_default();
        let balanced = counts.len() == n
            && counts.iter().sum::<usize>() == PARTITIONS as usize
            && counts.iter().all(|c| (1..=share).contains(c));
        if balanced {
            let owners =
                |v: &serde_json::Value| (0..PARTITIONS).map(|p| owner_of(v, p)).collect::<Vec<_>>();
            if last.as_ref().is_some_and(|l| owners(l) == owners(&view)) {
                return view;
            }
            last = Some(view);
        } else {
            last = None;
        }
        assert!(
            Instant::now() < deadline,
            "the partitions were not balanced over {n} nodes within {secs} s: {:?}",
            cluster_view(engine).await
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}

/// What the sink accepted of the message with MSH-10 `control`: (idempotency key, body), in
/// the order of arrival.
fn arrivals(sink: &HttpSink, control: &str) -> Vec<(String, String)> {
    sink.received()
        .into_iter()
        .filter(|(_, body)| control_and_patient(body).0 == control)
        .collect()
}

/// The id of the message with MSH-10 `control` in a node's own store.
async fn local_id(admin: &str, control: &str) -> String {
    let list = get_json(&format!(
        "{admin}/api/messages?control_id={control}&scope=local"
    ))
    .await;
    assert_eq!(list["count"], 1, "{control} on {admin}: {list}");
    list["items"][0]["id"]
        .as_str()
        .expect("a message id")
        .to_string()
}

/// An ADT^A04 (the other messages here are A08) for `patient`: what the bulk reprocess picks.
fn a04_for(patient: &str, control_id: &str) -> String {
    adt_for(patient, control_id).replace("ADT^A08", "ADT^A04")
}

/// Every action an operator takes on a message or a dead letter, asked on node0, which holds
/// no copy of anything: each is carried out on the node that holds it, with the effect the
/// single-node action has. node1 receives the messages, except FC1 which node2 receives;
/// node2 owns the partition of FA1 and FB1, node1 that of FC1 and of the dead-lettered ones;
/// so every good message has a copy on node1 and one on node2. A discarded dead letter is
/// gone from node1's own store and never delivered; a retried one is delivered once under
/// its first idempotency key; a reprocess, of one message (from the receiving node's copy
/// and from the owner's) or by a bulk filter, is delivered once more, by one copy only,
/// under a new `-r<ms>` key; a resend arrives as a new message that names the original; an
/// unknown id answers 404 in JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_asked_on_any_node_are_carried_out_on_the_node_that_holds_the_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = nats_cluster(dir.path(), 1);
    let urls = vec![nats[0].url()];
    let sink = HttpSink::start(SinkMode::RejectBad).await;
    let (_cfgs, engines) = three_nodes(&urls, &sink.url, |_| {}).await;
    let all: Vec<&EngineProcess> = engines.iter().collect();
    for e in &all {
        wait_admin_urls(e, &all).await;
    }
    let view = wait_balanced(&engines[0], 3, 60).await;
    let admins: Vec<String> = engines.iter().map(EngineProcess::admin).collect();
    let (a, b) = (&admins[0], &admins[1]);
    let good = patients_of(&view, "node2", "FP", 2);
    let bad = patients_of(&view, "node1", "FQ", 1).remove(0);
    let owned_by_1 = patients_of(&view, "node1", "FC", 1).remove(0);

    // Everything goes to node1: two good messages (delivered by node2), two that the sink
    // refuses for good (dead-lettered by node1).
    let mut client = connect(&engines[1].mllp("lab")).await;
    let fa1 = adt_for(&good[0], "FA1");
    for msg in [
        fa1.clone(),
        a04_for(&good[1], "FB1"),
        adt_for(&bad, "BADX1"),
        adt_for(&bad, "BADX2"),
    ] {
        let ack = send(&mut client, msg.as_bytes()).await;
        assert_eq!(code_and_err(&ack).0, "AA", "{ack}");
    }
    // And one to node2 whose partition node1 owns.
    let fc1 = adt_for(&owned_by_1, "FC1");
    let mut to_node2 = connect(&engines[2].mllp("lab")).await;
    let ack = send(&mut to_node2, fc1.as_bytes()).await;
    assert_eq!(code_and_err(&ack).0, "AA", "{ack}");
    assert!(
        eventually(30, || ["FA1", "FB1", "FC1"]
            .iter()
            .all(|c| !arrivals(&sink, c).is_empty()))
        .await,
        "the good messages did not arrive"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let (_, dl) = get_any(&format!("{b}/api/dead-letters?scope=local")).await;
        if dl["count"] == 2 {
            break dl["items"].as_array().expect("items").clone();
        }
        assert!(
            Instant::now() < deadline,
            "no two dead letters on node1: {dl}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (fa1_id, fb1_id) = (local_id(b, "FA1").await, local_id(b, "FB1").await);
    let (bad1_id, bad2_id) = (local_id(b, "BADX1").await, local_id(b, "BADX2").await);
    for (control, id) in [("FA1", &fa1_id), ("FB1", &fb1_id)] {
        let (status, copy) = get_any(&format!("{}/api/messages/{id}?scope=local", admins[2])).await;
        assert_eq!(status, 200, "node2 delivered {control}: {copy}");
    }
    let fc1_id = local_id(&admins[2], "FC1").await;
    let (status, copy) = get_any(&format!("{b}/api/messages/{fc1_id}?scope=local")).await;
    assert_eq!(status, 200, "node1 delivered FC1: {copy}");
    let (_, mine) = get_any(&format!("{a}/api/messages?scope=local")).await;
    assert_eq!(mine["count"], 0, "node0 holds no copy of anything: {mine}");
    let dead_of = |id: &str| {
        let d = dead
            .iter()
            .find(|d| d["message_id"] == id)
            .unwrap_or_else(|| panic!("no dead letter of message {id}: {dead:?}"));
        json_item(d, "node1")
    };
    let first_keys = |control: &str| {
        arrivals(&sink, control)
            .into_iter()
            .map(|(k, _)| k)
            .collect::<Vec<_>>()
    };
    assert_eq!(first_keys("FA1"), [format!("{fa1_id}-hook")]);

    // Discard, asked on node0: gone from node1's own store; once only.
    let discard = format!("{a}/api/dead-letters/discard");
    let (status, done) =
        post_any(&discard, serde_json::json!({"items": [dead_of(&bad1_id)]})).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        done,
        serde_json::json!({"discarded": 1, "not_found": 0, "unreachable": []})
    );
    let (_, left) = get_any(&format!("{b}/api/dead-letters?scope=local")).await;
    assert_eq!(left["count"], 1, "{left}");
    assert_eq!(left["items"][0]["message_id"], bad2_id.as_str(), "{left}");
    let (_, listed) = get_any(&format!("{a}/api/dead-letters")).await;
    assert_eq!(
        listed["count"], 1,
        "node0's list follows node1's store: {listed}"
    );
    let (status, again) =
        post_any(&discard, serde_json::json!({"items": [dead_of(&bad1_id)]})).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        (&again["discarded"], &again["not_found"]),
        (&0.into(), &1.into())
    );
    // A node that is not in the cluster is named, not taken for this one.
    let mut elsewhere = dead_of(&bad2_id);
    elsewhere["node"] = "node9".into();
    let (status, unknown) = post_any(&discard, serde_json::json!({"items": [elsewhere]})).await;
    assert_eq!(status, 200, "{unknown}");
    assert_eq!(unknown["discarded"], 0, "{unknown}");
    assert_eq!(
        unknown["unreachable"],
        serde_json::json!(["node9"]),
        "{unknown}"
    );

    // Retry, asked on node0: delivered once, under the dead letter's idempotency key.
    let (_, bad2) = get_any(&format!("{b}/api/messages/{bad2_id}?scope=local")).await;
    let bad2_key = bad2["payloads"][0]["idempotency_key"]
        .as_str()
        .expect("an idempotency key")
        .to_string();
    sink.set(SinkMode::Up);
    let (status, retried) = post_any(
        &format!("{a}/api/dead-letters/retry"),
        serde_json::json!({"items": [dead_of(&bad2_id)]}),
    )
    .await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(
        retried,
        serde_json::json!({"retried": 1, "not_found": 0, "unreachable": []})
    );
    assert!(
        eventually(30, || !arrivals(&sink, "BADX2").is_empty()).await,
        "the retried dead letter did not arrive"
    );
    assert_eq!(first_keys("BADX2"), [bad2_key]);
    let (_, left) = get_any(&format!("{b}/api/dead-letters?scope=local")).await;
    assert_eq!(left["count"], 0, "{left}");

    // Bulk reprocess by a filter, asked on node0: the message is chosen once, though two
    // nodes hold it.
    let (status, bulk) = post_any(
        &format!("{a}/api/reprocess"),
        serde_json::json!({"message_type": "ADT^A04"}),
    )
    .await;
    assert_eq!(status, 200, "{bulk}");
    assert_eq!(
        bulk,
        serde_json::json!({"reprocessed": 1, "skipped": 0, "unreachable": []})
    );
    assert!(
        eventually(30, || arrivals(&sink, "FB1").len() >= 2).await,
        "the bulk reprocess did not arrive"
    );
    assert!(
        first_keys("FB1")[1].starts_with(&format!("{fb1_id}-hook-r")),
        "{:?}",
        first_keys("FB1")
    );

    // Reprocess and resend of one message, asked on node0: done by one of its copies (the
    // first node asked that holds one), the receiving node's for one message and the
    // owner's for the other, since node1 received FA1 and owns FC1's partition.
    let mut kinds = BTreeSet::new();
    for (control, id, receiver, raw, edited) in [
        ("FA1", &fa1_id, "node1", &fa1, "FR1"),
        ("FC1", &fc1_id, "node2", &fc1, "FR2"),
    ] {
        let (status, answer) = post_any(
            &format!("{a}/api/messages/{id}/reprocess"),
            serde_json::json!({}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["id"], id.as_str(), "{answer}");
        assert_eq!(answer["status"], "routed", "{answer}");
        let by = answer["node"].as_str().unwrap_or_default().to_string();
        assert!(
            by == "node1" || by == "node2",
            "done by a node that holds a copy: {answer}"
        );
        kinds.insert(by == receiver);
        assert!(
            eventually(30, || arrivals(&sink, control).len() >= 2).await,
            "the reprocessed {control} did not arrive"
        );
        let got = arrivals(&sink, control);
        assert!(
            got[1].0.starts_with(&format!("{id}-hook-r")),
            "a reprocess has a key of its own: {got:?}"
        );
        assert_eq!(got[1].1, got[0].1, "the same body");

        // An edited copy: a new message on the node that holds the original, delivered by
        // the owner of the patient's partition; the original stays as it was.
        let (status, resent) = post_any(
            &format!("{a}/api/messages/{id}/resend"),
            serde_json::json!({"raw": raw.replace(control, edited)}),
        )
        .await;
        assert_eq!(status, 200, "{resent}");
        assert_eq!(resent["original"], id.as_str(), "{resent}");
        assert_eq!(resent["ack_code"], "AA", "{resent}");
        assert_eq!(resent["node"], by.as_str(), "the same holder: {resent}");
        let new_id = resent["id"]
            .as_str()
            .expect("the new message's id")
            .to_string();
        assert_ne!(&new_id, id);
        assert!(
            eventually(30, || !arrivals(&sink, edited).is_empty()).await,
            "the resent {edited} did not arrive"
        );
        assert!(
            arrivals(&sink, edited)[0]
                .0
                .starts_with(&format!("{new_id}-hook")),
            "{:?}",
            arrivals(&sink, edited)
        );
        let (status, shown) = get_any(&format!("{a}/api/messages/{new_id}")).await;
        assert_eq!(status, 200, "{shown}");
        assert_eq!(shown["resent_from"], id.as_str(), "{shown}");
        let (_, original) = get_any(&format!("{a}/api/messages/{id}")).await;
        assert!(
            original["raw"]
                .as_str()
                .is_some_and(|r| r.contains(control) && !r.contains(edited)),
            "the original stays as it was: {original}"
        );
    }
    assert_eq!(
        kinds.len(),
        2,
        "both the receiving node's copy and the owner's copy acted"
    );

    // An unknown id: 404 with a JSON body, from every node asked.
    let bodies = [
        ("reprocess", serde_json::json!({})),
        ("resend", serde_json::json!({"raw": fa1})),
    ];
    for (action, body) in bodies {
        let resp = reqwest::Client::new()
            .post(format!("{a}/api/messages/12345/{action}"))
            .json(&body)
            .send()
            .await
            .expect("admin API reachable");
        assert_eq!(resp.status(), 404, "{action}");
        let body: serde_json::Value = resp.json().await.expect("a JSON body");
        assert_eq!(body["error"], "not_found", "{action}: {body}");
        assert_eq!(
            body["unreachable"],
            serde_json::json!([]),
            "{action}: {body}"
        );
    }
    let (status, body) = post_any(
        &format!("{a}/api/messages/x1/reprocess"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!((status, &body["error"]), (400, &"bad_id".into()), "{body}");

    // Each action acted once: nothing more arrived than the above.
    let controls = ["FA1", "FB1", "FC1", "BADX1", "BADX2", "FR1", "FR2"];
    let counts: Vec<usize> = controls.iter().map(|c| arrivals(&sink, c).len()).collect();
    assert_eq!(counts, [2, 2, 2, 0, 1, 1, 1], "{controls:?}");

    // node1 killed: FA1's other copy, on node2, acts; a 404 names the node not asked.
    let mut engines = engines;
    engines.remove(1).kill();
    let (status, answer) = post_any(
        &format!("{a}/api/messages/{fa1_id}/reprocess"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["node"], "node2", "{answer}");
    assert!(
        eventually(30, || arrivals(&sink, "FA1").len() >= 3).await,
        "the reprocess by node2 did not arrive"
    );
    let (status, body) = post_any(
        &format!("{a}/api/messages/12345/reprocess"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["unreachable"], serde_json::json!(["node1"]), "{body}");
    for e in engines {
        e.kill();
    }
}

/// A dead letter as an action names it: destination, seq and the node that holds it.
fn json_item(dead: &serde_json::Value, node: &str) -> serde_json::Value {
    serde_json::json!({"destination": dead["destination"], "seq": dead["seq"], "node": node})
}

/// `[encryption]` with one key, `id`, read from `file`.
fn encryption(id: &str, file: &Path) -> String {
    format!(
        "[encryption]\n[[encryption.keys]]\nid = \"{id}\"\nkey = {{ file = \"{}\" }}\n",
        file.display()
    )
}

/// One node of three lacks the key the work is sealed with (its key ring has another key):
/// it delivers nothing of its partitions, neither acknowledges them, and counts them in
/// `switchboard_cluster_unopened_messages_total`, while the other nodes deliver theirs.
/// Nothing is lost: once it is stopped, the others take its partitions and deliver every
/// acknowledged message, once each, in order per patient, and the receiving node records
/// them delivered. Restarted with the key, it takes partitions again and delivers their work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_key_delivers_nothing_and_its_work_waits_for_another_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = nats_cluster(dir.path(), 1);
    let urls = vec![nats[0].url()];
    let sink = HttpSink::start(SinkMode::Up).await;
    let (k1, k0) = (dir.path().join("k1"), dir.path().join("k0"));
    std::fs::write(&k1, "ab".repeat(32)).expect("write key");
    std::fs::write(&k0, "cd".repeat(32)).expect("write key");
    let rings = [
        encryption("k1", &k1),
        encryption("k1", &k1),
        encryption("k0", &k0),
    ];
    let cfgs: Vec<TestConfig> = rings
        .iter()
        .enumerate()
        .map(|(i, ring)| {
            node_config_with(&format!("node{i}"), i as u8 + 1, &urls, 1, &sink.url, ring)
        })
        .collect();
    let mut engines: Vec<EngineProcess> = cfgs
        .iter()
        .map(|c| EngineProcess::start(&c.conf(), &c.data()))
        .collect();
    wait_settled(&engines.iter().collect::<Vec<_>>(), 3, STARTUP_SECS).await;
    let view = wait_balanced(&engines[0], 3, 60).await;
    let node2 = engines.pop().expect("node2");
    let locked = patients_of(&view, "node2", "KL", 3);
    let open = [
        patients_of(&view, "node0", "KO", 2),
        patients_of(&view, "node1", "KN", 2),
    ]
    .concat();

    // Two messages per patient, all to node0: sealed with k1.
    let mut client = connect(&engines[0].mllp("lab")).await;
    let mut sent: Vec<(String, String)> = Vec::new();
    for n in 0..2 {
        for patient in locked.iter().chain(&open) {
            let control = format!("K{patient}n{n}");
            let ack = send(&mut client, adt_for(patient, &control).as_bytes()).await;
            assert_eq!(code_and_err(&ack).0, "AA", "{ack}");
            sent.push((control, patient.clone()));
        }
    }
    let of = |patients: &[String]| {
        sent.iter()
            .filter(|(_, p)| patients.contains(p))
            .map(|(c, _)| c.clone())
            .collect::<Vec<_>>()
    };
    let (held, free) = (of(&locked), of(&open));
    assert!(
        eventually(30, || {
            let got = controls_at(&sink);
            free.iter().all(|c| got.contains(c))
        })
        .await,
        "the partitions of the nodes with the key were not delivered: {:?}",
        controls_at(&sink)
    );
    // node2 was offered its work and could not open it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = metrics_text(&node2).await;
        if metric_value(&m, "switchboard_cluster_unopened_messages_total") >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node2 counted nothing unopened: {m}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (i, e) in engines.iter().enumerate() {
        let m = metrics_text(e).await;
        assert_eq!(
            metric_value(&m, "switchboard_cluster_unopened_messages_total"),
            0.0,
            "node{i} has the key"
        );
    }
    // Its partitions' work is neither delivered nor taken up, and stays in the stream:
    // node2's lag counts it.
    let got = controls_at(&sink);
    let early: Vec<&String> = held.iter().filter(|c| got.contains(*c)).collect();
    assert!(early.is_empty(), "delivered without the key: {early:?}");
    let (_, copies) = get_any(&format!("{}/api/messages?scope=local", node2.admin())).await;
    assert_eq!(copies["count"], 0, "node2 took nothing up: {copies}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = cluster_view(&engines[0]).await.unwrap_or_default();
        let lag = v["nodes"]
            .as_array()
            .and_then(|ns| ns.iter().find(|n| n["node"] == "node2"))
            .and_then(|n| n["lag"].as_u64())
            .unwrap_or(0);
        if lag >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "node2 shows no lag: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for c in &held {
        let rec = record_on(&engines[0], c)
            .await
            .expect("node0 keeps what it received");
        assert_ne!(rec["status"], "delivered", "{c}: {rec}");
    }

    // node2 stops: the others take its partitions and deliver all of it.
    assert_eq!(node2.terminate(), Some(0), "node2 stops cleanly");
    wait_settled(&engines.iter().collect::<Vec<_>>(), 2, 30).await;
    assert!(
        eventually(60, || {
            let got = controls_at(&sink);
            held.iter().all(|c| got.contains(c))
        })
        .await,
        "the work of the node without the key was not delivered: {:?}",
        controls_at(&sink)
    );
    // Once each, in order per patient.
    let received = sink.received();
    for (control, _) in &sent {
        assert_eq!(arrivals(&sink, control).len(), 1, "{control} once");
    }
    for patient in locked.iter().chain(&open) {
        let order: Vec<String> = received
            .iter()
            .map(|(_, body)| control_and_patient(body))
            .filter(|(_, p)| p == patient)
            .map(|(c, _)| c)
            .collect();
        assert_eq!(
            order,
            [format!("K{patient}n0"), format!("K{patient}n1")],
            "patient {patient} in order"
        );
    }
    for c in &held {
        let rec = until_record(&engines[0], c, 30, |r| r["status"] == "delivered").await;
        assert_eq!(rec["status"], "delivered", "{c} on node0: {rec}");
    }

    // node2 comes back with the work's key first in its ring (its own store's key after
    // it): it takes its share of the partitions again and delivers their work itself.
    let main = cfgs[2].conf().join("switchboard.toml");
    let text = std::fs::read_to_string(&main).expect("config");
    let fixed = format!(
        "{}[[encryption.keys]]\nid = \"k0\"\nkey = {{ file = \"{}\" }}\n",
        encryption("k1", &k1),
        k0.display()
    );
    std::fs::write(&main, text.replace(&rings[2], &fixed)).expect("write config");
    engines.push(EngineProcess::start(&cfgs[2].conf(), &cfgs[2].data()));
    wait_settled(&engines.iter().collect::<Vec<_>>(), 3, STARTUP_SECS).await;
    let view = wait_balanced(&engines[0], 3, 60).await;
    let mut later = Vec::new();
    for patient in patients_of(&view, "node2", "KR", 2) {
        let control = format!("K{patient}n0");
        let ack = send(&mut client, adt_for(&patient, &control).as_bytes()).await;
        assert_eq!(code_and_err(&ack).0, "AA", "{ack}");
        later.push(control);
    }
    assert!(
        eventually(30, || {
            let got = controls_at(&sink);
            later.iter().all(|c| got.contains(c))
        })
        .await,
        "node2 with the key did not deliver its partitions' work"
    );
    for c in &later {
        let rec = until_record(&engines[2], c, 30, |r| r["status"] == "delivered").await;
        assert_eq!(rec["status"], "delivered", "node2 delivered {c}: {rec}");
    }
    let m = metrics_text(&engines[2]).await;
    assert_eq!(
        metric_value(&m, "switchboard_cluster_unopened_messages_total"),
        0.0,
        "node2 opens everything now"
    );
    for e in engines {
        e.kill();
    }
}

/// A sender's resend to another node of a message the stream already holds (as after a node
/// died, or a stream acknowledgement was lost, before the sender had its answer): answered
/// AA, delivered once under the first copy's key, and the second node's record says it is a
/// copy delivered from elsewhere instead of waiting as `received` for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_to_another_node_is_delivered_once_and_its_copy_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = nats_cluster(dir.path(), 1);
    let urls = vec![nats[0].url()];
    let sink = HttpSink::start(SinkMode::Up).await;
    let (_cfgs, engines) = three_nodes(&urls, &sink.url, |_| {}).await;
    let view = wait_balanced(&engines[0], 3, 60).await;
    // node2 owns the patient's partition: neither node0 nor node1 holds an owner's copy.
    let patient = patients_of(&view, "node2", "RS", 1).remove(0);
    let msg = adt_for(&patient, "DUP1");
    for e in &engines[..2] {
        let ack = send(&mut connect(&e.mllp("lab")).await, msg.as_bytes()).await;
        assert_eq!(code_and_err(&ack).0, "AA", "{ack}");
    }
    let first = until_record(&engines[0], "DUP1", 30, |r| r["status"] == "delivered").await;
    assert_eq!(first["status"], "delivered", "the first copy: {first}");
    let copy = until_record(&engines[1], "DUP1", 30, |r| r["status"] == "filtered").await;
    assert_eq!(copy["status"], "filtered", "the resend's copy: {copy}");
    assert!(
        copy["errors"]
            .to_string()
            .contains("the stream already held this message"),
        "{copy}"
    );
    // Give a second delivery time to arrive, were there one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let arrived = arrivals(&sink, "DUP1");
    assert_eq!(arrived.len(), 1, "delivered once: {arrived:?}");
    for e in engines {
        e.kill();
    }
}
