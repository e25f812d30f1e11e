//! Benchmarks of the kit's partition, lock and cache primitives.
//!
//! Run: `cargo bench -p casebook-kit --bench primitives` (release profile).
//! Each lock benchmark has a baseline in the same run (one global mutex), and the
//! cache hit path has raw moka as its peer, so compare ratios, not absolutes.

use std::cell::Cell;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use casebook_kit::cache::{Cache, CacheConfig};
use casebook_kit::clock::SystemClock;
use casebook_kit::locks::ShardedLocks;
use casebook_kit::partition::{
    Rendezvous, ShardMap, ShardMapConfig, ShardedIndex, jump_consistent_hash, stable_hash,
};
use divan::{Bencher, black_box};

fn main() {
    // Fixed sample sizes: moka's occasional inline maintenance would otherwise
    // make divan calibrate to one iteration per sample and report the pauses.
    divan::Divan::from_args()
        .sample_count(200)
        .sample_size(256)
        .main();
}

thread_local! {
    static RNG: Cell<u64> = const { Cell::new(0x9e37_79b9_7f4a_7c15) };
}

/// A cheap per-thread xorshift, so key generation does not dominate.
fn next_key() -> u64 {
    RNG.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    })
}

const SHARDS: usize = 64;
const KEYS: u64 = 10_000;

mod locks {
    use super::*;

    #[divan::bench(threads = [1, 2])]
    fn sharded_1_key(bencher: Bencher<'_, '_>) {
        let locks = ShardedLocks::<u64>::new(SHARDS).unwrap();
        bencher
            .with_inputs(|| next_key() % KEYS)
            .bench_refs(|key| *locks.lock(key) += 1);
    }

    #[divan::bench(threads = [1, 2])]
    fn global_1_key(bencher: Bencher<'_, '_>) {
        let lock = parking_lot::Mutex::new(0u64);
        bencher
            .with_inputs(|| next_key() % KEYS)
            .bench_refs(|key| *lock.lock() += black_box(*key) & 1);
    }

    /// A critical section of ~100 ns of work: what striping is for.
    fn work(slot: &mut u64) {
        for i in 0..64 {
            *slot = black_box(slot.wrapping_mul(31).wrapping_add(i));
        }
    }

    #[divan::bench(threads = [1, 2])]
    fn sharded_1_key_with_work(bencher: Bencher<'_, '_>) {
        let locks = ShardedLocks::<u64>::new(SHARDS).unwrap();
        bencher
            .with_inputs(|| next_key() % KEYS)
            .bench_refs(|key| work(&mut locks.lock(key)));
    }

    #[divan::bench(threads = [1, 2])]
    fn global_1_key_with_work(bencher: Bencher<'_, '_>) {
        let lock = parking_lot::Mutex::new(0u64);
        bencher
            .with_inputs(|| next_key() % KEYS)
            .bench_refs(|_key| work(&mut lock.lock()));
    }

    #[divan::bench(threads = [1, 2])]
    fn sharded_4_keys(bencher: Bencher<'_, '_>) {
        let locks = ShardedLocks::<u64>::new(SHARDS).unwrap();
        bencher
            .with_inputs(|| std::array::from_fn::<u64, 4, _>(|_| next_key() % KEYS))
            .bench_refs(|keys| {
                let mut guard = locks.lock_many(keys.iter()).unwrap();
                for key in keys.iter() {
                    *guard.get_mut(key).unwrap() += 1;
                }
            });
    }

    #[divan::bench(threads = [1, 2])]
    fn global_4_keys(bencher: Bencher<'_, '_>) {
        let lock = parking_lot::Mutex::new([0u64; SHARDS]);
        bencher
            .with_inputs(|| std::array::from_fn::<u64, 4, _>(|_| next_key() % KEYS))
            .bench_refs(|keys| {
                let mut slots = lock.lock();
                for key in keys.iter() {
                    slots[(*key as usize) % SHARDS] += 1;
                }
            });
    }
}

mod partition {
    use super::*;

