//! The S2 side of the index: leaf cell ids, the per-shard ordered map of cell
//! entries (and how it follows the kit's `ShardMap` through splits and merges),
//! and the cap covering that turns "within r metres of p" into cell-id ranges.
//!
//! Keys are `(leaf cell id, driver id)`: two drivers at the same spot (same leaf
//! cell, about 1 cm²) are two entries, and an ordered range scan over a covering
//! cell's leaf range `[range_min, range_max]` finds every driver inside it.

use std::collections::BTreeMap;

use casebook_kit::partition::{KeyRange, ShardPayload};
use s2::cap::Cap;
use s2::cellid::CellID;
use s2::point::Point;
use s2::region::RegionCoverer;
use s2::s1::{Angle, Rad};

use super::types::{DriverId, DriverView, LatLng};
use crate::geo::hash::EARTH_RADIUS_M;

/// The S2 leaf cell id (level 30) of a position.
pub fn leaf_cell(at: LatLng) -> u64 {
    CellID::from(s2::latlng::LatLng::from_degrees(at.lat(), at.lon())).0
}

/// The S2 level of a shard range on the S2 quad grid: a face owns `2^61` ids,
/// each level down a quarter of that.
pub fn range_level(range: KeyRange) -> u8 {
    let log2 = 127 - range.key_count().leading_zeros();
    ((61 - log2.min(61)) / 2) as u8
}

/// The S2 cell whose leaf range is a shard's range: a cell with lowest set bit
/// `lsb` owns `[id - lsb, id + lsb)`, so its id is the range's midpoint. The
/// inverse of the kit's `s2_cell_range` for ranges on the S2 quad grid.
pub fn range_cell(range: KeyRange) -> CellID {
    CellID(range.first() + (range.key_count() / 2) as u64)
}

/// The leaf-id ranges of a covering of the cap of `radius_m` around `at`,
/// sorted and disjoint. The cap is widened by a metre (and a relative 1e-9) so
/// that floating-point edges never drop a leaf the exact distance filter keeps.
pub fn covering_ranges(at: LatLng, radius_m: f64, max_cells: usize) -> Vec<(u64, u64)> {
    let center = Point::from(s2::latlng::LatLng::from_degrees(at.lat(), at.lon()));
    let widened = radius_m * (1.0 + 1e-9) + 1.0;
    let angle = (widened / EARTH_RADIUS_M).min(std::f64::consts::PI);
    let cap = Cap::from_center_angle(&center, &Angle::from(Rad(angle)));
    let coverer = RegionCoverer {
        min_level: 0,
        max_level: 30,
        level_mod: 1,
        max_cells,
    };
    let mut ranges: Vec<(u64, u64)> = coverer
        .covering(&cap)
        .0
        .iter()
        .map(|cell| (cell.range_min().0, cell.range_max().0))
        .collect();
    ranges.sort_unstable();
    // A normalized covering has disjoint cells; coalescing adjacent ones saves
    // range scans.
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    merged
}

/// One shard's entries: available drivers by leaf cell.
#[derive(Debug, Default)]
pub struct Cells {
    entries: BTreeMap<(u64, DriverId), DriverView>,
}

impl Cells {
    /// Stores (or refreshes) `view` at `cell`.
    pub fn put(&mut self, cell: u64, view: DriverView) {
        self.entries.insert((cell, view.id), view);
    }

    /// Removes `driver`'s entry at `cell`; whether there was one.
    pub fn remove(&mut self, cell: u64, driver: DriverId) -> bool {
        self.entries.remove(&(cell, driver)).is_some()
    }

    /// Whether `driver` has an entry at `cell`.
    pub fn contains(&self, cell: u64, driver: DriverId) -> bool {
        self.entries.contains_key(&(cell, driver))
    }

    /// Entries with leaf ids in `lo..=hi`, in key order.
    pub fn range(&self, lo: u64, hi: u64) -> impl Iterator<Item = (u64, &DriverView)> + '_ {
        self.entries
            .range((lo, DriverId(0))..=(hi, DriverId(u64::MAX)))
            .map(|((cell, _), view)| (*cell, view))
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &DriverView)> + '_ {
        self.entries.iter().map(|((cell, _), view)| (*cell, view))
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl ShardPayload for Cells {
    // `split_off` at each child's first key: O(log n) per cut, no entry copied
    // one by one, and no entry can land in two children or none.
    fn split(mut self, children: &[KeyRange; 4]) -> [Self; 4] {
        let cut = |cells: &mut Cells, at: u64| Cells {
            entries: cells.entries.split_off(&(at, DriverId(0))),
        };
        let fourth = cut(&mut self, children[3].first());
        let third = cut(&mut self, children[2].first());
        let second = cut(&mut self, children[1].first());
        [self, second, third, fourth]
    }

    fn merge(children: [Self; 4]) -> Self {
        let [mut merged, second, third, fourth] = children;
        for mut part in [second, third, fourth] {
            merged.entries.append(&mut part.entries);
        }
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use casebook_kit::partition::{s2_cell_range, s2_face_ranges};

    #[test]
    fn leaf_cells_are_leaves_inside_their_face_and_levels_follow_ranges() {
        let at = LatLng::new(37.7749, -122.4194).unwrap();
        let leaf = leaf_cell(at);
        assert_eq!(CellID(leaf).level(), 30);
        let face = CellID(leaf).face() as usize;
        assert!(s2_face_ranges()[face].contains(leaf));
        assert_eq!(range_level(s2_face_ranges()[face]), 0);
        for level in [0u64, 1, 6, 12, 29] {
            let cell = CellID(leaf).parent(level);
            let range = s2_cell_range(cell.0).unwrap();
            assert_eq!(u64::from(range_level(range)), level);
            assert_eq!(range_cell(range), cell);
            assert!(range.contains(leaf));
        }
    }

    #[test]
    fn a_covering_holds_the_leaf_of_every_point_inside_the_cap() {
        let at = LatLng::new(48.8566, 2.3522).unwrap();
        let ranges = covering_ranges(at, 2_000.0, 8);
        assert!(!ranges.is_empty() && ranges.len() <= 8);
        for step in 0..72 {
            let bearing = f64::from(step) * 5.0_f64.to_radians();
            // About 1.99 km away in every direction.
            let dlat = 1_990.0 / 111_195.0 * bearing.cos();
            let dlon = 1_990.0 / (111_195.0 * at.lat().to_radians().cos()) * bearing.sin();
            let p = LatLng::new(at.lat() + dlat, at.lon() + dlon).unwrap();
            assert!(p.distance_m(&at) < 2_000.0);
            let leaf = leaf_cell(p);
            assert!(ranges.iter().any(|&(lo, hi)| lo <= leaf && leaf <= hi));
        }
    }
}
