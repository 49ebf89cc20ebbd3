//! A TCP fault proxy for the fault tests: listens on 127.0.0.1:0, forwards to a target, and
//! misbehaves on demand (delay, drop, reset, black hole). The mode is read when a connection
//! is accepted and again for every chunk forwarded, so a change takes effect at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the proxy treats traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways.
    Pass,
    /// Forward, holding every chunk this long first.
    Delay(Duration),
    /// Accept, read what the client sends, close without an answer.
    Drop,
    /// Accept, then reset the connection (RST, linger 0).
    Reset,
    /// Accept and never answer nor close (the client's timeout must fire).
    BlackHole,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    /// `127.0.0.1:port` to connect to.
    pub addr: String,
    mode: Arc<Mutex<Fault>>,
    accepted: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to `target` in mode `Pass`.
    pub async fn start(target: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr").to_string();
        let mode = Arc::new(Mutex::new(Fault::Pass));
        let accepted = Arc::new(Mutex::new(0));
        let target = target.to_string();
        let (m, a) = (mode.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                *a.lock().expect("lock") += 1;
                let mode = m.clone();
                let target = target.clone();
                tokio::spawn(async move { serve(client, &target, mode).await });
            }
        });
        FaultProxy {
            addr,
            mode,
            accepted,
            task,
        }
    }

    /// Changes the mode for new connections and chunks.
    pub fn set(&self, fault: Fault) {
        *self.mode.lock().expect("lock") = fault;
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        *self.accepted.lock().expect("lock")
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(client: TcpStream, target: &str, mode: Arc<Mutex<Fault>>) {
    let now = *mode.lock().expect("lock");
    match now {
        Fault::Reset => {
            let _ = client.set_zero_linger();
            drop(client);
            return;
        }
        Fault::Drop => {
            let mut client = client;
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_millis(200), client.read(&mut buf)).await;
            return;
        }
        Fault::BlackHole => {
            let mut client = client;
            let mut buf = [0u8; 4096];
            // Hold it (reading, never answering) for at most a minute.
            let _ = tokio::time::timeout(Duration::from_secs(60), async {
                while matches!(client.read(&mut buf).await, Ok(n) if n > 0) {}
            })
            .await;
            return;
        }
        Fault::Pass | Fault::Delay(_) => {}
    }
    let Ok(upstream) = TcpStream::connect(target).await else {
        return;
    };
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let up = tokio::spawn(pump(cr, uw, mode.clone()));
    let down = tokio::spawn(pump(ur, cw, mode));
    let _ = up.await;
    let _ = down.await;
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: Arc<Mutex<Fault>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let now = *mode.lock().expect("lock");
        match now {
            Fault::Delay(d) => tokio::time::sleep(d).await,
            // A fault that starts mid-connection cuts it.
            Fault::Reset | Fault::Drop | Fault::BlackHole => break,
            Fault::Pass => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
