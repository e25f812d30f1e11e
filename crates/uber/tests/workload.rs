//! The workload generators' properties, seeded: Zipf hotspot shares, the burst's
//! schedule, drivers staying in the box and moving at their speed, bad configs refused.

use std::time::Duration;

use casebook_uber::index::LatLng;
use casebook_uber::load::{
    Burst, CityBox, Fleet, Origin, RideGen, WorkloadConfig, WorkloadProgress, Zipf,
};

#[test]
fn hotspots_top_cell_about_8_percent_top_tenth_about_two_thirds() {
    let config = WorkloadConfig {
        airport_share: 0.0,
        ..WorkloadConfig::default()
    };
    let cells = config.grid.cells();
    assert_eq!(cells, 400);
    let mut rides = RideGen::new(&config, 7).unwrap();
    let n = 200_000;
    let mut counts = vec![0u64; cells];
    for _ in 0..n {
        let ride = rides.ride();
        let Origin::Hotspot(cell) = ride.origin else {
            panic!("no airport share, got {:?}", ride.origin)
        };
        // The pickup lies in the cell it claims.
        assert_eq!(config.grid.cell_of(ride.pickup), Some(cell));
        assert!(config.grid.city.contains(ride.dropoff));
        counts[cell] += 1;
    }
    let mut sorted = counts.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let top = sorted[0] as f64 / n as f64;
    let tenth = sorted[..cells / 10].iter().sum::<u64>() as f64 / n as f64;
    assert!((0.07..=0.09).contains(&top), "top cell {top}");
    assert!((0.62..=0.71).contains(&tenth), "top tenth {tenth}");
    // The hottest cell is the one rank 0 maps to.
    let hottest = (0..cells).max_by_key(|&c| counts[c]).unwrap();
    assert_eq!(hottest, rides.cell_of_rank(0));
}

#[test]
fn zipf_probabilities_sum_to_one_and_decrease() {
    let z = Zipf::new(400, 1.3, 4.0).unwrap();
    let total: f64 = (0..400).map(|k| z.p(k)).sum();
    assert!((total - 1.0).abs() < 1e-9);
    assert!((1..400).all(|k| z.p(k) < z.p(k - 1)));
    assert!(Zipf::new(0, 1.0, 0.0).is_err());
    assert!(Zipf::new(10, f64::NAN, 0.0).is_err());
    assert!(Zipf::new(10, 1.0, -1.0).is_err());
}

#[test]
fn the_airport_gets_its_steady_share() {
    let config = WorkloadConfig {
        airport_share: 0.1,
        ..WorkloadConfig::default()
    };
    let mut rides = RideGen::new(&config, 3).unwrap();
    let n = 100_000;
    let airport = (0..n)
        .map(|_| rides.ride())
        .filter(|r| r.origin == Origin::Airport && r.pickup.distance_m(&config.airport) < 500.0)
        .count();
    let share = airport as f64 / n as f64;
    assert!((0.09..=0.11).contains(&share), "{share}");
}

#[test]
fn the_burst_is_scheduled_inside_its_window_from_the_stadium() {
    let burst = Burst {
        at: Duration::from_secs(5),
        len: Duration::from_secs(2),
        rate: 100.0,
    };
    let schedule = burst.schedule().unwrap();
    assert_eq!(schedule.len(), 200);
    assert_eq!(schedule[0], Duration::from_secs(5));
    assert!(schedule.iter().all(|&t| burst.active(t)), "{schedule:?}");
    assert!(schedule.windows(2).all(|w| w[0] < w[1]));
    assert!(!burst.active(Duration::from_millis(4_999)));
    assert!(!burst.active(Duration::from_secs(7)));

    let config = WorkloadConfig::default();
    let mut rides = RideGen::new(&config, 1).unwrap();
    for _ in 0..1_000 {
        let r = rides.stadium_ride();
        assert_eq!(r.origin, Origin::Stadium);
        assert!(r.pickup.distance_m(&config.stadium) < 500.0);
    }
    for bad in [
        Burst { rate: 0.0, ..burst },
        Burst {
            rate: f64::NAN,
            ..burst
        },
        Burst {
            len: Duration::ZERO,
            ..burst
        },
    ] {
        assert!(bad.schedule().is_err(), "{bad:?}");
    }
}

