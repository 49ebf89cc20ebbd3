//! Buktor HIS webhook (the vendor's HIS webhook document): POST `/his/receive` with
//! `Authorization: Bearer <token>` and `Buktor-Signature`, the lowercase hex HMAC-SHA256 of the
//! exact body bytes under the shared secret.
//!
//! The envelope and its deterministic `event_id` are rendered at ingest
//! (`transforms::dest::buktor`), so a resent HL7 message gives the same `event_id` and Buktor
//! drops the duplicate. Answers: 2xx delivered; 401/403 (token, signature), 400 (body) and 422
//! ("No mapping found ...") are permanent, with Buktor's message as the reason; 5xx and
//! timeouts are retried with backoff.
//!
//! With `mapping_file` and `client_id`, the client's `his-json-mapping.json` is checked before
//! sending: an event type the client has no mapping for is dead-lettered with Buktor's own
//! "No mapping found" sentence without a request.

use super::{default_timeout_secs, http_client, post, url_problems};
use crate::destination::{Delivery, DeliveryConfig, DeliveryError, LedgerView, Receipt};
use crate::secret::SecretRef;
use crate::webhook::sender::sign;
use serde::Deserialize;
use std::path::PathBuf;
use transforms::dest::buktor::{BuktorEvent, BuktorMappingFile, BuktorOptions, PATH};
use transforms::mapping::FieldMapping;

/// Configuration of a Buktor destination (`type = "buktor"`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BuktorConfig {
    /// Name, unique within the channel.
    pub name: String,
    /// Base URL; `/his/receive` is appended.
    pub base_url: String,
    /// The access token sent as `Authorization: Bearer`.
    pub bearer_token: SecretRef,
    /// The shared secret of the `Buktor-Signature` HMAC.
    pub signing_secret: SecretRef,
    /// Rendering options: status table, `emit_locations`, envelope mapping
    /// (`[destination.options]`).
    #[serde(default)]
    pub options: BuktorOptions,
    /// Field mapping applied to every envelope after the built-in rendering
    /// (`[destination.mapping]`, paths like `data.his_status`).
    #[serde(default)]
    pub mapping: FieldMapping,
    /// The client's `his-json-mapping.json` (relative to the working directory), checked by
    /// `switchboard check` and before each send. Needs `client_id`.
    #[serde(default)]
    pub mapping_file: Option<PathBuf>,
    /// The Buktor Client-ID the token belongs to, to look up in `mapping_file`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Seconds to wait for the answer.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Scheduling and retries.
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

impl BuktorConfig {
    /// Secrets with their keys, for `check`.
    pub fn secrets(&self) -> Vec<(&'static str, &SecretRef)> {
        vec![
            ("bearer_token", &self.bearer_token),
            ("signing_secret", &self.signing_secret),
        ]
    }

    /// Reads and parses `mapping_file`.
    ///
    /// # Errors
    ///
    /// A sentence naming the file and what is wrong with it.
    pub fn load_mapping_file(&self) -> Result<Option<BuktorMappingFile>, String> {
        let Some(path) = &self.mapping_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{} is not a Buktor mapping file: {e}", path.display()))
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
        match self.load_mapping_file() {
            Ok(Some(file)) => {
                out.extend(
                    file.validate()
                        .into_iter()
                        .map(|p| (format!("mapping_file: {}", p.key), p.message)),
                );
                match &self.client_id {
                    None => out.push((
                        "client_id".into(),
                        "mapping_file needs the client_id to look up".into(),
                    )),
                    Some(c) if !file.clients.contains_key(c) => out.push((
                        "client_id".into(),
                        format!("client '{c}' is not in the mapping file"),
                    )),
                    Some(_) => {}
                }
            }
            Ok(None) => {}
            Err(m) => out.push(("mapping_file".into(), m)),
        }
        if self.timeout_secs == 0 {
            out.push(("timeout_secs".into(), "must be at least 1".into()));
        }
        out
    }
}

/// The Buktor client.
pub struct BuktorClient {
    config: BuktorConfig,
    client: reqwest::Client,
    bearer: String,
    secret: String,
    mapping: Option<BuktorMappingFile>,
}

// By hand, so that a `{:?}` never prints the resolved credentials.
impl std::fmt::Debug for BuktorClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuktorClient")
            .field("name", &self.config.name)
            .field("base_url", &self.config.base_url)
            .finish_non_exhaustive()
    }
}

impl BuktorClient {
    /// Tells whether the API's host accepts connections now (see [`super::reachable`]).
    ///
    /// # Errors
    ///
    /// The host and why it could not be reached.
    pub async fn healthcheck(&self) -> Result<(), String> {
        super::reachable(&self.config.base_url).await
    }

