//! OpsPort healthcare integration API (seed `opsport-integration-api.txt`), served under `/opsport`.
//!
//! `POST /api/healthcare/{clinic,doctor,patient,appointment}` takes one JSON object and the
//! plural paths take a JSON array. Every call needs `X-API-Key`. Records are upserted by the
//! documented rules:
//!
//! - clinic by `code`;
//! - doctor by `code`, else `licenseNumber`;
//! - patient by `patientNo`, else `nationalID`, else `mobile` + `name`;
//! - appointment by patient, `date` (its date part) and `timeFrom` (`10:30` and `10:30:00` are
//!   the same time). The patient is the record the appointment's own patient reference finds
//!   by the patient rule: `patientNo`, else `nationalID`, else `mobile` + `name` (the seed
//!   lists `patientNo` as an example of the reference codes an appointment may use; the other
//!   two are the assumption written in `docs/ASSUMPTIONS.md`). Two appointments of one
//!   patient at the same day and time are one appointment, whichever key named the patient.
//!
//! Each body is read into this module's own types, written from the seed's samples
//! ([`SeedClinic`], [`SeedDoctor`], [`SeedPatient`], [`SeedAppointment`]): a field the seed
//! does not name, or a value of the wrong JSON type, is 400, so a client that drifts from the
//! seed fails here. `status` must be one of [`STATUSES`] (the seed shows `Confirmed`; the rest
//! is the documented assumption), so a canonical name such as `entered_in_error` is 400.
//!
//! The seed does not document answers, so the sandbox defines them (see `docs/SANDBOX.md`):
//! success is 200 `{"success":true,"action":"created"|"updated","id":N}`; a bulk call answers
//! `{"success":bool,"results":[...],"created":n,"updated":n,"failed":n}` with 200 when every
//! item succeeded and 400 otherwise (items are applied in order; failed ones are skipped).
//! Errors are `{"success":false,"message":"..."}`: 401 bad or missing key, 400 bad JSON or a
//! missing lookup key, 404 a reference (`patientNo`, `doctorCode`, `clinicCode`,
//! `clinicCodes`) to a record OpsPort does not have. Records keep every field sent, merged
//! over the previous version on update.
//!
//! Test control: `GET /_state` (all records; an appointment carries the `patientId` of the
//! record it was matched to), `POST /_fault {"count":N,"status":"Confirmed"}` (the next N
//! appointment upserts with that status answer 503 and store nothing: a crash of the sender
//! between two upserts can be staged) and, as for every vendor, `GET /_requests` (every request
//! received, with the status and body answered).

use crate::{json, lock, secret_eq, SandboxConfig, Shared};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The appointment statuses the sandbox takes: `Confirmed` from the seed, the others as
/// documented in `docs/ASSUMPTIONS.md`.
pub const STATUSES: [&str; 5] = ["Confirmed", "Arrived", "Completed", "Cancelled", "NoShow"];

/// A clinic as the seed's sample shows it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // Read to validate the shape; the record is kept as sent.
pub struct SeedClinic {
    name: Option<String>,
    code: Option<String>,
    number: Option<String>,
    specialization: Option<String>,
    clinic_type: Option<String>,
    branch: Option<String>,
    floor: Option<String>,
    location: Option<String>,
    account_no: Option<String>,
    cost_center_no: Option<String>,
    address: Option<String>,
    phone: Option<String>,
    email: Option<String>,
    is_active: Option<bool>,
}

/// A doctor as the seed's sample shows it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // Read to validate the shape; the record is kept as sent.
pub struct SeedDoctor {
    name: Option<String>,
    #[serde(rename = "aName")]
    a_name: Option<String>,
    code: Option<String>,
    branch: Option<String>,
    gender: Option<String>,
    date_of_birth: Option<String>,
    medical_reg_number: Option<String>,
    id_number: Option<String>,
    account_no: Option<String>,
    cost_center: Option<String>,
    description: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    specialization: Option<String>,
    license_number: Option<String>,
    is_active: Option<bool>,
    clinic_codes: Option<Vec<String>>,
}

