//! The Uber HTTP API (issue 6, items 1, 3, 4, 7): location ingest, ride requests
//! and offers, trip commands and read models behind one axum router.
//!
//! # Role
//! [`Engine`] owns one instance's engines — the live-driver [`DriverIndex`], the
//! [`Matcher`] over it, the event-sourced [`Trips`] with their [`ReadModels`] — and
//! the location [`Outbox`] relayed to an embedded [`WalBus`]. [`router`] maps HTTP
//! onto it; [`crate::service`] serves the router and runs the timers.
//!
//! | route | does |
//! |---|---|
//! | `POST /v1/drivers/{id}/location` | one ping `{lat, lon, ts, status}` (low priority) |
//! | `POST /v1/locations` | a batch `{updates: [{driver, lat, lon, ts, status}]}` (low priority) |
//! | `POST /v1/quote` | `{pickup, dropoff}` → the pricing quote (`fallback: true` while pricing is down) |
//! | `POST /v1/rides` | `{rider, pickup, dropoff, mode}` → 201 `{ride, quote, …}` (critical) |
//! | `GET /v1/rides/{id}` | the ride's status (and its trip once accepted) |
//! | `POST /v1/rides/{id}/accept` · `/decline` | the offered driver answers `{driver}` |
//! | `POST /v1/trips/{id}/{arrived,start,complete,cancel,pay}` | trip commands |
//! | `GET /v1/trips/{id}` · `/v1/riders/{id}/trips` · `/v1/drivers/{id}/earnings` · `/v1/city` | read models |
//! | `GET /v1/drivers/{id}` | a driver's latest state (with regions: local or learned by gossip, and its region) |
//! | `GET /v1/regions` | with regions: this replica's region, cities, members, reachability, gossip counters |
//! | `POST /v1/admin/partition` | with regions: `{isolate: bool}` cuts this replica's gossip off (chaos) or heals it |
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
//! - **Restart keeps the drivers.** The index is snapshotted every
//!   `snapshot_every`; a start (graceful or after `kill -9`) restores the
//!   snapshot, replays the outbox after it and reconciles the server-owned
//!   statuses with the trip store ([`Engine::reconcile_drivers`], [`crate::locations`]).
//! - **One driver, one ride.** Offers go through the matcher's atomic claim; on
//!   accept the driver moves `available → dispatched` in the index, on start
//!   `→ on_trip`, on complete or cancel back to `available` (and the claim is
//!   released), so a dispatched driver is never offered again and a finished one is.
//! - **Shedding by priority**: pings are `low`, ride requests `critical`, the rest
//!   `normal` (an `x-priority` header cannot raise a ping); under overload pings get
//!   503 + `Retry-After` first (the kit's [`LoadShedLayer`]), an `x-deadline-ms`
//!   already passed gets 504 without running.
//! - **Precise errors** ([`ApiError`] JSON): 400 naming the field (bad JSON, NaN or
//!   out-of-range coordinates, a server-owned status), 404 for unknown rides, trips,
//!   riders and drivers, 409 for illegal transitions and stale offers, 413 over the
//!   batch limit.
//!
//! # Deliberately absent
//! - Rides survive only in memory (the matcher's table): after a restart
//!   `GET /v1/rides/{id}` is 404, while trips — event-sourced — are all there.
//! - Authentication (a driver may only move itself).
//!
//! # Pricing
//! Through [`PriceWire`]: each ride request is quoted first (the multiplier is
//! kept with the ride, written into the trip's `Requested` event on accept and
//! charged at completion; a fallback quote is 1.0), then a
//! `Demand` signal is queued; accepted available pings queue `Supply` (at most one
//! per driver per 30 s), an offline ping or a dispatch `SupplyGone`. Signals are
//! sent in batches by the service's sender task, never on a request's path.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use casebook_kit::api::{ApiError, DEFAULT_BODY_LIMIT, JsonBody, parse_json};
use casebook_kit::clock::SharedClock;
use casebook_kit::events::{Event, EventBus, WalBus};
use casebook_kit::outbox::{OutboundEvent, Outbox};
use casebook_kit::resilience::shed::{
    LoadShedLayer, LoadShedder, RequestMetaLayer, ShedConfig, handle_error,
};
use casebook_kit::resilience::{Priority, set_priority};
use casebook_kit::wal::{Durability, WalConfig};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tower::ServiceBuilder;
use tower::util::MapRequestLayer;

use crate::index::{
    DriverId, DriverIndex, DriverStatus, IndexConfig, IndexError, LatLng, LocationUpdate, MAX_BATCH,
};
use crate::locations::{LocationColumns, LocationStore, Recovery};
use crate::matching::{
    DriverClaims, MatchConfig, MatchError, Matcher, Mode, Point, RideStatus, RideView, SpeedEta,
};
use crate::pricewire::{PriceWire, PriceWireConfig};
use crate::pricing::{PricingError, Quote};
use crate::region::{DriverState, Regional};
use crate::trips::{FareSchedule, ReadModels, TripError, TripState, TripStatus, Trips};

