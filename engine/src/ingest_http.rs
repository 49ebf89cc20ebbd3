//! Ingest of JSON bodies from the HTTP sources (FHIR REST and webhook): decide, store, commit,
//! answer — the same steps as [`crate::ingest`] for HL7, sharing its store, commit and
//! metrics helpers.
//!
//! For each [`JsonBody`]: check it against what the endpoint asked for (a FHIR resource type
//! that matches the path, a Bundle of type transaction or batch), map it to canonical events
//! with [`crate::formats::json_events`] (the same function routing uses, so what was accepted
//! can always be mapped), recognise resends, write the record with its answer, wait for the
//! group commit, and only then answer 2xx. An invalid body is stored as `rejected` with its
//! reason and answered 400/422 in its format's terms (a FHIR OperationOutcome naming the
//! element, PX360's validation document, Buktor's and OpsPort's error objects). A store
//! failure answers 503 and nothing positive, and so does a paused channel (see
//! [`crate::pause`]).
//!
//! A Bundle is all or nothing: every entry is validated and mapped before the answer, one bad
//! entry rejects the whole Bundle and no event of it is routed. Batch Bundles are treated the
//! same way (documented in the README).
//!
//! Resends get the first answer from the store and no second record: Buktor by `event_id`,
//! FHIR by resource identifier + `meta.versionId` (a hash of the body when either is missing),
//! PX360 and OpsPort by a hash of the body. Keys are hashed, so no identifier is kept in the
//! dedup tree or shown as a control id.

use crate::formats::{json_events, JsonFailure};
use crate::ingest::{received_at_ms, ChannelIngest};
use crate::store::{Claim, MessageRecord, Status};
use bytes::Bytes;
use channels::fhir_rest::source::{operation_outcome, ResourceReader, FHIR_JSON_UTF8};
use channels::source::{
    Disposition, HttpAnswer, Inbound, JsonBody, JsonFormat, Payload, RecordFormat, Reply,
    WebhookFormat,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::Instant;
use tracing::{debug, error, warn};
use transforms::hl7v2::validate::ErrorCode;
use transforms::model::stable_id;

/// What the engine decided about one body before storing it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    /// Kept on the record: FHIR resource type, Buktor event type, OpsPort kind.
    pub(crate) message_type: String,
    /// Kept on the record and shown in the admin API: Buktor `event_id`, else a hash.
    pub(crate) control_id: String,
    /// The resend key, for accepted bodies.
    pub(crate) dedup_key: Option<String>,
    /// Status of the answer.
    pub(crate) status: u16,
    /// Body of the answer.
    pub(crate) body: String,
    /// `Location` of the answer.
    pub(crate) location: Option<String>,
    /// Why it was rejected (stored on the record), `None` when accepted.
    pub(crate) rejected: Option<String>,
}

impl Decision {
    fn reject(
        message_type: String,
        control_id: String,
        status: u16,
        body: String,
        reason: String,
    ) -> Self {
        Decision {
            message_type,
            control_id,
            dedup_key: None,
            status,
            body,
            location: None,
            rejected: Some(reason),
        }
    }
}

fn content_type(format: JsonFormat) -> &'static str {
    match format {
        JsonFormat::Fhir => FHIR_JSON_UTF8,
        JsonFormat::Webhook(_) => "application/json",
    }
}

/// A body in the terms of `format` telling the sender to send again later: a FHIR
/// OperationOutcome (code `transient`) or the webhook format's error object.
fn transient_body(format: JsonFormat, fhir_text: &str, webhook_text: &str) -> String {
    match format {
        JsonFormat::Fhir => operation_outcome("transient", fhir_text),
        JsonFormat::Webhook(w) => w.error_body(webhook_text).to_string(),
    }
}

/// Every label [`reason_label`] gives.
pub const REASON_LABELS: &[&str] = &["unprocessable_content", "invalid_content"];

/// The label of `rejected{reason}` for an HTTP status.
fn reason_label(status: u16) -> &'static str {
    match status {
        422 => REASON_LABELS[0],
        _ => REASON_LABELS[1],
    }
}

