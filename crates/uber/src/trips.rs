//! Trips, event-sourced: every change to a trip is an event appended to the kit's
//! [`EventStore`] (on its WAL) with optimistic concurrency; a trip's state is the
//! fold of its events; read models are projections with checkpoints.
//!
//! # Events and transitions
//! `Requested → Matched → DriverArrived → Started → Completed → Paid`, and
//! `Cancelled` from `Requested`, `Matched` or `DriverArrived`. [`transition`] is the
//! whole table; every command checks it against the replayed state and refuses
//! anything else with [`TripError::IllegalTransition`] before appending.
//!
//! # Guarantees
//! - **Optimistic concurrency.** [`Trips::append`] takes the version the caller
//!   decided on; if the trip moved meanwhile the append is refused
//!   ([`TripError::Conflict`]), nothing is merged. The convenience commands
//!   ([`Trips::matched`], ...) load, decide and append at the loaded version, so two
//!   racing commands on one trip cannot both land.
//! - **Durable and replayable.** An append is on disk when it returns; reopening
//!   the store replays snapshots and events into identical state.
//! - **Fares are facts.** The fare is computed once, at completion (base + per km +
//!   per minute, times the surge multiplier passed in), and stored in the
//!   `Completed` event with its inputs; replay and projections read it, never
//!   recompute it, so a later tariff change cannot rewrite history.
//! - **Read models** ([`ReadModels`]: trip by id, a rider's trips, a driver's
//!   earnings, a city view of counts by state) are kept by the kit's
//!   [`ProjectionRunner`]s, each saving its state with its offset atomically, so a
//!   restart resumes where it stopped and re-published events apply once. Each
//!   equals a rebuild from offset 0.
//!
//! # Deliberately absent
//! - Payments themselves: `Paid` records that the fare was charged; the charge is
//!   another service's job.
//! - Dropping or compacting old trips from the store; read models keep every trip
//!   except the city view, which forgets trips once they are final (paid or
//!   cancelled) and keeps only their counts.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use casebook_kit::clock::SharedClock;
use casebook_kit::event_store::{
    Aggregate, EventStore, EventStoreConfig, EventStoreError, Projection, ProjectionRunner,
};
use casebook_kit::events::{Delivery, Event, EventBus};
use casebook_kit::outbox::Relay;
use casebook_kit::wal::{Durability, WalConfig};
use serde::{Deserialize, Serialize};

use crate::index::LatLng;
use crate::matching::{DriverId, RiderId};

/// The topic trip events are published to.
pub const TOPIC: &str = "trips";
/// A trip is snapshotted every this many events: a completed trip (6 events) is
/// then loaded from a snapshot plus at most 3 events, and keeps no more than
/// that in memory.
pub const SNAPSHOT_EVERY: u64 = 4;
/// Highest surge multiplier accepted.
pub const MAX_SURGE: f64 = 10.0;

/// What happened to a trip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TripEvent {
    Requested {
        rider: RiderId,
        city: String,
        pickup: LatLng,
        dropoff: LatLng,
        /// The surge multiplier quoted to the rider when the ride was requested:
        /// what completion charges. Absent in logs written before pricing was
        /// called (those trips are charged what `completed` is given).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quoted_surge: Option<f64>,
    },
    Matched {
        driver: DriverId,
        eta_ms: u64,
    },
    DriverArrived,
    Started,
    Completed {
        driver: DriverId,
        distance_m: f64,
        duration_s: u64,
        surge: f64,
        fare_cents: u64,
    },
    Cancelled {
        reason: String,
    },
    Paid {
        amount_cents: u64,
    },
}

impl TripEvent {
    /// The event type on the bus.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Requested { .. } => "trip.requested",
            Self::Matched { .. } => "trip.matched",
            Self::DriverArrived => "trip.driver_arrived",
            Self::Started => "trip.started",
            Self::Completed { .. } => "trip.completed",
            Self::Cancelled { .. } => "trip.cancelled",
            Self::Paid { .. } => "trip.paid",
        }
    }

    fn decode(event: &Event) -> Option<Self> {
        serde_json::from_value(event.payload.clone()).ok()
    }
}

/// Where a trip stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TripStatus {
    /// No events yet.
    #[default]
    New,
    Requested,
    Matched,
    DriverArrived,
    Started,
    Completed,
    Cancelled,
    Paid,
}

