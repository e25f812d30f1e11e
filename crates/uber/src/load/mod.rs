//! The Uber workload: drivers moving along routes with 4-second
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
//!
//! | file | holds |
//! |---|---|
//! | `generators` | the seeded generators: randomness, the city box, grid and Zipf, riders, drivers |
//! | `config` | [`WorkloadConfig`] and its validation |
//! | `run` | the runner against a live API |
//! | `report` | the live counters ([`WorkloadProgress`], a kit [`ShowProgress`](casebook_kit::loadgen::ShowProgress)) and the final report |
//! | `replay` | real trips from a CSV (the Chicago taxi sample) |

use casebook_kit::loadgen;

mod config;
mod generators;
mod replay;
mod report;
mod run;

pub use config::WorkloadConfig;
pub use generators::{Burst, CityBox, Fleet, Grid, Origin, RideGen, RideSpec, Rng, Zipf};
pub use replay::{MAX_TRIPS, parse_trips_csv};
pub use report::{PingReport, RideReport, TripReport, WorkloadProgress, WorkloadReport};
pub use run::run;

/// The most drivers one run simulates.
pub const MAX_DRIVERS: usize = 1_000_000;
/// Ping batch requests in flight at most.
pub const PING_CONCURRENCY: usize = 64;

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
