//! An open-loop, constant-rate load generator with HdrHistogram percentiles.
//!
//! Guarantees:
//! - **open loop**: request *i* is due at `start + i / rate`, scheduled in advance;
//!   a slow answer never delays the next send;
//! - **no coordinated omission**: latency is measured from the *intended* send
//!   time, so time the generator itself fell behind counts against the target;
//! - **bounded**: at most `max_in_flight` requests are outstanding; a request due
//!   while that many are out is not sent and is counted as `dropped` (so a target
//!   of sockets cannot exhaust the process's file descriptors);
//! - per class of request: counts of ok / shed / error / dropped, ok-within-SLO,
//!   and percentiles of successful latencies.
//!
//! Not guaranteed: sub-millisecond send precision (tokio's timer has 1 ms
//! granularity; requests due within the same millisecond go out together, and
//! their latency still counts from their own intended time).
//!
//! ```no_run
//! # async fn demo() -> Result<(), casebook_kit::loadgen::LoadError> {
//! use std::time::Duration;
//! use casebook_kit::loadgen::{LoadPlan, Verdict, run};
//!
//! let plan = LoadPlan::new(1000.0, Duration::from_secs(10));
//! let report = run(&plan, |i| ("default", async move { if i % 100 == 0 { Verdict::Shed } else { Verdict::Ok } })).await?;
//! println!("{}", report.table());
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// The most requests one run may schedule (bounds memory and run time).
pub const MAX_REQUESTS: u64 = 100_000_000;

/// The most requests one run may have outstanding.
pub const MAX_IN_FLIGHT: usize = 1_000_000;

/// What to send: a rate, for how long, with how many outstanding at most.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadPlan {
    /// Requests per second.
    pub rate_per_sec: f64,
    /// How long to send for.
    #[serde(rename = "duration_ms", with = "crate::api::duration_ms")]
    pub duration: Duration,
    /// Most requests outstanding at once.
    pub max_in_flight: usize,
    /// A success slower than this does not count as goodput.
    #[serde(rename = "slo_ms", with = "crate::api::duration_ms::option")]
    pub slo: Option<Duration>,
}

impl LoadPlan {
    /// `rate_per_sec` for `duration`, at most 10,000 in flight, no SLO.
    pub fn new(rate_per_sec: f64, duration: Duration) -> Self {
        Self {
            rate_per_sec,
            duration,
            max_in_flight: 10_000,
            slo: None,
        }
    }

    fn requests(&self) -> Result<u64, LoadError> {
        if !(self.rate_per_sec.is_finite() && self.rate_per_sec > 0.0) {
            return Err(LoadError::Plan(format!(
                "rate must be a positive number of requests per second, got {}",
                self.rate_per_sec
            )));
        }
        if self.duration.is_zero() {
            return Err(LoadError::Plan("duration must be positive".into()));
        }
        if self.max_in_flight == 0 || self.max_in_flight > MAX_IN_FLIGHT {
            return Err(LoadError::Plan(format!(
                "max_in_flight must be 1..={MAX_IN_FLIGHT}, got {}",
                self.max_in_flight
            )));
        }
        let n = (self.rate_per_sec * self.duration.as_secs_f64()).round();
        if n > MAX_REQUESTS as f64 {
            return Err(LoadError::Plan(format!(
                "{n} requests is over the {MAX_REQUESTS} per run limit"
            )));
        }
        Ok((n as u64).max(1))
    }
}

/// Why a run could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("invalid load plan: {0}")]
    Plan(String),
}

/// How one request ended, as the request factory judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Served.
    Ok,
    /// Refused by load shedding or rate limiting (an answer, not a failure).
    Shed,
    /// Failed or timed out.
    Error,
}

