//! The alert engine with its runbooks. Evaluation runs on a `ManualClock` (`for`
//! and cooldowns pass only when the test advances it); ticks are called by the
//! test; the action worker runs in real time, so its effects are awaited with
//! `eventually`, never slept for.
//!
//! - Fakes: a firing alert runs its action once, the cooldown skips (and records)
//!   a run until it has passed, retries are bounded and recorded, a full queue
//!   drops (and records) a run, an action without a target fails (recorded).
//! - The webhook against a local axum receiver: Alertmanager's payload on firing
//!   and on resolve, a failed delivery retried.
//! - A real platform: a killed instance restarted under its own id; a scale-out
//!   through the autoscaler within its policy's max, in its history with reason
//!   `alert`; the control plane's `/api/alerts` CRUD and its refusals.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use bytes::Bytes;
use casebook_control::access::Token;
use casebook_control::alerts::{
    ActionKind, Alerts, AlertsConfig, DeployRollback, Effectors, Event, FedSource, HttpWebhook,
    LogEntry, Outcome, Phase, PlatformRestarter, Restarter, Rule, ScaleOut, WebhookSender,
};
use casebook_control::autoscaler::{Autoscaler, AutoscalerConfig, FedSignal, Reason};
use casebook_control::{CONTROL_SERVICE, ControlConfig, ControlPlane, ControlSettings};
use casebook_kit::clock::{Clock, ManualClock};
use casebook_kit::http_client::{HttpClient, HttpResponse};
use casebook_kit::metrics_push::{Datapoint, MetricKind, PublishBatch};
use casebook_kit::runtime::{
    BoxFuture, InstanceContext, InstanceSpec, InstanceState, Platform, ServiceFactory, StartError,
    serve_http,
};
use casebook_kit::topology::Topology;
use casebook_testkit::{DEADLINE, eventually_sync};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// A trivial HTTP service under a name of the test's choosing.
#[derive(Debug)]
struct Trivial(&'static str);

impl ServiceFactory for Trivial {
    fn name(&self) -> &str {
        self.0
    }

    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            serve_http(
                ctx,
                listener,
                Router::new().route("/", get(|| async { "ok" })),
            );
            Ok(address)
        })
    }
}

/// Every call it got, and how many of the first ones fail.
#[derive(Debug, Default)]
struct Fake {
    fail_first: AtomicU32,
    calls: Mutex<Vec<String>>,
}

impl Fake {
    fn failing(n: u32) -> Arc<Self> {
        Arc::new(Self {
            fail_first: AtomicU32::new(n),
            ..Self::default()
        })
    }

    fn answer(&self, call: String) -> Result<String, String> {
        self.calls.lock().push(call.clone());
        let left = self.fail_first.load(Ordering::SeqCst);
        if left > 0 {
            self.fail_first.store(left - 1, Ordering::SeqCst);
            return Err(format!("{call}: refused"));
        }
        Ok(format!("{call}: done"))
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().clone()
    }
}

impl Restarter for Fake {
    fn restart_instance<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move { self.answer(format!("restart {id}")) })
    }
    fn restart_service<'a>(&'a self, s: &'a str) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move { self.answer(format!("restart service {s}")) })
    }
}

impl ScaleOut for Fake {
    fn scale_out<'a>(
        &'a self,
        s: &'a str,
        n: u32,
        rule: &'a str,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move { self.answer(format!("scale {s} +{n} for {rule}")) })
    }
}

impl DeployRollback for Fake {
    fn rollback_last<'a>(&'a self, s: &'a str) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move { self.answer(format!("rollback {s}")) })
    }
}

impl WebhookSender for Fake {
    fn post<'a>(
        &'a self,
        url: &'a str,
        body: &'a Value,
        _: Duration,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move { self.answer(format!("post {url} {}", body["status"])) })
    }
}

fn rule(json: Value) -> Rule {
    let mut base = json!({
        "name": "r", "metric": "m", "op": "above", "threshold": 10.0, "for": "10s"
    });
    base.as_object_mut()
        .unwrap()
        .extend(json.as_object().unwrap().clone());
    let rule: Rule = serde_json::from_value(base).unwrap();
    rule.validate("").unwrap();
    rule
}

