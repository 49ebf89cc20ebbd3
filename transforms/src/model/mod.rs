//! The canonical model: what Switchboard understands of a clinical message, independent of
//! whether it arrived as HL7 v2, FHIR or JSON.
//!
//! Entities ([`Patient`], [`Practitioner`], [`Location`], [`Service`], [`Encounter`],
//! [`Appointment`], [`Schedule`], [`Slot`], [`Order`], [`ResultReport`], [`Charge`],
//! [`ImagingStudy`], [`MedicationOrder`]) are plain data with a documented JSON form:
//! snake_case field names, absent optionals and empty lists left out. An [`Event`] says what
//! happened ([`EventKind`]), carries the entities it touched and a [`Source`] block naming the
//! message it came from. Start reading at [`Event`].
//!
//! This module holds no mapping logic: `from_v2` (and the FHIR side) build these values;
//! destinations read them. Timestamps keep the precision they were sent with ([`Timestamp`]);
//! money and quantities are validated decimal strings ([`Decimal`]), never floats.

mod appointment;
mod charge;
mod common;
mod encounter;
mod event;
mod imaging;
mod local_time;
mod medication;
mod order;
mod patient;
mod practitioner;
mod schedule;
mod time;

pub use appointment::{
    Appointment, AppointmentLocation, AppointmentPerson, AppointmentResource, AppointmentService,
    AppointmentStatus,
};
pub use charge::{Charge, ChargeStatus, PaymentOutcome, PaymentResult, TransactionType};
/// An IANA time zone, as a channel's `timezone` names it (see [`Event::assume_timezone`]).
pub use chrono_tz::Tz;
pub use common::{Address, Coded, ContactUse, Decimal, DecimalError, HumanName, Phone};
pub use encounter::{Encounter, EncounterClass, LocationStatus, LocationStay, Role, VisitEvent};
pub use event::{
    BusinessKey, BusinessKeyKind, Event, EventKind, LinkedPatient, MergedPatient, PatientMerge,
    Source,
};
pub use imaging::{ImagingSeries, ImagingStudy};
pub use local_time::offset_at;
pub use medication::{MedicationComponent, MedicationDispense, MedicationOrder, Quantity};
pub use order::{
    Attachment, ImagingOrder, Observation, Order, OrderStatus, Priority, ResultReport,
    ResultStatus, Specimen,
};
pub use patient::{
    Allergy, Contact, Coverage, Diagnosis, Facility, Gender, Guarantor, Identifier, IdentifierKind,
    Insured, OtherName, Patient, Procedure,
};
pub use practitioner::{Location, Practitioner, Service};
pub use schedule::{Schedule, Slot, SlotStatus};
pub(crate) use time::parse_fraction;
pub use time::{Precision, Timestamp, TimestampError};

use sha2::{Digest, Sha256};

/// Length in hex characters of the ids made by [`stable_id`] (128 bits).
pub const STABLE_ID_LEN: usize = 32;
// stable_id writes two hex digits per SHA-256 byte.
const _: () = assert!(STABLE_ID_LEN.is_multiple_of(2) && STABLE_ID_LEN <= 64);

/// Derives a deterministic id from source identifiers: the SHA-256 of the parts, hex, truncated
/// to [`STABLE_ID_LEN`] characters.
///
/// Parts are joined with the ASCII unit separator (0x1F) so that `["ab", "c"]` and `["a", "bc"]`
/// give different ids. Used for event ids and FHIR resource ids so that a replay of the same
/// message updates instead of duplicating.
///
/// ```
/// use transforms::model::stable_id;
/// let a = stable_id(&["HIS", "MAIN", "MSG0001"]);
/// assert_eq!(a.len(), 32);
/// assert_eq!(a, stable_id(&["HIS", "MAIN", "MSG0001"]));
/// assert_ne!(stable_id(&["ab", "c"]), stable_id(&["a", "bc"]));
/// ```
pub fn stable_id(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update([0x1F]);
        }
        hasher.update(part.as_bytes());
    }
    // Hex of the first STABLE_ID_LEN / 2 bytes, written straight into the id.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = hasher.finalize();
    let mut id = String::with_capacity(STABLE_ID_LEN);
    for b in &digest[..STABLE_ID_LEN / 2] {
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 0xF)]));
    }
    id
}

/// Serde helper: true when a `bool` is false, so `false` flags stay out of the JSON.
pub(crate) fn is_false(value: &bool) -> bool {
    !*value
}
