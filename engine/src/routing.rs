//! Routes: which destinations a message goes to, and what is sent there.
//!
//! A channel's `[[route]]` tables are checked in order; every route whose `when` holds adds
//! its `to` destinations (fan-out). A message no route matches is stored as `filtered`. The
//! payload is rendered here, once, when the message is routed; retries resend those bytes.

use crate::store::kind::ItemPayload;
use crate::store::ledger::AppointmentRef;
use crate::store::outbox::OutboxItem;
use crate::store::MessageRecord;
use channels::destination::{DestinationConfig, Partition};
use channels::source::RecordFormat;
use hl7_parser::query::LocationQuery;
use serde::Deserialize;
use std::collections::HashMap;
use transforms::dest::Vendor;
use transforms::hl7v2::access::{V2Message, Value};
use transforms::hl7v2::validate::type_matches;
use transforms::model::Event;

/// One `[[route]]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// A name for logs and `check`; defaults to `route N`.
    #[serde(default)]
    pub name: Option<String>,
    /// Conditions, all of which must hold; none means every message.
    #[serde(default)]
    pub when: When,
    /// What to send: `hl7` (the message as received), `canonical` (the canonical event as
    /// JSON), `fhir` (a FHIR R4 transaction Bundle), a vendor's own requests (`opsport`,
    /// `buktor`, `px360`, `latrexa`) or `dicom`. Defaults to the destination's own; an
    /// unknown name is refused when the file is loaded, with its key.
    #[serde(default)]
    pub payload: Option<PayloadKind>,
    /// Destination names of this channel.
    pub to: Vec<String>,
    /// Field mapping (rename, constant, default, values, drop) applied to this route's JSON
    /// payloads after the destination's own `[destination.mapping]`; an inline table
    /// (`[route.mapping]`), not a file.
    #[serde(default)]
    pub mapping: Option<transforms::mapping::FieldMapping>,
}

/// The conditions of a route.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// Message type patterns (`ADT^*`, `SIU^S12`); any of them.
    #[serde(default)]
    pub message_type: Vec<String>,
    /// MSH-3 values (first component); any of them.
    #[serde(default)]
    pub sending_application: Vec<String>,
    /// MSH-4 values (first component); any of them.
    #[serde(default)]
    pub sending_facility: Vec<String>,
    /// Field predicates on HL7 paths; all of them.
    #[serde(default)]
    pub field: Vec<FieldPredicate>,
}

/// A predicate on one HL7 value, addressed like `PID.3[1].4` or `PV1.2`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FieldPredicate {
    /// The HL7 path (`SEG[n].field[rep].component.subcomponent`); a path that stops at a
    /// field, repetition or component compares the whole of it, escapes decoded.
    pub path: String,
    /// The value equals this.
    #[serde(default)]
    pub equals: Option<String>,
    /// The value is one of these.
    #[serde(default, rename = "in")]
    pub one_of: Option<Vec<String>>,
    /// The value matches this regular expression.
    #[serde(default)]
    pub regex: Option<String>,
    /// The value is present and not empty (`true`) or absent/empty (`false`).
    #[serde(default)]
    pub exists: Option<bool>,
    /// Negates the predicate.
    #[serde(default)]
    pub not: bool,
}

/// The payloads a route can send.
pub use channels::kind::PayloadKind;

struct Compiled {
    when: When,
    regexes: Vec<Option<regex::Regex>>,
    targets: Vec<(String, PayloadKind)>,
    mapping: Option<std::sync::Arc<transforms::mapping::FieldMapping>>,
}

/// A channel's routes, checked and ready.
pub struct Router {
    channel: String,
    /// The channel's `timezone`, for HL7 v2 times without an offset.
    timezone: Option<transforms::model::Tz>,
    routes: Vec<Compiled>,
    partitions: HashMap<String, Partition>,
    destinations: HashMap<String, DestinationConfig>,
}

/// Problems in routes: (key, message, hint).
pub type RouteProblems = Vec<(String, String, String)>;

