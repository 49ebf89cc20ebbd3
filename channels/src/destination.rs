//! The outbound side: what a destination is configured with, what it is asked to deliver,
//! and how a failure is classified. One enum variant per kind; `build` returns a client.

pub use crate::kind::{DestinationKind, PayloadKind};
use crate::secret::SecretRef;
use crate::{clinic_api, fhir_rest, file, mllp, sftp, webhook};
use bytes::Bytes;
use serde::Deserialize;
use std::time::Duration;
use transforms::dest::latrexa::LatrexaOptions;
use transforms::dest::{Vendor, VendorOptions};
use transforms::mapping::FieldMapping;

/// One rendered delivery, exactly as it will be sent (and re-sent on retry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The payload.
    pub body: Bytes,
    /// `application/json`, `application/hl7-v2`, `application/fhir+json`.
    pub content_type: String,
    /// Stable per message and destination: the same on every retry.
    pub idempotency_key: String,
    /// MSH-10 of an HL7 payload, which the peer's MSA-2 must echo.
    pub control_id: Option<String>,
    /// Path relative to the destination's base URL, for APIs with several endpoints.
    pub path: Option<String>,
}

/// What the destination said when it took a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// HTTP status, when the destination speaks HTTP.
    pub status: Option<u16>,
    /// A short description of the answer (ACK code, response excerpt).
    pub detail: String,
    /// The peer's whole answer (the ACK's text, the HTTP response body), at most
    /// [`MAX_ANSWER_BYTES`] (see [`bounded_answer`]); `None` for destinations that answer
    /// nothing (file, SFTP) or when the engine answered itself.
    pub answer: Option<String>,
}

/// Most bytes of a peer's answer kept per delivery attempt (64 KiB); a longer one is cut
/// and says so.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// `text` cut to at most [`MAX_ANSWER_BYTES`] on a character boundary, with a note of the
/// full length when it was cut; `None` for an empty answer.
pub fn bounded_answer(text: &str) -> Option<String> {
    if text.is_empty() {
        return None;
    }
    if text.len() <= MAX_ANSWER_BYTES {
        return Some(text.to_string());
    }
    let mut end = MAX_ANSWER_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(format!(
        "{}\n[answer cut: {} of {} bytes kept]",
        &text[..end],
        end,
        text.len()
    ))
}

/// How the appointment ledger reads an appointment body sent to a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerView {
    /// The destination's key of the slot the appointment occupies (OpsPort: patient, day and
    /// start time); empty when the destination keys appointments by id only.
    pub slot: String,
    /// The status as sent, in the destination's words.
    pub status: String,
    /// Whether that status leaves the slot closed (cancelled, deleted, no-show).
    pub closed: bool,
}

/// Why a delivery failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct DeliveryError {
    /// True for timeouts, connection errors, 5xx, 429, AR: try again later.
    pub retryable: bool,
    /// How long the destination asked us to wait (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// HTTP status, when there was one.
    pub status: Option<u16>,
    /// What happened, naming the endpoint and the answer, never the payload.
    pub reason: String,
    /// The peer's whole answer when there was one (see [`Receipt::answer`]).
    pub answer: Option<String>,
}

impl DeliveryError {
    /// A failure worth retrying.
    pub fn retry(reason: impl Into<String>) -> Self {
        DeliveryError {
            retryable: true,
            retry_after: None,
            status: None,
            reason: reason.into(),
            answer: None,
        }
    }

    /// A failure that retrying cannot fix: dead letter at once.
    pub fn permanent(reason: impl Into<String>) -> Self {
        DeliveryError {
            retryable: false,
            retry_after: None,
            status: None,
            reason: reason.into(),
            answer: None,
        }
    }

    /// The same error, keeping the peer's whole answer (bounded, see [`bounded_answer`]).
    pub fn with_answer(mut self, answer: &str) -> Self {
        self.answer = bounded_answer(answer);
        self
    }

