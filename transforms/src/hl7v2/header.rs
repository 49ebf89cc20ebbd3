//! The MSH segment, read tolerantly so that even a message that fails to parse can be answered.
//!
//! [`MessageHeader::read`] looks only at the first segment. It needs `MSH` and a field
//! separator; every other field may be empty or missing, and the checks on them belong to
//! [`super::validate`]. Unreadable encoding characters (MSH-2) do not stop it: the fields are
//! still split on MSH-1, so that the NAK can echo MSH-10 (and mirror MSH-3 to MSH-6).

/// The delimiters a message declares in MSH-1 and MSH-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    /// MSH-1, usually `|`.
    pub field: char,
    /// First encoding character, usually `^`.
    pub component: char,
    /// Second encoding character, usually `~`.
    pub repetition: char,
    /// Third encoding character, usually `\`.
    pub escape: char,
    /// Fourth encoding character, usually `&`.
    pub subcomponent: char,
    /// Fifth encoding character from v2.7 on (`#`), when present.
    pub truncation: Option<char>,
}

impl Default for Delimiters {
    fn default() -> Self {
        Delimiters {
            field: '|',
            component: '^',
            repetition: '~',
            escape: '\\',
            subcomponent: '&',
            truncation: None,
        }
    }
}

impl Delimiters {
    /// MSH-2 as written back in an answer: the four (or five) encoding characters.
    pub fn encoding_characters(&self) -> String {
        let mut s: String = [
            self.component,
            self.repetition,
            self.escape,
            self.subcomponent,
        ]
        .iter()
        .collect();
        if let Some(t) = self.truncation {
            s.push(t);
        }
        s
    }

    /// Escapes text so it can stand inside one component (`|` -> `\F\`, ...).
    ///
    /// ```
    /// use transforms::hl7v2::header::Delimiters;
    /// assert_eq!(Delimiters::default().escape_text("a|b^c"), "a\\F\\b\\S\\c");
    /// ```
    pub fn escape_text(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let e = self.escape;
        for c in text.chars() {
            let code = match c {
                c if c == self.field => Some('F'),
                c if c == self.component => Some('S'),
                c if c == self.subcomponent => Some('T'),
                c if c == self.repetition => Some('R'),
                c if c == self.escape => Some('E'),
                _ => None,
            };
            match code {
                Some(code) => {
                    out.push(e);
                    out.push(code);
                    out.push(e);
                }
                None if c == '\r' || c == '\n' => out.push(' '),
                None => out.push(c),
            }
        }
        out
    }

    fn is_delimiter(&self, c: char) -> bool {
        c == self.field
            || c == self.component
            || c == self.repetition
            || c == self.escape
            || c == self.subcomponent
            || Some(c) == self.truncation
    }
}

/// Why the MSH segment could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The message does not start with an MSH segment.
    #[error("message does not start with an MSH segment")]
    NoMsh,
    /// MSH-1 is missing or is not ASCII punctuation.
    #[error("MSH-1 field separator is missing or invalid")]
    BadFieldSeparator,
    /// MSH-2 does not hold four (or five) distinct delimiter characters, and MSH-1 is one of
    /// the default encoding characters, so not even the fields can be read.
    #[error("MSH-2 encoding characters are invalid")]
    BadEncodingCharacters,
}

/// The fields of MSH that the engine reads for every message, as they appear on the wire
/// (escape sequences are kept, so values can be echoed back unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageHeader {
    /// MSH-1 and MSH-2; when MSH-2 is unreadable, MSH-1 and the default encoding characters.
    pub delimiters: Delimiters,
    /// False when MSH-2 does not hold four (or five) distinct delimiter characters: the other
    /// fields were split on MSH-1 (components on the default `^`), and
    /// [`super::validate::check_header`] answers AE 102 at MSH-2.
    pub encoding_characters_valid: bool,
    /// MSH-3, the whole field.
    pub sending_application: String,
    /// MSH-4, the whole field.
    pub sending_facility: String,
    /// MSH-5, the whole field.
    pub receiving_application: String,
    /// MSH-6, the whole field.
    pub receiving_facility: String,
    /// MSH-7, the whole field.
    pub datetime: String,
    /// MSH-9.1 message code, such as `ADT`.
    pub message_code: String,
    /// MSH-9.2 trigger event, such as `A04`.
    pub trigger_event: String,
    /// EVN-1 event type code of an ADT whose MSH-9 has no trigger (HL7 v2.1 and v2.2, where
    /// MSH-9 is the message type alone and the event is named in EVN-1), read from the
    /// segment after MSH; empty otherwise. [`MessageHeader::message_type`] uses it, as the
    /// mapping (`from_v2::map`) does, so a route on `ADT^A02` matches a v2.2 A02.
    pub evn_trigger: String,
    /// MSH-9.3 message structure, such as `ADT_A01`.
    pub message_structure: String,
    /// MSH-10 message control id.
    pub control_id: String,
    /// MSH-11.1 processing id (`P`, `D`, `T`).
    pub processing_id: String,
    /// MSH-12.1 version id, such as `2.5.1`.
    pub version: String,
    /// MSH-15 accept acknowledgment type (`AL`, `NE`, `ER`, `SU`), empty when absent.
    pub accept_ack_type: String,
    /// MSH-16 application acknowledgment type, empty when absent.
    pub application_ack_type: String,
    /// MSH-18 first repetition, empty when absent.
    pub charset: String,
}

