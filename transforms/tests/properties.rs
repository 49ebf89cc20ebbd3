//! Property tests: parsing and mapping never panic on random messages, escape encoding
//! round-trips, and identifiers survive escaping through a whole mapping.

use hl7_parser::message::Separators;
use proptest::prelude::*;
use transforms::hl7v2::access::V2Message;
use transforms::hl7v2::escape::{decode, encode};
use transforms::{v2_to_event, Mapped};

fn separators() -> impl Strategy<Value = Separators> {
    prop_oneof![
        Just(Separators::default()),
        Just(Separators {
            field: '#',
            component: '$',
            subcomponent: '%',
            repetition: '*',
            escape: '!',
            lenient_newlines: true,
        }),
    ]
}

/// Field text: letters, digits, separators, escapes, quotes, Arabic and accented letters.
fn field_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex(r#"[A-Za-z0-9 |^~\\&"\.\-+:éüخالد]{0,24}"#).expect("valid regex")
}

fn date_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("\"\"".to_owned()),
        (1900u32..2100, 1u32..13, 1u32..29, 0u32..24, 0u32..60)
            .prop_map(|(y, m, d, h, mi)| format!("{y:04}{m:02}{d:02}{h:02}{mi:02}")),
        proptest::string::string_regex("[0-9+\\-.]{0,20}").expect("valid regex"),
    ]
}

/// A message of one of the mapped types with random field contents (raw, unescaped).
fn random_message() -> impl Strategy<Value = String> {
    let types = prop_oneof![
        Just("ADT^A01"),
        Just("ADT^A04"),
        Just("ADT^A08"),
        Just("ADT^A40"),
        Just("SIU^S12"),
        Just("SIU^S15"),
        Just("ORM^O01"),
        Just("OML^O21"),
        Just("ORU^R01"),
        Just("DFT^P03"),
        Just("DFT^P11"),
    ];
    let segment_names = prop_oneof![
        Just("EVN"),
        Just("PID"),
        Just("PV1"),
        Just("MRG"),
        Just("SCH"),
        Just("AIS"),
        Just("AIL"),
        Just("AIP"),
        Just("ORC"),
        Just("OBR"),
        Just("OBX"),
        Just("NTE"),
        Just("TQ1"),
        Just("FT1"),
        Just("ZPY"),
        Just("IN1"),
        Just("ZXX"),
    ];
    let segment = (
        segment_names,
        proptest::collection::vec(prop_oneof![field_text(), date_text()], 0..50),
    )
        .prop_map(|(name, fields)| format!("{name}|{}", fields.join("|")));
    (
        types,
        proptest::collection::vec(segment, 0..12),
        field_text(),
    )
        .prop_map(|(ty, segments, control)| {
            let mut text = format!("MSH|^~\\&|HIS|RUH|||20260615||{ty}|{control}|P|2.5\r");
            for s in segments {
                text.push_str(&s);
                text.push('\r');
            }
            text
        })
}

/// A valid ADT, SIU or DFT whose identifier, name and amount are random text, escaped.
fn valid_message() -> impl Strategy<Value = (String, String)> {
    let id = proptest::string::string_regex(r#"[A-Za-z0-9|^~\\&\-]{1,16}"#).expect("valid regex");
    let id = id.prop_filter("not blank", |s| !s.trim().is_empty() && s != "\"\"");
    (0usize..3, id, field_text(), 0u32..100_000).prop_map(|(kind, id, name, cents)| {
        let seps = Separators::default();
        let id_esc = encode(&id, &seps).into_owned();
        let name_esc = encode(&name, &seps).into_owned();
        let pid = format!("PID|1||{id_esc}^^^HIS^MR||{name_esc}^Given||19900101|F\r");
        let text = match kind {
            0 => format!("MSH|^~\\&|HIS|RUH|||20260615||ADT^A04|P1|P|2.5\rEVN|A04|20260615\r{pid}PV1|1|O|CLN^1^2||||D1^Doc||||||||||||V1\r"),
            1 => format!("MSH|^~\\&|HIS|RUH|||20260615||SIU^S12|P2|P|2.5\rSCH||A-1||||||||||^^^202606151030|||||||||||Booked\r{pid}AIS|1||SVC|202606151030|||20|MIN\r"),
            _ => format!("MSH|^~\\&|HIS|RUH|||20260615||DFT^P03|P3|P|2.5\r{pid}FT1|1|T1||20260615||CG|X|||1|{}.{:02}\r", cents / 100, cents % 100),
        };
        (text, id)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn escape_round_trips(text in "\\PC{0,40}", seps in separators()) {
        let encoded = encode(&text, &seps);
        prop_assert!(!encoded.contains(seps.field));
        prop_assert!(!encoded.contains(seps.component));
        prop_assert!(!encoded.contains(seps.repetition));
        prop_assert!(!encoded.contains(seps.subcomponent));
        let decoded = decode(&encoded, &seps).into_owned();
        prop_assert_eq!(decoded, text.clone());
    }

    #[test]
    fn decode_never_panics(text in "\\PC{0,60}", seps in separators()) {
        let _ = decode(&text, &seps);
    }

    #[test]
    fn random_messages_never_panic(text in random_message()) {
        if let Ok(msg) = V2Message::parse(&text) {
            let _ = v2_to_event(&msg);
            for path in ["PID-3", "PID.3[2].4.1", "OBX[2]-5", "MSH-2", "FT1-11.1.2"] {
                let _ = msg.get(path);
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        if let Ok(msg) = V2Message::parse(&text) {
            let _ = v2_to_event(&msg);
        }
    }

    #[test]
    fn identifiers_survive_escaping_through_mapping((text, id) in valid_message()) {
        let msg = V2Message::parse(&text).expect("valid message parses");
        let event = match v2_to_event(&msg) {
            Ok(Mapped::Event(event)) => *event,
            other => return Err(TestCaseError::fail(format!("{other:?}"))),
        };
        prop_assert_eq!(event.partition_key(), Some(id.trim().to_owned()));
    }
}
