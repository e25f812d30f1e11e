//! The `[alerts]` table: the loop's settings and the rules, each with its runbook.
//!
//! ```toml
//! [alerts]
//! interval = "5s"        # how often every rule is evaluated
//! log = 512              # transitions and action runs kept for GET /api/alerts
//! queue = 256            # action runs waiting to execute (more are dropped, recorded)
//! retry_backoff = "1s"   # wait before retry n is n × this
//!
//! [[alerts.rules]]
//! name = "amazon-errors"
//! metric = "http_requests_total"
//! filter = "service:amazon,status:500|502|503|504|599"
//! ratio_of = { filter = "service:amazon" }  # value = errors / requests
//! scale = 100.0                              # as a percentage
//! window = "30s"
//! op = "above"
//! threshold = 1.0
//! for = "30s"
//! labels = { severity = "page" }
//! annotations = { summary = "amazon answers more than 1 % errors" }
//!
//! [[alerts.rules.actions]]
//! kind = "webhook"
//! url = "http://127.0.0.1:9093/api/v1/alerts"
//!
//! [[alerts.rules.actions]]
//! kind = "rollback"        # the last deploy of the alert's `service`
//! cooldown = "10m"
//! ```
//!
//! A rule's **value** is read from the metrics store: `metric` and `filter` (the
//! store's syntax: `key:v`, `key:v1|v2`, `key!:v`), aggregated across the matching
//! series by `fn` (the store's functions; `p99` and `percentile(N)` need a
//! distribution), per `group_by` combination (each one its own alert), over
//! `window`, times `scale` — and, with `ratio_of`, divided by a second such value.
//! See [`super::source`] for how each metric kind is reduced over the window.
//!
//! A rule's **condition**: `kind = "threshold"` compares the value itself with
//! `threshold`; `kind = "rate_of_change"` compares its change per second over
//! `change_window`. `op` is `above` or `below`; the condition must hold for `for`
//! (pending until then), and a firing alert resolves once the value is back past
//! `clear` (default: the threshold) — the gap between them is the hysteresis. See
//! [`super::eval`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use casebook_kit::config::ConfigError;
use serde::{Deserialize, Serialize};

use crate::metrics_store::query::{Aggregate, Query};

/// The most rules one engine holds (configured plus added at run time).
pub const MAX_RULES: usize = 256;
/// The most actions one rule runs.
pub const MAX_ACTIONS: usize = 8;
/// The most entries the alert log may keep.
pub const MAX_LOG: usize = 10_000;
/// The most action runs that may wait in the queue.
pub const MAX_QUEUE: usize = 10_000;
/// The most retries of one action run.
pub const MAX_RETRIES: u32 = 10;
/// The longest window, `for`, cooldown or change window.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// The most static labels or annotations a rule carries.
pub const MAX_LABELS: usize = 32;
/// The most instances one scale-out action asks for.
pub const MAX_SCALE_COUNT: u32 = 100;

/// The `[alerts]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Whether the loop runs (the API still answers and still takes rules).
    pub enabled: bool,
    /// How often every rule is evaluated (real time; the evaluation reads the
    /// injected clock).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How many log entries (transitions and action runs) are kept, oldest dropped
    /// first.
    pub log: usize,
    /// How many action runs may wait to execute; a run beyond it is dropped and
    /// recorded as `dropped`.
    pub queue: usize,
    /// Retry `n` of an action waits `n × retry_backoff` (real time).
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Adds [`default_rules`] (no actions: they show on `/api/alerts` and in the
    /// metrics); a configured rule of the same name replaces its default. Off by
    /// default.
    pub defaults: bool,
    /// The rules, each with its runbook.
    pub rules: Vec<Rule>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(5),
            log: 512,
            queue: 256,
            retry_backoff: Duration::from_secs(1),
            defaults: false,
            rules: Vec::new(),
        }
    }
}

