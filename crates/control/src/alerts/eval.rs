//! The evaluation: a pure function of a rule, its alerts' states, the values read
//! and the time — Prometheus's `for` semantics.
//!
//! Each group of a rule's value (each `group_by` combination; one when there is
//! none) is an alert with a state:
//!
//! - **inactive** → **pending** when the condition holds (`value > threshold` for
//!   `above`, `<` for `below`); pending → **inactive** (silently: nothing was
//!   announced) as soon as it does not.
//! - pending → **firing** once the condition has held for `for` without a break
//!   (with `for = 0`, inactive → firing at once). Firing is announced: the
//!   rule's actions run.
//! - firing → **resolved** (announced; the actions with `on_resolve` run) once the
//!   value is back past `clear` — at or below it for `above`, at or above it for
//!   `below`. `clear` defaults to the threshold; set apart from it, it is the
//!   hysteresis that keeps a value hovering at the threshold from flapping. A
//!   resolved alert is inactive again.
//!
//! **No data** (a group that read no value, or the whole rule when the store
//! refused the query) follows the rule's `no_data`: `keep_state` (default) changes
//! nothing — a pending alert's `for` keeps counting from when it began, so one that
//! comes back still breaching may fire at once; `alerting` treats it as the
//! condition holding; `ok` as not. An inactive alert without data is forgotten
//! (a group that went away leaves nothing behind); only an ungrouped rule under
//! `alerting` raises an alert from no data at all.
//!
//! **Bounded.** A rule keeps at most [`MAX_ALERTS_PER_RULE`] alerts; groups beyond
//! are not evaluated (and counted in the result).

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::config::{NoData, Op, Rule};
use super::source::{Labels, Values};

/// The most alerts (groups) one rule tracks.
pub const MAX_ALERTS_PER_RULE: usize = 1000;

/// Where an alert is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    #[default]
    Inactive,
    Pending,
    Firing,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inactive => "inactive",
            Self::Pending => "pending",
            Self::Firing => "firing",
        }
    }
}

/// A moment on the injected clock: monotonic for `for`, wall for what is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    pub now: Instant,
    pub wall: SystemTime,
}

impl Moment {
    pub fn of(clock: &dyn casebook_kit::clock::Clock) -> Self {
        Self {
            now: clock.now(),
            wall: clock.wall(),
        }
    }
}

/// One alert's state.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AlertState {
    pub phase: Phase,
    /// When the condition began to hold (pending or firing).
    pub active_since: Option<Moment>,
    /// When it fired (Alertmanager's `startsAt`).
    pub firing_since: Option<SystemTime>,
    /// The last value read; `None` for no data.
    pub value: Option<f64>,
}

/// An announced change: firing or resolved. (Pending and back are not announced.)
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Firing,
    Resolved,
}

impl Event {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// A change of one alert's phase.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub labels: Labels,
    pub from: Phase,
    pub to: Phase,
    /// Set when the change is announced (its actions run).
    pub event: Option<Event>,
    /// The value that made it; `None` for no data.
    pub value: Option<f64>,
    /// When it fired (`startsAt`).
    pub firing_since: Option<SystemTime>,
    pub at: Moment,
}

/// What one evaluation of a rule did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    pub transitions: Vec<Transition>,
    /// Groups not evaluated: the rule had [`MAX_ALERTS_PER_RULE`] already.
    pub groups_over_limit: usize,
}

/// Whether `value` breaches the rule's threshold.
fn breaches(rule: &Rule, value: f64) -> bool {
    match rule.op {
        Op::Above => value > rule.threshold,
        Op::Below => value < rule.threshold,
    }
}

/// Whether a firing alert at `value` is back past `clear`.
fn cleared(rule: &Rule, value: f64) -> bool {
    match rule.op {
        Op::Above => value <= rule.clear_level(),
        Op::Below => value >= rule.clear_level(),
    }
}

