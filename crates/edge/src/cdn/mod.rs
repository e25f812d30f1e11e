//! A pull-through cache tier as a service. The ISP cache (small, memory) and the
//! regional edge (memory + disk) are two [`TierConfig`]s of one [`TierService`];
//! each fetches its misses from its upstream (the next tier, or the origin),
//! found through discovery.
//!
//! (Skeleton: the CDN helper fills this module.)

use std::net::SocketAddr;
use std::sync::Arc;

use casebook_kit::resolve::Resolver;
use casebook_kit::runtime::{BoxFuture, InstanceContext, ServiceFactory, StartError};

use crate::signing::SigningKey;

/// Where a tier fetches its misses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// The nearest `UP` instance of this service (zone, then region, then any).
    Service(String),
    /// A fixed base URL (tests, or an origin outside the platform).
    Url(String),
}

/// One tier's configuration.
#[derive(Debug, Clone)]
pub struct TierConfig {
    /// The service's name, e.g. `netflix-isp`, `netflix-edge`.
    pub service: String,
    pub upstream: Upstream,
    /// Bytes of objects kept in memory.
    pub memory_bytes: u64,
    /// Bytes of objects kept on disk under the instance's data dir (0: none).
    pub disk_bytes: u64,
    /// The key signed URLs are checked with (and playlist URLs re-signed with).
    pub key: SigningKey,
}

/// The factory of a cache tier.
#[derive(Debug)]
pub struct TierService {
    pub config: TierConfig,
    pub resolver: Arc<Resolver>,
}

impl ServiceFactory for TierService {
    fn name(&self) -> &str {
        &self.config.service
    }

    fn start<'a>(
        &'a self,
        _ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            Err(StartError::Other(anyhow::anyhow!(
                "the CDN tier is not built yet"
            )))
        })
    }
}
