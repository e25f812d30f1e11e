//! A cached object and the headers that describe it: type by extension, strong
//! ETag, freshness.
//!
//! Guaranteed: every object has a strong ETag — the upstream's when it sent a
//! well-formed strong one (so every tier of the path and the origin agree), else
//! the first 128 bits of the body's SHA-256 in hex; a playlist served rewritten
//! gets its own ETag per expiry ([`Object::rewritten_etag`]), since its bytes
//! differ per expiry. `Content-Type` is decided by the key's extension (the
//! contract's three), else the upstream's, else `application/octet-stream`.
//!
//! Freshness: segments and other non-playlist objects never go stale in a tier
//! (the contract's keys are immutable once published: a new encode is a new key);
//! playlists are fresh for the tier's `playlist_ttl`, judged on the injected clock.
//! The upstream's `Cache-Control` is not read: the tier's rules are the contract's.

use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::key::ObjectKey;

/// `Cache-Control` of segments and other immutable objects: a year, immutable.
pub const IMMUTABLE_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";
/// Longest ETag taken from an upstream.
const MAX_ETAG_LEN: usize = 128;

/// What kind of object a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An HLS playlist (`.m3u8`): short-lived, rewritten per response.
    Playlist,
    /// Anything else: immutable.
    Immutable,
}

/// One object as a tier holds it.
#[derive(Debug, Clone)]
pub struct Object {
    pub body: Bytes,
    /// Strong, quoted (`"…"`).
    pub etag: String,
    pub content_type: String,
    pub kind: Kind,
    /// When it was fetched, on the injected clock.
    pub stored_at: Instant,
}

impl Object {
    /// An object fetched for `key`, with the upstream's `ETag` and `Content-Type`
    /// headers if it sent them.
    pub fn new(
        key: &ObjectKey,
        body: Bytes,
        upstream_etag: Option<&str>,
        upstream_type: Option<&str>,
        stored_at: Instant,
    ) -> Self {
        let kind = if key.is_playlist() {
            Kind::Playlist
        } else {
            Kind::Immutable
        };
        // A playlist's upstream ETag may name a rewritten body; ours names what is stored.
        let etag = upstream_etag
            .filter(|_| kind == Kind::Immutable)
            .filter(|e| is_strong_etag(e))
            .map(str::to_owned)
            .unwrap_or_else(|| content_etag(&body));
        Self {
            content_type: content_type(key, upstream_type),
            body,
            etag,
            kind,
            stored_at,
        }
    }

    /// Whether the object may still be served without asking upstream at `now`.
    pub fn is_fresh(&self, now: Instant, playlist_ttl: Duration) -> bool {
        match self.kind {
            Kind::Immutable => true,
            Kind::Playlist => now.saturating_duration_since(self.stored_at) < playlist_ttl,
        }
    }

    /// Bytes the object is charged in a cache: the body plus a fixed overhead for
    /// the key, the headers and the bookkeeping.
    pub fn weight(&self, key_len: usize) -> u64 {
        self.body.len() as u64 + key_len as u64 + self.etag.len() as u64 + 256
    }

    /// The ETag of this playlist rewritten for expiry `exp`.
    pub fn rewritten_etag(&self, exp: u64) -> String {
        let mut hash = Sha256::new();
        hash.update(self.etag.as_bytes());
        hash.update(b"\n");
        hash.update(exp.to_string().as_bytes());
        format!("\"{}\"", hex(&hash.finalize()[..16]))
    }
}

/// The ETag of a body: the first 128 bits of its SHA-256.
pub fn content_etag(body: &[u8]) -> String {
    format!("\"{}\"", hex(&Sha256::digest(body)[..16]))
}

/// `"…"` of visible ASCII other than `"` (RFC 9110 §8.8.3), not weak, not too long.
pub fn is_strong_etag(value: &str) -> bool {
    value.len() >= 2
        && value.len() <= MAX_ETAG_LEN
        && value.starts_with('"')
        && value.ends_with('"')
        && value[1..value.len() - 1]
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b))
}

