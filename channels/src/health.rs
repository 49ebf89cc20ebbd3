//! What the destinations' health checks share: a TCP connect within a time limit.
//!
//! Health checks never send a payload; they tell whether a delivery could be attempted now.
//! See `Destination::healthcheck` in [`crate::destination`].

use std::time::Duration;

/// Connects to `addr` (`host:port`) and closes the connection at once.
///
/// # Errors
///
/// The address and why the connection failed or timed out.
pub async fn tcp_connect(addr: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(e)) => Err(format!("{addr}: cannot connect: {e}")),
        Err(_) => Err(format!(
            "{addr}: no connection within {} s",
            timeout.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connects_to_a_listener_and_fails_on_a_closed_port() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        assert_eq!(tcp_connect(&addr, Duration::from_secs(5)).await, Ok(()));
        drop(l);
        let err = tcp_connect(&addr, Duration::from_secs(5))
            .await
            .expect_err("closed port");
        assert!(err.starts_with(&addr), "{err}");
    }
}
