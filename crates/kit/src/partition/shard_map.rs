//! The shard map: a hierarchical, quad-splitting partition of the `u64` key space
//! that tracks load per shard, splits hot shards and merges cold siblings.
//!
//! The map starts with one shard per root range (the whole space, or the six S2
//! faces). A shard [splits](ShardMap::split) into its four
//! [quarters](KeyRange::quarters) and four sibling shards [merge](ShardMap::merge)
//! back into their parent. Each shard carries a payload `P` that moves with its
//! keys: [`ShardPayload`] says how a payload divides on a split and combines on a
//! merge (a `BTreeMap<u64, V>` divides with `split_off`, in `O(log n)`).
//!
//! Guarantees:
//! - The current shards (the leaves) are disjoint and their union is exactly the
//!   union of the roots, before and after every split or merge: every key of the
//!   roots is in exactly one shard. `shard_for` outside the roots is an error.
//! - Split and merge are all-or-nothing: an invalid request changes nothing.
//! - Load is a [`DecayingRate`] per shard on the injected clock. [`plan`] proposes
//!   a split for a shard whose rate exceeds `split_above` and a merge for four
//!   sibling leaves each below `merge_below`, where `4 · merge_below < split_above`
//!   (hysteresis: a merged parent is never hot on arrival, and split children start
//!   at a quarter of the parent's rate, above `merge_below`). A shard that just
//!   split or merged is left alone for `cooldown`, so its new rate can settle.
//!   Depth is bounded by `max_depth`, the shard count by `max_shards`.
//! - Every split or merge increments [`epoch`](ShardMap::epoch), so a caller that
//!   cached a `shard_for` answer can tell it may be stale.
//!
//! Not guaranteed:
//! - No background task: the owner calls [`rebalance`](ShardMap::rebalance) (or
//!   [`plan`] then `split`/`merge`) when it wants, e.g. on a timer.
//! - Split children inherit a quarter of the parent's rate each: the map assumes
//!   load spreads evenly until the children's own measurements say otherwise.
//! - `ShardMap` itself is `&mut self` for split and merge; concurrent use goes
//!   through [`ShardedIndex`](super::ShardedIndex), which states its model.
//!
//! [`plan`]: ShardMap::plan

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::PartitionError;
use super::load::{DecayingRate, MIN_HALF_LIFE};
use super::range::{KeyRange, s2_face_ranges};
use crate::clock::SharedClock;

/// Most root ranges a map may have.
pub const MAX_ROOTS: usize = 64;
/// Deepest a shard may be below its root: 32 quarterings take 2^64 keys to 1.
pub const MAX_DEPTH_LIMIT: u8 = 32;
/// Upper bound on `max_shards`.
pub const MAX_SHARDS_LIMIT: usize = 1 << 20;

/// A shard, named by the key range it owns (unique among all shards a map can
/// ever have, since a parent and its children have different lengths).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(KeyRange);

impl ShardId {
    /// The shard for `range` (to name a parent for [`ShardMap::merge`]).
    pub fn new(range: KeyRange) -> Self {
        Self(range)
    }

    /// The keys this shard owns.
    pub fn range(&self) -> KeyRange {
        self.0
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard[{}]", self.0)
    }
}

/// What a shard carries, and how it follows its keys through splits and merges.
pub trait ShardPayload: Sized {
    /// Divides the payload of a shard among its four children, in order; each
    /// part must hold exactly the parent's content for the child's range.
    fn split(self, children: &[KeyRange; 4]) -> [Self; 4];
    /// Combines four siblings' payloads, in order, into their parent's.
    fn merge(children: [Self; 4]) -> Self;
}

impl ShardPayload for () {
    fn split(self, _children: &[KeyRange; 4]) -> [Self; 4] {
        [(); 4]
    }
    fn merge(_children: [Self; 4]) -> Self {}
}

impl<V> ShardPayload for BTreeMap<u64, V> {
    fn split(mut self, children: &[KeyRange; 4]) -> [Self; 4] {
        let fourth = self.split_off(&children[3].first());
        let third = self.split_off(&children[2].first());
        let second = self.split_off(&children[1].first());
        [self, second, third, fourth]
    }

    fn merge(children: [Self; 4]) -> Self {
        let [mut merged, second, third, fourth] = children;
        for mut part in [second, third, fourth] {
            merged.append(&mut part);
        }
        merged
    }
}

