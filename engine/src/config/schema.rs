//! The configuration's schema: the serde types of `switchboard.toml` and of a channel file,
//! with their defaults.
//!
//! Each field's doc comment is its user documentation; each default is a named function next
//! to its struct. Deserializing gives the shape of a file and nothing more: reading the files
//! and the environment is in `load.rs`, and what a value means (an address, a name, a secret
//! that resolves) is checked in `checks.rs`. This module imports neither.

use crate::routing::RouteConfig;
use channels::destination::DestinationConfig;
use channels::mllp::listener::ListenerConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use transforms::hl7v2::validate::AcceptPolicy;

/// Engine-wide settings from `switchboard.toml`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Folder of the sled store; relative paths are relative to the working directory.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `fsync` (default): an ACK waits for the flush to disk that covers its message.
    /// `os`: the ACK waits only for the write into the store's memory; for test setups.
    #[serde(default)]
    pub durability: Durability,
    /// Days a message is kept (channels may override). Older messages are removed only once
    /// finished: none with a delivery pending or dead-lettered, and no Latrexa booking not
    /// yet confirmed or rejected at Latrexa.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// The admin HTTP server.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Seconds to wait on shutdown for in-flight messages to be answered.
    #[serde(default = "default_shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
    /// Seconds between two retention passes (the first runs at start).
    #[serde(default = "default_retention_interval_secs")]
    pub retention_interval_secs: u64,
    /// Bytes that must stay free on the disk of `data_dir`: below that, nothing is written to
    /// the store until space is back; new messages are answered AR/CR with ERR 207 (HTTP
    /// 503), deliveries and Latrexa bookings pause and keep their outcomes until they can be
    /// written. 0 turns it off.
    #[serde(default = "default_min_free_disk_bytes")]
    pub min_free_disk_bytes: u64,
    /// MiB of the store's page cache (sled's `cache_capacity`): pages read or written
    /// recently stay decoded in memory up to this size (256 by default, as before it was a
    /// key). More helps reads of older messages (search, resend).
    #[serde(default = "default_store_cache_mib")]
    pub store_cache_mib: u64,
    /// Encryption at rest of message bodies and rendered payloads (`[encryption]`); off
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionConfig>,
    /// `[cluster]`: several nodes sharing a NATS JetStream stream (docs/SCALING.md); one
    /// node with its own store when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

/// `[encryption]`: the store seals message bodies and payloads with ChaCha20-Poly1305.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// `[[encryption.keys]]`, newest first: new values are sealed under the first key; the
    /// others only open values sealed before a rotation. Never drop a key while the store
    /// still holds values sealed under it (the engine refuses to start if you do).
    pub keys: Vec<EncryptionKey>,
}

/// One key of `[[encryption.keys]]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EncryptionKey {
    /// Short name stored with each value sealed under this key: letters, digits, `-`, `_`.
    pub id: String,
    /// 64 hex digits (32 random bytes, e.g. `openssl rand -hex 32`), by reference.
    pub key: SecretRef,
}

fn default_min_free_disk_bytes() -> u64 {
    64 * 1024 * 1024
}

fn default_store_cache_mib() -> u64 {
    crate::store::DEFAULT_CACHE_MIB
}

fn default_retention_interval_secs() -> u64 {
    3600
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_retention_days() -> u32 {
    90
}
fn default_shutdown_grace_secs() -> u64 {
    10
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            data_dir: default_data_dir(),
            durability: Durability::default(),
            retention_days: default_retention_days(),
            admin: AdminConfig::default(),
            log: LogConfig::default(),
            shutdown_grace_secs: default_shutdown_grace_secs(),
            retention_interval_secs: default_retention_interval_secs(),
            min_free_disk_bytes: default_min_free_disk_bytes(),
            store_cache_mib: default_store_cache_mib(),
            encryption: None,
            cluster: None,
        }
    }
}

