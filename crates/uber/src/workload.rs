//! The Uber workload (issue 6, item 9): drivers moving along routes with 4-second
//! pings, riders from Zipf hotspots, an airport and a stadium burst, run against the
//! HTTP API ([`crate::api`]) — the engine behind `casebook load uber`.
//!
//! # Role
//! Two halves. The **generators** are pure and seeded ([`Fleet`], [`RideGen`],
//! [`Zipf`], [`Grid`]): given a seed and an elapsed time they say where a driver is
//! and where the next ride starts, so their properties are tested without a server.
//! The **runner** ([`run`]) drives a live API: every driver pings once every
//! `ping_every` (the fleet spread evenly over the period, batched into
//! `POST /v1/locations`), ride requests go open loop at a constant rate through
//! [`casebook_kit::loadgen`] (plus a second open-loop plan for the stadium burst),
//! and each offered ride is accepted on the driver's behalf and its trip driven
//! through arrived → start → complete → pay after short delays.
//!
//! # Guarantees
//! - **Request → match latency counts from the intended send time** (the kit's
//!   loadgen: open loop, no coordinated omission): a greedy ride is matched when
//!   `POST /v1/rides` answers `offered`; a batched one when polling
//!   `GET /v1/rides/{id}` first shows `offered` (polled every `poll_every`, at most
//!   `match_timeout`).
//! - **Hotspots**: the city box is a grid of ~1 km cells; pickups of ordinary rides
//!   are Zipf–Mandelbrot over the cells (`p(k) ∝ 1/(k+q)^s`, ranks shuffled over the
//!   grid by the seed). The defaults (20×20 cells, s = 1.3, q = 4) give the top cell
//!   about 8 % and the top tenth of cells about two thirds; a steady `airport_share`
//!   goes to the airport; the burst's rides all start at the stadium.
//! - **Bounded**: drivers ≤ [`MAX_DRIVERS`], rides in flight ≤ the loadgen's
//!   `max_in_flight`, ping batches in flight ≤ [`PING_CONCURRENCY`], trip tasks
//!   waited for at most `drain_timeout` after the last request.
//!
//! # Deliberately absent
//! - A dispatched driver does not drive to the pickup: it keeps its route (its
//!   pings still say `available`; the server keeps the status it owns).
//! - Ping timestamps are the driver's wall clock in ms; no clock skew is simulated.
//! - Real trip data (`--trips-csv`, the Chicago taxi sample fetched by
//!   `benches/uber/fetch-chicago.sh`) replays pickups and dropoffs only, in file
//!   order; trip start times are ignored (the rate is the run's).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use casebook_kit::clock::SharedClock;
use casebook_kit::http_client::{HttpClient, HttpError};
use casebook_kit::loadgen::{self, ClassReport, LoadPlan, Progress, Verdict};
use http::{Method, StatusCode};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Value, json};

use crate::matching::{Mode, Point};

/// The most drivers one run simulates.
pub const MAX_DRIVERS: usize = 1_000_000;
/// Ping batch requests in flight at most.
pub const PING_CONCURRENCY: usize = 64;
/// Mean Earth radius for route lengths, metres.
const EARTH_M: f64 = 6_371_008.8;

/// A bad workload configuration; names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkloadError {
    #[error("invalid workload: {field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error(transparent)]
    Load(#[from] loadgen::LoadError),
    #[error("driver warm-up failed: {0}")]
    WarmUp(String),
}

fn bad(field: &'static str, reason: impl Into<String>) -> WorkloadError {
    WorkloadError::Config {
        field,
        reason: reason.into(),
    }
}

// ------------------------------------------------------------------ randomness

/// SplitMix64: small, seeded, good enough for a workload (no crate needed).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
}

// ------------------------------------------------------------------ geometry

/// A city's bounding box, degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CityBox {
    pub south: f64,
    pub north: f64,
    pub west: f64,
    pub east: f64,
}

impl CityBox {
    /// About 20 × 20 km around downtown San Francisco (the API's default city).
    pub fn sf() -> Self {
        Self {
            south: 37.685,
            north: 37.865,
            west: -122.534,
            east: -122.306,
        }
    }
    pub fn contains(&self, p: Point) -> bool {
        (self.south..=self.north).contains(&p.lat) && (self.west..=self.east).contains(&p.lng)
    }
    fn validate(&self) -> Result<(), WorkloadError> {
        let ok = [self.south, self.north, self.west, self.east]
            .iter()
            .all(|v| v.is_finite())
            && -90.0 <= self.south
            && self.south < self.north
            && self.north <= 90.0
            && -180.0 <= self.west
            && self.west < self.east
            && self.east <= 180.0;
        if ok {
            Ok(())
        } else {
            Err(bad("city", format!("not a box: {self:?}")))
        }
    }
    fn random_point(&self, rng: &mut Rng) -> Point {
        Point {
            lat: rng.range(self.south, self.north),
            lng: rng.range(self.west, self.east),
        }
    }
}

/// Great-circle distance, metres.
pub fn distance_m(a: Point, b: Point) -> f64 {
    let (la, lb) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = lb - la;
    let dlng = (b.lng - a.lng).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la.cos() * lb.cos() * (dlng / 2.0).sin().powi(2);
    2.0 * EARTH_M * h.sqrt().min(1.0).asin()
}

