//! OpsPort Healthcare Integration API (`seeds/opsport-integration-api.txt`): upserts of clinics,
//! doctors, patients and appointments, one object to `/api/healthcare/{kind}` or a JSON array to
//! the plural path.
//!
//! [`render`] turns a canonical event into upserts in dependency order: for an appointment the
//! clinic and the doctor come first, then the patient, then the appointment, so OpsPort can
//! resolve `clinicCode`/`doctorCode`/`patientNo`. [`bulk`] folds single items of one kind into
//! one plural request. The wire structs are shared with `from_json::opsport`, which accepts the
//! same shapes from desktop clinic apps.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{MappingError, Rendered};
use crate::mapping::FieldMapping;
use crate::model::{
    Appointment, AppointmentStatus, ContactUse, Event, EventKind, Gender, IdentifierKind, Location,
    Patient, Practitioner, Timestamp,
};

/// `clinic` upsert body (OpsPort looks clinics up by `code`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpsportClinic {
    /// Display name.
    pub name: String,
    /// Clinic code, the upsert key.
    pub code: String,
    /// Clinic number / room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    /// Specialisation, e.g. `Pediatrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specialization: Option<String>,
    /// `Outpatient`, `Inpatient`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clinic_type: Option<String>,
    /// Branch name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Floor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<String>,
    /// Building / wing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// General-ledger account number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_no: Option<String>,
    /// Cost centre number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_center_no: Option<String>,
    /// Postal address as one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// E-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Whether the clinic is active.
    #[serde(default = "yes")]
    pub is_active: bool,
}

/// `doctor` upsert body (OpsPort looks doctors up by `code` or `licenseNumber`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpsportDoctor {
    /// Display name.
    pub name: String,
    /// Name in the second language (Arabic).
    #[serde(rename = "aName", default, skip_serializing_if = "Option::is_none")]
    pub a_name: Option<String>,
    /// Doctor code, the upsert key.
    pub code: String,
    /// Branch name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// `Male` / `Female`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_of_birth: Option<String>,
    /// Medical registration number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medical_reg_number: Option<String>,
    /// National id number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_number: Option<String>,
    /// General-ledger account number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_no: Option<String>,
    /// Cost centre.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_center: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// E-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Specialisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specialization: Option<String>,
    /// Licence number (second upsert key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_number: Option<String>,
    /// Whether the doctor is active.
    #[serde(default = "yes")]
    pub is_active: bool,
    /// Codes of the clinics the doctor works in.
    #[serde(default)]
    pub clinic_codes: Vec<String>,
}

/// `patient` upsert body (OpsPort looks patients up by `patientNo`, `nationalID` or mobile + name).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpsportPatient {
    /// Full name.
    pub name: String,
    /// Patient number (MRN).
    pub patient_no: String,
    /// Given name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Middle / father's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub second_name: Option<String>,
    /// Family name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// Mobile number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_of_birth: Option<String>,
    /// `Male` / `Female`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<String>,
    /// National id number.
    #[serde(
        rename = "nationalID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub national_id: Option<String>,
    /// E-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Home or other phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Blood type, e.g. `O+`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blood_type: Option<String>,
    /// Whether the patient file is active.
    #[serde(default = "yes")]
    pub is_active: bool,
}

/// `appointment` upsert body (OpsPort looks appointments up by patient, date and start time).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpsportAppointment {
    /// Patient number (MRN).
    pub patient_no: String,
    /// Doctor code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doctor_code: Option<String>,
    /// Clinic code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clinic_code: Option<String>,
    /// Day of the appointment at midnight, `YYYY-MM-DDT00:00:00`.
    pub date: String,
    /// Start time `HH:MM:SS`.
    pub time_from: String,
    /// End time `HH:MM:SS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to: Option<String>,
    /// OpsPort status name (`Confirmed`, `Cancelled`, ...), see [`OpsportOptions::statuses`].
    pub status: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

fn yes() -> bool {
    true
}

/// OpsPort destination options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsportOptions {
    /// Canonical appointment status (`booked`, `arrived`, `completed`, `cancelled`, `no_show`)
    /// -> OpsPort status name.
    #[serde(default = "default_statuses")]
    pub statuses: BTreeMap<String, String>,
    /// Whether an appointment event also upserts its clinic and doctor first (default true).
    #[serde(default = "yes")]
    pub upsert_references: bool,
    /// Field mapping per kind (`clinic`, `doctor`, `patient`, `appointment`), applied last.
    #[serde(default)]
    pub mapping: BTreeMap<String, FieldMapping>,
}

