//! The autoscaler's HTTP API (behind the control plane's `AccessPolicy`, like every
//! route: writes need the installation's token).
//!
//! | method and path | does | answers |
//! |---|---|---|
//! | `GET /api/autoscaler` | policies, live and desired instances per service, the last reading, the schedule with its windows, recent decisions (newest first) | 200 [`AutoscalerView`] |
//! | `POST /api/autoscaler/policies` | add or replace a service's policy (the `[[autoscaler.policies]]` shape, JSON) | 200 `{"policy", "replaced"}`, 400 naming the field, 409 when full |
//! | `DELETE /api/autoscaler/policies/{service}` | stop scaling the service (its schedule entries go too; its instances stay) | 200 `{"policy", "schedule_entries_removed"}`, 404 |
//! | `POST /api/autoscaler/schedule` | add a schedule entry (the `[[autoscaler.schedule]]` shape) | 201 with the entry, 400 naming the field, 409 when full |
//! | `DELETE /api/autoscaler/schedule/{service}` | drop the service's schedule entries | 200 `{"removed"}` |
//!
//! Changes made here live in memory: a restarted control plane starts from its
//! configuration again.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use casebook_kit::api::{ApiError, JsonBody};
use serde_json::json;

use super::config::Policy;
use super::engine::{Autoscaler, AutoscalerView, ChangeError};
use super::schedule::ScheduledScale;

/// The largest body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The autoscaler's routes, state applied.
pub fn router(autoscaler: Arc<Autoscaler>) -> Router {
    Router::new()
        .route("/api/autoscaler", get(view))
        .route("/api/autoscaler/policies", post(set_policy))
        .route("/api/autoscaler/policies/{service}", delete(remove_policy))
        .route("/api/autoscaler/schedule", post(add_schedule))
        .route(
            "/api/autoscaler/schedule/{service}",
            delete(remove_schedule),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(autoscaler)
}

type Shared = State<Arc<Autoscaler>>;

fn change_error(error: ChangeError) -> ApiError {
    match error {
        ChangeError::Invalid(e) => ApiError::bad_field(e.key(), e.message()),
        ChangeError::Full(message) => ApiError::new(StatusCode::CONFLICT, message),
    }
}

fn path_error(rejection: PathRejection) -> ApiError {
    ApiError::bad_request(format!("invalid path: {}", rejection.body_text()))
}

async fn view(State(autoscaler): Shared) -> Json<AutoscalerView> {
    Json(autoscaler.view())
}

async fn set_policy(
    State(autoscaler): Shared,
    JsonBody(policy): JsonBody<Policy>,
) -> Result<impl IntoResponse, ApiError> {
    let known = autoscaler.startable_services().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the platform is shutting down",
        )
    })?;
    // Validated before the service is looked up, so a bad name gets the precise error.
    policy
        .validate("")
        .map_err(|e| ApiError::bad_field(e.key(), e.message()))?;
    if !known.contains(&policy.service) {
        return Err(ApiError::bad_field(
            "service",
            format!(
                "unknown service `{}` (known: {})",
                policy.service,
                known.join(", ")
            ),
        ));
    }
    let replaced = autoscaler
        .set_policy(policy.clone())
        .map_err(change_error)?;
    Ok(Json(json!({ "policy": policy, "replaced": replaced })))
}

async fn remove_policy(
    State(autoscaler): Shared,
    service: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(service) = service.map_err(path_error)?;
    match autoscaler.remove_policy(&service) {
        Some((policy, removed)) => Ok(Json(
            json!({ "policy": policy, "schedule_entries_removed": removed }),
        )),
        None => Err(ApiError::not_found(format!(
            "no autoscaler policy for `{service}`"
        ))),
    }
}

async fn add_schedule(
    State(autoscaler): Shared,
    JsonBody(entry): JsonBody<ScheduledScale>,
) -> Result<impl IntoResponse, ApiError> {
    autoscaler
        .add_schedule(entry.clone())
        .map_err(change_error)?;
    Ok((StatusCode::CREATED, Json(entry)))
}

async fn remove_schedule(
    State(autoscaler): Shared,
    service: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(service) = service.map_err(path_error)?;
    Ok(Json(
        json!({ "removed": autoscaler.remove_schedule(&service) }),
    ))
}
