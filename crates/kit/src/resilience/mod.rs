//! The "failure is normal" toolkit as tower layers: circuit breaker (Hystrix
//! semantics), bulkhead, fallback, per-route timeout, retry with a token-bucket
//! budget, priority load shedding on an adaptive concurrency limit, and per-client
//! rate limiting through `governor`.
//!
//! # The stack and its one right order
//!
//! For a service-to-service call, [`stack::ResilientClient`] assembles, from the
//! outside in:
//!
//! ```text
//! fallback → retry (budget) → circuit breaker → timeout (per attempt) → bulkhead → callee
//! ```
//!
//! Why this order:
//! - **retry outside the breaker**: every attempt passes the breaker and the bulkhead
//!   and gets its own timeout, so a retry storm is cut off by an open breaker (a
//!   short-circuit is never retried) and by the budget;
//! - **breaker outside timeout and bulkhead**: the breaker counts timeouts and
//!   bulkhead rejections as errors, as Hystrix does; its own short-circuits are not
//!   counted;
//! - **timeout outside the bulkhead**: time spent waiting in the bulkhead's optional
//!   queue counts against the attempt's timeout, so a queue can never hold a caller
//!   longer than its budget; when the timeout fires the attempt's future is dropped,
//!   which releases the bulkhead permit and drops the in-flight HTTP exchange
//!   (the callee sees the connection go away: cancellation propagates);
//! - **fallback outermost**: it runs once, after the retries have given up, on any
//!   error (failure, timeout, rejection, short-circuit).
//!
//! There is **one retry layer per call path**: [`crate::http_client::HttpClient`]
//! never retries, the stack has exactly one [`retry::Retry`], and servers never
//! retry on behalf of their callers. Stacked retries multiply (3 layers × 3 attempts
//! = 27 calls), which is how retry storms start.
//!
//! Server side (a gateway, a service's own API), the order is
//! `rate limit (per client) → load shed (priority, deadline, adaptive limit) → handler`;
//! see [`rate_limit`], [`shed`] and [`limit`].
//!
//! # Errors
//!
//! Every layer's error is a [`BoxError`]; each layer's own refusals are typed
//! ([`breaker::ShortCircuited`], [`bulkhead::BulkheadFull`], [`timeout::Elapsed`],
//! [`shed::Overloaded`], [`shed::DeadlineExceeded`], [`rate_limit::RateLimited`],
//! [`fallback::FallbackFailed`], [`fallback::FallbackRejected`],
//! [`stack::UpstreamStatus`]) and [`FailureKind::of`] is the one place that tells
//! them apart. For HTTP calls a 5xx answer is an error ([`stack::UpstreamStatus`]),
//! a 4xx is a success: the callee is healthy, the caller is wrong.
//!
//! # What this does not do
//!
//! - No thread-pool isolation (Hystrix's default): isolation is by semaphore, as in
//!   Hystrix's semaphore mode; async tasks make threads per dependency pointless.
//! - No request collapsing and no request caching (Hystrix features outside the issue).
//! - No hedged requests.

pub mod breaker;
pub mod bulkhead;
pub mod fallback;
pub mod limit;
pub mod rate_limit;
pub mod retry;
pub mod shed;
pub mod stack;
pub mod timeout;

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;

use crate::api::ApiError;
use crate::clock::{Clock, ManualClock};

/// The error type of every layer here, as in tower.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The header carrying a request's priority.
pub const PRIORITY_HEADER: &str = "x-priority";
/// The header carrying a request's remaining time budget in milliseconds.
pub const DEADLINE_HEADER: &str = "x-deadline-ms";
/// The largest deadline budget accepted from a header (one hour): more is a mistake.
pub const MAX_DEADLINE_MS: u64 = 3_600_000;

/// How much a request matters when the service is overloaded.
///
/// Ordered: `Low < Normal < Critical`; the shedder drops the lowest first.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    Critical,
}

impl Priority {
    /// All priorities, lowest first.
    pub const ALL: [Priority; 3] = [Priority::Low, Priority::Normal, Priority::Critical];

    /// The lowercase name, as in the header.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::Critical => "critical",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = ApiError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "low" => Ok(Priority::Low),
            "normal" => Ok(Priority::Normal),
            "critical" => Ok(Priority::Critical),
            other => Err(ApiError::bad_field(
                PRIORITY_HEADER,
                format!("unknown priority {other:?}: expected critical, normal or low"),
            )),
        }
    }
}

/// The instant after which a request is worthless to its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// Time left at `now`, zero once passed.
    pub fn remaining(self, now: Instant) -> Duration {
        self.0.saturating_duration_since(now)
    }
    /// Whether the deadline has passed at `now`.
    pub fn has_passed(self, now: Instant) -> bool {
        now >= self.0
    }
}

