//! The `[deploy]` table: the canary's traffic share, the analysis window (warm-up,
//! interval, number of intervals, step), the loop, the history, and the judge.

use std::time::Duration;

use casebook_kit::config::ConfigError;
use serde::{Deserialize, Serialize};

use super::judge::JudgeConfig;

/// The most intervals one analysis may have.
pub const MAX_INTERVALS: u32 = 100;
/// The most finished deploys the history may be configured to keep.
pub const MAX_HISTORY: usize = 1000;
/// The most deploys in progress at once (one per service).
pub const MAX_ACTIVE: usize = 32;

/// The `[deploy]` table of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeployConfig {
    /// The traffic share the canary takes, and the baseline as much (0.1 = 10 %).
    pub share: f64,
    /// Time after both start before their metrics count (caches warm, pools fill).
    #[serde(with = "humantime_serde")]
    pub warmup: Duration,
    /// One analysis interval: the canary is judged at the end of each, on the data
    /// since the analysis began (as Kayenta's cumulative analysis does).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Intervals per analysis. A score below the marginal threshold at any interval
    /// rolls back at once; the last interval's score decides promotion.
    pub intervals: u32,
    /// The sample step: each metric is one value per step per instance.
    #[serde(with = "humantime_serde")]
    pub step: Duration,
    /// How long after an interval's end its data is complete (every process pushes
    /// its metrics once a second).
    #[serde(with = "humantime_serde")]
    pub lag: Duration,
    /// How often the deployer advances each deploy by a step.
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// Finished deploys kept (newest first) for `GET /api/deploys`.
    pub history: usize,
    /// The judge: metrics, groups, thresholds.
    pub judge: JudgeConfig,
}

impl Default for DeployConfig {
    fn default() -> Self {
        Self {
            share: 0.1,
            warmup: Duration::from_secs(10),
            interval: Duration::from_secs(60),
            intervals: 3,
            step: Duration::from_secs(1),
            lag: Duration::from_secs(2),
            tick: Duration::from_secs(1),
            history: 50,
            judge: JudgeConfig::default(),
        }
    }
}

impl DeployConfig {
    /// Checks what serde cannot; the error names the dotted key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_share("deploy.share", self.share)?;
        check_analysis("deploy", self.interval, self.intervals, self.step)?;
        if self.tick.is_zero() {
            return Err(ConfigError::new("deploy.tick", "must be positive"));
        }
        if !(1..=MAX_HISTORY).contains(&self.history) {
            return Err(ConfigError::new(
                "deploy.history",
                format!("must be 1..={MAX_HISTORY}"),
            ));
        }
        self.judge.validate("deploy.judge")
    }
}

/// A share must leave the service's own instances something: `0 < share <= 0.5`.
pub fn check_share(key: &str, share: f64) -> Result<(), ConfigError> {
    if share > 0.0 && share <= 0.5 {
        Ok(())
    } else {
        Err(ConfigError::new(
            key,
            format!("{share} is not in (0, 0.5]: canary and baseline take it each"),
        ))
    }
}

/// Interval, count and step must make at least one step per interval.
pub fn check_analysis(
    prefix: &str,
    interval: Duration,
    intervals: u32,
    step: Duration,
) -> Result<(), ConfigError> {
    if step < Duration::from_secs(1) || step.subsec_nanos() != 0 {
        return Err(ConfigError::new(
            format!("{prefix}.step"),
            "must be whole seconds, at least 1s (the metrics store's resolution)",
        ));
    }
    if interval < step {
        return Err(ConfigError::new(
            format!("{prefix}.interval"),
            format!(
                "must be at least the step ({})",
                humantime::format_duration(step)
            ),
        ));
    }
    if !(1..=MAX_INTERVALS).contains(&intervals) {
        return Err(ConfigError::new(
            format!("{prefix}.intervals"),
            format!("must be 1..={MAX_INTERVALS}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_errors_name_the_key() {
        DeployConfig::default().validate().unwrap();
        let bad = |f: fn(&mut DeployConfig)| {
            let mut c = DeployConfig::default();
            f(&mut c);
            c.validate().unwrap_err().key().to_owned()
        };
        assert_eq!(bad(|c| c.share = 0.9), "deploy.share");
        assert_eq!(bad(|c| c.step = Duration::from_millis(500)), "deploy.step");
        assert_eq!(bad(|c| c.interval = Duration::ZERO), "deploy.interval");
        assert_eq!(bad(|c| c.intervals = 0), "deploy.intervals");
        assert_eq!(bad(|c| c.history = 0), "deploy.history");
        assert_eq!(bad(|c| c.judge.confidence = 1.0), "deploy.judge.confidence");
        assert_eq!(
            bad(|c| c.judge.metrics[1].effect_size.allowed_increase = -1.0),
            "deploy.judge.metrics[1].effect_size.allowed_increase"
        );
        assert_eq!(
            bad(|c| {
                c.judge.group_weights.insert("cpu".into(), 10.0);
            }),
            "deploy.judge.group_weights"
        );
    }

    #[test]
    fn the_table_reads_from_toml_shaped_json() {
        let c: DeployConfig =
            serde_json::from_str(r#"{"share": 0.2, "interval": "5s", "intervals": 2}"#).unwrap();
        assert_eq!(
            (c.share, c.interval, c.intervals),
            (0.2, Duration::from_secs(5), 2)
        );
        assert!(serde_json::from_str::<DeployConfig>(r#"{"shares": 1}"#).is_err());
    }
}
