//! What a session saw, what a fleet saw, and the case study's claims against it.
//!
//! **QoE** is the linear QoE of Yin et al., "A Control-Theoretic Approach for
//! Dynamic Adaptive Video Streaming over HTTP" (SIGCOMM 2015), with the weights
//! Pensieve (Mao et al., SIGCOMM 2017) uses, divided by the number of segments so
//! that sessions of different lengths compare:
//!
//! ```text
//! QoE = ( Σ_k q(R_k) − λ Σ_k |q(R_{k+1}) − q(R_k)| − μ·T_rebuffer − μs·T_start ) / K
//! q(R) = R in Mbit/s,  λ = 1,  μ = μs = 4.3 per second,  T in seconds
//! ```
//!
//! so a second of stalling costs as much as one segment at 4.3 Mbit/s.
//!
//! A fleet's **rebuffer ratio** is Σ stall / (Σ stall + Σ play) over its sessions
//! (time-weighted, not a mean of ratios); its start-time percentiles come from an
//! HdrHistogram (1 µs to 1 h, 3 significant figures).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The claims: start time p99 under this…
pub const CLAIM_START_P99: Duration = Duration::from_millis(100);
/// …and a rebuffer ratio under this.
pub const CLAIM_REBUFFER_RATIO: f64 = 0.005;

/// The weights of the linear QoE.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QoeWeights {
    /// Per Mbit/s of change between consecutive segments.
    pub switch_penalty: f64,
    /// Per second of stalling.
    pub rebuffer_penalty: f64,
    /// Per second of start-up.
    pub startup_penalty: f64,
}

impl Default for QoeWeights {
    fn default() -> Self {
        Self {
            switch_penalty: 1.0,
            rebuffer_penalty: 4.3,
            startup_penalty: 4.3,
        }
    }
}

/// One session's QoE.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionReport {
    /// Video start time; `None` if nothing ever played.
    pub start: Option<Duration>,
    /// Media rendered.
    pub played: Duration,
    /// Time stalled after playback began.
    pub stalled: Duration,
    pub stalls: u32,
    /// Segments fetched.
    pub segments: u32,
    pub bytes: u64,
    /// Mean bitrate of the segments, weighted by their durations, bits/s.
    pub avg_bitrate_bps: f64,
    pub switches: u32,
    pub qoe: f64,
    /// Each failover: from the failed request (or the edge's death, if later)
    /// to the new edge's playlists in hand.
    pub failovers: Vec<Duration>,
    /// Failed requests by kind.
    pub errors: BTreeMap<String, u32>,
    /// Whether every planned segment was fetched.
    pub completed: bool,
}

/// A fleet's numbers as they accumulate (what a report is made from).
#[derive(Debug, Clone)]
pub struct FleetStats {
    sessions: u64,
    started: u64,
    completed: u64,
    /// Sessions that fetched a segment (those carry a bitrate and a QoE).
    with_segments: u64,
    start_us: Histogram<u64>,
    failover_us: Histogram<u64>,
    played: Duration,
    stalled: Duration,
    stalls: u64,
    sessions_with_stalls: u64,
    bitrate_sum: f64,
    switches: u64,
    qoe_sum: f64,
    segments: u64,
    bytes: u64,
    errors: BTreeMap<String, u64>,
    /// Players never started (the arrival's in-flight bound was reached).
    dropped: u64,
    /// Sessions that could not begin (no playback grant, no playlist).
    failed: u64,
}