    fn map_with_1024_shards() -> ShardMap {
        let config = ShardMapConfig {
            max_depth: 5,
            ..ShardMapConfig::default()
        };
        let mut map: ShardMap = ShardMap::new(config, SystemClock::shared()).unwrap();
        for _ in 0..5 {
            for shard in map.shards() {
                map.split(shard.id).unwrap();
            }
        }
        assert_eq!(map.shard_count(), 1024);
        map
    }

    #[divan::bench]
    fn shard_for_1024_shards(bencher: Bencher<'_, '_>) {
        let map = map_with_1024_shards();
        bencher
            .with_inputs(next_key)
            .bench_refs(|key| map.shard_for(*key).unwrap());
    }

    #[divan::bench(threads = [1, 2])]
    fn sharded_index_get_1024_shards(bencher: Bencher<'_, '_>) {
        let config = ShardMapConfig {
            max_depth: 5,
            ..ShardMapConfig::default()
        };
        let index = ShardedIndex::new(config, SystemClock::shared()).unwrap();
        for _ in 0..5 {
            for shard in index.shards() {
                index.split(shard.shard.id).unwrap();
            }
        }
        let keys: Arc<Vec<u64>> = Arc::new((0..KEYS).map(|k| stable_hash(&k)).collect());
        for &key in keys.iter() {
            index.insert(key, key).unwrap();
        }
        bencher
            .with_inputs(|| keys[(next_key() % KEYS) as usize])
            .bench_refs(|key| index.get(*key).unwrap());
    }

    #[divan::bench(args = [10, 1_000])]
    fn jump_hash(bencher: Bencher<'_, '_>, buckets: u32) {
        let buckets = NonZeroU32::new(buckets).unwrap();
        bencher
            .with_inputs(next_key)
            .bench_refs(|key| jump_consistent_hash(*key, buckets));
    }

    #[divan::bench(args = [4, 16])]
    fn rendezvous_pick(bencher: Bencher<'_, '_>, nodes: u32) {
        let mut set = Rendezvous::new();
        for node in 0..nodes {
            set.insert(node, 1.0 + f64::from(node % 3)).unwrap();
        }
        bencher
            .with_inputs(next_key)
            .bench_refs(|key| *set.pick(*key).unwrap());
    }

    #[divan::bench]
    fn stable_hash_u64(bencher: Bencher<'_, '_>) {
        bencher
            .with_inputs(next_key)
            .bench_refs(|key| stable_hash(key));
    }
}

mod cache {
    use super::*;
    use casebook_kit::clock::Clock;

    /// The injected clock read every expiring hit pays for.
    #[divan::bench]
    fn system_clock_now() -> std::time::Instant {
        SystemClock.now()
    }

    #[divan::bench(threads = [1, 2])]
    fn kit_cache_hit_no_expiry(bencher: Bencher<'_, '_>) {
        let cache = Cache::new(
            CacheConfig::new("bench-plain", 2 * KEYS),
            SystemClock::shared(),
        )
        .unwrap();
        for key in 0..KEYS {
            cache.insert(key, key);
        }
        bencher
            .with_inputs(|| next_key() % KEYS)
            .bench_refs(|key| cache.get(key).unwrap());
    }

    #[divan::bench(threads = [1, 2])]
    fn kit_cache_hit(bencher: Bencher<'_, '_>) {
        let cache = Cache::new(
            CacheConfig::new("bench", 2 * KEYS).time_to_live(Duration::from_secs(3_600)),
            SystemClock::shared(),
        )
        .unwrap();
        for key in 0..KEYS {
            cache.insert(key, key);
        }
        bencher
            .with_inputs(|| next_key() % KEYS)
            .bench_refs(|key| cache.get(key).unwrap());
    }

    /// The peer: moka alone, same capacity and TTL, no wrapper.
    #[divan::bench(threads = [1, 2])]
    fn raw_moka_hit(bencher: Bencher<'_, '_>) {
        let cache: moka::sync::Cache<u64, u64> = moka::sync::Cache::builder()
            .max_capacity(2 * KEYS)
            .time_to_live(Duration::from_secs(3_600))
            .build();
        for key in 0..KEYS {
            cache.insert(key, key);
        }
        bencher
            .with_inputs(|| next_key() % KEYS)
            .bench_refs(|key| cache.get(key).unwrap());
    }
}
