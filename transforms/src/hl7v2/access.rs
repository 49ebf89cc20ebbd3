//! Typed access to a parsed HL7 v2 message: values by path (`PID-3`, `PID.3[2].1.2`,
//! `OBX[2]-5`), repetitions, segment groups, and the header facts every mapping needs.
//!
//! [`V2Message`] indexes the segments of the text once (one allocation) and reads fields,
//! repetitions and components by splitting the borrowed text on demand: no tree of vectors is
//! built, which is what makes parse + map fast (see `docs/PERFORMANCE.md`). It adds what a
//! plain split leaves out: escape decoding that handles `\Xhh\` and `\.br\` (see
//! [`super::escape`]), the difference between an explicit null `""` and an absent value
//! ([`Value`]), MSH numbering (MSH-1 is the field separator, MSH-2 the encoding characters,
//! including a v2.7+ truncation character), and a strict check that every segment is well
//! formed. [`V2Message::tree`] gives the full hl7-parser tree to callers that want one.
//!
//! Addressing follows HAPI's Terser: a path that stops at a field or component means its first
//! component / subcomponent, so `PID-5` is the family name and `PID-3` the first identifier.
//! Everything is 1-based, as in the HL7 standard.

use std::borrow::Cow;
use std::fmt;

use hl7_parser::message::Separators;
use hl7_parser::Message;

use super::escape;

/// Why a text could not be read as an HL7 v2 message. Carries positions, never content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The text does not start with an MSH segment and its encoding characters.
    #[error("message does not start with a valid MSH segment")]
    NoHeader,
    /// A segment could not be parsed (bad segment name, stray bytes); its byte offset is given.
    #[error("malformed segment at byte {offset}")]
    MalformedSegment {
        /// Byte offset in the message text where parsing stopped.
        offset: usize,
    },
    /// The text is 4 GiB or more (the index keeps 32-bit offsets).
    #[error("message of 4 GiB or more")]
    TooLarge,
}

/// Why a path string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not follow `SEG[n]-F[r].C.S`.
    #[error("invalid HL7 path {path:?}: {reason}")]
    Invalid {
        /// The path as given (a path holds no patient data).
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A parsed location: segment (and occurrence), field, repetition, component, subcomponent.
///
/// Grammar: `SEG` then optional `[occurrence]`, then `-` or `.` and the field number with an
/// optional `[repetition]`, then optionally `.component` and `.subcomponent` (`-` is accepted
/// in place of `.`). All numbers are 1-based.
///
/// ```
/// use transforms::hl7v2::access::Path;
/// let p: Path = "PID.3[2].4.1".parse().unwrap();
/// assert_eq!((p.segment(), p.occurrence(), p.field()), ("PID", 1, 3));
/// assert_eq!((p.repetition(), p.component(), p.subcomponent()), (2, 1 + 3, 1));
/// let p: Path = "OBX[2]-5".parse().unwrap();
/// assert_eq!((p.occurrence(), p.field(), p.repetition(), p.component()), (2, 5, 1, 1));
/// assert!("PID-0".parse::<Path>().is_err());
/// assert!("PI-3".parse::<Path>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path {
    segment: String,
    occurrence: usize,
    field: usize,
    repetition: usize,
    component: usize,
    subcomponent: usize,
}

impl Path {
    /// The segment name, e.g. `PID`.
    pub fn segment(&self) -> &str {
        &self.segment
    }
    /// Which occurrence of the segment (1 = first).
    pub fn occurrence(&self) -> usize {
        self.occurrence
    }
    /// Field number (MSH-1 is the field separator, as in the standard).
    pub fn field(&self) -> usize {
        self.field
    }
    /// Repetition (1 when not given).
    pub fn repetition(&self) -> usize {
        self.repetition
    }
    /// Component (1 when not given).
    pub fn component(&self) -> usize {
        self.component
    }
    /// Subcomponent (1 when not given).
    pub fn subcomponent(&self) -> usize {
        self.subcomponent
    }
}

impl std::str::FromStr for Path {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| PathError::Invalid {
            path: s.to_owned(),
            reason,
        };
        let name = s
            .get(..3)
            .ok_or_else(|| err("segment name must have 3 characters"))?;
        if !name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            return Err(err("segment name must have 3 characters"));
        }
        let mut rest = &s[3..];
        let bracket = |rest: &mut &str| -> Result<Option<usize>, PathError> {
            let Some(inner) = rest.strip_prefix('[') else {
                return Ok(None);
            };
            let close = inner.find(']').ok_or_else(|| err("unclosed '['"))?;
            let n = positive(&inner[..close]).ok_or_else(|| err("index must be 1 or more"))?;
            *rest = &inner[close + 1..];
            Ok(Some(n))
        };
        let occurrence = bracket(&mut rest)?.unwrap_or(1);
        let mut numbers = [0usize; 3];
        let mut repetition = 1;
        let mut count = 0;
        while !rest.is_empty() {
            if count == 3 {
                return Err(err("too many levels"));
            }
            rest = rest
                .strip_prefix(['-', '.'])
                .ok_or_else(|| err("expected '-' or '.'"))?;
            let end = rest.find(['-', '.', '[']).unwrap_or(rest.len());
            numbers[count] =
                positive(&rest[..end]).ok_or_else(|| err("position must be 1 or more"))?;
            rest = &rest[end..];
            if count == 0 {
                repetition = bracket(&mut rest)?.unwrap_or(1);
            }
            count += 1;
        }
        if count == 0 {
            return Err(err("a field number is required"));
        }
        Ok(Self {
            segment: name.to_owned(),
            occurrence,
            field: numbers[0],
            repetition,
            component: numbers[1].max(1),
            subcomponent: numbers[2].max(1),
        })
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.segment)?;
        if self.occurrence > 1 {
            write!(f, "[{}]", self.occurrence)?;
        }
        write!(
            f,
            "-{}[{}].{}.{}",
            self.field, self.repetition, self.component, self.subcomponent
        )
    }
}

fn positive(text: &str) -> Option<usize> {
    if text.is_empty() || text.len() > 6 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|n| *n > 0)
}

/// One primitive value: absent, explicitly null (`""`, "delete this value"), or text with
/// escapes decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'m> {
    /// Not sent, or sent empty.
    Absent,
    /// Sent as `""`: the sender asks to clear the value.
    Null,
    /// Sent text, escapes decoded, never empty.
    Text(Cow<'m, str>),
}

