//! Canonical -> FHIR R4: one resource per entity an event carries, with deterministic ids and
//! a transaction Bundle of conditional PUTs by identifier.
//!
//! Resource ids are [`resource_id`]s: a [`stable_id`] of the resource type and the entity's
//! first identifier, so every message about the same patient, appointment or charge addresses
//! the same resource, and references between the resources of one event need no lookup.
//! Values the model holds but R4 has no element for (VIP flag, blood type, payment outcome,
//! visit events, location parts) travel in `urn:switchboard:fhir:*` extensions (see
//! [`super::systems`]) so that FHIR -> canonical gives them back.

use fhirbolt::model::r4::resources as r;
use fhirbolt::model::r4::types as t;
use fhirbolt::model::r4::Resource;

use super::systems;
use super::FhirError;
use crate::model::stable_id;
use crate::model::ImagingStudy;
use crate::model::Schedule;
use crate::model::{
    Address, Allergy, Appointment, AppointmentStatus, Charge, ChargeStatus, Coded, Contact,
    ContactUse, Encounter, EncounterClass, Event, EventKind, Gender, HumanName, Identifier,
    IdentifierKind, Location, LocationStatus, Observation, Order, OrderStatus, Patient,
    PaymentResult, Practitioner, Precision, Priority, ResultReport, ResultStatus, Service,
    Timestamp,
};
use crate::model::{Coverage, Diagnosis, Facility, Guarantor, Phone, Procedure, Role, Specimen};

/// The deterministic id of a resource: [`stable_id`] of its type, identifier system and value.
pub fn resource_id(resource_type: &str, system: &str, value: &str) -> String {
    stable_id(&[resource_type, system, value])
}

/// Options of [`transaction_bundle`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleOptions {
    /// `batch` instead of `transaction` (entries succeed or fail one by one).
    pub batch: bool,
}

/// FHIR `dateTime` text of a timestamp: dates as sent (`YYYY`, `YYYY-MM`, `YYYY-MM-DD`),
/// times with seconds and an offset.
///
/// R4 requires an offset whenever a time is present. The sender's offset is kept; a time sent
/// without one was given the channel's `timezone` when the message was mapped (the engine
/// calls `Event::assume_timezone`), and one that still has none (the channel names no
/// timezone) is written as UTC (`Z`): the documented default, chosen over dropping the time of
/// day or writing a dateTime a FHIR server rejects.
pub(crate) fn date_time(ts: &Timestamp) -> String {
    match ts.precision() {
        Precision::Year | Precision::Month | Precision::Day => ts.to_iso(),
        Precision::Hour | Precision::Minute | Precision::Second | Precision::Fraction => {
            time_with_offset(ts)
        }
    }
}

/// FHIR `instant` text of a timestamp: always a full date-time with seconds and an offset
/// (see [`date_time`] for a time without one); a date alone is its first second.
pub(crate) fn instant(ts: &Timestamp) -> String {
    time_with_offset(ts)
}

fn time_with_offset(ts: &Timestamp) -> String {
    let dt = ts.naive_date_time();
    let mut s = dt.format("%Y-%m-%dT%H:%M:%S").to_string();
    if ts.precision() == Precision::Fraction {
        // The fraction as sent, digits and all (to_iso keeps them).
        let iso = ts.to_iso();
        if let Some(dot) = iso.find('.') {
            let digits: String = iso[dot..]
                .chars()
                .take_while(|c| *c == '.' || c.is_ascii_digit())
                .collect();
            s.push_str(&digits);
        }
    }
    match ts.offset_minutes() {
        Some(off) => {
            let sign = if off < 0 { '-' } else { '+' };
            let abs = off.unsigned_abs();
            s.push_str(&format!("{sign}{:02}:{:02}", abs / 60, abs % 60));
        }
        None => s.push('Z'),
    }
    s
}

pub(crate) fn fstr(v: &str) -> t::String {
    v.into()
}

pub(crate) fn identifier_system(id: &Identifier) -> &'static str {
    match id.kind {
        IdentifierKind::Mrn => systems::MRN,
        IdentifierKind::PatientNumber => systems::PATIENT_NUMBER,
        IdentifierKind::NationalId => systems::NATIONAL_ID,
        IdentifierKind::Passport => systems::PASSPORT,
        IdentifierKind::AccountNumber => systems::ACCOUNT,
        IdentifierKind::Other => systems::OTHER,
    }
}

pub(crate) fn plain_identifier(system: &str, value: &str) -> t::Identifier {
    t::Identifier {
        system: Some(system.into()),
        value: Some(fstr(value)),
        ..Default::default()
    }
}

fn patient_identifier(id: &Identifier) -> t::Identifier {
    t::Identifier {
        system: Some(identifier_system(id).into()),
        value: Some(fstr(&id.value)),
        r#type: id.type_code.as_deref().map(|code| {
            Box::new(t::CodeableConcept {
                coding: vec![t::Coding {
                    system: Some("http://terminology.hl7.org/CodeSystem/v2-0203".into()),
                    code: Some(code.into()),
                    ..Default::default()
                }],
                ..Default::default()
            })
        }),
        assigner: id.assigning_authority.as_deref().map(|a| {
            Box::new(t::Reference {
                display: Some(fstr(a)),
                ..Default::default()
            })
        }),
        ..Default::default()
    }
}

pub(crate) fn codeable(c: &Coded) -> t::CodeableConcept {
    let coding = if c.code.is_some() || c.system.is_some() {
        vec![t::Coding {
            system: c
                .system
                .as_deref()
                .map(|s| super::code_systems::to_uri(s).into_owned().into()),
            code: c.code.as_deref().map(Into::into),
            display: c.text.as_deref().map(fstr),
            ..Default::default()
        }]
    } else {
        Vec::new()
    };
    t::CodeableConcept {
        coding,
        text: c.text.as_deref().map(fstr),
        ..Default::default()
    }
}

fn human_name(n: &HumanName, second_language: bool) -> t::HumanName {
    let mut given = Vec::new();
    given.extend(n.given.as_deref().map(fstr));
    given.extend(n.middle.as_deref().map(fstr));
    let mut extension = Vec::new();
    if let Some(language) = n.language.as_deref() {
        extension.push(ext(
            systems::EXT_NAME_LANGUAGE,
            t::ExtensionValue::Code(language.into()),
        ));
    }
    if second_language {
        extension.push(ext(
            systems::EXT_SECOND_LANGUAGE_NAME,
            t::ExtensionValue::Boolean(true.into()),
        ));
    }
    t::HumanName {
        r#use: Some(if second_language { "usual" } else { "official" }.into()),
        family: n.family.as_deref().map(fstr),
        given,
        prefix: n.prefix.as_deref().map(fstr).into_iter().collect(),
        suffix: n.suffix.as_deref().map(fstr).into_iter().collect(),
        extension,
        ..Default::default()
    }
}

fn fhir_address(a: &Address) -> t::Address {
    t::Address {
        r#use: match a.use_ {
            Some(ContactUse::Home) => Some("home".into()),
            Some(ContactUse::Work) => Some("work".into()),
            _ => None,
        },
        line: a.lines.iter().map(|l| fstr(l)).collect(),
        city: a.city.as_deref().map(fstr),
        district: a.district.as_deref().map(fstr),
        state: a.state.as_deref().map(fstr),
        postal_code: a.postal_code.as_deref().map(fstr),
        country: a.country.as_deref().map(fstr),
        ..Default::default()
    }
}

/// `Patient.contact` of an NK1 contact (v2-to-FHIR IG NK1 -> Patient.contact):
/// relationship NK1-3 then role NK1-7 (both in `relationship`), name, phones, address.
fn patient_contact(c: &Contact) -> r::PatientContact {
    r::PatientContact {
        relationship: c.relationship.iter().chain(&c.role).map(codeable).collect(),
        name: (!c.name.is_empty()).then(|| {
            let mut n = human_name(&c.name, false);
            n.r#use = None;
            Box::new(n)
        }),
        telecom: c
            .phones
            .iter()
            .map(|ph| t::ContactPoint {
                system: Some("phone".into()),
                value: Some(fstr(&ph.number)),
                r#use: contact_use(ph.use_),
                ..Default::default()
            })
            .collect(),
        address: c.address.as_ref().map(|a| Box::new(fhir_address(a))),
        ..Default::default()
    }
}

/// FHIR `HumanName.use` of an XPN-7 name type (HL7 table 0200), after the v2-to-FHIR IG's
/// name type map: `L`/`C` official, `D`/`A` usual, `N` nickname, `M` maiden, `S`
/// anonymous, `T`/`TEMP` temp, `B`/`BAD`/`NOUSE`/`NB` old; anything else usual.
pub(crate) fn name_use(name_type: Option<&str>) -> &'static str {
    match name_type.map(str::trim) {
        Some("L" | "C") => "official",
        Some("N") => "nickname",
        Some("M") => "maiden",
        Some("S") => "anonymous",
        Some("T" | "TEMP") => "temp",
        Some("B" | "BAD" | "NOUSE" | "NB") => "old",
        _ => "usual",
    }
}

pub(crate) fn ext(url: &str, value: t::ExtensionValue) -> t::Extension {
    t::Extension {
        url: url.to_owned(),
        value: Some(value),
        ..Default::default()
    }
}

fn ext_str(url: &str, value: Option<&str>) -> Option<t::Extension> {
    value.map(|v| ext(url, t::ExtensionValue::String(fstr(v))))
}

pub(crate) fn reference(resource_type: &str, id: &str, display: Option<String>) -> t::Reference {
    t::Reference {
        reference: Some(fstr(&format!("{resource_type}/{id}"))),
        display: display.map(|d| fstr(&d)),
        ..Default::default()
    }
}

/// Id and reference of the patient an identifier names.
pub(crate) fn patient_ref(id: &Identifier) -> t::Reference {
    let mut r = reference(
        "Patient",
        &resource_id("Patient", identifier_system(id), &id.value),
        None,
    );
    r.identifier = Some(Box::new(patient_identifier(id)));
    r
}

/// The key identifier of a patient: the canonical primary identifier.
fn patient_key(p: &Patient) -> Option<&Identifier> {
    p.primary_identifier()
}

fn practitioner_key(p: &Practitioner) -> Option<(&'static str, &str)> {
    p.code
        .as_deref()
        .map(|c| (systems::PRACTITIONER, c))
        .or_else(|| p.licence_number.as_deref().map(|l| (systems::LICENCE, l)))
        .or_else(|| {
            p.registration_number
                .as_deref()
                .map(|r| (systems::REGISTRATION, r))
        })
}

pub(crate) fn practitioner_ref(p: &Practitioner) -> Option<t::Reference> {
    let (system, value) = practitioner_key(p)?;
    let name = p.name.full();
    let mut r = reference(
        "Practitioner",
        &resource_id("Practitioner", system, value),
        (!name.is_empty()).then_some(name),
    );
    r.identifier = Some(Box::new(plain_identifier(system, value)));
    Some(r)
}

fn location_ref(l: &Location) -> Option<t::Reference> {
    let code = l.code.as_deref()?;
    let mut r = reference(
        "Location",
        &resource_id("Location", systems::LOCATION, code),
        l.name.clone(),
    );
    r.identifier = Some(Box::new(plain_identifier(systems::LOCATION, code)));
    Some(r)
}

pub(crate) fn encounter_ref(visit_number: &str) -> t::Reference {
    let mut r = reference(
        "Encounter",
        &resource_id("Encounter", systems::VISIT, visit_number),
        None,
    );
    r.identifier = Some(Box::new(plain_identifier(systems::VISIT, visit_number)));
    r
}

fn gender_code(g: Gender) -> &'static str {
    match g {
        Gender::Male => "male",
        Gender::Female => "female",
        Gender::Other | Gender::Ambiguous => "other",
        Gender::Unknown | Gender::NotApplicable => "unknown",
    }
}

fn contact_use(u: Option<ContactUse>) -> Option<t::Code> {
    match u? {
        ContactUse::Home => Some("home".into()),
        ContactUse::Work => Some("work".into()),
        ContactUse::Mobile => Some("mobile".into()),
        ContactUse::Emergency => Some("temp".into()),
        ContactUse::Other => None,
    }
}

/// FHIR Patient of a canonical patient.
///
/// # Errors
/// [`FhirError::Render`] when the patient has no identifier (the resource id derives from it).
/// FHIR Condition of a diagnosis (v2-to-FHIR IG, DG1 -> Condition): DG1-3 code, category
/// `encounter-diagnosis`, the patient, the visit (an entry of the Bundle when the event
/// carries it, else a conditional reference by visit number), DG1-5 as `recordedDate`. The
/// id derives from the patient, the code and the visit.
pub fn condition(d: &Diagnosis, patient: &Identifier) -> r::Condition {
    let id = stable_id(&[
        "Condition",
        identifier_system(patient),
        &patient.value,
        d.code.system.as_deref().unwrap_or_default(),
        d.code
            .code
            .as_deref()
            .or(d.code.text.as_deref())
            .unwrap_or_default(),
        d.visit_number.as_deref().unwrap_or_default(),
    ]);
    r::Condition {
        id: Some(id.into()),
        category: vec![t::CodeableConcept {
            coding: vec![t::Coding {
                system: Some("http://terminology.hl7.org/CodeSystem/condition-category".into()),
                code: Some("encounter-diagnosis".into()),
                ..Default::default()
            }],
            ..Default::default()
        }],
        code: Some(Box::new(codeable(&d.code))),
        subject: Box::new(patient_ref(patient)),
        encounter: d
            .visit_number
            .as_deref()
            .map(|v| Box::new(encounter_ref(v))),
        recorded_date: d.time.as_ref().map(|t| date_time(t).into()),
        ..Default::default()
    }
}

