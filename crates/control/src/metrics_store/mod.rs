//! An Atlas-like dimensional metrics store, in memory, for the last hour.
//!
//! A series is a metric name plus a tag map; instances publish datapoints
//! ([`casebook_kit::metrics_push::PublishBatch`]) and the query API filters series by
//! tags, groups them by tags and aggregates them ([`query`]).
//!
//! **What it guarantees**
//! - Values are normalised to one-second steps and kept for [`WINDOW_SECS`] (one hour)
//!   of wall time, read from the injected [`SharedClock`]. Within a step a *gauge*
//!   keeps its largest value (max, not last: the result does not depend on the order
//!   datapoints arrive in), a *counter* sums its deltas (so a step is a rate per
//!   second), a *distribution* keeps count, sum, min, max and log-linear percentile
//!   buckets ([`buckets`]).
//! - Memory is bounded: at most `max_series` series (a new series beyond it is
//!   dropped and counted), each a ring of 64 one-minute blocks allocated on first
//!   write; a distribution step holds at most [`buckets::BUCKET_COUNT`] buckets.
//!   Series with no data left in the window are removed by [`MetricsStore::sweep`]
//!   (run by ingest once a minute per shard), which frees their place under the cap.
//! - A datapoint older than the window, further than `future_tolerance` ahead of the
//!   clock, of a kind other than its series', or over the series cap is dropped and
//!   counted by reason ([`StoreStats`]); every value a valid batch carries is either
//!   stored or counted as dropped.
//! - A malformed batch is refused whole before anything is stored.
//! - Ingest is sharded by the series hash (computed once per datapoint); a batch
//!   takes each shard's lock once, so several threads ingest in parallel, and the
//!   path for an existing series allocates nothing per datapoint.
//!
//! **What it does not do**: persist anything (a restart starts empty), keep more
//! than an hour, downsample, accept arbitrary regexes in queries, or deduplicate a
//! batch published twice (counters would count twice).

pub mod api;
pub mod buckets;
pub mod query;

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use casebook_kit::clock::SharedClock;
use casebook_kit::metrics_push::{BatchError, Datapoint, MetricKind, PublishBatch};
use parking_lot::Mutex;
use serde::Serialize;

use buckets::Buckets;

/// How much history is kept, in one-second steps.
pub const WINDOW_SECS: u64 = 3600;
/// Steps per block: a block is one minute of one series.
const BLOCK_STEPS: u64 = 60;
/// Blocks per series ring: the window (60 minutes) plus the future tolerance plus
/// the partial minutes at both ends must never wrap onto a live block.
const RING_BLOCKS: u64 = 64;
/// The largest accepted future tolerance (keeps the ring from wrapping).
pub const MAX_FUTURE_TOLERANCE_SECS: u64 = 120;

/// How the store is sized.
#[derive(Debug, Clone)]
pub struct MetricsStoreConfig {
    /// The most series kept at once.
    pub max_series: usize,
    /// Lock shards; more shards, less contention between ingesting threads.
    pub shards: usize,
    /// How far ahead of the clock a timestamp may be (clock skew between nodes).
    pub future_tolerance_secs: u64,
}

impl Default for MetricsStoreConfig {
    fn default() -> Self {
        Self {
            max_series: 100_000,
            shards: 32,
            future_tolerance_secs: 60,
        }
    }
}

/// Why datapoints were not stored, counted in values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Dropped {
    /// Older than the window.
    pub too_old: u64,
    /// Further ahead of the clock than the future tolerance.
    pub too_far_in_future: u64,
    /// A new series while the store held `max_series`.
    pub series_limit: u64,
    /// A kind other than the one its series was created with.
    pub kind_mismatch: u64,
}

impl Dropped {
    fn add(&mut self, other: &Dropped) {
        self.too_old += other.too_old;
        self.too_far_in_future += other.too_far_in_future;
        self.series_limit += other.series_limit;
        self.kind_mismatch += other.kind_mismatch;
    }

