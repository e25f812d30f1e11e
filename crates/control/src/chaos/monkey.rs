//! Chaos Monkey in Netflix's model: opted-in groups, a schedule of terminations
//! computed once per work day, business hours, a minimum time between kills, a
//! leash, exceptions.
//!
//! ```toml
//! [chaos.monkey]
//! enabled = false                 # the daemon runs at all (also started/stopped at run time)
//! leashed = true                  # dry run: decisions logged and recorded, nothing killed
//! grouping = "cluster"            # "app" (a service), "cluster" (service × region), "stack" (service × zone)
//! mean_time_between_kills_in_work_days = 5.0   # a group's chance of a kill on a work day is 1/mean
//! min_time_between_kills_in_work_days = 1      # work days between two kills of one group
//! start_hour = 9                  # local business hours [start, end)
//! end_hour = 15
//! utc_offset = "+00:00"           # the local time zone, as a fixed offset
//! seed = 7                        # optional: a reproducible schedule
//! tick = "10s"                    # how often the schedule is looked at (100ms to 1h)
//! groups = [{ service = "uber" }, { service = "amazon-cart", region = "us-east" }]
//! exceptions = [{ service = "uber", zone = "ap-south-*" }]
//! ```
//!
//! **The schedule** ([`plan_day`]), as Netflix's `schedule.Populate`: on each work
//! day (Monday–Friday in the local offset), for every group in a stable order, a
//! draw of the day's seeded RNG decides a kill with probability
//! `1 / mean_time_between_kills_in_work_days`; a kill gets a time drawn uniformly
//! within `[start_hour, end_hour)` local. The plan is made at the first tick of the
//! day from the groups alive then. **At its time** ([`MonkeyScheduler::due`]) an
//! entry is dropped when the window has passed (a tick came too late), when its
//! time came before the day's plan was made (a daemon started at 13:00 does not
//! make up for the morning), when the
//! group's last kill was fewer than `min_time_between_kills_in_work_days` work days
//! before, when an exception matches the group, or when the group has no eligible
//! instance; otherwise one instance of the group is picked at random (the control
//! plane never) and terminated through the platform — or, leashed, only recorded.
//!
//! **Guaranteed.** The same seed, groups and days give the same plan; nothing is
//! killed outside business hours, on a weekend, in an excepted group, or while
//! leashed; every decision (kill, leashed, skip with its reason) is logged, counted
//! (`chaos_monkey_decisions_total{outcome}`) and kept in a bounded history.
//! **Not guaranteed.** Holidays (only weekends are skipped); a time zone's daylight
//! saving (the offset is fixed); kills missed while the control plane was down.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use casebook_kit::config::ConfigError;
use casebook_kit::sampling::Rng;
use casebook_kit::topology::InstanceInfo;
use serde::{Deserialize, Serialize};

/// The most opted-in groups or exceptions.
pub const MAX_RULES: usize = 256;
/// The most decisions the monkey's history keeps.
pub const MONKEY_HISTORY: usize = 512;
/// The most planned entries one day holds (bounded by the groups).
pub const MAX_PLANNED: usize = 4096;

/// How instances are grouped (Netflix's `app`, `stack`, `cluster`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grouping {
    /// Every instance of a service is one group.
    App,
    /// A service's instances per region.
    #[default]
    Cluster,
    /// A service's instances per zone.
    Stack,
}

/// A group's opt-in or an exception: `*` anywhere in a field matches any run of
/// characters; an absent field matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

impl Rule {
    /// Whether the rule matches an instance placed at `service`/`region`/`zone`.
    pub fn matches(&self, service: &str, region: &str, zone: &str) -> bool {
        wildcard(&self.service, service)
            && self.region.as_deref().is_none_or(|r| wildcard(r, region))
            && self.zone.as_deref().is_none_or(|z| wildcard(z, zone))
    }

    /// Whether the rule matches every instance a group can hold.
    fn matches_group(&self, group: &GroupKey) -> bool {
        wildcard(&self.service, &group.service)
            && match (&self.region, &group.region) {
                (None, _) => true,
                (Some(r), Some(g)) => wildcard(r, g),
                (Some(_), None) => false,
            }
            && match (&self.zone, &group.zone) {
                (None, _) => true,
                (Some(z), Some(g)) => wildcard(z, g),
                (Some(_), None) => false,
            }
    }
}

