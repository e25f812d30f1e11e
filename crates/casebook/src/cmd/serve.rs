//! `casebook serve SERVICE`: one service instance alone in this process.

use std::process::ExitCode;

use super::signal::stop_requested;
use crate::config::Config;
use crate::platform;

/// What `serve` was asked for.
#[derive(Debug)]
pub struct Args {
    pub service: String,
    pub zone: Option<String>,
    pub port: Option<u16>,
    pub instance_id: Option<String>,
    pub control_url: Option<String>,
}

pub async fn run(config: Config, args: Args) -> anyhow::Result<ExitCode> {
    let built = platform::build(&config)?;
    let is_control = args.service == casebook_control::CONTROL_SERVICE;
    let mut spec = if is_control {
        let mut spec = platform::control_spec(&config)?;
        if let Some(zone) = &args.zone {
            spec.placement = platform::placement(&config, Some(zone))?;
        }
        spec
    } else {
        let spec = built
            .registry
            .service(&args.service)
            .and_then(|decl| built.registry.spec(decl, args.zone.as_deref()));
        match spec {
            Ok(spec) => spec,
            Err(casebook_kit::case::RegistryError::UnknownService { name, known }) => {
                eprintln!(
                    "casebook: unknown service `{name}` (known: {}, {known})",
                    casebook_control::CONTROL_SERVICE
                );
                return Ok(ExitCode::from(2));
            }
            Err(err) => {
                eprintln!("casebook: {err}");
                return Ok(ExitCode::from(2));
            }
        }
    };
    if let Some(port) = args.port {
        spec.listen.set_port(port);
        spec.port_hint = Some("--port".to_owned());
    }
    spec.instance_id = args.instance_id;

    let platform = &built.platform;
    let info = match platform.start(spec).await {
        Ok(info) => info,
        Err(err) => {
            eprintln!("casebook: {err}");
            return Ok(ExitCode::FAILURE);
        }
    };
    // The control plane registers with itself at the address it actually bound.
    let control_url = match args.control_url {
        Some(url) => url,
        None if is_control => info.http_url(),
        None => config.control.url(),
    };
    platform::attach_discovery(&built, &config, &control_url);
    let stop_pushing = tokio_util::sync::CancellationToken::new();
    platform::push_metrics(
        &config,
        &control_url,
        &info.instance_id,
        stop_pushing.clone(),
    );
    say!(
        "casebook {}: {} ({} in {}/{})",
        info.service,
        info.http_url(),
        info.instance_id,
        info.region,
        info.zone
    );
    stop_requested().await;
    stop_pushing.cancel();
    platform.stop_all(config.shutdown.drain_timeout).await;
    Ok(ExitCode::SUCCESS)
}
