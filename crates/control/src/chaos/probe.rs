//! The steady-state hypothesis: probes over the metrics store, each with a
//! tolerance (`min`/`max`) and, optionally, an abort limit (`abort_min`/
//! `abort_max`) beyond which an experiment under way is rolled back at once.
//!
//! | kind | measures, over `window` ending [`LAG`] ago | unit |
//! |---|---|---|
//! | `success_ratio` | `service`'s answered requests with a status below 500 over all answered (`http_requests_total`, `/health` and `/metrics` left out) | fraction 0–1 |
//! | `latency` | the `percentile` (default 99) of `service`'s request durations (`http_request_duration_seconds`) | milliseconds |
//! | `request_rate` | `service`'s answered requests per second | requests/s |
//! | `metric` | any series: `metric` + `filters`, summed per second then reduced by `aggregate` (`sum`, `avg`, `max`, `min`, or `p50`…`p999` of a distribution) | the metric's |
//!
//! `region` (any kind but `metric`) narrows to the instances placed in that region.
//!
//! **Not guaranteed.** The request metrics are the server's: a request that never
//! reached a server (refused connection to a killed instance) is counted by no
//! probe here — only by the caller (the load generator's report). A window with no
//! data reads `null`; it fails the hypothesis unless `allow_no_data`. A latency
//! window is aligned to whole multiples of its length (the store merges whole
//! steps), so it ends up to one window earlier than the others.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use casebook_kit::config::ConfigError;
use serde::{Deserialize, Serialize};

use crate::autoscaler::signal::{DURATION_METRIC, LAG, REQUESTS_METRIC};
use crate::metrics_store::MetricsStore;
use crate::metrics_store::query::{Aggregate, Query, TagFilter, TimeSpec};

/// The most probes one hypothesis holds.
pub const MAX_PROBES: usize = 16;
/// The longest probe window.
pub const MAX_WINDOW: Duration = Duration::from_secs(600);
/// A probe's `service` that means every service (but the control plane).
pub const EVERY_SERVICE: &str = "*";

/// Routes that are not a service's work.
const HOUSEKEEPING_ROUTES: [&str; 2] = ["/health", "/metrics"];

/// What a probe measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    SuccessRatio,
    Latency,
    RequestRate,
    Metric,
}

impl ProbeKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::SuccessRatio => "success_ratio",
            Self::Latency => "latency",
            Self::RequestRate => "request_rate",
            Self::Metric => "metric",
        }
    }
}

/// One probe of a steady-state hypothesis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// Shown in the verdict; defaults to `<kind> <service>`.
    #[serde(default)]
    pub name: String,
    pub kind: ProbeKind,
    /// The service measured; `*` for every service but the control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// For `latency`: the percentile, 0–100 (default 99).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    /// For `metric`: the series name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// For `metric`: tag → accepted values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub filters: BTreeMap<String, Vec<String>>,
    /// For `metric`: `sum` (default), `avg`, `max`, `min`, `p50`, `p90`, `p99`, `p999`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<String>,
    /// The tolerance: the hypothesis holds while the value is within.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Beyond these, an experiment under way is aborted and rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_max: Option<f64>,
    #[serde(default = "default_window", with = "humantime_serde")]
    pub window: Duration,
    /// Whether a window without data counts as holding.
    #[serde(default)]
    pub allow_no_data: bool,
}

fn default_window() -> Duration {
    Duration::from_secs(30)
}

impl Probe {
    /// A success-ratio probe of `service` at `min` (used by the shortcuts and CLI).
    pub fn success_ratio(service: &str, min: f64, window: Duration) -> Self {
        Self {
            name: String::new(),
            kind: ProbeKind::SuccessRatio,
            service: Some(service.to_owned()),
            region: None,
            percentile: None,
            metric: None,
            filters: BTreeMap::new(),
            aggregate: None,
            min: Some(min),
            max: None,
            abort_min: None,
            abort_max: None,
            window,
            allow_no_data: false,
        }
    }

