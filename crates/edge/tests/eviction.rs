//! Eviction bounded by bytes, and admission that beats LRU on Zipf traffic.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use casebook_edge::cdn::key::ObjectKey;
use casebook_edge::cdn::memory::MemoryTier;
use casebook_edge::cdn::object::Object;
use http::StatusCode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::{Origin, TierUnderTest, config, serve_origin};

/// Through the service: after every request the memory level holds at most its
/// budget, however many objects went through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_level_never_holds_more_than_its_budget() {
    let origin = Arc::new(Origin::default());
    let objects = 60;
    for i in 0..objects {
        origin.put(
            &format!("titles/t/720p/seg{i:05}.ts"),
            vec![i as u8; 100_000 + i * 1_000],
        );
    }
    let (address, _) = serve_origin(Arc::clone(&origin), "127.0.0.1:0".parse().unwrap()).await;
    let mut config = config(address);
    config.memory_bytes = 1 << 20;
    let tier = TierUnderTest::start(config).await;
    for round in 0..3 {
        for i in 0..objects {
            let key = format!("titles/t/720p/seg{i:05}.ts");
            let response = tier.get(&key, &[]).await;
            assert_eq!(response.status, StatusCode::OK);
            assert_eq!(response.body.len(), 100_000 + i * 1_000);
            let stats = tier.stats().await;
            assert!(
                stats.memory.bytes <= stats.memory.capacity_bytes,
                "round {round}, object {i}: {} bytes held, budget {}",
                stats.memory.bytes,
                stats.memory.capacity_bytes
            );
        }
    }
    let stats = tier.stats().await;
    assert!(stats.memory.entries > 0 && stats.memory.entries < objects as u64);
    assert!(
        origin.bytes() > 3 * 1_000_000,
        "objects were evicted and fetched again"
    );
}

/// A byte-bounded LRU with the same weights: the baseline nginx and most caches use.
struct Lru {
    capacity: u64,
    used: u64,
    tick: u64,
    entries: HashMap<usize, (u64, u64)>, // object → (weight, tick)
    order: BTreeMap<u64, usize>,
}

impl Lru {
    fn new(capacity: u64) -> Self {
        Self {
            capacity,
            used: 0,
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    /// Whether `object` was held; it is held (most recent) afterwards if it fits.
    fn access(&mut self, object: usize, weight: u64) -> bool {
        self.tick += 1;
        if let Some((_, tick)) = self.entries.get_mut(&object) {
            self.order.remove(tick);
            *tick = self.tick;
            self.order.insert(self.tick, object);
            return true;
        }
        if weight > self.capacity {
            return false;
        }
        while self.used + weight > self.capacity {
            let (_, victim) = self.order.pop_first().expect("something to evict");
            let (w, _) = self.entries.remove(&victim).expect("indexed");
            self.used -= w;
        }
        self.entries.insert(object, (weight, self.tick));
        self.order.insert(self.tick, object);
        self.used += weight;
        false
    }
}

/// Cumulative Zipf(s) weights over `n` ranks.
fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
    let mut cdf = Vec::with_capacity(n);
    let mut total = 0.0;
    for rank in 1..=n {
        total += 1.0 / (rank as f64).powf(s);
        cdf.push(total);
    }
    cdf.iter().map(|c| c / total).collect()
}

/// The same Zipf trace through the memory level (TinyLFU admission) and through a
/// byte-bounded LRU of the same size and weights: the memory level serves more
/// bytes from cache. Outcomes only, no timing.
#[test]
fn tinylfu_beats_lru_on_a_zipf_trace_in_byte_hit_ratio() {
    let seed = casebook_testkit::seed("tinylfu_beats_lru_on_a_zipf_trace_in_byte_hit_ratio");
    let mut rng = StdRng::seed_from_u64(seed);
    let objects = 4_000;
    let requests = 120_000;
    // Segment-like sizes: 20 kB to 200 kB, drawn once per object.
    let sizes: Vec<usize> = (0..objects)
        .map(|_| rng.random_range(20_000..200_000))
        .collect();
    let keys: Vec<ObjectKey> = (0..objects)
        .map(|i| ObjectKey::parse(&format!("titles/t{}/720p/seg{i:05}.ts", i % 97)).unwrap())
        .collect();
    let catalogue_bytes: u64 = sizes.iter().map(|s| *s as u64).sum();
    let capacity = catalogue_bytes / 20; // 5 % of the catalogue
    let cdf = zipf_cdf(objects, 0.9);
    // Popularity rank is independent of the object's index and size.
    let mut by_rank: Vec<usize> = (0..objects).collect();
    for i in (1..objects).rev() {
        by_rank.swap(i, rng.random_range(0..=i));
    }
    let trace: Vec<usize> = (0..requests)
        .map(|_| {
            let u: f64 = rng.random();
            by_rank[cdf.partition_point(|c| *c < u).min(objects - 1)]
        })
        .collect();

    let blob = Bytes::from(vec![0u8; 200_000]);
    let object = |i: usize| {
        Arc::new(Object::new(
            &keys[i],
            blob.slice(..sizes[i]),
            Some("\"e\""),
            None,
            Instant::now(),
        ))
    };
    let weight = |i: usize| object(i).weight(keys[i].as_str().len());

    let memory = MemoryTier::new(capacity);
    let mut lru = Lru::new(capacity);
    let (mut requested, mut memory_hit_bytes, mut lru_hit_bytes) = (0u64, 0u64, 0u64);
    let (mut memory_hits, mut lru_hits) = (0u64, 0u64);
    for &i in &trace {
        let bytes = sizes[i] as u64;
        requested += bytes;
        match memory.get(&keys[i]) {
            Some(_) => {
                memory_hits += 1;
                memory_hit_bytes += bytes;
            }
            None => memory.insert(keys[i].clone(), object(i)),
        }
        assert!(memory.bytes() <= capacity);
        if lru.access(i, weight(i)) {
            lru_hits += 1;
            lru_hit_bytes += bytes;
        }
    }
    let memory_ratio = memory_hit_bytes as f64 / requested as f64;
    let lru_ratio = lru_hit_bytes as f64 / requested as f64;
    eprintln!(
        "byte-hit ratio: TinyLFU {memory_ratio:.3} vs LRU {lru_ratio:.3}; hit ratio {:.3} vs {:.3}",
        memory_hits as f64 / requests as f64,
        lru_hits as f64 / requests as f64
    );
    assert!(
        memory_ratio > lru_ratio,
        "TinyLFU {memory_ratio:.3} did not beat LRU {lru_ratio:.3} (seed {seed})"
    );
}
