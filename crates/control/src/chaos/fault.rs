//! Faults: what an experiment does to the platform, and how it is undone.
//!
//! | kind | inject | during | rollback |
//! |---|---|---|---|
//! | `monkey` | kills `count` random live instances of `service` (narrowed by `region`/`zone`) | kills again every `interval`, if set | with `restore`, restarts (same placement and address) each killed instance whose service is below its count before the fault; otherwise nothing: replacing is the autoscaler's job |
//! | `gorilla` | kills every live instance of `zone` (the control plane spared) | watches recovery: per service, when the live count is back, where the replacements went, when the killed instances left discovery | with `restore` (default), restarts what did not come back |
//! | `kong` | discovery marks every instance of `region` `OUT_OF_SERVICE` (region override; the control plane exempt) | watches evacuation: the region's request rate in the metrics store until it falls to ~0 | drops the region override |
//! | `latency` | a [`LatencySpec`] injected in front of `service`'s live instances through the [`LatencyInjector`] | — | removes the injection |
//!
//! Every fault's rollback undoes a partial injection too, and may be called once
//! whatever happened before.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use casebook_kit::clock::SharedClock;
use casebook_kit::runtime::{BoxFuture, InstanceSpec, InstanceView, Platform, WeakPlatform};
use casebook_kit::sampling::Rng;
use casebook_kit::topology::{InstanceInfo, InstanceStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::latency::{LatencyHandle, LatencyInjector, LatencySpec};
use super::probe::Measure;
use crate::CONTROL_SERVICE;
use crate::discovery::Registry;

/// What faults act through.
#[derive(Debug, Clone)]
pub struct FaultEnv {
    pub platform: WeakPlatform,
    pub registry: Arc<Registry>,
    pub measure: Arc<dyn Measure>,
    pub clock: SharedClock,
    /// The fault proxy's seam; `None` until one is wired (latency faults refused).
    pub injector: Option<Arc<dyn LatencyInjector>>,
}

impl FaultEnv {
    fn platform(&self) -> Result<Platform, FaultError> {
        self.platform
            .upgrade()
            .ok_or_else(|| FaultError("the platform is shutting down".into()))
    }

    /// Ids of every instance ever placed in `region` (any state), for narrowing
    /// metric queries; not the control plane's, whose own calls (pushes, renewals)
    /// are no service traffic and never leave the region.
    pub fn instances_in_region(&self, region: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .platform
            .upgrade()
            .map(|p| p.list())
            .unwrap_or_default()
            .into_iter()
            .filter(|v| v.info.region == region && v.info.service != CONTROL_SERVICE)
            .map(|v| v.info.instance_id)
            .collect();
        for views in self.registry.all().services.into_values() {
            ids.extend(
                views
                    .into_iter()
                    .filter(|v| {
                        v.instance.region == region && v.instance.service != CONTROL_SERVICE
                    })
                    .map(|v| v.instance.instance_id),
            );
        }
        ids.sort();
        ids.dedup();
        ids
    }
}

/// Why a fault could not be injected or rolled back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FaultError(pub String);

/// One kind of fault. Faults are driven by one experiment task: inject once,
/// `during` every probe interval, rollback once (always, even after a failed
/// inject).
pub trait Fault: Send + Sync + fmt::Debug {
    /// Injects; the text goes to the timeline.
    fn inject<'a>(&'a mut self, env: &'a FaultEnv) -> BoxFuture<'a, Result<String, FaultError>>;
    /// Called every probe interval while the fault holds; timeline lines.
    fn during<'a>(&'a mut self, env: &'a FaultEnv) -> BoxFuture<'a, Vec<String>>;
    /// Undoes the fault; the text goes to the timeline.
    fn rollback<'a>(&'a mut self, env: &'a FaultEnv) -> BoxFuture<'a, Result<String, FaultError>>;
    /// The fault's own measurements (killed instances, recovery, evacuation).
    fn report(&self) -> Value;
}

/// A fault as the API and CLI name it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultSpec {
    Monkey(MonkeyFault),
    Gorilla(GorillaFault),
    Kong(KongFault),
    Latency(LatencySpec),
}

