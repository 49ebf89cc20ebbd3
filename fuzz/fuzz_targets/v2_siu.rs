//! Fuzz target: v2 -> canonical for SIU (see `switchboard_fuzz::v2_family`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_fuzz::v2_family(data, &["SIU^S12", "SIU^S13", "SIU^S14", "SIU^S15", "SIU^S16", "SIU^S17", "SIU^S26"]));
