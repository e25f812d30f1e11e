//! A circuit breaker per dependency, with Hystrix's semantics.
//!
//! Guarantees:
//! - a rolling window (default 10 s in 10 buckets) counts successes, failures,
//!   timeouts, bulkhead rejections and short-circuits; short-circuits are not part
//!   of the total;
//! - the health snapshot the trip decision uses is retaken at most every
//!   `snapshot_interval` (500 ms): a trip can lag that long, as in Hystrix;
//! - the breaker trips when the snapshot has `total >= request_volume_threshold`
//!   **and** `floor(errors * 100 / total) >= error_threshold_percent`, with
//!   `errors = failures + timeouts + rejections`;
//! - once open, the first call after `sleep_window` moves it to half-open under the
//!   breaker's lock and is the **only** trial; every other call meanwhile is
//!   short-circuited; the trial's success closes the breaker and clears the window;
//!   its failure, timeout, rejection or cancellation (its future dropped) re-opens it
//!   with a new open time;
//! - all timing is on the injected [`SharedClock`](crate::clock::SharedClock).
//!
//! Not guaranteed: calls that started before a trip and finish after it are counted
//! in the window but never change the state; only the trial does.
//!
//! Metrics (`casebook_breaker_state`, `_error_percent`, `_calls_total{outcome}`,
//! `_latency_seconds`, labelled by `dependency`) are bound when the breaker is
//! created: install the recorder (`telemetry::metrics()`) before creating breakers.
//!
//! ```
//! use casebook_kit::clock::SystemClock;
//! use casebook_kit::resilience::breaker::{BreakerConfig, CircuitBreaker, CircuitBreakerLayer};
//! use tower::{ServiceBuilder, service_fn};
//!
//! let breaker = CircuitBreaker::new("users", BreakerConfig::default(), SystemClock::shared()).unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::new(breaker.clone()))
//!     .service(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }));
//! # drop(svc);
//! assert_eq!(breaker.stats().state, casebook_kit::resilience::breaker::BreakerState::Closed);
//! ```

mod core;
mod layer;
mod registry;

pub use self::core::{
    BreakerConfig, BreakerState, BreakerStats, CallOutcome, CircuitBreaker, Permit, ShortCircuited,
};
pub use self::layer::{CircuitBreakerLayer, CircuitBreakerService, ResponseFuture};
pub use self::registry::{BreakerRegistry, breakers_router};

#[cfg(test)]
mod tests;
