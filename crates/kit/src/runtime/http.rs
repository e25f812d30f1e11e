//! Serving HTTP inside an instance's task group.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

use super::InstanceContext;
use crate::telemetry::{TelemetryLayer, health_and_metrics};

/// How long a client may take to send a request's headers before its connection is
/// closed (slow clients must not hold connections forever).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after an accept error such as running out of file descriptors, so the
/// loop does not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` in the instance's task group, with `/health`,
/// `/metrics` and the [`TelemetryLayer`] added.
///
/// Every connection is its own task in the group: on graceful stop the listener is
/// closed and each connection finishes its current request and closes; on kill
/// every connection is dropped at once.
pub fn serve_http(ctx: &InstanceContext, listener: TcpListener, router: Router) {
    crate::telemetry::metrics(); // installed before the first request is counted
    let info = ctx.info();
    let app = router
        .merge(health_and_metrics(&info))
        .layer(TelemetryLayer::new(&info.service, &info.instance_id));
    let shutdown = ctx.shutdown_token();
    serve_tcp(ctx, listener, move |stream, _peer| {
        let service = TowerToHyperService::new(app.clone());
        let shutdown = shutdown.clone();
        async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
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
/// accept loop of every protocol the platform serves.
///
/// `handle` runs on the accept loop itself: it may decide synchronously (a
/// connection cap, say) and must not block. On graceful stop the listener closes at
/// once; connections see the instance's shutdown token and finish on their own terms.
pub fn serve_tcp<F, Fut>(ctx: &InstanceContext, listener: TcpListener, mut handle: F)
where
    F: FnMut(TcpStream, SocketAddr) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let shutdown = ctx.shutdown_token();
    let tasks = ctx.clone();
    ctx.spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tasks.spawn(handle(stream, peer));
                }
                Err(err) => {
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            }
        }
        // The listener is dropped here: the port stops accepting at once.
    });
}