/// Evaluates `rule` once: `values` is what was read (`Err`: the whole rule has no
/// data), `alerts` its alerts' states, updated in place. Returns the transitions.
pub fn evaluate(
    rule: &Rule,
    values: &Result<Values, String>,
    alerts: &mut BTreeMap<Labels, AlertState>,
    at: Moment,
) -> Outcome {
    let mut outcome = Outcome::default();
    let empty = Values::new();
    let values = values.as_ref().unwrap_or(&empty);
    // Every group read, and every alert known; an ungrouped rule always has its one.
    let mut groups: Vec<Labels> = alerts.keys().cloned().collect();
    for labels in values.keys() {
        if !alerts.contains_key(labels) {
            if groups.len() >= MAX_ALERTS_PER_RULE {
                outcome.groups_over_limit += 1;
                continue;
            }
            groups.push(labels.clone());
        }
    }
    if rule.group_by.is_empty() && !groups.iter().any(Labels::is_empty) {
        groups.push(Labels::new());
    }
    for labels in groups {
        let value = values.get(&labels).copied();
        let state = alerts.get(&labels).copied().unwrap_or_default();
        let (next, transition) = step(rule, state, value, at);
        if let Some(mut transition) = transition {
            transition.labels = labels.clone();
            outcome.transitions.push(transition);
        }
        if next.phase == Phase::Inactive && value.is_none() {
            alerts.remove(&labels);
        } else {
            alerts.insert(labels, next);
        }
    }
    outcome
}

/// One alert's next state given the value read (`None`: no data).
pub fn step(
    rule: &Rule,
    state: AlertState,
    value: Option<f64>,
    at: Moment,
) -> (AlertState, Option<Transition>) {
    // What the condition is this time: held, not held, or (keep_state) unknown.
    let (holds, clears) = match value {
        Some(v) => (breaches(rule, v), cleared(rule, v)),
        None => match rule.no_data {
            NoData::KeepState => {
                let mut kept = state;
                kept.value = None;
                return (kept, None);
            }
            NoData::Alerting => (true, false),
            NoData::Ok => (false, true),
        },
    };
    let mut next = AlertState { value, ..state };
    let to = match state.phase {
        Phase::Inactive | Phase::Pending if holds => {
            let since = state.active_since.unwrap_or(at);
            next.active_since = Some(since);
            if at.now.saturating_duration_since(since.now) >= rule.for_ {
                Phase::Firing
            } else {
                Phase::Pending
            }
        }
        Phase::Inactive | Phase::Pending => {
            next.active_since = None;
            Phase::Inactive
        }
        Phase::Firing if clears => {
            next.active_since = None;
            Phase::Inactive
        }
        Phase::Firing => Phase::Firing,
    };
    let event = match (state.phase, to) {
        (Phase::Firing, Phase::Inactive) => Some(Event::Resolved),
        (from, Phase::Firing) if from != Phase::Firing => {
            next.firing_since = Some(at.wall);
            Some(Event::Firing)
        }
        _ => None,
    };
    let firing_since = next.firing_since;
    if to == Phase::Inactive {
        next.firing_since = None;
    }
    next.phase = to;
    let transition = (state.phase != to).then(|| Transition {
        labels: Labels::new(),
        from: state.phase,
        to,
        event,
        value,
        firing_since,
        at,
    });
    (next, transition)
}

/// How long an alert has been in its phase, for display.
pub fn active_for(state: &AlertState, at: Moment) -> Option<Duration> {
    state
        .active_since
        .map(|since| at.now.saturating_duration_since(since.now))
}

#[cfg(test)]
mod tests {
    use casebook_kit::clock::ManualClock;

    use super::*;
    use crate::alerts::source::{FedSource, change_per_second, rule_values};

    fn rule(json: serde_json::Value) -> Rule {
        let mut base = serde_json::json!({
            "name": "r", "metric": "m", "op": "above", "threshold": 10.0, "for": "30s"
        });
        base.as_object_mut()
            .unwrap()
            .extend(json.as_object().unwrap().clone());
        let rule: Rule = serde_json::from_value(base).unwrap();
        rule.validate("").unwrap();
        rule
    }

    /// One ungrouped rule's alert driven on a manual clock.
    struct Run {
        rule: Rule,
        clock: ManualClock,
        alerts: BTreeMap<Labels, AlertState>,
    }

    impl Run {
        fn new(rule: Rule) -> Self {
            Self {
                rule,
                clock: ManualClock::new(),
                alerts: BTreeMap::new(),
            }
        }

        /// Reads `value` now; the announced event, if any.
        fn read(&mut self, value: Option<f64>) -> Option<Event> {
            let values = Ok(value.map(|v| (Labels::new(), v)).into_iter().collect());
            self.read_all(&values)
        }

