//! `/v1/inventory` and `/v1/reservations` over any [`InventoryStore`].
//!
//! | route | answers |
//! |---|---|
//! | `PUT /v1/inventory/{sku}` `{available}` | 200 stock level |
//! | `GET /v1/inventory/{sku}` | 200 `{sku, available, reserved, confirmed}` · 404 `unknown_sku` |
//! | `POST /v1/reservations` `{sku, qty, ttl_seconds?}` + `Idempotency-Key` | 201 reservation · 409 `insufficient_stock` |
//! | `GET /v1/reservations/{id}` | 200 reservation · 404 `unknown_reservation` |
//! | `POST /v1/reservations/{id}/confirm` | 200 (confirmed) · 409 `reservation_expired` / `reservation_released` |
//! | `POST /v1/reservations/{id}/release` | 200 (released; expired stays expired) · 409 `reservation_confirmed` |
//!
//! Bad input: no `Idempotency-Key` → 400 `idempotency_key_required`; the key with
//! another body → 422 `idempotency_key_reused`; the key while its first request is
//! undecided or not yet durable → 409 `idempotency_key_in_use`; a field out of range
//! → 400 `invalid_field` naming it; malformed JSON → 400 `invalid_json` naming the
//! field; storage down → 503 `storage_unavailable`. A replayed answer is the first
//! one byte for byte, with `idempotent-replayed: true`.
//!
//! Confirm and release need no key: doing either twice answers the same state.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use casebook_kit::api::parse_json;
use casebook_kit::idempotency::{
    Fingerprint, IDEMPOTENCY_KEY_HEADER, IdempotencyKey, REPLAYED_HEADER,
};
use serde::{Deserialize, Serialize};

use super::model::Reservation;
use super::model::{
    InventoryError, KeyScope, Keyed, Line, ReservationId, ReservationState, ReserveOutcome,
    ReserveRequest, Sku, TtlRule,
};
use super::store::InventoryStore;
use crate::error::CodedError;

/// The most units one stock level may be set to.
pub const MAX_STOCK: u64 = 1 << 48;

/// What the API accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The most units of one line (a reservation, a cart line at checkout).
    pub max_line_qty: u32,
    /// A reservation's TTL when the request names none.
    pub default_ttl: Duration,
    /// The longest TTL a request may ask for.
    pub max_ttl: Duration,
}

/// The inventory routes' state.
#[derive(Debug, Clone)]
pub struct InventoryApi {
    pub store: Arc<dyn InventoryStore>,
    pub limits: Limits,
}

/// The routes.
pub fn router(api: InventoryApi) -> Router {
    Router::new()
        .route("/v1/inventory/{sku}", get(get_stock).put(put_stock))
        .route("/v1/reservations", post(create_reservation))
        .route("/v1/reservations/{id}", get(get_reservation))
        .route("/v1/reservations/{id}/confirm", post(confirm_reservation))
        .route("/v1/reservations/{id}/release", post(release_reservation))
        .with_state(api)
}

/// A reservation on the wire.
#[derive(Debug, Serialize)]
pub struct ReservationBody {
    pub id: ReservationId,
    pub sku: String,
    pub qty: u32,
    pub state: ReservationState,
    pub created_at: String,
    pub expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
}

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z).
const LAST_RFC3339_SECOND: u64 = 253_402_300_799;

/// RFC 3339 with milliseconds, UTC (clamped to the year 9999).
pub fn timestamp(ms: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms.min(LAST_RFC3339_SECOND * 1000));
    humantime::format_rfc3339_millis(at).to_string()
}

impl From<&Reservation> for ReservationBody {
    fn from(r: &Reservation) -> Self {
        Self {
            id: r.id,
            sku: r.sku.to_string(),
            qty: r.qty,
            state: r.state,
            created_at: timestamp(r.created_at_ms),
            expires_at: timestamp(r.expires_at_ms),
            order_id: r.order_id.clone(),
        }
    }
}

