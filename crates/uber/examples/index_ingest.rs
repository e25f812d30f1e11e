//! Location updates per second into the live-driver index through the batch API:
//! two ingest threads over ~200k drivers in one metro area, each pinging its own
//! half of the drivers with small moves (10–60 m, like 4-second pings).
//!
//! Quick in-process measurement, not the benchmark: run it niced and in release,
//! `nice -n 19 cargo run --release -p casebook-uber --example index_ingest
//! [drivers] [batch] [seconds]`. The updates are generated before the clock
//! starts, so the number is index work only (validation, S2 cell ids, latest-wins,
//! entry moves, locks).

use std::sync::Arc;
use std::time::{Duration, Instant};

use casebook_kit::clock::SystemClock;
use casebook_uber::index::{
    DriverId, DriverIndex, DriverStatus, IndexConfig, LatLng, LocationUpdate,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const THREADS: u64 = 2;
/// Manhattan-sized box around Midtown (±0.15° ≈ ±16 km).
const CENTER: (f64, f64) = (40.7549, -73.9840);
const SPAN: f64 = 0.15;
/// Pre-generated updates per thread (reused cyclically with rising timestamps).
const PER_THREAD: usize = 1 << 20;

/// This thread's CPU time in nanoseconds (Linux), 0 elsewhere.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let drivers = args.first().copied().unwrap_or(200_000) as u64;
    let batch = args.get(1).copied().unwrap_or(2_048);
    let seconds = args.get(2).copied().unwrap_or(5) as u64;

    let index = Arc::new(
        DriverIndex::new(
            IndexConfig {
                // Let the hot metro shard split while the run warms up.
                cooldown: Duration::from_secs(1),
                load_half_life: Duration::from_secs(1),
                ..IndexConfig::default()
            },
            SystemClock::shared(),
        )
        .expect("valid config"),
    );

    // Each thread's drivers, their positions and a cyclic stream of moves.
    let streams: Vec<Vec<LocationUpdate>> = (0..THREADS)
        .map(|t| {
            let mut rng = StdRng::seed_from_u64(t);
            let mine: Vec<u64> = (0..drivers).filter(|d| d % THREADS == t).collect();
            let mut pos: Vec<(f64, f64)> = mine
                .iter()
                .map(|_| {
                    (
                        CENTER.0 + rng.random_range(-SPAN..SPAN),
                        CENTER.1 + rng.random_range(-SPAN..SPAN),
                    )
                })
                .collect();
            (0..PER_THREAD)
                .map(|i| {
                    let k = i % mine.len();
                    let p = &mut pos[k];
                    p.0 = (p.0 + rng.random_range(-0.0005..0.0005)).clamp(-90.0, 90.0);
                    p.1 = (p.1 + rng.random_range(-0.0005..0.0005)).clamp(-180.0, 180.0);
                    LocationUpdate {
                        driver: DriverId(mine[k]),
                        lat: p.0,
                        lon: p.1,
                        ts: 0,
                        status: DriverStatus::Available,
                    }
                })
                .collect()
        })
        .collect();

    let run = |phase: &str, duration: Duration, rebalance: bool| {
        let deadline = Instant::now() + duration;
        let start = Instant::now();
        let workers: Vec<_> = streams
            .iter()
            .cloned()
            .map(|mut stream| {
                let index = index.clone();
                std::thread::spawn(move || {
                    let cpu_start = thread_cpu_ns();
                    let mut sent = 0u64;
                    let mut round = 0u64;
                    while Instant::now() < deadline {
                        round += 1;
                        // Timestamps rise along the stream and across passes, so
                        // every update is accepted (none stale or duplicate).
                        for (i, u) in stream.iter_mut().enumerate() {
                            u.ts = round * PER_THREAD as u64 + i as u64;
                        }
                        for chunk in stream.chunks(batch) {
                            let report = index.ingest(chunk).expect("batch within limits");
                            sent += report.accepted as u64;
                        }
                    }
                    (sent, thread_cpu_ns().saturating_sub(cpu_start))
                })
            })
            .collect();
        if rebalance {
            while Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
                index.rebalance();
            }
        }
        let results: Vec<(u64, u64)> = workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect();
        let elapsed = start.elapsed().as_secs_f64();
        let total: u64 = results.iter().map(|r| r.0).sum();
        // Each thread's rate per second of its own CPU time, summed: what two
        // dedicated cores would do, whatever else this machine runs meanwhile.
        let per_cpu: f64 = results
            .iter()
            .filter(|r| r.1 > 0)
            .map(|r| r.0 as f64 / (r.1 as f64 / 1e9))
            .sum();
        println!("{phase}: {per_cpu:.0} updates per CPU-second summed over the threads");
        println!(
            "{phase}: {total} updates in {elapsed:.2} s = {:.0} updates/s ({THREADS} threads, batch {batch}, {} shards)",
            total as f64 / elapsed,
            index.shard_count()
        );
    };

    run("warm-up + rebalancing", Duration::from_secs(3), true);
    run("measured", Duration::from_secs(seconds), false);

    // Queries, one thread: 10 nearest within 2 km of random points in the box.
    let mut rng = StdRng::seed_from_u64(99);
    let points: Vec<LatLng> = (0..20_000)
        .map(|_| {
            LatLng::new(
                CENTER.0 + rng.random_range(-SPAN..SPAN),
                CENTER.1 + rng.random_range(-SPAN..SPAN),
            )
            .expect("inside the box")
        })
        .collect();
    let start = Instant::now();
    let mut found = 0;
    for p in &points {
        found += index.nearest(*p, 2_000.0, 10, |_| true).len();
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "queries: {} k=10 r=2 km in {elapsed:.2} s = {:.0} queries/s (1 thread), {:.1} hits each",
        points.len(),
        points.len() as f64 / elapsed,
        found as f64 / points.len() as f64
    );

    let indexed = index.audit().expect("index invariants hold");
    println!(
        "{indexed} drivers indexed of {} known; hot shard at S2 level {}",
        index.driver_count(),
        index
            .shards()
            .iter()
            .filter(|s| s.drivers > 0)
            .map(|s| s.level)
            .max()
            .unwrap_or(0)
    );
}
