//! Canonical [`Event`](crate::model::Event) -> request bodies for the cloud clinic APIs (as
//! their vendors document them, see docs/SANDBOX.md): one module per vendor, each with a `render` function and the serde types of its
//! wire format (shared with the sandbox and the inbound `from_json` side, so both ends agree).
//!
//! Rendering is pure: the engine renders once, at enqueue, stores the [`Rendered`] items in the
//! outbox and sends them in order, so a retry sends the same bytes with the same idempotency
//! key. Headers, authentication and signatures are the `channels` crate's business.
//!
//! Start with [`opsport`] (plain upserts), then [`buktor`] (event envelope and client field
//! mapping), [`px360`] (HIS patient-data JSON) and [`latrexa`] (upload and booking types).

pub mod buktor;
pub mod latrexa;
pub mod opsport;
pub mod px360;

use serde::{Deserialize, Serialize};

/// One request to send to a destination, rendered from a canonical event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rendered {
    /// Request path relative to the destination's `base_url`, e.g. `/api/healthcare/patient`.
    pub path: String,
    /// JSON request body, after the configured field mapping.
    pub body: serde_json::Value,
    /// Deterministic key for this item: the same source message and entity give the same key,
    /// so a replay or a retry can be recognised by the receiver and by the outbox.
    pub idempotency_key: String,
    /// What the body is, e.g. `clinic`, `doctor`, `patient`, `appointment`, `appointment.created`.
    pub kind: String,
}

/// Why a canonical event could not be rendered for a destination.
///
/// A mapping failure is never retryable: the same event will fail the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// A field the destination requires is missing from the canonical event.
    #[error("missing required field {path}")]
    MissingField {
        /// Canonical path of the missing field, e.g. `appointment.start`.
        path: String,
    },
    /// A field is present but cannot be expressed in the destination's format.
    #[error("invalid value at {path}: {reason}")]
    InvalidValue {
        /// Canonical path of the field, e.g. `patient.birth_date`.
        path: String,
        /// Why the value is unusable.
        reason: String,
    },
    /// Items of different kinds were given to a bulk helper.
    #[error("bulk items must all be of kind {expected}, found {found}")]
    MixedBulk {
        /// Kind of the first item.
        expected: String,
        /// Kind of the offending item.
        found: String,
    },
}

pub(crate) fn missing(path: &str) -> MappingError {
    MappingError::MissingField {
        path: path.to_owned(),
    }
}
