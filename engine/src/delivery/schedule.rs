//! The schedule of one destination's deliveries, without IO: which items go next, and when
//! the worker must wake.
//!
//! [`Schedule`] owns the per-partition FIFO queues, the retry timers, the circuit breaker,
//! the concurrency limit and the batching decisions. The worker (`super::Worker::run`) feeds
//! it events (an item arrived, a task ended, an attempt's outcome, the outcome written, a
//! health check passed) and asks it what to send ([`Schedule::next`]) and when to wake
//! ([`Schedule::wake_at`]); the worker does the sending, the store writes, the metrics and
//! the logs. Time is `tokio::time::Instant`, always passed in, so a test drives the schedule
//! with `tokio::time::pause` and `advance` instead of sleeping.
//!
//! The one read the schedule needs, an outbox item by its seq (to batch items of one kind,
//! and to skip items already finished elsewhere), is a function the caller passes to
//! [`Schedule::next`].

use crate::store::kind::{ItemPayload, Named, Outcome};
use crate::store::outbox::{Attempt, OutboxItem};
use channels::destination::{DeliveryConfig, DeliveryError, Receipt};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::Duration;
use tokio::time::Instant;

/// How long an item whose read from the outbox failed waits before it is read again.
const UNREADABLE_RETRY: Duration = Duration::from_secs(5);

/// The result of one delivery, as a task hands it back.
pub(crate) type DeliveryResult = Result<Receipt, DeliveryError>;

/// An outbox item as the caller of [`Schedule::next`] read it.
// Returned and matched at once, never stored: boxing the item would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Fetched {
    /// The item.
    Item(OutboxItem),
    /// No longer in the outbox (finished elsewhere, for example discarded by an operator).
    Gone,
    /// The read failed (the caller logged why); read again after [`UNREADABLE_RETRY`].
    Unreadable,
}

/// What a partition's queue does once an item's outcome was written (or could not be).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Delivered or dead-lettered, and recorded: the item leaves its queue.
    Done,
    /// The item stays at the head of its queue and is tried again at this time.
    RetryAt(Instant),
}

/// What the schedule decided for one attempt's outcome.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Delivered: record it.
    Delivered(Receipt),
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
pub(crate) enum BreakerMove {
    /// Nothing to report.
    Unchanged,
    /// It was open; a delivery closed it.
    Closed,
    /// It opened now.
    Opened,
    /// It was open and a failure kept it open for another cool-down.
    KeptOpen,
}

/// The circuit breaker of one destination.
#[derive(Debug, Default)]
pub(crate) struct Breaker {
    /// Retryable failures in a row.
    pub(crate) failures: u32,
    /// Open until then; `None` while closed. Past that time it is half-open: one delivery
    /// at a time, whose outcome closes or reopens it.
    pub(crate) open_until: Option<Instant>,
}

/// The queues, timers, breaker and batching of one destination (see the module).
pub(crate) struct Schedule {
    cfg: DeliveryConfig,
    /// `(batch size, linger)` for a destination that takes several items in one request.
    batching: Option<(usize, Duration)>,
    /// Whether a batch takes a partition's head with the items queued behind it.
    whole: bool,
    /// Partition -> `(seq, created_ms)` in order; heads wait in `ready` or `timers`.
    queues: HashMap<String, VecDeque<(u64, u64)>>,
    /// Every seq in `queues`: an item is queued once, though it can be handed over twice
    /// (read from the outbox at start, and again by `Hub::enqueue` when its message was
    /// being stored while the outbox was read, or after a channel restart). Queued twice,
    /// it would go twice in a batch of whole partitions.
    queued: HashSet<u64>,
    ready: VecDeque<String>,
    timers: BinaryHeap<Reverse<(Instant, String)>>,
    in_flight: HashSet<String>,
    /// Partitions whose head waits for an earlier master-data item (see `super`).
    parked: Vec<String>,
    /// Delivery tasks started and not yet ended.
    tasks: usize,
    breaker: Breaker,
    /// Since when a batch smaller than the batch size waits for more items.
    linger_since: Option<Instant>,
    /// When that wait ends, if the last [`Schedule::next`] lingered.
    linger_wake: Option<Instant>,
}