/// The bus topic location updates are published to: `driver.locations` events
/// whose payload is [`LocationColumns`].
pub const LOCATIONS_TOPIC: &str = "driver-locations";
/// Accepted updates per outbox record (one WAL record, one bus event): keeps a
/// record far below the WAL's record limit whatever the batch size.
pub const UPDATES_PER_RECORD: usize = 1_000;
/// Largest trip distance a `complete` may report (the trip store's own bound).
pub const MAX_TRIP_DISTANCE_M: f64 = 2_000_000.0;

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
    config: ApiConfig,
    clock: SharedClock,
    index: Arc<DriverIndex>,
    matcher: Matcher,
    trips: Trips,
    views: tokio::sync::Mutex<ReadModels>,
    bus: WalBus,
    locations: LocationStore,
    /// What the index was rebuilt from at open.
    recovery: Recovery,
    shedder: LoadShedder,
    pricing: Arc<PriceWire>,
    /// The quote each live ride was requested with (ride id → quote), oldest
    /// evicted first beyond the matcher's ride bound.
    ride_quotes: parking_lot::Mutex<std::collections::BTreeMap<u64, RideQuote>>,
    /// This start's number in the data dir: trip ids are `{boot}-{ride}`, unique
    /// across restarts although ride ids restart at 1.
    boot: u64,
    /// This replica's region and gossip, when the engine runs as one of several.
    region: std::sync::OnceLock<Regional>,
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

    /// Applies driver states learned by gossip to the index: a state in this
    /// region is ingested like a ping (latest wins by the driver's timestamp);
    /// one elsewhere takes a driver this index holds out of matching (offline at
    /// that timestamp). Returns how many index updates were made.
    pub fn apply_remote(&self, states: &[DriverState]) -> usize {
        let Some(regional) = self.regional() else {
            return 0;
        };
        let mine = regional.region();
        let updates: Vec<LocationUpdate> = states
            .iter()
            .filter_map(|s| {
                let at = s.position()?;
                let status = if regional.map.region_of(at) == mine {
                    s.status
                } else if self.index.get(DriverId(s.driver)).is_some() {
                    DriverStatus::Offline
                } else {
                    return None;
                };
                Some(LocationUpdate {
                    driver: DriverId(s.driver),
                    lat: s.lat,
                    lon: s.lng,
                    ts: s.ts,
                    status,
                })
            })
            .collect();
        let mut applied = 0;
        for chunk in updates.chunks(MAX_BATCH) {
            match self.index.ingest(chunk) {
                Ok(report) => applied += report.accepted,
                Err(error) => tracing::debug!(%error, "learned driver states not applied"),
            }
        }
        applied
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

    /// Completes the index's rebuild at start ([`open`](Self::open) restored the
    /// location snapshot and replayed the outbox after it): the server-owned
    /// statuses come from the trip store — a driver with an open trip is
    /// dispatched (matched, arrived) or on trip (started), one without is not,
    /// whatever the snapshot said (those moves are not in the location log).
    /// With a region attached, drivers restored at a position in another
    /// region leave the available set (as their ping did when it came), and this
    /// region's drivers are published to the other replicas again (the gossip
    /// registers live in memory only). Returns how many drivers it moved.
    pub async fn reconcile_drivers(&self) -> anyhow::Result<usize> {
        let views = self
            .views()
            .await
            .map_err(|e| anyhow::anyhow!("trip read models: {}", e.error))?;
        let mut busy: HashMap<DriverId, DriverStatus> = HashMap::new();
        for state in views.trips().values() {
            let status = match state.status {
                TripStatus::Matched | TripStatus::DriverArrived => DriverStatus::Dispatched,
                TripStatus::Started => DriverStatus::OnTrip,
                _ => continue,
            };
            if let Some(driver) = state.driver {
                busy.insert(driver, status);
            }
        }
        drop(views);
        let regional = self.regional();
        let mut moved = 0;
        let mut local = Vec::new();
        // One pass over the index: the trips' statuses, then the region's rule.
        for saved in self.index.export() {
            let reconciled = match (saved.status.is_server_owned(), busy.get(&saved.id)) {
                (_, Some(&to)) => to,
                (true, None) if !self.config.index.is_stale(saved.age) => DriverStatus::Available,
                (true, None) => DriverStatus::Offline,
                (false, None) => saved.status,
            };
            let foreign = regional.is_some_and(|r| {
                LatLng::new(saved.lat, saved.lon).is_ok_and(|at| r.map.region_of(at) != r.region())
            });
            let to = if foreign && reconciled == DriverStatus::Available {
                DriverStatus::Offline
            } else {
                reconciled
            };
            let mut status = saved.status;
            if to != status && self.index.transition(saved.id, status, to).is_ok() {
                moved += 1;
                status = to;
            }
            if regional.is_some() && !foreign {
                local.push(DriverState {
                    driver: saved.id.0,
                    lat: saved.lat,
                    lng: saved.lon,
                    ts: saved.ts,
                    // What the driver's app last said: on duty.
                    status: if status.is_server_owned() {
                        DriverStatus::Available
                    } else {
                        status
                    },
                });
            }
        }
        if let Some(regional) = regional {
            regional.replica.publish(local);
        }
        Ok(moved)
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

    /// Validates and ingests location updates: durable in the outbox first, then
    /// the index. `base` is the JSON path prefix of the updates (for errors).
    pub async fn ingest(&self, updates: &[LocationUpdate]) -> Result<IngestReport, ApiError> {
        if updates.len() > self.config.max_batch {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "batch of {} updates is above the maximum of {}",
                    updates.len(),
                    self.config.max_batch
                ),
            ));
        }
        let mut invalid = Vec::new();
        let mut valid: Vec<usize> = Vec::with_capacity(updates.len());
        let latest_ts = self.latest_ts();
        for (i, u) in updates.iter().enumerate() {
            match check_update(u, latest_ts) {
                Ok(()) => valid.push(i),
                Err((field, error)) => invalid.push(Invalid {
                    index: i,
                    field: field.to_owned(),
                    error,
                }),
            }
        }
        // Latest wins, decided against the index as it is now, in batch order
        // per driver: only what the index will accept is logged.
        let mut by_driver = valid.clone();
        by_driver.sort_unstable_by_key(|&i| (updates[i].driver, i));
        let same_driver = |a: &usize, b: &usize| updates[*a].driver == updates[*b].driver;
        let drivers: Vec<DriverId> = by_driver
            .chunk_by(same_driver)
            .map(|run| updates[run[0]].driver)
            .collect();
        let mut keep = vec![false; updates.len()];
        for (run, current) in by_driver
            .chunk_by(same_driver)
            .zip(self.index.timestamps(&drivers))
        {
            let mut latest = current;
            for &i in run {
                if latest.is_none_or(|ts| updates[i].ts > ts) {
                    latest = Some(updates[i].ts);
                    keep[i] = true;
                }
            }
        }
        let logged: Vec<&LocationUpdate> = valid
            .iter()
            .filter(|&&i| keep[i])
            .map(|&i| &updates[i])
            .collect();
        // Registered before the commit, released after the index applied it: a
        // snapshot meanwhile replays from below this request's entries.
        let _in_flight = self.locations.begin();
        if !logged.is_empty() {
            let mut commits = tokio::task::JoinSet::new();
            for chunk in logged.chunks(UPDATES_PER_RECORD) {
                let change = json!({ "driver_locations": chunk.len() });
                // The updates are stored once, in the event: the outbox record
                // holds change and events together, so it is still the durable
                // copy of every update.
                let event = Event::new(
                    "driver.locations",
                    chunk[0].driver.0.to_string(),
                    LocationColumns::to_value(chunk.iter().copied()),
                    self.clock.as_ref(),
                );
                let outbox = self.outbox().clone();
                commits.spawn(async move {
                    outbox
                        .commit(
                            change,
                            vec![OutboundEvent {
                                topic: LOCATIONS_TOPIC.to_owned(),
                                event,
                            }],
                        )
                        .await
                });
            }
            while let Some(done) = commits.join_next().await {
                match done {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(ApiError::internal(format!("primary store: {e}"))),
                    Err(e) => return Err(ApiError::internal(format!("primary store: {e}"))),
                }
            }
        }
        let report = match self.regional() {
            None => self.index.ingest(updates),
            Some(regional) => {
                // Matching here uses only drivers whose latest state is in this
                // region: a ping from elsewhere takes the driver out (offline at
                // its timestamp); the ping itself is gossiped to its region.
                let mine = regional.region();
                let local: Vec<LocationUpdate> = updates
                    .iter()
                    .map(|u| match LatLng::new(u.lat, u.lon) {
                        Ok(at) if regional.map.region_of(at) != mine => LocationUpdate {
                            status: DriverStatus::Offline,
                            ..*u
                        },
                        _ => *u,
                    })
                    .collect();
                let report = self.index.ingest(&local);
                regional.replica.publish(logged.iter().map(|u| DriverState {
                    driver: u.driver.0,
                    lat: u.lat,
                    lng: u.lon,
                    ts: u.ts,
                    status: u.status,
                }));
                report
            }
        }
        .map_err(index_error)?;
        // Surge signals, queued (never sent from here): an offline ping is supply
        // gone; an available one is supply if the index still says available (a
        // dispatched driver's ping keeps its server-owned status).
        for u in logged.iter().filter(|u| u.status == DriverStatus::Offline) {
            self.pricing.gone(u.driver);
        }
        self.pricing.pings(
            logged
                .iter()
                .filter(|u| u.status == DriverStatus::Available)
                .filter_map(|u| Some((u.driver, LatLng::new(u.lat, u.lon).ok()?))),
            |driver| {
                self.index
                    .get(driver)
                    .is_some_and(|v| v.status == DriverStatus::Available)
            },
        );
        // Validation is the same rule on both sides; a refusal only the index
        // knows (capacity) is reported too.
        for (i, e) in report.invalid {
            if !invalid.iter().any(|v| v.index == i) {
                invalid.push(Invalid {
                    index: i,
                    field: "driver".to_owned(),
                    error: e.to_string(),
                });
            }
        }
        invalid.sort_by_key(|v| v.index);
        Ok(IngestReport {
            accepted: report.accepted,
            stale: report.stale,
            duplicate: report.duplicate,
            invalid,
        })
    }

    /// The latest driver timestamp (ms) accepted now: the injected wall clock
    /// plus the index's `max_clock_skew`.
    pub fn latest_ts(&self) -> u64 {
        self.config.index.latest_ts(self.clock.wall_millis())
    }

    /// Keeps `quote` with ride `ride` until the ride's trip completes or is
    /// cancelled; beyond the matcher's ride bound the oldest ride's quote goes
    /// (ride ids only grow).
    fn remember_quote(&self, ride: u64, quote: RideQuote) {
        let mut quotes = self.ride_quotes.lock();
        quotes.insert(ride, quote);
        while quotes.len() > self.config.matching.max_rides.max(1) {
            quotes.pop_first();
        }
    }

    fn trip_id(&self, ride: u64) -> String {
        format!("{}-{ride}", self.boot)
    }

    /// The ride behind a trip of this boot (older boots' rides are gone).
    fn ride_of(&self, trip: &str) -> Option<u64> {
        let (boot, ride) = trip.split_once('-')?;
        (boot.parse::<u64>().ok()? == self.boot)
            .then(|| ride.parse().ok())
            .flatten()
    }

    /// The read models, caught up with every appended trip event.
    async fn views(&self) -> Result<tokio::sync::MutexGuard<'_, ReadModels>, ApiError> {
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
    fn move_driver(&self, driver: DriverId, from: DriverStatus, to: DriverStatus) {
        if let Err(error) = self.index.transition(driver, from, to) {
            tracing::debug!(%error, "driver status not moved");
        }
    }

    /// The driver is free again: back to available from whatever the ride left.
    fn free_driver(&self, driver: DriverId) {
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

/// One update of a `POST /v1/locations` batch, as posted (logged and published
/// as [`LocationColumns`]). An unknown field is refused, as at the top level.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationRecord {
    pub driver: DriverId,
    pub lat: f64,
    pub lon: f64,
    pub ts: u64,
    pub status: StatusName,
}

