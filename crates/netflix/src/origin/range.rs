//! HTTP byte ranges (RFC 9110 §14) and entity-tag conditions (§13), as the origin
//! answers them.
//!
//! Guaranteed: a [`RangeAnswer::Partial`] range is non-empty and inside the object;
//! a `Range` the origin does not understand (another unit, bad syntax, several
//! ranges) is ignored — the whole object is sent, as RFC 9110 allows — while a
//! well-formed single range that starts past the end is [`RangeAnswer::Unsatisfiable`]
//! (416). No number in a header sizes anything: digits beyond `u64` are bad syntax.
//! Not supported: multipart/byteranges answers (several ranges get the whole object).

use std::ops::Range;

/// What to send for a `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeAnswer {
    /// 200 with the whole object.
    Full,
    /// 206 with these bytes.
    Partial(Range<u64>),
    /// 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// The answer to `Range: {header}` for an object of `size` bytes.
pub fn evaluate(header: Option<&str>, size: u64) -> RangeAnswer {
    let Some(header) = header else {
        return RangeAnswer::Full;
    };
    let Some(spec) = parse(header) else {
        return RangeAnswer::Full;
    };
    match spec {
        Spec::From(first) if first < size => RangeAnswer::Partial(first..size),
        Spec::Bounded(first, last) if first < size => {
            RangeAnswer::Partial(first..last.saturating_add(1).min(size))
        }
        Spec::Suffix(n) if n > 0 && size > 0 => RangeAnswer::Partial(size.saturating_sub(n)..size),
        _ => RangeAnswer::Unsatisfiable,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `first-last`, with first <= last.
    Bounded(u64, u64),
    /// `first-`.
    From(u64),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

/// One `bytes=` range spec; `None` for anything else (ignored by the caller).
fn parse(header: &str) -> Option<Spec> {
    let (unit, set) = header.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let spec = set.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    match (first.is_empty(), last.is_empty()) {
        (true, true) => None,
        (true, false) => Some(Spec::Suffix(number(last)?)),
        (false, true) => Some(Spec::From(number(first)?)),
        (false, false) => {
            let (first, last) = (number(first)?, number(last)?);
            (first <= last).then_some(Spec::Bounded(first, last))
        }
    }
}

fn number(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The opaque tags of an `If-None-Match` / `If-Match` list (`W/` dropped), or
/// `None` for `*`. Malformed members are skipped.
fn tags(header: &str) -> Option<Vec<&str>> {
    if header.trim() == "*" {
        return None;
    }
    Some(
        header
            .split(',')
            .filter_map(|tag| {
                let tag = tag.trim();
                let tag = tag.strip_prefix("W/").unwrap_or(tag);
                tag.strip_prefix('"')?.strip_suffix('"')
            })
            .collect(),
    )
}

/// Whether `If-None-Match: {header}` matches the object's `etag` (quoted, strong):
/// then a GET or HEAD is answered 304. Weak comparison, as RFC 9110 §13.1.2 says.
pub fn none_match(header: &str, etag: &str) -> bool {
    let opaque = etag.trim_matches('"');
    match tags(header) {
        None => true,
        Some(tags) => tags.contains(&opaque),
    }
}

/// Whether a `Range` applies under `If-Range: {header}`: only when it is the
/// object's strong ETag (a date, or a weak tag, means "send it whole").
pub fn if_range_holds(header: &str, etag: &str) -> bool {
    let header = header.trim();
    !header.starts_with("W/") && header.starts_with('"') && header == etag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_per_rfc_9110() {
        use RangeAnswer::*;
        assert_eq!(evaluate(None, 10), Full);
        assert_eq!(evaluate(Some("bytes=0-0"), 10), Partial(0..1));
        assert_eq!(evaluate(Some("bytes=2-5"), 10), Partial(2..6));
        assert_eq!(evaluate(Some("bytes=2-100"), 10), Partial(2..10));
        assert_eq!(evaluate(Some("bytes=7-"), 10), Partial(7..10));
        assert_eq!(evaluate(Some("bytes=-3"), 10), Partial(7..10));
        assert_eq!(evaluate(Some("bytes=-30"), 10), Partial(0..10));
        assert_eq!(evaluate(Some(" Bytes = 1 - 2 "), 10), Partial(1..3));
        assert_eq!(evaluate(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(evaluate(Some("bytes=10-20"), 10), Unsatisfiable);
        assert_eq!(evaluate(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(evaluate(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(evaluate(Some("bytes=-5"), 0), Unsatisfiable);
        // Ignored: whole object.
        for ignored in [
            "bytes=5-2",
            "bytes=0-1,4-5",
            "items=0-1",
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=99999999999999999999-",
            "0-1",
        ] {
            assert_eq!(evaluate(Some(ignored), 10), Full, "{ignored}");
        }
        assert_eq!(
            evaluate(Some("bytes=0-18446744073709551615"), u64::MAX),
            Partial(0..u64::MAX)
        );
    }

    #[test]
    fn entity_tags() {
        let etag = "\"abc\"";
        assert!(none_match("\"abc\"", etag));
        assert!(none_match("W/\"abc\"", etag));
        assert!(none_match("\"x\", \"abc\"", etag));
        assert!(none_match("*", etag));
        assert!(!none_match("\"abcd\"", etag));
        assert!(!none_match("abc", etag));
        assert!(if_range_holds("\"abc\"", etag));
        assert!(!if_range_holds("W/\"abc\"", etag));
        assert!(!if_range_holds("Tue, 01 Jan 2030 00:00:00 GMT", etag));
    }
}
