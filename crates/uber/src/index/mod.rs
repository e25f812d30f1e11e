//! The live-driver geospatial index: driver state with
//! latest-wins updates, and the available drivers on S2 leaf cells in sharded
//! ordered maps whose shards split when hot and merge back when cold.
//!
//! | module | role |
//! |---|---|
//! | [`types`] | ids, status, validated positions, updates, views, batch reports, typed errors |
//! | [`cells`] | leaf cell ids, a shard's ordered `(cell, driver)` map and how it splits, cap coverings |
//!
//! ## Structure
//!
//! - **Driver table**: [`STRIPES`] stripes by driver id, each a mutex over the
//!   records of its drivers (position, status, the driver's timestamp,
//!   `last_seen` on the injected clock, the leaf cell, whether indexed).
//! - **Cell shards**: the kit's [`ShardMap`] over S2 leaf cell ids (roots: the six
//!   faces), pre-split to `base_level`; each shard a mutex over an ordered map
//!   `(leaf cell, driver) → DriverView`. The layout sits behind one `RwLock`.
//!
//! ## Guarantees
//!
//! - **Latest wins** by the driver's timestamp: an update older than the record
//!   is counted stale and changes nothing; an equal one is a duplicate and
//!   changes nothing (idempotent re-delivery). A batch applies in batch order, as
//!   if its updates came one by one.
//! - **Exactly one entry iff available**: a driver has exactly one cell entry,
//!   in the shard owning its leaf cell, iff its status is `Available`. Moves,
//!   status changes and the staleness sweep edit the entries while holding the
//!   driver's stripe *and* every shard involved, so no query ever sees a driver
//!   in two cells or in none.
//! - **Queries are snapshots**: a query locks every shard its covering touches
//!   (ascending order) before reading any; splits and merges take the layout lock
//!   exclusively. So a query sees each driver exactly once, also during rebalancing.
//! - Lock order, everywhere: sweep cursor → layout (shared or exclusive) →
//!   one stripe → shards in ascending key order. No nested layout locks, so no
//!   deadlock. `filter` callbacks run after every lock is released.
//! - **Staleness**: a query ignores an entry whose `last_seen` is `stale_after`
//!   or more ago (exact); [`DriverIndex::sweep`] turns such drivers `Offline`
//!   and drops their entries, examining at most `budget` records per call.
//! - **Batches**: each stripe is locked once per batch, and each shard at most
//!   once per stripe group (all the group's shards together, ascending).
//! - Bounded: drivers (`max_drivers`), batch length ([`MAX_BATCH`]), `k`
//!   ([`MAX_K`]), radius (`max_radius_m`), covering size, shard count and depth.
//!
//! ## Deliberately absent
//!
//! - Persistence and events: the caller writes accepted updates to the primary
//!   store and the outbox; the index is rebuilt from them.
//! - Lock-free splits: a split or merge pauses the index for its `O(log n)`
//!   `split_off` / small `append` under the exclusive layout lock (and waits for
//!   in-flight batches and queries, which hold the layout lock shared).
//! - A background task: the owner calls [`DriverIndex::sweep`] and
//!   [`DriverIndex::rebalance`] on its own timer.
//! - Deleting drivers: a record stays (offline) once seen, up to `max_drivers`.

pub mod cells;
pub mod types;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use casebook_kit::clock::SharedClock;
use casebook_kit::partition::{
    KeyRange, Rebalance, ShardId, ShardMap, ShardMapConfig, s2_face_ranges,
};
use parking_lot::{Mutex, MutexGuard, RwLock};

use cells::{Cells, covering_ranges, leaf_cell, range_cell, range_level};
pub use types::{
    BatchReport, DriverId, DriverStatus, DriverView, IndexError, LatLng, LocationUpdate,
    RestoreReport, SavedDriver,
};

/// Stripes of the driver table.
pub const STRIPES: usize = 64;
/// Longest batch [`DriverIndex::ingest`] takes (longer: 413).
pub const MAX_BATCH: usize = 100_000;
/// Most drivers one query returns.
pub const MAX_K: usize = 1_000;
/// Deepest base level: 6 · 4^8 ≈ 393k shards.
pub const MAX_BASE_LEVEL: u8 = 8;
/// Deepest a hot shard may split to (a level-24 cell is about 60 cm across).
pub const MAX_SHARD_LEVEL: u8 = 24;
/// The largest configurable [`IndexConfig::max_clock_skew`].
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(86_400);

