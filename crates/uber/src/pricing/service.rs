//! The `pricing` service: the surge engine and the tariff behind HTTP.
//!
//! Routes (JSON; every bad request a 400 naming the field, as `casebook_kit::api`):
//! - `POST /v1/signals` `{"signals":[{"kind":"demand","lat":…,"lon":…},
//!   {"kind":"supply","driver":7,"lat":…,"lon":…}, {"kind":"supply_gone","driver":7}]}`
//!   → [`SignalReport`]. The batch is validated whole before any of it is
//!   applied; more than `max_batch` signals → 413.
//! - `GET /v1/multiplier?lat=…&lon=…` → [`CellSurge`].
//! - `POST /v1/quote` `{"pickup":{"lat","lon"},"dropoff":{"lat","lon"}}` → [`Quote`]
//!   (`fallback` is always false here; only the client sets it).
//!
//! Each instance has its own engine, created empty at start, on the instance's
//! clock: a killed and restarted instance prices flat until signals come again,
//! as a crashed process would. Once a bucket a task in the instance's group
//! expires silent drivers and evicts idle cells.
//!
//! Deliberately absent: server-side load shedding (pricing is cheap and its
//! callers have a timeout and a fallback), authentication, persistence.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use casebook_kit::api::{ApiError, JsonBody};
use casebook_kit::runtime::{BoxFuture, InstanceContext, ServiceFactory, StartError, serve_http};

use super::quote::{Pricing, Quote};
use super::surge::{CellSurge, SignalReport, Surge};
use super::{PricingConfig, QuoteRequest, SignalsRequest, lat_lng};

/// The service's name: it carries the case, since another case's pricing could
/// run on the same platform.
pub const PRICING_SERVICE: &str = "uber-pricing";

/// The `uber-pricing` service factory.
#[derive(Debug, Clone)]
pub struct PricingService {
    config: PricingConfig,
}

impl PricingService {
    /// A factory for instances configured by `config` (validated here).
    pub fn new(config: PricingConfig) -> Result<Self, String> {
        config.validate()?;
        Ok(Self { config })
    }

    /// A fresh engine on `clock`, as each instance gets at start.
    pub fn engine(&self, clock: casebook_kit::clock::SharedClock) -> Arc<Pricing> {
        let surge =
            Surge::new(self.config.surge.clone(), clock).expect("the configuration was validated");
        Arc::new(
            Pricing::new(
                Arc::new(surge),
                self.config.tariff.clone(),
                self.config.quote_ttl,
            )
            .expect("the configuration was validated"),
        )
    }
}

#[derive(Debug, Clone)]
struct AppState {
    pricing: Arc<Pricing>,
    max_batch: usize,
}

/// The service's routes over `pricing`, refusing batches above `max_batch`.
pub fn router(pricing: Arc<Pricing>, max_batch: usize) -> Router {
    Router::new()
        .route("/v1/signals", post(signals))
        .route("/v1/multiplier", get(multiplier))
        .route("/v1/quote", post(quote))
        .with_state(AppState { pricing, max_batch })
}

async fn signals(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<SignalsRequest>,
) -> Result<Json<SignalReport>, ApiError> {
    if body.signals.len() > state.max_batch {
        return Err(ApiError {
            field: Some("signals".into()),
            ..ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "{} signals in one batch; at most {}",
                    body.signals.len(),
                    state.max_batch
                ),
            )
        });
    }
    let signals = body
        .signals
        .iter()
        .enumerate()
        .map(|(i, s)| s.validate(&format!("signals[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(state.pricing.surge().record(&signals)))
}

async fn multiplier(
    State(state): State<AppState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<CellSurge>, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if let Some(unknown) = params.keys().find(|k| *k != "lat" && *k != "lon") {
        return Err(ApiError::bad_field(
            unknown.clone(),
            "unknown query parameter; expected lat and lon",
        ));
    }
    let number = |name: &str| -> Result<f64, ApiError> {
        let raw = params.get(name).ok_or_else(|| {
            ApiError::bad_field(name, format!("missing query parameter `{name}`"))
        })?;
        raw.trim()
            .parse::<f64>()
            .map_err(|_| ApiError::bad_field(name, format!("`{raw}` is not a number")))
    };
    let at = lat_lng(number("lat")?, number("lon")?, str::to_owned)?;
    Ok(Json(state.pricing.surge().multiplier(at)))
}

async fn quote(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<QuoteRequest>,
) -> Result<Json<Quote>, ApiError> {
    let pickup = body.pickup.validate("pickup")?;
    let dropoff = body.dropoff.validate("dropoff")?;
    state
        .pricing
        .quote(pickup, dropoff)
        .map(Json)
        .map_err(|e| ApiError::bad_field(e.field(), e.to_string()))
}

/// Expires silent drivers and evicts idle cells once a bucket, until the
/// instance stops.
async fn maintain(pricing: Arc<Pricing>, shutdown: tokio_util::sync::CancellationToken) {
    let every = pricing.surge().config().bucket;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticks.tick() => pricing.surge().maintain(),
        }
    }
}

impl ServiceFactory for PricingService {
    fn name(&self) -> &str {
        PRICING_SERVICE
    }

    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            let pricing = self.engine(ctx.clock().clone());
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            ctx.spawn(maintain(pricing.clone(), ctx.shutdown_token()));
            serve_http(ctx, listener, router(pricing, self.config.max_batch));
            Ok(address)
        })
    }
}
