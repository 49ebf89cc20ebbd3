//! The MLLP listener: accepts connections, decodes frames, hands each message to the engine
//! and writes the answers back in the order the messages arrived.
//!
//! Each connection has a reader and a writer. The reader passes every frame on as soon as it
//! is complete, so several messages can be in flight on one connection; the writer awaits
//! their answers in arrival order. On shutdown the reader stops and the writer still answers
//! everything already handed over.
//!
//! Who may connect is decided by [`crate::admission`]: `max_connections_per_peer` per peer
//! address, and at `max_connections` the connection idle longest makes room for a new one.

use super::codec::{MllpCodec, MllpFrame};
use crate::admission::{Admission, Busy, Caps, Refusal, Ticket, TrackedIo};
use crate::peers::PeerRange;
use crate::source::{BuildError, Inbound, Payload, Reply, SourceContext};
use crate::tls::{ServerTls, ServerTlsConfig};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// Configuration of an MLLP listener (`type = "mllp_listener"` in a channel's `[source]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address to listen on, such as `0.0.0.0:2575`; port 0 picks a free port.
    pub listen: String,
    /// Largest accepted frame payload in bytes; larger frames get a NAK.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Seconds a connection may stay silent between messages before it is closed.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Seconds a started frame has to complete before the connection is cut.
    #[serde(default = "default_frame_timeout_secs")]
    pub frame_timeout_secs: u64,
    /// Seconds an answer may wait for the peer to read it before the connection is cut.
    #[serde(default = "default_write_timeout_secs")]
    pub write_timeout_secs: u64,
    /// Most connections open at once on this channel. When it is reached, the connection idle
    /// longest (no message in flight, silent the longest) is closed to admit the new one; a
    /// newcomer is refused only when every connection is busy.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most connections open at once from one peer address; more from it are refused
    /// (counted, and logged at most once a minute per address).
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// Most messages in flight (received, not yet answered) on one connection.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Peer addresses allowed to connect: single addresses (`10.1.2.3`) or CIDR ranges
    /// (`10.1.0.0/16`); empty allows every peer. Others are closed at once and counted as
    /// refused connections.
    #[serde(default)]
    pub allowed_peers: Vec<PeerRange>,
    /// TLS (`[source.tls]`): the listener speaks MLLP inside TLS only; with `client_ca`,
    /// mutual TLS. Absent: plain TCP.
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
}

