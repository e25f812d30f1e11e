//! The flags' HTTP API.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/flags` | every flag |
//! | `GET /v1/flags/{name}` | the flag; 404 `flag_not_found` |
//! | `PUT /v1/flags/{name}` | `{description?, variants: [{name, percent}], salt?}` creates or replaces it (logged); 400 naming the field when the percentages do not sum to 100 |
//! | `GET /v1/flags/{name}/assignment?user=U` | `{flag, user, variant}` |
//! | `GET /v1/flags/{name}/changes` | the flag's last changes, oldest first |

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use casebook_kit::api::{ApiError, JsonBody};
use serde::{Deserialize, Serialize};

use super::model::{Flag, valid_name};
use super::store::{FlagChange, FlagStore, StoreError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutFlag {
    #[serde(default)]
    description: String,
    variants: Vec<super::Variant>,
    #[serde(default)]
    salt: String,
}

#[derive(Debug, Deserialize)]
struct UserQuery {
    user: Option<String>,
}

#[derive(Debug, Serialize)]
struct Assignment {
    flag: String,
    user: String,
    variant: String,
}

/// The flags' routes over `store`.
pub fn router(store: Arc<FlagStore>) -> Router {
    Router::new()
        .route("/v1/flags", get(list))
        .route("/v1/flags/{name}", get(show).put(put))
        .route("/v1/flags/{name}/assignment", get(assignment))
        .route("/v1/flags/{name}/changes", get(changes))
        .with_state(store)
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("no flag `{name}`")).with_code("flag_not_found")
}

fn storage(e: StoreError) -> ApiError {
    match e {
        StoreError::Invalid(e) => ApiError::bad_field(e.field, e.message).with_code("invalid_flag"),
        StoreError::Full => ApiError::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string())
            .with_code("too_many_flags"),
        e => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            .with_code("storage_unavailable"),
    }
}

async fn list(State(store): State<Arc<FlagStore>>) -> Json<Vec<Flag>> {
    Json(store.list())
}

async fn show(
    State(store): State<Arc<FlagStore>>,
    Path(name): Path<String>,
) -> Result<Json<Flag>, ApiError> {
    store.get(&name).map(Json).ok_or_else(|| not_found(&name))
}

async fn put(
    State(store): State<Arc<FlagStore>>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<PutFlag>,
) -> Result<Json<FlagChange>, ApiError> {
    if !valid_name(&name) {
        return Err(
            ApiError::bad_field("name", "1 to 64 characters of [a-z0-9-]")
                .with_code("invalid_flag"),
        );
    }
    let flag = Flag {
        name,
        description: body.description,
        variants: body.variants,
        salt: body.salt,
    };
    // The file writes fsync: off the async workers.
    let change = tokio::task::spawn_blocking(move || store.put(flag))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(storage)?;
    Ok(Json(change))
}

async fn assignment(
    State(store): State<Arc<FlagStore>>,
    Path(name): Path<String>,
    Query(query): Query<UserQuery>,
) -> Result<Json<Assignment>, ApiError> {
    let user = query
        .user
        .filter(|u| !u.is_empty() && u.len() <= 128)
        .ok_or_else(|| {
            ApiError::bad_field("user", "a user id of 1 to 128 bytes is required")
                .with_code("invalid_user")
        })?;
    let variant = store.assign(&name, &user).ok_or_else(|| not_found(&name))?;
    Ok(Json(Assignment {
        flag: name,
        user,
        variant: variant.name,
    }))
}

async fn changes(
    State(store): State<Arc<FlagStore>>,
    Path(name): Path<String>,
) -> Result<Json<Vec<FlagChange>>, ApiError> {
    if store.get(&name).is_none() {
        return Err(not_found(&name));
    }
    tokio::task::spawn_blocking(move || store.changes(&name))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map(Json)
        .map_err(storage)
}
