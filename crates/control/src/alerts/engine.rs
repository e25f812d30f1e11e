//! The alert engine: its rules and their alerts, one evaluation of every rule
//! ([`Alerts::tick`]), the action queue and its worker, the log.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use casebook_kit::clock::SharedClock;
use casebook_kit::config::ConfigError;
use casebook_kit::runtime::WeakPlatform;
use futures::StreamExt;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::actions::{self, ActionRun, DeployRollback, Effectors, Job, Outcome, Target};
use super::config::{AlertsConfig, MAX_RULES, Rule};
use super::eval::{self, AlertState, Event, Moment, Phase, Transition};
use super::source::{self, Labels, ValueSource};
use super::webhook::{self, AlertEvent, rfc3339};

/// The alerts of each rule now firing: `{rule}`.
pub const FIRING_METRIC: &str = "alerts_firing";
/// Every action run, whatever its outcome: `{rule, action, outcome}`.
pub const ACTIONS_METRIC: &str = "alert_actions_total";
/// The live instances of each service this platform has run: `{service}` — set
/// every evaluation, so rules can watch instance counts.
pub const LIVE_INSTANCES_METRIC: &str = "platform_live_instances";
/// Action runs executing at once; the rest wait in the queue.
pub const CONCURRENT_ACTIONS: usize = 4;

/// A change the API asked for that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// A field is wrong; the key names it.
    #[error("{0}")]
    Invalid(ConfigError),
    /// A rule of that name exists (a create), or the rules are at their bound.
    #[error("{0}")]
    Conflict(String),
}

/// One entry of the alert log.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LogEntry {
    /// An alert changed phase.
    Transition {
        at: String,
        at_ms: u64,
        rule: String,
        labels: Labels,
        from: Phase,
        to: Phase,
        /// `firing` or `resolved` when announced (its actions run).
        #[serde(skip_serializing_if = "Option::is_none")]
        event: Option<Event>,
        value: Option<f64>,
    },
    /// An action ran, or was not run (cooldown, queue full, unavailable).
    Action {
        at: String,
        at_ms: u64,
        #[serde(flatten)]
        run: ActionRun,
    },
}

#[derive(Debug)]
struct RuleState {
    rule: Rule,
    alerts: BTreeMap<Labels, AlertState>,
    last_evaluation: Option<SystemTime>,
    last_error: Option<String>,
    groups_over_limit: usize,
}

impl RuleState {
    fn new(rule: Rule) -> Self {
        Self {
            rule,
            alerts: BTreeMap::new(),
            last_evaluation: None,
            last_error: None,
            groups_over_limit: 0,
        }
    }
}

/// An action of an alert: what its cooldown is counted per.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CooldownKey {
    rule: String,
    action: usize,
    event: &'static str,
    target: Target,
}

#[derive(Debug, Default)]
struct State {
    rules: BTreeMap<String, RuleState>,
    log: VecDeque<LogEntry>,
    /// When each action of each alert last ran; entries past their cooldown are
    /// pruned every tick, so it holds at most the runs of one cooldown.
    cooldowns: HashMap<CooldownKey, (Instant, Duration)>,
    evaluations: u64,
}

/// The alert engine. Cheap to share (`Arc`); every method takes `&self`.
#[derive(Debug)]
pub struct Alerts {
    state: Mutex<State>,
    source: Arc<dyn ValueSource>,
    effectors: Arc<Effectors>,
    platform: WeakPlatform,
    clock: SharedClock,
    enabled: bool,
    interval: Duration,
    log_bound: usize,
    queue_bound: usize,
    retry_backoff: Duration,
    queue: mpsc::Sender<Job>,
    receiver: Mutex<Option<mpsc::Receiver<Job>>>,
    external_url: RwLock<String>,
}

impl Alerts {
    /// An engine with `config`'s rules (validated by the caller:
    /// [`AlertsConfig::validate`]), reading `source`, acting through `effectors`.
    pub fn new(
        config: &AlertsConfig,
        source: Arc<dyn ValueSource>,
        effectors: Arc<Effectors>,
        platform: WeakPlatform,
        clock: SharedClock,
    ) -> Self {
        let queue_bound = config.queue.clamp(1, super::config::MAX_QUEUE);
        let (queue, receiver) = mpsc::channel(queue_bound);
        let rules = config
            .effective_rules()
            .into_iter()
            .map(|r| (r.name.clone(), RuleState::new(r)))
            .collect();
        Self {
            state: Mutex::new(State {
                rules,
                ..State::default()
            }),
            source,
            effectors,
            platform,
            clock,
            enabled: config.enabled,
            interval: config.interval,
            log_bound: config.log.clamp(1, super::config::MAX_LOG),
            queue_bound,
            retry_backoff: config.retry_backoff,
            queue,
            receiver: Mutex::new(Some(receiver)),
            external_url: RwLock::new(String::new()),
        }
    }

