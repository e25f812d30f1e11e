//! Fetching a miss from the tier above: the next tier or the origin.
//!
//! Where: [`Upstream::Url`] is fixed; [`Upstream::Service`] is the nearest `UP`
//! instance found through the kit's [`Resolver`] from this instance's placement
//! (same zone, then region, then any; cached a few seconds). How: `GET
//! {base}/o/{key}?{query}` through the kit's standard stack (breaker → timeout →
//! bulkhead → `HttpClient`, no retry layer inside: see below), one stack per
//! instance so one tier's failing upstream never opens another's breaker.
//!
//! The query: a client's request is forwarded with its own query (its `exp` and
//! `sig`, which the tier above checks for the same path); a fetch no client asked
//! for (a fill) is signed by this tier with [`SELF_SIGNED_FOR`] of validity.
//!
//! Failover instead of retries: the stack's retry layer is off (one attempt), and
//! when a discovered instance cannot be reached (transport error, timeout, 5xx,
//! open breaker) the tier [`Resolver::forget`]s the service and, if discovery now
//! names another instance, tries that one once. So a dead regional edge costs one
//! failed attempt, never a retry storm against it.
//!
//! Answers: 200 → [`Fetched::Found`]; 404 → [`Fetched::NotFound`]; any other
//! status → [`FetchError::Refused`] carrying it; the rest →
//! [`FetchError::Timeout`] (504) or [`FetchError::Unavailable`] (502). Bounded:
//! bodies of at most [`casebook_kit::http_client::DEFAULT_MAX_RESPONSE`] bytes
//! (16 MiB; a larger object is `Unavailable`), calls in flight by the bulkhead.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use casebook_kit::clock::SharedClock;
use casebook_kit::resilience::stack::{ResilienceConfig, ResilientClient, StackBuilder};
use casebook_kit::resilience::{BoxError, FailureKind};
use casebook_kit::resolve::Resolver;
use casebook_kit::topology::Placement;
use http::{StatusCode, header};

use super::Upstream;
use super::key::ObjectKey;
use crate::signing::SigningKey;

/// How long a tier's own signature on a fill fetch is valid.
pub const SELF_SIGNED_FOR: Duration = Duration::from_secs(300);

/// An object as the upstream answered it.
#[derive(Debug, Clone)]
pub enum Fetched {
    Found {
        body: Bytes,
        etag: Option<String>,
        content_type: Option<String>,
    },
    NotFound,
}

/// Why a fetch failed. Cheap to clone: coalesced waiters share one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("the upstream {upstream} did not answer in time")]
    Timeout { upstream: String },
    #[error("the upstream {upstream} is unavailable: {reason}")]
    Unavailable { upstream: String, reason: String },
    #[error("the upstream {upstream} answered {status}")]
    Refused { upstream: String, status: u16 },
    #[error("the fetch was abandoned (the tier is stopping)")]
    Abandoned,
}

impl FetchError {
    /// The status a client is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Refused { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            Self::Unavailable { .. } | Self::Abandoned => StatusCode::BAD_GATEWAY,
        }
    }

    /// A short label for metrics.
    pub fn cause(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "timeout",
            Self::Unavailable { .. } => "unavailable",
            Self::Refused { .. } => "refused",
            Self::Abandoned => "abandoned",
        }
    }
}

/// The client of one tier's upstream.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    target: Upstream,
    resolver: Arc<Resolver>,
    near: Placement,
    http: ResilientClient,
    signing: SigningKey,
    clock: SharedClock,
}

impl UpstreamClient {
    /// A client for `target`, its stack named `dependency` (breaker, bulkhead).
    pub fn new(
        target: Upstream,
        dependency: &str,
        config: &ResilienceConfig,
        resolver: Arc<Resolver>,
        near: Placement,
        signing: SigningKey,
        clock: SharedClock,
    ) -> Result<Self, casebook_kit::config::ConfigError> {
        let mut config = config.clone();
        config.retry.max_attempts = 1; // failover below is the one retry
        let http = ResilientClient::with_builder(StackBuilder::new(dependency, config), None)
            .map_err(|e| casebook_kit::config::ConfigError::new("upstream", e.to_string()))?;
        Ok(Self {
            target,
            resolver,
            near,
            http,
            signing,
            clock,
        })
    }

    /// Fetches `key`, forwarding `query` (the client's) or signing its own.
    pub async fn fetch(&self, key: &ObjectKey, query: Option<&str>) -> Result<Fetched, FetchError> {
        let path = key.path();
        let query = match query {
            Some(q) if !q.is_empty() => q.to_owned(),
            _ => {
                let exp = self.wall_secs() + SELF_SIGNED_FOR.as_secs();
                self.signing.sign(&path, exp)
            }
        };
        let path_and_query = format!("{path}?{query}");
        match &self.target {
            Upstream::Url(base) => {
                self.attempt(base.trim_end_matches('/'), &path_and_query)
                    .await
            }
            Upstream::Service(service) => {
                let first = self.resolve(service).await?;
                match self.attempt(&first, &path_and_query).await {
                    Err(e) if is_instance_failure(&e) => {
                        self.resolver.forget(service);
                        let second = self.resolve(service).await?;
                        if second == first {
                            return Err(e);
                        }
                        tracing::debug!(service, %first, %second, "upstream failed; trying another instance");
                        self.attempt(&second, &path_and_query).await
                    }
                    other => other,
                }
            }
        }
    }

    /// GETs an absolute URL through the same stack (a fill list, say).
    pub async fn get(&self, url: &str) -> Result<http::Response<Bytes>, BoxError> {
        let request = http::Request::get(url).body(Bytes::new())?;
        self.http.send(request).await
    }

    /// `http://host:port` of the nearest instance of `service`.
    pub async fn resolve(&self, service: &str) -> Result<String, FetchError> {
        self.resolver
            .resolve(service, &self.near)
            .await
            .map(|addr| format!("http://{addr}"))
            .map_err(|e| FetchError::Unavailable {
                upstream: service.to_owned(),
                reason: e.to_string(),
            })
    }

    async fn attempt(&self, base: &str, path_and_query: &str) -> Result<Fetched, FetchError> {
        let url = format!("{base}{path_and_query}");
        let request =
            http::Request::get(&url)
                .body(Bytes::new())
                .map_err(|e| FetchError::Unavailable {
                    upstream: base.to_owned(),
                    reason: e.to_string(),
                })?;
        let response = self
            .http
            .send(request)
            .await
            .map_err(|e| failure(base, &e))?;
        let text = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        match response.status() {
            StatusCode::OK => Ok(Fetched::Found {
                etag: text(header::ETAG),
                content_type: text(header::CONTENT_TYPE),
                body: response.into_body(),
            }),
            StatusCode::NOT_FOUND => Ok(Fetched::NotFound),
            status => Err(FetchError::Refused {
                upstream: base.to_owned(),
                status: status.as_u16(),
            }),
        }
    }

    fn wall_secs(&self) -> u64 {
        self.clock.wall_millis() / 1000
    }
}

/// A failure that says the instance is gone or sick, not that the request was wrong.
fn is_instance_failure(error: &FetchError) -> bool {
    matches!(
        error,
        FetchError::Timeout { .. } | FetchError::Unavailable { .. }
    )
}

fn failure(upstream: &str, error: &BoxError) -> FetchError {
    let upstream = upstream.to_owned();
    match FailureKind::of(error) {
        FailureKind::Timeout => FetchError::Timeout { upstream },
        _ => FetchError::Unavailable {
            upstream,
            reason: error.to_string(),
        },
    }
}
