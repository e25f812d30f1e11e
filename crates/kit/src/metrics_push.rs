//! The metrics publish API's wire types, and the pusher that feeds it.
//!
//! Every instance pushes its metrics to the control plane's dimensional store
//! (`POST {control}/api/metrics/publish`) once a step. A batch carries common tags
//! (such as `node`) and datapoints; each datapoint is a name, its own tags, a
//! timestamp in milliseconds and a value of one kind:
//!
//! ```json
//! {"tags": {"node": "i-1"},
//!  "metrics": [
//!    {"name": "http_requests_total", "tags": {"route": "/a"}, "timestamp": 1767225600000,
//!     "kind": "counter", "value": 3},
//!    {"name": "latency", "timestamp": 1767225600000, "kind": "distribution",
//!     "values": [0.012, 0.020]}]}
//! ```
//!
//! - `gauge`: a level; `value` required.
//! - `counter`: a non-negative delta since the previous push; `value` required.
//! - `distribution`: samples (latencies, sizes), each `>= 0`; `value` (one sample)
//!   or `values` (several), not both.
//!
//! [`PublishBatch::validate`] is the one definition of a well-formed batch: the store
//! runs it before it touches anything, so a bad batch is rejected whole and the error
//! names the field at fault (`metrics[3].tags.zone`).
//!
//! [`MetricsPusher`] turns [`MetricsSnapshot`]s into batches ([`next_batch`], a pure
//! function) and posts them. Guarantees: counters become deltas, and a delta is only
//! forgotten once the store has acknowledged it — a failed push leaves it in the
//! cumulative counter, so the next push carries it (no queue, so nothing grows). Not
//! guaranteed: histogram samples and gauge readings of a failed push are lost (counted
//! in `metrics_push_failures_total`); a counter's first push carries its whole
//! cumulative value.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use http::Method;
use metrics::Key;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::{SharedClock, SystemClock};
use crate::http_client::{Reachability, ReachabilityChange};
use crate::resilience::stack::{ResilienceConfig, ResilientClient};
use crate::telemetry::{MetricsRegistry, MetricsSnapshot};

/// The path of the publish API on the control plane.
pub const PUBLISH_PATH: &str = "/api/metrics/publish";
/// The longest metric name, tag key or tag value, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// The most tags one datapoint may carry, common tags included.
pub const MAX_TAGS: usize = 24;
/// The most datapoint entries in one batch.
pub const MAX_BATCH_ENTRIES: usize = 50_000;
/// The most values (a distribution entry may carry several) in one batch.
pub const MAX_BATCH_VALUES: usize = 200_000;
/// The most samples of one histogram the pusher sends per push; the rest are
/// dropped and counted, so one busy histogram cannot make a batch oversized.
pub const MAX_SAMPLES_PER_HISTOGRAM: usize = 10_000;
/// Characters a name or tag may not contain: the query syntax's separators.
pub const RESERVED_CHARS: [char; 4] = [',', ':', '|', '!'];
/// The tag key that would be ambiguous with the metric name.
pub const RESERVED_TAG: &str = "name";

/// What a datapoint measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// A level; within a one-second step the store keeps the largest value.
    Gauge,
    /// A non-negative delta; within a step the store sums them (a rate per second).
    Counter,
    /// Samples whose count, sum, extremes and percentiles the store keeps.
    Distribution,
}

impl MetricKind {
    /// The kind's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gauge => "gauge",
            Self::Counter => "counter",
            Self::Distribution => "distribution",
        }
    }
}

/// One batch for the publish API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishBatch {
    /// Tags added to every datapoint; a datapoint's own tag of the same key wins.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The datapoints.
    pub metrics: Vec<Datapoint>,
}

/// One measurement (or, for a distribution, several samples) of one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Datapoint {
    /// The metric name.
    pub name: String,
    /// The datapoint's own tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// What the value measures.
    pub kind: MetricKind,
    /// The value (gauge, counter) or a single sample (distribution).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Several samples (distribution only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<f64>>,
}

impl Datapoint {
    /// A gauge or counter datapoint.
    pub fn scalar(
        name: impl Into<String>,
        tags: BTreeMap<String, String>,
        timestamp: u64,
        kind: MetricKind,
        value: f64,
    ) -> Self {
        Self {
            name: name.into(),
            tags,
            timestamp,
            kind,
            value: Some(value),
            values: None,
        }
    }

