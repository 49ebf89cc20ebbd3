//! What a stored message means in the canonical model, by the format it arrived in.
//!
//! Routing asks [`events_of`] for the canonical events of a message before it renders any
//! payload other than the raw bytes. There is one arm per [`MessageRecord::format`]; a new
//! source format adds its arm here and nothing in routing changes.

use crate::store::MessageRecord;
use channels::source::{JsonFormat, RecordFormat, WebhookFormat};
use transforms::hl7v2::access::V2Message;
use transforms::model::Event;
use transforms::Mapped;

/// The canonical reading of one stored message.
#[derive(Debug)]
pub enum Meaning {
    /// The events the message stands for: one for an HL7 v2 message; a bulk body or a
    /// Bundle may carry several.
    Events(Vec<Event>),
    /// A message type with no canonical mapping (such as `MDM^T02`): only raw payloads
    /// can be sent.
    Unsupported(String),
    /// The mapping failed: the field path and the reason, never patient data.
    Failed(String),
}

/// The canonical events of a stored message, HL7 v2 times without an offset left as sent
/// (what the business keys need: they hold no time).
pub fn events_of(record: &MessageRecord, raw: &[u8]) -> Meaning {
    events_of_in(record, raw, None)
}

/// The canonical events of a stored message, HL7 v2 times without an offset taken as local
/// times in `timezone` (the channel's `timezone`) when there is one.
pub fn events_of_in(
    record: &MessageRecord,
    raw: &[u8],
    timezone: Option<transforms::model::Tz>,
) -> Meaning {
    let Some(format) = record.format.known() else {
        return Meaning::Failed(format!(
            "no canonical mapping for format '{}'",
            record.format
        ));
    };
    match format {
        RecordFormat::Hl7v2 => hl7v2(record, raw, timezone),
        RecordFormat::Json(json) => match json_events(json, &record.message_type, raw) {
            Ok(events) => Meaning::Events(events),
            Err(e) => Meaning::Failed(e.to_string()),
        },
        RecordFormat::Dicom => dicom(record, raw, timezone),
        RecordFormat::Latrexa => {
            Meaning::Failed("no canonical mapping for format 'latrexa'".into())
        }
    }
}

/// What a DICOM source stored: a study's announcement (`study_available`) is the
/// `study_available` event, its DICOM dates and times local times in the channel's
/// `timezone`; a stored object (`C-STORE`) has no canonical reading (only payload `dicom`
/// sends it).
fn dicom(record: &MessageRecord, raw: &[u8], timezone: Option<transforms::model::Tz>) -> Meaning {
    use transforms::from_dicom::{study_available, StudyDocument, STUDY_AVAILABLE};
    if record.message_type != STUDY_AVAILABLE {
        return Meaning::Unsupported(record.message_type.clone());
    }
    let doc: StudyDocument = match serde_json::from_slice(raw) {
        Ok(d) => d,
        Err(e) => return Meaning::Failed(format!("study document: {e}")),
    };
    match study_available(&doc, &record.control_id) {
        Ok(mut e) => {
            if let Some(zone) = timezone {
                e.assume_timezone(zone);
            }
            Meaning::Events(vec![e])
        }
        Err(e) => Meaning::Failed(e),
    }
}

fn hl7v2(record: &MessageRecord, raw: &[u8], timezone: Option<transforms::model::Tz>) -> Meaning {
    let text = transforms::hl7v2::charset::decode_lossy(raw, &record.charset);
    match V2Message::parse(&text).map(|m| transforms::v2_to_event(&m)) {
        Ok(Ok(Mapped::Event(mut e))) => {
            if let Some(zone) = timezone {
                e.assume_timezone(zone);
            }
            Meaning::Events(vec![*e])
        }
        Ok(Ok(Mapped::MasterFile(mf))) => {
            let mut events = mf.events;
            if let Some(zone) = timezone {
                for e in &mut events {
                    e.assume_timezone(zone);
                }
            }
            Meaning::Events(events)
        }
        Ok(Ok(Mapped::Unsupported { message_type })) => Meaning::Unsupported(message_type),
        Ok(Err(e)) => Meaning::Failed(e.to_string()),
        Err(e) => Meaning::Failed(format!("HL7 v2 structure: {e}")),
    }
}

/// Why a JSON body has no canonical reading, in the terms of its format (so the HTTP source
/// can answer with that format's error body).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JsonFailure {
    /// FHIR: not JSON, not valid R4, or unusable (the element path is in the error).
    #[error(transparent)]
    Fhir(#[from] transforms::fhir::FhirError),
    /// Buktor or OpsPort body.
    #[error(transparent)]
    Json(#[from] transforms::from_json::JsonError),
    /// PX360 body that fails PX360's validation.
    #[error("{0}: {details}", details = serde_json::Value::Object(.0.details.clone()))]
    Px360(transforms::dest::px360::HisValidationError),
}

impl JsonFailure {
    /// The HTTP status a source answers: 400 or 422.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Fhir(e) => e.http_status(),
            Self::Json(e) => e.http_status(),
            Self::Px360(_) => 400,
        }
    }
}

/// The canonical events of a JSON body of `format`. `message_type` is what the record keeps:
/// for OpsPort the path's kind (`patient`, `appointments`), which decides the item shape.
///
/// # Errors
///
/// [`JsonFailure`] naming the element or field.
pub fn json_events(
    format: JsonFormat,
    message_type: &str,
    raw: &[u8],
) -> Result<Vec<Event>, JsonFailure> {
    let text = String::from_utf8_lossy(raw);
    match format {
        JsonFormat::Fhir => Ok(transforms::fhir::fhir_to_events(&text)?),
        JsonFormat::Webhook(WebhookFormat::Buktor) => {
            Ok(transforms::from_json::buktor::events_from_body(&text)?)
        }
        JsonFormat::Webhook(WebhookFormat::Opsport) => {
            Ok(transforms::from_json::opsport::events_from_body(
                message_type,
                &text,
                &Default::default(),
            )?)
        }
        JsonFormat::Webhook(WebhookFormat::Px360) => {
            let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                transforms::from_json::JsonError::Invalid {
                    path: format!("{}:{}", e.line(), e.column()),
                    reason: transforms::serde_reason::of_json(&e),
                }
            })?;
            transforms::from_json::px360::events_from_body(&value, &Default::default())
                .map_err(JsonFailure::Px360)
        }
    }
}
