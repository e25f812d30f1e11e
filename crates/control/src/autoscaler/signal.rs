//! Utilisation: what the reactive rule compares with its marks.
//!
//! **Definition.** A service's utilisation is its *load* divided by what its live
//! instances can take: `load / (instances × capacity)`, where `capacity` is the
//! policy's per-instance figure in the signal's unit. So 1.0 means every instance
//! at its capacity, and dividing by the instances live *now* gives, right after a
//! scale-out, the utilisation the new count will see. The load comes from the request
//! metrics every instance's `serve_http` records (`kit::telemetry::TelemetryLayer`),
//! as pushed to the control plane's metrics store, for the series tagged
//! `service=<service>`, leaving out the `/health` and `/metrics` routes:
//!
//! | signal | load | capacity means |
//! |---|---|---|
//! | `request_rate` (default) | requests answered per second (`http_requests_total`), the mean over the window's seconds that have data | requests/s one instance serves at 100 % |
//! | `in_flight` | requests in flight on average, by Little's law: the summed durations of the requests answered (`http_request_duration_seconds`) per second of data | requests one instance serves at once at 100 % |
//!
//! **Window.** The policy's `window` (default 30 s), ending [`LAG`] before now so that
//! the seconds still being pushed do not read as a drop. A second counts as data when
//! the request counter has a datapoint for it: once a service has answered a
//! request, every process pushes its counter each second, zeros included, so an idle
//! service reads 0 while a service whose metrics stopped arriving reads nothing.
//!
//! **Not guaranteed.** A request is counted when it is answered, so a request still
//! running at the window's end is not (nor, for `in_flight`, its time so far); a
//! service that has never answered a request has no signal; only instances that push
//! to this control plane are measured.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::config::Policy;
use crate::metrics_store::MetricsStore;
use crate::metrics_store::query::{Aggregate, Query, TagFilter, TimeSpec};

/// How far behind now the signal's window ends: the current second is still being
/// pushed (every process pushes once a second).
pub const LAG: Duration = Duration::from_secs(2);

/// The counter of answered requests `serve_http` records.
pub const REQUESTS_METRIC: &str = "http_requests_total";
/// The histogram of request durations `serve_http` records.
pub const DURATION_METRIC: &str = "http_request_duration_seconds";
/// Routes that are not the service's work.
const HOUSEKEEPING_ROUTES: [&str; 2] = ["/health", "/metrics"];

/// What utilisation measures (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    #[default]
    RequestRate,
    InFlight,
}

/// One reading of a service's signal.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Reading {
    /// `load / (instances × capacity)`.
    pub utilisation: f64,
    /// The load, in the signal's unit.
    pub load: f64,
    /// The instances the load was divided over.
    pub instances: u32,
}

impl Reading {
    /// The reading of `load` spread over `instances` (at least one) of `policy`'s
    /// capacity.
    pub fn of(load: f64, instances: u32, policy: &Policy) -> Self {
        Self {
            utilisation: load / (f64::from(instances.max(1)) * policy.capacity),
            load,
            instances,
        }
    }
}

/// Where utilisation comes from: the metrics store in the control plane, a fed
/// value in tests.
pub trait UtilisationSignal: Send + Sync + fmt::Debug + 'static {
    /// `policy.service`'s utilisation over the policy's window ending now, with
    /// `instances` live instances; `None` when the window has no data (no action is
    /// taken on it).
    fn read(&self, policy: &Policy, instances: u32) -> Option<Reading>;
}

/// The signal read from the control plane's metrics store.
#[derive(Debug, Clone)]
pub struct StoreSignal {
    store: Arc<MetricsStore>,
}

impl StoreSignal {
    pub fn new(store: Arc<MetricsStore>) -> Self {
        Self { store }
    }

    /// The per-second values of `name` (summed over `service`'s series) in the
    /// window, one per second, `None` where there was no data.
    fn per_second(&self, name: &str, service: &str, window: Duration) -> Vec<Option<f64>> {
        let lag = LAG.as_secs();
        let query = Query {
            name: name.to_owned(),
            filters: vec![
                TagFilter {
                    key: "service".into(),
                    values: vec![service.to_owned()],
                    negate: false,
                },
                TagFilter {
                    key: "route".into(),
                    values: HOUSEKEEPING_ROUTES.map(str::to_owned).to_vec(),
                    negate: true,
                },
            ],
            group_by: Vec::new(),
            aggregate: Aggregate::Sum,
            from: TimeSpec::Ago(lag + window.as_secs().max(1) - 1),
            to: TimeSpec::Ago(lag),
            step_secs: 1,
        };
        match self.store.query(&query) {
            Ok(result) => result
                .series
                .into_iter()
                .next()
                .map(|series| series.values)
                .unwrap_or_default(),
            Err(error) => {
                // Only a series of another kind under this name gets here.
                tracing::warn!(%error, metric = name, service, "autoscaler signal query refused");
                Vec::new()
            }
        }
    }
}

impl UtilisationSignal for StoreSignal {
    fn read(&self, policy: &Policy, instances: u32) -> Option<Reading> {
        let requests = self.per_second(REQUESTS_METRIC, &policy.service, policy.window);
        let seconds = requests.iter().flatten().count();
        if seconds == 0 {
            return None;
        }
        let load = match policy.signal {
            SignalKind::RequestRate => requests.iter().flatten().sum::<f64>() / seconds as f64,
            SignalKind::InFlight => {
                // Busy time per second of data: the mean number of requests in flight.
                let busy: f64 = self
                    .per_second(DURATION_METRIC, &policy.service, policy.window)
                    .iter()
                    .flatten()
                    .sum();
                busy / seconds as f64
            }
        };
        Some(Reading::of(load, instances, policy))
    }
}

