//! The autoscaler itself: its policies and schedule, one evaluation of every policy
//! ([`Autoscaler::tick`]), the loop that runs it, and what it remembers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use casebook_kit::clock::SharedClock;
use casebook_kit::config::ConfigError;
use casebook_kit::runtime::WeakPlatform;
use parking_lot::Mutex;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::act::{self, Acted};
use super::config::{self, AutoscalerConfig, MAX_POLICIES, MAX_SCHEDULE, Policy};
use super::decide::{Decision, Direction, Moment, Reason, ScalingHistory, decide};
use super::schedule::{self, ScheduledScale};
use super::signal::{Reading, UtilisationSignal};

/// Counts every evaluation: `{service, direction, reason}`.
pub const DECISIONS_METRIC: &str = "autoscaler_decisions_total";
/// The instances the last decision wanted: `{service}`.
pub const DESIRED_METRIC: &str = "autoscaler_desired_instances";
/// The last utilisation read: `{service}`.
pub const UTILISATION_METRIC: &str = "autoscaler_utilisation";

/// A change the API or a caller asked for that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// A field is wrong; the key names it.
    #[error("{0}")]
    Invalid(ConfigError),
    /// A bound on policies or schedule entries is reached.
    #[error("{0}")]
    Full(String),
}

/// One decision as the history keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionRecord {
    /// Wall time on the injected clock, RFC 3339.
    pub at: String,
    pub at_ms: u64,
    pub service: String,
    #[serde(flatten)]
    pub decision: Decision,
    /// The reading decided on; `null` for a gap.
    pub utilisation: Option<f64>,
    /// The instances started or stopped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<String>,
    /// Why acting failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Who asked, when not the autoscaler's own rule: `alert:<rule>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

/// What the autoscaler remembers of one service.
#[derive(Debug, Clone, Default)]
struct ServiceState {
    history: ScalingHistory,
    last_out_wall: Option<SystemTime>,
    last_in_wall: Option<SystemTime>,
    reading: Option<(Reading, SystemTime)>,
    last: Option<Decision>,
}

#[derive(Debug, Default)]
struct State {
    policies: BTreeMap<String, Policy>,
    schedule: Vec<ScheduledScale>,
    services: BTreeMap<String, ServiceState>,
    decisions: VecDeque<DecisionRecord>,
    evaluations: u64,
}

/// The autoscaler. Cheap to share (`Arc`); every method takes `&self`.
#[derive(Debug)]
pub struct Autoscaler {
    state: Mutex<State>,
    signal: Arc<dyn UtilisationSignal>,
    platform: WeakPlatform,
    clock: SharedClock,
    /// How long a scale-in's graceful stop may drain.
    drain: Duration,
    enabled: bool,
    interval: Duration,
    history: usize,
    /// The declared spread of each service a case registers, as placement rules.
    declared: BTreeMap<String, config::PlacementRule>,
}

impl Autoscaler {
    /// An autoscaler of `platform`'s instances with `config`'s policies and schedule
    /// (validated by the caller: [`AutoscalerConfig::validate`]).
    pub fn new(
        config: &AutoscalerConfig,
        signal: Arc<dyn UtilisationSignal>,
        platform: WeakPlatform,
        clock: SharedClock,
        drain: Duration,
    ) -> Self {
        let policies = config
            .policies
            .iter()
            .map(|p| (p.service.clone(), p.clone()))
            .collect();
        Self {
            state: Mutex::new(State {
                policies,
                schedule: config.schedule.clone(),
                ..State::default()
            }),
            signal,
            platform,
            clock,
            drain,
            enabled: config.enabled,
            interval: config.interval,
            history: config.history.clamp(1, config::MAX_HISTORY),
            declared: config.declared.clone(),
        }
    }