    /// A distribution datapoint carrying `samples`.
    pub fn distribution(
        name: impl Into<String>,
        tags: BTreeMap<String, String>,
        timestamp: u64,
        samples: Vec<f64>,
    ) -> Self {
        Self {
            name: name.into(),
            tags,
            timestamp,
            kind: MetricKind::Distribution,
            value: None,
            values: Some(samples),
        }
    }

    /// The values this datapoint carries (one for gauges and counters).
    pub fn samples(&self) -> &[f64] {
        match (&self.value, &self.values) {
            (Some(v), _) => std::slice::from_ref(v),
            (None, Some(vs)) => vs,
            (None, None) => &[],
        }
    }
}

/// Why a batch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The batch exceeds [`MAX_BATCH_ENTRIES`] or [`MAX_BATCH_VALUES`].
    #[error("batch too large: {what} {got} exceeds the limit of {limit}")]
    TooLarge {
        what: &'static str,
        got: usize,
        limit: usize,
    },
    /// One field is malformed.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

impl BatchError {
    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl PublishBatch {
    /// Checks the whole batch; returns the number of values it carries.
    pub fn validate(&self) -> Result<usize, BatchError> {
        if self.metrics.len() > MAX_BATCH_ENTRIES {
            return Err(BatchError::TooLarge {
                what: "datapoints",
                got: self.metrics.len(),
                limit: MAX_BATCH_ENTRIES,
            });
        }
        for (key, value) in &self.tags {
            check_tag(|| "tags".to_owned(), key, value)?;
        }
        let mut values = 0usize;
        for (i, dp) in self.metrics.iter().enumerate() {
            values += validate_datapoint(i, dp, &self.tags)?;
            if values > MAX_BATCH_VALUES {
                return Err(BatchError::TooLarge {
                    what: "values",
                    got: values,
                    limit: MAX_BATCH_VALUES,
                });
            }
        }
        Ok(values)
    }
}

fn validate_datapoint(
    i: usize,
    dp: &Datapoint,
    common: &BTreeMap<String, String>,
) -> Result<usize, BatchError> {
    let at = |field: &str| format!("metrics[{i}].{field}");
    check_text(&dp.name).map_err(|reason| BatchError::invalid(at("name"), reason))?;
    for (key, value) in &dp.tags {
        check_tag(|| at("tags"), key, value)?;
    }
    let tag_count = dp.tags.len() + common.keys().filter(|k| !dp.tags.contains_key(*k)).count();
    if tag_count > MAX_TAGS {
        return Err(BatchError::invalid(
            at("tags"),
            format!("{tag_count} tags (common tags included) exceed the limit of {MAX_TAGS}"),
        ));
    }
    match (dp.kind, &dp.value, &dp.values) {
        (_, Some(_), Some(_)) => Err(BatchError::invalid(
            at("values"),
            "give either value or values, not both",
        )),
        (MetricKind::Gauge | MetricKind::Counter, _, Some(_)) => Err(BatchError::invalid(
            at("values"),
            format!("a {} takes one value, not values", dp.kind.as_str()),
        )),
        (_, None, None) => Err(BatchError::invalid(at("value"), "missing value")),
        (MetricKind::Distribution, None, Some(vs)) if vs.is_empty() => {
            Err(BatchError::invalid(at("values"), "no samples"))
        }
        (kind, value, values) => {
            let field = if value.is_some() { "value" } else { "values" };
            for v in value.iter().chain(values.iter().flatten()) {
                if !v.is_finite() {
                    return Err(BatchError::invalid(at(field), "not a finite number"));
                }
                if *v < 0.0 && kind != MetricKind::Gauge {
                    return Err(BatchError::invalid(
                        at(field),
                        format!("a {} value must be >= 0, got {v}", kind.as_str()),
                    ));
                }
            }
            Ok(dp.samples().len())
        }
    }
}

/// `at` names the tag map; it is only called to build an error, so the path of a
/// valid batch allocates nothing.
fn check_tag(at: impl Fn() -> String, key: &str, value: &str) -> Result<(), BatchError> {
    check_text(key).map_err(|reason| BatchError::invalid(at(), format!("tag key: {reason}")))?;
    if key == RESERVED_TAG {
        return Err(BatchError::invalid(
            format!("{}.{key}", at()),
            "`name` is reserved for the metric name",
        ));
    }
    check_text(value).map_err(|reason| BatchError::invalid(format!("{}.{key}", at()), reason))
}

/// Bytes that may start a forbidden character: ASCII controls, the reserved
/// separators, and 0xC2 (the lead byte of the C1 controls U+0080..U+009F).
const SUSPECT_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[0x7f] = true;
    table[0xc2] = true;
    let mut i = 0;
    while i < RESERVED_CHARS.len() {
        table[RESERVED_CHARS[i] as usize] = true;
        i += 1;
    }
    table
};