/// The city box cut into `rows × cols` cells (row-major index).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    pub city: CityBox,
    pub rows: usize,
    pub cols: usize,
}

impl Grid {
    pub fn cells(&self) -> usize {
        self.rows * self.cols
    }
    /// The cell holding `p` (points on the north/east edge belong to the last cell).
    pub fn cell_of(&self, p: Point) -> Option<usize> {
        if !self.city.contains(p) {
            return None;
        }
        let fr = (p.lat - self.city.south) / (self.city.north - self.city.south);
        let fc = (p.lng - self.city.west) / (self.city.east - self.city.west);
        let r = ((fr * self.rows as f64) as usize).min(self.rows - 1);
        let c = ((fc * self.cols as f64) as usize).min(self.cols - 1);
        Some(r * self.cols + c)
    }
    /// A uniform point inside cell `cell`.
    pub fn point_in(&self, cell: usize, rng: &mut Rng) -> Point {
        let (r, c) = (cell / self.cols, cell % self.cols);
        let h = (self.city.north - self.city.south) / self.rows as f64;
        let w = (self.city.east - self.city.west) / self.cols as f64;
        // Kept off the cell's far edges so the point never lands in a neighbour.
        let lat = self.city.south + h * (r as f64 + rng.range(0.0, 0.999));
        let lng = self.city.west + w * (c as f64 + rng.range(0.0, 0.999));
        Point { lat, lng }
    }
}

/// Zipf–Mandelbrot over ranks `0..n`: `p(k) ∝ 1/(k+1+q)^s`, sampled by inverse CDF.
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64, q: f64) -> Result<Self, WorkloadError> {
        if n == 0 || n > 1_000_000 {
            return Err(bad("zipf", format!("{n} ranks is not in 1..=1000000")));
        }
        if !(s.is_finite() && s > 0.0 && q.is_finite() && q >= 0.0) {
            return Err(bad("zipf", format!("s {s} must be > 0 and q {q} >= 0")));
        }
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n {
            total += 1.0 / (k as f64 + q).powf(s);
            cdf.push(total);
        }
        for v in &mut cdf {
            *v /= total;
        }
        Ok(Self { cdf })
    }
    /// The probability of rank `k`.
    pub fn p(&self, k: usize) -> f64 {
        self.cdf[k] - if k == 0 { 0.0 } else { self.cdf[k - 1] }
    }
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

// ------------------------------------------------------------------ riders

/// Where a ride request starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A hotspot cell of the grid, by its cell index.
    Hotspot(usize),
    Airport,
    Stadium,
    /// Row `n` of the replayed trips.
    Replay(usize),
}

/// One ride to request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RideSpec {
    pub origin: Origin,
    pub pickup: Point,
    pub dropoff: Point,
}

/// The stadium burst: `rate` extra rides per second from the stadium during
/// `[at, at + len)` of the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Burst {
    pub at: Duration,
    pub len: Duration,
    pub rate: f64,
}

impl Burst {
    /// Whether `elapsed` (since the first ride) is inside the burst.
    pub fn active(&self, elapsed: Duration) -> bool {
        elapsed >= self.at && elapsed < self.at + self.len
    }
    /// The intended send offsets (since the first ride) of the burst's requests:
    /// the same open-loop schedule the loadgen keeps, shifted by `at`.
    pub fn schedule(&self) -> Result<Vec<Duration>, WorkloadError> {
        let n = self.plan()?.0;
        let gap = 1e9 / self.rate;
        Ok((0..n)
            .map(|i| self.at + Duration::from_nanos((i as f64 * gap) as u64))
            .collect())
    }
    fn plan(&self) -> Result<(u64, LoadPlan), WorkloadError> {
        if !(self.rate.is_finite() && self.rate > 0.0) || self.len.is_zero() {
            return Err(bad("burst", "rate and length must be positive"));
        }
        let plan = LoadPlan::new(self.rate, self.len);
        let n = ((self.rate * self.len.as_secs_f64()).round() as u64).max(1);
        Ok((n, plan))
    }
}

/// Pickups and dropoffs: hotspots, the airport, the stadium.
#[derive(Debug, Clone)]
pub struct RideGen {
    grid: Grid,
    zipf: Zipf,
    /// rank → cell.
    cell_of_rank: Vec<usize>,
    airport: Point,
    airport_share: f64,
    stadium: Point,
    replay: Option<Arc<Vec<(Point, Point)>>>,
    cursor: usize,
    rng: Rng,
}

/// Up to ~300 m of jitter around a venue.
const VENUE_JITTER_DEG: f64 = 0.003;

