//! Durable delivery: one worker per destination takes from that destination's outbox.
//!
//! Each destination keeps a FIFO per partition (the patient by default): only the head of a
//! partition is ever in flight, so one patient's messages arrive in order, while different
//! partitions go in parallel up to `concurrency`. A failed head is retried with exponential
//! backoff and jitter (`Retry-After` honoured) and blocks only its own partition. After
//! `max_attempts` or `max_age_secs`, or at once for a permanent error, it moves to the dead
//! letters with its reason. A circuit breaker stops sending to a destination after repeated
//! failures and lets one trial delivery through after a cool-down.
//!
//! Appointments (`crate::store::ledger`): before an appointment payload goes to a destination
//! that keys appointments by slot (OpsPort: patient, day, start time), the worker reads what
//! the ledger says it sent last for that appointment; when that was a live appointment in
//! another slot, it first closes that slot (the old body with the closed status) and records
//! the closed slot, then sends the new body. The new body's ledger entry is written in the same
//! transaction as its delivered outcome. A crash between the two requests leaves the closed
//! slot in the ledger (or, before that write, closes it again: an upsert is idempotent), so the
//! destination ends with one live appointment either way. An appointment payload of an earlier
//! message than the one the ledger's entry was written by (an operator reprocessed an old S12
//! after its S13) is not sent: it is recorded as delivered with the reason, and the entry stays.
//!
//! Master data first: master-data records (clinics, doctors, services, locations, schedules)
//! share one partition per destination (`crate::routing::MASTER_PARTITION`), and an item of
//! any other partition that was queued after a master-data item still waiting (in flight,
//! retrying) waits too, without an attempt, until that item is delivered or dead-lettered.
//! So a doctor never overtakes the clinic it belongs to, and an appointment never reaches a
//! destination before the clinics and doctors sent ahead of it, even while the destination
//! refuses them for a while. Items queued before it are not held.
//!
//! A destination that batches whole partitions (Latrexa's scheduled upload) takes, for each
//! ready partition, its head and the items queued behind it (same kind, in order) into one
//! batch: several appointments of one patient go in one request. An item whose earlier item of
//! the same partition must be retried is retried too, after it, so the order holds. A worker
//! queues each outbox item once, though it may be handed over twice (read from the outbox at
//! start, and by the hub when its message was being stored meanwhile), so no batch carries an
//! item twice.
//!
//! Where to read: [`schedule`] holds the queues, timers, breaker and batching decisions of one
//! destination, without IO, and is unit tested on tokio's paused clock; `Worker::run` is
//! the loop that asks it what to send and when to wake, and does the IO; [`report`] pairs
//! each outcome's log line with its counters.
//!
//! Outcomes are settled in rounds: every delivery task that has finished when the worker wakes
//! is settled together, the schedule first (`Schedule::decide`: backoff, breaker, dead-letter
//! rules, no IO), then the store. Deliveries that need nothing but their attempt, record and outbox
//! item are written together (`Store::finish_delivered_all`: one record update per message);
//! the others (an appointment's ledger entry, a reference, a retry, a dead letter) one by one.
//! A waiter (`ack = "on_delivery"`) is told only after the store's commit covers the round.
//!
//! The free-space reserve (`crate::store::space`): while it refuses writes, a worker starts no
//! delivery (its outcome could not be recorded), and an outcome that arrives meanwhile waits in
//! memory, the write tried again every second until it is stored. So a full disk delays
//! deliveries but never loses an outcome nor sends a delivered item again; only a shutdown
//! while waiting leaves the item in the outbox, to be sent again at the next start (as after
//! a crash).

mod report;
mod schedule;

pub use schedule::backoff;

use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::store::appointments::LinkScope;
use crate::store::kind::ItemPayload;
use crate::store::ledger::{AppointmentRef, LedgerEntry, LedgerWrite};
use crate::store::outbox::{Attempt, DeliveryState, DeliveryStatus, OutboxItem};
use crate::store::{Status, Store, StoreError};
use bytes::Bytes;
use channels::destination::{
    Delivery, DeliveryConfig, DeliveryError, Destination, DestinationConfig,
};
use report::Report;
use schedule::{Decision, DeliveryResult, Fetched, Schedule, Settled};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument, Span};

/// How often a worker looks again whether the free-space reserve lets it write.
const RESERVE_RECHECK: Duration = Duration::from_secs(1);

/// How long an item whose outcome could not be written waits before it is sent again.
const UNWRITTEN_RETRY: Duration = Duration::from_secs(5);

/// At most this many hand-overs are taken in one wake-up of a worker (the rest at the next).
const HANDOVERS_PER_WAKE: usize = 4096;

/// The span of one message, named `message`, with its id and channel (docs/DESIGN.md,
/// "Logs"). Ingest opens it at receipt, without the id, and records the id (`message_id`) and
/// the type (`message_type`, the metric label, such as `ADT_A04`) once it knows them; a
/// delivery worker opens one with the same name, id and channel around each attempt of each
/// item of the message, and records the type the item kept (`OutboxItem::message_type`), so a search
/// for one message id finds its receipt and every delivery. The fields name the message,
/// never its content.
///
/// The span is at level ERROR, not INFO: a span below the configured log level is not
/// created, and the warnings and errors of an engine logging at `warn` would lose the id.
pub(crate) fn message_span(message_id: Option<u64>, channel: &str) -> tracing::Span {
    tracing::error_span!(
        "message",
        message_id,
        channel,
        message_type = tracing::field::Empty
    )
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// How a message ended, for waiters (`ack = "on_delivery"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// Every destination confirmed.
    Delivered,
    /// At least one delivery is in the dead letters; the reason of the last one.
    Failed(String),
}

impl Finished {
    /// How a message with `status` and `deliveries` ended; `None` while it has not.
    pub fn of(status: Status, deliveries: &[DeliveryState]) -> Option<Finished> {
        match status {
            Status::Delivered | Status::Filtered => Some(Finished::Delivered),
            Status::Failed => Some(Finished::Failed(
                deliveries
                    .iter()
                    .filter(|d| d.status == DeliveryStatus::DeadLetter)
                    .map(|d| d.detail.clone())
                    .find(|d| !d.is_empty())
                    .unwrap_or_else(|| "dead letter".into()),
            )),
            Status::Received | Status::Rejected | Status::Routed | Status::Retrying => None,
        }
    }
}

type Watchers = Arc<Mutex<HashMap<u64, Vec<oneshot::Sender<Finished>>>>>;

/// The delivery workers of every destination, started and stopped per channel.
pub struct Hub {
    workers: std::sync::RwLock<HashMap<String, WorkerHandle>>,
    watchers: Watchers,
    store: Store,
    metrics: Metrics,
    events: EventBus,
    shutdown: CancellationToken,
}

/// One running worker: how to reach it and how to stop it.
struct WorkerHandle {
    tx: mpsc::UnboundedSender<(String, u64, u64)>,
    stop: CancellationToken,
    join: tokio::task::JoinHandle<()>,
}

