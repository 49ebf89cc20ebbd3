//! The admin endpoints behind the web console: the live event stream (`GET /api/events`,
//! Server-Sent Events), channel status (`GET /api/channels`, with whether an operator paused
//! each channel) and statistics
//! (`GET /api/stats`).
//!
//! What they read, and why each read is bounded:
//! - events come from the [`EventBus`](crate::events::EventBus) and carry ids, types and
//!   statuses only; a slow browser misses events (told by an `event: lagged`) instead of
//!   slowing the engine down;
//! - counts by status and per time bucket come from the store, newest first, at most
//!   [`SCAN_LIMIT`] records per `/api/stats` and [`CHANNELS_SCAN_LIMIT`] per `/api/channels`
//!   (`truncated` / `counts_truncated` say the limit was hit);
//! - outbox depth and dead-letter counts are key counts in the store (at most
//!   [`QUEUE_COUNT_CAP`] each); `up` and the last-message time are read from the Prometheus
//!   gauges without creating series.
//!
//! Not here: the `/api/messages` and dead-letter endpoints ([`crate::admin`]) and the
//! console's own files ([`crate::console`]).

use crate::admin::AdminState;
use crate::auth::Tokens;
use crate::metrics::{CHANNEL_LAST_MESSAGE, DESTINATION_UP};
use crate::store::{MessageRecord, Query, Store};
use axum::extract::{Query as QueryParams, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// Most message records one `/api/stats` request reads.
pub const SCAN_LIMIT: usize = 100_000;

/// Most message records one `/api/channels` request reads; the console asks every 5 s.
pub const CHANNELS_SCAN_LIMIT: usize = 20_000;

/// Most outbox or dead-letter keys counted per destination.
pub const QUEUE_COUNT_CAP: usize = 100_000;

/// Records read per store call while scanning.
const PAGE: usize = 10_000;

/// How often an idle event stream sends a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What the console endpoints know about the running topology.
#[derive(Debug)]
pub struct LiveContext {
    /// Every configured channel, in config order (replaced on reload).
    pub channels: std::sync::RwLock<Vec<ChannelInfo>>,
    /// Cancelled at shutdown: open event streams end so the admin server can stop.
    pub shutdown: CancellationToken,
}

impl LiveContext {
    /// The channels as configured now.
    pub fn channel_list(&self) -> Vec<ChannelInfo> {
        self.channels
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }
}

/// One configured channel as the console shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelInfo {
    /// The channel name.
    pub name: String,
    /// The `type` of its `[source]` (`mllp_listener`).
    pub source_type: String,
    /// The address its source bound.
    pub address: Option<SocketAddr>,
    /// Where its source takes messages from ([`crate::topology::source_endpoint`]).
    pub endpoint: String,
    /// Its destinations: (name, `type`).
    pub destinations: Vec<(String, String)>,
}

/// The `type` a destination was configured with.
pub fn destination_type(d: &channels::destination::DestinationConfig) -> &'static str {
    d.kind().as_str()
}

/// Routes that sit behind the shared bearer-token check of `/api`.
pub(crate) fn api() -> Router<AdminState> {
    Router::new()
        .route("/api/channels", get(channels))
        .route("/api/stats", get(stats))
}

/// `/api/events`, which checks the token itself: browsers' `EventSource` cannot send
/// headers, so `?access_token=` is accepted here (and only here).
pub(crate) fn events() -> Router<AdminState> {
    Router::new().route("/api/events", get(event_stream))
}

fn error(status: StatusCode, code: &str, detail: &str) -> Response {
    (status, Json(json!({"error": code, "detail": detail}))).into_response()
}

/// True when no token is configured, or the header or the query parameter carries a valid
/// one (of any role: the stream is read-only).
fn authorized(tokens: &Tokens, headers: &HeaderMap, query_token: Option<&str>) -> bool {
    if tokens.is_open() {
        return true;
    }
    let header_token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Both are checked, so the time taken does not depend on which one was right.
    let by_header = tokens.identify(header_token).is_some();
    let by_query = tokens.identify(query_token).is_some();
    by_header | by_query
}

/// Query parameters of `GET /api/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventParams {
    access_token: Option<String>,
}

