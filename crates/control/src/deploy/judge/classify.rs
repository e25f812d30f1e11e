//! One metric's classification, Kayenta's `MannWhitneyClassifier` over samples
//! prepared as `NetflixACAJudge` prepares them: NaNs dropped, outliers removed by the
//! IQR rule, then the Mann-Whitney U test with the Hodges-Lehmann shift and its
//! confidence interval, then the direction and effect-size rules.

use serde::{Deserialize, Serialize};

use super::stats::{self, UTest};
use crate::deploy::judge::config::{Direction, JudgeConfig, MetricConfig, OutlierStrategy};

/// A metric's classification (Kayenta's labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Classification {
    /// No significant difference in a direction that matters.
    Pass,
    /// The canary is significantly higher.
    High,
    /// The canary is significantly lower.
    Low,
    /// No data on one side; does not count against the score unless critical.
    Nodata,
    /// No data on one side of a metric that must have data: counts as a failure.
    NodataFailMetric,
}

/// Mean, spread and size of one side's sample (after NaN and outlier removal).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    /// Samples dropped as NaN or as outliers.
    pub removed: usize,
}

impl Summary {
    fn of(values: &[f64], removed: usize) -> Self {
        let count = values.len();
        let (mut min, mut max, mut sum) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
        for &v in values {
            min = min.min(v);
            max = max.max(v);
            sum += v;
        }
        if count == 0 {
            (min, max) = (0.0, 0.0);
        }
        Self {
            count,
            mean: if count == 0 { 0.0 } else { sum / count as f64 },
            min,
            max,
            removed,
        }
    }
}

/// The statistics a comparison was decided on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Comparison {
    /// `U` of the canary's sample.
    pub u: f64,
    /// Two-sided p-value (normal approximation): reported, not decided on (the
    /// interval decides, as in Kayenta).
    pub p_value: f64,
    /// Hodges-Lehmann estimate of the shift canary − baseline.
    pub shift: f64,
    /// Its confidence interval at the judge's confidence.
    pub shift_low: f64,
    pub shift_high: f64,
    /// Mean ratio canary / baseline (the effect size); `None` when a mean is 0.
    pub mean_ratio: Option<f64>,
}

/// One metric's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricResult {
    pub name: String,
    pub group: String,
    pub classification: Classification,
    /// Why, in words, when not a plain pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether this result fails the whole canary (a critical metric not passing).
    pub critical: bool,
    pub canary: Summary,
    pub baseline: Summary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Comparison>,
}

/// Drops NaNs (and infinities: a rate over nothing) and, per the strategy, outliers.
/// Returns the kept values and how many were dropped.
pub fn prepare(values: &[f64], strategy: OutlierStrategy, factor: f64) -> (Vec<f64>, usize) {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let kept = match strategy {
        OutlierStrategy::Keep => finite,
        OutlierStrategy::Remove => remove_outliers(&finite, factor),
    };
    let removed = values.len() - kept.len();
    (kept, removed)
}

