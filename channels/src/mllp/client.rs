//! A minimal MLLP client: one connection, one message at a time, each answer awaited.
//!
//! Used by `switchboard send` and by the MLLP destination. It frames, sends, and returns the
//! payload of the next frame the peer sends back; checking that answer is the caller's job.
//! [`MllpClient::connect_tls`] does the same inside TLS ([`crate::tls::ClientTls`]).

use super::codec::{MllpCodec, MllpFrame};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// The byte stream under a client: plain TCP or TLS over TCP.
trait ClientIo: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug> ClientIo for T {}

/// Why a send did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The peer address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Connecting took longer than allowed.
    #[error("connecting to {0} timed out")]
    ConnectTimeout(String),
    /// Writing or reading failed.
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The peer did not answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The peer closed the connection before answering.
    #[error("peer closed the connection before answering")]
    Closed,
    /// The peer answered with a frame over the size limit.
    #[error("answer larger than the frame limit")]
    Oversize,
    /// The TLS handshake failed: the peer's certificate is not trusted or does not name the
    /// peer, or the peer refused ours.
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        /// The peer address.
        addr: String,
        /// What rustls said.
        source: std::io::Error,
    },
}

/// One MLLP connection to a peer.
#[derive(Debug)]
pub struct MllpClient {
    framed: Framed<Box<dyn ClientIo>, MllpCodec>,
    timeout: Duration,
}

impl MllpClient {
    /// Connects to `addr` (`host:port`).
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`] or [`ClientError::ConnectTimeout`].
    pub async fn connect(addr: &str, timeout: Duration) -> Result<MllpClient, ClientError> {
        let stream = Self::tcp(addr, timeout).await?;
        Ok(Self::over(Box::new(stream), timeout))
    }

    /// Connects to `addr` and runs the TLS handshake, both within `timeout`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`], [`ClientError::ConnectTimeout`] or [`ClientError::Tls`].
    pub async fn connect_tls(
        addr: &str,
        timeout: Duration,
        tls: &crate::tls::ClientTls,
    ) -> Result<MllpClient, ClientError> {
        let connect = async {
            let stream = Self::tcp(addr, timeout).await?;
            tls.connect(addr, stream)
                .await
                .map_err(|source| ClientError::Tls {
                    addr: addr.to_string(),
                    source,
                })
        };
        let stream = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| ClientError::ConnectTimeout(addr.to_string()))??;
        Ok(Self::over(Box::new(stream), timeout))
    }

    fn over(stream: Box<dyn ClientIo>, timeout: Duration) -> MllpClient {
        MllpClient {
            framed: Framed::new(stream, MllpCodec::new(16 * 1024 * 1024)),
            timeout,
        }
    }

    async fn tcp(addr: &str, timeout: Duration) -> Result<TcpStream, ClientError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::ConnectTimeout(addr.to_string()))?
            .map_err(|source| ClientError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Sends one message and waits for the next frame from the peer.
    ///
    /// # Errors
    ///
    /// [`ClientError`] on IO failure, timeout or a closed connection.
    pub async fn send(&mut self, message: &[u8]) -> Result<Bytes, ClientError> {
        self.framed.send(message).await?;
        self.receive().await
    }

    /// Waits for the next frame from the peer.
    ///
    /// # Errors
    ///
    /// [`ClientError`] on IO failure, timeout or a closed connection.
    pub async fn receive(&mut self) -> Result<Bytes, ClientError> {
        match tokio::time::timeout(self.timeout, self.framed.next()).await {
            Err(_) => Err(ClientError::Timeout(self.timeout)),
            Ok(None) => Err(ClientError::Closed),
            Ok(Some(Err(e))) => Err(ClientError::Io(e)),
            Ok(Some(Ok(MllpFrame::Message(b)))) => Ok(b),
            Ok(Some(Ok(MllpFrame::Oversize { .. }))) => Err(ClientError::Oversize),
        }
    }
}
