//! The gateway's own answers: static JSON errors `{"error": "...", "code": "..."}`,
//! built in one place ([`json_error`]), and how a failed upstream call becomes one.
//!
//! | status | code | when |
//! |---|---|---|
//! | 400 | `bad_request` | a path with dot segments, a malformed `x-deadline-ms` |
//! | 401 | `unauthorized` | a missing, malformed, badly signed, expired or not-yet-valid token; an unknown or wrong API key (with `WWW-Authenticate: Bearer`) |
//! | 404 | `no_route` | no route's prefix covers the path |
//! | 413 | `body_too_large` | a body over the limit (by `Content-Length`, or counted while read) |
//! | 429 | `rate_limited` | the client is over its rate limit (with `Retry-After`) |
//! | 502 | `upstream_error` | the upstream could not be reached or broke the exchange; or answered a 5xx whose body is not JSON |
//! | 503 | `breaker_open` | the route's breaker is open (with `Retry-After: 1`) |
//! | 503 | `bulkhead_full` | the route already has `max_concurrent` requests upstream |
//! | 503 | `no_instance` | discovery knows no `UP` instance of the route's service |
//! | 504 | `upstream_timeout` | no response headers within the route's timeout |
//! | 504 | `deadline_exceeded` | the caller's own `x-deadline-ms` ran out |
//!
//! An upstream's own 5xx with a JSON body is passed through as it is (status,
//! body, `Retry-After`): it is the service's answer, not the gateway's.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use casebook_kit::resilience::fallback::{FallbackFailed, FallbackRejected};
use casebook_kit::resilience::stack::UpstreamStatus;
use casebook_kit::resilience::{BoxError, FailureKind};
use casebook_kit::resolve::ResolveError;
use http::{HeaderValue, Response, StatusCode, header};

/// The machine-readable reason of a gateway answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    NoRoute,
    BodyTooLarge,
    RateLimited,
    UpstreamError,
    BreakerOpen,
    BulkheadFull,
    NoInstance,
    UpstreamTimeout,
    DeadlineExceeded,
}

impl ErrorCode {
    /// The `code` field.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NoRoute => "no_route",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::UpstreamError => "upstream_error",
            ErrorCode::BreakerOpen => "breaker_open",
            ErrorCode::BulkheadFull => "bulkhead_full",
            ErrorCode::NoInstance => "no_instance",
            ErrorCode::UpstreamTimeout => "upstream_timeout",
            ErrorCode::DeadlineExceeded => "deadline_exceeded",
        }
    }

    /// The status it is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::NoRoute => StatusCode::NOT_FOUND,
            ErrorCode::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::UpstreamError => StatusCode::BAD_GATEWAY,
            ErrorCode::BreakerOpen | ErrorCode::BulkheadFull | ErrorCode::NoInstance => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorCode::UpstreamTimeout | ErrorCode::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

/// A static answer of the gateway: a code, a message for a person, maybe a wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    pub code: ErrorCode,
    pub message: String,
    /// Sent as `Retry-After` (whole seconds, rounded up, at least 1).
    pub retry_after: Option<Duration>,
}

impl GatewayError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same, asking the caller to wait `wait`.
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// The HTTP answer.
    pub fn to_response(&self) -> Response<Body> {
        let mut response = json_error(self.code.status(), self.code.as_str(), &self.message);
        let headers = response.headers_mut();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if self.code == ErrorCode::Unauthorized {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"casebook\""),
            );
        }
        response
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.code.status().as_u16(),
            self.code.as_str(),
            self.message
        )
    }
}

impl std::error::Error for GatewayError {}

/// The one place a gateway error body is built.
///
/// (When `casebook_kit::api::ApiError` grows its `code`, this becomes
/// `ApiError::new(status, message).with_code(code).into_response()`.)
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": message, "code": code });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// What a failed call through a route's stack is answered with, and the reason
/// label for metrics and the admin view.
#[derive(Debug)]
pub enum Failure {
    /// The gateway answers with a static error.
    Static(GatewayError),
    /// The upstream answered a 5xx with a JSON body: passed through.
    Passthrough(UpstreamStatus),
}

