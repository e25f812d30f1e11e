//! The autoscaler on a real platform: instances really start and stop. Decisions
//! run on a `ManualClock` (cooldowns pass only when the test advances it); the loop
//! ticks in real time, so effects are awaited with `eventually`, never slept for.
//!
//! - The engine alone, fed its signal directly: nothing for a service never started,
//!   out above the mark (another zone), held by the cooldowns, in after
//!   `cooldown_in` (the newest, gracefully), nothing on a gap, a dead instance
//!   replaced; a failed start kept with its error.
//! - Placement: scale-outs stay in the zones the service's declared spread allows
//!   (the amazon cart's zones of the first region), a policy's own placement
//!   overrides it, and an undeclared service stays in the regions it runs in.
//! - The control plane over HTTP: the signal read from request metrics published to
//!   its store, `GET /api/autoscaler`, the decisions' metrics landing in the store,
//!   policy and schedule changes at run time (and their refusals).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use casebook_control::access::Token;
use casebook_control::autoscaler::{
    Autoscaler, AutoscalerConfig, DecisionRecord, FedSignal, Policy, Reason, act,
};
use casebook_control::{CONTROL_SERVICE, ControlConfig, ControlPlane, ControlSettings};
use casebook_kit::clock::{Clock, ManualClock};
use casebook_kit::http_client::{HttpClient, HttpResponse};
use casebook_kit::metrics_push::{Datapoint, MetricKind, MetricsPusher, PublishBatch, node_tags};
use casebook_kit::runtime::{
    BoxFuture, InstanceContext, InstanceSpec, InstanceState, Platform, ServiceFactory, StartError,
    serve_http,
};
use casebook_kit::topology::Topology;
use casebook_testkit::{DEADLINE, eventually_sync};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// A trivial HTTP service under a name of the test's choosing (the metrics recorder
/// is process-wide: each test scales its own service).
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

fn policy(service: &str) -> Policy {
    serde_json::from_value(json!({
        "service": service, "min_instances": 1, "max_instances": 3,
        "capacity": 10.0, "window": "10s", "step": 1,
        "cooldown_out": "30s", "cooldown_in": "60s"
    }))
    .unwrap()
}

fn config(service: &str) -> AutoscalerConfig {
    AutoscalerConfig {
        interval: Duration::from_millis(10),
        policies: vec![policy(service)],
        ..AutoscalerConfig::default()
    }
}

fn live(platform: &Platform, service: &str) -> Vec<String> {
    act::live(platform, service)
        .into_iter()
        .map(|v| v.info.instance_id)
        .collect()
}

/// The newest decision kept for `reason`, once there is one (an action is recorded
/// when it has finished: a stop's drain comes first).
async fn newest(autoscaler: &Autoscaler, reason: Reason) -> DecisionRecord {
    let find = || {
        autoscaler
            .view()
            .decisions
            .into_iter()
            .find(|d| d.decision.reason == reason)
    };
    eventually_sync(&format!("a {reason:?} decision"), DEADLINE, || {
        find().is_some()
    })
    .await;
    find().unwrap()
}

fn last_reason(autoscaler: &Autoscaler) -> Option<Reason> {
    autoscaler.view().services[0]
        .last_decision
        .map(|d| d.reason)
}

