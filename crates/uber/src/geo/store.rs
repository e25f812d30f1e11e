//! Where a geo set's members live: the [`GeoStore`] trait and the sorted set that
//! implements it here.
//!
//! A geo set is a Redis sorted set whose scores are 52-bit geohashes; everything
//! the commands need is: add/update with NX/XX semantics, remove, look up a
//! member's score, walk a score range in (score, member) order, and read by rank.
//! The search algorithm ([`super::search`]) only walks score ranges, so another
//! index can sit behind the same trait: one not ordered by geohash (the RESP
//! port's live key, a view of the S2 driver index) [narrows](GeoStore::narrow)
//! a search to its candidates first, and may refuse what it cannot do
//! ([`StoreError`]).
//!
//! Guarantees of [`SortedGeoSet`]: members are unique; iteration is by score, then
//! member bytes (Redis's order for equal scores); every operation is O(log n)
//! plus the size of what it returns. Not thread-safe by itself: the keyspace locks.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;

use bytes::Bytes;

/// A score, ordered totally (scores here are geohashes or distances, never NaN
/// in practice; `total_cmp` keeps the tree sound if one were).
#[derive(Debug, Clone, Copy)]
pub struct Score(pub f64);

impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// How an add treats existing and missing members (GEOADD's NX / XX).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddMode {
    /// Add new members, update existing ones.
    #[default]
    Upsert,
    /// Only add new members (NX).
    OnlyNew,
    /// Only update existing members (XX).
    OnlyExisting,
}

/// What one add did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    Added,
    Updated,
    Unchanged,
}

/// Why a store refused an operation: the error text a client is told (for
/// the RESP port, after `-ERR `).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// A point to add: its member, its exact position and the score (geohash) of it.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoPoint {
    pub member: Bytes,
    pub lon: f64,
    pub lat: f64,
    pub score: f64,
}

/// The storage behind one geo key.
pub trait GeoStore: Send + Sync + std::fmt::Debug {
    /// How many members.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// An estimate of the bytes the members take (for `maxmemory`; 0 for a
    /// view of data kept elsewhere).
    fn memory_bytes(&self) -> usize;
    /// Adds or moves `member` to `score` according to `mode`.
    fn add(&mut self, member: Bytes, score: f64, mode: AddMode) -> AddOutcome;
    /// GEOADD: every point checked first, then added; `(added, updated)`.
    /// Nothing is added when any point is refused.
    fn add_points(
        &mut self,
        points: Vec<GeoPoint>,
        mode: AddMode,
    ) -> Result<(usize, usize), StoreError> {
        let (mut added, mut updated) = (0, 0);
        for point in points {
            match self.add(point.member, point.score, mode) {
                AddOutcome::Added => added += 1,
                AddOutcome::Updated => updated += 1,
                AddOutcome::Unchanged => {}
            }
        }
        Ok((added, updated))
    }
    /// Removes `member`; whether it was there.
    fn remove(&mut self, member: &[u8]) -> bool;
    /// The member's score.
    fn score(&self, member: &[u8]) -> Option<f64>;
    /// Calls `visit` for every member with `min <= score < max`, in (score,
    /// member) order, until it breaks.
    fn scan(&self, min: f64, max: f64, visit: &mut dyn FnMut(f64, &Bytes) -> ControlFlow<()>);
    /// Members at ranks `start..=stop` (0-based, already clamped), ascending or
    /// descending.
    fn by_rank(
        &self,
        start: usize,
        stop: usize,
        reverse: bool,
    ) -> Result<Vec<(Bytes, f64)>, StoreError>;
    /// For a store whose score ranges are not cheap to walk (an index ordered
    /// otherwise): the members that may lie in `shape`, as a sorted set the
    /// search then runs on. `None` (the default): search this store itself.
    fn narrow(&self, shape: &super::search::Shape) -> Option<SortedGeoSet> {
        let _ = shape;
        None
    }
}

/// A sorted set: an ordered tree of (score, member) plus a member → score map.
#[derive(Debug, Default, Clone)]
pub struct SortedGeoSet {
    ordered: BTreeSet<(Score, Bytes)>,
    scores: HashMap<Bytes, f64>,
    /// The members' bytes, summed.
    member_bytes: usize,
}

/// What a member costs beyond its bytes: its tree entry and map entry with
/// their share of node and table slack, and the shared buffer's header.
pub const MEMBER_OVERHEAD: usize = 128;

