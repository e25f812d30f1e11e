//! What the netflix fuzz targets check (`fuzz/fuzz_targets/<name>.rs` call these;
//! `tests/fuzz_corpus.rs` replays every committed input through them on stable).
//! Each panics when an invariant breaks and returns how many inputs it accepted,
//! so the replay can tell that the corpus reaches past the refusals.

use crate::origin::key::ObjectKey;
use crate::origin::range::{self, RangeAnswer};
use crate::pipeline::hls::{parse_master, parse_media};

/// A target's check.
pub type Check = fn(&[u8]) -> usize;

/// Every target, by the name of its fuzz target and corpus directory.
pub const TARGETS: &[(&str, Check)] = &[
    ("playlist", check_playlist),
    ("object_key", check_object_key),
    ("range", check_range),
];

/// Arbitrary bytes as either playlist: never a panic, and what parses renders to
/// text that parses to the same value.
pub fn check_playlist(data: &[u8]) -> usize {
    let Ok(text) = std::str::from_utf8(data) else {
        return 0;
    };
    let mut parsed = 0;
    if let Ok(master) = parse_master(text) {
        let again = parse_master(&master.to_string())
            .unwrap_or_else(|e| panic!("the rendered master does not parse: {e}\n{master}"));
        assert_eq!(again, master);
        assert!(!master.variants.is_empty());
        parsed += 1;
    }
    if let Ok(media) = parse_media(text) {
        let again = parse_media(&media.to_string())
            .unwrap_or_else(|e| panic!("the rendered media playlist does not parse: {e}\n{media}"));
        assert_eq!(again, media);
        parsed += 1;
    }
    parsed
}

/// Arbitrary bytes as the path after `/o/`: an accepted key has no `.`/`..`
/// segment, no empty segment, is relative, re-validates as itself, and is the
/// object store's path unchanged (nothing re-encoded behind the check's back).
pub fn check_object_key(data: &[u8]) -> usize {
    let Ok(raw) = std::str::from_utf8(data) else {
        return 0;
    };
    let Ok(key) = ObjectKey::from_url_path(raw) else {
        return 0;
    };
    let text = key.as_str();
    assert!(!text.starts_with('/') && !text.ends_with('/'), "{text:?}");
    for segment in text.split('/') {
        assert!(
            !segment.is_empty() && segment != "." && segment != "..",
            "{text:?}"
        );
    }
    assert!(!text.contains('%') && !text.contains('\\'), "{text:?}");
    assert_eq!(ObjectKey::parse(text).as_ref(), Ok(&key));
    assert_eq!(key.to_store_path().as_ref(), text);
    1
}

/// Arbitrary bytes as an object size (the first 8, little-endian) and a `Range`
/// header (the rest): a partial answer is non-empty and inside the object; the
/// entity-tag helpers never panic.
pub fn check_range(data: &[u8]) -> usize {
    if data.len() < 8 {
        return 0;
    }
    let size = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    let Ok(header) = std::str::from_utf8(&data[8..]) else {
        return 0;
    };
    let _ = range::none_match(header, "\"abc\"");
    let _ = range::if_range_holds(header, "\"abc\"");
    match range::evaluate(Some(header), size) {
        RangeAnswer::Partial(r) => {
            assert!(
                r.start < r.end && r.end <= size,
                "{r:?} of {size} for {header:?}"
            );
            1
        }
        RangeAnswer::Full => 0,
        RangeAnswer::Unsatisfiable => {
            // Only a well-formed bytes range can be unsatisfiable.
            assert!(header.to_ascii_lowercase().contains("bytes"), "{header:?}");
            0
        }
    }
}