/// When a positive answer may be sent: the store's type, read from `[engine] durability`.
pub use crate::store::Durability;

/// The admin HTTP server: health, metrics, message API.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address to listen on.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// Bearer token required on `/api/*`; no token means the API is open (loopback only!).
    /// It is an operator token named `admin`.
    #[serde(default)]
    pub token: Option<SecretRef>,
    /// Named tokens with a role each (`read_only` or `operator`), alongside `token`.
    #[serde(default)]
    pub tokens: Vec<crate::auth::TokenConfig>,
}

fn default_admin_listen() -> String {
    "127.0.0.1:8080".into()
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin_listen(),
            token: None,
            tokens: Vec::new(),
        }
    }
}

/// Logging settings; `RUST_LOG` overrides `level` when set.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug`, `trace` or `off`, or comma-separated directives
    /// such as `info,engine=debug` (each a level or `target=level`).
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `human` or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// `auto` (default): colour only when stderr is a terminal and `NO_COLOR` is not set;
    /// `always`; `never`.
    #[serde(default)]
    pub color: LogColor,
}

fn default_log_level() -> String {
    "info".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_log_level(),
            format: LogFormat::default(),
            color: LogColor::default(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per event.
    Json,
}

/// Whether log lines carry ANSI colour codes.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogColor {
    /// Colour only for a person at a terminal: stderr is a terminal and `NO_COLOR`
    /// (<https://no-color.org>) is not set. A log file or a journal gets plain text.
    #[default]
    Auto,
    /// Always colour, even into a file or a pipe.
    Always,
    /// Never colour.
    Never,
}

impl LogColor {
    /// Whether to colour, given whether stderr is a terminal and whether `NO_COLOR` is set.
    pub fn enabled(self, stderr_is_terminal: bool, no_color_set: bool) -> bool {
        match self {
            LogColor::Auto => stderr_is_terminal && !no_color_set,
            LogColor::Always => true,
            LogColor::Never => false,
        }
    }
}

pub use channels::secret::SecretRef;

/// One channel: where messages come from and how they are accepted.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Unique name; used in metrics, logs and the admin API. `[a-z0-9_-]`.
    pub name: String,
    /// The inbound side, chosen by `type`.
    pub source: SourceConfig,
    /// What the channel accepts; anything else is answered AR/CR.
    #[serde(default)]
    pub accept: AcceptConfig,
    /// Character set for HL7 v2 messages whose MSH-18 is empty.
    #[serde(default = "default_charset_fallback")]
    pub charset_fallback: String,
    /// IANA time zone the sender writes its local times in, such as `Asia/Riyadh`: an HL7 v2
    /// time with a time of day and no UTC offset is taken as local time there (with the
    /// zone's offset on that date) in the canonical event, FHIR and every destination
    /// payload. Unset (the default): such times stay as sent, without an offset, and FHIR,
    /// which requires one, writes them as UTC.
    #[serde(default)]
    pub timezone: Option<String>,
    /// When the sender is answered: `on_persist` (default) once the message is on disk.
    #[serde(default)]
    pub ack: AckTiming,
    /// Days messages of this channel are kept; defaults to the engine's `retention_days`.
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// With `ack = "on_delivery"`: seconds to wait for every destination before answering AE.
    #[serde(default = "default_ack_timeout_secs")]
    pub ack_timeout_secs: u64,
    /// `[[route]]` tables: which destinations get which messages.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// `[[destination]]` tables: where messages go.
    #[serde(default, rename = "destination")]
    pub destinations: Vec<DestinationConfig>,
}

fn default_ack_timeout_secs() -> u64 {
    30
}

fn default_charset_fallback() -> String {
    "utf-8".into()
}

/// When a channel answers its sender.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AckTiming {
    /// As soon as the message is stored durably.
    #[default]
    OnPersist,
    /// Once every destination confirmed (AE after `ack_timeout_secs` or a dead letter). In
    /// cluster mode the receiving node learns it from the partition owner's completion
    /// notice (`cluster::notice`).
    OnDelivery,
}

