//! The admin HTTP server: `/health`, `/ready`, `/metrics`, and the message API under `/api`.
//!
//! `/api/*` requires `Authorization: Bearer <token>` when tokens are configured
//! (`admin.token`, `[[admin.tokens]]`; see [`crate::auth`]): any valid token may read, and
//! the actions (reprocess, resend, dead-letter retry and discard, pause and resume, reload)
//! need an operator token (403 otherwise). Health and metrics stay open so probes and
//! Prometheus need no secret. Errors are JSON: `{"error": "...", "detail": "..."}`. The web
//! console and its endpoints live in [`crate::console`], [`crate::admin_live`] and
//! [`crate::admin_dicom`]; pausing a
//! channel is described in [`crate::pause`].

use crate::admin_cluster::{self as fanout, Call, Scope, ScopeParam};
use crate::auth::{Caller, Role};
use crate::metrics::Metrics;
use crate::store::kind::AuditAction;
use crate::store::{Query, Status, Store};
use axum::extract::{Path, Query as QueryParams, RawQuery, Request, State};
use axum::http::HeaderMap;
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Shared state of the admin handlers.
#[derive(Clone)]
pub struct AdminState {
    /// The store.
    pub store: Store,
    /// The metrics registry.
    pub metrics: Metrics,
    /// The API tokens (replaced on reload); none configured means an open API.
    pub tokens: Arc<std::sync::RwLock<Arc<crate::auth::Tokens>>>,
    /// The running topology, for `POST /api/reload`.
    pub supervisor: Arc<crate::topology::Supervisor>,
    /// True once every listener is bound and the store is open.
    pub ready: Arc<AtomicBool>,
    /// Routing, for reprocess and dead-letter retry.
    pub pipeline: Arc<crate::pipeline::Pipeline>,
    /// The live event stream.
    pub events: crate::events::EventBus,
    /// The data folder, for `switchboard_store_disk_available_bytes`.
    pub data_dir: std::path::PathBuf,
    /// Channels, bound addresses and the shutdown signal, for the console endpoints.
    pub live: Arc<crate::admin_live::LiveContext>,
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    // Actions: an operator token only.
    let actions = Router::new()
        .route("/api/messages/{id}/reprocess", post(reprocess_one))
        .route("/api/reprocess", post(reprocess_many))
        .route("/api/dead-letters/retry", post(retry_dead_letters))
        .route("/api/dead-letters/discard", post(discard_dead_letters))
        .route("/api/reload", post(reload))
        .route("/api/messages/{id}/resend", post(resend))
        .route("/api/channels/{name}/pause", post(pause_channel))
        .route("/api/channels/{name}/resume", post(resume_channel))
        .route_layer(middleware::from_fn(require_operator));
    let api = Router::new()
        .route("/api/messages", get(list_messages))
        .route("/api/messages/{id}", get(show_message))
        .route("/api/dead-letters", get(list_dead_letters))
        .route("/api/audit", get(audit_log))
        .route("/api/appointments", get(appointment_ledger))
        .route("/api/whoami", get(whoami))
        .route("/api/cluster", get(cluster_view))
        .merge(crate::admin_live::api())
        .merge(crate::admin_dicom::api())
        .merge(actions)
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(api)
        .merge(crate::admin_live::events())
        .merge(crate::console::router())
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .with_state(state)
}

fn error(status: StatusCode, code: &str, detail: &str) -> Response {
    (status, Json(json!({"error": code, "detail": detail}))).into_response()
}

/// The answer to a store failure of an operator action: 503 `disk_full` while the free-space
/// reserve refuses writes (nothing changed; try again once space is back), else 500.
fn store_failure(e: &crate::store::StoreError) -> Response {
    match e {
        crate::store::StoreError::DiskFull { .. } => {
            error(StatusCode::SERVICE_UNAVAILABLE, "disk_full", &e.to_string())
        }
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            &e.to_string(),
        ),
    }
}

/// The current tokens (a reload may replace them).
pub(crate) fn current_tokens(s: &AdminState) -> Arc<crate::auth::Tokens> {
    s.tokens
        .read()
        .map(|t| t.clone())
        .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
}

async fn require_token(State(s): State<AdminState>, mut req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(caller) = current_tokens(&s).identify(given) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        );
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

async fn require_operator(req: Request, next: Next) -> Response {
    match req.extensions().get::<Caller>() {
        Some(c) if c.role == Role::Operator => next.run(req).await,
        Some(c) => error(
            StatusCode::FORBIDDEN,
            "forbidden",
            &format!(
                "the token '{}' is read-only; this action needs an operator token",
                c.name
            ),
        ),
        None => error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        ),
    }
}

/// `GET /api/cluster`: the live nodes, the partitions each holds, the stream's size and each
/// node's consumer lag, as this node saw them at its last lease round; 404 `not_clustered`
/// without `[cluster]`.
async fn cluster_view(State(s): State<AdminState>) -> Response {
    match s.pipeline.cluster() {
        Some(c) => Json(c.view()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_clustered",
            "this node runs without [cluster]",
        ),
    }
}

async fn whoami(Extension(c): Extension<Caller>) -> Response {
    Json(json!({"name": c.name, "role": c.role.as_str()})).into_response()
}

async fn reload(
    State(s): State<AdminState>,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
) -> Response {
    let actor = who(&c, &headers);
    match s.supervisor.reload(&actor).await {
        Ok(report) => Json(json!({
            "status": "reloaded",
            "config_version": report.config_version,
            "previous_version": report.previous_version,
            "started": report.started,
            "restarted": report.restarted,
            "stopped": report.stopped,
            "unchanged": report.unchanged,
            "failed": report.failed,
        }))
        .into_response(),
        Err(problems) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "error": "config_invalid",
                "detail": format!("{} problem(s); the running configuration stays", problems.0.len()),
                "problems": problems.0.iter().map(|p| json!({
                    "file": p.file,
                    "key": p.key,
                    "message": p.message,
                    "hint": p.hint,
                })).collect::<Vec<_>>(),
            })),
        )
            .into_response(),
    }
}

