//! Completion notices: the partition owner tells the node that received a message how its
//! deliveries ended, so that the receiving node's record shows the truth and an
//! `ack = "on_delivery"` channel there can answer.
//!
//! What it is: when the owner has finished a stream message (every delivery delivered or in
//! the dead letters, just before it acknowledges the work), it hands a [`Notice`] (the
//! message id, the owner's name and each delivery's state: destination, status, attempts,
//! the last answer's short detail; never a body) to its notice publisher ([`publish`]),
//! which sends the notices in batches to the JetStream stream [`DONE_STREAM`], on the subject
//! `switchboard.done.<node_id>` of the receiving node (the low six bits of the message id,
//! see [`crate::store::ID_LANES`]). A batch is what queued while the previous one was being
//! published, at most [`BATCH_MAX`] notices and [`BATCH_BYTES`] bytes: one at a time when
//! the load is light, one replicated write and one fsync on the receiver for up to
//! [`BATCH_MAX`] messages under load (one each made a message delivered by another node cost
//! a second replicated write and a second fsync). The owner acknowledges a work message only
//! once the stream took the batch holding its notice. The stream is a work queue on file storage
//! with the work stream's replicas: a notice stays until the receiving node took it, so a
//! node that is down for a while finds its notices when it comes back, and notices of a
//! node that never comes back go after `retention_days`. Each node reads its own subject
//! with the durable consumer `done-<node_id>` ([`run`]), writes the deliveries of every notice
//! of a batch on their records ([`Store::set_remote_deliveries`]), makes that durable once,
//! wakes whoever waits for each message ([`crate::delivery::Hub::tell`]) and only then
//! acknowledges the batch. Applying a notice twice (a redelivery, an owner that finished the
//! message again after a take-over) changes nothing. A single notice (not in a list), as
//! nodes before the batches sent them, is read too.
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
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
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
/// Most notices in one published batch.
pub const BATCH_MAX: usize = 256;
/// Most bytes of notices (as JSON, before sealing) in one published batch; NATS refuses a
/// message over its `max_payload`, 1 MiB by default.
pub const BATCH_BYTES: usize = 256 * 1024;
/// Notices waiting for the publisher, at most (a finishing partition waits for room).
const QUEUE: usize = 4 * BATCH_MAX;

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

/// Encodes notices already written as JSON objects (at least one) as one batch (a JSON
/// list), sealed under the newest key of the store's ring when there is one.
///
/// # Errors
///
/// A sentence when it cannot be sealed.
fn encode_batch(store: &Store, notices: &[Vec<u8>]) -> Result<Vec<u8>, String> {
    let mut json = Vec::with_capacity(notices.iter().map(|n| n.len() + 1).sum::<usize>() + 1);
    json.push(b'[');
    for (i, n) in notices.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        json.extend_from_slice(n);
    }
    json.push(b']');
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

/// What a notice message holds: a batch, or one notice as nodes before the batches sent.
#[derive(Deserialize)]
#[serde(untagged)]
enum Wire {
    Batch(Vec<Notice>),
    One(Notice),
}

/// Opens and decodes a published batch of notices (or a single notice).
///
/// # Errors
///
/// [`Unreadable`], naming the key id or the decoding error, never the content.
pub fn decode(store: &Store, bytes: &[u8]) -> Result<Vec<Notice>, Unreadable> {
    let json = store
        .seal
        .open(NOTICE_PURPOSE, bytes)
        .map_err(|e| Unreadable::Sealed(e.to_string()))?;
    match serde_json::from_slice(&json) {
        Ok(Wire::Batch(notices)) => Ok(notices),
        Ok(Wire::One(notice)) => Ok(vec![notice]),
        Err(e) => Err(Unreadable::Malformed(e.to_string())),
    }
}

/// Writes each notice on this node's record of its message, makes them durable together and
/// then tells whoever waits for each; returns how many of the messages are here.
///
/// # Errors
///
/// [`StoreError`] when a record cannot be written or made durable (the batch is then
/// offered again; what was written is written again, unchanged).
pub async fn apply(store: &Store, hub: &Hub, notices: &[Notice]) -> Result<usize, StoreError> {
    let mut here = Vec::with_capacity(notices.len());
    for notice in notices {
        if let Some(status) = store.set_remote_deliveries(notice.id, &notice.deliveries)? {
            here.push((notice, status));
        }
    }
    if here.is_empty() {
        return Ok(0);
    }
    store.commit().await?;
    for (notice, status) in &here {
        if let Some(finished) = Finished::of(*status, &notice.deliveries) {
            hub.tell(notice.id, &finished);
        }
    }
    Ok(here.len())
}

