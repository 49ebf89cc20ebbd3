//! Building ACK and NAK messages.
//!
//! The ACK mirrors the received MSH: sender and receiver swap places, the delimiters, version,
//! processing id and character set are kept, MSA-2 echoes MSH-10. Original mode answers
//! AA/AE/AR; enhanced mode (MSH-15 or MSH-16 valued) answers CA/CE/CR and honours MSH-15
//! (`NE` never, `ER` only on error, `SU` only on success). The ERR segment uses ERR-1 (ELD)
//! before v2.5 and ERR-2/3/4/8 from v2.5 on.

use super::header::{Delimiters, MessageHeader};
use super::validate::{ErrorCode, Nak};
use std::fmt::Write;

/// MSA-1 acknowledgment codes (HL7 table 0008).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    /// Original mode: application accept.
    AA,
    /// Original mode: application error.
    AE,
    /// Original mode: application reject.
    AR,
    /// Enhanced mode: commit accept.
    CA,
    /// Enhanced mode: commit error.
    CE,
    /// Enhanced mode: commit reject.
    CR,
}

impl AckCode {
    /// The two letters of MSA-1.
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
            AckCode::CA => "CA",
            AckCode::CE => "CE",
            AckCode::CR => "CR",
        }
    }

    /// Parses MSA-1.
    pub fn parse(s: &str) -> Option<AckCode> {
        Some(match s {
            "AA" => AckCode::AA,
            "AE" => AckCode::AE,
            "AR" => AckCode::AR,
            "CA" => AckCode::CA,
            "CE" => AckCode::CE,
            "CR" => AckCode::CR,
            _ => return None,
        })
    }

    /// True for AA and CA.
    pub fn is_positive(self) -> bool {
        matches!(self, AckCode::AA | AckCode::CA)
    }
}

/// What the engine decided about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Stored and accepted.
    Accept,
    /// Not accepted; the NAK says why and decides error versus reject.
    Nak(Nak),
}

impl Verdict {
    /// The MSA-1 code for this verdict in the sender's acknowledgment mode.
    pub fn ack_code(&self, header: Option<&MessageHeader>) -> AckCode {
        let enhanced = header.is_some_and(MessageHeader::enhanced_mode);
        match (self, enhanced) {
            (Verdict::Accept, false) => AckCode::AA,
            (Verdict::Accept, true) => AckCode::CA,
            (Verdict::Nak(n), false) if n.code.is_reject() => AckCode::AR,
            (Verdict::Nak(_), false) => AckCode::AE,
            (Verdict::Nak(n), true) if n.code.is_reject() => AckCode::CR,
            (Verdict::Nak(_), true) => AckCode::CE,
        }
    }
}

/// True when the sender wants an accept acknowledgment for this verdict (MSH-15).
///
/// Original mode always answers. In enhanced mode `NE` never answers, `ER` answers only
/// errors, `SU` only successes, and `AL` (or empty) always.
pub fn should_answer(header: Option<&MessageHeader>, verdict: &Verdict) -> bool {
    let Some(h) = header.filter(|h| h.enhanced_mode()) else {
        return true;
    };
    !matches!(
        (h.accept_ack_type.as_str(), verdict),
        ("NE", _) | ("ER", Verdict::Accept) | ("SU", Verdict::Nak(_))
    )
}

/// Values of the ACK that are not taken from the received message.
#[derive(Debug, Clone)]
pub struct AckParams<'a> {
    /// MSH-10 of the ACK itself.
    pub control_id: &'a str,
    /// MSH-7 of the ACK, already formatted as an HL7 timestamp.
    pub timestamp: &'a str,
}

