//! Arbitrary bytes as an HLS master and media playlist: never a panic, and what
//! parses renders to text that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    casebook_netflix::fuzz_checks::check_playlist(data);
});
