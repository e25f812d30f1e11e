//! The breaker's state machine and rolling window.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::clock::SharedClock;
use crate::resilience::ConfigError;

/// Every number of the breaker; defaults are Hystrix's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Length of the rolling window.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Buckets the window is cut into; the window slides one bucket at a time.
    pub buckets: u32,
    /// How often the health snapshot the trip decision reads is retaken.
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Duration,
    /// Fewest requests in the window before the breaker may trip.
    pub request_volume_threshold: u64,
    /// Error percentage (0..=100) at or above which the breaker trips.
    pub error_threshold_percent: u8,
    /// How long the breaker stays open before one trial call is let through.
    #[serde(with = "humantime_serde")]
    pub sleep_window: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            buckets: 10,
            snapshot_interval: Duration::from_millis(500),
            request_volume_threshold: 20,
            error_threshold_percent: 50,
            sleep_window: Duration::from_secs(5),
        }
    }
}

/// The most buckets a window may have (bounds memory: one histogram each).
pub const MAX_BUCKETS: u32 = 1000;

impl BreakerConfig {
    /// Checks the numbers make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.buckets == 0 || self.buckets > MAX_BUCKETS {
            return Err(ConfigError::new(
                "breaker.buckets",
                format!("must be 1..={MAX_BUCKETS}, got {}", self.buckets),
            ));
        }
        if self.window.is_zero()
            || !self
                .window
                .as_nanos()
                .is_multiple_of(u128::from(self.buckets))
        {
            return Err(ConfigError::new(
                "breaker.window",
                format!(
                    "must be positive and divisible into {} buckets, got {:?}",
                    self.buckets, self.window
                ),
            ));
        }
        if self.snapshot_interval.is_zero() {
            return Err(ConfigError::new(
                "breaker.snapshot_interval",
                "must be positive",
            ));
        }
        if self.error_threshold_percent > 100 {
            return Err(ConfigError::new(
                "breaker.error_threshold_percent",
                format!("must be 0..=100, got {}", self.error_threshold_percent),
            ));
        }
        if self.sleep_window.is_zero() {
            return Err(ConfigError::new("breaker.sleep_window", "must be positive"));
        }
        Ok(())
    }
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    fn gauge_value(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        }
    }
}

/// How a call the breaker let through ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Success,
    Failure,
    Timeout,
    /// The bulkhead behind the breaker refused the call.
    Rejected,
}

/// The breaker refused the call without running it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker for {dependency} is open")]
pub struct ShortCircuited {
    pub dependency: Arc<str>,
}

/// What a Hystrix dashboard shows for one breaker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerStats {
    pub name: String,
    pub state: BreakerState,
    /// Requests in the live window (short-circuits excluded).
    pub requests: u64,
    pub successes: u64,
    pub failures: u64,
    pub timeouts: u64,
    pub rejections: u64,
    pub short_circuited: u64,
    /// `floor(errors * 100 / requests)` over the live window.
    pub error_percent: u8,
    /// Requests per second over the window (short-circuits included: offered rate).
    pub rate_per_second: f64,
    /// Latency percentiles, in milliseconds, of calls that ran, over the window.
    pub latency_ms_p50: f64,
    pub latency_ms_p90: f64,
    pub latency_ms_p99: f64,
    /// The health snapshot the trip decision last used.
    pub snapshot_requests: u64,
    pub snapshot_error_percent: u8,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    success: u64,
    failure: u64,
    timeout: u64,
    rejected: u64,
    short_circuited: u64,
}

impl Counts {
    fn total(&self) -> u64 {
        self.success + self.failure + self.timeout + self.rejected
    }
    fn errors(&self) -> u64 {
        self.failure + self.timeout + self.rejected
    }
    fn error_percent(&self) -> u8 {
        let total = self.total();
        if total == 0 {
            return 0;
        }
        // floor(errors / total × 100), as Hystrix computes it.
        u8::try_from(self.errors() * 100 / total).expect("errors never exceed total")
    }
    fn add(&mut self, other: &Counts) {
        self.success += other.success;
        self.failure += other.failure;
        self.timeout += other.timeout;
        self.rejected += other.rejected;
        self.short_circuited += other.short_circuited;
    }
}

struct Bucket {
    /// Index of the bucket-length slice of time this bucket holds; `u64::MAX` = never used.
    tick: u64,
    counts: Counts,
    /// Latency in microseconds of calls that ran.
    latency_us: Histogram<u64>,
}

