//! The `[autoscaler]` table: the loop's settings, a policy per service, the schedule.
//!
//! ```toml
//! [autoscaler]
//! interval = "5s"          # how often every policy is evaluated
//! history = 256            # decisions kept for GET /api/autoscaler
//!
//! [[autoscaler.policies]]
//! service = "amazon"
//! min_instances = 1
//! max_instances = 6
//! signal = "request_rate"  # or "in_flight" (see the signal module)
//! capacity = 400.0         # per instance: requests/s, or requests in flight
//! window = "30s"           # averaged over
//! scale_out_above = 0.70
//! scale_in_below = 0.30
//! cooldown_out = "30s"
//! cooldown_in = "2m"
//! step = 1
//! placement = { regions = ["us-east"] }  # optional; or zones = [...]; default:
//!                                         # the service's declared spread
//!
//! [[autoscaler.schedule]]
//! service = "amazon"
//! at = "2026-07-15T08:00:00Z"   # or daily: "08:00" (UTC)
//! until = "2026-07-15T10:00:00Z"
//! lead = "10m"
//! instances = 4
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use casebook_kit::case::Spread;
use casebook_kit::config::ConfigError;
use casebook_kit::topology::{Placement, Topology};
use serde::{Deserialize, Serialize};

use super::schedule::ScheduledScale;
use super::signal::SignalKind;

/// The most policies (services) one autoscaler holds.
pub const MAX_POLICIES: usize = 256;
/// The most schedule entries one autoscaler holds (configured plus added at run time).
pub const MAX_SCHEDULE: usize = 256;
/// The most instances a policy may allow.
pub const MAX_INSTANCES: u32 = 1000;
/// The most decisions the history may keep.
pub const MAX_HISTORY: usize = 10_000;
/// The longest cooldown or signal window.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// The most regions plus zones one placement rule names.
pub const MAX_PLACEMENT_NAMES: usize = 256;

/// The `[autoscaler]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoscalerConfig {
    /// Whether the loop runs (the API still answers, and still takes policies).
    pub enabled: bool,
    /// How often every policy is evaluated (real time; decisions read the injected
    /// clock).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How many decisions the in-memory history keeps (oldest dropped first).
    pub history: usize,
    /// One per service.
    pub policies: Vec<Policy>,
    /// Predictive entries: floors raised ahead of known surges.
    pub schedule: Vec<ScheduledScale>,
    /// Where each service's declaration puts it (its case's spread), by service:
    /// the placement of a policy that names none. Set by whoever registers the
    /// cases, never read from the file.
    #[serde(skip)]
    pub declared: BTreeMap<String, PlacementRule>,
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(5),
            history: 256,
            policies: Vec::new(),
            schedule: Vec::new(),
            declared: BTreeMap::new(),
        }
    }
}

/// Where new instances of a service may go: a zone is allowed when its region is
/// in `regions` or it is itself in `zones`. Empty: no rule (see
/// [`Policy::placement`] for what applies then).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlacementRule {
    pub regions: Vec<String>,
    pub zones: Vec<String>,
}

impl PlacementRule {
    /// The zones a declaration's spread puts instances in, as a rule: every region
    /// for a per-region service, the first region for the others (a `Single`
    /// service and the zone replicas of the first region live there with the data
    /// they share).
    pub fn of_spread(spread: Spread, topology: &Topology) -> Self {
        let regions = match spread {
            Spread::PerRegion => topology.regions.iter().map(|r| r.name.clone()).collect(),
            Spread::Single | Spread::ZonesOfFirstRegion => topology
                .regions
                .iter()
                .take(1)
                .map(|r| r.name.clone())
                .collect(),
        };
        Self {
            regions,
            zones: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.regions.is_empty() && self.zones.is_empty()
    }

    pub fn allows(&self, placement: &Placement) -> bool {
        self.regions.contains(&placement.region) || self.zones.contains(&placement.zone)
    }

    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.regions.len() + self.zones.len() > MAX_PLACEMENT_NAMES {
            return Err(ConfigError::new(
                dotted(at, "placement"),
                format!("names at most {MAX_PLACEMENT_NAMES} regions and zones"),
            ));
        }
        for (field, names) in [("regions", &self.regions), ("zones", &self.zones)] {
            if names
                .iter()
                .any(|n| n.is_empty() || n.len() > 128 || n.chars().any(char::is_control))
            {
                return Err(ConfigError::new(
                    dotted(at, &format!("placement.{field}")),
                    "names of 1 to 128 printable characters",
                ));
            }
        }
        Ok(())
    }
}

