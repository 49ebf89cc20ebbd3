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
//! | ADT A01-A62 (every ADT trigger of v2.8) | [`adt`] | patient, encounter, tracking, leave, merge/move/link, identifier, doctor and allergy events (table in [`adt`]) |
//! | SIU S12-S24, S26 | [`siu`] | appointment booked/rescheduled/modified/cancelled/discontinued/deleted/no-show, resource added/modified/cancelled/discontinued/deleted, slot blocked/opened |
//! | ORM^O01, OML^O21/O33/O35, OMI^O23 | [`orders`] | order placed/cancelled/updated (+ appointment when scheduled) |
//! | ORU^R01/R30/R31/R32 | [`oru`] | result reported |
//! | DFT^P03, DFT^P11 | [`dft`] | charge posted/reversed (+ payment outcome) |
//! | RDE^O11/O25, RDS^O13 | [`rde`] | medication order created/updated/cancelled, medication dispensed |
//! | MFN^M02, M04, M05, M08, M09, M10 | [`mfn`] | practitioner, service, location created/updated/deactivated/deleted, one event per record ([`Mapped::MasterFile`]); M08-M10 only for orderable tests |
//!
//! [`TRIGGERS`] lists every pair this module maps, with its v2.8 message structure.

pub mod adt;
pub mod datatypes;
pub mod dft;
pub mod mfn;
pub mod orders;
pub mod oru;
pub mod rde;
pub mod siu;

use self::datatypes::UpperCode;
use crate::hl7v2::access::{SegmentRef, V2Message, Value};
use crate::hl7v2::datetime;
use crate::model::{stable_id, Decimal, Event, EventKind, Practitioner, Role, Source, Timestamp};

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
    /// A master file notification (MFN): one event per accepted record and every record's
    /// outcome, which the MFK answer reports record by record.
    MasterFile(Box<mfn::MasterFile>),
    /// A message type this crate does not map (e.g. `ACK`, `QRY^A19`): the engine decides
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
    let mut trigger_text = trigger.text().unwrap_or("").trim();
    // HL7 v2.1 and v2.2: MSH-9 is the message type alone, and an ADT names its event in
    // EVN-1 (MSH-9.2 came with v2.3, EVN-1 was kept for backward compatibility).
    let mut from_evn = false;
    let evn1 = (trigger_text.is_empty() && code.as_str() == "ADT")
        .then(|| msg.segment("EVN").map(|evn| evn.get(1)))
        .flatten();
    if let Some(t) = evn1.as_ref().and_then(|v| v.text()) {
        trigger_text = t.trim();
        from_evn = !trigger_text.is_empty();
    }
    let trigger = UpperCode::new(trigger_text);
    let mut event = match (code.as_str(), trigger.as_str()) {
        ("ADT", trigger) => match adt::kind_for(trigger) {
            Some(kind) => adt::event_from_adt(msg, kind)?,
            None => return Ok(unsupported(msg)),
        },
        ("SIU", trigger) => match siu::kind_for(trigger) {
            Some(kind) => siu::event_from_siu(msg, kind)?,
            None => return Ok(unsupported(msg)),
        },
        ("ORM", "O01") | ("OML", "O21" | "O33" | "O35") | ("OMI", "O23") => {
            orders::event_from_order(msg)?
        }
        ("ORU", "R01" | "R30" | "R31" | "R32") => oru::event_from_oru(msg)?,
        ("RDE", "O11" | "O25") => rde::event_from_pharmacy(msg, false)?,
        ("RDS", "O13") => rde::event_from_pharmacy(msg, true)?,
        ("DFT", "P03" | "P11") => dft::event_from_dft(msg)?,
        ("MFN", trigger) => {
            return match mfn::MasterFileKind::for_trigger(trigger) {
                Some(file) => Ok(Mapped::MasterFile(Box::new(mfn::map_master_file(
                    msg, file,
                )?))),
                None => Ok(unsupported(msg)),
            }
        }
        _ => return Ok(unsupported(msg)),
    };
    if from_evn {
        event.source.message_type = format!("{}^{}", code.as_str(), trigger.as_str());
    }
    Ok(Mapped::Event(event))
}

