//! FHIR R4 -> canonical events, for a single resource or a transaction/batch/collection Bundle.
//!
//! A Bundle is read in two passes: first the entities other resources point at (Patient,
//! Practitioner, Location, Encounter, Observation) are converted and indexed by `fullUrl` and
//! `Type/id`; then each "subject" resource (Encounter, Appointment, ChargeItem, ServiceRequest,
//! DiagnosticReport, MedicationRequest, MedicationDispense, Observations no report claims)
//! becomes one event with its references
//! resolved. A Patient no event refers to becomes a `patient_updated` (or, for a POST entry,
//! `patient_registered`) event of its own. Practitioners, Locations, Organizations,
//! RelatedPersons, Specimens and Schedules alone make no event: the model has no event kind for
//! them; they are read where other resources point at them (an Organization as a guarantor,
//! payor or primary facility, a RelatedPerson as a guarantor or subscriber, a Specimen as an
//! order's). AllergyIntolerance, Condition, Procedure, Coverage and Account belong to a Patient
//! of the same Bundle.
//!
//! Every error names the element path (`Bundle.entry[2].resource.birthDate`) and the rule
//! it breaks, never the value received (which may be patient data): fhirbolt's and
//! serde_json's texts go through [`crate::serde_reason::without_values`].

use std::collections::{BTreeSet, HashMap};

use fhirbolt::model::r4::resources as r;
use fhirbolt::model::r4::types as t;
use fhirbolt::model::r4::Resource;

use super::error::path_at;
use super::from_model::{
    ALTERNATE_VISIT_SYSTEM, EXT_ACCOUNT_STATUS, EXT_ESTIMATED_LENGTH, EXT_LEVEL_OF_CARE,
    EXT_LOCATION_CLASSIFICATION, EXT_MODE_OF_ARRIVAL, EXT_PATIENT_TYPE, EXT_PLANNED_END,
    EXT_PLANNED_START, EXT_RESOURCE_QUANTITY, EXT_ROLE_PERIOD, EXT_SERVICE_PERIOD,
    EXT_TRANSFER_REASON, EXT_VISIT_USER_CODE, PARTICIPATION_SYSTEM, PARTICIPATION_TYPE,
    REFERRAL_SOURCE_TEXT, RESOURCE_SLOT_SYSTEM, RESOURCE_SYSTEM, SCHEDULE_SYSTEM,
};
use super::from_model::{
    EVENT_KIND_TAG, EXT_BIRTH_TIME, EXT_EVENT_REASON, EXT_FINANCIAL_CLASS, EXT_INSURER, EXT_ROLE,
    EXT_TRANSACTION_TYPE, LOCATION_PARTS, ROLE_SYSTEM,
};
use super::from_model::{
    EXT_CONGREGATION, EXT_DISABILITY, EXT_PROTECTED, EXT_PUBLICITY, FACILITY_SYSTEM,
};
use super::{systems, FhirError};
use crate::model::{
    stable_id, Address, Allergy, Appointment, AppointmentResource, AppointmentStatus, Attachment,
    Charge, ChargeStatus, Coded, Contact, ContactUse, Decimal, Encounter, EncounterClass, Event,
    EventKind, Gender, HumanName, Identifier, IdentifierKind, Location, LocationStatus,
    LocationStay, MergedPatient, Observation, Order, OrderStatus, OtherName, Patient, PatientMerge,
    PaymentOutcome, PaymentResult, Phone, Practitioner, Precision, Priority, ResultReport,
    ResultStatus, Role, Source, Timestamp, TransactionType, VisitEvent,
};
use crate::model::{AppointmentLocation, AppointmentPerson, AppointmentService};
use crate::model::{Coverage, Diagnosis, Facility, Guarantor, Insured, Procedure, Specimen};
use crate::model::{Schedule, Slot, SlotStatus};

/// Reads the value of any fhirbolt primitive (`Option<T>` with a `value: Option<String>`).
macro_rules! val {
    ($e:expr) => {
        $e.as_ref().and_then(|x| x.value.as_deref())
    };
}

fn owned(v: Option<&str>) -> Option<String> {
    v.filter(|s| !s.is_empty()).map(str::to_owned)
}

/// Parses FHIR JSON (a resource or a Bundle) into canonical events.
///
/// # Errors
/// [`FhirError::InvalidJson`] / [`FhirError::Invalid`] (HTTP 400) when the text is not JSON or
/// not a valid FHIR R4 resource; [`FhirError::Unprocessable`] (HTTP 422) when it is valid FHIR
/// that cannot be used. Each names the element path.
pub fn fhir_to_events(json: &str) -> Result<Vec<Event>, FhirError> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| FhirError::InvalidJson {
            line: e.line(),
            column: e.column(),
            reason: crate::serde_reason::of_json(&e),
        })?;
    let Some(rtype) = value
        .get("resourceType")
        .and_then(serde_json::Value::as_str)
    else {
        return Err(FhirError::Invalid {
            path: "resourceType".into(),
            reason: "a FHIR resource needs a resourceType".into(),
        });
    };
    if let Some(path) = first_empty(&value, rtype) {
        return Err(FhirError::Invalid {
            path,
            reason: "empty arrays and objects are not allowed in FHIR JSON".into(),
        });
    }
    // fhirbolt 0.4 panics on some malformed input instead of returning an error (an empty
    // array is one, screened above); a remote sender must never be able to crash the engine.
    let parsed = std::panic::catch_unwind(|| fhirbolt::json::from_str::<Resource>(json, None));
    let resource = match parsed {
        Ok(Ok(resource)) => resource,
        Ok(Err(e)) => {
            let message = e.to_string();
            // fhirbolt reports unknown elements without a position; find the element by name.
            let path = unknown_field(&message)
                .and_then(|field| find_key(&value, field, rtype))
                .or_else(|| locate(&value, rtype))
                .unwrap_or_else(|| path_at(json, e.line(), e.column(), rtype));
            return Err(FhirError::Invalid {
                path,
                reason: crate::serde_reason::without_values(&message),
            });
        }
        Err(_) => {
            return Err(FhirError::Invalid {
                path: rtype.to_owned(),
                reason: "the FHIR parser rejected this resource".into(),
            })
        }
    };
    resource_to_events(&resource)
}

/// Whether fhirbolt accepts `value` as a resource (strict mode).
fn parses(value: &serde_json::Value) -> bool {
    // Always strict: fhirbolt 0.4's lax mode loops forever on an unknown element holding an
    // array of objects (found by the `fhir_json` fuzz target), so it is never used.
    let text = value.to_string();
    std::panic::catch_unwind(|| fhirbolt::json::from_str::<Resource>(&text, None).is_ok())
        .unwrap_or(false)
}

/// Finds the element of a resource fhirbolt rejects, for errors that carry no position: the
/// failing Bundle entry, then the first top-level element that fails on its own.
fn locate(value: &serde_json::Value, rtype: &str) -> Option<String> {
    let obj = value.as_object()?;
    if rtype == "Bundle" {
        let entries = obj.get("entry").and_then(serde_json::Value::as_array);
        for (i, entry) in entries.into_iter().flatten().enumerate() {
            let Some(resource) = entry.get("resource") else {
                continue;
            };
            if !parses(resource) {
                let inner = resource
                    .get("resourceType")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("resource");
                let base = format!("Bundle.entry[{i}].resource");
                let suffix = locate(resource, inner)
                    .and_then(|p| p.strip_prefix(inner).map(str::to_owned))
                    .unwrap_or_default();
                return Some(format!("{base}{suffix}"));
            }
        }
    }
    obj.iter()
        .filter(|(k, _)| k.as_str() != "resourceType")
        .find(|(k, v)| {
            let mut probe = serde_json::Map::new();
            probe.insert(
                "resourceType".into(),
                serde_json::Value::String(rtype.to_owned()),
            );
            probe.insert((*k).clone(), (*v).clone());
            !parses(&serde_json::Value::Object(probe))
        })
        .map(|(k, _)| format!("{rtype}.{k}"))
}

/// The element name of an "unknown field `x`" message.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// Path of the first element named `key`, depth first, rooted at `root`.
fn find_key(value: &serde_json::Value, key: &str, root: &str) -> Option<String> {
    match value {
        serde_json::Value::Object(map) => {
            if map.contains_key(key) {
                return Some(format!("{root}.{key}"));
            }
            map.iter()
                .find_map(|(k, v)| find_key(v, key, &format!("{root}.{k}")))
        }
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| find_key(v, key, &format!("{root}[{i}]"))),
        _ => None,
    }
}

/// Path of the first empty array or object (FHIR JSON forbids both), rooted at `root`.
fn first_empty(value: &serde_json::Value, root: &str) -> Option<String> {
    match value {
        serde_json::Value::Array(items) if items.is_empty() => Some(root.to_owned()),
        serde_json::Value::Object(map) if map.is_empty() => Some(root.to_owned()),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| first_empty(v, &format!("{root}[{i}]"))),
        serde_json::Value::Object(map) => map
            .iter()
            .filter(|(k, _)| k.as_str() != "resourceType")
            .find_map(|(k, v)| first_empty(v, &format!("{root}.{k}"))),
        _ => None,
    }
}

/// Converts a parsed FHIR resource (or Bundle) into canonical events; see [`fhir_to_events`].
///
/// # Errors
/// [`FhirError::Unprocessable`] naming the element path of the first unusable value.
pub fn resource_to_events(resource: &Resource) -> Result<Vec<Event>, FhirError> {
    // Through a JSON value, as render_bundle does: one serialiser instantiation of fhirbolt's
    // whole R4 model instead of two (it dominates this crate's build). serde_json keeps key
    // order (fhirbolt turns on preserve_order), so the text, and the hash, are the same.
    let content = fhirbolt::json::to_json_value(resource.clone(), None)
        .map(|v| v.to_string())
        .unwrap_or_default();
    let hash = stable_id(&[&content]);
    let mut entries = Vec::new();
    let mut tagged_kind = None;
    let (root_type, control_id, message_time) = match resource {
        Resource::Bundle(b) => {
            let kind = val!(Some(&b.r#type)).unwrap_or("");
            if !matches!(kind, "transaction" | "batch" | "collection") {
                return Err(FhirError::unprocessable(
                    "Bundle.type",
                    "bundle type is not supported (transaction, batch or collection)",
                ));
            }
            for (i, e) in b.entry.iter().enumerate() {
                let base = format!("Bundle.entry[{i}].resource");
                let Some(res) = &e.resource else {
                    return Err(FhirError::unprocessable(
                        format!("Bundle.entry[{i}]"),
                        "entry has no resource",
                    ));
                };
                let method = e.request.as_ref().and_then(|r| val!(Some(&r.method)));
                if method == Some("DELETE") {
                    return Err(FhirError::unprocessable(
                        format!("Bundle.entry[{i}].request.method"),
                        "DELETE entries are not supported",
                    ));
                }
                entries.push(Entry {
                    base,
                    resource: res,
                    full_url: owned(val!(e.full_url)),
                    method: owned(method),
                });
            }
            let control = val!(b.id)
                .map(str::to_owned)
                .or_else(|| b.identifier.as_ref().and_then(|i| owned(val!(i.value))))
                .unwrap_or_else(|| hash.clone());
            let time = val!(b.timestamp)
                .map(|ts| timestamp(ts, "Bundle.timestamp"))
                .transpose()?;
            tagged_kind = b.meta.as_deref().and_then(|m| {
                m.tag
                    .iter()
                    .filter(|c| val!(c.system) == Some(EVENT_KIND_TAG))
                    .find_map(|c| val!(c.code))
                    .and_then(|code| {
                        serde_json::from_value::<EventKind>(serde_json::Value::String(
                            code.to_owned(),
                        ))
                        .ok()
                    })
            });
            ("Bundle", control, time)
        }
        other => {
            let rtype = resource_type(other).ok_or_else(|| {
                FhirError::unprocessable("resourceType", "resource type is not supported")
            })?;
            entries.push(Entry {
                base: rtype.to_owned(),
                resource: other,
                full_url: None,
                method: None,
            });
            let control = other
                .id()
                .and_then(|i| i.value.clone())
                .unwrap_or_else(|| hash.clone());
            let time = other
                .meta()
                .and_then(|m| val!(m.last_updated))
                .map(|ts| timestamp(ts, &format!("{rtype}.meta.lastUpdated")))
                .transpose()?;
            (rtype, control, time)
        }
    };
    let source = Source {
        format: "fhir".into(),
        message_type: root_type.into(),
        control_id,
        message_time,
        ..Source::default()
    };
    let mut reader = Reader::new(entries, source, hash);
    reader.tagged_kind = tagged_kind;
    let mut events = reader.run()?;
    // A Bundle Switchboard rendered names the event kind it came from (FHIR has no "rescheduled"
    // or "merged"); with one event, that kind is the more precise one.
    if let (Some(kind), [event]) = (tagged_kind, events.as_mut_slice()) {
        event.kind = kind;
    }
    // A Bundle rendered from a merge of several patients (one surviving Patient per pair, each
    // with its `replaces` links) reads back as that one merge event, as the ADT^A40 mapped.
    let all_merges = events
        .iter()
        .all(|e| e.merge.is_some() && e.patient.is_some());
    if tagged_kind == Some(EventKind::PatientMerged) && events.len() > 1 && all_merges {
        let rest = events.split_off(1);
        events[0].kind = EventKind::PatientMerged;
        events[0].additional_merges = rest
            .into_iter()
            .filter_map(|e| {
                Some(PatientMerge {
                    patient: e.patient?,
                    merged: e.merge?,
                })
            })
            .collect();
    }
    Ok(events)
}

struct Entry<'a> {
    base: String,
    resource: &'a Resource,
    full_url: Option<String>,
    method: Option<String>,
}

fn resource_type(res: &Resource) -> Option<&'static str> {
    Some(match res {
        Resource::Patient(_) => "Patient",
        Resource::Practitioner(_) => "Practitioner",
        Resource::Location(_) => "Location",
        Resource::Encounter(_) => "Encounter",
        Resource::Appointment(_) => "Appointment",
        Resource::ChargeItem(_) => "ChargeItem",
        Resource::ServiceRequest(_) => "ServiceRequest",
        Resource::Observation(_) => "Observation",
        Resource::DiagnosticReport(_) => "DiagnosticReport",
        Resource::AllergyIntolerance(_) => "AllergyIntolerance",
        Resource::Condition(_) => "Condition",
        Resource::Schedule(_) => "Schedule",
        Resource::Slot(_) => "Slot",
        Resource::Procedure(_) => "Procedure",
        Resource::Coverage(_) => "Coverage",
        Resource::Account(_) => "Account",
        Resource::RelatedPerson(_) => "RelatedPerson",
        Resource::Organization(_) => "Organization",
        Resource::Specimen(_) => "Specimen",
        Resource::HealthcareService(_) => "HealthcareService",
        Resource::ImagingStudy(_) => "ImagingStudy",
        Resource::MedicationRequest(_) => "MedicationRequest",
        Resource::MedicationDispense(_) => "MedicationDispense",
        Resource::PractitionerRole(_) => "PractitionerRole",
        _ => return None,
    })
}

/// Conversion state of one Bundle (or single resource).
struct Reader<'a> {
    entries: Vec<Entry<'a>>,
    source: Source,
    hash: String,
    patients: HashMap<String, usize>,
    patient_values: Vec<Patient>,
    practitioners: HashMap<String, Practitioner>,
    locations: HashMap<String, Location>,
    encounters: HashMap<String, Encounter>,
    observations: HashMap<String, usize>,
    service_requests: HashMap<String, usize>,
    /// RelatedPerson and Organization entries (guarantors, insured people, insurers), by key.
    related_persons: HashMap<String, usize>,
    organizations: HashMap<String, usize>,
    specimens: HashMap<String, Specimen>,
    merges: HashMap<String, MergedPatient>,
    used_patients: BTreeSet<usize>,
    used_observations: BTreeSet<usize>,
    /// The event kind the Bundle's tag names (a Bundle Switchboard rendered), if any.
    tagged_kind: Option<EventKind>,
}