impl Router {
    /// Checks and compiles a channel's routes against its destinations.
    ///
    /// # Errors
    ///
    /// Every problem: unknown destination, bad regex, bad path.
    pub fn compile(
        channel: &str,
        routes: &[RouteConfig],
        destinations: &[DestinationConfig],
    ) -> Result<Router, RouteProblems> {
        let mut problems = Vec::new();
        let by_name: HashMap<&str, &DestinationConfig> =
            destinations.iter().map(|d| (d.name(), d)).collect();
        let mut compiled = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            let key = |k: &str| format!("route[{i}].{k}");
            let mut regexes = Vec::new();
            for (j, f) in r.when.field.iter().enumerate() {
                if LocationQuery::parse(&f.path).is_err() {
                    problems.push((
                        key(&format!("when.field[{j}].path")),
                        format!("'{}' is not an HL7 path", f.path),
                        "use SEG.field, such as PID.3 or PID.3[1].4".into(),
                    ));
                }
                let conditions = [
                    f.equals.is_some(),
                    f.one_of.is_some(),
                    f.regex.is_some(),
                    f.exists.is_some(),
                ]
                .iter()
                .filter(|b| **b)
                .count();
                if conditions != 1 {
                    problems.push((
                        key(&format!("when.field[{j}]")),
                        "give exactly one of equals, in, regex, exists".into(),
                        String::new(),
                    ));
                }
                regexes.push(match &f.regex {
                    Some(re) => match regex::Regex::new(re) {
                        Ok(re) => Some(re),
                        Err(e) => {
                            problems.push((
                                key(&format!("when.field[{j}].regex")),
                                format!("invalid regular expression: {e}"),
                                String::new(),
                            ));
                            None
                        }
                    },
                    None => None,
                });
            }
            for (j, p) in r.when.message_type.iter().enumerate() {
                if p.is_empty() || p.split('^').count() > 2 {
                    problems.push((
                        key(&format!("when.message_type[{j}]")),
                        format!("'{p}' is not a message type pattern"),
                        "use *, ADT^*, or ADT^A04".into(),
                    ));
                }
            }
            if r.to.is_empty() {
                problems.push((
                    key("to"),
                    "a route needs at least one destination".into(),
                    String::new(),
                ));
            }
            let mut targets = Vec::new();
            for (j, name) in r.to.iter().enumerate() {
                let Some(dest) = by_name.get(name.as_str()) else {
                    let known: Vec<&str> = by_name.keys().copied().collect();
                    problems.push((
                        key(&format!("to[{j}]")),
                        format!("unknown destination '{name}'"),
                        format!(
                            "destinations of this channel: {}",
                            if known.is_empty() {
                                "(none)".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                    continue;
                };
                targets.push((name.clone(), r.payload.unwrap_or(dest.default_payload())));
            }
            if let Some(m) = &r.mapping {
                for p in m.validate_at("mapping") {
                    problems.push((key(&p.key), p.message, String::new()));
                }
            }
            compiled.push(Compiled {
                when: r.when.clone(),
                regexes,
                targets,
                mapping: r.mapping.clone().map(std::sync::Arc::new),
            });
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Router {
            channel: channel.to_string(),
            timezone: None,
            routes: compiled,
            partitions: destinations
                .iter()
                .map(|d| (d.name().to_string(), d.delivery().partition))
                .collect(),
            destinations: destinations
                .iter()
                .map(|d| (d.name().to_string(), d.clone()))
                .collect(),
        })
    }

    /// The router with the channel's `timezone` (checked when the configuration loaded):
    /// HL7 v2 times without an offset are local times there in every payload it renders.
    pub fn with_timezone(mut self, timezone: Option<transforms::model::Tz>) -> Self {
        self.timezone = timezone;
        self
    }

    /// Renders the outbox items for a message; empty when no route matches.
    /// `only` restricts the destinations (reprocess); `key_suffix` makes idempotency keys
    /// of a reprocess differ from the original's. With `store`, a PX360 payload carries its
    /// visit's timeline kept there (see [`crate::store::journey`]); without, the event's own.
    #[allow(clippy::too_many_arguments)]
    pub fn render(
        &self,
        record: &MessageRecord,
        raw: &[u8],
        seq: &mut dyn FnMut() -> u64,
        now_ms: u64,
        only: Option<&[String]>,
        key_suffix: &str,
        store: Option<&crate::store::Store>,
    ) -> Vec<OutboxItem> {
        self.render_read(record, raw, None, seq, now_ms, (only, key_suffix), store)
    }

    /// The channel's `timezone`, in which [`Router::render_read`] expects a reading.
    pub fn timezone(&self) -> Option<transforms::model::Tz> {
        self.timezone
    }

    /// [`Router::render`] with the message's canonical reading already made (by
    /// [`crate::formats::events_of_in`] in the channel's timezone), so that it is not made
    /// twice; `None` reads it here when a payload needs it.
    #[allow(clippy::too_many_arguments)]
    pub fn render_read(
        &self,
        record: &MessageRecord,
        raw: &[u8],
        read: Option<crate::formats::Meaning>,
        seq: &mut dyn FnMut() -> u64,
        now_ms: u64,
        (only, key_suffix): (Option<&[String]>, &str),
        store: Option<&crate::store::Store>,
    ) -> Vec<OutboxItem> {
        let text = transforms::hl7v2::charset::decode_lossy(raw, &record.charset);
        // The index-only reader: its cost is a small multiple of the message's size whatever
        // the message holds (a full tree of a field of 900,000 repetitions took 400 MB).
        // Read only when a field predicate or a destination's partition needs it.
        let parsed = std::cell::OnceCell::new();
        let parsed = || parsed.get_or_init(|| V2Message::parse(&text).ok());
        let targets = self.targets(record, &parsed, only);
        let format = record.format.known();
        let hl7 = format == Some(RecordFormat::Hl7v2);
        let by_patient = targets
            .iter()
            .any(|t| matches!(self.partitions.get(&t.dest), Some(Partition::Patient)));
        // The canonical events are read when a JSON payload needs them, or the patient
        // partition of a record that is not HL7.
        let needs_event = (by_patient && !hl7)
            || targets
                .iter()
                .any(|t| !matches!(t.kind, PayloadKind::Hl7 | PayloadKind::Dicom));
        let (events, mapping_failure) = if needs_event {
            self.events(record, raw, read)
        } else {
            (Vec::new(), None)
        };
        let keys = PartitionKeys::of(record, hl7, by_patient, &parsed, &events);
        let input = Input {
            record,
            raw,
            format,
            events: &events,
            mapping_failure: mapping_failure.as_deref(),
            store,
        };
        // One body per (destination, event); the raw HL7 goes once whatever the events.
        let mut bodies: Vec<Body> = Vec::new();
        for target in &targets {
            self.render_target(target, &input, &mut bodies);
        }
        bodies
            .into_iter()
            .map(|b| self.outbox_item(b, record, (seq(), now_ms), key_suffix, &keys))
            .collect()
    }
}

impl Router {
    /// The destinations a message goes to, in route order: every target of every route
    /// whose `when` holds, each (destination, payload) once, those `only` names if given,
    /// with the mapping of the route that first named it.
    fn targets<'p, 'm: 'p>(
        &self,
        record: &MessageRecord,
        parsed: &dyn Fn() -> &'p Option<V2Message<'m>>,
        only: Option<&[String]>,
    ) -> Vec<Target> {
        let mut targets: Vec<Target> = Vec::new();
        for r in &self.routes {
            if matches(&r.when, &r.regexes, record, parsed) {
                for (dest, kind) in &r.targets {
                    let seen = targets.iter().any(|t| t.dest == *dest && t.kind == *kind);
                    if !seen && only.is_none_or(|o| o.contains(dest)) {
                        targets.push(Target {
                            dest: dest.clone(),
                            kind: *kind,
                            mapping: r.mapping.clone(),
                        });
                    }
                }
            }
        }
        targets
    }

    /// The message's canonical events, from `read` or read here, and the reason they could
    /// not be made, if so (its JSON deliveries then go to the dead letters). A message type
    /// with no canonical form has no events and no failure.
    fn events(
        &self,
        record: &MessageRecord,
        raw: &[u8],
        read: Option<crate::formats::Meaning>,
    ) -> (Vec<Event>, Option<String>) {
        let read = read.unwrap_or_else(|| crate::formats::events_of_in(record, raw, self.timezone));
        match read {
            crate::formats::Meaning::Events(e) => (e, None),
            crate::formats::Meaning::Unsupported(_) => (Vec::new(), None),
            crate::formats::Meaning::Failed(e) => {
                tracing::warn!(channel = %self.channel, id = record.id, error = %e, "Mapping failed; the JSON deliveries of this message go to the dead letters.");
                (Vec::new(), Some(e))
            }
        }
    }

    /// Renders the bodies one target sends, pushing them onto `bodies`: the stored DICOM
    /// object, the HL7 v2 message (a DICOM study's as an ORU^R01), a vendor's requests or
    /// the canonical or FHIR JSON of each event. What cannot be rendered is a failed body.
    fn render_target(&self, target: &Target, input: &Input<'_>, bodies: &mut Vec<Body>) {
        let (dest, kind) = (target.dest.clone(), target.kind);
        let dicom = input.format == Some(RecordFormat::Dicom);
        if kind == PayloadKind::Dicom {
            // Only what a DICOM storage source stored has an object to send.
            bodies.push(if dicom {
                Body::new(
                    dest,
                    kind,
                    input.raw.to_vec(),
                    channels::dicom::sender::CONTENT_TYPE,
                )
            } else {
                Body::failed(
                    dest,
                    kind,
                    "payload dicom: the message is not a stored DICOM object",
                )
            });
        } else if kind == PayloadKind::Hl7 && dicom {
            bodies.push(match self.study_oru(input.record, input.raw) {
                Ok(text) => Body::hl7(dest, text.into_bytes(), input.record),
                Err(reason) => Body::failed(dest, kind, &reason),
            });
        } else if kind == PayloadKind::Hl7 {
            bodies.push(Body::hl7(dest, input.raw.to_vec(), input.record));
        } else if let Some(reason) = input.mapping_failure {
            bodies.push(Body::failed(dest, kind, reason));
        } else if let Some(vendor) = kind.vendor() {
            self.vendor_bodies(vendor, target, input, bodies);
        } else {
            json_bodies(target, input.events, bodies);
        }
    }

    /// The HL7 v2 form of a DICOM study's announcement (ORU^R01), read again from the record;
    /// a stored object has none.
    fn study_oru(&self, record: &MessageRecord, raw: &[u8]) -> Result<String, String> {
        match crate::formats::events_of_in(record, raw, self.timezone) {
            crate::formats::Meaning::Events(e) => e
                .first()
                .ok_or_else(|| "no event".to_string())
                .and_then(|e| transforms::to_v2::study_available_oru(e).map_err(|e| e.to_string())),
            crate::formats::Meaning::Unsupported(t) => {
                Err(format!("payload hl7: a DICOM {t} has no HL7 v2 form"))
            }
            crate::formats::Meaning::Failed(e) => Err(e),
        }
    }

    /// A vendor's requests for each event, each a body; with several events or requests,
    /// each body's key suffix tells it apart (`-e<event>-<request>-<kind>`). A PX360 request
    /// carries its visit's timeline from the store, when there is one.
    fn vendor_bodies(
        &self,
        vendor: Vendor,
        target: &Target,
        input: &Input<'_>,
        bodies: &mut Vec<Body>,
    ) {
        let (dest, kind) = (&target.dest, target.kind);
        let record = input.record;
        for (n, event) in input.events.iter().enumerate() {
            let timeline = match (vendor, input.store) {
                (Vendor::Px360, Some(store)) => {
                    match self.timeline(store, dest, event, (record.id, n)) {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::warn!(channel = %self.channel, id = record.id, destination = %dest, error = %e, "Visit timeline unavailable; the delivery goes to the dead letters.");
                            bodies.push(Body::failed(
                                dest.clone(),
                                kind,
                                &format!("visit timeline: {e}"),
                            ));
                            continue;
                        }
                    }
                }
                (Vendor::Opsport | Vendor::Buktor | Vendor::Latrexa, _) | (Vendor::Px360, None) => {
                    None
                }
            };
            let rendered = crate::vendor::render_with(
                vendor,
                self.destinations.get(dest),
                event,
                timeline.as_ref(),
                target.mapping.as_deref(),
            );
            let rendered = match rendered {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(channel = %self.channel, id = record.id, destination = %dest, error = %e, "Mapping failed; the delivery goes to the dead letters.");
                    bodies.push(Body::failed(dest.clone(), kind, &e.to_string()));
                    continue;
                }
            };
            let many = input.events.len() > 1 || rendered.len() > 1;
            for (m, r) in rendered.into_iter().enumerate() {
                let suffix = if many {
                    format!("-e{n}-{m}-{}", r.kind)
                } else {
                    String::new()
                };
                bodies.extend(vendor_body(target, event, r, suffix));
            }
        }
    }

