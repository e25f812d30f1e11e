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
//! - Memory is bounded: at most `max_series` series, `max_distribution_series` of
//!   them distributions (a new series beyond a cap is dropped and counted), each a
//!   ring of 64 one-minute blocks allocated on first write (a gauge or counter:
//!   about 0.6 KB plus 0.5 KB a minute of data, 31 KB for a full hour); a
//!   distribution step holds at most [`buckets::BUCKET_COUNT`] buckets.
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
use std::hash::{BuildHasherDefault, Hasher};
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

/// How the store is sized (the `[metrics_store]` table of the configuration).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsStoreConfig {
    /// The most series kept at once, of every kind.
    pub max_series: usize,
    /// The most distribution series among them: a distribution's hour can hold
    /// hundreds of kilobytes of buckets where a gauge's holds 30 KB.
    pub max_distribution_series: usize,
    /// Lock shards; more shards, less contention between ingesting threads.
    pub shards: usize,
    /// How far ahead of the clock a timestamp may be (clock skew between nodes);
    /// whole seconds count, at most [`MAX_FUTURE_TOLERANCE_SECS`].
    #[serde(with = "humantime_serde")]
    pub future_tolerance: std::time::Duration,
}

impl Default for MetricsStoreConfig {
    fn default() -> Self {
        Self {
            max_series: 100_000,
            max_distribution_series: 2_000,
            shards: 32,
            future_tolerance: std::time::Duration::from_secs(60),
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
    /// A new series while the store held `max_series` (or, for a distribution,
    /// `max_distribution_series`).
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
    /// Distribution series held now.
    pub distribution_series: usize,
    /// The distribution series cap.
    pub max_distribution_series: usize,
    /// Values stored since start.
    pub datapoints_ingested: u64,
    /// Values dropped since start, by reason.
    pub dropped: Dropped,
    /// Batches refused whole as malformed or too large.
    pub batches_rejected: u64,
    /// Series removed because their data left the window.
    pub series_expired: u64,
}

/// A shard on cache lines of its own: two cores working on neighbouring shards
/// must not contend for one line (its lock and counters change on every datapoint).
#[derive(Debug)]
#[repr(align(128))]
struct PaddedShard(Mutex<Shard>);

impl std::ops::Deref for PaddedShard {
    type Target = Mutex<Shard>;
    fn deref(&self) -> &Mutex<Shard> {
        &self.0
    }
}

/// The in-memory dimensional store. Share it as `Arc<MetricsStore>`.
pub struct MetricsStore {
    clock: SharedClock,
    /// Random per store, so series hashes cannot be chosen to collide.
    seed: u64,
    config: MetricsStoreConfig,
    shards: Box<[PaddedShard]>,
    series_count: AtomicUsize,
    distribution_count: AtomicUsize,
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
        config.future_tolerance = config
            .future_tolerance
            .min(std::time::Duration::from_secs(MAX_FUTURE_TOLERANCE_SECS));
        let shards = (0..config.shards)
            .map(|_| PaddedShard(Mutex::new(Shard::default())))
            .collect();
        Self {
            clock,
            seed: rand::random(),
            config,
            shards,
            series_count: AtomicUsize::new(0),
            distribution_count: AtomicUsize::new(0),
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
        let window = Window::at(now, self.config.future_tolerance.as_secs());
        // Hash each series once, then order the datapoints by shard (a counting
        // sort, stable) so each shard's lock is taken once per batch.
        let shard_count = self.shards.len();
        let hashes: Vec<u64> = batch
            .metrics
            .iter()
            .map(|dp| series_hash(self.seed, &dp.name, merged_tags(&batch.tags, &dp.tags)))
            .collect();
        let mut starts = vec![0usize; shard_count + 1];
        for &hash in &hashes {
            starts[self.shard_of(hash) + 1] += 1;
        }
        for s in 1..=shard_count {
            starts[s] += starts[s - 1];
        }
        let mut next = starts.clone();
        let mut order = vec![0u32; hashes.len()];
        for (i, &hash) in hashes.iter().enumerate() {
            let shard = self.shard_of(hash);
            order[next[shard]] = i as u32;
            next[shard] += 1;
        }
        let mut report = IngestReport::default();
        // First pass: shards free right now; a shard another thread holds is left
        // for the second pass, so concurrent batches do not queue behind each other
        // in shard order.
        let mut busy = Vec::new();
        // Batches start at different shards, so concurrent ones do not march in step.
        let first = hashes.first().map_or(0, |h| (*h as usize) % shard_count);
        for s in (first..shard_count).chain(0..first) {
            let run = &order[starts[s]..starts[s + 1]];
            if run.is_empty() {
                continue;
            }
            match self.shards[s].try_lock() {
                Some(mut shard) => {
                    self.apply_run(&mut shard, &window, batch, run, &hashes, &mut report);
                }
                None => busy.push(s),
            }
        }
        for s in busy {
            let run = &order[starts[s]..starts[s + 1]];
            let mut shard = self.shards[s].lock();
            self.apply_run(&mut shard, &window, batch, run, &hashes, &mut report);
        }
        report
    }

    /// Stores the datapoints `run` (indexes into the batch) of one locked shard.
    fn apply_run(
        &self,
        shard: &mut Shard,
        window: &Window,
        batch: &PublishBatch,
        run: &[u32],
        hashes: &[u64],
        report: &mut IngestReport,
    ) {
        // Counted locally and added once: the shard's counters share its hot lines.
        let mut run_report = IngestReport::default();
        for &i in run {
            let dp = &batch.metrics[i as usize];
            shard.apply(
                self,
                window,
                &batch.tags,
                dp,
                hashes[i as usize],
                &mut run_report,
            );
        }
        shard.ingested += run_report.accepted;
        shard.dropped.add(&run_report.dropped);
        if window.now >= shard.next_sweep_sec {
            self.sweep_shard(shard, window);
        }
        report.accepted += run_report.accepted;
        report.dropped.add(&run_report.dropped);
    }

    fn shard_of(&self, hash: u64) -> usize {
        // Multiply-shift on bits 16..48: the shard maps take their bucket from the
        // low bits and their tag byte from the top 7, which must keep varying
        // inside a shard.
        ((((hash >> 16) & 0xffff_ffff) * self.shards.len() as u64) >> 32) as usize
    }

    /// Drops blocks that left the window and series left with none. Ingest runs
    /// this once a minute per shard; call it to free space sooner.
    pub fn sweep(&self) {
        let window = Window::at(self.now_sec(), self.config.future_tolerance.as_secs());
        for shard in self.shards.iter() {
            self.sweep_shard(&mut shard.lock(), &window);
        }
    }

    fn sweep_shard(&self, shard: &mut Shard, window: &Window) {
        let (removed, distributions) = shard.sweep(window);
        self.series_count.fetch_sub(removed, Ordering::Relaxed);
        self.distribution_count
            .fetch_sub(distributions, Ordering::Relaxed);
        shard.next_sweep_sec = window.now + BLOCK_STEPS;
    }

    /// Counters since start.
    pub fn stats(&self) -> StoreStats {
        let mut stats = StoreStats {
            series: self.series_count.load(Ordering::Relaxed),
            max_series: self.config.max_series,
            distribution_series: self.distribution_count.load(Ordering::Relaxed),
            max_distribution_series: self.config.max_distribution_series,
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

    /// Reserves a place under the series caps for a new series of `kind`.
    fn reserve_series(&self, kind: MetricKind) -> bool {
        if kind == MetricKind::Distribution
            && !reserve(
                &self.distribution_count,
                self.config.max_distribution_series,
            )
        {
            return false;
        }
        if !reserve(&self.series_count, self.config.max_series) {
            if kind == MetricKind::Distribution {
                self.distribution_count.fetch_sub(1, Ordering::Relaxed);
            }
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
                    .tags()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
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

/// Takes one place of `cap` in `count`, if there is one.
fn reserve(count: &AtomicUsize, cap: usize) -> bool {
    let before = count.fetch_add(1, Ordering::Relaxed);
    if before >= cap {
        count.fetch_sub(1, Ordering::Relaxed);
        return false;
    }
    true
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

/// The series hash of a name and its sorted tags: a word-at-a-time folded
/// multiply (in the style of wyhash), keyed by the store's seed. Collisions are
/// resolved by comparing keys, so the hash only has to spread well.
fn series_hash<'a>(seed: u64, name: &str, tags: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut hash = KeyHash(seed ^ HASH_P0);
    hash.write(name.as_bytes());
    for (k, v) in tags {
        hash.write(k.as_bytes());
        hash.write(v.as_bytes());
    }
    fold(hash.0, HASH_P0 ^ seed)
}

const HASH_P0: u64 = 0xa076_1d64_78bd_642f;
const HASH_P1: u64 = 0xe703_7ed1_a0b4_28db;

fn fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

struct KeyHash(u64);

impl KeyHash {
    /// Mixes in one piece; its length goes in too, so `("ab", "c")` and `("a",
    /// "bc")` hash apart.
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            self.0 = fold(self.0 ^ word, HASH_P1);
        }
        let mut tail = [0u8; 8];
        let rest = words.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        tail[7] = bytes.len() as u8;
        self.0 = fold(self.0 ^ u64::from_le_bytes(tail), HASH_P1);
    }
}

/// Separates a tag from what comes before it in an encoded key.
const TAG_SEP: char = '\x1f';
/// Separates a tag's key from its value in an encoded key.
const VALUE_SEP: char = '\x1e';

/// A series key as one string: `name␟k1␞v1␟k2␞v2`. One allocation per series,
/// compared in one pass; the separators are control characters, which the publish
/// API refuses in names and tags, so the encoding is unambiguous.
fn encode_key<'a>(name: &str, tags: impl Iterator<Item = (&'a str, &'a str)>) -> Box<str> {
    let mut key = String::with_capacity(name.len() + 64);
    key.push_str(name);
    for (k, v) in tags {
        key.push(TAG_SEP);
        key.push_str(k);
        key.push(VALUE_SEP);
        key.push_str(v);
    }
    key.into_boxed_str()
}

/// Whether the encoded `key` is `name` with `tags`; allocates nothing.
fn key_matches<'a>(key: &str, name: &str, tags: impl Iterator<Item = (&'a str, &'a str)>) -> bool {
    let Some(mut rest) = key.strip_prefix(name) else {
        return false;
    };
    for (k, v) in tags {
        let Some(after) = rest
            .strip_prefix(TAG_SEP)
            .and_then(|r| r.strip_prefix(k))
            .and_then(|r| r.strip_prefix(VALUE_SEP))
            .and_then(|r| r.strip_prefix(v))
        else {
            return false;
        };
        rest = after;
    }
    rest.is_empty()
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
    hash: u64,
    kind: MetricKind,
    /// Where the name ends in `key`.
    name_len: usize,
    /// The encoded key ([`encode_key`]).
    key: Box<str>,
    data: SeriesData,
}

impl Series {
    fn new<'a>(
        name: &str,
        tags: impl Iterator<Item = (&'a str, &'a str)>,
        hash: u64,
        kind: MetricKind,
    ) -> Self {
        Self {
            hash,
            kind,
            name_len: name.len(),
            key: encode_key(name, tags),
            data: SeriesData::new(kind),
        }
    }

    fn name(&self) -> &str {
        &self.key[..self.name_len]
    }

    /// The tags, sorted by key.
    fn tags(&self) -> impl Iterator<Item = (&str, &str)> {
        self.key[self.name_len..]
            .split(TAG_SEP)
            .skip(1)
            .map(|tag| tag.split_once(VALUE_SEP).expect("encoded by encode_key"))
    }

    /// The value of tag `key`, if the series has it.
    fn tag(&self, key: &str) -> Option<&str> {
        self.tags().find(|(k, _)| *k == key).map(|(_, v)| v)
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

    /// The step of second `sec`, made (and an older minute in its slot reset) if
    /// need be. `None` when the slot holds a newer minute: only possible after the
    /// wall clock stepped back, and then the older datapoint loses.
    fn step_mut(&mut self, sec: u64) -> Option<&mut T> {
        let minute = sec / BLOCK_STEPS;
        let slot = &mut self.blocks[(minute % RING_BLOCKS) as usize];
        match slot {
            Some(block) if block.minute == minute => {}
            Some(block) if block.minute > minute => return None,
            Some(block) => {
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
        Some(&mut block.steps[(sec % BLOCK_STEPS) as usize])
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
                .is_some_and(|s| key_matches(&s.key, name, tags.clone()))
        })
    }

    fn apply(
        &mut self,
        store: &MetricsStore,
        window: &Window,
        common: &BTreeMap<String, String>,
        dp: &Datapoint,
        hash: u64,
        report: &mut IngestReport,
    ) {
        let values = dp.samples();
        let n = values.len() as u64;
        let sec = dp.timestamp / 1000;
        if sec < window.first {
            report.dropped.too_old += n;
            return;
        }
        if sec > window.last {
            report.dropped.too_far_in_future += n;
            return;
        }
        let tags = merged_tags(common, &dp.tags);
        let slot = match self.find(hash, &dp.name, tags.clone()) {
            Some(slot) => slot,
            None => {
                if !store.reserve_series(dp.kind) {
                    report.dropped.series_limit += n;
                    return;
                }
                self.insert(Series::new(&dp.name, tags, hash, dp.kind))
            }
        };
        let series = self.series[slot as usize].as_mut().expect("live slot");
        if series.kind != dp.kind {
            report.dropped.kind_mismatch += n;
            return;
        }
        let stored = match (&mut series.data, dp.kind) {
            (SeriesData::Scalar(ring), MetricKind::Gauge) => ring.step_mut(sec).map(|step| {
                for &v in values {
                    *step = if step.is_nan() { v } else { step.max(v) };
                }
            }),
            (SeriesData::Scalar(ring), MetricKind::Counter) => ring.step_mut(sec).map(|step| {
                for &v in values {
                    *step = if step.is_nan() { v } else { *step + v };
                }
            }),
            (SeriesData::Distribution(ring), MetricKind::Distribution) => {
                ring.step_mut(sec).map(|step| {
                    for &v in values {
                        step.record(v);
                    }
                })
            }
            _ => unreachable!("a series' data always matches its kind"),
        };
        match stored {
            Some(()) => report.accepted += n,
            None => report.dropped.too_old += n,
        }
    }

    fn insert(&mut self, series: Series) -> u32 {
        let hash = series.hash;
        let name: Box<str> = series.name().into();
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
        if let Some(slots) = self.by_name.get_mut(series.name()) {
            slots.retain(|s| *s != slot);
            if slots.is_empty() {
                self.by_name.remove(series.name());
            }
        }
        self.free.push(slot);
    }

    /// Frees expired blocks and removes series with none left; the count removed,
    /// and how many of them were distributions.
    fn sweep(&mut self, window: &Window) -> (usize, usize) {
        let mut dead = Vec::new();
        let mut distributions = 0;
        for (slot, series) in self.series.iter_mut().enumerate() {
            let Some(series) = series else { continue };
            let live = match &mut series.data {
                SeriesData::Scalar(ring) => ring.expire_before(window.first),
                SeriesData::Distribution(ring) => ring.expire_before(window.first),
            };
            if !live {
                dead.push(slot as u32);
                distributions += usize::from(series.kind == MetricKind::Distribution);
            }
        }
        for &slot in &dead {
            self.remove(slot);
        }
        self.expired += dead.len() as u64;
        (dead.len(), distributions)
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
