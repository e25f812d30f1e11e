//! The seeded generators: given a seed and an elapsed time they say where a
//! driver is and where the next ride starts (no server, no clock of their own).

use std::sync::Arc;
use std::time::Duration;

use casebook_kit::loadgen::LoadPlan;
pub use casebook_kit::sampling::{Rng, Zipf};
use serde::Serialize;

use super::config::WorkloadConfig;
use super::{MAX_DRIVERS, WorkloadError, bad};
use crate::index::LatLng;

// ------------------------------------------------------------------ randomness

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
    pub fn contains(&self, p: LatLng) -> bool {
        (self.south..=self.north).contains(&p.lat()) && (self.west..=self.east).contains(&p.lon())
    }
    pub(super) fn validate(&self) -> Result<(), WorkloadError> {
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
    fn random_point(&self, rng: &mut Rng) -> LatLng {
        LatLng::clamped(
            rng.range(self.south, self.north),
            rng.range(self.west, self.east),
        )
    }
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
    pub fn cell_of(&self, p: LatLng) -> Option<usize> {
        if !self.city.contains(p) {
            return None;
        }
        let fr = (p.lat() - self.city.south) / (self.city.north - self.city.south);
        let fc = (p.lon() - self.city.west) / (self.city.east - self.city.west);
        let r = ((fr * self.rows as f64) as usize).min(self.rows - 1);
        let c = ((fc * self.cols as f64) as usize).min(self.cols - 1);
        Some(r * self.cols + c)
    }
    /// A uniform point inside cell `cell`.
    pub fn point_in(&self, cell: usize, rng: &mut Rng) -> LatLng {
        let (r, c) = (cell / self.cols, cell % self.cols);
        let h = (self.city.north - self.city.south) / self.rows as f64;
        let w = (self.city.east - self.city.west) / self.cols as f64;
        // Kept off the cell's far edges so the point never lands in a neighbour.
        let lat = self.city.south + h * (r as f64 + rng.range(0.0, 0.999));
        let lng = self.city.west + w * (c as f64 + rng.range(0.0, 0.999));
        LatLng::clamped(lat, lng)
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
    pub pickup: LatLng,
    pub dropoff: LatLng,
}

/// The stadium burst: `rate` extra rides per second from the stadium during
/// `[at, at + len)` of the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Burst {
    #[serde(rename = "at_ms", with = "casebook_kit::api::duration_ms")]
    pub at: Duration,
    #[serde(rename = "len_ms", with = "casebook_kit::api::duration_ms")]
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
    pub(super) fn plan(&self) -> Result<(u64, LoadPlan), WorkloadError> {
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
    airport: LatLng,
    airport_share: f64,
    stadium: LatLng,
    replay: Option<Arc<Vec<(LatLng, LatLng)>>>,
    cursor: usize,
    rng: Rng,
}

/// Up to ~300 m of jitter around a venue.
const VENUE_JITTER_DEG: f64 = 0.003;

impl RideGen {
    pub fn new(config: &WorkloadConfig, seed: u64) -> Result<Self, WorkloadError> {
        let grid = config.grid;
        let zipf = Zipf::new(grid.cells(), config.zipf_s, config.zipf_q)
            .map_err(|e| bad("zipf", e.to_string()))?;
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
    fn near(&mut self, p: LatLng) -> LatLng {
        let lat = p.lat() + self.rng.range(-VENUE_JITTER_DEG, VENUE_JITTER_DEG);
        let lng = p.lon() + self.rng.range(-VENUE_JITTER_DEG, VENUE_JITTER_DEG);
        LatLng::clamped(
            lat.clamp(self.grid.city.south, self.grid.city.north),
            lng.clamp(self.grid.city.west, self.grid.city.east),
        )
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
    from: LatLng,
    to: LatLng,
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
    fn leg(&mut self, i: usize, from: LatLng, start: f64) -> Leg {
        let to = self.city.random_point(&mut self.rngs[i]);
        // At least a second per leg: a waypoint drawn next to the last one must not
        // make a zero-length leg (and an endless loop in `position`).
        let secs = (from.distance_m(&to) / self.speeds[i]).max(1.0);
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
    pub fn position(&mut self, i: usize, elapsed: Duration) -> LatLng {
        let t = elapsed.as_secs_f64();
        while t >= self.legs[i].start + self.legs[i].secs {
            let done = self.legs[i];
            self.legs[i] = self.leg(i, done.to, done.start + done.secs);
        }
        let leg = self.legs[i];
        let f = ((t - leg.start) / leg.secs).clamp(0.0, 1.0);
        // Linear in degrees: legs are a few km, where that is the straight line.
        LatLng::clamped(
            leg.from.lat() + (leg.to.lat() - leg.from.lat()) * f,
            leg.from.lon() + (leg.to.lon() - leg.from.lon()) * f,
        )
    }
}
