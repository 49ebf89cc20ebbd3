//! What a delivery worker tells operators: one function per outcome that writes its log
//! line, moves its counters and gauges and publishes its live event together, so a log line
//! and its counter cannot drift apart. The series are looked up once, when the worker starts.
//! The lines of an item's outcome are written in the span of its message
//! ([`super::message_span`]), which names the message id and channel.

use super::schedule::BreakerMove;
use crate::events::{EventBus, LiveEvent};
use crate::metrics::Metrics;
use crate::store::outbox::OutboxItem;
use channels::destination::DeliveryError;
use std::time::Duration;
use tracing::{debug, error, info, warn};

/// The log lines, series and live events of one destination's outcomes.
pub(super) struct Report {
    /// `channel/destination`, as logged.
    name: String,
    channel: String,
    events: EventBus,
    /// `destination_up`: 1 while the destination takes deliveries.
    pub(super) up: prometheus::IntGauge,
    /// `delivery_duration`, observed once per item.
    pub(super) duration: prometheus::Histogram,
    delivered: prometheus::IntCounter,
    retried: prometheus::IntCounter,
    dead_letter: prometheus::IntCounter,
    dead_letters: prometheus::IntCounter,
    dead_letters_outstanding: prometheus::IntGauge,
    outbox_depth: prometheus::IntGauge,
    outbox_oldest_age: prometheus::IntGauge,
}

impl Report {
    /// The series of destination `dest` of `channel`; `name` is `channel/dest`.
    pub(super) fn new(
        metrics: &Metrics,
        events: EventBus,
        name: &str,
        channel: &str,
        dest: &str,
    ) -> Report {
        let labels = [channel, dest];
        let outcome = |o: &str| metrics.deliveries.with_label_values(&[channel, dest, o]);
        Report {
            name: name.to_owned(),
            channel: channel.to_owned(),
            events,
            up: metrics.destination_up.with_label_values(&labels),
            duration: metrics.delivery_duration.with_label_values(&labels),
            delivered: outcome("delivered"),
            retried: outcome("retried"),
            dead_letter: outcome("dead_letter"),
            dead_letters: metrics.dead_letters.with_label_values(&labels),
            dead_letters_outstanding: metrics.dead_letters_outstanding.with_label_values(&labels),
            outbox_depth: metrics.outbox_depth.with_label_values(&labels),
            outbox_oldest_age: metrics.outbox_oldest_age.with_label_values(&labels),
        }
    }

    /// An item delivered: the destination is up.
    pub(super) fn delivered(&self, item: &OutboxItem) {
        self.up.set(1);
        self.delivered.inc();
        debug!(destination = %self.name, "Delivered.");
        self.publish("delivered", item);
    }

    /// A failed attempt that will be tried again after `delay`.
    pub(super) fn retrying(&self, item: &OutboxItem, error: &DeliveryError, delay: Duration) {
        self.retried.inc();
        warn!(destination = %self.name, attempt = item.attempts, retry_in_ms = delay.as_millis() as u64, error = %error, "Delivery failed, will retry.");
        self.publish("retrying", item);
    }

    /// A delivery that failed for good, moved to the dead letters.
    pub(super) fn dead_letter(&self, item: &OutboxItem, reason: &str) {
        self.dead_letter.inc();
        self.dead_letters.inc();
        self.dead_letters_outstanding.inc();
        error!(destination = %self.name, attempts = item.attempts, error = %reason, "Delivery failed for good; moved to the dead letters.");
        self.publish("dead_letter", item);
    }

    /// A move of the circuit breaker; the destination is reported down while it is open.
    pub(super) fn breaker(&self, moved: BreakerMove, failures: u32, cooldown_secs: u64) {
        match moved {
            BreakerMove::Closed => {
                info!(destination = %self.name, "Destination is taking deliveries again.")
            }
            BreakerMove::Opened => {
                warn!(destination = %self.name, failures, cooldown_secs, "Destination is failing; pausing deliveries.");
                self.up.set(0);
            }
            BreakerMove::KeptOpen => self.up.set(0),
            BreakerMove::Unchanged => {}
        }
    }

    /// A health check passed (`first`: the previous one did not); `up` when the destination
    /// counts as up again (not while an open breaker's trial delivery is to decide).
    pub(super) fn health_passed(&self, first: bool, up: bool) {
        if first {
            info!(destination = %self.name, "Destination health check passed.");
        }
        if up {
            self.up.set(1);
        }
    }

    /// A health check failed (`first`: the previous one did not): the destination is down.
    pub(super) fn health_failed(&self, first: bool, error: &str) {
        if first {
            warn!(destination = %self.name, error = %error, "Destination health check failed; checking again while it is down.");
        }
        self.up.set(0);
    }

    /// Sets the outstanding dead letters to what the store counts.
    pub(super) fn dead_letters_counted(&self, n: u64) {
        self.dead_letters_outstanding
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The queue gauges: items waiting, and the age in seconds of the oldest (created at
    /// `oldest_ms`) at `now_ms`.
    pub(super) fn queue(&self, depth: usize, oldest_ms: Option<u64>, now_ms: u64) {
        self.outbox_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
        self.outbox_oldest_age.set(oldest_ms.map_or(0, |c| {
            i64::try_from(now_ms.saturating_sub(c) / 1000).unwrap_or(i64::MAX)
        }));
    }

    /// Publishes a live event about `item`.
    fn publish(&self, kind: &str, item: &OutboxItem) {
        self.events.publish_with(|| LiveEvent {
            kind: kind.into(),
            id: item.message_id.to_string(),
            channel: self.channel.clone(),
            message_type: String::new(),
            control_id: item.control_id.clone().unwrap_or_default(),
            destination: item.destination.clone(),
            at_ms: super::now_ms(),
        });
    }
}