    /// True when retrying can help.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

/// How deliveries to one destination are scheduled (`[destination.delivery]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Partition key: `patient` (default, the patient identifier: FIFO per patient; master
    /// data in one FIFO of its own, delivered ahead of what is queued after it) or `none`
    /// (one FIFO for the whole destination).
    #[serde(default = "default_partition")]
    pub partition: Partition,
    /// Partitions delivered in parallel.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// First retry delay in milliseconds; doubles each attempt, with jitter.
    #[serde(default = "default_backoff_base_ms")]
    pub backoff_base_ms: u64,
    /// Longest retry delay in milliseconds.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Attempts before a delivery goes to the dead letters.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Seconds after which a delivery goes to the dead letters, however few its attempts.
    #[serde(default = "default_max_age_secs")]
    pub max_age_secs: u64,
    /// Consecutive failures that open the circuit breaker (stop sending for a while).
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// Seconds the breaker stays open before one trial delivery.
    #[serde(default = "default_breaker_cooldown_secs")]
    pub breaker_cooldown_secs: u64,
    /// Seconds between two health checks while the destination is down (its health check
    /// failed or its circuit breaker is open); it is checked once at startup too.
    #[serde(default = "default_healthcheck_interval_secs")]
    pub healthcheck_interval_secs: u64,
}

/// The partition key of a destination's FIFOs.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Partition {
    /// The patient identifier (PID-3, first repetition): in order per patient.
    Patient,
    /// One queue: strictly in order.
    None,
}

fn default_partition() -> Partition {
    Partition::Patient
}
fn default_concurrency() -> usize {
    4
}
fn default_backoff_base_ms() -> u64 {
    1000
}
fn default_backoff_max_ms() -> u64 {
    300_000
}
fn default_max_attempts() -> u32 {
    20
}
fn default_max_age_secs() -> u64 {
    86_400
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_cooldown_secs() -> u64 {
    30
}
fn default_healthcheck_interval_secs() -> u64 {
    10
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            partition: default_partition(),
            concurrency: default_concurrency(),
            backoff_base_ms: default_backoff_base_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            max_attempts: default_max_attempts(),
            max_age_secs: default_max_age_secs(),
            breaker_failures: default_breaker_failures(),
            breaker_cooldown_secs: default_breaker_cooldown_secs(),
            healthcheck_interval_secs: default_healthcheck_interval_secs(),
        }
    }
}

/// What an authenticated request that changes nothing (`switchboard check --connect`) said
/// about a destination's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialCheck {
    /// The peer took the credentials: the request made and its answer.
    Accepted(String),
    /// The peer refused them (401, 403), failed (5xx) or did not answer: the request made
    /// and the peer's own answer.
    Refused(String),
    /// The vendor documents no request that checks credentials without changing anything,
    /// or there are no credentials: why, so an operator knows what was not checked.
    NotChecked(String),
}

/// A destination, chosen by `type` in a channel's `[[destination]]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
// Read once from config and cloned rarely: the size difference between kinds costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum DestinationConfig {
    /// `type = "mllp"`: an HL7 v2 peer over MLLP/TCP.
    Mllp(mllp::sender::SenderConfig),
    /// `type = "webhook"`: HTTP POST of JSON, optionally signed.
    Webhook(webhook::sender::WebhookConfig),
    /// `type = "file"`: one file per delivery in a local folder.
    File(file::FileConfig),
    /// `type = "sftp"`: one file per delivery in a folder on an SFTP server.
    Sftp(sftp::WriterConfig),
    /// `type = "opsport"`: the OpsPort healthcare upsert API.
    Opsport(clinic_api::opsport::OpsportConfig),
    /// `type = "buktor"`: the Buktor HIS webhook, signed.
    Buktor(clinic_api::buktor::BuktorConfig),
    /// `type = "px360"`: the PX360 HIS patient-data endpoint.
    Px360(clinic_api::px360::Px360Config),
    /// `type = "latrexa"`: the Latrexa appointment upload (HIS -> Latrexa).
    Latrexa(clinic_api::latrexa::LatrexaConfig),
    /// `type = "fhir"`: a FHIR R4 server (transaction Bundle or conditional updates).
    Fhir(fhir_rest::client::FhirConfig),
    /// `type = "worklist"`: orders become DICOM Modality Worklist items (docs/DICOM.md).
    Worklist(crate::dicom::worklist_dest::WorklistDestinationConfig),
    /// `type = "dicom"`: a PACS, by C-STORE (docs/DICOM.md).
    Dicom(crate::dicom::sender::DicomDestinationConfig),
}

