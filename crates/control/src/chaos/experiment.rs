//! An experiment: a fault, a steady-state hypothesis, a duration — and its run.
//!
//! **The run** ([`run`]): *before* — every probe is measured; if one does not
//! hold, the system is not steady and the experiment ends `aborted` without
//! touching anything. *Inject* — the fault. *During* — every `probe_interval` the
//! fault's own observation runs and every probe is measured over the time since
//! injection (at most its window); the worst value is kept; a value beyond an abort
//! limit ends the phase at once (`aborted`). An operator's abort and the control
//! plane's shutdown end it too. *Rollback* — always, once the injection was tried,
//! whatever ended the phase (also after a failed injection, to undo a partial one).
//! *After* — once `settle` has passed, every probe is measured over the time since
//! rollback (at most its window); skipped when shutting down.
//!
//! **The verdict.** A probe holds when its before, worst during and after values
//! are all within tolerance (`null` only with `allow_no_data`); the hypothesis
//! holds when the experiment `completed` and every probe holds. Every step is on
//! the timeline (at most [`MAX_TIMELINE`] entries, the last one saying what was
//! dropped).

use std::time::Duration;

use casebook_kit::config::ConfigError;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::fault::{Fault, FaultEnv, FaultSpec};
use super::monkey::rfc3339_ms;
use super::probe::{MAX_PROBES, Probe};

/// The most timeline entries one experiment keeps.
pub const MAX_TIMELINE: usize = 256;
/// The longest experiment.
pub const MAX_DURATION: Duration = Duration::from_secs(6 * 3600);

/// What `POST /api/chaos/experiments` takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    #[serde(default)]
    pub title: String,
    pub fault: FaultSpec,
    /// The steady-state hypothesis (may be empty: the experiment then only
    /// measures the fault's effect, and holds when it completes).
    #[serde(default)]
    pub probes: Vec<Probe>,
    /// How long the fault holds.
    #[serde(default = "default_duration", with = "humantime_serde")]
    pub duration: Duration,
    /// How often probes and the fault's observation run while it holds.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub probe_interval: Duration,
    /// How long after rollback the *after* probes are measured.
    #[serde(default = "default_settle", with = "humantime_serde")]
    pub settle: Duration,
    /// Seeds the fault's random choices (which instance dies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

fn default_duration() -> Duration {
    Duration::from_secs(60)
}
fn default_interval() -> Duration {
    Duration::from_secs(2)
}
fn default_settle() -> Duration {
    Duration::from_secs(10)
}

impl ExperimentSpec {
    /// Checks what needs no platform: bounds and probe fields. Errors name the
    /// dotted key.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        if self.title.len() > 256 {
            return Err(ConfigError::new("title", "at most 256 bytes"));
        }
        if self.duration < Duration::from_secs(1) || self.duration > MAX_DURATION {
            return Err(ConfigError::new("duration", "from 1s to 6h"));
        }
        if self.probe_interval < Duration::from_millis(200)
            || self.probe_interval > Duration::from_secs(60)
        {
            return Err(ConfigError::new("probe_interval", "from 200ms to 60s"));
        }
        if self.settle > Duration::from_secs(600) {
            return Err(ConfigError::new("settle", "at most 10m"));
        }
        if self.probes.len() > MAX_PROBES {
            return Err(ConfigError::new("probes", format!("at most {MAX_PROBES}")));
        }
        for (i, probe) in self.probes.iter_mut().enumerate() {
            probe.validate(&format!("probes[{i}]"))?;
        }
        match &self.fault {
            FaultSpec::Latency(spec) => spec.validate("fault")?,
            FaultSpec::Monkey(m) => {
                if m.count == 0 || m.count > 100 {
                    return Err(ConfigError::new("fault.count", "from 1 to 100"));
                }
                if m.interval.is_some_and(|i| i < Duration::from_millis(200)) {
                    return Err(ConfigError::new("fault.interval", "at least 200ms"));
                }
            }
            FaultSpec::Kong(k) => {
                if !(0.0..1.0).contains(&k.evacuated_below) {
                    return Err(ConfigError::new(
                        "fault.evacuated_below",
                        "a fraction in [0, 1)",
                    ));
                }
            }
            FaultSpec::Gorilla(_) => {}
        }
        if self.title.is_empty() {
            self.title = format!("{} on {}", self.fault.kind(), self.fault.target());
        }
        Ok(())
    }
}

/// Where an experiment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    /// Ran its duration; the verdict says whether the hypothesis held.
    Completed,
    /// Ended early: not steady before, an abort limit, an operator, shutdown.
    Aborted,
    /// The fault could not be injected or rolled back.
    Failed,
}