/// What one class of requests saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassReport {
    pub class: String,
    pub sent: u64,
    pub ok: u64,
    pub ok_within_slo: u64,
    pub shed: u64,
    pub error: u64,
    /// Due while `max_in_flight` were outstanding: never sent.
    pub dropped: u64,
    /// Latency of successful requests, from their intended send time, in ms.
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl ClassReport {
    /// A class that saw no request: every count and percentile zero (a phase that
    /// was skipped, or a class the run never scheduled).
    pub fn empty(class: &str) -> Self {
        Self {
            class: class.to_owned(),
            sent: 0,
            ok: 0,
            ok_within_slo: 0,
            shed: 0,
            error: 0,
            dropped: 0,
            p50_ms: 0.0,
            p90_ms: 0.0,
            p99_ms: 0.0,
            p999_ms: 0.0,
            max_ms: 0.0,
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    pub plan: LoadPlan,
    /// From the first intended send to the last answer.
    #[serde(rename = "elapsed_ms", with = "crate::api::duration_ms")]
    pub elapsed: Duration,
    pub classes: Vec<ClassReport>,
}

impl LoadReport {
    /// A report of `plan` with no requests in it: what a run that sent nothing
    /// (or a phase that was skipped) reports.
    pub fn empty(plan: LoadPlan) -> Self {
        Self {
            plan,
            elapsed: Duration::ZERO,
            classes: Vec::new(),
        }
    }

    /// One class's numbers.
    pub fn class(&self, name: &str) -> Option<&ClassReport> {
        self.classes.iter().find(|c| c.class == name)
    }

    /// Successes within the SLO (all successes without one) per second of the plan.
    pub fn goodput_per_sec(&self) -> f64 {
        let good: u64 = self.classes.iter().map(|c| c.ok_within_slo).sum();
        good as f64 / self.plan.duration.as_secs_f64()
    }

    /// The report as a fixed-width text table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9}\n",
            "class",
            "sent",
            "ok",
            "in-slo",
            "shed",
            "error",
            "dropped",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms"
        );
        for c in &self.classes {
            let _ = writeln!(
                out,
                "{:<10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                c.class,
                c.sent,
                c.ok,
                c.ok_within_slo,
                c.shed,
                c.error,
                c.dropped,
                c.p50_ms,
                c.p90_ms,
                c.p99_ms,
                c.max_ms
            );
        }
        let _ = writeln!(
            out,
            "goodput {:.1}/s over {:?}",
            self.goodput_per_sec(),
            self.plan.duration
        );
        out
    }
}

struct ClassStats {
    sent: u64,
    ok: u64,
    ok_within_slo: u64,
    shed: u64,
    error: u64,
    dropped: u64,
    latency_us: Histogram<u64>,
}

impl ClassStats {
    fn new() -> Self {
        Self {
            sent: 0,
            ok: 0,
            ok_within_slo: 0,
            shed: 0,
            error: 0,
            dropped: 0,
            // 1 µs .. 1 h, 3 significant figures.
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("static histogram bounds are valid"),
        }
    }

    fn report(&self, class: &str) -> ClassReport {
        let ms = |q: f64| {
            if self.latency_us.is_empty() {
                0.0
            } else {
                self.latency_us.value_at_quantile(q) as f64 / 1000.0
            }
        };
        ClassReport {
            class: class.to_owned(),
            sent: self.sent,
            ok: self.ok,
            ok_within_slo: self.ok_within_slo,
            shed: self.shed,
            error: self.error,
            dropped: self.dropped,
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: if self.latency_us.is_empty() {
                0.0
            } else {
                self.latency_us.max() as f64 / 1000.0
            },
        }
    }
}

type Stats = Arc<Mutex<BTreeMap<&'static str, ClassStats>>>;

/// Live counters of a run, for a progress bar: read them from another task.
#[derive(Debug, Default)]
pub struct Progress {
    total: AtomicU64,
    due: AtomicU64,
    done: AtomicU64,
}

impl Progress {
    /// Requests the plan will schedule (known once the run starts).
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
    /// Requests whose intended send time has come.
    pub fn due(&self) -> u64 {
        self.due.load(Ordering::Relaxed)
    }
    /// Requests answered (or dropped unsent).
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
}

