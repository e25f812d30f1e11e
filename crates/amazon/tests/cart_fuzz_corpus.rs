//! Replays every file of the cart fuzz target's corpus and seeds through its check
//! on stable Rust, so `cargo test` keeps exercising what `cargo fuzz` found (and
//! the hand-made nasty inputs it started from) without a nightly toolchain.

use std::path::PathBuf;

use casebook_amazon::cart::fuzzing::check_cart_input;
use casebook_kit::fuzz_checks::corpus_and_seeds;

#[test]
fn cart_inputs_corpus_replays_cleanly() {
    let fuzz_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut accepted = 0;
    for (path, data) in corpus_and_seeds(&fuzz_dir, "cart_inputs", 10) {
        match std::panic::catch_unwind(|| check_cart_input(&data)) {
            Ok(n) => accepted += n,
            Err(_) => panic!("{} breaks an invariant", path.display()),
        }
    }
    // The seeds hold valid contexts, states, writes and bodies: the property
    // checks past the parsers really ran.
    assert!(accepted >= 20, "only {accepted} inputs accepted");
}
