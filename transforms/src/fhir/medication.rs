//! Medication orders <-> FHIR R4 MedicationRequest, and their dispenses <-> MedicationDispense.
//!
//! Out ([`medication_request`], [`medication_dispense`]), as the v2-to-FHIR IG maps RXE, RXR,
//! TQ1, RXC and RXD:
//! - identifiers: placer and filler numbers (`urn:switchboard:order-placer`/`-filler`, as for
//!   ServiceRequest) and the prescription number (`urn:switchboard:prescription`); the id
//!   derives from the first, so an RDE and the RDS of the same order address one resource;
//! - `medicationCodeableConcept` from the medication (a `data-absent-reason` when the message
//!   names none, e.g. a bare cancel); with components (RXC) a contained Medication whose
//!   ingredients are the components (`isActive` true for an additive, false for the base; the
//!   amount as `strength` per one dose);
//! - one `dosageInstruction`: text (instructions), `timing.code` (frequency),
//!   `timing.repeat.boundsPeriod` (start, end), route, site, `doseAndRate.doseQuantity` (or
//!   `doseRange` for a range dose);
//! - `dispenseRequest.quantity` and `numberOfRepeatsAllowed` (refills);
//! - status: placed, scheduled, in progress → `active`; completed → `completed`; on hold →
//!   `on-hold`; cancelled → `cancelled`; discontinued and replaced → `stopped`; error →
//!   `entered-in-error`. Intent is `order`.
//!
//! A dispense is a MedicationDispense, status `completed`, identified by the order's key and
//! the dispense sequence (`urn:switchboard:dispense`, `<order number>/<sequence>`), with
//! `authorizingPrescription` the order's MedicationRequest.
//!
//! In (`order_of_request`, `order_of_dispense`, used by `to_model`) reads the same elements
//! back: numbers by identifier system or type (`PLAC`, `FILL`; another system is the placer
//! number), the medication from its CodeableConcept or a contained Medication (a reference to
//! any other Medication is refused: the engine keeps no medication catalogue), a timing
//! without a code as text (`3 per 1 d`).

use fhirbolt::model::r4::resources as r;
use fhirbolt::model::r4::types as t;
use fhirbolt::model::r4::Resource;

use super::from_model::{
    codeable, date_time, encounter_ref, fstr, plain_identifier, practitioner_ref, priority_code,
    reference, resource_id,
};
use super::systems;
use super::to_model::{coded, decimal, timestamp};
use super::FhirError;
use crate::model::{
    Coded, Identifier, MedicationComponent, MedicationDispense, MedicationOrder, OrderStatus,
    Quantity,
};

/// Identifier system of prescription numbers (RXE-15, RXD-7).
pub const PRESCRIPTION_SYSTEM: &str = "urn:switchboard:prescription";
/// Identifier system of dispenses (`<order number>/<sequence>`).
pub const DISPENSE_SYSTEM: &str = "urn:switchboard:dispense";
const DATA_ABSENT: &str = "http://hl7.org/fhir/StructureDefinition/data-absent-reason";
/// The id of the contained Medication of an order with components.
const CONTAINED_MEDICATION: &str = "medication";

/// The identifier an order's resources are keyed by: placer, else filler, else prescription
/// number.
pub(crate) fn order_key(m: &MedicationOrder) -> Option<(&'static str, &str)> {
    m.placer_number
        .as_deref()
        .map(|v| (systems::ORDER_PLACER, v))
        .or_else(|| {
            m.filler_number
                .as_deref()
                .map(|v| (systems::ORDER_FILLER, v))
        })
        .or_else(|| {
            m.prescription_number
                .as_deref()
                .map(|v| (PRESCRIPTION_SYSTEM, v))
        })
}

fn identifiers(m: &MedicationOrder) -> Vec<t::Identifier> {
    let mut ids = Vec::new();
    let pairs = [
        (systems::ORDER_PLACER, m.placer_number.as_deref()),
        (systems::ORDER_FILLER, m.filler_number.as_deref()),
        (PRESCRIPTION_SYSTEM, m.prescription_number.as_deref()),
    ];
    for (system, value) in pairs {
        ids.extend(value.map(|v| plain_identifier(system, v)));
    }
    ids
}

