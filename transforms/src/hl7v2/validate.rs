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
}

impl ErrorCode {
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
            ErrorCode::ApplicationInternalError | ErrorCode::DeliveryNotConfirmed => 207,
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
            ErrorCode::ApplicationInternalError | ErrorCode::DeliveryNotConfirmed => {
                "Application internal error"
            }
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
            versions: ["2.3", "2.4", "2.5", "2.6", "2.7", "2.8"]
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

/// Checks the message body: no control characters, segment ids of three upper-case
/// letters or digits, and a structure hl7-parser can read.
///
/// # Errors
///
/// The first problem found, naming the segment by id and occurrence.
pub fn check_body(text: &str) -> Result<(), Nak> {
    let mut seen: Vec<(&str, u32)> = Vec::new();
    for (index, segment) in text
        .split(['\r', '\n'])
        .filter(|s| !s.trim().is_empty())
        .enumerate()
    {
        let id = segment.get(..3).unwrap_or(segment);
        let valid_id = id.len() == 3
            && id
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if !valid_id {
            return Err(Nak::new(
                ErrorCode::SegmentSequence,
                format!("segment {} has no valid segment id", index + 1),
            ));
        }
        let sequence = match seen.iter_mut().find(|(s, _)| *s == id) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                seen.push((id, 1));
                1
            }
        };
        if let Some(pos) = segment.find(|c: char| c.is_control() && c != '\t') {
            let field = segment[..pos]
                .matches(segment.chars().nth(3).unwrap_or('|'))
                .count() as u32;
            return Err(Nak::at(
                ErrorCode::DataType,
                ErrorLocation {
                    segment: id.to_string(),
                    sequence,
                    field: if id == "MSH" { field + 1 } else { field },
                    component: 0,
                },
                "control character in field",
            ));
        }
        if index == 0 && id != "MSH" {
            return Err(Nak::new(
                ErrorCode::SegmentSequence,
                "message does not start with an MSH segment",
            ));
        }
    }
    hl7_parser::Message::parse_with_lenient_newlines(text.trim_end_matches(['\r', '\n']), true)
        .map_err(|_| {
            Nak::new(
                ErrorCode::SegmentSequence,
                "message structure cannot be parsed",
            )
        })?;
    Ok(())
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
    fn header_problems_in_order() {
        let p = AcceptPolicy::default();
        let cases = [
            ("MSH|^~\\&|A|B|C|D|1|||X1|P|2.5", 101, "MSH-9.1"),
            ("MSH|^~\\&|A|B|C|D|1||ADT^A04||P|2.5", 101, "MSH-10"),
            ("MSH|^~\\&|A|B|C|D|1||ADT^A04|X|P|", 101, "MSH-12"),
            ("MSH|^~\\&|A|B|C|D|1||ADT^A04|X||2.5", 101, "MSH-11"),
            ("MSH|^~\\&|A|B|C|D|1||ADT^A04|X|P|2.1", 203, "MSH-12"),
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
    fn reasons_never_echo_free_text() {
        let h = header("MSH|^~\\&|A|B|C|D|1||ADT^A04|X|P|DOE JOHN 1970");
        let nak = check_header(&h, &AcceptPolicy::default()).expect_err("bad version");
        assert!(!nak.reason.contains("DOE"), "{}", nak.reason);
    }
}
