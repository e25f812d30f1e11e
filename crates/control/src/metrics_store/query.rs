//! Queries: select series by name and tags, group them by tags, aggregate them over
//! consolidated steps.
//!
//! - **Select**: `name` plus filters `key:v` (equals), `key:v1|v2` (in), `key!:v` and
//!   `key!:v1|v2` (not in; a series without the tag matches). No regexes.
//! - **Group**: `group_by=k1,k2`: one result series per distinct combination of
//!   values; series lacking a group-by tag are left out (as Atlas does).
//! - **Consolidate**: the `[from, to]` range is cut into steps of `step` seconds
//!   (aligned to multiples of the step). Per series and step a *gauge* keeps its
//!   largest value, a *counter* its rate per second (sum of the seconds / step), a
//!   *distribution* merges its seconds.
//! - **Aggregate** across the group, per step: `sum`, `avg`, `max`, `min`, `count`.
//!   For gauges and counters `count` is the number of series reporting. For
//!   distributions the functions read the samples: `count` is samples per second,
//!   `sum` the samples' total per second, `avg` the mean sample, `max`/`min` the
//!   extreme samples, and `p50`, `p90`, `p99`, `p999` or `percentile(N)` a
//!   percentile of the merged buckets (within the buckets' 6.25 % relative error).
//!   Percentiles of gauges or counters are an error, as is an unknown function.
//! - A step with no data is `None` (`null` in JSON).

use std::collections::{BTreeMap, HashMap};

use casebook_kit::metrics_push::{MetricKind, RESERVED_TAG};
use serde::Serialize;

use super::buckets::MergedBuckets;
use super::{MetricsStore, SeriesData, WINDOW_SECS, Window};

/// The most result series (groups) one query may make.
pub const MAX_GROUPS: usize = 1000;
/// The most values (groups × steps) one query may compute: bounds its memory
/// (a distribution value carries its merged buckets).
pub const MAX_CELLS: usize = 500_000;
/// The most filters or group-by keys in one query.
pub const MAX_TERMS: usize = 16;

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Aggregate {
    Sum,
    Avg,
    Max,
    Min,
    Count,
    /// The percentile `0..=100`.
    Percentile(f64),
}

/// The functions [`Aggregate::parse`] knows, for error messages.
pub const KNOWN_FUNCTIONS: &str = "sum, avg, max, min, count, p50, p90, p99, p999, percentile(N)";

impl Aggregate {
    /// Parses `sum`, `avg`, `max`, `min`, `count`, `p50`, `p90`, `p99`, `p999` or
    /// `percentile(N)` with `0 <= N <= 100`.
    pub fn parse(text: &str) -> Result<Self, QueryError> {
        Ok(match text {
            "sum" => Self::Sum,
            "avg" => Self::Avg,
            "max" => Self::Max,
            "min" => Self::Min,
            "count" => Self::Count,
            "p50" => Self::Percentile(50.0),
            "p90" => Self::Percentile(90.0),
            "p99" => Self::Percentile(99.0),
            "p999" => Self::Percentile(99.9),
            _ => {
                let Some(arg) = text
                    .strip_prefix("percentile(")
                    .and_then(|rest| rest.strip_suffix(')'))
                else {
                    return Err(QueryError::UnknownFunction(text.to_owned()));
                };
                match arg.trim().parse::<f64>() {
                    Ok(p) if (0.0..=100.0).contains(&p) => Self::Percentile(p),
                    _ => {
                        return Err(QueryError::invalid(
                            "fn",
                            format!(
                                "percentile({arg}): the argument must be a number from 0 to 100"
                            ),
                        ));
                    }
                }
            }
        })
    }

    fn is_percentile(self) -> bool {
        matches!(self, Self::Percentile(_))
    }

    /// The function's canonical name.
    pub fn name(self) -> String {
        match self {
            Self::Sum => "sum".into(),
            Self::Avg => "avg".into(),
            Self::Max => "max".into(),
            Self::Min => "min".into(),
            Self::Count => "count".into(),
            Self::Percentile(p) => format!("percentile({p})"),
        }
    }
}

/// Why a query is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("unknown function `{0}`; known functions: {KNOWN_FUNCTIONS}")]
    UnknownFunction(String),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

impl QueryError {
    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The query parameter at fault.
    pub fn field(&self) -> &str {
        match self {
            Self::UnknownFunction(_) => "fn",
            Self::Invalid { field, .. } => field,
        }
    }
}

