//! This replica's region, gossip and partition switch.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use casebook_kit::api::{ApiError, JsonBody};
use serde::Deserialize;
use serde_json::json;

use super::Shared;
use crate::engine::Engine;
use crate::region::Regional;

fn regional_of(engine: &Engine) -> Result<&Regional, ApiError> {
    engine
        .regional()
        .ok_or_else(|| ApiError::not_found("this instance runs without regions"))
}

fn regions_view(regional: &Regional) -> serde_json::Value {
    let reachable: serde_json::Map<String, serde_json::Value> = regional
        .map
        .regions()
        .iter()
        .map(|r| (r.clone(), json!(regional.replica.reachable(r))))
        .collect();
    json!({
        "region": regional.region(),
        "gossip_addr": regional.replica.addr(),
        "isolated": regional.replica.is_isolated(),
        "cities": regional.map.cities().iter().filter(|c| c.region == regional.region()).collect::<Vec<_>>(),
        "reachable": reachable,
        "members": regional.replica.members(),
        "gossip": regional.replica.stats(),
    })
}

pub(super) async fn get_regions(State(engine): Shared) -> Result<Response, ApiError> {
    let regional = regional_of(&engine)?;
    Ok(axum::Json(regions_view(regional)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PartitionBody {
    isolate: bool,
}

pub(super) async fn post_partition(
    State(engine): Shared,
    JsonBody(body): JsonBody<PartitionBody>,
) -> Result<Response, ApiError> {
    let regional = regional_of(&engine)?;
    regional.replica.set_isolated(body.isolate);
    tracing::warn!(region = %regional.region(), isolate = body.isolate, "gossip partition switch");
    Ok(axum::Json(regions_view(regional)).into_response())
}
