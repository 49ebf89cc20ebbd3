//! OpsPort healthcare integration API (the vendor's integration API document): `X-API-Key` on
//! every POST to `/api/healthcare/{clinic,doctor,patient,appointment}` (one JSON object) or the
//! plural forms (a JSON array).
//!
//! Routing renders one outbox item per upsert, clinic and doctor before the appointment that
//! names them, in the patient's partition, so they reach OpsPort first. With `bulk` set, the
//! delivery worker hands this client several queued items of one kind at once
//! ([`OpsportClient::deliver_batch`]): they go as one array to the plural path, and OpsPort's
//! per-item `results` decide each item's fate, so a partial failure delivers the good items
//! and dead-letters the bad ones with their own reason: none lost, none sent twice.

use super::{default_timeout_secs, http_client, post, url_problems};
use crate::destination::{Delivery, DeliveryConfig, DeliveryError, LedgerView, Receipt};
use crate::secret::SecretRef;
use serde::Deserialize;
use transforms::dest::opsport::{self, OpsportAppointment, OpsportOptions};

/// The canonical statuses whose OpsPort status leaves a slot closed.
const CLOSING_STATUSES: [&str; 3] = ["cancelled", "entered_in_error", "no_show"];
use transforms::mapping::FieldMapping;

/// Configuration of an OpsPort destination (`type = "opsport"`).
///
/// ```toml
/// [[destination]]
/// name = "opsport"
/// type = "opsport"
/// base_url = "https://opsport.example.com"
/// api_key = { env = "OPSPORT_API_KEY" }
/// bulk = { size = 50, linger_ms = 200 }
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OpsportConfig {
    /// Name, unique within the channel.
    pub name: String,
    /// Base URL of the API; paths such as `/api/healthcare/patient` are appended.
    pub base_url: String,
    /// The key sent in `X-API-Key`.
    pub api_key: SecretRef,
    /// Rendering options: status table, whether appointments upsert their clinic and doctor
    /// first, field mapping per kind (`[destination.options]`).
    #[serde(default)]
    pub options: OpsportOptions,
    /// Field mapping applied to every rendered body after the built-in rendering and the
    /// per-kind mapping of `options` (`[destination.mapping]`).
    #[serde(default)]
    pub mapping: FieldMapping,
    /// Bulk mode: queued items of one kind go together to the plural endpoint. Off by default.
    #[serde(default)]
    pub bulk: Option<BulkConfig>,
    /// Seconds to wait for the answer.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Scheduling and retries.
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

/// `bulk = { size = N, linger_ms = M }`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BulkConfig {
    /// Most items in one bulk request.
    #[serde(default = "default_bulk_size")]
    pub size: usize,
    /// How long a ready item waits for others of its kind before a smaller batch is sent, in
    /// milliseconds.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
}

fn default_bulk_size() -> usize {
    50
}
fn default_linger_ms() -> u64 {
    200
}

impl OpsportConfig {
    /// Secrets with their keys, for `check`.
    pub fn secrets(&self) -> Vec<(&'static str, &SecretRef)> {
        vec![("api_key", &self.api_key)]
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
        if let Some(b) = &self.bulk {
            if b.size < 1 || b.size > 1000 {
                out.push(("bulk.size".into(), "must be between 1 and 1000".into()));
            }
            if b.linger_ms > 60_000 {
                out.push(("bulk.linger_ms".into(), "must be at most 60000".into()));
            }
        }
        if self.timeout_secs == 0 {
            out.push(("timeout_secs".into(), "must be at least 1".into()));
        }
        out
    }
}

/// The OpsPort client.
pub struct OpsportClient {
    config: OpsportConfig,
    client: reqwest::Client,
    api_key: String,
}

// By hand, so that a `{:?}` never prints the resolved credentials.
impl std::fmt::Debug for OpsportClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsportClient")
            .field("name", &self.config.name)
            .field("base_url", &self.config.base_url)
            .finish_non_exhaustive()
    }
}

impl OpsportClient {
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
    pub fn new(config: &OpsportConfig) -> Result<Self, String> {
        Ok(OpsportClient {
            api_key: config.api_key.resolve()?,
            client: http_client(config.timeout_secs)?,
            config: config.clone(),
        })
    }

