//! Log-linear percentile buckets, in the spirit of Atlas's `PercentileBuckets`.
//!
//! Each power of two between 2^-32 and 2^32 is cut into 16 equal buckets, so a
//! bucket is at most 1/16 (6.25 %) as wide as its lower bound: a percentile read from
//! the buckets is within that relative error of the exact one (and is clamped to the
//! smallest and largest sample seen). Values below 2^-32 (including 0) share bucket 0;
//! values of 2^32 or more share the last bucket, whose upper bound is the largest
//! sample. The index is read straight from the bits of the `f64`: no logarithm.
//!
//! A [`Buckets`] is sparse (sorted `(index, count)` pairs), so an idle or narrow
//! distribution costs a few bytes, and it never holds more than [`BUCKET_COUNT`]
//! entries.

/// Smallest binary exponent with its own buckets.
const MIN_EXP: i32 = -32;
/// One past the largest binary exponent with its own buckets.
const MAX_EXP: i32 = 32;
/// Linear sub-buckets per power of two (a power of two: the top mantissa bits).
const SUB_BITS: u32 = 4;
const SUBS: usize = 1 << SUB_BITS;
/// Number of buckets, the zero bucket included.
pub const BUCKET_COUNT: usize = 1 + (MAX_EXP - MIN_EXP) as usize * SUBS;

/// The bucket holding `value` (a finite value `>= 0`; anything else lands in 0).
pub fn bucket_index(value: f64) -> u16 {
    // NaN and negatives land here too.
    if value.is_nan() || value < 2f64.powi(MIN_EXP) {
        return 0;
    }
    if value >= 2f64.powi(MAX_EXP) {
        return (BUCKET_COUNT - 1) as u16;
    }
    let bits = value.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i32 - 1023;
    let sub = ((bits >> (52 - SUB_BITS)) & (SUBS as u64 - 1)) as usize;
    let index = 1 + (exponent - MIN_EXP) as usize * SUBS + sub;
    debug_assert!(index < BUCKET_COUNT);
    index as u16
}

/// The `[lower, upper)` range of values of bucket `index`.
pub fn bucket_bounds(index: u16) -> (f64, f64) {
    let index = usize::from(index);
    assert!(index < BUCKET_COUNT, "bucket {index} out of range");
    if index == 0 {
        return (0.0, 2f64.powi(MIN_EXP));
    }
    let octave = (index - 1) / SUBS;
    let sub = (index - 1) % SUBS;
    let base = 2f64.powi(MIN_EXP + octave as i32);
    let width = base / SUBS as f64;
    (base + width * sub as f64, base + width * (sub + 1) as f64)
}

/// A sparse histogram over the buckets: sorted `(index, count)` pairs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets {
    entries: Vec<(u16, u32)>,
}

impl Buckets {
    /// Counts one sample.
    pub fn record(&mut self, value: f64) {
        self.add(bucket_index(value), 1);
    }

    /// Adds `count` samples to bucket `index`.
    pub fn add(&mut self, index: u16, count: u32) {
        match self.entries.binary_search_by_key(&index, |(i, _)| *i) {
            Ok(at) => self.entries[at].1 = self.entries[at].1.saturating_add(count),
            Err(at) => self.entries.insert(at, (index, count)),
        }
        debug_assert!(self.entries.len() <= BUCKET_COUNT);
    }

    /// The non-empty buckets, in order.
    pub fn iter(&self) -> impl Iterator<Item = (u16, u32)> + '_ {
        self.entries.iter().copied()
    }

    /// Forgets everything, keeping the allocation.
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

/// The merge of many [`Buckets`], for query time: sparse too, with 64-bit counts.
#[derive(Debug, Clone, Default)]
pub struct MergedBuckets {
    entries: Vec<(u16, u64)>,
    total: u64,
}

impl MergedBuckets {
    /// Adds every bucket of `other`.
    pub fn merge(&mut self, other: &Buckets) {
        for (index, count) in other.iter() {
            self.add(index, u64::from(count));
        }
    }

