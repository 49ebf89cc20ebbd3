//! HL7 v2 date and time (DT, DTM, TS): `YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]`.
//!
//! The result is a [`Timestamp`] that keeps the precision sent and the offset when given.
//! Tolerated beyond the standard: up to 9 fraction digits (some senders emit microseconds) and
//! surrounding spaces. An offset after a date without time is dropped (a day has no time zone;
//! this happens on birth dates from some HIS). In a TS with components (v2.3 `TS-2` degree of
//! precision) pass only the first component.

use crate::model::{Precision, Timestamp, TimestampError};

/// Parses HL7 DT/DTM/TS text.
///
/// ```
/// use transforms::hl7v2::datetime::parse;
/// use transforms::model::Precision;
/// let t = parse("202606151030+0300").unwrap();
/// assert_eq!(t.to_iso(), "2026-06-15T10:30+03:00");
/// assert_eq!(t.precision(), Precision::Minute);
/// assert_eq!(parse("19940920").unwrap().to_iso(), "1994-09-20");
/// assert_eq!(parse("20260615103005.25").unwrap().to_iso(), "2026-06-15T10:30:05.25");
/// assert!(parse("20260231").is_err());
/// ```
///
/// # Errors
/// [`TimestampError`] when the text is not a valid HL7 date/time (wrong length, letters,
/// impossible date). The error never contains the text.
pub fn parse(text: &str) -> Result<Timestamp, TimestampError> {
    // Byte searches: the markers are ASCII, so the splits fall on character boundaries.
    let text = match text.as_bytes() {
        [first, .., last] if first.is_ascii_digit() && last.is_ascii_digit() => text,
        _ => text.trim(),
    };
    let (body, offset) = match text.bytes().position(|b| b == b'+' || b == b'-') {
        Some(i) => (&text[..i], Some(parse_offset(&text[i..])?)),
        None => (text, None),
    };
    // One scan: the digits end at the first non-digit, which must be the fraction's dot.
    let end = body
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(body.len());
    let (digits, fraction) = match body.as_bytes().get(end) {
        None => (body, None),
        Some(b'.') => (&body[..end], Some(&body[end + 1..])),
        Some(_) => return Err(TimestampError::Malformed("non-digit in date/time")),
    };
    let precision = match digits.len() {
        4 => Precision::Year,
        6 => Precision::Month,
        8 => Precision::Day,
        10 => Precision::Hour,
        12 => Precision::Minute,
        14 => Precision::Second,
        _ => return Err(TimestampError::Malformed("length of date/time")),
    };
    // Every byte is an ASCII digit (checked above): the two digits at `at`, 0 past the end.
    let d = digits.as_bytes();
    let n = |at: usize| -> u8 {
        match d.get(at..at + 2) {
            Some([a, b]) => (a - b'0') * 10 + (b - b'0'),
            _ => 0,
        }
    };
    let year = i32::from(n(0)) * 100 + i32::from(n(2));
    let (month, day) = (n(4).max(1), n(6).max(1));
    if precision >= Precision::Month && n(4) == 0 || precision >= Precision::Day && n(6) == 0 {
        return Err(TimestampError::OutOfRange("date"));
    }
    let (precision, nanos, frac_digits) = match fraction {
        Some(f) if precision == Precision::Second => {
            let (nanos, d) = crate::model::parse_fraction(f)?;
            (Precision::Fraction, nanos, d)
        }
        Some(_) => return Err(TimestampError::Malformed("fraction without seconds")),
        None => (precision, 0, 0),
    };
    let offset = if precision >= Precision::Hour {
        offset
    } else {
        None
    };
    Timestamp::from_parts(
        precision,
        year,
        month,
        day,
        n(8),
        n(10),
        n(12),
        nanos,
        frac_digits,
        offset,
    )
}

fn parse_offset(text: &str) -> Result<i16, TimestampError> {
    let sign: i16 = if text.starts_with('-') { -1 } else { 1 };
    let [h1, h2, m1, m2] = text.as_bytes()[1..] else {
        return Err(TimestampError::Malformed("utc offset"));
    };
    if ![h1, h2, m1, m2].iter().all(u8::is_ascii_digit) {
        return Err(TimestampError::Malformed("utc offset"));
    }
    let two = |a: u8, b: u8| i16::from(a - b'0') * 10 + i16::from(b - b'0');
    let (h, m) = (two(h1, h2), two(m1, m2));
    if m > 59 {
        return Err(TimestampError::OutOfRange("utc offset"));
    }
    Ok(sign * (h * 60 + m))
}

/// Formats a timestamp as HL7 DTM at its own precision, e.g. `202606151030+0300`.
///
/// ```
/// use transforms::hl7v2::datetime::{format, parse};
/// for text in ["1994", "19940920", "202606151030+0300", "20260615103005.1234-0500"] {
///     assert_eq!(format(&parse(text).unwrap()), text);
/// }
/// ```
pub fn format(ts: &Timestamp) -> String {
    let iso = ts.to_iso();
    // The ISO form holds the same digits with separators; the offset needs its colon removed.
    let (body, offset) = match iso.get(10..).and_then(|t| t.find(['+', '-'])) {
        Some(i) => iso.split_at(10 + i),
        None => (iso.as_str(), ""),
    };
    let mut out: String = body
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    out.extend(offset.chars().filter(|c| *c != ':'));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_precision_parses() {
        for (hl7, iso) in [
            ("2026", "2026"),
            ("202606", "2026-06"),
            ("20260615", "2026-06-15"),
            ("2026061510", "2026-06-15T10"),
            ("202606151030", "2026-06-15T10:30"),
            ("20260615103059", "2026-06-15T10:30:59"),
            ("20260615103059.1", "2026-06-15T10:30:59.1"),
            ("20260615103059.1234+0000", "2026-06-15T10:30:59.1234+00:00"),
            (" 20260615103059-0330 ", "2026-06-15T10:30:59-03:30"),
            // A zone on a date alone is dropped.
            ("19940920+0300", "1994-09-20"),
        ] {
            assert_eq!(parse(hl7).expect(hl7).to_iso(), iso, "{hl7}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "20",
            "2026061",
            "2026-06-15",
            "20261301",
            "20260600",
            "2026061525",
            "202606151060",
            "20260615.5",
            "20260615103000+03",
            "2026061510300a",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// Which check rejects a text: the offset is read before the digits, the digits end at
    /// the fraction's dot.
    #[test]
    fn says_why() {
        use TimestampError::{Malformed, OutOfRange};
        for (bad, why) in [
            ("2026a+03", Malformed("utc offset")),
            ("2026a+0300", Malformed("non-digit in date/time")),
            ("2026+03a0", Malformed("utc offset")),
            ("20260615103000+0360", OutOfRange("utc offset")),
            ("2026.5", Malformed("fraction without seconds")),
            ("20260615103000.5x", Malformed("fraction")),
            ("2026x.5", Malformed("non-digit in date/time")),
        ] {
            assert_eq!(parse(bad), Err(why), "{bad:?}");
        }
        let west = parse("20260615103000-0530").expect("offset");
        assert_eq!(west.to_iso(), "2026-06-15T10:30:00-05:30");
    }
}
