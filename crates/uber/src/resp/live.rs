//! The live key: one key of the RESP port (`[uber] resp_live_key`, default
//! `drivers`) that is a view of the `uber` service's driver index instead of a
//! sorted set of its own.
//!
//! Members are driver ids (decimal, as Redis prints integers); a member is in the
//! set while its driver is available and fresh in the index. A driver's score is
//! Redis's 52-bit geohash of its position, so GEOPOS, GEODIST, GEOHASH, ZSCORE and
//! WITHCOORD/WITHHASH print what Redis would for the same point. A search takes
//! its candidates from the index's S2 cap covering (every available driver within
//! the search's bounding radius plus a metre, which covers the geohash's
//! rounding), puts them in a throwaway sorted set and runs Redis's own search
//! ([`crate::geo::search`]) on it: Redis's cells, exact test, sort and COUNT, so
//! the answer is the one Redis gives for the same points.
//!
//! Writes: GEOADD ingests a location update (status available, timestamp one
//! after the driver's last, so it wins); ZREM turns an available driver offline.
//! Both go to the index directly, not through the HTTP API's outbox: they are not
//! durable, not relayed to the bus and send no pricing signal.
//!
//! The key is a [`GeoStore`] ([`LiveStore`]): the commands find it through the
//! server's one key lookup (`state::Server::read` / `update`) like any other
//! key and never ask whether a key is the live one. Its data is not the port's:
//! it counts nothing towards `maxmemory`.
//!
//! Deliberately absent (a plain error, never a wrong answer): ZRANGE (rank order
//! over the index would be a full sort), DEL of the key and storing a search
//! result into it; FLUSHDB/FLUSHALL leave it alone (it is not the port's to empty).

use std::sync::Arc;

use bytes::Bytes;

use std::ops::ControlFlow;

use crate::geo::hash;
use crate::geo::search::{Shape, ShapeKind};
use crate::geo::store::{AddMode, AddOutcome, GeoPoint, GeoStore, SortedGeoSet, StoreError};
use crate::index::{DriverId, DriverIndex, DriverStatus, LatLng, LocationUpdate};

/// Finds the running index (the `uber` service's engine may be stopped or
/// restarted; each command asks again).
pub type IndexSource = Arc<dyn Fn() -> Option<Arc<DriverIndex>> + Send + Sync>;

/// The live key's name and where its index is.
#[derive(Clone)]
pub struct LiveKey {
    pub name: Bytes,
    source: IndexSource,
}

impl std::fmt::Debug for LiveKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveKey").field("name", &self.name).finish()
    }
}

/// Margin added to a search's radius when collecting candidates: a geohash
/// position is within half a step-26 cell (< 0.4 m) of the driver's position.
const ROUNDING_MARGIN_M: f64 = 1.0;

impl LiveKey {
    pub fn new(name: impl Into<Bytes>, source: IndexSource) -> Self {
        Self {
            name: name.into(),
            source,
        }
    }

    /// The index, or an error naming the key when the `uber` service is not running.
    pub fn index(&self) -> Result<Arc<DriverIndex>, StoreError> {
        (self.source)().ok_or_else(|| {
            StoreError(format!(
                "the live key '{}' is served by the uber service's driver index, which is not running",
                String::from_utf8_lossy(&self.name)
            ))
        })
    }

    /// The key as a store over the running index.
    pub fn store(&self) -> Result<LiveStore, StoreError> {
        Ok(LiveStore {
            key: self.clone(),
            index: self.index()?,
        })
    }

    /// The error for a command the live key does not serve.
    pub fn refused(&self, what: &str) -> StoreError {
        StoreError(format!(
            "{what} is not supported on the live key '{}' (a view of the driver index)",
            String::from_utf8_lossy(&self.name)
        ))
    }
}

