//! Arbitrary bytes as a location snapshot file and as an outbox location
//! payload: decoded only if they round-trip; a restore accounts for every driver.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    casebook_uber::fuzz_checks::check_location_input(data);
});
