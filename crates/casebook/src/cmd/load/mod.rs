//! `casebook load ...`: load generators against the running cases.
//!
//! `casebook load whatsapp` drives XMPP sessions with the swarm of
//! [`casebook_whatsapp::client::load`]: open-loop logins, then a constant message
//! rate (or an idle hold), shown on a progress bar and reported as a table or JSON.
//! With `--create-users` it first writes the accounts into the data dir's account
//! store, where a running node picks them up on its next reload.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use casebook_whatsapp::auth::{Accounts, AccountsConfig};
use casebook_whatsapp::client::Mechanism;
use casebook_whatsapp::client::load::{self, LoadConfig, LoadProgress, Phase};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;

mod uber;

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
    Whatsapp(WhatsappArgs),
    /// The Uber workload against the API (:8090): drivers moving along routes with
    /// a ping every 4 s (batched into `POST /v1/locations`), ride requests open loop
    /// at `--rides-per-sec` from Zipf hotspots over ~1 km cells, an airport and an
    /// optional stadium burst; each offer accepted on the driver's behalf and its
    /// trip driven to paid. Reports pings sent/accepted/shed, rides
    /// requested/matched/unmatched and request → match percentiles (from the
    /// intended send time).
    Uber(uber::UberArgs),
}

#[derive(Debug, clap::Args)]
pub struct WhatsappArgs {
    /// The server's client port (default: the local node, 127.0.0.1:<whatsapp.port>).
    #[arg(long, value_name = "HOST:PORT")]
    target: Option<String>,
    /// The XMPP domain (default: `whatsapp.domain` of the configuration).
    #[arg(long)]
    domain: Option<String>,
    /// Accounts `load-0 .. load-<N-1>`.
    #[arg(long, default_value_t = 100, value_name = "N")]
    users: usize,
    /// The password of every load account.
    #[arg(long, default_value = "load-pw")]
    password: String,
    /// Create the missing accounts in the data dir's account store first (our node;
    /// for Prosody, `benches/whatsapp/prosody.sh users N` writes its account files).
    #[arg(long)]
    create_users: bool,
    /// Sessions to open (default: one per user; at most `--users`).
    #[arg(long, value_name = "N")]
    connections: Option<usize>,
    /// Spread connections over source addresses 127.0.0.1 ..= 127.0.0.<N>.
    #[arg(long, default_value_t = 1, value_name = "N")]
    sources: usize,
    /// Logins per second (open loop).
    #[arg(long, default_value_t = 1000.0, value_name = "R")]
    login_rate: f64,
    /// Most logins in flight; one due beyond that is dropped and counted.
    #[arg(long, default_value_t = 512, value_name = "N")]
    login_concurrency: usize,
    /// Messages per second over all connections; 0 holds the sessions idle.
    #[arg(long, default_value_t = 1000.0, value_name = "MSGS")]
    rate: f64,
    /// How long to send (or hold), e.g. `10s`, `2m`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Request XEP-0184 receipts; receivers answer them, senders count them.
    #[arg(long)]
    receipts: bool,
    /// SASL mechanism: auto (strongest offered), scram-sha-256, scram-sha-1, plain.
    #[arg(long, default_value = "auto", value_parser = parse_mechanism)]
    mechanism: Mechanism,
    /// Do not enable XEP-0198 even when offered.
    #[arg(long)]
    no_stream_management: bool,
    /// A message not delivered this long after the last one arrived is lost.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    loss_timeout: Duration,
    /// Log every account in once, untimed, so the timed logins reuse cached SCRAM
    /// keys (as real clients do) instead of measuring the generator's PBKDF2.
    #[arg(long)]
    warm_scram: bool,
    /// Before the logins, queue N messages for the offline `load-0` and time their
    /// flush when it logs in.
    #[arg(long, default_value_t = 0, value_name = "N")]
    offline_flush: usize,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long)]
    no_progress: bool,
}

fn parse_mechanism(name: &str) -> Result<Mechanism, String> {
    Mechanism::parse(name).ok_or_else(|| {
        format!("unknown mechanism {name:?}: auto, scram-sha-256, scram-sha-1, plain")
    })
}