/// `GET /health`: alive, and which channels an operator paused (they take no messages).
async fn health(State(s): State<AdminState>) -> Response {
    let paused: Vec<String> = s.supervisor.pauses().paused().into_keys().collect();
    Json(json!({"status": "ok", "paused_channels": paused})).into_response()
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
    s.metrics.refresh_disk_available(&s.data_dir);
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
    /// One search text: a control id, a business identifier of any kind, or the words of a
    /// patient's name (see `Store::ids_by_text`).
    q: Option<String>,
    channel: Option<String>,
    control_id: Option<String>,
    /// A business identifier: patient id, visit number, appointment id, order number.
    key: Option<String>,
    /// With `key`: patient_id (mrn), visit_number (visit), appointment_id (appointment),
    /// order_number (order), patient_name (name).
    key_type: Option<String>,
    status: Option<String>,
    /// `ORU`, `ADT^A08`, `ADT^*`.
    message_type: Option<String>,
    /// RFC 3339 time or Unix milliseconds.
    since: Option<String>,
    before: Option<String>,
    limit: Option<usize>,
    /// Cluster mode: `local` for this node's store only (what the nodes ask each other).
    #[serde(default)]
    scope: Scope,
}

/// The cluster of a cluster-wide request: `None` on a single node and for `scope=local`.
fn cluster_scope(s: &AdminState, scope: Scope) -> Option<Arc<crate::cluster::Cluster>> {
    s.pipeline
        .cluster()
        .filter(|_| scope == Scope::Cluster)
        .cloned()
}

/// This node's name in cluster mode.
fn node_name(s: &AdminState) -> Option<String> {
    s.pipeline.cluster().map(|c| c.config().node.clone())
}

/// `GET /api/messages`: the messages matching the filters, newest first. In cluster mode the
/// answer covers every node (see [`crate::admin_cluster`]): each message once, marked with
/// the `node` its shown copy is on, and `unreachable` naming the nodes that did not answer.
async fn list_messages(
    State(s): State<AdminState>,
    headers: HeaderMap,
    RawQuery(raw_query): RawQuery,
    params: Result<QueryParams<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(QueryParams(p)) = params else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "known parameters: q, channel, control_id, key, key_type, status, message_type, since, before, limit, scope",
        );
    };
    let scope = p.scope;
    let key_kind = match p.key_type.as_deref().map(crate::store::keys::parse_kind) {
        Some(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_query",
                "key_type must be patient_id (mrn), visit_number (visit), appointment_id (appointment), order_number (order) or patient_name (name)",
            )
        }
        Some(Some(k)) => Some(k),
        None => None,
    };
    if key_kind.is_some() && p.key.is_none() {
        return error(StatusCode::BAD_REQUEST, "bad_query", "key_type needs key");
    }
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
        text: p.q.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()),
        channel: p.channel,
        control_id: p.control_id,
        business_key: p.key.filter(|k| !k.is_empty()),
        business_key_kind: key_kind,
        status: p.status,
        message_type: p.message_type.filter(|t| !t.is_empty()),
        since_ms,
        before_id,
        limit: p.limit.unwrap_or(100),
    };
    let (limit, status) = (q.limit.clamp(1, 10_000), q.status.clone());
    let items = match local_messages(&s, q).await {
        Ok(items) => items,
        Err(r) => return r,
    };
    let path = format!("/api/messages?{}", raw_query.unwrap_or_default());
    cluster_list(&s, scope, items, path, &headers, |parts| {
        fanout::merge_messages(parts, status.as_deref(), limit)
    })
    .await
}

/// A list endpoint's answer: this node's `items` (each marked with the node's name in a
/// cluster) when the request is local or there is no cluster; else every node's list of
/// `path`, merged by `merge`, with the nodes that did not answer.
async fn cluster_list(
    s: &AdminState,
    scope: Scope,
    mut items: Vec<serde_json::Value>,
    path: String,
    headers: &HeaderMap,
    merge: impl FnOnce(Vec<(String, Vec<serde_json::Value>)>) -> Vec<serde_json::Value>,
) -> Response {
    let Some(cluster) = cluster_scope(s, scope) else {
        if let Some(node) = node_name(s) {
            items.iter_mut().for_each(|i| fanout::mark(i, &node));
        }
        return Json(json!({"count": items.len(), "items": items})).into_response();
    };
    let mut g = fanout::gather_all(cluster.peers(), &Call::get(path, headers)).await;
    let mut parts = g.lists("items");
    parts.push((cluster.config().node.clone(), items));
    let items = merge(parts);
    Json(json!({"count": items.len(), "items": items, "unreachable": g.unreachable}))
        .into_response()
}

/// The summaries of this node's messages matching `q`.
async fn local_messages(s: &AdminState, q: Query) -> Result<Vec<serde_json::Value>, Response> {
    let store = s.store.clone();
    // Each item's patient is read from its body here, on the server (see `keys::patient_of`).
    let listed = tokio::task::spawn_blocking(move || {
        store.list(&q).map(|records| {
            records
                .iter()
                .map(|r| {
                    let raw = store.raw(r.id).ok().flatten().unwrap_or_default();
                    summary(r, crate::keys::patient_of(r, &raw).as_ref())
                })
                .collect::<Vec<_>>()
        })
    })
    .await;
    match listed {
        Ok(Ok(items)) => Ok(items),
        _ => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            "the store could not be read",
        )),
    }
}

fn parse_time(s: &str) -> Option<u64> {
    s.parse::<u64>().ok().or_else(|| {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
    })
}

fn summary(
    r: &crate::store::MessageRecord,
    patient: Option<&crate::keys::PatientSummary>,
) -> serde_json::Value {
    json!({
        "id": r.id.to_string(),
        "channel": r.channel,
        "received_at": chrono::DateTime::from_timestamp_millis(r.received_at_ms as i64).map(|t| t.to_rfc3339()),
        "message_type": r.message_type,
        "control_id": r.control_id,
        "status": r.status.as_str(),
        "ack_code": r.ack_code,
        "size": r.size,
        "patient": patient,
        "resent_from": r.resent_from.map(|id| id.to_string()),
    })
}