impl<P: ShardPayload> ShardPayload for Mutex<P> {
    fn split(self, children: &[KeyRange; 4]) -> [Self; 4] {
        self.into_inner().split(children).map(Mutex::new)
    }
    fn merge(children: [Self; 4]) -> Self {
        Mutex::new(P::merge(children.map(Mutex::into_inner)))
    }
}

/// When and how far the map splits and merges.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardMapConfig {
    /// Disjoint root ranges; their union is the key space the map accepts.
    pub roots: Vec<KeyRange>,
    /// Half-life of the per-shard load estimate.
    pub load_half_life: Duration,
    /// Split a shard whose load (units per second) is above this.
    pub split_above: f64,
    /// Merge four siblings when each one's load is below this; must be below
    /// `split_above / 4`.
    pub merge_below: f64,
    /// Deepest a shard may be below its root.
    pub max_depth: u8,
    /// Time a new shard is left alone before it may split or merge.
    pub cooldown: Duration,
    /// Most shards (leaves) the map may hold.
    pub max_shards: usize,
}

impl Default for ShardMapConfig {
    fn default() -> Self {
        Self {
            roots: vec![KeyRange::FULL],
            load_half_life: Duration::from_secs(10),
            split_above: 1_000.0,
            merge_below: 100.0,
            max_depth: 12,
            cooldown: Duration::from_secs(30),
            max_shards: 4_096,
        }
    }
}

impl ShardMapConfig {
    /// The defaults, over S2 leaf cell ids: one root per cube face.
    pub fn s2() -> Self {
        Self {
            roots: s2_face_ranges().to_vec(),
            // A level-18 cell is about 35 m across (~1,200 m²): fine enough for
            // the hottest downtown cell, coarse enough to bound the shard count.
            max_depth: 18,
            ..Self::default()
        }
    }

    /// Checks every field; the error names the field at fault.
    pub fn validate(&self) -> Result<(), PartitionError> {
        let invalid = |field: &'static str, reason: String| {
            Err(PartitionError::InvalidConfig { field, reason })
        };
        if self.roots.is_empty() || self.roots.len() > MAX_ROOTS {
            return invalid(
                "roots",
                format!("need 1 to {MAX_ROOTS} roots, got {}", self.roots.len()),
            );
        }
        let mut sorted = self.roots.clone();
        sorted.sort();
        if let Some(pair) = sorted.windows(2).find(|p| p[0].overlaps(&p[1])) {
            return invalid("roots", format!("{} overlaps {}", pair[0], pair[1]));
        }
        if self.load_half_life < MIN_HALF_LIFE {
            return invalid(
                "load_half_life",
                format!("must be at least {MIN_HALF_LIFE:?}"),
            );
        }
        if !self.split_above.is_finite() || self.split_above <= 0.0 {
            return invalid("split_above", "must be finite and positive".into());
        }
        if !self.merge_below.is_finite()
            || self.merge_below < 0.0
            || 4.0 * self.merge_below >= self.split_above
        {
            return invalid(
                "merge_below",
                "must be finite, non-negative and below split_above / 4".into(),
            );
        }
        if self.max_depth > MAX_DEPTH_LIMIT {
            return invalid("max_depth", format!("must be at most {MAX_DEPTH_LIMIT}"));
        }
        if self.max_shards < self.roots.len() || self.max_shards > MAX_SHARDS_LIMIT {
            return invalid(
                "max_shards",
                format!("must be between the number of roots and {MAX_SHARDS_LIMIT}"),
            );
        }
        Ok(())
    }
}

/// A split or a merge, proposed by [`ShardMap::plan`] or done by
/// [`ShardMap::rebalance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebalance {
    /// Split this hot shard into its four quarters.
    Split(ShardId),
    /// Merge the four cold children of this parent back into it.
    Merge(ShardId),
}

/// A snapshot of one shard.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardInfo {
    /// The shard.
    pub id: ShardId,
    /// Quarterings below its root.
    pub depth: u8,
    /// Load estimate, units per second.
    pub load_per_sec: f64,
}

#[derive(Debug)]
struct Leaf<P> {
    range: KeyRange,
    root: KeyRange,
    depth: u8,
    load: Mutex<DecayingRate>,
    settled_at: Instant,
    payload: P,
}

impl<P> Leaf<P> {
    fn id(&self) -> ShardId {
        ShardId(self.range)
    }
}

/// The partition of the key space into shards; see the module notes.
#[derive(Debug)]
pub struct ShardMap<P = ()> {
    config: ShardMapConfig,
    clock: SharedClock,
    /// The current shards, keyed by their first key.
    leaves: BTreeMap<u64, Leaf<P>>,
    epoch: u64,
}

