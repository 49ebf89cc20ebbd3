//! What a stored message means in the canonical model, by the format it arrived in.
//!
//! Routing asks [`events_of`] for the canonical events of a message before it renders any
//! payload other than the raw bytes. There is one arm per [`MessageRecord::format`]; a new
//! source format adds its arm here and nothing in routing changes.

use crate::store::MessageRecord;
use transforms::hl7v2::access::V2Message;
use transforms::model::Event;
use transforms::Mapped;

/// The canonical reading of one stored message.
#[derive(Debug)]
pub enum Meaning {
    /// The events the message stands for: one for an HL7 v2 message; a bulk body or a
    /// Bundle may carry several.
    Events(Vec<Event>),
    /// A message type with no canonical mapping (such as `ADT^A02`): only raw payloads
    /// can be sent.
    Unsupported(String),
    /// The mapping failed: the field path and the reason, never patient data.
    Failed(String),
}

/// The canonical events of a stored message.
pub fn events_of(record: &MessageRecord, raw: &[u8]) -> Meaning {
    match record.format.as_str() {
        "hl7v2" => hl7v2(record, raw),
        other => Meaning::Failed(format!("no canonical mapping for format '{other}'")),
    }
}

fn hl7v2(record: &MessageRecord, raw: &[u8]) -> Meaning {
    let text = transforms::hl7v2::charset::decode_lossy(raw, &record.charset);
    match V2Message::parse(&text).map(|m| transforms::v2_to_event(&m)) {
        Ok(Ok(Mapped::Event(e))) => Meaning::Events(vec![e]),
        Ok(Ok(Mapped::Unsupported { message_type })) => Meaning::Unsupported(message_type),
        Ok(Err(e)) => Meaning::Failed(e.to_string()),
        Err(e) => Meaning::Failed(format!("HL7 v2 structure: {e}")),
    }
}
