//! The node-to-node link's wire format: length-prefixed binary frames.
//!
//! Every frame is `u32 body length` (big-endian) then the body, whose first byte is
//! the kind. Strings are length-prefixed UTF-8 (`u16` for names and JIDs, `u32` for
//! stanzas). A link is one TCP connection from a sending node to a receiving node:
//!
//! | kind | direction | body after the kind byte |
//! |---|---|---|
//! | `1` hello | sender → receiver, first | `u8` version, from node (str16), `u64` from epoch, to node (str16), `u64` to epoch |
//! | `2` batch | sender → receiver | `u64` first seq, `u16` count (1..=[`MAX_BATCH`]), then per entry: `u8` op, `u8` flags, bare (str16), resource (str16), stanza (str32); entry *i* has seq `first + i` |
//! | `3` ack | receiver → sender | `u64` acknowledged up to (inclusive), `u16` n, n × `u64` seqs that could not be delivered (the user was gone) |
//! | `4` reject | receiver → sender | reason (str16): the hello named another node or epoch |
//!
//! Guarantees: decoding is strict and canonical (a frame that decodes re-encodes
//! to exactly the bytes it came from; the fuzz check asserts it); nothing beyond
//! [`MAX_FRAME_BYTES`] is ever buffered (the length is checked before the body
//! arrives); every malformation is a [`FrameError`], never a panic. Not here:
//! compression, encryption or authentication of the link (loopback / a private
//! network only), versions beyond 1.

use bytes::{Buf, BufMut, BytesMut};

/// Link protocol version carried in the hello.
pub const VERSION: u8 = 1;
/// Largest frame body accepted or produced.
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;
/// Most entries in one batch.
pub const MAX_BATCH: usize = 512;
/// Most "gone" seqs in one ack (a batch's worth).
pub const MAX_GONE: usize = MAX_BATCH;
/// Longest node id.
pub const MAX_NODE_ID: usize = 255;
/// Longest bare JID (RFC 7622: 1023 local + 1023 domain + `@`) or resource.
pub const MAX_JID_PART: usize = 3071;

const KIND_HELLO: u8 = 1;
const KIND_BATCH: u8 = 2;
const KIND_ACK: u8 = 3;
const KIND_REJECT: u8 = 4;

/// What an entry asks the receiving node to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Deliver to exactly `bare/resource`; a message falls back to the bare JID.
    Full = 1,
    /// Deliver to every available resource of `bare`.
    Bare = 2,
    /// Offline messages were stored for `bare`: its sessions should flush them.
    Nudge = 3,
}

impl Op {
    fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Full),
            2 => Some(Self::Bare),
            3 => Some(Self::Nudge),
            _ => None,
        }
    }
}

/// Entry flag: the stanza is a `<message/>` (a full-JID miss falls back to bare).
pub const FLAG_MESSAGE: u8 = 0b01;
/// Entry flag: if the receiver cannot deliver it, the sender stores it offline
/// (set only when no other copy was delivered).
pub const FLAG_STORE_ON_FAIL: u8 = 0b10;
const KNOWN_FLAGS: u8 = FLAG_MESSAGE | FLAG_STORE_ON_FAIL;

/// One stanza (or nudge) for the receiving node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub op: Op,
    pub flags: u8,
    pub bare: String,
    /// Empty unless `op` is [`Op::Full`].
    pub resource: String,
    /// The serialized stanza; empty for [`Op::Nudge`].
    pub stanza: String,
}

impl Entry {
    /// Bytes this entry takes in a batch.
    pub fn wire_len(&self) -> usize {
        2 + 2 + self.bare.len() + 2 + self.resource.len() + 4 + self.stanza.len()
    }
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello {
        version: u8,
        from_node: String,
        from_epoch: u64,
        to_node: String,
        to_epoch: u64,
    },
    Batch {
        first_seq: u64,
        entries: Vec<Entry>,
    },
    Ack {
        upto: u64,
        gone: Vec<u64>,
    },
    Reject {
        reason: String,
    },
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("empty frame")]
    Empty,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("frame truncated inside its body")]
    Truncated,
    #[error("{0} trailing bytes after the frame's fields")]
    Trailing(usize),
    #[error("a string is not UTF-8")]
    NotUtf8,
    #[error("field `{0}` out of bounds")]
    OutOfBounds(&'static str),
}