    /// All drops, whatever the reason.
    pub fn total(&self) -> u64 {
        self.too_old + self.too_far_in_future + self.series_limit + self.kind_mismatch
    }
}

/// What one ingested batch did, counted in values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IngestReport {
    /// Values stored.
    pub accepted: u64,
    /// Values dropped, by reason.
    pub dropped: Dropped,
}

/// The store's counters since it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Series held now.
    pub series: usize,
    /// The series cap.
    pub max_series: usize,
    /// Values stored since start.
    pub datapoints_ingested: u64,
    /// Values dropped since start, by reason.
    pub dropped: Dropped,
    /// Batches refused whole as malformed or too large.
    pub batches_rejected: u64,
    /// Series removed because their data left the window.
    pub series_expired: u64,
}

/// The in-memory dimensional store. Share it as `Arc<MetricsStore>`.
pub struct MetricsStore {
    clock: SharedClock,
    config: MetricsStoreConfig,
    shards: Box<[Mutex<Shard>]>,
    series_count: AtomicUsize,
    batches_rejected: AtomicU64,
}

impl std::fmt::Debug for MetricsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsStore")
            .field("config", &self.config)
            .field("series", &self.series_count.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl MetricsStore {
    /// A store with the default sizing.
    pub fn new(clock: SharedClock) -> Self {
        Self::with_config(clock, MetricsStoreConfig::default())
    }

    /// A store sized by `config`; out-of-range settings are clamped (at least one
    /// shard and at most 1024, a tolerance of at most [`MAX_FUTURE_TOLERANCE_SECS`]).
    pub fn with_config(clock: SharedClock, mut config: MetricsStoreConfig) -> Self {
        config.shards = config.shards.clamp(1, 1024);
        config.future_tolerance_secs = config.future_tolerance_secs.min(MAX_FUTURE_TOLERANCE_SECS);
        let shards = (0..config.shards)
            .map(|_| Mutex::new(Shard::default()))
            .collect();
        Self {
            clock,
            config,
            shards,
            series_count: AtomicUsize::new(0),
            batches_rejected: AtomicU64::new(0),
        }
    }

    /// The store's sizing.
    pub fn config(&self) -> &MetricsStoreConfig {
        &self.config
    }

    /// The wall-clock second now.
    fn now_sec(&self) -> u64 {
        self.clock.wall_millis() / 1000
    }

    /// Validates and stores a batch. A malformed or oversized batch is refused whole
    /// (and counted); otherwise every value is stored or counted as dropped.
    pub fn ingest(&self, batch: &PublishBatch) -> Result<IngestReport, BatchError> {
        if let Err(err) = batch.validate() {
            self.batches_rejected.fetch_add(1, Ordering::Relaxed);
            return Err(err);
        }
        Ok(self.ingest_valid(batch))
    }

    fn ingest_valid(&self, batch: &PublishBatch) -> IngestReport {
        let now = self.now_sec();
        let window = Window::at(now, self.config.future_tolerance_secs);
        // Hash each series once; visit shards in order so each lock is taken once.
        let mut order: Vec<(u32, u32, u64)> = batch
            .metrics
            .iter()
            .enumerate()
            .map(|(i, dp)| {
                let hash = series_hash(&dp.name, merged_tags(&batch.tags, &dp.tags));
                (self.shard_of(hash), i as u32, hash)
            })
            .collect();
        order.sort_unstable_by_key(|(shard, i, _)| (*shard, *i));
        let mut report = IngestReport::default();
        for run in order.chunk_by(|a, b| a.0 == b.0) {
            let mut shard = self.shards[run[0].0 as usize].lock();
            let before = (shard.ingested, shard.dropped);
            for &(_, i, hash) in run {
                let dp = &batch.metrics[i as usize];
                shard.apply(self, &window, &batch.tags, dp, hash);
            }
            if now >= shard.next_sweep_sec {
                self.sweep_shard(&mut shard, &window);
            }
            report.accepted += shard.ingested - before.0;
            let mut dropped = shard.dropped;
            dropped.too_old -= before.1.too_old;
            dropped.too_far_in_future -= before.1.too_far_in_future;
            dropped.series_limit -= before.1.series_limit;
            dropped.kind_mismatch -= before.1.kind_mismatch;
            report.dropped.add(&dropped);
        }
        report
    }

    fn shard_of(&self, hash: u64) -> u32 {
        // Multiply-shift on the high half: the shard map's buckets use the low bits.
        (((hash >> 32) * self.shards.len() as u64) >> 32) as u32
    }

    /// Drops blocks that left the window and series left with none. Ingest runs
    /// this once a minute per shard; call it to free space sooner.
    pub fn sweep(&self) {
        let window = Window::at(self.now_sec(), self.config.future_tolerance_secs);
        for shard in self.shards.iter() {
            self.sweep_shard(&mut shard.lock(), &window);
        }
    }

    fn sweep_shard(&self, shard: &mut Shard, window: &Window) {
        let removed = shard.sweep(window);
        if removed > 0 {
            self.series_count.fetch_sub(removed, Ordering::Relaxed);
        }
        shard.next_sweep_sec = window.now + BLOCK_STEPS;
    }

    /// Counters since start.
    pub fn stats(&self) -> StoreStats {
        let mut stats = StoreStats {
            series: self.series_count.load(Ordering::Relaxed),
            max_series: self.config.max_series,
            datapoints_ingested: 0,
            dropped: Dropped::default(),
            batches_rejected: self.batches_rejected.load(Ordering::Relaxed),
            series_expired: 0,
        };
        for shard in self.shards.iter() {
            let shard = shard.lock();
            stats.datapoints_ingested += shard.ingested;
            stats.dropped.add(&shard.dropped);
            stats.series_expired += shard.expired;
        }
        stats
    }

    /// Counts a batch refused before it reached [`MetricsStore::ingest`] (too large
    /// to read, not JSON).
    pub fn count_rejected_batch(&self) {
        self.batches_rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Reserves a place under the series cap.
    fn reserve_series(&self) -> bool {
        let before = self.series_count.fetch_add(1, Ordering::Relaxed);
        if before >= self.config.max_series {
            self.series_count.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// The names held, with their series counts, sorted by name.
    pub fn names(&self) -> Vec<(String, usize)> {
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        for shard in self.shards.iter() {
            for (name, slots) in &shard.lock().by_name {
                *names.entry(name.to_string()).or_default() += slots.len();
            }
        }
        names.into_iter().collect()
    }

    /// The series of `name` (at most `limit`, sorted by tags), whether more exist,
    /// and every tag's values across all of them.
    pub fn series_of(&self, name: &str, limit: usize) -> SeriesListing {
        let mut listing = SeriesListing {
            name: name.to_owned(),
            ..SeriesListing::default()
        };
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            for series in shard.named(name) {
                listing.kind.get_or_insert(series.kind);
                let tags: BTreeMap<String, String> = series
                    .tags
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                for (k, v) in &tags {
                    listing
                        .tag_values
                        .entry(k.clone())
                        .or_default()
                        .insert(v.clone());
                }
                all.push(tags);
            }
        }
        all.sort();
        listing.total = all.len();
        listing.truncated = all.len() > limit;
        all.truncate(limit);
        listing.series = all;
        listing
    }
}

/// What [`MetricsStore::series_of`] lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SeriesListing {
    pub name: String,
    /// The kind of the series (from any one of them; `None` when there are none).
    pub kind: Option<MetricKind>,
    /// How many series the name has.
    pub total: usize,
    /// Whether `series` was cut at the limit.
    pub truncated: bool,
    /// Each series' tags.
    pub series: Vec<BTreeMap<String, String>>,
    /// Each tag key's values across all the series.
    pub tag_values: BTreeMap<String, std::collections::BTreeSet<String>>,
}

/// The accepted range of seconds at one instant.
#[derive(Debug, Clone, Copy)]
struct Window {
    now: u64,
    /// The oldest second kept.
    first: u64,
    /// The newest second accepted.
    last: u64,
}

impl Window {
    fn at(now: u64, future_tolerance: u64) -> Self {
        Self {
            now,
            first: now.saturating_sub(WINDOW_SECS - 1),
            last: now + future_tolerance,
        }
    }
}

// ---------------------------------------------------------------------------
// Series identity
// ---------------------------------------------------------------------------

/// The tags of a datapoint: the batch's common tags and its own, sorted by key, its
/// own winning on a shared key. Allocates nothing.
fn merged_tags<'a>(
    common: &'a BTreeMap<String, String>,
    own: &'a BTreeMap<String, String>,
) -> MergedTags<'a> {
    MergedTags {
        common: common.iter().peekable(),
        own: own.iter().peekable(),
    }
}

