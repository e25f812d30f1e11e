//! The breaker as a tower layer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::core::{CallOutcome, CircuitBreaker, Permit};
use crate::resilience::{BoxError, FailureKind};

/// Wraps a service with a [`CircuitBreaker`].
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer {
    breaker: CircuitBreaker,
}

impl CircuitBreakerLayer {
    pub fn new(breaker: CircuitBreaker) -> Self {
        Self { breaker }
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreakerService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            breaker: self.breaker.clone(),
        }
    }
}

/// A service guarded by a circuit breaker. Any `Err` from the inner service is a
/// failure; [`crate::resilience::timeout::Elapsed`] counts as a timeout and
/// [`crate::resilience::bulkhead::BulkheadFull`] as a rejection.
#[derive(Debug, Clone)]
pub struct CircuitBreakerService<S> {
    inner: S,
    breaker: CircuitBreaker,
}

impl<S> CircuitBreakerService<S> {
    /// The breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }
}

impl<S, Req> Service<Req> for CircuitBreakerService<S>
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
        match self.breaker.try_acquire() {
            Ok(permit) => ResponseFuture {
                inner: Some(self.inner.call(request)),
                permit: Some(permit),
                short_circuited: None,
            },
            Err(e) => ResponseFuture {
                inner: None,
                permit: None,
                short_circuited: Some(e.into()),
            },
        }
    }
}

pin_project! {
    /// The future of a call through the breaker: records the outcome when it ends,
    /// and a cancellation when dropped before.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        permit: Option<Permit>,
        short_circuited: Option<BoxError>,
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
            let err = this
                .short_circuited
                .take()
                .expect("polled after completion");
            return Poll::Ready(Err(err));
        };
        let result = std::task::ready!(inner.poll(cx)).map_err(Into::into);
        let outcome = match &result {
            Ok(_) => CallOutcome::Success,
            Err(e) => match FailureKind::of(e) {
                FailureKind::Timeout => CallOutcome::Timeout,
                FailureKind::BulkheadFull => CallOutcome::Rejected,
                _ => CallOutcome::Failure,
            },
        };
        if let Some(permit) = this.permit.take() {
            permit.record(outcome);
        }
        Poll::Ready(result)
    }
}
