//! The playback API's routes over a [`Playback`] engine (shapes in the module
//! docs of [`crate::playback`]).

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use casebook_edge::gateway::proxy::USER_ID_HEADER;
use casebook_kit::api::{ApiError, JsonBody};
use serde_json::{Value, json};

use super::events::EventBatch;
use super::{CatalogResponse, MAX_BODY_BYTES, PlayGrant, PlayRequest, Playback};

/// The routes.
pub fn router(playback: Arc<Playback>) -> Router {
    Router::new()
        .route("/v1/titles", get(titles))
        .route("/v1/playback", post(play))
        .route("/v1/playback/{session}/events", post(events))
        // The same routes as the gateway forwards them (its paths go upstream unchanged).
        .route("/api/v1/playback", post(play))
        .route("/api/v1/playback/{session}/events", post(events))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(playback)
}

async fn titles(State(playback): State<Arc<Playback>>) -> Result<Json<CatalogResponse>, ApiError> {
    let view = playback.catalog().await?;
    Ok(Json(CatalogResponse {
        titles: view.titles.as_ref().clone(),
        stale: view.stale,
    }))
}

async fn play(
    State(playback): State<Arc<Playback>>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<PlayRequest>,
) -> Result<Json<PlayGrant>, ApiError> {
    // Only the gateway sets it (it drops a client's own copy).
    let caller = headers
        .get(USER_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    playback.play(request, caller).await.map(Json)
}

async fn events(
    State(playback): State<Arc<Playback>>,
    Path(session): Path<String>,
    JsonBody(batch): JsonBody<EventBatch>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let accepted = playback.record_events(&session, &batch)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "accepted": accepted }))))
}
