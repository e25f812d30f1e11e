//! The filter chain, in the manner of Zuul 2: **inbound** filters run on the
//! request head in their configured order, then the **endpoint** (the proxy, or a
//! static answer), then **outbound** filters on whatever answer came out.
//!
//! As in Zuul, an inbound filter may end the request with a static response (a
//! [`GatewayError`]): the remaining inbound filters and the endpoint are skipped,
//! and the outbound filters still run on the static answer, so every answer gets
//! the same response headers and is counted the same way.
//!
//! Filters are built-in and chosen **by name** from the configuration
//! (`filters.inbound`, `filters.outbound`); the order is the configuration's.
//! They are synchronous and do no I/O: each looks at the head, maybe edits it,
//! and returns, so the chain costs microseconds and cannot stall.
//!
//! | inbound | what it does |
//! |---|---|
//! | `trace` | sets the upstream `x-request-id` and a child `traceparent` from the request's trace context |
//! | `body_limit` | refuses a `Content-Length` over the limit with 413 (a body without one is counted while read) |
//! | `auth` | reads the one credential (bearer JWT or API key) as the route's `auth` asks: 401 when it must and cannot |
//! | `rate_limit` | per client (JWT subject, else API key id, else remote IP): 429 + `Retry-After` over the limit |
//! | `priority` | tags the request with its route's priority and reads the caller's `x-deadline-ms` (400 when malformed) |
//!
//! | outbound | what it does |
//! |---|---|
//! | `response_headers` | sets the configured response headers |
//! | `metrics` | counts `casebook_gateway_requests_total{gateway,route,status}` and times `casebook_gateway_request_duration_seconds{gateway,route}` |
//!
//! What no configuration can turn off (it is protocol correctness or security, not
//! policy): hop-by-hop headers are removed both ways; a client's `x-user-id`,
//! `x-client-id` and `x-api-key` never reach an upstream; the body is never read
//! past the body limit; the route's stack and the admin statistics.

mod inbound;
mod outbound;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use casebook_kit::clock::SharedClock;
use http::{Response, StatusCode};

pub use self::inbound::client_key;
use super::auth::{Authenticator, Identity};
use super::config::GatewayConfig;
use super::endpoint::Route;
use super::errors::GatewayError;

/// The names of the built-in inbound filters.
pub const INBOUND_FILTERS: &[&str] = &["trace", "body_limit", "auth", "rate_limit", "priority"];
/// The names of the built-in outbound filters.
pub const OUTBOUND_FILTERS: &[&str] = &["response_headers", "metrics"];

/// One request as the filters see it.
#[derive(Debug)]
pub struct RequestContext {
    /// The head that goes upstream (filters edit its headers and extensions).
    pub head: http::request::Parts,
    /// The caller's address (the TCP peer; `x-forwarded-for` is never trusted).
    pub peer: SocketAddr,
    /// The route whose prefix covers the path, if any.
    pub route: Option<Arc<Route>>,
    /// Who is calling, once `auth` has run.
    pub identity: Identity,
    /// When the gateway got the request, on its clock.
    pub received: Instant,
}

impl RequestContext {
    /// The route's name, or `no_route`.
    pub fn route_name(&self) -> &str {
        self.route.as_deref().map_or("no_route", Route::name)
    }
}

/// How a request ended, for outbound filters and the admin view.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The route's name, or `no_route`.
    pub route: Arc<str>,
    pub status: StatusCode,
    /// `ok`, `fallback`, or the error code (`breaker_open`, `rate_limited`, …).
    pub label: &'static str,
    /// Whether the request reached the endpoint (was not refused by a filter).
    pub reached_endpoint: bool,
    /// Whether the upstream call failed (whether or not a fallback answered).
    pub upstream_failed: bool,
    /// From arrival to the response head.
    pub elapsed: Duration,
}

/// A filter on the request head.
pub trait InboundFilter: Send + Sync + fmt::Debug {
    /// Its name in the configuration.
    fn name(&self) -> &'static str;
    /// Looks at (and may edit) the request; an error ends the inbound chain with
    /// that static answer.
    fn apply(&self, request: &mut RequestContext) -> Result<(), GatewayError>;
}

/// A filter on every answer's head (the body streams by untouched).
pub trait OutboundFilter: Send + Sync + fmt::Debug {
    /// Its name in the configuration.
    fn name(&self) -> &'static str;
    fn apply(&self, outcome: &Outcome, response: &mut Response<Body>);
}

/// What the built-in filters are made from.
#[derive(Debug, Clone)]
pub struct FilterDeps {
    pub authenticator: Authenticator,
    pub clock: SharedClock,
}

/// The configured chain, built from the registry of built-in filters.
#[derive(Debug, Clone)]
pub struct FilterChain {
    inbound: Vec<Arc<dyn InboundFilter>>,
    outbound: Vec<Arc<dyn OutboundFilter>>,
}

impl FilterChain {
    /// The chain `config.filters` names (validated: every name is known).
    pub fn build(config: &GatewayConfig, deps: &FilterDeps) -> anyhow::Result<Self> {
        let inbound = config
            .filters
            .inbound
            .iter()
            .map(|name| inbound::build(name, config, deps))
            .collect::<anyhow::Result<_>>()?;
        let outbound = config
            .filters
            .outbound
            .iter()
            .map(|name| outbound::build(name, config))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { inbound, outbound })
    }

    /// Runs the inbound filters in order; the first refusal ends the chain.
    pub fn inbound(&self, request: &mut RequestContext) -> Result<(), GatewayError> {
        self.inbound.iter().try_for_each(|f| f.apply(request))
    }

    /// Runs the outbound filters in order.
    pub fn outbound(&self, outcome: &Outcome, response: &mut Response<Body>) {
        for filter in &self.outbound {
            filter.apply(outcome, response);
        }
    }

    /// The names of the chain, inbound then outbound.
    pub fn names(&self) -> (Vec<&'static str>, Vec<&'static str>) {
        (
            self.inbound.iter().map(|f| f.name()).collect(),
            self.outbound.iter().map(|f| f.name()).collect(),
        )
    }
}
