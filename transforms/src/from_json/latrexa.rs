//! Latrexa pending bookings -> canonical appointment events, and -> SIU^S12/S13/S15 text for
//! the HIS (through [`crate::to_v2`]).
//!
//! A booking for a patient the HIS does not know yet (no `patientNo`) carries the Latrexa
//! booking id as an identifier of kind `other` with assigning authority `LATREXA`, so the HIS
//! can register the patient and the id mapping can link them later.

use super::{empty_event, iso, JsonError};
use crate::dest::latrexa::{BookingAction, PendingBooking};
use crate::model::{
    stable_id, Appointment, AppointmentStatus, Coded, ContactUse, Event, EventKind, Gender,
    HumanName, Identifier, IdentifierKind, Location, Patient, Phone, Practitioner, Source,
};
use crate::to_v2::{siu_message, SiuHeader, SiuTrigger, ToV2Error};

/// Assigning authority of identifiers made from Latrexa booking ids.
pub const AUTHORITY: &str = "LATREXA";

/// The canonical event of a pending booking: booked (create), rescheduled or cancelled.
///
/// # Errors
/// [`JsonError::Unprocessable`] when `start`, `end` or `dateOfBirth` is not an ISO date/time.
pub fn event_from_booking(b: &PendingBooking) -> Result<Event, JsonError> {
    let (kind, status, action) = match b.action {
        BookingAction::Create => (
            EventKind::AppointmentBooked,
            AppointmentStatus::Booked,
            "create",
        ),
        BookingAction::Reschedule => (
            EventKind::AppointmentRescheduled,
            AppointmentStatus::Booked,
            "reschedule",
        ),
        BookingAction::Cancel => (
            EventKind::AppointmentCancelled,
            AppointmentStatus::Cancelled,
            "cancel",
        ),
    };
    let mut identifiers = Vec::new();
    identifiers.extend(
        b.patient_no
            .clone()
            .filter(|v| !v.is_empty())
            .map(|value| Identifier {
                value,
                kind: IdentifierKind::Mrn,
                type_code: None,
                assigning_authority: None,
            }),
    );
    identifiers.extend(
        b.national_id
            .clone()
            .filter(|v| !v.is_empty())
            .map(|value| Identifier {
                value,
                kind: IdentifierKind::NationalId,
                type_code: None,
                assigning_authority: None,
            }),
    );
    if identifiers.is_empty() {
        identifiers.push(Identifier {
            value: b.id.clone(),
            kind: IdentifierKind::Other,
            type_code: None,
            assigning_authority: Some(AUTHORITY.into()),
        });
    }
    let patient = Patient {
        identifiers,
        name: HumanName {
            given: Some(b.first_name.clone()).filter(|s| !s.is_empty()),
            family: Some(b.last_name.clone()).filter(|s| !s.is_empty()),
            ..HumanName::default()
        },
        birth_date: b
            .date_of_birth
            .as_deref()
            .map(|d| iso(d, "dateOfBirth"))
            .transpose()?,
        gender: match b.gender.as_deref() {
            Some("male") => Some(Gender::Male),
            Some("female") => Some(Gender::Female),
            Some("other") => Some(Gender::Other),
            Some("unknown") => Some(Gender::Unknown),
            _ => None,
        },
        phones: b
            .mobile
            .iter()
            .map(|m| Phone {
                number: m.clone(),
                use_: Some(ContactUse::Mobile),
            })
            .collect(),
        email: b.email.clone(),
        ..Patient::default()
    };
    let appointment = Appointment {
        resources: Vec::new(),
        services: Vec::new(),
        personnel: Vec::new(),
        locations: Vec::new(),
        roles: Vec::new(),
        placer_id: None,
        filler_id: b.his_appointment_id.clone(),
        remote_id: Some(b.id.clone()),
        patient: patient.primary_identifier().cloned(),
        practitioner: Some(Practitioner {
            code: Some(b.doctor_code.clone()),
            ..Practitioner::default()
        }),
        location: Some(Location {
            code: Some(b.clinic_code.clone()),
            ..Location::default()
        }),
        service: b.service_code.clone().map(|code| Coded {
            code: Some(code),
            ..Coded::default()
        }),
        appointment_type: None,
        start: Some(iso(&b.start, "start")?),
        end: Some(iso(&b.end, "end")?),
        duration_minutes: None,
        status,
        reason: b.reason.clone().map(|text| Coded {
            text: Some(text),
            ..Coded::default()
        }),
        event_reason: None,
        notes: b.notes.clone(),
    };
    let source = Source {
        format: "latrexa".into(),
        message_type: format!("booking.{action}"),
        control_id: b.id.clone(),
        ..Source::default()
    };
    let mut ev = empty_event(
        stable_id(&["latrexa", &b.id, action, &b.start]),
        kind,
        source,
    );
    ev.patient = Some(patient);
    ev.appointment = Some(appointment);
    Ok(ev)
}

