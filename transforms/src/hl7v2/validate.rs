//! Whether a received message may be accepted, and if not, the NAK that says why.
//!
//! The checks follow the HL7 acknowledgment rules: a message the engine does not support
//! (message type, trigger, processing id, version) is *rejected* (AR/CR with ERR 200-203);
//! content that cannot be read is an *error* (AE/CE with ERR 100-104). Store trouble is the
//! engine's to report with [`ErrorCode::ApplicationInternalError`].

use super::header::MessageHeader;
use std::fmt;

/// HL7 table 0357, message error condition codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 100: segment sequence error (missing or unknown segment, unreadable structure).
    SegmentSequence,
    /// 101: required field missing.
    RequiredFieldMissing,
    /// 102: data type error (including bytes that are not text in the declared set).
    DataType,
    /// 103: table value not found.
    TableValueNotFound,
    /// 104: value too long.
    ValueTooLong,
    /// 200: unsupported message type.
    UnsupportedMessageType,
    /// 201: unsupported event code.
    UnsupportedEventCode,
    /// 202: unsupported processing id.
    UnsupportedProcessingId,
    /// 203: unsupported version id.
    UnsupportedVersionId,
    /// 207: application internal error (the store failed, the disk is full).
    ApplicationInternalError,
    /// 207 as well, answered AE: a destination did not confirm a message in time
    /// (channels that acknowledge on delivery).
    DeliveryNotConfirmed,
    /// 207 as well, answered AR/CR: an operator paused the channel; the message was not
    /// stored and should be sent again later.
    ChannelPaused,
}

impl ErrorCode {
    /// Every code, in table order.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::SegmentSequence,
        ErrorCode::RequiredFieldMissing,
        ErrorCode::DataType,
        ErrorCode::TableValueNotFound,
        ErrorCode::ValueTooLong,
        ErrorCode::UnsupportedMessageType,
        ErrorCode::UnsupportedEventCode,
        ErrorCode::UnsupportedProcessingId,
        ErrorCode::UnsupportedVersionId,
        ErrorCode::ApplicationInternalError,
        ErrorCode::DeliveryNotConfirmed,
        ErrorCode::ChannelPaused,
    ];

    /// The numeric code of table 0357.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::SegmentSequence => 100,
            ErrorCode::RequiredFieldMissing => 101,
            ErrorCode::DataType => 102,
            ErrorCode::TableValueNotFound => 103,
            ErrorCode::ValueTooLong => 104,
            ErrorCode::UnsupportedMessageType => 200,
            ErrorCode::UnsupportedEventCode => 201,
            ErrorCode::UnsupportedProcessingId => 202,
            ErrorCode::UnsupportedVersionId => 203,
            ErrorCode::ApplicationInternalError
            | ErrorCode::DeliveryNotConfirmed
            | ErrorCode::ChannelPaused => 207,
        }
    }

    /// The text of table 0357 for this code.
    pub fn text(self) -> &'static str {
        match self {
            ErrorCode::SegmentSequence => "Segment sequence error",
            ErrorCode::RequiredFieldMissing => "Required field missing",
            ErrorCode::DataType => "Data type error",
            ErrorCode::TableValueNotFound => "Table value not found",
            ErrorCode::ValueTooLong => "Value too long",
            ErrorCode::UnsupportedMessageType => "Unsupported message type",
            ErrorCode::UnsupportedEventCode => "Unsupported event code",
            ErrorCode::UnsupportedProcessingId => "Unsupported processing id",
            ErrorCode::UnsupportedVersionId => "Unsupported version id",
            ErrorCode::ApplicationInternalError
            | ErrorCode::DeliveryNotConfirmed
            | ErrorCode::ChannelPaused => "Application internal error",
        }
    }

    /// A short snake_case name, used as the `reason` metric label.
    pub fn reason_label(self) -> &'static str {
        match self {
            ErrorCode::SegmentSequence => "segment_sequence",
            ErrorCode::RequiredFieldMissing => "required_field_missing",
            ErrorCode::DataType => "data_type",
            ErrorCode::TableValueNotFound => "table_value_not_found",
            ErrorCode::ValueTooLong => "value_too_long",
            ErrorCode::UnsupportedMessageType => "unsupported_message_type",
            ErrorCode::UnsupportedEventCode => "unsupported_event",
            ErrorCode::UnsupportedProcessingId => "unsupported_processing_id",
            ErrorCode::UnsupportedVersionId => "unsupported_version",
            ErrorCode::ApplicationInternalError => "store_error",
            ErrorCode::DeliveryNotConfirmed => "delivery_not_confirmed",
            ErrorCode::ChannelPaused => "channel_paused",
        }
    }

    /// True for the codes that reject (AR/CR) rather than report an error (AE/CE).
    pub fn is_reject(self) -> bool {
        matches!(
            self,
            ErrorCode::UnsupportedMessageType
                | ErrorCode::UnsupportedEventCode
                | ErrorCode::UnsupportedProcessingId
                | ErrorCode::UnsupportedVersionId
                | ErrorCode::ApplicationInternalError
                | ErrorCode::ChannelPaused
        )
    }
}

