//! HLS playlists (RFC 8216) as an edge serves them: every URI re-pointed at this
//! tier's `/o/…` namespace and signed with the request's expiry.
//!
//! What is a URI here: every line that is neither blank nor a `#` line, and the
//! quoted `URI="…"` attribute of the tags that carry one (`EXT-X-KEY`,
//! `EXT-X-SESSION-KEY`, `EXT-X-MAP`, `EXT-X-MEDIA`, `EXT-X-I-FRAME-STREAM-INF`,
//! `EXT-X-SESSION-DATA`, `EXT-X-PART`, `EXT-X-PRELOAD-HINT`,
//! `EXT-X-RENDITION-REPORT`). Each is resolved against the playlist's own key
//! ([`resolve`]): a relative reference against the key's directory (with `.` and
//! `..` removed as RFC 3986 §5.2.4 does), an `/o/{key}` path as that key; its query
//! and fragment are dropped (a signature covers the path; a stale `exp`/`sig` from
//! the tier above must not survive). The result is `/o/{key}?exp=…&sig=…`.
//!
//! Left untouched, on purpose: URIs with a scheme (`https://…`, `data:`, `skd://`),
//! network-path references (`//host/…`), absolute paths outside `/o/`, and
//! references that do not resolve to a valid [`ObjectKey`] (climbing above the root,
//! percent-encoded): the tier cannot serve those, and signing them would vouch for
//! something it never checked. Everything else — tags, comments, blank lines, the
//! line endings (`\n` or `\r\n`) and a missing final newline — is copied byte for
//! byte.
//!
//! Guaranteed (fuzzed): never panics on any text; the output has as many lines as
//! the input; every rewritten URI verifies with [`SigningKey::verify`] for its own
//! path and the given expiry; rewriting an already rewritten playlist (the tier
//! above already did it) gives the same keys, re-signed. Bounded: one pass, output
//! at most input + `lines × (3 + directory + signature)` bytes.
//!
//! The cache stores the playlist as the upstream sent it; the rewrite runs per
//! response, since every response carries its own expiry.

use crate::signing::SigningKey;

use super::key::{OBJECT_PREFIX, ObjectKey};

/// The tags whose `URI` attribute names a resource (RFC 8216 and its successor draft).
const TAGS_WITH_URI: &[&str] = &[
    "#EXT-X-KEY:",
    "#EXT-X-SESSION-KEY:",
    "#EXT-X-MAP:",
    "#EXT-X-MEDIA:",
    "#EXT-X-I-FRAME-STREAM-INF:",
    "#EXT-X-SESSION-DATA:",
    "#EXT-X-PART:",
    "#EXT-X-PRELOAD-HINT:",
    "#EXT-X-RENDITION-REPORT:",
];

/// The key a playlist reference names, seen from the playlist at `base`; `None`
/// when the reference is not something this tier serves (see the module docs).
pub fn resolve(base: &ObjectKey, reference: &str) -> Option<ObjectKey> {
    let reference = reference.trim();
    let path = reference
        .split(['?', '#'])
        .next()
        .filter(|p| !p.is_empty())?;
    if has_scheme(path) || path.starts_with("//") {
        return None;
    }
    if path.starts_with('/') {
        return ObjectKey::parse(path.strip_prefix(OBJECT_PREFIX)?).ok();
    }
    let mut segments: Vec<&str> = base
        .directory()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let parts: Vec<&str> = path.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        match *part {
            "." => {}
            ".." => {
                segments.pop()?;
            }
            // An empty part (`a//b`, a trailing `/`) is no key; leave it alone.
            "" => return None,
            part => segments.push(part),
        }
        // `dir/..` or `dir/.` as the last part names a directory, not an object.
        if last && matches!(*part, "." | "..") {
            return None;
        }
    }
    ObjectKey::parse(&segments.join("/")).ok()
}

