//! HL7 v2 master files (MFN) to canonical master-data events, one per record.
//!
//! A master file notification carries one MFI (which file) and any number of records, each
//! an MFE (what happened to it) followed by the record's segments. Each record stands alone:
//! HL7 asks the receiver to answer every record with an MFA (accepted, or rejected with the
//! reason), so [`map_master_file`] maps each record on its own and returns a [`MasterFile`]
//! with one event per accepted record and one [`RecordOutcome`] per record, in message order.
//! A bad record never stops the others.
//!
//! | message | MFI-1 | record segments | event kinds |
//! |---|---|---|---|
//! | MFN^M02 | `STF`, `PRA` | STF, PRA, ORG | `practitioner_created/updated/deactivated/deleted` |
//! | MFN^M04 | `CDM` | CDM, PRC | `service_created/updated/deactivated/deleted` |
//! | MFN^M05 | `LOC` | LOC, LCH, LRL, LDP, LCC | `location_created/updated/deactivated/deleted` |
//! | MFN^M08, M09, M10 | `OMA`, `OMB`, `OMC` | OM1, OM2, OM3, OM4, OM5 | `service_created/updated/deactivated/deleted` for orderable tests |
//!
//! MFE-1 (HL7 table 0180) decides the kind: `MAD` created, `MUP` and `MAC` (reactivate)
//! updated, `MDC` deactivated, `MDL` deleted. `MAC` sets the entity active, `MDC` inactive.
//!
//! Practitioner (MFN^M02):
//! - code: STF-1.1 (primary key), else MFE-4.1;
//! - name: the first STF-3 repetition not written in Arabic script; `alternate_name` the
//!   first that is;
//! - STF-2 staff identifiers by CX-5: `LN`/`MD`/`LI`/`SL` licence, `PRN`/`RN`/`NPI`/`MCN`/
//!   `UPIN`/`DEA` registration, `NI`/`NN…` national id, `AN` account number; PRA-6
//!   (practitioner id numbers, PLN-2 type) fills licence (`MDL`, `SL`, `LN`) or
//!   registration (any other type) when STF-2 did not;
//! - gender STF-5, birth date STF-6, active STF-7 (`A`/`I`), phone and e-mail from STF-10
//!   (else e-mail STF-15), description STF-18 job title;
//! - specialisation: PRA-5.1 (specialty name), else ORG-8 area specialisation, else STF-9
//!   hospital service; branch PRA-9 institution (text, else code);
//! - clinic codes: ORG-2.1 of every ORG, else STF-8.1 of every department repetition;
//!   cost centre ORG-13.1 of the first ORG that has one.
//!
//! Location (MFN^M05):
//! - LOC-1 (PL): code PL-1, room PL-2, bed PL-3, branch PL-4, building PL-7, floor PL-8;
//!   name LOC-2, else PL-9;
//! - location type: LDP-5 valid patient class of the first LDP (`O` Outpatient, `I`
//!   Inpatient, `E` Emergency, `P` Preadmit, `R` Recurring patient, `B` Obstetrics), else
//!   LOC-3 (HL7 table 0260 as words: `C` Clinic, `D` Department, `N` Nursing unit...);
//! - specialisation LDP-4 (specialty type), else LDP-2 (department); cost centre LDP-12,
//!   else the LCH characteristic `COSTCTR`; account number the LCH characteristic
//!   `ACCTNO` (LCH-4 code, LCH-5 value; the characteristic codes are local, HL7 table 0324
//!   is user-defined);
//! - address LOC-5; phone the first telephone of LOC-6, else LDP-11; e-mail the LOC-6
//!   repetition of type Internet; active LDP-6 (`A`/`I`).
//!
//! Service (MFN^M04): code CDM-1.1, else MFE-4.1; name CDM-3 (short description), else
//! CDM-1.2; description CDM-4; active CDM-8 (`A`/`I`); price PRC-5.1.1 and currency
//! PRC-5.1.2, department PRC-3 of the first PRC.
//!
//! Test/observation master files (MFN^M08 numeric, M09 categorical, M10 batteries): a
//! record describes a test; one that can be ordered is a service, one whose OM1-12
//! (orderable) is `N` is only a result component and is accepted without an event (nothing
//! to send; an empty OM1-12 counts as orderable). Code OM1-2.1, else MFE-4.1; name OM1-2.2,
//! else OM1-9 (preferred report name), else OM1-10 (short name); description OM1-11 (long
//! name), else OM1-6 (observation description); department OM1-16 (producing department);
//! nature OM1-18 (HL7 table 0174 as words); specimen required OM1-4 (`Y`/`N`); specimen
//! OM4-6 of the first OM4; a battery's components every OM5-2 repetition. OM2 (units, ranges)
//! and OM3 (answer codes) describe results, not the service, and are not read.
//!
//! A record is rejected (and named in the MFK) when MFE-1 is not in table 0180, when it has
//! no primary key (neither the record segment's key nor MFE-4), when its record segment is
//! missing, or when a date or price in it does not parse.

