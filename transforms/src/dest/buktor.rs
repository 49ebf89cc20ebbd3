//! Buktor HIS webhook (the vendor's HIS webhook document): one event envelope
//! `{event_id, timestamp, type, operation, data, source: "HIS"}` per change, POSTed to
//! `/his/receive`, with `data` fields named `his_*`.
//!
//! [`render`] maps canonical events to `appointment.*`, `location.*`, `service.*`,
//! `schedule.*` and `payment.successful|failed` envelopes (all 14 types of [`EVENT_TYPES`]). `event_id` is deterministic: a [`stable_id`] of the
//! source message identity, the event type and the entity id, so a replayed message produces
//! the same ids and Buktor drops the duplicates. [`BuktorMappingFile`] is the per-client field
//! mapping of `his-json-mapping.json`, applied by the sandbox (as Buktor does) and optionally by
//! the sender. The `Buktor-Signature` HMAC is computed by the `channels` crate over the exact
//! bytes it sends, so it is not part of this pure module.
//!
//! [`stable_id`]: crate::model::stable_id

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{MappingError, Rendered};
use crate::mapping::FieldMapping;
use crate::model::{
    Appointment, AppointmentStatus, ChargeStatus, Event, EventKind, Location, PaymentResult,
    Service, Timestamp,
};

/// Path of the Buktor webhook, relative to the destination's base URL.
pub const PATH: &str = "/his/receive";

/// Event types Buktor accepts (section 3 of the seed).
pub const EVENT_TYPES: [&str; 14] = [
    "location.created",
    "location.updated",
    "location.deleted",
    "service.created",
    "service.updated",
    "service.deleted",
    "appointment.created",
    "appointment.updated",
    "appointment.deleted",
    "schedule.created",
    "schedule.updated",
    "schedule.deleted",
    "payment.successful",
    "payment.failed",
];

/// The webhook envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuktorEvent {
    /// Unique, deterministic event id (idempotency key), `evt_` + 32 hex digits when rendered.
    pub event_id: String,
    /// When the change happened, RFC 3339 UTC (`2025-01-08T12:00:00Z`).
    pub timestamp: String,
    /// Event type, one of [`EVENT_TYPES`].
    #[serde(rename = "type")]
    pub event_type: String,
    /// The part of `type` after the dot (`created`, `successful`, ...).
    pub operation: String,
    /// `his_*` fields of the entity.
    pub data: Map<String, Value>,
    /// Always `HIS`.
    #[serde(default = "his")]
    pub source: String,
}

fn his() -> String {
    "HIS".to_owned()
}

impl BuktorEvent {
    /// Checks the envelope as Buktor does: known type, operation matching it, `source` `HIS`.
    ///
    /// # Errors
    /// The first problem, naming the field.
    pub fn check(&self) -> Result<(), String> {
        if self.event_id.trim().is_empty() {
            return Err("event_id: must not be empty".into());
        }
        if !EVENT_TYPES.contains(&self.event_type.as_str()) {
            return Err(format!(
                "type: unsupported event type (one of {})",
                EVENT_TYPES.join(", ")
            ));
        }
        let op = self.event_type.split_once('.').map_or("", |(_, op)| op);
        if op != self.operation {
            return Err("operation: must be the part of `type` after its dot".into());
        }
        if self.source != "HIS" {
            return Err("source: must be \"HIS\"".into());
        }
        Ok(())
    }
}

/// Buktor destination options.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuktorOptions {
    /// Canonical appointment status -> `his_status` value; unmapped statuses are sent as is.
    #[serde(default)]
    pub statuses: BTreeMap<String, String>,
    /// Also send an appointment's clinic as `location.updated` before the appointment.
    #[serde(default)]
    pub emit_locations: bool,
    /// Field mapping applied to every rendered envelope (paths like `data.his_status`).
    #[serde(default)]
    pub mapping: FieldMapping,
}

impl BuktorOptions {
    /// Every problem in the options, with its key path (for `switchboard check`).
    pub fn validate(&self) -> Vec<crate::mapping::ConfigProblem> {
        let mut problems = crate::mapping::validate_status_table("statuses", self.statuses.keys());
        problems.extend(self.mapping.validate_at("mapping"));
        problems
    }
}

