//! Starting and stopping the engine binary, and talking to it.

use channels::mllp::client::MllpClient;
use engine::RuntimeInfo;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of the engine binary built for the tests; `SWITCHBOARD_UNDER_TEST` overrides it
/// (a target directory shared by several checkouts holds one `switchboard-under-test`: the
/// one built last, by whichever checkout).
pub fn binary() -> PathBuf {
    std::env::var_os("SWITCHBOARD_UNDER_TEST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_switchboard-under-test")))
}

/// A config folder with one MLLP channel on a free port.
pub struct TestConfig {
    /// Holds conf/ and data/.
    pub root: tempfile::TempDir,
}

impl TestConfig {
    /// `switchboard.toml` with loopback ports and `extra` appended, one channel `lab` with
    /// `channel_extra` appended to its file.
    pub fn new(extra: &str, channel_extra: &str) -> TestConfig {
        let root = tempfile::tempdir().expect("tempdir");
        let conf = root.path().join("conf");
        std::fs::create_dir_all(conf.join("channels")).expect("mkdir");
        std::fs::write(
            conf.join("switchboard.toml"),
            format!(
                "data_dir = \"{}\"\nshutdown_grace_secs = 5\n{extra}\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"warn\"\n",
                root.path().join("data").display()
            ),
        )
        .expect("write config");
        std::fs::write(
            conf.join("channels/lab.toml"),
            format!("name = \"lab\"\n{channel_extra}\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n"),
        )
        .expect("write channel");
        TestConfig { root }
    }

    /// The config folder.
    pub fn conf(&self) -> PathBuf {
        self.root.path().join("conf")
    }

    /// The data folder.
    pub fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }
}

/// A running engine process.
pub struct EngineProcess {
    child: Option<Child>,
    /// Addresses it bound.
    pub info: RuntimeInfo,
}

impl EngineProcess {
    /// Starts the binary on `conf` and waits (at most 20 s) until it has bound its ports.
    pub fn start(conf: &Path, data: &Path) -> EngineProcess {
        Self::start_logging_to(conf, data, Stdio::inherit())
    }

    /// [`EngineProcess::start`] with the engine's log (stderr) going to `log`.
    pub fn start_logging_to(conf: &Path, data: &Path, log: Stdio) -> EngineProcess {
        Self::start_with(conf, data, log, &[])
    }

    /// [`EngineProcess::start_logging_to`] with extra environment variables.
    pub fn start_with(conf: &Path, data: &Path, log: Stdio, env: &[(&str, &str)]) -> EngineProcess {
        let child = Command::new(binary())
            .args(["run", "--config"])
            .arg(conf)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("engine binary starts");
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(20);
        let file = data.join("engine.json");
        let mut child = Some(child);
        loop {
            if let Ok(text) = std::fs::read(&file) {
                if let Ok(info) = serde_json::from_slice::<RuntimeInfo>(&text) {
                    if info.pid == pid {
                        return EngineProcess { child, info };
                    }
                }
            }
            if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("engine exited during startup: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "engine did not start within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The MLLP address of channel `name`.
    pub fn mllp(&self, name: &str) -> String {
        self.info.channels[name].to_string()
    }

    /// The admin base URL.
    pub fn admin(&self) -> String {
        format!("http://{}", self.info.admin)
    }

    /// SIGKILL, no goodbye.
    pub fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (at most 20 s); returns the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An ADT^A04 with the given control id (synthetic patient).
pub fn adt(control_id: &str) -> String {
    format!(
        "MSH|^~\\&|HIS|MAIN|SB|HUB|20250101120000||ADT^A04^ADT_A01|{control_id}|P|2.5.1\rEVN|A04|20250101120000\rPID|1||MRN{control_id}^^^MAIN^MR||Testperson^Alex||19800101|U\rPV1|1|O\r"
    )
}

/// Connects an MLLP client (10 s timeout).
pub async fn connect(addr: &str) -> MllpClient {
    MllpClient::connect(addr, Duration::from_secs(10))
        .await
        .expect("connect")
}

/// Sends one message and returns the answer as text.
pub async fn send(client: &mut MllpClient, message: &[u8]) -> String {
    let bytes = client.send(message).await.expect("an answer");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The segment starting with `id` in an HL7 text, split into fields.
pub fn segment(text: &str, id: &str) -> Vec<String> {
    text.split('\r')
        .find(|s| s.starts_with(id))
        .unwrap_or_else(|| panic!("no {id} segment in {text:?}"))
        .split('|')
        .map(str::to_string)
        .collect()
}

/// GET a JSON document from the admin API.
pub async fn get_json(url: &str) -> serde_json::Value {
    let resp = reqwest::get(url).await.expect("admin API reachable");
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.json().await.expect("JSON body")
}

/// How the in-test HTTP destination answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkMode {
    /// 200 and keep the body.
    Up,
    /// 503 with `Retry-After: 0`.
    Down,
    /// 400 to bodies containing `BAD`, 200 to the others.
    RejectBad,
    /// 503 (`Retry-After: 0`) to bodies containing the text, 200 to the others.
    DownFor(&'static str),
}

/// The sink's state: mode, accepted (idempotency key, body), requests seen.
type SinkState = std::sync::Arc<std::sync::Mutex<(SinkMode, Vec<(String, String)>, usize)>>;

/// An HTTP server on 127.0.0.1 that records what it accepted.
#[derive(Clone)]
pub struct HttpSink {
    /// Its base URL.
    pub url: String,
    state: SinkState,
}

impl HttpSink {
    /// Starts the server in `mode` on a free port.
    pub async fn start(mode: SinkMode) -> HttpSink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        HttpSink::serve(listener, mode)
    }

    /// Starts the server in `mode` on `addr` (a port chosen earlier by the test).
    pub async fn start_on(addr: &str, mode: SinkMode) -> HttpSink {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind the chosen port");
        HttpSink::serve(listener, mode)
    }

    fn serve(listener: tokio::net::TcpListener, mode: SinkMode) -> HttpSink {
        use axum::extract::State;
        use axum::http::{HeaderMap, StatusCode};
        type Shared = SinkState;
        let state: Shared = std::sync::Arc::new(std::sync::Mutex::new((mode, Vec::new(), 0)));
        async fn receive(
            State(s): State<Shared>,
            headers: HeaderMap,
            body: String,
        ) -> (StatusCode, [(&'static str, &'static str); 1], String) {
            let mut g = s.lock().expect("lock");
            g.2 += 1;
            let key = headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            match g.0 {
                SinkMode::Down => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("retry-after", "0")],
                    "{\"error\":\"down\"}".into(),
                ),
                SinkMode::DownFor(text) if body.contains(text) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("retry-after", "0")],
                    "{\"error\":\"down for this one\"}".into(),
                ),
                SinkMode::RejectBad if body.contains("BAD") => (
                    StatusCode::BAD_REQUEST,
                    [("x-sink", "1")],
                    "{\"error\":\"field PID-5 rejected\"}".into(),
                ),
                _ => {
                    g.1.push((key, body));
                    (StatusCode::OK, [("x-sink", "1")], "{\"ok\":true}".into())
                }
            }
        }
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state.clone());
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HttpSink { url, state }
    }

    /// Changes how it answers.
    pub fn set(&self, mode: SinkMode) {
        self.state.lock().expect("lock").0 = mode;
    }

    /// What it accepted: (idempotency key, body).
    pub fn received(&self) -> Vec<(String, String)> {
        self.state.lock().expect("lock").1.clone()
    }

    /// Requests seen, accepted or not.
    pub fn requests(&self) -> usize {
        self.state.lock().expect("lock").2
    }
}

