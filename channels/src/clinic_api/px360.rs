//! PX360 HIS patient-data endpoint (the vendor's HIS integration document): POST the HIS JSON
//! (`FetchPatientDataTimeStampList`, `FetchPatientDataTimeStampVisitDataList`, `Code`,
//! `Status`) to `/api/simulator/his-patient-data/`.
//!
//! The body is rendered at ingest from the patient, encounter and visit timeline
//! (`transforms::dest::px360`). A 400 is permanent and PX360's validation error
//! (`{"error":"Invalid HIS data format","details":{...}}`, field names and messages only)
//! becomes the dead-letter reason; 5xx and timeouts are retried.

use super::{default_timeout_secs, http_client, post, url_problems};
use crate::destination::{Delivery, DeliveryConfig, DeliveryError, Receipt};
use crate::secret::SecretRef;
use serde::Deserialize;
use transforms::dest::px360::{Px360Options, PATH};
use transforms::mapping::FieldMapping;

/// Configuration of a PX360 destination (`type = "px360"`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Px360Config {
    /// Name, unique within the channel.
    pub name: String,
    /// Base URL; `/api/simulator/his-patient-data/` is appended.
    pub base_url: String,
    /// Sent in `X-API-Key` when set (the contract's endpoint takes no credentials; a
    /// deployment behind a gateway may).
    #[serde(default)]
    pub api_key: Option<SecretRef>,
    /// Rendering options: canonical visit -> HIS visit type table, visit type -> journey
    /// stage table, hospital id and name (`[destination.options]`).
    #[serde(default)]
    pub options: Px360Options,
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

impl Px360Config {
    /// Secrets with their keys, for `check`.
    pub fn secrets(&self) -> Vec<(&'static str, &SecretRef)> {
        self.api_key.iter().map(|s| ("api_key", s)).collect()
    }

    /// Problems the loader cannot see.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = url_problems(&self.base_url);
        out.extend(
            self.options
                .validate()
                .into_iter()
                .map(|p| (format!("options.{}", p.key), p.message)),
        );
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

/// The PX360 client.
pub struct Px360Client {
    config: Px360Config,
    client: reqwest::Client,
    api_key: Option<String>,
}

// By hand, so that a `{:?}` never prints the resolved credentials.
impl std::fmt::Debug for Px360Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Px360Client")
            .field("name", &self.config.name)
            .field("base_url", &self.config.base_url)
            .finish_non_exhaustive()
    }
}

impl Px360Client {
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
    pub fn new(config: &Px360Config) -> Result<Self, String> {
        Ok(Px360Client {
            api_key: config
                .api_key
                .as_ref()
                .map(SecretRef::resolve)
                .transpose()?,
            client: http_client(config.timeout_secs)?,
            config: config.clone(),
        })
    }

    /// Whether an `X-API-Key` is configured.
    pub fn has_api_key(&self) -> bool {
        self.api_key.is_some()
    }

    /// POSTs one patient-data body.
    ///
    /// # Errors
    ///
    /// [`DeliveryError`] as described in the module documentation.
    pub async fn deliver(&self, d: &Delivery) -> Result<Receipt, DeliveryError> {
        let url = super::url_of(&self.config.base_url, d, PATH);
        let headers: Vec<(&str, &str)> = self
            .api_key
            .as_deref()
            .map(|k| ("X-API-Key", k))
            .into_iter()
            .collect();
        post(&self.client, "PX360", &url, d, &headers, success_body)
            .await
            .map(|(r, _)| r)
    }
}

/// Reads a 2xx answer of PX360: the seed's success body carries `"success": true`; an answer in
/// the HIS format carries `Code` (200 is success) and `Status`. `"success": false`, another
/// `Code`, an `error` body or a body with neither is an error with PX360's message.
///
/// # Errors
///
/// PX360's `message` or `error` (with `details`), or the first bytes of the body.
pub fn success_body(body: &str) -> Result<(), String> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return Err(super::reason_of(body));
    };
    if let Some(ok) = v.get("success").and_then(serde_json::Value::as_bool) {
        return if ok {
            Ok(())
        } else {
            Err(super::reason_of(body))
        };
    }
    if let Some(code) = v.get("Code") {
        let code = code
            .as_u64()
            .or_else(|| code.as_str().and_then(|c| c.trim().parse().ok()));
        let status_ok = v
            .get("Status")
            .and_then(|s| s.as_str())
            .is_none_or(|s| s.eq_ignore_ascii_case("success"));
        return match code {
            Some(200) if status_ok => Ok(()),
            _ => {
                let status = v.get("Status").and_then(|s| s.as_str()).unwrap_or("");
                let why = super::reason_of(body);
                Err(format!("Code {} {status}: {why}", v["Code"]))
            }
        };
    }
    Err(super::reason_of(body))
}

#[cfg(test)]
mod tests {
    use super::success_body;

    #[test]
    fn success_and_code_are_read() {
        assert_eq!(
            success_body(r#"{"success": true, "message": "Patient data processed successfully."}"#),
            Ok(())
        );
        assert_eq!(
            success_body(r#"{"Code": 200, "Status": "Success"}"#),
            Ok(())
        );
        assert_eq!(
            success_body(r#"{"success": false, "message": "Hospital not found"}"#),
            Err("Hospital not found".into())
        );
        let e = success_body(r#"{"Code": 500, "Status": "Failed", "message": "HIS busy"}"#)
            .expect_err("Code 500");
        assert!(e.contains("500") && e.contains("HIS busy"), "{e}");
        assert!(success_body(r#"{"error": "Invalid HIS data format"}"#).is_err());
        assert!(success_body("").is_err());
    }
}