impl Schedule {
    /// An empty schedule. `batching` is the destination's `(batch size, linger in ms)`,
    /// `whole` whether its batches take whole partitions.
    pub(crate) fn new(cfg: DeliveryConfig, batching: Option<(usize, u64)>, whole: bool) -> Self {
        Schedule {
            cfg,
            batching: batching.map(|(size, linger_ms)| (size, Duration::from_millis(linger_ms))),
            whole,
            queues: HashMap::new(),
            queued: HashSet::new(),
            ready: VecDeque::new(),
            timers: BinaryHeap::new(),
            in_flight: HashSet::new(),
            parked: Vec::new(),
            tasks: 0,
            breaker: Breaker::default(),
            linger_since: None,
            linger_wake: None,
        }
    }

    /// An item read from the outbox at start, first tried at `due` (a retry's time is kept).
    /// False when it was queued already.
    pub(crate) fn resume(
        &mut self,
        partition: String,
        seq: u64,
        created_ms: u64,
        due: Instant,
    ) -> bool {
        if !self.queued.insert(seq) {
            return false;
        }
        let q = self.queues.entry(partition.clone()).or_default();
        if q.is_empty() {
            self.timers.push(Reverse((due, partition)));
        }
        q.push_back((seq, created_ms));
        true
    }

    /// An item handed over by the hub once its message is durable. Put in seq order, however
    /// the hand-overs of two messages interleaved, and never before a head already taken.
    pub(crate) fn arrived(&mut self, partition: String, seq: u64, created_ms: u64) {
        if !self.queued.insert(seq) {
            // Already queued from the outbox read at start.
            return;
        }
        let busy = self.in_flight.contains(&partition);
        let q = self.queues.entry(partition.clone()).or_default();
        let was_empty = q.is_empty();
        let at = q.iter().rposition(|(s, _)| *s < seq).map_or(0, |i| i + 1);
        let at = if busy { at.max(1).min(q.len()) } else { at };
        q.insert(at, (seq, created_ms));
        if was_empty && !busy {
            self.ready.push_back(partition);
        }
    }

