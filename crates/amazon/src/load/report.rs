//! Live counters and the final report.

use std::fmt::Write as _;
use std::sync::Arc;

use casebook_kit::loadgen::{LoadReport, Progress, ShowProgress};
use parking_lot::Mutex;
use serde::Serialize;

use super::timeline::Second;

/// The classes of each priority, as the server ranks them.
pub const CRITICAL: [&str; 2] = ["reserve", "checkout"];
pub const NORMAL: [&str; 2] = ["cart_add", "cart_remove"];
pub const LOW: [&str; 2] = ["browse", "recs"];

/// What a progress bar shows while the workload runs.
#[derive(Debug, Default)]
pub struct WorkloadProgress {
    phase: Mutex<String>,
    current: Mutex<Arc<Progress>>,
}

impl WorkloadProgress {
    pub(crate) fn enter(&self, phase: &str) -> Arc<Progress> {
        *self.phase.lock() = phase.to_owned();
        let progress = Arc::new(Progress::default());
        *self.current.lock() = progress.clone();
        progress
    }
}

impl ShowProgress for WorkloadProgress {
    fn phase(&self) -> String {
        let phase = self.phase.lock();
        if phase.is_empty() {
            "starting".to_owned()
        } else {
            phase.clone()
        }
    }
    fn position(&self) -> (u64, u64) {
        let p = self.current.lock().clone();
        (p.due(), p.total())
    }
    fn message(&self) -> String {
        format!("answered {}", self.current.lock().done())
    }
}

/// One priority's outcome in one phase.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PriorityOutcome {
    pub sent: u64,
    pub ok: u64,
    pub shed: u64,
    pub error: u64,
    pub dropped: u64,
    /// ok / sent.
    pub success: f64,
    /// The worst p99 of the priority's classes (their histograms are separate).
    pub p99_ms: f64,
}

impl PriorityOutcome {
    pub fn of(report: &LoadReport, classes: &[&str]) -> Self {
        let mut out = Self {
            sent: 0,
            ok: 0,
            shed: 0,
            error: 0,
            dropped: 0,
            success: 0.0,
            p99_ms: 0.0,
        };
        for class in classes.iter().filter_map(|c| report.class(c)) {
            out.sent += class.sent;
            out.ok += class.ok;
            out.shed += class.shed;
            out.error += class.error;
            out.dropped += class.dropped;
            out.p99_ms = out.p99_ms.max(class.p99_ms);
        }
        out.success = if out.sent > 0 {
            out.ok as f64 / out.sent as f64
        } else {
            1.0
        };
        out
    }
}

/// One phase's report.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub name: String,
    pub multiplier: f64,
    pub load: LoadReport,
    pub critical: PriorityOutcome,
    pub normal: PriorityOutcome,
    pub low: PriorityOutcome,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadReport {
    pub target: String,
    pub rate_per_sec: f64,
    pub phases: Vec<PhaseReport>,
    /// What the pre-scale did, when one was asked for.
    pub prescale: Option<String>,
    /// Per-second outcomes per priority over the whole run (for plots; the
    /// table leaves it out).
    pub timeline: Vec<Second>,
}

impl WorkloadReport {
    /// The phase with the highest multiplier and the first at 1×, when both exist.
    fn surge_and_baseline(&self) -> Option<(&PhaseReport, &PhaseReport)> {
        let surge = self
            .phases
            .iter()
            .max_by(|a, b| a.multiplier.total_cmp(&b.multiplier))?;
        let base = self.phases.iter().find(|p| p.multiplier == 1.0)?;
        (surge.multiplier > 1.0).then_some((surge, base))
    }

    /// The report as people read it.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "amazon workload against {} at {}/s base",
            self.target, self.rate_per_sec
        );
        if let Some(note) = &self.prescale {
            let _ = writeln!(out, "pre-scale: {note}");
        }
        let _ = writeln!(
            out,
            "\n{:<8} {:>5} {:<9} {:>8} {:>8} {:>7} {:>7} {:>9} {:>9}",
            "phase", "load", "priority", "sent", "ok", "shed", "error", "success", "p99 ms"
        );
        for phase in &self.phases {
            for (name, outcome) in [
                ("critical", &phase.critical),
                ("normal", &phase.normal),
                ("low", &phase.low),
            ] {
                let _ = writeln!(
                    out,
                    "{:<8} {:>4}x {:<9} {:>8} {:>8} {:>7} {:>7} {:>8.3}% {:>9.1}",
                    phase.name,
                    phase.multiplier,
                    name,
                    outcome.sent,
                    outcome.ok,
                    outcome.shed,
                    outcome.error + outcome.dropped,
                    outcome.success * 100.0,
                    outcome.p99_ms
                );
            }
        }
        for phase in &self.phases {
            let _ = write!(
                out,
                "\n{} ({}x):\n{}",
                phase.name,
                phase.multiplier,
                phase.load.table()
            );
        }
        if let Some((surge, base)) = self.surge_and_baseline() {
            let ratio = if base.critical.p99_ms > 0.0 {
                surge.critical.p99_ms / base.critical.p99_ms
            } else {
                f64::INFINITY
            };
            let mark = |ok: bool| if ok { "PASS" } else { "FAIL" };
            let _ = writeln!(out, "\nclaims (Prime Day at {}x):", surge.multiplier);
            let _ = writeln!(
                out,
                "  {} critical success {:.3}% (goal ≥ 99.9%)",
                mark(surge.critical.success >= 0.999),
                surge.critical.success * 100.0
            );
            let _ = writeln!(
                out,
                "  {} critical p99 {:.1} ms = {:.2}x the 1x baseline's {:.1} ms (goal ≤ 2x)",
                mark(ratio <= 2.0),
                surge.critical.p99_ms,
                ratio,
                base.critical.p99_ms
            );
        }
        out
    }
}
