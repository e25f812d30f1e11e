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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, header};
    use casebook_kit::clock::{Clock, ManualClock};
    use casebook_kit::metrics_push::{Datapoint, MAX_BATCH_ENTRIES, MetricKind};
    use http_body_util::BodyExt;
    use std::collections::BTreeMap;
    use tower::ServiceExt;

    fn app() -> (ManualClock, Arc<MetricsStore>, Router) {
        let clock = ManualClock::new();
        let store = Arc::new(MetricsStore::new(clock.shared()));
        (clock, store.clone(), router(store))
    }

    async fn call(app: &Router, request: Request<Body>) -> (StatusCode, serde_json::Value) {
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    fn post(body: impl Into<Body>) -> Request<Body> {
        Request::post(PUBLISH_PATH)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .unwrap()
    }

    fn get(uri: &str) -> Request<Body> {
        Request::get(uri).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn publish_then_query_group_series_and_stats() {
        let (clock, _, app) = app();
        let ts = clock.wall_millis();
        let body = serde_json::json!({
            "tags": {"node": "n1"},
            "metrics": [
                {"name": "reqs", "tags": {"zone": "a"}, "timestamp": ts, "kind": "counter", "value": 3},
                {"name": "reqs", "tags": {"zone": "b"}, "timestamp": ts, "kind": "counter", "value": 4},
                {"name": "lat", "timestamp": ts, "kind": "distribution", "values": [0.1, 0.2, 0.3]},
                {"name": "old", "timestamp": 1, "kind": "gauge", "value": 1}
            ]
        });
        let (status, report) = call(&app, post(body.to_string())).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["accepted"], 5);
        assert_eq!(report["dropped"]["too_old"], 1);

        clock.advance(std::time::Duration::from_secs(10));
        let (status, answer) = call(
            &app,
            get("/api/metrics/query?name=reqs&group_by=zone&fn=sum&from=-1m&step=1m"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["fn"], "sum");
        assert_eq!(answer["kind"], "counter");
        assert_eq!(answer["step_ms"], 60_000);
        let series = answer["series"].as_array().unwrap();
        assert_eq!(series.len(), 2);
        assert_eq!(series[0]["tags"]["zone"], "a");
        let values = series[0]["values"].as_array().unwrap();
        let present: Vec<f64> = values.iter().filter_map(|v| v.as_f64()).collect();
        assert_eq!(
            present,
            vec![3.0 / 60.0],
            "a rate per second over the minute"
        );
        assert!(values.iter().any(|v| v.is_null()), "gaps are null");

        let (_, answer) = call(&app, get("/api/metrics/query?name=lat&fn=max&from=-1m")).await;
        let present: Vec<f64> = answer["series"][0]["values"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_f64())
            .collect();
        assert_eq!(present, vec![0.3]);

        let (status, listing) = call(&app, get("/api/metrics/series?name=reqs")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(listing["total"], 2);
        assert_eq!(listing["kind"], "counter");
        assert_eq!(listing["tag_values"]["zone"], serde_json::json!(["a", "b"]));
        let (_, names) = call(&app, get("/api/metrics/series")).await;
        assert_eq!(
            names["names"],
            serde_json::json!([{"name": "lat", "series": 1}, {"name": "reqs", "series": 2}])
        );

        let (_, stats) = call(&app, get("/api/metrics/stats")).await;
        assert_eq!(stats["series"], 3);
        assert_eq!(stats["datapoints_ingested"], 5);
        assert_eq!(stats["dropped"]["too_old"], 1);
    }

    #[tokio::test]
    async fn an_unknown_function_is_a_400_naming_it() {
        let (_, _, app) = app();
        let (status, error) = call(&app, get("/api/metrics/query?name=x&fn=median")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error["field"], "fn");
        assert!(
            error["error"].as_str().unwrap().contains("`median`"),
            "{error}"
        );
        let (status, error) = call(&app, get("/api/metrics/query?name=x&when=later")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error["field"], "when");
        let (status, error) = call(&app, get("/api/metrics/series?limit=0")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error["field"], "limit");
    }

    #[tokio::test]
    async fn a_bad_body_is_a_400_naming_the_field_and_stores_nothing() {
        let (clock, store, app) = app();
        let ts = clock.wall_millis();
        let body = format!(
            r#"{{"metrics":[{{"name":"a","timestamp":{ts},"kind":"gauge","value":1}},
                {{"name":"b","timestamp":{ts},"kind":"gauge","value":"x"}}]}}"#
        );
        let (status, error) = call(&app, post(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error["field"], "metrics[1].value");
        let body =
            format!(r#"{{"metrics":[{{"name":"a","timestamp":{ts},"kind":"timer","value":1}}]}}"#);
        let (status, error) = call(&app, post(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error["field"], "metrics[0].kind");
        let body = format!(
            r#"{{"metrics":[{{"name":"a","tags":{{"zone":""}},"timestamp":{ts},"kind":"gauge","value":1}}]}}"#
        );
        let (status, error) = call(&app, post(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error["field"], "metrics[0].tags.zone");
        let stats = store.stats();
        assert_eq!((stats.series, stats.batches_rejected), (0, 3));
    }

    #[tokio::test]
    async fn an_oversized_batch_is_a_413() {
        let (clock, store, app) = app();
        let dp = Datapoint::scalar(
            "m",
            BTreeMap::new(),
            clock.wall_millis(),
            MetricKind::Gauge,
            1.0,
        );
        let batch = PublishBatch {
            tags: BTreeMap::new(),
            metrics: vec![dp; MAX_BATCH_ENTRIES + 1],
        };
        let (status, error) = call(&app, post(serde_json::to_vec(&batch).unwrap())).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{error}");
        let huge = vec![b' '; MAX_PUBLISH_BODY + 1];
        let (status, _) = call(&app, post(huge)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(store.stats().series, 0);
        assert_eq!(store.stats().batches_rejected, 2);
    }
}
