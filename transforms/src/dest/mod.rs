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
//!
//! [`Vendor`] is the one registration point of a vendor and [`render`] its one render entry,
//! used by the engine's routing (at enqueue) and by `switchboard transform` alike.
//!
//! # Adding a vendor destination
//!
//! 1. Its module here (`dest/<vendor>.rs`: the wire types, an options struct, `render`), and
//!    `pub mod <vendor>;` below.
//! 2. One arm in [`Vendor`] and one in [`VendorOptions`]; the compiler then points at the arms
//!    of [`Vendor::as_str`], [`Vendor::default_options`], [`VendorOptions::vendor`],
//!    [`VendorOptions::deserialize_for`] and [`render`] in this file.
//! 3. Its client in `channels` (`channels/src/clinic_api/<vendor>.rs` and its `pub mod`),
//!    one arm of `channels::destination::DestinationConfig`; the compiler then points at every
//!    `match` on a destination (in `channels/src/destination.rs`, the engine's config key
//!    check and `switchboard check --connect` probe).
//!
//! Nothing else names a vendor: the payload names (`payload = "<vendor>"`), the metric label
//! and the `type` of `switchboard transform --to` are [`Vendor::as_str`].

pub mod buktor;
pub mod latrexa;
pub mod opsport;
pub mod px360;

use crate::journey::Timeline;
use crate::model::Event;
use serde::{Deserialize, Deserializer, Serialize};
use std::borrow::Cow;

/// A cloud clinic API Switchboard renders for. Its serde spelling (`opsport`, `buktor`,
/// `px360`, `latrexa`) is the payload name, the destination `type` and the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vendor {
    /// OpsPort healthcare upserts.
    Opsport,
    /// Buktor HIS webhook events.
    Buktor,
    /// PX360 HIS patient data.
    Px360,
    /// Latrexa appointment upload.
    Latrexa,
}

impl Vendor {
    /// Every vendor, in the order they are listed to users.
    pub const ALL: [Vendor; 4] = [
        Vendor::Opsport,
        Vendor::Buktor,
        Vendor::Px360,
        Vendor::Latrexa,
    ];

    /// The vendor's name, as configuration spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Vendor::Opsport => "opsport",
            Vendor::Buktor => "buktor",
            Vendor::Px360 => "px360",
            Vendor::Latrexa => "latrexa",
        }
    }

    /// The vendor named `name` (its [`Vendor::as_str`]), if there is one.
    pub fn parse(name: &str) -> Option<Vendor> {
        Vendor::ALL.into_iter().find(|v| v.as_str() == name)
    }

    /// The options used when the payload goes to a destination of another kind (a
    /// `webhook` with `payload = "opsport"`): the vendor's defaults.
    pub fn default_options(self) -> VendorOptions<'static> {
        match self {
            Vendor::Opsport => VendorOptions::Opsport(Cow::Owned(Default::default())),
            Vendor::Buktor => VendorOptions::Buktor(Cow::Owned(Default::default())),
            Vendor::Px360 => VendorOptions::Px360(Cow::Owned(Default::default())),
            Vendor::Latrexa => VendorOptions::Latrexa(Cow::Owned(Default::default())),
        }
    }
}

