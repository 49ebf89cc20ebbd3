//! Completion notices: the partition owner tells the node that received a message how its
//! deliveries ended, so that the receiving node's record shows the truth and an
//! `ack = "on_delivery"` channel there can answer.
//!
//! What it is: when the owner has finished a stream message (every delivery delivered or in
//! the dead letters, just before it acknowledges the work), it publishes a [`Notice`] (the
//! message id, the owner's name and each delivery's state: destination, status, attempts,
//! the last answer's short detail; never a body) to the JetStream stream [`DONE_STREAM`], on
//! the subject `switchboard.done.<node_id>` of the receiving node (the low six bits of the
//! message id, see [`crate::store::ID_LANES`]). The stream is a work queue on file storage
//! with the work stream's replicas: a notice stays until the receiving node took it, so a
//! node that is down for a while finds its notices when it comes back, and notices of a
//! node that never comes back go after `retention_days`. Each node reads its own subject
//! with the durable consumer `done-<node_id>` ([`run`]), writes the deliveries on its record
//! ([`Store::set_remote_deliveries`]), makes that durable, wakes whoever waits for the
//! message ([`crate::delivery::Hub::tell`]) and only then acknowledges the notice. Applying
//! a notice twice (a redelivery, an owner that finished the message again after a
//! take-over) changes nothing.
//!
//! With `[encryption]` a notice is sealed like the work it answers (purpose
//! `cluster_notice`). What it is not: the owner's attempts, payloads and dead letters stay
//! in the owner's store; a message the owner itself received needs no notice.

use super::Cluster;
use crate::delivery::{Finished, Hub};
use crate::pipeline::Pipeline;
use crate::store::outbox::DeliveryState;
use crate::store::{Store, StoreError, ID_LANES};
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

/// The stream of completion notices.
pub const DONE_STREAM: &str = "SWITCHBOARD_DONE";
/// Subjects of the notice stream: `switchboard.done.<node_id>`.
pub const DONE_PREFIX: &str = "switchboard.done";
/// The associated data of a sealed notice.
const NOTICE_PURPOSE: &[u8] = b"cluster_notice";
/// How long a notice this node cannot open waits before it is offered again.
pub(super) const UNOPENED_RETRY: Duration = Duration::from_secs(10);
/// How long the stream waits for a notice's acknowledgement before offering it again.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// What the owner of a message's partition tells the node that received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// The message id (the same on both nodes).
    pub id: u64,
    /// The node that delivered it.
    pub owner: String,
    /// Each delivery as the owner finished it (its outbox seq is the owner's).
    pub deliveries: Vec<DeliveryState>,
}

/// The subject of the notices for the node with `node_id`.
pub fn subject_of(node_id: u64) -> String {
    format!("{DONE_PREFIX}.{node_id}")
}

/// The node id that received message `id` (its id lane).
pub fn receiver_of(id: u64) -> u64 {
    id % ID_LANES
}

/// The notice stream: every node's subject, a work queue (a notice goes once its node took
/// it), `replicas` copies on disk, and at most `retention` old (a node that never returns).
pub(super) fn done_stream(replicas: usize, retention: Duration) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: DONE_STREAM.into(),
        subjects: vec![format!("{DONE_PREFIX}.*")],
        retention: jetstream::stream::RetentionPolicy::WorkQueue,
        num_replicas: replicas,
        storage: jetstream::stream::StorageType::File,
        max_age: retention,
        ..Default::default()
    }
}

/// Encodes a notice, sealed under the newest key of the store's ring when there is one.
///
/// # Errors
///
/// A sentence when it cannot be written or sealed.
pub fn encode(store: &Store, notice: &Notice) -> Result<Vec<u8>, String> {
    let json = serde_json::to_vec(notice).map_err(|e| format!("cannot encode a notice: {e}"))?;
    store
        .seal
        .seal(NOTICE_PURPOSE, &json)
        .map(Cow::into_owned)
        .map_err(|e| format!("cannot seal a notice: {e}"))
}

/// Why a published notice could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// Sealed under a key this node does not have (or damaged): it stays in the stream.
    Sealed(String),
    /// Not a notice: it is taken out of the stream.
    Malformed(String),
}

