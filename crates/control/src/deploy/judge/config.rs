//! What the judge is told: per metric (direction, criticality, outliers, effect-size
//! rules, group) and overall (confidence, tolerance, group weights, thresholds).
//! Validation names the dotted key at fault.

use std::collections::BTreeMap;

use casebook_kit::config::ConfigError;
use serde::{Deserialize, Serialize};

/// Kayenta's confidence level of the shift's interval.
pub const DEFAULT_CONFIDENCE: f64 = 0.98;
/// Kayenta's tolerance: a shift counts beyond this fraction of its own estimate.
pub const DEFAULT_TOLERANCE: f64 = 0.25;
/// Kayenta's default IQR factor.
pub const DEFAULT_OUTLIER_FACTOR: f64 = 3.0;
/// The most metrics one judgement compares.
pub const MAX_METRICS: usize = 32;

/// Which way of change is bad.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Only a higher canary fails it (latency, errors).
    Increase,
    /// Only a lower canary fails it (throughput, hit rate).
    Decrease,
    /// Either way.
    #[default]
    Either,
}

/// What happens to outliers before the test.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutlierStrategy {
    /// Dropped by the IQR rule (Kayenta's `remove`).
    #[default]
    Remove,
    Keep,
}

/// What a metric measures, read per instance from the metrics store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Mean request duration per step, seconds (`http_request_duration_seconds`).
    LatencyMean,
    /// 99th-percentile request duration per step, seconds.
    LatencyP99,
    /// Share of requests answered 5xx per step (`http_requests_total{status}`).
    ErrorRate,
    /// Requests answered per second.
    RequestRate,
}

/// Kayenta's effect-size rules on the mean ratio canary / baseline: a significant
/// shift is `High` only if the ratio is at least `allowed_increase` (`Low`: at most
/// `allowed_decrease`); a critical metric fails the canary only past the critical
/// ratios.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EffectSize {
    pub allowed_increase: f64,
    pub allowed_decrease: f64,
    pub critical_increase: f64,
    pub critical_decrease: f64,
}

impl Default for EffectSize {
    fn default() -> Self {
        Self {
            allowed_increase: 1.0,
            allowed_decrease: 1.0,
            critical_increase: 1.0,
            critical_decrease: 1.0,
        }
    }
}

/// One metric of the analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricConfig {
    pub name: String,
    pub measure: Measure,
    /// The group it scores in.
    pub group: String,
    #[serde(default)]
    pub direction: Direction,
    /// A critical metric that does not pass makes the score 0.
    #[serde(default)]
    pub critical: bool,
    /// No data fails the metric (`NodataFailMetric`) instead of leaving it out.
    #[serde(default)]
    pub must_have_data: bool,
    #[serde(default)]
    pub outliers: OutlierStrategy,
    #[serde(default = "default_outlier_factor")]
    pub outlier_factor: f64,
    #[serde(default)]
    pub effect_size: EffectSize,
}

fn default_outlier_factor() -> f64 {
    DEFAULT_OUTLIER_FACTOR
}

impl MetricConfig {
    /// A metric with Kayenta's defaults.
    pub fn new(name: &str, measure: Measure, group: &str, direction: Direction) -> Self {
        Self {
            name: name.to_owned(),
            measure,
            group: group.to_owned(),
            direction,
            critical: false,
            must_have_data: false,
            outliers: OutlierStrategy::Remove,
            outlier_factor: DEFAULT_OUTLIER_FACTOR,
            effect_size: EffectSize::default(),
        }
    }

    /// Checks the metric; `key` is where it sits (e.g. `deploy.judge.metrics[2]`).
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new(format!("{key}.name"), "must not be empty"));
        }
        if self.group.is_empty() {
            return Err(ConfigError::new(
                format!("{key}.group"),
                "must not be empty",
            ));
        }
        if !(self.outlier_factor.is_finite() && self.outlier_factor > 0.0) {
            return Err(ConfigError::new(
                format!("{key}.outlier_factor"),
                "must be a positive number",
            ));
        }
        let e = &self.effect_size;
        for (field, value) in [
            ("allowed_increase", e.allowed_increase),
            ("allowed_decrease", e.allowed_decrease),
            ("critical_increase", e.critical_increase),
            ("critical_decrease", e.critical_decrease),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(ConfigError::new(
                    format!("{key}.effect_size.{field}"),
                    "must be a positive ratio (1.0: any significant change counts)",
                ));
            }
        }
        Ok(())
    }
}

