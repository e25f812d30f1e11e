//! Cache (P11): `moka` (TinyLFU admission, LRU eviction) behind a small wrapper
//! that adds a name, time-to-live and time-to-idle on the injected clock, single-
//! flight loads, and hit/miss/eviction metrics.
//!
//! [`Cache`] wraps `moka::sync::Cache`, [`AsyncCache`] wraps `moka::future::Cache`;
//! both share the expiry rule and the counters written here once.
//!
//! Guarantees:
//! - Bounded: at most `max_capacity` entries (moka evicts by TinyLFU beyond it).
//! - Expiry is decided on the injected [`Clock`](crate::clock::Clock): an entry
//!   older than its TTL, or idle longer than the TTI, is never returned, so TTL
//!   behaviour is deterministic on a `ManualClock`. Moka's own real-time expiry is
//!   set to the same durations and only reclaims memory behind it.
//! - `get_or_insert_with` runs the loader at most once at a time per key: callers
//!   that arrive while a load is in flight wait for it and share its value
//!   (moka's per-key `and_compute_with` lock). A failed load (`try_…`) caches
//!   nothing, and the next caller loads again.
//! - Counters `cache_hits_total`, `cache_misses_total`, `cache_loads_total` and
//!   `cache_evictions_total{cause="size"|"expired"}`, labelled `cache=<name>`, go
//!   through the `metrics` facade; [`CacheStats`] reads the same numbers back.
//!   The metric handles are resolved when the cache is built, so building one
//!   installs casebook's process recorder ([`telemetry::metrics`](crate::telemetry::metrics)) if no recorder
//!   is installed yet.
//!
//! Not guaranteed:
//! - Exact capacity at every instant: moka applies evictions in batches
//!   (`run_pending_tasks` forces them), and TinyLFU may refuse to admit a new key
//!   that is colder than what it would evict.
//! - Eviction counts are as moka reports them, which can lag behind the eviction.
//! - Consistency with a source of truth: a cache serves what it was given until
//!   it expires or is invalidated.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metrics::Counter;
use moka::Expiry;
use moka::notification::RemovalCause;
use moka::ops::compute::{CompResult, Op};

use crate::clock::SharedClock;

/// Longest name a cache may have (it becomes a metric label).
pub const MAX_NAME_LEN: usize = 64;

/// A cache's name, bounds and expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Metric label; `[a-z0-9_-]`, 1 to [`MAX_NAME_LEN`] characters.
    pub name: String,
    /// Most entries held.
    pub max_capacity: u64,
    /// An entry expires this long after it was written, if set.
    pub time_to_live: Option<Duration>,
    /// An entry expires this long after it was last read or written, if set.
    pub time_to_idle: Option<Duration>,
}

impl CacheConfig {
    /// A cache called `name` holding up to `max_capacity` entries, no expiry.
    pub fn new(name: impl Into<String>, max_capacity: u64) -> Self {
        Self {
            name: name.into(),
            max_capacity,
            time_to_live: None,
            time_to_idle: None,
        }
    }

    /// With a time-to-live.
    pub fn time_to_live(mut self, ttl: Duration) -> Self {
        self.time_to_live = Some(ttl);
        self
    }

    /// With a time-to-idle.
    pub fn time_to_idle(mut self, tti: Duration) -> Self {
        self.time_to_idle = Some(tti);
        self
    }

    /// Checks every field; the error names the field at fault.
    pub fn validate(&self) -> Result<(), CacheError> {
        let invalid = |field: &'static str, reason: &str| {
            Err(CacheError::InvalidConfig {
                field,
                reason: reason.to_string(),
            })
        };
        let name_ok = (1..=MAX_NAME_LEN).contains(&self.name.len())
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !name_ok {
            return invalid("name", "1 to 64 characters of [a-z0-9_-]");
        }
        if self.max_capacity == 0 {
            return invalid("max_capacity", "must be at least 1");
        }
        if self.time_to_live.is_some_and(|d| d.is_zero()) {
            return invalid("time_to_live", "must be positive");
        }
        if self.time_to_idle.is_some_and(|d| d.is_zero()) {
            return invalid("time_to_idle", "must be positive");
        }
        Ok(())
    }
}