/// One probe's values at each phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeResult {
    pub name: String,
    pub target: String,
    pub before: Option<f64>,
    /// The worst value measured while the fault held.
    pub during: Option<f64>,
    pub during_samples: u32,
    pub after: Option<f64>,
    /// `null` until judged.
    pub held: Option<bool>,
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntry {
    pub at: String,
    pub at_ms: u64,
    pub phase: String,
    pub event: String,
}

/// An experiment as `GET /api/chaos/experiments/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExperimentRecord {
    pub id: String,
    pub title: String,
    pub kind: String,
    pub target: String,
    pub status: Status,
    /// `before`, `during`, `rollback`, `after`, `done`.
    pub phase: String,
    /// Whether the hypothesis held; `null` while running.
    pub held: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    pub probes: Vec<ProbeResult>,
    pub timeline: Vec<TimelineEntry>,
    /// The fault's own measurements.
    pub fault: Value,
    pub spec: ExperimentSpec,
}

impl ExperimentRecord {
    pub fn new(id: String, spec: ExperimentSpec, now_ms: u64) -> Self {
        Self {
            id,
            title: spec.title.clone(),
            kind: spec.fault.kind().into(),
            target: spec.fault.target(),
            status: Status::Running,
            phase: "before".into(),
            held: None,
            abort_reason: None,
            error: None,
            started_at: rfc3339_ms(now_ms),
            ended_at: None,
            probes: spec
                .probes
                .iter()
                .map(|p| ProbeResult {
                    name: p.name.clone(),
                    target: p.target(),
                    before: None,
                    during: None,
                    during_samples: 0,
                    after: None,
                    held: None,
                })
                .collect(),
            timeline: Vec::new(),
            fault: Value::Null,
            spec,
        }
    }

    fn note(&mut self, now_ms: u64, phase: &str, event: impl Into<String>) {
        let event = event.into();
        tracing::info!(experiment = %self.id, phase, %event, "chaos experiment");
        if self.timeline.len() + 1 < MAX_TIMELINE {
            self.timeline.push(TimelineEntry {
                at: rfc3339_ms(now_ms),
                at_ms: now_ms,
                phase: phase.into(),
                event,
            });
        } else if self.timeline.len() + 1 == MAX_TIMELINE {
            self.timeline.push(TimelineEntry {
                at: rfc3339_ms(now_ms),
                at_ms: now_ms,
                phase: phase.into(),
                event: "timeline full: later entries dropped".into(),
            });
        }
    }
}

/// What ended the *during* phase early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Operator,
    Shutdown,
}

/// The shared record a run updates and the API reads.
pub type Shared = std::sync::Arc<Mutex<ExperimentRecord>>;

/// Measures every probe over `window` (each at most its own) into `set`.
fn measure_all(env: &FaultEnv, probes: &[Probe], window: Option<Duration>) -> Vec<Option<f64>> {
    probes
        .iter()
        .map(|p| {
            let w = window
                .map_or(p.window, |w| w.min(p.window))
                .max(Duration::from_secs(1));
            let ids = p.region.as_ref().map(|r| env.instances_in_region(r));
            env.measure.measure(p, w, ids.as_deref())
        })
        .collect()
}

fn fmt_value(v: Option<f64>) -> String {
    v.map_or("no data".into(), |v| format!("{v:.4}"))
}