    /// Checks the fields (not whether the service exists: the caller does); fills
    /// in the default name. Errors name the key under `at`.
    pub fn validate(&mut self, at: &str) -> Result<(), ConfigError> {
        let key = |field: &str| format!("{at}.{field}");
        let finite = |v: Option<f64>, field: &str| match v {
            Some(v) if !v.is_finite() => {
                Err(ConfigError::new(key(field), "must be a finite number"))
            }
            _ => Ok(()),
        };
        for (v, f) in [
            (self.min, "min"),
            (self.max, "max"),
            (self.abort_min, "abort_min"),
            (self.abort_max, "abort_max"),
        ] {
            finite(v, f)?;
        }
        if self.min.is_none() && self.max.is_none() {
            return Err(ConfigError::new(
                key("min"),
                "a probe needs a tolerance: min, max or both",
            ));
        }
        if let (Some(min), Some(max)) = (self.min, self.max)
            && min > max
        {
            return Err(ConfigError::new(
                key("min"),
                format!("{min} is above max {max}"),
            ));
        }
        if let (Some(abort), Some(min)) = (self.abort_min, self.min)
            && abort > min
        {
            return Err(ConfigError::new(
                key("abort_min"),
                format!("{abort} is inside the tolerance (min {min}): abort limits lie beyond it"),
            ));
        }
        if let (Some(abort), Some(max)) = (self.abort_max, self.max)
            && abort < max
        {
            return Err(ConfigError::new(
                key("abort_max"),
                format!("{abort} is inside the tolerance (max {max}): abort limits lie beyond it"),
            ));
        }
        if self.window < Duration::from_secs(1) || self.window > MAX_WINDOW {
            return Err(ConfigError::new(
                key("window"),
                format!("from 1s to {}", humantime::format_duration(MAX_WINDOW)),
            ));
        }
        match self.kind {
            ProbeKind::Metric => {
                let Some(metric) = self.metric.as_deref().filter(|m| !m.is_empty()) else {
                    return Err(ConfigError::new(
                        key("metric"),
                        "a `metric` probe names its series",
                    ));
                };
                if self.filters.len() > 8 {
                    return Err(ConfigError::new(key("filters"), "at most 8 tags"));
                }
                if self.region.is_some() {
                    return Err(ConfigError::new(
                        key("region"),
                        "not for `metric` probes: filter on the series' own tags",
                    ));
                }
                let aggregate = self.aggregate.as_deref().unwrap_or("sum");
                Aggregate::parse(aggregate)
                    .map_err(|e| ConfigError::new(key("aggregate"), e.to_string()))?;
                if self.name.is_empty() {
                    self.name = format!("{aggregate} {metric}");
                }
            }
            kind => {
                let Some(service) = self.service.as_deref().filter(|s| !s.is_empty()) else {
                    return Err(ConfigError::new(
                        key("service"),
                        format!("a `{}` probe names its service", kind.as_str()),
                    ));
                };
                if self.metric.is_some() || !self.filters.is_empty() || self.aggregate.is_some() {
                    return Err(ConfigError::new(
                        key("metric"),
                        "metric, filters and aggregate are for `metric` probes",
                    ));
                }
                if kind == ProbeKind::Latency {
                    let p = self.percentile.unwrap_or(99.0);
                    if !(0.0..=100.0).contains(&p) {
                        return Err(ConfigError::new(key("percentile"), "from 0 to 100"));
                    }
                } else if self.percentile.is_some() {
                    return Err(ConfigError::new(
                        key("percentile"),
                        "only for `latency` probes",
                    ));
                }
                if self.name.is_empty() {
                    self.name = match kind {
                        ProbeKind::Latency => {
                            format!("p{} latency {service}", self.percentile.unwrap_or(99.0))
                        }
                        _ => format!("{} {service}", kind.as_str().replace('_', " ")),
                    };
                    if let Some(region) = &self.region {
                        self.name.push_str(&format!(" in {region}"));
                    }
                }
            }
        }
        Ok(())
    }

    /// The tolerance as people read it, e.g. `≥ 0.999` or `≤ 250 ms`.
    pub fn target(&self) -> String {
        let unit = match self.kind {
            ProbeKind::Latency => " ms",
            ProbeKind::RequestRate => " /s",
            _ => "",
        };
        match (self.min, self.max) {
            (Some(min), Some(max)) => format!("{min}–{max}{unit}"),
            (Some(min), None) => format!("≥ {min}{unit}"),
            (None, Some(max)) => format!("≤ {max}{unit}"),
            (None, None) => "any".into(),
        }
    }

    /// Whether `value` is within the tolerance (`None`: no data).
    pub fn holds(&self, value: Option<f64>) -> bool {
        match value {
            None => self.allow_no_data,
            Some(v) => self.min.is_none_or(|m| v >= m) && self.max.is_none_or(|m| v <= m),
        }
    }