impl FaultSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Monkey(_) => "monkey",
            Self::Gorilla(_) => "gorilla",
            Self::Kong(_) => "kong",
            Self::Latency(_) => "latency",
        }
    }

    /// What it targets, e.g. `uber`, `zone us-east-b`.
    pub fn target(&self) -> String {
        match self {
            Self::Monkey(m) => {
                let mut t = m.service.clone();
                for part in [&m.region, &m.zone].into_iter().flatten() {
                    t.push_str(&format!("/{part}"));
                }
                t
            }
            Self::Gorilla(g) => format!("zone {}", g.zone),
            Self::Kong(k) => format!("region {}", k.region),
            Self::Latency(l) => l.service.clone(),
        }
    }

    /// The fault, ready to run.
    pub fn build(&self, seed: u64) -> Box<dyn Fault> {
        match self {
            Self::Monkey(m) => Box::new(MonkeyRun::new(m.clone(), seed)),
            Self::Gorilla(g) => Box::new(GorillaRun::new(g.clone())),
            Self::Kong(k) => Box::new(KongRun::new(k.clone())),
            Self::Latency(l) => Box::new(LatencyRun {
                spec: l.clone(),
                handle: None,
                removed: false,
            }),
        }
    }
}

/// Chaos Monkey as an experiment: random terminations of one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonkeyFault {
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Instances killed at each strike (default 1).
    #[serde(default = "one")]
    pub count: u32,
    /// Strike again this often while the experiment runs.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval: Option<Duration>,
    /// Restart what was not replaced at rollback.
    #[serde(default)]
    pub restore: bool,
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

/// Chaos Gorilla: a zone's instances, all at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GorillaFault {
    pub zone: String,
    /// Restart at rollback what did not come back (default true).
    #[serde(default = "yes")]
    pub restore: bool,
}

/// Chaos Kong: a region out of discovery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KongFault {
    pub region: String,
    /// The region counts as evacuated once its request rate is at or below this
    /// fraction of the rate before the mark (default 0.01), or 0.5 requests/s.
    #[serde(default = "evacuated_fraction")]
    pub evacuated_below: f64,
}

fn evacuated_fraction() -> f64 {
    0.01
}

/// Kills and remembers what it killed.
#[derive(Debug, Default)]
struct Killer {
    killed: Vec<InstanceInfo>,
    /// Live instances per service before the first kill.
    before: BTreeMap<String, usize>,
    restarted: Vec<String>,
}

fn live(platform: &Platform) -> Vec<InstanceView> {
    platform
        .list()
        .into_iter()
        .filter(|v| v.state.is_live())
        .collect()
}

fn live_counts(platform: &Platform) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for v in live(platform) {
        *counts.entry(v.info.service).or_default() += 1;
    }
    counts
}

impl Killer {
    async fn kill(&mut self, platform: &Platform, victims: Vec<InstanceInfo>) -> Vec<String> {
        let counts = live_counts(platform);
        for v in &victims {
            self.before
                .entry(v.service.clone())
                .or_insert_with(|| counts.get(&v.service).copied().unwrap_or(0));
        }
        let mut done = Vec::new();
        for victim in victims {
            debug_assert_ne!(victim.service, CONTROL_SERVICE);
            if platform.kill(&victim.instance_id).await {
                metrics::counter!("chaos_terminations_total", "service" => victim.service.clone())
                    .increment(1);
                tracing::warn!(instance = %victim.instance_id, "chaos: instance killed");
                done.push(victim.instance_id.clone());
                self.killed.push(victim);
            }
        }
        done
    }

