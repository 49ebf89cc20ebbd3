//! Canonical appointment -> HL7 v2.5 SIU text (S12 new booking, S13 reschedule, S15 cancel),
//! as sent to a HIS for an online booking taken by Latrexa.
//!
//! [`siu_message`] builds `MSH SCH [NTE] PID RGS [AIS] [AIG] [AIL] [AIP]` with the control id
//! and message time given by the caller (this crate never reads the clock), every value escaped
//! for the standard separators `|^~\&`, and segments terminated by CR. The HIS answers with an
//! ACK whose MSA-2 must equal [`SiuHeader::control_id`]; the caller confirms or rejects the
//! booking from that answer.
//!
//! [`srm_s01_from_siu`] turns such an S12 into `SRM^S01` (request a new booking), for a HIS
//! that gives its own appointment id in the SCH-2 of its `SRR^S01` answer.
//!
//! [`study_available_oru`] writes a `study_available` event (a DICOM study received in full)
//! as the ORU^R01 an MLLP destination sends for it.
//!
//! Not here: parsing (see [`crate::hl7v2`]) and v2 -> canonical (`from_v2`).

use crate::model::{
    Appointment, AppointmentStatus, Event, EventKind, Gender, Identifier, IdentifierKind, Location,
    Patient, Practitioner, Timestamp,
};

/// Which SIU message to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiuTrigger {
    /// `SIU^S12`: notification of new appointment booking.
    S12,
    /// `SIU^S13`: notification of appointment rescheduling.
    S13,
    /// `SIU^S15`: notification of appointment cancellation.
    S15,
}

impl SiuTrigger {
    /// The trigger event code, e.g. `S12`.
    pub fn code(self) -> &'static str {
        match self {
            Self::S12 => "S12",
            Self::S13 => "S13",
            Self::S15 => "S15",
        }
    }

    fn action(self) -> &'static str {
        match self {
            Self::S12 => "A",
            Self::S13 => "U",
            Self::S15 => "D",
        }
    }
}

/// MSH values chosen by the caller: who sends, who receives, control id and message time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiuHeader {
    /// MSH-3 sending application.
    pub sending_application: String,
    /// MSH-4 sending facility.
    pub sending_facility: String,
    /// MSH-5 receiving application.
    pub receiving_application: String,
    /// MSH-6 receiving facility.
    pub receiving_facility: String,
    /// MSH-7 message time.
    pub message_time: Timestamp,
    /// MSH-10 message control id (unique per message; the ACK's MSA-2 must echo it).
    pub control_id: String,
    /// MSH-11 processing id (`P`, `T` or `D`).
    pub processing_id: String,
}

/// Why an appointment could not be written as SIU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToV2Error {
    /// A field SIU requires is missing from the canonical appointment.
    #[error("missing required field {0}")]
    Missing(&'static str),
    /// The control id is empty or contains a separator or CR.
    #[error("invalid control id")]
    InvalidControlId,
}