impl Hub {
    /// A hub without workers; [`Hub::start_channel`] adds a channel's.
    pub fn new(
        store: Store,
        metrics: Metrics,
        events: EventBus,
        shutdown: CancellationToken,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            workers: std::sync::RwLock::default(),
            watchers: Arc::default(),
            store,
            metrics,
            events,
            shutdown,
        })
    }

    /// Builds a channel's destinations and starts their workers; each worker runs a health
    /// check first and takes up what its outbox holds. Nothing starts unless every
    /// destination builds.
    ///
    /// # Errors
    ///
    /// `(channel/destination, reason)` when a destination cannot be built.
    pub fn start_channel(
        &self,
        channel: &str,
        destinations: &[DestinationConfig],
    ) -> Result<(), (String, String)> {
        let mut built = Vec::new();
        for config in destinations {
            let name = format!("{channel}/{}", config.name());
            let dicom = crate::topology::source::dicom_state(&self.store, &self.metrics);
            let dest = config
                .build_with(Some(dicom))
                .map_err(|e| (name.clone(), e))?;
            built.push((name, config, dest));
        }
        let mut workers = self
            .workers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (name, config, dest) in built {
            let (tx, rx) = mpsc::unbounded_channel();
            let worker = Worker {
                name: name.clone(),
                channel: channel.to_string(),
                dest_name: config.name().to_string(),
                dest: Arc::new(dest),
                cfg: config.delivery().clone(),
                store: self.store.clone(),
                metrics: self.metrics.clone(),
                watchers: self.watchers.clone(),
                report: Report::new(
                    &self.metrics,
                    self.events.clone(),
                    &name,
                    channel,
                    config.name(),
                ),
            };
            let stop = self.shutdown.child_token();
            let join = tokio::spawn(worker.run(rx, stop.clone()));
            workers.insert(name, WorkerHandle { tx, stop, join });
        }
        Ok(())
    }

    /// Stops the workers of a channel and waits for them (deliveries in flight get a few
    /// seconds; the rest stay in the outbox for the next worker). Their gauges are removed.
    pub async fn stop_channel(&self, channel: &str) {
        let prefix = format!("{channel}/");
        let stopped: Vec<(String, WorkerHandle)> = {
            let mut workers = self
                .workers
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let names: Vec<String> = workers
                .keys()
                .filter(|n| n.starts_with(&prefix))
                .cloned()
                .collect();
            names
                .into_iter()
                .filter_map(|n| workers.remove(&n).map(|h| (n, h)))
                .collect()
        };
        for (name, h) in stopped {
            h.stop.cancel();
            let _ = h.join.await;
            let dest = &name[prefix.len()..];
            for g in [
                &self.metrics.destination_up,
                &self.metrics.outbox_depth,
                &self.metrics.outbox_oldest_age,
                &self.metrics.dead_letters_outstanding,
            ] {
                let _ = g.remove_label_values(&[channel, dest]);
            }
        }
    }

    /// Hands newly stored outbox items to their workers.
    pub fn enqueue(&self, items: &[OutboxItem]) {
        let workers = self
            .workers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for i in items {
            match workers.get(&i.destination) {
                Some(w) => {
                    let _ = w.tx.send((i.partition.clone(), i.seq, i.created_at_ms));
                }
                None => {
                    warn!(destination = %i.destination, "No worker for destination; the item waits in the outbox.")
                }
            }
        }
    }

    /// A receiver told when message `id` is delivered everywhere or has failed.
    pub fn watch(&self, id: u64) -> oneshot::Receiver<Finished> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.watchers.lock() {
            w.entry(id).or_default().push(tx);
        }
        rx
    }

    /// Tells the watchers of message `id` how it ended, for an end learnt from elsewhere
    /// than this node's workers (in cluster mode, the partition owner's completion notice).
    /// The caller has made that end durable in the store first, as the workers do.
    pub fn tell(&self, id: u64, finished: &Finished) {
        let senders = match self.watchers.lock() {
            Ok(mut w) => w.remove(&id).unwrap_or_default(),
            Err(_) => return,
        };
        for s in senders {
            let _ = s.send(finished.clone());
        }
    }

    /// Forgets the watchers of `id` (after a timeout).
    pub fn unwatch(&self, id: u64) {
        if let Ok(mut w) = self.watchers.lock() {
            w.remove(&id);
        }
    }

    /// The live event stream.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// The store the workers use.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

struct Worker {
    name: String,
    channel: String,
    dest_name: String,
    dest: Arc<Destination>,
    cfg: DeliveryConfig,
    store: Store,
    metrics: Metrics,
    watchers: Watchers,
    /// The log line, series and live event of each outcome.
    report: Report,
}

/// The worker's periodic checks: the destination's health (once at start, then while it is
/// down) and the count of its dead letters.
struct Checks {
    health_tx: mpsc::Sender<Result<(), String>>,
    health_rx: mpsc::Receiver<Result<(), String>>,
    /// A check is running.
    checking: bool,
    /// The last check's result, to log changes only.
    healthy: Option<bool>,
    every: Duration,
    next_health: Instant,
    next_dead_count: Instant,
}

/// Queues `first` and everything else handed over meanwhile, in one wake-up: under load the
/// items of many messages wait here, and each wake-up reads the ready heads.
fn take_handovers(
    schedule: &mut Schedule,
    first: (String, u64, u64),
    rx: &mut mpsc::UnboundedReceiver<(String, u64, u64)>,
) {
    let mut next = Some(first);
    let mut taken = 0;
    while let Some((p, seq, created)) = next.take() {
        schedule.arrived(p, seq, created);
        taken += 1;
        if taken < HANDOVERS_PER_WAKE {
            next = rx.try_recv().ok();
        }
    }
}

/// What one delivery task did: one entry per item (several for a batching destination),
/// with the span of the item's message for this attempt (its outcome is settled in it), and
/// how long it took.
type Outcome = (
    Vec<(
        String,
        OutboxItem,
        Result<channels::destination::Receipt, DeliveryError>,
        Span,
    )>,
    Duration,
);

/// What a delivery task needs besides the destination: the store and the destination's
/// name in it (for the appointment ledger) and the slot counter.
#[derive(Clone)]
struct LedgerContext {
    store: Store,
    name: String,
    /// The channel, for the messages' spans.
    channel: String,
    slots_closed: prometheus::IntCounter,
    unknown_moves: prometheus::IntCounter,
}

