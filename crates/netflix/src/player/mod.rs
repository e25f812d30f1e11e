//! The player fleet behind `casebook load netflix`: simulated players that stream
//! a title the way a real one does — play request, signed master playlist, media
//! playlists, segments — on a network trace, choosing renditions with BBA or BOLA,
//! and measuring what viewers feel.
//!
//! | module | what it is |
//! |---|---|
//! | [`trace`] | network traces: bandwidth and latency over time; built-in profiles and a CSV format |
//! | [`abr`] | the ABR algorithms: BBA-0 and BOLA (+ BOLA-O) |
//! | [`buffer`] | the buffer model: start-up threshold, playing, stalls, what was played |
//! | [`session`] | one player's decisions, apart from any clock or network: what to fetch next, when to wait, the QoE it saw |
//! | [`report`] | the QoE of one session and of a fleet, the case study's claims as pass/fail lines |
//! | [`sim`] | the simulator: a session, or a fleet with an edge failure, on a simulated clock (deterministic for a seed) |
//! | [`hls`] | the HLS playlists a player reads (master and media) |
//! | [`driver`] | the real thing: concurrent players over HTTP against the playback API and the CDN |
//!
//! One [`session::Player`] drives both the simulator and the HTTP driver: the
//! simulator hands it simulated times and transfer times computed from the trace;
//! the driver hands it real elapsed times, after pacing each real download to the
//! trace's bandwidth. So the decisions measured over HTTP are the ones tested
//! deterministically.
//!
//! Definitions (the report's, after the issue):
//! - **video start time**: the play request → the first segment ready to render
//!   (the buffer reached the start-up threshold, by default one segment);
//! - **rebuffer ratio**: stall time / (stall time + play time), the start-up wait
//!   excluded;
//! - **QoE**: Yin et al.'s linear QoE (SIGCOMM 2015) with Pensieve's weights, per
//!   segment — see [`report::QoeWeights`].

use std::time::Duration;

pub mod abr;
pub mod buffer;
pub mod driver;
pub mod hls;
pub mod report;
pub mod session;
pub mod sim;
pub mod trace;

#[doc(hidden)]
pub mod fuzzing;

/// A title's bitrate ladder as a player sees it: renditions ascending by bitrate,
/// and the segments' durations (the same for every rendition: the ladder is
/// aligned, as the pipeline encodes it).
#[derive(Debug, Clone, PartialEq)]
pub struct Ladder {
    names: Vec<String>,
    bitrates: Vec<u64>,
    segments: Vec<Duration>,
}

/// Why a ladder cannot be played.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LadderError {
    #[error("the ladder has no renditions")]
    NoRenditions,
    #[error("rendition `{0}` has a bitrate of 0")]
    ZeroBitrate(String),
    #[error("the title has no segments")]
    NoSegments,
    #[error("segment {0} has no duration")]
    EmptySegment(usize),
}

impl Ladder {
    /// A ladder from `(name, bits per second)` renditions in any order and the
    /// segments' durations.
    pub fn new(
        renditions: impl IntoIterator<Item = (String, u64)>,
        segments: Vec<Duration>,
    ) -> Result<Self, LadderError> {
        let mut renditions: Vec<(String, u64)> = renditions.into_iter().collect();
        if renditions.is_empty() {
            return Err(LadderError::NoRenditions);
        }
        if let Some((name, _)) = renditions.iter().find(|(_, bps)| *bps == 0) {
            return Err(LadderError::ZeroBitrate(name.clone()));
        }
        if segments.is_empty() {
            return Err(LadderError::NoSegments);
        }
        if let Some(i) = segments.iter().position(Duration::is_zero) {
            return Err(LadderError::EmptySegment(i));
        }
        renditions.sort_by_key(|(name, bps)| (*bps, name.clone()));
        let (names, bitrates) = renditions.into_iter().unzip();
        Ok(Self {
            names,
            bitrates,
            segments,
        })
    }

    /// A ladder of equal segments of `segment` covering `duration`.
    pub fn uniform(
        renditions: impl IntoIterator<Item = (String, u64)>,
        duration: Duration,
        segment: Duration,
    ) -> Result<Self, LadderError> {
        if segment.is_zero() {
            return Err(LadderError::EmptySegment(0));
        }
        let mut segments = Vec::new();
        let mut left = duration;
        while !left.is_zero() && segments.len() < MAX_SEGMENTS {
            let this = left.min(segment);
            segments.push(this);
            left -= this;
        }
        Self::new(renditions, segments)
    }

    /// A synthetic ladder like the pipeline's (360p 0.8, 540p 1.6, 720p 3,
    /// 1080p 6 Mbit/s) over `duration` in 4 s segments: for simulations without a
    /// running platform.
    pub fn synthetic(duration: Duration) -> Self {
        Self::uniform(
            [
                ("360p", 800_000),
                ("540p", 1_600_000),
                ("720p", 3_000_000),
                ("1080p", 6_000_000),
            ]
            .map(|(n, b)| (n.to_owned(), b)),
            duration.max(Duration::from_secs(4)),
            Duration::from_secs(4),
        )
        .expect("a fixed, valid ladder")
    }

    /// The renditions' bitrates, ascending.
    pub fn bitrates(&self) -> &[u64] {
        &self.bitrates
    }

    /// The renditions' names, in bitrate order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The segments' durations.
    pub fn segments(&self) -> &[Duration] {
        &self.segments
    }

    /// The title's length.
    pub fn duration(&self) -> Duration {
        self.segments.iter().sum()
    }
}

/// The most segments a title may have for a player (a 24 h title in 2 s segments).
pub const MAX_SEGMENTS: usize = 43_200;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ladder_sorts_its_renditions_and_refuses_empty_parts() {
        let ladder = Ladder::uniform(
            [("hi".to_owned(), 5), ("lo".to_owned(), 1)],
            Duration::from_secs(10),
            Duration::from_secs(4),
        )
        .unwrap();
        assert_eq!(ladder.bitrates(), [1, 5]);
        assert_eq!(ladder.names(), ["lo", "hi"]);
        assert_eq!(
            ladder.segments(),
            [4, 4, 2].map(Duration::from_secs).as_slice()
        );
        assert_eq!(ladder.duration(), Duration::from_secs(10));
        assert_eq!(
            Ladder::new(Vec::new(), vec![Duration::from_secs(1)]),
            Err(LadderError::NoRenditions)
        );
        assert_eq!(
            Ladder::new([("x".to_owned(), 0)], vec![Duration::from_secs(1)]),
            Err(LadderError::ZeroBitrate("x".into()))
        );
        assert_eq!(
            Ladder::new([("x".to_owned(), 1)], vec![]),
            Err(LadderError::NoSegments)
        );
    }
}
