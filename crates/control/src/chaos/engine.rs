//! [`Chaos`]: the experiments (started, listed, aborted; a bounded history) and the
//! Chaos Monkey daemon (started and stopped at run time).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use casebook_kit::config::ConfigError;
use casebook_kit::runtime::{BoxFuture, WeakPlatform};
use casebook_kit::sampling::Rng;
use casebook_kit::topology::InstanceInfo;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::experiment::{self, ExperimentRecord, ExperimentSpec, Shared, Status};
use super::fault::{FaultEnv, FaultSpec};
use super::monkey::{self, MonkeyConfig, MonkeyEvent, MonkeyScheduler, Planned, Terminator};
use crate::CONTROL_SERVICE;

/// The most finished experiments `history` may keep.
pub const MAX_HISTORY: usize = 10_000;
/// The most experiments running at once `max_running` may allow.
pub const MAX_RUNNING: usize = 64;

/// The `[chaos]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChaosConfig {
    /// Finished experiments kept for `GET /api/chaos/experiments` (oldest dropped).
    pub history: usize,
    /// Experiments running at once; more are refused (409).
    pub max_running: usize,
    pub monkey: MonkeyConfig,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        Self {
            history: 100,
            max_running: 4,
            monkey: MonkeyConfig::default(),
        }
    }
}

impl ChaosConfig {
    /// Checks every value; errors name the dotted key (`chaos.…`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.history == 0 || self.history > MAX_HISTORY {
            return Err(ConfigError::new(
                "chaos.history",
                format!("from 1 to {MAX_HISTORY}"),
            ));
        }
        if self.max_running == 0 || self.max_running > MAX_RUNNING {
            return Err(ConfigError::new(
                "chaos.max_running",
                format!("from 1 to {MAX_RUNNING}"),
            ));
        }
        self.monkey.validate("chaos.monkey")
    }
}

/// Why an experiment (or the monkey) cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// A field is wrong; the key names it.
    #[error("{0}")]
    Invalid(ConfigError),
    /// A service, zone or region that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Clashes with what runs (a region already out, too many running).
    #[error("{0}")]
    Conflict(String),
    /// The platform or a needed part is not there.
    #[error("{0}")]
    Unavailable(String),
}

#[derive(Debug)]
struct Entry {
    record: Shared,
    abort: CancellationToken,
    done: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct MonkeyState {
    config: MonkeyConfig,
    running: Option<CancellationToken>,
    started_at: Option<String>,
    planned: Vec<Planned>,
    history: VecDeque<MonkeyEvent>,
}

/// What `GET /api/chaos/monkey` shows.
#[derive(Debug, Clone, Serialize)]
pub struct MonkeyView {
    pub running: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    pub config: MonkeyConfig,
    /// Today's remaining terminations.
    pub planned: Vec<Planned>,
    /// Recent decisions, newest first.
    pub decisions: Vec<MonkeyEvent>,
}

/// The chaos engine of one control plane. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Chaos {
    env: FaultEnv,
    history: usize,
    max_running: usize,
    shutdown: CancellationToken,
    experiments: Mutex<VecDeque<Entry>>,
    next_id: AtomicU64,
    monkey: Mutex<MonkeyState>,
}

/// Kills through the platform.
#[derive(Debug)]
struct PlatformTerminator(WeakPlatform);

impl Terminator for PlatformTerminator {
    fn live(&self) -> Vec<InstanceInfo> {
        self.0
            .upgrade()
            .map(|p| p.list())
            .unwrap_or_default()
            .into_iter()
            .filter(|v| v.state.is_live())
            .map(|v| v.info)
            .collect()
    }

    fn kill<'a>(&'a self, instance_id: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            match self.0.upgrade() {
                Some(p) if !p.is_shutting_down() => p.kill(instance_id).await,
                _ => false,
            }
        })
    }
}

impl Chaos {
    /// The engine; experiments and the monkey stop (rolling back) when `shutdown`
    /// fires. Call [`Self::start_configured_monkey`] once the platform runs.
    pub fn new(config: &ChaosConfig, env: FaultEnv, shutdown: CancellationToken) -> Self {
        Self {
            env,
            history: config.history.clamp(1, MAX_HISTORY),
            max_running: config.max_running.clamp(1, MAX_RUNNING),
            shutdown,
            experiments: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(1),
            monkey: Mutex::new(MonkeyState {
                config: config.monkey.clone(),
                ..MonkeyState::default()
            }),
        }
    }

    fn known_services(&self) -> Result<Vec<String>, StartError> {
        let platform = self
            .env
            .platform
            .upgrade()
            .ok_or_else(|| StartError::Unavailable("the platform is shutting down".into()))?;
        let mut known = platform.services();
        for service in self.env.registry.all().services.into_keys() {
            if !known.contains(&service) {
                known.push(service);
            }
        }
        known.sort();
        Ok(known)
    }