/// A bad cache configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// A field out of bounds.
    #[error("invalid cache config `{field}`: {reason}")]
    InvalidConfig {
        /// The field at fault.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// Counters of one cache, as read back by `stats()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Reads that found a live entry.
    pub hits: u64,
    /// Reads that found nothing live.
    pub misses: u64,
    /// Loader runs (`get_or_insert_with` and friends).
    pub loads: u64,
    /// Entries evicted for capacity.
    pub evicted_for_size: u64,
    /// Entries dropped because their TTL or TTI passed.
    pub expired: u64,
}

impl CacheStats {
    /// `hits / (hits + misses)`, or `None` before the first read.
    pub fn hit_ratio(&self) -> Option<f64> {
        let reads = self.hits + self.misses;
        (reads > 0).then(|| self.hits as f64 / reads as f64)
    }
}

/// An entry with the times its expiry is judged by (injected-clock instants).
struct Stamped<V> {
    value: V,
    /// Set from the TTL at write time.
    expires_at: Option<Instant>,
    /// Nanoseconds since the cache's origin of the last read or write.
    last_access_nanos: AtomicU64,
    /// The TTL moka's real-time backstop uses.
    ttl: Option<Duration>,
}

/// The shared state of both flavours: expiry rule and counters.
struct Core {
    name: Arc<str>,
    clock: SharedClock,
    origin: Instant,
    ttl: Option<Duration>,
    tti: Option<Duration>,
    counts: Counts,
}

#[derive(Default)]
struct Counts {
    hits: AtomicU64,
    misses: AtomicU64,
    loads: AtomicU64,
    evicted_for_size: AtomicU64,
    expired: AtomicU64,
}

/// Handles into the metrics facade, resolved once per cache.
struct MetricHandles {
    hits: Counter,
    misses: Counter,
    loads: Counter,
    evicted_for_size: Counter,
    expired: Counter,
}

impl Core {
    fn new(config: &CacheConfig, clock: SharedClock) -> Self {
        let origin = clock.now();
        Self {
            name: Arc::from(config.name.as_str()),
            clock,
            origin,
            ttl: config.time_to_live,
            tti: config.time_to_idle,
            counts: Counts::default(),
        }
    }

    fn nanos_since_origin(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    fn stamp<V>(&self, value: V, ttl: Option<Duration>) -> Arc<Stamped<V>> {
        let now = self.clock.now();
        Arc::new(Stamped {
            value,
            expires_at: ttl.and_then(|ttl| now.checked_add(ttl)),
            last_access_nanos: AtomicU64::new(self.nanos_since_origin(now)),
            ttl,
        })
    }

    /// Whether the entry is live at `now`: younger than its TTL and, with a TTI,
    /// used within it.
    fn is_live<V>(&self, entry: &Stamped<V>, now: Instant) -> bool {
        if entry.expires_at.is_some_and(|at| now >= at) {
            return false;
        }
        let Some(tti) = self.tti else {
            return true;
        };
        let last = entry.last_access_nanos.load(Ordering::Acquire);
        Duration::from_nanos(self.nanos_since_origin(now).saturating_sub(last)) < tti
    }

    /// Whether the entry is live now; a live entry's idle timer is reset.
    fn check_and_touch<V>(&self, entry: &Stamped<V>) -> bool {
        if entry.expires_at.is_none() && self.tti.is_none() {
            // Nothing can expire it: spare the clock read (costly on some VMs).
            return true;
        }
        let now = self.clock.now();
        if !self.is_live(entry, now) {
            return false;
        }
        // Only an idle timer needs the write; skipping it keeps hot entries'
        // cache lines shared between reading cores.
        if self.tti.is_some() {
            let now_nanos = self.nanos_since_origin(now);
            entry
                .last_access_nanos
                .fetch_max(now_nanos, Ordering::AcqRel);
        }
        true
    }

    fn stats(&self) -> CacheStats {
        let c = &self.counts;
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            loads: c.loads.load(Ordering::Relaxed),
            evicted_for_size: c.evicted_for_size.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
        }
    }
}

/// The counters and their metric handles, shared with moka's eviction listener.
struct Recorder {
    core: Core,
    metrics: MetricHandles,
}

