//! Test support: a JetStream server of its own on a loopback port.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A single JetStream server on a free loopback port, killed on drop.
pub(super) struct Server {
    child: Child,
    pub(super) url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a JetStream server (`nats-server -js`) on a free port of 127.0.0.1, storing in a
/// temporary folder.
pub(super) fn nats_server() -> Server {
    // As tests/cluster.rs: the variable, the server .ci/run installs, Debian's.
    let bin = std::env::var("SWITCHBOARD_NATS_SERVER")
        .ok()
        .into_iter()
        .chain(
            [
                "/usr/local/bin/nats-server",
                "/usr/sbin/nats-server",
                "/usr/bin/nats-server",
            ]
            .map(String::from),
        )
        .find(|p| std::path::Path::new(p).exists())
        .expect("nats-server is installed (.ci/run installs it)");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = tempfile::tempdir().expect("temp dir");
    let child = Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server starts");
    Server {
        child,
        url: format!("nats://127.0.0.1:{port}"),
        _dir: dir,
    }
}

/// A client of the server at `url`, waiting at most 15 s for it to listen.
pub(super) async fn connect(url: &str) -> async_nats::Client {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        match async_nats::connect(url).await {
            Ok(c) => return c,
            Err(e) if std::time::Instant::now() > deadline => panic!("no NATS server: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
