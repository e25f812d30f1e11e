//! In-process matching measurements (run niced, in release):
//!
//! ```text
//! nice -n 19 cargo run --release -p casebook-uber --example match_bench
//! ```
//!
//! 1. Greedy request → offer latency, open loop at 2,000 requests/s for 5 s
//!    (5,000 drivers, linear-scan candidates; the driver accepts and the trip ends
//!    at once so supply stays constant).
//! 2. Batched versus greedy total pickup ETA on a supply-tight, clustered workload
//!    (500 riders, 450 drivers), over a few seeds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use casebook_kit::clock::{ManualClock, SystemClock};
use casebook_uber::index::LatLng;
use casebook_uber::matching::{
    DriverClaims, DriverId, MatchConfig, Matcher, Mode, RideStatus, ScanDrivers, SpeedEta,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SF: LatLng = LatLng::literal(37.7749, -122.4194);

fn around(rng: &mut StdRng, c: LatLng, spread_deg: f64) -> LatLng {
    // Sum of two uniforms: a cheap bell shape around the centre.
    let mut d = || (rng.random_range(-1.0..1.0) + rng.random_range(-1.0..1.0)) * spread_deg / 2.0;
    LatLng::new(c.lat() + d(), c.lon() + d()).unwrap()
}

fn eta() -> Arc<SpeedEta> {
    Arc::new(SpeedEta::new(8.3, Duration::from_secs(20)).unwrap())
}

fn latency() {
    let mut rng = StdRng::seed_from_u64(1);
    let drivers = Arc::new(ScanDrivers::new());
    for id in 0..5_000 {
        drivers.upsert(DriverId(id), around(&mut rng, SF, 0.1));
    }
    let m = Matcher::new(
        MatchConfig::default(),
        drivers,
        eta(),
        Arc::new(DriverClaims::new()),
        SystemClock::shared(),
    )
    .unwrap();
    let rate = 2_000u32;
    let total = rate * 5;
    let interval = Duration::from_secs(1) / rate;
    let start = Instant::now();
    let mut lat = Vec::with_capacity(total as usize);
    let mut unmatched = 0;
    for i in 0..total {
        let due = start + interval * i;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let ride = m
            .request(i as u64, around(&mut rng, SF, 0.1), SF, Mode::Greedy)
            .unwrap();
        // Latency from when the request was due (open loop: queueing counts).
        lat.push(due.elapsed());
        match m.status(ride).unwrap().status {
            RideStatus::Offered { driver, .. } => {
                m.accept(ride, driver).unwrap();
                m.finish(ride).unwrap();
            }
            _ => unmatched += 1,
        }
    }
    let wall = start.elapsed();
    lat.sort();
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "greedy @ {rate}/s for {:.1}s ({} requests, achieved {:.0}/s, unmatched {unmatched}): \
         p50 {:?} p90 {:?} p99 {:?} p99.9 {:?} max {:?}",
        wall.as_secs_f64(),
        lat.len(),
        lat.len() as f64 / wall.as_secs_f64(),
        q(0.50),
        q(0.90),
        q(0.99),
        q(0.999),
        lat[lat.len() - 1]
    );
}

fn supply_tight(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    // Five hotspots ~2-4 km apart. Demand is skewed (40/25/15/12/8 %) and tight
    // around them; supply is spread evenly over all five and wider, so the busy
    // hotspots run short of drivers and must borrow from their neighbours.
    let hot: Vec<LatLng> = (0..5)
        .map(|i| {
            LatLng::new(
                SF.lat() + 0.02 * (i as f64 - 2.0),
                SF.lon() + 0.03 * ((i % 2) as f64 - 0.5),
            )
            .unwrap()
        })
        .collect();
    let weights = [40, 25, 15, 12, 8];
    let pick = |rng: &mut StdRng| {
        let mut x = rng.random_range(0..100);
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        unreachable!("weights sum to 100")
    };
    let riders: Vec<LatLng> = (0..500)
        .map(|_| {
            let c = hot[pick(&mut rng)];
            around(&mut rng, c, 0.01)
        })
        .collect();
    let drivers: Vec<LatLng> = (0..450)
        .map(|i| around(&mut rng, hot[i % 5], 0.02))
        .collect();
    let config = MatchConfig {
        radius_m: 20_000.0,
        ..MatchConfig::default()
    };
    let run = |mode: Mode, config: &MatchConfig| {
        let index = Arc::new(ScanDrivers::new());
        for (id, p) in drivers.iter().enumerate() {
            index.upsert(DriverId(id as u64), *p);
        }
        let clock = ManualClock::new();
        let m = Matcher::new(
            config.clone(),
            index,
            eta(),
            Arc::new(DriverClaims::new()),
            clock.shared(),
        )
        .unwrap();
        let ids: Vec<u64> = riders
            .iter()
            .enumerate()
            .map(|(r, p)| m.request(r as u64, *p, SF, mode).unwrap())
            .collect();
        let solve = Instant::now();
        if mode == Mode::Batched {
            m.run_batch();
        }
        let solve = solve.elapsed();
        let (mut matched, mut total) = (0u32, Duration::ZERO);
        for id in ids {
            if let RideStatus::Offered { eta, .. } = m.status(id).unwrap().status {
                matched += 1;
                total += eta;
            }
        }
        (matched, total, solve)
    };
    let (gm, gt, _) = run(Mode::Greedy, &config);
    let (bm, bt, solve) = run(Mode::Batched, &config);
    // Reference: one round over the full matrix (every rider sees every driver),
    // the true optimum the widening rounds approximate.
    let full = MatchConfig {
        candidates: 512,
        max_candidates: 512,
        ..config.clone()
    };
    let (fm, ft, fsolve) = run(Mode::Batched, &full);
    println!(
        "seed {seed}: greedy {gm} matched, total ETA {:.0} s (mean {:.1} s); batched {bm} matched, \
         total {:.0} s (mean {:.1} s), solve {:?}; batched/greedy total = {:.1} % ({:+.1} %)",
        gt.as_secs_f64(),
        gt.as_secs_f64() / f64::from(gm),
        bt.as_secs_f64(),
        bt.as_secs_f64() / f64::from(bm),
        solve,
        100.0 * bt.as_secs_f64() / gt.as_secs_f64(),
        100.0 * (bt.as_secs_f64() / gt.as_secs_f64() - 1.0),
    );
    println!(
        "seed {seed}: full-matrix optimum {fm} matched, total {:.0} s = {:.1} % of greedy, solve {fsolve:?}",
        ft.as_secs_f64(),
        100.0 * ft.as_secs_f64() / gt.as_secs_f64(),
    );
}

fn main() {
    latency();
    for seed in 1..=3 {
        supply_tight(seed);
    }
}
