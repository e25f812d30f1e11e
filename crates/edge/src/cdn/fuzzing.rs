//! The invariants the CDN's fuzz targets check (`crates/edge/fuzz`), shared with
//! the stable corpus replay (`tests/fuzz_corpus.rs`) so both exercise the same
//! property. Each check panics when an invariant breaks; a refused input is an
//! expected outcome, not a finding. Not a public API.

use casebook_kit::fuzz_checks::Check;

use super::key::{MAX_KEY_LEN, ObjectKey};
use super::playlist;
use super::range::{self, RangeOutcome};
use crate::signing::SigningKey;

/// Every target and its check, for the corpus replay.
pub const TARGETS: &[(&str, Check)] = &[
    ("object_key", object_key),
    ("range_header", range_header),
    ("playlist_rewrite", playlist_rewrite),
];

fn assert_valid(key: &ObjectKey) {
    let text = key.as_str();
    assert!(
        !text.is_empty() && text.len() <= MAX_KEY_LEN,
        "length of {text:?}"
    );
    assert!(
        !text.contains('%') && !text.contains('\\') && !text.contains('\0'),
        "{text:?}"
    );
    for segment in text.split('/') {
        assert!(
            !matches!(segment, "" | "." | ".."),
            "segment {segment:?} in {text:?}"
        );
    }
    assert_eq!(
        ObjectKey::from_path(&key.path()).as_ref(),
        Ok(key),
        "round trip"
    );
}

/// A request path or bare key: an accepted key holds no traversal and round-trips;
/// a reference resolved against a playlist key is a valid key too.
pub fn object_key(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = ObjectKey::from_path(text) {
        assert_valid(&key);
    }
    if let Ok(key) = ObjectKey::parse(text) {
        assert_valid(&key);
        assert_eq!(key.path(), format!("/o/{text}"));
    }
    let base = ObjectKey::parse("titles/t/720p/index.m3u8").expect("a valid base");
    if let Some(key) = playlist::resolve(&base, text) {
        assert_valid(&key);
    }
}

/// The first 8 bytes are the representation's length (little-endian, masked to
/// keep it realistic), the rest the header: a partial range lies inside it.
pub fn range_header(data: &[u8]) {
    let (len, header) = match data.split_first_chunk::<8>() {
        Some((len, rest)) => (u64::from_le_bytes(*len) & 0xffff_ffff, rest),
        None => (100, data),
    };
    match range::evaluate(Some(header), len) {
        RangeOutcome::Partial { start, end } => {
            assert!(start <= end && end < len, "{start}-{end} of {len}");
        }
        RangeOutcome::Full | RangeOutcome::Unsatisfiable | RangeOutcome::Malformed => {}
    }
}

/// Any text as a playlist: as many lines out as in; every line that resolves is
/// replaced by its key's path signed for it; a second rewrite with another
/// expiry equals a first rewrite with it; every referenced key is valid.
pub fn playlist_rewrite(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let base = ObjectKey::parse("titles/t/720p/index.m3u8").expect("a valid base");
    let signing = SigningKey::from_bytes(vec![9; 32]).expect("a key");
    let once = playlist::rewrite(&base, &text, &signing, 1_000);
    assert_eq!(
        once.split('\n').count(),
        text.split('\n').count(),
        "line count"
    );
    for (input, output) in text.split('\n').zip(once.split('\n')) {
        let input = input.strip_suffix('\r').unwrap_or(input);
        let output = output.strip_suffix('\r').unwrap_or(output);
        let trimmed = input.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match playlist::resolve(&base, input) {
            Some(key) => {
                let (path, query) = output.split_once('?').expect("a signed URL");
                assert_eq!(path, key.path());
                assert_eq!(signing.verify(path, Some(query), 1_000), Ok(()));
            }
            None => assert_eq!(output, input, "an unresolvable line is kept"),
        }
    }
    let twice = playlist::rewrite(&base, &once, &signing, 2_000);
    assert_eq!(
        twice,
        playlist::rewrite(&base, &text, &signing, 2_000),
        "re-signing"
    );
    for key in playlist::referenced_keys(&base, &text) {
        assert_valid(&key);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_checks_hold_on_hand_picked_inputs() {
        for (_, check) in super::TARGETS {
            for input in [
                &b""[..],
                b"/o/titles/a/b.ts",
                b"/o/../x",
                b"\x00\x00\x00\x00\x00\x00\x00\x00bytes=0-",
                b"#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\nseg1.ts\r\n../../../x\n/o/a?exp=1",
            ] {
                check(input);
            }
        }
    }
}