/// The reads of a FHIR source (`GET [base]/{type}/{id}`), answered from the store: the
/// resource as the channel last accepted it (see [`crate::store::fhir_ids`]).
pub struct StoreReader(pub crate::store::Store);

impl ResourceReader for StoreReader {
    fn read(&self, channel: &str, resource_type: &str, id: &str) -> Result<Option<Value>, String> {
        self.0
            .fhir_resource(channel, resource_type, id)
            .map_err(|e| e.to_string())
    }
}

/// Takes one JSON body from an HTTP source through to its answer.
pub(crate) async fn handle(ingest: &ChannelIngest, inbound: Inbound) {
    let started = Instant::now();
    let Payload::Json(req) = &inbound.payload else {
        return;
    };
    let req = req.clone();
    let received_at_ms = received_at_ms(&inbound);
    let id = ingest.store.next_id(received_at_ms);
    let d = decide(&req);
    // In the message's span, opened by `ChannelIngest::handle_as`.
    let span = tracing::Span::current();
    span.record("message_id", id);
    span.record("message_type", d.message_type.as_str());
    ingest.count_received("other");
    debug!(control_id = %d.control_id, "HTTP body received.");
    let ct = content_type(req.format);

    let mut pending = None;
    let mut dedup_key = String::new();
    if let (None, Some(key)) = (&d.rejected, &d.dedup_key) {
        let key = crate::store::dedup::dedup_key(&format!("http\u{1f}{}", ingest.channel), key);
        // Buktor's event_id is the event's identity ("store processed event_ids to avoid
        // reprocessing the same event"): a redelivery is a resend whatever its body says.
        // Elsewhere a key seen again with another body is a reuse, stored anew.
        let buktor = req.format == JsonFormat::Webhook(WebhookFormat::Buktor);
        let digest: crate::store::ContentDigest = if buktor {
            Sha256::digest(key.as_bytes()).into()
        } else {
            Sha256::digest(&req.body).into()
        };
        match ingest.store.claim(&key, &digest, id).await {
            Ok(Claim::New(p)) => pending = Some(p),
            Ok(Claim::Reused {
                previous,
                pending: p,
            }) => {
                ingest
                    .metrics
                    .control_id_reused
                    .with_label_values(&[&ingest.channel])
                    .inc();
                warn!(control_id = %d.control_id, previous, "Idempotency key reused with a different body; stored as a new message.");
                pending = Some(p);
            }
            Ok(Claim::Duplicate(original)) => {
                ingest
                    .metrics
                    .duplicates
                    .with_label_values(&[&ingest.channel])
                    .inc();
                debug!(control_id = %d.control_id, original = original.id, "Duplicate answered from the store.");
                let status = original.ack_code.parse().unwrap_or(d.status);
                let location = location_of(&req, &original.ack);
                answer(
                    ingest,
                    inbound,
                    started,
                    (original.id, &d),
                    Disposition::Accepted,
                    (status, original.ack.clone(), location, ct),
                );
                return;
            }
            Err(e) => {
                fail(ingest, inbound, started, id, &d, req.format, &e.to_string());
                return;
            }
        }
        dedup_key = key;
    }

    let mut record = MessageRecord {
        business_keys: Vec::new(),
        dedup_key,
        resent_from: None,
        id,
        channel: ingest.channel.clone(),
        received_at_ms,
        peer: inbound.peer.to_string(),
        format: RecordFormat::Json(req.format).into(),
        message_type: d.message_type.clone(),
        control_id: d.control_id.clone(),
        sending_application: String::new(),
        sending_facility: String::new(),
        version: if req.format == JsonFormat::Fhir {
            "R4".into()
        } else {
            String::new()
        },
        charset: "utf-8".into(),
        size: req.body.len(),
        truncated: false,
        status: if d.rejected.is_some() {
            Status::Rejected
        } else {
            Status::Received
        },
        ack_code: d.status.to_string(),
        ack: d.body.clone(),
        errors: d.rejected.iter().cloned().collect(),
        config_version: ingest.config_version.clone(),
        deliveries: vec![],
    };
    let items = match ingest
        .persist(&mut record, &req.body, d.rejected.is_none())
        .await
    {
        Ok(items) => {
            if let Some(p) = pending {
                p.durable();
            }
            items
        }
        Err(e) => {
            if let Some(p) = pending {
                crate::ingest::take_back(p, &ingest.store, &record, &e);
            }
            fail(ingest, inbound, started, id, &d, req.format, &e.to_string());
            return;
        }
    };
    let disposition = match &d.rejected {
        None => Disposition::Accepted,
        Some(reason) => {
            ingest
                .metrics
                .rejected
                .with_label_values(&[&ingest.channel, reason_label(d.status)])
                .inc();
            debug!(control_id = %d.control_id, reason = %reason, "HTTP body rejected.");
            Disposition::Rejected(reason.clone())
        }
    };
    // Durable now: the workers may start delivering. Handed over before the sender is
    // answered, so a request it sends next is never queued ahead of this one's items.
    ingest.pipeline.hub().enqueue(&items);
    answer(
        ingest,
        inbound,
        started,
        (id, &d),
        disposition,
        (d.status, d.body.clone(), d.location.clone(), ct),
    );
}

