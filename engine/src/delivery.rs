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
//! Outcomes are settled in rounds: every delivery task that has finished when the worker wakes
//! is settled together, the schedule first (`decide`: backoff, breaker, dead-letter rules,
//! no IO), then the store. Deliveries that need nothing but their attempt, record and outbox
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

use crate::events::{EventBus, LiveEvent};
use crate::metrics::Metrics;
use crate::store::appointments::LinkScope;
use crate::store::ledger::{AppointmentRef, LedgerEntry, LedgerWrite};
use crate::store::outbox::{Attempt, DeliveryState, DeliveryStatus, OutboxItem};
use crate::store::{Status, Store, StoreError};
use bytes::Bytes;
use channels::destination::{
    Delivery, DeliveryConfig, DeliveryError, Destination, DestinationConfig,
};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// How often a worker looks again whether the free-space reserve lets it write.
const RESERVE_RECHECK: Duration = Duration::from_secs(1);

/// At most this many hand-overs are taken in one wake-up of a worker (the rest at the next).
const HANDOVERS_PER_WAKE: usize = 4096;

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
                events: self.events.clone(),
                delivered: self.metrics.deliveries.with_label_values(&[
                    channel,
                    config.name(),
                    "delivered",
                ]),
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
    events: EventBus,
    /// `deliveries{outcome="delivered"}` of this destination, looked up once.
    delivered: prometheus::IntCounter,
}

/// The circuit breaker of one destination.
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

/// What one delivery task did: one entry per item (several for a batching destination),
/// and how long it took.
type Outcome = (
    Vec<(
        String,
        OutboxItem,
        Result<channels::destination::Receipt, DeliveryError>,
    )>,
    Duration,
);

/// What a delivery task needs besides the destination: the store and the destination's
/// name in it (for the appointment ledger) and the slot counter.
#[derive(Clone)]
struct LedgerContext {
    store: Store,
    name: String,
    slots_closed: prometheus::IntCounter,
    unknown_moves: prometheus::IntCounter,
}

/// True when the head `seq` of partition `p` must wait: master data queued before it is not
/// delivered yet (see the module).
fn waits_for_master(queues: &HashMap<String, VecDeque<(u64, u64)>>, p: &str, seq: u64) -> bool {
    p != crate::routing::MASTER_PARTITION
        && queues
            .get(crate::routing::MASTER_PARTITION)
            .and_then(|q| q.front())
            .is_some_and(|(master, _)| *master < seq)
}

/// Sets partition `p` aside until the master data before its head is delivered.
fn park(parked: &mut Vec<String>, p: String) {
    if !parked.contains(&p) {
        parked.push(p);
    }
}