/// Sends the items of one task: one at a time, or together to a batching destination.
/// An item whose rendering failed at routing is never sent: it fails permanently with its
/// mapping error. An appointment whose previous slot must be closed first fails with the
/// close's error when that fails. Each item's steps run in the span of its message
/// ([`message_span`]), and so does the request of a task of one item; a batch's request
/// carries several messages and runs in none.
async fn send_items(
    dest: Arc<Destination>,
    ledger: LedgerContext,
    items: Vec<(String, OutboxItem)>,
) -> Outcome {
    let started = Instant::now();
    let mut out = Vec::with_capacity(items.len());
    let mut to_send = Vec::new();
    // Partitions with an item that must be tried again: their later items wait behind it
    // (a batch may hold several items of one partition, in order).
    let mut held: HashSet<String> = HashSet::new();
    for (p, mut item) in items {
        let span = message_span(Some(item.message_id), &ledger.channel);
        if !item.message_type.is_empty() {
            span.record("message_type", item.message_type.as_str());
        }
        if held.contains(&p) {
            let e = DeliveryError::retry("an earlier item of the same partition is retried first");
            out.push((p, item, Err(e), span));
            continue;
        }
        match span.in_scope(|| superseded(&ledger, &item)) {
            Ok(Some(receipt)) => {
                out.push((p, item, Ok(receipt), span));
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                held.insert(p.clone());
                out.push((p, item, Err(e), span));
                continue;
            }
        }
        if let Err(e) = span.in_scope(|| link_remote_id(&dest, &ledger, &mut item)) {
            held.insert(p.clone());
            out.push((p, item, Err(e), span));
            continue;
        }
        if item.payload == ItemPayload::MappingFailed {
            let e = DeliveryError::permanent(item.last_error.clone());
            out.push((p, item, Err(e), span));
        } else if let Some(known) = reference_known(&ledger, &item) {
            out.push((p, item, known, span));
        } else if let Err(e) = close_previous_slot(&dest, &ledger, &item)
            .instrument(span.clone())
            .await
        {
            if e.is_retryable() {
                held.insert(p.clone());
            }
            out.push((p, item, Err(e), span));
        } else {
            to_send.push((p, item, span));
        }
    }
    let deliveries: Vec<Delivery> = to_send
        .iter()
        .map(|(_, item, _)| Delivery {
            body: Bytes::from(item.body.clone()),
            content_type: item.content_type.clone(),
            idempotency_key: item.idempotency_key.clone(),
            control_id: item.control_id.clone(),
            path: item.path.clone(),
        })
        .collect();
    let results = match (deliveries.as_slice(), to_send.as_slice()) {
        ([], _) => Vec::new(),
        ([one], [(_, _, span)]) => vec![dest.deliver(one).instrument(span.clone()).await],
        (many, _) => dest.deliver_batch(many).await,
    };
    // (`held` as filled before the request names only partitions whose failed item came
    // after every item of theirs that was sent.)
    let mut failed: HashSet<String> = HashSet::new();
    for ((p, item, span), r) in to_send.into_iter().zip(results) {
        // A later item of a partition whose earlier item failed went in the same request: it
        // is retried after that one, so the destination sees the partition's order again.
        let r = match r {
            Ok(_) if failed.contains(&p) => Err(DeliveryError::retry(
                "an earlier item of the same partition is retried first",
            )),
            Err(e) if e.is_retryable() => {
                failed.insert(p.clone());
                Err(e)
            }
            other => other,
        };
        out.push((p, item, r, span));
    }
    (out, started.elapsed())
}

/// The outcome of an appointment payload of an earlier message than the one the ledger's
/// entry was written by (an operator reprocessed an old message): delivered without a
/// request, so the destination is not moved back to an older state. `None` to send it.
///
/// # Errors
///
/// A retryable error when the ledger cannot be read.
fn superseded(
    cx: &LedgerContext,
    item: &OutboxItem,
) -> Result<Option<channels::destination::Receipt>, DeliveryError> {
    let Some(appointment) = &item.appointment else {
        return Ok(None);
    };
    let entry = cx
        .store
        .ledger_get(&cx.name, appointment)
        .map_err(|e| DeliveryError::retry(format!("appointment ledger: {e}")))?;
    Ok(entry
        .filter(|e| e.message_id > item.message_id)
        .map(|e| channels::destination::Receipt {
            status: None,
            detail: format!(
                "not sent: message {} was applied to this appointment after this one",
                e.message_id
            ),
            answer: None,
        }))
}

/// Names, in the body of an appointment for a destination that pairs appointments with its
/// own ids (Latrexa), the id the appointment already has there, as the one model of the
/// appointment answers it ([`Store::appointment_link`]): the id an earlier answer gave (the
/// ledger), else the online booking's Latrexa id when the linked bookings channel took it
/// (the HIS echoing a booking it wrote, named by its placer id or by its own id alone). The
/// HIS id the message names for the booking is recorded in the same transaction, so that the
/// bookings channel confirms with it and puts it in SCH-2 of its next SIU. The stored body is
/// not changed; a retry does the same.
///
/// # Errors
///
/// A retryable error when the store cannot be read or written.
fn link_remote_id(
    dest: &Destination,
    cx: &LedgerContext,
    item: &mut OutboxItem,
) -> Result<(), DeliveryError> {
    let Some(appointment) = &item.appointment else {
        return Ok(());
    };
    if !matches!(dest, Destination::Latrexa(_)) {
        // Only Latrexa pairs appointments with ids of its own.
        return Ok(());
    }
    let link = cx
        .store
        .appointment_link(
            LinkScope {
                destination: &cx.name,
                bookings_channel: dest.bookings_channel(),
            },
            appointment,
        )
        .map_err(|e| DeliveryError::retry(format!("appointment ledger: {e}")))?;
    if link.learnt {
        debug!(destination = %cx.name, "The HIS named its id of an online booking.");
    }
    if let Some(body) = link
        .latrexa_id
        .and_then(|id| dest.with_remote_id(&item.body, &id))
    {
        item.body = body;
    }
    Ok(())
}

/// The outcome of a reference upsert (a clinic or doctor an appointment names) that the
/// destination already had from this engine: delivered without a request, so that the
/// appointment's abbreviated record does not overwrite the master record. `None` to send it.
fn reference_known(
    cx: &LedgerContext,
    item: &OutboxItem,
) -> Option<Result<channels::destination::Receipt, DeliveryError>> {
    if item.master {
        // The master record itself: always sent (it is what the reference defers to).
        return None;
    }
    let reference = item.reference.as_deref()?;
    match cx.store.reference_sent(&cx.name, reference) {
        Ok(true) => Some(Ok(channels::destination::Receipt {
            status: None,
            detail: "already sent; not overwritten by an appointment's reference".into(),
            answer: None,
        })),
        Ok(false) => None,
        Err(e) => Some(Err(DeliveryError::retry(format!(
            "appointment ledger: {e}"
        )))),
    }
}

/// Closes the slot the ledger says `item`'s appointment held, when `item` moves it to another
/// slot of a destination that keys appointments by slot, and records the closed slot.
///
/// # Errors
///
/// The close's own failure (retried like any delivery), or a retryable error when the ledger
/// cannot be read or written.
async fn close_previous_slot(
    dest: &Destination,
    cx: &LedgerContext,
    item: &OutboxItem,
) -> Result<(), DeliveryError> {
    let Some(appointment) = &item.appointment else {
        return Ok(());
    };
    let Some(next) = dest.ledger_view(&item.body) else {
        return Ok(());
    };
    let previous = cx
        .store
        .ledger_get(&cx.name, appointment)
        .map_err(|e| DeliveryError::retry(format!("appointment ledger: {e}")))?;
    let Some(previous) = previous else {
        if appointment.moved {
            // An S13 for an appointment this engine never sent (booked before it, or its last
            // message pruned): the SIU names only the new slot, and OpsPort has no read
            // endpoint, so an old slot it may hold cannot be found; it stays as it is.
            cx.unknown_moves.inc();
            warn!(destination = %cx.name, "A reschedule of an appointment this destination was never sent: its new slot is upserted, an old slot the destination may hold is not closed.");
        }
        return Ok(());
    };
    if previous.closed || previous.slot.is_empty() || previous.slot == next.slot {
        return Ok(());
    }
    let Some(close) = dest.close_slot(previous.body.as_bytes()) else {
        return Ok(());
    };
    dest.deliver(&close).await.map_err(|e| DeliveryError {
        reason: format!("closing the appointment's previous slot: {}", e.reason),
        ..e
    })?;
    let status = dest
        .ledger_view(&close.body)
        .map(|v| v.status)
        .unwrap_or_default();
    let write = LedgerWrite {
        destination: cx.name.clone(),
        entry: LedgerEntry {
            appointment: merged(appointment, &previous.appointment),
            slot: previous.slot,
            status,
            closed: true,
            remote_id: previous.remote_id,
            body: String::from_utf8_lossy(&close.body).into_owned(),
            message_id: item.message_id,
            updated_at_ms: now_ms(),
        },
    };
    // Durable before the new slot is tried, so that a crash after this point does not
    // close the old slot a second time (harmless, but a request more) nor forget it.
    cx.store
        .ledger_put(&write)
        .map_err(|e| DeliveryError::retry(format!("appointment ledger: {e}")))?;
    cx.store
        .commit()
        .await
        .map_err(|e| DeliveryError::retry(format!("appointment ledger: {e}")))?;
    cx.slots_closed.inc();
    debug!(destination = %cx.name, "Closed the previous slot of a rescheduled appointment.");
    Ok(())
}