fn config(rules: Vec<Rule>) -> AlertsConfig {
    AlertsConfig {
        rules,
        retry_backoff: Duration::ZERO,
        ..AlertsConfig::default()
    }
}

/// An engine on a manual clock, fed by hand, acting on fakes; its worker running.
struct Bench {
    alerts: Arc<Alerts>,
    fed: Arc<FedSource>,
    clock: ManualClock,
    restarter: Arc<Fake>,
    webhook: Arc<Fake>,
    stop: CancellationToken,
    _platform: Platform,
    _dir: tempfile::TempDir,
}

impl Bench {
    fn new(config: AlertsConfig, restarter: Arc<Fake>, worker: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let platform = Platform::new(Topology::default(), dir.path(), clock.shared());
        let fed = Arc::new(FedSource::new());
        let webhook = Arc::new(Fake::default());
        let alerts = Arc::new(Alerts::new(
            &config,
            fed.clone(),
            Arc::new(Effectors::new(
                restarter.clone(),
                Some(Arc::new(Fake::default())),
                None,
                webhook.clone(),
            )),
            platform.downgrade(),
            clock.shared(),
        ));
        let stop = CancellationToken::new();
        if worker {
            tokio::spawn(alerts.clone().run_actions(stop.clone()));
        }
        Self {
            alerts,
            fed,
            clock,
            restarter,
            webhook,
            stop,
            _platform: platform,
            _dir: dir,
        }
    }

    fn wait(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    /// Every action run in the log, oldest first.
    fn runs(&self) -> Vec<casebook_control::alerts::ActionRun> {
        let mut runs: Vec<_> = self
            .alerts
            .view()
            .log
            .into_iter()
            .filter_map(|e| match e {
                LogEntry::Action { run, .. } => Some(run),
                LogEntry::Transition { .. } => None,
            })
            .collect();
        runs.reverse();
        runs
    }

    async fn runs_reach(&self, n: usize) -> Vec<casebook_control::alerts::ActionRun> {
        eventually_sync(&format!("{n} action runs"), DEADLINE, || {
            self.runs().len() >= n
        })
        .await;
        self.runs()
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test]
async fn a_firing_alert_runs_its_runbook_once_per_cooldown() {
    let bench = Bench::new(
        config(vec![rule(json!({
            "group_by": ["instance"],
            "actions": [
                {"kind": "restart", "cooldown": "60s"},
                {"kind": "webhook", "url": "http://127.0.0.1:9/hook"}
            ]
        }))]),
        Arc::new(Fake::default()),
        true,
    );
    let i1: BTreeMap<String, String> = [("instance".to_owned(), "web-1".to_owned())].into();
    bench.fed.set("r", [(i1.clone(), 20.0)].into());
    assert!(
        bench.alerts.tick().iter().all(|(_, t)| t.event.is_none()),
        "pending"
    );
    bench.wait(10);
    let fired = bench.alerts.tick();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].1.event, Some(Event::Firing));
    let runs = bench.runs_reach(2).await;
    let restart = runs
        .iter()
        .find(|r| r.action == ActionKind::Restart)
        .unwrap();
    assert_eq!((restart.outcome, restart.attempts), (Outcome::Ok, 1));
    assert_eq!(restart.target, "instance web-1");
    assert_eq!(restart.labels["alertname"], "r");
    assert_eq!(bench.restarter.calls(), vec!["restart web-1"]);
    assert_eq!(
        bench.webhook.calls(),
        vec!["post http://127.0.0.1:9/hook \"firing\""]
    );

    // Resolved: only the webhook runs on resolve.
    bench.fed.set("r", [(i1.clone(), 1.0)].into());
    bench.alerts.tick();
    bench.runs_reach(3).await;
    assert_eq!(bench.webhook.calls().len(), 2);
    assert_eq!(bench.restarter.calls().len(), 1);