    /// Resolves the secrets, reads the mapping file and builds the HTTP client.
    ///
    /// # Errors
    ///
    /// A sentence naming a secret or file that cannot be read.
    pub fn new(config: &BuktorConfig) -> Result<Self, String> {
        Ok(BuktorClient {
            bearer: config.bearer_token.resolve()?,
            secret: config.signing_secret.resolve()?,
            mapping: config.load_mapping_file()?,
            client: http_client(config.timeout_secs)?,
            config: config.clone(),
        })
    }

    /// Signs and POSTs one envelope.
    ///
    /// # Errors
    ///
    /// [`DeliveryError`] as described in the module documentation.
    pub async fn deliver(&self, d: &Delivery) -> Result<Receipt, DeliveryError> {
        if let (Some(file), Some(client)) = (&self.mapping, &self.config.client_id) {
            if let Ok(event) = serde_json::from_slice::<BuktorEvent>(&d.body) {
                if let Err(e) = file.apply(client, &event) {
                    return Err(DeliveryError::permanent(format!(
                        "Buktor mapping file: No mapping found for event_type '{}' and Client-ID {}.",
                        e.event_type, e.client_id
                    )));
                }
            }
        }
        let url = super::url_of(&self.config.base_url, d, PATH);
        let signature = sign(self.secret.as_bytes(), &d.body);
        let auth = format!("Bearer {}", self.bearer);
        post(
            &self.client,
            "Buktor",
            &url,
            d,
            &[("Authorization", &auth), ("Buktor-Signature", &signature)],
            success_body,
        )
        .await
        .map(|(r, _)| r)
    }
}

/// How the appointment ledger reads an `appointment.*` envelope: no slot (Buktor keys an
/// appointment by `his_appointment_id`), the `his_status` sent, closed for
/// `appointment.deleted` or a cancelled or no-show status. `None` for other events.
pub fn ledger_view(body: &[u8]) -> Option<LedgerView> {
    let event: BuktorEvent = serde_json::from_slice(body).ok()?;
    if !event.event_type.starts_with("appointment.") {
        return None;
    }
    let status = event
        .data
        .get("his_status")
        .and_then(|s| s.as_str())
        .unwrap_or_default()
        .to_owned();
    let closed = event.event_type == "appointment.deleted"
        || ["cancelled", "canceled", "no_show", "noshow", "no-show"]
            .contains(&status.to_ascii_lowercase().as_str());
    Some(LedgerView {
        slot: String::new(),
        status,
        closed,
    })
}

/// Reads a 2xx answer of Buktor: the seed's success body `{"status":"success",...}` is
/// success; its error body `{"status":"error","message":...}` (which Buktor also sends with
/// 200), another status or a body that is not JSON is an error with Buktor's message.
///
/// # Errors
///
/// Buktor's `message`, or the first bytes of the body.
pub fn success_body(body: &str) -> Result<(), String> {
    let status = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(str::to_owned));
    match status {
        Some(s) if s.eq_ignore_ascii_case("success") => Ok(()),
        _ => Err(super::reason_of(body)),
    }
}

#[cfg(test)]
mod tests {
    use super::{ledger_view, success_body};

    #[test]
    fn appointment_envelopes_are_read_for_the_ledger() {
        let booked = br#"{"event_id":"e1","timestamp":"t","type":"appointment.created","operation":"created","data":{"his_appointment_id":"A1","his_status":"confirmed"}}"#;
        let v = ledger_view(booked).expect("an appointment");
        assert_eq!((v.status.as_str(), v.closed), ("confirmed", false));
        let deleted = br#"{"event_id":"e2","timestamp":"t","type":"appointment.deleted","operation":"deleted","data":{"his_appointment_id":"A1"}}"#;
        assert!(ledger_view(deleted).expect("an appointment").closed);
        let payment = br#"{"event_id":"e3","timestamp":"t","type":"payment.successful","operation":"successful","data":{}}"#;
        assert_eq!(ledger_view(payment), None);
    }

    #[test]
    fn only_the_success_status_is_success() {
        assert_eq!(
            success_body(
                r#"{"status":"success","message":"Data received and processed successfully."}"#
            ),
            Ok(())
        );
        assert_eq!(
            success_body(
                r#"{"status":"error","message":"No mapping found for event_type 'appointment.created' and Client-ID 1001."}"#
            ),
            Err("No mapping found for event_type 'appointment.created' and Client-ID 1001.".into())
        );
        assert!(success_body("OK").is_err());
        assert!(success_body("{}").is_err());
    }
}