/// A member's driver id: a canonical unsigned decimal (what Redis prints for an
/// integer member), so `7` and `07` are never two names for one driver.
pub fn driver_id(member: &[u8]) -> Option<DriverId> {
    let canonical = match member {
        [b'0'] => true,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if !canonical {
        return None;
    }
    std::str::from_utf8(member).ok()?.parse().ok().map(DriverId)
}

/// The error for a GEOADD member that is not a driver id.
fn not_a_driver(key: &LiveKey, member: &[u8]) -> StoreError {
    StoreError(format!(
        "member '{}' of the live key '{}' must be a driver id (an unsigned decimal integer)",
        String::from_utf8_lossy(member),
        String::from_utf8_lossy(&key.name)
    ))
}

/// The score of a driver's position; `None` outside Redis's indexable latitudes
/// (±85.05°), which a Redis geo set cannot hold either.
fn score_at(at: LatLng) -> Option<f64> {
    hash::score_of(at.lon(), at.lat()).map(|s| s as f64)
}

/// A member's score: its driver is available and fresh.
fn score(index: &DriverIndex, member: &[u8]) -> Option<f64> {
    let view = index.available(driver_id(member)?)?;
    score_at(view.position)
}

/// The available drivers that may lie in `shape` (within its bounding radius
/// plus the geohash rounding margin), as a sorted set of their scores.
fn candidates(index: &DriverIndex, shape: &Shape) -> SortedGeoSet {
    // Any point in the box is within (width + height) / 2 of the centre.
    let bound = match shape.kind {
        ShapeKind::Radius(r) => r,
        ShapeKind::Box { width, height } => (width + height) / 2.0,
    } * shape.conversion;
    let centre = LatLng::new(shape.lat, shape.lon).expect("validated search centres are valid");
    let mut set = SortedGeoSet::default();
    for view in index.available_within(centre, bound + ROUNDING_MARGIN_M) {
        if let Some(score) = score_at(view.position) {
            set.add(Bytes::from(view.id.0.to_string()), score, AddMode::Upsert);
        }
    }
    set
}

/// The live key over a running index, for one command.
#[derive(Debug)]
pub struct LiveStore {
    key: LiveKey,
    index: Arc<DriverIndex>,
}

impl GeoStore for LiveStore {
    fn len(&self) -> usize {
        self.index.available_count()
    }

    fn memory_bytes(&self) -> usize {
        0
    }

    /// At the score's decoded position (within 0.4 m of where it was encoded
    /// from); a member that is not a driver id changes nothing. GEOADD goes
    /// through [`add_points`](GeoStore::add_points), which ingests the exact
    /// position and reports such members.
    fn add(&mut self, member: Bytes, score: f64, mode: AddMode) -> AddOutcome {
        let Some(driver) = driver_id(&member) else {
            return AddOutcome::Unchanged;
        };
        let (lon, lat) = hash::position_of(score as u64);
        add(&self.index, driver, lon, lat, mode).unwrap_or(AddOutcome::Unchanged)
    }

    fn add_points(
        &mut self,
        points: Vec<GeoPoint>,
        mode: AddMode,
    ) -> Result<(usize, usize), StoreError> {
        // Every member is checked before anything is ingested, as Redis checks
        // every pair first.
        let mut drivers = Vec::with_capacity(points.len());
        for point in &points {
            let driver =
                driver_id(&point.member).ok_or_else(|| not_a_driver(&self.key, &point.member))?;
            drivers.push((driver, point.lon, point.lat));
        }
        let (mut added, mut updated) = (0, 0);
        for (driver, lon, lat) in drivers {
            match add(&self.index, driver, lon, lat, mode)? {
                AddOutcome::Added => added += 1,
                AddOutcome::Updated => updated += 1,
                AddOutcome::Unchanged => {}
            }
        }
        Ok((added, updated))
    }

    fn remove(&mut self, member: &[u8]) -> bool {
        remove(&self.index, member)
    }

    fn score(&self, member: &[u8]) -> Option<f64> {
        score(&self.index, member)
    }

    /// Correct but O(available drivers): searches never call it, they
    /// [narrow](GeoStore::narrow) first.
    fn scan(&self, min: f64, max: f64, visit: &mut dyn FnMut(f64, &Bytes) -> ControlFlow<()>) {
        let everything = Shape {
            lon: 0.0,
            lat: 0.0,
            kind: ShapeKind::Radius(f64::INFINITY),
            conversion: 1.0,
        };
        candidates(&self.index, &everything).scan(min, max, visit);
    }

    fn by_rank(&self, _: usize, _: usize, _: bool) -> Result<Vec<(Bytes, f64)>, StoreError> {
        Err(self.key.refused("ZRANGE"))
    }

    fn narrow(&self, shape: &Shape) -> Option<SortedGeoSet> {
        Some(candidates(&self.index, shape))
    }
}

/// GEOADD of one driver: a location update, status available, that wins over
/// the driver's last one.
fn add(
    index: &DriverIndex,
    driver: DriverId,
    lon: f64,
    lat: f64,
    mode: AddMode,
) -> Result<AddOutcome, StoreError> {
    let before = index
        .available(driver)
        .and_then(|view| score_at(view.position));
    match (mode, before) {
        (AddMode::OnlyNew, Some(_)) | (AddMode::OnlyExisting, None) => {
            return Ok(AddOutcome::Unchanged);
        }
        _ => {}
    }
    let ts = index
        .get(driver)
        .map_or(0, |view| view.ts.saturating_add(1));
    let report = index
        .update(LocationUpdate {
            driver,
            lat,
            lon,
            ts,
            status: DriverStatus::Available,
        })
        .map_err(|e| StoreError(format!("driver index: {e}")))?;
    if let Some((_, e)) = report.invalid.first() {
        return Err(StoreError(format!("driver index: {e}")));
    }
    let after = index
        .available(driver)
        .and_then(|view| score_at(view.position));
    Ok(match (before, after) {
        (None, Some(_)) => AddOutcome::Added,
        (Some(b), Some(a)) if a != b => AddOutcome::Updated,
        _ => AddOutcome::Unchanged,
    })
}

/// ZREM of one member: an available driver goes offline.
fn remove(index: &DriverIndex, member: &[u8]) -> bool {
    let Some(driver) = driver_id(member) else {
        return false;
    };
    index.available(driver).is_some()
        && index
            .transition(driver, DriverStatus::Available, DriverStatus::Offline)
            .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_ids_are_canonical_decimals() {
        assert_eq!(driver_id(b"0"), Some(DriverId(0)));
        assert_eq!(driver_id(b"42"), Some(DriverId(42)));
        assert_eq!(driver_id(b"18446744073709551615"), Some(DriverId(u64::MAX)));
        for bad in [
            &b""[..],
            b"07",
            b"+7",
            b"-7",
            b"7a",
            b" 7",
            b"18446744073709551616",
        ] {
            assert_eq!(driver_id(bad), None, "{bad:?}");
        }
    }
}
