//! Toxiproxy's error body: `{"error": "...", "status": N}` with the same status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error as Toxiproxy 2.x reports it. Messages start with Toxiproxy's own
/// (`proxy not found`, `bad request body: …`) so clients matching on them keep
/// working; what follows the colon is casebook's precise reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{error} ({status})")]
pub struct ToxiError {
    /// The message.
    pub error: String,
    /// The HTTP status, repeated in the body as Toxiproxy does.
    pub status: u16,
}

impl ToxiError {
    fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            status: status.as_u16(),
        }
    }

    /// `400 bad request body: {reason}`.
    pub fn bad_body(reason: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("bad request body: {reason}"),
        )
    }

    /// `400 missing required field: {field}`.
    pub fn missing(field: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("missing required field: {field}"),
        )
    }

    /// `404 proxy not found`, naming it.
    pub fn proxy_not_found(name: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("proxy not found: {name}"))
    }

    /// `404` for anything else not found.
    pub fn not_found(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, reason)
    }

    /// `409 proxy already exists`, naming it.
    pub fn proxy_exists(name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            format!("proxy already exists: {name}"),
        )
    }

    /// `404 toxic not found`, naming it.
    pub fn toxic_not_found(name: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("toxic not found: {name}"))
    }

    /// `409 toxic already exists`, naming it.
    pub fn toxic_exists(name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            format!("toxic already exists: {name}"),
        )
    }

    /// `400 invalid toxic type`, naming it.
    pub fn invalid_type(kind: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!(
                "invalid toxic type: `{kind}` (expected latency, bandwidth, slow_close, \
                 timeout, reset_peer, slicer or limit_data)"
            ),
        )
    }

    /// `400 stream was invalid`.
    pub fn invalid_stream(stream: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("stream was invalid, can be either upstream or downstream: `{stream}`"),
        )
    }

    /// `400` for a value that parses but cannot be used (a listen address beyond
    /// loopback, a bound reached).
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason)
    }

    /// `409` for a bound reached (too many proxies or toxics).
    pub fn conflict(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, reason)
    }

    /// `500` for what the server failed at (binding a listener, say).
    pub fn internal(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, reason)
    }

    /// The status as an HTTP status code.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for ToxiError {
    fn into_response(self) -> Response {
        (self.status_code(), Json(self)).into_response()
    }
}
