//! Automated runbooks: what an alert's actions do, and how one run is carried out.
//!
//! Each action kind acts through a small trait, so the engine is tested with fakes
//! and the control plane wires the real ones ([`Effectors`]):
//!
//! | kind | trait | real implementation |
//! |---|---|---|
//! | `restart` | [`Restarter`] | [`PlatformRestarter`]: the instance the alert's `instance` label names — stopped gracefully if live, then started again with the same spec (id, zone, address, version); or, without such a label, every instance of the service, one after the other (live ones, and killed or failed ones the platform still lists; gracefully stopped ones are left stopped) |
//! | `rollback` | [`DeployRollback`] | the deployer's, wired by whoever builds it ([`Effectors::set_rollback`]); without one a run is recorded `unavailable` |
//! | `scale_out` | [`ScaleOut`] | the [`Autoscaler`]: `count` more instances, capped at its policy's `max_instances`, kept in its history with reason `alert` and `requested_by = "alert:<rule>"` |
//! | `webhook` | [`WebhookSender`] | [`HttpWebhook`]: a POST of Alertmanager's webhook payload ([`super::webhook`]) through the kit's HTTP client, with the action's timeout |
//!
//! **One run** ([`execute`]) makes at most `1 + retries` attempts, retry `n`
//! waiting `n × retry_backoff`, and ends with one [`ActionRun`]: its outcome, the
//! attempts made, and what the last attempt said.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use casebook_kit::http_client::HttpClient;
use casebook_kit::runtime::{BoxFuture, InstanceSpec, StartError, WeakPlatform};
use casebook_kit::topology::Placement;
use parking_lot::RwLock;
use serde::Serialize;

use super::config::{Action, ActionKind};
use super::eval::Event;
use super::source::Labels;
use crate::autoscaler::Autoscaler;

/// Rolls back a service's last deploy. The deployer implements it; the alert
/// engine holds it as `Option<Arc<dyn DeployRollback>>` ([`Effectors::set_rollback`]).
pub trait DeployRollback: Send + Sync + fmt::Debug + 'static {
    /// Rolls `service` back to what ran before its last deploy; `Ok` says what was
    /// done (e.g. `"amazon 0.2.0 → 0.1.0"`), `Err` why not (no deploy to undo, a
    /// rollout under way, …).
    fn rollback_last<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<String, String>>;
}

/// Restarts instances.
pub trait Restarter: Send + Sync + fmt::Debug + 'static {
    /// Restarts one instance by id.
    fn restart_instance<'a>(
        &'a self,
        instance_id: &'a str,
    ) -> BoxFuture<'a, Result<String, String>>;
    /// Restarts every instance of `service` (see the module docs).
    fn restart_service<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<String, String>>;
}

/// Asks for more instances of a service.
pub trait ScaleOut: Send + Sync + fmt::Debug + 'static {
    /// `count` more instances of `service`, on behalf of `rule`.
    fn scale_out<'a>(
        &'a self,
        service: &'a str,
        count: u32,
        rule: &'a str,
    ) -> BoxFuture<'a, Result<String, String>>;
}

/// Delivers a webhook.
pub trait WebhookSender: Send + Sync + fmt::Debug + 'static {
    /// POSTs `body` as JSON to `url` within `timeout`; `Ok` on a 2xx answer.
    fn post<'a>(
        &'a self,
        url: &'a str,
        body: &'a serde_json::Value,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<String, String>>;
}

/// What the actions act through.
#[derive(Debug)]
pub struct Effectors {
    pub restarter: Arc<dyn Restarter>,
    /// `None`: scale-outs are recorded `unavailable`.
    pub scaler: Option<Arc<dyn ScaleOut>>,
    rollback: RwLock<Option<Arc<dyn DeployRollback>>>,
    pub webhook: Arc<dyn WebhookSender>,
}