impl Default for FleetStats {
    fn default() -> Self {
        Self::new()
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// The most distinct error kinds a fleet report keeps (the rest as `other`).
pub const MAX_ERROR_KINDS: usize = 64;

impl FleetStats {
    pub fn new() -> Self {
        Self {
            sessions: 0,
            started: 0,
            completed: 0,
            with_segments: 0,
            start_us: histogram(),
            failover_us: histogram(),
            played: Duration::ZERO,
            stalled: Duration::ZERO,
            stalls: 0,
            sessions_with_stalls: 0,
            bitrate_sum: 0.0,
            switches: 0,
            qoe_sum: 0.0,
            segments: 0,
            bytes: 0,
            errors: BTreeMap::new(),
            dropped: 0,
            failed: 0,
        }
    }

    /// Adds one session.
    pub fn record(&mut self, session: &SessionReport) {
        self.sessions += 1;
        if let Some(start) = session.start {
            self.started += 1;
            self.start_us.saturating_record(micros(start));
        }
        if session.completed {
            self.completed += 1;
        }
        for took in &session.failovers {
            self.failover_us.saturating_record(micros(*took));
        }
        self.played += session.played;
        self.stalled += session.stalled;
        self.stalls += u64::from(session.stalls);
        if session.stalls > 0 {
            self.sessions_with_stalls += 1;
        }
        if session.segments > 0 {
            self.with_segments += 1;
            self.bitrate_sum += session.avg_bitrate_bps;
            self.qoe_sum += session.qoe;
        }
        self.switches += u64::from(session.switches);
        self.segments += u64::from(session.segments);
        self.bytes += session.bytes;
        for (kind, n) in &session.errors {
            self.error(kind, u64::from(*n));
        }
    }

    /// Counts `n` errors of `kind` (sessions that failed outright count here too).
    pub fn error(&mut self, kind: &str, n: u64) {
        let kind = if self.errors.contains_key(kind) || self.errors.len() < MAX_ERROR_KINDS {
            kind
        } else {
            "other"
        };
        *self.errors.entry(kind.to_owned()).or_default() += n;
    }

    /// A session that never began (counted apart from those that played).
    pub fn failed_to_begin(&mut self, kind: &str) {
        self.failed += 1;
        self.error(kind, 1);
    }

    /// Players due while the in-flight bound was reached.
    pub fn dropped(&mut self, n: u64) {
        self.dropped += n;
    }

    /// The report, judged against the claims.
    pub fn report(&self, setup: FleetSetup, elapsed: Duration) -> FleetReport {
        let ms = |h: &Histogram<u64>, q: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(q) as f64 / 1000.0
            }
        };
        let max = |h: &Histogram<u64>| {
            if h.is_empty() {
                0.0
            } else {
                h.max() as f64 / 1000.0
            }
        };
        let watched = self.played + self.stalled;
        let rebuffer_ratio = if watched.is_zero() {
            0.0
        } else {
            self.stalled.as_secs_f64() / watched.as_secs_f64()
        };
        let per = |sum: f64| {
            if self.with_segments == 0 {
                0.0
            } else {
                sum / self.with_segments as f64
            }
        };
        let start = StartTimes {
            p50_ms: ms(&self.start_us, 0.5),
            p90_ms: ms(&self.start_us, 0.9),
            p99_ms: ms(&self.start_us, 0.99),
            max_ms: max(&self.start_us),
        };
        let claims = vec![
            Claim {
                claim: "video start time p99 < 100 ms".into(),
                measured: format!("{:.1} ms", start.p99_ms),
                pass: self.started > 0 && start.p99_ms < CLAIM_START_P99.as_secs_f64() * 1000.0,
            },
            Claim {
                claim: "rebuffer ratio < 0.5 %".into(),
                measured: format!("{:.3} %", rebuffer_ratio * 100.0),
                pass: !watched.is_zero() && rebuffer_ratio < CLAIM_REBUFFER_RATIO,
            },
        ];
        FleetReport {
            setup,
            elapsed,
            players: self.sessions + self.failed + self.dropped,
            sessions: self.sessions,
            started: self.started,
            completed: self.completed,
            failed: self.failed,
            dropped: self.dropped,
            start,
            played: self.played,
            stalled: self.stalled,
            stalls: self.stalls,
            sessions_with_stalls: self.sessions_with_stalls,
            rebuffer_ratio,
            avg_bitrate_bps: per(self.bitrate_sum),
            switches: self.switches,
            switches_per_session: if self.sessions == 0 {
                0.0
            } else {
                self.switches as f64 / self.sessions as f64
            },
            qoe: per(self.qoe_sum),
            qoe_weights: QoeWeights::default(),
            failovers: self.failover_us.len(),
            failover_p50_ms: ms(&self.failover_us, 0.5),
            failover_max_ms: max(&self.failover_us),
            segments: self.segments,
            bytes: self.bytes,
            errors: self.errors.clone(),
            claims,
        }
    }
}

/// How the fleet was set up, repeated in its report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetSetup {
    /// `http` (real players against the platform) or `simulated`.
    pub mode: String,
    pub abr: String,
    pub trace: String,
    #[serde(rename = "buffer_ms", with = "casebook_kit::api::duration_ms")]
    pub buffer: Duration,
    pub title: String,
    pub seed: u64,
}

/// Start-time percentiles.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StartTimes {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// One claim of the case study, measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Claim {
    pub claim: String,
    pub measured: String,
    pub pass: bool,
}

/// A fleet's QoE (see the module docs for the definitions).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetReport {
    pub setup: FleetSetup,
    #[serde(rename = "elapsed_ms", with = "casebook_kit::api::duration_ms")]
    pub elapsed: Duration,
    /// Players due (sessions + failed + dropped).
    pub players: u64,
    /// Sessions that got a playback grant and a ladder.
    pub sessions: u64,
    pub started: u64,
    pub completed: u64,
    pub failed: u64,
    pub dropped: u64,
    pub start: StartTimes,
    #[serde(rename = "played_ms", with = "casebook_kit::api::duration_ms")]
    pub played: Duration,
    #[serde(rename = "stalled_ms", with = "casebook_kit::api::duration_ms")]
    pub stalled: Duration,
    pub stalls: u64,
    pub sessions_with_stalls: u64,
    pub rebuffer_ratio: f64,
    pub avg_bitrate_bps: f64,
    pub switches: u64,
    pub switches_per_session: f64,
    pub qoe: f64,
    pub qoe_weights: QoeWeights,
    pub failovers: u64,
    pub failover_p50_ms: f64,
    pub failover_max_ms: f64,
    pub segments: u64,
    pub bytes: u64,
    pub errors: BTreeMap<String, u64>,
    pub claims: Vec<Claim>,
}

