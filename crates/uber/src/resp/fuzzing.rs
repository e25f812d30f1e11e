//! The invariants the fuzz targets check, shared with the stable corpus replay
//! (`tests/fuzz_corpus.rs`) so both exercise the same property.
//!
//! Each function panics when an invariant breaks; malformed input answered with
//! a protocol error is the expected outcome, not a finding.

use bytes::BytesMut;

use super::cmd::{self, Outcome};
use super::frame::{Frame, Proto};
use super::limits::Limits;
use super::parse::{INLINE_MAX, ProtocolError, RequestParser};
use super::state::{Server, sorted_set};

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

/// Most requests [`check_command_input`] runs from one input.
const MAX_COMMANDS: usize = 64;

/// Parses `data` as requests and runs each (at most 64) against a fresh
/// server with small limits (64 KiB requests, 64 KiB `maxmemory`): never a
/// panic or an abort — whatever the counts, lengths and indexes in the
/// arguments (COUNT 9223372036854775807 sized a heap) — and every reply encodes
/// in the session's protocol to bytes that read back whole. Returns how many
/// commands ran.
pub fn check_command_input(data: &[u8]) -> usize {
    let limits = Limits {
        max_multibulk_len: 4096,
        max_bulk_len: 8192,
        max_request_bytes: 1 << 16,
        max_clients: 1,
        max_memory_bytes: 1 << 16,
        ..Limits::default()
    };
    let server = Server::new(limits, sorted_set);
    let mut session = server.new_session();
    let mut parser = RequestParser::new(limits);
    let mut buf = BytesMut::from(data);
    let mut ran = 0;
    while ran < MAX_COMMANDS {
        let Ok(Some(args)) = parser.next(&mut buf) else {
            break;
        };
        if args.is_empty() {
            continue;
        }
        ran += 1;
        let (reply, close) = match cmd::dispatch(&server, &mut session, &args) {
            Outcome::Reply(frame) => (frame, false),
            Outcome::Close(frame) => (frame, true),
        };
        let mut wire = BytesMut::new();
        reply.encode(session.proto, &mut wire);
        match Frame::decode(&wire) {
            Ok(Some((_, used))) => assert_eq!(used, wire.len(), "a reply reads back whole"),
            other => panic!("reply {wire:?} does not read back: {other:?}"),
        }
        if session.proto == Proto::Resp3 {
            // RESP2 clients get the same reply in its encoding.
            let mut two = BytesMut::new();
            reply.encode(Proto::Resp2, &mut two);
            assert!(matches!(Frame::decode(&two), Ok(Some((_, n))) if n == two.len()));
        }
        if close {
            break;
        }
    }
    ran
}
