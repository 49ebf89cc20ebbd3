//! HL7 v2 composite data types to canonical values: CE/CWE, CX, XPN, XCN, PL, XTN, XAD.
//!
//! These read one repetition ([`RepRef`]) and never fail: an unusable composite is simply
//! absent. Field-level choices (which repetition is primary) live in the family mappings.

use crate::hl7v2::access::{Components, FieldRef, RepRef};
use crate::model::{
    Address, Coded, ContactUse, HumanName, Identifier, IdentifierKind, Location, Phone,
    Practitioner,
};

/// CE/CWE/CNE starting at component `first` (1 for a field that is itself a CE): code, text,
/// coding system. `None` when neither code nor text was sent.
pub fn coded_at(rep: &RepRef<'_, '_>, first: usize) -> Option<Coded> {
    let parts = rep.components();
    let code = parts.get(first).string();
    let text = parts.get(first + 1).string();
    if code.is_none() && text.is_none() {
        return None;
    }
    Some(Coded {
        code,
        text,
        system: parts.get(first + 2).string(),
    })
}

/// A CE/CWE field (first repetition).
#[inline]
pub fn coded(field: &FieldRef<'_, '_>) -> Option<Coded> {
    // Most coded fields of a segment are empty: no repetition split for them.
    if field.is_empty() {
        return None;
    }
    coded_at(&field.rep(1), 1)
}

/// Identifier kind from a CX-5 identifier type code (HL7 table 0203).
pub fn identifier_kind(type_code: Option<&str>) -> IdentifierKind {
    match type_code.map(UpperCode::new).as_deref() {
        Some("MR") => IdentifierKind::Mrn,
        Some("PI" | "PN" | "PT") => IdentifierKind::PatientNumber,
        Some("NI" | "NH" | "SS" | "SB" | "CZ" | "NNxxx") => IdentifierKind::NationalId,
        // NN + ISO 3166 country code: a national person identifier of that country (NNSAU).
        Some(c) if c.len() == 5 && c.starts_with("NN") => IdentifierKind::NationalId,
        Some("PPN") => IdentifierKind::Passport,
        Some("AN") => IdentifierKind::AccountNumber,
        _ => IdentifierKind::Other,
    }
}

/// CX: CX-1 value, CX-4.1 assigning authority namespace, CX-5 type code. `default` is the kind
/// when CX-5 is empty.
pub fn identifier(rep: &RepRef<'_, '_>, default: IdentifierKind) -> Option<Identifier> {
    let parts = rep.components();
    // Read in component order: `Components` then scans the repetition once.
    let value = parts.get(1).string()?;
    let assigning_authority = parts.get_sub(4, 1).string();
    let type_code = parts.get(5).string();
    let kind = match type_code.as_deref() {
        None => default,
        code => identifier_kind(code),
    };
    Some(Identifier {
        value,
        kind,
        type_code,
        assigning_authority,
    })
}

/// XPN name parts starting at component `first` (1 for XPN, 2 for XCN): family (first
/// subcomponent of FN), given, further given names, suffix, prefix.
pub fn name_at(rep: &RepRef<'_, '_>, first: usize) -> HumanName {
    name_in(&rep.components(), first)
}

/// [`name_at`] on a repetition already split.
fn name_in(parts: &Components<'_, '_>, first: usize) -> HumanName {
    let mut name = HumanName {
        family: parts.get_sub(first, 1).string(),
        given: parts.get(first + 1).string(),
        middle: parts.get(first + 2).string(),
        suffix: parts.get(first + 3).string(),
        prefix: parts.get(first + 4).string(),
        language: None,
    };
    name.language = script_language(&name).map(str::to_owned);
    name
}

/// `ar` when the name is written in Arabic script. Used to tell a second-language name from
/// the primary one; other scripts can be added here when a site needs them.
pub fn script_language(name: &HumanName) -> Option<&'static str> {
    let is_arabic = |c: char| {
        matches!(c, '\u{0600}'..='\u{06FF}' | '\u{0750}'..='\u{077F}' | '\u{08A0}'..='\u{08FF}'
            | '\u{FB50}'..='\u{FDFF}' | '\u{FE70}'..='\u{FEFF}')
    };
    let parts = [&name.family, &name.given, &name.middle];
    parts
        .into_iter()
        .flatten()
        .any(|p| !p.is_ascii() && p.chars().any(is_arabic))
        .then_some("ar")
}