impl<'a> Reader<'a> {
    fn new(entries: Vec<Entry<'a>>, source: Source, hash: String) -> Self {
        Self {
            entries,
            source,
            hash,
            patients: HashMap::new(),
            patient_values: Vec::new(),
            practitioners: HashMap::new(),
            locations: HashMap::new(),
            encounters: HashMap::new(),
            observations: HashMap::new(),
            service_requests: HashMap::new(),
            related_persons: HashMap::new(),
            organizations: HashMap::new(),
            specimens: HashMap::new(),
            merges: HashMap::new(),
            used_patients: BTreeSet::new(),
            used_observations: BTreeSet::new(),
            tagged_kind: None,
        }
    }

    /// Keys under which an entry can be referenced: its fullUrl and `Type/id`.
    fn keys(entry: &Entry<'_>) -> Vec<String> {
        let mut keys = Vec::new();
        keys.extend(entry.full_url.clone());
        if let (Some(rtype), Some(id)) = (
            resource_type(entry.resource),
            entry.resource.id().and_then(|i| i.value.clone()),
        ) {
            keys.push(format!("{rtype}/{id}"));
        }
        keys
    }

    fn run(mut self) -> Result<Vec<Event>, FhirError> {
        if self.entries.is_empty() {
            return Ok(Vec::new());
        }
        // Pass 1: referenced entities. A patient's general practitioner is resolved after
        // it, when every Practitioner of the Bundle is known.
        let mut general_practitioners: Vec<(usize, &t::Reference)> = Vec::new();
        for i in 0..self.entries.len() {
            let entry = &self.entries[i];
            let keys = Self::keys(entry);
            match entry.resource {
                Resource::Patient(p) => {
                    let patient = patient(p, &entry.base)?;
                    let replaced: Vec<Identifier> = p
                        .link
                        .iter()
                        .filter(|l| val!(Some(&l.r#type)) == Some("replaces"))
                        .filter_map(|l| l.other.identifier.as_deref())
                        .filter(|i| val!(i.value).is_some())
                        .map(identifier)
                        .collect();
                    if let (false, Some(key)) = (replaced.is_empty(), patient.primary_identifier())
                    {
                        self.merges.insert(
                            key.value.clone(),
                            MergedPatient {
                                identifiers: replaced,
                                ..MergedPatient::default()
                            },
                        );
                    }
                    let idx = self.patient_values.len();
                    general_practitioners.extend(p.general_practitioner.iter().map(|r| (idx, r)));
                    self.patient_values.push(patient);
                    for k in keys {
                        self.patients.insert(k, idx);
                    }
                }
                Resource::Practitioner(p) => {
                    let value = practitioner(p, &entry.base)?;
                    for k in keys {
                        self.practitioners.insert(k, value.clone());
                    }
                }
                Resource::Location(l) => {
                    let value = location(l, &entry.base);
                    for k in keys {
                        self.locations.insert(k, value.clone());
                    }
                }
                // Read where other resources point at them: indexed by entry.
                Resource::Observation(_)
                | Resource::ServiceRequest(_)
                | Resource::RelatedPerson(_)
                | Resource::Organization(_) => {
                    let index = match entry.resource {
                        Resource::Observation(_) => &mut self.observations,
                        Resource::ServiceRequest(_) => &mut self.service_requests,
                        Resource::RelatedPerson(_) => &mut self.related_persons,
                        _ => &mut self.organizations,
                    };
                    for k in keys {
                        index.insert(k, i);
                    }
                }
                Resource::Specimen(x) => {
                    let value = specimen_of(x, &entry.base)?;
                    for k in keys {
                        self.specimens.insert(k, value.clone());
                    }
                }
                _ => {}
            }
        }
        // Allergies belong to their patient, which must be in the Bundle.
        for i in 0..self.entries.len() {
            if let Resource::AllergyIntolerance(a) = self.entries[i].resource {
                let base = self.entries[i].base.clone();
                let allergy = allergy(a, &base)?;
                let idx = val!(a.patient.reference)
                    .and_then(|r| self.patients.get(r))
                    .copied()
                    .ok_or_else(|| {
                        FhirError::unprocessable(
                            format!("{base}.patient"),
                            "an allergy's patient must be a Patient of the Bundle",
                        )
                    })?;
                self.patient_values[idx].allergies.push(allergy);
            }
        }
        // Diagnoses likewise; the visit comes back from the encounter's identifier.
        for i in 0..self.entries.len() {
            if let Resource::Condition(c) = self.entries[i].resource {
                let base = self.entries[i].base.clone();
                let code = c.code.as_deref().and_then(coded).ok_or_else(|| {
                    FhirError::unprocessable(format!("{base}.code"), "a condition needs a code")
                })?;
                let idx = val!(c.subject.reference)
                    .and_then(|r| self.patients.get(r))
                    .copied()
                    .ok_or_else(|| {
                        FhirError::unprocessable(
                            format!("{base}.subject"),
                            "a condition's patient must be a Patient of the Bundle",
                        )
                    })?;
                let time = match &c.recorded_date {
                    Some(d) => d
                        .value
                        .as_deref()
                        .map(|v| timestamp(v, &format!("{base}.recordedDate")))
                        .transpose()?,
                    None => None,
                };
                let visit_number = c
                    .encounter
                    .as_deref()
                    .and_then(|r| r.identifier.as_deref())
                    .and_then(|i| owned(val!(i.value)));
                self.patient_values[idx].diagnoses.push(Diagnosis {
                    code,
                    diagnosis_type: None,
                    time,
                    visit_number,
                });
            }
        }
        // Coverages of the patients of the Bundle (beneficiary).
        for i in 0..self.entries.len() {
            if let Resource::Coverage(x) = self.entries[i].resource {
                let base = self.entries[i].base.clone();
                let idx = val!(x.beneficiary.reference)
                    .and_then(|r| self.patients.get(r))
                    .copied()
                    .ok_or_else(|| {
                        FhirError::unprocessable(
                            format!("{base}.beneficiary"),
                            "a coverage's beneficiary must be a Patient of the Bundle",
                        )
                    })?;
                let class = |kind: &str| {
                    x.class
                        .iter()
                        .find(|c| c.r#type.coding.iter().any(|k| val!(k.code) == Some(kind)))
                };
                let payor = x.payor.first();
                let period = x.period.as_deref();
                let coverage = Coverage {
                    plan: class("plan").map(|c| Coded {
                        code: owned(c.value.value.as_deref()),
                        text: owned(val!(c.name)),
                        system: None,
                    }),
                    company_id: payor
                        .and_then(|p| p.identifier.as_deref())
                        .and_then(|i| owned(val!(i.value))),
                    company_name: payor.and_then(|p| owned(val!(p.display))),
                    group_number: class("group").and_then(|c| owned(c.value.value.as_deref())),
                    policy_number: owned(val!(x.subscriber_id)),
                    start: period
                        .and_then(|p| val!(p.start))
                        .map(|v| timestamp(v, &format!("{base}.period.start")))
                        .transpose()?,
                    end: period
                        .and_then(|p| val!(p.end))
                        .map(|v| timestamp(v, &format!("{base}.period.end")))
                        .transpose()?,
                    relationship: x.relationship.as_deref().and_then(coded),
                    plan_type: x.r#type.as_deref().and_then(coded),
                    company_address: payor
                        .and_then(|p| self.organization(p))
                        .and_then(|o| o.address.first())
                        .map(address_of)
                        .filter(|a| !a.is_empty()),
                    employer_id: x
                        .policy_holder
                        .as_deref()
                        .and_then(|p| p.identifier.as_deref())
                        .and_then(|i| owned(val!(i.value))),
                    employer_name: x.policy_holder.as_deref().and_then(|p| {
                        self.organization(p)
                            .and_then(|o| owned(val!(o.name)))
                            .or_else(|| owned(val!(p.display)))
                    }),
                    insured_id: x
                        .extension
                        .iter()
                        .find(|e| e.url == super::from_model::EXT_SUBSCRIBER_ID)
                        .and_then(|e| match &e.value {
                            Some(t::ExtensionValue::Identifier(i)) => owned(val!(i.value)),
                            _ => None,
                        }),
                    member_number: x
                        .identifier
                        .iter()
                        .find(|i| val!(i.system) == Some(super::from_model::MEMBER_SYSTEM))
                        .and_then(|i| owned(val!(i.value))),
                    insured: match x.subscriber.as_deref() {
                        Some(r) => self.insured(r)?,
                        None => None,
                    },
                };
                self.patient_values[idx].coverages.push(coverage);
            }
        }
        // Accounts of the patients of the Bundle (subject): PID-18 and the guarantors.
        for i in 0..self.entries.len() {
            if let Resource::Account(x) = self.entries[i].resource {
                let base = self.entries[i].base.clone();
                let idx = x
                    .subject
                    .iter()
                    .find_map(|r| val!(r.reference).and_then(|k| self.patients.get(k)))
                    .copied()
                    .ok_or_else(|| {
                        FhirError::unprocessable(
                            format!("{base}.subject"),
                            "an account's subject must be a Patient of the Bundle",
                        )
                    })?;
                let number = x
                    .identifier
                    .iter()
                    .find(|i| val!(i.system) == Some(systems::ACCOUNT))
                    .or_else(|| x.identifier.first())
                    .and_then(|i| owned(val!(i.value)));
                let mut guarantors = Vec::new();
                for (n, g) in x.guarantor.iter().enumerate() {
                    let path = format!("{base}.guarantor[{n}]");
                    if let Some(value) = self.guarantor(g, &path)? {
                        guarantors.push(value);
                    }
                }
                let patient = &mut self.patient_values[idx];
                if patient.account_number.is_none() {
                    patient.account_number = number;
                }
                patient.guarantors.extend(guarantors);
            }
        }
        // Procedures likewise, after the Practitioners (pass 1) so the performer resolves.
        for i in 0..self.entries.len() {
            if let Resource::Procedure(x) = self.entries[i].resource {
                let base = self.entries[i].base.clone();
                let code = x.code.as_deref().and_then(coded).ok_or_else(|| {
                    FhirError::unprocessable(format!("{base}.code"), "a procedure needs a code")
                })?;
                let idx = val!(x.subject.reference)
                    .and_then(|r| self.patients.get(r))
                    .copied()
                    .ok_or_else(|| {
                        FhirError::unprocessable(
                            format!("{base}.subject"),
                            "a procedure's patient must be a Patient of the Bundle",
                        )
                    })?;
                let time = match &x.performed {
                    Some(r::ProcedurePerformed::DateTime(d)) => d
                        .value
                        .as_deref()
                        .map(|v| timestamp(v, &format!("{base}.performedDateTime")))
                        .transpose()?,
                    _ => None,
                };
                let visit_number = x
                    .encounter
                    .as_deref()
                    .and_then(|r| r.identifier.as_deref())
                    .and_then(|i| owned(val!(i.value)));
                let performer = x
                    .performer
                    .first()
                    .and_then(|p| self.practitioner_ref(&p.actor));
                self.patient_values[idx].procedures.push(Procedure {
                    code,
                    time,
                    performer,
                    visit_number,
                });
            }
        }
        for i in 0..self.entries.len() {
            if let Resource::Encounter(e) = self.entries[i].resource {
                let base = self.entries[i].base.clone();
                let value = self.encounter(e, &base)?;
                for k in Self::keys(&self.entries[i]) {
                    self.encounters.insert(k, value.clone());
                }
            }
        }
        // generalPractitioner: the primary facility (an Organization, PD1-3) and the primary
        // care provider (a Practitioner, PD1-4).
        for (idx, reference) in general_practitioners {
            let target = val!(reference.reference).unwrap_or_default();
            let id_system = reference.identifier.as_deref().and_then(|i| val!(i.system));
            let is_org = self.organizations.contains_key(target)
                || target.starts_with("Organization/")
                || id_system == Some(FACILITY_SYSTEM);
            if is_org {
                if self.patient_values[idx].primary_facility.is_none() {
                    let name = self
                        .organization(reference)
                        .and_then(|o| owned(val!(o.name)))
                        .or_else(|| owned(val!(reference.display)));
                    let id = reference
                        .identifier
                        .as_deref()
                        .and_then(|i| owned(val!(i.value)));
                    self.patient_values[idx].primary_facility = Some(Facility { id, name });
                }
            } else if self.patient_values[idx].primary_care_provider.is_none() {
                self.patient_values[idx].primary_care_provider = self.practitioner_ref(reference);
            }
        }
        // A Bundle rendered from an ADT event (its tag names a kind other than a result):
        // its Observations are the patient's (the OBX of the ADT), not results of their own.
        if self
            .tagged_kind
            .is_some_and(|k| k != EventKind::ResultReported)
        {
            for i in 0..self.entries.len() {
                if let Resource::Observation(o) = self.entries[i].resource {
                    let Some(idx) = o
                        .subject
                        .as_deref()
                        .and_then(|r| val!(r.reference))
                        .and_then(|r| self.patients.get(r))
                        .copied()
                    else {
                        continue;
                    };
                    let base = self.entries[i].base.clone();
                    let value = observation(o, &base)?;
                    self.patient_values[idx].observations.push(value);
                    self.used_observations.insert(i);
                }
            }
        }
        // Orders a report is based on travel with the report (as ORU carries them), not as
        // events of their own.
        let mut report_orders: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, entry) in self.entries.iter().enumerate() {
            if let Resource::DiagnosticReport(d) = entry.resource {
                let srs = d
                    .based_on
                    .iter()
                    .filter_map(|r| val!(r.reference).and_then(|k| self.service_requests.get(k)))
                    .copied()
                    .collect();
                report_orders.insert(i, srs);
            }
        }
        let claimed: BTreeSet<usize> = report_orders.values().flatten().copied().collect();
        // A MedicationRequest a MedicationDispense of the input authorizes travels with the
        // dispense (as RDS carries the order), not as an event of its own.
        let dispensed = self.dispensed_requests();
        let claimed_requests: BTreeSet<usize> = dispensed.values().copied().collect();
        // Pass 2: one event per subject resource.
        let mut events: Vec<Event> = Vec::new();
        for i in 0..self.entries.len() {
            let base = self.entries[i].base.clone();
            let resource = self.entries[i].resource;
            let event = match resource {
                Resource::Encounter(e) => Some(self.encounter_event(e, &base, i)?),
                Resource::Appointment(a) => Some(self.appointment_event(a, &base, i)?),
                Resource::ChargeItem(c) => {
                    let ev = self.charge_event(c, &base, i)?;
                    // Charges of one Bundle for the same patient form one event, as a DFT does.
                    let same = events
                        .iter_mut()
                        .find(|e| !e.charges.is_empty() && e.partition_key() == ev.partition_key());
                    match same {
                        Some(existing) => {
                            existing.charges.extend(ev.charges);
                            None
                        }
                        None => Some(ev),
                    }
                }
                Resource::ServiceRequest(_) if claimed.contains(&i) => None,
                Resource::ServiceRequest(sr) => Some(self.order_event(sr, &base, i)?),
                Resource::DiagnosticReport(d) => {
                    let mut ev = self.report_event(d, &base, i)?;
                    for &sr_index in report_orders.get(&i).into_iter().flatten() {
                        if let Resource::ServiceRequest(sr) = self.entries[sr_index].resource {
                            let sr_base = self.entries[sr_index].base.clone();
                            ev.orders.push(self.order(sr, &sr_base)?);
                        }
                    }
                    // The report's order has the roles of the order it is based on.
                    if let (Some(report), Some(order)) = (ev.results.first_mut(), ev.orders.first())
                    {
                        report.order.roles.clone_from(&order.roles);
                    }
                    Some(ev)
                }
                // A resource's time of an appointment of the input (SIU^S18-S22): its slot,
                // added to the appointment's event below.
                Resource::Slot(slot) if self.is_resource_slot(slot) => None,
                Resource::Slot(slot) => Some(self.slot_event(slot, &base, i)?),
                Resource::HealthcareService(h) => Some(self.service_event(h, &base, i)?),
                Resource::ImagingStudy(x) => Some(self.imaging_study_event(x, &base, i)?),
                Resource::MedicationRequest(_) if claimed_requests.contains(&i) => None,
                Resource::MedicationRequest(x) => Some(self.medication_event(x, &base, i)?),
                Resource::MedicationDispense(x) => {
                    let request = dispensed.get(&i).copied();
                    Some(self.dispense_event(x, request, &base, i)?)
                }
                Resource::Patient(_)
                | Resource::Practitioner(_)
                | Resource::Location(_)
                | Resource::Observation(_)
                | Resource::AllergyIntolerance(_)
                | Resource::Condition(_)
                | Resource::Procedure(_)
                | Resource::Coverage(_)
                | Resource::Account(_)
                | Resource::RelatedPerson(_)
                | Resource::Organization(_)
                | Resource::Specimen(_)
                | Resource::PractitionerRole(_)
                | Resource::Schedule(_) => None,
                _ => {
                    return Err(FhirError::unprocessable(
                        format!("{base}.resourceType"),
                        "resource type is not supported",
                    ));
                }
            };
            events.extend(event);
        }
        // Master data alone (a Location or Practitioner that no other resource of the input is
        // about, in a Bundle tagged with no other kind): the location or practitioner itself
        // changed. A bed status Bundle (ADT^A20) is a Location too, and stays what it was.
        let master = self.tagged_kind.is_none_or(|k| {
            ["location_", "practitioner_", "schedule_"]
                .iter()
                .any(|p| k.as_str().starts_with(p))
        });
        if events.is_empty() && master {
            for i in 0..self.entries.len() {
                let base = self.entries[i].base.clone();
                match self.entries[i].resource {
                    Resource::Location(l) => events.push(self.location_event(l, &base, i)?),
                    Resource::Practitioner(p) => events.push(self.practitioner_event(p, &base, i)?),
                    Resource::PractitionerRole(r) => {
                        let ev = self.role_event(r, &base, i)?;
                        // The role of a practitioner of the same input completes that
                        // practitioner's event (as the master record wrote them together).
                        let code = ev.practitioners.first().and_then(|p| p.code.clone());
                        let same = events.iter_mut().find(|e| {
                            e.kind.as_str().starts_with("practitioner_")
                                && e.practitioners.first().and_then(|p| p.code.as_ref())
                                    == code.as_ref()
                        });
                        match same {
                            Some(e) => with_role(&mut e.practitioners[0], &ev.practitioners[0]),
                            None => events.push(ev),
                        }
                    }
                    Resource::Schedule(x) => events.push(self.schedule_event(x, &base, i)?),
                    _ => {}
                }
            }
        }
        for i in 0..self.entries.len() {
            if let Resource::Observation(o) = self.entries[i].resource {
                if !self.used_observations.contains(&i) {
                    let base = self.entries[i].base.clone();
                    events.push(self.observation_event(o, &base, i)?);
                }
            }
        }
        for i in 0..self.entries.len() {
            if matches!(self.entries[i].resource, Resource::Patient(_)) {
                let idx = Self::keys(&self.entries[i])
                    .first()
                    .and_then(|k| self.patients.get(k).copied())
                    .unwrap_or_else(|| {
                        // Without a fullUrl or id the entry was indexed by position only.
                        self.entries[..i]
                            .iter()
                            .filter(|e| matches!(e.resource, Resource::Patient(_)))
                            .count()
                    });
                if !self.used_patients.contains(&idx) {
                    let kind = if self.entries[i].method.as_deref() == Some("POST") {
                        EventKind::PatientRegistered
                    } else {
                        EventKind::PatientUpdated
                    };
                    let mut ev = self.event(kind, i, "Patient");
                    ev.patient = self.patient_values.get(idx).cloned();
                    events.push(ev);
                }
            }
        }
        self.attach_resource_slots(&mut events)?;
        let mut events = fold(events);
        // A Patient that replaces others (link type `replaces`) carries a merge (ADT^A40).
        for ev in &mut events {
            if let Some(key) = ev.partition_key() {
                if let Some(m) = self.merges.get(&key) {
                    ev.merge = Some(m.clone());
                }
            }
        }
        Ok(events)
    }

    /// The master-data kind of an entry: the Bundle's tagged kind when it is one of `kinds`
    /// (created, updated, deactivated, deleted), else deactivated when the resource says it
    /// is inactive, created for a POST and updated otherwise.
    fn master_kind(&self, index: usize, inactive: bool, kinds: [EventKind; 4]) -> EventKind {
        if let Some(k) = self.tagged_kind.filter(|k| kinds.contains(k)) {
            return k;
        }
        if inactive {
            kinds[2]
        } else if self.entries[index].method.as_deref() == Some("POST") {
            kinds[0]
        } else {
            kinds[1]
        }
    }

    fn location_event(&self, l: &r::Location, base: &str, i: usize) -> Result<Event, FhirError> {
        let mut value = location(l, base);
        if value.code.is_none() {
            return Err(FhirError::unprocessable(
                format!("{base}.identifier"),
                "a location needs an identifier",
            ));
        }
        let inactive = val!(l.status) == Some("inactive");
        if inactive {
            value.active = Some(false);
        }
        let kind = self.master_kind(
            i,
            inactive,
            [
                EventKind::LocationCreated,
                EventKind::LocationUpdated,
                EventKind::LocationDeactivated,
                EventKind::LocationDeleted,
            ],
        );
        let mut ev = self.event(kind, i, "Location");
        ev.location = Some(value);
        Ok(ev)
    }

    fn practitioner_event(
        &self,
        p: &r::Practitioner,
        base: &str,
        i: usize,
    ) -> Result<Event, FhirError> {
        let mut value = practitioner(p, base)?;
        value.active = p.active.as_ref().and_then(|a| a.value);
        let kind = self.master_kind(
            i,
            value.active == Some(false),
            [
                EventKind::PractitionerCreated,
                EventKind::PractitionerUpdated,
                EventKind::PractitionerDeactivated,
                EventKind::PractitionerDeleted,
            ],
        );
        let mut ev = self.event(kind, i, "Practitioner");
        ev.practitioners.push(value);
        Ok(ev)
    }

    /// Whether a Slot is one of an appointment's resources (`urn:switchboard:resource-slot`)
    /// while the input has that appointment.
    fn is_resource_slot(&self, slot: &r::Slot) -> bool {
        let has_appointment = self
            .entries
            .iter()
            .any(|e| matches!(e.resource, Resource::Appointment(_)));
        has_appointment
            && slot
                .identifier
                .iter()
                .any(|id| val!(id.system) == Some(RESOURCE_SLOT_SYSTEM))
    }

    /// The resource Slots of an appointment (see `is_resource_slot`) as its event's slots.
    fn attach_resource_slots(&mut self, events: &mut [Event]) -> Result<(), FhirError> {
        for i in 0..self.entries.len() {
            let base = self.entries[i].base.clone();
            let Resource::Slot(s) = self.entries[i].resource else {
                continue;
            };
            if !self.is_resource_slot(s) {
                continue;
            }
            let Some(ev) = events.iter_mut().find(|e| e.appointment.is_some()) else {
                continue;
            };
            let block = self.slot_event(s, &base, i)?;
            let id = s
                .identifier
                .iter()
                .find(|x| val!(x.system) == Some(RESOURCE_SLOT_SYSTEM))
                .and_then(|x| owned(val!(x.value)))
                .and_then(|v| v.split('|').next().map(str::to_owned));
            for mut slot in block.slots {
                slot.id = id.clone();
                slot.status = SlotStatus::from_fhir_code(val!(Some(&s.status)).unwrap_or(""))
                    .unwrap_or(slot.status);
                ev.slots.push(slot);
            }
        }
        Ok(())
    }

    /// A PractitionerRole: its practitioner (by reference or identifier) as a practitioner
    /// master event, with the role's locations as `clinic_codes`, its first specialty as the
    /// specialisation, its telecom and `active`.
    fn role_event(
        &self,
        x: &r::PractitionerRole,
        base: &str,
        i: usize,
    ) -> Result<Event, FhirError> {
        let mut p = x
            .practitioner
            .as_deref()
            .and_then(|r| self.practitioner_ref(r))
            .ok_or_else(|| {
                FhirError::unprocessable(
                    format!("{base}.practitioner"),
                    "a practitioner role needs its practitioner (a reference or an identifier)",
                )
            })?;
        p.clinic_codes = x
            .location
            .iter()
            .filter_map(|l| self.location_ref(l))
            .filter_map(|l| l.code)
            .collect();
        if let Some(s) = x.specialty.first().and_then(coded) {
            p.specialisation = Some(s);
        }
        for c in &x.telecom {
            let value = owned(val!(c.value));
            match val!(c.system) {
                Some("phone") if p.phone.is_none() => p.phone = value,
                Some("email") if p.email.is_none() => p.email = value,
                _ => {}
            }
        }
        p.active = x.active.as_ref().and_then(|a| a.value);
        let kind = self.master_kind(
            i,
            p.active == Some(false),
            [
                EventKind::PractitionerCreated,
                EventKind::PractitionerUpdated,
                EventKind::PractitionerDeactivated,
                EventKind::PractitionerDeleted,
            ],
        );
        let mut ev = self.event(kind, i, "PractitionerRole");
        ev.practitioners.push(p);
        Ok(ev)
    }

    /// A Schedule on its own (no Slot of the input names it): the availability of its actors
    /// (practitioners, locations, general resources by `urn:switchboard:resource`), its
    /// service types, specialty, planning horizon, `active` and comment.
    fn schedule_event(&self, x: &r::Schedule, base: &str, i: usize) -> Result<Event, FhirError> {
        let id = x
            .identifier
            .iter()
            .find(|id| val!(id.system) != Some(SCHEDULE_SYSTEM))
            .or_else(|| x.identifier.first())
            .and_then(|id| owned(val!(id.value)))
            .ok_or_else(|| {
                FhirError::unprocessable(
                    format!("{base}.identifier"),
                    "a schedule needs an identifier",
                )
            })?;
        let mut schedule = Schedule {
            id: Some(id),
            services: x.service_type.iter().filter_map(coded).collect(),
            specialty: x.specialty.first().and_then(coded),
            active: x.active.as_ref().and_then(|a| a.value),
            comment: owned(val!(x.comment)),
            ..Schedule::default()
        };
        for actor in &x.actor {
            let target = val!(actor.reference).unwrap_or("");
            let system = actor.identifier.as_deref().and_then(|i| val!(i.system));
            if system == Some(RESOURCE_SYSTEM) {
                schedule.resources.extend(
                    actor
                        .identifier
                        .as_deref()
                        .and_then(|i| owned(val!(i.value)))
                        .map(|code| Coded {
                            code: Some(code),
                            text: owned(val!(actor.display)),
                            system: None,
                        }),
                );
            } else if self.locations.contains_key(target)
                || target.starts_with("Location/")
                || system == Some(systems::LOCATION)
            {
                schedule.locations.extend(self.location_ref(actor));
            } else {
                schedule.practitioners.extend(self.practitioner_ref(actor));
            }
        }
        if let Some(h) = x.planning_horizon.as_deref() {
            schedule.planning_start = val!(h.start)
                .map(|v| timestamp(v, &format!("{base}.planningHorizon.start")))
                .transpose()?;
            schedule.planning_end = val!(h.end)
                .map(|v| timestamp(v, &format!("{base}.planningHorizon.end")))
                .transpose()?;
        }
        let kind = match self.tagged_kind {
            Some(k @ (EventKind::ScheduleUpdated | EventKind::ScheduleDeactivated)) => k,
            _ if schedule.active == Some(false) => EventKind::ScheduleDeactivated,
            _ => EventKind::ScheduleUpdated,
        };
        let mut ev = self.event(kind, i, "Schedule");
        ev.schedule = Some(schedule);
        Ok(ev)
    }

    /// A HealthcareService: the service it offers (identifier, name, comment as the
    /// description, first specialty as the department, `active`). Price and duration are
    /// written to `extraDetails` as text on the way out and not read back.
    fn service_event(
        &self,
        h: &r::HealthcareService,
        base: &str,
        i: usize,
    ) -> Result<Event, FhirError> {
        let code = h
            .identifier
            .iter()
            .find(|id| val!(id.system) == Some(systems::SERVICE))
            .or_else(|| h.identifier.first())
            .and_then(|id| owned(val!(id.value)))
            .ok_or_else(|| {
                FhirError::unprocessable(
                    format!("{base}.identifier"),
                    "a healthcare service needs an identifier",
                )
            })?;
        let active = h.active.as_ref().and_then(|a| a.value);
        let kind = self.master_kind(
            i,
            active == Some(false),
            [
                EventKind::ServiceCreated,
                EventKind::ServiceUpdated,
                EventKind::ServiceDeactivated,
                EventKind::ServiceDeleted,
            ],
        );
        let mut ev = self.event(kind, i, "HealthcareService");
        ev.service = Some(crate::model::Service {
            code,
            name: owned(val!(h.name)),
            description: owned(val!(h.comment)),
            department: h.specialty.first().and_then(coded),
            active,
            ..crate::model::Service::default()
        });
        Ok(ev)
    }

    /// For each MedicationDispense entry, the MedicationRequest entry of the input its
    /// `authorizingPrescription` points at, if any.
    fn dispensed_requests(&self) -> HashMap<usize, usize> {
        let mut requests: HashMap<String, usize> = HashMap::new();
        for (i, entry) in self.entries.iter().enumerate() {
            if matches!(entry.resource, Resource::MedicationRequest(_)) {
                for key in Self::keys(entry) {
                    requests.insert(key, i);
                }
            }
        }
        let mut out = HashMap::new();
        for (i, entry) in self.entries.iter().enumerate() {
            if let Resource::MedicationDispense(d) = entry.resource {
                let hit = d
                    .authorizing_prescription
                    .iter()
                    .find_map(|r| val!(r.reference).and_then(|k| requests.get(k)));
                if let Some(&j) = hit {
                    out.insert(i, j);
                }
            }
        }
        out
    }

    /// The patient and visit of a medication resource: the patient entry or, referenced by
    /// identifier only, a patient with that identifier; the visit, when referenced by
    /// identifier only, from that identifier.
    fn medication_context(
        &mut self,
        subject: Option<&t::Reference>,
        encounter: Option<&t::Reference>,
        base: &str,
        ev: &mut Event,
    ) -> Result<(), FhirError> {
        let (id, patient) = self.patient_ref(subject, &format!("{base}.subject"))?;
        ev.patient = Some(patient.unwrap_or_else(|| Patient {
            identifiers: vec![id],
            ..Patient::default()
        }));
        // An Encounter entry of the input becomes the event's when the events are folded.
        ev.encounter = encounter
            .filter(|r| val!(r.reference).is_none_or(|k| !self.encounters.contains_key(k)))
            .and_then(|r| r.identifier.as_deref())
            .and_then(|i| owned(val!(i.value)))
            .map(|v| Encounter {
                visit_number: Some(v),
                ..Encounter::default()
            });
        Ok(())
    }

    /// A MedicationRequest: `medication_order_cancelled` when cancelled, stopped or entered
    /// in error, else `medication_order_updated` for a PUT entry and
    /// `medication_order_created` otherwise (a POST, or a resource on its own).
    fn medication_event(
        &mut self,
        x: &r::MedicationRequest,
        base: &str,
        i: usize,
    ) -> Result<Event, FhirError> {
        let mut order = super::medication::order_of_request(x, base)?;
        order.prescriber = x
            .requester
            .as_deref()
            .and_then(|r| self.practitioner_ref(r));
        let kind = match (order.status, self.entries[i].method.as_deref()) {
            (OrderStatus::Cancelled | OrderStatus::Discontinued | OrderStatus::Error, _) => {
                EventKind::MedicationOrderCancelled
            }
            (_, Some("PUT")) => EventKind::MedicationOrderUpdated,
            _ => EventKind::MedicationOrderCreated,
        };
        let mut ev = self.event(kind, i, "MedicationRequest");
        self.medication_context(Some(&x.subject), x.encounter.as_deref(), base, &mut ev)?;
        ev.medication_orders = vec![order];
        Ok(ev)
    }

    /// A MedicationDispense (`medication_dispensed`), with the order of the MedicationRequest
    /// entry it is authorized by when the input has it.
    fn dispense_event(
        &mut self,
        x: &r::MedicationDispense,
        request: Option<usize>,
        base: &str,
        i: usize,
    ) -> Result<Event, FhirError> {
        let mut order = super::medication::order_of_dispense(x, base)?;
        let dispense = order.dispense.take();
        if let Some(j) = request {
            if let Resource::MedicationRequest(req) = self.entries[j].resource {
                let req_base = self.entries[j].base.clone();
                order = super::medication::order_of_request(req, &req_base)?;
                order.prescriber = req
                    .requester
                    .as_deref()
                    .and_then(|r| self.practitioner_ref(r));
            }
        }
        order.dispense = dispense.map(|mut d| {
            d.dispenser = x
                .performer
                .first()
                .and_then(|p| self.practitioner_ref(&p.actor));
            d
        });
        let mut ev = self.event(EventKind::MedicationDispensed, i, "MedicationDispense");
        self.medication_context(x.subject.as_deref(), x.context.as_deref(), base, &mut ev)?;
        ev.medication_orders = vec![order];
        Ok(ev)
    }

    fn event(&self, kind: EventKind, index: usize, rtype: &str) -> Event {
        Event::empty(
            stable_id(&["fhir", &self.hash, &index.to_string(), rtype]),
            kind,
            self.source.clone(),
        )
    }

    /// One `Account.guarantor` as a guarantor: the way back of `from_model::guarantor_party`
    /// (a Patient party is the patient itself, GT1-11 `SEL`); `None` for a party that is
    /// neither an entry of the Bundle nor an identifier.
    fn guarantor(
        &self,
        g: &r::AccountGuarantor,
        path: &str,
    ) -> Result<Option<Guarantor>, FhirError> {
        let period = g.period.as_deref();
        let mut out = Guarantor {
            start: period
                .and_then(|p| val!(p.start))
                .map(|v| timestamp(v, &format!("{path}.period.start")))
                .transpose()?,
            end: period
                .and_then(|p| val!(p.end))
                .map(|v| timestamp(v, &format!("{path}.period.end")))
                .transpose()?,
            ..Guarantor::default()
        };
        let target = val!(g.party.reference);
        if target.is_some_and(|k| self.patients.contains_key(k)) {
            out.relationship = Some(Coded {
                code: Some("SEL".into()),
                text: None,
                system: Some("HL70063".into()),
            });
            return Ok(Some(out));
        }
        if let Some(&idx) = target.and_then(|k| self.organizations.get(k)) {
            if let Resource::Organization(o) = self.entries[idx].resource {
                out.organization_name = owned(val!(o.name));
                out.number = o
                    .identifier
                    .iter()
                    .find(|i| val!(i.system) == Some(super::from_model::GUARANTOR_SYSTEM))
                    .and_then(|i| owned(val!(i.value)));
                out.phones = phones_of(&o.telecom);
                out.address = o.address.first().map(address_of).filter(|a| !a.is_empty());
                return Ok(Some(out));
            }
        }
        if let Some(&idx) = target.and_then(|k| self.related_persons.get(k)) {
            if let Resource::RelatedPerson(x) = self.entries[idx].resource {
                let base = self.entries[idx].base.clone();
                out.number = x
                    .identifier
                    .iter()
                    .find(|i| val!(i.system) == Some(super::from_model::GUARANTOR_SYSTEM))
                    .or_else(|| x.identifier.first())
                    .and_then(|i| owned(val!(i.value)));
                out.name = x.name.first().map(human_name).unwrap_or_default();
                out.relationship = x.relationship.first().and_then(coded);
                out.phones = phones_of(&x.telecom);
                out.address = x.address.first().map(address_of).filter(|a| !a.is_empty());
                out.gender = gender_of(val!(x.gender), &format!("{base}.gender"))?;
                out.birth_date = val!(x.birth_date)
                    .map(|v| timestamp(v, &format!("{base}.birthDate")))
                    .transpose()?;
                return Ok(Some(out));
            }
        }
        // A party outside the Bundle: its identifier is all there is.
        out.number = g
            .party
            .identifier
            .as_deref()
            .and_then(|i| owned(val!(i.value)));
        out.organization_name = owned(val!(g.party.display))
            .filter(|_| target.is_some_and(|t| t.starts_with("Organization/")));
        Ok((out.number.is_some() || out.organization_name.is_some()).then_some(out))
    }

    /// The Organization of the Bundle a reference points at.
    fn organization(&self, reference: &t::Reference) -> Option<&'a r::Organization> {
        let idx = *val!(reference.reference).and_then(|k| self.organizations.get(k))?;
        match self.entries[idx].resource {
            Resource::Organization(o) => Some(o),
            _ => None,
        }
    }

    /// The insured person of a `Coverage.subscriber` that is a RelatedPerson of the Bundle
    /// (a Patient subscriber is the patient, told by the relationship `SEL`).
    fn insured(&self, reference: &t::Reference) -> Result<Option<Insured>, FhirError> {
        let Some(&idx) = val!(reference.reference).and_then(|k| self.related_persons.get(k)) else {
            return Ok(None);
        };
        let Resource::RelatedPerson(x) = self.entries[idx].resource else {
            return Ok(None);
        };
        let base = self.entries[idx].base.clone();
        Ok(Some(Insured {
            name: x.name.first().map(human_name).unwrap_or_default(),
            birth_date: val!(x.birth_date)
                .map(|v| timestamp(v, &format!("{base}.birthDate")))
                .transpose()?,
            gender: gender_of(val!(x.gender), &format!("{base}.gender"))?,
            address: x.address.first().map(address_of).filter(|a| !a.is_empty()),
            phones: phones_of(&x.telecom),
        }))
    }

    /// A specimen reference: a Specimen of the Bundle, else the identifier it carries.
    fn specimen_ref(&self, reference: &t::Reference) -> Option<Specimen> {
        if let Some(s) = val!(reference.reference).and_then(|r| self.specimens.get(r)) {
            return Some(s.clone());
        }
        let i = reference.identifier.as_deref()?;
        let value = owned(val!(i.value))?;
        Some(match val!(i.system) {
            Some(super::from_model::SPECIMEN_FILLER) => Specimen {
                filler_id: Some(value),
                ..Specimen::default()
            },
            _ => Specimen {
                placer_id: Some(value),
                ..Specimen::default()
            },
        })
    }

    /// Resolves a patient reference: a Patient of the Bundle, else the identifier it carries.
    fn patient_ref(
        &mut self,
        reference: Option<&t::Reference>,
        path: &str,
    ) -> Result<(Identifier, Option<Patient>), FhirError> {
        let reference = reference
            .ok_or_else(|| FhirError::unprocessable(path, "a patient reference is required"))?;
        if let Some(&idx) = val!(reference.reference).and_then(|r| self.patients.get(r)) {
            self.used_patients.insert(idx);
            let p = self.patient_values[idx].clone();
            let id = p.primary_identifier().cloned().ok_or_else(|| {
                FhirError::unprocessable(path, "referenced patient has no identifier")
            })?;
            return Ok((id, Some(p)));
        }
        match reference.identifier.as_deref() {
            Some(i) if val!(i.value).is_some() => Ok((identifier(i), None)),
            _ => Err(FhirError::unprocessable(
                path,
                "patient reference must point at a Patient in the Bundle or carry an identifier",
            )),
        }
    }

    fn practitioner_ref(&self, reference: &t::Reference) -> Option<Practitioner> {
        if let Some(p) = val!(reference.reference).and_then(|r| self.practitioners.get(r)) {
            return Some(p.clone());
        }
        let i = reference.identifier.as_deref()?;
        let value = owned(val!(i.value))?;
        let mut p = Practitioner::default();
        match val!(i.system) {
            Some(systems::LICENCE) => p.licence_number = Some(value),
            Some(systems::REGISTRATION) => p.registration_number = Some(value),
            _ => p.code = Some(value),
        }
        Some(p)
    }

    fn location_ref(&self, reference: &t::Reference) -> Option<Location> {
        if let Some(l) = val!(reference.reference).and_then(|r| self.locations.get(r)) {
            return Some(l.clone());
        }
        let i = reference.identifier.as_deref()?;
        Some(Location {
            code: owned(val!(i.value)),
            name: owned(val!(reference.display)),
            ..Location::default()
        })
    }

    /// `Encounter.location` as a location history when its entries carry a status (the
    /// canonical → FHIR side writes the history so); empty when none does, which is an
    /// encounter that only names its current location.
    fn location_history(
        &self,
        e: &r::Encounter,
        base: &str,
    ) -> Result<Vec<LocationStay>, FhirError> {
        if e.location.iter().all(|l| val!(l.status).is_none()) {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for (n, l) in e.location.iter().enumerate() {
            let path = format!("{base}.location[{n}]");
            let Some(location) = self.location_ref(&l.location) else {
                continue;
            };
            let status = match val!(l.status) {
                Some("planned") => LocationStatus::Planned,
                Some("completed") => LocationStatus::Completed,
                // `active`, `reserved` or no status: the patient is (to be) there now.
                _ => LocationStatus::Active,
            };
            let (start, end) = period_of(l.period.as_deref(), &format!("{path}.period"))?;
            out.push(LocationStay {
                location,
                status,
                start,
                end,
                temporary: l
                    .extension
                    .iter()
                    .any(|x| x.url == EXT_LOCATION_CLASSIFICATION),
            });
        }
        Ok(out)
    }

    fn encounter(&self, e: &r::Encounter, base: &str) -> Result<Encounter, FhirError> {
        let visit_number = e
            .identifier
            .iter()
            .find(|i| val!(i.system) == Some(systems::VISIT))
            .or_else(|| e.identifier.first())
            .and_then(|i| owned(val!(i.value)))
            .ok_or_else(|| {
                FhirError::unprocessable(format!("{base}.identifier"), "a visit number is required")
            })?;
        let class = {
            let display = val!(e.class.display);
            let by_name = display.and_then(|d| {
                serde_json::from_value::<EncounterClass>(serde_json::Value::String(d.to_owned()))
                    .ok()
            });
            by_name.or(match val!(e.class.code) {
                Some("EMER") => Some(EncounterClass::Emergency),
                Some("IMP" | "ACUTE" | "NONAC") => Some(EncounterClass::Inpatient),
                Some("AMB" | "VR" | "HH" | "FLD") => Some(EncounterClass::Outpatient),
                Some("PRENC") => Some(EncounterClass::Preadmit),
                _ => None,
            })
        };
        let (mut attending, mut referring, mut consulting) = (None, None, Vec::new());
        let (mut admitting, mut other_providers, mut referral_sources) =
            (None, Vec::new(), Vec::new());
        let mut roles = Vec::new();
        for (n, p) in e.participant.iter().enumerate() {
            let Some(individual) = p.individual.as_deref() else {
                continue;
            };
            // A ROL or PRT role (table 0443 or 0912) is a role of its own, not the PV1 doctors.
            if let Some((role, participation)) = p.r#type.iter().find_map(role_of) {
                if let Some(practitioner) = self.practitioner_ref(individual) {
                    let (start, end) = period_of(
                        p.period.as_deref(),
                        &format!("{base}.participant[{n}].period"),
                    )?;
                    roles.push(Role {
                        role,
                        practitioner,
                        action: None,
                        start,
                        end,
                        participation,
                    });
                }
                continue;
            }
            // The PV1/PV2 doctors (v3 ParticipationType); a PV2-13 referral source is a `REF`
            // marked by its text.
            let kind = p.r#type.first().map(|c| {
                let code = c
                    .coding
                    .iter()
                    .find(|x| val!(x.system) == Some(PARTICIPATION_TYPE))
                    .or_else(|| c.coding.first())
                    .and_then(|x| val!(x.code));
                (code, val!(c.text))
            });
            let value = self.practitioner_ref(individual);
            match kind {
                Some((Some("REF"), Some(REFERRAL_SOURCE_TEXT))) => referral_sources.extend(value),
                Some((Some("REF"), _)) => referring = value,
                Some((Some("CON"), _)) => consulting.extend(value),
                Some((Some("ADM"), _)) => admitting = admitting.or(value),
                Some((Some("PART"), _)) => other_providers.extend(value),
                Some((Some("ATND") | None, _)) | None => {
                    if attending.is_none() {
                        attending = value;
                    }
                }
                Some(_) => {}
            }
        }
        let period = e.period.as_deref();
        let mut events = Vec::new();
        for (i, x) in e
            .extension
            .iter()
            .filter(|x| x.url == systems::EXT_VISIT_EVENT)
            .enumerate()
        {
            let path = format!("{base}.extension[{i}]");
            let part = |name: &str| {
                x.extension
                    .iter()
                    .find(|p| p.url == name)
                    .and_then(|p| p.value.as_ref())
            };
            let kind = match part("kind") {
                Some(t::ExtensionValue::String(s)) => owned(s.value.as_deref()),
                _ => None,
            }
            .ok_or_else(|| FhirError::unprocessable(&path, "visit event needs a kind"))?;
            let time = match part("time") {
                Some(t::ExtensionValue::DateTime(d)) => d
                    .value
                    .as_deref()
                    .map(|v| timestamp(v, &format!("{path}.time")))
                    .transpose()?,
                _ => None,
            };
            let description = match part("description") {
                Some(t::ExtensionValue::String(s)) => owned(s.value.as_deref()),
                _ => None,
            };
            let label = match part("label") {
                Some(t::ExtensionValue::String(s)) => owned(s.value.as_deref()),
                _ => None,
            };
            events.push(VisitEvent {
                kind,
                time,
                description,
                label,
            });
        }
        let visit_id = e
            .identifier
            .iter()
            .find(|i| val!(i.system) == Some(systems::VISIT));
        let hospitalization = e.hospitalization.as_ref();
        let ext = |url: &str| ext_coded(&e.extension, url);
        let ext_time = |url: &str| -> Result<Option<Timestamp>, FhirError> {
            match e.extension.iter().position(|x| x.url == url) {
                Some(n) => match &e.extension[n].value {
                    Some(t::ExtensionValue::DateTime(d)) => val!(Some(d))
                        .map(|v| timestamp(v, &format!("{base}.extension[{n}].valueDateTime")))
                        .transpose(),
                    _ => Ok(None),
                },
                None => Ok(None),
            }
        };
        let expected_length_of_stay = match e
            .extension
            .iter()
            .position(|x| x.url == EXT_ESTIMATED_LENGTH)
        {
            Some(n) => match &e.extension[n].value {
                Some(t::ExtensionValue::Duration(d)) => {
                    days_of(d, &format!("{base}.extension[{n}].valueDuration"))?
                }
                _ => None,
            },
            None => None,
        };
        let (admit_time, discharge_time) = period_of(period, &format!("{base}.period"))?;
        Ok(Encounter {
            visit_number: Some(visit_number),
            visit_number_authority: visit_id
                .and_then(|i| i.assigner.as_deref())
                .and_then(|a| owned(val!(a.display))),
            alternate_visit_ids: e
                .identifier
                .iter()
                .filter(|i| val!(i.system) == Some(ALTERNATE_VISIT_SYSTEM))
                .map(|i| {
                    let mut id = identifier(i);
                    id.kind = match id.type_code.as_deref() {
                        None => IdentifierKind::Other,
                        code => crate::from_v2::datatypes::identifier_kind(code),
                    };
                    id
                })
                .collect(),
            preadmit_number: hospitalization
                .and_then(|h| h.pre_admission_identifier.as_deref())
                .and_then(|i| owned(val!(i.value))),
            class,
            admission_type: e.r#type.first().and_then(coded),
            service: e.service_type.as_deref().and_then(coded),
            // The current location: the first `active` one of a history, else the first.
            location: e
                .location
                .iter()
                .find(|l| val!(l.status) == Some("active"))
                .or_else(|| e.location.first())
                .and_then(|l| self.location_ref(&l.location)),
            attending,
            referring,
            consulting,
            admitting,
            other_providers,
            referral_sources,
            readmission: hospitalization
                .and_then(|h| h.re_admission.as_deref())
                .and_then(coded),
            admit_source: hospitalization
                .and_then(|h| h.admit_source.as_deref())
                .and_then(coded),
            ambulatory_status: hospitalization
                .iter()
                .flat_map(|h| &h.special_arrangement)
                .filter_map(coded)
                .collect(),
            vip_indicator: hospitalization
                .and_then(|h| h.special_courtesy.first())
                .and_then(coded),
            patient_type: ext(EXT_PATIENT_TYPE),
            location_history: self.location_history(e, base)?,
            roles,
            admit_time,
            discharge_time,
            expected_admit_time: ext_time(EXT_PLANNED_START)?,
            expected_discharge_time: ext_time(EXT_PLANNED_END)?,
            expected_length_of_stay,
            length_of_stay: e
                .length
                .as_deref()
                .map(|d| days_of(d, &format!("{base}.length")))
                .transpose()?
                .flatten(),
            insurer: e
                .extension
                .iter()
                .find(|x| x.url == EXT_INSURER)
                .and_then(|x| match &x.value {
                    Some(t::ExtensionValue::String(s)) => owned(s.value.as_deref()),
                    _ => None,
                }),
            financial_class: ext(EXT_FINANCIAL_CLASS),
            discharge_disposition: hospitalization
                .and_then(|h| h.discharge_disposition.as_deref())
                .and_then(coded),
            discharged_to: hospitalization
                .and_then(|h| h.destination.as_deref())
                .and_then(|r| self.location_ref(r)),
            diet: hospitalization
                .and_then(|h| h.diet_preference.first())
                .and_then(coded),
            servicing_facility: e.service_provider.as_deref().and_then(|r| {
                let out = Coded {
                    code: r.identifier.as_deref().and_then(|i| owned(val!(i.value))),
                    text: owned(val!(r.display)),
                    system: None,
                };
                (out.code.is_some() || out.text.is_some()).then_some(out)
            }),
            account_status: ext(EXT_ACCOUNT_STATUS),
            admit_reason: e.reason_code.first().and_then(coded),
            transfer_reason: ext(EXT_TRANSFER_REASON),
            visit_user_codes: e
                .extension
                .iter()
                .filter(|x| x.url == EXT_VISIT_USER_CODE)
                .filter_map(|x| match &x.value {
                    Some(t::ExtensionValue::CodeableConcept(c)) => coded(c),
                    _ => None,
                })
                .collect(),
            description: e.text.as_deref().and_then(|n| narrative_text(&n.div.value)),
            publicity_code: ext(EXT_PUBLICITY),
            protected: e
                .extension
                .iter()
                .find(|x| x.url == EXT_PROTECTED)
                .and_then(|x| match &x.value {
                    Some(t::ExtensionValue::Boolean(b)) => b.value,
                    _ => None,
                }),
            priority: e.priority.as_deref().and_then(coded),
            mode_of_arrival: e
                .extension
                .iter()
                .find(|x| x.url == EXT_MODE_OF_ARRIVAL)
                .and_then(|x| match &x.value {
                    Some(t::ExtensionValue::Coding(c)) => coded_of(c),
                    _ => None,
                }),
            admission_level_of_care: ext(EXT_LEVEL_OF_CARE),
            events,
        })
    }

