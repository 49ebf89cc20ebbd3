//! PX360: the HIS patient-data JSON of the vendor's HIS integration document
//! (`FetchPatientDataTimeStampList` with one demographic object, the visit timeline in
//! `FetchPatientDataTimeStampVisitDataList`, `Code` and `Status`).
//!
//! The same types serve three sides: [`render`] builds the body from canonical patient,
//! encounter and visit events; [`validate`] is the check PX360 runs on arrival (shared by the
//! sandbox and by the webhook source that takes this JSON from HIS systems); and
//! `from_json::px360` turns a received body back into a canonical event.
//!
//! The visit type -> journey stage table is configuration ([`Px360Options`]), with the seed's
//! table as its default.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{MappingError, Rendered};
use crate::journey::Timeline;
use crate::model::{ContactUse, Encounter, Event, EventKind, IdentifierKind, Patient, Timestamp};

/// Path of the PX360 HIS patient-data endpoint, relative to the destination's base URL.
pub const PATH: &str = "/api/simulator/his-patient-data/";

/// `Type` of the demographic object, as the HIS sends it.
pub const DEMOGRAPHIC_TYPE: &str = "Patient Demographic details";

/// Date-time format of `AdmitDate`, `DischargeDate` and `BillDate` (`05-Jun-2025 11:06`).
pub const DATE_TIME_FORMAT: &str = "%d-%b-%Y %H:%M";

/// Date format of `DOB` (`1990-01-15`).
pub const DOB_FORMAT: &str = "%Y-%m-%d";

/// The whole HIS patient-data body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HisPatientData {
    /// One demographic object per admission (the seed always sends exactly one).
    #[serde(rename = "FetchPatientDataTimeStampList")]
    pub demographics: Vec<HisDemographic>,
    /// The visit timeline, in time order.
    #[serde(rename = "FetchPatientDataTimeStampVisitDataList")]
    pub visits: Vec<HisVisit>,
    /// Result code, `200` on success.
    #[serde(rename = "Code")]
    pub code: i64,
    /// Result status, `Success`.
    #[serde(rename = "Status")]
    pub status: String,
}

/// The demographic object, with the seed's exact keys; every value is text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HisDemographic {
    /// Always [`DEMOGRAPHIC_TYPE`].
    #[serde(rename = "Type", default = "demographic_type")]
    pub kind: String,
    /// HIS patient number (MRN).
    #[serde(rename = "PatientID")]
    pub patient_id: String,
    /// Admission / visit number.
    #[serde(rename = "AdmissionID")]
    pub admission_id: String,
    /// Hospital number.
    #[serde(rename = "HospitalID")]
    pub hospital_id: String,
    /// Hospital code name, e.g. `ALH-main`.
    pub hospital_name: String,
    /// Admission time, [`DATE_TIME_FORMAT`].
    pub admit_date: String,
    /// Discharge time, [`DATE_TIME_FORMAT`]; absent while admitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discharge_date: Option<String>,
    /// National id number.
    #[serde(rename = "SSN", default, skip_serializing_if = "Option::is_none")]
    pub ssn: Option<String>,
    /// Full name.
    pub patient_name: String,
    /// Mobile number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile_no: Option<String>,
    /// `Male` / `Female`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<String>,
    /// Age in years at admission, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_age: Option<String>,
    /// Nationality, e.g. `Saudi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_nationality: Option<String>,
    /// Birth date, [`DOB_FORMAT`].
    #[serde(rename = "DOB", default, skip_serializing_if = "Option::is_none")]
    pub dob: Option<String>,
    /// Attending doctor code.
    #[serde(
        rename = "ConsultantID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub consultant_id: Option<String>,
    /// Attending doctor name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_doctor: Option<String>,
    /// Insurer name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insurance_company_name: Option<String>,
    /// `Insurance` / `Cash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bill_type: Option<String>,
    /// `Yes` / `No`.
    #[serde(rename = "IsVIP", default, skip_serializing_if = "Option::is_none")]
    pub is_vip: Option<String>,
}

fn demographic_type() -> String {
    DEMOGRAPHIC_TYPE.to_owned()
}

/// One entry of the visit timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HisVisit {
    /// HIS visit type, e.g. `Consultation`, `Prescribed Drugs`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// When it happened, [`DATE_TIME_FORMAT`].
    #[serde(rename = "BillDate")]
    pub bill_date: String,
}

/// PX360 options: the visit type table, the department table and the journey stage table,
/// all configuration data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Px360Options {
    /// Timeline step -> HIS visit `Type` (the one visit type table): the step kinds of
    /// [`crate::journey::StepKind`] by name (`consultation`, `lab_result`...) and the site's
    /// `ZVT` steps by their snake_case text (`prescribed_drugs`). Entries given in the
    /// configuration replace or add to [`default_visit_types`]; a step without an entry goes
    /// out with the HIS's own text.
    #[serde(
        default = "default_visit_types",
        deserialize_with = "merged_visit_types"
    )]
    pub visit_types: BTreeMap<String, String>,
    /// HIS visit `Type` -> PX360 journey stage (the document's table by default); documents
    /// which visit types complete a stage.
    #[serde(default = "default_journey_stages")]
    pub journey_stages: BTreeMap<String, String>,
    /// Diagnostic service section (OBR-24) or filler application (MSH-5 of an order, MSH-3
    /// of a result) -> department (`lab`, `radiology`); added to
    /// [`crate::journey::default_departments`].
    #[serde(
        default = "crate::journey::default_departments",
        deserialize_with = "merged_departments"
    )]
    pub departments: BTreeMap<String, crate::journey::Department>,
    /// `HospitalID` to send; defaults to the sending facility of the source message.
    #[serde(default)]
    pub hospital_id: Option<String>,
    /// `HospitalName` to send; defaults to the sending facility, then the encounter's branch.
    #[serde(default)]
    pub hospital_name: Option<String>,
    /// Configured field mapping applied to the rendered body.
    #[serde(default)]
    pub mapping: crate::mapping::FieldMapping,
}