/// Marks a request as safe to send more than once. Only marked requests are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Idempotent;

/// What the layers need to know about a request, whatever its type.
///
/// Implemented for `http::Request<B>` through its extensions (set them with
/// [`annotate_from_headers`], [`set_priority`], [`set_deadline`], [`mark_idempotent`]).
pub trait RequestMeta {
    /// The request's priority; `Normal` when unset.
    fn priority(&self) -> Priority;
    /// The request's deadline, if it has one.
    fn deadline(&self) -> Option<Deadline>;
    /// Whether the request may be retried.
    fn is_idempotent(&self) -> bool;
}

impl<B> RequestMeta for http::Request<B> {
    fn priority(&self) -> Priority {
        self.extensions()
            .get::<Priority>()
            .copied()
            .unwrap_or_default()
    }
    fn deadline(&self) -> Option<Deadline> {
        self.extensions().get::<Deadline>().copied()
    }
    fn is_idempotent(&self) -> bool {
        self.extensions().get::<Idempotent>().is_some()
    }
}

/// Sets a request's priority.
pub fn set_priority<B>(request: &mut http::Request<B>, priority: Priority) {
    request.extensions_mut().insert(priority);
}

/// Sets a request's deadline.
pub fn set_deadline<B>(request: &mut http::Request<B>, deadline: Deadline) {
    request.extensions_mut().insert(deadline);
}

/// Marks a request as idempotent, so the retry layer may resend it.
pub fn mark_idempotent<B>(request: &mut http::Request<B>) {
    request.extensions_mut().insert(Idempotent);
}

/// Reads `x-priority` (default `normal`) and `x-deadline-ms` (remaining budget,
/// measured from `clock.now()`) into the request's extensions.
///
/// A malformed header is a 400 naming the header, never a silent default.
pub fn annotate_from_headers<B>(
    request: &mut http::Request<B>,
    clock: &dyn Clock,
) -> Result<(), ApiError> {
    let (priority, deadline) = meta_from_headers(request.headers(), clock.now())?;
    request.extensions_mut().insert(priority);
    if let Some(deadline) = deadline {
        request.extensions_mut().insert(deadline);
    }
    Ok(())
}

/// Parses the priority and deadline headers; `now` anchors the relative deadline.
pub fn meta_from_headers(
    headers: &HeaderMap,
    now: Instant,
) -> Result<(Priority, Option<Deadline>), ApiError> {
    let priority = match headers.get(PRIORITY_HEADER) {
        None => Priority::default(),
        Some(value) => value
            .to_str()
            .map_err(|_| ApiError::bad_field(PRIORITY_HEADER, "priority is not ASCII"))?
            .parse()?,
    };
    let deadline = match headers.get(DEADLINE_HEADER) {
        None => None,
        Some(value) => {
            let text = value.to_str().map_err(|_| {
                ApiError::bad_field(DEADLINE_HEADER, "deadline is not ASCII digits")
            })?;
            let ms: u64 = text.trim().parse().map_err(|_| {
                ApiError::bad_field(
                    DEADLINE_HEADER,
                    format!("deadline {text:?} is not a whole number of milliseconds"),
                )
            })?;
            if ms > MAX_DEADLINE_MS {
                return Err(ApiError::bad_field(
                    DEADLINE_HEADER,
                    format!("deadline {ms} ms is over the {MAX_DEADLINE_MS} ms maximum"),
                ));
            }
            Some(Deadline(now + Duration::from_millis(ms)))
        }
    };
    Ok((priority, deadline))
}

/// What went wrong with a call, told apart once for every layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The breaker is open.
    ShortCircuited,
    /// The bulkhead (or its queue) is full.
    BulkheadFull,
    /// The attempt's timeout fired.
    Timeout,
    /// A shedder refused the request (overload).
    Overloaded,
    /// The request's deadline had passed.
    DeadlineExceeded,
    /// The client is over its rate limit.
    RateLimited,
    /// The callee answered an error status (5xx).
    Upstream,
    /// Anything else: transport errors, the callee's own errors.
    Other,
}

