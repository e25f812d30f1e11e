//! The cart's public routes on the `amazon` API (:8100).
//!
//! | route | body | answer |
//! |---|---|---|
//! | `GET /v1/carts/{user}` | | the merged cart: `{user, lines: [{sku, qty}], context, replicas: {answered, asked}}` |
//! | `POST /v1/carts/{user}/items` | `{sku, qty}` | the cart after the add, `stored_at` (the zone that took it), `hinted_for` |
//! | `PUT /v1/carts/{user}/items/{sku}` | `{qty}` | the cart after the set |
//! | `DELETE /v1/carts/{user}/items/{sku}?context=…` | | the cart after the remove |
//!
//! A remove takes what the client observed: the `context` of its last read.
//! Without one it removes what the coordinator's own read observes. A set and a
//! remove carry the coordinator's read to the replica, so they act on everything
//! that read saw.
//!
//! Errors are JSON `{error, field?, code}`: 400 `invalid_user` / `invalid_sku` /
//! `invalid_qty` (≤ 0 or above the per-line limit) / `invalid_context` /
//! `invalid_json` (naming the field); 409 `cart_full`; 413, 415 from the body
//! extractor; 503 `cart_unavailable` only when no replica can answer.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use casebook_kit::api::{ApiError, JsonBody};
use serde::{Deserialize, Serialize};

use super::coordinator::{Coordinator, Written};
use super::model::{self, CartView, code};
use super::wire::Op;

/// The cart routes, state applied.
pub fn router(coordinator: Arc<Coordinator>) -> Router {
    Router::new()
        .route("/v1/carts/{user}", get(read))
        .route("/v1/carts/{user}/items", post(add))
        .route("/v1/carts/{user}/items/{sku}", put(set).delete(remove))
        .with_state(coordinator)
}

/// `POST /v1/carts/{user}/items`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    pub sku: String,
    pub qty: i64,
}

/// `PUT /v1/carts/{user}/items/{sku}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetBody {
    pub qty: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveQuery {
    context: Option<String>,
}

/// How many replicas a read heard from.
#[derive(Debug, Serialize)]
struct Answered {
    answered: usize,
    asked: usize,
}

#[derive(Debug, Serialize)]
struct ReadView {
    #[serde(flatten)]
    cart: CartView,
    replicas: Answered,
}

#[derive(Debug, Serialize)]
struct WriteView {
    #[serde(flatten)]
    cart: CartView,
    stored_at: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hinted_for: Vec<String>,
}

fn written(user: &str, written: Written, max_line_qty: u32) -> Json<WriteView> {
    Json(WriteView {
        cart: CartView::of(user, &written.cart, max_line_qty),
        stored_at: written.zone,
        hinted_for: written.hinted,
    })
}

fn user_and_sku(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), ApiError> {
    let Path((user, sku)) =
        path.map_err(|e| ApiError::bad_field("sku", e.body_text()).with_code(code::INVALID_SKU))?;
    model::check_user(&user)?;
    model::check_sku(&sku)?;
    Ok((user, sku))
}

async fn read(
    State(coordinator): State<Arc<Coordinator>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ReadView>, ApiError> {
    let user = model::user_of(path)?;
    let read = coordinator.read(&user).await?;
    Ok(Json(ReadView {
        cart: CartView::of(&user, &read.cart, coordinator.config().max_line_qty),
        replicas: Answered {
            answered: read.answered,
            asked: read.asked,
        },
    }))
}

async fn add(
    State(coordinator): State<Arc<Coordinator>>,
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<AddBody>,
) -> Result<Json<WriteView>, ApiError> {
    let user = model::user_of(path)?;
    model::check_sku(&body.sku)?;
    let max = coordinator.config().max_line_qty;
    let qty = model::check_qty(body.qty, max)?;
    let done = coordinator
        .write(
            &user,
            vec![Op::Add {
                sku: body.sku.clone(),
                qty,
            }],
            None,
        )
        .await?;
    coordinator.added(&user, &body.sku);
    Ok(written(&user, done, max))
}

async fn set(
    State(coordinator): State<Arc<Coordinator>>,
    path: Result<Path<(String, String)>, PathRejection>,
    JsonBody(body): JsonBody<SetBody>,
) -> Result<Json<WriteView>, ApiError> {
    let (user, sku) = user_and_sku(path)?;
    let max = coordinator.config().max_line_qty;
    let qty = model::check_qty(body.qty, max)?;
    let observed = coordinator.read(&user).await?.cart;
    let done = coordinator
        .write(&user, vec![Op::Set { sku, qty }], Some(observed))
        .await?;
    Ok(written(&user, done, max))
}

async fn remove(
    State(coordinator): State<Arc<Coordinator>>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<RemoveQuery>, QueryRejection>,
) -> Result<Json<WriteView>, ApiError> {
    let (user, sku) = user_and_sku(path)?;
    let Query(query) = query.map_err(|e| {
        ApiError::bad_field("context", e.body_text()).with_code(code::INVALID_CONTEXT)
    })?;
    let given = query
        .context
        .as_deref()
        .map(model::parse_context)
        .transpose()?;
    let observed = coordinator.read(&user).await?.cart;
    let context = given.unwrap_or_else(|| observed.clock().clone());
    let done = coordinator
        .write(&user, vec![Op::Remove { sku, context }], Some(observed))
        .await?;
    Ok(written(&user, done, coordinator.config().max_line_qty))
}