/// How the index shards, splits, ages drivers and searches.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexConfig {
    /// S2 level of the initial shards; shards never merge above it.
    pub base_level: u8,
    /// S2 level a hot shard may split down to.
    pub max_level: u8,
    /// Split a shard whose load (updates + queries per second, decaying with
    /// `load_half_life`) is above this.
    pub split_above: f64,
    /// Merge four sibling shards each below this (below `split_above / 4`).
    pub merge_below: f64,
    /// Half-life of the load estimate (the window).
    pub load_half_life: Duration,
    /// Time a new shard is left alone before it may split or merge.
    pub cooldown: Duration,
    /// Most shards.
    pub max_shards: usize,
    /// A driver silent this long leaves the available set.
    pub stale_after: Duration,
    /// Most drivers the table holds.
    pub max_drivers: usize,
    /// How far ahead of the injected wall clock a driver's timestamp may be. A
    /// timestamp beyond it is refused on ingest and pulled back on restore:
    /// latest wins by that timestamp, so one far in the future would freeze the
    /// driver (every later ping stale).
    pub max_clock_skew: Duration,
    /// First search radius before widening (capped by the caller's radius).
    pub initial_radius_m: f64,
    /// Largest radius a caller may ask for.
    pub max_radius_m: f64,
    /// Cells in a cap covering (more: tighter covering, more range scans).
    pub covering_cells: usize,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            // Level 6 cells are ~150 km across: a metro area is one to four shards
            // until its load splits it.
            base_level: 6,
            // Level 16 is ~150 m: one busy block.
            max_level: 16,
            split_above: 20_000.0,
            merge_below: 2_000.0,
            load_half_life: Duration::from_secs(10),
            cooldown: Duration::from_secs(30),
            max_shards: 1 << 17,
            stale_after: Duration::from_secs(30),
            max_drivers: 4_000_000,
            max_clock_skew: Duration::from_secs(300),
            initial_radius_m: 500.0,
            max_radius_m: 100_000.0,
            covering_cells: 8,
        }
    }
}

impl IndexConfig {
    /// A driver last heard `age` ago is stale: out of every query, swept
    /// offline, restored offline.
    pub fn is_stale(&self, age: Duration) -> bool {
        age >= self.stale_after
    }

    /// Checks every field; the error names the field at fault.
    pub fn validate(&self) -> Result<(), IndexError> {
        let invalid =
            |field: &'static str, reason: String| Err(IndexError::InvalidConfig { field, reason });
        if self.base_level > MAX_BASE_LEVEL {
            return invalid("base_level", format!("must be at most {MAX_BASE_LEVEL}"));
        }
        if self.max_level < self.base_level || self.max_level > MAX_SHARD_LEVEL {
            return invalid(
                "max_level",
                format!("must be in base_level..={MAX_SHARD_LEVEL}"),
            );
        }
        if self.max_shards < 6 << (2 * u32::from(self.base_level)) {
            return invalid(
                "max_shards",
                "must hold at least the 6 · 4^base_level base shards".into(),
            );
        }
        if self.stale_after.is_zero() {
            return invalid("stale_after", "must be positive".into());
        }
        if self.max_clock_skew > MAX_CLOCK_SKEW {
            return invalid("max_clock_skew", "must be at most 1 day".into());
        }
        if self.max_drivers == 0 || self.max_drivers > 1 << 28 {
            return invalid("max_drivers", "must be in 1..=2^28".into());
        }
        if !(self.max_radius_m.is_finite() && self.max_radius_m > 0.0)
            || self.max_radius_m > 2_000_000.0
        {
            return invalid("max_radius_m", "must be in (0, 2000 km]".into());
        }
        if !(self.initial_radius_m.is_finite() && self.initial_radius_m > 0.0) {
            return invalid("initial_radius_m", "must be finite and positive".into());
        }
        if !(1..=64).contains(&self.covering_cells) {
            return invalid("covering_cells", "must be in 1..=64".into());
        }
        Ok(())
    }

    /// The latest driver timestamp (ms) acceptable when the wall clock reads
    /// `wall_ms`.
    pub fn latest_ts(&self, wall_ms: u64) -> u64 {
        let skew = u64::try_from(self.max_clock_skew.as_millis()).unwrap_or(u64::MAX);
        wall_ms.saturating_add(skew)
    }

    fn shard_map(&self) -> ShardMapConfig {
        ShardMapConfig {
            roots: s2_face_ranges().to_vec(),
            load_half_life: self.load_half_life,
            split_above: self.split_above,
            merge_below: self.merge_below,
            // A face root is level 0, so depth below the root is the S2 level.
            max_depth: self.max_level,
            cooldown: self.cooldown,
            max_shards: self.max_shards,
        }
    }
}