/// The default rule set (`alerts.defaults = true`), per service, without actions:
///
/// | name | fires when |
/// |---|---|
/// | `default-service-down` | a service this platform has run has no live instance for 10 s |
/// | `default-error-ratio` | more than 5 % of a service's answers are 5xx for 1 min (resolves below 2 %) |
/// | `default-latency-p99` | a service's p99 is above 1 s for 2 min (30 s steps) |
///
/// Housekeeping routes (`/health`, `/metrics`) are left out of both request rules.
pub fn default_rules() -> Vec<Rule> {
    let rule = |json: serde_json::Value| -> Rule {
        serde_json::from_value(json).expect("a default rule is well-formed")
    };
    let work = "route!:/health|/metrics";
    vec![
        rule(serde_json::json!({
            "name": "default-service-down", "metric": "platform_live_instances",
            "group_by": ["service"], "op": "below", "threshold": 1.0, "for": "10s",
            "labels": {"severity": "page"},
            "annotations": {"summary": "a service has no live instance"}
        })),
        rule(serde_json::json!({
            "name": "default-error-ratio", "metric": "http_requests_total",
            "filter": format!("{work},status:500|502|503|504|599"),
            "ratio_of": {"filter": work}, "group_by": ["service"], "scale": 100.0,
            "window": "1m", "op": "above", "threshold": 5.0, "clear": 2.0, "for": "1m",
            "labels": {"severity": "page"},
            "annotations": {"summary": "more than 5 % of a service's answers are errors"}
        })),
        rule(serde_json::json!({
            "name": "default-latency-p99", "metric": "http_request_duration_seconds",
            "filter": work, "fn": "p99", "group_by": ["service"], "scale": 1000.0,
            "window": "30s", "op": "above", "threshold": 1000.0, "for": "2m",
            "labels": {"severity": "ticket"},
            "annotations": {"summary": "a service's p99 is above 1 s"}
        })),
    ]
}

/// What a rule compares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// The value itself.
    #[default]
    Threshold,
    /// The value's change per second over `change_window`.
    RateOfChange,
}

/// Which side of the threshold is the problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Above,
    Below,
}

/// What a rule does when its value is missing (Grafana's "no data" choice).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoData {
    /// The default: a gap neither raises nor clears an alert (a pusher that missed
    /// a second, or a control plane restarted with an empty store, is not an
    /// incident of the service, and it is not a recovery either).
    #[default]
    KeepState,
    /// Missing data counts as the condition holding: for rules that must page on
    /// silence.
    Alerting,
    /// Missing data counts as the condition not holding (Prometheus's behaviour
    /// for a series that disappears).
    Ok,
}

/// The second value of a ratio: `metric` (default: the rule's) with `filter`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Denominator {
    pub metric: Option<String>,
    pub filter: String,
}

/// One alert rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique; the alert's `alertname` label. An API `PUT` may leave it out (the
    /// path names it).
    #[serde(default)]
    pub name: String,
    /// The metric read from the store.
    pub metric: String,
    /// Which of its series, in the store's filter syntax.
    #[serde(default)]
    pub filter: String,
    /// How the matching series are combined (the store's functions); default `sum`.
    #[serde(default = "defaults::function", rename = "fn")]
    pub function: String,
    /// Each combination of these tags is its own alert (e.g. `["instance"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_by: Vec<String>,
    /// The value is read over this much time (see [`super::source`]).
    #[serde(with = "humantime_serde", default = "defaults::window")]
    pub window: Duration,
    /// The value is multiplied by this (100 for a percentage, 1000 for ms).
    #[serde(default = "defaults::scale")]
    pub scale: f64,
    /// Divide by this second value (a ratio: errors / requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio_of: Option<Denominator>,
    #[serde(default)]
    pub kind: RuleKind,
    /// For `rate_of_change`: the change is measured over this much time.
    #[serde(
        with = "humantime_serde::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub change_window: Option<Duration>,
    pub op: Op,
    pub threshold: f64,
    /// A firing alert resolves once the value is back past this (default: the
    /// threshold): at or below it for `above`, at or above it for `below`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear: Option<f64>,
    /// How long the condition must hold before the alert fires.
    #[serde(rename = "for", with = "humantime_serde", default)]
    pub for_: Duration,
    #[serde(default)]
    pub no_data: NoData,
    /// Added to every alert of the rule (e.g. `severity`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Carried to the webhook (e.g. `summary`, `runbook_url`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The runbook.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
}

/// What an action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Restart the instance the alert names (its `instance` label), else every
    /// instance of the service.
    Restart,
    /// Roll back the service's last deploy (through the deployer).
    Rollback,
    /// Ask the autoscaler for `count` more instances, within its policy's max.
    ScaleOut,
    /// POST the alert in Alertmanager's webhook shape.
    Webhook,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Restart => "restart",
            Self::Rollback => "rollback",
            Self::ScaleOut => "scale_out",
            Self::Webhook => "webhook",
        }
    }
}

