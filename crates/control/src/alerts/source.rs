//! Where a rule's value comes from: the metrics store, or a fed value in tests.
//!
//! **Reduction over the window.** The store is queried for the rule's metric and
//! filter, combined across series by `fn` per `group_by` combination. The window
//! ends [`LAG`] before now (the seconds still being pushed would read as a drop),
//! and each kind is reduced as a Prometheus user would expect:
//!
//! | kind | value |
//! |---|---|
//! | counter | its rate per second, the mean over the window's seconds that have data (`rate()`); a gap is not read as zero |
//! | gauge | the newest second with data in the window (an instant value; the window is how stale it may be) |
//! | distribution | `fn` over the last *complete* step of `window` seconds aligned to the epoch (`p99`, `count` per second, …): the store merges buckets per step, and a sliding window's percentile cannot be made from per-second ones; so the value is up to one window plus the lag old |
//!
//! **Ratio.** With `ratio_of`, the numerator's value is divided by the
//! denominator's, group by group. A group the denominator has and the numerator
//! lacks reads 0 (a counter of errors exists only after the first error); a
//! denominator of 0 reads 0 (nothing asked, nothing failed); a group without a
//! denominator has no value. Then the value is multiplied by `scale`.
//!
//! **Rate of change** ([`change_per_second`]): the value now minus the value one
//! `change_window` earlier (the same reduction, its window shifted), over the change
//! window in seconds; a group missing at either end has no value.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use casebook_kit::clock::SharedClock;
use casebook_kit::metrics_push::MetricKind;
use parking_lot::Mutex;

use super::config::{Rule, store_query};
use crate::metrics_store::MetricsStore;
use crate::metrics_store::query::{Query, TimeSpec};

/// How far behind now a rule's window ends (every process pushes once a second).
pub const LAG: Duration = crate::autoscaler::signal::LAG;

/// An alert's identity within its rule: the group-by tags and their values.
pub type Labels = BTreeMap<String, String>;

/// The values of a rule, by group; empty when nothing matched.
pub type Values = BTreeMap<Labels, f64>;

/// Where rule values come from.
pub trait ValueSource: Send + Sync + fmt::Debug + 'static {
    /// `rule`'s value per group over its window ending `offset` earlier than the
    /// latest window (0: now); `Err` when the store refuses the query (the reason).
    fn read(&self, rule: &Rule, offset: Duration) -> Result<Values, String>;
}

/// The value per group of a rule, whatever its kind: the value itself for a
/// threshold rule, its change per second for a rate-of-change rule.
pub fn rule_values(source: &dyn ValueSource, rule: &Rule) -> Result<Values, String> {
    let now = source.read(rule, Duration::ZERO)?;
    match rule.change_window {
        Some(window) if rule.kind == super::config::RuleKind::RateOfChange => {
            let then = source.read(rule, window)?;
            Ok(change_per_second(&now, &then, window))
        }
        _ => Ok(now),
    }
}

/// `(now − then) / window` per group present at both ends.
pub fn change_per_second(now: &Values, then: &Values, window: Duration) -> Values {
    let secs = window.as_secs_f64().max(f64::MIN_POSITIVE);
    now.iter()
        .filter_map(|(labels, v)| {
            then.get(labels)
                .map(|before| (labels.clone(), (v - before) / secs))
        })
        .collect()
}

/// The rule values read from the control plane's metrics store.
#[derive(Debug, Clone)]
pub struct StoreSource {
    store: Arc<MetricsStore>,
    clock: SharedClock,
}

impl StoreSource {
    /// Reads `store`; `clock` is the store's (the aligned steps of distributions
    /// are cut on it).
    pub fn new(store: Arc<MetricsStore>, clock: SharedClock) -> Self {
        Self { store, clock }
    }

    /// One value (numerator or denominator) per group.
    fn one(&self, mut query: Query, window: Duration, offset: Duration) -> Result<Values, String> {
        let end_ago = LAG.as_secs() + offset.as_secs();
        let window = window.as_secs().max(1);
        query.from = TimeSpec::Ago(end_ago + window - 1);
        query.to = TimeSpec::Ago(end_ago);
        query.step_secs = 1;
        let result = self.store.query(&query).map_err(|e| e.to_string())?;
        let reduce: fn(&[Option<f64>]) -> Option<f64> = match result.kind {
            None => return Ok(Values::new()),
            Some(MetricKind::Counter) => mean_of_present,
            Some(MetricKind::Gauge) => newest_present,
            Some(MetricKind::Distribution) => return self.aligned(query, window, end_ago),
        };
        Ok(result
            .series
            .into_iter()
            .filter_map(|s| reduce(&s.values).map(|v| (s.tags, v)))
            .collect())
    }