/// Answers 503 when the store failed; the body is not on disk.
fn fail(
    ingest: &ChannelIngest,
    inbound: Inbound,
    started: Instant,
    id: u64,
    d: &Decision,
    format: JsonFormat,
    reason: &str,
) {
    error!(error = %reason, "HTTP body could not be stored; answering 503.");
    ingest
        .metrics
        .rejected
        .with_label_values(&[
            &ingest.channel,
            ErrorCode::ApplicationInternalError.reason_label(),
        ])
        .inc();
    let body = transient_body(
        format,
        "the message could not be stored; send it again later",
        "Service unavailable, send it again later.",
    );
    answer(
        ingest,
        inbound,
        started,
        (id, d),
        Disposition::Retry(reason.to_string()),
        (503, body, None, content_type(format)),
    );
}

/// Answers 503 while an operator has the channel paused: a FHIR OperationOutcome (code
/// `transient`) or the webhook format's error object, both saying "channel paused by
/// operator". Nothing is stored.
pub(crate) fn refuse_paused(ingest: &ChannelIngest, inbound: Inbound) {
    let Payload::Json(req) = &inbound.payload else {
        return;
    };
    let format = req.format;
    ingest
        .metrics
        .rejected
        .with_label_values(&[&ingest.channel, ErrorCode::ChannelPaused.reason_label()])
        .inc();
    ingest
        .metrics
        .acks
        .with_label_values(&[&ingest.channel, "503"])
        .inc();
    let body = transient_body(
        format,
        crate::pause::PAUSED_REASON,
        crate::pause::PAUSED_REASON,
    );
    debug!("HTTP body refused: the channel is paused.");
    let _ = inbound.reply.send(Reply {
        disposition: Disposition::Retry(crate::pause::PAUSED_REASON.into()),
        body: Some(Bytes::from(body)),
        http: Some(HttpAnswer {
            status: 503,
            location: None,
            content_type: content_type(format).to_string(),
        }),
        message_id: None,
    });
}

fn answer(
    ingest: &ChannelIngest,
    inbound: Inbound,
    started: Instant,
    (id, d): (u64, &Decision),
    disposition: Disposition,
    (status, body, location, content_type): (u16, String, Option<String>, &str),
) {
    let kind = match &disposition {
        Disposition::Accepted => "received",
        Disposition::Rejected(_) | Disposition::Retry(_) => "rejected",
    };
    ingest.observe(started, kind, id, &d.message_type, &d.control_id);
    ingest
        .metrics
        .acks
        .with_label_values(&[&ingest.channel, &status.to_string()])
        .inc();
    // Only a store failure answers "send again": that body was not stored.
    let message_id = (!matches!(disposition, Disposition::Retry(_))).then_some(id);
    let reply = Reply {
        disposition,
        body: Some(Bytes::from(body)),
        http: Some(HttpAnswer {
            status,
            location,
            content_type: content_type.to_string(),
        }),
        message_id,
    };
    if inbound.reply.send(reply).is_err() {
        warn!("Sender went away before its answer was sent.");
    }
}

