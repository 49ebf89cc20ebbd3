//! `[cluster]` in `switchboard.toml`: where the NATS servers are, who this node is, and how
//! the shared stream is laid out. Read by [`crate::config`]; checked by [`ClusterConfig::problems`].

use crate::config::{Problem, SecretRef};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[cluster]`: this node is one of several sharing a NATS JetStream stream.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster: letters, digits, `-`, `_` (1 to 32). It holds
    /// the partition leases and names the node in `GET /api/cluster`.
    pub node: String,
    /// This node's number, unique in the cluster, 0 to 63: the low bits of every message id
    /// the node assigns, so that ids (and the idempotency keys made from them) never collide
    /// between nodes.
    pub node_id: u8,
    /// NATS server URLs (`nats://host:4222`, or `tls://host:4222` with TLS); the client
    /// connects to one and fails over to the others.
    pub urls: Vec<String>,
    /// NATS user name, with `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// NATS password of `user`, by reference (`{ env = "..." }` or `{ file = "..." }`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
    /// NATS authentication token, by reference; instead of `user` and `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretRef>,
    /// PEM file of the CA that signed the NATS servers' certificates; TLS is then required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// Copies JetStream keeps of the work stream and the lease buckets (1, 3 or 5; at most
    /// the number of NATS servers).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// Delivery partitions the work is hashed into; each is delivered by one node at a time.
    /// Every node must use the same number; more partitions than nodes spread the work.
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// Milliseconds a message waits for the stream's acknowledgement before its sender is
    /// answered AR/CR 207 (HTTP 503).
    #[serde(default = "default_publish_timeout_ms")]
    pub publish_timeout_ms: u64,
    /// Seconds a partition lease lasts without renewal: a dead node's partitions are taken
    /// over after at most this plus one renewal interval (a third of it).
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// The URL the other nodes call this node's admin API at (`http://10.0.0.11:8080`), for
    /// the cluster-wide message search, replay and dead letters. Needed when `admin.listen`
    /// is an unspecified address (`0.0.0.0`, `[::]`) or not reachable by the others (NAT);
    /// by default the address the admin server bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_url: Option<String>,
}

fn default_replicas() -> usize {
    3
}
fn default_partitions() -> u32 {
    16
}
fn default_publish_timeout_ms() -> u64 {
    5000
}
fn default_lease_secs() -> u64 {
    6
}

/// The largest `node_id` (ids keep 6 low bits for it).
pub const MAX_NODE_ID: u8 = 63;

impl ClusterConfig {
    /// Every problem of the table, each naming `file` and its key.
    pub fn problems(&self, file: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut push = |key: &str, message: String, hint: &str| {
            out.push(Problem {
                file: file.to_string(),
                key: format!("cluster.{key}"),
                message,
                hint: hint.to_string(),
            })
        };
        let name_ok = !self.node.is_empty()
            && self.node.len() <= 32
            && self
                .node
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            push(
                "node",
                format!("'{}' is not a valid node name", self.node),
                "use 1 to 32 letters, digits, '-' or '_', unique in the cluster",
            );
        }
        if self.node_id > MAX_NODE_ID {
            push(
                "node_id",
                format!("{} is larger than {MAX_NODE_ID}", self.node_id),
                "give each node its own number from 0 to 63",
            );
        }
        if self.urls.is_empty() {
            push(
                "urls",
                "no NATS server given".into(),
                "list the NATS servers, such as [\"nats://10.0.0.1:4222\"]",
            );
        }
        for (i, url) in self.urls.iter().enumerate() {
            if !(url.starts_with("nats://") || url.starts_with("tls://")) || url.len() < 8 {
                push(
                    &format!("urls[{i}]"),
                    format!("'{url}' is not a NATS URL"),
                    "use nats://HOST:PORT or tls://HOST:PORT",
                );
            }
        }
        self.credential_problems(&mut push);
        if let Some(url) = &self.admin_url {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .unwrap_or_default();
            if rest.is_empty() || rest.contains(char::is_whitespace) {
                push(
                    "admin_url",
                    format!("'{url}' is not an HTTP URL"),
                    "use http://HOST:PORT, where the other nodes reach this node's admin API",
                );
            }
        }
        if !matches!(self.replicas, 1 | 3 | 5) {
            push(
                "replicas",
                format!("{} replicas", self.replicas),
                "use 1, 3 or 5 (3 survives the loss of one NATS server)",
            );
        }
        if !(1..=1024).contains(&self.partitions) {
            push(
                "partitions",
                format!("{} partitions", self.partitions),
                "use 1 to 1024 (the default 16 suits up to 16 nodes)",
            );
        }
        if self.publish_timeout_ms == 0 {
            push(
                "publish_timeout_ms",
                "0 ms".into(),
                "give the stream time to answer, such as 5000",
            );
        }
        if !(2..=60).contains(&self.lease_secs) {
            push(
                "lease_secs",
                format!("{} s", self.lease_secs),
                "use 2 to 60; a dead node's work moves after about this long",
            );
        }
        out
    }

    /// The problems of `user`, `password`, `token` and `tls_ca`.
    fn credential_problems(&self, push: &mut impl FnMut(&str, String, &str)) {
        match (&self.user, &self.password, &self.token) {
            (Some(_), None, _) | (None, Some(_), _) => push(
                "password",
                "`user` and `password` go together".into(),
                "give both, or neither",
            ),
            (Some(_), Some(_), Some(_)) => push(
                "token",
                "both a token and a user are given".into(),
                "authenticate with one of them",
            ),
            _ => {}
        }
        for (key, secret) in [("password", &self.password), ("token", &self.token)] {
            if let Some(Err(m)) = secret.as_ref().map(SecretRef::resolve) {
                push(key, m, "set the variable or create the file");
            }
        }
        if let Some(ca) = &self.tls_ca {
            if let Err(e) = std::fs::metadata(ca) {
                push(
                    "tls_ca",
                    format!("cannot read {}: {e}", ca.display()),
                    "give the PEM file of the CA of the NATS servers",
                );
            }
        }
    }
}

