//! Priority load shedding, judged from an adaptive concurrency limit.
//!
//! Each request carries a [`Priority`] and optionally a [`Deadline`](super::Deadline) (see
//! [`crate::resilience::annotate_from_headers`]). With `L` the current adaptive
//! limit ([`crate::resilience::limit`]) and `n` the calls in flight, a request is
//! admitted when:
//!
//! | priority | admitted while |
//! |---|---|
//! | `low` | `n < floor(L × low_share)` (default 0.8) |
//! | `normal` | `n < L` |
//! | `critical` | `n < hard_limit` (≥ the limiter's `max_limit`) |
//!
//! so under overload `low` goes first, then `normal`, and `critical` only at the hard
//! limit. A request whose deadline has already passed is refused with
//! [`DeadlineExceeded`] **without executing**. Refusals carry a `Retry-After` and
//! are not recorded in the latency histogram (`casebook_shed_latency_seconds`
//! holds admitted calls only). [`overload_response`] turns them into HTTP
//! answers: 503 + `Retry-After` for overload, 504 for a passed deadline, 429 +
//! `Retry-After` for a rate limit.
//!
//! Not done: queueing by priority (admission is a gate, there is no queue to
//! reorder), and CPU-based signals (deliberately: queueing delay is what callers feel).
//!
//! On an axum router, outermost first: refusals become HTTP answers, headers
//! become priority and deadline, then the shedder:
//!
//! ```
//! use axum::{Router, error_handling::HandleErrorLayer, routing::get};
//! use casebook_kit::clock::SystemClock;
//! use casebook_kit::resilience::shed::{LoadShedLayer, RequestMetaLayer, ShedConfig, handle_error};
//! use tower::ServiceBuilder;
//!
//! let clock = SystemClock::shared();
//! let app: Router = Router::new().route("/", get(|| async { "ok" })).layer(
//!     ServiceBuilder::new()
//!         .layer(HandleErrorLayer::new(handle_error))
//!         .layer(RequestMetaLayer::new(clock.clone()))
//!         .layer(LoadShedLayer::new("api", ShedConfig::default(), clock).unwrap()),
//! );
//! # drop(app);
//! ```

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use tower::{Layer, Service};

use super::limit::{AdaptiveLimiter, AimdConfig, ResponseFuture as LimitFuture};
use super::{BoxError, ConfigError, FailureKind, Priority};
use crate::api::ApiError;
use crate::clock::SharedClock;

/// The shedder's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShedConfig {
    /// The adaptive limit that judges overload.
    pub limit: AimdConfig,
    /// Share of the limit `low` requests may use, in (0, 1].
    pub low_share: f64,
    /// In-flight calls at which even `critical` requests are refused.
    pub hard_limit: usize,
    /// What refusals tell callers to wait.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
}

impl Default for ShedConfig {
    fn default() -> Self {
        Self {
            limit: AimdConfig::default(),
            low_share: 0.8,
            hard_limit: 2000,
            retry_after: Duration::from_secs(1),
        }
    }
}

impl ShedConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.limit.validate()?;
        if !(self.low_share > 0.0 && self.low_share <= 1.0) {
            return Err(ConfigError::new(
                "shed.low_share",
                format!("must be inside (0, 1], got {}", self.low_share),
            ));
        }
        if self.hard_limit < self.limit.max_limit {
            return Err(ConfigError::new(
                "shed.hard_limit",
                format!(
                    "must be at least limit.max_limit ({}) so critical is shed last, got {}",
                    self.limit.max_limit, self.hard_limit
                ),
            ));
        }
        Ok(())
    }
}

/// The service is overloaded for this request's priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("overloaded: {priority} request shed ({in_flight} in flight, limit {limit})")]
pub struct Overloaded {
    pub priority: Priority,
    pub in_flight: usize,
    pub limit: usize,
    pub retry_after: Duration,
}

/// The request's deadline had passed; it was not executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline passed {late_by:?} before the request could start")]
pub struct DeadlineExceeded {
    pub late_by: Duration,
}

/// The admission gate, shareable between call paths of one service.
#[derive(Debug, Clone)]
pub struct LoadShedder {
    limiter: AdaptiveLimiter,
    config: Arc<ShedConfig>,
    clock: SharedClock,
    shed: Arc<[metrics::Counter; 3]>,
    expired: metrics::Counter,
    latency: metrics::Histogram,
}

/// Whether a request may run.
#[derive(Debug)]
pub enum Admission {
    Admitted(super::limit::LimitPermit),
    Refused(BoxError),
}

impl LoadShedder {
    pub fn new(name: &str, config: ShedConfig, clock: SharedClock) -> Result<Self, ConfigError> {
        config.validate()?;
        let limiter = AdaptiveLimiter::new(name, config.limit.clone(), clock.clone())?;
        let shed = Priority::ALL.map(|p| {
            metrics::counter!("casebook_shed_total", "name" => name.to_owned(), "priority" => p.as_str())
        });
        Ok(Self {
            limiter,
            config: Arc::new(config),
            clock,
            shed: Arc::new(shed),
            expired: metrics::counter!("casebook_deadline_expired_total", "name" => name.to_owned()),
            latency: metrics::histogram!("casebook_shed_latency_seconds", "name" => name.to_owned()),
        })
    }

    /// The limiter judging overload.
    pub fn limiter(&self) -> &AdaptiveLimiter {
        &self.limiter
    }

    /// The in-flight cap for a priority, given the current limit.
    pub fn cap(&self, priority: Priority) -> usize {
        let limit = self.limiter.limit();
        match priority {
            Priority::Low => ((limit as f64 * self.config.low_share) as usize).max(1),
            Priority::Normal => limit,
            Priority::Critical => self.config.hard_limit,
        }
    }

