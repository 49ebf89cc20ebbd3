//! One partition's consumer, run by the node that holds the partition's lease.
//!
//! Each partition has one durable pull consumer on the work stream, `part-<N>`, filtered to
//! its subject, with up to [`WINDOW`] messages in flight. The owner takes them up one after
//! the other, in stream order, into its outbox, whose queues keep a patient's messages in
//! the order they were taken up; each is acknowledged when its own deliveries are finished.
//! When a message cannot be taken up (the store fails, or it is sealed under a key this
//! node lacks), the consumer ends and starts again just after its ack floor, so nothing is
//! taken up behind a message that was not. So does a jump in the consumer's delivery
//! numbers: the consumer numbers every delivery 1, 2, 3..., and under load (a new owner
//! catching up on a partition after a take-over) one delivery of a window was seen never to
//! reach this node while the next ones did; taking those up would deliver a patient's later message before an
//! earlier one. A node that takes a partition (from a dead node, after a
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
//! same key, for the destination to recognise. Before the acknowledgement the owner sends
//! the receiving node a completion notice ([`notice`]); when the stream does not take it,
//! the work is offered again, found finished, and the notice sent again.
//!
//! Retention: the stream has no age limit. Every [`PRUNE_EVERY`] the owner removes from its
//! partition what is both finished (at or below the consumer's ack floor) and older than
//! `retention_days` ([`prune`]); a message not yet finished stays, however old.

use super::envelope::{self, Work};
use super::{notice, subject_of, Cluster, STREAM};
use crate::pipeline::Pipeline;
use crate::store::outbox::{attach, DeliveryStatus, OutboxItem};
use crate::store::Store;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::{self, AckKind};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// How long the stream waits for an acknowledgement before it offers a message again.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// Messages of one partition in flight at once (taken up, not yet acknowledged): the
/// consumer's `max_ack_pending`. One at a time bounded a partition to one round trip of
/// store, destination, notice and acknowledgement per message.
pub(super) const WINDOW: usize = 128;

/// How often a partition's owner removes from the stream what it no longer needs.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

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
    let mut prune_timer = tokio::time::interval(PRUNE_EVERY);
    let mut in_flight = FuturesUnordered::new();
    // The consumer numbers each delivery 1, 2, 3...: a jump means a message of the partition
    // never reached this node, and taking up the next would put it behind a later one.
    let mut delivered = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = prune_timer.tick() => match prune(&stream, p, cluster.retention).await {
                Ok(0) => {}
                Ok(n) => info!(partition = p, removed = n, "Finished work past its retention removed from the stream."),
                Err(e) => warn!(partition = p, error = %e, "Cannot remove finished work from the stream; tried again later."),
            },
            Some(finished) = in_flight.next(), if !in_flight.is_empty() => finished?,
            next = messages.next(), if in_flight.len() < WINDOW => match next {
                None => return Err("the consumer's messages ended".into()),
                Some(Err(e)) => return Err(format!("consumer: {e}")),
                Some(Ok(msg)) => {
                    let info = msg.info().map_err(|e| format!("consumer: {e}"))?;
                    debug!(partition = p, seq = info.stream_sequence, delivery = info.consumer_sequence, redelivered = info.delivered, "Work received.");
                    if info.consumer_sequence != delivered + 1 {
                        return Err(format!(
                            "delivery {} of the partition came after delivery {delivered}: starting again after the acknowledged work",
                            info.consumer_sequence
                        ));
                    }
                    delivered = info.consumer_sequence;
                    if let Some(finish) = take(cluster, pipeline, p, msg).await? {
                        in_flight.push(finish);
                    }
                }
            },
        }
    }
}

/// Removes from partition `p` of the work stream the messages that are both finished (at or
/// below its consumer's ack floor: delivered or in the dead letters) and stored more than
/// `retention` ago; returns how many. A message not yet finished stays, however old.
///
/// # Errors
///
/// A sentence when JetStream does not answer.
pub(super) async fn prune(
    stream: &jetstream::stream::Stream,
    p: u32,
    retention: Duration,
) -> Result<u64, String> {
    let name = consumer_name(p);
    let floor = match stream.consumer_info(&name).await {
        Ok(info) => info.ack_floor.stream_sequence,
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("consumer {name}: {e}")),
    };
    if floor == 0 {
        return Ok(0);
    }
    let since = time::OffsetDateTime::now_utc() - retention;
    let upto = match first_since(stream, p, since).await? {
        Some(seq) => seq.min(floor + 1),
        None => floor + 1,
    };
    if upto <= 1 {
        // Nothing below sequence 1; and JetStream reads a purge "up to 1" as "all of it".
        return Ok(0);
    }
    debug!(
        partition = p,
        floor, upto, "Removing finished work below a sequence."
    );
    let purged = stream
        .purge()
        .filter(subject_of(p))
        .sequence(upto)
        .await
        .map_err(|e| format!("purge of partition {p}: {e}"))?;
    Ok(purged.purged)
}