impl<'m> Value<'m> {
    /// `escapes` is false when the segment holding `raw` has no escape character at all, so
    /// decoding (a scan of every value) can be skipped.
    #[inline]
    fn from_raw(raw: &'m str, seps: &Separators, escapes: bool) -> Self {
        match raw {
            "" => Value::Absent,
            "\"\"" => Value::Null,
            _ => {
                let text = if escapes {
                    escape::decode(raw, seps)
                } else {
                    Cow::Borrowed(raw)
                };
                if is_blank(&text) {
                    Value::Absent
                } else {
                    Value::Text(text)
                }
            }
        }
    }

    /// The text, or `None` when absent or null.
    #[inline]
    pub fn text(&self) -> Option<&str> {
        match self {
            Value::Text(t) => Some(t),
            Value::Absent | Value::Null => None,
        }
    }

    /// The text trimmed and owned, or `None` when absent, null or blank.
    #[inline]
    pub fn string(&self) -> Option<String> {
        self.trimmed().map(str::to_owned)
    }

    /// [`Value::string`] in ASCII upper case, for codes kept in the model.
    pub fn upper_string(&self) -> Option<String> {
        self.string().map(|mut text| {
            text.make_ascii_uppercase();
            text
        })
    }

    /// The text trimmed (never empty), or `None` when absent, null or blank.
    #[inline]
    pub fn trimmed(&self) -> Option<&str> {
        self.text().map(trimmed)
    }

    /// True for an explicit `""`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// True when nothing was sent.
    pub fn is_absent(&self) -> bool {
        matches!(self, Value::Absent)
    }
}

/// True when `text` is empty or only white space; looks at the first byte before trimming,
/// since values almost never start with a space.
fn is_blank(text: &str) -> bool {
    match text.as_bytes().first() {
        None => true,
        Some(b) if b.is_ascii_graphic() => false,
        Some(_) => text.trim().is_empty(),
    }
}

/// The text without white space at either end; borrowed, and a check of the two end bytes
/// only, when there is none (the usual case).
fn trimmed(text: &str) -> &str {
    match (text.as_bytes().first(), text.as_bytes().last()) {
        (Some(a), Some(z)) if a.is_ascii_graphic() && z.is_ascii_graphic() => text,
        _ => text.trim(),
    }
}

/// An HL7 version from MSH-12, e.g. `2.5.1`; ordered, so `v >= Version::V2_5` works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Always 2.
    pub major: u8,
    /// 3 to 8 in the versions we support.
    pub minor: u8,
    /// The third part (`2.5.1` -> 1), 0 when absent.
    pub patch: u8,
}

impl Version {
    /// HL7 v2.3.
    pub const V2_3: Version = Version::new(2, 3, 0);
    /// HL7 v2.5 (TQ1 replaces the TQ data type; PID-2/PID-4 kept for backward compatibility).
    pub const V2_5: Version = Version::new(2, 5, 0);
    /// HL7 v2.7 (PID-13/14 and XTN-1 deprecated in favour of PID-40 and XTN-12).
    pub const V2_7: Version = Version::new(2, 7, 0);

    /// A version from its parts.
    pub const fn new(major: u8, minor: u8, patch: u8) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Parses `2.3`, `2.5.1`, `2.8.2`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        // The usual `2.5` and `2.5.1`, one digit per part: no split, no number parsing.
        let digit = |b: u8| b.is_ascii_digit().then(|| b - b'0');
        match *text.as_bytes() {
            [a, b'.', b] => return Some(Self::new(digit(a)?, digit(b)?, 0)),
            [a, b'.', b, b'.', c] => return Some(Self::new(digit(a)?, digit(b)?, digit(c)?)),
            _ => {}
        }
        let mut parts = text.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().map_or(Some(0), |p| p.parse().ok())?;
        (parts.next().is_none()).then_some(Self::new(major, minor, patch))
    }
}

/// Message type from MSH-9: code, trigger event and structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageType {
    /// MSH-9.1, e.g. `ADT`.
    pub code: String,
    /// MSH-9.2, e.g. `A04` (empty when not sent).
    pub trigger: String,
    /// MSH-9.3, e.g. `ADT_A01`, when sent.
    pub structure: Option<String>,
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.trigger.is_empty() {
            f.write_str(&self.code)
        } else {
            write!(f, "{}^{}", self.code, self.trigger)
        }
    }
}

/// A parsed HL7 v2 message with typed, decoded access.
#[derive(Debug, Clone)]
pub struct V2Message<'m> {
    /// The message text without trailing blank lines.
    text: &'m str,
    seps: Separators,
    /// The segments in order (MSH first).
    segments: Vec<SegmentIndex>,
    /// Byte offsets in `text` of every field separator, segment after segment; each
    /// [`SegmentIndex`] owns a contiguous run, so field `n` is found without scanning.
    /// `u32`, like every offset here: the index of a message of nothing but separators (or of
    /// four-byte segments) stays within a few times the message's size.
    bounds: Vec<u32>,
}

/// Where one segment lies in the text and where its field separators are in `bounds`.
#[derive(Debug, Clone, Copy)]
struct SegmentIndex {
    name: [u8; 3],
    /// Whether the segment holds the escape character anywhere.
    escapes: bool,
    start: u32,
    end: u32,
    first_bound: u32,
    bound_count: u32,
}

