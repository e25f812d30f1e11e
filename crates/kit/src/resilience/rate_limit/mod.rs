//! Per-client rate limiting through `governor` (GCRA), as a layer keyed by client.
//!
//! Guarantees: each key gets `per_second` requests per second with bursts of up to
//! `burst`; a request over the limit is refused at once with [`RateLimited`], whose
//! `retry_after` is when the next one would pass. Time is the injected clock
//! (governor runs on it through [`GovernorClock`]). Key state is pruned of clients
//! that are back to a full burst every `prune_every` calls, so memory follows the
//! clients active in the last burst period.
//!
//! Not guaranteed: a global limit across processes (each process limits its own
//! traffic), or identification of clients: the key function decides who is who.
//!
//! ```
//! use casebook_kit::clock::SystemClock;
//! use casebook_kit::resilience::rate_limit::{RateLimitConfig, RateLimitLayer};
//! use tower::{ServiceBuilder, service_fn};
//!
//! let layer = RateLimitLayer::by_header(RateLimitConfig::default(), "x-client-id", SystemClock::shared()).unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|r: http::Request<()>| async move { Ok::<_, std::io::Error>(r) }));
//! # drop(svc);
//! ```

use std::fmt;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use governor::clock::Clock as _;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use tower::{Layer, Service};

use super::{BoxError, ConfigError};
use crate::clock::SharedClock;

/// Governor's clock, driven by casebook's injected clock.
#[derive(Debug, Clone)]
pub struct GovernorClock(pub SharedClock);

impl governor::clock::Clock for GovernorClock {
    type Instant = Instant;
    fn now(&self) -> Instant {
        self.0.now()
    }
}

/// The limit per client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per second per client.
    pub per_second: u32,
    /// Requests a client may send at once after being idle.
    pub burst: u32,
    /// Calls between two prunings of idle clients' state.
    pub prune_every: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_second: 100,
            burst: 200,
            prune_every: 4096,
        }
    }
}

/// The client is over its rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited: retry after {retry_after:?}")]
pub struct RateLimited {
    pub retry_after: Duration,
}

/// The future of a rate-limited call: the inner call, or the refusal.
pub type ResponseFuture<F> = super::limit::ResponseFuture<F>;

type Limiter<K> = RateLimiter<K, HashMapStateStore<K>, GovernorClock>;

struct Shared<K: Hash + Eq + Clone> {
    limiter: Limiter<K>,
    clock: GovernorClock,
    calls: AtomicU64,
    prune_every: u64,
    refused: metrics::Counter,
}

/// Derives the client key of a request.
pub trait ClientKey<Req>: Clone {
    type Key: Hash + Eq + Clone + Send + Sync + 'static;
    fn key(&self, request: &Req) -> Self::Key;
}

impl<Req, K, F> ClientKey<Req> for F
where
    F: Fn(&Req) -> K + Clone,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    type Key = K;
    fn key(&self, request: &Req) -> K {
        self(request)
    }
}

/// Keys HTTP requests by a header's value; requests without it share the key `""`.
#[derive(Debug, Clone, Copy)]
pub struct HeaderKey(pub &'static str);

impl<B> ClientKey<http::Request<B>> for HeaderKey {
    type Key = String;
    fn key(&self, request: &http::Request<B>) -> String {
        request
            .headers()
            .get(self.0)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    }
}

impl RateLimitLayer<HeaderKey, String> {
    /// A layer keying HTTP requests by the header `name` (e.g. an API key).
    pub fn by_header(
        config: RateLimitConfig,
        name: &'static str,
        clock: SharedClock,
    ) -> Result<Self, ConfigError> {
        Self::new(config, HeaderKey(name), clock)
    }
}

/// Rate-limits calls per client.
pub struct RateLimitLayer<KF, K: Hash + Eq + Clone> {
    shared: Arc<Shared<K>>,
    key_fn: KF,
}

impl<KF: Clone, K: Hash + Eq + Clone> Clone for RateLimitLayer<KF, K> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            key_fn: self.key_fn.clone(),
        }
    }
}

impl<KF, K: Hash + Eq + Clone> fmt::Debug for RateLimitLayer<KF, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("clients", &self.shared.limiter.len())
            .finish()
    }
}

