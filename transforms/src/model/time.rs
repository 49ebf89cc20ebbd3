//! Timestamps that keep the precision they were sent with.

use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// How much of a [`Timestamp`] was given by the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// `YYYY`.
    Year,
    /// `YYYY-MM`.
    Month,
    /// `YYYY-MM-DD`.
    Day,
    /// `YYYY-MM-DDTHH`.
    Hour,
    /// `YYYY-MM-DDTHH:MM`.
    Minute,
    /// `YYYY-MM-DDTHH:MM:SS`.
    Second,
    /// Seconds with a fraction (1 to 9 digits, as sent).
    Fraction,
}

/// Why a timestamp was rejected (the text itself is never included: it may be a birth date).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// The text does not have the shape of the expected format.
    #[error("malformed date/time ({0})")]
    Malformed(&'static str),
    /// A part is out of range (month 13, 30 February, hour 25, offset +2500).
    #[error("date/time out of range ({0})")]
    OutOfRange(&'static str),
}

/// A calendar date and optional time of day with the precision it was sent with, and an
/// optional UTC offset.
///
/// JSON form: an ISO 8601 string of the same precision, e.g. `"1994"`, `"1994-09-20"`,
/// `"2026-06-15T10:30"`, `"2026-06-15T10:30:00.25+03:00"`. HL7 text is parsed by
/// [`crate::hl7v2::datetime`]; [`Timestamp::parse_iso`] reads the JSON form back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Timestamp {
    year: i32,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    /// Fraction of a second in nanoseconds.
    nanos: u32,
    /// Number of fraction digits sent (1..=9), kept so the text round-trips.
    fraction_digits: u8,
    precision: Precision,
    /// Offset from UTC in minutes, when the sender gave one.
    offset_minutes: Option<i16>,
}