    /// The control plane's base URL, for the webhook payload's links.
    pub fn set_external_url(&self, url: impl Into<String>) {
        *self.external_url.write() = url.into();
    }

    /// Wires the deployer's rollback (see [`DeployRollback`]); `None` unwires it.
    pub fn set_deploy_rollback(&self, rollback: Option<Arc<dyn DeployRollback>>) {
        self.effectors.set_rollback(rollback);
    }

    /// Evaluates every rule once and queues the actions of what fired or resolved.
    /// Returns the transitions. Stands down while the platform shuts down.
    pub fn tick(&self) -> Vec<(String, Transition)> {
        if let Some(platform) = self.platform.upgrade() {
            if platform.is_shutting_down() {
                return Vec::new();
            }
            let mut live: BTreeMap<String, u32> = BTreeMap::new();
            for view in platform.list() {
                *live.entry(view.info.service).or_default() += u32::from(view.state.is_live());
            }
            for (service, count) in live {
                metrics::gauge!(LIVE_INSTANCES_METRIC, "service" => service).set(f64::from(count));
            }
        }
        let rules: Vec<Rule> = self
            .state
            .lock()
            .rules
            .values()
            .map(|r| r.rule.clone())
            .collect();
        let mut all = Vec::new();
        for rule in rules {
            // The store is read without the engine's lock held.
            let values = source::rule_values(self.source.as_ref(), &rule);
            let at = Moment::of(self.clock.as_ref());
            let jobs = {
                let mut state = self.state.lock();
                state.evaluations += 1;
                let Some(entry) = state.rules.get_mut(&rule.name) else {
                    continue; // removed while it was read
                };
                if entry.rule != rule {
                    continue; // replaced while it was read: the next tick reads the new one
                }
                let outcome = eval::evaluate(&rule, &values, &mut entry.alerts, at);
                entry.last_evaluation = Some(at.wall);
                entry.groups_over_limit = outcome.groups_over_limit;
                match &values {
                    Err(error) if entry.last_error.as_ref() != Some(error) => {
                        tracing::warn!(rule = %rule.name, %error, "alert rule cannot be read");
                    }
                    _ => {}
                }
                entry.last_error = values.as_ref().err().cloned();
                let firing = entry
                    .alerts
                    .values()
                    .filter(|a| a.phase == Phase::Firing)
                    .count();
                metrics::gauge!(FIRING_METRIC, "rule" => rule.name.clone()).set(firing as f64);
                let mut jobs = Vec::new();
                for transition in &outcome.transitions {
                    self.log_transition(&mut state, &rule, transition);
                    jobs.extend(self.jobs_of(&rule, transition));
                }
                all.extend(
                    outcome
                        .transitions
                        .into_iter()
                        .map(|t| (rule.name.clone(), t)),
                );
                jobs
            };
            for job in jobs {
                self.dispatch(job);
            }
        }
        self.prune_cooldowns();
        all
    }

    /// Logs one transition (announced ones at INFO, pending and back at DEBUG).
    fn log_transition(&self, state: &mut State, rule: &Rule, t: &Transition) {
        let (from, to) = (t.from.as_str(), t.to.as_str());
        match &t.event {
            Some(event) => tracing::info!(rule = %rule.name, labels = ?t.labels, from, to,
                value = ?t.value, "alert {}", event.as_str()),
            None => tracing::debug!(rule = %rule.name, labels = ?t.labels, from, to,
                value = ?t.value, "alert changed phase"),
        }
        self.push_log(
            state,
            LogEntry::Transition {
                at: rfc3339(t.at.wall),
                at_ms: millis(t.at.wall),
                rule: rule.name.clone(),
                labels: t.labels.clone(),
                from: t.from,
                to: t.to,
                event: t.event.clone(),
                value: t.value,
            },
        );
    }

