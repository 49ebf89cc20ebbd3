//! Character sets: MSH-18 names to `encoding_rs` encodings, and decoding of received bytes.
//!
//! HL7 v2 names character sets in MSH-18 (table 0211). The MSH segment itself is ASCII in
//! every supported set, so MSH-18 can be read from the raw bytes before anything is decoded.

use encoding_rs::Encoding;
use std::borrow::Cow;

/// Why received bytes could not be turned into text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CharsetError {
    /// MSH-18 names a character set this engine does not know.
    #[error("unsupported character set '{0}' in MSH-18")]
    Unsupported(String),
    /// The bytes are not valid in the declared (or fallback) character set.
    #[error("bytes at offset {offset} are not valid {charset}")]
    Invalid {
        /// The character set the bytes were decoded with.
        charset: &'static str,
        /// Offset of the first invalid byte.
        offset: usize,
    },
}

/// A character set the engine can decode, as named by MSH-18 or by channel configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// 7-bit ASCII (`ASCII`, `ISO IR6`); bytes above 0x7F are an error.
    Ascii,
    /// UTF-8 (`UNICODE UTF-8`, `ISO IR192`, `UNICODE`).
    Utf8,
    /// Any other single- or multi-byte set that `encoding_rs` decodes.
    Other(&'static Encoding),
}

impl Charset {
    /// Maps an MSH-18 value (HL7 table 0211) or a WHATWG label (`utf-8`, `iso-8859-1`,
    /// `windows-1256`) to a character set.
    ///
    /// ```
    /// use transforms::hl7v2::charset::Charset;
    /// assert_eq!(Charset::from_name("UNICODE UTF-8"), Some(Charset::Utf8));
    /// assert_eq!(Charset::from_name("8859/1").map(|c| c.name()), Some("windows-1252"));
    /// assert_eq!(Charset::from_name("EBCDIC"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Charset> {
        let upper = name.trim().to_ascii_uppercase();
        let label = match upper.as_str() {
            "" => return None,
            "ASCII" | "ISO IR6" | "US-ASCII" => return Some(Charset::Ascii),
            "UNICODE UTF-8" | "ISO IR192" | "UNICODE" | "UTF-8" | "UTF8" => {
                return Some(Charset::Utf8)
            }
            "8859/1" | "ISO IR100" => "iso-8859-1",
            "8859/2" | "ISO IR101" => "iso-8859-2",
            "8859/3" | "ISO IR109" => "iso-8859-3",
            "8859/4" | "ISO IR110" => "iso-8859-4",
            "8859/5" | "ISO IR144" => "iso-8859-5",
            "8859/6" | "ISO IR127" => "iso-8859-6",
            "8859/7" | "ISO IR126" => "iso-8859-7",
            "8859/8" | "ISO IR138" => "iso-8859-8",
            "8859/9" | "ISO IR148" => "iso-8859-9",
            "8859/15" => "iso-8859-15",
            "GB 18030-2000" => "gb18030",
            "KS X 1001" => "euc-kr",
            "BIG-5" => "big5",
            "ISO IR87" | "ISO IR159" => "iso-2022-jp",
            _ => upper.as_str(),
        };
        let encoding = Encoding::for_label(label.as_bytes())?;
        if encoding == encoding_rs::UTF_8 {
            Some(Charset::Utf8)
        } else if encoding == encoding_rs::UTF_16LE || encoding == encoding_rs::UTF_16BE {
            // MSH cannot be read byte-wise in UTF-16; such senders are not supported.
            None
        } else {
            Some(Charset::Other(encoding))
        }
    }

    /// The canonical name of this character set (`ascii`, `utf-8`, `windows-1252`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Charset::Ascii => "ascii",
            Charset::Utf8 => "utf-8",
            Charset::Other(e) => e.name(),
        }
    }

    /// Encodes text for the wire in this character set; characters it cannot represent
    /// become HL7-safe numeric references chosen by `encoding_rs`.
    pub fn encode<'a>(&self, text: &'a str) -> Cow<'a, [u8]> {
        match self {
            Charset::Ascii | Charset::Utf8 => Cow::Borrowed(text.as_bytes()),
            Charset::Other(e) => e.encode(text).0,
        }
    }
}