impl<'m> V2Message<'m> {
    /// Parses a message; segments may end with CR, LF or CRLF, trailing blank lines are fine.
    ///
    /// ```
    /// use transforms::hl7v2::access::V2Message;
    /// let m = V2Message::parse("MSH|^~\\&|HIS|MAIN|||20260615||ADT^A04|C1|P|2.5\rPID|1||P-1^^^HIS^MR~N1^^^MOI^NI||Khalid^Yousef\r").unwrap();
    /// assert_eq!(m.get("PID-3[2].4").unwrap().text(), Some("MOI"));
    /// assert_eq!(m.get("PID-5.2").unwrap().text(), Some("Yousef"));
    /// assert_eq!(m.message_type().unwrap().to_string(), "ADT^A04");
    /// ```
    ///
    /// # Errors
    /// [`ParseError::NoHeader`] without a valid MSH and encoding characters;
    /// [`ParseError::MalformedSegment`] for a line that is not `NAME|...` with a 3-character
    /// name, an upper-case letter then upper-case letters or digits;
    /// [`ParseError::TooLarge`] for a text of 4 GiB or more.
    pub fn parse(text: &'m str) -> Result<Self, ParseError> {
        let seps = header_separators(text).ok_or(ParseError::NoHeader)?;
        let text = text.trim_end_matches(|c: char| c.is_whitespace() || c == '\u{1c}');
        if u32::try_from(text.len()).is_err() {
            return Err(ParseError::TooLarge);
        }
        // Offsets fit in u32 from here on (checked above).
        let offset = |at: usize| at as u32;
        // Separators are ASCII (checked in header_separators), so a byte scan finds them and
        // never splits a UTF-8 sequence.
        let field = seps.field as u8;
        let esc = seps.escape as u8;
        let bytes = text.as_bytes();
        let mut segments = Vec::with_capacity(16);
        // Fields average a few bytes; enough room that most messages never grow it.
        let mut bounds = Vec::with_capacity(bytes.len() / 4 + 16);
        // One pass finds every line end and field separator; a line's separators are
        // collected into `bounds` and kept only when the line is a segment.
        // Segments without the escape character (most) skip escape decoding on every read.
        let mut start = 0;
        let mut first_bound = 0;
        let mut escapes = false;
        let mut hits = Hits::new(bytes, [field, b'\r', b'\n', esc]);
        loop {
            // The loop stays this small on purpose: it runs once per separator.
            let hit = hits.next();
            let at = hit.unwrap_or(bytes.len());
            match hit.map(|at| bytes[at]) {
                Some(b) if b == field => {
                    bounds.push(offset(at));
                    continue;
                }
                Some(b) if b == esc => {
                    escapes = true;
                    continue;
                }
                _ => {}
            }
            let line = &text[start..at];
            if is_blank(line) {
                bounds.truncate(first_bound);
            } else {
                if !valid_segment_start(line, seps.field) {
                    return Err(ParseError::MalformedSegment { offset: start });
                }
                if segments.is_empty() {
                    // MSH-2 holds the escape character itself and is never decoded: the
                    // header's other fields (read for every message) skip decoding unless
                    // they have one.
                    escapes =
                        escapes && escape_after_msh2(&bytes[..at], &bounds[first_bound..], esc);
                }
                let b = line.as_bytes();
                segments.push(SegmentIndex {
                    name: [b[0], b[1], b[2]],
                    escapes,
                    start: offset(start),
                    end: offset(at),
                    first_bound: offset(first_bound),
                    bound_count: offset(bounds.len() - first_bound),
                });
            }
            if hit.is_none() {
                break;
            }
            start = at + 1;
            first_bound = bounds.len();
            escapes = false;
        }
        Ok(Self {
            text,
            seps,
            segments,
            bounds,
        })
    }

    /// The full hl7-parser tree of the message, for callers that want to walk every element
    /// (a message viewer). Mappings do not need it.
    ///
    /// # Errors
    /// [`ParseError::NoHeader`] when hl7-parser rejects the text.
    pub fn tree(&self) -> Result<Message<'m>, ParseError> {
        Message::parse_with_lenient_newlines(self.text, true).map_err(|_| ParseError::NoHeader)
    }

    /// The separators declared in MSH-1/MSH-2.
    pub fn separators(&self) -> &Separators {
        &self.seps
    }

    /// The message text that was parsed (without trailing blank lines).
    pub fn raw(&self) -> &'m str {
        self.text
    }

    /// Every segment in order.
    pub fn segments(&self) -> impl Iterator<Item = SegmentRef<'_, 'm>> {
        (0..self.segments.len()).map(|index| self.wrap(index))
    }

    /// Every segment with this name, in order (Z-segments included).
    pub fn segments_named<'s>(
        &'s self,
        name: &'s str,
    ) -> impl Iterator<Item = SegmentRef<'s, 'm>> + 's {
        self.indexes_named(name).map(|i| self.wrap(i))
    }

    /// The first segment with this name.
    pub fn segment(&self, name: &str) -> Option<SegmentRef<'_, 'm>> {
        self.indexes_named(name).next().map(|i| self.wrap(i))
    }

    /// The `n`-th (1-based) segment with this name.
    pub fn segment_n(&self, name: &str, n: usize) -> Option<SegmentRef<'_, 'm>> {
        self.indexes_named(name)
            .nth(n.checked_sub(1)?)
            .map(|i| self.wrap(i))
    }

    fn indexes_named<'s>(&'s self, name: &str) -> impl Iterator<Item = usize> + 's {
        let key: Option<[u8; 3]> = name.as_bytes().try_into().ok();
        self.segments
            .iter()
            .enumerate()
            .filter(move |(_, s)| Some(s.name) == key)
            .map(|(i, _)| i)
    }

    fn wrap(&self, index: usize) -> SegmentRef<'_, 'm> {
        let seg = self.segments[index];
        let first = seg.first_bound as usize;
        SegmentRef {
            text: self.text,
            line: &self.text[seg.start as usize..seg.end as usize],
            start: seg.start as usize,
            bounds: &self.bounds[first..first + seg.bound_count as usize],
            seps: &self.seps,
            index,
            escapes: seg.escapes,
        }
    }

    /// The value at a path.
    ///
    /// # Errors
    /// [`PathError`] when the path is malformed (an absent value is [`Value::Absent`]).
    pub fn get(&self, path: &str) -> Result<Value<'m>, PathError> {
        Ok(self.value(&path.parse()?))
    }

    /// The value at a parsed path.
    pub fn value(&self, path: &Path) -> Value<'m> {
        self.segment_n(&path.segment, path.occurrence)
            .map_or(Value::Absent, |s| {
                s.get_at(
                    path.field,
                    path.repetition,
                    path.component,
                    path.subcomponent,
                )
            })
    }

    /// Groups of segments: each `anchor` segment with the segments after it whose names are in
    /// `members`, up to the next anchor or the first segment that is not a member.
    ///
    /// `groups("OBR", &["OBX", "NTE"])` gives each order with its observations and notes;
    /// `groups("RGS", &["AIS", "AIG", "AIL", "AIP", "NTE"])` the resources of a SIU.
    pub fn groups<'s>(&'s self, anchor: &str, members: &[&str]) -> Vec<SegmentGroup<'s, 'm>> {
        let mut groups: Vec<SegmentGroup<'s, 'm>> = Vec::new();
        let mut open = false;
        for seg in self.segments() {
            if seg.name() == anchor {
                groups.push(SegmentGroup {
                    head: seg,
                    members: Vec::new(),
                });
                open = true;
            } else if open && members.contains(&seg.name()) {
                if let Some(g) = groups.last_mut() {
                    g.members.push(seg);
                }
            } else {
                open = false;
            }
        }
        groups
    }

    /// Which occurrence (1-based) of its name a segment is, e.g. 2 for the second FT1.
    pub fn occurrence(&self, seg: &SegmentRef<'_, 'm>) -> usize {
        self.indexes_named(seg.name())
            .take_while(|i| *i < seg.index)
            .count()
            + 1
    }

    /// A path naming a field of a segment for error messages: `PID-7`, or `FT1[2]-11` for a
    /// later occurrence.
    pub fn field_path(&self, seg: &SegmentRef<'_, 'm>, field: usize) -> String {
        match self.occurrence(seg) {
            1 => format!("{}-{}", seg.name(), field),
            n => format!("{}[{}]-{}", seg.name(), n, field),
        }
    }

    /// MSH-9 as code, trigger and structure.
    pub fn message_type(&self) -> Option<MessageType> {
        let msh = self.segment("MSH")?;
        let msg_type = msh.field(9).rep(1).components();
        Some(MessageType {
            code: msg_type.get(1).upper_string()?,
            trigger: msg_type.get(2).upper_string().unwrap_or_default(),
            structure: msg_type.get(3).string(),
        })
    }

    /// MSH-9 as the text `CODE^TRIGGER` (upper case), as [`MessageType`]'s `Display` writes
    /// it, built in one allocation.
    ///
    /// ```
    /// use transforms::hl7v2::access::V2Message;
    /// let m = V2Message::parse("MSH|^~\\&|HIS|||||| adt ^a04^ADT_A01|1|P|2.5").unwrap();
    /// assert_eq!(m.message_type_text().as_deref(), Some("ADT^A04"));
    /// assert_eq!(m.message_type().unwrap().to_string(), "ADT^A04");
    /// ```
    pub fn message_type_text(&self) -> Option<String> {
        let msh = self.segment("MSH")?;
        let parts = msh.field(9).rep(1).components();
        let code = parts.get(1);
        let code = trimmed(code.text()?);
        let trigger = parts.get(2);
        let trigger = trigger.text().map_or("", trimmed);
        let mut text = String::with_capacity(code.len() + 1 + trigger.len());
        text.push_str(code);
        if !trigger.is_empty() {
            text.push('^');
            text.push_str(trigger);
        }
        text.make_ascii_uppercase();
        Some(text)
    }

    /// MSH-10, the message control id.
    pub fn control_id(&self) -> Option<String> {
        self.segment("MSH")?.get(10).string()
    }

    /// MSH-12 as a version, when it parses.
    pub fn version(&self) -> Option<Version> {
        Version::parse(self.segment("MSH")?.get(12).text()?)
    }

    /// MSH-18 first repetition, the declared character set (e.g. `UNICODE UTF-8`, `8859/1`).
    pub fn charset(&self) -> Option<String> {
        self.segment("MSH")?.get(18).string()
    }
}