/// A patient as the seed's sample shows it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // Read to validate the shape; the record is kept as sent.
pub struct SeedPatient {
    name: Option<String>,
    patient_no: Option<String>,
    first_name: Option<String>,
    second_name: Option<String>,
    last_name: Option<String>,
    mobile: Option<String>,
    date_of_birth: Option<String>,
    gender: Option<String>,
    #[serde(rename = "nationalID")]
    national_id: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    blood_type: Option<String>,
    is_active: Option<bool>,
}

/// An appointment as the seed's sample shows it, plus the patient keys of the patient rule
/// (`nationalID`, `mobile` + `name`) for a patient without a `patientNo`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // Read to validate the shape; the record is kept as sent.
pub struct SeedAppointment {
    patient_no: Option<String>,
    #[serde(rename = "nationalID")]
    national_id: Option<String>,
    mobile: Option<String>,
    name: Option<String>,
    doctor_code: Option<String>,
    clinic_code: Option<String>,
    date: Option<String>,
    time_from: Option<String>,
    time_to: Option<String>,
    status: Option<String>,
    notes: Option<String>,
}

/// Reads `record` into the seed type of `kind`: the reason when it does not fit.
fn shape(kind: Kind, record: &Map<String, Value>) -> Result<(), Refusal> {
    let v = Value::Object(record.clone());
    let bad =
        |e: serde_json::Error| Refusal(StatusCode::BAD_REQUEST, format!("Invalid {kind:?}: {e}"));
    match kind {
        Kind::Clinic => serde_json::from_value::<SeedClinic>(v)
            .map(drop)
            .map_err(bad),
        Kind::Doctor => serde_json::from_value::<SeedDoctor>(v)
            .map(drop)
            .map_err(bad),
        Kind::Patient => serde_json::from_value::<SeedPatient>(v)
            .map(drop)
            .map_err(bad),
        Kind::Appointment => {
            let a = serde_json::from_value::<SeedAppointment>(v).map_err(bad)?;
            match a.status.as_deref() {
                Some(s) if !STATUSES.contains(&s) => Err(Refusal(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "Unknown status '{s}'; expected one of {}.",
                        STATUSES.join(", ")
                    ),
                )),
                _ => Ok(()),
            }
        }
    }
}

/// The kinds of record OpsPort stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Clinic,
    Doctor,
    Patient,
    Appointment,
}

impl Kind {
    /// The kind named by a path segment and whether the path is the bulk (plural) form.
    fn from_path(segment: &str) -> Option<(Kind, bool)> {
        Some(match segment {
            "clinic" => (Kind::Clinic, false),
            "clinics" => (Kind::Clinic, true),
            "doctor" => (Kind::Doctor, false),
            "doctors" => (Kind::Doctor, true),
            "patient" => (Kind::Patient, false),
            "patients" => (Kind::Patient, true),
            "appointment" => (Kind::Appointment, false),
            "appointments" => (Kind::Appointment, true),
            _ => return None,
        })
    }
}

#[derive(Debug, Default)]
struct Db {
    clinics: Vec<Map<String, Value>>,
    doctors: Vec<Map<String, Value>>,
    patients: Vec<Map<String, Value>>,
    appointments: Vec<Map<String, Value>>,
    next_id: u64,
    /// `POST /_fault`: how many more appointment upserts with `fail_status` answer 503.
    fail_count: u32,
    fail_status: String,
}

#[derive(Debug, Clone)]
struct OpsPort {
    api_key: Arc<str>,
    db: Shared<Db>,
}

/// What went wrong with one record: the status and message of the error answer.
struct Refusal(StatusCode, String);

/// The OpsPort routes, to be nested under `/opsport`.
pub(crate) fn router(cfg: &SandboxConfig) -> Router {
    let state = OpsPort {
        api_key: cfg.opsport_api_key.as_str().into(),
        db: Shared::default(),
    };
    Router::new()
        .route("/api/healthcare/{kind}", post(upsert))
        .route("/_state", get(state_view))
        .route("/_fault", post(set_fault))
        .with_state(state)
}

async fn upsert(
    State(s): State<OpsPort>,
    Path(segment): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (status, answer) = answer(&s, &segment, &headers, &body);
    json(status, answer)
}