    /// The deliveries to start now: each inner list is one task's items (one item, or a
    /// batch). Due retries become ready, parked partitions whose master data went are ready
    /// again, and then as many tasks start as the breaker and the concurrency limit allow;
    /// none when `may_start` is false (the store cannot record outcomes). `fetch` reads an
    /// outbox item by its seq.
    pub(crate) fn next(
        &mut self,
        now: Instant,
        may_start: bool,
        fetch: &mut dyn FnMut(u64) -> Fetched,
    ) -> Vec<Vec<(String, OutboxItem)>> {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse((_, p))) = self.timers.pop() {
                self.ready.push_back(p);
            }
        }
        let (queues, ready) = (&self.queues, &mut self.ready);
        self.parked.retain(|p| {
            let head = queues.get(p).and_then(|q| q.front()).map(|(s, _)| *s);
            let waits = head.is_some_and(|seq| waits_for_master(queues, p, seq));
            if !waits {
                ready.push_back(p.clone());
            }
            waits
        });
        self.linger_wake = None;
        let mut started = Vec::new();
        let half_open = match self.breaker.open_until {
            _ if !may_start => return started,
            Some(t) if now < t => return started,
            Some(_) => true,
            None => false,
        };
        let limit = if half_open {
            1
        } else {
            self.cfg.concurrency.max(1)
        };
        match self.batching {
            Some((size, linger)) => {
                while self.tasks < limit {
                    let Some(batch) = self.next_batch(now, size, linger, fetch) else {
                        break;
                    };
                    started.push(batch);
                }
            }
            None => {
                while self.tasks < limit {
                    let Some(one) = self.next_single(now, fetch) else {
                        break;
                    };
                    started.push(vec![one]);
                }
            }
        }
        started
    }

    /// The head of the next ready partition, marked in flight; `None` when none is ready.
    fn next_single(
        &mut self,
        now: Instant,
        fetch: &mut dyn FnMut(u64) -> Fetched,
    ) -> Option<(String, OutboxItem)> {
        loop {
            let p = self.ready.pop_front()?;
            if self.in_flight.contains(&p) {
                continue;
            }
            let Some(&(seq, _)) = self.queues.get(&p).and_then(|q| q.front()) else {
                continue;
            };
            if waits_for_master(&self.queues, &p, seq) {
                park(&mut self.parked, p);
                continue;
            }
            match fetch(seq) {
                Fetched::Item(item) => {
                    self.in_flight.insert(p.clone());
                    self.tasks += 1;
                    return Some((p, item));
                }
                Fetched::Gone => self.drop_head(&p),
                Fetched::Unreadable => self.timers.push(Reverse((now + UNREADABLE_RETRY, p))),
            }
        }
    }

    /// The next batch, its partitions marked in flight: the heads of ready partitions of the
    /// oldest head's kind (same payload and path), oldest first; for a destination that
    /// batches whole partitions, each head with the items queued behind it (of its kind, in
    /// order). `None` when nothing is ready, or while a batch smaller than `size` lingers
    /// for more items (then [`Schedule::wake_at`] names the end of the linger).
    fn next_batch(
        &mut self,
        now: Instant,
        size: usize,
        linger: Duration,
        fetch: &mut dyn FnMut(u64) -> Fetched,
    ) -> Option<Vec<(String, OutboxItem)>> {
        let mut heads: Vec<(String, OutboxItem)> = Vec::new();
        while let Some(p) = self.ready.pop_front() {
            if self.in_flight.contains(&p) || heads.iter().any(|(h, _)| *h == p) {
                continue;
            }
            let Some(&(seq, _)) = self.queues.get(&p).and_then(|q| q.front()) else {
                continue;
            };
            if waits_for_master(&self.queues, &p, seq) {
                park(&mut self.parked, p);
                continue;
            }
            match fetch(seq) {
                Fetched::Item(i) if self.whole => {
                    let room = size.saturating_sub(heads.len() + 1);
                    let followers: Vec<u64> = self
                        .queues
                        .get(&p)
                        .map(|q| q.iter().skip(1).map(|(s, _)| *s).take(room).collect())
                        .unwrap_or_default();
                    let head_kind = kind(&i);
                    heads.push((p.clone(), i));
                    for s in followers {
                        match fetch(s) {
                            Fetched::Item(f) if kind(&f) == head_kind => {
                                heads.push((p.clone(), f));
                            }
                            // Another kind, gone or unreadable: the rest wait for a later
                            // batch, in order.
                            _ => break,
                        }
                    }
                }
                Fetched::Item(i) => heads.push((p, i)),
                Fetched::Gone => self.drop_head(&p),
                Fetched::Unreadable => self.timers.push(Reverse((now + UNREADABLE_RETRY, p))),
            }
            // Enough for a full batch: the other ready partitions wait their turn (reading
            // every head of thousands of partitions for one batch would cost more than the
            // batch saves).
            if heads.len() >= size {
                break;
            }
        }
        let first = kind(&heads.first()?.1);
        let mut batch = Vec::new();
        let mut others = Vec::new();
        for h in heads {
            if batch.len() < size && kind(&h.1) == first {
                batch.push(h);
            } else {
                others.push(h);
            }
        }
        let full =
            batch.len() >= size || first.0 == ItemPayload::MappingFailed || !others.is_empty();
        let deadline = *self.linger_since.get_or_insert(now) + linger;
        if !full && now < deadline {
            // Wait a little for more items of this kind.
            for (p, _) in batch.into_iter().rev() {
                self.ready.push_front(p);
            }
            self.linger_wake = Some(deadline);
            return None;
        }
        self.linger_since = None;
        for (p, _) in others.into_iter().rev() {
            self.ready.push_front(p);
        }
        for (p, _) in &batch {
            self.in_flight.insert(p.clone());
        }
        self.tasks += 1;
        Some(batch)
    }

    /// Removes the head of `p`, already finished elsewhere; its next item becomes ready.
    fn drop_head(&mut self, p: &str) {
        if let Some(q) = self.queues.get_mut(p) {
            if let Some((gone, _)) = q.pop_front() {
                self.queued.remove(&gone);
            }
            if !q.is_empty() {
                self.ready.push_back(p.to_owned());
            }
        }
    }

    /// A delivery task ended; `partitions` are those of its items (none when it panicked).
    pub(crate) fn task_ended<'a>(&mut self, partitions: impl IntoIterator<Item = &'a str>) {
        self.tasks = self.tasks.saturating_sub(1);
        for p in partitions {
            self.in_flight.remove(p);
        }
    }

    /// An attempt ended with `result` after `took`, at `now_ms` (Unix ms, for the item) and
    /// `now`: counts the attempt on `item`, moves the breaker and decides between delivered,
    /// retry and dead letter ([`decide`]). The queue does not move until [`Schedule::settled`].
    pub(crate) fn decide(
        &mut self,
        item: &mut OutboxItem,
        result: DeliveryResult,
        took: Duration,
        now_ms: u64,
        now: Instant,
    ) -> (Decision, Attempt, BreakerMove) {
        decide(
            &self.cfg,
            &mut self.breaker,
            item,
            result,
            took,
            (now_ms, now),
        )
    }

    /// The outcomes of a round, as written: finished items leave their queues, retried ones
    /// wait for their timer. A round may finish several items of one partition: each leaves
    /// its own queue entry; the partition is ready again unless one of them retries.
    pub(crate) fn settled(&mut self, settled: Vec<(String, u64, Settled)>) {
        let mut finished: Vec<String> = Vec::new();
        let mut retrying: HashSet<String> = HashSet::new();
        for (p, seq, outcome) in settled {
            match outcome {
                Settled::Done => {
                    self.queued.remove(&seq);
                    if let Some(q) = self.queues.get_mut(&p) {
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
                    self.timers.push(Reverse((at, p)));
                }
            }
        }
        for p in finished {
            if self.queues.get(&p).is_some_and(VecDeque::is_empty) {
                self.queues.remove(&p);
            } else if !retrying.contains(&p) && self.queues.contains_key(&p) {
                self.ready.push_back(p);
            }
        }
    }

    /// A health check passed. With deliveries waiting behind an open breaker, its trial
    /// delivery decides (a peer can accept connections and still refuse every delivery), and
    /// this returns false; otherwise the breaker closes and this returns true (the
    /// destination is up).
    pub(crate) fn health_passed(&mut self) -> bool {
        if self.breaker.open_until.is_some() && !self.queued.is_empty() {
            return false;
        }
        self.breaker = Breaker::default();
        true
    }

    /// When the worker must look again even if nothing else happens: the end of an open
    /// breaker's cool-down (nothing starts before it), else the next retry; and the end of
    /// a batch's linger. `None`: only an event can change anything.
    pub(crate) fn wake_at(&self, now: Instant) -> Option<Instant> {
        let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
        let breaker_wait = self.breaker.open_until.filter(|t| *t > now);
        match (breaker_wait.or(next_timer), self.linger_wake) {
            (Some(w), Some(l)) => Some(w.min(l)),
            (w, l) => w.or(l),
        }
    }

    /// Items queued (waiting, in flight or retrying).
    pub(crate) fn depth(&self) -> usize {
        self.queued.len()
    }

    /// The creation time (Unix ms) of the oldest head of a queue.
    pub(crate) fn oldest_created_ms(&self) -> Option<u64> {
        self.queues
            .values()
            .filter_map(|q| q.front().map(|(_, c)| *c))
            .min()
    }

    /// The breaker, for reports.
    pub(crate) fn breaker(&self) -> &Breaker {
        &self.breaker
    }
}

