//! HL7 v2 over hl7-parser: character sets, the MSH header, typed access, batches and ACK
//! building.
//!
//! The path of a received frame through this module: [`charset::decode`] turns bytes into text
//! by MSH-18 (with the channel's fallback), [`header::MessageHeader::read`] reads the MSH
//! tolerantly (so even a broken message can be answered), [`validate::check_header`] decides
//! whether the engine may accept it, and [`ack::build_ack`] writes the answer. Mappings read
//! fields through [`access::V2Message`].

pub mod access;
pub mod ack;
pub mod batch;
pub mod charset;
pub mod datetime;
pub mod escape;
pub mod header;
pub mod mfk;
pub mod validate;