impl Effectors {
    pub fn new(
        restarter: Arc<dyn Restarter>,
        scaler: Option<Arc<dyn ScaleOut>>,
        rollback: Option<Arc<dyn DeployRollback>>,
        webhook: Arc<dyn WebhookSender>,
    ) -> Self {
        Self {
            restarter,
            scaler,
            rollback: RwLock::new(rollback),
            webhook,
        }
    }

    /// Wires (or, with `None`, unwires) the deployer's rollback.
    pub fn set_rollback(&self, rollback: Option<Arc<dyn DeployRollback>>) {
        *self.rollback.write() = rollback;
    }

    /// Whether a deployer's rollback is wired.
    pub fn has_rollback(&self) -> bool {
        self.rollback.read().is_some()
    }

    fn rollback(&self) -> Option<Arc<dyn DeployRollback>> {
        self.rollback.read().clone()
    }
}

/// How a run ended (a metric label: a small fixed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// An attempt succeeded.
    Ok,
    /// Every attempt failed, or there was nothing to act on.
    Failed,
    /// Not run: the same alert ran this action within its cooldown.
    Cooldown,
    /// Not run: the action queue was full.
    Dropped,
    /// Not run: nothing can do it here (no deployer, no autoscaler).
    Unavailable,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Cooldown => "cooldown",
            Self::Dropped => "dropped",
            Self::Unavailable => "unavailable",
        }
    }
}

/// What an action acts on, resolved from the action and the alert's labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Instance(String),
    Service(String),
    Url(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Instance(id) => write!(f, "instance {id}"),
            Self::Service(service) => write!(f, "service {service}"),
            Self::Url(url) => write!(f, "{url}"),
        }
    }
}

/// The target of `action` for an alert labelled `labels`, or why there is none.
pub fn target(action: &Action, labels: &Labels) -> Result<Target, String> {
    let service = || {
        action
            .service
            .clone()
            .or_else(|| labels.get("service").cloned())
            .ok_or_else(|| {
                "the action names no service and the alert has no `service` label \
                 (group the rule by service, or set the action's service)"
                    .to_owned()
            })
    };
    match action.kind {
        ActionKind::Restart => match (&action.service, labels.get("instance")) {
            (None, Some(instance)) => Ok(Target::Instance(instance.clone())),
            _ => service().map(Target::Service),
        },
        ActionKind::Rollback | ActionKind::ScaleOut => service().map(Target::Service),
        ActionKind::Webhook => Ok(Target::Url(action.url.clone().unwrap_or_default())),
    }
}

/// One action to run for one alert's event.
#[derive(Debug, Clone)]
pub struct Job {
    pub rule: String,
    pub action: Action,
    pub event: Event,
    pub target: Target,
    /// The alert's labels (alertname, the rule's labels, the group's).
    pub labels: Labels,
    /// The webhook payload, built when the event happened.
    pub payload: serde_json::Value,
}

/// One run of an action, as the log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionRun {
    pub rule: String,
    pub action: ActionKind,
    pub event: Event,
    pub target: String,
    pub labels: Labels,
    pub outcome: Outcome,
    /// Attempts made (0 when it was not run).
    pub attempts: u32,
    /// What the last attempt said, or why it was not run.
    pub detail: String,
}

impl ActionRun {
    /// A run that did not happen.
    pub fn not_run(job: &Job, outcome: Outcome, detail: impl Into<String>) -> Self {
        Self {
            rule: job.rule.clone(),
            action: job.action.kind,
            event: job.event.clone(),
            target: job.target.to_string(),
            labels: job.labels.clone(),
            outcome,
            attempts: 0,
            detail: detail.into(),
        }
    }
}

