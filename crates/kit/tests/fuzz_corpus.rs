//! Replays every committed fuzz corpus file (`crates/kit/fuzz/corpus/<target>/`)
//! through the same checks as the cargo fuzz targets, so `cargo test` exercises the
//! corpus on stable.

use std::path::Path;

use casebook_kit::fuzz_checks::TARGETS;

#[test]
fn every_committed_corpus_file_passes_its_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (target, check) in TARGETS {
        let dir = root.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
            .map(|entry| entry.expect("corpus entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "corpus {target} is empty");
        for file in files {
            let data = std::fs::read(&file).expect("read corpus file");
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(
                outcome.is_ok(),
                "{target}: {} fails its check",
                file.display()
            );
        }
    }
}

#[test]
fn every_target_has_a_fuzz_target_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    for (target, _) in TARGETS {
        let file = root.join(format!("{target}.rs"));
        assert!(file.is_file(), "missing fuzz target {}", file.display());
    }
}
