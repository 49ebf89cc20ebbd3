//! The cloud clinic APIs as destinations: OpsPort, Buktor, PX360 and the Latrexa
//! upload. Payloads are rendered at ingest by `transforms::dest` (the engine's routing); the
//! clients here add each vendor's headers, POST to `base_url` + the rendered path and classify
//! the answer as the vendor documents it.
//!
//! Every client shares [`post`]: a 2xx is delivered only when its body says so in the vendor's
//! terms (each client passes its own reader of the success body: Buktor's `"status":"success"`,
//! OpsPort's `success`, PX360's `success`/`Code`), and a 2xx that says error is permanent, with
//! the vendor's message; transport errors, 408, 425, 429 and 5xx are retried (`Retry-After`
//! honoured); any other status is permanent and its reason is the vendor's own message from the
//! answer body (`message`, `error` + `details`, `detail`), so a wrong key, a missing mapping or
//! a validation error lands in the dead letters at once, with a reason an operator can act on,
//! instead of being retried.
//!
//! Clients of the cloud clinic APIs (docs/SANDBOX.md) that do more than take deliveries.
//!
//! [`latrexa_bookings`] is the Latrexa -> HIS side of the Latrexa Sync Agent: it fetches online
//! bookings (REST polling and the SignalR hub) and answers confirm, reject and heartbeat.

pub mod buktor;
pub mod latrexa;
pub mod latrexa_bookings;
pub mod opsport;
pub mod px360;

use crate::destination::{Delivery, DeliveryError, Receipt};
use crate::http_answer::{self, Answer};
use std::time::Duration;

fn default_timeout_secs() -> u64 {
    30
}

/// Builds the HTTP client of a vendor destination.
fn http_client(timeout_secs: u64) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(timeout_secs))
        .connect_timeout(Duration::from_secs(timeout_secs.min(10)))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// Tells whether the host of `base_url` accepts connections now (a TCP connect; nothing is
/// sent, so no credentials are spent).
///
/// # Errors
///
/// The host and why it could not be reached.
pub async fn reachable(base_url: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(base_url).map_err(|e| format!("{base_url}: {e}"))?;
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(443);
    crate::health::tcp_connect(&format!("{host}:{port}"), Duration::from_secs(5)).await
}

/// Problems of a `base_url`, for `check`.
fn url_problems(base_url: &str) -> Vec<(String, String)> {
    match reqwest::Url::parse(base_url) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => vec![],
        _ => vec![(
            "base_url".into(),
            format!("'{base_url}' is not an http(s) URL"),
        )],
    }
}

/// `base_url` + the delivery's path (or `default_path`).
fn url_of(base_url: &str, d: &Delivery, default_path: &str) -> String {
    format!(
        "{}{}",
        base_url.trim_end_matches('/'),
        d.path.as_deref().unwrap_or(default_path)
    )
}

/// The vendor's own explanation in an error body, or the first bytes of the body.
pub fn reason_of(body: &str) -> String {
    let excerpt = || body.chars().take(300).collect::<String>();
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return excerpt();
    };
    let text = |k: &str| v.get(k).and_then(|m| m.as_str()).map(str::to_owned);
    let mut out = match (text("message"), text("error"), text("detail")) {
        (Some(m), _, _) => m,
        (None, Some(e), _) => e,
        (None, None, Some(d)) => d,
        _ => return excerpt(),
    };
    if let Some(details) = v.get("details").filter(|d| !d.is_null()) {
        out.push_str(": ");
        out.push_str(&details.to_string().chars().take(600).collect::<String>());
    }
    out
}

/// Reads the answer to a credential check `call` (such as `POST /api/healthcare/clinics []`):
/// 401 and 403 are refused credentials, 5xx and no answer a peer that cannot tell; any other
/// answer means the credentials were taken (a 4xx other than 401/403 comes after the check).
pub(crate) async fn credential_answer(
    call: &str,
    sent: Result<reqwest::Response, reqwest::Error>,
) -> crate::destination::CredentialCheck {
    use crate::destination::CredentialCheck;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            return CredentialCheck::Refused(format!("{call}: {}", http_answer::what_failed(&e)))
        }
    };
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    match status {
        200..=299 => {
            CredentialCheck::Accepted(format!("{call} answered {status}: credentials accepted"))
        }
        401 | 403 => CredentialCheck::Refused(format!(
            "{call} answered {status}: credentials refused: {}",
            reason_of(&body)
        )),
        500.. => {
            CredentialCheck::Refused(format!("{call} answered {status}: {}", reason_of(&body)))
        }
        _ => CredentialCheck::Accepted(format!(
            "{call} answered {status} (not 401/403: credentials accepted): {}",
            reason_of(&body)
        )),
    }
}

/// A request that got no answer: always worth retrying.
fn transport_error(vendor: &str, endpoint: &str, e: &reqwest::Error) -> DeliveryError {
    http_answer::transport_error(&format!("{vendor} {endpoint}"), e)
}

/// How a vendor's 2xx body is read: `Ok` when it says success, else the vendor's reason.
pub type SuccessBody = fn(&str) -> Result<(), String>;

/// A vendor whose 2xx answer carries nothing to read (its contract documents no body).
pub fn any_body(_: &str) -> Result<(), String> {
    Ok(())
}

/// POSTs `d` to `url` with `headers` and classifies the answer (see the module docs); a 2xx
/// is read with `says` before it counts as delivered.
///
/// # Errors
///
/// [`DeliveryError`], retryable or not, naming the vendor, endpoint and the vendor's reason.
async fn post(
    client: &reqwest::Client,
    vendor: &str,
    url: &str,
    d: &Delivery,
    headers: &[(&str, &str)],
    says: SuccessBody,
) -> Result<(Receipt, String), DeliveryError> {
    let mut req = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(d.body.clone());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let endpoint = reqwest::Url::parse(url)
        .map(|u| u.path().to_string())
        .unwrap_or_default();
    let answer = match req.send().await {
        Ok(r) => Answer::read(r).await,
        Err(e) => return Err(transport_error(vendor, &endpoint, &e)),
    };
    let code = answer.status;
    if answer.is_success() {
        if let Err(reason) = says(&answer.body) {
            return Err(DeliveryError {
                retryable: false,
                retry_after: None,
                status: Some(code),
                reason: format!("{vendor} {endpoint} answered {code} with an error: {reason}"),
                answer: crate::destination::bounded_answer(&answer.body),
            });
        }
        let detail = answer.body.chars().take(300).collect();
        return Ok((
            Receipt {
                status: Some(code),
                detail,
                answer: crate::destination::bounded_answer(&answer.body),
            },
            answer.body,
        ));
    }
    Err(answer.failure(format!(
        "{vendor} {endpoint} answered {code}: {}",
        reason_of(&answer.body)
    )))
}

#[cfg(test)]
mod tests {
    use super::reason_of;

    #[test]
    fn reasons_come_from_the_vendor_body() {
        assert_eq!(
            reason_of(r#"{"status":"error","message":"Unauthorized"}"#),
            "Unauthorized"
        );
        assert_eq!(
            reason_of(
                r#"{"error":"Invalid HIS data format","details":{"Code":["A valid integer is required."]}}"#
            ),
            r#"Invalid HIS data format: {"Code":["A valid integer is required."]}"#
        );
        assert_eq!(
            reason_of(r#"{"detail":"Invalid API key."}"#),
            "Invalid API key."
        );
        assert_eq!(reason_of("plain text"), "plain text");
    }
}
