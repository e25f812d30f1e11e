//! The surge engine: ride requests (demand) and available drivers (supply) per S2
//! cell over a sliding window, turned into a smoothed, capped multiplier.
//!
//! Guarantees:
//! - **cells**: a position counts in the S2 cell at [`SurgeConfig::level`]
//!   (default 12, about 3–6 km²) that contains it: `CellID::from(LatLng).parent(level)`;
//! - **window**: time (on the injected clock) is cut into buckets of
//!   `bucket` (default 30 s) counted from the engine's creation; the window is
//!   the current bucket and the `window / bucket − 1` before it (default
//!   10 buckets, 4.5–5 min). Demand older than that no longer counts;
//! - **supply counts a driver once**: an available driver is counted in the cell of
//!   its latest ping, however often it pings; moving to another cell moves it; a
//!   driver not heard from for a whole window, or reported gone
//!   ([`Signal::SupplyGone`]: dispatched, on a trip, offline), stops counting;
//! - **the multiplier**: `raw = 1.0` below `min_demand` requests or at a
//!   demand/supply ratio up to `threshold_ratio`, then `1 + slope·(ratio −
//!   threshold)`, **capped** at `cap`; demand with no supply at all is the cap;
//! - **smoothing**: each cell is recomputed once per bucket, at the first touch
//!   (signal or read) of a new bucket, as an EWMA `s ← s + α·(raw − s)` applied
//!   once per bucket boundary crossed; so a burst moves the price over a few
//!   buckets, not at once, and a read repeated within a bucket sees one value.
//!   Riders see `s` clamped to `[1, cap]` and rounded to 0.1;
//! - **bounded memory**: at most `max_cells` cells and `max_drivers` drivers. A new
//!   cell at the limit first evicts every idle cell (no demand in the window, no
//!   supply, multiplier back to 1.0; at most one sweep per bucket), and if none is
//!   idle the signal is dropped and counted ([`SignalReport::dropped`]); likewise a
//!   new driver at the driver limit. Reads never create a cell.
//!
//! Deliberately absent: steps missed while nobody touched a cell are applied at
//! its next touch with the raw value of that moment (not replayed bucket by
//! bucket); no forecasting, no neighbouring-cell diffusion, no per-product
//! multipliers; the window is not persisted (a restarted instance starts flat,
//! which errs towards the rider).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use casebook_kit::clock::SharedClock;
use parking_lot::Mutex;
use s2::cellid::CellID;
use serde::{Deserialize, Serialize};

use crate::index::{DriverId, LatLng};

/// Most buckets a window may have.
pub const MAX_BUCKETS: u64 = 600;
/// Highest cap a configuration may set.
pub const MAX_CAP: f64 = 10.0;
/// Most cells or drivers a configuration may allow.
pub const MAX_TRACKED: usize = 10_000_000;
/// A smoothed multiplier this close to 1.0 shows as 1.0, so its cell may be evicted.
const IDLE_EPSILON: f64 = 0.05;
/// More missed bucket boundaries than this are one full convergence anyway.
const MAX_CATCH_UP_STEPS: u64 = 64;

/// How surge is computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SurgeConfig {
    /// S2 level of a surge cell (0..=30).
    pub level: u8,
    /// Length of the sliding window, a multiple of `bucket` (humantime, `"5m"`).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Length of one bucket and of one recomputation period (`"30s"`, at least
    /// 1 ms).
    #[serde(with = "humantime_serde")]
    pub bucket: Duration,
    /// Demand/supply ratio up to which the multiplier stays 1.0.
    pub threshold_ratio: f64,
    /// How much the multiplier rises per unit of ratio above the threshold.
    pub slope: f64,
    /// The highest multiplier (≥ 1.0).
    pub cap: f64,
    /// Fewest requests in the window before a cell may surge.
    pub min_demand: u32,
    /// EWMA weight of a new recomputation, in (0, 1]; 1.0 means no smoothing.
    pub smoothing: f64,
    /// Most cells tracked at once.
    pub max_cells: usize,
    /// Most drivers counted as supply at once.
    pub max_drivers: usize,
}

impl Default for SurgeConfig {
    fn default() -> Self {
        Self {
            level: 12,
            window: Duration::from_secs(300),
            bucket: Duration::from_secs(30),
            threshold_ratio: 1.0,
            slope: 0.5,
            cap: 3.0,
            min_demand: 1,
            smoothing: 0.5,
            max_cells: 100_000,
            max_drivers: 1_000_000,
        }
    }
}

