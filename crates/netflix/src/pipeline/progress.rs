//! An ingest's progress, shared between the job running it and whoever watches:
//! the pipeline API's job status and the CLI's progress bar. Lock-free reads.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use serde::Serialize;

/// Where an ingest is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Queued,
    /// Reading the source (ffprobe).
    Probing,
    /// ffmpeg (or the synthetic encoder) making the renditions.
    Encoding,
    /// Writing segments, playlists, then the catalog entry.
    Publishing,
    Done,
    Failed,
}

impl Phase {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Queued,
            1 => Self::Probing,
            2 => Self::Encoding,
            3 => Self::Publishing,
            4 => Self::Done,
            _ => Self::Failed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Probing => "probing",
            Self::Encoding => "encoding",
            Self::Publishing => "publishing",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

/// Progress as counters: the phase, and done/total units within it (encoding:
/// microseconds of output; publishing: objects written).
#[derive(Debug)]
pub struct Progress {
    phase: AtomicU8,
    done: AtomicU64,
    total: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            phase: AtomicU8::new(Phase::Queued as u8),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }
}

impl Progress {
    /// Enters a phase with `total` units to do (0: unknown).
    pub fn enter(&self, phase: Phase, total: u64) {
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// Sets the units done in the current phase (never past the total).
    pub fn set_done(&self, done: u64) {
        let total = self.total.load(Ordering::Relaxed);
        let done = if total > 0 { done.min(total) } else { done };
        self.done.store(done, Ordering::Relaxed);
    }

    /// One more unit done.
    pub fn step(&self) {
        self.set_done(self.done.load(Ordering::Relaxed) + 1);
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// (done, total) in the current phase.
    pub fn position(&self) -> (u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }

    /// The whole ingest's progress, 0.0..=1.0: encoding counts for 90 %,
    /// publishing for the rest.
    pub fn fraction(&self) -> f64 {
        let (done, total) = self.position();
        let within = if total == 0 {
            0.0
        } else {
            done as f64 / total as f64
        };
        match self.phase() {
            Phase::Queued | Phase::Probing => 0.0,
            Phase::Encoding => 0.9 * within,
            Phase::Publishing => 0.9 + 0.1 * within,
            Phase::Done => 1.0,
            Phase::Failed => 0.0,
        }
    }
}

/// The CLI's progress bar: encoding in seconds of output, publishing in objects.
impl casebook_kit::loadgen::ShowProgress for Progress {
    fn phase(&self) -> String {
        Progress::phase(self).as_str().to_owned()
    }

    fn position(&self) -> (u64, u64) {
        let (done, total) = Progress::position(self);
        match Progress::phase(self) {
            Phase::Encoding if total > 1 => (done / 1_000_000, total.div_ceil(1_000_000)),
            _ => (done, total),
        }
    }

    fn message(&self) -> String {
        format!("{:.0}% of the ingest", self.fraction() * 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fraction_runs_through_the_phases() {
        let p = Progress::default();
        assert_eq!((p.phase(), p.fraction()), (Phase::Queued, 0.0));
        p.enter(Phase::Encoding, 200);
        p.set_done(100);
        assert!((p.fraction() - 0.45).abs() < 1e-9);
        p.set_done(1000);
        assert_eq!(p.position(), (200, 200));
        p.enter(Phase::Publishing, 4);
        p.step();
        assert!((p.fraction() - 0.925).abs() < 1e-9);
        p.enter(Phase::Done, 0);
        assert_eq!(p.fraction(), 1.0);
    }
}