use serde::{Deserialize, Serialize};

use super::datatypes::{self, Telecom, UpperCode};
use super::{source_from_msh, ts, MappingError};
use crate::hl7v2::access::{SegmentRef, V2Message};
use crate::model::{stable_id, Coded, Event, EventKind, Location, Practitioner, Service, Source};

/// Which master file a message is: the family of its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MasterFileKind {
    /// Staff and practitioners (MFN^M02).
    Practitioner,
    /// Charge description master: services (MFN^M04).
    Service,
    /// Locations (MFN^M05).
    Location,
    /// Test/observation master files (MFN^M08 numeric, M09 categorical, M10 batteries):
    /// the orderable tests among them are services.
    Observation,
}

impl MasterFileKind {
    /// The kind of master file an MFN trigger carries; `None` for triggers not mapped.
    pub fn for_trigger(trigger: &str) -> Option<MasterFileKind> {
        match trigger {
            "M02" => Some(MasterFileKind::Practitioner),
            "M04" => Some(MasterFileKind::Service),
            "M05" => Some(MasterFileKind::Location),
            "M08" | "M09" | "M10" => Some(MasterFileKind::Observation),
            _ => None,
        }
    }

    /// The segment that holds a record's data (after its MFE).
    pub fn record_segment(self) -> &'static str {
        match self {
            MasterFileKind::Practitioner => "STF",
            MasterFileKind::Service => "CDM",
            MasterFileKind::Location => "LOC",
            MasterFileKind::Observation => "OM1",
        }
    }

    fn kind(self, change: Change) -> EventKind {
        use EventKind as K;
        match (self, change) {
            (MasterFileKind::Practitioner, Change::Added) => K::PractitionerCreated,
            (MasterFileKind::Practitioner, Change::Updated) => K::PractitionerUpdated,
            (MasterFileKind::Practitioner, Change::Deactivated) => K::PractitionerDeactivated,
            (MasterFileKind::Practitioner, Change::Deleted) => K::PractitionerDeleted,
            (MasterFileKind::Service | MasterFileKind::Observation, Change::Added) => {
                K::ServiceCreated
            }
            (MasterFileKind::Service | MasterFileKind::Observation, Change::Updated) => {
                K::ServiceUpdated
            }
            (MasterFileKind::Service | MasterFileKind::Observation, Change::Deactivated) => {
                K::ServiceDeactivated
            }
            (MasterFileKind::Service | MasterFileKind::Observation, Change::Deleted) => {
                K::ServiceDeleted
            }
            (MasterFileKind::Location, Change::Added) => K::LocationCreated,
            (MasterFileKind::Location, Change::Updated) => K::LocationUpdated,
            (MasterFileKind::Location, Change::Deactivated) => K::LocationDeactivated,
            (MasterFileKind::Location, Change::Deleted) => K::LocationDeleted,
        }
    }
}

/// MFE-1 record-level event code (HL7 table 0180), reduced to what it does to the entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Added,
    Updated,
    Deactivated,
    Deleted,
}

/// What became of one record of a master file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordOutcome {
    /// MFE-1 as sent (`MAD`, `MUP`...), for MFA-1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_event: Option<String>,
    /// MFE-2, the record's control id, for MFA-2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_id: Option<String>,
    /// MFE-4.1, the primary key as sent, for MFA-5 (master data: a staff, service or
    /// location code, not patient data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_key: Option<String>,
    /// MFE-5, the primary key's type (`CWE`, `PL`), for MFA-6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_key_type: Option<String>,
    /// Why the record was rejected; `None` when it was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
    /// The mapping error behind [`RecordOutcome::rejected`] (not part of the JSON form), so
    /// the answer can pick the HL7 error code.
    #[serde(skip)]
    pub error: Option<MappingError>,
}

