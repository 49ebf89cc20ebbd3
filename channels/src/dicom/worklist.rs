//! Modality Worklist: the scheduled procedure steps a `dicom_worklist` source serves, how an
//! order becomes one, and C-FIND matching as DICOM PS3.4 K.6 and C.2.2.2 say.
//!
//! Matching, for the keys a modality sends in practice:
//! - an empty key matches everything (universal matching) and is returned filled in;
//! - `*` and `?` are wildcards in every text key (PatientName, PatientID, AccessionNumber,
//!   Modality, ScheduledStationAETitle, ...); PatientName compares case-insensitively and
//!   ignores trailing empty name components;
//! - ScheduledProcedureStepStartDate takes one date (`20260301`) or a range (`20260301-20260305`,
//!   `-20260305`, `20260301-`); the start time likewise (`0800-1200`);
//! - StudyInstanceUID takes a list of UIDs separated by `\`;
//! - keys inside ScheduledProcedureStepSequence match against the item's one step.
//!
//! Only requested attributes are returned; one the worklist does not keep is returned empty.

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use transforms::model::{Event, EventKind, Gender, HumanName, Order, OrderStatus};

/// The Modality Worklist Information Model - FIND SOP class.
pub const MWL_FIND: &str = "1.2.840.10008.5.1.4.31";

/// One scheduled procedure step, as the worklist keeps it (DICOM-formatted values).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorklistItem {
    /// The item's key in its worklist: the accession number.
    pub accession_number: String,
    /// Placer order number (ORC-2).
    #[serde(default)]
    pub placer_number: String,
    /// Filler order number (ORC-3).
    #[serde(default)]
    pub filler_number: String,
    /// Patient ID (0010,0020).
    pub patient_id: String,
    /// Issuer of the patient ID (0010,0021).
    #[serde(default)]
    pub patient_id_issuer: String,
    /// Patient's name, DICOM PN (`Family^Given^Middle^Prefix^Suffix`).
    pub patient_name: String,
    /// Birth date, `YYYYMMDD`.
    #[serde(default)]
    pub birth_date: String,
    /// Sex: `M`, `F`, `O` or empty.
    #[serde(default)]
    pub sex: String,
    /// Requested Procedure ID (0040,1001).
    #[serde(default)]
    pub requested_procedure_id: String,
    /// Requested Procedure Description (0032,1060).
    #[serde(default)]
    pub requested_procedure_description: String,
    /// Requested procedure code value (for the Requested Procedure Code Sequence).
    #[serde(default)]
    pub procedure_code: String,
    /// Study Instance UID (0020,000D), deterministic from the order when the order gives none.
    pub study_instance_uid: String,
    /// Scheduled Procedure Step ID (0040,0009).
    #[serde(default)]
    pub step_id: String,
    /// Modality (0008,0060), such as `CT`.
    #[serde(default)]
    pub modality: String,
    /// Scheduled Station AE Title (0040,0001).
    #[serde(default)]
    pub station_ae_title: String,
    /// Scheduled Procedure Step Start Date, `YYYYMMDD`.
    #[serde(default)]
    pub start_date: String,
    /// Scheduled Procedure Step Start Time, `HHMMSS`.
    #[serde(default)]
    pub start_time: String,
    /// Referring physician, DICOM PN.
    #[serde(default)]
    pub referring_physician: String,
    /// Unix milliseconds of the last write (retention reads it).
    #[serde(default)]
    pub updated_at_ms: u64,
}