impl FailureKind {
    /// Classifies an error from any layer of the stack.
    pub fn of(error: &BoxError) -> FailureKind {
        let e: &(dyn std::error::Error + 'static) = error.as_ref();
        if e.is::<breaker::ShortCircuited>() {
            FailureKind::ShortCircuited
        } else if e.is::<bulkhead::BulkheadFull>() {
            FailureKind::BulkheadFull
        } else if e.is::<timeout::Elapsed>() {
            FailureKind::Timeout
        } else if e.is::<shed::Overloaded>() {
            FailureKind::Overloaded
        } else if e.is::<shed::DeadlineExceeded>() {
            FailureKind::DeadlineExceeded
        } else if e.is::<rate_limit::RateLimited>() {
            FailureKind::RateLimited
        } else if e.is::<stack::UpstreamStatus>() {
            FailureKind::Upstream
        } else if let Some(http) = e.downcast_ref::<crate::http_client::HttpError>() {
            if http.is_timeout() {
                FailureKind::Timeout
            } else {
                FailureKind::Other
            }
        } else {
            FailureKind::Other
        }
    }

    /// The wait the callee (or a local limiter) asked for, if any.
    pub fn retry_after(error: &BoxError) -> Option<Duration> {
        let e: &(dyn std::error::Error + 'static) = error.as_ref();
        if let Some(u) = e.downcast_ref::<stack::UpstreamStatus>() {
            u.retry_after
        } else if let Some(o) = e.downcast_ref::<shed::Overloaded>() {
            Some(o.retry_after)
        } else {
            e.downcast_ref::<rate_limit::RateLimited>()
                .map(|r| r.retry_after)
        }
    }

    /// The label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::ShortCircuited => "short_circuited",
            FailureKind::BulkheadFull => "bulkhead_full",
            FailureKind::Timeout => "timeout",
            FailureKind::Overloaded => "overloaded",
            FailureKind::DeadlineExceeded => "deadline_exceeded",
            FailureKind::RateLimited => "rate_limited",
            FailureKind::Upstream => "upstream",
            FailureKind::Other => "other",
        }
    }
}

/// A source of sleeps, injected so tests of backoff and timeouts never sleep.
pub trait Sleeper: Clone + Send + Sync + fmt::Debug + 'static {
    /// The future a sleep is.
    type Sleep: Future<Output = ()> + Send + 'static;
    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> Self::Sleep;
}

/// Real sleeps on the tokio timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    type Sleep = tokio::time::Sleep;
    fn sleep(&self, duration: Duration) -> Self::Sleep {
        tokio::time::sleep(duration)
    }
}

/// A sleeper for tests: each sleep completes at once, advances a [`ManualClock`]
/// by its duration and is recorded, so a test sees every backoff it asked for.
/// Under a timeout layer it makes every call that is not ready on its first poll
/// time out, which is what a timeout test wants.
#[derive(Debug, Clone, Default)]
pub struct ManualSleeper {
    clock: ManualClock,
    slept: Arc<parking_lot::Mutex<Vec<Duration>>>,
}

impl ManualSleeper {
    /// A sleeper that advances `clock`.
    pub fn new(clock: ManualClock) -> Self {
        Self {
            clock,
            slept: Arc::default(),
        }
    }
    /// Every sleep asked for so far, in order.
    pub fn slept(&self) -> Vec<Duration> {
        self.slept.lock().clone()
    }
}

impl Sleeper for ManualSleeper {
    type Sleep = std::future::Ready<()>;
    fn sleep(&self, duration: Duration) -> Self::Sleep {
        self.slept.lock().push(duration);
        self.clock.advance(duration);
        std::future::ready(())
    }
}

/// A sleeper for tests whose sleeps never complete: a timeout built on it never fires.
#[derive(Debug, Clone, Copy, Default)]
pub struct NeverSleeper;

impl Sleeper for NeverSleeper {
    type Sleep = std::future::Pending<()>;
    fn sleep(&self, _: Duration) -> Self::Sleep {
        std::future::pending()
    }
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ConfigError {
    /// The field at fault, dotted (`breaker.buckets`).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> Self {
        ApiError::bad_field(e.field, e.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_set_priority_and_deadline_and_bad_values_name_the_header() {
        let clock = ManualClock::new();
        let mut req = http::Request::builder()
            .header(PRIORITY_HEADER, "Critical")
            .header(DEADLINE_HEADER, "250")
            .body(())
            .unwrap();
        annotate_from_headers(&mut req, &clock).unwrap();
        assert_eq!(req.priority(), Priority::Critical);
        assert_eq!(
            req.deadline().unwrap().remaining(clock.now()),
            Duration::from_millis(250)
        );
        assert!(!req.is_idempotent());

        let mut plain = http::Request::new(());
        annotate_from_headers(&mut plain, &clock).unwrap();
        assert_eq!(plain.priority(), Priority::Normal);
        assert_eq!(plain.deadline(), None);

        for (name, value) in [
            (PRIORITY_HEADER, "urgent"),
            (DEADLINE_HEADER, "-5"),
            (DEADLINE_HEADER, "soon"),
            (DEADLINE_HEADER, "999999999"),
        ] {
            let mut bad = http::Request::builder()
                .header(name, value)
                .body(())
                .unwrap();
            let err = annotate_from_headers(&mut bad, &clock).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(name), "{value}");
            assert_eq!(err.status, http::StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn priorities_order_low_below_critical() {
        assert!(Priority::Low < Priority::Normal && Priority::Normal < Priority::Critical);
    }
}