/// One error reported by an ERR segment (in an ACK), read the same way whatever the version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReport {
    /// Segment id of the error location, e.g. `PID`.
    pub segment: Option<String>,
    /// Which occurrence of that segment (ERL-2 / ELD-2).
    pub sequence: Option<String>,
    /// Field position (ERL-3 / ELD-3).
    pub field: Option<String>,
    /// HL7 error code (ERR-3.1 / ELD-4.1, table 0357), e.g. `207`.
    pub code: Option<String>,
    /// Error text (ERR-3.2 / ELD-4.2).
    pub text: Option<String>,
    /// Severity (ERR-4: `E`, `W`, `I`); absent before v2.5.
    pub severity: Option<String>,
    /// Free text for the user (ERR-8, v2.5+).
    pub user_message: Option<String>,
}

impl V2Message<'_> {
    /// The errors of every ERR segment.
    ///
    /// v2.5 and later use ERR-2 (location, ERL), ERR-3 (code, CWE), ERR-4 (severity) and ERR-8
    /// (user message); v2.3 and v2.4 put everything in ERR-1 (ELD: segment^sequence^field^code),
    /// one repetition per error. The layout is chosen per segment from what it carries (ERR-2 or
    /// ERR-3 present means v2.5+), not from MSH-12, since senders mix them.
    ///
    /// ```
    /// use transforms::hl7v2::access::V2Message;
    /// let v25 = V2Message::parse("MSH|^~\\&|A|B|||20260615||ACK|1|P|2.5\rMSA|AE|C1\rERR||PID^1^3|101^Required field missing^HL70357|E").unwrap();
    /// let e = &v25.errors()[0];
    /// assert_eq!((e.segment.as_deref(), e.field.as_deref(), e.code.as_deref()), (Some("PID"), Some("3"), Some("101")));
    /// let v23 = V2Message::parse("MSH|^~\\&|A|B|||20260615||ACK|1|P|2.3\rMSA|AE|C1\rERR|PID^1^3^101&Required field missing").unwrap();
    /// assert_eq!(v23.errors()[0].text.as_deref(), Some("Required field missing"));
    /// ```
    pub fn errors(&self) -> Vec<ErrorReport> {
        let mut out = Vec::new();
        for err in self.segments_named("ERR") {
            if !err.field(2).is_empty() || !err.field(3).is_empty() {
                let loc = err.field(2).rep(1);
                out.push(ErrorReport {
                    segment: loc.get(1).string(),
                    sequence: loc.get(2).string(),
                    field: loc.get(3).string(),
                    code: err.get_comp(3, 1).string(),
                    text: err.get_comp(3, 2).string(),
                    severity: err.get(4).string(),
                    user_message: err.get(8).string(),
                });
            } else {
                for eld in err.field(1).reps() {
                    out.push(ErrorReport {
                        segment: eld.get(1).string(),
                        sequence: eld.get(2).string(),
                        field: eld.get(3).string(),
                        code: eld.get_sub(4, 1).string(),
                        text: eld.get_sub(4, 2).string(),
                        severity: None,
                        user_message: None,
                    });
                }
            }
        }
        out
    }
}

/// The separators of `MSH|^~\&`: the field separator after `MSH`, then component, repetition,
/// escape and subcomponent characters (a fifth, truncation, character may follow in v2.7+).
fn header_separators(text: &str) -> Option<Separators> {
    let mut chars = text.strip_prefix("MSH")?.chars();
    let field = chars.next()?;
    // Read into an array, not a Vec: this runs for every message.
    let mut enc = [field; 5];
    let mut count = 0;
    for (slot, c) in enc.iter_mut().zip(chars.take_while(|c| *c != field)) {
        *slot = c;
        count += 1;
    }
    let ok = |c: &char| c.is_ascii_punctuation();
    if count < 4 || !ok(&field) || !enc[..count].iter().all(ok) {
        return None;
    }
    let all = [field, enc[0], enc[1], enc[2], enc[3]];
    let distinct = all.iter().enumerate().all(|(i, c)| !all[..i].contains(c));
    distinct.then_some(Separators {
        field,
        component: enc[0],
        repetition: enc[1],
        escape: enc[2],
        subcomponent: enc[3],
        lenient_newlines: true,
    })
}