/// A `study_available` event as HL7 v2.5.1 ORU^R01, ImagingStudy-shaped (the form MLLP
/// destinations send it in):
///
/// - MSH-3 the modality's AE title, MSH-4 the storage source's, MSH-7 the announcement time,
///   MSH-10 the event's control id;
/// - PID from the study's patient;
/// - OBR-3 and OBR-18 the accession number, OBR-4 `^` the study description, OBR-7 the study
///   start, OBR-22 the announcement time, OBR-24 the modalities (`\E\` between them),
///   OBR-25 `I` (images, no report yet);
/// - OBX `StudyInstanceUID` (ST, the study UID), one `NumberOfSeriesRelatedInstances` (NM)
///   per series with the series UID as OBX-4, `NumberOfStudyRelatedSeries` and
///   `NumberOfStudyRelatedInstances` (NM); every OBX-11 `I`.
///
/// The receiver reads it as a `result_reported` event (status `registered`).
///
/// # Errors
///
/// [`ToV2Error::Missing`] for an event of another kind or without its study;
/// [`ToV2Error::InvalidControlId`] for a control id with a separator.
pub fn study_available_oru(event: &Event) -> Result<String, ToV2Error> {
    let study = event
        .imaging_study
        .as_ref()
        .filter(|_| event.kind == EventKind::StudyAvailable)
        .ok_or(ToV2Error::Missing("imaging_study"))?;
    let control = &event.source.control_id;
    if control.is_empty() || control.contains(['|', '^', '~', '\\', '&', '\r', '\n']) {
        return Err(ToV2Error::InvalidControlId);
    }
    let now = event
        .source
        .message_time
        .as_ref()
        .map(hl7_timestamp)
        .unwrap_or_default();
    let accession = opt(study.accession_number.as_deref());
    let mut segs = vec![format!(
        "MSH|^~\\&|{}|{}|||{now}||ORU^R01^ORU_R01|{control}|P|2.5.1||||||UNICODE UTF-8",
        opt(event.source.sending_application.as_deref()),
        opt(event.source.receiving_application.as_deref()),
    )];
    segs.push(match &event.patient {
        Some(p) => pid(p),
        None => "PID|1".into(),
    });
    let mut obr = vec![String::new(); 25];
    obr[0] = "1".into();
    obr[2] = accession.clone();
    obr[3] = study
        .description
        .as_deref()
        .map(|d| format!("^{}", escape(d)))
        .unwrap_or_default();
    obr[6] = study
        .started
        .as_ref()
        .map(hl7_timestamp)
        .unwrap_or_default();
    obr[17] = accession;
    obr[21] = now.clone();
    obr[23] = study
        .modalities
        .iter()
        .map(|m| escape(m))
        .collect::<Vec<_>>()
        .join("\\E\\");
    obr[24] = "I".into();
    segs.push(segment("OBR", &obr));
    segs.push(format!(
        "OBX|1|ST|StudyInstanceUID^Study Instance UID^DCM||{}||||||I",
        escape(&study.study_instance_uid)
    ));
    let mut n = 2;
    for s in &study.series {
        segs.push(format!(
            "OBX|{n}|NM|NumberOfSeriesRelatedInstances^Series instances^DCM|{}|{}||||||I",
            escape(&s.uid),
            s.number_of_instances
        ));
        n += 1;
    }
    segs.push(format!(
        "OBX|{n}|NM|NumberOfStudyRelatedSeries^Study series^DCM||{}||||||I",
        study.number_of_series
    ));
    segs.push(format!(
        "OBX|{}|NM|NumberOfStudyRelatedInstances^Study instances^DCM||{}||||||I",
        n + 1,
        study.number_of_instances
    ));
    let mut out = segs.join("\r");
    out.push('\r');
    Ok(out)
}

/// Escapes a value for a field, component or subcomponent with the standard encoding
/// characters (see [`crate::hl7v2::escape::encode`]).
fn escape(value: &str) -> String {
    crate::hl7v2::escape::encode(value, &hl7_parser::message::Separators::default()).into_owned()
}

/// HL7 DTM text of a timestamp at its precision (see [`crate::hl7v2::datetime::format`]).
fn hl7_timestamp(ts: &Timestamp) -> String {
    crate::hl7v2::datetime::format(ts)
}

/// Joins already-escaped components with `^`, dropping trailing empty ones.
fn comps(parts: &[String]) -> String {
    let last = parts
        .iter()
        .rposition(|p| !p.is_empty())
        .map_or(0, |i| i + 1);
    parts[..last].join("^")
}

fn opt(v: Option<&str>) -> String {
    v.map(escape).unwrap_or_default()
}

/// Builds a segment from already-escaped fields, dropping trailing empty fields.
fn segment(id: &str, fields: &[String]) -> String {
    let last = fields
        .iter()
        .rposition(|f| !f.is_empty())
        .map_or(0, |i| i + 1);
    let mut out = id.to_owned();
    for f in &fields[..last] {
        out.push('|');
        out.push_str(f);
    }
    out
}

/// HL7 table 0278 filler status code of a canonical status.
pub fn filler_status(status: AppointmentStatus) -> &'static str {
    match status {
        AppointmentStatus::Pending => "Pending",
        AppointmentStatus::Waitlisted => "Waitlist",
        AppointmentStatus::Booked => "Booked",
        AppointmentStatus::Arrived => "Started",
        AppointmentStatus::Completed => "Complete",
        AppointmentStatus::Cancelled => "Cancelled",
        AppointmentStatus::NoShow => "Noshow",
        AppointmentStatus::EnteredInError => "Deleted",
        AppointmentStatus::Blocked => "Blocked",
    }
}

