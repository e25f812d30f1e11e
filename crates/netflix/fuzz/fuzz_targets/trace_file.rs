//! Arbitrary bytes as a network trace file (`t_ms,kbps,latency_ms`): refused with
//! a located error, or a trace that answers finitely and renders back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    casebook_netflix::player::fuzzing::check_trace_file(data);
});
