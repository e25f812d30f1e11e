//! The recommendations' HTTP API.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/recommendations/{user}?limit=N` | [`Recommendations`](super::serve::Recommendations): items, strategy, layers, `fallback` when popular |
//! | `POST /v1/recommendations/rebuild` | runs the batch job now; answers the new model's summary |
//! | `GET /v1/recommendations/model` | the served model's summary |

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use casebook_kit::api::ApiError;
use serde::{Deserialize, Serialize};

use super::Recs;
use super::serve::{MAX_LIMIT, Recommendations};

#[derive(Debug, Deserialize)]
struct LimitQuery {
    limit: Option<String>,
}

/// A model's summary (not its lists).
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub version: u64,
    pub built_at_ms: u64,
    pub interactions: u64,
    pub users: u64,
    pub items: usize,
}

impl ModelSummary {
    pub fn of(model: &super::batch::Model) -> Self {
        Self {
            version: model.version,
            built_at_ms: model.built_at_ms,
            interactions: model.interactions,
            users: model.users,
            items: model.similar.len(),
        }
    }
}

/// The routes over the recommendations area.
pub fn router(recs: Arc<Recs>) -> Router {
    Router::new()
        .route("/v1/recommendations/{user}", get(recommend))
        .route("/v1/recommendations/rebuild", post(rebuild))
        .route("/v1/recommendations/model", get(model))
        .with_state(recs)
}

async fn recommend(
    State(recs): State<Arc<Recs>>,
    Path(user): Path<String>,
    Query(query): Query<LimitQuery>,
) -> Result<Json<Recommendations>, ApiError> {
    if user.is_empty() || user.len() > 128 {
        return Err(
            ApiError::bad_field("user", "a user id of 1 to 128 bytes").with_code("invalid_user")
        );
    }
    let limit = match query.limit {
        None => 10,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::bad_field(
                    "limit",
                    format!("`{raw}` is not a number from 1 to {MAX_LIMIT}"),
                )
                .with_code("invalid_limit")
            })?,
    };
    Ok(Json(recs.recommender.recommend(&user, limit)))
}

async fn rebuild(State(recs): State<Arc<Recs>>) -> Result<Json<ModelSummary>, ApiError> {
    recs.rebuild().await.map(Json).map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the batch job failed: {e:#}"),
        )
        .with_code("batch_failed")
    })
}

async fn model(State(recs): State<Arc<Recs>>) -> Result<Json<ModelSummary>, ApiError> {
    recs.recommender
        .model()
        .map(|m| Json(ModelSummary::of(&m)))
        .ok_or_else(|| ApiError::not_found("no model has been built yet").with_code("no_model"))
}