/// Runs `job` through `effectors`: at most `1 + retries` attempts, retry `n`
/// after `n × backoff`.
pub async fn execute(effectors: &Effectors, job: &Job, backoff: Duration) -> ActionRun {
    let rollback = effectors.rollback();
    match (job.action.kind, &rollback, &effectors.scaler) {
        (ActionKind::Rollback, None, _) => {
            return ActionRun::not_run(
                job,
                Outcome::Unavailable,
                "no deployer is wired into the alert engine: nothing can roll back",
            );
        }
        (ActionKind::ScaleOut, _, None) => {
            return ActionRun::not_run(job, Outcome::Unavailable, "no autoscaler to scale through");
        }
        _ => {}
    }
    let attempts = 1 + job.action.retries();
    let mut last = String::new();
    for attempt in 1..=attempts {
        if attempt > 1 {
            tokio::time::sleep(backoff * (attempt - 1)).await;
        }
        let result = match (&job.target, job.action.kind) {
            (Target::Instance(id), ActionKind::Restart) => {
                effectors.restarter.restart_instance(id).await
            }
            (Target::Service(service), ActionKind::Restart) => {
                effectors.restarter.restart_service(service).await
            }
            (Target::Service(service), ActionKind::Rollback) => match &rollback {
                Some(rollback) => rollback.rollback_last(service).await,
                None => unreachable!("checked above"),
            },
            (Target::Service(service), ActionKind::ScaleOut) => match &effectors.scaler {
                Some(scaler) => {
                    scaler
                        .scale_out(service, job.action.count(), &job.rule)
                        .await
                }
                None => unreachable!("checked above"),
            },
            (Target::Url(url), ActionKind::Webhook) => {
                effectors
                    .webhook
                    .post(url, &job.payload, job.action.timeout())
                    .await
            }
            (target, kind) => Err(format!("a {} cannot act on {target}", kind.as_str())),
        };
        match result {
            Ok(detail) => {
                return ActionRun {
                    attempts: attempt,
                    detail,
                    ..ActionRun::not_run(job, Outcome::Ok, "")
                };
            }
            Err(error) => {
                tracing::debug!(rule = %job.rule, action = job.action.kind.as_str(),
                    target = %job.target, attempt, %error, "alert action attempt failed");
                last = error;
            }
        }
    }
    ActionRun {
        attempts,
        detail: last,
        ..ActionRun::not_run(job, Outcome::Failed, "")
    }
}

/// Restarts instances of the control plane's own platform.
#[derive(Debug, Clone)]
pub struct PlatformRestarter {
    platform: WeakPlatform,
    /// How long a live instance's graceful stop may drain.
    drain: Duration,
}

impl PlatformRestarter {
    pub fn new(platform: WeakPlatform, drain: Duration) -> Self {
        Self { platform, drain }
    }

