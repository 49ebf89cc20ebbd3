//! What the HTTP sources (FHIR REST, webhook) share: binding and serving an axum router until
//! shutdown, reading a body under a size limit, and handing a JSON body to the engine and
//! waiting for its answer (persist before 2xx, as the MLLP listener does).

use crate::mllp::listener::ListenerTask;
use crate::source::{BuildError, HttpAnswer, Inbound, JsonBody, Payload, Reply, SourceContext};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::time::SystemTime;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tracing::{info, warn};

/// Binds `listen` and serves `app` (inside TLS when `tls` is given, see [`crate::tls`])
/// until the context's shutdown, then finishes the requests in flight (each waits for its
/// answer from the engine).
///
/// # Errors
///
/// [`BuildError::Bind`] when the address is invalid or taken; [`BuildError::Config`] when
/// the TLS certificates cannot be loaded.
pub async fn serve(
    listen: &str,
    kind: &'static str,
    app: axum::Router,
    cx: &SourceContext,
    tls: Option<&crate::tls::ServerTlsConfig>,
) -> Result<ListenerTask, BuildError> {
    let tls = match tls {
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
        addr: listen.to_string(),
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(bind_err)?;
    let local_addr = listener.local_addr().map_err(bind_err)?;
    info!(channel = %cx.channel, addr = %local_addr, kind, "HTTP source bound.");
    let shutdown = cx.shutdown.clone();
    let channel = cx.channel.clone();
    if let Some(tls) = tls {
        let failures = cx.metrics.tls_handshake_failures.clone();
        let join = tokio::spawn(async move {
            crate::tls::serve_https(listener, tls, app, shutdown, channel.clone(), failures).await;
            info!(channel = %channel, kind, "HTTPS source stopped.");
        });
        return Ok(ListenerTask { local_addr, join });
    }
    let join = tokio::spawn(async move {
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
        if let Err(e) = served {
            warn!(channel = %channel, error = %e, "HTTP source stopped with an error.");
        }
        info!(channel = %channel, kind, "HTTP source stopped.");
    });
    Ok(ListenerTask { local_addr, join })
}

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than the limit (announced by `Content-Length` or found while reading).
    TooLarge,
    /// The connection failed while reading.
    Broken,
}

/// True when `Content-Length` announces more than `limit` bytes: refuse before reading.
pub fn announced_too_large(headers: &HeaderMap, limit: usize) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > limit as u64)
}

/// Reads at most `limit` bytes of `body`.
///
/// # Errors
///
/// [`BodyError`].
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, BodyError> {
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b),
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            Err(if too_large {
                BodyError::TooLarge
            } else {
                BodyError::Broken
            })
        }
    }
}

/// Returns `resp` for a request refused on its headers, after reading and dropping at most
/// 64 KiB of its body (for at most one second, never parsed or kept): closing a connection
/// with unread bytes makes TCP reset it, and the client would lose the answer.
pub async fn refuse(body: Body, resp: Response) -> Response {
    let drain = axum::body::to_bytes(body, 64 * 1024);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
    closing(resp)
}

/// Marks `resp` as the last on its connection: the request body may not have been read to
/// its end, so the connection cannot carry another request.
pub fn closing(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// The media type of a `Content-Type` header, lower case, without parameters.
pub fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Hands `body` to the engine and waits for its answer; `None` when the engine is gone
/// (shutting down), which the caller answers 503.
pub async fn submit(cx: &SourceContext, peer: SocketAddr, body: JsonBody) -> Option<Reply> {
    let (reply, answer) = oneshot::channel();
    let inbound = Inbound {
        payload: Payload::Json(body),
        peer,
        received_at: SystemTime::now(),
        reply,
    };
    cx.out.send(inbound).await.ok()?;
    answer.await.ok()
}

/// A response with a JSON body.
pub fn json_response(status: u16, content_type: &str, body: impl Into<Body>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, body.into()).into_response();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// The HTTP response for an engine [`Reply`]; `fallback` builds the body of a 503 when the
/// engine sent none.
pub fn reply_response(
    reply: Reply,
    fallback: impl FnOnce(u16) -> (String, &'static str),
) -> Response {
    let Some(HttpAnswer {
        status,
        location,
        content_type,
    }) = reply.http
    else {
        let (body, ct) = fallback(503);
        return json_response(503, ct, body);
    };
    let body = reply.body.unwrap_or_default();
    let mut resp = json_response(status, &content_type, body);
    if let Some(loc) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    if status == 503 {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    resp
}
