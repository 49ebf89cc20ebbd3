//! Bad input over MLLP: every case gets the answer README documents (ACK code, ERR-3 code
//! and location, MSA-2), the engine stays up (a good message right after gets AA), and what
//! was received is stored with its reason (or, for framing noise, nothing is).

use crate::support::*;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest frame the bad-input channel accepts.
const LIMIT: usize = 1024 * 1024;
/// Its frame timeout: a frame that never ends is cut after this.
const FRAME_TIMEOUT_SECS: u64 = 2;

/// The bad-input engine: one channel that accepts ADT and ORU^R01 only and routes ADT to a
/// file drop as canonical JSON (so accepted oddities also go through the mappings).
fn config() -> TestConfig {
    let cfg = TestConfig::new("", "");
    let outbox = cfg.data().join("outbox");
    std::fs::write(
        cfg.conf().join("channels/lab.toml"),
        format!(
            r#"name = "lab"
[source]
type = "mllp_listener"
listen = "127.0.0.1:0"
max_message_bytes = {LIMIT}
frame_timeout_secs = {FRAME_TIMEOUT_SECS}
[accept]
message_types = ["ADT^*", "ORU^R01"]
[[route]]
name = "adt"
when = {{ message_type = ["ADT^*"] }}
payload = "canonical"
to = ["drop"]
[[destination]]
name = "drop"
type = "file"
folder = "{}"
extension = "json"
"#,
            outbox.display()
        ),
    )
    .expect("write channel");
    cfg
}

/// Frames a payload: 0x0B payload 0x1C 0x0D.
fn framed(payload: &[u8]) -> Vec<u8> {
    channels::mllp::codec::frame(payload)
}

/// A message: MSH with the given MSH-9..12, `msh_tail` appended to the MSH (MSH-13 on),
/// then `body` (segments, each ending with CR).
fn hl7(msh9: &str, msh10: &str, msh11: &str, msh12: &str, msh_tail: &str, body: &str) -> String {
    format!("MSH|^~\\&|HIS|MAIN|SB|HUB|20250101120000||{msh9}|{msh10}|{msh11}|{msh12}{msh_tail}\r{body}")
}

const PID: &str = "PID|1||MRN7^^^MAIN^MR||Testperson^Alex||19800101|U\r";

/// An ADT^A04 v2.5.1 with a given control id and body.
fn adt_body(msh10: &str, body: &str) -> String {
    hl7("ADT^A04^ADT_A01", msh10, "P", "2.5.1", "", body)
}

/// What the sender should get back.
#[derive(Debug, Clone)]
struct Answer {
    /// MSA-1.
    code: &'static str,
    /// MSA-2.
    msa2: String,
    /// ERR-3 code and ERR-2 location (ERR-1 before v2.5), `^`-separated; None when AA/CA.
    err: Option<(&'static str, &'static str)>,
}

/// What the store should hold afterwards.
#[derive(Debug, Clone)]
enum Stored {
    /// No record (framing noise that never made a message).
    Nothing,
    /// One record, accepted (status other than `rejected`, no errors).
    Accepted,
    /// One record, `rejected`, whose first error starts with this text.
    Rejected(String),
    /// One record, `rejected`, truncated (only the head kept), first error starts with this.
    RejectedTruncated(String),
}

struct Case {
    name: &'static str,
    /// Exactly what goes on the wire, framing included.
    wire: Vec<u8>,
    /// None: no answer at all (the next answer on the connection is the good message's).
    answer: Option<Answer>,
    stored: Stored,
}

fn ack(code: &'static str, msa2: &str) -> Option<Answer> {
    Some(Answer {
        code,
        msa2: msa2.to_string(),
        err: None,
    })
}

fn nak(code: &'static str, msa2: &str, err3: &'static str, loc: &'static str) -> Option<Answer> {
    Some(Answer {
        code,
        msa2: msa2.to_string(),
        err: Some((err3, loc)),
    })
}

fn rejected(text: &str) -> Stored {
    Stored::Rejected(text.to_string())
}

