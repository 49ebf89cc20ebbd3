//! C-STORE into a folder: `StudyInstanceUID/SeriesInstanceUID/SOPInstanceUID.dcm`, each a
//! DICOM file (preamble, file meta information, the data set exactly as received), written
//! to a temporary name, fsynced, renamed and its folder fsynced before success is answered.
//!
//! Studies are tallied as instances arrive; once a study had no new instance for the quiet
//! period, one "study available" message is handed to the channel (see [`announcement`]).

use super::dimse::{self, status, text, Message};
use super::DicomMetrics;
use crate::source::{Disposition, Inbound, Payload, SourceContext};
use bytes::Bytes;
use dicom_dictionary_std::tags;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::oneshot;
use tracing::{debug, warn};

/// The implementation class UID written in file meta information.
const IMPLEMENTATION_CLASS_UID: &str = "2.25.302158146254358452541237843765211045127";

/// What is known of a study while its instances arrive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StudyTally {
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Patient ID.
    pub patient_id: String,
    /// Patient's name (DICOM PN).
    pub patient_name: String,
    /// Birth date.
    pub birth_date: String,
    /// Sex.
    pub sex: String,
    /// Accession number.
    pub accession_number: String,
    /// Study date `YYYYMMDD`.
    pub study_date: String,
    /// Study description.
    pub description: String,
    /// The modalities of its series, each once.
    pub modalities: Vec<String>,
    /// Instances per series UID.
    pub series: BTreeMap<String, u32>,
    /// The AE title that sent it.
    pub calling_ae: String,
}

impl StudyTally {
    /// Instances in all series.
    pub fn instances(&self) -> u32 {
        self.series.values().sum()
    }
}

struct Pending {
    tally: StudyTally,
    /// SOP instance UIDs seen, so that a resent object counts once.
    seen: std::collections::HashSet<String>,
    last: Instant,
    peer: SocketAddr,
}

/// Where a `dicom_store` source writes and what it tallies.
pub struct Storage {
    ae_title: String,
    folder: PathBuf,
    quiet: Duration,
    studies: Mutex<HashMap<String, Pending>>,
}

/// Whether `uid` is a UID (digits and dots, at most 64): safe as a file name.
pub fn is_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 64
        && uid.chars().all(|c| c.is_ascii_digit() || c == '.')
        && !uid.starts_with('.')
        && !uid.contains("..")
}

impl Storage {
    /// A storage writing under `folder` and announcing studies after `quiet`, as `ae_title`.
    pub fn new(ae_title: &str, folder: PathBuf, quiet: Duration) -> Self {
        Storage {
            ae_title: ae_title.to_string(),
            folder,
            quiet,
            studies: Mutex::new(HashMap::new()),
        }
    }

