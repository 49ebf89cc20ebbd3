//! DFT^P03 and DFT^P11 to canonical charges.
//!
//! One [`Charge`] per FT1, in message order. Fields: FT1-2 transaction id, FT1-3 batch, FT1-4
//! transaction date (TS in v2.3/v2.4, the start of a DR range from v2.5: component 1,
//! subcomponent 1 in both), FT1-5 posting date, FT1-6 type (table 0017), FT1-7 code with text
//! from FT1-7.2 else FT1-8, FT1-10 quantity, FT1-11/FT1-12 extended/unit amount (CP: MO-1
//! amount and MO-2 currency as subcomponents of component 1), FT1-13 department, FT1-16
//! location, FT1-20 performed by, FT1-21 ordered by, FT1-25 procedure. The account is PID-18,
//! the visit PV1-19. Amounts stay exact decimal strings.
//!
//! Diagnoses (`ChargeItem.reason`): FT1-19 (every repetition), and in DFT^P11 the DG1 of the
//! FT1's FINANCIAL group (see [`line_diagnoses`]); every DG1 is also a Condition of the patient.
//!
//! Status: `reversed` for a credit (FT1-6 `CD`) or a charge with a negative amount or quantity
//! (how many HIS reverse a line); otherwise `posted`. The event is `charge_reversed` when every
//! line is reversed, else `charge_posted`.
//!
//! Payment outcome (our rule, agreed with the sites, since HL7 has no field for it): a `ZPY`
//! segment right after an FT1 gives the outcome of that line: ZPY-1 result (`S`, `SUCCESS`,
//! `PAID`, `A`, `APPROVED` → success; `F`, `FAILED`, `FAILURE`, `DECLINED`, `D`, `E`, `ERROR` →
//! failure; anything else is rejected), ZPY-2 reason text, ZPY-3 payment reference. Without
//! ZPY, a line with FT1-6 `PY` is a payment received, so success, with FT1-2 as the
//! reference; other lines carry no payment outcome.

use super::datatypes::UpperCode;
use crate::hl7v2::access::{SegmentRef, V2Message};
use crate::model::{
    Charge, ChargeStatus, Coded, Diagnosis, Event, EventKind, Patient, PaymentOutcome,
    PaymentResult, TransactionType,
};

use super::adt::{
    coverages, diagnoses, diagnosis, encounter_from_pv1_into, guarantors, patient_from_pid_into,
    procedures,
};
use super::{
    collect_practitioners, datatypes, decimal_value, new_event, set_kind, source_from_msh, ts,
    ts_value, MappingError,
};

/// Maps a DFT^P03 or DFT^P11.
///
/// # Errors
/// [`MappingError`] without PID/patient identifier, without FT1, without FT1-6, with an
/// unknown ZPY-1, or with unparsable dates or amounts.
pub fn event_from_dft(msg: &V2Message<'_>) -> Result<Box<Event>, MappingError> {
    // The kind (posted or reversed) is known once the charges are read; the event is made
    // first so that the patient and the visit are filled in place.
    let mut event = new_event(EventKind::ChargePosted, source_from_msh(msg)?);
    let patient = event.patient.insert(Patient::default());
    patient_from_pid_into(msg, patient)?;
    // DG1 of the DFT (visit level and per FT1 group): Conditions, as the IG maps DG1 anywhere.
    patient.diagnoses = diagnoses(msg)?;
    // PR1 of the FT1 groups: Procedures (the IG maps PR1 to Procedure wherever it stands).
    patient.procedures = procedures(msg)?;
    // GT1 (DFT_P03/P11 carry the guarantors of the account charged).
    patient.guarantors = guarantors(msg)?;
    // IN1/IN2 (the INSURANCE group of DFT_P03/P11): Coverages.
    patient.coverages = coverages(msg)?;
    encounter_from_pv1_into(msg, &mut event.encounter)?;
    let account = msg.segment("PID").and_then(|pid| pid.get(18).string());
    let visit_number = msg.segment("PV1").and_then(|pv1| pv1.get(19).string());

    let groups = msg.groups("FT1", &["ZPY"]);
    if groups.is_empty() {
        return Err(MappingError::Missing {
            path: "FT1".into(),
            reason: "no financial transaction segment",
        });
    }
    let line_diagnoses = line_diagnoses(msg)?;
    let mut charges = Vec::with_capacity(groups.len());
    for (i, group) in groups.iter().enumerate() {
        let mut charge = charge_from_ft1(msg, &group.head, group.named("ZPY").next())?;
        charge.account.clone_from(&account);
        charge.visit_number.clone_from(&visit_number);
        for d in line_diagnoses.get(i).into_iter().flatten() {
            if !charge.diagnoses.contains(&d.code) {
                charge.diagnoses.push(d.code.clone());
            }
        }
        charges.push(charge);
    }
    let kind = if charges.iter().all(|c| c.status == ChargeStatus::Reversed) {
        EventKind::ChargeReversed
    } else {
        EventKind::ChargePosted
    };
    set_kind(&mut event, kind);
    event.charges = charges;
    collect_practitioners(&mut event);
    Ok(event)
}

