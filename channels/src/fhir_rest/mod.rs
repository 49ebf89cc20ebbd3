//! FHIR R4 over REST: the inbound server ([`source`]) and, later in this module, the FHIR
//! server destination. Parsing, validation and mapping are the engine's and `transforms`'
//! business; this module speaks HTTP.

pub mod source;
