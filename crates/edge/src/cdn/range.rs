//! The `Range` request header (RFC 9110 §14), for one representation of a known
//! length.
//!
//! Answers, for a `GET` (a `HEAD` ignores `Range`):
//! - no header, a unit other than `bytes`, or **several ranges** (`bytes=0-1,5-6`)
//!   → [`RangeOutcome::Full`]: 200 with the whole representation. RFC 9110 lets a
//!   server ignore `Range`; serving multipart/byteranges buys players nothing (HLS
//!   players ask for one range at a time) and costs a parser and a body format;
//! - one satisfiable range (`a-b`, `a-`, `-n`) → [`RangeOutcome::Partial`], the
//!   bytes `start..=end` with `end` clamped to the last byte: 206 with
//!   `Content-Range: bytes start-end/len`;
//! - one range that cannot be satisfied (`a ≥ len`, `-0`, any range of an empty
//!   representation) or is invalid (`b < a`, not digits, a number over `u64`)
//!   → [`RangeOutcome::Unsatisfiable`]: 416 with `Content-Range: bytes */len`
//!   (invalid specs are answered 416 as nginx does; RFC 9110 §15.5.17 allows it);
//! - a header value that is not visible ASCII → [`RangeOutcome::Malformed`]: 400.
//!
//! Guaranteed (fuzzed): never panics; `Partial` always has `start ≤ end < len`.
//! Bounded: the header is read once, no allocation.

/// What to answer for a request's `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOutcome {
    /// The whole representation (no range, an ignored one, or several).
    Full,
    /// The bytes `start..=end` (inclusive, `end < len`).
    Partial { start: u64, end: u64 },
    /// 416 Range Not Satisfiable.
    Unsatisfiable,
    /// 400: the header is not visible ASCII.
    Malformed,
}

/// Evaluates a `Range` header value against a representation of `len` bytes.
pub fn evaluate(header: Option<&[u8]>, len: u64) -> RangeOutcome {
    let Some(raw) = header else {
        return RangeOutcome::Full;
    };
    let Ok(value) = std::str::from_utf8(raw) else {
        return RangeOutcome::Malformed;
    };
    if !value
        .bytes()
        .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
    {
        return RangeOutcome::Malformed;
    }
    let value = value.trim_matches([' ', '\t']);
    let Some((unit, specs)) = value.split_once('=') else {
        return RangeOutcome::Unsatisfiable;
    };
    if !unit.trim_matches([' ', '\t']).eq_ignore_ascii_case("bytes") {
        return RangeOutcome::Full;
    }
    if specs.contains(',') {
        return RangeOutcome::Full;
    }
    let Some((first, last)) = specs.trim_matches([' ', '\t']).split_once('-') else {
        return RangeOutcome::Unsatisfiable;
    };
    if len == 0 {
        return RangeOutcome::Unsatisfiable;
    }
    match (first, last) {
        ("", suffix) => match number(suffix) {
            Some(0) | None => RangeOutcome::Unsatisfiable,
            Some(n) => RangeOutcome::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
        },
        (first, "") => match number(first) {
            Some(start) if start < len => RangeOutcome::Partial {
                start,
                end: len - 1,
            },
            _ => RangeOutcome::Unsatisfiable,
        },
        (first, last) => match (number(first), number(last)) {
            (Some(start), Some(end)) if start <= end && start < len => RangeOutcome::Partial {
                start,
                end: end.min(len - 1),
            },
            _ => RangeOutcome::Unsatisfiable,
        },
    }
}

/// A non-empty run of ASCII digits that fits a `u64`.
fn number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::RangeOutcome::*;
    use super::*;

    fn eval(header: &str, len: u64) -> RangeOutcome {
        evaluate(Some(header.as_bytes()), len)
    }

    #[test]
    fn single_ranges() {
        assert_eq!(eval("bytes=0-9", 100), Partial { start: 0, end: 9 });
        assert_eq!(eval("bytes=90-", 100), Partial { start: 90, end: 99 });
        assert_eq!(eval("bytes=-10", 100), Partial { start: 90, end: 99 });
        assert_eq!(eval("bytes=-1000", 100), Partial { start: 0, end: 99 });
        assert_eq!(eval("bytes=50-1000", 100), Partial { start: 50, end: 99 });
        assert_eq!(eval("BYTES = 1-1", 100), Partial { start: 1, end: 1 });
        assert_eq!(eval("bytes=99-99", 100), Partial { start: 99, end: 99 });
    }

    #[test]
    fn unsatisfiable_and_invalid_ranges() {
        for header in [
            "bytes=100-",
            "bytes=100-200",
            "bytes=-0",
            "bytes=5-2",
            "bytes=a-b",
            "bytes=-",
            "bytes=1",
            "bytes",
            "bytes=99999999999999999999-",
            "bytes=+1-2",
        ] {
            assert_eq!(eval(header, 100), Unsatisfiable, "{header}");
        }
        assert_eq!(eval("bytes=0-", 0), Unsatisfiable);
    }

    #[test]
    fn ignored_ranges_serve_the_whole_representation() {
        assert_eq!(evaluate(None, 100), Full);
        assert_eq!(eval("items=0-1", 100), Full);
        assert_eq!(eval("bytes=0-1,5-6", 100), Full);
    }

    #[test]
    fn non_ascii_headers_are_malformed() {
        assert_eq!(evaluate(Some(b"bytes=0-\xff"), 100), Malformed);
        assert_eq!(evaluate(Some(b"bytes=0-1\x01"), 100), Malformed);
    }
}
