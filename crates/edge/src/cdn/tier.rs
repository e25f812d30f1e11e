//! The tier's engine, apart from HTTP: a lookup goes memory → negative cache →
//! disk → one coalesced upstream fetch.
//!
//! - **Memory** ([`MemoryTier`]): a fresh object is a hit. A playlist past its TTL
//!   is a miss, kept aside as a stale copy.
//! - **Negative cache**: a 404 from upstream is remembered for `negative_ttl` on the
//!   injected clock (the kit's cache), so a player hammering a missing key costs
//!   one upstream call per TTL.
//! - **Disk** ([`DiskTier`], immutable objects only): a hit is promoted into memory
//!   (where TinyLFU decides whether it stays).
//! - **Upstream**: the miss joins or leads the key's flight ([`Flights`]). The
//!   leader's fetch runs as a task of the instance (not of the request), stores the
//!   object in memory, then lands the flight; the disk write follows in the
//!   background. If the fetch fails and a stale playlist is at hand, the stale copy
//!   is served (stale-if-error, counted).
//!
//! A playlist served is rewritten per signed URL ([`Tier::rewritten`]); the result is
//! kept in a small cache bounded in bytes ([`REWRITES_BYTES`]), keyed by key, stored
//! ETag and expiry, so re-polls of one URL cost one rewrite.
//!
//! Guaranteed: one upstream fetch per key at a time, whatever the concurrency
//! (`tests/coalescing.rs`); an object served is the bytes the upstream sent, or a
//! disk copy whose CRC matched; fills and clients share flights.
//!
//! Not guaranteed: that a fetched object stays cached (admission may refuse it);
//! freshness beyond the rules of [`super::object`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use casebook_kit::cache::{Cache, CacheConfig};
use casebook_kit::clock::SharedClock;
use casebook_kit::resolve::Resolver;
use casebook_kit::runtime::{InstanceContext, StartError};
use casebook_kit::topology::Placement;
use parking_lot::Mutex;

use super::config::TierConfig;
use super::disk::{DiskTier, Put, WRITE_QUEUE};
use super::flight::{Flights, Joined, Outcome};
use super::key::ObjectKey;
use super::memory::MemoryTier;
use super::object::{Kind, Object};
use super::playlist;
use super::stats::{FillView, LevelView, Source, Stats, StatsView};
use super::upstream::{FetchError, Fetched, UpstreamClient};

/// Most 404s remembered at once.
const NEGATIVE_ENTRIES: u64 = 10_000;
/// Bytes of rewritten playlists kept for repeated requests of one signed URL.
pub const REWRITES_BYTES: u64 = 8 << 20;

/// A playlist rewritten for one expiry: (key, the stored copy's ETag, exp).
type RewriteKey = (ObjectKey, String, u64);

/// An object found for a request.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub object: Arc<Object>,
    pub source: Source,
    /// Whether the request joined another request's fetch.
    pub coalesced: bool,
}

/// Who asks: clients are counted in the stats, fills are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asker {
    Client,
    Fill,
}

/// One running tier.
pub struct Tier {
    pub(crate) config: TierConfig,
    pub(crate) clock: SharedClock,
    memory: MemoryTier,
    disk: Option<Arc<DiskTier>>,
    /// Objects on their way to the disk writer.
    disk_queue: Option<tokio::sync::mpsc::Sender<(ObjectKey, Arc<Object>)>>,
    negative: Option<Cache<ObjectKey, ()>>,
    /// Rewritten playlists by signed URL, so a player re-polling its playlist (or
    /// many players of one session's URL) costs one rewrite; bounded in bytes.
    rewrites: moka::sync::Cache<RewriteKey, (Bytes, String)>,
    pub(crate) upstream: UpstreamClient,
    flights: Flights,
    pub(crate) stats: Stats,
    /// Set while a fill runs: one at a time per tier.
    fill_running: AtomicBool,
    pub(crate) fill_view: Mutex<FillView>,
    ctx: InstanceContext,
}

impl std::fmt::Debug for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tier")
            .field("service", &self.config.service)
            .field("memory", &self.memory)
            .finish_non_exhaustive()
    }
}

