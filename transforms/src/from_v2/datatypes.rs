//! HL7 v2 composite data types to canonical values: CE/CWE, CX, XPN, XCN, PL, XTN, XAD.
//!
//! These read one repetition ([`RepRef`]) and never fail: an unusable composite is simply
//! absent. Field-level choices (which repetition is primary) live in the family mappings.

use crate::hl7v2::access::{FieldRef, RepRef};
use crate::model::{
    Address, Coded, ContactUse, HumanName, Identifier, IdentifierKind, Location, Phone,
    Practitioner,
};

/// CE/CWE/CNE starting at component `first` (1 for a field that is itself a CE): code, text,
/// coding system. `None` when neither code nor text was sent.
pub fn coded_at(rep: &RepRef<'_, '_>, first: usize) -> Option<Coded> {
    let code = rep.get(first).string();
    let text = rep.get(first + 1).string();
    if code.is_none() && text.is_none() {
        return None;
    }
    Some(Coded {
        code,
        text,
        system: rep.get(first + 2).string(),
    })
}

/// A CE/CWE field (first repetition).
pub fn coded(field: &FieldRef<'_, '_>) -> Option<Coded> {
    coded_at(&field.rep(1), 1)
}

/// Identifier kind from a CX-5 identifier type code (HL7 table 0203).
pub fn identifier_kind(type_code: Option<&str>) -> IdentifierKind {
    match type_code.map(str::to_ascii_uppercase).as_deref() {
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
    let value = rep.get(1).string()?;
    let type_code = rep.get(5).string();
    let kind = match type_code.as_deref() {
        None => default,
        code => identifier_kind(code),
    };
    Some(Identifier {
        value,
        kind,
        type_code,
        assigning_authority: rep.get_sub(4, 1).string(),
    })
}

/// XPN name parts starting at component `first` (1 for XPN, 2 for XCN): family (first
/// subcomponent of FN), given, further given names, suffix, prefix.
pub fn name_at(rep: &RepRef<'_, '_>, first: usize) -> HumanName {
    let mut name = HumanName {
        family: rep.get_sub(first, 1).string(),
        given: rep.get(first + 1).string(),
        middle: rep.get(first + 2).string(),
        suffix: rep.get(first + 3).string(),
        prefix: rep.get(first + 4).string(),
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
        .any(|p| p.chars().any(is_arabic))
        .then_some("ar")
}

/// A practitioner from an XCN field. All repetitions describe the same person with different
/// identifiers (HL7 v2.5 PV1-7: "multiple names and identifiers for the same physician may be
/// sent"): XCN-13 (table 0203) `LN`/`MD`/`LI`/`SL` gives the licence number, `PRN` (provider
/// number), `NPI`, `RN`, `MCN`, `UPIN`, `DEA` a registration number, anything else (`DN`
/// doctor number, `EI`, nothing) the HIS code; the first non-empty name wins.
pub fn practitioner(field: &FieldRef<'_, '_>) -> Option<Practitioner> {
    let mut p = Practitioner::default();
    for rep in field.reps() {
        let id = rep.get(1).string();
        match rep.get(13).text().map(str::to_ascii_uppercase).as_deref() {
            Some("LN" | "MD" | "LI" | "SL") => {
                p.licence_number = p.licence_number.take().or(id);
            }
            Some("RN" | "NPI" | "PRN" | "MCN" | "UPIN" | "DEA") => {
                p.registration_number = p.registration_number.take().or(id);
            }
            _ => p.code = p.code.take().or(id),
        }
        if p.name.is_empty() {
            p.name = name_at(&rep, 2);
        }
    }
    (!p.is_empty()).then_some(p)
}

/// PL: point of care, room, bed, facility (HD-1), building, floor, description.
pub fn location(rep: &RepRef<'_, '_>) -> Option<Location> {
    let loc = Location {
        code: rep.get(1).string(),
        room: rep.get(2).string(),
        bed: rep.get(3).string(),
        branch: rep.get_sub(4, 1).string(),
        building: rep.get(7).string(),
        floor: rep.get(8).string(),
        name: rep.get(9).string(),
        specialisation: None,
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
    let use_code = rep.get(2).text().map(str::to_ascii_uppercase);
    let equipment = rep.get(3).text().map(str::to_ascii_uppercase);
    let email = rep.get(4).string();
    if use_code.as_deref() == Some("NET")
        || matches!(equipment.as_deref(), Some("INTERNET" | "X.400"))
    {
        return email.map(Telecom::Email);
    }
    let number = rep
        .get(12)
        .string()
        .or_else(|| rep.get(1).string())
        .or_else(|| {
            let local = rep.get(7).string()?;
            let mut n = String::new();
            if let Some(cc) = rep.get(5).string() {
                n.push('+');
                n.push_str(cc.trim_start_matches('+'));
                n.push(' ');
            }
            if let Some(area) = rep.get(6).string() {
                n.push_str(&area);
                n.push(' ');
            }
            n.push_str(&local);
            if let Some(ext) = rep.get(8).string() {
                n.push_str(" x");
                n.push_str(&ext);
            }
            Some(n)
        });
    let Some(number) = number else {
        return email.map(Telecom::Email);
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
    let lines = [rep.get_sub(1, 1).string(), rep.get(2).string()]
        .into_iter()
        .flatten()
        .collect();
    let use_ = match rep.get(7).text().map(str::to_ascii_uppercase).as_deref() {
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