fn cases() -> Vec<Case> {
    let good = |id: &str| adt_body(id, PID);
    let mut v = vec![
        // --- framing ---
        Case {
            name: "junk before the start block is skipped",
            wire: [b"garbage\r\n\x1c\r".to_vec(), framed(good("F1").as_bytes())].concat(),
            answer: ack("AA", "F1"),
            stored: Stored::Accepted,
        },
        Case {
            name: "missing start block: the bytes are junk, no answer",
            wire: [good("F2").as_bytes(), b"\x1c\r"].concat(),
            answer: None,
            stored: Stored::Nothing,
        },
        Case {
            name: "missing end block: the frame is abandoned by the next start block",
            wire: [b"\x0b", good("F3").as_bytes()].concat(),
            answer: None,
            stored: Stored::Nothing,
        },
        Case {
            name: "doubled start block",
            wire: [b"\x0b\x0b", good("F4").as_bytes(), b"\x1c\r"].concat(),
            answer: ack("AA", "F4"),
            stored: Stored::Accepted,
        },
        Case {
            name: "doubled end block and CR",
            wire: [b"\x0b", good("F5").as_bytes(), b"\x1c\x1c\r\r"].concat(),
            answer: ack("AA", "F5"),
            stored: Stored::Accepted,
        },
        Case {
            name: "no CR after the end block",
            wire: [b"\x0b", good("F6").as_bytes(), b"\x1c"].concat(),
            answer: ack("AA", "F6"),
            stored: Stored::Accepted,
        },
        Case {
            name: "LF instead of CR after the end block",
            wire: [b"\x0b", good("F7").as_bytes(), b"\x1c\n"].concat(),
            answer: ack("AA", "F7"),
            stored: Stored::Accepted,
        },
        Case {
            name: "empty frame",
            wire: b"\x0b\x1c\r".to_vec(),
            answer: nak("AE", "", "100", ""),
            stored: rejected("100: message does not start with an MSH segment"),
        },
        Case {
            name: "frame of white space",
            wire: b"\x0b \r\n \x1c\r".to_vec(),
            answer: nak("AE", "", "100", ""),
            stored: rejected("100: message does not start with an MSH segment"),
        },
        Case {
            name: "frame over the limit: NAK from the head, head kept",
            wire: framed(
                adt_body("F10", &format!("{PID}NTE|1||{}\r", "x".repeat(LIMIT))).as_bytes(),
            ),
            answer: nak("AE", "F10", "104", ""),
            stored: Stored::RejectedTruncated(format!(
                "104: message is larger than the limit of {LIMIT} bytes"
            )),
        },
        Case {
            name: "frame over the limit without an MSH",
            wire: framed("Z".repeat(LIMIT + 10).as_bytes()),
            answer: nak("AE", "", "100", ""),
            stored: Stored::RejectedTruncated(
                "100: message does not start with an MSH segment".into(),
            ),
        },
        Case {
            name: "segments ending in LF and CRLF are read leniently",
            wire: framed(good("F12").replace('\r', "\r\n").as_bytes()),
            answer: ack("AA", "F12"),
            stored: Stored::Accepted,
        },
        // --- MSH ---
        Case {
            name: "no MSH segment",
            wire: framed(PID.as_bytes()),
            answer: nak("AE", "", "100", ""),
            stored: rejected("100: message does not start with an MSH segment"),
        },
        Case {
            name: "EVN before MSH",
            wire: framed(format!("EVN|A04\r{}", good("M2")).as_bytes()),
            answer: nak("AE", "", "100", ""),
            stored: rejected("100: message does not start with an MSH segment"),
        },
        Case {
            name: "a batch envelope in one frame (FHS/BHS, wrong BTS count)",
            wire: framed(
                format!("FHS|^~\\&|HIS\rBHS|^~\\&|HIS\r{}BTS|5\rFTS|1\r", good("M3")).as_bytes(),
            ),
            answer: nak("AE", "", "100", ""),
            stored: rejected("100: message does not start with an MSH segment"),
        },
        Case {
            name: "MSH alone, no MSH-1",
            wire: framed(b"MSH"),
            answer: nak("AE", "", "102", "MSH^1^1"),
            stored: rejected("102 MSH-1: MSH-1 field separator is missing or invalid"),
        },
        Case {
            name: "MSH-1 is a letter",
            wire: framed(b"MSHA^~\\&AHISAMAIN\r"),
            answer: nak("AE", "", "102", "MSH^1^1"),
            stored: rejected("102 MSH-1: MSH-1 field separator is missing or invalid"),
        },
        Case {
            name: "MSH-1 is a space",
            wire: framed(b"MSH ^~\\& HIS MAIN\r"),
            answer: nak("AE", "", "102", "MSH^1^1"),
            stored: rejected("102 MSH-1: MSH-1 field separator is missing or invalid"),
        },
        Case {
            name: "MSH-2 too short",
            wire: framed(b"MSH|^~|HIS|MAIN|SB|HUB|2025||ADT^A04|M7|P|2.5\r"),
            answer: nak("AE", "M7", "102", "MSH^1^2"),
            stored: rejected("102 MSH-2: MSH-2 encoding characters are invalid"),
        },
        Case {
            name: "MSH-2 with a repeated character",
            wire: framed(b"MSH|^^\\&|HIS|MAIN|SB|HUB|2025||ADT^A04|M8|P|2.5\r"),
            answer: nak("AE", "M8", "102", "MSH^1^2"),
            stored: rejected("102 MSH-2: MSH-2 encoding characters are invalid"),
        },
        Case {
            name: "MSH-2 missing",
            wire: framed(b"MSH||HIS|MAIN|SB|HUB|2025||ADT^A04|M9|P|2.5\r"),
            answer: nak("AE", "M9", "102", "MSH^1^2"),
            stored: rejected("102 MSH-2: MSH-2 encoding characters are invalid"),
        },
        Case {
            name: "MSH-2 with a letter",
            wire: framed(b"MSH|^~\\A|HIS|MAIN|SB|HUB|2025||ADT^A04|M10|P|2.5\r"),
            answer: nak("AE", "M10", "102", "MSH^1^2"),
            stored: rejected("102 MSH-2: MSH-2 encoding characters are invalid"),
        },
        Case {
            name: "MSH-2 broken after another MSH-1: MSA-2 still echoes MSH-10",
            wire: framed(b"MSH#^^#HIS#MAIN#SB#HUB#2025##ADT^A04#M10B#P#2.5\r"),
            answer: nak("AE", "M10B", "102", "MSH^1^2"),
            stored: rejected("102 MSH-2: MSH-2 encoding characters are invalid"),
        },
        Case {
            name: "MSH-1 that is not ASCII punctuation",
            wire: framed("MSH\u{a7}^~\\&\u{a7}HIS\u{a7}MAIN\r".as_bytes()),
            answer: nak("AE", "", "102", "MSH^1^1"),
            stored: rejected("102 MSH-1: MSH-1 field separator is missing or invalid"),
        },
        Case {
            name: "other delimiters are mirrored and accepted",
            wire: framed(
                b"MSH#!~$%#HIS#MAIN#SB#HUB#20250101120000##ADT!A04!ADT_A01#M11#P#2.5.1\rPID#1##MRN7!!!MAIN!MR##Testperson!Alex\r",
            ),
            answer: ack("AA", "M11"),
            stored: Stored::Accepted,
        },
        Case {
            name: "empty MSH-9",
            wire: framed(hl7("", "M12", "P", "2.5.1", "", PID).as_bytes()),
            answer: nak("AE", "M12", "101", "MSH^1^9^1^1"),
            stored: rejected("101 MSH-9.1: MSH-9 message type is empty"),
        },
        Case {
            name: "MSH-9 with a trigger but no message code",
            wire: framed(hl7("^A04", "M13", "P", "2.5.1", "", PID).as_bytes()),
            answer: nak("AE", "M13", "101", "MSH^1^9^1^1"),
            stored: rejected("101 MSH-9.1: MSH-9 message type is empty"),
        },
        Case {
            name: "empty MSH-10",
            wire: framed(hl7("ADT^A04", "", "P", "2.5.1", "", PID).as_bytes()),
            answer: nak("AE", "", "101", "MSH^1^10"),
            stored: rejected("101 MSH-10: MSH-10 message control id is empty"),
        },
        Case {
            name: "empty MSH-10 in v2.3 (ERR-1)",
            wire: framed(hl7("ADT^A04", "", "P", "2.3", "", PID).as_bytes()),
            answer: nak("AE", "", "101", "MSH^1^10"),
            stored: rejected("101 MSH-10: MSH-10 message control id is empty"),
        },
        Case {
            name: "empty MSH-11",
            wire: framed(hl7("ADT^A04", "M16", "", "2.5.1", "", PID).as_bytes()),
            answer: nak("AE", "M16", "101", "MSH^1^11"),
            stored: rejected("101 MSH-11: MSH-11 processing id is empty"),
        },
        Case {
            name: "empty MSH-12",
            wire: framed(hl7("ADT^A04", "M17", "P", "", "", PID).as_bytes()),
            answer: nak("AE", "M17", "101", "MSH^1^12"),
            stored: rejected("101 MSH-12: MSH-12 version id is empty"),
        },
        Case {
            name: "MSH ends after MSH-11",
            wire: framed(b"MSH|^~\\&|HIS|MAIN|SB|HUB|2025||ADT^A04|M18|P\rPID|1\r"),
            answer: nak("AE", "M18", "101", "MSH^1^12"),
            stored: rejected("101 MSH-12: MSH-12 version id is empty"),
        },
        Case {
            name: "MSH-10 of 200 characters",
            wire: framed(adt_body(&"L".repeat(200), PID).as_bytes()),
            answer: nak("AE", &"L".repeat(200), "104", "MSH^1^10"),
            stored: rejected(
                "104 MSH-10: MSH-10 message control id is longer than 199 characters",
            ),
        },
        Case {
            name: "MSH-10 of 199 characters is fine",
            wire: framed(adt_body(&"K".repeat(199), PID).as_bytes()),
            answer: ack("AA", &"K".repeat(199)),
            stored: Stored::Accepted,
        },
        Case {
            name: "version 2.0 (ERR-1)",
            wire: framed(hl7("ADT^A04", "M21", "P", "2.0", "", PID).as_bytes()),
            answer: nak("AR", "M21", "203", "MSH^1^12"),
            stored: rejected("203 MSH-12: version '2.0' is not accepted on this channel"),
        },
        Case {
            name: "version 3.0",
            wire: framed(hl7("ADT^A04", "M22", "P", "3.0", "", PID).as_bytes()),
            answer: nak("AR", "M22", "203", "MSH^1^12"),
            stored: rejected("203 MSH-12: version '3.0' is not accepted on this channel"),
        },
        Case {
            name: "version 2.1, as old lab analyzers send it, is accepted",
            wire: framed(hl7("ADT^A04", "M24", "P", "2.1", "", PID).as_bytes()),
            answer: ack("AA", "M24"),
            stored: Stored::Accepted,
        },
        Case {
            name: "version 2.9 is accepted",
            wire: framed(hl7("ADT^A04", "M25", "P", "2.9", "", PID).as_bytes()),
            answer: ack("AA", "M25"),
            stored: Stored::Accepted,
        },
        Case {
            name: "version that is not a number",
            wire: framed(hl7("ADT^A04", "M23", "P", "two", "", PID).as_bytes()),
            answer: nak("AR", "M23", "203", "MSH^1^12"),
            stored: rejected("203 MSH-12: version 'two' is not accepted on this channel"),
        },
        Case {
            name: "processing id X",
            wire: framed(hl7("ADT^A04", "M24", "X", "2.5.1", "", PID).as_bytes()),
            answer: nak("AR", "M24", "202", "MSH^1^11"),
            stored: rejected("202 MSH-11: processing id 'X' is not accepted on this channel"),
        },
        Case {
            name: "unsupported message type",
            wire: framed(hl7("ZZZ^Z01", "M25", "P", "2.5.1", "", PID).as_bytes()),
            answer: nak("AR", "M25", "200", "MSH^1^9^1^1"),
            stored: rejected(
                "200 MSH-9.1: message type 'ZZZ' is not accepted on this channel",
            ),
        },
        Case {
            name: "unsupported trigger event",
            wire: framed(hl7("ORU^R02", "M26", "P", "2.5.1", "", PID).as_bytes()),
            answer: nak("AR", "M26", "201", "MSH^1^9^1^2"),
            stored: rejected(
                "201 MSH-9.2: trigger event 'R02' is not accepted on this channel",
            ),
        },
        Case {
            name: "an accepted type outside the routes is kept as filtered",
            wire: framed(hl7("ORU^R01", "M27", "P", "2.5.1", "", PID).as_bytes()),
            answer: ack("AA", "M27"),
            stored: Stored::Accepted,
        },
        // --- character sets ---
        Case {
            name: "bytes that are not UTF-8 (no MSH-18, fallback utf-8)",
            wire: framed(
                [adt_body("C1", "").as_bytes(), b"PID|1||X||A\xff\xfeB\r"].concat().as_slice(),
            ),
            answer: nak("AE", "C1", "102", ""),
            stored: rejected("102: bytes at offset "),
        },
        Case {
            name: "bytes that are not UTF-8 under MSH-18 UNICODE UTF-8",
            wire: framed(
                [
                    hl7("ADT^A04", "C2", "P", "2.5.1", "||||||UNICODE UTF-8", "").as_bytes(),
                    b"PID|1||X||\xc3\x28\r",
                ]
                .concat()
                .as_slice(),
            ),
            answer: nak("AE", "C2", "102", ""),
            stored: rejected("102: bytes at offset "),
        },
        Case {
            name: "bytes undefined in MSH-18 8859/6",
            wire: framed(
                [
                    hl7("ADT^A04", "C3", "P", "2.5.1", "||||||8859/6", "").as_bytes(),
                    b"PID|1||X||\xa1\r",
                ]
                .concat()
                .as_slice(),
            ),
            answer: nak("AE", "C3", "102", ""),
            stored: rejected("102: bytes at offset "),
        },
        Case {
            name: "MSH-18 8859/1 decodes every byte",
            wire: framed(
                [
                    hl7("ADT^A04", "C4", "P", "2.5.1", "||||||8859/1", "").as_bytes(),
                    b"PID|1||X||M\xfcller\r",
                ]
                .concat()
                .as_slice(),
            ),
            answer: ack("AA", "C4"),
            stored: Stored::Accepted,
        },
        Case {
            name: "unknown MSH-18",
            wire: framed(hl7("ADT^A04", "C5", "P", "2.5.1", "||||||KLINGON-1", PID).as_bytes()),
            answer: nak("AE", "C5", "103", "MSH^1^18"),
            stored: rejected("103 MSH-18: MSH-18 character set is not supported"),
        },
        Case {
            name: "UTF-8 byte order mark before MSH",
            wire: framed(format!("\u{feff}{}", good("C6")).as_bytes()),
            answer: ack("AA", "C6"),
            stored: Stored::Accepted,
        },
        // --- content ---
        Case {
            name: "NUL in PID-5",
            wire: framed(adt_body("N1", "PID|1||X||A\x00B\r").as_bytes()),
            answer: nak("AE", "N1", "102", "PID^1^5"),
            stored: rejected("102 PID-5: control character in field"),
        },
        Case {
            name: "NUL in MSH-4",
            wire: framed(
                b"MSH|^~\\&|HIS|MA\x00IN|SB|HUB|2025||ADT^A04|N2|P|2.5.1\rPID|1\r".as_slice(),
            ),
            answer: nak("AE", "N2", "102", "MSH^1^4"),
            stored: rejected("102 MSH-4: control character in field"),
        },
        Case {
            name: "BEL in the second OBX",
            wire: framed(
                hl7(
                    "ORU^R01",
                    "N3",
                    "P",
                    "2.5.1",
                    "",
                    &format!("{PID}OBX|1|NM|GLU||5.5\rOBX|2|ST|NOTE||ok\x07\r"),
                )
                .as_bytes(),
            ),
            answer: nak("AE", "N3", "102", "OBX^2^5"),
            stored: rejected("102 OBX-5: control character in field"),
        },
        Case {
            name: "lower-case segment id",
            wire: framed(adt_body("N4", "pid|1||X\r").as_bytes()),
            answer: nak("AE", "N4", "100", ""),
            stored: rejected("100: segment 2 has no valid segment id"),
        },
        Case {
            name: "two-letter segment id",
            wire: framed(adt_body("N5", "PI|1||X\r").as_bytes()),
            answer: nak("AE", "N5", "100", ""),
            stored: rejected("100: segment 2 has no valid segment id"),
        },
        Case {
            name: "four-letter segment id",
            wire: framed(adt_body("N6", &format!("{PID}PV1X|1|O\r")).as_bytes()),
            answer: nak("AE", "N6", "100", ""),
            stored: rejected("100: segment 3 has no valid segment id"),
        },
        Case {
            name: "segment id starting with a digit",
            wire: framed(adt_body("N7", &format!("{PID}1PV|1|O\r")).as_bytes()),
            answer: nak("AE", "N7", "100", ""),
            stored: rejected("100: segment 3 has no valid segment id"),
        },
        Case {
            name: "a second MSH in one frame (two messages glued together)",
            wire: framed(format!("{}{}", good("N8"), good("N8B")).as_bytes()),
            answer: nak("AE", "N8", "100", "MSH^2"),
            stored: rejected(
                "100 MSH: a second MSH segment in one message (one message per MLLP frame)",
            ),
        },
        Case {
            name: "a second MSH with LF endings",
            wire: framed(format!("{}{}", good("N9"), good("N9B")).replace('\r', "\n").as_bytes()),
            answer: nak("AE", "N9", "100", "MSH^2"),
            stored: rejected(
                "100 MSH: a second MSH segment in one message (one message per MLLP frame)",
            ),
        },
        Case {
            name: "100,000 repetitions in one field",
            wire: framed(
                adt_body(
                    "S1",
                    &format!("PID|1||{}||Testperson^Alex\r", "R~".repeat(100_000)),
                )
                .as_bytes(),
            ),
            answer: ack("AA", "S1"),
            stored: Stored::Accepted,
        },
        Case {
            name: "10,000 segments",
            wire: framed(adt_body("S2", &format!("{PID}{}", "NTE|1||note\r".repeat(10_000))).as_bytes()),
            answer: ack("AA", "S2"),
            stored: Stored::Accepted,
        },
        Case {
            name: "deeply nested escapes",
            wire: framed(
                adt_body(
                    "S3",
                    &format!(
                        "PID|1||MRN7^^^MAIN^MR||{}^{}\\\r",
                        "\\E\\".repeat(50_000),
                        "\\X41\\\\H\\\\N\\\\S\\\\T\\\\R\\".repeat(20_000)
                    ),
                )
                .as_bytes(),
            ),
            answer: ack("AA", "S3"),
            stored: Stored::Accepted,
        },
        Case {
            name: "one field of 1,000,000 bytes, just under the limit",
            wire: framed(
                adt_body("S4", &format!("{PID}NTE|1||{}\r", "y".repeat(LIMIT - 300))).as_bytes(),
            ),
            answer: ack("AA", "S4"),
            stored: Stored::Accepted,
        },
        Case {
            name: "20,000 components and subcomponents in one field",
            wire: framed(
                adt_body("S5", &format!("{PID}NTE|1||{}\r", "a^b&c&d^".repeat(20_000))).as_bytes(),
            ),
            answer: ack("AA", "S5"),
            stored: Stored::Accepted,
        },
        // --- enhanced mode ---
        Case {
            name: "enhanced mode (MSH-15 AL): empty MSH-10 gets CE",
            wire: framed(hl7("ADT^A04", "", "P", "2.5.1", "|||AL|NE", PID).as_bytes()),
            answer: nak("CE", "", "101", "MSH^1^10"),
            stored: rejected("101 MSH-10: MSH-10 message control id is empty"),
        },
        Case {
            name: "enhanced mode: unsupported version gets CR",
            wire: framed(hl7("ADT^A04", "E2", "P", "3.0", "|||AL|NE", PID).as_bytes()),
            answer: nak("CR", "E2", "203", "MSH^1^12"),
            stored: rejected("203 MSH-12: version '3.0' is not accepted on this channel"),
        },
        Case {
            name: "enhanced mode MSH-15 NE: an error is not answered but stored",
            wire: framed(hl7("ADT^A04", "E3", "X", "2.5.1", "|||NE|NE", PID).as_bytes()),
            answer: None,
            stored: rejected("202 MSH-11: processing id 'X' is not accepted on this channel"),
        },
        Case {
            name: "enhanced mode MSH-15 ER: success is not answered",
            wire: framed(hl7("ADT^A04^ADT_A01", "E4", "P", "2.5.1", "|||ER|NE", PID).as_bytes()),
            answer: None,
            stored: Stored::Accepted,
        },
        Case {
            name: "enhanced mode MSH-15 SU: an error is not answered",
            wire: framed(hl7("ADT^A04", "", "P", "2.5.1", "|||SU|NE", PID).as_bytes()),
            answer: None,
            stored: rejected("101 MSH-10: MSH-10 message control id is empty"),
        },
    ];
    // A message whose control id repeats a rejected one is processed again (not a duplicate).
    v.push(Case {
        name: "resend of a rejected message is processed again",
        wire: framed(hl7("ADT^A04", "M24", "X", "2.5.1", "", PID).as_bytes()),
        answer: nak("AR", "M24", "202", "MSH^1^11"),
        stored: rejected("202 MSH-11: processing id 'X' is not accepted on this channel"),
    });
    v
}

