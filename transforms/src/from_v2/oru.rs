//! ORU^R01 to canonical result reports.
//!
//! Each OBR starts a report; the ORC just before it (if any) gives its order numbers and
//! control; OBX segments after it are its observations; an NTE after an OBX is that
//! observation's comment, an NTE after the OBR (before any OBX) a comment on the order.
//!
//! Observation values by OBX-2: `NM` also fills `numeric_value` when OBX-5 parses as a number
//! (a value like `<0.5` sent as NM stays text only); `CE`/`CWE`/`CNE` fill `coded_value` and use
//! the text (else the code) as `value`; `SN` (comparator^num1^separator^num2) is rendered as
//! text (`<0.5`, `1:128`, `2-5`); other types are the decoded text, repetitions joined by
//! newlines (`\.br\` in FT/TX becomes a newline too).
//!
//! Specimens: every SPM of an ORDER_OBSERVATION group (after its OBR, before the next) is a
//! specimen of that report's order (read as the orders read SPM); the OBX of its
//! SPECIMEN_OBSERVATION group stay observations of the report, as the IG gives them no other
//! place.
//!
//! Statuses: OBR-25 (table 0123) and OBX-11 (table 0085) must be known codes when present.
//! Without ORC-5 the order status follows OBR-25: final/corrected → `completed`, preliminary →
//! `in_progress`, cancelled → `cancelled`.

use super::datatypes::UpperCode;
use crate::hl7v2::access::{SegmentRef, V2Message};
use crate::model::{
    Attachment, Event, EventKind, Observation, OrderStatus, Patient, ResultReport, ResultStatus,
};

use super::adt::{encounter_from_pv1_into, patient_from_pid_into};
use super::orders::{order_from_segments, OrderSegments};
use super::{
    collect_practitioners, datatypes, decimal_value, join_lines, new_event, notes, source_from_msh,
    ts, MappingError,
};

/// An OBR with its order segments, then each OBX with the NTEs after it.
type ReportSegments<'s, 'm> = (
    OrderSegments<'s, 'm>,
    Vec<(SegmentRef<'s, 'm>, Vec<SegmentRef<'s, 'm>>)>,
);