/// `POST /_fault {"count":N,"status":"Confirmed"}`.
async fn set_fault(State(s): State<OpsPort>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let mut db = lock(&s.db);
    db.fail_count = v["count"].as_u64().unwrap_or(0).min(u64::from(u32::MAX)) as u32;
    db.fail_status = v["status"].as_str().unwrap_or("Confirmed").to_owned();
    json(
        StatusCode::OK,
        json!({"count": db.fail_count, "status": db.fail_status}),
    )
}

fn error(status: StatusCode, message: impl Into<String>) -> (StatusCode, Value) {
    (status, json!({"success": false, "message": message.into()}))
}

fn answer(s: &OpsPort, segment: &str, headers: &HeaderMap, body: &[u8]) -> (StatusCode, Value) {
    let key_ok = crate::header(headers, "x-api-key").is_some_and(|k| secret_eq(k, &s.api_key));
    if !key_ok {
        return error(StatusCode::UNAUTHORIZED, "Invalid or missing API key.");
    }
    let Some((kind, bulk)) = Kind::from_path(segment) else {
        return error(StatusCode::NOT_FOUND, "Unknown endpoint.");
    };
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("Invalid JSON: {e}")),
    };
    let mut db = lock(&s.db);
    if !bulk {
        let Value::Object(record) = parsed else {
            return error(StatusCode::BAD_REQUEST, "Expected a JSON object.");
        };
        return match db.upsert(kind, record) {
            Ok((action, id)) => (
                StatusCode::OK,
                json!({"success": true, "action": action, "id": id}),
            ),
            Err(Refusal(status, message)) => error(status, message),
        };
    }
    let Value::Array(items) = parsed else {
        return error(StatusCode::BAD_REQUEST, "Expected a JSON array.");
    };
    let (mut created, mut updated, mut failed) = (0, 0, 0);
    let mut results = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let outcome = match item {
            Value::Object(record) => db.upsert(kind, record),
            _ => Err(Refusal(
                StatusCode::BAD_REQUEST,
                "Expected a JSON object.".into(),
            )),
        };
        match outcome {
            Ok((action, id)) => {
                if action == "created" {
                    created += 1;
                } else {
                    updated += 1;
                }
                results.push(json!({"index": index, "action": action, "id": id}));
            }
            Err(Refusal(_, message)) => {
                failed += 1;
                results.push(json!({"index": index, "error": message}));
            }
        }
    }
    let status = if failed == 0 {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (
        status,
        json!({"success": failed == 0, "results": results, "created": created,
               "updated": updated, "failed": failed}),
    )
}

/// A non-empty text field of a record.
fn text<'a>(r: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    r.get(field)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn same(a: &Map<String, Value>, b: &Map<String, Value>, field: &str) -> bool {
    matches!((text(a, field), text(b, field)), (Some(x), Some(y)) if x == y)
}