/// The durable state the DICOM sources and the worklist destination share, kept by the
/// engine in its store (trees `worklist`, `mpps`, `dicom_studies`, `dicom_instances`). Writes are not durable until
/// [`DicomState::commit`] returns.
pub trait DicomState: Send + Sync + 'static {
    /// Every item of `worklist`.
    ///
    /// # Errors
    ///
    /// A sentence naming what failed (never patient data).
    fn items(&self, worklist: &str) -> Result<Vec<WorklistItem>, String>;
    /// Writes (or replaces) an item, keyed by its accession number.
    ///
    /// # Errors
    ///
    /// As [`DicomState::items`].
    fn put_item(&self, worklist: &str, item: &WorklistItem) -> Result<(), String>;
    /// Removes the item with `accession_number`; whether it was there.
    ///
    /// # Errors
    ///
    /// As [`DicomState::items`].
    fn remove_item(&self, worklist: &str, accession_number: &str) -> Result<bool, String>;
    /// An MPPS instance's state, by SOP instance UID.
    ///
    /// # Errors
    ///
    /// As [`DicomState::items`].
    fn mpps(&self, channel: &str, uid: &str) -> Result<Option<Vec<u8>>, String>;
    /// Writes an MPPS instance's state.
    ///
    /// # Errors
    ///
    /// As [`DicomState::items`].
    fn put_mpps(&self, channel: &str, uid: &str, state: &[u8]) -> Result<(), String>;
    /// A study's tally (see [`super::storage::StudyRecord`]) of a storage source, by
    /// Study Instance UID.
    ///
    /// # Errors
    ///
    /// As [`DicomState::items`].
    fn study(&self, channel: &str, study: &str) -> Result<Option<Vec<u8>>, String>;
    /// Writes a study's tally.
    ///
    /// # Errors
    ///
    /// As [`DicomState::items`].
    fn put_study(&self, channel: &str, study: &str, record: &[u8]) -> Result<(), String>;
    /// Every study tally of a storage source: (Study Instance UID, tally).
    ///
    /// # Errors
    ///
    /// As [`DicomState::items`].
    fn studies(&self, channel: &str) -> Result<Vec<(String, Vec<u8>)>, String>;
    /// Records one instance of a study (by SOP Instance UID); `false` when it was recorded
    /// before (nothing written).
    ///
    /// # Errors
    ///
    /// As [`DicomState::items`].
    fn add_instance(
        &self,
        channel: &str,
        study: &str,
        sop: &str,
        value: &[u8],
    ) -> Result<bool, String>;
    /// The instances recorded of a study, as written.
    ///
    /// # Errors
    ///
    /// As [`DicomState::items`].
    fn instances(&self, channel: &str, study: &str) -> Result<Vec<Vec<u8>>, String>;
    /// Waits until everything written so far is durable.
    fn commit(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// What an order event does to the worklist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Add or replace the item.
    Put(Box<WorklistItem>),
    /// Remove the item with this accession number.
    Remove(String),
}

/// Defaults for what an order does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemDefaults {
    /// Modality when the order names none.
    pub modality: String,
    /// Scheduled station AE title when the order names none.
    pub station_ae_title: String,
}

/// What an order event does to the worklist: one change per order; a cancelled,
/// discontinued, completed (or replaced, in error) order leaves it. Events that are not about
/// orders change nothing.
pub fn changes(event: &Event, defaults: &ItemDefaults, now_ms: u64) -> Vec<Change> {
    if !matches!(
        event.kind,
        EventKind::OrderPlaced | EventKind::OrderUpdated | EventKind::OrderCancelled
    ) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for order in &event.orders {
        let Some(accession) = accession(order) else {
            continue;
        };
        let leaves = event.kind == EventKind::OrderCancelled
            || matches!(
                order.status,
                OrderStatus::Cancelled
                    | OrderStatus::Discontinued
                    | OrderStatus::Completed
                    | OrderStatus::Replaced
                    | OrderStatus::Error
            );
        if leaves {
            out.push(Change::Remove(accession));
        } else {
            out.push(Change::Put(Box::new(item_of(
                event, order, accession, defaults, now_ms,
            ))));
        }
    }
    out
}

/// The accession number of an order: the imaging details' when sent (IPC-1), else the
/// filler order number, else the placer order number.
pub fn accession(order: &Order) -> Option<String> {
    order
        .imaging
        .as_ref()
        .and_then(|i| i.accession_number.clone())
        .or_else(|| order.filler_number.clone())
        .or_else(|| order.placer_number.clone())
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
}

