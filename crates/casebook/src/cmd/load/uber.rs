//! `casebook load uber`: the Uber workload ([`casebook_uber::load`]) against the
//! API on :8090 — drivers pinging along routes, rides from Zipf hotspots, an
//! airport and a stadium burst — shown on a progress bar, reported as a table or JSON.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use casebook_kit::clock::SystemClock;
use casebook_uber::index::LatLng;
use casebook_uber::load::{self as workload, Burst, CityBox, WorkloadConfig, WorkloadProgress};
use casebook_uber::matching::Mode;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct UberArgs {
    /// The API (default: the local node, 127.0.0.1:<uber.http_port>).
    #[arg(long, value_name = "HOST:PORT")]
    target: Option<String>,
    /// Simulated drivers, each pinging every `--ping-every`.
    #[arg(long, default_value_t = 2000, value_name = "N")]
    drivers: usize,
    /// How often each driver pings.
    #[arg(long, default_value = "4s", value_parser = humantime::parse_duration)]
    ping_every: Duration,
    /// Updates per `POST /v1/locations`.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    ping_batch: usize,
    /// Ride requests per second (open loop).
    #[arg(long, default_value_t = 100.0, value_name = "R")]
    rides_per_sec: f64,
    /// How long to request rides, e.g. `10s`, `2m`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Batched matching (the API's window) instead of greedy.
    #[arg(long)]
    batched: bool,
    /// Share of ordinary rides from the airport.
    #[arg(long, default_value_t = 0.05, value_name = "F")]
    airport_share: f64,
    /// Start of the stadium burst, from the first ride (no burst without it).
    #[arg(long, value_parser = humantime::parse_duration)]
    burst_at: Option<Duration>,
    /// Length of the stadium burst.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    burst_len: Duration,
    /// Extra rides per second from the stadium during the burst.
    #[arg(long, default_value_t = 200.0, value_name = "R")]
    burst_rate: f64,
    /// Ride requests outstanding at most (a ride due beyond that is dropped, counted).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    max_in_flight: usize,
    /// Delay between trip steps (accept, arrived, start, complete, pay).
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    trip_step: Duration,
    /// Drivers accept their offers but trips are not driven on (request → match
    /// without the trip traffic; each driver then serves one ride).
    #[arg(long)]
    accept_only: bool,
    /// Replay pickups and dropoffs from a trips CSV (the Chicago taxi sample:
    /// `benches/uber/fetch-chicago.sh`); the city box becomes the trips' box, the
    /// airport O'Hare and the stadium Soldier Field.
    #[arg(long, value_name = "PATH")]
    trips_csv: Option<std::path::PathBuf>,
    /// Rows of `--trips-csv` read at most.
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    max_trips: usize,
    /// Seed of the generators.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long)]
    no_progress: bool,
}

pub async fn run(config: &Config, args: UberArgs) -> anyhow::Result<ExitCode> {
    let target = args
        .target
        .clone()
        .unwrap_or_else(|| format!("127.0.0.1:{}", config.uber.http_port));
    let target = if target.starts_with("http://") {
        target
    } else {
        format!("http://{target}")
    };
    let mut load = WorkloadConfig {
        target,
        drivers: args.drivers,
        ping_every: args.ping_every,
        ping_batch: args.ping_batch,
        rides_per_sec: args.rides_per_sec,
        duration: args.duration,
        mode: if args.batched {
            Mode::Batched
        } else {
            Mode::Greedy
        },
        airport_share: args.airport_share,
        burst: args.burst_at.map(|at| Burst {
            at,
            len: args.burst_len,
            rate: args.burst_rate,
        }),
        max_in_flight: args.max_in_flight,
        trip_step: args.trip_step,
        drive_trips: !args.accept_only,
        seed: args.seed,
        ..WorkloadConfig::default()
    };
    if let Some(path) = &args.trips_csv {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --trips-csv {}", path.display()))?;
        let (trips, skipped) = match workload::parse_trips_csv(&text, args.max_trips) {
            Ok(parsed) => parsed,
            Err(problem) => {
                eprintln!("casebook: {}: {problem}", path.display());
                return Ok(ExitCode::from(2));
            }
        };
        eprintln!(
            "replaying {} trips from {} ({skipped} rows without coordinates skipped)",
            trips.len(),
            path.display()
        );
        if let Some(city) = CityBox::around(&trips) {
            load.grid.city = city;
        }
        load.airport = LatLng::literal(41.9786, -87.9048);
        load.stadium = LatLng::literal(41.8623, -87.6167);
        load.trips = Some(Arc::new(trips));
    }
    if let Err(problem) = load.validate() {
        eprintln!("casebook: {problem}");
        return Ok(ExitCode::from(2));
    }
    let progress = Arc::new(WorkloadProgress::default());
    let show = !args.no_progress && std::io::stderr().is_terminal();
    let watcher = tokio::spawn(watch(progress.clone(), show));
    let report = workload::run(load, SystemClock::shared(), progress).await;
    watcher.abort();
    super::print_report(report, args.json, |r| r.table())
}

/// Rides due over rides planned, with pings and matches as the message.
async fn watch(progress: Arc<WorkloadProgress>, show: bool) {
    if !show {
        return;
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} rides [{bar:40}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    loop {
        bar.set_length(progress.rides.total());
        bar.set_position(progress.rides.due());
        bar.set_message(format!(
            "matched {} paid {} pings {}",
            progress.matched.load(Ordering::Relaxed),
            progress.trips_paid.load(Ordering::Relaxed),
            progress.pings_sent.load(Ordering::Relaxed)
        ));
        bar.tick();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
