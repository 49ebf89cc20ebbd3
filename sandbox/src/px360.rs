//! PX360 HIS patient-data endpoint (seed `px360-his-integration.txt`), served under `/px360`.
//!
//! `POST /api/simulator/his-patient-data/` takes the HIS JSON (`FetchPatientDataTimeStampList`,
//! `FetchPatientDataTimeStampVisitDataList`, `Code`, `Status`) and validates it the way the
//! seed's Django REST Framework serializer does:
//!
//! - a missing field is `["This field is required."]`, `null` is `["This field may not be
//!   null."]`, an empty text `["This field may not be blank."]`; errors of list items are a
//!   list with one object per item (`{}` for a valid item); the answer is 400
//!   `{"error":"Invalid HIS data format","details":{...}}`;
//! - required: the four top-level fields; in each demographic item `PatientID`,
//!   `AdmissionID`, `HospitalName`, `PatientName` and `AdmitDate`; in each visit item `Type`
//!   and `BillDate`. The demographic list may not be empty;
//! - a body that is not JSON is 400 `{"detail":"JSON parse error - ..."}` (DRF's parser error).
//!
//! A `HospitalName` that is not configured answers 400 with the seed's processing error
//! (`{"error":"Hospital with code '<name>' not found. Please run seed_journey_stages_his
//! command first."}`). Otherwise the patient is upserted by `PatientID` (its MRN), the journey
//! by `AdmissionID` (its encounter id), every visit whose `Type` is in the seed's table
//! ([`JOURNEY_STAGES`]) completes its stage, visit types not in the table are kept as skipped
//! in the state, and the answer is the seed's success body. The journey is `completed` (and the
//! post-discharge survey triggered, once: `surveys_sent` in the state counts them) when
//! `DischargeDate` is given, `active` otherwise: the journey follows the last body, so a
//! later body without it shows the journey reopened.
//!
//! The seed's endpoint takes no credentials; when an API key is configured the sandbox asks for
//! it in `X-API-Key` (401 `{"detail":...}` otherwise), as the seed's security notes suggest.
//!
//! Test control: `GET /_state` (patients, journeys with their stages, requests by status).

use crate::{json, lock, secret_eq, SandboxConfig, Shared};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;

/// HIS visit type -> PX360 journey stage, the seed's table.
pub const JOURNEY_STAGES: [(&str, &str); 5] = [
    ("Consultation", "MD Consultation"),
    ("Doctor Visited", "MD Visit"),
    ("Clinical Condtion", "Clinical Assessment"),
    ("ChiefComplaint", "Patient Assessment"),
    ("Prescribed Drugs", "Pharmacy"),
];

const DEMOGRAPHICS: &str = "FetchPatientDataTimeStampList";
const VISITS: &str = "FetchPatientDataTimeStampVisitDataList";
const DEMOGRAPHIC_REQUIRED: [&str; 5] = [
    "PatientID",
    "AdmissionID",
    "HospitalName",
    "PatientName",
    "AdmitDate",
];
const VISIT_REQUIRED: [&str; 2] = ["Type", "BillDate"];

#[derive(Debug, Default)]
struct Db {
    /// MRN -> patient record.
    patients: BTreeMap<String, Value>,
    /// Encounter id -> journey record.
    journeys: BTreeMap<String, Value>,
    next_id: u64,
    statuses: BTreeMap<u16, u64>,
}

#[derive(Debug, Clone)]
struct Px360 {
    api_key: Option<Arc<str>>,
    hospitals: Arc<[String]>,
    db: Shared<Db>,
}

/// The PX360 routes, to be nested under `/px360`.
pub(crate) fn router(cfg: &SandboxConfig) -> Router {
    let state = Px360 {
        api_key: cfg.px360_api_key.as_deref().map(Arc::from),
        hospitals: cfg.px360_hospitals.clone().into(),
        db: Shared::default(),
    };
    Router::new()
        .route("/api/simulator/his-patient-data/", post(receive))
        .route("/_state", get(state_view))
        .with_state(state)
}

async fn receive(State(s): State<Px360>, headers: HeaderMap, body: Bytes) -> Response {
    let (status, answer) = process(&s, &headers, &body);
    *lock(&s.db).statuses.entry(status.as_u16()).or_default() += 1;
    json(status, answer)
}

/// Field errors of one object: field -> messages.
type FieldErrors = Map<String, Value>;

/// Checks that each of `required` is present, not null and (for text) not blank.
fn check_fields(obj: &Map<String, Value>, required: &[&str], errors: &mut FieldErrors) {
    for field in required {
        let problem = match obj.get(*field) {
            None => Some("This field is required."),
            Some(Value::Null) => Some("This field may not be null."),
            Some(Value::String(s)) if s.trim().is_empty() => Some("This field may not be blank."),
            Some(Value::String(_) | Value::Number(_)) => None,
            Some(_) => Some("Not a valid string."),
        };
        if let Some(p) = problem {
            errors.insert((*field).to_string(), json!([p]));
        }
    }
}

