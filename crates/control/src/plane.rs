//! The control plane as a service the platform runs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::Router;
use casebook_kit::runtime::{
    BoxFuture, InstanceContext, ServiceFactory, StartError, WeakPlatform, serve_http,
};
use casebook_kit::topology::Topology;
use serde::{Deserialize, Serialize};

use crate::admin::{self, AdminState};

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

/// The control plane service.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    platform: WeakPlatform,
    topology: Topology,
    drain: Duration,
}

impl ControlPlane {
    /// A control plane administering `platform` (held weakly: the platform holds
    /// the control plane). `drain` is the default drain deadline of stops it is
    /// asked for.
    pub fn new(platform: WeakPlatform, topology: Topology, drain: Duration) -> Self {
        Self {
            platform,
            topology,
            drain,
        }
    }

    fn router(&self) -> Router {
        admin::router(AdminState {
            platform: self.platform.clone(),
            topology: self.topology.clone(),
            default_drain: self.drain,
        })
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
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            serve_http(ctx, listener, self.router());
            Ok(address)
        })
    }
}
