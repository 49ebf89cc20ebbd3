//! serde's error texts without the values they quote.
//!
//! serde words a type mismatch as `invalid type: string "Smith", expected u32` and an unknown
//! enum value as ``unknown variant `Smith`, expected `A` or `B` ``: the received value is in
//! the text. A received value may be patient data, and error texts are answered, logged and
//! stored, so every error text built from a serde (or fhirbolt) error goes through
//! [`without_values`] first: it keeps the rule (what kind of value, what was expected, where)
//! and drops the value. Field names (``missing field `name` ``) are element names, not
//! values, and are kept.
//!
//! Not a parser of every serde text: the forms serde's own `de::Error` methods produce are
//! rewritten exactly; any other text has its double-quoted parts (how `{:?}` shows a string)
//! replaced by `"…"`.

/// What serde's `Unexpected` calls each kind of value, before the value itself.
const KINDS: [&str; 18] = [
    "boolean",
    "integer",
    "floating point",
    "character",
    "string",
    "byte array",
    "unit value",
    "Option value",
    "newtype struct",
    "sequence",
    "map",
    "enum",
    "unit variant",
    "newtype variant",
    "tuple variant",
    "struct variant",
    "null",
    // serde_json with `arbitrary_precision` (which fhirbolt turns on) for a decimal.
    "number",
];

/// The text of a serde error with every received value left out.
///
/// ```
/// use transforms::serde_reason::without_values;
/// assert_eq!(
///     without_values("invalid type: string \"Smith\", expected u32 at line 1 column 7"),
///     "invalid type: string, expected u32 at line 1 column 7"
/// );
/// assert_eq!(
///     without_values("unknown variant `Smith`, expected `male` or `female`"),
///     "unknown variant, expected `male` or `female`"
/// );
/// assert_eq!(without_values("missing field `id`"), "missing field `id`");
/// ```
pub fn without_values(text: &str) -> String {
    // Field names are element names, and fhirbolt lists the expected ones with `{:?}`.
    if ["unknown field ", "missing field ", "duplicate field "]
        .iter()
        .any(|p| text.starts_with(p))
    {
        return text.to_string();
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = text.strip_prefix(prefix) {
            // The expected part comes last and is the deserializer's own words, so the last
            // ", expected " is the boundary even when the value contains that text.
            return match rest.rfind(", expected ") {
                Some(at) => format!("{prefix}{}{}", kind_of(&rest[..at]), &rest[at..]),
                None => format!("{prefix}{}", kind_of(rest)),
            };
        }
    }
    if let Some(rest) = text.strip_prefix("unknown variant ") {
        for tail in ["`, expected ", "`, there are no variants"] {
            if let Some(at) = rest.rfind(tail) {
                return format!("unknown variant{}", &rest[at + 1..]);
            }
        }
        return "unknown variant".into();
    }
    without_quoted(text)
}

/// The text of a `serde_json` error (syntax or shape) with every received value left out.
pub fn of_json(e: &serde_json::Error) -> String {
    without_values(&e.to_string())
}

/// The kind of a serde `Unexpected` text (`string "Smith"` -> `string`).
fn kind_of(unexpected: &str) -> &'static str {
    KINDS
        .iter()
        .find(|k| {
            unexpected.strip_prefix(**k).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with(" `") || rest.starts_with(" \"")
            })
        })
        .copied()
        .unwrap_or("a value of another kind")
}

/// `text` with each double-quoted part (escapes included) replaced by `"…"`.
fn without_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            out.push(c);
            continue;
        }
        out.push_str("\"…\"");
        while let Some(q) = chars.next() {
            match q {
                '\\' => {
                    chars.next();
                }
                '"' => break,
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// A synthetic value that must never come back in an error text.
    const VALUE: &str = "Qxzzyvplank";

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    enum Gender {
        #[serde(rename = "male")]
        Male,
        #[serde(rename = "female")]
        Female,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Person {
        id: u32,
        gender: Gender,
        mobile: Option<String>,
        born: Option<(u16, u8)>,
    }

    fn reason(json: &str) -> String {
        of_json(&serde_json::from_str::<Person>(json).expect_err("invalid"))
    }

    #[test]
    fn mismatches_keep_the_rule_and_drop_the_value() {
        for (json, expected) in [
            (
                r#"{"id": "Qxzzyvplank"}"#,
                "invalid type: string, expected u32 at line 1 column 20",
            ),
            (
                r#"{"id": 1, "gender": "Qxzzyvplank"}"#,
                "unknown variant, expected `male` or `female` at line 1 column 33",
            ),
            (
                r#"{"id": 1, "gender": "male", "mobile": 5550100}"#,
                "invalid type: integer, expected a string at line 1 column 45",
            ),
            (
                r#"{"id": 1, "gender": "male", "mobile": 55.5}"#,
                "invalid type: number, expected a string at line 1 column 42",
            ),
            (
                r#"{"id": true}"#,
                "invalid type: boolean, expected u32 at line 1 column 11",
            ),
            (
                r#"{"id": 1, "gender": "male", "born": [1980, 300]}"#,
                "invalid value: integer, expected u8 at line 1 column 46",
            ),
            (r#"{"id": 1}"#, "missing field `gender` at line 1 column 9"),
        ] {
            assert_eq!(reason(json), expected, "{json}");
        }
    }

    #[test]
    fn a_value_that_imitates_the_text_does_not_leak() {
        for json in [
            r#"{"id": "Qxzzyvplank, expected Qxzzyvplank"}"#,
            r#"{"id": "Qxzzyvplank\", expected Qxzzyvplank"}"#,
            r#"{"id": 1, "gender": "Qxzzyvplank`, expected `Qxzzyvplank"}"#,
            r#"{"id": 1, "gender": "`Qxzzyvplank`"}"#,
            r#"{"id": 1, "gender": "male", "mobile": {"Qxzzyvplank": 1}}"#,
        ] {
            let text = reason(json);
            assert!(!text.contains(VALUE), "{json}: {text}");
        }
    }

    #[test]
    fn other_texts_lose_their_double_quoted_parts() {
        assert_eq!(
            without_values("invalid decimal: \"Qxzzy\\\"vplank\" in Observation"),
            "invalid decimal: \"…\" in Observation"
        );
        let fhirbolt =
            "unknown field `valu`, expected one of primitive children [\"id\", \"value\"]";
        assert_eq!(without_values(fhirbolt), fhirbolt);
        assert_eq!(
            without_values("expected `,` or `}` at line 1 column 9"),
            "expected `,` or `}` at line 1 column 9"
        );
        assert_eq!(
            without_values("unknown variant `x`, there are no variants"),
            "unknown variant, there are no variants"
        );
        assert_eq!(
            without_values("invalid type: Qxzzyvplank"),
            "invalid type: a value of another kind"
        );
    }
}