/// What decides whether two items may share a batch: their payload kind and path.
fn kind(item: &OutboxItem) -> (Named<ItemPayload>, Option<String>) {
    (item.payload.clone(), item.path.clone())
}

/// True when the head `seq` of partition `p` must wait: master data queued before it is not
/// delivered yet (see `super`).
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
    let (destination, n) = (item.destination.clone(), item.attempts);
    let attempt = |outcome: Outcome, status, detail: &str, answer: &Option<String>| Attempt {
        destination: destination.clone(),
        attempt: n,
        at_ms: now_ms,
        outcome: outcome.into(),
        status,
        detail: detail.to_owned(),
        duration_ms: took.as_millis() as u64,
        answer: answer.clone(),
    };
    let e = match result {
        Ok(receipt) => {
            breaker.failures = 0;
            let moved = match breaker.open_until.take() {
                Some(_) => BreakerMove::Closed,
                None => BreakerMove::Unchanged,
            };
            let attempt = attempt(
                Outcome::Delivered,
                receipt.status,
                &receipt.detail,
                &receipt.answer,
            );
            item.last_error.clear();
            return (Decision::Delivered(receipt), attempt, moved);
        }
        Err(e) => e,
    };
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
        let attempt = attempt(Outcome::Retry, e.status, &e.reason, &e.answer);
        item.last_error = e.reason.clone();
        return (Decision::Retry { error: e, delay }, attempt, moved);
    }
    let reason = if e.is_retryable() {
        format!("gave up after {} attempts: {}", item.attempts, e.reason)
    } else {
        e.reason.clone()
    };
    let attempt = attempt(Outcome::DeadLetter, e.status, &e.reason, &e.answer);
    item.last_error = reason.clone();
    (Decision::DeadLetter { reason }, attempt, moved)
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

#[cfg(test)]
mod tests {
    use super::*;
    use channels::kind::PayloadKind;

