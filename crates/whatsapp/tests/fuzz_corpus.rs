//! Replays every fuzz corpus file through the parsers on stable Rust, so `cargo
//! test --workspace` keeps exercising what `cargo fuzz` found (and the hand-made
//! nasty inputs it started from) without a nightly toolchain.

use std::path::PathBuf;

use casebook_kit::fuzz_checks::corpus_and_seeds;

use casebook_whatsapp::client::fuzzing::check_scram_input;
use casebook_whatsapp::cluster::frame::check_link_input;
use casebook_whatsapp::xml::fuzzing::{check_frame_input, check_stream_input};

/// Every input for `target`: its corpus and its seeds (at least 10 of each).
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    corpus_and_seeds(&fuzz_dir, target, 10)
}

#[test]
fn stream_parser_corpus_replays_cleanly() {
    let mut stanzas = 0;
    for (path, data) in corpus("stream_parser") {
        let result = std::panic::catch_unwind(|| check_stream_input(&data));
        match result {
            Ok(checked) => stanzas += checked,
            Err(_) => panic!("{} breaks an invariant", path.display()),
        }
    }
    // The corpus holds valid streams, so the round trip was really exercised.
    assert!(stanzas >= 100, "only {stanzas} stanzas round-tripped");
}

#[test]
fn framed_parser_corpus_replays_cleanly() {
    let mut stanza_frames = 0;
    for (path, data) in corpus("framed_parser") {
        match std::panic::catch_unwind(|| check_frame_input(&data)) {
            Ok(was_stanza) => stanza_frames += usize::from(was_stanza),
            Err(_) => panic!("{} breaks an invariant", path.display()),
        }
    }
    assert!(
        stanza_frames >= 3,
        "only {stanza_frames} stanza frames round-tripped"
    );
}

#[test]
fn link_frame_corpus_replays_cleanly() {
    let mut frames = 0;
    for (path, data) in corpus("link_frame") {
        match std::panic::catch_unwind(|| check_link_input(&data)) {
            Ok(decoded) => frames += decoded,
            Err(_) => panic!("{} breaks an invariant", path.display()),
        }
    }
    // The seeds hold whole sessions, so the re-encoding was really exercised.
    assert!(frames >= 20, "only {frames} link frames round-tripped");
}

#[test]
fn scram_corpus_replays_cleanly() {
    let mut parsed = 0;
    for (path, data) in corpus("scram") {
        match std::panic::catch_unwind(|| check_scram_input(&data)) {
            Ok(was_parsed) => parsed += usize::from(was_parsed),
            Err(_) => panic!("{} breaks an invariant", path.display()),
        }
    }
    // The corpus holds well-formed messages of both ends, so the accepting paths
    // (re-encoding, the server's answer parsed by the client) were really exercised.
    assert!(parsed >= 15, "only {parsed} SCRAM messages parsed");
}