    /// Checks `X-API-Key` with a bulk upsert of no record (`POST /api/healthcare/clinics`
    /// with `[]`): OpsPort documents no read-only call, and an empty bulk import stores
    /// nothing.
    pub async fn check_credentials(&self) -> crate::destination::CredentialCheck {
        let url = format!(
            "{}/api/healthcare/clinics",
            self.config.base_url.trim_end_matches('/')
        );
        let sent = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-API-Key", &self.api_key)
            .body("[]")
            .send()
            .await;
        super::credential_answer(
            "POST /api/healthcare/clinics [] (an upsert of no record)",
            sent,
        )
        .await
    }

    /// How the appointment ledger reads an appointment upsert: its slot (patient reference,
    /// day, start time: OpsPort's appointment key) and status. `None` for another body.
    pub fn ledger_view(&self, body: &[u8]) -> Option<LedgerView> {
        let a: OpsportAppointment = serde_json::from_slice(body).ok()?;
        let opts = &self.config.options;
        let closed = CLOSING_STATUSES
            .iter()
            .any(|k| opts.statuses.get(*k) == Some(&a.status));
        Some(LedgerView {
            slot: opsport::slot_key(&a),
            status: a.status,
            closed,
        })
    }

    /// The upsert that closes the slot of `previous` (an appointment upsert sent before): the
    /// same patient, day and start time with the status of `cancelled`. `None` when `previous`
    /// is not an appointment or the status table has no `cancelled`.
    pub fn close_slot(&self, previous: &[u8]) -> Option<Delivery> {
        let mut body: serde_json::Value = serde_json::from_slice(previous).ok()?;
        let a: OpsportAppointment = serde_json::from_value(body.clone()).ok()?;
        let closed = self.config.options.closed_status().ok()?;
        body["status"] = serde_json::Value::String(closed.to_owned());
        Some(Delivery {
            body: serde_json::to_vec(&body).ok()?.into(),
            content_type: "application/json".into(),
            idempotency_key: transforms::model::stable_id(&[
                "opsport-close",
                &opsport::slot_key(&a),
            ]),
            control_id: None,
            path: Some(opsport::single_path("appointment")),
        })
    }

    /// `(size, linger_ms)` when bulk mode is on.
    pub fn bulk(&self) -> Option<(usize, u64)> {
        self.config.bulk.map(|b| (b.size.max(1), b.linger_ms))
    }

    /// POSTs one upsert.
    ///
    /// # Errors
    ///
    /// [`DeliveryError`]: 401 (wrong key), 400 and 404 (unknown reference) are permanent.
    pub async fn deliver(&self, d: &Delivery) -> Result<Receipt, DeliveryError> {
        let url = super::url_of(&self.config.base_url, d, "/api/healthcare/patient");
        post(
            &self.client,
            "OpsPort",
            &url,
            d,
            &[("X-API-Key", &self.api_key)],
            success_body,
        )
        .await
        .map(|(r, _)| r)
    }