impl Default for OpsportOptions {
    fn default() -> Self {
        Self {
            statuses: default_statuses(),
            upsert_references: true,
            mapping: BTreeMap::new(),
        }
    }
}

impl OpsportOptions {
    /// Every problem in the options, with its key path (for `switchboard check`).
    pub fn validate(&self) -> Vec<crate::mapping::ConfigProblem> {
        let mut problems = crate::mapping::validate_status_table("statuses", self.statuses.keys());
        for (kind, mapping) in &self.mapping {
            if !KINDS.contains(&kind.as_str()) {
                problems.push(crate::mapping::ConfigProblem {
                    key: format!("mapping.{kind}"),
                    message: format!("unknown kind; expected one of {}", KINDS.join(", ")),
                });
            }
            problems.extend(mapping.validate_at(&format!("mapping.{kind}")));
        }
        problems
    }
}

/// The kinds of OpsPort upsert, in the order an appointment needs them.
pub const KINDS: [&str; 4] = ["clinic", "doctor", "patient", "appointment"];

/// Default canonical appointment status -> OpsPort status table.
pub fn default_statuses() -> BTreeMap<String, String> {
    [
        ("booked", "Confirmed"),
        ("arrived", "Arrived"),
        ("completed", "Completed"),
        ("cancelled", "Cancelled"),
        ("no_show", "NoShow"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Single-item path of a kind: `/api/healthcare/{kind}`.
pub fn single_path(kind: &str) -> String {
    format!("/api/healthcare/{kind}")
}

/// Bulk path of a kind: `/api/healthcare/{kind}s` (`clinics`, `doctors`, ...).
pub fn bulk_path(kind: &str) -> String {
    format!("/api/healthcare/{kind}s")
}

/// Folds single items of one kind into one bulk request (`POST /api/healthcare/{kind}s` with a
/// JSON array). The idempotency key is derived from the items' keys, in order.
///
/// Returns `None` for an empty slice.
///
/// # Errors
/// [`MappingError::MixedBulk`] when the items are not all of the same kind.
pub fn bulk(items: &[Rendered]) -> Result<Option<Rendered>, MappingError> {
    let Some(first) = items.first() else {
        return Ok(None);
    };
    if let Some(odd) = items.iter().find(|i| i.kind != first.kind) {
        return Err(MappingError::MixedBulk {
            expected: first.kind.clone(),
            found: odd.kind.clone(),
        });
    }
    let mut key_parts: Vec<&str> = vec!["opsport-bulk", &first.kind];
    key_parts.extend(items.iter().map(|i| i.idempotency_key.as_str()));
    Ok(Some(Rendered {
        path: bulk_path(&first.kind),
        body: serde_json::Value::Array(items.iter().map(|i| i.body.clone()).collect()),
        idempotency_key: crate::model::stable_id(&key_parts),
        kind: format!("{}s", first.kind),
    }))
}

/// Canonical gender -> OpsPort text (`Male`, `Female`, `Other`, `Unknown`).
pub fn gender_text(g: Gender) -> &'static str {
    match g {
        Gender::Male => "Male",
        Gender::Female => "Female",
        Gender::Other | Gender::Ambiguous => "Other",
        Gender::Unknown | Gender::NotApplicable => "Unknown",
    }
}

/// Canonical appointment status name (the snake_case of the model's JSON form).
pub fn status_key(s: AppointmentStatus) -> &'static str {
    match s {
        AppointmentStatus::Pending => "pending",
        AppointmentStatus::Waitlisted => "waitlisted",
        AppointmentStatus::Booked => "booked",
        AppointmentStatus::Arrived => "arrived",
        AppointmentStatus::Completed => "completed",
        AppointmentStatus::Cancelled => "cancelled",
        AppointmentStatus::NoShow => "no_show",
        AppointmentStatus::EnteredInError => "entered_in_error",
        AppointmentStatus::Blocked => "blocked",
    }
}

/// The clinic upsert for a canonical location, or `None` without a location code.
pub fn clinic(location: &Location) -> Option<OpsportClinic> {
    let code = location.code.clone()?;
    Some(OpsportClinic {
        name: location.name.clone().unwrap_or_else(|| code.clone()),
        code,
        number: location.room.clone(),
        specialization: location
            .specialisation
            .as_ref()
            .and_then(|c| c.label())
            .map(str::to_owned),
        branch: location.branch.clone(),
        floor: location.floor.clone(),
        location: location.building.clone(),
        is_active: true,
        ..OpsportClinic::default()
    })
}

/// The doctor upsert for a canonical practitioner, or `None` without a code or licence number.
pub fn doctor(p: &Practitioner, clinic_code: Option<&str>) -> Option<OpsportDoctor> {
    let code = p.code.clone().or_else(|| p.licence_number.clone())?;
    let name = p.name.full();
    Some(OpsportDoctor {
        name: if name.is_empty() { code.clone() } else { name },
        code,
        medical_reg_number: p.registration_number.clone(),
        license_number: p.licence_number.clone(),
        specialization: p
            .specialisation
            .as_ref()
            .and_then(|c| c.label())
            .map(str::to_owned),
        is_active: true,
        clinic_codes: clinic_code.map(str::to_owned).into_iter().collect(),
        ..OpsportDoctor::default()
    })
}

/// The identifier OpsPort gets as `patientNo`: the MRN, else the patient number, else the first
/// identifier that is not a national id or passport (a HIS file number of another type).
pub fn patient_number(p: &Patient) -> Option<&crate::model::Identifier> {
    p.identifier_of(IdentifierKind::Mrn)
        .or_else(|| p.identifier_of(IdentifierKind::PatientNumber))
        .or_else(|| {
            p.identifiers.iter().find(|i| {
                !matches!(
                    i.kind,
                    IdentifierKind::NationalId | IdentifierKind::Passport
                )
            })
        })
}

/// The patient upsert for a canonical patient.
///
/// # Errors
/// [`MappingError::MissingField`] without a [`patient_number`] (`patientNo` is OpsPort's key).
pub fn patient(p: &Patient) -> Result<OpsportPatient, MappingError> {
    let patient_no = patient_number(p)
        .ok_or_else(|| super::missing("patient.identifiers[mrn]"))?
        .value
        .clone();
    let mobile = p
        .phones
        .iter()
        .find(|ph| ph.use_ == Some(ContactUse::Mobile))
        .or_else(|| p.phones.first())
        .map(|ph| ph.number.clone());
    let phone = p
        .phones
        .iter()
        .find(|ph| ph.use_ != Some(ContactUse::Mobile) && Some(&ph.number) != mobile.as_ref())
        .map(|ph| ph.number.clone());
    let n = &p.name;
    Ok(OpsportPatient {
        name: n.full(),
        patient_no,
        first_name: n.given.clone(),
        second_name: n.middle.clone(),
        last_name: n.family.clone(),
        mobile,
        date_of_birth: p.birth_date.as_ref().map(Timestamp::date_iso),
        gender: p.gender.map(gender_text).map(str::to_owned),
        national_id: p
            .identifier_of(IdentifierKind::NationalId)
            .map(|i| i.value.clone()),
        email: p.email.clone(),
        phone,
        blood_type: p.blood_type.clone(),
        is_active: true,
    })
}

/// The appointment upsert for a canonical appointment.
///
/// # Errors
/// [`MappingError::MissingField`] without a patient identifier or a start time with a time of day.
pub fn appointment(
    a: &Appointment,
    patient: Option<&Patient>,
    opts: &OpsportOptions,
) -> Result<OpsportAppointment, MappingError> {
    let patient_no = patient
        .and_then(patient_number)
        .or(a.patient.as_ref())
        .ok_or_else(|| super::missing("appointment.patient"))?
        .value
        .clone();
    let start = a
        .start
        .as_ref()
        .ok_or_else(|| super::missing("appointment.start"))?;
    let time_from = start.time_iso().ok_or_else(|| MappingError::InvalidValue {
        path: "appointment.start".into(),
        reason: "a time of day is required".into(),
    })?;
    let status = status_key(if a.status == AppointmentStatus::Pending {
        AppointmentStatus::Booked
    } else {
        a.status
    });
    Ok(OpsportAppointment {
        patient_no,
        doctor_code: a
            .practitioner
            .as_ref()
            .and_then(|p| p.code.clone().or_else(|| p.licence_number.clone())),
        clinic_code: a.location.as_ref().and_then(|l| l.code.clone()),
        date: format!("{}T00:00:00", start.date_iso()),
        time_from,
        time_to: a.end.as_ref().and_then(Timestamp::time_iso),
        status: opts
            .statuses
            .get(status)
            .cloned()
            .unwrap_or_else(|| status.to_owned()),
        notes: a
            .notes
            .clone()
            .or_else(|| a.reason.as_ref().and_then(|r| r.label()).map(str::to_owned)),
    })
}

fn item<T: Serialize>(
    event: &Event,
    kind: &'static str,
    key: &str,
    body: &T,
    opts: &OpsportOptions,
) -> Result<Rendered, MappingError> {
    let mut body = serde_json::to_value(body).map_err(|e| MappingError::InvalidValue {
        path: kind.into(),
        reason: e.to_string(),
    })?;
    if let Some(m) = opts.mapping.get(kind) {
        m.apply(&mut body);
    }
    Ok(Rendered {
        path: single_path(kind),
        body,
        idempotency_key: crate::model::stable_id(&["opsport", kind, &event.id, key]),
        kind: kind.to_owned(),
    })
}

/// Renders a canonical event as OpsPort upserts, in the order they must be sent.
///
/// - patient and encounter events (ADT, but a deleted person or a bed status): the patient
///   upsert (for a merge of several patients, one per surviving patient; for a swap or link,
///   both);
/// - appointment events: clinic, doctor (when they have codes and `upsert_references`), the
///   patient when the event carries one, then the appointment (cancellations are an upsert
///   with the cancelled status, since OpsPort has no delete);
/// - other events: nothing (an empty list, not an error).
///
/// # Errors
/// [`MappingError`] when a required field (patient number, appointment start) is missing.
pub fn render(event: &Event, opts: &OpsportOptions) -> Result<Vec<Rendered>, MappingError> {
    let mut out = Vec::new();
    match event.kind {
        EventKind::PatientRegistered
        | EventKind::PatientUpdated
        | EventKind::PatientMerged
        | EventKind::EncounterAdmitted
        | EventKind::EncounterPreadmitted
        | EventKind::EncounterDischarged
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
        | EventKind::EncounterDeleted
        | EventKind::PatientsLinked
        | EventKind::PatientsUnlinked
        | EventKind::AccountMerged
        | EventKind::VisitMerged
        | EventKind::RecordMoved
        | EventKind::IdentifierChanged
        | EventKind::AttendingDoctorChanged
        | EventKind::ConsultingDoctorChanged
        | EventKind::DoctorChangeCancelled
        | EventKind::AllergiesUpdated => {
            // A merge of several patients upserts every surviving patient, in message order;
            // a swap or link both patients.
            let further = event.additional_merges.iter().map(|m| &m.patient);
            let other = event.other_patient.iter().map(|o| &o.patient);
            for p in event.patient.iter().chain(further).chain(other) {
                let body = patient(p)?;
                out.push(item(
                    event,
                    "patient",
                    &body.patient_no.clone(),
                    &body,
                    opts,
                )?);
            }
        }
        EventKind::AppointmentBooked
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
        | EventKind::AppointmentResourceDeleted => {
            let a = event
                .appointment
                .as_ref()
                .ok_or_else(|| super::missing("appointment"))?;
            let body = appointment(a, event.patient.as_ref(), opts)?;
            let clinic_code = a.location.as_ref().and_then(|l| l.code.as_deref());
            if opts.upsert_references {
                if let Some(c) = a.location.as_ref().and_then(clinic) {
                    out.push(item(event, "clinic", &c.code.clone(), &c, opts)?);
                }
                if let Some(d) = a.practitioner.as_ref().and_then(|p| doctor(p, clinic_code)) {
                    out.push(item(event, "doctor", &d.code.clone(), &d, opts)?);
                }
            }
            // The appointment may name its patient by identifier only; upsert the patient
            // file when the event carries one with a patient number.
            if let Some(Ok(p)) = event.patient.as_ref().map(patient) {
                out.push(item(event, "patient", &p.patient_no.clone(), &p, opts)?);
            }
            let key = format!("{}|{}|{}", body.patient_no, body.date, body.time_from);
            out.push(item(event, "appointment", &key, &body, opts)?);
        }
        EventKind::OrderPlaced
        | EventKind::OrderCancelled
        | EventKind::OrderUpdated
        | EventKind::ResultReported
        | EventKind::ChargePosted
        | EventKind::ChargeReversed
        // OpsPort has no delete, and a bed or a blocked slot is no patient or appointment.
        | EventKind::PatientDeleted
        | EventKind::BedStatusUpdated
        | EventKind::SlotBlocked
        | EventKind::SlotOpened => {}
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture(name: &str) -> Event {
        let path = format!(
            "{}/../fixtures/model/_dest_inputs/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).expect("fixture exists");
        serde_json::from_str(&text).expect("fixture is an event")
    }

    #[test]
    fn appointment_upserts_clinic_and_doctor_first() {
        let out = render(&fixture("siu_s12_booked"), &OpsportOptions::default()).expect("renders");
        let kinds: Vec<&str> = out.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["clinic", "doctor", "patient", "appointment"]);
        assert_eq!(out[3].path, "/api/healthcare/appointment");
        assert_eq!(out[3].body["date"], json!("2026-06-15T00:00:00"));
        assert_eq!(out[3].body["timeFrom"], json!("10:30:00"));
        assert_eq!(out[3].body["status"], json!("Confirmed"));
    }

    #[test]
    fn bulk_folds_one_kind_into_the_plural_path() {
        let a = render(&fixture("siu_s12_booked"), &OpsportOptions::default()).expect("renders");
        let b =
            render(&fixture("adt_a04_registered"), &OpsportOptions::default()).expect("renders");
        let patients: Vec<Rendered> = a
            .iter()
            .chain(&b)
            .filter(|r| r.kind == "patient")
            .cloned()
            .collect();
        let folded = bulk(&patients).expect("same kind").expect("not empty");
        assert_eq!(folded.path, "/api/healthcare/patients");
        assert_eq!(folded.body.as_array().map(Vec::len), Some(2));
        assert!(matches!(bulk(&a), Err(MappingError::MixedBulk { .. })));
        assert_eq!(bulk(&[]), Ok(None));
    }

    #[test]
    fn seed_bodies_are_read_back_as_events() {
        let patient = r#"{"name": "Yousef Bin Khalid", "patientNo": "P-10928", "firstName": "Yousef", "secondName": "Bin",
            "lastName": "Khalid", "mobile": "+966502222222", "dateOfBirth": "1994-09-20", "gender": "Male",
            "nationalID": "1048291048", "email": "yousef.khalid@gmail.com", "phone": "+966502222222", "bloodType": "O+", "isActive": true}"#;
        let events = crate::from_json::opsport::events_from_body(
            "patient",
            patient,
            &OpsportOptions::default(),
        )
        .expect("patient");
        let p = events[0].patient.as_ref().expect("patient");
        assert_eq!(p.identifiers.len(), 2);
        assert_eq!(p.phones.len(), 1);
        let appointments = r#"[{"patientNo": "P-10928", "doctorCode": "DOC-SARAH-04", "clinicCode": "CLN-PED-01",
            "date": "2026-06-15T00:00:00", "timeFrom": "10:30:00", "timeTo": "11:00:00", "status": "Cancelled", "notes": "x"}]"#;
        let events = crate::from_json::opsport::events_from_body(
            "appointments",
            appointments,
            &OpsportOptions::default(),
        )
        .expect("appointments");
        assert_eq!(events[0].kind, EventKind::AppointmentCancelled);
        let a = events[0].appointment.as_ref().expect("appointment");
        assert_eq!(
            a.start.as_ref().map(Timestamp::to_iso).as_deref(),
            Some("2026-06-15T10:30:00")
        );
        let bad = r#"[{"patientNo": "P-1", "date": "2026-06-15T00:00:00", "timeFrom": "25:00:00", "status": "Confirmed"}]"#;
        let err = crate::from_json::opsport::events_from_body(
            "appointment",
            bad,
            &OpsportOptions::default(),
        )
        .expect_err("bad time");
        assert_eq!(err.http_status(), 422);
    }
}
