//! Small value types shared by the entities: codes, names, addresses, phones, decimals.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A coded value (HL7 CE/CWE/CNE, FHIR Coding): code, display text and coding system.
///
/// JSON: `{"code": "CBC", "text": "Complete blood count", "system": "L"}`; any part may be
/// absent, but a `Coded` with neither code nor text is never produced by the mappings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Coded {
    /// The code (CE-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Human-readable text (CE-2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The coding system (CE-3), e.g. `LN` for LOINC, `I10` for ICD-10, `L` for local.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
}

impl Coded {
    /// The text if given, otherwise the code.
    pub fn label(&self) -> Option<&str> {
        self.text.as_deref().or(self.code.as_deref())
    }
}

/// A person's name in parts. Which repetition became the primary name and which the
/// second-language name is decided by the mapping (see `from_v2::adt`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HumanName {
    /// Family name (XPN-1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// First given name (XPN-2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given: Option<String>,
    /// Second and further given names or initials (XPN-3), e.g. a father's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub middle: Option<String>,
    /// Prefix such as `Dr` (XPN-5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Suffix such as `Jr` (XPN-4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// BCP 47 language tag when the script tells it (`ar` for Arabic script).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

impl HumanName {
    /// True when no part is present.
    pub fn is_empty(&self) -> bool {
        self.family.is_none()
            && self.given.is_none()
            && self.middle.is_none()
            && self.prefix.is_none()
            && self.suffix.is_none()
    }

    /// The name as one line: prefix, given, middle, family, suffix, separated by spaces.
    ///
    /// ```
    /// use transforms::model::HumanName;
    /// let n = HumanName {
    ///     family: Some("Khalid".into()),
    ///     given: Some("Yousef".into()),
    ///     middle: Some("Bin".into()),
    ///     ..HumanName::default()
    /// };
    /// assert_eq!(n.full(), "Yousef Bin Khalid");
    /// ```
    pub fn full(&self) -> String {
        [
            &self.prefix,
            &self.given,
            &self.middle,
            &self.family,
            &self.suffix,
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ")
    }
}

/// What a phone number or address is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactUse {
    /// Home (XTN-2 `PRN`, `ORN`, `VHN`; XAD-7 `H`).
    Home,
    /// Work (XTN-2 `WPN`; XAD-7 `B`, `O`).
    Work,
    /// Mobile (XTN-3 `CP`, `BP`).
    Mobile,
    /// Emergency contact number (XTN-2 `EMR`).
    Emergency,
    /// Anything else.
    Other,
}

/// A telephone number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Phone {
    /// The number as sent (XTN-1 / XTN-12, or XTN-5/6/7 assembled as `+CC AAA LLLLLLL`).
    pub number: String,
    /// What it is for, when the sender says.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<ContactUse>,
}

/// A postal address (HL7 XAD).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Address {
    /// Street lines (XAD-1, XAD-2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<String>,
    /// City (XAD-3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// State or province (XAD-4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Postal code (XAD-5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// Country (XAD-6), usually ISO 3166 alpha-3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// District or county (XAD-9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district: Option<String>,
    /// What the address is for (XAD-7).
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<ContactUse>,
}

impl Address {
    /// True when no part is present.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
            && self.city.is_none()
            && self.state.is_none()
            && self.postal_code.is_none()
            && self.country.is_none()
            && self.district.is_none()
    }
}

/// Why a decimal was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    /// Not of the form `[+-]digits[.digits]`.
    #[error("not a decimal number")]
    Malformed,
}

/// An exact decimal number kept as text: money amounts and quantities without float rounding.
///
/// Accepted input is HL7 NM: optional sign, digits, optional point and digits (`"150.00"`,
/// `"-2"`, `".5"`, `"+3."`). The stored form is normalised: no `+`, a leading `0` before a bare
/// point, no trailing bare point, `-0` as `0`; trailing zeros are kept (`"150.00"` stays, the
/// scale of a money amount carries meaning). JSON: a string.
///
/// ```
/// use transforms::model::Decimal;
/// assert_eq!(Decimal::parse("+.50").unwrap().as_str(), "0.50");
/// assert_eq!(Decimal::parse("-12.5").unwrap().negated().as_str(), "12.5");
/// assert!(Decimal::parse("1e5").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Decimal(String);

