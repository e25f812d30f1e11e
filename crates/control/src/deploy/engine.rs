//! The deployer: deploys in progress and finished, one step per deploy per tick,
//! what it records, and the loop.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use casebook_kit::clock::SharedClock;
use casebook_kit::runtime::BadBuild;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::config::{self, DeployConfig, MAX_ACTIVE};
use super::fleet::{Fleet, Member};
use super::judge;
use super::plan::{
    self, Analysis, Deploy, IntervalJudgement, MAX_STEPS, Outcome, Phase, Step, StepRecord,
};
use super::source::CanaryMetrics;

/// Counts finished deploys: `{service, outcome}`.
pub const DEPLOYS_METRIC: &str = "deploys_total";
/// Counts the steps taken: `{service, step}`.
pub const STEPS_METRIC: &str = "deploy_steps_total";
/// The last canary score: `{service}`.
pub const SCORE_METRIC: &str = "deploy_canary_score";
/// Deploys in progress.
pub const ACTIVE_METRIC: &str = "deploys_active";

/// The longest version string accepted.
pub const MAX_VERSION: usize = 64;

/// A deploy as asked for (`POST /api/deploys`; the CLI sends the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    pub service: String,
    pub version: String,
    /// Declares the version bad on this service: its instances add this latency
    /// and error rate to every response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bad_build: Option<BadBuild>,
    /// Overrides `deploy.share`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<f64>,
    /// Overrides `deploy.warmup`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub warmup: Option<Duration>,
    /// Overrides `deploy.interval`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval: Option<Duration>,
    /// Overrides `deploy.intervals`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intervals: Option<u32>,
}

impl DeployRequest {
    /// A request for `version` of `service` with the configured analysis.
    pub fn new(service: &str, version: &str) -> Self {
        Self {
            service: service.to_owned(),
            version: version.to_owned(),
            bad_build: None,
            share: None,
            warmup: None,
            interval: None,
            intervals: None,
        }
    }
}

/// Why the deployer refuses a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeployError {
    /// A field is wrong (400).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// No such service (404).
    #[error("{0}")]
    UnknownService(String),
    /// No such deploy, or none for the service (404).
    #[error("{0}")]
    NotFound(String),
    /// The state forbids it (409).
    #[error("{0}")]
    Conflict(String),
    /// The platform is going away (503).
    #[error("the platform is shutting down")]
    Unavailable,
}