fn identifier_type(id: &Identifier) -> &str {
    if let Some(t) = id.type_code.as_deref() {
        return t;
    }
    match id.kind {
        IdentifierKind::Mrn => "MR",
        IdentifierKind::PatientNumber => "PI",
        IdentifierKind::NationalId => "NI",
        IdentifierKind::Passport => "PPN",
        IdentifierKind::AccountNumber => "AN",
        IdentifierKind::Other => "",
    }
}

fn cx(id: &Identifier) -> String {
    comps(&[
        escape(&id.value),
        String::new(),
        String::new(),
        opt(id.assigning_authority.as_deref()),
        escape(identifier_type(id)),
    ])
}

fn gender_code(g: Gender) -> &'static str {
    match g {
        Gender::Male => "M",
        Gender::Female => "F",
        Gender::Other => "O",
        Gender::Unknown => "U",
        Gender::Ambiguous => "A",
        Gender::NotApplicable => "N",
    }
}

fn pid(patient: &Patient) -> String {
    let ids: Vec<String> = patient.identifiers.iter().map(cx).collect();
    let n = &patient.name;
    let name = comps(&[
        opt(n.family.as_deref()),
        opt(n.given.as_deref()),
        opt(n.middle.as_deref()),
        opt(n.suffix.as_deref()),
        opt(n.prefix.as_deref()),
    ]);
    let mut phones: Vec<String> = patient
        .phones
        .iter()
        .map(|p| {
            let (use_code, equipment) = match p.use_ {
                Some(crate::model::ContactUse::Mobile) => ("PRN", "CP"),
                Some(crate::model::ContactUse::Work) => ("WPN", "PH"),
                Some(crate::model::ContactUse::Emergency) => ("EMR", "PH"),
                _ => ("PRN", "PH"),
            };
            comps(&[escape(&p.number), use_code.into(), equipment.into()])
        })
        .collect();
    for email in patient.email.iter().chain(&patient.other_emails) {
        phones.push(comps(&[
            String::new(),
            "NET".into(),
            "Internet".into(),
            escape(email),
        ]));
    }
    let address = patient
        .address
        .as_ref()
        .map(|a| {
            comps(&[
                opt(a.lines.first().map(String::as_str)),
                opt(a.lines.get(1).map(String::as_str)),
                opt(a.city.as_deref()),
                opt(a.state.as_deref()),
                opt(a.postal_code.as_deref()),
                opt(a.country.as_deref()),
            ])
        })
        .unwrap_or_default();
    let mut f = vec![String::new(); 28];
    f[0] = "1".into();
    f[2] = ids.join("~");
    f[4] = name;
    f[6] = patient
        .birth_date
        .as_ref()
        .map(hl7_timestamp)
        .unwrap_or_default();
    f[7] = patient.gender.map(gender_code).unwrap_or_default().into();
    f[10] = address;
    f[12] = phones.join("~");
    f[27] = patient
        .nationality
        .as_ref()
        .map(|c| comps(&[opt(c.code.as_deref()), opt(c.text.as_deref())]))
        .unwrap_or_default();
    segment("PID", &f)
}

fn xcn(p: &Practitioner) -> String {
    comps(&[
        opt(p.code.as_deref().or(p.licence_number.as_deref())),
        opt(p.name.family.as_deref()),
        opt(p.name.given.as_deref()),
        opt(p.name.middle.as_deref()),
        opt(p.name.suffix.as_deref()),
        opt(p.name.prefix.as_deref()),
    ])
}

fn pl(l: &Location) -> String {
    // PL: point of care ^ room ^ bed ^ facility ^ status ^ type ^ building ^ floor ^ description
    comps(&[
        opt(l.code.as_deref()),
        opt(l.room.as_deref()),
        opt(l.bed.as_deref()),
        opt(l.branch.as_deref()),
        String::new(),
        String::new(),
        opt(l.building.as_deref()),
        opt(l.floor.as_deref()),
        opt(l.name.as_deref()),
    ])
}