    async fn restart(&self, instance_id: &str) -> Result<String, String> {
        let platform = self
            .platform
            .upgrade()
            .ok_or("the platform is shutting down")?;
        if platform.is_shutting_down() {
            return Err("the platform is shutting down".into());
        }
        let view = platform
            .list()
            .into_iter()
            .find(|v| v.info.instance_id == instance_id)
            .ok_or_else(|| format!("no instance `{instance_id}` on this platform"))?;
        if view.info.service == crate::CONTROL_SERVICE {
            return Err("the control plane cannot restart itself".into());
        }
        let was = serde_json::to_value(&view.state)
            .ok()
            .and_then(|v| v["state"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if view.state.is_live() {
            platform.stop(instance_id, self.drain).await;
        }
        let spec = |listen: SocketAddr| InstanceSpec {
            service: view.info.service.clone(),
            instance_id: Some(view.info.instance_id.clone()),
            placement: Placement {
                region: view.info.region.clone(),
                zone: view.info.zone.clone(),
            },
            listen,
            version: view.info.version.clone(),
            port_hint: None,
        };
        // Where it was, so its clients find it again; if that port has been taken
        // meanwhile, a free one (it is found through discovery either way).
        let started = match platform.start(spec(view.info.address)).await {
            Err(StartError::Bind(error)) if view.info.address.port() != 0 => {
                tracing::warn!(instance = instance_id, %error,
                    "restart: the old port is taken; starting on a free one");
                let mut free = view.info.address;
                free.set_port(0);
                platform.start(spec(free)).await
            }
            other => other,
        };
        let info = started.map_err(|e| format!("`{instance_id}` did not start again: {e}"))?;
        Ok(format!(
            "restarted {instance_id} ({was} before) at {}",
            info.address
        ))
    }
}

impl Restarter for PlatformRestarter {
    fn restart_instance<'a>(
        &'a self,
        instance_id: &'a str,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(self.restart(instance_id))
    }

    fn restart_service<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let platform = self
                .platform
                .upgrade()
                .ok_or("the platform is shutting down")?;
            // Live, killed or failed; a graceful stop was someone's decision.
            let mut ids: Vec<(u64, String)> = platform
                .list()
                .into_iter()
                .filter(|v| v.info.service == service)
                .filter(|v| {
                    !matches!(
                        v.state,
                        casebook_kit::runtime::InstanceState::Stopped
                            | casebook_kit::runtime::InstanceState::Stopping
                    )
                })
                .map(|v| (v.start_seq, v.info.instance_id))
                .collect();
            ids.sort();
            let ids: BTreeSet<String> = ids.into_iter().map(|(_, id)| id).collect();
            if ids.is_empty() {
                return Err(format!(
                    "no instance of `{service}` to restart (gracefully stopped ones are left \
                     stopped)"
                ));
            }
            // One after the other: a rolling restart never takes them all down at once.
            let mut done = Vec::new();
            let mut failed = Vec::new();
            for id in &ids {
                match self.restart(id).await {
                    Ok(detail) => done.push(detail),
                    Err(error) => failed.push(error),
                }
            }
            if failed.is_empty() {
                Ok(done.join("; "))
            } else {
                Err(format!(
                    "{} of {} restarts failed: {}",
                    failed.len(),
                    ids.len(),
                    failed.join("; ")
                ))
            }
        })
    }
}

impl ScaleOut for Autoscaler {
    fn scale_out<'a>(
        &'a self,
        service: &'a str,
        count: u32,
        rule: &'a str,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let record = self
                .request_scale_out(service, count, &format!("alert:{rule}"))
                .await?;
            Ok(format!(
                "{service} {} → {}: started {}",
                record.decision.from,
                record.decision.to,
                record.instances.join(", ")
            ))
        })
    }
}

/// Webhooks through the kit's HTTP client.
#[derive(Debug, Default)]
pub struct HttpWebhook;