/// `pattern` with `*` as any run of characters, matched against the whole `text`.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// The `[chaos.monkey]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonkeyConfig {
    pub enabled: bool,
    pub leashed: bool,
    pub grouping: Grouping,
    pub mean_time_between_kills_in_work_days: f64,
    pub min_time_between_kills_in_work_days: u32,
    pub start_hour: u8,
    pub end_hour: u8,
    /// `+HH:MM` or `-HH:MM`.
    pub utc_offset: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// How often the daemon looks at its schedule (real time; decisions read the
    /// injected clock).
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    pub groups: Vec<Rule>,
    pub exceptions: Vec<Rule>,
}

impl Default for MonkeyConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            leashed: true,
            grouping: Grouping::Cluster,
            mean_time_between_kills_in_work_days: 5.0,
            min_time_between_kills_in_work_days: 1,
            start_hour: 9,
            end_hour: 15,
            utc_offset: "+00:00".into(),
            seed: None,
            tick: Duration::from_secs(10),
            groups: Vec::new(),
            exceptions: Vec::new(),
        }
    }
}

/// `+HH:MM` / `-HH:MM` as seconds east of UTC.
fn parse_offset(text: &str) -> Option<i64> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 14 && m < 60).then_some(sign * (h * 3600 + m * 60))
}

impl MonkeyConfig {
    /// Checks every value; the error names the dotted key under `at`
    /// (`chaos.monkey` for the file, empty for the API).
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let key = |k: &str| {
            if at.is_empty() {
                k.to_owned()
            } else {
                format!("{at}.{k}")
            }
        };
        let m = self.mean_time_between_kills_in_work_days;
        if !(m.is_finite() && (1.0..=10_000.0).contains(&m)) {
            return Err(ConfigError::new(
                key("mean_time_between_kills_in_work_days"),
                format!("from 1 to 10000 work days, got {m}"),
            ));
        }
        if self.min_time_between_kills_in_work_days > 10_000 {
            return Err(ConfigError::new(
                key("min_time_between_kills_in_work_days"),
                "at most 10000 work days",
            ));
        }
        if self.end_hour > 24 || self.start_hour >= self.end_hour {
            return Err(ConfigError::new(
                key("end_hour"),
                format!(
                    "business hours are [start_hour, end_hour) with 0 <= start < end <= 24, got [{}, {})",
                    self.start_hour, self.end_hour
                ),
            ));
        }
        if parse_offset(&self.utc_offset).is_none() {
            return Err(ConfigError::new(
                key("utc_offset"),
                format!(
                    "`{}` is not `+HH:MM` or `-HH:MM` (at most 14 hours)",
                    self.utc_offset
                ),
            ));
        }
        if self.tick < Duration::from_millis(100) || self.tick > Duration::from_secs(3600) {
            return Err(ConfigError::new(key("tick"), "from 100ms to 1h"));
        }
        for (name, rules) in [("groups", &self.groups), ("exceptions", &self.exceptions)] {
            if rules.len() > MAX_RULES {
                return Err(ConfigError::new(key(name), format!("at most {MAX_RULES}")));
            }
            for (i, rule) in rules.iter().enumerate() {
                if rule.service.is_empty() || rule.service.len() > 128 {
                    return Err(ConfigError::new(
                        key(&format!("{name}[{i}].service")),
                        "a service name or pattern, 1 to 128 bytes",
                    ));
                }
                if name == "groups" && rule.service == crate::CONTROL_SERVICE {
                    return Err(ConfigError::new(
                        key(&format!("{name}[{i}].service")),
                        "the control plane cannot opt in: terminating it ends every experiment",
                    ));
                }
            }
        }
        Ok(())
    }

    fn offset_secs(&self) -> i64 {
        parse_offset(&self.utc_offset).unwrap_or(0)
    }

    fn probability(&self) -> f64 {
        (1.0 / self.mean_time_between_kills_in_work_days).min(1.0)
    }
}

/// A local calendar day: days since 1970-01-01 in the configured offset.
pub type Day = i64;

fn local_secs(wall: SystemTime, offset: i64) -> i64 {
    let secs = match wall.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    secs + offset
}

/// The local day of `wall`.
pub fn day_of(wall: SystemTime, config: &MonkeyConfig) -> Day {
    local_secs(wall, config.offset_secs()).div_euclid(86_400)
}