    /// Evaluates every policy once, acts on what it decides, and returns the
    /// decisions. Stands down (returns nothing) while the platform shuts down.
    pub async fn tick(&self) -> Vec<Decision> {
        let Some(platform) = self.platform.upgrade() else {
            return Vec::new();
        };
        let (policies, schedule, histories) = {
            let mut state = self.state.lock();
            let wall = self.clock.wall();
            // One-off entries that are over are dropped (their room is freed).
            state
                .schedule
                .retain(|entry| entry.window_at_or_after(wall).is_some());
            let histories: BTreeMap<String, ScalingHistory> = state
                .services
                .iter()
                .map(|(s, st)| (s.clone(), st.history))
                .collect();
            (
                state.policies.values().cloned().collect::<Vec<_>>(),
                state.schedule.clone(),
                histories,
            )
        };
        let mut decisions = Vec::with_capacity(policies.len());
        for policy in policies {
            if platform.is_shutting_down() {
                break;
            }
            if !act::ever_started(&platform, &policy.service) {
                let decision = Decision::hold(0, Reason::NotStarted);
                let at = Moment::of(self.clock.as_ref());
                self.record(&policy.service, decision, None, at, Acted::default());
                decisions.push(decision);
                continue;
            }
            let current =
                u32::try_from(act::live(&platform, &policy.service).len()).unwrap_or(u32::MAX);
            let reading = if current > 0 {
                self.signal.read(&policy, current)
            } else {
                None
            };
            let at = Moment::of(self.clock.as_ref());
            let history = histories.get(&policy.service).copied().unwrap_or_default();
            let decision = decide(
                &policy,
                &schedule,
                reading.map(|r| r.utilisation),
                current,
                at,
                &history,
            );
            let acted = match decision.direction {
                Direction::Out => {
                    let rule = self.placement_of(&platform, &policy);
                    act::start(
                        &platform,
                        &policy.service,
                        decision.to - decision.from,
                        &rule,
                    )
                    .await
                }
                Direction::In => {
                    act::stop_newest(
                        &platform,
                        &policy.service,
                        decision.from - decision.to,
                        self.drain,
                    )
                    .await
                }
                Direction::Hold => Acted::default(),
            };
            self.record(&policy.service, decision, reading, at, acted);
            decisions.push(decision);
        }
        decisions
    }

    /// Where `policy`'s service scales out to (see [`act::placement_rule`]).
    pub fn placement_of(
        &self,
        platform: &casebook_kit::runtime::Platform,
        policy: &Policy,
    ) -> config::PlacementRule {
        act::placement_rule(
            platform,
            &policy.service,
            &policy.placement,
            self.declared.get(&policy.service),
        )
    }

    /// Logs, counts and remembers one decision.
    fn record(
        &self,
        service: &str,
        decision: Decision,
        reading: Option<Reading>,
        at: Moment,
        acted: Acted,
    ) {
        let (direction, reason) = (decision.direction.as_str(), decision.reason.as_str());
        let utilisation = reading.map(|r| r.utilisation);
        metrics::counter!(DECISIONS_METRIC, "service" => service.to_owned(),
            "direction" => direction, "reason" => reason)
        .increment(1);
        metrics::gauge!(DESIRED_METRIC, "service" => service.to_owned())
            .set(f64::from(decision.to));
        if let Some(u) = utilisation {
            metrics::gauge!(UTILISATION_METRIC, "service" => service.to_owned()).set(u);
        }

        let mut state = self.state.lock();
        state.evaluations += 1;
        // A policy removed while this tick ran leaves nothing behind.
        let tracked = state.policies.contains_key(service);
        let entry = state.services.entry(service.to_owned()).or_default();
        let changed = entry.last.map(|d| (d.direction, d.reason))
            != Some((decision.direction, decision.reason));
        match decision.direction {
            Direction::Out => {
                entry.history.last_out = Some(at.now);
                entry.last_out_wall = Some(at.wall);
            }
            Direction::In => {
                entry.history.last_in = Some(at.now);
                entry.last_in_wall = Some(at.wall);
            }
            Direction::Hold => {}
        }
        entry.last = Some(decision);
        if let Some(reading) = reading {
            entry.reading = Some((reading, at.wall));
        }
        if !tracked {
            state.services.remove(service);
        }
        let (from, to) = (decision.from, decision.to);
        match (&decision.direction, &acted.error) {
            (Direction::Hold, _) if changed => {
                tracing::info!(service, from, reason, ?utilisation, "autoscaler holds");
            }
            (Direction::Hold, _) => {
                tracing::debug!(service, from, reason, ?utilisation, "autoscaler holds");
            }
            (_, None) => tracing::info!(service, from, to, direction, reason, ?utilisation,
                instances = ?acted.instances, "autoscaler scaled"),
            (_, Some(error)) => tracing::warn!(service, from, to, direction, reason,
                ?utilisation, instances = ?acted.instances, %error, "autoscaler could not scale"),
        }
        // Every action is kept; a hold only when it differs from the service's last
        // decision, so a steady service does not flush the history.
        if decision.direction != Direction::Hold || changed {
            if state.decisions.len() >= self.history {
                state.decisions.pop_front();
            }
            state.decisions.push_back(DecisionRecord {
                at: rfc3339(at.wall),
                at_ms: millis(at.wall),
                service: service.to_owned(),
                decision,
                utilisation,
                instances: acted.instances,
                error: acted.error,
                requested_by: None,
            });
        }
    }

