//! Modality Performed Procedure Step (N-CREATE, N-SET) into order status messages.
//!
//! Each state an MPPS reaches becomes one HL7 v2.5.1 ORM^O01 (ORC-1 `SC`) that the channel
//! receives like any other message: stored, mapped to the canonical `order_updated` event
//! (order status `in_progress`, `completed` or `discontinued` from ORC-5 `IP`, `CM`, `DC`)
//! and routed by the channel's routes. The modality is answered with success only once that
//! message and the MPPS instance's state are durable.
//!
//! The ORM: MSH-3 the modality's calling AE title, MSH-4 this provider's AE title, MSH-7 the
//! step's start (in progress) or end time, MSH-10 a hash of the SOP instance UID and the
//! status (so a repeated N-CREATE or N-SET makes the same message, which the store
//! recognises); PID-3 patient id, PID-5 name, PID-7 birth date, PID-8 sex; ORC-2/ORC-3 the
//! placer and filler order numbers of the worklist item with the step's accession number
//! (the accession number when there is none); OBR-4 the procedure, OBR-18 the accession
//! number, OBR-19 the requested procedure id, OBR-20 the scheduled step id, OBR-24 the
//! modality.

use super::dimse::{self, command, status, text, Message};
use super::worklist::DicomState;
use crate::source::{Disposition, Inbound, Payload};
use bytes::Bytes;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// The Modality Performed Procedure Step SOP class.
pub const MPPS: &str = "1.2.840.10008.3.1.2.3.3";

/// What an MPPS instance says, kept between its N-CREATE and its N-SETs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MppsState {
    /// `IN PROGRESS`, `COMPLETED` or `DISCONTINUED`.
    pub status: String,
    /// The modality's calling AE title.
    pub calling_ae: String,
    /// Patient ID.
    pub patient_id: String,
    /// Patient's name (DICOM PN).
    pub patient_name: String,
    /// Birth date `YYYYMMDD`.
    pub birth_date: String,
    /// Sex.
    pub sex: String,
    /// Accession number of the scheduled step.
    pub accession_number: String,
    /// Requested procedure id.
    pub requested_procedure_id: String,
    /// Scheduled procedure step id.
    pub step_id: String,
    /// Study instance UID.
    pub study_instance_uid: String,
    /// Modality.
    pub modality: String,
    /// Procedure step description.
    pub description: String,
    /// Start date and time (`YYYYMMDD`, `HHMMSS`).
    pub start: (String, String),
    /// End date and time, once given.
    pub end: (String, String),
}

/// What handling one MPPS request needs.
pub struct MppsContext<'a> {
    /// The channel's name.
    pub channel: &'a str,
    /// The worklist whose items give the order numbers.
    pub worklist: &'a str,
    /// This provider's AE title.
    pub ae_title: &'a str,
    /// The modality's AE title.
    pub calling: &'a str,
    /// The modality's address.
    pub peer: SocketAddr,
    /// The durable state.
    pub state: &'a dyn DicomState,
    /// Where the status messages go.
    pub out: &'a mpsc::Sender<Inbound>,
}

/// The answer to one N-CREATE or N-SET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The response's command field (N-CREATE-RSP or N-SET-RSP).
    pub field: u16,
    /// The SOP instance UID (made here when an N-CREATE gave none).
    pub uid: String,
    /// The DIMSE status.
    pub status: u16,
    /// Why it failed, for the response's ErrorComment (never patient data).
    pub comment: Option<String>,
}

/// Why a request is refused: a status and its reason.
type Refused = (u16, String);

