//! The endpoint: a route with its resilience stack, and the gateway core that runs
//! the filter chain around it.
//!
//! Per route, outside in (the kit's [`StackBuilder`], its one right order):
//! `[fallback →] retry (budget) → circuit breaker → timeout → bulkhead → upstream`.
//!
//! Guarantees:
//! - the request body is read into memory before the call, at most `body_limit`
//!   bytes (more is 413 `body_too_large`), so an attempt can be retried; memory per
//!   request is bounded by the limit, and requests by the listener's connection cap;
//! - only idempotent requests are retried: GET, HEAD, PUT, DELETE and OPTIONS, and a
//!   POST or PATCH only when it carries an `Idempotency-Key` (its upstream promises
//!   to apply it once); a retry goes through the breaker and bulkhead again, and
//!   the route's retry budget bounds retries under failure;
//! - a route's fallback answers only GET and HEAD: a static body in place of a
//!   write's result would claim a write that never happened. A fallback answer
//!   carries `x-gateway-fallback: <reason>`;
//! - every request is counted in its route's window ([`super::stats`]) and its
//!   outcome passed to the outbound filters, whatever ended it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use casebook_kit::clock::SharedClock;
use casebook_kit::resilience::breaker::{BreakerRegistry, CircuitBreaker};
use casebook_kit::resilience::bulkhead::{Bulkhead, BulkheadConfig};
use casebook_kit::resilience::fallback::FallbackLayer;
use casebook_kit::resilience::retry::RetryConfig;
use casebook_kit::resilience::stack::{ResilienceConfig, StackBuilder, TimeoutConfig};
use casebook_kit::resilience::{BoxError, mark_idempotent};
use casebook_kit::resolve::Resolver;
use casebook_kit::topology::Placement;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

use super::auth::Identity;
use super::config::{GatewayConfig, RouteConfig};
use super::errors::{ErrorCode, Failure, GatewayError};
use super::filters::{FilterChain, Outcome, RequestContext};
use super::proxy::{FALLBACK_HEADER, FallbackServed, ProxyClient, Upstream, forward_headers};
use super::routes::{RouteTable, Target, clean_path, upstream_path};
use super::stats::RouteStats;

/// A route's stack as one type, whatever its layers.
pub type RouteService = BoxCloneSyncService<Request<Bytes>, Response<Body>, BoxError>;

/// What a route's stack is built from.
#[derive(Debug, Clone)]
pub struct RouteDeps {
    pub client: ProxyClient,
    pub resolver: Arc<Resolver>,
    /// Where the gateway runs: discovery answers nearest to it first.
    pub near: Placement,
    pub clock: SharedClock,
    /// Where the routes' breakers live (and are found by name: the route's).
    pub breakers: BreakerRegistry,
}

/// One route, ready to serve.
pub struct Route {
    config: RouteConfig,
    name: Arc<str>,
    target: Target,
    stack: RouteService,
    with_fallback: Option<RouteService>,
    breaker: CircuitBreaker,
    bulkhead: Bulkhead,
    stats: RouteStats,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("name", &self.name)
            .field("prefix", &self.config.prefix)
            .finish_non_exhaustive()
    }
}

