//! An adaptive concurrency limit in the manner of Netflix's concurrency-limits
//! (AIMD, driven by observed latency), usable on its own as a layer and as the
//! overload signal of [`crate::resilience::shed`].
//!
//! The rule, per completed call (a *sample*):
//! - the call was dropped (timed out, refused downstream) or took longer than
//!   `latency_threshold` → multiply the limit by `backoff_ratio`, at most once per
//!   `decrease_interval` (so one burst of slow calls is one decrease, not hundreds);
//! - otherwise, if at least half the limit was in use when the call started, add 1
//!   (a limit that is not being used is not raised);
//! - the limit stays in `min_limit..=max_limit`.
//!
//! Guarantees: `in_flight` never exceeds the limit in force when each call was
//! admitted; all timing on the injected clock. Not guaranteed: fairness between
//! callers, and convergence speed (that is a matter of the numbers).
//!
//! ```
//! use casebook_kit::clock::SystemClock;
//! use casebook_kit::resilience::limit::{AdaptiveLimiter, AimdConfig, ConcurrencyLimitLayer};
//! use tower::{ServiceBuilder, service_fn};
//!
//! let limiter = AdaptiveLimiter::new("search", AimdConfig::default(), SystemClock::shared()).unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(ConcurrencyLimitLayer::new(limiter.clone()))
//!     .service(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }));
//! # drop(svc);
//! assert_eq!(limiter.limit(), 20);
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use tower::{Layer, Service};

use super::{BoxError, ConfigError, FailureKind};
use crate::clock::SharedClock;

/// The AIMD limit's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AimdConfig {
    pub initial_limit: usize,
    pub min_limit: usize,
    pub max_limit: usize,
    /// Factor applied on a decrease, in (0, 1).
    pub backoff_ratio: f64,
    /// A call slower than this counts as a sign of overload.
    #[serde(with = "humantime_serde")]
    pub latency_threshold: Duration,
    /// Least time between two decreases.
    #[serde(with = "humantime_serde")]
    pub decrease_interval: Duration,
}

impl Default for AimdConfig {
    fn default() -> Self {
        Self {
            initial_limit: 20,
            min_limit: 1,
            max_limit: 1000,
            backoff_ratio: 0.9,
            latency_threshold: Duration::from_millis(100),
            decrease_interval: Duration::from_millis(100),
        }
    }
}

impl AimdConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.min_limit == 0 || self.min_limit > self.max_limit {
            return Err(ConfigError::new(
                "limit.min_limit",
                format!(
                    "must be 1..=max_limit ({}), got {}",
                    self.max_limit, self.min_limit
                ),
            ));
        }
        if !(self.min_limit..=self.max_limit).contains(&self.initial_limit) {
            return Err(ConfigError::new(
                "limit.initial_limit",
                format!(
                    "must be within {}..={}, got {}",
                    self.min_limit, self.max_limit, self.initial_limit
                ),
            ));
        }
        if !(self.backoff_ratio > 0.0 && self.backoff_ratio < 1.0) {
            return Err(ConfigError::new(
                "limit.backoff_ratio",
                format!("must be inside (0, 1), got {}", self.backoff_ratio),
            ));
        }
        if self.latency_threshold.is_zero() {
            return Err(ConfigError::new(
                "limit.latency_threshold",
                "must be positive",
            ));
        }
        Ok(())
    }
}

struct LimitState {
    limit: f64,
    last_decrease: Option<Instant>,
}

struct Inner {
    name: Arc<str>,
    config: AimdConfig,
    clock: SharedClock,
    in_flight: AtomicUsize,
    /// The limit rounded down, readable without the lock.
    current: AtomicUsize,
    state: Mutex<LimitState>,
    gauge: metrics::Gauge,
}

/// An adaptive concurrency limit. Cloning shares it.
#[derive(Clone)]
pub struct AdaptiveLimiter {
    inner: Arc<Inner>,
}

