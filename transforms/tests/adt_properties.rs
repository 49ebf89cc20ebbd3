//! Property test: ADT messages with random OBX (every value type, ED and RP among them, well
//! and badly formed), ROL and PRT (every action code, in the visit and after other segments,
//! PRT with or without a person), GT1, IN1/IN2, PD1 and PV2 map without panicking, and every Bundle made of them holds together:
//! every `reference` of every resource is the `fullUrl` of an entry of the same Bundle (or a
//! conditional reference by identifier), and the Bundle reads back. Fixed cases are the
//! goldens (`golden.rs`, `dest_fhir_golden.rs`).
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::Value;
use transforms::fhir::{fhir_to_events, transaction_bundle, BundleOptions};
use transforms::hl7v2::access::V2Message;
use transforms::{v2_to_event, Mapped};

/// A short code: letters and digits.
fn code() -> impl Strategy<Value = String> {
    "[A-Z][A-Z0-9-]{0,7}"
}

/// Free text that may hold HL7 escapes and non-ASCII letters, never a separator.
fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex(r"[A-Za-z0-9 .,:/éخالد-]{0,16}").unwrap()
}

/// A date-time: sometimes with an offset, sometimes a date, sometimes broken.
fn when() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (2000u32..2040, 1u32..13, 1u32..29, 0u32..24, 0u32..60)
            .prop_map(|(y, m, d, h, mi)| format!("{y:04}{m:02}{d:02}{h:02}{mi:02}+0300")),
        2 => (1950u32..2030, 1u32..13, 1u32..29).prop_map(|(y, m, d)| format!("{y:04}{m:02}{d:02}")),
        1 => Just(String::new()),
        1 => "[0-9+.-]{1,14}",
    ]
}

/// An XCN: a doctor, one or two of their identifiers (the second typed as a licence), or
/// nothing.
fn xcn() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (code(), text(), text()).prop_map(|(id, f, g)| format!("{id}^{f}^{g}^^^Dr^^^HIS")),
        2 => (code(), code(), text()).prop_map(|(id, lic, f)| {
            format!("{id}^{f}^^^^^^^HIS~{lic}^{f}^^^^^^^SCFHS^^^^LN")
        }),
        1 => Just(String::new()),
    ]
}

/// An OBX value type with an OBX-5 of that type (or of another: senders mix them up).
fn obx_value() -> impl Strategy<Value = (String, String)> {
    let base64 = "[A-Za-z0-9+/]{0,40}={0,2}";
    prop_oneof![
        ("[0-9]{1,3}(\\.[0-9]{1,2})?").prop_map(|v| ("NM".to_owned(), v)),
        Just(("NM".to_owned(), "<0.5".to_owned())),
        text().prop_map(|v| ("ST".to_owned(), v)),
        (text(), text()).prop_map(|(a, b)| ("TX".to_owned(), format!("{a}~{b}"))),
        text().prop_map(|v| ("FT".to_owned(), format!("{v}\\.br\\{v}"))),
        (code(), text()).prop_map(|(c, t)| ("CWE".to_owned(), format!("{c}^{t}^LN"))),
        (code(), text()).prop_map(|(c, t)| ("CE".to_owned(), format!("{c}^{t}^L"))),
        ("[<>=]{0,2}", "[0-9]{1,3}", "[:/-]?", "[0-9]{0,3}")
            .prop_map(|(a, b, c, d)| ("SN".to_owned(), format!("{a}^{b}^{c}^{d}"))),
        when().prop_map(|v| ("DTM".to_owned(), v)),
        when().prop_map(|v| ("TS".to_owned(), v)),
        (code(), code()).prop_map(|(v, a)| ("CX".to_owned(), format!("{v}^^^{a}^MR"))),
        // ED: source^type of data^subtype^encoding^data, well formed or not.
        (
            prop_oneof![Just("AP"), Just("IM"), Just("TEXT"), Just("XX"), Just("")],
            prop_oneof![
                Just("PDF"),
                Just("JPEG"),
                Just("HTML"),
                Just(""),
                Just("x y")
            ],
            prop_oneof![Just("Base64"), Just("A"), Just("Hex"), Just("")],
            base64,
        )
            .prop_map(|(ty, sub, enc, data)| {
                ("ED".to_owned(), format!("HIS^{ty}^{sub}^{enc}^{data}"))
            }),
        // RP: pointer^application^type of data^subtype.
        (
            prop_oneof![
                Just("https://pacs.example.org/s/1"),
                Just(""),
                Just("not a url")
            ],
            prop_oneof![Just("IM"), Just("AP"), Just("")],
            prop_oneof![Just("JPEG"), Just("DICOM"), Just("")],
        )
            .prop_map(|(url, ty, sub)| ("RP".to_owned(), format!("{url}^PACS^{ty}^{sub}"))),
        (code(), text()).prop_map(|(t, v)| (t, v)),
        text().prop_map(|v| (String::new(), v)),
    ]
}