impl Tier {
    /// Opens the tier for the instance `ctx`: its disk level (index rebuilt) under
    /// the instance's data dir, its upstream client, its counters.
    pub async fn open(
        config: TierConfig,
        resolver: Arc<Resolver>,
        ctx: &InstanceContext,
    ) -> Result<Arc<Self>, StartError> {
        config
            .validate()
            .map_err(|e| StartError::Other(anyhow::anyhow!("{}: {e}", config.service)))?;
        let info = ctx.info();
        let clock = ctx.clock().clone();
        let disk = if config.disk_bytes > 0 {
            let dir = ctx.data_dir().join("objects");
            let capacity = config.disk_bytes;
            let (disk, writer, rebuilt) =
                tokio::task::spawn_blocking(move || DiskTier::open(&dir, capacity))
                    .await
                    .map_err(|e| StartError::Other(e.into()))?
                    .map_err(|e| {
                        StartError::Other(anyhow::anyhow!(
                            "{}: cannot open the disk tier in {}: {e}",
                            info.instance_id,
                            ctx.data_dir().display()
                        ))
                    })?;
            tracing::info!(instance = %info.instance_id, loaded = rebuilt.loaded, discarded = rebuilt.discarded, evicted = rebuilt.evicted, "disk tier opened");
            Some((disk, writer))
        } else {
            None
        };
        let (disk, disk_writer) = disk.unzip();
        let negative = if config.negative_ttl.is_zero() {
            None
        } else {
            let cache_config = CacheConfig::new("cdn-negative", NEGATIVE_ENTRIES)
                .time_to_live(config.negative_ttl);
            Some(Cache::new(cache_config, clock.clone()).map_err(|e| StartError::Other(e.into()))?)
        };
        let upstream = UpstreamClient::new(
            config.upstream.clone(),
            &format!("{}-upstream@{}", config.service, info.instance_id),
            &config.resilience,
            resolver,
            Placement {
                region: info.region.clone(),
                zone: info.zone.clone(),
            },
            config.key.clone(),
            clock.clone(),
        )
        .map_err(|e| StartError::Other(anyhow::anyhow!("{}: {e}", config.service)))?;
        let (disk_queue, disk_writes) = match disk_writer {
            Some(writer) => {
                let (tx, rx) = tokio::sync::mpsc::channel(WRITE_QUEUE);
                (Some(tx), Some((writer, rx)))
            }
            None => (None, None),
        };
        let tier = Arc::new(Self {
            memory: MemoryTier::new(config.memory_bytes),
            stats: Stats::new(&config.service, &info.instance_id),
            config,
            clock,
            disk,
            disk_queue,
            negative,
            rewrites: moka::sync::Cache::builder()
                .max_capacity(REWRITES_BYTES)
                .weigher(
                    |(key, etag, _): &RewriteKey, (body, new_etag): &(Bytes, String)| {
                        u32::try_from(
                            key.as_str().len() + etag.len() + body.len() + new_etag.len() + 64,
                        )
                        .unwrap_or(u32::MAX)
                    },
                )
                .build(),
            upstream,
            flights: Flights::default(),
            fill_running: AtomicBool::new(false),
            fill_view: Mutex::new(FillView::default()),
            ctx: ctx.clone(),
        });
        if let Some((mut disk, mut writes)) = disk_writes {
            // The one disk writer; it holds the tier weakly so a stopped tier is freed.
            let weak = Arc::downgrade(&tier);
            ctx.spawn(async move {
                while let Some((key, object)) = writes.recv().await {
                    if disk.put(&key, &object).await == Put::Skipped
                        && let Some(tier) = weak.upgrade()
                    {
                        tier.stats.disk_write_skipped();
                    }
                }
            });
        }
        Ok(tier)
    }