/// Every message code and trigger [`map`] maps, with its HL7 v2.8 message structure: ADT
/// A01-A62 (without the queries A19 and A56-A59), SIU S12-S26 (without the query S25),
/// ORM^O01, OML^O21/O33/O35, ORU^R01/R30/R31/R32, DFT^P03/P11, MFN^M02/M04/M05/M08/M09/M10,
/// RDE^O11/O25, RDS^O13.
/// `docs/MAPPING.md` shows what
/// each becomes.
pub const TRIGGERS: &[(&str, &str, &str)] = &[
    ("ADT", "A01", "ADT_A01"),
    ("ADT", "A02", "ADT_A02"),
    ("ADT", "A03", "ADT_A03"),
    ("ADT", "A04", "ADT_A01"),
    ("ADT", "A05", "ADT_A05"),
    ("ADT", "A06", "ADT_A06"),
    ("ADT", "A07", "ADT_A06"),
    ("ADT", "A08", "ADT_A01"),
    ("ADT", "A09", "ADT_A09"),
    ("ADT", "A10", "ADT_A09"),
    ("ADT", "A11", "ADT_A09"),
    ("ADT", "A12", "ADT_A12"),
    ("ADT", "A13", "ADT_A01"),
    ("ADT", "A14", "ADT_A05"),
    ("ADT", "A15", "ADT_A15"),
    ("ADT", "A16", "ADT_A16"),
    ("ADT", "A17", "ADT_A17"),
    ("ADT", "A18", "ADT_A18"),
    ("ADT", "A20", "ADT_A20"),
    ("ADT", "A21", "ADT_A21"),
    ("ADT", "A22", "ADT_A21"),
    ("ADT", "A23", "ADT_A21"),
    ("ADT", "A24", "ADT_A24"),
    ("ADT", "A25", "ADT_A21"),
    ("ADT", "A26", "ADT_A21"),
    ("ADT", "A27", "ADT_A21"),
    ("ADT", "A28", "ADT_A05"),
    ("ADT", "A29", "ADT_A21"),
    ("ADT", "A30", "ADT_A30"),
    ("ADT", "A31", "ADT_A05"),
    ("ADT", "A32", "ADT_A21"),
    ("ADT", "A33", "ADT_A21"),
    ("ADT", "A34", "ADT_A30"),
    ("ADT", "A35", "ADT_A30"),
    ("ADT", "A36", "ADT_A30"),
    ("ADT", "A37", "ADT_A37"),
    ("ADT", "A38", "ADT_A38"),
    ("ADT", "A39", "ADT_A39"),
    ("ADT", "A40", "ADT_A39"),
    ("ADT", "A41", "ADT_A39"),
    ("ADT", "A42", "ADT_A39"),
    ("ADT", "A43", "ADT_A43"),
    ("ADT", "A44", "ADT_A44"),
    ("ADT", "A45", "ADT_A45"),
    ("ADT", "A46", "ADT_A30"),
    ("ADT", "A47", "ADT_A30"),
    ("ADT", "A48", "ADT_A30"),
    ("ADT", "A49", "ADT_A30"),
    ("ADT", "A50", "ADT_A50"),
    ("ADT", "A51", "ADT_A50"),
    ("ADT", "A52", "ADT_A52"),
    ("ADT", "A53", "ADT_A52"),
    ("ADT", "A54", "ADT_A54"),
    ("ADT", "A55", "ADT_A54"),
    ("ADT", "A60", "ADT_A60"),
    ("ADT", "A61", "ADT_A61"),
    ("ADT", "A62", "ADT_A61"),
    ("SIU", "S12", "SIU_S12"),
    ("SIU", "S13", "SIU_S12"),
    ("SIU", "S14", "SIU_S12"),
    ("SIU", "S15", "SIU_S12"),
    ("SIU", "S16", "SIU_S12"),
    ("SIU", "S17", "SIU_S12"),
    ("SIU", "S18", "SIU_S12"),
    ("SIU", "S19", "SIU_S12"),
    ("SIU", "S20", "SIU_S12"),
    ("SIU", "S21", "SIU_S12"),
    ("SIU", "S22", "SIU_S12"),
    ("SIU", "S23", "SIU_S12"),
    ("SIU", "S24", "SIU_S12"),
    ("SIU", "S26", "SIU_S12"),
    ("ORM", "O01", "ORM_O01"),
    ("OML", "O21", "OML_O21"),
    ("OML", "O33", "OML_O33"),
    ("OML", "O35", "OML_O35"),
    ("OMI", "O23", "OMI_O23"),
    ("ORU", "R01", "ORU_R01"),
    ("ORU", "R30", "ORU_R30"),
    ("ORU", "R31", "ORU_R30"),
    ("ORU", "R32", "ORU_R30"),
    ("DFT", "P03", "DFT_P03"),
    ("DFT", "P11", "DFT_P11"),
    ("MFN", "M02", "MFN_M02"),
    ("MFN", "M04", "MFN_M04"),
    ("MFN", "M05", "MFN_M05"),
    ("MFN", "M08", "MFN_M08"),
    ("MFN", "M09", "MFN_M09"),
    ("MFN", "M10", "MFN_M10"),
    ("RDE", "O11", "RDE_O11"),
    ("RDE", "O25", "RDE_O25"),
    ("RDS", "O13", "RDS_O13"),
];

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
    let id = event_id(&source, kind);
    // Boxed from the start: the event is about 10 KB, filled in place by the mapping. The
    // allocation comes first so the empty event is written straight into it: `Box::new`
    // builds it on the stack and copies it over (a 10 KB memcpy per message).
    Box::write(Box::new_uninit(), Event::empty(id, kind, source))
}