/// `GET /api/messages/{id}`: one message with its raw text, deliveries, attempts and
/// rendered payloads. In cluster mode its copies on every node are asked for and the one
/// that delivered is shown ([`fanout::pick_copy`]), with `node`, `copies` and `unreachable`.
async fn show_message(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    scope: Result<QueryParams<ScopeParam>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_id",
            "message ids are decimal numbers",
        );
    };
    let Ok(QueryParams(scope)) = scope else {
        return bad_scope();
    };
    let local = match local_message(&s, id) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    let Some(cluster) = cluster_scope(&s, scope.scope) else {
        return match (local, node_name(&s)) {
            (Some(mut m), Some(node)) => {
                fanout::mark(&mut m, &node);
                Json(m).into_response()
            }
            (Some(m), None) => Json(m).into_response(),
            (None, _) => error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no message with this id",
            ),
        };
    };
    let path = format!("/api/messages/{id}");
    let mut g = fanout::gather_all(cluster.peers(), &Call::get(path, &headers)).await;
    let mut copies = g.found();
    copies.extend(local.map(|m| (cluster.config().node.clone(), m)));
    match fanout::pick_copy(copies) {
        Some(mut m) => {
            if let Some(o) = m.as_object_mut() {
                o.insert("unreachable".into(), json!(g.unreachable));
            }
            Json(m).into_response()
        }
        None => not_found_anywhere(&g.unreachable, "no message with this id"),
    }
}

/// 404 of a cluster-wide request, naming the nodes that could not be asked.
fn not_found_anywhere(unreachable: &[String], detail: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "not_found", "detail": detail, "unreachable": unreachable})),
    )
        .into_response()
}

fn bad_scope() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "bad_query",
        "scope must be cluster or local",
    )
}

/// This node's copy of a message as `GET /api/messages/{id}` shows it; `None` when it has
/// none.
fn local_message(s: &AdminState, id: u64) -> Result<Option<serde_json::Value>, Box<Response>> {
    let (record, raw) = match (s.store.get(id), s.store.raw(id)) {
        (Ok(Some(r)), Ok(raw)) => (r, raw.unwrap_or_default()),
        (Ok(None), _) => return Ok(None),
        _ => {
            return Err(Box::new(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_error",
                "the store could not be read",
            )))
        }
    };
    let mut body = summary(&record, crate::keys::patient_of(&record, &raw).as_ref());
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
        "raw": transforms::hl7v2::charset::decode_lossy(&raw, &record.charset),
        "deliveries": record.deliveries,
        "business_keys": record.business_keys,
        "attempts": s.store.attempts_of(id).unwrap_or_default(),
        "payloads": s.store.payloads_of(&record).unwrap_or_default().iter().map(|i| json!({
            "destination": i.destination,
            "seq": i.seq,
            "payload": i.payload,
            "content_type": i.content_type,
            "idempotency_key": i.idempotency_key,
            "body": String::from_utf8_lossy(&i.body),
        })).collect::<Vec<_>>(),
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    Ok(Some(body))
}

/// The actor of an operator action: the token's name, followed by the client's
/// `X-Switchboard-User` in parentheses when it sends one (that part is not verified).
fn who(caller: &Caller, headers: &HeaderMap) -> String {
    let user = headers
        .get("x-switchboard-user")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        });
    match user {
        Some(u) => format!("{} ({u})", caller.name),
        None => caller.name.clone(),
    }
}

/// Body of `POST /api/messages/{id}/reprocess`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReprocessOne {
    /// Only these destinations of the message's channel.
    #[serde(default)]
    destinations: Option<Vec<String>>,
}

/// `POST /api/messages/{id}/reprocess` (operator): routes a stored message again. In
/// cluster mode the node that holds a copy renders the new deliveries and publishes them to
/// the stream, where the partition's owner delivers them (asked on a node without a copy,
/// the request goes to one that has it).
async fn reprocess_one(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
    scope: Result<QueryParams<ScopeParam>, axum::extract::rejection::QueryRejection>,
    body: Option<Json<ReprocessOne>>,
) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_id",
            "message ids are decimal numbers",
        );
    };
    let Ok(QueryParams(scope)) = scope else {
        return bad_scope();
    };
    let only = body.and_then(|Json(b)| b.destinations);
    let actor = who(&caller, &headers);
    let Some(cluster) = s.pipeline.cluster().cloned() else {
        let done = s.pipeline.reprocess(id, only.as_deref(), &actor);
        return reprocess_answer(id, done.map(|status| status.as_str()));
    };
    if scope.scope == Scope::Cluster && !s.store.contains_message(id).unwrap_or(false) {
        let call = Call::post(
            format!("/api/messages/{id}/reprocess"),
            json!({"destinations": only}),
            &headers,
        );
        return forward_to_holder(&cluster, id, call).await;
    }
    let done = s
        .pipeline
        .reprocess_in_cluster(&cluster, id, only.as_deref(), Some(&actor))
        .await;
    reprocess_answer(id, done.map(|_| Status::Routed.as_str()))
}

/// Asks the other nodes which holds a copy of message `id` and sends `call` to that one
/// only (two copies must not both act); its answer is passed on, marked with its node.
async fn forward_to_holder(cluster: &crate::cluster::Cluster, id: u64, call: Call<'_>) -> Response {
    let probe = Call::get(format!("/api/messages/{id}"), call.headers);
    let mut g = fanout::gather_all(cluster.peers(), &probe).await;
    let holders = g.found();
    let Some(peer) = holders
        .first()
        .and_then(|(node, _)| cluster.peers().into_iter().find(|p| &p.node == node))
    else {
        return not_found_anywhere(&g.unreachable, "no message with this id");
    };
    let mut answer = fanout::gather(vec![(peer, call)]).await;
    match answer.answers.pop() {
        Some(a) => {
            let mut body = a.body;
            fanout::mark(&mut body, &a.node);
            let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, Json(body)).into_response()
        }
        None => (
            StatusCode::BAD_GATEWAY,
            Json(json!({
                "error": "node_unreachable",
                "detail": "the node that holds the message did not answer",
                "unreachable": answer.unreachable,
            })),
        )
            .into_response(),
    }
}