fn default_max_message_bytes() -> usize {
    1024 * 1024
}
fn default_idle_timeout_secs() -> u64 {
    600
}
fn default_frame_timeout_secs() -> u64 {
    30
}
fn default_write_timeout_secs() -> u64 {
    30
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_connections_per_peer() -> usize {
    64
}
fn default_max_in_flight() -> usize {
    64
}

/// A running listener.
#[derive(Debug)]
pub struct ListenerTask {
    /// The address actually bound (useful with port 0).
    pub local_addr: SocketAddr,
    /// Finishes after shutdown, once every connection has answered what it received.
    pub join: JoinHandle<()>,
}

impl ListenerConfig {
    /// Binds the listen address and starts accepting.
    ///
    /// # Errors
    ///
    /// [`BuildError::Bind`] when the address is invalid or taken; [`BuildError::Config`]
    /// when the TLS certificates cannot be loaded.
    pub async fn build(&self, cx: SourceContext) -> Result<ListenerTask, BuildError> {
        let tls = match &self.tls {
            None => None,
            Some(t) => Some(t.load().map_err(|problems| {
                let text: Vec<String> = problems
                    .iter()
                    .map(|(k, m)| format!("source.tls.{k}: {m}"))
                    .collect();
                BuildError::Config(text.join("; "))
            })?),
        };
        let bind_err = |source| BuildError::Bind {
            addr: self.listen.clone(),
            source,
        };
        let listener = TcpListener::bind(&self.listen).await.map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        info!(channel = %cx.channel, addr = %local_addr, tls = tls.is_some(), "MLLP listener bound.");
        let cfg = Arc::new(self.clone());
        let join = tokio::spawn(accept_loop(listener, cfg, tls, cx));
        Ok(ListenerTask { local_addr, join })
    }
}

async fn accept_loop(
    listener: TcpListener,
    cfg: Arc<ListenerConfig>,
    tls: Option<ServerTls>,
    cx: SourceContext,
) {
    let admission = Admission::new(
        &cx.channel,
        Caps {
            max_connections: cfg.max_connections,
            max_connections_per_peer: cfg.max_connections_per_peer,
        },
        cx.metrics.clone(),
    );
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = cx.shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(channel = %cx.channel, error = %e, "Accept failed, retrying.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // A refused connection is dropped here, closed without a byte.
        if !crate::peers::allowed(&cfg.allowed_peers, peer.ip()) {
            admission.refuse(peer.ip(), Refusal::NotAllowed, Instant::now());
            continue;
        }
        let Ok(ticket) = admission.admit(peer.ip(), Instant::now()) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        cx.metrics.connections_opened.inc();
        let cx = cx.clone();
        let cfg = cfg.clone();
        let tls = tls.clone();
        tracker.spawn(async move {
            debug!(channel = %cx.channel, peer = %peer, "Connection opened.");
            match tls {
                None => {
                    let stream = TrackedIo::new(stream, ticket.activity());
                    serve_connection(stream, peer, &cfg, &cx, &ticket).await;
                }
                // The handshake runs here, not in the accept loop, so a slow client holds
                // only its own slot.
                Some(tls) => {
                    let handshake = tls.accept(
                        stream,
                        peer,
                        &cx.channel,
                        &cx.metrics.tls_handshake_failures,
                    );
                    let accepted = tokio::select! {
                        biased;
                        _ = cx.shutdown.cancelled() => None,
                        _ = ticket.evicted() => None,
                        a = handshake => a.ok(),
                    };
                    if let Some(stream) = accepted {
                        let stream = TrackedIo::new(stream, ticket.activity());
                        serve_connection(stream, peer, &cfg, &cx, &ticket).await;
                    }
                }
            }
            cx.metrics.connections_closed.inc();
            debug!(channel = %cx.channel, peer = %peer, "Connection closed.");
            drop(ticket);
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
    info!(channel = %cx.channel, "MLLP listener stopped.");
}

/// Serves one connection, plain or TLS, until it closes, times out, is closed to admit
/// another (`ticket`) or shutdown.
pub async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    cfg: &ListenerConfig,
    cx: &SourceContext,
    ticket: &Ticket,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    let mut reader = FramedRead::new(rd, MllpCodec::new(cfg.max_message_bytes));
    // Each answer slot carries its message's `Busy` mark until the answer is written.
    let (pending_tx, pending_rx) =
        mpsc::channel::<(oneshot::Receiver<Reply>, Busy)>(cfg.max_in_flight);
    let write_timeout = Duration::from_secs(cfg.write_timeout_secs);
    let writer_cx = cx.clone();
    let mut writer = tokio::spawn(async move {
        write_answers(
            FramedWrite::new(wr, MllpCodec::new(0)),
            pending_rx,
            write_timeout,
            &writer_cx,
        )
        .await
    });

    let idle = Duration::from_secs(cfg.idle_timeout_secs);
    let frame_limit = Duration::from_secs(cfg.frame_timeout_secs);
    let mut last_activity = Instant::now();
    // One timer per connection, set to the next moment a timeout could be due: an idle
    // connection wakes once per frame timeout (not every second), which is what lets
    // thousands of them sit quietly.
    let wake = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(wake);
    let evicted = ticket.evicted();
    tokio::pin!(evicted);
    let mut writer_done = false;
    loop {
        let due = match reader.decoder().frame_started() {
            Some(started) => started + frame_limit,
            // A frame may start at any moment: look again within one frame timeout.
            None => (last_activity + idle).min(Instant::now() + frame_limit),
        };
        wake.as_mut().reset(tokio::time::Instant::from_std(due));
        let frame = tokio::select! {
            biased;
            _ = cx.shutdown.cancelled() => break,
            _ = &mut evicted => {
                debug!(channel = %cx.channel, peer = %peer, "Idle connection closed to admit another.");
                break;
            }
            // The writer gave up (write timeout, peer gone): close the whole connection
            // now rather than at the idle timeout.
            _ = &mut writer => {
                writer_done = true;
                break;
            }
            f = reader.next() => f,
            _ = &mut wake => {
                let now = Instant::now();
                let cut = match reader.decoder().frame_started() {
                    Some(started) => now.duration_since(started) >= frame_limit,
                    None => now.duration_since(last_activity) >= idle,
                };
                if cut {
                    cx.metrics.timeouts.inc();
                    debug!(channel = %cx.channel, peer = %peer, "Connection timed out.");
                    break;
                }
                continue;
            }
        };
        let junk = reader.decoder_mut().take_junk();
        if junk > 0 {
            cx.metrics.junk_bytes.inc_by(junk);
        }
        let payload = match frame {
            None => break,
            Some(Err(e)) => {
                debug!(channel = %cx.channel, peer = %peer, error = %e, "Read failed.");
                break;
            }
            Some(Ok(MllpFrame::Message(bytes))) => Payload::Hl7v2(bytes),
            Some(Ok(MllpFrame::Oversize { head })) => Payload::Hl7v2Oversize {
                head,
                limit: cfg.max_message_bytes,
            },
        };
        last_activity = Instant::now();
        let (reply, answer) = oneshot::channel();
        let inbound = Inbound {
            payload,
            peer,
            received_at: SystemTime::now(),
            reply,
        };
        // Order matters: queue the answer slot before handing the message over, so the
        // writer answers in arrival order. A full queue slows this reader down.
        if pending_tx.send((answer, ticket.busy())).await.is_err() {
            break; // the writer gave up (peer stopped reading)
        }
        if cx.out.send(inbound).await.is_err() {
            break; // the engine is gone
        }
    }
    drop(pending_tx);
    if !writer_done {
        let _ = writer.await;
    }
}

async fn write_answers<W>(
    mut writer: FramedWrite<W, MllpCodec>,
    mut pending: mpsc::Receiver<(oneshot::Receiver<Reply>, Busy)>,
    write_timeout: Duration,
    cx: &SourceContext,
) where
    W: AsyncWrite + Unpin,
{
    // `_busy` lives until the answer is written (or given up).
    while let Some((answer, _busy)) = pending.recv().await {
        let Ok(reply) = answer.await else {
            // The engine dropped the message without answering: only happens when it is
            // shutting down hard. Close so the sender resends.
            break;
        };
        let Some(body) = reply.body else { continue };
        // Flush at once when nothing else is ready, else batch the writes.
        let send = async {
            if pending.is_empty() {
                writer.send(&body[..]).await
            } else {
                writer.feed(&body[..]).await
            }
        };
        match tokio::time::timeout(write_timeout, send).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break,
            Err(_) => {
                cx.metrics.timeouts.inc();
                break;
            }
        }
    }
    let _ = tokio::time::timeout(write_timeout, writer.flush()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Disposition, SourceMetrics};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpSocket, TcpStream};
    use tokio_util::sync::CancellationToken;

    /// A listener with `extra` config whose engine answers every message with `ACK`.
    async fn listener(extra: &str) -> (SocketAddr, SourceMetrics, CancellationToken) {
        let cfg: ListenerConfig =
            toml::from_str(&format!("listen = \"127.0.0.1:0\"\n{extra}")).expect("config");
        let (out, mut inbound) = mpsc::channel::<Inbound>(16);
        tokio::spawn(async move {
            while let Some(i) = inbound.recv().await {
                let _ = i.reply.send(Reply {
                    disposition: Disposition::Accepted,
                    body: Some("ACK".into()),
                    http: None,
                    message_id: None,
                });
            }
        });
        let shutdown = CancellationToken::new();
        let metrics = SourceMetrics::unregistered();
        let cx = SourceContext {
            channel: "t".into(),
            out,
            shutdown: shutdown.clone(),
            metrics: metrics.clone(),
            paused: Default::default(),
        };
        let task = cfg.build(cx).await.expect("binds");
        (task.local_addr, metrics, shutdown)
    }

    /// Connects from 127.0.0.`from` (all of 127/8 is loopback on Linux).
    async fn connect_from(addr: SocketAddr, from: u8) -> TcpStream {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, from], 0)))
            .expect("bind a loopback source address");
        socket.connect(addr).await.expect("connect")
    }

    /// Sends one frame and reads its answer; `None` when the connection was closed.
    async fn exchange(s: &mut TcpStream) -> Option<Vec<u8>> {
        s.write_all(&crate::mllp::codec::frame(b"MSH|^~\\&|A"))
            .await
            .ok()?;
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while !got.ends_with(&[0x1c, 0x0d]) {
            match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Err(_) => panic!("no answer and no close within 10 s"),
            }
        }
        Some(got)
    }

    /// True when the server closes `s` within 10 s without sending anything.
    async fn closed(s: &mut TcpStream) -> bool {
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn a_peer_over_its_cap_is_refused_and_another_peer_is_served() {
        let (addr, metrics, shutdown) =
            listener("max_connections = 10\nmax_connections_per_peer = 2").await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = connect_from(addr, 2).await;
            assert!(exchange(&mut s).await.is_some(), "under the cap");
            held.push(s);
        }
        let mut third = connect_from(addr, 2).await;
        assert!(
            closed(&mut third).await,
            "the third from one address is refused"
        );
        let mut other = connect_from(addr, 3).await;
        assert!(
            exchange(&mut other).await.is_some(),
            "another address is served"
        );
        assert_eq!(metrics.connections_refused.get(), 1);
        assert_eq!(metrics.connections_refused_per_peer.get(), 1);
        for s in &mut held {
            assert!(exchange(s).await.is_some(), "the held ones still work");
        }
        shutdown.cancel();
    }

    #[tokio::test]
    async fn at_the_channel_cap_the_connection_idle_longest_makes_room() {
        let (addr, metrics, shutdown) =
            listener("max_connections = 2\nmax_connections_per_peer = 10").await;
        let mut oldest = connect_from(addr, 2).await;
        assert!(exchange(&mut oldest).await.is_some());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut younger = connect_from(addr, 2).await;
        assert!(exchange(&mut younger).await.is_some());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut newcomer = connect_from(addr, 3).await;
        assert!(
            exchange(&mut newcomer).await.is_some(),
            "admitted, not refused"
        );
        assert!(closed(&mut oldest).await, "the one idle longest was closed");
        assert!(
            exchange(&mut younger).await.is_some(),
            "the other one stays"
        );
        assert_eq!(metrics.connections_evicted.get(), 1);
        assert_eq!(metrics.connections_refused.get(), 0);
        shutdown.cancel();
    }
}
