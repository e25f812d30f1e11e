//! The case's front door: the default `[netflix.gateway]` table, every service of
//! the service plane behind `/api/v1/…` on :8080 (the gateway itself is
//! `casebook_edge::gateway`).
//!
//! | route | prefix | service | auth | priority | fallback |
//! |---|---|---|---|---|---|
//! | `signup` | `/api/v1/signup` | `netflix-users` | none | normal | – |
//! | `login` | `/api/v1/login` | `netflix-users` | none | critical | – |
//! | `account` | `/api/v1/account` | `netflix-users` | required | normal | – |
//! | `profiles` | `/api/v1/profiles` | `netflix-users` | required | normal | – |
//! | `history` | `/api/v1/history` | `netflix-users` | required | low | – |
//! | `titles` | `/api/v1/titles` | `netflix-catalog` | optional | normal | an empty page, flagged |
//! | `home` | `/api/v1/home` | `netflix-recs` | required | normal | the cached popular rows, flagged |
//! | `search` | `/api/v1/search` | `netflix-recs` | optional | low | the cached popular rows, flagged |
//! | `billing` | `/api/v1/billing` | `netflix-billing` | required | critical | – |
//! | `playback` | `/api/v1/playback` | `netflix-playback` | required | critical | – |
//!
//! Paths go upstream unchanged (`strip_prefix = false`): each service serves its
//! public routes under the same `/api/v1/…` paths, and its internal ones under
//! `/internal/v1/…`, which no route reaches. Upstreams learn the caller from
//! `x-user-id` (the token's subject, an account id), set only by the gateway.
//!
//! A route's fallback body may be the string `"popular"`: the case replaces it,
//! at start, with [`crate::recs::popular_fallback`].

use std::time::Duration;

use casebook_edge::gateway::{AuthMode, FallbackConfig, GatewayConfig, RouteConfig};
use casebook_kit::resilience::Priority;
use serde_json::{Value, json};

use crate::billing::BILLING_SERVICE;
use crate::catalog::CATALOG_SERVICE;
use crate::config::NetflixConfig;
use crate::playback::PLAYBACK_SERVICE;
use crate::recs::{RECS_SERVICE, popular_fallback};
use crate::users::USERS_SERVICE;

/// The gateway's service name.
pub const GATEWAY_SERVICE: &str = "netflix-gateway";
/// The fallback body that stands for the case's cached popular rows.
pub const POPULAR_FALLBACK: &str = "popular";

/// The default table: the routes above, the gateway's default filters and limits.
pub fn default_gateway() -> GatewayConfig {
    let route = |name: &str,
                 service: &str,
                 auth: AuthMode,
                 priority: Priority,
                 retries: u32,
                 fallback: Option<Value>| {
        let mut route = RouteConfig::to_service(name, &format!("/api/v1/{name}"), service);
        route.strip_prefix = false;
        route.auth = auth;
        route.priority = priority;
        route.retries = retries;
        route.fallback = fallback.map(|body| FallbackConfig { status: 200, body });
        route
    };
    let popular = || Some(Value::String(POPULAR_FALLBACK.to_owned()));
    let mut login = route(
        "login",
        USERS_SERVICE,
        AuthMode::None,
        Priority::Critical,
        0,
        None,
    );
    // Password hashing is deliberately slow (Argon2id).
    login.timeout = Duration::from_secs(3);
    let mut signup = route(
        "signup",
        USERS_SERVICE,
        AuthMode::None,
        Priority::Normal,
        0,
        None,
    );
    signup.timeout = login.timeout;
    GatewayConfig {
        service: GATEWAY_SERVICE.to_owned(),
        routes: vec![
            signup,
            login,
            route(
                "account",
                USERS_SERVICE,
                AuthMode::Required,
                Priority::Normal,
                1,
                None,
            ),
            route(
                "profiles",
                USERS_SERVICE,
                AuthMode::Required,
                Priority::Normal,
                1,
                None,
            ),
            route(
                "history",
                USERS_SERVICE,
                AuthMode::Required,
                Priority::Low,
                1,
                None,
            ),
            route(
                "titles",
                CATALOG_SERVICE,
                AuthMode::Optional,
                Priority::Normal,
                1,
                Some(json!({ "titles": [], "fallback": true })),
            ),
            route(
                "home",
                RECS_SERVICE,
                AuthMode::Required,
                Priority::Normal,
                1,
                popular(),
            ),
            route(
                "search",
                RECS_SERVICE,
                AuthMode::Optional,
                Priority::Low,
                1,
                popular(),
            ),
            route(
                "billing",
                BILLING_SERVICE,
                AuthMode::Required,
                Priority::Critical,
                2,
                None,
            ),
            route(
                "playback",
                PLAYBACK_SERVICE,
                AuthMode::Required,
                Priority::Critical,
                1,
                None,
            ),
        ],
        ..GatewayConfig::default()
    }
}

/// The configured table with every `"popular"` fallback body replaced by the
/// case's cached popular rows.
pub fn resolved_gateway(config: &NetflixConfig) -> GatewayConfig {
    let mut gateway = config.gateway.clone();
    let mut popular = None;
    for route in &mut gateway.routes {
        if let Some(fallback) = &mut route.fallback
            && fallback.body.as_str() == Some(POPULAR_FALLBACK)
        {
            fallback.body = popular
                .get_or_insert_with(|| popular_fallback(config))
                .clone();
        }
    }
    gateway
}