/// FHIR Procedure of a procedure (v2-to-FHIR IG, PR1): PR1-3 code, PR1-5 as
/// `performedDateTime`, the practitioner as performer, the visit as encounter; `completed`,
/// since PR1 reports procedures done. The id derives from the patient, the code, the time and
/// the visit, so a resend updates it.
pub fn procedure(pr: &Procedure, patient: &Identifier) -> r::Procedure {
    let time = pr.time.as_ref().map(Timestamp::to_iso).unwrap_or_default();
    let id = stable_id(&[
        "Procedure",
        identifier_system(patient),
        &patient.value,
        pr.code.system.as_deref().unwrap_or_default(),
        pr.code
            .code
            .as_deref()
            .or(pr.code.text.as_deref())
            .unwrap_or_default(),
        &time,
        pr.visit_number.as_deref().unwrap_or_default(),
    ]);
    r::Procedure {
        id: Some(id.into()),
        status: "completed".into(),
        code: Some(Box::new(codeable(&pr.code))),
        subject: Box::new(patient_ref(patient)),
        encounter: pr
            .visit_number
            .as_deref()
            .map(|v| Box::new(encounter_ref(v))),
        performed: pr
            .time
            .as_ref()
            .map(|t| r::ProcedurePerformed::DateTime(date_time(t).into())),
        performer: pr
            .performer
            .as_ref()
            .and_then(practitioner_ref)
            .map(|actor| r::ProcedurePerformer {
                actor: Box::new(actor),
                ..Default::default()
            })
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

/// Identifier system of insurers named by IN1-3 (Coverage.payor).
pub(crate) const INSURER_SYSTEM: &str = "urn:switchboard:insurer";
/// Identifier system of policy numbers (IN1-36, Coverage.identifier).
pub(crate) const POLICY_SYSTEM: &str = "urn:switchboard:policy";
const COVERAGE_CLASS: &str = "http://terminology.hl7.org/CodeSystem/coverage-class";

/// Identifier system of the insured's group employers (IN1-10), `Coverage.policyHolder`.
pub(crate) const EMPLOYER_SYSTEM: &str = "urn:switchboard:employer";
/// Identifier system of plan member numbers (IN2-61).
pub(crate) const MEMBER_SYSTEM: &str = "urn:switchboard:member";
/// R5 `Coverage.subscriberId` (an Identifier) as an R4 cross-version extension, where the IG
/// puts IN1-49.
pub(crate) const EXT_SUBSCRIBER_ID: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Coverage.subscriberId";

/// An Organization named by an id (in `system`) or, without one, by its name; `None` when
/// neither is there. Returns the resource and a reference to it (with the identifier and the
/// name as display, so a reader without the Organization still knows it).
fn organization(
    system: &str,
    id: Option<&str>,
    name: Option<&str>,
    address: Option<&Address>,
) -> Option<(r::Organization, t::Reference)> {
    let (rid, identifier) = match (id, name) {
        (Some(v), _) => (
            resource_id("Organization", system, v),
            Some(plain_identifier(system, v)),
        ),
        (None, Some(n)) => (stable_id(&["Organization", system, "name", n]), None),
        (None, None) => return None,
    };
    let mut r = reference("Organization", &rid, name.map(str::to_owned));
    r.identifier = identifier.clone().map(Box::new);
    let org = r::Organization {
        id: Some(rid.into()),
        identifier: identifier.into_iter().collect(),
        active: Some(true.into()),
        name: name.map(fstr),
        address: address
            .filter(|a| !a.is_empty())
            .map(fhir_address)
            .into_iter()
            .collect(),
        ..Default::default()
    };
    Some((org, r))
}

/// FHIR Coverage of an insurance plan (v2-to-FHIR IG, IN1), with the resources it points at:
/// the patient as beneficiary; IN1-3/IN1-4/IN1-5 as the payor, an Organization (identifier
/// `urn:switchboard:insurer`, name, address) of the Bundle; IN1-10/IN1-11 as the policy
/// holder, an Organization (the insured's group employer); IN1-16 (with IN1-18, IN1-19, IN1-43
/// and IN2-63) as the subscriber, the Patient when IN1-17 is `SEL`, else a RelatedPerson of the
/// patient; IN1-36 as identifier and `subscriberId`, IN2-61 as an identifier of type `MB`,
/// IN1-49 in R5's `subscriberId` (cross-version extension), as the IG puts it; IN1-2 as the
/// `plan` class, IN1-8 as the `group` class; IN1-15 as `type`; IN1-12/13 as period; IN1-17
/// (else IN2-72) as relationship; `active`, since the HIS sends the plans in force.
pub fn coverage(c: &Coverage, patient: &Identifier) -> (r::Coverage, Vec<Resource>) {
    let id = stable_id(&[
        "Coverage",
        identifier_system(patient),
        &patient.value,
        c.company_id
            .as_deref()
            .or(c.company_name.as_deref())
            .unwrap_or_default(),
        c.plan
            .as_ref()
            .and_then(|p| p.code.as_deref().or(p.text.as_deref()))
            .unwrap_or_default(),
        c.policy_number.as_deref().unwrap_or_default(),
    ]);
    let mut extras = Vec::new();
    let payor = match organization(
        INSURER_SYSTEM,
        c.company_id.as_deref(),
        c.company_name.as_deref(),
        c.company_address.as_ref(),
    ) {
        Some((org, r)) => {
            extras.push(Resource::Organization(Box::new(org)));
            r
        }
        None => t::Reference {
            display: c.plan.as_ref().and_then(Coded::label).map(fstr),
            ..Default::default()
        },
    };
    let policy_holder = organization(
        EMPLOYER_SYSTEM,
        c.employer_id.as_deref(),
        c.employer_name.as_deref(),
        None,
    )
    .map(|(org, r)| {
        extras.push(Resource::Organization(Box::new(org)));
        r
    });
    // The insured is the patient: IN1-17 `SEL` (table 0063), or IN2-72 `01` (table 0344).
    let is_self = c.relationship.as_ref().is_some_and(|r| {
        let code = r.code.as_deref().unwrap_or_default().trim();
        code.eq_ignore_ascii_case("SEL") || (code == "01" && r.system.as_deref() == Some("HL70344"))
    });
    let subscriber = match &c.insured {
        _ if is_self => Some(patient_ref(patient)),
        Some(insured) if !insured.name.is_empty() => {
            let rid = related_person_id(
                patient,
                "insured",
                &[insured.name.full(), id.clone()].join("|"),
            );
            let person = r::RelatedPerson {
                id: Some(rid.clone().into()),
                active: Some(true.into()),
                patient: Box::new(patient_ref(patient)),
                relationship: c.relationship.iter().map(codeable).collect(),
                name: vec![{
                    let mut n = human_name(&insured.name, false);
                    n.r#use = None;
                    n
                }],
                telecom: phone_points(&insured.phones),
                gender: insured.gender.map(|g| gender_code(g).into()),
                birth_date: insured.birth_date.as_ref().map(birth_date),
                address: insured.address.iter().map(fhir_address).collect(),
                ..Default::default()
            };
            extras.push(Resource::RelatedPerson(Box::new(person)));
            Some(reference("RelatedPerson", &rid, Some(insured.name.full())))
        }
        _ => None,
    };
    let class = |kind: &str, value: &str, name: Option<&str>| r::CoverageClass {
        r#type: Box::new(t::CodeableConcept {
            coding: vec![t::Coding {
                system: Some(COVERAGE_CLASS.into()),
                code: Some(kind.into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        value: fstr(value),
        name: name.map(fstr),
        ..Default::default()
    };
    let mut classes = Vec::new();
    if let Some((value, name)) = c
        .plan
        .as_ref()
        .and_then(|p| Some((p.code.as_deref().or(p.text.as_deref())?, p.text.as_deref())))
    {
        classes.push(class("plan", value, name));
    }
    if let Some(g) = c.group_number.as_deref() {
        classes.push(class("group", g, None));
    }
    let mut identifier: Vec<t::Identifier> = c
        .policy_number
        .as_deref()
        .map(|v| plain_identifier(POLICY_SYSTEM, v))
        .into_iter()
        .collect();
    identifier.extend(c.member_number.as_deref().map(|v| {
        let mut i = plain_identifier(MEMBER_SYSTEM, v);
        i.r#type = Some(Box::new(t::CodeableConcept {
            coding: vec![t::Coding {
                system: Some("http://terminology.hl7.org/CodeSystem/v2-0203".into()),
                code: Some("MB".into()),
                ..Default::default()
            }],
            ..Default::default()
        }));
        i
    }));
    let res = r::Coverage {
        id: Some(id.into()),
        extension: c
            .insured_id
            .as_deref()
            .map(|v| {
                ext(
                    EXT_SUBSCRIBER_ID,
                    t::ExtensionValue::Identifier(Box::new(t::Identifier {
                        value: Some(fstr(v)),
                        ..Default::default()
                    })),
                )
            })
            .into_iter()
            .collect(),
        identifier,
        status: "active".into(),
        r#type: c.plan_type.as_ref().map(|t| Box::new(codeable(t))),
        policy_holder: policy_holder.map(Box::new),
        subscriber: subscriber.map(Box::new),
        subscriber_id: c.policy_number.as_deref().map(fstr),
        beneficiary: Box::new(patient_ref(patient)),
        relationship: c.relationship.as_ref().map(|r| Box::new(codeable(r))),
        period: (c.start.is_some() || c.end.is_some()).then(|| {
            Box::new(t::Period {
                start: c.start.as_ref().map(|d| date_time(d).into()),
                end: c.end.as_ref().map(|d| date_time(d).into()),
                ..Default::default()
            })
        }),
        payor: vec![payor],
        class: classes,
        ..Default::default()
    };
    (res, extras)
}

/// FHIR AllergyIntolerance of an allergy (v2-to-FHIR IG, AL1/IAM): AL1-3 code, AL1-2 type
/// as category (table 0127: `DA`/`MA` medication, `FA` food, `EA`/`AA`/`PA`/`LA`
/// environment), AL1-4 severity as criticality (table 0128: `SV` high, `MO`/`MI` low, `U`
/// unable-to-assess), AL1-5 reactions as one reaction's manifestations, AL1-6 as onset. An
/// IAM with action `D` (delete) is `entered-in-error`. The id derives from the patient and the
/// allergen, so a resend updates it.
pub fn allergy_intolerance(a: &Allergy, patient: &Identifier) -> r::AllergyIntolerance {
    let allergen = a
        .allergen
        .code
        .as_deref()
        .or(a.allergen.text.as_deref())
        .unwrap_or_default();
    let id = stable_id(&[
        "AllergyIntolerance",
        identifier_system(patient),
        &patient.value,
        a.allergen.system.as_deref().unwrap_or_default(),
        allergen,
    ]);
    let code = |c: &Option<Coded>| {
        c.as_ref()
            .and_then(|c| c.code.as_deref())
            .map(|c| c.trim().to_ascii_uppercase())
    };
    let category = match code(&a.category).as_deref() {
        Some("DA" | "MA") => Some("medication"),
        Some("FA") => Some("food"),
        Some("EA" | "AA" | "PA" | "LA") => Some("environment"),
        _ => None,
    };
    let criticality = match code(&a.severity).as_deref() {
        Some("SV") => Some("high"),
        Some("MO" | "MI") => Some("low"),
        Some("U") => Some("unable-to-assess"),
        _ => None,
    };
    let deleted = a.action.as_deref() == Some("D");
    let coding = |system: &str, code: &str| t::CodeableConcept {
        coding: vec![t::Coding {
            system: Some(system.into()),
            code: Some(code.into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    r::AllergyIntolerance {
        id: Some(id.into()),
        verification_status: deleted.then(|| {
            Box::new(coding(
                "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                "entered-in-error",
            ))
        }),
        category: category.map(Into::into).into_iter().collect(),
        criticality: criticality.map(Into::into),
        code: Some(Box::new(codeable(&a.allergen))),
        patient: Box::new(patient_ref(patient)),
        onset: a
            .identified
            .as_ref()
            .map(|t| r::AllergyIntoleranceOnset::DateTime(date_time(t).into())),
        reaction: if a.reactions.is_empty() {
            Vec::new()
        } else {
            vec![r::AllergyIntoleranceReaction {
                manifestation: a
                    .reactions
                    .iter()
                    .map(|m| t::CodeableConcept {
                        text: Some(fstr(m)),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }]
        },
        ..Default::default()
    }
}

/// `ContactPoint`s of phone numbers.
fn phone_points(phones: &[Phone]) -> Vec<t::ContactPoint> {
    phones
        .iter()
        .map(|ph| t::ContactPoint {
            system: Some("phone".into()),
            value: Some(fstr(&ph.number)),
            r#use: contact_use(ph.use_),
            ..Default::default()
        })
        .collect()
}

/// FHIR `date` of a birth date (the date part of a date-time).
fn birth_date(b: &Timestamp) -> t::Date {
    if b.precision() > Precision::Day {
        b.date_iso().into()
    } else {
        b.to_iso().into()
    }
}

/// Identifier system of guarantor numbers (GT1-2).
pub(crate) const GUARANTOR_SYSTEM: &str = "urn:switchboard:guarantor";

/// The id of the RelatedPerson a guarantor (or an insured person) of `patient` becomes: one per
/// patient, since `RelatedPerson.patient` names one; `kind` tells guarantors from insured.
fn related_person_id(patient: &Identifier, kind: &str, key: &str) -> String {
    stable_id(&[
        "RelatedPerson",
        identifier_system(patient),
        &patient.value,
        kind,
        key,
    ])
}

/// Id and identifier of the Organization a guarantor is (GT1-21): by GT1-2 when sent, else by
/// its name.
fn guarantor_organization_key(g: &Guarantor) -> (String, Option<t::Identifier>) {
    match g.number.as_deref() {
        Some(n) => (
            resource_id("Organization", GUARANTOR_SYSTEM, n),
            Some(plain_identifier(GUARANTOR_SYSTEM, n)),
        ),
        None => (
            stable_id(&[
                "Organization",
                "name",
                g.organization_name.as_deref().unwrap_or_default(),
            ]),
            None,
        ),
    }
}

/// The party of an `Account.guarantor` and the resource it points at (none for the patient
/// itself). As FHIR-Converter's templates decide (the v2-to-FHIR IG has no GT1 map yet): an
/// Organization when GT1-21 names one, else the Patient when GT1-11 is `SEL`, else a
/// RelatedPerson of the patient (GT1-2 identifier, GT1-3 name, GT1-5 address, GT1-6/7 phones,
/// GT1-8 birth date, GT1-9 sex, GT1-11 relationship).
pub fn guarantor_party(g: &Guarantor, patient: &Identifier) -> (t::Reference, Option<Resource>) {
    if let Some(name) = g.organization_name.as_deref() {
        let (id, identifier) = guarantor_organization_key(g);
        let mut r = reference("Organization", &id, Some(name.to_owned()));
        r.identifier = identifier.clone().map(Box::new);
        let org = r::Organization {
            id: Some(id.into()),
            identifier: identifier.into_iter().collect(),
            active: Some(true.into()),
            name: Some(fstr(name)),
            telecom: phone_points(&g.phones),
            address: g.address.iter().map(fhir_address).collect(),
            ..Default::default()
        };
        return (r, Some(Resource::Organization(Box::new(org))));
    }
    if g.is_self() {
        return (patient_ref(patient), None);
    }
    let key = g.number.clone().unwrap_or_else(|| g.name.full());
    let id = related_person_id(patient, "guarantor", &key);
    let name = g.name.full();
    let r = reference("RelatedPerson", &id, (!name.is_empty()).then_some(name));
    let person = r::RelatedPerson {
        id: Some(id.into()),
        identifier: g
            .number
            .iter()
            .map(|n| plain_identifier(GUARANTOR_SYSTEM, n))
            .collect(),
        active: Some(true.into()),
        patient: Box::new(patient_ref(patient)),
        relationship: g.relationship.iter().map(codeable).collect(),
        name: (!g.name.is_empty())
            .then(|| {
                let mut n = human_name(&g.name, false);
                n.r#use = None;
                n
            })
            .into_iter()
            .collect(),
        telecom: phone_points(&g.phones),
        gender: g.gender.map(|x| gender_code(x).into()),
        birth_date: g.birth_date.as_ref().map(birth_date),
        address: g.address.iter().map(fhir_address).collect(),
        ..Default::default()
    };
    (r, Some(Resource::RelatedPerson(Box::new(person))))
}

/// Identifier system of a patient's primary facility (PD1-3).
pub(crate) const FACILITY_SYSTEM: &str = "urn:switchboard:facility";
/// The standard extension of a patient's disability (PD1-6), where the IG puts it.
pub(crate) const EXT_DISABILITY: &str =
    "http://hl7.org/fhir/StructureDefinition/patient-disability";
/// The standard extension of a patient's congregation (PD1-14), where the IG puts it.
pub(crate) const EXT_CONGREGATION: &str =
    "http://hl7.org/fhir/StructureDefinition/patient-congregation";
/// Extension URL of the PD1-11 publicity code (`valueCodeableConcept`).
pub(crate) const EXT_PUBLICITY: &str = "urn:switchboard:fhir:publicity-code";
/// Extension URL of the PD1-12 protection indicator (`valueBoolean`).
pub(crate) const EXT_PROTECTED: &str = "urn:switchboard:fhir:protection-indicator";

/// The Organization of a patient's primary facility (PD1-3) and a reference to it.
fn facility(f: &Facility) -> Option<(r::Organization, t::Reference)> {
    organization(FACILITY_SYSTEM, f.id.as_deref(), f.name.as_deref(), None)
}

/// The id of a patient's Account: by its account number (PID-18) when sent, else one per
/// patient.
fn account_id(p: &Patient, key: &Identifier) -> String {
    match p.account_number.as_deref() {
        Some(a) => resource_id("Account", systems::ACCOUNT, a),
        None => stable_id(&["Account", identifier_system(key), &key.value]),
    }
}

/// FHIR Account of a patient (the v2-to-FHIR IG's PID -> Account: PID-18 as identifier,
/// `active`; the patient as subject) with its guarantors (GT1), each party's resource beside it
/// (see [`guarantor_party`]). `None` without account number and guarantors.
pub fn account(p: &Patient) -> Option<(r::Account, Vec<Resource>)> {
    let key = patient_key(p)?;
    if p.account_number.is_none() && p.guarantors.is_empty() {
        return None;
    }
    let mut parties = Vec::new();
    let mut guarantor = Vec::new();
    for g in &p.guarantors {
        let (party, resource) = guarantor_party(g, key);
        parties.extend(resource);
        guarantor.push(r::AccountGuarantor {
            party: Box::new(party),
            period: (g.start.is_some() || g.end.is_some()).then(|| {
                Box::new(t::Period {
                    start: g.start.as_ref().map(|d| date_time(d).into()),
                    end: g.end.as_ref().map(|d| date_time(d).into()),
                    ..Default::default()
                })
            }),
            ..Default::default()
        });
    }
    let account = r::Account {
        id: Some(account_id(p, key).into()),
        identifier: p
            .account_number
            .iter()
            .map(|a| plain_identifier(systems::ACCOUNT, a))
            .collect(),
        status: "active".into(),
        subject: vec![patient_ref(key)],
        guarantor,
        ..Default::default()
    };
    Some((account, parties))
}

pub fn patient(p: &Patient) -> Result<r::Patient, FhirError> {
    let key = patient_key(p).ok_or_else(|| FhirError::Render {
        path: "patient.identifiers".into(),
        reason: "a patient needs an identifier".into(),
    })?;
    let mut name = Vec::new();
    if !p.name.is_empty() {
        name.push(human_name(&p.name, false));
    }
    if let Some(n) = p.second_language_name.as_ref().filter(|n| !n.is_empty()) {
        name.push(human_name(n, true));
    }
    for other in &p.other_names {
        let mut n = human_name(&other.name, false);
        n.r#use = Some(name_use(other.name_type.as_deref()).into());
        name.push(n);
    }
    let mut telecom: Vec<t::ContactPoint> = p
        .phones
        .iter()
        .map(|ph| t::ContactPoint {
            system: Some("phone".into()),
            value: Some(fstr(&ph.number)),
            r#use: contact_use(ph.use_),
            ..Default::default()
        })
        .collect();
    for email in p.email.iter().chain(&p.other_emails) {
        telecom.push(t::ContactPoint {
            system: Some("email".into()),
            value: Some(fstr(email)),
            ..Default::default()
        });
    }
    let mut extension = Vec::new();
    if p.vip {
        extension.push(ext(
            systems::EXT_VIP,
            t::ExtensionValue::Boolean(true.into()),
        ));
    }
    extension.extend(ext_str(systems::EXT_BLOOD_TYPE, p.blood_type.as_deref()));
    if let Some(n) = &p.nationality {
        extension.push(ext(
            systems::EXT_NATIONALITY,
            t::ExtensionValue::CodeableConcept(Box::new(codeable(n))),
        ));
    }
    if let Some(d) = &p.disability {
        extension.push(ext(
            EXT_DISABILITY,
            t::ExtensionValue::CodeableConcept(Box::new(codeable(d))),
        ));
    }
    extension.extend(ext_str(EXT_CONGREGATION, p.place_of_worship.as_deref()));
    if let Some(c) = &p.publicity_code {
        extension.push(ext(
            EXT_PUBLICITY,
            t::ExtensionValue::CodeableConcept(Box::new(codeable(c))),
        ));
    }
    if let Some(b) = p.protected {
        extension.push(ext(EXT_PROTECTED, t::ExtensionValue::Boolean(b.into())));
    }
    Ok(r::Patient {
        id: Some(resource_id("Patient", identifier_system(key), &key.value).into()),
        extension,
        identifier: p.identifiers.iter().map(patient_identifier).collect(),
        name,
        telecom,
        gender: p.gender.map(|g| gender_code(g).into()),
        birth_date: p.birth_date.as_ref().map(|b| {
            if b.precision() > Precision::Day {
                // R4 birthDate is a date; the time travels in the standard birthTime extension.
                t::Date {
                    value: Some(b.date_iso()),
                    extension: vec![ext(
                        EXT_BIRTH_TIME,
                        t::ExtensionValue::DateTime(date_time(b).into()),
                    )],
                    ..Default::default()
                }
            } else {
                b.to_iso().into()
            }
        }),
        deceased: p
            .death_time
            .as_ref()
            .map(|d| r::PatientDeceased::DateTime(date_time(d).into())),
        address: p
            .address
            .iter()
            .chain(&p.other_addresses)
            .filter(|a| !a.is_empty())
            .map(fhir_address)
            .collect(),
        contact: p.contacts.iter().map(patient_contact).collect(),
        // As the IG orders them: the primary facility (PD1-3), then the provider (PD1-4).
        general_practitioner: p
            .primary_facility
            .as_ref()
            .and_then(facility)
            .map(|(_, r)| r)
            .into_iter()
            .chain(p.primary_care_provider.as_ref().and_then(practitioner_ref))
            .collect(),
        marital_status: p.marital_status.as_ref().map(|m| Box::new(codeable(m))),
        communication: p
            .language
            .iter()
            .map(|l| r::PatientCommunication {
                language: Box::new(codeable(l)),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}

/// FHIR Practitioner of a canonical practitioner, `None` without code, licence or registration.
pub fn practitioner(p: &Practitioner) -> Option<r::Practitioner> {
    let (system, value) = practitioner_key(p)?;
    let mut identifier = Vec::new();
    identifier.extend(
        p.code
            .as_deref()
            .map(|c| plain_identifier(systems::PRACTITIONER, c)),
    );
    identifier.extend(
        p.licence_number
            .as_deref()
            .map(|c| plain_identifier(systems::LICENCE, c)),
    );
    identifier.extend(
        p.registration_number
            .as_deref()
            .map(|c| plain_identifier(systems::REGISTRATION, c)),
    );
    identifier.extend(
        p.national_id
            .as_deref()
            .map(|c| plain_identifier(systems::NATIONAL_ID, c)),
    );
    let mut name = Vec::new();
    if !p.name.is_empty() {
        name.push(human_name(&p.name, false));
    }
    if let Some(alt) = p.alternate_name.as_ref().filter(|n| !n.is_empty()) {
        name.push(human_name(alt, true));
    }
    Some(r::Practitioner {
        id: Some(resource_id("Practitioner", system, value).into()),
        identifier,
        active: p.active.map(Into::into),
        name,
        telecom: contact_points(p.phone.as_deref(), p.email.as_deref()),
        gender: p.gender.map(|g| gender_code(g).into()),
        birth_date: p.birth_date.as_ref().map(birth_date),
        qualification: p
            .specialisation
            .iter()
            .map(|s| r::PractitionerQualification {
                code: Box::new(codeable(s)),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}

/// Extension URLs of the parts of a location that R4 Location has no element for.
pub(crate) const LOCATION_PARTS: [&str; 5] = [
    "urn:switchboard:fhir:location-room",
    "urn:switchboard:fhir:location-bed",
    "urn:switchboard:fhir:location-branch",
    "urn:switchboard:fhir:location-building",
    "urn:switchboard:fhir:location-floor",
];

/// FHIR Location of a canonical location, `None` without a code.
pub fn location(l: &Location) -> Option<r::Location> {
    let code = l.code.as_deref()?;
    let parts = [&l.room, &l.bed, &l.branch, &l.building, &l.floor];
    Some(r::Location {
        id: Some(resource_id("Location", systems::LOCATION, code).into()),
        extension: LOCATION_PARTS
            .iter()
            .zip(parts)
            .filter_map(|(url, v)| ext_str(url, v.as_deref()))
            .collect(),
        identifier: vec![plain_identifier(systems::LOCATION, code)],
        status: Some(
            if l.active == Some(false) {
                "inactive"
            } else {
                "active"
            }
            .into(),
        ),
        // NPU-2 (ADT^A20) or PV1-40 bed status, as the IG maps PV1-40.
        operational_status: l.bed_status.as_ref().map(|b| Box::new(coding(b))),
        name: l.name.as_deref().map(fstr),
        description: l.location_type.as_deref().map(fstr),
        r#type: l.specialisation.iter().map(codeable).collect(),
        telecom: contact_points(l.phone.as_deref(), l.email.as_deref()),
        address: l.address.as_ref().map(|a| Box::new(fhir_address(a))),
        ..Default::default()
    })
}

/// A phone number and an e-mail address as ContactPoints (work use).
fn contact_points(phone: Option<&str>, email: Option<&str>) -> Vec<t::ContactPoint> {
    let point = |system: &str, value: &str| t::ContactPoint {
        system: Some(system.into()),
        value: Some(fstr(value)),
        r#use: Some("work".into()),
        ..Default::default()
    };
    phone
        .map(|v| point("phone", v))
        .into_iter()
        .chain(email.map(|v| point("email", v)))
        .collect()
}

/// FHIR HealthcareService of a canonical service: identifier and name, its department as the
/// specialty, its price and duration as `extraDetails` text (R4 HealthcareService has no
/// element for either), `active` false when deactivated or deleted.
pub fn healthcare_service(s: &Service, kind: EventKind) -> r::HealthcareService {
    let inactive = matches!(
        kind,
        EventKind::ServiceDeactivated | EventKind::ServiceDeleted
    ) || s.active == Some(false);
    let mut details = Vec::new();
    if let Some(price) = &s.price {
        let currency = s
            .currency
            .as_deref()
            .map(|c| format!(" {c}"))
            .unwrap_or_default();
        details.push(format!("price: {price}{currency}"));
    }
    if let Some(minutes) = s.duration_minutes {
        details.push(format!("duration: {minutes} min"));
    }
    r::HealthcareService {
        id: Some(resource_id("HealthcareService", systems::SERVICE, &s.code).into()),
        identifier: vec![plain_identifier(systems::SERVICE, &s.code)],
        active: Some((!inactive).into()),
        name: s.name.as_deref().map(fstr),
        comment: s.description.as_deref().map(fstr),
        extra_details: (!details.is_empty()).then(|| details.join("; ").into()),
        specialty: s.department.iter().map(codeable).collect(),
        ..Default::default()
    }
}

/// A code as one Coding: its system as a URI (as [`codeable`] writes it), code and text.
fn coding(c: &Coded) -> t::Coding {
    t::Coding {
        system: c
            .system
            .as_deref()
            .map(|s| super::code_systems::to_uri(s).into_owned().into()),
        code: c.code.as_deref().map(Into::into),
        display: c.text.as_deref().map(fstr),
        ..Default::default()
    }
}

/// The standard extension holding the time of birth on `Patient.birthDate`.
pub(crate) const EXT_BIRTH_TIME: &str = "http://hl7.org/fhir/StructureDefinition/patient-birthTime";
/// Extension URL of an appointment's event reason (SCH-6) when it is not a cancellation.
pub(crate) const EXT_EVENT_REASON: &str = "urn:switchboard:fhir:event-reason";
/// Tag system on a Bundle naming the canonical event kind it was rendered from.
pub(crate) const EVENT_KIND_TAG: &str = "urn:switchboard:event-kind";

/// Extension URL of the encounter's insurer name (`valueString`).
pub(crate) const EXT_INSURER: &str = "urn:switchboard:fhir:insurer";
/// Extension URL of the encounter's financial class (`valueCodeableConcept`).
pub(crate) const EXT_FINANCIAL_CLASS: &str = "urn:switchboard:fhir:financial-class";

const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

pub(crate) fn class_name(c: EncounterClass) -> &'static str {
    match c {
        EncounterClass::Emergency => "emergency",
        EncounterClass::Inpatient => "inpatient",
        EncounterClass::Outpatient => "outpatient",
        EncounterClass::Preadmit => "preadmit",
        EncounterClass::RecurringPatient => "recurring_patient",
        EncounterClass::Obstetrics => "obstetrics",
        EncounterClass::CommercialAccount => "commercial_account",
        EncounterClass::NotApplicable => "not_applicable",
        EncounterClass::Unknown => "unknown",
    }
}

fn class_coding(c: Option<EncounterClass>) -> t::Coding {
    let code = match c {
        Some(EncounterClass::Emergency) => "EMER",
        Some(EncounterClass::Inpatient | EncounterClass::Obstetrics) => "IMP",
        Some(EncounterClass::Preadmit) => "PRENC",
        Some(EncounterClass::Outpatient | EncounterClass::RecurringPatient) => "AMB",
        Some(EncounterClass::CommercialAccount | EncounterClass::NotApplicable)
        | Some(EncounterClass::Unknown)
        | None => "AMB",
    };
    t::Coding {
        system: Some(ACT_CODE.into()),
        code: Some(code.into()),
        display: c.map(|c| fstr(class_name(c))),
        ..Default::default()
    }
}

/// The code system of ROL-3 roles (HL7 table 0443) on `Encounter.participant.type`.
pub(crate) const ROLE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v2-0443";
/// The code system of PRT-4 roles of participation (HL7 table 0912).
pub(crate) const PARTICIPATION_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v2-0912";
/// Extension URL, on a Reference to a Practitioner, of the ROL-3 or PRT-4 role the
/// practitioner has there (`valueCodeableConcept` in table 0443 or 0912):
/// `ServiceRequest.performer` and the DiagnosticReport's performers have no role element of
/// their own.
pub(crate) const EXT_ROLE: &str = "urn:switchboard:fhir:role";
/// Extension URL, beside [`EXT_ROLE`], of the role's begin and end (ROL-5/6, PRT-11/12;
/// `valuePeriod`), where the reference has no period of its own.
pub(crate) const EXT_ROLE_PERIOD: &str = "urn:switchboard:fhir:role-period";

/// A ROL-3 (table 0443) or PRT-4 (table 0912) role as a CodeableConcept of its table.
fn role_concept(r: &Role) -> t::CodeableConcept {
    t::CodeableConcept {
        coding: vec![t::Coding {
            system: Some(
                if r.participation {
                    PARTICIPATION_SYSTEM
                } else {
                    ROLE_SYSTEM
                }
                .into(),
            ),
            code: r.role.code.as_deref().map(Into::into),
            display: r.role.text.as_deref().map(fstr),
            ..Default::default()
        }],
        text: r.role.text.as_deref().map(fstr),
        ..Default::default()
    }
}

/// A period from an optional start and end, `None` when both are absent.
fn period(start: Option<&Timestamp>, end: Option<&Timestamp>) -> Option<Box<t::Period>> {
    (start.is_some() || end.is_some()).then(|| {
        Box::new(t::Period {
            start: start.map(|s| date_time(s).into()),
            end: end.map(|e| date_time(e).into()),
            ..Default::default()
        })
    })
}

/// A reference to a role's practitioner carrying the role ([`EXT_ROLE`]) and its period
/// ([`EXT_ROLE_PERIOD`]).
fn role_ref(r: &Role) -> Option<t::Reference> {
    let mut reference = practitioner_ref(&r.practitioner)?;
    reference.extension.push(ext(
        EXT_ROLE,
        t::ExtensionValue::CodeableConcept(Box::new(role_concept(r))),
    ));
    if let Some(p) = period(r.start.as_ref(), r.end.as_ref()) {
        reference
            .extension
            .push(ext(EXT_ROLE_PERIOD, t::ExtensionValue::Period(p)));
    }
    Some(reference)
}

/// Identifier system of PV1-50 alternate visit ids.
pub(crate) const ALTERNATE_VISIT_SYSTEM: &str = "urn:switchboard:alternate-visit";
/// Identifier system of PV1-5 preadmit numbers.
pub(crate) const PREADMIT_SYSTEM: &str = "urn:switchboard:preadmit";
/// HL7 table 0203 (identifier types), for the `VN` type of the visit number.
pub(crate) const IDENTIFIER_TYPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";
/// `Encounter.participant.type` system of the PV1 doctors (ATND, REF, CON, ADM, PART).
pub(crate) const PARTICIPATION_TYPE: &str =
    "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
/// `participant.type.text` marking a PV2-13 referral source among the `REF` participants
/// (PV1-8, the referring doctor, has none).
pub(crate) const REFERRAL_SOURCE_TEXT: &str = "referral source";
/// Extension URLs of the Encounter for what R4 has no element for. PV1-18 patient type, which
/// the IG leaves to the implementer (FHIR-Converter does not map it), PV1-41 account status
/// and PV2-4 transfer reason, which the IG leaves unmapped, are ours; PV2-7 visit user code,
/// PV2-10 estimated length of stay and PV2-40 admission level of care are extensions the IG
/// names without defining (`extension?-...`), so ours too; PV2-8/9 are R5's
/// `Encounter.plannedStartDate`/`plannedEndDate` through their R4 cross-version extensions,
/// and PV2-38 the core `encounter-modeOfArrival`, as the IG writes them.
pub(crate) const EXT_PATIENT_TYPE: &str = "urn:switchboard:fhir:patient-type";
/// See [`EXT_PATIENT_TYPE`].
pub(crate) const EXT_ACCOUNT_STATUS: &str = "urn:switchboard:fhir:account-status";
/// See [`EXT_PATIENT_TYPE`].
pub(crate) const EXT_TRANSFER_REASON: &str = "urn:switchboard:fhir:transfer-reason";
/// See [`EXT_PATIENT_TYPE`].
pub(crate) const EXT_VISIT_USER_CODE: &str = "urn:switchboard:fhir:visit-user-code";
/// See [`EXT_PATIENT_TYPE`].
pub(crate) const EXT_ESTIMATED_LENGTH: &str = "urn:switchboard:fhir:estimated-length-of-stay";
/// See [`EXT_PATIENT_TYPE`].
pub(crate) const EXT_LEVEL_OF_CARE: &str = "urn:switchboard:fhir:admission-level-of-care";
/// See [`EXT_PATIENT_TYPE`].
pub(crate) const EXT_PLANNED_START: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Encounter.plannedStartDate";
/// See [`EXT_PATIENT_TYPE`].
pub(crate) const EXT_PLANNED_END: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Encounter.plannedEndDate";
/// See [`EXT_PATIENT_TYPE`].
pub(crate) const EXT_MODE_OF_ARRIVAL: &str =
    "http://hl7.org/fhir/StructureDefinition/encounter-modeOfArrival";
/// The IG's extension on `Encounter.location` marking a temporary location (PV1-11, PV1-43).
pub(crate) const EXT_LOCATION_CLASSIFICATION: &str =
    "http://hl7.org/fhir/StructureDefinition/subject-locationClassification";
/// UCUM, for lengths of stay in days.
const UCUM: &str = "http://unitsofmeasure.org";

/// A length of stay in days as a FHIR Duration (`d` in UCUM).
fn days(d: &crate::model::Decimal) -> t::Duration {
    t::Duration {
        value: Some(d.as_str().into()),
        unit: Some(fstr("d")),
        system: Some(UCUM.into()),
        code: Some("d".into()),
        ..Default::default()
    }
}

/// An Encounter participant of a PV1/PV2 doctor, typed in v3 ParticipationType.
fn doctor_participant(
    p: &Practitioner,
    code: &str,
    text: Option<&str>,
) -> Option<r::EncounterParticipant> {
    let reference = practitioner_ref(p)?;
    Some(r::EncounterParticipant {
        r#type: vec![t::CodeableConcept {
            coding: vec![t::Coding {
                system: Some(PARTICIPATION_TYPE.into()),
                code: Some(code.into()),
                ..Default::default()
            }],
            text: text.map(fstr),
            ..Default::default()
        }],
        individual: Some(Box::new(reference)),
        ..Default::default()
    })
}

/// The visit description (PV2-12) as the Encounter's narrative, escaped for XHTML.
fn narrative(text: &str) -> t::Narrative {
    let mut div = String::with_capacity(text.len() + 50);
    div.push_str(r#"<div xmlns="http://www.w3.org/1999/xhtml">"#);
    for c in text.chars() {
        match c {
            '&' => div.push_str("&amp;"),
            '<' => div.push_str("&lt;"),
            '>' => div.push_str("&gt;"),
            c => div.push(c),
        }
    }
    div.push_str("</div>");
    t::Narrative {
        status: "additional".into(),
        div: t::Xhtml {
            value: div,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn codeable_ext(url: &str, c: &Coded) -> t::Extension {
    ext(
        url,
        t::ExtensionValue::CodeableConcept(Box::new(codeable(c))),
    )
}

/// FHIR Encounter of a canonical encounter, `None` without a visit number: PV1 and PV2 as
/// the v2-to-FHIR IG maps them (see `docs/MAPPING.md` for each field).
pub fn encounter(
    kind: EventKind,
    e: &Encounter,
    subject: Option<&Identifier>,
) -> Option<r::Encounter> {
    let visit = e.visit_number.as_deref()?;
    let status = match kind {
        EventKind::EncounterPreadmitted | EventKind::EncounterAdmitPending => "planned",
        EventKind::EncounterCancelled => "cancelled",
        EventKind::EncounterDischarged => "finished",
        EventKind::EncounterDeleted => "entered-in-error",
        EventKind::LeaveOfAbsenceStarted => "onleave",
        _ if e.discharge_time.is_some() => "finished",
        _ => "in-progress",
    };
    let mut participant = Vec::new();
    let people = [
        (e.attending.as_ref(), "ATND", None),
        (e.referring.as_ref(), "REF", None),
    ];
    let consulting = e.consulting.iter().map(|p| (Some(p), "CON", None));
    let admitting = [(e.admitting.as_ref(), "ADM", None)];
    let others = e.other_providers.iter().map(|p| (Some(p), "PART", None));
    let referral = e
        .referral_sources
        .iter()
        .map(|p| (Some(p), "REF", Some(REFERRAL_SOURCE_TEXT)));
    for (p, code, text) in people
        .into_iter()
        .chain(consulting)
        .chain(admitting)
        .chain(others)
        .chain(referral)
    {
        participant.extend(p.and_then(|p| doctor_participant(p, code, text)));
    }
    // The roles that hold; a role the message removes (ROL-2/PRT-2 `DE`, `UN`) is left out,
    // which removes it from the Encounter the Bundle PUTs whole.
    for r in e.roles.iter().filter(|r| r.is_current()) {
        if let Some(reference) = practitioner_ref(&r.practitioner) {
            participant.push(r::EncounterParticipant {
                r#type: vec![role_concept(r)],
                period: period(r.start.as_ref(), r.end.as_ref()),
                individual: Some(Box::new(reference)),
                ..Default::default()
            });
        }
    }
    let mut extension: Vec<t::Extension> = e
        .events
        .iter()
        .map(|v| {
            let mut parts = vec![ext("kind", t::ExtensionValue::String(fstr(&v.kind)))];
            if let Some(time) = &v.time {
                parts.push(ext(
                    "time",
                    t::ExtensionValue::DateTime(date_time(time).into()),
                ));
            }
            if let Some(l) = &v.label {
                parts.push(ext("label", t::ExtensionValue::String(fstr(l))));
            }
            if let Some(d) = &v.description {
                parts.push(ext("description", t::ExtensionValue::String(fstr(d))));
            }
            t::Extension {
                url: systems::EXT_VISIT_EVENT.to_owned(),
                extension: parts,
                ..Default::default()
            }
        })
        .chain(ext_str(EXT_INSURER, e.insurer.as_deref()))
        .chain(
            e.financial_class
                .as_ref()
                .map(|c| codeable_ext(EXT_FINANCIAL_CLASS, c)),
        )
        .collect();
    for (url, value) in [
        (EXT_PATIENT_TYPE, &e.patient_type),
        (EXT_ACCOUNT_STATUS, &e.account_status),
        (EXT_TRANSFER_REASON, &e.transfer_reason),
        (EXT_LEVEL_OF_CARE, &e.admission_level_of_care),
        (EXT_PUBLICITY, &e.publicity_code),
    ] {
        extension.extend(value.as_ref().map(|c| codeable_ext(url, c)));
    }
    extension.extend(
        e.visit_user_codes
            .iter()
            .map(|c| codeable_ext(EXT_VISIT_USER_CODE, c)),
    );
    for (url, value) in [
        (EXT_PLANNED_START, &e.expected_admit_time),
        (EXT_PLANNED_END, &e.expected_discharge_time),
    ] {
        extension.extend(
            value
                .as_ref()
                .map(|t| ext(url, t::ExtensionValue::DateTime(date_time(t).into()))),
        );
    }
    extension.extend(e.expected_length_of_stay.as_ref().map(|d| {
        ext(
            EXT_ESTIMATED_LENGTH,
            t::ExtensionValue::Duration(Box::new(days(d))),
        )
    }));
    extension.extend(e.mode_of_arrival.as_ref().map(|c| {
        ext(
            EXT_MODE_OF_ARRIVAL,
            t::ExtensionValue::Coding(Box::new(coding(c))),
        )
    }));
    if let Some(b) = e.protected {
        extension.push(ext(EXT_PROTECTED, t::ExtensionValue::Boolean(b.into())));
    }
    let mut identifier = vec![t::Identifier {
        r#type: Some(Box::new(t::CodeableConcept {
            coding: vec![t::Coding {
                system: Some(IDENTIFIER_TYPE_SYSTEM.into()),
                code: Some("VN".into()),
                ..Default::default()
            }],
            text: Some(fstr("visit number")),
            ..Default::default()
        })),
        assigner: e.visit_number_authority.as_deref().map(|a| {
            Box::new(t::Reference {
                display: Some(fstr(a)),
                ..Default::default()
            })
        }),
        ..plain_identifier(systems::VISIT, visit)
    }];
    identifier.extend(e.alternate_visit_ids.iter().map(|id| t::Identifier {
        system: Some(ALTERNATE_VISIT_SYSTEM.into()),
        ..patient_identifier(id)
    }));
    let hospitalization = r::EncounterHospitalization {
        pre_admission_identifier: e
            .preadmit_number
            .as_deref()
            .map(|n| Box::new(plain_identifier(PREADMIT_SYSTEM, n))),
        admit_source: e.admit_source.as_ref().map(|c| Box::new(codeable(c))),
        re_admission: e.readmission.as_ref().map(|c| Box::new(codeable(c))),
        diet_preference: e.diet.iter().map(codeable).collect(),
        special_courtesy: e.vip_indicator.iter().map(codeable).collect(),
        special_arrangement: e.ambulatory_status.iter().map(codeable).collect(),
        destination: e
            .discharged_to
            .as_ref()
            .and_then(location_ref)
            .map(Box::new),
        discharge_disposition: e
            .discharge_disposition
            .as_ref()
            .map(|d| Box::new(codeable(d))),
        ..Default::default()
    };
    Some(r::Encounter {
        id: Some(resource_id("Encounter", systems::VISIT, visit).into()),
        text: e.description.as_deref().map(|d| Box::new(narrative(d))),
        extension,
        identifier,
        status: status.into(),
        class: Box::new(class_coding(e.class)),
        r#type: e.admission_type.iter().map(codeable).collect(),
        service_type: e.service.as_ref().map(|s| Box::new(codeable(s))),
        priority: e.priority.as_ref().map(|c| Box::new(codeable(c))),
        subject: subject.map(|s| Box::new(patient_ref(s))),
        participant,
        period: period(e.admit_time.as_ref(), e.discharge_time.as_ref()),
        length: e.length_of_stay.as_ref().map(|d| Box::new(days(d))),
        reason_code: e.admit_reason.iter().map(codeable).collect(),
        hospitalization: (hospitalization != r::EncounterHospitalization::default())
            .then_some(hospitalization),
        location: encounter_locations(e),
        // PV1-39 servicing facility: the organization the visit is at (the IG leaves PV1-39
        // unmapped; R4's serviceProvider is that organization), by identifier.
        service_provider: e.servicing_facility.as_ref().map(|f| {
            Box::new(t::Reference {
                identifier: f
                    .code
                    .as_deref()
                    .map(|c| Box::new(plain_identifier(FACILITY_SYSTEM, c))),
                display: f.text.as_deref().map(fstr),
                ..Default::default()
            })
        }),
        ..Default::default()
    })
}

/// `Encounter.location`: the location history when the message told one (prior stays
/// `completed`, current ones `active`, a pending one `planned`, each with its period), else
/// the assigned location.
fn encounter_locations(e: &Encounter) -> Vec<r::EncounterLocation> {
    if e.location_history.is_empty() {
        return e
            .location
            .as_ref()
            .and_then(location_ref)
            .map(|l| r::EncounterLocation {
                location: Box::new(l),
                ..Default::default()
            })
            .into_iter()
            .collect();
    }
    e.location_history
        .iter()
        .filter_map(|stay| {
            let location = location_ref(&stay.location)?;
            let status = match stay.status {
                LocationStatus::Planned => "planned",
                LocationStatus::Active => "active",
                LocationStatus::Completed => "completed",
            };
            // The IG marks PV1-11 and PV1-43 temporary.
            let extension = if stay.temporary {
                vec![ext(
                    EXT_LOCATION_CLASSIFICATION,
                    t::ExtensionValue::CodeableConcept(Box::new(t::CodeableConcept {
                        coding: vec![t::Coding {
                            code: Some("temporary".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    })),
                )]
            } else {
                Vec::new()
            };
            Some(r::EncounterLocation {
                extension,
                location: Box::new(location),
                status: Some(status.into()),
                period: period(stay.start.as_ref(), stay.end.as_ref()),
                ..Default::default()
            })
        })
        .collect()
}

pub(crate) fn appointment_status_code(s: AppointmentStatus) -> &'static str {
    match s {
        AppointmentStatus::Pending => "pending",
        AppointmentStatus::Waitlisted => "waitlist",
        AppointmentStatus::Booked | AppointmentStatus::Blocked => "booked",
        AppointmentStatus::Arrived => "arrived",
        AppointmentStatus::Completed => "fulfilled",
        AppointmentStatus::Cancelled => "cancelled",
        AppointmentStatus::NoShow => "noshow",
        AppointmentStatus::EnteredInError => "entered-in-error",
    }
}

fn appointment_key(a: &Appointment) -> Option<(&'static str, &str)> {
    a.placer_id
        .as_deref()
        .map(|v| (systems::APPOINTMENT_PLACER, v))
        .or_else(|| {
            a.filler_id
                .as_deref()
                .map(|v| (systems::APPOINTMENT_FILLER, v))
        })
        .or_else(|| {
            a.remote_id
                .as_deref()
                .map(|v| (systems::APPOINTMENT_REMOTE, v))
        })
}

/// The placer, filler and remote ids of an appointment (or of a blocked slot).
fn appointment_identifiers(a: &Appointment) -> Vec<t::Identifier> {
    let ids = [
        (systems::APPOINTMENT_PLACER, &a.placer_id),
        (systems::APPOINTMENT_FILLER, &a.filler_id),
        (systems::APPOINTMENT_REMOTE, &a.remote_id),
    ];
    ids.into_iter()
        .filter_map(|(system, v)| v.as_deref().map(|v| plain_identifier(system, v)))
        .collect()
}

/// Identifier system of the Schedules made for SIU^S23/S24 (see [`schedule_slot`]).
pub(crate) const SCHEDULE_SYSTEM: &str = "urn:switchboard:schedule";
/// Identifier system of general resources (AIG-3), as Schedule actors.
pub(crate) const RESOURCE_SYSTEM: &str = "urn:switchboard:resource";

/// FHIR Schedule and Slot of a blocked (SIU^S23, `busy-unavailable`) or opened (SIU^S24,
/// `free`) time slot.
///
/// SIU names no Schedule, and the v2-to-FHIR IG maps neither S23 nor S24, so this is our
/// choice (as FHIR-Converter would have to make it): the Schedule is the one of the
/// resources the SIU blocks, its actors the AIP practitioner, the AIL location and every AIG
/// resource (by identifier `urn:switchboard:resource`), and its id derives from them, so
/// every block of the same resources lands in the same Schedule. The Slot carries the block's
/// ids as an Appointment does (SCH-1 placer, SCH-2 filler). `None` when R4's required elements
/// cannot be filled: no resource to be the Schedule's actor, no block id, or no start or end.
pub fn schedule_slot(a: &Appointment, blocked: bool) -> Option<(r::Schedule, r::Slot)> {
    let (block_system, block_id) = appointment_key(a)?;
    let start = a.start.as_ref()?;
    let end = a.end.as_ref()?;
    let mut actor = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    for (p, _, _) in booked_people(a) {
        if let (Some(reference), Some((system, value))) = (practitioner_ref(p), practitioner_key(p))
        {
            let key = format!("Practitioner|{system}|{value}");
            if !keys.contains(&key) {
                actor.push(reference);
                keys.push(key);
            }
        }
    }
    for (l, _, _) in booked_locations(a) {
        if let (Some(reference), Some(code)) = (location_ref(l), l.code.as_deref()) {
            let key = format!("Location|{code}");
            if !keys.contains(&key) {
                actor.push(reference);
                keys.push(key);
            }
        }
    }
    for r in &a.resources {
        let Some(code) = r.resource.code.as_deref() else {
            continue;
        };
        actor.push(t::Reference {
            identifier: Some(Box::new(plain_identifier(RESOURCE_SYSTEM, code))),
            display: r.resource.text.as_deref().map(fstr),
            ..Default::default()
        });
        keys.push(format!("Device|{code}"));
    }
    if actor.is_empty() {
        return None;
    }
    let schedule_key = keys.join("~");
    let schedule_id = resource_id("Schedule", SCHEDULE_SYSTEM, &schedule_key);
    let schedule = r::Schedule {
        id: Some(schedule_id.clone().into()),
        identifier: vec![plain_identifier(SCHEDULE_SYSTEM, &schedule_key)],
        actor,
        ..Default::default()
    };
    let mut schedule_ref = reference("Schedule", &schedule_id, None);
    schedule_ref.identifier = Some(Box::new(plain_identifier(SCHEDULE_SYSTEM, &schedule_key)));
    let slot = r::Slot {
        id: Some(resource_id("Slot", block_system, block_id).into()),
        identifier: appointment_identifiers(a),
        service_type: a.service.iter().map(codeable).collect(),
        appointment_type: a.appointment_type.as_ref().map(|c| Box::new(codeable(c))),
        schedule: Box::new(schedule_ref),
        status: if blocked { "busy-unavailable" } else { "free" }.into(),
        start: instant(start).into(),
        end: instant(end).into(),
        comment: a.notes.as_deref().map(fstr),
        ..Default::default()
    };
    Some((schedule, slot))
}

/// Identifier system of the PractitionerRoles made for practitioner master records: the
/// practitioner's key (`system|value`), one role per practitioner.
pub(crate) const PRACTITIONER_ROLE_SYSTEM: &str = "urn:switchboard:practitioner-role";

/// FHIR Schedule of a canonical schedule (a `schedule_*` event): identified by the schedule's
/// id (`urn:switchboard:schedule`), its actors the practitioners, locations and general
/// resources (`urn:switchboard:resource`), with its service types, specialty, planning
/// horizon, `active` and comment. `None` without an id or an actor (R4 requires an actor).
pub fn schedule_resource(s: &Schedule) -> Option<r::Schedule> {
    let id = s.id.as_deref()?;
    let mut actor: Vec<t::Reference> = s
        .practitioners
        .iter()
        .filter_map(practitioner_ref)
        .collect();
    actor.extend(s.locations.iter().filter_map(location_ref));
    for res in &s.resources {
        if let Some(code) = res.code.as_deref() {
            actor.push(t::Reference {
                identifier: Some(Box::new(plain_identifier(RESOURCE_SYSTEM, code))),
                display: res.text.as_deref().map(fstr),
                ..Default::default()
            });
        }
    }
    if actor.is_empty() {
        return None;
    }
    Some(r::Schedule {
        id: Some(resource_id("Schedule", SCHEDULE_SYSTEM, id).into()),
        identifier: vec![plain_identifier(SCHEDULE_SYSTEM, id)],
        active: s.active.map(Into::into),
        service_type: s.services.iter().map(codeable).collect(),
        specialty: s.specialty.iter().map(codeable).collect(),
        actor,
        planning_horizon: period(s.planning_start.as_ref(), s.planning_end.as_ref()),
        comment: s.comment.as_deref().map(fstr),
        ..Default::default()
    })
}

/// Identifier system of the Slots made for the resources of an SIU^S18-S22: the
/// appointment's id and the resource's schedule key.
pub(crate) const RESOURCE_SLOT_SYSTEM: &str = "urn:switchboard:resource-slot";

/// FHIR Schedule and Slot of one resource's time changed by an SIU^S18-S22 (a canonical slot
/// of an `appointment_resource_*` event): the Schedule of that resource (its id derived from
/// it, as [`schedule_slot`] does), the Slot `busy`, `busy-unavailable` or `free`. `None`
/// without a resource, an id, a start or an end.
pub fn resource_schedule_slot(slot: &crate::model::Slot) -> Option<(r::Schedule, r::Slot)> {
    let id = slot.id.as_deref()?;
    let start = slot.start.as_ref()?;
    let end = slot.end.as_ref()?;
    let sc = &slot.schedule;
    let (actor, key) = if let Some(p) = sc.practitioners.first() {
        let (system, value) = practitioner_key(p)?;
        (
            practitioner_ref(p)?,
            format!("Practitioner|{system}|{value}"),
        )
    } else if let Some(l) = sc.locations.first() {
        (location_ref(l)?, format!("Location|{}", l.code.as_deref()?))
    } else {
        let r = sc.resources.first()?;
        let code = r.code.as_deref()?;
        let actor = t::Reference {
            identifier: Some(Box::new(plain_identifier(RESOURCE_SYSTEM, code))),
            display: r.text.as_deref().map(fstr),
            ..Default::default()
        };
        (actor, format!("Device|{code}"))
    };
    let schedule_id = resource_id("Schedule", SCHEDULE_SYSTEM, &key);
    let schedule = r::Schedule {
        id: Some(schedule_id.clone().into()),
        identifier: vec![plain_identifier(SCHEDULE_SYSTEM, &key)],
        actor: vec![actor],
        ..Default::default()
    };
    let mut schedule_ref = reference("Schedule", &schedule_id, None);
    schedule_ref.identifier = Some(Box::new(plain_identifier(SCHEDULE_SYSTEM, &key)));
    let slot_key = format!("{id}|{key}");
    let slot = r::Slot {
        id: Some(resource_id("Slot", RESOURCE_SLOT_SYSTEM, &slot_key).into()),
        identifier: vec![plain_identifier(RESOURCE_SLOT_SYSTEM, &slot_key)],
        service_type: slot.services.iter().map(codeable).collect(),
        appointment_type: slot
            .appointment_type
            .as_ref()
            .map(|c| Box::new(codeable(c))),
        schedule: Box::new(schedule_ref),
        status: slot.status.fhir_code().into(),
        start: instant(start).into(),
        end: instant(end).into(),
        comment: slot.comment.as_deref().map(fstr),
        ..Default::default()
    };
    Some((schedule, slot))
}

/// FHIR PractitionerRole of a practitioner master record that names its clinics: the
/// practitioner, each clinic (`clinic_codes`) as a location by identifier, the
/// specialisation as the specialty, `active`. `None` when the record names no clinic or has
/// no key.
pub fn practitioner_role(p: &Practitioner) -> Option<r::PractitionerRole> {
    if p.clinic_codes.is_empty() {
        return None;
    }
    let (system, value) = practitioner_key(p)?;
    let key = format!("{system}|{value}");
    let location = p
        .clinic_codes
        .iter()
        .filter_map(|code| {
            location_ref(&Location {
                code: Some(code.clone()),
                ..Location::default()
            })
        })
        .collect();
    Some(r::PractitionerRole {
        id: Some(resource_id("PractitionerRole", PRACTITIONER_ROLE_SYSTEM, &key).into()),
        identifier: vec![plain_identifier(PRACTITIONER_ROLE_SYSTEM, &key)],
        active: p.active.map(Into::into),
        practitioner: practitioner_ref(p).map(Box::new),
        location,
        specialty: p.specialisation.iter().map(codeable).collect(),
        ..Default::default()
    })
}

/// Extension URL, on an `Appointment.serviceType`, of the service's own time (AIS-4 and
/// AIS-7; `valuePeriod`): the IG puts AIS times on `participant.period`, but an AIS names no
/// participant.
pub(crate) const EXT_SERVICE_PERIOD: &str = "urn:switchboard:fhir:service-period";
/// Extension URL, on an `Appointment.participant` of a general resource (AIG), of AIG-6
/// resource quantity (`valueUnsignedInt`).
pub(crate) const EXT_RESOURCE_QUANTITY: &str = "urn:switchboard:fhir:resource-quantity";

/// The period of a booked service or resource: its start, and its start plus its duration.
fn booked_period(start: Option<&Timestamp>, minutes: Option<u32>) -> Option<Box<t::Period>> {
    let end = start
        .zip(minutes)
        .and_then(|(s, m)| s.plus_minutes(i64::from(m)));
    period(start, end.as_ref())
}

/// The people an appointment books, with their times: every AIP (`personnel`), or the one
/// practitioner of a source that names only that.
fn booked_people(
    a: &Appointment,
) -> impl Iterator<Item = (&Practitioner, Option<&Timestamp>, Option<u32>)> {
    let fallback = a.practitioner.iter().filter(|_| a.personnel.is_empty());
    a.personnel
        .iter()
        .map(|p| (&p.practitioner, p.start.as_ref(), p.duration_minutes))
        .chain(fallback.map(|p| (p, None, None)))
}

/// The locations an appointment books, with their times: every AIL (`locations`), or the
/// one location of a source that names only that.
fn booked_locations(
    a: &Appointment,
) -> impl Iterator<Item = (&Location, Option<&Timestamp>, Option<u32>)> {
    let fallback = a.location.iter().filter(|_| a.locations.is_empty());
    a.locations
        .iter()
        .map(|l| (&l.location, l.start.as_ref(), l.duration_minutes))
        .chain(fallback.map(|l| (l, None, None)))
}

/// FHIR Appointment of a canonical appointment, as the IG maps SCH, AIS, AIG, AIL and AIP:
/// every service (`serviceType`, with its time in [`EXT_SERVICE_PERIOD`]), every person (a
/// Practitioner participant typed with AIP-4), location (a Location participant) and general
/// resource (a participant typed with AIG-4 whose actor is the resource by identifier
/// `urn:switchboard:resource`; one without an AIG-3 code is left out), each with its own
/// `period`; then the roles.
///
/// # Errors
/// [`FhirError::Render`] without any appointment id or start.
pub fn appointment(
    a: &Appointment,
    patient: Option<&Identifier>,
) -> Result<r::Appointment, FhirError> {
    let (system, value) = appointment_key(a).ok_or_else(|| FhirError::Render {
        path: "appointment.placer_id".into(),
        reason: "an appointment needs a placer, filler or remote id".into(),
    })?;
    let identifier = appointment_identifiers(a);
    let mut participant = Vec::new();
    if let Some(p) = patient.or(a.patient.as_ref()) {
        participant.push(r::AppointmentParticipant {
            actor: Some(Box::new(patient_ref(p))),
            status: "accepted".into(),
            ..Default::default()
        });
    }
    for (p, start, minutes) in booked_people(a) {
        if let Some(reference) = practitioner_ref(p) {
            participant.push(r::AppointmentParticipant {
                r#type: p.specialisation.iter().map(codeable).collect(),
                actor: Some(Box::new(reference)),
                status: "accepted".into(),
                period: booked_period(start, minutes),
                ..Default::default()
            });
        }
    }
    for (l, start, minutes) in booked_locations(a) {
        if let Some(reference) = location_ref(l) {
            participant.push(r::AppointmentParticipant {
                actor: Some(Box::new(reference)),
                status: "accepted".into(),
                period: booked_period(start, minutes),
                ..Default::default()
            });
        }
    }
    for r in &a.resources {
        let Some(code) = r.resource.code.as_deref() else {
            continue;
        };
        participant.push(r::AppointmentParticipant {
            extension: r
                .quantity
                .map(|q| {
                    ext(
                        EXT_RESOURCE_QUANTITY,
                        t::ExtensionValue::UnsignedInt(q.into()),
                    )
                })
                .into_iter()
                .collect(),
            r#type: r.resource_type.iter().map(codeable).collect(),
            actor: Some(Box::new(t::Reference {
                identifier: Some(Box::new(plain_identifier(RESOURCE_SYSTEM, code))),
                display: r.resource.text.as_deref().map(fstr),
                ..Default::default()
            })),
            status: "accepted".into(),
            period: booked_period(r.start.as_ref(), r.duration_minutes),
            ..Default::default()
        });
    }
    // The roles a SIU names (ROL, PRT), typed with their role, those that hold only.
    for r in a.roles.iter().filter(|r| r.is_current()) {
        if let Some(reference) = practitioner_ref(&r.practitioner) {
            participant.push(r::AppointmentParticipant {
                r#type: vec![role_concept(r)],
                actor: Some(Box::new(reference)),
                status: "accepted".into(),
                period: period(r.start.as_ref(), r.end.as_ref()),
                ..Default::default()
            });
        }
    }
    let service_type = if a.services.is_empty() {
        a.service.iter().map(codeable).collect()
    } else {
        a.services
            .iter()
            .map(|s| {
                let mut c = codeable(&s.service);
                if let Some(p) = booked_period(s.start.as_ref(), s.duration_minutes) {
                    c.extension
                        .push(ext(EXT_SERVICE_PERIOD, t::ExtensionValue::Period(p)));
                }
                c
            })
            .collect()
    };
    Ok(r::Appointment {
        id: Some(resource_id("Appointment", system, value).into()),
        identifier,
        status: appointment_status_code(a.status).into(),
        cancelation_reason: a
            .event_reason
            .as_ref()
            .filter(|_| a.status == AppointmentStatus::Cancelled)
            .map(|c| Box::new(codeable(c))),
        extension: a
            .event_reason
            .as_ref()
            .filter(|_| a.status != AppointmentStatus::Cancelled)
            .map(|c| {
                ext(
                    EXT_EVENT_REASON,
                    t::ExtensionValue::CodeableConcept(Box::new(codeable(c))),
                )
            })
            .into_iter()
            .collect(),
        service_type,
        appointment_type: a.appointment_type.as_ref().map(|c| Box::new(codeable(c))),
        reason_code: a.reason.iter().map(codeable).collect(),
        start: a.start.as_ref().map(|s| instant(s).into()),
        end: a.end.as_ref().map(|s| instant(s).into()),
        minutes_duration: a.duration_minutes.map(Into::into),
        comment: a.notes.as_deref().map(fstr),
        participant,
        ..Default::default()
    })
}

fn money(amount: &crate::model::Decimal, currency: Option<&str>) -> t::Money {
    t::Money {
        value: Some(amount.as_str().into()),
        currency: currency.map(Into::into),
        ..Default::default()
    }
}

/// Extension URL of the canonical transaction type code on ChargeItem.
pub(crate) const EXT_TRANSACTION_TYPE: &str = "urn:switchboard:fhir:transaction-type";

/// FHIR ChargeItem of a canonical charge.
pub fn charge_item(
    c: &Charge,
    index: usize,
    event: &Event,
    subject: Option<&Identifier>,
) -> r::ChargeItem {
    let key = c
        .transaction_id
        .clone()
        .unwrap_or_else(|| format!("{}#{index}", event.id));
    let mut extension = vec![ext(
        EXT_TRANSACTION_TYPE,
        t::ExtensionValue::Code(c.transaction_type_code.as_str().into()),
    )];
    if let Some(p) = &c.payment {
        let result = match p.result {
            PaymentResult::Success => "success",
            PaymentResult::Failure => "failure",
        };
        extension.push(ext(
            systems::EXT_PAYMENT_RESULT,
            t::ExtensionValue::Code(result.into()),
        ));
        extension.extend(ext_str(systems::EXT_PAYMENT_REASON, p.reason.as_deref()));
        extension.extend(ext_str(
            systems::EXT_PAYMENT_REFERENCE,
            p.reference.as_deref(),
        ));
    }
    r::ChargeItem {
        id: Some(resource_id("ChargeItem", systems::CHARGE, &key).into()),
        extension,
        identifier: c
            .transaction_id
            .iter()
            .map(|v| plain_identifier(systems::CHARGE, v))
            .collect(),
        status: match c.status {
            ChargeStatus::Posted => "billed",
            ChargeStatus::Reversed => "aborted",
        }
        .into(),
        code: Box::new(
            c.code
                .as_ref()
                .map(codeable)
                .unwrap_or_else(|| t::CodeableConcept {
                    text: Some(fstr("charge")),
                    ..Default::default()
                }),
        ),
        subject: Box::new(subject.map(patient_ref).unwrap_or_default()),
        context: c
            .visit_number
            .as_deref()
            .map(|v| Box::new(encounter_ref(v))),
        occurrence: c
            .transaction_date
            .as_ref()
            .map(|d| r::ChargeItemOccurrence::DateTime(date_time(d).into())),
        performer: c
            .performed_by
            .as_ref()
            .and_then(practitioner_ref)
            .map(|a| r::ChargeItemPerformer {
                actor: Box::new(a),
                ..Default::default()
            })
            .into_iter()
            .collect(),
        quantity: c.quantity.as_ref().map(|q| {
            Box::new(t::Quantity {
                value: Some(q.as_str().into()),
                ..Default::default()
            })
        }),
        reason: c.diagnoses.iter().map(codeable).collect(),
        price_override: c
            .amount
            .as_ref()
            .map(|a| Box::new(money(a, c.currency.as_deref()))),
        entered_date: c.posting_date.as_ref().map(|d| date_time(d).into()),
        account: c
            .account
            .iter()
            .map(|a| {
                let mut r = reference(
                    "Account",
                    &resource_id("Account", systems::ACCOUNT, a),
                    None,
                );
                r.identifier = Some(Box::new(plain_identifier(systems::ACCOUNT, a)));
                r
            })
            .collect(),
        ..Default::default()
    }
}

fn order_key(o: &Order) -> Option<(&'static str, &str)> {
    o.placer_number
        .as_deref()
        .map(|v| (systems::ORDER_PLACER, v))
        .or_else(|| {
            o.filler_number
                .as_deref()
                .map(|v| (systems::ORDER_FILLER, v))
        })
}

fn order_identifiers(o: &Order) -> Vec<t::Identifier> {
    let mut ids = Vec::new();
    ids.extend(
        o.placer_number
            .as_deref()
            .map(|v| plain_identifier(systems::ORDER_PLACER, v)),
    );
    ids.extend(
        o.filler_number
            .as_deref()
            .map(|v| plain_identifier(systems::ORDER_FILLER, v)),
    );
    ids
}

pub(crate) fn order_status_code(s: OrderStatus) -> &'static str {
    match s {
        OrderStatus::Placed | OrderStatus::Scheduled | OrderStatus::InProgress => "active",
        OrderStatus::Completed => "completed",
        OrderStatus::OnHold => "on-hold",
        OrderStatus::Cancelled | OrderStatus::Discontinued | OrderStatus::Replaced => "revoked",
        OrderStatus::Error => "entered-in-error",
    }
}

pub(crate) fn priority_code(p: Priority) -> &'static str {
    match p {
        Priority::Stat => "stat",
        Priority::Asap => "asap",
        Priority::Routine | Priority::AsNeeded => "routine",
        Priority::Preop | Priority::Callback | Priority::TimingCritical => "urgent",
    }
}

/// Identifier system of the placer's specimen ids (SPM-2.1).
pub(crate) const SPECIMEN_PLACER: &str = "urn:switchboard:specimen-placer";
/// Identifier system of the filler's specimen ids (SPM-2.2).
pub(crate) const SPECIMEN_FILLER: &str = "urn:switchboard:specimen-filler";

/// The id of a specimen's resource: by its placer id, else its filler id (SPM-2), else by
/// the order and its place among the order's specimens.
fn specimen_id(s: &Specimen, order: &Order, index: usize) -> String {
    match (&s.placer_id, &s.filler_id) {
        (Some(p), _) => resource_id("Specimen", SPECIMEN_PLACER, p),
        (None, Some(f)) => resource_id("Specimen", SPECIMEN_FILLER, f),
        (None, None) => {
            let (system, value) = order_key(order).unwrap_or_default();
            stable_id(&["Specimen", system, value, &index.to_string()])
        }
    }
}

/// References to the Specimens of an order.
fn specimen_refs(order: &Order) -> Vec<t::Reference> {
    order
        .specimens
        .iter()
        .enumerate()
        .map(|(i, s)| reference("Specimen", &specimen_id(s, order, i), None))
        .collect()
}

/// FHIR Specimen of one specimen of an order (v2-to-FHIR IG, SPM -> Specimen): SPM-2 placer
/// and filler ids as identifiers (types `PLAC`, `FILL`), SPM-4 type, the patient, the order's
/// ServiceRequest as `request`, SPM-17 as `collection.collectedDateTime` (a period when SPM-17
/// has an end), SPM-8 as `collection.bodySite`, SPM-18 as `receivedTime`.
pub fn specimen(
    s: &Specimen,
    order: &Order,
    index: usize,
    subject: Option<&Identifier>,
) -> r::Specimen {
    let typed = |system: &str, value: &str, code: &str| {
        let mut i = plain_identifier(system, value);
        i.r#type = Some(Box::new(t::CodeableConcept {
            coding: vec![t::Coding {
                system: Some("http://terminology.hl7.org/CodeSystem/v2-0203".into()),
                code: Some(code.into()),
                ..Default::default()
            }],
            ..Default::default()
        }));
        i
    };
    let mut identifier = Vec::new();
    identifier.extend(
        s.placer_id
            .as_deref()
            .map(|v| typed(SPECIMEN_PLACER, v, "PLAC")),
    );
    identifier.extend(
        s.filler_id
            .as_deref()
            .map(|v| typed(SPECIMEN_FILLER, v, "FILL")),
    );
    let collected = match (&s.collected_at, &s.collection_end) {
        (start, Some(end)) => Some(r::SpecimenCollectionCollected::Period(Box::new(
            t::Period {
                start: start.as_ref().map(|d| date_time(d).into()),
                end: Some(date_time(end).into()),
                ..Default::default()
            },
        ))),
        (Some(at), None) => Some(r::SpecimenCollectionCollected::DateTime(
            date_time(at).into(),
        )),
        (None, None) => None,
    };
    let collection =
        (collected.is_some() || s.source_site.is_some()).then(|| r::SpecimenCollection {
            collected,
            body_site: s.source_site.as_ref().map(|c| Box::new(codeable(c))),
            ..Default::default()
        });
    r::Specimen {
        id: Some(specimen_id(s, order, index).into()),
        identifier,
        r#type: s.specimen_type.as_ref().map(|c| Box::new(codeable(c))),
        subject: subject.map(|p| Box::new(patient_ref(p))),
        received_time: s.received_at.as_ref().map(|d| date_time(d).into()),
        request: order_key(order)
            .map(|(sys, v)| {
                reference(
                    "ServiceRequest",
                    &resource_id("ServiceRequest", sys, v),
                    None,
                )
            })
            .into_iter()
            .collect(),
        collection,
        ..Default::default()
    }
}

/// FHIR ServiceRequest of a canonical order, `None` without placer or filler number.
pub fn service_request(o: &Order, subject: Option<&Identifier>) -> Option<r::ServiceRequest> {
    let (system, value) = order_key(o)?;
    Some(r::ServiceRequest {
        id: Some(resource_id("ServiceRequest", system, value).into()),
        identifier: order_identifiers(o),
        status: order_status_code(o.status).into(),
        intent: "order".into(),
        priority: o.priority.map(|p| priority_code(p).into()),
        code: o.procedure.as_ref().map(|c| Box::new(codeable(c))),
        subject: Box::new(subject.map(patient_ref).unwrap_or_default()),
        occurrence: o
            .requested_start
            .as_ref()
            .map(|d| r::ServiceRequestOccurrence::DateTime(date_time(d).into())),
        authored_on: o.ordered_at.as_ref().map(|d| date_time(d).into()),
        requester: o
            .ordering_provider
            .as_ref()
            .and_then(practitioner_ref)
            .map(Box::new),
        reason_code: o.reason.iter().map(codeable).collect(),
        // Every role of the order group that holds (ROL), the role in EXT_ROLE.
        performer: o
            .roles
            .iter()
            .filter(|r| r.is_current())
            .filter_map(role_ref)
            .collect(),
        specimen: specimen_refs(o),
        note: o
            .notes
            .iter()
            .map(|n| t::Annotation {
                text: n.as_str().into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}

/// FHIR ImagingStudy of a study a DICOM storage source received (`study_available`):
/// identified by its Study Instance UID (`urn:dicom:uid`, `urn:oid:` value) and its
/// accession number (type `ACSN`, the order filler system), status `available`, the
/// modalities (DCM codes), `started`, the counts, each series (UID, modality, instances) and
/// `basedOn` the ServiceRequest with the accession number as its filler number.
pub fn imaging_study(s: &ImagingStudy, subject: Option<&Identifier>) -> r::ImagingStudy {
    let uid = format!("urn:oid:{}", s.study_instance_uid);
    let dcm = |code: &str| t::Coding {
        system: Some(systems::DICOM_DCM.into()),
        code: Some(code.into()),
        ..Default::default()
    };
    let mut identifier = vec![plain_identifier(systems::DICOM_UID, &uid)];
    if let Some(acc) = &s.accession_number {
        let mut id = plain_identifier(systems::ORDER_FILLER, acc);
        id.r#type = Some(Box::new(t::CodeableConcept {
            coding: vec![t::Coding {
                system: Some(systems::V2_0203.into()),
                code: Some("ACSN".into()),
                ..Default::default()
            }],
            ..Default::default()
        }));
        identifier.push(id);
    }
    r::ImagingStudy {
        id: Some(resource_id("ImagingStudy", systems::DICOM_UID, &uid).into()),
        identifier,
        status: "available".into(),
        modality: s.modalities.iter().map(|m| dcm(m)).collect(),
        subject: Box::new(subject.map(patient_ref).unwrap_or_default()),
        started: s.started.as_ref().map(|d| date_time(d).into()),
        based_on: s
            .accession_number
            .iter()
            .map(|acc| t::Reference {
                r#type: Some("ServiceRequest".into()),
                identifier: Some(Box::new(plain_identifier(systems::ORDER_FILLER, acc))),
                ..Default::default()
            })
            .collect(),
        number_of_series: Some(s.number_of_series.into()),
        number_of_instances: Some(s.number_of_instances.into()),
        description: s.description.as_deref().map(fstr),
        series: s
            .series
            .iter()
            .map(|x| r::ImagingStudySeries {
                uid: x.uid.as_str().into(),
                modality: Box::new(dcm(x.modality.as_deref().unwrap_or("OT"))),
                number_of_instances: Some(x.number_of_instances.into()),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

pub(crate) fn result_status_code(s: Option<ResultStatus>) -> &'static str {
    match s {
        Some(ResultStatus::Registered) => "registered",
        Some(ResultStatus::Preliminary) => "preliminary",
        Some(ResultStatus::Final) | None => "final",
        Some(ResultStatus::Corrected) => "amended",
        Some(ResultStatus::Cancelled) => "cancelled",
        Some(ResultStatus::EnteredInError) => "entered-in-error",
    }
}

const ABNORMAL_FLAGS: &str = "http://terminology.hl7.org/CodeSystem/v2-0078";
/// R5 `Observation.value[x]` (Attachment) as an R4 cross-version extension.
pub(crate) const EXT_VALUE_ATTACHMENT: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Observation.value";

/// FHIR Observation of one canonical observation of a result.
pub fn observation(
    o: &Observation,
    report: &ResultReport,
    index: usize,
    report_key: &str,
    subject: Option<&Identifier>,
) -> r::Observation {
    let value = if let Some(n) = &o.numeric_value {
        Some(r::ObservationValue::Quantity(Box::new(t::Quantity {
            value: Some(n.as_str().into()),
            unit: o.units.as_ref().and_then(|u| u.label()).map(fstr),
            system: o
                .units
                .as_ref()
                .and_then(|u| u.system.as_deref())
                .map(|s| super::code_systems::to_uri(s).into_owned().into()),
            code: o
                .units
                .as_ref()
                .and_then(|u| u.code.as_deref())
                .map(Into::into),
            ..Default::default()
        })))
    } else if let Some(c) = &o.coded_value {
        Some(r::ObservationValue::CodeableConcept(Box::new(codeable(c))))
    } else {
        o.value
            .as_deref()
            .map(|v| r::ObservationValue::String(fstr(v)))
    };
    let sub = o.sub_id.as_deref().unwrap_or("");
    let code = o.code.code.as_deref().unwrap_or("");
    // R4 Observation.value[x] has no Attachment (R5 added it). The IG sends a document-like
    // ED to a DocumentReference; for a result's ED/RP value we keep the Observation and carry
    // the attachment in R5's element through its R4 cross-version extension, which any R4
    // server accepts as an extension and `to_model` reads back.
    let extension = o
        .attachment
        .iter()
        .map(|a| {
            ext(
                EXT_VALUE_ATTACHMENT,
                t::ExtensionValue::Attachment(Box::new(t::Attachment {
                    content_type: a.content_type.as_deref().map(Into::into),
                    data: a.data.as_deref().map(Into::into),
                    url: a.url.as_deref().map(Into::into),
                    ..Default::default()
                })),
            )
        })
        .collect();
    r::Observation {
        extension,
        id: Some(stable_id(&["Observation", report_key, code, sub, &index.to_string()]).into()),
        based_on: order_key(&report.order)
            .map(|(s, v)| reference("ServiceRequest", &resource_id("ServiceRequest", s, v), None))
            .into_iter()
            .collect(),
        status: result_status_code(o.status.or(report.status)).into(),
        code: Box::new(codeable(&o.code)),
        subject: subject.map(|s| Box::new(patient_ref(s))),
        // R4 Observation.specimen is one: the report's first specimen.
        specimen: specimen_refs(&report.order)
            .into_iter()
            .next()
            .map(Box::new),
        effective: o
            .observed_at
            .as_ref()
            .or(report.observed_at.as_ref())
            .map(|d| r::ObservationEffective::DateTime(date_time(d).into())),
        value,
        interpretation: o
            .abnormal_flags
            .iter()
            .map(|f| t::CodeableConcept {
                coding: vec![t::Coding {
                    system: Some(ABNORMAL_FLAGS.into()),
                    code: Some(f.as_str().into()),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
        note: o
            .notes
            .iter()
            .map(|n| t::Annotation {
                text: n.as_str().into(),
                ..Default::default()
            })
            .collect(),
        reference_range: o
            .reference_range
            .iter()
            .map(|rr| r::ObservationReferenceRange {
                text: Some(fstr(rr)),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// FHIR DiagnosticReport and its Observations for a canonical result.
pub fn diagnostic_report(
    report: &ResultReport,
    index: usize,
    event: &Event,
    subject: Option<&Identifier>,
) -> (r::DiagnosticReport, Vec<r::Observation>) {
    let report_key = order_key(&report.order)
        .map(|(s, v)| format!("{s}|{v}"))
        .unwrap_or_else(|| format!("{}#{index}", event.id));
    let observations: Vec<r::Observation> = report
        .observations
        .iter()
        .enumerate()
        .map(|(i, o)| observation(o, report, i, &report_key, subject))
        .collect();
    let dr = r::DiagnosticReport {
        id: Some(stable_id(&["DiagnosticReport", &report_key]).into()),
        identifier: order_identifiers(&report.order),
        based_on: order_key(&report.order)
            .map(|(s, v)| reference("ServiceRequest", &resource_id("ServiceRequest", s, v), None))
            .into_iter()
            .collect(),
        status: result_status_code(report.status).into(),
        category: report
            .section
            .iter()
            .map(|s| t::CodeableConcept {
                coding: vec![t::Coding {
                    system: Some("http://terminology.hl7.org/CodeSystem/v2-0074".into()),
                    code: Some(s.as_str().into()),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
        code: Box::new(
            report
                .order
                .procedure
                .as_ref()
                .map(codeable)
                .unwrap_or_else(|| t::CodeableConcept {
                    text: Some(fstr("result")),
                    ..Default::default()
                }),
        ),
        subject: subject.map(|s| Box::new(patient_ref(s))),
        effective: report
            .observed_at
            .as_ref()
            .map(|d| r::DiagnosticReportEffective::DateTime(date_time(d).into())),
        issued: report.reported_at.as_ref().map(|d| instant(d).into()),
        // As the IG maps PRT: a technician or responsible observer (ARI, TN, TR) performed
        // the report, a principal result interpreter (PRI) interpreted it.
        performer: report
            .order
            .roles
            .iter()
            .filter(|r| r.is_current())
            .filter(|r| matches!(r.role.code.as_deref(), Some("ARI" | "TN" | "TR")))
            .filter_map(role_ref)
            .collect(),
        results_interpreter: report
            .order
            .roles
            .iter()
            .filter(|r| r.is_current() && r.role.code.as_deref() == Some("PRI"))
            .filter_map(role_ref)
            .collect(),
        specimen: specimen_refs(&report.order),
        result: observations
            .iter()
            .filter_map(|o| o.id.as_ref().and_then(|id| id.value.clone()))
            .map(|id| reference("Observation", &id, None))
            .collect(),
        ..Default::default()
    };
    (dr, observations)
}

/// Every FHIR resource of an event, referenced entities first (Patient, Practitioners,
/// Locations, Encounter), then the event's subject (Appointment, ChargeItems, ServiceRequests,
/// DiagnosticReports with their Observations).
///
/// Entities without an identifier cannot have a deterministic id and are left out (their
/// references carry a display name only).
///
/// # Errors
/// [`FhirError::Render`] when the patient or appointment has no identifier at all.
pub fn event_to_resources(event: &Event) -> Result<Vec<Resource>, FhirError> {
    let mut out = Vec::new();
    let subject = event
        .patient
        .as_ref()
        .and_then(patient_key)
        .or(event.appointment.as_ref().and_then(|a| a.patient.as_ref()));
    if let Some(p) = &event.patient {
        let mut res = patient(p)?;
        // A merge (ADT^A40): the surviving patient `replaces` the prior identifiers.
        for id in event.merge.iter().flat_map(|m| &m.identifiers) {
            res.link.push(r::PatientLink {
                other: Box::new(patient_ref(id)),
                r#type: "replaces".into(),
                ..Default::default()
            });
        }
        // A link (ADT^A24): the patients are the same person, recorded twice.
        if let Some(other) = event
            .other_patient
            .as_ref()
            .filter(|_| event.kind == EventKind::PatientsLinked)
            .and_then(|o| patient_key(&o.patient))
        {
            res.link.push(r::PatientLink {
                other: Box::new(patient_ref(other)),
                r#type: "seealso".into(),
                ..Default::default()
            });
        }
        out.push(Resource::Patient(Box::new(res)));
    }
    // Allergies (AL1, IAM): one AllergyIntolerance each, for the patient of the event.
    if let Some((p, key)) = event
        .patient
        .as_ref()
        .and_then(|p| Some((p, patient_key(p)?)))
    {
        // The same allergen twice is one resource (its id derives from the allergen).
        let mut seen = std::collections::BTreeSet::new();
        for a in &p.allergies {
            let res = allergy_intolerance(a, key);
            if seen.insert(res.id.as_ref().and_then(|i| i.value.clone())) {
                out.push(Resource::AllergyIntolerance(Box::new(res)));
            }
        }
    }
    // Diagnoses (DG1): one Condition each, in the context of their visit.
    if let Some((p, key)) = event
        .patient
        .as_ref()
        .and_then(|p| Some((p, patient_key(p)?)))
    {
        let mut seen = std::collections::BTreeSet::new();
        for d in &p.diagnoses {
            let res = condition(d, key);
            if seen.insert(res.id.as_ref().and_then(|i| i.value.clone())) {
                out.push(Resource::Condition(Box::new(res)));
            }
        }
        for pr in &p.procedures {
            let res = procedure(pr, key);
            if seen.insert(res.id.as_ref().and_then(|i| i.value.clone())) {
                out.push(Resource::Procedure(Box::new(res)));
            }
        }
        // The OBX of an ADT: Observations of the patient (in the visit's context).
        let report_key = format!(
            "patient|{}|{}|{}",
            identifier_system(key),
            key.value,
            event
                .encounter
                .as_ref()
                .and_then(|e| e.visit_number.as_deref())
                .unwrap_or_default()
        );
        let no_report = ResultReport {
            order: Order {
                placer_number: None,
                filler_number: None,
                group_number: None,
                control: None,
                procedure: None,
                priority: None,
                status: OrderStatus::Completed,
                ordered_at: None,
                requested_start: None,
                ordering_provider: None,
                reason: None,
                notes: None,
                specimens: Vec::new(),
                roles: Vec::new(),
                imaging: None,
            },
            status: None,
            observed_at: None,
            reported_at: None,
            section: None,
            observations: Vec::new(),
        };
        for (i, o) in p.observations.iter().enumerate() {
            let res = observation(o, &no_report, i, &report_key, Some(key));
            if seen.insert(res.id.as_ref().and_then(|i| i.value.clone())) {
                out.push(Resource::Observation(Box::new(res)));
            }
        }
        for c in &p.coverages {
            let (res, extras) = coverage(c, key);
            for x in extras {
                if seen.insert(x.id().and_then(|i| i.value.clone())) {
                    out.push(x);
                }
            }
            if seen.insert(res.id.as_ref().and_then(|i| i.value.clone())) {
                out.push(Resource::Coverage(Box::new(res)));
            }
        }
    }
    // The primary facility (PD1-3) of the event's patient: an Organization.
    if let Some((org, _)) = event
        .patient
        .as_ref()
        .and_then(|p| p.primary_facility.as_ref())
        .and_then(facility)
    {
        out.push(Resource::Organization(Box::new(org)));
    }
    // The account (PID-18) and its guarantors (GT1) of every patient of the event.
    let other_patients = event.other_patient.iter().map(|o| &o.patient);
    let merged_patients = event.additional_merges.iter().map(|m| &m.patient);
    let mut accounts_seen = std::collections::BTreeSet::new();
    for p in event
        .patient
        .iter()
        .chain(other_patients)
        .chain(merged_patients)
    {
        if let Some((acc, parties)) = account(p) {
            for party in parties {
                if accounts_seen.insert(party.id().and_then(|i| i.value.clone())) {
                    out.push(party);
                }
            }
            if accounts_seen.insert(acc.id.as_ref().and_then(|i| i.value.clone())) {
                out.push(Resource::Account(Box::new(acc)));
            }
        }
    }
    // The second patient of a swap, link or unlink.
    if let Some(other) = &event.other_patient {
        out.push(Resource::Patient(Box::new(patient(&other.patient)?)));
    }
    // A merge of several patients: each further surviving patient, with its own links.
    for pair in &event.additional_merges {
        let mut res = patient(&pair.patient)?;
        for id in &pair.merged.identifiers {
            res.link.push(r::PatientLink {
                other: Box::new(patient_ref(id)),
                r#type: "replaces".into(),
                ..Default::default()
            });
        }
        out.push(Resource::Patient(Box::new(res)));
    }
    let mut practitioners: Vec<&Practitioner> = event.practitioners.iter().collect();
    if let Some(p) = &event.patient {
        practitioners.extend(&p.primary_care_provider);
        practitioners.extend(p.procedures.iter().filter_map(|pr| pr.performer.as_ref()));
    }
    let mut locations: Vec<&Location> = Vec::new();
    // A location master event (MFN^M05): the location itself.
    locations.extend(&event.location);
    if let Some(a) = &event.appointment {
        practitioners.extend(booked_people(a).map(|(p, _, _)| p));
        locations.extend(booked_locations(a).map(|(l, _, _)| l));
    }
    let other_encounter = event
        .other_patient
        .as_ref()
        .and_then(|o| o.encounter.as_ref());
    for e in event.encounter.iter().chain(other_encounter) {
        practitioners.extend(
            e.roles
                .iter()
                .filter(|r| r.is_current())
                .map(|r| &r.practitioner),
        );
        practitioners.extend(&e.attending);
        practitioners.extend(&e.referring);
        practitioners.extend(&e.consulting);
        practitioners.extend(&e.admitting);
        practitioners.extend(&e.other_providers);
        practitioners.extend(&e.referral_sources);
        locations.extend(&e.location);
        locations.extend(e.location_history.iter().map(|s| &s.location));
        locations.extend(&e.discharged_to);
    }
    if let Some(a) = &event.appointment {
        practitioners.extend(
            a.roles
                .iter()
                .filter(|r| r.is_current())
                .map(|r| &r.practitioner),
        );
    }
    let report_orders = event.results.iter().map(|r| &r.order);
    for o in event.orders.iter().chain(report_orders) {
        practitioners.extend(&o.ordering_provider);
        practitioners.extend(
            o.roles
                .iter()
                .filter(|r| r.is_current())
                .map(|r| &r.practitioner),
        );
    }
    for m in &event.medication_orders {
        practitioners.extend(&m.prescriber);
        practitioners.extend(m.dispense.as_ref().and_then(|d| d.dispenser.as_ref()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for p in practitioners {
        if let Some(res) = practitioner(p) {
            if seen.insert(res.id.as_ref().and_then(|i| i.value.clone())) {
                out.push(Resource::Practitioner(Box::new(res)));
            }
        }
    }
    for l in locations {
        if let Some(res) = location(l) {
            if seen.insert(res.id.as_ref().and_then(|i| i.value.clone())) {
                out.push(Resource::Location(Box::new(res)));
            }
        }
    }
    if let Some(e) = &event.encounter {
        if let Some(res) = encounter(event.kind, e, subject) {
            out.push(Resource::Encounter(Box::new(res)));
        }
    }
    if let Some(other) = &event.other_patient {
        let subject = patient_key(&other.patient);
        if let Some(res) = other
            .encounter
            .as_ref()
            .and_then(|e| encounter(event.kind, e, subject))
        {
            out.push(Resource::Encounter(Box::new(res)));
        }
    }
    // A service master event (MFN^M04): the service as a HealthcareService.
    if let Some(s) = &event.service {
        out.push(Resource::HealthcareService(Box::new(healthcare_service(
            s, event.kind,
        ))));
    }
    // A blocked or opened slot (SIU^S23/S24) is no appointment: a Slot of a Schedule.
    let slot = matches!(event.kind, EventKind::SlotBlocked | EventKind::SlotOpened);
    if let Some(a) = event.appointment.as_ref().filter(|_| !slot) {
        out.push(Resource::Appointment(Box::new(appointment(a, subject)?)));
    }
    if let Some((schedule, slot)) = event
        .appointment
        .as_ref()
        .filter(|_| slot)
        .and_then(|a| schedule_slot(a, event.kind == EventKind::SlotBlocked))
    {
        out.push(Resource::Schedule(Box::new(schedule)));
        out.push(Resource::Slot(Box::new(slot)));
    }
    // A resource change of an appointment (SIU^S18-S22): each resource's time in its
    // Schedule.
    if !slot {
        for (schedule, slot) in event.slots.iter().filter_map(resource_schedule_slot) {
            if !out
                .iter()
                .any(|r| matches!(r, Resource::Schedule(x) if x.id == schedule.id))
            {
                out.push(Resource::Schedule(Box::new(schedule)));
            }
            out.push(Resource::Slot(Box::new(slot)));
        }
    }
    // A schedule event (FHIR Schedule in): the Schedule by conditional update.
    if let Some(schedule) = event.schedule.as_ref().and_then(schedule_resource) {
        out.push(Resource::Schedule(Box::new(schedule)));
    }
    // A practitioner master record with its clinics: its PractitionerRole too.
    if event.kind.is_master_data() {
        for p in &event.practitioners {
            if let Some(role) = practitioner_role(p) {
                out.push(Resource::PractitionerRole(Box::new(role)));
            }
        }
    }
    for (i, c) in event.charges.iter().enumerate() {
        out.push(Resource::ChargeItem(Box::new(charge_item(
            c, i, event, subject,
        ))));
    }
    // The orders, and the order of each result report (the ORU's ORC/OBR, as the IG maps it):
    // a report's `basedOn` points at an entry of the Bundle, never at a resource the server
    // may not have.
    let mut orders_seen = std::collections::BTreeSet::new();
    let report_orders = event.results.iter().map(|r| &r.order);
    for o in event.orders.iter().chain(report_orders) {
        if let Some(sr) = service_request(o, subject) {
            if orders_seen.insert(sr.id.as_ref().and_then(|i| i.value.clone())) {
                out.push(Resource::ServiceRequest(Box::new(sr)));
            }
        }
    }
    // The specimens of the orders and of the reports' orders (SPM): one Specimen each, its
    // `request` naming every order on it.
    let mut specimens: Vec<r::Specimen> = Vec::new();
    let report_orders = event.results.iter().map(|r| &r.order);
    for o in event.orders.iter().chain(report_orders) {
        for (i, s) in o.specimens.iter().enumerate() {
            let res = specimen(s, o, i, subject);
            match specimens.iter_mut().find(|x| x.id == res.id) {
                Some(existing) => {
                    for r in res.request {
                        if !existing.request.contains(&r) {
                            existing.request.push(r);
                        }
                    }
                }
                None => specimens.push(res),
            }
        }
    }
    out.extend(
        specimens
            .into_iter()
            .map(|s| Resource::Specimen(Box::new(s))),
    );
    if let Some(study) = &event.imaging_study {
        out.push(Resource::ImagingStudy(Box::new(imaging_study(
            study, subject,
        ))));
    }
    // Medication orders (RDE, RDS): one MedicationRequest each, and the dispense an RDS
    // reports as a MedicationDispense.
    let visit = event
        .encounter
        .as_ref()
        .and_then(|e| e.visit_number.as_deref());
    for m in &event.medication_orders {
        out.extend(
            super::medication::medication_request(m, subject, visit)
                .map(|x| Resource::MedicationRequest(Box::new(x))),
        );
        out.extend(
            super::medication::medication_dispense(m, subject, visit)
                .map(|x| Resource::MedicationDispense(Box::new(x))),
        );
    }
    for (i, report) in event.results.iter().enumerate() {
        let (dr, observations) = diagnostic_report(report, i, event, subject);
        out.extend(
            observations
                .into_iter()
                .map(|o| Resource::Observation(Box::new(o))),
        );
        out.push(Resource::DiagnosticReport(Box::new(dr)));
    }
    Ok(out)
}

/// The conditional-update URL of a resource: `Type?identifier=system|value` from its first
/// identifier, or `Type/id` when it has none (Observations, identifier-less ChargeItems).
fn request_url(resource: &Resource) -> String {
    let (rtype, ids, id): (&str, &[t::Identifier], Option<&t::Id>) = match resource {
        Resource::Patient(x) => ("Patient", &x.identifier, x.id.as_ref()),
        Resource::Practitioner(x) => ("Practitioner", &x.identifier, x.id.as_ref()),
        Resource::Location(x) => ("Location", &x.identifier, x.id.as_ref()),
        Resource::HealthcareService(x) => ("HealthcareService", &x.identifier, x.id.as_ref()),
        Resource::Encounter(x) => ("Encounter", &x.identifier, x.id.as_ref()),
        Resource::Appointment(x) => ("Appointment", &x.identifier, x.id.as_ref()),
        Resource::ChargeItem(x) => ("ChargeItem", &x.identifier, x.id.as_ref()),
        Resource::ServiceRequest(x) => ("ServiceRequest", &x.identifier, x.id.as_ref()),
        Resource::DiagnosticReport(x) => ("DiagnosticReport", &x.identifier, x.id.as_ref()),
        Resource::Observation(x) => ("Observation", &x.identifier, x.id.as_ref()),
        Resource::AllergyIntolerance(x) => ("AllergyIntolerance", &x.identifier, x.id.as_ref()),
        Resource::Condition(x) => ("Condition", &x.identifier, x.id.as_ref()),
        Resource::Schedule(x) => ("Schedule", &x.identifier, x.id.as_ref()),
        Resource::PractitionerRole(x) => ("PractitionerRole", &x.identifier, x.id.as_ref()),
        Resource::Procedure(x) => ("Procedure", &x.identifier, x.id.as_ref()),
        Resource::Coverage(x) => ("Coverage", &x.identifier, x.id.as_ref()),
        Resource::Slot(x) => ("Slot", &x.identifier, x.id.as_ref()),
        Resource::Account(x) => ("Account", &x.identifier, x.id.as_ref()),
        Resource::Organization(x) => ("Organization", &x.identifier, x.id.as_ref()),
        // One RelatedPerson per patient: its id (which derives from the patient) addresses it,
        // not an identifier (a guarantor number) that another patient's RelatedPerson shares.
        Resource::RelatedPerson(x) => ("RelatedPerson", &[], x.id.as_ref()),
        Resource::Specimen(x) => ("Specimen", &x.identifier, x.id.as_ref()),
        Resource::ImagingStudy(x) => ("ImagingStudy", &x.identifier, x.id.as_ref()),
        Resource::MedicationRequest(x) => ("MedicationRequest", &x.identifier, x.id.as_ref()),
        Resource::MedicationDispense(x) => ("MedicationDispense", &x.identifier, x.id.as_ref()),
        _ => ("Basic", &[], None),
    };
    let first = ids.first().and_then(|i| {
        let system = i.system.as_ref()?.value.as_deref()?;
        let value = i.value.as_ref()?.value.as_deref()?;
        Some((system, value))
    });
    match first {
        Some((system, value)) => format!(
            "{rtype}?identifier={}|{}",
            query_escape(system),
            query_escape(value)
        ),
        None => format!(
            "{rtype}/{}",
            id.and_then(|i| i.value.as_deref()).unwrap_or_default()
        ),
    }
}

/// Percent-encodes the characters that would break a search parameter value.
fn query_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The snake_case name of an event kind (its JSON form).
pub(crate) fn event_kind_code(kind: EventKind) -> String {
    kind.as_str().to_owned()
}

/// `urn:uuid:` form of a 32-hex-digit stable id (8-4-4-4-12).
fn urn_uuid(id: &str) -> String {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!(
            "urn:uuid:{}-{}-{}-{}-{}",
            &id[0..8],
            &id[8..12],
            &id[12..16],
            &id[16..20],
            &id[20..32]
        )
    } else {
        format!("urn:uuid:{}", stable_id(&[id]))
    }
}

/// Rewrites `Type/id` references to the `urn:uuid:` fullUrl of the entry that holds that
/// resource (transactions only: batch entries cannot refer to each other), and drops the literal
/// part of references to resources outside the Bundle that carry an identifier, so a server
/// that checks referential integrity does not reject the Bundle for a patient it never saw.
fn rewrite_references(
    res: &mut Resource,
    urls: &std::collections::BTreeMap<String, String>,
    transaction: bool,
) {
    let fix = |r: &mut t::Reference| {
        let literal = r.reference.as_ref().and_then(|x| x.value.clone());
        match literal.as_deref().map(|v| urls.get(v)) {
            Some(Some(u)) if transaction => r.reference = Some(fstr(u)),
            Some(None) if r.identifier.is_some() => r.reference = None,
            _ => {}
        }
    };
    match res {
        Resource::Patient(p) => {
            for l in &mut p.link {
                fix(&mut l.other);
            }
            p.general_practitioner.iter_mut().for_each(fix);
        }
        Resource::Schedule(x) => x.actor.iter_mut().for_each(fix),
        Resource::PractitionerRole(x) => {
            x.practitioner.iter_mut().for_each(|r| fix(r));
            x.location.iter_mut().for_each(fix);
        }
        Resource::Coverage(x) => {
            fix(&mut x.beneficiary);
            x.payor.iter_mut().for_each(fix);
            x.policy_holder.iter_mut().for_each(|r| fix(r));
            x.subscriber.iter_mut().for_each(|r| fix(r));
        }
        Resource::Procedure(x) => {
            fix(&mut x.subject);
            x.encounter.iter_mut().for_each(|r| fix(r));
            for p in &mut x.performer {
                fix(&mut p.actor);
            }
        }
        Resource::Slot(x) => fix(&mut x.schedule),
        Resource::Encounter(e) => {
            e.subject.iter_mut().for_each(|r| fix(r));
            for p in &mut e.participant {
                p.individual.iter_mut().for_each(|r| fix(r));
            }
            for l in &mut e.location {
                fix(&mut l.location);
            }
            if let Some(h) = &mut e.hospitalization {
                h.destination.iter_mut().for_each(|r| fix(r));
            }
            e.service_provider.iter_mut().for_each(|r| fix(r));
        }
        Resource::Appointment(a) => {
            for p in &mut a.participant {
                p.actor.iter_mut().for_each(|r| fix(r));
            }
        }
        Resource::Account(x) => {
            x.subject.iter_mut().for_each(fix);
            for g in &mut x.guarantor {
                fix(&mut g.party);
            }
        }
        Resource::RelatedPerson(x) => fix(&mut x.patient),
        Resource::ChargeItem(c) => {
            fix(&mut c.subject);
            c.account.iter_mut().for_each(fix);
            c.context.iter_mut().for_each(|r| fix(r));
            for p in &mut c.performer {
                fix(&mut p.actor);
            }
        }
        Resource::ServiceRequest(sr) => {
            fix(&mut sr.subject);
            sr.requester.iter_mut().for_each(|r| fix(r));
            sr.performer.iter_mut().for_each(fix);
            sr.specimen.iter_mut().for_each(fix);
        }
        Resource::Specimen(x) => {
            x.subject.iter_mut().for_each(|r| fix(r));
            x.request.iter_mut().for_each(fix);
        }
        Resource::Observation(o) => {
            o.subject.iter_mut().for_each(|r| fix(r));
            o.based_on.iter_mut().for_each(fix);
            o.specimen.iter_mut().for_each(|r| fix(r));
        }
        Resource::DiagnosticReport(d) => {
            d.subject.iter_mut().for_each(|r| fix(r));
            d.based_on.iter_mut().for_each(fix);
            d.performer.iter_mut().for_each(fix);
            d.results_interpreter.iter_mut().for_each(fix);
            d.specimen.iter_mut().for_each(fix);
            d.result.iter_mut().for_each(fix);
        }
        Resource::AllergyIntolerance(a) => fix(&mut a.patient),
        Resource::Condition(c) => {
            fix(&mut c.subject);
            c.encounter.iter_mut().for_each(|r| fix(r));
        }
        Resource::ImagingStudy(x) => fix(&mut x.subject),
        Resource::MedicationRequest(x) => {
            fix(&mut x.subject);
            x.encounter.iter_mut().for_each(|r| fix(r));
            x.requester.iter_mut().for_each(|r| fix(r));
        }
        Resource::MedicationDispense(x) => {
            x.subject.iter_mut().for_each(|r| fix(r));
            x.context.iter_mut().for_each(|r| fix(r));
            for p in &mut x.performer {
                fix(&mut p.actor);
            }
            x.authorizing_prescription.iter_mut().for_each(fix);
        }
        _ => {}
    }
}

/// A transaction (or batch) Bundle of conditional PUTs, one entry per resource of
/// [`event_to_resources`]: `request.url` is `Type?identifier=system|value` (or `Type/id` for
/// resources without identifier), `fullUrl` the `urn:uuid:` form of the resource id, and
/// references between entries point at those fullUrls so the server resolves them.
///
/// # Errors
/// See [`event_to_resources`].
pub fn transaction_bundle(event: &Event, opts: &BundleOptions) -> Result<Resource, FhirError> {
    let resources = event_to_resources(event)?;
    let urls: std::collections::BTreeMap<String, String> = resources
        .iter()
        .filter_map(|res| {
            let local = resource_local_ref(res)?;
            let id = res.id()?.value.clone()?;
            Some((local, urn_uuid(&id)))
        })
        .collect();
    let entry = resources
        .into_iter()
        .map(|mut res| {
            let url = request_url(&res);
            let full_url = resource_local_ref(&res).and_then(|l| urls.get(&l).cloned());
            rewrite_references(&mut res, &urls, !opts.batch);
            r::BundleEntry {
                full_url: full_url.map(Into::into),
                request: Some(r::BundleEntryRequest {
                    method: "PUT".into(),
                    url: url.into(),
                    ..Default::default()
                }),
                resource: Some(res),
                ..Default::default()
            }
        })
        .collect();
    Ok(Resource::Bundle(Box::new(r::Bundle {
        id: Some(stable_id(&["Bundle", &event.id]).into()),
        meta: Some(Box::new(t::Meta {
            tag: vec![t::Coding {
                system: Some(EVENT_KIND_TAG.into()),
                code: Some(event_kind_code(event.kind).into()),
                ..Default::default()
            }],
            ..Default::default()
        })),
        r#type: if opts.batch { "batch" } else { "transaction" }.into(),
        timestamp: event
            .source
            .message_time
            .as_ref()
            .filter(|t| t.offset_minutes().is_some() && t.precision() >= Precision::Second)
            .map(|t| date_time(t).into()),
        entry,
        ..Default::default()
    })))
}

/// The transaction (or batch) Bundle of an event as a [`Rendered`](crate::dest::Rendered)
/// request, for the FHIR server destination: POST `body` to the server base (`path` is empty),
/// `kind` is `transaction` or `batch`, and the idempotency key derives from the event id.
/// Events with no FHIR resources give `None`.
///
/// # Errors
/// See [`event_to_resources`]; [`FhirError::Render`] if fhirbolt cannot serialise the Bundle.
pub fn render_bundle(
    event: &Event,
    opts: &BundleOptions,
) -> Result<Option<crate::dest::Rendered>, FhirError> {
    let bundle = transaction_bundle(event, opts)?;
    if matches!(&bundle, Resource::Bundle(b) if b.entry.is_empty()) {
        return Ok(None);
    }
    let body = fhirbolt::json::to_json_value(bundle, None).map_err(|e| FhirError::Render {
        path: "bundle".into(),
        reason: e.to_string(),
    })?;
    Ok(Some(crate::dest::Rendered {
        path: String::new(),
        body,
        idempotency_key: stable_id(&["fhir", &event.id]),
        kind: if opts.batch { "batch" } else { "transaction" }.to_owned(),
    }))
}

/// `Type/id` of a resource this module makes.
fn resource_local_ref(res: &Resource) -> Option<String> {
    let id = res.id()?.value.clone()?;
    let rtype = match res {
        Resource::Patient(_) => "Patient",
        Resource::Practitioner(_) => "Practitioner",
        Resource::Location(_) => "Location",
        Resource::Encounter(_) => "Encounter",
        Resource::Appointment(_) => "Appointment",
        Resource::ChargeItem(_) => "ChargeItem",
        Resource::ServiceRequest(_) => "ServiceRequest",
        Resource::DiagnosticReport(_) => "DiagnosticReport",
        Resource::Observation(_) => "Observation",
        Resource::AllergyIntolerance(_) => "AllergyIntolerance",
        Resource::Condition(_) => "Condition",
        Resource::Schedule(_) => "Schedule",
        Resource::Slot(_) => "Slot",
        Resource::Procedure(_) => "Procedure",
        Resource::Coverage(_) => "Coverage",
        Resource::Account(_) => "Account",
        Resource::Organization(_) => "Organization",
        Resource::RelatedPerson(_) => "RelatedPerson",
        Resource::Specimen(_) => "Specimen",
        Resource::ImagingStudy(_) => "ImagingStudy",
        Resource::MedicationRequest(_) => "MedicationRequest",
        Resource::MedicationDispense(_) => "MedicationDispense",
        Resource::PractitionerRole(_) => "PractitionerRole",
        _ => return None,
    };
    Some(format!("{rtype}/{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Event {
        let path = format!(
            "{}/../fixtures/model/_dest_inputs/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).expect("fixture exists");
        serde_json::from_str(&text).expect("fixture is an event")
    }

    #[test]
    fn bundle_entries_are_conditional_puts_with_deterministic_ids() {
        let event = fixture("siu_s12_booked");
        let rendered = render_bundle(&event, &BundleOptions::default())
            .expect("renders")
            .expect("has resources");
        assert_eq!(rendered.kind, "transaction");
        let entries = rendered.body["entry"].as_array().expect("entries");
        let urls: Vec<&str> = entries
            .iter()
            .filter_map(|e| e["request"]["url"].as_str())
            .collect();
        assert_eq!(
            urls,
            [
                "Patient?identifier=urn:switchboard:mrn|P-10928",
                "Practitioner?identifier=urn:switchboard:practitioner|DOC-SARAH-04",
                "Location?identifier=urn:switchboard:location|CLN-PED-01",
                "Appointment?identifier=urn:switchboard:appointment-placer|APT-PL-5501",
            ]
        );
        let patient_url = entries[0]["fullUrl"].as_str().expect("fullUrl");
        assert!(patient_url.starts_with("urn:uuid:"));
        // The appointment points at the patient entry, so the server resolves the reference.
        assert_eq!(
            entries[3]["resource"]["participant"][0]["actor"]["reference"].as_str(),
            Some(patient_url)
        );
        assert_eq!(
            entries[0]["resource"]["id"].as_str(),
            Some(resource_id("Patient", systems::MRN, "P-10928").as_str())
        );
        // A replay renders the same bytes.
        let again = render_bundle(&event, &BundleOptions::default()).expect("renders");
        assert_eq!(again, Some(rendered));
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(query_escape("A B|C&D"), "A%20B%7CC%26D");
    }
}
