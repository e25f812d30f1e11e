//! The on-disk format: segment headers and record frames.
//!
//! ```text
//! segment  := header record* zero-fill
//! header   := magic "CBWAL\0v1" (8 bytes) | first_seq u64 LE
//! record   := masked_crc32c u32 LE | len u32 LE | seq u64 LE | payload[len]
//! ```
//!
//! The checksum covers `len | seq | payload`, so a torn length, a torn payload and a
//! stale record from an earlier life of the bytes are all caught. The checksum is
//! masked (as LevelDB does) so a payload that itself embeds CRCs does not produce
//! frames whose checksum is trivially valid. An all-zero header is the preallocated
//! tail: the end of written data, not corruption.

/// Bytes at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"CBWAL\0v1";
/// Size of the segment header.
pub const SEGMENT_HEADER_BYTES: usize = 16;
/// Size of a record frame header.
pub const RECORD_HEADER_BYTES: usize = 16;

const MASK_DELTA: u32 = 0xa282_ead8;

fn mask(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

fn record_checksum(len: u32, seq: u64, payload: &[u8]) -> u32 {
    let mut crc = crc32c::crc32c(&len.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &seq.to_le_bytes());
    mask(crc32c::crc32c_append(crc, payload))
}

/// Appends the segment header for a segment whose first record is `first_seq`.
pub fn encode_segment_header(out: &mut Vec<u8>, first_seq: u64) {
    out.extend_from_slice(&SEGMENT_MAGIC);
    out.extend_from_slice(&first_seq.to_le_bytes());
}

/// Reads a segment header; `None` if the bytes are not one.
pub fn decode_segment_header(bytes: &[u8]) -> Option<u64> {
    if bytes.len() < SEGMENT_HEADER_BYTES || bytes[..8] != SEGMENT_MAGIC {
        return None;
    }
    Some(u64::from_le_bytes(bytes[8..16].try_into().ok()?))
}

/// Appends one framed record.
pub fn encode_record(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("record length checked at append");
    out.extend_from_slice(&record_checksum(len, seq, payload).to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Why a frame could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Zeros: the preallocated space after the last record.
    EndOfData,
    /// The bytes end inside the frame.
    Truncated,
    /// The length field exceeds the largest record allowed.
    TooLong,
    /// The checksum does not match.
    Checksum,
    /// A valid frame, but not the sequence number that must come next.
    OutOfSequence,
    /// A frame at seq `u64::MAX`: no seq would follow it, so no log can keep it.
    SeqExhausted,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrameError::EndOfData => "end of data",
            FrameError::Truncated => "frame truncated",
            FrameError::TooLong => "length field larger than the maximum record",
            FrameError::Checksum => "checksum mismatch",
            FrameError::OutOfSequence => "sequence number out of order",
            FrameError::SeqExhausted => "sequence numbers exhausted",
        })
    }
}

/// The parsed header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub crc: u32,
    pub len: u32,
    pub seq: u64,
}

/// Parses a frame header (no checksum check: that needs the payload).
pub fn decode_header(bytes: &[u8; RECORD_HEADER_BYTES]) -> FrameHeader {
    FrameHeader {
        crc: u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")),
        len: u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")),
        seq: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
    }
}

/// Checks a header and its payload.
pub fn verify(header: &FrameHeader, payload: &[u8], expected_seq: u64) -> Result<(), FrameError> {
    debug_assert_eq!(payload.len(), header.len as usize);
    if record_checksum(header.len, header.seq, payload) != header.crc {
        return Err(FrameError::Checksum);
    }
    if header.seq != expected_seq {
        return Err(FrameError::OutOfSequence);
    }
    Ok(())
}

/// Decodes the frame at the start of `bytes`, which must be `expected_seq`.
/// Returns the payload and the frame's total size.
pub fn decode_record(
    bytes: &[u8],
    expected_seq: u64,
    max_record_bytes: usize,
) -> Result<(&[u8], usize), FrameError> {
    let Some(head) = bytes.first_chunk::<RECORD_HEADER_BYTES>() else {
        return Err(if bytes.iter().all(|&b| b == 0) {
            FrameError::EndOfData
        } else {
            FrameError::Truncated
        });
    };
    if head.iter().all(|&b| b == 0) {
        return Err(FrameError::EndOfData);
    }
    let header = decode_header(head);
    let len = header.len as usize;
    if len > max_record_bytes {
        return Err(FrameError::TooLong);
    }
    let total = RECORD_HEADER_BYTES + len;
    let Some(payload) = bytes.get(RECORD_HEADER_BYTES..total) else {
        return Err(FrameError::Truncated);
    };
    verify(&header, payload, expected_seq)?;
    Ok((payload, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_detect_damage() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 7, b"hello");
        assert_eq!(decode_record(&buf, 7, 64), Ok((&b"hello"[..], 21)));
        assert_eq!(decode_record(&buf, 8, 64), Err(FrameError::OutOfSequence));
        assert_eq!(decode_record(&buf, 7, 4), Err(FrameError::TooLong));
        assert_eq!(decode_record(&buf[..20], 7, 64), Err(FrameError::Truncated));
        assert_eq!(decode_record(&[0; 40], 7, 64), Err(FrameError::EndOfData));
        assert_eq!(decode_record(&[0; 3], 7, 64), Err(FrameError::EndOfData));
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(
                decode_record(&bad, 7, 64).is_err(),
                "flip at {i} undetected"
            );
        }
    }

    #[test]
    fn segment_header_round_trips() {
        let mut buf = Vec::new();
        encode_segment_header(&mut buf, 42);
        assert_eq!(decode_segment_header(&buf), Some(42));
        buf[0] = b'X';
        assert_eq!(decode_segment_header(&buf), None);
    }
}
