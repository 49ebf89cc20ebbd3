//! Cluster mode: several nodes share one NATS JetStream stream (`[cluster]`, docs/SCALING.md).
//!
//! What it is: a node stores each message in its own sled log as in single-node mode and,
//! while that write is fsynced, publishes it, with its rendered deliveries, to the replicated
//! work stream; the sender is answered AA/CA (2xx) only when both the local fsync and the
//! stream's acknowledgement came back ([`Cluster::publish`], called by ingest). Delivery work
//! is hashed by partition key into `partitions` subjects; a node delivers a partition only
//! while it holds its lease in a JetStream key-value bucket ([`leases`]), consuming that
//! subject in stream order, up to a window of messages at a time, and acknowledging each
//! once its deliveries are finished ([`partition`]). Just before that acknowledgement the
//! owner tells the node that received the message how its deliveries ended ([`notice`], in
//! batches), so that node's record (and an `ack = "on_delivery"` answer waiting there)
//! learns the outcome. With `[encryption]` the work and the notices
//! are sealed with the store's keys ([`envelope::seal`]).
//!
//! What it is not: without `[cluster]` nothing here runs; the engine is the single binary
//! with its embedded store. Start reading at [`start`].

pub mod config;
pub mod envelope;
mod leases;
pub mod notice;
mod partition;
#[cfg(test)]
mod testing;

pub use config::ClusterConfig;

use crate::metrics::{
    Metrics, CLUSTER_CONSUMER_LAG, CLUSTER_NODES_UP, CLUSTER_NOTICES_APPLIED, CLUSTER_NOTICES_SENT,
    CLUSTER_OWNED_PARTITIONS, CLUSTER_PARTITIONS_ACQUIRED, CLUSTER_PUBLISH_DURATION,
    CLUSTER_PUBLISH_FAILURES, CLUSTER_STREAM_MESSAGES, CLUSTER_UNOPENED,
};
use crate::pipeline::Pipeline;
use crate::store::outbox::OutboxItem;
use crate::store::seal::Seal;
use crate::store::{MessageRecord, Status, Store, StoreError};
use async_nats::jetstream;
use prometheus::{exponential_buckets, Histogram, HistogramOpts, IntCounter, IntGauge};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The work stream's name.
pub const STREAM: &str = "SWITCHBOARD_WORK";
/// Subjects of the work stream: `switchboard.work.<partition>`.
pub const SUBJECT_PREFIX: &str = "switchboard.work";
/// The key-value bucket of partition leases (`p<N>` -> node name).
pub const LEASES_BUCKET: &str = "switchboard_leases";
/// The key-value bucket of node heartbeats (node name -> [`NodeView`] as JSON).
pub const NODES_BUCKET: &str = "switchboard_nodes";

/// The subject of partition `p`.
pub fn subject_of(p: u32) -> String {
    format!("{SUBJECT_PREFIX}.{p}")
}

/// The metrics of cluster mode, registered only when `[cluster]` is configured.
#[derive(Clone)]
pub struct ClusterMetrics {
    nodes_up: IntGauge,
    owned: IntGauge,
    publish_duration: Histogram,
    publish_failures: IntCounter,
    lag: IntGauge,
    stream_messages: IntGauge,
    acquired: IntCounter,
    notices_sent: IntCounter,
    notices_applied: IntCounter,
    unopened: IntCounter,
}

