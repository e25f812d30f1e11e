//! Object keys: what may follow `/o/` in a tier's URL.
//!
//! A key is one to [`MAX_KEY_LEN`] bytes of `/`-separated segments, each made of
//! `A-Z a-z 0-9 . _ ~ -` (RFC 3986's unreserved characters), e.g.
//! `titles/sample/720p/seg00001.ts`.
//!
//! Guaranteed for every [`ObjectKey`]: no empty segment (so no leading `/`, no `//`,
//! no trailing `/`), no `.` or `..` segment, no percent-encoding, no NUL, backslash
//! or control character, at most [`MAX_KEY_LEN`] bytes — so a key can never climb
//! out of the namespace of whatever store it names, however the store decodes it.
//! `ObjectKey::from_path(&format!("/o/{key}"))` gives the key back (fuzzed).
//!
//! Not guaranteed: that the object exists, or that keys outside the wire contract's
//! shapes (`titles/{id}/…`) are refused — the tier is a cache, the origin decides.
//! Percent-encoded keys are refused outright, even harmless ones (`%41`): nothing in
//! the contract needs them, and one refusal rule is easier to trust than a decoder.

use std::fmt;

/// The longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// The URL prefix objects are served under.
pub const OBJECT_PREFIX: &str = "/o/";

/// A validated object key (without the `/o/` prefix).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

/// Why a key is refused (answered 400, field `key`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the path does not start with /o/")]
    NotAnObjectPath,
    #[error("the object key is empty")]
    Empty,
    #[error("the object key is longer than {MAX_KEY_LEN} bytes")]
    TooLong,
    #[error("the object key is an absolute path")]
    Absolute,
    #[error("the object key has an empty segment (`//` or a trailing `/`)")]
    EmptySegment,
    #[error("the object key climbs out of its directory (`.` or `..` segment)")]
    Traversal,
    #[error("the object key hides a traversal in percent-encoding (`%2e`, `%2f`, `%5c`, `%00`)")]
    EncodedTraversal,
    #[error("the object key is percent-encoded; keys are plain `A-Za-z0-9._~-` segments")]
    PercentEncoded,
    #[error("the object key has a character outside `A-Za-z0-9._~-` and `/` at byte {0}")]
    BadCharacter(usize),
}

impl ObjectKey {
    /// The key of a request path `/o/{key}` (the raw path, before any decoding).
    pub fn from_path(path: &str) -> Result<Self, KeyError> {
        let key = path
            .strip_prefix(OBJECT_PREFIX)
            .ok_or(KeyError::NotAnObjectPath)?;
        Self::parse(key)
    }

