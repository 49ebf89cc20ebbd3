//! The FHIR server destination (`type = "fhir"`): sends the route's `fhir` payload, a
//! transaction Bundle of conditional PUTs by identifier rendered by routing, either as it is
//! (`mode = "transaction"`: POST to the base) or one resource at a time
//! (`mode = "conditional_update"`: `PUT [base]/{type}?identifier=system|value` per entry, in
//! Bundle order, for servers without transactions).
//!
//! Answers: 2xx is delivered. 408, 425, 429, 5xx, timeouts and connection errors are retried
//! (`Retry-After` honoured); any other 4xx is permanent and the dead letter carries the
//! OperationOutcome's diagnostics. Auth: a static bearer token, or OAuth2 client credentials
//! (`[destination.oauth2]`): the token is fetched from `token_url`, cached, refreshed shortly
//! before it expires, and fetched again once when the server answers 401.

use super::source::FHIR_JSON;
use crate::destination::{Delivery, DeliveryConfig, DeliveryError, Receipt};
use crate::http_answer::{self, endpoint_of, Answer};
use crate::secret::SecretRef;
use serde::Deserialize;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How a FHIR destination sends a Bundle.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FhirMode {
    /// POST the transaction Bundle to the base URL (all or nothing on the server).
    #[default]
    Transaction,
    /// PUT each entry to its conditional URL (`Patient?identifier=system|value`), in order.
    ConditionalUpdate,
}

/// OAuth2 client-credentials settings (`[destination.oauth2]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Config {
    /// The token endpoint.
    pub token_url: String,
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: SecretRef,
    /// Scopes to ask for, space separated (such as `system/*.write`); none by default.
    #[serde(default)]
    pub scope: Option<String>,
    /// Seconds before expiry at which the token is renewed.
    #[serde(default = "default_refresh_margin_secs")]
    pub refresh_margin_secs: u64,
}

fn default_refresh_margin_secs() -> u64 {
    30
}

/// Configuration of a FHIR server destination (`type = "fhir"`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FhirConfig {
    /// Name, unique within the channel.
    pub name: String,
    /// The server's base URL, such as `https://fhir.example.org/r4`.
    pub base_url: String,
    /// `transaction` (default) or `conditional_update`.
    #[serde(default)]
    pub mode: FhirMode,
    /// `Authorization: Bearer <token>` with a static token.
    #[serde(default)]
    pub bearer_token: Option<SecretRef>,
    /// OAuth2 client credentials instead of a static token.
    #[serde(default)]
    pub oauth2: Option<OAuth2Config>,
    /// Seconds to wait for each answer.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Scheduling and retries.
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

fn default_timeout_secs() -> u64 {
    30
}

fn http_url_problem(key: &str, url: &str) -> Option<(String, String)> {
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => None,
        _ => Some((key.into(), format!("'{url}' is not an http(s) URL"))),
    }
}

impl FhirConfig {
    /// Secrets with their keys, for `check`.
    pub fn secrets(&self) -> Vec<(&'static str, &SecretRef)> {
        let mut v = Vec::new();
        if let Some(s) = &self.bearer_token {
            v.push(("bearer_token", s));
        }
        if let Some(o) = &self.oauth2 {
            v.push(("oauth2.client_secret", &o.client_secret));
        }
        v
    }

    /// Problems the loader cannot see.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        out.extend(http_url_problem("base_url", &self.base_url));
        if let Some(o) = &self.oauth2 {
            out.extend(http_url_problem("oauth2.token_url", &o.token_url));
            if o.client_id.is_empty() {
                out.push(("oauth2.client_id".into(), "must not be empty".into()));
            }
        }
        if self.bearer_token.is_some() && self.oauth2.is_some() {
            out.push((
                "oauth2".into(),
                "give bearer_token or oauth2, not both".into(),
            ));
        }
        if self.timeout_secs == 0 {
            out.push(("timeout_secs".into(), "must be at least 1".into()));
        }
        out
    }
}

/// A cached OAuth2 access token.
#[derive(Debug)]
struct Token {
    value: String,
    renew_at: Instant,
}

