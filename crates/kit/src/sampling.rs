//! Seeded randomness for workloads: a SplitMix64 generator and Zipf–Mandelbrot
//! ranks, the same sequence for the same seed on every platform and release (no
//! dependency on a crate's generator choice), so a load run is reproducible.
//!
//! Not guaranteed: statistical quality beyond workload generation (not for
//! cryptography or simulations needing a long-period generator).

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast, passes BigCrush.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        // Lemire's multiply-shift: no modulo bias worth a workload's concern.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// A Zipf–Mandelbrot distribution that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ZipfError(String);

/// Most ranks a [`Zipf`] holds (its CDF is a `Vec<f64>`).
pub const MAX_ZIPF_RANKS: usize = 1_000_000;

/// Zipf–Mandelbrot over ranks `0..n`: `p(k) ∝ 1/(k+1+q)^s`, sampled by inverse CDF.
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64, q: f64) -> Result<Self, ZipfError> {
        if n == 0 || n > MAX_ZIPF_RANKS {
            return Err(ZipfError(format!(
                "{n} ranks is not in 1..={MAX_ZIPF_RANKS}"
            )));
        }
        // s = 0 is the uniform distribution, a Zipf law all the same.
        if !(s.is_finite() && s >= 0.0 && q.is_finite() && q >= 0.0) {
            return Err(ZipfError(format!("s {s} and q {q} must be >= 0")));
        }
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n {
            total += 1.0 / (k as f64 + q).powf(s);
            cdf.push(total);
        }
        for v in &mut cdf {
            *v /= total;
        }
        Ok(Self { cdf })
    }
    /// The probability of rank `k`.
    pub fn p(&self, k: usize) -> f64 {
        self.cdf[k] - if k == 0 { 0.0 } else { self.cdf[k - 1] }
    }
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_is_pinned_for_a_seed() {
        let mut rng = Rng::new(1);
        assert_eq!(rng.next_u64(), 0x910a_2dec_8902_5cc1);
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert!((0..100).all(|_| a.below(10) == b.below(10)));
    }

    #[test]
    fn zipf_favours_low_ranks_and_refuses_nonsense() {
        let zipf = Zipf::new(100, 1.0, 0.0).unwrap();
        assert!(zipf.p(0) > zipf.p(1) && zipf.p(1) > zipf.p(50));
        let mut rng = Rng::new(3);
        let low = (0..10_000).filter(|_| zipf.sample(&mut rng) < 10).count();
        // p(rank < 10) = H(10)/H(100) ≈ 0.56.
        assert!((5_000..6_200).contains(&low), "{low}");
        assert!(Zipf::new(0, 1.0, 0.0).is_err());
        assert!(Zipf::new(10, -1.0, 0.0).is_err());
        let uniform = Zipf::new(4, 0.0, 0.0).unwrap();
        assert!((0..4).all(|k| (uniform.p(k) - 0.25).abs() < 1e-12));
    }
}