/// One step of a rule's runbook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub kind: ActionKind,
    /// The service acted on; default: the alert's `service` label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// `scale_out`: instances to add (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// `webhook`: where to POST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `webhook`: the call's timeout (default 5 s).
    #[serde(
        with = "humantime_serde::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Whether it also runs when the alert resolves (default: only a webhook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_resolve: Option<bool>,
    /// After a run, the same alert does not run this action again for this long
    /// (default: 5 min; a webhook 0).
    #[serde(
        with = "humantime_serde::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cooldown: Option<Duration>,
    /// Attempts after a failed one (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

impl Action {
    pub fn runs_on_resolve(&self) -> bool {
        self.on_resolve.unwrap_or(self.kind == ActionKind::Webhook)
    }
    pub fn cooldown(&self) -> Duration {
        self.cooldown.unwrap_or(match self.kind {
            ActionKind::Webhook => Duration::ZERO,
            _ => Duration::from_secs(300),
        })
    }
    pub fn retries(&self) -> u32 {
        self.retries.unwrap_or(2)
    }
    pub fn count(&self) -> u32 {
        self.count.unwrap_or(1)
    }
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(5))
    }

    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let bad = |field: &str, message: String| Err(ConfigError::new(dotted(at, field), message));
        let kind = self.kind.as_str();
        if let Some(service) = &self.service {
            check_name(service).map_err(|m| ConfigError::new(dotted(at, "service"), m))?;
            if self.kind == ActionKind::Webhook {
                return bad("service", "a webhook acts on no service".into());
            }
        }
        match (self.kind, &self.count) {
            (ActionKind::ScaleOut, Some(n)) if *n == 0 || *n > MAX_SCALE_COUNT => {
                return bad("count", format!("must be from 1 to {MAX_SCALE_COUNT}"));
            }
            (ActionKind::ScaleOut, _) | (_, None) => {}
            (_, Some(_)) => {
                return bad(
                    "count",
                    format!("only a scale_out has a count, not a {kind}"),
                );
            }
        }
        match (self.kind, &self.url) {
            (ActionKind::Webhook, None) => return bad("url", "a webhook needs a url".into()),
            (ActionKind::Webhook, Some(url)) => check_url(url).or_else(|m| bad("url", m))?,
            (_, Some(_)) => return bad("url", format!("only a webhook has a url, not a {kind}")),
            (_, None) => {}
        }
        if let Some(timeout) = self.timeout {
            if self.kind != ActionKind::Webhook {
                return bad(
                    "timeout",
                    format!("only a webhook has a timeout, not a {kind}"),
                );
            }
            if timeout < Duration::from_millis(10) || timeout > Duration::from_secs(60) {
                return bad("timeout", "must be from 10ms to 60s".into());
            }
        }
        if self.cooldown.is_some_and(|c| c > MAX_DURATION) {
            return bad("cooldown", "must be at most 1h".into());
        }
        if self.retries.is_some_and(|r| r > MAX_RETRIES) {
            return bad("retries", format!("must be at most {MAX_RETRIES}"));
        }
        Ok(())
    }
}

/// A webhook URL the kit's client can call: `http://host[:port]/path`.
fn check_url(url: &str) -> Result<(), String> {
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!(
            "`{url}` must be an http:// URL with a host (the client speaks plain HTTP/1.1)"
        ));
    }
    if url.len() > 2048 {
        return Err("at most 2048 characters".into());
    }
    Ok(())
}

mod defaults {
    use std::time::Duration;

    pub fn function() -> String {
        "sum".into()
    }
    pub fn window() -> Duration {
        Duration::from_secs(30)
    }
    pub fn scale() -> f64 {
        1.0
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

/// A rule, service or label name: 1 to 128 printable characters.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err("must be 1 to 128 printable characters".into());
    }
    Ok(())
}