impl std::fmt::Display for Vendor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A vendor and the options its rendering reads, borrowed from a destination's
/// configuration or owned (the defaults, or `switchboard transform --options`).
#[derive(Debug, Clone, PartialEq)]
pub enum VendorOptions<'a> {
    /// [`opsport::render`]'s options.
    Opsport(Cow<'a, opsport::OpsportOptions>),
    /// [`buktor::render`]'s options.
    Buktor(Cow<'a, buktor::BuktorOptions>),
    /// [`px360::render_journey`]'s options.
    Px360(Cow<'a, px360::Px360Options>),
    /// [`latrexa::render`]'s options.
    Latrexa(Cow<'a, latrexa::LatrexaOptions>),
}

impl VendorOptions<'_> {
    /// The vendor these options are for.
    pub fn vendor(&self) -> Vendor {
        match self {
            VendorOptions::Opsport(_) => Vendor::Opsport,
            VendorOptions::Buktor(_) => Vendor::Buktor,
            VendorOptions::Px360(_) => Vendor::Px360,
            VendorOptions::Latrexa(_) => Vendor::Latrexa,
        }
    }

    /// Reads `vendor`'s options from `d` (a TOML or JSON table of its options keys).
    ///
    /// # Errors
    ///
    /// The deserializer's error for an unknown key or a value of the wrong type.
    pub fn deserialize_for<'de, D: Deserializer<'de>>(
        vendor: Vendor,
        d: D,
    ) -> Result<VendorOptions<'static>, D::Error> {
        Ok(match vendor {
            Vendor::Opsport => VendorOptions::Opsport(Cow::Owned(Deserialize::deserialize(d)?)),
            Vendor::Buktor => VendorOptions::Buktor(Cow::Owned(Deserialize::deserialize(d)?)),
            Vendor::Px360 => VendorOptions::Px360(Cow::Owned(Deserialize::deserialize(d)?)),
            Vendor::Latrexa => VendorOptions::Latrexa(Cow::Owned(Deserialize::deserialize(d)?)),
        })
    }
}

/// Renders `event` as the requests of the vendor of `options`, in the order they must be
/// sent: the one render entry of every vendor. `timeline` is the visit's stored timeline for
/// PX360 (`None`: the event's own steps); the other vendors do not read it.
///
/// # Errors
///
/// [`MappingError`] naming the field path and the reason (never patient data).
pub fn render(
    options: &VendorOptions<'_>,
    event: &Event,
    timeline: Option<&Timeline>,
) -> Result<Vec<Rendered>, MappingError> {
    match options {
        VendorOptions::Opsport(o) => opsport::render(event, o),
        VendorOptions::Buktor(o) => buktor::render(event, o),
        VendorOptions::Px360(o) => match timeline {
            Some(t) => px360::render_journey(event, t, o),
            None => px360::render(event, o),
        },
        // Latrexa takes the HIS's local times (`YYYY-MM-DDTHH:MM:SS`), as rendered.
        VendorOptions::Latrexa(o) => {
            let mut items = latrexa::render(event)?;
            if o.walk_in_registrations {
                items.extend(latrexa::render_walk_in(event)?);
            }
            Ok(items)
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_names_are_the_serde_spelling_and_round_trip() {
        for v in Vendor::ALL {
            let json = serde_json::to_string(&v).expect("serialize");
            assert_eq!(json, format!("\"{}\"", v.as_str()));
            assert_eq!(
                serde_json::from_str::<Vendor>(&json).expect("deserialize"),
                v
            );
            assert_eq!(Vendor::parse(v.as_str()), Some(v));
            assert_eq!(v.default_options().vendor(), v);
        }
        assert_eq!(
            Vendor::ALL.map(Vendor::as_str),
            ["opsport", "buktor", "px360", "latrexa"]
        );
        assert_eq!(Vendor::parse("Opsport"), None);
        assert!(serde_json::from_str::<Vendor>("\"carrier-pigeon\"").is_err());
    }

    #[test]
    fn options_are_read_for_their_vendor_only() {
        let table = serde_json::json!({"walk_in_registrations": true});
        let o = VendorOptions::deserialize_for(Vendor::Latrexa, &table).expect("latrexa");
        assert_eq!(o.vendor(), Vendor::Latrexa);
        assert!(matches!(o, VendorOptions::Latrexa(l) if l.walk_in_registrations));
        // OpsPort has no such key, and refuses it.
        assert!(VendorOptions::deserialize_for(Vendor::Opsport, &table).is_err());
        let empty = serde_json::json!({});
        for v in Vendor::ALL {
            let o = VendorOptions::deserialize_for(v, &empty).expect("defaults");
            assert_eq!(o, v.default_options(), "{v}");
        }
    }
}
