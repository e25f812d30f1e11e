//! The HTTP player fleet against a tiny in-process platform: the real playback
//! API (fake discovery and origin) and fake CDN edges serving a synthetic ladder
//! with signed URLs. Outcomes only: sessions completed, segments fetched from
//! which edge, failovers made, events received — no timing assertions.

mod fakes;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use casebook_edge::signing::SigningKey;
use casebook_kit::clock::ManualClock;
use casebook_kit::resilience::breaker::BreakerRegistry;
use casebook_kit::resolve::Resolver;
use casebook_kit::topology::Topology;
use casebook_netflix::case::{EDGE_SERVICE, ISP_SERVICE};
use casebook_netflix::config::NetflixConfig;
use casebook_netflix::origin::ORIGIN_SERVICE;
use casebook_netflix::playback::{Playback, api};
use casebook_netflix::player::driver::{FleetConfig, FleetError, FleetProgress, run};
use casebook_netflix::player::trace::NetworkTrace;
use fakes::{FakeDiscovery, FakeEdge, FakeOrigin, LADDER, placement, serve, title};

struct Platform {
    playback: String,
    isp: Arc<FakeEdge>,
    regional: Arc<FakeEdge>,
}

/// Playback, an origin listing `title_id` of `segments` seconds, one ISP cache
/// and one regional edge in us-east.
async fn platform(title_id: &str, segments: u32) -> Platform {
    casebook_kit::telemetry::metrics();
    let clock = ManualClock::starting_at(SystemTime::now());
    let key = SigningKey::from_bytes(vec![5; 32]).unwrap();
    let discovery = Arc::new(FakeDiscovery::default());
    let origin = FakeOrigin::new(vec![title(title_id, segments)]);
    discovery.register(ORIGIN_SERVICE, serve(origin.router()).await, "us-east");
    let isp = FakeEdge::new(key.clone(), segments);
    discovery.register(ISP_SERVICE, serve(isp.router()).await, "us-east");
    let regional = FakeEdge::new(key.clone(), segments);
    discovery.register(EDGE_SERVICE, serve(regional.router()).await, "us-east");
    let resolver = Arc::new(Resolver::detached(clock.shared()));
    resolver.attach(discovery);
    let playback = Arc::new(
        Playback::new(
            &NetflixConfig::default(),
            key,
            resolver,
            Topology::default(),
            placement("us-east"),
            clock.shared(),
            BreakerRegistry::new(clock.shared()),
        )
        .unwrap(),
    );
    Platform {
        playback: format!("http://{}", serve(api::router(playback)).await),
        isp,
        regional,
    }
}

fn fleet(playback: &str, players: u64) -> FleetConfig {
    FleetConfig {
        playback: playback.to_owned(),
        regions: vec!["us-east".into()],
        rate: players as f64,
        duration: Duration::from_secs(1),
        trace: Arc::new(NetworkTrace::profile("fiber").unwrap()),
        seed: 3,
        ..FleetConfig::default()
    }
}

fn start_events(title: &str) -> u64 {
    casebook_kit::telemetry::metrics()
        .registry()
        .snapshot()
        .counters
        .iter()
        .filter(|(key, _)| {
            key.name() == "casebook_netflix_qoe_events_total"
                && key
                    .labels()
                    .any(|l| l.key() == "title" && l.value() == title)
                && key
                    .labels()
                    .any(|l| l.key() == "type" && l.value() == "start")
        })
        .map(|(_, n)| *n)
        .sum()
}

#[tokio::test]
async fn players_stream_the_ladder_through_the_edge_and_post_their_qoe() {
    let p = platform("driver-a", 6).await;
    let progress = Arc::new(FleetProgress::default());
    let report = run(fleet(&p.playback, 12), progress.clone()).await.unwrap();
    assert_eq!(report.players, 12, "{}", report.table());
    assert_eq!(report.completed, 12, "{}", report.table());
    assert_eq!(report.started, 12);
    assert_eq!((report.failed, report.dropped, report.failovers), (0, 0, 0));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.segments, 72);
    // Every segment came from the region's ISP cache, none refused.
    assert_eq!(p.isp.segments_served.load(Ordering::Relaxed), 72);
    assert_eq!(p.regional.requests.load(Ordering::Relaxed), 0);
    assert_eq!(p.isp.refused.load(Ordering::Relaxed), 0);
    let (lowest, highest) = (LADDER[0].1 as f64, LADDER[2].1 as f64);
    assert!(report.avg_bitrate_bps >= lowest && report.avg_bitrate_bps <= highest);
    assert_eq!(report.setup.title, "driver-a");
    assert_eq!(start_events("driver-a"), 12, "each player posted its start");
    assert_eq!(progress.segments.load(Ordering::Relaxed), 72);
    assert_eq!(progress.playing.load(Ordering::Relaxed), 0);
    assert!(report.table().contains("claims"));
}

#[tokio::test]
async fn players_fail_over_when_their_edge_fails_mid_stream() {
    let p = platform("driver-b", 8).await;
    // The ISP cache serves ten segments, then answers 503.
    p.isp.fail_after.store(10, Ordering::Relaxed);
    let report = run(fleet(&p.playback, 6), Arc::new(FleetProgress::default()))
        .await
        .unwrap();
    assert_eq!(report.completed, 6, "{}", report.table());
    assert!(report.failovers >= 1, "{}", report.table());
    assert!(report.errors.get("edge_5xx").copied().unwrap_or(0) >= 1);
    assert_eq!(report.segments, 48);
    let served = p.isp.segments_served.load(Ordering::Relaxed)
        + p.regional.segments_served.load(Ordering::Relaxed);
    assert_eq!(served, 48, "every segment once, from one edge or the other");
    assert!(p.regional.segments_served.load(Ordering::Relaxed) >= 38);
}

#[tokio::test]
async fn a_fleet_without_a_playback_api_or_a_title_says_why() {
    let nowhere = format!("http://127.0.0.1:{}", casebook_testkit::free_port());
    let err = run(fleet(&nowhere, 1), Arc::new(FleetProgress::default()))
        .await
        .unwrap_err();
    assert!(matches!(err, FleetError::Catalog(_)), "{err}");

    let p = platform("driver-c", 2).await;
    let mut config = fleet(&p.playback, 1);
    config.title = Some("missing".into());
    let err = run(config, Arc::new(FleetProgress::default()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FleetError::UnknownTitle { known, .. } if known == "driver-c"),
        "{err}"
    );
    let mut bad = fleet(&p.playback, 1);
    bad.rate = 0.0;
    assert!(matches!(
        run(bad, Arc::new(FleetProgress::default())).await,
        Err(FleetError::Config(_))
    ));
}