impl From<&LocationRecord> for LocationUpdate {
    fn from(r: &LocationRecord) -> Self {
        Self {
            driver: r.driver,
            lat: r.lat,
            lon: r.lon,
            ts: r.ts,
            status: r.status.into(),
        }
    }
}

/// A driver status on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusName {
    Offline,
    Available,
    Dispatched,
    OnTrip,
}

impl From<StatusName> for DriverStatus {
    fn from(s: StatusName) -> Self {
        match s {
            StatusName::Offline => Self::Offline,
            StatusName::Available => Self::Available,
            StatusName::Dispatched => Self::Dispatched,
            StatusName::OnTrip => Self::OnTrip,
        }
    }
}

impl From<DriverStatus> for StatusName {
    fn from(s: DriverStatus) -> Self {
        match s {
            DriverStatus::Offline => Self::Offline,
            DriverStatus::Available => Self::Available,
            DriverStatus::Dispatched => Self::Dispatched,
            DriverStatus::OnTrip => Self::OnTrip,
        }
    }
}

/// The field at fault and why; `latest_ts` is [`Engine::latest_ts`].
fn check_update(u: &LocationUpdate, latest_ts: u64) -> Result<(), (&'static str, String)> {
    match LatLng::new(u.lat, u.lon) {
        Err(e @ IndexError::InvalidLatitude { .. }) => return Err(("lat", e.to_string())),
        Err(e) => return Err(("lon", e.to_string())),
        Ok(_) => {}
    }
    if u.ts > latest_ts {
        let e = IndexError::FutureTimestamp {
            ts: u.ts,
            latest: latest_ts,
        };
        return Err(("ts", e.to_string()));
    }
    if u.status.is_server_owned() {
        return Err((
            "status",
            IndexError::ServerOwnedStatus { status: u.status }.to_string(),
        ));
    }
    Ok(())
}

