//! The autoscaler: scales any service of the platform between a policy's minimum and
//! maximum — reactively on its utilisation, predictively on a schedule — through the
//! platform's instance start and stop.
//!
//! | module | role |
//! |---|---|
//! | [`config`] | the `[autoscaler]` table: loop settings, [`Policy`] per service, the schedule; validation naming the dotted key |
//! | [`signal`] | utilisation, defined (request rate or requests in flight over per-instance capacity, averaged over a window) and read from the metrics store; the [`UtilisationSignal`] trait tests feed |
//! | [`schedule`] | predictive entries: a floor from `at - lead` until `until`, once (RFC 3339) or daily (`HH:MM`, UTC) |
//! | [`decide`] | the pure decision over (policy, schedule, signal, live instances, clock, history) |
//! | [`act`] | starting (least-loaded zone the policy's placement allows: its own, else the service's declared spread, else the regions it runs in) and stopping (newest first, drained) instances |
//! | [`engine`] | [`Autoscaler`]: the loop, the bounded history, logs and metrics |
//! | [`api`] | `GET /api/autoscaler`, and policy and schedule changes at run time |
//!
//! **Guaranteed.** A service is scaled only once this platform has run an instance
//! of it (a policy does not start a case nobody asked for: its evaluations hold with
//! `not_started`); a scale-out places instances only in the zones its placement
//! allows, and records an error when that is none of the topology's; and the first tick comes one interval after the control plane
//! starts, so the instances `up` starts beside it come first. Each tick evaluates
//! every policy once, on the injected clock: the
//! decision is a pure function of its inputs ([`decide`]), so it is tested on a
//! `ManualClock` without sleeping. Live instances stay within `[min_instances,
//! max_instances]` (raised to a schedule's floor while it holds; an instance that
//! dies is replaced up to the floor on the next tick). Missing data decides nothing.
//! Reactive scale-outs are at least `cooldown_out` apart; a reactive scale-in comes
//! at least `cooldown_in` after any scaling, and never to a count whose projected
//! utilisation is at or above the high mark. Every evaluation is counted in
//! `autoscaler_decisions_total{service,direction,reason}` and sets
//! `autoscaler_desired_instances{service}` (and `autoscaler_utilisation{service}`
//! when read) — through the process's metrics recorder, so the pusher carries them
//! to the metrics store like every other metric; every evaluation is logged (actions
//! at INFO, failures at WARN, repeated holds at DEBUG) with its reason; actions and
//! changes of decision are kept in a bounded history (`autoscaler.history`). The
//! autoscaler stands down once the platform begins `stop_all`.
//!
//! **Not guaranteed.** Instances started by other processes (`casebook serve`) are
//! neither counted nor stopped. A start that fails is logged and recorded, and the
//! cooldown then spaces out retries (the floor rule retries every tick). Time spent
//! starting or draining is real time inside a tick (one tick at a time; the next
//! waits). Changes through the API are not persisted.

pub mod act;
pub mod api;
pub mod config;
pub mod decide;
pub mod engine;
pub mod schedule;
pub mod signal;

pub use config::{AutoscalerConfig, Policy};
pub use decide::{Decision, Direction, Reason};
pub use engine::{
    Autoscaler, AutoscalerView, DECISIONS_METRIC, DESIRED_METRIC, DecisionRecord,
    UTILISATION_METRIC,
};
pub use schedule::{ScheduleTime, ScheduledScale};
pub use signal::{FedSignal, Reading, SignalKind, StoreSignal, UtilisationSignal};
