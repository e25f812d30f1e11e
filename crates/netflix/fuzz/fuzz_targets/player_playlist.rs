//! Arbitrary bytes as an HLS playlist read by the player, as a master and as a
//! media playlist: refused naming a line, or accepted and rendered back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    casebook_netflix::player::fuzzing::check_playlist(data);
});
