//! Typed access to a parsed HL7 v2 message: values by path (`PID-3`, `PID.3[2].1.2`,
//! `OBX[2]-5`), repetitions, segment groups, and the header facts every mapping needs.
//!
//! [`V2Message`] wraps [`hl7_parser::Message`] (zero-copy) and adds what the parser leaves out:
//! escape decoding that handles `\Xhh\` and `\.br\` (see [`super::escape`]), the difference
//! between an explicit null `""` and an absent value ([`Value`]), the MSH numbering with a
//! v2.7+ truncation character in MSH-2, and a check that the whole input was parsed (the parser
//! silently stops at the first malformed segment).
//!
//! Addressing follows HAPI's Terser: a path that stops at a field or component means its first
//! component / subcomponent, so `PID-5` is the family name and `PID-3` the first identifier.
//! Everything is 1-based, as in the HL7 standard.

use std::borrow::Cow;
use std::fmt;

use hl7_parser::message::{Component, Field, Repeat, Segment, Separators};
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
    fn from_raw(raw: &'m str, seps: &Separators) -> Self {
        match raw {
            "" => Value::Absent,
            "\"\"" => Value::Null,
            _ => {
                let text = escape::decode(raw, seps);
                if text.trim().is_empty() {
                    Value::Absent
                } else {
                    Value::Text(text)
                }
            }
        }
    }

    /// The text, or `None` when absent or null.
    pub fn text(&self) -> Option<&str> {
        match self {
            Value::Text(t) => Some(t),
            Value::Absent | Value::Null => None,
        }
    }

    /// The text trimmed and owned, or `None` when absent, null or blank.
    pub fn string(&self) -> Option<String> {
        self.text().map(|t| t.trim().to_owned())
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
    msg: Message<'m>,
    /// True when MSH-2 has a fifth (truncation) character that the parser took for a field.
    msh_shift: bool,
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
    /// [`ParseError`] when there is no valid MSH or a segment is malformed.
    pub fn parse(text: &'m str) -> Result<Self, ParseError> {
        if !text.starts_with("MSH") || text.len() < 8 {
            return Err(ParseError::NoHeader);
        }
        let msg =
            Message::parse_with_lenient_newlines(text, true).map_err(|_| ParseError::NoHeader)?;
        let consumed = msg.raw_value().len();
        let rest = &text[consumed..];
        if let Some(pos) = rest.find(|c: char| !c.is_whitespace() && c != '\u{1c}') {
            return Err(ParseError::MalformedSegment {
                offset: consumed + pos,
            });
        }
        let seps = msg.separators;
        // `MSH|^~\&#|`: the parser reads 4 encoding characters and takes `#` for MSH-3.
        let msh_shift = text[3..]
            .chars()
            .skip(1)
            .take_while(|c| *c != seps.field && *c != '\r' && *c != '\n')
            .count()
            == 5;
        Ok(Self { msg, msh_shift })
    }

    /// The underlying hl7-parser message.
    pub fn inner(&self) -> &Message<'m> {
        &self.msg
    }

    /// The separators declared in MSH-1/MSH-2.
    pub fn separators(&self) -> &Separators {
        &self.msg.separators
    }

    /// The message text that was parsed.
    pub fn raw(&self) -> &'m str {
        self.msg.raw_value()
    }

    /// Every segment in order.
    pub fn segments(&self) -> impl Iterator<Item = SegmentRef<'_, 'm>> {
        self.msg
            .segments
            .iter()
            .enumerate()
            .map(|(index, seg)| self.wrap(index, seg))
    }

    /// Every segment with this name, in order (Z-segments included).
    pub fn segments_named<'s>(
        &'s self,
        name: &'s str,
    ) -> impl Iterator<Item = SegmentRef<'s, 'm>> + 's {
        self.segments().filter(move |s| s.name() == name)
    }

    /// The first segment with this name.
    pub fn segment(&self, name: &str) -> Option<SegmentRef<'_, 'm>> {
        self.segments().find(|s| s.name() == name)
    }

    /// The `n`-th (1-based) segment with this name.
    pub fn segment_n(&self, name: &str, n: usize) -> Option<SegmentRef<'_, 'm>> {
        self.segments()
            .filter(|s| s.name() == name)
            .nth(n.checked_sub(1)?)
    }

    fn wrap<'s>(&'s self, index: usize, seg: &'s Segment<'m>) -> SegmentRef<'s, 'm> {
        SegmentRef {
            seg,
            seps: &self.msg.separators,
            index,
            msh_shift: self.msh_shift && index == 0,
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
        self.msg.segments[..seg.index]
            .iter()
            .filter(|s| s.name == seg.name())
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
        let code = msh.get_comp(9, 1).string()?;
        Some(MessageType {
            code: code.to_ascii_uppercase(),
            trigger: msh
                .get_comp(9, 2)
                .string()
                .unwrap_or_default()
                .to_ascii_uppercase(),
            structure: msh.get_comp(9, 3).string(),
        })
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
    seg: &'s Segment<'m>,
    seps: &'s Separators,
    index: usize,
    msh_shift: bool,
}

impl<'s, 'm> SegmentRef<'s, 'm> {
    /// The segment name.
    pub fn name(&self) -> &'m str {
        self.seg.name
    }

    /// Position of the segment in the message (0 = MSH).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The raw (undecoded) segment text.
    pub fn raw(&self) -> &'m str {
        self.seg.raw_value()
    }

    fn raw_field(&self, n: usize) -> Option<&'s Field<'m>> {
        let n = if self.msh_shift && n >= 3 { n + 1 } else { n };
        self.seg.fields.get(n.checked_sub(1)?)
    }

    /// A field (all its repetitions).
    pub fn field(&self, n: usize) -> FieldRef<'s, 'm> {
        FieldRef {
            field: self.raw_field(n),
            seps: self.seps,
        }
    }

    /// Field `n`, first repetition, first component, first subcomponent.
    pub fn get(&self, n: usize) -> Value<'m> {
        self.get_at(n, 1, 1, 1)
    }

    /// Field `n`, first repetition, component `c` (its first subcomponent).
    pub fn get_comp(&self, n: usize, c: usize) -> Value<'m> {
        self.get_at(n, 1, c, 1)
    }

    /// Any primitive value by numbers (all 1-based).
    pub fn get_at(&self, field: usize, rep: usize, comp: usize, sub: usize) -> Value<'m> {
        if self.seg.name == "MSH" && field <= 2 {
            // MSH-1 and MSH-2 are the delimiters themselves: never decoded.
            return match field {
                1 => Value::Text(Cow::Owned(self.seps.field.to_string())),
                2 => Value::Text(Cow::Borrowed(self.encoding_characters())),
                _ => Value::Absent,
            };
        }
        self.field(field).rep(rep).get_sub(comp, sub)
    }

    fn encoding_characters(&self) -> &'m str {
        let raw = self.seg.raw_value();
        let start = 3 + self.seps.field.len_utf8();
        let len = if self.msh_shift { 5 } else { 4 };
        raw.get(start..)
            .and_then(|s| s.char_indices().nth(len).map(|(i, _)| &s[..i]))
            .unwrap_or("")
    }
}