/// Runs one experiment to its end, updating `record`. `abort` is the operator's
/// abort; `shutdown` the control plane's.
pub async fn run(
    record: Shared,
    mut fault: Box<dyn Fault>,
    env: FaultEnv,
    abort: CancellationToken,
    shutdown: CancellationToken,
) {
    let spec = record.lock().spec.clone();
    let now = || env.clock.wall_millis();

    // Before: is the system steady?
    let before = measure_all(&env, &spec.probes, None);
    {
        let mut r = record.lock();
        let mut unsteady = Vec::new();
        for ((result, probe), value) in r.probes.iter_mut().zip(&spec.probes).zip(&before) {
            result.before = *value;
            if !probe.holds(*value) {
                unsteady.push(format!(
                    "{} = {} (want {})",
                    probe.name,
                    fmt_value(*value),
                    probe.target()
                ));
            }
        }
        if !unsteady.is_empty() {
            let reason = format!("not steady before injection: {}", unsteady.join("; "));
            r.note(now(), "before", reason.clone());
            finish(&mut r, Status::Aborted, Some(reason), None, now());
            return;
        }
        r.note(now(), "before", "steady state holds");
        r.phase = "during".into();
    }

    // Inject.
    let injected = fault.inject(&env).await;
    let injected_at = env.clock.now();
    let mut status = Status::Completed;
    let mut abort_reason = None;
    let mut error = None;
    match injected {
        Ok(line) => record.lock().note(now(), "inject", line),
        Err(e) => {
            record
                .lock()
                .note(now(), "inject", format!("injection failed: {e}"));
            status = Status::Failed;
            error = Some(format!("injection failed: {e}"));
        }
    }

    // During.
    let mut stopped = None;
    if status == Status::Completed {
        let deadline = tokio::time::Instant::now() + spec.duration;
        loop {
            let next = (tokio::time::Instant::now() + spec.probe_interval).min(deadline);
            tokio::select! {
                () = abort.cancelled() => { stopped = Some(Stop::Operator); break; }
                () = shutdown.cancelled() => { stopped = Some(Stop::Shutdown); break; }
                () = tokio::time::sleep_until(next) => {}
            }
            let lines = fault.during(&env).await;
            let since = env.clock.now().saturating_duration_since(injected_at);
            let values = measure_all(&env, &spec.probes, Some(since));
            let mut r = record.lock();
            for line in lines {
                r.note(now(), "during", line);
            }
            let mut breach = None;
            for ((result, probe), value) in r.probes.iter_mut().zip(&spec.probes).zip(&values) {
                if let Some(v) = value {
                    result.during = Some(probe.worse(result.during, *v));
                    result.during_samples += 1;
                }
                if breach.is_none() && probe.breaches_abort(*value) {
                    breach = Some(format!(
                        "{} = {} beyond its abort limit",
                        probe.name,
                        fmt_value(*value)
                    ));
                }
            }
            r.fault = fault.report();
            if let Some(reason) = breach {
                r.note(now(), "during", format!("abort: {reason}"));
                status = Status::Aborted;
                abort_reason = Some(reason);
                break;
            }
            drop(r);
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
    }
    match stopped {
        Some(Stop::Operator) => {
            status = Status::Aborted;
            abort_reason = Some("aborted by an operator".into());
        }
        Some(Stop::Shutdown) => {
            status = Status::Aborted;
            abort_reason = Some("the control plane is shutting down".into());
        }
        None => {}
    }
    if let Some(reason) = &abort_reason {
        record
            .lock()
            .note(now(), "during", format!("aborted: {reason}"));
    }

    // Rollback: always.
    record.lock().phase = "rollback".into();
    match fault.rollback(&env).await {
        Ok(line) => record.lock().note(now(), "rollback", line),
        Err(e) => {
            record
                .lock()
                .note(now(), "rollback", format!("rollback failed: {e}"));
            status = Status::Failed;
            error.get_or_insert(format!("rollback failed: {e}"));
        }
    }
    let rolled_back_at = env.clock.now();
    record.lock().fault = fault.report();

    // After.
    if shutdown.is_cancelled() {
        let mut r = record.lock();
        r.note(
            now(),
            "after",
            "skipped: the control plane is shutting down",
        );
        finish(&mut r, status, abort_reason, error, now());
        return;
    }
    record.lock().phase = "after".into();
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(spec.settle) => {}
    }
    let since = env.clock.now().saturating_duration_since(rolled_back_at);
    let after = measure_all(&env, &spec.probes, Some(since));
    let mut r = record.lock();
    for (result, value) in r.probes.iter_mut().zip(&after) {
        result.after = *value;
    }
    r.note(now(), "after", "measured");
    finish(&mut r, status, abort_reason, error, now());
}

/// Judges every probe and the hypothesis, and closes the record.
fn finish(
    r: &mut ExperimentRecord,
    status: Status,
    abort_reason: Option<String>,
    error: Option<String>,
    now_ms: u64,
) {
    let probes = r.spec.probes.clone();
    let mut all = true;
    for (result, probe) in r.probes.iter_mut().zip(&probes) {
        let held = probe.holds(result.before)
            && (result.during_samples == 0 || probe.holds(result.during))
            && probe.holds(result.after);
        result.held = Some(held);
        all &= held;
    }
    r.held = Some(status == Status::Completed && all);
    r.status = status;
    r.abort_reason = abort_reason;
    r.error = error;
    r.phase = "done".into();
    r.ended_at = Some(rfc3339_ms(now_ms));
    let verdict = if r.held == Some(true) {
        "held"
    } else {
        "did not hold"
    };
    r.note(
        now_ms,
        "done",
        format!("{:?}: the hypothesis {verdict}", status).to_lowercase(),
    );
    metrics::counter!("chaos_experiments_total", "kind" => r.kind.clone(),
        "status" => format!("{status:?}").to_lowercase(), "held" => verdict.replace(' ', "_"))
    .increment(1);
}
