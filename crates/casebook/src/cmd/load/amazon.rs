//! `casebook load amazon`: the Amazon workload ([`casebook_amazon::load`]) against
//! the API on :8100 — browsing, recommendations, carts, reservations and checkout
//! over Zipf users and SKUs — or, with `--prime-day`, the surge profile.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use casebook_amazon::load::{
    self as workload, Phase, WorkloadConfig, WorkloadProgress, prime_day_phases,
};

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct AmazonArgs {
    /// The API (default: 127.0.0.1:<amazon.http_port>).
    #[arg(long, value_name = "HOST:PORT")]
    target: Option<String>,
    /// Requests per second (open loop); the prime-day surge is ten times this.
    #[arg(long, default_value_t = 200.0, value_name = "R")]
    rate: f64,
    /// How long to run (with `--prime-day`: each 1x phase; the surge lasts twice this).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// The surge profile: 1x, a scheduled pre-scale, 10x, then 1x again.
    #[arg(long)]
    prime_day: bool,
    /// Distinct users (Zipf).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    users: usize,
    /// Distinct SKUs (Zipf; the catalog's `sku-00000` …).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    skus: usize,
    /// Zipf exponent of user and SKU popularity.
    #[arg(long, default_value_t = 1.0, value_name = "S")]
    zipf: f64,
    /// Stock set on every SKU first (0: keep the current stock).
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    stock: u64,
    /// A success slower than this does not count as goodput.
    #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
    slo: Duration,
    /// Requests outstanding at most (a request due beyond that is dropped, counted).
    #[arg(long, default_value_t = 4_096, value_name = "N")]
    max_in_flight: usize,
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

pub async fn run(config: &Config, args: AmazonArgs) -> anyhow::Result<ExitCode> {
    let target = args
        .target
        .clone()
        .unwrap_or_else(|| format!("127.0.0.1:{}", config.amazon.http_port));
    let target = if target.starts_with("http://") {
        target
    } else {
        format!("http://{target}")
    };
    let phases = if args.prime_day {
        let phases = prime_day_phases(args.duration);
        print_schedule(&phases, args.rate);
        phases
    } else {
        vec![Phase {
            name: "steady".into(),
            multiplier: 1.0,
            duration: args.duration,
        }]
    };
    let load = WorkloadConfig {
        target,
        users: args.users,
        skus: args.skus,
        zipf_s: args.zipf,
        rate_per_sec: args.rate,
        phases,
        stock_per_sku: args.stock,
        max_in_flight: args.max_in_flight,
        slo: args.slo,
        seed: args.seed,
        ..WorkloadConfig::default()
    };
    if let Err(problem) = load.validate() {
        eprintln!("casebook: {problem}");
        return Ok(ExitCode::from(2));
    }
    let progress = Arc::new(WorkloadProgress::default());
    let watcher = tokio::spawn(super::watch(progress.clone(), args.no_progress));
    let report = workload::run(load, progress).await;
    watcher.abort();
    super::print_report(report, args.json, |r| r.table())
}

/// The prime-day schedule, printed before it runs.
fn print_schedule(phases: &[Phase], rate: f64) {
    eprintln!("prime day (time compressed):");
    let mut at = Duration::ZERO;
    for phase in phases {
        eprintln!(
            "  {:>6} → {:>6}  {:<7} {:>5}x = {:.0}/s",
            humantime::format_duration(at).to_string(),
            humantime::format_duration(at + phase.duration).to_string(),
            phase.name,
            phase.multiplier,
            rate * phase.multiplier
        );
        at += phase.duration;
    }
}