impl SurgeConfig {
    /// Checks every bound; the error starts with the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.level > 30 {
            return Err(format!("surge.level: must be 0..=30, got {}", self.level));
        }
        if self.bucket < Duration::from_millis(1) {
            return Err("surge.bucket: must be at least 1ms".into());
        }
        if self.window.is_zero()
            || !self
                .window
                .as_nanos()
                .is_multiple_of(self.bucket.as_nanos())
        {
            return Err(format!(
                "surge.window: must be a positive multiple of bucket ({:?}), got {:?}",
                self.bucket, self.window
            ));
        }
        if self.buckets() > MAX_BUCKETS {
            return Err(format!(
                "surge.window: at most {MAX_BUCKETS} buckets, got {}",
                self.buckets()
            ));
        }
        if !(self.threshold_ratio.is_finite() && self.threshold_ratio >= 0.0) {
            return Err(format!(
                "surge.threshold_ratio: must be finite and ≥ 0, got {}",
                self.threshold_ratio
            ));
        }
        if !(self.slope.is_finite() && self.slope > 0.0) {
            return Err(format!(
                "surge.slope: must be finite and > 0, got {}",
                self.slope
            ));
        }
        if !(1.0..=MAX_CAP).contains(&self.cap) {
            return Err(format!(
                "surge.cap: must be in [1, {MAX_CAP}], got {}",
                self.cap
            ));
        }
        if self.min_demand == 0 {
            return Err("surge.min_demand: must be at least 1".into());
        }
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            return Err(format!(
                "surge.smoothing: must be in (0, 1], got {}",
                self.smoothing
            ));
        }
        if !(1..=MAX_TRACKED).contains(&self.max_cells) {
            return Err(format!(
                "surge.max_cells: must be 1..={MAX_TRACKED}, got {}",
                self.max_cells
            ));
        }
        if !(1..=MAX_TRACKED).contains(&self.max_drivers) {
            return Err(format!(
                "surge.max_drivers: must be 1..={MAX_TRACKED}, got {}",
                self.max_drivers
            ));
        }
        Ok(())
    }

    fn buckets(&self) -> u64 {
        u64::try_from(self.window.as_nanos() / self.bucket.as_nanos().max(1)).unwrap_or(u64::MAX)
    }

    /// The multiplier before smoothing, for `demand` requests and `supply` drivers.
    pub fn raw_multiplier(&self, demand: u32, supply: u32) -> f64 {
        if demand < self.min_demand {
            return 1.0;
        }
        if supply == 0 {
            return self.cap;
        }
        let ratio = f64::from(demand) / f64::from(supply);
        if ratio <= self.threshold_ratio {
            return 1.0;
        }
        (1.0 + self.slope * (ratio - self.threshold_ratio)).min(self.cap)
    }

    /// The surge cell of a position.
    pub fn cell_of(&self, at: LatLng) -> CellID {
        CellID::from(s2::latlng::LatLng::from_degrees(at.lat(), at.lon()))
            .parent(u64::from(self.level))
    }
}

/// A multiplier as riders see it: rounded to 0.1.
pub fn displayed(multiplier: f64) -> f64 {
    (multiplier * 10.0).round() / 10.0
}

/// One thing the pricing service hears about.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// A ride request with its pickup here.
    Demand { at: LatLng },
    /// An available driver's ping.
    Supply { driver: DriverId, at: LatLng },
    /// A driver is no longer available (dispatched, on a trip, offline).
    SupplyGone { driver: DriverId },
}

/// What a batch of signals did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalReport {
    /// Signals counted.
    pub applied: u64,
    /// Signals dropped because the cell or driver limit was reached.
    pub dropped: u64,
}

/// One cell's surge, as the service answers `GET /v1/multiplier`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellSurge {
    /// The multiplier riders see: smoothed, clamped to `[1, cap]`, rounded to 0.1.
    pub multiplier: f64,
    /// The S2 cell, as a token (`89c25…`).
    pub cell: String,
    /// Its S2 level.
    pub level: u8,
    /// Ride requests in the window.
    pub demand: u32,
    /// Available drivers counted in the cell.
    pub supply: u32,
    /// The multiplier the window alone gives, before smoothing.
    pub raw: f64,
    /// The smoothed multiplier, unrounded.
    pub smoothed: f64,
}

/// Counts for operators and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SurgeStats {
    /// Cells tracked now.
    pub cells: usize,
    /// Drivers counted as supply now.
    pub drivers: usize,
    /// Signals dropped at a limit since the engine started.
    pub dropped: u64,
    /// Idle cells evicted since the engine started.
    pub evicted: u64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tick: u64,
    count: u32,
}

