//! What the API's responses and shared request parts look like on the wire.

use serde::{Deserialize, Serialize};

use crate::engine::{Engine, RideQuote};
use crate::index::{DriverId, DriverStatus, LocationUpdate};
use crate::matching::{RideStatus, RideView};
use crate::trips::TripState;

/// One update of a `POST /v1/locations` batch, as posted (logged and published
/// as [`LocationColumns`](crate::locations::LocationColumns)). An unknown field is refused, as at the top level.
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

/// A ride as the API shows it: the matcher's view, its quote while the ride is
/// live, and its trip once accepted.
#[derive(Debug, Serialize)]
pub(crate) struct RideOut {
    #[serde(flatten)]
    view: RideView,
    quote: Option<RideQuote>,
    trip: Option<String>,
}

pub(crate) fn ride_out(engine: &Engine, view: RideView) -> RideOut {
    let trip = matches!(
        view.status,
        RideStatus::Accepted { .. } | RideStatus::Finished
    )
    .then(|| engine.trip_id(view.id));
    let quote = engine.ride_quote(view.id);
    RideOut { view, quote, trip }
}

/// A trip as the API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct TripOut {
    pub(crate) id: String,
    #[serde(flatten)]
    pub(crate) state: TripState,
}

/// A point as a ride request or quote posts it, `{lat, lng}`, before it is
/// checked into a [`LatLng`](crate::index::LatLng) (so a refusal names
/// `pickup.lat` or `pickup.lng`, not just `pickup`).
#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) struct PointBody {
    pub(crate) lat: f64,
    pub(crate) lng: f64,
}
