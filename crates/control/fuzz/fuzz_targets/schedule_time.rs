#![no_main]
//! The check lives in `casebook_control::fuzz_checks::schedule_time`, shared with the stable replay test.

libfuzzer_sys::fuzz_target!(|data: &[u8]| casebook_control::fuzz_checks::schedule_time(data));