#[derive(Clone)]
struct MergedTags<'a> {
    common: std::iter::Peekable<std::collections::btree_map::Iter<'a, String, String>>,
    own: std::iter::Peekable<std::collections::btree_map::Iter<'a, String, String>>,
}

impl<'a> Iterator for MergedTags<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let pick = match (self.common.peek(), self.own.peek()) {
            (None, None) => return None,
            (Some(_), None) => self.common.next(),
            (None, Some(_)) => self.own.next(),
            (Some((ck, _)), Some((ok, _))) => match ck.cmp(ok) {
                std::cmp::Ordering::Less => self.common.next(),
                std::cmp::Ordering::Greater => self.own.next(),
                std::cmp::Ordering::Equal => {
                    self.common.next();
                    self.own.next()
                }
            },
        };
        pick.map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// The series hash of a name and its sorted tags. Deterministic (fixed keys) so
/// shard placement is stable; collisions are resolved by comparing keys.
fn series_hash<'a>(name: &str, tags: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    name.hash(&mut hasher);
    for (k, v) in tags {
        k.hash(&mut hasher);
        v.hash(&mut hasher);
    }
    hasher.finish()
}

/// Passes a precomputed `u64` hash through as the map's hash.
#[derive(Debug, Default)]
struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed with this hasher; fold anything else safely.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Prehashed = BuildHasherDefault<PrehashedHasher>;

