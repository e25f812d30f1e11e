//! Key ranges of the `u64` key space, and the S2 cell-id range math they follow.
//!
//! A [`KeyRange`] is an inclusive interval `first..=last` of `u64` keys. A shard
//! splits into its four [`quarters`](KeyRange::quarters): four consecutive,
//! equal-sized, disjoint sub-ranges whose union is the parent.
//!
//! ## Why quarters are S2 cells
//!
//! An S2 cell id at level `L` (face in the top 3 bits, then `2L` position bits, then
//! a `1` marker bit at position `2(30-L)` — its lowest set bit `lsb`) owns the
//! aligned, half-open block of ids `[id - lsb, id + lsb)`, that is the inclusive
//! range returned by [`s2_cell_range`]. Its four children have ids
//! `id - lsb + lsb/4 + k·lsb/2` for `k` in `0..4`, each with lowest set bit
//! `lsb/4`, so child `k` owns `[id - lsb + k·lsb/2, id - lsb + (k+1)·lsb/2)`:
//! exactly the `k`-th quarter of the parent's block. So splitting a shard whose
//! range is a cell's block yields the blocks of its four child cells, in child
//! order, and merging four sibling cells' blocks yields the parent's block (tested
//! below against the cell-id arithmetic).
//!
//! Caveat, documented on purpose: the leaf cell ids (level 30, odd numbers) of a
//! cell's descendants are exactly the odd numbers of its block, but a block also
//! holds even numbers that are ids of *coarser* cells (the cell's own id is in
//! the block of its child 2). Key shards by **leaf** cell id (what a point maps
//! to), never by the id of a coarse cell.

use std::fmt;

use super::PartitionError;

/// An inclusive range `first..=last` of the `u64` key space; never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyRange {
    first: u64,
    last: u64,
}

impl KeyRange {
    /// The whole key space.
    pub const FULL: KeyRange = KeyRange {
        first: 0,
        last: u64::MAX,
    };

    /// The range `first..=last`; an error if `first > last`.
    pub fn new(first: u64, last: u64) -> Result<Self, PartitionError> {
        if first > last {
            return Err(PartitionError::EmptyRange { first, last });
        }
        Ok(Self { first, last })
    }

    /// The first key.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// The last key (inclusive).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The number of keys; up to 2^64, hence `u128`.
    pub fn key_count(&self) -> u128 {
        u128::from(self.last - self.first) + 1
    }

    /// Whether `key` is in the range.
    pub fn contains(&self, key: u64) -> bool {
        self.first <= key && key <= self.last
    }

    /// Whether `other` lies entirely inside this range.
    pub fn covers(&self, other: &KeyRange) -> bool {
        self.first <= other.first && other.last <= self.last
    }

    /// Whether the two ranges share a key.
    pub fn overlaps(&self, other: &KeyRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }

    /// The four equal consecutive sub-ranges, or `None` if the length is not a
    /// multiple of four (a range of fewer than four keys cannot split).
    pub fn quarters(&self) -> Option<[KeyRange; 4]> {
        let len = self.key_count();
        if !len.is_multiple_of(4) {
            return None;
        }
        let quarter = len / 4;
        let start = u128::from(self.first);
        let part = |k: u128| KeyRange {
            first: (start + k * quarter) as u64,
            last: (start + (k + 1) * quarter - 1) as u64,
        };
        let parts = [part(0), part(1), part(2), part(3)];
        debug_assert_eq!(parts[0].first, self.first);
        debug_assert_eq!(parts[3].last, self.last);
        Some(parts)
    }

    /// The range of which `self` is a quarter, inside `root`, for a range `root`
    /// reached from by repeated quartering; `None` if `self` is `root` itself or
    /// does not sit on `root`'s quarter grid.
    pub fn parent_within(&self, root: &KeyRange) -> Option<KeyRange> {
        if !root.covers(self) || self == root {
            return None;
        }
        let parent_len = self.key_count().checked_mul(4)?;
        if parent_len > root.key_count() {
            return None;
        }
        let offset = u128::from(self.first - root.first);
        let parent_first = u128::from(root.first) + (offset / parent_len) * parent_len;
        let parent = KeyRange {
            first: parent_first as u64,
            last: (parent_first + parent_len - 1) as u64,
        };
        let is_quarter = parent
            .quarters()
            .is_some_and(|quarters| quarters.contains(self));
        is_quarter.then_some(parent)
    }
}

impl fmt::Display for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x}..={:#018x}", self.first, self.last)
    }
}

/// The number of S2 cube faces.
pub const S2_FACES: u64 = 6;
/// The finest S2 level (leaf cells).
pub const S2_MAX_LEVEL: u8 = 30;

/// Whether `cell_id` is a valid S2 cell id: face below 6, and its lowest set bit
/// at an even position (a level between 0 and 30).
pub fn s2_is_valid(cell_id: u64) -> bool {
    cell_id != 0 && (cell_id >> 61) < S2_FACES && cell_id.trailing_zeros().is_multiple_of(2)
}