/// Builds the SIU message for an appointment and its patient.
///
/// SCH-1 is the placer id (our id, e.g. the Latrexa booking id), SCH-2 the filler (HIS) id when
/// known; SCH-11 carries duration, start and end; SCH-25 the filler status (table 0278).
///
/// # Errors
/// [`ToV2Error::Missing`] without an appointment start or any patient identifier;
/// [`ToV2Error::InvalidControlId`] for an unusable control id.
pub fn siu_message(
    trigger: SiuTrigger,
    header: &SiuHeader,
    appointment: &Appointment,
    patient: &Patient,
) -> Result<String, ToV2Error> {
    if header.control_id.is_empty()
        || header
            .control_id
            .contains(['|', '^', '~', '\\', '&', '\r', '\n'])
    {
        return Err(ToV2Error::InvalidControlId);
    }
    let start = appointment
        .start
        .as_ref()
        .ok_or(ToV2Error::Missing("appointment.start"))?;
    if patient.identifiers.is_empty() {
        return Err(ToV2Error::Missing("patient.identifiers"));
    }
    let mut segments = Vec::new();
    segments.push(segment(
        "MSH",
        &[
            "^~\\&".into(),
            escape(&header.sending_application),
            escape(&header.sending_facility),
            escape(&header.receiving_application),
            escape(&header.receiving_facility),
            hl7_timestamp(&header.message_time),
            String::new(),
            format!("SIU^{}^SIU_S12", trigger.code()),
            header.control_id.clone(),
            escape(&header.processing_id),
            "2.5".into(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            "UNICODE UTF-8".into(),
        ],
    ));
    let duration = appointment.duration_minutes.or_else(|| {
        let end = appointment.end.as_ref()?;
        let minutes = (end.naive_date_time() - start.naive_date_time()).num_minutes();
        u32::try_from(minutes).ok()
    });
    let coded = |c: Option<&crate::model::Coded>| {
        c.map(|c| {
            comps(&[
                opt(c.code.as_deref()),
                opt(c.text.as_deref()),
                opt(c.system.as_deref()),
            ])
        })
        .unwrap_or_default()
    };
    let timing = comps(&[
        String::new(),
        String::new(),
        duration.map(|d| format!("M{d}")).unwrap_or_default(),
        hl7_timestamp(start),
        appointment
            .end
            .as_ref()
            .map(hl7_timestamp)
            .unwrap_or_default(),
    ]);
    let mut sch = vec![String::new(); 25];
    sch[0] = opt(appointment
        .placer_id
        .as_deref()
        .or(appointment.remote_id.as_deref()));
    sch[1] = opt(appointment.filler_id.as_deref());
    sch[5] = coded(appointment.event_reason.as_ref());
    sch[6] = coded(appointment.reason.as_ref());
    sch[7] = coded(appointment.appointment_type.as_ref());
    sch[8] = duration.map(|d| d.to_string()).unwrap_or_default();
    sch[9] = if duration.is_some() {
        "min".into()
    } else {
        String::new()
    };
    sch[10] = timing;
    sch[24] = filler_status(match trigger {
        SiuTrigger::S15 => AppointmentStatus::Cancelled,
        _ => appointment.status,
    })
    .into();
    segments.push(segment("SCH", &sch));
    if let Some(notes) = appointment.notes.as_deref().filter(|n| !n.is_empty()) {
        segments.push(segment("NTE", &["1".into(), String::new(), escape(notes)]));
    }
    segments.push(pid(patient));
    segments.push(segment("RGS", &["1".into(), trigger.action().into()]));
    let action = trigger.action().to_owned();
    if let Some(service) = appointment.service.as_ref() {
        segments.push(segment(
            "AIS",
            &["1".into(), action.clone(), coded(Some(service))],
        ));
    }
    if let Some(doctor) = appointment.practitioner.as_ref().filter(|p| !p.is_empty()) {
        let resource = comps(&[
            opt(doctor.code.as_deref().or(doctor.licence_number.as_deref())),
            escape(&doctor.name.full()),
        ]);
        segments.push(segment(
            "AIG",
            &["1".into(), action.clone(), resource, "D^Doctor".into()],
        ));
    }
    if let Some(location) = appointment.location.as_ref().filter(|l| !l.is_empty()) {
        segments.push(segment(
            "AIL",
            &["1".into(), action.clone(), pl(location), "C^Clinic".into()],
        ));
    }
    if let Some(doctor) = appointment.practitioner.as_ref().filter(|p| !p.is_empty()) {
        segments.push(segment(
            "AIP",
            &["1".into(), action, xcn(doctor), "D^Doctor".into()],
        ));
    }
    let mut text = segments.join("\r");
    text.push('\r');
    Ok(text)
}

/// The segments an SRM^S01 carries after its ARQ (HL7 v2.5 SRM_S01: NTE, the patient group
/// PID PV1 PV2 OBX DG1, the resource group RGS AIS AIG AIL AIP).
const SRM_SEGMENTS: [&str; 11] = [
    "NTE", "PID", "PV1", "PV2", "OBX", "DG1", "RGS", "AIS", "AIG", "AIL", "AIP",
];

/// `SRM^S01` (request new appointment booking) for the booking an `SIU^S12` text of
/// [`siu_message`] notifies: the same MSH but for its type, the SCH as ARQ (ARQ-1 to ARQ-10
/// are SCH-1 to SCH-10; ARQ-11, the requested start date/time range, is the start and end of
/// SCH-11), and the patient and resource segments unchanged. The HIS answers SRR^S01 whose
/// SCH-2 is its own (filler) appointment id.
pub fn srm_s01_from_siu(siu: &str) -> String {
    let mut out = String::with_capacity(siu.len() + 16);
    for seg in siu.split(['\r', '\n']).filter(|s| !s.is_empty()) {
        let fields: Vec<&str> = seg.split('|').collect();
        match fields[0] {
            "MSH" => {
                let mut f = fields.clone();
                if f.len() > 8 {
                    f[8] = "SRM^S01^SRM_S01";
                }
                out.push_str(&f.join("|"));
            }
            "SCH" => {
                let mut arq: Vec<String> = vec!["ARQ".into()];
                arq.extend((1..=10).map(|i| fields.get(i).copied().unwrap_or("").to_owned()));
                let tq: Vec<&str> = fields.get(11).copied().unwrap_or("").split('^').collect();
                let start = tq.get(3).copied().unwrap_or("");
                let end = tq.get(4).copied().unwrap_or("");
                arq.push(if end.is_empty() {
                    start.to_owned()
                } else {
                    format!("{start}^{end}")
                });
                while arq.last().is_some_and(String::is_empty) {
                    arq.pop();
                }
                out.push_str(&arq.join("|"));
            }
            id if SRM_SEGMENTS.contains(&id) => out.push_str(seg),
            _ => continue,
        }
        out.push('\r');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Coded, HumanName, Identifier, Practitioner};

    fn header() -> SiuHeader {
        SiuHeader {
            sending_application: "SWITCHBOARD".into(),
            sending_facility: "CLOUD".into(),
            receiving_application: "DEMOHIS".into(),
            receiving_facility: "ALH-main".into(),
            message_time: Timestamp::parse_iso("2026-06-01T09:15:00+03:00").expect("valid"),
            control_id: "SB000123".into(),
            processing_id: "P".into(),
        }
    }

    fn appointment() -> (Appointment, Patient) {
        let patient = Patient {
            identifiers: vec![Identifier {
                value: "P-10928".into(),
                kind: IdentifierKind::Mrn,
                type_code: None,
                assigning_authority: Some("DEMOHIS".into()),
            }],
            name: HumanName {
                family: Some("Khalid|Al^Test".into()),
                given: Some("Yousef".into()),
                ..HumanName::default()
            },
            birth_date: Some(Timestamp::date(1994, 9, 20).expect("valid")),
            gender: Some(Gender::Male),
            ..Patient::default()
        };
        let appointment = Appointment {
            resources: Vec::new(),
            services: Vec::new(),
            personnel: Vec::new(),
            locations: Vec::new(),
            roles: Vec::new(),
            placer_id: Some("LTX-881".into()),
            filler_id: None,
            remote_id: None,
            patient: patient.identifiers.first().cloned(),
            practitioner: Some(Practitioner {
                code: Some("DOC-SARAH-04".into()),
                name: HumanName {
                    family: Some("Al-Otaibi".into()),
                    given: Some("Sarah".into()),
                    ..HumanName::default()
                },
                ..Practitioner::default()
            }),
            location: Some(Location {
                code: Some("CLN-PED-01".into()),
                ..Location::default()
            }),
            service: Some(Coded {
                code: Some("CONS".into()),
                text: Some("Consultation".into()),
                system: None,
            }),
            appointment_type: None,
            start: Some(Timestamp::parse_iso("2026-06-15T10:30:00").expect("valid")),
            end: Some(Timestamp::parse_iso("2026-06-15T11:00:00").expect("valid")),
            duration_minutes: None,
            status: AppointmentStatus::Booked,
            reason: None,
            event_reason: None,
            notes: Some("line one\rline two & more".into()),
        };
        (appointment, patient)
    }

    #[test]
    fn srm_s01_requests_the_booking_the_s12_notifies() {
        let (a, p) = appointment();
        let siu = siu_message(SiuTrigger::S12, &header(), &a, &p).expect("builds");
        let srm = srm_s01_from_siu(&siu);
        let segments: Vec<&str> = srm.trim_end_matches('\r').split('\r').collect();
        let ids: Vec<&str> = segments.iter().map(|s| &s[..3]).collect();
        assert_eq!(
            ids,
            ["MSH", "ARQ", "NTE", "PID", "RGS", "AIS", "AIG", "AIL", "AIP"]
        );
        assert!(segments[0].contains("|SRM^S01^SRM_S01|SB000123|P|2.5"));
        assert_eq!(
            segments[1],
            "ARQ|LTX-881||||||||30|min|20260615103000^20260615110000"
        );
        let parsed = hl7_parser::Message::parse(&srm).expect("hl7-parser reads it");
        let arq = parsed.segment("ARQ").expect("ARQ present");
        assert_eq!(arq.field(1).expect("ARQ-1").raw_value(), "LTX-881");
    }

    #[test]
    fn s12_has_header_segments_and_escaped_values() {
        let (a, p) = appointment();
        let text = siu_message(SiuTrigger::S12, &header(), &a, &p).expect("builds");
        let segments: Vec<&str> = text.trim_end_matches('\r').split('\r').collect();
        let ids: Vec<&str> = segments.iter().map(|s| &s[..3]).collect();
        assert_eq!(
            ids,
            ["MSH", "SCH", "NTE", "PID", "RGS", "AIS", "AIG", "AIL", "AIP"]
        );
        assert_eq!(
            segments[0],
            "MSH|^~\\&|SWITCHBOARD|CLOUD|DEMOHIS|ALH-main|20260601091500+0300||SIU^S12^SIU_S12|SB000123|P|2.5||||||UNICODE UTF-8"
        );
        assert_eq!(
            segments[1],
            "SCH|LTX-881||||||||30|min|^^M30^20260615103000^20260615110000||||||||||||||Booked"
        );
        assert_eq!(segments[2], "NTE|1||line one\\X0D\\line two \\T\\ more");
        assert!(segments[3]
            .starts_with("PID|1||P-10928^^^DEMOHIS^MR||Khalid\\F\\Al\\S\\Test^Yousef||19940920|M"));
        assert_eq!(segments[6], "AIG|1|A|DOC-SARAH-04^Sarah Al-Otaibi|D^Doctor");
        assert_eq!(segments[7], "AIL|1|A|CLN-PED-01|C^Clinic");
        assert_eq!(segments[8], "AIP|1|A|DOC-SARAH-04^Al-Otaibi^Sarah|D^Doctor");
        let parsed = hl7_parser::Message::parse(&text).expect("hl7-parser reads it");
        let sch = parsed.segment("SCH").expect("SCH present");
        assert_eq!(sch.field(25).expect("SCH-25").raw_value(), "Booked");
    }

    #[test]
    fn s15_is_cancelled_and_requires_start_and_control_id() {
        let (a, p) = appointment();
        let text = siu_message(SiuTrigger::S15, &header(), &a, &p).expect("builds");
        assert!(text.contains("SIU^S15^SIU_S12"));
        assert!(text.contains("|Cancelled\r"));
        let mut no_start = a.clone();
        no_start.start = None;
        assert_eq!(
            siu_message(SiuTrigger::S12, &header(), &no_start, &p),
            Err(ToV2Error::Missing("appointment.start"))
        );
        let mut bad = header();
        bad.control_id = "A|B".into();
        assert_eq!(
            siu_message(SiuTrigger::S12, &bad, &a, &p),
            Err(ToV2Error::InvalidControlId)
        );
    }
}
