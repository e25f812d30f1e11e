//! `casebook load CASE`: each case's load generator against the running platform,
//! one file per case (its flags), one progress bar and one report printer for all.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use casebook_kit::loadgen::ShowProgress;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;

mod amazon;
mod netflix;
mod uber;
mod whatsapp;

#[derive(Debug, clap::Subcommand)]
pub enum LoadCommand {
    /// An XMPP client swarm against a chat node (or any XMPP server, e.g. Prosody).
    ///
    /// Accounts are `load-0 .. load-<users-1>`, all with `--password`; connection i
    /// logs in as `load-i` from source address 127.0.0.<1 + i % sources>. Logins run
    /// open loop at `--login-rate`; then messages go at a constant `--rate` (open
    /// loop: the schedule never waits for replies), each carrying its intended send
    /// time, so the delivery latency counts from when it was due (no coordinated
    /// omission). `--rate 0` holds the sessions idle for `--duration` (memory
    /// measurements). Limits of this machine: 20,000 open files per process (one per
    /// connection, in the generator and in the server alike) and ephemeral ports
    /// 32768-60999, i.e. about 28,000 connections per source address and target:
    /// use `--sources` beyond that.
    Whatsapp(whatsapp::WhatsappArgs),
    /// The Uber workload against the API (:8090): drivers moving along routes with
    /// a ping every 4 s (batched into `POST /v1/locations`), ride requests open loop
    /// at `--rides-per-sec` from Zipf hotspots over ~1 km cells, an airport and an
    /// optional stadium burst; each offer accepted on the driver's behalf and its
    /// trip driven to paid. Reports pings sent/accepted/shed, rides
    /// requested/matched/unmatched and request → match percentiles (from the
    /// intended send time).
    Uber(uber::UberArgs),
    /// The Amazon workload against the API (:8100): browsing, recommendations,
    /// cart adds and removes, reservations and checkout over Zipf users and SKUs,
    /// open loop; each operation its own class, reported per priority (critical:
    /// reserve, checkout; normal: cart; low: browse, recommendations).
    /// `--prime-day` runs 1x, then 10x for twice `--duration`, then 1x, with the
    /// claims (critical success ≥ 99.9 %, p99 within 2x of 1x) as verdict lines.
    Amazon(amazon::AmazonArgs),
    /// The Netflix player fleet against the playback API (:8081) and the CDN:
    /// players arriving open loop at `--players-per-sec`, each playing a title
    /// over HTTP — the signed master playlist, media playlists and segments from
    /// the edge the playback API steered it to — on a network trace (`--trace`:
    /// fiber, cable, 4g, 3g-flaky or a CSV file), with BBA or BOLA (`--abr`) over a
    /// `--buffer`, failing over to another edge when its edge fails. Reports video
    /// start time p50/p99/max, rebuffer ratio, average bitrate, switches, QoE,
    /// failovers and errors, with the case study's claims (start < 100 ms p99,
    /// rebuffering < 0.5 %) as pass/fail lines. `--simulate` runs the same players
    /// on a simulated clock, without a platform (deterministic for a `--seed`;
    /// `--kill-edge-at` kills an edge mid-run).
    Netflix(netflix::NetflixArgs),
}

pub async fn run(config: &Config, command: LoadCommand) -> anyhow::Result<ExitCode> {
    match command {
        LoadCommand::Whatsapp(args) => whatsapp::run(config, args).await,
        LoadCommand::Uber(args) => uber::run(config, args).await,
        LoadCommand::Amazon(args) => amazon::run(config, args).await,
        LoadCommand::Netflix(args) => netflix::run(config, args).await,
    }
}

/// Prints a load run's report — a table, or JSON with `--json` — or, for a run
/// that could not start, why (exit 1).
pub(crate) fn print_report<R: serde::Serialize>(
    report: Result<R, impl std::fmt::Display>,
    json: bool,
    table: impl Fn(&R) -> String,
) -> anyhow::Result<ExitCode> {
    let report = match report {
        Ok(report) => report,
        Err(problem) => {
            eprintln!("casebook: {problem}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// Shows a run's progress the same way for every case: a bar on a terminal (the
/// phase, its position, the case's counters) unless `--no-progress`, else one line
/// per phase on stderr, which scripts wait for (e.g. `phase: hold` once every
/// session is online).
pub(crate) async fn watch(progress: Arc<dyn ShowProgress>, no_progress: bool) {
    let show = !no_progress && std::io::stderr().is_terminal();
    let bar = if show {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix:>10} [{bar:40}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut last: Option<String> = None;
    loop {
        let phase = progress.phase();
        if last.as_deref() != Some(phase.as_str()) {
            if show {
                bar.set_prefix(phase.clone());
            } else {
                eprintln!("phase: {phase} ({})", progress.message());
            }
            last = Some(phase);
        }
        let (position, length) = progress.position();
        bar.set_length(length);
        bar.set_position(position);
        bar.set_message(progress.message());
        bar.tick();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