/// A field with its repetitions (possibly absent).
#[derive(Debug, Clone, Copy)]
pub struct FieldRef<'s, 'm> {
    field: Option<&'s Field<'m>>,
    seps: &'s Separators,
}

impl<'s, 'm> FieldRef<'s, 'm> {
    /// Repetition `n` (1-based); an absent repetition reads as absent values.
    pub fn rep(&self, n: usize) -> RepRef<'s, 'm> {
        RepRef {
            rep: self.field.and_then(|f| f.repeats.get(n.checked_sub(1)?)),
            seps: self.seps,
        }
    }

    /// All repetitions that hold something (empty repetitions skipped).
    pub fn reps(&self) -> impl Iterator<Item = RepRef<'s, 'm>> + 's {
        let seps = self.seps;
        self.field
            .into_iter()
            .flat_map(|f| f.repeats.iter())
            .filter(|r| !r.raw_value().is_empty())
            .map(move |r| RepRef { rep: Some(r), seps })
    }

    /// True when the field was not sent or is empty.
    pub fn is_empty(&self) -> bool {
        self.field.is_none_or(|f| f.raw_value().is_empty())
    }

    /// The whole field decoded as text (separators inside it stay as they are).
    pub fn text(&self) -> Value<'m> {
        self.field
            .map_or(Value::Absent, |f| Value::from_raw(f.raw_value(), self.seps))
    }
}

/// One repetition of a field.
#[derive(Debug, Clone, Copy)]
pub struct RepRef<'s, 'm> {
    rep: Option<&'s Repeat<'m>>,
    seps: &'s Separators,
}

impl<'s, 'm> RepRef<'s, 'm> {
    fn component(&self, c: usize) -> Option<&'s Component<'m>> {
        self.rep?.components.get(c.checked_sub(1)?)
    }

    /// Component `c`, first subcomponent.
    pub fn get(&self, c: usize) -> Value<'m> {
        self.get_sub(c, 1)
    }

    /// Component `c`, subcomponent `s`.
    pub fn get_sub(&self, c: usize, s: usize) -> Value<'m> {
        self.component(c)
            .and_then(|comp| comp.subcomponents.get(s.checked_sub(1)?))
            .map_or(Value::Absent, |sub| Value::from_raw(sub.value, self.seps))
    }

    /// The whole repetition decoded as text.
    pub fn text(&self) -> Value<'m> {
        self.rep
            .map_or(Value::Absent, |r| Value::from_raw(r.raw_value(), self.seps))
    }

    /// True when the repetition was not sent or is empty.
    pub fn is_empty(&self) -> bool {
        self.rep.is_none_or(|r| r.raw_value().is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(V2Message::parse("MSH|^~\\&|A\rPID|1\r\r\n").is_ok());
    }
}
