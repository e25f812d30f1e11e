//! Stable hashing and node assignment: jump consistent hash and weighted
//! rendezvous (highest-random-weight) hashing.
//!
//! Guarantees:
//! - [`stable_hash`] / [`stable_hash_bytes`] give the same value in every process,
//!   on every platform and every run (no per-process random seed), so two
//!   instances of a fleet agree on where a key lives. Integers are hashed as
//!   little-endian `u64`s whatever their width or the host's endianness.
//! - [`jump_consistent_hash`] (Lamping & Veach, 2014) spreads keys evenly over
//!   `n` buckets and, when `n` grows to `n + 1`, moves only the keys that land in the
//!   new bucket (about `1/(n+1)` of them). Buckets are numbered; only the last one
//!   can be removed cheaply.
//! - [`Rendezvous`] picks, for each key, the node with the highest weighted score;
//!   adding a node moves only the keys the new node now wins (about
//!   `w_new / Σw`), removing a node moves only its own keys, and any node can come
//!   or go. Weights skew the share of keys proportionally.
//!
//! Not guaranteed:
//! - Cryptographic strength: these hashes resist accidents, not adversaries.
//!   Do not key a public-facing table on attacker-chosen input without a secret.
//! - Stability of [`stable_hash`] across Rust releases for types whose `Hash` impl
//!   std may change (e.g. `str` appends a `0xff` terminator today). Where a hash is
//!   persisted or shared between different builds, hash the bytes yourself with
//!   [`stable_hash_bytes`].

use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;

use super::PartitionError;

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A deterministic [`Hasher`]: FNV-1a over the written bytes, finished with the
/// murmur3 `fmix64` avalanche so that the low and high bits are both usable.
#[derive(Debug, Clone, Copy)]
pub struct StableHasher {
    state: u64,
}

impl Default for StableHasher {
    fn default() -> Self {
        Self { state: FNV_OFFSET }
    }
}

impl Hasher for StableHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.state ^= u64::from(byte);
            self.state = self.state.wrapping_mul(FNV_PRIME);
        }
    }

    // Integers go in as little-endian u64 so that the hash does not depend on the
    // host's endianness or pointer width.
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.write_u64(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.write(&i.to_le_bytes());
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    fn write_i8(&mut self, i: i8) {
        self.write_u64(i as u64);
    }
    fn write_i16(&mut self, i: i16) {
        self.write_u64(i as u64);
    }
    fn write_i32(&mut self, i: i32) {
        self.write_u64(i as u64);
    }
    fn write_i64(&mut self, i: i64) {
        self.write_u64(i as u64);
    }
    fn write_isize(&mut self, i: isize) {
        self.write_u64(i as u64);
    }

    fn finish(&self) -> u64 {
        fmix64(self.state)
    }
}

/// murmur3's 64-bit finaliser: every input bit affects every output bit.
#[inline]
pub fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// The stable 64-bit hash of any `Hash` value (see the module notes on stability).
pub fn stable_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut hasher = StableHasher::default();
    key.hash(&mut hasher);
    hasher.finish()
}

/// The stable 64-bit hash of raw bytes; stable across builds and Rust releases.
pub fn stable_hash_bytes(bytes: &[u8]) -> u64 {
    let mut hasher = StableHasher::default();
    hasher.write(bytes);
    hasher.finish()
}

/// Maps a 64-bit hash uniformly onto `0..n` with one multiply (Lemire's
/// multiply-shift), without the bias or the division of `hash % n`.
#[inline]
pub fn fast_range(hash: u64, n: usize) -> usize {
    ((u128::from(hash) * n as u128) >> 64) as usize
}

/// Jump consistent hash (Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash
/// Algorithm", 2014): the bucket in `0..buckets` for `key_hash`.
///
/// Growing from `n` to `n + 1` buckets moves a key only into the new bucket `n`.
pub fn jump_consistent_hash(key_hash: u64, buckets: NonZeroU32) -> u32 {
    let buckets = i64::from(buckets.get());
    let mut key = key_hash;
    let mut bucket: i64 = -1;
    let mut next: i64 = 0;
    while next < buckets {
        bucket = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        // The paper's formula: the next bucket where this key would jump to.
        let ratio = (1u64 << 31) as f64 / ((key >> 33) + 1) as f64;
        next = ((bucket + 1) as f64 * ratio) as i64;
    }
    debug_assert!((0..buckets).contains(&bucket));
    bucket as u32
}

/// Most nodes a [`Rendezvous`] set may hold; bounds the per-lookup scan.
pub const MAX_RENDEZVOUS_NODES: usize = 4096;