impl Recorder {
    fn new(config: &CacheConfig, clock: SharedClock) -> Arc<Self> {
        // Install the process recorder first, or the handles would be no-ops.
        crate::telemetry::metrics();
        let label = config.name.clone();
        let counter = |name: &'static str| metrics::counter!(name, "cache" => label.clone());
        let evictions = |cause: &'static str| metrics::counter!("cache_evictions_total", "cache" => label.clone(), "cause" => cause);
        Arc::new(Self {
            core: Core::new(config, clock),
            metrics: MetricHandles {
                hits: counter("cache_hits_total"),
                misses: counter("cache_misses_total"),
                loads: counter("cache_loads_total"),
                evicted_for_size: evictions("size"),
                expired: evictions("expired"),
            },
        })
    }

    fn hit(&self) {
        self.core.counts.hits.fetch_add(1, Ordering::Relaxed);
        self.metrics.hits.increment(1);
    }
    fn miss(&self) {
        self.core.counts.misses.fetch_add(1, Ordering::Relaxed);
        self.metrics.misses.increment(1);
    }
    fn load(&self) {
        self.core.counts.loads.fetch_add(1, Ordering::Relaxed);
        self.metrics.loads.increment(1);
    }
    fn expired(&self) {
        self.core.counts.expired.fetch_add(1, Ordering::Relaxed);
        self.metrics.expired.increment(1);
    }
    /// Counts a removal moka reports; an expired entry overwritten by a new value
    /// counts as expired, other overwrites and invalidations are not evictions.
    fn removed<V>(&self, cause: RemovalCause, entry: &Stamped<V>) {
        match cause {
            RemovalCause::Size => {
                self.core
                    .counts
                    .evicted_for_size
                    .fetch_add(1, Ordering::Relaxed);
                self.metrics.evicted_for_size.increment(1);
            }
            RemovalCause::Expired => self.expired(),
            RemovalCause::Replaced if !self.core.is_live(entry, self.core.clock.now()) => {
                self.expired();
            }
            RemovalCause::Replaced | RemovalCause::Explicit => {}
        }
    }

    /// Reads an entry as a cache hit or miss; an expired entry is a miss.
    fn classify<V: Clone>(&self, entry: Option<&Stamped<V>>) -> Option<V> {
        match entry {
            Some(entry) if self.core.check_and_touch(entry) => {
                self.hit();
                Some(entry.value.clone())
            }
            _ => {
                self.miss();
                None
            }
        }
    }

    /// The value a single-flight load stores: the loaded one, or nothing (keep
    /// what is there) when the loader failed.
    fn store_loaded<V>(&self, loaded: Option<V>) -> Op<Arc<Stamped<V>>> {
        match loaded {
            Some(value) => Op::Put(self.core.stamp(value, self.core.ttl)),
            None => Op::Nop,
        }
    }
}

/// Gives moka's real-time backstop each entry's own TTL.
struct StampedExpiry;

impl<K, V> Expiry<K, Arc<Stamped<V>>> for StampedExpiry {
    fn expire_after_create(
        &self,
        _key: &K,
        value: &Arc<Stamped<V>>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        value.ttl
    }

    fn expire_after_update(
        &self,
        _key: &K,
        value: &Arc<Stamped<V>>,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        value.ttl
    }
}

fn stored<K, V>(result: CompResult<K, Arc<Stamped<V>>>) -> Option<Arc<Stamped<V>>> {
    match result {
        CompResult::Unchanged(entry)
        | CompResult::Inserted(entry)
        | CompResult::ReplacedWith(entry) => Some(entry.into_value()),
        CompResult::StillNone(_) | CompResult::Removed(_) => None,
    }
}

/// Takes the value out of a slot a compute closure filled.
fn take<V>(slot: Option<V>) -> V {
    slot.expect("the loader ran whenever no live entry was found")
}

macro_rules! builder {
    ($module:ident, $config:expr, $recorder:expr) => {{
        let listener_recorder = Arc::clone(&$recorder);
        let mut builder = moka::$module::Cache::builder()
            .name(&$config.name)
            .max_capacity($config.max_capacity)
            .expire_after(StampedExpiry)
            .eviction_listener(move |_key, entry, cause| listener_recorder.removed(cause, &entry));
        if let Some(tti) = $config.time_to_idle {
            builder = builder.time_to_idle(tti);
        }
        builder.build()
    }};
}

