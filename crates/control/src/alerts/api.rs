//! The alert engine's HTTP API (behind the control plane's `AccessPolicy`, like
//! every route: changes need the installation's token).
//!
//! | method and path | does | answers |
//! |---|---|---|
//! | `GET /api/alerts` | every rule with its state and alerts, the action queue, the log (newest first, bounded by `alerts.log`) | 200 [`AlertsView`] |
//! | `POST /api/alerts/rules` | add a rule (the `[[alerts.rules]]` shape, JSON) | 201 with the rule, 400 naming the field, 409 when the name exists or the rules are full |
//! | `GET /api/alerts/rules/{name}` | one rule, its state and alerts | 200 [`RuleView`], 404 |
//! | `PUT /api/alerts/rules/{name}` | add or replace the rule (`name` in the body may be left out; if given it must be the path's); a changed condition starts its alerts afresh, its firing ones announced resolved | 201 created / 200 replaced `{"rule", "created"}`, 400, 409 when full |
//! | `DELETE /api/alerts/rules/{name}` | remove the rule (its firing alerts are announced resolved: `on_resolve` actions run) | 200 `{"removed": rule}`, 404 |
//!
//! Changes made here live in memory: a restarted control plane starts from its
//! configuration again.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use casebook_kit::api::{ApiError, JsonBody};
use serde_json::json;

use super::config::Rule;
use super::engine::{Alerts, AlertsView, ChangeError, RuleView};

/// The largest body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The alert routes, state applied.
pub fn router(alerts: Arc<Alerts>) -> Router {
    Router::new()
        .route("/api/alerts", get(view))
        .route("/api/alerts/rules", post(add_rule))
        .route(
            "/api/alerts/rules/{name}",
            get(get_rule).put(put_rule).delete(delete_rule),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(alerts)
}

type Shared = State<Arc<Alerts>>;

fn change_error(error: ChangeError) -> ApiError {
    match error {
        ChangeError::Invalid(e) => ApiError::bad_field(e.key(), e.message()),
        ChangeError::Conflict(message) => ApiError::new(StatusCode::CONFLICT, message),
    }
}

fn path_error(rejection: PathRejection) -> ApiError {
    ApiError::bad_request(format!("invalid path: {}", rejection.body_text()))
}

fn no_rule(name: &str) -> ApiError {
    ApiError::not_found(format!("no alert rule `{name}`"))
}

async fn view(State(alerts): Shared) -> Json<AlertsView> {
    Json(alerts.view())
}

async fn add_rule(
    State(alerts): Shared,
    JsonBody(rule): JsonBody<Rule>,
) -> Result<impl IntoResponse, ApiError> {
    alerts.add_rule(rule.clone()).map_err(change_error)?;
    Ok((StatusCode::CREATED, Json(rule)))
}

async fn get_rule(
    State(alerts): Shared,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<RuleView>, ApiError> {
    let Path(name) = name.map_err(path_error)?;
    alerts
        .rule_view(&name)
        .map(Json)
        .ok_or_else(|| no_rule(&name))
}

async fn put_rule(
    State(alerts): Shared,
    name: Result<Path<String>, PathRejection>,
    JsonBody(mut rule): JsonBody<Rule>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(name) = name.map_err(path_error)?;
    if rule.name.is_empty() {
        rule.name = name.clone();
    } else if rule.name != name {
        return Err(ApiError::bad_field(
            "name",
            format!(
                "`{}` is not the path's rule `{name}`; leave it out or make them one",
                rule.name
            ),
        ));
    }
    let created = alerts.put_rule(rule.clone()).map_err(change_error)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({ "rule": rule, "created": created }))))
}

async fn delete_rule(
    State(alerts): Shared,
    name: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(name) = name.map_err(path_error)?;
    let removed = alerts.remove_rule(&name).ok_or_else(|| no_rule(&name))?;
    Ok(Json(json!({ "removed": removed })))
}