// ---------------------------------------------------------------------------
// Shards and series
// ---------------------------------------------------------------------------

/// The slots whose series share one hash: nearly always one.
#[derive(Debug)]
enum Slots {
    One(u32),
    Many(Vec<u32>),
}

impl Slots {
    fn as_slice(&self) -> &[u32] {
        match self {
            Slots::One(slot) => std::slice::from_ref(slot),
            Slots::Many(slots) => slots,
        }
    }
}

#[derive(Debug, Default)]
struct Shard {
    series: Vec<Option<Series>>,
    free: Vec<u32>,
    by_hash: HashMap<u64, Slots, Prehashed>,
    by_name: HashMap<Box<str>, Vec<u32>>,
    ingested: u64,
    dropped: Dropped,
    expired: u64,
    next_sweep_sec: u64,
}

#[derive(Debug)]
struct Series {
    name: Box<str>,
    tags: Box<[(Box<str>, Box<str>)]>,
    hash: u64,
    kind: MetricKind,
    data: SeriesData,
}

impl Series {
    fn is<'a>(&self, name: &str, mut tags: impl Iterator<Item = (&'a str, &'a str)>) -> bool {
        *self.name == *name
            && self
                .tags
                .iter()
                .all(|(k, v)| tags.next() == Some((&**k, &**v)))
            && tags.next().is_none()
    }

    /// The value of tag `key`, if the series has it.
    fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|at| &*self.tags[at].1)
    }
}