/// A tag filter: the series' value of `key` is (or, negated, is not) one of `values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFilter {
    pub key: String,
    pub values: Vec<String>,
    pub negate: bool,
}

impl TagFilter {
    fn matches(&self, value: Option<&str>) -> bool {
        let listed = value.is_some_and(|v| self.values.iter().any(|x| x == v));
        listed != self.negate
    }
}

/// A point in time of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSpec {
    Now,
    /// So many seconds before now.
    Ago(u64),
    /// Milliseconds since the Unix epoch.
    At(u64),
}

impl TimeSpec {
    fn parse(field: &str, text: &str) -> Result<Self, QueryError> {
        if text == "now" {
            return Ok(Self::Now);
        }
        if let Some(ago) = text.strip_prefix('-') {
            return parse_secs(field, ago).map(Self::Ago);
        }
        text.parse::<u64>().map(Self::At).map_err(|_| {
            QueryError::invalid(
                field,
                format!("`{text}` is not `now`, `-<duration>` (-5m) or epoch milliseconds"),
            )
        })
    }

    fn resolve(self, now: u64) -> u64 {
        match self {
            Self::Now => now,
            Self::Ago(secs) => now.saturating_sub(secs),
            Self::At(ms) => ms / 1000,
        }
    }
}

/// `30s`, `5m`, `1h` (or bare seconds) as seconds.
fn parse_secs(field: &str, text: &str) -> Result<u64, QueryError> {
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => 0,
    };
    match digits.parse::<u64>() {
        Ok(n) if scale > 0 && n <= 10 * WINDOW_SECS => Ok(n * scale),
        _ => Err(QueryError::invalid(
            field,
            format!("`{text}` is not a duration like 30s, 5m or 1h"),
        )),
    }
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub name: String,
    pub filters: Vec<TagFilter>,
    pub group_by: Vec<String>,
    pub aggregate: Aggregate,
    pub from: TimeSpec,
    pub to: TimeSpec,
    pub step_secs: u64,
}

impl Query {
    /// A query of `name` over the last five minutes, one-second steps, summed.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            filters: Vec::new(),
            group_by: Vec::new(),
            aggregate: Aggregate::Sum,
            from: TimeSpec::Ago(300),
            to: TimeSpec::Now,
            step_secs: 1,
        }
    }

    /// Parses URL query parameters: `name` (required), `filter`, `group_by`, `fn`
    /// (default `sum`), `from` (default `-5m`), `to` (default `now`), `step`
    /// (default `1s`, at most `1h`). Unknown parameters are refused.
    pub fn parse(params: &HashMap<String, String>) -> Result<Self, QueryError> {
        const KNOWN: [&str; 7] = ["name", "filter", "group_by", "fn", "from", "to", "step"];
        let mut keys: Vec<&String> = params.keys().collect();
        keys.sort();
        if let Some(unknown) = keys.iter().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(QueryError::invalid(
                unknown.as_str(),
                format!("unknown parameter; known: {}", KNOWN.join(", ")),
            ));
        }
        let name = params
            .get("name")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| QueryError::invalid("name", "required"))?;
        let mut query = Self::new(name.clone());
        if let Some(text) = params.get("fn") {
            query.aggregate = Aggregate::parse(text)?;
        }
        if let Some(text) = params.get("filter") {
            query.filters = parse_filters(text)?;
        }
        if let Some(text) = params.get("group_by") {
            query.group_by = text
                .split(',')
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect();
            if query.group_by.len() > MAX_TERMS {
                return Err(QueryError::invalid(
                    "group_by",
                    format!("at most {MAX_TERMS} keys"),
                ));
            }
        }
        if let Some(text) = params.get("from") {
            query.from = TimeSpec::parse("from", text)?;
        }
        if let Some(text) = params.get("to") {
            query.to = TimeSpec::parse("to", text)?;
        }
        if let Some(text) = params.get("step") {
            query.step_secs = parse_secs("step", text)?;
            if !(1..=WINDOW_SECS).contains(&query.step_secs) {
                return Err(QueryError::invalid("step", "must be from 1s to 1h"));
            }
        }
        Ok(query)
    }
}

