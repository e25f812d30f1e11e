#![no_main]
//! The check lives in `casebook_edge::cdn::fuzzing::object_key`, shared with the stable replay test.

libfuzzer_sys::fuzz_target!(|data: &[u8]| casebook_edge::cdn::fuzzing::object_key(data));