impl<P: ShardPayload + Default> ShardMap<P> {
    /// A map with one shard per root.
    pub fn new(config: ShardMapConfig, clock: SharedClock) -> Result<Self, PartitionError> {
        config.validate()?;
        let now = clock.now();
        let leaves = config
            .roots
            .iter()
            .map(|&root| {
                let leaf = Leaf {
                    range: root,
                    root,
                    depth: 0,
                    load: Mutex::new(DecayingRate::new(config.load_half_life, now, 0.0)),
                    settled_at: now,
                    payload: P::default(),
                };
                (root.first(), leaf)
            })
            .collect();
        Ok(Self {
            config,
            clock,
            leaves,
            epoch: 0,
        })
    }
}

impl<P: ShardPayload> ShardMap<P> {
    /// The configuration.
    pub fn config(&self) -> &ShardMapConfig {
        &self.config
    }

    /// Incremented by every split and merge.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The number of shards.
    pub fn shard_count(&self) -> usize {
        self.leaves.len()
    }

    fn leaf_for(&self, key: u64) -> Result<&Leaf<P>, PartitionError> {
        self.leaves
            .range(..=key)
            .next_back()
            .map(|(_, leaf)| leaf)
            .filter(|leaf| leaf.range.contains(key))
            .ok_or(PartitionError::KeyOutsideShards { key })
    }

    /// The shard that owns `key`.
    pub fn shard_for(&self, key: u64) -> Result<ShardId, PartitionError> {
        self.leaf_for(key).map(Leaf::id)
    }

    /// Adds `weight` units of load to `key`'s shard; returns the shard.
    pub fn record_load(&self, key: u64, weight: f64) -> Result<ShardId, PartitionError> {
        self.visit(key, weight, |id, _| id)
    }

    /// Runs `f` on `key`'s shard and its payload, after adding `weight` units of
    /// load to the shard (0 records nothing).
    pub fn visit<R>(
        &self,
        key: u64,
        weight: f64,
        f: impl FnOnce(ShardId, &P) -> R,
    ) -> Result<R, PartitionError> {
        let leaf = self.leaf_for(key)?;
        if weight > 0.0 {
            leaf.load.lock().record(self.clock.now(), weight);
        }
        Ok(f(leaf.id(), &leaf.payload))
    }

