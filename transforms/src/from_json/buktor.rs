//! Buktor-style webhook events (`{event_id, timestamp, type, operation, data, source}`) from a
//! HIS -> canonical events. Also accepts the flat form of the seed's cURL example
//! (`{"event_type": ..., "his_appointment_id": ...}`), whose `event_id` is then a hash of the body.

use serde_json::{Map, Value};

use super::{empty_event, iso, JsonError};
use crate::dest::buktor::BuktorEvent;
use crate::model::{
    stable_id, Appointment, AppointmentStatus, Charge, ChargeStatus, Coded, Decimal, Event,
    EventKind, Identifier, IdentifierKind, Location, PaymentOutcome, PaymentResult, Practitioner,
    Service, Source, TransactionType,
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
/// `his_status`), `payment.*` a charge posted with its payment outcome, `location.*` and
/// `service.*` a location or service created/updated/deleted (deactivated when an update
/// says `his_is_active` false), `schedule.*` a block of schedule time: `created` blocked,
/// `deleted` opened, `updated` a change to the block. The `data` fields are those the Buktor
/// destination sends (`transforms::dest::buktor`), so a Buktor-format HIS and Switchboard
/// speak the same fields.
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
        "location" => {
            let code = text(data, "his_location_id").ok_or_else(|| {
                JsonError::unusable("data.his_location_id", "a location id is required")
            })?;
            let active = flag(data, "his_is_active")?;
            let kind = match (event.operation.as_str(), active) {
                ("created", _) => EventKind::LocationCreated,
                ("deleted", _) => EventKind::LocationDeleted,
                (_, Some(false)) => EventKind::LocationDeactivated,
                _ => EventKind::LocationUpdated,
            };
            let mut ev = empty_event(id, kind, source);
            ev.location = Some(Location {
                code: Some(code),
                name: text(data, "his_location_name"),
                room: text(data, "his_room"),
                branch: text(data, "his_branch"),
                building: text(data, "his_building"),
                floor: text(data, "his_floor"),
                specialisation: text(data, "his_specialization").map(|t| Coded {
                    text: Some(t),
                    ..Coded::default()
                }),
                location_type: text(data, "his_location_type"),
                phone: text(data, "his_phone"),
                email: text(data, "his_email"),
                active,
                ..Location::default()
            });
            Ok(vec![ev])
        }
        "service" => {
            let code = text(data, "his_service_id").ok_or_else(|| {
                JsonError::unusable("data.his_service_id", "a service id is required")
            })?;
            let active = flag(data, "his_is_active")?;
            let kind = match (event.operation.as_str(), active) {
                ("created", _) => EventKind::ServiceCreated,
                ("deleted", _) => EventKind::ServiceDeleted,
                (_, Some(false)) => EventKind::ServiceDeactivated,
                _ => EventKind::ServiceUpdated,
            };
            let duration_minutes = text(data, "his_duration_minutes")
                .map(|d| {
                    d.parse::<u32>().map_err(|_| {
                        JsonError::unusable(
                            "data.his_duration_minutes",
                            "not a whole number of minutes",
                        )
                    })
                })
                .transpose()?;
            let price = text(data, "his_price")
                .map(|a| {
                    Decimal::parse(&a)
                        .map_err(|_| JsonError::unusable("data.his_price", "not a decimal amount"))
                })
                .transpose()?;
            let mut ev = empty_event(id, kind, source);
            ev.service = Some(Service {
                code,
                name: text(data, "his_service_name"),
                description: text(data, "his_description"),
                duration_minutes,
                price,
                currency: text(data, "his_currency"),
                department: text(data, "his_department").map(|code| Coded {
                    code: Some(code),
                    ..Coded::default()
                }),
                active,
                ..Service::default()
            });
            Ok(vec![ev])
        }
        "schedule" => {
            let block_id = text(data, "his_schedule_id").ok_or_else(|| {
                JsonError::unusable("data.his_schedule_id", "a schedule id is required")
            })?;
            // The reverse of the destination: a created block is blocked time (SIU S23), a
            // deleted one opened time (S24), an updated one a change to the block.
            let (kind, status) = match event.operation.as_str() {
                "created" => (EventKind::SlotBlocked, AppointmentStatus::Blocked),
                "deleted" => (EventKind::SlotOpened, AppointmentStatus::Cancelled),
                _ => (EventKind::AppointmentModified, AppointmentStatus::Blocked),
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
                filler_id: Some(block_id),
                remote_id: None,
                patient: None,
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
                status,
                reason: text(data, "his_reason").map(|t| Coded {
                    text: Some(t),
                    ..Coded::default()
                }),
                event_reason: None,
                notes: None,
            });
            Ok(vec![ev])
        }
        other => Err(JsonError::unusable(
            "type",
            match other {
                "" => "the event type names no entity",
                _ => "no canonical mapping for this event type",
            },
        )),
    }
}