/// Monday–Friday (1970-01-01 was a Thursday).
pub fn is_work_day(day: Day) -> bool {
    (day + 3).rem_euclid(7) < 5
}

/// Work days from `from` (exclusive) to `to` (inclusive); 0 when `to <= from`.
pub fn work_days_between(from: Day, to: Day) -> u32 {
    ((from + 1)..=to).filter(|d| is_work_day(*d)).count() as u32
}

/// Whether `wall` is inside business hours on a work day.
pub fn in_window(wall: SystemTime, config: &MonkeyConfig) -> bool {
    let local = local_secs(wall, config.offset_secs());
    let day = local.div_euclid(86_400);
    let hour = local.rem_euclid(86_400) / 3600;
    is_work_day(day) && hour >= i64::from(config.start_hour) && hour < i64::from(config.end_hour)
}

/// A group of instances the monkey treats as one target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct GroupKey {
    pub service: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

impl std::fmt::Display for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.service)?;
        for part in [&self.region, &self.zone].into_iter().flatten() {
            write!(f, "/{part}")?;
        }
        Ok(())
    }
}

/// The group `instance` belongs to under `grouping`.
pub fn group_of(instance: &InstanceInfo, grouping: Grouping) -> GroupKey {
    GroupKey {
        service: instance.service.clone(),
        region: matches!(grouping, Grouping::Cluster | Grouping::Stack)
            .then(|| instance.region.clone()),
        zone: (grouping == Grouping::Stack).then(|| instance.zone.clone()),
    }
}

/// The opted-in, non-excepted groups of `instances` (the control plane never), sorted.
pub fn eligible_groups(instances: &[InstanceInfo], config: &MonkeyConfig) -> Vec<GroupKey> {
    let mut groups: Vec<GroupKey> = instances
        .iter()
        .filter(|i| eligible_instance(i, config))
        .map(|i| group_of(i, config.grouping))
        .filter(|g| !config.exceptions.iter().any(|e| e.matches_group(g)))
        .collect();
    groups.sort();
    groups.dedup();
    groups
}

/// Whether `instance` is opted in and not excepted (and not the control plane).
pub fn eligible_instance(instance: &InstanceInfo, config: &MonkeyConfig) -> bool {
    instance.service != crate::CONTROL_SERVICE
        && config
            .groups
            .iter()
            .any(|r| r.matches(&instance.service, &instance.region, &instance.zone))
        && !config
            .exceptions
            .iter()
            .any(|r| r.matches(&instance.service, &instance.region, &instance.zone))
}

/// One planned termination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Planned {
    pub group: GroupKey,
    /// Wall milliseconds.
    pub at_ms: u64,
    pub at: String,
}

/// The day's terminations: deterministic in (seed, day, groups).
pub fn plan_day(config: &MonkeyConfig, seed: u64, day: Day, groups: &[GroupKey]) -> Vec<Planned> {
    if !is_work_day(day) {
        return Vec::new();
    }
    let mut rng = Rng::new(seed ^ (day as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let window = u64::from(config.end_hour - config.start_hour) * 3600;
    let mut planned = Vec::new();
    for group in groups.iter().take(MAX_PLANNED) {
        // Both draws always happen, so one group's outcome does not shift the next's.
        let kill = rng.chance(config.probability());
        let offset = rng.below(window);
        if !kill {
            continue;
        }
        let local = day * 86_400 + i64::from(config.start_hour) * 3600 + offset as i64;
        let utc = local - config.offset_secs();
        let at_ms = u64::try_from(utc).unwrap_or(0) * 1000;
        planned.push(Planned {
            group: group.clone(),
            at_ms,
            at: rfc3339_ms(at_ms),
        });
    }
    planned.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then_with(|| a.group.cmp(&b.group)));
    planned
}

pub(crate) fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// What the scheduler decided for one due entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Verdict {
    /// Terminate an instance of the group (or record it, leashed).
    Terminate,
    /// Not done, and why.
    Skip { reason: String },
}

/// The schedule's state between ticks: pure, driven by the wall time it is given.
#[derive(Debug, Clone)]
pub struct MonkeyScheduler {
    pub config: MonkeyConfig,
    seed: u64,
    day: Option<Day>,
    /// When today's plan was made: entries planned before it are not acted on
    /// (a daemon started at 13:00 does not make up for the morning).
    planned_at_ms: u64,
    planned: Vec<Planned>,
    /// The local day of each group's last kill.
    last_kill: BTreeMap<GroupKey, Day>,
}

