//! Practitioners (doctors, nurses, technicians) and locations (clinics, rooms, beds), as a
//! message references them and, with their profile fields, as a master file describes them.

use serde::{Deserialize, Serialize};

use super::{Address, Coded, Gender, HumanName, Timestamp};

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
    /// The name in a second language or script (the STF-3 repetition written in Arabic
    /// script), from a staff master file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alternate_name: Option<HumanName>,
    /// Administrative gender (STF-5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<Gender>,
    /// Date of birth (STF-6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<Timestamp>,
    /// National id number (STF-2 repetition with identifier type `NI`/`NN…`, v2.7+ STF-40).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub national_id: Option<String>,
    /// Branch or facility the practitioner belongs to (STF-7 department's facility, else
    /// MSH-4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// General-ledger account number (STF-2 repetition with identifier type `AN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_number: Option<String>,
    /// Cost centre (ORG-4 practitioner org unit, else STF-7 department code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_centre: Option<String>,
    /// Free text about the practitioner (STF-8 job title).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// E-mail address (STF-15, or an STF-10 repetition of type `Internet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone number (first telephone repetition of STF-10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Whether the practitioner is active (STF-7 active/inactive flag; MFE-1 `MDC` sets false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// Codes of the clinics or departments the practitioner works in (ORG-2, else STF-7).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clinic_codes: Vec<String>,
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
    /// Kind of location as text (LOC-3 location type: `Clinic`, `Outpatient`, `Ward`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_type: Option<String>,
    /// General-ledger account number (LCH characteristic `ACCTNO`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_number: Option<String>,
    /// Cost centre (LDP-1 department code, else LCH characteristic `COSTCTR`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_centre: Option<String>,
    /// Postal address (LOC-5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    /// Phone number (first telephone repetition of LOC-6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// E-mail address (the LOC-6 repetition of type `Internet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Whether the location is active (LDP-6 active/inactive flag; MFE-1 `MDC` sets false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
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

/// A bookable or orderable service or procedure (a charge description master entry, HL7
/// CDM/PRC; an orderable test of a test/observation master file, HL7 OM1).
///
/// JSON: `{"code": "CONS-PED", "name": "Paediatric consultation", "duration_minutes": 20,
/// "price": "250.00", "currency": "SAR"}`
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Service {
    /// The HIS code (CDM-1 primary key, OM1-2 producer's test id).
    pub code: String,
    /// Display name (CDM-3 short description, else CDM-1 text; OM1-2 text, else OM1-9
    /// preferred report name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Description (CDM-4 long description; OM1-11 preferred long name, else OM1-6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How long the service takes, in minutes: no HL7 master file segment carries it, so it
    /// comes from FHIR (`HealthcareService`) or JSON sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_minutes: Option<u32>,
    /// Price (PRC-5.1 amount of the record's first PRC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<super::Decimal>,
    /// Currency of the price (PRC-5.1 denomination).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Department or specialty that performs it (PRC-3 department of the first PRC; OM1-16
    /// producing department).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<Coded>,
    /// Whether the service can be booked or charged (CDM-8 active/inactive flag; MFE-1 `MDC`
    /// sets false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// What kind of test or observation it is (OM1-18 nature, HL7 table 0174, as words:
    /// `Atomic test`, `Profile or battery`...), from a test/observation master file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nature: Option<String>,
    /// Whether it needs a specimen (OM1-4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specimen_required: Option<bool>,
    /// The specimen it is done on (OM4-6 of the record's first OM4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specimen: Option<Coded>,
    /// The tests a battery or profile is made of (OM5-2), in message order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<Coded>,
}