/// Validates a list of objects; the error value is DRF's per-item list.
fn check_list(value: Option<&Value>, required: &[&str], allow_empty: bool) -> Option<Value> {
    let items = match value {
        None => return Some(json!(["This field is required."])),
        Some(Value::Null) => return Some(json!(["This field may not be null."])),
        Some(Value::Array(items)) => items,
        Some(other) => {
            let kind = match other {
                Value::Object(_) => "dict",
                Value::String(_) => "str",
                Value::Number(_) => "int",
                _ => "bool",
            };
            return Some(json!([format!(
                "Expected a list of items but got type \"{kind}\"."
            )]));
        }
    };
    if items.is_empty() && !allow_empty {
        return Some(json!(["This list may not be empty."]));
    }
    let mut any = false;
    let per_item: Vec<Value> = items
        .iter()
        .map(|item| {
            let mut errors = FieldErrors::new();
            match item {
                Value::Object(obj) => check_fields(obj, required, &mut errors),
                _ => {
                    errors.insert(
                        "non_field_errors".into(),
                        json!(["Invalid data. Expected a dictionary."]),
                    );
                }
            }
            any |= !errors.is_empty();
            Value::Object(errors)
        })
        .collect();
    any.then_some(Value::Array(per_item))
}

fn validate(body: &Value) -> Result<&Map<String, Value>, FieldErrors> {
    let Value::Object(obj) = body else {
        let mut e = FieldErrors::new();
        e.insert(
            "non_field_errors".into(),
            json!(["Invalid data. Expected a dictionary."]),
        );
        return Err(e);
    };
    let mut errors = FieldErrors::new();
    if let Some(e) = check_list(obj.get(DEMOGRAPHICS), &DEMOGRAPHIC_REQUIRED, false) {
        errors.insert(DEMOGRAPHICS.into(), e);
    }
    if let Some(e) = check_list(obj.get(VISITS), &VISIT_REQUIRED, true) {
        errors.insert(VISITS.into(), e);
    }
    match obj.get("Code") {
        None => {
            errors.insert("Code".into(), json!(["This field is required."]));
        }
        Some(Value::Null) => {
            errors.insert("Code".into(), json!(["This field may not be null."]));
        }
        Some(v)
            if v.as_i64().is_none() && v.as_str().and_then(|s| s.parse::<i64>().ok()).is_none() =>
        {
            errors.insert("Code".into(), json!(["A valid integer is required."]));
        }
        Some(_) => {}
    }
    check_fields(obj, &["Status"], &mut errors);
    if errors.is_empty() {
        Ok(obj)
    } else {
        Err(errors)
    }
}

