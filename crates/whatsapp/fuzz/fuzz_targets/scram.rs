//! Arbitrary bytes as a SCRAM message of either end (the first byte picks which):
//! never a panic, parsed messages re-encode to themselves, the server's answers
//! parse on the client side, and no message makes the client work unboundedly.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    casebook_whatsapp::client::fuzzing::check_scram_input(data);
});