/// The DG1 of each FT1's group, by FT1 (in message order): DFT_P11 puts a DG1 group in each
/// FINANCIAL group, after its FT1 (a DG1 before the first FT1 is the visit's). DFT_P03 has its
/// DG1 after every FINANCIAL group, at visit level: no DG1 is a line's there.
///
/// # Errors
/// As [`diagnoses`] for the DG1 read.
fn line_diagnoses(msg: &V2Message<'_>) -> Result<Vec<Vec<Diagnosis>>, MappingError> {
    let p11 = msg.segment("MSH").is_some_and(|msh| {
        msh.get_comp(9, 2)
            .text()
            .is_some_and(|t| UpperCode::new(t.trim()).as_str() == "P11")
    });
    let mut out: Vec<Vec<Diagnosis>> = Vec::new();
    if !p11 {
        return Ok(out);
    }
    for seg in msg.segments() {
        match seg.name() {
            "FT1" => out.push(Vec::new()),
            "DG1" => {
                if let Some(line) = out.last_mut() {
                    line.extend(diagnosis(msg, &seg, None)?);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// One FT1 (with its optional ZPY) as a charge, without account and visit.
///
/// # Errors
/// As [`event_from_dft`].
pub fn charge_from_ft1(
    msg: &V2Message<'_>,
    ft1: &SegmentRef<'_, '_>,
    zpy: Option<&SegmentRef<'_, '_>>,
) -> Result<Charge, MappingError> {
    let type_code = ft1
        .get(6)
        .string()
        .map(|mut t| {
            t.make_ascii_uppercase();
            t
        })
        .ok_or_else(|| MappingError::Missing {
            path: msg.field_path(ft1, 6),
            reason: "no transaction type",
        })?;
    let transaction_type = match type_code.as_str() {
        "CG" => TransactionType::Charge,
        "CD" => TransactionType::Credit,
        "PY" => TransactionType::Payment,
        "AJ" => TransactionType::Adjustment,
        _ => TransactionType::Other,
    };
    let quantity = decimal_value(msg, ft1, 10, ft1.get(10))?;
    let amount = decimal_value(msg, ft1, 11, ft1.get_at(11, 1, 1, 1))?;
    let unit_amount = decimal_value(msg, ft1, 12, ft1.get_at(12, 1, 1, 1))?;
    let currency = ft1
        .get_at(11, 1, 1, 2)
        .string()
        .or_else(|| ft1.get_at(12, 1, 1, 2).string());

    let negative = amount.as_ref().is_some_and(|a| a.is_negative())
        || quantity.as_ref().is_some_and(|q| q.is_negative());
    let status = match transaction_type {
        TransactionType::Credit => ChargeStatus::Reversed,
        TransactionType::Charge if negative => ChargeStatus::Reversed,
        _ => ChargeStatus::Posted,
    };

    let mut code = datatypes::coded(&ft1.field(7));
    if let Some(description) = ft1.get(8).string() {
        let code = code.get_or_insert_with(Coded::default);
        if code.text.is_none() {
            code.text = Some(description);
        }
    }
    let payment = match zpy {
        Some(zpy) => Some(payment_from_zpy(msg, zpy)?),
        None if transaction_type == TransactionType::Payment => Some(PaymentOutcome {
            result: PaymentResult::Success,
            reason: None,
            reference: ft1.get(2).string(),
        }),
        None => None,
    };
    Ok(Charge {
        transaction_id: ft1.get(2).string(),
        batch_id: ft1.get(3).string(),
        account: None,
        visit_number: None,
        transaction_date: ts_value(msg, ft1, 4, ft1.get_at(4, 1, 1, 1))?,
        posting_date: ts(msg, ft1, 5)?,
        transaction_type,
        transaction_type_code: type_code,
        code,
        quantity,
        amount,
        unit_amount,
        currency,
        status,
        payment,
        department: datatypes::coded(&ft1.field(13)),
        location: datatypes::location(&ft1.field(16).rep(1)),
        performed_by: datatypes::practitioner(&ft1.field(20)),
        ordered_by: datatypes::practitioner(&ft1.field(21)),
        procedure: datatypes::coded(&ft1.field(25)),
        diagnoses: {
            let mut out: Vec<Coded> = Vec::new();
            for rep in ft1.field(19).reps() {
                if let Some(c) = datatypes::coded_at(&rep, 1) {
                    if !out.contains(&c) {
                        out.push(c);
                    }
                }
            }
            out
        },
    })
}

fn payment_from_zpy(
    msg: &V2Message<'_>,
    zpy: &SegmentRef<'_, '_>,
) -> Result<PaymentOutcome, MappingError> {
    let unknown = || MappingError::UnknownCode {
        path: msg.field_path(zpy, 1),
        reason: "payment result other than success or failure",
    };
    let result = match zpy
        .get(1)
        .text()
        .map(|r| UpperCode::new(r.trim()))
        .as_deref()
    {
        Some("S" | "SUCCESS" | "SUCCESSFUL" | "PAID" | "A" | "APPROVED") => PaymentResult::Success,
        Some("F" | "FAILED" | "FAILURE" | "DECLINED" | "D" | "E" | "ERROR") => {
            PaymentResult::Failure
        }
        Some(_) => return Err(unknown()),
        None => {
            return Err(MappingError::Missing {
                path: msg.field_path(zpy, 1),
                reason: "no payment result",
            })
        }
    };
    Ok(PaymentOutcome {
        result,
        reason: zpy.get(2).string(),
        reference: zpy.get(3).string(),
    })
}
