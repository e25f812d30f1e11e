//! The live-driver index against models: k-nearest equals brute force, latest
//! wins under any reordering, splits and merges keep every driver exactly once,
//! staleness on the manual clock, concurrent ingest keeps the invariants.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use casebook_kit::clock::ManualClock;
use casebook_kit::partition::Rebalance;
use casebook_uber::index::{
    DriverId, DriverIndex, DriverStatus, DriverView, IndexConfig, IndexError, LatLng,
    LocationUpdate, MAX_BATCH, MAX_K, SavedDriver,
};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Midtown Manhattan: every test's drivers sit within ~5 km of it.
const CENTER: (f64, f64) = (40.7549, -73.9840);

fn config() -> IndexConfig {
    IndexConfig {
        // 1,536 base shards: quick to build for each proptest case; tests split
        // around the centre to get queries that cross shard boundaries.
        base_level: 4,
        max_level: 20,
        max_shards: 1 << 14,
        ..IndexConfig::default()
    }
}

fn new_index(config: IndexConfig) -> (DriverIndex, ManualClock) {
    let clock = ManualClock::new();
    let index = DriverIndex::new(config, clock.shared()).unwrap();
    (index, clock)
}

fn at(lat: f64, lon: f64) -> LatLng {
    LatLng::new(lat, lon).unwrap()
}

fn ping(id: u64, lat: f64, lon: f64, ts: u64, status: DriverStatus) -> LocationUpdate {
    LocationUpdate {
        driver: DriverId(id),
        lat,
        lon,
        ts,
        status,
    }
}

/// Offsets of up to ±0.05° (~5.5 km) around the centre.
fn offset() -> impl Strategy<Value = (f64, f64)> {
    (-0.05f64..0.05, -0.05f64..0.05).prop_map(|(a, b)| (CENTER.0 + a, CENTER.1 + b))
}

fn duty() -> impl Strategy<Value = DriverStatus> {
    prop_oneof![4 => Just(DriverStatus::Available), 1 => Just(DriverStatus::Offline)]
}

/// Splits the shard under `p` down to `level`, so queries around it cross
/// several shards of different sizes.
fn split_around(index: &DriverIndex, p: LatLng, level: u8) {
    while index
        .shards()
        .iter()
        .any(|s| s.id == index.shard_of(p) && s.level < level)
    {
        index.split(index.shard_of(p)).unwrap();
    }
}