/// How one service is scaled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub service: String,
    /// Never fewer live instances (at least 1: an instance-less service has no signal).
    #[serde(default = "defaults::min_instances")]
    pub min_instances: u32,
    /// Never more.
    pub max_instances: u32,
    /// What utilisation measures.
    #[serde(default)]
    pub signal: SignalKind,
    /// What one instance handles at 100 % utilisation, in the signal's unit.
    pub capacity: f64,
    /// The signal is averaged over this much time.
    #[serde(with = "humantime_serde", default = "defaults::window")]
    pub window: Duration,
    /// Utilisation above which the service scales out.
    #[serde(default = "defaults::scale_out_above")]
    pub scale_out_above: f64,
    /// Utilisation below which it scales in.
    #[serde(default = "defaults::scale_in_below")]
    pub scale_in_below: f64,
    /// After a scale-out, no further reactive scale-out for this long.
    #[serde(with = "humantime_serde", default = "defaults::cooldown_out")]
    pub cooldown_out: Duration,
    /// After any scaling, no reactive scale-in for this long.
    #[serde(with = "humantime_serde", default = "defaults::cooldown_in")]
    pub cooldown_in: Duration,
    /// Instances added or removed by one reactive decision.
    #[serde(default = "defaults::step")]
    pub step: u32,
    /// Where scale-outs may place instances (each goes to the allowed zone with
    /// the fewest live ones). Absent or empty: the service's declared spread when
    /// its case registers one ([`AutoscalerConfig::declared`]), else the regions
    /// its instances already run in.
    #[serde(default, skip_serializing_if = "PlacementRule::is_empty")]
    pub placement: PlacementRule,
}

mod defaults {
    use std::time::Duration;

    pub fn min_instances() -> u32 {
        1
    }
    pub fn window() -> Duration {
        Duration::from_secs(30)
    }
    pub fn scale_out_above() -> f64 {
        0.70
    }
    pub fn scale_in_below() -> f64 {
        0.30
    }
    pub fn cooldown_out() -> Duration {
        Duration::from_secs(60)
    }
    pub fn cooldown_in() -> Duration {
        Duration::from_secs(300)
    }
    pub fn step() -> u32 {
        1
    }
}

/// `at.field`, or `field` when `at` is empty (an API body).
pub(crate) fn dotted(at: &str, field: &str) -> String {
    if at.is_empty() {
        field.to_owned()
    } else {
        format!("{at}.{field}")
    }
}

impl Policy {
    /// Checks the policy; `at` is where it sits (`autoscaler.policies[0]`, or empty
    /// for an API body), so the error names the dotted key.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let bad = |field: &str, message: String| Err(ConfigError::new(dotted(at, field), message));
        check_service(&self.service).or_else(|m| bad("service", m))?;
        if self.min_instances == 0 {
            return bad(
                "min_instances",
                "must be at least 1 (a service without instances has no signal to scale on)".into(),
            );
        }
        if self.max_instances > MAX_INSTANCES {
            return bad("max_instances", format!("must be at most {MAX_INSTANCES}"));
        }
        if self.max_instances < self.min_instances {
            return bad(
                "max_instances",
                format!("must be at least min_instances ({})", self.min_instances),
            );
        }
        // `!(a && b)` so that NaN is refused too.
        if !(self.capacity.is_finite() && self.capacity > 0.0) {
            return bad(
                "capacity",
                format!("must be a positive number, got {}", self.capacity),
            );
        }
        if !(self.scale_out_above > 0.0 && self.scale_out_above <= 10.0) {
            return bad(
                "scale_out_above",
                format!("must be in (0, 10], got {}", self.scale_out_above),
            );
        }
        if !(self.scale_in_below >= 0.0 && self.scale_in_below < self.scale_out_above) {
            return bad(
                "scale_in_below",
                format!(
                    "must be at least 0 and below scale_out_above ({}): the band between \
                     them is what keeps the service from flapping; got {}",
                    self.scale_out_above, self.scale_in_below
                ),
            );
        }
        if self.step == 0 || self.step > self.max_instances {
            return bad(
                "step",
                format!("must be from 1 to max_instances ({})", self.max_instances),
            );
        }
        for (field, value, least) in [
            ("window", self.window, Duration::from_secs(1)),
            ("cooldown_out", self.cooldown_out, Duration::ZERO),
            ("cooldown_in", self.cooldown_in, Duration::ZERO),
        ] {
            if value < least || value > MAX_DURATION {
                return bad(field, format!("must be from {least:?} to 24h"));
            }
        }
        self.placement.validate(at)?;
        Ok(())
    }
}

/// A service name a policy may scale: not empty, printable, and not the control
/// plane (it runs once per platform).
fn check_service(service: &str) -> Result<(), String> {
    if service.is_empty() || service.len() > 128 || service.chars().any(char::is_control) {
        return Err("must be a service name of 1 to 128 printable characters".into());
    }
    if service == crate::CONTROL_SERVICE {
        return Err("the control plane runs once per platform; it cannot be scaled".into());
    }
    Ok(())
}

