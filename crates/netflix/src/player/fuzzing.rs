//! The checks behind the player's fuzz targets (`crates/netflix/fuzz`:
//! `trace_file`, `player_playlist`), shared with the stable replay of their
//! committed corpora, so each check exists once. A broken invariant panics.
//!
//! Not a public API: only for fuzzing and its replay.

use std::time::Duration;

use super::hls::{MasterPlaylist, MediaPlaylist};
use super::trace::{MAX_TRACE_ROWS, NetworkTrace};

/// A fuzz check: arbitrary bytes in, a panic if an invariant breaks; the number
/// of inputs that were accepted (so a replay can tell the checks went deep).
pub type Check = fn(&[u8]) -> usize;

/// Every target and its check.
pub const TARGETS: [(&str, Check); 2] = [
    ("trace_file", check_trace_file),
    ("player_playlist", check_playlist),
];

/// A trace file: refused with a located error, or accepted as a trace that
/// answers every question finitely and renders back to itself.
pub fn check_trace_file(data: &[u8]) -> usize {
    let Ok(text) = std::str::from_utf8(data) else {
        return 0;
    };
    match NetworkTrace::parse_csv("fuzz", text) {
        Err(err) => {
            assert!(!err.reason.is_empty());
            assert!(err.line <= text.lines().count());
            0
        }
        Ok(trace) => {
            assert!(!trace.points().is_empty() && trace.points().len() <= MAX_TRACE_ROWS);
            assert!(!trace.period().is_zero());
            assert!(trace.mean_bandwidth_bps() > 0.0);
            for start in [Duration::ZERO, trace.period() / 3, trace.period() * 5] {
                let took = trace.transfer_time(start, 1_000_000);
                assert!(!took.is_zero());
                // More bytes never arrive sooner.
                assert!(trace.transfer_time(start, 2_000_000) >= took);
                let _ = trace.latency_at(start);
            }
            let again = NetworkTrace::parse_csv("fuzz", &trace.to_csv())
                .expect("a rendered trace reads back");
            assert_eq!(again, trace);
            1
        }
    }
}

/// A playlist, read as master and as media: each refused with a located error,
/// or accepted with its invariants and rendered back to itself.
pub fn check_playlist(data: &[u8]) -> usize {
    let Ok(text) = std::str::from_utf8(data) else {
        return 0;
    };
    let lines = text.lines().count();
    let mut accepted = 0;
    match MasterPlaylist::parse(text) {
        Err(err) => assert!(err.line <= lines && !err.reason.is_empty()),
        Ok(master) => {
            assert!(!master.variants.is_empty());
            for v in &master.variants {
                assert!(v.bandwidth_bps > 0 && !v.uri.is_empty());
            }
            assert_eq!(
                MasterPlaylist::parse(&master.render()).as_ref(),
                Ok(&master)
            );
            accepted += 1;
        }
    }
    match MediaPlaylist::parse(text) {
        Err(err) => assert!(err.line <= lines && !err.reason.is_empty()),
        Ok(media) => {
            assert!(!media.segments.is_empty());
            for s in &media.segments {
                assert!(!s.duration.is_zero() && !s.uri.is_empty());
            }
            assert_eq!(MediaPlaylist::parse(&media.render()).as_ref(), Ok(&media));
            accepted += 1;
        }
    }
    accepted
}
