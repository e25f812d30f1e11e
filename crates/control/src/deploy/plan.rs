//! A deploy's life as data, and the pure rules that move it: which step comes next
//! given the deploy, the service's live instances and the time; what a judgement
//! leads to; what a rollback request does. No I/O: the engine acts, these decide.
//!
//! ```text
//! starting ─► analysing(0) ─► … ─► analysing(n-1) ─┬─► promoting ─► done(promoted)
//!     │              │ score < marginal             │ final score < pass
//!     │              ▼                              ▼
//!     └──────► rolling_back ───────────────────► done(rolled_back)
//! promoting / done(promoted) ── rollback ──► reverting ─► done(reverted)
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use casebook_kit::runtime::BadBuild;
use casebook_kit::topology::Placement;
use serde::Serialize;

use super::fleet::Member;
use super::judge::{Judgement, Verdict};
use super::source::Window;

/// The most steps one deploy's record keeps (the oldest go first).
pub const MAX_STEPS: usize = 256;

/// How a deploy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The canary passed; every instance now runs the new version.
    Promoted,
    /// The canary failed (or was stopped); canary and baseline are gone, the
    /// service's own instances untouched.
    RolledBack,
    /// A promotion was undone: the service's instances run the previous version.
    Reverted,
    /// A step could not be done; see the deploy's steps.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Promoted => "promoted",
            Self::RolledBack => "rolled_back",
            Self::Reverted => "reverted",
            Self::Failed => "failed",
        }
    }
}

/// Where a deploy is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum Phase {
    /// Baseline and canary are to be started.
    Starting,
    /// Judging; `interval` is the next one to judge (0-based).
    Analysing {
        interval: u32,
    },
    /// Replacing the service's instances one at a time with the new version.
    Promoting,
    /// Stopping canary and baseline.
    RollingBack {
        reason: String,
    },
    /// Replacing instances of the new version with the previous one.
    Reverting {
        reason: String,
    },
    Done {
        outcome: Outcome,
    },
}

impl Phase {
    pub fn is_done(&self) -> bool {
        matches!(self, Self::Done { .. })
    }
}

/// The analysis a deploy runs (the `[deploy]` defaults, or the request's).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Analysis {
    pub share: f64,
    #[serde(with = "humantime_serde")]
    pub warmup: Duration,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    pub intervals: u32,
    #[serde(with = "humantime_serde")]
    pub step: Duration,
    #[serde(with = "humantime_serde")]
    pub lag: Duration,
}

/// One interval's judgement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntervalJudgement {
    /// 1-based, as people count.
    pub interval: u32,
    pub at_ms: u64,
    pub from_ms: u64,
    pub to_ms: u64,
    pub score: f64,
    pub verdict: Verdict,
    pub judgement: Judgement,
}

/// One thing the deployer did or decided, with when and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    /// Wall time on the injected clock, RFC 3339.
    pub at: String,
    pub at_ms: u64,
    pub step: String,
    pub detail: String,
}

/// One deploy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deploy {
    pub id: String,
    pub service: String,
    pub version: String,
    /// What the service ran before: the baseline's version, and what a revert goes back to.
    pub previous_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bad_build: Option<BadBuild>,
    pub analysis: Analysis,
    #[serde(flatten)]
    pub phase: Phase,
    pub created_ms: u64,
    /// Where canary and baseline run (the oldest live instance's zone).
    pub placement: Placement,
    pub canary: Option<String>,
    pub baseline: Option<String>,
    /// When the analysis's data begins (both started, plus the warm-up).
    pub analysis_from_ms: Option<u64>,
    pub judgements: Vec<IntervalJudgement>,
    /// Instances replaced by promotion or revert: (old, new).
    pub replaced: Vec<(String, String)>,
    pub steps: VecDeque<StepRecord>,
    /// Ordering among deploys (creation order).
    #[serde(skip)]
    pub seq: u64,
}

