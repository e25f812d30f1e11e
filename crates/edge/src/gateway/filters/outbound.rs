//! The built-in outbound filters (the table in the parent module says what each does).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use http::{HeaderMap, HeaderName, HeaderValue, Response};
use parking_lot::RwLock;

use super::{OutboundFilter, Outcome};
use crate::gateway::config::GatewayConfig;

pub(super) fn build(name: &str, config: &GatewayConfig) -> anyhow::Result<Arc<dyn OutboundFilter>> {
    Ok(match name {
        "response_headers" => {
            let mut headers = HeaderMap::new();
            for (name, value) in &config.response_headers {
                headers.insert(
                    HeaderName::try_from(name.as_str())?,
                    HeaderValue::try_from(value.as_str())?,
                );
            }
            Arc::new(ResponseHeaders { headers })
        }
        "metrics" => Arc::new(Metrics {
            gateway: config.service.clone(),
            handles: RwLock::default(),
        }),
        other => anyhow::bail!("unknown outbound filter `{other}`"),
    })
}

/// Sets the configured headers on every answer (over the upstream's own).
#[derive(Debug)]
struct ResponseHeaders {
    headers: HeaderMap,
}

impl OutboundFilter for ResponseHeaders {
    fn name(&self) -> &'static str {
        "response_headers"
    }

    fn apply(&self, _: &Outcome, response: &mut Response<Body>) {
        for (name, value) in &self.headers {
            response.headers_mut().insert(name, value.clone());
        }
    }
}

/// The most (route, status) pairs whose metric handles are kept; past it, handles
/// are looked up in the recorder each time (still counted, just slower).
const MAX_HANDLES: usize = 4096;

/// A (route, status) pair's request counter and its route's latency histogram.
type Handles = (metrics::Counter, metrics::Histogram);

/// Requests per route and status, and their latency per route.
#[derive(Debug)]
struct Metrics {
    gateway: String,
    /// Handles by (route, status): the recorder's lookup, with its label
    /// allocations, happens once per pair instead of once per request.
    handles: RwLock<HashMap<(Arc<str>, u16), Handles>>,
}

impl Metrics {
    fn handles(&self, route: &Arc<str>, status: u16) -> Handles {
        if let Some(h) = self.handles.read().get(&(route.clone(), status)) {
            return h.clone();
        }
        let made = (
            metrics::counter!("casebook_gateway_requests_total",
                "gateway" => self.gateway.clone(), "route" => route.to_string(), "status" => status.to_string()),
            metrics::histogram!("casebook_gateway_request_duration_seconds",
                "gateway" => self.gateway.clone(), "route" => route.to_string()),
        );
        let mut handles = self.handles.write();
        if handles.len() < MAX_HANDLES {
            handles.insert((route.clone(), status), made.clone());
        }
        made
    }
}

impl OutboundFilter for Metrics {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn apply(&self, outcome: &Outcome, _: &mut Response<Body>) {
        let (count, latency) = self.handles(&outcome.route, outcome.status.as_u16());
        count.increment(1);
        latency.record(outcome.elapsed.as_secs_f64());
    }
}
