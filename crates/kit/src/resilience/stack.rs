//! The standard client stack, assembled in its one right order, and the adapter
//! that puts [`HttpClient`] under it.
//!
//! From the outside in: `[fallback →] retry → breaker → timeout → bulkhead → callee`
//! (the module doc of [`crate::resilience`] says why). Build it with
//! [`StackBuilder`] for any tower service, or use [`ResilientClient`] for HTTP:
//!
//! ```no_run
//! # async fn demo() -> Result<(), casebook_kit::resilience::BoxError> {
//! use casebook_kit::resilience::stack::{ResilienceConfig, ResilientClient};
//!
//! let metrics_store = ResilientClient::for_dependency("metrics-store", &ResilienceConfig::default())?;
//! let health: serde_json::Value = metrics_store.get_json("http://127.0.0.1:7700/health").await?;
//! # let _ = health; Ok(()) }
//! ```
//!
//! HTTP classification: a 5xx answer becomes the error [`UpstreamStatus`] (a
//! failure for the breaker, retryable, its `Retry-After` honoured); a 4xx answer is
//! a **success** for the breaker and is never retried (the callee is healthy; the
//! request was wrong). Transport errors and timeouts are failures.
//!
//! Build one stack per dependency and clone it: the bulkhead, breaker and retry
//! budget are shared by clones, not by separate builds (the breaker, kept in the
//! registry by name, is shared either way).
//!
//! Not done here: resolving a dependency's address (pass absolute URLs, or a base
//! URL from discovery), and load balancing across its instances.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, Uri, header};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tower::{Layer, Service, ServiceExt};

use super::breaker::{
    BreakerConfig, BreakerRegistry, CircuitBreaker, CircuitBreakerLayer, CircuitBreakerService,
};
use super::bulkhead::{Bulkhead, BulkheadConfig, BulkheadLayer, BulkheadService};
use super::fallback::{Fallback, FallbackLayer};
use super::retry::{Retry, RetryBudget, RetryConfig, RetryLayer};
use super::shed::DeadlineExceeded;
use super::timeout::{RouteTimeouts, Timeout, TimeoutLayer};
use super::{
    BoxError, ConfigError, DEADLINE_HEADER, PRIORITY_HEADER, RequestMeta, Sleeper, TokioSleeper,
    mark_idempotent,
};
use crate::clock::SharedClock;
use crate::http_client::{HttpClient, HttpError};

/// The callee answered a server error (5xx).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upstream answered {status}")]
pub struct UpstreamStatus {
    pub status: StatusCode,
    /// The callee's `Retry-After`, in delta-seconds (HTTP dates are not read).
    pub retry_after: Option<Duration>,
    pub body: Bytes,
}

impl UpstreamStatus {
    pub fn new(status: StatusCode, retry_after: Option<Duration>) -> Self {
        Self {
            status,
            retry_after,
            body: Bytes::new(),
        }
    }
}

/// One route's timeout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTimeout {
    /// Path prefix, starting with `/`.
    pub prefix: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

/// Timeouts of a dependency's calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutConfig {
    #[serde(with = "humantime_serde")]
    pub default: Duration,
    pub routes: Vec<RouteTimeout>,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            default: Duration::from_secs(1),
            routes: Vec::new(),
        }
    }
}

impl TimeoutConfig {
    /// The per-route policy.
    pub fn policy(&self) -> Result<RouteTimeouts, ConfigError> {
        if self.default.is_zero() {
            return Err(ConfigError::new("timeout.default", "must be positive"));
        }
        self.routes
            .iter()
            .try_fold(RouteTimeouts::new(self.default), |r, route| {
                r.route(&route.prefix, route.timeout)
            })
    }

    /// The longest timeout any route has.
    pub fn longest(&self) -> Duration {
        self.routes
            .iter()
            .map(|r| r.timeout)
            .fold(self.default, Duration::max)
    }
}

/// Everything the standard stack needs for one dependency.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResilienceConfig {
    pub timeout: TimeoutConfig,
    pub breaker: BreakerConfig,
    pub bulkhead: BulkheadConfig,
    pub retry: RetryConfig,
}

/// The standard stack around a service `S`, without a fallback.
pub type ResilientService<S, P = RouteTimeouts, Sl = TokioSleeper> =
    Retry<CircuitBreakerService<Timeout<BulkheadService<S>, P, Sl>>, Sl>;

/// The standard stack with a fallback outermost.
pub type WithFallback<S, F, Sl = TokioSleeper> =
    Fallback<ResilientService<S, RouteTimeouts, Sl>, F>;

/// Assembles the standard stack so services never order it by hand.
#[derive(Debug, Clone)]
pub struct StackBuilder<Sl = TokioSleeper> {
    name: String,
    config: ResilienceConfig,
    registry: BreakerRegistry,
    sleeper: Sl,
    /// A bulkhead the caller keeps a handle on; `None` makes one from the config.
    bulkhead: Option<Bulkhead>,
}

