//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{self, Config, ConfigError, Overrides};

/// casebook — production architectures (Netflix, Uber, Amazon, WhatsApp) you can run,
/// load, break and measure on one machine.
///
/// Start everything with `casebook up`, then open the control-plane URL it prints
/// first. Configuration comes from defaults, then `--config FILE` (TOML), then
/// `CASEBOOK_<TABLE>__<KEY>` environment variables, then these flags.
#[derive(Debug, Parser)]
#[command(name = "casebook", version, about, long_about)]
pub struct Cli {
    /// Where durable state lives (WALs, embedded databases, indexes).
    #[arg(long, global = true, env = "CASEBOOK_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// A TOML configuration file; see `casebook config` for every key and its default.
    #[arg(long, global = true, env = "CASEBOOK_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The control plane's port (dashboard, discovery, metrics, admin API).
    #[arg(long, global = true, value_name = "PORT")]
    pub control_port: Option<u16>,

    /// The WhatsApp chat node's XMPP client port (default 5222; 0 picks a free one).
    #[arg(long, global = true, value_name = "PORT")]
    pub whatsapp_port: Option<u16>,

    /// Log filter, e.g. `info` or `casebook_kit=debug,info`. Default: warnings and
    /// errors only, so `up`'s URL and table stay on top. Wins over `RUST_LOG`, which
    /// is read only when neither this flag nor `CASEBOOK_LOG` is given.
    #[arg(long, global = true, env = "CASEBOOK_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    /// Open write-ahead logs that are corrupt before intact records: keep the
    /// intact prefix and move the rest aside (`<segment>.corrupt-<offset>`, never
    /// deleted). Without it such a log stops its instance with an error naming the
    /// segment, the offset and the sequence number.
    #[arg(long, global = true)]
    pub repair_wal: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole platform in this process on the embedded default.
    ///
    /// Prints the control-plane URL first, then what listens where. Ctrl-C or
    /// SIGTERM stops it gracefully: every instance deregisters, stops accepting,
    /// finishes in-flight work (up to `shutdown.drain_timeout`) and flushes its
    /// state; a second Ctrl-C exits at once.
    Up {
        /// Start only this case (repeatable), e.g. `--case uber`; the control plane
        /// always runs. Default: every case.
        #[arg(long = "case", value_name = "NAME")]
        cases: Vec<String>,
    },

    /// Run one service instance alone in this process (fleet mode).
    ///
    /// The instance registers with the control plane at `--control-url` and renews
    /// its lease until stopped. `casebook serve control` runs the control plane itself.
    Serve {
        /// The service to run, e.g. `control`.
        service: String,
        /// The zone to place the instance in (default: the first zone).
        #[arg(long)]
        zone: Option<String>,
        /// The port to listen on (default: the service's configured port, or a free one).
        #[arg(long)]
        port: Option<u16>,
        /// The instance id (default: `{service}-{zone}-{n}`).
        #[arg(long)]
        instance_id: Option<String>,
        /// The control plane to register with (default: from the configuration).
        #[arg(long, value_name = "URL")]
        control_url: Option<String>,
    },

    /// Print the effective configuration as TOML (defaults, file, environment, flags).
    Config,

    /// Canary deploy a version of a service through the control plane, e.g.
    /// `deploy netflix-recs --version 2.1 --bad-build latency=150ms,errors=5%`.
    ///
    /// Starts a baseline (the current version) and a canary (the new one), each
    /// taking a share of the service's traffic; judges the canary's latency and
    /// errors against the baseline's, Kayenta's way, at each analysis interval; then
    /// promotes it by a rolling update or rolls it back. Follows the deploy step by
    /// step: exit 0 when promoted, 1 when rolled back, 2 when refused.
    Deploy(crate::cmd::deploy::Args),

    /// Load generators against the running cases (`casebook load whatsapp --help`, `casebook load uber --help`).
    Load {
        #[command(subcommand)]
        command: crate::cmd::load::LoadCommand,
    },

    /// Chaos experiments against the running platform (`casebook chaos gorilla us-east-b
    /// --probe success:uber>=0.999`): the timeline while it runs, the verdict as a
    /// table; exit 1 when the steady-state hypothesis did not hold.
    Chaos {
        #[command(subcommand)]
        command: crate::cmd::chaos::ChaosCommand,
    },

    /// WhatsApp case administration (accounts of the XMPP service).
    Whatsapp {
        #[command(subcommand)]
        command: WhatsappCommand,
    },

    /// Netflix case administration (the content pipeline, user accounts).
    Netflix {
        #[command(subcommand)]
        command: NetflixCommand,
    },
}