/// The brute-force answer: available drivers within `radius` passing `filter`,
/// nearest first, ties by id.
fn brute_force(
    model: &HashMap<u64, (LatLng, DriverStatus)>,
    q: LatLng,
    radius: f64,
    k: usize,
    filter: impl Fn(u64) -> bool,
) -> Vec<(DriverId, f64)> {
    let mut hits: Vec<(DriverId, f64)> = model
        .iter()
        .filter(|(id, (_, status))| *status == DriverStatus::Available && filter(**id))
        .map(|(id, (p, _))| (DriverId(*id), p.distance_m(&q)))
        .filter(|(_, d)| *d <= radius)
        .collect();
    hits.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    hits.truncate(k);
    hits
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn k_nearest_equals_brute_force(
        drivers in prop::collection::vec((offset(), duty()), 1..300),
        queries in prop::collection::vec((offset(), 1.0f64..8_000.0, 1usize..40), 1..8),
        split_levels in prop::collection::vec(5u8..15, 0..4),
        // Some drivers share a spot: ties broken by id.
        dup_every in 2usize..50,
    ) {
        let (index, _clock) = new_index(config());
        let mut model = HashMap::new();
        let batch: Vec<LocationUpdate> = drivers
            .iter()
            .enumerate()
            .map(|(i, &((lat, lon), status))| {
                let (lat, lon) = if i % dup_every == 0 { drivers[0].0 } else { (lat, lon) };
                model.insert(i as u64, (at(lat, lon), status));
                ping(i as u64, lat, lon, 1, status)
            })
            .collect();
        for (n, level) in split_levels.iter().enumerate() {
            let (lat, lon) = queries[n % queries.len()].0;
            split_around(&index, at(lat, lon), *level);
        }
        let report = index.ingest(&batch).unwrap();
        prop_assert_eq!(report.accepted, batch.len());
        for ((lat, lon), radius, k) in queries {
            let q = at(lat, lon);
            let got = index.try_nearest(q, radius, k, |v: &DriverView| v.id.0 % 5 != 3).unwrap();
            let want = brute_force(&model, q, radius, k, |id| id % 5 != 3);
            prop_assert_eq!(got, want);
        }
        prop_assert_eq!(
            index.audit().unwrap(),
            model.values().filter(|(_, s)| *s == DriverStatus::Available).count()
        );
    }

    #[test]
    fn latest_wins_under_any_reordering(
        pings in prop::collection::vec((0u64..30, offset(), duty()), 1..400),
        seed in any::<u64>(),
        chunk in 1usize..64,
    ) {
        // Distinct timestamps per driver (the position in `pings`), plus exact
        // re-deliveries of some updates.
        let mut updates: Vec<LocationUpdate> = pings
            .iter()
            .enumerate()
            .map(|(ts, &(id, (lat, lon), status))| ping(id, lat, lon, ts as u64 + 1, status))
            .collect();
        let mut latest: HashMap<u64, LocationUpdate> = HashMap::new();
        for u in &updates {
            latest.insert(u.driver.0, *u);
        }
        let redelivered: Vec<LocationUpdate> = updates.iter().step_by(3).copied().collect();
        updates.extend(redelivered);
        updates.shuffle(&mut StdRng::seed_from_u64(seed));

        let (index, _clock) = new_index(config());
        split_around(&index, at(CENTER.0, CENTER.1), 12);
        let mut total = (0, 0, 0);
        for batch in updates.chunks(chunk) {
            let r = index.ingest(batch).unwrap();
            prop_assert!(r.invalid.is_empty());
            total = (total.0 + r.accepted, total.1 + r.stale, total.2 + r.duplicate);
        }
        prop_assert_eq!(total.0 + total.1 + total.2, updates.len());
        for (id, u) in &latest {
            let view = index.get(DriverId(*id)).unwrap();
            prop_assert_eq!(view.ts, u.ts);
            prop_assert_eq!(view.position, at(u.lat, u.lon));
            prop_assert_eq!(view.status, u.status);
        }
        let available = latest.values().filter(|u| u.status == DriverStatus::Available).count();
        prop_assert_eq!(index.audit().unwrap(), available);
    }

    #[test]
    fn splits_and_merges_keep_every_driver_exactly_once(
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let (index, _clock) = new_index(config());
        let mut model: HashMap<u64, (LatLng, DriverStatus)> = HashMap::new();
        let mut ts = 0u64;
        for op in ops {
            match op {
                Op::Ping(id, (lat, lon), status) => {
                    ts += 1;
                    index.update(ping(id, lat, lon, ts, status)).unwrap();
                    let entry = model.entry(id).or_insert((at(lat, lon), status));
                    entry.0 = at(lat, lon);
                    // A busy driver's "available" ping keeps the server's status.
                    if !(entry.1.is_server_owned() && status == DriverStatus::Available) {
                        entry.1 = status;
                    }
                }
                Op::Claim(id) => {
                    let result = index.transition(
                        DriverId(id), DriverStatus::Available, DriverStatus::Dispatched);
                    match model.get_mut(&id) {
                        Some(entry) if entry.1 == DriverStatus::Available => {
                            prop_assert!(result.is_ok());
                            entry.1 = DriverStatus::Dispatched;
                        }
                        Some(entry) => prop_assert_eq!(
                            result.unwrap_err(),
                            IndexError::WrongStatus {
                                driver: DriverId(id),
                                expected: DriverStatus::Available,
                                actual: entry.1,
                            }
                        ),
                        None => prop_assert_eq!(
                            result.unwrap_err(),
                            IndexError::UnknownDriver { driver: DriverId(id) }
                        ),
                    }
                }
                Op::Release(id) => {
                    if model.get(&id).is_some_and(|e| e.1 == DriverStatus::Dispatched) {
                        index.transition(
                            DriverId(id), DriverStatus::Dispatched, DriverStatus::Available).unwrap();
                        model.get_mut(&id).unwrap().1 = DriverStatus::Available;
                    }
                }
                Op::Split((lat, lon)) => {
                    let _ = index.split(index.shard_of(at(lat, lon)));
                }
                Op::Merge((lat, lon), up) => {
                    // The ancestor `up` levels above the shard under the point.
                    let shard = index.shard_of(at(lat, lon));
                    let mut range = shard.range();
                    let face = casebook_kit::partition::s2_face_ranges()
                        .into_iter()
                        .find(|f| f.covers(&range))
                        .unwrap();
                    for _ in 0..=up {
                        match range.parent_within(&face) {
                            Some(parent) => range = parent,
                            None => break,
                        }
                    }
                    let _ = index.merge(casebook_kit::partition::ShardId::new(range));
                }
            }
            let available = model.values().filter(|e| e.1 == DriverStatus::Available).count();
            prop_assert_eq!(index.audit().unwrap(), available);
        }
        // One query over the whole area returns each available driver once.
        let all = index.nearest(at(CENTER.0, CENTER.1), 20_000.0, MAX_K, |_| true);
        let want = brute_force(&model, at(CENTER.0, CENTER.1), 20_000.0, MAX_K, |_| true);
        prop_assert_eq!(all, want);
    }
}