    fn encounter_event(
        &mut self,
        e: &r::Encounter,
        base: &str,
        i: usize,
    ) -> Result<Event, FhirError> {
        let kind = match val!(Some(&e.status)) {
            Some("planned") => EventKind::EncounterPreadmitted,
            Some("finished") => EventKind::EncounterDischarged,
            Some("cancelled" | "entered-in-error") => EventKind::EncounterCancelled,
            _ => EventKind::EncounterAdmitted,
        };
        let (_, patient) = self.patient_ref(e.subject.as_deref(), &format!("{base}.subject"))?;
        let encounter = Self::keys(&self.entries[i])
            .first()
            .and_then(|k| self.encounters.get(k).cloned())
            .map_or_else(|| self.encounter(e, base), Ok)?;
        let mut ev = self.event(kind, i, "Encounter");
        ev.patient = patient;
        ev.encounter = Some(encounter);
        Ok(ev)
    }

    fn appointment_event(
        &mut self,
        a: &r::Appointment,
        base: &str,
        i: usize,
    ) -> Result<Event, FhirError> {
        let (mut placer_id, mut filler_id, mut remote_id) = (None, None, None);
        for id in &a.identifier {
            let value = owned(val!(id.value));
            match val!(id.system) {
                Some(systems::APPOINTMENT_FILLER) => filler_id = value,
                Some(systems::APPOINTMENT_REMOTE) => remote_id = value,
                Some(systems::APPOINTMENT_PLACER) => placer_id = value,
                _ if placer_id.is_none() => placer_id = value,
                _ => {}
            }
        }
        if placer_id.is_none() && filler_id.is_none() && remote_id.is_none() {
            return Err(FhirError::unprocessable(
                format!("{base}.identifier"),
                "an appointment identifier is required",
            ));
        }
        let status = match val!(Some(&a.status)) {
            Some("proposed" | "pending") => AppointmentStatus::Pending,
            Some("booked") => AppointmentStatus::Booked,
            Some("arrived" | "checked-in") => AppointmentStatus::Arrived,
            Some("fulfilled") => AppointmentStatus::Completed,
            Some("cancelled") => AppointmentStatus::Cancelled,
            Some("noshow") => AppointmentStatus::NoShow,
            Some("entered-in-error") => AppointmentStatus::EnteredInError,
            Some("waitlist") => AppointmentStatus::Waitlisted,
            other => {
                return Err(FhirError::unprocessable(
                    format!("{base}.status"),
                    match other {
                        None => "an appointment status is required",
                        Some(_) => {
                            "unknown appointment status (proposed, pending, booked, arrived, \
                             checked-in, fulfilled, cancelled, noshow, entered-in-error, waitlist)"
                        }
                    },
                ))
            }
        };
        let kind = match status {
            AppointmentStatus::Cancelled => EventKind::AppointmentCancelled,
            AppointmentStatus::NoShow => EventKind::AppointmentNoShow,
            AppointmentStatus::EnteredInError => EventKind::AppointmentDeleted,
            AppointmentStatus::Arrived | AppointmentStatus::Completed => {
                EventKind::AppointmentModified
            }
            _ => EventKind::AppointmentBooked,
        };
        let mut patient = None;
        let mut personnel = Vec::new();
        let mut locations = Vec::new();
        let mut resources = Vec::new();
        let mut roles = Vec::new();
        for (n, p) in a.participant.iter().enumerate() {
            let Some(actor) = p.actor.as_deref() else {
                continue;
            };
            let path = format!("{base}.participant[{n}]");
            // A ROL or PRT role (table 0443 or 0912) of the appointment, not an AIP person.
            if let Some((role, participation)) = p.r#type.iter().find_map(role_of) {
                if let Some(practitioner) = self.practitioner_ref(actor) {
                    let (start, end) = period_of(p.period.as_deref(), &format!("{path}.period"))?;
                    roles.push(Role {
                        role,
                        practitioner,
                        action: None,
                        start,
                        end,
                        participation,
                    });
                }
                continue;
            }
            let target = val!(actor.reference).unwrap_or("");
            let rtype = val!(actor.r#type).unwrap_or("");
            let id_system = actor
                .identifier
                .as_deref()
                .and_then(|i| val!(i.system))
                .unwrap_or("");
            let (start, duration_minutes) =
                booked_of(p.period.as_deref(), &format!("{path}.period"))?;
            // A general resource (AIG), by identifier.
            if id_system == RESOURCE_SYSTEM {
                resources.push(AppointmentResource {
                    resource: Coded {
                        code: actor
                            .identifier
                            .as_deref()
                            .and_then(|i| owned(val!(i.value))),
                        text: owned(val!(actor.display)),
                        system: None,
                    },
                    resource_type: p.r#type.first().and_then(coded),
                    quantity: p
                        .extension
                        .iter()
                        .find(|x| x.url == EXT_RESOURCE_QUANTITY)
                        .and_then(|x| match &x.value {
                            Some(t::ExtensionValue::UnsignedInt(q)) => q.value,
                            _ => None,
                        }),
                    start,
                    duration_minutes,
                });
                continue;
            }
            let is_patient = self.patients.contains_key(target)
                || target.starts_with("Patient/")
                || rtype == "Patient"
                || id_system.contains("patient")
                || matches!(
                    id_system,
                    systems::MRN | systems::NATIONAL_ID | systems::PASSPORT | systems::ACCOUNT
                );
            if is_patient && patient.is_none() {
                patient = Some(self.patient_ref(Some(actor), &format!("{path}.actor"))?);
            } else if self.practitioners.contains_key(target)
                || target.starts_with("Practitioner/")
                || rtype == "Practitioner"
            {
                if let Some(practitioner) = self.practitioner_ref(actor) {
                    personnel.push(AppointmentPerson {
                        practitioner,
                        start,
                        duration_minutes,
                    });
                }
            } else if self.locations.contains_key(target)
                || target.starts_with("Location/")
                || rtype == "Location"
            {
                if let Some(location) = self.location_ref(actor) {
                    locations.push(AppointmentLocation {
                        location,
                        start,
                        duration_minutes,
                    });
                }
            }
        }
        let mut services = Vec::new();
        for (n, c) in a.service_type.iter().enumerate() {
            let Some(service) = coded(c) else {
                continue;
            };
            let period = c
                .extension
                .iter()
                .find(|x| x.url == EXT_SERVICE_PERIOD)
                .and_then(|x| match &x.value {
                    Some(t::ExtensionValue::Period(p)) => Some(&**p),
                    _ => None,
                });
            let (start, duration_minutes) =
                booked_of(period, &format!("{base}.serviceType[{n}].extension"))?;
            services.push(AppointmentService {
                service,
                start,
                duration_minutes,
            });
        }
        let (patient_id, patient) = patient.ok_or_else(|| {
            FhirError::unprocessable(
                format!("{base}.participant"),
                "an appointment needs a patient participant",
            )
        })?;
        let appointment = Appointment {
            placer_id,
            filler_id,
            remote_id,
            patient: Some(patient_id),
            practitioner: personnel.first().map(|p| p.practitioner.clone()),
            location: locations.first().map(|l| l.location.clone()),
            resources,
            service: services.first().map(|s| s.service.clone()),
            services,
            personnel,
            locations,
            appointment_type: a.appointment_type.as_deref().and_then(coded),
            start: val!(a.start)
                .map(|v| timestamp(v, &format!("{base}.start")))
                .transpose()?,
            end: val!(a.end)
                .map(|v| timestamp(v, &format!("{base}.end")))
                .transpose()?,
            duration_minutes: a.minutes_duration.as_ref().and_then(|m| m.value),
            status,
            reason: a.reason_code.first().and_then(coded),
            event_reason: a.cancelation_reason.as_deref().and_then(coded).or_else(|| {
                a.extension
                    .iter()
                    .find(|x| x.url == EXT_EVENT_REASON)
                    .and_then(|x| match &x.value {
                        Some(t::ExtensionValue::CodeableConcept(c)) => coded(c),
                        _ => None,
                    })
            }),
            notes: owned(val!(a.comment)),
            roles,
        };
        let mut ev = self.event(kind, i, "Appointment");
        ev.patient = patient;
        ev.appointment = Some(appointment);
        Ok(ev)
    }