impl Failure {
    /// Classifies any error out of a route's stack (fallback wrappers unwrapped).
    pub fn of(route: &str, error: &BoxError) -> Failure {
        let e: &(dyn std::error::Error + 'static) = error.as_ref();
        if let Some(f) = e.downcast_ref::<FallbackFailed>() {
            return Failure::of(route, &f.primary);
        }
        if let Some(f) = e.downcast_ref::<FallbackRejected>() {
            return Failure::of(route, &f.primary);
        }
        if let Some(upstream) = e.downcast_ref::<UpstreamStatus>() {
            if serde_json::from_slice::<serde::de::IgnoredAny>(&upstream.body).is_ok() {
                return Failure::Passthrough(upstream.clone());
            }
            let mut err = GatewayError::new(
                ErrorCode::UpstreamError,
                format!("route `{route}`: the upstream answered {}", upstream.status),
            );
            err.retry_after = upstream.retry_after;
            return Failure::Static(err);
        }
        if let Some(resolve) = e.downcast_ref::<ResolveError>() {
            let message = match resolve {
                ResolveError::NoInstance(service) => {
                    format!("route `{route}`: no instance of `{service}` is up")
                }
                _ => format!("route `{route}`: its service cannot be resolved"),
            };
            return Failure::Static(GatewayError::new(ErrorCode::NoInstance, message));
        }
        let (code, message) = match FailureKind::of(error) {
            FailureKind::ShortCircuited => {
                return Failure::Static(
                    GatewayError::new(
                        ErrorCode::BreakerOpen,
                        format!("route `{route}`: its circuit breaker is open"),
                    )
                    .retry_after(Duration::from_secs(1)),
                );
            }
            FailureKind::BulkheadFull => (
                ErrorCode::BulkheadFull,
                format!("route `{route}`: too many requests in flight"),
            ),
            FailureKind::Timeout => (
                ErrorCode::UpstreamTimeout,
                format!("route `{route}`: the upstream did not answer in time"),
            ),
            FailureKind::DeadlineExceeded => (
                ErrorCode::DeadlineExceeded,
                "the request's deadline passed".to_owned(),
            ),
            _ => (
                ErrorCode::UpstreamError,
                format!("route `{route}`: the upstream could not be reached"),
            ),
        };
        Failure::Static(GatewayError::new(code, message))
    }

    /// The label of the failure for metrics and the admin view.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Static(e) => e.code.as_str(),
            Failure::Passthrough(_) => "upstream_5xx",
        }
    }

    /// The HTTP answer.
    pub fn to_response(&self) -> Response<Body> {
        match self {
            Failure::Static(e) => e.to_response(),
            Failure::Passthrough(upstream) => {
                let mut response = Response::new(Body::from(Bytes::clone(&upstream.body)));
                *response.status_mut() = upstream.status;
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                if let Some(wait) = upstream.retry_after {
                    headers.insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs()));
                }
                response
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use casebook_kit::resilience::breaker::ShortCircuited;
    use casebook_kit::resilience::timeout::Elapsed;
    use http_body_util::BodyExt;

    use super::*;

    async fn body(response: Response<Body>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn every_static_error_is_json_with_its_code() {
        let err = GatewayError::new(ErrorCode::RateLimited, "slow down")
            .retry_after(Duration::from_millis(1500));
        let response = err.to_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(
            body(response).await,
            serde_json::json!({"error": "slow down", "code": "rate_limited"})
        );
        let response = GatewayError::new(ErrorCode::Unauthorized, "no").to_response();
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
    }

    #[tokio::test]
    async fn stack_errors_map_to_their_codes_and_json_5xx_pass_through() {
        let code = |e: BoxError| match Failure::of("r", &e) {
            Failure::Static(s) => s.code,
            Failure::Passthrough(_) => panic!("static expected"),
        };
        assert_eq!(
            code(
                ShortCircuited {
                    dependency: "r".into()
                }
                .into()
            ),
            ErrorCode::BreakerOpen
        );
        assert_eq!(
            code(
                Elapsed {
                    after: Duration::from_secs(1)
                }
                .into()
            ),
            ErrorCode::UpstreamTimeout
        );
        assert_eq!(
            code(ResolveError::NoInstance("svc".into()).into()),
            ErrorCode::NoInstance
        );
        assert_eq!(code("connection refused".into()), ErrorCode::UpstreamError);
        assert_eq!(
            code(UpstreamStatus::new(StatusCode::INTERNAL_SERVER_ERROR, None).into()),
            ErrorCode::UpstreamError,
            "a 5xx without a JSON body"
        );
        let json = UpstreamStatus {
            status: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: Some(Duration::from_secs(3)),
            body: Bytes::from_static(br#"{"error":"busy"}"#),
        };
        let failure = Failure::of(
            "r",
            &FallbackFailed {
                primary: json.into(),
                fallback: "none".into(),
            }
            .into(),
        );
        let response = failure.to_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        assert_eq!(body(response).await, serde_json::json!({"error": "busy"}));
    }
}