impl DestinationConfig {
    /// The destination's name (unique within its channel).
    pub fn name(&self) -> &str {
        match self {
            Self::Mllp(c) => &c.name,
            Self::Webhook(c) => &c.name,
            Self::File(c) => &c.name,
            Self::Sftp(c) => &c.name,
            Self::Opsport(c) => &c.name,
            Self::Buktor(c) => &c.name,
            Self::Px360(c) => &c.name,
            Self::Latrexa(c) => &c.name,
            Self::Fhir(c) => &c.name,
            Self::Worklist(c) => &c.name,
            Self::Dicom(c) => &c.name,
        }
    }

    /// Its scheduling settings.
    pub fn delivery(&self) -> &DeliveryConfig {
        match self {
            Self::Mllp(c) => &c.delivery,
            Self::Webhook(c) => &c.delivery,
            Self::File(c) => &c.delivery,
            Self::Sftp(c) => &c.delivery,
            Self::Opsport(c) => &c.delivery,
            Self::Buktor(c) => &c.delivery,
            Self::Px360(c) => &c.delivery,
            Self::Latrexa(c) => &c.delivery,
            Self::Fhir(c) => &c.delivery,
            Self::Worklist(c) => &c.delivery,
            Self::Dicom(c) => &c.delivery,
        }
    }

    /// Its `type`.
    pub fn kind(&self) -> DestinationKind {
        match self {
            Self::Mllp(_) => DestinationKind::Mllp,
            Self::Webhook(_) => DestinationKind::Webhook,
            Self::File(_) => DestinationKind::File,
            Self::Sftp(_) => DestinationKind::Sftp,
            Self::Opsport(_) => DestinationKind::Vendor(Vendor::Opsport),
            Self::Buktor(_) => DestinationKind::Vendor(Vendor::Buktor),
            Self::Px360(_) => DestinationKind::Vendor(Vendor::Px360),
            Self::Latrexa(_) => DestinationKind::Vendor(Vendor::Latrexa),
            Self::Fhir(_) => DestinationKind::Fhir,
            Self::Worklist(_) => DestinationKind::Worklist,
            Self::Dicom(_) => DestinationKind::Dicom,
        }
    }

    /// The payload this kind sends unless a route says otherwise: `hl7`, `canonical`, or the
    /// vendor's own (`opsport`, `buktor`, `px360`, `latrexa`).
    pub fn default_payload(&self) -> PayloadKind {
        self.kind().default_payload()
    }

    /// For a vendor destination, its render options and its `[destination.mapping]`; `None`
    /// for the other kinds.
    pub fn vendor_options(&self) -> Option<(VendorOptions<'_>, &FieldMapping)> {
        use std::borrow::Cow::{Borrowed, Owned};
        match self {
            Self::Opsport(c) => Some((VendorOptions::Opsport(Borrowed(&c.options)), &c.mapping)),
            Self::Buktor(c) => Some((VendorOptions::Buktor(Borrowed(&c.options)), &c.mapping)),
            Self::Px360(c) => Some((VendorOptions::Px360(Borrowed(&c.options)), &c.mapping)),
            Self::Latrexa(c) => Some((
                VendorOptions::Latrexa(Owned(LatrexaOptions {
                    walk_in_registrations: c.walk_in_registrations,
                })),
                &c.mapping,
            )),
            Self::Mllp(_)
            | Self::Webhook(_)
            | Self::File(_)
            | Self::Sftp(_)
            | Self::Fhir(_)
            | Self::Worklist(_)
            | Self::Dicom(_) => None,
        }
    }

