//! Arbitrary bytes parsed as RESP requests and run against a fresh geo-resp
//! server: never a panic or an abort, and every reply reads back whole.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    casebook_uber::resp::fuzzing::check_command_input(data);
});
