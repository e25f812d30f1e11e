//! Timeouts per route, with cancellation propagated to the callee.
//!
//! Guarantees: a call that has not finished `timeout_for(request)` after it was
//! made ends with [`Elapsed`], and its inner future is **dropped** at that moment:
//! whatever the callee was doing for it (a bulkhead slot, an HTTP exchange on a
//! pooled connection) is released, and an HTTP callee sees its connection close.
//! Sleeps go through an injected [`Sleeper`], so tests never wait.
//!
//! With a clock ([`TimeoutLayer::with_clock`], as the standard stack does), each
//! attempt's request also carries its deadline (the tighter of its own and the
//! attempt's), which the HTTP adapter sends as `x-deadline-ms`, so a callee behind a
//! shedder drops work nobody waits for any more.
//!
//! Not guaranteed: that the callee stops work it has already started.
//!
//! ```
//! use std::time::Duration;
//! use casebook_kit::resilience::timeout::{RouteTimeouts, TimeoutLayer};
//! use tower::{ServiceBuilder, service_fn};
//!
//! let routes = RouteTimeouts::new(Duration::from_secs(1))
//!     .route("/api/search", Duration::from_millis(300))
//!     .unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(routes))
//!     .service(service_fn(|r: http::Request<()>| async move { Ok::<_, std::io::Error>(r.uri().path().len()) }));
//! # drop(svc);
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{BoxError, ConfigError, Deadline, RequestMeta, Sleeper, TokioSleeper, set_deadline};
use crate::clock::SharedClock;

/// The call did not finish in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {after:?}")]
pub struct Elapsed {
    pub after: Duration,
}

/// Chooses a request's timeout.
pub trait TimeoutPolicy<Req>: Clone {
    fn timeout_for(&self, request: &Req) -> Duration;

    /// Gives the request its attempt's deadline so it can travel to the callee
    /// (the HTTP adapter sends it as `x-deadline-ms`). Default: nothing.
    fn propagate(&self, _request: &mut Req, _deadline: Deadline) {}
}

/// The same timeout for every request.
impl<Req> TimeoutPolicy<Req> for Duration {
    fn timeout_for(&self, _: &Req) -> Duration {
        *self
    }
}

/// Timeouts by path prefix (longest prefix wins), with a default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTimeouts {
    default: Duration,
    /// Sorted longest prefix first; shared, as every call clones the policy.
    routes: Arc<Vec<(String, Duration)>>,
}

impl RouteTimeouts {
    pub fn new(default: Duration) -> Self {
        Self {
            default,
            routes: Arc::default(),
        }
    }

    /// Adds a timeout for paths starting with `prefix`.
    pub fn route(mut self, prefix: &str, timeout: Duration) -> Result<Self, ConfigError> {
        if !prefix.starts_with('/') {
            return Err(ConfigError::new(
                "timeout.routes",
                format!("route prefix {prefix:?} must start with '/'"),
            ));
        }
        if timeout.is_zero() {
            return Err(ConfigError::new(
                "timeout.routes",
                format!("timeout for {prefix:?} must be positive"),
            ));
        }
        let routes = Arc::make_mut(&mut self.routes);
        routes.retain(|(p, _)| p != prefix);
        routes.push((prefix.to_owned(), timeout));
        routes.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
        Ok(self)
    }

    /// The timeout for `path`.
    pub fn for_path(&self, path: &str) -> Duration {
        self.routes
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map_or(self.default, |(_, t)| *t)
    }
}

impl<B> TimeoutPolicy<http::Request<B>> for RouteTimeouts {
    fn timeout_for(&self, request: &http::Request<B>) -> Duration {
        self.for_path(request.uri().path())
    }

    /// Tightens the request's deadline to the attempt's, never loosens it.
    fn propagate(&self, request: &mut http::Request<B>, deadline: Deadline) {
        let tighter = request.deadline().map_or(deadline, |d| d.min(deadline));
        set_deadline(request, tighter);
    }
}

/// Applies a [`TimeoutPolicy`] to every call.
#[derive(Debug, Clone)]
pub struct TimeoutLayer<P, Sl = TokioSleeper> {
    policy: P,
    sleeper: Sl,
    clock: Option<SharedClock>,
}

impl<P> TimeoutLayer<P> {
    pub fn new(policy: P) -> Self {
        Self {
            policy,
            sleeper: TokioSleeper,
            clock: None,
        }
    }
}

impl<P, Sl> TimeoutLayer<P, Sl> {
    /// The same layer sleeping on `sleeper`.
    pub fn with_sleeper<S2>(self, sleeper: S2) -> TimeoutLayer<P, S2> {
        TimeoutLayer {
            policy: self.policy,
            sleeper,
            clock: self.clock,
        }
    }

    /// Stamps each request with its attempt's deadline, read on `clock`
    /// (see [`TimeoutPolicy::propagate`]).
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }
}

impl<S, P: Clone, Sl: Clone> Layer<S> for TimeoutLayer<P, Sl> {
    type Service = Timeout<S, P, Sl>;
    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner,
            policy: self.policy.clone(),
            sleeper: self.sleeper.clone(),
            clock: self.clock.clone(),
        }
    }
}