impl RecordOutcome {
    /// True when the record was accepted.
    pub fn accepted(&self) -> bool {
        self.rejected.is_none()
    }
}

/// A master file notification mapped record by record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterFile {
    /// Which master file.
    pub file: MasterFileKind,
    /// One event per accepted record, in message order (none for a test/observation record
    /// that is not orderable).
    pub events: Vec<Event>,
    /// One outcome per record (MFE), in message order.
    pub records: Vec<RecordOutcome>,
}

impl MasterFile {
    /// The rejected records as `MFE[n]: reason` lines (1-based, in message order), for the
    /// stored message's errors.
    pub fn rejections(&self) -> Vec<String> {
        self.records
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                r.rejected
                    .as_ref()
                    .map(|why| format!("MFE[{}]: {why}", i + 1))
            })
            .collect()
    }
}

/// Maps a master file notification (MFN^M02, M04, M05, M08, M09, M10) record by record.
///
/// The second record's event code, `ADD`, is not in table 0180: that record alone is rejected.
///
/// ```
/// use transforms::hl7v2::access::V2Message;
/// use transforms::from_v2::mfn::{map_master_file, MasterFileKind};
/// let text = "MSH|^~\\&|HIS|RUH|||20260615103000||MFN^M05|C1|P|2.5\r\
///             MFI|LOC||UPD|||AL\r\
///             MFE|MAD|R1||CLN-PED-01|PL\rLOC|CLN-PED-01|General Pediatric Clinic|C\r\
///             MFE|ADD|R2||CLN-X|PL\rLOC|CLN-X\r";
/// let mf = map_master_file(&V2Message::parse(text).unwrap(), MasterFileKind::Location).unwrap();
/// assert_eq!(mf.events.len(), 1);
/// assert!(mf.records[0].accepted());
/// assert!(mf.records[1].rejected.as_deref().unwrap().starts_with("unknown code in MFE[2]-1"));
/// ```
///
/// # Errors
/// [`MappingError`] only for the message as a whole: no MSH-10, or an MSH-7 that does not
/// parse. Problems of a record are in its [`RecordOutcome`].
pub fn map_master_file(
    msg: &V2Message<'_>,
    file: MasterFileKind,
) -> Result<MasterFile, MappingError> {
    let source = source_from_msh(msg)?;
    let mut events = Vec::new();
    let mut records = Vec::new();
    // Split into records: each MFE and the segments up to the next MFE.
    let segments: Vec<SegmentRef<'_, '_>> = msg.segments().collect();
    let starts: Vec<usize> = segments
        .iter()
        .enumerate()
        .filter(|(_, s)| s.name() == "MFE")
        .map(|(i, _)| i)
        .collect();
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(segments.len());
        let mfe = &segments[start];
        let body = &segments[start + 1..end];
        let mut outcome = RecordOutcome {
            record_event: mfe.get(1).upper_string(),
            control_id: mfe.get(2).string(),
            primary_key: mfe.get_comp(4, 1).string(),
            primary_key_type: mfe.get(5).string(),
            rejected: None,
            error: None,
        };
        match record_event(msg, &source, file, n, mfe, body) {
            Ok(event) => events.extend(event),
            Err(e) => {
                outcome.rejected = Some(e.to_string());
                outcome.error = Some(e);
            }
        }
        records.push(outcome);
    }
    Ok(MasterFile {
        file,
        events,
        records,
    })
}

