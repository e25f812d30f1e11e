//! The deployer's orchestration on a `ManualClock`, with a fake fleet and fed
//! metrics: every decision of a deploy's life, without sleeping or a platform.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use casebook_control::deploy::judge::Measure;
use casebook_control::deploy::{
    DeployConfig, DeployError, DeployRequest, Deployer, FedMetrics, Fleet, Member, Outcome, Phase,
};
use casebook_kit::clock::ManualClock;
use casebook_kit::runtime::{BadBuild, BoxFuture};
use casebook_kit::topology::Placement;
use http_body_util::BodyExt;
use parking_lot::Mutex;
use tower::ServiceExt;

#[derive(Debug, Default)]
struct FakeFleet {
    live: Mutex<Vec<Member>>,
    shares: Mutex<BTreeMap<String, f64>>,
    bad: Mutex<BTreeMap<(String, String), BadBuild>>,
    started: Mutex<u32>,
    /// Starts of this version fail.
    refuse: Mutex<Option<String>>,
}

fn zone(z: &str) -> Placement {
    Placement {
        region: "us-east".into(),
        zone: z.into(),
    }
}

impl FakeFleet {
    fn with(instances: &[(&str, &str, &str)]) -> Arc<Self> {
        let fleet = Self::default();
        *fleet.live.lock() = instances
            .iter()
            .map(|(id, version, z)| Member {
                instance_id: (*id).into(),
                version: (*version).into(),
                placement: zone(z),
            })
            .collect();
        Arc::new(fleet)
    }

    fn versions(&self) -> Vec<(String, String)> {
        self.live
            .lock()
            .iter()
            .map(|m| (m.instance_id.clone(), m.version.clone()))
            .collect()
    }
}

impl Fleet for FakeFleet {
    fn live(&self, service: &str) -> Option<Vec<Member>> {
        Some(if service == "web" {
            self.live.lock().clone()
        } else {
            Vec::new()
        })
    }

    fn services(&self) -> Vec<String> {
        vec!["web".into(), "idle".into()]
    }

    fn start<'a>(
        &'a self,
        _service: &'a str,
        version: &'a str,
        placement: &'a Placement,
        instance_id: Option<String>,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            if self.refuse.lock().as_deref() == Some(version) {
                return Err(format!("version {version} does not start"));
            }
            let mut n = self.started.lock();
            *n += 1;
            let id = instance_id.unwrap_or_else(|| format!("web-new-{n}"));
            self.live.lock().push(Member {
                instance_id: id.clone(),
                version: version.into(),
                placement: placement.clone(),
            });
            Ok(id)
        })
    }

    fn stop<'a>(&'a self, instance_id: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let mut live = self.live.lock();
            let before = live.len();
            live.retain(|m| m.instance_id != instance_id);
            if live.len() == before {
                return Err(format!("{instance_id} is not running"));
            }
            Ok(())
        })
    }

    fn set_share(&self, _service: &str, id: &str, share: Option<f64>) -> Result<(), String> {
        match share {
            Some(s) => self.shares.lock().insert(id.into(), s),
            None => self.shares.lock().remove(id),
        };
        Ok(())
    }

    fn declare_bad_build(&self, s: &str, v: &str, b: Option<BadBuild>) -> Result<(), String> {
        let key = (s.to_owned(), v.to_owned());
        match b {
            Some(b) => self.bad.lock().insert(key, b),
            None => self.bad.lock().remove(&key),
        };
        Ok(())
    }
}

struct Rig {
    fleet: Arc<FakeFleet>,
    metrics: Arc<FedMetrics>,
    clock: ManualClock,
    deployer: Arc<Deployer>,
}

fn rig() -> Rig {
    let fleet = FakeFleet::with(&[
        ("web-a-1", "1.0", "us-east-a"),
        ("web-b-2", "1.0", "us-east-b"),
        ("web-c-3", "1.0", "us-east-c"),
    ]);
    let metrics = Arc::new(FedMetrics::new());
    let clock = ManualClock::new();
    let config = DeployConfig {
        warmup: Duration::from_secs(10),
        interval: Duration::from_secs(60),
        intervals: 3,
        ..DeployConfig::default()
    };
    config.validate().unwrap();
    let deployer = Arc::new(Deployer::new(
        config,
        fleet.clone(),
        metrics.clone(),
        Arc::new(clock.clone()),
    ));
    Rig {
        fleet,
        metrics,
        clock,
        deployer,
    }
}