/// One shard as [`DriverIndex::shards`] reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardStats {
    /// The shard (its range is an S2 cell's leaf range).
    pub id: ShardId,
    /// That S2 cell.
    pub cell: s2::cellid::CellID,
    /// Its S2 level.
    pub level: u8,
    /// Load estimate, units per second.
    pub load_per_sec: f64,
    /// Available drivers in it.
    pub drivers: usize,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    view: DriverView,
    cell: u64,
    indexed: bool,
}

/// Hashes a driver id with one multiply (Fibonacci hashing). Driver ids are
/// not attacker-chosen keys of a public map here (the HTTP layer authenticates
/// drivers), and SipHash was a tenth of ingest time.
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        // The high bits feed hashbrown's control bytes, the low bits its buckets:
        // fold them so both are mixed.
        let h = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 32);
    }
}

#[derive(Debug, Default)]
struct Stripe {
    slots: HashMap<DriverId, usize, BuildHasherDefault<IdHasher>>,
    records: Vec<Record>,
}

/// An edit of the cell shards.
#[derive(Debug, Clone, Copy)]
enum CellOp {
    Put(u64, DriverView),
    Remove(u64, DriverId),
}

impl CellOp {
    fn cell(&self) -> u64 {
        match self {
            Self::Put(cell, _) | Self::Remove(cell, _) => *cell,
        }
    }
}

type Layout = ShardMap<Mutex<Cells>>;

/// A validated update: (stripe, driver, index in the batch, position, leaf cell).
type Valid = (usize, DriverId, usize, LatLng, u64);

/// The live-driver index; see the module notes.
#[derive(Debug)]
pub struct DriverIndex {
    config: IndexConfig,
    clock: SharedClock,
    layout: RwLock<Layout>,
    stripes: Box<[Mutex<Stripe>]>,
    drivers: AtomicUsize,
    /// Batches ingested: picks each batch's first stripe.
    batches: AtomicUsize,
    /// Where the next sweep resumes: (stripe, record position).
    sweep_cursor: Mutex<(usize, usize)>,
}

fn stripe_of(id: DriverId) -> usize {
    // Fibonacci hashing: sequential ids spread over every stripe.
    (id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - STRIPES.trailing_zeros())) as usize
}

/// Applies one update to a record (the latest-wins rule).
fn apply_update(
    rec: &mut Record,
    u: &LocationUpdate,
    at: LatLng,
    cell: u64,
    now: Instant,
) -> Outcome {
    if u.ts < rec.view.ts {
        return Outcome::Stale;
    }
    if u.ts == rec.view.ts {
        return Outcome::Duplicate;
    }
    rec.view.position = at;
    rec.view.ts = u.ts;
    rec.view.last_seen = now;
    rec.cell = cell;
    // A busy driver's app still says "available": the server's status stands.
    if !(rec.view.status.is_server_owned() && u.status == DriverStatus::Available) {
        rec.view.status = u.status;
    }
    rec.indexed = rec.view.status == DriverStatus::Available;
    Outcome::Accepted
}

enum Outcome {
    Accepted,
    Stale,
    Duplicate,
}

/// The cell edits that take the index from `before` (indexed?, cell) to `rec`.
fn diff(before: Option<(bool, u64)>, rec: &Record, ops: &mut Vec<CellOp>) {
    if let Some((true, old)) = before
        && (!rec.indexed || old != rec.cell)
    {
        ops.push(CellOp::Remove(old, rec.view.id));
    }
    if rec.indexed {
        ops.push(CellOp::Put(rec.cell, rec.view));
    }
}