fn record_event(
    msg: &V2Message<'_>,
    source: &Source,
    file: MasterFileKind,
    index: usize,
    mfe: &SegmentRef<'_, '_>,
    body: &[SegmentRef<'_, '_>],
) -> Result<Option<Event>, MappingError> {
    let mfe_path = || msg.field_path(mfe, 1);
    let change = match mfe
        .get(1)
        .text()
        .map(|t| UpperCode::new(t.trim()))
        .as_deref()
    {
        Some("MAD") => Change::Added,
        Some("MUP" | "MAC") => Change::Updated,
        Some("MDC") => Change::Deactivated,
        Some("MDL") => Change::Deleted,
        Some(_) => {
            return Err(MappingError::UnknownCode {
                path: mfe_path(),
                reason: "record-level event code not in HL7 table 0180 (MAD, MUP, MDL, MDC, MAC)",
            })
        }
        None => {
            return Err(MappingError::Missing {
                path: mfe_path(),
                reason: "no record-level event code",
            })
        }
    };
    let reactivated = mfe.get(1).upper_string().as_deref() == Some("MAC");
    let active = match change {
        Change::Deactivated | Change::Deleted => Some(false),
        _ if reactivated => Some(true),
        _ => None,
    };
    let record_name = file.record_segment();
    let record = body
        .iter()
        .find(|s| s.name() == record_name)
        .ok_or_else(|| MappingError::Missing {
            path: record_name.to_owned(),
            reason: "no record segment after its MFE",
        })?;
    let named = |name: &'static str| body.iter().filter(move |s| s.name() == name);
    let mfe_key = mfe.get_comp(4, 1).string();
    let kind = file.kind(change);
    let mut event = Event::empty(String::new(), kind, source.clone());
    let no_key = || MappingError::Missing {
        path: msg.field_path(record, 1),
        reason: "no primary key (nor MFE-4)",
    };
    let key = match file {
        MasterFileKind::Practitioner => {
            let mut p = practitioner(msg, record, named("PRA"), named("ORG"))?;
            p.code = p.code.or(mfe_key);
            let key = p.code.clone().ok_or_else(no_key)?;
            if active.is_some() {
                p.active = active;
            }
            event.practitioners.push(p);
            key
        }
        MasterFileKind::Location => {
            let mut l = location(record, named("LDP"), named("LCH"));
            l.code = l.code.or(mfe_key);
            let key = l.code.clone().ok_or_else(no_key)?;
            if active.is_some() {
                l.active = active;
            }
            event.location = Some(l);
            key
        }
        MasterFileKind::Service => {
            let mut s = service(msg, record, named("PRC").next())?;
            if s.code.is_empty() {
                s.code = mfe_key.ok_or_else(no_key)?;
            }
            if active.is_some() {
                s.active = active;
            }
            let key = s.code.clone();
            event.service = Some(s);
            key
        }
        MasterFileKind::Observation => {
            // A test that cannot be ordered (OM1-12 `N`) is a result component, no service:
            // accepted, and nothing to send.
            if is_no(record, 12) {
                return Ok(None);
            }
            let mut s = test_service(record, named("OM4").next(), named("OM5"));
            if s.code.is_empty() {
                s.code = mfe_key.ok_or_else(no_key)?;
            }
            if active.is_some() {
                s.active = active;
            }
            let key = s.code.clone();
            event.service = Some(s);
            key
        }
    };
    // One message carries many records: the record's position and key make each id unique,
    // and a resend of the same message gives the same ids.
    let position = index.to_string();
    event.id = stable_id(&[
        &source.format,
        source.sending_application.as_deref().unwrap_or(""),
        source.sending_facility.as_deref().unwrap_or(""),
        &source.control_id,
        kind.as_str(),
        &position,
        &key,
    ]);
    Ok(Some(event))
}

/// A/I (HL7 table 0183) as a flag; anything else is not said.
fn active_flag(seg: &SegmentRef<'_, '_>, field: usize) -> Option<bool> {
    match seg
        .get(field)
        .text()
        .map(|t| UpperCode::new(t.trim()))
        .as_deref()
    {
        Some("A") => Some(true),
        Some("I") => Some(false),
        _ => None,
    }
}