/// Builds the ACK (or NAK) for a received message; segments end with CR.
///
/// `header` is `None` when the MSH could not be read: the answer then uses the default
/// delimiters, version 2.5 and an empty MSA-2.
///
/// ```
/// use transforms::hl7v2::{ack::{build_ack, AckParams, Verdict}, header::MessageHeader};
/// let h = MessageHeader::read("MSH|^~\\&|LAB|NORTH|SB|HUB|20250101||ORU^R01|C42|P|2.5.1").unwrap();
/// let ack = build_ack(Some(&h), &Verdict::Accept, &AckParams { control_id: "A1", timestamp: "20250101120000" });
/// assert_eq!(ack, "MSH|^~\\&|SB|HUB|LAB|NORTH|20250101120000||ACK^R01^ACK|A1|P|2.5.1\rMSA|AA|C42\r");
/// ```
pub fn build_ack(header: Option<&MessageHeader>, verdict: &Verdict, p: &AckParams<'_>) -> String {
    let d = header.map(|h| h.delimiters).unwrap_or_default();
    let f = d.field;
    let version = header
        .map(|h| h.version.as_str())
        .filter(|v| !v.is_empty() && header.is_some_and(|h| h.is_plain(v)))
        .unwrap_or("2.5");
    let v = VersionNumber::parse(version);
    let code = verdict.ack_code(header);
    let mut out = String::with_capacity(256);

    // MSH: swap sender and receiver; keep processing id, version and character set.
    let (send_app, send_fac, recv_app, recv_fac, trigger, proc_id, charset, ctrl) = match header {
        Some(h) => (
            h.receiving_application.as_str(),
            h.receiving_facility.as_str(),
            h.sending_application.as_str(),
            h.sending_facility.as_str(),
            h.trigger_event.as_str(),
            h.processing_id.as_str(),
            h.charset.as_str(),
            h.control_id.as_str(),
        ),
        None => ("", "", "", "", "", "P", "", ""),
    };
    let proc_id = if proc_id.is_empty() || !plain_code(proc_id) {
        "P"
    } else {
        proc_id
    };
    let trigger = if plain_code(trigger) { trigger } else { "" };
    let _ = write!(
        out,
        "MSH{f}{enc}{f}{send_app}{f}{send_fac}{f}{recv_app}{f}{recv_fac}{f}{ts}{f}{f}ACK",
        enc = d.encoding_characters(),
        ts = p.timestamp,
    );
    if !trigger.is_empty() {
        let _ = write!(out, "{}{}", d.component, trigger);
    }
    if v >= VersionNumber(2, 3, 1) {
        if trigger.is_empty() {
            out.push(d.component);
        }
        let _ = write!(out, "{}ACK", d.component);
    }
    let _ = write!(out, "{f}{}{f}{proc_id}{f}{version}", p.control_id);
    let enhanced = header.is_some_and(MessageHeader::enhanced_mode);
    if enhanced || !charset.is_empty() {
        // MSH-13, 14 empty; an ACK is itself never acknowledged.
        let ne = if enhanced { "NE" } else { "" };
        let _ = write!(out, "{f}{f}{f}{ne}{f}{ne}");
        if !charset.is_empty() {
            let _ = write!(out, "{f}{f}{charset}");
        }
    }
    out.push('\r');

    // MSA: MSA-3 text is sent for negative answers up to v2.6 (withdrawn in v2.7).
    let _ = write!(out, "MSA{f}{}{f}{ctrl}", code.as_str());
    if let Verdict::Nak(nak) = verdict {
        if v < VersionNumber(2, 7, 0) {
            let _ = write!(out, "{f}{}", d.escape_text(&nak.reason));
        }
        out.push('\r');
        write_err(&mut out, &d, v, nak);
    } else {
        out.push('\r');
    }
    out
}

fn write_err(out: &mut String, d: &Delimiters, v: VersionNumber, nak: &Nak) {
    let (f, c, s) = (d.field, d.component, d.subcomponent);
    let code = nak.code.code();
    let text = nak.code.text();
    let loc = nak.location.as_ref();
    if v < VersionNumber(2, 5, 0) {
        // ERR-1 (ELD): segment ^ sequence ^ field ^ code&text&HL70357
        let _ = write!(out, "ERR{f}");
        if let Some(l) = loc {
            let _ = write!(out, "{}{c}{}{c}{}", l.segment, l.sequence, l.field);
        } else {
            let _ = write!(out, "{c}{c}");
        }
        let _ = write!(out, "{c}{code}{s}{text}{s}HL70357\r");
    } else {
        // ERR-2 (ERL), ERR-3 (CWE), ERR-4 severity, ERR-8 user message.
        let _ = write!(out, "ERR{f}{f}");
        if let Some(l) = loc {
            let _ = write!(out, "{}{c}{}", l.segment, l.sequence);
            if l.field > 0 {
                let _ = write!(out, "{c}{}", l.field);
                if l.component > 0 {
                    let _ = write!(out, "{c}1{c}{}", l.component);
                }
            }
        }
        let _ = write!(
            out,
            "{f}{code}{c}{text}{c}HL70357{f}E{f}{f}{f}{f}{}\r",
            d.escape_text(&nak.reason)
        );
    }
}