/// An OBX (with, at times, an NTE after it), its OBX-3 mostly there.
fn obx() -> impl Strategy<Value = String> {
    (
        obx_value(),
        prop_oneof![6 => code().prop_map(|c| format!("{c}^Obs^LN")), 1 => Just(String::new())],
        prop_oneof![Just("F"), Just("P"), Just("C"), Just(""), Just("Q")],
        when(),
        prop::option::of(text()),
    )
        .prop_map(|((ty, value), id, status, at, note)| {
            let mut s = format!("OBX|1|{ty}|{id}||{value}|||||||{status}|||{at}");
            if let Some(n) = note {
                s.push_str(&format!("\rNTE|1||{n}"));
            }
            s
        })
}

/// A ROL with any action code of table 0287 (or none, or another), any role.
fn rol() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just("AD"),
            Just("CO"),
            Just("DE"),
            Just("LI"),
            Just("UC"),
            Just("UN"),
            Just("UP"),
            Just(""),
            Just("ZZ")
        ],
        prop_oneof![
            Just("AT^Attending^HL70443"),
            Just("CP^Consulting^HL70443"),
            Just("PP^Primary care^HL70443"),
            Just("PRI^Interpreter^HL70443"),
            Just("")
        ],
        xcn(),
    )
        .prop_map(|(action, role, person)| format!("ROL|1|{action}|{role}|{person}"))
}

/// A PRT (v2.7+) with any action code, any role of table 0912, a person or none (a device),
/// and begin/end times that may be broken.
fn prt() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just("AD"),
            Just("DE"),
            Just("UC"),
            Just("UN"),
            Just("UP"),
            Just("")
        ],
        prop_oneof![
            Just("AT^Attending^HL70912"),
            Just("CP^Consulting^HL70912"),
            Just("PRI^Interpreter^HL70912"),
            Just("")
        ],
        xcn(),
        when(),
        when(),
    )
        .prop_map(|(action, role, person, begin, end)| {
            format!("PRT|1|{action}||{role}|{person}|MD^Doctor^L|||||{begin}|{end}")
        })
}

/// A PV2 with the fields the mapping reads, some empty, times and numbers sometimes broken.
fn pv2() -> impl Strategy<Value = String> {
    (
        prop::option::of(code()),
        when(),
        when(),
        prop_oneof![Just("5"), Just("2.5"), Just(""), Just("x")],
        text(),
        xcn(),
        prop_oneof![Just("Y"), Just("N"), Just("")],
    )
        .prop_map(
            |(reason, admit, discharge, days, description, referral, protect)| {
                segment(
                    "PV2",
                    &[
                        (1, "WARD-9^9^9".into()),
                        (
                            3,
                            reason.map(|r| format!("{r}^Reason^L")).unwrap_or_default(),
                        ),
                        (4, "BED^Bed^L".into()),
                        (7, "TE^Teaching^HL70130".into()),
                        (8, admit),
                        (9, discharge),
                        (10, days.into()),
                        (11, days.into()),
                        (12, description),
                        (13, referral),
                        (21, "F^Family^HL70215".into()),
                        (22, protect.into()),
                        (25, "2^Urgent^HL70217".into()),
                        (38, "A^Ambulance^HL70430".into()),
                        (40, "AC^Acute^HL70432".into()),
                    ],
                )
            },
        )
}

