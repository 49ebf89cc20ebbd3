//! HL7 v2 to the canonical model: one file per message family, one dispatch here.
//!
//! Start at [`map`] (also exported as [`crate::v2_to_event`]): it reads MSH-9, picks the family
//! mapping and returns [`Mapped::Event`], or [`Mapped::Unsupported`] for message types this
//! crate does not map (a clear outcome, not an error). Each family file documents which HL7
//! fields feed which canonical field, and why where there was a choice.
//!
//! Rules shared by every family:
//! - missing optional data never fails; missing required data (no patient identifier, no
//!   appointment id, no FT1) fails with a [`MappingError`] that names the field;
//! - a value that is present but unusable (a date that does not parse, a status code outside
//!   its table) fails too, because guessing would put wrong clinical data downstream;
//! - errors carry field paths and reasons, never the values (they may be patient data).
//!
//! | message | module | event kinds |
//! |---|---|---|
//! | ADT A01 A03 A04 A05 A08 A11 A13 A28 A31 A40 | [`adt`] | patient registered/updated/merged, encounter admitted/preadmitted/discharged/cancelled/discharge cancelled |
//! | SIU S12-S17, S26 | [`siu`] | appointment booked/rescheduled/modified/cancelled/discontinued/deleted/no-show |
//! | ORM^O01, OML^O21 | [`orders`] | order placed/cancelled/updated (+ appointment when scheduled) |
//! | ORU^R01 | [`oru`] | result reported |
//! | DFT^P03, DFT^P11 | [`dft`] | charge posted/reversed (+ payment outcome) |

pub mod adt;
pub mod datatypes;
pub mod dft;
pub mod orders;
pub mod oru;
pub mod siu;

use self::datatypes::UpperCode;
use crate::hl7v2::access::{SegmentRef, V2Message, Value};
use crate::hl7v2::datetime;
use crate::model::{stable_id, Decimal, Event, EventKind, Practitioner, Source, Timestamp};

/// Why a message could not be mapped. Variants carry the field path (`PV1-44`, `FT1[2]-11`)
/// and a reason, never a value from the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// Required data is missing.
    #[error("missing {path}: {reason}")]
    Missing {
        /// Field or segment path.
        path: String,
        /// What was expected there.
        reason: &'static str,
    },
    /// A date/time is present but does not parse.
    #[error("unparsable date/time in {path}: {source}")]
    BadDateTime {
        /// Field path.
        path: String,
        /// What is wrong with it.
        source: crate::model::TimestampError,
    },
    /// A number (amount, quantity, duration) is present but does not parse.
    #[error("invalid number in {path}")]
    BadNumber {
        /// Field path.
        path: String,
    },
    /// A code is outside the table the mapping relies on.
    #[error("unknown code in {path}: {reason}")]
    UnknownCode {
        /// Field path.
        path: String,
        /// Which table or what was expected.
        reason: &'static str,
    },
}

impl MappingError {
    /// The field path the error is about (for the ERR segment of a NAK).
    pub fn path(&self) -> &str {
        match self {
            Self::Missing { path, .. }
            | Self::BadDateTime { path, .. }
            | Self::BadNumber { path }
            | Self::UnknownCode { path, .. } => path,
        }
    }
}

/// The outcome of mapping one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    /// The canonical event, boxed: an `Event` is a few kilobytes, and moving it out of the
    /// mapping and through `Result`s by value costs more than the allocation.
    Event(Box<Event>),
    /// A message type this crate does not map (e.g. `ADT^A02`, `ACK`): the engine decides
    /// (reject with AR and ERR-3 = 200/201, or accept and route raw).
    Unsupported {
        /// MSH-9 as `CODE^TRIGGER`.
        message_type: String,
    },
}

/// Maps an HL7 v2 message to a canonical event.
///
/// ```
/// use transforms::hl7v2::access::V2Message;
/// use transforms::from_v2::{map, Mapped};
/// use transforms::model::EventKind;
/// let text = "MSH|^~\\&|HIS|MAIN|||20260615103000||ADT^A04|C1|P|2.5\r\
///             PID|1||P-10928^^^HIS^MR||Khalid^Yousef||19940920|M\r";
/// let Mapped::Event(event) = map(&V2Message::parse(text).unwrap()).unwrap() else { panic!() };
/// assert_eq!(event.kind, EventKind::PatientRegistered);
/// assert_eq!(event.partition_key().as_deref(), Some("P-10928"));
/// ```
///
/// # Errors
/// [`MappingError`] when required data is missing or present data is unusable.
pub fn map(msg: &V2Message<'_>) -> Result<Mapped, MappingError> {
    let no_type = || MappingError::Missing {
        path: "MSH-9".into(),
        reason: "no message type",
    };
    // Dispatch on the codes upper-cased without allocating; the text is built once, in the
    // Source.
    let msh = msg.segment("MSH").ok_or_else(no_type)?;
    let parts = msh.field(9).rep(1).components();
    let code = parts.get(1);
    let code = UpperCode::new(code.text().ok_or_else(no_type)?.trim());
    let trigger = parts.get(2);
    let trigger = UpperCode::new(trigger.text().unwrap_or("").trim());
    let event = match (code.as_str(), trigger.as_str()) {
        ("ADT", trigger) => match adt::kind_for(trigger) {
            Some(kind) => adt::event_from_adt(msg, kind)?,
            None => return Ok(unsupported(msg)),
        },
        ("SIU", trigger) => match siu::kind_for(trigger) {
            Some(kind) => siu::event_from_siu(msg, kind)?,
            None => return Ok(unsupported(msg)),
        },
        ("ORM", "O01") | ("OML", "O21") => orders::event_from_order(msg)?,
        ("ORU", "R01") => oru::event_from_oru(msg)?,
        ("DFT", "P03" | "P11") => dft::event_from_dft(msg)?,
        _ => return Ok(unsupported(msg)),
    };
    Ok(Mapped::Event(event))
}

