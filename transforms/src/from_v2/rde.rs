//! RDE^O11, RDE^O25 (pharmacy/treatment encoded order, refill authorization request) and
//! RDS^O13 (pharmacy/treatment dispense) to canonical medication orders.
//!
//! Each ORC starts a medication order; the RXE, RXD, RXR, TQ1, RXC and NTE segments after it
//! (up to the next ORC) belong to it. An RXO (the order as the placer wrote it) is not read:
//! the RXE is what the pharmacy encoded and what is given.
//!
//! Numbers, as for orders: placer ORC-2, filler ORC-3, else the prescription number (RXE-15,
//! else RXD-7); EI-1 each. An order with neither fails on ORC-2.
//!
//! | canonical | HL7 |
//! |---|---|
//! | `medication` | RXE-2 give code, else RXD-2 |
//! | `dose` | RXE-3 (amount), RXE-4 (maximum of a range), RXE-5 (units) |
//! | `dosage_form` | RXE-6 |
//! | `route`, `site` | RXR-1, RXR-2 of the first RXR |
//! | `frequency` | TQ1-3.1 repeat pattern, else RXE-1.2.1 (TQ interval) |
//! | `start`, `end`, `priority` | TQ1-7, TQ1-8, TQ1-9; else RXE-1.4, RXE-1.5, RXE-1.6 |
//! | `instructions` | TQ1-11 text instruction, else RXE-7 (text, else code) |
//! | `quantity` | RXE-10 dispense amount, RXE-11 dispense units |
//! | `refills` | RXE-12 |
//! | `prescription_number` | RXE-15, else RXD-7 |
//! | `reason` | RXE-27 give indication |
//! | `prescriber` | ORC-12, else RXE-13 |
//! | `ordered_at` | ORC-9, else RXE-32 |
//! | `components` | every RXC: RXC-1 type, RXC-2 code, RXC-3 amount, RXC-4 units |
//! | `notes` | NTE-3 of the NTEs after the ORC and the RXE |
//! | `dispense` (RDS) | RXD-1 sequence, RXD-2, RXD-3 time, RXD-4/5 quantity, RXD-6 form, RXD-7, RXD-8 refills remaining, RXD-9 and the NTE after the RXD as notes, RXD-10 dispenser |
//!
//! Status: ORC-5 when sent, else implied by ORC-1, as for orders ([`super::orders`]); `RF`
//! (refill request, the control code of an RDE^O25) keeps the order active.
//!
//! Event kind: RDS^O13 is `medication_dispensed`. An RDE takes its kind from the first order's
//! ORC-1: `NW`/`SN` → `medication_order_created`; `CA`/`OC`/`CR`/`DC`/`OD`/`DR` →
//! `medication_order_cancelled`; other codes → `medication_order_updated`.

use crate::hl7v2::access::{SegmentRef, V2Message};
use crate::model::{
    Event, EventKind, MedicationComponent, MedicationDispense, MedicationOrder, OrderStatus,
    Quantity,
};

use super::adt::{encounter_from_pv1, patient_from_pid};
use super::{
    collect_practitioners, datatypes, decimal_value, new_event, notes, source_from_msh, ts,
    ts_value, MappingError,
};

/// The segments of one medication order: its ORC and what follows it, up to the next ORC.
struct RxSegments<'s, 'm> {
    orc: SegmentRef<'s, 'm>,
    rxe: Option<SegmentRef<'s, 'm>>,
    rxd: Option<SegmentRef<'s, 'm>>,
    rxr: Option<SegmentRef<'s, 'm>>,
    tq1: Option<SegmentRef<'s, 'm>>,
    rxcs: Vec<SegmentRef<'s, 'm>>,
    /// NTEs after the ORC or RXE (the order's).
    ntes: Vec<SegmentRef<'s, 'm>>,
    /// NTEs after the RXD (the dispense's).
    dispense_ntes: Vec<SegmentRef<'s, 'm>>,
}

