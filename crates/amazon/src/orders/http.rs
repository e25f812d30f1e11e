//! `/v1/checkout` and `/v1/orders`.
//!
//! | route | answers |
//! |---|---|
//! | `POST /v1/checkout/{user}` + `Idempotency-Key` | 201 order · 409 `insufficient_stock` / `cart_empty` / `idempotency_key_in_use` · 503 `cart_unavailable` |
//! | `GET /v1/orders/{id}` | 200 order · 404 `unknown_order` |
//! | `GET /v1/users/{user}/orders?limit=N` | 200 `{orders: [...]}`, newest first (default 50, at most 500) |
//!
//! A replayed checkout answers the first order, byte for byte, with
//! `idempotent-replayed: true`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use casebook_kit::idempotency::REPLAYED_HEADER;
use serde::{Deserialize, Serialize};

use super::checkout::{Checkout, CheckoutError};
use super::store::{Order, OrderError, OrderLine, OrderStore};
use crate::error::CodedError;
use crate::inventory::http::{required_key, timestamp};
use crate::inventory::model::check_name;

/// Orders listed per page by default, and at most.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

/// The order routes' state.
#[derive(Debug, Clone)]
pub struct OrdersApi {
    pub checkout: Arc<Checkout>,
    pub orders: Arc<dyn OrderStore>,
}

pub fn router(api: OrdersApi) -> Router {
    Router::new()
        .route("/v1/checkout/{user}", post(checkout))
        .route("/v1/orders/{id}", get(order))
        .route("/v1/users/{user}/orders", get(orders_of))
        .with_state(api)
}

/// An order on the wire.
#[derive(Debug, Serialize)]
pub struct OrderBody<'a> {
    pub id: &'a str,
    pub user: &'a str,
    pub state: &'static str,
    pub lines: &'a [OrderLine],
    pub created_at: String,
}

impl<'a> From<&'a Order> for OrderBody<'a> {
    fn from(order: &'a Order) -> Self {
        Self {
            id: &order.id,
            user: &order.user,
            state: "placed",
            lines: &order.lines,
            created_at: timestamp(order.created_at_ms),
        }
    }
}

impl From<OrderError> for CodedError {
    fn from(error: OrderError) -> Self {
        CodedError::unavailable("storage_unavailable", error.to_string())
    }
}

impl From<CheckoutError> for CodedError {
    fn from(error: CheckoutError) -> Self {
        let message = error.to_string();
        match error {
            CheckoutError::KeyInUse => CodedError::conflict("idempotency_key_in_use", message)
                .with_field("Idempotency-Key"),
            CheckoutError::KeyTooLong(_) => {
                CodedError::new(StatusCode::BAD_REQUEST, "invalid_idempotency_key", message)
                    .with_field("Idempotency-Key")
            }
            CheckoutError::CartEmpty => CodedError::conflict("cart_empty", message),
            CheckoutError::TooManyLines { .. } => CodedError::conflict("too_many_lines", message),
            CheckoutError::LineTooLarge { .. } | CheckoutError::BadLine { .. } => {
                CodedError::conflict("invalid_cart_line", message)
            }
            CheckoutError::CartUnavailable(_) => {
                CodedError::unavailable("cart_unavailable", message)
            }
            CheckoutError::Insufficient { .. } => {
                CodedError::conflict("insufficient_stock", message)
            }
            CheckoutError::Inventory(error) => error.into(),
            CheckoutError::Orders(error) => error.into(),
        }
    }
}

fn user_field(raw: &str) -> Result<&str, CodedError> {
    check_name("user", raw).map_err(|message| CodedError::invalid_field("user", message))?;
    Ok(raw)
}

fn order_json(status: StatusCode, order: &Order, replayed: bool) -> Response {
    let bytes = serde_json::to_vec(&OrderBody::from(order)).expect("orders serialise");
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response();
    if replayed {
        response
            .headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    response
}

async fn checkout(
    State(api): State<OrdersApi>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Result<Response, CodedError> {
    let key = required_key(&headers)?;
    let user = user_field(&user)?;
    let placed = api.checkout.checkout(user, &key).await?;
    Ok(order_json(
        StatusCode::CREATED,
        &placed.value,
        placed.replayed,
    ))
}

async fn order(
    State(api): State<OrdersApi>,
    Path(id): Path<String>,
) -> Result<Response, CodedError> {
    match api.orders.order(&id).await? {
        Some(order) => Ok(order_json(StatusCode::OK, &order, false)),
        None => Err(CodedError::not_found(
            "unknown_order",
            format!("unknown order `{id}`"),
        )),
    }
}

/// `?limit=N`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    limit: Option<i64>,
}

#[derive(Debug, Serialize)]
struct OrderList<'a> {
    orders: Vec<OrderBody<'a>>,
}

async fn orders_of(
    State(api): State<OrdersApi>,
    Path(user): Path<String>,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, CodedError> {
    let user = user_field(&user)?;
    let Query(page) = page.map_err(|e| CodedError::invalid_field("limit", e.body_text()))?;
    let limit = match page.limit {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=MAX_LIMIT as i64).contains(&n) => n as usize,
        Some(n) => {
            return Err(CodedError::invalid_field(
                "limit",
                format!("limit must be between 1 and {MAX_LIMIT}, got {n}"),
            ));
        }
    };
    let orders = api.orders.orders_of(user, limit).await?;
    let body = OrderList {
        orders: orders.iter().map(OrderBody::from).collect(),
    };
    let bytes = serde_json::to_vec(&body).expect("orders serialise");
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response())
}