    /// POSTs items of one kind (the same single path) as one bulk array and returns one
    /// outcome per item, in order. A whole-request failure (transport, 401, 5xx) is every
    /// item's outcome; OpsPort's per-item `results` decide the rest.
    pub async fn deliver_batch(&self, items: &[Delivery]) -> Vec<Result<Receipt, DeliveryError>> {
        if items.len() == 1 {
            return vec![self.deliver(&items[0]).await];
        }
        let single = items[0]
            .path
            .as_deref()
            .unwrap_or("/api/healthcare/patient");
        let plural = format!("{single}s");
        let mut bodies = Vec::with_capacity(items.len());
        for d in items {
            match serde_json::from_slice::<serde_json::Value>(&d.body) {
                Ok(v) => bodies.push(v),
                Err(e) => {
                    // Rendered by us as JSON: cannot happen; never send a partial batch.
                    let err = DeliveryError::permanent(format!(
                        "OpsPort bulk: stored body is not JSON: {e}"
                    ));
                    return items.iter().map(|_| Err(err.clone())).collect();
                }
            }
        }
        let body = serde_json::to_vec(&serde_json::Value::Array(bodies)).unwrap_or_default();
        let batch = Delivery {
            body: body.into(),
            content_type: "application/json".into(),
            idempotency_key: items[0].idempotency_key.clone(),
            control_id: None,
            path: Some(plural.clone()),
        };
        let url = super::url_of(&self.config.base_url, &batch, &plural);
        let answer = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-API-Key", &self.api_key)
            .body(batch.body.clone())
            .send()
            .await;
        let (status, text) = match answer {
            Ok(r) => {
                let s = r.status().as_u16();
                (s, r.text().await.unwrap_or_default())
            }
            Err(e) => {
                let err = super::transport_error("OpsPort", &plural, &e);
                return items.iter().map(|_| Err(err.clone())).collect();
            }
        };
        let parsed: Option<serde_json::Value> = serde_json::from_str(&text).ok();
        let results = parsed
            .as_ref()
            .and_then(|v| v.get("results"))
            .and_then(|r| r.as_array());
        match results {
            Some(results) if status == 200 || status == 400 => items
                .iter()
                .enumerate()
                .map(|(i, _)| {
                    let r = results
                        .iter()
                        .find(|r| r.get("index").and_then(|x| x.as_u64()) == Some(i as u64));
                    match r {
                        Some(r) if r.get("error").is_none() => Ok(Receipt {
                            status: Some(status),
                            detail: format!(
                                "bulk {plural} item {i}: {}",
                                r.get("action").and_then(|a| a.as_str()).unwrap_or("stored")
                            ),
                            answer: crate::destination::bounded_answer(&text),
                        }),
                        Some(r) => Err(DeliveryError {
                            retryable: false,
                            retry_after: None,
                            status: Some(status),
                            reason: format!(
                                "OpsPort {plural} item {i}: {}",
                                r.get("error").and_then(|e| e.as_str()).unwrap_or("failed")
                            ),
                            answer: crate::destination::bounded_answer(&text),
                        }),
                        // Not reported: OpsPort did not take it; the upsert is safe to resend.
                        None => Err(DeliveryError::retry(format!(
                            "OpsPort {plural}: no result for item {i}"
                        ))),
                    }
                })
                .collect(),
            _ if (200..300).contains(&status) => items
                .iter()
                .map(|_| {
                    success_body(&text).map_err(|reason| {
                        DeliveryError::permanent(format!(
                            "OpsPort {plural} answered {status} with an error: {reason}"
                        ))
                        .with_answer(&text)
                    })?;
                    Ok(Receipt {
                        status: Some(status),
                        detail: format!(
                            "bulk {plural}: {}",
                            text.chars().take(200).collect::<String>()
                        ),
                        answer: crate::destination::bounded_answer(&text),
                    })
                })
                .collect(),
            _ => {
                let retryable = matches!(status, 408 | 425 | 429) || status >= 500;
                let err = DeliveryError {
                    retryable,
                    retry_after: None,
                    status: Some(status),
                    reason: format!(
                        "OpsPort {plural} answered {status}: {}",
                        super::reason_of(&text)
                    ),
                    answer: crate::destination::bounded_answer(&text),
                };
                items.iter().map(|_| Err(err.clone())).collect()
            }
        }
    }
}

/// OpsPort's id of the record an upsert answer names (`{"id": N}`), when it gives one.
pub fn remote_id(answer: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(answer).ok()?;
    match v.get("id")? {
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// Reads a 2xx answer of OpsPort. The seed documents no answer body (its samples check the
/// status code only), so any 2xx is success unless its JSON says `"success": false`, which is
/// then an error with OpsPort's message (see `docs/ASSUMPTIONS.md`).
///
/// # Errors
///
/// OpsPort's `message`, or the first bytes of the body.
pub fn success_body(body: &str) -> Result<(), String> {
    let said = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("success").and_then(serde_json::Value::as_bool));
    match said {
        Some(false) => Err(super::reason_of(body)),
        Some(true) | None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::success_body;

    #[test]
    fn success_false_is_an_error_with_the_message() {
        assert_eq!(
            success_body(r#"{"success":true,"action":"created","id":1}"#),
            Ok(())
        );
        assert_eq!(success_body(""), Ok(()));
        assert_eq!(
            success_body(r#"{"success":false,"message":"Unknown clinicCode 'X'."}"#),
            Err("Unknown clinicCode 'X'.".into())
        );
    }
}