fn item_of(
    event: &Event,
    order: &Order,
    accession: String,
    defaults: &ItemDefaults,
    now_ms: u64,
) -> WorklistItem {
    let patient = event.patient.as_ref();
    let id = patient.and_then(|p| p.primary_identifier());
    let imaging = order.imaging.clone().unwrap_or_default();
    let (start_date, start_time) = match order.requested_start {
        Some(ts) => {
            let dt = ts.naive_date_time();
            let time = if ts.precision() >= transforms::model::Precision::Hour {
                dt.format("%H%M%S").to_string()
            } else {
                String::new()
            };
            (dt.format("%Y%m%d").to_string(), time)
        }
        None => (String::new(), String::new()),
    };
    let placer = order.placer_number.clone().unwrap_or_default();
    let filler = order.filler_number.clone().unwrap_or_default();
    WorklistItem {
        study_instance_uid: imaging
            .study_instance_uid
            .clone()
            .unwrap_or_else(|| study_uid(&placer, &filler, &accession)),
        requested_procedure_id: imaging
            .requested_procedure_id
            .clone()
            .unwrap_or_else(|| accession.clone()),
        step_id: imaging.step_id.clone().unwrap_or_else(|| accession.clone()),
        modality: imaging
            .modality
            .clone()
            .unwrap_or_else(|| defaults.modality.clone()),
        station_ae_title: imaging
            .station_ae_title
            .clone()
            .unwrap_or_else(|| defaults.station_ae_title.clone()),
        accession_number: accession,
        placer_number: placer,
        filler_number: filler,
        patient_id: id.map(|i| i.value.clone()).unwrap_or_default(),
        patient_id_issuer: id
            .and_then(|i| i.assigning_authority.clone())
            .unwrap_or_default(),
        patient_name: patient.map(|p| person_name(&p.name)).unwrap_or_default(),
        birth_date: patient
            .and_then(|p| p.birth_date)
            .map(|d| d.naive_date().format("%Y%m%d").to_string())
            .unwrap_or_default(),
        sex: match patient.and_then(|p| p.gender) {
            Some(Gender::Male) => "M".into(),
            Some(Gender::Female) => "F".into(),
            Some(Gender::Other | Gender::Ambiguous) => "O".into(),
            _ => String::new(),
        },
        requested_procedure_description: order
            .procedure
            .as_ref()
            .and_then(|c| c.text.clone().or_else(|| c.code.clone()))
            .unwrap_or_default(),
        procedure_code: order
            .procedure
            .as_ref()
            .and_then(|c| c.code.clone())
            .unwrap_or_default(),
        start_date,
        start_time,
        referring_physician: order
            .ordering_provider
            .as_ref()
            .map(|p| person_name(&p.name))
            .unwrap_or_default(),
        updated_at_ms: now_ms,
    }
}

/// A name as DICOM PN: `Family^Given^Middle^Prefix^Suffix`, trailing empty components left out.
pub fn person_name(n: &HumanName) -> String {
    let parts = [&n.family, &n.given, &n.middle, &n.prefix, &n.suffix];
    let mut s: Vec<&str> = parts
        .iter()
        .map(|p| p.as_deref().unwrap_or_default())
        .collect();
    while s.last().is_some_and(|p| p.is_empty()) {
        s.pop();
    }
    s.join("^")
}

/// A Study Instance UID made from the order numbers: `2.25.` and the decimal of 128 bits of
/// their SHA-256, so that the same order always gets the same study (PS3.5 B.2).
pub fn study_uid(placer: &str, filler: &str, accession: &str) -> String {
    let hex = transforms::model::stable_id(&["dicom-study", placer, filler, accession]);
    let n = u128::from_str_radix(&hex, 16).unwrap_or_default();
    format!("2.25.{n}")
}

/// The attributes of an item, by tag, top level and inside its step.
fn top_value(item: &WorklistItem, tag: Tag) -> Option<&str> {
    Some(match tag {
        tags::ACCESSION_NUMBER => &item.accession_number,
        tags::PATIENT_ID => &item.patient_id,
        tags::ISSUER_OF_PATIENT_ID => &item.patient_id_issuer,
        tags::PATIENT_NAME => &item.patient_name,
        tags::PATIENT_BIRTH_DATE => &item.birth_date,
        tags::PATIENT_SEX => &item.sex,
        tags::REQUESTED_PROCEDURE_ID => &item.requested_procedure_id,
        tags::REQUESTED_PROCEDURE_DESCRIPTION => &item.requested_procedure_description,
        tags::STUDY_INSTANCE_UID => &item.study_instance_uid,
        tags::REFERRING_PHYSICIAN_NAME => &item.referring_physician,
        tags::PLACER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST => &item.placer_number,
        tags::FILLER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST => &item.filler_number,
        _ => return None,
    })
}