/// Decides about a body: what it is, whether it maps, and the answer.
pub(crate) fn decide(req: &JsonBody) -> Decision {
    // JSON is UTF-8 (RFC 8259 §8.1): other bytes are refused here, never read lossily.
    if let Err(e) = std::str::from_utf8(&req.body) {
        return not_utf8(req, e.valid_up_to());
    }
    match req.format {
        JsonFormat::Fhir => decide_fhir(req),
        JsonFormat::Webhook(WebhookFormat::Buktor) => decide_buktor(req),
        JsonFormat::Webhook(WebhookFormat::Px360) => decide_px360(req),
        JsonFormat::Webhook(WebhookFormat::Opsport) => decide_opsport(req),
    }
}

/// A 400 in the format's terms for a body that is not UTF-8; `at` is the first bad byte.
fn not_utf8(req: &JsonBody, at: usize) -> Decision {
    let hash = body_hash(req);
    let reason = format!("the body is not valid UTF-8 (byte {at})");
    match req.format {
        JsonFormat::Fhir => fhir_invalid(
            req.resource_type.clone().unwrap_or_default(),
            hash,
            "$",
            &reason,
        ),
        JsonFormat::Webhook(format) => Decision::reject(
            req.interaction.clone(),
            hash,
            400,
            format
                .error_body("Request body is not valid UTF-8.")
                .to_string(),
            format!("$: {reason}"),
        ),
    }
}

fn body_hash(req: &JsonBody) -> String {
    stable_id(&[
        req.format.as_str(),
        &req.interaction,
        &String::from_utf8_lossy(&req.body),
    ])
}

fn fhir_reject(message_type: String, hash: String, e: &transforms::fhir::FhirError) -> Decision {
    Decision::reject(
        message_type,
        hash,
        e.http_status(),
        e.operation_outcome_json(),
        e.to_string(),
    )
}

/// A 400 OperationOutcome naming `path`.
fn fhir_invalid(message_type: String, hash: String, path: &str, reason: &str) -> Decision {
    fhir_reject(
        message_type,
        hash,
        &transforms::fhir::FhirError::Invalid {
            path: path.into(),
            reason: reason.into(),
        },
    )
}

/// The first identifier of a resource with both a system and a value, as `system|value`.
fn first_identifier(resource: &Value) -> Option<(String, String)> {
    resource
        .get("identifier")?
        .as_array()?
        .iter()
        .find_map(|i| {
            let system = i.get("system")?.as_str()?;
            let value = i.get("value")?.as_str()?;
            Some((system.to_owned(), value.to_owned()))
        })
}

/// The id this engine gives a created resource: deterministic from its first identifier,
/// else from its content.
fn assigned_id(rtype: &str, resource: &Value) -> String {
    match first_identifier(resource) {
        Some((system, value)) => transforms::fhir::resource_id(rtype, &system, &value),
        None => stable_id(&[rtype, &resource.to_string()]),
    }
}

