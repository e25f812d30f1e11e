//! Matching riders to drivers: greedy nearest-by-ETA, batched minimum-cost
//! assignment (Kuhn–Munkres), an atomic per-driver claim, offers with a timeout.
//!
//! # Role
//! A ride request (rider, pickup, dropoff) becomes a [`RideId`] whose status moves
//! `queued → offered(driver) → accepted(driver)` or ends in `no_drivers` /
//! `cancelled`. Candidates come from a [`NearbyDrivers`] source (the S2 index in
//! production, [`ScanDrivers`] in tests and examples); their cost is an ETA from an
//! [`EtaModel`] ([`SpeedEta`]: great-circle distance / speed + a per-driver pickup
//! overhead).
//!
//! - **Greedy** ([`Mode::Greedy`]): candidates are ranked by ETA and claimed in
//!   order at request time; the first claim that succeeds becomes the offer.
//! - **Batched** ([`Mode::Batched`]): requests wait in a bounded queue; every
//!   window (default 2 s on the injected clock, driven by [`Matcher::tick`]) the
//!   queue is solved as one rectangular minimum-cost assignment
//!   ([`solve_assignment`]) over each rider's `candidates` nearest free drivers.
//!   Each assignment is then claimed; riders whose claim lost a race, or whose
//!   candidates all went to other riders, are re-solved against the drivers still
//!   free with twice the candidates (bounded rounds, bounded width).
//!   Riders left unmatched stay queued until `max_wait`, then end as `no_drivers`.
//!
//! # Guarantees
//! - **A driver is never assigned to two riders.** Every assignment goes through
//!   [`DriverClaims::claim`], a compare-and-set `available → dispatched(ride)` under
//!   the table's lock; a driver returns to available only through
//!   [`DriverClaims::release`] by the ride that holds it (decline, timeout, cancel,
//!   [`Matcher::finish`]).
//! - An offer not answered within `offer_timeout` (injected clock) is withdrawn by
//!   the next [`Matcher::tick`]: the driver is released and the rider re-matched
//!   without that driver. Decline does the same at once. At most `max_offers`
//!   offers per ride, then `no_drivers`.
//! - Bounded: the batch queue (`max_queue`, then [`MatchError::QueueFull`]), the
//!   candidates per rider (`candidates`, widened per round up to
//!   `max_candidates`), the rides remembered (`max_rides`: oldest finished rides
//!   are forgotten first, and with none to forget a request is refused with
//!   [`MatchError::TooManyRides`]), the re-solve rounds per batch. Expired offers
//!   are found through a deadline index, not a scan of every ride.
//!
//! # Deliberately absent
//! - Road-network ETAs: the [`EtaModel`] trait is where a routing engine plugs in.
//! - Driver status beyond the claim (offline, on_trip, staleness): that lives in
//!   the index; the claim table only knows who is dispatched. The index's
//!   [`NearbyDrivers::nearest`] filter is given the claim table so dispatched
//!   drivers are skipped early, but correctness rests on the claim alone.
//! - Trips and money: [`crate::trips`] records the accepted match as an event.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use casebook_kit::clock::SharedClock;
use parking_lot::{Mutex, RwLock};
use pathfinding::kuhn_munkres::kuhn_munkres_min;
use pathfinding::matrix::Matrix;

pub use crate::index::DriverId;
use crate::index::LatLng;
/// A rider.
pub type RiderId = u64;
/// A ride request.
pub type RideId = u64;

/// Where candidates come from: the driver index. `filter` returns `false` for
/// drivers to skip (dispatched, excluded for this ride).
pub trait NearbyDrivers: Send + Sync {
    /// Up to `k` drivers within `radius_m` of `at` passing `filter`, nearest first,
    /// with their great-circle distance in metres.
    fn nearest(
        &self,
        at: LatLng,
        radius_m: f64,
        k: usize,
        filter: &dyn Fn(DriverId) -> bool,
    ) -> Vec<(DriverId, f64)>;

    /// The matcher claimed `driver` for an offer. A source that can should stop
    /// returning it (the index moves it to dispatched): under load the claimed
    /// drivers crowd the hotspots, and every search would scan and filter them.
    /// The claim table stays the arbiter of who is free.
    fn claimed(&self, _driver: DriverId) {}

