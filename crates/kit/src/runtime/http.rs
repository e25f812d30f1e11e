//! Serving TCP and HTTP inside an instance's task group: the one accept loop.
//!
//! # Guarantees
//! - **A panic is contained to its connection.** Every connection runs as its own
//!   task wrapped in `catch_unwind`: a panic (in a protocol handler, or in an HTTP
//!   route, which runs inside its connection's task) drops that connection's state —
//!   closing its socket — is logged at ERROR with the instance and the peer, counted in
//!   `connection_panics_total{service,instance}`, and the listener keeps accepting.
//!   This needs `panic = "unwind"`, which the workspace's release profile sets (a
//!   test reads `Cargo.toml` to keep it so).
//! - **Connections are bounded per listener.** At most
//!   [`ListenerLimits::max_connections`] (default 4,096) connections are served at
//!   once. Past that a new connection is accepted and closed at once — HTTP first
//!   gets a best-effort `503` with `Connection: close`, written only if the socket
//!   takes it without waiting — and counted in
//!   `connections_refused_total{service,instance}`. A refused connection holds
//!   nothing after the accept loop drops it; the slot of a served one is freed when
//!   its task ends (closed, finished, panicked, or killed). A raw TCP listener
//!   ([`serve_tcp`]) also keeps `tcp_connections_open{service,instance}`, the
//!   connections being served now (what Chaos Kong watches drain from a region).
//! - **Idle HTTP connections are bounded in time.** A client gets
//!   [`ListenerLimits::header_read_timeout`] (default 30 s) to send a request's
//!   headers, both on a new connection and between requests on a kept-alive one;
//!   then the connection is closed. So an idle connection holds its slot for at most
//!   that long.
//!
//! # Not guaranteed
//! - The limit counts connections, not memory: a served connection's buffers are
//!   the protocol's to bound.
//! - Raw TCP protocols ([`serve_tcp`]) bound idle time themselves.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use futures::FutureExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::InstanceContext;
use crate::config::ConfigError;
use crate::telemetry::{TelemetryLayer, health_and_metrics};

/// Pause after an accept error such as running out of file descriptors, so the
/// loop does not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// The most connections one listener may be configured to serve at once.
pub const MAX_CONNECTIONS_CEILING: usize = 1 << 20;
/// What an HTTP listener answers, best effort, to a connection past its limit.
const HTTP_REFUSAL: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// The bounds of one listener, configurable per service: embed it in a config (keys
/// `max_connections` and `header_read_timeout`, a humantime string) and hand it to
/// [`crate::runtime::Platform::set_listener_limits`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerLimits {
    /// Connections served at once; further ones are accepted and closed at once.
    pub max_connections: usize,
    /// How long an HTTP client may take to send a request's headers (on a new or an
    /// idle kept-alive connection) before its connection is closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

impl ListenerLimits {
    /// Checks the limits; `key` is where they sit in the config (e.g. `uber.http`).
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if !(1..=MAX_CONNECTIONS_CEILING).contains(&self.max_connections) {
            return Err(ConfigError::new(
                format!("{key}.max_connections"),
                format!("must be in 1..={MAX_CONNECTIONS_CEILING}"),
            ));
        }
        if self.header_read_timeout.is_zero() {
            return Err(ConfigError::new(
                format!("{key}.header_read_timeout"),
                "must be positive",
            ));
        }
        Ok(())
    }
}

/// How [`serve_tcp_with`] bounds a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptOptions {
    /// At most this many connections served at once; `None`: no bound.
    pub max_connections: Option<usize>,
    /// Written to a connection refused for the limit, only if the socket takes it
    /// without waiting, before it is closed. Empty: just close.
    pub refusal: &'static [u8],
}

impl AcceptOptions {
    /// No bound: what [`serve_tcp`] does.
    pub const UNBOUNDED: Self = Self {
        max_connections: None,
        refusal: b"",
    };

    /// At most `max_connections` at once; refused connections are just closed.
    pub fn bounded(max_connections: usize) -> Self {
        Self {
            max_connections: Some(max_connections),
            refusal: b"",
        }
    }
}

/// Serves `router` on `listener` in the instance's task group, with `/health`,
/// `/metrics` and the [`TelemetryLayer`] added, under the instance's
/// [`ListenerLimits`] ([`InstanceContext::listener_limits`]: its service's, set with
/// [`crate::runtime::Platform::set_listener_limits`], else the defaults).
///
/// Every connection is its own task in the group: on graceful stop the listener is
/// closed and each connection finishes its current request and closes; on kill
/// every connection is dropped at once.
pub fn serve_http(ctx: &InstanceContext, listener: TcpListener, router: Router) {
    let limits = ctx.listener_limits().clone();
    serve_http_with(ctx, listener, router, &limits);
}

/// [`serve_http`] under the given limits (see the module docs for what they bound).
pub fn serve_http_with(
    ctx: &InstanceContext,
    listener: TcpListener,
    router: Router,
    limits: &ListenerLimits,
) {
    crate::telemetry::metrics(); // installed before the first request is counted
    let info = ctx.info();
    // A bad build's latency and errors sit inside the telemetry, so they are measured.
    let router = match ctx.bad_build() {
        Some(build) => {
            tracing::warn!(service = %info.service, version = %info.version, %build,
                "serving a build declared bad");
            super::bad_build::layer(router, build)
        }
        None => router,
    };
    let app = router
        .merge(health_and_metrics(&info))
        .layer(TelemetryLayer::new(&info.service, &info.instance_id));
    let shutdown = ctx.shutdown_token();
    let header_read_timeout = limits.header_read_timeout;
    let options = AcceptOptions {
        max_connections: Some(limits.max_connections),
        refusal: HTTP_REFUSAL,
    };
    serve_tcp_with(ctx, listener, options, move |stream, peer| {
        // Handlers that bound work per caller read the peer as axum's `ConnectInfo`.
        let service = TowerToHyperService::new(tower::Layer::layer(
            &axum::Extension(axum::extract::ConnectInfo(peer)),
            app.clone(),
        ));
        let shutdown = shutdown.clone();
        async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(err) = result {
                tracing::debug!(%err, "connection ended with an error");
            }
        }
    });
}

