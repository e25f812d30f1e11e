//! A small HTTP/1.1 client for service-to-service JSON calls.
//!
//! One pooled hyper client per [`HttpClient`] (clone it freely), a per-request
//! timeout, the caller's request id propagated, and JSON in and out. Resilience
//! (breakers, bulkheads, retry budgets) wraps calls made with it; this type does no
//! retries of its own, so retries are never stacked.
//!
//! Also here, for every client of a peer that may be down: [`bearer`] (the
//! `Authorization` header of a token) and [`Reachability`] (log a peer going away
//! and coming back once each, not every failed call).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest response body read by default.
pub const DEFAULT_MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid request to {url}: {reason}")]
    InvalidRequest { url: String, reason: String },
    #[error("{method} {url} timed out after {after:?}")]
    Timeout {
        method: Method,
        url: String,
        after: Duration,
    },
    #[error("{method} {url} failed: {source}")]
    Transport {
        method: Method,
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{method} {url} answered {status}: {body}")]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{method} {url} answered a body that is not the expected JSON: {source}")]
    Decode {
        method: Method,
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

impl HttpError {
    /// The status the server answered, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
    /// Whether the call timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }
}

/// A full response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A pooled HTTP/1.1 client with a default timeout.
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    max_response: usize,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new(Duration::from_secs(5))
    }
}

impl HttpClient {
    /// A client whose calls time out after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(32)
            .build(connector);
        Self {
            inner,
            timeout,
            max_response: DEFAULT_MAX_RESPONSE,
        }
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one request and reads the whole response, whatever its status.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<HttpResponse, HttpError> {
        let mut builder = Request::builder().method(method.clone()).uri(url);
        if let Some(h) = builder.headers_mut() {
            h.extend(headers);
            crate::telemetry::inject_headers(h);
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| HttpError::InvalidRequest {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        let call = async {
            let response = self
                .inner
                .request(request)
                .await
                .map_err(|e| HttpError::Transport {
                    method: method.clone(),
                    url: url.to_owned(),
                    source: Box::new(e),
                })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, self.max_response)
                .collect()
                .await
                .map_err(|e| HttpError::Transport {
                    method: method.clone(),
                    url: url.to_owned(),
                    source: e,
                })?
                .to_bytes();
            Ok(HttpResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Timeout {
                method,
                url: url.to_owned(),
                after: self.timeout,
            }),
        }
    }

    /// Sends a request with an optional JSON body; a non-2xx answer is an error.
    pub async fn call<B: Serialize + ?Sized>(
        &self,
        method: Method,
        url: &str,
        body: Option<&B>,
    ) -> Result<HttpResponse, HttpError> {
        let mut headers = HeaderMap::new();
        let bytes = match body {
            Some(body) => {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Bytes::from(
                    serde_json::to_vec(body).map_err(|e| HttpError::InvalidRequest {
                        url: url.to_owned(),
                        reason: e.to_string(),
                    })?,
                )
            }
            None => Bytes::new(),
        };
        let response = self.send(method.clone(), url, headers, bytes).await?;
        if !response.status.is_success() {
            return Err(HttpError::Status {
                method,
                url: url.to_owned(),
                status: response.status,
                body: String::from_utf8_lossy(&response.body).into_owned(),
            });
        }
        Ok(response)
    }

    /// GET a JSON document.
    pub async fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<T, HttpError> {
        let response = self.call::<()>(Method::GET, url, None).await?;
        decode(Method::GET, url, &response.body)
    }

    /// Sends JSON and decodes a JSON answer.
    pub async fn json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        url: &str,
        body: &B,
    ) -> Result<T, HttpError> {
        let response = self.call(method.clone(), url, Some(body)).await?;
        decode(method, url, &response.body)
    }
}

/// `Authorization: Bearer <token>`; `None` if the token cannot be a header value.
pub fn bearer(token: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// A change worth one log line: the peer stopped answering, or answers again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReachabilityChange {
    /// The first failure after a success (or at start).
    Unreachable,
    /// The first success after failures, with how many calls failed in between.
    ReachableAgain { failed_calls: u64 },
}

/// Whether a peer answered the last call, so a caller logs each change once instead
/// of every failed call (a dead control plane must not make every process warn
/// every second). Starts as reachable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reachability {
    consecutive_failures: u64,
}

impl Reachability {
    /// Records a failed call; `Some` on the change to unreachable.
    pub fn failed(&mut self) -> Option<ReachabilityChange> {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        (self.consecutive_failures == 1).then_some(ReachabilityChange::Unreachable)
    }

    /// Records a successful call; `Some` on the change back to reachable.
    pub fn succeeded(&mut self) -> Option<ReachabilityChange> {
        let failed_calls = std::mem::take(&mut self.consecutive_failures);
        (failed_calls > 0).then_some(ReachabilityChange::ReachableAgain { failed_calls })
    }

    /// Failed calls since the last success.
    pub fn consecutive_failures(&self) -> u64 {
        self.consecutive_failures
    }
}

fn decode<T: DeserializeOwned>(method: Method, url: &str, body: &[u8]) -> Result<T, HttpError> {
    serde_json::from_slice(body).map_err(|source| HttpError::Decode {
        method,
        url: url.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reachability_changes_once_per_outage() {
        let mut peer = Reachability::default();
        assert_eq!(peer.succeeded(), None);
        let changes: Vec<_> = (0..100).filter_map(|_| peer.failed()).collect();
        assert_eq!(changes, [ReachabilityChange::Unreachable]);
        assert_eq!(peer.consecutive_failures(), 100);
        assert_eq!(
            peer.succeeded(),
            Some(ReachabilityChange::ReachableAgain { failed_calls: 100 })
        );
        assert_eq!(peer.succeeded(), None);
        assert_eq!(peer.failed(), Some(ReachabilityChange::Unreachable));
    }

    #[test]
    fn bearer_headers_are_sensitive() {
        let value = bearer("abc").unwrap();
        assert_eq!(value.to_str().unwrap(), "Bearer abc");
        assert!(value.is_sensitive());
        assert!(bearer("a\nb").is_none());
    }
}
