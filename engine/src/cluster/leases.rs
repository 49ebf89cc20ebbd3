//! The lease round: every `lease_secs / 3` a node renews its heartbeat and the leases of the
//! partitions it holds, then takes free partitions up to its fair share (partitions divided
//! by live nodes, rounded up) or gives back what is above it, and runs one consumer per
//! partition held ([`super::partition`]).
//!
//! A lease is the key `p<N>` of the [`LEASES_BUCKET`] bucket, holding the node's name. It is
//! taken with a create (only when no live value exists) and renewed by an update on its
//! revision (compare-and-swap), so two nodes never both hold one. The bucket's `max_age` is
//! `lease_secs`: a lease not renewed in that time disappears and a survivor takes it at its
//! next round. A node that cannot renew a lease stops that partition's consumer at once,
//! before the lease can expire and be taken by another node.

use super::{
    notice, partition, Cluster, ClusterView, NodeView, LEASES_BUCKET, NODES_BUCKET, STREAM,
    SUBJECT_PREFIX,
};
use crate::delivery::now_ms;
use crate::pipeline::Pipeline;
use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long a partition being given back may finish the message it is delivering.
const GIVE_BACK_GRACE: Duration = Duration::from_secs(5);

/// A partition this node holds.
struct Held {
    revision: u64,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The two buckets.
struct Buckets {
    leases: kv::Store,
    nodes: kv::Store,
}

/// The lease round, until `shutdown`; then every lease is given back.
pub(super) async fn run(
    cluster: Arc<Cluster>,
    pipeline: Arc<Pipeline>,
    shutdown: CancellationToken,
) {
    let Some(buckets) = set_up(&cluster, &shutdown).await else {
        return;
    };
    let round = Duration::from_millis(cluster.cfg.lease_secs * 1000 / 3);
    let mut held: BTreeMap<u32, Held> = BTreeMap::new();
    let mut tick = tokio::time::interval(round);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lag = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        renew(&cluster, &buckets.leases, &mut held).await;
        restart_stopped(&cluster, &pipeline, &mut held);
        let nodes = heartbeat(&cluster, &buckets.nodes, &held, lag).await;
        balance(&cluster, &pipeline, &buckets.leases, &mut held, nodes.len()).await;
        // After the leases' work, and bounded: it must never delay a renewal.
        let peers = remember_peers(&cluster, &buckets.nodes, &nodes);
        let _ = tokio::time::timeout(round / 2, peers).await;
        lag = observe(&cluster, &held, nodes).await;
    }
    for (p, h) in std::mem::take(&mut held) {
        give_back(&cluster, &buckets.leases, p, h).await;
    }
    let _ = buckets.nodes.delete(&cluster.cfg.node).await;
    info!(node = %cluster.cfg.node, "Cluster mode: left, leases given back.");
}