impl fmt::Debug for AdaptiveLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimiter")
            .field("name", &self.inner.name)
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl AdaptiveLimiter {
    pub fn new(
        name: impl Into<String>,
        config: AimdConfig,
        clock: SharedClock,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let name: String = name.into();
        let gauge = metrics::gauge!("casebook_concurrency_limit", "name" => name.clone());
        gauge.set(config.initial_limit as f64);
        Ok(Self {
            inner: Arc::new(Inner {
                name: name.into(),
                current: AtomicUsize::new(config.initial_limit),
                state: Mutex::new(LimitState {
                    limit: config.initial_limit as f64,
                    last_decrease: None,
                }),
                config,
                clock,
                in_flight: AtomicUsize::new(0),
                gauge,
            }),
        })
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.inner.current.load(Ordering::Acquire)
    }

    /// Calls admitted and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// The configuration.
    pub fn config(&self) -> &AimdConfig {
        &self.inner.config
    }

    /// Admits a call if fewer than the limit are in flight.
    pub fn try_acquire(&self) -> Option<LimitPermit> {
        self.try_acquire_below(self.limit())
    }

    /// Admits a call if fewer than `cap` are in flight (the shedder passes a cap
    /// per priority). The call counts toward `in_flight` until its permit ends.
    pub fn try_acquire_below(&self, cap: usize) -> Option<LimitPermit> {
        let in_flight_before = self
            .inner
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()?;
        Some(LimitPermit {
            limiter: self.clone(),
            started: self.inner.clock.now(),
            in_flight_at_start: in_flight_before + 1,
            finished: false,
        })
    }

    fn sample(&self, permit: &LimitPermit, dropped: bool) {
        let inner = &self.inner;
        let cfg = &inner.config;
        let now = inner.clock.now();
        let rtt = now.saturating_duration_since(permit.started);
        let mut st = inner.state.lock();
        if dropped || rtt > cfg.latency_threshold {
            let due = st
                .last_decrease
                .is_none_or(|t| now.saturating_duration_since(t) >= cfg.decrease_interval);
            if due {
                st.limit = (st.limit * cfg.backoff_ratio).max(cfg.min_limit as f64);
                st.last_decrease = Some(now);
            }
        } else if (permit.in_flight_at_start * 2) as f64 >= st.limit {
            st.limit = (st.limit + 1.0).min(cfg.max_limit as f64);
        }
        let rounded = st.limit as usize;
        debug_assert!((cfg.min_limit..=cfg.max_limit).contains(&rounded));
        inner.current.store(rounded, Ordering::Release);
        drop(st);
        inner.gauge.set(rounded as f64);
    }
}

/// One admitted call. Report how it went with [`LimitPermit::success`] or
/// [`LimitPermit::dropped`]; dropping the permit without either ignores the sample
/// (the call failed for a reason that says nothing about load).
#[derive(Debug)]
pub struct LimitPermit {
    limiter: AdaptiveLimiter,
    started: Instant,
    in_flight_at_start: usize,
    finished: bool,
}

impl LimitPermit {
    /// The call completed: its latency is a sample.
    pub fn success(mut self) {
        self.limiter.sample(&self, false);
        self.finished = true;
    }
    /// The call was dropped or timed out: a sign of overload.
    pub fn dropped(mut self) {
        self.limiter.sample(&self, true);
        self.finished = true;
    }
    /// Reports a call's result: `Ok` is a success, a timeout or overload a drop,
    /// any other error no sample.
    pub fn record<T>(self, result: &Result<T, BoxError>) {
        match result {
            Ok(_) => self.success(),
            Err(e) => match FailureKind::of(e) {
                FailureKind::Timeout | FailureKind::Overloaded | FailureKind::BulkheadFull => {
                    self.dropped()
                }
                _ => drop(self),
            },
        }
    }
}

impl Drop for LimitPermit {
    fn drop(&mut self) {
        let before = self.limiter.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "in-flight count underflow");
    }
}

/// The limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("concurrency limit {limit} reached")]
pub struct LimitExceeded {
    pub limit: usize,
}

/// Refuses calls beyond the adaptive limit.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimitLayer {
    limiter: AdaptiveLimiter,
}

