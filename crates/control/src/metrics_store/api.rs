//! The metrics store's HTTP API.
//!
//! - `POST /api/metrics/publish`: a [`PublishBatch`]; answers the [`IngestReport`].
//!   A body over [`MAX_PUBLISH_BODY`] bytes or a batch over the entry/value limits is
//!   413; a malformed body is 400 naming the field (`metrics[2].value`); either way
//!   nothing of the batch is stored.
//! - `GET /api/metrics/query?name=..&filter=k:v,k2:a|b&group_by=zone&fn=p99&from=-5m&to=now&step=10s`:
//!   a [`QueryResult`]; an unknown function or parameter is 400 naming it.
//! - `GET /api/metrics/series[?name=..&limit=N]`: without a name, every name and its
//!   series count; with one, its series and each tag's values.
//! - `GET /api/metrics/stats`: [`StoreStats`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Query as UrlQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use casebook_kit::api::{ApiError, JsonBody};
use casebook_kit::metrics_push::{BatchError, PUBLISH_PATH, PublishBatch};
use serde::Serialize;

use super::query::{Query, QueryError, QueryResult};
use super::{IngestReport, MetricsStore, SeriesListing, StoreStats};

/// The largest publish body read, in bytes.
pub const MAX_PUBLISH_BODY: usize = 16 * 1024 * 1024;
/// The most series `GET /api/metrics/series` lists unless asked for fewer.
pub const MAX_SERIES_LISTED: usize = 1000;

/// The store's routes, to merge into the control plane's router.
pub fn router(store: Arc<MetricsStore>) -> Router {
    Router::new()
        .route(
            PUBLISH_PATH,
            post(publish).layer(DefaultBodyLimit::max(MAX_PUBLISH_BODY)),
        )
        .route("/api/metrics/query", get(query))
        .route("/api/metrics/series", get(series))
        .route("/api/metrics/stats", get(stats))
        .with_state(store)
}

async fn publish(
    State(store): State<Arc<MetricsStore>>,
    body: Result<JsonBody<PublishBatch>, ApiError>,
) -> Result<Json<IngestReport>, ApiError> {
    let JsonBody(batch) = body.inspect_err(|_| store.count_rejected_batch())?;
    match store.ingest(&batch) {
        Ok(report) => Ok(Json(report)),
        Err(err @ BatchError::TooLarge { .. }) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            err.to_string(),
        )),
        Err(BatchError::Invalid { field, reason }) => Err(ApiError::bad_field(field, reason)),
    }
}

fn query_error(err: QueryError) -> ApiError {
    ApiError::bad_field(err.field().to_owned(), err.to_string())
}

fn url_params(
    params: Result<UrlQuery<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, ApiError> {
    params
        .map(|UrlQuery(p)| p)
        .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
}

async fn query(
    State(store): State<Arc<MetricsStore>>,
    params: Result<UrlQuery<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<QueryResult>, ApiError> {
    let params = url_params(params)?;
    let query = Query::parse(&params).map_err(query_error)?;
    store.query(&query).map(Json).map_err(query_error)
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum SeriesAnswer {
    Names { names: Vec<NameCount> },
    Series(SeriesListing),
}

#[derive(Debug, Serialize)]
struct NameCount {
    name: String,
    series: usize,
}

async fn series(
    State(store): State<Arc<MetricsStore>>,
    params: Result<UrlQuery<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<SeriesAnswer>, ApiError> {
    let params = url_params(params)?;
    if let Some(unknown) = params.keys().find(|k| *k != "name" && *k != "limit") {
        return Err(ApiError::bad_field(
            unknown.clone(),
            "unknown parameter; known: name, limit",
        ));
    }
    let limit = match params.get("limit") {
        None => MAX_SERIES_LISTED,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_SERIES_LISTED).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_field(
                    "limit",
                    format!("must be a number from 1 to {MAX_SERIES_LISTED}"),
                ));
            }
        },
    };
    Ok(Json(match params.get("name") {
        Some(name) => SeriesAnswer::Series(store.series_of(name, limit)),
        None => SeriesAnswer::Names {
            names: store
                .names()
                .into_iter()
                .map(|(name, series)| NameCount { name, series })
                .collect(),
        },
    }))
}

async fn stats(State(store): State<Arc<MetricsStore>>) -> Json<StoreStats> {
    Json(store.stats())
}