    /// Whether `value` is beyond an abort limit.
    pub fn breaches_abort(&self, value: Option<f64>) -> bool {
        value.is_some_and(|v| {
            self.abort_min.is_some_and(|m| v < m) || self.abort_max.is_some_and(|m| v > m)
        })
    }

    /// Which of two values is worse for this probe (the one further from holding).
    pub fn worse(&self, a: Option<f64>, b: f64) -> f64 {
        let Some(a) = a else { return b };
        // Below a minimum is bad: the lower is worse; above a maximum: the higher.
        if self.min.is_some() && self.max.is_none() {
            a.min(b)
        } else if self.max.is_some() && self.min.is_none() {
            a.max(b)
        } else {
            let miss = |v: f64| {
                self.min.map_or(0.0, |m| (m - v).max(0.0))
                    + self.max.map_or(0.0, |m| (v - m).max(0.0))
            };
            if miss(b) > miss(a) { b } else { a }
        }
    }
}

/// Where probe values come from: the metrics store in the control plane, a fake in
/// tests.
pub trait Measure: Send + Sync + std::fmt::Debug + 'static {
    /// `probe`'s value over a window of `window` ending now (minus the lag);
    /// `instances` are the ids the probe's `region` narrows to (`None`: no
    /// narrowing).
    fn measure(&self, probe: &Probe, window: Duration, instances: Option<&[String]>)
    -> Option<f64>;

    /// Per-second request counts of `instances` (all services) from `from_sec` on
    /// (wall seconds), up to the last complete second; for Kong's evacuation.
    fn requests_per_second(&self, instances: &[String], from_sec: u64) -> Vec<(u64, f64)>;

    /// Per-second open TCP connections of `instances` (the kit's
    /// `tcp_connections_open`: chat sessions, the GEO port's clients), from `from_sec`
    /// on; seconds nobody reported are left out. For Kong's evacuation of
    /// connection-holding services. None known by default.
    fn connections_per_second(&self, _instances: &[String], _from_sec: u64) -> Vec<(u64, f64)> {
        Vec::new()
    }
}

/// The kit's gauge of connections being served by a raw TCP listener.
pub const CONNECTIONS_METRIC: &str = "tcp_connections_open";

/// Probes read from the control plane's metrics store.
#[derive(Debug, Clone)]
pub struct StoreMeasure {
    store: Arc<MetricsStore>,
    clock: casebook_kit::clock::SharedClock,
}

impl StoreMeasure {
    pub fn new(store: Arc<MetricsStore>, clock: casebook_kit::clock::SharedClock) -> Self {
        Self { store, clock }
    }

    fn filters(probe: &Probe, instances: Option<&[String]>) -> Vec<TagFilter> {
        let mut filters = Vec::new();
        if probe.kind == ProbeKind::Metric {
            for (key, values) in &probe.filters {
                filters.push(TagFilter {
                    key: key.clone(),
                    values: values.clone(),
                    negate: false,
                });
            }
            return filters;
        }
        match probe.service.as_deref() {
            // Every service but the control plane, whose own calls are no service
            // traffic.
            Some(EVERY_SERVICE) => filters.push(TagFilter {
                key: "service".into(),
                values: vec![crate::CONTROL_SERVICE.to_owned()],
                negate: true,
            }),
            Some(service) => filters.push(TagFilter {
                key: "service".into(),
                values: vec![service.to_owned()],
                negate: false,
            }),
            None => {}
        }
        filters.push(TagFilter {
            key: "route".into(),
            values: HOUSEKEEPING_ROUTES.map(str::to_owned).to_vec(),
            negate: true,
        });
        if let Some(ids) = instances {
            filters.push(TagFilter {
                key: "instance".into(),
                values: ids.to_vec(),
                negate: false,
            });
        }
        filters
    }

    /// Per-second values of a scalar query (summed over its series), `(second, value)`.
    fn per_second(&self, query: Query) -> Vec<(u64, Option<f64>)> {
        match self.store.query(&query) {
            Ok(result) => {
                let start = result.start_ms / 1000;
                let mut sums: Vec<Option<f64>> = Vec::new();
                for series in result.series {
                    if sums.len() < series.values.len() {
                        sums.resize(series.values.len(), None);
                    }
                    for (slot, v) in sums.iter_mut().zip(series.values) {
                        if let Some(v) = v {
                            *slot = Some(slot.unwrap_or(0.0) + v);
                        }
                    }
                }
                sums.into_iter()
                    .enumerate()
                    .map(|(i, v)| (start + i as u64, v))
                    .collect()
            }
            Err(error) => {
                tracing::debug!(%error, metric = %query.name, "chaos probe query refused");
                Vec::new()
            }
        }
    }

