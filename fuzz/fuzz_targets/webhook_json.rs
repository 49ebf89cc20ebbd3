//! Fuzz target: see `switchboard_fuzz::webhook_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_fuzz::webhook_json(data));