    /// A blocked (`busy-unavailable`, SIU^S23) or opened (`free`, SIU^S24) Slot: the block as
    /// the canonical appointment of a slot event, its resources the actors of the Slot's
    /// Schedule (as `fhir::from_model::schedule_slot` writes them).
    fn slot_event(&mut self, s: &r::Slot, base: &str, i: usize) -> Result<Event, FhirError> {
        let (mut placer_id, mut filler_id, mut remote_id) = (None, None, None);
        for id in &s.identifier {
            let value = owned(val!(id.value));
            match val!(id.system) {
                Some(systems::APPOINTMENT_FILLER) => filler_id = value,
                Some(systems::APPOINTMENT_REMOTE) => remote_id = value,
                _ if placer_id.is_none() => placer_id = value,
                _ => {}
            }
        }
        if placer_id.is_none() && filler_id.is_none() && remote_id.is_none() {
            return Err(FhirError::unprocessable(
                format!("{base}.identifier"),
                "a slot identifier is required",
            ));
        }
        let slot_status = SlotStatus::from_fhir_code(val!(Some(&s.status)).unwrap_or(""))
            .unwrap_or(SlotStatus::BusyUnavailable);
        let (kind, status) = match val!(Some(&s.status)) {
            Some("free") => (EventKind::SlotOpened, AppointmentStatus::Cancelled),
            Some("busy-unavailable" | "busy" | "busy-tentative") => {
                (EventKind::SlotBlocked, AppointmentStatus::Blocked)
            }
            _ => {
                return Err(FhirError::unprocessable(
                    format!("{base}.status"),
                    "a slot status of busy-unavailable (blocked) or free (opened) is required",
                ))
            }
        };
        let schedule_key = val!(s.schedule.reference);
        let schedule = self.entries.iter().find_map(|e| match e.resource {
            Resource::Schedule(x)
                if schedule_key.is_some_and(|k| Self::keys(e).iter().any(|ek| ek == k)) =>
            {
                Some(x)
            }
            _ => None,
        });
        let (mut personnel, mut locations, mut resources) = (Vec::new(), Vec::new(), Vec::new());
        for actor in schedule.iter().flat_map(|x| x.actor.iter()) {
            let target = val!(actor.reference).unwrap_or("");
            let system = actor.identifier.as_deref().and_then(|i| val!(i.system));
            if system == Some(RESOURCE_SYSTEM) {
                resources.push(AppointmentResource {
                    resource: Coded {
                        code: actor
                            .identifier
                            .as_deref()
                            .and_then(|i| owned(val!(i.value))),
                        text: owned(val!(actor.display)),
                        system: None,
                    },
                    ..AppointmentResource::default()
                });
            } else if self.locations.contains_key(target) || target.starts_with("Location/") {
                locations.extend(
                    self.location_ref(actor)
                        .map(|location| AppointmentLocation {
                            location,
                            ..AppointmentLocation::default()
                        }),
                );
            } else {
                personnel.extend(self.practitioner_ref(actor).map(|practitioner| {
                    AppointmentPerson {
                        practitioner,
                        ..AppointmentPerson::default()
                    }
                }));
            }
        }
        let start = val!(Some(&s.start))
            .map(|v| timestamp(v, &format!("{base}.start")))
            .transpose()?;
        let end = val!(Some(&s.end))
            .map(|v| timestamp(v, &format!("{base}.end")))
            .transpose()?;
        let duration_minutes = start
            .as_ref()
            .zip(end.as_ref())
            .and_then(|(a, b)| a.minutes_until(b))
            .and_then(|m| u32::try_from(m).ok());
        let appointment = Appointment {
            placer_id,
            filler_id,
            remote_id,
            patient: None,
            practitioner: personnel.first().map(|p| p.practitioner.clone()),
            location: locations.first().map(|l| l.location.clone()),
            resources,
            service: s.service_type.first().and_then(coded),
            services: s
                .service_type
                .iter()
                .filter_map(coded)
                .map(|service| AppointmentService {
                    service,
                    ..AppointmentService::default()
                })
                .collect(),
            personnel,
            locations,
            appointment_type: s.appointment_type.as_deref().and_then(coded),
            start,
            end,
            duration_minutes,
            status,
            reason: None,
            event_reason: None,
            notes: owned(val!(s.comment)),
            roles: Vec::new(),
        };
        let mut ev = self.event(kind, i, "Slot");
        // The Schedule's own id: from the Schedule of the input, else the reference's
        // identifier (a Schedule the receiver already has).
        let own_id = |id: &t::Identifier| {
            (val!(id.system) != Some(SCHEDULE_SYSTEM))
                .then(|| owned(val!(id.value)))
                .flatten()
        };
        let schedule_id = schedule
            .and_then(|x| x.identifier.iter().find_map(own_id))
            .or_else(|| s.schedule.identifier.as_deref().and_then(own_id));
        ev.slots = vec![slot_of(&appointment, slot_status, schedule_id)];
        ev.appointment = Some(appointment);
        Ok(ev)
    }