/// `casebook netflix ...`: the content pipeline, run in this process on the
/// origin store under `--data-dir` (or `[netflix] origin_store`); a running
/// `casebook up` serves the title as soon as it is published.
#[derive(Debug, Subcommand)]
pub enum NetflixCommand {
    /// Encode a media file into the bitrate ladder as HLS and publish it, e.g.
    /// `ingest movie.mp4 --title "Big Buck Bunny"`.
    ///
    /// With ffmpeg installed (or `[netflix] ffmpeg`) the file is probed and encoded
    /// in one ffmpeg run (H.264/AAC, 4-second MPEG-TS segments); without, the
    /// synthetic encoder makes segments of exact sizes (`[netflix] encoder`). The
    /// title's id is its name in lowercase with `-` between words; an id already in
    /// the catalog is refused. A file ffmpeg cannot read is refused naming it, and a
    /// failed ingest leaves nothing listed.
    Ingest {
        /// The source file (any format ffmpeg reads).
        file: std::path::PathBuf,
        /// The title's name.
        #[arg(long)]
        title: String,
        /// No progress bar (phases are still printed on stderr when it is not a terminal).
        #[arg(long)]
        no_progress: bool,
    },
    /// Create a user account on the user store (`[netflix.users] database`, else
    /// SQLite under `--data-dir`), e.g. `add-user ann@example.com - --profile Ann
    /// --profile Kids`; prints the account id. Works with or without `casebook up`.
    AddUser {
        /// The email (unique, whatever its case).
        email: String,
        /// The password, 8 to 256 bytes (`-` or absent: read from standard input).
        password: Option<String>,
        /// A profile to make (repeatable; the first is the default; none: `Main`).
        #[arg(long = "profile", value_name = "NAME")]
        profiles: Vec<String>,
    },
}

/// `casebook whatsapp ...`: account administration, on the files under `--data-dir`.
///
/// Passwords are stored only as SCRAM-SHA-1 and SCRAM-SHA-256 secrets. A password
/// given as `-` or left out is read from the first line of standard input, which
/// keeps it out of the process list and shell history.
#[derive(Debug, Subcommand)]
pub enum WhatsappCommand {
    /// Create an account, e.g. `add-user alice@localhost`.
    AddUser {
        /// The bare JID, `local@domain`.
        jid: String,
        /// The password (`-` or absent: read from standard input).
        password: Option<String>,
        /// PBKDF2 iterations for the stored secrets (at least 4096).
        #[arg(long, default_value_t = 4096)]
        iterations: u32,
    },
    /// Delete an account.
    RemoveUser {
        /// The bare JID, `local@domain`.
        jid: String,
    },
    /// Change an account's password.
    Passwd {
        /// The bare JID, `local@domain`.
        jid: String,
        /// The new password (`-` or absent: read from standard input).
        password: Option<String>,
    },
    /// List the accounts of a domain, one bare JID per line.
    ListUsers {
        /// The XMPP domain, e.g. `localhost`.
        domain: String,
    },
}

impl Cli {
    /// The configuration from every source, flags last.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        config::load(
            self.config.as_deref(),
            std::env::vars(),
            &Overrides {
                data_dir: self.data_dir.clone(),
                control_port: self.control_port,
                whatsapp_port: self.whatsapp_port,
            },
        )
    }

    /// The log filter to start tracing with: `--log` / `CASEBOOK_LOG`, else
    /// `RUST_LOG`, else warnings only.
    pub fn log_filter(&self) -> String {
        log_filter(
            self.log.as_deref(),
            std::env::var("RUST_LOG").ok().as_deref(),
        )
    }
}

/// The filter from `--log`/`CASEBOOK_LOG` (`flag`) and `RUST_LOG`: the flag wins.
fn log_filter(flag: Option<&str>, rust_log: Option<&str>) -> String {
    flag.or(rust_log)
        .filter(|f| !f.trim().is_empty())
        .unwrap_or("warn")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_log_flag_wins_over_rust_log_and_the_default_is_quiet() {
        assert_eq!(log_filter(Some("info"), Some("debug")), "info");
        assert_eq!(log_filter(None, Some("debug")), "debug");
        assert_eq!(log_filter(None, None), "warn");
        assert_eq!(log_filter(Some(""), None), "warn");
    }

    #[test]
    fn repair_wal_is_a_global_flag() {
        let cli = Cli::try_parse_from(["casebook", "up", "--repair-wal"]).unwrap();
        assert!(cli.repair_wal);
        let cli = Cli::try_parse_from(["casebook", "serve", "uber"]).unwrap();
        assert!(!cli.repair_wal);
    }

    #[test]
    fn up_takes_repeated_cases() {
        let cli = Cli::try_parse_from(["casebook", "up", "--case", "uber", "--case", "whatsapp"])
            .unwrap();
        match cli.command {
            Command::Up { cases } => assert_eq!(cases, ["uber", "whatsapp"]),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