pub async fn run(config: &Config, command: LoadCommand) -> anyhow::Result<ExitCode> {
    match command {
        LoadCommand::Whatsapp(args) => whatsapp(config, args).await,
        LoadCommand::Uber(args) => uber::run(config, args).await,
    }
}

async fn whatsapp(config: &Config, args: WhatsappArgs) -> anyhow::Result<ExitCode> {
    let target = args
        .target
        .clone()
        .unwrap_or_else(|| format!("127.0.0.1:{}", config.whatsapp.port));
    let target: SocketAddr = tokio::net::lookup_host(&target)
        .await
        .with_context(|| format!("resolving --target {target}"))?
        .next()
        .with_context(|| format!("--target {target} resolves to nothing"))?;
    let domain = args
        .domain
        .clone()
        .unwrap_or_else(|| config.whatsapp.domain.clone());
    let load = LoadConfig {
        target,
        domain: domain.clone(),
        users: args.users,
        password: args.password.clone(),
        connections: args.connections.unwrap_or(args.users),
        sources: args.sources,
        login_rate: args.login_rate,
        login_concurrency: args.login_concurrency,
        rate: args.rate,
        duration: args.duration,
        receipts: args.receipts,
        mechanism: args.mechanism,
        stream_management: !args.no_stream_management,
        loss_timeout: args.loss_timeout,
        warm_scram: args.warm_scram,
        offline_flush: args.offline_flush,
        step_timeout: Duration::from_secs(30),
    };
    if let Err(problem) = load.validate() {
        eprintln!("casebook: {problem}");
        return Ok(ExitCode::from(2));
    }
    if args.create_users {
        create_users(config, &domain, args.users, &args.password).await?;
    }

    let progress = Arc::new(LoadProgress::default());
    let show = !args.no_progress && std::io::stderr().is_terminal();
    let watcher = tokio::spawn(watch(progress.clone(), show));
    let report = load::run(load, progress.clone()).await;
    watcher.abort();
    print_report(report, args.json, |r| r.table())
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

/// Writes the missing `load-i` accounts into the account store (one persist).
async fn create_users(
    config: &Config,
    domain: &str,
    users: usize,
    password: &str,
) -> anyhow::Result<()> {
    let root = config.data_dir.clone();
    let domain = domain.to_owned();
    let password = password.to_owned();
    let created = tokio::task::spawn_blocking(move || {
        let accounts = Accounts::open(&root, &domain, AccountsConfig::default())?;
        let batch: Vec<(String, String)> = (0..users)
            .map(|i| (format!("load-{i}"), password.clone()))
            .collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        anyhow::Ok((
            accounts.add_many(&batch, threads)?,
            accounts.path().to_owned(),
        ))
    })
    .await??;
    eprintln!(
        "created {} load accounts in {} (a running node reloads it on its own)",
        created.0,
        created.1.display()
    );
    Ok(())
}

/// Shows the run's progress: a bar on a terminal, else one line per phase (which
/// scripts wait for, e.g. `phase: Hold` once every session is online).
async fn watch(progress: Arc<LoadProgress>, show: bool) {
    let bar = if show {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix:>8} [{bar:40}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut last = None;
    loop {
        let phase = progress.phase();
        if last != Some(phase) {
            last = Some(phase);
            if show {
                bar.set_prefix(format!("{phase:?}"));
            } else {
                eprintln!(
                    "phase: {phase:?} ({} sessions online)",
                    progress.online.load(Ordering::Relaxed)
                );
            }
        }
        match phase {
            Phase::WarmScram | Phase::Logins => {
                let (done, total) = progress.logins();
                bar.set_length(total);
                bar.set_position(done);
                bar.set_message("logins");
            }
            Phase::Messages | Phase::Draining => {
                bar.set_length(progress.total_messages.load(Ordering::Relaxed));
                bar.set_position(progress.scheduled.load(Ordering::Relaxed));
                bar.set_message(format!(
                    "delivered {}",
                    progress.delivered.load(Ordering::Relaxed)
                ));
            }
            Phase::Hold => bar.set_message(format!(
                "{} sessions online",
                progress.online.load(Ordering::Relaxed)
            )),
            _ => {}
        }
        bar.tick();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