impl ClusterMetrics {
    /// Creates the families in the engine's registry.
    pub fn register(metrics: &Metrics) -> ClusterMetrics {
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            metrics
                .registry
                .register(Box::new(g.clone()))
                .expect("metric registered once");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            metrics
                .registry
                .register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        };
        let publish_duration = Histogram::with_opts(
            HistogramOpts::new(
                CLUSTER_PUBLISH_DURATION,
                "Seconds from publishing a message to the work stream to its acknowledgement.",
            )
            .buckets(exponential_buckets(0.0005, 2.0, 16).expect("valid buckets")),
        )
        .expect("valid metric");
        metrics
            .registry
            .register(Box::new(publish_duration.clone()))
            .expect("metric registered once");
        ClusterMetrics {
            nodes_up: gauge(CLUSTER_NODES_UP, "Cluster nodes with a live heartbeat."),
            owned: gauge(
                CLUSTER_OWNED_PARTITIONS,
                "Delivery partitions this node holds the lease of.",
            ),
            publish_duration,
            publish_failures: counter(
                CLUSTER_PUBLISH_FAILURES,
                "Messages the work stream did not acknowledge (answered AR/CR 207 or 503).",
            ),
            lag: gauge(
                CLUSTER_CONSUMER_LAG,
                "Stream messages of this node's partitions not yet delivered and acknowledged.",
            ),
            stream_messages: gauge(CLUSTER_STREAM_MESSAGES, "Messages the work stream holds."),
            acquired: counter(
                CLUSTER_PARTITIONS_ACQUIRED,
                "Partition leases this node took.",
            ),
            notices_sent: counter(
                CLUSTER_NOTICES_SENT,
                "Completion notices this node sent to the nodes that received what it delivered.",
            ),
            notices_applied: counter(
                CLUSTER_NOTICES_APPLIED,
                "Completion notices this node wrote on the records of messages it received.",
            ),
            unopened: counter(
                CLUSTER_UNOPENED,
                "Stream messages this node could not open with its encryption keys (left in the stream).",
            ),
        }
    }
}

/// What a node says about itself in its heartbeat, and `GET /api/cluster` shows.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct NodeView {
    /// The node's name.
    pub node: String,
    /// Its `node_id`.
    pub node_id: u8,
    /// The partitions it holds the lease of.
    pub partitions: Vec<u32>,
    /// Stream messages of those partitions not yet acknowledged.
    pub lag: u64,
    /// Unix ms of the heartbeat.
    pub at_ms: u64,
    /// Where the other nodes call its admin API (`admin_url`, else the bound address);
    /// empty until its admin server is listening.
    #[serde(default)]
    pub admin_url: String,
}

/// What `GET /api/cluster` answers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterView {
    /// The node that answered.
    pub node: String,
    /// Whether it is connected to NATS now.
    pub connected: bool,
    /// Every node with a live heartbeat.
    pub nodes: Vec<NodeView>,
    /// Messages the work stream holds.
    pub stream_messages: u64,
    /// Number of partitions.
    pub partitions: u32,
    /// Partitions without an owner now.
    pub unowned: Vec<u32>,
}

/// A connected cluster node.
pub struct Cluster {
    cfg: ClusterConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    metrics: ClusterMetrics,
    view: Mutex<ClusterView>,
    /// How long a finished message stays in the work stream (`retention_days`).
    retention: Duration,
    /// This node's admin URL, as its heartbeat says it (set once the admin server is bound).
    admin_url: std::sync::OnceLock<String>,
    /// The other nodes to ask for a cluster-wide answer: those with a live heartbeat, and
    /// those whose heartbeat ran out without a clean leave (dead, or cut off from NATS).
    peers: Mutex<Vec<NodeView>>,
    /// Where finished work's completion notices go to be published in batches.
    notices: notice::Outgoing,
    /// The publisher's end of `notices`, until [`start`] runs it.
    notice_queue: Mutex<Option<tokio::sync::mpsc::Receiver<notice::Pending>>>,
}

/// What [`Cluster::publish`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The stream took the message: it is delivered from this copy.
    New,
    /// The stream already held it (the same sender key and content within its duplicate
    /// window): it is delivered once, from the first copy.
    Duplicate,
}

/// The reason a duplicate's record carries ([`Cluster::duplicate`]).
pub const DUPLICATE_REASON: &str = "cluster: the stream already held this message (the same sender key and content, published earlier by this node or another); it is delivered once, from the copy stored first";

/// The NATS header that marks work an operator asked for (a reprocess, a dead-letter retry):
/// its deliveries are new, so the owner takes them up even when it finished the message.
pub const AGAIN_HEADER: &str = "Switchboard-Again";

/// Why the cluster client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A secret of `[cluster]` could not be read.
    #[error("cluster.{key}: {reason}")]
    Secret {
        /// The key.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// The client could not be configured (a bad URL or CA file).
    #[error("cannot set up the NATS client: {0}")]
    Client(String),
}

