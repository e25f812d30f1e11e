//! A driver's latest state and earnings.

use axum::extract::{Path as UrlPath, State};
use axum::response::{IntoResponse, Response};
use casebook_kit::api::ApiError;
use serde_json::json;

use super::Shared;
use super::errors::parse_id;
use super::wire::StatusName;
use crate::index::{DriverId, DriverStatus, LatLng};

pub(super) async fn driver_earnings(
    State(engine): Shared,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let driver = DriverId(parse_id("id", &id)?);
    let views = engine.views().await?;
    let known = engine.index.get(driver);
    let earnings = views.earnings(driver);
    if known.is_none() && !views.all_earnings().contains_key(&driver) {
        return Err(ApiError::not_found(format!("unknown driver {driver}")));
    }
    Ok(axum::Json(json!({
        "driver": driver,
        "trips": earnings.trips,
        "fare_cents": earnings.fare_cents,
        "status": known.map(|v| StatusName::from(v.status)),
    }))
    .into_response())
}

/// A driver's latest state: as this replica's index has it (position, status —
/// the server-owned ones included —, the driver's timestamp, how long ago its
/// last update arrived), or as gossip brought it when that is newer; with
/// regions, also the region and city of its position and whether it can be
/// matched here.
pub(super) async fn get_driver(
    State(engine): Shared,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let driver = parse_id("id", &id)?;
    let in_index = engine.index.get(DriverId(driver));
    let register = engine
        .regional()
        .and_then(|regional| regional.replica.driver(driver));
    let mut out = match (&in_index, &register) {
        (Some(view), register) if register.as_ref().is_none_or(|r| r.state.ts <= view.ts) => {
            let age = engine.clock.now().saturating_duration_since(view.last_seen);
            // The same update may have come by gossip (the index took it then).
            let source = match register {
                Some(r) if r.state.ts == view.ts && !r.local => "gossip",
                _ => "local",
            };
            json!({
                "driver": driver,
                "lat": view.position.lat(),
                "lon": view.position.lon(),
                "ts": view.ts,
                "status": StatusName::from(view.status),
                "age_ms": u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
                "source": source,
            })
        }
        (_, Some(register)) => {
            let s = register.state;
            json!({
                "driver": driver,
                "lat": s.lat,
                "lon": s.lng,
                "ts": s.ts,
                "status": StatusName::from(s.status),
                "source": if register.local { "local" } else { "gossip" },
            })
        }
        (None, None) | (Some(_), None) => {
            return Err(ApiError::not_found(format!("unknown driver {driver}")));
        }
    };
    out["matchable_here"] = json!(in_index.is_some_and(|v| v.status == DriverStatus::Available));
    if let Some(regional) = engine.regional() {
        let at = LatLng::new(
            out["lat"].as_f64().unwrap_or(f64::NAN),
            out["lon"].as_f64().unwrap_or(f64::NAN),
        );
        if let Ok(at) = at {
            out["region"] = json!(regional.map.region_of(at));
            out["city"] = json!(regional.map.city_of(at).map(|c| c.name.clone()));
        }
        out["replica"] = json!(regional.region());
    }
    Ok(axum::Json(out).into_response())
}
