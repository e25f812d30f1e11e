//! Replays every netflix fuzz corpus file (and hand-made seed) through its check
//! on stable Rust, so `cargo test --workspace` keeps exercising what `cargo fuzz`
//! found without a nightly toolchain.

use std::path::PathBuf;

use casebook_kit::fuzz_checks::corpus_and_seeds;
use casebook_netflix::fuzz_checks::TARGETS;

#[test]
fn every_corpus_replays_cleanly() {
    let fuzz_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (target, check) in TARGETS {
        let source = fuzz_dir.join("fuzz_targets").join(format!("{target}.rs"));
        assert!(source.is_file(), "no fuzz target {}", source.display());
        let mut accepted = 0;
        for (path, data) in corpus_and_seeds(&fuzz_dir, target, 10) {
            match std::panic::catch_unwind(|| check(&data)) {
                Ok(n) => accepted += n,
                Err(_) => panic!("{} breaks an invariant", path.display()),
            }
        }
        // The seeds hold valid inputs: the checks ran past the refusals.
        assert!(accepted >= 5, "{target}: only {accepted} inputs accepted");
    }
}