    /// Restarts, at their placement and address, killed instances of services
    /// still below their count before the fault.
    async fn restore(&mut self, platform: &Platform) -> Result<Vec<String>, FaultError> {
        if platform.is_shutting_down() {
            return Ok(Vec::new());
        }
        let mut counts = live_counts(platform);
        let mut errors = Vec::new();
        let mut started = Vec::new();
        for victim in self.killed.clone() {
            let want = self.before.get(&victim.service).copied().unwrap_or(0);
            let have = counts.get(&victim.service).copied().unwrap_or(0);
            if have >= want {
                continue;
            }
            let spec = InstanceSpec {
                service: victim.service.clone(),
                instance_id: None,
                placement: casebook_kit::topology::Placement {
                    region: victim.region.clone(),
                    zone: victim.zone.clone(),
                },
                listen: victim.address,
                version: victim.version.clone(),
                port_hint: None,
            };
            match platform.start(spec.clone()).await {
                Ok(info) => {
                    started.push(info.instance_id);
                    *counts.entry(victim.service.clone()).or_default() += 1;
                }
                Err(first) => {
                    // The address may be taken (another took the port): any port then.
                    let spec = InstanceSpec {
                        listen: SocketAddr::new(victim.address.ip(), 0),
                        ..spec
                    };
                    match platform.start(spec).await {
                        Ok(info) => {
                            started.push(info.instance_id);
                            *counts.entry(victim.service.clone()).or_default() += 1;
                        }
                        Err(e) => errors.push(format!("{}: {first}; then {e}", victim.instance_id)),
                    }
                }
            }
        }
        self.restarted.extend(started.iter().cloned());
        if errors.is_empty() {
            Ok(started)
        } else {
            Err(FaultError(format!(
                "could not restart {}",
                errors.join(", ")
            )))
        }
    }
}

/// The running Monkey fault.
#[derive(Debug)]
pub struct MonkeyRun {
    spec: MonkeyFault,
    rng: Rng,
    killer: Killer,
    last_strike: Option<std::time::Instant>,
    strikes: u32,
    misses: Vec<String>,
}

impl MonkeyRun {
    fn new(spec: MonkeyFault, seed: u64) -> Self {
        Self {
            spec,
            rng: Rng::new(seed),
            killer: Killer::default(),
            last_strike: None,
            strikes: 0,
            misses: Vec::new(),
        }
    }

    async fn strike(&mut self, env: &FaultEnv) -> Result<String, FaultError> {
        let platform = env.platform()?;
        let mut candidates: Vec<InstanceInfo> = live(&platform)
            .into_iter()
            .map(|v| v.info)
            .filter(|i| {
                i.service == self.spec.service
                    && i.service != CONTROL_SERVICE
                    && self.spec.region.as_ref().is_none_or(|r| &i.region == r)
                    && self.spec.zone.as_ref().is_none_or(|z| &i.zone == z)
            })
            .collect();
        self.last_strike = Some(env.clock.now());
        self.strikes += 1;
        if candidates.is_empty() {
            let miss = format!(
                "strike {}: no live instance of {}",
                self.strikes, self.spec.service
            );
            self.misses.push(miss.clone());
            return Ok(miss);
        }
        let mut victims = Vec::new();
        for _ in 0..self.spec.count.min(candidates.len() as u32) {
            let i = self.rng.below(candidates.len() as u64) as usize;
            victims.push(candidates.swap_remove(i));
        }
        let killed = self.killer.kill(&platform, victims).await;
        Ok(format!(
            "strike {}: killed {}",
            self.strikes,
            killed.join(", ")
        ))
    }
}

impl Fault for MonkeyRun {
    fn inject<'a>(&'a mut self, env: &'a FaultEnv) -> BoxFuture<'a, Result<String, FaultError>> {
        Box::pin(self.strike(env))
    }

    fn during<'a>(&'a mut self, env: &'a FaultEnv) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move {
            let (Some(interval), Some(last)) = (self.spec.interval, self.last_strike) else {
                return Vec::new();
            };
            if env.clock.now().saturating_duration_since(last) < interval {
                return Vec::new();
            }
            match self.strike(env).await {
                Ok(line) => vec![line],
                Err(e) => vec![format!("strike failed: {e}")],
            }
        })
    }

    fn rollback<'a>(&'a mut self, env: &'a FaultEnv) -> BoxFuture<'a, Result<String, FaultError>> {
        Box::pin(async move {
            if !self.spec.restore {
                return Ok(
                    "terminations stand (restore = false): replacing is the autoscaler's".into(),
                );
            }
            let started = self.killer.restore(&env.platform()?).await?;
            Ok(format!(
                "restarted {} instance(s): {}",
                started.len(),
                started.join(", ")
            ))
        })
    }

    fn report(&self) -> Value {
        json!({
            "strikes": self.strikes,
            "killed": self.killer.killed.iter().map(|i| &i.instance_id).collect::<Vec<_>>(),
            "restarted": self.killer.restarted,
            "misses": self.misses,
        })
    }
}