impl RideGen {
    pub fn new(config: &WorkloadConfig, seed: u64) -> Result<Self, WorkloadError> {
        let grid = config.grid;
        let zipf = Zipf::new(grid.cells(), config.zipf_s, config.zipf_q)?;
        let mut rng = Rng::new(seed);
        // The hottest ranks land on random cells (Fisher–Yates, seeded).
        let mut cell_of_rank: Vec<usize> = (0..grid.cells()).collect();
        for i in (1..cell_of_rank.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            cell_of_rank.swap(i, j);
        }
        Ok(Self {
            grid,
            zipf,
            cell_of_rank,
            airport: config.airport,
            airport_share: config.airport_share,
            stadium: config.stadium,
            replay: config.trips.clone().filter(|t| !t.is_empty()),
            cursor: 0,
            rng,
        })
    }
    /// The cell of hotspot rank `k` (0 is the hottest).
    pub fn cell_of_rank(&self, k: usize) -> usize {
        self.cell_of_rank[k]
    }
    fn near(&mut self, p: Point) -> Point {
        let lat = p.lat + self.rng.range(-VENUE_JITTER_DEG, VENUE_JITTER_DEG);
        let lng = p.lng + self.rng.range(-VENUE_JITTER_DEG, VENUE_JITTER_DEG);
        Point {
            lat: lat.clamp(self.grid.city.south, self.grid.city.north),
            lng: lng.clamp(self.grid.city.west, self.grid.city.east),
        }
    }
    /// An ordinary ride: the airport with `airport_share`, else the next replayed
    /// trip (cycling) if there are any, else a Zipf hotspot.
    pub fn ride(&mut self) -> RideSpec {
        let (origin, pickup) = if self.rng.unit() < self.airport_share {
            (Origin::Airport, self.near(self.airport))
        } else if let Some(trips) = &self.replay {
            let n = self.cursor % trips.len();
            self.cursor += 1;
            let (pickup, dropoff) = trips[n];
            return RideSpec {
                origin: Origin::Replay(n),
                pickup,
                dropoff,
            };
        } else {
            let cell = self.cell_of_rank[self.zipf.sample(&mut self.rng)];
            (
                Origin::Hotspot(cell),
                self.grid.point_in(cell, &mut self.rng),
            )
        };
        let dropoff = self.grid.city.random_point(&mut self.rng);
        RideSpec {
            origin,
            pickup,
            dropoff,
        }
    }
    /// A burst ride: from the stadium.
    pub fn stadium_ride(&mut self) -> RideSpec {
        let pickup = self.near(self.stadium);
        let dropoff = self.grid.city.random_point(&mut self.rng);
        RideSpec {
            origin: Origin::Stadium,
            pickup,
            dropoff,
        }
    }
}

// ------------------------------------------------------------------ drivers

#[derive(Debug, Clone, Copy)]
struct Leg {
    from: Point,
    to: Point,
    /// Seconds since the run's start.
    start: f64,
    secs: f64,
}

/// Drivers moving along routes of random waypoints in the city box, each at its
/// own speed; the position is interpolated along the current leg.
#[derive(Debug, Clone)]
pub struct Fleet {
    city: CityBox,
    legs: Vec<Leg>,
    speeds: Vec<f64>,
    /// One stream per driver: a driver's route depends on the seed and its index
    /// only, never on the order drivers are asked for.
    rngs: Vec<Rng>,
}