/// The engine's `engine.json` as written now (it is rewritten after a reload).
pub fn runtime_info(data: &Path) -> RuntimeInfo {
    let text = std::fs::read(data.join("engine.json")).expect("engine.json");
    serde_json::from_slice(&text).expect("engine.json is JSON")
}

/// A free loopback port (bound and let go; the caller binds it again soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Polls `check` every 50 ms until it holds or `secs` pass; returns whether it held.
pub async fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

/// An ADT^A08 for `patient` with the given control id.
pub fn adt_for(patient: &str, control_id: &str) -> String {
    format!(
        "MSH|^~\\&|HIS|MAIN|SB|HUB|20250101120000||ADT^A08^ADT_A01|{control_id}|P|2.5.1\rEVN|A08|20250101120000\rPID|1||{patient}^^^MAIN^MR||Testperson^Alex||19800101|U\r"
    )
}

/// A fast-retry `[destination.delivery]` table for tests.
pub const FAST_RETRY: &str =
    "[destination.delivery]\nbackoff_base_ms = 50\nbackoff_max_ms = 200\nbreaker_failures = 1000\n";

/// Raises this process's open-file limit (soft and, as root, hard) towards `want`; child
/// processes (the engine) inherit it. Returns the soft limit now in force.
pub fn raise_fd_limit(want: u64) -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    let current = now.current.unwrap_or(u64::MAX);
    if current >= want {
        return current;
    }
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(want);
    let target = want.min(nr_open);
    let raised = Rlimit {
        current: Some(target),
        maximum: Some(now.maximum.unwrap_or(u64::MAX).max(target)),
    };
    if setrlimit(Resource::Nofile, raised).is_err() {
        // Not root: up to the hard limit only.
        let hard = now.maximum.unwrap_or(target).min(target);
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard),
                maximum: now.maximum,
            },
        );
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Resident set size of process `pid` in bytes, from /proc.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    proc_status_bytes(pid, "VmRSS:")
}

/// Peak resident set size (high-water mark) of process `pid` in bytes, from /proc.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    proc_status_bytes(pid, "VmHWM:")
}

fn proc_status_bytes(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The value of an unlabelled-or-labelled sample line `name{labels} value` in Prometheus text,
/// 0 when absent.
pub fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// GET `/metrics` of a running engine.
pub async fn metrics_text(engine: &EngineProcess) -> String {
    reqwest::get(format!("{}/metrics", engine.admin()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

impl EngineProcess {
    /// The engine's process id.
    pub fn pid(&self) -> u32 {
        self.info.pid
    }
}

/// Runs `cmd` to the end, killing it after `secs` seconds; returns its output, or `None` when
/// it had to be killed. For commands with short output: the pipes are read after the exit.
pub fn output_within(cmd: &mut Command, secs: u64) -> Option<std::process::Output> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return Some(child.wait_with_output().expect("output"));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
