//! Buktor-style webhook events (`{event_id, timestamp, type, operation, data, source}`) from a
//! HIS -> canonical events. Also accepts the flat form of the seed's cURL example
//! (`{"event_type": ..., "his_appointment_id": ...}`), whose `event_id` is then a hash of the body.

use serde_json::{Map, Value};

use super::{empty_event, iso, JsonError};
use crate::dest::buktor::BuktorEvent;
use crate::model::{
    stable_id, Appointment, AppointmentStatus, Charge, ChargeStatus, Coded, Decimal, Event,
    EventKind, Identifier, IdentifierKind, Location, PaymentOutcome, PaymentResult, Practitioner,
    Source, TransactionType,
};

/// Canonical status of a `his_status` value (the reverse of `dest::buktor::default_status`,
/// plus common synonyms); unknown values give `booked`.
pub fn status_from_his(s: &str) -> AppointmentStatus {
    match s.to_ascii_lowercase().as_str() {
        "pending" | "requested" | "tentative" => AppointmentStatus::Pending,
        "arrived" | "checked_in" | "checked-in" => AppointmentStatus::Arrived,
        "completed" | "done" | "fulfilled" => AppointmentStatus::Completed,
        "cancelled" | "canceled" => AppointmentStatus::Cancelled,
        "no_show" | "noshow" | "no-show" => AppointmentStatus::NoShow,
        "deleted" => AppointmentStatus::EnteredInError,
        "blocked" => AppointmentStatus::Blocked,
        _ => AppointmentStatus::Booked,
    }
}

/// Parses a webhook body into a typed envelope (either form).
///
/// # Errors
/// [`JsonError::Invalid`] when the body is not JSON or not an event envelope.
pub fn parse(body: &str) -> Result<BuktorEvent, JsonError> {
    let value: Value = serde_json::from_str(body).map_err(|e| JsonError::syntax(&e))?;
    let Value::Object(obj) = value else {
        return Err(JsonError::Invalid {
            path: "$".into(),
            reason: "expected a JSON object".into(),
        });
    };
    if obj.contains_key("data") || obj.contains_key("type") {
        let event: BuktorEvent =
            serde_json::from_value(Value::Object(obj)).map_err(|e| JsonError::Invalid {
                path: "$".into(),
                reason: crate::serde_reason::of_json(&e),
            })?;
        event.check().map_err(|reason| {
            let (path, reason) = reason
                .split_once(": ")
                .map_or(("$".to_owned(), reason.clone()), |(p, r)| {
                    (p.to_owned(), r.to_owned())
                });
            JsonError::Invalid { path, reason }
        })?;
        return Ok(event);
    }
    let event_type = obj
        .get("event_type")
        .and_then(Value::as_str)
        .ok_or_else(|| JsonError::Invalid {
            path: "type".into(),
            reason: "an event needs `type` (or `event_type` in the flat form)".into(),
        })?
        .to_owned();
    let data: Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| k.starts_with("his_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let event = BuktorEvent {
        event_id: format!("evt_{}", stable_id(&["buktor-flat", body])),
        timestamp: String::new(),
        operation: event_type
            .split_once('.')
            .map_or("", |(_, op)| op)
            .to_owned(),
        event_type,
        data,
        source: "HIS".into(),
    };
    event.check().map_err(|reason| JsonError::Invalid {
        path: "event_type".into(),
        reason,
    })?;
    Ok(event)
}

