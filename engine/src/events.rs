//! The live event stream: what happens to messages, as it happens, for the admin API's
//! Server-Sent Events and the web console. Events carry ids, types and statuses only, never
//! message content. Slow listeners miss events rather than slowing the engine down.

use serde::Serialize;
use tokio::sync::broadcast;

/// One thing that happened to a message.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LiveEvent {
    /// `received`, `rejected`, `delivered`, `retrying`, `dead_letter`.
    pub kind: String,
    /// The message id (decimal).
    pub id: String,
    /// The channel.
    pub channel: String,
    /// `ADT^A04`, empty when unreadable.
    pub message_type: String,
    /// MSH-10.
    pub control_id: String,
    /// `channel/destination` for delivery events, else empty.
    pub destination: String,
    /// Unix milliseconds.
    pub at_ms: u64,
}

/// The broadcast bus.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<LiveEvent>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            tx: broadcast::channel(1024).0,
        }
    }
}

impl EventBus {
    /// Publishes an event; nobody listening is fine.
    pub fn publish(&self, event: LiveEvent) {
        let _ = self.tx.send(event);
    }

    /// Publishes the event `make` builds, building it only when someone listens (most of
    /// the time nobody does, and an event is several allocations per message).
    pub fn publish_with(&self, make: impl FnOnce() -> LiveEvent) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(make());
        }
    }

    /// A new listener, which sees events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.tx.subscribe()
    }
}