impl Cluster {
    /// Builds the NATS client. It connects in the background and keeps reconnecting, so a
    /// node starts while NATS is down (and answers AR/CR 207 until it is back).
    ///
    /// # Errors
    ///
    /// [`ClusterError`] when a secret or the CA file cannot be read or a URL is wrong.
    pub async fn connect(
        cfg: ClusterConfig,
        retention_days: u32,
        metrics: &Metrics,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let client = options(&cfg)?
            .connect(cfg.urls.clone())
            .await
            .map_err(|e| ClusterError::Client(e.to_string()))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(Duration::from_millis(cfg.publish_timeout_ms));
        let (notices, notice_queue) = notice::queue();
        Ok(Arc::new(Cluster {
            view: Mutex::new(ClusterView {
                node: cfg.node.clone(),
                partitions: cfg.partitions,
                ..ClusterView::default()
            }),
            cfg,
            client,
            js,
            metrics: ClusterMetrics::register(metrics),
            retention: Duration::from_secs(u64::from(retention_days) * 24 * 3600),
            admin_url: std::sync::OnceLock::new(),
            peers: Mutex::new(Vec::new()),
            notices,
            notice_queue: Mutex::new(Some(notice_queue)),
        }))
    }

    /// This node's settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    /// Sets the admin URL this node's heartbeat advertises: `admin_url` when configured,
    /// else `http://` and the address the admin server bound.
    pub fn set_admin_addr(&self, bound: std::net::SocketAddr) {
        let url = self
            .cfg
            .admin_url
            .clone()
            .unwrap_or_else(|| format!("http://{bound}"));
        let _ = self.admin_url.set(url.trim_end_matches('/').to_string());
    }

    /// This node's advertised admin URL (empty before the admin server is bound).
    pub fn admin_url(&self) -> String {
        self.admin_url.get().cloned().unwrap_or_default()
    }