/// The FHIR server client.
pub struct FhirClient {
    config: FhirConfig,
    client: reqwest::Client,
    bearer: Option<String>,
    client_secret: Option<String>,
    token: Mutex<Option<Token>>,
}

impl std::fmt::Debug for FhirClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret or a token.
        f.debug_struct("FhirClient")
            .field("base_url", &self.config.base_url)
            .field("mode", &self.config.mode)
            .finish_non_exhaustive()
    }
}

impl FhirClient {
    /// Tells whether the FHIR server's host accepts connections now (a TCP connect; no
    /// token is fetched and nothing is sent).
    ///
    /// # Errors
    ///
    /// The host and why it could not be reached.
    pub async fn healthcheck(&self) -> Result<(), String> {
        crate::clinic_api::reachable(&self.config.base_url).await
    }

    /// Resolves the secrets and builds the HTTP client.
    ///
    /// # Errors
    ///
    /// A sentence naming a secret that cannot be read.
    pub fn new(config: &FhirConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs))
            .connect_timeout(Duration::from_secs(config.timeout_secs.min(10)))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(FhirClient {
            bearer: config
                .bearer_token
                .as_ref()
                .map(SecretRef::resolve)
                .transpose()?,
            client_secret: config
                .oauth2
                .as_ref()
                .map(|o| o.client_secret.resolve())
                .transpose()?,
            config: config.clone(),
            client,
            token: Mutex::new(None),
        })
    }

    /// Checks the credentials without changing anything: with OAuth2 a token from
    /// `token_url` (client credentials), then `GET [base]/metadata` with the token or
    /// `bearer_token`. A server that serves its CapabilityStatement to anyone accepts any
    /// token there; the detail says so.
    pub async fn check_credentials(&self) -> crate::destination::CredentialCheck {
        use crate::destination::CredentialCheck;
        let mut said = Vec::new();
        let token = if let Some(o) = &self.config.oauth2 {
            match self.access_token(true).await {
                Ok(t) => {
                    said.push(format!(
                        "token endpoint {} issued a token",
                        endpoint_of(&o.token_url)
                    ));
                    Some(t)
                }
                Err(e) => return CredentialCheck::Refused(e.reason),
            }
        } else {
            self.bearer.clone()
        };
        let url = format!("{}/metadata", self.config.base_url.trim_end_matches('/'));
        let mut req = self
            .client
            .get(&url)
            .header(reqwest::header::ACCEPT, FHIR_JSON);
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        let checked = crate::clinic_api::credential_answer(
            if token.is_some() {
                "GET [base]/metadata with the token"
            } else {
                "GET [base]/metadata (no credentials configured)"
            },
            req.send().await,
        )
        .await;
        let mut join = |s: String| {
            said.push(s);
            said.join("; ")
        };
        match checked {
            CredentialCheck::Accepted(s) if token.is_some() && self.config.oauth2.is_none() => {
                CredentialCheck::Accepted(join(format!(
                    "{s} (a server that serves its metadata to anyone takes any token there)"
                )))
            }
            CredentialCheck::Accepted(s) => CredentialCheck::Accepted(join(s)),
            CredentialCheck::Refused(s) => CredentialCheck::Refused(join(s)),
            CredentialCheck::NotChecked(s) => CredentialCheck::NotChecked(join(s)),
        }
    }

    /// Sends one Bundle and classifies the answers.
    ///
    /// # Errors
    ///
    /// [`DeliveryError`] as described in the module documentation.
    pub async fn deliver(&self, d: &Delivery) -> Result<Receipt, DeliveryError> {
        let base = self.config.base_url.trim_end_matches('/');
        match self.config.mode {
            FhirMode::Transaction => {
                let body = d.body.to_vec();
                self.send(reqwest::Method::POST, base, &body, &d.idempotency_key)
                    .await
            }
            FhirMode::ConditionalUpdate => {
                let bundle: Value = serde_json::from_slice(&d.body).map_err(|e| {
                    DeliveryError::permanent(format!("the payload is not a FHIR Bundle: {e}"))
                })?;
                let entries = bundle
                    .get("entry")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let mut last = None;
                for (i, entry) in entries.iter().enumerate() {
                    let (method, url) = entry_request(base, entry).ok_or_else(|| {
                        DeliveryError::permanent(format!(
                            "Bundle.entry[{i}] has no resource or request to send"
                        ))
                    })?;
                    let body = serde_json::to_vec(&entry["resource"])
                        .map_err(|e| DeliveryError::permanent(e.to_string()))?;
                    let key = format!("{}-{i}", d.idempotency_key);
                    last = Some(self.send(method, &url, &body, &key).await?);
                }
                last.ok_or_else(|| DeliveryError::permanent("the Bundle has no entries"))
            }
        }
    }

    /// One request, with the auth header; an OAuth2 401 renews the token and tries once more.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: &[u8],
        idempotency_key: &str,
    ) -> Result<Receipt, DeliveryError> {
        let mut renewed = false;
        loop {
            let mut req = self
                .client
                .request(method.clone(), url)
                .header(reqwest::header::CONTENT_TYPE, FHIR_JSON)
                .header(reqwest::header::ACCEPT, FHIR_JSON)
                .header("Idempotency-Key", idempotency_key)
                .body(body.to_vec());
            if let Some(token) = &self.bearer {
                req = req.bearer_auth(token);
            }
            if self.config.oauth2.is_some() {
                req = req.bearer_auth(self.access_token(renewed).await?);
            }
            let sent = req.send().await;
            if let Ok(resp) = &sent {
                if resp.status() == reqwest::StatusCode::UNAUTHORIZED
                    && self.config.oauth2.is_some()
                    && !renewed
                {
                    renewed = true;
                    continue;
                }
            }
            return classify(url, sent).await;
        }
    }

    /// The cached token, or a new one when it is due for renewal or `force`d (after a 401).
    async fn access_token(&self, force: bool) -> Result<String, DeliveryError> {
        let Some(o) = &self.config.oauth2 else {
            return Err(DeliveryError::permanent("no OAuth2 configuration"));
        };
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref() {
            if !force && Instant::now() < t.renew_at {
                return Ok(t.value.clone());
            }
        }
        let mut form = vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", o.client_id.clone()),
            (
                "client_secret",
                self.client_secret.clone().unwrap_or_default(),
            ),
        ];
        if let Some(scope) = &o.scope {
            form.push(("scope", scope.clone()));
        }
        let endpoint = endpoint_of(&o.token_url);
        // Token trouble is ours, not the message's: retry (the breaker slows it down).
        let resp = self
            .client
            .post(&o.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| http_answer::transport_error(&format!("token endpoint {endpoint}"), &e))?;
        let status = resp.status();
        if !status.is_success() {
            // The server's own reason (OAuth2's `error`, such as invalid_client), once.
            let body = resp.text().await.unwrap_or_default();
            return Err(DeliveryError::retry(format!(
                "token endpoint {endpoint} answered {}: {}",
                status.as_u16(),
                crate::clinic_api::reason_of(&body)
            )));
        }
        #[derive(Deserialize)]
        struct TokenAnswer {
            access_token: String,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let answer: TokenAnswer = resp.json().await.map_err(|_| {
            DeliveryError::retry(format!(
                "token endpoint {endpoint}: the answer has no access_token"
            ))
        })?;
        let lifetime = answer.expires_in.unwrap_or(300);
        let renew_in = lifetime.saturating_sub(o.refresh_margin_secs.min(lifetime / 2));
        *cached = Some(Token {
            value: answer.access_token.clone(),
            renew_at: Instant::now() + Duration::from_secs(renew_in),
        });
        Ok(answer.access_token)
    }
}