/// The S2 face range holding `p` (a leaf id's top three bits are its face).
fn face_of(p: LatLng) -> casebook_kit::partition::KeyRange {
    casebook_kit::partition::s2_face_ranges()
        [(casebook_uber::index::cells::leaf_cell(p) >> 61) as usize]
}

/// Places where S2 coverings are easy to get wrong: the antimeridian, a pole,
/// a cube corner (three faces meet), a face edge on the equator.
const AWKWARD: [(f64, f64); 4] = [
    (0.0, 180.0),
    (89.999, 10.0),
    (35.264_389_7, 45.0),
    (0.0, 45.0),
];

/// `lon` wrapped into [-180, 180].
fn wrap(lon: f64) -> f64 {
    if lon > 180.0 {
        lon - 360.0
    } else if lon < -180.0 {
        lon + 360.0
    } else {
        lon
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn k_nearest_equals_brute_force_at_awkward_places(
        place in 0usize..AWKWARD.len(),
        drivers in prop::collection::vec((-0.03f64..0.03, -0.03f64..0.03), 1..200),
        queries in prop::collection::vec(((-0.02f64..0.02, -0.02f64..0.02), 1.0f64..6_000.0, 1usize..30), 1..6),
        split_to in 4u8..16,
    ) {
        let (lat0, lon0) = AWKWARD[place];
        let point = |dlat: f64, dlon: f64| at((lat0 + dlat).clamp(-90.0, 90.0), wrap(lon0 + dlon));
        let (index, _clock) = new_index(config());
        split_around(&index, point(0.0, 0.0), split_to);
        let mut model = HashMap::new();
        let batch: Vec<LocationUpdate> = drivers
            .iter()
            .enumerate()
            .map(|(i, &(dlat, dlon))| {
                let p = point(dlat, dlon);
                model.insert(i as u64, (p, DriverStatus::Available));
                ping(i as u64, p.lat(), p.lon(), 1, DriverStatus::Available)
            })
            .collect();
        index.ingest(&batch).unwrap();
        for ((dlat, dlon), radius, k) in queries {
            let q = point(dlat, dlon);
            let got = index.try_nearest(q, radius, k, |_| true).unwrap();
            prop_assert_eq!(got, brute_force(&model, q, radius, k, |_| true));
        }
        prop_assert_eq!(index.audit().unwrap(), model.len());
    }
}

#[derive(Debug, Clone)]
enum Op {
    Ping(u64, (f64, f64), DriverStatus),
    Claim(u64),
    Release(u64),
    Split((f64, f64)),
    Merge((f64, f64), u8),
}

fn op() -> impl Strategy<Value = Op> {
    // Points near the centre, so splits and merges happen where drivers are.
    let near = || (-0.01f64..0.01, -0.01f64..0.01).prop_map(|(a, b)| (CENTER.0 + a, CENTER.1 + b));
    prop_oneof![
        6 => (0u64..40, near(), duty()).prop_map(|(id, p, s)| Op::Ping(id, p, s)),
        1 => (0u64..40).prop_map(Op::Claim),
        1 => (0u64..40).prop_map(Op::Release),
        3 => near().prop_map(Op::Split),
        2 => (near(), 0u8..3).prop_map(|(p, up)| Op::Merge(p, up)),
    ]
}

#[test]
fn stale_drivers_leave_the_available_set_on_the_manual_clock() {
    let (index, clock) = new_index(config());
    let batch: Vec<LocationUpdate> = (0..200u32)
        .map(|i| {
            let f = f64::from(i) * 1e-4;
            ping(
                u64::from(i),
                CENTER.0 + f,
                CENTER.1 - f,
                1,
                DriverStatus::Available,
            )
        })
        .collect();
    index.ingest(&batch).unwrap();
    let q = at(CENTER.0, CENTER.1);
    clock.advance(Duration::from_secs(20));
    // Half the drivers ping again at 20 s.
    let refreshed: Vec<LocationUpdate> = batch
        .iter()
        .step_by(2)
        .map(|u| LocationUpdate { ts: 2, ..*u })
        .collect();
    index.ingest(&refreshed).unwrap();
    clock.advance(Duration::from_millis(9_999));
    assert_eq!(index.nearest(q, 50_000.0, MAX_K, |_| true).len(), 200);
    clock.advance(Duration::from_millis(1));
    // 30 s after the first ping: exact at query time, before any sweep.
    let fresh = index.nearest(q, 50_000.0, MAX_K, |_| true);
    assert_eq!(fresh.len(), 100);
    assert!(fresh.iter().all(|(id, _)| id.0 % 2 == 0));
    assert_eq!(index.audit().unwrap(), 200);

    // The sweep does bounded work per step and eventually turns them offline.
    let mut removed = 0;
    for _ in 0..100 {
        let step = index.sweep(7);
        assert!(step <= 7);
        removed += step;
    }
    assert_eq!(removed, 100);
    assert_eq!(index.audit().unwrap(), 100);
    assert_eq!(
        index.get(DriverId(1)).unwrap().status,
        DriverStatus::Offline
    );
    assert_eq!(
        index.get(DriverId(0)).unwrap().status,
        DriverStatus::Available
    );

    // A ping brings a stale driver back.
    index
        .update(ping(1, CENTER.0, CENTER.1, 5, DriverStatus::Available))
        .unwrap();
    // Driver 0 (fresh) sits there too: ties by id.
    assert_eq!(
        index.nearest(q, 10.0, 2, |_| true),
        vec![(DriverId(0), 0.0), (DriverId(1), 0.0)]
    );
    assert_eq!(index.audit().unwrap(), 101);
}

#[test]
fn a_hot_shard_splits_and_merges_back_when_cold() {
    let (index, clock) = new_index(IndexConfig {
        split_above: 400.0,
        merge_below: 50.0,
        load_half_life: Duration::from_secs(1),
        cooldown: Duration::from_secs(2),
        ..config()
    });
    let hot = at(CENTER.0, CENTER.1);
    let base = index.shard_of(hot);
    let batch: Vec<LocationUpdate> = (0..100u32)
        .map(|i| {
            let f = f64::from(i) * 1e-5;
            ping(
                u64::from(i),
                CENTER.0 + f,
                CENTER.1 + f,
                1,
                DriverStatus::Available,
            )
        })
        .collect();
    let mut splits = 0;
    // 100 updates + 10 queries every 100 ms: ~1,100 units/s on the hot shard.
    for ts in 2..102 {
        clock.advance(Duration::from_millis(100));
        let moved: Vec<LocationUpdate> =
            batch.iter().map(|u| LocationUpdate { ts, ..*u }).collect();
        index.ingest(&moved).unwrap();
        for _ in 0..10 {
            assert_eq!(index.nearest(hot, 2_000.0, 5, |_| true).len(), 5);
        }
        splits += index
            .rebalance()
            .iter()
            .filter(|a| matches!(a, Rebalance::Split(_)))
            .count();
        assert_eq!(index.audit().unwrap(), 100);
    }
    assert!(splits >= 1);
    let level = index
        .shards()
        .iter()
        .find(|s| s.id == index.shard_of(hot))
        .unwrap()
        .level;
    assert!(level > config().base_level, "level {level}");

    // Silence: every split shard merges back, never above the base level.
    let mut merges = 0;
    for _ in 0..200 {
        clock.advance(Duration::from_secs(1));
        merges += index.rebalance().len();
    }
    assert_eq!(merges, splits);
    assert_eq!(index.shard_of(hot), base);
    assert_eq!(
        index.shard_count(),
        6 << (2 * u32::from(config().base_level))
    );
    assert_eq!(index.audit().unwrap(), 100);
    assert!(
        index
            .merge(casebook_kit::partition::ShardId::new(
                casebook_kit::partition::s2_face_ranges()[0]
            ))
            .is_err()
    );
}

#[test]
fn concurrent_ingest_queries_and_rebalancing_keep_the_invariants() {
    let (index, clock) = new_index(IndexConfig {
        split_above: 2_000.0,
        merge_below: 100.0,
        load_half_life: Duration::from_secs(1),
        cooldown: Duration::ZERO,
        ..config()
    });
    let index = Arc::new(index);
    const DRIVERS: u64 = 2_000;
    // Every thread sends every driver's pings with its own timestamps: the
    // winner is the largest timestamp, whichever thread sent it.
    let pings = move |thread: u64, round: u64, rng: &mut StdRng| -> Vec<LocationUpdate> {
        (0..DRIVERS)
            .map(|id| {
                let ts = round * 4 + thread + 1;
                let lat = CENTER.0 + rng.random_range(-0.02..0.02);
                let lon = CENTER.1 + rng.random_range(-0.02..0.02);
                let status = if (id + ts).is_multiple_of(7) {
                    DriverStatus::Offline
                } else {
                    DriverStatus::Available
                };
                ping(id, lat, lon, ts, status)
            })
            .collect()
    };
    let done = Arc::new(AtomicBool::new(false));
    let mut helpers = Vec::new();
    {
        let (index, done, clock) = (index.clone(), done.clone(), clock.clone());
        helpers.push(std::thread::spawn(move || {
            let mut rng = StdRng::seed_from_u64(77);
            let mut rounds = 0;
            while rounds < 20 || !done.load(Ordering::Relaxed) {
                rounds += 1;
                clock.advance(Duration::from_millis(50));
                index.rebalance();
                // Forced splits and merges where the drivers are, whatever the load.
                let p = at(
                    CENTER.0 + rng.random_range(-0.02..0.02),
                    CENTER.1 + rng.random_range(-0.02..0.02),
                );
                let shard = index.shard_of(p);
                if rng.random_bool(0.5) {
                    let _ = index.split(shard);
                } else if let Some(parent) = shard.range().parent_within(&face_of(p)) {
                    let _ = index.merge(casebook_kit::partition::ShardId::new(parent));
                }
                let hits = index.nearest(at(CENTER.0, CENTER.1), 1_000.0, 20, |_| true);
                // Never the same driver twice in one answer.
                let mut ids: Vec<DriverId> = hits.iter().map(|h| h.0).collect();
                ids.sort();
                ids.dedup();
                assert_eq!(ids.len(), hits.len());
                std::thread::yield_now();
            }
        }));
    }
    let writers: Vec<_> = (0..4u64)
        .map(|thread| {
            let index = index.clone();
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(thread);
                let mut last = Vec::new();
                for round in 0..10 {
                    last = pings(thread, round, &mut rng);
                    for batch in last.chunks(256) {
                        let r = index.ingest(batch).unwrap();
                        assert!(r.invalid.is_empty());
                    }
                }
                last
            })
        })
        .collect();
    let finals: Vec<Vec<LocationUpdate>> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    done.store(true, Ordering::Relaxed);
    for h in helpers {
        h.join().unwrap();
    }
    // Thread 3's last round has the largest timestamps: it wins for everyone.
    let mut available = 0;
    for u in &finals[3] {
        let view = index.get(u.driver).unwrap();
        assert_eq!((view.ts, view.position), (u.ts, at(u.lat, u.lon)));
        available += usize::from(u.status == DriverStatus::Available);
    }
    assert_eq!(index.audit().unwrap(), available);
    assert_eq!(index.driver_count(), DRIVERS as usize);
}