fn sawtooth(base: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| base * (1.0 + 0.1 * (((i * 7) % 11) as f64 / 5.0 - 1.0)))
        .collect()
}

impl Rig {
    /// Feeds `instance` latencies around `latency` and an error rate `errors`.
    fn feed(&self, instance: &str, latency: f64, errors: f64) {
        self.metrics
            .set(instance, Measure::LatencyMean, sawtooth(latency, 60));
        self.metrics
            .set(instance, Measure::LatencyP99, sawtooth(latency * 3.0, 60));
        let errors = (0..60)
            .map(|i| {
                if errors > 0.0 && i % 5 != 0 {
                    errors
                } else {
                    0.0
                }
            })
            .collect();
        self.metrics.set(instance, Measure::ErrorRate, errors);
    }

    fn phase(&self, id: &str) -> Phase {
        self.deployer.get(id).unwrap().phase
    }

    /// Ticks until the deploy's phase changes or `max` ticks, advancing `step`
    /// between ticks.
    async fn run_until_done(&self, id: &str, step: Duration, max: usize) -> Outcome {
        for _ in 0..max {
            self.deployer.tick().await;
            if let Phase::Done { outcome } = self.phase(id) {
                return outcome;
            }
            self.clock.advance(step);
        }
        panic!("not done after {max} ticks: {:?}", self.phase(id));
    }
}

#[tokio::test]
async fn a_slow_erroring_canary_is_rolled_back_at_the_first_interval() {
    let r = rig();
    let mut request = DeployRequest::new("web", "2.0");
    request.bad_build = Some("latency=150ms,errors=5%".parse().unwrap());
    let d = r.deployer.create(request).unwrap();
    assert_eq!(d.id, "web-1");
    assert_eq!(d.previous_version, "1.0");
    assert_eq!(d.phase, Phase::Starting);

    // Tick 1: baseline and canary start beside the three, 10 % each, in the
    // oldest instance's zone; the build is declared bad.
    r.deployer.tick().await;
    let d = r.deployer.get("web-1").unwrap();
    assert_eq!(d.phase, Phase::Analysing { interval: 0 });
    assert_eq!(d.canary.as_deref(), Some("web-canary-1"));
    assert_eq!(d.baseline.as_deref(), Some("web-baseline-1"));
    assert_eq!(r.fleet.live.lock().len(), 5);
    assert_eq!(
        *r.fleet.shares.lock(),
        BTreeMap::from([("web-baseline-1".into(), 0.1), ("web-canary-1".into(), 0.1)])
    );
    assert!(
        r.fleet
            .bad
            .lock()
            .contains_key(&("web".into(), "2.0".into()))
    );
    let versions = r.fleet.versions();
    assert!(versions.contains(&("web-baseline-1".into(), "1.0".into())));
    assert!(versions.contains(&("web-canary-1".into(), "2.0".into())));

    r.feed("web-baseline-1", 0.020, 0.0);
    r.feed("web-canary-1", 0.170, 0.05);
    // Before warm-up + interval + lag: nothing to do.
    r.clock.advance(Duration::from_secs(71));
    assert_eq!(r.deployer.tick().await, 0);
    r.clock.advance(Duration::from_secs(1));
    r.deployer.tick().await;
    let d = r.deployer.get("web-1").unwrap();
    assert!(
        matches!(d.phase, Phase::RollingBack { ref reason } if reason.contains("interval 1/3"))
    );
    assert_eq!(d.judgements.len(), 1);
    let j = &d.judgements[0];
    assert_eq!(j.score, 0.0);
    assert_eq!(j.to_ms - j.from_ms, 60_000);
    let high: Vec<&str> = j
        .judgement
        .metrics
        .iter()
        .filter(|m| format!("{:?}", m.classification) == "High")
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(high, ["latency_mean", "latency_p99", "error_rate"]);

    // Next tick: canary and baseline stop, their shares go; the three stay on 1.0.
    r.deployer.tick().await;
    let d = r.deployer.get("web-1").unwrap();
    assert_eq!(
        d.phase,
        Phase::Done {
            outcome: Outcome::RolledBack
        }
    );
    assert_eq!(
        r.fleet.versions(),
        [
            ("web-a-1".into(), "1.0".into()),
            ("web-b-2".into(), "1.0".into()),
            ("web-c-3".into(), "1.0".into())
        ]
    );
    assert!(r.fleet.shares.lock().is_empty());
    let steps: Vec<&str> = d.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(
        steps,
        [
            "created",
            "baseline_started",
            "canary_started",
            "analysing",
            "judged",
            "rolling_back",
            "canary_stopped",
            "baseline_stopped",
            "done"
        ]
    );
    assert!(d.steps.iter().all(|s| !s.at.is_empty()));
    // Finished deploys leave the active list.
    let view = r.deployer.view();
    assert!(view.active.is_empty());
    assert_eq!(view.finished[0].id, "web-1");
}