/// Handles an N-CREATE or N-SET. A request refused because of what the modality sent (a
/// data set that does not parse, a missing or invalid attribute, an unknown or finished
/// step, a duplicate) is stored as a rejected message (format `dicom`, type `N-CREATE` or
/// `N-SET`) with its reason before it is answered.
pub async fn handle(ctx: &MppsContext<'_>, m: &Message, ts: &str) -> Answer {
    let creating = m.field() == command::N_CREATE_RQ;
    let (field, operation) = if creating {
        (command::N_CREATE_RSP, "N-CREATE")
    } else {
        (command::N_SET_RSP, "N-SET")
    };
    let uid = if creating {
        m.text(tags::AFFECTED_SOP_INSTANCE_UID)
    } else {
        m.text(tags::REQUESTED_SOP_INSTANCE_UID)
    };
    let uid = if uid.is_empty() && creating {
        // The SCU may leave the UID to the provider (PS3.4 F.7.2.1.1).
        format!("2.25.{}", rand::random::<u64>())
    } else {
        uid
    };
    let data = m.dataset.as_deref().unwrap_or_default();
    let outcome = match m.dataset.as_deref().map(|d| dimse::read_dataset(d, ts)) {
        Some(Ok(ds)) if creating => create(ctx, &uid, &ds).await,
        Some(Ok(ds)) => set(ctx, &uid, &ds).await,
        Some(Err(e)) => Err(Fault::Peer((
            status::PROCESSING_FAILURE,
            format!("the {operation} data set does not parse: {}", e.detail()),
        ))),
        None if creating => Err(Fault::Peer((
            status::MISSING_ATTRIBUTE,
            "N-CREATE without a data set".into(),
        ))),
        None => Err(Fault::Peer((
            status::PROCESSING_FAILURE,
            "N-SET without a modification list".into(),
        ))),
    };
    let (st, comment) = match outcome {
        Ok(()) => (status::SUCCESS, None),
        Err(Fault::Peer((st, reason))) => {
            warn!(channel = %ctx.channel, peer = %ctx.peer, status = format!("{st:04X}"), reason = %reason, "MPPS {operation} refused; stored as rejected.");
            super::reject(
                ctx.out,
                ctx.peer,
                super::Refusal {
                    operation,
                    uid: &uid,
                    data,
                    reason: &reason,
                },
            )
            .await;
            (st, Some(reason))
        }
        Err(Fault::Ours(reason)) => (status::PROCESSING_FAILURE, Some(reason)),
    };
    Answer {
        field,
        uid,
        status: st,
        comment,
    }
}

/// Why a request failed: the modality's doing (stored as rejected), or ours (a store or
/// channel failure: the modality may try again).
#[derive(Debug)]
enum Fault {
    Peer(Refused),
    Ours(String),
}

fn state_key(uid: &str) -> String {
    uid.to_string()
}

/// The statuses a Performed Procedure Step may have.
const STATES: [&str; 3] = ["IN PROGRESS", "COMPLETED", "DISCONTINUED"];

/// Checks the value of a DA or TM attribute when present: `YYYYMMDD`, `HHMM[SS[.F]]`.
fn check_date_time(ds: &InMemDicomObject) -> Result<(), Fault> {
    let dates = [
        (
            "PerformedProcedureStepStartDate",
            tags::PERFORMED_PROCEDURE_STEP_START_DATE,
        ),
        (
            "PerformedProcedureStepEndDate",
            tags::PERFORMED_PROCEDURE_STEP_END_DATE,
        ),
    ];
    for (name, tag) in dates {
        let v = text(ds, tag);
        let ok = v.is_empty()
            || (v.len() == 8
                && v.chars().all(|c| c.is_ascii_digit())
                && chrono::NaiveDate::parse_from_str(&v, "%Y%m%d").is_ok());
        if !ok {
            return Err(Fault::Peer((
                status::INVALID_ATTRIBUTE_VALUE,
                format!("{name} is not a date (YYYYMMDD)"),
            )));
        }
    }
    let times = [
        (
            "PerformedProcedureStepStartTime",
            tags::PERFORMED_PROCEDURE_STEP_START_TIME,
        ),
        (
            "PerformedProcedureStepEndTime",
            tags::PERFORMED_PROCEDURE_STEP_END_TIME,
        ),
    ];
    for (name, tag) in times {
        let v = text(ds, tag);
        if !v.is_empty() && !is_time(&v) {
            return Err(Fault::Peer((
                status::INVALID_ATTRIBUTE_VALUE,
                format!("{name} is not a time (HHMMSS)"),
            )));
        }
    }
    Ok(())
}

/// A DICOM TM: `HH`, `HHMM`, `HHMMSS` or `HHMMSS.F{1,6}`, in range.
pub fn is_time(v: &str) -> bool {
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    if !whole.chars().all(|c| c.is_ascii_digit())
        || !matches!(whole.len(), 2 | 4 | 6)
        || frac.len() > 6
        || !frac.chars().all(|c| c.is_ascii_digit())
        || (v.contains('.') && (whole.len() != 6 || frac.is_empty()))
    {
        return false;
    }
    let part = |i: usize| whole.get(i..i + 2).and_then(|p| p.parse::<u32>().ok());
    part(0).is_some_and(|h| h < 24)
        && part(2).is_none_or(|m| m < 60)
        && part(4).is_none_or(|s| s < 61)
}