/// Whether the MSH line `msh` (the text up to its end) holds the escape character after
/// MSH-2; `bounds` are its field separators (MSH-2 lies between the first two).
fn escape_after_msh2(msh: &[u8], bounds: &[u32], esc: u8) -> bool {
    bounds
        .get(1)
        .is_some_and(|&end| msh[end as usize..].contains(&esc))
}

/// `NAME` or `NAME|…` with a 3-character name: an upper-case letter, then upper-case letters
/// or digits (as [`super::validate::check_body`] requires).
fn valid_segment_start(line: &str, field: char) -> bool {
    let b = line.as_bytes();
    b.len() >= 3
        && b[0].is_ascii_uppercase()
        && b[1..3]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        && line[3..].chars().next().is_none_or(|c| c == field)
}

/// Positions of the bytes equal to any of four, in order, eight bytes at a time: each word
/// is compared with the four at once (SWAR), so a word without any costs a few operations
/// instead of eight byte compares and branches.
struct Hits<'a> {
    bytes: &'a [u8],
    /// Splatted search bytes.
    needles: [u64; 4],
    /// Offset of the word in `mask`.
    at: usize,
    /// High bit set in each byte of the current word that matched, not yet yielded.
    mask: u64,
}

const LOW_BITS: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

impl<'a> Hits<'a> {
    fn new(bytes: &'a [u8], needles: [u8; 4]) -> Self {
        let mut hits = Self {
            bytes,
            needles: needles.map(|n| LOW_BITS * u64::from(n)),
            at: 0,
            mask: 0,
        };
        hits.mask = hits.word_mask(0);
        hits
    }

    /// Matches in the word at `at` (a short last word is padded with a byte matching none).
    #[inline]
    fn word_mask(&self, at: usize) -> u64 {
        let word = match self.bytes.get(at..at + 8) {
            Some(chunk) => u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])),
            None => {
                let rest = self.bytes.get(at..).unwrap_or(&[]);
                // Pad with a byte equal to none of the needles: 0x80 is never a separator
                // (they are ASCII) nor CR or LF.
                let mut chunk = [0x80; 8];
                chunk[..rest.len()].copy_from_slice(rest);
                u64::from_le_bytes(chunk)
            }
        };
        let mut mask = 0;
        for needle in self.needles {
            let x = word ^ needle;
            // High bit of each byte set exactly where that byte of `x` is zero: the low
            // seven bits plus 0x7f carry into the high bit unless zero, and never into the
            // next byte.
            mask |= !(((x & !HIGH_BITS).wrapping_add(!HIGH_BITS)) | x) & HIGH_BITS;
        }
        mask
    }
}

impl Iterator for Hits<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            self.at += 8;
            if self.at >= self.bytes.len() {
                return None;
            }
            self.mask = self.word_mask(self.at);
        }
        let found = self.at + (self.mask.trailing_zeros() / 8) as usize;
        self.mask &= self.mask - 1;
        Some(found)
    }
}

/// The non-empty parts of a text split on an ASCII separator (as `str::split` without the
/// empty parts). A run of separators (a field of a million empty repetitions) is skipped in
/// one loop of byte compares rather than one iterator step per empty part.
struct FilledParts<'m> {
    /// What is left to split.
    rest: &'m str,
    sep: u8,
}

impl<'m> Iterator for FilledParts<'m> {
    type Item = &'m str;

    #[inline]
    fn next(&mut self) -> Option<&'m str> {
        let bytes = self.rest.as_bytes();
        let mut start = 0;
        while start < bytes.len() && bytes[start] == self.sep {
            start += 1;
        }
        if start == bytes.len() {
            self.rest = "";
            return None;
        }
        let mut end = start + 1;
        while end < bytes.len() && bytes[end] != self.sep {
            end += 1;
        }
        // The separator is ASCII: both ends are character boundaries.
        let part = self.rest.get(start..end);
        self.rest = self.rest.get(end..).unwrap_or_default();
        part
    }
}

/// The `n`-th (0-based) part of `text` split on `sep`. Separators are ASCII (checked when the
/// header is read), so a byte scan is exact on UTF-8 text; this is the hot path of every read.
#[inline]
fn nth_part(text: &str, sep: char, n: usize) -> Option<&str> {
    // Values are short (a few to a few dozen bytes), so a plain loop beats a SIMD search
    // and its call.
    let sep = sep as u8;
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut index = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == sep {
            if index == n {
                return text.get(start..i);
            }
            index += 1;
            start = i + 1;
        }
    }
    (index == n).then(|| text.get(start..)).flatten()
}

/// Repetition `rep`, component `comp`, subcomponent `sub` (0-based) of a field, in one pass
/// over it. Same result as splitting on the repetition separator, then the component one,
/// then the subcomponent one: separators are distinct ASCII characters (checked when the
/// header is read). `rep = 0` with the field being one repetition's text reads a repetition.
#[inline]
fn locate<'a>(
    field: &'a str,
    seps: &Separators,
    rep: usize,
    comp: usize,
    sub: usize,
) -> Option<&'a str> {
    let (rs, cs, ss) = (
        seps.repetition as u8,
        seps.component as u8,
        seps.subcomponent as u8,
    );
    let (mut r, mut c, mut s, mut start) = (0, 0, 0, 0);
    for (i, &b) in field.as_bytes().iter().enumerate() {
        if b != cs && b != ss && b != rs {
            continue;
        }
        if r == rep && c == comp && s == sub {
            return field.get(start..i);
        }
        if b == rs {
            if r == rep {
                // The repetition ended before the component or subcomponent.
                return None;
            }
            (r, c, s) = (r + 1, 0, 0);
        } else if b == cs {
            if r == rep && c == comp {
                return None;
            }
            (c, s) = (c + 1, 0);
        } else {
            s += 1;
        }
        start = i + 1;
    }
    (r == rep && c == comp && s == sub)
        .then(|| field.get(start..))
        .flatten()
}

/// A group of segments found by [`V2Message::groups`].
#[derive(Debug, Clone)]
pub struct SegmentGroup<'s, 'm> {
    /// The anchor segment (OBR, RGS, FT1…).
    pub head: SegmentRef<'s, 'm>,
    /// The member segments after it, in order.
    pub members: Vec<SegmentRef<'s, 'm>>,
}

impl<'s, 'm> SegmentGroup<'s, 'm> {
    /// Members with this name, in order.
    pub fn named<'g>(&'g self, name: &'g str) -> impl Iterator<Item = &'g SegmentRef<'s, 'm>> {
        self.members.iter().filter(move |s| s.name() == name)
    }
}

