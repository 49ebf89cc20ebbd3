//! Latrexa integration API, HIS -> Latrexa (`seeds/latrexa-sync-agent.txt`): walk-in and desk
//! appointments made in the HIS (SIU from the HIS) are POSTed to
//! `/api/integration/appointments/upload` with `Authorization: Bearer <api key>` and
//! `X-Organization-Code`. Uploads are keyed by the HIS appointment id on Latrexa's side, so a
//! retry or a resend updates instead of duplicating.
//!
//! The online bookings (Latrexa -> HIS) are another connector; this one only uploads.

use super::{default_timeout_secs, http_client, post, url_problems};
use crate::destination::{Delivery, DeliveryConfig, DeliveryError, Receipt};
use crate::secret::SecretRef;
use serde::Deserialize;
use transforms::dest::latrexa::UPLOAD_PATH;
use transforms::mapping::FieldMapping;

/// Configuration of a Latrexa upload destination (`type = "latrexa"`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LatrexaConfig {
    /// Name, unique within the channel.
    pub name: String,
    /// Base URL; `/api/integration/appointments/upload` is appended.
    pub base_url: String,
    /// The integration API key, sent as `Authorization: Bearer`.
    pub api_key: SecretRef,
    /// The organization code (clinic subdomain), sent as `X-Organization-Code`.
    pub organization_code: String,
    /// Field mapping applied after the built-in rendering (`[destination.mapping]`).
    #[serde(default)]
    pub mapping: FieldMapping,
    /// Seconds to wait for the answer.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Scheduling and retries.
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

impl LatrexaConfig {
    /// Secrets with their keys, for `check`.
    pub fn secrets(&self) -> Vec<(&'static str, &SecretRef)> {
        vec![("api_key", &self.api_key)]
    }

    /// Problems the loader cannot see.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = url_problems(&self.base_url);
        if self.organization_code.trim().is_empty() {
            out.push(("organization_code".into(), "must not be empty".into()));
        }
        out.extend(
            self.mapping
                .validate_at("mapping")
                .into_iter()
                .map(|p| (p.key, p.message)),
        );
        if self.timeout_secs == 0 {
            out.push(("timeout_secs".into(), "must be at least 1".into()));
        }
        out
    }
}

/// The Latrexa upload client.
pub struct LatrexaClient {
    config: LatrexaConfig,
    client: reqwest::Client,
    bearer: String,
}

// By hand, so that a `{:?}` never prints the resolved credentials.
impl std::fmt::Debug for LatrexaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatrexaClient")
            .field("name", &self.config.name)
            .field("base_url", &self.config.base_url)
            .finish_non_exhaustive()
    }
}

impl LatrexaClient {
    /// Tells whether the API's host accepts connections now (see [`super::reachable`]).
    ///
    /// # Errors
    ///
    /// The host and why it could not be reached.
    pub async fn healthcheck(&self) -> Result<(), String> {
        super::reachable(&self.config.base_url).await
    }

    /// Resolves the key and builds the HTTP client.
    ///
    /// # Errors
    ///
    /// A sentence naming a secret that cannot be read.
    pub fn new(config: &LatrexaConfig) -> Result<Self, String> {
        Ok(LatrexaClient {
            bearer: format!("Bearer {}", config.api_key.resolve()?),
            client: http_client(config.timeout_secs)?,
            config: config.clone(),
        })
    }

    /// POSTs one upload.
    ///
    /// # Errors
    ///
    /// [`DeliveryError`]: 401 (key or organization code) and 400 are permanent.
    pub async fn deliver(&self, d: &Delivery) -> Result<Receipt, DeliveryError> {
        let url = super::url_of(&self.config.base_url, d, UPLOAD_PATH);
        post(
            &self.client,
            "Latrexa",
            &url,
            d,
            &[
                ("Authorization", &self.bearer),
                ("X-Organization-Code", &self.config.organization_code),
            ],
        )
        .await
        .map(|(r, _)| r)
    }
}
