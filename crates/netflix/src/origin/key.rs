//! Object keys and title ids, validated once at the edge of the origin.
//!
//! Guaranteed: an [`ObjectKey`] is 1..=[`MAX_KEY_LEN`] bytes of `[A-Za-z0-9._-]`
//! segments joined by single `/`, none of them `.` or `..`, never starting or ending
//! with `/` — so it can name nothing outside the store's root, whatever the store
//! (a directory, a bucket). A [`TitleId`] is `[a-z0-9-]{1,64}` (the wire contract).
//! [`ObjectKey::from_url_path`] decodes percent-escapes once and validates the
//! result, so `%2e%2e`, `%2f..` and double-encoded traversal are refused like the
//! plain forms.
//!
//! Not guaranteed: that the object exists.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest object key accepted.
pub const MAX_KEY_LEN: usize = 1024;
/// The longest title id (the wire contract).
pub const MAX_TITLE_ID_LEN: usize = 64;

/// Why a key or a title id is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key is empty")]
    Empty,
    #[error("the key is longer than {MAX_KEY_LEN} bytes")]
    TooLong,
    #[error("absolute paths are refused")]
    Absolute,
    #[error("`.` and `..` segments are refused")]
    Traversal,
    #[error("empty path segments (`//`, a trailing `/`) are refused")]
    EmptySegment,
    #[error("a bad percent-escape")]
    BadEscape,
    #[error("the character {0:?} is not allowed in a key (only A-Z a-z 0-9 . _ - and /)")]
    BadChar(char),
    #[error("a title id is 1 to 64 of a-z, 0-9 and -")]
    BadTitleId,
}

/// A validated object key, e.g. `titles/sample/720p/seg00001.ts`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Validates a key as stored (no escapes).
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
        for segment in key.split('/') {
            if segment.is_empty() {
                return Err(KeyError::EmptySegment);
            }
            if segment == "." || segment == ".." {
                return Err(KeyError::Traversal);
            }
            if let Some(c) = segment
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            {
                return Err(KeyError::BadChar(c));
            }
        }
        Ok(Self(key.to_owned()))
    }

    /// The key named by the part of a URL path after `/o/`: percent-escapes decoded
    /// once, then validated like [`ObjectKey::parse`]. A decoded `%` (double
    /// encoding) is refused as a bad character.
    pub fn from_url_path(raw: &str) -> Result<Self, KeyError> {
        if raw.len() > 3 * MAX_KEY_LEN {
            return Err(KeyError::TooLong);
        }
        let decoded = percent_decode(raw)?;
        // `/o//etc/passwd`, or `/o/%2fetc%2fpasswd`: an absolute path either way.
        if decoded.starts_with('/') || decoded.starts_with('\\') {
            return Err(KeyError::Absolute);
        }
        Self::parse(&decoded)
    }

    /// A key under a title: `titles/{id}/{rest}`.
    pub fn in_title(id: &TitleId, rest: &str) -> Result<Self, KeyError> {
        Self::parse(&format!("titles/{id}/{rest}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The object store's path for this key, the same text: every segment is plain
    /// ASCII that `object_store` keeps as it is (it would escape `~`, say).
    pub fn to_store_path(&self) -> object_store::path::Path {
        object_store::path::Path::from(self.0.as_str())
    }

    /// The last segment's extension, lowercased, if any.
    pub fn extension(&self) -> Option<String> {
        let name = self.0.rsplit('/').next().unwrap_or_default();
        name.rsplit_once('.')
            .map(|(_, ext)| ext.to_ascii_lowercase())
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn percent_decode(raw: &str) -> Result<String, KeyError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(KeyError::BadEscape)?;
            let hex = std::str::from_utf8(hex).map_err(|_| KeyError::BadEscape)?;
            let byte = u8::from_str_radix(hex, 16).map_err(|_| KeyError::BadEscape)?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| KeyError::BadEscape)
}

/// A title's id: `[a-z0-9-]{1,64}`, the directory its objects live under.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TitleId(String);

impl TitleId {
    pub fn parse(id: &str) -> Result<Self, KeyError> {
        let ok = (1..=MAX_TITLE_ID_LEN).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(id.to_owned()))
        } else {
            Err(KeyError::BadTitleId)
        }
    }

    /// The id a title's name gets: lowercased, every run of other characters one
    /// `-`, trimmed to 64. `None` when nothing is left (a name of only symbols).
    pub fn from_name(name: &str) -> Option<Self> {
        let mut slug = String::new();
        for c in name.chars().flat_map(char::to_lowercase) {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                slug.push(c);
            } else if !slug.is_empty() && !slug.ends_with('-') {
                slug.push('-');
            }
            if slug.len() >= MAX_TITLE_ID_LEN {
                break;
            }
        }
        slug.truncate(MAX_TITLE_ID_LEN);
        let slug = slug.trim_end_matches('-');
        Self::parse(slug).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TitleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TitleId {
    type Error = KeyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TitleId> for String {
    fn from(value: TitleId) -> Self {
        value.0
    }
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
        ] {
            assert_eq!(ObjectKey::parse(key).unwrap().as_str(), key);
            assert_eq!(ObjectKey::from_url_path(key).unwrap().as_str(), key);
        }
    }

    #[test]
    fn traversal_in_every_spelling_is_refused() {
        for raw in [
            "../etc/passwd",
            "titles/../../etc/passwd",
            "titles/./x",
            "%2e%2e/etc/passwd",
            "titles/%2E%2E/x",
            "titles%2f..%2fx",
            "%252e%252e/x",
            "/etc/passwd",
            "%2fetc/passwd",
            "..%5c..%5cwindows",
            "titles//x",
            "titles/x/",
            "titles/x%00.ts",
            "titles/a~b.ts",
            "titles/x%",
            "titles/x%zz",
            "titles/%c0%ae%c0%ae/x",
            "",
        ] {
            assert!(
                ObjectKey::from_url_path(raw).is_err(),
                "{raw:?} was accepted"
            );
        }
    }

    #[test]
    fn escapes_of_allowed_characters_decode() {
        assert_eq!(
            ObjectKey::from_url_path("titles/a%2Db/seg%30.ts")
                .unwrap()
                .as_str(),
            "titles/a-b/seg0.ts"
        );
    }

    #[test]
    fn title_ids_follow_the_contract() {
        assert!(TitleId::parse("big-buck-bunny-2").is_ok());
        for bad in ["", "Big", "a_b", "a/b", &"x".repeat(65)] {
            assert!(TitleId::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            TitleId::from_name("  Big Buck Bunny (2008)! ")
                .unwrap()
                .as_str(),
            "big-buck-bunny-2008"
        );
        assert_eq!(
            TitleId::from_name("Ünïcode ✓ ok").unwrap().as_str(),
            "n-code-ok"
        );
        assert!(TitleId::from_name("!!!").is_none());
        let long = TitleId::from_name(&"ab ".repeat(100)).unwrap();
        assert!(long.as_str().len() <= 64 && !long.as_str().ends_with('-'));
    }
}
