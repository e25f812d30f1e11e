//! Surge pricing as its own service.
//!
//! Role: turn ride requests (demand) and available drivers' pings (supply) into a
//! surge multiplier per S2 cell (level 12), and quote fares with it. It runs as
//! the `pricing` service ([`PricingService`], HTTP) and other services call it
//! through the kit's resilience stack with [`PricingClient`], which answers a
//! **fallback multiplier of 1.0** (flagged `fallback: true`, counted in metrics)
//! whenever the service cannot answer: down, too slow, or its breaker open.
//!
//! | part | what it is |
//! |---|---|
//! | [`surge`] | the engine: sliding window of buckets per cell on the injected clock, supply counted once per driver, raw curve with a cap, EWMA smoothing, bounded cells and drivers |
//! | [`quote`] | the tariff (base + per km + per minute at a speed, minimum) and the [`Quote`] |
//! | [`service`] | the `uber-pricing` service factory and its routes: `POST /v1/signals`, `GET /v1/multiplier`, `POST /v1/quote` |
//! | [`client`] | [`PricingClient`]: the calls through `retry → breaker → timeout → bulkhead`, with the fallback |
//!
//! The JSON both sides speak is defined here once ([`SignalsRequest`],
//! [`QuoteRequest`], [`Position`], and [`Quote`], [`CellSurge`], [`SignalReport`]),
//! so client and server cannot drift apart.
//!
//! Deliberately absent: persistence of the window (a restarted instance starts
//! flat), sharing one window between several pricing instances (each instance
//! prices from the signals it was sent; callers send all signals to one address),
//! and discovery-based resolution in the client (it takes a base URL).

pub mod client;
pub mod quote;
pub mod service;
pub mod surge;

use std::time::Duration;

use casebook_kit::api::ApiError;
use serde::{Deserialize, Serialize};

pub use client::{
    Multiplier, PricingClient, PricingClientConfig, PricingClientStats, PricingError, PricingTarget,
};
pub use quote::{Pricing, Quote, QuoteError, Tariff};
pub use service::{PRICING_SERVICE, PricingService};
pub use surge::{CellSurge, Signal, SignalReport, Surge, SurgeConfig, SurgeStats};

use crate::index::{DriverId, LatLng};

/// The most signals one `POST /v1/signals` may carry.
pub const MAX_BATCH_LIMIT: usize = 100_000;

/// The `pricing` service's configuration (`[pricing]` when the binary wires it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PricingConfig {
    pub surge: SurgeConfig,
    pub tariff: Tariff,
    /// How long a quote is valid (humantime, `"2m"`; 1 s to 1 day).
    #[serde(with = "humantime_serde")]
    pub quote_ttl: Duration,
    /// The most signals per `POST /v1/signals` (more: 413).
    pub max_batch: usize,
}

impl Default for PricingConfig {
    fn default() -> Self {
        Self {
            surge: SurgeConfig::default(),
            tariff: Tariff::default(),
            quote_ttl: Duration::from_secs(120),
            max_batch: 10_000,
        }
    }
}

impl PricingConfig {
    /// Checks every bound; the error starts with the dotted key (`pricing.surge.cap: …`).
    pub fn validate(&self) -> Result<(), String> {
        self.surge.validate().map_err(|e| format!("pricing.{e}"))?;
        self.tariff.validate().map_err(|e| format!("pricing.{e}"))?;
        if !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&self.quote_ttl) {
            return Err(format!(
                "pricing.quote_ttl: must be between 1s and 1day, got {:?}",
                self.quote_ttl
            ));
        }
        if !(1..=MAX_BATCH_LIMIT).contains(&self.max_batch) {
            return Err(format!(
                "pricing.max_batch: must be 1..={MAX_BATCH_LIMIT}, got {}",
                self.max_batch
            ));
        }
        Ok(())
    }
}

/// A position on the wire, degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    pub lat: f64,
    pub lon: f64,
}

impl From<LatLng> for Position {
    fn from(p: LatLng) -> Self {
        Self {
            lat: p.lat(),
            lon: p.lon(),
        }
    }
}