/// The ids of `now`, completed by those the ledger knew (an id learnt earlier is kept).
fn merged(now: &AppointmentRef, before: &AppointmentRef) -> AppointmentRef {
    AppointmentRef {
        placer_id: now.placer_id.clone().or_else(|| before.placer_id.clone()),
        filler_id: now.filler_id.clone().or_else(|| before.filler_id.clone()),
        moved: false,
    }
}

impl Worker {
    /// The ledger context handed to delivery tasks.
    fn ledger_context(&self) -> LedgerContext {
        LedgerContext {
            store: self.store.clone(),
            name: self.name.clone(),
            channel: self.channel.clone(),
            slots_closed: self
                .metrics
                .slots_closed
                .with_label_values(&[self.channel.as_str(), self.dest_name.as_str()]),
            unknown_moves: self
                .metrics
                .unknown_reschedules
                .with_label_values(&[self.channel.as_str(), self.dest_name.as_str()]),
        }
    }

    /// The ledger entry of a delivered appointment payload, or `None` for anything else.
    fn ledger_write(
        &self,
        item: &OutboxItem,
        receipt: &channels::destination::Receipt,
    ) -> Option<LedgerWrite> {
        let appointment = item.appointment.as_ref()?;
        let view = self.dest.ledger_view(&item.body)?;
        let before = self
            .store
            .ledger_get(&self.name, appointment)
            .ok()
            .flatten();
        if before
            .as_ref()
            .is_some_and(|b| b.message_id > item.message_id)
        {
            // Superseded (see `superseded`): the entry stays the later message's.
            return None;
        }
        Some(LedgerWrite {
            destination: self.name.clone(),
            entry: LedgerEntry {
                appointment: before.as_ref().map_or_else(
                    || appointment.clone(),
                    |b| merged(appointment, &b.appointment),
                ),
                slot: view.slot,
                status: view.status,
                closed: view.closed,
                remote_id: self
                    .dest
                    .remote_id(receipt)
                    .or_else(|| before.and_then(|b| b.remote_id)),
                body: String::from_utf8_lossy(&item.body).into_owned(),
                message_id: item.message_id,
                updated_at_ms: now_ms(),
            },
        })
    }