    /// The outbox item of one body: its sequence number and creation time (`now_ms`), its
    /// partition on its destination and its idempotency key
    /// (`<message id>-<destination><key_suffix><body's suffix>`).
    fn outbox_item(
        &self,
        b: Body,
        record: &MessageRecord,
        (seq, now_ms): (u64, u64),
        key_suffix: &str,
        keys: &PartitionKeys,
    ) -> OutboxItem {
        let Body {
            dest,
            kind,
            body,
            content_type,
            control_id,
            suffix,
            path,
            failure,
            appointment,
            reference,
            master,
        } = b;
        OutboxItem {
            destination: format!("{}/{dest}", self.channel),
            seq,
            message_id: record.id,
            partition: keys.on(self.partitions.get(&dest)),
            created_at_ms: now_ms,
            attempts: 0,
            next_attempt_ms: now_ms,
            last_error: failure.clone().unwrap_or_default(),
            content_type: content_type.into(),
            idempotency_key: format!("{}-{dest}{key_suffix}{suffix}", record.id),
            control_id,
            message_type: span_type(record),
            path,
            payload: if failure.is_some() {
                ItemPayload::MappingFailed
            } else {
                ItemPayload::Rendered(kind)
            }
            .into(),
            appointment,
            reference,
            master,
            body,
        }
    }