/// Opens and decodes a published notice.
///
/// # Errors
///
/// [`Unreadable`], naming the key id or the decoding error, never the content.
pub fn decode(store: &Store, bytes: &[u8]) -> Result<Notice, Unreadable> {
    let json = store
        .seal
        .open(NOTICE_PURPOSE, bytes)
        .map_err(|e| Unreadable::Sealed(e.to_string()))?;
    serde_json::from_slice(&json).map_err(|e| Unreadable::Malformed(e.to_string()))
}

/// Writes a notice on this node's record of the message and, once durable, tells whoever
/// waits for it; returns whether the message is here.
///
/// # Errors
///
/// [`StoreError`] when the record cannot be written or made durable (the notice is then
/// offered again).
pub async fn apply(store: &Store, hub: &Hub, notice: &Notice) -> Result<bool, StoreError> {
    let Some(status) = store.set_remote_deliveries(notice.id, &notice.deliveries)? else {
        return Ok(false);
    };
    store.commit().await?;
    if let Some(finished) = Finished::of(status, &notice.deliveries) {
        hub.tell(notice.id, &finished);
    }
    Ok(true)
}

/// The owner's side: tells the node that received message `id` how its deliveries ended,
/// from this node's record, and waits for the stream to take the notice. Nothing to do for
/// a message this node received itself (its record is the one the workers wrote) or no
/// longer holds.
///
/// # Errors
///
/// A sentence when the record cannot be read or the stream did not take the notice; the
/// work is then offered again, found finished, and the notice sent again.
pub(super) async fn send(cluster: &Cluster, store: &Store, id: u64) -> Result<(), String> {
    let receiver = receiver_of(id);
    if receiver == u64::from(cluster.cfg.node_id) {
        return Ok(());
    }
    let Some(record) = store.get(id).map_err(|e| e.to_string())? else {
        return Ok(());
    };
    let notice = Notice {
        id,
        owner: cluster.cfg.node.clone(),
        deliveries: record.deliveries,
    };
    let payload = encode(store, &notice)?;
    cluster
        .js
        .publish(subject_of(receiver), payload.into())
        .await
        .map_err(|e| format!("completion notice not sent: {e}"))?
        .await
        .map_err(|e| format!("completion notice not taken by the stream: {e}"))?;
    cluster.metrics.notices_sent.inc();
    debug!(id, receiver, "Completion notice sent.");
    Ok(())
}

