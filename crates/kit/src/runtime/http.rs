//! Serving HTTP inside an instance's task group.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

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
    let tasks = ctx.clone();
    ctx.spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _peer)) => stream,
                Err(err) => {
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(app.clone());
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
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
            });
        }
        // The listener is dropped here: the port stops accepting at once.
    });
}
