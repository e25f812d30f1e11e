//! Arbitrary bytes as an object size and a `Range` header: a partial answer is
//! non-empty and inside the object.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    casebook_netflix::fuzz_checks::check_range(data);
});