/// The receiving node's side, until `shutdown`: takes this node's notices and applies them.
/// After an error (logged) it starts again a second later.
pub(super) async fn run(
    cluster: Arc<Cluster>,
    pipeline: Arc<Pipeline>,
    shutdown: CancellationToken,
) {
    loop {
        match receive(&cluster, &pipeline, &shutdown).await {
            Ok(()) => return,
            Err(e) => warn!(error = %e, "Completion notices not read; trying again."),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn receive(
    cluster: &Cluster,
    pipeline: &Pipeline,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let stream = cluster
        .js
        .get_or_create_stream(done_stream(cluster.cfg.replicas, cluster.retention))
        .await
        .map_err(|e| format!("notice stream: {e}"))?;
    let me = u64::from(cluster.cfg.node_id);
    let name = format!("done-{me}");
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: subject_of(me),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("consumer {name}: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("consumer {name}: {e}"))?;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            next = messages.next() => match next {
                None => return Err("the notice consumer's messages ended".into()),
                Some(Err(e)) => return Err(format!("consumer {name}: {e}")),
                Some(Ok(msg)) => take(cluster, pipeline, msg).await?,
            },
        }
    }
}

/// Applies one notice and acknowledges it; one this node cannot open stays in the stream.
async fn take(
    cluster: &Cluster,
    pipeline: &Pipeline,
    msg: jetstream::Message,
) -> Result<(), String> {
    let hub = pipeline.hub();
    let reply = match decode(hub.store(), &msg.payload) {
        Ok(notice) => match apply(hub.store(), hub, &notice).await {
            Ok(_) => {
                cluster.metrics.notices_applied.inc();
                debug!(id = notice.id, owner = %notice.owner, "Completion notice applied.");
                AckKind::Ack
            }
            Err(e) => {
                warn!(id = notice.id, error = %e, "Completion notice not written; it is offered again.");
                AckKind::Nak(Some(Duration::from_secs(1)))
            }
        },
        Err(Unreadable::Sealed(e)) => {
            cluster.metrics.unopened.inc();
            error!(error = %e, "A completion notice cannot be opened with this node's encryption keys; it stays in the stream. Give every node the same [encryption] keys.");
            AckKind::Nak(Some(UNOPENED_RETRY))
        }
        Err(Unreadable::Malformed(e)) => {
            error!(error = %e, "A completion notice cannot be read; it is taken out of the stream.");
            AckKind::Term
        }
    };
    msg.ack_with(reply)
        .await
        .map_err(|e| format!("cannot acknowledge a notice: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use crate::metrics::Metrics;
    use crate::store::outbox::DeliveryStatus;
    use crate::store::seal::{Seal, StoreKey};
    use crate::store::Status;

    fn key(id: &str, byte: u8) -> StoreKey {
        StoreKey::sample(id, byte)
    }

    fn notice() -> Notice {
        Notice {
            id: 5 << 20 | 3,
            owner: "node-b".into(),
            deliveries: vec![DeliveryState {
                destination: "lab/hook".into(),
                seq: 9,
                status: DeliveryStatus::DeadLetter,
                attempts: 3,
                detail: "HTTP 400".into(),
                attempt: None,
            }],
        }
    }

    #[test]
    fn a_notice_goes_to_the_node_whose_lane_the_id_is_in() {
        assert_eq!(receiver_of(5 << 20 | 3), 3);
        assert_eq!(subject_of(receiver_of(64 * 9 + 63)), "switchboard.done.63");
    }

    #[test]
    fn a_failed_message_ends_with_the_dead_letter_reason() {
        let n = notice();
        assert_eq!(
            Finished::of(Status::Failed, &n.deliveries),
            Some(Finished::Failed("HTTP 400".into()))
        );
        assert_eq!(
            Finished::of(Status::Delivered, &n.deliveries),
            Some(Finished::Delivered)
        );
        assert_eq!(Finished::of(Status::Retrying, &n.deliveries), None);
    }

    /// Sealed with the ring, a notice opens only with it; no key, no notice (and it is
    /// reported as sealed, so it stays in the stream).
    #[tokio::test]
    async fn a_sealed_notice_opens_only_with_the_key() {
        let m = Metrics::new("t");
        let (d1, d2, d3) = (
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
        );
        let ring = || Seal::new(&[key("k1", 1)]);
        let a = Store::open_sealed(d1.path(), Durability::Os, &m, ring()).expect("open");
        let b = Store::open_sealed(d2.path(), Durability::Os, &m, ring()).expect("open");
        let c = Store::open(d3.path(), Durability::Os, &m).expect("open");
        let bytes = encode(&a, &notice()).expect("encodes");
        assert!(!bytes.windows(8).any(|w| w == b"lab/hook"));
        assert_eq!(decode(&b, &bytes), Ok(notice()));
        assert!(matches!(decode(&c, &bytes), Err(Unreadable::Sealed(_))));
        assert!(matches!(
            decode(&c, b"not json"),
            Err(Unreadable::Malformed(_))
        ));
        let plain = encode(&c, &notice()).expect("encodes");
        assert_eq!(decode(&a, &plain), Ok(notice()), "an unsealed notice reads");
    }

    /// Applied once, the record says failed and a waiter is told; applied again, nothing
    /// changes; for a message this node does not hold, nothing is written.
    #[tokio::test]
    async fn a_notice_applied_twice_changes_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = Metrics::new("t");
        let store = Store::open(dir.path(), Durability::Os, &m).expect("open");
        let hub = Hub::new(
            store.clone(),
            m.clone(),
            crate::events::EventBus::default(),
            CancellationToken::new(),
        );
        let n = notice();
        let rec = crate::store::tests::record(n.id, "lab", "C1", Status::Received);
        store.put(&rec, b"MSH|x", &[]).expect("put");
        let waiter = hub.watch(n.id);
        assert!(apply(&store, &hub, &n).await.expect("applies"));
        assert_eq!(waiter.await, Ok(Finished::Failed("HTTP 400".into())));
        let once = store.get(n.id).expect("get").expect("record");
        assert_eq!(once.status, Status::Failed);
        assert_eq!(once.deliveries, n.deliveries);
        assert!(apply(&store, &hub, &n).await.expect("applies"));
        assert_eq!(store.get(n.id).expect("get"), Some(once));
        let absent = Notice {
            id: n.id + 64,
            ..notice()
        };
        assert!(!apply(&store, &hub, &absent)
            .await
            .expect("nothing to apply"));
        assert_eq!(store.get(absent.id).expect("get"), None);
    }
}