fn text(data: &Map<String, Value>, key: &str) -> Option<String> {
    match data.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Converts a webhook body into canonical events.
///
/// `appointment.*` becomes appointment booked/modified/cancelled/no-show/deleted (by type and
/// `his_status`), `payment.*` a charge posted with its payment outcome. `location.*`,
/// `service.*` and `schedule.*` have no canonical event and give an empty list.
///
/// # Errors
/// [`JsonError`] when the body is not an event or a value (time, amount) is unusable.
pub fn events_from_body(body: &str) -> Result<Vec<Event>, JsonError> {
    let event = parse(body)?;
    let data = &event.data;
    let message_time = if event.timestamp.is_empty() {
        None
    } else {
        Some(iso(&event.timestamp, "timestamp")?)
    };
    let source = Source {
        format: "buktor".into(),
        message_type: event.event_type.clone(),
        control_id: event.event_id.clone(),
        message_time,
        ..Source::default()
    };
    let id = stable_id(&["buktor", &event.event_id]);
    let patient = text(data, "his_patient_id").map(|value| Identifier {
        value,
        kind: IdentifierKind::Mrn,
        type_code: None,
        assigning_authority: None,
    });
    match event
        .event_type
        .split_once('.')
        .map_or("", |(entity, _)| entity)
    {
        "appointment" => {
            let appointment_id = text(data, "his_appointment_id").ok_or_else(|| {
                JsonError::unusable("data.his_appointment_id", "an appointment id is required")
            })?;
            let status =
                text(data, "his_status").map_or(AppointmentStatus::Booked, |s| status_from_his(&s));
            let kind = match (event.operation.as_str(), status) {
                ("deleted", _) => EventKind::AppointmentDeleted,
                ("created", _) => EventKind::AppointmentBooked,
                (_, AppointmentStatus::Cancelled) => EventKind::AppointmentCancelled,
                (_, AppointmentStatus::NoShow) => EventKind::AppointmentNoShow,
                _ => EventKind::AppointmentModified,
            };
            let time = |key: &str| {
                text(data, key)
                    .map(|t| iso(&t, &format!("data.{key}")))
                    .transpose()
            };
            let mut ev = empty_event(id, kind, source);
            ev.appointment = Some(Appointment {
                resources: Vec::new(),
                services: Vec::new(),
                personnel: Vec::new(),
                locations: Vec::new(),
                roles: Vec::new(),
                placer_id: None,
                filler_id: Some(appointment_id),
                remote_id: None,
                patient,
                practitioner: text(data, "his_doctor_id").map(|code| Practitioner {
                    code: Some(code),
                    ..Practitioner::default()
                }),
                location: text(data, "his_location_id").map(|code| Location {
                    code: Some(code),
                    ..Location::default()
                }),
                service: text(data, "his_service_id").map(|code| Coded {
                    code: Some(code),
                    ..Coded::default()
                }),
                appointment_type: None,
                start: time("his_start_at")?,
                end: time("his_end_at")?,
                duration_minutes: None,
                status: if kind == EventKind::AppointmentDeleted {
                    AppointmentStatus::EnteredInError
                } else {
                    status
                },
                reason: text(data, "his_reason").map(|t| Coded {
                    text: Some(t),
                    ..Coded::default()
                }),
                event_reason: None,
                notes: text(data, "his_notes"),
            });
            Ok(vec![ev])
        }
        "payment" => {
            let result = if event.operation == "successful" {
                PaymentResult::Success
            } else {
                PaymentResult::Failure
            };
            let mut ev = empty_event(id, EventKind::ChargePosted, source);
            ev.patient = patient.map(|i| crate::model::Patient {
                identifiers: vec![i],
                ..crate::model::Patient::default()
            });
            ev.charges = vec![Charge {
                transaction_id: text(data, "his_payment_id"),
                batch_id: None,
                account: text(data, "his_account_id"),
                visit_number: text(data, "his_visit_id"),
                transaction_date: text(data, "his_paid_at")
                    .map(|t| iso(&t, "data.his_paid_at"))
                    .transpose()?,
                posting_date: None,
                transaction_type: TransactionType::Payment,
                transaction_type_code: "PY".into(),
                code: text(data, "his_service_code").map(|code| Coded {
                    code: Some(code),
                    text: text(data, "his_description"),
                    system: None,
                }),
                quantity: None,
                amount: text(data, "his_amount")
                    .map(|a| {
                        Decimal::parse(&a).map_err(|_| {
                            JsonError::unusable("data.his_amount", "not a decimal amount")
                        })
                    })
                    .transpose()?,
                unit_amount: None,
                currency: text(data, "his_currency"),
                status: ChargeStatus::Posted,
                payment: Some(PaymentOutcome {
                    result,
                    reason: text(data, "his_failure_reason"),
                    reference: text(data, "his_reference"),
                }),
                department: None,
                location: None,
                performed_by: None,
                ordered_by: None,
                procedure: None,
                diagnoses: Vec::new(),
            }];
            Ok(vec![ev])
        }
        _ => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_curl_form_is_accepted() {
        let body = r#"{"event_type": "appointment.created", "his_appointment_id": "A123", "his_patient_id": "P456", "his_doctor_id": "D789", "his_status": "confirmed", "his_created_at": "2025-03-02T10:30:45"}"#;
        let events = events_from_body(body).expect("accepted");
        assert_eq!(events[0].kind, EventKind::AppointmentBooked);
        assert_eq!(events[0].id, events_from_body(body).expect("again")[0].id);
        let a = events[0].appointment.as_ref().expect("appointment");
        assert_eq!(a.patient.as_ref().map(|p| p.value.as_str()), Some("P456"));
    }

    #[test]
    fn payment_failed_becomes_a_charge_with_failure() {
        let body = r#"{"event_id": "evt_9", "timestamp": "2025-01-08T12:00:00Z", "type": "payment.failed", "operation": "failed",
            "data": {"his_payment_id": "PAY-1", "his_patient_id": "P456", "his_amount": "99.90", "his_currency": "SAR", "his_failure_reason": "declined"}, "source": "HIS"}"#;
        let events = events_from_body(body).expect("accepted");
        let charge = &events[0].charges[0];
        assert_eq!(charge.amount.as_ref().map(Decimal::as_str), Some("99.90"));
        assert_eq!(
            charge.payment.as_ref().map(|p| p.result),
            Some(PaymentResult::Failure)
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(events_from_body("{").expect_err("bad").http_status(), 400);
        let bad_type = r#"{"event_id": "e", "timestamp": "2025-01-08T12:00:00Z", "type": "visit.created", "operation": "created", "data": {}, "source": "HIS"}"#;
        match events_from_body(bad_type) {
            Err(JsonError::Invalid { path, .. }) => assert_eq!(path, "type"),
            other => panic!("unexpected {other:?}"),
        }
        let no_id = r#"{"event_id": "e", "timestamp": "2025-01-08T12:00:00Z", "type": "appointment.updated", "operation": "updated", "data": {}, "source": "HIS"}"#;
        let err = events_from_body(no_id).expect_err("unusable");
        assert_eq!(err.http_status(), 422);
        let location = r#"{"event_id": "e", "timestamp": "2025-01-08T12:00:00Z", "type": "location.created", "operation": "created", "data": {"his_location_id": "L1"}, "source": "HIS"}"#;
        assert!(events_from_body(location).expect("accepted").is_empty());
    }
}