    /// The object at `key`; `Ok(None)` when the upstream has none. `query` is the
    /// client's, forwarded on a miss (`None`: the tier signs its own).
    pub async fn get(
        self: &Arc<Self>,
        key: &ObjectKey,
        query: Option<&str>,
        asker: Asker,
    ) -> Result<Option<Lookup>, FetchError> {
        let found = |object, source| {
            if asker == Asker::Client {
                self.stats.hit(source);
            }
            Ok(Some(Lookup {
                object,
                source,
                coalesced: false,
            }))
        };
        let now = self.clock.now();
        let stale = match self.memory.get(key) {
            Some(object) if object.is_fresh(now, self.config.playlist_ttl) => {
                return found(object, Source::Memory);
            }
            other => other,
        };
        if let Some(negative) = &self.negative
            && negative.get(key).is_some()
        {
            if asker == Asker::Client {
                self.stats.negative_hit();
            }
            return Ok(None);
        }
        if let Some(disk) = &self.disk
            && !key.is_playlist()
            && let Some(object) = disk.get(key, now).await
        {
            let object = Arc::new(object);
            self.memory.insert(key.clone(), Arc::clone(&object));
            return found(object, Source::Disk);
        }
        let (waiter, coalesced) = match self.flights.join(key) {
            Joined::Lead(landing, waiter) => {
                // A flight that landed between the memory check above and the join
                // stored its object before landing: take it rather than fetch again.
                if let Some(object) = self
                    .memory
                    .get(key)
                    .filter(|o| o.is_fresh(now, self.config.playlist_ttl))
                {
                    landing.land(Ok(Some(Arc::clone(&object))));
                    return found(object, Source::Memory);
                }
                let tier = Arc::clone(self);
                let key = key.clone();
                let query = query.map(str::to_owned);
                self.ctx.spawn(async move {
                    let outcome = tier.fetch_and_store(&key, query.as_deref()).await;
                    landing.land(outcome);
                });
                (waiter, false)
            }
            Joined::Follow(waiter) => (waiter, true),
        };
        if asker == Asker::Client {
            self.stats.missed(coalesced);
        }
        let outcome = waiter.outcome().await;
        let (outcome, source) = match (outcome, stale) {
            (Err(_), Some(stale)) => {
                if asker == Asker::Client {
                    self.stats.stale_served();
                }
                (Ok(Some(stale)), Source::Stale)
            }
            (outcome, _) => (outcome, Source::Upstream),
        };
        outcome.map(|object| {
            object.map(|object| Lookup {
                object,
                source,
                coalesced,
            })
        })
    }

    async fn fetch_and_store(self: &Arc<Self>, key: &ObjectKey, query: Option<&str>) -> Outcome {
        match self.upstream.fetch(key, query).await {
            Ok(Fetched::Found {
                body,
                etag,
                content_type,
            }) => {
                self.stats.fetched(body.len() as u64);
                let object = Arc::new(Object::new(
                    key,
                    body,
                    etag.as_deref(),
                    content_type.as_deref(),
                    self.clock.now(),
                ));
                self.memory.insert(key.clone(), Arc::clone(&object));
                if let Some(queue) = &self.disk_queue
                    && object.kind == Kind::Immutable
                    && queue.try_send((key.clone(), Arc::clone(&object))).is_err()
                {
                    self.stats.disk_write_skipped();
                }
                Ok(Some(object))
            }
            Ok(Fetched::NotFound) => {
                self.memory.remove(key);
                if let Some(negative) = &self.negative {
                    negative.insert(key.clone(), ());
                }
                Ok(None)
            }
            Err(error) => {
                self.stats.upstream_error(error.cause());
                tracing::debug!(key = %key, %error, "upstream fetch failed");
                Err(error)
            }
        }
    }

    /// The playlist `object` at `key` rewritten and signed for `exp`, with its ETag
    /// (`playlist::rewrite`, cached per signed URL); `None` if it is not UTF-8.
    pub fn rewritten(&self, key: &ObjectKey, object: &Object, exp: u64) -> Option<(Bytes, String)> {
        let cache_key = (key.clone(), object.etag.clone(), exp);
        if let Some(done) = self.rewrites.get(&cache_key) {
            return Some(done);
        }
        let text = std::str::from_utf8(&object.body).ok()?;
        let done = (
            Bytes::from(playlist::rewrite(key, text, &self.config.key, exp)),
            object.rewritten_etag(exp),
        );
        self.rewrites.insert(cache_key, done.clone());
        Some(done)
    }

    /// Claims the tier's one fill slot; `None` while another fill runs. The slot is
    /// freed when the guard drops.
    pub(crate) fn start_fill(&self) -> Option<FillGuard<'_>> {
        self.fill_running
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| FillGuard(&self.fill_running))
    }

    /// Whether `key` is held in memory or on disk (no lookup counted).
    pub fn holds(&self, key: &ObjectKey) -> bool {
        self.memory.contains(key) || self.disk.as_ref().is_some_and(|d| d.contains(key))
    }

    /// The `/stats` document.
    pub fn stats_view(&self) -> StatsView {
        let memory = LevelView {
            bytes: self.memory.bytes(),
            entries: self.memory.entries(),
            capacity_bytes: self.memory.capacity(),
        };
        let disk = self.disk.as_ref().map(|d| LevelView {
            bytes: d.bytes(),
            entries: d.entries(),
            capacity_bytes: d.capacity(),
        });
        self.stats.view(memory, disk, self.fill_view.lock().clone())
    }
}

/// A running fill's claim on its tier's slot.
#[derive(Debug)]
pub(crate) struct FillGuard<'a>(&'a AtomicBool);

impl Drop for FillGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}