    fn queued(id: u64, seq: u64, partition: &str, created_at_ms: u64) -> OutboxItem {
        OutboxItem {
            partition: partition.into(),
            control_id: Some(format!("C{seq}")),
            body: format!("MSH|^~\\&|HIS|||||||C{seq}\r").into_bytes(),
            ..OutboxItem::sample("lab/files", id, seq, created_at_ms)
        }
    }

    fn failure() -> DeliveryResult {
        Err(DeliveryError::retry("connection refused"))
    }

    /// A schedule over an outbox in memory, driven the way the worker drives it, on tokio's
    /// clock, paused (`#[tokio::test(start_paused = true)]`): time moves only when the test
    /// calls [`Bench::advance`], so nothing sleeps and nothing depends on how fast the test
    /// runs.
    struct Bench {
        schedule: Schedule,
        outbox: HashMap<u64, OutboxItem>,
        start: Instant,
        seq: u64,
    }

    /// Wall-clock milliseconds at the bench's start.
    const WALL: u64 = 1_000_000_000;

    impl Bench {
        fn new(cfg: DeliveryConfig, batching: Option<(usize, u64)>, whole: bool) -> Bench {
            Bench {
                schedule: Schedule::new(cfg, batching, whole),
                outbox: HashMap::new(),
                start: Instant::now(),
                seq: 0,
            }
        }

        /// A new item of partition `p` and payload kind `kind`, handed over; its seq.
        fn add_kind(&mut self, p: &str, kind: PayloadKind) -> u64 {
            self.seq += 1;
            let item = OutboxItem {
                payload: ItemPayload::Rendered(kind).into(),
                ..queued(self.seq, self.seq, p, WALL)
            };
            self.outbox.insert(self.seq, item);
            self.schedule.arrived(p.into(), self.seq, WALL);
            self.seq
        }

        fn add(&mut self, p: &str) -> u64 {
            self.add_kind(p, PayloadKind::Hl7)
        }

        /// Now, on the paused clock.
        fn now(&self) -> Instant {
            Instant::now()
        }

        /// Moves the paused clock on by `by`.
        async fn advance(&self, by: Duration) {
            tokio::time::advance(by).await;
        }

        /// Wall-clock milliseconds now: [`WALL`] plus the time the clock moved since the start.
        fn wall_ms(&self) -> u64 {
            WALL + self.now().duration_since(self.start).as_millis() as u64
        }

        /// The tasks the schedule starts now, as the seqs of their items.
        fn next(&mut self) -> Vec<Vec<u64>> {
            let outbox = &self.outbox;
            let mut fetch = |seq: u64| match outbox.get(&seq) {
                Some(item) => Fetched::Item(item.clone()),
                None => Fetched::Gone,
            };
            self.schedule
                .next(self.now(), true, &mut fetch)
                .into_iter()
                .map(|task| task.into_iter().map(|(_, item)| item.seq).collect())
                .collect()
        }

        /// Ends the task that carried `seqs`, each with `result`, and settles the outcomes
        /// as the worker does once they are written; the decisions, in order.
        fn end(&mut self, seqs: &[u64], result: impl Fn() -> DeliveryResult) -> Vec<Decision> {
            let each: Vec<(u64, DeliveryResult)> = seqs.iter().map(|s| (*s, result())).collect();
            self.end_each(each)
        }

        /// Ends the task that carried the items of `each`, each with its own result.
        fn end_each(&mut self, each: Vec<(u64, DeliveryResult)>) -> Vec<Decision> {
            let items: Vec<(OutboxItem, DeliveryResult)> = each
                .into_iter()
                .map(|(s, r)| (self.outbox[&s].clone(), r))
                .collect();
            self.schedule
                .task_ended(items.iter().map(|(i, _)| i.partition.as_str()));
            let mut decisions = Vec::new();
            let mut settled = Vec::new();
            for (mut item, result) in items {
                let (decision, _, _) = self.schedule.decide(
                    &mut item,
                    result,
                    Duration::ZERO,
                    self.wall_ms(),
                    self.now(),
                );
                let outcome = match &decision {
                    Decision::Retry { delay, .. } => {
                        self.outbox.insert(item.seq, item.clone());
                        Settled::RetryAt(self.now() + *delay)
                    }
                    Decision::Delivered(_) | Decision::DeadLetter { .. } => {
                        self.outbox.remove(&item.seq);
                        Settled::Done
                    }
                };
                settled.push((item.partition.clone(), item.seq, outcome));
                decisions.push(decision);
            }
            self.schedule.settled(settled);
            decisions
        }
    }

