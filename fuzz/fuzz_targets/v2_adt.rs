//! Fuzz target: v2 -> canonical for ADT (see `switchboard_fuzz::v2_family`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_fuzz::v2_family(data, &["ADT^A01", "ADT^A03", "ADT^A04", "ADT^A05", "ADT^A08", "ADT^A11", "ADT^A13", "ADT^A28", "ADT^A31", "ADT^A40"]));
