//! The offline store's record format, one record per WAL entry.
//!
//! The WAL frames and checksums each record, so this format only has to be
//! unambiguous and versioned. All integers little-endian.
//!
//! ```text
//! record  := version u8 (= 1) | kind u8 | body
//! kind 1  Stored:  origin u64 | stamp_ms u64 | recipient str16 | sender str16 | id str16 | payload bytes32
//! kind 2  Removed: recipient str16 | count u32 | seq u64 * count
//! str16   := len u16 | UTF-8 bytes
//! bytes32 := len u32 | bytes
//! ```
//!
//! `origin` is the message's [`OfflineSeq`](super::OfflineSeq): the WAL seq of the
//! record that first stored it, or [`ORIGIN_SELF`] meaning "this record's own seq".
//! Compaction copies a live message forward with its origin filled in, so a message
//! keeps its place in its recipient's order however often it moves.
//!
//! Decoding never panics: any malformed input is a [`DecodeError`].

/// `origin` value of a first-time store: the message's seq is the record's own seq.
pub const ORIGIN_SELF: u64 = u64::MAX;

const VERSION: u8 = 1;
const KIND_STORED: u8 = 1;
const KIND_REMOVED: u8 = 2;

/// Bytes a Stored record adds around its strings and payload.
pub const STORED_OVERHEAD: usize = 2 + 8 + 8 + 2 * 3 + 4;

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfflineRecord {
    /// A message for an offline recipient.
    Stored {
        origin: u64,
        stamp_ms: u64,
        recipient: String,
        sender: String,
        id: String,
        payload: Vec<u8>,
    },
    /// Messages of `recipient` (by seq) that are gone: acknowledged or expired.
    Removed { recipient: String, seqs: Vec<u64> },
}

/// Why bytes are not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported record version {0}")]
    Version(u8),
    #[error("unknown record kind {0}")]
    Kind(u8),
    #[error("record ends early, at {field}")]
    Truncated { field: &'static str },
    #[error("{field} is not UTF-8")]
    Utf8 { field: &'static str },
    #[error("{0} trailing bytes after the record")]
    Trailing(usize),
    #[error("a copy names origin {origin}, which is after the copy itself")]
    OriginAhead { origin: u64 },
}

fn put_str16(out: &mut Vec<u8>, s: &str) {
    // Callers validate lengths first; a longer string here is a bug.
    let len = u16::try_from(s.len()).expect("string length validated to fit u16");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Encodes a Stored record.
pub fn encode_stored(
    origin: u64,
    stamp_ms: u64,
    recipient: &str,
    sender: &str,
    id: &str,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        STORED_OVERHEAD + recipient.len() + sender.len() + id.len() + payload.len(),
    );
    out.push(VERSION);
    out.push(KIND_STORED);
    out.extend_from_slice(&origin.to_le_bytes());
    out.extend_from_slice(&stamp_ms.to_le_bytes());
    put_str16(&mut out, recipient);
    put_str16(&mut out, sender);
    put_str16(&mut out, id);
    let len = u32::try_from(payload.len()).expect("payload length validated to fit u32");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The encoded size of a Removed record.
pub fn removed_len(recipient: &str, seqs: usize) -> usize {
    2 + 2 + recipient.len() + 4 + 8 * seqs
}

/// Encodes a Removed record.
pub fn encode_removed(recipient: &str, seqs: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(removed_len(recipient, seqs.len()));
    out.push(VERSION);
    out.push(KIND_REMOVED);
    put_str16(&mut out, recipient);
    let count = u32::try_from(seqs.len()).expect("removal batches are bounded");
    out.extend_from_slice(&count.to_le_bytes());
    for seq in seqs {
        out.extend_from_slice(&seq.to_le_bytes());
    }
    out
}

struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Truncated { field });
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, field)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, field)?;
        Ok(u32::from_le_bytes(b.try_into().expect("took 4 bytes")))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, field)?;
        Ok(u64::from_le_bytes(b.try_into().expect("took 8 bytes")))
    }

    fn str16(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = self.u16(field)? as usize;
        let bytes = self.take(len, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Utf8 { field })
    }
}