fn practitioner<'a, 'm: 'a>(
    msg: &V2Message<'_>,
    stf: &SegmentRef<'_, '_>,
    mut pra: impl Iterator<Item = &'a SegmentRef<'a, 'm>>,
    org: impl Iterator<Item = &'a SegmentRef<'a, 'm>>,
) -> Result<Practitioner, MappingError> {
    let mut p = Practitioner {
        code: stf.get_comp(1, 1).string(),
        ..Practitioner::default()
    };
    for rep in stf.field(2).reps() {
        let parts = rep.components();
        let Some(value) = parts.get(1).string() else {
            continue;
        };
        let slot = match parts
            .get(5)
            .text()
            .map(|t| UpperCode::new(t.trim()))
            .as_deref()
        {
            Some("LN" | "MD" | "LI" | "SL") => &mut p.licence_number,
            Some("PRN" | "RN" | "NPI" | "MCN" | "UPIN" | "DEA") => &mut p.registration_number,
            Some("NI" | "NH" | "SS" | "CZ") => &mut p.national_id,
            Some(c) if c.len() == 5 && c.starts_with("NN") => &mut p.national_id,
            Some("AN") => &mut p.account_number,
            _ => &mut p.code,
        };
        if slot.is_none() {
            *slot = Some(value);
        }
    }
    for rep in stf.field(3).reps() {
        let name = datatypes::name_at(&rep, 1);
        if name.is_empty() {
            continue;
        }
        if name.language.is_some() {
            if p.alternate_name.is_none() {
                p.alternate_name = Some(name);
            }
        } else if p.name.is_empty() {
            p.name = name;
        }
    }
    p.gender = super::adt::gender(stf.get(5).text());
    p.birth_date = ts(msg, stf, 6)?;
    p.active = active_flag(stf, 7);
    for rep in stf.field(10).reps() {
        match datatypes::telecom(&rep, None) {
            Some(Telecom::Phone(phone)) if p.phone.is_none() => p.phone = Some(phone.number),
            Some(Telecom::Email(email)) if p.email.is_none() => p.email = Some(email),
            _ => {}
        }
    }
    if p.email.is_none() {
        p.email = stf.get(15).string();
    }
    p.description = stf.get(18).string();
    let department_codes: Vec<String> = stf
        .field(8)
        .reps()
        .filter_map(|r| r.components().get(1).string())
        .collect();
    let mut area = None;
    for o in org {
        if let Some(code) = o.get_comp(2, 1).string() {
            if !p.clinic_codes.contains(&code) {
                p.clinic_codes.push(code);
            }
        }
        if p.cost_centre.is_none() {
            p.cost_centre = o.get_comp(13, 1).string();
        }
        if area.is_none() {
            area = datatypes::coded(&o.field(8));
        }
    }
    if p.clinic_codes.is_empty() {
        p.clinic_codes = department_codes;
    }
    let mut specialty = None;
    if let Some(pra) = pra.next() {
        specialty = pra.get_comp(5, 1).string().map(|text| Coded {
            code: None,
            text: Some(text),
            system: None,
        });
        p.branch = pra
            .get_comp(9, 2)
            .string()
            .or_else(|| pra.get_comp(9, 1).string());
        for rep in pra.field(6).reps() {
            let parts = rep.components();
            let Some(value) = parts.get(1).string() else {
                continue;
            };
            let slot = match parts
                .get(2)
                .text()
                .map(|t| UpperCode::new(t.trim()))
                .as_deref()
            {
                Some("MDL" | "SL" | "LN") => &mut p.licence_number,
                _ => &mut p.registration_number,
            };
            if slot.is_none() {
                *slot = Some(value);
            }
        }
    }
    p.specialisation = specialty
        .or(area)
        .or_else(|| datatypes::coded(&stf.field(9)));
    Ok(p)
}

fn location<'a, 'm: 'a>(
    loc: &SegmentRef<'_, '_>,
    mut ldp: impl Iterator<Item = &'a SegmentRef<'a, 'm>>,
    lch: impl Iterator<Item = &'a SegmentRef<'a, 'm>>,
) -> Location {
    let mut l = datatypes::location(&loc.field(1).rep(1)).unwrap_or_default();
    if let Some(description) = loc.get(2).string() {
        l.name = Some(description);
    }
    l.location_type = loc
        .get(3)
        .text()
        .and_then(|t| location_type_text(&UpperCode::new(t.trim())))
        .map(str::to_owned);
    l.address = datatypes::address(&loc.field(5).rep(1));
    for rep in loc.field(6).reps() {
        match datatypes::telecom(&rep, None) {
            Some(Telecom::Phone(phone)) if l.phone.is_none() => l.phone = Some(phone.number),
            Some(Telecom::Email(email)) if l.email.is_none() => l.email = Some(email),
            _ => {}
        }
    }
    if let Some(ldp) = ldp.next() {
        if let Some(class) = ldp
            .get(5)
            .text()
            .and_then(|t| patient_class_text(&UpperCode::new(t.trim())))
        {
            l.location_type = Some(class.to_owned());
        }
        l.specialisation =
            datatypes::coded(&ldp.field(4)).or_else(|| datatypes::coded(&ldp.field(2)));
        l.active = active_flag(ldp, 6);
        if l.phone.is_none() {
            if let Some(Telecom::Phone(phone)) = datatypes::telecom(&ldp.field(11).rep(1), None) {
                l.phone = Some(phone.number);
            }
        }
        l.cost_centre = ldp.get_comp(12, 1).string();
    }
    for c in lch {
        let value = c.get_comp(5, 1).string();
        match c
            .get_comp(4, 1)
            .text()
            .map(|t| UpperCode::new(t.trim()))
            .as_deref()
        {
            Some("COSTCTR") if l.cost_centre.is_none() => l.cost_centre = value,
            Some("ACCTNO") if l.account_number.is_none() => l.account_number = value,
            _ => {}
        }
    }
    l
}

