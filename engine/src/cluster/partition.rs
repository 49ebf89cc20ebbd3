//! One partition's consumer, run by the node that holds the partition's lease.
//!
//! Each partition has one durable pull consumer on the work stream, `part-<N>`, filtered to
//! its subject, with `max_ack_pending = 1`: one message in flight, so a patient's messages
//! are delivered in stream order. A node that takes a partition (from a dead node, after a
//! rebalance, or its own after a restart) reads the consumer's ack floor, deletes it and
//! creates it again starting just after that floor. So it resumes at once at the first
//! message not yet acknowledged, without waiting for the dead owner's `ack_wait` to expire,
//! and a previous owner that still pulls (cut off from the lease bucket) finds its consumer
//! gone.
//!
//! A message is acknowledged only when its deliveries are finished (delivered or in the dead
//! letters) on this node; while they take longer than `ack_wait` (retries with backoff), the
//! consumer tells the stream it is still working on it. The deliveries are written to this
//! node's store and outbox and sent by its delivery workers, with the bodies and idempotency
//! keys the receiving node rendered: a message delivered again after a take-over carries the
//! same key, for the destination to recognise.

use super::envelope::{self, Work};
use super::{subject_of, Cluster, STREAM};
use crate::pipeline::Pipeline;
use crate::store::outbox::{attach, DeliveryStatus, OutboxItem};
use crate::store::Store;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

/// How long the stream waits for an acknowledgement before it offers a message again.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// The durable consumer of partition `p`.
pub(super) fn consumer_name(p: u32) -> String {
    format!("part-{p}")
}

/// Consumes partition `p` until `stop`; after an error (logged) it waits a second and ends,
/// and the lease round starts it again.
pub(super) async fn run(
    cluster: Arc<Cluster>,
    pipeline: Arc<Pipeline>,
    p: u32,
    stop: CancellationToken,
) {
    if let Err(e) = consume(&cluster, &pipeline, p, &stop).await {
        warn!(partition = p, error = %e, "Partition consumer stopped; it starts again.");
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn consume(
    cluster: &Cluster,
    pipeline: &Pipeline,
    p: u32,
    stop: &CancellationToken,
) -> Result<(), String> {
    let stream = cluster
        .js
        .get_stream(STREAM)
        .await
        .map_err(|e| format!("work stream: {e}"))?;
    let consumer = take_over(&stream, p).await?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("consumer: {e}"))?;
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            next = messages.next() => next,
        };
        match next {
            None => return Err("the consumer's messages ended".into()),
            Some(Err(e)) => return Err(format!("consumer: {e}")),
            Some(Ok(msg)) => handle(pipeline, p, msg).await?,
        }
    }
}

/// Creates partition `p`'s consumer again, starting after the ack floor of the one before.
async fn take_over(stream: &jetstream::stream::Stream, p: u32) -> Result<PullConsumer, String> {
    let name = consumer_name(p);
    let deliver_policy = match stream.consumer_info(&name).await {
        Ok(info) => {
            stream
                .delete_consumer(&name)
                .await
                .map_err(|e| format!("cannot delete consumer {name}: {e}"))?;
            DeliverPolicy::ByStartSequence {
                start_sequence: info.ack_floor.stream_sequence + 1,
            }
        }
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => DeliverPolicy::All,
        Err(e) => return Err(format!("consumer {name}: {e}")),
    };
    stream
        .create_consumer(pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: subject_of(p),
            deliver_policy,
            ack_policy: AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            max_ack_pending: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot create consumer {name}: {e}"))
}

/// Delivers one stream message and acknowledges it once its deliveries are finished; asks
/// for it again a second later when they could not be written here.
async fn handle(pipeline: &Pipeline, p: u32, msg: jetstream::Message) -> Result<(), String> {
    let work = match envelope::decode(&msg.payload) {
        Ok(w) => w,
        Err(e) => {
            error!(partition = p, error = %e, "Work message cannot be read; it is taken out of the partition.");
            return msg
                .ack_with(AckKind::Term)
                .await
                .map_err(|e| format!("cannot acknowledge: {e}"));
        }
    };
    let id = work.record.id;
    let delivered = deliver(pipeline, work);
    tokio::pin!(delivered);
    let mut progress = tokio::time::interval(ACK_WAIT / 3);
    progress.tick().await;
    let outcome = loop {
        tokio::select! {
            outcome = &mut delivered => break outcome,
            _ = progress.tick() => {
                let _ = msg.ack_with(AckKind::Progress).await;
            }
        }
    };
    match outcome {
        Ok(()) => {
            debug!(partition = p, id, "Cluster work finished and acknowledged.");
            msg.double_ack()
                .await
                .map_err(|e| format!("cannot acknowledge message {id}: {e}"))
        }
        Err(e) => {
            warn!(partition = p, id, error = %e, "Cluster work not taken up here; asking for it again.");
            msg.ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await
                .map_err(|e| format!("cannot hand message {id} back: {e}"))
        }
    }
}

/// Writes a message's deliveries to this node's outbox (with the message, when this node has
/// no copy of it), hands them to the delivery workers and waits until they are finished.
/// A message whose deliveries this node already finished (acknowledged before a crash, or
/// the acknowledgement lost) is not delivered again.
async fn deliver(pipeline: &Pipeline, work: Work) -> Result<(), String> {
    let hub = pipeline.hub();
    let store = hub.store().clone();
    let id = work.record.id;
    // Watched before looking, so an outcome written meanwhile is not missed.
    let watch = hub.watch(id);
    let items = match take_up(&store, work) {
        Ok(Some(items)) => items,
        Ok(None) => {
            hub.unwatch(id);
            return Ok(());
        }
        Err(e) => {
            hub.unwatch(id);
            return Err(e.to_string());
        }
    };
    hub.enqueue(&items);
    watch
        .await
        .map(|_| ())
        .map_err(|_| "the delivery workers stopped".to_string())
}

/// The new outbox items to hand to the workers (empty when this node's outbox already holds
/// the message's deliveries), or `None` when they are all finished.
fn take_up(store: &Store, work: Work) -> Result<Option<Vec<OutboxItem>>, crate::store::StoreError> {
    let id = work.record.id;
    let mut items = work.items;
    match store.get(id)? {
        None => {
            for i in &mut items {
                i.seq = store.next_seq();
            }
            let mut record = work.record;
            // This node's copy: its own deliveries; the sender's resend key stays with the
            // node that received it.
            record.deliveries.clear();
            record.dedup_key.clear();
            attach(&mut record, &items);
            store.put(&record, &work.raw, &items)?;
            Ok(Some(items))
        }
        // Received here: routed now, by this node as the partition's owner.
        Some(r) if r.deliveries.is_empty() => {
            for i in &mut items {
                i.seq = store.next_seq();
            }
            store.route(id, &items)?;
            Ok(Some(items))
        }
        Some(r)
            if r.deliveries
                .iter()
                .all(|d| d.status != DeliveryStatus::Pending) =>
        {
            Ok(None)
        }
        Some(_) => Ok(Some(Vec::new())),
    }
}
