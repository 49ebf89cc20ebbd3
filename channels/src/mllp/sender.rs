//! The MLLP destination: persistent connections, one message at a time on each, each ACK
//! checked.
//!
//! `connections` (default 1) connections are kept to the peer; deliveries of different
//! partitions go on whichever is free, so a peer that takes several connections keeps up with
//! intake (one patient's messages still go one after the other: the delivery worker sends a
//! partition's next message only after the previous one's ACK). A connection is opened on
//! first use and again after any failure. A message counts as
//! delivered only when an ACK arrives whose MSA-2 equals the MSH-10 that was sent and whose
//! code is AA/CA. When an answer is late, or names another control id, the connection is
//! dropped: a late ACK can then never be credited to the next message. With `[destination.tls]`
//! the connection is TLS; a peer whose certificate is not trusted is a retryable failure whose
//! reason says so.

use super::client::{ClientError, MllpClient};
use crate::destination::{Delivery, DeliveryConfig, DeliveryError, Receipt};
use crate::tls::{ClientTls, ClientTlsConfig};
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;
use transforms::hl7v2::ack::{parse_ack, AckCode, ParsedAck};

/// Configuration of an MLLP destination (`type = "mllp"`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SenderConfig {
    /// Name, unique within the channel.
    pub name: String,
    /// `host:port` of the peer.
    pub address: String,
    /// Seconds to wait for a connection.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Seconds to wait for the ACK of one message.
    #[serde(default = "default_ack_timeout_secs")]
    pub ack_timeout_secs: u64,
    /// What an AE/CE answer means: `dead_letter` (default: the peer refused the content)
    /// or `retry`.
    #[serde(default)]
    pub on_application_error: OnError,
    /// Connections kept open to the peer, each carrying one message at a time. More than one
    /// only helps up to `delivery.concurrency`; keep 1 for a peer that takes one connection.
    #[serde(default = "default_connections")]
    pub connections: usize,
    /// Scheduling and retries.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// TLS (`[destination.tls]`): speak MLLP inside TLS, trusting `ca`; absent: plain TCP.
    #[serde(default)]
    pub tls: Option<ClientTlsConfig>,
}

/// What to do with an AE/CE answer.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Dead letter at once.
    #[default]
    DeadLetter,
    /// Retry with backoff.
    Retry,
}

fn default_connect_timeout_secs() -> u64 {
    5
}
fn default_ack_timeout_secs() -> u64 {
    30
}
fn default_connections() -> usize {
    1
}

impl SenderConfig {
    /// Problems the loader cannot see: (key, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self
            .address
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            out.push((
                "address".into(),
                format!("'{}' is not host:port", self.address),
            ));
        }
        if self.ack_timeout_secs == 0 || self.connect_timeout_secs == 0 {
            out.push((
                "ack_timeout_secs".into(),
                "timeouts must be at least 1 second".into(),
            ));
        }
        if self.connections == 0 || self.connections > 64 {
            out.push((
                "connections".into(),
                format!("{} is not between 1 and 64", self.connections),
            ));
        }
        if let Some(tls) = &self.tls {
            out.extend(
                tls.problems()
                    .into_iter()
                    .map(|(k, m)| (format!("tls.{k}"), m)),
            );
        }
        out
    }
}

/// The MLLP destination client.
#[derive(Debug)]
pub struct MllpSender {
    config: SenderConfig,
    tls: Option<ClientTls>,
    /// One slot per connection; `None` until opened or after a failure.
    conns: Vec<Mutex<Option<MllpClient>>>,
    /// Where the next delivery waits when every connection is busy.
    next: AtomicU64,
    unmatched: AtomicU64,
}

impl MllpSender {
    /// A sender that connects on first use; loads the TLS certificates now.
    ///
    /// # Errors
    ///
    /// A sentence naming the `tls` key whose file or secret is missing or unusable.
    pub fn build(config: SenderConfig) -> Result<Self, String> {
        let tls = match &config.tls {
            None => None,
            Some(t) => Some(t.load().map_err(|problems| {
                let text: Vec<String> = problems
                    .iter()
                    .map(|(k, m)| format!("tls.{k}: {m}"))
                    .collect();
                text.join("; ")
            })?),
        };
        let conns = (0..config.connections.max(1))
            .map(|_| Mutex::new(None))
            .collect();
        Ok(MllpSender {
            config,
            tls,
            conns,
            next: AtomicU64::new(0),
            unmatched: AtomicU64::new(0),
        })
    }