async fn create(ctx: &MppsContext<'_>, uid: &str, ds: &InMemDicomObject) -> Result<(), Fault> {
    match ctx.state.mpps(ctx.channel, &state_key(uid)) {
        Ok(Some(_)) => {
            return Err(Fault::Peer((
                status::DUPLICATE_INSTANCE,
                "an N-CREATE of an MPPS instance that exists".into(),
            )))
        }
        Ok(None) => {}
        Err(e) => {
            warn!(channel = %ctx.channel, error = %e, "MPPS state cannot be read.");
            return Err(Fault::Ours("MPPS state cannot be read".into()));
        }
    }
    // Type 1 for N-CREATE (PS3.4 F.7.2.1): the status, and the scheduled step(s).
    match ds
        .element_opt(tags::PERFORMED_PROCEDURE_STEP_STATUS)
        .ok()
        .flatten()
    {
        None => {
            return Err(Fault::Peer((
                status::MISSING_ATTRIBUTE,
                "PerformedProcedureStepStatus is missing".into(),
            )))
        }
        Some(_) if text(ds, tags::PERFORMED_PROCEDURE_STEP_STATUS).is_empty() => {
            return Err(Fault::Peer((
                status::MISSING_ATTRIBUTE_VALUE,
                "PerformedProcedureStepStatus is empty".into(),
            )))
        }
        Some(_) => {}
    }
    let steps = match ds
        .element_opt(tags::SCHEDULED_STEP_ATTRIBUTES_SEQUENCE)
        .ok()
        .flatten()
    {
        None => {
            return Err(Fault::Peer((
                status::MISSING_ATTRIBUTE,
                "ScheduledStepAttributesSequence is missing".into(),
            )))
        }
        Some(e) => match e.items() {
            Some(items) if !items.is_empty() => items.to_vec(),
            Some(_) => {
                return Err(Fault::Peer((
                    status::MISSING_ATTRIBUTE_VALUE,
                    "ScheduledStepAttributesSequence has no item".into(),
                )))
            }
            None => {
                return Err(Fault::Peer((
                    status::INVALID_ATTRIBUTE_VALUE,
                    "ScheduledStepAttributesSequence is not a sequence".into(),
                )))
            }
        },
    };
    check_date_time(ds)?;
    let step = steps
        .into_iter()
        .next()
        .unwrap_or_else(InMemDicomObject::new_empty);
    let state = MppsState {
        status: text(ds, tags::PERFORMED_PROCEDURE_STEP_STATUS),
        calling_ae: ctx.calling.to_string(),
        patient_id: text(ds, tags::PATIENT_ID),
        patient_name: text(ds, tags::PATIENT_NAME),
        birth_date: text(ds, tags::PATIENT_BIRTH_DATE),
        sex: text(ds, tags::PATIENT_SEX),
        accession_number: text(&step, tags::ACCESSION_NUMBER),
        requested_procedure_id: text(&step, tags::REQUESTED_PROCEDURE_ID),
        step_id: text(&step, tags::SCHEDULED_PROCEDURE_STEP_ID),
        study_instance_uid: text(&step, tags::STUDY_INSTANCE_UID),
        modality: text(ds, tags::MODALITY),
        description: text(ds, tags::PERFORMED_PROCEDURE_STEP_DESCRIPTION),
        start: (
            text(ds, tags::PERFORMED_PROCEDURE_STEP_START_DATE),
            text(ds, tags::PERFORMED_PROCEDURE_STEP_START_TIME),
        ),
        end: (
            text(ds, tags::PERFORMED_PROCEDURE_STEP_END_DATE),
            text(ds, tags::PERFORMED_PROCEDURE_STEP_END_TIME),
        ),
    };
    // N-CREATE must be IN PROGRESS (PS3.4 F.7.2.1.2).
    if state.status != "IN PROGRESS" {
        return Err(Fault::Peer((
            status::INVALID_ATTRIBUTE_VALUE,
            if STATES.contains(&state.status.as_str()) {
                "an N-CREATE must say IN PROGRESS".into()
            } else {
                "PerformedProcedureStepStatus is not IN PROGRESS, COMPLETED or DISCONTINUED".into()
            },
        )));
    }
    record(ctx, uid, &state).await
}

