//! The ride API's wire to the `uber-pricing` service.
//!
//! # Role
//! [`PriceWire`] is what [`crate::api::Engine`] holds of pricing: quotes through
//! [`PricingClient`] (the kit's resilience stack, fallback 1.0 flagged
//! `fallback: true`), and the **signals** surge is computed from — `Demand` per ride
//! request, `Supply` per available driver's ping (throttled), `SupplyGone` when a
//! driver is dispatched or goes offline — queued and sent in batches by a
//! background task ([`PriceWire::run`]).
//!
//! # Guarantees
//! - **Never on the critical path.** Recording a signal takes a lock, pushes onto
//!   a bounded queue and returns; no request waits for pricing to hear it. When
//!   the queue is full the signal is **dropped and counted**
//!   ([`WireStats::dropped`], `casebook_uber_pricing_signals_dropped_total`).
//! - **Bounded**: the queue holds at most `queue_capacity` signals, a batch at
//!   most `batch` (below the service's `max_batch`), the supply throttle at most
//!   `max_tracked_drivers` drivers (pruned by [`PriceWire::maintain`]).
//! - **Supply at most once per driver per `supply_every`** (30 s) on the injected
//!   clock: pricing counts a driver once per window (5 min) anyway, so sending
//!   every 4-second ping would only cost bandwidth. A `SupplyGone` clears the
//!   driver's throttle, so its first ping after the ride is sent at once.
//! - **Lost batches are not retried** (the service counts signals, a retry after a
//!   lost answer would count twice): surge lags, it is never inflated. Lost
//!   signals are counted ([`WireStats::lost`]).
//! - **Quotes always answer** unless the request is wrong: without a configured
//!   pricing URL the answer is the local flat fallback, like the client's.
//!
//! # Deliberately absent
//! A driver moving to another surge cell within `supply_every` is counted in its
//! old cell until its next sent ping (at most 30 s of lag); stale drivers swept
//! from the index send nothing (pricing expires silent drivers itself after a
//! window); no persistence of queued signals (a crash loses at most one queue).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use casebook_kit::clock::SharedClock;
use casebook_kit::resilience::breaker::BreakerRegistry;
use parking_lot::Mutex;
use serde::Serialize;

use crate::index::{DriverId, LatLng};
use crate::pricing::client::{FALLBACK_MULTIPLIER, PricingTarget};
use crate::pricing::quote::expiry_ms;
use crate::pricing::{
    MAX_BATCH_LIMIT, PricingClient, PricingClientConfig, PricingError, Quote, Signal, SurgeConfig,
};

/// How the API talks to pricing.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceWireConfig {
    /// Where the service is: a base URL (`http://127.0.0.1:8091`) or found through
    /// discovery; `None`: no pricing service, every quote is the flat fallback and
    /// no signal is sent.
    pub target: Option<PricingTarget>,
    /// The client's stack, tariff and fallback.
    pub client: PricingClientConfig,
    /// Most signals waiting to be sent; more are dropped and counted.
    pub queue_capacity: usize,
    /// Most signals per `POST /v1/signals`.
    pub batch: usize,
    /// How often the queue is sent.
    pub flush_every: Duration,
    /// Least time between two `Supply` signals of one driver.
    pub supply_every: Duration,
    /// Most drivers the supply throttle remembers.
    pub max_tracked_drivers: usize,
}

impl Default for PriceWireConfig {
    fn default() -> Self {
        Self {
            target: None,
            client: PricingClientConfig::default(),
            queue_capacity: 100_000,
            batch: 5_000,
            flush_every: Duration::from_millis(200),
            supply_every: Duration::from_secs(30),
            max_tracked_drivers: 1_000_000,
        }
    }
}