    /// notAfter of the certificates this sender loaded (empty without TLS).
    pub fn certificate_expiries(&self) -> Vec<crate::tls::CertExpiry> {
        self.tls
            .as_ref()
            .map(|t| t.expiries.clone())
            .unwrap_or_default()
    }

    /// ACKs that were late or named another message, since start.
    pub fn unmatched_acks(&self) -> u64 {
        self.unmatched.load(Ordering::Relaxed)
    }

    /// Opens (and closes) a TCP connection to the peer, within `connect_timeout_secs`.
    ///
    /// # Errors
    ///
    /// The address and why the connection failed.
    pub async fn healthcheck(&self) -> Result<(), String> {
        crate::health::tcp_connect(
            &self.config.address,
            Duration::from_secs(self.config.connect_timeout_secs),
        )
        .await
    }

    /// Sends one HL7 message and checks its ACK.
    ///
    /// # Errors
    ///
    /// Retryable: connection failures, timeouts, AR/CR, unmatched ACKs. Permanent: AE/CE
    /// (unless `on_application_error = "retry"`), a payload without MSH-10.
    pub async fn deliver(&self, d: &Delivery) -> Result<Receipt, DeliveryError> {
        let Some(expected) = d.control_id.as_deref() else {
            return Err(DeliveryError::permanent(
                "payload has no MSH-10 to match the ACK against",
            ));
        };
        let (ack, whole) = self.exchange_answer(&d.body, expected).await?;
        let detail = if ack.text.is_empty() {
            ack.code.as_str().to_string()
        } else {
            format!("{} {}", ack.code.as_str(), ack.text)
        };
        match ack.code {
            AckCode::AA | AckCode::CA => Ok(Receipt {
                status: None,
                detail,
                answer: crate::destination::bounded_answer(&whole),
            }),
            AckCode::AR | AckCode::CR => Err(DeliveryError::retry(format!(
                "{} answered {detail}",
                self.config.address
            ))
            .with_answer(&whole)),
            AckCode::AE | AckCode::CE => {
                let reason = format!("{} answered {detail}", self.config.address);
                Err(match self.config.on_application_error {
                    OnError::DeadLetter => DeliveryError::permanent(reason),
                    OnError::Retry => DeliveryError::retry(reason),
                }
                .with_answer(&whole))
            }
        }
    }

    /// Sends one HL7 message whose MSH-10 is `expected` and returns the peer's ACK, whatever
    /// its code, once its MSA-2 matches: for callers that act on AE/AR themselves.
    ///
    /// # Errors
    ///
    /// Retryable [`DeliveryError`]: connection failures, timeouts, an answer that is not an
    /// ACK or names another message (the connection is dropped in each case).
    pub async fn exchange(&self, body: &[u8], expected: &str) -> Result<ParsedAck, DeliveryError> {
        self.exchange_answer(body, expected)
            .await
            .map(|(ack, _)| ack)
    }

