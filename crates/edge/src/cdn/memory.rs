//! The memory tier: objects in moka, weighed in bytes, admitted by TinyLFU.
//!
//! Why moka rather than the kit's `cache`: the kit's cache bounds entries, a CDN
//! must bound bytes (one 2 MB segment is not one 500-byte playlist), and its TTLs
//! are per cache while freshness here is per object kind ([`Object::is_fresh`],
//! judged by the caller on the injected clock).
//!
//! Admission and eviction (moka's): a frequency sketch (count-min, 4 bits,
//! periodically halved) counts every lookup, hit or miss; when the cache is full, a
//! new object is admitted only if it was asked for more often than the
//! least-recently-used objects it would displace, together. One-hit wonders and
//! scans therefore do not flush the popular set, which is why this beats LRU on
//! Zipf traffic (`tests/eviction.rs` compares both on one trace).
//!
//! Guaranteed: after every [`MemoryTier::insert`] returns, the weighed bytes held
//! are at most the capacity — the insert runs moka's pending maintenance
//! (admission, eviction) before returning. Objects heavier than the capacity are
//! never admitted.
//!
//! Not guaranteed: the bound while inserts run concurrently (each may hold the
//! cache over by its own object until its maintenance runs — at most the
//! objects in flight, which the upstream bulkhead bounds); that an inserted
//! object is admitted (TinyLFU may refuse it); frequencies across restarts.

use std::sync::Arc;

use moka::sync::Cache;

use super::key::ObjectKey;
use super::object::Object;

/// The memory tier. Cheap to clone (shares the cache).
#[derive(Clone)]
pub struct MemoryTier {
    cache: Cache<ObjectKey, Arc<Object>>,
    capacity: u64,
}

impl std::fmt::Debug for MemoryTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTier")
            .field("capacity", &self.capacity)
            .field("bytes", &self.cache.weighted_size())
            .finish()
    }
}

impl MemoryTier {
    /// A tier holding at most `capacity` weighed bytes.
    pub fn new(capacity: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity)
            .weigher(|key: &ObjectKey, object: &Arc<Object>| {
                u32::try_from(object.weight(key.as_str().len())).unwrap_or(u32::MAX)
            })
            .build();
        Self { cache, capacity }
    }

    /// The object at `key`, counting the lookup for admission whether it hits or not.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<Object>> {
        self.cache.get(key)
    }

    /// Whether `key` is held, without counting a lookup.
    pub fn contains(&self, key: &ObjectKey) -> bool {
        self.cache.contains_key(key)
    }

    /// Offers an object; TinyLFU decides whether it stays (module docs).
    pub fn insert(&self, key: ObjectKey, object: Arc<Object>) {
        self.cache.insert(key, object);
        self.cache.run_pending_tasks();
    }

    /// Drops `key`.
    pub fn remove(&self, key: &ObjectKey) {
        self.cache.invalidate(key);
    }

    /// Weighed bytes held now.
    pub fn bytes(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// Objects held now.
    pub fn entries(&self) -> u64 {
        self.cache.entry_count()
    }

    /// The configured bound in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;

    use super::*;

    fn object(key: &ObjectKey, len: usize) -> Arc<Object> {
        Arc::new(Object::new(
            key,
            Bytes::from(vec![0u8; len]),
            None,
            None,
            Instant::now(),
        ))
    }

    #[test]
    fn weighed_bytes_never_exceed_the_capacity_after_an_insert() {
        let tier = MemoryTier::new(1 << 20);
        for i in 0..200u64 {
            let key = ObjectKey::parse(&format!("t/seg{i}.ts")).unwrap();
            // Ask for some keys several times so admission has something to weigh.
            for _ in 0..(i % 3) {
                let _ = tier.get(&key);
            }
            tier.insert(
                key.clone(),
                object(&key, 10_000 + (i as usize * 997) % 50_000),
            );
            assert!(
                tier.bytes() <= tier.capacity(),
                "{} > {}",
                tier.bytes(),
                tier.capacity()
            );
        }
        assert!(tier.entries() > 0);
    }

    #[test]
    fn an_object_heavier_than_the_tier_is_never_held() {
        let tier = MemoryTier::new(1 << 16);
        let key = ObjectKey::parse("t/big.ts").unwrap();
        tier.insert(key.clone(), object(&key, 1 << 17));
        assert!(tier.get(&key).is_none());
        assert_eq!(tier.bytes(), 0);
    }
}