    /// The claim on `driver` ended without a trip in progress (declined, timed
    /// out, cancelled, finished): a source that hid it returns it.
    fn released(&self, _driver: DriverId) {}
}

/// Pickup time of a driver at a distance.
pub trait EtaModel: Send + Sync {
    fn eta(&self, driver: DriverId, distance_m: f64) -> Duration;
}

/// ETA = distance / speed + the driver's fixed pickup overhead (default overhead
/// for drivers without their own).
#[derive(Debug, Clone)]
pub struct SpeedEta {
    speed_mps: f64,
    default_overhead: Duration,
    overheads: HashMap<DriverId, Duration>,
}

impl SpeedEta {
    /// `speed_mps` must be finite and positive (8.3 m/s is ~30 km/h, a city).
    pub fn new(speed_mps: f64, default_overhead: Duration) -> Result<Self, MatchError> {
        if !speed_mps.is_finite() || speed_mps <= 0.0 {
            return Err(MatchError::BadConfig(format!(
                "speed must be finite and > 0, not {speed_mps}"
            )));
        }
        Ok(Self {
            speed_mps,
            default_overhead,
            overheads: HashMap::new(),
        })
    }

    /// Sets one driver's pickup overhead (e.g. a driver parked in a garage).
    pub fn with_overhead(mut self, driver: DriverId, overhead: Duration) -> Self {
        self.overheads.insert(driver, overhead);
        self
    }
}

impl EtaModel for SpeedEta {
    fn eta(&self, driver: DriverId, distance_m: f64) -> Duration {
        let travel = Duration::from_secs_f64(distance_m.max(0.0) / self.speed_mps);
        travel
            + self
                .overheads
                .get(&driver)
                .copied()
                .unwrap_or(self.default_overhead)
    }
}

/// A linear-scan [`NearbyDrivers`]: exact, O(drivers) per query. The reference the
/// S2 index is checked against, and the source for tests and examples.
#[derive(Debug, Default)]
pub struct ScanDrivers {
    drivers: RwLock<HashMap<DriverId, LatLng>>,
}

impl ScanDrivers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or moves a driver.
    pub fn upsert(&self, driver: DriverId, at: LatLng) {
        self.drivers.write().insert(driver, at);
    }

    /// Removes a driver (offline).
    pub fn remove(&self, driver: DriverId) {
        self.drivers.write().remove(&driver);
    }

    pub fn len(&self) -> usize {
        self.drivers.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl NearbyDrivers for ScanDrivers {
    fn nearest(
        &self,
        at: LatLng,
        radius_m: f64,
        k: usize,
        filter: &dyn Fn(DriverId) -> bool,
    ) -> Vec<(DriverId, f64)> {
        let mut hits: Vec<(DriverId, f64)> = self
            .drivers
            .read()
            .iter()
            .filter(|(id, _)| filter(**id))
            .map(|(id, p)| (*id, at.distance_m(p)))
            .filter(|(_, d)| *d <= radius_m)
            .collect();
        hits.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        hits.truncate(k);
        hits
    }
}

/// The atomic claim: which drivers are dispatched, and to which ride. A driver not
/// in the table is available (as far as matching is concerned).
#[derive(Debug, Default)]
pub struct DriverClaims {
    held: Mutex<HashMap<DriverId, RideId>>,
}

impl DriverClaims {
    pub fn new() -> Self {
        Self::default()
    }

    /// Compare-and-set available → dispatched(ride). `false` if the driver is
    /// already held (by any ride, this one included).
    pub fn claim(&self, driver: DriverId, ride: RideId) -> bool {
        use std::collections::hash_map::Entry;
        match self.held.lock().entry(driver) {
            Entry::Occupied(_) => false,
            Entry::Vacant(slot) => {
                slot.insert(ride);
                true
            }
        }
    }

    /// Compare-and-set dispatched(ride) → available. `false` (and nothing changes)
    /// if the driver is not held by `ride`.
    pub fn release(&self, driver: DriverId, ride: RideId) -> bool {
        let mut held = self.held.lock();
        if held.get(&driver) == Some(&ride) {
            held.remove(&driver);
            true
        } else {
            false
        }
    }

    /// The ride holding `driver`, if any.
    pub fn holder(&self, driver: DriverId) -> Option<RideId> {
        self.held.lock().get(&driver).copied()
    }

    /// Every (driver, ride) held now.
    pub fn snapshot(&self) -> Vec<(DriverId, RideId)> {
        self.held.lock().iter().map(|(d, r)| (*d, *r)).collect()
    }
}

/// How a request is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Greedy,
    Batched,
}

