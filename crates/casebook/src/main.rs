//! `casebook`: Netflix, Uber, Amazon and WhatsApp architectures you can run, load,
//! break and measure on one machine.

mod cli;
mod cmd;
mod config;
mod platform;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let config = match cli.load_config() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("casebook: {err}");
            return ExitCode::from(2);
        }
    };
    casebook_kit::telemetry::init_tracing(&cli.log_filter());
    if cli.repair_wal {
        // Explicit, and only for this run: every log opened from now on keeps its
        // intact prefix and sets the rest aside.
        casebook_kit::wal::set_process_repair(casebook_kit::wal::Repair::TruncateAfterCopy);
        tracing::warn!(
            "--repair-wal: corrupt logs will be cut after their intact prefix (the rest is kept aside)"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("casebook")
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("casebook: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cmd::run(cli.command, config));
    // Tasks still parked (idle keep-alive connections, say) must not hold up exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("casebook: {err:#}");
            ExitCode::FAILURE
        }
    }
}