#[tokio::test]
async fn a_fed_signal_scales_out_then_in_after_the_cooldown() {
    const SERVICE: &str = "fed-echo";
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let platform = Platform::new(Topology::default(), dir.path(), clock.shared());
    platform.register_service(Arc::new(Trivial(SERVICE)));
    let signal = Arc::new(FedSignal::new());
    let autoscaler = Arc::new(Autoscaler::new(
        &config(SERVICE),
        signal.clone(),
        platform.downgrade(),
        clock.shared(),
        Duration::from_secs(1),
    ));
    let stop = CancellationToken::new();
    let loop_task = tokio::spawn(autoscaler.clone().run(stop.clone()));

    // A policy does not start a service nobody started.
    signal.set(SERVICE, Some(0.9));
    eventually_sync("a not_started hold", DEADLINE, || {
        last_reason(&autoscaler) == Some(Reason::NotStarted)
    })
    .await;
    assert!(live(&platform, SERVICE).is_empty());
    let first = platform
        .start(InstanceSpec {
            service: SERVICE.into(),
            instance_id: None,
            placement: Topology::default().spread(0),
            listen: "127.0.0.1:0".parse().unwrap(),
            version: "test".into(),
            port_hint: None,
        })
        .await
        .unwrap()
        .instance_id;

    // Above the mark: one more instance, in another zone.
    eventually_sync("a second instance", DEADLINE, || {
        live(&platform, SERVICE).len() == 2
    })
    .await;
    let second = live(&platform, SERVICE)[1].clone();
    let zone = |id: &str| {
        platform
            .list()
            .into_iter()
            .find(|v| v.info.instance_id == id)
            .unwrap()
            .info
            .zone
    };
    assert_ne!(zone(&first), zone(&second), "spread over zones");
    let out = newest(&autoscaler, Reason::AboveHigh).await;
    assert_eq!(
        (out.decision.from, out.decision.to, out.decision.reason),
        (1, 2, Reason::AboveHigh)
    );
    assert_eq!(out.instances, std::slice::from_ref(&second));
    assert_eq!(out.utilisation, Some(0.9));

    // Still above: the next scale-out waits for cooldown_out.
    eventually_sync("a cooldown_out hold", DEADLINE, || {
        last_reason(&autoscaler) == Some(Reason::CooldownOut)
    })
    .await;
    assert_eq!(live(&platform, SERVICE).len(), 2);

    // Load falls: the new instance is kept for cooldown_in after the scale-out.
    signal.set(SERVICE, Some(0.1));
    eventually_sync("a cooldown_in hold", DEADLINE, || {
        last_reason(&autoscaler) == Some(Reason::CooldownIn)
    })
    .await;
    assert_eq!(live(&platform, SERVICE).len(), 2);
    clock.advance(Duration::from_secs(60));
    eventually_sync("back to one instance", DEADLINE, || {
        live(&platform, SERVICE).len() == 1
    })
    .await;
    assert_eq!(
        live(&platform, SERVICE),
        std::slice::from_ref(&first),
        "the newest stopped"
    );
    let scaled_in = newest(&autoscaler, Reason::BelowLow).await;
    assert_eq!(
        platform.state(&second),
        Some(InstanceState::Stopped),
        "gracefully"
    );
    assert_eq!((scaled_in.decision.from, scaled_in.decision.to), (2, 1));
    assert_eq!(scaled_in.instances, [second]);

    // At the minimum nothing more goes; a gap in the signal decides nothing.
    eventually_sync("an at_min hold", DEADLINE, || {
        last_reason(&autoscaler) == Some(Reason::AtMin)
    })
    .await;
    signal.set(SERVICE, None);
    clock.advance(Duration::from_secs(3600));
    eventually_sync("a no_signal hold", DEADLINE, || {
        last_reason(&autoscaler) == Some(Reason::NoSignal)
    })
    .await;
    assert_eq!(live(&platform, SERVICE), std::slice::from_ref(&first));

    // A dead instance is replaced up to the minimum.
    platform.kill(&first).await;
    let replaced = newest(&autoscaler, Reason::BelowMin).await;
    assert_eq!((replaced.decision.from, replaced.decision.to), (0, 1));
    assert_eq!(live(&platform, SERVICE), replaced.instances);
    assert_ne!(replaced.instances, [first]);
    let version = |id: &str| {
        platform
            .list()
            .into_iter()
            .find(|v| v.info.instance_id == id)
            .map(|v| v.info.version)
    };
    assert_eq!(
        version(&replaced.instances[0]).as_deref(),
        Some("test"),
        "a replacement runs the version that died"
    );

    stop.cancel();
    loop_task.await.unwrap();
    platform.stop_all(Duration::from_secs(1)).await;
    // The platform is shutting down: the autoscaler stands down instead of replacing.
    assert!(autoscaler.tick().await.is_empty());
    assert!(live(&platform, SERVICE).is_empty());
}

/// A service whose every start fails.
#[derive(Debug)]
struct Broken;

impl ServiceFactory for Broken {
    fn name(&self) -> &str {
        "broken"
    }

    fn start<'a>(
        &'a self,
        _ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async { Err(anyhow::anyhow!("it never starts").into()) })
    }
}

/// Ticks `autoscaler` by hand: out by one at each tick, the manual clock moved
/// past `cooldown_out` in between. Returns the zones of the instances it started.
async fn scale_out_by_hand(
    autoscaler: &Autoscaler,
    clock: &ManualClock,
    platform: &Platform,
    service: &str,
    times: usize,
) -> Vec<String> {
    let mut zones = Vec::new();
    for _ in 0..times {
        let decisions = autoscaler.tick().await;
        let outs = decisions.iter().filter(|d| d.reason == Reason::AboveHigh);
        assert_eq!(outs.count(), 1, "only `service` scales: {decisions:?}");
        let newest = act::live(platform, service).pop().unwrap();
        zones.push(newest.info.zone);
        clock.advance(Duration::from_secs(30));
    }
    zones
}