/// Matching settings.
#[derive(Debug, Clone)]
pub struct MatchConfig {
    /// Search radius around the pickup.
    pub radius_m: f64,
    /// Candidates considered per rider (greedy ranking and batch matrix columns).
    pub candidates: usize,
    /// Batch window.
    pub window: Duration,
    /// Riders waiting in the batch queue at most.
    pub max_queue: usize,
    /// Riders per batch solve at most (the rest wait for the next window).
    pub max_batch: usize,
    /// A batched rider unmatched for this long ends as `no_drivers`.
    pub max_wait: Duration,
    /// How long a driver has to accept an offer.
    pub offer_timeout: Duration,
    /// Offers per ride at most (the first and the re-matches).
    pub max_offers: u32,
    /// Extra solve rounds per batch, for riders who lost a claim race or whose
    /// candidates all went to others; each round doubles the candidates per
    /// rider, up to `max_candidates`.
    pub max_resolve_rounds: u32,
    /// The widest candidate list a batch round asks for.
    pub max_candidates: usize,
    /// Rides remembered at most (finished ones are forgotten first).
    pub max_rides: usize,
}

impl Default for MatchConfig {
    fn default() -> Self {
        Self {
            radius_m: 5_000.0,
            candidates: 16,
            window: Duration::from_secs(2),
            max_queue: 10_000,
            max_batch: 2_000,
            max_wait: Duration::from_secs(30),
            offer_timeout: Duration::from_secs(15),
            max_offers: 3,
            max_resolve_rounds: 8,
            max_candidates: 512,
            max_rides: 1_000_000,
        }
    }
}

impl MatchConfig {
    fn validate(&self) -> Result<(), MatchError> {
        let bad = |m: &str| Err(MatchError::BadConfig(m.to_string()));
        if !self.radius_m.is_finite() || self.radius_m <= 0.0 {
            return bad("radius_m must be finite and > 0");
        }
        if self.candidates == 0 || self.max_queue == 0 || self.max_batch == 0 {
            return bad("candidates, max_queue and max_batch must be > 0");
        }
        if self.max_candidates < self.candidates || self.max_resolve_rounds > 16 {
            return bad("max_candidates must be >= candidates, max_resolve_rounds <= 16");
        }
        if self.max_offers == 0 || self.max_rides == 0 {
            return bad("max_offers and max_rides must be > 0");
        }
        if self.window.is_zero() || self.offer_timeout.is_zero() {
            return bad("window and offer_timeout must be > 0");
        }
        Ok(())
    }
}

/// What can go wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MatchError {
    #[error("bad matching config: {0}")]
    BadConfig(String),
    #[error("the batch queue is full ({0} riders waiting)")]
    QueueFull(usize),
    #[error("{0} rides in progress: no room for another")]
    TooManyRides(usize),
    #[error("unknown ride {0}")]
    UnknownRide(RideId),
    #[error("ride {ride} has no open offer to driver {driver}")]
    NoSuchOffer { ride: RideId, driver: DriverId },
    #[error("ride {0} is finished")]
    Finished(RideId),
}

/// Where a ride stands.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RideStatus {
    /// Waiting: for the next batch, or for a re-match.
    Queued,
    /// Offered to `driver` (claimed for this ride) until the offer timeout.
    Offered {
        driver: DriverId,
        #[serde(
            rename = "eta_ms",
            serialize_with = "casebook_kit::api::duration_ms::serialize"
        )]
        eta: Duration,
    },
    /// The driver accepted; the driver stays dispatched until [`Matcher::finish`].
    Accepted {
        driver: DriverId,
        #[serde(
            rename = "eta_ms",
            serialize_with = "casebook_kit::api::duration_ms::serialize"
        )]
        eta: Duration,
    },
    NoDrivers,
    Cancelled,
    /// The trip is over and the driver released.
    Finished,
}

