//! The index's vocabulary: drivers, their status and positions, location
//! updates, what a query sees, batch reports and the typed errors the HTTP layer
//! maps to status codes.

use std::time::Instant;

/// A driver's id: one type for the index, the matcher, trips and gossip; on the
/// wire, the bare number.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct DriverId(pub u64);

impl std::fmt::Display for DriverId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "driver {}", self.0)
    }
}

/// Where a driver is in its working day. Only `Available` drivers are indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriverStatus {
    /// Off duty, or silent for longer than `stale_after`.
    Offline,
    /// On duty and free: in the index.
    Available,
    /// Claimed by the matcher for an offer (server-owned).
    Dispatched,
    /// Carrying a rider (server-owned).
    OnTrip,
}

impl DriverStatus {
    /// Whether only the server may set this status (a driver's app reports only
    /// `Available` or `Offline`).
    pub fn is_server_owned(self) -> bool {
        matches!(self, Self::Dispatched | Self::OnTrip)
    }
}

/// A validated position in degrees (WGS84 latitude and longitude): the one point
/// type of the case (index, matching, trips, the workload). On the wire it is
/// `{"lat": …, "lng": …}` (ride requests and views, trip events on disk), read
/// back only if valid.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "LatLngWire", into = "LatLngWire")]
pub struct LatLng {
    lat: f64,
    lon: f64,
}

/// [`LatLng`]'s wire form (unknown fields ignored, as they always were).
#[derive(Clone, Copy, serde::Serialize, serde::Deserialize)]
struct LatLngWire {
    lat: f64,
    lng: f64,
}

impl TryFrom<LatLngWire> for LatLng {
    type Error = IndexError;
    fn try_from(wire: LatLngWire) -> Result<Self, IndexError> {
        Self::new(wire.lat, wire.lng)
    }
}

impl From<LatLng> for LatLngWire {
    fn from(at: LatLng) -> Self {
        Self {
            lat: at.lat,
            lng: at.lon,
        }
    }
}

impl LatLng {
    /// A position; latitude must be in `[-90, 90]`, longitude in `[-180, 180]`,
    /// neither NaN.
    pub fn new(lat: f64, lon: f64) -> Result<Self, IndexError> {
        if !(-90.0..=90.0).contains(&lat) {
            return Err(IndexError::InvalidLatitude { lat });
        }
        if !(-180.0..=180.0).contains(&lon) {
            return Err(IndexError::InvalidLongitude { lon });
        }
        Ok(Self { lat, lon })
    }

    /// Latitude in degrees.
    pub fn lat(&self) -> f64 {
        self.lat
    }

    /// Longitude in degrees.
    pub fn lon(&self) -> f64 {
        self.lon
    }

    /// A position written in the source (constants, tests): panics if invalid —
    /// in a `const`, at compile time.
    pub const fn literal(lat: f64, lon: f64) -> Self {
        assert!(
            lat >= -90.0 && lat <= 90.0 && lon >= -180.0 && lon <= 180.0,
            "latitude or longitude out of range"
        );
        Self { lat, lon }
    }

    /// The position nearest to (`lat`, `lon`): each clamped into its range, NaN
    /// taken as 0. For generated points (a jitter around a valid one) that must
    /// stay on the map.
    pub fn clamped(lat: f64, lon: f64) -> Self {
        let clamp = |v: f64, max: f64| if v.is_nan() { 0.0 } else { v.clamp(-max, max) };
        Self {
            lat: clamp(lat, 90.0),
            lon: clamp(lon, 180.0),
        }
    }

    /// Great-circle distance in metres: the case's one distance, on the same
    /// sphere as the Redis GEO port (so the RESP port can be served from this
    /// index with Redis's distances).
    pub fn distance_m(&self, other: &LatLng) -> f64 {
        crate::geo::hash::distance(self.lon, self.lat, other.lon, other.lat)
    }
}

/// One location ping from a driver's app.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocationUpdate {
    /// Who.
    pub driver: DriverId,
    /// Latitude, degrees (validated on ingest).
    pub lat: f64,
    /// Longitude, degrees (validated on ingest).
    pub lon: f64,
    /// The driver's own timestamp (milliseconds, the app's clock): latest wins.
    pub ts: u64,
    /// The duty status the app reports: `Available` or `Offline` (the
    /// server-owned ones are refused).
    pub status: DriverStatus,
}

