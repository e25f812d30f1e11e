//! What a run shows while it runs and reports at the end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use casebook_kit::loadgen::{ClassReport, Progress, ShowProgress};
use serde::Serialize;

use super::config::WorkloadConfig;

/// Live counters for a progress bar.
#[derive(Debug, Default)]
pub struct WorkloadProgress {
    /// The ordinary rides' loadgen progress.
    pub rides: Arc<Progress>,
    pub pings_sent: AtomicU64,
    pub matched: AtomicU64,
    pub trips_paid: AtomicU64,
}

/// The same bar as every case's load: rides due over rides planned (the
/// warm-up, before the plan starts, is a spinner), matches, paid trips and
/// pings as the message.
impl ShowProgress for WorkloadProgress {
    fn phase(&self) -> String {
        if self.rides.total() == 0 {
            "warm-up".to_owned()
        } else {
            "rides".to_owned()
        }
    }

    fn position(&self) -> (u64, u64) {
        (self.rides.due(), self.rides.total())
    }

    fn message(&self) -> String {
        format!(
            "matched {} paid {} pings {}",
            self.matched.load(Ordering::Relaxed),
            self.trips_paid.load(Ordering::Relaxed),
            self.pings_sent.load(Ordering::Relaxed)
        )
    }
}

/// Pings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PingReport {
    /// Updates sent.
    pub sent: u64,
    pub accepted: u64,
    pub stale: u64,
    /// Updates in requests answered 503 (shed, not a regional refusal).
    pub shed: u64,
    /// Updates in requests answered a regional refusal (the replica's region
    /// is evacuated: `crate::region::evacuated`).
    pub refused: u64,
    /// Updates in requests that failed otherwise.
    pub failed: u64,
}

/// Rides (ordinary and burst together).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RideReport {
    pub requested: u64,
    pub matched: u64,
    /// Answered `no_drivers`, `cancelled`, or not offered within `match_timeout`.
    pub unmatched: u64,
    /// Answered 503 (shed, not a regional refusal).
    pub shed: u64,
    /// Answered a regional refusal (the replica's region is evacuated).
    pub refused: u64,
    pub failed: u64,
    /// Due while `max_in_flight` were out: never sent.
    pub dropped: u64,
    /// Request → offered of ordinary rides, from the intended send time.
    pub latency: ClassReport,
    /// The burst's rides, if any.
    pub burst: Option<ClassReport>,
}

/// Trips driven after the offers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TripReport {
    pub accepted: u64,
    pub completed: u64,
    pub paid: u64,
    pub failed: u64,
    /// Still running when `drain_timeout` ran out.
    pub abandoned: u64,
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkloadReport {
    pub config: WorkloadConfig,
    #[serde(rename = "elapsed_ms", with = "casebook_kit::api::duration_ms")]
    pub elapsed: Duration,
    pub pings: PingReport,
    pub rides: RideReport,
    pub trips: TripReport,
    /// Failures by kind (`ride:503`, `accept:409`, `ping:timeout`, …).
    pub errors: BTreeMap<String, u64>,
}

impl WorkloadReport {
    /// A fixed-width text table.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let p = &self.pings;
        let r = &self.rides;
        let t = &self.trips;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "drivers {}  rides/s {}  mode {:?}  over {:?} (elapsed {:.1?})",
            self.config.drivers,
            self.config.rides_per_sec,
            self.config.mode,
            self.config.duration,
            self.elapsed
        );
        let _ = writeln!(
            out,
            "pings   sent {:>9} accepted {:>9} stale {:>7} shed(503) {:>7} refused(region) {:>7} failed {:>6}",
            p.sent, p.accepted, p.stale, p.shed, p.refused, p.failed
        );
        let _ = writeln!(
            out,
            "rides   requested {:>7} matched {:>7} unmatched {:>6} shed {:>5} refused(region) {:>5} failed {:>5} dropped {:>5}",
            r.requested, r.matched, r.unmatched, r.shed, r.refused, r.failed, r.dropped
        );
        let mut row = |name: &str, c: &ClassReport| {
            let _ = writeln!(
                out,
                "{name:<7} request→match ms  p50 {:>8.1}  p99 {:>8.1}  p99.9 {:>8.1}  max {:>8.1}",
                c.p50_ms, c.p99_ms, c.p999_ms, c.max_ms
            );
        };
        row("ride", &r.latency);
        if let Some(b) = &r.burst {
            row("burst", b);
        }
        let _ = writeln!(
            out,
            "trips   accepted {:>7} completed {:>7} paid {:>7} failed {:>5} abandoned {:>5}",
            t.accepted, t.completed, t.paid, t.failed, t.abandoned
        );
        for (kind, n) in &self.errors {
            let _ = writeln!(out, "error   {kind:<24} {n}");
        }
        out
    }
}