/// The answer to a reprocess of message `id`.
fn reprocess_answer(id: u64, done: Result<&str, crate::pipeline::RouteError>) -> Response {
    match done {
        Ok(status) => Json(json!({"id": id.to_string(), "status": status})).into_response(),
        Err(crate::pipeline::RouteError::NotFound(_)) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no message with this id",
        ),
        Err(e @ crate::pipeline::RouteError::Rejected(_))
        | Err(e @ crate::pipeline::RouteError::UnknownChannel(_)) => {
            error(StatusCode::CONFLICT, "not_routable", &e.to_string())
        }
        Err(crate::pipeline::RouteError::Store(e)) => store_failure(&e),
        Err(crate::pipeline::RouteError::Stream(e)) => {
            error(StatusCode::SERVICE_UNAVAILABLE, "cluster_unavailable", &e)
        }
    }
}

/// Body of `POST /api/messages/{id}/resend`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResendBody {
    /// The message to send, as edited: HL7 v2 text; segments may end with CR, LF or CRLF
    /// (a browser's text area sends LF), and are sent ending with CR; blank lines are left
    /// out.
    raw: String,
}

/// `POST /api/messages/{id}/resend` (operator): sends an edited copy of a stored HL7 v2
/// message into the same channel as a **new** message, through the channel's own ingest
/// (checked, stored, committed, routed, answered exactly as if its source had received it,
/// except that it is never taken for a resend of an earlier message). The original stays as
/// it was. The new record names the original (`resent_from`) and the operator (`peer`:
/// `resent by <operator>`), and an audit record (`resend`) names both ids. Answers 200 with
/// the new message's id, status and answer code, or 409 when the message is not HL7 v2, its
/// channel is not running, or the channel refused it (paused: nothing was stored).
/// In cluster mode, asked on a node without a copy of the message, the request goes to a
/// node that has one; the new message is received there and goes through the stream.
async fn resend(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
    scope: Result<QueryParams<ScopeParam>, axum::extract::rejection::QueryRejection>,
    body: Result<Json<ResendBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_id",
            "message ids are decimal numbers",
        );
    };
    let Ok(Json(body)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "give {\"raw\": \"<the HL7 v2 message>\"}",
        );
    };
    let Ok(QueryParams(scope)) = scope else {
        return bad_scope();
    };
    if let Some(cluster) = cluster_scope(&s, scope.scope) {
        if !s.store.contains_message(id).unwrap_or(false) {
            let call = Call::post(
                format!("/api/messages/{id}/resend"),
                json!({"raw": body.raw}),
                &headers,
            );
            return forward_to_holder(&cluster, id, call).await;
        }
    }
    let original = match s.store.get(id) {
        Ok(Some(r)) => r,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no message with this id",
            )
        }
        Err(e) => return store_failure(&e),
    };
    if original.format != channels::source::RecordFormat::Hl7v2 {
        return error(
            StatusCode::CONFLICT,
            "not_resendable",
            &format!(
                "only HL7 v2 messages can be edited and resent (this one is {})",
                original.format
            ),
        );
    }
    // One segment per line, whatever the line ends were; blank lines are left out.
    let segments: Vec<&str> = body
        .raw
        .split(['\r', '\n'])
        .filter(|l| !l.trim().is_empty())
        .collect();
    if segments.is_empty() {
        return error(StatusCode::BAD_REQUEST, "bad_body", "the message is empty");
    }
    let text = format!("{}\r", segments.join("\r"));
    // In the character set of the original, so MSH-18 still says the truth.
    let bytes = match transforms::hl7v2::charset::Charset::from_name(&original.charset) {
        Some(cs) => cs.encode(&text).into_owned(),
        None => text.into_bytes(),
    };
    let Some(ingest) = s.supervisor.ingest_of(&original.channel).await else {
        return error(
            StatusCode::CONFLICT,
            "channel_not_running",
            &format!("channel '{}' is not configured now", original.channel),
        );
    };
    let actor = who(&caller, &headers);
    let (reply, answer) = tokio::sync::oneshot::channel();
    let inbound = channels::source::Inbound {
        payload: channels::source::Payload::Hl7v2(bytes.into()),
        peer: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        received_at: std::time::SystemTime::now(),
        reply,
    };
    let resend = crate::ingest::Resend {
        original: id,
        by: actor.clone(),
    };
    ingest.handle_as(inbound, Some(&resend)).await;
    let Ok(reply) = answer.await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_answered",
            "the channel did not answer (the engine is stopping)",
        );
    };
    let ack = reply
        .body
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    let ack_code = ack
        .split(['\r', '\n'])
        .find(|l| l.starts_with("MSA"))
        .and_then(|l| l.get(4..6))
        .unwrap_or_default()
        .to_string();
    let Some(new_id) = reply.message_id else {
        let reason = match &reply.disposition {
            channels::source::Disposition::Retry(r)
            | channels::source::Disposition::Rejected(r) => r.clone(),
            channels::source::Disposition::Accepted => "not stored".into(),
        };
        return (
            StatusCode::CONFLICT,
            Json(json!({
                "error": "not_stored",
                "detail": format!("the channel did not take the message: {reason}"),
                "ack_code": ack_code,
                "ack": ack,
            })),
        )
            .into_response();
    };
    let audited = s.store.audit(&crate::store::outbox::AuditRecord {
        at_ms: crate::delivery::now_ms(),
        who: actor,
        action: AuditAction::Resend.into(),
        target: format!("message {id} as message {new_id}"),
        count: 1,
        counts: Default::default(),
    });
    if let Err(e) = audited {
        tracing::warn!(id, new_id, error = %e, "Cannot write the audit record of a resend.");
    }
    let status = s
        .store
        .get(new_id)
        .ok()
        .flatten()
        .map(|r| r.status.as_str())
        .unwrap_or("received");
    Json(json!({
        "id": new_id.to_string(),
        "original": id.to_string(),
        "status": status,
        "ack_code": ack_code,
        "ack": ack,
    }))
    .into_response()
}

