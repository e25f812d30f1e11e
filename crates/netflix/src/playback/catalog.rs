//! The catalog as the playback API serves it: fetched from `netflix-origin`
//! (`GET /v1/titles`), found through discovery, through the kit's resilience stack
//! (`retry → breaker → timeout → bulkhead`, dependency `netflix-origin-catalog`).
//!
//! Guarantees:
//! - **brief caching on the injected clock**: one fetch per `catalog_ttl` at most
//!   while the origin answers (concurrent callers share one load);
//! - **the last good catalog while the origin is down**: any failure (unresolved,
//!   refused, 5xx, timeout, an open breaker, a body that is not the catalog) serves
//!   the last catalog fetched, flagged `stale`; only a playback instance that never
//!   reached the origin answers 503.
//!
//! Not guaranteed: a title published a moment ago is listed only after the cache
//! expires (`catalog_ttl`, default 2 s); the stale catalog has no age limit (the
//! catalog only grows, so an old one is short, not wrong).

use std::sync::Arc;
use std::time::Duration;

use casebook_kit::cache::{AsyncCache, CacheConfig};
use casebook_kit::clock::SharedClock;
use casebook_kit::resilience::breaker::BreakerRegistry;
use casebook_kit::resilience::stack::{ResilienceConfig, ResilientClient, StackBuilder};
use casebook_kit::resolve::Resolver;
use casebook_kit::topology::Placement;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::origin::ORIGIN_SERVICE;

/// The dependency's name: its breaker, bulkhead and retry budget.
pub const DEPENDENCY: &str = "netflix-origin-catalog";

/// One rendition of a title, as the origin's catalog lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rendition {
    pub name: String,
    pub bandwidth_bps: u64,
    #[serde(default)]
    pub width: u32,
    #[serde(default)]
    pub height: u32,
    #[serde(default)]
    pub codecs: String,
}

/// One title of the catalog (the origin's shape; fields it adds later are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Title {
    pub id: String,
    pub name: String,
    pub duration_secs: f64,
    pub segment_secs: f64,
    pub renditions: Vec<Rendition>,
    /// The master playlist's object key (`titles/{id}/master.m3u8`); playback
    /// signs that path by the contract, whatever this says.
    #[serde(default)]
    pub master_key: String,
}

/// The catalog as served: the titles and whether they are the last good copy.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogView {
    pub titles: Arc<Vec<Title>>,
    /// True when the origin could not be asked and this is the last good catalog.
    pub stale: bool,
}

impl CatalogView {
    /// The title with id `id`.
    pub fn title(&self, id: &str) -> Option<&Title> {
        self.titles.iter().find(|t| t.id == id)
    }
}

/// Why no catalog can be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the catalog is unavailable (the origin was never reached): {0}")]
pub struct CatalogUnavailable(pub String);

/// The catalog client (see the module docs). Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Catalog {
    http: ResilientClient,
    resolver: Arc<Resolver>,
    near: Placement,
    fresh: AsyncCache<(), Arc<Vec<Title>>>,
    last_good: Mutex<Option<Arc<Vec<Title>>>>,
}

impl Catalog {
    /// A catalog fetched from the origin nearest `near`, kept `ttl` on `clock`;
    /// the stack's breaker lives in `registry`.
    pub fn new(
        resolver: Arc<Resolver>,
        near: Placement,
        ttl: Duration,
        clock: SharedClock,
        registry: BreakerRegistry,
    ) -> anyhow::Result<Self> {
        let mut resilience = ResilienceConfig::default();
        // The origin answers the catalog from memory; a slow answer is a sick origin.
        resilience.timeout.default = Duration::from_millis(500);
        resilience.retry.max_attempts = 2;
        let builder = StackBuilder::new(DEPENDENCY, resilience).registry(registry);
        let http = ResilientClient::with_builder(builder, None)
            .map_err(|e| anyhow::anyhow!("{DEPENDENCY} stack: {}: {}", e.field, e.reason))?;
        let fresh = AsyncCache::new(
            CacheConfig::new("netflix_playback_catalog", 1).time_to_live(ttl),
            clock,
        )?;
        Ok(Self {
            http,
            resolver,
            near,
            fresh,
            last_good: Mutex::new(None),
        })
    }

    /// The catalog: fresh, or the last good one flagged stale.
    pub async fn titles(&self) -> Result<CatalogView, CatalogUnavailable> {
        match self.fresh.try_get_or_insert_with((), self.fetch()).await {
            Ok(titles) => Ok(CatalogView {
                titles,
                stale: false,
            }),
            Err(error) => {
                metrics::counter!("casebook_netflix_playback_catalog_stale_total").increment(1);
                match self.last_good.lock().clone() {
                    Some(titles) => Ok(CatalogView {
                        titles,
                        stale: true,
                    }),
                    None => Err(CatalogUnavailable(error)),
                }
            }
        }
    }

    /// The last catalog fetched, without asking the origin.
    pub fn cached(&self) -> Option<Arc<Vec<Title>>> {
        self.last_good.lock().clone()
    }

    async fn fetch(&self) -> Result<Arc<Vec<Title>>, String> {
        let address = self
            .resolver
            .resolve(ORIGIN_SERVICE, &self.near)
            .await
            .map_err(|e| e.to_string())?;
        let url = format!("http://{address}/v1/titles");
        match self.http.get_json::<Vec<Title>>(&url).await {
            Ok(titles) => {
                let titles = Arc::new(titles);
                *self.last_good.lock() = Some(titles.clone());
                Ok(titles)
            }
            Err(error) => {
                // The instance may be gone: ask discovery afresh next time.
                self.resolver.forget(ORIGIN_SERVICE);
                tracing::debug!(%error, "catalog fetch failed");
                Err(error.to_string())
            }
        }
    }
}
