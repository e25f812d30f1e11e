//! The decision: a pure function of the policy, the schedule, the signal, the live
//! instances, the time and the service's scaling history.
//!
//! Rules, first match wins:
//!
//! 1. **Floor.** Fewer than `max(min_instances, schedule floor)` live → out to it
//!    (`schedule` when the schedule's floor binds, else `below_min`). No signal or
//!    cooldown needed: a floor is a requirement, and this is what pre-scales ahead
//!    of a scheduled surge and replaces instances that died.
//! 2. **Ceiling.** More than `max_instances` → in to it (`above_max`).
//! 3. **Gap.** No reading → hold (`no_signal`): nothing is decided on missing data.
//! 4. **High.** Utilisation above `scale_out_above` → out by `step`, capped at
//!    `max_instances` (`above_high`); held at the maximum (`at_max`) or within
//!    `cooldown_out` of the last scale-out (`cooldown_out`).
//! 5. **Low.** Utilisation below `scale_in_below` → in by up to `step`, never below
//!    the floor (`below_low`); held at the floor (`at_min`, or `schedule_floor` while
//!    the schedule holds it), within `cooldown_in` of the last scaling of either
//!    direction (`cooldown_in`), or when even one instance fewer would put the
//!    projected utilisation (`u × n / (n − k)`) at or above `scale_out_above`
//!    (`would_overload`).
//! 6. Otherwise hold (`in_band`).
//!
//! **No flapping.** The band between the marks (validation keeps `scale_in_below <
//! scale_out_above`), the projection in rule 5 (a scale-in never lands where rule 4
//! would scale out again at the same load), and `cooldown_in` counted from scale-outs
//! too (a fresh instance is given time before the service shrinks).

use std::time::{Instant, SystemTime};

use casebook_kit::clock::Clock;
use serde::Serialize;

use super::config::Policy;
use super::schedule::{self, ScheduledScale};

/// Which way a decision goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Out,
    In,
    Hold,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Out => "out",
            Self::In => "in",
            Self::Hold => "hold",
        }
    }
}

/// Why (a metric label: a small fixed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Out: the schedule's floor is above the live instances.
    Schedule,
    /// Out: fewer live instances than `min_instances`.
    BelowMin,
    /// In: more than `max_instances`.
    AboveMax,
    /// Out: utilisation above `scale_out_above`.
    AboveHigh,
    /// In: utilisation below `scale_in_below`.
    BelowLow,
    /// Hold: no reading.
    NoSignal,
    /// Hold: utilisation between the marks.
    InBand,
    /// Hold: above the high mark at `max_instances`.
    AtMax,
    /// Hold: below the low mark at `min_instances`.
    AtMin,
    /// Hold: below the low mark at the schedule's floor.
    ScheduleFloor,
    /// Hold: above the high mark within `cooldown_out` of the last scale-out.
    CooldownOut,
    /// Hold: below the low mark within `cooldown_in` of the last scaling.
    CooldownIn,
    /// Hold: below the low mark, but one instance fewer would be above the high one.
    WouldOverload,
    /// Hold: the platform has never run an instance of the service — the autoscaler
    /// scales what runs, it does not start a case nobody asked for.
    NotStarted,
    /// Out: an alert's runbook asked for more ([`crate::alerts`]).
    Alert,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::BelowMin => "below_min",
            Self::AboveMax => "above_max",
            Self::AboveHigh => "above_high",
            Self::BelowLow => "below_low",
            Self::NoSignal => "no_signal",
            Self::InBand => "in_band",
            Self::AtMax => "at_max",
            Self::AtMin => "at_min",
            Self::ScheduleFloor => "schedule_floor",
            Self::CooldownOut => "cooldown_out",
            Self::CooldownIn => "cooldown_in",
            Self::WouldOverload => "would_overload",
            Self::NotStarted => "not_started",
            Self::Alert => "alert",
        }
    }
}

/// When the service last scaled (what the cooldowns count from).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScalingHistory {
    pub last_out: Option<Instant>,
    pub last_in: Option<Instant>,
}

impl ScalingHistory {
    fn last_any(&self) -> Option<Instant> {
        self.last_out.max(self.last_in)
    }
}

/// A moment on the injected clock: monotonic for cooldowns, wall for the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    pub now: Instant,
    pub wall: SystemTime,
}

impl Moment {
    pub fn of(clock: &dyn Clock) -> Self {
        Self {
            now: clock.now(),
            wall: clock.wall(),
        }
    }
}

/// What to do: go `from` → `to` live instances, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub from: u32,
    pub to: u32,
    pub direction: Direction,
    pub reason: Reason,
}

impl Decision {
    pub(crate) fn hold(current: u32, reason: Reason) -> Self {
        Self {
            from: current,
            to: current,
            direction: Direction::Hold,
            reason,
        }
    }