/// A node of a [`Rendezvous`] set.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedNode<N> {
    /// The node's identity; its stable hash seeds the node's scores.
    pub node: N,
    /// Relative capacity, finite and positive; a node with twice the weight gets
    /// twice the keys in expectation.
    pub weight: f64,
    seed: u64,
}

/// Weighted rendezvous (highest-random-weight) hashing over a set of nodes.
///
/// Each `(node, key)` pair gets the score `-weight / ln(u)` with `u` a uniform
/// hash in `(0, 1)`; the key belongs to the node with the highest score. This is
/// the logarithmic method of weighted rendezvous hashing: the share of keys each
/// node gets is `weight / Σ weights`, and changes to the set only move keys to or
/// from the nodes that changed. Lookup is `O(nodes)`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rendezvous<N> {
    nodes: Vec<WeightedNode<N>>,
}

impl<N: Hash + Eq + Clone> Rendezvous<N> {
    /// An empty set.
    pub fn new() -> Self {
        Self { nodes: Vec::new() }
    }

    /// Adds `node` with `weight`, or updates its weight if it is already present.
    pub fn insert(&mut self, node: N, weight: f64) -> Result<(), PartitionError> {
        if !weight.is_finite() || weight <= 0.0 {
            return Err(PartitionError::InvalidWeight { weight });
        }
        if let Some(existing) = self.nodes.iter_mut().find(|n| n.node == node) {
            existing.weight = weight;
            return Ok(());
        }
        if self.nodes.len() >= MAX_RENDEZVOUS_NODES {
            return Err(PartitionError::TooManyNodes {
                max: MAX_RENDEZVOUS_NODES,
            });
        }
        let seed = stable_hash(&node);
        self.nodes.push(WeightedNode { node, weight, seed });
        Ok(())
    }

    /// Removes `node`; returns whether it was present.
    pub fn remove(&mut self, node: &N) -> bool {
        let before = self.nodes.len();
        self.nodes.retain(|n| &n.node != node);
        self.nodes.len() != before
    }