/// The stream sequence of partition `p`'s first message stored at or after `since`, if any
/// (a short-lived consumer that starts at that time).
async fn first_since(
    stream: &jetstream::stream::Stream,
    p: u32,
    since: time::OffsetDateTime,
) -> Result<Option<u64>, String> {
    let mut probe: PullConsumer = stream
        .create_consumer(pull::Config {
            filter_subject: subject_of(p),
            deliver_policy: DeliverPolicy::ByStartTime { start_time: since },
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot look into partition {p}: {e}"))?;
    let mut first = probe
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .map_err(|e| format!("cannot look into partition {p}: {e}"))?;
    let seq = match first.next().await {
        Some(Ok(m)) => Some(
            m.info()
                .map_err(|e| format!("partition {p}: {e}"))?
                .stream_sequence,
        ),
        Some(Err(e)) => return Err(format!("cannot look into partition {p}: {e}")),
        None => None,
    };
    if let Ok(info) = probe.info().await {
        let name = info.name.clone();
        let _ = stream.delete_consumer(&name).await;
    }
    Ok(seq)
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
            let start_sequence = info.ack_floor.stream_sequence + 1;
            debug!(
                partition = p,
                start_sequence,
                pending = info.num_pending,
                ack_pending = info.num_ack_pending,
                "Partition consumer created again after its acknowledged work."
            );
            DeliverPolicy::ByStartSequence { start_sequence }
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
            max_ack_pending: WINDOW as i64,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot create consumer {name}: {e}"))
}

/// Takes up one stream message: writes its deliveries to this node's outbox and hands them
/// to the delivery workers, in stream order, and returns what finishes it ([`finish`]); `None`
/// when it was acknowledged or ended here (unreadable work is taken out of the partition).
///
/// # Errors
///
/// A sentence when the message cannot be taken up: the store failed, or it is sealed under a
/// key this node does not have (counted and logged; after [`notice::UNOPENED_RETRY`]). The
/// consumer then ends and starts again after its ack floor, so nothing behind this message
/// is taken up before it.
async fn take<'a>(
    cluster: &'a Cluster,
    pipeline: &'a Pipeline,
    p: u32,
    msg: jetstream::Message,
) -> Result<Option<impl std::future::Future<Output = Result<(), String>> + 'a>, String> {
    let store = pipeline.hub().store().clone();
    let opened = match envelope::open(&store.seal, &msg.payload) {
        Ok(o) => o,
        Err(e) => {
            cluster.metrics.unopened.inc();
            error!(partition = p, error = %e, "Work cannot be opened with this node's encryption keys; it stays in the stream, undelivered. Give every node the same [encryption] keys.");
            tokio::time::sleep(notice::UNOPENED_RETRY).await;
            return Err("work sealed under a key this node does not have".into());
        }
    };
    let work = match envelope::decode(&opened) {
        Ok(w) => w,
        Err(e) => {
            error!(partition = p, error = %e, "Work message cannot be read; it is taken out of the partition.");
            msg.ack_with(AckKind::Term)
                .await
                .map_err(|e| format!("cannot acknowledge: {e}"))?;
            return Ok(None);
        }
    };
    let id = work.record.id;
    let again = msg
        .headers
        .as_ref()
        .is_some_and(|h| h.get(super::AGAIN_HEADER).is_some());
    let hub = pipeline.hub();
    // Watched before looking, so an outcome written meanwhile is not missed.
    let watch = hub.watch(id);
    let items = match take_up(&store, work, again) {
        Ok(Some(items)) => items,
        Ok(None) => {
            hub.unwatch(id);
            return Ok(Some(finish(cluster, store, p, id, msg, None)));
        }
        Err(e) => {
            hub.unwatch(id);
            return Err(format!("cannot take up message {id}: {e}"));
        }
    };
    hub.enqueue(&items);
    Ok(Some(finish(cluster, store, p, id, msg, Some(watch))))
}