async fn event_stream(
    State(s): State<AdminState>,
    headers: HeaderMap,
    params: Result<QueryParams<EventParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(QueryParams(p)) = params else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "known parameters: access_token",
        );
    };
    if !authorized(
        &crate::admin::current_tokens(&s),
        &headers,
        p.access_token.as_deref(),
    ) {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token or access_token is required",
        );
    }
    let rx = s.events.subscribe();
    let stop = s.live.shutdown.clone();
    tracing::debug!("Event stream opened.");
    let stream = futures::stream::unfold((rx, stop), |(mut rx, stop)| async move {
        loop {
            let got = tokio::select! {
                _ = stop.cancelled() => return None,
                got = rx.recv() => got,
            };
            let event = match got {
                Ok(ev) => match Event::default().event("message").json_data(&ev) {
                    Ok(e) => e,
                    Err(_) => continue,
                },
                Err(RecvError::Lagged(missed)) => Event::default()
                    .event("lagged")
                    .data(json!({ "missed": missed }).to_string()),
                Err(RecvError::Closed) => return None,
            };
            return Some((Ok::<_, Infallible>(event), (rx, stop)));
        }
    });
    (
        [("x-accel-buffering", "no")],
        Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")),
    )
        .into_response()
}

/// The statistics window: its name, length and bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    name: &'static str,
    buckets: u64,
    bucket_ms: u64,
}

impl Window {
    fn parse(s: &str) -> Option<Window> {
        const MIN: u64 = 60_000;
        match s {
            "1h" => Some(Window {
                name: "1h",
                buckets: 12,
                bucket_ms: 5 * MIN,
            }),
            "24h" => Some(Window {
                name: "24h",
                buckets: 24,
                bucket_ms: 60 * MIN,
            }),
            "7d" => Some(Window {
                name: "7d",
                buckets: 28,
                bucket_ms: 360 * MIN,
            }),
            _ => None,
        }
    }

    /// First millisecond of the first bucket; buckets are aligned to their width so that
    /// two requests a few seconds apart show the same bars.
    fn start_ms(&self, now_ms: u64) -> u64 {
        let end = (now_ms / self.bucket_ms + 1) * self.bucket_ms;
        end.saturating_sub(self.buckets * self.bucket_ms)
    }
}

/// Reads records received at or after `since_ms`, newest first, at most `max`; returns how
/// many it read and whether the limit cut the scan short.
fn scan(
    store: &Store,
    since_ms: u64,
    max: usize,
    mut each: impl FnMut(&MessageRecord),
) -> Result<(usize, bool), crate::store::StoreError> {
    let mut before = None;
    let mut seen = 0;
    loop {
        let page = store.list(&Query {
            since_ms: Some(since_ms),
            before_id: before,
            limit: PAGE.min(max - seen),
            ..Query::default()
        })?;
        for r in &page {
            each(r);
        }
        seen += page.len();
        match page.last() {
            Some(last) if page.len() == PAGE && seen < max => before = Some(last.id),
            Some(_) if seen >= max => return Ok((seen, true)),
            _ => return Ok((seen, false)),
        }
    }
}

fn rfc3339(ms: u64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).ok()?).map(|t| t.to_rfc3339())
}

/// Counts by status, serialised as a JSON object.
type Counts = BTreeMap<&'static str, u64>;

/// What `/api/stats` adds up in one pass.
#[derive(Debug, Default)]
struct Tally {
    total: u64,
    by_status: Counts,
    by_channel: BTreeMap<String, Counts>,
    by_type: BTreeMap<String, u64>,
    by_destination: BTreeMap<String, Counts>,
    buckets: Vec<Counts>,
}

impl Tally {
    fn add(&mut self, r: &MessageRecord, window: &Window, start_ms: u64) {
        let status = r.status.as_str();
        self.total += 1;
        *self.by_status.entry(status).or_default() += 1;
        *self
            .by_channel
            .entry(r.channel.clone())
            .or_default()
            .entry(status)
            .or_default() += 1;
        let ty = if r.message_type.is_empty() {
            "unreadable".to_string()
        } else {
            r.message_type.clone()
        };
        *self.by_type.entry(ty).or_default() += 1;
        for d in &r.deliveries {
            let key = match d.status {
                crate::store::outbox::DeliveryStatus::Pending => "pending",
                crate::store::outbox::DeliveryStatus::Delivered => "delivered",
                crate::store::outbox::DeliveryStatus::DeadLetter => "dead_letter",
                crate::store::outbox::DeliveryStatus::Discarded => "discarded",
            };
            *self
                .by_destination
                .entry(d.destination.clone())
                .or_default()
                .entry(key)
                .or_default() += 1;
        }
        let i = (r.received_at_ms.saturating_sub(start_ms) / window.bucket_ms) as usize;
        if let Some(b) = self.buckets.get_mut(i) {
            *b.entry(status).or_default() += 1;
        }
    }
}

/// Query parameters of `GET /api/stats`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsParams {
    window: Option<String>,
}

