//! Practitioners (doctors, nurses, technicians) and locations (clinics, rooms, beds).

use serde::{Deserialize, Serialize};

use super::{Coded, HumanName};

/// A practitioner as referenced by a message (HL7 XCN: PV1-7, AIP-3, ORC-12, OBR-16, FT1-21).
///
/// JSON: `{"code": "DOC-SARAH-04", "licence_number": "LIC-PED-9988",
/// "name": {"family": "Al-Otaibi", "given": "Sarah", "prefix": "Dr"}, "specialisation": {...}}`
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Practitioner {
    /// The HIS code of the practitioner (XCN-1 of the repetition without a licence type code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Licence number (XCN-1 where XCN-13 is `LN` or `MD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licence_number: Option<String>,
    /// Professional registration number (XCN-1 where XCN-13 is `RN`, `NPI`, `PRN`, `DEA`…
    /// registration-like codes; see the mapping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_number: Option<String>,
    /// The name (XCN-2 to XCN-6).
    #[serde(default, skip_serializing_if = "HumanName::is_empty")]
    pub name: HumanName,
    /// Specialty or role in this context (e.g. AIP-4 resource type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specialisation: Option<Coded>,
}

impl Practitioner {
    /// True when nothing identifies or names the practitioner.
    pub fn is_empty(&self) -> bool {
        self.code.is_none()
            && self.licence_number.is_none()
            && self.registration_number.is_none()
            && self.name.is_empty()
    }
}

/// A place of care (HL7 PL: PV1-3, AIL-3): clinic or ward, with room and bed when given.
///
/// JSON: `{"code": "CLN-PED-01", "name": "General Pediatric Clinic", "branch": "RUH",
/// "floor": "1", "specialisation": {"code": "PED"}}`
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Location {
    /// Point of care: the clinic or ward code (PL-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Description (PL-9, or the AIL-3 text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Room (PL-2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Bed (PL-3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bed: Option<String>,
    /// Facility or branch (PL-4.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Building (PL-7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub building: Option<String>,
    /// Floor (PL-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<String>,
    /// Clinical specialty served here (PV1-10 hospital service, AIL-4 location type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specialisation: Option<Coded>,
    /// Bed status (NPU-2, HL7 table 0116: `C` closed, `H` housekeeping, `O` occupied, `U`
    /// unoccupied, `K` contaminated, `I` isolated), for a bed status update (ADT^A20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bed_status: Option<Coded>,
}

impl Location {
    /// True when nothing identifies or names the location.
    pub fn is_empty(&self) -> bool {
        self.code.is_none()
            && self.name.is_none()
            && self.room.is_none()
            && self.bed.is_none()
            && self.branch.is_none()
            && self.building.is_none()
            && self.floor.is_none()
    }
}
