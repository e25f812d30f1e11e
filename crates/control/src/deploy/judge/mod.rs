//! The canary judge: Kayenta's `NetflixACAJudge` with its `MannWhitneyClassifier`,
//! as pure functions (no I/O, no clock, no randomness).
//!
//! For each metric the canary's and the baseline's samples (one value per analysis
//! step) are prepared — non-finite values dropped, outliers removed by the IQR rule
//! at factor 3 widened to the 1st/99th percentiles — and compared by the two-sided
//! Mann-Whitney U test: the Hodges-Lehmann estimate of the shift canary − baseline
//! and its 98 % confidence interval (the normal approximation inverted, tie- and
//! continuity-corrected). The metric is `High` when the interval lies above
//! `tolerance × |shift|` (0.25), the direction allows it and the mean ratio reaches
//! the allowed increase; `Low` symmetrically; else `Pass`. No data is `Nodata`
//! (or `NodataFailMetric` when the metric must have data). Groups score the share of
//! their metrics that passed, summed by weight; a critical metric not passing, or
//! `Nodata` on half the metrics, makes the score 0. The score against the
//! marginal/pass thresholds is the verdict.
//!
//! **Guaranteed**: the same samples give the same judgement; U, the p-value, the
//! shift and its interval match SciPy and the R/Kayenta inversion (fixtures in
//! `crates/control/tests/fixtures`). **Not guaranteed**: where both samples are
//! each constant Kayenta adds Gaussian noise; here the shift is exact and its
//! interval a point. See `docs/notes/control/deploy.md`.

pub mod classify;
pub mod config;
pub mod score;
pub mod stats;

pub use classify::{Classification, Comparison, MetricResult, Summary, classify};
pub use config::{Direction, EffectSize, JudgeConfig, Measure, MetricConfig, OutlierStrategy};
pub use score::{GroupScore, Judgement, Verdict, score};

/// Judges a canary: `samples(metric)` gives the metric's (canary, baseline) samples.
pub fn judge(
    config: &JudgeConfig,
    mut samples: impl FnMut(&MetricConfig) -> (Vec<f64>, Vec<f64>),
) -> Judgement {
    let results = config
        .metrics
        .iter()
        .map(|metric| {
            let (canary, baseline) = samples(metric);
            classify(metric, config, &canary, &baseline)
        })
        .collect();
    score(config, results)
}