#[derive(Debug)]
struct Cell {
    /// Demand buckets, bucket `t` at `t % len`.
    demand: Box<[Bucket]>,
    /// Drivers whose latest ping is in this cell.
    supply: u32,
    smoothed: f64,
    /// The bucket the smoothed value was last brought up to.
    computed_tick: u64,
}

impl Cell {
    fn new(buckets: u64, tick: u64) -> Self {
        let empty = Bucket {
            tick: u64::MAX,
            count: 0,
        };
        Self {
            demand: vec![empty; buckets as usize].into_boxed_slice(),
            supply: 0,
            smoothed: 1.0,
            computed_tick: tick,
        }
    }

    fn demand(&self, tick: u64) -> u32 {
        let len = self.demand.len() as u64;
        self.demand
            .iter()
            .filter(|b| b.tick != u64::MAX && b.tick <= tick && tick - b.tick < len)
            .fold(0u32, |sum, b| sum.saturating_add(b.count))
    }

    fn add_demand(&mut self, tick: u64) {
        let len = self.demand.len() as u64;
        let bucket = &mut self.demand[(tick % len) as usize];
        if bucket.tick != tick {
            *bucket = Bucket { tick, count: 0 };
        }
        bucket.count = bucket.count.saturating_add(1);
    }

    /// Applies the recomputations of every bucket boundary crossed since the last.
    fn catch_up(&mut self, config: &SurgeConfig, tick: u64) {
        if tick <= self.computed_tick {
            return;
        }
        let steps = (tick - self.computed_tick).min(MAX_CATCH_UP_STEPS);
        let raw = config.raw_multiplier(self.demand(tick), self.supply);
        // k EWMA steps towards the same target, in closed form.
        let keep = (1.0 - config.smoothing).powi(steps as i32);
        self.smoothed = raw + (self.smoothed - raw) * keep;
        self.computed_tick = tick;
    }

    fn is_idle(&self, tick: u64) -> bool {
        self.supply == 0 && self.demand(tick) == 0 && (self.smoothed - 1.0).abs() < IDLE_EPSILON
    }
}

#[derive(Debug, Clone, Copy)]
struct DriverEntry {
    cell: u64,
    /// The bucket of the driver's latest ping.
    tick: u64,
}

#[derive(Debug, Default)]
struct State {
    cells: HashMap<u64, Cell>,
    drivers: HashMap<DriverId, DriverEntry>,
    /// `(bucket, driver)` for each bucket a driver pinged in, oldest first; an
    /// entry whose bucket is no longer the driver's latest is stale and skipped.
    expiry: VecDeque<(u64, DriverId)>,
    last_sweep_tick: Option<u64>,
    dropped: u64,
    evicted: u64,
}

struct Metrics {
    applied: metrics::Counter,
    dropped: metrics::Counter,
    evicted: metrics::Counter,
    cells: metrics::Gauge,
    drivers: metrics::Gauge,
}

/// The surge engine. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Surge {
    config: SurgeConfig,
    clock: SharedClock,
    origin: Instant,
    bucket: Duration,
    state: Mutex<State>,
    metrics: Metrics,
}