/// The delimiters of MSH-1 `field` and MSH-2 `encoding`, when MSH-2 holds four (or five)
/// distinct ASCII punctuation characters other than `field`.
/// EVN-1 (first component) of the segment after MSH when it is an EVN, trimmed; empty when
/// there is none or it is not a plain code. Only the second segment is looked at: EVN follows
/// MSH in every ADT structure, and the header reader stays bounded whatever the message holds.
fn evn_event_type(text: &str, delimiters: Delimiters) -> String {
    let Some(evn) = text.split(['\r', '\n']).filter(|l| !l.is_empty()).nth(1) else {
        return String::new();
    };
    let Some(rest) = evn.strip_prefix("EVN") else {
        return String::new();
    };
    let mut fields = rest.split(delimiters.field);
    if fields.next() != Some("") {
        return String::new();
    }
    let code = fields
        .next()
        .unwrap_or_default()
        .split(delimiters.component)
        .next()
        .unwrap_or_default()
        .trim();
    if code.len() <= 8 && code.chars().all(|c| c.is_ascii_alphanumeric()) {
        code.to_ascii_uppercase()
    } else {
        String::new()
    }
}

fn encoding_characters(field: char, encoding: &str) -> Option<Delimiters> {
    let mut enc = ['\0'; 5];
    let mut n = 0;
    for c in encoding.chars() {
        if n == enc.len() || !c.is_ascii_punctuation() || c == field {
            return None;
        }
        if enc[..n].contains(&c) {
            return None;
        }
        enc[n] = c;
        n += 1;
    }
    (n >= 4).then(|| Delimiters {
        field,
        component: enc[0],
        repetition: enc[1],
        escape: enc[2],
        subcomponent: enc[3],
        truncation: (n == 5).then_some(enc[4]),
    })
}

impl MessageHeader {
    /// Reads the MSH of a decoded message; leading white space is allowed.
    ///
    /// # Errors
    ///
    /// [`HeaderError`] when there is no MSH or its delimiters cannot be read; every other
    /// problem is left to [`super::validate::check_header`].
    ///
    /// ```
    /// use transforms::hl7v2::header::MessageHeader;
    /// let h = MessageHeader::read("MSH|^~\\&|LAB|NORTH|SB|HUB|20250101120000||ORU^R01^ORU_R01|C42|P|2.5.1\r")
    ///     .expect("valid MSH");
    /// assert_eq!((h.message_type().as_str(), h.control_id.as_str()), ("ORU^R01", "C42"));
    /// ```
    pub fn read(text: &str) -> Result<MessageHeader, HeaderError> {
        // A UTF-8 byte order mark is not white space to `trim_start`; the UTF-8 decoder
        // drops it, so the header reader must too.
        let text = text.trim_start_matches('\u{feff}').trim_start();
        if !text.starts_with("MSH") {
            return Err(HeaderError::NoMsh);
        }
        let line = text.split(['\r', '\n']).next().unwrap_or_default();
        let mut chars = line[3..].chars();
        let field = chars.next().ok_or(HeaderError::BadFieldSeparator)?;
        // Delimiters are ASCII punctuation, as the typed reader (`access`) requires.
        if !field.is_ascii_punctuation() {
            return Err(HeaderError::BadFieldSeparator);
        }
        let rest = &line[3 + field.len_utf8()..];
        let encoding = rest.split(field).next().unwrap_or_default();
        let (delimiters, encoding_characters_valid) = match encoding_characters(field, encoding) {
            Some(d) => (d, true),
            // The NAK declares the default encoding characters after the sender's MSH-1;
            // that only works when MSH-1 is none of them.
            None if !Delimiters::default().encoding_characters().contains(field) => (
                Delimiters {
                    field,
                    ..Delimiters::default()
                },
                false,
            ),
            None => return Err(HeaderError::BadEncodingCharacters),
        };
        // fields[0] is MSH-2, so MSH-n is fields[n - 2]; nothing past MSH-18 is read, so a
        // first line of a million separators costs no more than a short one.
        let fields: Vec<&str> = rest.split(field).take(17).collect();
        let get = |n: usize| fields.get(n - 2).copied().unwrap_or_default();
        let first_rep = |n: usize| {
            get(n)
                .split(delimiters.repetition)
                .next()
                .unwrap_or_default()
        };
        let component = |n: usize, c: usize| {
            first_rep(n)
                .split(delimiters.component)
                .nth(c - 1)
                .unwrap_or_default()
                .to_string()
        };
        let message_code = component(9, 1);
        let trigger_event = component(9, 2);
        let evn_trigger = if trigger_event.is_empty() && message_code == "ADT" {
            evn_event_type(text, delimiters)
        } else {
            String::new()
        };
        Ok(MessageHeader {
            delimiters,
            encoding_characters_valid,
            sending_application: get(3).to_string(),
            sending_facility: get(4).to_string(),
            receiving_application: get(5).to_string(),
            receiving_facility: get(6).to_string(),
            datetime: get(7).to_string(),
            message_code,
            trigger_event,
            evn_trigger,
            message_structure: component(9, 3),
            control_id: get(10).to_string(),
            processing_id: component(11, 1),
            version: component(12, 1),
            accept_ack_type: get(15).to_string(),
            application_ack_type: get(16).to_string(),
            charset: first_rep(18).to_string(),
        })
    }