/// Encodes `frame` onto `out`. Panics only on a frame the decoder would refuse
/// (a caller bug: entries and ids are bounded before they get here).
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    let start = out.len();
    out.put_u32(0);
    match frame {
        Frame::Hello {
            version,
            from_node,
            from_epoch,
            to_node,
            to_epoch,
        } => {
            out.put_u8(KIND_HELLO);
            out.put_u8(*version);
            put_str16(out, from_node);
            out.put_u64(*from_epoch);
            put_str16(out, to_node);
            out.put_u64(*to_epoch);
        }
        Frame::Batch { first_seq, entries } => {
            assert!((1..=MAX_BATCH).contains(&entries.len()), "batch size");
            out.put_u8(KIND_BATCH);
            out.put_u64(*first_seq);
            out.put_u16(entries.len() as u16);
            for entry in entries {
                out.put_u8(entry.op as u8);
                out.put_u8(entry.flags);
                put_str16(out, &entry.bare);
                put_str16(out, &entry.resource);
                out.put_u32(entry.stanza.len() as u32);
                out.put_slice(entry.stanza.as_bytes());
            }
        }
        Frame::Ack { upto, gone } => {
            assert!(gone.len() <= MAX_GONE, "ack size");
            out.put_u8(KIND_ACK);
            out.put_u64(*upto);
            out.put_u16(gone.len() as u16);
            for seq in gone {
                out.put_u64(*seq);
            }
        }
        Frame::Reject { reason } => {
            out.put_u8(KIND_REJECT);
            put_str16(out, reason);
        }
    }
    let body = out.len() - start - 4;
    assert!(body <= MAX_FRAME_BYTES, "frame too large");
    out[start..start + 4].copy_from_slice(&(body as u32).to_be_bytes());
}

fn put_str16(out: &mut BytesMut, s: &str) {
    out.put_u16(u16::try_from(s.len()).expect("bounded string"));
    out.put_slice(s.as_bytes());
}

/// Takes one whole frame off the front of `buf`: `Ok(None)` until it has fully
/// arrived. A declared length beyond [`MAX_FRAME_BYTES`] is refused at once.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    if buf.len() < 4 + len {
        // Reserve the rest now so the reads that complete it do not regrow by steps.
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let body = buf.split_to(len);
    decode_body(&body).map(Some)
}