/// A segment with the given fields set (1-based) and the others empty.
fn segment(name: &str, fields: &[(usize, String)]) -> String {
    let last = fields.iter().map(|(n, _)| *n).max().unwrap_or(0);
    let mut parts = vec![String::new(); last + 1];
    parts[0] = name.to_owned();
    for (n, v) in fields {
        parts[*n].clone_from(v);
    }
    parts.join("|")
}

/// Other segments an ADT carries beside OBX and ROL.
fn other_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        (code(), text(), when(), prop_oneof![Just("SEL^Self^HL70063"), Just("FTH^Father^HL70063"), Just("")], prop::option::of(text()))
            .prop_map(|(n, name, dob, rel, org)| format!(
                "GT1|1|{n}|{name}^G||1 Road^^City|^PRN^PH^^966^11^4650000||{dob}|M||{rel}||||||||||{}",
                org.unwrap_or_default()
            )),
        (code(), text(), when(), prop_oneof![Just("SEL"), Just("SPO"), Just("")]).prop_map(
            |(c, name, dob, rel)| segment(
                "IN1",
                &[
                    (1, "1".into()),
                    (2, format!("PLAN-{c}^Plan")),
                    (3, c.clone()),
                    (4, format!("{name} Insurance")),
                    (5, "1 Road^^City".into()),
                    (10, "EMP^^^HIS".into()),
                    (11, "Employer".into()),
                    (12, "20260101".into()),
                    (13, "20261231".into()),
                    (15, "PPO".into()),
                    (16, format!("{name}^Insured")),
                    (17, rel.into()),
                    (18, dob),
                    (36, format!("POL-{c}")),
                    (43, "M".into()),
                    (49, format!("INS-{c}")),
                ],
            )
        ),
        code().prop_map(|c| segment(
            "IN2",
            &[
                (61, format!("MB-{c}")),
                (63, "^PRN^CP^^966^50^1111111".into()),
                (72, "01^Self^HL70344".into()),
            ],
        )),
        (text(), xcn(), prop_oneof![Just("Y"), Just("N"), Just("")])
            .prop_map(|(f, gp, prot)| format!("PD1|||{f}^^FAC-1|{gp}||WC^Wheelchair^L|||||02^Recall^HL70215|{prot}||Mosque")),
        (code(), text()).prop_map(|(c, t)| format!("AL1|1|DA|{c}^{t}^L|SV|Rash")),
        (code(), when()).prop_map(|(c, t)| format!("DG1|1||{c}^Dx^I10||{t}|F")),
        (code(), when(), xcn()).prop_map(|(c, t, p)| format!("PR1|1||{c}^Px^C4||{t}|||||||{p}")),
        (text(), text()).prop_map(|(f, g)| format!("NK1|1|{f}^{g}|SPO^Spouse^HL70063")),
    ]
}

/// A whole ADT: MSH, EVN, PID, PV1 (with or without a visit), then OBX, ROL and the other
/// segments in random order.
fn adt() -> impl Strategy<Value = String> {
    let trigger = prop_oneof![
        Just("A01"),
        Just("A02"),
        Just("A03"),
        Just("A04"),
        Just("A05"),
        Just("A08"),
        Just("A13"),
        Just("A28"),
        Just("A31"),
    ];
    let body = prop_oneof![3 => obx(), 3 => rol(), 2 => prt(), 1 => pv2(), 2 => other_segment()];
    (
        trigger,
        code(),
        prop::option::of(code()),
        prop::option::of(code()),
        xcn(),
        prop::collection::vec(body, 0..12),
    )
        .prop_map(|(trigger, mrn, account, visit, attending, segments)| {
            let mut text = format!(
                "MSH|^~\\&|HIS|RUH|||20260615103000+0300||ADT^{trigger}|P-{mrn}|P|2.6\r\
                 EVN|{trigger}|20260615103000+0300\r\
                 PID|1||{mrn}^^^HIS^MR||Khalid^Yousef||19940920|M||||||||||{}^^^HIS^AN\r\
                 PV1|1|I|WARD-1^1^1||||{attending}||||||||||||{}\r",
                account.unwrap_or_default(),
                visit.unwrap_or_default(),
            );
            for s in segments {
                text.push_str(&s);
                text.push('\r');
            }
            text
        })
}

