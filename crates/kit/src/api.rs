//! JSON errors and a strict JSON body extractor, shared by every HTTP API.
//!
//! Every bad request gets a JSON body `{"error": "...", "field": "..."}` (field only
//! when one is at fault) with the right status; nothing answers with a bare string.

use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest JSON body an API accepts unless a route says otherwise.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// An error answered as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub error: String,
    /// The request field at fault, as a dotted path (`lease.duration`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// A machine-readable reason (`insufficient_stock`), for APIs whose clients
    /// branch on it; stable across releases, unlike `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            field: None,
            code: None,
        }
    }
    /// The same error with a machine-readable `code`.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }
    /// 400 Bad Request.
    pub fn bad_request(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error)
    }
    /// 400 Bad Request blaming one field.
    pub fn bad_field(field: impl Into<String>, error: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::bad_request(error)
        }
    }
    /// 404 Not Found.
    pub fn not_found(error: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, error)
    }
    /// 500, for failures that are ours, not the caller's.
    pub fn internal(error: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, error)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{} ({field}): {}", self.status, self.error),
            None => write!(f, "{}: {}", self.status, self.error),
        }
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
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

/// A JSON body parsed strictly: wrong content type → 415, too large → 413, bad
/// syntax or a field of the wrong type → 400 naming the field.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let mime = v.split(';').next().unwrap_or("").trim();
                mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected a body with content-type: application/json",
            )
            .with_code("unsupported_media_type"));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(status, "request body is too large").with_code("body_too_large")
            } else {
                ApiError::new(status, rejection.body_text()).with_code("invalid_body")
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses JSON, naming the field at fault on error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // The plain parse first: tracking the path costs about a fifth of a large
    // body's parse, and only a refused body needs it — parsed again to name the field.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = format!("invalid JSON body: {inner}");
        // A missing field is reported at its parent; name the field itself.
        let field = missing_field(&inner.to_string())
            .map(|missing| {
                if path == "." {
                    missing.to_owned()
                } else {
                    format!("{path}.{missing}")
                }
            })
            // "." is the root; "" is a key that is itself empty (`{"": 1}`): neither
            // names a field, and an empty `field` would say nothing.
            .or_else(|| (path != "." && !path.is_empty()).then_some(path));
        ApiError {
            field,
            ..ApiError::bad_request(message).with_code("invalid_json")
        }
    })?;
    de.end().map_err(|err| {
        ApiError::bad_request(format!("invalid JSON body: {err}")).with_code("invalid_json")
    })?;
    Ok(value)
}

fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        lease: Lease,
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Lease {
        duration_secs: u64,
    }

    #[test]
    fn names_the_field_of_the_wrong_type() {
        let err =
            parse_json::<Outer>(br#"{"name":"a","lease":{"duration_secs":"x"}}"#).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.field.as_deref(), Some("lease.duration_secs"));
    }

    #[test]
    fn names_a_missing_field() {
        let err = parse_json::<Outer>(br#"{"name":"a","lease":{}}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("lease.duration_secs"));
        let err = parse_json::<Outer>(br#"{"lease":{"duration_secs":1}}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("name"));
    }

    /// Found by the `registration_json` fuzz target: an unknown key that is itself
    /// empty made `field` `Some("")`.
    #[test]
    fn an_empty_unknown_key_names_no_field() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Strict {
            name: String,
        }
        let err = parse_json::<Strict>(br#"{"":1}"#).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.field, None);
        assert!(err.error.contains("unknown field ``"), "{}", err.error);
    }

    #[test]
    fn trailing_garbage_is_rejected() {
        let err = parse_json::<Lease>(br#"{"duration_secs":1} x"#).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn errors_serialise_as_json_with_the_field() {
        let json = serde_json::to_string(&ApiError::bad_field("zone", "unknown zone")).unwrap();
        assert_eq!(json, r#"{"error":"unknown zone","field":"zone"}"#);
    }
}

/// Serde for a `Duration` as whole milliseconds, for JSON fields named `…_ms`
/// (`#[serde(rename = "elapsed_ms", with = "casebook_kit::api::duration_ms")]`):
/// JSON carries durations as numbers with their unit in the name, never serde's
/// `{"secs", "nanos"}`.
pub mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }

    /// The same for an `Option<Duration>` (`null` when absent).
    pub mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Option::<u64>::deserialize(d).map(|ms| ms.map(Duration::from_millis))
        }
    }
}

#[cfg(test)]
mod duration_ms_tests {
    use std::time::Duration;

    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Timed {
        #[serde(rename = "elapsed_ms", with = "super::duration_ms")]
        elapsed: Duration,
        #[serde(rename = "slo_ms", with = "super::duration_ms::option")]
        slo: Option<Duration>,
    }

    #[test]
    fn durations_are_numbers_of_milliseconds_with_the_unit_in_the_name() {
        let timed = Timed {
            elapsed: Duration::from_micros(2_500_900),
            slo: None,
        };
        let json = serde_json::to_string(&timed).unwrap();
        assert_eq!(json, r#"{"elapsed_ms":2500,"slo_ms":null}"#);
        let back: Timed = serde_json::from_str(r#"{"elapsed_ms":7,"slo_ms":3}"#).unwrap();
        assert_eq!(back.slo, Some(Duration::from_millis(3)));
    }
}