impl MonkeyScheduler {
    pub fn new(config: MonkeyConfig, seed: u64) -> Self {
        Self {
            config,
            seed,
            day: None,
            planned_at_ms: 0,
            planned: Vec::new(),
            last_kill: BTreeMap::new(),
        }
    }

    /// Today's remaining plan.
    pub fn planned(&self) -> &[Planned] {
        &self.planned
    }

    /// The entries due at `wall` with what to do about each; plans the day first
    /// when `wall` is on a new day (from `groups()`, read only then).
    pub fn due(
        &mut self,
        wall: SystemTime,
        groups: impl FnOnce() -> Vec<GroupKey>,
    ) -> Vec<(Planned, Verdict)> {
        let day = day_of(wall, &self.config);
        let now_ms = wall
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        if self.day != Some(day) {
            self.day = Some(day);
            self.planned_at_ms = now_ms;
            self.planned = plan_day(&self.config, self.seed, day, &groups());
        }
        let split = self.planned.partition_point(|p| p.at_ms <= now_ms);
        let due: Vec<Planned> = self.planned.drain(..split).collect();
        due.into_iter()
            .map(|entry| {
                let verdict = self.judge(&entry, wall, day);
                (entry, verdict)
            })
            .collect()
    }

    fn judge(&self, entry: &Planned, wall: SystemTime, day: Day) -> Verdict {
        let skip = |reason: String| Verdict::Skip { reason };
        if !in_window(wall, &self.config) {
            return skip("outside business hours (the tick came late)".into());
        }
        if entry.at_ms < self.planned_at_ms {
            return skip(
                "planned before the day's plan was made (the daemon started later)".into(),
            );
        }
        if self
            .config
            .exceptions
            .iter()
            .any(|e| e.matches_group(&entry.group))
        {
            return skip("an exception matches the group".into());
        }
        if let Some(last) = self.last_kill.get(&entry.group) {
            let between = work_days_between(*last, day);
            if between < self.config.min_time_between_kills_in_work_days {
                return skip(format!(
                    "last kill {between} work day(s) ago; min_time_between_kills_in_work_days is {}",
                    self.config.min_time_between_kills_in_work_days
                ));
            }
        }
        Verdict::Terminate
    }

    /// Records that `group` lost an instance at `wall` (leashed decisions count too,
    /// as in Netflix's leashed mode: the schedule behaves as if they happened).
    pub fn record_kill(&mut self, group: &GroupKey, wall: SystemTime) {
        self.last_kill
            .insert(group.clone(), day_of(wall, &self.config));
    }
}

/// One decision the monkey made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonkeyEvent {
    pub at: String,
    pub at_ms: u64,
    pub group: GroupKey,
    /// `killed`, `leashed`, `skipped`, `failed`.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the monkey terminates through: the platform in the control plane, a fake
/// in tests.
pub trait Terminator: Send + Sync + std::fmt::Debug + 'static {
    /// Live instances.
    fn live(&self) -> Vec<InstanceInfo>;
    /// Kills `instance_id`; whether it was found.
    fn kill<'a>(&'a self, instance_id: &'a str) -> casebook_kit::runtime::BoxFuture<'a, bool>;
}