#[test]
fn bad_input_gets_precise_errors() {
    let (index, _clock) = new_index(config());
    let batch = vec![
        ping(1, f64::NAN, 0.0, 1, DriverStatus::Available),
        ping(2, 91.0, 0.0, 1, DriverStatus::Available),
        ping(3, 0.0, -180.5, 1, DriverStatus::Available),
        ping(4, 0.0, f64::INFINITY, 1, DriverStatus::Available),
        ping(5, 10.0, 10.0, 1, DriverStatus::OnTrip),
        ping(6, 90.0, 180.0, 1, DriverStatus::Available),
    ];
    let r = index.ingest(&batch).unwrap();
    assert_eq!(r.accepted, 1);
    let errors: Vec<(usize, IndexError)> = r.invalid;
    assert_eq!(errors.len(), 5);
    assert_eq!(errors[0].0, 0);
    assert!(matches!(errors[0].1, IndexError::InvalidLatitude { lat } if lat.is_nan()));
    assert_eq!(errors[1], (1, IndexError::InvalidLatitude { lat: 91.0 }));
    assert_eq!(errors[2], (2, IndexError::InvalidLongitude { lon: -180.5 }));
    assert_eq!(
        errors[3],
        (3, IndexError::InvalidLongitude { lon: f64::INFINITY })
    );
    assert_eq!(
        errors[4],
        (
            4,
            IndexError::ServerOwnedStatus {
                status: DriverStatus::OnTrip
            }
        )
    );
    assert!(index.get(DriverId(1)).is_none());

    let too_many = vec![ping(7, 0.0, 0.0, 1, DriverStatus::Available); MAX_BATCH + 1];
    assert_eq!(
        index.ingest(&too_many),
        Err(IndexError::BatchTooLarge {
            len: MAX_BATCH + 1,
            max: MAX_BATCH
        })
    );
    let q = at(0.0, 0.0);
    let max_m = index.config().max_radius_m;
    for radius_m in [0.0, -1.0, f64::NAN, max_m * 2.0] {
        assert!(matches!(
            index.try_nearest(q, radius_m, 1, |_| true),
            Err(IndexError::InvalidRadius { .. })
        ));
    }
    assert_eq!(
        index.try_nearest(q, 10.0, 0, |_| true),
        Err(IndexError::InvalidK { k: 0, max: MAX_K })
    );
    assert_eq!(index.nearest(q, 10.0, MAX_K + 1, |_| true), vec![]);
    assert_eq!(
        index.transition(
            DriverId(99),
            DriverStatus::Available,
            DriverStatus::Dispatched
        ),
        Err(IndexError::UnknownDriver {
            driver: DriverId(99)
        })
    );

    let bad = IndexConfig {
        base_level: 9,
        ..config()
    };
    assert!(matches!(
        DriverIndex::new(bad, ManualClock::new().shared()),
        Err(IndexError::InvalidConfig {
            field: "base_level",
            ..
        })
    ));
    let bad = IndexConfig {
        merge_below: 1e9,
        ..config()
    };
    assert!(matches!(
        DriverIndex::new(bad, ManualClock::new().shared()),
        Err(IndexError::Layout(_))
    ));

    let (small, _clock) = new_index(IndexConfig {
        max_drivers: 2,
        ..config()
    });
    let batch = [
        ping(1, 0.0, 0.0, 1, DriverStatus::Available),
        ping(2, 0.0, 0.0, 1, DriverStatus::Available),
        ping(3, 0.0, 0.0, 1, DriverStatus::Available),
        ping(1, 0.0, 0.1, 2, DriverStatus::Available),
        ping(4, 95.0, 0.0, 1, DriverStatus::Available),
        ping(5, 0.0, 0.0, 1, DriverStatus::Available),
    ];
    let r = small.ingest(&batch).unwrap();
    // Two of the four valid new drivers get in (which two is unspecified);
    // every update of the others is refused, in batch order.
    assert_eq!(small.driver_count(), 2);
    let admitted: Vec<u64> = [1, 2, 3, 5]
        .into_iter()
        .filter(|&d| small.get(DriverId(d)).is_some())
        .collect();
    assert_eq!(admitted.len(), 2);
    let mut want: Vec<(usize, IndexError)> = batch
        .iter()
        .enumerate()
        .filter(|(i, u)| *i != 4 && !admitted.contains(&u.driver.0))
        .map(|(i, _)| (i, IndexError::TooManyDrivers { max: 2 }))
        .collect();
    want.push((4, IndexError::InvalidLatitude { lat: 95.0 }));
    want.sort_by_key(|(i, _)| *i);
    assert_eq!(r.invalid, want);
    assert_eq!(r.accepted, 5 - (want.len() - 1));
}