async fn set(ctx: &MppsContext<'_>, uid: &str, ds: &InMemDicomObject) -> Result<(), Fault> {
    let mut state: MppsState = match ctx.state.mpps(ctx.channel, &state_key(uid)) {
        Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(_) => return Err(Fault::Ours("MPPS state cannot be read".into())),
        },
        Ok(None) => {
            return Err(Fault::Peer((
                status::NO_SUCH_INSTANCE,
                "an N-SET of an MPPS instance never created".into(),
            )))
        }
        Err(e) => {
            warn!(channel = %ctx.channel, error = %e, "MPPS state cannot be read.");
            return Err(Fault::Ours("MPPS state cannot be read".into()));
        }
    };
    let new_status = text(ds, tags::PERFORMED_PROCEDURE_STEP_STATUS);
    if !new_status.is_empty() && !STATES.contains(&new_status.as_str()) {
        return Err(Fault::Peer((
            status::INVALID_ATTRIBUTE_VALUE,
            "PerformedProcedureStepStatus is not IN PROGRESS, COMPLETED or DISCONTINUED".into(),
        )));
    }
    check_date_time(ds)?;
    let repeat_of_final = state.status != "IN PROGRESS";
    if repeat_of_final && !new_status.is_empty() && new_status != state.status {
        // A completed or discontinued step may no longer change (PS3.4 F.7.2.2.2).
        return Err(Fault::Peer((
            status::PROCESSING_FAILURE,
            "the step is completed or discontinued and may no longer change".into(),
        )));
    }
    if !new_status.is_empty() {
        state.status = new_status;
    }
    let end = (
        text(ds, tags::PERFORMED_PROCEDURE_STEP_END_DATE),
        text(ds, tags::PERFORMED_PROCEDURE_STEP_END_TIME),
    );
    if !end.0.is_empty() {
        state.end = end;
    }
    let modality = text(ds, tags::MODALITY);
    if !modality.is_empty() {
        state.modality = modality;
    }
    if state.status == "IN PROGRESS" {
        // No new status: only the state changes.
        return save(ctx, uid, &state).await;
    }
    record(ctx, uid, &state).await
}

/// Sends the status message, then stores the state; success only when both are durable.
async fn record(ctx: &MppsContext<'_>, uid: &str, state: &MppsState) -> Result<(), Fault> {
    let orders = ctx
        .state
        .items(ctx.worklist)
        .ok()
        .and_then(|items| {
            items
                .into_iter()
                .find(|i| i.accession_number == state.accession_number)
        })
        .map(|i| (i.placer_number, i.filler_number));
    let message = orm(state, uid, ctx.ae_title, orders);
    let (tx, rx) = oneshot::channel();
    let inbound = Inbound {
        payload: Payload::Hl7v2(Bytes::from(message.into_bytes())),
        peer: ctx.peer,
        received_at: SystemTime::now(),
        reply: tx,
    };
    if ctx.out.send(inbound).await.is_err() {
        return Err(Fault::Ours("the channel is stopping".into()));
    }
    match tokio::time::timeout(Duration::from_secs(30), rx).await {
        Ok(Ok(reply)) if reply.disposition == Disposition::Accepted => {}
        Ok(Ok(reply)) => {
            warn!(channel = %ctx.channel, disposition = ?reply.disposition, "MPPS status message not accepted.");
            // A rejected status message is stored with its reason by the channel.
            return Err(Fault::Ours(match reply.disposition {
                Disposition::Rejected(r) => format!("status message rejected: {r}"),
                Disposition::Retry(r) => format!("status message not stored: {r}"),
                Disposition::Accepted => String::new(),
            }));
        }
        _ => return Err(Fault::Ours("status message not stored in time".into())),
    }
    save(ctx, uid, state).await
}

async fn save(ctx: &MppsContext<'_>, uid: &str, state: &MppsState) -> Result<(), Fault> {
    let Ok(bytes) = serde_json::to_vec(state) else {
        return Err(Fault::Ours("MPPS state cannot be encoded".into()));
    };
    if let Err(e) = ctx.state.put_mpps(ctx.channel, &state_key(uid), &bytes) {
        warn!(channel = %ctx.channel, error = %e, "MPPS state cannot be written.");
        return Err(Fault::Ours("MPPS state cannot be written".into()));
    }
    match ctx.state.commit().await {
        Ok(()) => Ok(()),
        Err(e) => {
            warn!(channel = %ctx.channel, error = %e, "MPPS state cannot be committed.");
            Err(Fault::Ours("MPPS state cannot be committed".into()))
        }
    }
}