/// Where in the message a problem is: HL7 ERL (segment, sequence, field, component).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorLocation {
    /// Segment id, such as `MSH`.
    pub segment: String,
    /// 1-based occurrence of the segment in the message.
    pub sequence: u32,
    /// Field number, 0 when the whole segment is meant.
    pub field: u32,
    /// Component number, 0 when the whole field is meant.
    pub component: u32,
}

impl ErrorLocation {
    /// A location at a field of the first occurrence of a segment.
    pub fn field(segment: &str, field: u32) -> Self {
        ErrorLocation {
            segment: segment.into(),
            sequence: 1,
            field,
            component: 0,
        }
    }

    /// A location at a component of a field of the first occurrence of a segment.
    pub fn component(segment: &str, field: u32, component: u32) -> Self {
        ErrorLocation {
            component,
            ..Self::field(segment, field)
        }
    }
}

impl fmt::Display for ErrorLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.segment)?;
        if self.field > 0 {
            write!(f, "-{}", self.field)?;
            if self.component > 0 {
                write!(f, ".{}", self.component)?;
            }
        }
        Ok(())
    }
}

/// A negative answer: the ERR code, where, and a reason that names no patient data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nak {
    /// Table 0357 code; it also decides AE versus AR.
    pub code: ErrorCode,
    /// Where the problem is, when known.
    pub location: Option<ErrorLocation>,
    /// A short sentence for the sender and the operator (never message content).
    pub reason: String,
}

impl Nak {
    /// A NAK with a location.
    pub fn at(code: ErrorCode, location: ErrorLocation, reason: impl Into<String>) -> Self {
        Nak {
            code,
            location: Some(location),
            reason: reason.into(),
        }
    }

    /// A NAK without a location.
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Nak {
            code,
            location: None,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Nak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(l) => write!(f, "{} {}: {}", self.code.code(), l, self.reason),
            None => write!(f, "{}: {}", self.code.code(), self.reason),
        }
    }
}

/// What a channel accepts; anything else is rejected with AR/CR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptPolicy {
    /// Message type patterns: `*`, `ADT^*`, `SIU^S12`.
    pub message_types: Vec<String>,
    /// Accepted MSH-11 processing ids.
    pub processing_ids: Vec<String>,
    /// Accepted MSH-12 versions; `2.5` also accepts `2.5.1`.
    pub versions: Vec<String>,
}

