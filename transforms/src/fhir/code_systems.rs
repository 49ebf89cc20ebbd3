//! HL7 v2 coding system names (CWE-3, HL7 table 0396) <-> FHIR code system URIs.
//!
//! The canonical model keeps the v2 name (`LN`, `HL70127`), as the message sent it; FHIR needs
//! the canonical URI. The table follows the v2-to-FHIR IG's coding system map (table 0396 to
//! FHIR): HL7 tables as `http://terminology.hl7.org/CodeSystem/v2-NNNN`, LOINC, SNOMED CT,
//! the ICD and drug vocabularies, UCUM and the ISO country and language codes. A name outside
//! the table (a local `L` or `99xxx` system) gets a Switchboard URN, so a FHIR server takes
//! it and the way back gives the name again; a value that is already a URI is kept.

use std::borrow::Cow;

/// v2 name, FHIR URI. The first row of a URI is the name the way back gives.
const TABLE: &[(&str, &str)] = &[
    ("LN", "http://loinc.org"),
    ("SCT", "http://snomed.info/sct"),
    ("SNOMED-CT", "http://snomed.info/sct"),
    ("I10", "http://hl7.org/fhir/sid/icd-10"),
    ("I10C", "http://hl7.org/fhir/sid/icd-10-cm"),
    ("I10P", "http://www.cms.gov/Medicare/Coding/ICD10"),
    ("I9C", "http://hl7.org/fhir/sid/icd-9-cm"),
    ("I9", "http://hl7.org/fhir/sid/icd-9"),
    ("RXNORM", "http://www.nlm.nih.gov/research/umls/rxnorm"),
    ("CVX", "http://hl7.org/fhir/sid/cvx"),
    ("NDC", "http://hl7.org/fhir/sid/ndc"),
    ("C4", "http://www.ama-assn.org/go/cpt"),
    ("CPT4", "http://www.ama-assn.org/go/cpt"),
    ("UCUM", "http://unitsofmeasure.org"),
    ("ISO+", "http://unitsofmeasure.org"),
    ("ISO3166", "urn:iso:std:iso:3166"),
    ("ISO3166_1", "urn:iso:std:iso:3166"),
    ("ISO639", "urn:ietf:bcp:47"),
    ("ATC", "http://www.whocc.no/atc"),
    ("NUCCPID", "http://nucc.org/provider-taxonomy"),
];

/// Prefix of the URN given to coding systems outside the table.
pub const LOCAL_PREFIX: &str = "urn:switchboard:coding-system:";

const HL7_TABLE_PREFIX: &str = "http://terminology.hl7.org/CodeSystem/v2-";

/// The FHIR URI of a v2 coding system name.
///
/// ```
/// use transforms::fhir::code_systems::to_uri;
/// assert_eq!(to_uri("LN"), "http://loinc.org");
/// assert_eq!(to_uri("HL70127"), "http://terminology.hl7.org/CodeSystem/v2-0127");
/// assert_eq!(to_uri("L"), "urn:switchboard:coding-system:L");
/// assert_eq!(to_uri("http://loinc.org"), "http://loinc.org");
/// ```
pub fn to_uri(name: &str) -> Cow<'_, str> {
    let name = name.trim();
    if name.contains(':') {
        return Cow::Borrowed(name);
    }
    if let Some((_, uri)) = TABLE.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
        return Cow::Borrowed(uri);
    }
    // HL7nnnn (and HL7nnnn with a table suffix such as HL70396's `HL7nnnn`): an HL7 table.
    if let Some(number) = name
        .get(..3)
        .filter(|p| p.eq_ignore_ascii_case("HL7"))
        .and(name.get(3..))
        .filter(|n| n.len() == 4 && n.bytes().all(|b| b.is_ascii_digit()))
    {
        return Cow::Owned(format!("{HL7_TABLE_PREFIX}{number}"));
    }
    Cow::Owned(format!("{LOCAL_PREFIX}{name}"))
}

/// The v2 coding system name of a FHIR URI: the way back of [`to_uri`]; a URI outside the
/// table (a system a FHIR sender chose) is kept as it is.
///
/// ```
/// use transforms::fhir::code_systems::{to_name, to_uri};
/// for name in ["LN", "SCT", "I10", "HL70127", "L", "99ZZZ"] {
///     assert_eq!(to_name(&to_uri(name)), name);
/// }
/// assert_eq!(to_name("http://example.org/codes"), "http://example.org/codes");
/// ```
pub fn to_name(uri: &str) -> Cow<'_, str> {
    if let Some(name) = uri.strip_prefix(LOCAL_PREFIX) {
        return Cow::Borrowed(name);
    }
    if let Some(number) = uri
        .strip_prefix(HL7_TABLE_PREFIX)
        .filter(|n| n.len() == 4 && n.bytes().all(|b| b.is_ascii_digit()))
    {
        return Cow::Owned(format!("HL7{number}"));
    }
    match TABLE.iter().find(|(_, u)| *u == uri) {
        Some((name, _)) => Cow::Borrowed(name),
        None => Cow::Borrowed(uri),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_uri_of_the_table_reads_back_to_its_first_name() {
        for (name, uri) in TABLE {
            assert_eq!(to_uri(name), *uri);
            let first = TABLE.iter().find(|(_, u)| u == uri).map(|(n, _)| *n);
            assert_eq!(Some(to_name(uri).as_ref()), first, "{uri}");
        }
    }

    #[test]
    fn hl7_tables_need_four_digits() {
        assert_eq!(to_uri("HL7127"), "urn:switchboard:coding-system:HL7127");
        assert_eq!(
            to_uri("hl70203"),
            "http://terminology.hl7.org/CodeSystem/v2-0203"
        );
        assert_eq!(
            to_name("http://terminology.hl7.org/CodeSystem/v2-0203"),
            "HL70203"
        );
    }
}
