//! Replays every committed fuzz corpus file (`crates/edge/fuzz/corpus/<target>/`)
//! through the same checks as the cargo fuzz targets, so `cargo test` exercises the
//! corpus on stable.

use std::path::Path;

#[test]
fn every_committed_corpus_file_passes_its_check() {
    casebook_kit::fuzz_checks::replay_corpus(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz"),
        casebook_edge::cdn::fuzzing::TARGETS,
    );
}