impl ConcurrencyLimitLayer {
    pub fn new(limiter: AdaptiveLimiter) -> Self {
        Self { limiter }
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

/// A service behind an adaptive concurrency limit.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    limiter: AdaptiveLimiter,
}

impl<S, Req> Service<Req> for ConcurrencyLimit<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match self.limiter.try_acquire() {
            Some(permit) => ResponseFuture::admitted(self.inner.call(request), permit),
            None => ResponseFuture::refused(
                LimitExceeded {
                    limit: self.limiter.limit(),
                }
                .into(),
            ),
        }
    }
}

pin_project! {
    /// A call holding a limit permit; the outcome is sampled when it ends.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        permit: Option<LimitPermit>,
        refused: Option<BoxError>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn admitted(inner: F, permit: LimitPermit) -> Self {
        Self {
            inner: Some(inner),
            permit: Some(permit),
            refused: None,
        }
    }
    pub(crate) fn unlimited(inner: F) -> Self {
        Self {
            inner: Some(inner),
            permit: None,
            refused: None,
        }
    }
    pub(crate) fn refused(error: BoxError) -> Self {
        Self {
            inner: None,
            permit: None,
            refused: Some(error),
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Err(this.refused.take().expect("polled after completion")));
        };
        let result = std::task::ready!(inner.poll(cx)).map_err(Into::into);
        if let Some(permit) = this.permit.take() {
            permit.record(&result);
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn limiter(clock: &ManualClock) -> AdaptiveLimiter {
        AdaptiveLimiter::new("t", AimdConfig::default(), clock.shared()).unwrap()
    }

    #[test]
    fn fast_busy_calls_raise_the_limit_and_idle_ones_do_not() {
        let clock = ManualClock::new();
        let l = limiter(&clock);
        // One call at a time: under half the limit in use, no increase.
        for _ in 0..10 {
            l.try_acquire().unwrap().success();
        }
        assert_eq!(l.limit(), 20);
        // Twenty at once: the last ten started with at least half the limit in
        // use, so each of their fast completions adds one; the first ten did not.
        let mut permits: Vec<_> = (0..20).map(|_| l.try_acquire().unwrap()).collect();
        clock.advance(Duration::from_millis(5));
        for p in permits.split_off(10) {
            p.success();
        }
        assert_eq!(l.limit(), 30);
        for p in permits {
            p.success();
        }
        assert_eq!(l.limit(), 30);
    }

    #[test]
    fn slow_or_dropped_calls_cut_the_limit_once_per_interval() {
        let clock = ManualClock::new();
        let l = limiter(&clock);
        let permits: Vec<_> = (0..5).map(|_| l.try_acquire().unwrap()).collect();
        clock.advance(Duration::from_millis(101));
        for p in permits {
            p.success();
        }
        assert_eq!(l.limit(), 18, "20 × 0.9, once for the whole burst");
        clock.advance(Duration::from_millis(100));
        l.try_acquire().unwrap().dropped();
        assert_eq!(l.limit(), 16, "18 × 0.9 = 16.2");
        for _ in 0..100 {
            clock.advance(Duration::from_millis(100));
            l.try_acquire().unwrap().dropped();
        }
        assert_eq!(l.limit(), 1, "never below min_limit");
    }

    #[test]
    fn admission_stops_at_the_limit_and_permits_give_slots_back() {
        let clock = ManualClock::new();
        let l = limiter(&clock);
        let held: Vec<_> = (0..20).map(|_| l.try_acquire().unwrap()).collect();
        assert!(l.try_acquire().is_none());
        assert_eq!(l.in_flight(), 20);
        drop(held);
        assert_eq!(l.in_flight(), 0);
        assert!(l.try_acquire_below(0).is_none());
    }

    #[test]
    fn bad_numbers_are_refused() {
        let clock = ManualClock::new();
        for (cfg, field) in [
            (
                AimdConfig {
                    min_limit: 0,
                    ..Default::default()
                },
                "limit.min_limit",
            ),
            (
                AimdConfig {
                    initial_limit: 5000,
                    ..Default::default()
                },
                "limit.initial_limit",
            ),
            (
                AimdConfig {
                    backoff_ratio: 1.0,
                    ..Default::default()
                },
                "limit.backoff_ratio",
            ),
        ] {
            assert_eq!(
                AdaptiveLimiter::new("x", cfg, clock.shared())
                    .unwrap_err()
                    .field,
                field
            );
        }
    }
}
