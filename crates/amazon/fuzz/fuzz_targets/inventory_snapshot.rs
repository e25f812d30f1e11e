//! Arbitrary bytes as an inventory snapshot: never a panic; what decodes re-encodes and decodes equal.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    casebook_amazon::fuzz_checks::inventory_snapshot(data);
});