    /// Starts up to `count` more instances of `service` for `requested_by` (an
    /// alert's runbook: `alert:<rule>`), capped at its policy's `max_instances`,
    /// placed as a reactive scale-out is. Recorded in the history (reason `alert`)
    /// and counted as a scale-out: `cooldown_out` and `cooldown_in` count from it.
    /// A tick deciding at the same moment may count the same instances; the next
    /// tick's ceiling rule brings a service above its maximum back to it.
    pub async fn request_scale_out(
        &self,
        service: &str,
        count: u32,
        requested_by: &str,
    ) -> Result<DecisionRecord, String> {
        let platform = self
            .platform
            .upgrade()
            .filter(|p| !p.is_shutting_down())
            .ok_or("the platform is shutting down")?;
        let policy = self.state.lock().policies.get(service).cloned().ok_or_else(|| {
            format!("no autoscaler policy for `{service}`: a scale-out stays within a policy's max_instances")
        })?;
        let current = u32::try_from(act::live(&platform, service).len()).unwrap_or(u32::MAX);
        let to = current.saturating_add(count).min(policy.max_instances);
        if to <= current {
            return Err(format!(
                "`{service}` has {current} live instances, at its policy's max_instances ({})",
                policy.max_instances
            ));
        }
        let decision = Decision {
            from: current,
            to,
            direction: Direction::Out,
            reason: Reason::Alert,
        };
        let rule = self.placement_of(&platform, &policy);
        let acted = act::start(&platform, service, to - current, &rule).await;
        let at = Moment::of(self.clock.as_ref());
        let error = acted.error.clone();
        self.record(service, decision, None, at, acted);
        let mut state = self.state.lock();
        let record = state
            .decisions
            .iter_mut()
            .rev()
            .find(|d| d.service == service && d.decision == decision)
            .map(|d| {
                d.requested_by = Some(requested_by.to_owned());
                d.clone()
            });
        drop(state);
        match (error, record) {
            (Some(error), _) => Err(error),
            (None, Some(record)) => Ok(record),
            (None, None) => Err("the scale-out was not recorded".into()),
        }
    }

