//! Sharded locks (P13): `N` mutexes, a key picks one by hash; several keys are
//! locked at once in a fixed global order, so multi-key critical sections cannot
//! deadlock one another.
//!
//! Two flavours share one algorithm ([`acquisition_order`]):
//! - [`ShardedLocks`] over `parking_lot::Mutex`, for short synchronous critical
//!   sections. Its guards are not `Send` and **must not be held across an
//!   `.await`**: a task parked while holding a shard stalls every other key of the
//!   shard and, on a current-thread runtime, can deadlock the runtime.
//! - [`AsyncShardedLocks`] over `tokio::sync::Mutex` with owned guards, for critical
//!   sections that await (I/O, a WAL append); guards are `Send + 'static`.
//!
//! Each shard guards a value `T` (default `()`, plain lock striping): a per-shard
//! counter table, a small map, or nothing.
//!
//! Guarantees:
//! - Mutual exclusion per shard; two keys on one shard are one lock, taken once.
//! - Deadlock freedom among callers that only lock through these methods: a
//!   multi-key acquisition locks the distinct shard indices in ascending order
//!   (model-checked with `shuttle` below, along with mutual exclusion).
//! - Bounded: at most [`MAX_SHARDS`] shards and [`MAX_KEYS_PER_ACQUIRE`] keys per
//!   multi-key acquisition; more is an error, not an unbounded allocation.
//! - The key → shard mapping is the stable hash of the key, identical across runs.
//!
//! Not guaranteed:
//! - Freedom from deadlock if a caller holds one guard and then takes another
//!   (lock all the keys you need in one `lock_many` call instead), nor across
//!   other locks taken while a guard is held.
//! - Fairness beyond the underlying mutex's (parking_lot is eventually fair; tokio's
//!   is FIFO).
//! - Keys on one shard are serialised even if they are unrelated (that is the
//!   price of striping; more shards make it rarer).

use std::fmt;
use std::hash::Hash;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use crate::partition::{fast_range, stable_hash};

/// Most shards a lock set may have.
pub const MAX_SHARDS: usize = 1 << 16;
/// Most keys one multi-key acquisition may name.
pub const MAX_KEYS_PER_ACQUIRE: usize = 1_024;

/// Misuse of a sharded lock set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// A shard count of 0 or above [`MAX_SHARDS`].
    #[error("shard count must be between 1 and {MAX_SHARDS}, got {got}")]
    ShardCount {
        /// The count asked for.
        got: usize,
    },
    /// More than [`MAX_KEYS_PER_ACQUIRE`] keys in one acquisition.
    #[error("at most {MAX_KEYS_PER_ACQUIRE} keys per acquisition, got {got}")]
    TooManyKeys {
        /// The number of keys given.
        got: usize,
    },
}

/// The shard index of `key` among `shards` shards.
pub fn shard_index<K: Hash + ?Sized>(key: &K, shards: usize) -> usize {
    debug_assert!(shards > 0);
    fast_range(stable_hash(key), shards)
}

/// The order in which a multi-key acquisition locks shards: the distinct shard
/// indices of `keys`, ascending. This one rule is what makes the locks deadlock
/// free; both flavours use it.
pub fn acquisition_order<'k, K, I>(keys: I, shards: usize) -> Result<Vec<usize>, LockError>
where
    K: Hash + ?Sized + 'k,
    I: IntoIterator<Item = &'k K>,
{
    let mut keys = keys.into_iter();
    let mut order = Vec::new();
    while let Some(key) = keys.next() {
        if order.len() == MAX_KEYS_PER_ACQUIRE {
            let got = MAX_KEYS_PER_ACQUIRE + 1 + keys.count();
            return Err(LockError::TooManyKeys { got });
        }
        order.push(shard_index(key, shards));
    }
    order.sort_unstable();
    order.dedup();
    debug_assert!(order.windows(2).all(|w| w[0] < w[1]));
    Ok(order)
}