impl GeoStore for SortedGeoSet {
    fn len(&self) -> usize {
        self.scores.len()
    }

    fn memory_bytes(&self) -> usize {
        self.member_bytes + self.len() * MEMBER_OVERHEAD
    }

    fn add(&mut self, member: Bytes, score: f64, mode: AddMode) -> AddOutcome {
        match self.scores.get_mut(&member) {
            Some(old) => {
                if mode == AddMode::OnlyNew {
                    return AddOutcome::Unchanged;
                }
                if *old == score {
                    return AddOutcome::Unchanged;
                }
                let previous = std::mem::replace(old, score);
                let entry = self
                    .ordered
                    .take(&(Score(previous), member))
                    .expect("ordered and scores hold the same members");
                self.ordered.insert((Score(score), entry.1));
                AddOutcome::Updated
            }
            None => {
                if mode == AddMode::OnlyExisting {
                    return AddOutcome::Unchanged;
                }
                self.member_bytes += member.len();
                self.scores.insert(member.clone(), score);
                self.ordered.insert((Score(score), member));
                AddOutcome::Added
            }
        }
    }

    fn remove(&mut self, member: &[u8]) -> bool {
        match self.scores.remove(member) {
            Some(score) => {
                self.member_bytes -= member.len();
                self.ordered
                    .remove(&(Score(score), Bytes::copy_from_slice(member)));
                true
            }
            None => false,
        }
    }

    fn score(&self, member: &[u8]) -> Option<f64> {
        self.scores.get(member).copied()
    }

    fn scan(&self, min: f64, max: f64, visit: &mut dyn FnMut(f64, &Bytes) -> ControlFlow<()>) {
        if min >= max {
            return;
        }
        // One descent to the first entry, then a walk until the score reaches
        // `max`: a bounded range would descend the tree a second time for its end,
        // and most scans here are short (searches scan many small cells).
        for (score, member) in self.ordered.range((Score(min), Bytes::new())..) {
            if score.0 >= max || visit(score.0, member).is_break() {
                return;
            }
        }
    }

    fn by_rank(
        &self,
        start: usize,
        stop: usize,
        reverse: bool,
    ) -> Result<Vec<(Bytes, f64)>, StoreError> {
        if start > stop || start >= self.len() {
            return Ok(Vec::new());
        }
        let take = stop - start + 1;
        let pick = |(score, member): &(Score, Bytes)| (member.clone(), score.0);
        Ok(if reverse {
            self.ordered
                .iter()
                .rev()
                .skip(start)
                .take(take)
                .map(pick)
                .collect()
        } else {
            self.ordered
                .iter()
                .skip(start)
                .take(take)
                .map(pick)
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_modes_and_order() {
        let mut set = SortedGeoSet::default();
        assert_eq!(
            set.add(Bytes::from("b"), 5.0, AddMode::Upsert),
            AddOutcome::Added
        );
        assert_eq!(
            set.add(Bytes::from("a"), 5.0, AddMode::Upsert),
            AddOutcome::Added
        );
        assert_eq!(
            set.add(Bytes::from("c"), 1.0, AddMode::OnlyExisting),
            AddOutcome::Unchanged
        );
        assert_eq!(
            set.add(Bytes::from("b"), 7.0, AddMode::OnlyNew),
            AddOutcome::Unchanged
        );
        assert_eq!(
            set.add(Bytes::from("b"), 7.0, AddMode::OnlyExisting),
            AddOutcome::Updated
        );
        assert_eq!(
            set.add(Bytes::from("b"), 7.0, AddMode::Upsert),
            AddOutcome::Unchanged
        );
        assert_eq!(set.len(), 2);
        let mut seen = Vec::new();
        set.scan(0.0, 8.0, &mut |s, m| {
            seen.push((s, m.clone()));
            ControlFlow::Continue(())
        });
        assert_eq!(seen, vec![(5.0, Bytes::from("a")), (7.0, Bytes::from("b"))]);
        let mut none = 0;
        set.scan(0.0, 5.0, &mut |_, _| {
            none += 1;
            ControlFlow::Continue(())
        });
        assert_eq!(none, 0, "max is exclusive");
        assert!(set.remove(b"a"));
        assert!(!set.remove(b"a"));
        assert_eq!(set.by_rank(0, 0, false), Ok(vec![(Bytes::from("b"), 7.0)]));
    }
}
