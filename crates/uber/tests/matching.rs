//! Matching: no double assignment under concurrency, optimal batches, offers with
//! timeout and decline, the queue's bounds.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use casebook_kit::clock::ManualClock;
use casebook_uber::index::LatLng;
use casebook_uber::matching::{
    DriverClaims, DriverId, MatchConfig, MatchError, Matcher, Mode, RideId, RideStatus,
    ScanDrivers, SpeedEta, solve_assignment,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};

const SF: LatLng = LatLng::literal(37.7749, -122.4194);

fn near(rng: &mut StdRng, spread: f64) -> LatLng {
    LatLng::new(
        SF.lat() + rng.random_range(-spread..spread),
        SF.lon() + rng.random_range(-spread..spread),
    )
    .unwrap()
}

fn matcher(drivers: Arc<ScanDrivers>, clock: &ManualClock, config: MatchConfig) -> Matcher {
    Matcher::new(
        config,
        drivers,
        Arc::new(SpeedEta::new(8.3, Duration::from_secs(20)).unwrap()),
        Arc::new(DriverClaims::new()),
        clock.shared(),
    )
    .unwrap()
}

fn fleet(rng: &mut StdRng, n: u64, spread: f64) -> Arc<ScanDrivers> {
    let drivers = Arc::new(ScanDrivers::new());
    for id in 1..=n {
        drivers.upsert(DriverId(id), near(rng, spread));
    }
    drivers
}

/// Drivers that rides currently hold (offered or accepted), checked against the
/// claim table.
fn active_assignments(m: &Matcher, rides: &[RideId]) -> HashMap<DriverId, Vec<RideId>> {
    let mut by_driver: HashMap<DriverId, Vec<RideId>> = HashMap::new();
    for &ride in rides {
        match m.status(ride).unwrap().status {
            RideStatus::Offered { driver, .. } | RideStatus::Accepted { driver, .. } => {
                by_driver.entry(driver).or_default().push(ride);
            }
            _ => {}
        }
    }
    by_driver
}