fn status_code(s: OrderStatus) -> &'static str {
    match s {
        OrderStatus::Placed | OrderStatus::Scheduled | OrderStatus::InProgress => "active",
        OrderStatus::Completed => "completed",
        OrderStatus::OnHold => "on-hold",
        OrderStatus::Cancelled => "cancelled",
        OrderStatus::Discontinued | OrderStatus::Replaced => "stopped",
        OrderStatus::Error => "entered-in-error",
    }
}

/// A FHIR Quantity: the value, the unit's text (else code) as `unit`, its code and system.
fn quantity(q: &Quantity) -> t::Quantity {
    let units = q.units.as_ref();
    t::Quantity {
        value: Some(q.value.as_str().into()),
        unit: units.and_then(Coded::label).map(fstr),
        system: units
            .filter(|u| u.code.is_some())
            .and_then(|u| u.system.as_deref())
            .map(|s| super::code_systems::to_uri(s).into_owned().into()),
        code: units
            .filter(|u| u.system.is_some())
            .and_then(|u| u.code.as_deref())
            .map(Into::into),
        ..Default::default()
    }
}

/// A medication as a CodeableConcept, or one that says the sender gave none.
fn medication_concept(c: Option<&Coded>) -> t::CodeableConcept {
    match c {
        Some(c) => codeable(c),
        None => t::CodeableConcept {
            extension: vec![super::from_model::ext(
                DATA_ABSENT,
                t::ExtensionValue::Code("unknown".into()),
            )],
            ..Default::default()
        },
    }
}

