//! Discovery end to end over real loopback sockets: the server's router, the kit's
//! client and lease keeper.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use casebook_control::discovery::{DiscoveryConfig, Registry, api};
use casebook_kit::clock::{ManualClock, SystemClock};
use casebook_kit::discovery;
use casebook_kit::discovery::{
    DiscoveryClient, DiscoveryError, LeaseKeeper, Registration, RenewOutcome,
};
use casebook_kit::http_client::HttpClient;
use casebook_kit::resilience::breaker::BreakerRegistry;
use casebook_kit::resilience::stack::{ResilientClient, StackBuilder};
use casebook_kit::topology::{InstanceInfo, InstanceStatus, Placement, Topology};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use tokio::net::TcpListener;

/// Leases never expire on a manual clock nobody advances, so nothing here depends on
/// timing except the keeper's own interval.
fn new_registry() -> Arc<Registry> {
    let clock = ManualClock::new();
    Arc::new(
        Registry::new(
            DiscoveryConfig::default(),
            Topology::default(),
            clock.shared(),
        )
        .unwrap(),
    )
}

async fn serve_on(listener: TcpListener, registry: Arc<Registry>) -> String {
    let addr = listener.local_addr().unwrap();
    let app = api::router(registry);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn serve(registry: Arc<Registry>) -> String {
    serve_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), registry).await
}

/// A client whose `discovery` breaker is its own, so one test's failures never
/// open another test's breaker (the process-wide registry is shared).
fn client(base_url: impl Into<String>) -> DiscoveryClient {
    client_on(base_url, BreakerRegistry::new(SystemClock::shared()))
}

fn client_on(base_url: impl Into<String>, breakers: BreakerRegistry) -> DiscoveryClient {
    let stack = StackBuilder::new(discovery::DEPENDENCY, discovery::default_resilience())
        .registry(breakers);
    DiscoveryClient::with_client(
        base_url,
        ResilientClient::with_builder(stack, None).unwrap(),
    )
}

fn info(id: &str, zone: &str) -> InstanceInfo {
    InstanceInfo {
        service: "chat".into(),
        instance_id: id.into(),
        region: Topology::default().region_of(zone).unwrap().into(),
        zone: zone.into(),
        address: "127.0.0.1:5222".parse().unwrap(),
        version: "0.1.0".into(),
    }
}

/// Polls `check` until it holds; fails the test after a generous deadline.
async fn eventually(what: &str, check: impl FnMut() -> bool) {
    casebook_testkit::eventually_sync(what, casebook_testkit::DEADLINE, check).await;
}

async fn raw(
    http: &HttpClient,
    method: Method,
    url: &str,
    body: &'static str,
) -> (StatusCode, serde_json::Value) {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let response = http
        .send(method, url, headers, Bytes::from_static(body.as_bytes()))
        .await
        .unwrap();
    let json = serde_json::from_slice(&response.body).unwrap_or(serde_json::Value::Null);
    (response.status, json)
}

#[tokio::test]
async fn register_query_renew_override_and_cancel_through_the_client() {
    let registry = new_registry();
    let client = client(serve(registry.clone()).await);

    for (id, zone) in [
        ("c-eu", "eu-west-a"),
        ("c-b", "us-east-b"),
        ("c-a", "us-east-a"),
    ] {
        client
            .register(&Registration::up(info(id, zone)))
            .await
            .unwrap();
    }
    assert_eq!(registry.len(), 3);

    let near = Placement {
        region: "us-east".into(),
        zone: "us-east-a".into(),
    };
    let ordered: Vec<_> = client
        .instances("chat", Some(&near))
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.instance.instance_id)
        .collect();
    assert_eq!(ordered, ["c-a", "c-b", "c-eu"]);
    assert!(client.instances("nobody", None).await.unwrap().is_empty());

    assert_eq!(
        client.renew("chat", "c-a").await.unwrap(),
        RenewOutcome::Renewed
    );
    let status = client.status().await.unwrap();
    assert_eq!(status.instances, 3);
    assert_eq!(status.expected_clients, 3);

    client
        .set_status("chat", "c-a", InstanceStatus::OutOfService)
        .await
        .unwrap();
    let up: Vec<_> = client
        .instances("chat", Some(&near))
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.instance.instance_id)
        .collect();
    assert_eq!(up, ["c-b", "c-eu"]);
    let everything = client.all().await.unwrap();
    assert_eq!(everything.services["chat"].len(), 3);
    assert_eq!(
        registry.get("chat", "c-a").unwrap().status,
        InstanceStatus::OutOfService
    );

    client.cancel("chat", "c-a").await.unwrap();
    assert!(registry.get("chat", "c-a").is_none());
    assert_eq!(
        client.renew("chat", "c-a").await.unwrap(),
        RenewOutcome::UnknownInstance
    );
    assert!(matches!(
        client.cancel("chat", "c-a").await,
        Err(DiscoveryError::UnknownInstance { .. })
    ));
    assert!(matches!(
        client.set_status("chat", "c-a", InstanceStatus::Up).await,
        Err(DiscoveryError::UnknownInstance { .. })
    ));
}

