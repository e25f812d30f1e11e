//! Fares: a tariff (base + per km + per minute at an assumed speed, with a
//! minimum), and the quote a rider is shown: the fare times the pickup cell's
//! surge multiplier, valid until it expires.
//!
//! Guarantees: money is in integer cents; the fare is
//! `round(max(minimum, base + per_km·km + per_minute·min) · multiplier)` with the
//! multiplier **as the rider sees it** (rounded to 0.1), so the quote and the
//! shown multiplier always agree; distance is the great-circle distance (on the
//! same sphere as the GEO port) times a route factor for streets that are not
//! straight, duration that distance at the tariff's speed; a trip longer than
//! `max_trip_km` (straight line) is refused, naming the dropoff.
//!
//! Deliberately absent: routing on a road graph, traffic, tolls, per-product
//! tariffs, currency conversion, honouring an expired quote (the caller checks
//! `expires_at_ms`).

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::surge::{Surge, displayed};
use crate::index::LatLng;

/// The longest a configured trip limit may be.
pub const MAX_TRIP_KM_LIMIT: f64 = 20_000.0;

/// What a ride costs before surge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tariff {
    /// ISO 4217 code the cents are in.
    pub currency: String,
    pub base_cents: u64,
    pub per_km_cents: u64,
    pub per_minute_cents: u64,
    /// The least a ride costs before surge.
    pub minimum_cents: u64,
    /// The average speed a trip's duration is estimated at.
    pub speed_kmh: f64,
    /// Street distance over straight-line distance (≥ 1).
    pub route_factor: f64,
    /// The longest straight-line trip quoted.
    pub max_trip_km: f64,
}

impl Default for Tariff {
    fn default() -> Self {
        Self {
            currency: "USD".into(),
            base_cents: 250,
            per_km_cents: 120,
            per_minute_cents: 30,
            minimum_cents: 700,
            speed_kmh: 30.0,
            route_factor: 1.3,
            max_trip_km: 300.0,
        }
    }
}

/// A quote refused for its input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuoteError {
    /// The straight line from pickup to dropoff is longer than the tariff allows.
    #[error("the trip is {km:.1} km in a straight line; at most {max_km} km is quoted")]
    TooLong { km: f64, max_km: f64 },
}

impl QuoteError {
    /// The request field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            Self::TooLong { .. } => "dropoff",
        }
    }
}

/// A trip's length, time and fare before surge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TripEstimate {
    pub distance_m: f64,
    pub duration_s: f64,
    /// Before surge, minimum applied, unrounded.
    pub fare_cents: f64,
}

impl Tariff {
    /// Checks every bound; the error starts with the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        let code = &self.currency;
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "tariff.currency: must be a 3-letter ISO 4217 code, got {code:?}"
            ));
        }
        if !(self.speed_kmh.is_finite() && self.speed_kmh > 0.0 && self.speed_kmh <= 300.0) {
            return Err(format!(
                "tariff.speed_kmh: must be in (0, 300], got {}",
                self.speed_kmh
            ));
        }
        if !(1.0..=5.0).contains(&self.route_factor) {
            return Err(format!(
                "tariff.route_factor: must be in [1, 5], got {}",
                self.route_factor
            ));
        }
        if !(self.max_trip_km > 0.0 && self.max_trip_km <= MAX_TRIP_KM_LIMIT) {
            return Err(format!(
                "tariff.max_trip_km: must be in (0, {MAX_TRIP_KM_LIMIT}], got {}",
                self.max_trip_km
            ));
        }
        // Keeps every fare far inside u64 and f64's exact integers.
        let limit = 1_000_000;
        for (key, v) in [
            ("base_cents", self.base_cents),
            ("per_km_cents", self.per_km_cents),
            ("per_minute_cents", self.per_minute_cents),
            ("minimum_cents", self.minimum_cents),
        ] {
            if v > limit {
                return Err(format!("tariff.{key}: at most {limit}, got {v}"));
            }
        }
        Ok(())
    }

    /// Distance, duration and fare before surge from `pickup` to `dropoff`.
    pub fn estimate(&self, pickup: LatLng, dropoff: LatLng) -> Result<TripEstimate, QuoteError> {
        let straight_m = pickup.distance_m(&dropoff);
        if straight_m > self.max_trip_km * 1000.0 {
            return Err(QuoteError::TooLong {
                km: straight_m / 1000.0,
                max_km: self.max_trip_km,
            });
        }
        let distance_m = straight_m * self.route_factor;
        let duration_s = distance_m / (self.speed_kmh / 3.6);
        let metered = self.base_cents as f64
            + self.per_km_cents as f64 * distance_m / 1000.0
            + self.per_minute_cents as f64 * duration_s / 60.0;
        Ok(TripEstimate {
            distance_m,
            duration_s,
            fare_cents: metered.max(self.minimum_cents as f64),
        })
    }

    /// A quote for an estimate at `multiplier` (already as the rider sees it).
    pub fn quote(
        &self,
        estimate: TripEstimate,
        multiplier: f64,
        cell: String,
        expires_at_ms: u64,
        fallback: bool,
    ) -> Quote {
        Quote {
            multiplier,
            fare_cents: (estimate.fare_cents * multiplier).round() as u64,
            currency: self.currency.clone(),
            distance_m: estimate.distance_m.round(),
            duration_s: estimate.duration_s.round(),
            cell,
            expires_at_ms,
            fallback,
        }
    }
}