/// A notice handed to the publisher, and who waits for the stream to take it.
pub(super) struct Pending {
    notice: Notice,
    taken: Taken,
}

/// Who waits for the stream to take a notice.
type Taken = oneshot::Sender<Result<(), String>>;

/// The owner's end of the notice publisher ([`publish`]).
pub(super) type Outgoing = mpsc::Sender<Pending>;

/// A new queue of notices for [`publish`].
pub(super) fn queue() -> (Outgoing, mpsc::Receiver<Pending>) {
    mpsc::channel(QUEUE)
}

/// The owner's side: tells the node that received message `id` how its deliveries ended,
/// from this node's record, and waits until the stream took the batch holding the notice.
/// Nothing to do for a message this node received itself (its record is the one the workers
/// wrote) or no longer holds.
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
    let (taken, answer) = oneshot::channel();
    cluster
        .notices
        .send(Pending { notice, taken })
        .await
        .map_err(|_| "the completion notice publisher stopped".to_string())?;
    answer
        .await
        .map_err(|_| "the completion notice publisher stopped".to_string())?
}

/// The owner's notice publisher, until `shutdown` (or until every sender is gone): takes
/// what queued, one batch per receiving node (split at [`BATCH_MAX`] notices and
/// [`BATCH_BYTES`] bytes), publishes the batches at once and tells each waiting owner whether
/// the stream took its notice. Notices that queue meanwhile make the next batch.
pub(super) async fn publish(
    js: jetstream::Context,
    store: Store,
    sent: prometheus::IntCounter,
    mut queue: mpsc::Receiver<Pending>,
    shutdown: CancellationToken,
) {
    let mut waiting = Vec::with_capacity(QUEUE);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            n = queue.recv_many(&mut waiting, QUEUE) => if n == 0 { return },
        }
        let mut by_receiver: BTreeMap<u64, Vec<Pending>> = BTreeMap::new();
        for p in waiting.drain(..) {
            by_receiver
                .entry(receiver_of(p.notice.id))
                .or_default()
                .push(p);
        }
        let batches = by_receiver
            .into_iter()
            .flat_map(|(receiver, pending)| split(pending).map(move |b| (receiver, b)));
        let published = batches.map(|(receiver, batch)| {
            let (js, store, sent) = (&js, &store, &sent);
            async move {
                let (json, pending): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                let n = pending.len();
                let result = publish_batch(js, store, receiver, &json).await;
                if result.is_ok() {
                    sent.inc_by(n as u64);
                    debug!(receiver, notices = n, "Completion notices sent.");
                }
                for p in pending {
                    let _ = p.send(result.clone());
                }
            }
        });
        futures::future::join_all(published).await;
    }
}

/// A receiver's notices as JSON, in batches of at most [`BATCH_MAX`] notices and
/// [`BATCH_BYTES`] bytes (a notice larger than that goes alone); a notice that cannot be
/// encoded is answered with the error at once.
fn split(pending: Vec<Pending>) -> impl Iterator<Item = Vec<(Vec<u8>, Taken)>> {
    let mut batches: Vec<Vec<(Vec<u8>, _)>> = Vec::new();
    let mut bytes = 0;
    for p in pending {
        let json = match serde_json::to_vec(&p.notice) {
            Ok(j) => j,
            Err(e) => {
                let _ = p.taken.send(Err(format!("cannot encode a notice: {e}")));
                continue;
            }
        };
        match batches.last_mut() {
            Some(b) if b.len() < BATCH_MAX && bytes + json.len() < BATCH_BYTES => {
                bytes += json.len() + 1;
                b.push((json, p.taken));
            }
            _ => {
                bytes = json.len() + 2;
                batches.push(vec![(json, p.taken)]);
            }
        }
    }
    batches.into_iter()
}