/// Every JSON object with a `reference` (or an identifier-only reference), with its path.
fn references(v: &Value, path: &str, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(map) => {
            let is_reference = map.contains_key("reference")
                || (map.get("identifier").is_some_and(Value::is_object)
                    && !map.contains_key("resourceType")
                    && !map.contains_key("system"));
            if is_reference {
                out.push((path.to_owned(), v.clone()));
            }
            for (k, child) in map {
                references(child, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                references(child, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn adt_with_obx_rol_and_attachments_maps_and_its_bundle_holds_together(text in adt()) {
        let msg = V2Message::parse(&text).unwrap();
        // Never a panic; an error (a date that does not parse, an OBX without OBX-3, an
        // unknown OBX-11) is an outcome.
        let event = match v2_to_event(&msg) {
            Ok(Mapped::Event(event)) => *event,
            Ok(Mapped::Unsupported { message_type }) => {
                return Err(TestCaseError::fail(format!("unsupported {message_type}")))
            }
            Ok(Mapped::MasterFile(_)) => {
                return Err(TestCaseError::fail("an ADT mapped as a master file"))
            }
            Err(_) => return Ok(()),
        };
        let bundle = transaction_bundle(&event, &BundleOptions::default()).unwrap();
        let json = fhirbolt::json::to_string(&bundle, None).unwrap();
        let value: Value = serde_json::from_str(&json).unwrap();
        let entries = value["entry"].as_array().cloned().unwrap_or_default();
        let full_urls: BTreeSet<String> = entries
            .iter()
            .filter_map(|e| e["fullUrl"].as_str().map(str::to_owned))
            .collect();
        prop_assert_eq!(full_urls.len(), entries.len(), "every entry has its own fullUrl");
        for (i, entry) in entries.iter().enumerate() {
            let mut refs = Vec::new();
            references(&entry["resource"], &format!("entry[{i}]"), &mut refs);
            for (path, r) in refs {
                match r.get("reference").and_then(Value::as_str) {
                    Some(url) => prop_assert!(
                        full_urls.contains(url),
                        "{} points at {}, no entry of the Bundle", path, url
                    ),
                    None => prop_assert!(
                        r.get("identifier").is_some(),
                        "{} is neither an entry nor an identifier", path
                    ),
                }
            }
        }
        // Every OBX, ROL that holds, GT1 and IN1 of the message is in the Bundle: the
        // Observations, the roles as participants, the guarantors, the coverages.
        let patient = event.patient.as_ref().unwrap();
        let count = |rtype: &str| {
            entries
                .iter()
                .filter(|e| e["resource"]["resourceType"] == rtype)
                .count()
        };
        prop_assert_eq!(count("Observation"), patient.observations.len());
        // Two IN1 of the same plan, insurer and policy are one Coverage.
        prop_assert!(count("Coverage") <= patient.coverages.len());
        prop_assert_eq!(count("Coverage") == 0, patient.coverages.is_empty());
        if let Some(encounter) = event.encounter.as_ref().filter(|e| e.visit_number.is_some()) {
            let participants = entries
                .iter()
                .find(|e| e["resource"]["resourceType"] == "Encounter")
                .and_then(|e| e["resource"]["participant"].as_array().cloned())
                .unwrap_or_default();
            let roles = participants
                .iter()
                .filter(|p| {
                    let system = &p["type"][0]["coding"][0]["system"];
                    system == "http://terminology.hl7.org/CodeSystem/v2-0443"
                        || system == "http://terminology.hl7.org/CodeSystem/v2-0912"
                })
                .count();
            prop_assert_eq!(roles, encounter.roles.iter().filter(|r| r.is_current()).count());
        }
        if !patient.guarantors.is_empty() {
            let account = entries
                .iter()
                .find(|e| e["resource"]["resourceType"] == "Account")
                .unwrap();
            prop_assert_eq!(
                account["resource"]["guarantor"].as_array().map(Vec::len),
                Some(patient.guarantors.len())
            );
        }
        // And the Bundle reads back.
        let back = fhir_to_events(&json);
        prop_assert!(back.is_ok(), "read back: {:?}", back.err());
    }
}