impl TripStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Requested => "requested",
            Self::Matched => "matched",
            Self::DriverArrived => "driver_arrived",
            Self::Started => "started",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Paid => "paid",
        }
    }

    /// No event may follow.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Paid | Self::Cancelled)
    }
}

impl fmt::Display for TripStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The transition table: the status after `event` from `from`, or `None` if the
/// event is illegal there.
pub fn transition(from: TripStatus, event: &TripEvent) -> Option<TripStatus> {
    use TripStatus as S;
    Some(match (from, event) {
        (S::New, TripEvent::Requested { .. }) => S::Requested,
        (S::Requested, TripEvent::Matched { .. }) => S::Matched,
        (S::Matched, TripEvent::DriverArrived) => S::DriverArrived,
        (S::DriverArrived, TripEvent::Started) => S::Started,
        (S::Started, TripEvent::Completed { .. }) => S::Completed,
        (S::Completed, TripEvent::Paid { .. }) => S::Paid,
        (S::Requested | S::Matched | S::DriverArrived, TripEvent::Cancelled { .. }) => S::Cancelled,
        _ => return None,
    })
}

/// A trip, as the fold of its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TripState {
    pub status: TripStatus,
    pub rider: Option<RiderId>,
    pub city: String,
    pub pickup: Option<LatLng>,
    pub dropoff: Option<LatLng>,
    pub driver: Option<DriverId>,
    pub eta_ms: Option<u64>,
    pub requested_ms: Option<u64>,
    pub started_ms: Option<u64>,
    pub completed_ms: Option<u64>,
    pub distance_m: Option<f64>,
    pub surge: Option<f64>,
    /// The multiplier quoted at request time, if the trip was requested with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quoted_surge: Option<f64>,
    pub fare_cents: Option<u64>,
    pub paid_cents: Option<u64>,
    pub cancel_reason: Option<String>,
    /// Events in the log that the table refuses or that do not decode. [`Trips`]
    /// never writes one; a non-zero count means someone else wrote to the log.
    pub skipped: u64,
}

impl TripState {
    fn fold(&mut self, event: &TripEvent, time_ms: u64) {
        let Some(next) = transition(self.status, event) else {
            self.skipped += 1;
            return;
        };
        self.status = next;
        match event {
            TripEvent::Requested {
                rider,
                city,
                pickup,
                dropoff,
                quoted_surge,
            } => {
                self.quoted_surge = *quoted_surge;
                self.rider = Some(*rider);
                self.city = city.clone();
                self.pickup = Some(*pickup);
                self.dropoff = Some(*dropoff);
                self.requested_ms = Some(time_ms);
            }
            TripEvent::Matched { driver, eta_ms } => {
                self.driver = Some(*driver);
                self.eta_ms = Some(*eta_ms);
            }
            TripEvent::DriverArrived => {}
            TripEvent::Started => self.started_ms = Some(time_ms),
            TripEvent::Completed {
                distance_m,
                surge,
                fare_cents,
                ..
            } => {
                self.completed_ms = Some(time_ms);
                self.distance_m = Some(*distance_m);
                self.surge = Some(*surge);
                self.fare_cents = Some(*fare_cents);
            }
            TripEvent::Cancelled { reason } => self.cancel_reason = Some(reason.clone()),
            TripEvent::Paid { amount_cents } => self.paid_cents = Some(*amount_cents),
        }
    }
}

impl Aggregate for TripState {
    fn apply(&mut self, event: &Event) {
        match TripEvent::decode(event) {
            Some(decoded) => self.fold(&decoded, event.time_ms),
            None => self.skipped += 1,
        }
    }
}

/// The tariff: fare = (base + per_km × km + per_minute × minutes) × surge, in cents.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FareSchedule {
    pub base_cents: u64,
    pub per_km_cents: u64,
    pub per_minute_cents: u64,
}

impl Default for FareSchedule {
    fn default() -> Self {
        Self {
            base_cents: 250,
            per_km_cents: 120,
            per_minute_cents: 30,
        }
    }
}

impl FareSchedule {
    /// The fare in cents, rounded to the nearest cent.
    pub fn fare_cents(&self, distance_m: f64, duration_s: u64, surge: f64) -> u64 {
        let raw = self.base_cents as f64
            + self.per_km_cents as f64 * distance_m / 1000.0
            + self.per_minute_cents as f64 * duration_s as f64 / 60.0;
        (raw * surge).round() as u64
    }
}

