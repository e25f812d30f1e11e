//! One instance of the Uber case: its engines and stores, shared by the HTTP
//! routes ([`crate::api`]) and the service's timers ([`crate::service`]).
//!
//! # Role
//! [`Engine`] owns the live-driver [`DriverIndex`], the [`Matcher`] over it, the
//! event-sourced [`Trips`] with their [`ReadModels`], and the location [`Outbox`]
//! relayed to an embedded [`WalBus`]. Ingest and the states learned by gossip are
//! in `ingest`, the rebuild at start in `reconcile`.
//!
//! # Regions
//! With a [`Regional`] attached ([`Engine::attach_region`]) the engine is one
//! region's replica: a ride whose pickup is in another region is refused with 421
//! naming the owner; a ride whose dropoff is in another region is accepted while
//! that region is reachable and refused with 503 while it is not (the pickup's
//! region keeps matching on its own). Pings are gossiped to the other replicas;
//! the index (hence matching) holds only drivers whose latest state is in this
//! region — a ping or a learned state elsewhere takes the driver out of it.
//!
//! # Guarantees
//! - **Durable before acknowledged.** A location request is answered after its
//!   accepted updates are committed to the outbox's WAL — that record *is* the
//!   primary store of locations — and then applied to the index; the relay
//!   publishes them to the bus (topic [`LOCATIONS_TOPIC`]) at least once. A trip
//!   command is answered after its event is appended to the trip event store.
//! - **Latest wins** by the driver's timestamp (the index's rule); a batch reports
//!   `accepted`, `stale`, `duplicate` and each `invalid` update with its index and
//!   field. Which updates go to the outbox is decided against the index just
//!   before the commit; two concurrent requests for the *same* driver may both
//!   log an update the index then counts stale — consumers apply the same
//!   latest-wins rule, so the bus converges to the index.
//! - **No frozen drivers.** A driver's timestamp more than the index's
//!   `max_clock_skew` ahead of the injected wall clock is refused (from the app and
//!   from gossip); one already stored is restored at the wall clock's time, so
//!   the driver's next ping wins.
//! - **Restart keeps the drivers.** The index is snapshotted every
//!   `snapshot_every`; a start (graceful or after `kill -9`) restores the
//!   snapshot, replays the outbox after it and reconciles the server-owned
//!   statuses with the trip store ([`Engine::reconcile_drivers`], [`crate::locations`]).
//! - **One driver, one ride.** Offers go through the matcher's atomic claim; on
//!   accept the driver moves `available → dispatched` in the index, on start
//!   `→ on_trip`, on complete or cancel back to `available` (and the claim is
//!   released), so a dispatched driver is never offered again and a finished one is.
//!
//! # Deliberately absent
//! - Rides survive only in memory (the matcher's table): after a restart
//!   `GET /v1/rides/{id}` is 404, while trips — event-sourced — are all there.
//!
//! # Pricing
//! Through [`PriceWire`]: each ride request is quoted first (the multiplier is
//! kept with the ride, written into the trip's `Requested` event on accept and
//! charged at completion; a fallback quote is 1.0), then a
//! `Demand` signal is queued; accepted available pings queue `Supply` (at most one
//! per driver per 30 s), an offline ping or a dispatch `SupplyGone`. Signals are
//! sent in batches by the service's sender task, never on a request's path.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use casebook_kit::api::ApiError;
use casebook_kit::clock::SharedClock;
use casebook_kit::events::{EventBus, WalBus};
use casebook_kit::outbox::Outbox;
use casebook_kit::resilience::shed::{LoadShedder, ShedConfig};
use casebook_kit::wal::{Durability, WalConfig};
use serde::{Deserialize, Serialize};

use crate::api::errors::trip_error;
use crate::index::{DriverId, DriverIndex, DriverStatus, IndexConfig, MAX_BATCH};
use crate::locations::{LocationStore, Recovery};
use crate::matching::{DriverClaims, MatchConfig, Matcher, SpeedEta};
use crate::pricewire::{PriceWire, PriceWireConfig};
use crate::pricing::Quote;
use crate::region::Regional;
use crate::trips::{FareSchedule, ReadModels, Trips};

mod ingest;
mod reconcile;

pub(crate) use ingest::check_update;
pub use ingest::{IngestReport, Invalid};