fn decide_fhir(req: &JsonBody) -> Decision {
    let hash = body_hash(req);
    let text = String::from_utf8_lossy(&req.body);
    let path_type = req.resource_type.clone().unwrap_or_default();
    let Ok(mut value) = serde_json::from_str::<Value>(&text) else {
        // Not JSON: the mapping's error says where, in FHIR terms.
        let e = transforms::fhir::fhir_to_events(&text)
            .err()
            .unwrap_or_else(|| transforms::fhir::FhirError::Invalid {
                path: "$".into(),
                reason: "not JSON".into(),
            });
        return fhir_reject(path_type, hash, &e);
    };
    let rtype = value
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let message_type = if rtype.is_empty() {
        path_type.clone()
    } else {
        rtype.clone()
    };
    match req.interaction.as_str() {
        "bundle" => {
            let btype = value
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if rtype != "Bundle" {
                return fhir_invalid(
                    message_type,
                    hash,
                    "resourceType",
                    "POST to the base takes a Bundle of type transaction or batch",
                );
            }
            if !matches!(btype, "transaction" | "batch") {
                return fhir_reject(
                    message_type,
                    hash,
                    &transforms::fhir::FhirError::Unprocessable {
                        path: "Bundle.type".into(),
                        reason: format!("must be transaction or batch, not '{btype}'"),
                    },
                );
            }
        }
        _ => {
            if rtype != path_type {
                return fhir_invalid(
                    message_type,
                    hash,
                    "resourceType",
                    &format!("'{rtype}' does not match the endpoint's type '{path_type}'"),
                );
            }
            if let (Some(path_id), Some(body_id)) = (
                req.resource_id.as_deref(),
                value.get("id").and_then(Value::as_str),
            ) {
                if path_id != body_id {
                    return fhir_invalid(
                        message_type,
                        hash,
                        &format!("{rtype}.id"),
                        "the id in the body does not match the id in the URL",
                    );
                }
            }
        }
    }
    if let Err(JsonFailure::Fhir(e)) = json_events(JsonFormat::Fhir, &message_type, &req.body) {
        return fhir_reject(message_type, hash, &e);
    }
    // Resends: identifier + version, else the body's hash (a changed body is an update).
    let version = value
        .pointer("/meta/versionId")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let identity = match (&req.interaction[..], first_identifier(&value)) {
        ("bundle", _) => value.get("identifier").map(Value::to_string),
        (_, Some((system, v))) => Some(format!("{system}|{v}")),
        (_, None) => None,
    };
    let dedup_key = match (identity, version) {
        (Some(identity), Some(version)) => stable_id(&[
            "fhir",
            &message_type,
            req.resource_id.as_deref().unwrap_or(""),
            &identity,
            &version,
        ]),
        _ => hash.clone(),
    };
    let (status, body, location) = match req.interaction.as_str() {
        "bundle" => (200, bundle_response(&value).to_string(), None),
        interaction => {
            let id = req
                .resource_id
                .clone()
                .unwrap_or_else(|| assigned_id(&rtype, &value));
            if let Some(obj) = value.as_object_mut() {
                obj.insert("id".into(), Value::String(id.clone()));
            }
            let status = if interaction == "create" { 201 } else { 200 };
            (status, value.to_string(), Some(format!("{rtype}/{id}")))
        }
    };
    Decision {
        message_type,
        control_id: dedup_key.clone(),
        dedup_key: Some(dedup_key),
        status,
        body,
        location,
        rejected: None,
    }
}

/// The `transaction-response` (or `batch-response`) Bundle for an accepted Bundle: one entry
/// per request entry with its status and location.
fn bundle_response(bundle: &Value) -> Value {
    let kind = match bundle.get("type").and_then(Value::as_str) {
        Some("batch") => "batch-response",
        _ => "transaction-response",
    };
    let entries: Vec<Value> = bundle
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|entry| {
            let method = entry
                .pointer("/request/method")
                .and_then(Value::as_str)
                .unwrap_or("POST");
            let url = entry
                .pointer("/request/url")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let resource = entry.get("resource").cloned().unwrap_or(Value::Null);
            let rtype = resource
                .get("resourceType")
                .and_then(Value::as_str)
                .unwrap_or_default();
            // `PUT Patient/123` names its id; POST and conditional PUT get the engine's.
            let id = match url.split_once('/') {
                Some((_, id)) if method == "PUT" && !id.contains('?') => id.to_owned(),
                _ => assigned_id(rtype, &resource),
            };
            let status = if method == "POST" {
                "201 Created"
            } else {
                "200 OK"
            };
            json!({"response": {"status": status, "location": format!("{rtype}/{id}")}})
        })
        .collect();
    let mut out = json!({"resourceType": "Bundle", "type": kind});
    if !entries.is_empty() {
        out["entry"] = Value::Array(entries);
    }
    out
}

/// The `Location` of a stored FHIR answer (for resends).
fn location_of(req: &JsonBody, answer: &str) -> Option<String> {
    if req.format != JsonFormat::Fhir || req.interaction == "bundle" {
        return None;
    }
    let v: Value = serde_json::from_str(answer).ok()?;
    let rtype = v.get("resourceType")?.as_str()?;
    let id = v.get("id")?.as_str()?;
    (rtype != "OperationOutcome").then(|| format!("{rtype}/{id}"))
}

