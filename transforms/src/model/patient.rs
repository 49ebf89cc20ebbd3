//! The patient and their identifiers.

use serde::{Deserialize, Serialize};

use super::{is_false, Address, Coded, HumanName, Observation, Phone, Practitioner, Timestamp};

/// What kind of identifier an [`Identifier`] is (from HL7 CX-5 identifier type code, table 0203).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentifierKind {
    /// Medical record number (`MR`).
    Mrn,
    /// Patient number in the HIS (`PI`, `PN`, `PT`): OpsPort's `patientNo`.
    PatientNumber,
    /// National or resident id (`NI`, `NN…`, `NH`, `SS`, `SB`, `CZ`): OpsPort's `nationalID`.
    NationalId,
    /// Passport number (`PPN`).
    Passport,
    /// Account number (`AN`), used by the prior identifiers of a merge.
    AccountNumber,
    /// Anything else or no type code.
    Other,
}

/// An identifier with its type and issuer (HL7 CX).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identifier {
    /// The identifier itself (CX-1).
    pub value: String,
    /// What kind of identifier it is.
    pub kind: IdentifierKind,
    /// The type code as sent (CX-5), kept when it says more than [`IdentifierKind`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_code: Option<String>,
    /// Who issued it (CX-4.1, namespace id), e.g. `HIS` or `MOI`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigning_authority: Option<String>,
}

/// Administrative gender (HL7 table 0001).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gender {
    /// `M`.
    Male,
    /// `F`.
    Female,
    /// `O`.
    Other,
    /// `U`.
    Unknown,
    /// `A` (ambiguous).
    Ambiguous,
    /// `N` (not applicable).
    NotApplicable,
}

/// A patient as the HIS describes them.
///
/// JSON form (absent fields left out):
/// `{"identifiers": [{"value": "P-10928", "kind": "mrn", "assigning_authority": "HIS"}],
///   "name": {"family": "Khalid", "given": "Yousef"}, "birth_date": "1994-09-20",
///   "gender": "male", "phones": [{"number": "+966502222222", "use": "mobile"}]}`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patient {
    /// Every identifier sent, in message order (see [`Patient::primary_identifier`] for the key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifiers: Vec<Identifier>,
    /// The primary name.
    #[serde(default, skip_serializing_if = "HumanName::is_empty")]
    pub name: HumanName,
    /// The name in a second script/language (e.g. Arabic next to Latin), when sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub second_language_name: Option<HumanName>,
    /// Every further PID-5 name (aliases, maiden, display, nickname…), in message order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_names: Vec<OtherName>,
    /// Date (and possibly time) of birth (PID-7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<Timestamp>,
    /// Administrative gender (PID-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<Gender>,
    /// Telephone numbers (PID-13 home, PID-14 business).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<Phone>,
    /// E-mail address: the first PID-13/PID-14/PID-40 repetition with XTN-2 `NET` or XTN-3
    /// `Internet`/`X.400` (XTN-4), else the first XTN-4 of a phone repetition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Every further e-mail address of PID-13/PID-14/PID-40, in message order, without
    /// duplicates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_emails: Vec<String>,
    /// Home address (first PID-11 repetition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    /// Every further PID-11 address, in message order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_addresses: Vec<Address>,
    /// Nationality (PID-28, else citizenship PID-26).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nationality: Option<Coded>,
    /// Preferred language (PID-15).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<Coded>,
    /// Marital status (PID-16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marital_status: Option<Coded>,
    /// ABO/Rh blood group as text, e.g. `O+` (see the ADT mapping for where it comes from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blood_type: Option<String>,
    /// VIP patient (PV1-16 VIP indicator present and not `N`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub vip: bool,
    /// Diagnoses (DG1 segments), in message order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnoses: Vec<Diagnosis>,
    /// Next of kin and other contacts (NK1 segments), in message order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<Contact>,
    /// Allergies (AL1 segments, or IAM in ADT^A60), in message order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allergies: Vec<Allergy>,
    /// Date of death, when the patient died (PID-29).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub death_time: Option<Timestamp>,
    /// Procedures (PR1 segments), in message order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub procedures: Vec<Procedure>,
    /// Observations about the patient sent with an ADT message (every OBX of it: height,
    /// weight, blood group…), in message order; FHIR Observations of the patient.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub observations: Vec<Observation>,
    /// Insurance plans (IN1 segments), in message order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub coverages: Vec<Coverage>,
    /// The patient's account number (PID-18, CX-1): FHIR `Account.identifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_number: Option<String>,
    /// Who pays for the account (GT1 segments), in message order; FHIR `Account.guarantor`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guarantors: Vec<Guarantor>,
    /// Primary care provider (PD1-4; its repetitions are one doctor's identifiers, read as
    /// PV1-7's are); FHIR `Patient.generalPractitioner`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_care_provider: Option<Practitioner>,
    /// The patient's primary facility (PD1-3, first repetition); FHIR
    /// `Patient.generalPractitioner` (an Organization), as the IG maps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_facility: Option<Facility>,
    /// Handicap (PD1-6, table 0295); FHIR extension `patient-disability`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disability: Option<Coded>,
    /// Publicity code (PD1-11, table 0215: what may be published about the patient).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publicity_code: Option<Coded>,
    /// Protection indicator (PD1-12: `Y` the patient's information is to be protected, `N`
    /// not), absent when not sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected: Option<bool>,
    /// Place of worship (PD1-14, XON-1); FHIR extension `patient-congregation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place_of_worship: Option<String>,
}