/// Maps an RDE^O11, RDE^O25 or RDS^O13; `dispense` is true for an RDS.
///
/// # Errors
/// [`MappingError`] without ORC, ORC-1, order numbers, PID or patient identifier; with an
/// unknown ORC-1/ORC-5, an unparsable date or number; an RDS order group without RXD.
pub fn event_from_pharmacy(
    msg: &V2Message<'_>,
    dispense: bool,
) -> Result<Box<Event>, MappingError> {
    let groups = groups(msg);
    let Some(first) = groups.first() else {
        return Err(MappingError::Missing {
            path: "ORC".into(),
            reason: "no common order segment",
        });
    };
    let kind = if dispense {
        EventKind::MedicationDispensed
    } else {
        match control(msg, &first.orc)?.as_str() {
            "NW" | "SN" => EventKind::MedicationOrderCreated,
            "CA" | "OC" | "CR" | "DC" | "OD" | "DR" => EventKind::MedicationOrderCancelled,
            _ => EventKind::MedicationOrderUpdated,
        }
    };
    let mut event = new_event(kind, source_from_msh(msg)?);
    event.patient = Some(patient_from_pid(msg)?);
    event.encounter = encounter_from_pv1(msg)?;
    for g in &groups {
        let mut order = medication_order(msg, g)?;
        if dispense {
            let rxd = g.rxd.as_ref().ok_or_else(|| MappingError::Missing {
                path: format!("RXD[{}]", msg.occurrence(&g.orc)),
                reason: "a dispense order group needs an RXD",
            })?;
            let d = dispense_from_rxd(msg, rxd, &g.dispense_ntes)?;
            if order.medication.is_none() {
                order.medication.clone_from(&d.medication);
            }
            if order.prescription_number.is_none() {
                order.prescription_number.clone_from(&d.prescription_number);
            }
            if order.filler_number.is_none() {
                order.filler_number.clone_from(&d.prescription_number);
            }
            order.dispense = Some(d);
        }
        if order.placer_number.is_none() && order.filler_number.is_none() {
            return Err(MappingError::Missing {
                path: msg.field_path(&g.orc, 2),
                reason: "no placer or filler order number",
            });
        }
        event.medication_orders.push(order);
    }
    collect_practitioners(&mut event);
    Ok(event)
}

/// Splits the message into medication orders: each ORC with the segments after it.
fn groups<'s, 'm>(msg: &'s V2Message<'m>) -> Vec<RxSegments<'s, 'm>> {
    let mut groups: Vec<RxSegments<'s, 'm>> = Vec::new();
    for seg in msg.segments() {
        if seg.name() == "ORC" {
            groups.push(RxSegments {
                orc: seg,
                rxe: None,
                rxd: None,
                rxr: None,
                tq1: None,
                rxcs: Vec::new(),
                ntes: Vec::new(),
                dispense_ntes: Vec::new(),
            });
            continue;
        }
        let Some(g) = groups.last_mut() else {
            continue;
        };
        match seg.name() {
            "RXE" => g.rxe = g.rxe.or(Some(seg)),
            "RXD" => g.rxd = g.rxd.or(Some(seg)),
            "RXR" => g.rxr = g.rxr.or(Some(seg)),
            "TQ1" => g.tq1 = g.tq1.or(Some(seg)),
            // The RXC of an RXO repeat the RXE's: only the encoded ones are read.
            "RXC" if g.rxe.is_some() || g.rxd.is_some() => g.rxcs.push(seg),
            "NTE" if g.rxd.is_some() => g.dispense_ntes.push(seg),
            "NTE" => g.ntes.push(seg),
            _ => {}
        }
    }
    groups
}

fn control(msg: &V2Message<'_>, orc: &SegmentRef<'_, '_>) -> Result<String, MappingError> {
    orc.get(1)
        .upper_string()
        .ok_or_else(|| MappingError::Missing {
            path: msg.field_path(orc, 1),
            reason: "no order control code",
        })
}

/// A quantity from an amount field and a units field of the same segment (`None` without an
/// amount).
fn quantity(
    msg: &V2Message<'_>,
    seg: &SegmentRef<'_, '_>,
    amount: usize,
    units: usize,
) -> Result<Option<Quantity>, MappingError> {
    let Some(value) = decimal_value(msg, seg, amount, seg.get(amount))? else {
        return Ok(None);
    };
    Ok(Some(Quantity {
        value,
        max_value: None,
        units: datatypes::coded(&seg.field(units)),
    }))
}