/// Maps an ORU^R01.
///
/// # Errors
/// [`MappingError`] without OBR, without order numbers, with an OBX without OBX-3, unknown
/// status codes, or unparsable dates. The patient is optional in ORU^R01.
pub fn event_from_oru(msg: &V2Message<'_>) -> Result<Box<Event>, MappingError> {
    let mut event = new_event(EventKind::ResultReported, source_from_msh(msg)?);
    if msg.segment("PID").is_some() {
        patient_from_pid_into(msg, event.patient.insert(Patient::default()))?;
    }
    encounter_from_pv1_into(msg, &mut event.encounter)?;

    let mut last_orc: Option<SegmentRef<'_, '_>> = None;
    let mut current: Option<ReportSegments<'_, '_>> = None;
    let mut groups = Vec::new();
    let mut roles = super::RoleContext::default();
    for seg in msg.segments() {
        let place = roles.step(seg.name());
        match seg.name() {
            // ORU_R01 from v2.6: ROL after the OBR (and its NTE) is a role of that order; from
            // v2.7 PRT.
            "ROL" | "PRT" if place == super::RolePlace::Order => {
                if let Some((order, _)) = &mut current {
                    order.roles.push(seg);
                }
            }
            "ORC" => last_orc = Some(seg),
            "OBR" => {
                if let Some(done) = current.take() {
                    groups.push(done);
                }
                current = Some((
                    OrderSegments {
                        orc: last_orc.take(),
                        obr: Some(seg),
                        tq1: None,
                        ntes: Vec::new(),
                        specimens: Vec::new(),
                        roles: Vec::new(),
                        ipcs: Vec::new(),
                    },
                    Vec::new(),
                ));
            }
            "TQ1" => {
                if let Some((order, _)) = &mut current {
                    order.tq1.get_or_insert(seg);
                }
            }
            "OBX" => {
                if let Some((_, obxs)) = &mut current {
                    obxs.push((seg, Vec::new()));
                }
            }
            "SPM" => {
                if let Some((order, _)) = &mut current {
                    order.specimens.push(seg);
                }
            }
            "NTE" => match &mut current {
                Some((_, obxs)) if !obxs.is_empty() => {
                    if let Some((_, ntes)) = obxs.last_mut() {
                        ntes.push(seg);
                    }
                }
                Some((order, _)) => order.ntes.push(seg),
                None => {}
            },
            _ => {}
        }
    }
    groups.extend(current);
    if groups.is_empty() {
        return Err(MappingError::Missing {
            path: "OBR".into(),
            reason: "no observation request segment",
        });
    }
    for (order_segs, obxs) in &groups {
        let obr = order_segs.obr.as_ref().ok_or(MappingError::Missing {
            path: "OBR".into(),
            reason: "no observation request segment",
        })?;
        let mut order = order_from_segments(msg, order_segs)?;
        let status = result_status(msg, obr, 25, obr.get(25).text(), true)?;
        // Without ORC-5 the order's state follows its results (OBR-25): a final report
        // completes the order.
        if order_segs.orc.is_none_or(|orc| orc.get(5).is_absent()) {
            order.status = match status {
                Some(ResultStatus::Final | ResultStatus::Corrected) => OrderStatus::Completed,
                Some(ResultStatus::Preliminary) => OrderStatus::InProgress,
                Some(ResultStatus::Cancelled | ResultStatus::EnteredInError) => {
                    OrderStatus::Cancelled
                }
                Some(ResultStatus::Registered) | None => order.status,
            };
        }
        let mut observations = Vec::with_capacity(obxs.len());
        for (obx, ntes) in obxs {
            observations.push(observation(msg, obx, ntes)?);
        }
        event.results.push(ResultReport {
            order,
            status,
            observed_at: ts(msg, obr, 7)?,
            reported_at: ts(msg, obr, 22)?,
            section: obr.get(24).string(),
            observations,
        });
    }
    collect_practitioners(&mut event);
    Ok(event)
}

/// One OBX (with the NTEs after it) as an observation; also read by the ADT mapping.
///
/// # Errors
/// [`MappingError`] without OBX-3, with an unknown OBX-11 or an unparsable OBX-14.
pub(super) fn observation(
    msg: &V2Message<'_>,
    obx: &SegmentRef<'_, '_>,
    ntes: &[SegmentRef<'_, '_>],
) -> Result<Observation, MappingError> {
    let code = datatypes::coded(&obx.field(3)).ok_or_else(|| MappingError::Missing {
        path: msg.field_path(obx, 3),
        reason: "no observation identifier",
    })?;
    let value_type = obx.get(2).upper_string();
    let field = obx.field(5);
    let attachment = match value_type.as_deref() {
        Some("ED") => encapsulated_data(&field.rep(1)),
        Some("RP") => reference_pointer(&field.rep(1)),
        _ => None,
    };
    let (value, numeric_value, coded_value) = match value_type.as_deref() {
        // The value is the attachment; its raw components are not text for a reader.
        Some("ED" | "RP") => (None, None, None),
        Some("CE" | "CWE" | "CNE") => {
            let coded = datatypes::coded(&field);
            (
                coded.as_ref().and_then(|c| c.label().map(str::to_owned)),
                None,
                coded,
            )
        }
        Some("SN") => {
            let rep = field.rep(1).components();
            let mut text = String::new();
            for c in 1..=4 {
                if let Some(part) = rep.get(c).trimmed() {
                    text.push_str(part);
                }
            }
            ((!text.is_empty()).then_some(text), None, None)
        }
        _ => {
            let lines = join_lines(field.reps().map(|r| r.text()));
            let numeric = if value_type.as_deref() == Some("NM") {
                // A non-numeric NM (`<0.5`) stays text: the sender's words are kept, not lost.
                decimal_value(msg, obx, 5, obx.get(5)).ok().flatten()
            } else {
                None
            };
            (lines, numeric, None)
        }
    };
    Ok(Observation {
        code,
        sub_id: obx.get(4).string(),
        value_type,
        value,
        numeric_value,
        coded_value,
        attachment,
        units: datatypes::coded(&obx.field(6)),
        reference_range: obx.get(7).string(),
        abnormal_flags: obx
            .field(8)
            .reps()
            .filter_map(|r| r.get(1).string())
            .collect(),
        status: result_status(msg, obx, 11, obx.get(11).text(), false)?,
        observed_at: ts(msg, obx, 14)?,
        notes: notes(ntes),
    })
}