/// What can go wrong with a trip command.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TripError {
    #[error("trip {trip}: {event} is not allowed when {from}")]
    IllegalTransition {
        trip: String,
        from: TripStatus,
        event: &'static str,
    },
    #[error("trip {trip} is at version {actual}, not the expected {expected}")]
    Conflict {
        trip: String,
        expected: u64,
        actual: u64,
    },
    #[error("unknown trip {0}")]
    UnknownTrip(String),
    #[error("bad input: {0}")]
    BadInput(String),
    #[error(transparent)]
    Store(EventStoreError),
}

impl From<EventStoreError> for TripError {
    fn from(error: EventStoreError) -> Self {
        match error {
            EventStoreError::Conflict {
                aggregate,
                expected,
                actual,
            } => Self::Conflict {
                trip: aggregate,
                expected,
                actual,
            },
            other => Self::Store(other),
        }
    }
}

fn bad(message: impl Into<String>) -> TripError {
    TripError::BadInput(message.into())
}

fn validate_id(what: &str, id: &str) -> Result<(), TripError> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "{what} must be 1-64 characters from [A-Za-z0-9._-], not {id:?}"
        )))
    }
}

/// The trip service: commands in, events appended. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Trips {
    store: EventStore<TripState>,
    clock: SharedClock,
    fares: FareSchedule,
}

impl Trips {
    /// Opens (or reopens, replaying) the trip store in `dir`.
    pub fn open(
        dir: impl AsRef<Path>,
        wal: WalConfig,
        clock: SharedClock,
        fares: FareSchedule,
    ) -> Result<Self, TripError> {
        let store = EventStore::open(
            dir,
            EventStoreConfig {
                topic: TOPIC.into(),
                snapshot_every: SNAPSHOT_EVERY,
                wal,
            },
        )?;
        Ok(Self {
            store,
            clock,
            fares,
        })
    }

    /// A trip's state and version (version 0: no such trip).
    pub async fn load(&self, trip: &str) -> Result<(TripState, u64), TripError> {
        validate_id("trip id", trip)?;
        Ok(self.store.load(trip).await)
    }

    /// The relay that publishes appended events to `bus` (for the read models).
    pub fn relay(&self, bus: Arc<dyn EventBus>) -> Relay {
        self.store.relay(bus, 512)
    }

    /// Appends `event` if the trip is at `expected_version` and the transition
    /// table allows it there. Returns the new version.
    pub async fn append(
        &self,
        trip: &str,
        expected_version: u64,
        event: TripEvent,
    ) -> Result<u64, TripError> {
        validate_id("trip id", trip)?;
        validate_event(&event)?;
        let (state, version) = self.store.load(trip).await;
        if version != expected_version {
            return Err(TripError::Conflict {
                trip: trip.to_string(),
                expected: expected_version,
                actual: version,
            });
        }
        if transition(state.status, &event).is_none() {
            return Err(TripError::IllegalTransition {
                trip: trip.to_string(),
                from: state.status,
                event: event.event_type(),
            });
        }
        let payload = serde_json::to_value(&event).expect("a trip event always serialises");
        let stored = Event::new(event.event_type(), trip, payload, self.clock.as_ref());
        // The store re-checks the version under its per-aggregate lock: a command
        // that raced us between the load above and here is refused, not merged.
        Ok(self
            .store
            .append(trip, expected_version, vec![stored])
            .await?)
    }

    /// Loads, builds the event from the current state, appends at that version.
    async fn command(
        &self,
        trip: &str,
        build: impl FnOnce(&TripState) -> Result<TripEvent, TripError>,
    ) -> Result<(TripEvent, u64), TripError> {
        let (state, version) = self.load(trip).await?;
        let event = build(&state)?;
        let version = self.append(trip, version, event.clone()).await?;
        Ok((event, version))
    }

    fn require(trip: &str, state: &TripState) -> Result<(), TripError> {
        if state.status == TripStatus::New {
            Err(TripError::UnknownTrip(trip.to_string()))
        } else {
            Ok(())
        }
    }

    /// A new trip (version 1).
    pub async fn request(
        &self,
        trip: &str,
        rider: RiderId,
        city: &str,
        pickup: LatLng,
        dropoff: LatLng,
    ) -> Result<u64, TripError> {
        self.request_quoted(trip, rider, city, pickup, dropoff, None)
            .await
    }

