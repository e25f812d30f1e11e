//! The discovery HTTP API, mirroring Eureka's REST API under `/api/discovery`.
//!
//! | method and path | does | answers |
//! |---|---|---|
//! | `POST /apps/{service}` | register (JSON [`Registration`]; `instance.service` must match the path) | 204, 400, 429 beyond a per-service or per-caller bound, 503 when full |
//! | `GET /apps` | every instance, grouped by service | 200 [`Applications`](casebook_kit::discovery::Applications) |
//! | `GET /apps/{service}?zone=&region=&all_statuses=` | the service's instances, nearest first, `UP` only unless `all_statuses=true` | 200 [`ServiceInstances`](casebook_kit::discovery::ServiceInstances), 400 |
//! | `GET /apps/{service}/{id}` | one instance | 200 [`InstanceView`](casebook_kit::discovery::InstanceView), 404 |
//! | `PUT /apps/{service}/{id}` | renew | 200, 404 (register again) |
//! | `DELETE /apps/{service}/{id}` | cancel (graceful stop) | 200, 404 |
//! | `PUT /apps/{service}/{id}/status?value=OUT_OF_SERVICE` | override the status | 200 with the instance, 400, 404 |
//! | `DELETE /apps/{service}/{id}/status` | drop the override | 200 with the instance, 404 |
//! | `GET /regions` | the region-wide overrides in force | 200 `[{region, status, exempt, since_ms}]` |
//! | `PUT /regions/{region}/status?value=OUT_OF_SERVICE` | override every instance of the region (the control plane exempt) | 200 with the override, 404 for an unknown region |
//! | `DELETE /regions/{region}/status` | drop the region's override | 200 `{"removed"}`, 404 for an unknown region |
//! | `GET /status` | counts, threshold, renewals, self-preservation | 200 [`DiscoveryStatus`](casebook_kit::discovery::DiscoveryStatus) |
//!
//! Every error is a JSON [`ApiError`], with `field` naming the request part at fault
//! (a body field as a dotted path, or a query parameter). An unknown service is an
//! empty list, not a 404 as in Eureka: a caller resolving a service that has not
//! started yet is not making a mistake.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use casebook_kit::api::{ApiError, JsonBody};
use casebook_kit::discovery::{API_PREFIX, Registration};
use casebook_kit::topology::InstanceStatus;

use super::registry::{Registry, RegistryError};

/// The largest registration body accepted.
pub const MAX_REGISTRATION_BYTES: usize = 64 * 1024;

/// The discovery API, with its state applied; mount it at the root of the control
/// plane's router (its paths start with `/api/discovery`).
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route(&format!("{API_PREFIX}/apps"), get(all))
        .route(
            &format!("{API_PREFIX}/apps/{{service}}"),
            get(instances)
                .post(register)
                .layer(DefaultBodyLimit::max(MAX_REGISTRATION_BYTES)),
        )
        .route(
            &format!("{API_PREFIX}/apps/{{service}}/{{instance_id}}"),
            get(one).put(renew).delete(cancel),
        )
        .route(
            &format!("{API_PREFIX}/apps/{{service}}/{{instance_id}}/status"),
            put(set_status).delete(clear_status),
        )
        .route(&format!("{API_PREFIX}/regions"), get(regions))
        .route(
            &format!("{API_PREFIX}/regions/{{region}}/status"),
            put(set_region_status).delete(clear_region_status),
        )
        .route(&format!("{API_PREFIX}/status"), get(status))
        .with_state(registry)
}

type Shared = State<Arc<Registry>>;
type Pairs = Result<Query<Vec<(String, String)>>, QueryRejection>;

fn registry_error(err: RegistryError) -> ApiError {
    match err {
        RegistryError::NotFound { .. } => ApiError::not_found(err.to_string()),
        RegistryError::Invalid { field, reason } => ApiError::bad_field(field, reason),
        RegistryError::Full { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
        }
        RegistryError::TooMany { .. } => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, err.to_string())
        }
    }
}

fn path_error(rejection: PathRejection) -> ApiError {
    ApiError::bad_request(format!("invalid path: {}", rejection.body_text()))
}

