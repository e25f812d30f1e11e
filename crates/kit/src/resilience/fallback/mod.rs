//! A fallback that runs when a call fails: on error, timeout, rejection or
//! short-circuit (any `Err` of the inner service).
//!
//! Guarantees: at most `max_concurrent` fallbacks run at once (default 10, as
//! Hystrix's `fallback.isolation.semaphore.maxConcurrentRequests`); beyond that
//! the call fails with [`FallbackRejected`], and a fallback's own failure comes
//! back as [`FallbackFailed`] carrying **both** errors; every outcome is counted in
//! `casebook_fallback_total{dependency, outcome}`. Nothing is hidden: a caller
//! can always tell a fallback answer from a real one through the metrics and by
//! giving its fallback a distinct response.
//!
//! Not guaranteed: that a fallback is cheap or correct; keep it local (a cache, a
//! default), never another remote call through the same dependency.
//!
//! ```
//! use casebook_kit::resilience::BoxError;
//! use casebook_kit::resilience::fallback::FallbackLayer;
//! use tower::{ServiceBuilder, service_fn};
//!
//! // An empty list of recommendations beats an error page.
//! let fallback = |_err: BoxError| async { Ok::<_, BoxError>(Vec::<u32>::new()) };
//! let svc = ServiceBuilder::new()
//!     .layer(FallbackLayer::new("recommendations", fallback))
//!     .service(service_fn(|_: ()| async { Err::<Vec<u32>, _>(std::io::Error::other("down")) }));
//! # drop(svc);
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;
use tower::{Layer, Service};

use super::{BoxError, FailureKind};

/// Default bound on concurrent fallbacks.
pub const DEFAULT_MAX_CONCURRENT: usize = 10;

/// The fallback itself failed; both errors are kept.
#[derive(Debug, thiserror::Error)]
#[error("call failed ({primary}) and so did its fallback ({fallback})")]
pub struct FallbackFailed {
    pub primary: BoxError,
    pub fallback: BoxError,
}

/// The call failed and too many fallbacks were running to run another.
#[derive(Debug, thiserror::Error)]
#[error("call failed ({primary}); fallback refused: {max_concurrent} already running")]
pub struct FallbackRejected {
    pub primary: BoxError,
    pub max_concurrent: usize,
}

struct Counters {
    success: metrics::Counter,
    failure: metrics::Counter,
    rejected: metrics::Counter,
}

/// Runs `fallback(error)` when the inner call fails.
#[derive(Clone)]
pub struct FallbackLayer<F> {
    fallback: F,
    permits: Arc<Semaphore>,
    max_concurrent: usize,
    counters: Arc<Counters>,
}

impl<F> std::fmt::Debug for FallbackLayer<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackLayer")
            .field("max_concurrent", &self.max_concurrent)
            .finish()
    }
}

impl<F> FallbackLayer<F> {
    /// A fallback for `dependency` (the metrics label), at most 10 at once.
    pub fn new(dependency: &str, fallback: F) -> Self {
        Self::bounded(dependency, fallback, DEFAULT_MAX_CONCURRENT)
    }

    /// A fallback with its own concurrency bound (at least 1).
    pub fn bounded(dependency: &str, fallback: F, max_concurrent: usize) -> Self {
        let max_concurrent = max_concurrent.clamp(1, Semaphore::MAX_PERMITS);
        let c = |outcome: &'static str| metrics::counter!("casebook_fallback_total", "dependency" => dependency.to_owned(), "outcome" => outcome);
        Self {
            fallback,
            permits: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            counters: Arc::new(Counters {
                success: c("success"),
                failure: c("failure"),
                rejected: c("rejected"),
            }),
        }
    }
}

