//! DICOM -> canonical: the "study available" document a `dicom_store` source stores once a
//! study is complete (format `dicom`, type `study_available`), and the `study_available`
//! event it stands for.
//!
//! The document holds DICOM-formatted values as the instances carried them (PN names, DA
//! dates, TM times); [`study_available`] reads them into the model:
//!
//! | document | event |
//! |---|---|
//! | `patient_id`, `issuer_of_patient_id` | `patient.identifiers[0]` (kind `mrn`, the assigning authority) |
//! | `patient_name` (`Family^Given^Middle^Prefix^Suffix`) | `patient.name` |
//! | `birth_date`, `sex` (`M`, `F`, `O`) | `patient.birth_date`, `patient.gender` |
//! | `study_instance_uid`, `accession_number`, `description` | `imaging_study` |
//! | `study_date` + `study_time` | `imaging_study.started` (local time, as sent) |
//! | `series` (uid, modality, instances) | `imaging_study.series`, `modalities`, the counts |
//! | `calling_ae_title`, `called_ae_title` | `source.sending_application`, `receiving_application`, and the study's AE titles |
//! | `announced_at` (ISO 8601) | `source.message_time` |

use crate::model::{
    stable_id, Event, EventKind, Gender, HumanName, Identifier, IdentifierKind, ImagingSeries,
    ImagingStudy, Patient, Precision, Source, Timestamp,
};
use serde::{Deserialize, Serialize};

/// The message type of the stored document.
pub const STUDY_AVAILABLE: &str = "study_available";

/// What a storage source knows of a complete study: the stored body of a `study_available`
/// message (JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StudyDocument {
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Patient ID (0010,0020).
    #[serde(default)]
    pub patient_id: String,
    /// Issuer of Patient ID (0010,0021).
    #[serde(default)]
    pub issuer_of_patient_id: String,
    /// Patient's Name, DICOM PN.
    #[serde(default)]
    pub patient_name: String,
    /// Patient's Birth Date, `YYYYMMDD`.
    #[serde(default)]
    pub birth_date: String,
    /// Patient's Sex.
    #[serde(default)]
    pub sex: String,
    /// Accession Number.
    #[serde(default)]
    pub accession_number: String,
    /// Study Date, `YYYYMMDD`.
    #[serde(default)]
    pub study_date: String,
    /// Study Time, `HHMMSS[.F]`.
    #[serde(default)]
    pub study_time: String,
    /// Study Description.
    #[serde(default)]
    pub description: String,
    /// The series received, in Series Instance UID order.
    #[serde(default)]
    pub series: Vec<SeriesCount>,
    /// The AE title that sent the instances.
    #[serde(default)]
    pub calling_ae_title: String,
    /// The storage source's AE title.
    #[serde(default)]
    pub called_ae_title: String,
    /// When the study was announced, ISO 8601 in UTC.
    #[serde(default)]
    pub announced_at: String,
}

/// One series of a [`StudyDocument`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesCount {
    /// Series Instance UID.
    pub uid: String,
    /// Modality of its first instance.
    #[serde(default)]
    pub modality: String,
    /// Instances received.
    pub instances: u32,
}

impl StudyDocument {
    /// Instances in all series.
    pub fn instances(&self) -> u32 {
        self.series.iter().map(|s| s.instances).sum()
    }
}

/// A DICOM DA (`YYYYMMDD`) and TM (`HH[MM[SS[.F]]]`) as one timestamp without offset;
/// `None` when the date is not one.
pub fn dicom_date_time(date: &str, time: &str) -> Option<Timestamp> {
    let date = date.trim();
    if date.len() != 8 || !date.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let num = |s: &str| s.parse::<u32>().ok();
    let (y, m, d) = (num(&date[..4])?, num(&date[4..6])?, num(&date[6..])?);
    let day = Timestamp::date(y as i32, m as u8, d as u8).ok()?;
    let time = time.trim();
    let whole = time.split('.').next().unwrap_or_default();
    if whole.is_empty() || !whole.chars().all(|c| c.is_ascii_digit()) {
        return Some(day);
    }
    let part = |i: usize| whole.get(i..i + 2).and_then(num);
    let (precision, h, mi, s) = match whole.len() {
        2 => (Precision::Hour, part(0)?, 0, 0),
        4 => (Precision::Minute, part(0)?, part(2)?, 0),
        6 => (Precision::Second, part(0)?, part(2)?, part(4)?),
        _ => return Some(day),
    };
    Some(
        Timestamp::from_parts(
            precision, y as i32, m as u8, d as u8, h as u8, mi as u8, s as u8, 0, 0, None,
        )
        .unwrap_or(day),
    )
}