/// One segment of a [`V2Message`].
#[derive(Debug, Clone, Copy)]
pub struct SegmentRef<'s, 'm> {
    text: &'m str,
    line: &'m str,
    /// Offset of `line` in `text`.
    start: usize,
    /// Offsets in `text` of this segment's field separators.
    bounds: &'s [u32],
    seps: &'s Separators,
    index: usize,
    /// Whether the segment holds the escape character (else values need no decoding).
    escapes: bool,
}

impl<'s, 'm> SegmentRef<'s, 'm> {
    /// The segment name.
    pub fn name(&self) -> &'m str {
        &self.line[..3]
    }

    /// Position of the segment in the message (0 = MSH).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The raw (undecoded) segment text.
    pub fn raw(&self) -> &'m str {
        self.line
    }

    #[inline]
    fn raw_field(&self, n: usize) -> Option<&'m str> {
        // In MSH the first separator is MSH-1 itself, so MSH-2 is the first element after the
        // name; elsewhere field n is the n-th element after the name.
        let skip = if self.name() == "MSH" {
            n.checked_sub(1)?
        } else {
            n
        };
        if skip == 0 || skip > self.bounds.len() {
            return None;
        }
        let start = self.bounds[skip - 1] as usize + 1;
        let end = self
            .bounds
            .get(skip)
            .map_or(self.start + self.line.len(), |&b| b as usize);
        self.text.get(start..end)
    }

    /// A field (all its repetitions).
    #[inline]
    pub fn field(&self, n: usize) -> FieldRef<'s, 'm> {
        FieldRef {
            raw: self.raw_field(n),
            seps: self.seps,
            escapes: self.escapes,
        }
    }

    /// Field `n`, first repetition, first component, first subcomponent.
    #[inline]
    pub fn get(&self, n: usize) -> Value<'m> {
        self.get_at(n, 1, 1, 1)
    }

    /// Field `n`, first repetition, component `c` (its first subcomponent).
    pub fn get_comp(&self, n: usize, c: usize) -> Value<'m> {
        self.get_at(n, 1, c, 1)
    }

    /// Any primitive value by numbers (all 1-based).
    pub fn get_at(&self, field: usize, rep: usize, comp: usize, sub: usize) -> Value<'m> {
        if self.name() == "MSH" && field <= 2 {
            // MSH-1 and MSH-2 are the delimiters themselves: never split or decoded.
            return match field {
                1 => Value::Text(Cow::Owned(self.seps.field.to_string())),
                2 => self
                    .raw_field(2)
                    .map_or(Value::Absent, |e| Value::Text(Cow::Borrowed(e))),
                _ => Value::Absent,
            };
        }
        let (Some(raw), Some(r), Some(c), Some(s)) = (
            self.raw_field(field),
            rep.checked_sub(1),
            comp.checked_sub(1),
            sub.checked_sub(1),
        ) else {
            return Value::Absent;
        };
        locate(raw, self.seps, r, c, s).map_or(Value::Absent, |v| {
            Value::from_raw(v, self.seps, self.escapes)
        })
    }
}

/// A field with its repetitions (possibly absent).
#[derive(Debug, Clone, Copy)]
pub struct FieldRef<'s, 'm> {
    raw: Option<&'m str>,
    seps: &'s Separators,
    escapes: bool,
}

impl<'s, 'm> FieldRef<'s, 'm> {
    /// Repetition `n` (1-based); an absent repetition reads as absent values.
    pub fn rep(&self, n: usize) -> RepRef<'s, 'm> {
        let raw = self
            .raw
            .zip(n.checked_sub(1))
            .and_then(|(raw, n)| nth_part(raw, self.seps.repetition, n));
        RepRef {
            raw,
            seps: self.seps,
            escapes: self.escapes,
        }
    }

    /// All repetitions that hold something (empty repetitions skipped).
    #[inline]
    pub fn reps(&self) -> impl Iterator<Item = RepRef<'s, 'm>> + use<'s, 'm> {
        let (seps, escapes) = (self.seps, self.escapes);
        FilledParts {
            rest: self.raw.unwrap_or_default(),
            sep: seps.repetition as u8,
        }
        .map(move |r| RepRef {
            raw: Some(r),
            seps,
            escapes,
        })
    }

    /// True when the field was not sent or is empty.
    pub fn is_empty(&self) -> bool {
        self.raw.is_none_or(str::is_empty)
    }

    /// The whole field decoded as text (separators inside it stay as they are).
    pub fn text(&self) -> Value<'m> {
        self.raw.map_or(Value::Absent, |f| {
            Value::from_raw(f, self.seps, self.escapes)
        })
    }
}

/// One repetition of a field.
#[derive(Debug, Clone, Copy)]
pub struct RepRef<'s, 'm> {
    raw: Option<&'m str>,
    seps: &'s Separators,
    escapes: bool,
}