    /// The TLS settings of a destination that connects with a client certificate set
    /// (`mllp`, `dicom`); `None` for the others and when TLS is off.
    pub fn client_tls(&self) -> Option<&crate::tls::ClientTlsConfig> {
        match self {
            Self::Mllp(c) => c.tls.as_ref(),
            Self::Dicom(c) => c.tls.as_ref(),
            Self::Webhook(_)
            | Self::File(_)
            | Self::Sftp(_)
            | Self::Opsport(_)
            | Self::Buktor(_)
            | Self::Px360(_)
            | Self::Latrexa(_)
            | Self::Fhir(_)
            | Self::Worklist(_) => None,
        }
    }

    /// Every secret this destination references, with its key, for `check`.
    pub fn secrets(&self) -> Vec<(&'static str, &SecretRef)> {
        match self {
            Self::Mllp(_) | Self::File(_) | Self::Worklist(_) | Self::Dicom(_) => vec![],
            Self::Webhook(c) => c.secrets(),
            Self::Sftp(c) => c.secrets(),
            Self::Opsport(c) => c.secrets(),
            Self::Buktor(c) => c.secrets(),
            Self::Px360(c) => c.secrets(),
            Self::Latrexa(c) => c.secrets(),
            Self::Fhir(c) => c.secrets(),
        }
    }

    /// Problems a config loader cannot see: (key, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let d = self.delivery();
        if d.concurrency == 0 {
            out.push(("delivery.concurrency".into(), "must be at least 1".into()));
        }
        if d.healthcheck_interval_secs == 0 {
            out.push((
                "delivery.healthcheck_interval_secs".into(),
                "must be at least 1".into(),
            ));
        }
        if d.max_attempts == 0 {
            out.push(("delivery.max_attempts".into(), "must be at least 1".into()));
        }
        if d.backoff_base_ms == 0 || d.backoff_max_ms < d.backoff_base_ms {
            out.push((
                "delivery.backoff_max_ms".into(),
                "backoff_base_ms must be at least 1 and at most backoff_max_ms".into(),
            ));
        }
        match self {
            Self::Mllp(c) => out.extend(c.problems()),
            Self::Webhook(c) => out.extend(c.problems()),
            Self::File(c) => out.extend(c.problems()),
            Self::Sftp(c) => out.extend(c.problems()),
            Self::Opsport(c) => out.extend(c.problems()),
            Self::Buktor(c) => out.extend(c.problems()),
            Self::Px360(c) => out.extend(c.problems()),
            Self::Latrexa(c) => out.extend(c.problems()),
            Self::Fhir(c) => out.extend(c.problems()),
            Self::Worklist(c) => out.extend(c.problems()),
            Self::Dicom(c) => out.extend(c.problems()),
        }
        out
    }

    /// Resolves secrets and builds the client.
    ///
    /// # Errors
    ///
    /// A sentence naming what is missing (a secret, a folder).
    pub fn build(&self) -> Result<Destination, String> {
        self.build_with(None)
    }

    /// [`DestinationConfig::build`] with the engine's DICOM state, which a worklist
    /// destination writes to.
    ///
    /// # Errors
    ///
    /// As [`DestinationConfig::build`]; a worklist destination without `dicom`.
    pub fn build_with(
        &self,
        dicom: Option<std::sync::Arc<dyn crate::dicom::worklist::DicomState>>,
    ) -> Result<Destination, String> {
        Ok(match self {
            Self::Worklist(c) => {
                Destination::Worklist(crate::dicom::worklist_dest::WorklistWriter::new(
                    c.clone(),
                    dicom.ok_or("a worklist destination needs the engine's store")?,
                ))
            }
            Self::Dicom(c) => {
                Destination::Dicom(crate::dicom::sender::DicomSender::build(c.clone())?)
            }
            Self::Mllp(c) => Destination::Mllp(mllp::sender::MllpSender::build(c.clone())?),
            Self::Webhook(c) => Destination::Webhook(webhook::sender::WebhookSender::new(c)?),
            Self::File(c) => Destination::File(file::FileWriter::new(c.clone())?),
            Self::Sftp(c) => Destination::Sftp(Box::new(sftp::SftpWriter::new(c)?)),
            Self::Opsport(c) => Destination::Opsport(clinic_api::opsport::OpsportClient::new(c)?),
            Self::Buktor(c) => Destination::Buktor(clinic_api::buktor::BuktorClient::new(c)?),
            Self::Px360(c) => Destination::Px360(clinic_api::px360::Px360Client::new(c)?),
            Self::Latrexa(c) => Destination::Latrexa(clinic_api::latrexa::LatrexaClient::new(c)?),
            Self::Fhir(c) => Destination::Fhir(fhir_rest::client::FhirClient::new(c)?),
        })
    }
}