    /// `name` summed over `instances` per second, from `from_sec` up to the last
    /// complete second (the lag before now); `None` for a second without data.
    fn region_seconds(
        &self,
        name: &str,
        mut filters: Vec<TagFilter>,
        instances: &[String],
        from_sec: u64,
    ) -> Vec<(u64, Option<f64>)> {
        if instances.is_empty() {
            return Vec::new();
        }
        let last = (self.clock.wall_millis() / 1000).saturating_sub(LAG.as_secs());
        if last < from_sec {
            return Vec::new();
        }
        filters.push(TagFilter {
            key: "instance".into(),
            values: instances.to_vec(),
            negate: false,
        });
        let query = Query {
            name: name.to_owned(),
            filters,
            group_by: Vec::new(),
            aggregate: Aggregate::Sum,
            from: TimeSpec::At(from_sec * 1000),
            to: TimeSpec::At(last * 1000),
            step_secs: 1,
        };
        self.per_second(query)
            .into_iter()
            .filter(|(s, _)| (from_sec..=last).contains(s))
            .collect()
    }

    fn window_query(&self, name: &str, filters: Vec<TagFilter>, window: Duration) -> Query {
        let lag = LAG.as_secs();
        Query {
            name: name.to_owned(),
            filters,
            group_by: Vec::new(),
            aggregate: Aggregate::Sum,
            from: TimeSpec::Ago(lag + window.as_secs().max(1) - 1),
            to: TimeSpec::Ago(lag),
            step_secs: 1,
        }
    }
}

impl Measure for StoreMeasure {
    fn measure(
        &self,
        probe: &Probe,
        window: Duration,
        instances: Option<&[String]>,
    ) -> Option<f64> {
        let filters = Self::filters(probe, instances);
        match probe.kind {
            ProbeKind::SuccessRatio => {
                let mut query = self.window_query(REQUESTS_METRIC, filters, window);
                query.group_by = vec!["status".into()];
                let result = self.store.query(&query).ok()?;
                let (mut ok, mut all) = (0.0, 0.0);
                for series in result.series {
                    let n: f64 = series.values.iter().flatten().sum();
                    let status: u16 = series.tags.get("status").and_then(|s| s.parse().ok())?;
                    all += n;
                    if status < 500 {
                        ok += n;
                    }
                }
                (all > 0.0).then(|| ok / all)
            }
            ProbeKind::RequestRate => {
                let values = self.per_second(self.window_query(REQUESTS_METRIC, filters, window));
                let seconds = values.iter().filter(|(_, v)| v.is_some()).count();
                (seconds > 0).then(|| {
                    values.iter().filter_map(|(_, v)| *v).sum::<f64>()
                        / window.as_secs_f64().max(1.0)
                })
            }
            ProbeKind::Latency => {
                // One step of exactly the window, aligned: the store merges whole steps.
                let step = window.as_secs().max(1);
                let last = (self.clock.wall_millis() / 1000).saturating_sub(LAG.as_secs());
                let end = (last + 1) / step * step; // exclusive, aligned
                let start = end.saturating_sub(step);
                let query = Query {
                    name: DURATION_METRIC.into(),
                    filters,
                    group_by: Vec::new(),
                    aggregate: Aggregate::Percentile(probe.percentile.unwrap_or(99.0)),
                    from: TimeSpec::At(start * 1000),
                    to: TimeSpec::At((end.saturating_sub(1)) * 1000),
                    step_secs: step,
                };
                let result = self.store.query(&query).ok()?;
                let seconds = result
                    .series
                    .into_iter()
                    .next()?
                    .values
                    .into_iter()
                    .flatten()
                    .next()?;
                Some(seconds * 1000.0)
            }
            ProbeKind::Metric => {
                let name = probe.metric.clone().unwrap_or_default();
                let aggregate =
                    Aggregate::parse(probe.aggregate.as_deref().unwrap_or("sum")).ok()?;
                if matches!(aggregate, Aggregate::Percentile(_)) {
                    let step = window.as_secs().max(1);
                    let last = (self.clock.wall_millis() / 1000).saturating_sub(LAG.as_secs());
                    let end = (last + 1) / step * step;
                    let query = Query {
                        name,
                        filters,
                        group_by: Vec::new(),
                        aggregate,
                        from: TimeSpec::At(end.saturating_sub(step) * 1000),
                        to: TimeSpec::At(end.saturating_sub(1) * 1000),
                        step_secs: step,
                    };
                    let result = self.store.query(&query).ok()?;
                    return result
                        .series
                        .into_iter()
                        .next()?
                        .values
                        .into_iter()
                        .flatten()
                        .next();
                }
                let values: Vec<f64> = self
                    .per_second(self.window_query(&name, filters, window))
                    .into_iter()
                    .filter_map(|(_, v)| v)
                    .collect();
                if values.is_empty() {
                    return None;
                }
                Some(match aggregate {
                    Aggregate::Sum => values.iter().sum(),
                    Aggregate::Avg => values.iter().sum::<f64>() / values.len() as f64,
                    Aggregate::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    Aggregate::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
                    Aggregate::Count => values.len() as f64,
                    Aggregate::Percentile(_) => unreachable!("handled above"),
                })
            }
        }
    }