/// A named, bounded, synchronous cache; see the module notes.
pub struct Cache<K, V> {
    inner: moka::sync::Cache<K, Arc<Stamped<V>>>,
    recorder: Arc<Recorder>,
}

impl<K, V> fmt::Debug for Cache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("name", &self.recorder.core.name)
            .field("entries", &self.inner.entry_count())
            .finish()
    }
}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cache per `config`, judging expiry by `clock`.
    pub fn new(config: CacheConfig, clock: SharedClock) -> Result<Self, CacheError> {
        config.validate()?;
        let recorder = Recorder::new(&config, clock);
        let inner = builder!(sync, config, recorder);
        Ok(Self { inner, recorder })
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        &self.recorder.core.name
    }

    /// The live value of `key`, counting a hit or a miss.
    pub fn get(&self, key: &K) -> Option<V> {
        let entry = self.inner.get(key);
        self.recorder.classify(entry.as_deref())
    }

    /// Stores `value` under `key` with the configured TTL.
    pub fn insert(&self, key: K, value: V) {
        let ttl = self.recorder.core.ttl;
        self.inner.insert(key, self.recorder.core.stamp(value, ttl));
    }

    /// Stores `value` under `key` with its own TTL instead of the configured one.
    pub fn insert_with_ttl(&self, key: K, value: V, ttl: Duration) {
        self.inner
            .insert(key, self.recorder.core.stamp(value, Some(ttl)));
    }

    /// Removes `key`.
    pub fn invalidate(&self, key: &K) {
        self.inner.invalidate(key);
    }

    /// The live value of `key`, or the value `init` loads, stored and returned.
    /// Concurrent callers for one key share one load.
    pub fn get_or_insert_with(&self, key: K, init: impl FnOnce() -> V) -> V {
        match self.try_get_or_insert_with(key, || Ok::<V, std::convert::Infallible>(init())) {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }

    /// Like [`get_or_insert_with`](Self::get_or_insert_with) with a fallible
    /// loader; an error is returned and nothing is cached.
    pub fn try_get_or_insert_with<E>(
        &self,
        key: K,
        init: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E> {
        if let Some(value) = self.get(&key) {
            return Ok(value);
        }
        let recorder = &self.recorder;
        let mut loaded: Option<Result<V, E>> = None;
        let result = self.inner.entry(key).and_compute_with(|current| {
            let current = current.map(moka::Entry::into_value);
            if current.is_some_and(|entry| recorder.core.check_and_touch(&entry)) {
                return Op::Nop;
            }
            recorder.load();
            let outcome = init();
            let value = outcome.as_ref().ok().cloned();
            loaded = Some(outcome);
            recorder.store_loaded(value)
        });
        match loaded {
            Some(Err(error)) => Err(error),
            Some(Ok(value)) => Ok(value),
            // Another caller loaded it while this one waited.
            None => Ok(take(stored(result)).value.clone()),
        }
    }

    /// Reads the counters.
    pub fn stats(&self) -> CacheStats {
        self.recorder.core.stats()
    }

    /// Entries held (approximate until [`run_pending_tasks`](Self::run_pending_tasks)).
    pub fn entry_count(&self) -> u64 {
        self.inner.entry_count()
    }

    /// Applies moka's pending maintenance (evictions, counts) now.
    pub fn run_pending_tasks(&self) {
        self.inner.run_pending_tasks();
    }
}

/// A named, bounded cache for async code; see the module notes.
pub struct AsyncCache<K, V> {
    inner: moka::future::Cache<K, Arc<Stamped<V>>>,
    recorder: Arc<Recorder>,
}

impl<K, V> fmt::Debug for AsyncCache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncCache")
            .field("name", &self.recorder.core.name)
            .field("entries", &self.inner.entry_count())
            .finish()
    }
}

