#![no_main]
//! The check lives in `casebook_kit::fuzz_checks::wal_frame`, shared with the stable replay test.

libfuzzer_sys::fuzz_target!(|data: &[u8]| casebook_kit::fuzz_checks::wal_frame(data));