async fn pause_channel(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    set_pause(&s, &who(&caller, &headers), &name, true).await
}

async fn resume_channel(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    set_pause(&s, &who(&caller, &headers), &name, false).await
}

/// `POST /api/channels/{name}/pause|resume` (operator): see [`crate::pause`]. 404 for a channel
/// that is not configured (a channel paused before it was removed can still be resumed);
/// answers the state now and whether this call changed it.
async fn set_pause(s: &AdminState, actor: &str, name: &str, pause: bool) -> Response {
    let pauses = s.supervisor.pauses();
    let configured = s.live.channel_list().iter().any(|c| c.name == name);
    if !configured && (pause || pauses.status(name).is_none()) {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no channel named '{name}'"),
        );
    }
    match pauses.set(name, actor, pause).await {
        Ok(changed) => {
            let status = pauses.status(name);
            Json(json!({
                "channel": name,
                "paused": status.is_some(),
                "changed": changed,
                "paused_by": status.as_ref().map(|p| p.by.clone()),
                "paused_at": status.and_then(|p| chrono::DateTime::from_timestamp_millis(p.at_ms as i64)).map(|t| t.to_rfc3339()),
            }))
            .into_response()
        }
        Err(e) => store_failure(&e),
    }
}

/// Body of `POST /api/reprocess`: a filtered set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReprocessMany {
    channel: Option<String>,
    message_type: Option<String>,
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    destinations: Option<Vec<String>>,
    #[serde(default = "default_bulk_limit")]
    limit: usize,
    /// Cluster mode, with `scope=local`: these messages of this node, instead of a filter
    /// (what the node asked sends each node after choosing the copies).
    ids: Option<Vec<String>>,
}

fn default_bulk_limit() -> usize {
    1000
}

/// `POST /api/reprocess` (operator): routes again every message matching a filter, at most
/// `limit`. In cluster mode the messages of every node are chosen as the search shows them
/// (one copy each), and each is reprocessed on the node of that copy, through the stream.
async fn reprocess_many(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    scope: Result<QueryParams<ScopeParam>, axum::extract::rejection::QueryRejection>,
    Json(b): Json<ReprocessMany>,
) -> Response {
    let Ok(QueryParams(scope)) = scope else {
        return bad_scope();
    };
    let (Some(since), Some(until)) = (
        b.since.as_deref().map(parse_time).unwrap_or(Some(0)),
        b.until
            .as_deref()
            .map(parse_time)
            .unwrap_or(Some(u64::MAX >> 21)),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "since and until must be RFC 3339 or Unix milliseconds",
        );
    };
    // The type filter is applied while reading, before the limit: "ORU, at most 10,000"
    // means 10,000 ORU messages, not the ORU among the newest 10,000 messages.
    let q = Query {
        text: None,
        channel: b.channel.clone(),
        control_id: None,
        business_key: None,
        business_key_kind: None,
        status: b.status.clone(),
        message_type: b.message_type.clone().filter(|t| !t.is_empty()),
        since_ms: Some(since),
        before_id: Some(until.saturating_add(1) << 20),
        limit: b.limit.clamp(1, 10_000),
    };
    if b.ids.is_some() && s.pipeline.cluster().is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "ids is for the nodes of a cluster; give a filter",
        );
    }
    let mut unreachable = None;
    let (done, failed) = match s.pipeline.cluster().cloned() {
        None => match reprocess_here(&s, &q, b.destinations.as_deref()) {
            Ok(counts) => counts,
            Err(r) => return *r,
        },
        Some(cluster) => {
            match reprocess_many_in_cluster(&s, &cluster, &headers, scope.scope, &b, q).await {
                Ok((done, failed, missing)) => {
                    unreachable = missing;
                    (done, failed)
                }
                Err(r) => return r,
            }
        }
    };
    let actor = who(&caller, &headers);
    // One audit record for the whole request, naming the filter and the counts.
    let filter = [
        ("channel", b.channel.as_deref()),
        ("message_type", b.message_type.as_deref()),
        ("status", b.status.as_deref()),
        ("since", b.since.as_deref()),
        ("until", b.until.as_deref()),
    ]
    .iter()
    .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
    .collect::<Vec<_>>();
    let target = format!(
        "messages where {}{}",
        if filter.is_empty() {
            "any".to_string()
        } else {
            filter.join(" ")
        },
        b.destinations
            .as_ref()
            .map(|d| format!(" to {}", d.join(",")))
            .unwrap_or_default()
    );
    let audited = s.store.audit(&crate::store::outbox::AuditRecord {
        at_ms: crate::delivery::now_ms(),
        who: actor,
        action: AuditAction::ReprocessBulk.into(),
        target,
        count: done,
        counts: [
            ("reprocessed".to_string(), done as u64),
            ("skipped".to_string(), failed as u64),
        ]
        .into_iter()
        .collect(),
    });
    if let Err(e) = audited {
        tracing::warn!(error = %e, "Cannot write the audit record of a bulk reprocess.");
    }
    match unreachable {
        Some(u) => Json(json!({"reprocessed": done, "skipped": failed, "unreachable": u})),
        None => Json(json!({"reprocessed": done, "skipped": failed})),
    }
    .into_response()
}

/// Single-node bulk reprocess: routes again this node's messages matching `q`; (done,
/// skipped).
fn reprocess_here(
    s: &AdminState,
    q: &Query,
    only: Option<&[String]>,
) -> Result<(usize, usize), Box<Response>> {
    let records = s.store.list(q).map_err(|e| {
        Box::new(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            &e.to_string(),
        ))
    })?;
    let mut done = 0usize;
    let mut failed = 0usize;
    for r in &records {
        match s.pipeline.route_again(r.id, only) {
            Ok(_) => done += 1,
            Err(_) => failed += 1,
        }
    }
    Ok((done, failed))
}