    /// The last complete epoch-aligned step of `window` seconds ending at least
    /// `end_ago` seconds before now.
    fn aligned(&self, mut query: Query, window: u64, end_ago: u64) -> Result<Values, String> {
        let end = (self.clock.wall_millis() / 1000).saturating_sub(end_ago);
        let k = (end + 1) / window;
        if k == 0 {
            return Ok(Values::new());
        }
        query.from = TimeSpec::At((k - 1) * window * 1000);
        query.to = TimeSpec::At((k * window - 1) * 1000);
        query.step_secs = window;
        let result = self.store.query(&query).map_err(|e| e.to_string())?;
        Ok(result
            .series
            .into_iter()
            .filter_map(|s| s.values.last().copied().flatten().map(|v| (s.tags, v)))
            .collect())
    }
}

fn mean_of_present(values: &[Option<f64>]) -> Option<f64> {
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    (!present.is_empty()).then(|| present.iter().sum::<f64>() / present.len() as f64)
}

fn newest_present(values: &[Option<f64>]) -> Option<f64> {
    values.iter().rev().flatten().next().copied()
}

impl ValueSource for StoreSource {
    fn read(&self, rule: &Rule, offset: Duration) -> Result<Values, String> {
        let numerator = store_query(
            &rule.metric,
            &rule.filter,
            &rule.function,
            &rule.group_by,
            "",
            "",
        )
        .map_err(|e| e.to_string())?;
        let mut values = self.one(numerator, rule.window, offset)?;
        if let Some(denominator) = &rule.ratio_of {
            let metric = denominator.metric.as_deref().unwrap_or(&rule.metric);
            let query = store_query(
                metric,
                &denominator.filter,
                &rule.function,
                &rule.group_by,
                "",
                "ratio_of.",
            )
            .map_err(|e| e.to_string())?;
            let denominators = self.one(query, rule.window, offset)?;
            values = ratio(&values, &denominators);
        }
        Ok(values
            .into_iter()
            .map(|(labels, v)| (labels, v * rule.scale))
            .collect())
    }
}

/// Numerator over denominator, group by group (see the module docs).
pub fn ratio(numerators: &Values, denominators: &Values) -> Values {
    denominators
        .iter()
        .map(|(labels, den)| {
            let num = numerators.get(labels).copied().unwrap_or(0.0);
            let value = if *den == 0.0 { 0.0 } else { num / den };
            (labels.clone(), value)
        })
        .collect()
}

/// Values set by hand, by rule name: what tests feed the engine.
#[derive(Debug, Default)]
pub struct FedSource {
    now: Mutex<BTreeMap<String, Result<Values, String>>>,
    then: Mutex<BTreeMap<String, Values>>,
}

impl FedSource {
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on `rule` reads `values` (empty: no data).
    pub fn set(&self, rule: &str, values: Values) {
        self.now.lock().insert(rule.to_owned(), Ok(values));
    }

    /// From now on `rule` reads the single ungrouped `value` (`None`: no data).
    pub fn set_one(&self, rule: &str, value: Option<f64>) {
        let values = value.map(|v| (Labels::new(), v)).into_iter().collect();
        self.set(rule, values);
    }

    /// From now on reading `rule` fails with `reason`.
    pub fn refuse(&self, rule: &str, reason: &str) {
        self.now
            .lock()
            .insert(rule.to_owned(), Err(reason.to_owned()));
    }

    /// What `rule` reads one change window earlier.
    pub fn set_then(&self, rule: &str, values: Values) {
        self.then.lock().insert(rule.to_owned(), values);
    }
}

impl ValueSource for FedSource {
    fn read(&self, rule: &Rule, offset: Duration) -> Result<Values, String> {
        if offset > Duration::ZERO {
            return Ok(self
                .then
                .lock()
                .get(&rule.name)
                .cloned()
                .unwrap_or_default());
        }
        self.now
            .lock()
            .get(&rule.name)
            .cloned()
            .unwrap_or_else(|| Ok(Values::new()))
    }
}

#[cfg(test)]
mod tests {
    use casebook_kit::clock::{Clock, ManualClock};
    use casebook_kit::metrics_push::{Datapoint, PublishBatch};

    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn push(store: &MetricsStore, metrics: Vec<Datapoint>) {
        store
            .ingest(&PublishBatch {
                tags: BTreeMap::new(),
                metrics,
            })
            .unwrap();
    }

    fn rule(json: serde_json::Value) -> Rule {
        let mut base =
            serde_json::json!({"name": "r", "op": "above", "threshold": 1.0, "window": "10s"});
        base.as_object_mut()
            .unwrap()
            .extend(json.as_object().unwrap().clone());
        let rule: Rule = serde_json::from_value(base).unwrap();
        rule.validate("").unwrap();
        rule
    }