    /// The timeline of the event's visit with the event's steps in it, kept in `store`
    /// (`None` when the event names no visit).
    fn timeline(
        &self,
        store: &crate::store::Store,
        dest: &str,
        event: &transforms::model::Event,
        (message_id, n): (u64, usize),
    ) -> Result<Option<transforms::journey::Timeline>, crate::store::StoreError> {
        let Some(visit) = transforms::journey::visit_key(event) else {
            return Ok(None);
        };
        let opts = crate::vendor::px360_options(self.destinations.get(dest));
        let n = u16::try_from(n).unwrap_or(u16::MAX);
        store
            .journey_step(&visit, (message_id, n), |so_far| {
                transforms::journey::delta_of(event, so_far, &opts.departments)
            })
            .map(Some)
    }
}

/// The delivery partition of a record that is not HL7: the first identifier of the first
/// patient its events name (empty, one shared FIFO, when none does).
fn partition_of_events(events: &[transforms::model::Event]) -> String {
    events
        .iter()
        .filter_map(|e| e.patient.as_ref())
        .flat_map(|p| p.identifiers.iter())
        .map(|i| i.value.as_str())
        .find(|v| !v.is_empty())
        .unwrap_or_default()
        .to_owned()
}

/// One destination a message goes to: the payload it gets there and the field mapping of the
/// route that named it.
struct Target {
    dest: String,
    kind: PayloadKind,
    mapping: Option<std::sync::Arc<transforms::mapping::FieldMapping>>,
}