impl Bucket {
    fn new() -> Self {
        Self {
            tick: u64::MAX,
            counts: Counts::default(),
            latency_us: new_histogram(),
        }
    }
    fn reset(&mut self, tick: u64) {
        self.tick = tick;
        self.counts = Counts::default();
        self.latency_us.reset();
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 1 h at 2 significant figures: a few KiB per bucket.
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("static histogram bounds are valid")
}

struct State {
    state: BreakerState,
    opened_at: Instant,
    buckets: Vec<Bucket>,
    last_snapshot_at: Instant,
    snapshot: Counts,
}

struct Metrics {
    state: metrics::Gauge,
    error_percent: metrics::Gauge,
    success: metrics::Counter,
    failure: metrics::Counter,
    timeout: metrics::Counter,
    rejected: metrics::Counter,
    short_circuited: metrics::Counter,
    latency: metrics::Histogram,
}

impl Metrics {
    fn new(name: &str) -> Self {
        let calls = |outcome: &'static str| {
            metrics::counter!("casebook_breaker_calls_total",
                "dependency" => name.to_owned(), "outcome" => outcome)
        };
        Self {
            state: metrics::gauge!("casebook_breaker_state", "dependency" => name.to_owned()),
            error_percent: metrics::gauge!("casebook_breaker_error_percent", "dependency" => name.to_owned()),
            success: calls("success"),
            failure: calls("failure"),
            timeout: calls("timeout"),
            rejected: calls("rejected"),
            short_circuited: calls("short_circuited"),
            latency: metrics::histogram!("casebook_breaker_latency_seconds",
                "dependency" => name.to_owned()),
        }
    }
}

struct Shared {
    name: Arc<str>,
    config: BreakerConfig,
    bucket_nanos: u128,
    clock: SharedClock,
    origin: Instant,
    state: Mutex<State>,
    metrics: Metrics,
}

/// A circuit breaker for one dependency. Cloning shares it.
#[derive(Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.shared.name)
            .field("state", &self.shared.state.lock().state)
            .finish()
    }
}

impl CircuitBreaker {
    /// A closed breaker named after its dependency.
    pub fn new(
        name: impl Into<String>,
        config: BreakerConfig,
        clock: SharedClock,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let name: String = name.into();
        let now = clock.now();
        let bucket_nanos = config.window.as_nanos() / u128::from(config.buckets);
        let buckets = (0..config.buckets).map(|_| Bucket::new()).collect();
        let metrics = Metrics::new(&name);
        metrics.state.set(BreakerState::Closed.gauge_value());
        Ok(Self {
            shared: Arc::new(Shared {
                name: name.into(),
                config,
                bucket_nanos,
                clock,
                origin: now,
                state: Mutex::new(State {
                    state: BreakerState::Closed,
                    opened_at: now,
                    buckets,
                    last_snapshot_at: now,
                    snapshot: Counts::default(),
                }),
                metrics,
            }),
        })
    }