fn unsupported(msg: &V2Message<'_>) -> Mapped {
    Mapped::Unsupported {
        message_type: msg.message_type_text().unwrap_or_default(),
    }
}

/// The [`Source`] block from MSH (and EVN when present).
///
/// # Errors
/// [`MappingError::Missing`] without MSH-10; [`MappingError::BadDateTime`] for MSH-7, EVN-2
/// or EVN-6 that do not parse.
pub fn source_from_msh(msg: &V2Message<'_>) -> Result<Source, MappingError> {
    let msh = msg.segment("MSH").ok_or(MappingError::Missing {
        path: "MSH".into(),
        reason: "no header segment",
    })?;
    let control_id = msh.get(10).string().ok_or(MappingError::Missing {
        path: "MSH-10".into(),
        reason: "no message control id",
    })?;
    let message_time = ts(msg, &msh, 7)?;
    // EVN-6 (event occurred) is when it happened; EVN-2 (recorded) when the HIS wrote it down.
    let event_time = match msg.segment("EVN") {
        Some(evn) => ts(msg, &evn, 6)?.or(ts(msg, &evn, 2)?),
        None => None,
    }
    .or(message_time);
    Ok(Source {
        format: "hl7v2".into(),
        message_type: msg.message_type_text().unwrap_or_default(),
        control_id,
        version: msh.get(12).string(),
        sending_application: msh.get(3).string(),
        sending_facility: msh.get(4).string(),
        receiving_application: msh.get(5).string(),
        receiving_facility: msh.get(6).string(),
        message_time,
        event_time,
    })
}

/// An event with its deterministic id (see [`Event::id`]) and no entities yet.
fn new_event(kind: EventKind, source: Source) -> Box<Event> {
    let id = stable_id(&[
        &source.format,
        source.sending_application.as_deref().unwrap_or(""),
        source.sending_facility.as_deref().unwrap_or(""),
        &source.control_id,
        kind.as_str(),
    ]);
    // Boxed from the start: the event is a few kilobytes, filled in place by the mapping.
    Box::new(Event {
        id,
        kind,
        source,
        patient: None,
        merge: None,
        additional_merges: Vec::new(),
        encounter: None,
        appointment: None,
        orders: Vec::new(),
        results: Vec::new(),
        charges: Vec::new(),
        practitioners: Vec::new(),
    })
}

/// Fills [`Event::practitioners`] from every practitioner the entities reference.
fn collect_practitioners(event: &mut Event) {
    let mut all: Vec<Practitioner> = Vec::new();
    let mut add = |p: Option<&Practitioner>| {
        if let Some(p) = p.filter(|p| !p.is_empty()) {
            if !all.contains(p) {
                all.push(p.clone());
            }
        }
    };
    if let Some(e) = &event.encounter {
        add(e.attending.as_ref());
        add(e.referring.as_ref());
    }
    if let Some(a) = &event.appointment {
        add(a.practitioner.as_ref());
    }
    let result_orders = event.results.iter().map(|r| &r.order);
    for o in event.orders.iter().chain(result_orders) {
        add(o.ordering_provider.as_ref());
    }
    for c in &event.charges {
        add(c.performed_by.as_ref());
        add(c.ordered_by.as_ref());
    }
    event.practitioners = all;
}

/// Field `n` (component 1, subcomponent 1: the DTM of a TS) as a timestamp.
#[inline]
fn ts(
    msg: &V2Message<'_>,
    seg: &SegmentRef<'_, '_>,
    field: usize,
) -> Result<Option<Timestamp>, MappingError> {
    ts_value(msg, seg, field, seg.get(field))
}

/// A timestamp from a value read at `field` of `seg` (for error paths).
#[inline]
fn ts_value(
    msg: &V2Message<'_>,
    seg: &SegmentRef<'_, '_>,
    field: usize,
    value: Value<'_>,
) -> Result<Option<Timestamp>, MappingError> {
    match value.text() {
        None => Ok(None),
        Some(text) => datetime::parse(text)
            .map(Some)
            .map_err(|source| MappingError::BadDateTime {
                path: msg.field_path(seg, field),
                source,
            }),
    }
}

/// A decimal from a value read at `field` of `seg`.
fn decimal_value(
    msg: &V2Message<'_>,
    seg: &SegmentRef<'_, '_>,
    field: usize,
    value: Value<'_>,
) -> Result<Option<Decimal>, MappingError> {
    match value.text() {
        None => Ok(None),
        Some(text) => Decimal::parse(text)
            .map(Some)
            .map_err(|_| MappingError::BadNumber {
                path: msg.field_path(seg, field),
            }),
    }
}

/// Joins the NTE-3 comment of each NTE segment (every repetition) with newlines.
fn notes<'a, 'm: 'a>(ntes: impl IntoIterator<Item = &'a SegmentRef<'a, 'm>>) -> Option<String> {
    join_lines(
        ntes.into_iter()
            .flat_map(|nte| nte.field(3).reps().map(|r| r.text())),
    )
}

/// The values that hold text, trimmed, one per line; `None` when none does. Built in one
/// `String`, without one per line.
pub(crate) fn join_lines<'m>(values: impl IntoIterator<Item = Value<'m>>) -> Option<String> {
    let mut out: Option<String> = None;
    for value in values {
        let Some(line) = value.trimmed() else {
            continue;
        };
        match &mut out {
            None => out = Some(line.to_owned()),
            Some(text) => {
                text.push('\n');
                text.push_str(line);
            }
        }
    }
    out
}