#[tokio::test]
async fn the_keeper_registers_again_when_the_server_forgets_and_cancels_on_stop() {
    let registry = new_registry();
    let client = client(serve(registry.clone()).await);
    let keeper = LeaseKeeper::start(
        client,
        Registration::up(info("c-1", "us-east-a")),
        Duration::from_millis(20),
    );

    eventually("the first registration", || {
        registry.get("chat", "c-1").is_some()
    })
    .await;
    eventually("a renewal", || keeper.stats().renewals() >= 1).await;
    assert_eq!(keeper.stats().registrations(), 1);

    // The server forgets the instance (as after an eviction or a restart).
    registry.cancel("chat", "c-1").unwrap();
    eventually("the re-registration", || {
        keeper.stats().registrations() == 2 && registry.get("chat", "c-1").is_some()
    })
    .await;

    keeper.stop().await.unwrap();
    assert!(
        registry.get("chat", "c-1").is_none(),
        "a graceful stop cancels the registration"
    );
}

#[tokio::test]
async fn dropping_the_keeper_leaves_the_lease_to_expire() {
    let registry = new_registry();
    let client = client(serve(registry.clone()).await);
    let keeper = LeaseKeeper::start(
        client,
        Registration::up(info("c-1", "us-east-a")),
        Duration::from_millis(20),
    );
    eventually("the first registration", || {
        registry.get("chat", "c-1").is_some()
    })
    .await;
    let stats = keeper.stats();
    drop(keeper);
    // The heartbeat task holds the other handle to the stats until it ends.
    eventually("the heartbeat to end", || Arc::strong_count(&stats) == 1).await;
    assert!(
        registry.get("chat", "c-1").is_some(),
        "a killed instance does not cancel; its lease is left to expire"
    );
}

#[tokio::test]
async fn the_keeper_keeps_trying_until_discovery_comes_up() {
    // Find a free port, then leave it closed for a while.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = client(format!("http://127.0.0.1:{port}"));
    let keeper = LeaseKeeper::start(
        client,
        Registration::up(info("c-1", "us-east-a")),
        Duration::from_millis(50),
    );
    eventually("failed attempts", || keeper.stats().failures() >= 5).await;
    assert_eq!(keeper.stats().registrations(), 0);
    // However many calls fail, the outage is one log-worthy event.
    assert_eq!(keeper.stats().outages(), 1);

    let registry = new_registry();
    serve_on(
        TcpListener::bind(("127.0.0.1", port)).await.unwrap(),
        registry.clone(),
    )
    .await;
    eventually("the registration once discovery is up", || {
        registry.get("chat", "c-1").is_some()
    })
    .await;
    keeper.stop().await.unwrap();
    assert!(registry.is_empty());
}