/// HL7 v2 escaping of a value for `|^~\&`.
fn esc(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\E\\"),
            '|' => out.push_str("\\F\\"),
            '^' => out.push_str("\\S\\"),
            '~' => out.push_str("\\R\\"),
            '&' => out.push_str("\\T\\"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A DICOM PN as HL7 XPN: the components line up (`Family^Given^Middle^Suffix^Prefix` in
/// HL7 vs `Family^Given^Middle^Prefix^Suffix` in DICOM); only the first name group.
fn xpn(pn: &str) -> String {
    let alphabetic = pn.split('=').next().unwrap_or_default();
    let c: Vec<&str> = alphabetic.split('^').collect();
    let get = |i: usize| esc(c.get(i).copied().unwrap_or_default());
    let parts = [get(0), get(1), get(2), get(4), get(3)];
    let mut v: Vec<String> = parts.to_vec();
    while v.last().is_some_and(String::is_empty) {
        v.pop();
    }
    v.join("^")
}

/// The ORM^O01 status message of an MPPS state (see the module documentation).
pub fn orm(s: &MppsState, uid: &str, ae_title: &str, orders: Option<(String, String)>) -> String {
    let (orc5, when) = match s.status.as_str() {
        "COMPLETED" => ("CM", &s.end),
        "DISCONTINUED" => ("DC", &s.end),
        _ => ("IP", &s.start),
    };
    let when = if when.0.is_empty() { &s.start } else { when };
    let ts = format!("{}{}", when.0, when.1.split('.').next().unwrap_or_default());
    let control = format!(
        "MPPS{}",
        &transforms::model::stable_id(&["mpps", uid, &s.status])[..16]
    );
    let (placer, filler) = orders
        .filter(|(p, f)| !p.is_empty() || !f.is_empty())
        .unwrap_or_else(|| (String::new(), s.accession_number.clone()));
    let sex = match s.sex.as_str() {
        "M" | "F" | "O" => s.sex.as_str(),
        _ => "",
    };
    let procedure = if s.description.is_empty() {
        String::new()
    } else {
        format!("^{}", esc(&s.description))
    };
    let segments = [
        format!(
            "MSH|^~\\&|{}|{}|||{ts}||ORM^O01^ORM_O01|{control}|P|2.5.1||||||UNICODE UTF-8",
            esc(&s.calling_ae),
            esc(ae_title),
        ),
        format!(
            "PID|1||{}||{}||{}|{sex}",
            esc(&s.patient_id),
            xpn(&s.patient_name),
            esc(&s.birth_date),
        ),
        format!("ORC|SC|{}|{}||{orc5}||||{ts}", esc(&placer), esc(&filler)),
        format!(
            "OBR|1|{}|{}|{procedure}|||{}|||||||||||{}|{}|{}||||{}",
            esc(&placer),
            esc(&filler),
            ts,
            esc(&s.accession_number),
            esc(&s.requested_procedure_id),
            esc(&s.step_id),
            esc(&s.modality),
        ),
    ];
    let mut out = segments.join("\r");
    out.push('\r');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_step_is_an_orm_status_with_the_accession_number() {
        let s = MppsState {
            status: "COMPLETED".into(),
            calling_ae: "CT01".into(),
            patient_id: "MRN1".into(),
            patient_name: "Doe^Jane".into(),
            birth_date: "19800101".into(),
            sex: "F".into(),
            accession_number: "ACC1".into(),
            requested_procedure_id: "RP1".into(),
            step_id: "SPS1".into(),
            modality: "CT".into(),
            start: ("20260301".into(), "093000".into()),
            end: ("20260301".into(), "094500.123".into()),
            ..MppsState::default()
        };
        let text = orm(
            &s,
            "1.2.3",
            "SWITCHBOARD",
            Some(("P1".into(), "ACC1".into())),
        );
        let segs: Vec<&str> = text.split('\r').collect();
        assert!(segs[0].starts_with("MSH|^~\\&|CT01|SWITCHBOARD|||20260301094500||ORM^O01"));
        assert_eq!(segs[2], "ORC|SC|P1|ACC1||CM||||20260301094500");
        let obr: Vec<&str> = segs[3].split('|').collect();
        assert_eq!(
            (obr[18], obr[19], obr[20], obr[24]),
            ("ACC1", "RP1", "SPS1", "CT")
        );
        let again = orm(
            &s,
            "1.2.3",
            "SWITCHBOARD",
            Some(("P1".into(), "ACC1".into())),
        );
        assert_eq!(text, again, "the same state makes the same message");
        let msg = transforms::hl7v2::access::V2Message::parse(&text).expect("parses");
        let transforms::Mapped::Event(e) = transforms::v2_to_event(&msg).expect("maps") else {
            panic!("an event");
        };
        assert_eq!(e.kind, transforms::model::EventKind::OrderUpdated);
        assert_eq!(
            e.orders[0].status,
            transforms::model::OrderStatus::Completed
        );
    }
}