/// A practitioner from an XCN field. All repetitions describe the same person with different
/// identifiers (HL7 v2.5 PV1-7: "multiple names and identifiers for the same physician may be
/// sent"): XCN-13 (table 0203) `LN`/`MD`/`LI`/`SL` gives the licence number, `PRN` (provider
/// number), `NPI`, `RN`, `MCN`, `UPIN`, `DEA` a registration number, anything else (`DN`
/// doctor number, `EI`, nothing) the HIS code; the first non-empty name wins.
pub fn practitioner(field: &FieldRef<'_, '_>) -> Option<Practitioner> {
    practitioner_of(field.reps())
}

/// A practitioner from XCN repetitions that describe one person (see [`practitioner`]); one
/// repetition alone for fields whose repetitions are different people (PV1-9 consulting).
pub fn practitioner_of<'s, 'm: 's>(
    reps: impl IntoIterator<Item = RepRef<'s, 'm>>,
) -> Option<Practitioner> {
    let mut p = Practitioner::default();
    for rep in reps {
        let parts = rep.components();
        let id = parts.get(1).string();
        match parts.get(13).text().map(UpperCode::new).as_deref() {
            Some("LN" | "MD" | "LI" | "SL") => {
                p.licence_number = p.licence_number.take().or(id);
            }
            Some("RN" | "NPI" | "PRN" | "MCN" | "UPIN" | "DEA") => {
                p.registration_number = p.registration_number.take().or(id);
            }
            _ => p.code = p.code.take().or(id),
        }
        if p.name.is_empty() {
            p.name = name_in(&parts, 2);
        }
    }
    (!p.is_empty()).then_some(p)
}

/// PL: point of care, room, bed, facility (HD-1), building, floor, description.
pub fn location(rep: &RepRef<'_, '_>) -> Option<Location> {
    let parts = rep.components();
    let loc = Location {
        code: parts.get(1).string(),
        room: parts.get(2).string(),
        bed: parts.get(3).string(),
        branch: parts.get_sub(4, 1).string(),
        building: parts.get(7).string(),
        floor: parts.get(8).string(),
        name: parts.get(9).string(),
        ..Location::default()
    };
    (!loc.is_empty()).then_some(loc)
}

/// What one XTN repetition holds: a phone number or an e-mail address.
pub enum Telecom {
    /// A telephone number.
    Phone(Phone),
    /// An e-mail address (XTN-4).
    Email(String),
}

/// XTN: XTN-2 use code (table 0201), XTN-3 equipment (table 0202), XTN-4 e-mail, number from
/// XTN-12 (unformatted, v2.5+), else XTN-1 (formatted, deprecated in v2.7), else assembled
/// from XTN-5 country, XTN-6 area, XTN-7 local and XTN-8 extension. `default_use` applies when
/// neither XTN-2 nor XTN-3 tells.
pub fn telecom(rep: &RepRef<'_, '_>, default_use: Option<ContactUse>) -> Option<Telecom> {
    telecom_in(&rep.components(), default_use)
}

