//! After ingest: routing a stored message into its destinations' outboxes, at first receipt,
//! after a restart, and when an operator asks to reprocess.

use crate::delivery::{now_ms, Hub};
use crate::metrics::{message_type_label, Metrics};
use crate::routing::Router;
use crate::store::outbox::{AuditRecord, OutboxItem};
use crate::store::{Status, Store, StoreError};
use std::collections::HashMap;
use std::sync::Arc;
use tracing::{debug, warn};

/// Routers of every channel, the delivery hub and the store.
pub struct Pipeline {
    routers: std::sync::RwLock<HashMap<String, Arc<Router>>>,
    hub: Arc<Hub>,
    store: Store,
    metrics: Metrics,
    /// Cluster mode: the stream that takes every routed message (set once, at start).
    cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
}

/// Why a message could not be (re)routed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// No such message.
    #[error("no message with id {0}")]
    NotFound(u64),
    /// The message's channel is no longer configured.
    #[error("channel '{0}' is not configured")]
    UnknownChannel(String),
    /// A rejected message is never routed.
    #[error("message {0} was rejected and is not routed")]
    Rejected(u64),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Cluster mode: the stream did not take the new deliveries (nothing was changed).
    #[error("{0}")]
    Stream(String),
}

impl Pipeline {
    /// Builds the pipeline.
    pub fn new(
        routers: HashMap<String, Router>,
        hub: Arc<Hub>,
        store: Store,
        metrics: Metrics,
    ) -> Self {
        Pipeline {
            routers: std::sync::RwLock::new(
                routers.into_iter().map(|(k, v)| (k, Arc::new(v))).collect(),
            ),
            hub,
            store,
            metrics,
            cluster: std::sync::OnceLock::new(),
        }
    }

    /// Cluster mode from now on: routed messages go to `cluster`'s stream, not to this
    /// node's delivery workers (see [`crate::cluster`]).
    pub fn set_cluster(&self, cluster: Arc<crate::cluster::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// The cluster, in cluster mode.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.get()
    }

    /// The router of a channel.
    fn router(&self, channel: &str) -> Option<Arc<Router>> {
        self.routers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(channel)
            .cloned()
    }

    /// Sets (or, with `None`, removes) the router of a channel; used by reload.
    pub fn set_router(&self, channel: &str, router: Option<Router>) {
        let mut routers = self
            .routers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match router {
            Some(r) => routers.insert(channel.to_string(), Arc::new(r)),
            None => routers.remove(channel),
        };
    }

    /// The delivery hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The business keys of a message being ingested (see [`crate::keys`]) and its
    /// deliveries, counting it as routed or filtered, from one canonical reading of the
    /// message: it is decoded, parsed and mapped once for both. The caller writes them with
    /// the message ([`Store::put`]) and hands the deliveries to the hub once they are durable.
    pub fn keys_and_render(
        &self,
        record: &crate::store::MessageRecord,
        raw: &[u8],
    ) -> (Vec<transforms::model::BusinessKey>, Vec<OutboxItem>) {
        let router = self.router(&record.channel);
        let timezone = router.as_ref().and_then(|r| r.timezone());
        // Business keys hold no times: the reading in the channel's timezone serves both.
        let read = crate::formats::events_of_in(record, raw, timezone);
        let business_keys = match &read {
            crate::formats::Meaning::Events(events) => crate::keys::keys_of_events(events),
            _ => Vec::new(),
        };
        let Some(router) = router else {
            return (business_keys, Vec::new());
        };
        let store = &self.store;
        let items = router.render_read(
            record,
            raw,
            Some(read),
            &mut || store.next_seq(),
            now_ms(),
            (None, ""),
            Some(store),
        );
        let (code, trigger) = record
            .message_type
            .split_once('^')
            .unwrap_or((&record.message_type, ""));
        let outcome = if items.is_empty() {
            "filtered"
        } else {
            "routed"
        };
        self.metrics
            .processed
            .with_label_values(&[&record.channel, &message_type_label(code, trigger), outcome])
            .inc();
        (business_keys, items)
    }

