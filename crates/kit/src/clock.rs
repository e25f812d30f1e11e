//! The injected clock.
//!
//! Every time-driven rule in casebook (leases, TTLs, breakers, rolling windows,
//! metric steps) asks a [`Clock`] for the time instead of calling `Instant::now()`,
//! so tests drive time with a [`ManualClock`] and never sleep.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time.
///
/// `now` is monotonic (only differences mean anything); `wall` is wall-clock time
/// for timestamps that leave the process. Both advance together on a [`ManualClock`].
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Monotonic time.
    fn now(&self) -> Instant;
    /// Wall-clock time.
    fn wall(&self) -> SystemTime;

    /// Wall-clock milliseconds since the Unix epoch.
    fn wall_millis(&self) -> u64 {
        self.wall()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock shared between the parts of a service.
pub type SharedClock = Arc<dyn Clock>;

/// The real clock of the machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    /// The system clock as a [`SharedClock`].
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to; for deterministic tests.
///
/// Cloning shares the same time, so a test can hand one clone to the system under
/// test and keep another to advance it.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

#[derive(Debug)]
struct ManualInner {
    base: Instant,
    base_wall: SystemTime,
    offset_nanos: AtomicU64,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A manual clock starting at a fixed wall time (2026-01-01T00:00:00Z), so
    /// tests that print or store wall time are reproducible.
    pub fn new() -> Self {
        Self::starting_at(UNIX_EPOCH + Duration::from_secs(1_767_225_600))
    }

    /// A manual clock whose wall time starts at `wall`.
    pub fn starting_at(wall: SystemTime) -> Self {
        Self {
            inner: Arc::new(ManualInner {
                base: Instant::now(),
                base_wall: wall,
                offset_nanos: AtomicU64::new(0),
            }),
        }
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).expect("advance by less than 584 years");
        self.inner.offset_nanos.fetch_add(nanos, Ordering::SeqCst);
    }

    /// Time elapsed since the clock was created.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.inner.offset_nanos.load(Ordering::SeqCst))
    }

    /// This clock as a [`SharedClock`].
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.inner.base + self.elapsed()
    }
    fn wall(&self) -> SystemTime {
        self.inner.base_wall + self.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced_and_clones_share_time() {
        let clock = ManualClock::new();
        let view = clock.clone();
        let (t0, w0) = (view.now(), view.wall());
        assert_eq!(view.now(), t0);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(view.now() - t0, Duration::from_millis(1500));
        assert_eq!(
            view.wall().duration_since(w0).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(view.wall_millis(), 1_767_225_600_000 + 1500);
    }
}