/// Builds the store query of `metric` with `filter` and `function` (the store's
/// own parser, so a rule accepts exactly what `/api/metrics/query` does), naming
/// the rule's key on error.
pub(crate) fn store_query(
    metric: &str,
    filter: &str,
    function: &str,
    group_by: &[String],
    at: &str,
    key_prefix: &str,
) -> Result<Query, ConfigError> {
    let mut params = HashMap::from([
        ("name".to_owned(), metric.to_owned()),
        ("fn".to_owned(), function.to_owned()),
    ]);
    if !filter.is_empty() {
        params.insert("filter".into(), filter.to_owned());
    }
    if !group_by.is_empty() {
        params.insert("group_by".into(), group_by.join(","));
    }
    Query::parse(&params).map_err(|e| {
        let field = match e.field() {
            "name" => "metric",
            "fn" => "fn",
            "group_by" => "group_by",
            _ => "filter",
        };
        // The denominator's own keys (`ratio_of.filter`); `fn` and `group_by` are
        // the rule's.
        let key = if field == "fn" || field == "group_by" {
            dotted(at, field)
        } else {
            dotted(at, &format!("{key_prefix}{field}"))
        };
        let message = match &e {
            crate::metrics_store::query::QueryError::Invalid { reason, .. } => reason.clone(),
            other => other.to_string(),
        };
        ConfigError::new(key, message)
    })
}

impl Rule {
    /// Checks the rule; `at` is where it sits (`alerts.rules[0]`, or empty for an
    /// API body), so the error names the dotted key.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let bad = |field: &str, message: String| Err(ConfigError::new(dotted(at, field), message));
        check_name(&self.name).or_else(|m| bad("name", m))?;
        if self.name.contains('/') {
            return bad(
                "name",
                "must not contain `/` (it is a path segment of the API)".into(),
            );
        }
        check_name(&self.metric).or_else(|m| bad("metric", m))?;
        if self.group_by.len() > 16 || self.group_by.iter().any(|k| check_name(k).is_err()) {
            return bad(
                "group_by",
                "at most 16 tag names of 1 to 128 printable characters".into(),
            );
        }
        let query = store_query(
            &self.metric,
            &self.filter,
            &self.function,
            &self.group_by,
            at,
            "",
        )?;
        if let Some(denominator) = &self.ratio_of {
            let metric = denominator.metric.as_deref().unwrap_or(&self.metric);
            store_query(
                metric,
                &denominator.filter,
                &self.function,
                &self.group_by,
                at,
                "ratio_of.",
            )?;
            if matches!(query.aggregate, Aggregate::Percentile(_)) {
                return bad(
                    "fn",
                    "a ratio of percentiles means nothing; use sum or count".into(),
                );
            }
        }
        if self.window < Duration::from_secs(1) || self.window > MAX_DURATION {
            return bad("window", "must be from 1s to 1h".into());
        }
        if !(self.scale.is_finite() && self.scale != 0.0) {
            return bad(
                "scale",
                format!("must be a finite non-zero number, got {}", self.scale),
            );
        }
        match (self.kind, self.change_window) {
            (RuleKind::RateOfChange, None) => {
                return bad(
                    "change_window",
                    "a rate_of_change rule needs a change_window".into(),
                );
            }
            (RuleKind::RateOfChange, Some(w)) if w < Duration::from_secs(1) || w > MAX_DURATION => {
                return bad("change_window", "must be from 1s to 1h".into());
            }
            (RuleKind::Threshold, Some(_)) => {
                return bad(
                    "change_window",
                    "only a rate_of_change rule has a change_window".into(),
                );
            }
            _ => {}
        }
        if !self.threshold.is_finite() {
            return bad(
                "threshold",
                format!("must be a finite number, got {}", self.threshold),
            );
        }
        if let Some(clear) = self.clear {
            let on_the_right_side = match self.op {
                Op::Above => clear <= self.threshold,
                Op::Below => clear >= self.threshold,
            };
            if !(clear.is_finite() && on_the_right_side) {
                let side = if self.op == Op::Above {
                    "at or below"
                } else {
                    "at or above"
                };
                return bad(
                    "clear",
                    format!(
                        "must be a finite number {side} the threshold ({}), got {clear}",
                        self.threshold
                    ),
                );
            }
        }
        if self.for_ > MAX_DURATION {
            return bad("for", "must be at most 1h".into());
        }
        for (field, map) in [("labels", &self.labels), ("annotations", &self.annotations)] {
            if map.len() > MAX_LABELS {
                return bad(field, format!("at most {MAX_LABELS} entries"));
            }
            for (key, value) in map {
                if check_name(key).is_err() || value.len() > 4096 {
                    return bad(
                        &format!("{field}.{key}"),
                        "names of 1 to 128 printable characters, values of at most 4096".into(),
                    );
                }
            }
        }
        if self.labels.contains_key("alertname") {
            return bad(
                "labels.alertname",
                "is the rule's name; it cannot be set".into(),
            );
        }
        if self.actions.len() > MAX_ACTIONS {
            return bad("actions", format!("at most {MAX_ACTIONS} actions"));
        }
        for (i, action) in self.actions.iter().enumerate() {
            action.validate(&dotted(at, &format!("actions[{i}]")))?;
        }
        Ok(())
    }

    /// The threshold a firing alert must come back past to resolve.
    pub fn clear_level(&self) -> f64 {
        self.clear.unwrap_or(self.threshold)
    }
}