fn invalid(field: &str, message: impl Into<String>) -> DeployError {
    DeployError::Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

#[derive(Debug, Default)]
struct State {
    active: BTreeMap<String, Deploy>,
    /// Finished deploys, newest first; at most `history`.
    finished: VecDeque<Deploy>,
    seq: u64,
}

/// The deployer. Cheap to share (`Arc`); every method takes `&self`.
#[derive(Debug)]
pub struct Deployer {
    state: Mutex<State>,
    fleet: Arc<dyn Fleet>,
    metrics: Arc<dyn CanaryMetrics>,
    clock: SharedClock,
    config: DeployConfig,
}

/// Everything `GET /api/deploys` shows.
#[derive(Debug, Clone, Serialize)]
pub struct DeployerView {
    pub active: Vec<Deploy>,
    /// Newest first.
    pub finished: Vec<Deploy>,
    pub config: DeployConfig,
}

impl Deployer {
    /// A deployer acting on `fleet`, judging on `metrics`, with `config` (validated
    /// by the caller: [`DeployConfig::validate`]).
    pub fn new(
        config: DeployConfig,
        fleet: Arc<dyn Fleet>,
        metrics: Arc<dyn CanaryMetrics>,
        clock: SharedClock,
    ) -> Self {
        Self {
            state: Mutex::new(State::default()),
            fleet,
            metrics,
            clock,
            config,
        }
    }

    pub fn config(&self) -> &DeployConfig {
        &self.config
    }

    /// Starts a deploy: checks the request and records it; the loop does the rest.
    pub fn create(&self, request: DeployRequest) -> Result<Deploy, DeployError> {
        let DeployRequest {
            service,
            version,
            bad_build,
            share,
            warmup,
            interval,
            intervals,
        } = request;
        if version.is_empty()
            || version.len() > MAX_VERSION
            || !version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c))
        {
            return Err(invalid(
                "version",
                format!("`{version}` is not 1-{MAX_VERSION} of A-Z a-z 0-9 . _ - +"),
            ));
        }
        if let Some(build) = &bad_build {
            build
                .validate()
                .map_err(|(field, message)| invalid(&format!("bad_build.{field}"), message))?;
        }
        let analysis = Analysis {
            share: share.unwrap_or(self.config.share),
            warmup: warmup.unwrap_or(self.config.warmup),
            interval: interval.unwrap_or(self.config.interval),
            intervals: intervals.unwrap_or(self.config.intervals),
            step: self.config.step,
            lag: self.config.lag,
        };
        config::check_share("share", analysis.share).map_err(|e| invalid(e.key(), e.message()))?;
        config::check_analysis("", analysis.interval, analysis.intervals, analysis.step)
            .map_err(|e| invalid(e.key().trim_start_matches('.'), e.message()))?;
        let services = self.fleet.services();
        if !services.contains(&service) {
            return Err(DeployError::UnknownService(format!(
                "unknown service `{service}` (known: {})",
                services.join(", ")
            )));
        }
        let live = self.fleet.live(&service).ok_or(DeployError::Unavailable)?;
        let Some(oldest) = live.first() else {
            return Err(DeployError::Conflict(format!(
                "no live instance of `{service}` to canary against: start it first"
            )));
        };
        if live.iter().all(|m| m.version == version) {
            return Err(DeployError::Conflict(format!(
                "every instance of `{service}` runs version {version} already"
            )));
        }
        // The version the service runs: its newest instance's.
        let previous_version = live
            .iter()
            .rev()
            .find(|m| m.version != version)
            .map(|m| m.version.clone())
            .unwrap_or_else(|| oldest.version.clone());
        let mut state = self.state.lock();
        if let Some(running) = state.active.values().find(|d| d.service == service) {
            return Err(DeployError::Conflict(format!(
                "deploy `{}` of `{service}` is in progress ({}); roll it back or wait",
                running.id,
                phase_name(&running.phase)
            )));
        }
        if state.active.len() >= MAX_ACTIVE {
            return Err(DeployError::Conflict(format!(
                "{MAX_ACTIVE} deploys are in progress already"
            )));
        }
        state.seq += 1;
        let seq = state.seq;
        let now_ms = self.clock.wall_millis();
        let mut deploy = Deploy {
            id: format!("{service}-{seq}"),
            service: service.clone(),
            version,
            previous_version,
            bad_build,
            analysis,
            phase: Phase::Starting,
            created_ms: now_ms,
            placement: oldest.placement.clone(),
            canary: None,
            baseline: None,
            analysis_from_ms: None,
            judgements: Vec::new(),
            replaced: Vec::new(),
            steps: VecDeque::new(),
            seq,
        };
        let detail = format!(
            "{} → {}, {:.0} % each to canary and baseline, {} × {} after {} warm-up{}",
            deploy.previous_version,
            deploy.version,
            analysis.share * 100.0,
            analysis.intervals,
            humantime::format_duration(analysis.interval),
            humantime::format_duration(analysis.warmup),
            deploy
                .bad_build
                .map(|b| format!(", declared bad: {b}"))
                .unwrap_or_default()
        );
        record(&mut deploy, now_ms, "created", detail);
        tracing::info!(deploy = %deploy.id, service = %service, version = %deploy.version, "deploy created");
        state.active.insert(deploy.id.clone(), deploy.clone());
        metrics::gauge!(ACTIVE_METRIC).set(state.active.len() as f64);
        Ok(deploy)
    }

    /// One deploy, active or finished.
    pub fn get(&self, id: &str) -> Option<Deploy> {
        let state = self.state.lock();
        state
            .active
            .get(id)
            .or_else(|| state.finished.iter().find(|d| d.id == id))
            .cloned()
    }

    /// Every deploy kept.
    pub fn view(&self) -> DeployerView {
        let state = self.state.lock();
        DeployerView {
            active: state.active.values().cloned().collect(),
            finished: state.finished.iter().cloned().collect(),
            config: self.config.clone(),
        }
    }

    /// Rolls deploy `id` back: an analysis in progress stops its canary and
    /// baseline; a promotion (in progress or done) is reverted to the previous
    /// version. The loop does it; the answer is the deploy as marked.
    pub fn rollback(&self, id: &str, reason: &str) -> Result<Deploy, DeployError> {
        let mut state = self.state.lock();
        let state = &mut *state;
        if let Some(deploy) = state.active.get_mut(id) {
            return mark_rollback(deploy, self.clock.wall_millis(), reason);
        }
        let Some(at) = state.finished.iter().position(|d| d.id == id) else {
            return Err(DeployError::NotFound(format!("no deploy `{id}`")));
        };
        if let Some(other) = state
            .active
            .values()
            .find(|d| d.service == state.finished[at].service)
        {
            return Err(DeployError::Conflict(format!(
                "deploy `{}` of the same service is in progress; roll that back first",
                other.id
            )));
        }
        let mut deploy = state.finished[at].clone();
        let marked = mark_rollback(&mut deploy, self.clock.wall_millis(), reason)?;
        state.finished.remove(at);
        state.active.insert(deploy.id.clone(), deploy);
        metrics::gauge!(ACTIVE_METRIC).set(state.active.len() as f64);
        Ok(marked)
    }

    /// Rolls back the last deploy of `service` (see [`Deployer::rollback`]): what an
    /// alert's runbook calls. `NotFound` when the service has had no deploy kept,
    /// `Conflict` when its last deploy has nothing left to roll back.
    pub async fn rollback_last(&self, service: &str, reason: &str) -> Result<Deploy, DeployError> {
        let last = {
            let state = self.state.lock();
            state
                .active
                .values()
                .chain(state.finished.iter())
                .filter(|d| d.service == service)
                .max_by_key(|d| d.seq)
                .map(|d| d.id.clone())
        };
        let id =
            last.ok_or_else(|| DeployError::NotFound(format!("no deploy of `{service}` is kept")))?;
        self.rollback(&id, reason)
    }

    /// Advances every deploy in progress by at most one step; returns how many
    /// acted. Stands down while the platform shuts down.
    pub async fn tick(&self) -> usize {
        let snapshot: Vec<Deploy> = self.state.lock().active.values().cloned().collect();
        let mut acted = 0;
        for deploy in snapshot {
            let Some(live) = self.fleet.live(&deploy.service) else {
                return acted;
            };
            let now_ms = self.clock.wall_millis();
            let step = plan::next_step(&deploy, &live, now_ms);
            if step == Step::Wait {
                continue;
            }
            acted += 1;
            let change = self.act(&deploy, step).await;
            self.apply(&deploy, change);
        }
        acted
    }

    /// Runs [`Deployer::tick`] every `deploy.tick` until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(self.config.tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticks.tick() => { self.tick().await; }
            }
        }
    }

    /// Does `step` for `deploy`, returning what changed (applied under the lock).
    async fn act(&self, deploy: &Deploy, step: Step) -> Change {
        let service = deploy.service.as_str();
        let mut change = Change::default();
        let step_name = step_name(&step);
        metrics::counter!(STEPS_METRIC, "service" => service.to_owned(), "step" => step_name)
            .increment(1);
        match step {
            Step::Wait => {}
            Step::StartPair => {
                let build = deploy.bad_build;
                if let Err(e) = self
                    .fleet
                    .declare_bad_build(service, &deploy.version, build)
                {
                    change.fail(format!("cannot declare the build: {e}"));
                    return change;
                }
                let share = Some(deploy.analysis.share);
                for (role, version) in [
                    ("baseline", &deploy.previous_version),
                    ("canary", &deploy.version),
                ] {
                    let id = format!("{service}-{role}-{}", deploy.seq);
                    if let Err(e) = self.fleet.set_share(service, &id, share) {
                        change.fail(format!("cannot give the {role} its share: {e}"));
                        return change;
                    }
                    match self
                        .fleet
                        .start(service, version, &deploy.placement, Some(id.clone()))
                        .await
                    {
                        Ok(id) => {
                            change.note(
                                &format!("{role}_started"),
                                format!(
                                    "{id} ({version}) in {}, {:.0} % of the traffic",
                                    deploy.placement.zone,
                                    deploy.analysis.share * 100.0
                                ),
                            );
                            if role == "canary" {
                                change.canary = Some(Some(id));
                            } else {
                                change.baseline = Some(Some(id));
                            }
                        }
                        Err(e) => {
                            let _ = self.fleet.set_share(service, &id, None);
                            change.fail(format!("the {role} did not start: {e}"));
                            return change;
                        }
                    }
                }
                let from = self.clock.wall_millis() + millis(deploy.analysis.warmup);
                change.analysis_from_ms = Some(from);
                change.phase = Some(Phase::Analysing { interval: 0 });
            }
            Step::Judge { interval, window } => {
                let (Some(canary), Some(baseline)) = (&deploy.canary, &deploy.baseline) else {
                    change.fail("canary or baseline missing at judgement".into());
                    return change;
                };
                let judgement = judge::judge(&self.config.judge, |metric| {
                    (
                        self.metrics
                            .samples(service, canary, metric.measure, window),
                        self.metrics
                            .samples(service, baseline, metric.measure, window),
                    )
                });
                metrics::gauge!(SCORE_METRIC, "service" => service.to_owned()).set(judgement.score);
                let next = plan::after_judgement(
                    deploy,
                    interval,
                    &judgement,
                    self.config.judge.pass_threshold,
                );
                change.note(
                    "judged",
                    format!(
                        "interval {}/{}: score {:.2} ({:?}){}",
                        interval + 1,
                        deploy.analysis.intervals,
                        judgement.score,
                        judgement.verdict,
                        summary(&judgement)
                    ),
                );
                change.judgement = Some(IntervalJudgement {
                    interval: interval + 1,
                    at_ms: self.clock.wall_millis(),
                    from_ms: window.from_ms,
                    to_ms: window.to_ms,
                    score: judgement.score,
                    verdict: judgement.verdict,
                    judgement,
                });
                change.phase = Some(next);
            }
            Step::Replace { old } => {
                self.replace(deploy, &old, &deploy.version, "promoted", &mut change)
                    .await;
                if let Some(error) = change.error.take() {
                    change.phase = Some(Phase::Reverting {
                        reason: format!("promotion failed: {error}"),
                    });
                }
            }
            Step::Revert { instance } => {
                self.replace(
                    deploy,
                    &instance,
                    &deploy.previous_version,
                    "reverted",
                    &mut change,
                )
                .await;
                // Nothing left to fall back on: stop the pair and say so.
                if let Some(error) = change.error.take() {
                    change.note("error", error);
                    self.stop_pair(deploy, &mut change).await;
                    change.phase = Some(Phase::Done {
                        outcome: Outcome::Failed,
                    });
                }
            }
            Step::StopPair { then } => {
                self.stop_pair(deploy, &mut change).await;
                change.phase = Some(Phase::Done { outcome: then });
            }
        }
        change
    }

    /// Stops canary and baseline (their shares first, so callers move off them
    /// before they drain).
    async fn stop_pair(&self, deploy: &Deploy, change: &mut Change) {
        for (role, id) in [("canary", &deploy.canary), ("baseline", &deploy.baseline)] {
            let Some(id) = id else { continue };
            let _ = self.fleet.set_share(&deploy.service, id, None);
            match self.fleet.stop(id).await {
                Ok(()) => change.note(&format!("{role}_stopped"), id.clone()),
                Err(e) => change.note(&format!("{role}_stopped"), format!("{id}: {e}")),
            }
        }
        change.canary = Some(None);
        change.baseline = Some(None);
    }

    /// Starts `version` beside `old` (same zone), then stops `old` drained.
    async fn replace(
        &self,
        deploy: &Deploy,
        old: &Member,
        version: &str,
        what: &str,
        change: &mut Change,
    ) {
        match self
            .fleet
            .start(&deploy.service, version, &old.placement, None)
            .await
        {
            Ok(new) => {
                if let Err(e) = self.fleet.stop(&old.instance_id).await {
                    change.note("stop_failed", format!("{}: {e}", old.instance_id));
                }
                change.note(
                    what,
                    format!("{} ({}) → {new} ({version})", old.instance_id, old.version),
                );
                change.replaced.push((old.instance_id.clone(), new));
            }
            Err(e) => {
                change.error = Some(format!(
                    "could not start {version} beside {}: {e}",
                    old.instance_id
                ));
            }
        }
    }

    /// Records what a step did. The phase moves only if no rollback request
    /// changed it meanwhile (a request wins over the step's own conclusion).
    fn apply(&self, before: &Deploy, change: Change) {
        let now_ms = self.clock.wall_millis();
        let mut state = self.state.lock();
        let Some(deploy) = state.active.get_mut(&before.id) else {
            return;
        };
        for (step, detail) in change.notes {
            record(deploy, now_ms, &step, detail);
        }
        if let Some(canary) = change.canary {
            deploy.canary = canary;
        }
        if let Some(baseline) = change.baseline {
            deploy.baseline = baseline;
        }
        if let Some(from) = change.analysis_from_ms {
            deploy.analysis_from_ms = Some(from);
        }
        if let Some(judgement) = change.judgement {
            deploy.judgements.push(judgement);
        }
        deploy.replaced.extend(change.replaced);
        let mut phase = change.phase;
        if let Some(error) = change.error {
            record(deploy, now_ms, "error", error.clone());
            phase = Some(Phase::RollingBack { reason: error });
        }
        let Some(phase) = phase else { return };
        if deploy.phase != before.phase {
            // A rollback request came in while the step ran; it stands. But a pair
            // just stopped is gone whatever was asked.
            if let Phase::Done { outcome } = phase
                && deploy.canary.is_none()
                && deploy.baseline.is_none()
                && matches!(deploy.phase, Phase::RollingBack { .. })
            {
                deploy.phase = Phase::Done { outcome };
            } else {
                return;
            }
        } else {
            deploy.phase = phase;
        }
        match &deploy.phase {
            Phase::RollingBack { reason } | Phase::Reverting { reason } => {
                let reason = reason.clone();
                tracing::warn!(deploy = %deploy.id, %reason, "rolling back");
                record(deploy, now_ms, phase_name(&deploy.phase), reason);
            }
            Phase::Done { outcome } => {
                let outcome = *outcome;
                tracing::info!(deploy = %deploy.id, outcome = outcome.as_str(), "deploy finished");
                record(deploy, now_ms, "done", outcome.as_str().to_owned());
                metrics::counter!(DEPLOYS_METRIC, "service" => deploy.service.clone(), "outcome" => outcome.as_str())
                    .increment(1);
                let done = state.active.remove(&before.id).expect("present above");
                state.finished.push_front(done);
                state.finished.truncate(self.config.history);
                metrics::gauge!(ACTIVE_METRIC).set(state.active.len() as f64);
            }
            other => {
                let name = phase_name(other);
                record(deploy, now_ms, name, String::new());
            }
        }
    }
}

