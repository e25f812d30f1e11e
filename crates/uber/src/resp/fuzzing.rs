//! The invariants the fuzz targets check, shared with the stable corpus replay
//! (`tests/fuzz_corpus.rs`) so both exercise the same property.
//!
//! Each function panics when an invariant breaks; malformed input answered with
//! a protocol error is the expected outcome, not a finding.

use bytes::BytesMut;

use super::frame::Frame;
use super::parse::{INLINE_MAX, Limits, ProtocolError, RequestParser};

fn run(
    input: &[u8],
    chunk: impl Fn(usize) -> usize,
    limits: Limits,
) -> (Vec<Vec<bytes::Bytes>>, Option<ProtocolError>) {
    let mut parser = RequestParser::new(limits);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = input;
    let mut n = 0;
    while !rest.is_empty() {
        let (head, tail) = rest.split_at(chunk(n).clamp(1, rest.len()));
        rest = tail;
        n += 1;
        buf.extend_from_slice(head);
        loop {
            match parser.next(&mut buf) {
                Ok(Some(args)) => out.push(args),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
        // The buffer stays bounded: one bulk, one line, one chunk.
        assert!(
            buf.len() <= limits.max_bulk_len + 2 + INLINE_MAX + 2 + head.len() + 64,
            "buffer grew to {}",
            buf.len()
        );
    }
    (out, None)
}

/// Feeds `data[1..]` to the request parser in chunks whose sizes derive from
/// `data[0]`, and whole: never a panic, bounded buffering, and the same commands
/// and error whatever the chunking. Returns how many commands were parsed.
pub fn check_request_input(data: &[u8]) -> usize {
    let Some((&seed, input)) = data.split_first() else {
        return 0;
    };
    let limits = Limits {
        max_multibulk_len: 4096,
        max_bulk_len: 8192,
        max_request_bytes: 1 << 20,
        max_clients: 1,
        ..Limits::default()
    };
    let step = usize::from(seed % 13) + 1;
    let chunked = run(input, |n| (step * (n + 3)) % 17 + 1, limits);
    let whole = run(input, |_| input.len(), limits);
    // Redis's `too big …` checks look at what has arrived without a line end, so
    // a chunked feed may meet them where one feed sees the line end in time:
    // then what it parsed before is a prefix of the whole feed's commands.
    // Otherwise both feeds must agree exactly.
    match &chunked.1 {
        Some(ProtocolError::Reply(text)) if text.starts_with("too big") => {
            assert!(
                whole.0.starts_with(&chunked.0),
                "chunking changed the commands before a too-big line"
            );
        }
        _ => assert_eq!(chunked, whole, "chunking changed the result"),
    }
    chunked.0.len()
}

/// Reads `data` as a sequence of replies: never a panic, and every reply read
/// re-encodes (RESP3) to bytes that read back to the same frame.
pub fn check_reply_input(data: &[u8]) -> usize {
    let mut pos = 0;
    let mut frames = 0;
    while pos < data.len() {
        match Frame::decode(&data[pos..]) {
            Ok(Some((frame, used))) => {
                assert!(used > 0);
                pos += used;
                frames += 1;
                let mut again = BytesMut::new();
                frame.encode(super::Proto::Resp3, &mut again);
                let Ok(Some((reread, _))) = Frame::decode(&again) else {
                    panic!("re-encoded reply does not read back: {again:?}");
                };
                let mut twice = BytesMut::new();
                reread.encode(super::Proto::Resp3, &mut twice);
                assert_eq!(again, twice, "re-encoding is not stable");
            }
            _ => break,
        }
    }
    frames
}