/// Recovery of one service after a zone's loss.
#[derive(Debug, Clone, Default, Serialize)]
struct Recovery {
    before: usize,
    killed: usize,
    /// Milliseconds from the kill until the live count was back (by anything but
    /// this experiment's rollback: the autoscaler's floor).
    #[serde(skip_serializing_if = "Option::is_none")]
    recovered_after_ms: Option<u64>,
    /// Instances started after the kill, with their zone.
    replacements: Vec<(String, String)>,
    /// `autoscaler` (came back while the fault held), `rollback`, or `none`.
    by: String,
}

/// The running Gorilla fault.
#[derive(Debug)]
pub struct GorillaRun {
    spec: GorillaFault,
    killer: Killer,
    killed_at: Option<std::time::Instant>,
    killed_seq: u64,
    recovery: BTreeMap<String, Recovery>,
    gone_from_discovery_ms: Option<u64>,
}

impl GorillaRun {
    fn new(spec: GorillaFault) -> Self {
        Self {
            spec,
            killer: Killer::default(),
            killed_at: None,
            killed_seq: 0,
            recovery: BTreeMap::new(),
            gone_from_discovery_ms: None,
        }
    }

    fn observe(&mut self, env: &FaultEnv) {
        let (Some(platform), Some(at)) = (env.platform.upgrade(), self.killed_at) else {
            return;
        };
        let elapsed = env.clock.now().saturating_duration_since(at).as_millis() as u64;
        let views = live(&platform);
        for (service, rec) in &mut self.recovery {
            rec.replacements = views
                .iter()
                .filter(|v| &v.info.service == service && v.start_seq > self.killed_seq)
                .map(|v| (v.info.instance_id.clone(), v.info.zone.clone()))
                .collect();
            let count = views.iter().filter(|v| &v.info.service == service).count();
            if rec.recovered_after_ms.is_none() && count >= rec.before {
                rec.recovered_after_ms = Some(elapsed);
                rec.by = "autoscaler".into();
            }
        }
        if self.gone_from_discovery_ms.is_none() {
            let registered = self
                .killer
                .killed
                .iter()
                .any(|k| env.registry.get(&k.service, &k.instance_id).is_some());
            if !registered {
                self.gone_from_discovery_ms = Some(elapsed);
            }
        }
    }
}

impl Fault for GorillaRun {
    fn inject<'a>(&'a mut self, env: &'a FaultEnv) -> BoxFuture<'a, Result<String, FaultError>> {
        Box::pin(async move {
            let platform = env.platform()?;
            let views = live(&platform);
            self.killed_seq = platform
                .list()
                .iter()
                .map(|v| v.start_seq)
                .max()
                .unwrap_or(0);
            let victims: Vec<InstanceInfo> = views
                .into_iter()
                .map(|v| v.info)
                .filter(|i| i.zone == self.spec.zone && i.service != CONTROL_SERVICE)
                .collect();
            self.killed_at = Some(env.clock.now());
            let killed = self.killer.kill(&platform, victims).await;
            for victim in &self.killer.killed {
                let rec = self.recovery.entry(victim.service.clone()).or_default();
                rec.killed += 1;
                rec.by = "none".into();
            }
            for (service, rec) in &mut self.recovery {
                rec.before = self.killer.before.get(service).copied().unwrap_or(0);
            }
            Ok(format!(
                "zone {}: killed {} instance(s): {}",
                self.spec.zone,
                killed.len(),
                killed.join(", ")
            ))
        })
    }

