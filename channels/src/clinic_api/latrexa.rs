//! Latrexa integration API, HIS -> Latrexa (the vendor's sync agent document): walk-in and desk
//! appointments made in the HIS (SIU from the HIS) are POSTed to
//! `/api/integration/appointments/upload` with `Authorization: Bearer <api key>` and
//! `X-Organization-Code`. Uploads are keyed by the HIS appointment id on Latrexa's side, so a
//! retry or a resend updates instead of duplicating.
//!
//! The seed uploads HIS appointments "on a schedule": with `upload_interval_secs` set, the
//! delivery worker holds ready uploads for up to that long (every due upload, several of one
//! patient included, in their order) and hands them to
//! [`LatrexaClient::deliver_batch`], which sends them as one request (at most
//! [`UPLOAD_BATCH_SIZE`] appointments) and gives each item the Latrexa id of its pair in the
//! answer's `mappings`; the delivery worker writes that id to the appointment ledger. Without
//! it, each upload goes at once.
//!
//! The online bookings (Latrexa -> HIS) are another connector; this one only uploads.

use super::{default_timeout_secs, http_client, post, url_problems};
use crate::destination::{Delivery, DeliveryConfig, DeliveryError, LedgerView, Receipt};
use crate::http_answer::Answer;
use crate::secret::SecretRef;
use serde::Deserialize;
use transforms::dest::latrexa::{UploadRequest, UploadResponse, UPLOAD_PATH};

