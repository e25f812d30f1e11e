//! [`ShardedIndex`]: a concurrent `u64 → V` map stored per shard of a
//! [`ShardMap`], whose shards split and merge at run time while readers and
//! writers carry on.
//!
//! Concurrency model: the shard layout sits behind one `RwLock`, each shard's
//! entries behind their own `Mutex`. A read or write takes the layout lock shared
//! and then the one shard's mutex, so operations on different shards run in
//! parallel and operations on one key are linearizable. A split or merge takes the
//! layout lock exclusively: it waits for in-flight operations to finish, moves the
//! entries (`BTreeMap::split_off`, `O(log n)` for a split; `append`, linear in the
//! four small cold siblings, for a merge) and bumps the epoch. The lock order is
//! always layout, then at most one shard mutex, so there is no deadlock.
//!
//! Guarantees: every key is in exactly one shard at every moment any operation
//! can observe; a split or merge never loses, duplicates or reorders an entry; every
//! `get`, `insert`, `update` and `remove` counts one unit of load on its shard.
//!
//! Not guaranteed: [`scan`](ShardedIndex::scan) reads shard after shard, so it
//! is not a snapshot across shards (entries written to a shard it already passed
//! are missed); a split stalls operations for its duration (short, but a pause,
//! not lock-free); parking_lot's `RwLock` is fair enough that a steady stream of
//! readers does not starve a split.

use std::collections::BTreeMap;

use parking_lot::{Mutex, RwLock};

use super::shard_map::{Rebalance, ShardId, ShardInfo, ShardMap, ShardMapConfig};
use super::{KeyRange, PartitionError};
use crate::clock::SharedClock;

/// Most entries one [`ShardedIndex::scan`] may return.
pub const MAX_SCAN: usize = 100_000;

type Entries<V> = Mutex<BTreeMap<u64, V>>;

/// A concurrent map from `u64` keys to `V`, partitioned by a [`ShardMap`].
#[derive(Debug)]
pub struct ShardedIndex<V> {
    map: RwLock<ShardMap<Entries<V>>>,
}

/// One shard as seen by [`ShardedIndex::shards`].
#[derive(Debug, Clone, PartialEq)]
pub struct IndexShardInfo {
    /// Layout and load.
    pub shard: ShardInfo,
    /// Entries stored in it.
    pub entries: usize,
}

impl<V> ShardedIndex<V> {
    /// An empty index over `config`'s roots.
    pub fn new(config: ShardMapConfig, clock: SharedClock) -> Result<Self, PartitionError> {
        Ok(Self {
            map: RwLock::new(ShardMap::new(config, clock)?),
        })
    }

    /// Stores `value` under `key`; returns the previous value.
    pub fn insert(&self, key: u64, value: V) -> Result<Option<V>, PartitionError> {
        self.map
            .read()
            .visit(key, 1.0, |_, entries| entries.lock().insert(key, value))
    }

    /// Removes `key`; returns its value.
    pub fn remove(&self, key: u64) -> Result<Option<V>, PartitionError> {
        self.map
            .read()
            .visit(key, 1.0, |_, entries| entries.lock().remove(&key))
    }

    /// Runs `f` on `key`'s value (`None` if absent).
    pub fn read<R>(&self, key: u64, f: impl FnOnce(Option<&V>) -> R) -> Result<R, PartitionError> {
        self.map
            .read()
            .visit(key, 1.0, |_, entries| f(entries.lock().get(&key)))
    }

    /// Read-modify-write of `key`'s slot, atomically: `f` gets the current value
    /// (or `None`); whatever the slot holds when `f` returns is stored (`None`
    /// removes the key).
    pub fn update<R>(
        &self,
        key: u64,
        f: impl FnOnce(&mut Option<V>) -> R,
    ) -> Result<R, PartitionError> {
        self.map.read().visit(key, 1.0, |_, entries| {
            let mut entries = entries.lock();
            let mut slot = entries.remove(&key);
            let result = f(&mut slot);
            if let Some(value) = slot {
                entries.insert(key, value);
            }
            result
        })
    }

    /// The shard that owns `key` now (may change on the next split or merge; see
    /// [`epoch`](Self::epoch)).
    pub fn shard_for(&self, key: u64) -> Result<ShardId, PartitionError> {
        self.map.read().shard_for(key)
    }

    /// Adds `weight` units of load to `key`'s shard without touching its entries.
    pub fn record_load(&self, key: u64, weight: f64) -> Result<ShardId, PartitionError> {
        self.map.read().record_load(key, weight)
    }