#[tokio::test]
async fn a_good_canary_is_promoted_by_a_rolling_update() {
    let r = rig();
    r.deployer.create(DeployRequest::new("web", "2.0")).unwrap();
    r.deployer.tick().await;
    r.feed("web-baseline-1", 0.020, 0.0);
    r.feed("web-canary-1", 0.020, 0.0);
    // Three intervals judged, each on the data since the analysis began.
    r.clock.advance(Duration::from_secs(72));
    r.deployer.tick().await;
    assert_eq!(r.phase("web-1"), Phase::Analysing { interval: 1 });
    r.clock.advance(Duration::from_secs(60));
    r.deployer.tick().await;
    assert_eq!(r.phase("web-1"), Phase::Analysing { interval: 2 });
    r.clock.advance(Duration::from_secs(60));
    r.deployer.tick().await;
    assert_eq!(r.phase("web-1"), Phase::Promoting);
    let d = r.deployer.get("web-1").unwrap();
    let spans: Vec<u64> = d.judgements.iter().map(|j| j.to_ms - j.from_ms).collect();
    assert_eq!(spans, [60_000, 120_000, 180_000]);
    assert!(d.judgements.iter().all(|j| j.score == 100.0));

    // One old instance replaced per tick, oldest first, in its own zone.
    r.deployer.tick().await;
    let live = r.fleet.live.lock().clone();
    assert!(!live.iter().any(|m| m.instance_id == "web-a-1"));
    let new = live.iter().find(|m| m.instance_id == "web-new-3").unwrap();
    assert_eq!(
        (new.version.as_str(), new.placement.zone.as_str()),
        ("2.0", "us-east-a")
    );
    let outcome = r.run_until_done("web-1", Duration::from_secs(1), 10).await;
    assert_eq!(outcome, Outcome::Promoted);
    let live = r.fleet.live.lock().clone();
    assert_eq!(live.len(), 3);
    assert!(live.iter().all(|m| m.version == "2.0"));
    let zones: Vec<&str> = live.iter().map(|m| m.placement.zone.as_str()).collect();
    assert_eq!(zones, ["us-east-a", "us-east-b", "us-east-c"]);
    let d = r.deployer.get("web-1").unwrap();
    assert_eq!(d.replaced.len(), 3);
    assert!(r.fleet.shares.lock().is_empty());

    // The alerts' runbook (through the seam the alerts call): roll back the last
    // deploy of the service → revert.
    let said = casebook_control::alerts::DeployRollback::rollback_last(&*r.deployer, "web")
        .await
        .unwrap();
    assert!(
        said.contains("web-1") && said.contains("reverting"),
        "{said}"
    );
    let marked = r.deployer.get("web-1").unwrap();
    assert!(matches!(marked.phase, Phase::Reverting { ref reason } if reason.contains("alert")));
    let outcome = r.run_until_done("web-1", Duration::from_secs(1), 10).await;
    assert_eq!(outcome, Outcome::Reverted);
    assert!(r.fleet.live.lock().iter().all(|m| m.version == "1.0"));
    assert_eq!(r.fleet.live.lock().len(), 3);
    // Nothing left to roll back.
    assert!(matches!(
        r.deployer.rollback_last("web", "again").await,
        Err(DeployError::Conflict(_))
    ));
}

