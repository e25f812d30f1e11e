//! `casebook up`: the whole platform in one process.

use std::io::Write;
use std::process::ExitCode;

use casebook_kit::runtime::Platform;
use tokio_util::sync::CancellationToken;

use super::signal::stop_requested;
use crate::config::Config;
use crate::platform;

pub async fn run(mut config: Config) -> anyhow::Result<ExitCode> {
    // Every client of this process sends the installation's token (created now at
    // the first start).
    casebook_control::access::resolve_token(&mut config.control, &config.data_dir, true)?;
    let (platform, uber) = platform::build_with_uber(&config);
    let control = match platform.start(platform::control_spec(&config)?).await {
        Ok(info) => info,
        Err(err) => {
            eprintln!("casebook: {err}");
            return Ok(ExitCode::FAILURE);
        }
    };
    // Discovery is attached once the control plane's real address is known (the
    // port may be 0); the control plane then registers with itself like any other.
    platform::attach_discovery(&platform, &config, &control.http_url());
    let stop_pushing = CancellationToken::new();
    platform::push_metrics(
        &config,
        &control.http_url(),
        &control.instance_id,
        stop_pushing.clone(),
    );
    // The first line is the control-plane URL, for people and for scripts.
    // One chat node per region (they find each other through the process's
    // cluster), then the RESP geo port, the pricing service and one Uber API
    // replica per region — pricing first, so the replicas are handed its real
    // address (the port may be 0).
    let mut specs = platform::chat_specs(&config)?;
    specs.push(platform::geo_resp_spec(&config)?);
    specs.push(platform::pricing_spec(&config)?);
    specs.extend(platform::uber_specs(&config)?);
    for spec in specs {
        let service = spec.service.clone();
        match platform.start(spec).await {
            Ok(info) if service == casebook_uber::pricing::PRICING_SERVICE => {
                // Bound to every interface: call it on this host's loopback.
                let mut address = info.address;
                if address.ip().is_unspecified() {
                    address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                uber.set_pricing_url(format!("http://{address}"));
            }
            Ok(_) => {}
            Err(err) => {
                eprintln!("casebook: {err}");
                stop_pushing.cancel();
                platform.stop_all(config.shutdown.drain_timeout).await;
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    say!(
        "casebook control plane: {}",
        casebook_control::access::index_url(&control.http_url(), config.control.token.as_deref())
    );
    print_listeners(&platform, &config);
    let _ = std::io::stdout().flush();

    stop_requested().await;
    say!(
        "stopping: draining in-flight work (up to {:?}); press Ctrl-C again to exit at once",
        config.shutdown.drain_timeout
    );
    let _ = std::io::stdout().flush();
    stop_pushing.cancel();
    tokio::select! {
        reports = platform.stop_all(config.shutdown.drain_timeout) => {
            let forced = reports.iter().filter(|r| !r.drained).count();
            say!("stopped {} instance(s){}", reports.len(),
                if forced > 0 { format!(", {forced} killed at the drain deadline") } else { String::new() });
            Ok(ExitCode::SUCCESS)
        }
        _ = stop_requested() => {
            eprintln!("casebook: stopped at once on a second signal");
            Ok(ExitCode::from(130))
        }
    }
}

fn print_listeners(platform: &Platform, config: &Config) {
    let views = platform.list();
    let width = views
        .iter()
        .map(|v| v.info.instance_id.len())
        .max()
        .unwrap_or(0)
        .max("instance".len());
    say!();
    say!(
        "  {:<10} {:<width$} {:<10} {:<12} address",
        "service",
        "instance",
        "region",
        "zone"
    );
    for view in &views {
        say!(
            "  {:<10} {:<width$} {:<10} {:<12} {}",
            view.info.service,
            view.info.instance_id,
            view.info.region,
            view.info.zone,
            if view.info.service == casebook_whatsapp::node::CHAT_SERVICE {
                format!("xmpp c2s {}", view.info.address)
            } else if view.info.service == casebook_uber::resp::server::GEO_RESP_SERVICE {
                format!("redis (RESP geo) {}", view.info.address)
            } else if view.info.service == casebook_uber::service::UBER_SERVICE {
                format!("uber api {}", view.info.http_url())
            } else if view.info.service == casebook_uber::pricing::PRICING_SERVICE {
                format!("uber pricing {}", view.info.http_url())
            } else {
                view.info.http_url()
            },
        );
        for listener in &view.listeners {
            say!(
                "  {:<10} {:<width$} {:<10} {:<12} {} {}",
                "",
                "",
                "",
                "",
                listener.name,
                listener.address
            );
        }
    }
    say!();
    say!("  data dir: {}", config.data_dir.display());
    say!("  Ctrl-C to stop gracefully");
}