/// Waits until the deliveries of message `id` are finished (`watch`; `None` when they
/// already were), tells the node that received it how they ended ([`notice::send`]) and
/// then acknowledges it; asks for it again a second later when the notice could not be
/// sent (it is then found finished, and the notice sent again).
async fn finish(
    cluster: &Cluster,
    store: Store,
    p: u32,
    id: u64,
    msg: jetstream::Message,
    watch: Option<tokio::sync::oneshot::Receiver<crate::delivery::Finished>>,
) -> Result<(), String> {
    if let Some(watch) = watch {
        tokio::pin!(watch);
        let mut progress = tokio::time::interval(ACK_WAIT / 3);
        progress.tick().await;
        loop {
            tokio::select! {
                done = &mut watch => {
                    done.map_err(|_| "the delivery workers stopped".to_string())?;
                    break;
                }
                _ = progress.tick() => {
                    let _ = msg.ack_with(AckKind::Progress).await;
                }
            }
        }
    }
    match notice::send(cluster, &store, id).await {
        Ok(()) => {
            let seq = msg.info().map(|i| i.stream_sequence).unwrap_or_default();
            debug!(
                partition = p,
                id, seq, "Cluster work finished and acknowledged."
            );
            msg.double_ack()
                .await
                .map_err(|e| format!("cannot acknowledge message {id}: {e}"))
        }
        Err(e) => {
            warn!(partition = p, id, error = %e, "The completion notice of finished cluster work was not sent; asking for the work again.");
            msg.ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await
                .map_err(|e| format!("cannot hand message {id} back: {e}"))
        }
    }
}

/// The new outbox items to hand to the workers (empty when this node's outbox already holds
/// the message's deliveries), or `None` when they are all finished. Work marked `again` is
/// always added to the message's deliveries.
fn take_up(
    store: &Store,
    work: Work,
    again: bool,
) -> Result<Option<Vec<OutboxItem>>, crate::store::StoreError> {
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
        // Received here: routed now, by this node as the partition's owner; or new work on
        // a message this node holds.
        Some(r) if again || r.deliveries.is_empty() => {
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

#[cfg(test)]
mod tests {
    use super::super::testing::{connect, nats_server};
    use super::*;

    async fn stored(stream: &jetstream::stream::Stream) -> u64 {
        stream.get_info().await.expect("stream info").state.messages
    }

    /// Retention removes only what is both finished and older than the retention: a message
    /// not yet acknowledged stays whatever its age, and another partition is not touched.
    #[tokio::test]
    async fn retention_removes_finished_old_work_and_never_unfinished_work() {
        let server = nats_server();
        let js = jetstream::new(connect(&server.url).await);
        let stream = js
            .get_or_create_stream(super::super::leases::work_stream(1))
            .await
            .expect("work stream");
        assert_eq!(
            stream.cached_info().config.max_age,
            Duration::ZERO,
            "the stream itself drops nothing by age"
        );
        for (p, n) in [(0u32, 5), (1, 2)] {
            for i in 0..n {
                js.publish(subject_of(p), format!("work {p}/{i}").into())
                    .await
                    .expect("publish")
                    .await
                    .expect("stored");
            }
        }
        let consumer = take_over(&stream, 0).await.expect("consumer");
        let mut batch = consumer
            .fetch()
            .max_messages(3)
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .expect("fetch");
        let mut finished = 0;
        while let Some(m) = batch.next().await {
            m.expect("message").double_ack().await.expect("ack");
            finished += 1;
        }
        assert_eq!(finished, 3);
        assert_eq!(stored(&stream).await, 7);

        let day = Duration::from_secs(24 * 3600);
        assert_eq!(
            prune(&stream, 0, day).await,
            Ok(0),
            "finished but young: kept"
        );
        assert_eq!(
            prune(&stream, 1, Duration::ZERO).await,
            Ok(0),
            "no consumer yet"
        );
        assert_eq!(stored(&stream).await, 7);

        assert_eq!(prune(&stream, 0, Duration::ZERO).await, Ok(3));
        assert_eq!(
            stored(&stream).await,
            4,
            "two unfinished of partition 0, two of 1"
        );
        assert_eq!(
            prune(&stream, 0, Duration::ZERO).await,
            Ok(0),
            "nothing more"
        );

        // The consumer goes on with the first unfinished message.
        let mut next = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .expect("fetch");
        let m = next.next().await.expect("one more").expect("message");
        assert_eq!(&m.payload[..], b"work 0/3");
    }
}