/// The contained Medication of an order with components (RXC).
fn contained_medication(m: &MedicationOrder) -> r::Medication {
    let per_dose = t::Quantity {
        value: Some("1".into()),
        unit: Some(fstr("dose")),
        ..Default::default()
    };
    r::Medication {
        id: Some(CONTAINED_MEDICATION.into()),
        code: m.medication.as_ref().map(|c| Box::new(codeable(c))),
        form: m.dosage_form.as_ref().map(|c| Box::new(codeable(c))),
        ingredient: m
            .components
            .iter()
            .map(|c| r::MedicationIngredient {
                item: r::MedicationIngredientItem::CodeableConcept(Box::new(codeable(&c.code))),
                is_active: c
                    .component_type
                    .as_deref()
                    .and_then(|k| match k {
                        "A" => Some(true),
                        "B" => Some(false),
                        _ => None,
                    })
                    .map(Into::into),
                strength: c.amount.as_ref().map(|a| {
                    Box::new(t::Ratio {
                        numerator: Some(Box::new(quantity(a))),
                        denominator: Some(Box::new(per_dose.clone())),
                        ..Default::default()
                    })
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// The one Dosage of an order (None when it says nothing of how to take it).
fn dosage(m: &MedicationOrder) -> Option<t::Dosage> {
    let bounds = (m.start.is_some() || m.end.is_some()).then(|| {
        t::TimingRepeatBounds::Period(Box::new(t::Period {
            start: m.start.as_ref().map(|d| date_time(d).into()),
            end: m.end.as_ref().map(|d| date_time(d).into()),
            ..Default::default()
        }))
    });
    let timing = (bounds.is_some() || m.frequency.is_some()).then(|| {
        Box::new(t::Timing {
            code: m.frequency.as_ref().map(|c| Box::new(codeable(c))),
            repeat: bounds.map(|b| t::TimingRepeat {
                bounds: Some(b),
                ..Default::default()
            }),
            ..Default::default()
        })
    });
    let dose = m.dose.as_ref().map(|d| match &d.max_value {
        Some(max) => {
            let high = Quantity {
                value: max.clone(),
                max_value: None,
                units: d.units.clone(),
            };
            t::DosageDoseAndRateDose::Range(Box::new(t::Range {
                low: Some(Box::new(quantity(d))),
                high: Some(Box::new(quantity(&high))),
                ..Default::default()
            }))
        }
        None => t::DosageDoseAndRateDose::Quantity(Box::new(quantity(d))),
    });
    let d = t::Dosage {
        text: m.instructions.as_deref().map(fstr),
        timing,
        route: m.route.as_ref().map(|c| Box::new(codeable(c))),
        site: m.site.as_ref().map(|c| Box::new(codeable(c))),
        dose_and_rate: dose
            .map(|dose| t::DosageDoseAndRate {
                dose: Some(dose),
                ..Default::default()
            })
            .into_iter()
            .collect(),
        ..Default::default()
    };
    (d != t::Dosage::default()).then_some(d)
}

fn note(text: Option<&String>) -> Vec<t::Annotation> {
    text.map(|n| t::Annotation {
        text: n.as_str().into(),
        ..Default::default()
    })
    .into_iter()
    .collect()
}

/// FHIR MedicationRequest of a medication order, `None` without any order number.
pub fn medication_request(
    m: &MedicationOrder,
    subject: Option<&Identifier>,
    visit_number: Option<&str>,
) -> Option<r::MedicationRequest> {
    let (system, value) = order_key(m)?;
    let mut contained = Vec::new();
    let medication = if m.components.is_empty() {
        r::MedicationRequestMedication::CodeableConcept(Box::new(medication_concept(
            m.medication.as_ref(),
        )))
    } else {
        contained.push(Resource::Medication(Box::new(contained_medication(m))));
        r::MedicationRequestMedication::Reference(Box::new(t::Reference {
            reference: Some(fstr(&format!("#{CONTAINED_MEDICATION}"))),
            ..Default::default()
        }))
    };
    Some(r::MedicationRequest {
        id: Some(resource_id("MedicationRequest", system, value).into()),
        contained,
        identifier: identifiers(m),
        status: status_code(m.status).into(),
        intent: "order".into(),
        priority: m.priority.map(|p| priority_code(p).into()),
        medication,
        subject: Box::new(
            subject
                .map(super::from_model::patient_ref)
                .unwrap_or_default(),
        ),
        encounter: visit_number.map(|v| Box::new(encounter_ref(v))),
        authored_on: m.ordered_at.as_ref().map(|d| date_time(d).into()),
        requester: m
            .prescriber
            .as_ref()
            .and_then(practitioner_ref)
            .map(Box::new),
        reason_code: m.reason.iter().map(codeable).collect(),
        group_identifier: m
            .group_number
            .as_deref()
            .map(|g| Box::new(plain_identifier(systems::ORDER_PLACER, g))),
        note: note(m.notes.as_ref()),
        dosage_instruction: dosage(m).into_iter().collect(),
        dispense_request: (m.quantity.is_some() || m.refills.is_some()).then(|| {
            r::MedicationRequestDispenseRequest {
                quantity: m.quantity.as_ref().map(|q| Box::new(quantity(q))),
                number_of_repeats_allowed: m.refills.map(Into::into),
                ..Default::default()
            }
        }),
        ..Default::default()
    })
}

/// FHIR MedicationDispense of the dispense of a medication order, `None` when the order has no
/// dispense or no number.
pub fn medication_dispense(
    m: &MedicationOrder,
    subject: Option<&Identifier>,
    visit_number: Option<&str>,
) -> Option<r::MedicationDispense> {
    let d = m.dispense.as_ref()?;
    let (system, value) = order_key(m)?;
    let key = format!("{value}/{}", d.sequence.as_deref().unwrap_or("1"));
    Some(r::MedicationDispense {
        id: Some(resource_id("MedicationDispense", DISPENSE_SYSTEM, &key).into()),
        identifier: vec![plain_identifier(DISPENSE_SYSTEM, &key)],
        status: "completed".into(),
        medication: r::MedicationDispenseMedication::CodeableConcept(Box::new(medication_concept(
            d.medication.as_ref().or(m.medication.as_ref()),
        ))),
        subject: subject.map(|p| Box::new(super::from_model::patient_ref(p))),
        context: visit_number.map(|v| Box::new(encounter_ref(v))),
        performer: d
            .dispenser
            .as_ref()
            .and_then(practitioner_ref)
            .map(|actor| r::MedicationDispensePerformer {
                actor: Box::new(actor),
                ..Default::default()
            })
            .into_iter()
            .collect(),
        authorizing_prescription: vec![{
            let mut r = reference(
                "MedicationRequest",
                &resource_id("MedicationRequest", system, value),
                None,
            );
            r.identifier = Some(Box::new(plain_identifier(system, value)));
            r
        }],
        quantity: d.quantity.as_ref().map(|q| Box::new(quantity(q))),
        when_handed_over: d.dispensed_at.as_ref().map(|t| date_time(t).into()),
        note: note(d.notes.as_ref()),
        dosage_instruction: dosage(m).into_iter().collect(),
        ..Default::default()
    })
}

/// Reads a primitive's value.
macro_rules! val {
    ($e:expr) => {
        $e.as_ref().and_then(|x| x.value.as_deref())
    };
}

fn owned(v: Option<&str>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty()).map(str::to_owned)
}

fn quantity_of(q: &t::Quantity, path: &str) -> Result<Option<Quantity>, FhirError> {
    let Some(value) = val!(q.value) else {
        return Ok(None);
    };
    let code = owned(val!(q.code));
    let text = owned(val!(q.unit)).filter(|u| Some(u) != code.as_ref());
    let units = (code.is_some() || text.is_some()).then(|| Coded {
        code,
        text,
        system: val!(q.system).map(|s| super::code_systems::to_name(s).into_owned()),
    });
    Ok(Some(Quantity {
        value: decimal(value, &format!("{path}.value"))?,
        max_value: None,
        units,
    }))
}

fn time_of(v: Option<&str>, path: &str) -> Result<Option<crate::model::Timestamp>, FhirError> {
    v.map(|v| timestamp(v, path)).transpose()
}

fn status_of(code: &str) -> OrderStatus {
    match code {
        "completed" => OrderStatus::Completed,
        "on-hold" => OrderStatus::OnHold,
        "cancelled" => OrderStatus::Cancelled,
        "stopped" => OrderStatus::Discontinued,
        "entered-in-error" => OrderStatus::Error,
        _ => OrderStatus::Placed,
    }
}

/// The numbers of an order from its identifiers: placer, filler and prescription number by
/// system or by identifier type (`PLAC`, `FILL`); an identifier of another system is the
/// placer number when there is none.
fn numbers(m: &mut MedicationOrder, ids: &[t::Identifier]) {
    for id in ids {
        let value = owned(val!(id.value));
        let type_code = id
            .r#type
            .as_deref()
            .and_then(|c| c.coding.first())
            .and_then(|c| val!(c.code));
        match (val!(id.system), type_code) {
            (Some(systems::ORDER_FILLER), _) | (_, Some("FILL")) => m.filler_number = value,
            (Some(PRESCRIPTION_SYSTEM), _) => m.prescription_number = value,
            (Some(systems::ORDER_PLACER), _) | (_, Some("PLAC")) => m.placer_number = value,
            _ if m.placer_number.is_none() => m.placer_number = value,
            _ => {}
        }
    }
}

/// The medication and components of a request: its CodeableConcept, or the contained
/// Medication it references.
fn medication_of(
    m: &mut MedicationOrder,
    medication: &r::MedicationRequestMedication,
    contained: &[Resource],
    base: &str,
) -> Result<(), FhirError> {
    match medication {
        r::MedicationRequestMedication::CodeableConcept(c) => m.medication = coded(c),
        r::MedicationRequestMedication::Reference(reference) => {
            let id = val!(reference.reference).and_then(|r| r.strip_prefix('#'));
            let found = contained.iter().find_map(|res| match res {
                Resource::Medication(x) if val!(x.id) == id && id.is_some() => Some(x),
                _ => None,
            });
            let Some(med) = found else {
                return Err(FhirError::unprocessable(
                    format!("{base}.medicationReference"),
                    "a medication reference must name a contained Medication",
                ));
            };
            m.medication = med.code.as_deref().and_then(coded);
            m.dosage_form = med.form.as_deref().and_then(coded);
            for (i, ing) in med.ingredient.iter().enumerate() {
                let r::MedicationIngredientItem::CodeableConcept(c) = &ing.item else {
                    continue;
                };
                let Some(code) = coded(c) else { continue };
                let path = format!("{base}.contained.ingredient[{i}].strength.numerator");
                let amount = match ing.strength.as_deref().and_then(|s| s.numerator.as_deref()) {
                    Some(q) => quantity_of(q, &path)?,
                    None => None,
                };
                m.components.push(MedicationComponent {
                    component_type: ing
                        .is_active
                        .as_ref()
                        .and_then(|b| b.value)
                        .map(|a| if a { "A" } else { "B" }.to_owned()),
                    code,
                    amount,
                });
            }
        }
        _ => {}
    }
    Ok(())
}

/// A timing without a code, as text: `2 per 1 d` from `repeat.frequency`, `period` and
/// `periodUnit` (the model's frequency is a code or a text).
fn repeat_text(r: &t::TimingRepeat) -> Option<Coded> {
    let frequency = r.frequency.as_ref().and_then(|f| f.value)?;
    let period = val!(r.period)?;
    let unit = val!(r.period_unit)?;
    Some(Coded {
        text: Some(format!("{frequency} per {period} {unit}")),
        ..Coded::default()
    })
}

/// The order's dosage from the first Dosage: text, timing code and bounds, route, site, dose.
fn dosage_of(m: &mut MedicationOrder, d: &t::Dosage, path: &str) -> Result<(), FhirError> {
    m.instructions = owned(val!(d.text));
    m.route = d.route.as_deref().and_then(coded);
    m.site = d.site.as_deref().and_then(coded);
    if let Some(timing) = d.timing.as_deref() {
        m.frequency = timing
            .code
            .as_deref()
            .and_then(coded)
            .or_else(|| timing.repeat.as_ref().and_then(repeat_text));
        if let Some(t::TimingRepeatBounds::Period(p)) =
            timing.repeat.as_ref().and_then(|r| r.bounds.as_ref())
        {
            let bounds = format!("{path}.timing.repeat.boundsPeriod");
            m.start = time_of(val!(p.start), &format!("{bounds}.start"))?;
            m.end = time_of(val!(p.end), &format!("{bounds}.end"))?;
        }
    }
    let dose_path = format!("{path}.doseAndRate[0]");
    match d.dose_and_rate.first().and_then(|x| x.dose.as_ref()) {
        Some(t::DosageDoseAndRateDose::Quantity(q)) => {
            m.dose = quantity_of(q, &format!("{dose_path}.doseQuantity"))?;
        }
        Some(t::DosageDoseAndRateDose::Range(range)) => {
            let low = match range.low.as_deref() {
                Some(q) => quantity_of(q, &format!("{dose_path}.doseRange.low"))?,
                None => None,
            };
            let high = match range.high.as_deref() {
                Some(q) => quantity_of(q, &format!("{dose_path}.doseRange.high"))?,
                None => None,
            };
            m.dose = low.map(|mut q| {
                q.max_value = high.map(|h| h.value);
                q
            });
        }
        _ => {}
    }
    Ok(())
}

/// A medication order from a MedicationRequest, all but the prescriber (a reference the
/// caller resolves).
///
/// # Errors
/// [`FhirError::Unprocessable`] without any order number, with a medication reference to no
/// contained Medication, or with an unparsable date or amount.
pub(crate) fn order_of_request(
    x: &r::MedicationRequest,
    base: &str,
) -> Result<MedicationOrder, FhirError> {
    let mut m = MedicationOrder::new(None, None, status_of(val!(Some(&x.status)).unwrap_or("")));
    numbers(&mut m, &x.identifier);
    if m.placer_number.is_none() && m.filler_number.is_none() && m.prescription_number.is_none() {
        return Err(FhirError::unprocessable(
            format!("{base}.identifier"),
            "a medication request needs a placer, filler or prescription number",
        ));
    }
    m.group_number = x
        .group_identifier
        .as_deref()
        .and_then(|i| owned(val!(i.value)));
    m.priority = match val!(x.priority) {
        Some("stat") => Some(crate::model::Priority::Stat),
        Some("asap") => Some(crate::model::Priority::Asap),
        Some("urgent") => Some(crate::model::Priority::TimingCritical),
        Some("routine") => Some(crate::model::Priority::Routine),
        _ => None,
    };
    medication_of(&mut m, &x.medication, &x.contained, base)?;
    m.ordered_at = time_of(val!(x.authored_on), &format!("{base}.authoredOn"))?;
    m.reason = x.reason_code.first().and_then(coded);
    m.notes = x.note.first().and_then(|n| owned(n.text.value.as_deref()));
    if let Some(d) = x.dosage_instruction.first() {
        dosage_of(&mut m, d, &format!("{base}.dosageInstruction[0]"))?;
    }
    if let Some(dr) = &x.dispense_request {
        if let Some(q) = dr.quantity.as_deref() {
            m.quantity = quantity_of(q, &format!("{base}.dispenseRequest.quantity"))?;
        }
        m.refills = dr.number_of_repeats_allowed.as_ref().and_then(|n| n.value);
    }
    Ok(m)
}

/// The order a MedicationDispense reports, with its dispense, all but the dispenser (a
/// reference the caller resolves): the order's numbers from the authorizing prescription's
/// identifier, else the dispense's own key.
///
/// # Errors
/// [`FhirError::Unprocessable`] without an identifier or prescription to key it by, or with
/// an unparsable date or amount.
pub(crate) fn order_of_dispense(
    x: &r::MedicationDispense,
    base: &str,
) -> Result<MedicationOrder, FhirError> {
    let mut m = MedicationOrder::new(None, None, OrderStatus::InProgress);
    let own = x
        .identifier
        .iter()
        .find(|i| val!(i.system) == Some(DISPENSE_SYSTEM))
        .and_then(|i| owned(val!(i.value)));
    let prescription = x
        .authorizing_prescription
        .iter()
        .find_map(|r| r.identifier.as_deref());
    numbers(
        &mut m,
        prescription.map(std::slice::from_ref).unwrap_or_default(),
    );
    let (order_number, sequence) = match own.as_deref().and_then(|k| k.rsplit_once('/')) {
        Some((o, s)) => (Some(o.to_owned()), Some(s.to_owned())),
        None => (own.clone(), None),
    };
    if m.placer_number.is_none() && m.filler_number.is_none() && m.prescription_number.is_none() {
        m.placer_number = order_number;
    }
    if m.placer_number.is_none() && m.filler_number.is_none() && m.prescription_number.is_none() {
        return Err(FhirError::unprocessable(
            format!("{base}.authorizingPrescription"),
            "a medication dispense needs its prescription's identifier or its own",
        ));
    }
    let medication = match &x.medication {
        r::MedicationDispenseMedication::CodeableConcept(c) => coded(c),
        _ => None,
    };
    m.medication.clone_from(&medication);
    if let Some(d) = x.dosage_instruction.first() {
        dosage_of(&mut m, d, &format!("{base}.dosageInstruction[0]"))?;
    }
    let quantity = match x.quantity.as_deref() {
        Some(q) => quantity_of(q, &format!("{base}.quantity"))?,
        None => None,
    };
    m.dispense = Some(MedicationDispense {
        sequence,
        medication,
        dispensed_at: time_of(val!(x.when_handed_over), &format!("{base}.whenHandedOver"))?,
        quantity,
        notes: x.note.first().and_then(|n| owned(n.text.value.as_deref())),
        ..MedicationDispense::default()
    });
    Ok(m)
}
