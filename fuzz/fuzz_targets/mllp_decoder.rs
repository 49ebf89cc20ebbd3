//! Fuzz target: see `switchboard_fuzz::mllp`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_fuzz::mllp(data));