    // Fires again 30 s after the first run: the restart is within its cooldown.
    bench.wait(20);
    bench.fed.set("r", [(i1.clone(), 30.0)].into());
    bench.alerts.tick();
    bench.wait(10);
    assert_eq!(bench.alerts.tick()[0].1.event, Some(Event::Firing));
    let runs = bench.runs_reach(5).await;
    let skipped = runs
        .iter()
        .find(|r| r.outcome == Outcome::Cooldown)
        .expect("the skipped run is recorded");
    assert_eq!((skipped.action, skipped.attempts), (ActionKind::Restart, 0));
    assert_eq!(bench.restarter.calls().len(), 1);

    // Past the cooldown, the next firing restarts again.
    bench.fed.set("r", [(i1.clone(), 1.0)].into());
    bench.alerts.tick();
    bench.wait(40);
    bench.fed.set("r", [(i1.clone(), 30.0)].into());
    bench.alerts.tick();
    bench.wait(10);
    bench.alerts.tick();
    eventually_sync("a second restart", DEADLINE, || {
        bench.restarter.calls().len() == 2
    })
    .await;
    let view = bench.alerts.view();
    assert_eq!(view.rules[0].state, Phase::Firing);
    assert_eq!(view.rules[0].alerts[0].value, Some(30.0));
}

#[tokio::test]
async fn deleting_or_redefining_a_firing_rule_announces_it_resolved() {
    let hook = json!([{"kind": "webhook", "url": "http://127.0.0.1:9/hook"}]);
    let bench = Bench::new(
        config(vec![rule(json!({"for": "0s", "actions": hook}))]),
        Arc::new(Fake::default()),
        true,
    );
    bench.fed.set_one("r", Some(20.0));
    bench.alerts.tick();
    bench.runs_reach(1).await;
    // Only the annotations change: the alert is kept, nothing announced.
    let mut relabelled = rule(json!({"for": "0s", "actions": hook}));
    relabelled
        .annotations
        .insert("summary".into(), "hot".into());
    assert!(!bench.alerts.put_rule(relabelled).unwrap());
    assert_eq!(bench.alerts.view().rules[0].state, Phase::Firing);
    // The threshold changes: resolved, then evaluated afresh.
    let raised = rule(json!({"for": "0s", "threshold": 30.0, "actions": hook}));
    assert!(!bench.alerts.put_rule(raised).unwrap());
    bench.runs_reach(2).await;
    assert_eq!(bench.alerts.view().rules[0].state, Phase::Inactive);
    bench.fed.set_one("r", Some(40.0));
    bench.alerts.tick();
    bench.runs_reach(3).await;
    assert!(bench.alerts.remove_rule("r").is_some());
    bench.runs_reach(4).await;
    let statuses: Vec<String> = bench
        .webhook
        .calls()
        .iter()
        .map(|c| c.rsplit(' ').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        statuses,
        ["\"firing\"", "\"resolved\"", "\"firing\"", "\"resolved\""]
    );
    assert!(bench.alerts.view().rules.is_empty());
}

#[tokio::test]
async fn retries_are_bounded_and_the_outcome_recorded() {
    let restarter = Fake::failing(5);
    let bench = Bench::new(
        config(vec![rule(json!({
            "for": "0s",
            "actions": [{"kind": "restart", "service": "web", "retries": 2}]
        }))]),
        restarter.clone(),
        true,
    );
    bench.fed.set_one("r", Some(11.0));
    bench.alerts.tick();
    let runs = bench.runs_reach(1).await;
    assert_eq!((runs[0].outcome, runs[0].attempts), (Outcome::Failed, 3));
    assert_eq!(runs[0].detail, "restart service web: refused");
    assert_eq!(restarter.calls().len(), 3, "1 + retries attempts, no more");

    // Fewer failures than attempts: done on the last one.
    restarter.fail_first.store(2, Ordering::SeqCst);
    bench.fed.set_one("r", Some(1.0));
    bench.alerts.tick();
    bench.wait(301);
    bench.fed.set_one("r", Some(11.0));
    bench.alerts.tick();
    let runs = bench.runs_reach(2).await;
    assert_eq!((runs[1].outcome, runs[1].attempts), (Outcome::Ok, 3));
}