impl Fleet {
    /// `drivers` drivers at random points, speeds uniform in `speed_mps`.
    pub fn new(
        city: CityBox,
        drivers: usize,
        speed_mps: (f64, f64),
        seed: u64,
    ) -> Result<Self, WorkloadError> {
        city.validate()?;
        if drivers > MAX_DRIVERS {
            return Err(bad("drivers", format!("{drivers} > {MAX_DRIVERS}")));
        }
        let (lo, hi) = speed_mps;
        if !(lo.is_finite() && hi.is_finite() && 0.0 < lo && lo <= hi && hi <= 100.0) {
            return Err(bad("speed_mps", format!("{lo}..{hi} is not in (0, 100]")));
        }
        let mut rngs: Vec<Rng> = (0..drivers as u64)
            .map(|i| {
                // Decorrelate the streams: the seed of stream i is a hash of (seed, i).
                let mut mix = Rng::new(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                Rng::new(mix.next_u64())
            })
            .collect();
        let speeds: Vec<f64> = rngs.iter_mut().map(|r| r.range(lo, hi)).collect();
        let mut fleet = Self {
            city,
            legs: Vec::with_capacity(drivers),
            speeds,
            rngs,
        };
        for i in 0..drivers {
            let from = city.random_point(&mut fleet.rngs[i]);
            let leg = fleet.leg(i, from, 0.0);
            fleet.legs.push(leg);
        }
        Ok(fleet)
    }
    fn leg(&mut self, i: usize, from: Point, start: f64) -> Leg {
        let to = self.city.random_point(&mut self.rngs[i]);
        // At least a second per leg: a waypoint drawn next to the last one must not
        // make a zero-length leg (and an endless loop in `position`).
        let secs = (distance_m(from, to) / self.speeds[i]).max(1.0);
        Leg {
            from,
            to,
            start,
            secs,
        }
    }
    pub fn len(&self) -> usize {
        self.legs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.legs.is_empty()
    }
    /// Driver `i`'s position `elapsed` into the run. Time only moves forward per
    /// driver: an earlier `elapsed` than a previous call answers the current leg's
    /// start.
    pub fn position(&mut self, i: usize, elapsed: Duration) -> Point {
        let t = elapsed.as_secs_f64();
        while t >= self.legs[i].start + self.legs[i].secs {
            let done = self.legs[i];
            self.legs[i] = self.leg(i, done.to, done.start + done.secs);
        }
        let leg = self.legs[i];
        let f = ((t - leg.start) / leg.secs).clamp(0.0, 1.0);
        // Linear in degrees: legs are a few km, where that is the straight line.
        Point {
            lat: leg.from.lat + (leg.to.lat - leg.from.lat) * f,
            lng: leg.from.lng + (leg.to.lng - leg.from.lng) * f,
        }
    }
}

// ------------------------------------------------------------------ config

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkloadConfig {
    /// `http://host:port` of the API.
    pub target: String,
    pub drivers: usize,
    /// Each driver pings this often.
    pub ping_every: Duration,
    /// Updates per `POST /v1/locations` at most.
    pub ping_batch: usize,
    pub speed_mps: (f64, f64),
    pub rides_per_sec: f64,
    pub duration: Duration,
    pub mode: Mode,
    pub grid: Grid,
    pub zipf_s: f64,
    pub zipf_q: f64,
    pub airport: Point,
    pub airport_share: f64,
    pub stadium: Point,
    pub burst: Option<Burst>,
    /// Replayed trips (pickup, dropoff), e.g. from [`parse_trips_csv`].
    #[serde(skip)]
    pub trips: Option<Arc<Vec<(Point, Point)>>>,
    /// Ride requests outstanding at most (the loadgen's bound).
    pub max_in_flight: usize,
    /// A batched ride not offered within this is counted unmatched (`timeout`).
    pub match_timeout: Duration,
    pub poll_every: Duration,
    /// Delay between trip steps (accept → arrived → start → complete → pay).
    pub trip_step: Duration,
    /// Drive each accepted trip to paid (`false`: the driver accepts and the trip
    /// stays matched — request → match without the trip traffic; the driver is
    /// then used up, so plan a driver per ride).
    pub drive_trips: bool,
    /// How long to wait for trips still running after the last request.
    pub drain_timeout: Duration,
    pub http_timeout: Duration,
    pub seed: u64,
}

impl Serialize for Grid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.rows, self.cols).serialize(s)
    }
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            target: "http://127.0.0.1:8090".to_owned(),
            drivers: 2_000,
            ping_every: Duration::from_secs(4),
            ping_batch: 1_000,
            speed_mps: (5.0, 15.0),
            rides_per_sec: 100.0,
            duration: Duration::from_secs(10),
            mode: Mode::Greedy,
            grid: Grid {
                city: CityBox::sf(),
                rows: 20,
                cols: 20,
            },
            zipf_s: 1.3,
            zipf_q: 4.0,
            // The south-east corner of the box (SFO itself lies just south of it).
            airport: Point {
                lat: 37.70,
                lng: -122.32,
            },
            airport_share: 0.05,
            // Oracle Park.
            stadium: Point {
                lat: 37.7786,
                lng: -122.3893,
            },
            burst: None,
            trips: None,
            max_in_flight: 10_000,
            match_timeout: Duration::from_secs(40),
            poll_every: Duration::from_millis(50),
            trip_step: Duration::from_millis(200),
            drive_trips: true,
            drain_timeout: Duration::from_secs(30),
            http_timeout: Duration::from_secs(10),
            seed: 1,
        }
    }
}

impl WorkloadConfig {
    pub fn validate(&self) -> Result<(), WorkloadError> {
        self.grid.city.validate()?;
        if self.grid.rows == 0 || self.grid.cols == 0 || self.grid.cells() > 1_000_000 {
            return Err(bad("grid", "rows × cols must be in 1..=1000000"));
        }
        if self.drivers > MAX_DRIVERS {
            return Err(bad("drivers", format!("{} > {MAX_DRIVERS}", self.drivers)));
        }
        if self.ping_every < Duration::from_millis(100) {
            return Err(bad("ping_every", "at least 100ms"));
        }
        if !(1..=crate::index::MAX_BATCH).contains(&self.ping_batch) {
            return Err(bad(
                "ping_batch",
                format!("must be in 1..={}", crate::index::MAX_BATCH),
            ));
        }
        if !(self.airport_share.is_finite() && (0.0..=1.0).contains(&self.airport_share)) {
            return Err(bad("airport_share", "must be in [0, 1]"));
        }
        for (field, p) in [("airport", self.airport), ("stadium", self.stadium)] {
            if Point::new(p.lat, p.lng).is_err() {
                return Err(bad(field, format!("{p:?} is not a point on Earth")));
            }
        }
        if let Some(b) = &self.burst {
            b.plan()?;
        }
        if self.poll_every.is_zero() || self.match_timeout.is_zero() {
            return Err(bad(
                "poll_every",
                "poll_every and match_timeout must be > 0",
            ));
        }
        Zipf::new(self.grid.cells(), self.zipf_s, self.zipf_q)?;
        if !(self.rides_per_sec.is_finite() && self.rides_per_sec > 0.0) {
            return Err(bad("rides_per_sec", "must be a positive rate"));
        }
        if self.duration.is_zero() {
            return Err(bad("duration", "must be positive"));
        }
        if self.max_in_flight == 0 || self.max_in_flight > loadgen::MAX_IN_FLIGHT {
            return Err(bad(
                "max_in_flight",
                format!("must be in 1..={}", loadgen::MAX_IN_FLIGHT),
            ));
        }
        Ok(())
    }
}