#[tokio::test]
async fn a_marginal_final_score_rolls_back_but_a_marginal_interval_continues() {
    let r = rig();
    let mut request = DeployRequest::new("web", "2.0");
    request.intervals = Some(2);
    r.deployer.create(request).unwrap();
    r.deployer.tick().await;
    // Mean latency higher, p99 the same: latency group 50 %, errors 100 % → 75.
    r.feed("web-baseline-1", 0.020, 0.0);
    r.feed("web-canary-1", 0.020, 0.0);
    r.metrics
        .set("web-canary-1", Measure::LatencyMean, sawtooth(0.030, 60));
    r.clock.advance(Duration::from_secs(72));
    r.deployer.tick().await;
    assert_eq!(r.phase("web-1"), Phase::Analysing { interval: 1 });
    r.clock.advance(Duration::from_secs(60));
    r.deployer.tick().await;
    let d = r.deployer.get("web-1").unwrap();
    assert_eq!(d.judgements[1].score, 75.0);
    assert!(
        matches!(d.phase, Phase::RollingBack { ref reason } if reason.contains("below the pass threshold")),
        "{:?}",
        d.phase
    );
    assert_eq!(
        r.run_until_done("web-1", Duration::from_secs(1), 3).await,
        Outcome::RolledBack
    );
}

#[tokio::test]
async fn missing_metrics_fail_the_canary() {
    let r = rig();
    r.deployer.create(DeployRequest::new("web", "2.0")).unwrap();
    r.deployer.tick().await;
    // No data at all: latency must have data (NodataFailMetric), errors is critical.
    r.clock.advance(Duration::from_secs(72));
    r.deployer.tick().await;
    let d = r.deployer.get("web-1").unwrap();
    assert_eq!(d.judgements[0].score, 0.0);
    assert!(matches!(d.phase, Phase::RollingBack { .. }));
}