/// A mutex the sharded-lock algorithm can run on: `parking_lot::Mutex` in
/// production, shuttle's instrumented mutex in the model-checking tests.
pub trait ShardMutex: Send + Sync {
    /// What the mutex guards.
    type Value;
    /// The guard of a held lock.
    type Guard<'a>: DerefMut<Target = Self::Value>
    where
        Self: 'a;
    /// A mutex holding `value`.
    fn new(value: Self::Value) -> Self;
    /// Blocks until the lock is held.
    fn lock(&self) -> Self::Guard<'_>;
}

impl<T: Send> ShardMutex for parking_lot::Mutex<T> {
    type Value = T;
    type Guard<'a>
        = parking_lot::MutexGuard<'a, T>
    where
        T: 'a;
    fn new(value: T) -> Self {
        parking_lot::Mutex::new(value)
    }
    fn lock(&self) -> Self::Guard<'_> {
        parking_lot::Mutex::lock(self)
    }
}

/// Sharded synchronous locks over any [`ShardMutex`]; use [`ShardedLocks`].
pub struct RawShardedLocks<M> {
    shards: Box<[M]>,
}

/// Sharded synchronous locks over `parking_lot`, each shard guarding a `T`.
pub type ShardedLocks<T = ()> = RawShardedLocks<parking_lot::Mutex<T>>;

impl<M> fmt::Debug for RawShardedLocks<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardedLocks")
            .field("shards", &self.shards.len())
            .finish()
    }
}

fn check_shard_count(shards: usize) -> Result<(), LockError> {
    if shards == 0 || shards > MAX_SHARDS {
        return Err(LockError::ShardCount { got: shards });
    }
    Ok(())
}

impl<M: ShardMutex> RawShardedLocks<M> {
    /// `shards` shards, each guarding `M::Value::default()`.
    pub fn new(shards: usize) -> Result<Self, LockError>
    where
        M::Value: Default,
    {
        check_shard_count(shards)?;
        Ok(Self {
            shards: (0..shards).map(|_| M::new(M::Value::default())).collect(),
        })
    }

    /// One shard per value, guarding it.
    pub fn with_values(values: Vec<M::Value>) -> Result<Self, LockError> {
        check_shard_count(values.len())?;
        Ok(Self {
            shards: values.into_iter().map(M::new).collect(),
        })
    }

    /// The number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The shard `key` maps to.
    pub fn shard_of<K: Hash + ?Sized>(&self, key: &K) -> usize {
        shard_index(key, self.shards.len())
    }

    /// Locks `key`'s shard.
    pub fn lock<K: Hash + ?Sized>(&self, key: &K) -> ShardGuard<'_, M> {
        let shard = self.shard_of(key);
        ShardGuard {
            shard,
            guard: self.shards[shard].lock(),
        }
    }

    /// Locks shard `index` (`None` past the last): for maintenance passes that
    /// visit every shard in turn (sweepers, snapshots), one shard at a time.
    pub fn lock_shard(&self, index: usize) -> Option<ShardGuard<'_, M>> {
        let mutex = self.shards.get(index)?;
        Some(ShardGuard {
            shard: index,
            guard: mutex.lock(),
        })
    }

    /// Locks the shards of all `keys` in ascending shard order, each once.
    pub fn lock_many<'k, K, I>(&self, keys: I) -> Result<MultiGuard<'_, M>, LockError>
    where
        K: Hash + ?Sized + 'k,
        I: IntoIterator<Item = &'k K>,
    {
        let order = acquisition_order(keys, self.shards.len())?;
        let held = order
            .into_iter()
            .map(|shard| (shard, self.shards[shard].lock()))
            .collect();
        Ok(MultiGuard {
            shard_count: self.shards.len(),
            held,
        })
    }
}