fn plain_code(s: &str) -> bool {
    s.len() <= 8 && s.chars().all(|c| c.is_ascii_alphanumeric())
}

/// An HL7 version as three numbers, for comparisons such as "before 2.5".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct VersionNumber(u8, u8, u8);

impl VersionNumber {
    fn parse(s: &str) -> VersionNumber {
        let mut it = s.split('.').map(|p| p.parse::<u8>().unwrap_or(0));
        VersionNumber(
            it.next().unwrap_or(2),
            it.next().unwrap_or(5),
            it.next().unwrap_or(0),
        )
    }
}

/// What an ACK received from a peer says: MSA-1, MSA-2 and the error text, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAck {
    /// MSA-1.
    pub code: AckCode,
    /// MSA-2, the control id of the message being acknowledged.
    pub control_id: String,
    /// MSA-3 or, when absent, ERR-8 / the ERR-3 text.
    pub text: String,
}

/// Reads MSA (and ERR) from an ACK received from a peer.
///
/// Returns `None` when there is no MSA segment with a known MSA-1 code.
pub fn parse_ack(text: &str) -> Option<ParsedAck> {
    let h = MessageHeader::read(text).ok()?;
    let d = h.delimiters;
    let segments: Vec<&str> = text.split(['\r', '\n']).collect();
    let msa = segments.iter().find(|s| s.starts_with("MSA"))?;
    let fields: Vec<&str> = msa.split(d.field).collect();
    let code = AckCode::parse(fields.get(1)?.trim())?;
    let control_id = fields.get(2).copied().unwrap_or_default().to_string();
    let mut message = fields.get(3).copied().unwrap_or_default().to_string();
    if message.is_empty() {
        if let Some(err) = segments.iter().find(|s| s.starts_with("ERR")) {
            let ef: Vec<&str> = err.split(d.field).collect();
            message = ef
                .get(8)
                .filter(|s| !s.is_empty())
                .map(|s| s.to_string())
                .or_else(|| {
                    ef.get(3)
                        .and_then(|c| c.split(d.component).nth(1))
                        .map(str::to_string)
                })
                .or_else(|| {
                    ef.get(1)
                        .and_then(|c| c.split(d.component).nth(3))
                        .and_then(|c| c.split(d.subcomponent).nth(1))
                        .map(str::to_string)
                })
                .unwrap_or_default();
        }
    }
    Some(ParsedAck {
        code,
        control_id,
        text: message,
    })
}

/// Formats a timestamp for MSH-7 / the ACK: `YYYYMMDDHHMMSS+0000` in UTC.
pub fn hl7_timestamp(now: chrono::DateTime<chrono::Utc>) -> String {
    now.format("%Y%m%d%H%M%S+0000").to_string()
}

/// The error code to answer when the engine itself failed to store a message.
pub fn store_failure(reason: &str) -> Verdict {
    Verdict::Nak(Nak::new(ErrorCode::ApplicationInternalError, reason))
}

#[cfg(test)]
mod tests {
    use super::super::validate::ErrorLocation;
    use super::*;

