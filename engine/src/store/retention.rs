//! Retention: removes messages older than their channel's retention, oldest first.
//!
//! Message ids are time-ordered, so the candidates are a key range from the front of
//! `messages`. A message whose deliveries are still pending is kept, whatever its age.

use super::{outbox::DeliveryStatus, Store, StoreError};
use std::collections::HashMap;

/// What one pruning pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Messages removed.
    pub removed: u64,
    /// Old messages kept because a delivery is still pending.
    pub kept_pending: u64,
}

/// Retention per channel, in days, and the default for channels not listed.
#[derive(Debug, Clone)]
pub struct RetentionPolicy {
    /// Days for channels not in `per_channel`.
    pub default_days: u32,
    /// Channel name -> days.
    pub per_channel: HashMap<String, u32>,
}

impl RetentionPolicy {
    fn cutoff_ms(&self, channel: &str, now_ms: u64) -> u64 {
        let days = self
            .per_channel
            .get(channel)
            .copied()
            .unwrap_or(self.default_days);
        now_ms.saturating_sub(u64::from(days) * 86_400_000)
    }
}

impl Store {
    /// Removes what is older than the policy allows at `now_ms` (the clock is passed in).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails; what was removed before stays removed.
    pub fn prune(&self, policy: &RetentionPolicy, now_ms: u64) -> Result<PruneReport, StoreError> {
        let shortest = policy
            .per_channel
            .values()
            .copied()
            .chain([policy.default_days])
            .min()
            .unwrap_or(policy.default_days);
        // Nothing younger than the shortest retention can be due, so the scan stops there.
        let horizon = now_ms.saturating_sub(u64::from(shortest) * 86_400_000) << 20;
        let mut report = PruneReport::default();
        for item in self.messages.range(..horizon.to_be_bytes()) {
            let (k, v) = item?;
            let rec: super::MessageRecord =
                serde_json::from_slice(&v).map_err(|e| StoreError::Codec(e.to_string()))?;
            if rec.received_at_ms >= policy.cutoff_ms(&rec.channel, now_ms) {
                continue;
            }
            if rec
                .deliveries
                .iter()
                .any(|d| d.status == DeliveryStatus::Pending)
                || rec.status == super::Status::Received
            {
                report.kept_pending += 1;
                continue;
            }
            self.raw.remove(&k)?;
            self.unindex_business_keys(&rec)?;
            if !rec.control_id.is_empty() {
                let mut idx = rec.control_id.as_bytes().to_vec();
                idx.push(0);
                idx.extend_from_slice(&k);
                self.by_control_id.remove(idx)?;
                let sender_key = format!(
                    "{}\u{1f}{}\u{1f}{}",
                    rec.sending_application, rec.sending_facility, rec.control_id
                );
                // Only if it still points at this message (a later resend may own it).
                let _ = self.dedup.compare_and_swap(
                    sender_key.as_bytes(),
                    Some(k.as_ref()),
                    None as Option<&[u8]>,
                )?;
            }
            for a in self.attempts.scan_prefix(&k).keys() {
                self.attempts.remove(a?)?;
            }
            for d in rec
                .deliveries
                .iter()
                .filter(|d| d.status == DeliveryStatus::DeadLetter)
            {
                self.dead_letters
                    .remove(super::outbox::outbox_key(&d.destination, d.seq))?;
            }
            self.messages.remove(&k)?;
            report.removed += 1;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use crate::metrics::Metrics;
    use crate::store::outbox::{DeliveryState, OutboxItem};
    use crate::store::{MessageRecord, Status};

    const DAY: u64 = 86_400_000;

    fn record(store: &Store, channel: &str, at_ms: u64, control_id: &str) -> MessageRecord {
        MessageRecord {
            id: store.next_id(at_ms),
            channel: channel.into(),
            received_at_ms: at_ms,
            peer: String::new(),
            format: "hl7v2".into(),
            message_type: "ADT^A04".into(),
            control_id: control_id.into(),
            sending_application: "HIS".into(),
            sending_facility: "MAIN".into(),
            version: "2.5".into(),
            charset: "utf-8".into(),
            size: 3,
            truncated: false,
            status: Status::Rejected,
            ack_code: "AA".into(),
            ack: String::new(),
            errors: vec![],
            config_version: String::new(),
            deliveries: vec![],
            business_keys: vec![],
            dedup_key: String::new(),
        }
    }

    #[tokio::test]
    async fn prunes_old_keeps_young_and_undelivered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path(), Durability::Os, &Metrics::new("t")).expect("open");
        let now = 400 * DAY;
        // Channel a: default 90 days. Channel b: 10 days. Ids are made in time order.
        let mut pending = record(&s, "a", now - 200 * DAY, "PENDING");
        let old_a = record(&s, "a", now - 100 * DAY, "OLD-A");
        let young_a = record(&s, "a", now - 80 * DAY, "YOUNG-A");
        let old_b = record(&s, "b", now - 11 * DAY, "OLD-B");
        let young_b = record(&s, "b", now - 9 * DAY, "YOUNG-B");
        for r in [&old_a, &young_a, &old_b, &young_b] {
            s.put(r, b"raw", &[]).expect("put");
        }
        pending.status = Status::Received;
        s.put(&pending, b"raw", &[]).expect("put");
        let item = OutboxItem {
            destination: "a/x".into(),
            seq: s.next_seq(),
            message_id: pending.id,
            partition: String::new(),
            created_at_ms: now,
            attempts: 0,
            next_attempt_ms: now,
            last_error: String::new(),
            content_type: "application/hl7-v2".into(),
            idempotency_key: "k".into(),
            control_id: None,
            path: None,
            payload: "hl7".into(),
            body: b"raw".to_vec(),
        };
        s.route(pending.id, std::slice::from_ref(&item))
            .expect("route");
        assert_eq!(
            s.get(pending.id).expect("get").expect("some").deliveries,
            vec![DeliveryState {
                destination: "a/x".into(),
                seq: item.seq,
                status: crate::store::outbox::DeliveryStatus::Pending,
                attempts: 0,
                detail: String::new()
            }]
        );

        let policy = RetentionPolicy {
            default_days: 90,
            per_channel: [("b".to_string(), 10)].into_iter().collect(),
        };
        let report = s.prune(&policy, now).expect("prune");
        assert_eq!(
            report,
            PruneReport {
                removed: 2,
                kept_pending: 1
            }
        );
        for (r, kept) in [
            (&old_a, false),
            (&young_a, true),
            (&old_b, false),
            (&young_b, true),
            (&pending, true),
        ] {
            assert_eq!(
                s.get(r.id).expect("get").is_some(),
                kept,
                "{}",
                r.control_id
            );
            assert_eq!(
                s.raw(r.id).expect("raw").is_some(),
                kept,
                "{}",
                r.control_id
            );
        }
        assert!(s
            .list(&crate::store::Query {
                control_id: Some("OLD-A".into()),
                limit: 10,
                ..Default::default()
            })
            .expect("list")
            .is_empty());

        // Once delivered, the old message goes on the next pass.
        s.finish(&item, true, "ok").expect("finish");
        let report = s.prune(&policy, now).expect("prune");
        assert_eq!(
            report,
            PruneReport {
                removed: 1,
                kept_pending: 0
            }
        );
        assert!(s.get(pending.id).expect("get").is_none());
    }
}
