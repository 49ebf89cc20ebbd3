//! C-STORE into a folder: `StudyInstanceUID/SeriesInstanceUID/SOPInstanceUID.dcm`, each a
//! DICOM file (preamble, file meta information, the data set exactly as received), written
//! to a temporary name, fsynced, renamed and its folder fsynced before success is answered.
//!
//! Studies are tallied as instances arrive, in the engine's store (a [`StudyRecord`] per
//! study and one entry per SOP instance, through [`DicomState`]), so that a restart in the
//! middle of a study neither loses nor repeats its announcement. Once a study had no new
//! instance for the quiet period, one `study_available` message (format `dicom`, a
//! [`StudyDocument`] as JSON, control id `STUDY` + a hash of the study UID and its instance
//! count) is handed to the channel; the channel answers a second one with the same control
//! id as a resend, so an announcement made just before a crash is not made twice after it.

use super::dimse::{self, status, text, Message};
use super::worklist::DicomState;
use super::{DicomMetrics, Refusal};
use crate::source::{Disposition, Inbound, Payload, RecordFormat, SourceContext};
use bytes::Bytes;
use dicom_dictionary_std::tags;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;
use tracing::{debug, warn};
pub use transforms::from_dicom::{SeriesCount, StudyDocument, STUDY_AVAILABLE};

/// The implementation class UID written in file meta information.
const IMPLEMENTATION_CLASS_UID: &str = "2.25.302158146254358452541237843765211045127";

/// What a storage source knows of one study, kept in the store (sealed JSON) from its first
/// instance until retention removes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StudyRecord {
    /// Patient, accession number, dates and AE titles, as the first instance gave them
    /// (its `series` stays empty: the instance entries hold them).
    pub document: StudyDocument,
    /// Unix milliseconds of the first instance.
    pub first_ms: u64,
    /// Unix milliseconds of the last new (or, while pending, resent) instance.
    pub last_ms: u64,
    /// Instances received (each SOP instance once).
    pub instances: u32,
    /// Instances announced by the last `study_available` (0: never announced).
    #[serde(default)]
    pub announced_instances: u32,
    /// Unix milliseconds of the last announcement (0: never).
    #[serde(default)]
    pub announced_ms: u64,
    /// Whether an announcement is due once the study has been quiet.
    pub pending: bool,
    /// The address the instances came from.
    #[serde(default)]
    pub peer: String,
}

/// One instance entry: its series and modality (`series` 0x00 `modality`).
fn instance_value(series: &str, modality: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(series.len() + modality.len() + 1);
    v.extend_from_slice(series.as_bytes());
    v.push(0);
    v.extend_from_slice(modality.as_bytes());
    v
}

fn split_instance(v: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(v);
    let (series, modality) = text.split_once('\0').unwrap_or((&text, ""));
    (series.to_string(), modality.to_string())
}

/// The series of a study from its instance entries: counts and the first modality of each,
/// in series UID order.
pub fn series_of(instances: &[Vec<u8>]) -> Vec<SeriesCount> {
    let mut by: BTreeMap<String, SeriesCount> = BTreeMap::new();
    for v in instances {
        let (series, modality) = split_instance(v);
        let e = by.entry(series.clone()).or_insert_with(|| SeriesCount {
            uid: series,
            modality: String::new(),
            instances: 0,
        });
        if e.modality.is_empty() {
            e.modality = modality;
        }
        e.instances += 1;
    }
    by.into_values().collect()
}

