//! The synthetic encoder: segments of exact, realistic sizes without ffmpeg, so
//! the origin, the CDN tiers and the player fleet run and test anywhere.
//!
//! A segment of a rendition lasting `d` seconds holds
//! `total_bps × d / 8` bytes, varied by a deterministic ±[`VARIATION_PERMILLE`]‰
//! (a hash of title, rendition and segment number: the same title is the same
//! bytes every time), rounded to whole 188-byte MPEG-TS packets. Each segment is a
//! structurally valid transport stream: a PAT and a PMT (H.264 video on PID 0x100,
//! AAC audio on PID 0x101, with correct CRC-32s) then packets of the two PIDs in
//! the bitrate's proportion, each starting with the 0x47 sync byte and counting its
//! continuity counter, the first of each PID opening a PES packet. Their payload is
//! pseudo-random: caches and players move them as bytes; no decoder shows a
//! picture (ffmpeg does that).

use bytes::Bytes;

use super::ladder::RenditionSpec;

/// An MPEG-TS packet's size.
pub const TS_PACKET: usize = 188;
/// Segment sizes vary by up to this much, in thousandths, around the nominal.
pub const VARIATION_PERMILLE: u64 = 40;
const PMT_PID: u16 = 0x1000;
const VIDEO_PID: u16 = 0x100;
const AUDIO_PID: u16 = 0x101;

/// Everything that determines one synthetic segment's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticSegment {
    /// Mixed into the seed.
    pub title: String,
    pub rendition: RenditionSpec,
    pub index: usize,
    pub duration_us: u64,
}

impl SyntheticSegment {
    fn seed(&self) -> u64 {
        let mut h = Fnv::default();
        h.write(self.title.as_bytes());
        h.write(&[0]);
        h.write(self.rendition.name.as_bytes());
        h.write(&(self.index as u64).to_le_bytes());
        h.0
    }

    /// The nominal size, `total_bps × duration / 8`, before variation.
    pub fn nominal_bytes(&self) -> u64 {
        let bits = u128::from(self.rendition.total_bps()) * u128::from(self.duration_us);
        u64::try_from(bits / 8_000_000).unwrap_or(u64::MAX)
    }

    /// The exact size: nominal ± variation, whole packets, at least three (PAT,
    /// PMT and one of media).
    pub fn size(&self) -> u64 {
        let span = 2 * VARIATION_PERMILLE + 1;
        let permille = 1000 - VARIATION_PERMILLE + splitmix(self.seed()) % span;
        let varied = u128::from(self.nominal_bytes()) * u128::from(permille) / 1000;
        let packets = (varied / TS_PACKET as u128).max(3);
        u64::try_from(packets * TS_PACKET as u128).unwrap_or(u64::MAX)
    }

    /// The segment's bytes.
    pub fn bytes(&self) -> Bytes {
        let packets = usize::try_from(self.size()).unwrap_or(usize::MAX) / TS_PACKET;
        let mut out = Vec::with_capacity(packets * TS_PACKET);
        let mut rng = self.seed() | 1;
        out.extend_from_slice(&psi_packet(0, &pat_section()));
        out.extend_from_slice(&psi_packet(PMT_PID, &pmt_section()));
        let audio_share = self.rendition.audio_bps * 1000 / self.rendition.total_bps().max(1);
        let (mut video_cc, mut audio_cc) = (0u8, 0u8);
        let (mut video_started, mut audio_started) = (false, false);
        for i in 0..packets.saturating_sub(2) {
            // Audio packets spread evenly at their share of the bitrate.
            let audio = (i as u64 * audio_share) / 1000 != ((i as u64 + 1) * audio_share) / 1000;
            let (pid, cc, started, stream_id) = if audio {
                (AUDIO_PID, &mut audio_cc, &mut audio_started, 0xC0)
            } else {
                (VIDEO_PID, &mut video_cc, &mut video_started, 0xE0)
            };
            let start = !*started;
            *started = true;
            let mut packet = [0u8; TS_PACKET];
            packet[0] = 0x47;
            packet[1] = (u8::from(start) << 6) | ((pid >> 8) as u8 & 0x1f);
            packet[2] = pid as u8;
            packet[3] = 0x10 | (*cc & 0x0f);
            *cc = cc.wrapping_add(1);
            let mut at = 4;
            if start {
                // A PES header with a PTS of 0: 00 00 01 <stream id>, length 0
                // (unbounded, allowed for video), '10' flags, PTS only.
                let pes = [0, 0, 1, stream_id, 0, 0, 0x80, 0x80, 5, 0x21, 0, 1, 0, 1];
                packet[at..at + pes.len()].copy_from_slice(&pes);
                at += pes.len();
            }
            for chunk in packet[at..].chunks_mut(8) {
                rng = xorshift(rng);
                chunk.copy_from_slice(&rng.to_le_bytes()[..chunk.len()]);
            }
            out.extend_from_slice(&packet);
        }
        out.into()
    }
}

/// The segments of a rendition lasting `duration_us`: full segments of
/// `segment_us`, the last one shorter when the duration is not a multiple.
pub fn segment_durations(duration_us: u64, segment_us: u64) -> Vec<u64> {
    let segment_us = segment_us.max(1);
    let mut out = vec![segment_us; usize::try_from(duration_us / segment_us).unwrap_or(0)];
    if !duration_us.is_multiple_of(segment_us) {
        out.push(duration_us % segment_us);
    }
    out
}

fn pat_section() -> Vec<u8> {
    // table 0, length 13: ts id 1, version 0 current, section 0/0, program 1 → PMT.
    let mut s = vec![0x00, 0xB0, 13, 0, 1, 0xC1, 0, 0, 0, 1];
    s.extend_from_slice(&[0xE0 | (PMT_PID >> 8) as u8, PMT_PID as u8]);
    s
}

