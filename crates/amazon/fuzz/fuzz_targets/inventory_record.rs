//! Arbitrary bytes as an inventory WAL record: never a panic; what decodes re-encodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    casebook_amazon::fuzz_checks::inventory_record(data);
});
