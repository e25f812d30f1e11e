//! The pipeline's API.
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/titles?name=NAME` | the raw body is the source file → 202 `{"job","title","status_url"}` (+ `Location`) |
//! | `GET /v1/jobs` | every remembered job, newest first |
//! | `GET /v1/jobs/{id}` | `{"id","title","name","state","progress","created_at_ms","error"?,"entry"?}`; `state`: queued, probing, encoding, publishing, done, failed |
//!
//! Refusals (JSON `{"error","field"}`): no or a bad `name` 400; an empty body 400;
//! a body over `[netflix] max_upload_bytes` 413 (by `Content-Length` before
//! reading, else as it streams); a title id in the catalog or being ingested 409;
//! `max_queued_jobs` waiting or running 503. A source ffmpeg cannot read fails
//! the job: its status says why, naming the upload.
//!
//! Guaranteed: the body is streamed to a file in the instance's work directory,
//! never held in memory whole; a refused, broken or stalled (nothing for
//! [`UPLOAD_IDLE_TIMEOUT`]: 408) upload leaves no file and no job.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use casebook_kit::api::ApiError;
use casebook_kit::runtime::BoxFuture;
use futures::StreamExt as _;
use serde::Deserialize;
use tokio::io::AsyncWriteExt as _;

use super::encode::Source;
use super::jobs::{JobView, RefusedJob};
use super::{IngestError, Pipeline};
use crate::origin::key::TitleId;

/// How long an upload may send nothing before it is refused (408).
pub const UPLOAD_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs a job in the instance's task group.
pub type Spawner = Arc<dyn Fn(BoxFuture<'static, ()>) + Send + Sync>;

#[derive(Clone)]
struct AppState {
    pipeline: Arc<Pipeline>,
    spawn: Spawner,
}

/// The pipeline's routes.
pub fn router(pipeline: Arc<Pipeline>, spawn: Spawner) -> Router {
    Router::new()
        .route("/v1/titles", post(upload))
        .route("/v1/jobs", get(list_jobs))
        .route("/v1/jobs/{id}", get(one_job))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "this route does not take that method",
            )
        })
        .with_state(AppState { pipeline, spawn })
}

#[derive(Deserialize)]
struct UploadQuery {
    name: Option<String>,
}

fn validate_name(name: Option<&str>) -> Result<(String, TitleId), ApiError> {
    super::title_for_name(name.unwrap_or_default()).map_err(|e| ApiError::bad_field("name", e))
}

async fn upload(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match accept_upload(&state, &uri, &headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn accept_upload(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let pipeline = &state.pipeline;
    let max = pipeline.config().max_upload_bytes;
    let query = Query::<UploadQuery>::try_from_uri(uri)
        .map_err(|e| ApiError::bad_field("name", format!("bad query string: {e}")))?;
    let (name, id) = validate_name(query.name.as_deref())?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    pipeline.check_new(&id).await.map_err(ingest_error)?;
    let now = pipeline.clock().wall_millis();
    let job = pipeline
        .jobs()
        .reserve(&id, &name, now)
        .map_err(|e| ingest_error(e.into()))?;
    let dir = pipeline.uploads_dir();
    let path = dir.join(format!("{}.upload", job.id));
    let written = async {
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| ApiError::internal(format!("{}: {e}", dir.display())))?;
        stream_to_file(body, &path, max).await
    }
    .await;
    match written {
        Ok(0) => {
            pipeline.jobs().abandon(&job);
            let _ = tokio::fs::remove_file(&path).await;
            return Err(ApiError::bad_request(
                "the body is the source file, and it is empty",
            ));
        }
        Ok(_) => {}
        Err(e) => {
            pipeline.jobs().abandon(&job);
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e);
        }
    }
    let source = Source::File {
        label: format!("the upload of `{name}`"),
        path: path.clone(),
    };
    let run = {
        let pipeline = pipeline.clone();
        let job = job.clone();
        async move {
            let outcome = pipeline
                .ingest(&source, &job.title, &job.name, &job.progress)
                .await
                .map_err(|e| {
                    tracing::warn!(job = %job.id, title = %job.title, error = %e, "job failed");
                    e.to_string()
                });
            let _ = tokio::fs::remove_file(&path).await;
            pipeline.jobs().finish(&job, outcome);
        }
    };
    (state.spawn)(Box::pin(run));
    let status_url = format!("/v1/jobs/{}", job.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, status_url.clone())],
        axum::Json(serde_json::json!({
            "job": job.id,
            "title": job.title,
            "status_url": status_url,
        })),
    )
        .into_response())
}

/// Streams a request body to `path`, refusing it past `max` bytes; returns its size.
async fn stream_to_file(body: Body, path: &std::path::Path, max: u64) -> Result<u64, ApiError> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?;
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    loop {
        // A client that stops sending must not hold its job's place in the queue.
        let next = tokio::time::timeout(UPLOAD_IDLE_TIMEOUT, stream.next())
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the upload sent nothing for {} s",
                        UPLOAD_IDLE_TIMEOUT.as_secs()
                    ),
                )
            })?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the upload: {e}")))?;
        total += chunk.len() as u64;
        if total > max {
            return Err(too_large(max));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?;
    }
    file.flush()
        .await
        .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?;
    Ok(total)
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("an upload is at most {max} bytes (netflix.max_upload_bytes)"),
    )
}

fn ingest_error(e: IngestError) -> ApiError {
    let message = e.to_string();
    match e {
        IngestError::Exists(_) | IngestError::Refused(RefusedJob::Busy(_)) => ApiError {
            field: Some("name".into()),
            ..ApiError::new(StatusCode::CONFLICT, message)
        },
        IngestError::Refused(RefusedJob::Full(_)) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
        IngestError::Source(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message),
        _ => ApiError::internal(message),
    }
}

async fn list_jobs(State(state): State<AppState>) -> axum::Json<Vec<JobView>> {
    axum::Json(
        state
            .pipeline
            .jobs()
            .list()
            .iter()
            .map(|j| j.view())
            .collect(),
    )
}

async fn one_job(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.pipeline.jobs().get(&id) {
        Some(job) => axum::Json(job.view()).into_response(),
        None => ApiError::not_found(format!("no job `{id}`")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::MAX_NAME_LEN;

    #[test]
    fn names_are_checked() {
        assert_eq!(
            validate_name(Some(" Big Buck Bunny ")).unwrap().1.as_str(),
            "big-buck-bunny"
        );
        for bad in [None, Some(""), Some("   "), Some("!!"), Some("a\u{7}b")] {
            assert_eq!(
                validate_name(bad).unwrap_err().field.as_deref(),
                Some("name"),
                "{bad:?}"
            );
        }
        assert!(validate_name(Some(&"x".repeat(MAX_NAME_LEN + 1))).is_err());
    }
}