/// What one step changed.
#[derive(Debug, Default)]
struct Change {
    notes: Vec<(String, String)>,
    canary: Option<Option<String>>,
    baseline: Option<Option<String>>,
    analysis_from_ms: Option<u64>,
    judgement: Option<IntervalJudgement>,
    replaced: Vec<(String, String)>,
    phase: Option<Phase>,
    error: Option<String>,
}

impl Change {
    fn note(&mut self, step: &str, detail: String) {
        self.notes.push((step.to_owned(), detail));
    }

    fn fail(&mut self, error: String) {
        self.error = Some(error);
    }
}

fn mark_rollback(deploy: &mut Deploy, now_ms: u64, reason: &str) -> Result<Deploy, DeployError> {
    let phase = plan::rollback(&deploy.phase, reason).map_err(|why| {
        DeployError::Conflict(format!(
            "deploy `{}` cannot be rolled back: {why}",
            deploy.id
        ))
    })?;
    deploy.phase = phase;
    record(deploy, now_ms, "rollback_requested", reason.to_owned());
    Ok(deploy.clone())
}

fn record(deploy: &mut Deploy, at_ms: u64, step: &str, detail: String) {
    if deploy.steps.len() >= MAX_STEPS {
        deploy.steps.pop_front();
    }
    let at = UNIX_EPOCH + Duration::from_millis(at_ms);
    deploy.steps.push_back(StepRecord {
        at: humantime::format_rfc3339_millis(at).to_string(),
        at_ms,
        step: step.to_owned(),
        detail,
    });
}

