//! Trip commands and the trip read models: a trip, a rider's trips, the city.

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use casebook_kit::api::{ApiError, parse_json};
use serde::Deserialize;
use serde_json::json;

use super::Shared;
use super::errors::{body_rejection, parse_id, trip_error};
use super::wire::TripOut;
use crate::engine::Engine;
use crate::index::{DriverId, DriverStatus};
use crate::trips::TripStatus;

/// Largest trip distance a `complete` may report (the trip store's own bound).
pub const MAX_TRIP_DISTANCE_M: f64 = 2_000_000.0;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct TripBody {
    /// `complete`: metres driven (the multiplier is the one quoted at request).
    distance_m: Option<f64>,
    /// `cancel`: why.
    reason: Option<String>,
}

pub(super) async fn trip_action(
    State(engine): Shared,
    UrlPath((trip, action)): UrlPath<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // Read by hand because the body is optional (`arrived`, `start`, `pay` need
    // none); a refused body is still answered in the JSON error format.
    let body = body.map_err(body_rejection)?;
    let body: TripBody = if body.iter().all(u8::is_ascii_whitespace) {
        TripBody::default()
    } else {
        parse_json(&body)?
    };
    let (state, _) = engine.trips.load(&trip).await.map_err(trip_error)?;
    if state.status == TripStatus::New {
        return Err(ApiError::not_found(format!("unknown trip {trip}")));
    }
    let trips = &engine.trips;
    match action.as_str() {
        "arrived" => {
            trips.arrived(&trip).await.map_err(trip_error)?;
        }
        "start" => {
            trips.started(&trip).await.map_err(trip_error)?;
            if let Some(driver) = state.driver {
                engine.move_driver(driver, DriverStatus::Dispatched, DriverStatus::OnTrip);
            }
        }
        "complete" => {
            let distance_m = body.distance_m.ok_or_else(|| {
                ApiError::bad_field("distance_m", "complete needs distance_m (metres driven)")
            })?;
            if !(distance_m.is_finite() && (0.0..=MAX_TRIP_DISTANCE_M).contains(&distance_m)) {
                return Err(ApiError::bad_field(
                    "distance_m",
                    format!("distance_m {distance_m} is not in [0, {MAX_TRIP_DISTANCE_M}]"),
                ));
            }
            // The multiplier quoted when the ride was requested, recorded in
            // the trip (so a restart keeps it); a trip from before pricing was
            // called is charged flat.
            let surge = state.quoted_surge.unwrap_or(1.0);
            trips
                .completed(&trip, distance_m, surge)
                .await
                .map_err(trip_error)?;
            release(&engine, &trip, state.driver, false);
        }
        "cancel" => {
            let reason = body.reason.unwrap_or_else(|| "cancelled".to_owned());
            if reason.len() > 256 {
                return Err(ApiError::bad_field("reason", "longer than 256 bytes"));
            }
            trips.cancel(&trip, &reason).await.map_err(trip_error)?;
            release(&engine, &trip, state.driver, true);
        }
        "pay" => {
            trips.paid(&trip).await.map_err(trip_error)?;
        }
        other => {
            return Err(ApiError::not_found(format!(
                "no trip action {other:?} (arrived, start, complete, cancel, pay)"
            )));
        }
    }
    let (state, _) = engine.trips.load(&trip).await.map_err(trip_error)?;
    Ok(axum::Json(TripOut { id: trip, state }).into_response())
}

/// The trip is over for its driver: the claim released, the index status back.
fn release(engine: &Engine, trip: &str, driver: Option<DriverId>, cancelled: bool) {
    if let Some(ride) = engine.ride_of(trip) {
        engine.ride_quotes.lock().remove(&ride);
        let closed = if cancelled {
            engine.matcher.cancel(ride)
        } else {
            engine.matcher.finish(ride)
        };
        if let Err(error) = closed {
            tracing::debug!(%error, "ride already closed");
        }
    }
    if let Some(driver) = driver {
        engine.free_driver(driver);
    }
}

pub(super) async fn get_trip(
    State(engine): Shared,
    UrlPath(trip): UrlPath<String>,
) -> Result<Response, ApiError> {
    let views = engine.views().await?;
    let state = views
        .trip(&trip)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("unknown trip {trip}")))?;
    Ok(axum::Json(TripOut { id: trip, state }).into_response())
}

/// `GET /v1/riders/{id}/trips?limit=N`: the rider's latest `N` trips, oldest
/// first (default [`DEFAULT_TRIPS_PAGE`], at most [`MAX_TRIPS_PAGE`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TripsPage {
    limit: Option<String>,
}

/// Trips `GET /v1/riders/{id}/trips` answers when no `limit` is given.
pub const DEFAULT_TRIPS_PAGE: usize = 100;
/// The largest `limit` of `GET /v1/riders/{id}/trips`: a rider's history grows
/// without bound, one answer does not.
pub const MAX_TRIPS_PAGE: usize = 1_000;

pub(super) async fn rider_trips(
    State(engine): Shared,
    UrlPath(id): UrlPath<String>,
    page: Result<Query<TripsPage>, QueryRejection>,
) -> Result<Response, ApiError> {
    let rider = parse_id("id", &id)?;
    let Query(page) = page.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = match page.limit {
        None => DEFAULT_TRIPS_PAGE,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_TRIPS_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_field(
                    "limit",
                    format!("limit must be in 1..={MAX_TRIPS_PAGE}, not {raw:?}"),
                ));
            }
        },
    };
    let views = engine.views().await?;
    let ids = views.rider_trips(rider);
    if ids.is_empty() {
        return Err(ApiError::not_found(format!("unknown rider {rider}")));
    }
    let total = ids.len();
    let trips: Vec<TripOut> = ids[total.saturating_sub(limit)..]
        .iter()
        .filter_map(|id| {
            views.trip(id).map(|state| TripOut {
                id: id.clone(),
                state: state.clone(),
            })
        })
        .collect();
    Ok(axum::Json(json!({ "rider": rider, "total": total, "trips": trips })).into_response())
}

pub(super) async fn city(State(engine): Shared) -> Result<Response, ApiError> {
    let views = engine.views().await?;
    let city = &engine.config.city;
    Ok(axum::Json(json!({
        "city": city,
        "trips": views.city(city),
        "drivers": engine.index.driver_count(),
        "queued_rides": engine.matcher.queued(),
    }))
    .into_response())
}