    /// A new trip (version 1) with the surge multiplier the rider was quoted.
    pub async fn request_quoted(
        &self,
        trip: &str,
        rider: RiderId,
        city: &str,
        pickup: LatLng,
        dropoff: LatLng,
        quoted_surge: Option<f64>,
    ) -> Result<u64, TripError> {
        let event = TripEvent::Requested {
            rider,
            city: city.to_string(),
            pickup,
            dropoff,
            quoted_surge,
        };
        self.append(trip, 0, event).await
    }

    /// The matcher's accepted offer.
    pub async fn matched(
        &self,
        trip: &str,
        driver: DriverId,
        eta_ms: u64,
    ) -> Result<u64, TripError> {
        self.command(trip, |s| {
            Self::require(trip, s)?;
            Ok(TripEvent::Matched { driver, eta_ms })
        })
        .await
        .map(|(_, v)| v)
    }

    pub async fn arrived(&self, trip: &str) -> Result<u64, TripError> {
        self.simple(trip, TripEvent::DriverArrived).await
    }

    pub async fn started(&self, trip: &str) -> Result<u64, TripError> {
        self.simple(trip, TripEvent::Started).await
    }

    async fn simple(&self, trip: &str, event: TripEvent) -> Result<u64, TripError> {
        self.command(trip, |s| {
            Self::require(trip, s)?;
            Ok(event)
        })
        .await
        .map(|(_, v)| v)
    }

    /// Completes the trip: the fare is computed now, from the distance driven, the
    /// time since `Started` (injected clock) and `surge`. Returns the fare in cents.
    pub async fn completed(
        &self,
        trip: &str,
        distance_m: f64,
        surge: f64,
    ) -> Result<u64, TripError> {
        let now_ms = self.clock.wall_millis();
        let fares = self.fares;
        let (event, _) = self
            .command(trip, |s| {
                Self::require(trip, s)?;
                let (Some(driver), Some(started)) = (s.driver, s.started_ms) else {
                    return Err(TripError::IllegalTransition {
                        trip: trip.to_string(),
                        from: s.status,
                        event: "trip.completed",
                    });
                };
                let duration_s = now_ms.saturating_sub(started) / 1000;
                Ok(TripEvent::Completed {
                    driver,
                    distance_m,
                    duration_s,
                    surge,
                    fare_cents: fares.fare_cents(distance_m, duration_s, surge),
                })
            })
            .await?;
        match event {
            TripEvent::Completed { fare_cents, .. } => Ok(fare_cents),
            _ => unreachable!("completed builds a Completed event"),
        }
    }

    pub async fn cancel(&self, trip: &str, reason: &str) -> Result<u64, TripError> {
        let reason = reason.to_string();
        self.simple(trip, TripEvent::Cancelled { reason }).await
    }

    /// Records the fare as charged.
    pub async fn paid(&self, trip: &str) -> Result<u64, TripError> {
        self.command(trip, |s| {
            Self::require(trip, s)?;
            Ok(TripEvent::Paid {
                amount_cents: s.fare_cents.unwrap_or(0),
            })
        })
        .await
        .map(|(_, v)| v)
    }
}

fn validate_event(event: &TripEvent) -> Result<(), TripError> {
    match event {
        // The positions are valid by type (a `LatLng` decodes only if valid).
        TripEvent::Requested {
            city, quoted_surge, ..
        } => {
            validate_id("city", city)?;
            if let Some(surge) = quoted_surge
                && !(surge.is_finite() && (1.0..=MAX_SURGE).contains(surge))
            {
                return Err(bad(format!(
                    "quoted surge {surge} out of range 1-{MAX_SURGE}"
                )));
            }
        }
        TripEvent::Completed {
            distance_m, surge, ..
        } => {
            if !distance_m.is_finite() || *distance_m < 0.0 || *distance_m > 2_000_000.0 {
                return Err(bad(format!(
                    "distance {distance_m} m out of range 0-2000 km"
                )));
            }
            if !surge.is_finite() || !(1.0..=MAX_SURGE).contains(surge) {
                return Err(bad(format!("surge {surge} out of range 1-{MAX_SURGE}")));
            }
        }
        TripEvent::Cancelled { reason } if reason.len() > 256 => {
            return Err(bad("cancel reason longer than 256 bytes"));
        }
        _ => {}
    }
    Ok(())
}

