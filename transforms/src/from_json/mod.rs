//! JSON that HIS systems and cloud APIs send us -> canonical events: Buktor webhook events,
//! PX360 HIS patient data, OpsPort-shaped upserts from desktop clinic apps, and Latrexa pending
//! bookings (which `to_v2` then writes as SIU for the HIS).
//!
//! The wire types are those of [`crate::dest`], so what we send and what we accept cannot drift
//! apart. Errors tell a webhook source what to answer: [`JsonError::http_status`]. They name
//! the JSON path and the rule, never the value received ([`crate::serde_reason`]).

pub mod buktor;
pub mod latrexa;
pub mod opsport;
pub mod px360;

use crate::model::{Event, EventKind, Source};

/// Why inbound JSON could not become canonical events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// The body is not JSON, or not the documented shape (HTTP 400).
    #[error("invalid request body at {path}: {reason}")]
    Invalid {
        /// JSON path (`data.his_start_at`) or `line:column` of a syntax error.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Well-formed, but a value cannot be used (HTTP 422).
    #[error("{path}: {reason}")]
    Unprocessable {
        /// JSON path of the value.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl JsonError {
    /// HTTP status for the answer: 400 or 422.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Invalid { .. } => 400,
            Self::Unprocessable { .. } => 422,
        }
    }

    pub(crate) fn syntax(e: &serde_json::Error) -> Self {
        Self::Invalid {
            path: format!("{}:{}", e.line(), e.column()),
            reason: crate::serde_reason::of_json(e),
        }
    }

    pub(crate) fn unusable(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Unprocessable {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// An event with nothing attached yet.
pub(crate) fn empty_event(id: String, kind: EventKind, source: Source) -> Event {
    Event::empty(id, kind, source)
}

/// Parses a local or offset ISO 8601 time (`2026-06-15T10:30:00`, `...Z`) with its JSON path.
pub(crate) fn iso(text: &str, path: &str) -> Result<crate::model::Timestamp, JsonError> {
    crate::model::Timestamp::parse_iso(text)
        .map_err(|e| JsonError::unusable(path, format!("not an ISO 8601 date/time: {e}")))
}