impl DriverIndex {
    /// An empty index, its shards pre-split to `config.base_level`.
    pub fn new(config: IndexConfig, clock: SharedClock) -> Result<Self, IndexError> {
        config.validate()?;
        let mut map: Layout = ShardMap::new(config.shard_map(), clock.clone())?;
        for _ in 0..config.base_level {
            for shard in map.shards() {
                map.split(shard.id)?;
            }
        }
        Ok(Self {
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            layout: RwLock::new(map),
            drivers: AtomicUsize::new(0),
            batches: AtomicUsize::new(0),
            sweep_cursor: Mutex::new((0, 0)),
            config,
            clock,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &IndexConfig {
        &self.config
    }

    /// Applies one update; see [`ingest`](Self::ingest).
    pub fn update(&self, update: LocationUpdate) -> Result<BatchReport, IndexError> {
        self.ingest(std::slice::from_ref(&update))
    }

    /// Applies a batch of updates, in batch order per driver (latest wins).
    /// Invalid updates are reported with their index and skip nothing else; a
    /// batch longer than [`MAX_BATCH`] is refused whole.
    pub fn ingest(&self, batch: &[LocationUpdate]) -> Result<BatchReport, IndexError> {
        if batch.len() > MAX_BATCH {
            return Err(IndexError::BatchTooLarge {
                len: batch.len(),
                max: MAX_BATCH,
            });
        }
        let mut report = BatchReport::default();
        // Validation and the cell id (the trigonometry) happen before any lock.
        let mut valid: Vec<Valid> = Vec::with_capacity(batch.len());
        let latest_ts = self.config.latest_ts(self.clock.wall_millis());
        for (i, u) in batch.iter().enumerate() {
            let checked = LatLng::new(u.lat, u.lon).and_then(|at| {
                if u.status.is_server_owned() {
                    Err(IndexError::ServerOwnedStatus { status: u.status })
                } else if u.ts > latest_ts {
                    Err(IndexError::FutureTimestamp {
                        ts: u.ts,
                        latest: latest_ts,
                    })
                } else {
                    Ok(at)
                }
            });
            match checked {
                Ok(at) => valid.push((stripe_of(u.driver), u.driver, i, at, leaf_cell(at))),
                Err(e) => report.invalid.push((i, e)),
            }
        }
        valid.sort_unstable_by_key(|&(stripe, driver, i, _, _)| (stripe, driver, i));

        let now = self.clock.now();
        let map = self.layout.read();
        let mut ops = Vec::new();
        // Batches start at rotating stripes: concurrent batches then rarely queue
        // on the same stripe in lockstep. Any order is deadlock-free, since a
        // batch holds one stripe at a time.
        let mut groups: Vec<&[Valid]> = valid.chunk_by(|a, b| a.0 == b.0).collect();
        let start = self.batches.fetch_add(1, Ordering::Relaxed) % STRIPES;
        let first = groups.partition_point(|g| g[0].0 < start);
        groups.rotate_left(first);
        for group in groups {
            let mut stripe = self.stripes[group[0].0].lock();
            for run in group.chunk_by(|a, b| a.1 == b.1) {
                let driver = run[0].1;
                let (slot, before, rest) =
                    match stripe.slots.get(&driver) {
                        Some(&slot) => {
                            let rec = &stripe.records[slot];
                            (slot, Some((rec.indexed, rec.cell)), run)
                        }
                        None => {
                            let max = self.config.max_drivers;
                            if self.drivers.fetch_add(1, Ordering::Relaxed) >= max {
                                self.drivers.fetch_sub(1, Ordering::Relaxed);
                                report.invalid.extend(run.iter().map(|&(_, _, i, _, _)| {
                                    (i, IndexError::TooManyDrivers { max })
                                }));
                                continue;
                            }
                            // A new driver's first update is accepted whatever its
                            // timestamp; the rest of the run follows the rule.
                            let (_, _, i, at, cell) = run[0];
                            let status = batch[i].status;
                            let slot = stripe.records.len();
                            stripe.records.push(Record {
                                view: DriverView {
                                    id: driver,
                                    position: at,
                                    status,
                                    ts: batch[i].ts,
                                    last_seen: now,
                                },
                                cell,
                                indexed: status == DriverStatus::Available,
                            });
                            stripe.slots.insert(driver, slot);
                            report.accepted += 1;
                            (slot, None, &run[1..])
                        }
                    };
                let mut changed = before.is_none();
                let rec = &mut stripe.records[slot];
                for &(_, _, i, at, cell) in rest {
                    match apply_update(rec, &batch[i], at, cell, now) {
                        Outcome::Accepted => {
                            report.accepted += 1;
                            changed = true;
                        }
                        Outcome::Stale => report.stale += 1,
                        Outcome::Duplicate => report.duplicate += 1,
                    }
                }
                if changed {
                    diff(before, rec, &mut ops);
                }
            }
            // The entries change while the stripe is held, so no other update of
            // these drivers can interleave with this one's edits.
            Self::apply_ops(&map, &mut ops, true);
            drop(stripe);
        }
        // Capacity refusals were found stripe by stripe: report in batch order.
        report.invalid.sort_by_key(|(i, _)| *i);
        Ok(report)
    }

    /// Applies `ops` holding every shard they touch at once (ascending), then
    /// clears them. `count_load`: each op is one unit of load on its shard.
    fn apply_ops(map: &Layout, ops: &mut Vec<CellOp>, count_load: bool) {
        if ops.is_empty() {
            return;
        }
        let mut keyed: Vec<(ShardId, CellOp)> = ops
            .drain(..)
            .map(|op| {
                let shard = map
                    .shard_for(op.cell())
                    .expect("a leaf cell id lies in one of the six face roots");
                (shard, op)
            })
            .collect();
        keyed.sort_unstable_by_key(|(shard, _)| *shard);
        let mut guards: Vec<(ShardId, MutexGuard<'_, Cells>, usize)> = Vec::new();
        for (shard, _) in &keyed {
            if guards.last().is_none_or(|(last, _, _)| last != shard) {
                let payload = map
                    .payload(*shard)
                    .expect("shard_for names a current shard");
                guards.push((*shard, payload.lock(), 0));
            }
        }
        let mut g = 0;
        for (shard, op) in keyed {
            while guards[g].0 != shard {
                g += 1;
            }
            let (_, cells, count) = &mut guards[g];
            *count += 1;
            match op {
                CellOp::Put(cell, view) => cells.put(cell, view),
                CellOp::Remove(cell, driver) => {
                    cells.remove(cell, driver);
                }
            }
        }
        if count_load {
            for (shard, _, count) in &guards {
                let _ = map.record_load(shard.range().first(), *count as f64);
            }
        }
    }

    /// The drivers' timestamps (`None`: unknown), aligned with `drivers`: one
    /// lock per stripe for the lot, where a `get` each would lock once a driver.
    pub fn timestamps(&self, drivers: &[DriverId]) -> Vec<Option<u64>> {
        let mut order: Vec<(usize, usize)> = drivers
            .iter()
            .enumerate()
            .map(|(i, &d)| (stripe_of(d), i))
            .collect();
        order.sort_unstable();
        let mut out = vec![None; drivers.len()];
        for group in order.chunk_by(|a, b| a.0 == b.0) {
            let stripe = self.stripes[group[0].0].lock();
            for &(_, i) in group {
                out[i] = stripe
                    .slots
                    .get(&drivers[i])
                    .map(|&slot| stripe.records[slot].view.ts);
            }
        }
        out
    }

    /// A driver's current state.
    pub fn get(&self, driver: DriverId) -> Option<DriverView> {
        let stripe = self.stripes[stripe_of(driver)].lock();
        stripe.slots.get(&driver).map(|&s| stripe.records[s].view)
    }

    /// The driver if it is in the index now: available and fresh (what a query
    /// would find).
    pub fn available(&self, driver: DriverId) -> Option<DriverView> {
        let now = self.clock.now();
        let stripe = self.stripes[stripe_of(driver)].lock();
        let rec = &stripe.records[*stripe.slots.get(&driver)?];
        self.findable(rec, now).then_some(rec.view)
    }

    /// Whether a query at `now` would find the driver: indexed and not stale.
    fn findable(&self, rec: &Record, now: Instant) -> bool {
        rec.indexed
            && !self
                .config
                .is_stale(now.saturating_duration_since(rec.view.last_seen))
    }

    /// How many drivers are available and fresh: a walk of every record (for
    /// the RESP port's ZCARD; not a hot path).
    pub fn available_count(&self) -> usize {
        let now = self.clock.now();
        self.stripes
            .iter()
            .map(|stripe| {
                let stripe = stripe.lock();
                stripe
                    .records
                    .iter()
                    .filter(|r| self.findable(r, now))
                    .count()
            })
            .sum()
    }

    /// Every fresh available driver within `radius_m` of `at`, any order, from
    /// one snapshot (the cap covering, then the exact distance). Unbounded radius
    /// and count, unlike [`nearest`](Self::nearest): the RESP port applies
    /// Redis's own search to these candidates.
    pub fn available_within(&self, at: LatLng, radius_m: f64) -> Vec<DriverView> {
        self.within(at, radius_m)
            .into_iter()
            .map(|(view, _)| view)
            .collect()
    }

    /// Sets `driver`'s status to `to` if it is `from` now (compare-and-set), and
    /// adds or removes its index entry accordingly; the matcher's atomic claim is
    /// `transition(d, Available, Dispatched)`.
    pub fn transition(
        &self,
        driver: DriverId,
        from: DriverStatus,
        to: DriverStatus,
    ) -> Result<DriverView, IndexError> {
        let map = self.layout.read();
        let mut stripe = self.stripes[stripe_of(driver)].lock();
        let slot = *stripe
            .slots
            .get(&driver)
            .ok_or(IndexError::UnknownDriver { driver })?;
        let rec = &mut stripe.records[slot];
        if rec.view.status != from {
            return Err(IndexError::WrongStatus {
                driver,
                expected: from,
                actual: rec.view.status,
            });
        }
        let before = Some((rec.indexed, rec.cell));
        rec.view.status = to;
        rec.indexed = to == DriverStatus::Available;
        let view = rec.view;
        let mut ops = Vec::new();
        diff(before, rec, &mut ops);
        Self::apply_ops(&map, &mut ops, false);
        Ok(view)
    }

    /// Turns `Available` drivers silent for `stale_after` or longer `Offline` and
    /// drops their entries, examining at most `budget` records (resuming where
    /// the last sweep stopped); returns how many it turned offline.
    pub fn sweep(&self, budget: usize) -> usize {
        let mut cursor = self.sweep_cursor.lock();
        let now = self.clock.now();
        let map = self.layout.read();
        let (mut s, mut pos) = *cursor;
        let (mut examined, mut removed, mut stripes_passed) = (0, 0, 0);
        let mut ops = Vec::new();
        while examined < budget && stripes_passed < STRIPES {
            let mut stripe = self.stripes[s].lock();
            while pos < stripe.records.len() && examined < budget {
                examined += 1;
                let rec = &mut stripe.records[pos];
                pos += 1;
                if rec.indexed
                    && self
                        .config
                        .is_stale(now.saturating_duration_since(rec.view.last_seen))
                {
                    rec.indexed = false;
                    rec.view.status = DriverStatus::Offline;
                    ops.push(CellOp::Remove(rec.cell, rec.view.id));
                    removed += 1;
                }
            }
            let finished = pos >= stripe.records.len();
            Self::apply_ops(&map, &mut ops, false);
            drop(stripe);
            if finished {
                s = (s + 1) % STRIPES;
                pos = 0;
                stripes_passed += 1;
            }
        }
        *cursor = (s, pos);
        removed
    }

    /// The `k` nearest available, fresh drivers within `radius_m` of `at` that
    /// pass `filter`, nearest first (ties by id), with their distances in
    /// metres. Invalid arguments give an empty answer; [`try_nearest`] says why.
    ///
    /// [`try_nearest`]: Self::try_nearest
    pub fn nearest(
        &self,
        at: LatLng,
        radius_m: f64,
        k: usize,
        filter: impl Fn(&DriverView) -> bool,
    ) -> Vec<(DriverId, f64)> {
        self.try_nearest(at, radius_m, k, filter)
            .unwrap_or_default()
    }

    /// [`nearest`](Self::nearest) with its argument errors. The search starts at
    /// `initial_radius_m` and doubles until it has `k` drivers or reaches
    /// `radius_m`: drivers within the current radius are exactly the nearest ones,
    /// so stopping early never changes the answer.
    pub fn try_nearest(
        &self,
        at: LatLng,
        radius_m: f64,
        k: usize,
        filter: impl Fn(&DriverView) -> bool,
    ) -> Result<Vec<(DriverId, f64)>, IndexError> {
        let max_m = self.config.max_radius_m;
        if !(radius_m.is_finite() && radius_m > 0.0 && radius_m <= max_m) {
            return Err(IndexError::InvalidRadius { radius_m, max_m });
        }
        if k == 0 || k > MAX_K {
            return Err(IndexError::InvalidK { k, max: MAX_K });
        }
        let mut radius = self.config.initial_radius_m.min(radius_m);
        loop {
            let mut hits: Vec<(DriverId, f64)> = self
                .within(at, radius)
                .into_iter()
                .filter(|(view, _)| filter(view))
                .map(|(view, d)| (view.id, d))
                .collect();
            if hits.len() >= k || radius >= radius_m {
                hits.sort_unstable_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
                hits.truncate(k);
                return Ok(hits);
            }
            radius = (radius * 2.0).min(radius_m);
        }
    }

    /// Every fresh available driver within `radius_m` of `at` with its distance,
    /// read as one snapshot of the shards the covering touches.
    fn within(&self, at: LatLng, radius_m: f64) -> Vec<(DriverView, f64)> {
        let ranges = covering_ranges(at, radius_m, self.config.covering_cells);
        let now = self.clock.now();
        let map = self.layout.read();
        let mut shards: Vec<(ShardId, &Mutex<Cells>)> = ranges
            .iter()
            .flat_map(|&(lo, hi)| {
                let range = KeyRange::new(lo, hi).expect("covering ranges are ordered");
                map.overlapping(range)
            })
            .collect();
        shards.sort_unstable_by_key(|(id, _)| *id);
        shards.dedup_by_key(|(id, _)| *id);
        let guards: Vec<(ShardId, MutexGuard<'_, Cells>)> = shards
            .iter()
            .map(|(id, cells)| (*id, cells.lock()))
            .collect();
        let mut out = Vec::new();
        for (id, cells) in &guards {
            let _ = map.record_load(id.range().first(), 1.0);
            for &(lo, hi) in &ranges {
                if hi < id.range().first() || lo > id.range().last() {
                    continue;
                }
                for (_, view) in cells.range(lo, hi) {
                    if self
                        .config
                        .is_stale(now.saturating_duration_since(view.last_seen))
                    {
                        continue;
                    }
                    let d = view.position.distance_m(&at);
                    if d <= radius_m {
                        out.push((*view, d));
                    }
                }
            }
        }
        out
    }

    /// Splits the hot shards and merges the cold siblings the load calls for
    /// (never merging above `base_level`); returns what was done.
    pub fn rebalance(&self) -> Vec<Rebalance> {
        let base = self.config.base_level;
        let keep = |action: &Rebalance| match action {
            Rebalance::Split(_) => true,
            Rebalance::Merge(parent) => range_level(parent.range()) >= base,
        };
        // Plan under the shared lock, so a quiet index never blocks its users.
        let plan: Vec<Rebalance> = self.layout.read().plan().into_iter().filter(keep).collect();
        if plan.is_empty() {
            return plan;
        }
        let mut map = self.layout.write();
        let (merges, splits): (Vec<_>, Vec<_>) = plan
            .into_iter()
            .partition(|a| matches!(a, Rebalance::Merge(_)));
        let mut done = Vec::new();
        for action in merges.into_iter().chain(splits) {
            let ok = match action {
                Rebalance::Split(id) => map.split(id).is_ok(),
                Rebalance::Merge(parent) => map.merge(parent).is_ok(),
            };
            if ok {
                done.push(action);
            }
        }
        done
    }

    /// Splits shard `id` into its four children now, whatever its load.
    pub fn split(&self, id: ShardId) -> Result<[ShardId; 4], IndexError> {
        Ok(self.layout.write().split(id)?)
    }

    /// Merges the four children of `parent` back into it now; refused above
    /// `base_level`.
    pub fn merge(&self, parent: ShardId) -> Result<ShardId, IndexError> {
        if range_level(parent.range()) < self.config.base_level {
            return Err(IndexError::Layout(
                casebook_kit::partition::PartitionError::NotMergeable {
                    parent,
                    reason: format!("it is above base level {}", self.config.base_level),
                },
            ));
        }
        Ok(self.layout.write().merge(parent)?)
    }

    /// The shard owning position `at`.
    pub fn shard_of(&self, at: LatLng) -> ShardId {
        self.layout
            .read()
            .shard_for(leaf_cell(at))
            .expect("a leaf cell id lies in one of the six face roots")
    }

    /// Every shard with its level, load and driver count, in key order.
    pub fn shards(&self) -> Vec<ShardStats> {
        let map = self.layout.read();
        map.shards()
            .into_iter()
            .map(|s| ShardStats {
                id: s.id,
                cell: range_cell(s.id.range()),
                level: range_level(s.id.range()),
                load_per_sec: s.load_per_sec,
                drivers: map.payload(s.id).map_or(0, |c| c.lock().len()),
            })
            .collect()
    }

    /// Every driver's state (any status), with the age of its last update, one
    /// stripe at a time: each driver's own state is consistent, the whole is not
    /// a point-in-time cut (the primary store's replay covers the difference).
    pub fn export(&self) -> Vec<SavedDriver> {
        let now = self.clock.now();
        let mut saved = Vec::with_capacity(self.driver_count());
        for stripe in self.stripes.iter() {
            let stripe = stripe.lock();
            saved.extend(stripe.records.iter().map(|rec| SavedDriver {
                id: rec.view.id,
                lat: rec.view.position.lat(),
                lon: rec.view.position.lon(),
                ts: rec.view.ts,
                status: rec.view.status,
                age: now.saturating_duration_since(rec.view.last_seen),
            }));
        }
        saved
    }

    /// Applies saved driver states, latest wins by the driver's timestamp (a
    /// state not newer than the driver's current one changes nothing), keeping
    /// their statuses — the server-owned ones included — and their ages: a
    /// driver last heard `age` ago is as stale as it was. Used to rebuild the
    /// index at start from its snapshot and the primary store.
    pub fn restore(&self, saved: &[SavedDriver]) -> RestoreReport {
        let mut report = RestoreReport::default();
        let now = self.clock.now();
        let wall_ms = self.clock.wall_millis();
        let latest_ts = self.config.latest_ts(wall_ms);
        let mut valid: Vec<(usize, &SavedDriver, u64, DriverStatus, LatLng, u64, Instant)> =
            Vec::new();
        for s in saved {
            // An available driver silent for `stale_after` is restored offline,
            // as the sweep would have left it (its age may also lie before the
            // clock's origin, where an `Instant` cannot go).
            let stale = self.config.is_stale(s.age);
            let status = if stale && s.status == DriverStatus::Available {
                DriverStatus::Offline
            } else {
                s.status
            };
            let last_seen = now.checked_sub(s.age).unwrap_or(now);
            // A state from beyond the skew (stored before the rule, or by a
            // clock that jumped back) is kept, but as if written now: the
            // driver's next real ping wins instead of being stale forever.
            let ts = if s.ts > latest_ts {
                report.clamped += 1;
                wall_ms
            } else {
                s.ts
            };
            match LatLng::new(s.lat, s.lon) {
                Ok(at) => {
                    valid.push((stripe_of(s.id), s, ts, status, at, leaf_cell(at), last_seen))
                }
                Err(_) => report.refused += 1,
            }
        }
        valid.sort_by_key(|v| v.0);
        let map = self.layout.read();
        let mut ops = Vec::new();
        for group in valid.chunk_by(|a, b| a.0 == b.0) {
            let mut stripe = self.stripes[group[0].0].lock();
            for &(_, s, ts, status, at, cell, last_seen) in group {
                let view = DriverView {
                    id: s.id,
                    position: at,
                    status,
                    ts,
                    last_seen,
                };
                let fresh = Record {
                    view,
                    cell,
                    indexed: status == DriverStatus::Available,
                };
                let before = match stripe.slots.get(&s.id) {
                    Some(&slot) => {
                        let rec = &mut stripe.records[slot];
                        if rec.view.ts >= ts {
                            report.older += 1;
                            continue;
                        }
                        let before = (rec.indexed, rec.cell);
                        *rec = fresh;
                        Some(before)
                    }
                    None => {
                        let max = self.config.max_drivers;
                        if self.drivers.fetch_add(1, Ordering::Relaxed) >= max {
                            self.drivers.fetch_sub(1, Ordering::Relaxed);
                            report.refused += 1;
                            continue;
                        }
                        let slot = stripe.records.len();
                        stripe.records.push(fresh);
                        stripe.slots.insert(s.id, slot);
                        None
                    }
                };
                diff(before, &fresh, &mut ops);
                report.restored += 1;
            }
            Self::apply_ops(&map, &mut ops, false);
        }
        report
    }

    /// The number of shards.
    pub fn shard_count(&self) -> usize {
        self.layout.read().shard_count()
    }

    /// Drivers the table holds (any status).
    pub fn driver_count(&self) -> usize {
        self.drivers.load(Ordering::Relaxed)
    }

    /// Checks, with everything locked, that every indexed driver has exactly one
    /// entry, in the shard owning its cell, and nothing else has one; returns the
    /// number of indexed drivers. For tests and debug checks.
    pub fn audit(&self) -> Result<usize, String> {
        let map = self.layout.write();
        map.assert_invariants();
        let mut seen = HashSet::new();
        for (id, cells) in map.payloads() {
            for (cell, view) in cells.lock().iter() {
                if !id.range().contains(cell) {
                    return Err(format!("{} at cell {cell:#x} stored in {id}", view.id));
                }
                if !seen.insert(view.id) {
                    return Err(format!("{} has two entries", view.id));
                }
            }
        }
        let mut indexed = 0;
        for stripe in self.stripes.iter() {
            let stripe = stripe.lock();
            for rec in &stripe.records {
                let id = rec.view.id;
                if rec.indexed != (rec.view.status == DriverStatus::Available) {
                    return Err(format!(
                        "{id} indexed = {} but {:?}",
                        rec.indexed, rec.view.status
                    ));
                }
                if !rec.indexed {
                    if seen.contains(&id) {
                        return Err(format!("{id} is not indexed but has an entry"));
                    }
                    continue;
                }
                indexed += 1;
                let shard = map.shard_for(rec.cell).map_err(|e| e.to_string())?;
                let cells = map.payload(shard).expect("current shard");
                if !cells.lock().contains(rec.cell, id) {
                    return Err(format!("{id} is indexed but has no entry at its cell"));
                }
            }
        }
        if indexed != seen.len() {
            return Err(format!("{indexed} indexed drivers, {} entries", seen.len()));
        }
        Ok(indexed)
    }
}

/// The matcher asks the live index for candidates: available drivers only (the index
/// holds no other), nearest first, exact distances. The matcher's claim table stays
/// the single owner of who is claimed; a claim moves the driver to dispatched here
/// (out of every later search: no scanning past claimed drivers in a busy
/// hotspot) and a release without a trip in progress moves it back.
impl crate::matching::NearbyDrivers for DriverIndex {
    fn nearest(
        &self,
        at: LatLng,
        radius_m: f64,
        k: usize,
        filter: &dyn Fn(DriverId) -> bool,
    ) -> Vec<(DriverId, f64)> {
        DriverIndex::nearest(self, at, radius_m, k, |view| filter(view.id))
    }

    fn claimed(&self, driver: DriverId) {
        // Offline or gone meanwhile: nothing to hide.
        let _ = self.transition(driver, DriverStatus::Available, DriverStatus::Dispatched);
    }

    fn released(&self, driver: DriverId) {
        // On a trip (finished rides release before the API frees the driver) or
        // already moved: the ride flow owns it.
        let _ = self.transition(driver, DriverStatus::Dispatched, DriverStatus::Available);
    }
}