    /// The other nodes a cluster-wide admin answer asks, as of the last lease round.
    pub fn peers(&self) -> Vec<NodeView> {
        self.peers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set_peers(&self, peers: Vec<NodeView>) {
        *self
            .peers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = peers;
    }

    /// Publishes work an operator asked for (a reprocess, a dead-letter retry), sealed as
    /// [`Cluster::publish`] seals, to the
    /// partition of `items`, marked with [`AGAIN_HEADER`] and under a stream id of its own
    /// (`again_id`), so that neither the owner nor the stream's duplicate window takes it for
    /// the message's first delivery. Waits for the stream's acknowledgement as
    /// [`Cluster::publish`] does.
    ///
    /// # Errors
    ///
    /// A sentence (no content) when the stream did not acknowledge it.
    pub async fn publish_again(
        &self,
        record: &MessageRecord,
        raw: &[u8],
        items: &[OutboxItem],
        again_id: &str,
        seal: &Seal,
    ) -> Result<(), String> {
        let p = envelope::partition_of(items, self.cfg.partitions);
        let payload = envelope::seal(seal, envelope::encode(record, raw, items)?)?;
        let msg = jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .header(AGAIN_HEADER, "1")
            .message_id(format!("again-{}-{again_id}", self.cfg.node));
        self.publish_acked(p, record.id, msg, "work")
            .await
            .map(|_| ())
    }

    /// Publishes `msg` (of message `id`) to partition `p` and waits for the stream's
    /// acknowledgement, at most `publish_timeout_ms`; returns whether the stream took it as a
    /// duplicate (the same `Nats-Msg-Id` within its duplicate window: it keeps the first).
    ///
    /// # Errors
    ///
    /// A sentence naming `what` was not taken or not acknowledged in time.
    async fn publish_acked(
        &self,
        p: u32,
        id: u64,
        msg: jetstream::message::PublishMessage,
        what: &str,
    ) -> Result<bool, String> {
        let limit = Duration::from_millis(self.cfg.publish_timeout_ms);
        let acked = tokio::time::timeout(limit, async {
            self.js
                .send_publish(subject_of(p), msg)
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        match acked {
            Ok(Ok(ack)) => {
                debug!(
                    id,
                    partition = p,
                    seq = ack.sequence,
                    duplicate = ack.duplicate,
                    "Taken by the cluster stream."
                );
                Ok(ack.duplicate)
            }
            Ok(Err(e)) => Err(format!("the cluster stream did not take the {what}: {e}")),
            Err(_) => Err(format!(
                "the cluster stream did not acknowledge the {what} within {} ms",
                self.cfg.publish_timeout_ms
            )),
        }
    }

    /// Publishes a stored message and its deliveries to its partition of the work stream,
    /// sealed with `seal` when it has keys, and waits for the stream's acknowledgement (the
    /// replicated write), at most `publish_timeout_ms`. The `Nats-Msg-Id` comes from the
    /// message, not the sealed bytes (a fresh nonce each time), so a resend keeps it.
    ///
    /// Returns whether the stream already held the message ([`Published::Duplicate`]).
    ///
    /// # Errors
    ///
    /// A sentence for the message's record and its sender (no content) when the stream did
    /// not acknowledge it: timed out, no stream, no quorum, not connected.
    pub async fn publish(
        &self,
        seal: &Seal,
        record: &MessageRecord,
        raw: &[u8],
        items: &[OutboxItem],
    ) -> Result<Published, String> {
        let started = Instant::now();
        let p = envelope::partition_of(items, self.cfg.partitions);
        let payload = envelope::seal(seal, envelope::encode(record, raw, items)?)?;
        let msg = jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .message_id(envelope::message_id(record, raw));
        match self.publish_acked(p, record.id, msg, "message").await {
            Ok(duplicate) => {
                self.metrics
                    .publish_duration
                    .observe(started.elapsed().as_secs_f64());
                Ok(if duplicate {
                    Published::Duplicate
                } else {
                    Published::New
                })
            }
            Err(e) => {
                self.metrics.publish_failures.inc();
                warn!(id = record.id, partition = p, error = %e, "Message not acknowledged by the cluster stream; answering with a reject.");
                Err(e)
            }
        }
    }

    /// After [`Cluster::publish`] answered [`Published::Duplicate`] for a message ingest
    /// stored: this record is a second copy of a message the stream already holds (a resend
    /// after an answer that was lost, to this node or another, within the stream's duplicate
    /// window). The stream's first copy is the one delivered, under the first record's id, and
    /// its completion notice goes to that record; this one is marked `filtered` (delivered
    /// nowhere by itself) with the reason, and made durable, so it does not look like work
    /// still to do. `record` itself is left as it was: an `ack = "on_delivery"` answer for
    /// it cannot learn the first copy's outcome and still waits (AE after the timeout), as
    /// it must not claim a delivery it has not seen.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the record cannot be written or made durable (it then stays as
    /// stored, `received`).
    pub async fn duplicate(
        &self,
        store: &Store,
        record: &MessageRecord,
        raw: &[u8],
    ) -> Result<(), StoreError> {
        let mut marked = record.clone();
        marked.status = Status::Filtered;
        marked.errors.push(DUPLICATE_REASON.into());
        store.put(&marked, raw, &[])?;
        store.commit().await
    }

    /// After [`Cluster::publish`] failed for a message ingest stored without deliveries:
    /// marks the stored record rejected with the `reason` (so nothing vanishes) and returns
    /// the error ingest answers AR/CR 207 (HTTP 503) for; the sender sends the message again.
    pub fn refused(
        &self,
        store: &Store,
        record: &mut MessageRecord,
        raw: &[u8],
        reason: String,
    ) -> StoreError {
        record.status = Status::Rejected;
        record.ack_code = if record.format == channels::source::RecordFormat::Hl7v2 {
            "AR"
        } else {
            "503"
        }
        .into();
        record.ack.clear();
        record.errors.push(reason.clone());
        if let Err(e) = store.put(record, raw, &[]) {
            warn!(id = record.id, error = %e, "Cannot mark a message the cluster stream refused as rejected.");
        }
        StoreError::Cluster(reason)
    }

    /// What `GET /api/cluster` shows, as of the last lease round (every `lease_secs / 3`).
    pub fn view(&self) -> ClusterView {
        let mut v = self
            .view
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        v.connected = self.client.connection_state() == async_nats::connection::State::Connected;
        v
    }

    fn set_view(&self, view: ClusterView) {
        *self
            .view
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = view;
    }
}

/// `switchboard check --connect`: connects to the NATS servers of `cfg` (waiting at most 5 s)
/// and sends the JetStream API's account request, which proves JetStream is on.
///
/// # Errors
///
/// A sentence naming what failed (never a secret).
pub async fn probe(cfg: &ClusterConfig) -> Result<String, String> {
    let opts = options(cfg).map_err(|e| e.to_string())?;
    // The client connects in the background (as the engine's): wait for it, boundedly.
    let client = opts
        .connect(cfg.urls.clone())
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while client.connection_state() != async_nats::connection::State::Connected {
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "no NATS server of {} answered",
                cfg.urls.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The JetStream API's account request, read loosely (its fields differ between server
    // versions): an answer without an error means JetStream is on for this account.
    let answer = client
        .request("$JS.API.INFO", bytes::Bytes::new())
        .await
        .map_err(|e| format!("connected, but JetStream does not answer: {e}"))?;
    let info: serde_json::Value = serde_json::from_slice(&answer.payload)
        .map_err(|e| format!("connected, but JetStream's answer is not JSON: {e}"))?;
    if let Some(error) = info.get("error") {
        return Err(format!("connected, but JetStream refused: {error}"));
    }
    Ok(format!(
        "connected to {}; JetStream on, {} stream(s)",
        client.server_info().server_name,
        info["streams"].as_u64().unwrap_or_default()
    ))
}

/// The client options of `cfg`: name, credentials, TLS, endless reconnects.
fn options(cfg: &ClusterConfig) -> Result<async_nats::ConnectOptions, ClusterError> {
    let secret = |key: &'static str, s: &crate::config::SecretRef| {
        s.resolve()
            .map_err(|reason| ClusterError::Secret { key, reason })
    };
    let mut opts = async_nats::ConnectOptions::new()
        .name(format!("switchboard-{}", cfg.node))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((250 * attempts as u64).min(2000))
        })
        .event_callback(|event| async move {
            info!(event = %event, "NATS connection event.");
        });
    if let (Some(user), Some(password)) = (&cfg.user, &cfg.password) {
        opts = opts.user_and_password(user.clone(), secret("password", password)?);
    }
    if let Some(token) = &cfg.token {
        opts = opts.token(secret("token", token)?);
    }
    if let Some(ca) = &cfg.tls_ca {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    Ok(opts)
}

/// Starts cluster mode: the lease round that takes, renews and gives back partitions and runs
/// a consumer for each partition held, the publisher of the completion notices of the work
/// this node finishes, and the reader of this node's own notices. Stops on `shutdown`,
/// giving its leases back. Called once per [`Cluster`].
pub fn start(
    cluster: Arc<Cluster>,
    pipeline: Arc<Pipeline>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    info!(node = %cluster.cfg.node, partitions = cluster.cfg.partitions, "Cluster mode: joining.");
    let queue = cluster
        .notice_queue
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take()
        .expect("cluster mode is started once");
    let publisher = tokio::spawn(notice::publish(
        cluster.js.clone(),
        pipeline.hub().store().clone(),
        cluster.metrics.notices_sent.clone(),
        queue,
        shutdown.clone(),
    ));
    let notices = tokio::spawn(notice::run(
        cluster.clone(),
        pipeline.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(async move {
        leases::run(cluster, pipeline, shutdown).await;
        let _ = notices.await;
        let _ = publisher.await;
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Durability;
    use crate::metrics::Metrics;
    use crate::store::{Store, ID_LANES};

    /// Two nodes receiving in the same millisecond never assign the same id, and each
    /// node's ids still increase.
    #[tokio::test]
    async fn nodes_assign_ids_in_their_own_lanes() {
        let (d1, d2) = (
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
        );
        let m = Metrics::new("t");
        let a = Store::open(d1.path(), Durability::Os, &m).expect("open");
        let b = Store::open(d2.path(), Durability::Os, &m).expect("open");
        a.set_id_lane(1);
        b.set_id_lane(63);
        let mut seen = std::collections::BTreeSet::new();
        let mut last = (0, 0);
        for n in 0..500 {
            let now = 1_000 + n / 100;
            let (x, y) = (a.next_id(now), b.next_id(now));
            assert_eq!((x % ID_LANES, y % ID_LANES), (1, 63));
            assert!(x > last.0 && y > last.1);
            assert_eq!(x >> 20, now, "the id still says when");
            last = (x, y);
            assert!(seen.insert(x) && seen.insert(y));
        }
    }
}