    /// Validates a bare key (`titles/a/master.m3u8`).
    pub fn parse(key: &str) -> Result<Self, KeyError> {
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong);
        }
        if key.starts_with('/') {
            return Err(KeyError::Absolute);
        }
        if key.contains('%') {
            return Err(if hides_traversal(key) {
                KeyError::EncodedTraversal
            } else {
                KeyError::PercentEncoded
            });
        }
        if let Some(at) = key.bytes().position(|b| !(b == b'/' || is_key_byte(b))) {
            return Err(KeyError::BadCharacter(at));
        }
        for segment in key.split('/') {
            match segment {
                "" => return Err(KeyError::EmptySegment),
                "." | ".." => return Err(KeyError::Traversal),
                _ => {}
            }
        }
        Ok(Self(key.to_owned()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL path the key is served at (`/o/{key}`): what signatures cover.
    pub fn path(&self) -> String {
        format!("{OBJECT_PREFIX}{}", self.0)
    }

    /// Everything up to and including the last `/` (empty for a top-level key):
    /// what relative URIs in a playlist at this key resolve against.
    pub fn directory(&self) -> &str {
        self.0.rfind('/').map_or("", |i| &self.0[..=i])
    }

    /// The extension after the last `.` of the last segment, if any.
    pub fn extension(&self) -> Option<&str> {
        let name = self.0.rsplit('/').next().unwrap_or(&self.0);
        name.rsplit_once('.').map(|(_, ext)| ext)
    }

    /// Whether the key names an HLS playlist (`.m3u8`).
    pub fn is_playlist(&self) -> bool {
        self.extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("m3u8"))
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// RFC 3986 unreserved characters, the only ones a key segment may hold.
fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-')
}

/// Whether a percent-encoded key encodes `.`, `/`, `\` or NUL: the escapes a
/// traversal hides behind.
fn hides_traversal(key: &str) -> bool {
    key.as_bytes().windows(3).filter(|w| w[0] == b'%').any(|w| {
        let code = std::str::from_utf8(&w[1..])
            .ok()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        matches!(code, Some(b'.' | b'/' | b'\\' | 0))
    })
}

/// A title id as the wire contract has it: `[a-z0-9-]{1,64}`.
pub fn is_title_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_keys_are_accepted() {
        for key in [
            "titles/sample/master.m3u8",
            "titles/sample/720p/index.m3u8",
            "titles/sample/720p/seg00001.ts",
            "catalog/sample.json",
            "a",
            "x/.hidden~v1",
        ] {
            let parsed = ObjectKey::parse(key).unwrap();
            assert_eq!(parsed.as_str(), key);
            assert_eq!(ObjectKey::from_path(&parsed.path()), Ok(parsed));
        }
    }

    #[test]
    fn traversal_and_absolute_paths_are_refused() {
        let cases = [
            ("/o/../etc/passwd", KeyError::Traversal),
            ("/o/titles/../../x", KeyError::Traversal),
            ("/o/titles/./x", KeyError::Traversal),
            ("/o/..", KeyError::Traversal),
            ("/o//etc/passwd", KeyError::Absolute),
            ("/o/a//b", KeyError::EmptySegment),
            ("/o/a/", KeyError::EmptySegment),
            ("/o/", KeyError::Empty),
            ("/o/%2e%2e/etc", KeyError::EncodedTraversal),
            ("/o/%2E%2E%2Fetc", KeyError::EncodedTraversal),
            ("/o/a%2fb", KeyError::EncodedTraversal),
            ("/o/a%5cb", KeyError::EncodedTraversal),
            ("/o/a%00b", KeyError::EncodedTraversal),
            ("/o/a%41", KeyError::PercentEncoded),
            ("/o/a\0b", KeyError::BadCharacter(1)),
            ("/o/a\\b", KeyError::BadCharacter(1)),
            ("/o/a b", KeyError::BadCharacter(1)),
            ("/x/a", KeyError::NotAnObjectPath),
        ];
        for (path, expected) in cases {
            assert_eq!(ObjectKey::from_path(path), Err(expected), "{path}");
        }
        let long = format!("/o/{}", "a".repeat(MAX_KEY_LEN + 1));
        assert_eq!(ObjectKey::from_path(&long), Err(KeyError::TooLong));
        let longest = format!("/o/{}", "a".repeat(MAX_KEY_LEN));
        assert!(ObjectKey::from_path(&longest).is_ok());
    }

    #[test]
    fn directory_and_extension() {
        let key = ObjectKey::parse("titles/t/720p/index.m3u8").unwrap();
        assert_eq!(key.directory(), "titles/t/720p/");
        assert_eq!(key.extension(), Some("m3u8"));
        assert!(key.is_playlist());
        let top = ObjectKey::parse("master.M3U8").unwrap();
        assert_eq!(top.directory(), "");
        assert!(top.is_playlist());
        assert_eq!(ObjectKey::parse("a.b/c").unwrap().extension(), None);
    }

    #[test]
    fn title_ids() {
        assert!(is_title_id("sample-1"));
        assert!(!is_title_id(""));
        assert!(!is_title_id("Sample"));
        assert!(!is_title_id(&"a".repeat(65)));
        assert!(!is_title_id("a/b"));
    }
}
