//! What every source shares: the message it hands to the engine, the answer it gets back,
//! and the context it is built with.

use bytes::Bytes;
use prometheus::IntCounter;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::SystemTime;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// What was received, exactly as it arrived.
#[derive(Debug, Clone)]
pub enum Payload {
    /// One complete HL7 v2 message (bytes in the sender's character set).
    Hl7v2(Bytes),
    /// An HL7 v2 frame over the size limit; only its first bytes were kept.
    Hl7v2Oversize {
        /// The first bytes of the frame, enough to read its MSH.
        head: Bytes,
        /// The configured limit that was exceeded.
        limit: usize,
    },
    /// A JSON body received over HTTP (FHIR REST or webhook), after the HTTP layer's checks
    /// (peer, credentials, signature, content type, size).
    Json(JsonBody),
    /// A record of something a source took and keeps itself (a DICOM object stored in a
    /// folder): stored as accepted, with `body` as its raw bytes (a reference, not the
    /// object), and routed; only raw payloads (`dicom`) can be sent from it.
    Record {
        /// The record format, such as `dicom`.
        format: RecordFormat,
        /// What it was, such as `C-STORE`.
        message_type: String,
        /// An identifier shown as the control id (the SOP instance UID).
        control_id: String,
        /// The record's bytes.
        body: Bytes,
        /// Whether the control id names what the record says (a study's announcement): a
        /// second record of the same format, type and control id in the channel is then a
        /// resend, answered as accepted and neither stored nor routed again.
        dedup: bool,
    },
    /// Something a source could not use (a DICOM data set that does not parse, a C-STORE
    /// without its UIDs, an MPPS N-SET of an unknown step): stored as rejected with
    /// `reason`, routed nowhere.
    Rejected {
        /// The record format, such as `dicom`.
        format: RecordFormat,
        /// What it was, such as `C-STORE`, `N-CREATE`, `N-SET` or `C-FIND`.
        message_type: String,
        /// An identifier shown as the control id (the SOP instance UID), or empty.
        control_id: String,
        /// The bytes as received.
        body: Bytes,
        /// Why it was refused (never its content).
        reason: String,
    },
}

/// A JSON request body and what the HTTP layer knows about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonBody {
    /// The format that decides its mapping and its error bodies.
    pub format: JsonFormat,
    /// What was asked: for FHIR `create`, `update` or `bundle`; for OpsPort the path's kind
    /// (`patient`, `appointments`, ...); for the other formats the endpoint name.
    pub interaction: String,
    /// For FHIR create/update: the resource type of the path (`Patient`).
    pub resource_type: Option<String>,
    /// For FHIR update: the id of the path.
    pub resource_id: Option<String>,
    /// The body exactly as received.
    pub body: Bytes,
}

/// Which JSON dialect a webhook source speaks (`format` in its `[source]`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// Buktor HIS webhook events.
    Buktor,
    /// PX360 HIS patient data.
    Px360,
    /// OpsPort-shaped upserts.
    Opsport,
}

impl WebhookFormat {
    /// The record format name (`buktor`, `px360`, `opsport`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buktor => "buktor",
            Self::Px360 => "px360",
            Self::Opsport => "opsport",
        }
    }

    /// The format's error body for `message`.
    pub fn error_body(self, message: &str) -> Value {
        match self {
            Self::Buktor => json!({"status": "error", "message": message}),
            Self::Px360 => json!({"error": message}),
            Self::Opsport => json!({"success": false, "message": message}),
        }
    }
}

/// What a JSON body received over HTTP is: a FHIR resource or Bundle, or a webhook event in
/// one of the [`WebhookFormat`]s. Its name is the stored record's `format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JsonFormat {
    /// FHIR R4 (`fhir`), from a `fhir_rest` source.
    Fhir,
    /// A webhook source's format (`buktor`, `px360`, `opsport`).
    Webhook(WebhookFormat),
}

impl JsonFormat {
    /// Every JSON format.
    pub const ALL: [JsonFormat; 4] = [
        JsonFormat::Fhir,
        JsonFormat::Webhook(WebhookFormat::Buktor),
        JsonFormat::Webhook(WebhookFormat::Px360),
        JsonFormat::Webhook(WebhookFormat::Opsport),
    ];

    /// The record format name: `fhir`, `buktor`, `px360`, `opsport`.
    pub fn as_str(self) -> &'static str {
        match self {
            JsonFormat::Fhir => "fhir",
            JsonFormat::Webhook(w) => w.as_str(),
        }
    }
}

/// The `format` of a stored message record: what the source received, which decides how the
/// message is read (see the engine's `formats`). Records keep it as its name
/// ([`RecordFormat::as_str`]), as they always have; the engine's store reads a name back
/// (and keeps one it does not know as it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordFormat {
    /// `hl7v2`: an HL7 v2 message (MLLP, SFTP, file).
    Hl7v2,
    /// A JSON body from an HTTP source.
    Json(JsonFormat),
    /// `latrexa`: an online booking revision from a `latrexa` source.
    Latrexa,
    /// `dicom`: a record a DICOM source keeps (a stored object, a study's announcement).
    Dicom,
}

impl RecordFormat {
    /// Every record format.
    pub fn all() -> impl Iterator<Item = RecordFormat> {
        [RecordFormat::Hl7v2]
            .into_iter()
            .chain(JsonFormat::ALL.map(RecordFormat::Json))
            .chain([RecordFormat::Latrexa, RecordFormat::Dicom])
    }

    /// The name records keep.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordFormat::Hl7v2 => "hl7v2",
            RecordFormat::Json(j) => j.as_str(),
            RecordFormat::Latrexa => "latrexa",
            RecordFormat::Dicom => "dicom",
        }
    }
}

