//! Event-sourced trips: the transition table, optimistic concurrency, replay after
//! a restart, and read models equal to a from-scratch rebuild.

use std::sync::Arc;
use std::time::Duration;

use casebook_kit::clock::ManualClock;
use casebook_kit::events::{EventBus, WalBus};
use casebook_kit::wal::{Durability, WalConfig};
use casebook_uber::index::LatLng;
use casebook_uber::matching::DriverId;
use casebook_uber::trips::{
    Earnings, FareSchedule, ReadModels, TripError, TripEvent, TripState, TripStatus, Trips,
};

const A: LatLng = LatLng::literal(37.7749, -122.4194);
const B: LatLng = LatLng::literal(37.8049, -122.4094);

fn wal() -> WalConfig {
    // NoSync: the tests restart the process, they do not pull the power.
    WalConfig {
        segment_bytes: 256 * 1024,
        max_record_bytes: 64 * 1024,
        durability: Durability::NoSync,
        ..WalConfig::default()
    }
}

const FARES: FareSchedule = FareSchedule {
    base_cents: 200,
    per_km_cents: 100,
    per_minute_cents: 50,
};

fn open(dir: &std::path::Path, clock: &ManualClock) -> Trips {
    Trips::open(dir.join("store"), wal(), clock.shared(), FARES).unwrap()
}

/// Runs one trip through its whole life; returns the fare.
async fn full_trip(
    trips: &Trips,
    clock: &ManualClock,
    id: &str,
    rider: u64,
    driver: DriverId,
    city: &str,
) -> u64 {
    trips.request(id, rider, city, A, B).await.unwrap();
    trips.matched(id, driver, 90_000).await.unwrap();
    clock.advance(Duration::from_secs(90));
    trips.arrived(id).await.unwrap();
    trips.started(id).await.unwrap();
    clock.advance(Duration::from_secs(600));
    let fare = trips.completed(id, 5_000.0, 1.5).await.unwrap();
    trips.paid(id).await.unwrap();
    fare
}

#[tokio::test]
async fn a_trip_runs_its_course_and_the_fare_is_fixed_at_completion() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let trips = open(dir.path(), &clock);
    let fare = full_trip(&trips, &clock, "t1", 7, DriverId(42), "sf").await;
    // (200 + 100 × 5 km + 50 × 10 min) × 1.5 surge.
    assert_eq!(fare, 1800);
    let (state, version) = trips.load("t1").await.unwrap();
    assert_eq!(version, 6);
    assert_eq!(state.status, TripStatus::Paid);
    assert_eq!(state.driver, Some(DriverId(42)));
    assert_eq!(state.rider, Some(7));
    assert_eq!(state.fare_cents, Some(1800));
    assert_eq!(state.paid_cents, Some(1800));
    assert_eq!(state.surge, Some(1.5));
    assert_eq!(state.skipped, 0);
}