impl Position {
    /// The validated position; a 400 naming `{field}.lat` or `{field}.lon` if not.
    pub fn validate(&self, field: &str) -> Result<LatLng, ApiError> {
        lat_lng(self.lat, self.lon, |name| format!("{field}.{name}"))
    }
}

/// Validates degrees, naming the bad one with `name("lat" | "lon")`.
pub(crate) fn lat_lng(
    lat: f64,
    lon: f64,
    name: impl Fn(&str) -> String,
) -> Result<LatLng, ApiError> {
    if !(-90.0..=90.0).contains(&lat) {
        return Err(ApiError::bad_field(
            name("lat"),
            format!("latitude must be a number in [-90, 90], got {lat}"),
        ));
    }
    if !(-180.0..=180.0).contains(&lon) {
        return Err(ApiError::bad_field(
            name("lon"),
            format!("longitude must be a number in [-180, 180], got {lon}"),
        ));
    }
    LatLng::new(lat, lon).map_err(|e| ApiError::bad_field(name("lat"), e.to_string()))
}

/// The body of `POST /v1/quote`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuoteRequest {
    pub pickup: Position,
    pub dropoff: Position,
}

/// What a signal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    /// A ride request at `lat`/`lon`.
    Demand,
    /// An available driver's ping: `driver`, `lat`, `lon`.
    Supply,
    /// A driver no longer available: `driver`.
    SupplyGone,
}

/// One signal on the wire: flat, so a field of the wrong type is named exactly;
/// which fields a kind needs is checked by [`WireSignal::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireSignal {
    pub kind: SignalKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
}

impl From<Signal> for WireSignal {
    fn from(signal: Signal) -> Self {
        match signal {
            Signal::Demand { at } => Self {
                kind: SignalKind::Demand,
                driver: None,
                lat: Some(at.lat()),
                lon: Some(at.lon()),
            },
            Signal::Supply { driver, at } => Self {
                kind: SignalKind::Supply,
                driver: Some(driver.0),
                lat: Some(at.lat()),
                lon: Some(at.lon()),
            },
            Signal::SupplyGone { driver } => Self {
                kind: SignalKind::SupplyGone,
                driver: Some(driver.0),
                lat: None,
                lon: None,
            },
        }
    }
}

impl WireSignal {
    /// The signal, or a 400 naming `{field}.lat` (etc.) for a missing, superfluous
    /// or out-of-range field.
    pub fn validate(&self, field: &str) -> Result<Signal, ApiError> {
        let name = |f: &str| format!("{field}.{f}");
        let required =
            |f: &str| ApiError::bad_field(name(f), format!("a {:?} signal needs `{f}`", self.kind));
        let refused = |f: &str| {
            ApiError::bad_field(name(f), format!("a {:?} signal has no `{f}`", self.kind))
        };
        let at = || -> Result<LatLng, ApiError> {
            let lat = self.lat.ok_or_else(|| required("lat"))?;
            let lon = self.lon.ok_or_else(|| required("lon"))?;
            lat_lng(lat, lon, name)
        };
        match self.kind {
            SignalKind::Demand => {
                if self.driver.is_some() {
                    return Err(refused("driver"));
                }
                Ok(Signal::Demand { at: at()? })
            }
            SignalKind::Supply => {
                let driver = DriverId(self.driver.ok_or_else(|| required("driver"))?);
                Ok(Signal::Supply { driver, at: at()? })
            }
            SignalKind::SupplyGone => {
                if self.lat.is_some() {
                    return Err(refused("lat"));
                }
                if self.lon.is_some() {
                    return Err(refused("lon"));
                }
                let driver = DriverId(self.driver.ok_or_else(|| required("driver"))?);
                Ok(Signal::SupplyGone { driver })
            }
        }
    }
}