    fn delivered() -> DeliveryResult {
        Ok(Receipt {
            status: None,
            detail: "written".into(),
            answer: None,
        })
    }

    fn config() -> DeliveryConfig {
        DeliveryConfig {
            concurrency: 4,
            backoff_base_ms: 1000,
            backoff_max_ms: 1000,
            max_attempts: 20,
            breaker_failures: 100,
            ..DeliveryConfig::default()
        }
    }

    /// One partition's next item goes only once the previous one finished; another
    /// partition does not wait for it.
    #[tokio::test(start_paused = true)]
    async fn a_partition_sends_its_next_item_only_after_the_previous_one_finished() {
        let mut b = Bench::new(config(), None, false);
        let a = b.add("P1");
        let second = b.add("P1");
        let c = b.add("P2");
        assert_eq!(b.next(), [vec![a], vec![c]]);
        assert!(b.next().is_empty(), "P1's second item waits for its first");
        b.end(&[c], delivered);
        assert!(b.next().is_empty(), "P2's end does not release P1");
        b.end(&[a], delivered);
        assert_eq!(b.next(), [vec![second]]);
        b.end(&[second], delivered);
        assert_eq!(b.schedule.depth(), 0);
        assert_eq!(b.schedule.wake_at(b.now()), None);
    }

    /// Different partitions go in parallel, at most `concurrency` at a time.
    #[tokio::test(start_paused = true)]
    async fn partitions_go_in_parallel_up_to_the_concurrency() {
        let mut b = Bench::new(
            DeliveryConfig {
                concurrency: 2,
                ..config()
            },
            None,
            false,
        );
        let seqs: Vec<u64> = (1..=5).map(|n| b.add(&format!("P{n}"))).collect();
        assert_eq!(b.next(), [vec![seqs[0]], vec![seqs[1]]]);
        assert!(b.next().is_empty(), "two in flight");
        b.end(&[seqs[1]], delivered);
        assert_eq!(b.next(), [vec![seqs[2]]]);
        b.end(&[seqs[0]], delivered);
        b.end(&[seqs[2]], delivered);
        assert_eq!(b.next(), [vec![seqs[3]], vec![seqs[4]]]);
        assert_eq!(b.schedule.depth(), 2);
    }

    /// A failed head is tried again after its backoff, not before, and the items behind it
    /// in its partition wait for it.
    #[tokio::test(start_paused = true)]
    async fn a_retry_waits_for_its_backoff_and_holds_its_partition() {
        let mut b = Bench::new(config(), None, false);
        let a = b.add("P1");
        let second = b.add("P1");
        assert_eq!(b.next(), [vec![a]]);
        let decided = b.end(&[a], failure);
        let [Decision::Retry { delay, .. }] = decided.as_slice() else {
            panic!("{decided:?}")
        };
        let delay = *delay;
        assert!(
            (Duration::from_millis(500)..=Duration::from_secs(1)).contains(&delay),
            "{delay:?}"
        );
        assert_eq!(b.schedule.wake_at(b.now()), Some(b.now() + delay));
        assert!(
            b.next().is_empty(),
            "neither the retry nor the item behind it"
        );
        b.advance(delay - Duration::from_millis(1)).await;
        assert!(b.next().is_empty(), "1 ms early");
        b.advance(Duration::from_millis(1)).await;
        assert_eq!(b.next(), [vec![a]], "the same head again");
        assert_eq!(b.outbox[&a].attempts, 1);
        b.end(&[a], delivered);
        assert_eq!(b.next(), [vec![second]]);
    }

