//! HL7 v2 escape sequences: decoding field text for use, encoding text for a message.
//!
//! Supported when decoding (HL7 v2.5 section 2.7): `\F\ \S\ \T\ \R\ \E\` (the separators and the
//! escape character), `\Xhh…\` (bytes in hex, read as UTF-8 when they form valid UTF-8, else as
//! Latin-1), `\.br\` and `\.sp\` (line break), `\H\ \N\` (highlighting on/off, dropped), other
//! formatting commands (`\.in\`, `\.ti\`, `\.sk\`, `\.ce\`, `\.fi\`, `\.nf\`), character set
//! switches (`\Cxxyy\`, `\Mxxyyzz\`) and locally defined `\Z…\` escapes (all dropped: they
//! change presentation, not content). An escape character without a closing one is kept as
//! text, since dropping the rest of a field would lose data.

use std::borrow::Cow;

use hl7_parser::message::Separators;

/// Decodes the escape sequences of one element's text (a subcomponent, or a larger element
/// whose separators should stay literal).
///
/// Borrows when the text has no escape character, which is the common case.
///
/// ```
/// use hl7_parser::message::Separators;
/// use transforms::hl7v2::escape::decode;
/// let seps = Separators::default();
/// assert_eq!(decode(r"A\T\E \F\ pipe", &seps), "A&E | pipe");
/// assert_eq!(decode(r"line 1\.br\line 2", &seps), "line 1\nline 2");
/// assert_eq!(decode(r"Ren\XC3A9\", &seps), "René");
/// assert_eq!(decode(r"\H\bold\N\", &seps), "bold");
/// ```
pub fn decode<'a>(raw: &'a str, seps: &Separators) -> Cow<'a, str> {
    let esc = seps.escape;
    // Separators are ASCII (checked when MSH-2 is read); a byte loop beats a search call on
    // values this short.
    let present = if esc.is_ascii() {
        raw.bytes().any(|b| b == esc as u8)
    } else {
        raw.contains(esc)
    };
    if !present {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find(esc) {
        out.push_str(&rest[..start]);
        let after = &rest[start + esc.len_utf8()..];
        let Some(end) = after.find(esc) else {
            // Unterminated: keep the escape character and the rest as text.
            out.push_str(&rest[start..]);
            return Cow::Owned(out);
        };
        let body = &after[..end];
        apply(body, seps, &mut out);
        rest = &after[end + esc.len_utf8()..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

fn apply(body: &str, seps: &Separators, out: &mut String) {
    match body {
        "F" => out.push(seps.field),
        "S" => out.push(seps.component),
        "T" => out.push(seps.subcomponent),
        "R" => out.push(seps.repetition),
        "E" => out.push(seps.escape),
        "H" | "N" => {}
        ".br" => out.push('\n'),
        _ if body.starts_with(".sp") => {
            // `.sp<n>`: n line breaks (default 1).
            let n = body[3..].trim().parse::<usize>().unwrap_or(1).clamp(1, 16);
            out.extend(std::iter::repeat_n('\n', n));
        }
        _ if body.starts_with('X') || body.starts_with('x') => push_hex(&body[1..], out),
        // Formatting (.in .ti .sk .ce .fi .nf), charset switches (C, M) and local (Z) escapes
        // change presentation only.
        _ => {}
    }
}

fn push_hex(hex: &str, out: &mut String) {
    if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return;
    }
    let bytes: Vec<u8> = hex
        .as_bytes()
        .chunks(2)
        .map(|pair| (hex_val(pair[0]) << 4) | hex_val(pair[1]))
        .collect();
    match std::str::from_utf8(&bytes) {
        Ok(s) => out.push_str(s),
        // Not UTF-8: the common legacy case is Latin-1 (ISO 8859-1), where every byte is the
        // code point of the same value.
        Err(_) => out.extend(bytes.iter().map(|&b| char::from(b))),
    }
}

fn hex_val(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// Escapes text for use as one element value: the separators and the escape character become
/// `\F\ \S\ \T\ \R\ \E\`, carriage return and line feed become `\X0D\` and `\X0A\`.
///
/// [`decode`] of the result gives the text back.
///
/// ```
/// use hl7_parser::message::Separators;
/// use transforms::hl7v2::escape::{decode, encode};
/// let seps = Separators::default();
/// assert_eq!(encode("A&E|x^y", &seps), r"A\T\E\F\x\S\y");
/// assert_eq!(decode(&encode("a\\b~c\n", &seps), &seps), "a\\b~c\n");
/// ```
pub fn encode<'a>(text: &'a str, seps: &Separators) -> Cow<'a, str> {
    let special = |c: char| {
        c == seps.field
            || c == seps.component
            || c == seps.subcomponent
            || c == seps.repetition
            || c == seps.escape
            || c == '\r'
            || c == '\n'
    };
    if !text.contains(special) {
        return Cow::Borrowed(text);
    }
    let e = seps.escape;
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        let code = match c {
            _ if c == seps.field => "F",
            _ if c == seps.component => "S",
            _ if c == seps.subcomponent => "T",
            _ if c == seps.repetition => "R",
            _ if c == e => "E",
            '\r' => "X0D",
            '\n' => "X0A",
            _ => {
                out.push(c);
                continue;
            }
        };
        out.push(e);
        out.push_str(code);
        out.push(e);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_separator_and_keeps_plain_text_borrowed() {
        let seps = Separators::default();
        assert_eq!(decode(r"\F\\S\\T\\R\\E\", &seps), r"|^&~\");
        assert!(matches!(decode("plain text", &seps), Cow::Borrowed(_)));
    }

    #[test]
    fn hex_is_utf8_when_valid_else_latin1() {
        let seps = Separators::default();
        assert_eq!(decode(r"\XD985D8AD\", &seps), "مح");
        assert_eq!(decode(r"Jos\XE9\", &seps), "José");
        assert_eq!(decode(r"a\X0D0A\b", &seps), "a\r\nb");
        // Malformed hex is dropped rather than guessed.
        assert_eq!(decode(r"a\XZZ\b", &seps), "ab");
    }

    #[test]
    fn custom_escape_character_and_unterminated_escape() {
        let seps = Separators {
            field: '#',
            component: '$',
            subcomponent: '%',
            repetition: '*',
            escape: '!',
            lenient_newlines: true,
        };
        assert_eq!(decode("a!F!b!S!c!T!d", &seps), "a#b$c%d");
        assert_eq!(decode("50!percent", &seps), "50!percent");
        assert_eq!(encode("a#b", &seps), "a!F!b");
    }

    #[test]
    fn formatting_commands() {
        let seps = Separators::default();
        assert_eq!(decode(r"a\.sp2\b\.in+4\c\.ce\d", &seps), "a\n\nbcd");
        assert_eq!(decode(r"\C2842\abc\C2D42\", &seps), "abc");
    }
}