    fn during<'a>(&'a mut self, env: &'a FaultEnv) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move {
            let before: Vec<bool> = self
                .recovery
                .values()
                .map(|r| r.recovered_after_ms.is_some())
                .collect();
            let gone = self.gone_from_discovery_ms.is_some();
            self.observe(env);
            let mut lines = Vec::new();
            for ((service, rec), was) in self.recovery.iter().zip(before) {
                if !was && let Some(ms) = rec.recovered_after_ms {
                    lines.push(format!(
                        "{service} back to {} live instance(s) after {ms} ms",
                        rec.before
                    ));
                }
            }
            if !gone && let Some(ms) = self.gone_from_discovery_ms {
                lines.push(format!("the killed instances left discovery after {ms} ms"));
            }
            lines
        })
    }

    fn rollback<'a>(&'a mut self, env: &'a FaultEnv) -> BoxFuture<'a, Result<String, FaultError>> {
        Box::pin(async move {
            self.observe(env);
            if !self.spec.restore {
                return Ok("terminations stand (restore = false)".into());
            }
            let started = self.killer.restore(&env.platform()?).await?;
            for id in &started {
                if let Some(view) = env
                    .platform()?
                    .list()
                    .into_iter()
                    .find(|v| &v.info.instance_id == id)
                    && let Some(rec) = self.recovery.get_mut(&view.info.service)
                    && rec.recovered_after_ms.is_none()
                {
                    rec.by = "rollback".into();
                }
            }
            Ok(format!(
                "restarted {} instance(s): {}",
                started.len(),
                started.join(", ")
            ))
        })
    }

    fn report(&self) -> Value {
        json!({
            "zone": self.spec.zone,
            "killed": self.killer.killed.iter().map(|i| &i.instance_id).collect::<Vec<_>>(),
            "recovery": self.recovery,
            "gone_from_discovery_ms": self.gone_from_discovery_ms,
            "restarted": self.killer.restarted,
        })
    }
}

/// The running Kong fault.
#[derive(Debug)]
pub struct KongRun {
    spec: KongFault,
    marked_ms: Option<u64>,
    instances: Vec<String>,
    baseline_rps: Option<f64>,
    evacuated_after_ms: Option<u64>,
    last_rps: Option<f64>,
    /// The same for connections held open (chat sessions, GEO-port clients).
    baseline_connections: Option<f64>,
    connections_drained_after_ms: Option<u64>,
    last_connections: Option<f64>,
    up_in_region_after_mark: Option<usize>,
    marked: bool,
}

impl KongRun {
    fn new(spec: KongFault) -> Self {
        Self {
            spec,
            marked_ms: None,
            instances: Vec::new(),
            baseline_rps: None,
            evacuated_after_ms: None,
            last_rps: None,
            baseline_connections: None,
            connections_drained_after_ms: None,
            last_connections: None,
            up_in_region_after_mark: None,
            marked: false,
        }
    }

    fn threshold(&self) -> f64 {
        (self.baseline_rps.unwrap_or(0.0) * self.spec.evacuated_below).max(0.5)
    }

    fn connections_threshold(&self) -> f64 {
        (self.baseline_connections.unwrap_or(0.0) * self.spec.evacuated_below).max(0.5)
    }

    /// Both measures of the region draining: its request rate and, for services
    /// that hold connections, its open connections.
    fn evacuation(&mut self, env: &FaultEnv) {
        let Some(marked_ms) = self.marked_ms else {
            return;
        };
        let mark_sec = marked_ms / 1000;
        self.instances = env.instances_in_region(&self.spec.region);
        let series = env.measure.requests_per_second(&self.instances, mark_sec);
        self.last_rps = series.last().map(|(_, v)| *v);
        if self.evacuated_after_ms.is_none() {
            self.evacuated_after_ms = quiet_from(&series, self.threshold(), marked_ms);
        }
        // Only a region that held connections before can drain them.
        if self.baseline_connections.is_some_and(|c| c > 0.0) {
            let series = env
                .measure
                .connections_per_second(&self.instances, mark_sec);
            self.last_connections = series.last().map(|(_, v)| *v);
            if self.connections_drained_after_ms.is_none() {
                self.connections_drained_after_ms =
                    quiet_from(&series, self.connections_threshold(), marked_ms);
            }
        }
    }