/// Creates (or finds) the work stream, the notice stream and the two buckets, trying again every second while
/// NATS cannot be reached; `None` on shutdown.
async fn set_up(cluster: &Cluster, shutdown: &CancellationToken) -> Option<Buckets> {
    let mut tries = 0u32;
    loop {
        match try_set_up(cluster).await {
            Ok(b) => {
                info!(node = %cluster.cfg.node, "Cluster stream and lease buckets ready.");
                return Some(b);
            }
            Err(e) => {
                if tries.is_multiple_of(30) {
                    warn!(error = %e, "Cluster stream not ready; trying again every second.");
                }
                tries += 1;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The work stream: every partition's subject, `replicas` copies on disk, a resend through
/// any node recognised for two minutes. No age limit: a message leaves only when it is
/// finished and older than the retention (`partition::prune`), so undelivered work is never
/// dropped.
pub(super) fn work_stream(replicas: usize) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: STREAM.into(),
        subjects: vec![format!("{SUBJECT_PREFIX}.*")],
        num_replicas: replicas,
        storage: jetstream::stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

async fn try_set_up(cluster: &Cluster) -> Result<Buckets, String> {
    cluster
        .js
        .get_or_create_stream(work_stream(cluster.cfg.replicas))
        .await
        .map_err(|e| format!("work stream: {e}"))?;
    cluster
        .js
        .get_or_create_stream(notice::done_stream(cluster.cfg.replicas, cluster.retention))
        .await
        .map_err(|e| format!("notice stream: {e}"))?;
    Ok(Buckets {
        leases: bucket(cluster, LEASES_BUCKET).await?,
        nodes: bucket(cluster, NODES_BUCKET).await?,
    })
}

/// A bucket whose values live `lease_secs` unless written again. Its stream is created here
/// with the settings of a key-value bucket (one value per key, rollups, direct reads), not by
/// the client's `create_key_value`, which first asks for account details a 2.9 server does
/// not give in the form the client expects.
async fn bucket(cluster: &Cluster, name: &str) -> Result<kv::Store, String> {
    let ttl = Duration::from_secs(cluster.cfg.lease_secs);
    cluster
        .js
        .get_or_create_stream(jetstream::stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_age: ttl,
            duplicate_window: ttl,
            storage: jetstream::stream::StorageType::File,
            num_replicas: cluster.cfg.replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("bucket {name}: {e}"))?;
    cluster
        .js
        .get_key_value(name)
        .await
        .map_err(|e| format!("bucket {name}: {e}"))
}

fn lease_key(p: u32) -> String {
    format!("p{p}")
}

/// Renews every lease held; a lease that cannot be renewed is dropped at once (its consumer
/// stopped), since another node may hold it soon.
async fn renew(cluster: &Cluster, leases: &kv::Store, held: &mut BTreeMap<u32, Held>) {
    let mut lost = Vec::new();
    for (p, h) in held.iter_mut() {
        let value = cluster.cfg.node.clone().into_bytes().into();
        match leases.update(lease_key(*p), value, h.revision).await {
            Ok(r) => h.revision = r,
            Err(e) => {
                warn!(partition = p, error = %e, "Partition lease not renewed; its deliveries stop here.");
                lost.push(*p);
            }
        }
    }
    for p in lost {
        if let Some(h) = held.remove(&p) {
            h.stop.cancel();
            h.task.abort();
        }
    }
}

/// Starts again the consumer of a partition still held whose task ended (it ends only on
/// an error it logged).
fn restart_stopped(
    cluster: &Arc<Cluster>,
    pipeline: &Arc<Pipeline>,
    held: &mut BTreeMap<u32, Held>,
) {
    for (p, h) in held.iter_mut() {
        if h.task.is_finished() {
            h.stop = CancellationToken::new();
            h.task = tokio::spawn(partition::run(
                cluster.clone(),
                pipeline.clone(),
                *p,
                h.stop.clone(),
            ));
        }
    }
}

/// Writes this node's heartbeat and reads every live node's.
async fn heartbeat(
    cluster: &Cluster,
    nodes: &kv::Store,
    held: &BTreeMap<u32, Held>,
    lag: u64,
) -> Vec<NodeView> {
    let me = NodeView {
        node: cluster.cfg.node.clone(),
        node_id: cluster.cfg.node_id,
        partitions: held.keys().copied().collect(),
        lag,
        at_ms: now_ms(),
        admin_url: cluster.admin_url(),
    };
    if let Ok(v) = serde_json::to_vec(&me) {
        if let Err(e) = nodes.put(&cluster.cfg.node, v.into()).await {
            warn!(error = %e, "Cluster heartbeat not written.");
        }
    }
    let mut out = Vec::new();
    if let Ok(mut keys) = nodes.keys().await {
        while let Some(Ok(key)) = keys.next().await {
            if let Ok(Some(v)) = nodes.get(&key).await {
                if let Ok(view) = serde_json::from_slice::<NodeView>(&v) {
                    out.push(view);
                }
            }
        }
    }
    if !out.iter().any(|n| n.node == me.node) {
        out.push(me);
    }
    out.sort_by(|a, b| a.node.cmp(&b.node));
    out
}

/// Updates the nodes a cluster-wide admin answer asks: every other live node, and every node
/// seen before whose heartbeat ran out without a clean leave (a node that stops deletes its
/// heartbeat, which leaves a delete marker; one that dies leaves nothing). Those are still
/// asked, and named unreachable when they do not answer: their stores hold messages.
async fn remember_peers(cluster: &Cluster, nodes: &kv::Store, live: &[NodeView]) {
    let mut peers: Vec<NodeView> = live
        .iter()
        .filter(|n| n.node != cluster.cfg.node)
        .cloned()
        .collect();
    for known in cluster.peers() {
        if peers.iter().any(|n| n.node == known.node) {
            continue;
        }
        let left = matches!(
            nodes.entry(&known.node).await,
            Ok(Some(e)) if e.operation != kv::Operation::Put
        );
        if !left {
            peers.push(known);
        }
    }
    peers.sort_by(|a, b| a.node.cmp(&b.node));
    cluster.set_peers(peers);
}

/// Takes free partitions up to the fair share, or gives back what is above it.
async fn balance(
    cluster: &Arc<Cluster>,
    pipeline: &Arc<Pipeline>,
    leases: &kv::Store,
    held: &mut BTreeMap<u32, Held>,
    live: usize,
) {
    let total = cluster.cfg.partitions;
    let share = total.div_ceil(u32::try_from(live.max(1)).unwrap_or(u32::MAX)) as usize;
    while held.len() > share {
        let Some((p, h)) = held.pop_last() else { break };
        give_back(cluster, leases, p, h).await;
    }
    // Nodes start their search at different partitions, so they rarely race for one.
    let start = u32::from(cluster.cfg.node_id) * 7 % total;
    for p in (0..total).map(|i| (start + i) % total) {
        if held.len() >= share {
            break;
        }
        if held.contains_key(&p) {
            continue;
        }
        if let Some(revision) = take(cluster, leases, p).await {
            cluster.metrics.acquired.inc();
            info!(node = %cluster.cfg.node, partition = p, "Partition taken.");
            let stop = CancellationToken::new();
            let task = tokio::spawn(partition::run(
                cluster.clone(),
                pipeline.clone(),
                p,
                stop.clone(),
            ));
            held.insert(
                p,
                Held {
                    revision,
                    stop,
                    task,
                },
            );
        }
    }
}

/// Takes the lease of `p` when nobody holds it (or this node did, before a restart).
async fn take(cluster: &Cluster, leases: &kv::Store, p: u32) -> Option<u64> {
    let value: bytes::Bytes = cluster.cfg.node.clone().into_bytes().into();
    match leases.entry(lease_key(p)).await {
        Ok(Some(e)) if e.operation == kv::Operation::Put => {
            if e.value == value {
                leases.update(lease_key(p), value, e.revision).await.ok()
            } else {
                None
            }
        }
        Ok(_) => leases.create(lease_key(p), value).await.ok(),
        Err(_) => None,
    }
}

/// Stops a partition's consumer (letting it finish its message for a few seconds) and
/// deletes its lease, if it is still this node's.
async fn give_back(cluster: &Cluster, leases: &kv::Store, p: u32, mut h: Held) {
    h.stop.cancel();
    if tokio::time::timeout(GIVE_BACK_GRACE, &mut h.task)
        .await
        .is_err()
    {
        h.task.abort();
    }
    match leases
        .delete_expect_revision(lease_key(p), Some(h.revision))
        .await
    {
        Ok(()) => info!(node = %cluster.cfg.node, partition = p, "Partition given back."),
        Err(e) => {
            warn!(partition = p, error = %e, "Partition lease not deleted; it expires by itself.")
        }
    }
}

/// Updates the metrics and the view of `GET /api/cluster`; returns this node's lag.
async fn observe(cluster: &Cluster, held: &BTreeMap<u32, Held>, mut nodes: Vec<NodeView>) -> u64 {
    let mut lag = 0;
    let mut stream_messages = 0;
    if let Ok(mut stream) = cluster.js.get_stream(STREAM).await {
        if let Ok(info) = stream.info().await {
            stream_messages = info.state.messages;
        }
        for p in held.keys() {
            if let Ok(c) = stream.consumer_info(partition::consumer_name(*p)).await {
                lag += c.num_pending + c.num_ack_pending as u64;
            }
        }
    }
    // This node as it is now (its heartbeat was written before this round's balance).
    if let Some(me) = nodes.iter_mut().find(|n| n.node == cluster.cfg.node) {
        me.partitions = held.keys().copied().collect();
        me.lag = lag;
    }
    let m = &cluster.metrics;
    m.nodes_up
        .set(i64::try_from(nodes.len()).unwrap_or(i64::MAX));
    m.owned.set(i64::try_from(held.len()).unwrap_or(i64::MAX));
    m.lag.set(i64::try_from(lag).unwrap_or(i64::MAX));
    m.stream_messages
        .set(i64::try_from(stream_messages).unwrap_or(i64::MAX));
    let unowned = (0..cluster.cfg.partitions)
        .filter(|p| !nodes.iter().any(|n| n.partitions.contains(p)) && !held.contains_key(p))
        .collect();
    cluster.set_view(ClusterView {
        node: cluster.cfg.node.clone(),
        connected: false,
        nodes,
        stream_messages,
        partitions: cluster.cfg.partitions,
        unowned,
    });
    lag
}