    /// After `breaker_failures` failures in a row nothing starts until the cool-down ends;
    /// then one trial delivery at a time, and its success lets the concurrency back.
    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_on_failures_in_a_row_and_a_trial_delivery_closes_it() {
        let mut b = Bench::new(
            DeliveryConfig {
                concurrency: 2,
                breaker_failures: 2,
                breaker_cooldown_secs: 30,
                ..config()
            },
            None,
            false,
        );
        let seqs: Vec<u64> = (1..=4).map(|n| b.add(&format!("P{n}"))).collect();
        assert_eq!(b.next(), [vec![seqs[0]], vec![seqs[1]]]);
        b.end(&[seqs[0]], failure);
        assert_eq!(b.schedule.breaker().open_until, None, "one failure");
        b.end(&[seqs[1]], failure);
        let open_until = b.schedule.breaker().open_until.expect("open");
        assert_eq!(open_until, b.now() + Duration::from_secs(30));
        assert!(b.next().is_empty(), "open: P3 and P4 wait too");
        assert_eq!(
            b.schedule.wake_at(b.now()),
            Some(open_until),
            "the cool-down, not the retries"
        );
        assert!(
            !b.schedule.health_passed(),
            "a health check does not close it while deliveries wait"
        );
        b.advance(Duration::from_secs(29)).await;
        assert!(b.next().is_empty(), "still open");
        b.advance(Duration::from_secs(1)).await;
        let trial = b.next();
        assert_eq!(trial.len(), 1, "half-open: one trial, {trial:?}");
        assert!(b.next().is_empty(), "one at a time while half-open");
        b.end(&trial[0], delivered);
        assert_eq!(b.schedule.breaker().open_until, None, "closed");
        assert_eq!(b.schedule.breaker().failures, 0);
        assert_eq!(b.next().len(), 2, "the concurrency is back");
    }

    /// A failed trial delivery keeps the breaker open for another cool-down.
    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_delivery_keeps_the_breaker_open() {
        let mut b = Bench::new(
            DeliveryConfig {
                breaker_failures: 1,
                breaker_cooldown_secs: 10,
                ..config()
            },
            None,
            false,
        );
        let a = b.add("P1");
        assert_eq!(b.next(), [vec![a]]);
        b.end(&[a], failure);
        b.advance(Duration::from_secs(10)).await;
        assert_eq!(b.next(), [vec![a]], "the trial");
        b.end(&[a], failure);
        assert_eq!(
            b.schedule.breaker().open_until,
            Some(b.now() + Duration::from_secs(10))
        );
        assert!(b.next().is_empty());
        // With nothing waiting, a passed health check closes it.
        b.advance(Duration::from_secs(10)).await;
        assert_eq!(b.next(), [vec![a]]);
        b.end(&[a], || Err(DeliveryError::permanent("HTTP 400")));
        assert!(b.schedule.health_passed());
        assert_eq!(b.schedule.breaker().open_until, None);
    }

    /// A batching destination: a batch takes up to the batch size of heads of one kind; a
    /// smaller one waits the linger for more, then goes as it is.
    #[tokio::test(start_paused = true)]
    async fn batches_fill_to_the_batch_size_and_linger_for_more() {
        let mut b = Bench::new(
            DeliveryConfig {
                concurrency: 1,
                ..config()
            },
            Some((3, 100)),
            false,
        );
        let first: Vec<u64> = (1..=2).map(|n| b.add(&format!("P{n}"))).collect();
        assert!(b.next().is_empty(), "two of three: lingers");
        assert_eq!(
            b.schedule.wake_at(b.now()),
            Some(b.now() + Duration::from_millis(100))
        );
        b.advance(Duration::from_millis(40)).await;
        let third = b.add("P3");
        let fourth = b.add("P4");
        assert_eq!(
            b.next(),
            [vec![first[0], first[1], third]],
            "full: goes at once, the fourth waits"
        );
        assert!(b.next().is_empty(), "one task at a time");
        b.end(&[first[0], first[1], third], delivered);
        assert!(b.next().is_empty(), "the fourth lingers");
        b.advance(Duration::from_millis(99)).await;
        assert!(b.next().is_empty());
        b.advance(Duration::from_millis(1)).await;
        assert_eq!(b.next(), [vec![fourth]], "the linger is over");
        b.end(&[fourth], delivered);
        // Another kind does not share a batch, and does not make the first kind wait.
        let hl7 = b.add("P5");
        let json = b.add_kind("P6", PayloadKind::Vendor(transforms::dest::Vendor::Opsport));
        assert_eq!(b.next(), [vec![hl7]]);
        b.end(&[hl7], delivered);
        assert!(b.next().is_empty(), "alone, it lingers");
        b.advance(Duration::from_millis(100)).await;
        assert_eq!(b.next(), [vec![json]]);
    }