/// One refused update of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invalid {
    /// Its index in the batch.
    pub index: usize,
    /// The field at fault.
    pub field: String,
    pub error: String,
}

/// What a location request did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestReport {
    pub accepted: usize,
    pub stale: usize,
    pub duplicate: usize,
    pub invalid: Vec<Invalid>,
}

fn index_error(e: IndexError) -> ApiError {
    match e {
        IndexError::BatchTooLarge { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
        }
        IndexError::UnknownDriver { .. } => ApiError::not_found(e.to_string()),
        IndexError::WrongStatus { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        IndexError::TooManyDrivers { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        IndexError::InvalidLatitude { .. } => ApiError::bad_field("lat", e.to_string()),
        IndexError::InvalidLongitude { .. } => ApiError::bad_field("lon", e.to_string()),
        IndexError::ServerOwnedStatus { .. } => ApiError::bad_field("status", e.to_string()),
        IndexError::FutureTimestamp { .. } => ApiError::bad_field("ts", e.to_string()),
        _ => ApiError::bad_request(e.to_string()),
    }
}

fn match_error(e: MatchError) -> ApiError {
    match e {
        MatchError::UnknownRide(_) => ApiError::not_found(e.to_string()),
        MatchError::NoSuchOffer { .. } | MatchError::Finished(_) => {
            ApiError::new(StatusCode::CONFLICT, e.to_string())
        }
        MatchError::QueueFull(_) | MatchError::TooManyRides(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        MatchError::BadLocation { .. } | MatchError::BadConfig(_) => {
            ApiError::bad_request(e.to_string())
        }
    }
}

fn trip_error(e: TripError) -> ApiError {
    match e {
        TripError::UnknownTrip(_) => ApiError::not_found(e.to_string()),
        TripError::IllegalTransition { .. } | TripError::Conflict { .. } => {
            ApiError::new(StatusCode::CONFLICT, e.to_string())
        }
        TripError::BadInput(_) => ApiError::bad_request(e.to_string()),
        TripError::Store(_) => ApiError::internal(e.to_string()),
    }
}

fn parse_id(field: &str, raw: &str) -> Result<u64, ApiError> {
    raw.parse::<u64>().map_err(|_| {
        ApiError::bad_field(
            field,
            format!("{field} must be an unsigned integer, not {raw:?}"),
        )
    })
}

// ---------------------------------------------------------------- the router

type Shared = State<Arc<Engine>>;

/// Every route of the API, behind the priority shedder.
pub fn router(engine: Arc<Engine>) -> Router {
    let batch_body = engine
        .config
        .max_batch
        .saturating_mul(256)
        .max(DEFAULT_BODY_LIMIT);
    let shed = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(handle_error))
        .layer(RequestMetaLayer::new(engine.clock.clone()))
        .layer(MapRequestLayer::new(route_priority))
        .layer(LoadShedLayer::shared(engine.shedder.clone()));
    Router::new()
        .route("/v1/drivers/{id}/location", post(post_location))
        .route(
            "/v1/locations",
            post(post_locations).layer(DefaultBodyLimit::max(batch_body)),
        )
        .route("/v1/quote", post(post_quote))
        .route("/v1/rides", post(post_ride))
        .route("/v1/rides/{id}", get(get_ride))
        .route("/v1/rides/{id}/{action}", post(ride_action))
        .route("/v1/trips/{id}", get(get_trip))
        .route("/v1/trips/{id}/{action}", post(trip_action))
        .route("/v1/riders/{id}/trips", get(rider_trips))
        .route("/v1/drivers/{id}", get(get_driver))
        .route("/v1/drivers/{id}/earnings", get(driver_earnings))
        .route("/v1/regions", get(get_regions))
        .route("/v1/admin/partition", post(post_partition))
        .route("/v1/city", get(city))
        .layer(shed)
        .with_state(engine)
}

/// The route decides the priority: pings are low (the next ping supersedes a
/// shed one), ride requests critical; elsewhere the `x-priority` header stands.
fn route_priority<B>(mut request: Request<B>) -> Request<B> {
    let path = request.uri().path();
    let is_post = request.method() == axum::http::Method::POST;
    let priority = if is_post && (path == "/v1/locations" || path.ends_with("/location")) {
        Some(Priority::Low)
    } else if is_post && path == "/v1/rides" {
        Some(Priority::Critical)
    } else {
        None
    };
    if let Some(p) = priority {
        set_priority(&mut request, p);
    }
    request
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocationBody {
    lat: f64,
    lon: f64,
    ts: u64,
    status: StatusName,
}

async fn post_location(
    State(engine): Shared,
    UrlPath(id): UrlPath<String>,
    JsonBody(body): JsonBody<LocationBody>,
) -> Result<Response, ApiError> {
    let driver = parse_id("id", &id)?;
    let update = LocationUpdate {
        driver: DriverId(driver),
        lat: body.lat,
        lon: body.lon,
        ts: body.ts,
        status: body.status.into(),
    };
    if let Err((field, error)) = check_update(&update, engine.latest_ts()) {
        return Err(ApiError::bad_field(field, error));
    }
    let report = engine.ingest(&[update]).await?;
    Ok(axum::Json(report).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    updates: Vec<LocationRecord>,
}

async fn post_locations(
    State(engine): Shared,
    JsonBody(body): JsonBody<BatchBody>,
) -> Result<Response, ApiError> {
    let updates: Vec<LocationUpdate> = body.updates.iter().map(LocationUpdate::from).collect();
    // A clock far ahead is the sender's fault, not one driver's: the whole
    // batch is refused (nothing logged), naming the first such record.
    let latest_ts = engine.latest_ts();
    if let Some(i) = updates.iter().position(|u| u.ts > latest_ts) {
        let e = IndexError::FutureTimestamp {
            ts: updates[i].ts,
            latest: latest_ts,
        };
        return Err(ApiError::bad_field(format!("updates[{i}].ts"), e.to_string()));
    }
    let mut report = engine.ingest(&updates).await?;
    for v in &mut report.invalid {
        v.field = format!("updates[{}].{}", v.index, v.field);
    }
    Ok(axum::Json(report).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RideBody {
    rider: u64,
    pickup: Point,
    dropoff: Point,
    #[serde(default = "greedy")]
    mode: Mode,
}

fn greedy() -> Mode {
    Mode::Greedy
}

fn check_point(field: &str, p: Point) -> Result<Point, ApiError> {
    if !(-90.0..=90.0).contains(&p.lat) {
        return Err(ApiError::bad_field(
            format!("{field}.lat"),
            format!("latitude {} is not in [-90, 90]", p.lat),
        ));
    }
    if !(-180.0..=180.0).contains(&p.lng) {
        return Err(ApiError::bad_field(
            format!("{field}.lng"),
            format!("longitude {} is not in [-180, 180]", p.lng),
        ));
    }
    Ok(p)
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

/// A ride as the API shows it: the matcher's view, its quote while the ride is
/// live, and its trip once accepted.
#[derive(Debug, Serialize)]
struct RideOut {
    #[serde(flatten)]
    view: RideView,
    quote: Option<RideQuote>,
    trip: Option<String>,
}

fn ride_out(engine: &Engine, view: RideView) -> RideOut {
    let trip = matches!(
        view.status,
        RideStatus::Accepted { .. } | RideStatus::Finished
    )
    .then(|| engine.trip_id(view.id));
    let quote = engine.ride_quote(view.id);
    RideOut { view, quote, trip }
}

fn pricing_error(e: PricingError) -> ApiError {
    match e {
        PricingError::Rejected { error, field, .. } => ApiError {
            field,
            ..ApiError::bad_request(error)
        },
        PricingError::Unavailable { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    }
}

fn lat_lng_of(field: &str, p: Point) -> Result<LatLng, ApiError> {
    let p = check_point(field, p)?;
    LatLng::new(p.lat, p.lng)
        .map_err(|e| ApiError::bad_field(format!("{field}.lat"), e.to_string()))
}

/// The region rules for a ride: the pickup must be ours; a dropoff in another
/// region needs that region reachable.
fn check_regions(regional: &Regional, pickup: LatLng, dropoff: LatLng) -> Result<(), ApiError> {
    let mine = regional.region();
    let owner = regional.map.region_of(pickup);
    if owner != mine {
        return Err(ApiError {
            field: Some("pickup".to_owned()),
            ..ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "pickup is in region {owner}, this replica serves {mine}: \
                     request the ride from region {owner}'s replica"
                ),
            )
        });
    }
    let to = regional.map.region_of(dropoff);
    if to != mine && !regional.replica.reachable(to) {
        metrics::counter!("uber_cross_region_refused_total").increment(1);
        return Err(ApiError {
            field: Some("dropoff".to_owned()),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "region {to} unreachable: cross-region trips refused until the partition heals"
                ),
            )
        });
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuoteBody {
    pickup: Point,
    dropoff: Point,
}

async fn post_quote(
    State(engine): Shared,
    JsonBody(body): JsonBody<QuoteBody>,
) -> Result<Response, ApiError> {
    let pickup = lat_lng_of("pickup", body.pickup)?;
    let dropoff = lat_lng_of("dropoff", body.dropoff)?;
    let quote = engine
        .pricing
        .quote(pickup, dropoff)
        .await
        .map_err(pricing_error)?;
    Ok(axum::Json(quote).into_response())
}

async fn post_ride(
    State(engine): Shared,
    JsonBody(body): JsonBody<RideBody>,
) -> Result<Response, ApiError> {
    let pickup = check_point("pickup", body.pickup)?;
    let dropoff = check_point("dropoff", body.dropoff)?;
    let (from, to) = (
        lat_lng_of("pickup", pickup)?,
        lat_lng_of("dropoff", dropoff)?,
    );
    if let Some(regional) = engine.regional() {
        check_regions(regional, from, to)?;
    }
    // The price is fixed now, before matching: what the rider was shown is what
    // completion charges. Pricing down answers the fallback, not an error.
    let quote = engine
        .pricing
        .quote(from, to)
        .await
        .map_err(pricing_error)?;
    let id = engine
        .matcher
        .request(body.rider, pickup, dropoff, body.mode)
        .map_err(match_error)?;
    engine.remember_quote(id, RideQuote::from(&quote));
    engine.pricing.demand(from);
    let view = engine.matcher.status(id).map_err(match_error)?;
    Ok((StatusCode::CREATED, axum::Json(ride_out(&engine, view))).into_response())
}

async fn get_ride(
    State(engine): Shared,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let ride = parse_id("id", &id)?;
    let view = engine.matcher.status(ride).map_err(match_error)?;
    Ok(axum::Json(ride_out(&engine, view)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DriverBody {
    driver: DriverId,
}

async fn ride_action(
    State(engine): Shared,
    UrlPath((id, action)): UrlPath<(String, String)>,
    JsonBody(body): JsonBody<DriverBody>,
) -> Result<Response, ApiError> {
    let ride = parse_id("id", &id)?;
    match action.as_str() {
        "accept" => {
            let view = engine
                .matcher
                .accept(ride, body.driver)
                .map_err(match_error)?;
            let RideStatus::Accepted { driver, eta } = view.status else {
                return Err(ApiError::internal("accepted ride not in accepted state"));
            };
            engine.move_driver(driver, DriverStatus::Available, DriverStatus::Dispatched);
            engine.pricing.gone(driver);
            let trip = engine.trip_id(ride);
            let recorded = async {
                // The quoted multiplier goes into the trip's first event: what
                // completion charges survives a restart with the trip. A service
                // answering out of range is clamped, not trusted.
                let quoted = engine
                    .ride_quote(ride)
                    .map(|q| q.multiplier)
                    .filter(|m| m.is_finite())
                    .map(|m| m.clamp(1.0, crate::trips::MAX_SURGE));
                engine
                    .trips
                    .request_quoted(
                        &trip,
                        view.rider,
                        &engine.config.city,
                        view.pickup,
                        view.dropoff,
                        quoted,
                    )
                    .await?;
                engine
                    .trips
                    .matched(&trip, driver, eta.as_millis() as u64)
                    .await
            };
            if let Err(e) = recorded.await {
                // Without its trip the match is void: give the driver back.
                let _ = engine.matcher.cancel(ride);
                engine.free_driver(driver);
                return Err(trip_error(e));
            }
            Ok(axum::Json(ride_out(&engine, view)).into_response())
        }
        "decline" => {
            engine
                .matcher
                .decline(ride, body.driver)
                .map_err(match_error)?;
            let view = engine.matcher.status(ride).map_err(match_error)?;
            Ok(axum::Json(ride_out(&engine, view)).into_response())
        }
        other => Err(ApiError::not_found(format!(
            "no ride action {other:?} (accept, decline)"
        ))),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TripBody {
    /// `complete`: metres driven (the multiplier is the one quoted at request).
    distance_m: Option<f64>,
    /// `cancel`: why.
    reason: Option<String>,
}

/// A trip as the API shows it.
#[derive(Debug, Serialize)]
struct TripOut {
    id: String,
    #[serde(flatten)]
    state: TripState,
}

async fn trip_action(
    State(engine): Shared,
    UrlPath((trip, action)): UrlPath<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // Read by hand because the body is optional (`arrived`, `start`, `pay` need
    // none); a refused body is still answered in the JSON error format.
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(status, "request body is too large")
        } else {
            ApiError::new(status, rejection.body_text())
        }
    })?;
    let body: TripBody = if body.iter().all(u8::is_ascii_whitespace) {
        TripBody::default()
    } else {
        parse_json(&body)?
    };
    let (state, _) = engine.trips.load(&trip).await.map_err(trip_error)?;
    if state.status == TripStatus::New {
        return Err(ApiError::not_found(format!("unknown trip {trip}")));
    }
    let trips = &engine.trips;
    match action.as_str() {
        "arrived" => {
            trips.arrived(&trip).await.map_err(trip_error)?;
        }
        "start" => {
            trips.started(&trip).await.map_err(trip_error)?;
            if let Some(driver) = state.driver {
                engine.move_driver(driver, DriverStatus::Dispatched, DriverStatus::OnTrip);
            }
        }
        "complete" => {
            let distance_m = body.distance_m.ok_or_else(|| {
                ApiError::bad_field("distance_m", "complete needs distance_m (metres driven)")
            })?;
            if !(distance_m.is_finite() && (0.0..=MAX_TRIP_DISTANCE_M).contains(&distance_m)) {
                return Err(ApiError::bad_field(
                    "distance_m",
                    format!("distance_m {distance_m} is not in [0, {MAX_TRIP_DISTANCE_M}]"),
                ));
            }
            // The multiplier quoted when the ride was requested, recorded in
            // the trip (so a restart keeps it); a trip from before pricing was
            // called is charged flat.
            let surge = state.quoted_surge.unwrap_or(1.0);
            trips
                .completed(&trip, distance_m, surge)
                .await
                .map_err(trip_error)?;
            release(&engine, &trip, state.driver, false);
        }
        "cancel" => {
            let reason = body.reason.unwrap_or_else(|| "cancelled".to_owned());
            if reason.len() > 256 {
                return Err(ApiError::bad_field("reason", "longer than 256 bytes"));
            }
            trips.cancel(&trip, &reason).await.map_err(trip_error)?;
            release(&engine, &trip, state.driver, true);
        }
        "pay" => {
            trips.paid(&trip).await.map_err(trip_error)?;
        }
        other => {
            return Err(ApiError::not_found(format!(
                "no trip action {other:?} (arrived, start, complete, cancel, pay)"
            )));
        }
    }
    let (state, _) = engine.trips.load(&trip).await.map_err(trip_error)?;
    Ok(axum::Json(TripOut { id: trip, state }).into_response())
}

/// The trip is over for its driver: the claim released, the index status back.
fn release(engine: &Engine, trip: &str, driver: Option<DriverId>, cancelled: bool) {
    if let Some(ride) = engine.ride_of(trip) {
        engine.ride_quotes.lock().remove(&ride);
        let closed = if cancelled {
            engine.matcher.cancel(ride)
        } else {
            engine.matcher.finish(ride)
        };
        if let Err(error) = closed {
            tracing::debug!(%error, "ride already closed");
        }
    }
    if let Some(driver) = driver {
        engine.free_driver(driver);
    }
}

async fn get_trip(
    State(engine): Shared,
    UrlPath(trip): UrlPath<String>,
) -> Result<Response, ApiError> {
    let views = engine.views().await?;
    let state = views
        .trip(&trip)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("unknown trip {trip}")))?;
    Ok(axum::Json(TripOut { id: trip, state }).into_response())
}

/// `GET /v1/riders/{id}/trips?limit=N`: the rider's latest `N` trips, oldest
/// first (default [`DEFAULT_TRIPS_PAGE`], at most [`MAX_TRIPS_PAGE`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TripsPage {
    limit: Option<String>,
}

/// Trips `GET /v1/riders/{id}/trips` answers when no `limit` is given.
pub const DEFAULT_TRIPS_PAGE: usize = 100;
/// The largest `limit` of `GET /v1/riders/{id}/trips`: a rider's history grows
/// without bound, one answer does not.
pub const MAX_TRIPS_PAGE: usize = 1_000;

async fn rider_trips(
    State(engine): Shared,
    UrlPath(id): UrlPath<String>,
    page: Result<Query<TripsPage>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let rider = parse_id("id", &id)?;
    let Query(page) = page.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = match page.limit {
        None => DEFAULT_TRIPS_PAGE,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_TRIPS_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_field(
                    "limit",
                    format!("limit must be in 1..={MAX_TRIPS_PAGE}, not {raw:?}"),
                ));
            }
        },
    };
    let views = engine.views().await?;
    let ids = views.rider_trips(rider);
    if ids.is_empty() {
        return Err(ApiError::not_found(format!("unknown rider {rider}")));
    }
    let total = ids.len();
    let trips: Vec<TripOut> = ids[total.saturating_sub(limit)..]
        .iter()
        .filter_map(|id| {
            views.trip(id).map(|state| TripOut {
                id: id.clone(),
                state: state.clone(),
            })
        })
        .collect();
    Ok(axum::Json(json!({ "rider": rider, "total": total, "trips": trips })).into_response())
}

async fn driver_earnings(
    State(engine): Shared,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let driver = DriverId(parse_id("id", &id)?);
    let views = engine.views().await?;
    let known = engine.index.get(driver);
    let earnings = views.earnings(driver);
    if known.is_none() && !views.all_earnings().contains_key(&driver) {
        return Err(ApiError::not_found(format!("unknown driver {driver}")));
    }
    Ok(axum::Json(json!({
        "driver": driver,
        "trips": earnings.trips,
        "fare_cents": earnings.fare_cents,
        "status": known.map(|v| StatusName::from(v.status)),
    }))
    .into_response())
}

/// A driver's latest state: as this replica's index has it (position, status —
/// the server-owned ones included —, the driver's timestamp, how long ago its
/// last update arrived), or as gossip brought it when that is newer; with
/// regions, also the region and city of its position and whether it can be
/// matched here.
async fn get_driver(
    State(engine): Shared,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let driver = parse_id("id", &id)?;
    let in_index = engine.index.get(DriverId(driver));
    let register = engine
        .regional()
        .and_then(|regional| regional.replica.driver(driver));
    let mut out = match (&in_index, &register) {
        (Some(view), register) if register.as_ref().is_none_or(|r| r.state.ts <= view.ts) => {
            let age = engine.clock.now().saturating_duration_since(view.last_seen);
            // The same update may have come by gossip (the index took it then).
            let source = match register {
                Some(r) if r.state.ts == view.ts && !r.local => "gossip",
                _ => "local",
            };
            json!({
                "driver": driver,
                "lat": view.position.lat(),
                "lon": view.position.lon(),
                "ts": view.ts,
                "status": StatusName::from(view.status),
                "age_ms": u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
                "source": source,
            })
        }
        (_, Some(register)) => {
            let s = register.state;
            json!({
                "driver": driver,
                "lat": s.lat,
                "lon": s.lng,
                "ts": s.ts,
                "status": StatusName::from(s.status),
                "source": if register.local { "local" } else { "gossip" },
            })
        }
        (None, None) | (Some(_), None) => {
            return Err(ApiError::not_found(format!("unknown driver {driver}")));
        }
    };
    out["matchable_here"] = json!(in_index.is_some_and(|v| v.status == DriverStatus::Available));
    if let Some(regional) = engine.regional() {
        let at = LatLng::new(
            out["lat"].as_f64().unwrap_or(f64::NAN),
            out["lon"].as_f64().unwrap_or(f64::NAN),
        );
        if let Ok(at) = at {
            out["region"] = json!(regional.map.region_of(at));
            out["city"] = json!(regional.map.city_of(at).map(|c| c.name.clone()));
        }
        out["replica"] = json!(regional.region());
    }
    Ok(axum::Json(out).into_response())
}

fn regional_of(engine: &Engine) -> Result<&Regional, ApiError> {
    engine
        .regional()
        .ok_or_else(|| ApiError::not_found("this instance runs without regions"))
}

fn regions_view(regional: &Regional) -> serde_json::Value {
    let reachable: serde_json::Map<String, serde_json::Value> = regional
        .map
        .regions()
        .iter()
        .map(|r| (r.clone(), json!(regional.replica.reachable(r))))
        .collect();
    json!({
        "region": regional.region(),
        "gossip_addr": regional.replica.addr(),
        "isolated": regional.replica.is_isolated(),
        "cities": regional.map.cities().iter().filter(|c| c.region == regional.region()).collect::<Vec<_>>(),
        "reachable": reachable,
        "members": regional.replica.members(),
        "gossip": regional.replica.stats(),
    })
}

async fn get_regions(State(engine): Shared) -> Result<Response, ApiError> {
    let regional = regional_of(&engine)?;
    Ok(axum::Json(regions_view(regional)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitionBody {
    isolate: bool,
}

async fn post_partition(
    State(engine): Shared,
    JsonBody(body): JsonBody<PartitionBody>,
) -> Result<Response, ApiError> {
    let regional = regional_of(&engine)?;
    regional.replica.set_isolated(body.isolate);
    tracing::warn!(region = %regional.region(), isolate = body.isolate, "gossip partition switch");
    Ok(axum::Json(regions_view(regional)).into_response())
}

async fn city(State(engine): Shared) -> Result<Response, ApiError> {
    let views = engine.views().await?;
    let city = &engine.config.city;
    Ok(axum::Json(json!({
        "city": city,
        "trips": views.city(city),
        "drivers": engine.index.driver_count(),
        "queued_rides": engine.matcher.queued(),
    }))
    .into_response())
}