/// OBR-25 (table 0123, `report = true`) or OBX-11 (table 0085).
fn result_status(
    msg: &V2Message<'_>,
    seg: &SegmentRef<'_, '_>,
    field: usize,
    code: Option<&str>,
    report: bool,
) -> Result<Option<ResultStatus>, MappingError> {
    let Some(code) = code else {
        return Ok(None);
    };
    let status = match (UpperCode::new(code.trim()).as_str(), report) {
        ("O" | "I" | "S", true) | ("I" | "O", false) => ResultStatus::Registered,
        ("P" | "A" | "R", true) | ("P" | "R" | "S", false) => ResultStatus::Preliminary,
        ("F", _) | ("U", false) => ResultStatus::Final,
        ("C", _) | ("M", true) => ResultStatus::Corrected,
        ("X", _) | ("D" | "N", false) => ResultStatus::Cancelled,
        ("W", false) => ResultStatus::EnteredInError,
        _ => {
            return Err(MappingError::UnknownCode {
                path: msg.field_path(seg, field),
                reason: if report {
                    "result status not in HL7 table 0123"
                } else {
                    "observation result status not in HL7 table 0085"
                },
            })
        }
    };
    Ok(Some(status))
}

/// The MIME type of an HL7 type of data (table 0191: `AP` application, `IM` image, `AU`
/// audio, `TEXT`/`TX` text, `MULTIPART`) and subtype (`PDF`, `JPEG`, `HTML`…), as the
/// v2-to-FHIR IG's ED and RP maps put them in `Attachment.contentType`; `None` when the type is
/// not one of those or either part is missing.
fn mime_type(kind: Option<&str>, subtype: Option<&str>) -> Option<String> {
    let top = match kind?.to_ascii_uppercase().as_str() {
        "AP" | "APPLICATION" => "application",
        "IM" | "IMAGE" => "image",
        "AU" | "AUDIO" => "audio",
        "TX" | "TEXT" => "text",
        "MULTIPART" => "multipart",
        "VIDEO" => "video",
        _ => return None,
    };
    let sub = subtype?.trim().to_ascii_lowercase();
    let sub_ok = !sub.is_empty()
        && sub
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-'));
    sub_ok.then(|| format!("{top}/{sub}"))
}

/// ED: ED-2 type of data, ED-3 subtype, ED-4 encoding, ED-5 data. Data encoded `Base64` is
/// kept as it is (FHIR's base64Binary); other encodings (`A` ASCII, `Hex`) are not carried.
fn encapsulated_data(rep: &crate::hl7v2::access::RepRef<'_, '_>) -> Option<Attachment> {
    let parts = rep.components();
    let content_type = mime_type(parts.get(2).text(), parts.get(3).text());
    let base64 = parts
        .get(4)
        .text()
        .is_some_and(|e| e.trim().eq_ignore_ascii_case("base64"));
    let data = parts
        .get(5)
        .string()
        .filter(|_| base64)
        .map(|d| d.split_whitespace().collect::<String>());
    (content_type.is_some() || data.is_some()).then_some(Attachment {
        content_type,
        data,
        url: None,
    })
}

/// RP: RP-1 pointer (the URL), RP-3 type of data, RP-4 subtype.
fn reference_pointer(rep: &crate::hl7v2::access::RepRef<'_, '_>) -> Option<Attachment> {
    let parts = rep.components();
    let url = parts.get(1).string()?;
    Some(Attachment {
        content_type: mime_type(parts.get(3).text(), parts.get(4).text()),
        data: None,
        url: Some(url),
    })
}
