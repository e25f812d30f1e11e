//! The Uber HTTP API: location ingest, ride requests and offers, trip commands
//! and read models behind one axum router over the case's [`Engine`]
//! ([`crate::engine`]); [`crate::service`] serves it and runs the timers.
//!
//! | route | does |
//! |---|---|
//! | `POST /v1/drivers/{id}/location` | one ping `{lat, lon, ts, status}` (low priority) |
//! | `POST /v1/locations` | a batch `{updates: [{driver, lat, lon, ts, status}]}` (low priority) |
//! | `POST /v1/quote` | `{pickup, dropoff}` → the pricing quote (`fallback: true` while pricing is down) |
//! | `POST /v1/rides` | `{rider, pickup, dropoff, mode}` → 201 `{ride, quote, …}` (critical) |
//! | `GET /v1/rides/{id}` | the ride's status (and its trip once accepted) |
//! | `POST /v1/rides/{id}/accept` · `/decline` | the offered driver answers `{driver}` |
//! | `POST /v1/trips/{id}/{arrived,start,complete,cancel,pay}` | trip commands |
//! | `GET /v1/trips/{id}` · `/v1/riders/{id}/trips?limit=N` · `/v1/drivers/{id}/earnings` · `/v1/city` | read models |
//! | `GET /v1/drivers/{id}` | a driver's latest state (with regions: local or learned by gossip, and its region) |
//! | `GET /v1/regions` | with regions: this replica's region, cities, members, reachability, gossip counters |
//! | `POST /v1/admin/partition` | with regions: `{isolate: bool}` cuts this replica's gossip off (chaos) or heals it |
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | the router and the route priorities |
//! | `locations` · `rides` · `trips` · `drivers` · `regions` | the routes of one resource each |
//! | `wire` | the shared wire types (statuses, batch records, ride and trip views) |
//! | `errors` | engine errors → HTTP statuses, path ids, body refusals |
//!
//! # Guarantees
//! - **Shedding by priority**: pings are `low`, ride requests `critical`, the rest
//!   `normal` (an `x-priority` header cannot raise a ping); under overload pings get
//!   503 + `Retry-After` first (the kit's [`LoadShedLayer`]), an `x-deadline-ms`
//!   already passed gets 504 without running.
//! - **Precise errors**, always the kit's JSON error format
//!   ([`casebook_kit::api::ApiError`]): 400 naming the field (bad JSON, an unknown
//!   field — in a batch record too —, NaN or out-of-range coordinates, a
//!   server-owned status, a timestamp beyond the clock skew, a `limit` out of
//!   range), 404 for unknown rides, trips, riders and drivers, 409 for illegal
//!   transitions and stale offers, 413 over the batch limit or the body limit.
//! - **Bounded work per request**: a batch holds at most `max_batch` updates (its
//!   body at most 256 bytes each), other bodies at most 1 MiB (the kit's
//!   [`DEFAULT_BODY_LIMIT`]; trip commands: axum's 2 MiB), a rider's trip list at
//!   most [`MAX_TRIPS_PAGE`] trips.
//! - **Durations** on the wire are whole milliseconds named `*_ms` (`eta_ms`).
//!
//! # Deliberately absent
//! - Authentication (a driver may only move itself).

use std::sync::Arc;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::Request;
use axum::routing::{get, post};
use casebook_kit::api::DEFAULT_BODY_LIMIT;
use casebook_kit::resilience::shed::{LoadShedLayer, RequestMetaLayer, handle_error};
use casebook_kit::resilience::{Priority, set_priority};
use tower::ServiceBuilder;
use tower::util::MapRequestLayer;

pub use crate::engine::{
    ApiConfig, Engine, IngestReport, Invalid, LOCATIONS_TOPIC, RideQuote, UPDATES_PER_RECORD,
};
pub use trips::{DEFAULT_TRIPS_PAGE, MAX_TRIP_DISTANCE_M, MAX_TRIPS_PAGE};
pub use wire::{LocationRecord, StatusName};

mod drivers;
pub(crate) mod errors;
mod locations;
mod regions;
mod rides;
mod trips;
mod wire;

pub(crate) type Shared = State<Arc<Engine>>;

/// Every route of the API, behind the priority shedder.
pub fn router(engine: Arc<Engine>) -> Router {
    let batch_body = engine
        .config
        .max_batch
        .saturating_mul(256)
        .max(DEFAULT_BODY_LIMIT);
    let shed = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(handle_error))
        .layer(RequestMetaLayer::new(engine.clock.clone()))
        .layer(MapRequestLayer::new(route_priority))
        .layer(LoadShedLayer::shared(engine.shedder.clone()));
    Router::new()
        .route("/v1/drivers/{id}/location", post(locations::post_location))
        .route(
            "/v1/locations",
            post(locations::post_locations).layer(DefaultBodyLimit::max(batch_body)),
        )
        .route("/v1/quote", post(rides::post_quote))
        .route("/v1/rides", post(rides::post_ride))
        .route("/v1/rides/{id}", get(rides::get_ride))
        .route("/v1/rides/{id}/{action}", post(rides::ride_action))
        .route("/v1/trips/{id}", get(trips::get_trip))
        .route("/v1/trips/{id}/{action}", post(trips::trip_action))
        .route("/v1/riders/{id}/trips", get(trips::rider_trips))
        .route("/v1/drivers/{id}", get(drivers::get_driver))
        .route("/v1/drivers/{id}/earnings", get(drivers::driver_earnings))
        .route("/v1/regions", get(regions::get_regions))
        .route("/v1/admin/partition", post(regions::post_partition))
        .route("/v1/city", get(trips::city))
        .layer(shed)
        .with_state(engine)
}

/// The route decides the priority: pings are low (the next ping supersedes a
/// shed one), ride requests critical; elsewhere the `x-priority` header stands.
fn route_priority<B>(mut request: Request<B>) -> Request<B> {
    let path = request.uri().path();
    let is_post = request.method() == axum::http::Method::POST;
    let priority = if is_post && (path == "/v1/locations" || path.ends_with("/location")) {
        Some(Priority::Low)
    } else if is_post && path == "/v1/rides" {
        Some(Priority::Critical)
    } else {
        None
    };
    if let Some(p) = priority {
        set_priority(&mut request, p);
    }
    request
}