/// What the targets of one message are rendered from.
struct Input<'a> {
    record: &'a MessageRecord,
    raw: &'a [u8],
    format: Option<RecordFormat>,
    /// The canonical events, when a payload or partition needs them.
    events: &'a [Event],
    /// Why the events could not be made: every JSON payload fails with it.
    mapping_failure: Option<&'a str>,
    /// Where PX360 visit timelines are kept.
    store: Option<&'a crate::store::Store>,
}

/// The partition of a message's items on destinations partitioned by patient.
struct PartitionKeys {
    /// The patient's identifier; empty (one shared FIFO) when there is none.
    patient: String,
    /// Master data, which goes to [`MASTER_PARTITION`] instead.
    master: bool,
}

impl PartitionKeys {
    /// The keys of `record`: the patient only when some target is partitioned by patient
    /// (`by_patient`), from PID-3 for HL7 and from `events` otherwise.
    fn of<'p, 'm: 'p>(
        record: &MessageRecord,
        hl7: bool,
        by_patient: bool,
        parsed: &dyn Fn() -> &'p Option<V2Message<'m>>,
        events: &[Event],
    ) -> PartitionKeys {
        // HL7 is partitioned by PID-3's first identifier; any other record (FHIR, JSON
        // webhooks, DICOM) by its events' patient.
        let patient = if !by_patient {
            String::new()
        } else if hl7 {
            parsed()
                .as_ref()
                .and_then(|m| value(m, "PID.3[1].1"))
                .unwrap_or_default()
        } else {
            partition_of_events(events)
        };
        // Master data (a master file, or events that are all master-data changes) has one
        // partition of its own, which the delivery worker sends ahead of anything queued
        // after it (see `crate::delivery`).
        let master = if hl7 {
            record.message_type.starts_with("MFN^")
        } else {
            !events.is_empty() && events.iter().all(|e| e.kind.is_master_data())
        };
        PartitionKeys { patient, master }
    }

    /// The partition on a destination with this `partition` setting.
    fn on(&self, partition: Option<&Partition>) -> String {
        match partition {
            Some(Partition::None) | None => String::new(),
            Some(Partition::Patient) if self.master => MASTER_PARTITION.to_owned(),
            Some(Partition::Patient) => self.patient.clone(),
        }
    }
}

/// The canonical or FHIR JSON of each event, with the route's mapping applied, pushed onto
/// `bodies`; with several events, each body's key suffix is `-e<event>`. An event that has
/// no such form (or no FHIR Bundle) sends nothing.
fn json_bodies(target: &Target, events: &[Event], bodies: &mut Vec<Body>) {
    let kind = target.kind;
    for (n, event) in events.iter().enumerate() {
        let suffix = if events.len() > 1 {
            format!("-e{n}")
        } else {
            String::new()
        };
        let rendered = match kind {
            PayloadKind::Hl7 | PayloadKind::Dicom | PayloadKind::Vendor(_) => None,
            PayloadKind::Canonical => serde_json::to_vec(event)
                .ok()
                .map(|b| (b, "application/json")),
            PayloadKind::Fhir => transforms::fhir::render_bundle(event, &Default::default())
                .ok()
                .flatten()
                .and_then(|bundle| serde_json::to_vec(&bundle.body).ok())
                .map(|b| (b, "application/fhir+json")),
        };
        let Some((mut body, content_type)) = rendered else {
            continue;
        };
        if let Some(m) = target.mapping.as_deref().filter(|m| !m.is_empty()) {
            if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&body) {
                m.apply(&mut v);
                body = serde_json::to_vec(&v).unwrap_or(body);
            }
        }
        // A FHIR Bundle of an appointment event carries the Appointment.
        let appointment = (kind == PayloadKind::Fhir)
            .then(|| appointment_ref(event))
            .flatten();
        bodies.push(Body {
            suffix,
            appointment,
            ..Body::new(target.dest.clone(), kind, body, content_type)
        });
    }
}

/// The body of one vendor request `r` made from `event`, with what the appointment ledger
/// and the reference records need; `None` when the request does not serialise.
fn vendor_body(
    target: &Target,
    event: &Event,
    r: transforms::dest::Rendered,
    suffix: String,
) -> Option<Body> {
    let body = serde_json::to_vec(&r.body).ok()?;
    // The appointment itself (not its clinic, doctor or patient upserts) is what the
    // appointment ledger keeps.
    let appointment = r
        .kind
        .starts_with("appointment")
        .then(|| appointment_ref(event))
        .flatten();
    // A clinic or doctor upsert that only comes along with an appointment is sent once;
    // master data owns the full record. The master record itself (an MFN or FHIR clinic or
    // doctor) is always sent and, once delivered, stands for the reference too.
    let master = event.appointment.is_none() && event.kind.is_master_data();
    let reference = ((event.appointment.is_some() || master)
        && matches!(r.kind.as_str(), "clinic" | "doctor"))
    .then(|| {
        let code = r.body.get("code").and_then(|c| c.as_str());
        code.map(|c| format!("{}:{c}", r.kind))
    })
    .flatten();
    let master = master && reference.is_some();
    Some(Body {
        suffix,
        path: Some(r.path),
        appointment,
        reference,
        master,
        ..Body::new(target.dest.clone(), target.kind, body, "application/json")
    })
}