/// [`telecom`] on a repetition already split, for a caller that reads more of it (XTN-4).
pub(crate) fn telecom_in(
    rep: &Components<'_, '_>,
    default_use: Option<ContactUse>,
) -> Option<Telecom> {
    let (use_code, equipment) = (rep.get(2), rep.get(3));
    let use_code = use_code.text().map(UpperCode::new);
    let equipment = equipment.text().map(UpperCode::new);
    let email = rep.get(4);
    let email = || email.string().map(Telecom::Email);
    if use_code.as_deref() == Some("NET")
        || matches!(equipment.as_deref(), Some("INTERNET" | "X.400"))
    {
        return email();
    }
    let number = rep
        .get(12)
        .string()
        .or_else(|| rep.get(1).string())
        .or_else(|| {
            // The parts are borrowed and the number is allocated once, at its final size.
            let (cc, area, local, ext) = (rep.get(5), rep.get(6), rep.get(7), rep.get(8));
            let local = local.trimmed()?;
            let cc = cc.trimmed().map(|c| c.trim_start_matches('+'));
            let (area, ext) = (area.trimmed(), ext.trimmed());
            let len = |part: Option<&str>, extra: usize| part.map_or(0, |p| p.len() + extra);
            let mut n =
                String::with_capacity(len(cc, 2) + len(area, 1) + local.len() + len(ext, 2));
            if let Some(cc) = cc {
                n.push('+');
                n.push_str(cc);
                n.push(' ');
            }
            if let Some(area) = area {
                n.push_str(area);
                n.push(' ');
            }
            n.push_str(local);
            if let Some(ext) = ext {
                n.push_str(" x");
                n.push_str(ext);
            }
            Some(n)
        });
    let Some(number) = number else {
        return email();
    };
    let use_ = match (equipment.as_deref(), use_code.as_deref()) {
        (Some("CP" | "BP"), _) => Some(ContactUse::Mobile),
        (_, Some("WPN")) => Some(ContactUse::Work),
        (_, Some("PRN" | "ORN" | "VHN")) => Some(ContactUse::Home),
        (_, Some("EMR")) => Some(ContactUse::Emergency),
        (_, Some(_)) => Some(ContactUse::Other),
        _ => default_use,
    };
    Some(Telecom::Phone(Phone { number, use_ }))
}

/// XAD: street (SAD-1), other designation, city, state, postal code, country, type (table
/// 0190), county/district (XAD-9).
pub fn address(rep: &RepRef<'_, '_>) -> Option<Address> {
    let rep = rep.components();
    let lines = [rep.get_sub(1, 1).string(), rep.get(2).string()]
        .into_iter()
        .flatten()
        .collect();
    let use_ = match rep.get(7).text().map(UpperCode::new).as_deref() {
        Some("H" | "P" | "L" | "M") => Some(ContactUse::Home),
        Some("B" | "O") => Some(ContactUse::Work),
        Some(_) => Some(ContactUse::Other),
        None => None,
    };
    let addr = Address {
        lines,
        city: rep.get(3).string(),
        state: rep.get(4).string(),
        postal_code: rep.get(5).string(),
        country: rep.get(6).string(),
        district: rep.get(9).string(),
        use_,
    };
    (!addr.is_empty()).then_some(addr)
}

/// A code in ASCII upper case, for matching against an HL7 table without allocating
/// (`str::to_ascii_uppercase` allocates a `String` for each): the code itself when it has no
/// lower-case letter (the usual case), else an upper-cased copy on the stack.
pub(crate) struct UpperCode<'a> {
    /// The code, when already upper case.
    same: Option<&'a str>,
    buf: [u8; UpperCode::MAX],
    len: usize,
}

impl<'a> UpperCode<'a> {
    /// Longer than any code the mappings match (`INTERNET`, 8 bytes).
    const MAX: usize = 16;

    /// `code` upper-cased. A code with lower-case letters longer than [`Self::MAX`] matches
    /// no table, so it is kept as `"\u{0}"`, which no table holds either.
    pub(crate) fn new(code: &'a str) -> Self {
        let mut out = Self {
            same: None,
            buf: [0; Self::MAX],
            len: 1,
        };
        if !code.bytes().any(|b| b.is_ascii_lowercase()) {
            out.same = Some(code);
        } else if let Some(dst) = out.buf.get_mut(..code.len()) {
            dst.copy_from_slice(code.as_bytes());
            dst.make_ascii_uppercase();
            out.len = code.len();
        }
        out
    }

    /// The upper-cased code.
    pub(crate) fn as_str(&self) -> &str {
        match self.same {
            Some(code) => code,
            // Upper-casing ASCII bytes of valid UTF-8 keeps it valid; the fallback is
            // unreachable.
            None => std::str::from_utf8(&self.buf[..self.len]).unwrap_or("\u{0}"),
        }
    }
}

impl std::ops::Deref for UpperCode<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}