fn parse_filters(text: &str) -> Result<Vec<TagFilter>, QueryError> {
    let mut filters = Vec::new();
    for term in text.split(',').filter(|t| !t.is_empty()) {
        let Some((key, values)) = term.split_once(':') else {
            return Err(QueryError::invalid(
                "filter",
                format!("`{term}` is not key:value, key:v1|v2 or key!:value"),
            ));
        };
        let (key, negate) = match key.strip_suffix('!') {
            Some(key) => (key, true),
            None => (key, false),
        };
        let values: Vec<String> = values.split('|').map(str::to_owned).collect();
        if key.is_empty() || values.iter().any(String::is_empty) {
            return Err(QueryError::invalid(
                "filter",
                format!("`{term}` has an empty key or value"),
            ));
        }
        if key == RESERVED_TAG {
            return Err(QueryError::invalid(
                "filter",
                "filter by name with the `name` parameter",
            ));
        }
        filters.push(TagFilter {
            key: key.to_owned(),
            values,
            negate,
        });
    }
    if filters.len() > MAX_TERMS {
        return Err(QueryError::invalid(
            "filter",
            format!("at most {MAX_TERMS} terms"),
        ));
    }
    Ok(filters)
}

/// A query's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueryResult {
    pub name: String,
    #[serde(rename = "fn")]
    pub function: String,
    /// The kind of the series aggregated (`None` when nothing matched).
    pub kind: Option<MetricKind>,
    /// The first step's start, epoch milliseconds.
    pub start_ms: u64,
    /// The end of the last step (exclusive), epoch milliseconds.
    pub end_ms: u64,
    /// The step, milliseconds.
    pub step_ms: u64,
    /// One entry per group, sorted by group tags.
    pub series: Vec<ResultSeries>,
}

/// One group's values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultSeries {
    /// The group-by tags and their values.
    pub tags: BTreeMap<String, String>,
    /// One value per step; `None` where there was no data.
    pub values: Vec<Option<f64>>,
}

#[derive(Debug, Clone, Copy)]
struct ScalarAcc {
    sum: f64,
    count: u32,
    min: f64,
    max: f64,
}

impl ScalarAcc {
    const EMPTY: Self = Self {
        sum: 0.0,
        count: 0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
    };