/// Reads one MLLP frame's payload (without framing), or None when the peer closed.
async fn read_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(start) = buf.iter().position(|&b| b == 0x0b) {
            if let Some(end) = buf[start..].iter().position(|&b| b == 0x1c) {
                let payload = buf[start + 1..start + end].to_vec();
                let mut cut = start + end + 1;
                if buf.get(cut) == Some(&0x0d) {
                    cut += 1;
                }
                buf.drain(..cut);
                return Some(payload);
            }
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads a frame within 30 s or fails the test naming the case.
async fn answer_of(stream: &mut TcpStream, buf: &mut Vec<u8>, case: &str) -> String {
    let frame = tokio::time::timeout(Duration::from_secs(30), read_frame(stream, buf))
        .await
        .unwrap_or_else(|_| panic!("{case}: no answer within 30 s"))
        .unwrap_or_else(|| panic!("{case}: connection closed without an answer"));
    String::from_utf8_lossy(&frame).into_owned()
}

/// The fields of the first segment `id` of an HL7 text, split on its own field separator.
fn fields_of(text: &str, id: &str) -> Option<Vec<String>> {
    let sep = text.chars().nth(3)?;
    text.split('\r')
        .find(|s| s.starts_with(id))
        .map(|s| s.split(sep).map(str::to_string).collect())
}

/// (ERR-3 code, location with `^` between parts) from ERR-2/3 (v2.5+) or ERR-1 (before).
fn err_of(text: &str) -> Option<(String, String)> {
    let comp = text.chars().nth(4)?;
    let sub = text.chars().nth(7)?;
    let err = fields_of(text, "ERR")?;
    if err.get(3).is_some_and(|f| !f.is_empty()) {
        let code = err[3].split(comp).next().unwrap_or_default().to_string();
        return Some((code, err[2].replace(comp, "^")));
    }
    let parts: Vec<&str> = err.get(1)?.split(comp).collect();
    let code = parts
        .get(3)?
        .split(sub)
        .next()
        .unwrap_or_default()
        .to_string();
    let loc = if parts[..3].iter().all(|p| p.is_empty()) {
        String::new()
    } else {
        parts[..3].join("^")
    };
    Some((code, loc))
}

/// Records not seen before, each with its detail.
async fn new_records(admin: &str, seen: &mut HashSet<String>) -> Vec<serde_json::Value> {
    let list = get_json(&format!("{admin}/api/messages?limit=20")).await;
    let mut out = Vec::new();
    for item in list["items"].as_array().expect("items") {
        let id = item["id"].as_str().expect("id").to_string();
        if seen.insert(id.clone()) {
            out.push(get_json(&format!("{admin}/api/messages/{id}")).await);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_documented_answer_and_is_stored_with_its_reason() {
    let cfg = config();
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let addr = engine.mllp("lab");
    let admin = engine.admin();
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut seen = HashSet::new();
    let mut failures = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let name = case.name;
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        let mut buf = Vec::new();
        stream.write_all(&case.wire).await.expect("write case");
        let good_id = format!("GOOD{n}");
        let mut problems = Vec::new();
        if let Some(want) = &case.answer {
            let text = answer_of(&mut stream, &mut buf, name).await;
            let msa = fields_of(&text, "MSA").unwrap_or_default();
            let got_code = msa.get(1).cloned().unwrap_or_default();
            let got_msa2 = msa.get(2).cloned().unwrap_or_default();
            if got_code != want.code || got_msa2 != want.msa2 {
                problems.push(format!(
                    "MSA {got_code}|{got_msa2}, expected {}|{}",
                    want.code, want.msa2
                ));
            }
            let got_err = err_of(&text);
            match (&want.err, &got_err) {
                (None, None) => {}
                (Some((code, loc)), Some((gc, gl))) if gc == code && gl == loc => {}
                _ => problems.push(format!("ERR {got_err:?}, expected {:?}", want.err)),
            }
        }
        // Still up: a good message on the same connection gets AA, and it is the first
        // answer the connection sees when the case expected none.
        stream
            .write_all(&framed(adt(&good_id).as_bytes()))
            .await
            .expect("write good message");
        let text = answer_of(&mut stream, &mut buf, name).await;
        let msa = fields_of(&text, "MSA").unwrap_or_default();
        if msa.get(1).map(String::as_str) != Some("AA")
            || msa.get(2).map(String::as_str) != Some(good_id.as_str())
        {
            problems.push(format!("the good message after it got {text:?}"));
        }
        let records = new_records(&admin, &mut seen).await;
        let (good, others): (Vec<_>, Vec<_>) = records
            .into_iter()
            .partition(|r| r["control_id"] == good_id.as_str());
        if good.len() != 1 {
            problems.push(format!("{} records of the good message", good.len()));
        }
        let status = |r: &serde_json::Value| r["status"].as_str().unwrap_or_default().to_string();
        let first_error =
            |r: &serde_json::Value| r["errors"][0].as_str().unwrap_or_default().to_string();
        match (&case.stored, others.as_slice()) {
            (Stored::Nothing, []) => {}
            (Stored::Accepted, [r])
                if status(r) != "rejected" && r["errors"] == serde_json::json!([]) => {}
            (Stored::Rejected(text), [r])
                if status(r) == "rejected"
                    && first_error(r).starts_with(text.as_str())
                    && r["truncated"] == false => {}
            (Stored::RejectedTruncated(text), [r])
                if status(r) == "rejected"
                    && first_error(r).starts_with(text.as_str())
                    && r["truncated"] == true => {}
            (want, got) => problems.push(format!(
                "stored {:?}, expected {want:?}",
                got.iter()
                    .map(|r| (status(r), r["errors"].clone(), r["truncated"].clone()))
                    .collect::<Vec<_>>()
            )),
        }
        if !problems.is_empty() {
            failures.push(format!("case {n} ({name}): {}", problems.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // The rejections were counted by reason.
    let metrics = reqwest::get(format!("{admin}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for reason in [
        "segment_sequence",
        "data_type",
        "required_field_missing",
        "value_too_long",
        "unsupported_version",
        "table_value_not_found",
    ] {
        assert!(
            metrics.contains(&format!(
                "switchboard_messages_rejected_total{{channel=\"lab\",reason=\"{reason}\"}}"
            )),
            "no rejection counted as {reason}"
        );
    }
    assert!(metrics.contains("switchboard_mllp_junk_bytes_total{channel=\"lab\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_never_ends_is_cut_at_the_frame_timeout() {
    let cfg = config();
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let addr = engine.mllp("lab");
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream
        .write_all(&[b"\x0b", adt_body("T1", PID).as_bytes()].concat())
        .await
        .expect("write");
    let started = Instant::now();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(30), read_frame(&mut stream, &mut buf))
        .await
        .expect("the connection is cut well within 30 s");
    assert_eq!(closed, None, "no answer to a frame that never ended");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(FRAME_TIMEOUT_SECS) - Duration::from_millis(200),
        "cut too early, after {waited:?}"
    );
    // Nothing of it stored, the timeout counted, and the engine still answers.
    let list = get_json(&format!("{}/api/messages?limit=10", engine.admin())).await;
    assert_eq!(list["count"], 0, "{list}");
    let mut client = connect(&addr).await;
    let ack = send(&mut client, adt("T2").as_bytes()).await;
    assert_eq!(segment(&ack, "MSA")[1], "AA");
    let metrics = reqwest::get(format!("{}/metrics", engine.admin()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("switchboard_mllp_timeouts_total{channel=\"lab\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_file_with_wrong_counts_is_refused_by_send_and_nothing_is_stored() {
    let cfg = config();
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let addr = engine.mllp("lab");
    let dir = tempfile::tempdir().expect("tempdir");
    let batch = |bts: usize, fts: usize| {
        format!(
            "FHS|^~\\&|HIS|MAIN\rBHS|^~\\&|HIS|MAIN\r{}{}BTS|{bts}\rFTS|{fts}\r",
            adt("BA1"),
            adt("BA2")
        )
    };
    let run = |file: &std::path::Path| {
        std::process::Command::new(binary())
            .args(["send", "--to", &addr])
            .arg(file)
            .output()
            .expect("send runs")
    };
    let wrong_bts = dir.path().join("wrong-bts.hl7");
    std::fs::write(&wrong_bts, batch(3, 1)).expect("write");
    let out = run(&wrong_bts);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("batch 1: BTS-1 says 3 messages, found 2"),
        "{stderr}"
    );
    let wrong_fts = dir.path().join("wrong-fts.hl7");
    std::fs::write(&wrong_fts, batch(2, 4)).expect("write");
    let out = run(&wrong_fts);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("FTS-1 says 4 batches, found 1"), "{stderr}");
    let list = get_json(&format!("{}/api/messages?limit=10", engine.admin())).await;
    assert_eq!(
        list["count"], 0,
        "nothing of a refused batch is sent: {list}"
    );
    // The same batch with the right counts: every message answered AA.
    let right = dir.path().join("right.hl7");
    std::fs::write(&right, batch(2, 1)).expect("write");
    let out = run(&right);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("AA BA1") && stdout.contains("AA BA2"),
        "{stdout}"
    );
}

// --- HTTP sources ---------------------------------------------------------------------------

/// Largest body the HTTP bad-input channels accept.
const HTTP_LIMIT: usize = 8192;

/// The HTTP bad-input engine: a FHIR REST source with a bearer token, and the three webhook
/// formats (Buktor with bearer + HMAC, OpsPort with an API key, PX360 without credentials),
/// each with `max_body_bytes = HTTP_LIMIT` and no routes.
fn http_config() -> TestConfig {
    let cfg = TestConfig::new("", "");
    let secret = |name: &str, value: &str| {
        let path = cfg.root.path().join(name);
        std::fs::write(&path, value).expect("write secret");
        path.display().to_string()
    };
    let token = secret("fhir-token", "fhir-token");
    let bk_token = secret("bk-token", "bk-token");
    let bk_hmac = secret("bk-hmac", "bk-shared-secret");
    let ops_key = secret("ops-key", "ops-key");
    let channel = |name: &str, source: String| {
        std::fs::write(
            cfg.conf().join(format!("channels/{name}.toml")),
            format!("name = \"{name}\"\n[source]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = {HTTP_LIMIT}\n{source}"),
        )
        .expect("write channel");
    };
    channel(
        "fhir",
        format!("type = \"fhir_rest\"\nbase_path = \"/fhir\"\n[source.auth]\nbearer_token = {{ file = \"{token}\" }}\n"),
    );
    channel(
        "buktor-in",
        format!("type = \"webhook\"\nformat = \"buktor\"\n[source.auth]\nbearer_token = {{ file = \"{bk_token}\" }}\nhmac_secret = {{ file = \"{bk_hmac}\" }}\n"),
    );
    channel(
        "opsport-in",
        format!("type = \"webhook\"\nformat = \"opsport\"\n[source.auth]\napi_key = {{ file = \"{ops_key}\" }}\n"),
    );
    channel(
        "px360-in",
        "type = \"webhook\"\nformat = \"px360\"\n".into(),
    );
    cfg
}

/// One HTTP request, written byte for byte on a fresh connection (`Connection: close`).
struct HttpCase {
    name: &'static str,
    channel: &'static str,
    method: &'static str,
    path: &'static str,
    /// Extra header lines (`Name: value`), besides Host, Connection and the body's length.
    headers: Vec<String>,
    body: Vec<u8>,
    /// Send the body chunked (no Content-Length), so only reading it finds it too large.
    chunked: bool,
    status: u16,
    /// The answer must contain this JSON (objects by key, arrays element by element).
    answer: serde_json::Value,
    stored: Stored,
}

/// Is every part of `want` in `got`?
fn json_contains(got: &serde_json::Value, want: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| g.get(k).is_some_and(|gv| json_contains(gv, wv))),
        (Value::Array(g), Value::Array(w)) => {
            g.len() >= w.len() && w.iter().zip(g).all(|(wv, gv)| json_contains(gv, wv))
        }
        _ => got == want,
    }
}

/// Sends `case` on its own connection; returns the status and the parsed (or raw) body.
async fn http_exchange(addr: &str, case: &HttpCase) -> (u16, serde_json::Value) {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n",
        case.method, case.path
    );
    for h in &case.headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    let mut wire = Vec::new();
    if case.chunked {
        head.push_str("Transfer-Encoding: chunked\r\n\r\n");
        wire.extend_from_slice(head.as_bytes());
        for chunk in case.body.chunks(1000) {
            wire.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            wire.extend_from_slice(chunk);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n\r\n");
    } else {
        head.push_str(&format!("Content-Length: {}\r\n\r\n", case.body.len()));
        wire.extend_from_slice(head.as_bytes());
        wire.extend_from_slice(&case.body);
    }
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may answer (413) and close before it has read everything: ignore that.
    let _ = stream.write_all(&wire).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "case {}: no answer within 10 s", case.name);
    let text = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    let value = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
    (status, value)
}

/// The payload of a chunked HTTP body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn http_cases() -> Vec<HttpCase> {
    use serde_json::json;
    let fhir_json = || "Content-Type: application/fhir+json".to_string();
    let bearer = |t: &str| format!("Authorization: Bearer {t}");
    let json_ct = || "Content-Type: application/json".to_string();
    let patient = br#"{"resourceType":"Patient","identifier":[{"system":"urn:oid:1.2.3","value":"BI-1"}],"name":[{"family":"Testperson"}]}"#.to_vec();
    let big = |n: usize| {
        format!(
            "{{\"resourceType\":\"Patient\",\"text\":\"{}\"}}",
            "x".repeat(n)
        )
        .into_bytes()
    };
    let nested = format!("{}{}", "[".repeat(3000), "]".repeat(3000)).into_bytes();
    let outcome =
        |code: &str| json!({"resourceType": "OperationOutcome", "issue": [{"code": code}]});
    let fhir = |name, method, path, headers: Vec<String>, body: Vec<u8>, status, answer, stored| {
        HttpCase {
            name,
            channel: "fhir",
            method,
            path,
            headers,
            body,
            chunked: false,
            status,
            answer,
            stored,
        }
    };
    let sign = |body: &[u8]| {
        format!(
            "Buktor-Signature: {}",
            channels::webhook::sender::sign(b"bk-shared-secret", body)
        )
    };
    let bk_event = br#"{"event_id":"evt_bi","timestamp":"2026-12-01T00:00:00Z","type":"appointment.created","operation":"created","data":{},"source":"HIS"}"#.to_vec();
    let bk_error = |m: &str| json!({"status": "error", "message": m});
    let ops_error = |m: &str| json!({"success": false, "message": m});
    let buktor = |name, headers: Vec<String>, body: Vec<u8>, status, answer, stored| HttpCase {
        name,
        channel: "buktor-in",
        method: "POST",
        path: "/his/receive",
        headers,
        body,
        chunked: false,
        status,
        answer,
        stored,
    };
    let opsport =
        |name, path, headers: Vec<String>, body: Vec<u8>, status, answer, stored| HttpCase {
            name,
            channel: "opsport-in",
            method: "POST",
            path,
            headers,
            body,
            chunked: false,
            status,
            answer,
            stored,
        };
    let px360 =
        |name, headers: Vec<String>, body: Vec<u8>, chunked, status, answer, stored| HttpCase {
            name,
            channel: "px360-in",
            method: "POST",
            path: "/api/simulator/his-patient-data/",
            headers,
            body,
            chunked,
            status,
            answer,
            stored,
        };
    vec![
        // --- FHIR REST: credentials, media type, size ---
        fhir("FHIR: no Authorization header", "POST", "/fhir/Patient", vec![fhir_json()], patient.clone(), 401, outcome("login"), Stored::Nothing),
        fhir("FHIR: wrong bearer token", "POST", "/fhir/Patient", vec![fhir_json(), bearer("wrong")], patient.clone(), 401, outcome("login"), Stored::Nothing),
        fhir("FHIR: Basic instead of Bearer", "POST", "/fhir/Patient", vec![fhir_json(), "Authorization: Basic Zmhpcjp0b2tlbg==".into()], patient.clone(), 401, outcome("login"), Stored::Nothing),
        fhir("FHIR: application/json instead of application/fhir+json", "POST", "/fhir/Patient", vec![json_ct(), bearer("fhir-token")], patient.clone(), 415, outcome("not-supported"), Stored::Nothing),
        fhir("FHIR: no Content-Type", "POST", "/fhir/Patient", vec![bearer("fhir-token")], patient.clone(), 415, outcome("not-supported"), Stored::Nothing),
        fhir("FHIR: text/plain", "POST", "/fhir/Patient", vec!["Content-Type: text/plain".into(), bearer("fhir-token")], patient.clone(), 415, outcome("not-supported"), Stored::Nothing),
        fhir("FHIR: body over the limit, announced by Content-Length", "POST", "/fhir/Patient", vec![fhir_json(), bearer("fhir-token")], big(HTTP_LIMIT + 100), 413, outcome("too-costly"), Stored::Nothing),
        HttpCase {
            chunked: true,
            ..fhir("FHIR: chunked body over the limit", "POST", "/fhir/Patient", vec![fhir_json(), bearer("fhir-token")], big(HTTP_LIMIT * 2), 413, outcome("too-costly"), Stored::Nothing)
        },
        fhir("FHIR: path outside the base", "POST", "/other/Patient", vec![fhir_json(), bearer("fhir-token")], patient.clone(), 404, outcome("not-found"), Stored::Nothing),
        fhir("FHIR: resource type not served", "POST", "/fhir/Medication", vec![fhir_json(), bearer("fhir-token")], patient.clone(), 404, json!({"resourceType": "OperationOutcome"}), Stored::Nothing),
        // --- FHIR REST: bodies ---
        fhir("FHIR: truncated JSON", "POST", "/fhir/Patient", vec![fhir_json(), bearer("fhir-token")], br#"{"resourceType":"Patient","identifier":["#.to_vec(), 400, outcome("structure"), rejected("")),
        fhir("FHIR: empty body", "POST", "/fhir/Patient", vec![fhir_json(), bearer("fhir-token")], Vec::new(), 400, outcome("structure"), rejected("")),
        fhir("FHIR: a JSON array, not a resource", "POST", "/fhir/Patient", vec![fhir_json(), bearer("fhir-token")], b"[1,2,3]".to_vec(), 400, json!({"issue": [{"code": "structure", "expression": ["resourceType"]}]}), rejected("")),
        fhir("FHIR: invalid UTF-8", "POST", "/fhir/Patient", vec![fhir_json(), bearer("fhir-token")], b"{\"resourceType\":\"Patient\",\"identifier\":[{\"value\":\"BI-5\"}],\"name\":[{\"family\":\"\xff\xfe\"}]}".to_vec(), 400, json!({"issue": [{"expression": ["$"]}]}), rejected("$: not valid FHIR R4: the body is not valid UTF-8 (byte 77)")),
        fhir("FHIR: a raw NUL byte in a string", "POST", "/fhir/Patient", vec![fhir_json(), bearer("fhir-token")], b"{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"a\x00b\"}]}".to_vec(), 400, outcome("structure"), rejected("")),
        fhir("FHIR: 3,000 nested arrays", "POST", "/fhir/Patient", vec![fhir_json(), bearer("fhir-token")], nested.clone(), 400, outcome("structure"), rejected("")),
        fhir("FHIR: resource type not the URL's", "POST", "/fhir/Patient", vec![fhir_json(), bearer("fhir-token")], br#"{"resourceType":"Appointment","status":"booked","participant":[]}"#.to_vec(), 400, json!({"issue": [{"expression": ["resourceType"]}]}), rejected("")),
        fhir("FHIR: unknown element", "POST", "/fhir/Patient", vec![fhir_json(), bearer("fhir-token")], br#"{"resourceType":"Patient","identifier":[{"value":"BI-2"}],"colour":"blue"}"#.to_vec(), 400, json!({"issue": [{"expression": ["Patient.colour"]}]}), rejected("")),
        fhir("FHIR: a patient without any identifier", "POST", "/fhir/Patient", vec![fhir_json(), bearer("fhir-token")], br#"{"resourceType":"Patient","name":[{"family":"Testperson"}]}"#.to_vec(), 422, json!({"resourceType": "OperationOutcome"}), rejected("")),
        fhir("FHIR: a Bundle of type history", "POST", "/fhir/", vec![fhir_json(), bearer("fhir-token")], br#"{"resourceType":"Bundle","type":"history","entry":[]}"#.to_vec(), 422, json!({"resourceType": "OperationOutcome"}), rejected("")),
        // --- Buktor webhook ---
        buktor("Buktor: no bearer token", vec![json_ct(), sign(&bk_event)], bk_event.clone(), 401, bk_error("Unauthorized"), Stored::Nothing),
        buktor("Buktor: wrong bearer token", vec![json_ct(), bearer("wrong"), sign(&bk_event)], bk_event.clone(), 401, bk_error("Unauthorized"), Stored::Nothing),
        buktor("Buktor: no signature", vec![json_ct(), bearer("bk-token")], bk_event.clone(), 401, bk_error("Missing Buktor-Signature header."), Stored::Nothing),
        buktor("Buktor: signature of another body", vec![json_ct(), bearer("bk-token"), sign(b"{}")], bk_event.clone(), 403, bk_error("Invalid signature."), Stored::Nothing),
        buktor("Buktor: signature not hex", vec![json_ct(), bearer("bk-token"), "Buktor-Signature: not-hex".into()], bk_event.clone(), 403, bk_error("Invalid signature."), Stored::Nothing),
        buktor("Buktor: text/plain", vec!["Content-Type: text/plain".into(), bearer("bk-token"), sign(&bk_event)], bk_event.clone(), 415, bk_error("Content-Type must be application/json."), Stored::Nothing),
        buktor("Buktor: body over the limit", vec![json_ct(), bearer("bk-token"), sign(&big(HTTP_LIMIT))], big(HTTP_LIMIT), 413, bk_error(&format!("Request body is larger than {HTTP_LIMIT} bytes.")), Stored::Nothing),
        buktor("Buktor: signed but not JSON", vec![json_ct(), bearer("bk-token"), sign(b"{\"event_id\": ")], b"{\"event_id\": ".to_vec(), 400, json!({"status": "error"}), rejected("")),
        buktor("Buktor: signed, no event type", vec![json_ct(), bearer("bk-token"), sign(br#"{"event_id":"evt_nt","data":{}}"#)], br#"{"event_id":"evt_nt","data":{}}"#.to_vec(), 400, json!({"status": "error"}), rejected("")),
        buktor("Buktor: signed but not UTF-8", vec![json_ct(), bearer("bk-token"), sign(b"{\"event_id\":\"\xc3\x28\"}")], b"{\"event_id\":\"\xc3\x28\"}".to_vec(), 400, bk_error("Request body is not valid UTF-8."), rejected("$: the body is not valid UTF-8 (byte 13)")),
        HttpCase {
            method: "GET",
            ..buktor("Buktor: GET instead of POST", vec![bearer("bk-token"), sign(b"")], Vec::new(), 405, bk_error("Method not allowed; use POST."), Stored::Nothing)
        },
        // --- OpsPort webhook ---
        opsport("OpsPort: no API key", "/api/healthcare/patient", vec![json_ct()], b"{}".to_vec(), 401, ops_error("Invalid or missing API key."), Stored::Nothing),
        opsport("OpsPort: wrong API key", "/api/healthcare/patient", vec![json_ct(), "X-API-Key: wrong".into()], b"{}".to_vec(), 401, ops_error("Invalid or missing API key."), Stored::Nothing),
        opsport("OpsPort: unknown endpoint", "/api/healthcare/invoice", vec![json_ct(), "X-API-Key: ops-key".into()], b"{}".to_vec(), 404, ops_error("Unknown endpoint."), Stored::Nothing),
        opsport("OpsPort: not JSON", "/api/healthcare/patient", vec![json_ct(), "X-API-Key: ops-key".into()], b"patientNo=1".to_vec(), 400, json!({"success": false}), rejected("")),
        opsport("OpsPort: an object on the bulk path", "/api/healthcare/patients", vec![json_ct(), "X-API-Key: ops-key".into()], br#"{"patientNo":"BI-3"}"#.to_vec(), 400, json!({"success": false}), rejected("")),
        opsport("OpsPort: Latin-1 bytes", "/api/healthcare/patient", vec![json_ct(), "X-API-Key: ops-key".into()], b"{\"patientNo\":\"BI-6\",\"name\":\"Jos\xe9\"}".to_vec(), 400, ops_error("Request body is not valid UTF-8."), rejected("$: the body is not valid UTF-8 (byte 31)")),
        // --- PX360 webhook ---
        px360("PX360: form data", vec!["Content-Type: application/x-www-form-urlencoded".into()], b"Code=1".to_vec(), false, 415, json!({"error": "Content-Type must be application/json."}), Stored::Nothing),
        px360("PX360: chunked body over the limit", vec![json_ct()], big(HTTP_LIMIT * 3), true, 413, json!({"error": format!("Request body is larger than {HTTP_LIMIT} bytes.")}), Stored::Nothing),
        px360("PX360: not JSON", vec![json_ct()], b"<xml/>".to_vec(), false, 400, json!({"error": "invalid request body at 1:1: expected value at line 1 column 1"}), rejected("")),
        px360("PX360: required fields missing", vec![json_ct()], br#"{"FetchPatientDataTimeStampList":[{"Type":"Patient Demographic details","PatientID":"BI-4"}]}"#.to_vec(), false, 400, json!({"error": "Invalid HIS data format", "details": {"Code": ["This field is required."]}}), rejected("")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_http_request_gets_its_documented_answer_and_nothing_is_lost() {
    let cfg = http_config();
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let admin = engine.admin();
    let cases = http_cases();
    assert!(cases.len() >= 30, "{} HTTP cases", cases.len());
    let mut seen = HashSet::new();
    assert!(new_records(&admin, &mut seen).await.is_empty());
    let mut failures = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let addr = engine.info.channels[case.channel].to_string();
        let (status, answer) = http_exchange(&addr, case).await;
        let mut problems = Vec::new();
        if status != case.status {
            problems.push(format!("status {status}, expected {}", case.status));
        }
        if !json_contains(&answer, &case.answer) {
            problems.push(format!(
                "answer {answer}, expected it to contain {}",
                case.answer
            ));
        }
        // The engine is still up.
        let health = reqwest::get(format!("{admin}/health")).await;
        if !health.is_ok_and(|r| r.status().is_success()) {
            problems.push("engine down afterwards".into());
        }
        let records = new_records(&admin, &mut seen).await;
        let status_of =
            |r: &serde_json::Value| r["status"].as_str().unwrap_or_default().to_string();
        match (&case.stored, records.as_slice()) {
            (Stored::Nothing, []) => {}
            (Stored::Rejected(text), [r])
                if status_of(r) == "rejected"
                    && r["channel"] == case.channel
                    && r["errors"][0]
                        .as_str()
                        .is_some_and(|e| !e.is_empty() && e.starts_with(text.as_str())) => {}
            (want, got) => problems.push(format!(
                "stored {:?}, expected {want:?}",
                got.iter()
                    .map(|r| (status_of(r), r["errors"].clone()))
                    .collect::<Vec<_>>()
            )),
        }
        if !problems.is_empty() {
            failures.push(format!("case {n} ({}): {}", case.name, problems.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} HTTP cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // Good requests right after all of it are taken and stored.
    let good = HttpCase {
        name: "good FHIR patient",
        channel: "fhir",
        method: "POST",
        path: "/fhir/Patient",
        headers: vec![
            "Content-Type: application/fhir+json".into(),
            "Authorization: Bearer fhir-token".into(),
        ],
        body: br#"{"resourceType":"Patient","identifier":[{"system":"urn:oid:1.2.3","value":"BI-9"}],"name":[{"family":"Testperson"}]}"#.to_vec(),
        chunked: false,
        status: 201,
        answer: serde_json::json!({"resourceType": "Patient"}),
        stored: Stored::Accepted,
    };
    let addr = engine.info.channels["fhir"].to_string();
    let (status, answer) = http_exchange(&addr, &good).await;
    assert_eq!(status, 201, "{answer}");
    let records = new_records(&admin, &mut seen).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_ne!(records[0]["status"], "rejected");
    // Every credential failure was counted, per channel.
    let metrics = metrics_text(&engine).await;
    for (channel, n) in [("fhir", 3.0), ("buktor-in", 5.0), ("opsport-in", 2.0)] {
        let series = format!("switchboard_http_auth_failures_total{{channel=\"{channel}\"}}");
        assert_eq!(metric_value(&metrics, &series), n, "{series}");
    }
}
