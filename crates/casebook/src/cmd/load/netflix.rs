//! `casebook load netflix`: the player fleet ([`casebook_netflix::player`]) against
//! the playback API and the CDN of a running platform — or, with `--simulate`, the
//! same players on a simulated clock — reported as a QoE table (or JSON) with the
//! case study's claims as pass/fail lines.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use casebook_kit::loadgen::Progress;
use casebook_netflix::load::ApiWorkload;
use casebook_netflix::player::Ladder;
use casebook_netflix::player::abr::AbrKind;
use casebook_netflix::player::driver::{self, FleetConfig, FleetProgress};
use casebook_netflix::player::session::PlayerConfig;
use casebook_netflix::player::sim::{FleetSim, SimConfig, simulate_fleet};
use casebook_netflix::player::trace::{NetworkTrace, PROFILES};

use crate::config::Config;

/// The most players one `--simulate` run plays (each is a few microseconds to
/// milliseconds of CPU).
const MAX_SIMULATED_PLAYERS: u64 = 1_000_000;

#[derive(Debug, clap::Args)]
pub struct NetflixArgs {
    /// The service plane instead of the players: signed-in users through the API
    /// gateway (home, search, play, billing), open loop.
    #[arg(long)]
    api: bool,
    /// (--api) Requests per second.
    #[arg(long, default_value_t = 50.0, value_name = "R")]
    rate: f64,
    /// (--api) Users signed up, logged in and subscribed before the run.
    #[arg(long, default_value_t = 20, value_name = "N")]
    users: usize,
    /// The playback API (default: the local one, 127.0.0.1:<netflix.playback_port>);
    /// with --api, the gateway (default 127.0.0.1:<netflix.gateway_port>).
    #[arg(long, value_name = "HOST:PORT")]
    target: Option<String>,
    /// The title to play (default: the catalog's first).
    #[arg(long)]
    title: Option<String>,
    /// Players arriving per second (open loop).
    #[arg(long, default_value_t = 10.0, value_name = "R")]
    players_per_sec: f64,
    /// How long players keep arriving, e.g. `10s`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Players at once at most (a player due beyond that is dropped, counted).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    max_players: usize,
    /// The ABR algorithm: `bba` (buffer-based, Huang et al.) or `bola` (Spiteri et al.).
    #[arg(long, default_value = "bba")]
    abr: AbrKind,
    /// Each player's network: a profile (fiber, cable, 4g, 3g-flaky) or a CSV
    /// file of `t_ms,kbps,latency_ms` rows.
    #[arg(long, default_value = "fiber", value_name = "PROFILE|FILE")]
    trace: String,
    /// The player's buffer.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    buffer: Duration,
    /// Media each player watches at most (default: the whole title).
    #[arg(long, value_parser = humantime::parse_duration)]
    watch: Option<Duration>,
    /// Players' regions, comma-separated (default: every region of the topology,
    /// player i in region i mod n).
    #[arg(long, value_delimiter = ',')]
    regions: Vec<String>,
    /// How often players post heartbeats and QoE events.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    heartbeat: Duration,
    /// One request's timeout; an edge that does not answer within it failed.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    http_timeout: Duration,
    /// Seed of each player's start in its trace.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// No platform: simulate the players on a simulated clock (a synthetic
    /// 4-rung ladder of the `--watch` length, 60 s by default).
    #[arg(long)]
    simulate: bool,
    /// (--simulate) An edge dies this long after the first arrival.
    #[arg(long, value_parser = humantime::parse_duration)]
    kill_edge_at: Option<Duration>,
    /// (--simulate) The share of players on the edge that dies.
    #[arg(long, default_value_t = 1.0, value_name = "F")]
    kill_share: f64,
    /// (--simulate) Beyond one round trip, how long a request to the dead edge
    /// takes to fail (0: refused at once; a timeout for a black hole).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    detect: Duration,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long)]
    no_progress: bool,
}