/// The control id of a study's announcement: the same study with the same number of
/// instances always gets the same one.
pub fn announcement_control_id(study: &str, instances: u32) -> String {
    format!(
        "STUDY{}",
        &transforms::model::stable_id(&["study", study, &instances.to_string()])[..15]
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// Where an announcement of a pending study stands in this process.
#[derive(Debug, Clone, Copy)]
struct Due {
    /// The study's last instance (Unix ms).
    last_ms: u64,
    /// Not before this (Unix ms): after a failed announcement.
    retry_at_ms: u64,
}

/// Where a `dicom_store` source writes and what it tallies.
pub struct Storage {
    channel: String,
    ae_title: String,
    folder: PathBuf,
    quiet: Duration,
    state: Arc<dyn DicomState>,
    /// Serialises the read-modify-write of study records.
    tally: Mutex<()>,
    /// Pending studies: loaded from the store when the source starts, then kept current.
    due: Mutex<HashMap<String, Due>>,
}

/// Whether `uid` is a UID (digits and dots, at most 64): safe as a file name.
pub fn is_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 64
        && uid.chars().all(|c| c.is_ascii_digit() || c == '.')
        && !uid.starts_with('.')
        && !uid.contains("..")
}

/// The answer to one C-STORE: its status and, for a failure, why.
pub type StoreAnswer = (u16, Option<String>);

impl Storage {
    /// A storage of channel `channel` writing under `folder`, tallying in `state` and
    /// announcing studies after `quiet`, as `ae_title`. Studies a previous run left pending
    /// are announced by [`Storage::announce_loop`].
    pub fn new(
        channel: &str,
        ae_title: &str,
        folder: PathBuf,
        quiet: Duration,
        state: Arc<dyn DicomState>,
    ) -> Self {
        Storage {
            channel: channel.to_string(),
            ae_title: ae_title.to_string(),
            folder,
            quiet,
            state,
            tally: Mutex::new(()),
            due: Mutex::new(HashMap::new()),
        }
    }

    /// Stores one C-STORE's object; the status to answer (and why, for a failure). An
    /// object refused for what it is (no data set, one that does not parse, missing or
    /// inconsistent UIDs) is stored as a rejected message (format `dicom`, type `C-STORE`)
    /// with its reason before it is answered.
    pub async fn store(
        &self,
        m: &Message,
        ts: &str,
        calling: &str,
        peer: SocketAddr,
        cx: &SourceContext,
        metrics: &DicomMetrics,
    ) -> StoreAnswer {
        let sop = m.text(tags::AFFECTED_SOP_INSTANCE_UID);
        let sop_ref = sop.as_str();
        let refuse = |st: u16, reason: String| async move {
            warn!(channel = %cx.channel, peer = %peer, status = format!("{st:04X}"), reason = %reason, "Stored object refused; stored as rejected.");
            super::reject(
                &cx.out,
                peer,
                Refusal {
                    operation: "C-STORE",
                    uid: if is_uid(sop_ref) { sop_ref } else { "" },
                    data: m.dataset.as_deref().unwrap_or_default(),
                    reason: &reason,
                },
            )
            .await;
            (st, Some(reason))
        };
        let Some(data) = m.dataset.as_deref() else {
            return refuse(
                status::DATASET_MISMATCH,
                "C-STORE without a data set".into(),
            )
            .await;
        };
        let ds = match dimse::read_dataset(data, ts) {
            Ok(d) => d,
            Err(e) => {
                return refuse(
                    status::CANNOT_UNDERSTAND,
                    format!("the object does not parse: {}", e.detail()),
                )
                .await
            }
        };
        let sop_class = m.text(tags::AFFECTED_SOP_CLASS_UID);
        let study = text(&ds, tags::STUDY_INSTANCE_UID);
        let series = text(&ds, tags::SERIES_INSTANCE_UID);
        let in_data = text(&ds, tags::SOP_INSTANCE_UID);
        let class_in_data = text(&ds, tags::SOP_CLASS_UID);
        let problem = if !is_uid(&sop) {
            Some("AffectedSOPInstanceUID of the command is missing or not a UID")
        } else if !is_uid(&study) {
            Some("StudyInstanceUID is missing or not a UID")
        } else if !is_uid(&series) {
            Some("SeriesInstanceUID is missing or not a UID")
        } else if in_data != sop {
            Some("SOPInstanceUID is not the command's AffectedSOPInstanceUID")
        } else if !class_in_data.is_empty() && class_in_data != sop_class {
            Some("SOPClassUID is not the command's AffectedSOPClassUID")
        } else {
            None
        };
        if let Some(p) = problem {
            return refuse(status::DATASET_MISMATCH, p.into()).await;
        }
        let meta = dicom_object::meta::FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(sop_class.as_str())
            .media_storage_sop_instance_uid(sop.as_str())
            .transfer_syntax(ts)
            .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
            .implementation_version_name("SWITCHBOARD")
            .source_application_entity_title(calling)
            .build();
        let mut file = Vec::with_capacity(data.len() + 512);
        file.extend_from_slice(&[0u8; 128]);
        file.extend_from_slice(b"DICM");
        let written = meta
            .map_err(|e| e.to_string())
            .and_then(|meta| meta.write(&mut file).map_err(|e| e.to_string()));
        if let Err(e) = written {
            return refuse(
                status::CANNOT_UNDERSTAND,
                format!("no file meta information can be made for it: {e}"),
            )
            .await;
        }
        file.extend_from_slice(data);
        let dir = self.folder.join(&study).join(&series);
        let path = dir.join(format!("{sop}.dcm"));
        let reference = super::sender::ObjectRef {
            path: path.display().to_string(),
            sop_class_uid: sop_class.clone(),
            sop_instance_uid: sop.clone(),
            transfer_syntax: ts.to_string(),
            study_instance_uid: study.clone(),
            series_instance_uid: series.clone(),
        };
        let written = tokio::task::spawn_blocking(move || write_durably(&dir, &path, &file)).await;
        let out_of_resources = |why: &str| (status::OUT_OF_RESOURCES, Some(why.to_string()));
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(channel = %cx.channel, error = %e, "Object cannot be written; answered out of resources.");
                return out_of_resources("the object cannot be written");
            }
            Err(_) => return out_of_resources("the object cannot be written"),
        }
        // The tally, before the record: the record's commit makes it durable too.
        let first = StudyRecord {
            document: StudyDocument {
                study_instance_uid: study.clone(),
                patient_id: text(&ds, tags::PATIENT_ID),
                issuer_of_patient_id: text(&ds, tags::ISSUER_OF_PATIENT_ID),
                patient_name: text(&ds, tags::PATIENT_NAME),
                birth_date: text(&ds, tags::PATIENT_BIRTH_DATE),
                sex: text(&ds, tags::PATIENT_SEX),
                accession_number: text(&ds, tags::ACCESSION_NUMBER),
                study_date: text(&ds, tags::STUDY_DATE),
                study_time: text(&ds, tags::STUDY_TIME),
                description: text(&ds, tags::STUDY_DESCRIPTION),
                calling_ae_title: calling.to_string(),
                called_ae_title: self.ae_title.clone(),
                ..StudyDocument::default()
            },
            peer: peer.to_string(),
            ..StudyRecord::default()
        };
        let modality = text(&ds, tags::MODALITY);
        if let Err(e) = self.tally_instance(first, &sop, &series, &modality) {
            warn!(channel = %cx.channel, error = %e, "Study tally cannot be written; answered out of resources.");
            return out_of_resources("the study tally cannot be written");
        }
        // The record that routes the object (to a `dicom` destination): durable before
        // the answer, like the file.
        let Ok(body) = serde_json::to_vec(&reference) else {
            return out_of_resources("the object's record cannot be made");
        };
        let (tx, rx) = oneshot::channel();
        let inbound = Inbound {
            payload: Payload::Record {
                format: RecordFormat::Dicom,
                message_type: "C-STORE".into(),
                control_id: sop.clone(),
                body: Bytes::from(body),
                dedup: false,
            },
            peer,
            received_at: SystemTime::now(),
            reply: tx,
        };
        if cx.out.send(inbound).await.is_err() {
            return out_of_resources("the channel is stopping");
        }
        match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(r)) if r.disposition == Disposition::Accepted => {}
            _ => {
                warn!(channel = %cx.channel, "Object stored but its record not; answered out of resources.");
                return out_of_resources("the object's record cannot be stored");
            }
        }
        metrics.stored_instances.inc();
        debug!(channel = %cx.channel, "Object stored.");
        (status::SUCCESS, None)
    }

    /// Counts one instance in its study's record (each SOP instance once) and marks the
    /// study pending; not committed (the caller's next commit covers it).
    fn tally_instance(
        &self,
        first: StudyRecord,
        sop: &str,
        series: &str,
        modality: &str,
    ) -> Result<(), String> {
        let study = first.document.study_instance_uid.clone();
        let _guard = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        let mut rec = match self.state.study(&self.channel, &study)? {
            Some(bytes) => serde_json::from_slice::<StudyRecord>(&bytes)
                .map_err(|e| format!("study record does not read: {e}"))?,
            None => first,
        };
        let new = self.state.add_instance(
            &self.channel,
            &study,
            sop,
            &instance_value(series, modality),
        )?;
        if !new && !rec.pending {
            // The same object again after its study was announced: nothing new.
            return Ok(());
        }
        let now = now_ms();
        if new {
            rec.instances += 1;
        }
        if rec.first_ms == 0 {
            rec.first_ms = now;
        }
        rec.last_ms = now;
        rec.pending = true;
        let bytes = serde_json::to_vec(&rec).map_err(|e| e.to_string())?;
        self.state.put_study(&self.channel, &study, &bytes)?;
        self.due.lock().unwrap_or_else(|p| p.into_inner()).insert(
            study,
            Due {
                last_ms: now,
                retry_at_ms: 0,
            },
        );
        Ok(())
    }

    /// The studies a previous run left pending.
    fn load_pending(&self) {
        match self.state.studies(&self.channel) {
            Ok(all) => {
                let mut due = self.due.lock().unwrap_or_else(|p| p.into_inner());
                for (study, bytes) in all {
                    if let Ok(rec) = serde_json::from_slice::<StudyRecord>(&bytes) {
                        if rec.pending {
                            due.insert(
                                study,
                                Due {
                                    last_ms: rec.last_ms,
                                    retry_at_ms: 0,
                                },
                            );
                        }
                    }
                }
            }
            Err(e) => {
                warn!(channel = %self.channel, error = %e, "Pending studies cannot be read; they are announced when a new instance arrives.");
            }
        }
    }

    /// Studies quiet for the quiet period (and not waiting to retry).
    fn quiet_studies(&self, now: u64) -> Vec<String> {
        let quiet = u64::try_from(self.quiet.as_millis()).unwrap_or(u64::MAX);
        self.due
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, d)| now.saturating_sub(d.last_ms) >= quiet && now >= d.retry_at_ms)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Announces quiet studies until the source stops (then once more for what is due).
    pub async fn announce_loop(self: Arc<Self>, cx: SourceContext) {
        self.load_pending();
        let tick = (self.quiet / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let stop = tokio::select! {
                () = cx.shutdown.cancelled() => true,
                () = tokio::time::sleep(tick) => false,
            };
            for study in self.quiet_studies(now_ms()) {
                self.announce(&cx, &study).await;
            }
            if stop {
                return;
            }
        }
    }

    /// Announces one study: hands its `study_available` message to the channel and, once
    /// stored, marks the study announced (unless a new instance came meanwhile).
    async fn announce(&self, cx: &SourceContext, study: &str) {
        type Tally = (StudyRecord, Vec<Vec<u8>>);
        let read = || -> Result<Option<Tally>, String> {
            let _guard = self.tally.lock().unwrap_or_else(|p| p.into_inner());
            let Some(bytes) = self.state.study(&self.channel, study)? else {
                return Ok(None);
            };
            let rec: StudyRecord = serde_json::from_slice(&bytes)
                .map_err(|e| format!("study record does not read: {e}"))?;
            let instances = self.state.instances(&self.channel, study)?;
            Ok(Some((rec, instances)))
        };
        let (rec, instances) = match read() {
            Ok(Some(r)) if r.0.pending => r,
            Ok(_) => {
                self.forget(study);
                return;
            }
            Err(e) => {
                warn!(channel = %cx.channel, error = %e, "Study tally cannot be read.");
                self.retry_later(study);
                return;
            }
        };
        let mut doc = rec.document.clone();
        doc.series = series_of(&instances);
        doc.announced_at = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let count = doc.instances();
        let control_id = announcement_control_id(study, count);
        let Ok(body) = serde_json::to_vec(&doc) else {
            self.retry_later(study);
            return;
        };
        let (tx, rx) = oneshot::channel();
        let peer = rec
            .peer
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let inbound = Inbound {
            payload: Payload::Record {
                format: RecordFormat::Dicom,
                message_type: STUDY_AVAILABLE.into(),
                control_id,
                body: Bytes::from(body),
                dedup: true,
            },
            peer,
            received_at: SystemTime::now(),
            reply: tx,
        };
        if cx.out.send(inbound).await.is_err() {
            return;
        }
        match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(r)) if r.disposition == Disposition::Accepted => {}
            other => {
                warn!(channel = %cx.channel, outcome = ?other.map(|r| r.map(|r| r.disposition)), "Study announcement not stored; tried again later.");
                self.retry_later(study);
                return;
            }
        }
        let marked = {
            let _guard = self.tally.lock().unwrap_or_else(|p| p.into_inner());
            match self.state.study(&self.channel, study) {
                Ok(Some(bytes)) => match serde_json::from_slice::<StudyRecord>(&bytes) {
                    Ok(mut now) if now.last_ms == rec.last_ms => {
                        now.pending = false;
                        now.announced_instances = count;
                        now.announced_ms = now_ms();
                        serde_json::to_vec(&now)
                            .map_err(|e| e.to_string())
                            .and_then(|b| self.state.put_study(&self.channel, study, &b))
                            .map(|()| true)
                    }
                    // A new instance came meanwhile: announced again once quiet.
                    Ok(_) => Ok(false),
                    Err(e) => Err(e.to_string()),
                },
                Ok(None) => Ok(true),
                Err(e) => Err(e),
            }
        };
        match marked {
            Ok(true) => {
                self.forget(study);
                if let Err(e) = self.state.commit().await {
                    // Still pending in the store: announced again after a restart, which
                    // the channel answers as a resend.
                    warn!(channel = %cx.channel, error = %e, "Study announced but not marked so.");
                }
                debug!(channel = %cx.channel, instances = count, "Study announced.");
            }
            Ok(false) => {}
            Err(e) => {
                warn!(channel = %cx.channel, error = %e, "Study announced but not marked so; the announcement is repeated (and answered as a resend).");
                self.retry_later(study);
            }
        }
    }

    fn forget(&self, study: &str) {
        self.due
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(study);
    }

    fn retry_later(&self, study: &str) {
        let wait =
            u64::try_from(self.quiet.max(Duration::from_secs(10)).as_millis()).unwrap_or(u64::MAX);
        if let Some(d) = self
            .due
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(study)
        {
            d.retry_at_ms = now_ms().saturating_add(wait);
        }
    }
}

