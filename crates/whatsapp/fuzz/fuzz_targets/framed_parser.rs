//! Arbitrary bytes as one WebSocket frame: never a panic, and a stanza frame
//! re-serialised standalone parses back to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    casebook_whatsapp::xml::fuzzing::check_frame_input(data);
});