    /// Runs the worker until `shutdown` or until the hub drops `rx`: reads the outbox, then
    /// asks the schedule what to send and when to wake, and does the IO (sending, writing
    /// outcomes, health checks, gauges).
    async fn run(
        self,
        mut rx: mpsc::UnboundedReceiver<(String, u64, u64)>,
        shutdown: CancellationToken,
    ) {
        self.metrics
            .destination_started(&self.channel, &self.dest_name);
        self.refresh_dead_letters();
        let mut checks = self.start_checks();
        let mut schedule = Schedule::new(
            self.cfg.clone(),
            self.dest.batching(),
            self.dest.batches_whole_partitions(),
        );
        self.resume(&mut schedule);
        let mut tasks: JoinSet<Outcome> = JoinSet::new();
        let mut paused = false;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let may_start = self.reserve_ok(&mut paused);
            let now = Instant::now();
            for items in schedule.next(now, may_start, &mut |seq| self.fetch(seq)) {
                tasks.spawn(send_items(self.dest.clone(), self.ledger_context(), items));
            }
            let wake = match schedule.wake_at(now) {
                // While the reserve refuses writes, look again every `RESERVE_RECHECK`.
                w if paused => {
                    Some(w.map_or(now + RESERVE_RECHECK, |w| w.min(now + RESERVE_RECHECK)))
                }
                w => w,
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                msg = rx.recv() => match msg {
                    Some(first) => take_handovers(&mut schedule, first, &mut rx),
                    None => break,
                },
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    self.settle_tasks(done, &mut tasks, &mut schedule, &shutdown).await;
                }
                _ = sleep_until_opt(wake) => {}
                Some(result) = checks.health_rx.recv() => {
                    self.health_result(result, &mut checks, &mut schedule);
                }
                _ = tick.tick() => self.tick(&mut checks, &schedule),
            }
        }
        // Let deliveries in flight finish briefly; the rest stay in the outbox for next time.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok((items, took))) = tasks.join_next().await {
                let outcomes = items
                    .into_iter()
                    .map(|(p, item, result, span)| (p, item, result, took, span))
                    .collect();
                self.settle_round(outcomes, &mut schedule, &shutdown).await;
            }
        })
        .await;
    }

    /// Settles, in one round, the task that ended (`done`) and every other that has ended
    /// by now; the schedule learns which partitions are free and how each item ended.
    async fn settle_tasks(
        &self,
        done: Result<Outcome, tokio::task::JoinError>,
        tasks: &mut JoinSet<Outcome>,
        schedule: &mut Schedule,
        shutdown: &CancellationToken,
    ) {
        let mut outcomes = Vec::new();
        let mut next = Some(done);
        while let Some(done) = next.take() {
            let (items, took) = done.unwrap_or_default();
            schedule.task_ended(items.iter().map(|(p, _, _, _)| p.as_str()));
            for (p, item, result, span) in items {
                self.report.duration.observe(took.as_secs_f64());
                outcomes.push((p, item, result, took, span));
            }
            next = tasks.try_join_next();
        }
        let settled = self.settle_round(outcomes, schedule, shutdown).await;
        schedule.settled(settled);
    }

    /// The first health check, started now, and the times of the periodic checks.
    fn start_checks(&self) -> Checks {
        let every = Duration::from_secs(self.cfg.healthcheck_interval_secs.max(1));
        let (health_tx, health_rx) = mpsc::channel(1);
        self.spawn_healthcheck(&health_tx);
        let now = Instant::now();
        Checks {
            health_tx,
            health_rx,
            checking: true,
            healthy: None,
            every,
            next_health: now + every,
            next_dead_count: now + Duration::from_secs(crate::metrics::DEAD_LETTERS_REFRESH_SECS),
        }
    }

    /// Once a second: a health check while the destination is down, the queue gauges, and
    /// now and then the dead letters counted again.
    fn tick(&self, checks: &mut Checks, schedule: &Schedule) {
        let now = Instant::now();
        if !checks.checking && self.report.up.get() == 0 && now >= checks.next_health {
            checks.checking = true;
            self.spawn_healthcheck(&checks.health_tx);
        }
        self.report
            .queue(schedule.depth(), schedule.oldest_created_ms(), now_ms());
        if now >= checks.next_dead_count {
            self.refresh_dead_letters();
            checks.next_dead_count =
                now + Duration::from_secs(crate::metrics::DEAD_LETTERS_REFRESH_SECS);
        }
    }

    /// Queues what the outbox holds for this destination, each item at its next attempt.
    fn resume(&self, schedule: &mut Schedule) {
        let items = match self.store.outbox_items(&self.name) {
            Ok(items) => items,
            Err(e) => {
                error!(destination = %self.name, error = %e, "Cannot read the outbox; deliveries wait for a restart.");
                return;
            }
        };
        let (now, wall) = (Instant::now(), now_ms());
        let mut waiting = 0;
        for item in items {
            // An item without its message belongs to a message being written right now
            // (`Store::put` writes the items first; ingest may already run): it stays in the
            // outbox and comes through `Hub::enqueue` once its message is durable, never
            // before. Items a crash left without their message were removed when the store
            // opened (`Store::open`).
            match self.store.contains_message(item.message_id) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => {
                    warn!(destination = %self.name, error = %e, "Cannot check an outbox item's message; taking the item.")
                }
            }
            let due = now + Duration::from_millis(item.next_attempt_ms.saturating_sub(wall));
            if schedule.resume(item.partition, item.seq, item.created_at_ms, due) {
                waiting += 1;
            }
        }
        if waiting > 0 {
            info!(destination = %self.name, waiting, "Resuming deliveries from the outbox.");
        }
    }

    /// Reads an outbox item for the schedule.
    fn fetch(&self, seq: u64) -> Fetched {
        match self.store.outbox_get(&self.name, seq) {
            Ok(Some(item)) => Fetched::Item(item),
            Ok(None) => Fetched::Gone,
            Err(e) => {
                error!(destination = %self.name, error = %e, "Cannot read an outbox item; retrying in 5 s.");
                Fetched::Unreadable
            }
        }
    }

    /// Sets the outstanding dead letters gauge from the store.
    fn refresh_dead_letters(&self) {
        match self.store.dead_letter_count(&self.name) {
            Ok(n) => self.report.dead_letters_counted(n),
            Err(e) => {
                warn!(destination = %self.name, error = %e, "Cannot count the dead letters.")
            }
        }
    }

    /// Whether deliveries may start: not while the free-space reserve refuses writes, since
    /// their outcomes could not be recorded. Logs when that changes.
    fn reserve_ok(&self, paused: &mut bool) -> bool {
        let ok = self.store.reserve_available().is_ok();
        if ok == *paused {
            *paused = !ok;
            if ok {
                info!(destination = %self.name, "Free disk space is back above the reserve; deliveries resume.");
            } else {
                warn!(destination = %self.name, "Free disk space is under the reserve; deliveries paused until it is back.");
            }
        }
        ok
    }

    /// Runs a store write of a delivery's outcome. While the free-space reserve refuses it,
    /// the outcome waits here and the write is tried again every [`RESERVE_RECHECK`] (the
    /// worker starts nothing meanwhile); after `shutdown` the refusal is returned.
    async fn write<T>(
        &self,
        shutdown: &CancellationToken,
        write: impl Fn() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut waited = false;
        loop {
            match write() {
                Err(StoreError::DiskFull { .. }) if !shutdown.is_cancelled() => {
                    if !waited {
                        warn!(destination = %self.name, "Free disk space is under the reserve; the outcome of a delivery waits until it can be written.");
                        waited = true;
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep(RESERVE_RECHECK) => {}
                    }
                }
                other => {
                    if waited && other.is_ok() {
                        info!(destination = %self.name, "The outcome of a delivery was written once disk space came back.");
                    }
                    return other;
                }
            }
        }
    }

    /// Runs the destination's health check in its own task; the result comes back on `tx`.
    fn spawn_healthcheck(&self, tx: &mpsc::Sender<Result<(), String>>) {
        let dest = self.dest.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(dest.healthcheck().await).await;
        });
    }

    /// Applies a health check result. A failed check reports the destination down. A good
    /// one reports it up, except while the circuit breaker is open with deliveries waiting:
    /// then the breaker's trial delivery decides (a peer can accept connections and still
    /// refuse every delivery). With nothing waiting, a good check closes the breaker.
    fn health_result(
        &self,
        result: Result<(), String>,
        checks: &mut Checks,
        schedule: &mut Schedule,
    ) {
        checks.checking = false;
        checks.next_health = Instant::now() + checks.every;
        let first = checks.healthy != Some(result.is_ok());
        checks.healthy = Some(result.is_ok());
        match result {
            Ok(()) => self.report.health_passed(first, schedule.health_passed()),
            Err(e) => self.report.health_failed(first, &e),
        }
    }

    /// Settles the outcomes of a round (every delivery task that finished by one wake-up):
    /// the schedule decides each ([`Schedule::decide`]), the deliveries that need nothing
    /// but their attempt, record and outbox item are written together
    /// ([`Store::finish_delivered_all`]), the others one by one. Returns, per item, its
    /// partition, seq and what its queue should do. Waiters are told once the outcomes are
    /// durable ([`Worker::tell_when_durable`]).
    async fn settle_round(
        &self,
        outcomes: Vec<(String, OutboxItem, DeliveryResult, Duration, Span)>,
        schedule: &mut Schedule,
        shutdown: &CancellationToken,
    ) -> Vec<(String, u64, Settled)> {
        let mut settled = Vec::with_capacity(outcomes.len());
        let mut plain = Vec::new();
        let mut ended = Vec::new();
        for (p, mut item, result, took, span) in outcomes {
            let seq = item.seq;
            // In the span of the item's message; `None` for a delivery written with the
            // round's others (`finish_plain`).
            let one = async {
                let now = Instant::now();
                let (decision, attempt, moved) =
                    schedule.decide(&mut item, result, took, now_ms(), now);
                self.report.breaker(
                    moved,
                    schedule.breaker().failures,
                    self.cfg.breaker_cooldown_secs,
                );
                let outcome = match decision {
                    Decision::Delivered(receipt) => {
                        self.report.delivered(&item);
                        match self.ledger_write(&item, &receipt) {
                            None if item.reference.is_none() => {
                                plain.push((p, item, attempt, receipt.detail));
                                return None;
                            }
                            ledger => {
                                let detail = receipt.detail;
                                let written = self
                                    .finish(&item, &attempt, (true, &detail), ledger, shutdown)
                                    .await;
                                settled_as(written, &item, &detail, &mut ended)
                            }
                        }
                    }
                    Decision::Retry { error, delay } => {
                        self.report.retrying(&item, &error, delay);
                        self.retry(&item, &attempt, shutdown).await;
                        Settled::RetryAt(now + delay)
                    }
                    Decision::DeadLetter { reason } => {
                        self.report.dead_letter(&item, &reason);
                        let written = self
                            .finish(&item, &attempt, (false, &reason), None, shutdown)
                            .await;
                        settled_as(written, &item, &reason, &mut ended)
                    }
                };
                Some((p, outcome))
            };
            if let Some((p, outcome)) = one.instrument(span).await {
                settled.push((p, seq, outcome));
            }
        }
        settled.extend(self.finish_plain(plain, shutdown, &mut ended).await);
        self.tell_when_durable(ended);
        settled
    }

    /// Records a failed attempt that will be tried again, and its new schedule.
    async fn retry(&self, item: &OutboxItem, attempt: &Attempt, shutdown: &CancellationToken) {
        let recorded = self
            .write(shutdown, || {
                self.store
                    .record_attempt(item, attempt)
                    .and_then(|()| self.store.reschedule(item))
            })
            .await;
        if let Err(se) = recorded {
            error!(destination = %self.name, error = %se, "Cannot record the retry.");
        }
    }

    /// Writes one finished delivery with its ledger entry or reference, or a dead letter;
    /// returns its message's new status.
    async fn finish(
        &self,
        item: &OutboxItem,
        attempt: &Attempt,
        (delivered, detail): (bool, &str),
        ledger: Option<LedgerWrite>,
        shutdown: &CancellationToken,
    ) -> Result<Status, StoreError> {
        self.write(shutdown, || {
            self.store.record_attempt(item, attempt).and_then(|()| {
                self.store
                    .finish_with_ledger(item, delivered, detail, ledger.as_ref())
            })
        })
        .await
    }

    /// Writes the deliveries of a round that need nothing but their attempt, record and
    /// outbox item, together; returns, per item, its partition, seq and what its queue
    /// should do.
    async fn finish_plain(
        &self,
        plain: Vec<(String, OutboxItem, Attempt, String)>,
        shutdown: &CancellationToken,
        ended: &mut Vec<(u64, Finished)>,
    ) -> Vec<(String, u64, Settled)> {
        if plain.is_empty() {
            return Vec::new();
        }
        let done: Vec<(&OutboxItem, &Attempt, &str)> = plain
            .iter()
            .map(|(_, item, attempt, detail)| (item, attempt, detail.as_str()))
            .collect();
        let written = self
            .write(shutdown, || self.store.finish_delivered_all(&done))
            .await;
        drop(done);
        match written {
            Ok(statuses) => plain
                .into_iter()
                .zip(statuses)
                .map(|((p, item, _, detail), status)| {
                    ended.extend(ending(&item, status, &detail));
                    (p, item.seq, Settled::Done)
                })
                .collect(),
            Err(e) => {
                error!(destination = %self.name, error = %e, items = plain.len(), "Cannot record finished deliveries; they will be retried.");
                plain
                    .into_iter()
                    .map(|(p, item, _, _)| {
                        (
                            p,
                            item.seq,
                            Settled::RetryAt(Instant::now() + UNWRITTEN_RETRY),
                        )
                    })
                    .collect()
            }
        }
    }

    /// Tells the waiters of messages that ended (`ack = "on_delivery"`) once what the round
    /// wrote is durable: their answer promises the outcome. The worker does not wait for it.
    fn tell_when_durable(&self, ended: Vec<(u64, Finished)>) {
        if ended.is_empty() {
            return;
        }
        let waiting: Vec<(Vec<oneshot::Sender<Finished>>, Finished)> = match self.watchers.lock() {
            Ok(mut w) => ended
                .into_iter()
                .filter_map(|(id, f)| w.remove(&id).map(|senders| (senders, f)))
                .collect(),
            Err(_) => return,
        };
        if waiting.is_empty() {
            return;
        }
        let store = self.store.clone();
        let name = self.name.clone();
        tokio::spawn(async move {
            if let Err(e) = store.commit().await {
                // The waiters are dropped unanswered: their senders get no positive answer.
                error!(destination = %name, error = %e, "Cannot make finished deliveries durable; their senders are not told.");
                return;
            }
            for (senders, f) in waiting {
                for s in senders {
                    let _ = s.send(f.clone());
                }
            }
        });
    }
}

