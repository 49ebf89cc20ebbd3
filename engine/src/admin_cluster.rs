//! Cluster-wide answers of the admin API (docs/SCALING.md, "Operating"): in cluster mode the
//! message search, the message view and the dead letters answer for every node, and the
//! actions on a message or a dead letter are carried out on the node that holds it.
//!
//! What it is: the node asked calls the admin API of every other node (the URL in its
//! heartbeat, [`crate::cluster::NodeView::admin_url`]) with the caller's bearer token and
//! `scope=local`, which makes a node answer from its own store without asking further
//! ([`gather`]); it merges what came back ([`merge_messages`], [`pick_copy`],
//! [`merge_dead_letters`]) and names in `unreachable` the nodes that did not answer within
//! [`PEER_TIMEOUT`]. A message has a copy on the node that received it and one on each node
//! that delivered it as its partition's owner, under the same id: it is shown once, as the
//! copy that got furthest.
//!
//! What it is not: without `[cluster]` nothing here is called, and the admin API answers
//! from the node's own store exactly as before. The handlers are in [`crate::admin`].

use crate::cluster::NodeView;
use crate::store::Status;
use axum::http::{header, HeaderMap};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

/// How long a node waits for another node's part of a cluster-wide answer.
pub(crate) const PEER_TIMEOUT: Duration = Duration::from_secs(3);

/// Which stores an admin request answers from: `?scope=local` or `?scope=cluster`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Scope {
    /// Every node's store (in cluster mode; a single node has only its own).
    #[default]
    Cluster,
    /// This node's store only: what a node asks the others for, so they do not ask further.
    Local,
}

/// The `scope` query parameter of the message view and the actions.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ScopeParam {
    /// See [`Scope`].
    #[serde(default)]
    pub scope: Scope,
}

/// One call to another node's admin API.
pub(crate) struct Call<'a> {
    /// GET or POST.
    pub method: reqwest::Method,
    /// The path, with the caller's query string when it is forwarded as it came.
    pub path: String,
    /// Query parameters added to the path's.
    pub query: Vec<(&'static str, String)>,
    /// The JSON body of a POST.
    pub body: Option<Value>,
    /// The caller's headers: its bearer token and `X-Switchboard-User` are passed on.
    pub headers: &'a HeaderMap,
}

impl<'a> Call<'a> {
    /// A GET of `path`.
    pub fn get(path: String, headers: &'a HeaderMap) -> Self {
        Call {
            method: reqwest::Method::GET,
            path,
            query: Vec::new(),
            body: None,
            headers,
        }
    }

    /// A POST of `body` to `path`.
    pub fn post(path: String, body: Value, headers: &'a HeaderMap) -> Self {
        Call {
            method: reqwest::Method::POST,
            path,
            query: Vec::new(),
            body: Some(body),
            headers,
        }
    }
}

/// Another node's answer.
#[derive(Debug)]
pub(crate) struct PeerAnswer {
    /// The node's name.
    pub node: String,
    /// Its HTTP status.
    pub status: u16,
    /// Its JSON body.
    pub body: Value,
}

/// What the other nodes answered to one request.
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    /// The nodes that answered with a JSON body.
    pub answers: Vec<PeerAnswer>,
    /// The nodes that did not answer in time (or not with JSON), by name.
    pub unreachable: Vec<String>,
}

impl Gathered {
    /// The `field` array of every 200 answer, by node; a node that answered anything else
    /// is named unreachable, since its part is missing.
    pub fn lists(&mut self, field: &str) -> Vec<(String, Vec<Value>)> {
        let mut out = Vec::new();
        for a in std::mem::take(&mut self.answers) {
            match (a.status, a.body.get(field).and_then(Value::as_array)) {
                (200, Some(items)) => out.push((a.node, items.clone())),
                _ => self.unreachable.push(a.node),
            }
        }
        out
    }

    /// The 200 bodies, by node; 404 means "not here"; anything else names the node
    /// unreachable.
    pub fn found(&mut self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for a in std::mem::take(&mut self.answers) {
            match a.status {
                200 => out.push((a.node, a.body)),
                404 => {}
                _ => self.unreachable.push(a.node),
            }
        }
        out
    }
}