/// An organization named by an HL7 XON (PD1-3): its id and name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Facility {
    /// The organization's id (XON-10 organization identifier, else XON-3 id number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The organization's name (XON-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Patient {
    /// The identifier used as this patient's key: the first MRN, else the first patient number,
    /// else the first identifier of any kind.
    pub fn primary_identifier(&self) -> Option<&Identifier> {
        self.identifier_of(IdentifierKind::Mrn)
            .or_else(|| self.identifier_of(IdentifierKind::PatientNumber))
            .or_else(|| self.identifiers.first())
    }

    /// The first identifier of the given kind.
    pub fn identifier_of(&self, kind: IdentifierKind) -> Option<&Identifier> {
        self.identifiers.iter().find(|i| i.kind == kind)
    }
}

/// An allergy or intolerance (HL7 AL1, IAM; FHIR AllergyIntolerance).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Allergy {
    /// The allergen (AL1-3 / IAM-3).
    pub allergen: Coded,
    /// Allergen type (AL1-2 / IAM-2, HL7 table 0127: `DA` drug, `FA` food, `EA`
    /// environmental…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Coded>,
    /// Severity (AL1-4 / IAM-4, HL7 table 0128: `SV` severe, `MO` moderate, `MI` mild).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Coded>,
    /// Reactions (AL1-5 / IAM-5, every repetition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<String>,
    /// When it was identified (AL1-6 / IAM-11 onset date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identified: Option<Timestamp>,
    /// What the sender does with this allergy (IAM-6, HL7 table 0206: `A` add, `U` update,
    /// `D` delete, `X` no change); absent for AL1, which always states the current list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// A further name of the patient (a PID-5 repetition beside the primary and second-language
/// names) with its type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OtherName {
    /// The name.
    pub name: HumanName,
    /// XPN-7 name type (HL7 table 0200: `A` alias, `M` maiden, `D` display, `N` nickname,
    /// `L` legal, `B` birth, `S` coded pseudo-name, `T`/`TEMP` temporary…), as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_type: Option<String>,
}

/// A next of kin or other contact person of the patient (HL7 NK1; FHIR `Patient.contact`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Contact {
    /// Name (NK1-2, first repetition).
    #[serde(default, skip_serializing_if = "HumanName::is_empty")]
    pub name: HumanName,
    /// Relationship to the patient (NK1-3, HL7 table 0063: `SPO` spouse, `MTH` mother…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relationship: Option<Coded>,
    /// Contact role (NK1-7, HL7 table 0131: `C` emergency contact, `N` next of kin…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Coded>,
    /// Phones (NK1-5 home, NK1-6 business; every repetition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<Phone>,
    /// Address (NK1-4, first repetition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
}