/// What a rider is shown before requesting a ride.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quote {
    /// The surge multiplier applied, rounded to 0.1.
    pub multiplier: f64,
    /// The fare, surge included, in cents of `currency`.
    pub fare_cents: u64,
    pub currency: String,
    /// Estimated street distance, metres.
    pub distance_m: f64,
    /// Estimated duration, seconds.
    pub duration_s: f64,
    /// The pickup's surge cell, as an S2 token.
    pub cell: String,
    /// Wall-clock milliseconds since the Unix epoch after which the quote is void.
    pub expires_at_ms: u64,
    /// True when the pricing service could not be asked and the multiplier is the
    /// fallback (1.0): the caller may show the fare, and knows it is not surge-priced.
    #[serde(default)]
    pub fallback: bool,
}

/// Surge and tariff together: the pricing service's engine.
#[derive(Debug)]
pub struct Pricing {
    surge: Arc<Surge>,
    tariff: Tariff,
    quote_ttl: Duration,
}

impl Pricing {
    /// An engine; `tariff` must be valid ([`Tariff::validate`]).
    pub fn new(surge: Arc<Surge>, tariff: Tariff, quote_ttl: Duration) -> Result<Self, String> {
        tariff.validate()?;
        Ok(Self {
            surge,
            tariff,
            quote_ttl,
        })
    }

    /// The surge engine.
    pub fn surge(&self) -> &Arc<Surge> {
        &self.surge
    }

    /// The tariff.
    pub fn tariff(&self) -> &Tariff {
        &self.tariff
    }

    /// The quote for a ride from `pickup` to `dropoff`, surge from the pickup's cell.
    pub fn quote(&self, pickup: LatLng, dropoff: LatLng) -> Result<Quote, QuoteError> {
        let estimate = self.tariff.estimate(pickup, dropoff)?;
        let surge = self.surge.multiplier(pickup);
        let expires_at_ms = expiry_ms(self.surge.clock().wall(), self.quote_ttl);
        Ok(self.tariff.quote(
            estimate,
            displayed(surge.multiplier),
            surge.cell,
            expires_at_ms,
            false,
        ))
    }
}

/// `wall + ttl` in milliseconds since the Unix epoch.
pub fn expiry_ms(wall: std::time::SystemTime, ttl: Duration) -> u64 {
    let since = wall.duration_since(UNIX_EPOCH).unwrap_or_default() + ttl;
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::surge::{Signal, SurgeConfig};
    use casebook_kit::clock::{Clock, ManualClock};

    fn at(lat: f64, lon: f64) -> LatLng {
        LatLng::new(lat, lon).unwrap()
    }

    #[test]
    fn fare_is_base_plus_distance_plus_time_with_a_minimum() {
        let tariff = Tariff::default();
        let a = at(40.7580, -73.9855);
        let b = at(40.7061, -74.0087);
        let e = tariff.estimate(a, b).unwrap();
        let straight = a.distance_m(&b);
        assert!((e.distance_m - straight * 1.3).abs() < 1e-6);
        assert!((e.duration_s - e.distance_m / (30.0 / 3.6)).abs() < 1e-6);
        let expected = 250.0 + 120.0 * e.distance_m / 1000.0 + 30.0 * e.duration_s / 60.0;
        assert!((e.fare_cents - expected).abs() < 1e-6);
        // A ride across the street costs the minimum.
        let short = tariff.estimate(a, at(40.7581, -73.9855)).unwrap();
        assert_eq!(short.fare_cents, 700.0);
    }

    #[test]
    fn a_trip_beyond_the_limit_is_refused_naming_the_dropoff() {
        let err = Tariff::default()
            .estimate(at(40.0, -74.0), at(34.0, -118.0))
            .unwrap_err();
        assert_eq!(err.field(), "dropoff");
    }

    #[test]
    fn a_quote_applies_the_shown_multiplier_and_expires() {
        let clock = ManualClock::new();
        let surge = Arc::new(
            Surge::new(
                SurgeConfig {
                    smoothing: 1.0,
                    ..SurgeConfig::default()
                },
                clock.shared(),
            )
            .unwrap(),
        );
        let pricing =
            Pricing::new(surge.clone(), Tariff::default(), Duration::from_secs(120)).unwrap();
        let pickup = at(40.7580, -73.9855);
        let dropoff = at(40.7061, -74.0087);
        let flat = pricing.quote(pickup, dropoff).unwrap();
        assert_eq!((flat.multiplier, flat.fallback), (1.0, false));
        assert_eq!(
            flat.expires_at_ms,
            clock.wall_millis() + 120_000,
            "expiry on the injected clock"
        );
        surge.record(&vec![Signal::Demand { at: pickup }; 20]);
        surge.record(&[Signal::Supply {
            driver: crate::index::DriverId(1),
            at: pickup,
        }]);
        clock.advance(Duration::from_secs(30));
        let hot = pricing.quote(pickup, dropoff).unwrap();
        assert_eq!(hot.multiplier, 3.0);
        let estimate = Tariff::default().estimate(pickup, dropoff).unwrap();
        assert_eq!(hot.fare_cents, (estimate.fare_cents * 3.0).round() as u64);
        assert_eq!(hot.cell, flat.cell);
    }

    #[test]
    fn bad_tariffs_name_their_key() {
        let bad = |t: Tariff| t.validate().unwrap_err();
        assert!(
            bad(Tariff {
                currency: "usd".into(),
                ..Default::default()
            })
            .starts_with("tariff.currency")
        );
        assert!(
            bad(Tariff {
                speed_kmh: 0.0,
                ..Default::default()
            })
            .starts_with("tariff.speed_kmh")
        );
        assert!(
            bad(Tariff {
                route_factor: 0.9,
                ..Default::default()
            })
            .starts_with("tariff.route_factor")
        );
        assert!(
            bad(Tariff {
                base_cents: u64::MAX,
                ..Default::default()
            })
            .starts_with("tariff.base_cents")
        );
    }
}
