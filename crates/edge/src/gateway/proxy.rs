//! The proxy: one upstream call as a tower service ([`Upstream`]), under the
//! route's resilience stack, and the header rules of a well-behaved HTTP proxy.
//!
//! Guarantees:
//! - hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and every header it names,
//!   `Keep-Alive`, `Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`,
//!   `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`) are removed both ways;
//! - upstream requests carry `x-forwarded-for` (the caller's address appended),
//!   `x-forwarded-proto` and `x-forwarded-host`; the caller's identity as
//!   `x-user-id` (a JWT subject) or `x-client-id` (an API key id), and never a
//!   client's own copy of either, nor its `x-api-key`;
//! - the priority and the remaining deadline travel as `x-priority` and
//!   `x-deadline-ms`, and a request whose deadline has passed is not sent;
//! - a response body streams back as the upstream sends it (hyper's flow control
//!   bounds what is buffered); only a 5xx body is read, at most
//!   [`MAX_ERROR_BODY`] bytes, to judge and pass it on;
//! - a connection that fails makes the resolver forget the service's cached
//!   instances, so the next attempt asks discovery again.
//!
//! Not guaranteed: protocol upgrades (WebSocket) are not proxied; the route's
//! timeout covers the wait for the response head, not the body's transfer.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use casebook_kit::clock::SharedClock;
use casebook_kit::resilience::shed::DeadlineExceeded;
use casebook_kit::resilience::stack::UpstreamStatus;
use casebook_kit::resilience::{BoxError, DEADLINE_HEADER, PRIORITY_HEADER, RequestMeta};
use casebook_kit::resolve::Resolver;
use casebook_kit::topology::Placement;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::auth::{API_KEY_HEADER, Identity};
use super::routes::Target;

/// The header carrying a user's id upstream.
pub const USER_ID_HEADER: &str = "x-user-id";
/// The header carrying a machine client's key id upstream.
pub const CLIENT_ID_HEADER: &str = "x-client-id";
/// The header a fallback answer carries, naming why the upstream could not answer.
pub const FALLBACK_HEADER: &str = "x-gateway-fallback";
/// The proxies a request passed, the caller first.
pub const FORWARDED_FOR: &str = "x-forwarded-for";
/// The most bytes of an upstream's 5xx body read (to pass it on).
pub const MAX_ERROR_BODY: usize = 64 * 1024;
/// Idle connections kept per upstream host.
const POOL_IDLE_PER_HOST: usize = 256;

/// The hyper client every route shares: pooled HTTP/1.1 keep-alive connections.
pub type ProxyClient = Client<HttpConnector, Full<Bytes>>;

/// A pooled client for upstream calls.
pub fn proxy_client() -> ProxyClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
        .build(connector)
}

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, those named by `Connection` first.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// Turns the caller's head into the upstream's: the module docs list the rules.
pub fn forward_headers(headers: &mut HeaderMap, peer: SocketAddr, identity: &Identity) {
    strip_hop_by_hop(headers);
    // hyper sets both from the URI and the buffered body.
    let host = headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    // The body is already read: the upstream has nothing to wait for.
    headers.remove(header::EXPECT);
    headers.remove(USER_ID_HEADER);
    headers.remove(CLIENT_ID_HEADER);
    headers.remove(API_KEY_HEADER);
    headers.remove(PRIORITY_HEADER);
    headers.remove(DEADLINE_HEADER);
    let mut forwarded: Vec<String> = headers
        .get_all(FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    forwarded.push(peer.ip().to_string());
    if let Ok(value) = HeaderValue::from_str(&forwarded.join(", ")) {
        headers.insert(FORWARDED_FOR, value);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    if let Some(host) = host {
        headers.insert("x-forwarded-host", host);
    }
    let (name, id) = match identity {
        Identity::User(subject) => (USER_ID_HEADER, subject),
        Identity::Machine(id) => (CLIENT_ID_HEADER, id),
        Identity::Anonymous => return,
    };
    if let Ok(value) = HeaderValue::from_str(id) {
        headers.insert(name, value);
    }
}

/// A response served by a route's fallback, not its upstream (a response extension,
/// so no upstream can claim it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FallbackServed(pub &'static str);

/// One route's upstream: resolves the instance, sends the buffered request,
/// returns the response head with its body streaming.
#[derive(Clone)]
pub struct Upstream {
    shared: Arc<Shared>,
}

struct Shared {
    target: Target,
    client: ProxyClient,
    resolver: Arc<Resolver>,
    near: Placement,
    clock: SharedClock,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("target", &self.shared.target)
            .finish()
    }
}

impl Upstream {
    pub fn new(
        target: Target,
        client: ProxyClient,
        resolver: Arc<Resolver>,
        near: Placement,
        clock: SharedClock,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                target,
                client,
                resolver,
                near,
                clock,
            }),
        }
    }
}