/// A text value of a validated field (numbers are written as text, as DRF's CharField does).
fn text(obj: &Map<String, Value>, field: &str) -> String {
    match obj.get(field) {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// A stable UUID-shaped id for the `n`th record of `kind` (the sandbox has no real UUIDs).
fn uuid_like(kind: &str, n: u64) -> String {
    let h = hex::encode(Sha256::digest(format!("px360/{kind}/{n}")));
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn process(s: &Px360, headers: &HeaderMap, body: &[u8]) -> (StatusCode, Value) {
    if let Some(key) = &s.api_key {
        match crate::header(headers, "x-api-key") {
            None => {
                return (
                    StatusCode::UNAUTHORIZED,
                    json!({"detail": "Authentication credentials were not provided."}),
                )
            }
            Some(given) if !secret_eq(given, key) => {
                return (
                    StatusCode::UNAUTHORIZED,
                    json!({"detail": "Invalid API key."}),
                )
            }
            Some(_) => {}
        }
    }
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                json!({"detail": format!("JSON parse error - {e}")}),
            )
        }
    };
    let obj = match validate(&parsed) {
        Ok(obj) => obj,
        Err(details) => {
            return (
                StatusCode::BAD_REQUEST,
                json!({"error": "Invalid HIS data format", "details": details}),
            )
        }
    };
    let empty = Map::new();
    let demo = obj
        .get(DEMOGRAPHICS)
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let hospital = text(demo, "HospitalName");
    if !s.hospitals.contains(&hospital) {
        return (
            StatusCode::BAD_REQUEST,
            json!({"error": format!(
                "Hospital with code '{hospital}' not found. Please run seed_journey_stages_his command first."
            )}),
        );
    }
    let visits: Vec<&Map<String, Value>> = obj
        .get(VISITS)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default();

    let mrn = text(demo, "PatientID");
    let encounter = text(demo, "AdmissionID");
    let name = text(demo, "PatientName");
    let discharged = !text(demo, "DischargeDate").is_empty();
    let mut db = lock(&s.db);

    let patient_id = match db.patients.get(&mrn) {
        Some(p) => p["patient_id"].as_str().unwrap_or_default().to_string(),
        None => {
            db.next_id += 1;
            uuid_like("patient", db.next_id)
        }
    };
    let mut patient = demo.clone();
    patient.insert("patient_id".into(), json!(patient_id));
    db.patients.insert(mrn.clone(), Value::Object(patient));

    let existing = db.journeys.get(&encounter).cloned();
    let journey_id = match existing.as_ref().and_then(|j| j["journey_id"].as_str()) {
        Some(id) => id.to_string(),
        None => {
            db.next_id += 1;
            uuid_like("journey", db.next_id)
        }
    };
    let mut stages: Vec<Value> = existing
        .as_ref()
        .and_then(|j| j["stages"].as_array().cloned())
        .unwrap_or_default();
    let mut skipped: Vec<Value> = existing
        .as_ref()
        .and_then(|j| j["skipped_visit_types"].as_array().cloned())
        .unwrap_or_default();
    let mut completed = Vec::new();
    for visit in visits {
        let visit_type = text(visit, "Type");
        match JOURNEY_STAGES.iter().find(|(t, _)| *t == visit_type) {
            Some((_, stage)) => {
                completed.push(json!(visit_type));
                let known = stages.iter().any(|st| st["stage"] == *stage);
                if !known {
                    stages.push(json!({"stage": stage, "visit_type": visit_type,
                                       "completed_at": text(visit, "BillDate")}));
                }
            }
            None => skipped.push(json!(visit_type)),
        }
    }
    let already_surveyed = existing
        .as_ref()
        .is_some_and(|j| j["survey_triggered"] == json!(true));
    let survey_triggered = discharged && !already_surveyed;
    let surveys_sent = existing
        .as_ref()
        .and_then(|j| j["surveys_sent"].as_u64())
        .unwrap_or(0)
        + u64::from(survey_triggered);
    let journey_status = if discharged { "completed" } else { "active" };
    db.journeys.insert(
        encounter.clone(),
        json!({
            "journey_id": journey_id,
            "encounter_id": encounter,
            "patient_mrn": mrn,
            "hospital": hospital,
            "status": journey_status,
            "stages": stages,
            "skipped_visit_types": skipped,
            "survey_triggered": survey_triggered || already_surveyed,
            "surveys_sent": surveys_sent,
        }),
    );
    (
        StatusCode::OK,
        json!({
            "success": true,
            "message": format!(
                "Patient data processed successfully. Journey created with {} stages completed.",
                completed.len()
            ),
            "patient_id": patient_id,
            "patient_mrn": mrn,
            "patient_name": name,
            "journey_id": journey_id,
            "encounter_id": encounter,
            "completed_stages": completed,
            "survey_triggered": survey_triggered,
            "journey_status": journey_status,
        }),
    )
}

async fn state_view(State(s): State<Px360>) -> Response {
    let db = lock(&s.db);
    json(
        StatusCode::OK,
        json!({
            "patients": db.patients.values().collect::<Vec<_>>(),
            "journeys": db.journeys.values().collect::<Vec<_>>(),
            "responses_by_status": db.statuses,
        }),
    )
}

#[cfg(test)]
mod tests {
    use crate::test_support::{status_json, TestSandbox};
    use crate::SandboxConfig;
    use serde_json::{json, Value};

