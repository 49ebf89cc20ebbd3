//! Fuzz target: v2 -> canonical for DFT^P03 and DFT^P11 (see `switchboard_fuzz::v2_family`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_fuzz::v2_family(data, &["DFT^P03", "DFT^P11"]));