        fn read_all(&mut self, values: &Result<Values, String>) -> Option<Event> {
            let at = Moment::of(&self.clock);
            let outcome = evaluate(&self.rule, values, &mut self.alerts, at);
            assert!(outcome.transitions.len() <= 1, "{outcome:?}");
            outcome.transitions.into_iter().next().and_then(|t| t.event)
        }

        fn phase(&self) -> Phase {
            self.alerts
                .get(&Labels::new())
                .map_or(Phase::Inactive, |s| s.phase)
        }

        fn wait(&self, secs: u64) {
            self.clock.advance(Duration::from_secs(secs));
        }
    }

    #[test]
    fn pending_fires_after_for_and_resolves_when_it_clears() {
        let mut run = Run::new(rule(serde_json::json!({})));
        assert_eq!(run.read(Some(5.0)), None);
        assert_eq!(run.phase(), Phase::Inactive);
        assert_eq!(run.read(Some(11.0)), None);
        assert_eq!(run.phase(), Phase::Pending);
        run.wait(29);
        assert_eq!(run.read(Some(12.0)), None, "29 s of 30");
        assert_eq!(run.phase(), Phase::Pending);
        run.wait(1);
        assert_eq!(run.read(Some(12.0)), Some(Event::Firing));
        let fired_at = run.alerts[&Labels::new()].firing_since.unwrap();
        run.wait(60);
        assert_eq!(run.read(Some(50.0)), None, "still firing: announced once");
        assert_eq!(run.alerts[&Labels::new()].firing_since, Some(fired_at));
        assert_eq!(
            run.read(Some(10.0)),
            Some(Event::Resolved),
            "at the threshold clears"
        );
        assert_eq!(run.phase(), Phase::Inactive);
        assert_eq!(run.alerts[&Labels::new()].firing_since, None);
    }

    #[test]
    fn a_break_while_pending_restarts_the_for_clock_silently() {
        let mut run = Run::new(rule(serde_json::json!({})));
        run.read(Some(11.0));
        run.wait(20);
        assert_eq!(run.read(Some(9.0)), None, "back to inactive, not announced");
        assert_eq!(run.phase(), Phase::Inactive);
        run.wait(1);
        run.read(Some(11.0));
        run.wait(29);
        assert_eq!(run.read(Some(11.0)), None, "counted from the new start");
        run.wait(1);
        assert_eq!(run.read(Some(11.0)), Some(Event::Firing));
    }

    #[test]
    fn for_zero_fires_at_once_and_below_is_the_mirror() {
        let mut run = Run::new(rule(
            serde_json::json!({"for": "0s", "op": "below", "threshold": 2.0}),
        ));
        assert_eq!(
            run.read(Some(2.0)),
            None,
            "at the threshold is not below it"
        );
        assert_eq!(run.read(Some(1.0)), Some(Event::Firing));
        assert_eq!(run.read(Some(2.0)), Some(Event::Resolved));
    }

    #[test]
    fn hysteresis_holds_a_firing_alert_until_the_value_passes_clear() {
        let mut run = Run::new(rule(serde_json::json!({"for": "0s", "clear": 8.0})));
        assert_eq!(run.read(Some(10.5)), Some(Event::Firing));
        for v in [9.9, 8.1, 10.0, 9.0] {
            assert_eq!(
                run.read(Some(v)),
                None,
                "{v} is between clear and threshold"
            );
            assert_eq!(run.phase(), Phase::Firing);
        }
        assert_eq!(run.read(Some(8.0)), Some(Event::Resolved));
        assert_eq!(
            run.read(Some(9.0)),
            None,
            "below the threshold: no new alert"
        );
    }

    #[test]
    fn no_data_keeps_state_by_default() {
        let mut run = Run::new(rule(serde_json::json!({})));
        run.read(Some(11.0));
        run.wait(20);
        assert_eq!(run.read(None), None);
        assert_eq!(run.phase(), Phase::Pending, "kept");
        run.wait(10);
        assert_eq!(
            run.read(Some(11.0)),
            Some(Event::Firing),
            "for counted through the gap"
        );
        run.wait(60);
        assert_eq!(run.read_all(&Err("refused".into())), None);
        assert_eq!(run.phase(), Phase::Firing, "a refused query is no data");
        assert_eq!(run.alerts[&Labels::new()].value, None);
        // An inactive alert without data is forgotten.
        let mut quiet = Run::new(rule(serde_json::json!({})));
        quiet.read(None);
        assert!(quiet.alerts.is_empty());
    }