/// A ride as the status query shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RideView {
    pub id: RideId,
    pub rider: RiderId,
    pub pickup: LatLng,
    pub dropoff: LatLng,
    pub mode: Mode,
    pub status: RideStatus,
    /// Offers made so far.
    pub offers: u32,
    /// Time from the request to the first offer, if any.
    #[serde(
        rename = "time_to_offer_ms",
        serialize_with = "casebook_kit::api::duration_ms::option::serialize"
    )]
    pub time_to_offer: Option<Duration>,
}

#[derive(Debug)]
struct Ride {
    rider: RiderId,
    pickup: LatLng,
    dropoff: LatLng,
    mode: Mode,
    status: RideStatus,
    requested_at: Instant,
    first_offer_at: Option<Instant>,
    offer_expires: Option<Instant>,
    /// Drivers who declined or timed out (at most `max_offers`).
    excluded: HashSet<DriverId>,
    offers: u32,
}

impl Ride {
    fn is_final(&self) -> bool {
        matches!(
            self.status,
            RideStatus::NoDrivers | RideStatus::Cancelled | RideStatus::Finished
        )
    }
}

#[derive(Debug, Default)]
struct State {
    rides: HashMap<RideId, Ride>,
    /// Batched rides waiting, oldest first.
    queue: VecDeque<RideId>,
    /// Finished rides, oldest first, for bounded forgetting.
    finished: VecDeque<RideId>,
    next_id: RideId,
    last_batch: Option<Instant>,
    /// Open offers by deadline, so a tick finds the expired ones without a scan.
    deadlines: BTreeSet<(Instant, RideId)>,
}

/// What one [`Matcher::tick`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Offers withdrawn for timing out.
    pub expired: usize,
    /// Batched riders offered a driver.
    pub batch_matched: usize,
    /// Claims lost to a concurrent matcher during the batch (then re-solved).
    pub lost_claims: usize,
    /// Riders ended as `no_drivers` (max wait or max offers).
    pub gave_up: usize,
    /// Riders still queued.
    pub queued: usize,
}

/// The matching engine. Thread-safe; share it in an `Arc`.
pub struct Matcher {
    config: MatchConfig,
    drivers: Arc<dyn NearbyDrivers>,
    eta: Arc<dyn EtaModel>,
    claims: Arc<DriverClaims>,
    clock: SharedClock,
    state: Mutex<State>,
    /// Serialises batch solves (greedy requests still run concurrently with them).
    batch_lock: Mutex<()>,
}

impl std::fmt::Debug for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matcher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Integer cost of an ETA for the solver (milliseconds).
fn cost_of(eta: Duration) -> i64 {
    eta.as_millis().min(i64::MAX as u128 / 1_000_000) as i64
}