/// Every store error as the API answers it.
impl From<InventoryError> for CodedError {
    fn from(error: InventoryError) -> Self {
        let message = error.to_string();
        match error {
            InventoryError::UnknownSku(_) => CodedError::not_found("unknown_sku", message),
            InventoryError::UnknownReservation(_) => {
                CodedError::not_found("unknown_reservation", message)
            }
            InventoryError::Conflict { state, .. } => CodedError::conflict(
                match state {
                    ReservationState::Expired => "reservation_expired",
                    ReservationState::Released => "reservation_released",
                    ReservationState::Confirmed => "reservation_confirmed",
                    ReservationState::Active => "reservation_active",
                },
                message,
            ),
            InventoryError::KeyReused => CodedError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                message,
            )
            .with_field("Idempotency-Key"),
            InventoryError::KeyInUse => CodedError::conflict("idempotency_key_in_use", message)
                .with_field("Idempotency-Key"),
            InventoryError::Full(_) => CodedError::unavailable("store_full", message),
            InventoryError::Unavailable(_) => {
                CodedError::unavailable("storage_unavailable", message)
            }
        }
    }
}

/// The request's idempotency key: required, and well-formed.
pub fn required_key(headers: &HeaderMap) -> Result<IdempotencyKey, CodedError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Err(CodedError::new(
            StatusCode::BAD_REQUEST,
            "idempotency_key_required",
            "the Idempotency-Key header is required",
        )
        .with_field("Idempotency-Key"));
    };
    value
        .to_str()
        .map_err(|_| "the key is not ASCII".to_owned())
        .and_then(|raw| IdempotencyKey::parse(raw).map_err(|e| e.to_string()))
        .map_err(|message| {
            CodedError::new(StatusCode::BAD_REQUEST, "invalid_idempotency_key", message)
                .with_field("Idempotency-Key")
        })
}

/// A path or body SKU, checked.
pub fn sku_field(field: &str, raw: &str) -> Result<Sku, CodedError> {
    Sku::parse(raw).map_err(|message| CodedError::invalid_field(field, message))
}

fn json<T: Serialize>(status: StatusCode, body: &T, replayed: bool) -> Response {
    let bytes = serde_json::to_vec(body).expect("response bodies serialise");
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

/// The body of `PUT /v1/inventory/{sku}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockRequest {
    pub available: i64,
}

/// The body of `POST /v1/reservations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservationRequest {
    pub sku: String,
    pub qty: i64,
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
}

/// A validated reservation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedReservation {
    pub sku: Sku,
    pub qty: u32,
    pub ttl: Duration,
}

impl CheckedReservation {
    /// Parses and checks a body; every refusal names its field.
    pub fn parse(body: &[u8], limits: &Limits) -> Result<Self, CodedError> {
        let request: ReservationRequest = parse_json(body).map_err(CodedError::from)?;
        let sku = sku_field("sku", &request.sku)?;
        let qty = check_qty("qty", request.qty, limits.max_line_qty)?;
        let ttl = match request.ttl_seconds {
            None => limits.default_ttl,
            Some(secs) => {
                let max = limits.max_ttl.as_secs();
                if secs < 1 || secs as u64 > max {
                    return Err(CodedError::invalid_field(
                        "ttl_seconds",
                        format!("ttl_seconds must be between 1 and {max}, got {secs}"),
                    ));
                }
                Duration::from_secs(secs as u64)
            }
        };
        Ok(Self { sku, qty, ttl })
    }

    /// What the key's fingerprint covers: the request as understood, so the same
    /// request spelled differently (field order, an explicit default) is the same.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&[
            b"reservation",
            self.sku.as_str().as_bytes(),
            &self.qty.to_le_bytes(),
            &self.ttl.as_secs().to_le_bytes(),
        ])
    }
}

/// Checks a line quantity: 1..=`max`.
pub fn check_qty(field: &str, qty: i64, max: u32) -> Result<u32, CodedError> {
    if qty < 1 || qty > i64::from(max) {
        return Err(CodedError::invalid_field(
            field,
            format!("{field} must be between 1 and {max}, got {qty}"),
        ));
    }
    Ok(qty as u32)
}