    /// Decides on one request.
    pub fn admit(&self, priority: Priority, deadline: Option<super::Deadline>) -> Admission {
        if let Some(deadline) = deadline {
            let now = self.clock.now();
            if deadline.has_passed(now) {
                self.expired.increment(1);
                return Admission::Refused(
                    DeadlineExceeded {
                        late_by: now.saturating_duration_since(deadline.0),
                    }
                    .into(),
                );
            }
        }
        let cap = self.cap(priority);
        debug_assert!(self.cap(Priority::Low) <= self.cap(Priority::Normal));
        debug_assert!(self.cap(Priority::Normal) <= self.cap(Priority::Critical));
        match self.limiter.try_acquire_below(cap) {
            Some(permit) => Admission::Admitted(permit),
            None => {
                self.shed[priority as usize].increment(1);
                Admission::Refused(
                    Overloaded {
                        priority,
                        in_flight: self.limiter.in_flight(),
                        limit: self.limiter.limit(),
                        retry_after: self.config.retry_after,
                    }
                    .into(),
                )
            }
        }
    }
}

/// Sheds requests by priority and deadline.
#[derive(Debug, Clone)]
pub struct LoadShedLayer {
    shedder: LoadShedder,
}

impl LoadShedLayer {
    /// A layer with a new shedder named `name` (the metrics label).
    pub fn new(name: &str, config: ShedConfig, clock: SharedClock) -> Result<Self, ConfigError> {
        Ok(Self::shared(LoadShedder::new(name, config, clock)?))
    }
    /// A layer over an existing shedder.
    pub fn shared(shedder: LoadShedder) -> Self {
        Self { shedder }
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            shedder: self.shedder.clone(),
        }
    }
}

/// A service behind a priority load shedder.
#[derive(Debug, Clone)]
pub struct LoadShed<S> {
    inner: S,
    shedder: LoadShedder,
}

impl<S> LoadShed<S> {
    pub fn shedder(&self) -> &LoadShedder {
        &self.shedder
    }
}

impl<S, Req> Service<Req> for LoadShed<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    Req: super::RequestMeta,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match self.shedder.admit(request.priority(), request.deadline()) {
            Admission::Admitted(permit) => ResponseFuture {
                inner: LimitFuture::admitted(self.inner.call(request), permit),
                started: Some((self.shedder.clock.now(), self.shedder.clone())),
            },
            Admission::Refused(error) => ResponseFuture {
                inner: LimitFuture::refused(error),
                started: None,
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// An admitted call (its latency recorded when it ends) or a refusal.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: LimitFuture<F>,
        started: Option<(std::time::Instant, LoadShedder)>,
    }
}

impl<F, T, E> std::future::Future for ResponseFuture<F>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        if let Some((started, shedder)) = this.started.take() {
            let elapsed = shedder.clock.now().saturating_duration_since(started);
            shedder.latency.record(elapsed.as_secs_f64());
        }
        Poll::Ready(out)
    }
}

/// The HTTP answer for a resilience refusal, or `None` for other errors:
/// overload → 503 + `Retry-After`, rate limit → 429 + `Retry-After`, passed
/// deadline → 504, open breaker or full bulkhead → 503 + `Retry-After: 1`.
pub fn overload_response(error: &BoxError) -> Option<Response> {
    let (status, retry_after) = match FailureKind::of(error) {
        FailureKind::Overloaded => (
            StatusCode::SERVICE_UNAVAILABLE,
            FailureKind::retry_after(error),
        ),
        FailureKind::RateLimited => (
            StatusCode::TOO_MANY_REQUESTS,
            FailureKind::retry_after(error),
        ),
        FailureKind::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, None),
        FailureKind::ShortCircuited | FailureKind::BulkheadFull => (
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(1)),
        ),
        _ => return None,
    };
    let mut response = ApiError::new(status, error.to_string()).into_response();
    if let Some(wait) = retry_after {
        // Whole seconds, rounded up: Retry-After has no fractions.
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    Some(response)
}

/// Any error of a service behind these layers as an HTTP answer (for axum's
/// `HandleErrorLayer`): refusals as [`overload_response`] says, anything else 500.
pub async fn handle_error(error: BoxError) -> Response {
    if let Some(api) = error.downcast_ref::<ApiError>() {
        return api.clone().into_response();
    }
    overload_response(&error)
        .unwrap_or_else(|| ApiError::internal(error.to_string()).into_response())
}

/// Reads `x-priority` and `x-deadline-ms` into each HTTP request's extensions
/// (see [`crate::resilience::annotate_from_headers`]) so the shedder can act on
/// them; a malformed header fails the call with the [`ApiError`] (a 400 naming
/// the header) that [`handle_error`] answers. Put it outside the shedder.
#[derive(Debug, Clone)]
pub struct RequestMetaLayer {
    clock: SharedClock,
}

impl RequestMetaLayer {
    pub fn new(clock: SharedClock) -> Self {
        Self { clock }
    }
}

impl<S> Layer<S> for RequestMetaLayer {
    type Service = WithRequestMeta<S>;
    fn layer(&self, inner: S) -> Self::Service {
        WithRequestMeta {
            inner,
            clock: self.clock.clone(),
        }
    }
}

/// A service whose HTTP requests get their priority and deadline from headers.
#[derive(Debug, Clone)]
pub struct WithRequestMeta<S> {
    inner: S,
    clock: SharedClock,
}

impl<S, B> Service<http::Request<B>> for WithRequestMeta<S>
where
    S: Service<http::Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = LimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match super::annotate_from_headers(&mut request, self.clock.as_ref()) {
            Ok(()) => LimitFuture::unlimited(self.inner.call(request)),
            Err(e) => LimitFuture::refused(e.into()),
        }
    }
}

#[cfg(test)]
mod tests;