    /// Adds every bucket of another merge.
    pub fn merge_merged(&mut self, other: &MergedBuckets) {
        for &(index, count) in &other.entries {
            self.add(index, count);
        }
    }

    fn add(&mut self, index: u16, count: u64) {
        match self.entries.binary_search_by_key(&index, |(i, _)| *i) {
            Ok(at) => self.entries[at].1 += count,
            Err(at) => self.entries.insert(at, (index, count)),
        }
        self.total += count;
    }

    /// Samples merged so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The `p`-th percentile (`0 <= p <= 100`), interpolated linearly inside its
    /// bucket and clamped to `[min, max]`, the smallest and largest samples. `None`
    /// when empty.
    pub fn percentile(&self, p: f64, min: f64, max: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        debug_assert!((0.0..=100.0).contains(&p));
        // The extremes are known exactly.
        if p <= 0.0 {
            return Some(min);
        }
        if p >= 100.0 {
            return Some(max);
        }
        // The rank of the wanted sample, 1-based, as nearest-rank percentiles count.
        let rank = ((p / 100.0) * self.total as f64).ceil().max(1.0);
        let mut seen = 0u64;
        for &(index, count) in &self.entries {
            if (seen + count) as f64 >= rank {
                let (lower, upper) = bucket_bounds(index);
                // The bucket's samples taken as evenly spread, each at the middle of
                // its share of the bucket.
                let within = (rank - seen as f64 - 0.5) / count as f64;
                let estimate = lower + (upper - lower) * within;
                return Some(estimate.clamp(min, max));
            }
            seen += count;
        }
        Some(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn indexes_are_monotonic_and_bounds_contain_their_values() {
        let mut last = 0;
        let mut value = 1e-12;
        while value < 1e12 {
            let index = bucket_index(value);
            assert!(index >= last, "{value}");
            last = index;
            let (lower, upper) = bucket_bounds(index);
            if index > 0 && usize::from(index) < BUCKET_COUNT - 1 {
                assert!(
                    lower <= value && value < upper,
                    "{value} in [{lower}, {upper})"
                );
                assert!((upper - lower) / lower <= 1.0 / 16.0 + 1e-12);
            }
            value *= 1.01;
        }
        assert_eq!(bucket_index(0.0), 0);
        assert_eq!(bucket_index(-1.0), 0);
        assert_eq!(bucket_index(f64::NAN), 0);
        assert_eq!(usize::from(bucket_index(1e300)), BUCKET_COUNT - 1);
        assert_eq!(bucket_bounds(bucket_index(1.0)), (1.0, 1.0625));
    }

    #[test]
    fn sparse_buckets_stay_sorted_and_merge() {
        let mut b = Buckets::default();
        for v in [5.0, 0.001, 5.0, 300.0] {
            b.record(v);
        }
        let entries: Vec<_> = b.iter().collect();
        assert_eq!(entries.len(), 3);
        assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(entries[1], (bucket_index(5.0), 2));
        let mut merged = MergedBuckets::default();
        merged.merge(&b);
        merged.merge(&b);
        assert_eq!(merged.total(), 8);
    }

    /// The exact nearest-rank percentile.
    fn exact(sorted: &[f64], p: f64) -> f64 {
        let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
        sorted[rank - 1]
    }

    proptest! {
        #[test]
        fn percentiles_are_within_the_bucket_error(
            mut samples in prop::collection::vec(1e-6f64..1e6, 1..400),
            p in prop::sample::select(vec![0.0, 25.0, 50.0, 90.0, 99.0, 99.9, 100.0]),
        ) {
            let mut buckets = Buckets::default();
            for s in &samples {
                buckets.record(*s);
            }
            let mut merged = MergedBuckets::default();
            merged.merge(&buckets);
            samples.sort_by(f64::total_cmp);
            let (min, max) = (samples[0], samples[samples.len() - 1]);
            let got = merged.percentile(p, min, max).unwrap();
            let want = exact(&samples, p);
            prop_assert!(
                (got - want).abs() <= want / 16.0 + 1e-12,
                "p{p}: got {got}, exact {want}"
            );
        }
    }
}