/// Gives an event made by [`new_event`] another kind, and the id that goes with it, for a
/// mapping that learns its kind only once the event is filled.
fn set_kind(event: &mut Event, kind: EventKind) {
    if event.kind != kind {
        event.kind = kind;
        event.id = event_id(&event.source, kind);
    }
}

/// The deterministic id of an event (see [`Event::id`]).
fn event_id(source: &Source, kind: EventKind) -> String {
    stable_id(&[
        &source.format,
        source.sending_application.as_deref().unwrap_or(""),
        source.sending_facility.as_deref().unwrap_or(""),
        &source.control_id,
        kind.as_str(),
    ])
}

/// A role from one ROL or PRT (`None` without role or person):
/// - ROL: ROL-3 role (table 0443), ROL-4 person, ROL-2 action code, ROL-5/6 begin and end;
/// - PRT (v2.7+, which replaces ROL): PRT-4 role of participation (table 0912), PRT-5 person
///   with PRT-6 person provider type as its specialisation, PRT-2 action code, PRT-11/12
///   begin and end. A PRT that names an organization (PRT-8), a location (PRT-9) or a device
///   (PRT-10) and no person is no role.
///
/// The action code (table 0287) is kept upper case, as sent.
///
/// # Errors
/// [`MappingError::BadDateTime`] for a begin or end time that does not parse.
pub(crate) fn role(
    msg: &V2Message<'_>,
    seg: &SegmentRef<'_, '_>,
) -> Result<Option<Role>, MappingError> {
    let participation = seg.name() == "PRT";
    let (role_field, person, start, end) = if participation {
        (4, 5, 11, 12)
    } else {
        (3, 4, 5, 6)
    };
    let Some(role) = datatypes::coded(&seg.field(role_field)) else {
        return Ok(None);
    };
    let Some(mut practitioner) = datatypes::practitioner(&seg.field(person)) else {
        return Ok(None);
    };
    if participation {
        practitioner.specialisation = datatypes::coded(&seg.field(6));
    }
    Ok(Some(Role {
        role,
        practitioner,
        action: seg.get_comp(2, 1).upper_string(),
        start: ts(msg, seg, start)?,
        end: ts(msg, seg, end)?,
        participation,
    }))
}

/// What a ROL or PRT at some place in the message belongs to (see [`RoleContext`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RolePlace {
    /// The patient and visit.
    Visit,
    /// The order group (ORC/OBR) before it.
    Order,
    /// The observation (OBX) before it: a PRT there is the observation's performer, which
    /// the model does not keep; a ROL there (no structure defines one) stays the visit's.
    Observation,
}