    const P: AckParams<'static> = AckParams {
        control_id: "ACK1",
        timestamp: "20250101120000+0000",
    };

    fn h(text: &str) -> MessageHeader {
        MessageHeader::read(text).expect("readable MSH")
    }

    #[test]
    fn a_nak_for_a_broken_msh2_echoes_msh10_with_the_default_encoding_characters() {
        let policy = super::super::validate::AcceptPolicy::default();
        for (text, field) in [
            ("MSH|^~|HIS|MAIN|SB|HUB|2025||ADT^A04|M7|P|2.5.1", '|'),
            ("MSH#^^#HIS#MAIN#SB#HUB#2025##ADT^A04#M7#P#2.5.1", '#'),
        ] {
            let header = h(text);
            let nak = super::super::validate::check_header(&header, &policy).expect_err(text);
            let ack = build_ack(Some(&header), &Verdict::Nak(nak), &P);
            let f = field;
            assert!(
                ack.starts_with(&format!("MSH{f}^~\\&{f}SB{f}HUB{f}HIS{f}MAIN{f}")),
                "{ack}"
            );
            assert!(ack.contains(&format!("\rMSA{f}AE{f}M7{f}")), "{ack}");
            assert!(ack.contains(&format!("ERR{f}{f}MSH^1^2{f}102^")), "{ack}");
            // It reads back as an answer to M7.
            let parsed = parse_ack(&ack).expect("parses");
            assert_eq!(
                (parsed.code, parsed.control_id.as_str()),
                (AckCode::AE, "M7")
            );
        }
    }

    fn missing_field() -> Verdict {
        Verdict::Nak(Nak::at(
            ErrorCode::RequiredFieldMissing,
            ErrorLocation::field("PID", 3),
            "PID-3 patient identifier list is empty",
        ))
    }

    #[test]
    fn table_of_cases() {
        struct Case {
            msh: &'static str,
            verdict: Verdict,
            expect: &'static str,
        }
        let cases = [
            Case {
                msh: "MSH|^~\\&|HIS|MAIN|SB|HUB|1||ADT^A04|M1|P|2.3",
                verdict: Verdict::Accept,
                expect: "MSH|^~\\&|SB|HUB|HIS|MAIN|20250101120000+0000||ACK^A04|ACK1|P|2.3\rMSA|AA|M1\r",
            },
            Case {
                msh: "MSH|^~\\&|HIS|MAIN|SB|HUB|1||ADT^A04|M1|P|2.4",
                verdict: missing_field(),
                expect: "MSH|^~\\&|SB|HUB|HIS|MAIN|20250101120000+0000||ACK^A04^ACK|ACK1|P|2.4\rMSA|AE|M1|PID-3 patient identifier list is empty\rERR|PID^1^3^101&Required field missing&HL70357\r",
            },
            Case {
                msh: "MSH|^~\\&|HIS|MAIN|SB|HUB|1||ADT^A04|M1|P|2.5.1",
                verdict: missing_field(),
                expect: "MSH|^~\\&|SB|HUB|HIS|MAIN|20250101120000+0000||ACK^A04^ACK|ACK1|P|2.5.1\rMSA|AE|M1|PID-3 patient identifier list is empty\rERR||PID^1^3|101^Required field missing^HL70357|E||||PID-3 patient identifier list is empty\r",
            },
            Case {
                msh: "MSH|^~\\&|HIS|MAIN|SB|HUB|1||ADT^A04|M1|T|2.8",
                verdict: Verdict::Nak(Nak::at(ErrorCode::UnsupportedVersionId, ErrorLocation::field("MSH", 12), "version not accepted")),
                expect: "MSH|^~\\&|SB|HUB|HIS|MAIN|20250101120000+0000||ACK^A04^ACK|ACK1|T|2.8\rMSA|AR|M1\rERR||MSH^1^12|203^Unsupported version id^HL70357|E||||version not accepted\r",
            },
            Case {
                msh: "MSH$#*!@$HIS$MAIN$SB$HUB$1$$ADT#A08$M2$P$2.5",
                verdict: Verdict::Nak(Nak::new(ErrorCode::SegmentSequence, "a$b#c")),
                expect: "MSH$#*!@$SB$HUB$HIS$MAIN$20250101120000+0000$$ACK#A08#ACK$ACK1$P$2.5\rMSA$AE$M2$a!F!b!S!c\rERR$$$100#Segment sequence error#HL70357$E$$$$a!F!b!S!c\r",
            },
            Case {
                msh: "MSH|^~\\&|HIS|MAIN|SB|HUB|1||SIU^S12|M3|P|2.5|||AL|NE||UNICODE UTF-8",
                verdict: Verdict::Accept,
                expect: "MSH|^~\\&|SB|HUB|HIS|MAIN|20250101120000+0000||ACK^S12^ACK|ACK1|P|2.5|||NE|NE||UNICODE UTF-8\rMSA|CA|M3\r",
            },
            Case {
                msh: "MSH|^~\\&|HIS|MAIN|SB|HUB|1||SIU^S12|M3|P|2.5|||AL|AL",
                verdict: store_failure("store unavailable"),
                expect: "MSH|^~\\&|SB|HUB|HIS|MAIN|20250101120000+0000||ACK^S12^ACK|ACK1|P|2.5|||NE|NE\rMSA|CR|M3|store unavailable\rERR|||207^Application internal error^HL70357|E||||store unavailable\r",
            },
            Case {
                msh: "MSH|^~\\&|HIS|MAIN|SB|HUB|1||ORU^R01|M4|P|2.5.1|||ER|AL",
                verdict: missing_field(),
                expect: "MSH|^~\\&|SB|HUB|HIS|MAIN|20250101120000+0000||ACK^R01^ACK|ACK1|P|2.5.1|||NE|NE\rMSA|CE|M4|PID-3 patient identifier list is empty\rERR||PID^1^3|101^Required field missing^HL70357|E||||PID-3 patient identifier list is empty\r",
            },
        ];
        for c in cases {
            let header = h(c.msh);
            let got = build_ack(Some(&header), &c.verdict, &P);
            assert_eq!(got, c.expect, "for {}", c.msh);
            // Every ACK we build parses back with the same code and control id.
            let parsed = parse_ack(&got).expect("our ACK parses");
            assert_eq!(parsed.code, c.verdict.ack_code(Some(&header)));
            assert_eq!(parsed.control_id, header.control_id);
        }
    }

    #[test]
    fn unreadable_header_gets_default_nak() {
        let v = Verdict::Nak(Nak::new(
            ErrorCode::SegmentSequence,
            "message does not start with an MSH segment",
        ));
        let ack = build_ack(None, &v, &P);
        assert_eq!(
            ack,
            "MSH|^~\\&|||||20250101120000+0000||ACK^^ACK|ACK1|P|2.5\rMSA|AE||message does not start with an MSH segment\rERR|||100^Segment sequence error^HL70357|E||||message does not start with an MSH segment\r"
        );
    }

    #[test]
    fn accept_ack_type_rules() {
        let nak = missing_field();
        let al = h("MSH|^~\\&|A|B|C|D|1||ADT^A04|M|P|2.5|||AL|AL");
        let ne = h("MSH|^~\\&|A|B|C|D|1||ADT^A04|M|P|2.5|||NE|AL");
        let er = h("MSH|^~\\&|A|B|C|D|1||ADT^A04|M|P|2.5|||ER|AL");
        let su = h("MSH|^~\\&|A|B|C|D|1||ADT^A04|M|P|2.5|||SU|AL");
        let orig = h("MSH|^~\\&|A|B|C|D|1||ADT^A04|M|P|2.5");
        assert!(should_answer(Some(&al), &Verdict::Accept) && should_answer(Some(&al), &nak));
        assert!(!should_answer(Some(&ne), &Verdict::Accept) && !should_answer(Some(&ne), &nak));
        assert!(!should_answer(Some(&er), &Verdict::Accept) && should_answer(Some(&er), &nak));
        assert!(should_answer(Some(&su), &Verdict::Accept) && !should_answer(Some(&su), &nak));
        assert!(should_answer(Some(&orig), &nak) && should_answer(None, &nak));
    }

    #[test]
    fn parse_ack_reads_err_text_when_msa3_is_absent() {
        let ack = "MSH|^~\\&|A|B|C|D|1||ACK^S12^ACK|9|P|2.8\rMSA|AE|C1\rERR||SCH^1^1|207^Application internal error^HL70357|E||||slot unavailable\r";
        let p = parse_ack(ack).expect("parses");
        assert_eq!(p.code, AckCode::AE);
        assert_eq!(p.text, "slot unavailable");
        assert!(parse_ack("MSH|^~\\&|A\rMSA|ZZ|1").is_none());
    }
}
