//! A pull-through cache tier as a service. The ISP cache (small, memory) and the
//! regional edge (memory + disk) are two [`TierConfig`]s of one [`TierService`];
//! each fetches its misses from its [`Upstream`] (the next tier, or the origin),
//! found through discovery. `docs/notes/netflix/cdn.md` has the design at length.
//!
//! ```text
//! player ──GET /o/{key}?exp&sig──► ISP cache ──miss──► regional edge ──miss──► origin
//!                                  memory            memory → disk
//! ```
//!
//! | module | what it is |
//! |---|---|
//! | [`config`] | [`TierConfig`], [`Upstream`], the fill schedule; validation naming the field |
//! | [`key`] | object keys: what may follow `/o/` (traversal, encoding, length refused) |
//! | [`range`] | the `Range` header: one range → 206, unsatisfiable/invalid → 416, several → 200 |
//! | [`playlist`] | HLS playlists: every URI resolved against the playlist's key, re-pointed at `/o/…`, signed |
//! | [`object`] | a cached object: strong ETag, content type by extension, freshness, `Cache-Control` |
//! | [`memory`] | the memory level: moka weighed in bytes, TinyLFU admission |
//! | [`disk`] | the disk level: files written atomically, bounded in bytes, LRU, index rebuilt at start, CRC-checked reads |
//! | [`flight`] | request coalescing: one upstream fetch per key at a time |
//! | [`upstream`] | the upstream client: discovery, the kit's resilience stack, failover to another instance |
//! | [`tier`] | the engine: memory → negative cache → disk → coalesced fetch, stale-if-error for playlists |
//! | [`fill`] | proactive fill: `POST /fill` and the off-peak schedule |
//! | [`stats`] | counters (`metrics`) and the `/stats` view |
//! | [`http`] | the routes: objects with HTTP semantics and CORS, preflight, `/stats`, `/fill` |
//!
//! What a tier guarantees, in one place (each module says how):
//! - a client request is served only for a valid key (400) signed for exactly its
//!   `/o/{key}` path and not expired on the injected clock (403);
//! - concurrent misses for one key cause one upstream fetch;
//! - memory and disk are each bounded in bytes;
//! - every playlist served has every URI it can serve signed with the request's
//!   expiry; the cache keeps the upstream's bytes;
//! - the disk level survives a restart and never serves bytes whose CRC differs.

pub mod config;
pub mod disk;
pub mod fill;
pub mod flight;
pub mod http;
pub mod key;
pub mod memory;
pub mod object;
pub mod playlist;
pub mod range;
pub mod stats;
pub mod tier;
pub mod upstream;

#[doc(hidden)]
pub mod fuzzing;

use std::net::SocketAddr;
use std::sync::Arc;

use casebook_kit::resolve::Resolver;
use casebook_kit::runtime::{BoxFuture, InstanceContext, ServiceFactory, StartError, serve_http};

pub use config::{FillSchedule, FillSource, TierConfig, Upstream};

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
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            let tier =
                tier::Tier::open(self.config.clone(), Arc::clone(&self.resolver), ctx).await?;
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener
                .local_addr()
                .map_err(|e| StartError::Other(e.into()))?;
            serve_http(ctx, listener, http::router(Arc::clone(&tier)));
            if let Some(schedule) = self.config.fill.clone() {
                ctx.spawn(fill::run_schedule(tier, schedule, ctx.shutdown_token()));
            }
            Ok(address)
        })
    }
}