    /// A stored message, its raw bytes and its deliveries rendered again through the
    /// current configuration.
    fn render_again(
        &self,
        id: u64,
        only: Option<&[String]>,
        key_suffix: &str,
    ) -> Result<(crate::store::MessageRecord, Vec<u8>, Vec<OutboxItem>), RouteError> {
        let record = self.store.get(id)?.ok_or(RouteError::NotFound(id))?;
        if record.status == Status::Rejected {
            return Err(RouteError::Rejected(id));
        }
        let router = self
            .router(&record.channel)
            .ok_or_else(|| RouteError::UnknownChannel(record.channel.clone()))?;
        let raw = self.store.raw(id)?.unwrap_or_default();
        let store = self.store.clone();
        let items = router.render(
            &record,
            &raw,
            &mut || store.next_seq(),
            now_ms(),
            only,
            key_suffix,
            Some(&self.store),
        );
        Ok((record, raw, items))
    }

    fn route_to(
        &self,
        id: u64,
        only: Option<&[String]>,
        key_suffix: &str,
    ) -> Result<Status, RouteError> {
        let (record, _, items) = self.render_again(id, only, key_suffix)?;
        // In the message's span, as at its receipt and its deliveries.
        let _span = crate::delivery::message_span(Some(id), &record.channel).entered();
        let routed = self.store.route(id, &items)?;
        debug!(deliveries = items.len(), "Message reprocessed.");
        self.hub.enqueue(&items);
        Ok(routed.status)
    }

    /// Routes a stored message again, to all or `only` the named destinations, without an
    /// audit record (the caller writes one, e.g. one for a whole bulk request).
    ///
    /// # Errors
    ///
    /// As [`Pipeline::reprocess`].
    pub fn route_again(&self, id: u64, only: Option<&[String]>) -> Result<Status, RouteError> {
        let record = self.store.get(id)?.ok_or(RouteError::NotFound(id))?;
        let suffix = format!("-r{}", record.deliveries.len());
        self.route_to(id, only, &suffix)
    }

    /// Sends a message again through the current configuration, to all or `only` the named
    /// destinations of its channel, and records who asked.
    ///
    /// # Errors
    ///
    /// [`RouteError`] when the message cannot be routed.
    pub fn reprocess(
        &self,
        id: u64,
        only: Option<&[String]>,
        who: &str,
    ) -> Result<Status, RouteError> {
        let status = self.route_again(id, only)?;
        self.audit_reprocess(id, only, who);
        Ok(status)
    }

    /// Cluster mode: renders a message this node holds again (all or `only` the named
    /// destinations) and publishes the new deliveries to the work stream, where the owner of
    /// their partition delivers them in order ([`crate::cluster::Cluster::publish_again`]);
    /// nothing goes to this node's delivery workers. The idempotency keys carry the time of
    /// the request, since the copies of a message on different nodes count their deliveries
    /// differently. Returns the number of deliveries published (the message is `routed`).
    ///
    /// # Errors
    ///
    /// [`RouteError`] when the message cannot be routed or the stream did not take it.
    pub async fn reprocess_in_cluster(
        &self,
        cluster: &crate::cluster::Cluster,
        id: u64,
        only: Option<&[String]>,
        who: Option<&str>,
    ) -> Result<usize, RouteError> {
        let at = now_ms();
        let (record, raw, items) = self.render_again(id, only, &format!("-r{at}"))?;
        if !items.is_empty() {
            let again = format!("{id}-r{at}-{}", items[0].seq);
            cluster
                .publish_again(&record, &raw, &items, &again, &self.store.seal)
                .await
                .map_err(RouteError::Stream)?;
        }
        if let Some(who) = who {
            self.audit_reprocess(id, only, who);
        }
        Ok(items.len())
    }

    fn audit_reprocess(&self, id: u64, only: Option<&[String]>, who: &str) {
        let audited = self.store.audit(&AuditRecord {
            at_ms: now_ms(),
            who: who.to_string(),
            action: crate::store::kind::AuditAction::Reprocess.into(),
            target: match only {
                Some(o) => format!("message {id} to {}", o.join(",")),
                None => format!("message {id}"),
            },
            count: 1,
            counts: Default::default(),
        });
        // The message was reprocessed: a missing audit record must not say otherwise.
        if let Err(e) = audited {
            warn!(id, error = %e, "Cannot write the audit record of a reprocess; skipped.");
        }
    }
}