/// HL7 table 0260 (location type) as words.
fn location_type_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "C" => "Clinic",
        "D" => "Department",
        "N" => "Nursing unit",
        "R" => "Room",
        "B" => "Bed",
        "E" => "Exam room",
        "O" => "Operating room",
        "L" => "Other",
        _ => return None,
    })
}

/// HL7 table 0004 (patient class) as the words a clinic type uses.
fn patient_class_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "O" => "Outpatient",
        "I" => "Inpatient",
        "E" => "Emergency",
        "P" => "Preadmit",
        "R" => "Recurring patient",
        "B" => "Obstetrics",
        _ => return None,
    })
}

fn service(
    msg: &V2Message<'_>,
    cdm: &SegmentRef<'_, '_>,
    prc: Option<&SegmentRef<'_, '_>>,
) -> Result<Service, MappingError> {
    let mut s = Service {
        code: cdm.get_comp(1, 1).string().unwrap_or_default(),
        name: cdm.get(3).string().or_else(|| cdm.get_comp(1, 2).string()),
        description: cdm.get(4).string(),
        active: active_flag(cdm, 8),
        ..Service::default()
    };
    if let Some(prc) = prc {
        let price = prc.get_at(5, 1, 1, 1);
        s.price = match price.text() {
            Some(text) => Some(crate::model::Decimal::parse(text.trim()).map_err(|_| {
                MappingError::BadNumber {
                    path: msg.field_path(prc, 5),
                }
            })?),
            None => None,
        };
        s.currency = prc.get_at(5, 1, 1, 2).string();
        s.department = datatypes::coded(&prc.field(3));
    }
    Ok(s)
}

/// Y/N (HL7 table 0136): true when the field says `N`.
fn is_no(seg: &SegmentRef<'_, '_>, field: usize) -> bool {
    yes_no(seg, field) == Some(false)
}

/// Y/N (HL7 table 0136) as a flag; anything else is not said.
fn yes_no(seg: &SegmentRef<'_, '_>, field: usize) -> Option<bool> {
    match seg
        .get(field)
        .text()
        .map(|t| UpperCode::new(t.trim()))
        .as_deref()
    {
        Some("Y") => Some(true),
        Some("N") => Some(false),
        _ => None,
    }
}

/// HL7 table 0174 (nature of service/test/observation) as words.
fn nature_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "A" => "Atomic test",
        "C" => "Calculated observation",
        "F" => "Functional procedure",
        "P" => "Profile or battery",
        "S" => "Superset",
        _ => return None,
    })
}