#[tokio::test]
async fn illegal_transitions_are_refused_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let trips = open(dir.path(), &clock);
    // Nothing happens to a trip that was never requested.
    assert!(matches!(
        trips.started("ghost").await,
        Err(TripError::UnknownTrip(t)) if t == "ghost"
    ));
    trips.request("t1", 1, "sf", A, B).await.unwrap();
    // Started before Matched and Arrived.
    match trips.started("t1").await {
        Err(TripError::IllegalTransition { trip, from, event }) => {
            assert_eq!(
                (trip.as_str(), from, event),
                ("t1", TripStatus::Requested, "trip.started")
            );
        }
        other => panic!("{other:?}"),
    }
    // Requested twice.
    assert!(matches!(
        trips.request("t1", 1, "sf", A, B).await,
        Err(TripError::Conflict {
            expected: 0,
            actual: 1,
            ..
        })
    ));
    assert!(matches!(
        trips
            .append(
                "t1",
                1,
                TripEvent::Requested {
                    rider: 1,
                    city: "sf".into(),
                    pickup: A,
                    dropoff: B,
                    quoted_surge: None,
                }
            )
            .await,
        Err(TripError::IllegalTransition {
            from: TripStatus::Requested,
            ..
        })
    ));
    trips.matched("t1", DriverId(3), 1000).await.unwrap();
    trips.arrived("t1").await.unwrap();
    trips.started("t1").await.unwrap();
    // No cancelling a started trip; no paying before completion.
    assert!(matches!(
        trips.cancel("t1", "changed my mind").await,
        Err(TripError::IllegalTransition {
            from: TripStatus::Started,
            event: "trip.cancelled",
            ..
        })
    ));
    assert!(matches!(
        trips.paid("t1").await,
        Err(TripError::IllegalTransition {
            from: TripStatus::Started,
            event: "trip.paid",
            ..
        })
    ));
    // Bad input is refused precisely.
    assert!(matches!(
        trips.completed("t1", 1000.0, 0.5).await,
        Err(TripError::BadInput(_))
    ));
    assert!(matches!(
        trips.completed("t1", f64::NAN, 1.0).await,
        Err(TripError::BadInput(_))
    ));
    assert!(matches!(
        trips.load("bad id!").await,
        Err(TripError::BadInput(_))
    ));
    trips.completed("t1", 1000.0, 1.0).await.unwrap();
    trips.paid("t1").await.unwrap();
    // Final: nothing more.
    assert!(matches!(
        trips.cancel("t1", "late").await,
        Err(TripError::IllegalTransition {
            from: TripStatus::Paid,
            ..
        })
    ));
    // A cancelled trip stays cancelled.
    trips.request("t2", 1, "sf", A, B).await.unwrap();
    trips.cancel("t2", "no show").await.unwrap();
    assert!(matches!(
        trips.matched("t2", DriverId(3), 1).await,
        Err(TripError::IllegalTransition {
            from: TripStatus::Cancelled,
            ..
        })
    ));
    assert_eq!(trips.load("t2").await.unwrap().1, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_at_a_stale_version_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let trips = open(dir.path(), &clock);
    trips.request("t1", 1, "sf", A, B).await.unwrap();
    // 16 dispatchers all saw version 1 and each tries to match its own driver.
    let tasks: Vec<_> = (0..16u64)
        .map(|n| {
            let driver = DriverId(n);
            let trips = trips.clone();
            tokio::spawn(async move {
                trips
                    .append(
                        "t1",
                        1,
                        TripEvent::Matched {
                            driver,
                            eta_ms: 1000,
                        },
                    )
                    .await
                    .map(|v| (driver, v))
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(won) => winners.push(won),
            Err(TripError::Conflict {
                expected: 1,
                actual: 2,
                ..
            }) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let (state, version) = trips.load("t1").await.unwrap();
    assert_eq!(version, 2);
    assert_eq!(state.driver, Some(winners[0].0));
    // A stale writer that re-reads and retries sees the match and is refused by the table.
    assert!(matches!(
        trips.matched("t1", DriverId(99), 1000).await,
        Err(TripError::IllegalTransition {
            from: TripStatus::Matched,
            ..
        })
    ));
}

/// A mixed workload: completed, cancelled and in-flight trips over three cities.
async fn workload(trips: &Trips, clock: &ManualClock, from: u64, to: u64) {
    for i in from..to {
        let id = format!("trip-{i}");
        let city = ["sf", "nyc", "sao-paulo"][(i % 3) as usize];
        let (rider, driver) = (i % 11, DriverId(100 + i % 7));
        match i % 5 {
            0 | 1 => {
                full_trip(trips, clock, &id, rider, driver, city).await;
            }
            2 => {
                trips.request(&id, rider, city, A, B).await.unwrap();
                trips.cancel(&id, "rider").await.unwrap();
            }
            3 => {
                trips.request(&id, rider, city, A, B).await.unwrap();
                trips.matched(&id, driver, 1000).await.unwrap();
                trips.arrived(&id).await.unwrap();
                trips.started(&id).await.unwrap();
                clock.advance(Duration::from_secs(300));
                trips.completed(&id, 2_500.0, 1.0).await.unwrap();
            }
            _ => {
                trips.request(&id, rider, city, A, B).await.unwrap();
            }
        }
    }
}

async fn states(trips: &Trips, n: u64) -> Vec<(TripState, u64)> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(trips.load(&format!("trip-{i}")).await.unwrap());
    }
    out
}

#[tokio::test]
async fn reopening_replays_identical_state_and_read_models_equal_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let bus: Arc<dyn EventBus> = Arc::new(WalBus::open(dir.path().join("bus"), wal()).unwrap());
    let views_dir = dir.path().join("views");

    let trips = open(dir.path(), &clock);
    workload(&trips, &clock, 0, 60).await;
    let before = states(&trips, 60).await;
    // Publish half-way, project, and restart the read models mid-stream.
    trips.relay(bus.clone()).relay_once().await.unwrap();
    let mut views = ReadModels::open(bus.clone(), &views_dir, Durability::NoSync).unwrap();
    assert!(views.catch_up().await.unwrap() > 0);
    drop(views);
    drop(trips);

    // Restart the store: replay (snapshots every 4 events + tails) rebuilds every trip.
    let trips = open(dir.path(), &clock);
    assert_eq!(states(&trips, 60).await, before);
    // The reopened store keeps going from the replayed versions.
    workload(&trips, &clock, 60, 100).await;
    let relay = trips.relay(bus.clone());
    relay.relay_once().await.unwrap();
    let mut views = ReadModels::open(bus.clone(), &views_dir, Durability::NoSync).unwrap();
    views.catch_up().await.unwrap();
    let offsets = views.offsets();
    assert!(
        offsets.iter().all(|o| *o == offsets[0] && *o > 0),
        "{offsets:?}"
    );

    // The trip read model is exactly the aggregate's replayed state.
    let all = states(&trips, 100).await;
    assert_eq!(views.trips().len(), 100);
    for (i, (state, _)) in all.iter().enumerate() {
        assert_eq!(views.trip(&format!("trip-{i}")), Some(state));
    }
    // Earnings: 40 full trips at 1800 and 20 short ones at (200 + 250 + 250) = 700.
    let total: Earnings = views
        .all_earnings()
        .values()
        .fold(Earnings::default(), |a, e| Earnings {
            trips: a.trips + e.trips,
            fare_cents: a.fare_cents + e.fare_cents,
        });
    assert_eq!(
        total,
        Earnings {
            trips: 60,
            fare_cents: 40 * 1800 + 20 * 700
        }
    );
    // City view: 100 trips by status, final ones included.
    let mut by_status = std::collections::BTreeMap::<String, u64>::new();
    for city in ["sf", "nyc", "sao-paulo"] {
        for (status, n) in views.city(city) {
            *by_status.entry(status).or_default() += n;
        }
    }
    let expect: std::collections::BTreeMap<String, u64> = [
        ("paid".to_string(), 40),
        ("cancelled".to_string(), 20),
        ("completed".to_string(), 20),
        ("requested".to_string(), 20),
    ]
    .into();
    assert_eq!(by_status, expect);
    // Rider 3: trips 3, 14, ..., 91.
    assert_eq!(views.rider_trips(3).len(), 9);
    assert_eq!(views.city_state().open.len(), 40);

    // A re-published stretch (the relay's checkpoint lost) changes nothing.
    let snapshot = (
        views.trips().clone(),
        views.riders().clone(),
        views.all_earnings().clone(),
        views.city_state().clone(),
    );
    casebook_kit::events::Checkpoint::new(
        dir.path().join("store/relay.offset"),
        Durability::NoSync,
    )
    .store(1)
    .unwrap();
    relay.relay_once().await.unwrap();
    assert_eq!(views.catch_up().await.unwrap(), 0);

    // From scratch: fresh checkpoints, offset 0, same answers.
    let mut rebuilt =
        ReadModels::open(bus.clone(), dir.path().join("rebuilt"), Durability::NoSync).unwrap();
    rebuilt.catch_up().await.unwrap();
    assert_eq!(
        (
            rebuilt.trips().clone(),
            rebuilt.riders().clone(),
            rebuilt.all_earnings().clone(),
            rebuilt.city_state().clone(),
        ),
        snapshot
    );
}

#[tokio::test]
async fn a_matched_ride_becomes_a_trip_and_the_driver_is_freed_at_the_end() {
    use casebook_uber::matching::{
        DriverClaims, MatchConfig, Matcher, Mode, RideStatus, ScanDrivers, SpeedEta,
    };
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let bus: Arc<dyn EventBus> = Arc::new(WalBus::open(dir.path().join("bus"), wal()).unwrap());
    let trips = open(dir.path(), &clock);
    let drivers = Arc::new(ScanDrivers::new());
    drivers.upsert(DriverId(42), LatLng::new(A.lat() + 0.005, A.lon()).unwrap());
    let matcher = Matcher::new(
        MatchConfig::default(),
        drivers,
        Arc::new(SpeedEta::new(8.3, Duration::from_secs(20)).unwrap()),
        Arc::new(DriverClaims::new()),
        clock.shared(),
    )
    .unwrap();

    // What the HTTP layer will do for POST /v1/rides and the driver's accept.
    let ride = matcher.request(7, A, B, Mode::Greedy).unwrap();
    let trip = format!("ride-{ride}");
    trips.request(&trip, 7, "sf", A, B).await.unwrap();
    let RideStatus::Offered { driver, .. } = matcher.status(ride).unwrap().status else {
        panic!("no offer")
    };
    let accepted = matcher.accept(ride, driver).unwrap();
    let RideStatus::Accepted { eta, .. } = accepted.status else {
        panic!("not accepted")
    };
    trips
        .matched(&trip, driver, eta.as_millis() as u64)
        .await
        .unwrap();
    clock.advance(eta);
    trips.arrived(&trip).await.unwrap();
    trips.started(&trip).await.unwrap();
    clock.advance(Duration::from_secs(600));
    let fare = trips.completed(&trip, 5_000.0, 1.5).await.unwrap();
    trips.paid(&trip).await.unwrap();
    matcher.finish(ride).unwrap();
    assert_eq!(matcher.claims().holder(DriverId(42)), None);

    trips.relay(bus.clone()).relay_once().await.unwrap();
    let mut views = ReadModels::open(bus, dir.path().join("views"), Durability::NoSync).unwrap();
    views.catch_up().await.unwrap();
    assert_eq!(
        views.earnings(DriverId(42)),
        Earnings {
            trips: 1,
            fare_cents: fare
        }
    );
    assert_eq!(views.rider_trips(7), std::slice::from_ref(&trip));
    let state = views.trip(&trip).unwrap();
    assert_eq!(state.eta_ms, Some(eta.as_millis() as u64));
    assert_eq!(views.city("sf").get("paid"), Some(&1));
}

#[test]
fn a_trip_event_stored_with_lat_lng_points_decodes_and_encodes_byte_identical() {
    // As written to disk before the case had one point type.
    let stored = r#"{"requested":{"rider":7,"city":"sf","pickup":{"lat":37.7749,"lng":-122.4194},"dropoff":{"lat":37.8049,"lng":-122.4094},"quoted_surge":1.5}}"#;
    let event: TripEvent = serde_json::from_str(stored).unwrap();
    let TripEvent::Requested {
        pickup, dropoff, ..
    } = &event
    else {
        panic!("{event:?}");
    };
    assert_eq!((*pickup, *dropoff), (A, B));
    assert_eq!(serde_json::to_string(&event).unwrap(), stored);
    // A point off the map does not decode (it could never have been written).
    let off = stored.replace("37.7749", "97.7749");
    assert!(serde_json::from_str::<TripEvent>(&off).is_err());
}