/// The query parameters, each allowed key at most once; anything else is a 400
/// naming the parameter.
fn query_params<const N: usize>(
    query: Pairs,
    allowed: [&'static str; N],
) -> Result<[Option<String>; N], ApiError> {
    let Query(pairs) =
        query.map_err(|r| ApiError::bad_request(format!("invalid query: {}", r.body_text())))?;
    let mut values: [Option<String>; N] = std::array::from_fn(|_| None);
    for (key, value) in pairs {
        let Some(slot) = allowed.iter().position(|allowed| *allowed == key) else {
            return Err(ApiError::bad_field(
                key.clone(),
                format!("unknown query parameter `{key}` (expected one of {allowed:?})"),
            ));
        };
        if values[slot].replace(value).is_some() {
            return Err(ApiError::bad_field(
                key.clone(),
                format!("`{key}` is given twice"),
            ));
        }
    }
    Ok(values)
}

async fn register(
    State(registry): Shared,
    path: Result<Path<String>, PathRejection>,
    extensions: axum::http::Extensions,
    JsonBody(registration): JsonBody<Registration>,
) -> Result<StatusCode, ApiError> {
    // The caller's address, when the server records it (`ConnectInfo`): the
    // per-caller bound counts by it.
    let source = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    let Path(service) = path.map_err(path_error)?;
    if registration.instance.service != service {
        return Err(ApiError::bad_field(
            "instance.service",
            format!(
                "the body registers `{}` but the path says `{service}`",
                registration.instance.service
            ),
        ));
    }
    registry
        .register_from(registration, source)
        .map_err(registry_error)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn renew(
    State(registry): Shared,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path((service, instance_id)) = path.map_err(path_error)?;
    registry
        .renew(&service, &instance_id)
        .map_err(registry_error)?;
    Ok(StatusCode::OK)
}

async fn cancel(
    State(registry): Shared,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path((service, instance_id)) = path.map_err(path_error)?;
    registry
        .cancel(&service, &instance_id)
        .map_err(registry_error)?;
    Ok(StatusCode::OK)
}

async fn one(
    State(registry): Shared,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((service, instance_id)) = path.map_err(path_error)?;
    let view = registry.get(&service, &instance_id).ok_or_else(|| {
        registry_error(RegistryError::NotFound {
            service,
            instance_id,
        })
    })?;
    Ok(Json(view).into_response())
}

async fn set_status(
    State(registry): Shared,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Pairs,
) -> Result<Response, ApiError> {
    let Path((service, instance_id)) = path.map_err(path_error)?;
    let [value] = query_params(query, ["value"])?;
    let value = value.ok_or_else(|| {
        ApiError::bad_field(
            "value",
            "missing `value` (UP, DOWN, STARTING or OUT_OF_SERVICE)",
        )
    })?;
    let status = parse_status(&value)?;
    let view = registry
        .override_status(&service, &instance_id, Some(status))
        .map_err(registry_error)?;
    Ok(Json(view).into_response())
}

async fn clear_status(
    State(registry): Shared,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((service, instance_id)) = path.map_err(path_error)?;
    let view = registry
        .override_status(&service, &instance_id, None)
        .map_err(registry_error)?;
    Ok(Json(view).into_response())
}

async fn regions(State(registry): Shared) -> Response {
    Json(registry.region_overrides()).into_response()
}

/// An unknown region is a 404 here: the path names it.
fn region_error(err: RegistryError) -> ApiError {
    match err {
        RegistryError::Invalid { field, reason } if field == "region" => {
            ApiError::not_found(reason)
        }
        other => registry_error(other),
    }
}

async fn set_region_status(
    State(registry): Shared,
    path: Result<Path<String>, PathRejection>,
    query: Pairs,
) -> Result<Response, ApiError> {
    let Path(region) = path.map_err(path_error)?;
    let [value] = query_params(query, ["value"])?;
    let value = value.ok_or_else(|| {
        ApiError::bad_field(
            "value",
            "missing `value` (UP, DOWN, STARTING or OUT_OF_SERVICE)",
        )
    })?;
    let status = parse_status(&value)?;
    let exempt = vec![crate::CONTROL_SERVICE.to_owned()];
    registry
        .override_region(&region, Some(status), exempt)
        .map_err(region_error)?;
    let set = registry
        .region_overrides()
        .into_iter()
        .find(|o| o.region == region);
    Ok(Json(set).into_response())
}

async fn clear_region_status(
    State(registry): Shared,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(region) = path.map_err(path_error)?;
    let removed = registry
        .override_region(&region, None, Vec::new())
        .map_err(region_error)?;
    Ok(Json(serde_json::json!({ "removed": removed })).into_response())
}

fn parse_status(value: &str) -> Result<InstanceStatus, ApiError> {
    match value {
        "UP" => Ok(InstanceStatus::Up),
        "DOWN" => Ok(InstanceStatus::Down),
        "STARTING" => Ok(InstanceStatus::Starting),
        "OUT_OF_SERVICE" => Ok(InstanceStatus::OutOfService),
        other => Err(ApiError::bad_field(
            "value",
            format!("`{other}` is not UP, DOWN, STARTING or OUT_OF_SERVICE"),
        )),
    }
}

async fn instances(
    State(registry): Shared,
    path: Result<Path<String>, PathRejection>,
    query: Pairs,
) -> Result<Response, ApiError> {
    let Path(service) = path.map_err(path_error)?;
    let [zone, region, all_statuses] = query_params(query, ["zone", "region", "all_statuses"])?;
    let all_statuses = match all_statuses.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_field(
                "all_statuses",
                format!("`{other}` is not `true` or `false`"),
            ));
        }
    };
    let answer = registry
        .instances(&service, region.as_deref(), zone.as_deref(), all_statuses)
        .map_err(registry_error)?;
    Ok(Json(answer).into_response())
}

async fn all(State(registry): Shared) -> Response {
    Json(registry.all()).into_response()
}

async fn status(State(registry): Shared) -> Response {
    Json(registry.status()).into_response()
}
