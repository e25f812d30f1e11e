//! `casebook config`: print the effective configuration.

use std::process::ExitCode;

use crate::config::Config;

pub fn run(config: &Config) -> anyhow::Result<ExitCode> {
    print!("{}", toml::to_string_pretty(config)?);
    Ok(ExitCode::SUCCESS)
}
