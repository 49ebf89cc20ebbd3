//! Reading what an HTTP destination answered, the same way for every HTTP destination
//! (signed webhooks, FHIR servers, the clinic APIs).
//!
//! A request that got no answer (refused, reset, timed out) is always worth retrying. An
//! answer is delivered on 2xx; 408 Request Timeout, 425 Too Early, 429 Too Many Requests and
//! 5xx are retried, honouring `Retry-After` in seconds; any other status is permanent, and
//! each destination words the reason from the body in its own vendor's terms.

use std::time::Duration;

use crate::destination::DeliveryError;

/// `host:port/path` of a URL, without query string or credentials, for error texts.
pub fn endpoint_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}{}",
            u.host_str()
                .map(|h| format!("{h}:{}", u.port_or_known_default().unwrap_or(0)))
                .unwrap_or_default(),
            u.path()
        ),
        Err(_) => "(invalid URL)".into(),
    }
}

/// Why a request got no answer, for error texts: `timed out`, `connection failed` or
/// `request failed`.
pub fn what_failed(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    }
}

/// A request that got no answer, as a retryable error: `{label}: {what_failed}`.
pub fn transport_error(label: &str, e: &reqwest::Error) -> DeliveryError {
    DeliveryError::retry(format!("{label}: {}", what_failed(e)))
}

/// What came back: the status, its `Retry-After` and the body as text.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status code.
    pub status: u16,
    /// `Retry-After` in seconds, when sent (an HTTP date is not honoured).
    pub retry_after: Option<Duration>,
    /// The body (empty when it could not be read).
    pub body: String,
}

impl Answer {
    /// Reads the status, `Retry-After` and the whole body of a response.
    pub async fn read(resp: reqwest::Response) -> Self {
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp.text().await.unwrap_or_default();
        Self {
            status,
            retry_after,
            body,
        }
    }

    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The answer as a failed delivery whose reason is `reason`: retryable for 408, 425, 429
    /// and 5xx, with the answer's `Retry-After`.
    pub fn failure(&self, reason: String) -> DeliveryError {
        DeliveryError {
            retryable: matches!(self.status, 408 | 425 | 429) || self.status >= 500,
            retry_after: self.retry_after,
            status: Some(self.status),
            reason,
            answer: crate::destination::bounded_answer(&self.body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16) -> Answer {
        Answer {
            status,
            retry_after: Some(Duration::from_secs(7)),
            body: String::new(),
        }
    }

    #[test]
    fn busy_and_server_errors_are_retried_others_are_permanent() {
        for status in [408, 425, 429, 500, 502, 503, 504] {
            let e = answer(status).failure("x".into());
            assert!(e.retryable, "{status}");
            assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        }
        for status in [400, 401, 403, 404, 409, 410, 412, 422] {
            assert!(!answer(status).failure("x".into()).retryable, "{status}");
        }
        assert!(answer(201).is_success() && !answer(302).is_success());
    }

    #[test]
    fn endpoints_keep_host_port_and_path_only() {
        assert_eq!(
            endpoint_of("https://user:secret@api.example.test/v1/hook?token=abc"),
            "api.example.test:443/v1/hook"
        );
        assert_eq!(
            endpoint_of("http://127.0.0.1:8080/fhir"),
            "127.0.0.1:8080/fhir"
        );
        assert_eq!(endpoint_of("not a url"), "(invalid URL)");
    }
}