fn load_trace(spec: &str) -> Result<NetworkTrace, String> {
    if let Some(profile) = NetworkTrace::profile(spec) {
        return Ok(profile);
    }
    let path = std::path::Path::new(spec);
    if !path.exists() {
        let names: Vec<&str> = PROFILES.iter().map(|(n, _)| *n).collect();
        return Err(format!(
            "--trace: `{spec}` is neither a profile ({}) nor a file",
            names.join(", ")
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("--trace {spec}: {e}"))?;
    NetworkTrace::parse_csv(spec, &text).map_err(|e| format!("--trace {spec}: {e}"))
}

pub async fn run(config: &Config, args: NetflixArgs) -> anyhow::Result<ExitCode> {
    if args.api {
        return run_api(config, &args).await;
    }
    let trace = match load_trace(&args.trace) {
        Ok(trace) => Arc::new(trace),
        Err(problem) => {
            eprintln!("casebook: {problem}");
            return Ok(ExitCode::from(2));
        }
    };
    let player = PlayerConfig {
        abr: args.abr,
        buffer_max: args.buffer,
        watch: args.watch,
        heartbeat: args.heartbeat,
        ..PlayerConfig::default()
    };
    if let Err(problem) = player.validate() {
        eprintln!("casebook: --{problem}");
        return Ok(ExitCode::from(2));
    }
    if args.simulate {
        return simulate(&args, player, trace);
    }
    let target = args
        .target
        .clone()
        .unwrap_or_else(|| format!("127.0.0.1:{}", config.netflix.playback_port));
    let playback = if target.starts_with("http://") {
        target
    } else {
        format!("http://{target}")
    };
    let regions = if args.regions.is_empty() {
        config.topology.region_names()
    } else {
        args.regions.clone()
    };
    let fleet = FleetConfig {
        playback,
        title: args.title.clone(),
        regions,
        rate: args.players_per_sec,
        duration: args.duration,
        max_players: args.max_players,
        player,
        trace,
        http_timeout: args.http_timeout,
        seed: args.seed,
        ..FleetConfig::default()
    };
    if let Err(problem) = fleet.validate() {
        eprintln!("casebook: {problem}");
        return Ok(ExitCode::from(2));
    }
    let progress = Arc::new(FleetProgress::default());
    let watcher = tokio::spawn(super::watch(progress.clone(), args.no_progress));
    let report = driver::run(fleet, progress).await;
    watcher.abort();
    super::print_report(report, args.json, |r| r.table())
}

async fn run_api(config: &Config, args: &NetflixArgs) -> anyhow::Result<ExitCode> {
    let target = args
        .target
        .clone()
        .unwrap_or_else(|| format!("127.0.0.1:{}", config.netflix.gateway_port));
    let workload = ApiWorkload {
        gateway: if target.starts_with("http://") {
            target
        } else {
            format!("http://{target}")
        },
        rate_per_sec: args.rate,
        duration: args.duration,
        users: args.users,
        timeout: args.http_timeout,
        seed: args.seed,
        ..ApiWorkload::default()
    };
    if let Err(problem) = workload.validate() {
        eprintln!("casebook: {problem}");
        return Ok(ExitCode::from(2));
    }
    let progress = Arc::new(Progress::default());
    let watcher = tokio::spawn(super::watch(progress.clone(), args.no_progress));
    let report = casebook_netflix::load::run(workload, progress).await;
    watcher.abort();
    super::print_report(report, args.json, |r| r.table())
}

fn simulate(
    args: &NetflixArgs,
    player: PlayerConfig,
    trace: Arc<NetworkTrace>,
) -> anyhow::Result<ExitCode> {
    let rate = args.players_per_sec;
    if !(rate.is_finite() && rate > 0.0) {
        eprintln!("casebook: --players-per-sec must be a positive number");
        return Ok(ExitCode::from(2));
    }
    if !(0.0..=1.0).contains(&args.kill_share) {
        eprintln!("casebook: --kill-share must be within 0..=1");
        return Ok(ExitCode::from(2));
    }
    let players = (rate * args.duration.as_secs_f64()).round().max(1.0);
    if players > MAX_SIMULATED_PLAYERS as f64 {
        eprintln!(
            "casebook: {players} players to simulate; at most {MAX_SIMULATED_PLAYERS} \
             (lower --players-per-sec or --duration)"
        );
        return Ok(ExitCode::from(2));
    }
    let players = players as u64;
    let ladder = Ladder::synthetic(args.watch.unwrap_or(Duration::from_secs(60)));
    let mut session = SimConfig::new(ladder, trace, args.seed);
    session.player = player;
    let fleet = FleetSim {
        session,
        players,
        rate,
        edge_failure_at: args.kill_edge_at,
        failure_share: args.kill_share,
        detect: args.detect,
        title: "synthetic".into(),
    };
    super::print_report(Ok::<_, String>(simulate_fleet(&fleet)), args.json, |r| {
        r.table()
    })
}