#[tokio::test]
async fn a_full_queue_drops_and_a_missing_target_fails_both_recorded() {
    // No worker: the queue of one fills.
    let bench = Bench::new(
        AlertsConfig {
            queue: 1,
            ..config(vec![rule(json!({
                "for": "0s", "group_by": ["service"],
                "actions": [{"kind": "rollback"}]
            }))])
        },
        Arc::new(Fake::default()),
        false,
    );
    let group =
        |s: &str| -> BTreeMap<String, String> { [("service".to_owned(), s.to_owned())].into() };
    bench
        .fed
        .set("r", [(group("a"), 20.0), (group("b"), 20.0)].into());
    bench.alerts.tick();
    let runs = bench.runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].outcome, Outcome::Dropped);
    assert_eq!(runs[0].target, "service b");
    assert_eq!(bench.alerts.view().queue.waiting, 1);

    let bench = Bench::new(
        config(vec![rule(
            json!({"for": "0s", "actions": [{"kind": "scale_out"}]}),
        )]),
        Arc::new(Fake::default()),
        true,
    );
    bench.fed.set_one("r", Some(20.0));
    bench.alerts.tick();
    let runs = bench.runs();
    assert_eq!(runs[0].outcome, Outcome::Failed);
    assert!(
        runs[0].detail.contains("no `service` label"),
        "{}",
        runs[0].detail
    );
}

#[tokio::test]
async fn rollback_without_a_deployer_is_unavailable_and_wired_it_runs() {
    let bench = Bench::new(
        config(vec![rule(json!({
            "for": "0s", "actions": [{"kind": "rollback", "service": "amazon", "cooldown": "0s"}]
        }))]),
        Arc::new(Fake::default()),
        true,
    );
    bench.fed.set_one("r", Some(20.0));
    bench.alerts.tick();
    let runs = bench.runs_reach(1).await;
    assert_eq!(runs[0].outcome, Outcome::Unavailable);
    assert!(!bench.alerts.view().rollback_wired);

    let deployer = Arc::new(Fake::default());
    bench.alerts.set_deploy_rollback(Some(deployer.clone()));
    assert!(bench.alerts.view().rollback_wired);
    bench.fed.set_one("r", Some(1.0));
    bench.alerts.tick();
    bench.fed.set_one("r", Some(20.0));
    bench.alerts.tick();
    let runs = bench.runs_reach(2).await;
    assert_eq!(runs[1].outcome, Outcome::Ok);
    assert_eq!(deployer.calls(), vec!["rollback amazon"]);
}