/// A patient's display name: `name`, or the name parts joined by spaces.
fn patient_name(r: &Map<String, Value>) -> Option<String> {
    if let Some(n) = text(r, "name") {
        return Some(n.to_string());
    }
    let parts: Vec<&str> = ["firstName", "secondName", "lastName"]
        .iter()
        .filter_map(|f| text(r, f))
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// The date part of an appointment `date` (`2026-06-15T00:00:00` -> `2026-06-15`).
fn date_part(r: &Map<String, Value>) -> Option<&str> {
    text(r, "date").map(|d| d.get(..10).unwrap_or(d))
}

/// `timeFrom` as `HH:MM:SS` (`10:30` -> `10:30:00`).
fn time_from(r: &Map<String, Value>) -> Option<String> {
    text(r, "timeFrom").map(|t| {
        if t.len() == 5 {
            format!("{t}:00")
        } else {
            t.to_string()
        }
    })
}

impl Db {
    /// The id of the patient an appointment names, found by the patient rule.
    fn appointment_patient(&self, r: &Map<String, Value>) -> Result<u64, Refusal> {
        let not_found = |what: &str, value: &str| {
            Refusal(StatusCode::NOT_FOUND, format!("Unknown {what} '{value}'."))
        };
        let found = if let Some(no) = text(r, "patientNo") {
            self.patients
                .iter()
                .find(|p| text(p, "patientNo") == Some(no))
                .ok_or_else(|| not_found("patientNo", no))?
        } else if let Some(nid) = text(r, "nationalID") {
            self.patients
                .iter()
                .find(|p| text(p, "nationalID") == Some(nid))
                .ok_or_else(|| not_found("nationalID", nid))?
        } else if let (Some(mobile), Some(name)) = (text(r, "mobile"), text(r, "name")) {
            self.patients
                .iter()
                .find(|p| {
                    text(p, "mobile") == Some(mobile) && patient_name(p).as_deref() == Some(name)
                })
                .ok_or_else(|| not_found("mobile and name", "(patient)"))?
        } else {
            return Err(Refusal(
                StatusCode::BAD_REQUEST,
                "patientNo, nationalID or mobile and name is required.".into(),
            ));
        };
        Ok(found.get("id").and_then(Value::as_u64).unwrap_or(0))
    }

    fn table(&mut self, kind: Kind) -> &mut Vec<Map<String, Value>> {
        match kind {
            Kind::Clinic => &mut self.clinics,
            Kind::Doctor => &mut self.doctors,
            Kind::Patient => &mut self.patients,
            Kind::Appointment => &mut self.appointments,
        }
    }

    /// Index of the existing record that `r` updates, by the documented rules.
    fn find(&self, kind: Kind, r: &Map<String, Value>) -> Result<Option<usize>, Refusal> {
        let missing = |what: &str| Refusal(StatusCode::BAD_REQUEST, format!("{what} is required."));
        match kind {
            Kind::Clinic => {
                text(r, "code").ok_or_else(|| missing("code"))?;
                Ok(self.clinics.iter().position(|c| same(c, r, "code")))
            }
            Kind::Doctor => {
                if text(r, "code").is_none() && text(r, "licenseNumber").is_none() {
                    return Err(missing("code or licenseNumber"));
                }
                Ok(self
                    .doctors
                    .iter()
                    .position(|d| same(d, r, "code"))
                    .or_else(|| {
                        self.doctors
                            .iter()
                            .position(|d| same(d, r, "licenseNumber"))
                    }))
            }
            Kind::Patient => {
                let name = patient_name(r);
                let by_mobile_name = text(r, "mobile").is_some() && name.is_some();
                if text(r, "patientNo").is_none()
                    && text(r, "nationalID").is_none()
                    && !by_mobile_name
                {
                    return Err(missing("patientNo, nationalID or mobile and name"));
                }
                let ps = &self.patients;
                Ok(ps
                    .iter()
                    .position(|p| same(p, r, "patientNo"))
                    .or_else(|| ps.iter().position(|p| same(p, r, "nationalID")))
                    .or_else(|| {
                        ps.iter().position(|p| {
                            by_mobile_name && same(p, r, "mobile") && patient_name(p) == name
                        })
                    }))
            }
            Kind::Appointment => {
                let patient = r.get("patientId").and_then(Value::as_u64);
                let date = date_part(r).ok_or_else(|| missing("date"))?;
                let time = time_from(r).ok_or_else(|| missing("timeFrom"))?;
                let not_found = |what: &str, value: &str| {
                    Refusal(StatusCode::NOT_FOUND, format!("Unknown {what} '{value}'."))
                };
                if let Some(code) = text(r, "doctorCode") {
                    if !self.doctors.iter().any(|d| text(d, "code") == Some(code)) {
                        return Err(not_found("doctorCode", code));
                    }
                }
                if let Some(code) = text(r, "clinicCode") {
                    if !self.clinics.iter().any(|c| text(c, "code") == Some(code)) {
                        return Err(not_found("clinicCode", code));
                    }
                }
                Ok(self.appointments.iter().position(|a| {
                    a.get("patientId").and_then(Value::as_u64) == patient
                        && date_part(a) == Some(date)
                        && time_from(a).as_deref() == Some(time.as_str())
                }))
            }
        }
    }

    fn upsert(
        &mut self,
        kind: Kind,
        mut record: Map<String, Value>,
    ) -> Result<(&'static str, u64), Refusal> {
        shape(kind, &record)?;
        if kind == Kind::Appointment
            && self.fail_count > 0
            && text(&record, "status") == Some(self.fail_status.as_str())
        {
            self.fail_count -= 1;
            return Err(Refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service temporarily unavailable.".into(),
            ));
        }
        if kind == Kind::Appointment {
            let patient = self.appointment_patient(&record)?;
            record.insert("patientId".into(), Value::from(patient));
        }
        if kind == Kind::Doctor {
            if let Some(codes) = record.get("clinicCodes").and_then(Value::as_array) {
                for code in codes.iter().filter_map(Value::as_str) {
                    if !self.clinics.iter().any(|c| text(c, "code") == Some(code)) {
                        return Err(Refusal(
                            StatusCode::NOT_FOUND,
                            format!("Unknown clinicCode '{code}'."),
                        ));
                    }
                }
            }
        }
        match self.find(kind, &record)? {
            Some(i) => {
                let existing = &mut self.table(kind)[i];
                let id = existing.get("id").and_then(Value::as_u64).unwrap_or(0);
                for (k, v) in record {
                    if k != "id" {
                        existing.insert(k, v);
                    }
                }
                Ok(("updated", id))
            }
            None => {
                self.next_id += 1;
                let id = self.next_id;
                let mut record = record;
                record.insert("id".into(), Value::from(id));
                self.table(kind).push(record);
                Ok(("created", id))
            }
        }
    }
}