/// A count (refills) from a numeric field: a whole number, `2` or `2.0`.
fn count(
    msg: &V2Message<'_>,
    seg: &SegmentRef<'_, '_>,
    field: usize,
) -> Result<Option<u32>, MappingError> {
    let value = seg.get(field);
    let Some(text) = value.trimmed() else {
        return Ok(None);
    };
    let whole = text.strip_suffix(".0").unwrap_or(text);
    whole
        .parse::<u32>()
        .map(Some)
        .map_err(|_| MappingError::BadNumber {
            path: msg.field_path(seg, field),
        })
}

/// The order's own fields (ORC, RXE, RXR, TQ1, RXC, NTE).
fn medication_order(
    msg: &V2Message<'_>,
    g: &RxSegments<'_, '_>,
) -> Result<MedicationOrder, MappingError> {
    let orc = &g.orc;
    let control = control(msg, orc)?;
    let status = if control == "RF" && orc.get(5).text().is_none() {
        OrderStatus::Placed
    } else {
        super::orders::order_status(msg, orc, Some(&control))?
    };
    let mut order = MedicationOrder::new(orc.get(2).string(), orc.get(3).string(), status);
    order.group_number = orc.get(4).string();
    order.control = Some(control);
    order.prescriber = datatypes::practitioner(&orc.field(12));
    order.ordered_at = ts(msg, orc, 9)?;
    if let Some(rxe) = &g.rxe {
        read_rxe(msg, rxe, &mut order)?;
    }
    if let Some(rxr) = &g.rxr {
        order.route = datatypes::coded(&rxr.field(1));
        order.site = datatypes::coded(&rxr.field(2));
    }
    if let Some(tq1) = &g.tq1 {
        read_tq1(msg, tq1, &mut order)?;
    }
    if order.filler_number.is_none() {
        order.filler_number.clone_from(&order.prescription_number);
    }
    for rxc in &g.rxcs {
        if let Some(code) = datatypes::coded(&rxc.field(2)) {
            order.components.push(MedicationComponent {
                component_type: rxc.get(1).upper_string(),
                code,
                amount: quantity(msg, rxc, 3, 4)?,
            });
        }
    }
    order.notes = notes(&g.ntes);
    Ok(order)
}

/// RXE: what the pharmacy encoded. TQ1 (read after) overrides the RXE-1 timing.
fn read_rxe(
    msg: &V2Message<'_>,
    rxe: &SegmentRef<'_, '_>,
    order: &mut MedicationOrder,
) -> Result<(), MappingError> {
    order.medication = datatypes::coded(&rxe.field(2));
    order.dose = quantity(msg, rxe, 3, 5)?;
    if let Some(dose) = &mut order.dose {
        dose.max_value = decimal_value(msg, rxe, 4, rxe.get(4))?;
    }
    order.dosage_form = datatypes::coded(&rxe.field(6));
    order.instructions = datatypes::coded(&rxe.field(7)).and_then(|c| c.label().map(str::to_owned));
    order.quantity = quantity(msg, rxe, 10, 11)?;
    order.refills = count(msg, rxe, 12)?;
    order.prescription_number = rxe.get(15).string();
    order.reason = datatypes::coded(&rxe.field(27));
    if order.prescriber.is_none() {
        order.prescriber = datatypes::practitioner(&rxe.field(13));
    }
    if order.ordered_at.is_none() {
        order.ordered_at = ts(msg, rxe, 32)?;
    }
    // RXE-1 (TQ, kept for backward compatibility): interval, start, end, priority.
    order.frequency = rxe
        .get_at(1, 1, 2, 1)
        .string()
        .map(|code| crate::model::Coded {
            code: Some(code),
            ..crate::model::Coded::default()
        });
    order.start = ts_value(msg, rxe, 1, rxe.get_comp(1, 4))?;
    order.end = ts_value(msg, rxe, 1, rxe.get_comp(1, 5))?;
    order.priority = rxe.get_comp(1, 6).text().and_then(super::orders::priority);
    Ok(())
}

