//! Arbitrary bytes as a reservation or stock body (first byte picks): a coded 400 or a request within the limits that round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    casebook_amazon::fuzz_checks::request_bodies(data);
});