async fn state_view(State(s): State<OpsPort>) -> Response {
    let db = lock(&s.db);
    json(
        StatusCode::OK,
        json!({
            "clinics": db.clinics,
            "doctors": db.doctors,
            "patients": db.patients,
            "appointments": db.appointments,
        }),
    )
}

#[cfg(test)]
mod tests {
    use crate::test_support::{status_json, TestSandbox};
    use crate::SandboxConfig;
    use serde_json::{json, Value};

    const KEY: &str = "sandbox-opsport-key";

    async fn post(t: &TestSandbox, path: &str, body: Value) -> (u16, Value) {
        let r = t
            .http
            .post(t.url(&format!("/opsport/api/healthcare/{path}")))
            .header("X-API-Key", KEY)
            .json(&body)
            .send()
            .await
            .expect("sent");
        status_json(r).await
    }

    async fn seed_refs(t: &TestSandbox) {
        assert_eq!(
            post(t, "clinic", json!({"code": "CLN-PED-01", "name": "Ped"}))
                .await
                .0,
            200
        );
        let doc = json!({"code": "DOC-SARAH-04", "licenseNumber": "LIC-1", "clinicCodes": ["CLN-PED-01"]});
        assert_eq!(post(t, "doctor", doc).await.0, 200);
        let p =
            json!({"patientNo": "P-10928", "name": "Yousef Bin Khalid", "mobile": "+966502222222"});
        assert_eq!(post(t, "patient", p).await.0, 200);
    }