fn step_value(item: &WorklistItem, tag: Tag) -> Option<&str> {
    Some(match tag {
        tags::MODALITY => &item.modality,
        tags::SCHEDULED_STATION_AE_TITLE => &item.station_ae_title,
        tags::SCHEDULED_PROCEDURE_STEP_START_DATE => &item.start_date,
        tags::SCHEDULED_PROCEDURE_STEP_START_TIME => &item.start_time,
        tags::SCHEDULED_PROCEDURE_STEP_ID => &item.step_id,
        tags::SCHEDULED_PROCEDURE_STEP_DESCRIPTION => &item.requested_procedure_description,
        _ => return None,
    })
}

/// Whether `item` matches the C-FIND identifier `query`.
pub fn matches(item: &WorklistItem, query: &InMemDicomObject) -> bool {
    for e in query.iter() {
        let tag = e.header().tag;
        if tag == tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE {
            for step in e.items().unwrap_or_default() {
                for se in step.iter() {
                    let t = se.header().tag;
                    if let Some(have) = step_value(item, t) {
                        if !key_matches(t, &value_text(se), have) {
                            return false;
                        }
                    }
                }
            }
            continue;
        }
        if let Some(have) = top_value(item, tag) {
            if !key_matches(tag, &value_text(e), have) {
                return false;
            }
        }
    }
    true
}

/// What makes a C-FIND identifier unusable for this SOP class, or `None`: a
/// ScheduledProcedureStepSequence that is not a sequence of one item, a date key that is
/// not a date or a date range (`YYYYMMDD`, `A-B`, `-B`, `A-`), a time key that is not a
/// time or a range, a StudyInstanceUID key that is not a list of UIDs. The sentence names
/// the attribute, never the value.
pub fn query_problem(query: &InMemDicomObject) -> Option<String> {
    for e in query.iter() {
        let tag = e.header().tag;
        if tag == tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE {
            let Some(items) = e.items() else {
                return Some("ScheduledProcedureStepSequence is not a sequence".into());
            };
            if items.len() > 1 {
                return Some("ScheduledProcedureStepSequence has more than one item".into());
            }
            for step in items {
                for se in step.iter() {
                    if let Some(p) = key_problem(se.header().tag, &value_text(se)) {
                        return Some(p);
                    }
                }
            }
            continue;
        }
        if let Some(p) = key_problem(tag, &value_text(e)) {
            return Some(p);
        }
    }
    None
}

fn key_problem(tag: Tag, key: &str) -> Option<String> {
    let key = key.trim();
    if key.is_empty() || key == "*" {
        return None;
    }
    let date = |d: &str| {
        d.len() == 8
            && d.chars().all(|c| c.is_ascii_digit())
            && chrono::NaiveDate::parse_from_str(d, "%Y%m%d").is_ok()
    };
    let range = |ok: &dyn Fn(&str) -> bool| match key.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (lo.trim(), hi.trim());
            (!lo.is_empty() || !hi.is_empty())
                && (lo.is_empty() || ok(lo))
                && (hi.is_empty() || ok(hi))
        }
        None => ok(key),
    };
    match tag {
        tags::SCHEDULED_PROCEDURE_STEP_START_DATE | tags::PATIENT_BIRTH_DATE => {
            (!range(&date)).then(|| format!("{} is not a date or a date range", name_of(tag)))
        }
        tags::SCHEDULED_PROCEDURE_STEP_START_TIME => (!range(&super::mpps::is_time))
            .then(|| format!("{} is not a time or a time range", name_of(tag))),
        tags::STUDY_INSTANCE_UID => (!key.split('\\').all(|u| super::storage::is_uid(u.trim())))
            .then(|| "StudyInstanceUID is not a list of UIDs".to_string()),
        _ => None,
    }
}

fn name_of(tag: Tag) -> &'static str {
    match tag {
        tags::SCHEDULED_PROCEDURE_STEP_START_DATE => "ScheduledProcedureStepStartDate",
        tags::SCHEDULED_PROCEDURE_STEP_START_TIME => "ScheduledProcedureStepStartTime",
        tags::PATIENT_BIRTH_DATE => "PatientBirthDate",
        _ => "an attribute",
    }
}

fn value_text(e: &dicom_object::mem::InMemElement) -> String {
    if e.vr() == VR::SQ {
        return String::new();
    }
    e.to_str()
        .map(|s| s.trim_matches([' ', '\0']).to_string())
        .unwrap_or_default()
}