impl StackBuilder {
    /// A builder for dependency `name`, registering its breaker in the global registry.
    pub fn new(name: impl Into<String>, config: ResilienceConfig) -> Self {
        Self {
            name: name.into(),
            config,
            registry: BreakerRegistry::global().clone(),
            sleeper: TokioSleeper,
            bulkhead: None,
        }
    }
}

impl<Sl: Sleeper> StackBuilder<Sl> {
    /// Registers the breaker in `registry` instead; its clock drives the whole stack.
    pub fn registry(mut self, registry: BreakerRegistry) -> Self {
        self.registry = registry;
        self
    }

    /// Sleeps (backoff, timeouts) on `sleeper`.
    pub fn sleeper<S2: Sleeper>(self, sleeper: S2) -> StackBuilder<S2> {
        StackBuilder {
            name: self.name,
            config: self.config,
            registry: self.registry,
            sleeper,
            bulkhead: self.bulkhead,
        }
    }

    /// Isolates calls with `bulkhead` (whose size then wins over
    /// `config.bulkhead`) instead of a new one, so the caller can read its use
    /// ([`Bulkhead::in_flight`]) for a dashboard.
    pub fn with_bulkhead(mut self, bulkhead: Bulkhead) -> Self {
        self.bulkhead = Some(bulkhead);
        self
    }

    /// The clock the stack runs on.
    pub fn clock(&self) -> SharedClock {
        self.registry.clock()
    }

    /// Wraps `inner` in retry → breaker → timeout (`policy`) → bulkhead.
    pub fn build_with_policy<S, P>(
        &self,
        inner: S,
        policy: P,
    ) -> Result<(ResilientService<S, P, Sl>, CircuitBreaker), ConfigError>
    where
        P: Clone,
    {
        let breaker = self
            .registry
            .get_or_create(&self.name, &self.config.breaker)?;
        let budget = Arc::new(RetryBudget::named(&self.name, self.config.retry)?);
        let bulkhead = match &self.bulkhead {
            Some(shared) => shared.clone(),
            None => Bulkhead::new(self.config.bulkhead)?,
        };
        let service = tower::ServiceBuilder::new()
            .layer(
                RetryLayer::new(budget)
                    .with_sleeper(self.sleeper.clone())
                    .with_clock(self.clock()),
            )
            .layer(CircuitBreakerLayer::new(breaker.clone()))
            .layer(
                TimeoutLayer::new(policy)
                    .with_sleeper(self.sleeper.clone())
                    .with_clock(self.clock()),
            )
            .layer(BulkheadLayer::shared(bulkhead))
            .service(inner);
        Ok((service, breaker))
    }

    /// The stack for HTTP requests, with the configured per-route timeouts.
    pub fn build<S>(
        &self,
        inner: S,
    ) -> Result<(ResilientService<S, RouteTimeouts, Sl>, CircuitBreaker), ConfigError> {
        self.build_with_policy(inner, self.config.timeout.policy()?)
    }

    /// The stack with a fallback outermost.
    pub fn build_with_fallback<S, F>(
        &self,
        inner: S,
        fallback: F,
    ) -> Result<(WithFallback<S, F, Sl>, CircuitBreaker), ConfigError>
    where
        F: Clone,
    {
        let (service, breaker) = self.build(inner)?;
        Ok((
            FallbackLayer::new(&self.name, fallback).layer(service),
            breaker,
        ))
    }
}

/// [`HttpClient`] as a `tower::Service<http::Request<Bytes>>`.
///
/// Requests carry an absolute URI, or a path joined to `base_url`. The request's
/// priority and remaining deadline travel as `x-priority` and `x-deadline-ms`, so
/// the callee can shed and stop work that is no longer wanted; a request whose
/// deadline has passed is not sent. 5xx answers are [`UpstreamStatus`] errors.
/// The client's own timeout is a backstop; the stack's timeout is the one that acts.
#[derive(Clone)]
pub struct HttpService {
    client: HttpClient,
    base_url: Option<Arc<str>>,
    clock: SharedClock,
}

impl fmt::Debug for HttpService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpService")
            .field("base_url", &self.base_url)
            .finish()
    }
}

impl HttpService {
    pub fn new(client: HttpClient, clock: SharedClock) -> Self {
        Self {
            client,
            base_url: None,
            clock,
        }
    }

    /// Joins relative request paths to `base_url` (`http://host:port`).
    pub fn with_base_url(mut self, base_url: &str) -> Self {
        self.base_url = Some(base_url.trim_end_matches('/').into());
        self
    }