// ------------------------------------------------------------------ the runner

/// Live counters for a progress bar.
#[derive(Debug, Default)]
pub struct WorkloadProgress {
    /// The ordinary rides' loadgen progress.
    pub rides: Arc<Progress>,
    pub pings_sent: AtomicU64,
    pub matched: AtomicU64,
    pub trips_paid: AtomicU64,
}

#[derive(Debug, Default)]
struct Counters {
    pings_sent: AtomicU64,
    pings_accepted: AtomicU64,
    pings_stale: AtomicU64,
    pings_shed: AtomicU64,
    pings_failed: AtomicU64,
    requested: AtomicU64,
    matched: AtomicU64,
    unmatched: AtomicU64,
    rides_shed: AtomicU64,
    rides_failed: AtomicU64,
    accepted: AtomicU64,
    completed: AtomicU64,
    paid: AtomicU64,
    trips_failed: AtomicU64,
    trips_running: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    fn error(&self, kind: String) {
        *self.errors.lock().entry(kind).or_insert(0) += 1;
    }
}

/// Pings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PingReport {
    /// Updates sent.
    pub sent: u64,
    pub accepted: u64,
    pub stale: u64,
    /// Updates in requests answered 503.
    pub shed: u64,
    /// Updates in requests that failed otherwise.
    pub failed: u64,
}

/// Rides (ordinary and burst together).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RideReport {
    pub requested: u64,
    pub matched: u64,
    /// Answered `no_drivers`, `cancelled`, or not offered within `match_timeout`.
    pub unmatched: u64,
    pub shed: u64,
    pub failed: u64,
    /// Due while `max_in_flight` were out: never sent.
    pub dropped: u64,
    /// Request → offered of ordinary rides, from the intended send time.
    pub latency: ClassReport,
    /// The burst's rides, if any.
    pub burst: Option<ClassReport>,
}

/// Trips driven after the offers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TripReport {
    pub accepted: u64,
    pub completed: u64,
    pub paid: u64,
    pub failed: u64,
    /// Still running when `drain_timeout` ran out.
    pub abandoned: u64,
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkloadReport {
    pub config: WorkloadConfig,
    pub elapsed: Duration,
    pub pings: PingReport,
    pub rides: RideReport,
    pub trips: TripReport,
    /// Failures by kind (`ride:503`, `accept:409`, `ping:timeout`, …).
    pub errors: BTreeMap<String, u64>,
}

impl WorkloadReport {
    /// A fixed-width text table.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let p = &self.pings;
        let r = &self.rides;
        let t = &self.trips;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "drivers {}  rides/s {}  mode {:?}  over {:?} (elapsed {:.1?})",
            self.config.drivers,
            self.config.rides_per_sec,
            self.config.mode,
            self.config.duration,
            self.elapsed
        );
        let _ = writeln!(
            out,
            "pings   sent {:>9} accepted {:>9} stale {:>7} shed(503) {:>7} failed {:>6}",
            p.sent, p.accepted, p.stale, p.shed, p.failed
        );
        let _ = writeln!(
            out,
            "rides   requested {:>7} matched {:>7} unmatched {:>6} shed {:>5} failed {:>5} dropped {:>5}",
            r.requested, r.matched, r.unmatched, r.shed, r.failed, r.dropped
        );
        let mut row = |name: &str, c: &ClassReport| {
            let _ = writeln!(
                out,
                "{name:<7} request→match ms  p50 {:>8.1}  p99 {:>8.1}  p99.9 {:>8.1}  max {:>8.1}",
                c.p50_ms, c.p99_ms, c.p999_ms, c.max_ms
            );
        };
        row("ride", &r.latency);
        if let Some(b) = &r.burst {
            row("burst", b);
        }
        let _ = writeln!(
            out,
            "trips   accepted {:>7} completed {:>7} paid {:>7} failed {:>5} abandoned {:>5}",
            t.accepted, t.completed, t.paid, t.failed, t.abandoned
        );
        for (kind, n) in &self.errors {
            let _ = writeln!(out, "error   {kind:<24} {n}");
        }
        out
    }
}

fn error_kind(what: &str, e: &HttpError) -> String {
    match e.status() {
        Some(status) => format!("{what}:{}", status.as_u16()),
        None if e.is_timeout() => format!("{what}:timeout"),
        None => format!("{what}:transport"),
    }
}

struct Shared {
    config: WorkloadConfig,
    client: HttpClient,
    counters: Counters,
    clock: SharedClock,
}