impl Timestamp {
    /// Builds a timestamp from parts; parts below `precision` are ignored, and so is the
    /// offset below hour precision (a date has no time zone).
    ///
    /// # Errors
    /// [`TimestampError::OutOfRange`] when the date does not exist or a part is out of range.
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        precision: Precision,
        year: i32,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
        nanos: u32,
        fraction_digits: u8,
        offset_minutes: Option<i16>,
    ) -> Result<Self, TimestampError> {
        if !(0..=9999).contains(&year) {
            return Err(TimestampError::OutOfRange("year"));
        }
        if NaiveDate::from_ymd_opt(year, u32::from(month), u32::from(day)).is_none() {
            return Err(TimestampError::OutOfRange("date"));
        }
        // 60 is allowed for a leap second, as HL7 and ISO 8601 allow it.
        if hour > 23 || minute > 59 || second > 60 || nanos >= 1_000_000_000 {
            return Err(TimestampError::OutOfRange("time"));
        }
        if let Some(off) = offset_minutes {
            if off.abs() > 14 * 60 {
                return Err(TimestampError::OutOfRange("utc offset"));
            }
        }
        let fraction_digits = if precision == Precision::Fraction {
            if !(1..=9).contains(&fraction_digits) {
                return Err(TimestampError::OutOfRange("fraction digits"));
            }
            fraction_digits
        } else {
            0
        };
        let keep = |p: Precision, v: u8, min: u8| if precision >= p { v } else { min };
        Ok(Self {
            year,
            month: keep(Precision::Month, month, 1),
            day: keep(Precision::Day, day, 1),
            hour: keep(Precision::Hour, hour, 0),
            minute: keep(Precision::Minute, minute, 0),
            second: keep(Precision::Second, second, 0),
            nanos: if precision == Precision::Fraction {
                nanos
            } else {
                0
            },
            fraction_digits,
            precision,
            offset_minutes: offset_minutes.filter(|_| precision >= Precision::Hour),
        })
    }

    /// A day-precision date without offset (a birth date, a service date).
    ///
    /// # Errors
    /// [`TimestampError::OutOfRange`] when the date does not exist.
    pub fn date(year: i32, month: u8, day: u8) -> Result<Self, TimestampError> {
        Self::from_parts(Precision::Day, year, month, day, 0, 0, 0, 0, 0, None)
    }

    /// The precision the sender gave.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The same local time with a UTC offset (minutes east of UTC); `Err` below hour
    /// precision (a date has no time zone) or out of range.
    ///
    /// # Errors
    /// [`TimestampError`] as [`Timestamp::from_parts`] gives it.
    pub fn with_offset_minutes(&self, offset_minutes: i16) -> Result<Self, TimestampError> {
        if self.precision < Precision::Hour {
            return Err(TimestampError::Malformed("offset without time"));
        }
        if offset_minutes.abs() > 14 * 60 {
            return Err(TimestampError::OutOfRange("utc offset"));
        }
        Ok(Timestamp {
            offset_minutes: Some(offset_minutes),
            ..*self
        })
    }

    /// The UTC offset in minutes, if the sender gave one.
    pub fn offset_minutes(&self) -> Option<i16> {
        self.offset_minutes
    }

    /// The calendar date (month and day default to 1 below day precision).
    pub fn naive_date(&self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, u32::from(self.month), u32::from(self.day))
            .expect("from_parts validated the date")
    }

    /// The local date and time (missing parts at their minimum).
    pub fn naive_date_time(&self) -> chrono::NaiveDateTime {
        self.naive_date()
            .and_hms_nano_opt(
                u32::from(self.hour),
                u32::from(self.minute),
                u32::from(self.second.min(59)),
                self.nanos,
            )
            .expect("from_parts validated the time")
    }

    /// The instant in UTC when the offset is known.
    pub fn to_utc(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let off = chrono::FixedOffset::east_opt(i32::from(self.offset_minutes?) * 60)?;
        self.naive_date_time()
            .and_local_timezone(off)
            .single()
            .map(|dt| dt.with_timezone(&chrono::Utc))
    }

    /// The date part as `YYYY-MM-DD` (lower precisions padded with `-01`), as most REST
    /// APIs want a birth date or appointment day.
    pub fn date_iso(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// The time of day as `HH:MM:SS` when the timestamp has at least hour precision.
    pub fn time_iso(&self) -> Option<String> {
        (self.precision >= Precision::Hour)
            .then(|| format!("{:02}:{:02}:{:02}", self.hour, self.minute, self.second))
    }

    /// This timestamp moved by a number of minutes, same precision and offset; `None` below
    /// minute precision (a day plus 30 minutes means nothing) or out of range.
    pub fn plus_minutes(&self, minutes: i64) -> Option<Self> {
        if self.precision < Precision::Minute {
            return None;
        }
        let dt = self
            .naive_date_time()
            .checked_add_signed(chrono::Duration::try_minutes(minutes)?)?;
        use chrono::{Datelike, Timelike};
        Self::from_parts(
            self.precision,
            dt.year(),
            dt.month() as u8,
            dt.day() as u8,
            dt.hour() as u8,
            dt.minute() as u8,
            dt.second() as u8,
            dt.nanosecond(),
            self.fraction_digits,
            self.offset_minutes,
        )
        .ok()
    }

    /// Whole minutes from `self` to `later`, when both have at least minute precision and the
    /// same (or no) offset.
    pub fn minutes_until(&self, later: &Timestamp) -> Option<i64> {
        if self.precision < Precision::Minute
            || later.precision < Precision::Minute
            || self.offset_minutes != later.offset_minutes
        {
            return None;
        }
        Some((later.naive_date_time() - self.naive_date_time()).num_minutes())
    }

    /// ISO 8601 text at the precision sent (the JSON form).
    pub fn to_iso(&self) -> String {
        self.to_string()
    }

    /// Parses the ISO 8601 form written by [`Timestamp::to_iso`] (extended format,
    /// reduced precision allowed, offset `Z` or `±HH:MM`).
    ///
    /// ```
    /// use transforms::model::{Precision, Timestamp};
    /// let t = Timestamp::parse_iso("2026-06-15T10:30+03:00").unwrap();
    /// assert_eq!(t.precision(), Precision::Minute);
    /// assert_eq!(t.offset_minutes(), Some(180));
    /// assert_eq!(t.to_iso(), "2026-06-15T10:30+03:00");
    /// ```
    ///
    /// # Errors
    /// [`TimestampError`] when the text is not such a timestamp.
    pub fn parse_iso(text: &str) -> Result<Self, TimestampError> {
        let (body, offset) = split_iso_offset(text)?;
        let (date, time) = match body.split_once('T') {
            Some((d, t)) => (d, Some(t)),
            None => (body, None),
        };
        let mut parts = date.split('-');
        let year = num(parts.next(), 4, "year")?;
        let month = parts.next().map(|m| num(Some(m), 2, "month")).transpose()?;
        let day = parts.next().map(|d| num(Some(d), 2, "day")).transpose()?;
        if parts.next().is_some() || (day.is_some() && month.is_none()) {
            return Err(TimestampError::Malformed("date"));
        }
        let mut precision = match (month, day) {
            (None, _) => Precision::Year,
            (Some(_), None) => Precision::Month,
            (Some(_), Some(_)) => Precision::Day,
        };
        let (mut hour, mut minute, mut second, mut nanos, mut digits) = (0, 0, 0, 0, 0);
        if let Some(time) = time {
            if precision != Precision::Day {
                return Err(TimestampError::Malformed("time without day"));
            }
            let (hms, frac) = match time.split_once('.') {
                Some((a, b)) => (a, Some(b)),
                None => (time, None),
            };
            let mut t = hms.split(':');
            hour = num(t.next(), 2, "hour")?;
            precision = Precision::Hour;
            if let Some(m) = t.next() {
                minute = num(Some(m), 2, "minute")?;
                precision = Precision::Minute;
            }
            if let Some(s) = t.next() {
                second = num(Some(s), 2, "second")?;
                precision = Precision::Second;
            }
            if t.next().is_some() {
                return Err(TimestampError::Malformed("time"));
            }
            if let Some(frac) = frac {
                if precision != Precision::Second {
                    return Err(TimestampError::Malformed("fraction without seconds"));
                }
                (nanos, digits) = parse_fraction(frac)?;
                precision = Precision::Fraction;
            }
        }
        if offset.is_some() && precision < Precision::Hour {
            return Err(TimestampError::Malformed("offset without time"));
        }
        Self::from_parts(
            precision,
            i32::from(year),
            month.unwrap_or(1) as u8,
            day.unwrap_or(1) as u8,
            hour as u8,
            minute as u8,
            second as u8,
            nanos,
            digits,
            offset,
        )
    }
}