/// The level (0 = face, 30 = leaf) of a valid S2 cell id.
pub fn s2_level(cell_id: u64) -> Result<u8, PartitionError> {
    if !s2_is_valid(cell_id) {
        return Err(PartitionError::InvalidS2Cell { cell_id });
    }
    Ok(S2_MAX_LEVEL - (cell_id.trailing_zeros() / 2) as u8)
}

/// The key range (aligned block) of the S2 cell `cell_id`: every leaf cell id
/// below it, see the module notes.
pub fn s2_cell_range(cell_id: u64) -> Result<KeyRange, PartitionError> {
    s2_level(cell_id)?;
    let lsb = cell_id & cell_id.wrapping_neg();
    Ok(KeyRange {
        first: cell_id - lsb,
        last: cell_id + (lsb - 1),
    })
}

/// The key ranges of the six S2 faces, in face order: the roots of a shard map
/// over S2 leaf cell ids.
pub fn s2_face_ranges() -> [KeyRange; 6] {
    std::array::from_fn(|face| {
        let id = ((2 * face as u64) + 1) << 60;
        s2_cell_range(id).expect("face ids are valid")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The four children of an S2 cell by the cell-id arithmetic of the S2 library
    /// (`child_begin = id - lsb + lsb/4`, step `lsb/2`).
    fn s2_children(cell_id: u64) -> [u64; 4] {
        let lsb = cell_id & cell_id.wrapping_neg();
        let begin = cell_id - lsb + lsb / 4;
        std::array::from_fn(|k| begin + k as u64 * (lsb / 2))
    }

    /// A valid S2 cell at `level` on `face` with position bits `pos`.
    fn cell(face: u64, pos: u64, level: u8) -> u64 {
        let shift = 2 * u32::from(S2_MAX_LEVEL - level) + 1;
        let pos_bits = if level == 0 {
            0
        } else {
            (pos & ((1u64 << (2 * u32::from(level))) - 1)) << shift
        };
        (face << 61) | pos_bits | (1u64 << (shift - 1))
    }

    #[test]
    fn faces_tile_the_valid_id_space_in_order() {
        let faces = s2_face_ranges();
        assert_eq!(faces[0].first(), 0);
        for pair in faces.windows(2) {
            assert_eq!(pair[0].last() + 1, pair[1].first());
        }
        assert_eq!(faces[5].last(), (6u64 << 61) - 1);
        assert_eq!(s2_level(1u64 << 60).unwrap(), 0);
    }

    #[test]
    fn invalid_cells_are_rejected_precisely() {
        for bad in [0u64, 2, 7u64 << 61 | 1, 6u64 << 61 | 1] {
            assert_eq!(
                s2_cell_range(bad),
                Err(PartitionError::InvalidS2Cell { cell_id: bad })
            );
        }
        assert!(KeyRange::new(5, 4).is_err());
    }

    #[test]
    fn full_space_quarters_and_parents() {
        let q = KeyRange::FULL.quarters().unwrap();
        assert_eq!(q[0], KeyRange::new(0, (1 << 62) - 1).unwrap());
        assert_eq!(q[3].last(), u64::MAX);
        for part in q {
            assert_eq!(part.parent_within(&KeyRange::FULL), Some(KeyRange::FULL));
        }
        assert_eq!(KeyRange::FULL.parent_within(&KeyRange::FULL), None);
        assert_eq!(KeyRange::new(0, 2).unwrap().quarters(), None);
        // Not on the grid: straddles two quarters.
        let off = KeyRange::new(1 << 61, (1 << 61) + (1 << 62) - 1).unwrap();
        assert_eq!(off.parent_within(&KeyRange::FULL), None);
    }

    proptest! {
        /// The claim of the module notes: the quarters of a cell's range are its
        /// children's ranges, in child order, and the parent of each is the cell.
        #[test]
        fn quarters_of_a_cell_range_are_its_children_ranges(
            face in 0u64..6, pos in any::<u64>(), level in 0u8..30
        ) {
            let id = cell(face, pos, level);
            prop_assert_eq!(s2_level(id).unwrap(), level);
            let range = s2_cell_range(id).unwrap();
            let root = s2_face_ranges()[face as usize];
            let children = s2_children(id);
            let quarters = range.quarters().unwrap();
            for k in 0..4 {
                prop_assert_eq!(s2_level(children[k]).unwrap(), level + 1);
                let child_range = s2_cell_range(children[k]).unwrap();
                prop_assert_eq!(quarters[k], child_range);
                prop_assert_eq!(child_range.parent_within(&root), Some(range));
            }
        }

        /// Every leaf below a cell lies in its range, and no other leaf does.
        #[test]
        fn a_cell_range_holds_exactly_its_leaves(
            face in 0u64..6, pos in any::<u64>(), level in 0u8..30, leaf_pos in any::<u64>()
        ) {
            let id = cell(face, pos, level);
            let range = s2_cell_range(id).unwrap();
            let leaf = cell(face, leaf_pos, 30);
            // The leaf is a descendant iff its top 2·level position bits match.
            let shift = 2 * u32::from(30 - level) + 1;
            let descends = leaf >> shift == id >> shift;
            prop_assert_eq!(range.contains(leaf), descends);
        }
    }
}