/// Sends the items of one task: one at a time, or together to a batching destination.
/// An item whose rendering failed at routing is never sent: it fails permanently with its
/// mapping error. An appointment whose previous slot must be closed first fails with the
/// close's error when that fails.
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
        if held.contains(&p) {
            let e = DeliveryError::retry("an earlier item of the same partition is retried first");
            out.push((p, item, Err(e)));
            continue;
        }
        match superseded(&ledger, &item) {
            Ok(Some(receipt)) => {
                out.push((p, item, Ok(receipt)));
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                held.insert(p.clone());
                out.push((p, item, Err(e)));
                continue;
            }
        }
        if let Err(e) = link_remote_id(&dest, &ledger, &mut item) {
            held.insert(p.clone());
            out.push((p, item, Err(e)));
            continue;
        }
        if item.payload == crate::routing::MAPPING_FAILED {
            let e = DeliveryError::permanent(item.last_error.clone());
            out.push((p, item, Err(e)));
        } else if let Some(known) = reference_known(&ledger, &item) {
            out.push((p, item, known));
        } else if let Err(e) = close_previous_slot(&dest, &ledger, &item).await {
            if e.is_retryable() {
                held.insert(p.clone());
            }
            out.push((p, item, Err(e)));
        } else {
            to_send.push((p, item));
        }
    }
    let deliveries: Vec<Delivery> = to_send
        .iter()
        .map(|(_, item)| Delivery {
            body: Bytes::from(item.body.clone()),
            content_type: item.content_type.clone(),
            idempotency_key: item.idempotency_key.clone(),
            control_id: item.control_id.clone(),
            path: item.path.clone(),
        })
        .collect();
    let results = match deliveries.as_slice() {
        [] => Vec::new(),
        [one] => vec![dest.deliver(one).await],
        many => dest.deliver_batch(many).await,
    };
    // (`held` as filled before the request names only partitions whose failed item came
    // after every item of theirs that was sent.)
    let mut failed: HashSet<String> = HashSet::new();
    for ((p, item), r) in to_send.into_iter().zip(results) {
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
        out.push((p, item, r));
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
        debug!(destination = %cx.name, message_id = item.message_id, "The HIS named its id of an online booking.");
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
            warn!(destination = %cx.name, message_id = item.message_id, "A reschedule of an appointment this destination was never sent: its new slot is upserted, an old slot the destination may hold is not closed.");
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
    debug!(destination = %cx.name, message_id = item.message_id, "Closed the previous slot of a rescheduled appointment.");
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

    async fn run(
        self,
        mut rx: mpsc::UnboundedReceiver<(String, u64, u64)>,
        shutdown: CancellationToken,
    ) {
        let labels = [self.channel.as_str(), self.dest_name.as_str()];
        let up = self.metrics.destination_up.with_label_values(&labels);
        let depth_gauge = self.metrics.outbox_depth.with_label_values(&labels);
        let age_gauge = self.metrics.outbox_oldest_age.with_label_values(&labels);
        let duration = self.metrics.delivery_duration.with_label_values(&labels);
        self.metrics.destination_started(labels[0], labels[1]);
        let dead_gauge = self
            .metrics
            .dead_letters_outstanding
            .with_label_values(&labels);
        let refresh_dead = || match self.store.dead_letter_count(&self.name) {
            Ok(n) => dead_gauge.set(i64::try_from(n).unwrap_or(i64::MAX)),
            Err(e) => {
                warn!(destination = %self.name, error = %e, "Cannot count the dead letters.")
            }
        };
        refresh_dead();
        let mut dead_refresh_at =
            Instant::now() + Duration::from_secs(crate::metrics::DEAD_LETTERS_REFRESH_SECS);
        // `up` is set by the first health check, then by deliveries, the breaker and the
        // checks that run while the destination is down (see `health_result`).
        let health_every = Duration::from_secs(self.cfg.healthcheck_interval_secs.max(1));
        let (health_tx, mut health_rx) = mpsc::channel::<Result<(), String>>(1);
        let mut checking = true;
        let mut healthy: Option<bool> = None;
        let mut next_check = Instant::now() + health_every;
        self.spawn_healthcheck(&health_tx);
        // Partition -> (seq, created_ms) in order; heads wait in `ready` or `timers`.
        let mut queues: HashMap<String, VecDeque<(u64, u64)>> = HashMap::new();
        // Every seq in `queues`: an item is queued once, though it can be handed over twice
        // (read from the outbox at start, and again by `Hub::enqueue` when its message was
        // being stored while the outbox was read, or after a channel restart). Queued twice,
        // it would go twice in a batch of whole partitions.
        let mut queued: HashSet<u64> = HashSet::new();
        let mut ready: VecDeque<String> = VecDeque::new();
        let mut timers: BinaryHeap<Reverse<(u64, String)>> = BinaryHeap::new();
        let mut in_flight: HashSet<String> = HashSet::new();
        // Partitions whose head waits for an earlier master-data item (see the module).
        let mut parked: Vec<String> = Vec::new();
        let mut tasks: JoinSet<Outcome> = JoinSet::new();
        let mut breaker = Breaker {
            failures: 0,
            open_until: None,
        };
        let mut depth: i64 = 0;
        let mut paused = false;
        let batching = self.dest.batching();
        let whole = self.dest.batches_whole_partitions();
        let mut linger_since: Option<Instant> = None;
        let mut linger_wake: Option<Instant>;
        match self.store.outbox_items(&self.name) {
            Ok(items) => {
                for item in items {
                    // An item without its message belongs to a message being written right
                    // now (`Store::put` writes the items first; ingest may already run): it
                    // stays in the outbox and comes through `Hub::enqueue` once its message
                    // is durable, never before. Items a crash left without their message
                    // were removed when the store opened (`Store::open`).
                    match self.store.contains_message(item.message_id) {
                        Ok(false) => continue,
                        Ok(true) => {}
                        Err(e) => {
                            warn!(destination = %self.name, error = %e, "Cannot check an outbox item's message; taking the item.")
                        }
                    }
                    if !queued.insert(item.seq) {
                        continue;
                    }
                    depth += 1;
                    let q = queues.entry(item.partition.clone()).or_default();
                    if q.is_empty() {
                        timers.push(Reverse((item.next_attempt_ms, item.partition.clone())));
                    }
                    q.push_back((item.seq, item.created_at_ms));
                }
                if depth > 0 {
                    info!(destination = %self.name, waiting = depth, "Resuming deliveries from the outbox.");
                }
            }
            Err(e) => {
                error!(destination = %self.name, error = %e, "Cannot read the outbox; deliveries wait for a restart.")
            }
        }
        let mut gauge_tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            // Move due heads to ready.
            let now = now_ms();
            while let Some(Reverse((at, _))) = timers.peek() {
                if *at > now {
                    break;
                }
                if let Some(Reverse((_, p))) = timers.pop() {
                    ready.push_back(p);
                }
            }
            // Partitions that waited for master data go again once it is delivered.
            parked.retain(|p| {
                let head = queues.get(p).and_then(|q| q.front()).map(|(s, _)| *s);
                let waits = head.is_some_and(|seq| waits_for_master(&queues, p, seq));
                if !waits {
                    ready.push_back(p.clone());
                }
                waits
            });
            // Start what the reserve, the breaker and concurrency allow.
            let reserve_ok = self.reserve_ok(&mut paused);
            let half_open = match breaker.open_until {
                _ if !reserve_ok => None,
                Some(t) if Instant::now() < t => None,
                Some(_) => Some(true),
                None => Some(false),
            };
            linger_wake = None;
            if let (Some(half_open), Some((size, linger_ms))) = (half_open, batching) {
                let limit = if half_open {
                    1
                } else {
                    self.cfg.concurrency.max(1)
                };
                while tasks.len() < limit {
                    // The heads of every ready partition, oldest first; for a destination
                    // that batches whole partitions, each head with the items queued behind
                    // it (of its kind, in order).
                    let mut heads: Vec<(String, OutboxItem)> = Vec::new();
                    while let Some(p) = ready.pop_front() {
                        if in_flight.contains(&p) || heads.iter().any(|(h, _)| *h == p) {
                            continue;
                        }
                        let Some(&(seq, _)) = queues.get(&p).and_then(|q| q.front()) else {
                            continue;
                        };
                        if waits_for_master(&queues, &p, seq) {
                            park(&mut parked, p);
                            continue;
                        }
                        match self.store.outbox_get(&self.name, seq) {
                            Ok(Some(i)) if whole => {
                                let room = size.saturating_sub(heads.len() + 1);
                                let followers: Vec<u64> = queues
                                    .get(&p)
                                    .map(|q| q.iter().skip(1).map(|(s, _)| *s).take(room).collect())
                                    .unwrap_or_default();
                                let head_kind = (i.payload.clone(), i.path.clone());
                                heads.push((p.clone(), i));
                                for s in followers {
                                    match self.store.outbox_get(&self.name, s) {
                                        Ok(Some(f))
                                            if (f.payload.clone(), f.path.clone()) == head_kind =>
                                        {
                                            heads.push((p.clone(), f));
                                        }
                                        // Another kind, gone or unreadable: the rest wait
                                        // for a later batch, in order.
                                        _ => break,
                                    }
                                }
                            }
                            Ok(Some(i)) => heads.push((p, i)),
                            Ok(None) => {
                                if let Some(q) = queues.get_mut(&p) {
                                    if let Some((gone, _)) = q.pop_front() {
                                        queued.remove(&gone);
                                    }
                                    depth -= 1;
                                    if !q.is_empty() {
                                        ready.push_back(p.clone());
                                    }
                                }
                            }
                            Err(e) => {
                                error!(destination = %self.name, error = %e, "Cannot read an outbox item; retrying in 5 s.");
                                timers.push(Reverse((now_ms() + 5000, p)));
                            }
                        }
                        // Enough for a full batch: the other ready partitions wait their turn
                        // (reading every head of thousands of partitions for one batch would
                        // cost more than the batch saves).
                        if heads.len() >= size {
                            break;
                        }
                    }
                    if heads.is_empty() {
                        break;
                    }
                    // One batch: heads of the oldest head's kind (same payload and path).
                    let kind = |i: &OutboxItem| (i.payload.clone(), i.path.clone());
                    let first = kind(&heads[0].1);
                    let mut batch = Vec::new();
                    let mut others = Vec::new();
                    for h in heads {
                        if batch.len() < size && kind(&h.1) == first {
                            batch.push(h);
                        } else {
                            others.push(h);
                        }
                    }
                    let full = batch.len() >= size
                        || first.0 == crate::routing::MAPPING_FAILED
                        || !others.is_empty();
                    let since = *linger_since.get_or_insert_with(Instant::now);
                    let deadline = since + Duration::from_millis(linger_ms);
                    if !full && Instant::now() < deadline {
                        // Wait a little for more items of this kind.
                        for (p, _) in batch.into_iter().rev() {
                            ready.push_front(p);
                        }
                        linger_wake = Some(deadline);
                        break;
                    }
                    linger_since = None;
                    for (p, _) in others.into_iter().rev() {
                        ready.push_front(p);
                    }
                    for (p, _) in &batch {
                        in_flight.insert(p.clone());
                    }
                    tasks.spawn(send_items(self.dest.clone(), self.ledger_context(), batch));
                }
            } else if let Some(half_open) = half_open {
                let limit = if half_open {
                    1
                } else {
                    self.cfg.concurrency.max(1)
                };
                while in_flight.len() < limit {
                    let Some(p) = ready.pop_front() else { break };
                    if in_flight.contains(&p) {
                        continue;
                    }
                    let Some(&(seq, _)) = queues.get(&p).and_then(|q| q.front()) else {
                        continue;
                    };
                    if waits_for_master(&queues, &p, seq) {
                        park(&mut parked, p);
                        continue;
                    }
                    let item = match self.store.outbox_get(&self.name, seq) {
                        Ok(Some(i)) => i,
                        Ok(None) => {
                            // Already finished (for example discarded); move on.
                            if let Some(q) = queues.get_mut(&p) {
                                if let Some((gone, _)) = q.pop_front() {
                                    queued.remove(&gone);
                                }
                                depth -= 1;
                                if !q.is_empty() {
                                    ready.push_back(p.clone());
                                }
                            }
                            continue;
                        }
                        Err(e) => {
                            error!(destination = %self.name, error = %e, "Cannot read an outbox item; retrying in 5 s.");
                            timers.push(Reverse((now_ms() + 5000, p)));
                            continue;
                        }
                    };
                    in_flight.insert(p.clone());
                    tasks.spawn(send_items(
                        self.dest.clone(),
                        self.ledger_context(),
                        vec![(p, item)],
                    ));
                }
            }
            let next_timer = timers.peek().map(|Reverse((at, _))| *at);
            let breaker_wait = breaker.open_until.filter(|t| *t > Instant::now());
            let wake = match (next_timer, breaker_wait) {
                (_, Some(t)) => Some(t.saturating_duration_since(Instant::now())),
                (Some(at), None) => Some(Duration::from_millis(at.saturating_sub(now_ms()))),
                (None, None) => None,
            };
            let wake = match (wake, linger_wake) {
                (Some(w), Some(l)) => Some(w.min(l.saturating_duration_since(Instant::now()))),
                (None, Some(l)) => Some(l.saturating_duration_since(Instant::now())),
                (w, None) => w,
            };
            let wake = if paused {
                Some(wake.map_or(RESERVE_RECHECK, |w| w.min(RESERVE_RECHECK)))
            } else {
                wake
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                msg = rx.recv() => {
                    let Some(first) = msg else { break };
                    // Everything handed over meanwhile, in one wake-up: under load the items
                    // of many messages wait here, and each wake-up reads the ready heads.
                    let mut next = Some(first);
                    let mut taken = 0;
                    while let Some((p, seq, created)) = next.take() {
                        // `queued`: already queued from the outbox read at start.
                        if queued.insert(seq) {
                            depth += 1;
                            let q = queues.entry(p.clone()).or_default();
                            let was_empty = q.is_empty();
                            // In queue order (seq), however the hand-overs of two messages
                            // interleaved; an item is never put before a head already taken.
                            let at = q.iter().rposition(|(s, _)| *s < seq).map_or(0, |i| i + 1);
                            let at = if in_flight.contains(&p) {
                                at.max(1).min(q.len())
                            } else {
                                at
                            };
                            q.insert(at, (seq, created));
                            if was_empty && !in_flight.contains(&p) {
                                ready.push_back(p);
                            }
                        }
                        taken += 1;
                        if taken < HANDOVERS_PER_WAKE {
                            next = rx.try_recv().ok();
                        }
                    }
                }
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    // Every task that has finished by now, settled in one round.
                    let mut outcomes = Vec::new();
                    let mut next = Some(done);
                    while let Some(done) = next.take() {
                        if let Ok((items, took)) = done {
                            for (p, item, result) in items {
                                in_flight.remove(&p);
                                duration.observe(took.as_secs_f64());
                                outcomes.push((p, item, result, took));
                            }
                        }
                        next = tasks.try_join_next();
                    }
                    let settled = self.settle_round(outcomes, &mut breaker, &up, &shutdown).await;
                    // A round may finish several items of one partition: each leaves its own
                    // queue entry; the partition is ready again unless one of them retries.
                    let mut finished: Vec<String> = Vec::new();
                    let mut retrying: HashSet<String> = HashSet::new();
                    for (p, seq, outcome) in settled {
                        match outcome {
                            Settled::Done => {
                                depth -= 1;
                                queued.remove(&seq);
                                if let Some(q) = queues.get_mut(&p) {
                                    if let Some(at) = q.iter().position(|(s, _)| *s == seq) {
                                        q.remove(at);
                                    }
                                }
                                if !finished.contains(&p) {
                                    finished.push(p);
                                }
                            }
                            Settled::RetryAt(at) => {
                                retrying.insert(p.clone());
                                timers.push(Reverse((at, p)));
                            }
                        }
                    }
                    for p in finished {
                        if queues.get(&p).is_some_and(VecDeque::is_empty) {
                            queues.remove(&p);
                        } else if !retrying.contains(&p) && queues.contains_key(&p) {
                            ready.push_back(p);
                        }
                    }
                }
                _ = sleep_opt(wake) => {}
                Some(result) = health_rx.recv() => {
                    checking = false;
                    next_check = Instant::now() + health_every;
                    self.health_result(result, &mut healthy, &mut breaker, depth, &up);
                }
                _ = gauge_tick.tick() => {
                    if !checking && up.get() == 0 && Instant::now() >= next_check {
                        checking = true;
                        self.spawn_healthcheck(&health_tx);
                    }
                    depth_gauge.set(depth);
                    if Instant::now() >= dead_refresh_at {
                        refresh_dead();
                        dead_refresh_at = Instant::now()
                            + Duration::from_secs(crate::metrics::DEAD_LETTERS_REFRESH_SECS);
                    }
                    let oldest = queues.values().filter_map(|q| q.front().map(|(_, c)| *c)).min();
                    age_gauge.set(oldest.map(|c| (now_ms().saturating_sub(c) / 1000) as i64).unwrap_or(0));
                }
            }
        }
        // Let deliveries in flight finish briefly; the rest stay in the outbox for next time.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok((items, took))) = tasks.join_next().await {
                let outcomes = items
                    .into_iter()
                    .map(|(p, item, result)| (p, item, result, took))
                    .collect();
                self.settle_round(outcomes, &mut breaker, &up, &shutdown)
                    .await;
            }
        })
        .await;
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
        message_id: u64,
        shutdown: &CancellationToken,
        write: impl Fn() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut waited = false;
        loop {
            match write() {
                Err(StoreError::DiskFull { .. }) if !shutdown.is_cancelled() => {
                    if !waited {
                        warn!(destination = %self.name, message_id, "Free disk space is under the reserve; the outcome of a delivery waits until it can be written.");
                        waited = true;
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep(RESERVE_RECHECK) => {}
                    }
                }
                other => {
                    if waited && other.is_ok() {
                        info!(destination = %self.name, message_id, "The outcome of a delivery was written once disk space came back.");
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
        healthy: &mut Option<bool>,
        breaker: &mut Breaker,
        depth: i64,
        up: &prometheus::IntGauge,
    ) {
        match result {
            Ok(()) => {
                if *healthy != Some(true) {
                    info!(destination = %self.name, "Destination health check passed.");
                }
                *healthy = Some(true);
                if breaker.open_until.is_some() && depth > 0 {
                    return;
                }
                breaker.open_until = None;
                breaker.failures = 0;
                up.set(1);
            }
            Err(e) => {
                if *healthy != Some(false) {
                    warn!(destination = %self.name, error = %e, "Destination health check failed; checking again while it is down.");
                }
                *healthy = Some(false);
                up.set(0);
            }
        }
    }

    /// Settles the outcomes of a round (every delivery task that finished by one wake-up):
    /// the schedule decides each ([`decide`]), the deliveries that need nothing but their
    /// attempt, record and outbox item are written together
    /// ([`Store::finish_delivered_all`]), the others one by one. Returns, per item, its
    /// partition, seq and what its queue should do. Waiters are told once the outcomes are
    /// durable ([`Worker::tell_when_durable`]).
    async fn settle_round(
        &self,
        outcomes: Vec<(String, OutboxItem, DeliveryResult, Duration)>,
        breaker: &mut Breaker,
        up: &prometheus::IntGauge,
        shutdown: &CancellationToken,
    ) -> Vec<(String, u64, Settled)> {
        let mut settled = Vec::with_capacity(outcomes.len());
        let mut plain = Vec::new();
        let mut ended = Vec::new();
        for (p, mut item, result, took) in outcomes {
            let now = (now_ms(), Instant::now());
            let (decision, attempt, moved) =
                decide(&self.cfg, breaker, &mut item, result, took, now);
            self.report_breaker(moved, breaker, up);
            let seq = item.seq;
            let outcome = match decision {
                Decision::Delivered(receipt) => {
                    up.set(1);
                    self.delivered.inc();
                    debug!(destination = %self.name, message_id = item.message_id, "Delivered.");
                    self.publish("delivered", &item);
                    match self.ledger_write(&item, &receipt) {
                        None if item.reference.is_none() => {
                            plain.push((p, item, attempt, receipt.detail));
                            continue;
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
                    self.retry(&item, &attempt, &error, delay, shutdown).await;
                    Settled::RetryAt(item.next_attempt_ms)
                }
                Decision::DeadLetter { reason } => {
                    self.count_dead_letter(&item, &reason);
                    self.publish("dead_letter", &item);
                    let written = self
                        .finish(&item, &attempt, (false, &reason), None, shutdown)
                        .await;
                    settled_as(written, &item, &reason, &mut ended)
                }
            };
            settled.push((p, seq, outcome));
        }
        settled.extend(self.finish_plain(plain, shutdown, &mut ended).await);
        self.tell_when_durable(ended);
        settled
    }

    /// Logs a move of the circuit breaker and reports the destination down while it is open.
    fn report_breaker(&self, moved: BreakerMove, breaker: &Breaker, up: &prometheus::IntGauge) {
        match moved {
            BreakerMove::Closed => {
                info!(destination = %self.name, "Destination is taking deliveries again.")
            }
            BreakerMove::Opened => {
                warn!(destination = %self.name, failures = breaker.failures, cooldown_secs = self.cfg.breaker_cooldown_secs, "Destination is failing; pausing deliveries.");
                up.set(0);
            }
            BreakerMove::KeptOpen => up.set(0),
            BreakerMove::Unchanged => {}
        }
    }

    /// Records a failed attempt that will be tried again, and its new schedule.
    async fn retry(
        &self,
        item: &OutboxItem,
        attempt: &Attempt,
        error: &DeliveryError,
        delay: Duration,
        shutdown: &CancellationToken,
    ) {
        self.metrics
            .deliveries
            .with_label_values(&[self.channel.as_str(), self.dest_name.as_str(), "retried"])
            .inc();
        warn!(destination = %self.name, message_id = item.message_id, attempt = item.attempts, retry_in_ms = delay.as_millis() as u64, error = %error, "Delivery failed, will retry.");
        let recorded = self
            .write(item.message_id, shutdown, || {
                self.store
                    .record_attempt(item, attempt)
                    .and_then(|()| self.store.reschedule(item))
            })
            .await;
        if let Err(se) = recorded {
            error!(destination = %self.name, error = %se, "Cannot record the retry.");
        }
        self.publish("retrying", item);
    }

    /// Counts a delivery that failed for good and logs it.
    fn count_dead_letter(&self, item: &OutboxItem, reason: &str) {
        let labels = [self.channel.as_str(), self.dest_name.as_str()];
        self.metrics
            .deliveries
            .with_label_values(&[labels[0], labels[1], "dead_letter"])
            .inc();
        self.metrics.dead_letters.with_label_values(&labels).inc();
        self.metrics
            .dead_letters_outstanding
            .with_label_values(&labels)
            .inc();
        error!(destination = %self.name, message_id = item.message_id, attempts = item.attempts, error = %reason, "Delivery failed for good; moved to the dead letters.");
    }

    fn publish(&self, kind: &str, item: &OutboxItem) {
        self.events.publish_with(|| LiveEvent {
            kind: kind.into(),
            id: item.message_id.to_string(),
            channel: self.channel.clone(),
            message_type: String::new(),
            control_id: item.control_id.clone().unwrap_or_default(),
            destination: item.destination.clone(),
            at_ms: now_ms(),
        });
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
        self.write(item.message_id, shutdown, || {
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
        let Some(first) = plain.first().map(|(_, i, _, _)| i.message_id) else {
            return Vec::new();
        };
        let done: Vec<(&OutboxItem, &Attempt, &str)> = plain
            .iter()
            .map(|(_, item, attempt, detail)| (item, attempt, detail.as_str()))
            .collect();
        let written = self
            .write(first, shutdown, || self.store.finish_delivered_all(&done))
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
                    .map(|(p, item, _, _)| (p, item.seq, Settled::RetryAt(now_ms() + 5000)))
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

/// The result of one delivery, as a task hands it back.
type DeliveryResult = Result<channels::destination::Receipt, DeliveryError>;

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
            Settled::RetryAt(now_ms() + 5000)
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

/// What the schedule decided for one attempt's outcome.
#[derive(Debug)]
enum Decision {
    /// Delivered: record it.
    Delivered(channels::destination::Receipt),
    /// Failed; tried again at the item's `next_attempt_ms` (set), `delay` from now.
    Retry {
        /// Why it failed.
        error: DeliveryError,
        /// The backoff chosen.
        delay: Duration,
    },
    /// Failed for good: into the dead letters with this reason.
    DeadLetter {
        /// The reason recorded.
        reason: String,
    },
}

/// How one outcome moved the circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BreakerMove {
    /// Nothing to report.
    Unchanged,
    /// It was open; a delivery closed it.
    Closed,
    /// It opened now.
    Opened,
    /// It was open and a failure kept it open for another cool-down.
    KeptOpen,
}

/// The schedule's part of settling one outcome, without IO: counts the attempt on `item`,
/// moves the breaker, and decides between delivered, retry (with its backoff, the item's
/// next attempt and last error set) and dead letter; returns the attempt to record.
/// `now` is the wall clock in Unix ms (for the item) and the monotonic clock (the breaker).
fn decide(
    cfg: &DeliveryConfig,
    breaker: &mut Breaker,
    item: &mut OutboxItem,
    result: DeliveryResult,
    took: Duration,
    (now_ms, now): (u64, Instant),
) -> (Decision, Attempt, BreakerMove) {
    item.attempts += 1;
    let mut attempt = Attempt {
        destination: item.destination.clone(),
        attempt: item.attempts,
        at_ms: now_ms,
        outcome: String::new(),
        status: None,
        detail: String::new(),
        duration_ms: took.as_millis() as u64,
        answer: None,
    };
    let e = match result {
        Ok(receipt) => {
            breaker.failures = 0;
            let moved = match breaker.open_until.take() {
                Some(_) => BreakerMove::Closed,
                None => BreakerMove::Unchanged,
            };
            item.last_error.clear();
            attempt.outcome = "delivered".into();
            attempt.status = receipt.status;
            attempt.detail = receipt.detail.clone();
            attempt.answer = receipt.answer.clone();
            return (Decision::Delivered(receipt), attempt, moved);
        }
        Err(e) => e,
    };
    attempt.status = e.status;
    attempt.detail = e.reason.clone();
    attempt.answer = e.answer.clone();
    let mut moved = BreakerMove::Unchanged;
    if e.is_retryable() {
        breaker.failures += 1;
        if breaker.failures >= cfg.breaker_failures {
            moved = match breaker.open_until {
                None => BreakerMove::Opened,
                Some(_) => BreakerMove::KeptOpen,
            };
            breaker.open_until = Some(now + Duration::from_secs(cfg.breaker_cooldown_secs));
        }
    }
    let exhausted = item.attempts >= cfg.max_attempts
        || now_ms.saturating_sub(item.created_at_ms) >= cfg.max_age_secs * 1000;
    if e.is_retryable() && !exhausted {
        let delay = backoff(cfg, item.attempts, e.retry_after);
        item.next_attempt_ms = now_ms + delay.as_millis() as u64;
        item.last_error = e.reason.clone();
        attempt.outcome = "retry".into();
        return (Decision::Retry { error: e, delay }, attempt, moved);
    }
    let reason = if e.is_retryable() {
        format!("gave up after {} attempts: {}", item.attempts, e.reason)
    } else {
        e.reason.clone()
    };
    item.last_error = reason.clone();
    attempt.outcome = "dead_letter".into();
    (Decision::DeadLetter { reason }, attempt, moved)
}

enum Settled {
    Done,
    RetryAt(u64),
}

/// The delay before attempt `attempts + 1`: base * 2^(attempts-1), capped, with jitter in
/// [50%, 100%], and never shorter than what the destination asked for.
pub fn backoff(cfg: &DeliveryConfig, attempts: u32, retry_after: Option<Duration>) -> Duration {
    let exp = cfg
        .backoff_base_ms
        .saturating_mul(1u64 << attempts.saturating_sub(1).min(30));
    let capped = exp.min(cfg.backoff_max_ms);
    let jittered = capped / 2 + rand::random_range(0..=capped / 2);
    let asked = retry_after
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
        .min(3_600_000);
    Duration::from_millis(jittered.max(asked))
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A partition's head waits while master data queued before it is undelivered, and only
    /// then; the master partition itself never waits.
    #[test]
    fn heads_queued_after_undelivered_master_data_wait_for_it() {
        let master = crate::routing::MASTER_PARTITION;
        let mut queues: HashMap<String, VecDeque<(u64, u64)>> = HashMap::new();
        queues.insert("MRN1".into(), VecDeque::from([(5, 0)]));
        queues.insert("MRN2".into(), VecDeque::from([(2, 0)]));
        assert!(
            !waits_for_master(&queues, "MRN1", 5),
            "no master data queued"
        );
        queues.insert(master.into(), VecDeque::from([(3, 0), (7, 0)]));
        assert!(
            waits_for_master(&queues, "MRN1", 5),
            "queued after master item 3"
        );
        assert!(!waits_for_master(&queues, "MRN2", 2), "queued before it");
        assert!(!waits_for_master(&queues, master, 3));
        queues.insert(master.into(), VecDeque::new());
        assert!(
            !waits_for_master(&queues, "MRN1", 5),
            "master data delivered"
        );
    }
    use crate::config::Durability;
    use crate::store::outbox::attach;
    use crate::store::tests::record;
    use channels::file::FileConfig;

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
        let hub = Hub::new(
            store.clone(),
            metrics.clone(),
            EventBus::default(),
            CancellationToken::new(),
        );
        hub.start_channel(
            "lab",
            &[DestinationConfig::File(FileConfig {
                name: "files".into(),
                folder: folder.clone(),
                extension: "hl7".into(),
                batch_size: 16,
                delivery: DeliveryConfig::default(),
            })],
        )
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
        hub.enqueue(std::slice::from_ref(&item));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !file.exists() {
            assert!(
                Instant::now() < deadline,
                "the acknowledged message was never delivered; outbox: {:?}",
                store.outbox_items("lab/files").map(|v| v.len())
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(std::fs::read(&file).expect("file"), item.body);
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.get(id).expect("get").map(|r| r.status) != Some(Status::Delivered) {
            assert!(Instant::now() < deadline, "the delivery was not recorded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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
                payload: "latrexa".into(),
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
        let hub = Hub::new(
            store.clone(),
            metrics.clone(),
            EventBus::default(),
            CancellationToken::new(),
        );
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
        let deadline = Instant::now() + Duration::from_secs(20);
        while !store.outbox_items("lab/lx").expect("items").is_empty() {
            assert!(Instant::now() < deadline, "not uploaded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Another interval: nothing more goes.
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

    fn receipt() -> DeliveryResult {
        Ok(channels::destination::Receipt {
            status: None,
            detail: "written".into(),
            answer: None,
        })
    }

    /// The schedule without IO: backoff, breaker and the dead-letter rules, with the clocks
    /// given (no timing in the test).
    #[test]
    fn the_schedule_retries_with_backoff_opens_the_breaker_and_gives_up() {
        let cfg = DeliveryConfig {
            backoff_base_ms: 1000,
            backoff_max_ms: 8000,
            max_attempts: 4,
            max_age_secs: 3600,
            breaker_failures: 2,
            breaker_cooldown_secs: 30,
            ..DeliveryConfig::default()
        };
        let mut breaker = Breaker {
            failures: 0,
            open_until: None,
        };
        let t0 = Instant::now();
        let now = 1_000_000;
        let mut item = queued(1, 1, "P1", now);
        let fail = || Err(DeliveryError::retry("connection refused"));
        let mut moves = Vec::new();
        for n in 1..=3u32 {
            let at = (now + u64::from(n), t0 + Duration::from_millis(u64::from(n)));
            let (d, attempt, moved) =
                decide(&cfg, &mut breaker, &mut item, fail(), Duration::ZERO, at);
            let Decision::Retry { delay, .. } = d else {
                panic!("attempt {n}: {d:?}")
            };
            let full = 1000u64 << (n - 1);
            let ms = delay.as_millis() as u64;
            assert!(ms >= full / 2 && ms <= full, "attempt {n}: {ms}");
            assert_eq!(item.next_attempt_ms, at.0 + ms);
            assert_eq!(item.last_error, "connection refused");
            assert_eq!((attempt.attempt, attempt.outcome.as_str()), (n, "retry"));
            moves.push(moved);
        }
        assert_eq!(
            moves,
            [
                BreakerMove::Unchanged,
                BreakerMove::Opened,
                BreakerMove::KeptOpen
            ]
        );
        assert_eq!(
            breaker.open_until,
            Some(t0 + Duration::from_millis(3) + Duration::from_secs(30))
        );
        // The fourth failure is the last allowed attempt.
        let (d, attempt, _) = decide(
            &cfg,
            &mut breaker,
            &mut item,
            fail(),
            Duration::ZERO,
            (now + 4, t0),
        );
        let Decision::DeadLetter { reason } = d else {
            panic!("{d:?}")
        };
        assert_eq!(reason, "gave up after 4 attempts: connection refused");
        assert_eq!(item.last_error, reason);
        assert_eq!(attempt.outcome, "dead_letter");
        // A delivery closes the breaker and resets its count.
        let mut next = queued(2, 2, "P2", now);
        let (d, attempt, moved) = decide(
            &cfg,
            &mut breaker,
            &mut next,
            receipt(),
            Duration::from_millis(7),
            (now + 5, t0),
        );
        assert!(matches!(d, Decision::Delivered(_)), "{d:?}");
        assert_eq!(moved, BreakerMove::Closed);
        assert_eq!((breaker.failures, breaker.open_until), (0, None));
        assert_eq!(
            (attempt.outcome.as_str(), attempt.duration_ms, next.attempts),
            ("delivered", 7, 1)
        );
    }

    #[test]
    fn a_permanent_error_or_an_old_item_goes_to_the_dead_letters_at_once() {
        let cfg = DeliveryConfig {
            max_age_secs: 60,
            breaker_failures: 1,
            ..DeliveryConfig::default()
        };
        let mut breaker = Breaker {
            failures: 0,
            open_until: None,
        };
        let now = 10_000_000;
        let mut item = queued(1, 1, "P1", now);
        let refused = Err(DeliveryError::permanent("HTTP 400"));
        let (d, _, moved) = decide(
            &cfg,
            &mut breaker,
            &mut item,
            refused,
            Duration::ZERO,
            (now, Instant::now()),
        );
        assert!(
            matches!(d, Decision::DeadLetter { ref reason } if reason == "HTTP 400"),
            "{d:?}"
        );
        assert_eq!(
            (moved, breaker.failures),
            (BreakerMove::Unchanged, 0),
            "not the destination's fault"
        );
        let mut old = queued(2, 2, "P1", now - 61_000);
        let mut asked = DeliveryError::retry("HTTP 503");
        asked.retry_after = Some(Duration::from_secs(5));
        let (d, _, moved) = decide(
            &cfg,
            &mut breaker,
            &mut old,
            Err(asked),
            Duration::ZERO,
            (now, Instant::now()),
        );
        assert!(
            matches!(d, Decision::DeadLetter { ref reason } if reason == "gave up after 1 attempts: HTTP 503"),
            "{d:?}"
        );
        assert_eq!(moved, BreakerMove::Opened);
        let mut young = queued(3, 3, "P1", now);
        let mut asked = DeliveryError::retry("HTTP 429");
        asked.retry_after = Some(Duration::from_secs(120));
        let (d, _, _) = decide(
            &cfg,
            &mut breaker,
            &mut young,
            Err(asked),
            Duration::ZERO,
            (now, Instant::now()),
        );
        assert!(
            matches!(d, Decision::Retry { delay, .. } if delay == Duration::from_secs(120)),
            "{d:?}"
        );
        assert_eq!(young.next_attempt_ms, now + 120_000);
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
        let hub = Hub::new(
            store.clone(),
            metrics.clone(),
            EventBus::default(),
            CancellationToken::new(),
        );
        hub.start_channel(
            "lab",
            &[DestinationConfig::File(FileConfig {
                name: "files".into(),
                folder: folder.clone(),
                extension: "hl7".into(),
                batch_size: 8,
                delivery: DeliveryConfig {
                    concurrency: 3,
                    ..DeliveryConfig::default()
                },
            })],
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
            assert_eq!(attempts[0].outcome, "delivered");
            let file = folder.join(format!("{}-files.hl7", item.message_id));
            assert_eq!(std::fs::read(&file).expect("file"), item.body);
        }
        assert!(store.outbox_items("lab/files").expect("items").is_empty());
        hub.stop_channel("lab").await;
    }

    #[test]
    fn backoff_doubles_caps_and_honours_retry_after() {
        let cfg = DeliveryConfig {
            backoff_base_ms: 1000,
            backoff_max_ms: 300_000,
            ..DeliveryConfig::default()
        };
        for attempts in 1..=12u32 {
            let d = backoff(&cfg, attempts, None).as_millis() as u64;
            let full = (1000u64 << (attempts - 1)).min(300_000);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempts}: {d} not in [{}, {full}]",
                full / 2
            );
        }
        assert_eq!(
            backoff(&cfg, 1, Some(Duration::from_secs(120))),
            Duration::from_secs(120)
        );
    }
}
