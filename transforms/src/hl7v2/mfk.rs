//! The MFK answer to a master file notification: the ACK's MSH and MSA, the request's MFI
//! echoed, and one MFA per record saying whether it was posted (HL7 table 0181: `S`
//! successful, `U` unsuccessful, with the reason).
//!
//! The MSH and MSA come from [`super::ack::build_ack`], so the MFK mirrors the sender, its
//! delimiters, version and acknowledgment mode exactly as every other answer does; only
//! MSH-9 becomes `MFK^<trigger>^MFK_M01`. MFI-6 (response level, HL7 table 0179) decides
//! which records get an MFA: `NE` none, `ER` only the rejected, `SU` only the accepted,
//! `AL` (or empty) all.

use super::header::Delimiters;
use crate::from_v2::mfn::RecordOutcome;
use std::fmt::Write;

/// Turns an ACK built for an MFN into its MFK: MSH-9 `MFK^<trigger>` (with `^MFK_M01` when
/// the ACK named a message structure), then `mfi` (the request's MFI segment, as received)
/// and one MFA per record that MFI-6 asks for. `completed` is MFA-3, an HL7 timestamp.
///
/// ```
/// use transforms::hl7v2::{header::Delimiters, mfk::mfk_from_ack};
/// use transforms::from_v2::mfn::RecordOutcome;
/// let ack = "MSH|^~\\&|SB|HUB|HIS|RUH|20260615||ACK^M05^ACK|9|P|2.5\rMSA|AA|C1\r";
/// let records = [
///     RecordOutcome { record_event: Some("MAD".into()), control_id: Some("R1".into()),
///         primary_key: Some("CLN-1".into()), primary_key_type: Some("PL".into()), rejected: None, error: None },
///     RecordOutcome { record_event: Some("MAD".into()), control_id: Some("R2".into()),
///         primary_key: None, primary_key_type: None, rejected: Some("missing LOC-1".into()), error: None },
/// ];
/// let mfk = mfk_from_ack(ack, &Delimiters::default(), Some("MFI|LOC||UPD|||AL"), &records, "20260615");
/// assert!(mfk.starts_with("MSH|^~\\&|SB|HUB|HIS|RUH|20260615||MFK^M05^MFK_M01|9|P|2.5\r"));
/// assert!(mfk.contains("\rMFA|MAD|R1|20260615|S|CLN-1|PL\r"));
/// assert!(mfk.contains("\rMFA|MAD|R2|20260615|U^missing LOC-1^HL70181||\r"));
/// ```
pub fn mfk_from_ack(
    ack: &str,
    d: &Delimiters,
    mfi: Option<&str>,
    records: &[RecordOutcome],
    completed: &str,
) -> String {
    let (f, c) = (d.field, d.component);
    let mut out = String::with_capacity(ack.len() + 64 * (records.len() + 1));
    let (msh, rest) = ack.split_once('\r').unwrap_or((ack, ""));
    for (i, field) in msh.split(f).enumerate() {
        if i > 0 {
            out.push(f);
        }
        if i == 8 {
            // MSH-9: ACK[^trigger[^ACK]] becomes MFK[^trigger[^MFK_M01]].
            let parts: Vec<&str> = field.split(c).collect();
            out.push_str("MFK");
            if let Some(trigger) = parts.get(1) {
                let _ = write!(out, "{c}{trigger}");
            }
            if parts.len() > 2 {
                let _ = write!(out, "{c}MFK_M01");
            }
        } else {
            out.push_str(field);
        }
    }
    out.push('\r');
    out.push_str(rest);
    let Some(mfi) = mfi else {
        return out;
    };
    out.push_str(mfi.trim_end_matches('\r'));
    out.push('\r');
    let level = mfi
        .split(f)
        .nth(6)
        .map(|l| l.split(c).next().unwrap_or("").trim().to_ascii_uppercase())
        .unwrap_or_default();
    for r in records {
        let wanted = match level.as_str() {
            "NE" => false,
            "ER" => !r.accepted(),
            "SU" => r.accepted(),
            _ => true,
        };
        if !wanted {
            continue;
        }
        let text = |v: &Option<String>| v.as_deref().map(|t| d.escape_text(t)).unwrap_or_default();
        let _ = write!(
            out,
            "MFA{f}{}{f}{}{f}{completed}{f}",
            text(&r.record_event),
            text(&r.control_id)
        );
        match &r.rejected {
            None => out.push('S'),
            Some(why) => {
                let _ = write!(out, "U{c}{}{c}HL70181", d.escape_text(why));
            }
        }
        let _ = write!(
            out,
            "{f}{}{f}{}\r",
            text(&r.primary_key),
            text(&r.primary_key_type)
        );
    }
    out
}
