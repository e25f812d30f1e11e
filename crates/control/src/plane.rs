//! The control plane as a service the platform runs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use casebook_kit::resilience::breaker::{BreakerRegistry, breakers_router};
use casebook_kit::runtime::{
    BoxFuture, InstanceContext, ServiceFactory, StartError, WeakPlatform, serve_http,
};
use casebook_kit::topology::Topology;
use serde::{Deserialize, Serialize};

use crate::admin::{self, AdminState};
use crate::discovery::{self, DiscoveryConfig, Registry};
use crate::metrics_store::{self, MetricsStore, MetricsStoreConfig};

/// The control plane's service name.
pub const CONTROL_SERVICE: &str = "control";

/// The `[control]` table of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Address the control plane (and, by default, every service) binds.
    pub host: IpAddr,
    /// The control plane's port.
    pub port: u16,
    /// The zone the control plane's instance is placed in; the first zone of the
    /// first region when unset.
    pub zone: Option<String>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 7700,
            zone: None,
        }
    }
}

impl ControlConfig {
    /// Where the control plane listens.
    pub fn listen(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// The control plane's base URL as other services reach it.
    pub fn url(&self) -> String {
        let host = if self.host.is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            self.host
        };
        format!("http://{}", SocketAddr::new(host, self.port))
    }
}

/// What the control plane is configured with.
#[derive(Debug, Clone)]
pub struct ControlSettings {
    pub topology: Topology,
    pub discovery: DiscoveryConfig,
    pub metrics_store: MetricsStoreConfig,
    /// The default drain deadline of stops it is asked for.
    pub drain: Duration,
}

/// The control plane service.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    platform: WeakPlatform,
    settings: ControlSettings,
}

impl ControlPlane {
    /// A control plane administering `platform` (held weakly: the platform holds
    /// the control plane).
    pub fn new(platform: WeakPlatform, settings: ControlSettings) -> Self {
        Self { platform, settings }
    }

    fn router(&self, registry: Arc<Registry>, store: Arc<MetricsStore>) -> Router {
        admin::router(AdminState {
            platform: self.platform.clone(),
            topology: self.settings.topology.clone(),
            default_drain: self.settings.drain,
            registry: registry.clone(),
        })
        .merge(discovery::api::router(registry))
        .merge(metrics_store::api::router(store))
        // The Hystrix-style view of every breaker in this process.
        .merge(breakers_router(BreakerRegistry::global().clone()))
    }
}

/// Frees series that left the hour even while nothing is published (ingest sweeps
/// only the shards it touches).
async fn sweep_idle_series(
    store: Arc<MetricsStore>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs(60));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticks.tick() => store.sweep(),
        }
    }
}

impl ServiceFactory for ControlPlane {
    fn name(&self) -> &str {
        CONTROL_SERVICE
    }

    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            // Each control-plane instance starts with an empty registry, as a restarted
            // Eureka server does: instances re-register on their next renewal's 404.
            let registry = Arc::new(
                Registry::new(
                    self.settings.discovery.clone(),
                    self.settings.topology.clone(),
                    ctx.clock().clone(),
                )
                .map_err(anyhow::Error::from)?,
            );
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            discovery::spawn_maintenance(registry.clone(), ctx.shutdown_token());
            // The store is in memory (one hour of 1 s steps): a restart starts it empty.
            let store = Arc::new(MetricsStore::with_config(
                ctx.clock().clone(),
                self.settings.metrics_store.clone(),
            ));
            ctx.spawn(sweep_idle_series(store.clone(), ctx.shutdown_token()));
            serve_http(ctx, listener, self.router(registry, store));
            Ok(address)
        })
    }
}