/// The bus topic location updates are published to: `driver.locations` events
/// whose payload is [`LocationColumns`](crate::locations::LocationColumns).
pub const LOCATIONS_TOPIC: &str = "driver-locations";
/// Accepted updates per outbox record (one WAL record, one bus event): keeps a
/// record far below the WAL's record limit whatever the batch size.
pub const UPDATES_PER_RECORD: usize = 1_000;

/// What one instance of the API runs with.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Most updates in one `POST /v1/locations` (more: 413).
    pub max_batch: usize,
    /// The city trips are recorded in (the city view's key).
    pub city: String,
    /// The live-driver index.
    pub index: IndexConfig,
    /// The matcher.
    pub matching: MatchConfig,
    /// Pickup ETA speed, metres per second.
    pub eta_speed_mps: f64,
    /// The tariff.
    pub fares: FareSchedule,
    /// The shedder in front of every route.
    pub shed: ShedConfig,
    /// Durability of the outbox, the bus, the trip store and the read models.
    pub durability: Durability,
    /// How often the matcher's batch window and offer timeouts are driven.
    pub tick_every: Duration,
    /// How often the index is swept for silent drivers and rebalanced.
    pub sweep_every: Duration,
    /// Driver records one sweep examines at most.
    pub sweep_budget: usize,
    /// The pricing service: where, how, and the signals' queue.
    pub pricing: PriceWireConfig,
    /// How often the index is snapshotted (a restart replays the location
    /// outbox only from the last snapshot on).
    pub snapshot_every: Duration,
    /// How much history the bus topic [`LOCATIONS_TOPIC`] keeps.
    pub bus_retention: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_batch: 10_000,
            city: "sf".to_owned(),
            index: IndexConfig::default(),
            matching: MatchConfig::default(),
            eta_speed_mps: 8.3,
            fares: FareSchedule {
                base_cents: 250,
                per_km_cents: 120,
                per_minute_cents: 30,
            },
            shed: ShedConfig::default(),
            durability: Durability::Sync,
            tick_every: Duration::from_millis(100),
            sweep_every: Duration::from_secs(1),
            sweep_budget: 100_000,
            pricing: PriceWireConfig::default(),
            snapshot_every: Duration::from_secs(10),
            bus_retention: Duration::from_secs(600),
        }
    }
}

impl ApiConfig {
    /// Checks the fields the engines do not check themselves; the error names the
    /// field.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_BATCH).contains(&self.max_batch) {
            return Err(format!("max_batch: must be in 1..={MAX_BATCH}"));
        }
        if self.tick_every.is_zero() || self.sweep_every.is_zero() || self.snapshot_every.is_zero()
        {
            return Err("tick_every, sweep_every, snapshot_every: must be positive".to_owned());
        }
        if self.sweep_budget == 0 {
            return Err("sweep_budget: must be positive".to_owned());
        }
        self.shed.validate().map_err(|e| e.to_string())?;
        self.pricing.validate()?;
        self.index.validate().map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// One instance's engines and stores. Shared by the router and the timers.
pub struct Engine {
    pub(crate) config: ApiConfig,
    pub(crate) clock: SharedClock,
    pub(crate) index: Arc<DriverIndex>,
    pub(crate) matcher: Matcher,
    pub(crate) trips: Trips,
    pub(crate) views: tokio::sync::Mutex<ReadModels>,
    pub(crate) bus: WalBus,
    pub(crate) locations: LocationStore,
    /// What the index was rebuilt from at open.
    pub(crate) recovery: Recovery,
    pub(crate) shedder: LoadShedder,
    pub(crate) pricing: Arc<PriceWire>,
    /// The quote each live ride was requested with (ride id → quote), oldest
    /// evicted first beyond the matcher's ride bound.
    pub(crate) ride_quotes: parking_lot::Mutex<std::collections::BTreeMap<u64, RideQuote>>,
    /// This start's number in the data dir: trip ids are `{boot}-{ride}`, unique
    /// across restarts although ride ids restart at 1.
    pub(crate) boot: u64,
    /// This replica's region and gossip, when the engine runs as one of several.
    pub(crate) region: std::sync::OnceLock<Regional>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("boot", &self.boot)
            .finish_non_exhaustive()
    }
}

fn wal_config(durability: Durability) -> WalConfig {
    WalConfig {
        segment_bytes: 16 * 1024 * 1024,
        durability,
        ..WalConfig::default()
    }
}

