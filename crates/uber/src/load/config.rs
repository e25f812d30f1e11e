//! A whole run's settings and their validation.

use std::sync::Arc;
use std::time::Duration;

use casebook_kit::loadgen;
use serde::Serialize;

use super::generators::{Burst, CityBox, Grid, Zipf};
use super::{MAX_DRIVERS, WorkloadError, bad};
use crate::index::LatLng;
use crate::matching::Mode;

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkloadConfig {
    /// `http://host:port` of the API.
    pub target: String,
    pub drivers: usize,
    /// Each driver pings this often.
    #[serde(rename = "ping_every_ms", with = "casebook_kit::api::duration_ms")]
    pub ping_every: Duration,
    /// Updates per `POST /v1/locations` at most.
    pub ping_batch: usize,
    pub speed_mps: (f64, f64),
    pub rides_per_sec: f64,
    #[serde(rename = "duration_ms", with = "casebook_kit::api::duration_ms")]
    pub duration: Duration,
    pub mode: Mode,
    pub grid: Grid,
    pub zipf_s: f64,
    pub zipf_q: f64,
    pub airport: LatLng,
    pub airport_share: f64,
    pub stadium: LatLng,
    pub burst: Option<Burst>,
    /// Replayed trips (pickup, dropoff), e.g. from [`parse_trips_csv`](super::parse_trips_csv).
    #[serde(skip)]
    pub trips: Option<Arc<Vec<(LatLng, LatLng)>>>,
    /// Ride requests outstanding at most (the loadgen's bound).
    pub max_in_flight: usize,
    /// A batched ride not offered within this is counted unmatched (`timeout`).
    #[serde(rename = "match_timeout_ms", with = "casebook_kit::api::duration_ms")]
    pub match_timeout: Duration,
    #[serde(rename = "poll_every_ms", with = "casebook_kit::api::duration_ms")]
    pub poll_every: Duration,
    /// Delay between trip steps (accept → arrived → start → complete → pay).
    #[serde(rename = "trip_step_ms", with = "casebook_kit::api::duration_ms")]
    pub trip_step: Duration,
    /// Drive each accepted trip to paid (`false`: the driver accepts and the trip
    /// stays matched — request → match without the trip traffic; the driver is
    /// then used up, so plan a driver per ride).
    pub drive_trips: bool,
    /// How long to wait for trips still running after the last request.
    #[serde(rename = "drain_timeout_ms", with = "casebook_kit::api::duration_ms")]
    pub drain_timeout: Duration,
    #[serde(rename = "http_timeout_ms", with = "casebook_kit::api::duration_ms")]
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
            airport: LatLng::literal(37.70, -122.32),
            airport_share: 0.05,
            // Oracle Park.
            stadium: LatLng::literal(37.7786, -122.3893),
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
        if let Some(b) = &self.burst {
            b.plan()?;
        }
        if self.poll_every.is_zero() || self.match_timeout.is_zero() {
            return Err(bad(
                "poll_every",
                "poll_every and match_timeout must be > 0",
            ));
        }
        Zipf::new(self.grid.cells(), self.zipf_s, self.zipf_q)
            .map_err(|e| bad("zipf", e.to_string()))?;
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