fn check_text(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if text.len() > MAX_NAME_LEN {
        return Err(format!(
            "{} bytes exceed the limit of {MAX_NAME_LEN}",
            text.len()
        ));
    }
    // A byte scan first: this runs for every datapoint of every batch.
    if !text.bytes().any(|b| SUSPECT_BYTES[usize::from(b)]) {
        return Ok(());
    }
    if let Some(c) = text
        .chars()
        .find(|c| RESERVED_CHARS.contains(c) || c.is_control())
    {
        return Err(format!("contains the reserved character {c:?}"));
    }
    Ok(())
}

/// Makes a name or tag from the `metrics` facade valid for the wire: reserved and
/// control characters become `_`, overlong text is cut at a character boundary.
pub fn sanitize(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| {
            if RESERVED_CHARS.contains(&c) || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    if out.len() > MAX_NAME_LEN {
        let mut cut = MAX_NAME_LEN;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

/// What the pusher remembers between pushes: each counter's cumulative value as of
/// the last acknowledged push.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PushState {
    counters: HashMap<Key, u64>,
}

/// The batch for `snapshot` taken at `now_ms`, and the state to keep if the store
/// acknowledges it. Pure: the caller decides whether to keep the new state.
///
/// Counters become deltas against `previous` (a counter seen for the first time, or
/// one that went backwards because it was reset, counts from zero); gauges are sent
/// as they stand; histogram samples become one distribution datapoint each, at most
/// [`MAX_SAMPLES_PER_HISTOGRAM`] samples (the number cut is returned). Tags the
/// facade allows but the wire does not are [`sanitize`]d; a label called `name` is
/// sent as `name_`; labels beyond [`MAX_TAGS`] (common tags included) are left off.
pub fn next_batch(
    previous: &PushState,
    snapshot: &MetricsSnapshot,
    now_ms: u64,
    common_tags: &BTreeMap<String, String>,
) -> (PublishBatch, PushState, usize) {
    let mut metrics = Vec::with_capacity(
        snapshot.counters.len() + snapshot.gauges.len() + snapshot.histograms.len(),
    );
    let mut state = PushState {
        counters: HashMap::with_capacity(snapshot.counters.len()),
    };
    // Common tags count against the limit too; labels beyond it are left off.
    let max_labels = MAX_TAGS.saturating_sub(common_tags.len());
    for (key, cumulative) in &snapshot.counters {
        let before = previous.counters.get(key).copied().unwrap_or(0);
        let delta = if *cumulative >= before {
            cumulative - before
        } else {
            *cumulative
        };
        state.counters.insert(key.clone(), *cumulative);
        let (name, tags) = wire_identity(key, max_labels);
        metrics.push(Datapoint::scalar(
            name,
            tags,
            now_ms,
            MetricKind::Counter,
            delta as f64,
        ));
    }
    for (key, value) in &snapshot.gauges {
        if !value.is_finite() {
            continue;
        }
        let (name, tags) = wire_identity(key, max_labels);
        metrics.push(Datapoint::scalar(
            name,
            tags,
            now_ms,
            MetricKind::Gauge,
            *value,
        ));
    }
    let mut samples_cut = 0;
    for (key, samples) in &snapshot.histograms {
        let kept: Vec<f64> = samples
            .iter()
            .copied()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .take(MAX_SAMPLES_PER_HISTOGRAM)
            .collect();
        samples_cut += samples.len() - kept.len();
        if kept.is_empty() {
            continue;
        }
        let (name, tags) = wire_identity(key, max_labels);
        metrics.push(Datapoint::distribution(name, tags, now_ms, kept));
    }
    let tags = common_tags
        .iter()
        .filter(|(k, _)| k.as_str() != RESERVED_TAG)
        .map(|(k, v)| (sanitize(k), sanitize(v)))
        .collect();
    (PublishBatch { tags, metrics }, state, samples_cut)
}

fn wire_identity(key: &Key, max_labels: usize) -> (String, BTreeMap<String, String>) {
    let tags = key
        .labels()
        .take(max_labels)
        .map(|label| {
            let k = if label.key() == RESERVED_TAG {
                "name_".to_owned()
            } else {
                sanitize(label.key())
            };
            (k, sanitize(label.value()))
        })
        .collect();
    (sanitize(key.name()), tags)
}

/// Pushes the process's metrics to the control plane every step.
#[derive(Debug)]
pub struct MetricsPusher {
    publish_url: String,
    /// The control plane's token, sent as `Authorization: Bearer`.
    token: Option<http::HeaderValue>,
    common_tags: BTreeMap<String, String>,
    step: Duration,
    registry: MetricsRegistry,
    clock: SharedClock,
    client: ResilientClient,
    state: PushState,
}

/// The dependency name of the metrics store, for its breaker and metrics.
pub const DEPENDENCY: &str = "metrics-store";

/// What one push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushOutcome {
    /// Datapoint entries sent.
    pub datapoints: usize,
    /// Histogram samples cut by [`MAX_SAMPLES_PER_HISTOGRAM`].
    pub samples_cut: usize,
}

impl MetricsPusher {
    /// A pusher for the process-wide registry ([`crate::telemetry::metrics`]) on the
    /// system clock, pushing every second.
    pub fn new(control_url: &str, common_tags: BTreeMap<String, String>) -> Self {
        Self {
            publish_url: format!("{}{PUBLISH_PATH}", control_url.trim_end_matches('/')),
            token: None,
            common_tags,
            step: Duration::from_secs(1),
            registry: crate::telemetry::metrics().registry().clone(),
            clock: SystemClock::shared(),
            client: metrics_store_client(),
            state: PushState::default(),
        }
    }

    /// Pushes every `step` (at least 100 ms).
    pub fn with_step(mut self, step: Duration) -> Self {
        self.step = step.max(Duration::from_millis(100));
        self
    }

    /// Sends `token` (the control plane's) with every push; `None` sends none.
    pub fn with_token(mut self, token: Option<&str>) -> Self {
        self.token = token.and_then(crate::http_client::bearer);
        self
    }

    /// Reads this registry instead of the process-wide one.
    pub fn with_registry(mut self, registry: MetricsRegistry) -> Self {
        self.registry = registry;
        self
    }

    /// Stamps datapoints with this clock's wall time.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Takes a snapshot and posts it through the `metrics-store` resilience stack
    /// (timeout, breaker, bulkhead; never retried: the next push is the retry). On
    /// failure the counter state is kept, so the deltas ride on the next push.
    pub async fn push_once(&mut self) -> Result<PushOutcome, tower::BoxError> {
        let snapshot = self.registry.snapshot();
        let (batch, state, samples_cut) = next_batch(
            &self.state,
            &snapshot,
            self.clock.wall_millis(),
            &self.common_tags,
        );
        if samples_cut > 0 {
            metrics::counter!("metrics_push_samples_cut_total").increment(samples_cut as u64);
        }
        if batch.metrics.is_empty() {
            self.state = state;
            return Ok(PushOutcome {
                datapoints: 0,
                samples_cut,
            });
        }
        let mut request = http::Request::post(&self.publish_url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(bytes::Bytes::from(serde_json::to_vec(&batch)?))?;
        if let Some(token) = &self.token {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, token.clone());
        }
        let response = self.client.send(request).await?;
        if !response.status().is_success() {
            return Err(crate::http_client::HttpError::Status {
                method: Method::POST,
                url: self.publish_url.clone(),
                status: response.status(),
                body: String::from_utf8_lossy(response.body()).into_owned(),
            }
            .into());
        }
        self.state = state;
        Ok(PushOutcome {
            datapoints: batch.metrics.len(),
            samples_cut,
        })
    }

    /// Pushes every step until `cancel` fires. Failures are counted
    /// (`metrics_push_failures_total`) and back off: after *n* failures in a row the
    /// next push waits [`push_backoff`] (doubling, at most [`MAX_PUSH_BACKOFF`]).
    /// The store going away and coming back is logged once each ([`Reachability`]).
    pub fn run(mut self, cancel: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(self.step);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut store = Reachability::default();
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                match self.push_once().await {
                    Ok(_) => {
                        if let Some(ReachabilityChange::ReachableAgain { failed_calls }) =
                            store.succeeded()
                        {
                            tracing::info!(url = %self.publish_url, failed_calls, "control plane reachable again: metrics push resumed");
                        }
                    }
                    Err(err) => {
                        metrics::counter!("metrics_push_failures_total").increment(1);
                        if store.failed().is_some() {
                            tracing::warn!(url = %self.publish_url, %err, "control plane unreachable: metrics push failed; backing off");
                        } else {
                            tracing::debug!(url = %self.publish_url, %err, "metrics push failed again");
                        }
                        let wait = push_backoff(self.step, store.consecutive_failures());
                        tokio::select! {
                            () = cancel.cancelled() => break,
                            () = tokio::time::sleep(wait) => {}
                        }
                        ticks.reset();
                    }
                }
            }
        })
    }

    /// Starts a pusher of the process's metrics to `control_url` every `step`.
    pub fn spawn(
        control_url: &str,
        common_tags: BTreeMap<String, String>,
        step: Duration,
        cancel: CancellationToken,
    ) -> JoinHandle<()> {
        Self::new(control_url, common_tags)
            .with_step(step)
            .run(cancel)
    }
}