/// Publishes one batch to the receiving node's subject and waits for the stream to take it.
async fn publish_batch(
    js: &jetstream::Context,
    store: &Store,
    receiver: u64,
    notices: &[Vec<u8>],
) -> Result<(), String> {
    let payload = encode_batch(store, notices)?;
    js.publish(subject_of(receiver), payload.into())
        .await
        .map_err(|e| format!("completion notice not sent: {e}"))?
        .await
        .map_err(|e| format!("completion notice not taken by the stream: {e}"))?;
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

/// Applies one batch of notices and acknowledges it; one this node cannot open stays in the
/// stream.
async fn take(
    cluster: &Cluster,
    pipeline: &Pipeline,
    msg: jetstream::Message,
) -> Result<(), String> {
    let hub = pipeline.hub();
    let reply = match decode(hub.store(), &msg.payload) {
        Ok(notices) => match apply(hub.store(), hub, &notices).await {
            Ok(_) => {
                cluster.metrics.notices_applied.inc_by(notices.len() as u64);
                debug!(notices = notices.len(), "Completion notices applied.");
                AckKind::Ack
            }
            Err(e) => {
                warn!(notices = notices.len(), error = %e, "Completion notices not written; they are offered again.");
                AckKind::Nak(Some(Duration::from_secs(1)))
            }
        },
        Err(Unreadable::Sealed(e)) => {
            cluster.metrics.unopened.inc();
            error!(error = %e, "Completion notices cannot be opened with this node's encryption keys; they stay in the stream. Give every node the same [encryption] keys.");
            AckKind::Nak(Some(UNOPENED_RETRY))
        }
        Err(Unreadable::Malformed(e)) => {
            error!(error = %e, "Completion notices cannot be read; they are taken out of the stream.");
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

    /// Sealed with the ring, a batch opens only with it; no key, no notice (and it is
    /// reported as sealed, so it stays in the stream). A single notice, as nodes before the
    /// batches sent it, reads as a batch of one.
    #[tokio::test]
    async fn a_sealed_batch_opens_only_with_the_key() {
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
        let second = Notice {
            id: notice().id + 64,
            ..notice()
        };
        let json = |n: &Notice| serde_json::to_vec(n).expect("json");
        let bytes = encode_batch(&a, &[json(&notice()), json(&second)]).expect("encodes");
        assert!(!bytes.windows(8).any(|w| w == b"lab/hook"));
        assert_eq!(decode(&b, &bytes), Ok(vec![notice(), second.clone()]));
        assert!(matches!(decode(&c, &bytes), Err(Unreadable::Sealed(_))));
        assert!(matches!(
            decode(&c, b"not json"),
            Err(Unreadable::Malformed(_))
        ));
        let plain = encode_batch(&c, &[json(&second)]).expect("encodes");
        assert_eq!(
            decode(&a, &plain),
            Ok(vec![second]),
            "an unsealed batch reads"
        );
        let single = a
            .seal
            .seal(NOTICE_PURPOSE, &json(&notice()))
            .expect("seals")
            .into_owned();
        assert_eq!(decode(&b, &single), Ok(vec![notice()]), "one notice alone");
    }

    fn pending(id: u64, detail_len: usize) -> (Pending, oneshot::Receiver<Result<(), String>>) {
        let (taken, answer) = oneshot::channel();
        let mut notice = Notice { id, ..notice() };
        notice.deliveries[0].detail = "x".repeat(detail_len);
        (Pending { notice, taken }, answer)
    }

    /// Batches hold at most [`BATCH_MAX`] notices and [`BATCH_BYTES`] bytes, keep the order
    /// they were handed in, and a notice larger than a batch goes alone.
    #[test]
    fn batches_are_bounded_in_count_and_bytes() {
        let sizes = |batches: Vec<Vec<(Vec<u8>, _)>>| -> Vec<usize> {
            batches.iter().map(Vec::len).collect()
        };
        let many: Vec<_> = (0..600).map(|i| pending(i * 64 + 3, 10).0).collect();
        let batches: Vec<_> = split(many).collect();
        let ids: Vec<u64> = batches
            .iter()
            .flatten()
            .map(|(j, _)| serde_json::from_slice::<Notice>(j).expect("notice").id)
            .collect();
        assert_eq!(ids, (0..600).map(|i| i * 64 + 3).collect::<Vec<_>>());
        assert_eq!(sizes(batches), [BATCH_MAX, BATCH_MAX, 600 - 2 * BATCH_MAX]);

        let big = BATCH_BYTES / 3;
        let large: Vec<_> = (0..5).map(|i| pending(i * 64 + 3, big).0).collect();
        assert_eq!(sizes(split(large).collect()), [2, 2, 1]);
        let huge = vec![
            pending(3, 10).0,
            pending(67, BATCH_BYTES).0,
            pending(131, 10).0,
        ];
        assert_eq!(sizes(split(huge).collect()), [1, 1, 1]);
    }

    /// Against a real JetStream server: notices queued together go out as one batch per
    /// receiving node, each waiting owner hears that the stream took its notice, and the
    /// receiving node reads every notice back in order. Without the stream, every waiting
    /// owner hears the error.
    #[tokio::test]
    async fn queued_notices_go_out_as_one_batch_per_receiving_node() {
        let server = super::super::testing::nats_server();
        let js = jetstream::new(super::super::testing::connect(&server.url).await);
        let dir = tempfile::tempdir().expect("tmp");
        let m = Metrics::new("t");
        let store = Store::open(dir.path(), Durability::Os, &m).expect("open");
        let sent = prometheus::IntCounter::new("sent", "sent").expect("counter");
        let run = |queue| {
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(publish(
                js.clone(),
                store.clone(),
                sent.clone(),
                queue,
                shutdown.clone(),
            ));
            (task, shutdown)
        };

        let (tx, rx) = queue();
        let (p, refused) = pending(3, 10);
        tx.send(p).await.expect("queued");
        let (task, shutdown) = run(rx);
        assert!(
            refused.await.expect("answered").is_err(),
            "no notice stream yet: the owner hears it was not taken"
        );
        shutdown.cancel();
        task.await.expect("publisher ends");
        assert_eq!(sent.get(), 0);

        let stream = js
            .get_or_create_stream(done_stream(1, Duration::from_secs(3600)))
            .await
            .expect("notice stream");
        let (tx, rx) = queue();
        let mut answers = Vec::new();
        let ids: Vec<u64> = (0..300).map(|i| (5 << 20) + i * 64 + 1).collect();
        for (n, id) in ids.iter().enumerate() {
            let (p, a) = pending(*id, 10);
            tx.send(p).await.expect("queued");
            answers.push(a);
            if n % 30 == 0 {
                let (p, a) = pending((7 << 20) + n as u64 * 64 + 2, 10);
                tx.send(p).await.expect("queued");
                answers.push(a);
            }
        }
        let (task, shutdown) = run(rx);
        for a in answers {
            assert_eq!(a.await.expect("answered"), Ok(()));
        }
        assert_eq!(sent.get(), 310);
        let info = stream.get_info().await.expect("info").state;
        assert_eq!(
            info.messages, 3,
            "node 1: 256 and 44 notices, node 2: 10 notices"
        );

        let mut read = Vec::new();
        let consumer: jetstream::consumer::PullConsumer = stream
            .create_consumer(pull::Config {
                filter_subject: subject_of(1),
                ..Default::default()
            })
            .await
            .expect("consumer");
        let mut batch = consumer
            .fetch()
            .max_messages(10)
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .expect("fetch");
        while let Some(msg) = batch.next().await {
            let msg = msg.expect("message");
            read.extend(decode(&store, &msg.payload).expect("decodes"));
        }
        assert_eq!(read.iter().map(|n| n.id).collect::<Vec<_>>(), ids);
        shutdown.cancel();
        task.await.expect("publisher ends");
    }

    /// Applied once, the records say what the notices say and their waiters are told;
    /// applied again, nothing changes; a message this node does not hold is skipped.
    #[tokio::test]
    async fn a_batch_applied_twice_changes_nothing() {
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
        let mut delivered = Notice {
            id: n.id + 128,
            ..notice()
        };
        delivered.deliveries[0].status = DeliveryStatus::Delivered;
        let absent = Notice {
            id: n.id + 64,
            ..notice()
        };
        for id in [n.id, delivered.id] {
            let rec = crate::store::tests::record(id, "lab", "C1", Status::Received);
            store.put(&rec, b"MSH|x", &[]).expect("put");
        }
        let (failed_waiter, delivered_waiter) = (hub.watch(n.id), hub.watch(delivered.id));
        let batch = [n.clone(), absent.clone(), delivered.clone()];
        assert_eq!(apply(&store, &hub, &batch).await.expect("applies"), 2);
        assert_eq!(failed_waiter.await, Ok(Finished::Failed("HTTP 400".into())));
        assert_eq!(delivered_waiter.await, Ok(Finished::Delivered));
        let once = store.get(n.id).expect("get").expect("record");
        assert_eq!(once.status, Status::Failed);
        assert_eq!(once.deliveries, n.deliveries);
        let other = store.get(delivered.id).expect("get").expect("record");
        assert_eq!(other.status, Status::Delivered);
        assert_eq!(apply(&store, &hub, &batch).await.expect("applies"), 2);
        assert_eq!(store.get(n.id).expect("get"), Some(once));
        assert_eq!(
            apply(&store, &hub, std::slice::from_ref(&absent))
                .await
                .expect("nothing"),
            0
        );
        assert_eq!(store.get(absent.id).expect("get"), None);
    }
}
