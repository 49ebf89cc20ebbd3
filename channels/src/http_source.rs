//! What the HTTP sources (FHIR REST, webhook) share: binding and serving an axum router until
//! shutdown, reading a body under a size limit and a deadline, and handing a JSON body to the
//! engine and waiting for its answer (persist before 2xx, as the MLLP listener does).
//!
//! Serving is hyper's HTTP/1.1 on our own accept loop (not `axum::serve`), plain or inside
//! TLS, so that every connection passes [`crate::admission`] (a cap per source and per peer
//! address; at the cap the connection idle longest makes room) and a client that stalls is
//! cut: the request line and headers must arrive within `header_timeout_secs` (hyper's
//! header read timeout, which also closes keep-alive connections left idle that long), the
//! body within `body_timeout_secs` ([`read_body`]).

use crate::admission::{Admission, Busy, Caps, Ticket, TrackedIo};
use crate::mllp::listener::ListenerTask;
use crate::source::{BuildError, HttpAnswer, Inbound, JsonBody, Payload, Reply, SourceContext};
use crate::tls::{ClientCertificate, ServerTls};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// How an HTTP source treats its clients' connections (from its config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time to send the request line and headers (and longest idle keep-alive).
    pub header_timeout: Duration,
    /// Connection caps of the source and of each peer address.
    pub caps: Caps,
}

/// Default `header_timeout_secs` of the HTTP sources.
pub fn default_header_timeout_secs() -> u64 {
    10
}
/// Default `body_timeout_secs` of the HTTP sources.
pub fn default_body_timeout_secs() -> u64 {
    30
}
/// Default `max_connections` of the HTTP sources.
pub fn default_max_connections() -> usize {
    1024
}
/// Default `max_connections_per_peer` of the HTTP sources.
pub fn default_max_connections_per_peer() -> usize {
    64
}

/// Problems with the connection keys every HTTP source has: (key, message).
pub fn limit_problems(
    header_timeout_secs: u64,
    body_timeout_secs: u64,
    max_connections: usize,
    max_connections_per_peer: usize,
) -> Vec<(String, String)> {
    [
        ("header_timeout_secs", header_timeout_secs as usize),
        ("body_timeout_secs", body_timeout_secs as usize),
        ("max_connections", max_connections),
        ("max_connections_per_peer", max_connections_per_peer),
    ]
    .into_iter()
    .filter(|(_, v)| *v == 0)
    .map(|(k, _)| (k.to_string(), "must be at least 1".to_string()))
    .collect()
}

/// Binds `listen` and serves `app` (inside TLS when `tls` is given, see [`crate::tls`])
/// within `limits` until the context's shutdown, then finishes the requests in flight (each
/// waits for its answer from the engine).
///
/// Handlers see the peer as `axum::extract::ConnectInfo<SocketAddr>` and, with mutual TLS,
/// the client certificate's names as the [`ClientCertificate`] request extension.
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
    limits: HttpLimits,
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
    info!(channel = %cx.channel, addr = %local_addr, kind, tls = tls.is_some(), "HTTP source bound.");
    let join = tokio::spawn(accept_loop(listener, tls, app, cx.clone(), limits, kind));
    Ok(ListenerTask { local_addr, join })
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<ServerTls>,
    app: axum::Router,
    cx: SourceContext,
    limits: HttpLimits,
    kind: &'static str,
) {
    let admission = Admission::new(&cx.channel, limits.caps, cx.metrics.clone());
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
        // Refused: dropped here, closed without a byte. (`allowed_peers` is the handlers'
        // to check, so that a refused peer gets its 403.)
        let Ok(ticket) = admission.admit(peer.ip(), Instant::now()) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let tls = tls.clone();
        let app = app.clone();
        let cx = cx.clone();
        tracker.spawn(async move {
            let Some(tls) = tls else {
                let stream = TrackedIo::new(stream, ticket.activity());
                let names = ClientCertificate::default();
                serve_http1(stream, peer, names, app, &cx, limits, &ticket).await;
                return;
            };
            // The handshake runs here, not in the accept loop, so a slow client holds only
            // its own slot.
            let handshake = tls.accept(
                stream,
                peer,
                &cx.channel,
                &cx.metrics.tls_handshake_failures,
            );
            let stream = tokio::select! {
                biased;
                _ = cx.shutdown.cancelled() => return,
                _ = ticket.evicted() => return,
                s = handshake => match s {
                    Ok(s) => s,
                    Err(_) => return,
                },
            };
            let names = ClientCertificate {
                names: stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| crate::tls::certificate_names(c))
                    .unwrap_or_default(),
            };
            let stream = TrackedIo::new(stream, ticket.activity());
            serve_http1(stream, peer, names, app, &cx, limits, &ticket).await;
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
    info!(channel = %cx.channel, kind, "HTTP source stopped.");
}

/// Serves HTTP/1.1 on one admitted connection until the client closes it, a timeout cuts
/// it, it is closed to admit another, or shutdown (which lets the request in flight finish).
async fn serve_http1<S>(
    stream: S,
    peer: SocketAddr,
    client_cert: ClientCertificate,
    app: axum::Router,
    cx: &SourceContext,
    limits: HttpLimits,
    ticket: &Ticket,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = ticket.activity();
    // Bytes read when the last answer was handed over; none yet: `u64::MAX`. A header
    // timeout with nothing read since is a keep-alive connection left idle, not a stall.
    let answered_at = Arc::new(AtomicU64::new(u64::MAX));
    let answered = answered_at.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        req.extensions_mut().insert(client_cert.clone());
        // A connection with a request in flight is never the one closed to make room.
        let busy = Busy::new(activity.clone());
        let mut app = app.clone();
        let answer = tower_service::Service::call(&mut app, req);
        let (activity, answered) = (activity.clone(), answered.clone());
        async move {
            let response = answer.await;
            answered.store(activity.read_bytes(), Ordering::Relaxed);
            drop(busy);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(conn);
    let served = tokio::select! {
        r = conn.as_mut() => r,
        // Nothing in flight (that is how it was chosen): close at once.
        _ = ticket.evicted() => {
            debug!(channel = %cx.channel, peer = %peer, "Idle HTTP connection closed to admit another.");
            return;
        }
        _ = cx.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(e) = served {
        if e.is_timeout() && answered_at.load(Ordering::Relaxed) == ticket.activity().read_bytes() {
            debug!(channel = %cx.channel, peer = %peer, "Idle keep-alive HTTP connection closed.");
        } else if e.is_timeout() {
            cx.metrics.timeouts.inc();
            debug!(channel = %cx.channel, peer = %peer, "HTTP connection cut: headers not complete in time.");
        } else {
            debug!(channel = %cx.channel, peer = %peer, error = %e, "HTTP connection ended with an error.");
        }
    }
}

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than the limit (announced by `Content-Length` or found while reading).
    TooLarge,
    /// The connection failed while reading.
    Broken,
    /// Not complete within the body timeout: the client stalled.
    TimedOut,
}

/// True when `Content-Length` announces more than `limit` bytes: refuse before reading.
pub fn announced_too_large(headers: &HeaderMap, limit: usize) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > limit as u64)
}

/// Reads at most `limit` bytes of `body` within `timeout`.
///
/// # Errors
///
/// [`BodyError`].
pub async fn read_body(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, BodyError> {
    let read = tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await;
    match read {
        Err(_) => Err(BodyError::TimedOut),
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => {
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
