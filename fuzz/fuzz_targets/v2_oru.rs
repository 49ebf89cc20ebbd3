//! Fuzz target: v2 -> canonical for ORU^R01 (see `switchboard_fuzz::v2_family`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_fuzz::v2_family(data, &["ORU^R01"]));