    /// Runs [`Self::tick`] every interval until `shutdown` (nothing when disabled).
    /// A tick under way when `shutdown` fires finishes (its starts and stops are
    /// not cut in half).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        if !self.enabled {
            tracing::info!("autoscaler disabled (autoscaler.enabled = false)");
            return;
        }
        // The first tick one interval after start: the instances a command starts
        // beside the control plane (`up`) come up first.
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + self.interval, self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            self.tick().await;
        }
    }

    /// Adds or replaces `policy.service`'s policy (validated; the caller checks the
    /// service exists). Returns whether one was replaced.
    pub fn set_policy(&self, policy: Policy) -> Result<bool, ChangeError> {
        policy.validate("").map_err(ChangeError::Invalid)?;
        let mut state = self.state.lock();
        let replaced = state.policies.contains_key(&policy.service);
        if !replaced && state.policies.len() >= MAX_POLICIES {
            return Err(ChangeError::Full(format!(
                "{MAX_POLICIES} policies already; remove one first"
            )));
        }
        tracing::info!(service = %policy.service, replaced, "autoscaler policy set");
        state.policies.insert(policy.service.clone(), policy);
        Ok(replaced)
    }

    /// Removes `service`'s policy and its schedule entries; `None` if it had none.
    /// Its exported gauges keep their last values.
    pub fn remove_policy(&self, service: &str) -> Option<(Policy, usize)> {
        let mut state = self.state.lock();
        let policy = state.policies.remove(service)?;
        let before = state.schedule.len();
        state.schedule.retain(|e| e.service != service);
        let removed = before - state.schedule.len();
        state.services.remove(service);
        tracing::info!(
            service,
            schedule_entries = removed,
            "autoscaler policy removed"
        );
        Some((policy, removed))
    }

    /// Adds a schedule entry (validated against its service's policy).
    pub fn add_schedule(&self, entry: ScheduledScale) -> Result<(), ChangeError> {
        entry.validate("").map_err(ChangeError::Invalid)?;
        let wall = self.clock.wall();
        let mut state = self.state.lock();
        config::check_entry_against(&entry, state.policies.get(&entry.service), "")
            .map_err(ChangeError::Invalid)?;
        if entry.window_at_or_after(wall).is_none() {
            return Err(ChangeError::Invalid(ConfigError::new(
                "until",
                format!("{} has passed", entry.until),
            )));
        }
        state
            .schedule
            .retain(|e| e.window_at_or_after(wall).is_some());
        if state.schedule.len() >= MAX_SCHEDULE {
            return Err(ChangeError::Full(format!(
                "{MAX_SCHEDULE} schedule entries already; remove a service's entries first"
            )));
        }
        tracing::info!(service = %entry.service, at = %entry.at, until = %entry.until,
            instances = entry.instances, lead = ?entry.lead, "autoscaler schedule entry added");
        state.schedule.push(entry);
        Ok(())
    }

    /// Removes `service`'s schedule entries; how many there were.
    pub fn remove_schedule(&self, service: &str) -> usize {
        let mut state = self.state.lock();
        let before = state.schedule.len();
        state.schedule.retain(|e| e.service != service);
        before - state.schedule.len()
    }

    /// The services the platform can start; `None` once it is gone.
    pub fn startable_services(&self) -> Option<Vec<String>> {
        self.platform.upgrade().map(|p| p.services())
    }

    /// What `GET /api/autoscaler` shows.
    pub fn view(&self) -> AutoscalerView {
        let wall = self.clock.wall();
        // Counted before the state is locked: the platform's lock is never taken
        // under ours.
        let live = self.platform.upgrade().map(|p| act::live_counts(&p));
        let state = self.state.lock();
        let services = state
            .policies
            .values()
            .map(|policy| {
                let remembered = state.services.get(&policy.service);
                ServiceView {
                    service: policy.service.clone(),
                    current: live
                        .as_ref()
                        .map(|live| live.get(&policy.service).copied().unwrap_or(0)),
                    desired: remembered.and_then(|s| s.last).map(|d| d.to),
                    floor: schedule::floor(&state.schedule, &policy.service, wall),
                    signal: remembered
                        .and_then(|s| s.reading)
                        .map(|(reading, at)| SignalView {
                            reading,
                            at: rfc3339(at),
                        }),
                    last_decision: remembered.and_then(|s| s.last),
                    last_scale_out: remembered.and_then(|s| s.last_out_wall).map(rfc3339),
                    last_scale_in: remembered.and_then(|s| s.last_in_wall).map(rfc3339),
                    policy: policy.clone(),
                }
            })
            .collect();
        let schedule = state
            .schedule
            .iter()
            .map(|entry| {
                let window = entry.window_at_or_after(wall);
                ScheduleView {
                    entry: entry.clone(),
                    active: entry.is_active(wall),
                    window_from: window.map(|w| rfc3339(w.from)),
                    window_until: window.map(|w| rfc3339(w.until)),
                }
            })
            .collect();
        AutoscalerView {
            enabled: self.enabled,
            interval: humantime::format_duration(self.interval).to_string(),
            evaluations: state.evaluations,
            now: rfc3339(wall),
            services,
            schedule,
            decisions: state.decisions.iter().rev().cloned().collect(),
        }
    }
}

/// `GET /api/autoscaler`.
#[derive(Debug, Clone, Serialize)]
pub struct AutoscalerView {
    pub enabled: bool,
    pub interval: String,
    /// Evaluations since start (one per policy per tick).
    pub evaluations: u64,
    /// The injected clock's wall time.
    pub now: String,
    pub services: Vec<ServiceView>,
    pub schedule: Vec<ScheduleView>,
    /// Newest first: every action, and each hold that differs from the service's
    /// previous decision.
    pub decisions: Vec<DecisionRecord>,
}

/// One policy's service.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    pub service: String,
    pub policy: Policy,
    /// Live instances now; `null` once the platform is gone.
    pub current: Option<u32>,
    /// What the last decision wanted; `null` before the first.
    pub desired: Option<u32>,
    /// The schedule's floor now, if an entry is active.
    pub floor: Option<u32>,
    /// The last reading; `null` before the first.
    pub signal: Option<SignalView>,
    pub last_decision: Option<Decision>,
    pub last_scale_out: Option<String>,
    pub last_scale_in: Option<String>,
}

/// A reading and when it was taken.
#[derive(Debug, Clone, Serialize)]
pub struct SignalView {
    #[serde(flatten)]
    pub reading: Reading,
    pub at: String,
}

/// A schedule entry and its window now.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleView {
    #[serde(flatten)]
    pub entry: ScheduledScale,
    /// Whether its floor holds now.
    pub active: bool,
    /// The window holding now, or the next: from `at - lead` to `until`.
    pub window_from: Option<String>,
    pub window_until: Option<String>,
}

fn rfc3339(wall: SystemTime) -> String {
    humantime::format_rfc3339_millis(wall).to_string()
}

fn millis(wall: SystemTime) -> u64 {
    wall.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