/// Most appointments in one scheduled upload.
pub const UPLOAD_BATCH_SIZE: usize = 100;
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
    /// The `type = "latrexa"` channel (online bookings -> HIS) of the same Latrexa
    /// organization. An HIS appointment whose placer id (SCH-1) is a booking that channel took
    /// is that online booking written by the HIS: it is uploaded with its `latrexaId`, so
    /// Latrexa updates the booking instead of creating a second appointment.
    #[serde(default)]
    pub bookings_channel: Option<String>,
    /// Also upload walk-ins the HIS reports only as a registration (ADT^A04) of an outpatient
    /// or emergency visit: the visit number as the HIS appointment id, the admit time as the
    /// start, status `arrived`. Off by default.
    #[serde(default)]
    pub walk_in_registrations: bool,
    /// Upload on a schedule: appointments ready within this many seconds go together in one
    /// upload request (at most 100). 0 (the default) uploads each one at once.
    #[serde(default)]
    pub upload_interval_secs: u64,
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
        if self.upload_interval_secs > 86_400 {
            out.push((
                "upload_interval_secs".into(),
                "must be at most 86400 (a day)".into(),
            ));
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

    /// Checks the API key and organization code with `GET /api/integration/appointments/
    /// pending`, which lists bookings and changes nothing (they stay pending).
    pub async fn check_credentials(&self) -> crate::destination::CredentialCheck {
        let url = format!(
            "{}/api/integration/appointments/pending",
            self.config.base_url.trim_end_matches('/')
        );
        let sent = self
            .client
            .get(&url)
            .header("Authorization", &self.bearer)
            .header("X-Organization-Code", &self.config.organization_code)
            .send()
            .await;
        super::credential_answer("GET /api/integration/appointments/pending", sent).await
    }

    /// The bookings channel whose online bookings an HIS appointment may be (see the config).
    pub fn bookings_channel(&self) -> Option<&str> {
        self.config.bookings_channel.as_deref()
    }

    /// `body` (an upload of one appointment) with `latrexaId` set to `latrexa_id`, or `None`
    /// when it already names one or is not an upload of one appointment.
    pub fn with_latrexa_id(&self, body: &[u8], latrexa_id: &str) -> Option<Vec<u8>> {
        let mut req: UploadRequest = serde_json::from_slice(body).ok()?;
        let [a] = req.appointments.as_mut_slice() else {
            return None;
        };
        if a.latrexa_id.is_some() {
            return None;
        }
        a.latrexa_id = Some(latrexa_id.to_owned());
        serde_json::to_vec(&req).ok()
    }

    /// `(size, linger_ms)` when uploads go on a schedule.
    pub fn batching(&self) -> Option<(usize, u64)> {
        (self.config.upload_interval_secs > 0)
            .then(|| (UPLOAD_BATCH_SIZE, self.config.upload_interval_secs * 1000))
    }

    /// How the appointment ledger reads an upload of one appointment: no slot (Latrexa keys
    /// appointments by id) and the status sent.
    pub fn ledger_view(&self, body: &[u8]) -> Option<LedgerView> {
        let req: UploadRequest = serde_json::from_slice(body).ok()?;
        let [a] = req.appointments.as_slice() else {
            return None;
        };
        Some(LedgerView {
            slot: String::new(),
            closed: matches!(
                a.status.as_str(),
                "cancelled" | "no_show" | "entered_in_error"
            ),
            status: a.status.clone(),
        })
    }

    /// Uploads the appointments of several upload items as one request and returns one
    /// outcome per item, in order: delivered with the `latrexaId` Latrexa paired with its
    /// `hisAppointmentId`, or retried when the answer has no pair for it (an upload is keyed
    /// by the HIS id, so sending it again updates, never duplicates).
    pub async fn deliver_batch(&self, items: &[Delivery]) -> Vec<Result<Receipt, DeliveryError>> {
        let mut all = UploadRequest::default();
        let mut own: Vec<Vec<String>> = Vec::with_capacity(items.len());
        for d in items {
            match serde_json::from_slice::<UploadRequest>(&d.body) {
                Ok(r) => {
                    own.push(
                        r.appointments
                            .iter()
                            .map(|a| a.his_appointment_id.clone())
                            .collect(),
                    );
                    all.appointments.extend(r.appointments);
                }
                Err(e) => {
                    let err = DeliveryError::permanent(format!(
                        "Latrexa upload: stored body is not an upload request: {e}"
                    ));
                    return items.iter().map(|_| Err(err.clone())).collect();
                }
            }
        }
        let url = super::url_of(&self.config.base_url, &items[0], UPLOAD_PATH);
        let body = serde_json::to_vec(&all).unwrap_or_default();
        let answer = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Authorization", &self.bearer)
            .header("X-Organization-Code", &self.config.organization_code)
            .body(body)
            .send()
            .await;
        let answer = match answer {
            Ok(r) => Answer::read(r).await,
            Err(e) => {
                let err = super::transport_error("Latrexa", UPLOAD_PATH, &e);
                return items.iter().map(|_| Err(err.clone())).collect();
            }
        };
        if !answer.is_success() {
            let err = answer.failure(format!(
                "Latrexa {UPLOAD_PATH} answered {}: {}",
                answer.status,
                super::reason_of(&answer.body)
            ));
            return items.iter().map(|_| Err(err.clone())).collect();
        }
        let Ok(pairs) = serde_json::from_str::<UploadResponse>(&answer.body) else {
            let err = DeliveryError::permanent(format!(
                "Latrexa {UPLOAD_PATH} answered {} with a body that is not an upload answer",
                answer.status
            ));
            return items.iter().map(|_| Err(err.clone())).collect();
        };
        own.iter()
            .map(|ids| {
                let found: Vec<_> = ids
                    .iter()
                    .filter_map(|id| pairs.mappings.iter().find(|p| &p.his_appointment_id == id))
                    .cloned()
                    .collect();
                if found.len() < ids.len() {
                    return Err(DeliveryError::retry(format!(
                        "Latrexa {UPLOAD_PATH}: no id pair for an uploaded appointment"
                    )));
                }
                Ok(Receipt {
                    status: Some(answer.status),
                    detail: serde_json::to_string(&UploadResponse {
                        accepted: u32::try_from(found.len()).unwrap_or(u32::MAX),
                        mappings: found,
                    })
                    .unwrap_or_default(),
                    answer: crate::destination::bounded_answer(&answer.body),
                })
            })
            .collect()
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
            upload_answer,
        )
        .await
        .map(|(r, _)| r)
    }
}

/// Reads a 2xx answer of the upload: it must be an upload answer (`accepted`, `mappings`).
///
/// # Errors
///
/// Latrexa's message, or the first bytes of the body.
pub fn upload_answer(body: &str) -> Result<(), String> {
    serde_json::from_str::<UploadResponse>(body)
        .map(drop)
        .map_err(|_| super::reason_of(body))
}

/// The Latrexa id an upload answer (or one item's part of it) pairs with the HIS id.
pub fn remote_id(answer: &str) -> Option<String> {
    serde_json::from_str::<UploadResponse>(answer)
        .ok()?
        .mappings
        .into_iter()
        .next()
        .map(|p| p.latrexa_id)
}
