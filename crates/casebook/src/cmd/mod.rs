//! One module per command.

/// `println!` that ignores a closed stdout: `casebook up | head -1` (a script
/// reading the URL, then closing the pipe) must not bring the platform down.
macro_rules! say {
    () => {{
        let _ = std::io::Write::write_all(&mut std::io::stdout(), b"\n");
    }};
    ($($arg:tt)*) => {{
        let _ = std::io::Write::write_fmt(&mut std::io::stdout(), format_args!("{}\n", format_args!($($arg)*)));
    }};
}

pub(crate) mod chaos;
mod config;
pub(crate) mod deploy;
pub(crate) mod load;
mod netflix;
mod serve;
mod signal;
mod up;
mod whatsapp;

use std::process::ExitCode;

use crate::cli::Command;
use crate::config::Config;

/// Runs a command to completion.
pub async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Up { cases } => up::run(config, up::Args { cases }).await,
        Command::Serve {
            service,
            zone,
            port,
            instance_id,
            control_url,
        } => {
            serve::run(
                config,
                serve::Args {
                    service,
                    zone,
                    port,
                    instance_id,
                    control_url,
                },
            )
            .await
        }
        Command::Config => config::run(&config),
        Command::Deploy(args) => deploy::run(&config, args).await,
        Command::Whatsapp { command } => whatsapp::run(&config, command),
        Command::Netflix { command } => netflix::run(&config, command).await,
        Command::Load { command } => load::run(&config, command).await,
        Command::Chaos { command } => chaos::run(&config, command).await,
    }
}
