//! Steering through the real discovery API: the control plane's registry served
//! over loopback, the kit's discovery client as the resolver's source. A region
//! override (Chaos Kong) takes the region's CDN instances out of steering, and
//! dropping it brings them back — steering needs no evacuation logic of its own
//! because it picks edges through discovery, which lists only `UP` instances.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use casebook_control::discovery::{DiscoveryConfig, Registry};
use casebook_kit::clock::ManualClock;
use casebook_kit::discovery::{DiscoveryClient, Registration};
use casebook_kit::resolve::Resolver;
use casebook_kit::topology::{InstanceInfo, InstanceStatus, Topology};
use casebook_netflix::case::{EDGE_SERVICE, ISP_SERVICE};
use casebook_netflix::playback::steering::{CANDIDATES_TTL, Steering};

fn register(registry: &Registry, service: &str, id: &str, region: &str, port: u16) {
    registry
        .register(Registration::up(InstanceInfo {
            service: service.to_owned(),
            instance_id: id.to_owned(),
            region: region.to_owned(),
            zone: format!("{region}-a"),
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            version: "test".to_owned(),
        }))
        .unwrap();
}

#[tokio::test]
async fn a_region_override_steers_sessions_off_the_regions_edges_and_back() {
    let clock = ManualClock::new();
    let registry = Arc::new(
        Registry::new(
            DiscoveryConfig::default(),
            Topology::default(),
            clock.shared(),
        )
        .unwrap(),
    );
    register(&registry, ISP_SERVICE, "isp-eu", "eu-west", 1001);
    register(&registry, EDGE_SERVICE, "edge-eu", "eu-west", 1002);
    register(&registry, ISP_SERVICE, "isp-us", "us-east", 2001);
    register(&registry, EDGE_SERVICE, "edge-us", "us-east", 2002);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    let router = casebook_control::discovery::api::router(registry.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let resolver = Arc::new(Resolver::detached(clock.shared()));
    resolver.attach(Arc::new(DiscoveryClient::new(format!("http://{api}"))));
    let steering = Steering::new(
        resolver,
        Topology::default(),
        Duration::from_secs(30),
        clock.shared(),
    )
    .unwrap();

    let home = steering.steer("eu-west", "session-1", &[]).await.unwrap();
    assert_eq!(home.address.port(), 1001, "eu-west's ISP cache first");

    // Kong: eu-west out of service in discovery.
    registry
        .override_region(
            "eu-west",
            Some(InstanceStatus::OutOfService),
            vec!["control".to_owned()],
        )
        .unwrap();
    clock.advance(CANDIDATES_TTL + Duration::from_millis(1));
    let ranked = steering.ranked("eu-west", "session-1").await.unwrap();
    assert!(
        ranked.iter().all(|c| c.region == "us-east"),
        "no eu-west edge while it is out: {ranked:?}"
    );
    let away = steering.steer("eu-west", "session-1", &[]).await.unwrap();
    assert_eq!(away.address.port(), 2001, "the next region's ISP cache");

    // Back in service.
    registry
        .override_region("eu-west", None, Vec::new())
        .unwrap();
    clock.advance(CANDIDATES_TTL + Duration::from_millis(1));
    let back = steering.steer("eu-west", "session-1", &[]).await.unwrap();
    assert_eq!(back.address.port(), 1001);
}