#[test]
fn no_driver_is_double_assigned_under_concurrent_greedy_and_batched_requests() {
    let mut rng = StdRng::seed_from_u64(6);
    // Supply-tight on purpose: 120 drivers for 8 × 40 = 320 riders, so threads
    // fight over the same drivers.
    let drivers = fleet(&mut rng, 120, 0.01);
    let clock = ManualClock::new();
    let m = Arc::new(matcher(
        drivers,
        &clock,
        MatchConfig {
            candidates: 8,
            ..MatchConfig::default()
        },
    ));
    let rides: Vec<RideId> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8u64)
            .map(|t| {
                let m = m.clone();
                s.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(100 + t);
                    let mut mine = Vec::new();
                    for i in 0..40u64 {
                        let mode = if (t + i) % 2 == 0 {
                            Mode::Greedy
                        } else {
                            Mode::Batched
                        };
                        let ride = m
                            .request(t * 1000 + i, near(&mut rng, 0.01), SF, mode)
                            .unwrap();
                        mine.push(ride);
                        if i % 5 == 0 {
                            // Batches run while greedy requests claim drivers.
                            m.run_batch();
                        }
                        if i % 7 == 0 {
                            // Some accept, some decline (the driver goes back).
                            if let RideStatus::Offered { driver, .. } =
                                m.status(ride).unwrap().status
                            {
                                if i % 2 == 0 {
                                    m.accept(ride, driver).unwrap();
                                } else {
                                    m.decline(ride, driver).unwrap();
                                }
                            }
                        }
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    m.run_batch();
    let active = active_assignments(&m, &rides);
    for (driver, holders) in &active {
        assert_eq!(
            holders.len(),
            1,
            "driver {driver} assigned to rides {holders:?}"
        );
        assert_eq!(m.claims().holder(*driver), Some(holders[0]));
    }
    // Every claim belongs to an active ride: none leaked by declines or lost races.
    let claimed: HashSet<DriverId> = m.claims().snapshot().into_iter().map(|(d, _)| d).collect();
    assert_eq!(claimed, active.keys().copied().collect());
    // Supply-tight: every driver ends up assigned.
    assert_eq!(active.len(), 120);
}

#[test]
fn greedy_takes_the_lowest_eta_not_the_nearest_when_overheads_differ() {
    let clock = ManualClock::new();
    let drivers = Arc::new(ScanDrivers::new());
    // Driver 1 is ~111 m away but needs 5 min to get going; driver 2 is ~555 m away.
    drivers.upsert(
        DriverId(1),
        LatLng::new(SF.lat() + 0.001, SF.lon()).unwrap(),
    );
    drivers.upsert(
        DriverId(2),
        LatLng::new(SF.lat() + 0.005, SF.lon()).unwrap(),
    );
    let eta = SpeedEta::new(8.3, Duration::from_secs(10))
        .unwrap()
        .with_overhead(DriverId(1), Duration::from_secs(300));
    let m = Matcher::new(
        MatchConfig::default(),
        drivers,
        Arc::new(eta),
        Arc::new(DriverClaims::new()),
        clock.shared(),
    )
    .unwrap();
    let ride = m.request(9, SF, SF, Mode::Greedy).unwrap();
    let view = m.status(ride).unwrap();
    let RideStatus::Offered { driver, eta } = view.status else {
        panic!("not offered: {view:?}")
    };
    assert_eq!(driver, DriverId(2));
    assert!(
        eta > Duration::from_secs(70) && eta < Duration::from_secs(80),
        "{eta:?}"
    );
    assert_eq!(view.time_to_offer, Some(Duration::ZERO));
}

#[test]
fn batches_wait_for_the_window_and_beat_greedy_on_total_eta() {
    // Two riders, two drivers on a line: D2 ........ R1 D1 R2. Greedy in arrival
    // order gives R1 the driver R2 needs; the batch sees both riders.
    let p = |dlat: f64| LatLng::new(SF.lat() + dlat, SF.lon()).unwrap();
    let setup = || {
        let drivers = Arc::new(ScanDrivers::new());
        drivers.upsert(DriverId(1), p(0.011));
        drivers.upsert(DriverId(2), p(0.0));
        drivers
    };
    let clock = ManualClock::new();
    let greedy = matcher(setup(), &clock, MatchConfig::default());
    let g1 = greedy.request(1, p(0.0100), SF, Mode::Greedy).unwrap();
    let g2 = greedy.request(2, p(0.0125), SF, Mode::Greedy).unwrap();
    let eta_of = |m: &Matcher, r| match m.status(r).unwrap().status {
        RideStatus::Offered { eta, .. } => eta,
        other => panic!("{other:?}"),
    };
    let greedy_total = eta_of(&greedy, g1) + eta_of(&greedy, g2);

    let batched = matcher(setup(), &clock, MatchConfig::default());
    let b1 = batched.request(1, p(0.0100), SF, Mode::Batched).unwrap();
    let b2 = batched.request(2, p(0.0125), SF, Mode::Batched).unwrap();
    assert_eq!(
        batched.tick().batch_matched,
        0,
        "the first tick starts the window"
    );
    clock.advance(Duration::from_millis(1999));
    assert_eq!(batched.tick().batch_matched, 0);
    assert_eq!(batched.status(b1).unwrap().status, RideStatus::Queued);
    clock.advance(Duration::from_millis(1));
    let report = batched.tick();
    assert_eq!(report.batch_matched, 2);
    assert_eq!(report.queued, 0);
    let batched_total = eta_of(&batched, b1) + eta_of(&batched, b2);
    // Greedy: 111 m + 1390 m of travel; batched: 1110 m + 167 m.
    assert!(
        batched_total < greedy_total,
        "{batched_total:?} vs {greedy_total:?}"
    );
    assert!(matches!(
        batched.status(b1).unwrap().status,
        RideStatus::Offered {
            driver: DriverId(2),
            ..
        }
    ));
    assert_eq!(
        batched.status(b2).unwrap().time_to_offer,
        Some(Duration::from_secs(2))
    );
}

#[test]
fn unmatched_batched_riders_wait_then_end_as_no_drivers() {
    let clock = ManualClock::new();
    let drivers = Arc::new(ScanDrivers::new());
    drivers.upsert(DriverId(1), SF);
    let m = matcher(
        drivers,
        &clock,
        MatchConfig {
            max_wait: Duration::from_secs(10),
            max_queue: 3,
            ..MatchConfig::default()
        },
    );
    let a = m.request(1, SF, SF, Mode::Batched).unwrap();
    let b = m.request(2, SF, SF, Mode::Batched).unwrap();
    let c = m.request(3, SF, SF, Mode::Batched).unwrap();
    assert_eq!(
        m.request(4, SF, SF, Mode::Batched),
        Err(MatchError::QueueFull(3))
    );
    let offered = |m: &Matcher| -> Vec<RideId> {
        [a, b, c]
            .into_iter()
            .filter(|r| {
                matches!(
                    m.status(*r).unwrap().status,
                    RideStatus::Offered {
                        driver: DriverId(1),
                        ..
                    }
                )
            })
            .collect()
    };
    let report = m.run_batch();
    assert_eq!(report.batch_matched, 1);
    assert_eq!(report.queued, 2);
    let first = offered(&m);
    assert_eq!(first.len(), 1);
    clock.advance(Duration::from_secs(5));
    assert_eq!(m.run_batch().queued, 2);
    // The driver finishes a trip; the next batch gives it to a waiting rider.
    m.finish(first[0]).unwrap();
    assert_eq!(m.run_batch().batch_matched, 1);
    let second = offered(&m);
    assert_eq!(second.len(), 1);
    assert_ne!(second, first);
    clock.advance(Duration::from_secs(5));
    let report = m.run_batch();
    assert_eq!(report.gave_up, 1);
    let last = [a, b, c]
        .into_iter()
        .find(|r| *r != first[0] && *r != second[0])
        .unwrap();
    assert_eq!(m.status(last).unwrap().status, RideStatus::NoDrivers);
    assert_eq!(m.queued(), 0);
}

#[test]
fn offer_timeout_releases_the_driver_and_rematches_excluding_it() {
    let clock = ManualClock::new();
    let drivers = Arc::new(ScanDrivers::new());
    drivers.upsert(
        DriverId(1),
        LatLng::new(SF.lat() + 0.001, SF.lon()).unwrap(),
    );
    drivers.upsert(
        DriverId(2),
        LatLng::new(SF.lat() + 0.002, SF.lon()).unwrap(),
    );
    let m = matcher(
        drivers,
        &clock,
        MatchConfig {
            offer_timeout: Duration::from_secs(10),
            max_offers: 2,
            ..MatchConfig::default()
        },
    );
    let ride = m.request(5, SF, SF, Mode::Greedy).unwrap();
    assert!(matches!(
        m.status(ride).unwrap().status,
        RideStatus::Offered {
            driver: DriverId(1),
            ..
        }
    ));
    clock.advance(Duration::from_millis(9_999));
    assert_eq!(m.tick().expired, 0);
    clock.advance(Duration::from_millis(1));
    assert_eq!(m.tick().expired, 1);
    // Re-matched to driver 2; driver 1 is free again (for other riders).
    let view = m.status(ride).unwrap();
    assert!(
        matches!(
            view.status,
            RideStatus::Offered {
                driver: DriverId(2),
                ..
            }
        ),
        "{view:?}"
    );
    assert_eq!(view.offers, 2);
    assert_eq!(m.claims().holder(DriverId(1)), None);
    // Too late for driver 1 to accept.
    assert_eq!(
        m.accept(ride, DriverId(1)),
        Err(MatchError::NoSuchOffer {
            ride,
            driver: DriverId(1)
        })
    );
    // The second offer also times out: max_offers reached, the rider gets no_drivers.
    clock.advance(Duration::from_secs(10));
    m.tick();
    assert_eq!(m.status(ride).unwrap().status, RideStatus::NoDrivers);
    assert!(m.claims().snapshot().is_empty());
    // Another rider can now have driver 1.
    let other = m.request(6, SF, SF, Mode::Greedy).unwrap();
    assert!(matches!(
        m.status(other).unwrap().status,
        RideStatus::Offered {
            driver: DriverId(1),
            ..
        }
    ));
}

#[test]
fn decline_rematches_at_once_and_accept_keeps_the_driver_dispatched() {
    let clock = ManualClock::new();
    let drivers = Arc::new(ScanDrivers::new());
    drivers.upsert(
        DriverId(1),
        LatLng::new(SF.lat() + 0.001, SF.lon()).unwrap(),
    );
    drivers.upsert(
        DriverId(2),
        LatLng::new(SF.lat() + 0.002, SF.lon()).unwrap(),
    );
    let m = matcher(drivers, &clock, MatchConfig::default());
    let ride = m.request(5, SF, SF, Mode::Batched).unwrap();
    m.run_batch();
    assert!(matches!(
        m.status(ride).unwrap().status,
        RideStatus::Offered {
            driver: DriverId(1),
            ..
        }
    ));
    assert_eq!(
        m.decline(ride, DriverId(2)),
        Err(MatchError::NoSuchOffer {
            ride,
            driver: DriverId(2)
        })
    );
    m.decline(ride, DriverId(1)).unwrap();
    // A batched ride goes back to the queue, and the next batch skips driver 1.
    assert_eq!(m.status(ride).unwrap().status, RideStatus::Queued);
    m.run_batch();
    assert!(matches!(
        m.status(ride).unwrap().status,
        RideStatus::Offered {
            driver: DriverId(2),
            ..
        }
    ));
    let view = m.accept(ride, DriverId(2)).unwrap();
    assert!(matches!(
        view.status,
        RideStatus::Accepted {
            driver: DriverId(2),
            ..
        }
    ));
    // Accepted offers never time out; the driver stays held until the trip ends.
    clock.advance(Duration::from_secs(3600));
    assert_eq!(m.tick().expired, 0);
    assert_eq!(m.claims().holder(DriverId(2)), Some(ride));
    m.finish(ride).unwrap();
    assert_eq!(m.claims().holder(DriverId(2)), None);
    assert_eq!(m.finish(ride), Err(MatchError::Finished(ride)));
    assert_eq!(m.status(999), Err(MatchError::UnknownRide(999)));
}

#[test]
fn cancelling_releases_the_driver() {
    let clock = ManualClock::new();
    let drivers = Arc::new(ScanDrivers::new());
    drivers.upsert(DriverId(1), SF);
    let m = matcher(drivers, &clock, MatchConfig::default());
    let ride = m.request(5, SF, SF, Mode::Greedy).unwrap();
    assert_eq!(m.claims().holder(DriverId(1)), Some(ride));
    m.cancel(ride).unwrap();
    assert_eq!(m.claims().holder(DriverId(1)), None);
    assert_eq!(m.status(ride).unwrap().status, RideStatus::Cancelled);
    // An invalid pickup cannot reach the matcher: no such position exists.
    assert!(LatLng::new(91.0, 0.0).is_err());
}

/// Brute force: over every partial injective assignment, the most matches, then the
/// least total cost.
fn brute(costs: &[Vec<Option<u64>>]) -> (usize, u64) {
    fn go(
        r: usize,
        costs: &[Vec<Option<u64>>],
        used: &mut Vec<bool>,
        acc: (usize, u64),
        best: &mut (usize, u64),
    ) {
        if r == costs.len() {
            if acc.0 > best.0 || (acc.0 == best.0 && acc.1 < best.1) {
                *best = acc;
            }
            return;
        }
        go(r + 1, costs, used, acc, best);
        for c in 0..used.len() {
            if let Some(cost) = costs[r][c]
                && !used[c]
            {
                used[c] = true;
                go(r + 1, costs, used, (acc.0 + 1, acc.1 + cost), best);
                used[c] = false;
            }
        }
    }
    let cols = costs.first().map_or(0, Vec::len);
    let mut best = (0, 0);
    go(0, costs, &mut vec![false; cols], (0, 0), &mut best);
    best
}

fn instance() -> impl Strategy<Value = Vec<Vec<Option<u64>>>> {
    (1usize..=6, 1usize..=6).prop_flat_map(|(rows, cols)| {
        prop::collection::vec(
            prop::collection::vec(prop::option::weighted(0.75, 0u64..1_000), cols),
            rows,
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn hungarian_equals_brute_force_on_small_rectangular_instances(costs in instance()) {
        let got = solve_assignment(&costs);
        prop_assert_eq!(got.len(), costs.len());
        let cols: Vec<usize> = got.iter().flatten().copied().collect();
        let distinct: HashSet<usize> = cols.iter().copied().collect();
        prop_assert_eq!(distinct.len(), cols.len(), "a column assigned twice");
        let total: u64 = got
            .iter()
            .enumerate()
            .filter_map(|(r, c)| c.map(|c| costs[r][c].expect("only allowed pairs")))
            .sum();
        prop_assert_eq!((cols.len(), total), brute(&costs));
    }
}

#[test]
fn rides_in_progress_are_bounded_and_finished_ones_are_forgotten_first() {
    let clock = ManualClock::new();
    let drivers = Arc::new(ScanDrivers::new());
    drivers.upsert(DriverId(1), SF);
    drivers.upsert(DriverId(2), SF);
    let m = matcher(
        drivers,
        &clock,
        MatchConfig {
            max_rides: 2,
            ..MatchConfig::default()
        },
    );
    let a = m.request(1, SF, SF, Mode::Greedy).unwrap();
    let _b = m.request(2, SF, SF, Mode::Greedy).unwrap();
    assert_eq!(
        m.request(3, SF, SF, Mode::Greedy),
        Err(MatchError::TooManyRides(2))
    );
    m.finish(a).unwrap();
    // The finished ride makes room (and is forgotten).
    let c = m.request(3, SF, SF, Mode::Greedy).unwrap();
    assert_eq!(m.status(a), Err(MatchError::UnknownRide(a)));
    assert!(matches!(
        m.status(c).unwrap().status,
        RideStatus::Offered { .. }
    ));
}

/// The matcher over the real S2 index (not the brute-force scan): greedy requests
/// get the nearest available driver the index knows, and each driver at most once.
#[test]
fn the_matcher_runs_on_the_live_s2_index() {
    use casebook_uber::index::{DriverIndex, DriverStatus, IndexConfig, LocationUpdate};
    use casebook_uber::matching::NearbyDrivers;

    let clock = ManualClock::new();
    let index = Arc::new(DriverIndex::new(IndexConfig::default(), clock.shared()).unwrap());
    // Three drivers east of a pickup in Manhattan, 100 m, 400 m and 900 m away.
    let pickup = (40.7580, -73.9855);
    let batch: Vec<LocationUpdate> = [(1u64, 0.0012), (2, 0.0047), (3, 0.0107)]
        .into_iter()
        .map(|(id, dlon)| LocationUpdate {
            driver: casebook_uber::index::DriverId(id),
            lat: pickup.0,
            lon: pickup.1 + dlon,
            ts: 1,
            status: DriverStatus::Available,
        })
        .collect();
    let report = index.ingest(&batch).unwrap();
    assert_eq!(report.accepted, 3, "{report:?}");

    let at = LatLng::new(pickup.0, pickup.1).unwrap();
    let found = NearbyDrivers::nearest(index.as_ref(), at, 2_000.0, 10, &|_| true);
    let ids: Vec<u64> = found.iter().map(|(id, _)| id.0).collect();
    assert_eq!(ids, [1, 2, 3], "nearest first: {found:?}");
    assert!(found[0].1 < found[1].1 && found[1].1 < found[2].1);
    let without_1 =
        NearbyDrivers::nearest(index.as_ref(), at, 2_000.0, 10, &|id| id != DriverId(1));
    assert_eq!(without_1.first().map(|(id, _)| *id), Some(DriverId(2)));

    let matcher = Matcher::new(
        MatchConfig::default(),
        index.clone(),
        Arc::new(SpeedEta::new(8.3, Duration::from_secs(20)).unwrap()),
        Arc::new(DriverClaims::new()),
        clock.shared(),
    )
    .unwrap();
    let first = matcher.request(10, at, at, Mode::Greedy).unwrap();
    let second = matcher.request(11, at, at, Mode::Greedy).unwrap();
    let driver_of = |ride| match matcher.status(ride).unwrap().status {
        RideStatus::Offered { driver, .. } => driver,
        other => panic!("not offered: {other:?}"),
    };
    assert_eq!(
        driver_of(first),
        DriverId(1),
        "the nearest goes to the first rider"
    );
    assert_eq!(driver_of(second), DriverId(2), "and is never offered twice");
}