    fn up_in_region(&self, env: &FaultEnv) -> usize {
        env.registry
            .all()
            .services
            .into_values()
            .flatten()
            .filter(|v| {
                v.instance.region == self.spec.region
                    && v.instance.service != CONTROL_SERVICE
                    && v.status == InstanceStatus::Up
            })
            .count()
    }
}

/// Milliseconds from the mark to the start of the first second from which every
/// known second of `series` is at or below `threshold`, once at least two known
/// seconds follow it (1 s resolution; 0 when the mark's own second was quiet).
fn quiet_from(series: &[(u64, f64)], threshold: f64, marked_ms: u64) -> Option<u64> {
    let mut candidate: Option<u64> = None;
    for (second, value) in series {
        if *value <= threshold {
            candidate.get_or_insert(*second);
        } else {
            candidate = None;
        }
    }
    let second = candidate?;
    let known_after = series.iter().filter(|(s, _)| *s > second).count();
    (known_after >= 2).then(|| (second * 1000).saturating_sub(marked_ms))
}

/// The mean of a per-second series, if it has any second.
fn mean(series: &[(u64, f64)]) -> Option<f64> {
    (!series.is_empty()).then(|| series.iter().map(|(_, v)| v).sum::<f64>() / series.len() as f64)
}

impl Fault for KongRun {
    fn inject<'a>(&'a mut self, env: &'a FaultEnv) -> BoxFuture<'a, Result<String, FaultError>> {
        Box::pin(async move {
            let now_sec = env.clock.wall_millis() / 1000;
            self.instances = env.instances_in_region(&self.spec.region);
            let from = now_sec.saturating_sub(12);
            self.baseline_rps = mean(&env.measure.requests_per_second(&self.instances, from));
            self.baseline_connections =
                mean(&env.measure.connections_per_second(&self.instances, from));
            env.registry
                .override_region(
                    &self.spec.region,
                    Some(InstanceStatus::OutOfService),
                    vec![CONTROL_SERVICE.to_owned()],
                )
                .map_err(|e| FaultError(e.to_string()))?;
            self.marked = true;
            self.marked_ms = Some(env.clock.wall_millis());
            metrics::counter!("chaos_region_evacuations_total", "region" => self.spec.region.clone())
                .increment(1);
            self.up_in_region_after_mark = Some(self.up_in_region(env));
            tracing::warn!(region = %self.spec.region, "chaos kong: region marked OUT_OF_SERVICE");
            Ok(format!(
                "region {} marked OUT_OF_SERVICE in discovery ({} instance(s) UP there now; {:.1} req/s before)",
                self.spec.region,
                self.up_in_region_after_mark.unwrap_or(0),
                self.baseline_rps.unwrap_or(0.0)
            ))
        })
    }

    fn during<'a>(&'a mut self, env: &'a FaultEnv) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move {
            let was = (self.evacuated_after_ms, self.connections_drained_after_ms);
            self.evacuation(env);
            let mut lines = Vec::new();
            if let (None, Some(ms)) = (was.0, self.evacuated_after_ms) {
                lines.push(format!(
                    "region {} evacuated after {ms} ms (≤ {:.1} req/s)",
                    self.spec.region,
                    self.threshold()
                ));
            }
            if let (None, Some(ms)) = (was.1, self.connections_drained_after_ms) {
                lines.push(format!(
                    "region {}'s connections drained after {ms} ms (≤ {:.1} open)",
                    self.spec.region,
                    self.connections_threshold()
                ));
            }
            lines
        })
    }

    fn rollback<'a>(&'a mut self, env: &'a FaultEnv) -> BoxFuture<'a, Result<String, FaultError>> {
        Box::pin(async move {
            self.evacuation(env);
            if !self.marked {
                return Ok("nothing to undo: the region was never marked".into());
            }
            env.registry
                .override_region(&self.spec.region, None, Vec::new())
                .map_err(|e| FaultError(e.to_string()))?;
            self.marked = false;
            tracing::warn!(region = %self.spec.region, "chaos kong: region back in service");
            Ok(format!("region {} back in service", self.spec.region))
        })
    }

    fn report(&self) -> Value {
        json!({
            "region": self.spec.region,
            "marked_at_ms": self.marked_ms,
            "baseline_rps": self.baseline_rps,
            "threshold_rps": self.threshold(),
            "evacuated_after_ms": self.evacuated_after_ms,
            "last_rps": self.last_rps,
            "baseline_connections": self.baseline_connections,
            "threshold_connections": self.connections_threshold(),
            "connections_drained_after_ms": self.connections_drained_after_ms,
            "last_connections": self.last_connections,
            "up_in_region_after_mark": self.up_in_region_after_mark,
        })
    }
}

