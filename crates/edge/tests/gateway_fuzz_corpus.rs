//! Replays the `gateway_auth` fuzz corpus and seeds through the same check on
//! stable Rust, so `cargo test` keeps exercising what `cargo fuzz` found (and the
//! hand-made tokens, keys and paths it started from) without a nightly toolchain.

use std::path::PathBuf;

use casebook_edge::gateway::fuzzing::check_gateway_auth;
use casebook_kit::fuzz_checks::corpus_and_seeds;

#[test]
fn gateway_auth_corpus_replays_cleanly() {
    let fuzz_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    assert!(fuzz_dir.join("fuzz_targets/gateway_auth.rs").is_file());
    let mut accepted = 0;
    for (path, data) in corpus_and_seeds(&fuzz_dir, "gateway_auth", 10) {
        match std::panic::catch_unwind(|| check_gateway_auth(&data)) {
            Ok(n) => accepted += n,
            Err(_) => panic!("{} breaks an invariant", path.display()),
        }
    }
    // The seeds hold valid tokens, a valid key and clean paths: the accepting
    // branches (re-signing, key match, upstream paths) really ran.
    assert!(accepted >= 20, "only {accepted} parts accepted");
}

#[test]
fn the_seeds_reach_the_accepting_branches() {
    let seeds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/gateway_auth");
    let run = |name: &str| check_gateway_auth(&std::fs::read(seeds.join(name)).unwrap());
    // path + token verified and re-signed + token minted for the subject
    assert_eq!(run("valid_bearer"), 3);
    // path + key matched + token minted
    assert_eq!(run("api_key"), 3);
    assert_eq!(run("expired"), 1, "only the path");
    assert_eq!(run("dot_segments"), 0);
}
