//! Arbitrary bytes, split into arbitrary chunks (sizes derived from the first
//! byte), fed to the stream parser: never a panic, and every stanza yielded
//! re-serialises and re-parses to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    casebook_whatsapp::xml::fuzzing::check_stream_input(data);
});