/// Reads MSH-18 (first repetition) from raw bytes without decoding the message.
///
/// Returns `None` when there is no MSH segment or MSH-18 is empty.
///
/// ```
/// use transforms::hl7v2::charset::declared_charset;
/// let raw = b"MSH|^~\\&|A|B|C|D|20250101||ADT^A04|1|P|2.5||||||8859/1\rPID|";
/// assert_eq!(declared_charset(raw).as_deref(), Some("8859/1"));
/// ```
pub fn declared_charset(raw: &[u8]) -> Option<String> {
    let start = find_msh(raw)?;
    let msh = &raw[start..];
    let end = msh
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(msh.len());
    let msh = &msh[..end];
    let sep = *msh.get(3)?;
    let value = msh.split(|&b| b == sep).nth(17)?;
    let rep = msh.get(6).copied().unwrap_or(b'~');
    let first = value.split(|&b| b == rep).next()?;
    let text = std::str::from_utf8(first).ok()?.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// Offset of the `MSH` that starts the message, allowing leading white space.
fn find_msh(raw: &[u8]) -> Option<usize> {
    let start = raw.iter().position(|b| !b.is_ascii_whitespace())?;
    raw[start..].starts_with(b"MSH").then_some(start)
}

/// Decodes a received message by its MSH-18, or by `fallback` when MSH-18 is empty.
///
/// # Errors
///
/// [`CharsetError::Unsupported`] when MSH-18 names an unknown set, [`CharsetError::Invalid`]
/// when the bytes are not valid in the chosen set. The caller keeps the raw bytes either way.
pub fn decode(raw: &[u8], fallback: Charset) -> Result<(Cow<'_, str>, Charset), CharsetError> {
    let charset = match declared_charset(raw) {
        Some(name) => Charset::from_name(&name).ok_or(CharsetError::Unsupported(name))?,
        None => fallback,
    };
    let text = match charset {
        Charset::Ascii => match raw.iter().position(|b| !b.is_ascii()) {
            Some(offset) => {
                return Err(CharsetError::Invalid {
                    charset: "ascii",
                    offset,
                })
            }
            None => Cow::Borrowed(std::str::from_utf8(raw).map_err(|e| CharsetError::Invalid {
                charset: "ascii",
                offset: e.valid_up_to(),
            })?),
        },
        Charset::Utf8 => {
            let raw = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
            Cow::Borrowed(std::str::from_utf8(raw).map_err(|e| CharsetError::Invalid {
                charset: "utf-8",
                offset: e.valid_up_to(),
            })?)
        }
        Charset::Other(encoding) => {
            let (text, had_errors) = encoding.decode_without_bom_handling(raw);
            if had_errors {
                let offset = text.find('\u{FFFD}').unwrap_or(0);
                return Err(CharsetError::Invalid {
                    charset: encoding.name(),
                    offset,
                });
            }
            text
        }
    };
    Ok((text, charset))
}

/// Decodes stored bytes with the character set recorded for them (an `encoding_rs` or
/// MSH-18 name); bytes invalid in it become U+FFFD. For showing and re-reading messages that
/// were already accepted, not for checking new ones (use [`decode`]).
pub fn decode_lossy(raw: &[u8], charset_name: &str) -> String {
    match Charset::from_name(charset_name) {
        Some(Charset::Other(e)) => e.decode_without_bom_handling(raw).0.into_owned(),
        _ => String::from_utf8_lossy(raw).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_the_usual_fallback() {
        let raw = "MSH|^~\\&|A|B|C|D|1||ADT^A04|1|P|2.5\rPID|||1||Müller^Zoë".as_bytes();
        let (text, cs) = decode(raw, Charset::Utf8).expect("valid utf-8");
        assert!(text.contains("Zoë"));
        assert_eq!(cs, Charset::Utf8);
    }

    #[test]
    fn latin1_by_msh18() {
        let mut raw = b"MSH|^~\\&|A|B|C|D|1||ADT^A04|1|P|2.5||||||8859/1\rPID|||1||M".to_vec();
        raw.extend_from_slice(&[0xFC, b'l', b'l', b'e', b'r']);
        let (text, cs) = decode(&raw, Charset::Utf8).expect("latin-1 decodes");
        assert!(text.ends_with("Müller"));
        assert_eq!(cs.name(), "windows-1252");
    }

    #[test]
    fn arabic_by_iso_ir127() {
        let mut raw = b"MSH|^~\\&|A|B|C|D|1||ADT^A04|1|P|2.5||||||ISO IR127\rPID|||1||".to_vec();
        raw.extend_from_slice(&[0xC3, 0xC8]); // alef with hamza, beh
        let (text, _) = decode(&raw, Charset::Utf8).expect("8859-6 decodes");
        assert!(text.ends_with("أب"));
    }

    #[test]
    fn invalid_utf8_is_an_error_with_offset() {
        let raw = b"MSH|^~\\&|A|B|C|D|1||ADT^A04|1|P|2.5\rPID|||\xFF";
        let err = decode(raw, Charset::Utf8).expect_err("0xFF is not utf-8");
        assert_eq!(
            err,
            CharsetError::Invalid {
                charset: "utf-8",
                offset: raw.len() - 1
            }
        );
    }

    #[test]
    fn ascii_refuses_high_bytes() {
        let raw = b"MSH|^~\\&|A|B|C|D|1||ADT^A04|1|P|2.5||||||ASCII\rPID|||\xE9";
        assert!(matches!(
            decode(raw, Charset::Utf8),
            Err(CharsetError::Invalid {
                charset: "ascii",
                ..
            })
        ));
    }

    #[test]
    fn unknown_charset_is_unsupported() {
        let raw = b"MSH|^~\\&|A|B|C|D|1||ADT^A04|1|P|2.5||||||KLINGON\r";
        assert_eq!(
            decode(raw, Charset::Utf8),
            Err(CharsetError::Unsupported("KLINGON".into()))
        );
    }

    #[test]
    fn msh18_with_custom_separators() {
        let raw = b"MSH#$~\\&#A#B#C#D#1##ADT$A04#1#P#2.5######UNICODE UTF-8\r";
        assert_eq!(declared_charset(raw).as_deref(), Some("UNICODE UTF-8"));
    }
}