/// A local Alertmanager-style receiver: records every body; answers 500 to the
/// first `fail_first` calls.
async fn receiver(fail_first: u32) -> (String, Arc<Mutex<Vec<Value>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(AtomicU32::new(fail_first));
    let app = Router::new().route(
        "/hook",
        post({
            let bodies = bodies.clone();
            move |body: Bytes| {
                let bodies = bodies.clone();
                let failures = failures.clone();
                async move {
                    bodies.lock().push(serde_json::from_slice(&body).unwrap());
                    if failures.load(Ordering::SeqCst) > 0 {
                        failures.fetch_sub(1, Ordering::SeqCst);
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}/hook"), bodies)
}

#[tokio::test]
async fn the_webhook_posts_alertmanagers_payload_on_firing_and_resolve() {
    let (url, bodies) = receiver(1).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let platform = Platform::new(Topology::default(), dir.path(), clock.shared());
    let fed = Arc::new(FedSource::new());
    let alerts = Arc::new(Alerts::new(
        &config(vec![rule(json!({
            "name": "amazon-errors", "group_by": ["service"], "for": "30s",
            "labels": {"severity": "page"},
            "annotations": {"summary": "amazon answers errors"},
            "actions": [{"kind": "webhook", "url": url, "timeout": "5s", "retries": 1}]
        }))]),
        fed.clone(),
        Arc::new(Effectors::new(
            Arc::new(Fake::default()),
            None,
            None,
            Arc::new(HttpWebhook),
        )),
        platform.downgrade(),
        clock.shared(),
    ));
    alerts.set_external_url("http://127.0.0.1:7700");
    let stop = CancellationToken::new();
    tokio::spawn(alerts.clone().run_actions(stop.clone()));
    let amazon: BTreeMap<String, String> = [("service".to_owned(), "amazon".to_owned())].into();

    fed.set("amazon-errors", [(amazon.clone(), 12.5)].into());
    alerts.tick();
    clock.advance(Duration::from_secs(30));
    alerts.tick();
    // The first delivery answered 500: retried once.
    eventually_sync("the firing delivery", DEADLINE, || bodies.lock().len() == 2).await;
    let firing = bodies.lock()[1].clone();
    assert_eq!(firing, bodies.lock()[0], "the retry sends the same payload");
    assert_eq!(firing["version"], "4");
    assert_eq!(firing["status"], "firing");
    assert_eq!(firing["receiver"], "casebook");
    assert_eq!(firing["groupLabels"], json!({"alertname": "amazon-errors"}));
    let alert = &firing["alerts"][0];
    assert_eq!(
        alert["labels"],
        json!({"alertname": "amazon-errors", "service": "amazon", "severity": "page"})
    );
    assert_eq!(
        alert["annotations"],
        json!({"summary": "amazon answers errors", "value": "12.5"})
    );
    assert_eq!(alert["startsAt"], "2026-01-01T00:00:30.000Z");
    assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(
        alert["generatorURL"],
        "http://127.0.0.1:7700/api/alerts/rules/amazon-errors"
    );
    eventually_sync("the firing run recorded", DEADLINE, || {
        alerts
            .view()
            .log
            .iter()
            .any(|e| matches!(e, LogEntry::Action { .. }))
    })
    .await;
    let run = alerts
        .view()
        .log
        .into_iter()
        .find_map(|e| match e {
            LogEntry::Action { run, .. } => Some(run),
            _ => None,
        })
        .unwrap();
    assert_eq!((run.outcome, run.attempts), (Outcome::Ok, 2));
    assert!(run.detail.contains("200"), "{}", run.detail);

    clock.advance(Duration::from_secs(45));
    fed.set("amazon-errors", [(amazon, 0.0)].into());
    alerts.tick();
    eventually_sync("the resolved delivery", DEADLINE, || {
        bodies.lock().len() == 3
    })
    .await;
    let resolved = bodies.lock()[2].clone();
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(
        resolved["alerts"][0]["startsAt"],
        "2026-01-01T00:00:30.000Z"
    );
    assert_eq!(resolved["alerts"][0]["endsAt"], "2026-01-01T00:01:15.000Z");
    assert_eq!(
        resolved["alerts"][0]["fingerprint"], firing["alerts"][0]["fingerprint"],
        "the same alert"
    );
    stop.cancel();
}

fn spec(service: &str, n: usize) -> InstanceSpec {
    InstanceSpec {
        service: service.into(),
        instance_id: None,
        placement: Topology::default().spread(n),
        listen: "127.0.0.1:0".parse().unwrap(),
        version: "test".into(),
        port_hint: None,
    }
}

fn state_of(platform: &Platform, id: &str) -> Option<InstanceState> {
    platform.state(id)
}

#[tokio::test]
async fn a_killed_instance_is_restarted_under_its_own_id_and_address() {
    const SERVICE: &str = "alert-restart-echo";
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let platform = Platform::new(Topology::default(), dir.path(), clock.shared());
    platform.register_service(Arc::new(Trivial(SERVICE)));
    let info = platform.start(spec(SERVICE, 0)).await.unwrap();
    let other = platform.start(spec(SERVICE, 1)).await.unwrap();
    platform.kill(&info.instance_id).await;
    assert_eq!(
        state_of(&platform, &info.instance_id),
        Some(InstanceState::Killed)
    );
    let restarter = PlatformRestarter::new(platform.downgrade(), Duration::from_secs(1));

    let detail = restarter.restart_instance(&info.instance_id).await.unwrap();
    assert!(detail.contains("killed before"), "{detail}");
    let view = platform
        .list()
        .into_iter()
        .find(|v| v.info.instance_id == info.instance_id)
        .unwrap();
    assert_eq!(view.state, InstanceState::Running);
    assert_eq!(view.info.address, info.address, "where it was");
    assert_eq!(view.info.zone, info.zone);
    let body = HttpClient::default()
        .send(
            Method::GET,
            &format!("http://{}/", info.address),
            HeaderMap::new(),
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(body.body, "ok");

    // A live one is stopped first, then started again: still two live.
    let detail = restarter.restart_service(SERVICE).await.unwrap();
    assert!(detail.contains(&other.instance_id), "{detail}");
    let live: Vec<_> = platform
        .list()
        .into_iter()
        .filter(|v| v.info.service == SERVICE && v.state.is_live())
        .collect();
    assert_eq!(live.len(), 2);
    assert!(
        restarter
            .restart_instance("nope")
            .await
            .unwrap_err()
            .contains("no instance `nope`")
    );
    // A gracefully stopped instance is left stopped by a service restart.
    platform
        .stop(&other.instance_id, Duration::from_secs(1))
        .await;
    restarter.restart_service(SERVICE).await.unwrap();
    assert_eq!(
        state_of(&platform, &other.instance_id),
        Some(InstanceState::Stopped)
    );
    platform.stop_all(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_scale_out_goes_through_the_autoscaler_within_its_max() {
    const SERVICE: &str = "alert-scale-echo";
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let platform = Platform::new(Topology::default(), dir.path(), clock.shared());
    platform.register_service(Arc::new(Trivial(SERVICE)));
    let policy = serde_json::from_value(json!({
        "service": SERVICE, "min_instances": 1, "max_instances": 3, "capacity": 10.0
    }))
    .unwrap();
    let autoscaler = Arc::new(Autoscaler::new(
        &AutoscalerConfig {
            policies: vec![policy],
            ..AutoscalerConfig::default()
        },
        Arc::new(FedSignal::new()),
        platform.downgrade(),
        clock.shared(),
        Duration::from_secs(1),
    ));
    platform.start(spec(SERVICE, 0)).await.unwrap();

    let done = autoscaler.scale_out(SERVICE, 5, "hot").await.unwrap();
    assert!(done.starts_with(&format!("{SERVICE} 1 → 3")), "{done}");
    let record = autoscaler.view().decisions[0].clone();
    assert_eq!(record.decision.reason, Reason::Alert);
    assert_eq!(record.requested_by.as_deref(), Some("alert:hot"));
    assert_eq!(record.instances.len(), 2);
    let json = serde_json::to_value(&record).unwrap();
    assert_eq!(
        (json["reason"].clone(), json["requested_by"].clone()),
        (json!("alert"), json!("alert:hot"))
    );

    let refused = autoscaler.scale_out(SERVICE, 1, "hot").await.unwrap_err();
    assert!(
        refused.contains("at its policy's max_instances (3)"),
        "{refused}"
    );
    let unknown = autoscaler.scale_out("other", 1, "hot").await.unwrap_err();
    assert!(
        unknown.contains("no autoscaler policy for `other`"),
        "{unknown}"
    );
    platform.stop_all(Duration::from_secs(1)).await;
}

/// The control plane on a manual clock.
struct Plane {
    platform: Platform,
    clock: ManualClock,
    url: String,
    token: String,
    _dir: tempfile::TempDir,
}

async fn start_plane(alerts: AlertsConfig) -> Plane {
    start_plane_with(alerts, AutoscalerConfig::default(), None).await
}

async fn start_plane_with(
    alerts: AlertsConfig,
    autoscaler: AutoscalerConfig,
    service: Option<&'static str>,
) -> Plane {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let platform = Platform::new(Topology::default(), dir.path(), clock.shared());
    let token = "alerts-test-token";
    platform.register_service(Arc::new(ControlPlane::new(
        platform.downgrade(),
        ControlSettings {
            drain: Duration::from_secs(1),
            control: ControlConfig {
                token: Some(Token::parse(token).unwrap()),
                ..ControlConfig::default()
            },
            autoscaler,
            alerts,
            ..ControlSettings::default()
        },
    )));
    if let Some(service) = service {
        platform.register_service(Arc::new(Trivial(service)));
    }
    let info = platform.start(spec(CONTROL_SERVICE, 0)).await.unwrap();
    Plane {
        platform,
        clock,
        url: format!("http://{}", info.address),
        token: token.into(),
        _dir: dir,
    }
}

impl Plane {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        authed: bool,
    ) -> (StatusCode, Value) {
        let mut headers = HeaderMap::new();
        if authed {
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {}", self.token)).unwrap(),
            );
        }
        let body = match body {
            Some(body) => {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Bytes::from(serde_json::to_vec(&body).unwrap())
            }
            None => Bytes::new(),
        };
        let HttpResponse { status, body, .. } = HttpClient::default()
            .send(method, &format!("{}{path}", self.url), headers, body)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn the_api_lists_adds_replaces_and_deletes_rules_with_precise_refusals() {
    let configured = rule(json!({"name": "configured", "metric": "platform_live_instances"}));
    let plane = start_plane(AlertsConfig {
        enabled: false,
        defaults: true,
        ..config(vec![configured])
    })
    .await;
    let (status, view) = plane.call(Method::GET, "/api/alerts", None, false).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        view["rules"].as_array().unwrap().len(),
        4,
        "with the default set"
    );
    assert_eq!(view["rules"][0]["rule"]["name"], "configured");
    assert_eq!(view["rules"][0]["state"], "inactive");
    assert_eq!(
        view["rollback_wired"], true,
        "the control plane wires its deployer's rollback"
    );

    let body = json!({
        "name": "p99", "metric": "http_request_duration_seconds", "filter": "service:amazon",
        "fn": "p99", "scale": 1000.0, "op": "above", "threshold": 200.0, "for": "60s",
        "actions": [{"kind": "scale_out", "service": "amazon", "count": 2}]
    });
    let (status, _) = plane
        .call(Method::POST, "/api/alerts/rules", Some(body.clone()), false)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "changes need the token");
    let (status, created) = plane
        .call(Method::POST, "/api/alerts/rules", Some(body.clone()), true)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["for"], "1m");
    let (status, conflict) = plane
        .call(Method::POST, "/api/alerts/rules", Some(body.clone()), true)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");

    let mut bad = body.clone();
    bad["actions"][0]["count"] = json!(0);
    bad["name"] = json!("other");
    let (status, error) = plane
        .call(Method::POST, "/api/alerts/rules", Some(bad), true)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["field"], "actions[0].count", "{error}");
    let mut bad = body.clone();
    bad["name"] = json!("other");
    bad["for"] = json!("soon");
    let (status, error) = plane
        .call(Method::POST, "/api/alerts/rules", Some(bad), true)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["field"], "for", "{error}");

    let (status, one) = plane
        .call(Method::GET, "/api/alerts/rules/p99", None, false)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["rule"]["fn"], "p99");
    let (status, missing) = plane
        .call(Method::GET, "/api/alerts/rules/nope", None, false)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"], "no alert rule `nope`");

    let mut replaced = body.clone();
    replaced.as_object_mut().unwrap().remove("name");
    replaced["threshold"] = json!(300.0);
    let (status, put) = plane
        .call(
            Method::PUT,
            "/api/alerts/rules/p99",
            Some(replaced.clone()),
            true,
        )
        .await;
    assert_eq!(
        (status, put["created"].clone()),
        (StatusCode::OK, json!(false)),
        "{put}"
    );
    assert_eq!(put["rule"]["threshold"], 300.0);
    let (status, put) = plane
        .call(
            Method::PUT,
            "/api/alerts/rules/p50",
            Some(replaced.clone()),
            true,
        )
        .await;
    assert_eq!(
        (status, put["created"].clone()),
        (StatusCode::CREATED, json!(true)),
        "{put}"
    );
    replaced["name"] = json!("elsewhere");
    let (status, error) = plane
        .call(Method::PUT, "/api/alerts/rules/p99", Some(replaced), true)
        .await;
    assert_eq!(
        (status, error["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("name"))
    );

    let (status, removed) = plane
        .call(Method::DELETE, "/api/alerts/rules/p99", None, true)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(removed["removed"]["name"], "p99");
    let (status, _) = plane
        .call(Method::DELETE, "/api/alerts/rules/p99", None, true)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, view) = plane.call(Method::GET, "/api/alerts", None, false).await;
    let names: Vec<&str> = view["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "configured",
            "default-error-ratio",
            "default-latency-p99",
            "default-service-down",
            "p50"
        ]
    );
    plane.platform.stop_all(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn published_traffic_crosses_a_rule_and_the_runbook_scales_out_through_the_autoscaler() {
    const WEB: &str = "alert-traffic-echo";
    let policy = serde_json::from_value(json!({
        "service": WEB, "min_instances": 1, "max_instances": 4, "capacity": 100.0
    }))
    .unwrap();
    let plane = start_plane_with(
        AlertsConfig {
            interval: Duration::from_millis(10),
            ..config(vec![rule(json!({
                "name": "hot", "metric": "http_requests_total",
                "filter": format!("service:{WEB},route!:/health|/metrics"),
                "window": "10s", "op": "above", "threshold": 50.0, "for": "20s",
                "actions": [{"kind": "scale_out", "service": WEB, "count": 1}]
            }))])
        },
        // The autoscaler's own loop off: only the alert scales.
        AutoscalerConfig {
            enabled: false,
            policies: vec![policy],
            ..AutoscalerConfig::default()
        },
        Some(WEB),
    )
    .await;
    plane.platform.start(spec(WEB, 0)).await.unwrap();
    let live = || {
        plane
            .platform
            .list()
            .into_iter()
            .filter(|v| v.info.service == WEB && v.state.is_live())
            .count()
    };

    // 80 requests a second for the last 15 s, as the instances' pushers would send.
    let publish = |seconds: u64| {
        let now = plane.clock.wall_millis();
        let metrics: Vec<Datapoint> = (0..seconds)
            .flat_map(|ago| {
                [("/", 80.0), ("/health", 1000.0)].map(|(route, rate)| {
                    let tags = [("service", WEB), ("route", route), ("instance", "x")]
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect();
                    Datapoint::scalar(
                        "http_requests_total",
                        tags,
                        now - ago * 1000,
                        MetricKind::Counter,
                        rate,
                    )
                })
            })
            .collect();
        serde_json::to_value(PublishBatch {
            tags: BTreeMap::new(),
            metrics,
        })
        .unwrap()
    };
    let (status, body) = plane
        .call(
            Method::POST,
            "/api/metrics/publish",
            Some(publish(15)),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let alerts_view = || plane.call(Method::GET, "/api/alerts/rules/hot", None, false);
    casebook_testkit::eventually("the rule pending at 80/s", DEADLINE, || async {
        alerts_view().await.1["state"] == "pending"
    })
    .await;
    let (_, view) = alerts_view().await;
    assert_eq!(
        view["alerts"][0]["value"], 80.0,
        "the /health route filtered out"
    );
    assert_eq!(live(), 1, "pending does not act");

    // 20 s later, still at 80/s: firing, and one more instance through the autoscaler.
    plane.clock.advance(Duration::from_secs(20));
    let (status, _) = plane
        .call(
            Method::POST,
            "/api/metrics/publish",
            Some(publish(20)),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    eventually_sync("a second instance", DEADLINE, || live() == 2).await;
    let (_, autoscaler) = plane
        .call(Method::GET, "/api/autoscaler", None, false)
        .await;
    let decision = &autoscaler["decisions"][0];
    assert_eq!(decision["reason"], "alert");
    assert_eq!(decision["requested_by"], "alert:hot");
    assert_eq!(
        (decision["from"].clone(), decision["to"].clone()),
        (json!(1), json!(2))
    );
    casebook_testkit::eventually("the run recorded", DEADLINE, || async {
        let (_, all) = plane.call(Method::GET, "/api/alerts", None, false).await;
        all["log"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "action" && e["outcome"] == "ok")
    })
    .await;
    let (_, all) = plane.call(Method::GET, "/api/alerts", None, false).await;
    let run = all["log"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "action")
        .unwrap();
    assert_eq!(
        (run["action"].clone(), run["event"].clone()),
        (json!("scale_out"), json!("firing"))
    );
    assert_eq!(all["rules"][0]["state"], "firing");
    assert_eq!(
        live(),
        2,
        "once: the alert stays firing, it does not fire again"
    );
    plane.platform.stop_all(Duration::from_secs(1)).await;
}