impl AutoscalerConfig {
    /// Checks the table; errors name the dotted key (`autoscaler.policies[1].step`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.interval < Duration::from_millis(10) || self.interval > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "autoscaler.interval",
                "must be from 10ms to 1h",
            ));
        }
        if !(1..=MAX_HISTORY).contains(&self.history) {
            return Err(ConfigError::new(
                "autoscaler.history",
                format!("must be from 1 to {MAX_HISTORY}"),
            ));
        }
        if self.policies.len() > MAX_POLICIES {
            return Err(ConfigError::new(
                "autoscaler.policies",
                format!("at most {MAX_POLICIES} policies"),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, policy) in self.policies.iter().enumerate() {
            let at = format!("autoscaler.policies[{i}]");
            policy.validate(&at)?;
            if !seen.insert(policy.service.as_str()) {
                return Err(ConfigError::new(
                    format!("{at}.service"),
                    format!("`{}` has a policy already; one per service", policy.service),
                ));
            }
        }
        if self.schedule.len() > MAX_SCHEDULE {
            return Err(ConfigError::new(
                "autoscaler.schedule",
                format!("at most {MAX_SCHEDULE} entries"),
            ));
        }
        for (i, entry) in self.schedule.iter().enumerate() {
            let at = format!("autoscaler.schedule[{i}]");
            entry.validate(&at)?;
            let policy = self.policies.iter().find(|p| p.service == entry.service);
            check_entry_against(entry, policy, &at)?;
        }
        Ok(())
    }
}

/// A schedule entry needs its service's policy, and stays within its maximum.
pub(crate) fn check_entry_against(
    entry: &ScheduledScale,
    policy: Option<&Policy>,
    at: &str,
) -> Result<(), ConfigError> {
    let Some(policy) = policy else {
        return Err(ConfigError::new(
            dotted(at, "service"),
            format!(
                "`{}` has no autoscaler policy; a schedule raises a policy's floor",
                entry.service
            ),
        ));
    };
    if entry.instances > policy.max_instances {
        return Err(ConfigError::new(
            dotted(at, "instances"),
            format!(
                "must be at most the policy's max_instances ({})",
                policy.max_instances
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn policy() -> Policy {
        serde_json::from_value(serde_json::json!({
            "service": "api", "max_instances": 4, "capacity": 100.0
        }))
        .unwrap()
    }

    #[test]
    fn a_policy_needs_only_service_max_and_capacity() {
        let p = policy();
        assert_eq!((p.min_instances, p.step), (1, 1));
        assert_eq!((p.scale_out_above, p.scale_in_below), (0.70, 0.30));
        assert_eq!(p.signal, SignalKind::RequestRate);
        p.validate("").unwrap();
    }

    #[test]
    fn validation_names_the_dotted_key() {
        type Break = fn(&mut Policy);
        let cases: Vec<(Break, &str)> = vec![
            (|p| p.min_instances = 0, "min_instances"),
            (|p| p.min_instances = 5, "max_instances"),
            (|p| p.capacity = f64::NAN, "capacity"),
            (|p| p.scale_in_below = 0.8, "scale_in_below"),
            (|p| p.scale_out_above = 0.0, "scale_out_above"),
            (|p| p.step = 0, "step"),
            (|p| p.window = Duration::ZERO, "window"),
            (
                |p| p.cooldown_in = Duration::from_secs(90_000),
                "cooldown_in",
            ),
            (|p| p.service = "control".into(), "service"),
            (
                |p| p.placement.zones = vec![String::new()],
                "placement.zones",
            ),
        ];
        for (break_it, field) in cases {
            let mut config = AutoscalerConfig {
                policies: vec![policy(), policy()],
                ..Default::default()
            };
            config.policies[1].service = "other".into();
            break_it(&mut config.policies[1]);
            let error = config.validate().unwrap_err();
            assert_eq!(
                error.key(),
                format!("autoscaler.policies[1].{field}"),
                "{error}"
            );
        }
    }

    #[test]
    fn one_policy_per_service_and_schedules_need_one() {
        let config = AutoscalerConfig {
            policies: vec![policy(), policy()],
            ..Default::default()
        };
        assert_eq!(
            config.validate().unwrap_err().key(),
            "autoscaler.policies[1].service"
        );

        let entry: ScheduledScale = serde_json::from_value(serde_json::json!({
            "service": "other", "at": "08:00", "until": "09:00", "instances": 2
        }))
        .unwrap();
        let mut config = AutoscalerConfig {
            policies: vec![policy()],
            schedule: vec![entry.clone()],
            ..Default::default()
        };
        assert_eq!(
            config.validate().unwrap_err().key(),
            "autoscaler.schedule[0].service"
        );
        config.schedule[0].service = "api".into();
        config.schedule[0].instances = 5;
        assert_eq!(
            config.validate().unwrap_err().key(),
            "autoscaler.schedule[0].instances"
        );
        config.schedule[0].instances = 4;
        config.validate().unwrap();
    }

    #[test]
    fn the_table_reads_from_toml() {
        let text = r#"
            interval = "2s"
            [[policies]]
            service = "api"
            max_instances = 3
            capacity = 50.0
            signal = "in_flight"
            cooldown_in = "2m"
            [[schedule]]
            service = "api"
            at = "2026-07-15T08:00:00Z"
            until = "2026-07-15T10:00:00Z"
            lead = "10m"
            instances = 3
        "#;
        let config: AutoscalerConfig = toml::from_str(text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.policies[0].signal, SignalKind::InFlight);
        assert_eq!(config.policies[0].cooldown_in, Duration::from_secs(120));
        assert_eq!(config.schedule[0].lead, Duration::from_secs(600));
        let again: AutoscalerConfig = toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
        assert_eq!(again, config);
    }
}