    #[tokio::test]
    async fn missing_or_wrong_key_is_401_json() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        let url = t.url("/opsport/api/healthcare/clinic");
        let r = t
            .http
            .post(&url)
            .json(&json!({"code": "C"}))
            .send()
            .await
            .expect("sent");
        let (status, body) = status_json(r).await;
        assert_eq!(status, 401);
        assert_eq!(
            body,
            json!({"success": false, "message": "Invalid or missing API key."})
        );
        let r = t
            .http
            .post(&url)
            .header("X-API-Key", "wrong")
            .json(&json!({"code": "C"}))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 401);
        assert_eq!(t.get_json("/opsport/_state").await["clinics"], json!([]));
    }

    #[tokio::test]
    async fn bad_json_is_400() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        let r = t
            .http
            .post(t.url("/opsport/api/healthcare/patient"))
            .header("X-API-Key", KEY)
            .body("{not json")
            .send()
            .await
            .expect("sent");
        let (status, body) = status_json(r).await;
        assert_eq!(status, 400);
        assert_eq!(body["success"], json!(false));
        assert!(body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Invalid JSON")));
    }

    #[tokio::test]
    async fn same_patient_no_twice_updates_one_patient() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        let (s1, b1) = post(
            &t,
            "patient",
            json!({"patientNo": "P-1", "name": "A B", "email": "a@x"}),
        )
        .await;
        let (s2, b2) = post(&t, "patient", json!({"patientNo": "P-1", "name": "A C"})).await;
        assert_eq!((s1, b1["action"].clone()), (200, json!("created")));
        assert_eq!((s2, b2["action"].clone()), (200, json!("updated")));
        assert_eq!(b1["id"], b2["id"]);
        let state = t.get_json("/opsport/_state").await;
        let patients = state["patients"].as_array().expect("array");
        assert_eq!(patients.len(), 1);
        assert_eq!(patients[0]["name"], "A C");
        assert_eq!(patients[0]["email"], "a@x", "fields not sent are kept");
    }

    #[tokio::test]
    async fn patient_matches_by_national_id_then_mobile_and_name() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        post(&t, "patient", json!({"nationalID": "104", "name": "N"})).await;
        let (_, b) = post(
            &t,
            "patient",
            json!({"nationalID": "104", "patientNo": "P-9"}),
        )
        .await;
        assert_eq!(b["action"], "updated");
        post(
            &t,
            "patient",
            json!({"mobile": "+9665", "firstName": "Lina", "lastName": "Haddad"}),
        )
        .await;
        let (_, same) = post(
            &t,
            "patient",
            json!({"mobile": "+9665", "name": "Lina Haddad", "gender": "Female"}),
        )
        .await;
        assert_eq!(same["action"], "updated");
        let (_, other) = post(
            &t,
            "patient",
            json!({"mobile": "+9665", "name": "Omar Haddad"}),
        )
        .await;
        assert_eq!(
            other["action"], "created",
            "same mobile, other name is another patient"
        );
        let (status, body) = post(&t, "patient", json!({"mobile": "+9665"})).await;
        assert_eq!(status, 400, "{body}");
        let state = t.get_json("/opsport/_state").await;
        assert_eq!(state["patients"].as_array().map(Vec::len), Some(3));
    }

    #[tokio::test]
    async fn doctor_matches_by_code_or_license_number() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        post(
            &t,
            "doctor",
            json!({"code": "D1", "licenseNumber": "L1", "name": "x"}),
        )
        .await;
        let (_, b) = post(&t, "doctor", json!({"licenseNumber": "L1", "name": "y"})).await;
        assert_eq!(b["action"], "updated");
        let (status, body) =
            post(&t, "doctor", json!({"code": "D2", "clinicCodes": ["NOPE"]})).await;
        assert_eq!(
            (status, body["message"].clone()),
            (404, json!("Unknown clinicCode 'NOPE'."))
        );
        let state = t.get_json("/opsport/_state").await;
        assert_eq!(state["doctors"].as_array().map(Vec::len), Some(1));
        assert_eq!(state["doctors"][0]["name"], "y");
    }

    #[tokio::test]
    async fn appointment_upserts_by_patient_date_and_time_from() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        seed_refs(&t).await;
        let appt = json!({"patientNo": "P-10928", "doctorCode": "DOC-SARAH-04", "clinicCode": "CLN-PED-01",
            "date": "2026-06-15T00:00:00", "timeFrom": "10:30:00", "timeTo": "11:00:00", "status": "Confirmed"});
        let (s1, b1) = post(&t, "appointment", appt).await;
        assert_eq!((s1, b1["action"].clone()), (200, json!("created")));
        let same_slot = json!({"patientNo": "P-10928", "date": "2026-06-15", "timeFrom": "10:30", "status": "Cancelled"});
        let (_, b2) = post(&t, "appointment", same_slot).await;
        assert_eq!(b2["action"], "updated");
        let other_time =
            json!({"patientNo": "P-10928", "date": "2026-06-15", "timeFrom": "11:30:00"});
        let (_, b3) = post(&t, "appointment", other_time).await;
        assert_eq!(b3["action"], "created");
        let state = t.get_json("/opsport/_state").await;
        let appts = state["appointments"].as_array().expect("array");
        assert_eq!(appts.len(), 2);
        assert_eq!(appts[0]["status"], "Cancelled");
        assert_eq!(appts[0]["doctorCode"], "DOC-SARAH-04");
    }

    #[tokio::test]
    async fn an_appointment_finds_its_patient_by_any_patient_key_and_is_one_slot() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        seed_refs(&t).await;
        let p = json!({"name": "Sara Ali", "nationalID": "1098", "mobile": "+966501111111"});
        assert_eq!(post(&t, "patient", p).await.0, 200);
        let by_nid = json!({"nationalID": "1098", "date": "2026-06-15T00:00:00",
            "timeFrom": "09:00:00", "status": "Confirmed"});
        assert_eq!(post(&t, "appointment", by_nid).await.1["action"], "created");
        let by_mobile = json!({"mobile": "+966501111111", "name": "Sara Ali",
            "date": "2026-06-15", "timeFrom": "09:00", "status": "Cancelled"});
        assert_eq!(
            post(&t, "appointment", by_mobile).await.1["action"],
            "updated"
        );
        let other_patient = json!({"patientNo": "P-10928", "date": "2026-06-15",
            "timeFrom": "09:00", "status": "Confirmed"});
        assert_eq!(
            post(&t, "appointment", other_patient).await.1["action"],
            "created"
        );
        let state = t.get_json("/opsport/_state").await;
        let appts = state["appointments"].as_array().expect("array");
        assert_eq!(appts.len(), 2);
        assert_eq!(appts[0]["status"], "Cancelled");
        assert_ne!(appts[0]["patientId"], appts[1]["patientId"]);
        let (status, body) = post(
            &t,
            "appointment",
            json!({"nationalID": "0000",
            "date": "2026-06-15", "timeFrom": "09:00"}),
        )
        .await;
        assert_eq!(
            (status, body["message"].clone()),
            (404, json!("Unknown nationalID '0000'."))
        );
    }

    #[tokio::test]
    async fn fields_and_statuses_the_seed_does_not_know_are_400() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        seed_refs(&t).await;
        let (status, body) = post(
            &t,
            "appointment",
            json!({"patientNo": "P-10928",
            "date": "2026-06-15", "timeFrom": "09:00", "status": "entered_in_error"}),
        )
        .await;
        assert_eq!(status, 400);
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("Unknown status 'entered_in_error'")),
            "{body}"
        );
        let (status, body) =
            post(&t, "patient", json!({"patientNumber": "P-1", "name": "x"})).await;
        assert_eq!(status, 400);
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("patientNumber")),
            "{body}"
        );
        let (status, _) = post(&t, "clinic", json!({"code": "C", "isActive": "yes"})).await;
        assert_eq!(status, 400, "isActive is a boolean");
    }

    #[tokio::test]
    async fn appointment_with_unknown_references_is_404() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        seed_refs(&t).await;
        let base = json!({"patientNo": "P-10928", "date": "2026-06-15", "timeFrom": "09:00"});
        for (field, value) in [
            ("patientNo", "P-0"),
            ("doctorCode", "DOC-X"),
            ("clinicCode", "CLN-X"),
        ] {
            let mut a = base.clone();
            a[field] = json!(value);
            let (status, body) = post(&t, "appointment", a).await;
            assert_eq!(status, 404);
            assert_eq!(body["message"], format!("Unknown {field} '{value}'."));
        }
        let state = t.get_json("/opsport/_state").await;
        assert_eq!(state["appointments"], json!([]));
    }

    #[tokio::test]
    async fn bulk_reports_each_item_and_logs_requests() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        let items =
            json!([{"code": "C1", "name": "a"}, {"name": "no code"}, {"code": "C1", "name": "b"}]);
        let (status, body) = post(&t, "clinics", items).await;
        assert_eq!(status, 400);
        assert_eq!(
            (
                body["created"].clone(),
                body["updated"].clone(),
                body["failed"].clone()
            ),
            (json!(1), json!(1), json!(1))
        );
        assert_eq!(body["results"][1]["error"], "code is required.");
        let (status, _) = post(&t, "clinics", json!([{"code": "C2"}])).await;
        assert_eq!(status, 200);
        let (status, _) = post(&t, "clinics", json!({"code": "C3"})).await;
        assert_eq!(status, 400, "bulk path wants an array");
        let log = t.get_json("/opsport/_requests").await;
        let log = log.as_array().expect("array");
        assert_eq!(log.len(), 3);
        assert_eq!(log[0]["status"], 400);
        assert_eq!(log[1]["path"], "/api/healthcare/clinics");
        assert_eq!(log[1]["body"][0]["code"], "C2");
        assert_eq!(log[1]["response"]["created"], 1);
        assert_eq!(log[1]["headers"]["x-api-key"], "<redacted>");
    }
}