    fn push_log(&self, state: &mut State, entry: LogEntry) {
        if state.log.len() >= self.log_bound {
            state.log.pop_front();
        }
        state.log.push_back(entry);
    }

    /// The alert's full labels: `alertname`, the rule's, the group's.
    fn labels_of(rule: &Rule, group: &Labels) -> Labels {
        let mut labels = rule.labels.clone();
        labels.extend(group.iter().map(|(k, v)| (k.clone(), v.clone())));
        labels.insert("alertname".into(), rule.name.clone());
        labels
    }

    /// The runs an announced transition asks for.
    fn jobs_of(&self, rule: &Rule, t: &Transition) -> Vec<Result<(usize, Job), ActionRun>> {
        let Some(event) = &t.event else {
            return Vec::new();
        };
        let labels = Self::labels_of(rule, &t.labels);
        let external_url = self.external_url.read().clone();
        let payload = webhook::payload(&AlertEvent {
            rule: &rule.name,
            labels: &labels,
            annotations: &rule.annotations,
            event: event.clone(),
            value: t.value,
            starts_at: t.firing_since,
            ends_at: (*event == Event::Resolved).then_some(t.at.wall),
            external_url: &external_url,
        });
        rule.actions
            .iter()
            .enumerate()
            .filter(|(_, a)| *event == Event::Firing || a.runs_on_resolve())
            .map(|(index, action)| {
                let job = Job {
                    rule: rule.name.clone(),
                    action: action.clone(),
                    event: event.clone(),
                    target: Target::Url(String::new()),
                    labels: labels.clone(),
                    payload: payload.clone(),
                };
                match actions::target(action, &labels) {
                    Ok(target) => Ok((index, Job { target, ..job })),
                    Err(why) => Err(ActionRun::not_run(&job, Outcome::Failed, why)),
                }
            })
            .collect()
    }

    /// Queues a run unless its alert ran it within its cooldown or the queue is
    /// full (either recorded as the run's outcome).
    fn dispatch(&self, job: Result<(usize, Job), ActionRun>) {
        let (index, job) = match job {
            Ok(job) => job,
            Err(run) => return self.record(run),
        };
        let key = CooldownKey {
            rule: job.rule.clone(),
            action: index,
            event: job.event.as_str(),
            target: job.target.clone(),
        };
        let now = self.clock.now();
        let cooldown = job.action.cooldown();
        let last = self.state.lock().cooldowns.get(&key).copied();
        if let Some((last, _)) = last
            && now.saturating_duration_since(last) < cooldown
        {
            let left = cooldown - now.saturating_duration_since(last);
            return self.record(ActionRun::not_run(
                &job,
                Outcome::Cooldown,
                format!("ran {:?} ago; cooldown {cooldown:?}", cooldown - left),
            ));
        }
        match self.queue.try_send(job) {
            Ok(()) => {
                self.state.lock().cooldowns.insert(key, (now, cooldown));
            }
            Err(mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) => {
                self.record(ActionRun::not_run(
                    &job,
                    Outcome::Dropped,
                    format!("the action queue is full ({} waiting)", self.queue_bound),
                ));
            }
        }
    }

    fn prune_cooldowns(&self) {
        let now = self.clock.now();
        self.state
            .lock()
            .cooldowns
            .retain(|_, (last, cooldown)| now.saturating_duration_since(*last) < *cooldown);
    }

    /// Logs, counts and keeps one run.
    fn record(&self, run: ActionRun) {
        metrics::counter!(ACTIONS_METRIC, "rule" => run.rule.clone(),
            "action" => run.action.as_str(), "outcome" => run.outcome.as_str())
        .increment(1);
        let (rule, action, outcome) = (&run.rule, run.action.as_str(), run.outcome.as_str());
        match run.outcome {
            Outcome::Ok => {
                tracing::info!(%rule, action, target = %run.target, event = run.event.as_str(),
                attempts = run.attempts, detail = %run.detail, "alert action ran")
            }
            _ => tracing::warn!(%rule, action, target = %run.target, event = run.event.as_str(),
                outcome, attempts = run.attempts, detail = %run.detail, "alert action did not succeed"),
        }
        let wall = self.clock.wall();
        let mut state = self.state.lock();
        self.push_log(
            &mut state,
            LogEntry::Action {
                at: rfc3339(wall),
                at_ms: millis(wall),
                run,
            },
        );
    }