#[tokio::test]
async fn bad_requests_get_a_400_naming_the_field() {
    let registry = new_registry();
    let base = serve(registry.clone()).await;
    let http = HttpClient::default();
    let apps = format!("{base}/api/discovery/apps");

    // A required field missing from the body.
    let (status, body) = raw(
        &http,
        Method::POST,
        &format!("{apps}/chat"),
        r#"{"instance":{"service":"chat","instance_id":"c-1","region":"us-east",
            "address":"127.0.0.1:5222","version":"0.1.0"}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "instance.zone");

    // A field of the wrong type.
    let (status, body) = raw(
        &http,
        Method::POST,
        &format!("{apps}/chat"),
        r#"{"instance":{"service":"chat","instance_id":"c-1","region":"us-east",
            "zone":"us-east-a","address":"not an address","version":"0.1.0"}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "instance.address");

    // Not JSON at all.
    let (status, _) = raw(&http, Method::POST, &format!("{apps}/chat"), "{").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The path and the body disagree about the service.
    let (status, body) = raw(
        &http,
        Method::POST,
        &format!("{apps}/gateway"),
        r#"{"instance":{"service":"chat","instance_id":"c-1","region":"us-east",
            "zone":"us-east-a","address":"127.0.0.1:5222","version":"0.1.0"}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "instance.service");

    // Well-formed, but the zone is not in the region: through the client.
    let client = client(base.clone());
    let mut wrong_zone = info("c-1", "us-east-a");
    wrong_zone.zone = "eu-west-a".into();
    let err = client
        .register(&Registration::up(wrong_zone))
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("instance.zone"), "{err}");
    assert!(registry.is_empty());

    // Query parameters.
    for (query, field) in [
        ("zone=mars-a", "zone"),
        ("region=mars", "region"),
        ("region=eu-west&zone=us-east-a", "zone"),
        ("all_statuses=maybe", "all_statuses"),
        ("zonee=us-east-a", "zonee"),
    ] {
        let (status, body) = raw(&http, Method::GET, &format!("{apps}/chat?{query}"), "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(body["field"], field, "{query}");
    }

    client
        .register(&Registration::up(info("c-1", "us-east-a")))
        .await
        .unwrap();
    for (query, field) in [("value=SLEEPY", "value"), ("", "value")] {
        let (status, body) = raw(
            &http,
            Method::PUT,
            &format!("{apps}/chat/c-1/status?{query}"),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(body["field"], field, "{query}");
    }

    // Unknown instances are a JSON 404.
    let (status, body) = raw(&http, Method::PUT, &format!("{apps}/chat/ghost"), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("ghost"));
    let (status, _) = raw(&http, Method::GET, &format!("{apps}/chat/ghost"), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // And the one that exists is answered.
    let (status, body) = raw(&http, Method::GET, &format!("{apps}/chat/c-1"), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["instance"]["zone"], "us-east-a");
}

#[tokio::test]
async fn maintenance_evicts_on_its_own_and_stops_when_cancelled() {
    use casebook_kit::clock::SystemClock;
    use tokio_util::sync::CancellationToken;

    let config = DiscoveryConfig {
        renew_interval: Duration::from_millis(10),
        lease_duration: Duration::from_millis(20),
        eviction_interval: Duration::from_millis(10),
        self_preservation: false,
        ..DiscoveryConfig::default()
    };
    let registry =
        Arc::new(Registry::new(config, Topology::default(), SystemClock::shared()).unwrap());
    registry
        .register(Registration::up(info("c-1", "us-east-a")))
        .unwrap();
    let cancel = CancellationToken::new();
    let task = casebook_control::discovery::spawn_maintenance(registry.clone(), cancel.clone());
    eventually("the expired lease to be evicted", || registry.is_empty()).await;
    assert_eq!(registry.status().evictions_total, 1);
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn calls_to_a_dead_control_plane_trip_the_discovery_breaker_and_then_fail_fast() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let clock = ManualClock::new();
    let breakers = BreakerRegistry::new(clock.shared());
    let client = client_on(format!("http://127.0.0.1:{port}"), breakers.clone());
    // Hystrix needs 20 requests in the window, at least half failed.
    for _ in 0..20 {
        let err = client.renew("chat", "chat-1").await.unwrap_err();
        assert!(
            matches!(err, DiscoveryError::Http(_)),
            "refused, not short-circuited: {err}"
        );
    }
    // The breaker judges on its next health snapshot, 500 ms on.
    clock.advance(Duration::from_millis(600));
    let _ = client.renew("chat", "chat-1").await;
    let err = client.renew("chat", "chat-1").await.unwrap_err();
    assert!(
        matches!(err, DiscoveryError::Unavailable(_)),
        "short-circuited by the open breaker: {err}"
    );
    let stats = breakers.snapshot();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].name, discovery::DEPENDENCY);
}

#[tokio::test]
async fn a_caller_beyond_its_share_is_refused_with_429_where_the_server_knows_callers() {
    let registry = Arc::new(
        Registry::new(
            DiscoveryConfig {
                max_instances_per_source: 3,
                ..DiscoveryConfig::default()
            },
            Topology::default(),
            ManualClock::new().shared(),
        )
        .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    // The server records each connection's peer, as the per-caller bound needs.
    let app =
        api::router(registry.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = client(base);
    for n in 0..3 {
        client
            .register(&Registration::up(info(&format!("c-{n}"), "us-east-a")))
            .await
            .unwrap();
    }
    let err = client
        .register(&Registration::up(info("c-3", "us-east-a")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DiscoveryError::Rejected { status, error, .. }
            if *status == StatusCode::TOO_MANY_REQUESTS && error.contains("max_instances_per_source")),
        "{err}"
    );
    // What it holds still renews and re-registers.
    client
        .register(&Registration::up(info("c-0", "us-east-a")))
        .await
        .unwrap();
    assert_eq!(registry.len(), 3);
}