/// The next thing to do for a deploy.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing yet (an interval is still running, or the deploy is done).
    Wait,
    /// Start baseline and canary with their traffic shares.
    StartPair,
    /// Judge interval `interval` on `window`.
    Judge { interval: u32, window: Window },
    /// Promotion: start the new version beside `old`, then stop `old`.
    Replace { old: Member },
    /// Revert: start the previous version beside `instance`, then stop it.
    Revert { instance: Member },
    /// Stop canary and baseline, clear their shares, and end with `then`.
    StopPair { then: Outcome },
}

impl Deploy {
    fn is_pair(&self, id: &str) -> bool {
        self.canary.as_deref() == Some(id) || self.baseline.as_deref() == Some(id)
    }
}

/// The next step of `deploy` with `live` instances of its service at `now_ms`.
pub fn next_step(deploy: &Deploy, live: &[Member], now_ms: u64) -> Step {
    match &deploy.phase {
        Phase::Starting => Step::StartPair,
        Phase::Analysing { interval } => {
            let Some(from) = deploy.analysis_from_ms else {
                return Step::Wait;
            };
            let a = &deploy.analysis;
            let to = from + millis(a.interval) * u64::from(interval + 1);
            if now_ms >= to + millis(a.lag) {
                Step::Judge {
                    interval: *interval,
                    window: Window {
                        from_ms: from,
                        to_ms: to,
                        step_secs: a.step.as_secs().max(1),
                    },
                }
            } else {
                Step::Wait
            }
        }
        Phase::Promoting => live
            .iter()
            .find(|m| !deploy.is_pair(&m.instance_id) && m.version != deploy.version)
            .map_or(
                Step::StopPair {
                    then: Outcome::Promoted,
                },
                |old| Step::Replace { old: old.clone() },
            ),
        Phase::RollingBack { .. } => Step::StopPair {
            then: Outcome::RolledBack,
        },
        Phase::Reverting { .. } => live
            .iter()
            .find(|m| !deploy.is_pair(&m.instance_id) && m.version == deploy.version)
            .map_or(
                Step::StopPair {
                    then: Outcome::Reverted,
                },
                |instance| Step::Revert {
                    instance: instance.clone(),
                },
            ),
        Phase::Done { .. } => Step::Wait,
    }
}

/// Where a judgement of interval `interval` (0-based) leads: below marginal rolls
/// back at once; the last interval promotes at pass and rolls back below it.
pub fn after_judgement(deploy: &Deploy, interval: u32, judgement: &Judgement, pass: f64) -> Phase {
    let of = deploy.analysis.intervals;
    let why = judgement
        .reason
        .as_deref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    if judgement.verdict == Verdict::Fail {
        return Phase::RollingBack {
            reason: format!(
                "interval {}/{of} scored {:.2}, below the marginal threshold{why}",
                interval + 1,
                judgement.score
            ),
        };
    }
    if interval + 1 < of {
        return Phase::Analysing {
            interval: interval + 1,
        };
    }
    if judgement.score >= pass {
        Phase::Promoting
    } else {
        Phase::RollingBack {
            reason: format!(
                "the final score {:.2} is below the pass threshold {pass}{why}",
                judgement.score
            ),
        }
    }
}

/// What a rollback request does to a deploy in `phase`; `Err` says why not.
pub fn rollback(phase: &Phase, reason: &str) -> Result<Phase, String> {
    let reason = reason.to_owned();
    match phase {
        Phase::Starting | Phase::Analysing { .. } => Ok(Phase::RollingBack { reason }),
        Phase::Promoting
        | Phase::Done {
            outcome: Outcome::Promoted,
        } => Ok(Phase::Reverting { reason }),
        Phase::RollingBack { .. } | Phase::Reverting { .. } => {
            Err("it is being rolled back already".into())
        }
        Phase::Done { outcome } => {
            Err(format!("it ended {}: nothing of it runs", outcome.as_str()))
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
