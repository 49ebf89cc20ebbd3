//! Local times without an offset, placed in the time zone a channel names.
//!
//! An HL7 v2 time may come without its UTC offset (`20260615080000`); most HIS write their
//! local time. A channel can name the IANA zone its sender writes in (`timezone =
//! "Asia/Riyadh"`): [`Event::assume_timezone`] gives every time of the event that has a time
//! of day and no offset the zone's offset at that local time, once, right after the mapping,
//! so the canonical event, FHIR and every destination payload carry the same instant. Times
//! that came with an offset and dates without a time are left as they are.
//!
//! Without a zone nothing changes: the canonical event and the destination payloads keep the
//! local time as sent, and FHIR, where R4 requires an offset on every time, writes it as UTC
//! (see `fhir::from_model::date_time`).

use chrono::{NaiveDateTime, Offset, TimeZone};
use chrono_tz::Tz;

use super::{Encounter, Event, Patient, Precision, Role, Timestamp};

/// The offset in minutes of `zone` at the local time `local`. In the hour a clock is set back
/// (a local time that happens twice) the earlier instant, on the summer offset; in the hour it
/// is set forward (a local time that never happens) the offset in force just before.
pub fn offset_at(zone: Tz, local: NaiveDateTime) -> i16 {
    let seconds = match zone.offset_from_local_datetime(&local) {
        chrono::LocalResult::Single(o) => o.fix().local_minus_utc(),
        chrono::LocalResult::Ambiguous(earlier, _) => earlier.fix().local_minus_utc(),
        chrono::LocalResult::None => {
            let before = local - chrono::Duration::hours(3);
            zone.offset_from_utc_datetime(&before)
                .fix()
                .local_minus_utc()
        }
    };
    // Every zone's offset is within ±18 h and whole minutes since 1972.
    (seconds / 60) as i16
}

fn localize(ts: &mut Option<Timestamp>, zone: Tz) {
    if let Some(t) = ts {
        if t.precision() >= Precision::Hour && t.offset_minutes().is_none() {
            if let Ok(placed) = t.with_offset_minutes(offset_at(zone, t.naive_date_time())) {
                *t = placed;
            }
        }
    }
}

fn localize_patient(p: &mut Patient, zone: Tz) {
    localize(&mut p.birth_date, zone);
    localize(&mut p.death_time, zone);
    for d in &mut p.diagnoses {
        localize(&mut d.time, zone);
    }
    for a in &mut p.allergies {
        localize(&mut a.identified, zone);
    }
}

fn localize_roles(roles: &mut [Role], zone: Tz) {
    for r in roles {
        localize(&mut r.start, zone);
        localize(&mut r.end, zone);
    }
}

fn localize_encounter(e: &mut Encounter, zone: Tz) {
    localize(&mut e.admit_time, zone);
    localize(&mut e.discharge_time, zone);
    localize(&mut e.expected_admit_time, zone);
    localize(&mut e.expected_discharge_time, zone);
    localize_roles(&mut e.roles, zone);
    for stay in &mut e.location_history {
        localize(&mut stay.start, zone);
        localize(&mut stay.end, zone);
    }
    for step in &mut e.events {
        localize(&mut step.time, zone);
    }
}