/// A driver as the index sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriverView {
    /// Who.
    pub id: DriverId,
    /// Last accepted position.
    pub position: LatLng,
    /// Current status.
    pub status: DriverStatus,
    /// The driver's timestamp of the last accepted update.
    pub ts: u64,
    /// When (injected clock) the last accepted update arrived.
    pub last_seen: Instant,
}

/// A driver's state away from the live index: saved in a snapshot, or read
/// back from the primary store. `age` is how long before the save (or the
/// restore) its last update arrived, so staleness survives a restart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SavedDriver {
    pub id: DriverId,
    pub lat: f64,
    pub lon: f64,
    /// The driver's own timestamp of that update (latest wins on restore).
    pub ts: u64,
    /// Any status, the server-owned ones included: a driver on a trip stays on it.
    pub status: DriverStatus,
    pub age: std::time::Duration,
}

/// What one [`restore`](super::DriverIndex::restore) call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Drivers set from the saved state.
    pub restored: usize,
    /// Saved states not newer than the driver's current one: ignored.
    pub older: usize,
    /// Saved states with an invalid position, or beyond `max_drivers`.
    pub refused: usize,
    /// Saved states whose timestamp lay beyond `max_clock_skew` ahead of the
    /// wall clock: restored with the wall clock's time instead.
    pub clamped: usize,
}

/// What one [`ingest`](super::DriverIndex::ingest) call did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchReport {
    /// Updates applied (newer than the driver's state at their turn, in batch order).
    pub accepted: usize,
    /// Updates older than the driver's state: ignored.
    pub stale: usize,
    /// Updates with the same timestamp as the driver's state: ignored (idempotent).
    pub duplicate: usize,
    /// Updates refused, with their index in the batch, in batch order.
    pub invalid: Vec<(usize, IndexError)>,
}

/// Everything the index refuses; each variant names the value at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IndexError {
    /// Latitude NaN or outside `[-90, 90]` (HTTP 400).
    #[error("latitude {lat} is not in [-90, 90]")]
    InvalidLatitude {
        /// The value given.
        lat: f64,
    },
    /// Longitude NaN or outside `[-180, 180]` (HTTP 400).
    #[error("longitude {lon} is not in [-180, 180]")]
    InvalidLongitude {
        /// The value given.
        lon: f64,
    },
    /// A radius that is NaN, not positive, or above the configured maximum (400).
    #[error("radius {radius_m} m is not in (0, {max_m}]")]
    InvalidRadius {
        /// The value given.
        radius_m: f64,
        /// The configured maximum.
        max_m: f64,
    },
    /// `k` zero or above the maximum (400).
    #[error("k = {k} is not in 1..={max}")]
    InvalidK {
        /// The value given.
        k: usize,
        /// The maximum.
        max: usize,
    },
    /// A driver's timestamp beyond the wall clock plus `max_clock_skew` (400):
    /// latest wins by it, so it would freeze the driver.
    #[error("timestamp {ts} ms is ahead of the clock: at most {latest} ms")]
    FutureTimestamp {
        /// The value given.
        ts: u64,
        /// The latest accepted now.
        latest: u64,
    },
    /// A driver's app reported a status only the server sets (400).
    #[error("status {status:?} is set by the server, not reported by a driver")]
    ServerOwnedStatus {
        /// The status given.
        status: DriverStatus,
    },
    /// A driver the index has never seen (404).
    #[error("unknown {driver}")]
    UnknownDriver {
        /// Who.
        driver: DriverId,
    },
    /// A status transition whose precondition does not hold (409).
    #[error("{driver} is {actual:?}, expected {expected:?}")]
    WrongStatus {
        /// Who.
        driver: DriverId,
        /// The status the caller expected.
        expected: DriverStatus,
        /// The status it has.
        actual: DriverStatus,
    },
    /// The index holds `max` drivers already (503: capacity). When a batch's new
    /// drivers overflow the table, which of them get in is unspecified (stripe
    /// order, not batch order); every update of the others gets this error.
    #[error("at most {max} drivers")]
    TooManyDrivers {
        /// The limit.
        max: usize,
    },
    /// A batch longer than the maximum (413).
    #[error("batch of {len} updates is above the maximum of {max}")]
    BatchTooLarge {
        /// The batch length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The shard layout refused an operation (a bad split or merge, or a shard
    /// map config field out of bounds).
    #[error(transparent)]
    Layout(#[from] casebook_kit::partition::PartitionError),
    /// A configuration field out of bounds.
    #[error("invalid index config `{field}`: {reason}")]
    InvalidConfig {
        /// The field at fault.
        field: &'static str,
        /// Why.
        reason: String,
    },
}