/// The method and absolute URL of a Bundle entry: its `request` (a conditional URL has its
/// query encoded), or a POST to the resource type.
/// How the appointment ledger reads a Bundle sent to a FHIR server: the status of its
/// `Appointment` entry (no slot: the server keys the resource by its identifier), closed for
/// `cancelled`, `noshow` and `entered-in-error`. `None` without an Appointment.
pub fn ledger_view(body: &[u8]) -> Option<crate::destination::LedgerView> {
    let bundle: Value = serde_json::from_slice(body).ok()?;
    let appointment = bundle["entry"]
        .as_array()?
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["resourceType"] == "Appointment")?;
    let status = appointment["status"].as_str()?.to_owned();
    Some(crate::destination::LedgerView {
        slot: String::new(),
        closed: matches!(status.as_str(), "cancelled" | "noshow" | "entered-in-error"),
        status,
    })
}

fn entry_request(base: &str, entry: &Value) -> Option<(reqwest::Method, String)> {
    let resource = entry.get("resource")?;
    let rtype = resource.get("resourceType")?.as_str()?;
    let method = entry
        .pointer("/request/method")
        .and_then(Value::as_str)
        .unwrap_or("POST");
    let url = entry
        .pointer("/request/url")
        .and_then(Value::as_str)
        .unwrap_or(rtype);
    let method = match method {
        "PUT" => reqwest::Method::PUT,
        "POST" => reqwest::Method::POST,
        _ => return None,
    };
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let mut full = reqwest::Url::parse(&format!("{base}/{path}")).ok()?;
    if !query.is_empty() {
        let pairs: Vec<(String, String)> = query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        full.query_pairs_mut().extend_pairs(pairs);
    }
    Some((method, full.to_string()))
}

