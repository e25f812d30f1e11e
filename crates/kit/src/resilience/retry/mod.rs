//! Retries with a token-bucket budget and full-jitter exponential backoff.
//!
//! **One retry layer per call path, never stacked**: the standard stack has exactly
//! one, `HttpClient` has none, and servers never retry for their callers.
//!
//! Guarantees (AWS SDK standard mode numbers, all configurable):
//! - only requests marked idempotent ([`crate::resilience::Idempotent`]) are retried;
//! - at most `max_attempts` attempts per call (default 3);
//! - a retry withdraws 5 tokens from a shared budget of 500 (10 after a timeout);
//!   an empty budget stops retrying, so with a dependency down the whole process
//!   makes at most 500 / 5 = 100 retries until successes refill it; each success
//!   refunds 1 token;
//! - backoff before retry *n* (1-based) is uniform in `[0, min(cap, base × 2^(n-1))]`
//!   (full jitter; base 100 ms, cap 20 s); a `Retry-After` from the callee (503 or a
//!   local refusal) replaces it, and a `Retry-After` beyond the cap ends the retries;
//! - short-circuits (open breaker) and rate-limit, deadline or 4xx answers are never
//!   retried; retries stop once the request's deadline cannot be met after the wait.
//!
//! Sleeps go through an injected [`Sleeper`].
//!
//! Not guaranteed: that a request marked idempotent really is (the caller knows;
//! this layer trusts the mark), nor a bound on total time across attempts other than
//! the request's deadline: give requests a deadline when that matters.
//!
//! ```
//! use std::sync::Arc;
//! use casebook_kit::resilience::retry::{RetryBudget, RetryConfig, RetryLayer};
//! use tower::{ServiceBuilder, service_fn};
//!
//! let budget = Arc::new(RetryBudget::new(RetryConfig::default()).unwrap());
//! let svc = ServiceBuilder::new()
//!     .layer(RetryLayer::new(budget))
//!     .service(service_fn(|r: http::Request<()>| async move { Ok::<_, std::io::Error>(r) }));
//! # drop(svc);
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tower::{Layer, Service, ServiceExt};

use super::{BoxError, ConfigError, FailureKind, RequestMeta, Sleeper, TokioSleeper};
use crate::clock::SharedClock;

/// The retry policy and budget numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// Tokens in a full budget.
    pub budget_tokens: u32,
    /// Tokens a retry costs.
    pub retry_cost: u32,
    /// Tokens a retry after a timeout costs.
    pub timeout_retry_cost: u32,
    /// Tokens a success gives back.
    pub success_refund: u32,
    /// First backoff ceiling.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Largest backoff ceiling.
    #[serde(with = "humantime_serde")]
    pub backoff_cap: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            budget_tokens: 500,
            retry_cost: 5,
            timeout_retry_cost: 10,
            success_refund: 1,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(20),
        }
    }
}

/// The most attempts a call may make (bounds any configuration).
pub const MAX_ATTEMPTS: u32 = 10;

impl RetryConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS {
            return Err(ConfigError::new(
                "retry.max_attempts",
                format!("must be 1..={MAX_ATTEMPTS}, got {}", self.max_attempts),
            ));
        }
        if self.retry_cost == 0 || self.timeout_retry_cost == 0 {
            return Err(ConfigError::new(
                "retry.retry_cost",
                "retry costs must be at least 1, or the budget bounds nothing",
            ));
        }
        if self.backoff_base.is_zero() || self.backoff_base > self.backoff_cap {
            return Err(ConfigError::new(
                "retry.backoff_base",
                format!(
                    "must be positive and at most backoff_cap ({:?}), got {:?}",
                    self.backoff_cap, self.backoff_base
                ),
            ));
        }
        Ok(())
    }

    /// The backoff ceiling before retry number `retry` (1-based).
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_cap)
    }
}

/// A token bucket that bounds retries across every call sharing it.
#[derive(Debug)]
pub struct RetryBudget {
    tokens: AtomicU32,
    config: RetryConfig,
    retries: metrics::Counter,
    exhausted: metrics::Counter,
}

impl RetryBudget {
    /// A full budget.
    pub fn new(config: RetryConfig) -> Result<Self, ConfigError> {
        Self::named("default", config)
    }

