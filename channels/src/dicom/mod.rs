//! DICOM for radiology, with the dicom-rs crates: a Modality Worklist and MPPS provider
//! (`[source] type = "dicom_worklist"`), a storage provider (`[source] type = "dicom_store"`),
//! the worklist writer (`[[destination]] type = "worklist"`) and a C-STORE sender
//! (`[[destination]] type = "dicom"`). docs/DICOM.md says what maps to what.
//!
//! Every provider answers C-ECHO. An association whose calling AE title is not in
//! `allowed_calling_ae_titles` (or whose called AE title is not the source's `ae_title`) is
//! refused with A-ASSOCIATE-RJ; a peer address outside `allowed_peers` is closed before any
//! PDU is read. Nothing is answered with success before it is durable: worklist and MPPS
//! state goes through the engine's store (committed), stored objects are fsynced.

pub mod dimse;
pub mod mpps;
pub mod scp;
pub mod sender;
pub mod storage;
pub mod worklist;
pub mod worklist_dest;

use crate::peers::PeerRange;
use crate::source::{Inbound, Payload};
use bytes::Bytes;
use prometheus::{IntCounter, IntCounterVec};
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot};

/// The Verification SOP class (C-ECHO).
pub const VERIFICATION: &str = "1.2.840.10008.1.1";

/// `[source] type = "dicom_worklist"`: Modality Worklist C-FIND and MPPS N-CREATE/N-SET.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorklistSourceConfig {
    /// Address to listen on, `IP:PORT` (DICOM's registered port is 104; 11112 is common).
    pub listen: String,
    /// This provider's AE title (at most 16 characters); the called AE title must equal it.
    pub ae_title: String,
    /// Calling AE titles allowed to associate; an empty list allows any.
    #[serde(default)]
    pub allowed_calling_ae_titles: Vec<String>,
    /// Peer addresses or CIDR ranges allowed to connect; an empty list allows any.
    #[serde(default)]
    pub allowed_peers: Vec<PeerRange>,
    /// Associations served at once; further connections are closed.
    #[serde(default = "default_max_associations")]
    pub max_associations: usize,
    /// Seconds an association may stay silent before it is aborted.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// The worklist served: the name `[[destination]] type = "worklist"` writes to.
    #[serde(default = "default_worklist")]
    pub worklist: String,
    /// Whether MPPS N-CREATE/N-SET is accepted (each becomes an ORM^O01 status message).
    #[serde(default = "default_true")]
    pub mpps: bool,
    /// At most this many matches per C-FIND.
    #[serde(default = "default_max_matches")]
    pub max_matches: usize,
    /// DICOM TLS (PS3.15 B.1, the secure transport connection profiles): the certificate
    /// presented and, with `client_ca`, the modality certificates accepted (the same
    /// `[source.tls]` table as an MLLP listener). Without it the source speaks plain TCP.
    #[serde(default)]
    pub tls: Option<crate::tls::ServerTlsConfig>,
}

/// `[source] type = "dicom_store"`: C-STORE provider writing objects to a folder.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreSourceConfig {
    /// Address to listen on, `IP:PORT`.
    pub listen: String,
    /// This provider's AE title (at most 16 characters); the called AE title must equal it.
    pub ae_title: String,
    /// Calling AE titles allowed to associate; an empty list allows any.
    #[serde(default)]
    pub allowed_calling_ae_titles: Vec<String>,
    /// Peer addresses or CIDR ranges allowed to connect; an empty list allows any.
    #[serde(default)]
    pub allowed_peers: Vec<PeerRange>,
    /// Associations served at once; further connections are closed.
    #[serde(default = "default_max_associations")]
    pub max_associations: usize,
    /// Seconds an association may stay silent before it is aborted.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Folder objects are written to, as `StudyUID/SeriesUID/SOPInstanceUID.dcm`.
    pub folder: std::path::PathBuf,
    /// Seconds without a new instance of a study after which it is announced ("study
    /// available").
    #[serde(default = "default_quiet_period_secs")]
    pub quiet_period_secs: u64,
    /// Largest object taken, in bytes.
    #[serde(default = "default_max_object_bytes")]
    pub max_object_bytes: usize,
    /// DICOM TLS (PS3.15 B.1, the secure transport connection profiles): the certificate
    /// presented and, with `client_ca`, the modality certificates accepted (the same
    /// `[source.tls]` table as an MLLP listener). Without it the source speaks plain TCP.
    #[serde(default)]
    pub tls: Option<crate::tls::ServerTlsConfig>,
}

fn default_max_associations() -> usize {
    32
}
fn default_idle_timeout_secs() -> u64 {
    60
}
fn default_worklist() -> String {
    "default".into()
}
fn default_true() -> bool {
    true
}
fn default_max_matches() -> usize {
    1000
}
fn default_quiet_period_secs() -> u64 {
    60
}
fn default_max_object_bytes() -> usize {
    512 * 1024 * 1024
}