/// Classifies a FHIR server's answer: 2xx delivered; 408, 425, 429 and 5xx retried; other
/// 4xx permanent with the OperationOutcome's diagnostics (see [`crate::http_answer`]).
///
/// # Errors
///
/// [`DeliveryError`].
pub async fn classify(
    url: &str,
    sent: Result<reqwest::Response, reqwest::Error>,
) -> Result<Receipt, DeliveryError> {
    let endpoint = endpoint_of(url);
    let answer = match sent {
        Ok(r) => Answer::read(r).await,
        Err(e) => return Err(http_answer::transport_error(&endpoint, &e)),
    };
    let code = answer.status;
    if answer.is_success() {
        return Ok(Receipt {
            status: Some(code),
            detail: format!("{endpoint} answered {code}"),
            answer: crate::destination::bounded_answer(&answer.body),
        });
    }
    let diagnostics = outcome_diagnostics(&answer.body)
        .unwrap_or_else(|| answer.body.chars().take(200).collect::<String>());
    Err(answer.failure(format!("{endpoint} answered {code}: {diagnostics}")))
}

/// The issues of an OperationOutcome as `severity code: diagnostics` lines joined by `; `.
fn outcome_diagnostics(text: &str) -> Option<String> {
    let v: Value = serde_json::from_str(text).ok()?;
    if v.get("resourceType")?.as_str()? != "OperationOutcome" {
        return None;
    }
    let issues: Vec<String> = v
        .get("issue")?
        .as_array()?
        .iter()
        .map(|i| {
            let s = |k: &str| i.get(k).and_then(Value::as_str).unwrap_or_default();
            let detail = i
                .get("diagnostics")
                .and_then(Value::as_str)
                .or_else(|| i.pointer("/details/text").and_then(Value::as_str))
                .unwrap_or_default();
            let detail: String = detail.chars().take(200).collect();
            format!("{} {}: {detail}", s("severity"), s("code"))
        })
        .collect();
    Some(format!("OperationOutcome {}", issues.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditional_urls_are_encoded_under_the_base() {
        let entry = json!({"resource": {"resourceType": "Patient"},
            "request": {"method": "PUT", "url": "Patient?identifier=urn:switchboard:mrn|P 1"}});
        let (m, url) = entry_request("http://h:1/r4", &entry).expect("request");
        assert_eq!(m, reqwest::Method::PUT);
        assert_eq!(
            url,
            "http://h:1/r4/Patient?identifier=urn%3Aswitchboard%3Amrn%7CP+1"
        );
        let post = json!({"resource": {"resourceType": "Observation"}});
        assert_eq!(
            entry_request("http://h:1/r4", &post).expect("request").1,
            "http://h:1/r4/Observation"
        );
    }

    #[test]
    fn operation_outcome_diagnostics_are_read() {
        let oo = r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"Patient.birthDate: bad date"}]}"#;
        assert_eq!(
            outcome_diagnostics(oo).as_deref(),
            Some("OperationOutcome error invalid: Patient.birthDate: bad date")
        );
        assert_eq!(outcome_diagnostics("{}"), None);
    }
}
