//! A small client of the admin API, for `switchboard messages`.

use serde_json::Value;

/// Why an admin API call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    /// The server could not be reached.
    #[error("cannot reach the admin API at {url}: {source}")]
    Http {
        /// The URL called.
        url: String,
        /// What reqwest said.
        source: reqwest::Error,
    },
    /// The server answered with an error.
    #[error("admin API answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The JSON error body.
        body: String,
    },
}

/// GETs `base + path` with the token, returning the JSON body.
///
/// # Errors
///
/// [`AdminClientError`] when unreachable or the answer is not 2xx.
pub async fn get_json(
    base: &str,
    path: &str,
    query: &[(&str, String)],
    token: Option<&str>,
) -> Result<Value, AdminClientError> {
    let url = format!("{}{}", base.trim_end_matches('/'), path);
    let mut req = reqwest::Client::new().get(&url).query(query);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let http = |source| AdminClientError::Http {
        url: url.clone(),
        source,
    };
    let resp = req.send().await.map_err(http)?;
    let status = resp.status();
    let body = resp.text().await.map_err(http)?;
    if !status.is_success() {
        return Err(AdminClientError::Status {
            status: status.as_u16(),
            body,
        });
    }
    serde_json::from_str(&body).map_err(|_| AdminClientError::Status {
        status: status.as_u16(),
        body: "answer is not JSON".into(),
    })
}