/// A DICOM PN (its first, alphabetic, group) as a name.
pub fn person_name(pn: &str) -> HumanName {
    let alphabetic = pn.split('=').next().unwrap_or_default();
    let c: Vec<&str> = alphabetic.split('^').collect();
    let get = |i: usize| {
        c.get(i)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    HumanName {
        family: get(0),
        given: get(1),
        middle: get(2),
        prefix: get(3),
        suffix: get(4),
        ..HumanName::default()
    }
}

/// The `study_available` event of a stored document whose control id is `control_id`.
///
/// # Errors
///
/// A sentence naming the field when the document has no study UID.
pub fn study_available(doc: &StudyDocument, control_id: &str) -> Result<Event, String> {
    let uid = doc.study_instance_uid.trim();
    if uid.is_empty() {
        return Err("study_instance_uid: required".into());
    }
    let some = |v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty());
    let kind = EventKind::StudyAvailable;
    let source = Source {
        format: "dicom".into(),
        message_type: STUDY_AVAILABLE.into(),
        control_id: control_id.into(),
        version: None,
        sending_application: some(&doc.calling_ae_title),
        sending_facility: None,
        receiving_application: some(&doc.called_ae_title),
        receiving_facility: None,
        message_time: Timestamp::parse_iso(&doc.announced_at).ok(),
        event_time: None,
    };
    let patient =
        (!doc.patient_id.trim().is_empty() || !doc.patient_name.trim().is_empty()).then(|| {
            Patient {
                identifiers: some(&doc.patient_id)
                    .map(|value| Identifier {
                        value,
                        kind: IdentifierKind::Mrn,
                        type_code: None,
                        assigning_authority: some(&doc.issuer_of_patient_id),
                    })
                    .into_iter()
                    .collect(),
                name: person_name(&doc.patient_name),
                birth_date: dicom_date_time(&doc.birth_date, ""),
                gender: match doc.sex.trim() {
                    "M" => Some(Gender::Male),
                    "F" => Some(Gender::Female),
                    "O" => Some(Gender::Other),
                    _ => None,
                },
                ..Patient::default()
            }
        });
    let mut modalities: Vec<String> = Vec::new();
    for s in &doc.series {
        let m = s.modality.trim();
        if !m.is_empty() && !modalities.iter().any(|x| x == m) {
            modalities.push(m.to_string());
        }
    }
    let study = ImagingStudy {
        study_instance_uid: uid.to_string(),
        accession_number: some(&doc.accession_number),
        description: some(&doc.description),
        started: dicom_date_time(&doc.study_date, &doc.study_time),
        modalities,
        series: doc
            .series
            .iter()
            .map(|s| ImagingSeries {
                uid: s.uid.clone(),
                modality: some(&s.modality),
                number_of_instances: s.instances,
            })
            .collect(),
        number_of_series: u32::try_from(doc.series.len()).unwrap_or(u32::MAX),
        number_of_instances: doc.instances(),
        sender_ae_title: some(&doc.calling_ae_title),
        receiver_ae_title: some(&doc.called_ae_title),
    };
    let id = stable_id(&[
        &source.format,
        source.sending_application.as_deref().unwrap_or(""),
        "",
        &source.control_id,
        kind.as_str(),
    ]);
    Ok(Event {
        patient,
        imaging_study: Some(study),
        ..Event::empty(id, kind, source)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn document() -> StudyDocument {
        StudyDocument {
            study_instance_uid: "1.2.3".into(),
            patient_id: "MRN1".into(),
            patient_name: "Doe^Jane^^Dr".into(),
            birth_date: "19800101".into(),
            sex: "F".into(),
            accession_number: "ACC1".into(),
            study_date: "20260301".into(),
            study_time: "093012.5".into(),
            description: "CT chest".into(),
            series: vec![
                SeriesCount {
                    uid: "1.2.3.1".into(),
                    modality: "CT".into(),
                    instances: 2,
                },
                SeriesCount {
                    uid: "1.2.3.2".into(),
                    modality: "SR".into(),
                    instances: 1,
                },
            ],
            calling_ae_title: "CT01".into(),
            called_ae_title: "SBSTORE".into(),
            announced_at: "2026-03-01T10:00:00Z".into(),
            ..StudyDocument::default()
        }
    }

    #[test]
    fn a_study_document_is_a_study_available_event() {
        let e = study_available(&document(), "STUDY1").expect("maps");
        assert_eq!(e.kind, EventKind::StudyAvailable);
        let s = e.imaging_study.as_ref().expect("study");
        assert_eq!((s.number_of_series, s.number_of_instances), (2, 3), "{s:?}");
        assert_eq!(s.modalities, vec!["CT", "SR"]);
        assert_eq!(
            s.started.map(|t| t.to_iso()).as_deref(),
            Some("2026-03-01T09:30:12")
        );
        let p = e.patient.as_ref().expect("patient");
        assert_eq!(p.identifiers[0].value, "MRN1");
        assert_eq!(p.name.prefix.as_deref(), Some("Dr"));
        assert_eq!(e.partition_key().as_deref(), Some("MRN1"));
        assert!(e
            .business_keys()
            .iter()
            .any(|k| k.value == "ACC1" && k.kind == crate::model::BusinessKeyKind::OrderNumber));
        let json = serde_json::to_value(&e).expect("json");
        assert_eq!(json["kind"], "study_available");
        assert_eq!(json["imaging_study"]["series"][0]["number_of_instances"], 2);
        assert!(study_available(&StudyDocument::default(), "X").is_err());
    }

    #[test]
    fn the_oru_of_a_study_reads_back_as_a_registered_result() {
        let e = study_available(&document(), "STUDY1").expect("maps");
        let text = crate::to_v2::study_available_oru(&e).expect("renders");
        assert!(
            text.starts_with(
                "MSH|^~\\&|CT01|SBSTORE|||20260301100000+0000||ORU^R01^ORU_R01|STUDY1|"
            ),
            "{text}"
        );
        assert!(
            text.contains("\rPID|1||MRN1^^^^MR||Doe^Jane^^^Dr||19800101|F\r"),
            "{text}"
        );
        assert!(text.contains(
            "OBX|2|NM|NumberOfSeriesRelatedInstances^Series instances^DCM|1.2.3.1|2||||||I"
        ));
        assert!(text.contains("NumberOfStudyRelatedSeries^Study series^DCM||2|"));
        assert!(text.contains("NumberOfStudyRelatedInstances^Study instances^DCM||3|"));
        let msg = crate::hl7v2::access::V2Message::parse(&text).expect("parses");
        let crate::Mapped::Event(back) = crate::v2_to_event(&msg).expect("maps") else {
            panic!("an event")
        };
        assert_eq!(back.kind, EventKind::ResultReported);
        let obr: Vec<&str> = text.split('\r').nth(2).expect("OBR").split('|').collect();
        assert_eq!(
            (obr[3], obr[18], obr[24], obr[25]),
            ("ACC1", "ACC1", "CT\\E\\SR", "I")
        );
    }

    #[test]
    fn the_fhir_bundle_of_a_study_holds_its_imaging_study() {
        let e = study_available(&document(), "STUDY1").expect("maps");
        let bundle = crate::fhir::render_bundle(&e, &Default::default())
            .expect("renders")
            .expect("a bundle");
        let json = serde_json::to_value(&bundle.body).expect("json");
        let entries = json["entry"].as_array().expect("entries");
        let study = entries
            .iter()
            .find(|x| x["resource"]["resourceType"] == "ImagingStudy")
            .expect("an ImagingStudy");
        let r = &study["resource"];
        assert_eq!(r["status"], "available");
        assert_eq!(r["identifier"][0]["system"], "urn:dicom:uid");
        assert_eq!(r["identifier"][0]["value"], "urn:oid:1.2.3");
        assert_eq!(r["identifier"][1]["type"]["coding"][0]["code"], "ACSN");
        assert_eq!(r["numberOfSeries"], 2);
        assert_eq!(r["numberOfInstances"], 3);
        assert_eq!(r["series"][0]["uid"], "1.2.3.1");
        assert_eq!(r["series"][0]["modality"]["code"], "CT");
        assert_eq!(r["series"][0]["numberOfInstances"], 2);
        assert_eq!(r["modality"][1]["code"], "SR");
        assert_eq!(r["basedOn"][0]["identifier"]["value"], "ACC1");
        assert!(
            r["subject"]["reference"]
                .as_str()
                .is_some_and(|s| s.starts_with("urn:uuid:")),
            "{r}"
        );
        assert!(study["request"]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("ImagingStudy?identifier=urn:dicom:uid|urn:oid:1.2.3")));
        assert!(entries
            .iter()
            .any(|x| x["resource"]["resourceType"] == "Patient"));
    }
}