/// Runs the workload against `config.target`: warms the fleet up (one ping per
/// driver), then pings and rides until `duration` is over, then waits (bounded) for
/// the trips in progress.
pub async fn run(
    config: WorkloadConfig,
    clock: SharedClock,
    progress: Arc<WorkloadProgress>,
) -> Result<WorkloadReport, WorkloadError> {
    config.validate()?;
    let shared = Arc::new(Shared {
        client: HttpClient::new(config.http_timeout),
        counters: Counters::default(),
        clock,
        config,
    });
    let cfg = &shared.config;
    let fleet = Fleet::new(cfg.grid.city, cfg.drivers, cfg.speed_mps, cfg.seed)?;
    let fleet = Arc::new(Mutex::new(fleet));
    let start = tokio::time::Instant::now();

    // Warm-up: every driver is in the index before the first ride.
    let all: Vec<usize> = (0..cfg.drivers).collect();
    for chunk in all.chunks(cfg.ping_batch) {
        let body = ping_body(&shared, &fleet, chunk, Duration::ZERO);
        let sent = chunk.len() as u64;
        match send_pings(&shared, &body, sent, &progress).await {
            Ok(()) => {}
            Err(e) => return Err(WorkloadError::WarmUp(e.to_string())),
        }
    }

    let stop = tokio_util::sync::CancellationToken::new();
    let pinger = tokio::spawn(ping_loop(
        shared.clone(),
        fleet.clone(),
        start,
        stop.clone(),
        progress.clone(),
    ));

    let rides = Arc::new(Mutex::new(RideGen::new(cfg, cfg.seed ^ 0xA5A5)?));
    let plan = LoadPlan {
        max_in_flight: cfg.max_in_flight,
        ..LoadPlan::new(cfg.rides_per_sec, cfg.duration)
    };
    let base = {
        let shared = shared.clone();
        let rides = rides.clone();
        let progress = progress.clone();
        async move {
            loadgen::run_with_progress(&plan, &progress.rides.clone(), |_| {
                let spec = rides.lock().ride();
                ("ride", ride(shared.clone(), spec, progress.clone()))
            })
            .await
        }
    };
    let burst = {
        let shared = shared.clone();
        let rides = rides.clone();
        let progress = progress.clone();
        let burst = cfg.burst;
        async move {
            let Some(b) = burst else { return Ok(None) };
            let (_, plan) = b.plan()?;
            let plan = LoadPlan {
                max_in_flight: shared.config.max_in_flight,
                ..plan
            };
            tokio::time::sleep(b.at).await;
            let report = loadgen::run(&plan, |_| {
                let spec = rides.lock().stadium_ride();
                ("burst", ride(shared.clone(), spec, progress.clone()))
            })
            .await?;
            Ok::<_, WorkloadError>(Some(report))
        }
    };
    let (base, burst) = tokio::join!(base, burst);
    let base = base?;
    let burst = burst?;
    stop.cancel();
    let _ = pinger.await;

    // Trips still running: bounded wait.
    let deadline = tokio::time::Instant::now() + shared.config.drain_timeout;
    while shared.counters.trips_running.load(Ordering::Acquire) > 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let c = &shared.counters;
    let n = |a: &AtomicU64| a.load(Ordering::Acquire);
    let latency = base
        .class("ride")
        .cloned()
        .unwrap_or_else(|| empty_class("ride"));
    let burst_class = burst.as_ref().and_then(|r| r.class("burst").cloned());
    let dropped = latency.dropped + burst_class.as_ref().map_or(0, |b| b.dropped);
    Ok(WorkloadReport {
        elapsed: start.elapsed(),
        pings: PingReport {
            sent: n(&c.pings_sent),
            accepted: n(&c.pings_accepted),
            stale: n(&c.pings_stale),
            shed: n(&c.pings_shed),
            failed: n(&c.pings_failed),
        },
        rides: RideReport {
            requested: n(&c.requested),
            matched: n(&c.matched),
            unmatched: n(&c.unmatched),
            shed: n(&c.rides_shed),
            failed: n(&c.rides_failed),
            dropped,
            latency,
            burst: burst_class,
        },
        trips: TripReport {
            accepted: n(&c.accepted),
            completed: n(&c.completed),
            paid: n(&c.paid),
            failed: n(&c.trips_failed),
            abandoned: n(&c.trips_running),
        },
        errors: c.errors.lock().clone(),
        config: shared.config.clone(),
    })
}

fn empty_class(class: &str) -> ClassReport {
    ClassReport {
        class: class.to_owned(),
        sent: 0,
        ok: 0,
        ok_within_slo: 0,
        shed: 0,
        error: 0,
        dropped: 0,
        p50_ms: 0.0,
        p90_ms: 0.0,
        p99_ms: 0.0,
        p999_ms: 0.0,
        max_ms: 0.0,
    }
}

fn ping_body(shared: &Shared, fleet: &Mutex<Fleet>, drivers: &[usize], elapsed: Duration) -> Value {
    let ts = shared.clock.wall_millis();
    let mut fleet = fleet.lock();
    let updates: Vec<Value> = drivers
        .iter()
        .map(|&i| {
            let p = fleet.position(i, elapsed);
            json!({"driver": i as u64 + 1, "lat": p.lat, "lon": p.lng, "ts": ts, "status": "available"})
        })
        .collect();
    json!({ "updates": updates })
}