    /// A destination that batches whole partitions takes a head with the items queued
    /// behind it, in order, up to the batch size.
    #[tokio::test(start_paused = true)]
    async fn whole_partition_batches_take_a_head_with_the_items_behind_it() {
        let mut b = Bench::new(config(), Some((3, 0)), true);
        let seqs: Vec<u64> = (0..4).map(|_| b.add("P1")).collect();
        assert_eq!(b.next(), [seqs[..3].to_vec()]);
        assert!(b.next().is_empty(), "the partition is in flight");
        // Handed over again while in flight (read at start and by the hub): still once.
        b.schedule.arrived("P1".into(), seqs[3], WALL);
        b.end(&seqs[..3], delivered);
        assert_eq!(b.next(), [vec![seqs[3]]]);
        b.end(&seqs[3..], delivered);
        assert_eq!(b.schedule.depth(), 0);
        // A batch whose later items must be tried again (held behind a failed one): the
        // delivered item leaves, and the partition waits for the retry's time.
        let p2: Vec<u64> = (0..3).map(|_| b.add("P2")).collect();
        assert_eq!(b.next(), std::slice::from_ref(&p2));
        b.end_each(vec![
            (p2[0], delivered()),
            (p2[1], failure()),
            (p2[2], failure()),
        ]);
        assert!(b.next().is_empty(), "the partition waits for its retry");
        b.advance(Duration::from_secs(1)).await;
        assert_eq!(b.next(), [p2[1..].to_vec()], "in order, once each");
    }

    /// After `max_attempts` failures the head goes to the dead letters with the reason, and
    /// its partition moves on.
    #[tokio::test(start_paused = true)]
    async fn an_item_is_dead_lettered_after_max_attempts_and_its_partition_moves_on() {
        let mut b = Bench::new(
            DeliveryConfig {
                max_attempts: 3,
                ..config()
            },
            None,
            false,
        );
        let a = b.add("P1");
        let second = b.add("P1");
        for n in 1..=2 {
            assert_eq!(b.next(), [vec![a]], "attempt {n}");
            let decided = b.end(&[a], failure);
            assert!(
                matches!(decided[..], [Decision::Retry { .. }]),
                "{decided:?}"
            );
            b.advance(Duration::from_secs(1)).await;
        }
        assert_eq!(b.next(), [vec![a]], "attempt 3");
        let decided = b.end(&[a], failure);
        let [Decision::DeadLetter { reason }] = decided.as_slice() else {
            panic!("{decided:?}")
        };
        assert_eq!(reason, "gave up after 3 attempts: connection refused");
        assert_eq!(b.next(), [vec![second]], "at once, without a backoff");
    }

    /// An item read from the outbox at start keeps its retry time, and one handed over
    /// again by the hub is queued once.
    #[tokio::test(start_paused = true)]
    async fn resumed_items_keep_their_retry_time_and_are_queued_once() {
        let mut b = Bench::new(config(), None, false);
        b.outbox.insert(7, queued(7, 7, "P1", WALL));
        let due = b.now() + Duration::from_secs(5);
        assert!(b.schedule.resume("P1".into(), 7, WALL, due));
        assert!(!b.schedule.resume("P1".into(), 7, WALL, due));
        b.schedule.arrived("P1".into(), 7, WALL);
        assert_eq!(b.schedule.depth(), 1);
        assert!(b.next().is_empty());
        assert_eq!(b.schedule.wake_at(b.now()), Some(due));
        b.advance(Duration::from_secs(5)).await;
        assert_eq!(b.next(), [vec![7]]);
        assert!(b.next().is_empty());
    }

    /// An item queued after master data that is not delivered yet waits for it without an
    /// attempt; an item already gone from the outbox is skipped.
    #[tokio::test(start_paused = true)]
    async fn items_wait_for_master_data_queued_before_them() {
        let mut b = Bench::new(config(), None, false);
        let master = b.add(crate::routing::MASTER_PARTITION);
        let appointment = b.add("P1");
        assert_eq!(b.next(), [vec![master]]);
        b.end(&[master], failure);
        b.advance(Duration::from_secs(1)).await;
        assert_eq!(b.next(), [vec![master]], "only the master data, again");
        b.end(&[master], delivered);
        assert_eq!(b.next(), [vec![appointment]]);
        b.end(&[appointment], delivered);
        let gone = b.add("P2");
        let after = b.add("P2");
        b.outbox.remove(&gone);
        assert_eq!(b.next(), [vec![after]]);
        assert_eq!(b.schedule.oldest_created_ms(), Some(WALL));
    }

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
            assert_eq!(
                (attempt.attempt, attempt.outcome.known()),
                (n, Some(Outcome::Retry))
            );
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
        assert_eq!(attempt.outcome, Outcome::DeadLetter);
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
            (attempt.outcome.known(), attempt.duration_ms, next.attempts),
            (Some(Outcome::Delivered), 7, 1)
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