/// A built destination client.
#[derive(Debug)]
pub enum Destination {
    /// See [`mllp::sender::MllpSender`].
    Mllp(mllp::sender::MllpSender),
    /// See [`webhook::sender::WebhookSender`].
    Webhook(webhook::sender::WebhookSender),
    /// See [`file::FileWriter`].
    File(file::FileWriter),
    /// See [`sftp::SftpWriter`] (boxed: it holds parsed keys).
    Sftp(Box<sftp::SftpWriter>),
    /// See [`clinic_api::opsport::OpsportClient`].
    Opsport(clinic_api::opsport::OpsportClient),
    /// See [`clinic_api::buktor::BuktorClient`].
    Buktor(clinic_api::buktor::BuktorClient),
    /// See [`clinic_api::px360::Px360Client`].
    Px360(clinic_api::px360::Px360Client),
    /// See [`clinic_api::latrexa::LatrexaClient`].
    Latrexa(clinic_api::latrexa::LatrexaClient),
    /// See [`fhir_rest::client::FhirClient`].
    Fhir(fhir_rest::client::FhirClient),
    /// See [`crate::dicom::worklist_dest::WorklistWriter`].
    Worklist(crate::dicom::worklist_dest::WorklistWriter),
    /// See [`crate::dicom::sender::DicomSender`].
    Dicom(crate::dicom::sender::DicomSender),
}

impl Destination {
    /// Delivers one payload and checks the answer.
    ///
    /// # Errors
    ///
    /// [`DeliveryError`], classified retryable or not.
    pub async fn deliver(&self, d: &Delivery) -> Result<Receipt, DeliveryError> {
        match self {
            Self::Mllp(s) => s.deliver(d).await,
            Self::Webhook(s) => s.deliver(d).await,
            Self::File(s) => s.deliver(d).await,
            Self::Sftp(s) => s.deliver(d).await,
            Self::Opsport(s) => s.deliver(d).await,
            Self::Buktor(s) => s.deliver(d).await,
            Self::Px360(s) => s.deliver(d).await,
            Self::Latrexa(s) => s.deliver(d).await,
            Self::Fhir(s) => s.deliver(d).await,
            Self::Worklist(s) => s.deliver(d).await,
            Self::Dicom(s) => s.deliver(d).await,
        }
    }

    /// Checks that the destination could take a delivery now, without sending one: MLLP
    /// and webhook connect to the peer (or GET the webhook's `health_url`), a file
    /// destination writes and removes a probe file in its folder.
    ///
    /// # Errors
    ///
    /// A sentence naming the endpoint and what failed (never payload content).
    pub async fn healthcheck(&self) -> Result<(), String> {
        match self {
            Self::Mllp(s) => s.healthcheck().await,
            Self::Webhook(s) => s.healthcheck().await,
            Self::File(s) => s.healthcheck().await,
            Self::Sftp(s) => s.healthcheck().await,
            Self::Opsport(s) => s.healthcheck().await,
            Self::Buktor(s) => s.healthcheck().await,
            Self::Px360(s) => s.healthcheck().await,
            Self::Latrexa(s) => s.healthcheck().await,
            Self::Fhir(s) => s.healthcheck().await,
            Self::Worklist(s) => s.healthcheck().await,
            Self::Dicom(s) => s.healthcheck().await,
        }
    }

