//! Pure transforms of Switchboard: HL7 v2 access, the canonical model, and every mapping
//! between HL7 v2, FHIR R4, the canonical model and each destination's payload.
//!
//! This crate does no IO, spawns nothing and holds no global state; time is passed in.
//! Start reading at [`hl7v2`] (how a received message is decoded, read and answered).
#![forbid(unsafe_code)]

pub mod from_v2;
pub mod hl7v2;
pub mod model;

pub mod dest;
pub mod fhir;
pub mod from_dicom;
pub mod from_json;
pub mod journey;
pub mod mapping;
pub mod serde_reason;
pub mod to_v2;

pub use from_v2::{Mapped, MappingError};

/// Maps a parsed HL7 v2 message to a canonical event: the engine's entry point for HL7 v2
/// transforms. See [`from_v2`] for what each message type becomes.
///
/// # Errors
/// [`MappingError`] naming the field and the reason when required data is missing or present
/// data is unusable; an unsupported message type is `Ok(Mapped::Unsupported { .. })`.
pub fn v2_to_event(msg: &hl7v2::access::V2Message<'_>) -> Result<Mapped, MappingError> {
    from_v2::map(msg)
}