/// Kayenta's `IQRDetector` with `reduceSensitivity`: a value is an outlier below
/// `min(p1, q1 - factor·IQR)` or above `max(p99, q3 + factor·IQR)` (R-7 percentiles).
pub fn remove_outliers(values: &[f64], factor: f64) -> Vec<f64> {
    let (Some(q1), Some(q3), Some(p1), Some(p99)) = (
        stats::percentile(values, 25.0),
        stats::percentile(values, 75.0),
        stats::percentile(values, 1.0),
        stats::percentile(values, 99.0),
    ) else {
        return Vec::new();
    };
    let iqr = q3 - q1;
    let lower = p1.min(q1 - factor * iqr);
    let upper = p99.max(q3 + factor * iqr);
    values
        .iter()
        .copied()
        .filter(|v| *v >= lower && *v <= upper)
        .collect()
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Classifies one metric: `canary` and `baseline` are its samples (one value per
/// analysis step), in any order, NaNs allowed.
pub fn classify(
    metric: &MetricConfig,
    judge: &JudgeConfig,
    canary: &[f64],
    baseline: &[f64],
) -> MetricResult {
    let (x, x_removed) = prepare(canary, metric.outliers, metric.outlier_factor);
    let (y, y_removed) = prepare(baseline, metric.outliers, metric.outlier_factor);
    let mut result = MetricResult {
        name: metric.name.clone(),
        group: metric.group.clone(),
        classification: Classification::Pass,
        reason: None,
        critical: false,
        canary: Summary::of(&x, x_removed),
        baseline: Summary::of(&y, y_removed),
        comparison: None,
    };
    if x.is_empty() || y.is_empty() {
        let side = if x.is_empty() { "canary" } else { "baseline" };
        result.reason = Some(format!("no data for {} on the {side}", metric.name));
        if metric.must_have_data && !metric.critical {
            result.classification = Classification::NodataFailMetric;
        } else {
            result.classification = Classification::Nodata;
            result.critical = metric.critical;
        }
        return result;
    }
    let mut sorted_x = x.clone();
    let mut sorted_y = y.clone();
    sorted_x.sort_by(f64::total_cmp);
    sorted_y.sort_by(f64::total_cmp);
    if sorted_x == sorted_y {
        result.reason = Some("the canary's and the baseline's data are identical".into());
        return result;
    }
    if sorted_x.first() == sorted_x.last()
        && sorted_y.first() == sorted_y.last()
        && sorted_x[0] == sorted_y[0]
    {
        return result; // one value throughout
    }
    let comparison = compare(&x, &y, judge.confidence);
    result.comparison = Some(comparison);
    // Kayenta's bounds: a shift counts only beyond `tolerance` × |estimate|.
    let bound = judge.tolerance * comparison.shift.abs();
    let effect = comparison.mean_ratio;
    let effect_at_least = |threshold: f64| effect.is_none_or(|e| e >= threshold);
    let effect_at_most = |threshold: f64| effect.is_none_or(|e| e <= threshold);
    let high = matches!(metric.direction, Direction::Increase | Direction::Either)
        && comparison.shift_low > bound
        && effect_at_least(metric.effect_size.allowed_increase);
    let low = matches!(metric.direction, Direction::Decrease | Direction::Either)
        && comparison.shift_high < -bound
        && effect_at_most(metric.effect_size.allowed_decrease);
    let ratio = effect.map_or_else(|| "n/a".to_owned(), |e| format!("{e:.3}"));
    if high {
        result.classification = Classification::High;
        result.critical = metric.critical && effect_at_least(metric.effect_size.critical_increase);
    } else if low {
        result.classification = Classification::Low;
        result.critical = metric.critical && effect_at_most(metric.effect_size.critical_decrease);
    }
    if high || low {
        result.reason = Some(format!(
            "{} was classified {:?}{}: shift {:.6} ({:.0} % interval {:.6}..{:.6}), mean ratio {ratio}",
            metric.name,
            result.classification,
            if result.critical { " (critical)" } else { "" },
            comparison.shift,
            judge.confidence * 100.0,
            comparison.shift_low,
            comparison.shift_high,
        ));
    }
    result
}

/// The test, the shift and the effect size of canary `x` against baseline `y`.
fn compare(x: &[f64], y: &[f64], confidence: f64) -> Comparison {
    let UTest { u, p_value, .. } = stats::mann_whitney_u(x, y);
    let shift = stats::hodges_lehmann(x, y);
    // Both sides constant (and different): no variance to test, the shift is exact.
    // Kayenta adds tiny Gaussian noise here; the judge stays deterministic instead.
    let (shift_low, shift_high) =
        stats::confidence_interval(x, y, confidence).unwrap_or((shift, shift));
    let (mx, my) = (mean(x), mean(y));
    Comparison {
        u,
        p_value,
        shift,
        shift_low,
        shift_high,
        mean_ratio: (mx != 0.0 && my != 0.0).then(|| mx / my),
    }
}