impl<S, F: Clone> Layer<S> for FallbackLayer<F> {
    type Service = Fallback<S, F>;
    fn layer(&self, inner: S) -> Self::Service {
        Fallback {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service with a fallback.
#[derive(Clone)]
pub struct Fallback<S, F> {
    inner: S,
    layer: FallbackLayer<F>,
}

impl<S: std::fmt::Debug, F> std::fmt::Debug for Fallback<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

/// The future of a call with a fallback.
pub type ResponseFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

impl<S, F, Fut, Req> Service<Req> for Fallback<S, F>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    F: Fn(BoxError) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<S::Response, BoxError>> + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // A service that cannot become ready fails every call; the fallback covers calls, not readiness.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let call = self.inner.call(request);
        let layer = self.layer.clone();
        Box::pin(async move {
            let primary = match call.await {
                Ok(response) => return Ok(response),
                Err(e) => e.into(),
            };
            let Ok(_permit) = layer.permits.clone().try_acquire_owned() else {
                layer.counters.rejected.increment(1);
                return Err(FallbackRejected {
                    primary,
                    max_concurrent: layer.max_concurrent,
                }
                .into());
            };
            let kind = FailureKind::of(&primary);
            tracing::debug!(cause = kind.as_str(), error = %primary, "running fallback");
            match (layer.fallback)(primary_view(&primary)).await {
                Ok(response) => {
                    layer.counters.success.increment(1);
                    Ok(response)
                }
                Err(fallback) => {
                    layer.counters.failure.increment(1);
                    tracing::warn!(error = %primary, fallback_error = %fallback, "fallback failed");
                    Err(FallbackFailed { primary, fallback }.into())
                }
            }
        })
    }
}

/// The fallback gets its own copy of the error (a typed copy for the layers' own
/// refusals, so it can match on them; a message otherwise), and the original
/// stays with us to be reported if the fallback fails too.
fn primary_view(primary: &BoxError) -> BoxError {
    use super::{breaker, bulkhead, timeout};
    let e: &(dyn std::error::Error + 'static) = primary.as_ref();
    if let Some(x) = e.downcast_ref::<breaker::ShortCircuited>() {
        return x.clone().into();
    }
    if let Some(x) = e.downcast_ref::<bulkhead::BulkheadFull>() {
        return (*x).into();
    }
    if let Some(x) = e.downcast_ref::<timeout::Elapsed>() {
        return (*x).into();
    }
    primary.to_string().into()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tower::{ServiceExt, service_fn};

    use super::*;
    use crate::resilience::breaker::ShortCircuited;

    #[tokio::test]
    async fn runs_on_any_error_and_reports_its_own_failure_with_both_errors() {
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let log = seen.clone();
        let layer = FallbackLayer::new("d", move |e: BoxError| {
            log.lock().push(FailureKind::of(&e));
            async { Ok::<u32, BoxError>(0) }
        });
        let failing = layer.clone().layer(service_fn(|_: ()| async {
            Err::<u32, BoxError>(
                ShortCircuited {
                    dependency: "d".into(),
                }
                .into(),
            )
        }));
        assert_eq!(failing.oneshot(()).await.unwrap(), 0);
        let fine = layer.layer(service_fn(|_: ()| async { Ok::<u32, BoxError>(5) }));
        assert_eq!(fine.oneshot(()).await.unwrap(), 5);
        assert_eq!(
            *seen.lock(),
            [FailureKind::ShortCircuited],
            "not run on success"
        );

        let broken = FallbackLayer::new("d", |_e: BoxError| async {
            Err::<u32, BoxError>("cache empty".into())
        })
        .layer(service_fn(|_: ()| async {
            Err::<u32, BoxError>("down".into())
        }));
        let err = broken.oneshot(()).await.unwrap_err();
        let failed = err
            .downcast_ref::<FallbackFailed>()
            .expect("fallback failure is reported");
        assert_eq!(failed.primary.to_string(), "down");
        assert_eq!(failed.fallback.to_string(), "cache empty");
    }

    #[tokio::test]
    async fn no_more_than_the_bound_run_at_once() {
        let running = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        let counter = running.clone();
        let layer = FallbackLayer::bounded(
            "d",
            move |_e: BoxError| {
                let counter = counter.clone();
                let mut release = release_rx.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let _ = release.wait_for(|r| *r).await;
                    Ok::<u32, BoxError>(1)
                }
            },
            2,
        );
        let svc = layer.layer(service_fn(|_: ()| async {
            Err::<u32, BoxError>("down".into())
        }));
        let mut first = svc.clone().oneshot(());
        let mut second = svc.clone().oneshot(());
        assert!(futures::poll!(&mut first).is_pending());
        assert!(futures::poll!(&mut second).is_pending());
        assert_eq!(
            running.load(Ordering::SeqCst),
            2,
            "both fallbacks are running"
        );
        let err = svc.clone().oneshot(()).await.unwrap_err();
        let rejected = err
            .downcast_ref::<FallbackRejected>()
            .expect("third fallback refused");
        assert_eq!(rejected.max_concurrent, 2);
        assert_eq!(rejected.primary.to_string(), "down");
        release_tx.send(true).unwrap();
        assert_eq!(first.await.unwrap(), 1);
        assert_eq!(second.await.unwrap(), 1);
    }
}