#[test]
fn drivers_stay_in_the_box_and_move_no_faster_than_their_speed() {
    let city = CityBox::sf();
    let (lo, hi) = (5.0, 15.0);
    let mut fleet = Fleet::new(city, 200, (lo, hi), 11).unwrap();
    let mut last: Vec<LatLng> = (0..fleet.len())
        .map(|i| fleet.position(i, Duration::ZERO))
        .collect();
    let mut moved = 0;
    // An hour of 4-second pings: many legs and waypoints per driver.
    for step in 1..=900u64 {
        let t = Duration::from_secs(4 * step);
        for (i, prev) in last.iter_mut().enumerate() {
            let p = fleet.position(i, t);
            assert!(city.contains(p), "driver {i} left the box at {t:?}: {p:?}");
            let d = prev.distance_m(&p);
            // Straight legs in degrees vs great circles: a little slack.
            assert!(d <= hi * 4.0 * 1.01 + 1.0, "driver {i} jumped {d} m in 4 s");
            if d > 1.0 {
                moved += 1;
            }
            *prev = p;
        }
    }
    assert!(moved > 200 * 800, "{moved}");
    // Same seed, same routes.
    let mut again = Fleet::new(city, 200, (lo, hi), 11).unwrap();
    let t = Duration::from_secs(3_600);
    assert_eq!(again.position(17, t), fleet.position(17, t));
}

#[test]
fn bad_configs_name_the_field() {
    let cases = [
        (
            WorkloadConfig {
                rides_per_sec: 0.0,
                ..WorkloadConfig::default()
            },
            "rides_per_sec",
        ),
        (
            WorkloadConfig {
                airport_share: 1.5,
                ..WorkloadConfig::default()
            },
            "airport_share",
        ),
        (
            WorkloadConfig {
                ping_batch: 0,
                ..WorkloadConfig::default()
            },
            "ping_batch",
        ),
        (
            WorkloadConfig {
                drivers: 10_000_000,
                ..WorkloadConfig::default()
            },
            "drivers",
        ),
        (
            WorkloadConfig {
                duration: Duration::ZERO,
                ..WorkloadConfig::default()
            },
            "duration",
        ),
    ];
    for (config, field) in cases {
        let e = config.validate().unwrap_err().to_string();
        assert!(e.contains(field), "{field}: {e}");
    }
    assert!(Fleet::new(CityBox::sf(), 1, (0.0, 1.0), 1).is_err());
}

#[test]
fn a_trips_csv_replays_its_pickups_in_order_and_skips_rows_without_coordinates() {
    use casebook_uber::load::parse_trips_csv;
    use std::sync::Arc;
    let csv = "pickup_community_area,pickup_latitude,pickup_longitude,dropoff_latitude,dropoff_longitude,company\n\
        10,41.98,-87.80,,,Cash\n\
        8,41.89,-87.63,41.90,-87.62,\"Taxi, Affiliation \"\"A\"\"\"\n\
        8,41.88,-87.64,41.87,-87.65,Flash Cab\n\
        8,91.0,-87.64,41.87,-87.65,bad latitude\n";
    let (trips, skipped) = parse_trips_csv(csv, 100).unwrap();
    assert_eq!(skipped, 2);
    assert_eq!(trips.len(), 2);
    assert_eq!(trips[0].0, LatLng::literal(41.89, -87.63));
    assert_eq!(trips[1].1, LatLng::literal(41.87, -87.65));
    assert_eq!(parse_trips_csv(csv, 1).unwrap().0.len(), 1);
    let e = parse_trips_csv("a,b\n1,2\n", 10).unwrap_err().to_string();
    assert!(e.contains("pickup_latitude"), "{e}");
    assert!(parse_trips_csv(&csv[..csv.find("Cash").unwrap() + 5], 10).is_err());

    let city = CityBox::around(&trips).unwrap();
    assert!(
        trips
            .iter()
            .all(|&(a, b)| city.contains(a) && city.contains(b))
    );
    let config = WorkloadConfig {
        airport_share: 0.0,
        trips: Some(Arc::new(trips.clone())),
        ..WorkloadConfig::default()
    };
    let mut rides = RideGen::new(&config, 1).unwrap();
    let got: Vec<_> = (0..4).map(|_| rides.ride()).collect();
    assert_eq!(got[0].origin, Origin::Replay(0));
    assert_eq!(got[1].origin, Origin::Replay(1));
    assert_eq!(got[2].origin, Origin::Replay(0));
    assert_eq!((got[3].pickup, got[3].dropoff), trips[1]);
}

#[test]
fn the_live_counters_show_like_every_cases_load() {
    use std::sync::atomic::Ordering;

    use casebook_kit::loadgen::ShowProgress;
    let progress = WorkloadProgress::default();
    progress.matched.store(3, Ordering::Relaxed);
    progress.trips_paid.store(2, Ordering::Relaxed);
    progress.pings_sent.store(40, Ordering::Relaxed);
    let shown: &dyn ShowProgress = &progress;
    assert_eq!(shown.phase(), "warm-up", "no ride planned yet");
    assert_eq!(shown.position(), (0, 0));
    assert_eq!(shown.message(), "matched 3 paid 2 pings 40");
}