    /// 20 s of 100 requests a second of `api` on two instances, 3 of them 500s
    /// on `i-1` only; a gap of 3 s in the middle.
    fn traffic(clock: &ManualClock, store: &MetricsStore) {
        for second in 0..20 {
            if !(8..11).contains(&second) {
                let at = clock.wall_millis();
                let counter = |t: Labels, v: f64| {
                    Datapoint::scalar("http_requests_total", t, at, MetricKind::Counter, v)
                };
                push(
                    store,
                    vec![
                        counter(
                            tags(&[("service", "api"), ("instance", "i-1"), ("status", "200")]),
                            47.0,
                        ),
                        counter(
                            tags(&[("service", "api"), ("instance", "i-1"), ("status", "500")]),
                            3.0,
                        ),
                        counter(
                            tags(&[("service", "api"), ("instance", "i-2"), ("status", "200")]),
                            50.0,
                        ),
                        Datapoint::scalar(
                            "live",
                            tags(&[("service", "api")]),
                            at,
                            MetricKind::Gauge,
                            f64::from(second),
                        ),
                    ],
                );
            }
            clock.advance(Duration::from_secs(1));
        }
    }

    #[test]
    fn a_counter_reads_its_mean_rate_and_a_ratio_divides_group_by_group() {
        let clock = ManualClock::new();
        let store = Arc::new(MetricsStore::new(clock.shared()));
        traffic(&clock, &store);
        let source = StoreSource::new(store, clock.shared());
        let rate =
            rule(serde_json::json!({"metric": "http_requests_total", "filter": "service:api"}));
        assert_eq!(
            source.read(&rate, Duration::ZERO).unwrap(),
            Values::from([(Labels::new(), 100.0)])
        );
        let errors = rule(serde_json::json!({
            "metric": "http_requests_total", "filter": "service:api,status:500|503",
            "ratio_of": {"filter": "service:api"}, "scale": 100.0, "group_by": ["instance"]
        }));
        let values = source.read(&errors, Duration::ZERO).unwrap();
        assert_eq!(values[&tags(&[("instance", "i-1")])], 6.0, "3 of 50, in %");
        assert_eq!(
            values[&tags(&[("instance", "i-2")])],
            0.0,
            "no error series: 0, not nothing"
        );
        let nothing =
            rule(serde_json::json!({"metric": "http_requests_total", "filter": "service:web"}));
        assert!(source.read(&nothing, Duration::ZERO).unwrap().is_empty());
    }

    #[test]
    fn a_gauge_reads_its_newest_value_and_its_change_per_second() {
        let clock = ManualClock::new();
        let store = Arc::new(MetricsStore::new(clock.shared()));
        traffic(&clock, &store);
        let source = StoreSource::new(store, clock.shared());
        let live = rule(
            serde_json::json!({"metric": "live", "kind": "rate_of_change", "change_window": "5s"}),
        );
        // Now is second 20; the window ends LAG (2 s) back, at second 18.
        assert_eq!(
            source.read(&live, Duration::ZERO).unwrap()[&Labels::new()],
            18.0
        );
        assert_eq!(
            source.read(&live, Duration::from_secs(5)).unwrap()[&Labels::new()],
            13.0
        );
        assert_eq!(rule_values(&source, &live).unwrap()[&Labels::new()], 1.0);
    }

    #[test]
    fn a_percentile_reads_the_last_complete_aligned_step() {
        let clock = ManualClock::new();
        let store = Arc::new(MetricsStore::new(clock.shared()));
        // 2026-01-01T00:00:00Z is a multiple of 10 s: seconds 0-9 are one step.
        for second in 0..13u32 {
            let sample = if second < 10 { 0.1 } else { 0.9 };
            push(
                &store,
                vec![Datapoint::distribution(
                    "latency",
                    tags(&[("service", "api")]),
                    clock.wall_millis(),
                    vec![sample; 100],
                )],
            );
            clock.advance(Duration::from_secs(1));
        }
        let source = StoreSource::new(store, clock.shared());
        let p99 = rule(serde_json::json!({"metric": "latency", "fn": "p99", "scale": 1000.0}));
        // Now 13 s, the window ends at 11: seconds 10-19 are incomplete, 0-9 count.
        let value = source.read(&p99, Duration::ZERO).unwrap()[&Labels::new()];
        assert!((value - 100.0).abs() <= 100.0 * 0.07, "{value}");
        let refused = rule(serde_json::json!({"metric": "http_requests_total", "fn": "p99"}));
        assert!(
            source.read(&refused, Duration::ZERO).unwrap().is_empty(),
            "nothing matched"
        );
    }

    #[test]
    fn change_needs_both_ends() {
        let a = tags(&[("i", "a")]);
        let b = tags(&[("i", "b")]);
        let now = Values::from([(a.clone(), 10.0), (b.clone(), 4.0)]);
        let then = Values::from([(a.clone(), 4.0)]);
        let change = change_per_second(&now, &then, Duration::from_secs(3));
        assert_eq!(change, Values::from([(a, 2.0)]));
    }
}