impl std::fmt::Debug for Surge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Surge")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Surge {
    /// An engine on `clock`; its buckets are counted from now.
    pub fn new(config: SurgeConfig, clock: SharedClock) -> Result<Self, String> {
        config.validate()?;
        let origin = clock.now();
        let bucket = config.bucket;
        Ok(Self {
            config,
            clock,
            origin,
            bucket,
            state: Mutex::new(State::default()),
            metrics: Metrics {
                applied: metrics::counter!("casebook_uber_surge_signals_total", "outcome" => "applied"),
                dropped: metrics::counter!("casebook_uber_surge_signals_total", "outcome" => "dropped"),
                evicted: metrics::counter!("casebook_uber_surge_cells_evicted_total"),
                cells: metrics::gauge!("casebook_uber_surge_cells"),
                drivers: metrics::gauge!("casebook_uber_surge_drivers"),
            },
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SurgeConfig {
        &self.config
    }

    /// The clock the engine runs on.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    fn tick(&self) -> u64 {
        let elapsed = self.clock.now().saturating_duration_since(self.origin);
        (elapsed.as_nanos() / self.bucket.as_nanos()) as u64
    }

    /// Applies a batch of signals, in order, all in the same bucket.
    pub fn record(&self, signals: &[Signal]) -> SignalReport {
        let tick = self.tick();
        let mut report = SignalReport::default();
        let mut state = self.state.lock();
        self.expire(&mut state, tick);
        for signal in signals {
            if self.apply(&mut state, tick, *signal) {
                report.applied += 1;
            } else {
                report.dropped += 1;
            }
        }
        state.dropped += report.dropped;
        self.metrics.applied.increment(report.applied);
        self.metrics.dropped.increment(report.dropped);
        self.publish_sizes(&state);
        report
    }

    /// The surge of the cell containing `at`. Never creates a cell: an untracked
    /// cell has no demand and shows 1.0.
    pub fn multiplier(&self, at: LatLng) -> CellSurge {
        let cell = self.config.cell_of(at);
        let tick = self.tick();
        let mut state = self.state.lock();
        self.expire(&mut state, tick);
        let (demand, supply, smoothed) = match state.cells.get_mut(&cell.0) {
            Some(c) => {
                c.catch_up(&self.config, tick);
                (c.demand(tick), c.supply, c.smoothed)
            }
            None => (0, 0, 1.0),
        };
        drop(state);
        CellSurge {
            multiplier: displayed(smoothed.clamp(1.0, self.config.cap)),
            cell: cell.to_token(),
            level: self.config.level,
            demand,
            supply,
            raw: self.config.raw_multiplier(demand, supply),
            smoothed,
        }
    }

    /// Expires silent drivers and evicts idle cells; the service calls it once a
    /// bucket so memory follows the load down even while no cell is added.
    pub fn maintain(&self) {
        let tick = self.tick();
        let mut state = self.state.lock();
        self.expire(&mut state, tick);
        self.sweep(&mut state, tick);
        self.publish_sizes(&state);
    }

    /// Counts, for operators and tests.
    pub fn stats(&self) -> SurgeStats {
        let state = self.state.lock();
        SurgeStats {
            cells: state.cells.len(),
            drivers: state.drivers.len(),
            dropped: state.dropped,
            evicted: state.evicted,
        }
    }

    fn publish_sizes(&self, state: &State) {
        self.metrics.cells.set(state.cells.len() as f64);
        self.metrics.drivers.set(state.drivers.len() as f64);
    }

    /// Drops the supply of drivers whose latest ping left the window.
    fn expire(&self, state: &mut State, tick: u64) {
        let buckets = self.config.buckets();
        while let Some(&(pinged, driver)) = state.expiry.front() {
            if pinged + buckets > tick {
                break;
            }
            state.expiry.pop_front();
            let current = state.drivers.get(&driver).copied();
            if let Some(entry) = current.filter(|e| e.tick == pinged) {
                state.drivers.remove(&driver);
                self.leave(state, entry.cell, tick);
            }
        }
        // Stale entries (drivers who pinged again, or left) wait for their turn at
        // the front; compact if they pile up, so the queue stays O(drivers).
        if state.expiry.len() > 2 * state.drivers.len() + 1024 {
            let drivers = &state.drivers;
            state
                .expiry
                .retain(|(pinged, d)| drivers.get(d).is_some_and(|e| e.tick == *pinged));
        }
    }

    /// A driver stops counting in `cell`.
    fn leave(&self, state: &mut State, cell: u64, tick: u64) {
        // A cell with supply is never idle, so it cannot have been evicted.
        if let Some(c) = state.cells.get_mut(&cell) {
            c.catch_up(&self.config, tick);
            c.supply = c.supply.saturating_sub(1);
        }
    }

    /// The cell for a new signal, brought up to `tick`; `None` when the cell limit
    /// is reached and no idle cell can make room.
    fn cell_mut<'a>(&self, state: &'a mut State, cell: u64, tick: u64) -> Option<&'a mut Cell> {
        if !state.cells.contains_key(&cell) {
            if state.cells.len() >= self.config.max_cells {
                if state.last_sweep_tick == Some(tick) {
                    return None;
                }
                self.sweep(state, tick);
                if state.cells.len() >= self.config.max_cells {
                    return None;
                }
            }
            state
                .cells
                .insert(cell, Cell::new(self.config.buckets(), tick));
        }
        let c = state
            .cells
            .get_mut(&cell)
            .expect("present or just inserted");
        c.catch_up(&self.config, tick);
        Some(c)
    }

    /// Evicts every idle cell (at most once a bucket).
    fn sweep(&self, state: &mut State, tick: u64) {
        if state.last_sweep_tick == Some(tick) {
            return;
        }
        state.last_sweep_tick = Some(tick);
        let before = state.cells.len();
        let config = &self.config;
        state.cells.retain(|_, c| {
            c.catch_up(config, tick);
            !c.is_idle(tick)
        });
        let evicted = (before - state.cells.len()) as u64;
        state.evicted += evicted;
        self.metrics.evicted.increment(evicted);
    }

    fn apply(&self, state: &mut State, tick: u64, signal: Signal) -> bool {
        match signal {
            Signal::Demand { at } => {
                let cell = self.config.cell_of(at).0;
                match self.cell_mut(state, cell, tick) {
                    Some(c) => {
                        c.add_demand(tick);
                        true
                    }
                    None => false,
                }
            }
            Signal::Supply { driver, at } => {
                let cell = self.config.cell_of(at).0;
                let previous = state.drivers.get(&driver).copied();
                if previous.is_none() && state.drivers.len() >= self.config.max_drivers {
                    return false;
                }
                if let Some(entry) = previous.filter(|e| e.cell != cell) {
                    self.leave(state, entry.cell, tick);
                }
                let moved = previous.is_none_or(|e| e.cell != cell);
                if moved {
                    match self.cell_mut(state, cell, tick) {
                        Some(c) => c.supply += 1,
                        None => {
                            // It left its old cell and has no room in the new one.
                            state.drivers.remove(&driver);
                            return false;
                        }
                    }
                }
                if previous.is_none_or(|e| e.tick != tick) {
                    state.expiry.push_back((tick, driver));
                }
                state.drivers.insert(driver, DriverEntry { cell, tick });
                true
            }
            Signal::SupplyGone { driver } => {
                if let Some(entry) = state.drivers.remove(&driver) {
                    self.leave(state, entry.cell, tick);
                }
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use casebook_kit::clock::ManualClock;

    const BUCKET: Duration = Duration::from_secs(30);

    fn at(lat: f64, lon: f64) -> LatLng {
        LatLng::new(lat, lon).unwrap()
    }

    /// Two spots in different level-12 cells of Manhattan.
    fn hot() -> LatLng {
        at(40.7580, -73.9855)
    }
    fn cold() -> LatLng {
        at(40.7061, -74.0087)
    }

    fn engine(config: SurgeConfig) -> (Surge, ManualClock) {
        let clock = ManualClock::new();
        (Surge::new(config, clock.shared()).unwrap(), clock)
    }

    fn demand(n: usize, at: LatLng) -> Vec<Signal> {
        vec![Signal::Demand { at }; n]
    }

    fn supply(drivers: std::ops::Range<u64>, at: LatLng) -> Vec<Signal> {
        drivers
            .map(|d| Signal::Supply {
                driver: DriverId(d),
                at,
            })
            .collect()
    }

    #[test]
    fn cells_are_level_12_and_distinct() {
        let config = SurgeConfig::default();
        let (h, c) = (config.cell_of(hot()), config.cell_of(cold()));
        assert_eq!(h.level(), 12);
        assert_ne!(h, c);
    }

    #[test]
    fn raw_curve_threshold_slope_cap_and_zero_supply() {
        let c = SurgeConfig::default();
        assert_eq!(c.raw_multiplier(0, 0), 1.0, "no demand, no surge");
        assert_eq!(
            c.raw_multiplier(1, 0),
            3.0,
            "demand and no supply is the cap"
        );
        assert_eq!(c.raw_multiplier(5, 5), 1.0, "ratio at the threshold");
        assert_eq!(c.raw_multiplier(3, 5), 1.0, "below the threshold");
        assert_eq!(c.raw_multiplier(20, 10), 1.5, "ratio 2 → 1 + 0.5·1");
        assert_eq!(c.raw_multiplier(40, 10), 2.5);
        assert_eq!(c.raw_multiplier(1000, 1), 3.0, "capped");
        let picky = SurgeConfig {
            min_demand: 5,
            ..SurgeConfig::default()
        };
        assert_eq!(
            picky.raw_multiplier(4, 0),
            1.0,
            "too little demand to surge"
        );
        assert_eq!(picky.raw_multiplier(5, 0), 3.0);
    }

    #[test]
    fn smoothing_moves_half_way_each_bucket_and_rounds_to_a_tenth() {
        let (surge, clock) = engine(SurgeConfig::default());
        surge.record(&demand(10, hot())); // no supply: raw is the cap
        let now = surge.multiplier(hot());
        assert_eq!((now.multiplier, now.raw, now.demand), (1.0, 3.0, 10));
        let mut seen = Vec::new();
        for _ in 0..4 {
            clock.advance(BUCKET);
            seen.push(surge.multiplier(hot()).multiplier);
        }
        // 1 → 2 → 2.5 → 2.75 (shown 2.8) → 2.875 (shown 2.9)
        assert_eq!(seen, vec![2.0, 2.5, 2.8, 2.9]);
        // A read repeated within the bucket sees the same value.
        assert_eq!(surge.multiplier(hot()).multiplier, 2.9);
    }

    #[test]
    fn missed_buckets_are_caught_up_at_the_next_touch() {
        let (surge, clock) = engine(SurgeConfig::default());
        surge.record(&demand(10, hot()));
        clock.advance(BUCKET * 3);
        // Three steps at once: 3 + (1 − 3)·0.5³ = 2.75.
        let view = surge.multiplier(hot());
        assert!((view.smoothed - 2.75).abs() < 1e-12, "{view:?}");
    }

    #[test]
    fn no_smoothing_follows_the_raw_value() {
        let (surge, clock) = engine(SurgeConfig {
            smoothing: 1.0,
            ..SurgeConfig::default()
        });
        surge.record(&demand(20, hot()));
        surge.record(&supply(0..10, hot()));
        clock.advance(BUCKET);
        let view = surge.multiplier(hot());
        assert_eq!((view.multiplier, view.demand, view.supply), (1.5, 20, 10));
    }

    #[test]
    fn cap_holds_for_any_ratio() {
        let (surge, clock) = engine(SurgeConfig {
            smoothing: 1.0,
            cap: 2.0,
            ..SurgeConfig::default()
        });
        surge.record(&demand(5000, hot()));
        surge.record(&supply(0..1, hot()));
        clock.advance(BUCKET);
        assert_eq!(surge.multiplier(hot()).multiplier, 2.0);
    }

    #[test]
    fn demand_leaves_the_window_and_the_price_comes_down() {
        let (surge, clock) = engine(SurgeConfig {
            smoothing: 1.0,
            ..SurgeConfig::default()
        });
        surge.record(&demand(10, hot()));
        clock.advance(BUCKET * 9); // still the 10th bucket of the window
        assert_eq!(surge.multiplier(hot()).demand, 10);
        assert_eq!(surge.multiplier(hot()).multiplier, 3.0);
        clock.advance(BUCKET); // the first bucket has left
        let view = surge.multiplier(hot());
        assert_eq!((view.demand, view.multiplier), (0, 1.0));
    }

    #[test]
    fn a_window_slides_bucket_by_bucket() {
        let (surge, clock) = engine(SurgeConfig::default());
        for _ in 0..12 {
            surge.record(&demand(1, hot()));
            clock.advance(BUCKET);
        }
        // Twelve buckets of one request each; the window holds the last ten (the
        // current, empty one and nine before it).
        assert_eq!(surge.multiplier(hot()).demand, 9);
    }

    #[test]
    fn a_driver_counts_once_however_often_it_pings() {
        let (surge, clock) = engine(SurgeConfig::default());
        for _ in 0..20 {
            surge.record(&supply(7..8, hot()));
            clock.advance(Duration::from_secs(4));
        }
        assert_eq!(surge.multiplier(hot()).supply, 1);
        assert_eq!(surge.stats().drivers, 1);
    }

    #[test]
    fn a_driver_that_moves_counts_only_where_it_is() {
        let (surge, _clock) = engine(SurgeConfig::default());
        surge.record(&supply(1..4, hot()));
        surge.record(&supply(1..2, cold()));
        assert_eq!(surge.multiplier(hot()).supply, 2);
        assert_eq!(surge.multiplier(cold()).supply, 1);
    }

    #[test]
    fn a_silent_driver_expires_after_a_window_and_a_pinging_one_does_not() {
        let (surge, clock) = engine(SurgeConfig::default());
        surge.record(&supply(1..3, hot()));
        for _ in 0..10 {
            clock.advance(BUCKET);
            surge.record(&supply(2..3, hot())); // driver 2 keeps pinging
        }
        let view = surge.multiplier(hot());
        assert_eq!(view.supply, 1, "driver 1 went silent for a window");
        assert_eq!(surge.stats().drivers, 1);
    }

    #[test]
    fn supply_gone_removes_a_driver_at_once() {
        let (surge, _clock) = engine(SurgeConfig::default());
        surge.record(&supply(1..3, hot()));
        let report = surge.record(&[
            Signal::SupplyGone {
                driver: DriverId(1),
            },
            Signal::SupplyGone {
                driver: DriverId(99), // unknown: nothing to do
            },
        ]);
        assert_eq!(report.applied, 2);
        assert_eq!(surge.multiplier(hot()).supply, 1);
    }

    #[test]
    fn supply_brings_the_price_down() {
        let (surge, clock) = engine(SurgeConfig {
            smoothing: 1.0,
            ..SurgeConfig::default()
        });
        surge.record(&demand(10, hot()));
        clock.advance(BUCKET);
        assert_eq!(surge.multiplier(hot()).multiplier, 3.0, "zero supply → cap");
        surge.record(&supply(0..10, hot()));
        clock.advance(BUCKET);
        assert_eq!(surge.multiplier(hot()).multiplier, 1.0, "ratio 1");
    }

    #[test]
    fn untracked_cells_read_flat_and_are_not_created() {
        let (surge, _clock) = engine(SurgeConfig::default());
        let view = surge.multiplier(cold());
        assert_eq!((view.multiplier, view.demand, view.supply), (1.0, 0, 0));
        assert_eq!(surge.stats().cells, 0);
    }

    #[test]
    fn the_cell_limit_drops_new_cells_until_idle_ones_are_evicted() {
        let (surge, clock) = engine(SurgeConfig {
            max_cells: 2,
            smoothing: 1.0,
            ..SurgeConfig::default()
        });
        let third = at(40.80, -73.95);
        assert_eq!(surge.record(&demand(1, hot())).applied, 1);
        assert_eq!(surge.record(&demand(1, cold())).applied, 1);
        let report = surge.record(&demand(1, third));
        assert_eq!((report.applied, report.dropped), (0, 1));
        assert_eq!(surge.stats().cells, 2);
        // A window later both cells are idle (their smoothed values follow raw
        // back to 1.0): the next new cell evicts them.
        clock.advance(BUCKET * 10);
        assert_eq!(surge.record(&demand(1, third)).applied, 1);
        let stats = surge.stats();
        assert_eq!((stats.cells, stats.evicted, stats.dropped), (1, 2, 1));
    }

    #[test]
    fn a_cell_with_supply_is_never_evicted() {
        let (surge, clock) = engine(SurgeConfig {
            max_cells: 1,
            ..SurgeConfig::default()
        });
        surge.record(&supply(1..2, hot()));
        clock.advance(BUCKET * 5);
        surge.record(&supply(1..2, hot())); // still pinging
        clock.advance(BUCKET);
        assert_eq!(surge.record(&demand(1, cold())).dropped, 1);
        assert_eq!(surge.multiplier(hot()).supply, 1);
    }

    #[test]
    fn a_driver_moving_into_a_full_map_is_dropped_everywhere() {
        let (surge, _clock) = engine(SurgeConfig {
            max_cells: 1,
            ..SurgeConfig::default()
        });
        surge.record(&supply(1..2, hot()));
        surge.record(&demand(1, hot()));
        let report = surge.record(&supply(1..2, cold()));
        assert_eq!(report.dropped, 1);
        assert_eq!(surge.multiplier(hot()).supply, 0);
        assert_eq!(surge.stats().drivers, 0);
    }

    #[test]
    fn the_driver_limit_drops_new_drivers_only() {
        let (surge, _clock) = engine(SurgeConfig {
            max_drivers: 2,
            ..SurgeConfig::default()
        });
        let report = surge.record(&supply(1..4, hot()));
        assert_eq!((report.applied, report.dropped), (2, 1));
        // Known drivers still move.
        assert_eq!(surge.record(&supply(1..2, cold())).applied, 1);
        assert_eq!(surge.stats().drivers, 2);
    }

    #[test]
    fn maintain_frees_idle_cells_and_silent_drivers() {
        let (surge, clock) = engine(SurgeConfig::default());
        surge.record(&supply(1..50, hot()));
        surge.record(&demand(3, cold()));
        clock.advance(BUCKET * 10);
        surge.maintain();
        let stats = surge.stats();
        assert_eq!((stats.drivers, stats.cells, stats.evicted), (0, 0, 2));
    }

    #[test]
    fn a_cell_still_showing_surge_is_kept_until_it_has_cooled() {
        let (surge, clock) = engine(SurgeConfig::default());
        surge.record(&demand(10, hot()));
        for _ in 0..10 {
            clock.advance(BUCKET);
            surge.multiplier(hot());
        }
        // The demand has just left the window; the price is on its way down.
        surge.maintain();
        let view = surge.multiplier(hot());
        assert_eq!((view.demand, view.raw, view.multiplier), (0, 1.0, 2.0));
        assert_eq!(surge.stats().cells, 1);
        for _ in 0..5 {
            clock.advance(BUCKET);
            surge.maintain();
        }
        // 1 + 1·0.5⁵ ≈ 1.03 shows as 1.0: idle, evicted.
        assert_eq!(surge.stats().cells, 0);
    }

    #[test]
    fn the_expiry_queue_stays_bounded_under_constant_pinging() {
        let (surge, clock) = engine(SurgeConfig::default());
        for _ in 0..200 {
            surge.record(&supply(0..100, hot()));
            clock.advance(BUCKET);
        }
        let state = surge.state.lock();
        assert!(state.expiry.len() <= 2 * state.drivers.len() + 1024);
        assert_eq!(state.drivers.len(), 100);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Demand(usize),
        Supply(u64, usize),
        Gone(u64),
        Advance(u64),
        Read(usize),
        Maintain,
    }

    fn spots() -> [LatLng; 6] {
        [
            hot(),
            cold(),
            at(40.80, -73.95),
            at(40.65, -73.95),
            at(51.5, -0.12),
            at(-33.87, 151.21),
        ]
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (0..6usize).prop_map(Op::Demand),
            (0..10u64, 0..6usize).prop_map(|(d, s)| Op::Supply(d, s)),
            (0..10u64).prop_map(Op::Gone),
            (0..200u64).prop_map(Op::Advance),
            (0..6usize).prop_map(Op::Read),
            Just(Op::Maintain),
        ]
    }

    proptest::proptest! {
        /// Whatever arrives in whatever order: limits hold, every cell's supply is
        /// exactly the drivers whose latest ping is in it, no counted driver is
        /// older than the window, and every multiplier is in [1, cap].
        #[test]
        fn invariants_hold_under_any_sequence(ops in proptest::collection::vec(op(), 1..300)) {
            let config = SurgeConfig {
                max_cells: 4,
                max_drivers: 6,
                ..SurgeConfig::default()
            };
            let (surge, clock) = engine(config.clone());
            let spots = spots();
            for op in ops {
                match op {
                    Op::Demand(s) => { surge.record(&demand(1, spots[s])); }
                    Op::Supply(d, s) => { surge.record(&supply(d..d + 1, spots[s])); }
                    Op::Gone(d) => { surge.record(&[Signal::SupplyGone { driver: DriverId(d) }]); }
                    Op::Advance(secs) => clock.advance(Duration::from_secs(secs)),
                    Op::Read(s) => {
                        let m = surge.multiplier(spots[s]).multiplier;
                        proptest::prop_assert!((1.0..=config.cap).contains(&m), "{m}");
                    }
                    Op::Maintain => surge.maintain(),
                }
                let tick = surge.tick();
                let state = surge.state.lock();
                proptest::prop_assert!(state.cells.len() <= config.max_cells);
                proptest::prop_assert!(state.drivers.len() <= config.max_drivers);
                for (id, cell) in &state.cells {
                    let here = state.drivers.values().filter(|e| e.cell == *id).count();
                    proptest::prop_assert_eq!(cell.supply as usize, here);
                }
                for entry in state.drivers.values() {
                    proptest::prop_assert!(state.cells.contains_key(&entry.cell));
                    if matches!(op, Op::Advance(_)) {
                        continue; // expiry runs at the next operation
                    }
                    proptest::prop_assert!(entry.tick + config.buckets() > tick);
                }
            }
        }
    }

    #[test]
    fn bad_configurations_name_their_key() {
        let bad = |c: SurgeConfig| c.validate().unwrap_err();
        assert!(
            bad(SurgeConfig {
                window: Duration::from_secs(301),
                ..Default::default()
            })
            .starts_with("surge.window")
        );
        assert!(
            bad(SurgeConfig {
                cap: 0.5,
                ..Default::default()
            })
            .starts_with("surge.cap")
        );
        assert!(
            bad(SurgeConfig {
                smoothing: 0.0,
                ..Default::default()
            })
            .starts_with("surge.smoothing")
        );
        assert!(
            bad(SurgeConfig {
                level: 31,
                ..Default::default()
            })
            .starts_with("surge.level")
        );
        assert!(
            bad(SurgeConfig {
                slope: f64::NAN,
                ..Default::default()
            })
            .starts_with("surge.slope")
        );
        assert!(
            bad(SurgeConfig {
                max_cells: 0,
                ..Default::default()
            })
            .starts_with("surge.max_cells")
        );
    }
}