fn decode(delivery: &Delivery) -> Option<TripEvent> {
    TripEvent::decode(&delivery.event)
}

/// Read model: every trip by id (the same fold as the aggregate).
#[derive(Debug, Default)]
pub struct TripsById(pub BTreeMap<String, TripState>);

impl Projection for TripsById {
    type State = BTreeMap<String, TripState>;
    fn apply(&mut self, delivery: &Delivery) {
        let event = &delivery.event;
        self.0.entry(event.key.clone()).or_default().apply(event);
    }
    fn state(&self) -> Self::State {
        self.0.clone()
    }
    fn restore(&mut self, state: Self::State) {
        self.0 = state;
    }
}

/// Read model: a rider's trips, in request order.
#[derive(Debug, Default)]
pub struct RiderTrips(pub BTreeMap<RiderId, Vec<String>>);

impl Projection for RiderTrips {
    type State = BTreeMap<RiderId, Vec<String>>;
    fn apply(&mut self, delivery: &Delivery) {
        if let Some(TripEvent::Requested { rider, .. }) = decode(delivery) {
            self.0
                .entry(rider)
                .or_default()
                .push(delivery.event.key.clone());
        }
    }
    fn state(&self) -> Self::State {
        self.0.clone()
    }
    fn restore(&mut self, state: Self::State) {
        self.0 = state;
    }
}

/// A driver's completed trips and fares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Earnings {
    pub trips: u64,
    pub fare_cents: u64,
}

/// Read model: earnings per driver, credited at completion.
#[derive(Debug, Default)]
pub struct DriverEarnings(pub BTreeMap<DriverId, Earnings>);

impl Projection for DriverEarnings {
    type State = BTreeMap<DriverId, Earnings>;
    fn apply(&mut self, delivery: &Delivery) {
        if let Some(TripEvent::Completed {
            driver, fare_cents, ..
        }) = decode(delivery)
        {
            let e = self.0.entry(driver).or_default();
            e.trips += 1;
            e.fare_cents += fare_cents;
        }
    }
    fn state(&self) -> Self::State {
        self.0.clone()
    }
    fn restore(&mut self, state: Self::State) {
        self.0 = state;
    }
}

/// The city view's saved state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CityState {
    /// City → status name → trips in it now.
    pub counts: BTreeMap<String, BTreeMap<String, u64>>,
    /// Trips not yet final: id → (city, status), to move them between counts.
    pub open: BTreeMap<String, (String, TripStatus)>,
}

/// Read model: trips per city by status.
#[derive(Debug, Default)]
pub struct CityView(pub CityState);

impl Projection for CityView {
    type State = CityState;
    fn apply(&mut self, delivery: &Delivery) {
        let Some(event) = decode(delivery) else {
            return;
        };
        let id = &delivery.event.key;
        let st = &mut self.0;
        let (city, from) = match (&event, st.open.get(id)) {
            (TripEvent::Requested { city, .. }, None) => (city.clone(), TripStatus::New),
            (_, Some((city, from))) => (city.clone(), *from),
            _ => return,
        };
        let Some(to) = transition(from, &event) else {
            return;
        };
        let counts = st.counts.entry(city.clone()).or_default();
        if from != TripStatus::New
            && let Some(n) = counts.get_mut(from.as_str())
        {
            *n -= 1;
            if *n == 0 {
                counts.remove(from.as_str());
            }
        }
        *counts.entry(to.as_str().to_string()).or_default() += 1;
        if to.is_final() {
            st.open.remove(id);
        } else {
            st.open.insert(id.clone(), (city, to));
        }
    }
    fn state(&self) -> Self::State {
        self.0.clone()
    }
    fn restore(&mut self, state: Self::State) {
        self.0 = state;
    }
}

/// Steps a runner until a step reads nothing (a step that only skips
/// re-published duplicates applies nothing but still moves the offset).
async fn drain<P: Projection>(runner: &mut ProjectionRunner<P>) -> Result<usize, TripError> {
    let mut applied = 0;
    loop {
        let before = runner.offset();
        applied += runner.step().await?;
        if runner.offset() == before {
            return Ok(applied);
        }
    }
}

