//! Replays every fuzz corpus file of `crates/amazon/fuzz` (and the hand-made
//! seeds beside it) through its check on stable Rust, so `cargo test --workspace`
//! keeps exercising what `cargo fuzz` found without a nightly toolchain.

use std::path::PathBuf;

use casebook_amazon::fuzz_checks::TARGETS;
use casebook_kit::fuzz_checks::corpus_and_seeds;

#[test]
fn every_corpus_replays_cleanly() {
    let fuzz_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (target, check) in TARGETS {
        assert!(
            fuzz_dir
                .join("fuzz_targets")
                .join(format!("{target}.rs"))
                .is_file(),
            "{target} has no fuzz target"
        );
        for (path, data) in corpus_and_seeds(&fuzz_dir, target, 10) {
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                panic!("{} breaks an invariant of {target}", path.display());
            }
        }
    }
}