fn webhook_reject(
    format: WebhookFormat,
    message_type: String,
    control_id: String,
    e: &JsonFailure,
) -> Decision {
    let body = match e {
        JsonFailure::Px360(v) => v.to_body(),
        other => format.error_body(&other.to_string()),
    };
    Decision::reject(
        message_type,
        control_id,
        e.http_status(),
        body.to_string(),
        e.to_string(),
    )
}

fn decide_buktor(req: &JsonBody) -> Decision {
    let text = String::from_utf8_lossy(&req.body);
    let (message_type, event_id) = match transforms::from_json::buktor::parse(&text) {
        Ok(ev) => (ev.event_type, ev.event_id),
        Err(e) => {
            return webhook_reject(
                WebhookFormat::Buktor,
                String::new(),
                body_hash(req),
                &JsonFailure::Json(e),
            )
        }
    };
    match json_events(
        JsonFormat::Webhook(WebhookFormat::Buktor),
        &message_type,
        &req.body,
    ) {
        Ok(_) => Decision {
            control_id: event_id.clone(),
            dedup_key: Some(stable_id(&["buktor", &event_id])),
            message_type,
            status: 200,
            body:
                json!({"status": "success", "message": "Data received and processed successfully."})
                    .to_string(),
            location: None,
            rejected: None,
        },
        Err(e) => webhook_reject(WebhookFormat::Buktor, message_type, event_id, &e),
    }
}

fn decide_px360(req: &JsonBody) -> Decision {
    let hash = body_hash(req);
    let message_type = req.interaction.clone();
    match json_events(
        JsonFormat::Webhook(WebhookFormat::Px360),
        &message_type,
        &req.body,
    ) {
        Ok(_) => Decision {
            message_type,
            control_id: hash.clone(),
            dedup_key: Some(hash),
            status: 200,
            body: px360_success(&req.body).to_string(),
            location: None,
            rejected: None,
        },
        Err(e) => webhook_reject(WebhookFormat::Px360, message_type, hash, &e),
    }
}

/// PX360's success body for an accepted HIS patient-data body, as the PX360 document shows
/// it: the patient and journey ids (deterministic UUID-shaped hashes of the MRN and of the
/// MRN and admission, since the engine keeps no PX360 records), the visit types that complete
/// a stage of the document's journey stage table, and the journey `completed` with its survey
/// triggered when the body has a `DischargeDate`, `active` otherwise.
fn px360_success(body: &[u8]) -> Value {
    let Ok(data) = serde_json::from_slice::<Value>(body)
        .map_err(|_| ())
        .and_then(|v| transforms::dest::px360::validate(&v).map_err(|_| ()))
    else {
        return json!({"success": true, "message": "Patient data processed successfully."});
    };
    let stages = transforms::dest::px360::default_journey_stages();
    let completed: Vec<&str> = data
        .visits
        .iter()
        .map(|v| v.kind.as_str())
        .filter(|k| stages.contains_key(*k))
        .collect();
    let d = &data.demographics[0];
    let discharged = d.discharge_date.as_deref().is_some_and(|s| !s.is_empty());
    json!({
        "success": true,
        "message": format!(
            "Patient data processed successfully. Journey created with {} stages completed.",
            completed.len()
        ),
        "patient_id": uuid_shaped(&["patient", &d.patient_id]),
        "patient_mrn": d.patient_id,
        "patient_name": d.patient_name,
        "journey_id": uuid_shaped(&["journey", &d.patient_id, &d.admission_id]),
        "encounter_id": d.admission_id,
        "completed_stages": completed,
        "survey_triggered": discharged,
        "journey_status": if discharged { "completed" } else { "active" },
    })
}