/// Cluster-mode bulk reprocess: chooses the messages (every node's, as the search merges
/// them, unless `scope=local` or `ids` narrow it to this node), reprocesses this node's
/// share through the stream and sends each other node the ids of its share. Returns (done,
/// skipped, the nodes that could not be asked when the request was cluster-wide).
async fn reprocess_many_in_cluster(
    s: &AdminState,
    cluster: &crate::cluster::Cluster,
    headers: &HeaderMap,
    scope: Scope,
    b: &ReprocessMany,
    q: Query,
) -> Result<(usize, usize, Option<Vec<String>>), Response> {
    let me = cluster.config().node.clone();
    let only = b.destinations.as_deref();
    let (chosen, mut unreachable) = match (&b.ids, scope) {
        (Some(ids), _) => {
            let ids = ids.iter().filter_map(|i| i.parse::<u64>().ok());
            (ids.map(|id| (me.clone(), id)).collect(), None)
        }
        (None, Scope::Local) => {
            let records = s.store.list(&q).map_err(|e| store_failure(&e))?;
            (records.iter().map(|r| (me.clone(), r.id)).collect(), None)
        }
        (None, Scope::Cluster) => {
            let (chosen, missing) = choose_copies(s, cluster, headers, q).await?;
            (chosen, Some(missing))
        }
    };
    let (mut done, mut failed) = (0usize, 0usize);
    let mut elsewhere: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (node, id) in chosen {
        if node != me {
            elsewhere.entry(node).or_default().push(id.to_string());
            continue;
        }
        match s
            .pipeline
            .reprocess_in_cluster(cluster, id, only, None)
            .await
        {
            Ok(_) => done += 1,
            Err(_) => failed += 1,
        }
    }
    let Some(missing) = unreachable.as_mut() else {
        return Ok((done, failed, None));
    };
    let peers = cluster.peers();
    let calls = elsewhere
        .into_iter()
        .filter_map(|(node, ids)| {
            let peer = peers.iter().find(|p| p.node == node)?.clone();
            let body = json!({"ids": ids, "destinations": only});
            Some((peer, Call::post("/api/reprocess".into(), body, headers)))
        })
        .collect();
    let mut g = fanout::gather(calls).await;
    missing.append(&mut g.unreachable);
    for a in g.answers {
        match a.status {
            200 => {
                done += a.body["reprocessed"].as_u64().unwrap_or_default() as usize;
                failed += a.body["skipped"].as_u64().unwrap_or_default() as usize;
            }
            _ => missing.push(a.node),
        }
    }
    Ok((done, failed, unreachable))
}

/// The messages of every node matching `q`, one copy each as the search shows them: (node
/// of the copy, id), and the nodes that did not answer.
async fn choose_copies(
    s: &AdminState,
    cluster: &crate::cluster::Cluster,
    headers: &HeaderMap,
    q: Query,
) -> Result<(Vec<(String, u64)>, Vec<String>), Response> {
    let mut call = Call::get("/api/messages".into(), headers);
    let filters = [
        ("channel", q.channel.clone()),
        ("status", q.status.clone()),
        ("message_type", q.message_type.clone()),
        ("since", q.since_ms.map(|ms| ms.to_string())),
        ("before", q.before_id.map(|id| id.to_string())),
        ("limit", Some(q.limit.to_string())),
    ];
    call.query = filters
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    let (status, limit) = (q.status.clone(), q.limit);
    let local = local_messages(s, q).await?;
    let mut g = fanout::gather_all(cluster.peers(), &call).await;
    let mut parts = g.lists("items");
    parts.push((cluster.config().node.clone(), local));
    let chosen = fanout::merge_messages(parts, status.as_deref(), limit)
        .iter()
        .filter_map(|m| {
            let id = m["id"].as_str()?.parse::<u64>().ok()?;
            Some((m["node"].as_str()?.to_string(), id))
        })
        .collect();
    Ok((chosen, g.unreachable))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterParams {
    channel: Option<String>,
    destination: Option<String>,
    limit: Option<usize>,
    /// Cluster mode: `local` for this node's dead letters only.
    #[serde(default)]
    scope: Scope,
}

fn dead_letter_json(i: &crate::store::outbox::OutboxItem) -> serde_json::Value {
    json!({
        "destination": i.destination,
        "seq": i.seq,
        "message_id": i.message_id.to_string(),
        "attempts": i.attempts,
        "reason": i.last_error,
        "created_at": chrono::DateTime::from_timestamp_millis(i.created_at_ms as i64).map(|t| t.to_rfc3339()),
        "payload": i.payload,
    })
}

/// `GET /api/dead-letters`: deliveries given up on. In cluster mode those of every node, each
/// marked with its `node` (retry and discard act there), and `unreachable`.
async fn list_dead_letters(
    State(s): State<AdminState>,
    headers: HeaderMap,
    RawQuery(raw_query): RawQuery,
    params: Result<QueryParams<DeadLetterParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(QueryParams(p)) = params else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "known parameters: channel, destination (channel/name), limit, scope",
        );
    };
    let limit = p.limit.unwrap_or(100).clamp(1, 10_000);
    let items: Vec<serde_json::Value> =
        match s
            .store
            .dead_letters(p.destination.as_deref(), p.channel.as_deref(), limit)
        {
            Ok(items) => items.iter().map(dead_letter_json).collect(),
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store_error",
                    &e.to_string(),
                )
            }
        };
    let path = format!("/api/dead-letters?{}", raw_query.unwrap_or_default());
    cluster_list(&s, p.scope, items, path, &headers, |parts| {
        fanout::merge_dead_letters(parts, limit)
    })
    .await
}

/// Body of the dead-letter actions: listed items, or every one matching a filter.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterAction {
    #[serde(default)]
    items: Vec<DeadLetterRef>,
    #[serde(default)]
    all: bool,
    channel: Option<String>,
    destination: Option<String>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterRef {
    destination: String,
    seq: u64,
    /// Cluster mode: the node that holds it (as `GET /api/dead-letters` names it); this
    /// node when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<String>,
}

