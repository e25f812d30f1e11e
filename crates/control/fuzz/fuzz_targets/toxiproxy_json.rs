#![no_main]
//! The check lives in `casebook_control::fuzz_checks::toxiproxy_json`, shared with the stable replay test.

libfuzzer_sys::fuzz_target!(|data: &[u8]| casebook_control::fuzz_checks::toxiproxy_json(data));