    fn seed_sample() -> Value {
        json!({
            "FetchPatientDataTimeStampList": [{
                "Type": "Patient Demographic details", "PatientID": "123456", "AdmissionID": "789012",
                "HospitalID": "1", "HospitalName": "ALH-main", "AdmitDate": "05-Jun-2025 11:06",
                "DischargeDate": "05-Jun-2025 15:30", "SSN": "1234567890", "PatientName": "Ahmed Mohammed",
                "MobileNo": "0501234567"
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

    async fn post(t: &TestSandbox, body: &Value, key: Option<&str>) -> (u16, Value) {
        let mut req = t
            .http
            .post(t.url("/px360/api/simulator/his-patient-data/"))
            .json(body);
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        status_json(req.send().await.expect("sent")).await
    }

    #[tokio::test]
    async fn seed_sample_gets_the_seed_success_body() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        let (status, body) = post(&t, &seed_sample(), None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["success"], true);
        assert_eq!(
            body["message"],
            "Patient data processed successfully. Journey created with 5 stages completed."
        );
        assert_eq!(body["patient_mrn"], "123456");
        assert_eq!(body["patient_name"], "Ahmed Mohammed");
        assert_eq!(body["encounter_id"], "789012");
        assert_eq!(
            body["completed_stages"],
            json!([
                "Consultation",
                "Doctor Visited",
                "Clinical Condtion",
                "ChiefComplaint",
                "Prescribed Drugs"
            ])
        );
        assert_eq!(body["survey_triggered"], true);
        assert_eq!(body["journey_status"], "completed");
        assert_eq!(body["patient_id"].as_str().map(str::len), Some(36));
        let state = t.get_json("/px360/_state").await;
        let stages: Vec<&str> = state["journeys"][0]["stages"]
            .as_array()
            .expect("stages")
            .iter()
            .filter_map(|s| s["stage"].as_str())
            .collect();
        assert_eq!(
            stages,
            [
                "MD Consultation",
                "MD Visit",
                "Clinical Assessment",
                "Patient Assessment",
                "Pharmacy"
            ]
        );
    }

    #[tokio::test]
    async fn missing_fields_get_the_serializer_error_body() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        let mut body = seed_sample();
        let obj = body.as_object_mut().expect("object");
        obj.remove("Code");
        obj.remove("Status");
        let (status, answer) = post(&t, &body, None).await;
        assert_eq!(status, 400);
        assert_eq!(
            answer,
            json!({"error": "Invalid HIS data format",
                   "details": {"Code": ["This field is required."], "Status": ["This field is required."]}})
        );
        let mut body = seed_sample();
        body["FetchPatientDataTimeStampList"][0]
            .as_object_mut()
            .expect("object")
            .remove("PatientID");
        body["FetchPatientDataTimeStampVisitDataList"][1]["BillDate"] = Value::Null;
        let (status, answer) = post(&t, &body, None).await;
        assert_eq!(status, 400);
        assert_eq!(
            answer["details"]["FetchPatientDataTimeStampList"],
            json!([{"PatientID": ["This field is required."]}])
        );
        assert_eq!(
            answer["details"]["FetchPatientDataTimeStampVisitDataList"],
            json!([{}, {"BillDate": ["This field may not be null."]}, {}, {}, {}])
        );
        let state = t.get_json("/px360/_state").await;
        assert_eq!(state["patients"], json!([]));
    }

    #[tokio::test]
    async fn unknown_hospital_gets_the_processing_error() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        let mut body = seed_sample();
        body["FetchPatientDataTimeStampList"][0]["HospitalName"] = json!("NOPE");
        let (status, answer) = post(&t, &body, None).await;
        assert_eq!(status, 400);
        assert_eq!(
            answer,
            json!({"error": "Hospital with code 'NOPE' not found. Please run seed_journey_stages_his command first."})
        );
    }

    #[tokio::test]
    async fn resend_updates_the_same_journey_and_skips_unknown_visit_types() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        let mut body = seed_sample();
        body["FetchPatientDataTimeStampList"][0]["DischargeDate"] = json!("");
        body["FetchPatientDataTimeStampVisitDataList"] =
            json!([{"Type": "Consultation", "BillDate": "x"}, {"Type": "Lab", "BillDate": "y"}]);
        let (_, first) = post(&t, &body, None).await;
        assert_eq!(first["journey_status"], "active");
        assert_eq!(first["survey_triggered"], false);
        assert_eq!(first["completed_stages"], json!(["Consultation"]));
        let (_, second) = post(&t, &seed_sample(), None).await;
        assert_eq!(second["journey_id"], first["journey_id"]);
        assert_eq!(second["patient_id"], first["patient_id"]);
        let state = t.get_json("/px360/_state").await;
        assert_eq!(state["journeys"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            state["journeys"][0]["stages"].as_array().map(Vec::len),
            Some(5)
        );
        assert_eq!(state["journeys"][0]["skipped_visit_types"], json!(["Lab"]));
    }

    #[tokio::test]
    async fn api_key_when_configured_and_bad_json() {
        let mut cfg = SandboxConfig::for_tests();
        cfg.px360_api_key = Some("px-key".into());
        let t = TestSandbox::start(cfg).await;
        let (status, body) = post(&t, &seed_sample(), None).await;
        assert_eq!(
            (status, body),
            (
                401,
                json!({"detail": "Authentication credentials were not provided."})
            )
        );
        assert_eq!(post(&t, &seed_sample(), Some("bad")).await.0, 401);
        assert_eq!(post(&t, &seed_sample(), Some("px-key")).await.0, 200);
        let r = t
            .http
            .post(t.url("/px360/api/simulator/his-patient-data/"))
            .header("X-API-Key", "px-key")
            .body("{oops")
            .send()
            .await
            .expect("sent");
        let (status, body) = status_json(r).await;
        assert_eq!(status, 400);
        assert!(body["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("JSON parse error - ")));
    }
}
