#![no_main]
//! The check lives in `casebook_kit::fuzz_checks::outbox_entry`, shared with the stable replay test.

libfuzzer_sys::fuzz_target!(|data: &[u8]| casebook_kit::fuzz_checks::outbox_entry(data));