/// Parses and checks a stock body.
pub fn parse_stock(body: &[u8]) -> Result<u64, CodedError> {
    let request: StockRequest = parse_json(body).map_err(CodedError::from)?;
    if request.available < 0 || request.available as u64 > MAX_STOCK {
        return Err(CodedError::invalid_field(
            "available",
            format!(
                "available must be between 0 and {MAX_STOCK}, got {}",
                request.available
            ),
        ));
    }
    Ok(request.available as u64)
}

fn reservation_id(raw: &str) -> Result<ReservationId, CodedError> {
    ReservationId::parse(raw).ok_or_else(|| {
        CodedError::not_found(
            "unknown_reservation",
            format!("unknown reservation `{raw}` (ids look like res_42)"),
        )
    })
}

async fn put_stock(
    State(api): State<InventoryApi>,
    Path(sku): Path<String>,
    body: Bytes,
) -> Result<Response, CodedError> {
    let sku = sku_field("sku", &sku)?;
    let available = parse_stock(&body)?;
    let level = api.store.set_stock(&sku, available).await?;
    Ok(json(StatusCode::OK, &level, false))
}

async fn get_stock(
    State(api): State<InventoryApi>,
    Path(sku): Path<String>,
) -> Result<Response, CodedError> {
    let sku = sku_field("sku", &sku)?;
    let level = api.store.stock(&sku).await?;
    Ok(json(StatusCode::OK, &level, false))
}

/// The answer to a reservation request's outcome: the same bytes every time.
pub fn outcome_response(outcome: &ReserveOutcome, replayed: bool) -> Response {
    match outcome {
        ReserveOutcome::Reserved(made) => {
            let body = ReservationBody::from(made.first().expect("a request has a line"));
            json(StatusCode::CREATED, &body, replayed)
        }
        ReserveOutcome::Insufficient {
            sku,
            requested,
            available,
        } => {
            let error = CodedError::conflict(
                "insufficient_stock",
                format!("{requested} of `{sku}` requested, {available} available"),
            )
            .with_field("qty");
            json(StatusCode::CONFLICT, &error, replayed)
        }
    }
}

async fn create_reservation(
    State(api): State<InventoryApi>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, CodedError> {
    let key = required_key(&headers)?;
    let request = CheckedReservation::parse(&body, &api.limits)?;
    let answer = api
        .store
        .reserve(ReserveRequest {
            key: Keyed {
                scope: KeyScope::Reservation,
                key,
                fingerprint: request.fingerprint(),
            },
            lines: vec![Line {
                sku: request.sku,
                qty: request.qty,
            }],
            ttl: request.ttl,
        })
        .await?;
    Ok(outcome_response(&answer.value, answer.replayed))
}

async fn get_reservation(
    State(api): State<InventoryApi>,
    Path(id): Path<String>,
) -> Result<Response, CodedError> {
    let reservation = api.store.reservation(reservation_id(&id)?).await?;
    Ok(json(
        StatusCode::OK,
        &ReservationBody::from(&reservation),
        false,
    ))
}

async fn confirm_reservation(
    State(api): State<InventoryApi>,
    Path(id): Path<String>,
) -> Result<Response, CodedError> {
    let id = reservation_id(&id)?;
    let confirmed = api.store.confirm(&[id], None, TtlRule::Enforce).await?;
    let reservation = confirmed.first().expect("one id, one reservation");
    Ok(json(
        StatusCode::OK,
        &ReservationBody::from(reservation),
        false,
    ))
}

async fn release_reservation(
    State(api): State<InventoryApi>,
    Path(id): Path<String>,
) -> Result<Response, CodedError> {
    let reservation = api.store.release(reservation_id(&id)?).await?;
    Ok(json(
        StatusCode::OK,
        &ReservationBody::from(&reservation),
        false,
    ))
}