fn selected(s: &AdminState, a: &DeadLetterAction) -> Result<Vec<(String, u64)>, Box<Response>> {
    if a.all {
        return s
            .store
            .dead_letters(a.destination.as_deref(), a.channel.as_deref(), 100_000)
            .map(|v| v.into_iter().map(|i| (i.destination, i.seq)).collect())
            .map_err(|e| {
                Box::new(error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store_error",
                    &e.to_string(),
                ))
            });
    }
    if a.items.is_empty() {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "give items [{destination, seq}] or all = true",
        )));
    }
    Ok(a.items
        .iter()
        .map(|i| (i.destination.clone(), i.seq))
        .collect())
}

/// A dead-letter action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeadLetterVerb {
    /// `POST /api/dead-letters/retry`.
    Retry,
    /// `POST /api/dead-letters/discard`.
    Discard,
}

impl DeadLetterVerb {
    fn path(self) -> &'static str {
        match self {
            DeadLetterVerb::Retry => "/api/dead-letters/retry",
            DeadLetterVerb::Discard => "/api/dead-letters/discard",
        }
    }

    /// The answer's count of the items acted on.
    fn counted(self) -> &'static str {
        match self {
            DeadLetterVerb::Retry => "retried",
            DeadLetterVerb::Discard => "discarded",
        }
    }
}

/// `POST /api/dead-letters/retry` (operator): the dead letters go back to their
/// destination, under the same idempotency key. In cluster mode each goes to the node that
/// holds it, which publishes it to the stream for the partition's owner to deliver.
async fn retry_dead_letters(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    scope: Result<QueryParams<ScopeParam>, axum::extract::rejection::QueryRejection>,
    Json(a): Json<DeadLetterAction>,
) -> Response {
    let Ok(QueryParams(scope)) = scope else {
        return bad_scope();
    };
    if let Some(cluster) = s.pipeline.cluster().cloned() {
        let (actor, verb) = (who(&caller, &headers), DeadLetterVerb::Retry);
        return dead_letters_in_cluster(&s, &cluster, (&actor, &headers), scope.scope, a, verb)
            .await;
    }
    let targets = match selected(&s, &a) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let now = crate::delivery::now_ms();
    let mut revived = Vec::new();
    for (dest, seq) in &targets {
        match s.store.revive(dest, *seq, now) {
            Ok(Some(item)) => revived.push(item),
            Ok(None) => {}
            Err(e) => {
                // Those revived before the failure are in the outbox: hand them over.
                s.pipeline.hub().enqueue(&revived);
                return store_failure(&e);
            }
        }
    }
    s.pipeline.hub().enqueue(&revived);
    audit(
        &s,
        &who(&caller, &headers),
        AuditAction::DeadLetterRetry,
        &targets,
        revived.len(),
    );
    Json(json!({"retried": revived.len(), "not_found": targets.len() - revived.len()}))
        .into_response()
}

/// `POST /api/dead-letters/discard` (operator): removes dead letters for good, on the node
/// that holds each in cluster mode.
async fn discard_dead_letters(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    scope: Result<QueryParams<ScopeParam>, axum::extract::rejection::QueryRejection>,
    Json(a): Json<DeadLetterAction>,
) -> Response {
    let Ok(QueryParams(scope)) = scope else {
        return bad_scope();
    };
    if let Some(cluster) = s.pipeline.cluster().cloned() {
        let (actor, verb) = (who(&caller, &headers), DeadLetterVerb::Discard);
        return dead_letters_in_cluster(&s, &cluster, (&actor, &headers), scope.scope, a, verb)
            .await;
    }
    let targets = match selected(&s, &a) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let n = match discard_here(&s, &targets) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    audit(
        &s,
        &who(&caller, &headers),
        AuditAction::DeadLetterDiscard,
        &targets,
        n,
    );
    Json(json!({"discarded": n, "not_found": targets.len() - n})).into_response()
}

/// Discards the dead letters `targets` of this node; how many there were.
fn discard_here(s: &AdminState, targets: &[(String, u64)]) -> Result<usize, Box<Response>> {
    let mut n = 0;
    for (dest, seq) in targets {
        match s.store.discard(dest, *seq) {
            Ok(true) => n += 1,
            Ok(false) => {}
            Err(e) => return Err(Box::new(store_failure(&e))),
        }
    }
    Ok(n)
}

/// A dead-letter action in cluster mode: the items of this node (those naming it, or no
/// node) are acted on here, the others are sent to their nodes; `all` goes to every node.
/// The answer sums the nodes' counts and names the nodes that could not be asked.
async fn dead_letters_in_cluster(
    s: &AdminState,
    cluster: &crate::cluster::Cluster,
    (actor, headers): (&str, &HeaderMap),
    scope: Scope,
    a: DeadLetterAction,
    verb: DeadLetterVerb,
) -> Response {
    let me = cluster.config().node.clone();
    let mine = |r: &DeadLetterRef| r.node.as_ref().is_none_or(|n| *n == me);
    let (here, elsewhere): (Vec<DeadLetterRef>, Vec<DeadLetterRef>) =
        a.items.iter().cloned().partition(|r| mine(r));
    let targets = if a.all || !here.is_empty() || elsewhere.is_empty() {
        let local = DeadLetterAction {
            items: here,
            ..a.clone()
        };
        match selected(s, &local) {
            Ok(t) => t,
            Err(r) => return *r,
        }
    } else {
        Vec::new()
    };
    let done = match verb {
        DeadLetterVerb::Retry => retry_via_stream(s, cluster, &targets).await,
        DeadLetterVerb::Discard => discard_here(s, &targets),
    };
    let mut done = match done {
        Ok(n) => n,
        Err(r) => return *r,
    };
    if !targets.is_empty() {
        let action = match verb {
            DeadLetterVerb::Retry => AuditAction::DeadLetterRetry,
            DeadLetterVerb::Discard => AuditAction::DeadLetterDiscard,
        };
        audit(s, actor, action, &targets, done);
    }
    let mut not_found = targets.len() - done;
    if scope == Scope::Local {
        return Json(json!({verb.counted(): done, "not_found": not_found})).into_response();
    }
    let (calls, mut unreachable) = dead_letter_calls(cluster, &a, elsewhere, verb, headers);
    let mut g = fanout::gather(calls).await;
    unreachable.append(&mut g.unreachable);
    for answer in g.answers {
        match answer.status {
            200 => {
                let count = |k: &str| answer.body[k].as_u64().unwrap_or_default() as usize;
                done += count(verb.counted());
                not_found += count("not_found");
            }
            _ => unreachable.push(answer.node),
        }
    }
    Json(json!({verb.counted(): done, "not_found": not_found, "unreachable": unreachable}))
        .into_response()
}