/// Problems of an AE title: (message) when it is not 1 to 16 printable characters without
/// a backslash, or all spaces.
pub fn ae_title_problem(ae: &str) -> Option<String> {
    if ae.trim().is_empty() || ae.len() > 16 {
        return Some(format!("'{ae}' is not an AE title (1 to 16 characters)"));
    }
    if ae.chars().any(|c| !(' '..='~').contains(&c) || c == '\\') {
        return Some(format!(
            "'{ae}' is not an AE title (printable ASCII without '\\')"
        ));
    }
    None
}

fn listener_problems(
    listen: &str,
    ae_title: &str,
    allowed: &[String],
    max_associations: usize,
    idle: u64,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if listen.parse::<std::net::SocketAddr>().is_err() {
        out.push((
            "listen".into(),
            format!("'{listen}' is not an address (use IP:PORT, such as 0.0.0.0:11112)"),
        ));
    }
    if let Some(m) = ae_title_problem(ae_title) {
        out.push(("ae_title".into(), m));
    }
    for (i, a) in allowed.iter().enumerate() {
        if let Some(m) = ae_title_problem(a) {
            out.push((format!("allowed_calling_ae_titles[{i}]"), m));
        }
    }
    if max_associations == 0 {
        out.push(("max_associations".into(), "must be at least 1".into()));
    }
    if idle == 0 {
        out.push(("idle_timeout_secs".into(), "must be at least 1".into()));
    }
    out
}

fn tls_problems(tls: Option<&crate::tls::ServerTlsConfig>) -> Vec<(String, String)> {
    tls.map(|t| {
        t.problems()
            .into_iter()
            .map(|(k, m)| (format!("tls.{k}"), m))
            .collect()
    })
    .unwrap_or_default()
}

impl WorklistSourceConfig {
    /// Problems a config loader cannot see: (key below `source.`, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = listener_problems(
            &self.listen,
            &self.ae_title,
            &self.allowed_calling_ae_titles,
            self.max_associations,
            self.idle_timeout_secs,
        );
        out.extend(tls_problems(self.tls.as_ref()));
        if self.worklist.trim().is_empty() {
            out.push(("worklist".into(), "must not be empty".into()));
        }
        if self.max_matches == 0 {
            out.push(("max_matches".into(), "must be at least 1".into()));
        }
        out
    }
}

impl StoreSourceConfig {
    /// Problems a config loader cannot see: (key below `source.`, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = listener_problems(
            &self.listen,
            &self.ae_title,
            &self.allowed_calling_ae_titles,
            self.max_associations,
            self.idle_timeout_secs,
        );
        out.extend(tls_problems(self.tls.as_ref()));
        if self.folder.as_os_str().is_empty() {
            out.push(("folder".into(), "must not be empty".into()));
        }
        if self.quiet_period_secs == 0 {
            out.push(("quiet_period_secs".into(), "must be at least 1".into()));
        }
        if self.max_object_bytes < 1024 {
            out.push(("max_object_bytes".into(), "must be at least 1024".into()));
        }
        out
    }
}

/// Counters a DICOM source updates; the engine creates them.
#[derive(Debug, Clone)]
pub struct DicomMetrics {
    /// `switchboard_dicom_associations_total{channel, outcome}`: outcome `accepted`,
    /// `rejected` (A-ASSOCIATE-RJ), `refused` (peer address or cap) or `failed` (the
    /// negotiation broke).
    pub associations: IntCounterVec,
    /// `switchboard_dicom_stored_instances_total{channel}` of this channel.
    pub stored_instances: IntCounter,
}

impl DicomMetrics {
    /// Metrics registered nowhere, for tests and tools.
    pub fn unregistered() -> Self {
        DicomMetrics {
            associations: IntCounterVec::new(
                prometheus::Opts::new("associations", "associations"),
                &["channel", "outcome"],
            )
            .expect("valid metric"),
            stored_instances: IntCounter::new("stored", "stored").expect("valid metric"),
        }
    }
}

/// What a DICOM source refused because of what the peer sent, to be stored as a rejected
/// message of format `dicom` (see [`Payload::Rejected`]).
#[derive(Debug, Clone)]
pub struct Refusal<'a> {
    /// The DIMSE operation: `C-STORE`, `C-FIND`, `N-CREATE`, `N-SET`.
    pub operation: &'a str,
    /// The SOP instance UID concerned, or empty.
    pub uid: &'a str,
    /// The data set as received (empty when none came).
    pub data: &'a [u8],
    /// Why (never patient data).
    pub reason: &'a str,
}

/// Hands a refused request to the channel, which stores it as rejected with its reason
/// before this returns (or 30 s pass); the caller answers the peer afterwards.
pub async fn reject(out: &mpsc::Sender<Inbound>, peer: SocketAddr, r: Refusal<'_>) {
    let (tx, rx) = oneshot::channel();
    let inbound = Inbound {
        payload: Payload::Rejected {
            format: crate::source::RecordFormat::Dicom,
            message_type: r.operation.into(),
            control_id: r.uid.into(),
            body: Bytes::copy_from_slice(r.data),
            reason: r.reason.into(),
        },
        peer,
        received_at: SystemTime::now(),
        reply: tx,
    };
    if out.send(inbound).await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(30), rx).await;
    }
}