/// The HTTP client of the calls between nodes (one per process: it keeps connections).
fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(PEER_TIMEOUT)
            .timeout(PEER_TIMEOUT)
            .build()
            .unwrap_or_default()
    })
}

/// `path` with `scope=local` instead of any scope it carried.
fn local_path(path: &str) -> String {
    let (base, query) = path.split_once('?').unwrap_or((path, ""));
    let mut pairs: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("scope="))
        .collect();
    pairs.push("scope=local");
    format!("{base}?{}", pairs.join("&"))
}

/// Sends each call to its node, all at once, and waits at most [`PEER_TIMEOUT`] for each.
pub(crate) async fn gather(calls: Vec<(NodeView, Call<'_>)>) -> Gathered {
    let asked = calls.iter().map(|(peer, call)| ask(peer, call));
    let results = futures::future::join_all(asked).await;
    let mut out = Gathered::default();
    for ((peer, _), result) in calls.iter().zip(results) {
        match result {
            Some(answer) => out.answers.push(answer),
            None => out.unreachable.push(peer.node.clone()),
        }
    }
    out
}

/// The same call to every node of `peers`.
pub(crate) async fn gather_all(peers: Vec<NodeView>, call: &Call<'_>) -> Gathered {
    let calls = peers
        .into_iter()
        .map(|p| {
            let c = Call {
                method: call.method.clone(),
                path: call.path.clone(),
                query: call.query.clone(),
                body: call.body.clone(),
                headers: call.headers,
            };
            (p, c)
        })
        .collect();
    gather(calls).await
}

async fn ask(peer: &NodeView, call: &Call<'_>) -> Option<PeerAnswer> {
    if peer.admin_url.is_empty() {
        return None;
    }
    let url = format!("{}{}", peer.admin_url, local_path(&call.path));
    let mut req = client()
        .request(call.method.clone(), url)
        .query(&call.query);
    for name in [header::AUTHORIZATION.as_str(), "x-switchboard-user"] {
        if let Some(v) = call.headers.get(name) {
            req = req.header(name, v.clone());
        }
    }
    if let Some(body) = &call.body {
        req = req.json(body);
    }
    let resp = req.send().await.ok()?;
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.ok()?;
    Some(PeerAnswer {
        node: peer.node.clone(),
        status,
        body,
    })
}

/// How far a copy of a message got on its node, as (status rank, deliveries, attempts): a
/// message is shown as the copy that delivered, or the one furthest along. The receiving
/// node's copy takes the owner's outcome from its completion notice but not its attempts
/// (they stay in the owner's store), so where both are shown in full (one message) the
/// owner's copy, with the attempts, wins.
fn progress(copy: &Value) -> (u8, usize, usize) {
    let rank = match serde_json::from_value::<Status>(copy["status"].clone()).ok() {
        Some(Status::Delivered) => 6,
        Some(Status::Failed) => 5,
        Some(Status::Retrying) => 4,
        Some(Status::Routed) => 3,
        Some(Status::Filtered) => 2,
        Some(Status::Received) => 1,
        Some(Status::Rejected) | None => 0,
    };
    (
        rank,
        copy["deliveries"].as_array().map_or(0, Vec::len),
        copy["attempts"].as_array().map_or(0, Vec::len),
    )
}

/// Marks an entry with the node it came from.
pub(crate) fn mark(entry: &mut Value, node: &str) {
    if let Some(o) = entry.as_object_mut() {
        o.insert("node".into(), json!(node));
    }
}

/// The copies of one message, by node, as one entry: the copy that got furthest
/// ([`progress`]; on a tie, the first node by name), with `node` (where that copy is) and
/// `copies` (every node holding one). `None` when there is no copy.
pub(crate) fn pick_copy(mut copies: Vec<(String, Value)>) -> Option<Value> {
    copies.sort_by(|a, b| a.0.cmp(&b.0));
    let nodes: Vec<String> = copies.iter().map(|(n, _)| n.clone()).collect();
    let best = copies
        .iter()
        .enumerate()
        .max_by_key(|(i, (_, v))| (progress(v), std::cmp::Reverse(*i)))
        .map(|(i, _)| i)?;
    let (node, mut entry) = copies.swap_remove(best);
    mark(&mut entry, &node);
    if let Some(o) = entry.as_object_mut() {
        o.insert("copies".into(), json!(nodes));
    }
    Some(entry)
}

/// The message lists of several nodes (`GET /api/messages` items, by node) as one list,
/// ordered and limited as on a single node: one entry per message id ([`pick_copy`]),
/// newest first, at most `limit`. With `status`, only the messages whose shown copy has
/// it (a copy that matched on its node may be overtaken by another that got further).
pub(crate) fn merge_messages(
    parts: Vec<(String, Vec<Value>)>,
    status: Option<&str>,
    limit: usize,
) -> Vec<Value> {
    let mut by_id: BTreeMap<u64, Vec<(String, Value)>> = BTreeMap::new();
    for (node, items) in parts {
        for item in items {
            if let Some(id) = item["id"].as_str().and_then(|i| i.parse::<u64>().ok()) {
                by_id.entry(id).or_default().push((node.clone(), item));
            }
        }
    }
    by_id
        .into_values()
        .rev()
        .filter_map(pick_copy)
        .filter(|m| status.is_none_or(|s| m["status"] == s))
        .take(limit)
        .collect()
}

/// The dead letters of several nodes (by node) as one list: each marked with its node (a
/// dead letter lives on the node that gave up on it, and is retried or discarded there),
/// ordered by destination and then by when it was queued, at most `limit`.
pub(crate) fn merge_dead_letters(parts: Vec<(String, Vec<Value>)>, limit: usize) -> Vec<Value> {
    let mut all: Vec<Value> = Vec::new();
    for (node, items) in parts {
        for mut item in items {
            mark(&mut item, &node);
            all.push(item);
        }
    }
    let key = |v: &Value| {
        (
            v["destination"].as_str().unwrap_or_default().to_string(),
            v["created_at"].as_str().unwrap_or_default().to_string(),
            v["node"].as_str().unwrap_or_default().to_string(),
        )
    };
    all.sort_by_key(key);
    all.truncate(limit);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(id: u64, status: &str) -> Value {
        json!({"id": id.to_string(), "status": status, "channel": "lab"})
    }

    /// The receiving node's record (still `received`) and the owner's copy (`delivered`)
    /// are one message, shown as the copy that delivered, with both nodes named.
    #[test]
    fn the_copies_of_a_message_are_one_entry_shown_as_the_copy_that_delivered() {
        let parts = vec![
            (
                "sb-1".to_string(),
                vec![summary(30, "received"), summary(10, "received")],
            ),
            (
                "sb-2".to_string(),
                vec![summary(30, "delivered"), summary(20, "failed")],
            ),
            ("sb-3".to_string(), vec![summary(25, "routed")]),
        ];
        let merged = merge_messages(parts, None, 100);
        let ids: Vec<&str> = merged.iter().filter_map(|m| m["id"].as_str()).collect();
        assert_eq!(ids, ["30", "25", "20", "10"], "newest first, one per id");
        assert_eq!(merged[0]["status"], "delivered");
        assert_eq!(merged[0]["node"], "sb-2");
        assert_eq!(merged[0]["copies"], json!(["sb-1", "sb-2"]));
        assert_eq!(merged[3]["node"], "sb-1");
        assert_eq!(merged[3]["copies"], json!(["sb-1"]));
    }

    #[test]
    fn the_limit_and_the_status_apply_to_the_merged_list() {
        let parts = vec![
            (
                "a".to_string(),
                vec![summary(9, "delivered"), summary(7, "received")],
            ),
            (
                "b".to_string(),
                vec![summary(8, "delivered"), summary(7, "delivered")],
            ),
        ];
        let two = merge_messages(parts.clone(), None, 2);
        assert_eq!(two.len(), 2);
        assert_eq!(two[1]["id"], "8");
        // Message 7 matched `received` on a, but its copy on b delivered it.
        let received = merge_messages(parts.clone(), Some("received"), 100);
        assert!(received.is_empty(), "{received:?}");
        let delivered = merge_messages(parts, Some("delivered"), 100);
        assert_eq!(delivered.len(), 3);
    }

    #[test]
    fn the_copy_with_the_deliveries_wins_a_tie_and_no_copy_is_none() {
        let bare = json!({"id": "5", "status": "delivered", "deliveries": []});
        let full =
            json!({"id": "5", "status": "delivered", "deliveries": [{"destination": "lab/hook"}]});
        let shown =
            pick_copy(vec![("a".into(), bare.clone()), ("b".into(), full)]).expect("a copy");
        assert_eq!(shown["node"], "b");
        let tie = pick_copy(vec![("b".into(), bare.clone()), ("a".into(), bare)]).expect("a copy");
        assert_eq!(tie["node"], "a", "on a tie the first node by name");
        assert!(pick_copy(Vec::new()).is_none());
    }

    #[test]
    fn dead_letters_of_every_node_are_listed_with_their_node() {
        let dl = |dest: &str, at: &str, seq: u64| json!({"destination": dest, "created_at": at, "seq": seq});
        let parts = vec![
            (
                "b".to_string(),
                vec![dl("lab/hook", "2026-01-01T00:00:02+00:00", 4)],
            ),
            (
                "a".to_string(),
                vec![
                    dl("lab/hook", "2026-01-01T00:00:01+00:00", 4),
                    dl("lab/aaa", "2026-01-01T00:00:09+00:00", 1),
                ],
            ),
        ];
        let merged = merge_dead_letters(parts.clone(), 100);
        let seen: Vec<(&str, &str)> = merged
            .iter()
            .map(|d| {
                (
                    d["destination"].as_str().unwrap_or_default(),
                    d["node"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [("lab/aaa", "a"), ("lab/hook", "a"), ("lab/hook", "b")],
            "the same (destination, seq) on two nodes is two dead letters"
        );
        assert_eq!(merge_dead_letters(parts, 1).len(), 1);
    }

    #[test]
    fn a_forwarded_call_asks_for_the_local_scope_only() {
        assert_eq!(local_path("/api/messages"), "/api/messages?scope=local");
        assert_eq!(
            local_path("/api/messages?q=x&scope=cluster&limit=5"),
            "/api/messages?q=x&limit=5&scope=local"
        );
    }

    /// A node that does not answer is named, the others' answers are kept; the caller's token
    /// and user go along, with `scope=local`.
    #[tokio::test]
    async fn a_node_that_does_not_answer_is_named_unreachable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let up = listener.local_addr().expect("addr");
        let app = axum::Router::new().route(
            "/api/messages",
            axum::routing::get(|h: HeaderMap, q: axum::extract::RawQuery| async move {
                let auth = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
                let user = h.get("x-switchboard-user").and_then(|v| v.to_str().ok());
                axum::Json(json!({"items": [{
                    "id": "1", "status": "delivered", "q": q.0, "auth": auth, "user": user
                }]}))
            }),
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let down = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let peer = |node: &str, addr: std::net::SocketAddr| NodeView {
            node: node.into(),
            admin_url: format!("http://{addr}"),
            ..NodeView::default()
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            "Bearer s3cret".parse().expect("value"),
        );
        headers.insert("x-switchboard-user", "ops".parse().expect("value"));
        let mut g = gather_all(
            vec![peer("up", up), peer("down", down)],
            &Call::get("/api/messages?limit=3".into(), &headers),
        )
        .await;
        assert_eq!(g.unreachable, ["down"]);
        let lists = g.lists("items");
        assert_eq!(lists.len(), 1);
        assert_eq!(lists[0].0, "up");
        assert_eq!(lists[0].1[0]["q"], "limit=3&scope=local");
        assert_eq!(
            lists[0].1[0]["auth"], "Bearer s3cret",
            "the caller's token is passed on"
        );
        assert_eq!(lists[0].1[0]["user"], "ops");
        server.abort();
    }
}