/// The future of one upstream call.
pub type UpstreamFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

impl tower::Service<Request<Bytes>> for Upstream {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = UpstreamFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move { shared.send(request).await })
    }
}

impl Shared {
    async fn send(&self, request: Request<Bytes>) -> Result<Response<Body>, BoxError> {
        let priority = request.priority();
        let deadline = request.deadline();
        let (mut parts, body) = request.into_parts();
        let authority = match &self.target {
            Target::Service(service) => self
                .resolver
                .resolve(service, &self.near)
                .await?
                .to_string(),
            Target::Url { authority, .. } => authority.to_string(),
        };
        // The endpoint made the path (base path included): only the authority is ours.
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = Uri::try_from(format!("http://{authority}{path}"))?;
        parts
            .headers
            .insert(PRIORITY_HEADER, HeaderValue::from_static(priority.as_str()));
        if let Some(deadline) = deadline {
            let now = self.clock.now();
            if deadline.has_passed(now) {
                return Err(DeadlineExceeded {
                    late_by: now.saturating_duration_since(deadline.0),
                }
                .into());
            }
            let ms = u64::try_from(deadline.remaining(now).as_millis()).unwrap_or(u64::MAX);
            parts
                .headers
                .insert(DEADLINE_HEADER, HeaderValue::from(ms.max(1)));
        }
        let response = match self
            .client
            .request(Request::from_parts(parts, Full::new(body)))
            .await
        {
            Ok(response) => response,
            Err(error) => {
                if let Target::Service(service) = &self.target
                    && error.is_connect()
                {
                    self.resolver.forget(service);
                }
                return Err(error.into());
            }
        };
        let (mut head, body) = response.into_parts();
        strip_hop_by_hop(&mut head.headers);
        // Only the gateway says an answer is a fallback.
        head.headers.remove(FALLBACK_HEADER);
        if head.status.is_server_error() {
            let retry_after = head
                .headers
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(std::time::Duration::from_secs);
            // A body over the bound is not passed on: an empty one says "not JSON".
            let body = Limited::new(body, MAX_ERROR_BODY)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Err(UpstreamStatus {
                status: head.status,
                retry_after,
                body,
            }
            .into());
        }
        Ok(Response::from_parts(head, Body::new(body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("accept", "application/json"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);
    }

    #[test]
    fn the_caller_is_appended_and_forged_identities_dropped() {
        let peer: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        headers.insert("x-user-id", HeaderValue::from_static("admin"));
        headers.insert("x-client-id", HeaderValue::from_static("root"));
        headers.insert("x-api-key", HeaderValue::from_static("k.secret"));
        headers.insert("host", HeaderValue::from_static("gw.example"));
        headers.insert("x-priority", HeaderValue::from_static("critical"));
        forward_headers(&mut headers, peer, &Identity::User("u7".into()));
        assert_eq!(headers["x-forwarded-for"], "1.1.1.1, 10.1.2.3");
        assert_eq!(headers["x-forwarded-host"], "gw.example");
        assert_eq!(headers["x-user-id"], "u7");
        for gone in ["x-client-id", "x-api-key", "host", "x-priority"] {
            assert!(!headers.contains_key(gone), "{gone}");
        }
        let mut anonymous = HeaderMap::new();
        anonymous.insert("x-user-id", HeaderValue::from_static("admin"));
        forward_headers(&mut anonymous, peer, &Identity::Anonymous);
        assert!(!anonymous.contains_key("x-user-id"));
        assert_eq!(anonymous["x-forwarded-for"], "10.1.2.3");
    }
}
