//! The canary's score and verdict from its metrics' classifications: Kayenta's
//! `WeightedSumScorer` and `ThresholdScoreClassifier`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::classify::{Classification, MetricResult};
use crate::deploy::judge::config::JudgeConfig;

/// Below this share (percent) of metrics answering `Nodata`, the score stands; at or
/// above, the canary fails (Kayenta's `NODATA_THRESHOLD`).
pub const NODATA_THRESHOLD: f64 = 50.0;

/// The verdict on a score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// At or above the pass threshold.
    Pass,
    /// At or above the marginal threshold, below pass.
    Marginal,
    /// Below the marginal threshold.
    Fail,
}

/// One group's score: the share of its counted metrics that passed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupScore {
    pub name: String,
    /// 0-100.
    pub score: f64,
    /// No metric of the group counted (all `Nodata`): it scores 100 in the sum.
    pub no_data: bool,
    /// The weight it was summed with (percent).
    pub weight: f64,
}

/// The judge's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judgement {
    /// 0-100, two decimals.
    pub score: f64,
    pub verdict: Verdict,
    /// Why the score was forced to 0, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub groups: Vec<GroupScore>,
    pub metrics: Vec<MetricResult>,
}

/// Scores `metrics` with `config`'s group weights and classifies the score.
///
/// A group's score is `pass / (pass + high + low + nodata_fail) × 100`; groups are
/// summed by weight (groups without a configured weight share what the configured
/// weights leave of 100, equally). A critical metric that did not pass, or `Nodata`
/// on half the metrics or more, makes the score 0.
pub fn score(config: &JudgeConfig, metrics: Vec<MetricResult>) -> Judgement {
    let mut counts: BTreeMap<&str, (u32, u32, u32)> = BTreeMap::new(); // pass, counted, all
    for m in &metrics {
        let entry = counts.entry(m.group.as_str()).or_default();
        entry.2 += 1;
        match m.classification {
            Classification::Pass => {
                entry.0 += 1;
                entry.1 += 1;
            }
            Classification::High | Classification::Low | Classification::NodataFailMetric => {
                entry.1 += 1
            }
            Classification::Nodata => {}
        }
    }
    let configured: f64 = config.group_weights.values().sum();
    let unweighted = counts
        .keys()
        .filter(|g| !config.group_weights.contains_key(**g))
        .count();
    let share = if unweighted > 0 {
        (100.0 - configured) / unweighted as f64
    } else {
        0.0
    };
    let groups: Vec<GroupScore> = counts
        .iter()
        .map(|(name, &(pass, counted, _))| GroupScore {
            name: (*name).to_owned(),
            score: if counted == 0 {
                0.0
            } else {
                f64::from(pass) / f64::from(counted) * 100.0
            },
            no_data: counted == 0,
            weight: config.group_weights.get(*name).copied().unwrap_or(share),
        })
        .collect();
    let critical = metrics
        .iter()
        .find(|m| m.critical && m.classification != Classification::Pass);
    let nodata = metrics
        .iter()
        .filter(|m| m.classification == Classification::Nodata)
        .count();
    let (score, reason) = if let Some(m) = critical {
        let why = m.reason.clone().unwrap_or_else(|| m.name.clone());
        (0.0, Some(format!("critical metric failed: {why}")))
    } else if !metrics.is_empty()
        && nodata as f64 / metrics.len() as f64 * 100.0 >= NODATA_THRESHOLD
    {
        (
            0.0,
            Some(format!(
                "{nodata} of {} metrics had no data ({NODATA_THRESHOLD} % or more)",
                metrics.len()
            )),
        )
    } else {
        let sum: f64 = groups
            .iter()
            .map(|g| if g.no_data { 100.0 } else { g.score } * g.weight / 100.0)
            .sum();
        ((sum * 100.0).round() / 100.0, None)
    };
    let verdict = if score >= config.pass_threshold {
        Verdict::Pass
    } else if score >= config.marginal_threshold {
        Verdict::Marginal
    } else {
        Verdict::Fail
    };
    Judgement {
        score,
        verdict,
        reason,
        groups,
        metrics,
    }
}
