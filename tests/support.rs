//! Starting and stopping the engine binary, and talking to it.

use channels::mllp::client::MllpClient;
use engine::RuntimeInfo;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of the engine binary built for the tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_switchboard-under-test"))
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
        let child = Command::new(binary())
            .args(["run", "--config"])
            .arg(conf)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
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