/// TQ1 (v2.5+): repeat pattern, start, end, priority, text instruction; each when sent.
fn read_tq1(
    msg: &V2Message<'_>,
    tq1: &SegmentRef<'_, '_>,
    order: &mut MedicationOrder,
) -> Result<(), MappingError> {
    if let Some(pattern) = datatypes::coded(&tq1.field(3)) {
        order.frequency = Some(pattern);
    }
    if let Some(start) = ts(msg, tq1, 7)? {
        order.start = Some(start);
    }
    if let Some(end) = ts(msg, tq1, 8)? {
        order.end = Some(end);
    }
    if let Some(p) = tq1.get(9).text().and_then(super::orders::priority) {
        order.priority = Some(p);
    }
    if let Some(text) = tq1.get(11).trimmed() {
        order.instructions = Some(text.to_owned());
    }
    Ok(())
}

/// The dispense of an RDS order group (RXD and the NTE after it).
fn dispense_from_rxd(
    msg: &V2Message<'_>,
    rxd: &SegmentRef<'_, '_>,
    ntes: &[SegmentRef<'_, '_>],
) -> Result<MedicationDispense, MappingError> {
    let mut lines = Vec::new();
    lines.extend(datatypes::coded(&rxd.field(9)).and_then(|c| c.label().map(str::to_owned)));
    lines.extend(notes(ntes));
    Ok(MedicationDispense {
        sequence: rxd.get(1).string(),
        medication: datatypes::coded(&rxd.field(2)),
        dispensed_at: ts(msg, rxd, 3)?,
        quantity: quantity(msg, rxd, 4, 5)?,
        dosage_form: datatypes::coded(&rxd.field(6)),
        prescription_number: rxd.get(7).string(),
        refills_remaining: count(msg, rxd, 8)?,
        dispenser: datatypes::practitioner(&rxd.field(10)),
        notes: (!lines.is_empty()).then(|| lines.join("\n")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::from_v2::{map, Mapped};

    /// Maps an MSH of `message_type`, a PID and `segments`.
    fn mapped(message_type: &str, segments: &[&str]) -> Result<Box<Event>, MappingError> {
        let mut text = format!(
            "MSH|^~\\&|HIS|RUH|PHARM|RUH|20260615110000||{message_type}|C1|P|2.5.1\r\
             PID|1||MRN-1^^^HIS^MR||Test^Rx\r"
        );
        for s in segments {
            text.push_str(s);
            text.push('\r');
        }
        match map(&V2Message::parse(&text).expect("parses"))? {
            Mapped::Event(e) => Ok(e),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field_and_never_the_value() {
        let no_number = mapped("RDE^O11", &["ORC|NW", "RXE||A^Aspirin"]);
        assert_eq!(no_number.expect_err("no number").path(), "ORC-2");
        let no_rxd = mapped("RDS^O13", &["ORC|RE|RX-1"]);
        assert!(no_rxd.expect_err("no RXD").to_string().contains("RXD"));
        let bad_refills = mapped(
            "RDE^O11",
            &["ORC|NW|RX-1", "RXE||A^Aspirin||||||||||twelve"],
        );
        let e = bad_refills.expect_err("bad refills");
        assert_eq!(e.path(), "RXE-12");
        assert!(!e.to_string().contains("twelve"));
        let bad_control = mapped("RDE^O11", &["ORC|ZZ|RX-1"]);
        assert_eq!(bad_control.expect_err("bad ORC-1").path(), "ORC-1");
    }

    #[test]
    fn a_refill_request_and_a_discontinue_get_their_kinds() {
        let refill = mapped("RDE^O25", &["ORC|RF|RX-1", "RXE||A^Aspirin"]).expect("maps");
        assert_eq!(refill.kind, EventKind::MedicationOrderUpdated);
        assert_eq!(refill.medication_orders[0].status, OrderStatus::Placed);
        let stop = mapped("RDE^O11", &["ORC|DC|RX-1"]).expect("maps");
        assert_eq!(stop.kind, EventKind::MedicationOrderCancelled);
        assert_eq!(stop.medication_orders[0].status, OrderStatus::Discontinued);
    }
}