/// What the queue does with an item whose end (delivered or dead letter) was written or
/// not; a message that ended with it is noted for its waiters.
fn settled_as(
    written: Result<Status, StoreError>,
    item: &OutboxItem,
    detail: &str,
    ended: &mut Vec<(u64, Finished)>,
) -> Settled {
    match written {
        Ok(status) => {
            ended.extend(ending(item, status, detail));
            Settled::Done
        }
        Err(e) => {
            // The item stays in the outbox: it will be sent again (at least once).
            error!(destination = %item.destination, error = %e, "Cannot record a finished delivery; it will be retried.");
            Settled::RetryAt(Instant::now() + UNWRITTEN_RETRY)
        }
    }
}

/// The end of a message for its waiters, when `status` is one.
fn ending(item: &OutboxItem, status: Status, detail: &str) -> Option<(u64, Finished)> {
    match status {
        Status::Delivered => Some((item.message_id, Finished::Delivered)),
        Status::Failed => Some((item.message_id, Finished::Failed(detail.to_string()))),
        _ => None,
    }
}

/// Sleeps until `at`; forever without one.
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    //! These tests run a worker against a real store (sled, with its commits) and real
    //! destinations on a multi-thread runtime, where tokio's clock cannot be paused (and a
    //! paused clock would jump past a timeout while a commit or a request is under way), so
    //! their bounds and waits are on the wall clock, and each waits for the outcome it checks
    //! (`Hub::watch`) rather than polling where the worker announces it. The schedule's
    //! timing is tested on the paused clock (`schedule`'s tests).
    use super::*;

    use crate::config::Durability;
    use crate::store::kind::Outcome;
    use crate::store::outbox::attach;
    use crate::store::tests::record;
    use channels::file::FileConfig;

    /// A hub over `store`, not stopped by anything but the test's end.
    fn hub_of(store: &Store, metrics: &Metrics) -> Arc<Hub> {
        Hub::new(
            store.clone(),
            metrics.clone(),
            EventBus::default(),
            CancellationToken::new(),
        )
    }

    /// The file destination `files` writing `.hl7` files into `folder`.
    fn files(
        folder: &std::path::Path,
        batch_size: usize,
        delivery: DeliveryConfig,
    ) -> DestinationConfig {
        DestinationConfig::File(FileConfig {
            name: "files".into(),
            folder: folder.to_path_buf(),
            extension: "hl7".into(),
            batch_size,
            delivery,
        })
    }

    /// Restarting under load (tests/powercut.rs): ingest runs while a worker reads its
    /// outbox, and `Store::put` writes a message's deliveries before its record. A worker
    /// that took such an item for the leftover of a crash and removed it lost an
    /// acknowledged message's delivery for good.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_starting_while_a_message_is_being_stored_delivers_it_once_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Metrics::new("t");
        let store =
            Store::open(&dir.path().join("data"), Durability::Fsync, &metrics).expect("open");
        let folder = dir.path().join("out");
        let id = store.next_id(now_ms());
        let item = OutboxItem {
            partition: "MRN1".into(),
            control_id: Some("C1".into()),
            body: b"MSH|^~\\&|HIS\r".to_vec(),
            ..OutboxItem::sample("lab/files", id, store.next_seq(), now_ms())
        };
        // `put` part-way: the delivery is written, the record not yet.
        store
            .outbox
            .insert(item.key(), item.encode(&store.seal).expect("encode"))
            .expect("insert");
        let hub = hub_of(&store, &metrics);
        hub.start_channel("lab", &[files(&folder, 16, DeliveryConfig::default())])
            .expect("start");
        // The worker reports its first health check only after reading its outbox.
        let up = metrics.destination_up.with_label_values(&["lab", "files"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while up.get() != 1 {
            assert!(Instant::now() < deadline, "no health check reported");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Nothing is sent before the message is stored and durable.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let file = folder.join(format!("{id}-files.hl7"));
        assert!(!file.exists(), "delivered before its message was stored");
        // The rest of `put`, the commit, and the hand-over, as ingest does them.
        let mut rec = record(id, "lab", "C1", Status::Received);
        attach(&mut rec, std::slice::from_ref(&item));
        store
            .messages
            .insert(id.to_be_bytes(), serde_json::to_vec(&rec).expect("json"))
            .expect("record");
        store.commit().await.expect("commit");
        // Told once the delivery is recorded and durable, as an `on_delivery` sender is.
        let delivered = hub.watch(id);
        hub.enqueue(std::slice::from_ref(&item));
        let told = tokio::time::timeout(Duration::from_secs(10), delivered)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the acknowledged message was never delivered; outbox: {:?}",
                    store.outbox_items("lab/files").map(|v| v.len())
                )
            })
            .expect("not dropped");
        assert_eq!(told, Finished::Delivered);
        assert_eq!(std::fs::read(&file).expect("file"), item.body);
        let status = store.get(id).expect("get").map(|r| r.status);
        assert_eq!(
            status,
            Some(Status::Delivered),
            "the delivery was not recorded"
        );
        assert!(store.outbox_items("lab/files").expect("items").is_empty());
    }

    /// Issue 17: an outbox item read by the worker at start and handed over again by the hub
    /// (its message was being stored while the outbox was read) is queued once, so a
    /// destination that batches whole partitions (Latrexa's scheduled upload) sends each of
    /// a patient's walk-ins once, all three in one request, in their order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_item_handed_over_twice_goes_once_in_a_whole_partition_batch() {
        use channels::clinic_api::latrexa::LatrexaConfig;
        let stop = CancellationToken::new();
        let sb = switchboard_sandbox::start(
            switchboard_sandbox::SandboxConfig::for_tests(),
            stop.clone(),
        )
        .await
        .expect("sandbox");
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("latrexa.key");
        std::fs::write(&key, "sandbox-latrexa-key\n").expect("key");
        let metrics = Metrics::new("t");
        let store = Store::open(&dir.path().join("data"), Durability::Os, &metrics).expect("open");
        let mut items = Vec::new();
        for n in 1..=3 {
            let id = store.next_id(now_ms());
            let body = serde_json::json!({"appointments": [{
                "hisAppointmentId": format!("HIS-{n}"), "patientNo": "P-1",
                "patientName": "Walker Wanda", "status": "booked",
                "start": format!("2026-06-16T0{n}:00:00"),
            }]});
            let item = OutboxItem {
                partition: "P-1".into(),
                content_type: "application/json".into(),
                control_id: Some(format!("C{n}")),
                path: Some("/api/integration/appointments/upload".into()),
                payload: ItemPayload::Rendered(channels::kind::PayloadKind::Vendor(
                    transforms::dest::Vendor::Latrexa,
                ))
                .into(),
                body: serde_json::to_vec(&body).expect("json"),
                ..OutboxItem::sample("lab/lx", id, store.next_seq(), now_ms())
            };
            let mut rec = record(id, "lab", &format!("C{n}"), Status::Routed);
            attach(&mut rec, std::slice::from_ref(&item));
            store
                .outbox
                .insert(item.key(), item.encode(&store.seal).expect("encode"))
                .expect("insert");
            store
                .messages
                .insert(id.to_be_bytes(), serde_json::to_vec(&rec).expect("json"))
                .expect("record");
            items.push(item);
        }
        store.commit().await.expect("commit");
        let hub = hub_of(&store, &metrics);
        let delivered: Vec<oneshot::Receiver<Finished>> =
            items.iter().map(|i| hub.watch(i.message_id)).collect();
        hub.start_channel(
            "lab",
            &[DestinationConfig::Latrexa(LatrexaConfig {
                name: "lx".into(),
                base_url: sb.base_url("latrexa"),
                api_key: channels::secret::SecretRef {
                    env: None,
                    file: Some(key),
                },
                organization_code: "sandbox-clinic".into(),
                mapping: Default::default(),
                bookings_channel: None,
                walk_in_registrations: false,
                upload_interval_secs: 1,
                timeout_secs: 10,
                delivery: DeliveryConfig::default(),
            })],
        )
        .expect("start");
        // The worker reads its outbox; the hub hands the same items over as ingest does.
        hub.enqueue(&items);
        for told in delivered {
            let told = tokio::time::timeout(Duration::from_secs(20), told)
                .await
                .expect("not uploaded")
                .expect("not dropped");
            assert_eq!(told, Finished::Delivered);
        }
        assert!(store.outbox_items("lab/lx").expect("items").is_empty());
        // Another interval: nothing more goes (on the wall clock; see the module's note).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let requests: serde_json::Value =
            reqwest::get(format!("{}/_requests", sb.base_url("latrexa")))
                .await
                .expect("sandbox")
                .json()
                .await
                .expect("json");
        let uploads: Vec<&serde_json::Value> = requests
            .as_array()
            .expect("requests")
            .iter()
            .filter(|r| r["path"] == "/api/integration/appointments/upload")
            .collect();
        assert_eq!(uploads.len(), 1, "one request: {uploads:?}");
        let ids: Vec<&str> = uploads[0]["body"]["appointments"]
            .as_array()
            .expect("appointments")
            .iter()
            .filter_map(|a| a["hisAppointmentId"].as_str())
            .collect();
        assert_eq!(ids, ["HIS-1", "HIS-2", "HIS-3"], "each once, in order");
        for item in &items {
            let rec = store.get(item.message_id).expect("get").expect("record");
            assert_eq!(rec.status, Status::Delivered, "{rec:?}");
            assert_eq!(rec.deliveries[0].attempts, 1, "{rec:?}");
        }
        stop.cancel();
    }

    fn queued(id: u64, seq: u64, partition: &str, created_at_ms: u64) -> OutboxItem {
        OutboxItem {
            partition: partition.into(),
            control_id: Some(format!("C{seq}")),
            body: format!("MSH|^~\\&|HIS|||||||C{seq}\r").into_bytes(),
            ..OutboxItem::sample("lab/files", id, seq, created_at_ms)
        }
    }

    /// A batching destination under load: the outcomes of the tasks that finish by one
    /// wake-up are settled together. Every message ends delivered with one attempt and its
    /// file written, the outbox empty, and each `on_delivery` waiter is told.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rounds_of_batches_settle_every_item_once_and_tell_every_waiter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Metrics::new("t");
        let store =
            Store::open(&dir.path().join("data"), Durability::Fsync, &metrics).expect("open");
        let folder = dir.path().join("out");
        let hub = hub_of(&store, &metrics);
        hub.start_channel(
            "lab",
            &[files(
                &folder,
                8,
                DeliveryConfig {
                    concurrency: 3,
                    ..DeliveryConfig::default()
                },
            )],
        )
        .expect("start");
        let mut items = Vec::new();
        let mut waiters = Vec::new();
        for n in 0..60u64 {
            let id = store.next_id(now_ms());
            let item = queued(id, store.next_seq(), &format!("P{}", n % 7), now_ms());
            let mut rec = record(id, "lab", &format!("C{}", item.seq), Status::Received);
            attach(&mut rec, std::slice::from_ref(&item));
            store
                .put(&rec, b"raw", std::slice::from_ref(&item))
                .expect("put");
            store.commit().await.expect("commit");
            waiters.push(hub.watch(id));
            hub.enqueue(std::slice::from_ref(&item));
            items.push(item);
        }
        for w in waiters {
            let told = tokio::time::timeout(Duration::from_secs(30), w)
                .await
                .expect("told within the deadline")
                .expect("not dropped");
            assert_eq!(told, Finished::Delivered);
        }
        for item in &items {
            let rec = store.get(item.message_id).expect("get").expect("record");
            assert_eq!(rec.status, Status::Delivered, "{rec:?}");
            assert_eq!(rec.deliveries[0].attempts, 1);
            let attempts = store.attempts_of(item.message_id).expect("attempts");
            assert_eq!(attempts.len(), 1);
            assert_eq!(attempts[0].outcome, Outcome::Delivered);
            let file = folder.join(format!("{}-files.hl7", item.message_id));
            assert_eq!(std::fs::read(&file).expect("file"), item.body);
        }
        assert!(store.outbox_items("lab/files").expect("items").is_empty());
        hub.stop_channel("lab").await;
    }

    /// The worker end to end against a webhook on 127.0.0.1: a refused delivery is retried
    /// with its backoff and the same idempotency key, the next item of its partition is not
    /// sent before it is delivered, another partition does not wait for it, a permanent
    /// refusal goes to the dead letters and its waiter is told why, and each outcome's
    /// counter says what the store says.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_webhook_destination_gets_retries_in_order_and_dead_letters_with_their_reason() {
        use axum::http::{HeaderMap, StatusCode};
        // Every request as (body, idempotency key); "first" is refused twice, "bad" always.
        let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let log = seen.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let log = log.clone();
                async move {
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let mut log = log.lock().expect("log");
                    log.push((body.clone(), key));
                    let times = log.iter().filter(|(b, _)| *b == body).count();
                    match body.as_str() {
                        "first" if times <= 2 => StatusCode::SERVICE_UNAVAILABLE,
                        "bad" => StatusCode::BAD_REQUEST,
                        _ => StatusCode::OK,
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Metrics::new("t");
        let store = Store::open(&dir.path().join("data"), Durability::Os, &metrics).expect("open");
        let hub = hub_of(&store, &metrics);
        hub.start_channel(
            "lab",
            &[DestinationConfig::Webhook(
                channels::webhook::sender::WebhookConfig {
                    name: "hook".into(),
                    url: format!("http://{addr}/hook"),
                    bearer_token: None,
                    api_key_header: None,
                    api_key: None,
                    signing_secret: None,
                    signature_header: "X-Switchboard-Signature".into(),
                    idempotency_header: "Idempotency-Key".into(),
                    timeout_secs: 5,
                    health_url: None,
                    delivery: DeliveryConfig {
                        backoff_base_ms: 20,
                        backoff_max_ms: 40,
                        breaker_failures: 100,
                        ..DeliveryConfig::default()
                    },
                },
            )],
        )
        .expect("start");
        let mut items = Vec::new();
        let mut waiters = Vec::new();
        for (partition, body) in [
            ("P1", "first"),
            ("P1", "second"),
            ("P2", "other"),
            ("P3", "bad"),
        ] {
            let id = store.next_id(now_ms());
            let item = OutboxItem {
                partition: partition.into(),
                content_type: "text/plain".into(),
                body: body.as_bytes().to_vec(),
                ..queued(id, store.next_seq(), partition, now_ms())
            };
            let item = OutboxItem {
                destination: "lab/hook".into(),
                idempotency_key: format!("{id}-hook"),
                ..item
            };
            let mut rec = record(id, "lab", &format!("C{}", item.seq), Status::Received);
            attach(&mut rec, std::slice::from_ref(&item));
            store
                .put(&rec, b"raw", std::slice::from_ref(&item))
                .expect("put");
            store.commit().await.expect("commit");
            waiters.push(hub.watch(id));
            hub.enqueue(std::slice::from_ref(&item));
            items.push(item);
        }
        let mut told = Vec::new();
        for w in waiters {
            told.push(
                tokio::time::timeout(Duration::from_secs(30), w)
                    .await
                    .expect("told within the deadline")
                    .expect("not dropped"),
            );
        }
        assert_eq!(
            told[..3],
            [
                Finished::Delivered,
                Finished::Delivered,
                Finished::Delivered
            ]
        );
        assert!(
            matches!(&told[3], Finished::Failed(reason) if reason.contains("400")),
            "{:?}",
            told[3]
        );
        let seen = seen.lock().expect("log").clone();
        let p1: Vec<&str> = seen
            .iter()
            .map(|(b, _)| b.as_str())
            .filter(|b| *b == "first" || *b == "second")
            .collect();
        assert_eq!(
            p1,
            ["first", "first", "first", "second"],
            "P1's second item went only after its first was delivered"
        );
        let keys: Vec<&str> = seen
            .iter()
            .filter(|(b, _)| b == "first")
            .map(|(_, k)| k.as_str())
            .collect();
        assert_eq!(
            keys,
            [items[0].idempotency_key.as_str(); 3],
            "the same key each time"
        );
        let attempts: Vec<Option<Outcome>> = store
            .attempts_of(items[0].message_id)
            .expect("attempts")
            .into_iter()
            .map(|a| a.outcome.known())
            .collect();
        let on_record = store
            .get(items[0].message_id)
            .expect("get")
            .expect("record");
        assert_eq!(on_record.status, Status::Delivered);
        assert_eq!(on_record.deliveries[0].attempts, 3);
        assert_eq!(attempts[..2], [Some(Outcome::Retry); 2], "{attempts:?}");
        let bad = store
            .get(items[3].message_id)
            .expect("get")
            .expect("record");
        assert_eq!(bad.status, Status::Failed);
        assert_eq!(store.dead_letter_count("lab/hook").expect("count"), 1);
        assert!(store.outbox_items("lab/hook").expect("items").is_empty());
        let outcome = |o: &str| {
            metrics
                .deliveries
                .with_label_values(&["lab", "hook", o])
                .get()
        };
        assert_eq!(
            (
                outcome("delivered"),
                outcome("retried"),
                outcome("dead_letter")
            ),
            (3, 2, 1)
        );
        let labels = ["lab", "hook"];
        assert_eq!(metrics.dead_letters.with_label_values(&labels).get(), 1);
        assert_eq!(
            metrics
                .dead_letters_outstanding
                .with_label_values(&labels)
                .get(),
            1
        );
        hub.stop_channel("lab").await;
        stop.cancel();
        let _ = server.await;
    }
}