/// `his-json-mapping.json`: per client, per event type, HIS field -> Buktor field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuktorMappingFile {
    /// Client id (as text, e.g. `"1001"`) -> that client's mappings.
    pub clients: BTreeMap<String, BuktorClientMapping>,
}

/// One client's mappings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuktorClientMapping {
    /// Event type -> field mapping.
    pub mappings: BTreeMap<String, BuktorEventMapping>,
}

/// Field renames for one event type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuktorEventMapping {
    /// HIS field name (`his_status`) -> Buktor field name (`buktor_status`).
    pub fields: BTreeMap<String, String>,
}

/// No mapping for an event type and client; the message is Buktor's own error text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("No mapping found for event_type '{event_type}' and Client-ID {client_id}.")]
pub struct NoMappingError {
    /// Event type looked up.
    pub event_type: String,
    /// Client id looked up.
    pub client_id: String,
}

impl BuktorMappingFile {
    /// Renames the `data` fields of `event` as the client's mapping for its type says and
    /// returns the mapped data. Fields the mapping does not name are left out, since Buktor
    /// stores only mapped columns.
    ///
    /// # Errors
    /// [`NoMappingError`] when the client or its mapping for the event type is missing.
    pub fn apply(
        &self,
        client_id: &str,
        event: &BuktorEvent,
    ) -> Result<Map<String, Value>, NoMappingError> {
        let mapping = self
            .clients
            .get(client_id)
            .and_then(|c| c.mappings.get(&event.event_type))
            .ok_or_else(|| NoMappingError {
                event_type: event.event_type.clone(),
                client_id: client_id.to_owned(),
            })?;
        Ok(event
            .data
            .iter()
            .filter_map(|(k, v)| mapping.fields.get(k).map(|to| (to.clone(), v.clone())))
            .collect())
    }

    /// Every problem in the file, with its key path (unknown event types, empty names,
    /// two HIS fields mapped to one Buktor field).
    pub fn validate(&self) -> Vec<crate::mapping::ConfigProblem> {
        let mut problems = Vec::new();
        for (client, c) in &self.clients {
            for (event_type, m) in &c.mappings {
                let key = format!("clients.{client}.mappings.\"{event_type}\"");
                if !EVENT_TYPES.contains(&event_type.as_str()) {
                    problems.push(crate::mapping::ConfigProblem {
                        key: key.clone(),
                        message: format!(
                            "unknown event type; expected one of {}",
                            EVENT_TYPES.join(", ")
                        ),
                    });
                }
                let mut seen = BTreeMap::new();
                for (from, to) in &m.fields {
                    if from.is_empty() || to.is_empty() {
                        problems.push(crate::mapping::ConfigProblem {
                            key: format!("{key}.fields.\"{from}\""),
                            message: "field names must not be empty".into(),
                        });
                    }
                    if let Some(other) = seen.insert(to, from) {
                        problems.push(crate::mapping::ConfigProblem {
                            key: format!("{key}.fields.\"{from}\""),
                            message: format!("{other:?} and {from:?} both map to {to:?}"),
                        });
                    }
                }
            }
        }
        problems
    }
}

/// Canonical appointment status -> default `his_status` text (lowercase, as in the seed's
/// `"confirmed"` sample).
pub fn default_status(s: AppointmentStatus) -> &'static str {
    match s {
        AppointmentStatus::Pending | AppointmentStatus::Waitlisted => "pending",
        AppointmentStatus::Booked => "confirmed",
        AppointmentStatus::Arrived => "arrived",
        AppointmentStatus::Completed => "completed",
        AppointmentStatus::Cancelled => "cancelled",
        AppointmentStatus::NoShow => "no_show",
        AppointmentStatus::EnteredInError => "deleted",
        AppointmentStatus::Blocked => "blocked",
    }
}

