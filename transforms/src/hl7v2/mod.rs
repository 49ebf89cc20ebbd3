//! HL7 v2 over hl7-parser: character sets, the MSH header, batches and ACK building.
//!
//! The path of a received frame through this module: [`charset::decode`] turns bytes into text
//! by MSH-18 (with the channel's fallback), [`header::MessageHeader::read`] reads the MSH
//! tolerantly (so even a broken message can be answered), [`validate::check_header`] decides
//! whether the engine may accept it, and [`ack::build_ack`] writes the answer.

pub mod ack;
pub mod batch;
pub mod charset;
pub mod header;
pub mod validate;
