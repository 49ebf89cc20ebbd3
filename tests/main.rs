//! End-to-end tests: the real `switchboard` binary, started on 127.0.0.1 with a temporary
//! config and data folder, spoken to over MLLP and HTTP. One module per scenario.

mod support;

mod abuse;
mod appointments;
mod bad_input;
mod check;
mod cli;
mod cluster;
mod config_tests;
mod connectors;
mod console;
mod crash;
mod delivery;
mod dicom;
mod encryption;
mod fault_proxy;
mod faults;
mod fhir_destination;
mod http_sources;
mod journey;
mod latrexa;
mod master_data;
mod ops;
mod packaging;
mod pharmacy;
mod powercut;
mod reload;
mod resend;
mod roles;
mod sftp;
mod spine;
mod timezone;
mod tls;