/// Single-key matching: universal, range (dates, times), UID list, wildcard, single value.
pub fn key_matches(tag: Tag, key: &str, have: &str) -> bool {
    let key = key.trim();
    if key.is_empty() || key == "*" {
        return true;
    }
    match tag {
        tags::SCHEDULED_PROCEDURE_STEP_START_DATE | tags::PATIENT_BIRTH_DATE => {
            range_matches(key, have, 8)
        }
        tags::SCHEDULED_PROCEDURE_STEP_START_TIME => range_matches(key, have, 6),
        tags::STUDY_INSTANCE_UID => key.split('\\').any(|k| k.trim() == have),
        tags::PATIENT_NAME | tags::REFERRING_PHYSICIAN_NAME => wildcard(
            &normalize_pn(&key.to_lowercase()),
            &normalize_pn(&have.to_lowercase()),
        ),
        _ => wildcard(key, have.trim()),
    }
}

fn normalize_pn(s: &str) -> String {
    s.trim().trim_end_matches(['^', ' ']).to_string()
}

/// `key` a single value or `lo-hi` range (either side open) of fixed-width digits: dates
/// (`YYYYMMDD`, width 8) or times (`HHMMSS[.f]`, compared on their first 6 digits, a
/// shorter one padded). An empty stored value matches no range.
fn range_matches(key: &str, have: &str, width: usize) -> bool {
    let norm = |s: &str, fill: char| -> String {
        let digits: String = s
            .chars()
            .take_while(|c| *c != '.')
            .filter(char::is_ascii_digit)
            .take(width)
            .collect();
        let mut d = digits;
        while d.len() < width {
            d.push(fill);
        }
        d
    };
    let have = have.trim();
    if have.is_empty() {
        return false;
    }
    let v = norm(have, '0');
    match key.split_once('-') {
        Some((lo, hi)) => {
            let lo_ok = lo.trim().is_empty() || v >= norm(lo, '0');
            let hi_ok = hi.trim().is_empty() || v <= norm(hi, '9');
            lo_ok && hi_ok
        }
        None if width == 8 => v == norm(key, '0'),
        // One time: the same to the precision given.
        None => {
            let k: String = key.chars().filter(char::is_ascii_digit).collect();
            v.starts_with(&k)
        }
    }
}

