//! The regional refusal: while its region is evacuated (Chaos Kong, or an
//! operator's region override in discovery), a replica answers every request but
//! `/health` and `/metrics` with `503`, `Retry-After` and a JSON body naming its
//! region and a replica serving in another region, so clients fail over.
//!
//! The replica learns it from the platform's flag for its region
//! ([`casebook_kit::runtime::InstanceContext::region_evacuated`]), the one the
//! control plane's discovery keeps equal to the region override.
//!
//! The body (`code` is always [`REFUSAL_CODE`]):
//!
//! ```json
//! {"error": "region eu-west is evacuated: send requests to another region's replica",
//!  "code": "region_evacuated", "region": "eu-west",
//!  "serving": {"region": "us-east", "url": "http://127.0.0.1:8090"}}
//! ```
//!
//! **Guaranteed**: while the flag is set no request but `/health` and `/metrics`
//! reaches the API (so nothing is written in an evacuated region); the named
//! replica is in another region whose flag is clear: the nearest `UP` one in
//! discovery (asked every [`DISCOVERY_REFRESH`] while evacuated, off the request
//! path), else one this process started (the case's own regional replicas).
//! **Not guaranteed**: that the named replica is alive (discovery's view is
//! seconds old); `serving` is `null` when no other region serves. A ride picked up
//! in the evacuated region is still refused by the other region's replica (421):
//! failing over moves reads, pings and rides of other regions, not the region's own
//! rides.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use casebook_kit::resolve::Resolver;
use casebook_kit::runtime::{Evacuations, InstanceContext};
use casebook_kit::topology::Placement;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The `Retry-After` of a regional refusal, in seconds.
pub const RETRY_AFTER_SECS: u64 = 5;
/// The `code` of a regional refusal's body.
pub const REFUSAL_CODE: &str = "region_evacuated";
/// How often an evacuated replica asks discovery for a serving one.
pub const DISCOVERY_REFRESH: Duration = Duration::from_secs(1);
/// Routes a regional refusal leaves alone.
const UNTOUCHED: [&str; 2] = ["/health", "/metrics"];

/// Region → the HTTP address of the replica this process started there.
pub type LocalReplicas = Arc<Mutex<BTreeMap<String, SocketAddr>>>;

/// One replica's regional refusal. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RegionalRefusal {
    region: String,
    evacuated: watch::Receiver<bool>,
    evacuations: Evacuations,
    /// The last serving replica discovery named, by region.
    discovered: Arc<Mutex<Option<(String, SocketAddr)>>>,
    local: LocalReplicas,
}

impl RegionalRefusal {
    /// The refusal of the instance `ctx`, falling back to the replicas in `local`.
    pub fn new(ctx: &InstanceContext, local: LocalReplicas) -> Self {
        Self {
            region: ctx.info().region,
            evacuated: ctx.region_evacuated(),
            evacuations: ctx.evacuations().clone(),
            discovered: Arc::default(),
            local,
        }
    }

    fn serves(&self, region: &str) -> bool {
        region != self.region && !self.evacuations.is_evacuated(region)
    }

    /// A replica serving in another region: discovery's, else a local one.
    pub fn serving(&self) -> Option<(String, SocketAddr)> {
        let discovered = self.discovered.lock().clone();
        discovered
            .filter(|(region, _)| self.serves(region))
            .or_else(|| {
                self.local
                    .lock()
                    .iter()
                    .find(|(region, _)| self.serves(region))
                    .map(|(region, addr)| (region.clone(), *addr))
            })
    }

    /// Wraps `router`: refused while the region is evacuated.
    pub fn layer(self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn(
            move |request: Request<Body>, next: Next| {
                let refusal = self.clone();
                async move {
                    if !*refusal.evacuated.borrow() || UNTOUCHED.contains(&request.uri().path()) {
                        return next.run(request).await;
                    }
                    metrics::counter!("uber_regional_refusals_total").increment(1);
                    refusal_response(&refusal.region, refusal.serving())
                }
            },
        ))
    }

    /// While the region is evacuated, asks discovery every [`DISCOVERY_REFRESH`]
    /// for the nearest `UP` replica in a serving region; until `shutdown`.
    pub async fn follow_discovery(
        self,
        resolver: Arc<Resolver>,
        service: &'static str,
        near: Placement,
        shutdown: CancellationToken,
    ) {
        let mut evacuated = self.evacuated.clone();
        let mut tick = tokio::time::interval(DISCOVERY_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !*evacuated.borrow_and_update() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = evacuated.changed() => if changed.is_err() { return },
                }
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let found = match resolver.all(service, &near).await {
                Ok(all) => all
                    .into_iter()
                    .find(|(_, placement)| self.serves(&placement.region))
                    .map(|(addr, placement)| (placement.region, addr)),
                Err(error) => {
                    tracing::debug!(%error, "no serving replica from discovery");
                    None
                }
            };
            *self.discovered.lock() = found;
        }
    }
}

/// The body of a regional refusal of `region`, naming `serving`.
pub fn refusal_body(region: &str, serving: Option<(String, SocketAddr)>) -> Value {
    json!({
        "error": format!("region {region} is evacuated: send requests to another region's replica"),
        "code": REFUSAL_CODE,
        "region": region,
        "serving": serving.map(|(region, addr)| json!({
            "region": region,
            "url": format!("http://{addr}"),
        })),
    })
}

fn refusal_response(region: &str, serving: Option<(String, SocketAddr)>) -> Response {
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(refusal_body(region, serving)),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    response
}

/// Whether an answer's body is a regional refusal (for clients: the load
/// generator counts these apart from other 503s).
pub fn is_refusal(body: &str) -> bool {
    serde_json::from_str::<Value>(body)
        .ok()
        .is_some_and(|v| v["code"] == REFUSAL_CODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_names_the_region_and_a_serving_replica() {
        let body = refusal_body(
            "eu-west",
            Some(("us-east".into(), "127.0.0.1:8090".parse().unwrap())),
        );
        assert_eq!(body["code"], REFUSAL_CODE);
        assert_eq!(body["region"], "eu-west");
        assert_eq!(body["serving"]["region"], "us-east");
        assert_eq!(body["serving"]["url"], "http://127.0.0.1:8090");
        assert!(is_refusal(&body.to_string()));
        assert!(refusal_body("eu-west", None)["serving"].is_null());
        assert!(!is_refusal(r#"{"error": "too many rides"}"#));
        assert!(!is_refusal("not json"));
    }
}