#[tokio::test]
async fn a_rollback_during_the_analysis_stops_the_pair() {
    let r = rig();
    r.deployer.create(DeployRequest::new("web", "2.0")).unwrap();
    r.deployer.tick().await;
    let marked = r.deployer.rollback("web-1", "operator").unwrap();
    assert!(matches!(marked.phase, Phase::RollingBack { .. }));
    assert!(matches!(
        r.deployer.rollback("web-1", "twice"),
        Err(DeployError::Conflict(m)) if m.contains("already")
    ));
    assert_eq!(
        r.run_until_done("web-1", Duration::from_secs(1), 3).await,
        Outcome::RolledBack
    );
    assert_eq!(r.fleet.live.lock().len(), 3);
    assert!(matches!(
        r.deployer.rollback("web-1", "late"),
        Err(DeployError::Conflict(m)) if m.contains("rolled_back")
    ));
    assert!(matches!(
        r.deployer.rollback("web-9", "?"),
        Err(DeployError::NotFound(_))
    ));
    assert!(matches!(
        r.deployer.rollback_last("idle", "?").await,
        Err(DeployError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_canary_that_does_not_start_is_rolled_back() {
    let r = rig();
    *r.fleet.refuse.lock() = Some("2.0".into());
    r.deployer.create(DeployRequest::new("web", "2.0")).unwrap();
    r.deployer.tick().await;
    let d = r.deployer.get("web-1").unwrap();
    assert!(
        matches!(d.phase, Phase::RollingBack { ref reason } if reason.contains("canary did not start"))
    );
    // The baseline started and is stopped again.
    assert_eq!(d.baseline.as_deref(), Some("web-baseline-1"));
    assert_eq!(
        r.run_until_done("web-1", Duration::from_secs(1), 3).await,
        Outcome::RolledBack
    );
    assert_eq!(r.fleet.live.lock().len(), 3);
    assert!(r.fleet.shares.lock().is_empty());
}

#[tokio::test]
async fn bad_requests_are_refused_precisely() {
    let r = rig();
    let field = |e: DeployError| match e {
        DeployError::Invalid { field, .. } => field,
        other => panic!("not a field error: {other:?}"),
    };
    let mut q = DeployRequest::new("web", "2.0 beta");
    assert_eq!(field(r.deployer.create(q.clone()).unwrap_err()), "version");
    q.version = "2.0".into();
    q.share = Some(0.9);
    assert_eq!(field(r.deployer.create(q.clone()).unwrap_err()), "share");
    q.share = None;
    q.intervals = Some(0);
    assert_eq!(
        field(r.deployer.create(q.clone()).unwrap_err()),
        "intervals"
    );
    q.intervals = None;
    q.bad_build = Some(BadBuild {
        latency: Duration::ZERO,
        error_rate: 2.0,
    });
    assert_eq!(
        field(r.deployer.create(q.clone()).unwrap_err()),
        "bad_build.error_rate"
    );
    assert!(matches!(
        r.deployer.create(DeployRequest::new("nope", "2.0")),
        Err(DeployError::UnknownService(m)) if m.contains("nope") && m.contains("web")
    ));
    assert!(matches!(
        r.deployer.create(DeployRequest::new("idle", "2.0")),
        Err(DeployError::Conflict(m)) if m.contains("no live instance")
    ));
    assert!(matches!(
        r.deployer.create(DeployRequest::new("web", "1.0")),
        Err(DeployError::Conflict(m)) if m.contains("already")
    ));
    r.deployer.create(DeployRequest::new("web", "2.0")).unwrap();
    assert!(matches!(
        r.deployer.create(DeployRequest::new("web", "3.0")),
        Err(DeployError::Conflict(m)) if m.contains("web-1")
    ));
}

async fn call(
    router: &axum::Router,
    method: &str,
    uri: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let request = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn the_api_answers_with_precise_statuses() {
    let r = rig();
    let router = casebook_control::deploy::api::router(r.deployer.clone());
    let (status, body) = call(&router, "POST", "/api/deploys", r#"{"service":"web"}"#).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = call(
        &router,
        "POST",
        "/api/deploys",
        r#"{"service":"web","version":"2.0","bad_build":{"latency":"1h"}}"#,
    )
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("bad_build.latency"))
    );
    let (status, body) = call(
        &router,
        "POST",
        "/api/deploys",
        r#"{"service":"ghost","version":"2.0"}"#,
    )
    .await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("ghost"));
    let (status, body) = call(
        &router,
        "POST",
        "/api/deploys",
        r#"{"service":"web","version":"2.0","interval":"5s","intervals":2,"bad_build":{"latency":"150ms","error_rate":0.05}}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["id"], "web-1");
    assert_eq!(body["phase"], "starting");
    assert_eq!(body["analysis"]["interval"], "5s");
    let (status, body) = call(&router, "GET", "/api/deploys", "").await;
    assert_eq!(
        (status, body["active"][0]["id"].as_str()),
        (200, Some("web-1"))
    );
    let (status, _) = call(&router, "GET", "/api/deploys/web-7", "").await;
    assert_eq!(status, 404);
    let (status, body) = call(
        &router,
        "POST",
        "/api/deploys/web-1/rollback",
        r#"{"reason":"looks wrong"}"#,
    )
    .await;
    assert_eq!(
        (status, body["phase"].as_str()),
        (202, Some("rolling_back"))
    );
    let (status, _) = call(&router, "POST", "/api/deploys/web-1/rollback", "").await;
    assert_eq!(status, 409);
    let (status, body) = call(
        &router,
        "POST",
        "/api/deploys/web-1/rollback",
        "{\"why\":1}",
    )
    .await;
    assert_eq!((status, body["field"].as_str()), (400, Some("reason")));
}