/// A service whose calls time out.
#[derive(Debug, Clone)]
pub struct Timeout<S, P, Sl = TokioSleeper> {
    inner: S,
    policy: P,
    sleeper: Sl,
    clock: Option<SharedClock>,
}

impl<S, P, Sl, Req> Service<Req> for Timeout<S, P, Sl>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    P: TimeoutPolicy<Req>,
    Sl: Sleeper,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, Sl::Sleep>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Req) -> Self::Future {
        let after = self.policy.timeout_for(&request);
        if let Some(clock) = &self.clock {
            self.policy
                .propagate(&mut request, Deadline(clock.now() + after));
        }
        ResponseFuture {
            sleep: self.sleeper.sleep(after),
            inner: self.inner.call(request),
            after,
        }
    }
}

pin_project! {
    /// A call racing its timeout; the call is polled first, so a call that is
    /// ready when the timeout fires still succeeds.
    #[derive(Debug)]
    pub struct ResponseFuture<F, Sl> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sl,
        after: Duration,
    }
}

impl<F, Sl, T, E> Future for ResponseFuture<F, Sl>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    Sl: Future<Output = ()>,
{
    type Output = Result<T, BoxError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.inner.poll(cx) {
            return Poll::Ready(out.map_err(Into::into));
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed { after: *this.after }.into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use tower::{ServiceExt, service_fn};

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::resilience::{FailureKind, ManualSleeper};

    #[test]
    fn routes_pick_the_longest_prefix_and_refuse_bad_input() {
        let routes = RouteTimeouts::new(Duration::from_secs(1))
            .route("/api", Duration::from_millis(500))
            .unwrap()
            .route("/api/search", Duration::from_millis(200))
            .unwrap();
        assert_eq!(routes.for_path("/api/search/x"), Duration::from_millis(200));
        assert_eq!(routes.for_path("/api/users"), Duration::from_millis(500));
        assert_eq!(routes.for_path("/health"), Duration::from_secs(1));
        assert!(routes.clone().route("api", Duration::from_secs(1)).is_err());
        assert!(routes.route("/x", Duration::ZERO).is_err());
    }

    /// A callee that never answers, and notices when its call is dropped.
    #[derive(Debug)]
    struct DropFlag(Arc<AtomicBool>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_slow_call_times_out_with_its_route_timeout_and_is_cancelled() {
        let clock = ManualClock::new();
        let sleeper = ManualSleeper::new(clock.clone());
        let cancelled = Arc::new(AtomicBool::new(false));
        let flag = cancelled.clone();
        let callee = service_fn(move |_: http::Request<()>| {
            let guard = DropFlag(flag.clone());
            async move {
                std::future::pending::<()>().await;
                drop(guard);
                Ok::<_, BoxError>(())
            }
        });
        let routes = RouteTimeouts::new(Duration::from_secs(1))
            .route("/slow", Duration::from_millis(250))
            .unwrap();
        let svc = TimeoutLayer::new(routes)
            .with_sleeper(sleeper.clone())
            .layer(callee);
        let request = http::Request::builder().uri("/slow/x").body(()).unwrap();
        let err = svc.oneshot(request).await.unwrap_err();
        assert_eq!(FailureKind::of(&err), FailureKind::Timeout);
        assert_eq!(
            err.downcast_ref::<Elapsed>().unwrap().after,
            Duration::from_millis(250)
        );
        assert_eq!(sleeper.slept(), [Duration::from_millis(250)]);
        assert!(
            cancelled.load(Ordering::SeqCst),
            "the callee's future was dropped"
        );
    }

    #[tokio::test]
    async fn each_attempt_carries_the_tighter_of_its_timeout_and_the_request_deadline() {
        let clock = ManualClock::new();
        let svc = TimeoutLayer::new(RouteTimeouts::new(Duration::from_millis(250)))
            .with_sleeper(crate::resilience::NeverSleeper)
            .with_clock(clock.shared())
            .layer(service_fn(|r: http::Request<()>| async move {
                Ok::<_, BoxError>(r.deadline())
            }));
        let start = clock.now();
        let loose = http::Request::new(());
        let got = svc.clone().oneshot(loose).await.unwrap().unwrap();
        assert_eq!(got.0 - start, Duration::from_millis(250));
        let mut tight = http::Request::new(());
        set_deadline(&mut tight, Deadline(start + Duration::from_millis(100)));
        let got = svc.oneshot(tight).await.unwrap().unwrap();
        assert_eq!(got.0 - start, Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_ready_call_wins_over_a_due_timeout() {
        let sleeper = ManualSleeper::new(ManualClock::new());
        let svc = TimeoutLayer::new(Duration::from_millis(1))
            .with_sleeper(sleeper)
            .layer(service_fn(|x: u32| async move { Ok::<_, BoxError>(x + 1) }));
        assert_eq!(svc.oneshot(1).await.unwrap(), 2);
    }
}
