//! Semaphore isolation per dependency.
//!
//! Guarantees: never more than `max_concurrent` calls of the inner service in flight
//! (default 10); when full, a call is refused at once with [`BulkheadFull`], or, if
//! a queue is configured, waits in a queue of at most `max_queue` callers (FIFO, as
//! tokio's semaphore is fair) and is refused when that queue is full too. A waiting
//! or running call that is dropped gives its place back.
//!
//! Not guaranteed: a bound on time spent queued; put a timeout outside the bulkhead
//! (the standard stack does).
//!
//! ```
//! use casebook_kit::resilience::bulkhead::BulkheadLayer;
//! use tower::{ServiceBuilder, service_fn};
//!
//! let svc = ServiceBuilder::new()
//!     .layer(BulkheadLayer::new(10, 0).unwrap())
//!     .service(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }));
//! # drop(svc);
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service, ServiceExt};

use super::{BoxError, ConfigError};

/// The bulkhead's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulkheadConfig {
    /// Most calls in flight at once.
    pub max_concurrent: usize,
    /// Most callers waiting for a slot; 0 refuses at once when full.
    pub max_queue: usize,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 10,
            max_queue: 0,
        }
    }
}

/// The bulkhead and its queue are full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bulkhead full: {max_concurrent} calls in flight and {max_queue} queued")]
pub struct BulkheadFull {
    pub max_concurrent: usize,
    pub max_queue: usize,
}

/// A bulkhead shared by every clone of the services it guards.
#[derive(Debug, Clone)]
pub struct Bulkhead {
    semaphore: Arc<Semaphore>,
    queued: Arc<AtomicUsize>,
    config: BulkheadConfig,
}

impl Bulkhead {
    pub fn new(config: BulkheadConfig) -> Result<Self, ConfigError> {
        if config.max_concurrent == 0 || config.max_concurrent > Semaphore::MAX_PERMITS {
            return Err(ConfigError::new(
                "bulkhead.max_concurrent",
                format!("must be at least 1, got {}", config.max_concurrent),
            ));
        }
        Ok(Self {
            semaphore: Arc::new(Semaphore::new(config.max_concurrent)),
            queued: Arc::default(),
            config,
        })
    }

    /// Its size.
    pub fn config(&self) -> BulkheadConfig {
        self.config
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.config.max_concurrent - self.semaphore.available_permits()
    }

    /// Callers waiting now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    fn full(&self) -> BulkheadFull {
        BulkheadFull {
            max_concurrent: self.config.max_concurrent,
            max_queue: self.config.max_queue,
        }
    }
}

/// Wraps services with a shared [`Bulkhead`].
#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    bulkhead: Bulkhead,
}

impl BulkheadLayer {
    /// A layer with a new bulkhead of `max_concurrent` slots and `max_queue` waiters.
    pub fn new(max_concurrent: usize, max_queue: usize) -> Result<Self, ConfigError> {
        Ok(Self::shared(Bulkhead::new(BulkheadConfig {
            max_concurrent,
            max_queue,
        })?))
    }
    /// A layer over an existing bulkhead (one per dependency, shared by call paths).
    pub fn shared(bulkhead: Bulkhead) -> Self {
        Self { bulkhead }
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService {
            inner,
            bulkhead: self.bulkhead.clone(),
        }
    }
}

/// A service behind a bulkhead.
#[derive(Debug, Clone)]
pub struct BulkheadService<S> {
    inner: S,
    bulkhead: Bulkhead,
}

impl<S, Req> Service<Req> for BulkheadService<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let bulkhead = &self.bulkhead;
        if let Ok(permit) = bulkhead.semaphore.clone().try_acquire_owned() {
            return ResponseFuture::Running {
                fut: self.inner.call(request),
                permit: Some(permit),
            };
        }
        // Reserve a queue place first, so the queue never exceeds its bound.
        let reserved = bulkhead
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q < bulkhead.config.max_queue).then_some(q + 1)
            })
            .is_ok();
        if !reserved {
            return ResponseFuture::Rejected {
                error: Some(bulkhead.full()),
            };
        }
        let place = QueuePlace(bulkhead.queued.clone());
        let semaphore = bulkhead.semaphore.clone();
        // The readied inner service is for this call; the clone serves the next.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::Queued {
            fut: Box::pin(async move {
                let permit = semaphore.acquire_owned().await;
                drop(place);
                let _permit = permit.map_err(|_| "bulkhead semaphore closed")?;
                inner.oneshot(request).await.map_err(Into::into)
            }),
        }
    }
}

struct QueuePlace(Arc<AtomicUsize>);

impl Drop for QueuePlace {
    fn drop(&mut self) {
        let before = self.0.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "queue count underflow");
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

pin_project! {
    /// The future of a call through the bulkhead; holds its slot until it ends.
    #[project = Proj]
    pub enum ResponseFuture<F, T> {
        Running { #[pin] fut: F, permit: Option<OwnedSemaphorePermit> },
        Queued { fut: BoxFuture<T> },
        Rejected { error: Option<BulkheadFull> },
    }
}

impl<F, T> std::fmt::Debug for ResponseFuture<F, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ResponseFuture::Running { .. } => "ResponseFuture::Running",
            ResponseFuture::Queued { .. } => "ResponseFuture::Queued",
            ResponseFuture::Rejected { .. } => "ResponseFuture::Rejected",
        })
    }
}

impl<F, T, E> Future for ResponseFuture<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Proj::Running { fut, permit } => {
                let out = std::task::ready!(fut.poll(cx)).map_err(Into::into);
                // Release the slot as soon as the call ends, not when the future is dropped.
                permit.take();
                Poll::Ready(out)
            }
            Proj::Queued { fut } => fut.as_mut().poll(cx),
            Proj::Rejected { error } => {
                Poll::Ready(Err(error.take().expect("polled after completion").into()))
            }
        }
    }
}

#[cfg(test)]
mod tests;