    fn charge_event(
        &mut self,
        c: &r::ChargeItem,
        base: &str,
        i: usize,
    ) -> Result<Event, FhirError> {
        let (_, patient) = self.patient_ref(Some(&c.subject), &format!("{base}.subject"))?;
        let status = match val!(Some(&c.status)) {
            Some("aborted" | "entered-in-error") => ChargeStatus::Reversed,
            _ => ChargeStatus::Posted,
        };
        let ext = |url: &str| {
            c.extension
                .iter()
                .find(|x| x.url == url)
                .and_then(|x| x.value.as_ref())
        };
        let ext_text = |url: &str| match ext(url) {
            Some(t::ExtensionValue::String(s)) => owned(s.value.as_deref()),
            Some(t::ExtensionValue::Code(s)) => owned(s.value.as_deref()),
            _ => None,
        };
        let type_code = ext_text(EXT_TRANSACTION_TYPE).unwrap_or_else(|| "CG".to_owned());
        let transaction_type = match type_code.as_str() {
            "CG" => TransactionType::Charge,
            "CD" => TransactionType::Credit,
            "PY" => TransactionType::Payment,
            "AJ" => TransactionType::Adjustment,
            _ => TransactionType::Other,
        };
        let payment = match ext_text(systems::EXT_PAYMENT_RESULT).as_deref() {
            Some("success") => Some(PaymentResult::Success),
            Some("failure") => Some(PaymentResult::Failure),
            Some(_) => {
                return Err(FhirError::unprocessable(
                    format!("{base}.extension"),
                    "payment result must be success or failure",
                ))
            }
            None => None,
        }
        .map(|result| PaymentOutcome {
            result,
            reason: ext_text(systems::EXT_PAYMENT_REASON),
            reference: ext_text(systems::EXT_PAYMENT_REFERENCE),
        });
        let visit_number = c.context.as_deref().and_then(|r| {
            val!(r.reference)
                .and_then(|k| self.encounters.get(k))
                .and_then(|e| e.visit_number.clone())
                .or_else(|| r.identifier.as_deref().and_then(|i| owned(val!(i.value))))
        });
        let price = c.price_override.as_deref();
        let charge = Charge {
            transaction_id: c.identifier.first().and_then(|i| owned(val!(i.value))),
            batch_id: None,
            account: c
                .account
                .first()
                .and_then(|a| a.identifier.as_deref())
                .and_then(|i| owned(val!(i.value))),
            visit_number,
            transaction_date: match &c.occurrence {
                Some(r::ChargeItemOccurrence::DateTime(d)) => d
                    .value
                    .as_deref()
                    .map(|v| timestamp(v, &format!("{base}.occurrenceDateTime")))
                    .transpose()?,
                Some(r::ChargeItemOccurrence::Period(p)) => val!(p.start)
                    .map(|v| timestamp(v, &format!("{base}.occurrencePeriod.start")))
                    .transpose()?,
                _ => None,
            },
            posting_date: val!(c.entered_date)
                .map(|v| timestamp(v, &format!("{base}.enteredDate")))
                .transpose()?,
            transaction_type,
            transaction_type_code: type_code,
            code: coded(&c.code),
            quantity: c
                .quantity
                .as_deref()
                .and_then(|q| val!(q.value))
                .map(|v| decimal(v, &format!("{base}.quantity.value")))
                .transpose()?,
            amount: price
                .and_then(|m| val!(m.value))
                .map(|v| decimal(v, &format!("{base}.priceOverride.value")))
                .transpose()?,
            unit_amount: None,
            currency: price.and_then(|m| owned(val!(m.currency))),
            status,
            payment,
            department: None,
            location: None,
            performed_by: c
                .performer
                .first()
                .and_then(|p| self.practitioner_ref(&p.actor)),
            ordered_by: None,
            procedure: None,
            diagnoses: c.reason.iter().filter_map(coded).collect(),
        };
        let kind = match status {
            ChargeStatus::Posted => EventKind::ChargePosted,
            ChargeStatus::Reversed => EventKind::ChargeReversed,
        };
        let mut ev = self.event(kind, i, "ChargeItem");
        ev.patient = patient;
        ev.charges = vec![charge];
        Ok(ev)
    }