    fn url(&self, uri: &Uri) -> Result<String, BoxError> {
        if uri.scheme().is_some() {
            return Ok(uri.to_string());
        }
        let base = self.base_url.as_deref().ok_or_else(|| -> BoxError {
            format!("request URI {uri} is relative and the client has no base URL").into()
        })?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        Ok(format!("{base}{path}"))
    }
}

/// The future of an HTTP call.
pub type HttpFuture = Pin<Box<dyn Future<Output = Result<http::Response<Bytes>, BoxError>> + Send>>;

impl Service<http::Request<Bytes>> for HttpService {
    type Response = http::Response<Bytes>;
    type Error = BoxError;
    type Future = HttpFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Bytes>) -> Self::Future {
        let priority = request.priority();
        let deadline = request.deadline();
        let now = self.clock.now();
        let url = self.url(request.uri());
        let client = self.client.clone();
        Box::pin(async move {
            let url = url?;
            let (parts, body) = request.into_parts();
            let mut headers = parts.headers;
            headers.insert(PRIORITY_HEADER, HeaderValue::from_static(priority.as_str()));
            if let Some(deadline) = deadline {
                if deadline.has_passed(now) {
                    return Err(DeadlineExceeded {
                        late_by: now.saturating_duration_since(deadline.0),
                    }
                    .into());
                }
                let ms = u64::try_from(deadline.remaining(now).as_millis()).unwrap_or(u64::MAX);
                headers.insert(DEADLINE_HEADER, HeaderValue::from(ms.max(1)));
            }
            let response = client.send(parts.method, &url, headers, body).await?;
            if response.status.is_server_error() {
                let retry_after = response
                    .headers
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                return Err(UpstreamStatus {
                    status: response.status,
                    retry_after,
                    body: response.body,
                }
                .into());
            }
            let mut out = http::Response::new(response.body);
            *out.status_mut() = response.status;
            *out.headers_mut() = response.headers;
            Ok(out)
        })
    }
}

/// An HTTP client for one dependency, every call through the standard stack.
#[derive(Debug, Clone)]
pub struct ResilientClient {
    name: Arc<str>,
    service: ResilientService<HttpService>,
    breaker: CircuitBreaker,
}

impl ResilientClient {
    /// The client for `name`, on the system clock and the global breaker registry.
    pub fn for_dependency(name: &str, config: &ResilienceConfig) -> Result<Self, ConfigError> {
        Self::with_builder(StackBuilder::new(name, config.clone()), None)
    }

    /// A client from a configured builder; relative request paths go to `base_url`.
    pub fn with_builder(
        builder: StackBuilder,
        base_url: Option<&str>,
    ) -> Result<Self, ConfigError> {
        // The client's own timeout only backstops the stack's.
        let backstop = builder.config.timeout.longest() + Duration::from_secs(1);
        let mut http = HttpService::new(HttpClient::new(backstop), builder.clock());
        if let Some(base) = base_url {
            http = http.with_base_url(base);
        }
        let (service, breaker) = builder.build(http)?;
        Ok(Self {
            name: builder.name.clone().into(),
            service,
            breaker,
        })
    }

    /// The dependency's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The dependency's breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The stack as a tower service, to layer further or call directly.
    pub fn service(&self) -> ResilientService<HttpService> {
        self.service.clone()
    }

    /// Sends one request through the stack. Mark it idempotent to allow retries.
    pub async fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, BoxError> {
        self.service.clone().oneshot(request).await
    }

    /// GETs a JSON document (GET is idempotent, so it may be retried). A 4xx answer is an error here.
    pub async fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<T, BoxError> {
        let mut request = http::Request::get(url).body(Bytes::new())?;
        mark_idempotent(&mut request);
        let response = self.send(request).await?;
        decode(Method::GET, url, response)
    }

    /// Sends JSON and decodes a JSON answer; `idempotent` says whether it may be retried.
    pub async fn send_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        url: &str,
        body: &B,
        idempotent: bool,
    ) -> Result<T, BoxError> {
        let bytes = Bytes::from(serde_json::to_vec(body)?);
        let mut request = http::Request::builder()
            .method(method.clone())
            .uri(url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(bytes)?;
        if idempotent {
            mark_idempotent(&mut request);
        }
        let response = self.send(request).await?;
        decode(method, url, response)
    }
}

fn decode<T: DeserializeOwned>(
    method: Method,
    url: &str,
    response: http::Response<Bytes>,
) -> Result<T, BoxError> {
    if !response.status().is_success() {
        return Err(HttpError::Status {
            method,
            url: url.to_owned(),
            status: response.status(),
            body: String::from_utf8_lossy(response.body()).into_owned(),
        }
        .into());
    }
    serde_json::from_slice(response.body()).map_err(|source| {
        HttpError::Decode {
            method,
            url: url.to_owned(),
            source,
        }
        .into()
    })
}

#[cfg(test)]
mod tests;
