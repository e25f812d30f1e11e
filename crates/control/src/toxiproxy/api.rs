//! Toxiproxy 2.x's HTTP API, same paths, JSON and status codes.
//!
//! | method and path | does | answers |
//! |---|---|---|
//! | `GET /proxies` | every proxy, by name, with its toxics | 200 |
//! | `POST /proxies` | create (`name`, `upstream` required; `listen` default `127.0.0.1:0`, `enabled` default true) | 201, 400, 409 |
//! | `POST /populate` | create or replace each proxy of a JSON array | 201 `{"proxies": […]}`; on error the error's status with `error`, `status` and the proxies done |
//! | `GET /proxies/{proxy}` | one proxy | 200, 404 |
//! | `POST`/`PATCH /proxies/{proxy}` | change `listen`, `upstream`, `enabled` | 200, 400, 404 |
//! | `DELETE /proxies/{proxy}` | stop and delete | 204, 404 |
//! | `GET /proxies/{proxy}/toxics` | its toxics, upstream first | 200, 404 |
//! | `POST /proxies/{proxy}/toxics` | add a toxic (`type` required) | 200, 400, 404, 409 |
//! | `GET /proxies/{proxy}/toxics/{toxic}` | one toxic | 200, 404 |
//! | `POST`/`PATCH /proxies/{proxy}/toxics/{toxic}` | change `attributes`, `toxicity` | 200, 400, 404 |
//! | `DELETE /proxies/{proxy}/toxics/{toxic}` | remove | 204, 404 |
//! | `POST /reset` | enable every proxy, remove every toxic | 204 |
//! | `GET /version` | `{"version": "…"}` | 200 |
//!
//! Errors are Toxiproxy's `{"error": "...", "status": N}`. Like Toxiproxy, a
//! request whose `User-Agent` is a browser's (`Mozilla/…`) is refused with 403; the
//! control plane's access layer (no token on loopback, any `Origin` refused) sits in
//! front. Request bodies are bounded by [`MAX_BODY_BYTES`].

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::collection::Toxiproxy;
use super::error::ToxiError;
use super::model;

/// The largest request body (a `populate` of every proxy fits).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The version `/version` reports: Toxiproxy's API version this one follows, and
/// casebook's own as build metadata.
pub fn version() -> String {
    format!("2.12.0+casebook.{}", env!("CARGO_PKG_VERSION"))
}

/// The API, state applied; serve it on its own listener.
pub fn router(toxiproxy: Toxiproxy) -> Router {
    Router::new()
        .route("/proxies", get(list).post(create))
        .route("/populate", post(populate))
        .route(
            "/proxies/{proxy}",
            get(show).post(update).patch(update).delete(delete),
        )
        .route("/proxies/{proxy}/toxics", get(toxics).post(add_toxic))
        .route(
            "/proxies/{proxy}/toxics/{toxic}",
            get(toxic)
                .post(update_toxic)
                .patch(update_toxic)
                .delete(remove_toxic),
        )
        .route("/reset", post(reset))
        .route("/version", get(version_json))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(stop_browsers))
        .with_state(toxiproxy)
}

type Shared = State<Toxiproxy>;

/// Toxiproxy's `stopBrowsersMiddleware`.
async fn stop_browsers(request: Request, next: Next) -> Response {
    let browser = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|agent| agent.to_str().ok())
        .is_some_and(|agent| agent.starts_with("Mozilla/"));
    if browser {
        return (StatusCode::FORBIDDEN, "User agent not allowed\n").into_response();
    }
    next.run(request).await
}

async fn list(State(toxiproxy): Shared) -> Response {
    Json(toxiproxy.list()).into_response()
}

async fn create(State(toxiproxy): Shared, body: Bytes) -> Result<Response, ToxiError> {
    let spec = model::parse_proxy(&body)?;
    let json = toxiproxy.create(&spec)?;
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

async fn populate(State(toxiproxy): Shared, body: Bytes) -> Result<Response, ToxiError> {
    let specs = model::parse_populate(&body, toxiproxy.limits().max_proxies)?;
    Ok(match toxiproxy.populate(&specs) {
        Ok(proxies) => (StatusCode::CREATED, Json(json!({ "proxies": proxies }))).into_response(),
        Err((err, proxies)) => (
            err.status_code(),
            Json(json!({ "error": err.error, "status": err.status, "proxies": proxies })),
        )
            .into_response(),
    })
}

async fn show(State(toxiproxy): Shared, Path(proxy): Path<String>) -> Result<Response, ToxiError> {
    Ok(Json(toxiproxy.get(&proxy)?).into_response())
}

async fn update(
    State(toxiproxy): Shared,
    Path(proxy): Path<String>,
    body: Bytes,
) -> Result<Response, ToxiError> {
    // An unknown proxy is a 404 before its body is judged, as in Toxiproxy.
    toxiproxy.get(&proxy)?;
    let update = model::parse_proxy_update(&body)?;
    Ok(Json(toxiproxy.update(&proxy, &update)?).into_response())
}

async fn delete(
    State(toxiproxy): Shared,
    Path(proxy): Path<String>,
) -> Result<StatusCode, ToxiError> {
    toxiproxy.delete(&proxy)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn toxics(
    State(toxiproxy): Shared,
    Path(proxy): Path<String>,
) -> Result<Response, ToxiError> {
    Ok(Json(toxiproxy.toxics(&proxy)?).into_response())
}

async fn add_toxic(
    State(toxiproxy): Shared,
    Path(proxy): Path<String>,
    body: Bytes,
) -> Result<Response, ToxiError> {
    toxiproxy.get(&proxy)?;
    let spec = model::parse_toxic(&body)?;
    Ok(Json(toxiproxy.add_toxic(&proxy, &spec)?).into_response())
}

async fn toxic(
    State(toxiproxy): Shared,
    Path((proxy, toxic)): Path<(String, String)>,
) -> Result<Response, ToxiError> {
    Ok(Json(toxiproxy.toxic(&proxy, &toxic)?).into_response())
}

async fn update_toxic(
    State(toxiproxy): Shared,
    Path((proxy, toxic)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ToxiError> {
    toxiproxy.toxic(&proxy, &toxic)?;
    let update = model::parse_toxic_update(&body)?;
    Ok(Json(toxiproxy.update_toxic(&proxy, &toxic, &update)?).into_response())
}

async fn remove_toxic(
    State(toxiproxy): Shared,
    Path((proxy, toxic)): Path<(String, String)>,
) -> Result<StatusCode, ToxiError> {
    toxiproxy.remove_toxic(&proxy, &toxic)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn reset(State(toxiproxy): Shared) -> Result<StatusCode, ToxiError> {
    toxiproxy.reset()?;
    Ok(StatusCode::NO_CONTENT)
}

async fn version_json() -> Response {
    Json(json!({ "version": version() })).into_response()
}