impl FleetReport {
    /// The report as text: the numbers, then one pass/fail line per claim.
    pub fn table(&self) -> String {
        let s = &self.setup;
        let mut out = format!(
            "netflix players ({}, abr {}, trace {}, buffer {:?}, title {}, seed {})\n",
            s.mode, s.abr, s.trace, s.buffer, s.title, s.seed
        );
        let _ = writeln!(
            out,
            "{:<16} {} due, {} sessions, {} started, {} completed, {} failed, {} dropped, in {:.1?}",
            "players",
            self.players,
            self.sessions,
            self.started,
            self.completed,
            self.failed,
            self.dropped,
            self.elapsed
        );
        let st = &self.start;
        let _ = writeln!(
            out,
            "{:<16} p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            "start time", st.p50_ms, st.p90_ms, st.p99_ms, st.max_ms
        );
        let _ = writeln!(
            out,
            "{:<16} {:.3} %  ({:.1} s stalled over {:.1} s played; {} stalls in {} sessions)",
            "rebuffer ratio",
            self.rebuffer_ratio * 100.0,
            self.stalled.as_secs_f64(),
            self.played.as_secs_f64(),
            self.stalls,
            self.sessions_with_stalls
        );
        let _ = writeln!(
            out,
            "{:<16} {:.2} Mbit/s",
            "avg bitrate",
            self.avg_bitrate_bps / 1e6
        );
        let _ = writeln!(
            out,
            "{:<16} {} ({:.2} per session)",
            "switches", self.switches, self.switches_per_session
        );
        let _ = writeln!(
            out,
            "{:<16} {:.3} per segment (linear QoE, Yin et al.; λ {} μ {} μs {})",
            "QoE",
            self.qoe,
            self.qoe_weights.switch_penalty,
            self.qoe_weights.rebuffer_penalty,
            self.qoe_weights.startup_penalty
        );
        let _ = writeln!(
            out,
            "{:<16} {}  (p50 {:.1} ms, max {:.1} ms)",
            "failovers", self.failovers, self.failover_p50_ms, self.failover_max_ms
        );
        let _ = writeln!(
            out,
            "{:<16} {} segments, {:.1} MB",
            "fetched",
            self.segments,
            self.bytes as f64 / 1e6
        );
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "{:<16} {}",
            "errors",
            if errors.is_empty() {
                "none".to_owned()
            } else {
                errors.join(", ")
            }
        );
        out.push_str("claims (the case study's)\n");
        for claim in &self.claims {
            let _ = writeln!(
                out,
                "  {:<34} measured {:<12} {}",
                claim.claim,
                claim.measured,
                if claim.pass { "pass" } else { "FAIL" }
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(start_ms: u64, stalled_ms: u64, played_s: u64) -> SessionReport {
        SessionReport {
            start: Some(Duration::from_millis(start_ms)),
            played: Duration::from_secs(played_s),
            stalled: Duration::from_millis(stalled_ms),
            stalls: u32::from(stalled_ms > 0),
            segments: 10,
            bytes: 1_000,
            avg_bitrate_bps: 3e6,
            switches: 2,
            qoe: 2.5,
            failovers: vec![],
            errors: BTreeMap::new(),
            completed: true,
        }
    }

    fn setup() -> FleetSetup {
        FleetSetup {
            mode: "simulated".into(),
            abr: "bba".into(),
            trace: "fiber".into(),
            buffer: Duration::from_secs(30),
            title: "t".into(),
            seed: 1,
        }
    }

    #[test]
    fn the_rebuffer_ratio_is_time_weighted_and_claims_are_judged() {
        let mut fleet = FleetStats::new();
        fleet.record(&session(40, 0, 99));
        fleet.record(&session(60, 2_000, 99));
        let report = fleet.report(setup(), Duration::from_secs(1));
        assert!((report.rebuffer_ratio - 2.0 / 200.0).abs() < 1e-9);
        assert_eq!(report.stalls, 1);
        assert!(report.start.p99_ms >= 59.9 && report.start.p99_ms < 60.1);
        assert!(report.claims[0].pass, "start p99 60 ms");
        assert!(!report.claims[1].pass, "1 % rebuffering fails");
        let table = report.table();
        assert!(table.contains("FAIL") && table.contains("pass"), "{table}");
    }

    #[test]
    fn an_empty_fleet_passes_nothing() {
        let report = FleetStats::new().report(setup(), Duration::ZERO);
        assert!(report.claims.iter().all(|c| !c.pass));
        assert_eq!(report.players, 0);
    }
}