    #[test]
    fn no_data_can_alert_or_count_as_ok() {
        let mut alerting = Run::new(rule(
            serde_json::json!({"no_data": "alerting", "for": "10s"}),
        ));
        assert_eq!(alerting.read(None), None);
        assert_eq!(alerting.phase(), Phase::Pending);
        alerting.wait(10);
        assert_eq!(alerting.read(None), Some(Event::Firing));
        assert_eq!(alerting.read(Some(3.0)), Some(Event::Resolved));

        let mut ok = Run::new(rule(serde_json::json!({"no_data": "ok", "for": "0s"})));
        assert_eq!(ok.read(Some(20.0)), Some(Event::Firing));
        assert_eq!(ok.read(None), Some(Event::Resolved));
        assert!(ok.alerts.is_empty(), "inactive without data: forgotten");
    }

    #[test]
    fn groups_are_alerts_of_their_own() {
        let mut run = Run::new(rule(
            serde_json::json!({"for": "0s", "group_by": ["instance"]}),
        ));
        let a: Labels = [("instance".to_owned(), "a".to_owned())].into();
        let b: Labels = [("instance".to_owned(), "b".to_owned())].into();
        let at = Moment::of(&run.clock);
        let values = Ok(Values::from([(a.clone(), 20.0), (b.clone(), 1.0)]));
        let outcome = evaluate(&run.rule, &values, &mut run.alerts, at);
        assert_eq!(outcome.transitions.len(), 1);
        assert_eq!(outcome.transitions[0].labels, a);
        assert_eq!(run.alerts[&a].phase, Phase::Firing);
        assert_eq!(run.alerts[&b].phase, Phase::Inactive);
        assert!(
            !run.alerts.contains_key(&Labels::new()),
            "a grouped rule has no ungrouped alert"
        );
        // `a` goes away: kept firing (keep_state); `b` goes away: forgotten.
        let outcome = evaluate(&run.rule, &Ok(Values::new()), &mut run.alerts, at);
        assert!(outcome.transitions.is_empty());
        assert_eq!(run.alerts.keys().collect::<Vec<_>>(), vec![&a]);
    }

    #[test]
    fn rate_of_change_fires_on_the_slope() {
        let fed = FedSource::new();
        let mut run = Run::new(rule(serde_json::json!({
            "kind": "rate_of_change", "change_window": "10s", "threshold": 5.0, "for": "0s"
        })));
        fed.set_one("r", Some(100.0));
        fed.set_then("r", Values::from([(Labels::new(), 80.0)]));
        let values = rule_values(&fed, &run.rule);
        assert_eq!(values, Ok(Values::from([(Labels::new(), 2.0)])));
        assert_eq!(run.read_all(&values), None, "2/s is not above 5/s");
        fed.set_one("r", Some(160.0));
        let values = rule_values(&fed, &run.rule);
        assert_eq!(run.read_all(&values), Some(Event::Firing), "8/s");
        fed.set_then("r", Values::new());
        let values = rule_values(&fed, &run.rule);
        assert_eq!(values, Ok(Values::new()), "no earlier value: no slope");
        assert_eq!(
            change_per_second(
                &Values::from([(Labels::new(), 0.0)]),
                &Values::from([(Labels::new(), 30.0)]),
                Duration::from_secs(10)
            )[&Labels::new()],
            -3.0
        );
    }

    #[test]
    fn the_groups_of_a_rule_are_bounded() {
        let mut run = Run::new(rule(serde_json::json!({"group_by": ["i"]})));
        let values: Values = (0..MAX_ALERTS_PER_RULE + 5)
            .map(|n| (Labels::from([("i".to_owned(), n.to_string())]), 11.0))
            .collect();
        let at = Moment::of(&run.clock);
        let outcome = evaluate(&run.rule, &Ok(values), &mut run.alerts, at);
        assert_eq!(outcome.groups_over_limit, 5);
        assert_eq!(run.alerts.len(), MAX_ALERTS_PER_RULE);
    }
}
