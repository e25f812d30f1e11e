//! The case's JSON errors: the kit's `{"error", "field"}` shape plus a
//! machine-readable `code`, so a client branches on the code and shows the message.
//!
//! ```json
//! {"error": "qty must be between 1 and 100", "code": "invalid_field", "field": "qty"}
//! ```

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use casebook_kit::api::ApiError;
use serde::Serialize;

/// An error answered as JSON with a code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CodedError {
    #[serde(skip)]
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub error: String,
    /// What went wrong, for a program (`insufficient_stock`, `invalid_field`, …).
    pub code: &'static str,
    /// The request field at fault, as a dotted path, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl CodedError {
    pub fn new(status: StatusCode, code: &'static str, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            code,
            field: None,
        }
    }

    /// 400 `invalid_field`: a value that parsed but is out of range or malformed.
    pub fn invalid_field(field: impl Into<String>, error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_field", error).with_field(field)
    }

    pub fn not_found(code: &'static str, error: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, error)
    }

    pub fn conflict(code: &'static str, error: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, error)
    }

    /// 503: the service cannot decide now; nothing was changed.
    pub fn unavailable(code: &'static str, error: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, error)
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

/// The codes the kit's errors carry, kept as they are.
const KIT_CODES: [&str; 10] = [
    "idempotency_key_required",
    "idempotency_key_invalid",
    "idempotency_key_reused",
    "idempotency_key_in_use",
    "idempotency_store_full",
    "storage_unavailable",
    "invalid_json",
    "invalid_body",
    "body_too_large",
    "unsupported_media_type",
];

/// The kit's extractor errors (bad JSON, wrong content type, body too large) with
/// a code derived from their status.
impl From<ApiError> for CodedError {
    fn from(error: ApiError) -> Self {
        let fallback = match error.status {
            StatusCode::BAD_REQUEST => "invalid_json",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::NOT_FOUND => "not_found",
            _ => "error",
        };
        // The kit's own code when it set one (`idempotency_key_required`, …).
        let code = match error.code.as_deref() {
            Some(code) => KIT_CODES
                .iter()
                .find(|c| **c == code)
                .copied()
                .unwrap_or(fallback),
            None => fallback,
        };
        Self {
            status: error.status,
            error: error.error,
            code,
            field: error.field,
        }
    }
}

impl std::fmt::Display for CodedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.error)
    }
}

impl std::error::Error for CodedError {}

impl IntoResponse for CodedError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{\"error\":\"?\"}".to_vec());
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_code_and_field() {
        let json = serde_json::to_string(&CodedError::invalid_field("qty", "too many")).unwrap();
        assert_eq!(
            json,
            r#"{"error":"too many","code":"invalid_field","field":"qty"}"#
        );
        let json = serde_json::to_string(&CodedError::conflict("x", "y")).unwrap();
        assert_eq!(json, r#"{"error":"y","code":"x"}"#);
    }

    #[test]
    fn kit_json_errors_keep_their_field_and_get_a_code() {
        let kit = ApiError::bad_field("sku", "invalid type");
        let coded = CodedError::from(kit);
        assert_eq!(coded.code, "invalid_json");
        assert_eq!(coded.field.as_deref(), Some("sku"));
        assert_eq!(coded.status, StatusCode::BAD_REQUEST);
    }
}