#[tokio::test]
async fn scale_outs_stay_within_the_declared_spread_or_the_policys_placement() {
    use casebook_control::autoscaler::config::PlacementRule;
    use casebook_kit::case::Spread;
    const CART: &str = "spread-cart";
    const PINNED: &str = "spread-pinned";
    const LOOSE: &str = "spread-loose";
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let topology = Topology::default();
    let platform = Platform::new(topology.clone(), dir.path(), clock.shared());
    let signal = Arc::new(FedSignal::new());
    let wide = |service: &str| {
        let mut p = policy(service);
        p.max_instances = 5;
        p
    };
    let mut pinned = wide(PINNED);
    pinned.placement.zones = vec!["ap-south-b".into(), "ap-south-c".into()];
    let mut config = AutoscalerConfig {
        policies: vec![wide(CART), pinned, wide(LOOSE)],
        ..AutoscalerConfig::default()
    };
    // Declared like the amazon cart; PINNED is declared too, but its policy wins.
    for service in [CART, PINNED] {
        config.declared.insert(
            service.into(),
            PlacementRule::of_spread(Spread::ZonesOfFirstRegion, &topology),
        );
    }
    let autoscaler = Autoscaler::new(
        &config,
        signal.clone(),
        platform.downgrade(),
        clock.shared(),
        Duration::from_secs(1),
    );
    for (service, zone) in [
        (CART, "us-east-a"),
        (PINNED, "us-east-a"),
        (LOOSE, "eu-west-b"),
    ] {
        platform.register_service(Arc::new(Trivial(service)));
        platform
            .start(InstanceSpec {
                service: service.into(),
                instance_id: None,
                placement: casebook_kit::topology::Placement {
                    region: topology.region_of(zone).unwrap().to_owned(),
                    zone: zone.into(),
                },
                listen: "127.0.0.1:0".parse().unwrap(),
                version: "test".into(),
                port_hint: None,
            })
            .await
            .unwrap();
    }
    // One service at a time above the mark (a tick evaluates every policy).
    let mut zones_of = BTreeMap::new();
    for service in [CART, PINNED, LOOSE] {
        for other in [CART, PINNED, LOOSE] {
            // Below the high mark and above the low one: the others hold.
            signal.set(other, Some(if other == service { 0.9 } else { 0.5 }));
        }
        let by_tick = scale_out_by_hand(&autoscaler, &clock, &platform, service, 4).await;
        zones_of.insert(service, by_tick);
    }
    // Without the rule the second instance would go to eu-west-a (ties go round
    // the regions); with it, the first region's zones fill evenly.
    assert_eq!(
        zones_of[CART],
        ["us-east-b", "us-east-c", "us-east-a", "us-east-b"]
    );
    assert_eq!(
        zones_of[PINNED],
        ["ap-south-c", "ap-south-b", "ap-south-c", "ap-south-b"]
    );
    // Undeclared, no placement: the region it already runs in.
    assert_eq!(
        zones_of[LOOSE],
        ["eu-west-a", "eu-west-c", "eu-west-b", "eu-west-a"]
    );
    // The rule is on the policy as the API shows it.
    let view = serde_json::to_value(autoscaler.view()).unwrap();
    assert!(view.to_string().contains("ap-south-b"), "{view}");
    for service in [CART, PINNED, LOOSE] {
        for id in live(&platform, service) {
            platform.stop(&id, Duration::ZERO).await;
        }
    }
}

#[tokio::test]
async fn a_start_that_fails_is_recorded_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let platform = Platform::new(Topology::default(), dir.path(), clock.shared());
    platform.register_service(Arc::new(Broken));
    let spec = InstanceSpec {
        service: "broken".into(),
        instance_id: None,
        placement: Topology::default().spread(0),
        listen: "127.0.0.1:0".parse().unwrap(),
        version: "test".into(),
        port_hint: None,
    };
    assert!(platform.start(spec).await.is_err());
    let autoscaler = Autoscaler::new(
        &config("broken"),
        Arc::new(FedSignal::new()),
        platform.downgrade(),
        clock.shared(),
        Duration::from_secs(1),
    );
    let decisions = autoscaler.tick().await;
    assert_eq!(decisions[0].reason, Reason::BelowMin);
    let record = autoscaler.view().decisions[0].clone();
    assert!(record.instances.is_empty());
    let error = record.error.expect("the failure is kept");
    assert!(error.contains("it never starts"), "{error}");
    assert_eq!(autoscaler.view().services[0].desired, Some(1));
}