/// An orderable test of a test/observation master file (OM1, with the record's OM4 and
/// OM5 segments).
fn test_service<'a, 'm: 'a>(
    om1: &SegmentRef<'_, '_>,
    om4: Option<&SegmentRef<'_, '_>>,
    om5: impl Iterator<Item = &'a SegmentRef<'a, 'm>>,
) -> Service {
    Service {
        code: om1.get_comp(2, 1).string().unwrap_or_default(),
        name: om1
            .get_comp(2, 2)
            .string()
            .or_else(|| om1.get(9).string())
            .or_else(|| om1.get(10).string()),
        description: om1.get(11).string().or_else(|| om1.get(6).string()),
        department: datatypes::coded(&om1.field(16)),
        nature: om1
            .get(18)
            .text()
            .and_then(|t| nature_text(&UpperCode::new(t.trim())))
            .map(str::to_owned),
        specimen_required: yes_no(om1, 4),
        specimen: om4.and_then(|s| datatypes::coded(&s.field(6))),
        components: om5
            .flat_map(|s| s.field(2).reps().collect::<Vec<_>>())
            .filter_map(|rep| datatypes::coded_at(&rep, 1))
            .collect(),
        ..Service::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(text: &str, file: MasterFileKind) -> MasterFile {
        map_master_file(&V2Message::parse(text).expect("parses"), file).expect("maps")
    }

    #[test]
    fn one_bad_record_is_rejected_with_its_reason_and_the_others_map() {
        let mf = map(
            "MSH|^~\\&|HIS|RUH|||20260615103000||MFN^M02|C1|P|2.5\r\
             MFI|STF||UPD|||AL\r\
             MFE|MAD|R1||DOC-1|CWE\rSTF|DOC-1||Haddad^Omar\r\
             MFE|MAD|R2|||CWE\rSTF|||Nameless^Doctor\r\
             MFE|MUP|R3||DOC-3|CWE\rSTF|DOC-3||Saleh^Mona||F|19900230\r\
             MFE|MAC|R4||DOC-4|CWE\rSTF|DOC-4||Nasser^Ali\r",
            MasterFileKind::Practitioner,
        );
        let accepted: Vec<bool> = mf.records.iter().map(RecordOutcome::accepted).collect();
        assert_eq!(accepted, [true, false, false, true]);
        assert_eq!(
            mf.rejections(),
            [
                "MFE[2]: missing STF[2]-1: no primary key (nor MFE-4)",
                "MFE[3]: unparsable date/time in STF[3]-6: date/time out of range (date)",
            ]
        );
        let kinds: Vec<EventKind> = mf.events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EventKind::PractitionerCreated,
                EventKind::PractitionerUpdated
            ]
        );
        // MAC reactivates.
        assert_eq!(mf.events[1].practitioners[0].active, Some(true));
        // No value from the message in a reason.
        assert!(mf.rejections().iter().all(|r| !r.contains("19900230")));
    }

    #[test]
    fn only_orderable_tests_become_services_and_every_record_is_answered() {
        let mf = map(
            "MSH|^~\\&|LIS|RUH|||20260615103000||MFN^M10|C1|P|2.5\r\
             MFI|OMC||UPD|||AL\r\
             MFE|MAD|R1||LIPID|CWE\rOM1|1|LIPID^Lipid panel^L||||||||||Y||||||P\r\
             OM5|1|CHOL^Cholesterol^L~HDL^HDL^L\r\
             MFE|MAD|R2||IDX|CWE\rOM1|2|IDX^Index^L||||||||||N\r\
             MFE|MAD|R3|||CWE\rOM1|3\r",
            MasterFileKind::Observation,
        );
        let accepted: Vec<bool> = mf.records.iter().map(RecordOutcome::accepted).collect();
        assert_eq!(accepted, [true, true, false]);
        assert_eq!(mf.events.len(), 1, "{:?}", mf.events);
        let s = mf.events[0].service.as_ref().expect("a service");
        assert_eq!(s.code, "LIPID");
        assert_eq!(s.nature.as_deref(), Some("Profile or battery"));
        let parts: Vec<_> = s
            .components
            .iter()
            .filter_map(|c| c.code.as_deref())
            .collect();
        assert_eq!(parts, ["CHOL", "HDL"]);
        assert_eq!(mf.events[0].kind, EventKind::ServiceCreated);
    }

    #[test]
    fn records_of_one_message_get_distinct_stable_ids() {
        let text = "MSH|^~\\&|HIS|RUH|||20260615103000||MFN^M05|C1|P|2.5\r\
                    MFI|LOC||UPD|||AL\r\
                    MFE|MAD|R1||A|PL\rLOC|A\rMFE|MAD|R2||B|PL\rLOC|B\r";
        let first = map(text, MasterFileKind::Location);
        let again = map(text, MasterFileKind::Location);
        assert_ne!(first.events[0].id, first.events[1].id);
        assert_eq!(first.events[0].id, again.events[0].id);
    }

    #[test]
    fn unknown_event_code_and_missing_record_segment_are_rejected() {
        let mf = map(
            "MSH|^~\\&|HIS|RUH|||20260615103000||MFN^M04|C1|P|2.5\r\
             MFI|CDM||UPD|||AL\r\
             MFE|MXX|R1||S1|CWE\rCDM|S1\r\
             MFE|MAD|R2||S2|CWE\r\
             MFE|MDL|R3||S3|CWE\rCDM|S3\rPRC|S3||||12,50&SAR\r",
            MasterFileKind::Service,
        );
        let reasons = mf.rejections();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("table 0180"), "{reasons:?}");
        assert!(reasons[1].contains("missing CDM"), "{reasons:?}");
        assert!(
            reasons[2].contains("invalid number in PRC-5"),
            "{reasons:?}"
        );
        assert!(mf.events.is_empty());
    }
}