/// One rendered body on its way into an outbox item.
struct Body {
    dest: String,
    kind: PayloadKind,
    body: Vec<u8>,
    content_type: &'static str,
    control_id: Option<String>,
    /// Told apart when one message carries several events.
    suffix: String,
    /// Path below the destination's base URL (vendor payloads).
    path: Option<String>,
    /// The mapping error, when there is nothing to send: the item goes to the dead letters.
    failure: Option<String>,
    /// The appointment a vendor body is about, for the appointment ledger.
    appointment: Option<AppointmentRef>,
    /// A reference record sent once (see [`OutboxItem::reference`]).
    reference: Option<String>,
    /// The master record itself (see [`OutboxItem::master`]).
    master: bool,
}

/// The delivery partition of master data (clinics, doctors, services, locations,
/// schedules) on destinations partitioned by patient: one FIFO per destination, delivered
/// ahead of every item queued after it (see `crate::delivery`). (A patient whose identifier
/// were this very text would share its FIFO: its messages would only be ordered with the
/// master data too.)
pub const MASTER_PARTITION: &str = "#master-data";

impl Body {
    /// A body of `content_type` to send as it is, with nothing else to it.
    fn new(dest: String, kind: PayloadKind, body: Vec<u8>, content_type: &'static str) -> Body {
        Body {
            dest,
            kind,
            body,
            content_type,
            control_id: None,
            suffix: String::new(),
            path: None,
            failure: None,
            appointment: None,
            reference: None,
            master: false,
        }
    }

    /// An HL7 v2 message, keyed by the record's control id.
    fn hl7(dest: String, body: Vec<u8>, record: &MessageRecord) -> Body {
        Body {
            control_id: Some(record.control_id.clone()),
            ..Body::new(dest, PayloadKind::Hl7, body, "application/hl7-v2")
        }
    }

    /// A body that could not be rendered: its item goes to the dead letters with `reason`.
    fn failed(dest: String, kind: PayloadKind, reason: &str) -> Body {
        Body {
            dest,
            kind,
            body: Vec::new(),
            content_type: "text/plain",
            control_id: None,
            suffix: String::new(),
            path: None,
            failure: Some(format!(
                "mapping failed ({} payload): {reason}",
                kind.as_str()
            )),
            appointment: None,
            reference: None,
            master: false,
        }
    }
}

/// The decoded value at an HL7 path, `None` when absent or empty. A path that stops at a
/// field, repetition or component means the whole of it (separators inside it kept); an
/// explicit null reads as `""`.
pub(crate) fn value(msg: &V2Message<'_>, path: &str) -> Option<String> {
    let q = LocationQuery::parse(path).ok()?;
    let seg = msg.segment_n(&q.segment, q.segment_index.unwrap_or(1))?;
    let rep = q.repeat.unwrap_or(1);
    let v = match (q.field, q.component, q.subcomponent) {
        (None, _, _) => {
            let text = transforms::hl7v2::escape::decode(seg.raw(), msg.separators());
            return Some(text.into_owned());
        }
        // MSH-1 and MSH-2 are the delimiters themselves.
        (Some(f), None, _) if seg.name() == "MSH" && f <= 2 => seg.get_at(f, 1, 1, 1),
        (Some(f), None, _) if q.repeat.is_none() => seg.field(f).text(),
        (Some(f), None, _) => seg.field(f).rep(rep).text(),
        (Some(f), Some(c), None) => seg.field(f).rep(rep).component(c),
        (Some(f), Some(c), Some(sub)) => seg.get_at(f, rep, c, sub),
    };
    match v {
        Value::Text(t) => Some(t.into_owned()),
        Value::Null => Some("\"\"".into()),
        Value::Absent => None,
    }
}

fn first_component(field: &str) -> &str {
    field.split('^').next().unwrap_or(field)
}

fn matches<'p, 'm: 'p>(
    w: &When,
    regexes: &[Option<regex::Regex>],
    record: &MessageRecord,
    parsed: &dyn Fn() -> &'p Option<V2Message<'m>>,
) -> bool {
    if !w.message_type.is_empty()
        && !w
            .message_type
            .iter()
            .any(|p| type_matches(p, &record.message_type))
    {
        return false;
    }
    if !w.sending_application.is_empty()
        && !w
            .sending_application
            .iter()
            .any(|a| a == first_component(&record.sending_application))
    {
        return false;
    }
    if !w.sending_facility.is_empty()
        && !w
            .sending_facility
            .iter()
            .any(|a| a == first_component(&record.sending_facility))
    {
        return false;
    }
    w.field.iter().zip(regexes).all(|(f, re)| {
        let v = parsed().as_ref().and_then(|m| value(m, &f.path));
        let holds = if let Some(e) = &f.equals {
            v.as_deref() == Some(e.as_str())
        } else if let Some(set) = &f.one_of {
            v.as_ref().is_some_and(|v| set.contains(v))
        } else if let Some(re) = re {
            v.as_ref().is_some_and(|v| re.is_match(v))
        } else if let Some(exists) = f.exists {
            v.is_some() == exists
        } else {
            false
        };
        holds != f.not
    })
}