    /// The number of entries (shard by shard; not a snapshot under writes).
    pub fn len(&self) -> usize {
        self.map
            .read()
            .payloads()
            .map(|(_, entries)| entries.lock().len())
            .sum()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Incremented by every split and merge.
    pub fn epoch(&self) -> u64 {
        self.map.read().epoch()
    }

    /// Every shard with its load and entry count, in key order.
    pub fn shards(&self) -> Vec<IndexShardInfo> {
        let map = self.map.read();
        map.shards()
            .into_iter()
            .map(|shard| {
                let entries = map.payload(shard.id).map_or(0, |e| e.lock().len());
                IndexShardInfo { shard, entries }
            })
            .collect()
    }

    /// Splits shard `id` (see [`ShardMap::split`]).
    pub fn split(&self, id: ShardId) -> Result<[ShardId; 4], PartitionError> {
        self.map.write().split(id)
    }

    /// Merges the children of `parent` (see [`ShardMap::merge`]).
    pub fn merge(&self, parent: ShardId) -> Result<ShardId, PartitionError> {
        self.map.write().merge(parent)
    }

    /// The splits and merges current loads call for (see [`ShardMap::plan`]).
    pub fn plan(&self) -> Vec<Rebalance> {
        self.map.read().plan()
    }

    /// Carries out the plan (see [`ShardMap::rebalance`]); returns what was done.
    pub fn rebalance(&self) -> Vec<Rebalance> {
        // Plan under the shared lock so a quiet map never blocks its readers.
        if self.plan().is_empty() {
            return Vec::new();
        }
        self.map.write().rebalance()
    }

    /// Asserts the layout invariant and that every entry lies in its shard's
    /// range. For tests and debug checks.
    pub fn assert_invariants(&self) {
        let map = self.map.read();
        map.assert_invariants();
        for (id, entries) in map.payloads() {
            for key in entries.lock().keys() {
                assert!(id.range().contains(*key), "{key:#x} stored in {id}");
            }
        }
    }
}

impl<V: Clone> ShardedIndex<V> {
    /// A clone of `key`'s value.
    pub fn get(&self, key: u64) -> Result<Option<V>, PartitionError> {
        self.read(key, |value| value.cloned())
    }

