//! `GET /admin/routes`: each route's health as a Hystrix dashboard shows it — rate,
//! error percentage, latency percentiles, breaker state, bulkhead use — as JSON.
//!
//! Read-only and holding no secret (no credentials, no addresses of instances), so
//! it is served without authentication beside `/health` and `/metrics`; put the
//! gateway's admin paths behind a network boundary where that matters.

use std::time::Duration;

use casebook_kit::resilience::Priority;
use casebook_kit::resilience::breaker::BreakerStats;
use serde::Serialize;

use super::config::AuthMode;
use super::endpoint::{Gateway, Route};
use super::routes::Target;
use super::stats::{WINDOW, WindowView};

/// The whole view.
#[derive(Debug, Clone, Serialize)]
pub struct AdminView {
    pub gateway: String,
    pub window_seconds: u64,
    pub filters: FiltersView,
    pub routes: Vec<RouteView>,
    /// Requests no route covered (answered 404 `no_route`, or refused before).
    pub unrouted: WindowView,
}

#[derive(Debug, Clone, Serialize)]
pub struct FiltersView {
    pub inbound: Vec<&'static str>,
    pub outbound: Vec<&'static str>,
}

/// One route.
#[derive(Debug, Clone, Serialize)]
pub struct RouteView {
    pub name: String,
    pub prefix: String,
    /// `service:<name>` or `url:<base>`.
    pub target: String,
    pub auth: AuthMode,
    pub priority: Priority,
    #[serde(rename = "timeout_ms", with = "casebook_kit::api::duration_ms")]
    pub timeout: Duration,
    pub retries: u32,
    #[serde(flatten)]
    pub window: WindowView,
    /// The kit's breaker view: state, its own window's counts, error %, latency.
    pub breaker: BreakerStats,
    pub bulkhead: BulkheadView,
    pub has_fallback: bool,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct BulkheadView {
    pub in_use: usize,
    pub max: usize,
}

impl RouteView {
    fn of(route: &Route) -> Self {
        let config = route.config();
        Self {
            name: route.name().to_owned(),
            prefix: config.prefix.clone(),
            target: match route.target() {
                Target::Service(service) => format!("service:{service}"),
                Target::Url {
                    authority,
                    base_path,
                } => format!("url:http://{authority}{base_path}"),
            },
            auth: config.auth,
            priority: config.priority,
            timeout: config.timeout,
            retries: config.retries,
            window: route.stats().view(),
            breaker: route.breaker().stats(),
            bulkhead: BulkheadView {
                in_use: route.bulkhead().in_flight(),
                max: route.bulkhead().config().max_concurrent,
            },
            has_fallback: config.fallback.is_some(),
        }
    }
}

impl AdminView {
    /// The view of `gateway` now. Routes in name order.
    pub fn of(gateway: &Gateway) -> Self {
        let (inbound, outbound) = gateway.chain().names();
        let mut routes: Vec<RouteView> = gateway.routes().map(|r| RouteView::of(r)).collect();
        routes.sort_by(|a, b| a.name.cmp(&b.name));
        Self {
            gateway: gateway.name().to_owned(),
            window_seconds: WINDOW.as_secs(),
            filters: FiltersView { inbound, outbound },
            routes,
            unrouted: gateway.unrouted().view(),
        }
    }
}
