//! OpsPort-shaped upserts (single object or JSON array), as desktop clinic apps send them,
//! -> canonical events. The shapes are [`crate::dest::opsport`]'s.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{empty_event, iso, JsonError};
use crate::dest::opsport::{OpsportAppointment, OpsportOptions, OpsportPatient};
use crate::model::{
    stable_id, Appointment, AppointmentStatus, ContactUse, Event, EventKind, Gender, HumanName,
    Identifier, IdentifierKind, Location, Patient, Phone, Practitioner, Source, Timestamp,
};

fn items<T: DeserializeOwned>(body: &Value) -> Result<Vec<T>, JsonError> {
    let list: Vec<&Value> = match body {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    list.into_iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value(v.clone()).map_err(|e| JsonError::Invalid {
                path: if body.is_array() {
                    format!("[{i}]")
                } else {
                    "$".into()
                },
                reason: crate::serde_reason::of_json(&e),
            })
        })
        .collect()
}

fn status_from(name: &str, opts: &OpsportOptions) -> AppointmentStatus {
    let key = opts
        .statuses
        .iter()
        .find(|(_, v)| v.eq_ignore_ascii_case(name))
        .map_or(name.to_ascii_lowercase(), |(k, _)| k.clone());
    serde_json::from_value(Value::String(key)).unwrap_or(AppointmentStatus::Booked)
}

fn patient_of(p: &OpsportPatient) -> Result<Patient, JsonError> {
    let mut identifiers: Vec<Identifier> = p
        .patient_no
        .clone()
        .map(|value| Identifier {
            value,
            kind: IdentifierKind::Mrn,
            type_code: None,
            assigning_authority: None,
        })
        .into_iter()
        .collect();
    identifiers.extend(p.national_id.clone().map(|value| Identifier {
        value,
        kind: IdentifierKind::NationalId,
        type_code: None,
        assigning_authority: None,
    }));
    let mut phones = Vec::new();
    phones.extend(p.mobile.clone().map(|number| Phone {
        number,
        use_: Some(ContactUse::Mobile),
    }));
    phones.extend(
        p.phone
            .clone()
            .filter(|ph| Some(ph) != p.mobile.as_ref())
            .map(|number| Phone {
                number,
                use_: Some(ContactUse::Home),
            }),
    );
    let name = if p.first_name.is_some() || p.last_name.is_some() {
        HumanName {
            given: p.first_name.clone(),
            middle: p.second_name.clone(),
            family: p.last_name.clone(),
            ..HumanName::default()
        }
    } else {
        HumanName {
            family: Some(p.name.clone()),
            ..HumanName::default()
        }
    };
    Ok(Patient {
        identifiers,
        name,
        birth_date: p
            .date_of_birth
            .as_deref()
            .map(|d| iso(d, "dateOfBirth"))
            .transpose()?,
        gender: match p.gender.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("male") => Some(Gender::Male),
            Some("female") => Some(Gender::Female),
            Some("unknown") => Some(Gender::Unknown),
            None => None,
            Some(_) => Some(Gender::Other),
        },
        phones,
        email: p.email.clone(),
        blood_type: p.blood_type.clone(),
        ..Patient::default()
    })
}

/// Converts an OpsPort upsert body for `kind` (`patient`, `appointment`, singular or plural as
/// in the request path) into canonical events, one per item. Clinics and doctors have no
/// canonical event kind and give an empty list.
///
/// # Errors
/// [`JsonError::Invalid`] when an item does not have the OpsPort shape, naming its index;
/// [`JsonError::Unprocessable`] for an unusable date or time; an unknown `kind` is
/// [`JsonError::Invalid`] at `path`.
pub fn events_from_body(
    kind: &str,
    body: &str,
    opts: &OpsportOptions,
) -> Result<Vec<Event>, JsonError> {
    let value: Value = serde_json::from_str(body).map_err(|e| JsonError::syntax(&e))?;
    let kind = kind.trim_end_matches('s');
    let source = |i: usize| Source {
        format: "opsport".into(),
        message_type: kind.to_owned(),
        control_id: stable_id(&["opsport", body, &i.to_string()]),
        ..Source::default()
    };
    match kind {
        "patient" => items::<OpsportPatient>(&value)?
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut ev = empty_event(
                    stable_id(&["opsport", body, &i.to_string()]),
                    EventKind::PatientUpdated,
                    source(i),
                );
                ev.patient = Some(patient_of(p)?);
                Ok(ev)
            })
            .collect(),
        "appointment" => items::<OpsportAppointment>(&value)?
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let path = |f: &str| {
                    if value.is_array() {
                        format!("[{i}].{f}")
                    } else {
                        f.to_owned()
                    }
                };
                let day = a.date.get(..10).unwrap_or(&a.date);
                let at = |t: &str, f: &str| -> Result<Timestamp, JsonError> {
                    iso(&format!("{day}T{t}"), &path(f))
                };
                let start = at(&a.time_from, "timeFrom")?;
                let end = a.time_to.as_deref().map(|t| at(t, "timeTo")).transpose()?;
                let status = status_from(&a.status, opts);
                let kind = match status {
                    AppointmentStatus::Cancelled => EventKind::AppointmentCancelled,
                    AppointmentStatus::NoShow => EventKind::AppointmentNoShow,
                    _ => EventKind::AppointmentBooked,
                };
                let mut ev = empty_event(
                    stable_id(&["opsport", body, &i.to_string()]),
                    kind,
                    source(i),
                );
                let (value, id_kind) = match (&a.patient_no, &a.national_id) {
                    (Some(n), _) => (n.clone(), IdentifierKind::Mrn),
                    (None, Some(n)) => (n.clone(), IdentifierKind::NationalId),
                    (None, None) => {
                        return Err(JsonError::Invalid {
                            path: path("patientNo"),
                            reason: "patientNo or nationalID is required".into(),
                        })
                    }
                };
                ev.appointment = Some(Appointment {
                    resources: Vec::new(),
                    services: Vec::new(),
                    personnel: Vec::new(),
                    locations: Vec::new(),
                    roles: Vec::new(),
                    placer_id: Some(format!("{value}|{day}|{}", a.time_from)),
                    filler_id: None,
                    remote_id: None,
                    patient: Some(Identifier {
                        value,
                        kind: id_kind,
                        type_code: None,
                        assigning_authority: None,
                    }),
                    practitioner: a.doctor_code.clone().map(|code| Practitioner {
                        code: Some(code),
                        ..Practitioner::default()
                    }),
                    location: a.clinic_code.clone().map(|code| Location {
                        code: Some(code),
                        ..Location::default()
                    }),
                    service: None,
                    appointment_type: None,
                    start: Some(start),
                    end,
                    duration_minutes: None,
                    status,
                    reason: None,
                    event_reason: None,
                    notes: a.notes.clone(),
                });
                Ok(ev)
            })
            .collect(),
        "clinic" | "doctor" => Ok(Vec::new()),
        _ => Err(JsonError::Invalid {
            path: "path".into(),
            reason: "unknown OpsPort kind (patient(s), appointment(s), clinic(s), doctor(s))"
                .into(),
        }),
    }
}
