//! The run on fakes: a measure the test (or fault) sets, faults that count their
//! calls, a platform of idle instances.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use casebook_kit::clock::{ManualClock, SystemClock};
use casebook_kit::runtime::{
    BoxFuture, InstanceContext, InstanceSpec, Platform, ServiceFactory, StartError as KitStartError,
};
use casebook_kit::topology::{Placement, Topology};
use parking_lot::Mutex;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::engine::{Chaos, ChaosConfig, StartError};
use super::experiment::{self, ExperimentRecord, ExperimentSpec, Status};
use super::fault::{Fault, FaultEnv, FaultError};
use super::latency::RecordingInjector;
use super::probe::{Measure, Probe};
use crate::discovery::{DiscoveryConfig, Registry};

/// Every probe reads `value`.
#[derive(Debug)]
struct FakeMeasure {
    value: Mutex<Option<f64>>,
}

impl Measure for FakeMeasure {
    fn measure(&self, _: &Probe, _: Duration, _: Option<&[String]>) -> Option<f64> {
        *self.value.lock()
    }
    fn requests_per_second(&self, _: &[String], _: u64) -> Vec<(u64, f64)> {
        Vec::new()
    }
}

/// Sets the measure to `during` while injected; counts calls.
#[derive(Debug)]
struct FakeFault {
    measure: Arc<FakeMeasure>,
    during: Option<f64>,
    fail_inject: bool,
    injects: Arc<AtomicUsize>,
    rollbacks: Arc<AtomicUsize>,
}

impl Fault for FakeFault {
    fn inject<'a>(&'a mut self, _: &'a FaultEnv) -> BoxFuture<'a, Result<String, FaultError>> {
        Box::pin(async move {
            self.injects.fetch_add(1, Ordering::SeqCst);
            if self.fail_inject {
                return Err(FaultError("half done".into()));
            }
            *self.measure.value.lock() = self.during;
            Ok("injected".into())
        })
    }
    fn during<'a>(&'a mut self, _: &'a FaultEnv) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async { Vec::new() })
    }
    fn rollback<'a>(&'a mut self, _: &'a FaultEnv) -> BoxFuture<'a, Result<String, FaultError>> {
        Box::pin(async move {
            self.rollbacks.fetch_add(1, Ordering::SeqCst);
            *self.measure.value.lock() = Some(1.0);
            Ok("rolled back".into())
        })
    }
    fn report(&self) -> serde_json::Value {
        json!({})
    }
}