/// Parses 1 to 9 fraction digits into nanoseconds and the digit count.
pub(crate) fn parse_fraction(frac: &str) -> Result<(u32, u8), TimestampError> {
    if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TimestampError::Malformed("fraction"));
    }
    let mut nanos: u32 = frac
        .parse()
        .map_err(|_| TimestampError::Malformed("fraction"))?;
    for _ in frac.len()..9 {
        nanos *= 10;
    }
    Ok((nanos, frac.len() as u8))
}

fn num(part: Option<&str>, width: usize, what: &'static str) -> Result<u16, TimestampError> {
    let part = part.ok_or(TimestampError::Malformed(what))?;
    if part.len() != width || !part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TimestampError::Malformed(what));
    }
    part.parse().map_err(|_| TimestampError::Malformed(what))
}

fn split_iso_offset(text: &str) -> Result<(&str, Option<i16>), TimestampError> {
    if let Some(body) = text.strip_suffix('Z') {
        return Ok((body, Some(0)));
    }
    // An offset can only follow a time, so look for the sign after the 'T'.
    let Some(t) = text.find('T') else {
        return Ok((text, None));
    };
    match text[t..].find(['+', '-']) {
        None => Ok((text, None)),
        Some(i) => {
            let (body, off) = text.split_at(t + i);
            let sign: i16 = if off.starts_with('-') { -1 } else { 1 };
            let (h, m) = off[1..]
                .split_once(':')
                .ok_or(TimestampError::Malformed("utc offset"))?;
            let h = num(Some(h), 2, "utc offset")? as i16;
            let m = num(Some(m), 2, "utc offset")? as i16;
            if m > 59 {
                return Err(TimestampError::OutOfRange("utc offset"));
            }
            Ok((body, Some(sign * (h * 60 + m))))
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.year)?;
        if self.precision >= Precision::Month {
            write!(f, "-{:02}", self.month)?;
        }
        if self.precision >= Precision::Day {
            write!(f, "-{:02}", self.day)?;
        }
        if self.precision >= Precision::Hour {
            write!(f, "T{:02}", self.hour)?;
        }
        if self.precision >= Precision::Minute {
            write!(f, ":{:02}", self.minute)?;
        }
        if self.precision >= Precision::Second {
            write!(f, ":{:02}", self.second)?;
        }
        if self.precision == Precision::Fraction {
            let digits = usize::from(self.fraction_digits);
            let all = format!("{:09}", self.nanos);
            write!(f, ".{}", &all[..digits])?;
        }
        if let Some(off) = self.offset_minutes {
            let sign = if off < 0 { '-' } else { '+' };
            let off = off.unsigned_abs();
            write!(f, "{sign}{:02}:{:02}", off / 60, off % 60)?;
        }
        Ok(())
    }
}