/// Accepts TCP connections on `listener` until a graceful stop begins, handing each
/// to `handle` (with `TCP_NODELAY` set) and running the future it returns as its own
/// task in the instance's group — so a kill drops every connection at once. The one
/// accept loop of every protocol the platform serves. No connection bound: see
/// [`serve_tcp_with`].
///
/// `handle` runs on the accept loop itself: it may decide synchronously (a
/// connection cap, say) and must not block. On graceful stop the listener closes at
/// once; connections see the instance's shutdown token and finish on their own terms.
/// A panic in `handle` or in its future is contained to that connection (module docs).
pub fn serve_tcp<F, Fut>(ctx: &InstanceContext, listener: TcpListener, handle: F)
where
    F: FnMut(TcpStream, SocketAddr) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    serve_tcp_with(ctx, listener, AcceptOptions::UNBOUNDED, handle);
}

/// [`serve_tcp`] with a connection bound (see the module docs).
pub fn serve_tcp_with<F, Fut>(
    ctx: &InstanceContext,
    listener: TcpListener,
    options: AcceptOptions,
    mut handle: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    crate::telemetry::metrics(); // installed before the first panic or refusal is counted
    let shutdown = ctx.shutdown_token();
    let tasks = ctx.clone();
    let info = ctx.info();
    let labels = [("service", info.service), ("instance", info.instance_id)];
    let permits = options
        .max_connections
        .map(|n| Arc::new(Semaphore::new(n.min(MAX_CONNECTIONS_CEILING))));
    ctx.spawn(async move {
        let instance = labels[1].1.clone();
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(%err, %instance, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            };
            let permit = match &permits {
                None => None,
                Some(permits) => match permits.clone().try_acquire_owned() {
                    Ok(permit) => Some(permit),
                    Err(_) => {
                        metrics::counter!("connections_refused_total", &labels).increment(1);
                        tracing::debug!(%instance, %peer, "connection limit reached; refused");
                        if !options.refusal.is_empty() {
                            let _ = stream.try_write(options.refusal);
                        }
                        continue; // dropping the stream closes it
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let connection =
                match std::panic::catch_unwind(AssertUnwindSafe(|| handle(stream, peer))) {
                    Ok(connection) => connection,
                    Err(panic) => {
                        connection_panicked(&labels, peer, panic.as_ref());
                        continue;
                    }
                };
            let labels = labels.clone();
            let open = OpenConnection::new(&labels);
            tasks.spawn(async move {
                // Held for the connection's life, however it ends.
                let _permit = permit;
                let _open = open;
                if let Err(panic) = AssertUnwindSafe(connection).catch_unwind().await {
                    connection_panicked(&labels, peer, panic.as_ref());
                }
            });
        }
        // The listener is dropped here: the port stops accepting at once.
    });
}

/// One connection counted in `tcp_connections_open` until dropped (the connection
/// task ends, however).
struct OpenConnection(metrics::Gauge);

impl OpenConnection {
    fn new(labels: &[(&'static str, String); 2]) -> Self {
        let gauge = metrics::gauge!("tcp_connections_open", labels);
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Logs and counts a panic contained to one connection.
fn connection_panicked(
    labels: &[(&'static str, String); 2],
    peer: SocketAddr,
    panic: &(dyn std::any::Any + Send),
) {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)");
    tracing::error!(
        service = %labels[0].1,
        instance = %labels[1].1,
        %peer,
        panic = message,
        "connection task panicked; that connection is closed, the listener keeps accepting"
    );
    metrics::counter!("connection_panics_total", labels).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_validate_naming_the_dotted_key() {
        assert_eq!(ListenerLimits::default().validate("uber.http"), Ok(()));
        let zero = ListenerLimits {
            max_connections: 0,
            ..ListenerLimits::default()
        };
        assert_eq!(
            zero.validate("uber.http").unwrap_err().key(),
            "uber.http.max_connections"
        );
        let instant = ListenerLimits {
            header_read_timeout: Duration::ZERO,
            ..ListenerLimits::default()
        };
        assert_eq!(
            instant.validate("chat.http").unwrap_err().key(),
            "chat.http.header_read_timeout"
        );
    }

    #[test]
    fn limits_read_humantime_durations() {
        let limits: ListenerLimits =
            serde_json::from_str(r#"{"max_connections": 2, "header_read_timeout": "5s"}"#).unwrap();
        assert_eq!(limits.max_connections, 2);
        assert_eq!(limits.header_read_timeout, Duration::from_secs(5));
        let defaults: ListenerLimits = serde_json::from_str("{}").unwrap();
        assert_eq!(defaults, ListenerLimits::default());
    }

    /// Catching panics per connection needs unwinding in the build that ships.
    #[test]
    fn the_release_profile_keeps_panics_unwinding() {
        let manifest = include_str!("../../../../Cargo.toml");
        let release = manifest
            .split("[profile.release]")
            .nth(1)
            .expect("a release profile");
        let release = release.split("\n[").next().unwrap_or(release);
        assert!(
            release.contains("panic = \"unwind\""),
            "the release profile must keep panic = \"unwind\": connection tasks catch panics"
        );
    }
}