fn summary(judgement: &judge::Judgement) -> String {
    let flagged: Vec<String> = judgement
        .metrics
        .iter()
        .filter(|m| m.classification != judge::Classification::Pass)
        .map(|m| format!("{} {:?}", m.name, m.classification))
        .collect();
    if flagged.is_empty() {
        String::new()
    } else {
        format!("; {}", flagged.join(", "))
    }
}

/// The phase's name as the steps record it.
pub fn phase_name(phase: &Phase) -> &'static str {
    match phase {
        Phase::Starting => "starting",
        Phase::Analysing { .. } => "analysing",
        Phase::Promoting => "promoting",
        Phase::RollingBack { .. } => "rolling_back",
        Phase::Reverting { .. } => "reverting",
        Phase::Done { .. } => "done",
    }
}

fn step_name(step: &Step) -> &'static str {
    match step {
        Step::Wait => "wait",
        Step::StartPair => "start_pair",
        Step::Judge { .. } => "judge",
        Step::Replace { .. } => "replace",
        Step::Revert { .. } => "revert",
        Step::StopPair { .. } => "stop_pair",
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An alert's "roll back the last deploy" runbook step: marks the rollback and
/// answers at once; the deployer's loop carries it out (see [`Deployer::rollback`]).
impl crate::alerts::DeployRollback for Deployer {
    fn rollback_last<'a>(
        &'a self,
        service: &'a str,
    ) -> casebook_kit::runtime::BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let deploy = self
                .rollback_last(service, "asked by an alert's runbook")
                .await
                .map_err(|e| e.to_string())?;
            let what = match deploy.phase {
                Phase::Reverting { .. } => "reverting the promoted instances",
                _ => "stopping the canary and its baseline",
            };
            Ok(format!(
                "deploy {} of {}: {} → {}, {what}",
                deploy.id, deploy.service, deploy.version, deploy.previous_version
            ))
        })
    }
}