    /// `MSH-9.1^MSH-9.2`, such as `ADT^A04`; for a v2.1/v2.2 ADT without MSH-9.2 the trigger
    /// of EVN-1 ([`MessageHeader::evn_trigger`]); just `ADT` when there is neither.
    pub fn message_type(&self) -> String {
        let trigger = self.trigger();
        if trigger.is_empty() {
            self.message_code.clone()
        } else {
            format!("{}^{}", self.message_code, trigger)
        }
    }

    /// The trigger event: MSH-9.2, else [`MessageHeader::evn_trigger`]; empty when neither.
    pub fn trigger(&self) -> &str {
        if self.trigger_event.is_empty() {
            &self.evn_trigger
        } else {
            &self.trigger_event
        }
    }

    /// The message type as a metric label value: `ADT_A04`, restricted to `[A-Z0-9_]`.
    pub fn message_type_label(&self) -> String {
        let label: String = self
            .message_type()
            .chars()
            .map(|c| match c {
                'A'..='Z' | '0'..='9' => c,
                'a'..='z' => c.to_ascii_uppercase(),
                _ => '_',
            })
            .take(16)
            .collect();
        if label.is_empty() {
            "unknown".into()
        } else {
            label
        }
    }

    /// True when MSH-15 or MSH-16 is valued: the sender asked for enhanced acknowledgment mode.
    pub fn enhanced_mode(&self) -> bool {
        !self.accept_ack_type.is_empty() || !self.application_ack_type.is_empty()
    }

    /// The sender key used to recognise a resend: MSH-3, MSH-4 and MSH-10.
    pub fn sender_key(&self) -> String {
        format!(
            "{}\u{1f}{}\u{1f}{}",
            self.sending_application, self.sending_facility, self.control_id
        )
    }

    /// True when `s` contains none of this message's delimiters.
    pub fn is_plain(&self, s: &str) -> bool {
        !s.chars().any(|c| self.delimiters.is_delimiter(c))
    }
}

/// SHA-256 of a message's bytes without MSH-7 (date/time of message), which a sender may
/// restamp when it resends: two messages with the same digest are the same message.
///
/// The field separator is the byte after the first `MSH`; when there is no MSH, every byte
/// counts.
///
/// ```
/// use transforms::hl7v2::header::content_digest;
/// let a = content_digest(b"MSH|^~\\&|A|B|C|D|20250101||ADT^A04|1|P|2.5\rPID|1\r");
/// let b = content_digest(b"MSH|^~\\&|A|B|C|D|20250102||ADT^A04|1|P|2.5\rPID|1\r");
/// let c = content_digest(b"MSH|^~\\&|A|B|C|D|20250101||ADT^A04|1|P|2.5\rPID|2\r");
/// assert_eq!(a, b);
/// assert_ne!(a, c);
/// ```
pub fn content_digest(raw: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    match msh7_span(raw) {
        Some((start, end)) => {
            h.update(&raw[..start]);
            h.update(&raw[end..]);
        }
        None => h.update(raw),
    }
    h.finalize().into()
}