/// The calls of a cluster-wide dead-letter action to the other nodes: `all` to every one,
/// else each node's items to it; and the nodes named that are not known.
fn dead_letter_calls<'a>(
    cluster: &crate::cluster::Cluster,
    a: &DeadLetterAction,
    elsewhere: Vec<DeadLetterRef>,
    verb: DeadLetterVerb,
    headers: &'a HeaderMap,
) -> (Vec<(crate::cluster::NodeView, Call<'a>)>, Vec<String>) {
    let peers = cluster.peers();
    let call = |body: &DeadLetterAction| {
        Call::post(
            verb.path().to_string(),
            serde_json::to_value(body).unwrap_or_default(),
            headers,
        )
    };
    if a.all {
        let calls = peers.into_iter().map(|p| (p, call(a))).collect();
        return (calls, Vec::new());
    }
    let mut by_node: std::collections::BTreeMap<String, Vec<DeadLetterRef>> = Default::default();
    for r in elsewhere {
        by_node
            .entry(r.node.clone().unwrap_or_default())
            .or_default()
            .push(r);
    }
    let mut calls = Vec::new();
    let mut unknown = Vec::new();
    for (node, items) in by_node {
        match peers.iter().find(|p| p.node == node) {
            Some(p) => {
                let body = DeadLetterAction {
                    items,
                    all: false,
                    channel: None,
                    destination: None,
                };
                calls.push((p.clone(), call(&body)));
            }
            None => unknown.push(node),
        }
    }
    (calls, unknown)
}

/// Cluster mode: retries this node's dead letters `targets` through the stream: each is
/// published again (same body, same idempotency key) to its partition, whose owner
/// delivers it in order, and only then removed from this node's dead letters. Returns how
/// many were retried.
async fn retry_via_stream(
    s: &AdminState,
    cluster: &crate::cluster::Cluster,
    targets: &[(String, u64)],
) -> Result<usize, Box<Response>> {
    let now = crate::delivery::now_ms();
    let mut done = 0;
    for (dest, seq) in targets {
        let found = s.store.dead_letter(dest, *seq).and_then(|item| {
            let Some(item) = item else { return Ok(None) };
            let record = s.store.get(item.message_id)?;
            let raw = s.store.raw(item.message_id)?.unwrap_or_default();
            Ok(record.map(|r| (item, r, raw)))
        });
        let (mut item, record, raw) = match found {
            Ok(Some(found)) => found,
            Ok(None) => continue,
            Err(e) => return Err(Box::new(store_failure(&e))),
        };
        item.attempts = 0;
        item.next_attempt_ms = now;
        item.created_at_ms = now;
        item.last_error.clear();
        let again = format!("{}-{dest}-{seq}-{now}", record.id);
        if let Err(e) = cluster
            .publish_again(
                &record,
                &raw,
                std::slice::from_ref(&item),
                &again,
                &s.store.seal,
            )
            .await
        {
            return Err(Box::new(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
                &format!("{e}; {done} retried before"),
            )));
        }
        match s.store.hand_over(dest, *seq) {
            Ok(_) => done += 1,
            Err(e) => return Err(Box::new(store_failure(&e))),
        }
    }
    Ok(done)
}

fn audit(
    s: &AdminState,
    actor: &str,
    action: AuditAction,
    targets: &[(String, u64)],
    count: usize,
) {
    let mut target: String = targets
        .iter()
        .take(20)
        .map(|(d, q)| format!("{d}#{q}"))
        .collect::<Vec<_>>()
        .join(",");
    if targets.len() > 20 {
        target.push_str(&format!(" and {} more", targets.len() - 20));
    }
    let record = crate::store::outbox::AuditRecord {
        at_ms: crate::delivery::now_ms(),
        who: actor.to_string(),
        action: action.into(),
        target,
        count,
        counts: Default::default(),
    };
    if let Err(e) = s.store.audit(&record) {
        tracing::warn!(error = %e, "Cannot write an audit record.");
    }
}

/// Query parameters of `GET /api/appointments`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerParams {
    /// `channel/destination`.
    destination: String,
    /// The placer appointment id (SCH-1).
    placer: Option<String>,
    /// The filler appointment id (SCH-2).
    filler: Option<String>,
}

/// `GET /api/appointments?destination=ch/dest&placer=..&filler=..`: what the appointment ledger
/// says was last sent to that destination about that appointment (the body sent is left out).
async fn appointment_ledger(
    State(s): State<AdminState>,
    params: Result<QueryParams<LedgerParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(QueryParams(p)) = params else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "give destination and placer and/or filler",
        );
    };
    let appointment = crate::store::ledger::AppointmentRef {
        placer_id: p.placer,
        filler_id: p.filler,
        moved: false,
    };
    match s.store.ledger_get(&p.destination, &appointment) {
        Ok(Some(e)) => Json(json!({
            "destination": p.destination,
            "appointment": e.appointment,
            "slot": e.slot,
            "status": e.status,
            "closed": e.closed,
            "remote_id": e.remote_id,
            "message_id": e.message_id.to_string(),
            "updated_at_ms": e.updated_at_ms,
        }))
        .into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no ledger entry for that appointment",
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            &e.to_string(),
        ),
    }
}

async fn audit_log(State(s): State<AdminState>) -> Response {
    match s.store.audit_log(200) {
        Ok(items) => Json(json!({"items": items})).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            &e.to_string(),
        ),
    }
}