impl WebhookSender for HttpWebhook {
    fn post<'a>(
        &'a self,
        url: &'a str,
        body: &'a serde_json::Value,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            // A client per call: its timeout is the action's. Webhooks are rare
            // (an alert's transitions), so the lost connection reuse costs nothing.
            let response = HttpClient::new(timeout)
                .call(axum::http::Method::POST, url, Some(body))
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!("{} answered {}", url, response.status))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Fails the first `failures` calls, then succeeds; counts every call.
    #[derive(Debug, Default)]
    struct Flaky {
        failures: u32,
        calls: AtomicU32,
    }

    impl Flaky {
        fn answer(&self, what: &str) -> Result<String, String> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n <= self.failures {
                Err(format!("{what} failed (call {n})"))
            } else {
                Ok(format!("{what} done (call {n})"))
            }
        }
    }

    impl Restarter for Flaky {
        fn restart_instance<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<String, String>> {
            Box::pin(async move { self.answer(&format!("restart {id}")) })
        }
        fn restart_service<'a>(&'a self, s: &'a str) -> BoxFuture<'a, Result<String, String>> {
            Box::pin(async move { self.answer(&format!("restart all {s}")) })
        }
    }

    impl DeployRollback for Flaky {
        fn rollback_last<'a>(&'a self, s: &'a str) -> BoxFuture<'a, Result<String, String>> {
            Box::pin(async move { self.answer(&format!("rollback {s}")) })
        }
    }

    impl WebhookSender for Flaky {
        fn post<'a>(
            &'a self,
            url: &'a str,
            _: &'a serde_json::Value,
            _: Duration,
        ) -> BoxFuture<'a, Result<String, String>> {
            Box::pin(async move { self.answer(url) })
        }
    }

    fn action(json: serde_json::Value) -> Action {
        serde_json::from_value(json).unwrap()
    }

    fn job(action: Action, labels: &[(&str, &str)]) -> Job {
        let labels: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Job {
            rule: "r".into(),
            target: target(&action, &labels).unwrap(),
            action,
            event: Event::Firing,
            labels,
            payload: serde_json::json!({}),
        }
    }

    fn effectors(restarter: Arc<Flaky>, rollback: Option<Arc<Flaky>>) -> Effectors {
        Effectors::new(
            restarter,
            None,
            rollback.map(|r| r as Arc<dyn DeployRollback>),
            Arc::new(Flaky::default()),
        )
    }

    #[test]
    fn the_target_is_the_instance_label_else_the_service() {
        let restart = action(serde_json::json!({"kind": "restart"}));
        let labels = |pairs: &[(&str, &str)]| -> Labels {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            target(
                &restart,
                &labels(&[("instance", "amazon-1"), ("service", "amazon")])
            ),
            Ok(Target::Instance("amazon-1".into()))
        );
        assert_eq!(
            target(&restart, &labels(&[("service", "amazon")])),
            Ok(Target::Service("amazon".into()))
        );
        let named = action(serde_json::json!({"kind": "restart", "service": "uber"}));
        assert_eq!(
            target(&named, &labels(&[("instance", "amazon-1")])),
            Ok(Target::Service("uber".into())),
            "the action's service wins"
        );
        let rollback = action(serde_json::json!({"kind": "rollback"}));
        assert!(
            target(&rollback, &Labels::new())
                .unwrap_err()
                .contains("no `service` label")
        );
    }

    #[tokio::test]
    async fn a_failing_action_is_retried_within_its_bound_and_recorded() {
        let restarter = Arc::new(Flaky {
            failures: 2,
            ..Flaky::default()
        });
        let fx = effectors(restarter.clone(), None);
        let run = execute(
            &fx,
            &job(
                action(serde_json::json!({"kind": "restart", "retries": 2})),
                &[("instance", "i-1")],
            ),
            Duration::ZERO,
        )
        .await;
        assert_eq!((run.outcome, run.attempts), (Outcome::Ok, 3));
        assert_eq!(run.detail, "restart i-1 done (call 3)");
        assert_eq!(run.target, "instance i-1");

        let restarter = Arc::new(Flaky {
            failures: 10,
            ..Flaky::default()
        });
        let fx = effectors(restarter.clone(), None);
        let run = execute(
            &fx,
            &job(
                action(serde_json::json!({"kind": "restart", "retries": 1})),
                &[("service", "amazon")],
            ),
            Duration::ZERO,
        )
        .await;
        assert_eq!((run.outcome, run.attempts), (Outcome::Failed, 2));
        assert_eq!(run.detail, "restart all amazon failed (call 2)");
        assert_eq!(
            restarter.calls.load(Ordering::SeqCst),
            2,
            "no more than 1 + retries"
        );
    }

    #[tokio::test]
    async fn rollback_goes_through_the_wired_deployer_or_is_unavailable() {
        let fx = effectors(Arc::new(Flaky::default()), None);
        let rollback = job(
            action(serde_json::json!({"kind": "rollback"})),
            &[("service", "amazon")],
        );
        let run = execute(&fx, &rollback, Duration::ZERO).await;
        assert_eq!((run.outcome, run.attempts), (Outcome::Unavailable, 0));
        let deployer = Arc::new(Flaky::default());
        fx.set_rollback(Some(deployer.clone()));
        let run = execute(&fx, &rollback, Duration::ZERO).await;
        assert_eq!(run.outcome, Outcome::Ok);
        assert_eq!(run.detail, "rollback amazon done (call 1)");
        let scale = job(
            action(serde_json::json!({"kind": "scale_out"})),
            &[("service", "amazon")],
        );
        assert_eq!(
            execute(&fx, &scale, Duration::ZERO).await.outcome,
            Outcome::Unavailable
        );
    }
}
