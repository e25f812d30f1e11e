//! The built-in inbound filters (the table in the parent module says what each does).

use std::net::IpAddr;
use std::sync::Arc;

use casebook_kit::clock::SharedClock;
use casebook_kit::resilience::rate_limit::RateLimitLayer;
use casebook_kit::resilience::{PRIORITY_HEADER, meta_from_headers};
use casebook_kit::telemetry::{self, REQUEST_ID_HEADER, TRACEPARENT_HEADER, TraceContext};
use http::{HeaderValue, header};

use super::{FilterDeps, InboundFilter, RequestContext};
use crate::gateway::auth::{Authenticator, Identity};
use crate::gateway::config::GatewayConfig;
use crate::gateway::errors::{ErrorCode, GatewayError};

pub(super) fn build(
    name: &str,
    config: &GatewayConfig,
    deps: &FilterDeps,
) -> anyhow::Result<Arc<dyn InboundFilter>> {
    Ok(match name {
        "trace" => Arc::new(Trace),
        "body_limit" => Arc::new(BodyLimit {
            limit: config.body_limit,
        }),
        "auth" => Arc::new(Auth {
            authenticator: deps.authenticator.clone(),
        }),
        "rate_limit" => Arc::new(RateLimit {
            limiter: RateLimitLayer::new(
                config.rate_limit,
                client_key as fn(&RequestContext) -> ClientKey,
                deps.clock.clone(),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        }),
        "priority" => Arc::new(PriorityTag {
            clock: deps.clock.clone(),
        }),
        other => anyhow::bail!("unknown inbound filter `{other}`"),
    })
}

/// Request id and trace context for the upstream: the request's own (the server's
/// telemetry layer made it current), the `traceparent` a child span of this hop.
#[derive(Debug)]
struct Trace;

impl InboundFilter for Trace {
    fn name(&self) -> &'static str {
        "trace"
    }

    fn apply(&self, request: &mut RequestContext) -> Result<(), GatewayError> {
        let headers = &mut request.head.headers;
        let context = telemetry::current().unwrap_or_else(|| TraceContext::from_headers(headers));
        if let Ok(id) = HeaderValue::from_str(&context.request_id) {
            headers.insert(REQUEST_ID_HEADER, id);
        }
        if let Ok(parent) = HeaderValue::from_str(&context.child_traceparent()) {
            headers.insert(TRACEPARENT_HEADER, parent);
        }
        Ok(())
    }
}

/// Refuses a declared body over the limit before any of it is read.
#[derive(Debug)]
struct BodyLimit {
    limit: u64,
}

impl InboundFilter for BodyLimit {
    fn name(&self) -> &'static str {
        "body_limit"
    }

    fn apply(&self, request: &mut RequestContext) -> Result<(), GatewayError> {
        let Some(value) = request.head.headers.get(header::CONTENT_LENGTH) else {
            return Ok(());
        };
        let length: u64 = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| {
                GatewayError::new(ErrorCode::BadRequest, "content-length is not a number")
            })?;
        if length > self.limit {
            return Err(GatewayError::new(
                ErrorCode::BodyTooLarge,
                format!("the body is {length} bytes; the limit is {}", self.limit),
            ));
        }
        Ok(())
    }
}

/// Reads the caller's identity as the route's `auth` asks.
#[derive(Debug)]
struct Auth {
    authenticator: Authenticator,
}

impl InboundFilter for Auth {
    fn name(&self) -> &'static str {
        "auth"
    }

    fn apply(&self, request: &mut RequestContext) -> Result<(), GatewayError> {
        // No route: nothing to protect; the endpoint answers 404.
        let Some(route) = &request.route else {
            return Ok(());
        };
        request.identity = self
            .authenticator
            .authenticate(route.config().auth, &request.head.headers)
            .map_err(|e| GatewayError::new(ErrorCode::Unauthorized, e.to_string()))?;
        Ok(())
    }
}

/// Who a request counts against in the rate limiter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    User(String),
    Machine(String),
    Address(IpAddr),
}

/// The client of a request: its JWT subject, else its API key id, else the
/// address it connected from (never `x-forwarded-for`, which it could forge).
pub fn client_key(request: &RequestContext) -> ClientKey {
    match &request.identity {
        Identity::User(subject) => ClientKey::User(subject.clone()),
        Identity::Machine(id) => ClientKey::Machine(id.clone()),
        Identity::Anonymous => ClientKey::Address(request.peer.ip()),
    }
}

/// The kit's per-client limiter (governor, on the injected clock).
struct RateLimit {
    limiter: RateLimitLayer<fn(&RequestContext) -> ClientKey, ClientKey>,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("clients", &self.limiter.tracked_clients())
            .finish()
    }
}

impl InboundFilter for RateLimit {
    fn name(&self) -> &'static str {
        "rate_limit"
    }

    fn apply(&self, request: &mut RequestContext) -> Result<(), GatewayError> {
        self.limiter.check(&client_key(request)).map_err(|limited| {
            GatewayError::new(ErrorCode::RateLimited, "too many requests from this client")
                .retry_after(limited.retry_after)
        })
    }
}

/// The route's priority (the gateway decides it, so a client cannot promote
/// itself: its own `x-priority` is dropped) and the caller's remaining deadline.
#[derive(Debug)]
struct PriorityTag {
    clock: SharedClock,
}

impl InboundFilter for PriorityTag {
    fn name(&self) -> &'static str {
        "priority"
    }

    fn apply(&self, request: &mut RequestContext) -> Result<(), GatewayError> {
        let head = &mut request.head;
        head.headers.remove(PRIORITY_HEADER);
        let (_, deadline) = meta_from_headers(&head.headers, self.clock.now()).map_err(|e| {
            let field = e.field.as_deref().unwrap_or("headers");
            GatewayError::new(ErrorCode::BadRequest, format!("{field}: {}", e.error))
        })?;
        let priority = request
            .route
            .as_deref()
            .map(|r| r.config().priority)
            .unwrap_or_default();
        head.extensions.insert(priority);
        if let Some(deadline) = deadline {
            head.extensions.insert(deadline);
        }
        Ok(())
    }
}