    fn order(&self, sr: &r::ServiceRequest, base: &str) -> Result<Order, FhirError> {
        let (placer_number, filler_number) = order_numbers(&sr.identifier);
        if placer_number.is_none() && filler_number.is_none() {
            return Err(FhirError::unprocessable(
                format!("{base}.identifier"),
                "an order needs a placer or filler number",
            ));
        }
        let status = match val!(Some(&sr.status)) {
            Some("on-hold") => OrderStatus::OnHold,
            Some("revoked") => OrderStatus::Cancelled,
            Some("completed") => OrderStatus::Completed,
            Some("entered-in-error") => OrderStatus::Error,
            _ => OrderStatus::Placed,
        };
        Ok(Order {
            placer_number,
            filler_number,
            group_number: sr.requisition.as_deref().and_then(|i| owned(val!(i.value))),
            control: None,
            procedure: sr.code.as_deref().and_then(coded),
            priority: match val!(sr.priority) {
                Some("stat") => Some(Priority::Stat),
                Some("asap") => Some(Priority::Asap),
                Some("urgent") => Some(Priority::TimingCritical),
                Some("routine") => Some(Priority::Routine),
                _ => None,
            },
            status,
            ordered_at: val!(sr.authored_on)
                .map(|v| timestamp(v, &format!("{base}.authoredOn")))
                .transpose()?,
            requested_start: match &sr.occurrence {
                Some(r::ServiceRequestOccurrence::DateTime(d)) => d
                    .value
                    .as_deref()
                    .map(|v| timestamp(v, &format!("{base}.occurrenceDateTime")))
                    .transpose()?,
                _ => None,
            },
            ordering_provider: sr
                .requester
                .as_deref()
                .and_then(|r| self.practitioner_ref(r)),
            reason: sr.reason_code.first().and_then(coded),
            notes: sr.note.first().and_then(|n| owned(n.text.value.as_deref())),
            specimens: sr
                .specimen
                .iter()
                .filter_map(|r| self.specimen_ref(r))
                .collect(),
            roles: sr
                .performer
                .iter()
                .enumerate()
                .filter_map(|(n, r)| {
                    let (role, participation) = r
                        .extension
                        .iter()
                        .find(|x| x.url == EXT_ROLE)
                        .and_then(|x| match &x.value {
                            Some(t::ExtensionValue::CodeableConcept(c)) => role_of(c),
                            _ => None,
                        })?;
                    let period = r
                        .extension
                        .iter()
                        .find(|x| x.url == EXT_ROLE_PERIOD)
                        .and_then(|x| match &x.value {
                            Some(t::ExtensionValue::Period(p)) => Some(&**p),
                            _ => None,
                        });
                    let (start, end) =
                        match period_of(period, &format!("{base}.performer[{n}].extension")) {
                            Ok(times) => times,
                            Err(e) => return Some(Err(e)),
                        };
                    Some(Ok(Role {
                        role,
                        practitioner: self.practitioner_ref(r)?,
                        action: None,
                        start,
                        end,
                        participation,
                    }))
                })
                .collect::<Result<_, _>>()?,
            imaging: None,
        })
    }

    fn order_event(
        &mut self,
        sr: &r::ServiceRequest,
        base: &str,
        i: usize,
    ) -> Result<Event, FhirError> {
        let (_, patient) = self.patient_ref(Some(&sr.subject), &format!("{base}.subject"))?;
        let order = self.order(sr, base)?;
        let kind = match order.status {
            OrderStatus::Cancelled | OrderStatus::Error => EventKind::OrderCancelled,
            _ => EventKind::OrderPlaced,
        };
        let mut ev = self.event(kind, i, "ServiceRequest");
        ev.patient = patient;
        ev.orders = vec![order];
        Ok(ev)
    }

    fn report_event(
        &mut self,
        d: &r::DiagnosticReport,
        base: &str,
        i: usize,
    ) -> Result<Event, FhirError> {
        let (_, patient) = self.patient_ref(d.subject.as_deref(), &format!("{base}.subject"))?;
        let (placer_number, filler_number) = order_numbers(&d.identifier);
        let mut observations = Vec::new();
        for reference in &d.result {
            let Some(&idx) = val!(reference.reference).and_then(|k| self.observations.get(k))
            else {
                continue;
            };
            if let Resource::Observation(o) = self.entries[idx].resource {
                let obase = self.entries[idx].base.clone();
                observations.push(observation(o, &obase)?);
                self.used_observations.insert(idx);
            }
        }
        let status = result_status(val!(Some(&d.status)));
        let specimens = d
            .specimen
            .iter()
            .filter_map(|r| self.specimen_ref(r))
            .collect();
        let report = ResultReport {
            order: Order {
                placer_number,
                filler_number,
                group_number: None,
                control: None,
                procedure: coded(&d.code),
                priority: None,
                status: OrderStatus::Completed,
                ordered_at: None,
                requested_start: None,
                ordering_provider: None,
                reason: None,
                notes: None,
                specimens,
                roles: Vec::new(),
                imaging: None,
            },
            status,
            observed_at: match &d.effective {
                Some(r::DiagnosticReportEffective::DateTime(x)) => x
                    .value
                    .as_deref()
                    .map(|v| timestamp(v, &format!("{base}.effectiveDateTime")))
                    .transpose()?,
                _ => None,
            },
            reported_at: val!(d.issued)
                .map(|v| timestamp(v, &format!("{base}.issued")))
                .transpose()?,
            section: d
                .category
                .first()
                .and_then(|c| c.coding.first())
                .and_then(|c| owned(val!(c.code))),
            observations,
        };
        let mut ev = self.event(EventKind::ResultReported, i, "DiagnosticReport");
        ev.patient = patient;
        ev.results = vec![report];
        Ok(ev)
    }

    /// An ImagingStudy as the `study_available` event: the way back of
    /// `from_model::imaging_study` (the AE titles do not travel).
    fn imaging_study_event(
        &mut self,
        x: &r::ImagingStudy,
        base: &str,
        i: usize,
    ) -> Result<Event, FhirError> {
        let has_subject = val!(x.subject.reference).is_some() || x.subject.identifier.is_some();
        let patient = if has_subject {
            self.patient_ref(Some(&x.subject), &format!("{base}.subject"))?
                .1
        } else {
            None
        };
        let uid = x
            .identifier
            .iter()
            .find(|id| val!(id.system) == Some(systems::DICOM_UID))
            .and_then(|id| owned(val!(id.value)))
            .map(|v| v.strip_prefix("urn:oid:").map(str::to_owned).unwrap_or(v))
            .ok_or_else(|| {
                FhirError::unprocessable(
                    format!("{base}.identifier"),
                    "an ImagingStudy needs its Study Instance UID (system urn:dicom:uid)",
                )
            })?;
        let accession = x
            .identifier
            .iter()
            .find(|id| {
                val!(id.system) == Some(systems::ORDER_FILLER)
                    || id
                        .r#type
                        .as_deref()
                        .is_some_and(|t| t.coding.iter().any(|c| val!(c.code) == Some("ACSN")))
            })
            .and_then(|id| owned(val!(id.value)));
        let series: Vec<crate::model::ImagingSeries> = x
            .series
            .iter()
            .map(|s| crate::model::ImagingSeries {
                uid: owned(val!(Some(&s.uid))).unwrap_or_default(),
                modality: owned(val!(s.modality.code)),
                number_of_instances: s
                    .number_of_instances
                    .as_ref()
                    .and_then(|n| n.value)
                    .unwrap_or_default(),
            })
            .collect();
        let study = crate::model::ImagingStudy {
            study_instance_uid: uid,
            accession_number: accession,
            description: owned(val!(x.description)),
            started: val!(x.started)
                .map(|v| timestamp(v, &format!("{base}.started")))
                .transpose()?,
            modalities: x
                .modality
                .iter()
                .filter_map(|c| owned(val!(c.code)))
                .collect(),
            number_of_series: x
                .number_of_series
                .as_ref()
                .and_then(|n| n.value)
                .unwrap_or(u32::try_from(series.len()).unwrap_or(u32::MAX)),
            number_of_instances: x
                .number_of_instances
                .as_ref()
                .and_then(|n| n.value)
                .unwrap_or(series.iter().map(|s| s.number_of_instances).sum()),
            series,
            sender_ae_title: None,
            receiver_ae_title: None,
        };
        let mut ev = self.event(EventKind::StudyAvailable, i, "ImagingStudy");
        ev.patient = patient;
        ev.imaging_study = Some(study);
        Ok(ev)
    }

    fn observation_event(
        &mut self,
        o: &r::Observation,
        base: &str,
        i: usize,
    ) -> Result<Event, FhirError> {
        let (_, patient) = self.patient_ref(o.subject.as_deref(), &format!("{base}.subject"))?;
        let value = observation(o, base)?;
        let (placer_number, filler_number) = o
            .based_on
            .first()
            .and_then(|r| r.identifier.as_deref())
            .map(|i| order_numbers(std::slice::from_ref(i)))
            .unwrap_or((None, None));
        let report = ResultReport {
            order: Order {
                placer_number,
                filler_number,
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
            status: value.status,
            observed_at: value.observed_at,
            reported_at: None,
            section: None,
            observations: vec![value],
        };
        let mut ev = self.event(EventKind::ResultReported, i, "Observation");
        ev.patient = patient;
        ev.results = vec![report];
        Ok(ev)
    }
}

fn is_appointment(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::AppointmentBooked
            | EventKind::AppointmentRescheduled
            | EventKind::AppointmentModified
            | EventKind::AppointmentCancelled
            | EventKind::AppointmentDiscontinued
            | EventKind::AppointmentDeleted
            | EventKind::AppointmentNoShow
            | EventKind::AppointmentResourceAdded
            | EventKind::AppointmentResourceModified
            | EventKind::AppointmentResourceCancelled
            | EventKind::AppointmentResourceDiscontinued
            | EventKind::AppointmentResourceDeleted
            | EventKind::SlotBlocked
            | EventKind::SlotOpened
    )
}

fn is_encounter(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::EncounterAdmitted
            | EventKind::EncounterPreadmitted
            | EventKind::EncounterDischarged
            | EventKind::EncounterCancelled
            | EventKind::EncounterDischargeCancelled
            | EventKind::EncounterTransferred
            | EventKind::EncounterTransferCancelled
            | EventKind::EncounterClassChanged
            | EventKind::EncounterAdmitPending
            | EventKind::EncounterTransferPending
            | EventKind::EncounterDischargePending
            | EventKind::EncounterPendingCancelled
            | EventKind::EncounterDeleted
            | EventKind::LeaveOfAbsenceStarted
            | EventKind::LeaveOfAbsenceEnded
            | EventKind::LeaveOfAbsenceCancelled
    )
}