/// Decodes one frame body (without its length prefix).
pub fn decode_body(body: &[u8]) -> Result<Frame, FrameError> {
    let mut r = Reader(body);
    let kind = r.u8().map_err(|_| FrameError::Empty)?;
    let frame = match kind {
        KIND_HELLO => {
            let version = r.u8()?;
            if version != VERSION {
                return Err(FrameError::OutOfBounds("version"));
            }
            let from_node = r.str16("from_node", MAX_NODE_ID)?;
            let from_epoch = r.u64()?;
            let to_node = r.str16("to_node", MAX_NODE_ID)?;
            let to_epoch = r.u64()?;
            Frame::Hello {
                version,
                from_node,
                from_epoch,
                to_node,
                to_epoch,
            }
        }
        KIND_BATCH => {
            let first_seq = r.u64()?;
            let count = usize::from(r.u16()?);
            if !(1..=MAX_BATCH).contains(&count) {
                return Err(FrameError::OutOfBounds("count"));
            }
            if first_seq.checked_add(count as u64).is_none() {
                return Err(FrameError::OutOfBounds("first_seq"));
            }
            let mut entries = Vec::with_capacity(count);
            for _ in 0..count {
                let op = Op::from_u8(r.u8()?).ok_or(FrameError::OutOfBounds("op"))?;
                let flags = r.u8()?;
                if flags & !KNOWN_FLAGS != 0 {
                    return Err(FrameError::OutOfBounds("flags"));
                }
                let bare = r.str16("bare", MAX_JID_PART)?;
                if bare.is_empty() {
                    return Err(FrameError::OutOfBounds("bare"));
                }
                let resource = r.str16("resource", MAX_JID_PART)?;
                let stanza = r.str32("stanza", MAX_FRAME_BYTES)?;
                // One canonical shape per op, so decode ∘ encode is the identity.
                let shape_ok = match op {
                    Op::Full => !resource.is_empty() && !stanza.is_empty(),
                    Op::Bare => resource.is_empty() && !stanza.is_empty(),
                    Op::Nudge => resource.is_empty() && stanza.is_empty() && flags == 0,
                };
                if !shape_ok {
                    return Err(FrameError::OutOfBounds("entry"));
                }
                entries.push(Entry {
                    op,
                    flags,
                    bare,
                    resource,
                    stanza,
                });
            }
            Frame::Batch { first_seq, entries }
        }
        KIND_ACK => {
            let upto = r.u64()?;
            let n = usize::from(r.u16()?);
            if n > MAX_GONE {
                return Err(FrameError::OutOfBounds("gone"));
            }
            let mut gone = Vec::with_capacity(n);
            for _ in 0..n {
                let seq = r.u64()?;
                if seq > upto {
                    return Err(FrameError::OutOfBounds("gone"));
                }
                gone.push(seq);
            }
            Frame::Ack { upto, gone }
        }
        KIND_REJECT => Frame::Reject {
            reason: r.str16("reason", 1024)?,
        },
        other => return Err(FrameError::UnknownKind(other)),
    };
    if !r.0.is_empty() {
        return Err(FrameError::Trailing(r.0.len()));
    }
    Ok(frame)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], FrameError> {
        if self.0.len() < n {
            return Err(FrameError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        let b = self.take(8)?;
        Ok(u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }

    fn string(
        &mut self,
        len: usize,
        field: &'static str,
        max: usize,
    ) -> Result<String, FrameError> {
        if len > max {
            return Err(FrameError::OutOfBounds(field));
        }
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| FrameError::NotUtf8)
    }

    fn str16(&mut self, field: &'static str, max: usize) -> Result<String, FrameError> {
        let len = usize::from(self.u16()?);
        self.string(len, field, max)
    }

    fn str32(&mut self, field: &'static str, max: usize) -> Result<String, FrameError> {
        let len = self.u32()? as usize;
        self.string(len, field, max)
    }
}

/// The invariant the `link_frame` fuzz target checks, shared with the stable
/// corpus replay (`tests/fuzz_corpus.rs`). Panics when it is broken.
///
/// Feeds `data` to the decoder in chunks whose sizes derive from `data[0]`; every
/// frame it yields must re-encode to exactly the bytes it was decoded from, and the
/// decoder must never hold more than one frame's worth of bytes. Returns how many
/// frames decoded.
#[doc(hidden)]
pub fn check_link_input(data: &[u8]) -> usize {
    let Some((&seed, input)) = data.split_first() else {
        return 0;
    };
    let mut buf = BytesMut::new();
    let mut consumed = 0usize;
    let mut decoded = 0usize;
    let mut rest = input;
    let mut step = usize::from(seed % 13) + 1;
    'feed: while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(step.min(rest.len()));
        rest = tail;
        step = (step * 5 + 7) % 31 + 1;
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match decode(&mut buf) {
                Ok(Some(frame)) => {
                    let used = before - buf.len();
                    let mut again = BytesMut::new();
                    encode(&frame, &mut again);
                    assert_eq!(
                        &again[..],
                        &input[consumed..consumed + used],
                        "re-encoding differs for {frame:?}"
                    );
                    consumed += used;
                    decoded += 1;
                }
                Ok(None) => {
                    assert!(buf.len() < 4 + MAX_FRAME_BYTES, "buffered beyond one frame");
                    break;
                }
                Err(_) => break 'feed,
            }
        }
    }
    decoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(frame: Frame) {
        let mut out = BytesMut::new();
        encode(&frame, &mut out);
        let wire = out.clone();
        // Arriving one byte at a time changes nothing.
        let mut buf = BytesMut::new();
        let mut got = None;
        for byte in wire.iter() {
            assert!(got.is_none(), "decoded before the last byte");
            buf.put_u8(*byte);
            got = decode(&mut buf).unwrap();
        }
        assert_eq!(got, Some(frame));
        assert!(buf.is_empty());
    }

    #[test]
    fn every_kind_round_trips() {
        roundtrip(Frame::Hello {
            version: VERSION,
            from_node: "chat-us-east-a-1".into(),
            from_epoch: 7,
            to_node: "chat-eu-west-a-2".into(),
            to_epoch: 9,
        });
        roundtrip(Frame::Batch {
            first_seq: 41,
            entries: vec![
                Entry {
                    op: Op::Full,
                    flags: FLAG_MESSAGE | FLAG_STORE_ON_FAIL,
                    bare: "bob@localhost".into(),
                    resource: "laptop".into(),
                    stanza: "<message>é</message>".into(),
                },
                Entry {
                    op: Op::Nudge,
                    flags: 0,
                    bare: "bob@localhost".into(),
                    resource: String::new(),
                    stanza: String::new(),
                },
            ],
        });
        roundtrip(Frame::Ack {
            upto: 42,
            gone: vec![41],
        });
        roundtrip(Frame::Reject {
            reason: "epoch".into(),
        });
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let cases: &[(&[u8], FrameError)] = &[
            (&[0, 0, 0, 0], FrameError::Empty),
            (&[0, 0, 0, 1, 9], FrameError::UnknownKind(9)),
            (
                &[0xff, 0xff, 0xff, 0xff],
                FrameError::TooLarge(u32::MAX as usize),
            ),
            (&[0, 0, 0, 3, KIND_ACK, 0, 0], FrameError::Truncated),
            (
                &[0, 0, 0, 12, KIND_ACK, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0xAA],
                FrameError::Trailing(1),
            ),
            (
                &[0, 0, 0, 11, KIND_BATCH, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                FrameError::OutOfBounds("count"),
            ),
            (
                &[0, 0, 0, 5, KIND_REJECT, 0, 2, 0xC3, 0x28],
                FrameError::NotUtf8,
            ),
        ];
        for (bytes, expected) in cases {
            let mut buf = BytesMut::from(*bytes);
            assert_eq!(decode(&mut buf).as_ref(), Err(expected), "{bytes:?}");
        }
        // An ack naming a seq beyond what it acknowledges is refused.
        let mut out = BytesMut::new();
        encode(
            &Frame::Ack {
                upto: 1,
                gone: vec![],
            },
            &mut out,
        );
        out[4 + 1 + 8 + 1] = 1;
        out.extend_from_slice(&5u64.to_be_bytes());
        let len = out.len() as u32 - 4;
        out[..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(decode(&mut out), Err(FrameError::OutOfBounds("gone")));
    }

    #[test]
    fn the_fuzz_check_accepts_streams_of_frames() {
        let mut out = BytesMut::new();
        out.put_u8(3);
        for seq in 0..5 {
            encode(
                &Frame::Ack {
                    upto: seq,
                    gone: vec![],
                },
                &mut out,
            );
        }
        assert_eq!(check_link_input(&out), 5);
    }
}