impl Route {
    /// The route of a validated `config`.
    pub fn build(config: &RouteConfig, deps: &RouteDeps) -> anyhow::Result<Self> {
        let name: Arc<str> = config.name.as_str().into();
        let target = match (&config.service, &config.url) {
            (Some(service), _) => Target::Service(service.clone()),
            (None, Some(url)) => Target::parse_url(url).map_err(anyhow::Error::msg)?,
            (None, None) => anyhow::bail!("route `{name}` has neither a service nor a url"),
        };
        let retry = RetryConfig {
            max_attempts: config.retries + 1,
            backoff_base: config.retry_backoff,
            // A Retry-After beyond this ends the retries: a gateway does not hold
            // its caller for long.
            backoff_cap: config.retry_backoff * 16,
            ..RetryConfig::default()
        };
        let resilience = ResilienceConfig {
            timeout: TimeoutConfig {
                default: config.timeout,
                routes: Vec::new(),
            },
            breaker: config.breaker.clone(),
            bulkhead: BulkheadConfig {
                max_concurrent: config.max_concurrent,
                max_queue: 0,
            },
            retry,
        };
        let bulkhead = Bulkhead::new(resilience.bulkhead).map_err(|e| anyhow::anyhow!("{e}"))?;
        let upstream = Upstream::new(
            target.clone(),
            deps.client.clone(),
            deps.resolver.clone(),
            deps.near.clone(),
            deps.clock.clone(),
        );
        let (stack, breaker) = StackBuilder::new(config.name.clone(), resilience)
            .registry(deps.breakers.clone())
            .with_bulkhead(bulkhead.clone())
            .build(upstream)
            .map_err(|e| anyhow::anyhow!("route `{name}`: {e}"))?;
        let with_fallback = config.fallback.as_ref().map(|fallback| {
            let status = StatusCode::from_u16(fallback.status).unwrap_or(StatusCode::OK);
            let body = Bytes::from(fallback.body.to_string());
            let route = name.clone();
            let answer = move |error: BoxError| {
                let reason = Failure::of(&route, &error).label();
                let mut response = Response::new(Body::from(body.clone()));
                *response.status_mut() = status;
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                headers.insert(FALLBACK_HEADER, HeaderValue::from_static(reason));
                response.extensions_mut().insert(FallbackServed(reason));
                std::future::ready(Ok::<_, BoxError>(response))
            };
            BoxCloneSyncService::new(FallbackLayer::new(&config.name, answer).layer(stack.clone()))
        });
        Ok(Self {
            config: config.clone(),
            name,
            target,
            stack: BoxCloneSyncService::new(stack),
            with_fallback,
            breaker,
            bulkhead,
            stats: RouteStats::new(deps.clock.clone()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &RouteConfig {
        &self.config
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    pub fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }

    pub fn stats(&self) -> &RouteStats {
        &self.stats
    }
}

/// Whether a request may be sent twice (the module docs say which).
pub fn is_idempotent(method: &Method, headers: &http::HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    ) || headers.contains_key("idempotency-key")
}

/// The gateway's core: its routes and filter chain, apart from any listener.
#[derive(Debug)]
pub struct Gateway {
    name: String,
    routes: RouteTable<Arc<Route>>,
    chain: FilterChain,
    /// Requests no route covers.
    unrouted: RouteStats,
    body_limit: usize,
    clock: SharedClock,
}

/// One answer and how it came about.
struct Served {
    response: Response<Body>,
    label: &'static str,
    reached_endpoint: bool,
    upstream_failed: bool,
}

impl Served {
    fn refused(error: &GatewayError) -> Self {
        Self {
            response: error.to_response(),
            label: error.code.as_str(),
            reached_endpoint: false,
            upstream_failed: false,
        }
    }
}

impl Gateway {
    /// The gateway of a validated `config`.
    pub fn new(
        config: &GatewayConfig,
        chain: FilterChain,
        deps: &RouteDeps,
    ) -> anyhow::Result<Self> {
        let routes = config
            .routes
            .iter()
            .map(|r| Ok((r.prefix.clone(), Arc::new(Route::build(r, deps)?))))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            name: config.service.clone(),
            routes: RouteTable::new(routes),
            chain,
            unrouted: RouteStats::new(deps.clock.clone()),
            body_limit: usize::try_from(config.body_limit).unwrap_or(usize::MAX),
            clock: deps.clock.clone(),
        })
    }

    /// The gateway's service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The routes, longest prefix first.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter().map(|(_, r)| r)
    }

    /// The filter chain.
    pub fn chain(&self) -> &FilterChain {
        &self.chain
    }

    /// Statistics of requests no route covered.
    pub fn unrouted(&self) -> &RouteStats {
        &self.unrouted
    }