fn is_order(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::OrderPlaced | EventKind::OrderCancelled | EventKind::OrderUpdated
    )
}

/// Folds the one-resource events of a Bundle into the events a v2 message would give: orders
/// and results of one kind and patient into one event, an appointment into the order event it
/// schedules, an encounter into the other events of its patient.
fn fold(events: Vec<Event>) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    for ev in events {
        let key = ev.partition_key();
        let groupable = is_order(ev.kind)
            || ev.kind == EventKind::ResultReported
            || !ev.medication_orders.is_empty();
        let target = out
            .iter_mut()
            .find(|e| groupable && e.kind == ev.kind && e.partition_key() == key);
        match target {
            Some(existing) => {
                existing.orders.extend(ev.orders);
                existing.results.extend(ev.results);
                existing.medication_orders.extend(ev.medication_orders);
            }
            None => out.push(ev),
        }
    }
    let mut i = 0;
    while i < out.len() {
        let key = out[i].partition_key();
        if is_appointment(out[i].kind) {
            let target = out.iter().position(|e| {
                is_order(e.kind) && e.appointment.is_none() && e.partition_key() == key
            });
            if let Some(t) = target {
                let ev = out.remove(i);
                let t = if t > i { t - 1 } else { t };
                out[t].appointment = ev.appointment;
                if out[t].patient.is_none() {
                    out[t].patient = ev.patient;
                }
                continue;
            }
        }
        i += 1;
    }
    let mut i = 0;
    while i < out.len() {
        if is_encounter(out[i].kind) {
            let key = out[i].partition_key();
            let encounter = out[i].encounter.clone();
            let mut attached = false;
            for (j, e) in out.iter_mut().enumerate() {
                if j != i
                    && !is_encounter(e.kind)
                    && e.encounter.is_none()
                    && e.partition_key() == key
                {
                    e.encounter = encounter.clone();
                    attached = true;
                }
            }
            if attached {
                out.remove(i);
                continue;
            }
        }
        i += 1;
    }
    out
}

fn order_numbers(ids: &[t::Identifier]) -> (Option<String>, Option<String>) {
    let (mut placer, mut filler) = (None, None);
    for id in ids {
        let value = owned(val!(id.value));
        let type_code = id
            .r#type
            .as_deref()
            .and_then(|c| c.coding.first())
            .and_then(|c| val!(c.code));
        match (val!(id.system), type_code) {
            (Some(systems::ORDER_FILLER), _) | (_, Some("FILL")) => filler = value,
            (Some(systems::ORDER_PLACER), _) | (_, Some("PLAC")) => placer = value,
            _ if placer.is_none() => placer = value,
            _ => {}
        }
    }
    (placer, filler)
}

fn result_status(code: Option<&str>) -> Option<ResultStatus> {
    match code? {
        "registered" => Some(ResultStatus::Registered),
        "preliminary" | "partial" => Some(ResultStatus::Preliminary),
        "final" => Some(ResultStatus::Final),
        "amended" | "corrected" | "appended" => Some(ResultStatus::Corrected),
        "cancelled" => Some(ResultStatus::Cancelled),
        "entered-in-error" => Some(ResultStatus::EnteredInError),
        _ => None,
    }
}

fn observation(o: &r::Observation, base: &str) -> Result<Observation, FhirError> {
    let code = coded(&o.code).ok_or_else(|| {
        FhirError::unprocessable(format!("{base}.code"), "an observation needs a code")
    })?;
    let (mut value_type, mut value, mut numeric_value, mut coded_value, mut units) =
        (None, None, None, None, None);
    match &o.value {
        Some(r::ObservationValue::Quantity(q)) => {
            value_type = Some("NM".to_owned());
            if let Some(v) = val!(q.value) {
                numeric_value = Some(decimal(v, &format!("{base}.valueQuantity.value"))?);
                value = Some(v.to_owned());
            }
            let u = Coded {
                code: owned(val!(q.code)),
                text: owned(val!(q.unit)),
                system: val!(q.system).map(|s| super::code_systems::to_name(s).into_owned()),
            };
            units = (u.code.is_some() || u.text.is_some()).then_some(u);
        }
        Some(r::ObservationValue::CodeableConcept(c)) => {
            value_type = Some("CWE".to_owned());
            coded_value = coded(c);
        }
        Some(r::ObservationValue::String(s)) => {
            value_type = Some("ST".to_owned());
            value = owned(s.value.as_deref());
        }
        Some(r::ObservationValue::Integer(n)) => {
            value_type = Some("NM".to_owned());
            if let Some(n) = n.value {
                value = Some(n.to_string());
                numeric_value = Decimal::parse(&n.to_string()).ok();
            }
        }
        Some(r::ObservationValue::Boolean(b)) => {
            value_type = Some("ST".to_owned());
            value = b.value.map(|b| b.to_string());
        }
        Some(r::ObservationValue::DateTime(d)) => {
            value_type = Some("DTM".to_owned());
            value = owned(d.value.as_deref());
        }
        _ => {}
    }
    let reference_range = o.reference_range.first().and_then(|rr| {
        owned(val!(rr.text)).or_else(|| {
            let low = rr.low.as_deref().and_then(|q| val!(q.value));
            let high = rr.high.as_deref().and_then(|q| val!(q.value));
            match (low, high) {
                (None, None) => None,
                (l, h) => Some(format!("{}-{}", l.unwrap_or(""), h.unwrap_or(""))),
            }
        })
    });
    let attachment = o
        .extension
        .iter()
        .filter(|x| x.url == super::from_model::EXT_VALUE_ATTACHMENT)
        .find_map(|x| match &x.value {
            Some(t::ExtensionValue::Attachment(a)) => Some(Attachment {
                content_type: owned(val!(a.content_type)),
                data: owned(val!(a.data)),
                url: owned(val!(a.url)),
            }),
            _ => None,
        });
    if attachment.is_some() && value_type.is_none() {
        value_type = Some(if attachment.as_ref().is_some_and(|a| a.data.is_some()) {
            "ED".to_owned()
        } else {
            "RP".to_owned()
        });
    }
    Ok(Observation {
        code,
        sub_id: None,
        value_type,
        value,
        numeric_value,
        coded_value,
        attachment,
        units,
        reference_range,
        abnormal_flags: o
            .interpretation
            .iter()
            .filter_map(|c| c.coding.first().and_then(|c| owned(val!(c.code))))
            .collect(),
        status: result_status(val!(Some(&o.status))),
        observed_at: match &o.effective {
            Some(r::ObservationEffective::DateTime(d)) => d
                .value
                .as_deref()
                .map(|v| timestamp(v, &format!("{base}.effectiveDateTime")))
                .transpose()?,
            Some(r::ObservationEffective::Instant(d)) => d
                .value
                .as_deref()
                .map(|v| timestamp(v, &format!("{base}.effectiveInstant")))
                .transpose()?,
            _ => None,
        },
        notes: o.note.first().and_then(|n| owned(n.text.value.as_deref())),
    })
}

/// Parses a FHIR date/dateTime/instant into a canonical timestamp.
/// An allergy from an AllergyIntolerance: the way back of `from_model`'s mapping. Category
/// and criticality come back as HL7 table 0127/0128 codes (`medication` as `DA`, `food` as
/// `FA`, `environment` as `EA`; `high` as `SV`, `low` as `MO`, `unable-to-assess` as `U`),
/// so `MI` (mild) reads back as `MO`: FHIR has no finer criticality.
///
/// # Errors
/// [`FhirError`] without a code, or with an onset that does not parse.
fn allergy(a: &r::AllergyIntolerance, base: &str) -> Result<Allergy, FhirError> {
    let allergen = a.code.as_deref().and_then(coded).ok_or_else(|| {
        FhirError::unprocessable(format!("{base}.code"), "an allergy needs a code")
    })?;
    let v2 = |code: &str, table: &str| Coded {
        code: Some(code.to_owned()),
        text: None,
        system: Some(table.to_owned()),
    };
    let category = a.category.first().and_then(|c| match c.value.as_deref() {
        Some("medication") => Some(v2("DA", "HL70127")),
        Some("food") => Some(v2("FA", "HL70127")),
        Some("environment") => Some(v2("EA", "HL70127")),
        _ => None,
    });
    let severity = match a.criticality.as_ref().and_then(|c| c.value.as_deref()) {
        Some("high") => Some(v2("SV", "HL70128")),
        Some("low") => Some(v2("MO", "HL70128")),
        Some("unable-to-assess") => Some(v2("U", "HL70128")),
        _ => None,
    };
    let identified = match &a.onset {
        Some(r::AllergyIntoleranceOnset::DateTime(d)) => d
            .value
            .as_deref()
            .map(|v| timestamp(v, &format!("{base}.onsetDateTime")))
            .transpose()?,
        _ => None,
    };
    let deleted = a
        .verification_status
        .as_deref()
        .and_then(|v| v.coding.first())
        .is_some_and(|c| val!(c.code) == Some("entered-in-error"));
    Ok(Allergy {
        allergen,
        category,
        severity,
        reactions: a
            .reaction
            .iter()
            .flat_map(|r| &r.manifestation)
            .filter_map(|m| owned(val!(m.text)))
            .collect(),
        identified,
        action: deleted.then(|| "D".to_owned()),
    })
}

fn address_of(a: &t::Address) -> Address {
    Address {
        lines: a
            .line
            .iter()
            .filter_map(|l| owned(l.value.as_deref()))
            .collect(),
        city: owned(val!(a.city)),
        state: owned(val!(a.state)),
        postal_code: owned(val!(a.postal_code)),
        country: owned(val!(a.country)),
        district: owned(val!(a.district)),
        use_: match val!(a.r#use) {
            Some("home") => Some(ContactUse::Home),
            Some("work") => Some(ContactUse::Work),
            _ => None,
        },
    }
}

/// A contact from `Patient.contact`: the way back of `from_model`'s NK1 mapping; a
/// relationship coded in HL7 table 0131 is the contact role, any other the relationship.
fn contact_of(c: &r::PatientContact) -> Contact {
    let mut relationship = None;
    let mut role = None;
    for r in &c.relationship {
        let Some(coded) = coded(r) else { continue };
        if coded.system.as_deref() == Some("HL70131") {
            role.get_or_insert(coded);
        } else {
            relationship.get_or_insert(coded);
        }
    }
    Contact {
        name: c.name.as_deref().map(human_name).unwrap_or_default(),
        relationship,
        role,
        phones: c
            .telecom
            .iter()
            .filter(|cp| matches!(val!(cp.system), Some("phone" | "sms") | None))
            .filter_map(|cp| {
                Some(Phone {
                    number: owned(val!(cp.value))?,
                    use_: match val!(cp.r#use) {
                        Some("home") => Some(ContactUse::Home),
                        Some("work") => Some(ContactUse::Work),
                        Some("mobile") => Some(ContactUse::Mobile),
                        Some("temp") => Some(ContactUse::Emergency),
                        _ => None,
                    },
                })
            })
            .collect(),
        address: c
            .address
            .as_deref()
            .map(address_of)
            .filter(|a| !a.is_empty()),
    }
}

/// A ROL-3 role (table 0443) from a CodeableConcept with a coding in that table.
fn role_of(c: &t::CodeableConcept) -> Option<(Coded, bool)> {
    let (coding, participation) = c.coding.iter().find_map(|x| match val!(x.system) {
        Some(ROLE_SYSTEM) => Some((x, false)),
        Some(PARTICIPATION_SYSTEM) => Some((x, true)),
        _ => None,
    })?;
    Some((
        Coded {
            code: owned(val!(coding.code)),
            text: owned(val!(coding.display)),
            system: Some(if participation { "HL70912" } else { "HL70443" }.to_owned()),
        },
        participation,
    ))
}

/// The start and end of a FHIR period, with element paths for errors.
fn period_of(
    p: Option<&t::Period>,
    path: &str,
) -> Result<(Option<Timestamp>, Option<Timestamp>), FhirError> {
    let Some(p) = p else {
        return Ok((None, None));
    };
    Ok((
        val!(p.start)
            .map(|v| timestamp(v, &format!("{path}.start")))
            .transpose()?,
        val!(p.end)
            .map(|v| timestamp(v, &format!("{path}.end")))
            .transpose()?,
    ))
}

/// A booked service's or resource's start and duration from its period (the way back of
/// `from_model::booked_period`).
fn booked_of(
    p: Option<&t::Period>,
    path: &str,
) -> Result<(Option<Timestamp>, Option<u32>), FhirError> {
    let (start, end) = period_of(p, path)?;
    let minutes = start
        .as_ref()
        .zip(end.as_ref())
        .and_then(|(a, b)| a.minutes_until(b))
        .and_then(|m| u32::try_from(m).ok());
    Ok((start, minutes))
}

/// The first extension with this URL holding a CodeableConcept, as a code.
fn ext_coded(extension: &[t::Extension], url: &str) -> Option<Coded> {
    extension
        .iter()
        .find(|x| x.url == url)
        .and_then(|x| match &x.value {
            Some(t::ExtensionValue::CodeableConcept(c)) => coded(c),
            _ => None,
        })
}

/// A FHIR Duration in days (`d`) as a decimal number of days.
fn days_of(d: &t::Duration, path: &str) -> Result<Option<Decimal>, FhirError> {
    val!(d.value)
        .map(|v| decimal(v, &format!("{path}.value")))
        .transpose()
}

/// The text of an XHTML narrative `div` (tags dropped, the five XML entities decoded): the way
/// back of `from_model::narrative`.
fn narrative_text(div: &str) -> Option<String> {
    let mut out = String::with_capacity(div.len());
    let mut in_tag = false;
    for c in div.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let out = out
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&");
    owned(Some(out.as_str()))
}

/// A specimen from a FHIR Specimen: the way back of `from_model::specimen`.
fn specimen_of(x: &r::Specimen, base: &str) -> Result<Specimen, FhirError> {
    let id_of = |system: &str| {
        x.identifier
            .iter()
            .find(|i| val!(i.system) == Some(system))
            .and_then(|i| owned(val!(i.value)))
    };
    let mut placer_id = id_of(super::from_model::SPECIMEN_PLACER);
    let filler_id = id_of(super::from_model::SPECIMEN_FILLER);
    if placer_id.is_none() && filler_id.is_none() {
        placer_id = x.identifier.first().and_then(|i| owned(val!(i.value)));
    }
    let collection = x.collection.as_ref();
    let (collected_at, collection_end) = match collection.and_then(|c| c.collected.as_ref()) {
        Some(r::SpecimenCollectionCollected::DateTime(d)) => (
            d.value
                .as_deref()
                .map(|v| timestamp(v, &format!("{base}.collection.collectedDateTime")))
                .transpose()?,
            None,
        ),
        Some(r::SpecimenCollectionCollected::Period(p)) => (
            val!(p.start)
                .map(|v| timestamp(v, &format!("{base}.collection.collectedPeriod.start")))
                .transpose()?,
            val!(p.end)
                .map(|v| timestamp(v, &format!("{base}.collection.collectedPeriod.end")))
                .transpose()?,
        ),
        _ => (None, None),
    };
    Ok(Specimen {
        placer_id,
        filler_id,
        specimen_type: x.r#type.as_deref().and_then(coded),
        source_site: collection
            .and_then(|c| c.body_site.as_deref())
            .and_then(coded),
        collected_at,
        collection_end,
        received_at: val!(x.received_time)
            .map(|v| timestamp(v, &format!("{base}.receivedTime")))
            .transpose()?,
    })
}