/// One pass of the monkey at `wall`: decide what is due and act through
/// `terminator` (unless leashed). Returns the decisions, also appended to `history`
/// (bounded by [`MONKEY_HISTORY`]).
pub async fn run_once(
    scheduler: &mut MonkeyScheduler,
    terminator: &dyn Terminator,
    wall: SystemTime,
    rng: &mut Rng,
    history: &mut VecDeque<MonkeyEvent>,
) -> Vec<MonkeyEvent> {
    let live = terminator.live();
    let config = scheduler.config.clone();
    let due = scheduler.due(wall, || eligible_groups(&live, &config));
    let mut events = Vec::new();
    let at_ms = wall
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    for (entry, verdict) in due {
        let mut event = MonkeyEvent {
            at: rfc3339_ms(at_ms),
            at_ms,
            group: entry.group.clone(),
            outcome: "skipped".into(),
            instance: None,
            reason: None,
        };
        match verdict {
            Verdict::Skip { reason } => event.reason = Some(reason),
            Verdict::Terminate => {
                let candidates: Vec<&InstanceInfo> = live
                    .iter()
                    .filter(|i| {
                        eligible_instance(i, &config) && group_of(i, config.grouping) == entry.group
                    })
                    .collect();
                if candidates.is_empty() {
                    event.reason = Some("no eligible instance in the group".into());
                } else {
                    let victim = candidates[rng.below(candidates.len() as u64) as usize];
                    event.instance = Some(victim.instance_id.clone());
                    scheduler.record_kill(&entry.group, wall);
                    if config.leashed {
                        event.outcome = "leashed".into();
                        event.reason = Some("leashed: would have terminated it".into());
                    } else if terminator.kill(&victim.instance_id).await {
                        event.outcome = "killed".into();
                    } else {
                        event.outcome = "failed".into();
                        event.reason = Some("the instance was gone before the kill".into());
                    }
                }
            }
        }
        metrics::counter!("chaos_monkey_decisions_total", "outcome" => event.outcome.clone())
            .increment(1);
        match event.outcome.as_str() {
            "killed" => {
                tracing::warn!(group = %event.group, instance = ?event.instance, "chaos monkey terminated an instance")
            }
            _ => {
                tracing::info!(group = %event.group, outcome = %event.outcome, instance = ?event.instance,
                reason = ?event.reason, "chaos monkey decision")
            }
        }
        if history.len() >= MONKEY_HISTORY {
            history.pop_front();
        }
        history.push_back(event.clone());
        events.push(event);
    }
    events
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use casebook_kit::clock::{Clock, ManualClock};
    use parking_lot::Mutex;

    use super::*;

    fn info(service: &str, zone: &str, n: u32) -> InstanceInfo {
        let region = zone.rsplit_once('-').unwrap().0.to_owned();
        InstanceInfo {
            service: service.into(),
            instance_id: format!("{service}-{zone}-{n}"),
            region,
            zone: zone.into(),
            address: "127.0.0.1:1".parse().unwrap(),
            version: "0".into(),
        }
    }

    #[derive(Debug, Default)]
    struct FakeFleet {
        live: Mutex<Vec<InstanceInfo>>,
        killed: Mutex<Vec<String>>,
    }

    impl Terminator for FakeFleet {
        fn live(&self) -> Vec<InstanceInfo> {
            self.live.lock().clone()
        }
        fn kill<'a>(&'a self, id: &'a str) -> casebook_kit::runtime::BoxFuture<'a, bool> {
            Box::pin(async move {
                let mut live = self.live.lock();
                let before = live.len();
                live.retain(|i| i.instance_id != id);
                let found = live.len() < before;
                if found {
                    self.killed.lock().push(id.to_owned());
                    // The autoscaler's replacement, so groups never run dry.
                    let zone = id.split('-').skip(1).take(3).collect::<Vec<_>>().join("-");
                    let service = id.split('-').next().unwrap();
                    live.push(info(service, &zone, 100 + self.killed.lock().len() as u32));
                }
                found
            })
        }
    }

    fn fleet() -> Arc<FakeFleet> {
        let fleet = FakeFleet::default();
        let mut live = Vec::new();
        for zone in ["us-east-a", "us-east-b", "eu-west-a", "ap-south-a"] {
            live.push(info("api", zone, 1));
            live.push(info("cart", zone, 1));
            live.push(info("control", zone, 1));
        }
        *fleet.live.lock() = live;
        Arc::new(fleet)
    }

    fn config(json: serde_json::Value) -> MonkeyConfig {
        let c: MonkeyConfig = serde_json::from_value(json).unwrap();
        c.validate("chaos.monkey").unwrap();
        c
    }

    /// Runs the monkey every `tick` for `days` on a manual clock from Monday
    /// 2026-01-05 00:00 UTC; returns the decisions.
    fn simulate(
        config: MonkeyConfig,
        fleet: &FakeFleet,
        days: u64,
        tick: Duration,
    ) -> Vec<MonkeyEvent> {
        let monday = UNIX_EPOCH + Duration::from_secs(1_767_571_200);
        let clock = ManualClock::starting_at(monday);
        let mut scheduler = MonkeyScheduler::new(config, 42);
        let mut rng = Rng::new(1);
        let mut history = VecDeque::new();
        let mut all = Vec::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        while clock.elapsed() < Duration::from_secs(days * 86_400) {
            let events = rt.block_on(run_once(
                &mut scheduler,
                fleet,
                clock.wall(),
                &mut rng,
                &mut history,
            ));
            all.extend(events);
            clock.advance(tick);
        }
        assert!(history.len() <= MONKEY_HISTORY);
        all
    }

    #[test]
    fn the_monday_fixture_is_a_monday_and_work_days_count() {
        let monday = UNIX_EPOCH + Duration::from_secs(1_767_571_200);
        let day = day_of(monday, &MonkeyConfig::default());
        assert!(is_work_day(day) && is_work_day(day + 4));
        assert!(!is_work_day(day + 5) && !is_work_day(day + 6));
        assert_eq!(work_days_between(day, day + 7), 5);
        assert_eq!(work_days_between(day + 4, day + 7), 1, "Friday to Monday");
    }

    #[test]
    fn kills_happen_only_in_business_hours_on_work_days_in_opted_in_groups() {
        let fleet = fleet();
        let c = config(serde_json::json!({
            "enabled": true, "leashed": false, "grouping": "stack",
            "mean_time_between_kills_in_work_days": 1.0, "min_time_between_kills_in_work_days": 0,
            "start_hour": 9, "end_hour": 15, "utc_offset": "+02:00",
            "groups": [{"service": "api"}],
        }));
        let events = simulate(c.clone(), &fleet, 14, Duration::from_secs(60));
        let killed: Vec<&MonkeyEvent> = events.iter().filter(|e| e.outcome == "killed").collect();
        // Probability 1: every api group (4 zones) every work day (10 in two weeks).
        assert_eq!(killed.len(), 40, "{events:?}");
        for event in &killed {
            let wall = UNIX_EPOCH + Duration::from_millis(event.at_ms);
            assert!(in_window(wall, &c), "{event:?}");
            assert_eq!(event.group.service, "api");
            let local_hour = (event.at_ms / 1000 + 7200) % 86_400 / 3600;
            assert!((9..15).contains(&local_hour), "{event:?}");
        }
        assert!(fleet.killed.lock().iter().all(|id| id.starts_with("api-")));
    }

    #[test]
    fn the_mean_sets_the_rate_and_the_minimum_spaces_kills() {
        let fleet = fleet();
        let c = config(serde_json::json!({
            "leashed": false, "grouping": "app", "mean_time_between_kills_in_work_days": 2.0,
            "min_time_between_kills_in_work_days": 0, "groups": [{"service": "*"}],
        }));
        // 2 groups (api, cart) × 40 work days at p = 1/2: about 40 kills.
        let events = simulate(c, &fleet, 56, Duration::from_secs(600));
        let kills = events.iter().filter(|e| e.outcome == "killed").count();
        assert!(
            (25..=55).contains(&kills),
            "{kills} kills for an expectation of 40"
        );

        let c = config(serde_json::json!({
            "leashed": false, "grouping": "app", "mean_time_between_kills_in_work_days": 1.0,
            "min_time_between_kills_in_work_days": 3, "groups": [{"service": "api"}],
        }));
        let events = simulate(c.clone(), &fleet, 21, Duration::from_secs(600));
        let days: Vec<Day> = events
            .iter()
            .filter(|e| e.outcome == "killed")
            .map(|e| day_of(UNIX_EPOCH + Duration::from_millis(e.at_ms), &c))
            .collect();
        assert!(days.len() >= 4, "{days:?}");
        for pair in days.windows(2) {
            assert!(work_days_between(pair[0], pair[1]) >= 3, "{days:?}");
        }
        assert!(events.iter().any(|e| {
            e.outcome == "skipped"
                && e.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("min_time_between_kills"))
        }));
    }

    #[test]
    fn exceptions_with_wildcards_and_the_leash_spare_instances() {
        assert!(wildcard("ap-south-*", "ap-south-b"));
        assert!(wildcard("*-east-*", "us-east-a"));
        assert!(!wildcard("us-*-a", "us-east-b"));
        assert!(
            wildcard("*", "anything")
                && wildcard("exact", "exact")
                && !wildcard("exact", "exactly")
        );
        let fleet = fleet();
        let c = config(serde_json::json!({
            "leashed": false, "grouping": "stack", "mean_time_between_kills_in_work_days": 1.0,
            "min_time_between_kills_in_work_days": 0,
            "groups": [{"service": "*"}],
            "exceptions": [{"service": "cart"}, {"service": "api", "zone": "*-east-*"}],
        }));
        let events = simulate(c, &fleet, 7, Duration::from_secs(300));
        let killed: Vec<String> = fleet.killed.lock().clone();
        assert!(!killed.is_empty());
        for id in &killed {
            assert!(
                id.starts_with("api-eu-west") || id.starts_with("api-ap-south"),
                "{id}"
            );
        }
        assert!(events.iter().all(|e| e.group.service != "control"));

        let fleet = self::fleet();
        let c = config(serde_json::json!({
            "leashed": true, "grouping": "app", "mean_time_between_kills_in_work_days": 1.0,
            "min_time_between_kills_in_work_days": 0, "groups": [{"service": "api"}],
        }));
        let events = simulate(c, &fleet, 7, Duration::from_secs(300));
        assert!(fleet.killed.lock().is_empty(), "leashed kills nothing");
        assert_eq!(events.iter().filter(|e| e.outcome == "leashed").count(), 5);
        assert!(events.iter().all(|e| e.instance.is_some()));
    }

    #[test]
    fn the_plan_is_deterministic_and_a_late_tick_skips() {
        let c = config(
            serde_json::json!({"mean_time_between_kills_in_work_days": 1.0, "groups": [{"service": "api"}]}),
        );
        let groups = vec![
            GroupKey {
                service: "api".into(),
                region: Some("us-east".into()),
                zone: None,
            },
            GroupKey {
                service: "api".into(),
                region: Some("eu-west".into()),
                zone: None,
            },
        ];
        let monday = 1_767_571_200 / 86_400;
        assert_eq!(
            plan_day(&c, 9, monday, &groups),
            plan_day(&c, 9, monday, &groups)
        );
        assert_ne!(
            plan_day(&c, 9, monday, &groups),
            plan_day(&c, 10, monday, &groups)
        );
        assert!(plan_day(&c, 9, monday + 5, &groups).is_empty(), "Saturday");
        // A scheduler first ticked after business hours skips the day's entries.
        let mut scheduler = MonkeyScheduler::new(c, 9);
        let evening = UNIX_EPOCH + Duration::from_secs(monday as u64 * 86_400 + 20 * 3600);
        let due = scheduler.due(evening, || groups.clone());
        assert_eq!(due.len(), 2);
        assert!(due.iter().all(
            |(_, v)| matches!(v, Verdict::Skip { reason } if reason.contains("business hours"))
        ));
        // One started mid-day does not make up for the morning: what was planned
        // before it started is skipped, what comes later stays planned.
        let mut scheduler = MonkeyScheduler::new(scheduler.config.clone(), 9);
        let plan = plan_day(&scheduler.config, 9, monday, &groups);
        let start_ms = (plan[0].at_ms + plan[1].at_ms) / 2;
        assert!(
            plan[0].at_ms < start_ms && start_ms < plan[1].at_ms,
            "{plan:?}"
        );
        let started = UNIX_EPOCH + Duration::from_millis(start_ms);
        let due = scheduler.due(started, || groups.clone());
        assert_eq!(due.len(), 1);
        assert!(matches!(&due[0].1, Verdict::Skip { reason } if reason.contains("started later")));
        assert_eq!(scheduler.planned(), &plan[1..]);
        // A bad file value names its key.
        let bad = MonkeyConfig {
            start_hour: 16,
            ..MonkeyConfig::default()
        };
        assert_eq!(
            bad.validate("chaos.monkey").unwrap_err().key(),
            "chaos.monkey.end_hour"
        );
        let bad = MonkeyConfig {
            utc_offset: "CET".into(),
            ..MonkeyConfig::default()
        };
        assert_eq!(
            bad.validate("chaos.monkey").unwrap_err().key(),
            "chaos.monkey.utc_offset"
        );
        let bad = MonkeyConfig {
            groups: vec![Rule {
                service: "control".into(),
                ..Rule::default()
            }],
            ..MonkeyConfig::default()
        };
        assert_eq!(
            bad.validate("chaos.monkey").unwrap_err().key(),
            "chaos.monkey.groups[0].service"
        );
    }
}
