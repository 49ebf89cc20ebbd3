//! Pure transforms of Switchboard: HL7 v2 access, the canonical model, and every mapping
//! between HL7 v2, FHIR R4, the canonical model and each destination's payload.
//!
//! This crate does no IO, spawns nothing and holds no global state; time is passed in.
//! Start reading at [`hl7v2`] (how a received message is decoded, read and answered).
#![forbid(unsafe_code)]

pub mod hl7v2;
pub mod model;

pub mod dest;
pub mod fhir;
pub mod from_json;
pub mod mapping;
pub mod to_v2;