async fn send_pings(
    shared: &Shared,
    body: &Value,
    sent: u64,
    progress: &WorkloadProgress,
) -> Result<(), HttpError> {
    let c = &shared.counters;
    c.pings_sent.fetch_add(sent, Ordering::Relaxed);
    progress.pings_sent.fetch_add(sent, Ordering::Relaxed);
    let url = format!("{}/v1/locations", shared.config.target);
    match shared.client.call(Method::POST, &url, Some(body)).await {
        Ok(response) => {
            let report: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
            let get = |k: &str| report[k].as_u64().unwrap_or(0);
            c.pings_accepted
                .fetch_add(get("accepted"), Ordering::Relaxed);
            c.pings_stale
                .fetch_add(get("stale") + get("duplicate"), Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            if e.status() == Some(StatusCode::SERVICE_UNAVAILABLE) {
                c.pings_shed.fetch_add(sent, Ordering::Relaxed);
            } else {
                c.pings_failed.fetch_add(sent, Ordering::Relaxed);
            }
            c.error(error_kind("ping", &e));
            Err(e)
        }
    }
}

/// Ticks every 100 ms; each tick pings the drivers whose slot it is, so every
/// driver pings once per `ping_every` and the load is even over the period.
async fn ping_loop(
    shared: Arc<Shared>,
    fleet: Arc<Mutex<Fleet>>,
    start: tokio::time::Instant,
    stop: tokio_util::sync::CancellationToken,
    progress: Arc<WorkloadProgress>,
) {
    let tick = Duration::from_millis(100);
    let slots = (shared.config.ping_every.as_millis() / tick.as_millis()).max(1) as usize;
    let drivers = shared.config.drivers;
    let gate = Arc::new(tokio::sync::Semaphore::new(PING_CONCURRENCY));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut n: usize = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = interval.tick() => {}
        }
        let slot = n % slots;
        n += 1;
        let due: Vec<usize> = (slot..drivers).step_by(slots).collect();
        for chunk in due.chunks(shared.config.ping_batch) {
            let body = ping_body(&shared, &fleet, chunk, start.elapsed());
            let sent = chunk.len() as u64;
            let Ok(permit) = gate.clone().try_acquire_owned() else {
                // Every slot busy: this ping is skipped (the next one supersedes it).
                shared.counters.error("ping:skipped".to_owned());
                continue;
            };
            let shared = shared.clone();
            let progress = progress.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let _ = send_pings(&shared, &body, sent, &progress).await;
            });
        }
    }
    // The in-flight batches finish before the report is read.
    let _ = gate.acquire_many(PING_CONCURRENCY as u32).await;
}

/// One ride: request, then (batched) poll until offered. Resolves at the offer —
/// that is the latency — and leaves the accept and the trip to a spawned task.
async fn ride(shared: Arc<Shared>, spec: RideSpec, progress: Arc<WorkloadProgress>) -> Verdict {
    let c = &shared.counters;
    let rider = c.requested.fetch_add(1, Ordering::Relaxed) + 1;
    let target = &shared.config.target;
    let mode = match shared.config.mode {
        Mode::Greedy => "greedy",
        Mode::Batched => "batched",
    };
    let body = json!({
        "rider": rider,
        "pickup": {"lat": spec.pickup.lat, "lng": spec.pickup.lng},
        "dropoff": {"lat": spec.dropoff.lat, "lng": spec.dropoff.lng},
        "mode": mode,
    });
    let mut view = match shared
        .client
        .call(Method::POST, &format!("{target}/v1/rides"), Some(&body))
        .await
    {
        Ok(r) => serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null),
        Err(e) => {
            c.error(error_kind("ride", &e));
            if e.status() == Some(StatusCode::SERVICE_UNAVAILABLE) {
                c.rides_shed.fetch_add(1, Ordering::Relaxed);
                return Verdict::Shed;
            }
            c.rides_failed.fetch_add(1, Ordering::Relaxed);
            return Verdict::Error;
        }
    };
    let Some(id) = view["id"].as_u64() else {
        c.error("ride:no-id".to_owned());
        c.rides_failed.fetch_add(1, Ordering::Relaxed);
        return Verdict::Error;
    };
    let url = format!("{target}/v1/rides/{id}");
    let deadline = tokio::time::Instant::now() + shared.config.match_timeout;
    loop {
        match view["status"]["state"].as_str() {
            Some("offered") => break,
            Some("queued") if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(shared.config.poll_every).await;
                view = match shared.client.get_json::<Value>(&url).await {
                    Ok(v) => v,
                    Err(e) => {
                        c.error(error_kind("poll", &e));
                        c.rides_failed.fetch_add(1, Ordering::Relaxed);
                        return Verdict::Error;
                    }
                };
            }
            other => {
                let kind = other.map_or("timeout", |s| if s == "queued" { "timeout" } else { s });
                c.error(format!("unmatched:{kind}"));
                c.unmatched.fetch_add(1, Ordering::Relaxed);
                return Verdict::Error;
            }
        }
    }
    c.matched.fetch_add(1, Ordering::Relaxed);
    progress.matched.fetch_add(1, Ordering::Relaxed);
    let Some(driver) = view["status"]["driver"].as_u64() else {
        c.error("ride:offer-without-driver".to_owned());
        return Verdict::Ok;
    };
    c.trips_running.fetch_add(1, Ordering::AcqRel);
    tokio::spawn(async move {
        trip(&shared, id, driver, spec, &progress).await;
        shared.counters.trips_running.fetch_sub(1, Ordering::AcqRel);
    });
    Verdict::Ok
}