fn merged_visit_types<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let mut table = default_visit_types();
    table.extend(BTreeMap::<String, String>::deserialize(d)?);
    Ok(table)
}

fn merged_departments<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, crate::journey::Department>, D::Error> {
    let mut table = crate::journey::default_departments();
    table.extend(BTreeMap::<String, crate::journey::Department>::deserialize(
        d,
    )?);
    Ok(table)
}

impl Default for Px360Options {
    fn default() -> Self {
        Self {
            visit_types: default_visit_types(),
            journey_stages: default_journey_stages(),
            departments: crate::journey::default_departments(),
            hospital_id: None,
            hospital_name: None,
            mapping: Default::default(),
        }
    }
}

impl Px360Options {
    /// Every problem in the options, with its key path (for `switchboard check`): an empty
    /// visit type, and the field mapping's problems.
    pub fn validate(&self) -> Vec<crate::mapping::ConfigProblem> {
        let mut problems: Vec<crate::mapping::ConfigProblem> = self
            .visit_types
            .iter()
            .filter(|(_, his)| his.trim().is_empty())
            .map(|(kind, _)| crate::mapping::ConfigProblem {
                key: format!("visit_types.{kind}"),
                message: "a visit type may not be empty".into(),
            })
            .collect();
        problems.extend(self.mapping.validate_at("mapping"));
        problems
    }

    /// The journey stage of a HIS visit type, if the table has one.
    pub fn journey_stage(&self, his_type: &str) -> Option<&str> {
        self.journey_stages.get(his_type).map(String::as_str)
    }

    /// The canonical visit event of a HIS visit type (reverse of `visit_types`; a site step's
    /// key first, as `ZVT` steps are read).
    pub fn canonical_visit(&self, his_type: &str) -> Option<&str> {
        let site = crate::journey::snake(his_type);
        self.visit_types
            .get_key_value(&site)
            .filter(|(_, v)| v.as_str() == his_type)
            .or_else(|| {
                self.visit_types
                    .iter()
                    .find(|(_, v)| v.as_str() == his_type)
            })
            .map(|(k, _)| k.as_str())
    }

    /// The visit `Type` PX360 gets for a timeline step: the table's entry, else the HIS's
    /// own text, else the kind's name in words (never a snake_case name).
    pub fn visit_type(&self, step: &crate::journey::JourneyStep) -> String {
        if let Some(t) = self.visit_types.get(&step.table_key()) {
            return t.clone();
        }
        if let Some(text) = step.text.as_deref().filter(|t| !t.trim().is_empty()) {
            return text.to_owned();
        }
        words(step.kind.as_str())
    }
}