    /// Stores one C-STORE's object; the status to answer.
    pub async fn store(
        &self,
        m: &Message,
        ts: &str,
        calling: &str,
        peer: SocketAddr,
        cx: &SourceContext,
        metrics: &DicomMetrics,
    ) -> u16 {
        let Some(data) = m.dataset.as_deref() else {
            return status::DATASET_MISMATCH;
        };
        let ds = match dimse::read_dataset(data, ts) {
            Ok(d) => d,
            Err(e) => {
                warn!(channel = %cx.channel, error = %e, "Stored object does not parse; refused.");
                reject(cx, peer, "C-STORE", data, &e.to_string()).await;
                return status::CANNOT_UNDERSTAND;
            }
        };
        let sop_class = m.text(tags::AFFECTED_SOP_CLASS_UID);
        let sop = m.text(tags::AFFECTED_SOP_INSTANCE_UID);
        let study = text(&ds, tags::STUDY_INSTANCE_UID);
        let series = text(&ds, tags::SERIES_INSTANCE_UID);
        let in_data = text(&ds, tags::SOP_INSTANCE_UID);
        if !is_uid(&study) || !is_uid(&series) || !is_uid(&sop) || in_data != sop {
            let reason = "StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID missing, not a UID, or not the command's AffectedSOPInstanceUID";
            warn!(channel = %cx.channel, "Stored object refused: {reason}.");
            reject(cx, peer, "C-STORE", data, reason).await;
            return status::DATASET_MISMATCH;
        }
        let meta = dicom_object::meta::FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(sop_class.as_str())
            .media_storage_sop_instance_uid(sop.as_str())
            .transfer_syntax(ts)
            .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
            .implementation_version_name("SWITCHBOARD")
            .source_application_entity_title(calling)
            .build();
        let meta = match meta {
            Ok(m) => m,
            Err(e) => {
                warn!(channel = %cx.channel, error = %e, "File meta information cannot be made.");
                return status::CANNOT_UNDERSTAND;
            }
        };
        let mut file = Vec::with_capacity(data.len() + 512);
        file.extend_from_slice(&[0u8; 128]);
        file.extend_from_slice(b"DICM");
        if meta.write(&mut file).is_err() {
            return status::CANNOT_UNDERSTAND;
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
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(channel = %cx.channel, error = %e, "Object cannot be written; answered out of resources.");
                return status::OUT_OF_RESOURCES;
            }
            Err(_) => return status::OUT_OF_RESOURCES,
        }
        // The record that routes the object (to a `dicom` destination): durable before
        // the answer, like the file.
        let Ok(body) = serde_json::to_vec(&reference) else {
            return status::OUT_OF_RESOURCES;
        };
        let (tx, rx) = oneshot::channel();
        let inbound = Inbound {
            payload: Payload::Record {
                format: "dicom".into(),
                message_type: "C-STORE".into(),
                control_id: sop.clone(),
                body: Bytes::from(body),
            },
            peer,
            received_at: SystemTime::now(),
            reply: tx,
        };
        if cx.out.send(inbound).await.is_err() {
            return status::OUT_OF_RESOURCES;
        }
        match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(r)) if r.disposition == Disposition::Accepted => {}
            _ => {
                warn!(channel = %cx.channel, "Object stored but its record not; answered out of resources.");
                return status::OUT_OF_RESOURCES;
            }
        }
        metrics.stored_instances.inc();
        let mut studies = self.studies.lock().unwrap_or_else(|p| p.into_inner());
        let p = studies.entry(study.clone()).or_insert_with(|| Pending {
            tally: StudyTally {
                study_instance_uid: study.clone(),
                patient_id: text(&ds, tags::PATIENT_ID),
                patient_name: text(&ds, tags::PATIENT_NAME),
                birth_date: text(&ds, tags::PATIENT_BIRTH_DATE),
                sex: text(&ds, tags::PATIENT_SEX),
                accession_number: text(&ds, tags::ACCESSION_NUMBER),
                study_date: text(&ds, tags::STUDY_DATE),
                description: text(&ds, tags::STUDY_DESCRIPTION),
                calling_ae: calling.to_string(),
                ..StudyTally::default()
            },
            seen: std::collections::HashSet::new(),
            last: Instant::now(),
            peer,
        });
        p.last = Instant::now();
        let modality = text(&ds, tags::MODALITY);
        if !modality.is_empty() && !p.tally.modalities.contains(&modality) {
            p.tally.modalities.push(modality);
        }
        if p.seen.insert(sop) {
            *p.tally.series.entry(series).or_default() += 1;
        }
        debug!(channel = %cx.channel, "Object stored.");
        status::SUCCESS
    }

    /// Studies quiet for the quiet period, taken out of the tally.
    fn due(&self) -> Vec<(StudyTally, SocketAddr)> {
        let mut studies = self.studies.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let keys: Vec<String> = studies
            .iter()
            .filter(|(_, p)| now.duration_since(p.last) >= self.quiet)
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| studies.remove(&k))
            .map(|p| (p.tally, p.peer))
            .collect()
    }

    /// Announces quiet studies until the source stops (then once more for what is due).
    pub async fn announce_loop(self: std::sync::Arc<Self>, cx: SourceContext) {
        let tick = (self.quiet / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let stop = tokio::select! {
                () = cx.shutdown.cancelled() => true,
                () = tokio::time::sleep(tick) => false,
            };
            for (tally, peer) in self.due() {
                announce(&cx, peer, &tally, &self.ae_title).await;
            }
            if stop {
                return;
            }
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

/// The "study available" message of a study: an HL7 v2.5.1 ORU^R01 whose OBR names the
/// study (OBR-18 accession number, OBR-24 modality, OBR-25 `I`: images, no report yet) and
/// whose OBX rows carry the study UID, one row per series (UID and instance count) and the
/// totals; MSH-10 is a hash of the study UID and its instance count.
pub fn announcement(t: &StudyTally, ae_title: &str, now: &str) -> String {
    let esc = |v: &str| {
        v.replace('\\', "\\E\\")
            .replace('|', "\\F\\")
            .replace('^', "\\S\\")
            .replace('~', "\\R\\")
            .replace('&', "\\T\\")
    };
    let control = format!(
        "STUDY{}",
        &transforms::model::stable_id(&[
            "study",
            &t.study_instance_uid,
            &t.instances().to_string()
        ])[..15]
    );
    let pn: Vec<&str> = t
        .patient_name
        .split('=')
        .next()
        .unwrap_or_default()
        .split('^')
        .collect();
    let name = [pn.first(), pn.get(1)]
        .iter()
        .map(|c| esc(c.copied().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join("^");
    let modality = t.modalities.join("\\E\\");
    let mut segs = vec![
        format!(
            "MSH|^~\\&|{}|{}|||{now}||ORU^R01^ORU_R01|{control}|P|2.5.1||||||UNICODE UTF-8",
            esc(&t.calling_ae),
            esc(ae_title)
        ),
        format!(
            "PID|1||{}||{}||{}|{}",
            esc(&t.patient_id),
            name,
            esc(&t.birth_date),
            match t.sex.as_str() {
                "M" | "F" | "O" => t.sex.as_str(),
                _ => "",
            }
        ),
        format!(
            "OBR|1||{}|^{}|||{}|||||||||||{}||||{now}||{}|I",
            esc(&t.accession_number),
            esc(&t.description),
            esc(&t.study_date),
            esc(&t.accession_number),
            modality
        ),
        format!(
            "OBX|1|ST|StudyInstanceUID^Study Instance UID^DCM||{}||||||I",
            t.study_instance_uid
        ),
    ];
    let mut n = 2;
    for (uid, count) in &t.series {
        segs.push(format!(
            "OBX|{n}|NM|NumberOfSeriesRelatedInstances^Series instances^DCM|{uid}|{count}||||||I"
        ));
        n += 1;
    }
    segs.push(format!(
        "OBX|{n}|NM|NumberOfStudyRelatedSeries^Study series^DCM||{}||||||I",
        t.series.len()
    ));
    segs.push(format!(
        "OBX|{}|NM|NumberOfStudyRelatedInstances^Study instances^DCM||{}||||||I",
        n + 1,
        t.instances()
    ));
    let mut out = segs.join("\r");
    out.push('\r');
    out
}

async fn announce(cx: &SourceContext, peer: SocketAddr, t: &StudyTally, ae_title: &str) {
    let now = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
    let text = announcement(t, ae_title, &now);
    let (tx, rx) = oneshot::channel();
    let inbound = Inbound {
        payload: Payload::Hl7v2(Bytes::from(text.into_bytes())),
        peer,
        received_at: SystemTime::now(),
        reply: tx,
    };
    if cx.out.send(inbound).await.is_err() {
        return;
    }
    match tokio::time::timeout(Duration::from_secs(30), rx).await {
        Ok(Ok(r)) if r.disposition == Disposition::Accepted => {
            debug!(channel = %cx.channel, series = t.series.len(), instances = t.instances(), "Study announced.");
        }
        other => {
            warn!(channel = %cx.channel, outcome = ?other.map(|r| r.map(|r| r.disposition)), "Study announcement not accepted.");
        }
    }
}

/// Hands a data set that could not be used to the channel, to be stored as rejected with
/// its reason (see [`Payload::Rejected`]).
pub async fn reject(cx: &SourceContext, peer: SocketAddr, what: &str, data: &[u8], reason: &str) {
    let (tx, rx) = oneshot::channel();
    let inbound = Inbound {
        payload: Payload::Rejected {
            format: "dicom".into(),
            message_type: what.into(),
            body: Bytes::copy_from_slice(data),
            reason: reason.into(),
        },
        peer,
        received_at: SystemTime::now(),
        reply: tx,
    };
    if cx.out.send(inbound).await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(30), rx).await;
    }
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
    fn announcement_counts() {
        let mut t = StudyTally {
            study_instance_uid: "1.2.3".into(),
            patient_id: "MRN1".into(),
            accession_number: "ACC1".into(),
            modalities: vec!["CT".into()],
            ..StudyTally::default()
        };
        t.series.insert("1.2.3.1".into(), 2);
        t.series.insert("1.2.3.2".into(), 1);
        let text = announcement(&t, "SB", "20260301100000");
        assert!(text
            .contains("OBX|2|NM|NumberOfSeriesRelatedInstances^Series instances^DCM|1.2.3.1|2|"));
        assert!(text.contains("NumberOfStudyRelatedSeries^Study series^DCM||2|"));
        assert!(text.contains("NumberOfStudyRelatedInstances^Study instances^DCM||3|"));
        let msg = transforms::hl7v2::access::V2Message::parse(&text).expect("parses");
        let transforms::Mapped::Event(e) = transforms::v2_to_event(&msg).expect("maps") else {
            panic!("an event")
        };
        assert_eq!(e.kind, transforms::model::EventKind::ResultReported);
    }
}
