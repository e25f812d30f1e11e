//! Redis's GEO semantics: geohash scores, distances, the search cells and the
//! storage a geo set lives in.
//!
//! | module | role |
//! |---|---|
//! | [`hash`] | 52-bit interleaved geohash scores, cell areas and neighbours, haversine on Redis's sphere, GEOHASH strings |
//! | [`search`] | radius / box searches with Redis's candidate cells and shape test; best-first for COUNT |
//! | [`store`] | the [`GeoStore`](store::GeoStore) trait and the sorted set behind it |
//!
//! Guarantees: a point's score, its decoded position, distances and search
//! results equal Redis 7.0's (checked against a running `redis-server` by
//! `tests/differential.rs`). The RESP port's live key answers from the S2 driver
//! index by running this module's search over the index's candidates
//! (`crate::resp::live`).

pub mod hash;
pub mod search;
pub mod store;

/// Metres per unit for Redis's unit names (case-insensitive), or `None`.
pub fn unit_factor(unit: &[u8]) -> Option<f64> {
    if unit.eq_ignore_ascii_case(b"m") {
        Some(1.0)
    } else if unit.eq_ignore_ascii_case(b"km") {
        Some(1000.0)
    } else if unit.eq_ignore_ascii_case(b"ft") {
        Some(0.3048)
    } else if unit.eq_ignore_ascii_case(b"mi") {
        Some(1609.34)
    } else {
        None
    }
}