/// The longest wait between pushes while the store fails.
pub const MAX_PUSH_BACKOFF: Duration = Duration::from_secs(30);

/// The extra wait after `failures` (≥ 1) failed pushes in a row: the step doubled
/// per failure beyond the first, at most [`MAX_PUSH_BACKOFF`].
pub fn push_backoff(step: Duration, failures: u64) -> Duration {
    let doublings = u32::try_from(failures.saturating_sub(1).min(16)).unwrap_or(16);
    step.saturating_mul(1 << doublings).min(MAX_PUSH_BACKOFF)
}

/// The process's client for the metrics store: a 2 s timeout, the standard
/// breaker, one push in flight at a time plus one queued.
fn metrics_store_client() -> ResilientClient {
    let mut config = ResilienceConfig::default();
    config.timeout.default = Duration::from_secs(2);
    config.bulkhead.max_concurrent = 1;
    config.bulkhead.max_queue = 1;
    ResilientClient::for_dependency(DEPENDENCY, &config)
        .expect("the metrics-store resilience config is valid")
}

/// The common tags of one node, for [`MetricsPusher::spawn`].
pub fn node_tags(node: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("node".to_owned(), sanitize(node))])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn counters_become_deltas_and_gauges_and_histograms_pass_through() {
        let registry = MetricsRegistry::default();
        metrics::with_local_recorder(&registry, || {
            metrics::counter!("requests", "route" => "/a").increment(5);
            metrics::gauge!("depth").set(2.5);
            metrics::histogram!("latency").record(0.5);
            metrics::histogram!("latency").record(1.5);
        });
        let common = tags(&[("node", "n1")]);
        let (batch, state, cut) =
            next_batch(&PushState::default(), &registry.snapshot(), 1000, &common);
        assert_eq!(cut, 0);
        assert_eq!(batch.tags, common);
        assert_eq!(batch.validate(), Ok(4));
        let find = |b: &PublishBatch, name: &str| {
            b.metrics.iter().find(|d| d.name == name).cloned().unwrap()
        };
        let requests = find(&batch, "requests");
        assert_eq!(
            (requests.kind, requests.value, requests.timestamp),
            (MetricKind::Counter, Some(5.0), 1000)
        );
        assert_eq!(requests.tags, tags(&[("route", "/a")]));
        assert_eq!(find(&batch, "depth").value, Some(2.5));
        assert_eq!(find(&batch, "latency").values, Some(vec![0.5, 1.5]));

        metrics::with_local_recorder(&registry, || {
            metrics::counter!("requests", "route" => "/a").increment(2);
        });
        let (batch, state2, _) = next_batch(&state, &registry.snapshot(), 2000, &common);
        assert_eq!(find(&batch, "requests").value, Some(2.0), "a delta");
        assert!(
            batch.metrics.iter().all(|d| d.name != "latency"),
            "drained histograms send nothing"
        );
        // The previous state is untouched (pure): re-running from it repeats the delta
        // that a failed push would have lost.
        let (again, _, _) = next_batch(&state, &registry.snapshot(), 3000, &common);
        assert_eq!(find(&again, "requests").value, Some(2.0));
        let (after, _, _) = next_batch(&state2, &registry.snapshot(), 3000, &common);
        assert_eq!(find(&after, "requests").value, Some(0.0));
    }

    #[test]
    fn a_reset_counter_counts_from_zero() {
        let key = Key::from_name("c");
        let previous = PushState {
            counters: HashMap::from([(key.clone(), 100)]),
        };
        let snapshot = MetricsSnapshot {
            counters: vec![(key, 7)],
            ..Default::default()
        };
        let (batch, _, _) = next_batch(&previous, &snapshot, 0, &BTreeMap::new());
        assert_eq!(batch.metrics[0].value, Some(7.0));
    }

    #[test]
    fn facade_names_and_labels_are_made_wire_valid() {
        let key = Key::from_parts("a:b", vec![metrics::Label::new("name", "x,y")]);
        let snapshot = MetricsSnapshot {
            gauges: vec![(key, 1.0)],
            histograms: vec![(
                Key::from_name("h"),
                vec![1.0; MAX_SAMPLES_PER_HISTOGRAM + 5],
            )],
            ..Default::default()
        };
        let (batch, _, cut) = next_batch(&PushState::default(), &snapshot, 0, &BTreeMap::new());
        assert_eq!(cut, 5);
        assert_eq!(batch.metrics[0].name, "a_b");
        assert_eq!(batch.metrics[0].tags, tags(&[("name_", "x_y")]));
        assert!(batch.validate().is_ok());
    }

    #[test]
    fn validation_names_the_field_at_fault() {
        let ok = Datapoint::scalar("m", tags(&[("zone", "a")]), 1, MetricKind::Gauge, -1.0);
        let cases: Vec<(Datapoint, &str)> = vec![
            (
                Datapoint {
                    name: String::new(),
                    ..ok.clone()
                },
                "metrics[1].name",
            ),
            (
                Datapoint {
                    tags: tags(&[("zone", "a,b")]),
                    ..ok.clone()
                },
                "metrics[1].tags.zone",
            ),
            (
                Datapoint {
                    tags: tags(&[("name", "x")]),
                    ..ok.clone()
                },
                "metrics[1].tags.name",
            ),
            (
                Datapoint {
                    kind: MetricKind::Counter,
                    ..ok.clone()
                },
                "metrics[1].value",
            ),
            (
                Datapoint {
                    value: Some(f64::NAN),
                    ..ok.clone()
                },
                "metrics[1].value",
            ),
            (
                Datapoint {
                    value: None,
                    ..ok.clone()
                },
                "metrics[1].value",
            ),
            (
                Datapoint {
                    values: Some(vec![1.0]),
                    ..ok.clone()
                },
                "metrics[1].values",
            ),
            (
                Datapoint::distribution("d", BTreeMap::new(), 1, vec![]),
                "metrics[1].values",
            ),
            (
                Datapoint::distribution("d", BTreeMap::new(), 1, vec![1.0, -2.0]),
                "metrics[1].values",
            ),
        ];
        for (bad, field) in cases {
            let batch = PublishBatch {
                tags: BTreeMap::new(),
                metrics: vec![ok.clone(), bad.clone()],
            };
            match batch.validate() {
                Err(BatchError::Invalid { field: got, .. }) => assert_eq!(got, field, "{bad:?}"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn control_characters_are_refused_and_other_text_kept() {
        assert!(check_text("caf\u{e9} \u{a3}5 /path?q=1").is_ok());
        for bad in ["a\u{85}b", "a\nb", "a\u{7f}", "a,b", "a:b", "a|b", "!a"] {
            assert!(check_text(bad).is_err(), "{bad:?}");
        }
        assert!(check_text(&"x".repeat(MAX_NAME_LEN)).is_ok());
        assert!(check_text(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn oversized_batches_are_too_large() {
        let dp = Datapoint::scalar("m", BTreeMap::new(), 1, MetricKind::Gauge, 1.0);
        let batch = PublishBatch {
            tags: BTreeMap::new(),
            metrics: vec![dp; MAX_BATCH_ENTRIES + 1],
        };
        assert!(matches!(
            batch.validate(),
            Err(BatchError::TooLarge {
                what: "datapoints",
                ..
            })
        ));
        let many = Datapoint::distribution("d", BTreeMap::new(), 1, vec![1.0; MAX_BATCH_VALUES]);
        let batch = PublishBatch {
            tags: BTreeMap::new(),
            metrics: vec![many.clone(), many],
        };
        assert!(matches!(
            batch.validate(),
            Err(BatchError::TooLarge { what: "values", .. })
        ));
    }

    #[test]
    fn wire_json_round_trips_and_rejects_unknown_fields() {
        let json = r#"{"tags":{"node":"n"},"metrics":[{"name":"m","timestamp":5,"kind":"counter","value":1}]}"#;
        let batch: PublishBatch = serde_json::from_str(json).unwrap();
        assert_eq!(batch.metrics[0].value, Some(1.0));
        let again: PublishBatch =
            serde_json::from_str(&serde_json::to_string(&batch).unwrap()).unwrap();
        assert_eq!(again, batch);
        assert!(serde_json::from_str::<PublishBatch>(r#"{"metrics":[],"x":1}"#).is_err());
    }

    #[tokio::test]
    async fn run_pushes_at_once_and_stops_when_cancelled() {
        use axum::routing::post;
        let registry = MetricsRegistry::default();
        metrics::with_local_recorder(&registry, || {
            metrics::counter!("c").increment(1);
        });
        let (tx, mut rx) = tokio::sync::mpsc::channel::<PublishBatch>(4);
        let app = axum::Router::new().route(
            PUBLISH_PATH,
            post(move |axum::Json(batch): axum::Json<PublishBatch>| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(batch).await;
                    axum::Json(serde_json::json!({}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        let cancel = CancellationToken::new();
        let pusher = MetricsPusher::new(&url, node_tags("n1"))
            .with_registry(registry)
            .with_clock(ManualClock::new().shared())
            .with_step(Duration::from_secs(3600));
        let handle = pusher.run(cancel.clone());
        // The first tick is immediate; the bound only keeps a broken build from hanging.
        let batch = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a push")
            .expect("a batch");
        assert_eq!(batch.tags, node_tags("n1"));
        assert_eq!(batch.metrics[0].name, "c");
        assert_eq!(batch.metrics[0].value, Some(1.0));
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("the loop ends on cancel")
            .unwrap();
        server.abort();
    }

    #[test]
    fn pushes_back_off_exponentially_up_to_the_cap() {
        let step = Duration::from_secs(1);
        let waits: Vec<u64> = (1..=8).map(|n| push_backoff(step, n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(push_backoff(step, u64::MAX), MAX_PUSH_BACKOFF);
        // Over a five-minute outage at 1 s steps: a handful of attempts, not 300.
        let mut elapsed = Duration::ZERO;
        let mut attempts = 0;
        while elapsed < Duration::from_secs(300) {
            attempts += 1;
            elapsed += step + push_backoff(step, attempts);
        }
        assert!(attempts < 20, "{attempts} attempts");
    }

    #[tokio::test]
    async fn pushes_carry_the_token() {
        use axum::routing::post;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<String>>(4);
        let app = axum::Router::new().route(
            PUBLISH_PATH,
            post(move |headers: http::HeaderMap| {
                let tx = tx.clone();
                async move {
                    let auth = headers
                        .get(http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let _ = tx.send(auth).await;
                    axum::Json(serde_json::json!({}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let registry = MetricsRegistry::default();
        metrics::with_local_recorder(&registry, || metrics::counter!("c").increment(1));
        let mut pusher = MetricsPusher::new(&url, BTreeMap::new())
            .with_registry(registry)
            .with_token(Some("s3cret"));
        pusher.push_once().await.unwrap();
        assert_eq!(rx.recv().await.unwrap().as_deref(), Some("Bearer s3cret"));
        server.abort();
    }

    #[tokio::test]
    async fn a_failed_push_keeps_the_counter_delta_for_the_next_one() {
        let registry = MetricsRegistry::default();
        metrics::with_local_recorder(&registry, || {
            metrics::counter!("c").increment(4);
        });
        let clock = ManualClock::new();
        // Port 1 on loopback refuses connections: the push fails fast.
        let mut pusher = MetricsPusher::new("http://127.0.0.1:1", BTreeMap::new())
            .with_registry(registry.clone())
            .with_clock(clock.shared());
        assert!(pusher.push_once().await.is_err());
        let (batch, _, _) = next_batch(
            &pusher.state,
            &registry.snapshot(),
            clock.wall_millis(),
            &BTreeMap::new(),
        );
        assert_eq!(batch.metrics[0].value, Some(4.0));
    }
}
