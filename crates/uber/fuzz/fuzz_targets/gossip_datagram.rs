//! Arbitrary bytes as one gossip UDP datagram: the driver-state codec and the
//! replica's packet handling never panic and keep only valid, bounded states.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    casebook_uber::fuzz_checks::check_gossip_datagram(data);
});