    /// Checks the credentials with a request that changes nothing at the peer, where its
    /// vendor documents one: OpsPort a bulk upsert of no record, Latrexa the list of pending
    /// bookings, a FHIR server its token endpoint (OAuth2) and `GET [base]/metadata` with the
    /// token. Buktor and PX360 document none; MLLP, file, SFTP and webhook destinations have
    /// no such call (SFTP logs in, see `switchboard check`).
    pub async fn check_credentials(&self) -> CredentialCheck {
        match self {
            Self::Opsport(s) => s.check_credentials().await,
            Self::Latrexa(s) => s.check_credentials().await,
            Self::Fhir(s) => s.check_credentials().await,
            Self::Buktor(_) => CredentialCheck::NotChecked(
                "Buktor's HIS webhook contract has only POST /his/receive, which processes an \
                 event: no request checks the bearer token and signing secret without changing \
                 anything"
                    .into(),
            ),
            Self::Px360(s) => CredentialCheck::NotChecked(if s.has_api_key() {
                "PX360's contract has only POST /api/simulator/his-patient-data/, which stores \
                 patient data: no request checks the key without changing anything"
                    .into()
            } else {
                "PX360's contract takes no credentials".into()
            }),
            Self::Mllp(_) | Self::Webhook(_) | Self::File(_) | Self::Sftp(_) => {
                CredentialCheck::NotChecked("no credentials to check".into())
            }
            // DICOM has no credentials (the association names AE titles, which the C-ECHO of
            // the healthcheck already tried); a worklist lives in the engine's own store.
            Self::Dicom(_) | Self::Worklist(_) => {
                CredentialCheck::NotChecked("no credentials to check".into())
            }
        }
    }

    /// How the appointment ledger reads `body` (an appointment payload rendered for this
    /// destination); `None` for destinations whose appointments do not depend on history.
    pub fn ledger_view(&self, body: &[u8]) -> Option<LedgerView> {
        match self {
            Self::Opsport(s) => s.ledger_view(body),
            Self::Latrexa(s) => s.ledger_view(body),
            Self::Buktor(_) => clinic_api::buktor::ledger_view(body),
            Self::Fhir(_) => fhir_rest::client::ledger_view(body),
            Self::Mllp(_)
            | Self::Webhook(_)
            | Self::File(_)
            | Self::Sftp(_)
            | Self::Px360(_)
            | Self::Worklist(_)
            | Self::Dicom(_) => None,
        }
    }

    /// The delivery that closes the slot `previous` (the body last sent for an appointment)
    /// occupies, sent before the appointment's next body when that one names another slot:
    /// for OpsPort, which keys appointments by slot, `previous` again with the closed status.
    /// `None` for destinations that move an appointment by its id.
    pub fn close_slot(&self, previous: &[u8]) -> Option<Delivery> {
        match self {
            Self::Opsport(s) => s.close_slot(previous),
            Self::Mllp(_)
            | Self::Webhook(_)
            | Self::File(_)
            | Self::Sftp(_)
            | Self::Buktor(_)
            | Self::Px360(_)
            | Self::Latrexa(_)
            | Self::Fhir(_)
            | Self::Worklist(_)
            | Self::Dicom(_) => None,
        }
    }

