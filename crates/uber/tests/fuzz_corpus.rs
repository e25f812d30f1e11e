//! Replays every fuzz corpus file through the RESP parsers on stable Rust, so
//! `cargo test --workspace` keeps exercising what `cargo fuzz` found (and the
//! hand-made nasty inputs it started from) without a nightly toolchain.

use std::path::PathBuf;

use casebook_uber::resp::fuzzing::{check_reply_input, check_request_input};

/// Every input for `target`: the corpus `cargo fuzz` grew (`fuzz/corpus/<target>`)
/// and the hand-made seeds (`fuzz/seeds/<target>`, which `cmin` must not prune).
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for kind in ["corpus", "seeds"] {
        let dir = fuzz_dir.join(kind).join(target);
        let before = files.len();
        for entry in std::fs::read_dir(&dir)
            .unwrap_or_else(|error| panic!("corpus {}: {error}", dir.display()))
        {
            let path = entry.expect("corpus entry").path();
            if path.is_file() {
                let data = std::fs::read(&path).expect("corpus file");
                files.push((path, data));
            }
        }
        assert!(
            files.len() - before >= 10,
            "{} is nearly empty",
            dir.display()
        );
    }
    files.sort();
    files
}

#[test]
fn request_parser_corpus_replays_cleanly() {
    let mut commands = 0;
    for (path, data) in corpus("request_parser") {
        match std::panic::catch_unwind(|| check_request_input(&data)) {
            Ok(parsed) => commands += parsed,
            Err(_) => panic!("{} breaks an invariant", path.display()),
        }
    }
    // The seeds hold valid requests, so the chunking comparison really ran.
    assert!(commands >= 15, "only {commands} commands parsed");
}

#[test]
fn reply_reader_corpus_replays_cleanly() {
    let mut frames = 0;
    for (path, data) in corpus("reply_reader") {
        match std::panic::catch_unwind(|| check_reply_input(&data)) {
            Ok(read) => frames += read,
            Err(_) => panic!("{} breaks an invariant", path.display()),
        }
    }
    assert!(frames >= 15, "only {frames} replies read");
}
