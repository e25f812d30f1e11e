//! One module per command.

mod config;
pub(crate) mod load;
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
        Command::Up => up::run(config).await,
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
        Command::Whatsapp { command } => whatsapp::run(&config, command),
        Command::Load { command } => load::run(&config, command).await,
    }
}