/// Byte range of MSH-7's value in `raw`, if the MSH reads that far.
fn msh7_span(raw: &[u8]) -> Option<(usize, usize)> {
    let msh = raw.windows(3).position(|w| w == b"MSH")?;
    let sep = *raw.get(msh + 3)?;
    let segment_end = raw[msh..]
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .map_or(raw.len(), |p| msh + p);
    // After "MSH|": MSH-2, MSH-3, MSH-4, MSH-5, MSH-6, then MSH-7.
    let mut start = msh + 4;
    for _ in 0..5 {
        start += raw[start..segment_end].iter().position(|&b| b == sep)? + 1;
    }
    let end = raw[start..segment_end]
        .iter()
        .position(|&b| b == sep)
        .map_or(segment_end, |p| start + p);
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_ignores_msh7_only() {
        let m = |t: &str, rest: &str| {
            format!("MSH|^~\\&|LAB|MAIN|SB|HUB|{t}||ORU^R01|C1|P|2.5\r{rest}")
        };
        let base = content_digest(m("20250101", "PID|1\r").as_bytes());
        assert_eq!(
            base,
            content_digest(m("20991231235959", "PID|1\r").as_bytes())
        );
        assert_eq!(base, content_digest(m("", "PID|1\r").as_bytes()));
        assert_ne!(base, content_digest(m("20250101", "PID|2\r").as_bytes()));
        assert_ne!(
            content_digest(b"MSH|^~\\&|LAB|MAIN|SB|HUB|1||ORU^R01|C1|P|2.5"),
            content_digest(b"MSH|^~\\&|LAB|MAIN|SB|HUB|1||ORU^R01|C2|P|2.5"),
        );
        // Too short an MSH: every byte counts.
        assert_ne!(
            content_digest(b"MSH|^~\\&|A"),
            content_digest(b"MSH|^~\\&|B")
        );
    }

    #[test]
    fn a_v22_adt_takes_its_trigger_from_evn_1() {
        let h = MessageHeader::read(
            "MSH|^~\\&|HIS|MAIN|SB|HUB|199901011200||ADT|C1|P|2.2\rEVN|A02|199901011200\rPID|||1\r",
        )
        .expect("valid");
        assert_eq!(
            h.trigger_event, "",
            "MSH-9.2 stays as sent (the ACK echoes it)"
        );
        assert_eq!(h.evn_trigger, "A02");
        assert_eq!(h.message_type(), "ADT^A02");
        assert_eq!(h.message_type_label(), "ADT_A02");
        // MSH-9.2 wins when present; EVN-1 is read for ADT only.
        let h = MessageHeader::read("MSH|^~\\&|HIS|MAIN|SB|HUB|1||ADT^A01|C1|P|2.5\rEVN|A02\r")
            .expect("valid");
        assert_eq!(h.message_type(), "ADT^A01");
        let h = MessageHeader::read("MSH|^~\\&|HIS|MAIN|SB|HUB|1||ORM|C1|P|2.2\rEVN|O01\r")
            .expect("valid");
        assert_eq!(h.message_type(), "ORM");
        // No EVN after MSH: just the code.
        let h = MessageHeader::read("MSH|^~\\&|HIS|MAIN|SB|HUB|1||ADT|C1|P|2.2\rPID|||1\r")
            .expect("valid");
        assert_eq!(h.message_type(), "ADT");
    }

    #[test]
    fn a_utf8_byte_order_mark_before_msh_is_skipped() {
        let h = MessageHeader::read("\u{feff}MSH|^~\\&|HIS|MAIN|SB|HUB|2025||ADT^A04|B1|P|2.5\r")
            .expect("valid after the BOM");
        assert_eq!(h.control_id, "B1");
    }

    #[test]
    fn reads_standard_header() {
        let h = MessageHeader::read(
            "MSH|^~\\&|HIS|MAIN|SB|HUB|20250102030405+0300||ADT^A04^ADT_A01|MSG001|P|2.5.1|||AL|NE||UNICODE UTF-8\rPID|",
        )
        .expect("valid");
        assert_eq!(h.sending_application, "HIS");
        assert_eq!(h.message_structure, "ADT_A01");
        assert_eq!(h.version, "2.5.1");
        assert!(h.enhanced_mode());
        assert_eq!(h.accept_ack_type, "AL");
        assert_eq!(h.charset, "UNICODE UTF-8");
        assert_eq!(h.message_type_label(), "ADT_A04");
    }

    #[test]
    fn custom_delimiters_and_lf_endings() {
        let h = MessageHeader::read("\n MSH*:!@%*APP*FAC*R*RF*2025**SIU:S12*X1*T*2.3\nSCH*")
            .expect("valid");
        assert_eq!(h.delimiters.field, '*');
        assert_eq!(h.delimiters.component, ':');
        assert_eq!(h.delimiters.encoding_characters(), ":!@%");
        assert_eq!(h.message_type(), "SIU^S12");
        assert_eq!(h.processing_id, "T");
        assert!(!h.enhanced_mode());
    }

    #[test]
    fn short_header_reads_empty_fields() {
        let h = MessageHeader::read("MSH|^~\\&|A").expect("valid delimiters");
        assert_eq!(h.control_id, "");
        assert_eq!(h.message_type(), "");
        assert_eq!(h.message_type_label(), "unknown");
    }

    #[test]
    fn rejects_what_cannot_be_read() {
        assert_eq!(MessageHeader::read("PID|1"), Err(HeaderError::NoMsh));
        assert_eq!(MessageHeader::read(""), Err(HeaderError::NoMsh));
        assert_eq!(
            MessageHeader::read("MSH"),
            Err(HeaderError::BadFieldSeparator)
        );
        assert_eq!(
            MessageHeader::read("MSHA^~\\&"),
            Err(HeaderError::BadFieldSeparator)
        );
        assert_eq!(
            MessageHeader::read("MSH\u{a7}^~\\&|A"),
            Err(HeaderError::BadFieldSeparator),
            "a delimiter is ASCII punctuation"
        );
        // MSH-1 is one of the default encoding characters: the NAK could not declare them.
        assert_eq!(
            MessageHeader::read("MSH^~|A^B^C^D^1^^ADT~A04^X1^P^2.5"),
            Err(HeaderError::BadEncodingCharacters)
        );
    }

    #[test]
    fn a_broken_msh2_still_reads_the_fields_for_the_nak() {
        for text in [
            "MSH|^~|HIS|MAIN|SB|HUB|2025||ADT^A04|M7|P|2.5|||AL",
            "MSH|^^\\&|HIS|MAIN|SB|HUB|2025||ADT^A04|M7|P|2.5|||AL",
            "MSH||HIS|MAIN|SB|HUB|2025||ADT^A04|M7|P|2.5|||AL",
            "MSH|^~\\&X|HIS|MAIN|SB|HUB|2025||ADT^A04|M7|P|2.5|||AL",
            "MSH|^~\\A|HIS|MAIN|SB|HUB|2025||ADT^A04|M7|P|2.5|||AL",
            "MSH|^~\\\u{e9}|HIS|MAIN|SB|HUB|2025||ADT^A04|M7|P|2.5|||AL",
        ] {
            let h = MessageHeader::read(text).expect(text);
            assert!(!h.encoding_characters_valid, "{text}");
            assert_eq!(h.control_id, "M7", "{text}");
            assert_eq!(h.sending_application, "HIS", "{text}");
            assert_eq!(h.message_type(), "ADT^A04", "{text}");
            assert_eq!(h.version, "2.5", "{text}");
            assert_eq!(h.accept_ack_type, "AL", "{text}");
            assert_eq!(h.delimiters, Delimiters::default(), "{text}");
        }
        // Another MSH-1 is kept; the encoding characters are the defaults.
        let h = MessageHeader::read("MSH#^^#HIS#MAIN#SB#HUB#2025##ADT^A04#M8#P#2.5").expect("#");
        assert_eq!((h.delimiters.field, h.delimiters.component), ('#', '^'));
        assert_eq!(h.control_id, "M8");
        assert!(
            MessageHeader::read("MSH|^~\\&|A")
                .expect("valid")
                .encoding_characters_valid
        );
    }

    #[test]
    fn only_the_header_fields_are_split_off_a_long_first_line() {
        let text = format!(
            "MSH|^~\\&|A|B|C|D|1||ADT^A04|X1|P|2.5{}",
            "|".repeat(900_000)
        );
        let h = MessageHeader::read(&text).expect("valid");
        assert_eq!(h.control_id, "X1");
        assert_eq!(h.charset, "");
    }

    #[test]
    fn v27_truncation_character() {
        let h = MessageHeader::read("MSH|^~\\&#|A|B|C|D|1||ADT^A01|9|P|2.7").expect("valid");
        assert_eq!(h.delimiters.truncation, Some('#'));
        assert_eq!(h.delimiters.encoding_characters(), "^~\\&#");
    }
}
