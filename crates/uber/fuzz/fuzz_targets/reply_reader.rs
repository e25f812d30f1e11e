//! Arbitrary bytes read as RESP2/RESP3 replies: never a panic, and every reply
//! read re-encodes to bytes that read back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    casebook_uber::resp::fuzzing::check_reply_input(data);
});