    /// The dependency this breaker guards.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.shared.config
    }

    /// The current state (after applying a due snapshot or sleep-window expiry is
    /// left to the next call: reading never changes the state).
    pub fn state(&self) -> BreakerState {
        self.shared.state.lock().state
    }

    /// Asks to run one call. `Err` means short-circuited (counted, not run).
    /// The returned permit must be given the call's outcome; dropped without one,
    /// the call counts as cancelled (a cancelled trial re-opens the breaker).
    pub fn try_acquire(&self) -> Result<Permit, ShortCircuited> {
        let shared = &self.shared;
        let now = shared.clock.now();
        let mut st = shared.state.lock();
        self.maybe_snapshot(&mut st, now);
        let trial = match st.state {
            BreakerState::Closed => false,
            BreakerState::Open
                if now.saturating_duration_since(st.opened_at) >= shared.config.sleep_window =>
            {
                // Under the lock: exactly one caller makes this transition.
                self.set_state(&mut st, BreakerState::HalfOpen);
                true
            }
            BreakerState::Open | BreakerState::HalfOpen => {
                self.bucket(&mut st, now).counts.short_circuited += 1;
                drop(st);
                shared.metrics.short_circuited.increment(1);
                return Err(ShortCircuited {
                    dependency: shared.name.clone(),
                });
            }
        };
        Ok(Permit {
            breaker: self.clone(),
            started: now,
            trial,
            finished: false,
        })
    }

    fn bucket<'a>(&self, st: &'a mut State, now: Instant) -> &'a mut Bucket {
        let tick = self.tick(now);
        let len = st.buckets.len() as u64;
        let bucket = &mut st.buckets[(tick % len) as usize];
        if bucket.tick != tick {
            bucket.reset(tick);
        }
        bucket
    }

    fn tick(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.shared.origin).as_nanos();
        u64::try_from(since / self.shared.bucket_nanos).unwrap_or(u64::MAX - 1)
    }

    /// Sums the buckets inside the window ending at `now`.
    fn window(&self, st: &State, now: Instant) -> (Counts, Histogram<u64>, bool) {
        let current = self.tick(now);
        let len = st.buckets.len() as u64;
        let oldest = current.saturating_sub(len - 1);
        let mut counts = Counts::default();
        let mut latency = new_histogram();
        let mut any_latency = false;
        for b in &st.buckets {
            if b.tick != u64::MAX && b.tick >= oldest && b.tick <= current {
                counts.add(&b.counts);
                if !b.latency_us.is_empty() {
                    any_latency = true;
                    // Same bounds on both sides: adding cannot fail.
                    let _ = latency.add(&b.latency_us);
                }
            }
        }
        (counts, latency, any_latency)
    }

    fn maybe_snapshot(&self, st: &mut State, now: Instant) {
        let cfg = &self.shared.config;
        if now.saturating_duration_since(st.last_snapshot_at) < cfg.snapshot_interval {
            return;
        }
        st.last_snapshot_at = now;
        st.snapshot = self.window(st, now).0;
        self.shared
            .metrics
            .error_percent
            .set(f64::from(st.snapshot.error_percent()));
        if st.state == BreakerState::Closed
            && st.snapshot.total() >= cfg.request_volume_threshold
            && st.snapshot.error_percent() >= cfg.error_threshold_percent
        {
            st.opened_at = now;
            self.set_state(st, BreakerState::Open);
            tracing::warn!(
                dependency = %self.shared.name,
                requests = st.snapshot.total(),
                error_percent = st.snapshot.error_percent(),
                "circuit breaker opened"
            );
        }
    }

    fn set_state(&self, st: &mut State, to: BreakerState) {
        st.state = to;
        self.shared.metrics.state.set(to.gauge_value());
    }

    fn finish(&self, started: Instant, trial: bool, outcome: Option<CallOutcome>) {
        let shared = &self.shared;
        let now = shared.clock.now();
        let elapsed = now.saturating_duration_since(started);
        let mut st = shared.state.lock();
        if let Some(outcome) = outcome {
            let bucket = self.bucket(&mut st, now);
            match outcome {
                CallOutcome::Success => bucket.counts.success += 1,
                CallOutcome::Failure => bucket.counts.failure += 1,
                CallOutcome::Timeout => bucket.counts.timeout += 1,
                CallOutcome::Rejected => bucket.counts.rejected += 1,
            }
            let micros = u64::try_from(elapsed.as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            bucket.latency_us.saturating_record(micros);
        }
        if trial {
            debug_assert_eq!(
                st.state,
                BreakerState::HalfOpen,
                "only a half-open breaker has a trial"
            );
            if outcome == Some(CallOutcome::Success) {
                for b in &mut st.buckets {
                    b.reset(u64::MAX);
                }
                st.snapshot = Counts::default();
                st.last_snapshot_at = now;
                self.set_state(&mut st, BreakerState::Closed);
                tracing::info!(dependency = %shared.name, "circuit breaker closed after a successful trial");
            } else {
                st.opened_at = now;
                self.set_state(&mut st, BreakerState::Open);
                tracing::warn!(dependency = %shared.name, ?outcome, "circuit breaker trial failed; re-opened");
            }
        }
        drop(st);
        let m = &shared.metrics;
        match outcome {
            Some(CallOutcome::Success) => m.success.increment(1),
            Some(CallOutcome::Failure) => m.failure.increment(1),
            Some(CallOutcome::Timeout) => m.timeout.increment(1),
            Some(CallOutcome::Rejected) => m.rejected.increment(1),
            None => return,
        }
        m.latency.record(elapsed.as_secs_f64());
    }

    /// The dashboard view: live window counts, state, rate and latency percentiles.
    pub fn stats(&self) -> BreakerStats {
        let now = self.shared.clock.now();
        let st = self.shared.state.lock();
        let (counts, latency, any) = self.window(&st, now);
        let pct = |q: f64| {
            if any {
                latency.value_at_quantile(q) as f64 / 1000.0
            } else {
                0.0
            }
        };
        BreakerStats {
            name: self.shared.name.to_string(),
            state: st.state,
            requests: counts.total(),
            successes: counts.success,
            failures: counts.failure,
            timeouts: counts.timeout,
            rejections: counts.rejected,
            short_circuited: counts.short_circuited,
            error_percent: counts.error_percent(),
            rate_per_second: (counts.total() + counts.short_circuited) as f64
                / self.shared.config.window.as_secs_f64(),
            latency_ms_p50: pct(0.5),
            latency_ms_p90: pct(0.9),
            latency_ms_p99: pct(0.99),
            snapshot_requests: st.snapshot.total(),
            snapshot_error_percent: st.snapshot.error_percent(),
        }
    }
}

/// Leave to run one call through a breaker; report the outcome with [`Permit::record`].
#[derive(Debug)]
pub struct Permit {
    breaker: CircuitBreaker,
    started: Instant,
    trial: bool,
    finished: bool,
}

impl Permit {
    /// Whether this call is the half-open trial.
    pub fn is_trial(&self) -> bool {
        self.trial
    }

    /// Reports how the call ended.
    pub fn record(mut self, outcome: CallOutcome) {
        self.finished = true;
        self.breaker.finish(self.started, self.trial, Some(outcome));
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.finished {
            // Cancelled: not counted in the window, but a cancelled trial re-opens.
            self.breaker.finish(self.started, self.trial, None);
        }
    }
}