/// A yes/no field: a JSON boolean, or the text `true`/`false`.
fn flag(data: &Map<String, Value>, key: &str) -> Result<Option<bool>, JsonError> {
    match data.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(_) => Err(JsonError::unusable(
            format!("data.{key}"),
            "expected true or false",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(kind: &str, data: serde_json::Value) -> String {
        serde_json::json!({"event_id": "evt_1", "timestamp": "2026-06-15T07:30:00Z", "type": kind,
            "operation": kind.split_once('.').map_or("", |(_, op)| op), "data": data, "source": "HIS"})
        .to_string()
    }

    #[test]
    fn location_service_and_schedule_events_map_to_their_canonical_kinds() {
        let cases = [
            (
                "location.created",
                serde_json::json!({"his_location_id": "CLN-1", "his_location_name": "Clinic"}),
                EventKind::LocationCreated,
            ),
            (
                "location.updated",
                serde_json::json!({"his_location_id": "CLN-1", "his_is_active": false}),
                EventKind::LocationDeactivated,
            ),
            (
                "location.deleted",
                serde_json::json!({"his_location_id": "CLN-1"}),
                EventKind::LocationDeleted,
            ),
            (
                "service.created",
                serde_json::json!({"his_service_id": "S1", "his_price": "250.00", "his_duration_minutes": 20}),
                EventKind::ServiceCreated,
            ),
            (
                "service.updated",
                serde_json::json!({"his_service_id": "S1"}),
                EventKind::ServiceUpdated,
            ),
            (
                "service.deleted",
                serde_json::json!({"his_service_id": "S1"}),
                EventKind::ServiceDeleted,
            ),
            (
                "schedule.created",
                serde_json::json!({"his_schedule_id": "B1", "his_start_at": "2026-06-19T12:00:00"}),
                EventKind::SlotBlocked,
            ),
            (
                "schedule.updated",
                serde_json::json!({"his_schedule_id": "B1"}),
                EventKind::AppointmentModified,
            ),
            (
                "schedule.deleted",
                serde_json::json!({"his_schedule_id": "B1"}),
                EventKind::SlotOpened,
            ),
        ];
        for (kind, data, expected) in cases {
            let events = events_from_body(&body(kind, data)).expect(kind);
            assert_eq!(events.len(), 1, "{kind}");
            assert_eq!(events[0].kind, expected, "{kind}");
        }
        let s = events_from_body(&body("service.created", serde_json::json!({"his_service_id": "S1", "his_price": "250.00", "his_duration_minutes": 20})))
            .expect("service");
        let service = s[0].service.as_ref().expect("service");
        assert_eq!(service.duration_minutes, Some(20));
        assert_eq!(service.price.as_ref().map(|p| p.as_str()), Some("250.00"));
    }

    #[test]
    fn a_master_event_without_its_id_is_an_error_naming_the_field() {
        let e = events_from_body(&body(
            "location.created",
            serde_json::json!({"his_location_name": "x"}),
        ))
        .expect_err("no id");
        assert!(e.to_string().contains("data.his_location_id"), "{e}");
        let e = events_from_body(&body(
            "service.updated",
            serde_json::json!({"his_service_id": "S", "his_is_active": "perhaps"}),
        ))
        .expect_err("bad flag");
        assert!(e.to_string().contains("data.his_is_active"), "{e}");
    }

    #[test]
    fn what_the_destination_sends_reads_back_as_the_same_kind() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/model/mfn_m05/full.json"
        ))
        .expect("golden");
        let mf: crate::from_v2::mfn::MasterFile = serde_json::from_str(&text).expect("parses");
        for event in &mf.events {
            let sent = crate::dest::buktor::render(event, &Default::default()).expect("renders");
            let back = events_from_body(&sent[0].body.to_string()).expect("reads back");
            // An update that leaves the location inactive is what a deactivation is.
            let inactive = event.location.as_ref().and_then(|l| l.active) == Some(false);
            let expected = match event.kind {
                EventKind::LocationUpdated if inactive => EventKind::LocationDeactivated,
                kind => kind,
            };
            assert_eq!(back[0].kind, expected);
            let (a, b) = (back[0].location.as_ref(), event.location.as_ref());
            assert_eq!(
                a.and_then(|l| l.code.clone()),
                b.and_then(|l| l.code.clone())
            );
            assert_eq!(
                a.and_then(|l| l.name.clone()),
                b.and_then(|l| l.name.clone())
            );
        }
    }

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
        let events = events_from_body(location).expect("accepted");
        assert_eq!(
            events.len(),
            1,
            "routed like any other event, never dropped"
        );
        assert_eq!(events[0].kind, EventKind::LocationCreated);
    }
}