/// A UUID-shaped (8-4-4-4-12, version 4 and variant bits set) hash of `parts`.
fn uuid_shaped(parts: &[&str]) -> String {
    let h = stable_id(parts);
    let h = format!("{h}{}", stable_id(&[&h]));
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn decide_opsport(req: &JsonBody) -> Decision {
    let hash = body_hash(req);
    let kind = req.interaction.clone();
    let bulk = kind.ends_with('s');
    let parsed: Option<Value> = serde_json::from_slice(&req.body).ok();
    // The shape the path promises: one object, or an array of them.
    let shape_error = match &parsed {
        Some(Value::Array(_)) if !bulk => Some("Expected a JSON object."),
        Some(Value::Object(_)) if bulk => Some("Expected a JSON array."),
        _ => None,
    };
    if let Some(message) = shape_error {
        return Decision::reject(
            kind,
            hash,
            400,
            WebhookFormat::Opsport.error_body(message).to_string(),
            format!("$: {message}"),
        );
    }
    match json_events(
        JsonFormat::Webhook(WebhookFormat::Opsport),
        &kind,
        &req.body,
    ) {
        Ok(_) => {
            let count = match &parsed {
                Some(Value::Array(items)) => items.len(),
                _ => 1,
            };
            Decision {
                message_type: kind,
                control_id: hash.clone(),
                dedup_key: Some(hash),
                status: 200,
                body: json!({"success": true, "received": count}).to_string(),
                location: None,
                rejected: None,
            }
        }
        Err(e) => webhook_reject(WebhookFormat::Opsport, kind, hash, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fhir(interaction: &str, rtype: Option<&str>, id: Option<&str>, body: &str) -> JsonBody {
        JsonBody {
            format: JsonFormat::Fhir,
            interaction: interaction.into(),
            resource_type: rtype.map(str::to_owned),
            resource_id: id.map(str::to_owned),
            body: Bytes::from(body.to_owned()),
        }
    }

    const PATIENT: &str = r#"{"resourceType":"Patient","identifier":[{"system":"urn:switchboard:mrn","value":"MRN-T1"}],"name":[{"family":"Testperson","given":["Alex"]}],"birthDate":"1980-01-01"}"#;

    #[test]
    fn created_patient_gets_201_a_stable_id_and_location() {
        let d = decide(&fhir("create", Some("Patient"), None, PATIENT));
        assert_eq!(d.rejected, None, "{}", d.body);
        assert_eq!(d.status, 201);
        let v: Value = serde_json::from_str(&d.body).expect("json");
        let id = v["id"].as_str().expect("id");
        assert_eq!(d.location.as_deref(), Some(&format!("Patient/{id}")[..]));
        assert_eq!(decide(&fhir("create", Some("Patient"), None, PATIENT)), d);
    }

    #[test]
    fn wrong_type_and_bad_element_are_400_with_their_path() {
        let d = decide(&fhir("create", Some("Appointment"), None, PATIENT));
        assert_eq!(d.status, 400);
        assert!(d.body.contains("resourceType"), "{}", d.body);
        let bad = PATIENT.replace("\"birthDate\"", "\"birthDay\"");
        let d = decide(&fhir("create", Some("Patient"), None, &bad));
        assert_eq!(d.status, 400);
        assert!(d.body.contains("OperationOutcome"), "{}", d.body);
        assert!(d.body.contains("Patient.birthDay"), "{}", d.body);
    }

    #[test]
    fn update_id_must_match() {
        let body = PATIENT.replace(
            "{\"resourceType\":\"Patient\"",
            "{\"resourceType\":\"Patient\",\"id\":\"a\"",
        );
        assert_eq!(
            decide(&fhir("update", Some("Patient"), Some("a"), &body)).status,
            200
        );
        let d = decide(&fhir("update", Some("Patient"), Some("b"), &body));
        assert_eq!(d.status, 400);
        assert!(d.body.contains("Patient.id"), "{}", d.body);
    }

    #[test]
    fn buktor_invalid_body_gets_the_error_object() {
        let d = decide(&JsonBody {
            format: JsonFormat::Webhook(WebhookFormat::Buktor),
            interaction: "his/receive".into(),
            resource_type: None,
            resource_id: None,
            body: Bytes::from_static(b"{not json"),
        });
        assert_eq!(d.status, 400);
        let v: Value = serde_json::from_str(&d.body).expect("json");
        assert_eq!(v["status"], "error");
    }
}
