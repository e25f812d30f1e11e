//! The deployer's HTTP API (behind the control plane's `AccessPolicy`, like every
//! route: writes need the installation's token).
//!
//! | method and path | does | answers |
//! |---|---|---|
//! | `POST /api/deploys` | start a canary deploy ([`DeployRequest`]) | 202 with the deploy, 400 naming the field, 404 unknown service, 409 (one in progress, nothing to canary against, same version) |
//! | `GET /api/deploys` | deploys in progress and finished (newest first), and the configuration | 200 |
//! | `GET /api/deploys/{id}` | one deploy: phase, steps, judgements per interval with every metric | 200, 404 |
//! | `POST /api/deploys/{id}/rollback` | roll back (body optional: `{"reason": "…"}`) | 202 with the deploy as marked, 404, 409 when nothing is left to roll back |

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use casebook_kit::api::{ApiError, JsonBody};
use serde::Deserialize;

use super::engine::{DeployError, DeployRequest, Deployer};

/// The largest body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// The longest rollback reason kept.
pub const MAX_REASON: usize = 500;

/// The deployer's routes, state applied.
pub fn router(deployer: Arc<Deployer>) -> Router {
    Router::new()
        .route("/api/deploys", get(list).post(create))
        .route("/api/deploys/{id}", get(one))
        .route("/api/deploys/{id}/rollback", post(rollback))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(deployer)
}

type Shared = State<Arc<Deployer>>;

/// The API's face of a refusal.
pub fn api_error(error: DeployError) -> ApiError {
    match error {
        DeployError::Invalid { field, message } => ApiError::bad_field(&field, message),
        DeployError::UnknownService(message) | DeployError::NotFound(message) => {
            ApiError::not_found(message)
        }
        DeployError::Conflict(message) => ApiError::new(StatusCode::CONFLICT, message),
        DeployError::Unavailable => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the platform is shutting down",
        ),
    }
}

fn path_error(rejection: PathRejection) -> ApiError {
    ApiError::bad_request(format!("invalid path: {}", rejection.body_text()))
}

async fn list(State(deployer): Shared) -> impl IntoResponse {
    Json(deployer.view())
}

async fn create(
    State(deployer): Shared,
    JsonBody(request): JsonBody<DeployRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let deploy = deployer.create(request).map_err(api_error)?;
    Ok((StatusCode::ACCEPTED, Json(deploy)))
}

async fn one(
    State(deployer): Shared,
    id: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id.map_err(path_error)?;
    deployer
        .get(&id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no deploy `{id}`")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    reason: Option<String>,
}

async fn rollback(
    State(deployer): Shared,
    id: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id.map_err(path_error)?;
    let body: RollbackBody = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_field(
                "reason",
                format!("the body is not {{\"reason\": \"…\"}}: {e}"),
            )
        })?
    };
    let reason = body
        .reason
        .unwrap_or_else(|| "asked through the API".into());
    if reason.len() > MAX_REASON {
        return Err(ApiError::bad_field(
            "reason",
            format!("at most {MAX_REASON} bytes"),
        ));
    }
    let deploy = deployer.rollback(&id, &reason).map_err(api_error)?;
    Ok((StatusCode::ACCEPTED, Json(deploy)))
}
