//! The kinds of the configuration as types: a destination's `type` ([`DestinationKind`]) and
//! what a route sends ([`PayloadKind`]). Their names are the configuration's spelling, the
//! metric labels and what `check` lists; a vendor is one [`Vendor`] arm in both, so adding
//! one adds no arm here.
//!
//! This module imports nothing above it: the destination list (`crate::destination`) and the
//! engine build on it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::OnceLock;
use transforms::dest::Vendor;

/// A destination's `type`, as [`crate::destination::DestinationConfig::kind`] gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DestinationKind {
    /// `mllp`: an HL7 v2 peer over MLLP/TCP.
    Mllp,
    /// `webhook`: HTTP POST of JSON, optionally signed.
    Webhook,
    /// `file`: one file per delivery in a local folder.
    File,
    /// `sftp`: one file per delivery on an SFTP server.
    Sftp,
    /// `fhir`: a FHIR R4 server.
    Fhir,
    /// `worklist`: DICOM Modality Worklist items.
    Worklist,
    /// `dicom`: a PACS, by C-STORE.
    Dicom,
    /// A cloud clinic API (`opsport`, `buktor`, `px360`, `latrexa`).
    Vendor(Vendor),
}

impl DestinationKind {
    /// Every kind: the others, then the vendors.
    pub fn all() -> impl Iterator<Item = DestinationKind> {
        [
            DestinationKind::Mllp,
            DestinationKind::Webhook,
            DestinationKind::File,
            DestinationKind::Sftp,
            DestinationKind::Fhir,
            DestinationKind::Worklist,
            DestinationKind::Dicom,
        ]
        .into_iter()
        .chain(Vendor::ALL.map(DestinationKind::Vendor))
    }

    /// The `type` as configuration spells it; also the `type` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Mllp => "mllp",
            DestinationKind::Webhook => "webhook",
            DestinationKind::File => "file",
            DestinationKind::Sftp => "sftp",
            DestinationKind::Fhir => "fhir",
            DestinationKind::Worklist => "worklist",
            DestinationKind::Dicom => "dicom",
            DestinationKind::Vendor(v) => v.as_str(),
        }
    }

    /// The kind whose `type` is `name`, if there is one.
    pub fn parse(name: &str) -> Option<DestinationKind> {
        DestinationKind::all().find(|k| k.as_str() == name)
    }

    /// The payload this kind sends unless a route says otherwise.
    pub fn default_payload(self) -> PayloadKind {
        match self {
            DestinationKind::Mllp | DestinationKind::File | DestinationKind::Sftp => {
                PayloadKind::Hl7
            }
            DestinationKind::Webhook | DestinationKind::Worklist => PayloadKind::Canonical,
            DestinationKind::Fhir => PayloadKind::Fhir,
            DestinationKind::Dicom => PayloadKind::Dicom,
            DestinationKind::Vendor(v) => PayloadKind::Vendor(v),
        }
    }
}

impl std::fmt::Display for DestinationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a route sends (`payload` in a `[[route]]`; the outbox's `payload` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadKind {
    /// `hl7`: the HL7 v2 message exactly as received.
    Hl7,
    /// `canonical`: the canonical event as JSON (`transforms::model::Event`).
    Canonical,
    /// `fhir`: a FHIR R4 transaction Bundle with conditional PUTs by identifier.
    Fhir,
    /// `dicom`: a stored DICOM object, by reference (what a `dicom_store` source received),
    /// for a `dicom` destination to send by C-STORE.
    Dicom,
    /// A cloud clinic API's own requests, rendered by `transforms::dest::render`.
    Vendor(Vendor),
}

impl PayloadKind {
    /// Every payload: `hl7`, `canonical`, `fhir`, the vendors, `dicom`.
    pub fn all() -> impl Iterator<Item = PayloadKind> {
        [PayloadKind::Hl7, PayloadKind::Canonical, PayloadKind::Fhir]
            .into_iter()
            .chain(Vendor::ALL.map(PayloadKind::Vendor))
            .chain([PayloadKind::Dicom])
    }

    /// The payload's name, as configuration spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadKind::Hl7 => "hl7",
            PayloadKind::Canonical => "canonical",
            PayloadKind::Fhir => "fhir",
            PayloadKind::Dicom => "dicom",
            PayloadKind::Vendor(v) => v.as_str(),
        }
    }

    /// The payload named `name`, if there is one.
    pub fn parse(name: &str) -> Option<PayloadKind> {
        PayloadKind::all().find(|k| k.as_str() == name)
    }

    /// Every name, in [`PayloadKind::all`]'s order (what an unknown name is told).
    pub fn names() -> &'static [&'static str] {
        static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
        NAMES.get_or_init(|| PayloadKind::all().map(PayloadKind::as_str).collect())
    }

    /// The vendor of a cloud clinic payload.
    pub fn vendor(self) -> Option<Vendor> {
        match self {
            PayloadKind::Vendor(v) => Some(v),
            PayloadKind::Hl7 | PayloadKind::Canonical | PayloadKind::Fhir | PayloadKind::Dicom => {
                None
            }
        }
    }
}

impl std::fmt::Display for PayloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for PayloadKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for PayloadKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        PayloadKind::parse(&name)
            .ok_or_else(|| serde::de::Error::unknown_variant(&name, PayloadKind::names()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_names_round_trip_their_serde_spelling() {
        assert_eq!(
            PayloadKind::names(),
            [
                "hl7",
                "canonical",
                "fhir",
                "opsport",
                "buktor",
                "px360",
                "latrexa",
                "dicom"
            ]
        );
        for k in PayloadKind::all() {
            let json = serde_json::to_string(&k).expect("serialize");
            assert_eq!(json, format!("\"{k}\""));
            assert_eq!(serde_json::from_str::<PayloadKind>(&json).expect("read"), k);
            assert_eq!(PayloadKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(
            PayloadKind::parse("px360"),
            Some(PayloadKind::Vendor(Vendor::Px360))
        );
        let err = serde_json::from_str::<PayloadKind>("\"xml\"")
            .expect_err("unknown")
            .to_string();
        assert!(err.contains("unknown variant `xml`"), "{err}");
        assert!(err.contains("`canonical`"), "{err}");
    }

    #[test]
    fn destination_kinds_are_unique_and_parse_back() {
        let names: Vec<&str> = DestinationKind::all()
            .map(DestinationKind::as_str)
            .collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for k in DestinationKind::all() {
            assert_eq!(DestinationKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(DestinationKind::parse("carrier-pigeon"), None);
        assert_eq!(
            DestinationKind::Vendor(Vendor::Latrexa).default_payload(),
            PayloadKind::Vendor(Vendor::Latrexa)
        );
        assert_eq!(
            DestinationKind::Webhook.default_payload(),
            PayloadKind::Canonical
        );
    }
}