    fn add(&mut self, v: f64) {
        self.sum += v;
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
}

#[derive(Debug, Clone)]
struct DistAcc {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    buckets: MergedBuckets,
}

impl Default for DistAcc {
    fn default() -> Self {
        Self {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            buckets: MergedBuckets::default(),
        }
    }
}

#[derive(Debug)]
enum GroupAcc {
    Scalar(Vec<ScalarAcc>),
    Distribution(Vec<DistAcc>),
}

impl MetricsStore {
    /// Runs a query against the data in the window now.
    pub fn query(&self, q: &Query) -> Result<QueryResult, QueryError> {
        let now = self.now_sec();
        let window = Window::at(now, self.config.future_tolerance.as_secs());
        let from = q.from.resolve(now).max(window.first);
        let to = q.to.resolve(now).min(window.last);
        if from > to {
            return Err(QueryError::invalid(
                "from",
                "the range is empty: from is after to, or both are outside the last hour",
            ));
        }
        let step = q.step_secs.max(1);
        let start = from / step * step;
        let end = (to / step + 1) * step;
        let points = ((end - start) / step) as usize;
        debug_assert!(points <= (WINDOW_SECS + super::MAX_FUTURE_TOLERANCE_SECS) as usize + 1);
        let percentile = q.aggregate.is_percentile();

        let mut kind: Option<MetricKind> = None;
        let mut groups: BTreeMap<Vec<String>, GroupAcc> = BTreeMap::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            for series in shard.named(&q.name) {
                if !q.filters.iter().all(|f| f.matches(series.tag(&f.key))) {
                    continue;
                }
                let Some(key) = q
                    .group_by
                    .iter()
                    .map(|k| series.tag(k).map(str::to_owned))
                    .collect::<Option<Vec<String>>>()
                else {
                    continue;
                };
                match kind {
                    None => kind = Some(series.kind),
                    Some(k) if k != series.kind => {
                        return Err(QueryError::invalid(
                            "name",
                            format!(
                                "`{}` has series of kinds {} and {}; filter to one kind",
                                q.name,
                                k.as_str(),
                                series.kind.as_str()
                            ),
                        ));
                    }
                    Some(_) => {}
                }
                if percentile && series.kind != MetricKind::Distribution {
                    return Err(QueryError::invalid(
                        "fn",
                        format!(
                            "{} needs distribution series; `{}` is a {}",
                            q.aggregate.name(),
                            q.name,
                            series.kind.as_str()
                        ),
                    ));
                }
                if !groups.contains_key(&key) {
                    if groups.len() >= MAX_GROUPS {
                        return Err(QueryError::invalid(
                            "group_by",
                            format!("more than {MAX_GROUPS} groups; filter or group by fewer tags"),
                        ));
                    }
                    if (groups.len() + 1) * points > MAX_CELLS {
                        return Err(QueryError::invalid(
                            "step",
                            format!(
                                "{} groups of {points} steps exceed {MAX_CELLS} values; \
                                 use a larger step, a shorter range or fewer groups",
                                groups.len() + 1
                            ),
                        ));
                    }
                }
                let group = groups.entry(key).or_insert_with(|| match series.kind {
                    MetricKind::Distribution => {
                        GroupAcc::Distribution(vec![DistAcc::default(); points])
                    }
                    _ => GroupAcc::Scalar(vec![ScalarAcc::EMPTY; points]),
                });
                let seconds = |i: usize| {
                    let first = (start + i as u64 * step).max(window.first);
                    let last = (start + (i as u64 + 1) * step - 1).min(window.last);
                    first..=last
                };
                match (&series.data, group) {
                    (SeriesData::Scalar(ring), GroupAcc::Scalar(accs)) => {
                        for (i, acc) in accs.iter_mut().enumerate() {
                            let mut present = seconds(i)
                                .filter_map(|s| ring.step(s).copied())
                                .filter(|v| !v.is_nan())
                                .peekable();
                            if present.peek().is_none() {
                                continue;
                            }
                            let value = if series.kind == MetricKind::Gauge {
                                present.fold(f64::NEG_INFINITY, f64::max)
                            } else {
                                present.sum::<f64>() / step as f64
                            };
                            acc.add(value);
                        }
                    }
                    (SeriesData::Distribution(ring), GroupAcc::Distribution(accs)) => {
                        for (i, acc) in accs.iter_mut().enumerate() {
                            for s in seconds(i) {
                                let Some(d) = ring.step(s).filter(|d| d.count > 0) else {
                                    continue;
                                };
                                acc.count += d.count;
                                acc.sum += d.sum;
                                acc.min = acc.min.min(d.min);
                                acc.max = acc.max.max(d.max);
                                if percentile {
                                    acc.buckets.merge(&d.buckets);
                                }
                            }
                        }
                    }
                    _ => unreachable!("one kind per query, checked above"),
                }
            }
        }

        let series = groups
            .into_iter()
            .map(|(key, group)| ResultSeries {
                tags: q.group_by.iter().cloned().zip(key).collect(),
                values: finish(group, q.aggregate, step),
            })
            .collect();
        Ok(QueryResult {
            name: q.name.clone(),
            function: q.aggregate.name(),
            kind,
            start_ms: start * 1000,
            end_ms: end * 1000,
            step_ms: step * 1000,
            series,
        })
    }
}

fn finish(group: GroupAcc, aggregate: Aggregate, step: u64) -> Vec<Option<f64>> {
    let step = step as f64;
    match group {
        GroupAcc::Scalar(accs) => accs
            .iter()
            .map(|a| {
                (a.count > 0).then(|| match aggregate {
                    Aggregate::Sum => a.sum,
                    Aggregate::Avg => a.sum / f64::from(a.count),
                    Aggregate::Max => a.max,
                    Aggregate::Min => a.min,
                    Aggregate::Count => f64::from(a.count),
                    Aggregate::Percentile(_) => unreachable!("refused for scalars"),
                })
            })
            .collect(),
        GroupAcc::Distribution(accs) => accs
            .iter()
            .map(|a| {
                if a.count == 0 {
                    return None;
                }
                match aggregate {
                    Aggregate::Sum => Some(a.sum / step),
                    Aggregate::Avg => Some(a.sum / a.count as f64),
                    Aggregate::Max => Some(a.max),
                    Aggregate::Min => Some(a.min),
                    Aggregate::Count => Some(a.count as f64 / step),
                    Aggregate::Percentile(p) => a.buckets.percentile(p, a.min, a.max),
                }
            })
            .collect(),
    }
}