    fn requests_per_second(&self, instances: &[String], from_sec: u64) -> Vec<(u64, f64)> {
        let housekeeping = TagFilter {
            key: "route".into(),
            values: HOUSEKEEPING_ROUTES.map(str::to_owned).to_vec(),
            negate: true,
        };
        // A second without a datapoint while instances push zeros means none.
        self.region_seconds(REQUESTS_METRIC, vec![housekeeping], instances, from_sec)
            .into_iter()
            .map(|(s, v)| (s, v.unwrap_or(0.0)))
            .collect()
    }

    fn connections_per_second(&self, instances: &[String], from_sec: u64) -> Vec<(u64, f64)> {
        // A gauge is pushed every step: a second without one is unknown, not 0.
        self.region_seconds(CONNECTIONS_METRIC, Vec::new(), instances, from_sec)
            .into_iter()
            .filter_map(|(s, v)| Some((s, v?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use casebook_kit::clock::{Clock, ManualClock};
    use casebook_kit::metrics_push::{Datapoint, MetricKind, PublishBatch};

    use super::*;

    fn probe(json: serde_json::Value) -> Probe {
        let mut p: Probe = serde_json::from_value(json).unwrap();
        p.validate("probes[0]").unwrap();
        p
    }

    fn push(store: &MetricsStore, at_ms: u64, instance: &str, status: &str, n: f64, secs: f64) {
        let service = if instance.starts_with("control") {
            "control"
        } else {
            "api"
        };
        let tags: BTreeMap<String, String> = [
            ("service", service),
            ("instance", instance),
            ("route", "/a"),
            ("status", status),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let mut dtags = tags.clone();
        dtags.remove("status");
        let metrics = vec![
            Datapoint::scalar(REQUESTS_METRIC, tags, at_ms, MetricKind::Counter, n),
            Datapoint::distribution(DURATION_METRIC, dtags, at_ms, vec![secs; n as usize]),
        ];
        store
            .ingest(&PublishBatch {
                tags: BTreeMap::new(),
                metrics,
            })
            .unwrap();
    }

    #[test]
    fn success_ratio_rate_and_latency_read_the_request_metrics() {
        let clock = ManualClock::new();
        let store = Arc::new(MetricsStore::new(clock.shared()));
        let measure = StoreMeasure::new(store.clone(), clock.shared());
        let ratio = probe(
            serde_json::json!({"kind": "success_ratio", "service": "api", "min": 0.99, "window": "10s"}),
        );
        assert_eq!(measure.measure(&ratio, ratio.window, None), None, "no data");
        for _ in 0..20 {
            push(&store, clock.wall_millis(), "api-1", "200", 99.0, 0.010);
            push(&store, clock.wall_millis(), "api-2", "503", 1.0, 0.500);
            // The control plane's own failures are no service's traffic.
            push(&store, clock.wall_millis(), "control-1", "500", 50.0, 0.001);
            clock.advance(Duration::from_secs(1));
        }
        let value = measure.measure(&ratio, ratio.window, None).unwrap();
        assert!((value - 0.99).abs() < 1e-9, "{value}");
        assert!(ratio.holds(Some(value)));
        let every = probe(
            serde_json::json!({"kind": "success_ratio", "service": "*", "min": 0.99, "window": "10s"}),
        );
        let value = measure.measure(&every, every.window, None).unwrap();
        assert!(
            (value - 0.99).abs() < 1e-9,
            "the control plane left out: {value}"
        );
        // Narrowed to one instance.
        let only = measure
            .measure(&ratio, ratio.window, Some(&["api-2".to_owned()]))
            .unwrap();
        assert_eq!(only, 0.0);
        let rate = probe(
            serde_json::json!({"kind": "request_rate", "service": "api", "min": 1, "window": "10s"}),
        );
        assert_eq!(measure.measure(&rate, rate.window, None), Some(100.0));
        let latency = probe(
            serde_json::json!({"kind": "latency", "service": "api", "percentile": 50, "max": 100, "window": "10s"}),
        );
        let p50 = measure.measure(&latency, latency.window, None).unwrap();
        assert!((9.0..=11.0).contains(&p50), "{p50}");
        let per_second =
            measure.requests_per_second(&["api-1".to_owned()], clock.wall_millis() / 1000 - 10);
        assert!(!per_second.is_empty());
        assert!(per_second.iter().all(|(_, v)| *v == 99.0), "{per_second:?}");
    }

    #[test]
    fn connections_per_second_sums_the_region_and_leaves_unknown_seconds_out() {
        let clock = ManualClock::new();
        let store = Arc::new(MetricsStore::new(clock.shared()));
        let measure = StoreMeasure::new(store.clone(), clock.shared());
        let from = clock.wall_millis() / 1000;
        let open = |at_ms: u64, instance: &str, n: f64| {
            let tags: BTreeMap<String, String> = [("service", "chat"), ("instance", instance)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            store
                .ingest(&PublishBatch {
                    tags: BTreeMap::new(),
                    metrics: vec![Datapoint::scalar(
                        CONNECTIONS_METRIC,
                        tags,
                        at_ms,
                        MetricKind::Gauge,
                        n,
                    )],
                })
                .unwrap();
        };
        for second in 0..6 {
            // Second 3 nobody pushed.
            if second != 3 {
                open(clock.wall_millis(), "chat-1", 40.0 - 8.0 * second as f64);
                open(clock.wall_millis(), "chat-2", 5.0);
                open(clock.wall_millis(), "other", 100.0);
            }
            clock.advance(Duration::from_secs(1));
        }
        clock.advance(LAG);
        let ids = ["chat-1".to_owned(), "chat-2".to_owned()];
        let series = measure.connections_per_second(&ids, from);
        let values: Vec<f64> = series.iter().map(|(_, v)| *v).collect();
        assert_eq!(values, [45.0, 37.0, 29.0, 13.0, 5.0]);
        assert!(!series.iter().any(|(s, _)| *s == from + 3), "{series:?}");
        assert!(measure.connections_per_second(&[], from).is_empty());
    }

    #[test]
    fn validation_names_the_field_and_tolerances_judge() {
        let bad = |json: serde_json::Value| {
            let mut p: Probe = serde_json::from_value(json).unwrap();
            p.validate("probes[1]").unwrap_err().key().to_owned()
        };
        assert_eq!(
            bad(serde_json::json!({"kind": "latency", "max": 1})),
            "probes[1].service"
        );
        assert_eq!(
            bad(serde_json::json!({"kind": "latency", "service": "a"})),
            "probes[1].min"
        );
        assert_eq!(
            bad(
                serde_json::json!({"kind": "success_ratio", "service": "a", "min": 0.99, "abort_min": 0.995})
            ),
            "probes[1].abort_min"
        );
        assert_eq!(
            bad(serde_json::json!({"kind": "metric", "min": 1})),
            "probes[1].metric"
        );
        assert_eq!(
            bad(
                serde_json::json!({"kind": "metric", "metric": "x", "aggregate": "p12x", "min": 1})
            ),
            "probes[1].aggregate"
        );
        assert_eq!(
            bad(
                serde_json::json!({"kind": "request_rate", "service": "a", "min": 1, "window": "0s"})
            ),
            "probes[1].window"
        );
        let p = probe(
            serde_json::json!({"kind": "latency", "service": "api", "max": 250, "abort_max": 1000}),
        );
        assert_eq!(p.name, "p99 latency api");
        assert_eq!(p.target(), "≤ 250 ms");
        assert!(p.holds(Some(200.0)) && !p.holds(Some(300.0)) && !p.holds(None));
        assert!(!p.breaches_abort(Some(900.0)) && p.breaches_abort(Some(1001.0)));
        assert_eq!(p.worse(Some(200.0), 300.0), 300.0);
        let r = probe(serde_json::json!({"kind": "success_ratio", "service": "api", "min": 0.999}));
        assert_eq!(r.worse(Some(0.9995), 0.98), 0.98);
    }
}
