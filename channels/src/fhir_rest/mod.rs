//! FHIR R4 over REST: the inbound server ([`source`]) and the FHIR server destination
//! ([`client`]). Parsing, validation and mapping are the engine's and `transforms`' business;
//! this module speaks HTTP.

pub mod client;
pub mod source;