/// A signal set by hand: what tests (and a what-if) feed the autoscaler.
#[derive(Debug, Default)]
pub struct FedSignal {
    utilisation: Mutex<BTreeMap<String, f64>>,
}

impl FedSignal {
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on `service` reads `utilisation` (`None`: no data).
    pub fn set(&self, service: &str, utilisation: Option<f64>) {
        let mut map = self.utilisation.lock();
        match utilisation {
            Some(value) => map.insert(service.to_owned(), value),
            None => map.remove(service),
        };
    }
}

impl UtilisationSignal for FedSignal {
    fn read(&self, policy: &Policy, instances: u32) -> Option<Reading> {
        let utilisation = *self.utilisation.lock().get(&policy.service)?;
        let load = utilisation * f64::from(instances.max(1)) * policy.capacity;
        Some(Reading {
            utilisation,
            load,
            instances,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use casebook_kit::clock::{Clock, ManualClock};
    use casebook_kit::metrics_push::{Datapoint, MetricKind, PublishBatch};

    use super::*;

    fn policy(signal: SignalKind) -> Policy {
        serde_json::from_value(serde_json::json!({
            "service": "api", "max_instances": 4, "capacity": 10.0,
            "signal": signal, "window": "10s"
        }))
        .unwrap()
    }

    fn tags(route: &str, service: &str) -> BTreeMap<String, String> {
        [("service", service), ("route", route), ("instance", "i-1")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// Pushes, for the second `at_ms`, `requests` answered by `api` (each taking
    /// `secs`), 100 health checks, and 1000 requests of another service.
    fn push(store: &MetricsStore, at_ms: u64, requests: f64, secs: f64) {
        let mut metrics = vec![
            Datapoint::scalar(
                REQUESTS_METRIC,
                tags("/a", "api"),
                at_ms,
                MetricKind::Counter,
                requests,
            ),
            Datapoint::scalar(
                REQUESTS_METRIC,
                tags("/health", "api"),
                at_ms,
                MetricKind::Counter,
                100.0,
            ),
            Datapoint::scalar(
                REQUESTS_METRIC,
                tags("/a", "other"),
                at_ms,
                MetricKind::Counter,
                1000.0,
            ),
        ];
        if requests > 0.0 {
            let samples = vec![secs; requests as usize];
            metrics.push(Datapoint::distribution(
                DURATION_METRIC,
                tags("/a", "api"),
                at_ms,
                samples,
            ));
        }
        store
            .ingest(&PublishBatch {
                tags: BTreeMap::new(),
                metrics,
            })
            .unwrap();
    }

    #[test]
    fn request_rate_is_the_mean_rate_over_seconds_with_data_divided_by_capacity() {
        let clock = ManualClock::new();
        let store = Arc::new(MetricsStore::new(clock.shared()));
        let signal = StoreSignal::new(store.clone());
        assert_eq!(
            signal.read(&policy(SignalKind::RequestRate), 2),
            None,
            "no data"
        );
        // 20 s of 30 requests/s, with a gap of 3 s that is not read as zero.
        for second in 0..20 {
            if !(12..15).contains(&second) {
                push(&store, clock.wall_millis(), 30.0, 0.1);
            }
            clock.advance(Duration::from_secs(1));
        }
        let reading = signal.read(&policy(SignalKind::RequestRate), 2).unwrap();
        assert_eq!(reading.load, 30.0);
        assert_eq!(reading.utilisation, 30.0 / (2.0 * 10.0));
        // An idle service reads zero, not nothing.
        for _ in 0..20 {
            push(&store, clock.wall_millis(), 0.0, 0.0);
            clock.advance(Duration::from_secs(1));
        }
        assert_eq!(
            signal
                .read(&policy(SignalKind::RequestRate), 2)
                .unwrap()
                .load,
            0.0
        );
        // Pushes stop: after the window, the signal is a gap.
        clock.advance(Duration::from_secs(12));
        assert_eq!(signal.read(&policy(SignalKind::RequestRate), 2), None);
    }

    #[test]
    fn in_flight_is_busy_time_per_second() {
        let clock = ManualClock::new();
        let store = Arc::new(MetricsStore::new(clock.shared()));
        for _ in 0..15 {
            // 30 requests of 0.2 s a second: 6 in flight on average (Little's law).
            push(&store, clock.wall_millis(), 30.0, 0.2);
            clock.advance(Duration::from_secs(1));
        }
        let reading = StoreSignal::new(store)
            .read(&policy(SignalKind::InFlight), 3)
            .unwrap();
        assert!((reading.load - 6.0).abs() < 1e-9, "{reading:?}");
        assert!((reading.utilisation - 0.2).abs() < 1e-9, "{reading:?}");
    }

    #[test]
    fn the_seconds_still_being_pushed_are_not_read() {
        let clock = ManualClock::new();
        let store = Arc::new(MetricsStore::new(clock.shared()));
        push(&store, clock.wall_millis(), 30.0, 0.1);
        let signal = StoreSignal::new(store);
        assert_eq!(signal.read(&policy(SignalKind::RequestRate), 1), None);
        clock.advance(LAG);
        assert!(signal.read(&policy(SignalKind::RequestRate), 1).is_some());
    }

    #[test]
    fn a_fed_signal_reads_what_it_was_given() {
        let fed = FedSignal::new();
        let p = policy(SignalKind::RequestRate);
        assert_eq!(fed.read(&p, 2), None);
        fed.set("api", Some(0.5));
        assert_eq!(fed.read(&p, 2).unwrap().load, 10.0);
        fed.set("api", None);
        assert_eq!(fed.read(&p, 2), None);
    }
}