/// `scheme:` at the start (RFC 3986 §3.1), which makes a reference absolute.
fn has_scheme(reference: &str) -> bool {
    let Some((scheme, _)) = reference.split_once(':') else {
        return false;
    };
    let mut bytes = scheme.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// One line of a playlist, split for rewriting.
enum Line<'a> {
    /// Copied as it is.
    Verbatim(&'a str),
    /// A URI line: leading text, the reference, trailing text.
    Uri(&'a str),
    /// A tag with a quoted `URI` attribute: text before the value, the value, after.
    TagUri(&'a str, &'a str, &'a str),
}

fn classify(line: &str) -> Line<'_> {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Line::Verbatim(line);
    }
    if !trimmed.starts_with('#') {
        return Line::Uri(line);
    }
    if !TAGS_WITH_URI.iter().any(|tag| trimmed.starts_with(tag)) {
        return Line::Verbatim(line);
    }
    match uri_attribute(line) {
        Some((start, end)) => Line::TagUri(&line[..start], &line[start..end], &line[end..]),
        None => Line::Verbatim(line),
    }
}

/// The byte span of the quoted `URI` attribute's value in a tag line, walking the
/// attribute list (`NAME=value,NAME="quoted, value"`) so a `URI=` inside another
/// attribute's quoted value is never taken for it.
fn uri_attribute(line: &str) -> Option<(usize, usize)> {
    let bytes = line.as_bytes();
    let mut at = line.find(':')? + 1;
    while at < bytes.len() {
        let eq = at + line[at..].find('=')?;
        let name = line[at..eq].trim();
        let value_start = eq + 1;
        if bytes.get(value_start) == Some(&b'"') {
            let close = value_start + 1 + line[value_start + 1..].find('"')?;
            if name == "URI" {
                return Some((value_start + 1, close));
            }
            at = close + 1;
        } else {
            at = value_start
                + line[value_start..]
                    .find(',')
                    .unwrap_or(line.len() - value_start);
        }
        // Past the separating comma (if any) to the next name.
        if bytes.get(at) == Some(&b',') {
            at += 1;
        } else if at < bytes.len() {
            return None;
        }
    }
    None
}

/// Every key the playlist at `base` refers to, in order, each once: what a fill
/// fetches after the playlist itself.
pub fn referenced_keys(base: &ObjectKey, text: &str) -> Vec<ObjectKey> {
    let mut keys: Vec<ObjectKey> = Vec::new();
    for line in text.split('\n') {
        let reference = match classify(line.strip_suffix('\r').unwrap_or(line)) {
            Line::Verbatim(_) => continue,
            Line::Uri(uri) => uri,
            Line::TagUri(_, uri, _) => uri,
        };
        if let Some(key) = resolve(base, reference)
            && !keys.contains(&key)
        {
            keys.push(key);
        }
    }
    keys
}

/// The playlist at `base` with every URI it can serve re-pointed at `/o/{key}` and
/// signed until `exp` (module docs).
pub fn rewrite(base: &ObjectKey, text: &str, signing: &SigningKey, exp: u64) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 2);
    let signed = |reference: &str| -> Option<String> {
        let key = resolve(base, reference)?;
        let path = key.path();
        let query = signing.sign(&path, exp);
        Some(format!("{path}?{query}"))
    };
    let mut first = true;
    for raw in text.split('\n') {
        if !first {
            out.push('\n');
        }
        first = false;
        let (line, cr) = match raw.strip_suffix('\r') {
            Some(line) => (line, "\r"),
            None => (raw, ""),
        };
        match classify(line) {
            Line::Verbatim(line) => out.push_str(line),
            Line::Uri(uri) => match signed(uri) {
                Some(url) => out.push_str(&url),
                None => out.push_str(uri),
            },
            Line::TagUri(before, uri, after) => {
                out.push_str(before);
                match signed(uri) {
                    Some(url) => out.push_str(&url),
                    None => out.push_str(uri),
                }
                out.push_str(after);
            }
        }
        out.push_str(cr);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> ObjectKey {
        ObjectKey::parse(k).unwrap()
    }

    fn signing() -> SigningKey {
        SigningKey::from_bytes(vec![3; 32]).unwrap()
    }

    #[test]
    fn references_resolve_against_the_playlist_key() {
        let base = key("titles/t/master.m3u8");
        assert_eq!(
            resolve(&base, "720p/index.m3u8"),
            Some(key("titles/t/720p/index.m3u8"))
        );
        assert_eq!(
            resolve(&base, "./720p/index.m3u8"),
            Some(key("titles/t/720p/index.m3u8"))
        );
        assert_eq!(resolve(&base, "../u/x.ts"), Some(key("titles/u/x.ts")));
        assert_eq!(resolve(&base, "../../../x.ts"), None);
        assert_eq!(
            resolve(&base, "/o/titles/t/a.ts?exp=1&sig=2"),
            Some(key("titles/t/a.ts"))
        );
        assert_eq!(
            resolve(&base, "seg1.ts?x=1#frag"),
            Some(key("titles/t/seg1.ts"))
        );
        assert_eq!(resolve(&base, "https://cdn.example/x.ts"), None);
        assert_eq!(resolve(&base, "data:text/plain,hi"), None);
        assert_eq!(resolve(&base, "//host/x.ts"), None);
        assert_eq!(resolve(&base, "/etc/passwd"), None);
        assert_eq!(resolve(&base, "a%2e%2e/x"), None);
        assert_eq!(resolve(&base, "a/.."), None);
        assert_eq!(resolve(&base, "a//b"), None);
        assert_eq!(resolve(&key("top.m3u8"), "x.ts"), Some(key("x.ts")));
    }

    #[test]
    fn a_master_playlist_is_rewritten_and_signed() {
        let master = "#EXTM3U\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en, main\",URI=\"audio/index.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,CODECS=\"avc1.4d401e,mp4a.40.2\"\n\
360p/index.m3u8\n\
\n\
#EXT-X-STREAM-INF:BANDWIDTH=2800000\r\n\
720p/index.m3u8\r\n";
        let base = key("titles/t/master.m3u8");
        let out = rewrite(&base, master, &signing(), 5_000);
        let lines: Vec<&str> = out.split('\n').collect();
        assert_eq!(lines.len(), master.split('\n').count());
        assert!(lines[1].starts_with(
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en, main\",URI=\"/o/titles/t/audio/index.m3u8?exp=5000&sig="
        ));
        assert!(lines[1].ends_with('"'));
        assert_eq!(
            lines[2],
            "#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,CODECS=\"avc1.4d401e,mp4a.40.2\""
        );
        let (path, query) = lines[3].split_once('?').unwrap();
        assert_eq!(path, "/o/titles/t/360p/index.m3u8");
        assert_eq!(signing().verify(path, Some(query), 5_000), Ok(()));
        assert_eq!(lines[4], "");
        assert!(lines[6].starts_with("/o/titles/t/720p/index.m3u8?exp=5000&sig="));
        assert!(lines[6].ends_with('\r'), "CRLF kept");
        assert_eq!(lines[7], "");
        assert_eq!(
            referenced_keys(&base, master),
            vec![
                key("titles/t/audio/index.m3u8"),
                key("titles/t/360p/index.m3u8"),
                key("titles/t/720p/index.m3u8")
            ]
        );
    }

    #[test]
    fn media_playlist_maps_and_keys_are_signed_and_foreign_uris_kept() {
        let media = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n\
#EXT-X-KEY:METHOD=AES-128,URI=\"key.bin\",IV=0x1\n\
#EXT-X-MAP:URI=\"init.mp4\"\n\
#EXTINF:4.0,URI=\"not-a-uri\"\nseg00001.ts\n\
#EXTINF:4.0,\nhttps://elsewhere.example/seg.ts\n#EXT-X-ENDLIST";
        let base = key("titles/t/720p/index.m3u8");
        let out = rewrite(&base, media, &signing(), 9);
        assert!(out.contains("URI=\"/o/titles/t/720p/key.bin?exp=9&sig="));
        assert!(out.contains(",IV=0x1\n"));
        assert!(out.contains("#EXT-X-MAP:URI=\"/o/titles/t/720p/init.mp4?exp=9&sig="));
        assert!(out.contains("#EXTINF:4.0,URI=\"not-a-uri\"\n"));
        assert!(out.contains("\n/o/titles/t/720p/seg00001.ts?exp=9&sig="));
        assert!(out.contains("\nhttps://elsewhere.example/seg.ts\n"));
        assert!(out.ends_with("#EXT-X-ENDLIST"), "no newline added");
    }

    #[test]
    fn rewriting_a_rewritten_playlist_re_signs_the_same_keys() {
        let base = key("titles/t/720p/index.m3u8");
        let once = rewrite(&base, "#EXTM3U\nseg1.ts\n", &signing(), 10);
        let twice = rewrite(&base, &once, &signing(), 20);
        assert_eq!(twice, rewrite(&base, "#EXTM3U\nseg1.ts\n", &signing(), 20));
    }

    #[test]
    fn a_uri_attribute_inside_another_quoted_value_is_not_taken() {
        let line = "#EXT-X-SESSION-DATA:DATA-ID=\"x\",VALUE=\"URI=a,b\",URI=\"b.json\"";
        let (start, end) = uri_attribute(line).unwrap();
        assert_eq!(&line[start..end], "b.json");
        assert_eq!(uri_attribute("#EXT-X-MAP:BYTERANGE=\"1@0\""), None);
        assert_eq!(uri_attribute("#EXT-X-MAP:URI=\"unterminated"), None);
    }
}