    /// Executes queued runs, [`CONCURRENT_ACTIONS`] at a time, until `shutdown`
    /// (runs under way then are abandoned). Only the first call takes the queue;
    /// later ones return at once.
    pub async fn run_actions(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(receiver) = self.receiver.lock().take() else {
            return;
        };
        let jobs = futures::stream::unfold(receiver, |mut rx| async move {
            rx.recv().await.map(|job| (job, rx))
        });
        let engine = self.clone();
        let work = jobs.for_each_concurrent(CONCURRENT_ACTIONS, move |job| {
            let engine = engine.clone();
            async move {
                let run = actions::execute(&engine.effectors, &job, engine.retry_backoff).await;
                engine.record(run);
            }
        });
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = work => {}
        }
    }

    /// Runs the action worker, and [`Self::tick`] every interval, until
    /// `shutdown` (no ticks when disabled).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let worker = self.clone().run_actions(shutdown.clone());
        let evaluator = async {
            if !self.enabled {
                tracing::info!("alerts disabled (alerts.enabled = false)");
                return;
            }
            // The first tick one interval after start, as the autoscaler's.
            let mut ticks = tokio::time::interval_at(
                tokio::time::Instant::now() + self.interval,
                self.interval,
            );
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                self.tick();
            }
        };
        tokio::join!(worker, evaluator);
    }

    /// Adds a rule; a rule of that name already is a conflict.
    pub fn add_rule(&self, rule: Rule) -> Result<(), ChangeError> {
        rule.validate("").map_err(ChangeError::Invalid)?;
        let mut state = self.state.lock();
        if state.rules.contains_key(&rule.name) {
            return Err(ChangeError::Conflict(format!(
                "a rule `{}` exists; PUT /api/alerts/rules/{} replaces it",
                rule.name, rule.name
            )));
        }
        if state.rules.len() >= MAX_RULES {
            return Err(ChangeError::Conflict(format!(
                "{MAX_RULES} rules already; delete one first"
            )));
        }
        tracing::info!(rule = %rule.name, "alert rule added");
        state.rules.insert(rule.name.clone(), RuleState::new(rule));
        Ok(())
    }

    /// Adds or replaces a rule; whether it was created. A replaced rule keeps its
    /// alerts when only its labels, annotations or actions changed; otherwise it
    /// starts afresh, and its firing alerts are announced resolved (the old rule's
    /// `on_resolve` actions run: a receiver is not left holding them).
    pub fn put_rule(&self, rule: Rule) -> Result<bool, ChangeError> {
        rule.validate("").map_err(ChangeError::Invalid)?;
        let name = rule.name.clone();
        let (created, ended) = {
            let mut state = self.state.lock();
            if !state.rules.contains_key(&name) && state.rules.len() >= MAX_RULES {
                return Err(ChangeError::Conflict(format!(
                    "{MAX_RULES} rules already; delete one first"
                )));
            }
            match state.rules.get_mut(&name) {
                Some(entry) if same_condition(&entry.rule, &rule) => {
                    entry.rule = rule;
                    (false, None)
                }
                Some(entry) => {
                    let old = std::mem::replace(entry, RuleState::new(rule));
                    (false, Some(old))
                }
                None => {
                    state.rules.insert(name.clone(), RuleState::new(rule));
                    (true, None)
                }
            }
        };
        if let Some(old) = ended {
            self.end(old);
        }
        tracing::info!(rule = %name, created, "alert rule set");
        Ok(created)
    }

    /// Removes a rule; its firing alerts are announced resolved.
    pub fn remove_rule(&self, name: &str) -> Option<Rule> {
        let removed = self.state.lock().rules.remove(name)?;
        let rule = removed.rule.clone();
        self.end(removed);
        tracing::info!(rule = name, "alert rule removed");
        Some(rule)
    }

    /// Resolves the firing alerts of a rule that is gone (logged, its `on_resolve`
    /// actions queued) and zeroes its gauge.
    fn end(&self, old: RuleState) {
        metrics::gauge!(FIRING_METRIC, "rule" => old.rule.name.clone()).set(0.0);
        let at = Moment::of(self.clock.as_ref());
        let mut jobs = Vec::new();
        {
            let mut state = self.state.lock();
            for (labels, alert) in old.alerts.iter().filter(|(_, a)| a.phase == Phase::Firing) {
                let transition = Transition {
                    labels: labels.clone(),
                    from: Phase::Firing,
                    to: Phase::Inactive,
                    event: Some(Event::Resolved),
                    value: alert.value,
                    firing_since: alert.firing_since,
                    at,
                };
                self.log_transition(&mut state, &old.rule, &transition);
                jobs.extend(self.jobs_of(&old.rule, &transition));
            }
        }
        for job in jobs {
            self.dispatch(job);
        }
    }

    /// One rule and its alerts; `None` when there is no such rule.
    pub fn rule_view(&self, name: &str) -> Option<RuleView> {
        let at = Moment::of(self.clock.as_ref());
        let state = self.state.lock();
        state.rules.get(name).map(|r| rule_view(r, at))
    }

    /// What `GET /api/alerts` shows.
    pub fn view(&self) -> AlertsView {
        let at = Moment::of(self.clock.as_ref());
        let state = self.state.lock();
        AlertsView {
            enabled: self.enabled,
            interval: humantime::format_duration(self.interval).to_string(),
            now: rfc3339(at.wall),
            evaluations: state.evaluations,
            queue: QueueView {
                capacity: self.queue_bound,
                waiting: self.queue_bound - self.queue.capacity(),
            },
            rollback_wired: self.effectors.has_rollback(),
            rules: state.rules.values().map(|r| rule_view(r, at)).collect(),
            log: state.log.iter().rev().cloned().collect(),
        }
    }
}

