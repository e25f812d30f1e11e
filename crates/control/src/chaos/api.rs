//! The chaos HTTP API (behind the control plane's `AccessPolicy`: writes need the
//! installation's token).
//!
//! | method and path | does | answers |
//! |---|---|---|
//! | `POST /api/chaos/experiments` | start an [`ExperimentSpec`] | 201 with the record, 400 naming the field (or why the control plane would be hit), 404 naming the unknown service/zone/region, 409 (region already out, too many running), 503 (no fault proxy for latency) |
//! | `GET /api/chaos/experiments` | every experiment kept, newest first | 200 `[record]` |
//! | `GET /api/chaos/experiments/{id}` | one | 200, 404 |
//! | `POST /api/chaos/experiments/{id}/abort` | stop it now and roll back | 202 `{"id", "aborting"}`, 404 |
//! | `POST /api/chaos/gorilla/{zone}` | shortcut: a Gorilla experiment (body optional: `duration`, `probes`, …) | as `POST /experiments` |
//! | `POST /api/chaos/kong/{region}` | shortcut: a Kong experiment | as `POST /experiments` |
//! | `GET /api/chaos/monkey` | the daemon: running, config, today's plan, decisions | 200 |
//! | `POST /api/chaos/monkey/start` | start it, with the `[chaos.monkey]` table given as JSON (optional) | 200, 400, 404 |
//! | `POST /api/chaos/monkey/stop` | stop it | 200 `{"stopped"}` |

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use casebook_kit::api::{ApiError, JsonBody, parse_json};
use serde_json::{Value, json};

use super::engine::{Chaos, StartError};
use super::experiment::ExperimentSpec;
use super::monkey::MonkeyConfig;

/// The largest body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The chaos routes, state applied.
pub fn router(chaos: Arc<Chaos>) -> Router {
    Router::new()
        .route("/api/chaos/experiments", get(list).post(start))
        .route("/api/chaos/experiments/{id}", get(one))
        .route("/api/chaos/experiments/{id}/abort", post(abort))
        .route("/api/chaos/gorilla/{zone}", post(gorilla))
        .route("/api/chaos/kong/{region}", post(kong))
        .route("/api/chaos/monkey", get(monkey))
        .route("/api/chaos/monkey/start", post(monkey_start))
        .route("/api/chaos/monkey/stop", post(monkey_stop))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(chaos)
}

type Shared = State<Arc<Chaos>>;

fn start_error(error: StartError) -> ApiError {
    match error {
        StartError::Invalid(e) => ApiError::bad_field(e.key(), e.message()),
        StartError::NotFound(m) => ApiError::not_found(m),
        StartError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
        StartError::Unavailable(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m),
    }
}

fn path_error(rejection: PathRejection) -> ApiError {
    ApiError::bad_request(format!("invalid path: {}", rejection.body_text()))
}

async fn start(
    State(chaos): Shared,
    JsonBody(spec): JsonBody<ExperimentSpec>,
) -> Result<impl IntoResponse, ApiError> {
    let record = chaos.start(spec).map_err(start_error)?;
    Ok((StatusCode::CREATED, Json(record)))
}

async fn list(State(chaos): Shared) -> impl IntoResponse {
    Json(chaos.list())
}

async fn one(
    State(chaos): Shared,
    id: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id.map_err(path_error)?;
    chaos
        .get(&id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no experiment `{id}`")))
}

async fn abort(
    State(chaos): Shared,
    id: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id.map_err(path_error)?;
    match chaos.abort(&id) {
        Some(aborting) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "id": id, "aborting": aborting })),
        )),
        None => Err(ApiError::not_found(format!("no experiment `{id}`"))),
    }
}

/// A shortcut's spec: the body's fields (all optional) with the fault set.
fn shortcut(body: &Bytes, fault: Value) -> Result<ExperimentSpec, ApiError> {
    let mut object = if body.is_empty() {
        serde_json::Map::new()
    } else {
        match parse_json::<Value>(body)? {
            Value::Object(o) => o,
            _ => return Err(ApiError::bad_request("the body is a JSON object")),
        }
    };
    if object.contains_key("fault") {
        return Err(ApiError::bad_field(
            "fault",
            "set by the path; use POST /api/chaos/experiments for another",
        ));
    }
    object.insert("fault".into(), fault);
    serde_json::from_value(Value::Object(object)).map_err(|e| ApiError::bad_request(e.to_string()))
}

async fn gorilla(
    State(chaos): Shared,
    zone: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let Path(zone) = zone.map_err(path_error)?;
    let spec = shortcut(&body, json!({ "kind": "gorilla", "zone": zone }))?;
    let record = chaos.start(spec).map_err(start_error)?;
    Ok((StatusCode::CREATED, Json(record)))
}

async fn kong(
    State(chaos): Shared,
    region: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let Path(region) = region.map_err(path_error)?;
    let spec = shortcut(&body, json!({ "kind": "kong", "region": region }))?;
    let record = chaos.start(spec).map_err(start_error)?;
    Ok((StatusCode::CREATED, Json(record)))
}

async fn monkey(State(chaos): Shared) -> impl IntoResponse {
    Json(chaos.monkey_view())
}

async fn monkey_start(State(chaos): Shared, body: Bytes) -> Result<impl IntoResponse, ApiError> {
    let config = if body.is_empty() {
        None
    } else {
        Some(parse_json::<MonkeyConfig>(&body)?)
    };
    chaos.start_monkey(config).map(Json).map_err(start_error)
}

async fn monkey_stop(State(chaos): Shared) -> impl IntoResponse {
    Json(json!({ "stopped": chaos.stop_monkey() }))
}
