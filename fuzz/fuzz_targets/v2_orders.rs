//! Fuzz target: v2 -> canonical for ORM^O01 and OML^O21 (see `switchboard_fuzz::v2_family`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_fuzz::v2_family(data, &["ORM^O01", "OML^O21"]));
