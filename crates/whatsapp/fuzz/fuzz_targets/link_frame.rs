//! Arbitrary bytes, in arbitrary chunks, as the node-to-node link's frame stream:
//! never a panic, never more than one frame buffered, and every decoded frame
//! re-encodes to exactly the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    casebook_whatsapp::cluster::frame::check_link_input(data);
});