/// A held shard; derefs to the shard's value. Not to be held across `.await`.
pub struct ShardGuard<'a, M: ShardMutex + 'a> {
    shard: usize,
    guard: M::Guard<'a>,
}

impl<M: ShardMutex> ShardGuard<'_, M> {
    /// The shard index held.
    pub fn shard(&self) -> usize {
        self.shard
    }
}

impl<M: ShardMutex> Deref for ShardGuard<'_, M> {
    type Target = M::Value;
    fn deref(&self) -> &M::Value {
        &self.guard
    }
}

impl<M: ShardMutex> DerefMut for ShardGuard<'_, M> {
    fn deref_mut(&mut self) -> &mut M::Value {
        &mut self.guard
    }
}

impl<M: ShardMutex> fmt::Debug for ShardGuard<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardGuard")
            .field("shard", &self.shard)
            .finish()
    }
}

/// Several held shards, in ascending order; released together on drop.
pub struct MultiGuard<'a, M: ShardMutex + 'a> {
    shard_count: usize,
    held: Vec<(usize, M::Guard<'a>)>,
}

impl<M: ShardMutex> MultiGuard<'_, M> {
    /// The shard indices held, ascending.
    pub fn shards(&self) -> impl Iterator<Item = usize> + '_ {
        self.held.iter().map(|(shard, _)| *shard)
    }

    /// The value of `key`'s shard, if this guard holds it.
    pub fn get_mut<K: Hash + ?Sized>(&mut self, key: &K) -> Option<&mut M::Value> {
        let shard = shard_index(key, self.shard_count);
        let at = self.held.binary_search_by_key(&shard, |(s, _)| *s).ok()?;
        Some(&mut *self.held[at].1)
    }
}

impl<M: ShardMutex> fmt::Debug for MultiGuard<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.shards()).finish()
    }
}

/// Sharded async locks over `tokio::sync::Mutex`, each shard guarding a `T`; guards
/// are owned (`'static`) and may be held across `.await` and moved between tasks.
pub struct AsyncShardedLocks<T = ()> {
    shards: Box<[Arc<tokio::sync::Mutex<T>>]>,
}

impl<T> fmt::Debug for AsyncShardedLocks<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncShardedLocks")
            .field("shards", &self.shards.len())
            .finish()
    }
}

/// A held async shard.
pub type OwnedShardGuard<T> = tokio::sync::OwnedMutexGuard<T>;

impl<T> AsyncShardedLocks<T> {
    /// `shards` shards, each guarding `T::default()`.
    pub fn new(shards: usize) -> Result<Self, LockError>
    where
        T: Default,
    {
        check_shard_count(shards)?;
        Ok(Self {
            shards: (0..shards)
                .map(|_| Arc::new(tokio::sync::Mutex::new(T::default())))
                .collect(),
        })
    }

    /// The number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The shard `key` maps to.
    pub fn shard_of<K: Hash + ?Sized>(&self, key: &K) -> usize {
        shard_index(key, self.shards.len())
    }

    /// Locks `key`'s shard.
    pub async fn lock<K: Hash + ?Sized>(&self, key: &K) -> OwnedShardGuard<T> {
        let shard = self.shard_of(key);
        Arc::clone(&self.shards[shard]).lock_owned().await
    }

    /// Locks the shards of all `keys` in ascending shard order, each once.
    ///
    /// Cancel-safe: dropping the future releases whatever it had locked.
    pub async fn lock_many<'k, K, I>(&self, keys: I) -> Result<AsyncMultiGuard<T>, LockError>
    where
        K: Hash + ?Sized + 'k,
        I: IntoIterator<Item = &'k K>,
    {
        let order = acquisition_order(keys, self.shards.len())?;
        let mut held = Vec::with_capacity(order.len());
        for shard in order {
            held.push((shard, Arc::clone(&self.shards[shard]).lock_owned().await));
        }
        Ok(AsyncMultiGuard {
            shard_count: self.shards.len(),
            held,
        })
    }
}