/// Writes `bytes` to `path` durably: a temporary file, fsync, rename, fsync of the folder.
fn write_durably(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("dcm.part");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    // A new study or series folder: its parent must know it too.
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent)?.sync_all()?;
        if let Some(root) = parent.parent() {
            std::fs::File::open(root)?.sync_all()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_safe_as_names() {
        assert!(is_uid("1.2.840.10008.5.1"));
        assert!(!is_uid("../etc"));
        assert!(!is_uid("1..2"));
        assert!(!is_uid(""));
        assert!(!is_uid("1/2"));
    }

    #[test]
    fn series_are_counted_from_instance_entries() {
        let entries = vec![
            instance_value("1.2.3.2", "SR"),
            instance_value("1.2.3.1", "CT"),
            instance_value("1.2.3.1", "CT"),
        ];
        let series = series_of(&entries);
        assert_eq!(series.len(), 2);
        assert_eq!(
            (
                series[0].uid.as_str(),
                series[0].modality.as_str(),
                series[0].instances
            ),
            ("1.2.3.1", "CT", 2)
        );
        assert_eq!(series[1].instances, 1);
        assert_eq!(
            announcement_control_id("1.2.3", 3),
            announcement_control_id("1.2.3", 3)
        );
        assert_ne!(
            announcement_control_id("1.2.3", 3),
            announcement_control_id("1.2.3", 4)
        );
    }
}