impl From<Timestamp> for String {
    fn from(value: Timestamp) -> Self {
        value.to_string()
    }
}

impl TryFrom<String> for Timestamp {
    type Error = TimestampError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse_iso(&value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_round_trips_every_precision() {
        for text in [
            "1994",
            "1994-09",
            "1994-09-20",
            "2026-06-15T10",
            "2026-06-15T10:30",
            "2026-06-15T10:30:05",
            "2026-06-15T10:30:05.1",
            "2026-06-15T10:30:05.123456789-05:30",
            "2026-06-15T10:30Z",
        ] {
            let t = Timestamp::parse_iso(text).expect(text);
            let expected = text.replace('Z', "+00:00");
            assert_eq!(t.to_iso(), expected);
        }
    }

    #[test]
    fn rejects_impossible_dates() {
        assert!(Timestamp::parse_iso("2025-02-29").is_err());
        assert!(Timestamp::parse_iso("2024-13-01").is_err());
        assert!(Timestamp::parse_iso("2024-01-01T24:00").is_err());
        assert!(Timestamp::parse_iso("2024-01-01+03:00").is_err());
        assert!(Timestamp::date(2024, 2, 29).is_ok());
    }

    #[test]
    fn utc_conversion_uses_offset() {
        let t = Timestamp::parse_iso("2026-06-15T10:30:00+03:00").expect("valid");
        assert_eq!(
            t.to_utc().expect("offset known").to_rfc3339(),
            "2026-06-15T07:30:00+00:00"
        );
        assert!(Timestamp::parse_iso("2026-06-15T10:30")
            .expect("valid")
            .to_utc()
            .is_none());
        assert_eq!(t.date_iso(), "2026-06-15");
        assert_eq!(t.time_iso().as_deref(), Some("10:30:00"));
        let end = t.plus_minutes(45).expect("minute precision");
        assert_eq!(end.to_iso(), "2026-06-15T11:15:00+03:00");
        assert_eq!(t.minutes_until(&end), Some(45));
        let day = Timestamp::date(2026, 6, 15).expect("valid");
        assert!(day.plus_minutes(30).is_none());
    }
}
