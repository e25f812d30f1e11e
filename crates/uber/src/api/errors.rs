//! Engine errors as HTTP answers (the kit's JSON error format), and path ids.

use axum::extract::rejection::BytesRejection;
use casebook_kit::api::ApiError;
use http::StatusCode;

use crate::index::IndexError;
use crate::matching::MatchError;
use crate::pricing::PricingError;
use crate::trips::TripError;

pub(crate) fn index_error(e: IndexError) -> ApiError {
    match e {
        IndexError::BatchTooLarge { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
        }
        IndexError::UnknownDriver { .. } => ApiError::not_found(e.to_string()),
        IndexError::WrongStatus { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        IndexError::TooManyDrivers { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        IndexError::InvalidLatitude { .. } => ApiError::bad_field("lat", e.to_string()),
        IndexError::InvalidLongitude { .. } => ApiError::bad_field("lon", e.to_string()),
        IndexError::ServerOwnedStatus { .. } => ApiError::bad_field("status", e.to_string()),
        IndexError::FutureTimestamp { .. } => ApiError::bad_field("ts", e.to_string()),
        _ => ApiError::bad_request(e.to_string()),
    }
}

pub(crate) fn match_error(e: MatchError) -> ApiError {
    match e {
        MatchError::UnknownRide(_) => ApiError::not_found(e.to_string()),
        MatchError::NoSuchOffer { .. } | MatchError::Finished(_) => {
            ApiError::new(StatusCode::CONFLICT, e.to_string())
        }
        MatchError::QueueFull(_) | MatchError::TooManyRides(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        MatchError::BadConfig(_) => ApiError::bad_request(e.to_string()),
    }
}

pub(crate) fn trip_error(e: TripError) -> ApiError {
    match e {
        TripError::UnknownTrip(_) => ApiError::not_found(e.to_string()),
        TripError::IllegalTransition { .. } | TripError::Conflict { .. } => {
            ApiError::new(StatusCode::CONFLICT, e.to_string())
        }
        TripError::BadInput(_) => ApiError::bad_request(e.to_string()),
        TripError::Store(_) => ApiError::internal(e.to_string()),
    }
}

pub(crate) fn parse_id(field: &str, raw: &str) -> Result<u64, ApiError> {
    raw.parse::<u64>().map_err(|_| {
        ApiError::bad_field(
            field,
            format!("{field} must be an unsigned integer, not {raw:?}"),
        )
    })
}

pub(crate) fn pricing_error(e: PricingError) -> ApiError {
    match e {
        PricingError::Rejected { error, field, .. } => ApiError {
            field,
            ..ApiError::bad_request(error)
        },
        PricingError::Unavailable { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    }
}

/// A body the route read by hand (not through `JsonBody`) and axum refused, in
/// the JSON error format like every other refusal.
pub(crate) fn body_rejection(rejection: BytesRejection) -> ApiError {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(status, "request body is too large")
    } else {
        ApiError::new(status, rejection.body_text())
    }
}
