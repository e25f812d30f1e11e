//! `POST /v1/drivers/{id}/location` and `POST /v1/locations`: pings, one or a batch.

use axum::extract::{Path as UrlPath, State};
use axum::response::{IntoResponse, Response};
use casebook_kit::api::{ApiError, JsonBody};
use serde::Deserialize;

use super::Shared;
use super::errors::parse_id;
use super::wire::{LocationRecord, StatusName};
use crate::engine::check_update;
use crate::index::{DriverId, IndexError, LocationUpdate};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LocationBody {
    lat: f64,
    lon: f64,
    ts: u64,
    status: StatusName,
}

pub(super) async fn post_location(
    State(engine): Shared,
    UrlPath(id): UrlPath<String>,
    JsonBody(body): JsonBody<LocationBody>,
) -> Result<Response, ApiError> {
    let driver = parse_id("id", &id)?;
    let update = LocationUpdate {
        driver: DriverId(driver),
        lat: body.lat,
        lon: body.lon,
        ts: body.ts,
        status: body.status.into(),
    };
    if let Err((field, error)) = check_update(&update, engine.latest_ts()) {
        return Err(ApiError::bad_field(field, error));
    }
    let report = engine.ingest(&[update]).await?;
    Ok(axum::Json(report).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchBody {
    updates: Vec<LocationRecord>,
}

pub(super) async fn post_locations(
    State(engine): Shared,
    JsonBody(body): JsonBody<BatchBody>,
) -> Result<Response, ApiError> {
    let updates: Vec<LocationUpdate> = body.updates.iter().map(LocationUpdate::from).collect();
    // A clock far ahead is the sender's fault, not one driver's: the whole
    // batch is refused (nothing logged), naming the first such record.
    let latest_ts = engine.latest_ts();
    if let Some(i) = updates.iter().position(|u| u.ts > latest_ts) {
        let e = IndexError::FutureTimestamp {
            ts: updates[i].ts,
            latest: latest_ts,
        };
        return Err(ApiError::bad_field(
            format!("updates[{i}].ts"),
            e.to_string(),
        ));
    }
    let mut report = engine.ingest(&updates).await?;
    for v in &mut report.invalid {
        v.field = format!("updates[{}].{}", v.index, v.field);
    }
    Ok(axum::Json(report).into_response())
}
