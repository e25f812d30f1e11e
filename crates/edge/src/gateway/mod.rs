//! The API gateway, in the manner of Netflix's Zuul 2: a chain of filters around a
//! proxy endpoint, routes by path prefix to services found through discovery, the
//! kit's resilience stack per route, static JSON errors, and a Hystrix-style view
//! of every route at `GET /admin/routes`.
//!
//! ```text
//! request ─► inbound filters (configured order) ─► endpoint ─► outbound filters ─► answer
//!            trace · body_limit · auth ·             │ no route: 404 static
//!            rate_limit · priority                   │ route: [fallback →] retry → breaker
//!            (a refusal = static answer, skips       │        → timeout → bulkhead → upstream
//!             the rest and the endpoint)             ▼
//!                                         response_headers · metrics (every answer)
//! ```
//!
//! | module | what it is |
//! |---|---|
//! | [`config`] | [`GatewayConfig`]: routes, filter chain, limits, JWT and API keys; validation naming the dotted key |
//! | [`routes`] | the prefix matcher, path hygiene and the upstream path (pure, fuzzed) |
//! | [`auth`] | bearer JWTs (HS256: [`TokenIssuer`] for the user service, [`TokenVerifier`] here) and API keys |
//! | [`filters`] | the filter traits, the chain and the built-in filters by name |
//! | [`endpoint`] | a route and its stack; the gateway core ([`Gateway::handle`]) |
//! | [`proxy`] | the upstream call (hyper, streaming responses) and the proxy header rules |
//! | [`errors`] | the static JSON errors and how a failed call maps to one |
//! | [`stats`], [`admin`] | each route's rolling window and the `/admin/routes` view |
//! | [`service`] | [`GatewayService`], the platform's factory |
//!
//! # Guarantees, and their bounds
//!
//! - Every answer the gateway makes itself is JSON `{"error", "code"}` with the
//!   status [`errors`] lists; upstream answers pass through with hop-by-hop headers
//!   removed.
//! - Memory per request is bounded: the head by hyper's limits, the body by
//!   `body_limit` (read before the call so an attempt can be retried), the path by
//!   [`routes::MAX_PATH_BYTES`], tokens and API keys by their own limits. Requests
//!   at once are bounded by the listener's connection cap and, per route, by the
//!   bulkhead. State that grows with clients (the rate limiter) is pruned.
//! - Retries only for idempotent requests, within the route's retry budget.
//! - Time-driven rules (token expiry, rate limits, breakers, the admin window) run
//!   on the injected clock.
//!
//! Not guaranteed: TLS (terminate it in front), WebSocket upgrades, HTTP/2, and a
//! timeout on a response body once its head has arrived.

pub mod admin;
pub mod auth;
pub mod config;
pub mod endpoint;
pub mod errors;
pub mod filters;
#[doc(hidden)]
pub mod fuzzing;
pub mod proxy;
pub mod routes;
pub mod service;
pub mod stats;

pub use self::auth::{
    ApiKeys, Claims, Identity, JwtKey, TokenIssuer, TokenVerifier, generate_secret, hash_secret,
};
pub use self::config::{AuthMode, FallbackConfig, GatewayConfig, RouteConfig};
pub use self::endpoint::{Gateway, Route};
pub use self::errors::{ErrorCode, GatewayError};
pub use self::service::GatewayService;