/// Reads, increments and writes back the boot counter in `dir`.
fn next_boot(dir: &Path) -> anyhow::Result<u64> {
    let path = dir.join("boot");
    let previous = match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e.into()),
    };
    let boot = previous + 1;
    let tmp = dir.join("boot.tmp");
    std::fs::write(&tmp, boot.to_string())?;
    std::fs::rename(&tmp, &path)?;
    Ok(boot)
}

impl Engine {
    /// Opens (or reopens, replaying the trip store) an engine over `dir`.
    pub fn open(dir: &Path, config: ApiConfig, clock: SharedClock) -> anyhow::Result<Arc<Self>> {
        config.validate().map_err(anyhow::Error::msg)?;
        std::fs::create_dir_all(dir)?;
        let boot = next_boot(dir)?;
        let wal = wal_config(config.durability);
        let index = Arc::new(DriverIndex::new(config.index.clone(), clock.clone())?);
        let eta = SpeedEta::new(config.eta_speed_mps, Duration::ZERO)?;
        let matcher = Matcher::new(
            config.matching.clone(),
            index.clone(),
            Arc::new(eta),
            Arc::new(DriverClaims::new()),
            clock.clone(),
        )?;
        let bus = WalBus::open(dir.join("bus"), wal.clone())?;
        let locations = LocationStore::open(dir, wal.clone(), clock.clone())?;
        let recovery = locations.recover(&index)?;
        let trips = Trips::open(dir.join("trips"), wal, clock.clone(), config.fares)?;
        let views = ReadModels::open(Arc::new(bus.clone()), dir.join("views"), config.durability)?;
        let shedder = LoadShedder::new("uber_api", config.shed.clone(), clock.clone())?;
        let pricing =
            PriceWire::new(config.pricing.clone(), clock.clone()).map_err(anyhow::Error::msg)?;
        Ok(Arc::new(Self {
            config,
            clock,
            index,
            matcher,
            trips,
            views: tokio::sync::Mutex::new(views),
            bus,
            locations,
            recovery,
            shedder,
            pricing,
            ride_quotes: parking_lot::Mutex::new(std::collections::BTreeMap::new()),
            boot,
            region: std::sync::OnceLock::new(),
        }))
    }