impl PriceWireConfig {
    /// Checks every bound; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(PricingTarget::Url(url)) = &self.target
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!(
                "pricing.url: must start with http:// or https://, got {url:?}"
            ));
        }
        if !(1..=10_000_000).contains(&self.queue_capacity) {
            return Err("pricing.queue_capacity: must be in 1..=10000000".to_owned());
        }
        if !(1..=MAX_BATCH_LIMIT).contains(&self.batch) {
            return Err(format!("pricing.batch: must be in 1..={MAX_BATCH_LIMIT}"));
        }
        if self.flush_every.is_zero() {
            return Err("pricing.flush_every: must be positive".to_owned());
        }
        if !(1..=10_000_000).contains(&self.max_tracked_drivers) {
            return Err("pricing.max_tracked_drivers: must be in 1..=10000000".to_owned());
        }
        Ok(())
    }
}

/// What the wire has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WireStats {
    /// Signals queued.
    pub queued: u64,
    /// Signals refused because the queue was full.
    pub dropped: u64,
    /// Signals the service acknowledged.
    pub sent: u64,
    /// Signals in batches the service did not acknowledge (not retried).
    pub lost: u64,
    /// Pings that sent no `Supply` because the driver's was recent.
    pub throttled: u64,
}

#[derive(Debug, Default)]
struct Counters {
    queued: AtomicU64,
    dropped: AtomicU64,
    sent: AtomicU64,
    lost: AtomicU64,
    throttled: AtomicU64,
}

/// Quotes and signals to the `pricing` service. Shared by the routes and the
/// sender task.
#[derive(Debug)]
pub struct PriceWire {
    config: PriceWireConfig,
    client: Option<PricingClient>,
    clock: SharedClock,
    queue: Mutex<VecDeque<Signal>>,
    /// When each driver's last `Supply` was queued.
    last_supply: Mutex<HashMap<DriverId, Instant>>,
    counters: Counters,
}

impl PriceWire {
    /// A wire on `clock` (the client's breaker too: a registry of its own, so
    /// two engines in one process do not trip each other's breaker).
    pub fn new(config: PriceWireConfig, clock: SharedClock) -> Result<Arc<Self>, String> {
        config.validate()?;
        let client = config
            .target
            .as_ref()
            .map(|target| {
                PricingClient::to_target(
                    target,
                    config.client.clone(),
                    BreakerRegistry::new(clock.clone()),
                )
            })
            .transpose()?;
        Ok(Arc::new(Self {
            config,
            client,
            clock,
            queue: Mutex::new(VecDeque::new()),
            last_supply: Mutex::new(HashMap::new()),
            counters: Counters::default(),
        }))
    }

    /// The client, when a pricing URL is configured.
    pub fn client(&self) -> Option<&PricingClient> {
        self.client.as_ref()
    }

    pub fn stats(&self) -> WireStats {
        let c = &self.counters;
        WireStats {
            queued: c.queued.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
            throttled: c.throttled.load(Ordering::Relaxed),
        }
    }

    /// Signals waiting to be sent.
    pub fn pending(&self) -> usize {
        self.queue.lock().len()
    }

    /// A quote from pricing, or the flat fallback (`fallback: true`).
    pub async fn quote(&self, pickup: LatLng, dropoff: LatLng) -> Result<Quote, PricingError> {
        match &self.client {
            Some(client) => client.quote(pickup, dropoff).await,
            None => self.flat_quote(pickup, dropoff),
        }
    }

    /// The client's fallback, computed here when there is no client at all.
    fn flat_quote(&self, pickup: LatLng, dropoff: LatLng) -> Result<Quote, PricingError> {
        let tariff = &self.config.client.tariff;
        let estimate = tariff
            .estimate(pickup, dropoff)
            .map_err(|e| PricingError::Rejected {
                status: http::StatusCode::BAD_REQUEST,
                error: e.to_string(),
                field: Some(e.field().into()),
            })?;
        let cell = SurgeConfig {
            level: self.config.client.level,
            ..SurgeConfig::default()
        }
        .cell_of(pickup)
        .to_token();
        let ttl = Duration::from_secs(self.config.client.fallback_ttl_secs);
        Ok(tariff.quote(
            estimate,
            FALLBACK_MULTIPLIER,
            cell,
            expiry_ms(self.clock.wall(), ttl),
            true,
        ))
    }

