//! The trigger table test: every trigger of the five families (ADT, SIU, ORM/OML, ORU, DFT)
//! that HL7 v2.8 defines, the master files MFN^M02/M04/M05/M08/M09/M10 and the pharmacy orders
//! RDE^O11/O25 and RDS^O13, maps to a canonical event, never to `Unsupported`. The list below is
//! written from the standard's event table (table 0003 and the message structures of chapters
//! 3, 4, 7, 10 and 6), independently of [`transforms::from_v2::TRIGGERS`]; each trigger's
//! minimal fixture is mapped, and the crate's own table must agree with this one.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};

use transforms::from_v2::TRIGGERS;
use transforms::hl7v2::access::V2Message;
use transforms::{v2_to_event, Mapped};

/// HL7 v2.8: (message code, trigger). A19 (QRY/ADR patient query) and S25 (SQM/SQR schedule
/// query) are queries with their own message codes, not ADT or SIU messages; A56-A59 are not
/// ADT events of v2.8.
fn v28_triggers() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for n in 1..=62 {
        if n == 19 || (56..=59).contains(&n) {
            continue;
        }
        out.push(("ADT", format!("A{n:02}")));
    }
    for n in 12..=26 {
        if n != 25 {
            out.push(("SIU", format!("S{n}")));
        }
    }
    out.push(("ORM", "O01".into()));
    for t in ["O21", "O33", "O35"] {
        out.push(("OML", t.into()));
    }
    // The imaging order (OMI_O23), for the DICOM worklist: an order like ORM/OML, with IPC.
    out.push(("OMI", "O23".into()));
    for t in ["R01", "R30", "R31", "R32"] {
        out.push(("ORU", t.into()));
    }
    for t in ["P03", "P11"] {
        out.push(("DFT", t.into()));
    }
    // Master files (chapter 8): staff and practitioners, charge description master,
    // locations, test/observation masters (numeric, categorical, batteries).
    for t in ["M02", "M04", "M05", "M08", "M09", "M10"] {
        out.push(("MFN", t.into()));
    }
    // Pharmacy/treatment orders (chapter 4): the encoded order and its refill authorization
    // request, and the dispense.
    for t in ["O11", "O25"] {
        out.push(("RDE", t.into()));
    }
    out.push(("RDS", "O13".into()));
    out
}

fn fixture(code: &str, trigger: &str, variant: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../fixtures/hl7v2/{}_{}/{variant}.hl7",
        code.to_lowercase(),
        trigger.to_lowercase()
    ))
}

#[test]
fn every_v28_trigger_of_the_five_families_maps_to_an_event() {
    let mut failures = Vec::new();
    for (code, trigger) in v28_triggers() {
        for variant in ["minimal", "full"] {
            let path = fixture(code, &trigger, variant);
            let Ok(text) = std::fs::read_to_string(&path) else {
                failures.push(format!("{code}^{trigger}: no fixture {}", path.display()));
                continue;
            };
            let msg = V2Message::parse(&text).unwrap();
            match v2_to_event(&msg) {
                Ok(Mapped::Event(event)) => {
                    let sent = format!("{code}^{trigger}");
                    if !event.source.message_type.starts_with(&sent) {
                        failures.push(format!(
                            "{sent}/{variant}: fixture is {}",
                            event.source.message_type
                        ));
                    }
                }
                Ok(Mapped::MasterFile(mf)) => {
                    let sent = format!("{code}^{trigger}");
                    if mf.events.is_empty() || mf.records.iter().any(|r| !r.accepted()) {
                        failures.push(format!("{sent}/{variant}: {:?}", mf.rejections()));
                    }
                    for e in &mf.events {
                        if !e.source.message_type.starts_with(&sent) {
                            failures.push(format!(
                                "{sent}/{variant}: fixture is {}",
                                e.source.message_type
                            ));
                        }
                    }
                }
                Ok(Mapped::Unsupported { message_type }) => {
                    failures.push(format!(
                        "{code}^{trigger}/{variant}: unsupported {message_type}"
                    ));
                }
                Err(e) => failures.push(format!("{code}^{trigger}/{variant}: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_crate_table_lists_exactly_the_v28_triggers() {
    let ours: Vec<(String, String)> = TRIGGERS
        .iter()
        .map(|(c, t, _)| ((*c).to_owned(), (*t).to_owned()))
        .collect();
    let standard: Vec<(String, String)> = v28_triggers()
        .into_iter()
        .map(|(c, t)| (c.to_owned(), t))
        .collect();
    assert_eq!(ours, standard);
}

#[test]
fn every_listed_trigger_is_dispatched() {
    // The table is documentation unless the dispatch agrees: a message with only MSH maps to
    // an error (missing data) for a mapped trigger, and to `Unsupported` otherwise.
    for (code, trigger, _) in TRIGGERS {
        let text = format!("MSH|^~\\&|HIS|RUH|||20260615103000||{code}^{trigger}|C1|P|2.8\r");
        let msg = V2Message::parse(&text).unwrap();
        assert!(
            !matches!(v2_to_event(&msg), Ok(Mapped::Unsupported { .. })),
            "{code}^{trigger} is listed but not dispatched"
        );
    }
    for (code, trigger) in [
        ("ADT", "A19"),
        ("ADT", "A63"),
        ("SIU", "S25"),
        ("ORU", "R02"),
    ] {
        let text = format!("MSH|^~\\&|HIS|RUH|||20260615103000||{code}^{trigger}|C1|P|2.8\r");
        let msg = V2Message::parse(&text).unwrap();
        assert!(
            matches!(v2_to_event(&msg), Ok(Mapped::Unsupported { .. })),
            "{code}^{trigger} is not an event of the five families"
        );
    }
}