#[test]
fn busy_drivers_keep_their_server_status_and_leave_the_index() {
    let (index, _clock) = new_index(config());
    let q = at(CENTER.0, CENTER.1);
    index
        .update(ping(1, CENTER.0, CENTER.1, 1, DriverStatus::Available))
        .unwrap();
    let claimed = index
        .transition(
            DriverId(1),
            DriverStatus::Available,
            DriverStatus::Dispatched,
        )
        .unwrap();
    assert_eq!(claimed.status, DriverStatus::Dispatched);
    // A second claim fails: a driver is never claimed twice.
    assert!(matches!(
        index.transition(
            DriverId(1),
            DriverStatus::Available,
            DriverStatus::Dispatched
        ),
        Err(IndexError::WrongStatus {
            actual: DriverStatus::Dispatched,
            ..
        })
    ));
    assert_eq!(index.nearest(q, 1_000.0, 1, |_| true), vec![]);
    // The app keeps saying "available" while dispatched: position moves, status stays.
    index
        .update(ping(
            1,
            CENTER.0 + 0.001,
            CENTER.1,
            2,
            DriverStatus::Available,
        ))
        .unwrap();
    let view = index.get(DriverId(1)).unwrap();
    assert_eq!((view.status, view.ts), (DriverStatus::Dispatched, 2));
    assert_eq!(index.audit().unwrap(), 0);
    index
        .transition(DriverId(1), DriverStatus::Dispatched, DriverStatus::OnTrip)
        .unwrap();
    index
        .transition(DriverId(1), DriverStatus::OnTrip, DriverStatus::Available)
        .unwrap();
    let hits = index.nearest(q, 1_000.0, 1, |_| true);
    assert_eq!(hits.len(), 1);
    assert!((hits[0].1 - 111.2).abs() < 1.0, "{hits:?}");
    // Same timestamp again: a duplicate, nothing changes.
    let r = index
        .update(ping(1, 0.0, 0.0, 2, DriverStatus::Offline))
        .unwrap();
    assert_eq!((r.accepted, r.duplicate), (0, 1));
    assert_eq!(index.audit().unwrap(), 1);
}