    /// The shards overlapping `range` with their payloads, in key order.
    pub fn overlapping(&self, range: KeyRange) -> impl Iterator<Item = (ShardId, &P)> + '_ {
        // The shard holding range.first starts at or before it; later ones after.
        let start = self
            .leaves
            .range(..=range.first())
            .next_back()
            .map_or(range.first(), |(&first, _)| first);
        self.leaves
            .range(start..=range.last())
            .map(|(_, leaf)| leaf)
            .filter(move |leaf| leaf.range.overlaps(&range))
            .map(|leaf| (leaf.id(), &leaf.payload))
    }

    /// The payload of shard `id`, if it is a current shard.
    pub fn payload(&self, id: ShardId) -> Option<&P> {
        self.current(id).map(|leaf| &leaf.payload)
    }

    /// Every payload, in key order.
    pub fn payloads(&self) -> impl Iterator<Item = (ShardId, &P)> + '_ {
        self.leaves.values().map(|leaf| (leaf.id(), &leaf.payload))
    }

    fn current(&self, id: ShardId) -> Option<&Leaf<P>> {
        self.leaves
            .get(&id.0.first())
            .filter(|leaf| leaf.range == id.0)
    }

    /// A snapshot of every shard, in key order.
    pub fn shards(&self) -> Vec<ShardInfo> {
        let now = self.clock.now();
        self.leaves
            .values()
            .map(|leaf| ShardInfo {
                id: leaf.id(),
                depth: leaf.depth,
                load_per_sec: leaf.load.lock().per_second(now),
            })
            .collect()
    }

    /// The parent of shard `id`, or `None` for a root or a non-current shard.
    pub fn parent_of(&self, id: ShardId) -> Option<ShardId> {
        let leaf = self.current(id)?;
        leaf.range.parent_within(&leaf.root).map(ShardId)
    }

    /// Splits shard `id` into its four quarters; returns them in key order.
    pub fn split(&mut self, id: ShardId) -> Result<[ShardId; 4], PartitionError> {
        let not_splittable = |reason: String| PartitionError::NotSplittable { shard: id, reason };
        let leaf = self
            .current(id)
            .ok_or(PartitionError::UnknownShard { shard: id })?;
        if leaf.depth >= self.config.max_depth {
            return Err(not_splittable(format!(
                "at max_depth {}",
                self.config.max_depth
            )));
        }
        let Some(quarters) = leaf.range.quarters() else {
            return Err(not_splittable("length is not a multiple of 4".into()));
        };
        if self.leaves.len() + 3 > self.config.max_shards {
            return Err(PartitionError::TooManyShards {
                max: self.config.max_shards,
            });
        }
        let leaf = self
            .leaves
            .remove(&id.0.first())
            .expect("current() found this leaf");
        let now = self.clock.now();
        let child_rate = leaf.load.into_inner().per_second(now) / 4.0;
        let payloads = leaf.payload.split(&quarters);
        for (range, payload) in quarters.into_iter().zip(payloads) {
            let child = Leaf {
                range,
                root: leaf.root,
                depth: leaf.depth + 1,
                load: Mutex::new(DecayingRate::new(
                    self.config.load_half_life,
                    now,
                    child_rate,
                )),
                settled_at: now,
                payload,
            };
            let previous = self.leaves.insert(range.first(), child);
            debug_assert!(previous.is_none(), "quarters start at distinct keys");
        }
        self.epoch += 1;
        Ok(quarters.map(ShardId))
    }

    /// Merges the four children of `parent`, all current shards, back into it.
    pub fn merge(&mut self, parent: ShardId) -> Result<ShardId, PartitionError> {
        let not_mergeable = |reason: &str| PartitionError::NotMergeable {
            parent,
            reason: reason.to_string(),
        };
        let quarters = parent
            .0
            .quarters()
            .ok_or_else(|| not_mergeable("its length is not a multiple of 4"))?;
        for quarter in &quarters {
            let child = self
                .current(ShardId(*quarter))
                .ok_or_else(|| not_mergeable("its four children are not all current shards"))?;
            if child.range.parent_within(&child.root) != Some(parent.0) {
                return Err(not_mergeable("it is not on its root's quarter grid"));
            }
        }
        let now = self.clock.now();
        let children = quarters.map(|quarter| {
            self.leaves
                .remove(&quarter.first())
                .expect("checked above that every child is current")
        });
        let (root, depth) = (children[0].root, children[0].depth - 1);
        let mut rate = 0.0;
        let payloads = children.map(|child| {
            rate += child.load.into_inner().per_second(now);
            child.payload
        });
        let merged = Leaf {
            range: parent.0,
            root,
            depth,
            load: Mutex::new(DecayingRate::new(self.config.load_half_life, now, rate)),
            settled_at: now,
            payload: P::merge(payloads),
        };
        self.leaves.insert(parent.0.first(), merged);
        self.epoch += 1;
        Ok(parent)
    }

    /// The splits and merges the current loads call for (see the module notes),
    /// in key order; changes nothing.
    pub fn plan(&self) -> Vec<Rebalance> {
        let now = self.clock.now();
        let config = &self.config;
        let settled =
            |leaf: &Leaf<P>| now.saturating_duration_since(leaf.settled_at) >= config.cooldown;
        let rate = |leaf: &Leaf<P>| leaf.load.lock().per_second(now);
        let leaves: Vec<&Leaf<P>> = self.leaves.values().collect();
        let mut plan = Vec::new();
        let mut index = 0;
        while index < leaves.len() {
            let leaf = leaves[index];
            if settled(leaf) && rate(leaf) > config.split_above {
                if leaf.depth < config.max_depth && leaf.range.quarters().is_some() {
                    plan.push(Rebalance::Split(leaf.id()));
                }
                index += 1;
                continue;
            }
            // A merge starts at the first child of a parent whose four children
            // are the next four leaves.
            let siblings = leaf
                .range
                .parent_within(&leaf.root)
                .filter(|parent| parent.first() == leaf.range.first())
                .and_then(|parent| parent.quarters().map(|q| (parent, q)))
                .filter(|(_, quarters)| {
                    leaves
                        .get(index..index + 4)
                        .is_some_and(|next| next.iter().zip(quarters).all(|(l, q)| l.range == *q))
                });
            if let Some((parent, _)) = siblings {
                let cold = leaves[index..index + 4]
                    .iter()
                    .all(|l| settled(l) && rate(l) < config.merge_below);
                if cold {
                    plan.push(Rebalance::Merge(ShardId(parent)));
                    index += 4;
                    continue;
                }
            }
            index += 1;
        }
        plan
    }

    /// Carries out [`plan`](Self::plan); returns what was done. Splits that would
    /// pass `max_shards` are skipped (merges first make room).
    pub fn rebalance(&mut self) -> Vec<Rebalance> {
        let plan = self.plan();
        let (merges, splits): (Vec<_>, Vec<_>) = plan
            .into_iter()
            .partition(|action| matches!(action, Rebalance::Merge(_)));
        let mut done = Vec::new();
        for action in merges.into_iter().chain(splits) {
            let result = match action {
                Rebalance::Split(id) => self.split(id).map(|_| ()),
                Rebalance::Merge(parent) => self.merge(parent).map(|_| ()),
            };
            if result.is_ok() {
                done.push(action);
            }
        }
        done
    }

    /// Asserts the partition invariant: leaves disjoint, on their roots' grids,
    /// and covering every root exactly. For tests and debug checks.
    pub fn assert_invariants(&self) {
        let mut roots = self.config.roots.clone();
        roots.sort();
        let mut leaves = self.leaves.values().peekable();
        for root in roots {
            let mut expected_next = u128::from(root.first());
            while let Some(leaf) = leaves.next_if(|leaf| root.covers(&leaf.range)) {
                assert_eq!(leaf.root, root, "{} has the wrong root", leaf.id());
                assert_eq!(
                    u128::from(leaf.range.first()),
                    expected_next,
                    "gap or overlap before {}",
                    leaf.id()
                );
                assert_eq!(
                    leaf.range.key_count() * 4u128.pow(u32::from(leaf.depth)),
                    root.key_count(),
                    "{} has the wrong depth",
                    leaf.id()
                );
                expected_next = u128::from(leaf.range.last()) + 1;
            }
            assert_eq!(
                expected_next,
                u128::from(root.last()) + 1,
                "root {root} not fully covered"
            );
        }
        assert!(leaves.next().is_none(), "a leaf outside every root");
        assert!(self.leaves.len() <= self.config.max_shards);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn config() -> ShardMapConfig {
        ShardMapConfig {
            load_half_life: Duration::from_secs(1),
            split_above: 100.0,
            merge_below: 10.0,
            max_depth: 3,
            cooldown: Duration::from_secs(5),
            ..ShardMapConfig::default()
        }
    }

    fn drive(map: &ShardMap, clock: &ManualClock, keys: &[u64], per_sec: u32, secs: u32) {
        let step = Duration::from_secs(1) / per_sec;
        for _ in 0..per_sec * secs {
            clock.advance(step);
            for &key in keys {
                map.record_load(key, 1.0).unwrap();
            }
        }
    }

    #[test]
    fn config_errors_name_the_field() {
        let cases: Vec<(ShardMapConfig, &str)> = vec![
            (
                ShardMapConfig {
                    roots: vec![],
                    ..config()
                },
                "roots",
            ),
            (
                ShardMapConfig {
                    roots: vec![
                        KeyRange::new(0, 10).unwrap(),
                        KeyRange::new(10, 20).unwrap(),
                    ],
                    ..config()
                },
                "roots",
            ),
            (
                ShardMapConfig {
                    merge_below: 25.0,
                    ..config()
                },
                "merge_below",
            ),
            (
                ShardMapConfig {
                    split_above: f64::NAN,
                    ..config()
                },
                "split_above",
            ),
            (
                ShardMapConfig {
                    max_depth: 33,
                    ..config()
                },
                "max_depth",
            ),
            (
                ShardMapConfig {
                    max_shards: 0,
                    ..config()
                },
                "max_shards",
            ),
            (
                ShardMapConfig {
                    load_half_life: Duration::ZERO,
                    ..config()
                },
                "load_half_life",
            ),
        ];
        for (bad, field) in cases {
            match bad.validate() {
                Err(PartitionError::InvalidConfig { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        assert!(ShardMapConfig::s2().validate().is_ok());
    }

    #[test]
    fn hot_shard_splits_then_cold_children_merge_back() {
        let clock = ManualClock::new();
        let mut map: ShardMap = ShardMap::new(config(), clock.shared()).unwrap();
        let root = map.shard_for(42).unwrap();
        assert_eq!(root.range(), KeyRange::FULL);

        // 200/s on one key: hot, but still in cooldown at first.
        drive(&map, &clock, &[42], 200, 4);
        assert_eq!(map.plan(), vec![]);
        drive(&map, &clock, &[42], 200, 2);
        assert_eq!(map.plan(), vec![Rebalance::Split(root)]);
        assert_eq!(map.rebalance(), vec![Rebalance::Split(root)]);
        assert_eq!(map.epoch(), 1);
        let child = map.shard_for(42).unwrap();
        assert_eq!(child.range(), KeyRange::FULL.quarters().unwrap()[0]);
        map.assert_invariants();

        // The children start at a quarter of the parent's rate: not cold.
        let info = map.shards();
        assert!(info.iter().all(|s| s.load_per_sec > 40.0), "{info:?}");

        // Keep the key hot for a while: child 0 splits again after its cooldown,
        // its cold siblings stay (their grandparent is not mergeable: child 0 is
        // no longer a leaf).
        drive(&map, &clock, &[42], 200, 6);
        assert_eq!(map.rebalance(), vec![Rebalance::Split(child)]);
        assert_eq!(map.shard_count(), 7);
        map.assert_invariants();

        // Silence: the grandchildren go cold and merge, then the children.
        clock.advance(Duration::from_secs(30));
        assert_eq!(map.rebalance(), vec![Rebalance::Merge(child)]);
        clock.advance(Duration::from_secs(30));
        assert_eq!(map.rebalance(), vec![Rebalance::Merge(root)]);
        assert_eq!(map.shard_count(), 1);
        assert_eq!(map.epoch(), 4);
        map.assert_invariants();
    }

    #[test]
    fn depth_and_shard_limits_stop_splits() {
        let clock = ManualClock::new();
        let mut map: ShardMap = ShardMap::new(
            ShardMapConfig {
                max_shards: 7,
                ..config()
            },
            clock.shared(),
        )
        .unwrap();
        let mut id = map.shard_for(0).unwrap();
        id = map.split(id).unwrap()[0];
        id = map.split(id).unwrap()[0];
        assert_eq!(map.split(id), Err(PartitionError::TooManyShards { max: 7 }));

        let mut deep: ShardMap = ShardMap::new(config(), clock.shared()).unwrap();
        let mut id = deep.shard_for(0).unwrap();
        for _ in 0..3 {
            id = deep.split(id).unwrap()[0];
        }
        assert!(matches!(
            deep.split(id),
            Err(PartitionError::NotSplittable { .. })
        ));
        // A max-depth shard that is hot is not proposed for a split.
        drive(&deep, &clock, &[0], 200, 10);
        assert_eq!(deep.plan(), vec![]);
    }

    #[test]
    fn bad_merges_and_splits_change_nothing() {
        let clock = ManualClock::new();
        let mut map: ShardMap = ShardMap::new(config(), clock.shared()).unwrap();
        let root = map.shard_for(0).unwrap();
        let children = map.split(root).unwrap();
        map.split(children[1]).unwrap();
        let before = map.shards();
        // Not all four children of root are leaves now.
        assert!(matches!(
            map.merge(root),
            Err(PartitionError::NotMergeable { .. })
        ));
        // A range that is no shard's parent.
        let bogus = ShardId::new(KeyRange::new(1, 4).unwrap());
        assert!(matches!(
            map.merge(bogus),
            Err(PartitionError::NotMergeable { .. })
        ));
        assert_eq!(
            map.split(root),
            Err(PartitionError::UnknownShard { shard: root })
        );
        assert_eq!(map.shards(), before);
        assert_eq!(map.epoch(), 2);
        assert_eq!(map.parent_of(children[0]), Some(root));
        assert_eq!(map.parent_of(root), None);
        map.assert_invariants();
    }

    #[test]
    fn s2_roots_reject_keys_outside_the_faces() {
        let clock = ManualClock::new();
        let map: ShardMap = ShardMap::new(ShardMapConfig::s2(), clock.shared()).unwrap();
        assert_eq!(map.shard_count(), 6);
        let outside = 6u64 << 61;
        assert_eq!(
            map.shard_for(outside),
            Err(PartitionError::KeyOutsideShards { key: outside })
        );
        let face3 = map.shard_for((3u64 << 61) | 1).unwrap();
        assert_eq!(face3.range(), s2_face_ranges()[3]);
        let overlapping: Vec<ShardId> = map
            .overlapping(KeyRange::new((1u64 << 61) + 5, (3u64 << 61) + 5).unwrap())
            .map(|(id, _)| id)
            .collect();
        let faces = s2_face_ranges();
        assert_eq!(
            overlapping,
            vec![ShardId(faces[1]), ShardId(faces[2]), ShardId(faces[3])]
        );
    }
}