/// The driver accepts the offer; the trip runs arrived → start → complete → pay.
async fn trip(
    shared: &Shared,
    ride: u64,
    driver: u64,
    spec: RideSpec,
    progress: &WorkloadProgress,
) {
    let c = &shared.counters;
    let target = &shared.config.target;
    let step = shared.config.trip_step;
    tokio::time::sleep(step).await;
    let accepted = shared
        .client
        .call(
            Method::POST,
            &format!("{target}/v1/rides/{ride}/accept"),
            Some(&json!({ "driver": driver })),
        )
        .await;
    let trip = match accepted {
        Ok(r) => serde_json::from_slice::<Value>(&r.body)
            .ok()
            .and_then(|v| v["trip"].as_str().map(str::to_owned)),
        Err(e) => {
            c.error(error_kind("accept", &e));
            c.trips_failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let Some(trip) = trip else {
        c.error("accept:no-trip".to_owned());
        c.trips_failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    c.accepted.fetch_add(1, Ordering::Relaxed);
    if !shared.config.drive_trips {
        return;
    }
    let distance = (distance_m(spec.pickup, spec.dropoff) * 1.3).min(1_000_000.0);
    for action in ["arrived", "start", "complete", "pay"] {
        tokio::time::sleep(step).await;
        let body = if action == "complete" {
            json!({ "distance_m": distance })
        } else {
            json!({})
        };
        let url = format!("{target}/v1/trips/{trip}/{action}");
        if let Err(e) = shared.client.call(Method::POST, &url, Some(&body)).await {
            c.error(error_kind(action, &e));
            c.trips_failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match action {
            "complete" => {
                c.completed.fetch_add(1, Ordering::Relaxed);
            }
            "pay" => {
                c.paid.fetch_add(1, Ordering::Relaxed);
                progress.trips_paid.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

// ------------------------------------------------------------------ real trips

/// Rows read from a trips CSV at most.
pub const MAX_TRIPS: usize = 10_000_000;

/// Splits one CSV line, honouring double quotes (`""` inside quotes is a quote).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// The trips of a CSV with `pickup_latitude`, `pickup_longitude`,
/// `dropoff_latitude` and `dropoff_longitude` columns (the Chicago taxi sample's
/// names), at most `max` of them. Rows with an empty, unparsable or out-of-range
/// coordinate are skipped — the sample leaves them empty when the trip left
/// Chicago; the count of skipped rows is returned with the trips.
pub fn parse_trips_csv(
    text: &str,
    max: usize,
) -> Result<(Vec<(Point, Point)>, usize), WorkloadError> {
    let max = max.min(MAX_TRIPS);
    let mut lines = text.lines();
    let header = csv_fields(lines.next().unwrap_or_default());
    let column = |name: &'static str| {
        header
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| bad("trips_csv", format!("no {name} column in the header")))
    };
    let cols = [
        column("pickup_latitude")?,
        column("pickup_longitude")?,
        column("dropoff_latitude")?,
        column("dropoff_longitude")?,
    ];
    let mut trips = Vec::new();
    let mut skipped = 0;
    for line in lines {
        if trips.len() >= max {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        let fields = csv_fields(line);
        let v: Vec<Option<f64>> = cols
            .iter()
            .map(|&c| fields.get(c).and_then(|f| f.trim().parse::<f64>().ok()))
            .collect();
        match v[..] {
            [Some(plat), Some(plng), Some(dlat), Some(dlng)]
                if Point::new(plat, plng).is_ok() && Point::new(dlat, dlng).is_ok() =>
            {
                trips.push((
                    Point {
                        lat: plat,
                        lng: plng,
                    },
                    Point {
                        lat: dlat,
                        lng: dlng,
                    },
                ));
            }
            _ => skipped += 1,
        }
    }
    if trips.is_empty() {
        return Err(bad(
            "trips_csv",
            format!("no usable trip ({skipped} rows skipped)"),
        ));
    }
    Ok((trips, skipped))
}

impl CityBox {
    /// The smallest box holding every pickup and dropoff, widened by ~1 km.
    pub fn around(trips: &[(Point, Point)]) -> Option<Self> {
        let mut points = trips.iter().flat_map(|&(a, b)| [a, b]);
        let first = points.next()?;
        let mut b = Self {
            south: first.lat,
            north: first.lat,
            west: first.lng,
            east: first.lng,
        };
        for p in points {
            b.south = b.south.min(p.lat);
            b.north = b.north.max(p.lat);
            b.west = b.west.min(p.lng);
            b.east = b.east.max(p.lng);
        }
        Some(Self {
            south: (b.south - 0.01).max(-90.0),
            north: (b.north + 0.01).min(90.0),
            west: (b.west - 0.01).max(-180.0),
            east: (b.east + 0.01).min(180.0),
        })
    }
}