/// The ids of the event's appointment as the ledger keys it, marked as moved for a reschedule.
fn appointment_ref(event: &transforms::model::Event) -> Option<AppointmentRef> {
    let mut r = event.appointment.as_ref().and_then(AppointmentRef::of)?;
    r.moved = event.kind == transforms::model::EventKind::AppointmentRescheduled;
    Some(r)
}

/// The message type as ingest's span names it ([`crate::delivery::message_span`]): the
/// metrics label of an HL7 v2 message (`ADT_A04`, from `ADT^A04^ADT_A01`), the stored type of
/// any other record.
fn span_type(record: &MessageRecord) -> String {
    if record.format != RecordFormat::Hl7v2 {
        return record.message_type.clone();
    }
    let mut parts = record.message_type.split('^');
    let code = parts.next().unwrap_or_default();
    crate::metrics::message_type_label(code, parts.next().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Status;

    fn record(message_type: &str, app: &str) -> MessageRecord {
        MessageRecord {
            id: 7,
            channel: "c".into(),
            received_at_ms: 0,
            peer: String::new(),
            format: RecordFormat::Hl7v2.into(),
            message_type: message_type.into(),
            control_id: "X1".into(),
            sending_application: app.into(),
            sending_facility: "MAIN".into(),
            version: "2.5".into(),
            charset: "utf-8".into(),
            size: 0,
            truncated: false,
            status: Status::Received,
            ack_code: "AA".into(),
            ack: String::new(),
            errors: vec![],
            config_version: String::new(),
            deliveries: vec![],
            business_keys: vec![],
            dedup_key: String::new(),
            resent_from: None,
        }
    }

    fn dests(toml_text: &str) -> Vec<DestinationConfig> {
        #[derive(Deserialize)]
        struct D {
            destination: Vec<DestinationConfig>,
        }
        toml::from_str::<D>(toml_text)
            .expect("valid destinations")
            .destination
    }

    fn routes(toml_text: &str) -> Vec<RouteConfig> {
        #[derive(Deserialize)]
        struct R {
            route: Vec<RouteConfig>,
        }
        toml::from_str::<R>(toml_text).expect("valid routes").route
    }

    const DESTS: &str = "[[destination]]\nname = \"a\"\ntype = \"mllp\"\naddress = \"127.0.0.1:1\"\n[[destination]]\nname = \"b\"\ntype = \"file\"\nfolder = \"/tmp/x\"\n[destination.delivery]\npartition = \"none\"\n";
    const MSG: &[u8] = b"MSH|^~\\&|HIS|MAIN|SB|HUB|2025||ADT^A04|X1|P|2.5\rPID|1||MRN1^^^MAIN^MR~NID9^^^GOV^NI||Doe^Jo||19800101|F\rPV1|1|I|WARD^12\r";

    fn rendered(route_text: &str, message_type: &str, app: &str) -> Vec<(String, String)> {
        let router = Router::compile("c", &routes(route_text), &dests(DESTS)).expect("valid");
        let mut n = 0;
        router
            .render(
                &record(message_type, app),
                MSG,
                &mut || {
                    n += 1;
                    n
                },
                1,
                None,
                "",
                None,
            )
            .into_iter()
            .map(|i| (i.destination, i.partition))
            .collect()
    }

    #[test]
    fn fan_out_and_partitions() {
        let got = rendered("[[route]]\nwhen = { message_type = [\"ADT^*\"] }\nto = [\"a\"]\n[[route]]\nto = [\"b\", \"a\"]\n", "ADT^A04", "HIS");
        assert_eq!(
            got,
            vec![
                ("c/a".to_string(), "MRN1".to_string()),
                ("c/b".to_string(), String::new())
            ]
        );
    }

    /// A record that is not HL7 (here a FHIR Patient) is partitioned by its events' patient,
    /// as an HL7 message is by PID-3, so its deliveries do not all share one FIFO.
    #[test]
    fn a_fhir_record_is_partitioned_by_its_patient() {
        let raw = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fixtures/fhir/patient/full.input.json"),
        )
        .expect("fixture");
        let json_dest =
            "[[destination]]\nname = \"j\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\n";
        let router = Router::compile(
            "c",
            &routes("[[route]]\nto = [\"a\", \"b\", \"j\"]\n"),
            &dests(&format!("{DESTS}{json_dest}")),
        )
        .expect("valid");
        let mut rec = record("Patient", "HIS");
        rec.format = RecordFormat::Json(channels::source::JsonFormat::Fhir).into();
        let mut n = 0;
        let got: Vec<(String, String)> = router
            .render(
                &rec,
                &raw,
                &mut || {
                    n += 1;
                    n
                },
                1,
                None,
                "",
                None,
            )
            .into_iter()
            .map(|i| (i.destination, i.partition))
            .collect();
        assert_eq!(
            got,
            vec![
                ("c/a".to_string(), "P-20001".to_string()),
                ("c/b".to_string(), String::new()),
                ("c/j".to_string(), "P-20001".to_string()),
            ]
        );
    }

    /// An HL7 v2.2 ADT names its trigger in EVN-1 only: the record's message type (read by
    /// the ingest from the header) is `ADT^A02`, so a route on `ADT^A02` takes it and one on
    /// `ADT^A01` does not.
    #[test]
    fn a_v22_adt_routes_on_the_trigger_of_evn_1() {
        let v22 = "MSH|^~\\&|HIS|MAIN|SB|HUB|199901011200||ADT|X1|P|2.2\rEVN|A02|199901011200\rPID|1||MRN1^^^MAIN^MR\rPV1|1|I|WARD^12\r";
        let header = transforms::hl7v2::header::MessageHeader::read(v22).expect("valid MSH");
        let message_type = header.message_type();
        assert_eq!(message_type, "ADT^A02");
        let on =
            |t: &str| format!("[[route]]\nwhen = {{ message_type = [\"{t}\"] }}\nto = [\"a\"]\n");
        assert_eq!(rendered(&on("ADT^A02"), &message_type, "HIS").len(), 1);
        assert!(rendered(&on("ADT^A01"), &message_type, "HIS").is_empty());
    }

    #[test]
    fn filters() {
        let r = "[[route]]\nwhen = { message_type = [\"SIU^S12\"] }\nto = [\"a\"]\n";
        assert!(rendered(r, "ADT^A04", "HIS").is_empty());
        let r = "[[route]]\nwhen = { sending_application = [\"LAB\"] }\nto = [\"a\"]\n";
        assert!(rendered(r, "ADT^A04", "HIS").is_empty());
        assert_eq!(rendered(r, "ADT^A04", "LAB^x").len(), 1);
        let cases = [
            ("{ path = \"PID.8\", equals = \"F\" }", true),
            ("{ path = \"PID.8\", equals = \"M\" }", false),
            ("{ path = \"PV1.2\", in = [\"I\", \"E\"] }", true),
            ("{ path = \"PID.3[2].4\", regex = \"^GO.$\" }", true),
            (
                "{ path = \"PID.3[2].4\", regex = \"^GO.$\", not = true }",
                false,
            ),
            ("{ path = \"PID.19\", exists = false }", true),
            ("{ path = \"PID.5.1\", exists = true }", true),
        ];
        for (pred, expect) in cases {
            let r = format!("[[route]]\nwhen = {{ field = [{pred}] }}\nto = [\"a\"]\n");
            assert_eq!(rendered(&r, "ADT^A04", "HIS").len() == 1, expect, "{pred}");
        }
    }

    #[test]
    fn filter_paths_read_whole_elements_where_they_stop() {
        let text = "MSH|^~\\&|HIS|MAIN|SB|HUB|2025||ADT^A04|C1|P|2.5\rPID|1||M1^^^H&1.2&ISO^MR~N2^^^MOI^NI||Doe\\T\\Co^Al||\"\"\rPID|2||X9\r";
        let m = V2Message::parse(text).expect("parses");
        let cases = [
            ("PID.3", Some("M1^^^H&1.2&ISO^MR~N2^^^MOI^NI")),
            ("PID.3[2]", Some("N2^^^MOI^NI")),
            ("PID.3.4", Some("H&1.2&ISO")),
            ("PID.3[1].4.2", Some("1.2")),
            ("PID.3[2].4", Some("MOI")),
            ("PID.5.1", Some("Doe&Co")),
            ("PID.7", Some("\"\"")),
            ("PID.19", None),
            ("PID[2].3", Some("X9")),
            ("PID[3].3", None),
            ("MSH.1", Some("|")),
            ("MSH.2", Some("^~\\&")),
            ("MSH.9", Some("ADT^A04")),
            ("MSH.10", Some("C1")),
        ];
        for (path, want) in cases {
            assert_eq!(value(&m, path).as_deref(), want, "{path}");
        }
    }

    #[test]
    fn a_field_of_900000_repetitions_is_filtered_on_without_a_tree() {
        let text = format!(
            "MSH|^~\\&|HIS|MAIN|SB|HUB|2025||ADT^A04|C1|P|2.5\rPID|1||{}X^^^H^MR\r",
            "~".repeat(900_000)
        );
        let m = V2Message::parse(&text).expect("parses");
        assert_eq!(value(&m, "PID.3[900001].1").as_deref(), Some("X"));
        assert_eq!(value(&m, "PID.3[1].1"), None);
    }

    #[test]
    fn check_names_unknown_destinations_and_bad_predicates() {
        let r = routes("[[route]]\nto = [\"nope\"]\n[[route]]\nwhen = { field = [{ path = \"PID.3\", regex = \"(\" }] }\nto = [\"a\"]\n");
        let problems = Router::compile("c", &r, &dests(DESTS))
            .err()
            .expect("invalid");
        let keys: Vec<&str> = problems.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(keys, ["route[0].to[0]", "route[1].when.field[0].regex",]);
        assert!(problems[0].2.contains("a"));
    }
}
