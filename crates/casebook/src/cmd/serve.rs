//! `casebook serve SERVICE`: one service instance alone in this process.

use std::net::SocketAddr;
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

pub async fn run(mut config: Config, args: Args) -> anyhow::Result<ExitCode> {
    let is_control = args.service == casebook_control::CONTROL_SERVICE;
    // The token from CASEBOOK_CONTROL__TOKEN or the data directory's file (which
    // the control plane creates at its first start).
    casebook_control::access::resolve_token(&mut config.control, &config.data_dir, is_control)?;
    let platform = platform::build(&config);
    if !platform.services().contains(&args.service) {
        eprintln!(
            "casebook: unknown service `{}` (known: {})",
            args.service,
            platform.services().join(", ")
        );
        return Ok(ExitCode::from(2));
    }
    let mut spec = if is_control {
        platform::control_spec(&config)?
    } else if args.service == casebook_whatsapp::node::CHAT_SERVICE {
        platform::chat_spec(&config, args.zone.as_deref())?
    } else if args.service == casebook_uber::resp::server::GEO_RESP_SERVICE {
        platform::geo_resp_spec(&config)?
    } else if args.service == casebook_uber::service::UBER_SERVICE {
        platform::uber_spec(&config, args.zone.as_deref())?
    } else if args.service == casebook_uber::pricing::PRICING_SERVICE {
        platform::pricing_spec(&config)?
    } else {
        casebook_kit::runtime::InstanceSpec {
            service: args.service.clone(),
            instance_id: None,
            placement: platform::placement(&config, None)?,
            listen: SocketAddr::new(config.control.host, 0),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            port_hint: Some("--port".to_owned()),
        }
    };
    if let Some(zone) = &args.zone {
        spec.placement = platform::placement(&config, Some(zone))?;
    }
    if let Some(port) = args.port {
        spec.listen.set_port(port);
        spec.port_hint = Some("--port".to_owned());
    }
    spec.instance_id = args.instance_id;

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
    platform::attach_discovery(&platform, &config, &control_url);
    let stop_pushing = tokio_util::sync::CancellationToken::new();
    platform::push_metrics(
        &config,
        &control_url,
        &info.instance_id,
        stop_pushing.clone(),
    );
    // The control plane's URL carries the token, as `up` prints it.
    let shown_url = if is_control {
        casebook_control::access::index_url(&info.http_url(), config.control.token.as_deref())
    } else {
        info.http_url()
    };
    say!(
        "casebook {}: {} ({} in {}/{})",
        info.service,
        shown_url,
        info.instance_id,
        info.region,
        info.zone
    );
    stop_requested().await;
    stop_pushing.cancel();
    platform.stop_all(config.shutdown.drain_timeout).await;
    Ok(ExitCode::SUCCESS)
}
