//! Fuzz target: see `switchboard_fuzz::ingest`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_fuzz::ingest(data));
