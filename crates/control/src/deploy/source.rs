//! Where the judge's samples come from: each instance's request metrics in the
//! control plane's metrics store (what every instance's `serve_http` records,
//! tagged `service` and `instance`), one value per step; a fed source in tests.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

use super::judge::Measure;
use crate::metrics_store::MetricsStore;
use crate::metrics_store::query::{Aggregate, Query, TagFilter, TimeSpec};

/// The counter of answered requests (`status` tag).
pub const REQUESTS_METRIC: &str = "http_requests_total";
/// The histogram of request durations.
pub const DURATION_METRIC: &str = "http_request_duration_seconds";
/// Routes that are not the service's work.
const HOUSEKEEPING_ROUTES: [&str; 2] = ["/health", "/metrics"];

/// A span of samples: `[from_ms, to_ms)` in steps of `step_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from_ms: u64,
    pub to_ms: u64,
    pub step_secs: u64,
}

/// One instance's samples of one measure.
pub trait CanaryMetrics: Send + Sync + fmt::Debug + 'static {
    /// One value per step of `window` (NaN where there is none) of `measure` for
    /// `instance` of `service`.
    fn samples(&self, service: &str, instance: &str, measure: Measure, window: Window) -> Vec<f64>;
}

/// The samples read from the control plane's metrics store.
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    store: Arc<MetricsStore>,
}

/// One series of a query: its group-by tags and its values per step.
type TaggedSeries = (BTreeMap<String, String>, Vec<Option<f64>>);

impl StoreMetrics {
    pub fn new(store: Arc<MetricsStore>) -> Self {
        Self { store }
    }

    fn query(
        &self,
        name: &str,
        service: &str,
        instance: &str,
        aggregate: Aggregate,
        group_by: &[&str],
        window: Window,
    ) -> Vec<TaggedSeries> {
        let tag = |key: &str, value: &str| TagFilter {
            key: key.into(),
            values: vec![value.to_owned()],
            negate: false,
        };
        let query = Query {
            name: name.to_owned(),
            filters: vec![
                tag("service", service),
                tag("instance", instance),
                TagFilter {
                    key: "route".into(),
                    values: HOUSEKEEPING_ROUTES.map(str::to_owned).to_vec(),
                    negate: true,
                },
            ],
            group_by: group_by.iter().map(|g| (*g).to_owned()).collect(),
            aggregate,
            from: TimeSpec::At(window.from_ms),
            // The store's range is inclusive of its last second.
            to: TimeSpec::At(window.to_ms.saturating_sub(1000).max(window.from_ms)),
            step_secs: window.step_secs,
        };
        match self.store.query(&query) {
            Ok(result) => result
                .series
                .into_iter()
                .map(|s| (s.tags, s.values))
                .collect(),
            Err(error) => {
                tracing::debug!(%error, metric = name, instance, "canary metrics query refused");
                Vec::new()
            }
        }
    }
}

fn steps(window: Window) -> usize {
    let step_ms = window.step_secs.max(1) * 1000;
    (window.to_ms.saturating_sub(window.from_ms) / step_ms) as usize
}

impl CanaryMetrics for StoreMetrics {
    fn samples(&self, service: &str, instance: &str, measure: Measure, window: Window) -> Vec<f64> {
        let one = |name, aggregate| {
            self.query(name, service, instance, aggregate, &[], window)
                .into_iter()
                .next()
                .map(|(_, values)| values)
                .unwrap_or_default()
        };
        let values: Vec<Option<f64>> = match measure {
            Measure::LatencyMean => one(DURATION_METRIC, Aggregate::Avg),
            Measure::LatencyP99 => one(DURATION_METRIC, Aggregate::Percentile(99.0)),
            Measure::RequestRate => one(REQUESTS_METRIC, Aggregate::Sum),
            Measure::ErrorRate => {
                let by_status = self.query(
                    REQUESTS_METRIC,
                    service,
                    instance,
                    Aggregate::Sum,
                    &["status"],
                    window,
                );
                let len = by_status.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
                (0..len)
                    .map(|i| {
                        let (mut errors, mut all) = (0.0, 0.0);
                        let mut any = false;
                        for (tags, values) in &by_status {
                            if let Some(Some(v)) = values.get(i) {
                                any = true;
                                all += v;
                                if tags.get("status").is_some_and(|s| s.starts_with('5')) {
                                    errors += v;
                                }
                            }
                        }
                        (any && all > 0.0).then(|| errors / all)
                    })
                    .collect()
            }
        };
        let mut samples: Vec<f64> = values.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect();
        samples.truncate(steps(window).max(1));
        samples
    }
}

/// Samples set by hand, per (instance, measure): what tests feed the deployer.
#[derive(Debug, Default)]
pub struct FedMetrics {
    samples: Mutex<BTreeMap<(String, Measure), Vec<f64>>>,
}

impl FedMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on `instance` answers `values` for `measure`.
    pub fn set(&self, instance: &str, measure: Measure, values: Vec<f64>) {
        self.samples
            .lock()
            .insert((instance.to_owned(), measure), values);
    }
}

impl CanaryMetrics for FedMetrics {
    fn samples(
        &self,
        _service: &str,
        instance: &str,
        measure: Measure,
        _window: Window,
    ) -> Vec<f64> {
        self.samples
            .lock()
            .get(&(instance.to_owned(), measure))
            .cloned()
            .unwrap_or_default()
    }
}