    fn check_service(&self, service: &str, key: &str, known: &[String]) -> Result<(), StartError> {
        if service == CONTROL_SERVICE {
            return Err(StartError::Invalid(ConfigError::new(
                key,
                "refused: the fault would take out the control plane, which runs the experiment and its rollback",
            )));
        }
        if !known.iter().any(|k| k == service) {
            return Err(StartError::NotFound(format!(
                "unknown service `{service}` (known: {})",
                known.join(", ")
            )));
        }
        Ok(())
    }

    fn check_region(&self, region: &str) -> Result<(), StartError> {
        let topology = self.env.registry.topology();
        if topology.region_index(region).is_none() {
            return Err(StartError::NotFound(format!(
                "unknown region `{region}` (regions: {})",
                topology.region_names().join(", ")
            )));
        }
        Ok(())
    }

    fn check_zone(&self, zone: &str, region: Option<&str>, key: &str) -> Result<(), StartError> {
        let topology = self.env.registry.topology();
        match topology.region_of(zone) {
            None => Err(StartError::NotFound(format!(
                "unknown zone `{zone}` (zones: {})",
                topology
                    .regions
                    .iter()
                    .flat_map(|r| r.zones.iter().cloned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            Some(actual) if region.is_some_and(|r| r != actual) => {
                Err(StartError::Invalid(ConfigError::new(
                    key,
                    format!(
                        "zone `{zone}` is in region `{actual}`, not `{}`",
                        region.unwrap_or("")
                    ),
                )))
            }
            Some(_) => Ok(()),
        }
    }

    /// Validates `spec` against the platform and starts it; the record as it
    /// starts.
    pub fn start(&self, mut spec: ExperimentSpec) -> Result<ExperimentRecord, StartError> {
        spec.validate().map_err(StartError::Invalid)?;
        let known = self.known_services()?;
        match &spec.fault {
            FaultSpec::Monkey(m) => {
                self.check_service(&m.service, "fault.service", &known)?;
                if let Some(region) = &m.region {
                    self.check_region(region)?;
                }
                if let Some(zone) = &m.zone {
                    self.check_zone(zone, m.region.as_deref(), "fault.zone")?;
                }
            }
            FaultSpec::Gorilla(g) => self.check_zone(&g.zone, None, "fault.zone")?,
            FaultSpec::Kong(k) => {
                self.check_region(&k.region)?;
                if self
                    .env
                    .registry
                    .region_overrides()
                    .iter()
                    .any(|o| o.region == k.region)
                {
                    return Err(StartError::Conflict(format!(
                        "region `{}` is already overridden in discovery (another Kong, or an operator)",
                        k.region
                    )));
                }
            }
            FaultSpec::Latency(l) => {
                self.check_service(&l.service, "fault.service", &known)?;
                if self.env.injector.is_none() {
                    return Err(StartError::Unavailable(
                        "latency experiments need the fault proxy, and none is wired into this control plane".into(),
                    ));
                }
            }
        }
        for (i, probe) in spec.probes.iter().enumerate() {
            if let Some(service) = probe
                .service
                .as_ref()
                .filter(|s| *s != super::probe::EVERY_SERVICE)
                && !known.contains(service)
            {
                return Err(StartError::NotFound(format!(
                    "probes[{i}].service: unknown service `{service}` (known: {})",
                    known.join(", ")
                )));
            }
            if let Some(region) = &probe.region {
                self.check_region(region)?;
            }
        }

        let mut experiments = self.experiments.lock();
        let running = experiments
            .iter()
            .filter(|e| !e.done.load(Ordering::SeqCst))
            .count();
        if running >= self.max_running {
            return Err(StartError::Conflict(format!(
                "{running} experiments running already (chaos.max_running); abort one or wait"
            )));
        }
        // One Kong per region at a time, even before its mark is set.
        if let FaultSpec::Kong(k) = &spec.fault && experiments.iter().any(|e| {
            !e.done.load(Ordering::SeqCst)
                && matches!(&e.record.lock().spec.fault, FaultSpec::Kong(o) if o.region == k.region)
        }) {
            return Err(StartError::Conflict(format!(
                "a Kong of `{}` is running already",
                k.region
            )));
        }
        let n = self.next_id.fetch_add(1, Ordering::SeqCst);
        let id = format!("exp-{n:06}");
        let seed = spec
            .seed
            .unwrap_or_else(|| self.env.clock.wall_millis() ^ n.rotate_left(32));
        let fault = spec.fault.build(seed);
        let record = Arc::new(Mutex::new(ExperimentRecord::new(
            id.clone(),
            spec,
            self.env.clock.wall_millis(),
        )));
        let view = record.lock().clone();
        let entry = Entry {
            record: record.clone(),
            abort: CancellationToken::new(),
            done: Arc::new(AtomicBool::new(false)),
        };
        let (abort, done) = (entry.abort.clone(), entry.done.clone());
        experiments.push_back(entry);
        // Keep at most `history` finished ones (running ones are never dropped).
        while experiments
            .iter()
            .filter(|e| e.done.load(Ordering::SeqCst))
            .count()
            > self.history
        {
            if let Some(at) = experiments
                .iter()
                .position(|e| e.done.load(Ordering::SeqCst))
            {
                experiments.remove(at);
            }
        }
        drop(experiments);
        tracing::warn!(experiment = %id, kind = %view.kind, target = %view.target, "chaos experiment started");
        let env = self.env.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            experiment::run(record, fault, env, abort, shutdown).await;
            done.store(true, Ordering::SeqCst);
        });
        Ok(view)
    }

    /// Every experiment kept, newest first.
    pub fn list(&self) -> Vec<ExperimentRecord> {
        self.experiments
            .lock()
            .iter()
            .rev()
            .map(|e| e.record.lock().clone())
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<ExperimentRecord> {
        self.experiments
            .lock()
            .iter()
            .find(|e| e.record.lock().id == id)
            .map(|e| e.record.lock().clone())
    }

    /// Asks a running experiment to stop and roll back; `None` for an unknown id,
    /// `Some(false)` when it had already finished.
    pub fn abort(&self, id: &str) -> Option<bool> {
        let experiments = self.experiments.lock();
        let entry = experiments.iter().find(|e| e.record.lock().id == id)?;
        let running = entry.record.lock().status == Status::Running;
        if running {
            entry.abort.cancel();
        }
        Some(running)
    }

    /// Starts the monkey daemon if `[chaos.monkey] enabled`.
    pub fn start_configured_monkey(self: &Arc<Self>) {
        let config = self.monkey.lock().config.clone();
        if config.enabled
            && let Err(e) = self.start_monkey(None)
        {
            tracing::warn!(error = %e, "chaos monkey not started");
        }
    }

    /// Starts (or restarts with `config`) the monkey daemon.
    pub fn start_monkey(
        self: &Arc<Self>,
        config: Option<MonkeyConfig>,
    ) -> Result<MonkeyView, StartError> {
        let mut state = self.monkey.lock();
        // Checked in full before it replaces anything: a refusal leaves the
        // daemon, and the configuration it shows, as they were.
        let config = match config {
            Some(config) => {
                config.validate("").map_err(StartError::Invalid)?;
                config
            }
            None => state.config.clone(),
        };
        let known = self.known_services()?;
        for (i, rule) in config.groups.iter().enumerate() {
            if !rule.service.contains('*') && !known.contains(&rule.service) {
                return Err(StartError::NotFound(format!(
                    "groups[{i}].service: unknown service `{}` (known: {})",
                    rule.service,
                    known.join(", ")
                )));
            }
        }
        if let Some(old) = state.running.take() {
            old.cancel();
        }
        let token = self.shutdown.child_token();
        state.running = Some(token.clone());
        state.started_at = Some(monkey::rfc3339_ms(self.env.clock.wall_millis()));
        state.planned.clear();
        state.config = config.clone();
        drop(state);
        tracing::warn!(
            leashed = config.leashed,
            groups = config.groups.len(),
            "chaos monkey started"
        );
        let this = self.clone();
        tokio::spawn(async move { this.monkey_loop(config, token).await });
        Ok(self.monkey_view())
    }

    /// Stops the monkey daemon; whether it was running.
    pub fn stop_monkey(&self) -> bool {
        let mut state = self.monkey.lock();
        state.planned.clear();
        match state.running.take() {
            Some(token) => {
                token.cancel();
                tracing::warn!("chaos monkey stopped");
                true
            }
            None => false,
        }
    }

    async fn monkey_loop(self: Arc<Self>, config: MonkeyConfig, token: CancellationToken) {
        let seed = config.seed.unwrap_or_else(|| self.env.clock.wall_millis());
        let mut scheduler = MonkeyScheduler::new(config.clone(), seed);
        let mut rng = Rng::new(seed.rotate_left(17) ^ 0x5EED);
        let terminator = PlatformTerminator(self.env.platform.clone());
        let mut ticks = tokio::time::interval(config.tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let mut events = VecDeque::new();
            monkey::run_once(
                &mut scheduler,
                &terminator,
                self.env.clock.wall(),
                &mut rng,
                &mut events,
            )
            .await;
            let mut state = self.monkey.lock();
            state.planned = scheduler.planned().to_vec();
            for event in events {
                if state.history.len() >= monkey::MONKEY_HISTORY {
                    state.history.pop_front();
                }
                state.history.push_back(event);
            }
        }
    }

    pub fn monkey_view(&self) -> MonkeyView {
        let state = self.monkey.lock();
        MonkeyView {
            running: state.running.as_ref().is_some_and(|t| !t.is_cancelled()),
            started_at: state.started_at.clone(),
            config: state.config.clone(),
            planned: state.planned.clone(),
            decisions: state.history.iter().rev().cloned().collect(),
        }
    }
}