    /// Up to `limit` (at most [`MAX_SCAN`]) entries with keys in `range`, in key
    /// order; see the module notes on consistency.
    pub fn scan(&self, range: KeyRange, limit: usize) -> Vec<(u64, V)> {
        let limit = limit.min(MAX_SCAN);
        let map = self.map.read();
        let mut out = Vec::new();
        for (_, entries) in map.overlapping(range) {
            let entries = entries.lock();
            let wanted = limit - out.len();
            out.extend(
                entries
                    .range(range.first()..=range.last())
                    .take(wanted)
                    .map(|(k, v)| (*k, v.clone())),
            );
            if out.len() >= limit {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::partition::stable_hash;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    fn small_config() -> ShardMapConfig {
        ShardMapConfig {
            max_depth: 6,
            max_shards: 256,
            ..ShardMapConfig::default()
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, u32),
        Remove(u64),
        Get(u64),
        Update(u64),
        /// Split the n-th shard (mod the shard count).
        Split(usize),
        /// Merge the parent of the n-th shard (mod the shard count).
        Merge(usize),
        Scan(u64, u64),
    }

    /// Keys cluster in a few places so splits leave entries on both sides.
    fn key() -> impl Strategy<Value = u64> {
        prop_oneof![
            any::<u64>(),
            (0u64..64).prop_map(|k| k << 58),
            (0u64..1_000).prop_map(|k| (1u64 << 62) + k * 17),
            Just(u64::MAX),
            Just(0),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (key(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            2 => key().prop_map(Op::Remove),
            2 => key().prop_map(Op::Get),
            1 => key().prop_map(Op::Update),
            2 => any::<usize>().prop_map(Op::Split),
            2 => any::<usize>().prop_map(Op::Merge),
            1 => (key(), key()).prop_map(|(a, b)| Op::Scan(a.min(b), a.max(b))),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// The index behaves like one BTreeMap whatever splits and merges happen in
        /// between, and every key is in exactly one shard throughout.
        #[test]
        fn index_matches_a_btreemap_through_splits_and_merges(
            ops in proptest::collection::vec(op(), 1..120)
        ) {
            let clock = ManualClock::new();
            let index = ShardedIndex::new(small_config(), clock.shared()).unwrap();
            let mut model = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        prop_assert_eq!(index.insert(k, v).unwrap(), model.insert(k, v));
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(index.remove(k).unwrap(), model.remove(&k));
                    }
                    Op::Get(k) => {
                        prop_assert_eq!(index.get(k).unwrap(), model.get(&k).copied());
                    }
                    Op::Update(k) => {
                        // Bump an existing value, delete on overflow, else insert 1.
                        let bump = |slot: &mut Option<u32>| {
                            *slot = match *slot {
                                Some(v) => v.checked_add(1),
                                None => Some(1),
                            };
                        };
                        index.update(k, bump).unwrap();
                        let mut slot = model.remove(&k);
                        bump(&mut slot);
                        if let Some(v) = slot {
                            model.insert(k, v);
                        }
                    }
                    Op::Split(n) => {
                        let shards = index.shards();
                        let target = shards[n % shards.len()].shard.id;
                        let before = index.epoch();
                        match index.split(target) {
                            Ok(children) => {
                                prop_assert_eq!(index.epoch(), before + 1);
                                let moved: usize = index
                                    .shards()
                                    .iter()
                                    .filter(|s| children.contains(&s.shard.id))
                                    .map(|s| s.entries)
                                    .sum();
                                prop_assert_eq!(moved, shards[n % shards.len()].entries);
                            }
                            Err(PartitionError::NotSplittable { .. })
                            | Err(PartitionError::TooManyShards { .. }) => {
                                prop_assert_eq!(index.epoch(), before);
                            }
                            Err(other) => prop_assert!(false, "split: {other}"),
                        }
                    }
                    Op::Merge(n) => {
                        let shards = index.shards();
                        let child = shards[n % shards.len()].shard.id;
                        let parent = index.map.read().parent_of(child);
                        if let Some(parent) = parent {
                            match index.merge(parent) {
                                Ok(_) | Err(PartitionError::NotMergeable { .. }) => {}
                                Err(other) => prop_assert!(false, "merge: {other}"),
                            }
                        }
                    }
                    Op::Scan(a, b) => {
                        let range = KeyRange::new(a, b).unwrap();
                        let expected: Vec<(u64, u32)> =
                            model.range(a..=b).take(50).map(|(k, v)| (*k, *v)).collect();
                        prop_assert_eq!(index.scan(range, 50), expected);
                    }
                }
                index.assert_invariants();
                prop_assert_eq!(index.len(), model.len());
            }
            for (k, v) in &model {
                prop_assert_eq!(index.get(*k).unwrap(), Some(*v));
            }
        }
    }

    #[test]
    fn readers_and_writers_never_miss_a_key_while_shards_split_and_merge() {
        let clock = ManualClock::new();
        let index = ShardedIndex::new(small_config(), clock.shared()).unwrap();
        let stable: Vec<u64> = (0..2_000u64).map(|k| stable_hash(&k)).collect();
        for &k in &stable {
            index.insert(k, k).unwrap();
        }
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            // Reshaper: splits and merges, round after round.
            scope.spawn(|| {
                for round in 0..200usize {
                    let shards = index.shards();
                    let pick = shards[round * 7 % shards.len()].shard.id;
                    if round % 3 == 2 {
                        let parent = index.map.read().parent_of(pick);
                        if let Some(parent) = parent {
                            let _ = index.merge(parent);
                        }
                    } else {
                        let _ = index.split(pick);
                    }
                }
                done.store(true, Ordering::SeqCst);
            });
            // Readers: every stable key is always there with its value.
            for reader in 0..2u64 {
                let (index, stable, done) = (&index, &stable, &done);
                scope.spawn(move || {
                    let mut passes = 0;
                    while !done.load(Ordering::SeqCst) || passes < 2 {
                        for &k in stable.iter().skip(reader as usize) {
                            assert_eq!(index.get(k).unwrap(), Some(k), "lost {k:#x}");
                        }
                        passes += 1;
                    }
                });
            }
            // Writer: inserts and removes its own keys, checking each answer.
            scope.spawn(|| {
                let mut i = 0u64;
                while !done.load(Ordering::SeqCst) {
                    let k = stable_hash(&(1_000_000 + i));
                    assert_eq!(index.insert(k, i).unwrap(), None);
                    assert_eq!(index.get(k).unwrap(), Some(i));
                    if i.is_multiple_of(2) {
                        assert_eq!(index.remove(k).unwrap(), Some(i));
                    }
                    i += 1;
                }
                let odd_kept = (0..i).filter(|j| j % 2 == 1).count();
                assert_eq!(index.len(), stable.len() + odd_kept);
            });
        });
        index.assert_invariants();
        assert!(index.epoch() > 0);
    }

    #[test]
    fn load_from_operations_drives_rebalance() {
        let clock = ManualClock::new();
        let config = ShardMapConfig {
            load_half_life: Duration::from_secs(1),
            split_above: 100.0,
            merge_below: 10.0,
            cooldown: Duration::from_secs(2),
            ..small_config()
        };
        let index = ShardedIndex::new(config, clock.shared()).unwrap();
        for i in 0..1_000u64 {
            clock.advance(Duration::from_millis(5));
            index.insert(i, i).unwrap();
        }
        assert_eq!(index.rebalance().len(), 1);
        assert_eq!(index.shards().len(), 4);
        assert_eq!(index.len(), 1_000);
        assert_eq!(index.get(999).unwrap(), Some(999));
        // Quiet: nothing to do, and no write lock taken.
        assert_eq!(index.rebalance(), vec![]);
        assert!(matches!(index.read(0, |v| v.copied()), Ok(Some(0))));
    }
}
