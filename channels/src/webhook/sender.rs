//! The generic webhook destination: POST the payload, optionally signed, with an idempotency
//! key, and classify the answer.
//!
//! 2xx is delivered. 408, 425, 429, 5xx, timeouts and connection errors are retried
//! (`Retry-After` honoured). Any other status is permanent: the dead letter records the
//! status and the first bytes of the answer.

use crate::destination::{Delivery, DeliveryConfig, DeliveryError, Receipt};
use crate::http_answer::{self, endpoint_of, Answer};
use crate::secret::SecretRef;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::time::Duration;

/// Configuration of a webhook destination (`type = "webhook"`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Name, unique within the channel.
    pub name: String,
    /// URL to POST to (a route's payload path, when it has one, is appended).
    pub url: String,
    /// `Authorization: Bearer <token>`.
    #[serde(default)]
    pub bearer_token: Option<SecretRef>,
    /// Header name for an API key, such as `X-API-Key`.
    #[serde(default)]
    pub api_key_header: Option<String>,
    /// The API key sent in `api_key_header`.
    #[serde(default)]
    pub api_key: Option<SecretRef>,
    /// Shared secret for an HMAC-SHA256 signature over the exact body.
    #[serde(default)]
    pub signing_secret: Option<SecretRef>,
    /// Header that carries the lowercase hex signature.
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
    /// Header that carries the delivery's idempotency key.
    #[serde(default = "default_idempotency_header")]
    pub idempotency_header: String,
    /// Seconds to wait for the answer.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// URL the health check GETs (a 2xx answer means up); without it the health check only
    /// connects to the host and port of `url`.
    #[serde(default)]
    pub health_url: Option<String>,
    /// Scheduling and retries.
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

fn default_signature_header() -> String {
    "X-Switchboard-Signature".into()
}
fn default_idempotency_header() -> String {
    "Idempotency-Key".into()
}
fn default_timeout_secs() -> u64 {
    30
}

impl WebhookConfig {
    /// Secrets with their keys, for `check`.
    pub fn secrets(&self) -> Vec<(&'static str, &SecretRef)> {
        let mut v = Vec::new();
        if let Some(s) = &self.bearer_token {
            v.push(("bearer_token", s));
        }
        if let Some(s) = &self.api_key {
            v.push(("api_key", s));
        }
        if let Some(s) = &self.signing_secret {
            v.push(("signing_secret", s));
        }
        v
    }

    /// Problems the loader cannot see.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        match reqwest::Url::parse(&self.url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ => out.push((
                "url".into(),
                format!("'{}' is not an http(s) URL", self.url),
            )),
        }
        if let Some(h) = &self.health_url {
            match reqwest::Url::parse(h) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                _ => out.push(("health_url".into(), format!("'{h}' is not an http(s) URL"))),
            }
        }
        if self.api_key.is_some() != self.api_key_header.is_some() {
            out.push((
                "api_key_header".into(),
                "api_key and api_key_header go together".into(),
            ));
        }
        if self.timeout_secs == 0 {
            out.push(("timeout_secs".into(), "must be at least 1".into()));
        }
        out
    }
}

/// Signs `body` with HMAC-SHA256 under `secret`, as lowercase hex.
///
/// ```
/// use channels::webhook::sender::sign;
/// assert_eq!(sign(b"key", b"The quick brown fox jumps over the lazy dog"),
///     "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8");
/// ```
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The webhook client.
pub struct WebhookSender {
    config: WebhookConfig,
    client: reqwest::Client,
    bearer: Option<String>,
    api_key: Option<String>,
    signing_secret: Option<String>,
}

// By hand, so that a `{:?}` never prints the resolved secrets.
impl std::fmt::Debug for WebhookSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSender")
            .field("name", &self.config.name)
            .field("url", &self.config.url)
            .field("bearer", &self.bearer.as_ref().map(|_| "<set>"))
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field(
                "signing_secret",
                &self.signing_secret.as_ref().map(|_| "<set>"),
            )
            .finish()
    }
}

impl WebhookSender {
    /// Resolves the secrets and builds the HTTP client.
    ///
    /// # Errors
    ///
    /// A sentence naming a secret that cannot be read.
    pub fn new(config: &WebhookConfig) -> Result<Self, String> {
        let resolve = |s: &Option<SecretRef>| s.as_ref().map(SecretRef::resolve).transpose();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs))
            .connect_timeout(Duration::from_secs(config.timeout_secs.min(10)))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(WebhookSender {
            bearer: resolve(&config.bearer_token)?,
            api_key: resolve(&config.api_key)?,
            signing_secret: resolve(&config.signing_secret)?,
            config: config.clone(),
            client,
        })
    }

    /// GETs `health_url` (2xx is up) or, without one, connects to the host of `url`.
    ///
    /// # Errors
    ///
    /// The endpoint (without its query) and what failed.
    pub async fn healthcheck(&self) -> Result<(), String> {
        let timeout = Duration::from_secs(self.config.timeout_secs.min(10));
        if let Some(h) = &self.config.health_url {
            let endpoint = endpoint_of(h);
            let resp = self
                .client
                .get(h)
                .timeout(timeout)
                .send()
                .await
                .map_err(|e| format!("{endpoint}: {}", http_answer::what_failed(&e)))?;
            return if resp.status().is_success() {
                Ok(())
            } else {
                Err(format!("{endpoint}: answered {}", resp.status().as_u16()))
            };
        }
        let url = reqwest::Url::parse(&self.config.url)
            .map_err(|_| format!("'{}' is not a URL", endpoint_of(&self.config.url)))?;
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(80);
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        crate::health::tcp_connect(&addr, timeout).await
    }

    /// POSTs one delivery and classifies the answer.
    ///
    /// # Errors
    ///
    /// [`DeliveryError`] as described in the module documentation.
    pub async fn deliver(&self, d: &Delivery) -> Result<Receipt, DeliveryError> {
        let url = match &d.path {
            Some(p) => format!("{}{}", self.config.url.trim_end_matches('/'), p),
            None => self.config.url.clone(),
        };
        let mut req = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, &d.content_type)
            .header(self.config.idempotency_header.as_str(), &d.idempotency_key)
            .body(d.body.clone());
        if let Some(token) = &self.bearer {
            req = req.bearer_auth(token);
        }
        if let (Some(h), Some(k)) = (&self.config.api_key_header, &self.api_key) {
            req = req.header(h.as_str(), k);
        }
        if let Some(secret) = &self.signing_secret {
            req = req.header(
                self.config.signature_header.as_str(),
                sign(secret.as_bytes(), &d.body),
            );
        }
        classify(&url, req.send().await).await
    }
}

/// Classifies a webhook's answer (see the module docs and [`crate::http_answer`]).
///
/// # Errors
///
/// [`DeliveryError`]: retryable for transport errors, 408, 425, 429 and 5xx.
pub async fn classify(
    url: &str,
    sent: Result<reqwest::Response, reqwest::Error>,
) -> Result<Receipt, DeliveryError> {
    let endpoint = endpoint_of(url);
    let answer = match sent {
        Ok(r) => Answer::read(r).await,
        Err(e) => return Err(http_answer::transport_error(&endpoint, &e)),
    };
    let excerpt: String = answer.body.chars().take(300).collect();
    if answer.is_success() {
        return Ok(Receipt {
            status: Some(answer.status),
            detail: excerpt,
            answer: crate::destination::bounded_answer(&answer.body),
        });
    }
    Err(answer.failure(format!("{endpoint} answered {}: {excerpt}", answer.status)))
}