impl<'s, 'm> RepRef<'s, 'm> {
    /// Component `c`, first subcomponent.
    pub fn get(&self, c: usize) -> Value<'m> {
        self.get_sub(c, 1)
    }

    /// Component `c`, subcomponent `s`.
    pub fn get_sub(&self, c: usize, s: usize) -> Value<'m> {
        let (Some(raw), Some(c), Some(s)) = (self.raw, c.checked_sub(1), s.checked_sub(1)) else {
            return Value::Absent;
        };
        // `raw` is one repetition: it holds no repetition separator.
        locate(raw, self.seps, 0, c, s).map_or(Value::Absent, |v| {
            Value::from_raw(v, self.seps, self.escapes)
        })
    }

    /// Component `c` whole (its subcomponents and their separators), decoded as text.
    ///
    /// ```
    /// use transforms::hl7v2::access::V2Message;
    /// let m = V2Message::parse("MSH|^~\\&|HIS\rPID|1||P-1^^^HIS&1.2&ISO^MR").unwrap();
    /// let rep = m.segment("PID").unwrap().field(3).rep(1);
    /// assert_eq!(rep.component(4).text(), Some("HIS&1.2&ISO"));
    /// assert!(rep.component(6).is_absent());
    /// ```
    pub fn component(&self, c: usize) -> Value<'m> {
        self.raw
            .zip(c.checked_sub(1))
            .and_then(|(raw, c)| nth_part(raw, self.seps.component, c))
            .map_or(Value::Absent, |v| {
                Value::from_raw(v, self.seps, self.escapes)
            })
    }

    /// The whole repetition decoded as text.
    pub fn text(&self) -> Value<'m> {
        self.raw.map_or(Value::Absent, |r| {
            Value::from_raw(r, self.seps, self.escapes)
        })
    }

    /// True when the repetition was not sent or is empty.
    pub fn is_empty(&self) -> bool {
        self.raw.is_none_or(str::is_empty)
    }

    /// The repetition split into its components once, for reading a composite (XPN, XAD, CX,
    /// XTN...) component after component: each [`RepRef::get`] scans from the start of the
    /// repetition, so reading n components that way costs n scans.
    ///
    /// ```
    /// use transforms::hl7v2::access::V2Message;
    /// let m = V2Message::parse("MSH|^~\\&|HIS\rPID|1||P-1^^^HIS&1.2&ISO^MR").unwrap();
    /// let cx = m.segment("PID").unwrap().field(3).rep(1).components();
    /// assert_eq!(cx.get(1).text(), Some("P-1"));
    /// assert_eq!(cx.get_sub(4, 2).text(), Some("1.2"));
    /// assert_eq!(cx.get(5).text(), Some("MR"));
    /// assert!(cx.get(6).is_absent());
    /// ```
    pub fn components(&self) -> Components<'s, 'm> {
        let mut ends = [0; SPLIT_COMPONENTS];
        let mut count = 0;
        if self.raw.is_some_and(|r| u32::try_from(r.len()).is_err()) {
            // Too long for u32 offsets (never in practice): read unsplit.
            count = usize::from(UNSPLIT);
        } else if let Some(raw) = self.raw {
            let cs = self.seps.component as u8;
            for (i, &b) in raw.as_bytes().iter().enumerate() {
                if b == cs {
                    ends[count] = i as u32;
                    count += 1;
                    if count == SPLIT_COMPONENTS {
                        break;
                    }
                }
            }
            if count < SPLIT_COMPONENTS {
                ends[count] = raw.len() as u32;
                count += 1;
            }
        }
        Components {
            rep: *self,
            ends,
            count: count as u8,
        }
    }
}

/// How many leading components [`RepRef::components`] splits out; later ones are read from
/// the repetition as [`RepRef::get`] reads them. 16 covers every component the mappings read
/// (XCN-13 is the furthest).
const SPLIT_COMPONENTS: usize = 16;

/// [`Components::count`] of a repetition left unsplit: every read goes to the repetition.
const UNSPLIT: u8 = u8::MAX;

/// One repetition split into components by [`RepRef::components`]; reads give the same
/// values as the same reads on the [`RepRef`], in any order.
#[derive(Debug, Clone, Copy)]
pub struct Components<'s, 'm> {
    rep: RepRef<'s, 'm>,
    /// Byte offset in the repetition where each split component ends.
    ends: [u32; SPLIT_COMPONENTS],
    /// How many components `ends` holds: all of them when under [`SPLIT_COMPONENTS`];
    /// [`UNSPLIT`] when none was split.
    count: u8,
}