/// The running Latency fault.
#[derive(Debug)]
pub struct LatencyRun {
    spec: LatencySpec,
    handle: Option<LatencyHandle>,
    removed: bool,
}

impl Fault for LatencyRun {
    fn inject<'a>(&'a mut self, env: &'a FaultEnv) -> BoxFuture<'a, Result<String, FaultError>> {
        Box::pin(async move {
            let injector = env.injector.clone().ok_or_else(|| {
                FaultError("no fault proxy is wired into this control plane".into())
            })?;
            let platform = env.platform()?;
            let instances: Vec<InstanceInfo> = live(&platform)
                .into_iter()
                .map(|v| v.info)
                .filter(|i| i.service == self.spec.service)
                .collect();
            if instances.is_empty() {
                return Err(FaultError(format!(
                    "no live instance of {}",
                    self.spec.service
                )));
            }
            let handle = injector
                .inject(&self.spec, &instances)
                .await
                .map_err(|e| FaultError(e.to_string()))?;
            let line = format!(
                "latency {} ms ± {} ms, error rate {} injected in front of {}",
                self.spec.latency_ms,
                self.spec.jitter_ms,
                self.spec.error_rate,
                handle.instances.join(", ")
            );
            self.handle = Some(handle);
            Ok(line)
        })
    }

    fn during<'a>(&'a mut self, _env: &'a FaultEnv) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async { Vec::new() })
    }

    fn rollback<'a>(&'a mut self, env: &'a FaultEnv) -> BoxFuture<'a, Result<String, FaultError>> {
        Box::pin(async move {
            let (Some(handle), Some(injector)) = (self.handle.clone(), env.injector.clone()) else {
                return Ok("nothing to undo: nothing was injected".into());
            };
            injector
                .remove(&handle)
                .await
                .map_err(|e| FaultError(e.to_string()))?;
            self.removed = true;
            Ok(format!("latency injection {} removed", handle.id))
        })
    }

    fn report(&self) -> Value {
        json!({ "spec": self.spec, "handle": self.handle, "removed": self.removed })
    }
}

#[cfg(test)]
mod drain_tests {
    use super::{mean, quiet_from};

    #[test]
    fn a_region_is_quiet_from_the_first_second_that_stays_quiet() {
        let mark_ms = 100_500;
        // 40 open at the mark, batches leave, a brief rise, then quiet for good.
        let series = [
            (100, 40.0),
            (101, 20.0),
            (102, 0.0),
            (103, 3.0),
            (104, 0.0),
            (105, 0.0),
            (106, 0.0),
        ];
        assert_eq!(quiet_from(&series, 0.5, mark_ms), Some(3_500));
        // Quiet, but not yet with two known seconds after it: not decided.
        assert_eq!(quiet_from(&series[..5], 0.5, mark_ms), None);
        // Never quiet.
        assert_eq!(
            quiet_from(&[(100, 9.0), (101, 9.0), (102, 9.0)], 0.5, mark_ms),
            None
        );
        // Quiet from the mark's own second: 0.
        assert_eq!(
            quiet_from(&[(100, 0.0), (101, 0.0), (102, 0.0)], 0.5, mark_ms),
            Some(0)
        );
        assert_eq!(mean(&[]), None);
        assert_eq!(mean(&[(1, 2.0), (2, 4.0)]), Some(3.0));
    }
}