    /// For a destination that pairs an appointment with its own id (Latrexa): `body` naming
    /// `remote_id` as that id, or `None` when the body names one already (or the destination
    /// pairs nothing).
    pub fn with_remote_id(&self, body: &[u8], remote_id: &str) -> Option<Vec<u8>> {
        match self {
            Self::Latrexa(s) => s.with_latrexa_id(body, remote_id),
            Self::Mllp(_)
            | Self::Webhook(_)
            | Self::File(_)
            | Self::Sftp(_)
            | Self::Opsport(_)
            | Self::Buktor(_)
            | Self::Px360(_)
            | Self::Fhir(_)
            | Self::Worklist(_)
            | Self::Dicom(_) => None,
        }
    }

    /// The Latrexa bookings channel whose online bookings this destination's appointments may
    /// be (`bookings_channel` of a Latrexa upload destination).
    pub fn bookings_channel(&self) -> Option<&str> {
        match self {
            Self::Latrexa(s) => s.bookings_channel(),
            Self::Mllp(_)
            | Self::Webhook(_)
            | Self::File(_)
            | Self::Sftp(_)
            | Self::Opsport(_)
            | Self::Buktor(_)
            | Self::Px360(_)
            | Self::Fhir(_)
            | Self::Worklist(_)
            | Self::Dicom(_) => None,
        }
    }

    /// The destination's own id of what it stored, when its answer gives one.
    pub fn remote_id(&self, receipt: &Receipt) -> Option<String> {
        match self {
            Self::Opsport(_) => clinic_api::opsport::remote_id(&receipt.detail),
            Self::Latrexa(_) => clinic_api::latrexa::remote_id(&receipt.detail),
            Self::Mllp(_)
            | Self::Webhook(_)
            | Self::File(_)
            | Self::Sftp(_)
            | Self::Buktor(_)
            | Self::Px360(_)
            | Self::Fhir(_)
            | Self::Worklist(_)
            | Self::Dicom(_) => None,
        }
    }

    /// `(size, linger_ms)` for a destination that takes several deliveries in one request
    /// (OpsPort in bulk mode, Latrexa's scheduled uploads) or writes them with one round of
    /// syncs (file); `None` for one at a time.
    pub fn batching(&self) -> Option<(usize, u64)> {
        match self {
            Self::Opsport(s) => s.bulk(),
            Self::Latrexa(s) => s.batching(),
            Self::File(s) => s.batching(),
            Self::Mllp(_)
            | Self::Webhook(_)
            | Self::Sftp(_)
            | Self::Buktor(_)
            | Self::Px360(_)
            | Self::Fhir(_)
            | Self::Worklist(_)
            | Self::Dicom(_) => None,
        }
    }

    /// Whether a batch may take every due item of a partition (in order) rather than only its
    /// head: Latrexa's scheduled upload, where the items are independent upserts keyed by the
    /// HIS appointment id, so several appointments of one patient go in one request; the file
    /// writer, whose batch renames its files in order and none after a failure. OpsPort bulk
    /// takes heads only: a reschedule reads the ledger entry the item before it writes.
    pub fn batches_whole_partitions(&self) -> bool {
        match self {
            Self::Latrexa(s) => s.batching().is_some(),
            Self::File(_) => true,
            Self::Mllp(_)
            | Self::Webhook(_)
            | Self::Sftp(_)
            | Self::Opsport(_)
            | Self::Buktor(_)
            | Self::Px360(_)
            | Self::Fhir(_)
            | Self::Worklist(_)
            | Self::Dicom(_) => false,
        }
    }

    /// Delivers several payloads of one kind (the same `path`) together and returns one
    /// outcome per delivery, in order. Destinations without batching deliver one by one.
    pub async fn deliver_batch(&self, ds: &[Delivery]) -> Vec<Result<Receipt, DeliveryError>> {
        match self {
            Self::Opsport(s) if s.bulk().is_some() => s.deliver_batch(ds).await,
            Self::Latrexa(s) if s.batching().is_some() && ds.len() > 1 => s.deliver_batch(ds).await,
            Self::File(s) => s.deliver_batch(ds).await,
            _ => {
                let mut out = Vec::with_capacity(ds.len());
                for d in ds {
                    out.push(self.deliver(d).await);
                }
                out
            }
        }
    }
}