    /// [`MllpSender::exchange`], with the answer's whole text (an SRR^S01 answer, or an ACK
    /// that carries more than MSA: the caller reads its SCH).
    ///
    /// # Errors
    ///
    /// As [`MllpSender::exchange`].
    pub async fn exchange_answer(
        &self,
        body: &[u8],
        expected: &str,
    ) -> Result<(ParsedAck, String), DeliveryError> {
        // A free connection if there is one, else wait for one in turn.
        let free = self.conns.iter().find_map(|c| c.try_lock().ok());
        let mut guard = match free {
            Some(g) => g,
            None => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) as usize % self.conns.len();
                self.conns[i].lock().await
            }
        };
        if guard.is_none() {
            let timeout = Duration::from_secs(self.config.connect_timeout_secs);
            let c = match &self.tls {
                None => MllpClient::connect(&self.config.address, timeout).await,
                Some(tls) => MllpClient::connect_tls(&self.config.address, timeout, tls).await,
            };
            let c = c.map_err(|e| match e {
                // It names the address itself.
                ClientError::Tls { .. } => DeliveryError::retry(e.to_string()),
                other => DeliveryError::retry(format!("{}: {other}", self.config.address)),
            })?;
            *guard = Some(c);
        }
        let Some(client) = guard.as_mut() else {
            return Err(DeliveryError::retry("no connection"));
        };
        let answer = tokio::time::timeout(
            Duration::from_secs(self.config.ack_timeout_secs),
            client.send(body),
        )
        .await;
        let bytes = match answer {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                *guard = None;
                let reason = match e {
                    ClientError::Closed => format!(
                        "{} closed the connection before answering",
                        self.config.address
                    ),
                    other => format!("{}: {other}", self.config.address),
                };
                return Err(DeliveryError::retry(reason));
            }
            Err(_) => {
                // Drop the connection so the late ACK cannot be taken for the next message's.
                *guard = None;
                self.unmatched.fetch_add(1, Ordering::Relaxed);
                return Err(DeliveryError::retry(format!(
                    "no ACK from {} within {}s",
                    self.config.address, self.config.ack_timeout_secs
                )));
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        let Some(ack) = parse_ack(&text) else {
            *guard = None;
            return Err(DeliveryError::retry(format!(
                "answer from {} is not an ACK",
                self.config.address
            ))
            .with_answer(&text));
        };
        if ack.control_id != expected {
            *guard = None;
            self.unmatched.fetch_add(1, Ordering::Relaxed);
            return Err(DeliveryError::retry(format!(
                "ACK from {} names another message (MSA-2 does not match the sent MSH-10)",
                self.config.address
            ))
            .with_answer(&text));
        }
        Ok((ack, text.into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An MLLP peer on 127.0.0.1 that answers AA to every frame after `delay`, and counts
    /// the connections it accepted and the most messages it held at once.
    async fn peer(delay: Duration) -> (String, Arc<AtomicU64>, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let accepted = Arc::new(AtomicU64::new(0));
        let busy = Arc::new(AtomicU64::new(0));
        let most = Arc::new(AtomicU64::new(0));
        let (a, m) = (accepted.clone(), most.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let (busy, most) = (busy.clone(), m.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(2).position(|w| w == [0x1c, 0x0d]) {
                            let frame = String::from_utf8_lossy(&buf[1..end]).into_owned();
                            buf.drain(..end + 2);
                            let now = busy.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            tokio::time::sleep(delay).await;
                            busy.fetch_sub(1, Ordering::SeqCst);
                            let id = frame
                                .split('\r')
                                .next()
                                .and_then(|msh| msh.split('|').nth(9))
                                .unwrap_or("")
                                .to_string();
                            let ack = format!(
                                "\x0bMSH|^~\\&|PEER|X|SB|Y|20250101||ACK|A{id}|P|2.5.1\rMSA|AA|{id}\r\x1c\r"
                            );
                            if sock.write_all(ack.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted, most)
    }

    fn sender(addr: &str, connections: usize) -> Arc<MllpSender> {
        let config: SenderConfig = toml::from_str(&format!(
            "name = \"peer\"\naddress = \"{addr}\"\nconnections = {connections}\n"
        ))
        .expect("config");
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        Arc::new(MllpSender::build(config).expect("sender"))
    }

    fn message(id: &str) -> Delivery {
        Delivery {
            body: bytes::Bytes::from(format!(
                "MSH|^~\\&|SB|HUB|PEER|X|20250101||ADT^A04^ADT_A01|{id}|P|2.5.1\rPID|1||M1\r"
            )),
            content_type: "application/hl7-v2".into(),
            idempotency_key: id.into(),
            control_id: Some(id.into()),
            path: None,
        }
    }

    async fn send_together(s: &Arc<MllpSender>, n: usize) {
        let mut tasks = Vec::new();
        for i in 0..n {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.deliver(&message(&format!("M{i}"))).await
            }));
        }
        for t in tasks {
            let receipt = t.await.expect("task").expect("delivered");
            assert!(receipt.detail.starts_with("AA"), "{}", receipt.detail);
        }
    }

    #[tokio::test]
    async fn deliveries_at_once_share_the_configured_connections() {
        let (addr, accepted, most) = peer(Duration::from_millis(50)).await;
        let s = sender(&addr, 3);
        send_together(&s, 9).await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            3,
            "three connections opened"
        );
        assert_eq!(
            most.load(Ordering::SeqCst),
            3,
            "three messages in flight at once"
        );
    }

    #[tokio::test]
    async fn one_connection_by_default_carries_one_message_at_a_time() {
        let (addr, accepted, most) = peer(Duration::from_millis(20)).await;
        let config: SenderConfig =
            toml::from_str(&format!("name = \"peer\"\naddress = \"{addr}\"\n")).expect("config");
        assert_eq!(config.connections, 1);
        let s = Arc::new(MllpSender::build(config).expect("sender"));
        send_together(&s, 4).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn connections_outside_their_range_are_a_problem() {
        let config: SenderConfig =
            toml::from_str("name = \"peer\"\naddress = \"127.0.0.1:2575\"\nconnections = 0\n")
                .expect("config");
        assert!(config.problems().iter().any(|(k, _)| k == "connections"));
    }
}