impl<'m> Components<'_, 'm> {
    /// Component `c` (1-based), first subcomponent.
    pub fn get(&self, c: usize) -> Value<'m> {
        self.get_sub(c, 1)
    }

    /// Component `c`, subcomponent `s` (both 1-based).
    pub fn get_sub(&self, c: usize, s: usize) -> Value<'m> {
        let (Some(c0), Some(s0), Some(raw)) = (c.checked_sub(1), s.checked_sub(1), self.rep.raw)
        else {
            return Value::Absent;
        };
        if self.count == UNSPLIT {
            return self.rep.get_sub(c, s);
        }
        let count = usize::from(self.count);
        if c0 >= count {
            // Past the end of a repetition split whole, or beyond the split part.
            return if count < SPLIT_COMPONENTS {
                Value::Absent
            } else {
                self.rep.get_sub(c, s)
            };
        }
        let start = match c0 {
            0 => 0,
            _ => self.ends[c0 - 1] as usize + 1,
        };
        let seps = self.rep.seps;
        raw.get(start..self.ends[c0] as usize)
            .and_then(|part| nth_part(part, seps.subcomponent, s0))
            .map_or(Value::Absent, |v| {
                Value::from_raw(v, seps, self.rep.escapes)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MSH-2 holds the escape character without marking the header as escaped; an escape
    /// in a later MSH field is still decoded.
    #[test]
    fn header_escapes_outside_msh2_are_decoded() {
        let plain = V2Message::parse("MSH|^~\\&|HIS|MAIN\rPID|1").expect("parses");
        assert_eq!(plain.get("MSH-2").expect("path").text(), Some("^~\\&"));
        assert_eq!(plain.get("MSH-4").expect("path").text(), Some("MAIN"));
        let escaped = V2Message::parse("MSH|^~\\&|HIS|A\\T\\B\rPID|1").expect("parses");
        assert_eq!(escaped.get("MSH-2").expect("path").text(), Some("^~\\&"));
        assert_eq!(escaped.get("MSH-4").expect("path").text(), Some("A&B"));
    }

    /// The one-digit fast path gives what the general reading gives.
    #[test]
    fn versions_parse() {
        for (text, version) in [
            ("2.5", Some(Version::new(2, 5, 0))),
            ("2.5.1", Some(Version::new(2, 5, 1))),
            ("2.10", Some(Version::new(2, 10, 0))),
            (" 2.5 ", Some(Version::new(2, 5, 0))),
            ("2.x", None),
            ("2.5.", None),
            ("+.5", None),
            ("2.5.1.1", None),
        ] {
            assert_eq!(Version::parse(text), version, "{text:?}");
        }
    }

    proptest::proptest! {
        /// The one-pass reader finds what splitting on `^` and then `&` finds.
        #[test]
        fn locate_is_split_then_split(
            field in "[ab^&~]{0,16}",
            rep in 0usize..3,
            comp in 0usize..5,
            sub in 0usize..4,
        ) {
            let seps = header_separators("MSH|^~\\&|").expect("separators");
            let split = nth_part(&field, '~', rep)
                .and_then(|r| nth_part(r, '^', comp))
                .and_then(|c| nth_part(c, '&', sub));
            proptest::prop_assert_eq!(locate(&field, &seps, rep, comp, sub), split);
        }

        /// The word-at-a-time search finds exactly the bytes a byte loop finds, whatever the
        /// length and whatever bytes (UTF-8 or not) surround them.
        #[test]
        fn hits_are_the_matching_bytes(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(vec![b'|', b'\r', b'\n', b'\\', b'a', 0x7c ^ 0x80, 0xff, 0]),
                    proptest::num::u8::ANY,
                ],
                0..80,
            ),
        ) {
            let needles = [b'|', b'\r', b'\n', b'\\'];
            let expected: Vec<usize> = bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| needles.contains(b))
                .map(|(i, _)| i)
                .collect();
            proptest::prop_assert_eq!(Hits::new(&bytes, needles).collect::<Vec<_>>(), expected);
        }

        /// The non-empty parts are `str::split`'s without the empty ones.
        #[test]
        fn filled_parts_are_str_split_without_empty_parts(text in "[a~é]{0,30}") {
            let parts: Vec<&str> = FilledParts { rest: &text, sep: b'~' }.collect();
            let split: Vec<&str> = text.split('~').filter(|p| !p.is_empty()).collect();
            proptest::prop_assert_eq!(parts, split);
        }

        /// Reads through [`Components`], in any order, give what the same reads on the
        /// repetition give, within the components and past them.
        #[test]
        fn components_read_as_the_repetition(
            field in "[a^^^&\\\\é]{0,60}",
            reads in proptest::collection::vec((0usize..20, 0usize..4), 1..12),
        ) {
            let seps = header_separators("MSH|^~\\&|").expect("separators");
            let rep = RepRef { raw: Some(&field), seps: &seps, escapes: true };
            let parts = rep.components();
            for (comp, sub) in reads {
                proptest::prop_assert_eq!(parts.get_sub(comp, sub), rep.get_sub(comp, sub));
            }
        }
    }

    const ADT: &str = "MSH|^~\\&|HIS|MAIN|SB|HUB|20260615103000+0300||ADT^A04^ADT_A01|MSG1|P|2.5.1\r\
EVN|A04|20260615103000\r\
PID|1||P-10928^^^HIS^MR~1048291048^^^MOI^NI||Khalid^Yousef^Bin||19940920|M|||\\T\\Olaya^^Riyadh||\"\"\r\
ZPI|1|VIP^Gold\r\
OBX|1|ST|A||x\r\
OBX|2|NM|B||7.5\r\
NTE|1||note\r\
OBR|1\r\
OBX|1|ST|C||y\r";

    #[test]
    fn escapes_are_decoded_in_the_segments_that_have_them_and_only_there() {
        // `#` is the escape character here: a backslash is plain text, `#T#` an escape.
        let m =
            V2Message::parse("MSH|^~#&|HIS\rPID|1||a\\b||c#T#d^e#F#\rNTE|1||x\\T\\y\rNTE|2||#E#\r")
                .expect("valid message");
        assert_eq!(m.get("PID-3").expect("path").text(), Some("a\\b"));
        assert_eq!(m.get("PID-5").expect("path").text(), Some("c&d"));
        assert_eq!(m.get("PID-5.2").expect("path").text(), Some("e|"));
        assert_eq!(m.get("NTE-3").expect("path").text(), Some("x\\T\\y"));
        assert_eq!(m.get("NTE[2]-3").expect("path").text(), Some("#"));
        let rep = m.segment("PID").expect("PID").field(5).rep(1);
        assert_eq!(rep.components().get(1).text(), Some("c&d"));
    }

    #[test]
    fn paths_resolve_segment_occurrence_repetition_and_components() {
        let m = V2Message::parse(ADT).expect("valid message");
        assert_eq!(m.get("PID-3").expect("path").text(), Some("P-10928"));
        assert_eq!(
            m.get("PID.3[2].1").expect("path").text(),
            Some("1048291048")
        );
        assert_eq!(m.get("PID-3[2].5").expect("path").text(), Some("NI"));
        assert_eq!(m.get("PID-3[3].1").expect("path"), Value::Absent);
        assert_eq!(m.get("OBX[2]-5").expect("path").text(), Some("7.5"));
        assert_eq!(m.get("ZPI-2.2").expect("path").text(), Some("Gold"));
        assert_eq!(m.get("PID-11").expect("path").text(), Some("&Olaya"));
        assert!(m.get("PID-13").expect("path").is_null());
        assert!(m.get("PID-14").expect("path").is_absent());
        assert_eq!(m.get("MSH-2").expect("path").text(), Some("^~\\&"));
        assert_eq!(m.get("MSH-1").expect("path").text(), Some("|"));
        assert_eq!(m.get("MSH-9.3").expect("path").text(), Some("ADT_A01"));
        assert_eq!(m.version(), Some(Version::new(2, 5, 1)));
        assert_eq!(m.control_id().as_deref(), Some("MSG1"));
    }

    #[test]
    fn groups_stop_at_non_members() {
        let m = V2Message::parse(ADT).expect("valid message");
        let groups = m.groups("OBR", &["OBX", "NTE"]);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].members.len(), 1);
        assert_eq!(groups[0].members[0].get(3).text(), Some("C"));
        let reps: Vec<_> = m
            .segment("PID")
            .expect("PID")
            .field(3)
            .reps()
            .map(|r| r.get(4).string())
            .collect();
        assert_eq!(reps, vec![Some("HIS".into()), Some("MOI".into())]);
    }

    #[test]
    fn truncation_character_keeps_msh_numbering() {
        let m = V2Message::parse("MSH|^~\\&#|HIS|MAIN|||20260615||ADT^A08|C9|P|2.8\rPID|1||X1")
            .expect("valid");
        assert_eq!(m.get("MSH-2").expect("path").text(), Some("^~\\&#"));
        assert_eq!(m.get("MSH-3").expect("path").text(), Some("HIS"));
        assert_eq!(m.control_id().as_deref(), Some("C9"));
        assert_eq!(m.version(), Some(Version::new(2, 8, 0)));
    }

    #[test]
    fn custom_delimiters_and_lf_terminators() {
        let m = V2Message::parse(
            "MSH#$*!%#HIS#MAIN###20260615##ADT$A04#C2#P#2.3\nPID#1##A!S!B$$$HIS\n",
        )
        .expect("valid");
        assert_eq!(m.get("PID-3.1").expect("path").text(), Some("A$B"));
        assert_eq!(m.get("PID-3.4").expect("path").text(), Some("HIS"));
        assert_eq!(m.message_type().expect("type").to_string(), "ADT^A04");
    }

    #[test]
    fn rejects_garbage_after_valid_segments_and_missing_header() {
        assert_eq!(
            V2Message::parse("PID|1").expect_err("no MSH"),
            ParseError::NoHeader
        );
        let err = V2Message::parse("MSH|^~\\&|A\rPID|1\rX|bad\r").expect_err("bad segment");
        assert_eq!(err, ParseError::MalformedSegment { offset: 17 });
        let tree = V2Message::parse("MSH|^~\\&|A\rPID|1||X\r")
            .expect("valid")
            .tree()
            .expect("tree");
        assert_eq!(tree.segments.len(), 2);
        assert!(V2Message::parse("MSH|^~\\&|A\rPID|1\r\r\n").is_ok());
    }
}
