//! `casebook load whatsapp`: the XMPP client swarm of
//! [`casebook_whatsapp::load`] against a chat node (or any XMPP server):
//! open-loop logins, then a constant message rate (or an idle hold). With
//! `--create-users` it first writes the accounts into the data dir's account
//! store, where a running node picks them up on its next reload.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use casebook_whatsapp::auth::{Accounts, AccountsConfig};
use casebook_whatsapp::client::Mechanism;
use casebook_whatsapp::load::{self, LoadConfig, LoadProgress};

use crate::config::Config;

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

pub(super) async fn run(config: &Config, args: WhatsappArgs) -> anyhow::Result<ExitCode> {
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
    let watcher = tokio::spawn(super::watch(progress.clone(), args.no_progress));
    let report = load::run(load, progress.clone()).await;
    watcher.abort();
    super::print_report(report, args.json, |r| r.table())
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