#[derive(Debug)]
enum SeriesData {
    Scalar(Ring<f64>),
    Distribution(Ring<DistStep>),
}

/// One second of a distribution.
#[derive(Debug, Clone, Default)]
struct DistStep {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    buckets: Buckets,
}

impl DistStep {
    fn record(&mut self, value: f64) {
        if self.count == 0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.count += 1;
        self.sum += value;
        self.buckets.record(value);
    }
}

/// One minute of one series.
#[derive(Debug)]
struct Block<T> {
    minute: u64,
    steps: [T; BLOCK_STEPS as usize],
}

/// A series' last hour: one-minute blocks in a ring, allocated on first write.
#[derive(Debug)]
struct Ring<T> {
    blocks: [Option<Box<Block<T>>>; RING_BLOCKS as usize],
}

/// What an empty step holds.
trait Step: Sized {
    fn empty() -> Self;
}
impl Step for f64 {
    fn empty() -> Self {
        f64::NAN
    }
}
impl Step for DistStep {
    fn empty() -> Self {
        DistStep::default()
    }
}

impl<T: Step> Ring<T> {
    fn new() -> Self {
        Self {
            blocks: std::array::from_fn(|_| None),
        }
    }

    /// The step of second `sec`, made (and any stale minute in its slot reset) if
    /// need be. `sec` must be inside the accepted window.
    fn step_mut(&mut self, sec: u64) -> &mut T {
        let minute = sec / BLOCK_STEPS;
        let slot = &mut self.blocks[(minute % RING_BLOCKS) as usize];
        match slot {
            Some(block) if block.minute == minute => {}
            Some(block) => {
                // The ring only wraps onto minutes that left the window.
                debug_assert!(block.minute < minute);
                block.minute = minute;
                block.steps.iter_mut().for_each(|s| *s = T::empty());
            }
            None => {
                *slot = Some(Box::new(Block {
                    minute,
                    steps: std::array::from_fn(|_| T::empty()),
                }));
            }
        }
        let block = slot.as_mut().expect("filled above");
        &mut block.steps[(sec % BLOCK_STEPS) as usize]
    }

    /// The step of second `sec`, if that minute is held.
    fn step(&self, sec: u64) -> Option<&T> {
        let minute = sec / BLOCK_STEPS;
        self.blocks[(minute % RING_BLOCKS) as usize]
            .as_ref()
            .filter(|block| block.minute == minute)
            .map(|block| &block.steps[(sec % BLOCK_STEPS) as usize])
    }

    /// Frees blocks wholly before `first`; whether any block is left.
    fn expire_before(&mut self, first: u64) -> bool {
        let mut live = false;
        for slot in &mut self.blocks {
            if let Some(block) = slot {
                if (block.minute + 1) * BLOCK_STEPS <= first {
                    *slot = None;
                } else {
                    live = true;
                }
            }
        }
        live
    }
}

impl SeriesData {
    fn new(kind: MetricKind) -> Self {
        match kind {
            MetricKind::Gauge | MetricKind::Counter => Self::Scalar(Ring::new()),
            MetricKind::Distribution => Self::Distribution(Ring::new()),
        }
    }
}