/// The SIU trigger of a booking action: create S12, reschedule S13, cancel S15.
pub fn trigger(action: BookingAction) -> SiuTrigger {
    match action {
        BookingAction::Create => SiuTrigger::S12,
        BookingAction::Reschedule => SiuTrigger::S13,
        BookingAction::Cancel => SiuTrigger::S15,
    }
}

/// Why a booking could not be written as SIU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookingError {
    /// The booking's values are unusable.
    #[error(transparent)]
    Json(#[from] JsonError),
    /// The SIU message could not be built.
    #[error(transparent)]
    V2(#[from] ToV2Error),
}

/// The SIU^S12/S13/S15 text for a pending booking, with the caller's MSH values.
///
/// # Errors
/// [`BookingError`] when the booking's times are unusable or SIU cannot be built.
pub fn siu_from_booking(b: &PendingBooking, header: &SiuHeader) -> Result<String, BookingError> {
    let ev = event_from_booking(b)?;
    let (Some(appointment), Some(patient)) = (&ev.appointment, &ev.patient) else {
        return Err(BookingError::V2(ToV2Error::Missing("appointment")));
    };
    Ok(siu_message(
        trigger(b.action),
        header,
        appointment,
        patient,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Timestamp;

    fn booking(action: BookingAction) -> PendingBooking {
        serde_json::from_value(serde_json::json!({
            "id": "LTX-881",
            "action": action,
            "hisAppointmentId": if action == BookingAction::Create { None } else { Some("APT-77") },
            "firstName": "Huda",
            "lastName": "Nasser",
            "mobile": "+966503334444",
            "doctorCode": "DOC-SARAH-04",
            "clinicCode": "CLN-PED-01",
            "start": "2026-06-15T10:30:00",
            "end": "2026-06-15T11:00:00",
            "notes": "Online booking"
        }))
        .expect("booking shape")
    }

    fn header() -> SiuHeader {
        SiuHeader {
            sending_application: "SWITCHBOARD".into(),
            sending_facility: "LATREXA".into(),
            receiving_application: "DEMOHIS".into(),
            receiving_facility: "ALH-main".into(),
            message_time: Timestamp::parse_iso("2026-06-01T09:15:00").expect("valid"),
            control_id: "LTX0001".into(),
            processing_id: "P".into(),
        }
    }

    #[test]
    fn new_patient_gets_a_latrexa_identifier() {
        let ev = event_from_booking(&booking(BookingAction::Create)).expect("converts");
        assert_eq!(ev.kind, EventKind::AppointmentBooked);
        let id = &ev.patient.as_ref().expect("patient").identifiers[0];
        assert_eq!(
            (id.value.as_str(), id.kind),
            ("LTX-881", IdentifierKind::Other)
        );
        assert_eq!(id.assigning_authority.as_deref(), Some(AUTHORITY));
        let text = siu_from_booking(&booking(BookingAction::Create), &header()).expect("siu");
        assert!(text.contains("SIU^S12^SIU_S12|LTX0001|"));
        assert!(text.contains("\rSCH|LTX-881|"));
        assert!(text.contains("LTX-881^^^LATREXA"));
    }

    #[test]
    fn reschedule_and_cancel_map_to_s13_and_s15() {
        let text = siu_from_booking(&booking(BookingAction::Reschedule), &header()).expect("siu");
        assert!(text.contains("SIU^S13^SIU_S12") && text.contains("\rSCH|LTX-881|APT-77|"));
        let ev = event_from_booking(&booking(BookingAction::Cancel)).expect("converts");
        assert_eq!(ev.kind, EventKind::AppointmentCancelled);
        let text = siu_from_booking(&booking(BookingAction::Cancel), &header()).expect("siu");
        assert!(text.contains("SIU^S15^SIU_S12") && text.contains("|Cancelled\r"));
    }

    #[test]
    fn bad_time_names_the_field() {
        let mut b = booking(BookingAction::Create);
        b.start = "15/06/2026 10:30".into();
        match event_from_booking(&b) {
            Err(JsonError::Unprocessable { path, .. }) => assert_eq!(path, "start"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