/// Whether two versions of a rule alert alike (only what is announced differs).
fn same_condition(a: &Rule, b: &Rule) -> bool {
    let strip = |r: &Rule| Rule {
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        actions: Vec::new(),
        ..r.clone()
    };
    strip(a) == strip(b)
}

fn rule_view(r: &RuleState, at: Moment) -> RuleView {
    let count = |phase| r.alerts.values().filter(|a| a.phase == phase).count();
    let (firing, pending) = (count(Phase::Firing), count(Phase::Pending));
    RuleView {
        state: if firing > 0 {
            Phase::Firing
        } else if pending > 0 {
            Phase::Pending
        } else {
            Phase::Inactive
        },
        firing,
        pending,
        last_evaluation: r.last_evaluation.map(rfc3339),
        last_error: r.last_error.clone(),
        groups_over_limit: r.groups_over_limit,
        alerts: r
            .alerts
            .iter()
            .map(|(labels, a)| AlertView {
                labels: labels.clone(),
                phase: a.phase,
                value: a.value,
                active_since: a.active_since.map(|m| rfc3339(m.wall)),
                active_for_secs: eval::active_for(a, at).map(|d| d.as_secs_f64()),
                firing_since: a.firing_since.map(rfc3339),
            })
            .collect(),
        rule: r.rule.clone(),
    }
}

/// `GET /api/alerts`.
#[derive(Debug, Clone, Serialize)]
pub struct AlertsView {
    pub enabled: bool,
    pub interval: String,
    /// The injected clock's wall time.
    pub now: String,
    /// Rule evaluations since start.
    pub evaluations: u64,
    pub queue: QueueView,
    /// Whether a deployer is wired for `rollback` actions.
    pub rollback_wired: bool,
    pub rules: Vec<RuleView>,
    /// Newest first, at most `alerts.log` entries.
    pub log: Vec<LogEntry>,
}

/// The action queue now.
#[derive(Debug, Clone, Serialize)]
pub struct QueueView {
    pub capacity: usize,
    pub waiting: usize,
}

/// One rule with its alerts.
#[derive(Debug, Clone, Serialize)]
pub struct RuleView {
    pub rule: Rule,
    /// The rule's worst alert: `firing`, else `pending`, else `inactive`.
    pub state: Phase,
    pub firing: usize,
    pub pending: usize,
    pub last_evaluation: Option<String>,
    /// Why the last read failed (the store refused the query), if it did.
    pub last_error: Option<String>,
    /// Groups left out at the last evaluation (the rule tracks at most
    /// [`eval::MAX_ALERTS_PER_RULE`]).
    pub groups_over_limit: usize,
    pub alerts: Vec<AlertView>,
}

/// One alert (group) of a rule.
#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    pub labels: Labels,
    pub phase: Phase,
    /// The last value read; `null` for no data.
    pub value: Option<f64>,
    /// When the condition began to hold.
    pub active_since: Option<String>,
    pub active_for_secs: Option<f64>,
    pub firing_since: Option<String>,
}

fn millis(wall: SystemTime) -> u64 {
    wall.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