/// The four read models, each with its own runner and checkpoint in one directory.
pub struct ReadModels {
    by_id: ProjectionRunner<TripsById>,
    riders: ProjectionRunner<RiderTrips>,
    earnings: ProjectionRunner<DriverEarnings>,
    city: ProjectionRunner<CityView>,
}

impl fmt::Debug for ReadModels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadModels")
            .field("offset", &self.by_id.offset())
            .finish_non_exhaustive()
    }
}

impl ReadModels {
    /// Opens the read models in `dir`, resuming from their checkpoints.
    pub fn open(
        bus: Arc<dyn EventBus>,
        dir: impl AsRef<Path>,
        durability: Durability,
    ) -> Result<Self, TripError> {
        let dir = dir.as_ref();
        Ok(Self {
            by_id: ProjectionRunner::open(
                bus.clone(),
                TOPIC,
                "trip-by-id",
                TripsById::default(),
                dir,
                durability,
            )?,
            riders: ProjectionRunner::open(
                bus.clone(),
                TOPIC,
                "rider-trips",
                RiderTrips::default(),
                dir,
                durability,
            )?,
            earnings: ProjectionRunner::open(
                bus.clone(),
                TOPIC,
                "driver-earnings",
                DriverEarnings::default(),
                dir,
                durability,
            )?,
            city: ProjectionRunner::open(
                bus,
                TOPIC,
                "city-view",
                CityView::default(),
                dir,
                durability,
            )?,
        })
    }

    /// Applies everything published so far to every read model; returns the
    /// events applied (summed over the four).
    pub async fn catch_up(&mut self) -> Result<usize, TripError> {
        Ok(drain(&mut self.by_id).await?
            + drain(&mut self.riders).await?
            + drain(&mut self.earnings).await?
            + drain(&mut self.city).await?)
    }

    /// The offset each read model will read next (all equal once caught up).
    pub fn offsets(&self) -> [u64; 4] {
        [
            self.by_id.offset(),
            self.riders.offset(),
            self.earnings.offset(),
            self.city.offset(),
        ]
    }

    pub fn trip(&self, trip: &str) -> Option<&TripState> {
        self.by_id.projection().0.get(trip)
    }

    pub fn trips(&self) -> &BTreeMap<String, TripState> {
        &self.by_id.projection().0
    }

    pub fn rider_trips(&self, rider: RiderId) -> &[String] {
        self.riders
            .projection()
            .0
            .get(&rider)
            .map_or(&[], Vec::as_slice)
    }

    pub fn riders(&self) -> &BTreeMap<RiderId, Vec<String>> {
        &self.riders.projection().0
    }

    pub fn earnings(&self, driver: DriverId) -> Earnings {
        self.earnings
            .projection()
            .0
            .get(&driver)
            .copied()
            .unwrap_or_default()
    }

    pub fn all_earnings(&self) -> &BTreeMap<DriverId, Earnings> {
        &self.earnings.projection().0
    }

    /// Status name → trips in it, for a city.
    pub fn city(&self, city: &str) -> BTreeMap<String, u64> {
        self.city
            .projection()
            .0
            .counts
            .get(city)
            .cloned()
            .unwrap_or_default()
    }

    pub fn city_state(&self) -> &CityState {
        &self.city.projection().0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_allows_the_happy_path_and_cancels_before_start_only() {
        use TripStatus as S;
        let p = LatLng::literal(0.0, 0.0);
        let req = TripEvent::Requested {
            rider: 1,
            city: "sf".into(),
            pickup: p,
            dropoff: p,
            quoted_surge: None,
        };
        let cancel = TripEvent::Cancelled { reason: "x".into() };
        assert_eq!(transition(S::New, &req), Some(S::Requested));
        assert_eq!(transition(S::Requested, &req), None);
        assert_eq!(transition(S::Matched, &cancel), Some(S::Cancelled));
        assert_eq!(transition(S::Started, &cancel), None);
        assert_eq!(transition(S::Cancelled, &TripEvent::Started), None);
        assert_eq!(transition(S::Requested, &TripEvent::Started), None);
    }

    #[test]
    fn fares_are_base_distance_time_times_surge() {
        let f = FareSchedule {
            base_cents: 200,
            per_km_cents: 100,
            per_minute_cents: 50,
        };
        // 200 + 100 × 5 + 50 × 10 = 1200, × 1.5 = 1800.
        assert_eq!(f.fare_cents(5_000.0, 600, 1.5), 1800);
    }
}