/// Export then restore into a fresh index (the snapshot path of a restart):
/// every driver comes back with its status, server-owned ones included, and as
/// stale as it was; an available driver silent past `stale_after` comes back
/// offline; a saved state not newer than the live one changes nothing.
#[test]
fn export_and_restore_keep_status_position_and_staleness() {
    let (index, clock) = new_index(config());
    let stale_after = index.config().stale_after;
    index
        .ingest(&[
            ping(1, CENTER.0, CENTER.1, 5, DriverStatus::Available),
            ping(2, CENTER.0 + 0.01, CENTER.1, 5, DriverStatus::Available),
            ping(3, CENTER.0 - 0.01, CENTER.1, 5, DriverStatus::Offline),
        ])
        .unwrap();
    index
        .transition(DriverId(2), DriverStatus::Available, DriverStatus::OnTrip)
        .unwrap();
    clock.advance(stale_after / 2);
    index
        .ingest(&[ping(
            4,
            CENTER.0,
            CENTER.1 + 0.01,
            7,
            DriverStatus::Available,
        )])
        .unwrap();
    let mut saved = index.export();
    saved.sort_by_key(|d| d.id);
    assert_eq!(saved.len(), 4);
    assert_eq!(saved[0].age, stale_after / 2);
    assert_eq!(saved[3].age, Duration::ZERO);

    let (fresh, fresh_clock) = new_index(config());
    // The snapshot is a little older by the time it is read back.
    fresh_clock.advance(stale_after);
    let aged: Vec<SavedDriver> = saved
        .iter()
        .map(|d| SavedDriver {
            age: d.age + stale_after / 4,
            ..*d
        })
        .collect();
    let report = fresh.restore(&aged);
    assert_eq!((report.restored, report.older, report.refused), (4, 0, 0));
    let view = |id| fresh.get(DriverId(id)).unwrap();
    assert_eq!(view(2).status, DriverStatus::OnTrip);
    assert_eq!(view(3).status, DriverStatus::Offline);
    assert_eq!((view(1).ts, view(1).position), (5, at(CENTER.0, CENTER.1)));
    assert_eq!(fresh.audit().unwrap(), 2, "drivers 1 and 4 are indexed");
    // Driver 1 was heard 3/4 of `stale_after` ago: stale a quarter later.
    assert_eq!(
        fresh
            .nearest(at(CENTER.0, CENTER.1), 5_000.0, 10, |_| true)
            .len(),
        2
    );
    fresh_clock.advance(stale_after / 4);
    let found = fresh.nearest(at(CENTER.0, CENTER.1), 5_000.0, 10, |_| true);
    assert_eq!(
        found.iter().map(|f| f.0).collect::<Vec<_>>(),
        vec![DriverId(4)]
    );

    // Older than what is live: ignored. Silent too long: offline, not indexed.
    let report = fresh.restore(&[
        SavedDriver {
            ts: 4,
            lat: 0.0,
            ..aged[0]
        },
        SavedDriver {
            id: DriverId(9),
            age: stale_after,
            ..aged[0]
        },
        SavedDriver {
            id: DriverId(10),
            lat: f64::NAN,
            ..aged[0]
        },
    ]);
    assert_eq!((report.restored, report.older, report.refused), (1, 1, 1));
    assert_eq!(fresh.get(DriverId(1)).unwrap().ts, 5);
    assert_eq!(
        fresh.get(DriverId(9)).unwrap().status,
        DriverStatus::Offline
    );
    assert_eq!(fresh.audit().unwrap(), 2);
}