    fn to(current: u32, to: u32, reason: Reason) -> Self {
        let direction = if to > current {
            Direction::Out
        } else {
            Direction::In
        };
        Self {
            from: current,
            to,
            direction,
            reason,
        }
    }
}

/// Decides for `policy.service` (see the module docs). `utilisation` is the
/// signal's reading, `None` for a gap; `current` the live instances.
pub fn decide(
    policy: &Policy,
    schedule: &[ScheduledScale],
    utilisation: Option<f64>,
    current: u32,
    at: Moment,
    history: &ScalingHistory,
) -> Decision {
    let scheduled = schedule::floor(schedule, &policy.service, at.wall)
        .map(|floor| floor.min(policy.max_instances));
    let floor = scheduled.unwrap_or(0).max(policy.min_instances);
    if current < floor {
        let reason = if scheduled.is_some_and(|s| s > policy.min_instances) {
            Reason::Schedule
        } else {
            Reason::BelowMin
        };
        return Decision::to(current, floor, reason);
    }
    if current > policy.max_instances {
        return Decision::to(current, policy.max_instances, Reason::AboveMax);
    }
    let Some(utilisation) = utilisation else {
        return Decision::hold(current, Reason::NoSignal);
    };
    let within = |last: Option<Instant>, cooldown| {
        last.is_some_and(|last| at.now.saturating_duration_since(last) < cooldown)
    };
    if utilisation > policy.scale_out_above {
        if current >= policy.max_instances {
            return Decision::hold(current, Reason::AtMax);
        }
        if within(history.last_out, policy.cooldown_out) {
            return Decision::hold(current, Reason::CooldownOut);
        }
        let to = current
            .saturating_add(policy.step)
            .min(policy.max_instances);
        return Decision::to(current, to, Reason::AboveHigh);
    }
    if utilisation < policy.scale_in_below {
        if current <= floor {
            let reason = if scheduled.is_some_and(|s| s > policy.min_instances) {
                Reason::ScheduleFloor
            } else {
                Reason::AtMin
            };
            return Decision::hold(current, reason);
        }
        if within(history.last_any(), policy.cooldown_in) {
            return Decision::hold(current, Reason::CooldownIn);
        }
        // The most instances (up to `step`, down to the floor) that can go while the
        // rest stay below the high mark at today's load.
        let most = policy.step.min(current - floor);
        let projected = |k: u32| utilisation * f64::from(current) / f64::from(current - k);
        return match (1..=most)
            .rev()
            .find(|&k| projected(k) < policy.scale_out_above)
        {
            Some(k) => Decision::to(current, current - k, Reason::BelowLow),
            None => Decision::hold(current, Reason::WouldOverload),
        };
    }
    Decision::hold(current, Reason::InBand)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use casebook_kit::clock::ManualClock;

    use super::*;
    use crate::autoscaler::schedule::ScheduleTime;

    fn policy() -> Policy {
        serde_json::from_value(serde_json::json!({
            "service": "api", "min_instances": 2, "max_instances": 6, "capacity": 100.0,
            "cooldown_out": "60s", "cooldown_in": "300s", "step": 2
        }))
        .unwrap()
    }

    /// A test's time and history, as the engine keeps them.
    struct Run {
        clock: ManualClock,
        history: ScalingHistory,
        policy: Policy,
        schedule: Vec<ScheduledScale>,
    }

    impl Run {
        fn new() -> Self {
            Self {
                clock: ManualClock::new(),
                history: ScalingHistory::default(),
                policy: policy(),
                schedule: Vec::new(),
            }
        }

        /// Decides, and records an action as the engine does.
        fn decide(&mut self, utilisation: Option<f64>, current: u32) -> Decision {
            let at = Moment::of(&self.clock);
            let d = decide(
                &self.policy,
                &self.schedule,
                utilisation,
                current,
                at,
                &self.history,
            );
            match d.direction {
                Direction::Out => self.history.last_out = Some(at.now),
                Direction::In => self.history.last_in = Some(at.now),
                Direction::Hold => {}
            }
            d
        }

        fn wait(&self, secs: u64) {
            self.clock.advance(Duration::from_secs(secs));
        }
    }

    fn moved(from: u32, to: u32, reason: Reason) -> Decision {
        Decision::to(from, to, reason)
    }

    fn held(at: u32, reason: Reason) -> Decision {
        Decision::hold(at, reason)
    }

    #[test]
    fn above_the_high_mark_scales_out_by_step_then_cools_down() {
        let mut run = Run::new();
        assert_eq!(run.decide(Some(0.9), 2), moved(2, 4, Reason::AboveHigh));
        run.wait(59);
        assert_eq!(run.decide(Some(0.9), 4), held(4, Reason::CooldownOut));
        run.wait(1);
        assert_eq!(run.decide(Some(0.9), 4), moved(4, 6, Reason::AboveHigh));
    }

    #[test]
    fn scale_out_stops_at_max_and_never_passes_it() {
        let mut run = Run::new();
        assert_eq!(
            run.decide(Some(0.95), 5),
            moved(5, 6, Reason::AboveHigh),
            "capped"
        );
        run.wait(3600);
        assert_eq!(run.decide(Some(5.0), 6), held(6, Reason::AtMax));
        assert_eq!(
            run.decide(None, 8),
            moved(8, 6, Reason::AboveMax),
            "no signal needed"
        );
    }

    #[test]
    fn below_the_low_mark_scales_in_after_the_cooldown_of_any_scaling() {
        let mut run = Run::new();
        assert_eq!(run.decide(Some(0.9), 4), moved(4, 6, Reason::AboveHigh));
        // Load falls at once: the fresh instances are kept for cooldown_in.
        run.wait(299);
        assert_eq!(run.decide(Some(0.1), 6), held(6, Reason::CooldownIn));
        run.wait(1);
        assert_eq!(run.decide(Some(0.1), 6), moved(6, 4, Reason::BelowLow));
        run.wait(299);
        assert_eq!(run.decide(Some(0.1), 4), held(4, Reason::CooldownIn));
        run.wait(1);
        assert_eq!(run.decide(Some(0.1), 4), moved(4, 2, Reason::BelowLow));
        run.wait(300);
        assert_eq!(run.decide(Some(0.0), 2), held(2, Reason::AtMin));
    }

    #[test]
    fn a_scale_out_is_not_held_by_a_recent_scale_in() {
        let mut run = Run::new();
        run.history.last_in = Some(run.clock.now());
        assert_eq!(run.decide(Some(0.8), 3), moved(3, 5, Reason::AboveHigh));
    }

    #[test]
    fn scale_in_never_lands_above_the_high_mark() {
        let mut run = Run::new();
        run.policy.scale_in_below = 0.5;
        run.policy.min_instances = 1;
        // 0.45 on 3: two fewer would be 1.35, one fewer 0.675 (< 0.70).
        assert_eq!(run.decide(Some(0.45), 3), moved(3, 2, Reason::BelowLow));
        run.wait(300);
        // 0.45 on 2: one fewer would be 0.9, above the high mark.
        assert_eq!(run.decide(Some(0.45), 2), held(2, Reason::WouldOverload));
    }

    #[test]
    fn between_the_marks_nothing_happens_and_a_gap_decides_nothing() {
        let mut run = Run::new();
        for u in [0.30, 0.5, 0.70] {
            assert_eq!(run.decide(Some(u), 3), held(3, Reason::InBand), "{u}");
        }
        assert_eq!(run.decide(None, 3), held(3, Reason::NoSignal));
        assert_eq!(run.history, ScalingHistory::default());
    }

    #[test]
    fn below_min_is_restored_without_a_signal_or_cooldown() {
        let mut run = Run::new();
        run.history.last_out = Some(run.clock.now());
        assert_eq!(run.decide(None, 0), moved(0, 2, Reason::BelowMin));
    }

    #[test]
    fn a_schedule_pre_scales_lead_ahead_holds_the_floor_and_releases_it_after() {
        let mut run = Run::new(); // starts 2026-01-01T00:00:00Z
        run.schedule.push(ScheduledScale {
            service: "api".into(),
            at: ScheduleTime::parse("2026-01-01T01:00:00Z").unwrap(),
            until: ScheduleTime::parse("2026-01-01T02:00:00Z").unwrap(),
            instances: 5,
            lead: Duration::from_secs(600),
        });
        assert_eq!(run.decide(Some(0.5), 2), held(2, Reason::InBand));
        run.wait(50 * 60 - 1);
        assert_eq!(
            run.decide(Some(0.5), 2),
            held(2, Reason::InBand),
            "before the lead"
        );
        run.wait(1);
        // 00:50, ten minutes before the surge: up to the floor, idle or not.
        assert_eq!(run.decide(Some(0.05), 2), moved(2, 5, Reason::Schedule));
        run.wait(30 * 60);
        assert_eq!(run.decide(Some(0.05), 5), held(5, Reason::ScheduleFloor));
        // The reactive rule still works above the floor.
        assert_eq!(run.decide(Some(0.9), 5), moved(5, 6, Reason::AboveHigh));
        run.wait(40 * 60);
        // 02:00: released, and long past every cooldown.
        assert_eq!(run.decide(Some(0.05), 6), moved(6, 4, Reason::BelowLow));
    }

    #[test]
    fn a_schedule_above_max_is_capped_at_max() {
        let mut run = Run::new();
        run.schedule.push(ScheduledScale {
            service: "api".into(),
            at: ScheduleTime::parse("00:00").unwrap(),
            until: ScheduleTime::parse("12:00").unwrap(),
            instances: 9,
            lead: Duration::ZERO,
        });
        assert_eq!(run.decide(None, 2), moved(2, 6, Reason::Schedule));
    }
}