    /// A ride was requested at `at`.
    pub fn demand(&self, at: LatLng) {
        self.enqueue([Signal::Demand { at }]);
    }

    /// The driver is no longer available (dispatched or offline); its next
    /// available ping is sent at once.
    pub fn gone(&self, driver: DriverId) {
        if self.client.is_none() {
            return;
        }
        self.last_supply.lock().remove(&driver);
        self.enqueue([Signal::SupplyGone { driver }]);
    }

    /// Available drivers' pings: a `Supply` for each driver whose last one is at
    /// least `supply_every` old and for whom `available` still holds (the index's
    /// status after the ping: a dispatched driver pinging is not supply).
    pub fn pings(
        &self,
        pings: impl IntoIterator<Item = (DriverId, LatLng)>,
        available: impl Fn(DriverId) -> bool,
    ) {
        if self.client.is_none() {
            return;
        }
        let now = self.clock.now();
        let mut due = Vec::new();
        let mut throttled = 0u64;
        {
            let mut last = self.last_supply.lock();
            for (driver, at) in pings {
                let recent = last
                    .get(&driver)
                    .is_some_and(|t| now.saturating_duration_since(*t) < self.config.supply_every);
                if recent {
                    throttled += 1;
                    continue;
                }
                if !available(driver) {
                    continue;
                }
                if last.len() >= self.config.max_tracked_drivers && !last.contains_key(&driver) {
                    // Unthrottled would break the promise; unsent only lags surge.
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                last.insert(driver, now);
                due.push(Signal::Supply { driver, at });
            }
        }
        if throttled > 0 {
            self.counters
                .throttled
                .fetch_add(throttled, Ordering::Relaxed);
        }
        self.enqueue(due);
    }

    fn enqueue(&self, signals: impl IntoIterator<Item = Signal>) {
        if self.client.is_none() {
            return;
        }
        let (mut queued, mut dropped) = (0u64, 0u64);
        {
            let mut queue = self.queue.lock();
            for signal in signals {
                if queue.len() < self.config.queue_capacity {
                    queue.push_back(signal);
                    queued += 1;
                } else {
                    dropped += 1;
                }
            }
        }
        self.counters.queued.fetch_add(queued, Ordering::Relaxed);
        if dropped > 0 {
            self.counters.dropped.fetch_add(dropped, Ordering::Relaxed);
            metrics::counter!("casebook_uber_pricing_signals_dropped_total").increment(dropped);
        }
    }

    /// Sends everything queued now, batch by batch; returns how many signals the
    /// service acknowledged. A failed batch is counted lost, and the rest of the
    /// queue waits for the next flush (the breaker decides when to try again).
    pub async fn flush(&self) -> u64 {
        let Some(client) = &self.client else {
            return 0;
        };
        let mut acknowledged = 0;
        loop {
            let batch: Vec<Signal> = {
                let mut queue = self.queue.lock();
                let n = queue.len().min(self.config.batch);
                queue.drain(..n).collect()
            };
            if batch.is_empty() {
                return acknowledged;
            }
            let n = batch.len() as u64;
            match client.send_signals(&batch).await {
                Ok(_) => {
                    self.counters.sent.fetch_add(n, Ordering::Relaxed);
                    acknowledged += n;
                }
                Err(error) => {
                    self.counters.lost.fetch_add(n, Ordering::Relaxed);
                    tracing::debug!(%error, signals = n, "pricing signals lost");
                    return acknowledged;
                }
            }
        }
    }

    /// Forgets throttle entries older than `supply_every` (they are due anyway).
    pub fn maintain(&self) {
        let now = self.clock.now();
        let every = self.config.supply_every;
        self.last_supply
            .lock()
            .retain(|_, t| now.saturating_duration_since(*t) < every);
    }

    /// Flushes every `flush_every` until `shutdown`, then once more.
    pub async fn run(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        if self.client.is_none() {
            return;
        }
        let mut every = tokio::time::interval(self.config.flush_every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = every.tick() => { self.flush().await; }
            }
        }
        self.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use casebook_kit::clock::ManualClock;

    fn at(lat: f64, lon: f64) -> LatLng {
        LatLng::new(lat, lon).unwrap()
    }

    /// A wire to nowhere reachable (signals queue up; nothing is flushed here).
    fn wire(config: PriceWireConfig, clock: &ManualClock) -> Arc<PriceWire> {
        PriceWire::new(
            PriceWireConfig {
                target: Some(PricingTarget::Url("http://127.0.0.1:9".into())),
                ..config
            },
            clock.shared(),
        )
        .unwrap()
    }

    #[test]
    fn supply_is_sent_at_most_once_per_driver_per_interval() {
        let clock = ManualClock::new();
        let w = wire(PriceWireConfig::default(), &clock);
        let p = at(37.77, -122.42);
        for _ in 0..7 {
            w.pings([(DriverId(1), p), (DriverId(2), p)], |_| true);
            clock.advance(Duration::from_secs(4));
        }
        // 28 s: one each.
        assert_eq!(w.pending(), 2);
        assert_eq!(w.stats().throttled, 12);
        clock.advance(Duration::from_secs(2));
        w.pings([(DriverId(1), p)], |_| true);
        assert_eq!(w.pending(), 3, "30 s after the first, due again");
        // Gone clears the throttle: the next ping is sent at once.
        w.gone(DriverId(1));
        w.pings([(DriverId(1), p)], |_| true);
        assert_eq!(w.pending(), 5);
        // A driver the index does not call available is not supply.
        w.pings([(DriverId(3), p)], |_| false);
        assert_eq!(w.pending(), 5);
        assert_eq!(w.stats().queued, 5);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let clock = ManualClock::new();
        let w = wire(
            PriceWireConfig {
                queue_capacity: 3,
                ..PriceWireConfig::default()
            },
            &clock,
        );
        for _ in 0..5 {
            w.demand(at(1.0, 1.0));
        }
        assert_eq!(w.pending(), 3);
        let stats = w.stats();
        assert_eq!((stats.queued, stats.dropped), (3, 2));
    }

    #[test]
    fn the_throttle_is_bounded_and_pruned() {
        let clock = ManualClock::new();
        let w = wire(
            PriceWireConfig {
                max_tracked_drivers: 2,
                ..PriceWireConfig::default()
            },
            &clock,
        );
        let p = at(1.0, 1.0);
        w.pings((1..=3).map(|d| (DriverId(d), p)), |_| true);
        assert_eq!(w.pending(), 2);
        assert_eq!(w.stats().dropped, 1);
        clock.advance(Duration::from_secs(30));
        w.maintain();
        assert!(w.last_supply.lock().is_empty());
        w.pings([(DriverId(3), p)], |_| true);
        assert_eq!(w.pending(), 3);
    }

    #[test]
    fn without_a_url_quotes_are_flat_fallbacks_and_nothing_queues() {
        let clock = ManualClock::new();
        let w = PriceWire::new(PriceWireConfig::default(), clock.shared()).unwrap();
        w.demand(at(1.0, 1.0));
        assert_eq!(w.pending(), 0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let q = rt
            .block_on(w.quote(at(37.77, -122.42), at(37.79, -122.40)))
            .unwrap();
        assert!(q.fallback);
        assert_eq!(q.multiplier, 1.0);
        assert!(q.fare_cents > 0);
    }

    #[test]
    fn bad_config_names_the_field() {
        let err = PriceWireConfig {
            target: Some(PricingTarget::Url("127.0.0.1:8091".into())),
            ..PriceWireConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.starts_with("pricing.url"), "{err}");
        let err = PriceWireConfig {
            batch: 0,
            ..PriceWireConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.starts_with("pricing.batch"), "{err}");
    }
}
