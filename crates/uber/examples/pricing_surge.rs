//! A quick in-process measurement of the surge engine (no HTTP): supply pings
//! and demand in batches of 1,000, multiplier reads and quotes, one thread.
//!
//! `nice -n 19 cargo run --release -p casebook-uber --example pricing_surge`

use std::sync::Arc;
use std::time::{Duration, Instant};

use casebook_kit::clock::SystemClock;
use casebook_uber::index::{DriverId, LatLng};
use casebook_uber::pricing::{Pricing, Signal, Surge, SurgeConfig, Tariff};

const DRIVERS: u64 = 200_000;
const PINGS: u64 = 2_000_000;
const READS: u64 = 200_000;
const BATCH: usize = 1_000;

/// A deterministic spread over a 0.3° × 0.3° city (a few hundred level-12 cells).
fn spot(i: u64) -> LatLng {
    let x = (i.wrapping_mul(2_654_435_761) % 10_000) as f64 / 10_000.0;
    let y = (i.wrapping_mul(40_503) % 10_000) as f64 / 10_000.0;
    LatLng::new(40.6 + 0.3 * y, -74.1 + 0.3 * x).unwrap()
}

fn rate(n: u64, took: Duration) -> String {
    format!("{:>12.0}/s", n as f64 / took.as_secs_f64())
}

fn main() {
    let surge = Arc::new(Surge::new(SurgeConfig::default(), SystemClock::shared()).unwrap());

    let pings: Vec<Signal> = (0..PINGS)
        .map(|i| Signal::Supply {
            driver: DriverId(i % DRIVERS),
            at: spot(i / DRIVERS * 7 + i % DRIVERS),
        })
        .collect();
    let started = Instant::now();
    for batch in pings.chunks(BATCH) {
        surge.record(batch);
    }
    println!("supply pings   {}", rate(PINGS, started.elapsed()));

    let demand: Vec<Signal> = (0..PINGS).map(|i| Signal::Demand { at: spot(i) }).collect();
    let started = Instant::now();
    for batch in demand.chunks(BATCH) {
        surge.record(batch);
    }
    println!("demand         {}", rate(PINGS, started.elapsed()));

    let started = Instant::now();
    let mut sum = 0.0;
    for i in 0..READS {
        sum += surge.multiplier(spot(i)).multiplier;
    }
    println!("multiplier     {}", rate(READS, started.elapsed()));

    let pricing = Pricing::new(surge.clone(), Tariff::default(), Duration::from_secs(120)).unwrap();
    let started = Instant::now();
    let mut cents = 0u64;
    for i in 0..READS {
        cents += pricing.quote(spot(i), spot(i + 1)).unwrap().fare_cents;
    }
    println!("quote          {}", rate(READS, started.elapsed()));
    println!("stats {:?} (checksum {sum:.1} {cents})", surge.stats());
}