/// The problem of a cluster node whose admin API listens on an unspecified address
/// (`0.0.0.0`, `[::]`) without `admin_url`: the other nodes would not know where to call it.
pub fn admin_url_problem(
    cluster: &ClusterConfig,
    admin_listen: std::net::SocketAddr,
    file: &str,
) -> Option<Problem> {
    (cluster.admin_url.is_none() && admin_listen.ip().is_unspecified()).then(|| Problem {
        file: file.to_string(),
        key: "cluster.admin_url".into(),
        message: format!(
            "admin.listen is {admin_listen}, which the other nodes cannot call"
        ),
        hint: "give admin_url = \"http://HOST:PORT\", where the other nodes reach this node's admin API".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ClusterConfig {
        ClusterConfig {
            node: "node-1".into(),
            node_id: 1,
            urls: vec!["nats://127.0.0.1:4222".into()],
            user: None,
            password: None,
            token: None,
            tls_ca: None,
            replicas: 3,
            partitions: 16,
            publish_timeout_ms: 5000,
            lease_secs: 6,
            admin_url: None,
        }
    }

    #[test]
    fn a_right_table_has_no_problem() {
        assert!(sample().problems("switchboard.toml").is_empty());
    }

    #[test]
    fn every_wrong_key_is_named() {
        let c = ClusterConfig {
            node: "no spaces".into(),
            node_id: 64,
            urls: vec!["http://x".into()],
            user: Some("u".into()),
            replicas: 2,
            partitions: 0,
            lease_secs: 1,
            admin_url: Some("ftp://x".into()),
            ..sample()
        };
        let keys: Vec<String> = c
            .problems("switchboard.toml")
            .into_iter()
            .map(|p| {
                assert_eq!(p.file, "switchboard.toml");
                p.key
            })
            .collect();
        assert_eq!(
            keys,
            [
                "cluster.node",
                "cluster.node_id",
                "cluster.urls[0]",
                "cluster.password",
                "cluster.admin_url",
                "cluster.replicas",
                "cluster.partitions",
                "cluster.lease_secs"
            ]
        );
    }

    #[test]
    fn an_unspecified_admin_address_needs_admin_url() {
        let any: std::net::SocketAddr = "0.0.0.0:8080".parse().expect("address");
        let own: std::net::SocketAddr = "10.0.0.1:8080".parse().expect("address");
        let p = admin_url_problem(&sample(), any, "switchboard.toml").expect("a problem");
        assert_eq!(
            (p.file.as_str(), p.key.as_str()),
            ("switchboard.toml", "cluster.admin_url")
        );
        assert!(admin_url_problem(&sample(), own, "switchboard.toml").is_none());
        let given = ClusterConfig {
            admin_url: Some("http://10.0.0.1:8080".into()),
            ..sample()
        };
        assert!(admin_url_problem(&given, any, "switchboard.toml").is_none());
        assert!(given.problems("switchboard.toml").is_empty());
    }
}
