//! The outbound side: what a destination is configured with, what it is asked to deliver,
//! and how a failure is classified. One enum variant per kind; `build` returns a client.

use crate::secret::SecretRef;
use crate::{fhir_rest, file, mllp, webhook};
use bytes::Bytes;
use serde::Deserialize;
use std::time::Duration;

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
}

impl DeliveryError {
    /// A failure worth retrying.
    pub fn retry(reason: impl Into<String>) -> Self {
        DeliveryError {
            retryable: true,
            retry_after: None,
            status: None,
            reason: reason.into(),
        }
    }

    /// A failure that retrying cannot fix: dead letter at once.
    pub fn permanent(reason: impl Into<String>) -> Self {
        DeliveryError {
            retryable: false,
            retry_after: None,
            status: None,
            reason: reason.into(),
        }
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
    /// Partition key: `patient` (default, the patient identifier: FIFO per patient) or `none`
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
        }
    }
}

/// A destination, chosen by `type` in a channel's `[[destination]]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DestinationConfig {
    /// `type = "mllp"`: an HL7 v2 peer over MLLP/TCP.
    Mllp(mllp::sender::SenderConfig),
    /// `type = "webhook"`: HTTP POST of JSON, optionally signed.
    Webhook(webhook::sender::WebhookConfig),
    /// `type = "file"`: one file per delivery in a local folder.
    File(file::FileConfig),
    /// `type = "fhir"`: a FHIR R4 server (transaction Bundle or conditional updates).
    Fhir(fhir_rest::client::FhirConfig),
}

impl DestinationConfig {
    /// The destination's name (unique within its channel).
    pub fn name(&self) -> &str {
        match self {
            Self::Mllp(c) => &c.name,
            Self::Webhook(c) => &c.name,
            Self::File(c) => &c.name,
            Self::Fhir(c) => &c.name,
        }
    }

    /// Its scheduling settings.
    pub fn delivery(&self) -> &DeliveryConfig {
        match self {
            Self::Mllp(c) => &c.delivery,
            Self::Webhook(c) => &c.delivery,
            Self::File(c) => &c.delivery,
            Self::Fhir(c) => &c.delivery,
        }
    }

    /// The payload this kind sends unless a route says otherwise: `hl7` or `canonical`.
    pub fn default_payload(&self) -> &'static str {
        match self {
            Self::Mllp(_) => "hl7",
            Self::Webhook(_) => "canonical",
            Self::File(_) => "hl7",
            Self::Fhir(_) => "fhir",
        }
    }

    /// Every secret this destination references, with its key, for `check`.
    pub fn secrets(&self) -> Vec<(&'static str, &SecretRef)> {
        match self {
            Self::Mllp(_) | Self::File(_) => vec![],
            Self::Webhook(c) => c.secrets(),
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
            Self::Fhir(c) => out.extend(c.problems()),
        }
        out
    }

    /// Resolves secrets and builds the client.
    ///
    /// # Errors
    ///
    /// A sentence naming what is missing (a secret, a folder).
    pub fn build(&self) -> Result<Destination, String> {
        Ok(match self {
            Self::Mllp(c) => Destination::Mllp(mllp::sender::MllpSender::build(c.clone())?),
            Self::Webhook(c) => Destination::Webhook(webhook::sender::WebhookSender::new(c)?),
            Self::File(c) => Destination::File(file::FileWriter::new(c.clone())?),
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
    /// See [`fhir_rest::client::FhirClient`].
    Fhir(fhir_rest::client::FhirClient),
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
            Self::Fhir(s) => s.deliver(d).await,
        }
    }
}