/// Decodes one record.
pub fn decode(bytes: &[u8]) -> Result<OfflineRecord, DecodeError> {
    let mut c = Cursor { bytes };
    let version = c.u8("version")?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let record = match c.u8("kind")? {
        KIND_STORED => {
            let origin = c.u64("origin")?;
            let stamp_ms = c.u64("stamp")?;
            let recipient = c.str16("recipient")?;
            let sender = c.str16("sender")?;
            let id = c.str16("id")?;
            let len = c.u32("payload")? as usize;
            let payload = c.take(len, "payload")?.to_vec();
            OfflineRecord::Stored {
                origin,
                stamp_ms,
                recipient,
                sender,
                id,
                payload,
            }
        }
        KIND_REMOVED => {
            let recipient = c.str16("recipient")?;
            let count = c.u32("count")? as usize;
            // Bound the allocation by what the input can actually hold.
            if c.bytes.len() / 8 < count {
                return Err(DecodeError::Truncated { field: "seqs" });
            }
            let mut seqs = Vec::with_capacity(count);
            for _ in 0..count {
                seqs.push(c.u64("seqs")?);
            }
            OfflineRecord::Removed { recipient, seqs }
        }
        other => return Err(DecodeError::Kind(other)),
    };
    if !c.bytes.is_empty() {
        return Err(DecodeError::Trailing(c.bytes.len()));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stored_and_removed_round_trip() {
        let stored = encode_stored(ORIGIN_SELF, 42, "bob@x", "alice@y/phone", "m1", b"<m/>");
        assert_eq!(stored.len(), STORED_OVERHEAD + 5 + 13 + 2 + 4);
        assert_eq!(
            decode(&stored).unwrap(),
            OfflineRecord::Stored {
                origin: ORIGIN_SELF,
                stamp_ms: 42,
                recipient: "bob@x".into(),
                sender: "alice@y/phone".into(),
                id: "m1".into(),
                payload: b"<m/>".to_vec(),
            }
        );
        let removed = encode_removed("bob@x", &[1, 7, u64::MAX - 1]);
        assert_eq!(
            decode(&removed).unwrap(),
            OfflineRecord::Removed {
                recipient: "bob@x".into(),
                seqs: vec![1, 7, u64::MAX - 1],
            }
        );
        assert_eq!(removed.len(), removed_len("bob@x", 3));
    }

    #[test]
    fn malformed_input_is_a_precise_error() {
        assert_eq!(
            decode(&[]),
            Err(DecodeError::Truncated { field: "version" })
        );
        assert_eq!(decode(&[2, 1]), Err(DecodeError::Version(2)));
        assert_eq!(decode(&[1, 9]), Err(DecodeError::Kind(9)));
        let mut stored = encode_stored(3, 4, "a", "b", "c", b"xyz");
        stored.push(0);
        assert_eq!(decode(&stored), Err(DecodeError::Trailing(1)));
        // A count claiming more seqs than there are bytes does not allocate them.
        let mut removed = encode_removed("a", &[]);
        let at = removed.len() - 4;
        removed[at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode(&removed),
            Err(DecodeError::Truncated { field: "seqs" })
        );
        let mut bad_utf8 = encode_stored(3, 4, "a", "b", "c", b"");
        bad_utf8[2 + 8 + 8 + 2] = 0xff;
        assert_eq!(
            decode(&bad_utf8),
            Err(DecodeError::Utf8 { field: "recipient" })
        );
    }

    proptest! {
        #[test]
        fn every_truncation_and_arbitrary_bytes_decode_without_panicking(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let _ = decode(&bytes);
            let stored = encode_stored(1, 2, "r", "s", "i", &bytes);
            for cut in 0..stored.len() {
                prop_assert!(decode(&stored[..cut]).is_err());
            }
        }
    }
}
