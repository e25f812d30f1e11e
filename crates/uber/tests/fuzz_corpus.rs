//! Replays every fuzz corpus file through its check on stable Rust (the RESP
//! parsers, the gossip datagram, the location snapshot), so
//! `cargo test --workspace` keeps exercising what `cargo fuzz` found (and the
//! hand-made nasty inputs it started from) without a nightly toolchain.

use std::path::PathBuf;

use casebook_kit::fuzz_checks::corpus_and_seeds;

use casebook_uber::resp::fuzzing::{check_command_input, check_reply_input, check_request_input};

/// Every input for `target`: its corpus and its seeds (at least 10 of each).
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    corpus_and_seeds(&fuzz_dir, target, 10)
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

#[test]
fn commands_corpus_replays_cleanly() {
    let mut ran = 0;
    for (path, data) in corpus("commands") {
        match std::panic::catch_unwind(|| check_command_input(&data)) {
            Ok(commands) => ran += commands,
            Err(_) => panic!("{} breaks an invariant", path.display()),
        }
    }
    // The seeds hold the adversarial commands (huge COUNT, extreme ZRANGE
    // indexes, a request-sized CONFIG GET pattern): they really ran.
    assert!(ran >= 60, "only {ran} commands ran");
}

#[test]
fn gossip_and_location_corpora_replay_cleanly() {
    use casebook_uber::fuzz_checks::TARGETS;
    let fuzz_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (target, check) in TARGETS {
        let source = fuzz_dir.join("fuzz_targets").join(format!("{target}.rs"));
        assert!(source.is_file(), "no fuzz target {}", source.display());
        let mut decoded = 0;
        for (path, data) in corpus(target) {
            match std::panic::catch_unwind(|| check(&data)) {
                Ok(n) => decoded += n,
                Err(_) => panic!("{} breaks an invariant", path.display()),
            }
        }
        // Real packets and snapshots are in the corpus: the checks ran past
        // the decoders' refusals.
        assert!(decoded >= 10, "{target}: only {decoded} states decoded");
    }
}