/// The control plane on a manual clock, with a trivial service and a policy for it.
struct Plane {
    platform: Platform,
    clock: ManualClock,
    url: String,
    token: String,
    _dir: tempfile::TempDir,
}

const WEB: &str = "web-echo";

async fn start_plane() -> Plane {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let platform = Platform::new(Topology::default(), dir.path(), clock.shared());
    let token = "autoscaler-test-token";
    let control = ControlConfig {
        token: Some(Token::parse(token).unwrap()),
        ..ControlConfig::default()
    };
    platform.register_service(Arc::new(ControlPlane::new(
        platform.downgrade(),
        ControlSettings {
            drain: Duration::from_secs(1),
            control,
            http_services: vec![WEB.into()],
            autoscaler: config(WEB),
            ..ControlSettings::default()
        },
    )));
    platform.register_service(Arc::new(Trivial(WEB)));
    let info = platform
        .start(InstanceSpec {
            service: CONTROL_SERVICE.into(),
            instance_id: None,
            placement: Topology::default().spread(0),
            listen: "127.0.0.1:0".parse().unwrap(),
            version: "test".into(),
            port_hint: None,
        })
        .await
        .unwrap();
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
    ) -> HttpResponse {
        let mut headers = HeaderMap::new();
        if authed {
            let bearer = format!("Bearer {}", self.token);
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&bearer).unwrap(),
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
        HttpClient::default()
            .send(method, &format!("{}{path}", self.url), headers, body)
            .await
            .unwrap()
    }

    async fn view(&self) -> Value {
        let response = self.call(Method::GET, "/api/autoscaler", None, false).await;
        assert_eq!(response.status, StatusCode::OK);
        serde_json::from_slice(&response.body).unwrap()
    }

    /// Publishes `rate` requests a second of `WEB` for the last `seconds` seconds, as
    /// the instances' pushers would.
    async fn publish_requests(&self, rate: f64, seconds: u64) {
        let now = self.clock.wall_millis();
        let tags: BTreeMap<String, String> = [("service", WEB), ("route", "/"), ("instance", "x")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let metrics = (0..seconds)
            .map(|ago| {
                Datapoint::scalar(
                    "http_requests_total",
                    tags.clone(),
                    now - ago * 1000,
                    MetricKind::Counter,
                    rate,
                )
            })
            .collect();
        let batch = PublishBatch {
            tags: BTreeMap::new(),
            metrics,
        };
        let response = self
            .call(
                Method::POST,
                "/api/metrics/publish",
                Some(serde_json::to_value(batch).unwrap()),
                true,
            )
            .await;
        assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
    }

    async fn query(&self, params: &str) -> Value {
        let response = self
            .call(
                Method::GET,
                &format!("/api/metrics/query?{params}"),
                None,
                false,
            )
            .await;
        assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
        serde_json::from_slice(&response.body).unwrap()
    }
}

/// Whether the view keeps a decision for `reason`.
fn has_decision(view: &Value, reason: &str) -> bool {
    view["decisions"]
        .as_array()
        .is_some_and(|all| all.iter().any(|d| d["reason"] == reason))
}