/// `lab_order` -> `Lab Order`.
fn words(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Default timeline step -> HIS visit type table: the document's visit types where a
/// standard HL7 step is one of them (the first attending doctor is the `Consultation`, a
/// later one `Doctor Visited`, results the `Clinical Condtion`, the admit reason the
/// `ChiefComplaint`, a prescription (RDE) and its dispense (RDS) `Prescribed Drugs`, the
/// document's pharmacy stage), a plain name for the other standard steps, and the document's five
/// types under the keys their `ZVT` text gives. Orders and results of other departments and
/// charges have no entry: they go out with the HIS's own text (the order's or charge's name).
pub fn default_visit_types() -> BTreeMap<String, String> {
    [
        ("registration", "Registration"),
        ("admission", "Admission"),
        ("preadmission", "Pre-admission"),
        ("chief_complaint", "ChiefComplaint"),
        ("consultation", "Consultation"),
        ("doctor_visit", "Doctor Visited"),
        ("transfer", "Transfer"),
        ("lab_order", "Lab Order"),
        ("lab_result", "Clinical Condtion"),
        ("radiology_order", "Radiology Order"),
        ("radiology_result", "Clinical Condtion"),
        ("discharge", "Discharge"),
        ("prescription", "Prescribed Drugs"),
        ("dispense", "Prescribed Drugs"),
        // ZVT steps, by the snake_case of the document's types.
        ("doctor_visited", "Doctor Visited"),
        ("clinical_condtion", "Clinical Condtion"),
        ("chiefcomplaint", "ChiefComplaint"),
        ("prescribed_drugs", "Prescribed Drugs"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Default HIS visit type -> journey stage table, from the document (spelling of
/// `Clinical Condtion` included, since that is what the HIS sends).
pub fn default_journey_stages() -> BTreeMap<String, String> {
    [
        ("Consultation", "MD Consultation"),
        ("Doctor Visited", "MD Visit"),
        ("Clinical Condtion", "Clinical Assessment"),
        ("ChiefComplaint", "Patient Assessment"),
        ("Prescribed Drugs", "Pharmacy"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// PX360's answer to a body that fails [`validate`]: `details` maps each field to its messages.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("Invalid HIS data format")]
pub struct HisValidationError {
    /// Field -> list of messages; nested lists hold one object per array element.
    pub details: Map<String, Value>,
}

impl HisValidationError {
    /// The HTTP 400 body: `{"error":"Invalid HIS data format","details":{...}}`.
    pub fn to_body(&self) -> Value {
        json!({"error": "Invalid HIS data format", "details": self.details})
    }
}

const REQUIRED: &str = "This field is required.";

const REQUIRED_DEMOGRAPHIC: [&str; 6] = [
    "PatientID",
    "AdmissionID",
    "HospitalID",
    "HospitalName",
    "AdmitDate",
    "PatientName",
];

/// Checks a received body the way PX360's serializer does and returns it typed.
///
/// Required: `FetchPatientDataTimeStampList` (at least one object with `PatientID`,
/// `AdmissionID`, `HospitalID`, `HospitalName`, `AdmitDate`, `PatientName`),
/// `FetchPatientDataTimeStampVisitDataList` (each with `Type`, `BillDate`), `Code`, `Status`.
/// Dates must match [`DATE_TIME_FORMAT`] and `DOB` [`DOB_FORMAT`]. Every problem is reported.
///
/// # Errors
/// [`HisValidationError`] listing every field in error, in PX360's format.
pub fn validate(body: &Value) -> Result<HisPatientData, HisValidationError> {
    let mut details = Map::new();
    let Some(obj) = body.as_object() else {
        details.insert(
            "non_field_errors".into(),
            json!(["Invalid data. Expected a dictionary."]),
        );
        return Err(HisValidationError { details });
    };
    match obj.get("FetchPatientDataTimeStampList") {
        None | Some(Value::Null) => {
            details.insert("FetchPatientDataTimeStampList".into(), json!([REQUIRED]));
        }
        Some(Value::Array(items)) if items.is_empty() => {
            details.insert(
                "FetchPatientDataTimeStampList".into(),
                json!(["This list may not be empty."]),
            );
        }
        Some(Value::Array(items)) => {
            let per_item: Vec<Value> = items.iter().map(check_demographic).collect();
            if per_item
                .iter()
                .any(|e| e.as_object().is_some_and(|m| !m.is_empty()))
            {
                details.insert(
                    "FetchPatientDataTimeStampList".into(),
                    Value::Array(per_item),
                );
            }
        }
        Some(_) => {
            details.insert(
                "FetchPatientDataTimeStampList".into(),
                json!(["Expected a list of items."]),
            );
        }
    }
    match obj.get("FetchPatientDataTimeStampVisitDataList") {
        None | Some(Value::Null) => {
            details.insert(
                "FetchPatientDataTimeStampVisitDataList".into(),
                json!([REQUIRED]),
            );
        }
        Some(Value::Array(items)) => {
            let per_item: Vec<Value> = items.iter().map(check_visit).collect();
            if per_item
                .iter()
                .any(|e| e.as_object().is_some_and(|m| !m.is_empty()))
            {
                details.insert(
                    "FetchPatientDataTimeStampVisitDataList".into(),
                    Value::Array(per_item),
                );
            }
        }
        Some(_) => {
            details.insert(
                "FetchPatientDataTimeStampVisitDataList".into(),
                json!(["Expected a list of items."]),
            );
        }
    }
    match obj.get("Code") {
        None | Some(Value::Null) => {
            details.insert("Code".into(), json!([REQUIRED]));
        }
        Some(v) if v.as_i64().is_none() && v.as_str().is_none_or(|s| s.parse::<i64>().is_err()) => {
            details.insert("Code".into(), json!(["A valid integer is required."]));
        }
        Some(_) => {}
    }
    match obj.get("Status") {
        None | Some(Value::Null) => {
            details.insert("Status".into(), json!([REQUIRED]));
        }
        Some(Value::String(_)) => {}
        Some(_) => {
            details.insert("Status".into(), json!(["Not a valid string."]));
        }
    }
    if !details.is_empty() {
        return Err(HisValidationError { details });
    }
    let mut normalised = body.clone();
    if let Some(code) = normalised.get_mut("Code") {
        if let Some(n) = code.as_str().and_then(|s| s.parse::<i64>().ok()) {
            *code = json!(n);
        }
    }
    // HIS exports send some ids as numbers (`"HospitalID": 1`); the wire type is text.
    for list in [
        "FetchPatientDataTimeStampList",
        "FetchPatientDataTimeStampVisitDataList",
    ] {
        if let Some(Value::Array(items)) = normalised.get_mut(list) {
            for value in items
                .iter_mut()
                .filter_map(Value::as_object_mut)
                .flat_map(|o| o.values_mut())
            {
                if value.is_number() || value.is_boolean() {
                    *value = Value::String(value.to_string());
                }
            }
        }
    }
    serde_json::from_value(normalised).map_err(|e| {
        let mut details = Map::new();
        details.insert(
            "non_field_errors".into(),
            json!([crate::serde_reason::of_json(&e)]),
        );
        HisValidationError { details }
    })
}

fn check_demographic(item: &Value) -> Value {
    let mut errors = Map::new();
    let Some(obj) = item.as_object() else {
        errors.insert(
            "non_field_errors".into(),
            json!(["Invalid data. Expected a dictionary."]),
        );
        return Value::Object(errors);
    };
    for key in REQUIRED_DEMOGRAPHIC {
        if obj.get(key).and_then(text).is_none_or(str::is_empty) {
            errors.insert(key.into(), json!([REQUIRED]));
        }
    }
    for (key, value) in obj {
        if value.is_object() || value.is_array() {
            errors.insert(key.clone(), json!(["Not a valid string."]));
        }
    }
    for key in ["AdmitDate", "DischargeDate"] {
        if let Some(s) = obj.get(key).and_then(text).filter(|s| !s.is_empty()) {
            if chrono::NaiveDateTime::parse_from_str(s, DATE_TIME_FORMAT).is_err() {
                errors.insert(
                    key.into(),
                    json!(["Datetime has wrong format. Use one of these formats instead: DD-Mon-YYYY HH:MM."]),
                );
            }
        }
    }
    if let Some(s) = obj.get("DOB").and_then(text).filter(|s| !s.is_empty()) {
        if chrono::NaiveDate::parse_from_str(s, DOB_FORMAT).is_err() {
            errors.insert(
                "DOB".into(),
                json!(["Date has wrong format. Use one of these formats instead: YYYY-MM-DD."]),
            );
        }
    }
    Value::Object(errors)
}

fn check_visit(item: &Value) -> Value {
    let mut errors = Map::new();
    let Some(obj) = item.as_object() else {
        errors.insert(
            "non_field_errors".into(),
            json!(["Invalid data. Expected a dictionary."]),
        );
        return Value::Object(errors);
    };
    for key in ["Type", "BillDate"] {
        if obj.get(key).and_then(text).is_none_or(str::is_empty) {
            errors.insert(key.into(), json!([REQUIRED]));
        }
    }
    if let Some(s) = obj.get("BillDate").and_then(text).filter(|s| !s.is_empty()) {
        if chrono::NaiveDateTime::parse_from_str(s, DATE_TIME_FORMAT).is_err() {
            errors.insert(
                "BillDate".into(),
                json!(["Datetime has wrong format. Use one of these formats instead: DD-Mon-YYYY HH:MM."]),
            );
        }
    }
    Value::Object(errors)
}

fn text(v: &Value) -> Option<&str> {
    v.as_str()
}

/// Formats a timestamp as [`DATE_TIME_FORMAT`] (`05-Jun-2025 11:06`), local time as sent.
pub fn his_date_time(ts: &Timestamp) -> String {
    ts.naive_date_time().format(DATE_TIME_FORMAT).to_string()
}

fn age_years(birth: &Timestamp, at: &Timestamp) -> Option<u32> {
    at.naive_date().years_since(birth.naive_date())
}

/// Builds the HIS patient-data body from a patient, an encounter and the visit's timeline so
/// far.
///
/// `AdmissionID` is the visit number (else the account number); `AdmitDate` the encounter's
/// admit time, else the timeline's admission; `DischargeDate` the timeline's discharge in
/// effect (a discharged visit stays discharged whatever a later message says, until an A13),
/// else the encounter's discharge time unless an A13 cancelled the visit's discharge.
/// Each step in effect becomes a visit with [`Px360Options::visit_type`], in time order;
/// steps without a time are left out (`BillDate` is required).
///
/// # Errors
/// [`MappingError::MissingField`] without a patient identifier, visit number, admission time or
/// hospital (from the options or the sending facility).
pub fn patient_data(
    event: &Event,
    (patient, encounter): (&Patient, &Encounter),
    timeline: &Timeline,
    opts: &Px360Options,
) -> Result<HisPatientData, MappingError> {
    let patient_id = patient
        .primary_identifier()
        .ok_or_else(|| super::missing("patient.identifiers"))?
        .value
        .clone();
    let admission_id = encounter
        .visit_number
        .clone()
        .or_else(|| patient.account_number.clone())
        .ok_or_else(|| super::missing("encounter.visit_number"))?;
    let admitted = encounter.admit_time.or_else(|| timeline.admitted_at());
    let admit = admitted
        .as_ref()
        .ok_or_else(|| super::missing("encounter.admit_time"))?;
    let facility = event.source.sending_facility.clone();
    let hospital_id = opts
        .hospital_id
        .clone()
        .or_else(|| facility.clone())
        .ok_or_else(|| super::missing("options.hospital_id"))?;
    let hospital_name = opts
        .hospital_name
        .clone()
        .or(facility)
        .or_else(|| encounter.location.as_ref().and_then(|l| l.branch.clone()))
        .ok_or_else(|| super::missing("options.hospital_name"))?;
    let mobile = patient
        .phones
        .iter()
        .find(|p| p.use_ == Some(ContactUse::Mobile))
        .or_else(|| patient.phones.first())
        .map(|p| p.number.clone());
    let bill_type = if encounter.insurer.is_some() {
        Some("Insurance".to_owned())
    } else {
        encounter
            .financial_class
            .as_ref()
            .and_then(|c| c.label())
            .map(str::to_owned)
    };
    let demographic = HisDemographic {
        kind: DEMOGRAPHIC_TYPE.to_owned(),
        patient_id,
        admission_id,
        hospital_id,
        hospital_name,
        admit_date: his_date_time(admit),
        discharge_date: if timeline.is_discharged() {
            timeline.discharged_at().or(encounter.discharge_time)
        } else if timeline.discharge_cancelled() {
            None
        } else {
            encounter.discharge_time
        }
        .as_ref()
        .map(his_date_time),
        ssn: patient
            .identifier_of(IdentifierKind::NationalId)
            .map(|i| i.value.clone()),
        patient_name: patient.name.full(),
        mobile_no: mobile,
        gender: patient
            .gender
            .map(super::opsport::gender_text)
            .map(str::to_owned),
        full_age: patient
            .birth_date
            .as_ref()
            .and_then(|b| age_years(b, admit))
            .map(|a| a.to_string()),
        patient_nationality: patient
            .nationality
            .as_ref()
            .and_then(|c| c.label())
            .map(str::to_owned),
        dob: patient.birth_date.as_ref().map(Timestamp::date_iso),
        consultant_id: encounter.attending.as_ref().and_then(|p| p.code.clone()),
        primary_doctor: encounter
            .attending
            .as_ref()
            .map(|p| p.name.full())
            .filter(|n| !n.is_empty()),
        insurance_company_name: encounter.insurer.clone(),
        bill_type,
        is_vip: Some(if patient.vip { "Yes" } else { "No" }.to_owned()),
    };
    let mut steps: Vec<&crate::journey::JourneyStep> =
        timeline.active().filter(|s| s.time.is_some()).collect();
    steps.sort_by_key(|s| s.time.map(|t| t.naive_date_time()));
    let visits = steps
        .into_iter()
        .filter_map(|s| {
            Some(HisVisit {
                kind: opts.visit_type(s),
                bill_date: his_date_time(s.time.as_ref()?),
            })
        })
        .collect();
    Ok(HisPatientData {
        demographics: vec![demographic],
        visits,
        code: 200,
        status: "Success".to_owned(),
    })
}

/// What an event kind is to the PX360 patient journey: `Some(true)` an admission or discharge
/// (its body is required: without a visit number or admit time it is an error), `Some(false)`
/// a change to the admission PX360 shows (a transfer, a class or doctor change, a pending
/// transfer or discharge, a leave of absence and their cancels, tracking, demographics, an
/// order, result, prescription, dispense or charge of the visit): the admission's body again, with the timeline so
/// far, when the visit is known (a visit number and an admit time, from the event or the
/// timeline); `None` nothing for the journey.
///
/// The PX360 document (HIS patient-data format) describes one admission snapshot (demographic
/// details, admit and discharge dates, doctor, visit steps) and no event types, so every
/// change of the admission re-sends the snapshot, which PX360 takes as an update of the same
/// `AdmissionID` ("the adapter updates existing patients"). It has no delete, no merge of
/// visits or identifiers, no schedule and no master data, so deletions, merges and moves, bed
/// status, slot, appointment and master-data events send nothing (docs/ASSUMPTIONS.md, PX360).
fn journey_update(kind: EventKind) -> Option<bool> {
    match kind {
        EventKind::EncounterAdmitted | EventKind::EncounterDischarged => Some(true),
        EventKind::EncounterPreadmitted
        | EventKind::EncounterCancelled
        | EventKind::EncounterDischargeCancelled
        | EventKind::EncounterTransferred
        | EventKind::EncounterTransferCancelled
        | EventKind::EncounterClassChanged
        | EventKind::PatientDeparted
        | EventKind::PatientArrived
        | EventKind::PatientTrackingCancelled
        | EventKind::EncounterAdmitPending
        | EventKind::EncounterTransferPending
        | EventKind::EncounterDischargePending
        | EventKind::EncounterPendingCancelled
        | EventKind::PatientsSwapped
        | EventKind::LeaveOfAbsenceStarted
        | EventKind::LeaveOfAbsenceEnded
        | EventKind::LeaveOfAbsenceCancelled
        | EventKind::AttendingDoctorChanged
        | EventKind::ConsultingDoctorChanged
        | EventKind::DoctorChangeCancelled
        | EventKind::AllergiesUpdated
        | EventKind::PatientRegistered
        | EventKind::PatientUpdated
        | EventKind::PatientMerged
        | EventKind::OrderPlaced
        | EventKind::OrderCancelled
        | EventKind::OrderUpdated
        | EventKind::ResultReported
        | EventKind::ChargePosted
        | EventKind::ChargeReversed
        | EventKind::MedicationOrderCreated
        | EventKind::MedicationOrderUpdated
        | EventKind::MedicationOrderCancelled
        | EventKind::MedicationDispensed => Some(false),
        EventKind::BedStatusUpdated
        | EventKind::EncounterDeleted
        | EventKind::PatientDeleted
        | EventKind::PatientsLinked
        | EventKind::PatientsUnlinked
        | EventKind::AccountMerged
        | EventKind::VisitMerged
        | EventKind::RecordMoved
        | EventKind::IdentifierChanged
        | EventKind::AppointmentBooked
        | EventKind::AppointmentRescheduled
        | EventKind::AppointmentModified
        | EventKind::AppointmentCancelled
        | EventKind::AppointmentDiscontinued
        | EventKind::AppointmentDeleted
        | EventKind::AppointmentNoShow
        | EventKind::AppointmentResourceAdded
        | EventKind::AppointmentResourceModified
        | EventKind::AppointmentResourceCancelled
        | EventKind::AppointmentResourceDiscontinued
        | EventKind::AppointmentResourceDeleted
        | EventKind::SlotBlocked
        | EventKind::SlotOpened
        | EventKind::LocationCreated
        | EventKind::LocationUpdated
        | EventKind::LocationDeactivated
        | EventKind::LocationDeleted
        | EventKind::PractitionerCreated
        | EventKind::PractitionerUpdated
        | EventKind::PractitionerDeactivated
        | EventKind::PractitionerDeleted
        | EventKind::ServiceCreated
        | EventKind::ServiceUpdated
        | EventKind::ServiceDeactivated
        | EventKind::ServiceDeleted
        | EventKind::StudyAvailable
        | EventKind::ScheduleUpdated
        | EventKind::ScheduleDeactivated => None,
    }
}

/// Renders a canonical event for PX360 on its own: the timeline is what this event says of
/// its visit (see [`render_journey`] for the engine's path, with the visit's stored timeline).
///
/// # Errors
/// As [`render_journey`].
pub fn render(event: &Event, opts: &Px360Options) -> Result<Vec<Rendered>, MappingError> {
    let mut timeline = Timeline::default();
    timeline.apply(&crate::journey::delta_of(
        event,
        &timeline,
        &opts.departments,
    ));
    render_journey(event, &timeline, opts)
}

/// Renders a canonical event for PX360 with its visit's timeline so far (this event's steps
/// included): one HIS patient-data body for admissions and discharges, and for the changes of
/// an admission ([`journey_update`]) whose visit is known; nothing for the rest.
///
/// # Errors
/// See [`patient_data`]; for an admission or discharge, a missing visit number or admit time.
pub fn render_journey(
    event: &Event,
    timeline: &Timeline,
    opts: &Px360Options,
) -> Result<Vec<Rendered>, MappingError> {
    let (Some(patient), Some(encounter)) = (&event.patient, &event.encounter) else {
        return Ok(Vec::new());
    };
    let admission_required = match journey_update(event.kind) {
        Some(required) => required,
        None => return Ok(Vec::new()),
    };
    // Other events without an admission (no visit number or admit time) have nothing for the
    // journey; an admit or discharge without them is an error the operator must see.
    let known = (encounter.visit_number.is_some() || patient.account_number.is_some())
        && (encounter.admit_time.is_some() || timeline.admitted_at().is_some());
    if !admission_required && !known {
        return Ok(Vec::new());
    }
    let data = patient_data(event, (patient, encounter), timeline, opts)?;
    let mut body = serde_json::to_value(&data).map_err(|e| MappingError::InvalidValue {
        path: "px360".into(),
        reason: e.to_string(),
    })?;
    opts.mapping.apply(&mut body);
    let demographic = &data.demographics[0];
    Ok(vec![Rendered {
        path: PATH.to_owned(),
        body,
        idempotency_key: crate::model::stable_id(&[
            "px360",
            &event.id,
            &demographic.patient_id,
            &demographic.admission_id,
        ]),
        kind: "patient_data".to_owned(),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transfer, a leave of absence and a doctor change re-send the admission's snapshot
    /// (with the new attending doctor); a deleted visit sends nothing.
    #[test]
    fn changes_of_an_admission_resend_its_snapshot() {
        let event = |kind: &str, doctor: &str| -> Event {
            serde_json::from_value(json!({
                "id": format!("ev-{kind}"), "kind": kind,
                "source": {"format": "hl7v2", "message_type": "ADT^A02", "control_id": "C1",
                           "sending_facility": "RUH"},
                "patient": {"identifiers": [{"value": "MRN-1", "kind": "mrn"}],
                            "name": {"family": "Testperson", "given": "Alex"}},
                "encounter": {"visit_number": "V-1", "admit_time": "2026-06-15T08:00:00",
                              "attending": {"code": doctor, "name": {"family": doctor}}}
            }))
            .expect("valid event")
        };
        let opts = Px360Options::default();
        for kind in [
            "encounter_transferred",
            "encounter_transfer_pending",
            "encounter_discharge_pending",
            "encounter_pending_cancelled",
            "leave_of_absence_started",
            "leave_of_absence_ended",
            "encounter_class_changed",
        ] {
            let out = render(&event(kind, "DOC-1"), &opts).expect("renders");
            assert_eq!(out.len(), 1, "{kind}");
            let demo = &out[0].body["FetchPatientDataTimeStampList"][0];
            assert_eq!(demo["AdmissionID"], "V-1", "{kind}");
            assert_eq!(demo["AdmitDate"], "15-Jun-2026 08:00", "{kind}");
        }
        let out = render(&event("attending_doctor_changed", "DOC-NEW"), &opts).expect("renders");
        assert_eq!(
            out[0].body["FetchPatientDataTimeStampList"][0]["ConsultantID"],
            "DOC-NEW"
        );
        for kind in ["encounter_deleted", "visit_merged", "identifier_changed"] {
            assert!(
                render(&event(kind, "DOC-1"), &opts)
                    .expect("renders")
                    .is_empty(),
                "{kind}"
            );
        }
    }

    /// The payload carries the whole timeline so far, in time order, with the table's visit
    /// types and the HIS's own text for the rest (never a snake_case name); a discharged
    /// visit keeps its `DischargeDate` on a later update, and an A13 removes it.
    #[test]
    fn the_payload_carries_the_timeline_and_a_discharge_stays() {
        use crate::journey::{delta_of, Timeline};
        let ev = |kind: &str, extra: Value| -> Event {
            let mut v = json!({
                "id": format!("ev-{kind}"), "kind": kind,
                "source": {"format": "hl7v2", "message_type": "ADT", "control_id": "C1",
                           "sending_facility": "RUH", "event_time": "2026-06-15T09:00:00"},
                "patient": {"identifiers": [{"value": "MRN-1", "kind": "mrn"}],
                            "name": {"family": "Testperson", "given": "Alex"}},
                "encounter": {"visit_number": "V-1",
                              "attending": {"code": "DOC-1", "name": {"family": "One"}}}
            });
            for (k, val) in extra.as_object().expect("object") {
                v[k] = val.clone();
            }
            serde_json::from_value(v).expect("valid event")
        };
        let opts = Px360Options::default();
        let mut t = Timeline::default();
        let mut last = Value::Null;
        let admit = json!({"encounter": {"visit_number": "V-1", "admit_time": "2026-06-15T08:00:00",
            "attending": {"code": "DOC-1", "name": {"family": "One"}},
            "events": [{"kind": "x_ray", "label": "X Ray", "time": "2026-06-15T08:30:00"}]}});
        for e in [
            ev("encounter_admitted", admit),
            ev(
                "order_placed",
                json!({"orders": [{"placer_number": "O-1", "status": "placed",
                "procedure": {"code": "ECG", "text": "Resting ECG"}}]}),
            ),
            ev(
                "result_reported",
                json!({"results": [{"order": {"placer_number": "L-1",
                "status": "completed"}, "section": "CH"}]}),
            ),
            ev(
                "encounter_discharged",
                json!({"encounter": {"visit_number": "V-1",
                "discharge_time": "2026-06-15T15:30:00"}}),
            ),
            ev("patient_updated", json!({})),
        ] {
            t.apply(&delta_of(&e, &t, &opts.departments));
            let out = render_journey(&e, &t, &opts).expect("renders");
            assert_eq!(out.len(), 1, "{:?}", e.kind);
            assert!(validate(&out[0].body).is_ok());
            last = out[0].body.clone();
        }
        let types: Vec<&str> = last["FetchPatientDataTimeStampVisitDataList"]
            .as_array()
            .expect("visits")
            .iter()
            .filter_map(|v| v["Type"].as_str())
            .collect();
        assert_eq!(
            types,
            [
                "Admission",
                "Consultation",
                "X Ray",
                "Resting ECG",
                "Clinical Condtion",
                "Discharge"
            ]
        );
        let demo = &last["FetchPatientDataTimeStampList"][0];
        assert_eq!(demo["AdmitDate"], "15-Jun-2026 08:00", "from the timeline");
        assert_eq!(
            demo["DischargeDate"], "15-Jun-2026 15:30",
            "the A08 does not reopen"
        );
        let a13 = ev("encounter_discharge_cancelled", json!({}));
        t.apply(&delta_of(&a13, &t, &opts.departments));
        let out = render_journey(&a13, &t, &opts).expect("renders");
        assert!(out[0].body["FetchPatientDataTimeStampList"][0]
            .get("DischargeDate")
            .is_none());
    }

    fn seed_sample() -> Value {
        json!({
            "FetchPatientDataTimeStampList": [{
                "Type": "Patient Demographic details",
                "PatientID": "123456", "AdmissionID": "789012", "HospitalID": "1",
                "HospitalName": "ALH-main", "AdmitDate": "05-Jun-2025 11:06",
                "DischargeDate": "05-Jun-2025 15:30", "SSN": "1234567890",
                "PatientName": "Ahmed Mohammed", "MobileNo": "0501234567", "Gender": "Male",
                "FullAge": "35", "PatientNationality": "Saudi", "DOB": "1990-01-15",
                "ConsultantID": "PHY001", "PrimaryDoctor": "Dr. Mohammed",
                "InsuranceCompanyName": "Bupa", "BillType": "Insurance", "IsVIP": "No"
            }],
            "FetchPatientDataTimeStampVisitDataList": [
                {"Type": "Consultation", "BillDate": "05-Jun-2025 11:06"},
                {"Type": "Doctor Visited", "BillDate": "05-Jun-2025 11:20"},
                {"Type": "Clinical Condtion", "BillDate": "05-Jun-2025 11:30"},
                {"Type": "ChiefComplaint", "BillDate": "05-Jun-2025 11:35"},
                {"Type": "Prescribed Drugs", "BillDate": "05-Jun-2025 12:00"}
            ],
            "Code": 200,
            "Status": "Success"
        })
    }

    #[test]
    fn seed_samples_validate_and_serialise_back_identically() {
        let body = seed_sample();
        let data = validate(&body).expect("seed sample is valid");
        assert_eq!(serde_json::to_value(&data).expect("serialises"), body);
        // The seed's shorter test script sample (no DOB, gender...) is valid too.
        let short = json!({
            "FetchPatientDataTimeStampList": [{
                "Type": "Patient Demographic details", "PatientID": "TEST001",
                "AdmissionID": "ADM001", "HospitalID": "1", "HospitalName": "ALH-main",
                "AdmitDate": "05-Jun-2025 11:06", "DischargeDate": "05-Jun-2025 15:30",
                "SSN": "1234567890", "PatientName": "Test Patient", "MobileNo": "0501234567"
            }],
            "FetchPatientDataTimeStampVisitDataList": [
                {"Type": "Consultation", "BillDate": "05-Jun-2025 11:06"}
            ],
            "Code": 200, "Status": "Success"
        });
        assert!(validate(&short).is_ok());
    }

    #[test]
    fn missing_fields_give_the_seed_error_body() {
        let mut body = seed_sample();
        let obj = body.as_object_mut().expect("object");
        obj.remove("Code");
        obj.remove("Status");
        let err = validate(&body).expect_err("invalid");
        assert_eq!(
            err.to_body(),
            json!({"error": "Invalid HIS data format", "details": {
                "Code": ["This field is required."], "Status": ["This field is required."]
            }})
        );
    }

    #[test]
    fn nested_errors_name_the_item_and_field() {
        let mut body = seed_sample();
        body["FetchPatientDataTimeStampList"][0]["AdmitDate"] = json!("2025-06-05 11:06");
        body["FetchPatientDataTimeStampList"][0]
            .as_object_mut()
            .expect("object")
            .remove("PatientID");
        body["FetchPatientDataTimeStampVisitDataList"][1]["BillDate"] = json!("");
        let err = validate(&body).expect_err("invalid");
        let d = &err.details;
        assert_eq!(
            d["FetchPatientDataTimeStampList"][0]["PatientID"],
            json!(["This field is required."])
        );
        assert!(d["FetchPatientDataTimeStampList"][0]["AdmitDate"].is_array());
        assert_eq!(d["FetchPatientDataTimeStampVisitDataList"][0], json!({}));
        assert_eq!(
            d["FetchPatientDataTimeStampVisitDataList"][1]["BillDate"],
            json!(["This field is required."])
        );
    }

    #[test]
    fn options_validate_names_the_key() {
        assert!(Px360Options::default().validate().is_empty());
        let o: Px360Options = serde_json::from_value(
            json!({"visit_types": {"x_ray": "Radiology", "lab_order": " "}}),
        )
        .expect("options");
        assert_eq!(o.visit_types["x_ray"], "Radiology");
        assert_eq!(
            o.visit_types["consultation"], "Consultation",
            "merged with the defaults"
        );
        let keys: Vec<String> = o.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["visit_types.lab_order"]);
        let ops: crate::dest::opsport::OpsportOptions = serde_json::from_value(json!({
            "statuses": {"booked": "Confirmed", "maybe": "?"},
            "mapping": {"doctors": {"rename": {"a": "b.c"}}}
        }))
        .expect("options");
        let keys: Vec<String> = ops.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "statuses.maybe",
                "statuses.arrived",
                "statuses.completed",
                "statuses.cancelled",
                "statuses.entered_in_error",
                "statuses.no_show",
                "mapping.doctors",
                "mapping.doctors.rename.\"a\""
            ]
        );
    }

    #[test]
    fn journey_stage_table_is_the_seed_table() {
        let o = Px360Options::default();
        assert_eq!(
            o.journey_stage("Clinical Condtion"),
            Some("Clinical Assessment")
        );
        assert_eq!(o.journey_stage("Prescribed Drugs"), Some("Pharmacy"));
        assert_eq!(o.canonical_visit("Doctor Visited"), Some("doctor_visited"));
    }

    #[test]
    fn a_prescription_and_its_dispense_are_the_pharmacy_stage() {
        let o = Px360Options::default();
        for kind in [
            crate::journey::StepKind::Prescription,
            crate::journey::StepKind::Dispense,
        ] {
            let step: crate::journey::JourneyStep =
                serde_json::from_value(json!({"kind": kind.as_str(), "text": "Amoxicillin"}))
                    .expect("step");
            assert_eq!(o.visit_type(&step), "Prescribed Drugs");
            assert_eq!(o.journey_stage(&o.visit_type(&step)), Some("Pharmacy"));
        }
    }

    #[test]
    fn rendered_body_passes_validation_and_reads_back() {
        let text = include_str!("../../../fixtures/model/_dest_inputs/adt_a04_registered.json");
        let event: Event = serde_json::from_str(text).expect("fixture");
        let rendered = render(&event, &Px360Options::default()).expect("renders");
        assert_eq!(rendered.len(), 1);
        assert!(validate(&rendered[0].body).is_ok());
        let back =
            crate::from_json::px360::events_from_body(&rendered[0].body, &Px360Options::default())
                .expect("reads back");
        let encounter = back[0].encounter.as_ref().expect("encounter");
        let kinds: Vec<&str> = encounter.events.iter().map(|e| e.kind.as_str()).collect();
        // The registration and its first attending doctor, then the ZVT steps.
        assert_eq!(
            kinds,
            [
                "admission",
                "consultation",
                "consultation",
                "doctor_visited",
                "prescribed_drugs"
            ]
        );
        assert_eq!(back[0].kind, crate::model::EventKind::EncounterDischarged);
        let patient = back[0].patient.as_ref().expect("patient");
        assert_eq!(patient.identifiers[0].value, "P-10928");
        assert!(patient.vip);
    }
}
