//! The replica's internal HTTP routes (see [`crate::cart::wire`] for the bodies).

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use casebook_kit::api::{ApiError, JsonBody};

use super::Replica;
use crate::cart::model::{self, code};
use crate::cart::store::{BUCKETS, StoreError};
use crate::cart::wire::{
    BUCKET_PATH, BucketRequest, BucketResponse, CART_PATH, CartResponse, DIGEST_PATH,
    DigestRequest, DigestResponse, MAX_BATCH, MAX_BODY_BYTES, MAX_BUCKET_LISTING, MAX_OPS,
    MERGE_PATH, MergeRequest, MergeResponse, OPS_PATH, OpRequest, OpResponse, ReplicaStatus,
    STATUS_PATH,
};

/// The replica's routes, state applied.
pub fn router(replica: Arc<Replica>) -> Router {
    Router::new()
        .route(OPS_PATH, post(write))
        .route(CART_PATH, get(read))
        .route(MERGE_PATH, post(merge))
        .route(DIGEST_PATH, post(digest))
        .route(BUCKET_PATH, post(bucket))
        .route(STATUS_PATH, get(status))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(replica)
}

/// A store error as the API answers it.
pub(crate) fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::Storage(why) => model::unavailable(code::STORAGE_UNAVAILABLE, why),
        StoreError::CartFull { ref sku, .. } => {
            let sku = sku.clone();
            ApiError {
                field: Some("sku".to_owned()),
                ..ApiError::new(
                    StatusCode::CONFLICT,
                    format!("{error}; {sku} was not added"),
                )
                .with_code(code::CART_FULL)
            }
        }
        StoreError::TooManyPendingRemoves => ApiError::new(StatusCode::CONFLICT, error.to_string())
            .with_code(code::TOO_MANY_PENDING_REMOVES),
        StoreError::Invalid { field, reason } => {
            let code = match field {
                "sku" => code::INVALID_SKU,
                "qty" => code::INVALID_QTY,
                "context" => code::INVALID_CONTEXT,
                "user" => code::INVALID_USER,
                _ => code::INVALID_STATE,
            };
            ApiError::bad_field(field, reason).with_code(code)
        }
        StoreError::Corrupt { .. } => {
            ApiError::internal(error.to_string()).with_code(code::STORAGE_UNAVAILABLE)
        }
    }
}

async fn write(
    State(replica): State<Arc<Replica>>,
    path: Result<Path<String>, PathRejection>,
    JsonBody(request): JsonBody<OpRequest>,
) -> Result<Json<OpResponse>, ApiError> {
    let user = model::user_of(path)?;
    if request.ops.is_empty() || request.ops.len() > MAX_OPS {
        return Err(
            ApiError::bad_field("ops", format!("1 to {MAX_OPS} operations"))
                .with_code(code::INVALID_STATE),
        );
    }
    for zone in &request.hints {
        model::check_zone(zone)?;
    }
    let hints = replica.hints_for_write(&request.hints);
    let cart = replica
        .store
        .write(&user, &request.ops, request.observed.as_ref(), &hints)
        .await
        .map_err(store_error)?;
    replica.queue_push(&user);
    metrics::counter!("casebook_amazon_cart_writes_total", "hinted" => if request.hints.is_empty() { "no" } else { "yes" })
        .increment(1);
    Ok(Json(OpResponse {
        cart,
        zone: replica.zone.clone(),
    }))
}

async fn read(
    State(replica): State<Arc<Replica>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<CartResponse>, ApiError> {
    let user = model::user_of(path)?;
    Ok(Json(CartResponse {
        cart: replica.store.get(&user).unwrap_or_default(),
        zone: replica.zone.clone(),
    }))
}

async fn merge(
    State(replica): State<Arc<Replica>>,
    JsonBody(request): JsonBody<MergeRequest>,
) -> Result<Json<MergeResponse>, ApiError> {
    if request.carts.len() > MAX_BATCH {
        return Err(
            ApiError::bad_field("carts", format!("at most {MAX_BATCH} carts"))
                .with_code(code::INVALID_STATE),
        );
    }
    let changed = replica
        .store
        .merge(&request.carts)
        .await
        .map_err(store_error)?;
    Ok(Json(MergeResponse { changed }))
}

async fn digest(
    State(replica): State<Arc<Replica>>,
    JsonBody(request): JsonBody<DigestRequest>,
) -> Result<Json<DigestResponse>, ApiError> {
    if request.buckets.len() != BUCKETS {
        return Err(
            ApiError::bad_field("buckets", format!("exactly {BUCKETS} buckets"))
                .with_code(code::INVALID_STATE),
        );
    }
    let differ = replica
        .store
        .digest()
        .iter()
        .zip(&request.buckets)
        .enumerate()
        .filter(|(_, (mine, theirs))| mine != theirs)
        .map(|(b, _)| b as u32)
        .collect();
    Ok(Json(DigestResponse { differ }))
}

async fn bucket(
    State(replica): State<Arc<Replica>>,
    JsonBody(request): JsonBody<BucketRequest>,
) -> Result<Json<BucketResponse>, ApiError> {
    let bucket = request.bucket as usize;
    if bucket >= BUCKETS {
        return Err(
            ApiError::bad_field("bucket", format!("a bucket below {BUCKETS}"))
                .with_code(code::INVALID_STATE),
        );
    }
    if request.carts.len() > MAX_BUCKET_LISTING {
        return Err(
            ApiError::bad_field("carts", format!("at most {MAX_BUCKET_LISTING} carts"))
                .with_code(code::INVALID_STATE),
        );
    }
    for (user, _) in &request.carts {
        model::check_user(user)?;
    }
    let (carts, want, more) =
        replica
            .store
            .compare_bucket(bucket, &request.carts, replica.config.batch);
    Ok(Json(BucketResponse { carts, want, more }))
}

async fn status(State(replica): State<Arc<Replica>>) -> Json<ReplicaStatus> {
    Json(replica.status())
}