/// `YYYY-MM-DDTHH:MM:SS` local time, the form of `his_created_at` in the seed.
fn local(ts: &Timestamp) -> String {
    ts.naive_date_time().format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// RFC 3339 UTC (`2025-01-08T12:00:00Z`); a time without offset is taken as UTC.
fn utc(ts: &Timestamp) -> String {
    match ts.to_utc() {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => ts
            .naive_date_time()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string(),
    }
}

fn put(data: &mut Map<String, Value>, key: &str, value: Option<impl Into<String>>) {
    if let Some(v) = value {
        data.insert(key.to_owned(), Value::String(v.into()));
    }
}

/// The deterministic `event_id`: `evt_` + [`stable_id`](crate::model::stable_id) of the source
/// message identity (sending application, facility, control id), the event type and the entity id.
pub fn event_id(event: &Event, event_type: &str, entity_id: &str) -> String {
    let s = &event.source;
    let id = crate::model::stable_id(&[
        s.sending_application.as_deref().unwrap_or(""),
        s.sending_facility.as_deref().unwrap_or(""),
        &s.control_id,
        event_type,
        entity_id,
    ]);
    format!("evt_{id}")
}

fn envelope(
    event: &Event,
    event_type: &str,
    entity_id: &str,
    timestamp: &str,
    data: Map<String, Value>,
    opts: &BuktorOptions,
) -> Result<Rendered, MappingError> {
    let operation = event_type
        .split_once('.')
        .map_or("", |(_, op)| op)
        .to_owned();
    let envelope = BuktorEvent {
        event_id: event_id(event, event_type, entity_id),
        timestamp: timestamp.to_owned(),
        event_type: event_type.to_owned(),
        operation,
        data,
        source: his(),
    };
    let mut body = serde_json::to_value(&envelope).map_err(|e| MappingError::InvalidValue {
        path: "buktor".into(),
        reason: e.to_string(),
    })?;
    opts.mapping.apply(&mut body);
    Ok(Rendered {
        path: PATH.to_owned(),
        body,
        idempotency_key: envelope.event_id,
        kind: event_type.to_owned(),
    })
}

/// The `location.*` data of a canonical location (`his_location_id`, name, branch, floor...).
pub fn location_data(l: &Location) -> Map<String, Value> {
    let mut data = Map::new();
    put(&mut data, "his_location_id", l.code.clone());
    put(&mut data, "his_location_name", l.name.clone());
    put(&mut data, "his_branch", l.branch.clone());
    put(&mut data, "his_building", l.building.clone());
    put(&mut data, "his_floor", l.floor.clone());
    put(&mut data, "his_room", l.room.clone());
    put(
        &mut data,
        "his_specialization",
        l.specialisation
            .as_ref()
            .and_then(|c| c.label())
            .map(str::to_owned),
    );
    put(&mut data, "his_location_type", l.location_type.clone());
    put(&mut data, "his_phone", l.phone.clone());
    put(&mut data, "his_email", l.email.clone());
    if let Some(active) = l.active {
        data.insert("his_is_active".into(), Value::Bool(active));
    }
    data
}

/// The `service.*` data of a canonical service (`his_service_id`, name, duration, price...).
pub fn service_data(s: &Service) -> Map<String, Value> {
    let mut data = Map::new();
    put(&mut data, "his_service_id", Some(s.code.clone()));
    put(&mut data, "his_service_name", s.name.clone());
    put(&mut data, "his_description", s.description.clone());
    if let Some(minutes) = s.duration_minutes {
        data.insert("his_duration_minutes".into(), Value::from(minutes));
    }
    put(
        &mut data,
        "his_price",
        s.price.as_ref().map(|d| d.to_string()),
    );
    put(&mut data, "his_currency", s.currency.clone());
    put(
        &mut data,
        "his_department",
        s.department
            .as_ref()
            .and_then(|c| c.code.clone().or_else(|| c.text.clone())),
    );
    if let Some(active) = s.active {
        data.insert("his_is_active".into(), Value::Bool(active));
    }
    data
}

/// The `schedule.*` data of a block of schedule time (an appointment whose status is
/// `blocked`): its id, doctor, clinic, start, end, reason and status.
fn schedule_data(a: &Appointment, id: &str, status: &str) -> Map<String, Value> {
    let mut data = Map::new();
    put(&mut data, "his_schedule_id", Some(id));
    put(
        &mut data,
        "his_doctor_id",
        a.practitioner.as_ref().and_then(|p| p.code.clone()),
    );
    put(
        &mut data,
        "his_location_id",
        a.location.as_ref().and_then(|l| l.code.clone()),
    );
    put(
        &mut data,
        "his_service_id",
        a.service.as_ref().and_then(|c| c.code.clone()),
    );
    put(&mut data, "his_start_at", a.start.as_ref().map(local));
    put(&mut data, "his_end_at", a.end.as_ref().map(local));
    put(
        &mut data,
        "his_reason",
        a.reason.as_ref().and_then(|c| c.label()).map(str::to_owned),
    );
    put(&mut data, "his_status", Some(status));
    data
}

/// Renders a canonical event as Buktor webhook envelopes, in the order they must be sent.
///
/// | canonical event | Buktor `type` |
/// |---|---|
/// | appointment booked | `appointment.created` |
/// | rescheduled, modified, cancelled, discontinued, no-show | `appointment.updated` (with `his_status`) |
/// | appointment deleted | `appointment.deleted` |
/// | charge posted/reversed with a payment outcome | `payment.successful` / `payment.failed`, one per charge |
/// | location created / updated / deactivated / deleted | `location.created` / `location.updated` / `location.updated` (`his_is_active` false) / `location.deleted` |
/// | service created / updated / deactivated / deleted | `service.created` / `service.updated` / `service.updated` (`his_is_active` false) / `service.deleted` |
/// | slot blocked (SIU^S23) | `schedule.created` (`his_status` `blocked`) |
/// | a blocked slot rescheduled, modified or its resources changed (SIU^S13, S14, S18-S22 of a block) | `schedule.updated` |
/// | slot opened (SIU^S24) | `schedule.deleted` (`his_status` `open`): the block is gone |
/// | schedule updated / deactivated (FHIR Schedule) | `schedule.updated` (`his_is_active` false when deactivated) |
///
/// With `emit_locations`, an appointment's clinic is sent first as `location.updated`.
/// Other events (patients, visits, orders, practitioners) give an empty list.
///
/// # Errors
/// [`MappingError`] when the appointment, location or service id or the event time is
/// missing.
pub fn render(event: &Event, opts: &BuktorOptions) -> Result<Vec<Rendered>, MappingError> {
    let when = event
        .source
        .event_time
        .as_ref()
        .or(event.source.message_time.as_ref());
    let mut out = Vec::new();
    if let Some(rendered) = render_master(event, when, opts)? {
        out.push(rendered);
        return Ok(out);
    }
    if let Some(rendered) = render_schedule(event, when, opts)? {
        out.push(rendered);
        return Ok(out);
    }
    if let Some(rendered) = render_availability(event, when, opts)? {
        out.push(rendered);
        return Ok(out);
    }
    let appointment_type = match event.kind {
        EventKind::AppointmentBooked => Some("appointment.created"),
        EventKind::AppointmentRescheduled
        | EventKind::AppointmentModified
        | EventKind::AppointmentCancelled
        | EventKind::AppointmentDiscontinued
        | EventKind::AppointmentNoShow
        | EventKind::AppointmentResourceAdded
        | EventKind::AppointmentResourceModified
        | EventKind::AppointmentResourceCancelled
        | EventKind::AppointmentResourceDiscontinued
        | EventKind::AppointmentResourceDeleted => Some("appointment.updated"),
        EventKind::AppointmentDeleted => Some("appointment.deleted"),
        _ => None,
    };
    if let Some(event_type) = appointment_type {
        let when = when.ok_or_else(|| super::missing("source.message_time"))?;
        let a = event
            .appointment
            .as_ref()
            .ok_or_else(|| super::missing("appointment"))?;
        let id = a
            .filler_id
            .as_deref()
            .or(a.placer_id.as_deref())
            .ok_or_else(|| super::missing("appointment.filler_id"))?;
        if opts.emit_locations {
            if let Some(l) = a.location.as_ref().filter(|l| l.code.is_some()) {
                let code = l.code.as_deref().unwrap_or_default();
                out.push(envelope(
                    event,
                    "location.updated",
                    code,
                    &utc(when),
                    location_data(l),
                    opts,
                )?);
            }
        }
        let patient_id = event
            .patient
            .as_ref()
            .and_then(|p| p.primary_identifier())
            .or(a.patient.as_ref())
            .map(|i| i.value.clone());
        let status_key = super::opsport::status_key(a.status);
        let status = opts
            .statuses
            .get(status_key)
            .cloned()
            .unwrap_or_else(|| default_status(a.status).to_owned());
        let mut data = Map::new();
        put(&mut data, "his_appointment_id", Some(id));
        put(&mut data, "his_patient_id", patient_id);
        put(
            &mut data,
            "his_doctor_id",
            a.practitioner.as_ref().and_then(|p| p.code.clone()),
        );
        put(
            &mut data,
            "his_location_id",
            a.location.as_ref().and_then(|l| l.code.clone()),
        );
        put(
            &mut data,
            "his_service_id",
            a.service.as_ref().and_then(|c| c.code.clone()),
        );
        put(&mut data, "his_status", Some(status));
        put(&mut data, "his_start_at", a.start.as_ref().map(local));
        put(&mut data, "his_end_at", a.end.as_ref().map(local));
        put(
            &mut data,
            "his_reason",
            a.reason.as_ref().and_then(|c| c.label()).map(str::to_owned),
        );
        put(&mut data, "his_notes", a.notes.clone());
        put(&mut data, "his_created_at", Some(local(when)));
        out.push(envelope(event, event_type, id, &utc(when), data, opts)?);
    }
    if matches!(
        event.kind,
        EventKind::ChargePosted | EventKind::ChargeReversed
    ) {
        for (i, charge) in event.charges.iter().enumerate() {
            let Some(payment) = &charge.payment else {
                continue;
            };
            let event_type = match payment.result {
                PaymentResult::Success => "payment.successful",
                PaymentResult::Failure => "payment.failed",
            };
            let when = charge
                .transaction_date
                .as_ref()
                .or(when)
                .ok_or_else(|| super::missing("charges.transaction_date"))?;
            let id = charge
                .transaction_id
                .clone()
                .or_else(|| payment.reference.clone())
                .unwrap_or_else(|| format!("{}#{i}", event.source.control_id));
            let mut data = Map::new();
            put(&mut data, "his_payment_id", Some(id.clone()));
            put(
                &mut data,
                "his_patient_id",
                event
                    .patient
                    .as_ref()
                    .and_then(|p| p.primary_identifier())
                    .map(|i| i.value.clone()),
            );
            put(&mut data, "his_visit_id", charge.visit_number.clone());
            put(&mut data, "his_account_id", charge.account.clone());
            put(
                &mut data,
                "his_amount",
                charge.amount.as_ref().map(|d| d.to_string()),
            );
            put(&mut data, "his_currency", charge.currency.clone());
            put(
                &mut data,
                "his_service_code",
                charge.code.as_ref().and_then(|c| c.code.clone()),
            );
            put(
                &mut data,
                "his_description",
                charge.code.as_ref().and_then(|c| c.text.clone()),
            );
            put(&mut data, "his_reference", payment.reference.clone());
            put(&mut data, "his_failure_reason", payment.reason.clone());
            put(
                &mut data,
                "his_status",
                Some(match charge.status {
                    ChargeStatus::Posted => "posted",
                    ChargeStatus::Reversed => "reversed",
                }),
            );
            put(&mut data, "his_paid_at", Some(local(when)));
            out.push(envelope(event, event_type, &id, &utc(when), data, opts)?);
        }
    }
    Ok(out)
}

/// The `location.*` or `service.*` envelope of a master-data event; `None` for other kinds.
fn render_master(
    event: &Event,
    when: Option<&Timestamp>,
    opts: &BuktorOptions,
) -> Result<Option<Rendered>, MappingError> {
    let (event_type, active) = match event.kind {
        EventKind::LocationCreated => ("location.created", None),
        EventKind::LocationUpdated => ("location.updated", None),
        EventKind::LocationDeactivated => ("location.updated", Some(false)),
        EventKind::LocationDeleted => ("location.deleted", None),
        EventKind::ServiceCreated => ("service.created", None),
        EventKind::ServiceUpdated => ("service.updated", None),
        EventKind::ServiceDeactivated => ("service.updated", Some(false)),
        EventKind::ServiceDeleted => ("service.deleted", None),
        _ => return Ok(None),
    };
    let when = when.ok_or_else(|| super::missing("source.message_time"))?;
    let (id, mut data) = if event_type.starts_with("location") {
        let l = event
            .location
            .as_ref()
            .ok_or_else(|| super::missing("location"))?;
        let id = l
            .code
            .clone()
            .ok_or_else(|| super::missing("location.code"))?;
        (id, location_data(l))
    } else {
        let s = event
            .service
            .as_ref()
            .ok_or_else(|| super::missing("service"))?;
        (s.code.clone(), service_data(s))
    };
    if let Some(active) = active {
        data.insert("his_is_active".into(), Value::Bool(active));
    }
    put(&mut data, "his_updated_at", Some(local(when)));
    envelope(event, event_type, &id, &utc(when), data, opts).map(Some)
}

/// The `schedule.*` envelope of a blocked slot: blocked (S23), opened (S24), or an appointment
/// event about a block; `None` for other kinds.
fn render_schedule(
    event: &Event,
    when: Option<&Timestamp>,
    opts: &BuktorOptions,
) -> Result<Option<Rendered>, MappingError> {
    let is_block = || {
        event
            .appointment
            .as_ref()
            .is_some_and(|a| a.status == AppointmentStatus::Blocked)
    };
    let (event_type, status) = match event.kind {
        EventKind::SlotBlocked => ("schedule.created", "blocked"),
        EventKind::SlotOpened => ("schedule.deleted", "open"),
        EventKind::AppointmentRescheduled
        | EventKind::AppointmentModified
        | EventKind::AppointmentResourceAdded
        | EventKind::AppointmentResourceModified
        | EventKind::AppointmentResourceCancelled
        | EventKind::AppointmentResourceDiscontinued
        | EventKind::AppointmentResourceDeleted
            if is_block() =>
        {
            ("schedule.updated", "blocked")
        }
        _ => return Ok(None),
    };
    let when = when.ok_or_else(|| super::missing("source.message_time"))?;
    let a = event
        .appointment
        .as_ref()
        .ok_or_else(|| super::missing("appointment"))?;
    let id = a
        .filler_id
        .as_deref()
        .or(a.placer_id.as_deref())
        .ok_or_else(|| super::missing("appointment.filler_id"))?;
    let mut data = schedule_data(a, id, status);
    put(&mut data, "his_updated_at", Some(local(when)));
    envelope(event, event_type, id, &utc(when), data, opts).map(Some)
}

/// The `schedule.updated` envelope of a schedule (FHIR Schedule in): its id, first doctor,
/// clinic and service, planning horizon and whether it is active; `None` for other kinds.
fn render_availability(
    event: &Event,
    when: Option<&Timestamp>,
    opts: &BuktorOptions,
) -> Result<Option<Rendered>, MappingError> {
    let deactivated = match event.kind {
        EventKind::ScheduleUpdated => false,
        EventKind::ScheduleDeactivated => true,
        _ => return Ok(None),
    };
    let when = when.ok_or_else(|| super::missing("source.message_time"))?;
    let s = event
        .schedule
        .as_ref()
        .ok_or_else(|| super::missing("schedule"))?;
    let id =
        s.id.as_deref()
            .ok_or_else(|| super::missing("schedule.id"))?;
    let mut data = Map::new();
    put(&mut data, "his_schedule_id", Some(id));
    let doctor = s.practitioners.first().and_then(|p| p.code.clone());
    put(&mut data, "his_doctor_id", doctor);
    let clinic = s.locations.first().and_then(|l| l.code.clone());
    put(&mut data, "his_location_id", clinic);
    let service = s.services.first().and_then(|c| c.code.clone());
    put(&mut data, "his_service_id", service);
    put(
        &mut data,
        "his_start_at",
        s.planning_start.as_ref().map(local),
    );
    put(&mut data, "his_end_at", s.planning_end.as_ref().map(local));
    if let Some(active) = s
        .active
        .filter(|_| !deactivated)
        .or(deactivated.then_some(false))
    {
        data.insert("his_is_active".into(), Value::Bool(active));
    }
    put(&mut data, "his_updated_at", Some(local(when)));
    envelope(event, "schedule.updated", id, &utc(when), data, opts).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SEED_EVENT: &str = r#"{
        "event_id": "evt_123456",
        "timestamp": "2025-01-08T12:00:00Z",
        "type": "appointment.created",
        "operation": "created",
        "data": {
            "his_appointment_id": "A123",
            "his_patient_id": "P456",
            "his_doctor_id": "D789",
            "his_status": "confirmed",
            "his_created_at": "2025-03-02T10:30:45"
        },
        "source": "HIS"
    }"#;

    const SEED_MAPPING: &str = r#"{
        "clients": {"1001": {"mappings": {"appointment.created": {"fields": {
            "his_appointment_id": "buktor_appointment_id",
            "his_patient_id": "buktor_patient_id",
            "his_doctor_id": "buktor_doctor_id",
            "his_status": "buktor_status",
            "his_created_at": "buktor_created_at"
        }}}}}
    }"#;

    #[test]
    fn seed_mapping_renames_the_seed_event() {
        let event: BuktorEvent = serde_json::from_str(SEED_EVENT).expect("seed event");
        assert!(event.check().is_ok());
        let file: BuktorMappingFile = serde_json::from_str(SEED_MAPPING).expect("seed mapping");
        assert!(file.validate().is_empty());
        let mapped = file.apply("1001", &event).expect("mapped");
        assert_eq!(
            Value::Object(mapped),
            json!({
                "buktor_appointment_id": "A123", "buktor_patient_id": "P456",
                "buktor_doctor_id": "D789", "buktor_status": "confirmed",
                "buktor_created_at": "2025-03-02T10:30:45"
            })
        );
        let err = file.apply("2002", &event).expect_err("no mapping");
        assert_eq!(
            err.to_string(),
            "No mapping found for event_type 'appointment.created' and Client-ID 2002."
        );
    }

    #[test]
    fn check_rejects_unknown_types_and_mismatched_operations() {
        let mut event: BuktorEvent = serde_json::from_str(SEED_EVENT).expect("seed event");
        event.operation = "updated".into();
        assert!(event.check().is_err_and(|e| e.starts_with("operation")));
        event.event_type = "visit.created".into();
        assert!(event.check().is_err_and(|e| e.starts_with("type")));
    }

    #[test]
    fn event_ids_are_deterministic_per_message_type_and_entity() {
        let text = include_str!("../../../fixtures/model/_dest_inputs/siu_s12_booked.json");
        let event: Event = serde_json::from_str(text).expect("fixture");
        let a = render(&event, &BuktorOptions::default()).expect("renders");
        let b = render(&event, &BuktorOptions::default()).expect("renders");
        assert_eq!(a, b);
        assert!(a[0].idempotency_key.starts_with("evt_"));
        assert_ne!(
            event_id(&event, "appointment.created", "APT-5501"),
            event_id(&event, "appointment.updated", "APT-5501")
        );
        // A rendered envelope is accepted by the inbound side.
        let body = serde_json::to_string(&a[0].body).expect("json");
        let back = crate::from_json::buktor::events_from_body(&body).expect("reads back");
        let appointment = back[0].appointment.as_ref().expect("appointment");
        assert_eq!(appointment.filler_id.as_deref(), Some("APT-5501"));
        assert_eq!(appointment.status, AppointmentStatus::Booked);
    }

    #[test]
    fn options_map_status_and_emit_locations_first() {
        let text = include_str!("../../../fixtures/model/_dest_inputs/siu_s12_booked.json");
        let event: Event = serde_json::from_str(text).expect("fixture");
        let opts: BuktorOptions = serde_json::from_value(json!({
            "statuses": {"booked": "BOOKED"},
            "emit_locations": true,
            "mapping": {"rename": {"data.his_status": "status"}}
        }))
        .expect("options");
        let out = render(&event, &opts).expect("renders");
        let kinds: Vec<&str> = out.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["location.updated", "appointment.created"]);
        assert_eq!(out[1].body["data"]["status"], json!("BOOKED"));
    }
}