/// The `Content-Type` for `key`.
pub fn content_type(key: &ObjectKey, upstream: Option<&str>) -> String {
    let by_extension = match key.extension().map(str::to_ascii_lowercase).as_deref() {
        Some("m3u8") => Some("application/vnd.apple.mpegurl"),
        Some("ts") => Some("video/mp2t"),
        Some("m4s" | "mp4") => Some("video/mp4"),
        Some("json") => Some("application/json"),
        _ => None,
    };
    by_extension
        .map(str::to_owned)
        .or_else(|| {
            upstream
                .filter(|t| t.len() <= 128 && t.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "application/octet-stream".to_owned())
}

/// The `Cache-Control` a response of this kind carries.
pub fn cache_control(kind: Kind, playlist_ttl: Duration) -> String {
    match kind {
        Kind::Immutable => IMMUTABLE_CACHE_CONTROL.to_owned(),
        Kind::Playlist => format!("public, max-age={}", playlist_ttl.as_secs()),
    }
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison, RFC 9110
/// §13.1.2: `W/` prefixes ignored; `*` matches anything).
pub fn none_match(header: &str, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    let etag = bare(etag);
    header
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || bare(candidate) == etag)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> ObjectKey {
        ObjectKey::parse(k).unwrap()
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(
            content_type(&key("a/m.m3u8"), Some("text/plain")),
            "application/vnd.apple.mpegurl"
        );
        assert_eq!(content_type(&key("a/s.ts"), None), "video/mp2t");
        assert_eq!(content_type(&key("a/s.m4s"), None), "video/mp4");
        assert_eq!(content_type(&key("a/s.MP4"), None), "video/mp4");
        assert_eq!(
            content_type(&key("a/x.bin"), Some("image/png")),
            "image/png"
        );
        assert_eq!(
            content_type(&key("a/x"), Some("bad\ntype")),
            "application/octet-stream"
        );
    }

    #[test]
    fn etags_are_strong_and_upstreams_kept_for_segments_only() {
        let now = Instant::now();
        let seg = Object::new(
            &key("a/s.ts"),
            Bytes::from_static(b"x"),
            Some("\"up\""),
            None,
            now,
        );
        assert_eq!(seg.etag, "\"up\"");
        let weak = Object::new(
            &key("a/s.ts"),
            Bytes::from_static(b"x"),
            Some("W/\"up\""),
            None,
            now,
        );
        assert_eq!(weak.etag, content_etag(b"x"));
        let list = Object::new(
            &key("a/i.m3u8"),
            Bytes::from_static(b"#EXTM3U"),
            Some("\"up\""),
            None,
            now,
        );
        assert_eq!(list.etag, content_etag(b"#EXTM3U"));
        assert_ne!(list.rewritten_etag(1), list.rewritten_etag(2));
        assert!(is_strong_etag(&list.rewritten_etag(1)));
    }

    #[test]
    fn playlists_go_stale_segments_do_not() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(2);
        let list = Object::new(&key("a/i.m3u8"), Bytes::new(), None, None, t0);
        let seg = Object::new(&key("a/s.ts"), Bytes::new(), None, None, t0);
        assert!(list.is_fresh(t0 + Duration::from_secs(1), ttl));
        assert!(!list.is_fresh(t0 + ttl, ttl));
        assert!(seg.is_fresh(t0 + Duration::from_secs(1 << 30), ttl));
    }

    #[test]
    fn if_none_match_compares_weakly() {
        assert!(none_match("\"a\"", "\"a\""));
        assert!(none_match("W/\"a\"", "\"a\""));
        assert!(none_match("\"b\", \"a\"", "\"a\""));
        assert!(none_match("*", "\"a\""));
        assert!(!none_match("\"b\"", "\"a\""));
    }
}
