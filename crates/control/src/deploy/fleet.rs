//! What the deployer acts on: the platform's instances of a service, their traffic
//! shares in discovery, and the bad-build declarations. A trait, so the
//! orchestration is tested with a fake fleet on a `ManualClock`.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use casebook_kit::runtime::{BadBuild, BoxFuture, InstanceSpec, WeakPlatform};
use casebook_kit::topology::Placement;

use crate::admin::instance_host;
use crate::discovery::Registry;

/// One live instance of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub instance_id: String,
    pub version: String,
    pub placement: Placement,
}

/// The deployer's hands.
pub trait Fleet: Send + Sync + fmt::Debug + 'static {
    /// The live (starting or running) instances of `service`, oldest first; `None`
    /// while the platform shuts down.
    fn live(&self, service: &str) -> Option<Vec<Member>>;
    /// The services that can be started.
    fn services(&self) -> Vec<String>;
    /// Starts an instance of `service` at `version` in `placement`, named
    /// `instance_id` if given; its id.
    fn start<'a>(
        &'a self,
        service: &'a str,
        version: &'a str,
        placement: &'a Placement,
        instance_id: Option<String>,
    ) -> BoxFuture<'a, Result<String, String>>;
    /// Stops an instance gracefully (deregistered, then drained).
    fn stop<'a>(&'a self, instance_id: &'a str) -> BoxFuture<'a, Result<(), String>>;
    /// Gives an instance a fixed share of its service's traffic, or takes it away.
    fn set_share(&self, service: &str, instance_id: &str, share: Option<f64>)
    -> Result<(), String>;
    /// Declares `version` of `service` bad (or good again) for instances started next.
    fn declare_bad_build(
        &self,
        service: &str,
        version: &str,
        build: Option<BadBuild>,
    ) -> Result<(), String>;
}

/// The control plane's own platform and discovery registry.
#[derive(Debug, Clone)]
pub struct PlatformFleet {
    platform: WeakPlatform,
    registry: Arc<Registry>,
    drain: Duration,
}

impl PlatformFleet {
    pub fn new(platform: WeakPlatform, registry: Arc<Registry>, drain: Duration) -> Self {
        Self {
            platform,
            registry,
            drain,
        }
    }
}

const GONE: &str = "the platform is shutting down";

impl Fleet for PlatformFleet {
    fn live(&self, service: &str) -> Option<Vec<Member>> {
        let platform = self.platform.upgrade()?;
        if platform.is_shutting_down() {
            return None;
        }
        Some(
            crate::autoscaler::act::live(&platform, service)
                .into_iter()
                .map(|v| Member {
                    instance_id: v.info.instance_id,
                    version: v.info.version,
                    placement: Placement {
                        region: v.info.region,
                        zone: v.info.zone,
                    },
                })
                .collect(),
        )
    }

    fn services(&self) -> Vec<String> {
        self.platform
            .upgrade()
            .map(|p| p.services())
            .unwrap_or_default()
    }

    fn start<'a>(
        &'a self,
        service: &'a str,
        version: &'a str,
        placement: &'a Placement,
        instance_id: Option<String>,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let platform = self.platform.upgrade().ok_or(GONE)?;
            let spec = InstanceSpec {
                service: service.to_owned(),
                instance_id,
                placement: placement.clone(),
                listen: SocketAddr::new(instance_host(&platform), 0),
                version: version.to_owned(),
                port_hint: None,
            };
            platform
                .start(spec)
                .await
                .map(|info| info.instance_id)
                .map_err(|e| e.to_string())
        })
    }

    fn stop<'a>(&'a self, instance_id: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let platform = self.platform.upgrade().ok_or(GONE)?;
            match platform.stop(instance_id, self.drain).await {
                Some(report) => {
                    if !report.drained {
                        tracing::warn!(instance = %instance_id, "stopped by the deployer without draining in time");
                    }
                    Ok(())
                }
                None => Err(format!("instance `{instance_id}` is not running")),
            }
        })
    }

    fn set_share(
        &self,
        service: &str,
        instance_id: &str,
        share: Option<f64>,
    ) -> Result<(), String> {
        self.registry
            .set_traffic_share(service, instance_id, share)
            .map_err(|e| e.to_string())
    }

    fn declare_bad_build(
        &self,
        service: &str,
        version: &str,
        build: Option<BadBuild>,
    ) -> Result<(), String> {
        self.platform
            .upgrade()
            .ok_or_else(|| GONE.to_owned())?
            .declare_bad_build(service, version, build)
    }
}