fn pmt_section() -> Vec<u8> {
    // table 2, length 23: program 1, PCR on the video PID, no program info, then
    // H.264 (0x1B) and AAC/ADTS (0x0F) elementary streams.
    let mut s = vec![0x02, 0xB0, 23, 0, 1, 0xC1, 0, 0];
    s.extend_from_slice(&[0xE0 | (VIDEO_PID >> 8) as u8, VIDEO_PID as u8, 0xF0, 0]);
    s.extend_from_slice(&[
        0x1B,
        0xE0 | (VIDEO_PID >> 8) as u8,
        VIDEO_PID as u8,
        0xF0,
        0,
    ]);
    s.extend_from_slice(&[
        0x0F,
        0xE0 | (AUDIO_PID >> 8) as u8,
        AUDIO_PID as u8,
        0xF0,
        0,
    ]);
    s
}

/// A packet carrying one PSI section (plus its CRC), padded with 0xFF.
fn psi_packet(pid: u16, section: &[u8]) -> [u8; TS_PACKET] {
    let mut p = [0xFF; TS_PACKET];
    p[0] = 0x47;
    p[1] = 0x40 | ((pid >> 8) as u8 & 0x1f);
    p[2] = pid as u8;
    p[3] = 0x10;
    p[4] = 0; // pointer field
    p[5..5 + section.len()].copy_from_slice(section);
    let crc = crc32_mpeg2(section);
    p[5 + section.len()..9 + section.len()].copy_from_slice(&crc.to_be_bytes());
    p
}

/// CRC-32/MPEG-2 (poly 0x04C11DB7, init all ones, no reflection), as PSI uses.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[derive(Default)]
struct Fnv(u64);

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        if self.0 == 0 {
            self.0 = 0xcbf2_9ce4_8422_2325;
        }
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::ladder::default_ladder;

    fn segment(rendition: usize, index: usize, duration_us: u64) -> SyntheticSegment {
        SyntheticSegment {
            title: "t".into(),
            rendition: default_ladder()[rendition].clone(),
            index,
            duration_us,
        }
    }

    #[test]
    fn sizes_are_bitrate_times_duration_within_the_variation() {
        for rendition in 0..4 {
            for index in 0..50 {
                let s = segment(rendition, index, 4_000_000);
                let nominal = s.rendition.total_bps() * 4 / 8;
                assert_eq!(s.nominal_bytes(), nominal);
                let size = s.size();
                assert_eq!(size % 188, 0);
                let low = nominal * (1000 - VARIATION_PERMILLE) / 1000 - 188;
                let high = nominal * (1000 + VARIATION_PERMILLE) / 1000;
                assert!(
                    (low..=high).contains(&size),
                    "{size} outside {low}..={high}"
                );
                assert_eq!(s.bytes().len() as u64, size);
            }
        }
        // The sizes really vary, and the same segment is the same size again.
        let sizes: std::collections::BTreeSet<u64> =
            (0..20).map(|i| segment(1, i, 4_000_000).size()).collect();
        assert!(sizes.len() > 10, "{sizes:?}");
        assert_eq!(
            segment(1, 3, 4_000_000).bytes(),
            segment(1, 3, 4_000_000).bytes()
        );
    }

    #[test]
    fn segments_are_transport_streams() {
        let bytes = segment(3, 0, 4_000_000).bytes();
        let mut counters = std::collections::HashMap::new();
        let mut pids = std::collections::HashMap::new();
        for (i, packet) in bytes.chunks(188).enumerate() {
            assert_eq!(packet.len(), 188);
            assert_eq!(packet[0], 0x47, "sync byte of packet {i}");
            let pid = u16::from(packet[1] & 0x1f) << 8 | u16::from(packet[2]);
            *pids.entry(pid).or_insert(0u64) += 1;
            let cc = packet[3] & 0x0f;
            if let Some(prev) = counters.insert(pid, cc) {
                assert_eq!(cc, (prev + 1) & 0x0f, "continuity of PID {pid:#x}");
            }
        }
        assert_eq!(pids[&0], 1);
        assert_eq!(pids[&PMT_PID], 1);
        // Audio's share of the packets is its share of the bitrate (64k of 664k).
        let audio = pids[&AUDIO_PID] as f64 / (pids[&AUDIO_PID] + pids[&VIDEO_PID]) as f64;
        assert!((audio - 64.0 / 664.0).abs() < 0.01, "{audio}");
        // The PSI sections carry valid CRCs: the CRC over section + CRC is 0.
        let pat = &bytes[5..5 + 12 + 4];
        assert_eq!(crc32_mpeg2(pat), 0);
        let pmt = &bytes[188 + 5..188 + 5 + 22 + 4];
        assert_eq!(crc32_mpeg2(pmt), 0);
        // The first video packet opens a PES with the video stream id.
        let first_video = bytes
            .chunks(188)
            .find(|p| u16::from(p[1] & 0x1f) << 8 | u16::from(p[2]) == VIDEO_PID)
            .unwrap();
        assert_eq!(first_video[1] & 0x40, 0x40);
        assert_eq!(&first_video[4..8], &[0, 0, 1, 0xE0]);
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
    }

    #[test]
    fn durations_split_into_segments() {
        assert_eq!(
            segment_durations(10_000_000, 4_000_000),
            [4_000_000, 4_000_000, 2_000_000]
        );
        assert_eq!(
            segment_durations(8_000_000, 4_000_000),
            [4_000_000, 4_000_000]
        );
        assert_eq!(segment_durations(1, 4_000_000), [1]);
        assert!(segment_durations(0, 4_000_000).is_empty());
    }
}
