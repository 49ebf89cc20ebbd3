//! Pausing a channel: an operator stops a channel from taking new messages
//! (`POST /api/channels/{name}/pause`, the console's Pause button) without stopping the engine
//! or the channel's deliveries, and resumes it later (`.../resume`).
//!
//! While a channel is paused:
//! - an **MLLP** source keeps its connections and answers every message with AR (CR in
//!   enhanced mode) and an ERR segment (207, "channel paused by operator"); the message is not
//!   stored, so the sender keeps it and sends it again later, as after any AR. Choosing to
//!   answer rather than stop accepting keeps senders from piling up reconnects and tells them
//!   why in the answer;
//! - an **HTTP** source (FHIR, webhooks) answers 503 with a JSON body (a FHIR
//!   OperationOutcome with code `transient`, the vendor's error object for the webhooks)
//!   saying "channel paused by operator"; nothing is stored;
//! - a **polling** source does not poll: SFTP does not list its folder (files stay where they
//!   are), Latrexa fetches no pending bookings and leaves those its hub offers at Latrexa,
//!   where they stay pending until the resume;
//! - an operator's resend into the channel (`POST /api/messages/{id}/resend`) is refused the
//!   same way;
//! - **deliveries go on**: what the channel already stored is delivered, retried and
//!   dead-lettered as usual, so its outbox drains.
//!
//! The pause is written to the store's `paused` tree and committed before the API answers, so
//! it survives a restart and a reload (the flag is kept per channel name, whatever its
//! settings). Each pause and resume writes an audit record (`channel_pause`,
//! `channel_resume`), and `switchboard_channel_paused{channel}` is 1 while paused; `/health`
//! and `/api/channels` list the paused channels.

use crate::metrics::Metrics;
use crate::store::kind::AuditAction;
use crate::store::outbox::AuditRecord;
use crate::store::{PauseRecord, Store, StoreError};
use channels::source::PauseFlag;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use tracing::{info, warn};

/// The reason a paused channel gives, in its answers.
pub const PAUSED_REASON: &str = "channel paused by operator";

/// What one channel's pause state is.
#[derive(Debug, Default)]
struct Entry {
    flag: PauseFlag,
    record: Option<PauseRecord>,
}

/// Every channel's pause state, shared by the topology (which hands the flags to sources and
/// ingest) and the admin API (which changes them).
pub struct Pauses {
    store: Store,
    metrics: Metrics,
    state: Mutex<HashMap<String, Entry>>,
}

impl Pauses {
    /// The pause state as the store has it (channels paused before a restart stay paused).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the `paused` tree cannot be read.
    pub fn load(store: Store, metrics: Metrics) -> Result<Pauses, StoreError> {
        let state = store
            .paused_channels()?
            .into_iter()
            .map(|(name, record)| {
                let flag = PauseFlag::default();
                flag.set(true);
                (
                    name,
                    Entry {
                        flag,
                        record: Some(record),
                    },
                )
            })
            .collect();
        Ok(Pauses {
            store,
            metrics,
            state: Mutex::new(state),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The flag of `channel` (created, not paused, the first time), for its source and ingest;
    /// sets `switchboard_channel_paused` to what it says.
    pub fn flag(&self, channel: &str) -> PauseFlag {
        let mut state = self.lock();
        let entry = state.entry(channel.to_string()).or_default();
        self.metrics
            .channel_paused
            .with_label_values(&[channel])
            .set(i64::from(entry.record.is_some()));
        entry.flag.clone()
    }

    /// Who paused `channel` and when; `None` while it runs.
    pub fn status(&self, channel: &str) -> Option<PauseRecord> {
        self.lock().get(channel).and_then(|e| e.record.clone())
    }

    /// Every paused channel.
    pub fn paused(&self) -> BTreeMap<String, PauseRecord> {
        self.lock()
            .iter()
            .filter_map(|(name, e)| e.record.clone().map(|r| (name.clone(), r)))
            .collect()
    }

    /// Pauses (`Some(by)`) or resumes (`None`) `channel`: durable (written and committed)
    /// before the flag changes, audited, logged. Returns false when it already was so
    /// (nothing written).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the state cannot be written or committed; nothing changed.
    pub async fn set(&self, channel: &str, by: &str, pause: bool) -> Result<bool, StoreError> {
        if self.status(channel).is_some() == pause {
            return Ok(false);
        }
        let record = pause.then(|| PauseRecord {
            by: by.to_string(),
            at_ms: crate::delivery::now_ms(),
        });
        self.store.set_paused(channel, record.as_ref())?;
        self.store.commit().await?;
        {
            let mut state = self.lock();
            let entry = state.entry(channel.to_string()).or_default();
            entry.flag.set(pause);
            entry.record = record;
        }
        self.metrics
            .channel_paused
            .with_label_values(&[channel])
            .set(i64::from(pause));
        let action = if pause {
            AuditAction::ChannelPause
        } else {
            AuditAction::ChannelResume
        };
        let audited = self.store.audit(&AuditRecord {
            at_ms: crate::delivery::now_ms(),
            who: by.to_string(),
            action: action.into(),
            target: format!("channel {channel}"),
            count: 1,
            counts: Default::default(),
        });
        if let Err(e) = audited {
            warn!(channel = %channel, error = %e, "Cannot write the audit record of a pause or resume.");
        }
        if pause {
            info!(channel = %channel, by = %by, "Channel paused by an operator: new messages are refused, deliveries go on.");
        } else {
            info!(channel = %channel, by = %by, "Channel resumed by an operator.");
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;

    #[tokio::test]
    async fn a_pause_survives_a_restart_and_is_audited() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Metrics::new("t");
        {
            let store = Store::open(dir.path(), Durability::Os, &metrics).expect("open");
            let pauses = Pauses::load(store.clone(), metrics.clone()).expect("load");
            let flag = pauses.flag("lab");
            assert!(!flag.is_paused() && pauses.status("lab").is_none());
            assert!(pauses.set("lab", "ops", true).await.expect("pause"));
            assert!(
                flag.is_paused(),
                "the flag handed out earlier sees the pause"
            );
            assert!(
                !pauses.set("lab", "ops", true).await.expect("again"),
                "no change"
            );
            assert_eq!(metrics.channel_paused.with_label_values(&["lab"]).get(), 1);
            let audit = store.audit_log(10).expect("audit");
            assert_eq!(audit.len(), 1);
            assert_eq!(
                (audit[0].action.known(), audit[0].who.as_str()),
                (Some(AuditAction::ChannelPause), "ops")
            );
            store.flush().await.expect("flush");
        }
        let store =
            crate::store::tests::reopen(|| Store::open(dir.path(), Durability::Os, &metrics));
        let pauses = Pauses::load(store.clone(), metrics.clone()).expect("load");
        assert_eq!(pauses.status("lab").map(|r| r.by), Some("ops".into()));
        assert!(
            pauses.flag("lab").is_paused(),
            "still paused after a restart"
        );
        assert_eq!(pauses.paused().len(), 1);
        assert!(pauses.set("lab", "ops2", false).await.expect("resume"));
        assert!(!pauses.flag("lab").is_paused());
        assert!(store.paused_channels().expect("read").is_empty());
        assert_eq!(metrics.channel_paused.with_label_values(&["lab"]).get(), 0);
        assert_eq!(
            store.audit_log(10).expect("audit")[0].action,
            AuditAction::ChannelResume
        );
    }
}