impl<K, V> AsyncCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cache per `config`, judging expiry by `clock`.
    pub fn new(config: CacheConfig, clock: SharedClock) -> Result<Self, CacheError> {
        config.validate()?;
        let recorder = Recorder::new(&config, clock);
        let inner = builder!(future, config, recorder);
        Ok(Self { inner, recorder })
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        &self.recorder.core.name
    }

    /// The live value of `key`, counting a hit or a miss.
    pub async fn get(&self, key: &K) -> Option<V> {
        let entry = self.inner.get(key).await;
        self.recorder.classify(entry.as_deref())
    }

    /// Stores `value` under `key` with the configured TTL.
    pub async fn insert(&self, key: K, value: V) {
        let ttl = self.recorder.core.ttl;
        self.inner
            .insert(key, self.recorder.core.stamp(value, ttl))
            .await;
    }

    /// Stores `value` under `key` with its own TTL instead of the configured one.
    pub async fn insert_with_ttl(&self, key: K, value: V, ttl: Duration) {
        self.inner
            .insert(key, self.recorder.core.stamp(value, Some(ttl)))
            .await;
    }

    /// Removes `key`.
    pub async fn invalidate(&self, key: &K) {
        self.inner.invalidate(key).await;
    }

    /// The live value of `key`, or the value `init` loads, stored and returned.
    /// Concurrent callers for one key share one load.
    pub async fn get_or_insert_with<F>(&self, key: K, init: F) -> V
    where
        F: Future<Output = V>,
    {
        let result = self
            .try_get_or_insert_with(key, async { Ok::<V, std::convert::Infallible>(init.await) })
            .await;
        match result {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }

    /// Like [`get_or_insert_with`](Self::get_or_insert_with) with a fallible
    /// loader; an error is returned and nothing is cached.
    pub async fn try_get_or_insert_with<F, E>(&self, key: K, init: F) -> Result<V, E>
    where
        F: Future<Output = Result<V, E>>,
    {
        if let Some(value) = self.get(&key).await {
            return Ok(value);
        }
        let recorder = &self.recorder;
        let mut loaded: Option<Result<V, E>> = None;
        let loaded_slot = &mut loaded;
        let result = self
            .inner
            .entry(key)
            .and_compute_with(|current| async move {
                let current = current.map(moka::Entry::into_value);
                if current.is_some_and(|entry| recorder.core.check_and_touch(&entry)) {
                    return Op::Nop;
                }
                recorder.load();
                let outcome = init.await;
                let value = outcome.as_ref().ok().cloned();
                *loaded_slot = Some(outcome);
                recorder.store_loaded(value)
            })
            .await;
        match loaded {
            Some(Err(error)) => Err(error),
            Some(Ok(value)) => Ok(value),
            None => Ok(take(stored(result)).value.clone()),
        }
    }

    /// Reads the counters.
    pub fn stats(&self) -> CacheStats {
        self.recorder.core.stats()
    }

    /// Entries held (approximate until [`run_pending_tasks`](Self::run_pending_tasks)).
    pub fn entry_count(&self) -> u64 {
        self.inner.entry_count()
    }

    /// Applies moka's pending maintenance (evictions, counts) now.
    pub async fn run_pending_tasks(&self) {
        self.inner.run_pending_tasks().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::telemetry::MetricsRegistry;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    const MINUTE: Duration = Duration::from_secs(60);

    fn counter(registry: &MetricsRegistry, name: &str, cause: Option<&str>) -> u64 {
        registry
            .snapshot()
            .counters
            .into_iter()
            .find(|(key, _)| {
                key.name() == name
                    && key.labels().any(|l| l.key() == "cache")
                    && cause
                        .is_none_or(|c| key.labels().any(|l| l.key() == "cause" && l.value() == c))
            })
            .map_or(0, |(_, value)| value)
    }

    #[test]
    fn config_errors_name_the_field() {
        let cases = [
            (CacheConfig::new("", 10), "name"),
            (CacheConfig::new("Has Spaces", 10), "name"),
            (CacheConfig::new("x".repeat(65), 10), "name"),
            (CacheConfig::new("ok", 0), "max_capacity"),
            (
                CacheConfig::new("ok", 1).time_to_live(Duration::ZERO),
                "time_to_live",
            ),
            (
                CacheConfig::new("ok", 1).time_to_idle(Duration::ZERO),
                "time_to_idle",
            ),
        ];
        for (config, field) in cases {
            let clock = ManualClock::new().shared();
            match Cache::<u32, u32>::new(config, clock) {
                Err(CacheError::InvalidConfig { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn hits_and_misses_are_counted_and_exported_by_name() {
        let registry = MetricsRegistry::default();
        let clock = ManualClock::new();
        let cache = metrics::with_local_recorder(&registry, || {
            Cache::new(CacheConfig::new("catalog", 100), clock.shared()).unwrap()
        });
        assert_eq!(cache.stats().hit_ratio(), None);
        assert_eq!(cache.get(&1), None);
        cache.insert(1u32, "one".to_string());
        assert_eq!(cache.get(&1).as_deref(), Some("one"));
        assert_eq!(cache.get(&1).as_deref(), Some("one"));
        assert_eq!(cache.get(&2), None);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (2, 2));
        assert_eq!(stats.hit_ratio(), Some(0.5));
        assert_eq!(counter(&registry, "cache_hits_total", None), 2);
        assert_eq!(counter(&registry, "cache_misses_total", None), 2);
        cache.invalidate(&1);
        assert_eq!(cache.get(&1), None);
        cache.run_pending_tasks();
        // An invalidation is not an eviction.
        assert_eq!(cache.stats().expired + cache.stats().evicted_for_size, 0);
        assert_eq!(cache.name(), "catalog");
    }

    #[test]
    fn ttl_expires_on_the_injected_clock_and_counts_once() {
        let registry = MetricsRegistry::default();
        let clock = ManualClock::new();
        let cache = metrics::with_local_recorder(&registry, || {
            Cache::new(
                CacheConfig::new("ttl", 100).time_to_live(10 * MINUTE),
                clock.shared(),
            )
            .unwrap()
        });
        cache.insert("k", 1u64);
        clock.advance(10 * MINUTE - Duration::from_nanos(1));
        assert_eq!(cache.get(&"k"), Some(1), "live until the last nanosecond");
        clock.advance(Duration::from_nanos(1));
        assert_eq!(cache.get(&"k"), None, "expired exactly at the TTL");
        // Overwriting the expired entry counts one expiry.
        cache.insert("k", 2);
        cache.run_pending_tasks();
        assert_eq!(cache.get(&"k"), Some(2));
        assert_eq!(cache.stats().expired, 1);
        assert_eq!(
            counter(&registry, "cache_evictions_total", Some("expired")),
            1
        );
        // A live overwrite is not an expiry.
        cache.insert("k", 3);
        cache.run_pending_tasks();
        assert_eq!(cache.stats().expired, 1);
    }

    #[test]
    fn per_entry_ttl_overrides_the_configured_one() {
        let clock = ManualClock::new();
        let cache = Cache::new(
            CacheConfig::new("per-entry", 100).time_to_live(10 * MINUTE),
            clock.shared(),
        )
        .unwrap();
        cache.insert_with_ttl(1u8, 'a', MINUTE);
        cache.insert_with_ttl(2u8, 'b', 20 * MINUTE);
        clock.advance(15 * MINUTE);
        assert_eq!(cache.get(&1), None);
        assert_eq!(cache.get(&2), Some('b'));
    }

    #[test]
    fn tti_expires_idle_entries_and_reads_keep_them_alive() {
        let clock = ManualClock::new();
        let cache = Cache::new(
            CacheConfig::new("tti", 100).time_to_idle(MINUTE),
            clock.shared(),
        )
        .unwrap();
        cache.insert(7u32, 7u32);
        for _ in 0..5 {
            clock.advance(MINUTE - Duration::from_secs(1));
            assert_eq!(cache.get(&7), Some(7));
        }
        clock.advance(MINUTE);
        assert_eq!(cache.get(&7), None);
    }

    #[test]
    fn get_or_insert_with_loads_once_and_reloads_after_expiry() {
        let clock = ManualClock::new();
        let cache = Cache::new(
            CacheConfig::new("loader", 100).time_to_live(MINUTE),
            clock.shared(),
        )
        .unwrap();
        let loads = AtomicUsize::new(0);
        let load = || loads.fetch_add(1, Ordering::SeqCst) as u32 + 100;
        assert_eq!(cache.get_or_insert_with(1u32, load), 100);
        assert_eq!(cache.get_or_insert_with(1u32, load), 100);
        clock.advance(MINUTE);
        assert_eq!(cache.get_or_insert_with(1u32, load), 101);
        let stats = cache.stats();
        assert_eq!(stats.loads, 2);
        assert_eq!((stats.hits, stats.misses), (1, 2));
        cache.run_pending_tasks();
        assert_eq!(cache.stats().expired, 1);

        // A failing loader caches nothing; the next caller loads again.
        let failed: Result<u32, &str> = cache.try_get_or_insert_with(2, || Err("db down"));
        assert_eq!(failed, Err("db down"));
        assert_eq!(cache.get(&2), None);
        assert_eq!(cache.try_get_or_insert_with(2, || Ok::<_, &str>(5)), Ok(5));
        assert_eq!(cache.stats().loads, 4);
    }

    #[test]
    fn concurrent_callers_share_one_load() {
        let clock = ManualClock::new();
        let cache = Cache::new(CacheConfig::new("single-flight", 100), clock.shared()).unwrap();
        let loads = AtomicUsize::new(0);
        let (started_tx, started_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        std::thread::scope(|scope| {
            let (cache, loads) = (&cache, &loads);
            let first = scope.spawn(move || {
                cache.get_or_insert_with("key", || {
                    loads.fetch_add(1, Ordering::SeqCst);
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    "loaded by the first caller"
                })
            });
            started_rx.recv().unwrap();
            // The load is in flight: these callers must wait for it, not load.
            let waiters: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(move || {
                        cache.get_or_insert_with("key", || {
                            loads.fetch_add(1, Ordering::SeqCst);
                            "loaded twice"
                        })
                    })
                })
                .collect();
            release_tx.send(()).unwrap();
            assert_eq!(first.join().unwrap(), "loaded by the first caller");
            for waiter in waiters {
                assert_eq!(waiter.join().unwrap(), "loaded by the first caller");
            }
        });
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(cache.stats().loads, 1);
    }

    #[test]
    fn capacity_bounds_the_cache_and_evictions_are_counted() {
        let registry = MetricsRegistry::default();
        let clock = ManualClock::new();
        let cache = metrics::with_local_recorder(&registry, || {
            Cache::new(CacheConfig::new("small", 10), clock.shared()).unwrap()
        });
        for key in 0..200u32 {
            cache.insert(key, key);
            cache.run_pending_tasks();
        }
        cache.run_pending_tasks();
        let held = cache.entry_count();
        assert!(held <= 10, "held {held}");
        let evicted = cache.stats().evicted_for_size;
        assert_eq!(evicted + held, 200);
        assert_eq!(
            counter(&registry, "cache_evictions_total", Some("size")),
            evicted
        );
    }

    #[tokio::test]
    async fn async_cache_expires_and_shares_one_load_among_concurrent_futures() {
        let clock = ManualClock::new();
        let cache = AsyncCache::new(
            CacheConfig::new("async", 100).time_to_live(MINUTE),
            clock.shared(),
        )
        .unwrap();
        let loads = AtomicUsize::new(0);
        let callers = (0..8).map(|_| {
            cache.get_or_insert_with(1u32, async {
                loads.fetch_add(1, Ordering::SeqCst);
                // Let every other caller reach the cache while this load is pending.
                tokio::task::yield_now().await;
                42u32
            })
        });
        let values = futures::future::join_all(callers).await;
        assert_eq!(values, vec![42; 8]);
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(cache.get(&1).await, Some(42));
        clock.advance(MINUTE);
        assert_eq!(cache.get(&1).await, None);
        cache.insert_with_ttl(1, 43, 2 * MINUTE).await;
        clock.advance(MINUTE);
        assert_eq!(cache.get(&1).await, Some(43));
        cache.invalidate(&1).await;
        assert_eq!(cache.get(&1).await, None);
        let failed: Result<u32, String> = cache
            .try_get_or_insert_with(2, async { Err("no".to_string()) })
            .await;
        assert!(failed.is_err());
        cache.run_pending_tasks().await;
        assert_eq!(cache.stats().loads, 2);
        assert_eq!(cache.name(), "async");
    }
}