/// Waits until `GET /api/autoscaler` satisfies `condition`, and returns that view.
async fn view_until(plane: &Plane, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
    let give_up = tokio::time::Instant::now() + DEADLINE;
    loop {
        let view = plane.view().await;
        if condition(&view) {
            return view;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "timed out waiting for {what}: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn request_metrics_in_the_store_scale_the_service_and_decisions_are_shown_and_exported() {
    let plane = start_plane().await;

    // Not started by anyone: the policy waits.
    let view = view_until(&plane, "a not_started hold", |v| {
        has_decision(v, "not_started")
    })
    .await;
    assert_eq!(view["services"][0]["policy"]["service"], WEB);
    assert_eq!(view["services"][0]["current"], 0);
    // Started through the admin API, as an operator (or `up`) would.
    let started = plane
        .call(
            Method::POST,
            "/api/instances",
            Some(json!({"service": WEB})),
            true,
        )
        .await;
    assert_eq!(started.status, StatusCode::CREATED, "{:?}", started.body);
    view_until(&plane, "a gap in the signal", |v| {
        v["services"][0]["current"] == 1 && has_decision(v, "no_signal")
    })
    .await;

    // 30 requests/s on one instance of capacity 10: utilisation 3.0.
    plane.publish_requests(30.0, 12).await;
    let view = view_until(&plane, "a scale-out", |v| {
        v["services"][0]["current"] == 2 && has_decision(v, "above_high")
    })
    .await;
    let out = view["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["reason"] == "above_high")
        .unwrap_or_else(|| panic!("no above_high decision: {view:#}"));
    assert_eq!(
        (out["from"].as_u64(), out["to"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(out["utilisation"], 3.0);
    assert_eq!(view["services"][0]["desired"], 2);
    // The same load over two instances.
    let view = view_until(&plane, "a reading over two instances", |v| {
        v["services"][0]["signal"]["instances"] == 2
    })
    .await;
    assert_eq!(view["services"][0]["signal"]["utilisation"], 1.5);
    assert_eq!(view["services"][0]["signal"]["load"], 30.0);

    // The decisions' metrics reach the store through the pusher, like any metric.
    let mut pusher = MetricsPusher::new(&plane.url, node_tags("autoscaler-test"))
        .with_token(Some(&plane.token))
        .with_clock(plane.clock.shared());
    pusher.push_once().await.unwrap();
    let desired = plane
        .query(&format!(
            "name=autoscaler_desired_instances&filter=service:{WEB}&fn=max&from=-1m"
        ))
        .await;
    let values: Vec<f64> = desired["series"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert_eq!(values, [2.0], "{desired:#}");
    let outs = plane
        .query(&format!(
            "name=autoscaler_decisions_total&filter=service:{WEB},direction:out,reason:above_high&fn=sum&from=-1m"
        ))
        .await;
    let total: f64 = outs["series"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .sum();
    assert_eq!(total, 1.0, "{outs:#}");

    // Changes at run time: the token is needed, bad input names its field.
    let bad = json!({"service": WEB, "max_instances": 3, "capacity": 10.0, "scale_in_below": 0.9});
    let refused = plane
        .call(
            Method::POST,
            "/api/autoscaler/policies",
            Some(bad.clone()),
            false,
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let refused = plane
        .call(Method::POST, "/api/autoscaler/policies", Some(bad), true)
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let error: Value = serde_json::from_slice(&refused.body).unwrap();
    assert_eq!(error["field"], "scale_in_below", "{error}");
    let unknown = json!({"service": "nope", "max_instances": 3, "capacity": 10.0});
    let refused = plane
        .call(
            Method::POST,
            "/api/autoscaler/policies",
            Some(unknown),
            true,
        )
        .await;
    let error: Value = serde_json::from_slice(&refused.body).unwrap();
    assert_eq!(
        (refused.status, error["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("service"))
    );
    let too_many = json!({"service": WEB, "at": "00:00", "until": "23:00", "instances": 4});
    let refused = plane
        .call(
            Method::POST,
            "/api/autoscaler/schedule",
            Some(too_many),
            true,
        )
        .await;
    let error: Value = serde_json::from_slice(&refused.body).unwrap();
    assert_eq!(
        (refused.status, error["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("instances"))
    );

    // A scheduled surge starting now raises the floor at once, cooldown or not.
    let now = humantime::format_rfc3339_seconds(plane.clock.wall()).to_string();
    let later = humantime::format_rfc3339_seconds(plane.clock.wall() + Duration::from_secs(3600))
        .to_string();
    let entry = json!({"service": WEB, "at": now, "until": later, "instances": 3, "lead": "5m"});
    let added = plane
        .call(Method::POST, "/api/autoscaler/schedule", Some(entry), true)
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{:?}", added.body);
    let view = view_until(&plane, "the scheduled floor", |v| {
        v["services"][0]["current"] == 3 && has_decision(v, "schedule")
    })
    .await;
    let scheduled = view["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["reason"] == "schedule")
        .unwrap_or_else(|| panic!("no schedule decision: {view:#}"));
    assert_eq!(
        (scheduled["from"].as_u64(), scheduled["to"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(view["schedule"][0]["active"], true);
    assert_eq!(view["services"][0]["floor"], 3);
    assert_eq!(live(&plane.platform, WEB).len(), 3);

    // Removing the policy stops the scaling; the instances stay.
    let removed = plane
        .call(
            Method::DELETE,
            &format!("/api/autoscaler/policies/{WEB}"),
            None,
            true,
        )
        .await;
    assert_eq!(removed.status, StatusCode::OK);
    let removed: Value = serde_json::from_slice(&removed.body).unwrap();
    assert_eq!(removed["schedule_entries_removed"], 1);
    let view = plane.view().await;
    assert!(view["services"].as_array().unwrap().is_empty());
    assert!(view["schedule"].as_array().unwrap().is_empty());
    let gone = plane
        .call(
            Method::DELETE,
            &format!("/api/autoscaler/policies/{WEB}"),
            None,
            true,
        )
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);

    plane.platform.stop_all(Duration::from_secs(1)).await;
}