    /// A full budget labelled `name` in metrics.
    pub fn named(name: &str, config: RetryConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            tokens: AtomicU32::new(config.budget_tokens),
            config,
            retries: metrics::counter!("casebook_retries_total", "dependency" => name.to_owned()),
            exhausted: metrics::counter!("casebook_retry_budget_exhausted_total", "dependency" => name.to_owned()),
        })
    }

    /// Tokens left.
    pub fn tokens(&self) -> u32 {
        self.tokens.load(Ordering::Acquire)
    }

    /// The numbers.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// Takes the cost of one retry, or refuses if the budget cannot pay it.
    pub fn try_withdraw(&self, after_timeout: bool) -> bool {
        let cost = if after_timeout {
            self.config.timeout_retry_cost
        } else {
            self.config.retry_cost
        };
        let paid = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_sub(cost))
            .is_ok();
        if paid {
            self.retries.increment(1);
        } else {
            self.exhausted.increment(1);
        }
        paid
    }

    /// A success refunds a little.
    pub fn deposit_success(&self) {
        let cap = self.config.budget_tokens;
        let refund = self.config.success_refund;
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t < cap).then(|| t.saturating_add(refund).min(cap))
            });
    }
}

/// Adds budgeted retries to a service.
#[derive(Debug, Clone)]
pub struct RetryLayer<Sl = TokioSleeper> {
    budget: Arc<RetryBudget>,
    sleeper: Sl,
    clock: Option<SharedClock>,
}

impl RetryLayer {
    pub fn new(budget: Arc<RetryBudget>) -> Self {
        Self {
            budget,
            sleeper: TokioSleeper,
            clock: None,
        }
    }
}

impl<Sl> RetryLayer<Sl> {
    /// Sleeps on `sleeper` instead.
    pub fn with_sleeper<S2>(self, sleeper: S2) -> RetryLayer<S2> {
        RetryLayer {
            budget: self.budget,
            sleeper,
            clock: self.clock,
        }
    }
    /// Reads request deadlines against `clock`, so no retry is made that would
    /// start after the deadline.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }
}

impl<S, Sl: Clone> Layer<S> for RetryLayer<Sl> {
    type Service = Retry<S, Sl>;
    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            budget: self.budget.clone(),
            sleeper: self.sleeper.clone(),
            clock: self.clock.clone(),
        }
    }
}

/// A service whose idempotent calls are retried within a budget.
#[derive(Debug, Clone)]
pub struct Retry<S, Sl = TokioSleeper> {
    inner: S,
    budget: Arc<RetryBudget>,
    sleeper: Sl,
    clock: Option<SharedClock>,
}

/// The future of a call with retries.
pub type ResponseFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

impl<S, Sl, Req> Service<Req> for Retry<S, Sl>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError> + Send,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    Sl: Sleeper,
    Req: RequestMeta + Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        // The readied service makes the first attempt; only a call that may be
        // retried pays for a clone of the service and of the request.
        if !request.is_idempotent() || self.budget.config().max_attempts == 1 {
            let only = self.inner.call(request);
            let budget = self.budget.clone();
            return Box::pin(async move {
                let result = only.await.map_err(Into::into);
                if result.is_ok() {
                    // Every success refills the budget, retryable or not.
                    budget.deposit_success();
                }
                result
            });
        }
        let first = self.inner.call(request.clone());
        let retries = self.inner.clone();
        let budget = self.budget.clone();
        let sleeper = self.sleeper.clone();
        let clock = self.clock.clone();
        Box::pin(run(first, retries, request, budget, sleeper, clock))
    }
}

async fn run<S, Sl, Req>(
    first: S::Future,
    mut retries: S,
    request: Req,
    budget: Arc<RetryBudget>,
    sleeper: Sl,
    clock: Option<SharedClock>,
) -> Result<S::Response, BoxError>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    Sl: Sleeper,
    Req: RequestMeta + Clone,
{
    let config = *budget.config();
    let mut result = first.await.map_err(Into::into);
    let mut attempt = 1;
    loop {
        let error = match result {
            Ok(response) => {
                budget.deposit_success();
                return Ok(response);
            }
            Err(error) => error,
        };
        let kind = FailureKind::of(&error);
        let retryable = matches!(
            kind,
            FailureKind::Timeout
                | FailureKind::BulkheadFull
                | FailureKind::Overloaded
                | FailureKind::Upstream
                | FailureKind::Other
        );
        if !retryable || attempt >= config.max_attempts {
            return Err(error);
        }
        let wait = match FailureKind::retry_after(&error) {
            Some(asked) if asked > config.backoff_cap => return Err(error),
            Some(asked) => asked,
            None => jitter(config.backoff_ceiling(attempt)),
        };
        if let (Some(clock), Some(deadline)) = (&clock, request.deadline())
            && deadline.remaining(clock.now()) <= wait
        {
            return Err(error);
        }
        if !budget.try_withdraw(kind == FailureKind::Timeout) {
            return Err(error);
        }
        sleeper.sleep(wait).await;
        attempt += 1;
        debug_assert!(attempt <= config.max_attempts);
        result = match retries.ready().await {
            Ok(svc) => svc.call(request.clone()).await.map_err(Into::into),
            Err(e) => Err(e.into()),
        };
    }
}

fn jitter(ceiling: Duration) -> Duration {
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::random_range(0..=nanos))
}

#[cfg(test)]
mod tests;