impl Event {
    /// Gives every time of the event that has a time of day and no UTC offset the offset of
    /// `zone` at that local time (see the module documentation).
    pub fn assume_timezone(&mut self, zone: Tz) {
        localize(&mut self.source.message_time, zone);
        localize(&mut self.source.event_time, zone);
        if let Some(p) = &mut self.patient {
            localize_patient(p, zone);
        }
        for pair in &mut self.additional_merges {
            localize_patient(&mut pair.patient, zone);
        }
        if let Some(e) = &mut self.encounter {
            localize_encounter(e, zone);
        }
        if let Some(other) = &mut self.other_patient {
            localize_patient(&mut other.patient, zone);
            if let Some(e) = &mut other.encounter {
                localize_encounter(e, zone);
            }
        }
        if let Some(a) = &mut self.appointment {
            localize(&mut a.start, zone);
            localize(&mut a.end, zone);
            for s in &mut a.services {
                localize(&mut s.start, zone);
            }
            for p in &mut a.personnel {
                localize(&mut p.start, zone);
            }
            for l in &mut a.locations {
                localize(&mut l.start, zone);
            }
            for r in &mut a.resources {
                localize(&mut r.start, zone);
            }
            localize_roles(&mut a.roles, zone);
        }
        for o in &mut self.orders {
            localize(&mut o.ordered_at, zone);
            localize(&mut o.requested_start, zone);
            localize_roles(&mut o.roles, zone);
        }
        for r in &mut self.results {
            localize(&mut r.order.ordered_at, zone);
            localize(&mut r.order.requested_start, zone);
            localize_roles(&mut r.order.roles, zone);
            localize(&mut r.observed_at, zone);
            localize(&mut r.reported_at, zone);
            for obs in &mut r.observations {
                localize(&mut obs.observed_at, zone);
            }
        }
        for c in &mut self.charges {
            localize(&mut c.transaction_date, zone);
            localize(&mut c.posting_date, zone);
        }
        if let Some(s) = &mut self.imaging_study {
            localize(&mut s.started, zone);
        }
        for m in &mut self.medication_orders {
            localize(&mut m.ordered_at, zone);
            localize(&mut m.start, zone);
            localize(&mut m.end, zone);
            if let Some(d) = &mut m.dispense {
                localize(&mut d.dispensed_at, zone);
            }
        }
        if let Some(s) = &mut self.schedule {
            localize(&mut s.planning_start, zone);
            localize(&mut s.planning_end, zone);
        }
        for s in &mut self.slots {
            localize(&mut s.start, zone);
            localize(&mut s.end, zone);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(text: &str) -> Timestamp {
        Timestamp::parse_iso(text).expect("valid")
    }

    #[test]
    fn riyadh_is_three_hours_ahead_all_year() {
        let zone: Tz = "Asia/Riyadh".parse().expect("known zone");
        let t = local("2026-06-15T08:00:00");
        assert_eq!(offset_at(zone, t.naive_date_time()), 180);
    }

    #[test]
    fn daylight_saving_time_follows_the_date() {
        let zone: Tz = "Europe/Berlin".parse().expect("known zone");
        assert_eq!(
            offset_at(zone, local("2026-01-15T08:00:00").naive_date_time()),
            60
        );
        assert_eq!(
            offset_at(zone, local("2026-07-15T08:00:00").naive_date_time()),
            120
        );
        // 2026-10-25 02:30 happens twice: the earlier, summer one.
        assert_eq!(
            offset_at(zone, local("2026-10-25T02:30:00").naive_date_time()),
            120
        );
        // 2026-03-29 02:30 never happens: the offset before the change.
        assert_eq!(
            offset_at(zone, local("2026-03-29T02:30:00").naive_date_time()),
            60
        );
    }

    #[test]
    fn medication_order_and_dispense_times_get_the_zone() {
        let zone: Tz = "Asia/Riyadh".parse().expect("known zone");
        let mut e: Event = serde_json::from_value(serde_json::json!({
            "id": "x", "kind": "medication_dispensed",
            "source": {"format": "hl7v2", "message_type": "RDS^O13", "control_id": "C1"},
            "medication_orders": [{"placer_number": "RX-1", "status": "in_progress",
                "ordered_at": "2026-06-15T10:55:00", "start": "2026-06-15T12:00:00",
                "end": "2026-06-22T12:00:00+01:00",
                "dispense": {"dispensed_at": "2026-06-15T14:00:00"}}]
        }))
        .expect("valid event");
        e.assume_timezone(zone);
        let m = &e.medication_orders[0];
        let iso = |t: &Option<Timestamp>| t.map(|t| t.to_iso());
        assert_eq!(
            iso(&m.ordered_at).as_deref(),
            Some("2026-06-15T10:55:00+03:00")
        );
        assert_eq!(iso(&m.start).as_deref(), Some("2026-06-15T12:00:00+03:00"));
        assert_eq!(iso(&m.end).as_deref(), Some("2026-06-22T12:00:00+01:00"));
        let d = m.dispense.as_ref().expect("dispense");
        assert_eq!(
            iso(&d.dispensed_at).as_deref(),
            Some("2026-06-15T14:00:00+03:00")
        );
    }

    #[test]
    fn only_times_without_an_offset_change() {
        let zone: Tz = "Asia/Riyadh".parse().expect("known zone");
        let mut e: Event = serde_json::from_value(serde_json::json!({
            "id": "x", "kind": "encounter_admitted",
            "source": {"format": "hl7v2", "message_type": "ADT^A01", "control_id": "C1",
                       "message_time": "2026-06-15T08:00:00", "event_time": "2026-06-15T07:00:00+01:00"},
            "patient": {"birth_date": "1994-09-20"},
            "encounter": {"admit_time": "2026-06-15T08:00"}
        }))
        .expect("valid event");
        e.assume_timezone(zone);
        assert_eq!(
            e.source.message_time.map(|t| t.to_iso()).as_deref(),
            Some("2026-06-15T08:00:00+03:00")
        );
        assert_eq!(
            e.source.event_time.map(|t| t.to_iso()).as_deref(),
            Some("2026-06-15T07:00:00+01:00")
        );
        let p = e.patient.expect("patient");
        assert_eq!(
            p.birth_date.map(|t| t.to_iso()).as_deref(),
            Some("1994-09-20")
        );
        let enc = e.encounter.expect("encounter");
        assert_eq!(
            enc.admit_time.map(|t| t.to_iso()).as_deref(),
            Some("2026-06-15T08:00+03:00")
        );
    }
}