impl Default for AcceptPolicy {
    fn default() -> Self {
        AcceptPolicy {
            message_types: vec!["*".into()],
            processing_ids: vec!["P".into(), "D".into(), "T".into()],
            versions: [
                "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "2.7", "2.8", "2.9",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// True when `message_type` (`ADT^A04`) matches `pattern` (`*`, `ADT^*`, `ADT^A04`, `ADT`).
///
/// ```
/// use transforms::hl7v2::validate::type_matches;
/// assert!(type_matches("ADT^*", "ADT^A08"));
/// assert!(type_matches("*", "SIU^S12"));
/// assert!(!type_matches("ADT^A04", "ADT^A08"));
/// ```
pub fn type_matches(pattern: &str, message_type: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let (p_code, p_trig) = pattern.split_once('^').unwrap_or((pattern, "*"));
    let (m_code, m_trig) = message_type.split_once('^').unwrap_or((message_type, ""));
    (p_code == "*" || p_code.eq_ignore_ascii_case(m_code))
        && (p_trig == "*" || p_trig.eq_ignore_ascii_case(m_trig))
}

/// Checks the MSH fields every message needs, and the channel's accept policy.
///
/// # Errors
///
/// The first problem found, as a [`Nak`] naming MSH and the field.
pub fn check_header(h: &MessageHeader, policy: &AcceptPolicy) -> Result<(), Nak> {
    if !h.encoding_characters_valid {
        return Err(Nak::at(
            ErrorCode::DataType,
            ErrorLocation::field("MSH", 2),
            "MSH-2 encoding characters are invalid",
        ));
    }
    if h.message_code.is_empty() {
        return Err(Nak::at(
            ErrorCode::RequiredFieldMissing,
            ErrorLocation::component("MSH", 9, 1),
            "MSH-9 message type is empty",
        ));
    }
    if h.control_id.is_empty() {
        return Err(Nak::at(
            ErrorCode::RequiredFieldMissing,
            ErrorLocation::field("MSH", 10),
            "MSH-10 message control id is empty",
        ));
    }
    if h.control_id.chars().count() > 199 {
        return Err(Nak::at(
            ErrorCode::ValueTooLong,
            ErrorLocation::field("MSH", 10),
            "MSH-10 message control id is longer than 199 characters",
        ));
    }
    if h.processing_id.is_empty() {
        return Err(Nak::at(
            ErrorCode::RequiredFieldMissing,
            ErrorLocation::field("MSH", 11),
            "MSH-11 processing id is empty",
        ));
    }
    if h.version.is_empty() {
        return Err(Nak::at(
            ErrorCode::RequiredFieldMissing,
            ErrorLocation::field("MSH", 12),
            "MSH-12 version id is empty",
        ));
    }
    if !policy
        .versions
        .iter()
        .any(|v| h.version == *v || h.version.starts_with(&format!("{v}.")))
    {
        return Err(Nak::at(
            ErrorCode::UnsupportedVersionId,
            ErrorLocation::field("MSH", 12),
            format!(
                "version {} is not accepted on this channel",
                plain(&h.version)
            ),
        ));
    }
    if !policy.processing_ids.contains(&h.processing_id) {
        return Err(Nak::at(
            ErrorCode::UnsupportedProcessingId,
            ErrorLocation::field("MSH", 11),
            format!(
                "processing id {} is not accepted on this channel",
                plain(&h.processing_id)
            ),
        ));
    }
    let message_type = h.message_type();
    if !policy
        .message_types
        .iter()
        .any(|p| type_matches(p, &message_type))
    {
        let code_known = policy
            .message_types
            .iter()
            .any(|p| type_matches(p.split('^').next().unwrap_or(p), &h.message_code));
        return Err(if code_known {
            Nak::at(
                ErrorCode::UnsupportedEventCode,
                ErrorLocation::component("MSH", 9, 2),
                format!(
                    "trigger event {} is not accepted on this channel",
                    plain(&h.trigger_event)
                ),
            )
        } else {
            Nak::at(
                ErrorCode::UnsupportedMessageType,
                ErrorLocation::component("MSH", 9, 1),
                format!(
                    "message type {} is not accepted on this channel",
                    plain(&h.message_code)
                ),
            )
        });
    }
    Ok(())
}

/// Checks the message body: one MSH, first; segment ids of exactly three characters (an
/// upper-case letter, then upper-case letters or digits) followed by the field separator or
/// the end of the segment; no control characters.
///
/// One pass over the bytes, eight at a time, and no allocation on success, so a message of a
/// million separators costs what a plain one of the same size does.
///
/// # Errors
///
/// The first problem found, naming the segment by id and occurrence, or by its position when
/// its id is not valid (the id itself is never echoed: it may be a piece of a name).
///
/// ```
/// use transforms::hl7v2::validate::check_body;
/// assert!(check_body("MSH|^~\\&|A\rPID|1\r").is_ok());
/// let two = check_body("MSH|^~\\&|A\rPID|1\rMSH|^~\\&|B\r").unwrap_err();
/// assert_eq!(two.to_string(), "100 MSH: a second MSH segment in one message (one message per MLLP frame)");
/// let long = check_body("MSH|^~\\&|A\rPIDX|1\r").unwrap_err();
/// assert_eq!(long.to_string(), "100: segment 2 has no valid segment id");
/// ```
pub fn check_body(text: &str) -> Result<(), Nak> {
    let bytes = text.as_bytes();
    // MSH-1, for where a segment id ends; a message without MSH fails on its first segment.
    let mut field = '|';
    // Segments seen (blank lines are not segments), where the current line starts, and the
    // first control character in it.
    let mut index = 0;
    let mut start = 0;
    let mut control = None;
    for at in Specials::new(bytes).chain(Some(bytes.len())) {
        if at < bytes.len() {
            match bytes[at] {
                b'\r' | b'\n' => {}
                b'\t' => continue,
                // U+0080..U+009F (C1 controls) are 0xC2 0x80..0x9F in UTF-8.
                0xC2 if !matches!(bytes.get(at + 1), Some(0x80..=0x9F)) => continue,
                _ => {
                    control.get_or_insert(at - start);
                    continue;
                }
            }
        }
        // `at` is an ASCII byte or the end: a character boundary.
        let segment = &text[start..at];
        let control_at = control.take();
        start = at + 1;
        if segment.trim().is_empty() {
            continue;
        }
        index += 1;
        if index == 1 {
            if let Some(sep) = segment.strip_prefix("MSH").and_then(|r| r.chars().next()) {
                field = sep;
            }
        }
        let Some(id) = segment_id(segment, field) else {
            return Err(Nak::new(
                ErrorCode::SegmentSequence,
                format!("segment {index} has no valid segment id"),
            ));
        };
        if index == 1 && id != "MSH" {
            return Err(Nak::new(
                ErrorCode::SegmentSequence,
                "message does not start with an MSH segment",
            ));
        }
        if index > 1 && id == "MSH" {
            return Err(Nak::at(
                ErrorCode::SegmentSequence,
                ErrorLocation {
                    segment: id.to_string(),
                    sequence: occurrence(text, id, index),
                    field: 0,
                    component: 0,
                },
                "a second MSH segment in one message (one message per MLLP frame)",
            ));
        }
        if let Some(pos) = control_at {
            let fields = segment[..pos].matches(field).count() as u32;
            return Err(Nak::at(
                ErrorCode::DataType,
                ErrorLocation {
                    segment: id.to_string(),
                    sequence: occurrence(text, id, index),
                    field: if id == "MSH" { fields + 1 } else { fields },
                    component: 0,
                },
                "control character in field",
            ));
        }
    }
    Ok(())
}

/// Which occurrence of `id` the `index`-th segment (1-based) of `text` is. Counted only when
/// reporting: a running count per id would cost a lookup per segment.
fn occurrence(text: &str, id: &str, index: usize) -> u32 {
    text.split(['\r', '\n'])
        .filter(|s| !s.trim().is_empty())
        .take(index)
        .filter(|s| s.starts_with(id))
        .count() as u32
}

/// Offsets of the bytes [`check_body`] must look at, in order: every byte below 0x20 (CR,
/// LF, tab and the other C0 controls), DEL, and 0xC2 (the lead byte of the C1 controls).
/// Eight bytes at a time (SWAR, as the typed reader's scan): a word of plain text costs a
/// few operations instead of eight compares and branches.
struct Specials<'a> {
    bytes: &'a [u8],
    /// Offset of the word in `mask`.
    at: usize,
    /// High bit set in each byte of the current word that matched, not yet yielded.
    mask: u64,
}

impl<'a> Specials<'a> {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;

    fn new(bytes: &'a [u8]) -> Self {
        let mut s = Specials {
            bytes,
            at: 0,
            mask: 0,
        };
        s.mask = s.word_mask(0);
        s
    }

    /// Matches in the word at `at` (a short last word is padded with 0x80, which matches
    /// nothing).
    fn word_mask(&self, at: usize) -> u64 {
        let word = match self.bytes.get(at..at + 8) {
            Some(chunk) => u64::from_le_bytes(chunk.try_into().unwrap_or([0x80; 8])),
            None => {
                let rest = self.bytes.get(at..).unwrap_or(&[]);
                let mut chunk = [0x80; 8];
                chunk[..rest.len()].copy_from_slice(rest);
                u64::from_le_bytes(chunk)
            }
        };
        // High bit of each byte set exactly where that byte of `x` is zero (no carry
        // crosses a byte: the low seven bits plus 0x7f stay below 0x100).
        let zero = |x: u64| !(((x & !Self::HIGH).wrapping_add(!Self::HIGH)) | x) & Self::HIGH;
        zero(word & (Self::LOW * 0xE0))
            | zero(word ^ (Self::LOW * 0x7F))
            | zero(word ^ (Self::LOW * 0xC2))
    }
}

impl Iterator for Specials<'_> {
    type Item = usize;

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

/// The id of `segment` when it is exactly three characters, an upper-case letter then
/// upper-case letters or digits, followed by `field` or nothing.
fn segment_id(segment: &str, field: char) -> Option<&str> {
    let b = segment.as_bytes();
    let valid = b.len() >= 3
        && b[0].is_ascii_uppercase()
        && b[1..3]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        && segment[3..].chars().next().is_none_or(|c| c == field);
    valid.then(|| &segment[..3])
}

/// Keeps a value from the header in an error text only when it is a short code,
/// so that no free text from the message ends up in logs or answers.
fn plain(value: &str) -> String {
    if value.len() <= 12 && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
        format!("'{value}'")
    } else {
        "(not shown)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text: &str) -> MessageHeader {
        MessageHeader::read(text).expect("readable MSH")
    }

    #[test]
    fn accepts_a_plain_message() {
        let h = header("MSH|^~\\&|A|B|C|D|1||ADT^A04|X1|P|2.5.1");
        assert_eq!(check_header(&h, &AcceptPolicy::default()), Ok(()));
    }

    #[test]
    fn every_version_from_2_1_to_2_9_is_accepted_by_default() {
        for v in [
            "2.1", "2.2", "2.3", "2.3.1", "2.4", "2.5.1", "2.6", "2.7.1", "2.8.2", "2.9",
        ] {
            let h = header(&format!("MSH|^~\\&|A|B|C|D|1||ADT^A04|X1|P|{v}"));
            assert_eq!(check_header(&h, &AcceptPolicy::default()), Ok(()), "{v}");
        }
        for v in ["2.0", "2.10", "3.0"] {
            let h = header(&format!("MSH|^~\\&|A|B|C|D|1||ADT^A04|X1|P|{v}"));
            assert!(check_header(&h, &AcceptPolicy::default()).is_err(), "{v}");
        }
    }

    #[test]
    fn header_problems_in_order() {
        let p = AcceptPolicy::default();
        let cases = [
            ("MSH|^~\\&|A|B|C|D|1|||X1|P|2.5", 101, "MSH-9.1"),
            ("MSH|^~\\&|A|B|C|D|1||ADT^A04||P|2.5", 101, "MSH-10"),
            ("MSH|^~\\&|A|B|C|D|1||ADT^A04|X|P|", 101, "MSH-12"),
            ("MSH|^~\\&|A|B|C|D|1||ADT^A04|X||2.5", 101, "MSH-11"),
            ("MSH|^~\\&|A|B|C|D|1||ADT^A04|X|P|2.0", 203, "MSH-12"),
            ("MSH|^~\\&|A|B|C|D|1||ADT^A04|X|Q|2.5", 202, "MSH-11"),
        ];
        for (text, code, location) in cases {
            let nak = check_header(&header(text), &p).expect_err(text);
            assert_eq!(nak.code.code(), code, "{text}");
            assert_eq!(
                nak.location.map(|l| l.to_string()).as_deref(),
                Some(location)
            );
        }
    }

    #[test]
    fn message_type_policy() {
        let p = AcceptPolicy {
            message_types: vec!["ADT^*".into(), "SIU^S12".into()],
            ..AcceptPolicy::default()
        };
        let ok = header("MSH|^~\\&|A|B|C|D|1||ADT^A31|X|P|2.5");
        assert_eq!(check_header(&ok, &p), Ok(()));
        let trig = header("MSH|^~\\&|A|B|C|D|1||SIU^S15|X|P|2.5");
        assert_eq!(
            check_header(&trig, &p).map_err(|n| n.code),
            Err(ErrorCode::UnsupportedEventCode)
        );
        let typ = header("MSH|^~\\&|A|B|C|D|1||MFN^M02|X|P|2.5");
        assert_eq!(
            check_header(&typ, &p).map_err(|n| n.code),
            Err(ErrorCode::UnsupportedMessageType)
        );
    }

    #[test]
    fn body_checks() {
        assert_eq!(check_body("MSH|^~\\&|A\rPID|1\rPV1|1\r"), Ok(()));
        assert_eq!(check_body("MSH|^~\\&|A\nZPD|x\r\n"), Ok(()));
        let nul = check_body("MSH|^~\\&|A\rPID|1||ab\0c").expect_err("NUL");
        assert_eq!(nul.code, ErrorCode::DataType);
        assert_eq!(
            nul.location.map(|l| l.to_string()).as_deref(),
            Some("PID-3")
        );
        let bad = check_body("MSH|^~\\&|A\rpid|1").expect_err("lower-case id");
        assert_eq!(bad.code, ErrorCode::SegmentSequence);
    }

    #[test]
    fn segment_ids_are_exactly_three_characters_the_first_a_letter() {
        for ok in ["PID|1", "PID", "ZP1|x", "Z99|x", "PV1|1"] {
            assert_eq!(check_body(&format!("MSH|^~\\&|A\r{ok}\r")), Ok(()), "{ok}");
        }
        for (bad, position) in [
            ("PIDX|1", 2),
            ("PI|1", 2),
            ("P|1", 2),
            ("1PD|1", 2),
            ("pid|1", 2),
            ("PI\u{e9}|1", 2),
            (" PID|1", 2),
            ("PID#1", 2),
        ] {
            let nak = check_body(&format!("MSH|^~\\&|A\r{bad}\rPV1|1\r")).expect_err(bad);
            assert_eq!(nak.code, ErrorCode::SegmentSequence, "{bad}");
            assert_eq!(nak.location, None, "the id is not echoed: {bad}");
            assert_eq!(
                nak.reason,
                format!("segment {position} has no valid segment id"),
                "{bad}"
            );
        }
        // The position counts segments, not lines: blank lines are skipped.
        let nak = check_body("MSH|^~\\&|A\rEVN|1\r\n\rPIDX|1\r").expect_err("third");
        assert_eq!(nak.reason, "segment 3 has no valid segment id");
        // Another MSH-1 ends the id the same way.
        assert_eq!(check_body("MSH#^~\\&#A\rPID#1\r"), Ok(()));
        assert!(check_body("MSH#^~\\&#A\rPID|1\r").is_err());
    }

    #[test]
    fn a_second_msh_is_a_segment_sequence_error_naming_it() {
        let nak = check_body("MSH|^~\\&|A|B\rPID|1\rMSH|^~\\&|A|B\rPID|2\r").expect_err("two");
        assert_eq!(nak.code, ErrorCode::SegmentSequence);
        let at = nak.location.clone().expect("located");
        assert_eq!((at.segment.as_str(), at.sequence, at.field), ("MSH", 2, 0));
        assert_eq!(
            nak.to_string(),
            "100 MSH: a second MSH segment in one message (one message per MLLP frame)"
        );
        // Even right after the first, and with LF endings.
        let nak = check_body("MSH|^~\\&|A\nMSH|^~\\&|B\n").expect_err("two");
        assert_eq!(nak.location.map(|l| l.sequence), Some(2));
    }

    #[test]
    fn a_control_character_is_located_by_occurrence() {
        let nak = check_body("MSH|^~\\&|A\rOBX|1|ST|A||ok\rNTE|1\rOBX|2|ST|B||n\x07o\r")
            .expect_err("BEL");
        let at = nak.location.expect("located");
        assert_eq!((at.segment.as_str(), at.sequence, at.field), ("OBX", 2, 5));
        let nak = check_body("MSH|^~\\&|A|B\x01C\r").expect_err("SOH in MSH-4");
        assert_eq!(
            nak.location.map(|l| l.to_string()).as_deref(),
            Some("MSH-4")
        );
    }

    #[test]
    fn body_checks_take_linear_time_however_many_distinct_segments() {
        // 36,504 distinct ids, 200,000 segments: counting occurrences in a list per segment
        // (as before) took minutes in a debug build.
        let ids: Vec<String> = (b'A'..=b'Z')
            .flat_map(|a| {
                (b'0'..=b'9').chain(b'A'..=b'Z').flat_map(move |b| {
                    (b'0'..=b'9')
                        .chain(b'A'..=b'Z')
                        .map(move |c| String::from_utf8(vec![a, b, c]).expect("ASCII"))
                })
            })
            .filter(|id| id != "MSH")
            .collect();
        let mut text = String::from("MSH|^~\\&|A\r");
        for i in 0..200_000 {
            text.push_str(&ids[i % ids.len()]);
            text.push_str("|1\r");
        }
        let started = std::time::Instant::now();
        assert_eq!(check_body(&text), Ok(()));
        let tildes = format!("MSH|^~\\&|A\rPID|1||{}\r", "~".repeat(900_000));
        assert_eq!(check_body(&tildes), Ok(()));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn specials_are_exactly_the_bytes_a_plain_scan_finds() {
        let mut text: Vec<u8> = Vec::new();
        // Every byte value at every offset within a word, between plain letters.
        for b in 0..=255u8 {
            for pad in 0..9 {
                text.extend(std::iter::repeat_n(b'a', pad));
                text.push(b);
            }
        }
        for len in [0, 1, 7, 8, 9, 15, 16, 17, text.len()] {
            let bytes = &text[..len];
            let plain: Vec<usize> = (0..bytes.len())
                .filter(|&i| bytes[i] < 0x20 || bytes[i] == 0x7F || bytes[i] == 0xC2)
                .collect();
            assert_eq!(Specials::new(bytes).collect::<Vec<_>>(), plain, "{len}");
        }
    }

    #[test]
    fn c1_controls_and_del_are_control_characters_but_other_text_is_not() {
        for (segment, bad) in [
            ("PID|1||a\u{85}b", true),
            ("PID|1||a\u{9f}b", true),
            ("PID|1||a\u{7f}b", true),
            ("PID|1||a\tb", false),
            ("PID|1||M\u{fc}ller \u{a0}\u{c2}\u{c5}", false),
            ("PID|1||\u{645}\u{62d}\u{645}\u{62f}", false),
        ] {
            let r = check_body(&format!("MSH|^~\\&|A\r{segment}\r"));
            assert_eq!(r.is_err(), bad, "{segment:?}: {r:?}");
            if let Err(nak) = r {
                assert_eq!(
                    nak.location.map(|l| l.to_string()).as_deref(),
                    Some("PID-3")
                );
            }
        }
    }

    #[test]
    fn a_broken_msh2_is_reported_at_msh2_with_the_control_id_read() {
        let h = header("MSH|^~|HIS|MAIN|SB|HUB|2025||ADT^A04|M7|P|2.5");
        let nak = check_header(&h, &AcceptPolicy::default()).expect_err("MSH-2");
        assert_eq!(nak.code, ErrorCode::DataType);
        assert_eq!(
            nak.to_string(),
            "102 MSH-2: MSH-2 encoding characters are invalid"
        );
        assert_eq!(h.control_id, "M7");
    }

    #[test]
    fn reasons_never_echo_free_text() {
        let h = header("MSH|^~\\&|A|B|C|D|1||ADT^A04|X|P|DOE JOHN 1970");
        let nak = check_header(&h, &AcceptPolicy::default()).expect_err("bad version");
        assert!(!nak.reason.contains("DOE"), "{}", nak.reason);
    }
}
