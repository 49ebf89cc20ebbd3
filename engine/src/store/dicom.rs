//! DICOM state: the modality worklists (`worklist`) and MPPS instances (`mpps`).
//!
//! | tree | key | value |
//! |---|---|---|
//! | `worklist` | worklist name, 0x00, accession number | written at (u64 BE ms), sealed JSON of a [`WorklistItem`] |
//! | `mpps` | channel, 0x00, SOP instance UID | written at (u64 BE ms), sealed JSON of the MPPS state |
//!
//! Values hold patient data: they are sealed like message bodies when encryption is on.
//! Writes go through the free-space reserve and are durable after [`Store::commit`].
//! Retention removes items and MPPS states not written for the engine's `retention_days`
//! ([`Store::prune_dicom`]): a scheduled step that old was never performed.

use super::space::WritePath;
use super::{Store, StoreError};
use channels::dicom::worklist::{DicomState, WorklistItem};
use futures::future::BoxFuture;

fn key(scope: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(scope.len() + id.len() + 1);
    k.extend_from_slice(scope.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

fn stamp(now_ms: u64, sealed: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(sealed.len() + 8);
    v.extend_from_slice(&now_ms.to_be_bytes());
    v.extend_from_slice(sealed);
    v
}

fn split(v: &[u8]) -> Option<(u64, &[u8])> {
    let at = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    Some((at, &v[8..]))
}

impl Store {
    /// Every item of `worklist`, in accession number order.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails or a value does not open.
    pub fn worklist_items(&self, worklist: &str) -> Result<Vec<WorklistItem>, StoreError> {
        let prefix = key(worklist, "");
        let mut out = Vec::new();
        for kv in self.worklist.scan_prefix(&prefix) {
            let (_, v) = kv?;
            let Some((_, sealed)) = split(&v) else {
                continue;
            };
            let plain = self.seal.open(b"worklist", sealed)?;
            out.push(serde_json::from_slice(&plain).map_err(|e| StoreError::Codec(e.to_string()))?);
        }
        Ok(out)
    }

    /// Writes (or replaces) an item of `worklist`.
    ///
    /// # Errors
    ///
    /// [`StoreError`], [`StoreError::DiskFull`] under the reserve (nothing written).
    pub fn put_worklist_item(&self, worklist: &str, item: &WorklistItem) -> Result<(), StoreError> {
        self.space.check(WritePath::Delivery)?;
        let json = serde_json::to_vec(item).map_err(|e| StoreError::Codec(e.to_string()))?;
        let sealed = self.seal.seal(b"worklist", &json)?;
        self.worklist.insert(
            key(worklist, &item.accession_number),
            stamp(crate::delivery::now_ms(), &sealed),
        )?;
        Ok(())
    }

    /// Removes an item; whether it was there.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails.
    pub fn remove_worklist_item(
        &self,
        worklist: &str,
        accession: &str,
    ) -> Result<bool, StoreError> {
        Ok(self.worklist.remove(key(worklist, accession))?.is_some())
    }

    /// Items per worklist, for the gauge.
    pub fn worklist_counts(&self) -> std::collections::BTreeMap<String, i64> {
        let mut counts = std::collections::BTreeMap::new();
        for k in self.worklist.iter().keys().flatten() {
            if let Some(at) = k.iter().position(|b| *b == 0) {
                *counts
                    .entry(String::from_utf8_lossy(&k[..at]).into_owned())
                    .or_insert(0) += 1;
            }
        }
        counts
    }

    /// An MPPS instance's state.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails or the value does not open.
    pub fn mpps_state(&self, channel: &str, uid: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.mpps.get(key(channel, uid))? {
            Some(v) => {
                let Some((_, sealed)) = split(&v) else {
                    return Ok(None);
                };
                Ok(Some(self.seal.open(b"mpps", sealed)?.into_owned()))
            }
            None => Ok(None),
        }
    }

    /// Writes an MPPS instance's state.
    ///
    /// # Errors
    ///
    /// [`StoreError`], [`StoreError::DiskFull`] under the reserve (nothing written).
    pub fn put_mpps_state(&self, channel: &str, uid: &str, state: &[u8]) -> Result<(), StoreError> {
        self.space.check(WritePath::Ingest)?;
        let sealed = self.seal.seal(b"mpps", state)?;
        self.mpps
            .insert(key(channel, uid), stamp(crate::delivery::now_ms(), &sealed))?;
        Ok(())
    }

    /// Removes worklist items and MPPS states last written more than `days` ago; how many.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails; what was removed before stays removed.
    pub fn prune_dicom(&self, days: u32, now_ms: u64) -> Result<u64, StoreError> {
        let horizon = now_ms.saturating_sub(u64::from(days) * 86_400_000);
        let mut removed = 0;
        for tree in [&self.worklist, &self.mpps] {
            let old: Vec<sled::IVec> = tree
                .iter()
                .filter_map(Result::ok)
                .filter(|(_, v)| split(v).is_some_and(|(at, _)| at < horizon))
                .map(|(k, _)| k)
                .collect();
            for k in old {
                if tree.remove(k)?.is_some() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// The engine's [`DicomState`]: the store, and the worklist gauge kept current.
pub struct StoreDicom {
    store: Store,
    gauge: prometheus::IntGaugeVec,
}

impl StoreDicom {
    /// Over `store`, setting `gauge` (`switchboard_dicom_worklist_items{worklist}`).
    pub fn new(store: Store, gauge: prometheus::IntGaugeVec) -> Self {
        StoreDicom { store, gauge }
    }

    fn count(&self, worklist: &str) {
        let n = self
            .store
            .worklist
            .scan_prefix(key(worklist, ""))
            .keys()
            .count();
        self.gauge
            .with_label_values(&[worklist])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

impl DicomState for StoreDicom {
    fn items(&self, worklist: &str) -> Result<Vec<WorklistItem>, String> {
        self.store
            .worklist_items(worklist)
            .map_err(|e| e.to_string())
    }

    fn put_item(&self, worklist: &str, item: &WorklistItem) -> Result<(), String> {
        self.store
            .put_worklist_item(worklist, item)
            .map_err(|e| e.to_string())?;
        self.count(worklist);
        Ok(())
    }

    fn remove_item(&self, worklist: &str, accession_number: &str) -> Result<bool, String> {
        let removed = self
            .store
            .remove_worklist_item(worklist, accession_number)
            .map_err(|e| e.to_string())?;
        self.count(worklist);
        Ok(removed)
    }

    fn mpps(&self, channel: &str, uid: &str) -> Result<Option<Vec<u8>>, String> {
        self.store
            .mpps_state(channel, uid)
            .map_err(|e| e.to_string())
    }

    fn put_mpps(&self, channel: &str, uid: &str, state: &[u8]) -> Result<(), String> {
        self.store
            .put_mpps_state(channel, uid, state)
            .map_err(|e| e.to_string())
    }

    fn commit(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.store.commit().await.map_err(|e| e.to_string()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use crate::metrics::Metrics;

    #[tokio::test]
    async fn items_are_written_read_removed_and_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path(), Durability::Os, &Metrics::new("t")).expect("open");
        let item = WorklistItem {
            accession_number: "A1".into(),
            patient_id: "P1".into(),
            ..WorklistItem::default()
        };
        s.put_worklist_item("rad", &item).expect("put");
        s.put_worklist_item("other", &item).expect("put");
        assert_eq!(s.worklist_items("rad").expect("read"), vec![item.clone()]);
        assert_eq!(s.worklist_counts().get("rad"), Some(&1));
        assert!(s.remove_worklist_item("rad", "A1").expect("remove"));
        assert!(s.worklist_items("rad").expect("read").is_empty());
        assert_eq!(s.worklist_items("other").expect("read").len(), 1);
        s.put_mpps_state("c", "1.2", b"{}").expect("put");
        assert_eq!(
            s.mpps_state("c", "1.2").expect("get").as_deref(),
            Some(&b"{}"[..])
        );
        let later = crate::delivery::now_ms() + 2 * 86_400_000;
        assert_eq!(s.prune_dicom(1, later).expect("prune"), 2);
        assert!(s.worklist_items("other").expect("read").is_empty());
    }
}