impl std::fmt::Display for RecordFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One received message and the way to answer whoever sent it.
#[derive(Debug)]
pub struct Inbound {
    /// What was received.
    pub payload: Payload,
    /// The remote address of the sender.
    pub peer: SocketAddr,
    /// When the last byte arrived.
    pub received_at: SystemTime,
    /// Where the engine sends its decision.
    pub reply: oneshot::Sender<Reply>,
}

/// What became of a message, in terms every source understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Stored; the sender may forget it.
    Accepted,
    /// Not stored because of a fault on our side; the sender should send it again later.
    Retry(String),
    /// Stored as rejected; sending it again unchanged will not help.
    Rejected(String),
}

/// The engine's answer to one [`Inbound`].
#[derive(Debug, Clone)]
pub struct Reply {
    /// The decision.
    pub disposition: Disposition,
    /// The bytes to send back (the ACK for MLLP), or `None` when the sender asked for no
    /// answer in this case (enhanced mode MSH-15).
    pub body: Option<Bytes>,
    /// For HTTP sources: the status and headers the engine decided (`None` for MLLP).
    pub http: Option<HttpAnswer>,
    /// The id the engine stored the message under, when it stored it (`None` when it was
    /// answered without a record: a store failure, a paused channel, a resend answered from
    /// the store names the original).
    pub message_id: Option<u64>,
}

/// The HTTP side of a [`Reply`] to a [`Payload::Json`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    /// The status code (201, 200, 400, 422, 503).
    pub status: u16,
    /// `Location` of a created or updated FHIR resource, relative to the server base.
    pub location: Option<String>,
    /// Content type of the body (`application/fhir+json`, `application/json`).
    pub content_type: String,
}

/// Counters a source updates; the engine creates them with the channel's labels.
#[derive(Debug, Clone)]
pub struct SourceMetrics {
    /// Connections accepted.
    pub connections_opened: IntCounter,
    /// Connections closed, for any reason.
    pub connections_closed: IntCounter,
    /// Connections refused (over a cap, or from a peer not allowed).
    pub connections_refused: IntCounter,
    /// Of those, refused because their peer address held `max_connections_per_peer`.
    pub connections_refused_per_peer: IntCounter,
    /// Idle connections closed to admit a new one when the source held `max_connections`.
    pub connections_evicted: IntCounter,
    /// Bytes skipped outside frames.
    pub junk_bytes: IntCounter,
    /// Connections cut for a timeout (MLLP: idle, frame or write; HTTP: headers or body).
    pub timeouts: IntCounter,
    /// HTTP requests refused for missing or wrong credentials, signature or timestamp.
    pub auth_failures: IntCounter,
    /// TLS handshakes that failed, by reason.
    pub tls_handshake_failures: crate::tls::HandshakeFailures,
}

impl SourceMetrics {
    /// Metrics that are not registered anywhere, for tests and tools.
    pub fn unregistered() -> Self {
        let c = |n: &str| IntCounter::new(n, n).expect("a valid metric name");
        SourceMetrics {
            connections_opened: c("opened"),
            connections_closed: c("closed"),
            connections_refused: c("refused"),
            connections_refused_per_peer: c("refused_per_peer"),
            connections_evicted: c("evicted"),
            junk_bytes: c("junk"),
            timeouts: c("timeouts"),
            auth_failures: c("auth_failures"),
            tls_handshake_failures: crate::tls::HandshakeFailures::unregistered(),
        }
    }
}

/// What the engine hands to a source when building it.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// The channel's name, for logs.
    pub channel: String,
    /// Where received messages go; bounded, so a full pipeline slows senders down.
    pub out: mpsc::Sender<Inbound>,
    /// Cancelled when the source must stop accepting and finish what is in flight.
    pub shutdown: CancellationToken,
    /// The channel's source metrics.
    pub metrics: SourceMetrics,
    /// Set while an operator has paused the channel: polling sources do not poll (listening
    /// sources keep listening; the engine answers what they receive, see the engine's
    /// `pause` module).
    pub paused: PauseFlag,
}

/// Whether an operator paused a channel; shared by its source, its ingest and the admin API,
/// and kept across reloads (the engine holds one per channel name).
#[derive(Debug, Clone, Default)]
pub struct PauseFlag(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl PauseFlag {
    /// True while the channel is paused.
    pub fn is_paused(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Pauses (`true`) or resumes (`false`) the channel.
    pub fn set(&self, paused: bool) {
        self.0.store(paused, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Why a source could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The configuration is invalid in a way the loader could not see.
    #[error("{0}")]
    Config(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stored records keep the format's name (each distinct), and a webhook source's `format`
    /// is read from the same spelling.
    #[test]
    fn record_format_names_are_the_stored_spelling() {
        let names: Vec<&str> = RecordFormat::all().map(RecordFormat::as_str).collect();
        assert_eq!(
            names,
            ["hl7v2", "fhir", "buktor", "px360", "opsport", "latrexa", "dicom"]
        );
        for f in RecordFormat::all() {
            assert_eq!(f.to_string(), f.as_str());
        }
        for w in [
            WebhookFormat::Buktor,
            WebhookFormat::Px360,
            WebhookFormat::Opsport,
        ] {
            let read: WebhookFormat =
                serde_json::from_value(serde_json::Value::String(w.as_str().into()))
                    .expect("its spelling");
            assert_eq!(read, w);
            assert_eq!(JsonFormat::Webhook(w).as_str(), w.as_str());
        }
        assert!(serde_json::from_str::<WebhookFormat>("\"fhir\"").is_err());
    }
}