/// Runs `plan`, asking `make(i)` for the class and the future of request `i` at
/// its intended send time, and spawning that future on the tokio runtime.
pub async fn run<F, Fut>(plan: &LoadPlan, make: F) -> Result<LoadReport, LoadError>
where
    F: FnMut(u64) -> (&'static str, Fut),
    Fut: Future<Output = Verdict> + Send + 'static,
{
    run_with_progress(plan, &Arc::new(Progress::default()), make).await
}

/// [`run`], updating `progress` as it goes.
pub async fn run_with_progress<F, Fut>(
    plan: &LoadPlan,
    progress: &Arc<Progress>,
    mut make: F,
) -> Result<LoadReport, LoadError>
where
    F: FnMut(u64) -> (&'static str, Fut),
    Fut: Future<Output = Verdict> + Send + 'static,
{
    let total = plan.requests()?;
    progress.total.store(total, Ordering::Relaxed);
    let interval_nanos = 1e9 / plan.rate_per_sec;
    let in_flight = Arc::new(Semaphore::new(plan.max_in_flight));
    let stats: Stats = Arc::default();
    let slo = plan.slo;
    let start = Instant::now();
    for i in 0..total {
        // Scheduled from the start, not from the previous send: open loop.
        let intended = start + Duration::from_nanos((i as f64 * interval_nanos) as u64);
        tokio::time::sleep_until(intended).await;
        let (class, request) = make(i);
        progress.due.fetch_add(1, Ordering::Relaxed);
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            stats
                .lock()
                .entry(class)
                .or_insert_with(ClassStats::new)
                .dropped += 1;
            progress.done.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let stats = stats.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let verdict = request.await;
            let latency = intended.elapsed();
            // The permit goes back only after the outcome is recorded: the run
            // ends when every permit is back, and must not miss the last outcome.
            let _permit = permit;
            progress.done.fetch_add(1, Ordering::Relaxed);
            let mut all = stats.lock();
            let s = all.entry(class).or_insert_with(ClassStats::new);
            s.sent += 1;
            match verdict {
                Verdict::Ok => {
                    s.ok += 1;
                    if slo.is_none_or(|slo| latency <= slo) {
                        s.ok_within_slo += 1;
                    }
                    let micros = u64::try_from(latency.as_micros())
                        .unwrap_or(u64::MAX)
                        .max(1);
                    s.latency_us.saturating_record(micros);
                }
                Verdict::Shed => s.shed += 1,
                Verdict::Error => s.error += 1,
            }
        });
    }
    // Every outstanding request holds a permit: having them all back means done.
    let all = u32::try_from(plan.max_in_flight).expect("bounded by MAX_IN_FLIGHT");
    let _drained = in_flight
        .acquire_many(all)
        .await
        .expect("semaphore never closed");
    let elapsed = start.elapsed();
    let classes = stats
        .lock()
        .iter()
        .map(|(class, s)| s.report(class))
        .collect();
    Ok(LoadReport {
        plan: plan.clone(),
        elapsed,
        classes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sends_at_the_planned_rate_and_counts_each_class() {
        let plan = LoadPlan {
            slo: Some(Duration::from_millis(50)),
            ..LoadPlan::new(100.0, Duration::from_secs(2))
        };
        let report = run(&plan, |i| {
            let class = if i % 4 == 0 { "critical" } else { "normal" };
            (class, async move {
                // Paused time: this sleep advances the virtual clock, never real time.
                tokio::time::sleep(Duration::from_millis(if i % 2 == 0 { 10 } else { 100 })).await;
                match i % 10 {
                    9 => Verdict::Shed,
                    7 => Verdict::Error,
                    _ => Verdict::Ok,
                }
            })
        })
        .await
        .unwrap();
        let sent: u64 = report.classes.iter().map(|c| c.sent).sum();
        assert_eq!(sent, 200);
        let critical = report.class("critical").unwrap();
        assert_eq!(critical.sent, 50);
        let normal = report.class("normal").unwrap();
        assert_eq!((normal.shed, normal.error), (20, 20));
        // Even requests take 10 ms and meet the 50 ms SLO; odd ones take 100 ms.
        assert_eq!(critical.ok_within_slo, critical.ok);
        assert!(normal.ok_within_slo < normal.ok);
        assert!(
            critical.p99_ms >= 10.0 && critical.p99_ms < 12.0,
            "{}",
            critical.p99_ms
        );
        assert!(report.table().contains("critical"));
    }

    #[tokio::test(start_paused = true)]
    async fn latency_counts_from_the_intended_time_and_the_in_flight_bound_holds() {
        // Each request takes 1 s; at 10/s with at most 5 out, half are never sent.
        let plan = LoadPlan {
            max_in_flight: 5,
            ..LoadPlan::new(10.0, Duration::from_secs(3))
        };
        let progress = Arc::new(Progress::default());
        let report = run_with_progress(&plan, &progress, |_| {
            ("c", async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Verdict::Ok
            })
        })
        .await
        .unwrap();
        let c = report.class("c").unwrap();
        assert_eq!(c.sent + c.dropped, 30);
        assert!(c.dropped >= 10, "{c:?}");
        assert!(c.p50_ms >= 1000.0 && c.p50_ms < 1010.0, "{c:?}");
        let counts = (progress.total(), progress.due(), progress.done());
        assert_eq!(counts, (30, 30, 30));
    }

    #[tokio::test]
    async fn a_bad_plan_is_refused() {
        for plan in [
            LoadPlan::new(0.0, Duration::from_secs(1)),
            LoadPlan::new(f64::NAN, Duration::from_secs(1)),
            LoadPlan::new(10.0, Duration::ZERO),
            LoadPlan {
                max_in_flight: 0,
                ..LoadPlan::new(10.0, Duration::from_secs(1))
            },
            LoadPlan::new(1e9, Duration::from_secs(1000)),
        ] {
            assert!(
                run(&plan, |_| ("c", async { Verdict::Ok })).await.is_err(),
                "{plan:?}"
            );
        }
    }
}

/// What every `casebook load CASE` shows while it runs, whatever the case: one bar
/// (the current phase, a position out of a length) and one line of counters. Each
/// case's live counters implement it, so the binary draws every load the same way.
pub trait ShowProgress: Send + Sync + 'static {
    /// The phase under way, e.g. `logins`, `messages` or `rides`.
    fn phase(&self) -> String;
    /// How far the phase is: (position, length); a length of 0 draws a spinner.
    fn position(&self) -> (u64, u64);
    /// The counters worth watching, e.g. `matched 120 paid 80`.
    fn message(&self) -> String;
}

impl ShowProgress for Progress {
    fn phase(&self) -> String {
        "requests".to_owned()
    }
    fn position(&self) -> (u64, u64) {
        (self.due(), self.total())
    }
    fn message(&self) -> String {
        format!("answered {}", self.done())
    }
}

#[cfg(test)]
mod face_tests {
    use super::*;

    #[test]
    fn an_empty_report_has_no_classes_and_no_goodput() {
        let report = LoadReport::empty(LoadPlan::new(10.0, Duration::from_secs(2)));
        assert!(report.classes.is_empty());
        assert_eq!(report.goodput_per_sec(), 0.0);
        assert!(report.table().contains("goodput 0.0/s"));
        let empty = ClassReport::empty("login");
        assert_eq!(
            (empty.class.as_str(), empty.sent, empty.p99_ms),
            ("login", 0, 0.0)
        );
    }

    #[test]
    fn the_plain_progress_shows_due_over_total() {
        let progress = Progress::default();
        progress.total.store(10, Ordering::Relaxed);
        progress.due.store(4, Ordering::Relaxed);
        let shown: &dyn ShowProgress = &progress;
        assert_eq!(shown.position(), (4, 10));
        assert_eq!(shown.phase(), "requests");
    }
}
