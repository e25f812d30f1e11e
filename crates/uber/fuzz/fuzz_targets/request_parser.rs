//! Arbitrary bytes, split into chunks (sizes derived from the first byte), fed
//! to the RESP request parser: never a panic, a bounded buffer, and the same
//! commands and error as when fed whole.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    casebook_uber::resp::fuzzing::check_request_input(data);
});