impl Decimal {
    /// Parses and normalises HL7 NM text (surrounding spaces allowed).
    ///
    /// # Errors
    /// [`DecimalError::Malformed`] when the text is not a plain decimal number.
    pub fn parse(text: &str) -> Result<Self, DecimalError> {
        let t = text.trim();
        let (neg, body) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        let (int, frac) = match body.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (body, None),
        };
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        let frac = frac.filter(|f| !f.is_empty());
        if !digits(int) || !frac.is_none_or(digits) || (int.is_empty() && frac.is_none()) {
            return Err(DecimalError::Malformed);
        }
        let int = int.trim_start_matches('0');
        let int = if int.is_empty() { "0" } else { int };
        let is_zero = int == "0" && frac.is_none_or(|f| f.bytes().all(|b| b == b'0'));
        let mut out = String::with_capacity(t.len() + 1);
        if neg && !is_zero {
            out.push('-');
        }
        out.push_str(int);
        if let Some(f) = frac {
            out.push('.');
            out.push_str(f);
        }
        Ok(Self(out))
    }

    /// The normalised text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the number is below zero.
    pub fn is_negative(&self) -> bool {
        self.0.starts_with('-')
    }

    /// The number with its sign flipped (zero stays zero).
    pub fn negated(&self) -> Self {
        match self.0.strip_prefix('-') {
            Some(abs) => Self(abs.to_owned()),
            None if self.0.bytes().all(|b| b == b'0' || b == b'.') => self.clone(),
            None => Self(format!("-{}", self.0)),
        }
    }

    /// The value in minor units for a currency with `scale` decimals (2 for SAR, USD, EUR),
    /// or `None` when it has more decimals than the scale or does not fit in an `i64`.
    ///
    /// ```
    /// use transforms::model::Decimal;
    /// assert_eq!(Decimal::parse("150.5").unwrap().to_minor_units(2), Some(15050));
    /// assert_eq!(Decimal::parse("1.005").unwrap().to_minor_units(2), None);
    /// ```
    pub fn to_minor_units(&self, scale: u32) -> Option<i64> {
        let (neg, abs) = match self.0.strip_prefix('-') {
            Some(a) => (true, a),
            None => (false, self.0.as_str()),
        };
        let (int, frac) = abs.split_once('.').unwrap_or((abs, ""));
        let frac = frac.trim_end_matches('0');
        if frac.len() > scale as usize {
            return None;
        }
        let mut digits = String::with_capacity(int.len() + scale as usize);
        digits.push_str(int);
        digits.push_str(frac);
        for _ in frac.len()..scale as usize {
            digits.push('0');
        }
        let v: i64 = digits.parse().ok()?;
        Some(if neg { -v } else { v })
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Decimal> for String {
    fn from(value: Decimal) -> Self {
        value.0
    }
}

impl TryFrom<String> for Decimal {
    type Error = DecimalError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_normalises_and_rejects() {
        for (input, out) in [
            ("150.00", "150.00"),
            ("007", "7"),
            ("-0.00", "0.00"),
            ("5.", "5"),
            (" 12.30 ", "12.30"),
        ] {
            assert_eq!(Decimal::parse(input).expect(input).as_str(), out);
        }
        for bad in ["", "-", ".", "1.2.3", "1,5", "NaN", "12a"] {
            assert!(Decimal::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            Decimal::parse("-150.25").expect("valid").to_minor_units(2),
            Some(-15025)
        );
    }

    #[test]
    fn name_full_skips_missing_parts() {
        let n = HumanName {
            family: Some("Haddad".into()),
            prefix: Some("Dr".into()),
            ..HumanName::default()
        };
        assert_eq!(n.full(), "Dr Haddad");
        assert!(HumanName::default().is_empty());
    }
}