impl Shard {
    fn find<'a>(
        &self,
        hash: u64,
        name: &str,
        tags: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    ) -> Option<u32> {
        let slots = self.by_hash.get(&hash)?;
        slots.as_slice().iter().copied().find(|&slot| {
            self.series[slot as usize]
                .as_ref()
                .is_some_and(|s| s.is(name, tags.clone()))
        })
    }

    fn apply(
        &mut self,
        store: &MetricsStore,
        window: &Window,
        common: &BTreeMap<String, String>,
        dp: &Datapoint,
        hash: u64,
    ) {
        let values = dp.samples();
        let n = values.len() as u64;
        let sec = dp.timestamp / 1000;
        if sec < window.first {
            self.dropped.too_old += n;
            return;
        }
        if sec > window.last {
            self.dropped.too_far_in_future += n;
            return;
        }
        let tags = merged_tags(common, &dp.tags);
        let slot = match self.find(hash, &dp.name, tags.clone()) {
            Some(slot) => slot,
            None => {
                if !store.reserve_series() {
                    self.dropped.series_limit += n;
                    return;
                }
                self.insert(Series {
                    name: dp.name.as_str().into(),
                    tags: tags.map(|(k, v)| (k.into(), v.into())).collect(),
                    hash,
                    kind: dp.kind,
                    data: SeriesData::new(dp.kind),
                })
            }
        };
        let series = self.series[slot as usize].as_mut().expect("live slot");
        if series.kind != dp.kind {
            self.dropped.kind_mismatch += n;
            return;
        }
        match (&mut series.data, dp.kind) {
            (SeriesData::Scalar(ring), MetricKind::Gauge) => {
                let step = ring.step_mut(sec);
                for &v in values {
                    *step = if step.is_nan() { v } else { step.max(v) };
                }
            }
            (SeriesData::Scalar(ring), MetricKind::Counter) => {
                let step = ring.step_mut(sec);
                for &v in values {
                    *step = if step.is_nan() { v } else { *step + v };
                }
            }
            (SeriesData::Distribution(ring), MetricKind::Distribution) => {
                let step = ring.step_mut(sec);
                for &v in values {
                    step.record(v);
                }
            }
            _ => unreachable!("a series' data always matches its kind"),
        }
        self.ingested += n;
    }

    fn insert(&mut self, series: Series) -> u32 {
        let hash = series.hash;
        let name = series.name.clone();
        let slot = match self.free.pop() {
            Some(slot) => {
                debug_assert!(self.series[slot as usize].is_none());
                self.series[slot as usize] = Some(series);
                slot
            }
            None => {
                self.series.push(Some(series));
                u32::try_from(self.series.len() - 1).expect("fewer than 2^32 series a shard")
            }
        };
        match self.by_hash.entry(hash) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Slots::One(slot));
            }
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let slots = e.get_mut();
                let mut all = slots.as_slice().to_vec();
                all.push(slot);
                *slots = Slots::Many(all);
            }
        }
        self.by_name.entry(name).or_default().push(slot);
        slot
    }

    fn remove(&mut self, slot: u32) {
        let series = self.series[slot as usize].take().expect("live slot");
        if let std::collections::hash_map::Entry::Occupied(mut e) = self.by_hash.entry(series.hash)
        {
            let rest: Vec<u32> = e
                .get()
                .as_slice()
                .iter()
                .copied()
                .filter(|s| *s != slot)
                .collect();
            match rest.as_slice() {
                [] => {
                    e.remove();
                }
                [one] => *e.get_mut() = Slots::One(*one),
                _ => *e.get_mut() = Slots::Many(rest),
            }
        }
        if let Some(slots) = self.by_name.get_mut(&series.name) {
            slots.retain(|s| *s != slot);
            if slots.is_empty() {
                self.by_name.remove(&series.name);
            }
        }
        self.free.push(slot);
    }

    /// Frees expired blocks and removes series with none left; the count removed.
    fn sweep(&mut self, window: &Window) -> usize {
        let mut dead = Vec::new();
        for (slot, series) in self.series.iter_mut().enumerate() {
            let Some(series) = series else { continue };
            let live = match &mut series.data {
                SeriesData::Scalar(ring) => ring.expire_before(window.first),
                SeriesData::Distribution(ring) => ring.expire_before(window.first),
            };
            if !live {
                dead.push(slot as u32);
            }
        }
        for &slot in &dead {
            self.remove(slot);
        }
        self.expired += dead.len() as u64;
        dead.len()
    }

    /// The live series called `name`.
    fn named<'s>(&'s self, name: &str) -> impl Iterator<Item = &'s Series> + 's {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|&slot| self.series[slot as usize].as_ref())
    }
}

#[cfg(test)]
mod tests;