#[test]
fn timestamps_beyond_the_clock_skew_are_refused_on_ingest_and_pulled_back_on_restore() {
    use casebook_kit::clock::Clock;
    let (index, clock) = new_index(config());
    let skew = config().max_clock_skew.as_millis() as u64;
    let now = clock.wall_millis();
    let report = index
        .ingest(&[
            ping(1, CENTER.0, CENTER.1, u64::MAX, DriverStatus::Available),
            ping(2, CENTER.0, CENTER.1, now + skew, DriverStatus::Available),
            ping(
                3,
                CENTER.0,
                CENTER.1,
                now + skew + 1,
                DriverStatus::Available,
            ),
        ])
        .unwrap();
    assert_eq!(report.accepted, 1);
    let refused: Vec<usize> = report.invalid.iter().map(|(i, _)| *i).collect();
    assert_eq!(refused, [0, 2]);
    assert!(matches!(
        report.invalid[0].1,
        IndexError::FutureTimestamp { ts: u64::MAX, .. }
    ));
    assert!(index.get(DriverId(1)).is_none());

    // A saved state from beyond the skew is kept at the wall clock's time, so
    // the driver's next ping wins.
    let restored = index.restore(&[SavedDriver {
        id: DriverId(4),
        lat: CENTER.0,
        lon: CENTER.1,
        ts: u64::MAX,
        status: DriverStatus::Available,
        age: Duration::ZERO,
    }]);
    assert_eq!((restored.restored, restored.clamped), (1, 1));
    assert_eq!(index.get(DriverId(4)).unwrap().ts, now);
    clock.advance(Duration::from_millis(5));
    let next = index
        .update(ping(4, CENTER.0, CENTER.1, now + 5, DriverStatus::Offline))
        .unwrap();
    assert_eq!(next.accepted, 1);
    assert_eq!(
        index.get(DriverId(4)).unwrap().status,
        DriverStatus::Offline
    );
}
