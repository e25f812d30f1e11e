//! Alerts with automated runbooks: rules on the metrics store's values, evaluated
//! on the injected clock with Prometheus's `for` semantics, each with actions that
//! run when an alert fires (and, optionally, when it resolves): restart an
//! instance, roll back the last deploy, scale out through the autoscaler, call a
//! webhook in Alertmanager's shape.
//!
//! | module | role |
//! |---|---|
//! | [`config`] | the `[alerts]` table: loop settings, [`Rule`]s with their [`Action`]s; validation naming the dotted key |
//! | [`source`] | a rule's value — rate, gauge, percentile, ratio, scaled; its change per second — read from the store ([`StoreSource`]) or fed ([`FedSource`]) |
//! | [`eval`] | the pure evaluation: inactive → pending → firing → resolved, hysteresis, no data |
//! | [`actions`] | the runbook's actions behind small traits ([`Restarter`], [`DeployRollback`], [`ScaleOut`], [`WebhookSender`]), one run with bounded retries |
//! | [`webhook`] | the Alertmanager webhook payload |
//! | [`engine`] | [`Alerts`]: the loop, the cooldowns, the bounded action queue and its worker, the bounded log, metrics |
//! | [`api`] | `GET /api/alerts`, rule CRUD at run time |
//!
//! **Guaranteed.** Each tick evaluates every rule once, on the injected clock: the
//! transitions are a pure function of the rule, its alerts' states, the values
//! read and the time ([`eval`]), tested on a `ManualClock`. A firing or resolved
//! alert queues each of its actions (resolve only those with `on_resolve`) unless
//! the same alert ran that action within its cooldown (counted on the injected
//! clock per rule, action, event and target); the queue holds at most
//! `alerts.queue` runs (a run beyond is not queued), [`CONCURRENT_ACTIONS`] execute
//! at once, each makes at most `1 + retries` attempts. Every run — done, failed,
//! skipped for its cooldown, dropped from a full queue, or unavailable (no
//! deployer or autoscaler) — is logged, counted in
//! `alert_actions_total{rule,action,outcome}` and kept in the log. Deleting a
//! rule, or replacing its condition, announces its firing alerts resolved. Every
//! transition is logged and kept; `alerts_firing{rule}` counts each rule's firing
//! alerts. The log keeps at most `alerts.log` entries, a rule at most
//! [`eval::MAX_ALERTS_PER_RULE`] alerts, the engine at most [`config::MAX_RULES`]
//! rules. Evaluation never waits for an action. Each tick also sets
//! `platform_live_instances{service}` from the platform, so rules can watch
//! instance counts. The engine stands down once the platform begins `stop_all`.
//!
//! **Not guaranteed.** State lives in memory: a restarted control plane starts
//! with every alert inactive (and an empty store, so rules read no data for a
//! while). A webhook is delivered at most `1 + retries` times and
//! not persisted; a receiver that is down longer loses it. Actions under way when
//! the control plane stops are abandoned. Time spent acting is real time.

pub mod actions;
pub mod api;
pub mod config;
pub mod engine;
pub mod eval;
pub mod source;
pub mod webhook;

pub use actions::{
    ActionRun, DeployRollback, Effectors, HttpWebhook, Outcome, PlatformRestarter, Restarter,
    ScaleOut, WebhookSender,
};
pub use config::{Action, ActionKind, AlertsConfig, NoData, Op, Rule, RuleKind};
pub use engine::{
    ACTIONS_METRIC, Alerts, AlertsView, CONCURRENT_ACTIONS, FIRING_METRIC, LIVE_INSTANCES_METRIC,
    LogEntry, RuleView,
};
pub use eval::{Event, Phase};
pub use source::{FedSource, StoreSource, ValueSource};