/// The phone numbers of `ContactPoint`s (system `phone`, `sms` or none).
fn phones_of(points: &[t::ContactPoint]) -> Vec<Phone> {
    points
        .iter()
        .filter(|cp| matches!(val!(cp.system), Some("phone" | "sms") | None))
        .filter_map(|cp| {
            Some(Phone {
                number: owned(val!(cp.value))?,
                use_: match val!(cp.r#use) {
                    Some("home") => Some(ContactUse::Home),
                    Some("work") => Some(ContactUse::Work),
                    Some("mobile") => Some(ContactUse::Mobile),
                    Some("temp") => Some(ContactUse::Emergency),
                    _ => None,
                },
            })
        })
        .collect()
}

/// FHIR administrative gender.
fn gender_of(code: Option<&str>, path: &str) -> Result<Option<Gender>, FhirError> {
    Ok(match code {
        None => None,
        Some("male") => Some(Gender::Male),
        Some("female") => Some(Gender::Female),
        Some("other") => Some(Gender::Other),
        Some("unknown") => Some(Gender::Unknown),
        Some(_) => {
            return Err(FhirError::unprocessable(
                path,
                "unknown gender (male, female, other, unknown)",
            ))
        }
    })
}

pub(crate) fn timestamp(text: &str, path: &str) -> Result<Timestamp, FhirError> {
    Timestamp::parse_iso(text)
        .map_err(|e| FhirError::unprocessable(path, format!("not a valid FHIR date/time: {e}")))
}

pub(crate) fn decimal(text: &str, path: &str) -> Result<Decimal, FhirError> {
    Decimal::parse(text).map_err(|_| FhirError::unprocessable(path, "not a valid decimal"))
}

pub(crate) fn coded(c: &t::CodeableConcept) -> Option<Coded> {
    let coding = c.coding.first();
    let out = Coded {
        code: coding.and_then(|c| owned(val!(c.code))),
        text: owned(val!(c.text)).or_else(|| coding.and_then(|c| owned(val!(c.display)))),
        system: coding
            .and_then(|c| val!(c.system))
            .map(|s| super::code_systems::to_name(s).into_owned()),
    };
    (out.code.is_some() || out.text.is_some()).then_some(out)
}

/// A code from one Coding (the way back of `from_model::coding`).
fn coded_of(c: &t::Coding) -> Option<Coded> {
    let out = Coded {
        code: owned(val!(c.code)),
        text: owned(val!(c.display)),
        system: val!(c.system).map(|s| super::code_systems::to_name(s).into_owned()),
    };
    (out.code.is_some() || out.text.is_some()).then_some(out)
}

fn identifier(i: &t::Identifier) -> Identifier {
    let type_code = i
        .r#type
        .as_deref()
        .and_then(|c| c.coding.first())
        .and_then(|c| owned(val!(c.code)));
    let kind = match val!(i.system) {
        Some(systems::MRN) => IdentifierKind::Mrn,
        Some(systems::PATIENT_NUMBER) => IdentifierKind::PatientNumber,
        Some(systems::NATIONAL_ID) => IdentifierKind::NationalId,
        Some(systems::PASSPORT) => IdentifierKind::Passport,
        Some(systems::ACCOUNT) => IdentifierKind::AccountNumber,
        Some(systems::OTHER) => IdentifierKind::Other,
        _ => match type_code.as_deref() {
            Some("MR") => IdentifierKind::Mrn,
            Some("PI" | "PN") => IdentifierKind::PatientNumber,
            Some(c) if c == "NI" || c == "SS" || c.starts_with("NN") => IdentifierKind::NationalId,
            Some("PPN") => IdentifierKind::Passport,
            Some("AN") => IdentifierKind::AccountNumber,
            _ => IdentifierKind::Other,
        },
    };
    Identifier {
        value: val!(i.value).unwrap_or_default().to_owned(),
        kind,
        type_code,
        assigning_authority: i
            .assigner
            .as_deref()
            .and_then(|a| owned(val!(a.display)))
            .or_else(|| match kind {
                IdentifierKind::Other => {
                    owned(val!(i.system)).filter(|s| !s.starts_with("urn:switchboard:"))
                }
                _ => None,
            }),
    }
}

fn human_name(n: &t::HumanName) -> HumanName {
    let mut given = n.given.iter().filter_map(|g| owned(g.value.as_deref()));
    let first = given.next();
    let rest: Vec<String> = given.collect();
    let language = n
        .extension
        .iter()
        .find(|x| x.url == systems::EXT_NAME_LANGUAGE)
        .and_then(|x| match &x.value {
            Some(t::ExtensionValue::Code(c)) => owned(c.value.as_deref()),
            _ => None,
        });
    HumanName {
        family: owned(val!(n.family)),
        given: first,
        middle: (!rest.is_empty()).then(|| rest.join(" ")),
        prefix: n.prefix.first().and_then(|p| owned(p.value.as_deref())),
        suffix: n.suffix.first().and_then(|p| owned(p.value.as_deref())),
        language,
    }
}

fn patient(p: &r::Patient, base: &str) -> Result<Patient, FhirError> {
    let identifiers: Vec<Identifier> = p
        .identifier
        .iter()
        .filter(|i| val!(i.value).is_some_and(|v| !v.is_empty()))
        .map(identifier)
        .collect();
    if identifiers.is_empty() {
        return Err(FhirError::unprocessable(
            format!("{base}.identifier"),
            "a patient needs at least one identifier with a value",
        ));
    }
    let is_second = |n: &&t::HumanName| {
        n.extension
            .iter()
            .any(|x| x.url == systems::EXT_SECOND_LANGUAGE_NAME)
    };
    let name = p
        .name
        .iter()
        .find(|n| !is_second(n))
        .map(human_name)
        .unwrap_or_default();
    let second_language_name = p.name.iter().find(is_second).map(human_name);
    // Every further name (not the first plain one, not the second-language one), with the
    // XPN-7 type its use stands for (`usual` reads back as `D`).
    let other_names = p
        .name
        .iter()
        .filter(|n| !is_second(n))
        .skip(1)
        .map(|n| OtherName {
            name: human_name(n),
            name_type: match val!(n.r#use) {
                Some("official") => Some("L"),
                Some("nickname") => Some("N"),
                Some("maiden") => Some("M"),
                Some("anonymous") => Some("S"),
                Some("temp") => Some("TEMP"),
                Some("old") => Some("BAD"),
                Some("usual") => Some("D"),
                _ => None,
            }
            .map(str::to_owned),
        })
        .filter(|n| !n.name.is_empty())
        .collect();
    let birth_time = p.birth_date.as_ref().and_then(|d| {
        d.extension
            .iter()
            .find(|x| x.url == EXT_BIRTH_TIME)
            .and_then(|x| match &x.value {
                Some(t::ExtensionValue::DateTime(dt)) => dt.value.as_deref(),
                _ => None,
            })
    });
    if let Some(v) = birth_time {
        // The time of birth, when given, is the more precise birth date.
        let ts = timestamp(v, &format!("{base}.birthDate.extension"))?;
        if val!(p.birth_date).is_some_and(|d| d != ts.date_iso()) {
            return Err(FhirError::unprocessable(
                format!("{base}.birthDate"),
                "birthTime extension is on another day than birthDate",
            ));
        }
    }
    let birth_date = birth_time
        .or(val!(p.birth_date))
        .map(|v| {
            if birth_time.is_some() {
                return timestamp(v, &format!("{base}.birthDate.extension"));
            }
            let ts = timestamp(v, &format!("{base}.birthDate"))?;
            if ts.precision() > Precision::Day {
                return Err(FhirError::unprocessable(
                    format!("{base}.birthDate"),
                    "a date (YYYY, YYYY-MM or YYYY-MM-DD) is required",
                ));
            }
            Ok(ts)
        })
        .transpose()?;
    let gender = match val!(p.gender) {
        None => None,
        Some("male") => Some(Gender::Male),
        Some("female") => Some(Gender::Female),
        Some("other") => Some(Gender::Other),
        Some("unknown") => Some(Gender::Unknown),
        Some(_) => {
            return Err(FhirError::unprocessable(
                format!("{base}.gender"),
                "unknown gender (male, female, other, unknown)",
            ))
        }
    };
    let mut phones = Vec::new();
    let mut email = None;
    let mut other_emails: Vec<String> = Vec::new();
    for cp in &p.telecom {
        let Some(value) = owned(val!(cp.value)) else {
            continue;
        };
        match val!(cp.system) {
            Some("email") => match &email {
                None => email = Some(value),
                Some(first) if *first == value || other_emails.contains(&value) => {}
                Some(_) => other_emails.push(value),
            },
            Some("phone" | "sms") | None => phones.push(Phone {
                number: value,
                use_: match val!(cp.r#use) {
                    Some("home") => Some(ContactUse::Home),
                    Some("work") => Some(ContactUse::Work),
                    Some("mobile") => Some(ContactUse::Mobile),
                    Some("temp") => Some(ContactUse::Emergency),
                    _ => None,
                },
            }),
            Some(_) => {}
        }
    }
    let mut addresses = p.address.iter().map(address_of);
    let address = addresses.next();
    let other_addresses = addresses.filter(|a| !a.is_empty()).collect();
    let ext = |url: &str| {
        p.extension
            .iter()
            .find(|x| x.url == url)
            .and_then(|x| x.value.as_ref())
    };
    Ok(Patient {
        identifiers,
        name,
        second_language_name,
        other_names,
        birth_date,
        gender,
        phones,
        email,
        other_emails,
        address: address.filter(|a| !a.is_empty()),
        other_addresses,
        contacts: p.contact.iter().map(contact_of).collect(),
        diagnoses: Vec::new(),
        nationality: match ext(systems::EXT_NATIONALITY) {
            Some(t::ExtensionValue::CodeableConcept(c)) => coded(c),
            _ => None,
        },
        language: p.communication.first().and_then(|c| coded(&c.language)),
        marital_status: p.marital_status.as_deref().and_then(coded),
        blood_type: match ext(systems::EXT_BLOOD_TYPE) {
            Some(t::ExtensionValue::String(s)) => owned(s.value.as_deref()),
            _ => None,
        },
        allergies: Vec::new(),
        // Resolved once every Practitioner of the Bundle is read (see `run`).
        primary_care_provider: None,
        procedures: Vec::new(),
        coverages: Vec::new(),
        account_number: None,
        guarantors: Vec::new(),
        // Resolved with the primary care provider (see `run`).
        primary_facility: None,
        disability: match ext(EXT_DISABILITY) {
            Some(t::ExtensionValue::CodeableConcept(c)) => coded(c),
            _ => None,
        },
        publicity_code: match ext(EXT_PUBLICITY) {
            Some(t::ExtensionValue::CodeableConcept(c)) => coded(c),
            _ => None,
        },
        protected: match ext(EXT_PROTECTED) {
            Some(t::ExtensionValue::Boolean(b)) => b.value,
            _ => None,
        },
        place_of_worship: match ext(EXT_CONGREGATION) {
            Some(t::ExtensionValue::String(s)) => owned(s.value.as_deref()),
            _ => None,
        },
        observations: Vec::new(),
        vip: matches!(ext(systems::EXT_VIP), Some(t::ExtensionValue::Boolean(b)) if b.value == Some(true)),
        death_time: match &p.deceased {
            Some(r::PatientDeceased::DateTime(d)) => d
                .value
                .as_deref()
                .map(|v| timestamp(v, &format!("{base}.deceasedDateTime")))
                .transpose()?,
            _ => None,
        },
    })
}

fn practitioner(p: &r::Practitioner, base: &str) -> Result<Practitioner, FhirError> {
    let mut out = Practitioner {
        name: p.name.first().map(human_name).unwrap_or_default(),
        specialisation: p.qualification.first().and_then(|q| coded(&q.code)),
        ..Practitioner::default()
    };
    for i in &p.identifier {
        let value = owned(val!(i.value));
        match val!(i.system) {
            Some(systems::LICENCE) => out.licence_number = value,
            Some(systems::REGISTRATION) => out.registration_number = value,
            Some(systems::NATIONAL_ID) => out.national_id = value,
            Some(systems::PRACTITIONER) => out.code = value,
            _ if out.code.is_none() => out.code = value,
            _ => {}
        }
    }
    if out.code.is_none() && out.licence_number.is_none() && out.registration_number.is_none() {
        return Err(FhirError::unprocessable(
            format!("{base}.identifier"),
            "a practitioner needs an identifier",
        ));
    }
    Ok(out)
}

fn location(l: &r::Location, _base: &str) -> Location {
    let part = |url: &str| {
        l.extension
            .iter()
            .find(|x| x.url == url)
            .and_then(|x| match &x.value {
                Some(t::ExtensionValue::String(s)) => owned(s.value.as_deref()),
                _ => None,
            })
    };
    Location {
        code: l
            .identifier
            .iter()
            .find(|i| val!(i.system) == Some(systems::LOCATION))
            .or_else(|| l.identifier.first())
            .and_then(|i| owned(val!(i.value))),
        name: owned(val!(l.name)),
        room: part(LOCATION_PARTS[0]),
        bed: part(LOCATION_PARTS[1]),
        branch: part(LOCATION_PARTS[2]),
        building: part(LOCATION_PARTS[3]),
        floor: part(LOCATION_PARTS[4]),
        specialisation: l.r#type.first().and_then(coded),
        bed_status: l.operational_status.as_deref().and_then(coded_of),
        ..Location::default()
    }
}

/// Adds what a PractitionerRole says (clinics, specialty, telecom) to its practitioner.
fn with_role(p: &mut Practitioner, role: &Practitioner) {
    if !role.clinic_codes.is_empty() {
        p.clinic_codes.clone_from(&role.clinic_codes);
    }
    if role.specialisation.is_some() {
        p.specialisation.clone_from(&role.specialisation);
    }
    if p.phone.is_none() {
        p.phone.clone_from(&role.phone);
    }
    if p.email.is_none() {
        p.email.clone_from(&role.email);
    }
}

/// The canonical slot of a FHIR Slot read as a block (see `slot_event`): the block's time in
/// the schedule of its resources.
fn slot_of(a: &Appointment, status: SlotStatus, schedule_id: Option<String>) -> Slot {
    Slot {
        id: a
            .filler_id
            .clone()
            .or_else(|| a.placer_id.clone())
            .or_else(|| a.remote_id.clone()),
        schedule: Schedule {
            id: schedule_id,
            practitioners: a.personnel.iter().map(|p| p.practitioner.clone()).collect(),
            locations: a.locations.iter().map(|l| l.location.clone()).collect(),
            resources: a.resources.iter().map(|r| r.resource.clone()).collect(),
            ..Schedule::default()
        },
        status,
        start: a.start,
        end: a.end,
        services: a.services.iter().map(|s| s.service.clone()).collect(),
        appointment_type: a.appointment_type.clone(),
        reason: None,
        comment: a.notes.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (fuzz target `fhir_json`): an unknown element beside a wrongly typed one
    /// made the element search hang inside fhirbolt's lax mode; it is an error naming an
    /// element now.
    #[test]
    fn unknown_and_wrongly_typed_elements_are_an_error_not_a_hang() {
        let body = r#"{"resourceType": "Patient", "idenTifier": [{"system": "urn:n", "value": "P-1"}], "gender": 0}"#;
        match fhir_to_events(body) {
            Err(FhirError::Invalid { path, .. }) => {
                assert!(
                    path == "Patient.idenTifier" || path == "Patient.gender",
                    "{path}"
                )
            }
            other => panic!("expected an Invalid error, got {other:?}"),
        }
        let body = r#"{"resourceType": "Patient", "idenTifier": [{"value": "P-1"}]}"#;
        assert!(matches!(
            fhir_to_events(body),
            Err(FhirError::Invalid { path, .. }) if path == "Patient.idenTifier"
        ));
    }
}