async fn stats(
    State(s): State<AdminState>,
    params: Result<QueryParams<StatsParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let window = match params {
        Ok(QueryParams(p)) => Window::parse(p.window.as_deref().unwrap_or("24h")),
        Err(_) => None,
    };
    let Some(window) = window else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "window must be 1h, 24h or 7d",
        );
    };
    let now = crate::delivery::now_ms();
    let start = window.start_ms(now);
    let store = s.store.clone();
    let counted = tokio::task::spawn_blocking(move || {
        let mut tally = Tally {
            buckets: vec![Counts::new(); window.buckets as usize],
            ..Tally::default()
        };
        scan(&store, start, SCAN_LIMIT, |r| tally.add(r, &window, start)).map(|done| (tally, done))
    })
    .await;
    let Ok(Ok((tally, (scanned, truncated)))) = counted else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            "the store could not be read",
        );
    };
    let buckets: Vec<_> = tally
        .buckets
        .iter()
        .enumerate()
        .map(|(i, counts)| {
            let at = start + i as u64 * window.bucket_ms;
            json!({
                "start": rfc3339(at),
                "start_ms": at,
                "total": counts.values().sum::<u64>(),
                "by_status": counts,
            })
        })
        .collect();
    let mut types: Vec<(String, u64)> = tally.by_type.into_iter().collect();
    types.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Json(json!({
        "window": window.name,
        "since": rfc3339(start),
        "until": rfc3339(start + window.buckets * window.bucket_ms),
        "bucket_secs": window.bucket_ms / 1000,
        "scanned": scanned,
        "truncated": truncated,
        "total": tally.total,
        "by_status": tally.by_status,
        "channels": tally.by_channel.iter().map(|(c, counts)| json!({
            "channel": c,
            "total": counts.values().sum::<u64>(),
            "by_status": counts,
        })).collect::<Vec<_>>(),
        "message_types": types.iter().map(|(t, n)| json!({"message_type": t, "count": n})).collect::<Vec<_>>(),
        "destinations": tally.by_destination.iter().map(|(d, counts)| json!({
            "destination": d,
            "by_status": counts,
        })).collect::<Vec<_>>(),
        "buckets": buckets,
    }))
    .into_response()
}

/// Gauge values by label set, read from the registry without creating series.
fn gauges(s: &AdminState, name: &str) -> HashMap<Vec<String>, f64> {
    let mut out = HashMap::new();
    for family in s.metrics.registry.gather() {
        if family.name() != name {
            continue;
        }
        for m in family.get_metric() {
            let labels = m
                .get_label()
                .iter()
                .map(|l| l.value().to_string())
                .collect();
            out.insert(labels, m.get_gauge().value());
        }
    }
    out
}

