//! The admin HTTP server: `/health`, `/ready`, `/metrics`, and the message API under `/api`.
//!
//! `/api/*` requires `Authorization: Bearer <token>` when `admin.token` is configured;
//! health and metrics stay open so probes and Prometheus need no secret. Errors are JSON:
//! `{"error": "...", "detail": "..."}`.

use crate::metrics::Metrics;
use crate::store::{Query, Store};
use axum::extract::{Path, Query as QueryParams, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Shared state of the admin handlers.
#[derive(Clone)]
pub struct AdminState {
    /// The store.
    pub store: Store,
    /// The metrics registry.
    pub metrics: Metrics,
    /// The bearer token, when configured.
    pub token: Option<Arc<str>>,
    /// True once every listener is bound and the store is open.
    pub ready: Arc<AtomicBool>,
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    let api = Router::new()
        .route("/api/messages", get(list_messages))
        .route("/api/messages/{id}", get(show_message))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(api)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .with_state(state)
}

fn error(status: StatusCode, code: &str, detail: &str) -> Response {
    (status, Json(json!({"error": code, "detail": detail}))).into_response()
}

async fn require_token(State(s): State<AdminState>, req: Request, next: Next) -> Response {
    if let Some(token) = &s.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required",
            );
        }
    }
    next.run(req).await
}

async fn ready(State(s): State<AdminState>) -> Response {
    if s.ready.load(Ordering::SeqCst) {
        Json(json!({"status": "ready"})).into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "listeners are starting or stopping",
        )
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    if let Ok(size) = s.store.size_on_disk() {
        s.metrics.store_size.set(size as i64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

/// Query parameters of `GET /api/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    channel: Option<String>,
    control_id: Option<String>,
    status: Option<String>,
    /// RFC 3339 time or Unix milliseconds.
    since: Option<String>,
    before: Option<String>,
    limit: Option<usize>,
}

async fn list_messages(
    State(s): State<AdminState>,
    params: Result<QueryParams<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(QueryParams(p)) = params else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "known parameters: channel, control_id, status, since, before, limit",
        );
    };
    let since_ms = match p.since.as_deref().map(parse_time) {
        Some(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_query",
                "since must be RFC 3339 or Unix milliseconds",
            )
        }
        Some(Some(ms)) => Some(ms),
        None => None,
    };
    let before_id = match p.before.as_deref().map(str::parse::<u64>) {
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_query",
                "before must be a message id",
            )
        }
        Some(Ok(id)) => Some(id),
        None => None,
    };
    let q = Query {
        channel: p.channel,
        control_id: p.control_id,
        status: p.status,
        since_ms,
        before_id,
        limit: p.limit.unwrap_or(100),
    };
    let store = s.store.clone();
    match tokio::task::spawn_blocking(move || store.list(&q)).await {
        Ok(Ok(records)) => {
            let items: Vec<_> = records.iter().map(summary).collect();
            Json(json!({"count": items.len(), "items": items})).into_response()
        }
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            "the store could not be read",
        ),
    }
}

fn parse_time(s: &str) -> Option<u64> {
    s.parse::<u64>().ok().or_else(|| {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
    })
}

fn summary(r: &crate::store::MessageRecord) -> serde_json::Value {
    json!({
        "id": r.id.to_string(),
        "channel": r.channel,
        "received_at": chrono::DateTime::from_timestamp_millis(r.received_at_ms as i64).map(|t| t.to_rfc3339()),
        "message_type": r.message_type,
        "control_id": r.control_id,
        "status": r.status.as_str(),
        "ack_code": r.ack_code,
        "size": r.size,
    })
}

async fn show_message(State(s): State<AdminState>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_id",
            "message ids are decimal numbers",
        );
    };
    let (record, raw) = match (s.store.get(id), s.store.raw(id)) {
        (Ok(Some(r)), Ok(raw)) => (r, raw.unwrap_or_default()),
        (Ok(None), _) => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no message with this id",
            )
        }
        _ => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_error",
                "the store could not be read",
            )
        }
    };
    let mut body = summary(&record);
    let extra = json!({
        "peer": record.peer,
        "format": record.format,
        "sending_application": record.sending_application,
        "sending_facility": record.sending_facility,
        "version": record.version,
        "charset": record.charset,
        "truncated": record.truncated,
        "ack": record.ack,
        "errors": record.errors,
        "config_version": record.config_version,
        "raw": decode_raw(&raw, &record.charset),
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    Json(body).into_response()
}

fn decode_raw(raw: &[u8], charset: &str) -> String {
    match transforms::hl7v2::charset::Charset::from_name(charset) {
        Some(transforms::hl7v2::charset::Charset::Other(e)) => {
            e.decode_without_bom_handling(raw).0.into_owned()
        }
        _ => String::from_utf8_lossy(raw).into_owned(),
    }
}