    /// The nodes in insertion order.
    pub fn nodes(&self) -> &[WeightedNode<N>] {
        &self.nodes
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node owning `key_hash`, or `None` if the set is empty.
    pub fn pick(&self, key_hash: u64) -> Option<&N> {
        self.nodes
            .iter()
            .map(|n| (score(n, key_hash), n))
            .max_by(|(a, _), (b, _)| a.total_cmp(b))
            .map(|(_, n)| &n.node)
    }

    /// The `count` best nodes for `key_hash`, best first (replica placement: the
    /// first is the owner, the next ones take over, in order, when it leaves).
    pub fn pick_many(&self, key_hash: u64, count: usize) -> Vec<&N> {
        let mut scored: Vec<(f64, &WeightedNode<N>)> =
            self.nodes.iter().map(|n| (score(n, key_hash), n)).collect();
        scored.sort_by(|(a, _), (b, _)| b.total_cmp(a));
        scored
            .into_iter()
            .take(count)
            .map(|(_, n)| &n.node)
            .collect()
    }
}

/// The weighted score of `node` for `key_hash`.
fn score<N>(node: &WeightedNode<N>, key_hash: u64) -> f64 {
    let mixed = fmix64(key_hash ^ fmix64(node.seed));
    // 53 random bits, shifted into the open interval (0, 1) so ln() is finite and
    // negative.
    let unit = ((mixed >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    debug_assert!(unit > 0.0 && unit < 1.0);
    -node.weight / unit.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).expect("non-zero")
    }

    #[test]
    fn stable_hash_is_fixed_across_runs_and_integer_widths_agree() {
        // Golden values: these must never change, or fleets would disagree.
        assert_eq!(stable_hash_bytes(b""), fmix64(FNV_OFFSET));
        assert_eq!(stable_hash(&7u32), stable_hash(&7u64));
        assert_eq!(stable_hash(&7usize), stable_hash(&7u64));
        assert_ne!(stable_hash(&7u64), stable_hash(&8u64));
        // Cross-checked against an independent FNV-1a + fmix64 implementation.
        assert_eq!(stable_hash_bytes(b"casebook"), 0xc3f8_1e41_1707_24b4);
        assert_eq!(stable_hash(&7u64), 0xc211_2d51_b876_518d);
    }

    #[test]
    fn jump_hash_matches_reference_values() {
        // Outputs of an independent transcription of the paper's C++ code.
        assert_eq!(jump_consistent_hash(0, nz(1)), 0);
        assert_eq!(jump_consistent_hash(0, nz(10)), 0);
        assert_eq!(jump_consistent_hash(1, nz(10)), 6);
        assert_eq!(jump_consistent_hash(2, nz(10)), 6);
        assert_eq!(jump_consistent_hash(0xdead_beef, nz(100)), 87);
        assert_eq!(jump_consistent_hash(u64::MAX, nz(1000)), 313);
        assert_eq!(jump_consistent_hash(123_456_789, nz(7)), 0);
    }

    #[test]
    fn jump_hash_growing_by_one_moves_only_into_the_new_bucket_about_one_nth() {
        let keys: Vec<u64> = (0..20_000u64).map(|k| stable_hash(&k)).collect();
        for n in [1u32, 5, 10, 31] {
            let moved = keys
                .iter()
                .filter(|&&k| {
                    let before = jump_consistent_hash(k, nz(n));
                    let after = jump_consistent_hash(k, nz(n + 1));
                    if before != after {
                        assert_eq!(after, n, "a key moved to an old bucket");
                        true
                    } else {
                        false
                    }
                })
                .count();
            let expected = keys.len() as f64 / f64::from(n + 1);
            let ratio = moved as f64 / expected;
            assert!(
                (0.9..1.1).contains(&ratio),
                "n={n}: moved {moved}, expected about {expected}"
            );
        }
    }

    #[test]
    fn jump_hash_is_balanced() {
        let buckets = 8u32;
        let mut counts = [0usize; 8];
        for k in 0..80_000u64 {
            counts[jump_consistent_hash(stable_hash(&k), nz(buckets)) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "unbalanced: {counts:?}");
        }
    }

    #[test]
    fn rendezvous_adding_a_node_moves_about_its_share_and_only_to_it() {
        let mut set = Rendezvous::new();
        for node in ["a", "b", "c", "d"] {
            set.insert(node.to_string(), 1.0).unwrap();
        }
        let keys: Vec<u64> = (0..20_000u64).map(|k| stable_hash(&k)).collect();
        let before: Vec<String> = keys.iter().map(|&k| set.pick(k).unwrap().clone()).collect();
        set.insert("e".to_string(), 1.0).unwrap();
        let mut moved = 0;
        for (k, owner) in keys.iter().zip(&before) {
            let now = set.pick(*k).unwrap();
            if now != owner {
                assert_eq!(now, "e", "a key moved between old nodes");
                moved += 1;
            }
        }
        let expected = keys.len() as f64 / 5.0;
        assert!(
            (0.9..1.1).contains(&(moved as f64 / expected)),
            "moved {moved}"
        );

        // Removing it puts every key back where it was.
        assert!(set.remove(&"e".to_string()));
        for (k, owner) in keys.iter().zip(&before) {
            assert_eq!(set.pick(*k).unwrap(), owner);
        }
    }

    #[test]
    fn rendezvous_shares_follow_weights() {
        let mut set = Rendezvous::new();
        set.insert("small", 1.0).unwrap();
        set.insert("big", 3.0).unwrap();
        let big = (0..40_000u64)
            .filter(|k| *set.pick(stable_hash(k)).unwrap() == "big")
            .count();
        let share = big as f64 / 40_000.0;
        assert!((0.72..0.78).contains(&share), "big got {share}");
    }

    #[test]
    fn rendezvous_rejects_bad_weights_and_empty_set_picks_nothing() {
        let mut set: Rendezvous<&str> = Rendezvous::new();
        assert_eq!(set.pick(1), None);
        for weight in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                set.insert("a", weight),
                Err(PartitionError::InvalidWeight { .. })
            ));
        }
        assert!(set.is_empty());
        set.insert("a", 1.0).unwrap();
        set.insert("a", 2.0).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set.nodes()[0].weight, 2.0);
    }

    proptest! {
        #[test]
        fn jump_hash_is_in_range_and_monotone(key in any::<u64>(), n in 1u32..10_000) {
            let b = jump_consistent_hash(key, nz(n));
            prop_assert!(b < n);
            let next = jump_consistent_hash(key, nz(n + 1));
            prop_assert!(next == b || next == n);
        }

        #[test]
        fn pick_many_starts_with_pick_and_has_distinct_nodes(key in any::<u64>(), count in 0usize..8) {
            let mut set = Rendezvous::new();
            for n in 0..6u32 {
                set.insert(n, f64::from(n + 1)).unwrap();
            }
            let many = set.pick_many(key, count);
            prop_assert_eq!(many.len(), count.min(6));
            if count > 0 {
                prop_assert_eq!(many[0], set.pick(key).unwrap());
            }
            let mut dedup = many.clone();
            dedup.sort();
            dedup.dedup();
            prop_assert_eq!(dedup.len(), many.len());
        }
    }
}