async fn channels(State(s): State<AdminState>) -> Response {
    let now = crate::delivery::now_ms();
    let since = now.saturating_sub(24 * 3_600_000);
    let store = s.store.clone();
    let configured = s.live.channel_list();
    let live = configured.clone();
    let counted = tokio::task::spawn_blocking(move || {
        let mut counts: HashMap<String, Counts> = HashMap::new();
        let mut newest: HashMap<String, u64> = HashMap::new();
        let done = scan(&store, since, CHANNELS_SCAN_LIMIT, |r| {
            *counts
                .entry(r.channel.clone())
                .or_default()
                .entry(r.status.as_str())
                .or_default() += 1;
            newest.entry(r.channel.clone()).or_insert(r.received_at_ms);
        })?;
        let mut queues = HashMap::new();
        for ch in &live {
            for (dest, _) in &ch.destinations {
                let full = format!("{}/{dest}", ch.name);
                let q = store.queue_counts(&full, QUEUE_COUNT_CAP)?;
                queues.insert(full, q);
            }
        }
        Ok::<_, crate::store::StoreError>((counts, newest, queues, done))
    })
    .await;
    let Ok(Ok((counts, newest, queues, (scanned, truncated)))) = counted else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            "the store could not be read",
        );
    };
    // Gauge labels come in the order Prometheus sorts them: channel, destination.
    let up = gauges(&s, DESTINATION_UP);
    let last = gauges(&s, CHANNEL_LAST_MESSAGE);
    let paused = s.supervisor.pauses().paused();
    let items: Vec<_> = configured
        .iter()
        .map(|ch| {
            let last_ms = newest.get(&ch.name).copied().or_else(|| {
                last.get(std::slice::from_ref(&ch.name))
                    .filter(|secs| **secs > 0.0)
                    .map(|secs| (*secs * 1000.0) as u64)
            });
            let destinations: Vec<_> = ch
                .destinations
                .iter()
                .map(|(name, kind)| {
                    let full = format!("{}/{name}", ch.name);
                    let (depth, dead) = queues.get(&full).copied().unwrap_or_default();
                    json!({
                        "name": name,
                        "type": kind,
                        "outbox_depth": depth,
                        "dead_letters": dead,
                        "up": up.get(&vec![ch.name.clone(), name.clone()]).map(|v| *v > 0.0),
                    })
                })
                .collect();
            let pause = paused.get(&ch.name);
            json!({
                "name": ch.name,
                "paused": pause.is_some(),
                "paused_by": pause.map(|p| p.by.clone()),
                "paused_at": pause.and_then(|p| rfc3339(p.at_ms)),
                "source_type": ch.source_type,
                "address": ch.address.map(|a| a.to_string()),
                "endpoint": ch.endpoint,
                "last_message_at": last_ms.and_then(rfc3339),
                "counts_24h": counts.get(&ch.name).cloned().unwrap_or_default(),
                "destinations": destinations,
            })
        })
        .collect();
    Json(json!({"channels": items, "counts_scanned": scanned, "counts_truncated": truncated}))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn token_from_header_or_query() {
        let mut h = HeaderMap::new();
        let t = Tokens(vec![crate::auth::ApiToken {
            name: "t".into(),
            role: crate::auth::Role::ReadOnly,
            secret: "s3cret".into(),
        }]);
        let t = &t;
        assert!(
            authorized(&Tokens::default(), &h, None),
            "no token configured"
        );
        assert!(!authorized(t, &h, None));
        assert!(!authorized(t, &h, Some("s3cre")));
        assert!(authorized(t, &h, Some("s3cret")));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert!(authorized(t, &h, None));
        assert!(authorized(t, &h, Some("wrong")));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic s3cret"),
        );
        assert!(!authorized(t, &h, None));
    }

    #[test]
    fn windows_are_aligned_and_cover_now() {
        let w = Window::parse("24h").expect("known window");
        let now = 1_700_000_123_456;
        let start = w.start_ms(now);
        assert_eq!(start % w.bucket_ms, 0);
        let end = start + w.buckets * w.bucket_ms;
        assert!(start <= now - 23 * 3_600_000 && now < end && end - now <= w.bucket_ms);
        assert_eq!(
            Window::parse("7d").map(|w| w.buckets * w.bucket_ms),
            Some(7 * 86_400_000)
        );
        assert_eq!(
            Window::parse("1h").map(|w| w.buckets * w.bucket_ms),
            Some(3_600_000)
        );
        assert!(Window::parse("2h").is_none());
    }

    #[tokio::test]
    async fn scan_pages_through_everything_in_the_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(
            dir.path(),
            crate::config::Durability::Os,
            &crate::metrics::Metrics::new("t"),
        )
        .expect("open");
        let n = PAGE + 7;
        for i in 0..n as u64 {
            let id = store.next_id(1_000_000 + i);
            let r = MessageRecord {
                id,
                channel: if i % 2 == 0 { "a" } else { "b" }.into(),
                received_at_ms: id >> 20,
                peer: String::new(),
                format: channels::source::RecordFormat::Hl7v2.into(),
                message_type: "ADT^A04".into(),
                control_id: format!("C{i}"),
                sending_application: String::new(),
                sending_facility: String::new(),
                version: "2.5".into(),
                charset: "utf-8".into(),
                size: 1,
                truncated: false,
                status: crate::store::Status::Delivered,
                ack_code: "AA".into(),
                ack: String::new(),
                errors: vec![],
                config_version: "v".into(),
                deliveries: vec![],
                business_keys: vec![],
                dedup_key: String::new(),
                resent_from: None,
            };
            store.put(&r, b"x", &[]).expect("put");
        }
        let w = Window {
            name: "t",
            buckets: 2,
            bucket_ms: 10_000,
        };
        let mut tally = Tally {
            buckets: vec![Counts::new(); 2],
            ..Tally::default()
        };
        let (seen, truncated) = scan(&store, 1_000_005, SCAN_LIMIT, |r| {
            tally.add(r, &w, 1_000_000)
        })
        .expect("scan");
        assert_eq!(seen, n - 5);
        assert!(!truncated);
        assert_eq!(tally.total, (n - 5) as u64);
        assert_eq!(tally.by_status.get("delivered"), Some(&((n - 5) as u64)));
        assert_eq!(tally.buckets[0].values().sum::<u64>(), 10_000 - 5);
        assert_eq!(tally.buckets[1].values().sum::<u64>(), 7);
        assert_eq!(tally.by_type.get("ADT^A04"), Some(&((n - 5) as u64)));
        let mut read = 0;
        let (seen, truncated) = scan(&store, 0, PAGE + 1, |_| read += 1).expect("scan");
        assert_eq!((seen, read, truncated), (PAGE + 1, PAGE + 1, true));
    }
}