/// Minimum-cost assignment of rows to columns over a rectangular cost table;
/// `None` marks a forbidden pair. Returns, per row, its column (or `None`).
///
/// The result first maximises the number of assigned rows, then minimises their
/// total cost: forbidden pairs cost more than every allowed pair together, so the
/// solver only uses one when nothing else is left, and those are dropped.
/// Either side may be the larger: the table is transposed when rows outnumber
/// columns, as `kuhn_munkres` requires rows ≤ columns.
pub fn solve_assignment(costs: &[Vec<Option<u64>>]) -> Vec<Option<usize>> {
    let rows = costs.len();
    let cols = costs.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 {
        return vec![None; rows];
    }
    assert!(
        costs.iter().all(|r| r.len() == cols),
        "cost rows of unequal length"
    );
    // Costs are capped so the forbidden weight and the totals cannot overflow.
    const CAP: u64 = 1 << 40;
    let pairs = rows.min(cols) as i64;
    let forbidden = (CAP as i64 + 1) * (pairs + 1);
    let cell = |r: usize, c: usize| -> i64 { costs[r][c].map_or(forbidden, |v| v.min(CAP) as i64) };
    let transpose = rows > cols;
    let (n, m) = if transpose {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let matrix = Matrix::from_fn(
        n,
        m,
        |(i, j)| if transpose { cell(j, i) } else { cell(i, j) },
    );
    let (_, assigned) = kuhn_munkres_min(&matrix);
    let mut out = vec![None; rows];
    for (i, j) in assigned.into_iter().enumerate() {
        let (r, c) = if transpose { (j, i) } else { (i, j) };
        if costs[r][c].is_some() {
            out[r] = Some(c);
        }
    }
    out
}

impl Matcher {
    pub fn new(
        config: MatchConfig,
        drivers: Arc<dyn NearbyDrivers>,
        eta: Arc<dyn EtaModel>,
        claims: Arc<DriverClaims>,
        clock: SharedClock,
    ) -> Result<Self, MatchError> {
        config.validate()?;
        // Windows run from the matcher's start, not from its first tick: a tick that
        // comes late (a busy runtime) must not restart the window.
        let started = clock.now();
        Ok(Self {
            config,
            drivers,
            eta,
            claims,
            clock,
            state: Mutex::new(State {
                next_id: 1,
                last_batch: Some(started),
                ..State::default()
            }),
            batch_lock: Mutex::new(()),
        })
    }

    /// The claim table (shared with whatever else dispatches drivers).
    pub fn claims(&self) -> &Arc<DriverClaims> {
        &self.claims
    }

    /// A new ride request. Greedy requests are matched before this returns (the
    /// status is then `offered` or `no_drivers`); batched ones are queued.
    pub fn request(
        &self,
        rider: RiderId,
        pickup: LatLng,
        dropoff: LatLng,
        mode: Mode,
    ) -> Result<RideId, MatchError> {
        let now = self.clock.now();
        let id = {
            let mut st = self.state.lock();
            if mode == Mode::Batched && st.queue.len() >= self.config.max_queue {
                return Err(MatchError::QueueFull(st.queue.len()));
            }
            self.forget_old(&mut st);
            if st.rides.len() >= self.config.max_rides {
                return Err(MatchError::TooManyRides(st.rides.len()));
            }
            let id = st.next_id;
            st.next_id += 1;
            st.rides.insert(
                id,
                Ride {
                    rider,
                    pickup,
                    dropoff,
                    mode,
                    status: RideStatus::Queued,
                    requested_at: now,
                    first_offer_at: None,
                    offer_expires: None,
                    excluded: HashSet::new(),
                    offers: 0,
                },
            );
            if mode == Mode::Batched {
                st.queue.push_back(id);
            }
            id
        };
        if mode == Mode::Greedy {
            self.greedy(id, pickup, &HashSet::new());
        }
        Ok(id)
    }

    /// Drops the oldest finished rides beyond `max_rides`.
    fn forget_old(&self, st: &mut State) {
        while st.rides.len() >= self.config.max_rides {
            let Some(old) = st.finished.pop_front() else {
                break;
            };
            st.rides.remove(&old);
        }
    }

    /// Candidates for a pickup with their ETAs, best first.
    fn candidates(
        &self,
        pickup: LatLng,
        excluded: &HashSet<DriverId>,
        k: usize,
    ) -> Vec<(DriverId, Duration)> {
        let claims = &self.claims;
        let filter = |d: DriverId| !excluded.contains(&d) && claims.holder(d).is_none();
        let mut found: Vec<(DriverId, Duration)> = self
            .drivers
            .nearest(pickup, self.config.radius_m, k, &filter)
            .into_iter()
            .map(|(d, m)| (d, self.eta.eta(d, m)))
            .collect();
        found.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        found
    }

    /// Claims `driver` for `ride` (the atomic claim), telling the source.
    fn claim(&self, driver: DriverId, ride: RideId) -> bool {
        let claimed = self.claims.claim(driver, ride);
        if claimed {
            self.drivers.claimed(driver);
        }
        claimed
    }

    /// Releases `ride`'s claim on `driver`, telling the source.
    fn release(&self, driver: DriverId, ride: RideId) {
        if self.claims.release(driver, ride) {
            self.drivers.released(driver);
        }
    }

    /// Greedy: claim the best candidate that is still free, then offer.
    fn greedy(&self, ride: RideId, pickup: LatLng, excluded: &HashSet<DriverId>) {
        for (driver, eta) in self.candidates(pickup, excluded, self.config.candidates) {
            if self.claim(driver, ride) {
                if !self.offer(ride, driver, eta) {
                    self.release(driver, ride);
                }
                return;
            }
        }
        self.give_up(ride);
    }

    /// Records an offer to a claimed driver; `false` if the ride went away meanwhile
    /// (cancelled), in which case the caller releases the driver.
    fn offer(&self, ride: RideId, driver: DriverId, eta: Duration) -> bool {
        let now = self.clock.now();
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let Some(r) = st.rides.get_mut(&ride) else {
            return false;
        };
        if r.status != RideStatus::Queued {
            return false;
        }
        let expires = now + self.config.offer_timeout;
        r.status = RideStatus::Offered { driver, eta };
        r.offers += 1;
        r.first_offer_at.get_or_insert(now);
        r.offer_expires = Some(expires);
        st.deadlines.insert((expires, ride));
        true
    }

    fn give_up(&self, ride: RideId) {
        let mut st = self.state.lock();
        if let Some(r) = st.rides.get_mut(&ride)
            && r.status == RideStatus::Queued
        {
            r.status = RideStatus::NoDrivers;
            st.finished.push_back(ride);
        }
    }

    /// The driver accepts: the ride is matched and the driver stays dispatched.
    pub fn accept(&self, ride: RideId, driver: DriverId) -> Result<RideView, MatchError> {
        let now = self.clock.now();
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let r = st
            .rides
            .get_mut(&ride)
            .ok_or(MatchError::UnknownRide(ride))?;
        match r.status {
            // An offer past its deadline is dead even if no tick withdrew it yet.
            RideStatus::Offered { driver: d, eta }
                if d == driver && r.offer_expires.is_some_and(|t| now < t) =>
            {
                r.status = RideStatus::Accepted { driver, eta };
                clear_deadline(&mut st.deadlines, ride, r);
                Ok(view(ride, r))
            }
            _ => Err(MatchError::NoSuchOffer { ride, driver }),
        }
    }

    /// The driver declines: released, and the rider re-matched without them.
    pub fn decline(&self, ride: RideId, driver: DriverId) -> Result<(), MatchError> {
        {
            let st = self.state.lock();
            let r = st.rides.get(&ride).ok_or(MatchError::UnknownRide(ride))?;
            if !matches!(r.status, RideStatus::Offered { driver: d, .. } if d == driver) {
                return Err(MatchError::NoSuchOffer { ride, driver });
            }
        }
        self.withdraw(ride, driver);
        Ok(())
    }

    /// Takes an offer back from `driver` (decline or timeout) and re-matches.
    fn withdraw(&self, ride: RideId, driver: DriverId) {
        let rematch = {
            let mut guard = self.state.lock();
            let st = &mut *guard;
            let Some(r) = st.rides.get_mut(&ride) else {
                return;
            };
            if !matches!(r.status, RideStatus::Offered { driver: d, .. } if d == driver) {
                return;
            }
            self.release(driver, ride);
            r.excluded.insert(driver);
            clear_deadline(&mut st.deadlines, ride, r);
            if r.offers >= self.config.max_offers {
                r.status = RideStatus::NoDrivers;
                st.finished.push_back(ride);
                None
            } else {
                r.status = RideStatus::Queued;
                let (mode, pickup, excluded) = (r.mode, r.pickup, r.excluded.clone());
                if mode == Mode::Batched {
                    st.queue.push_back(ride);
                    None
                } else {
                    Some((pickup, excluded))
                }
            }
        };
        if let Some((pickup, excluded)) = rematch {
            self.greedy(ride, pickup, &excluded);
        }
    }

    /// The rider cancels: an offered or accepted driver is released.
    pub fn cancel(&self, ride: RideId) -> Result<(), MatchError> {
        self.close(ride, RideStatus::Cancelled)
    }

    /// The trip is over: the driver is released.
    pub fn finish(&self, ride: RideId) -> Result<(), MatchError> {
        self.close(ride, RideStatus::Finished)
    }

    fn close(&self, ride: RideId, to: RideStatus) -> Result<(), MatchError> {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let r = st
            .rides
            .get_mut(&ride)
            .ok_or(MatchError::UnknownRide(ride))?;
        if r.is_final() {
            return Err(MatchError::Finished(ride));
        }
        if let RideStatus::Offered { driver, .. } | RideStatus::Accepted { driver, .. } = r.status {
            self.release(driver, ride);
        }
        r.status = to;
        clear_deadline(&mut st.deadlines, ride, r);
        st.queue.retain(|q| *q != ride);
        st.finished.push_back(ride);
        Ok(())
    }

    /// The ride's status.
    pub fn status(&self, ride: RideId) -> Result<RideView, MatchError> {
        let st = self.state.lock();
        let r = st.rides.get(&ride).ok_or(MatchError::UnknownRide(ride))?;
        Ok(view(ride, r))
    }

    /// Riders in the batch queue.
    pub fn queued(&self) -> usize {
        self.state.lock().queue.len()
    }

    /// Withdraws expired offers and, once a window has passed since the last batch,
    /// solves the batch. Call it often (every 100 ms, say); it is cheap when idle.
    pub fn tick(&self) -> TickReport {
        let now = self.clock.now();
        let mut report = TickReport::default();
        let expired: Vec<(RideId, DriverId)> = {
            let st = self.state.lock();
            st.deadlines
                .range(..=(now, RideId::MAX))
                .filter_map(|(_, id)| match st.rides.get(id)?.status {
                    RideStatus::Offered { driver, .. } => Some((*id, driver)),
                    _ => None,
                })
                .collect()
        };
        report.expired = expired.len();
        for (ride, driver) in expired {
            self.withdraw(ride, driver);
        }
        let due = {
            let mut st = self.state.lock();
            let last = *st.last_batch.get_or_insert(now);
            now.duration_since(last) >= self.config.window
        };
        if due {
            let batch = self.run_batch();
            report.batch_matched = batch.batch_matched;
            report.lost_claims = batch.lost_claims;
            report.gave_up = batch.gave_up;
        }
        report.queued = self.queued();
        report
    }

    /// Solves the batch queue now (whatever the window): up to `max_batch` riders,
    /// oldest first, as one minimum-total-ETA assignment.
    pub fn run_batch(&self) -> TickReport {
        let _solving = self.batch_lock.lock();
        let now = self.clock.now();
        let mut report = TickReport::default();
        // Take the batch: (ride, pickup, excluded).
        let taken: Vec<RideId>;
        let mut unmatched: Vec<RideId> = Vec::new();
        let mut pending: Vec<(RideId, LatLng, HashSet<DriverId>)> = {
            let mut st = self.state.lock();
            st.last_batch = Some(now);
            let take = st.queue.len().min(self.config.max_batch);
            taken = st.queue.drain(..take).collect();
            taken
                .iter()
                .copied()
                .filter_map(|id| {
                    let r = st.rides.get(&id)?;
                    (r.status == RideStatus::Queued).then(|| (id, r.pickup, r.excluded.clone()))
                })
                .collect()
        };
        let mut lost: HashSet<DriverId> = HashSet::new();
        for round in 0..=self.config.max_resolve_rounds {
            if pending.is_empty() {
                break;
            }
            // Widening: a rider whose nearest drivers all went to others in the
            // last round looks further this round.
            let k = (self.config.candidates << round).min(self.config.max_candidates);
            let cands: Vec<Vec<(DriverId, Duration)>> = pending
                .iter()
                .map(|(_, p, ex)| {
                    let mut ex = ex.clone();
                    ex.extend(lost.iter().copied());
                    self.candidates(*p, &ex, k)
                })
                .collect();
            let mut columns: Vec<DriverId> = cands.iter().flatten().map(|(d, _)| *d).collect();
            columns.sort_unstable();
            columns.dedup();
            let col_of: HashMap<DriverId, usize> =
                columns.iter().enumerate().map(|(i, d)| (*d, i)).collect();
            let mut costs = vec![vec![None; columns.len()]; pending.len()];
            for (row, list) in cands.iter().enumerate() {
                for (d, eta) in list {
                    costs[row][col_of[d]] = Some(cost_of(*eta) as u64);
                }
            }
            let assigned = solve_assignment(&costs);
            let mut retry = Vec::new();
            for (row, ((ride, pickup, excluded), col)) in
                pending.into_iter().zip(assigned).enumerate()
            {
                let Some(col) = col else {
                    if cands[row].len() < k {
                        // Every free driver within reach was considered and
                        // none is left for this rider: wait for the next window.
                        unmatched.push(ride);
                    } else {
                        // Its nearest drivers went to others: look wider.
                        retry.push((ride, pickup, excluded));
                    }
                    continue;
                };
                let driver = columns[col];
                let eta = cands[row]
                    .iter()
                    .find(|(d, _)| *d == driver)
                    .map(|(_, e)| *e)
                    .expect("an assigned pair is one of the row's candidates");
                if self.claim(driver, ride) {
                    if self.offer(ride, driver, eta) {
                        report.batch_matched += 1;
                    } else {
                        self.release(driver, ride);
                    }
                } else {
                    // A greedy request (or another matcher) took this driver
                    // between the search and the claim: re-solve this rider.
                    report.lost_claims += 1;
                    lost.insert(driver);
                    retry.push((ride, pickup, excluded));
                }
            }
            pending = retry;
        }
        unmatched.extend(pending.into_iter().map(|(ride, _, _)| ride));
        // Keep arrival order: riders are re-queued oldest first.
        let order: HashMap<RideId, usize> =
            taken.iter().enumerate().map(|(i, r)| (*r, i)).collect();
        unmatched.sort_by_key(|r| order.get(r).copied().unwrap_or(usize::MAX));
        self.requeue_or_give_up(unmatched, now, &mut report);
        report.queued = self.queued();
        report
    }

    /// Riders the batch could not match: back to the front of the queue in their
    /// old order (they have waited longest), or `no_drivers` past `max_wait`.
    fn requeue_or_give_up(&self, rides: Vec<RideId>, now: Instant, report: &mut TickReport) {
        let mut st = self.state.lock();
        for ride in rides.into_iter().rev() {
            let Some(r) = st.rides.get_mut(&ride) else {
                continue;
            };
            if r.status != RideStatus::Queued {
                continue;
            }
            if now.duration_since(r.requested_at) >= self.config.max_wait {
                r.status = RideStatus::NoDrivers;
                st.finished.push_back(ride);
                report.gave_up += 1;
            } else {
                st.queue.push_front(ride);
            }
        }
    }
}

fn clear_deadline(deadlines: &mut BTreeSet<(Instant, RideId)>, ride: RideId, r: &mut Ride) {
    if let Some(t) = r.offer_expires.take() {
        deadlines.remove(&(t, ride));
    }
}

fn view(id: RideId, r: &Ride) -> RideView {
    RideView {
        id,
        rider: r.rider,
        pickup: r.pickup,
        dropoff: r.dropoff,
        mode: r.mode,
        status: r.status.clone(),
        offers: r.offers,
        time_to_offer: r.first_offer_at.map(|t| t.duration_since(r.requested_at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rectangular_assignments_are_handled_both_ways() {
        // 3 riders, 2 drivers: one rider unmatched, the cheapest pair kept.
        let costs = vec![
            vec![Some(10), Some(100)],
            vec![Some(1), Some(5)],
            vec![Some(50), Some(6)],
        ];
        let got = solve_assignment(&costs);
        let total: u64 = got
            .iter()
            .enumerate()
            .filter_map(|(r, c)| c.map(|c| costs[r][c].unwrap()))
            .sum();
        assert_eq!(got.iter().flatten().count(), 2);
        assert_eq!(total, 7);
        // 1 rider, 3 drivers, only the forbidden-free one usable.
        assert_eq!(
            solve_assignment(&[vec![None, Some(9), None]]),
            vec![Some(1)]
        );
        // Nothing allowed: nobody matched.
        assert_eq!(
            solve_assignment(&[vec![None], vec![None]]),
            vec![None, None]
        );
        assert_eq!(solve_assignment(&[]), Vec::<Option<usize>>::new());
    }

    #[test]
    fn more_matches_beat_a_cheaper_total() {
        // Rider 0 could take driver 0 cheaply, but then rider 1 has nobody.
        let costs = vec![vec![Some(1), Some(1000)], vec![Some(2), None]];
        assert_eq!(solve_assignment(&costs), vec![Some(1), Some(0)]);
    }

    #[test]
    fn claims_are_compare_and_set() {
        let claims = DriverClaims::new();
        let seven = DriverId(7);
        assert!(claims.claim(seven, 1));
        assert!(!claims.claim(seven, 2));
        assert!(!claims.release(seven, 2));
        assert_eq!(claims.holder(seven), Some(1));
        assert!(claims.release(seven, 1));
        assert!(claims.claim(seven, 2));
    }

    #[test]
    fn bad_input_is_refused_precisely() {
        assert!(SpeedEta::new(0.0, Duration::ZERO).is_err());
        let eta = SpeedEta::new(10.0, Duration::from_secs(30))
            .unwrap()
            .with_overhead(DriverId(1), Duration::ZERO);
        assert_eq!(eta.eta(DriverId(1), 100.0), Duration::from_secs(10));
        assert_eq!(eta.eta(DriverId(2), 100.0), Duration::from_secs(40));
    }
}