/// Where a ROL or PRT stands: after an ORC or OBR (with only NTE, TQ1, TQ2, CTD, TCD or
/// other ROL/PRT between) it is a role of that order group; after an OBX (with NTE or other
/// ROL/PRT between) of that observation; anywhere else (after PID, PD1, PV1, PV2, PR1,
/// IN1...) a role of the patient and visit. Feed it every segment name in order.
pub(crate) struct RoleContext {
    place: RolePlace,
}

impl Default for RoleContext {
    fn default() -> Self {
        Self {
            place: RolePlace::Visit,
        }
    }
}

impl RoleContext {
    /// Notes a segment; returns, for a ROL or PRT, what it belongs to.
    pub(crate) fn step(&mut self, name: &str) -> RolePlace {
        match name {
            "ORC" | "OBR" => self.place = RolePlace::Order,
            "OBX" => self.place = RolePlace::Observation,
            "ROL" | "PRT" | "NTE" | "TQ1" | "TQ2" | "CTD" | "TCD" => {}
            _ => self.place = RolePlace::Visit,
        }
        self.place
    }
}

/// True for a ROL or PRT segment.
pub(crate) fn is_role_segment(name: &str) -> bool {
    matches!(name, "ROL" | "PRT")
}

/// Whether a ROL or PRT at `place` is a role of the patient and visit.
fn is_visit_role(name: &str, place: RolePlace) -> bool {
    match place {
        RolePlace::Visit => true,
        RolePlace::Order => false,
        RolePlace::Observation => name == "ROL",
    }
}

/// The roles of the patient and visit: every ROL and PRT that is not in an order group or
/// (a PRT) an observation (see [`RoleContext`]), in message order.
///
/// # Errors
/// As [`role`].
pub(crate) fn visit_roles(msg: &V2Message<'_>) -> Result<Vec<Role>, MappingError> {
    let mut out = Vec::new();
    // Most messages have no ROL or PRT: no walk over every segment for them.
    if msg.segment("ROL").is_none() && msg.segment("PRT").is_none() {
        return Ok(out);
    }
    let mut context = RoleContext::default();
    for seg in msg.segments() {
        let place = context.step(seg.name());
        if is_role_segment(seg.name()) && is_visit_role(seg.name(), place) {
            out.extend(role(msg, &seg)?);
        }
    }
    Ok(out)
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
    let other_encounter = event
        .other_patient
        .as_ref()
        .and_then(|o| o.encounter.as_ref());
    if let Some(p) = &event.patient {
        add(p.primary_care_provider.as_ref());
        for pr in &p.procedures {
            add(pr.performer.as_ref());
        }
    }
    // A role the message removes (ROL-2 `DE`, `UN`) references no one any more.
    for e in event.encounter.iter().chain(other_encounter) {
        for r in e.roles.iter().filter(|r| r.is_current()) {
            add(Some(&r.practitioner));
        }
        add(e.attending.as_ref());
        add(e.referring.as_ref());
        for c in &e.consulting {
            add(Some(c));
        }
        add(e.admitting.as_ref());
        for p in e.other_providers.iter().chain(&e.referral_sources) {
            add(Some(p));
        }
    }
    if let Some(a) = &event.appointment {
        add(a.practitioner.as_ref());
        for p in &a.personnel {
            add(Some(&p.practitioner));
        }
        for r in a.roles.iter().filter(|r| r.is_current()) {
            add(Some(&r.practitioner));
        }
    }
    let result_orders = event.results.iter().map(|r| &r.order);
    for o in event.orders.iter().chain(result_orders) {
        add(o.ordering_provider.as_ref());
        for r in o.roles.iter().filter(|r| r.is_current()) {
            add(Some(&r.practitioner));
        }
    }
    for c in &event.charges {
        add(c.performed_by.as_ref());
        add(c.ordered_by.as_ref());
    }
    for m in &event.medication_orders {
        add(m.prescriber.as_ref());
        add(m.dispense.as_ref().and_then(|d| d.dispenser.as_ref()));
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