/// The body of `POST /v1/signals`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalsRequest {
    pub signals: Vec<WireSignal>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_round_trip_through_the_wire_form() {
        let at = LatLng::new(40.75, -73.98).unwrap();
        for signal in [
            Signal::Demand { at },
            Signal::Supply {
                driver: DriverId(7),
                at,
            },
            Signal::SupplyGone {
                driver: DriverId(7),
            },
        ] {
            let wire = WireSignal::from(signal);
            let json = serde_json::to_string(&wire).unwrap();
            let back: WireSignal = serde_json::from_str(&json).unwrap();
            assert_eq!(back.validate("s").unwrap(), signal);
        }
    }

    #[test]
    fn bad_signals_name_the_field() {
        let field = |json: &str| {
            let wire: WireSignal = serde_json::from_str(json).unwrap();
            wire.validate("signals[3]").unwrap_err().field.unwrap()
        };
        assert_eq!(
            field(r#"{"kind":"demand","lat":91,"lon":0}"#),
            "signals[3].lat"
        );
        assert_eq!(
            field(r#"{"kind":"demand","lat":1,"lon":-181}"#),
            "signals[3].lon"
        );
        assert_eq!(field(r#"{"kind":"demand","lat":1}"#), "signals[3].lon");
        assert_eq!(
            field(r#"{"kind":"demand","driver":1,"lat":1,"lon":1}"#),
            "signals[3].driver"
        );
        assert_eq!(
            field(r#"{"kind":"supply","lat":1,"lon":1}"#),
            "signals[3].driver"
        );
        assert_eq!(
            field(r#"{"kind":"supply_gone","driver":1,"lat":1}"#),
            "signals[3].lat"
        );
    }

    fn any_f64() -> impl proptest::strategy::Strategy<Value = f64> {
        use proptest::prelude::*;
        prop_oneof![
            -200.0..200.0f64,
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-90.0),
            Just(180.0),
        ]
    }

    proptest::proptest! {
        /// Any signal either validates to in-range coordinates or is refused
        /// naming one of its own fields; arbitrary bytes never panic the parser.
        #[test]
        fn validation_is_total_and_names_a_field(
            kind in 0..3u8,
            driver in proptest::option::of(proptest::prelude::any::<u64>()),
            lat in proptest::option::of(any_f64()),
            lon in proptest::option::of(any_f64()),
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let kind = [SignalKind::Demand, SignalKind::Supply, SignalKind::SupplyGone][kind as usize];
            let wire = WireSignal { kind, driver, lat, lon };
            match wire.validate("signals[9]") {
                Ok(Signal::Demand { at }) | Ok(Signal::Supply { at, .. }) => {
                    proptest::prop_assert!((-90.0..=90.0).contains(&at.lat()));
                    proptest::prop_assert!((-180.0..=180.0).contains(&at.lon()));
                }
                Ok(Signal::SupplyGone { .. }) => {}
                Err(e) => {
                    let field = e.field.unwrap_or_default();
                    proptest::prop_assert!(
                        ["lat", "lon", "driver"].iter().any(|f| field == format!("signals[9].{f}")),
                        "{field}"
                    );
                }
            }
            let _ = casebook_kit::api::parse_json::<SignalsRequest>(&bytes);
        }
    }

    #[test]
    fn default_config_is_valid_and_errors_are_prefixed() {
        PricingConfig::default().validate().unwrap();
        let err = PricingConfig {
            max_batch: 0,
            ..PricingConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.starts_with("pricing.max_batch"), "{err}");
        let err = PricingConfig {
            surge: SurgeConfig {
                cap: 0.0,
                ..SurgeConfig::default()
            },
            ..PricingConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.starts_with("pricing.surge.cap"), "{err}");
    }

    #[test]
    fn durations_are_humantime_strings() {
        let config: PricingConfig = serde_json::from_str(
            r#"{"quote_ttl": "90s", "surge": {"window": "10m", "bucket": "1m"}}"#,
        )
        .unwrap();
        assert_eq!(config.quote_ttl, Duration::from_secs(90));
        assert_eq!(
            (config.surge.window, config.surge.bucket),
            (Duration::from_secs(600), Duration::from_secs(60))
        );
        config.validate().unwrap();
        assert!(serde_json::from_str::<PricingConfig>(r#"{"quote_ttl_secs": 90}"#).is_err());
        let err = PricingConfig {
            surge: SurgeConfig {
                window: Duration::from_secs(90),
                bucket: Duration::from_secs(60),
                ..SurgeConfig::default()
            },
            ..PricingConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.starts_with("pricing.surge.window"), "{err}");
    }
}