/// `*` matches any run of characters, `?` any one; otherwise equal.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// The C-FIND response identifier for `item`: every attribute `query` asked for (the
/// step's inside its sequence), with the item's value, or empty when the worklist does not
/// keep it. SpecificCharacterSet says UTF-8.
pub fn response(item: &WorklistItem, query: &InMemDicomObject) -> InMemDicomObject {
    let mut out = InMemDicomObject::new_empty();
    out.put_str(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    for e in query.iter() {
        let tag = e.header().tag;
        if tag == tags::SPECIFIC_CHARACTER_SET {
            continue;
        }
        if tag == tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE {
            let asked: Vec<InMemDicomObject> = e.items().map(<[_]>::to_vec).unwrap_or_default();
            let mut step = InMemDicomObject::new_empty();
            for q in &asked {
                for se in q.iter() {
                    let t = se.header().tag;
                    let value = step_value(item, t).unwrap_or_default();
                    put(&mut step, t, se.vr(), value);
                }
            }
            out.put(DataElement::new(
                tag,
                VR::SQ,
                DataSetSequence::from(vec![step]),
            ));
            continue;
        }
        if tag == tags::REQUESTED_PROCEDURE_CODE_SEQUENCE && !item.procedure_code.is_empty() {
            let mut code = InMemDicomObject::new_empty();
            code.put_str(tags::CODE_VALUE, VR::SH, item.procedure_code.clone());
            code.put_str(tags::CODING_SCHEME_DESIGNATOR, VR::SH, "L");
            code.put_str(
                tags::CODE_MEANING,
                VR::LO,
                item.requested_procedure_description.clone(),
            );
            out.put(DataElement::new(
                tag,
                VR::SQ,
                DataSetSequence::from(vec![code]),
            ));
            continue;
        }
        if e.vr() == VR::SQ {
            out.put(DataElement::new(
                tag,
                VR::SQ,
                DataSetSequence::<InMemDicomObject>::from(Vec::new()),
            ));
            continue;
        }
        let value = top_value(item, tag).unwrap_or_default();
        put(&mut out, tag, e.vr(), value);
    }
    out
}

fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    if value.is_empty() {
        obj.put(DataElement::empty(tag, vr));
    } else {
        obj.put_str(tag, vr, value.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> WorklistItem {
        WorklistItem {
            accession_number: "ACC001".into(),
            patient_id: "MRN1".into(),
            patient_name: "Doe^Jane".into(),
            birth_date: "19800101".into(),
            sex: "F".into(),
            study_instance_uid: "2.25.1".into(),
            modality: "CT".into(),
            station_ae_title: "CT01".into(),
            start_date: "20260301".into(),
            start_time: "093000".into(),
            ..WorklistItem::default()
        }
    }

    fn query(top: &[(Tag, VR, &str)], step: &[(Tag, VR, &str)]) -> InMemDicomObject {
        let mut q = InMemDicomObject::new_empty();
        for (t, vr, v) in top {
            put(&mut q, *t, *vr, v);
        }
        if !step.is_empty() {
            let mut s = InMemDicomObject::new_empty();
            for (t, vr, v) in step {
                put(&mut s, *t, *vr, v);
            }
            q.put(DataElement::new(
                tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(vec![s]),
            ));
        }
        q
    }

    #[test]
    fn identifiers_the_sop_class_does_not_allow_are_named() {
        let good = [
            query(
                &[],
                &[(
                    tags::SCHEDULED_PROCEDURE_STEP_START_DATE,
                    VR::DA,
                    "20260301",
                )],
            ),
            query(
                &[],
                &[(
                    tags::SCHEDULED_PROCEDURE_STEP_START_DATE,
                    VR::DA,
                    "20260301-",
                )],
            ),
            query(
                &[],
                &[(
                    tags::SCHEDULED_PROCEDURE_STEP_START_DATE,
                    VR::DA,
                    "-20260301",
                )],
            ),
            query(
                &[],
                &[(
                    tags::SCHEDULED_PROCEDURE_STEP_START_TIME,
                    VR::TM,
                    "0800-1200",
                )],
            ),
            query(&[(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3\\1.2.4")], &[]),
            query(&[(tags::PATIENT_NAME, VR::PN, "Doe*")], &[]),
        ];
        for q in &good {
            assert_eq!(query_problem(q), None);
        }
        let bad = [
            (
                query(
                    &[],
                    &[(
                        tags::SCHEDULED_PROCEDURE_STEP_START_DATE,
                        VR::DA,
                        "2026-03-01",
                    )],
                ),
                "ScheduledProcedureStepStartDate is not a date or a date range",
            ),
            (
                query(
                    &[],
                    &[(
                        tags::SCHEDULED_PROCEDURE_STEP_START_DATE,
                        VR::DA,
                        "20261301",
                    )],
                ),
                "ScheduledProcedureStepStartDate is not a date or a date range",
            ),
            (
                query(
                    &[],
                    &[(tags::SCHEDULED_PROCEDURE_STEP_START_TIME, VR::TM, "2500")],
                ),
                "ScheduledProcedureStepStartTime is not a time or a time range",
            ),
            (
                query(&[(tags::PATIENT_BIRTH_DATE, VR::DA, "-")], &[]),
                "PatientBirthDate is not a date or a date range",
            ),
            (
                query(&[(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.*")], &[]),
                "StudyInstanceUID is not a list of UIDs",
            ),
            (
                query(
                    &[(tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE, VR::LO, "CT")],
                    &[],
                ),
                "ScheduledProcedureStepSequence is not a sequence",
            ),
        ];
        for (q, want) in &bad {
            assert_eq!(query_problem(q).as_deref(), Some(*want));
        }
    }

    #[test]
    fn keys_match_as_dicom_says() {
        let i = item();
        let yes = [
            query(&[(tags::PATIENT_NAME, VR::PN, "")], &[]),
            query(&[(tags::PATIENT_NAME, VR::PN, "doe*")], &[]),
            query(&[(tags::PATIENT_NAME, VR::PN, "Doe^Jane^^")], &[]),
            query(&[(tags::PATIENT_ID, VR::LO, "MRN1")], &[]),
            query(&[(tags::ACCESSION_NUMBER, VR::SH, "ACC0?1")], &[]),
            query(&[], &[(tags::MODALITY, VR::CS, "CT")]),
            query(&[], &[(tags::SCHEDULED_STATION_AE_TITLE, VR::AE, "CT*")]),
            query(
                &[],
                &[(
                    tags::SCHEDULED_PROCEDURE_STEP_START_DATE,
                    VR::DA,
                    "20260301",
                )],
            ),
            query(
                &[],
                &[(
                    tags::SCHEDULED_PROCEDURE_STEP_START_DATE,
                    VR::DA,
                    "20260228-20260302",
                )],
            ),
            query(
                &[],
                &[(
                    tags::SCHEDULED_PROCEDURE_STEP_START_DATE,
                    VR::DA,
                    "-20260301",
                )],
            ),
            query(
                &[],
                &[(
                    tags::SCHEDULED_PROCEDURE_STEP_START_DATE,
                    VR::DA,
                    "20260301-",
                )],
            ),
            query(
                &[],
                &[(
                    tags::SCHEDULED_PROCEDURE_STEP_START_TIME,
                    VR::TM,
                    "0800-1000",
                )],
            ),
            query(&[(tags::STUDY_INSTANCE_UID, VR::UI, "1.2\\2.25.1")], &[]),
        ];
        for (n, q) in yes.iter().enumerate() {
            assert!(matches(&i, q), "query {n} should match");
        }
        let no = [
            query(&[(tags::PATIENT_NAME, VR::PN, "Smith*")], &[]),
            query(&[(tags::PATIENT_ID, VR::LO, "MRN")], &[]),
            query(&[(tags::ACCESSION_NUMBER, VR::SH, "ACC002")], &[]),
            query(&[], &[(tags::MODALITY, VR::CS, "MR")]),
            query(
                &[],
                &[(
                    tags::SCHEDULED_PROCEDURE_STEP_START_DATE,
                    VR::DA,
                    "20260302",
                )],
            ),
            query(
                &[],
                &[(
                    tags::SCHEDULED_PROCEDURE_STEP_START_DATE,
                    VR::DA,
                    "20260302-20260310",
                )],
            ),
            query(
                &[],
                &[(
                    tags::SCHEDULED_PROCEDURE_STEP_START_TIME,
                    VR::TM,
                    "1000-1200",
                )],
            ),
        ];
        for (n, q) in no.iter().enumerate() {
            assert!(!matches(&i, q), "query {n} should not match");
        }
    }

    #[test]
    fn response_has_only_the_requested_attributes() {
        let q = query(
            &[
                (tags::PATIENT_NAME, VR::PN, ""),
                (tags::ACCESSION_NUMBER, VR::SH, ""),
                (tags::ADMISSION_ID, VR::LO, ""),
            ],
            &[(tags::MODALITY, VR::CS, "CT")],
        );
        let r = response(&item(), &q);
        assert_eq!(
            crate::dicom::dimse::text(&r, tags::PATIENT_NAME),
            "Doe^Jane"
        );
        assert_eq!(
            crate::dicom::dimse::text(&r, tags::ACCESSION_NUMBER),
            "ACC001"
        );
        assert!(r.element_opt(tags::ADMISSION_ID).expect("ok").is_some());
        assert!(r.element_opt(tags::PATIENT_ID).expect("ok").is_none());
        let step = &r
            .element(tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE)
            .expect("sq")
            .items()
            .expect("items")[0];
        assert_eq!(crate::dicom::dimse::text(step, tags::MODALITY), "CT");
        assert!(step
            .element_opt(tags::SCHEDULED_STATION_AE_TITLE)
            .expect("ok")
            .is_none());
    }

    #[test]
    fn wildcards() {
        assert!(wildcard("a*c", "abbbc"));
        assert!(wildcard("*", ""));
        assert!(!wildcard("a?c", "ac"));
        assert!(wildcard("a?c", "abc"));
    }

    #[test]
    fn study_uids_are_stable_and_valid() {
        let a = study_uid("P1", "F1", "F1");
        assert_eq!(a, study_uid("P1", "F1", "F1"));
        assert_ne!(a, study_uid("P2", "F1", "F1"));
        assert!(a.len() <= 64 && a.starts_with("2.25."));
        assert!(a[5..].chars().all(|c| c.is_ascii_digit()));
    }
}