/// An instance that listens and does nothing.
#[derive(Debug)]
struct Idle(&'static str);

impl ServiceFactory for Idle {
    fn name(&self) -> &str {
        self.0
    }
    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, KitStartError>> {
        Box::pin(async move {
            let listener = ctx.bind(ctx.listen_addr()).await?;
            Ok(listener.local_addr().map_err(anyhow::Error::from)?)
        })
    }
}

struct Fixture {
    env: FaultEnv,
    measure: Arc<FakeMeasure>,
    platform: Platform,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = SystemClock::shared();
    let platform = Platform::new(Topology::default(), dir.path(), clock.clone());
    for name in ["control", "api"] {
        platform.register_service(Arc::new(Idle(name)));
    }
    let registry = Arc::new(
        Registry::new(
            DiscoveryConfig::default(),
            Topology::default(),
            ManualClock::new().shared(),
        )
        .unwrap(),
    );
    let measure = Arc::new(FakeMeasure {
        value: Mutex::new(Some(1.0)),
    });
    let env = FaultEnv {
        platform: platform.downgrade(),
        registry,
        measure: measure.clone(),
        clock,
        injector: Some(RecordingInjector::new()),
    };
    Fixture {
        env,
        measure,
        platform,
        _dir: dir,
    }
}

fn spec(extra: serde_json::Value) -> ExperimentSpec {
    let mut base = json!({
        "fault": {"kind": "gorilla", "zone": "us-east-a"},
        "probes": [{"kind": "success_ratio", "service": "api", "min": 0.99, "abort_min": 0.9}],
        "duration": "1s", "probe_interval": "200ms", "settle": "0s",
    });
    base.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let mut spec: ExperimentSpec = serde_json::from_value(base).unwrap();
    spec.validate().unwrap();
    spec
}

struct Ran {
    record: ExperimentRecord,
    injects: usize,
    rollbacks: usize,
}

async fn run_fake(
    during: Option<f64>,
    fail_inject: bool,
    before: Option<f64>,
    stop: Option<&str>,
    duration: &str,
) -> Ran {
    let f = fixture();
    *f.measure.value.lock() = before;
    let (injects, rollbacks) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let fault = Box::new(FakeFault {
        measure: f.measure.clone(),
        during,
        fail_inject,
        injects: injects.clone(),
        rollbacks: rollbacks.clone(),
    });
    let record = Arc::new(Mutex::new(ExperimentRecord::new(
        "exp-1".into(),
        spec(json!({"duration": duration})),
        0,
    )));
    let (abort, shutdown) = (CancellationToken::new(), CancellationToken::new());
    let task = tokio::spawn(experiment::run(
        record.clone(),
        fault,
        f.env.clone(),
        abort.clone(),
        shutdown.clone(),
    ));
    if let Some(which) = stop {
        // Once injected, stop it the way asked.
        while injects.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        match which {
            "abort" => abort.cancel(),
            _ => shutdown.cancel(),
        }
    }
    task.await.unwrap();
    let record = record.lock().clone();
    drop(f.platform);
    Ran {
        record,
        injects: injects.load(Ordering::SeqCst),
        rollbacks: rollbacks.load(Ordering::SeqCst),
    }
}

#[tokio::test]
async fn a_hypothesis_that_holds_through_the_fault_completes_and_rolls_back() {
    let ran = run_fake(Some(0.995), false, Some(1.0), None, "1s").await;
    assert_eq!(ran.record.status, Status::Completed, "{:#?}", ran.record);
    assert_eq!(ran.record.held, Some(true));
    assert_eq!((ran.injects, ran.rollbacks), (1, 1));
    let probe = &ran.record.probes[0];
    assert_eq!(probe.before, Some(1.0));
    assert_eq!(probe.during, Some(0.995));
    assert!(probe.during_samples >= 1);
    assert_eq!(probe.after, Some(1.0));
    let phases: Vec<&str> = ran
        .record
        .timeline
        .iter()
        .map(|t| t.phase.as_str())
        .collect();
    assert_eq!(phases.first(), Some(&"before"));
    assert!(
        phases.contains(&"inject") && phases.contains(&"rollback") && phases.contains(&"after")
    );
}

#[tokio::test]
async fn a_system_not_steady_is_left_alone() {
    let ran = run_fake(Some(0.5), false, Some(0.5), None, "1s").await;
    assert_eq!(ran.record.status, Status::Aborted);
    assert_eq!(ran.record.held, Some(false));
    assert!(
        ran.record
            .abort_reason
            .as_deref()
            .unwrap()
            .contains("not steady"),
        "{:?}",
        ran.record.abort_reason
    );
    assert_eq!((ran.injects, ran.rollbacks), (0, 0));
    // No data is not steady either.
    let ran = run_fake(Some(1.0), false, None, None, "1s").await;
    assert_eq!(ran.record.status, Status::Aborted);
    assert_eq!(ran.injects, 0);
}

#[tokio::test]
async fn a_breach_beyond_the_abort_limit_rolls_back_early() {
    let ran = run_fake(Some(0.5), false, Some(1.0), None, "1h").await;
    assert_eq!(ran.record.status, Status::Aborted);
    assert_eq!(ran.record.held, Some(false));
    assert!(
        ran.record
            .abort_reason
            .as_deref()
            .unwrap()
            .contains("abort limit")
    );
    assert_eq!((ran.injects, ran.rollbacks), (1, 1));
    assert_eq!(ran.record.probes[0].during, Some(0.5));
    assert_eq!(ran.record.probes[0].held, Some(false));
}

#[tokio::test]
async fn within_the_abort_limit_but_outside_the_tolerance_runs_on_and_does_not_hold() {
    let ran = run_fake(Some(0.95), false, Some(1.0), None, "1s").await;
    assert_eq!(ran.record.status, Status::Completed);
    assert_eq!(ran.record.held, Some(false));
    assert_eq!(ran.rollbacks, 1);
}

#[tokio::test]
async fn an_operator_abort_a_failed_injection_and_shutdown_all_roll_back() {
    let ran = run_fake(Some(1.0), false, Some(1.0), Some("abort"), "1h").await;
    assert_eq!(ran.record.status, Status::Aborted);
    assert_eq!(
        ran.record.abort_reason.as_deref(),
        Some("aborted by an operator")
    );
    assert_eq!(ran.rollbacks, 1);

    let ran = run_fake(Some(1.0), true, Some(1.0), None, "1h").await;
    assert_eq!(ran.record.status, Status::Failed);
    assert!(ran.record.error.as_deref().unwrap().contains("half done"));
    assert_eq!(ran.rollbacks, 1, "a partial injection is undone");

    let ran = run_fake(Some(1.0), false, Some(1.0), Some("shutdown"), "1h").await;
    assert_eq!(ran.record.status, Status::Aborted);
    assert_eq!(ran.rollbacks, 1);
    assert!(
        ran.record
            .timeline
            .iter()
            .any(|t| t.event.contains("skipped"))
    );
}

async fn start_api(platform: &Platform, zone: &str) -> String {
    platform
        .start(InstanceSpec {
            service: "api".into(),
            instance_id: None,
            placement: Placement {
                region: zone[..zone.len() - 2].into(),
                zone: zone.into(),
            },
            listen: "127.0.0.1:0".parse().unwrap(),
            version: "1".into(),
            port_hint: None,
        })
        .await
        .unwrap()
        .instance_id
}

async fn wait_done(chaos: &Chaos, id: &str) -> ExperimentRecord {
    for _ in 0..1000 {
        let record = chaos.get(id).unwrap();
        if record.status != Status::Running {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("experiment {id} did not finish");
}

#[tokio::test]
async fn the_engine_refuses_the_control_plane_and_unknown_names_and_gorilla_kills_and_restores() {
    let f = fixture();
    let chaos = Arc::new(Chaos::new(
        &ChaosConfig::default(),
        f.env.clone(),
        CancellationToken::new(),
    ));
    let refuse = |json: serde_json::Value| {
        let spec: ExperimentSpec = serde_json::from_value(json).unwrap();
        chaos.start(spec).unwrap_err()
    };
    match refuse(json!({"fault": {"kind": "monkey", "service": "control"}})) {
        StartError::Invalid(e) => {
            assert_eq!(e.key(), "fault.service");
            assert!(e.message().contains("control plane"));
        }
        other => panic!("{other:?}"),
    }
    match refuse(json!({"fault": {"kind": "monkey", "service": "nope"}})) {
        StartError::NotFound(m) => assert!(m.contains("`nope`"), "{m}"),
        other => panic!("{other:?}"),
    }
    match refuse(json!({"fault": {"kind": "gorilla", "zone": "mars-a"}})) {
        StartError::NotFound(m) => assert!(m.contains("`mars-a`"), "{m}"),
        other => panic!("{other:?}"),
    }
    match refuse(json!({"fault": {"kind": "kong", "region": "mars"}})) {
        StartError::NotFound(m) => assert!(m.contains("`mars`"), "{m}"),
        other => panic!("{other:?}"),
    }
    match refuse(
        json!({"fault": {"kind": "monkey", "service": "api", "region": "eu-west", "zone": "us-east-a"}}),
    ) {
        StartError::Invalid(e) => assert_eq!(e.key(), "fault.zone"),
        other => panic!("{other:?}"),
    }
    match refuse(json!({"fault": {"kind": "gorilla", "zone": "us-east-a"}, "duration": "0s"})) {
        StartError::Invalid(e) => assert_eq!(e.key(), "duration"),
        other => panic!("{other:?}"),
    }

    // Gorilla: the zone's api instances die, the control plane is spared, the
    // rollback restores what did not come back.
    let control = f
        .platform
        .start(InstanceSpec {
            service: "control".into(),
            instance_id: None,
            placement: Placement {
                region: "us-east".into(),
                zone: "us-east-a".into(),
            },
            listen: "127.0.0.1:0".parse().unwrap(),
            version: "1".into(),
            port_hint: None,
        })
        .await
        .unwrap()
        .instance_id;
    let a1 = start_api(&f.platform, "us-east-a").await;
    let a2 = start_api(&f.platform, "us-east-a").await;
    let b1 = start_api(&f.platform, "us-east-b").await;
    let spec: ExperimentSpec = serde_json::from_value(json!({
        "fault": {"kind": "gorilla", "zone": "us-east-a"},
        "duration": "1s", "probe_interval": "200ms", "settle": "0s",
    }))
    .unwrap();
    let started = chaos.start(spec).unwrap();
    let done = wait_done(&chaos, &started.id).await;
    assert_eq!(done.status, Status::Completed, "{done:#?}");
    let killed: Vec<String> = serde_json::from_value(done.fault["killed"].clone()).unwrap();
    assert_eq!(killed.len(), 2);
    assert!(killed.contains(&a1) && killed.contains(&a2));
    let state = |id: &str| f.platform.state(id).unwrap();
    assert!(state(&control).is_live() && state(&b1).is_live());
    assert!(!state(&a1).is_live() && !state(&a2).is_live());
    let restarted: Vec<String> = serde_json::from_value(done.fault["restarted"].clone()).unwrap();
    assert_eq!(restarted.len(), 2, "{done:#?}");
    assert!(restarted.iter().all(|id| state(id).is_live()));
    assert_eq!(done.fault["recovery"]["api"]["by"], "rollback");
    assert_eq!(chaos.list().len(), 1);
    assert_eq!(chaos.abort(&started.id), Some(false));
    assert_eq!(chaos.abort("exp-9"), None);
}

#[tokio::test]
async fn kong_marks_the_region_out_and_back_and_latency_goes_through_the_injector() {
    let f = fixture();
    let injector = RecordingInjector::new();
    let env = FaultEnv {
        injector: Some(injector.clone()),
        ..f.env.clone()
    };
    let chaos = Arc::new(Chaos::new(
        &ChaosConfig::default(),
        env,
        CancellationToken::new(),
    ));
    start_api(&f.platform, "eu-west-a").await;
    let spec: ExperimentSpec = serde_json::from_value(json!({
        "fault": {"kind": "kong", "region": "eu-west"},
        "duration": "1h", "probe_interval": "200ms", "settle": "0s",
    }))
    .unwrap();
    let started = chaos.start(spec.clone()).unwrap();
    for _ in 0..500 {
        if !f.env.registry.region_overrides().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(f.env.registry.region_overrides()[0].region, "eu-west");
    assert!(matches!(
        chaos.start(spec).unwrap_err(),
        StartError::Conflict(_)
    ));
    assert_eq!(chaos.abort(&started.id), Some(true));
    let done = wait_done(&chaos, &started.id).await;
    assert_eq!(done.status, Status::Aborted);
    assert!(f.env.registry.region_overrides().is_empty(), "rolled back");

    let spec: ExperimentSpec = serde_json::from_value(json!({
        "fault": {"kind": "latency", "service": "api", "latency_ms": 300},
        "duration": "1s", "probe_interval": "200ms", "settle": "0s",
    }))
    .unwrap();
    let started = chaos.start(spec).unwrap();
    let done = wait_done(&chaos, &started.id).await;
    assert_eq!(done.status, Status::Completed, "{done:#?}");
    let recorded = injector.recorded();
    assert_eq!((recorded.injected, recorded.removed), (1, 1));
    assert!(recorded.active.is_empty());
}
