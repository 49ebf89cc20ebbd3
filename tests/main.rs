//! End-to-end tests: the real `switchboard` binary, started on 127.0.0.1 with a temporary
//! config and data folder, spoken to over MLLP and HTTP. One module per scenario.

mod support;

mod cli;
mod console;
mod crash;
mod delivery;
mod fhir_destination;
mod http_sources;
mod ops;
mod spine;
mod tls;
