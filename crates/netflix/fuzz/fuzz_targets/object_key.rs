//! Arbitrary bytes as the origin's `/o/{key}` path: an accepted key never leaves
//! the store's root, in any spelling of traversal.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    casebook_netflix::fuzz_checks::check_object_key(data);
});
