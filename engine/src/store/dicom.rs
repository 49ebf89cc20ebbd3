//! DICOM state: the modality worklists (`worklist`), MPPS instances (`mpps`) and the
//! studies storage sources received (`dicom_studies`, `dicom_instances`).
//!
//! | tree | key | value |
//! |---|---|---|
//! | `worklist` | worklist name, 0x00, accession number | written at (u64 BE ms), sealed JSON of a [`WorklistItem`] |
//! | `mpps` | channel, 0x00, SOP instance UID | written at (u64 BE ms), sealed JSON of the MPPS state |
//! | `dicom_studies` | channel, 0x00, Study Instance UID | written at (u64 BE ms), sealed JSON of a `channels::dicom::storage::StudyRecord` |
//! | `dicom_instances` | channel, 0x00, Study Instance UID, 0x00, SOP Instance UID | series UID, 0x00, modality |
//!
//! Worklist items, MPPS states and study records hold patient data: they are sealed like
//! message bodies when encryption is on; instance entries hold UIDs and a modality only.
//! Writes go through the free-space reserve and are durable after [`Store::commit`].
//! Retention removes items, MPPS states and studies not written for the engine's
//! `retention_days` ([`Store::prune_dicom`]): a scheduled step that old was never
//! performed, and a study that old was announced long ago.

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

    /// The state each accession number's latest MPPS reached, over every channel:
    /// accession number -> (`in_progress`, `completed` or `discontinued`; the modality's AE
    /// title).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails or a value does not open.
    pub fn mpps_by_accession(
        &self,
    ) -> Result<std::collections::HashMap<String, (String, String)>, StoreError> {
        let mut latest: std::collections::HashMap<String, (u64, String, String)> =
            std::collections::HashMap::new();
        for kv in self.mpps.iter() {
            let (_, v) = kv?;
            let Some((at, sealed)) = split(&v) else {
                continue;
            };
            let plain = self.seal.open(b"mpps", sealed)?;
            let Ok(state) = serde_json::from_slice::<channels::dicom::mpps::MppsState>(&plain)
            else {
                continue;
            };
            if state.accession_number.is_empty() {
                continue;
            }
            let status = state.status.to_lowercase().replace(' ', "_");
            let e = latest.entry(state.accession_number.clone()).or_insert((
                0,
                String::new(),
                String::new(),
            ));
            if at >= e.0 {
                *e = (at, status, state.calling_ae);
            }
        }
        Ok(latest
            .into_iter()
            .map(|(k, (_, s, ae))| (k, (s, ae)))
            .collect())
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

    /// A study record of a storage source (sealed JSON opened).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails or the value does not open.
    pub fn study_record(&self, channel: &str, study: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.dicom_studies.get(key(channel, study))? {
            Some(v) => {
                let Some((_, sealed)) = split(&v) else {
                    return Ok(None);
                };
                Ok(Some(self.seal.open(b"dicom_studies", sealed)?.into_owned()))
            }
            None => Ok(None),
        }
    }

    /// Writes a study record.
    ///
    /// # Errors
    ///
    /// [`StoreError`], [`StoreError::DiskFull`] under the reserve (nothing written).
    pub fn put_study_record(
        &self,
        channel: &str,
        study: &str,
        record: &[u8],
    ) -> Result<(), StoreError> {
        self.space.check(WritePath::Ingest)?;
        let sealed = self.seal.seal(b"dicom_studies", record)?;
        self.dicom_studies.insert(
            key(channel, study),
            stamp(crate::delivery::now_ms(), &sealed),
        )?;
        Ok(())
    }

    /// Every study record of `channel` (`None`: of every channel): (channel, Study Instance
    /// UID, record), in key order.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails or a value does not open.
    pub fn study_records(
        &self,
        channel: Option<&str>,
    ) -> Result<Vec<(String, String, Vec<u8>)>, StoreError> {
        let prefix = channel.map(|c| key(c, "")).unwrap_or_default();
        let mut out = Vec::new();
        for kv in self.dicom_studies.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let Some(at) = k.iter().position(|b| *b == 0) else {
                continue;
            };
            let Some((_, sealed)) = split(&v) else {
                continue;
            };
            let plain = self.seal.open(b"dicom_studies", sealed)?.into_owned();
            out.push((
                String::from_utf8_lossy(&k[..at]).into_owned(),
                String::from_utf8_lossy(&k[at + 1..]).into_owned(),
                plain,
            ));
        }
        Ok(out)
    }

    /// Records an instance of a study; `false` when it was there (nothing written).
    ///
    /// # Errors
    ///
    /// [`StoreError`], [`StoreError::DiskFull`] under the reserve (nothing written).
    pub fn add_study_instance(
        &self,
        channel: &str,
        study: &str,
        sop: &str,
        value: &[u8],
    ) -> Result<bool, StoreError> {
        self.space.check(WritePath::Ingest)?;
        let mut k = key(channel, study);
        k.push(0);
        k.extend_from_slice(sop.as_bytes());
        let cas = self
            .dicom_instances
            .compare_and_swap(k, None as Option<&[u8]>, Some(value))?;
        Ok(cas.is_ok())
    }

    /// The instance entries of a study.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails.
    pub fn study_instances(&self, channel: &str, study: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut prefix = key(channel, study);
        prefix.push(0);
        let mut out = Vec::new();
        for kv in self.dicom_instances.scan_prefix(&prefix) {
            out.push(kv?.1.to_vec());
        }
        Ok(out)
    }

    /// Removes worklist items, MPPS states and study records (with their instance entries)
    /// last written more than `days` ago; how many items, states and studies.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails; what was removed before stays removed.
    pub fn prune_dicom(&self, days: u32, now_ms: u64) -> Result<u64, StoreError> {
        let horizon = now_ms.saturating_sub(u64::from(days) * 86_400_000);
        let mut removed = 0;
        let old_studies: Vec<sled::IVec> = self
            .dicom_studies
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| split(v).is_some_and(|(at, _)| at < horizon))
            .map(|(k, _)| k)
            .collect();
        for k in old_studies {
            let mut prefix = k.to_vec();
            prefix.push(0);
            for inst in self.dicom_instances.scan_prefix(&prefix).keys() {
                self.dicom_instances.remove(inst?)?;
            }
            if self.dicom_studies.remove(k)?.is_some() {
                removed += 1;
            }
        }
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

    fn study(&self, channel: &str, study: &str) -> Result<Option<Vec<u8>>, String> {
        self.store
            .study_record(channel, study)
            .map_err(|e| e.to_string())
    }

    fn put_study(&self, channel: &str, study: &str, record: &[u8]) -> Result<(), String> {
        self.store
            .put_study_record(channel, study, record)
            .map_err(|e| e.to_string())
    }

    fn studies(&self, channel: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
        self.store
            .study_records(Some(channel))
            .map(|all| all.into_iter().map(|(_, s, r)| (s, r)).collect())
            .map_err(|e| e.to_string())
    }

    fn add_instance(
        &self,
        channel: &str,
        study: &str,
        sop: &str,
        value: &[u8],
    ) -> Result<bool, String> {
        self.store
            .add_study_instance(channel, study, sop, value)
            .map_err(|e| e.to_string())
    }

    fn instances(&self, channel: &str, study: &str) -> Result<Vec<Vec<u8>>, String> {
        self.store
            .study_instances(channel, study)
            .map_err(|e| e.to_string())
    }

    fn commit(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.store.commit().await.map_err(|e| e.to_string()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::Durability;

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
        s.put_study_record("img", "1.2.3", b"{}").expect("put");
        assert!(s
            .add_study_instance("img", "1.2.3", "1.2.3.1.1", b"1.2.3.1\0CT")
            .expect("add"));
        assert!(!s
            .add_study_instance("img", "1.2.3", "1.2.3.1.1", b"1.2.3.1\0CT")
            .expect("add"));
        assert!(s
            .add_study_instance("img", "1.2.3", "1.2.3.1.2", b"1.2.3.1\0CT")
            .expect("add"));
        assert!(s
            .add_study_instance("img", "1.2.30", "1.2.30.1.1", b"x")
            .expect("add"));
        assert_eq!(s.study_instances("img", "1.2.3").expect("read").len(), 2);
        assert_eq!(s.study_records(Some("img")).expect("read").len(), 1);
        assert_eq!(s.study_records(None).expect("read")[0].1, "1.2.3");
        let later = crate::delivery::now_ms() + 2 * 86_400_000;
        assert_eq!(s.prune_dicom(1, later).expect("prune"), 3);
        assert!(s.worklist_items("other").expect("read").is_empty());
        assert!(s.study_instances("img", "1.2.3").expect("read").is_empty());
        assert_eq!(s.study_instances("img", "1.2.30").expect("read").len(), 1);
    }
}
