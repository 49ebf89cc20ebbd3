//! HL7 v2 over hl7-parser: character sets, the MSH header, batches and ACK building.

pub mod access;
pub mod datetime;
pub mod escape;