impl AlertsConfig {
    /// The rules the engine starts with: the configured ones, then (with
    /// `defaults`) each default rule no configured rule is named after.
    pub fn effective_rules(&self) -> Vec<Rule> {
        let mut rules = self.rules.clone();
        if self.defaults {
            for default in default_rules() {
                if !rules.iter().any(|r| r.name == default.name) {
                    rules.push(default);
                }
            }
        }
        rules
    }

    /// Checks the table; errors name the dotted key (`alerts.rules[2].for`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.interval < Duration::from_millis(10) || self.interval > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "alerts.interval",
                "must be from 10ms to 1h",
            ));
        }
        if !(1..=MAX_LOG).contains(&self.log) {
            return Err(ConfigError::new(
                "alerts.log",
                format!("must be from 1 to {MAX_LOG}"),
            ));
        }
        if !(1..=MAX_QUEUE).contains(&self.queue) {
            return Err(ConfigError::new(
                "alerts.queue",
                format!("must be from 1 to {MAX_QUEUE}"),
            ));
        }
        if self.retry_backoff > Duration::from_secs(60) {
            return Err(ConfigError::new(
                "alerts.retry_backoff",
                "must be at most 60s",
            ));
        }
        if self.effective_rules().len() > MAX_RULES {
            return Err(ConfigError::new(
                "alerts.rules",
                format!("at most {MAX_RULES} rules"),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let at = format!("alerts.rules[{i}]");
            rule.validate(&at)?;
            if !seen.insert(rule.name.as_str()) {
                return Err(ConfigError::new(
                    format!("{at}.name"),
                    format!(
                        "`{}` names another rule already; names are unique",
                        rule.name
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> Rule {
        serde_json::from_value(serde_json::json!({
            "name": "errors", "metric": "http_requests_total",
            "filter": "service:amazon,status:500|503",
            "ratio_of": {"filter": "service:amazon"},
            "op": "above", "threshold": 1.0, "for": "30s", "scale": 100.0
        }))
        .unwrap()
    }

    #[test]
    fn a_rule_needs_little_and_gets_sane_defaults() {
        let r = rule();
        r.validate("").unwrap();
        assert_eq!(r.function, "sum");
        assert_eq!(r.window, Duration::from_secs(30));
        assert_eq!(r.no_data, NoData::KeepState);
        assert_eq!(r.kind, RuleKind::Threshold);
        assert_eq!(r.clear_level(), 1.0);
        let webhook: Action =
            serde_json::from_value(serde_json::json!({"kind": "webhook", "url": "http://h:1/x"}))
                .unwrap();
        assert!(webhook.runs_on_resolve());
        assert_eq!(webhook.cooldown(), Duration::ZERO);
        let restart: Action =
            serde_json::from_value(serde_json::json!({"kind": "restart"})).unwrap();
        assert!(!restart.runs_on_resolve());
        assert_eq!(restart.cooldown(), Duration::from_secs(300));
        assert_eq!(restart.retries(), 2);
    }

    #[test]
    fn validation_names_the_dotted_key() {
        type Break = fn(&mut Rule);
        let cases: Vec<(Break, &str)> = vec![
            (|r| r.name = String::new(), "alerts.rules[2].name"),
            (|r| r.name = "a/b".into(), "alerts.rules[2].name"),
            (|r| r.filter = "service".into(), "alerts.rules[2].filter"),
            (|r| r.function = "median".into(), "alerts.rules[2].fn"),
            (
                |r| {
                    r.ratio_of = Some(Denominator {
                        metric: None,
                        filter: "x".into(),
                    })
                },
                "alerts.rules[2].ratio_of.filter",
            ),
            (|r| r.function = "p99".into(), "alerts.rules[2].fn"),
            (|r| r.window = Duration::ZERO, "alerts.rules[2].window"),
            (
                |r| r.for_ = Duration::from_secs(7200),
                "alerts.rules[2].for",
            ),
            (|r| r.threshold = f64::NAN, "alerts.rules[2].threshold"),
            (|r| r.clear = Some(2.0), "alerts.rules[2].clear"),
            (
                |r| r.kind = RuleKind::RateOfChange,
                "alerts.rules[2].change_window",
            ),
            (
                |r| r.change_window = Some(Duration::from_secs(5)),
                "alerts.rules[2].change_window",
            ),
            (|r| r.scale = 0.0, "alerts.rules[2].scale"),
            (
                |r| {
                    r.labels.insert("alertname".into(), "x".into());
                },
                "alerts.rules[2].labels.alertname",
            ),
            (
                |r| {
                    r.actions = vec![
                        serde_json::from_value(serde_json::json!({"kind": "webhook"})).unwrap(),
                    ]
                },
                "alerts.rules[2].actions[0].url",
            ),
            (
                |r| {
                    r.actions = vec![
                        serde_json::from_value(
                            serde_json::json!({"kind": "webhook", "url": "https://x/"}),
                        )
                        .unwrap(),
                    ]
                },
                "alerts.rules[2].actions[0].url",
            ),
            (
                |r| {
                    r.actions = vec![
                        serde_json::from_value(serde_json::json!({"kind": "restart", "count": 2}))
                            .unwrap(),
                    ]
                },
                "alerts.rules[2].actions[0].count",
            ),
            (
                |r| {
                    r.actions = vec![
                        serde_json::from_value(
                            serde_json::json!({"kind": "scale_out", "count": 0}),
                        )
                        .unwrap(),
                    ]
                },
                "alerts.rules[2].actions[0].count",
            ),
            (
                |r| {
                    r.actions = vec![
                        serde_json::from_value(
                            serde_json::json!({"kind": "rollback", "retries": 99}),
                        )
                        .unwrap(),
                    ]
                },
                "alerts.rules[2].actions[0].retries",
            ),
        ];
        for (i, (breaks, key)) in cases.into_iter().enumerate() {
            let mut r = rule();
            breaks(&mut r);
            let err = r.validate("alerts.rules[2]").unwrap_err();
            assert_eq!(err.key(), key, "case {i}: {err}");
        }
    }

    #[test]
    fn the_table_refuses_a_name_twice_and_bad_loop_settings() {
        let mut config = AlertsConfig {
            rules: vec![rule(), rule()],
            ..AlertsConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().key(), "alerts.rules[1].name");
        config.rules.pop();
        config.validate().unwrap();
        config.queue = 0;
        assert_eq!(config.validate().unwrap_err().key(), "alerts.queue");
    }

    #[test]
    fn the_default_rules_are_valid_off_by_default_and_overridable() {
        for (i, rule) in default_rules().iter().enumerate() {
            rule.validate(&format!("default[{i}]")).unwrap();
        }
        let mut config = AlertsConfig::default();
        assert!(config.effective_rules().is_empty());
        config.defaults = true;
        assert_eq!(config.effective_rules().len(), 3);
        let mut mine = default_rules().remove(1);
        mine.threshold = 10.0;
        config.rules.push(mine);
        let rules = config.effective_rules();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].name, "default-error-ratio");
        assert_eq!(rules[0].threshold, 10.0, "the configured one wins");
    }

    #[test]
    fn toml_reads_the_documented_shape() {
        let text = r#"
            interval = "2s"
            [[rules]]
            name = "p99"
            metric = "http_request_duration_seconds"
            filter = "service:amazon"
            fn = "p99"
            scale = 1000.0
            op = "above"
            threshold = 200.0
            for = "1m"
            [[rules.actions]]
            kind = "scale_out"
            count = 2
        "#;
        let config: AlertsConfig = toml::from_str(text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.rules[0].for_, Duration::from_secs(60));
        assert_eq!(config.rules[0].actions[0].count(), 2);
    }
}