/// A diagnosis (HL7 DG1; FHIR Condition).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Diagnosis {
    /// The diagnosis code (DG1-3), e.g. ICD-10; DG1-4 (description, v2.3) as its text when
    /// DG1-3 has none.
    pub code: Coded,
    /// Diagnosis type (DG1-6, HL7 table 0052: `A` admitting, `W` working, `F` final).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis_type: Option<Coded>,
    /// When it was diagnosed (DG1-5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Timestamp>,
    /// The visit it was made in (PV1-19 of the message), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visit_number: Option<String>,
}

/// A procedure performed on the patient (HL7 PR1; FHIR Procedure).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Procedure {
    /// The procedure code (PR1-3); PR1-4 (description, deprecated) as its text when PR1-3 has
    /// none.
    pub code: Coded,
    /// When it was performed (PR1-5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Timestamp>,
    /// Who performed it (PR1-12 procedure practitioner, else PR1-11 surgeon).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub performer: Option<Practitioner>,
    /// The visit it was performed in (PV1-19 of the message), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visit_number: Option<String>,
}

/// The person or organization financially responsible for the patient's account (HL7 GT1;
/// FHIR `Account.guarantor`, whose party is the Patient, a RelatedPerson or an Organization).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Guarantor {
    /// Guarantor number (GT1-2, CX-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    /// Name (GT1-3, first repetition).
    #[serde(default, skip_serializing_if = "HumanName::is_empty")]
    pub name: HumanName,
    /// Address (GT1-5, first repetition with content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    /// Phones (GT1-6 home, GT1-7 business; every repetition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<Phone>,
    /// Date of birth (GT1-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<Timestamp>,
    /// Administrative sex (GT1-9, table 0001).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<Gender>,
    /// Relationship to the patient (GT1-11, table 0063: `SEL` self, `PAR` parent…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relationship: Option<Coded>,
    /// From when the guarantor is responsible (GT1-13).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Timestamp>,
    /// Until when (GT1-14).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Timestamp>,
    /// The organization that is the guarantor (GT1-21, XON-1), when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_name: Option<String>,
}

impl Guarantor {
    /// True when the guarantor is the patient (GT1-11 `SEL`).
    pub fn is_self(&self) -> bool {
        self.relationship
            .as_ref()
            .and_then(|r| r.code.as_deref())
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("SEL"))
    }
}

/// An insurance plan of the patient (HL7 IN1; FHIR Coverage).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Coverage {
    /// The plan (IN1-2 health plan id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Coded>,
    /// The insurance company's id (IN1-3, CX-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_id: Option<String>,
    /// The insurance company's name (IN1-4, XON-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_name: Option<String>,
    /// Group number (IN1-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_number: Option<String>,
    /// Policy number (IN1-36): the subscriber's id with the insurer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_number: Option<String>,
    /// Plan effective date (IN1-12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Timestamp>,
    /// Plan expiration date (IN1-13).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Timestamp>,
    /// The insured's relationship to the patient (IN1-17, HL7 table 0063: `SEL` self…; else
    /// IN2-72, the patient's relationship to the insured, table 0344).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relationship: Option<Coded>,
    /// Plan type (IN1-15).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_type: Option<Coded>,
    /// The insurance company's address (IN1-5, first repetition with content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_address: Option<Address>,
    /// The insured's group employer id (IN1-10, CX-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employer_id: Option<String>,
    /// The insured's group employer name (IN1-11, XON-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employer_name: Option<String>,
    /// The insured's id number with the insurer (IN1-49, CX-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insured_id: Option<String>,
    /// The patient's member number in the plan (IN2-61, CX-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_number: Option<String>,
    /// The insured person, when named (IN1-16 name, IN1-18 birth date, IN1-19 address, IN1-43
    /// sex, IN2-63 home phone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insured: Option<Insured>,
}

/// The person an insurance plan is in the name of (HL7 IN1-16 and its neighbours; FHIR
/// `Coverage.subscriber`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Insured {
    /// Name (IN1-16, first repetition).
    #[serde(default, skip_serializing_if = "HumanName::is_empty")]
    pub name: HumanName,
    /// Date of birth (IN1-18).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<Timestamp>,
    /// Administrative sex (IN1-43).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<Gender>,
    /// Address (IN1-19, first repetition with content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    /// Phones (IN2-63 home, every repetition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<Phone>,
}