/// The judge's settings (the `[deploy.judge]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JudgeConfig {
    /// Confidence of the shift's interval, `0 < c < 1`.
    pub confidence: f64,
    /// A shift counts only beyond this fraction of its estimate.
    pub tolerance: f64,
    /// Weight (percent) per group; unlisted groups share the rest of 100.
    pub group_weights: BTreeMap<String, f64>,
    /// Score at or above which the canary passes.
    pub pass_threshold: f64,
    /// Score at or above which it is marginal; below, it fails (at once, mid-analysis).
    pub marginal_threshold: f64,
    pub metrics: Vec<MetricConfig>,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        let latency = |name, measure| {
            let mut m = MetricConfig::new(name, measure, "latency", Direction::Increase);
            m.must_have_data = true;
            m
        };
        let mut errors = MetricConfig::new(
            "error_rate",
            Measure::ErrorRate,
            "errors",
            Direction::Increase,
        );
        errors.critical = true;
        Self {
            confidence: DEFAULT_CONFIDENCE,
            tolerance: DEFAULT_TOLERANCE,
            group_weights: BTreeMap::from([("latency".into(), 50.0), ("errors".into(), 50.0)]),
            pass_threshold: 95.0,
            marginal_threshold: 75.0,
            metrics: vec![
                latency("latency_mean", Measure::LatencyMean),
                latency("latency_p99", Measure::LatencyP99),
                errors,
            ],
        }
    }
}

impl JudgeConfig {
    /// Checks the settings; `key` is where they sit (e.g. `deploy.judge`).
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(ConfigError::new(
                format!("{key}.confidence"),
                "must be between 0 and 1 (exclusive), e.g. 0.98",
            ));
        }
        if !(self.tolerance.is_finite() && self.tolerance >= 0.0) {
            return Err(ConfigError::new(
                format!("{key}.tolerance"),
                "must be a non-negative number",
            ));
        }
        for (group, weight) in &self.group_weights {
            if !(weight.is_finite() && *weight >= 0.0) {
                return Err(ConfigError::new(
                    format!("{key}.group_weights.{group}"),
                    "must be a non-negative percentage",
                ));
            }
        }
        let total: f64 = self.group_weights.values().sum();
        if total > 100.0 + 1e-9 {
            return Err(ConfigError::new(
                format!("{key}.group_weights"),
                format!("the weights add up to {total}, above 100"),
            ));
        }
        for (field, value) in [
            ("pass_threshold", self.pass_threshold),
            ("marginal_threshold", self.marginal_threshold),
        ] {
            if !(0.0..=100.0).contains(&value) {
                return Err(ConfigError::new(format!("{key}.{field}"), "must be 0-100"));
            }
        }
        if self.marginal_threshold > self.pass_threshold {
            return Err(ConfigError::new(
                format!("{key}.marginal_threshold"),
                "must not be above pass_threshold",
            ));
        }
        if self.metrics.is_empty() || self.metrics.len() > MAX_METRICS {
            return Err(ConfigError::new(
                format!("{key}.metrics"),
                format!("needs 1 to {MAX_METRICS} metrics"),
            ));
        }
        for (i, metric) in self.metrics.iter().enumerate() {
            metric.validate(&format!("{key}.metrics[{i}]"))?;
            if self.metrics[..i].iter().any(|m| m.name == metric.name) {
                return Err(ConfigError::new(
                    format!("{key}.metrics[{i}].name"),
                    format!("`{}` is named twice", metric.name),
                ));
            }
        }
        for group in self.group_weights.keys() {
            if !self.metrics.iter().any(|m| &m.group == group) {
                return Err(ConfigError::new(
                    format!("{key}.group_weights.{group}"),
                    format!("no metric is in group `{group}`"),
                ));
            }
        }
        Ok(())
    }
}
