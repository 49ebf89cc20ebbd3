//! A minimal MLLP client: one connection, one message at a time, each answer awaited.
//!
//! Used by `switchboard send` and by the MLLP destination. It frames, sends, and returns the
//! payload of the next frame the peer sends back; checking that answer is the caller's job.

use super::codec::{MllpCodec, MllpFrame};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

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
}

/// One MLLP connection to a peer.
#[derive(Debug)]
pub struct MllpClient {
    framed: Framed<TcpStream, MllpCodec>,
    timeout: Duration,
}

impl MllpClient {
    /// Connects to `addr` (`host:port`).
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`] or [`ClientError::ConnectTimeout`].
    pub async fn connect(addr: &str, timeout: Duration) -> Result<MllpClient, ClientError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::ConnectTimeout(addr.to_string()))?
            .map_err(|source| ClientError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        Ok(MllpClient {
            framed: Framed::new(stream, MllpCodec::new(16 * 1024 * 1024)),
            timeout,
        })
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
