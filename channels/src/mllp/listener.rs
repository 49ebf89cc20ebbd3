//! The MLLP listener: accepts connections, decodes frames, hands each message to the engine
//! and writes the answers back in the order the messages arrived.
//!
//! Each connection has a reader and a writer. The reader passes every frame on as soon as it
//! is complete, so several messages can be in flight on one connection; the writer awaits
//! their answers in arrival order. On shutdown the reader stops and the writer still answers
//! everything already handed over.

use super::codec::{MllpCodec, MllpFrame};
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
use tokio::sync::{mpsc, oneshot, Semaphore};
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
    /// Most connections open at once on this channel; more are refused.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
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
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
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
        if !crate::peers::allowed(&cfg.allowed_peers, peer.ip()) {
            cx.metrics.connections_refused.inc();
            warn!(channel = %cx.channel, peer = %peer, "Connection refused: peer not allowed.");
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            cx.metrics.connections_refused.inc();
            warn!(channel = %cx.channel, peer = %peer, "Connection refused: connection cap reached.");
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
                None => serve_connection(stream, peer, &cfg, &cx).await,
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
                        a = handshake => a.ok(),
                    };
                    if let Some(stream) = accepted {
                        serve_connection(stream, peer, &cfg, &cx).await;
                    }
                }
            }
            cx.metrics.connections_closed.inc();
            debug!(channel = %cx.channel, peer = %peer, "Connection closed.");
            drop(permit);
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
    info!(channel = %cx.channel, "MLLP listener stopped.");
}

/// Serves one connection, plain or TLS, until it closes, times out or shutdown.
pub async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    cfg: &ListenerConfig,
    cx: &SourceContext,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    let mut reader = FramedRead::new(rd, MllpCodec::new(cfg.max_message_bytes));
    let (pending_tx, pending_rx) = mpsc::channel::<oneshot::Receiver<Reply>>(cfg.max_in_flight);
    let write_timeout = Duration::from_secs(cfg.write_timeout_secs);
    let writer_cx = cx.clone();
    let writer = tokio::spawn(async move {
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
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(idle).min(frame_limit));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let frame = tokio::select! {
            biased;
            _ = cx.shutdown.cancelled() => break,
            f = reader.next() => f,
            _ = tick.tick() => {
                let now = Instant::now();
                let cut = match reader.decoder().frame_started() {
                    Some(started) => now.duration_since(started) > frame_limit,
                    None => now.duration_since(last_activity) > idle,
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
        if pending_tx.send(answer).await.is_err() {
            break; // the writer gave up (peer stopped reading)
        }
        if cx.out.send(inbound).await.is_err() {
            break; // the engine is gone
        }
    }
    drop(pending_tx);
    let _ = writer.await;
}

async fn write_answers<W>(
    mut writer: FramedWrite<W, MllpCodec>,
    mut pending: mpsc::Receiver<oneshot::Receiver<Reply>>,
    write_timeout: Duration,
    cx: &SourceContext,
) where
    W: AsyncWrite + Unpin,
{
    while let Some(answer) = pending.recv().await {
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
