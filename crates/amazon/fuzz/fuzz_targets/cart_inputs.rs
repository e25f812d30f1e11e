//! Arbitrary bytes through the cart's parsers — the context token, the CRDT's wire
//! form, the replicas' write and peer bodies, the public request bodies (the
//! first byte picks which): never a panic, and what parses keeps the CRDT's
//! invariants (see `casebook_amazon::cart::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    casebook_amazon::cart::fuzzing::check_cart_input(data);
});
