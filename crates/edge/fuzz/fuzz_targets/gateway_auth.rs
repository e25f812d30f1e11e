//! Arbitrary lines as a request path, an `Authorization` value, an `x-api-key`
//! value and a subject: the gateway's route matcher, path hygiene, credential
//! parsing, JWT and API-key checks never panic and keep their invariants
//! (`casebook_edge::gateway::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    casebook_edge::gateway::fuzzing::check_gateway_auth(data);
});
