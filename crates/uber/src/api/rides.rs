//! Quotes, ride requests and the offered driver's answer.

use axum::extract::{Path as UrlPath, State};
use axum::response::{IntoResponse, Response};
use casebook_kit::api::{ApiError, JsonBody};
use http::StatusCode;
use serde::Deserialize;

use super::Shared;
use super::errors::{match_error, parse_id, pricing_error, trip_error};
use super::wire::{PointBody, ride_out};
use crate::engine::RideQuote;
use crate::index::{DriverId, DriverStatus, IndexError, LatLng};
use crate::matching::{Mode, RideStatus};
use crate::region::Regional;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RideBody {
    rider: u64,
    pickup: PointBody,
    dropoff: PointBody,
    #[serde(default = "greedy")]
    mode: Mode,
}

fn greedy() -> Mode {
    Mode::Greedy
}

/// The position of a posted point; an error names `{field}.lat` or `{field}.lng`.
fn check_point(field: &str, p: PointBody) -> Result<LatLng, ApiError> {
    LatLng::new(p.lat, p.lng).map_err(|e| {
        let part = match e {
            IndexError::InvalidLatitude { .. } => "lat",
            _ => "lng",
        };
        ApiError::bad_field(format!("{field}.{part}"), e.to_string())
    })
}

/// The region rules for a ride: the pickup must be ours; a dropoff in another
/// region needs that region reachable.
fn check_regions(regional: &Regional, pickup: LatLng, dropoff: LatLng) -> Result<(), ApiError> {
    let mine = regional.region();
    let owner = regional.map.region_of(pickup);
    if owner != mine {
        return Err(ApiError {
            field: Some("pickup".to_owned()),
            ..ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "pickup is in region {owner}, this replica serves {mine}: \
                     request the ride from region {owner}'s replica"
                ),
            )
        });
    }
    let to = regional.map.region_of(dropoff);
    if to != mine && !regional.replica.reachable(to) {
        metrics::counter!("uber_cross_region_refused_total").increment(1);
        return Err(ApiError {
            field: Some("dropoff".to_owned()),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "region {to} unreachable: cross-region trips refused until the partition heals"
                ),
            )
        });
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct QuoteBody {
    pickup: PointBody,
    dropoff: PointBody,
}

pub(super) async fn post_quote(
    State(engine): Shared,
    JsonBody(body): JsonBody<QuoteBody>,
) -> Result<Response, ApiError> {
    let pickup = check_point("pickup", body.pickup)?;
    let dropoff = check_point("dropoff", body.dropoff)?;
    let quote = engine
        .pricing
        .quote(pickup, dropoff)
        .await
        .map_err(pricing_error)?;
    Ok(axum::Json(quote).into_response())
}

pub(super) async fn post_ride(
    State(engine): Shared,
    JsonBody(body): JsonBody<RideBody>,
) -> Result<Response, ApiError> {
    let (from, to) = (
        check_point("pickup", body.pickup)?,
        check_point("dropoff", body.dropoff)?,
    );
    if let Some(regional) = engine.regional() {
        check_regions(regional, from, to)?;
    }
    // The price is fixed now, before matching: what the rider was shown is what
    // completion charges. Pricing down answers the fallback, not an error.
    let quote = engine
        .pricing
        .quote(from, to)
        .await
        .map_err(pricing_error)?;
    let id = engine
        .matcher
        .request(body.rider, from, to, body.mode)
        .map_err(match_error)?;
    engine.remember_quote(id, RideQuote::from(&quote));
    engine.pricing.demand(from);
    let view = engine.matcher.status(id).map_err(match_error)?;
    Ok((StatusCode::CREATED, axum::Json(ride_out(&engine, view))).into_response())
}

pub(super) async fn get_ride(
    State(engine): Shared,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let ride = parse_id("id", &id)?;
    let view = engine.matcher.status(ride).map_err(match_error)?;
    Ok(axum::Json(ride_out(&engine, view)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DriverBody {
    driver: DriverId,
}

pub(super) async fn ride_action(
    State(engine): Shared,
    UrlPath((id, action)): UrlPath<(String, String)>,
    JsonBody(body): JsonBody<DriverBody>,
) -> Result<Response, ApiError> {
    let ride = parse_id("id", &id)?;
    match action.as_str() {
        "accept" => {
            let view = engine
                .matcher
                .accept(ride, body.driver)
                .map_err(match_error)?;
            let RideStatus::Accepted { driver, eta } = view.status else {
                return Err(ApiError::internal("accepted ride not in accepted state"));
            };
            engine.move_driver(driver, DriverStatus::Available, DriverStatus::Dispatched);
            engine.pricing.gone(driver);
            let trip = engine.trip_id(ride);
            let recorded = async {
                // The quoted multiplier goes into the trip's first event: what
                // completion charges survives a restart with the trip. A service
                // answering out of range is clamped, not trusted.
                let quoted = engine
                    .ride_quote(ride)
                    .map(|q| q.multiplier)
                    .filter(|m| m.is_finite())
                    .map(|m| m.clamp(1.0, crate::trips::MAX_SURGE));
                engine
                    .trips
                    .request_quoted(
                        &trip,
                        view.rider,
                        &engine.config.city,
                        view.pickup,
                        view.dropoff,
                        quoted,
                    )
                    .await?;
                engine
                    .trips
                    .matched(&trip, driver, eta.as_millis() as u64)
                    .await
            };
            if let Err(e) = recorded.await {
                // Without its trip the match is void: give the driver back.
                let _ = engine.matcher.cancel(ride);
                engine.free_driver(driver);
                return Err(trip_error(e));
            }
            Ok(axum::Json(ride_out(&engine, view)).into_response())
        }
        "decline" => {
            engine
                .matcher
                .decline(ride, body.driver)
                .map_err(match_error)?;
            let view = engine.matcher.status(ride).map_err(match_error)?;
            Ok(axum::Json(ride_out(&engine, view)).into_response())
        }
        other => Err(ApiError::not_found(format!(
            "no ride action {other:?} (accept, decline)"
        ))),
    }
}