/// The inbound side of a channel, chosen by `type` in its `[source]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
// Built once per configuration load and never moved on a hot path: size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum SourceConfig {
    /// `type = "mllp_listener"`: HL7 v2 over MLLP/TCP.
    MllpListener(ListenerConfig),
    /// `type = "sftp"`: HL7 v2 files polled from a folder on an SFTP server.
    Sftp(Box<channels::sftp::PollerConfig>),
    /// `type = "latrexa"`: Latrexa online bookings, written into the HIS over MLLP.
    Latrexa(Box<channels::clinic_api::latrexa_bookings::BookingsConfig>),
    /// `type = "fhir_rest"`: FHIR R4 over REST (create, update, transaction/batch Bundles).
    FhirRest(channels::fhir_rest::source::FhirSourceConfig),
    /// `type = "webhook"`: JSON events over HTTP (Buktor, PX360 or OpsPort-shaped).
    Webhook(channels::webhook::receiver::ReceiverConfig),
    /// `type = "dicom_worklist"`: DICOM Modality Worklist C-FIND and MPPS (docs/DICOM.md).
    DicomWorklist(channels::dicom::WorklistSourceConfig),
    /// `type = "dicom_store"`: DICOM C-STORE into a folder (docs/DICOM.md).
    DicomStore(channels::dicom::StoreSourceConfig),
}

impl SourceConfig {
    /// The address the source listens on; `None` for sources that poll or connect out.
    pub fn listen(&self) -> Option<&str> {
        match self {
            Self::MllpListener(l) => Some(&l.listen),
            Self::FhirRest(f) => Some(&f.listen),
            Self::Webhook(w) => Some(&w.listen),
            Self::DicomWorklist(d) => Some(&d.listen),
            Self::DicomStore(d) => Some(&d.listen),
            Self::Sftp(_) | Self::Latrexa(_) => None,
        }
    }

    /// The server TLS of a listening source (`[source.tls]`); `None` for sources that poll
    /// or connect out, and for a listener without TLS.
    pub fn server_tls(&self) -> Option<&channels::tls::ServerTlsConfig> {
        match self {
            Self::MllpListener(l) => l.tls.as_ref(),
            Self::FhirRest(f) => f.tls.as_ref(),
            Self::Webhook(w) => w.tls.as_ref(),
            Self::DicomWorklist(d) => d.tls.as_ref(),
            Self::DicomStore(d) => d.tls.as_ref(),
            Self::Sftp(_) | Self::Latrexa(_) => None,
        }
    }
}

/// What a channel accepts (`[accept]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AcceptConfig {
    /// Message type patterns: `*`, `ADT^*`, `SIU^S12`.
    #[serde(default = "default_message_types")]
    pub message_types: Vec<String>,
    /// MSH-11 processing ids.
    #[serde(default = "default_processing_ids")]
    pub processing_ids: Vec<String>,
    /// MSH-12 versions (`2.5` also accepts `2.5.1`).
    #[serde(default = "default_versions")]
    pub versions: Vec<String>,
}

fn default_message_types() -> Vec<String> {
    AcceptPolicy::default().message_types
}
fn default_processing_ids() -> Vec<String> {
    AcceptPolicy::default().processing_ids
}
fn default_versions() -> Vec<String> {
    AcceptPolicy::default().versions
}

impl Default for AcceptConfig {
    fn default() -> Self {
        AcceptConfig {
            message_types: default_message_types(),
            processing_ids: default_processing_ids(),
            versions: default_versions(),
        }
    }
}

impl AcceptConfig {
    /// The policy the HL7 checks use.
    pub fn policy(&self) -> AcceptPolicy {
        AcceptPolicy {
            message_types: self.message_types.clone(),
            processing_ids: self.processing_ids.clone(),
            versions: self.versions.clone(),
        }
    }
}