impl<KF, K: Hash + Eq + Clone> RateLimitLayer<KF, K> {
    /// A layer limiting each key `key_fn` derives.
    pub fn new(
        config: RateLimitConfig,
        key_fn: KF,
        clock: SharedClock,
    ) -> Result<Self, ConfigError> {
        let per_second = NonZeroU32::new(config.per_second)
            .ok_or_else(|| ConfigError::new("rate_limit.per_second", "must be at least 1"))?;
        let burst = NonZeroU32::new(config.burst)
            .ok_or_else(|| ConfigError::new("rate_limit.burst", "must be at least 1"))?;
        if config.prune_every == 0 {
            return Err(ConfigError::new(
                "rate_limit.prune_every",
                "must be at least 1",
            ));
        }
        let clock = GovernorClock(clock);
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Ok(Self {
            shared: Arc::new(Shared {
                limiter: RateLimiter::new(quota, HashMapStateStore::default(), clock.clone()),
                clock,
                calls: AtomicU64::new(0),
                prune_every: config.prune_every,
                refused: metrics::counter!("casebook_rate_limited_total"),
            }),
            key_fn,
        })
    }

    /// Clients with state right now.
    pub fn tracked_clients(&self) -> usize {
        self.shared.limiter.len()
    }

    /// Checks one request from `key` against its limit.
    pub fn check(&self, key: &K) -> Result<(), RateLimited> {
        let shared = &self.shared;
        if shared.calls.fetch_add(1, Ordering::Relaxed) % shared.prune_every
            == shared.prune_every - 1
        {
            shared.limiter.retain_recent();
            shared.limiter.shrink_to_fit();
        }
        shared.limiter.check_key(key).map_err(|not_until| {
            shared.refused.increment(1);
            RateLimited {
                retry_after: not_until.wait_time_from(shared.clock.now()),
            }
        })
    }
}

impl<S, KF: Clone, K: Hash + Eq + Clone> Layer<S> for RateLimitLayer<KF, K> {
    type Service = RateLimit<S, KF, K>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service whose callers are rate-limited per key.
pub struct RateLimit<S, KF, K: Hash + Eq + Clone> {
    inner: S,
    layer: RateLimitLayer<KF, K>,
}

impl<S: Clone, KF: Clone, K: Hash + Eq + Clone> Clone for RateLimit<S, KF, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, KF, K: Hash + Eq + Clone> fmt::Debug for RateLimit<S, KF, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S, KF, Req> Service<Req> for RateLimit<S, KF, KF::Key>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    KF: ClientKey<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let key = self.layer.key_fn.key(&request);
        match self.layer.check(&key) {
            Ok(()) => ResponseFuture::unlimited(self.inner.call(request)),
            Err(e) => ResponseFuture::refused(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use tower::{ServiceExt, service_fn};

    use super::*;
    use crate::clock::ManualClock;
    use crate::resilience::FailureKind;

    fn req(client: &str) -> http::Request<()> {
        http::Request::builder()
            .header("x-client-id", client)
            .body(())
            .unwrap()
    }

    #[tokio::test]
    async fn each_client_gets_its_own_burst_and_refill_on_the_injected_clock() {
        let clock = ManualClock::new();
        let cfg = RateLimitConfig {
            per_second: 10,
            burst: 3,
            prune_every: 1000,
        };
        let layer = RateLimitLayer::by_header(cfg, "x-client-id", clock.shared()).unwrap();
        let svc = layer.layer(service_fn(|_: http::Request<()>| async {
            Ok::<_, BoxError>(())
        }));
        for _ in 0..3 {
            svc.clone().oneshot(req("a")).await.unwrap();
        }
        let err = svc.clone().oneshot(req("a")).await.unwrap_err();
        assert_eq!(FailureKind::of(&err), FailureKind::RateLimited);
        assert_eq!(
            err.downcast_ref::<RateLimited>().unwrap().retry_after,
            Duration::from_millis(100)
        );
        svc.clone()
            .oneshot(req("b"))
            .await
            .expect("b has its own budget");
        clock.advance(Duration::from_millis(100));
        svc.clone()
            .oneshot(req("a"))
            .await
            .expect("one token refilled after 100 ms");
        assert!(svc.clone().oneshot(req("a")).await.is_err());
    }

    #[test]
    fn idle_clients_are_pruned_and_bad_numbers_refused() {
        let clock = ManualClock::new();
        let cfg = RateLimitConfig {
            per_second: 10,
            burst: 1,
            prune_every: 10,
        };
        let layer = RateLimitLayer::new(cfg, |k: &u32| *k, clock.shared()).unwrap();
        for k in 0..9u32 {
            layer.check(&k).unwrap();
        }
        assert_eq!(layer.tracked_clients(), 9);
        clock.advance(Duration::from_secs(1));
        layer.check(&100).unwrap(); // the 10th call prunes first
        assert_eq!(layer.tracked_clients(), 1);
        let zero = RateLimitConfig {
            per_second: 0,
            ..cfg
        };
        assert_eq!(
            RateLimitLayer::<_, u32>::new(zero, |k: &u32| *k, clock.shared())
                .unwrap_err()
                .field,
            "rate_limit.per_second"
        );
    }
}
