//! Authentication of HTTP sources: bearer token, API key header and HMAC-SHA256 body
//! signature, as configured per source in `[source.auth]`.
//!
//! Credentials in headers are checked before the body is read; only the signature needs the
//! body, and it is verified over the exact bytes before anything parses them. Every comparison
//! is constant time. Failures are counted by the caller and never logged with the secret.
//! Peer allow-lists are [`crate::peers`]'s, shared with the MLLP listener.

use crate::secret::SecretRef;
use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Credentials an HTTP source requires (`[source.auth]`); every configured one must match.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Required `Authorization: Bearer <token>`.
    #[serde(default)]
    pub bearer_token: Option<SecretRef>,
    /// Required API key, sent in `api_key_header`.
    #[serde(default)]
    pub api_key: Option<SecretRef>,
    /// Header that carries the API key.
    #[serde(default = "default_api_key_header")]
    pub api_key_header: String,
    /// Shared secret of a lowercase hex HMAC-SHA256 signature over the exact body.
    #[serde(default)]
    pub hmac_secret: Option<SecretRef>,
    /// Header that carries the signature; defaults per source (`Buktor-Signature` for the
    /// Buktor format, `X-Switchboard-Signature` otherwise).
    #[serde(default)]
    pub hmac_header: Option<String>,
}

fn default_api_key_header() -> String {
    "X-API-Key".into()
}

impl AuthConfig {
    /// Secrets with their keys (relative to `source.auth`), for `check`.
    pub fn secrets(&self) -> Vec<(&'static str, &SecretRef)> {
        let mut v = Vec::new();
        if let Some(s) = &self.bearer_token {
            v.push(("auth.bearer_token", s));
        }
        if let Some(s) = &self.api_key {
            v.push(("auth.api_key", s));
        }
        if let Some(s) = &self.hmac_secret {
            v.push(("auth.hmac_secret", s));
        }
        v
    }

    /// Resolves the secrets.
    ///
    /// # Errors
    ///
    /// A sentence naming the secret that cannot be read (never its value).
    pub fn resolve(&self, default_hmac_header: &str) -> Result<Auth, String> {
        let resolve = |s: &Option<SecretRef>| s.as_ref().map(SecretRef::resolve).transpose();
        Ok(Auth {
            bearer: resolve(&self.bearer_token)?,
            api_key: resolve(&self.api_key)?.map(|k| (self.api_key_header.clone(), k)),
            hmac: resolve(&self.hmac_secret)?.map(|s| {
                (
                    self.hmac_header
                        .clone()
                        .unwrap_or_else(|| default_hmac_header.to_string()),
                    s,
                )
            }),
        })
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization: Bearer` header, or the wrong token.
    Bearer,
    /// No API key header, or the wrong key.
    ApiKey,
    /// No signature header.
    MissingSignature,
    /// A signature that does not match the body.
    BadSignature,
}

/// Resolved credentials of one source.
#[derive(Clone, Default)]
pub struct Auth {
    bearer: Option<String>,
    api_key: Option<(String, String)>,
    hmac: Option<(String, String)>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret, only which checks are on.
        f.debug_struct("Auth")
            .field("bearer", &self.bearer.is_some())
            .field("api_key", &self.api_key.as_ref().map(|(h, _)| h))
            .field("hmac", &self.hmac.as_ref().map(|(h, _)| h))
            .finish()
    }
}

impl Auth {
    /// Checks the header credentials (bearer, API key, presence of the signature): the part
    /// that needs no body.
    ///
    /// # Errors
    ///
    /// The first [`AuthFailure`].
    pub fn check_headers(&self, headers: &HeaderMap) -> Result<(), AuthFailure> {
        if let Some(token) = &self.bearer {
            let given = headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim);
            if !given.is_some_and(|g| secret_eq(g.as_bytes(), token.as_bytes())) {
                return Err(AuthFailure::Bearer);
            }
        }
        if let Some((header, key)) = &self.api_key {
            let given = headers.get(header.as_str()).map(|v| v.as_bytes());
            if !given.is_some_and(|g| secret_eq(g, key.as_bytes())) {
                return Err(AuthFailure::ApiKey);
            }
        }
        if let Some((header, _)) = &self.hmac {
            if headers.get(header.as_str()).is_none() {
                return Err(AuthFailure::MissingSignature);
            }
        }
        Ok(())
    }

    /// Verifies the signature header over the exact body (constant time).
    ///
    /// # Errors
    ///
    /// [`AuthFailure::MissingSignature`] or [`AuthFailure::BadSignature`].
    pub fn check_signature(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), AuthFailure> {
        let Some((header, secret)) = &self.hmac else {
            return Ok(());
        };
        let Some(given) = headers.get(header.as_str()).and_then(|v| v.to_str().ok()) else {
            return Err(AuthFailure::MissingSignature);
        };
        let given = given.trim();
        let given = given.strip_prefix("sha256=").unwrap_or(given);
        let Ok(given) = hex::decode(given) else {
            return Err(AuthFailure::BadSignature);
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(body);
        mac.verify_slice(&given)
            .map_err(|_| AuthFailure::BadSignature)
    }

    /// True when a signature is required.
    pub fn signs(&self) -> bool {
        self.hmac.is_some()
    }
}

/// Constant-time equality of two byte strings (the length is not secret).
fn secret_eq(given: &[u8], expected: &[u8]) -> bool {
    given.ct_eq(expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn auth() -> Auth {
        Auth {
            bearer: Some("tok".into()),
            api_key: None,
            hmac: Some(("buktor-signature".into(), "s3cret".into())),
        }
    }

    #[test]
    fn headers_then_signature() {
        let a = auth();
        let mut h = HeaderMap::new();
        assert_eq!(a.check_headers(&h), Err(AuthFailure::Bearer));
        h.insert("authorization", HeaderValue::from_static("Bearer nope"));
        assert_eq!(a.check_headers(&h), Err(AuthFailure::Bearer));
        h.insert("authorization", HeaderValue::from_static("Bearer tok"));
        assert_eq!(a.check_headers(&h), Err(AuthFailure::MissingSignature));
        let sig = crate::webhook::sender::sign(b"s3cret", b"{}");
        h.insert(
            "buktor-signature",
            HeaderValue::from_str(&sig).expect("hex"),
        );
        assert_eq!(a.check_headers(&h), Ok(()));
        assert_eq!(a.check_signature(&h, b"{}"), Ok(()));
        assert_eq!(
            a.check_signature(&h, b"{ }"),
            Err(AuthFailure::BadSignature)
        );
        h.insert("buktor-signature", HeaderValue::from_static("zz"));
        assert_eq!(a.check_signature(&h, b"{}"), Err(AuthFailure::BadSignature));
    }

    #[test]
    fn debug_never_prints_secrets() {
        assert!(!format!("{:?}", auth()).contains("s3cret"));
    }
}
