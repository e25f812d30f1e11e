//! Replays the player's fuzz corpora (`fuzz/corpus/{trace_file,player_playlist}`)
//! and hand-made seeds (`fuzz/seeds/...`) through the same checks the fuzz targets
//! run, on stable Rust, so `cargo test --workspace` keeps exercising them.

use std::path::PathBuf;

use casebook_kit::fuzz_checks::corpus_and_seeds;
use casebook_netflix::player::fuzzing::TARGETS;

#[test]
fn the_player_corpora_replay_cleanly() {
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
        // Valid traces and playlists are among the inputs: the round trips ran.
        assert!(accepted >= 5, "{target}: only {accepted} inputs accepted");
    }
}