    pub fn config(&self) -> &ApiConfig {
        &self.config
    }
    pub fn index(&self) -> &Arc<DriverIndex> {
        &self.index
    }
    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }
    pub fn trips(&self) -> &Trips {
        &self.trips
    }
    /// The embedded bus (topics [`LOCATIONS_TOPIC`] and [`crate::trips::TOPIC`]).
    pub fn bus(&self) -> &WalBus {
        &self.bus
    }
    /// The location outbox (the primary store of locations).
    pub fn outbox(&self) -> &Outbox {
        self.locations.outbox()
    }

    /// The primary store of locations with its snapshots.
    pub fn locations(&self) -> &LocationStore {
        &self.locations
    }
    /// The admission gate in front of every route.
    pub fn shedder(&self) -> &LoadShedder {
        &self.shedder
    }

    /// The wire to the pricing service (quotes, signals).
    pub fn pricing(&self) -> &Arc<PriceWire> {
        &self.pricing
    }

    /// Makes this engine one region's replica (once; a second call is refused).
    pub fn attach_region(&self, regional: Regional) -> Result<(), String> {
        self.region
            .set(regional)
            .map_err(|_| "a region is attached already".to_owned())
    }

    /// This replica's region and gossip, if it is a regional replica.
    pub fn regional(&self) -> Option<&Regional> {
        self.region.get()
    }

    /// The quote ride `ride` was requested with, while the ride is live.
    pub fn ride_quote(&self, ride: u64) -> Option<RideQuote> {
        self.ride_quotes.lock().get(&ride).cloned()
    }

    /// One timer step: offer timeouts and the batch window.
    pub fn tick(&self) {
        self.matcher.tick();
    }

    /// One maintenance step: silent drivers leave the available set, hot shards
    /// split and cold ones merge, relayed outbox segments are dropped.
    pub fn maintain(&self) {
        let offline = self.index.sweep(self.config.sweep_budget);
        if offline > 0 {
            metrics::counter!("uber_drivers_gone_stale_total").increment(offline as u64);
        }
        self.pricing.maintain();
        let moves = self.index.rebalance();
        if !moves.is_empty() {
            metrics::counter!("uber_index_rebalances_total").increment(moves.len() as u64);
        }
        if let Err(error) = self.locations.compact() {
            tracing::warn!(%error, "location outbox compaction failed");
        }
        if let Err(error) =
            self.locations
                .trim_bus(&self.bus, LOCATIONS_TOPIC, self.config.bus_retention)
        {
            tracing::warn!(%error, "location bus retention failed");
        }
    }

    /// Writes a snapshot of the index (blocking file I/O: call it off the async
    /// workers); a restart replays the location outbox from it.
    pub fn snapshot_locations(&self) -> anyhow::Result<usize> {
        let snapshot = self.locations.save(&self.index)?;
        metrics::counter!("uber_location_snapshots_total").increment(1);
        Ok(snapshot.drivers.len())
    }

    /// What [`open`](Self::open) rebuilt the index from.
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    /// Publishes the outbox and trip events to the bus until `shutdown`.
    pub async fn relay(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let bus: Arc<dyn EventBus> = Arc::new(self.bus.clone());
        let locations = self.outbox().relay(bus.clone(), 64);
        let trips = self.trips.relay(bus);
        let mut every = tokio::time::interval(self.config.tick_every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            // A failed publish is retried on the next tick; the checkpoints keep
            // every entry until it went out.
            while matches!(locations.relay_once().await, Ok(n) if n > 0) {}
            if let Err(error) = trips.relay_once().await {
                tracing::warn!(%error, "trip relay failed");
            }
        }
    }

    /// Keeps `quote` with ride `ride` until the ride's trip completes or is
    /// cancelled; beyond the matcher's ride bound the oldest ride's quote goes
    /// (ride ids only grow).
    pub(crate) fn remember_quote(&self, ride: u64, quote: RideQuote) {
        let mut quotes = self.ride_quotes.lock();
        quotes.insert(ride, quote);
        while quotes.len() > self.config.matching.max_rides.max(1) {
            quotes.pop_first();
        }
    }

    pub(crate) fn trip_id(&self, ride: u64) -> String {
        format!("{}-{ride}", self.boot)
    }

    /// The ride behind a trip of this boot (older boots' rides are gone).
    pub(crate) fn ride_of(&self, trip: &str) -> Option<u64> {
        let (boot, ride) = trip.split_once('-')?;
        (boot.parse::<u64>().ok()? == self.boot)
            .then(|| ride.parse().ok())
            .flatten()
    }

    /// The read models, caught up with every appended trip event.
    pub(crate) async fn views(&self) -> Result<tokio::sync::MutexGuard<'_, ReadModels>, ApiError> {
        let mut views = self.views.lock().await;
        let relay = self.trips.relay(Arc::new(self.bus.clone()));
        loop {
            match relay.relay_once().await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(ApiError::internal(format!("trip relay: {e}"))),
            }
        }
        views.catch_up().await.map_err(trip_error)?;
        Ok(views)
    }

    /// Moves a driver's index status if it is `from` (the index and the claims
    /// agree); a driver the index lost meanwhile (it went offline) is left alone.
    pub(crate) fn move_driver(&self, driver: DriverId, from: DriverStatus, to: DriverStatus) {
        if let Err(error) = self.index.transition(driver, from, to) {
            tracing::debug!(%error, "driver status not moved");
        }
    }

    /// The driver is free again: back to available from whatever the ride left.
    pub(crate) fn free_driver(&self, driver: DriverId) {
        for from in [DriverStatus::OnTrip, DriverStatus::Dispatched] {
            if self
                .index
                .transition(driver, from, DriverStatus::Available)
                .is_ok()
            {
                return;
            }
        }
    }
}

/// The price a ride was requested at: what completion charges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RideQuote {
    /// The surge multiplier quoted (1.0 for a fallback).
    pub multiplier: f64,
    /// True when pricing could not be asked.
    pub fallback: bool,
    /// The pickup's surge cell (S2 token).
    pub cell: String,
    /// The fare quoted, surge included, before the trip's real distance and time.
    pub fare_cents: u64,
}

impl From<&Quote> for RideQuote {
    fn from(q: &Quote) -> Self {
        Self {
            multiplier: q.multiplier,
            fallback: q.fallback,
            cell: q.cell.clone(),
            fare_cents: q.fare_cents,
        }
    }
}