    /// Serves one request from `peer`: inbound filters, endpoint, outbound filters.
    pub async fn handle(&self, request: Request<Body>, peer: SocketAddr) -> Response<Body> {
        let received = self.clock.now();
        let (head, body) = request.into_parts();
        let mut ctx = RequestContext {
            head,
            peer,
            route: None,
            identity: Identity::Anonymous,
            received,
        };
        let served = match clean_path(ctx.head.uri.path()) {
            Err(why) => Served::refused(&GatewayError::new(ErrorCode::BadRequest, why.to_string())),
            Ok(()) => {
                ctx.route = self
                    .routes
                    .find(ctx.head.uri.path())
                    .map(|(_, r)| r.clone());
                match self.chain.inbound(&mut ctx) {
                    Err(refusal) => Served::refused(&refusal),
                    Ok(()) => self.endpoint(&mut ctx, body).await,
                }
            }
        };
        let Served {
            mut response,
            label,
            reached_endpoint,
            upstream_failed,
        } = served;
        let route = ctx.route.take();
        let outcome = Outcome {
            route: route
                .as_ref()
                .map_or_else(|| Arc::from("no_route"), |r| r.name.clone()),
            status: response.status(),
            label,
            reached_endpoint,
            upstream_failed,
            elapsed: self.clock.now().saturating_duration_since(received),
        };
        self.chain.outbound(&outcome, &mut response);
        route
            .as_ref()
            .map_or(&self.unrouted, |r| &r.stats)
            .record(&outcome);
        response
    }

    async fn endpoint(&self, ctx: &mut RequestContext, body: Body) -> Served {
        let Some(route) = ctx.route.clone() else {
            return Served::refused(&GatewayError::new(
                ErrorCode::NoRoute,
                format!("no route for {}", ctx.head.uri.path()),
            ));
        };
        let body = match Limited::new(body, self.body_limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) if error.is::<LengthLimitError>() => {
                return Served::refused(&GatewayError::new(
                    ErrorCode::BodyTooLarge,
                    format!("the body is over the {} byte limit", self.body_limit),
                ));
            }
            Err(_) => {
                return Served::refused(&GatewayError::new(
                    ErrorCode::BadRequest,
                    "the request body could not be read",
                ));
            }
        };
        // The filters are done with the head: it goes upstream as it is now.
        let mut head = std::mem::replace(&mut ctx.head, Request::new(()).into_parts().0);
        let base_path = match &route.target {
            Target::Url { base_path, .. } => base_path.as_str(),
            Target::Service(_) => "",
        };
        let path_and_query = head.uri.path_and_query().map_or("/", |p| p.as_str());
        let path = upstream_path(
            &route.config.prefix,
            route.config.strip_prefix,
            base_path,
            path_and_query,
        );
        head.uri = match Uri::try_from(path) {
            Ok(uri) => uri,
            Err(_) => {
                return Served::refused(&GatewayError::new(
                    ErrorCode::BadRequest,
                    "the path cannot be forwarded",
                ));
            }
        };
        forward_headers(&mut head.headers, ctx.peer, &ctx.identity);
        let safe = matches!(head.method, Method::GET | Method::HEAD);
        let idempotent = is_idempotent(&head.method, &head.headers);
        let mut request = Request::from_parts(head, body);
        if idempotent {
            mark_idempotent(&mut request);
        }
        let service = match (&route.with_fallback, safe) {
            (Some(with_fallback), true) => with_fallback.clone(),
            _ => route.stack.clone(),
        };
        match service.oneshot(request).await {
            Ok(response) => {
                let fallback = response.extensions().get::<FallbackServed>().is_some();
                Served {
                    response,
                    label: if fallback { "fallback" } else { "ok" },
                    reached_endpoint: true,
                    upstream_failed: fallback,
                }
            }
            Err(error) => {
                let failure = Failure::of(&route.name, &error);
                Served {
                    response: failure.to_response(),
                    label: failure.label(),
                    reached_endpoint: true,
                    upstream_failed: true,
                }
            }
        }
    }
}