/// Several held async shards, in ascending order; released together on drop.
pub struct AsyncMultiGuard<T> {
    shard_count: usize,
    held: Vec<(usize, OwnedShardGuard<T>)>,
}

impl<T> AsyncMultiGuard<T> {
    /// The shard indices held, ascending.
    pub fn shards(&self) -> impl Iterator<Item = usize> + '_ {
        self.held.iter().map(|(shard, _)| *shard)
    }

    /// The value of `key`'s shard, if this guard holds it.
    pub fn get_mut<K: Hash + ?Sized>(&mut self, key: &K) -> Option<&mut T> {
        let shard = shard_index(key, self.shard_count);
        let at = self.held.binary_search_by_key(&shard, |(s, _)| *s).ok()?;
        Some(&mut *self.held[at].1)
    }
}

impl<T> fmt::Debug for AsyncMultiGuard<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.shards()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use shuttle::sync::atomic::{AtomicUsize, Ordering};

    /// The same algorithm over shuttle's instrumented mutex, so shuttle controls
    /// (and explores) every interleaving of lock acquisitions.
    impl<T: Send> ShardMutex for shuttle::sync::Mutex<T> {
        type Value = T;
        type Guard<'a>
            = shuttle::sync::MutexGuard<'a, T>
        where
            T: 'a;
        fn new(value: T) -> Self {
            shuttle::sync::Mutex::new(value)
        }
        fn lock(&self) -> Self::Guard<'_> {
            shuttle::sync::Mutex::lock(self).expect("no thread panics while holding a shard")
        }
    }

    type ModelLocks = RawShardedLocks<shuttle::sync::Mutex<u64>>;

    const MODEL_SHARDS: usize = 4;

    /// Three keys on three different shards, found by search so the test does not
    /// depend on hash values.
    fn three_keys_on_distinct_shards() -> [u32; 3] {
        let mut found: Vec<u32> = Vec::new();
        for key in 0u32.. {
            let shard = shard_index(&key, MODEL_SHARDS);
            if found.iter().all(|k| shard_index(k, MODEL_SHARDS) != shard) {
                found.push(key);
                if found.len() == 3 {
                    break;
                }
            }
        }
        [found[0], found[1], found[2]]
    }

    #[test]
    fn shuttle_multi_key_locking_is_deadlock_free_and_mutually_exclusive() {
        shuttle::check_random(model_run_ordered, 2_000);
        shuttle::check_pct(model_run_ordered, 2_000, 3);
    }

    fn model_run_ordered() {
        model_run(|locks, keys, inside| {
            let mut guard = locks.lock_many(keys.iter()).unwrap();
            let shards: Vec<usize> = guard.shards().collect();
            critical_section(&shards, inside);
            for key in keys {
                *guard.get_mut(key).expect("every key's shard is held") += 1;
            }
            shards
        });
    }

    /// The negative control: the same scenario locking keys in the order given
    /// deadlocks, and shuttle finds it — so the test above can fail.
    #[test]
    #[should_panic(expected = "deadlock")]
    fn shuttle_finds_the_deadlock_of_unordered_locking() {
        shuttle::check_random(
            || {
                model_run(|locks, keys, inside| {
                    let mut order: Vec<usize> = Vec::new();
                    for key in keys {
                        let shard = locks.shard_of(key);
                        if !order.contains(&shard) {
                            order.push(shard);
                        }
                    }
                    let mut held: Vec<_> = order
                        .iter()
                        .map(|&s| ShardMutex::lock(&locks.shards[s]))
                        .collect();
                    critical_section(&order, inside);
                    for key in keys {
                        let at = order.iter().position(|s| *s == locks.shard_of(key));
                        *held[at.expect("locked above")] += 1;
                    }
                    order
                })
            },
            2_000,
        );
    }

    type Locker = fn(&ModelLocks, &[u32], &[AtomicUsize]) -> Vec<usize>;

    fn critical_section(shards: &[usize], inside: &[AtomicUsize]) {
        for &shard in shards {
            assert_eq!(
                inside[shard].fetch_add(1, Ordering::SeqCst),
                0,
                "shard {shard} shared"
            );
        }
        shuttle::thread::yield_now();
        for &shard in shards {
            assert_eq!(inside[shard].fetch_sub(1, Ordering::SeqCst), 1);
        }
    }

    /// Three threads lock overlapping keys in conflicting orders; each checks that
    /// no other thread is inside a shard it holds and bumps the counter of each
    /// key's shard; at the end no increment is lost.
    fn model_run(lock: Locker) {
        let [a, b, c] = three_keys_on_distinct_shards();
        let locks = Arc::new(ModelLocks::new(MODEL_SHARDS).unwrap());
        let inside: Arc<Vec<AtomicUsize>> =
            Arc::new((0..MODEL_SHARDS).map(|_| AtomicUsize::new(0)).collect());
        let plans: Vec<Vec<u32>> = vec![vec![a, b], vec![b, a], vec![c, b, a, c]];
        let handles: Vec<_> = plans
            .iter()
            .cloned()
            .map(|keys| {
                let (locks, inside) = (Arc::clone(&locks), Arc::clone(&inside));
                shuttle::thread::spawn(move || lock(&locks, &keys, &inside))
            })
            .collect();
        let mut expected = [0u64; MODEL_SHARDS];
        for (handle, keys) in handles.into_iter().zip(&plans) {
            let shards = handle.join().unwrap();
            for key in keys {
                expected[locks.shard_of(key)] += 1;
            }
            assert!(shards.iter().all(|s| *s < MODEL_SHARDS));
        }
        // Every increment made under the locks survived.
        for (shard, want) in expected.iter().enumerate() {
            assert_eq!(*ShardMutex::lock(&locks.shards[shard]), *want);
        }
    }

    #[test]
    fn bad_shard_counts_and_too_many_keys_are_errors() {
        assert_eq!(
            ShardedLocks::<()>::new(0).unwrap_err(),
            LockError::ShardCount { got: 0 }
        );
        assert!(ShardedLocks::<()>::new(MAX_SHARDS + 1).is_err());
        assert!(AsyncShardedLocks::<()>::new(0).is_err());
        let locks = ShardedLocks::<()>::new(8).unwrap();
        let keys: Vec<u64> = (0..MAX_KEYS_PER_ACQUIRE as u64 + 5).collect();
        assert_eq!(
            locks.lock_many(keys.iter()).unwrap_err(),
            LockError::TooManyKeys {
                got: MAX_KEYS_PER_ACQUIRE + 5
            }
        );
        assert_eq!(
            locks
                .lock_many(keys[..MAX_KEYS_PER_ACQUIRE].iter())
                .unwrap()
                .shards()
                .count(),
            8
        );
    }

    #[test]
    fn lock_shard_visits_the_shard_a_key_maps_to() {
        let locks = ShardedLocks::<Vec<&str>>::new(4).unwrap();
        locks.lock(&"k").push("by key");
        let shard = locks.shard_of(&"k");
        let guard = locks.lock_shard(shard).unwrap();
        assert_eq!(guard.shard(), shard);
        assert_eq!(*guard, vec!["by key"]);
        drop(guard);
        let visited: usize = (0..locks.shard_count())
            .map(|i| locks.lock_shard(i).unwrap().len())
            .sum();
        assert_eq!(visited, 1);
        assert!(locks.lock_shard(4).is_none());
    }

    #[test]
    fn transfers_under_multi_key_locks_conserve_the_total() {
        // Accounts live in per-shard maps; each transfer locks both accounts.
        let locks: ShardedLocks<std::collections::HashMap<u32, i64>> =
            ShardedLocks::new(16).unwrap();
        for account in 0..64u32 {
            locks.lock(&account).insert(account, 1_000);
        }
        std::thread::scope(|scope| {
            for worker in 0..4u32 {
                let locks = &locks;
                scope.spawn(move || {
                    for i in 0..2_000u32 {
                        let from = (i * 7 + worker * 13) % 64;
                        let to = (i * 11 + worker * 5 + 1) % 64;
                        let mut guard = locks.lock_many([from, to].iter()).unwrap();
                        *guard.get_mut(&from).unwrap().get_mut(&from).unwrap() -= 3;
                        *guard.get_mut(&to).unwrap().get_mut(&to).unwrap() += 3;
                    }
                });
            }
        });
        let total: i64 = (0..64u32).map(|a| locks.lock(&a)[&a]).sum();
        assert_eq!(total, 64_000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_guards_cross_awaits_and_tasks_and_conserve_the_total() {
        let locks: Arc<AsyncShardedLocks<std::collections::HashMap<u32, i64>>> =
            Arc::new(AsyncShardedLocks::new(8).unwrap());
        for account in 0..32u32 {
            locks.lock(&account).await.insert(account, 100);
        }
        let mut tasks = Vec::new();
        for worker in 0..4u32 {
            let locks = Arc::clone(&locks);
            tasks.push(tokio::spawn(async move {
                for i in 0..500u32 {
                    let from = (i * 3 + worker) % 32;
                    let to = (i * 5 + worker * 7 + 1) % 32;
                    let mut guard = locks.lock_many([from, to].iter()).await.unwrap();
                    *guard.get_mut(&from).unwrap().get_mut(&from).unwrap() -= 1;
                    // Held across an await: the point of the async flavour.
                    tokio::task::yield_now().await;
                    *guard.get_mut(&to).unwrap().get_mut(&to).unwrap() += 1;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let mut total = 0;
        for account in 0..32u32 {
            total += locks.lock(&account).await[&account];
        }
        assert_eq!(total, 3_200);
    }

    proptest! {
        /// A multi-key guard holds exactly the distinct shards of its keys, in
        /// ascending order, and resolves every key's value; other keys' shards
        /// resolve only if they share a held shard.
        #[test]
        fn lock_many_holds_exactly_the_distinct_shards_ascending(
            shards in 1usize..64,
            keys in proptest::collection::vec(any::<u64>(), 0..40),
            probe in any::<u64>(),
        ) {
            let locks = ShardedLocks::<u8>::new(shards).unwrap();
            let mut expected: Vec<usize> = keys.iter().map(|k| locks.shard_of(k)).collect();
            expected.sort_unstable();
            expected.dedup();
            let mut guard = locks.lock_many(keys.iter()).unwrap();
            prop_assert_eq!(guard.shards().collect::<Vec<_>>(), expected.clone());
            for key in &keys {
                prop_assert!(guard.get_mut(key).is_some());
            }
            let probe_held = expected.contains(&locks.shard_of(&probe));
            prop_assert_eq!(guard.get_mut(&probe).is_some(), probe_held);
            drop(guard);
            // Everything was released: each shard can be taken again.
            for key in &keys {
                let single = locks.lock(key);
                prop_assert_eq!(single.shard(), locks.shard_of(key));
            }
        }

        #[test]
        fn async_and_sync_flavours_agree_on_order(
            shards in 1usize..64,
            keys in proptest::collection::vec(any::<u32>(), 0..20),
        ) {
            let sync = ShardedLocks::<()>::new(shards).unwrap();
            let order: Vec<usize> = sync.lock_many(keys.iter()).unwrap().shards().collect();
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let locks = AsyncShardedLocks::<()>::new(shards).unwrap();
            let async_order: Vec<usize> = runtime.block_on(async {
                locks.lock_many(keys.iter()).await.unwrap().shards().collect()
            });
            prop_assert_eq!(order, async_order);
        }
    }
}
