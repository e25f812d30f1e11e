//! `casebook up`: the control plane and the registered cases, in one process.

use std::io::Write;
use std::process::ExitCode;

use casebook_kit::case::{Case, CaseRegistry};
use casebook_kit::runtime::Platform;
use tokio_util::sync::CancellationToken;

use super::signal::stop_requested;
use crate::config::Config;
use crate::platform;

/// What `up` was asked for.
#[derive(Debug, Default)]
pub struct Args {
    /// Only these cases (all when empty).
    pub cases: Vec<String>,
}

pub async fn run(mut config: Config, args: Args) -> anyhow::Result<ExitCode> {
    // Every client of this process sends the installation's token (created now at
    // the first start).
    casebook_control::access::resolve_token(&mut config.control, &config.data_dir, true)?;
    let built = platform::build(&config)?;
    // Every named case must exist before anything starts; a case named twice runs once.
    let mut selected: Vec<&Case> = Vec::new();
    for name in &args.cases {
        match built.registry.case(name) {
            Ok(case) if selected.iter().any(|c| c.name == case.name) => {}
            Ok(case) => selected.push(case),
            Err(err) => {
                eprintln!("casebook: {err}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    if args.cases.is_empty() {
        selected = built.registry.cases().iter().collect();
    }
    let mut specs = Vec::new();
    for case in &selected {
        for decl in &case.services {
            specs.extend(built.registry.up_specs(decl)?);
        }
    }

    let platform = &built.platform;
    let control = match platform.start(platform::control_spec(&config)?).await {
        Ok(info) => info,
        Err(err) => {
            eprintln!("casebook: {err}");
            return Ok(ExitCode::FAILURE);
        }
    };
    // Discovery is attached once the control plane's real address is known (the
    // port may be 0); the control plane then registers with itself like any other.
    platform::attach_discovery(&built, &config, &control.http_url());
    let stop_pushing = CancellationToken::new();
    platform::push_metrics(
        &config,
        &control.http_url(),
        &control.instance_id,
        stop_pushing.clone(),
    );
    // Case by case, service by service, in the order the cases declare them (a
    // service that others call comes first).
    for spec in specs {
        if let Err(err) = platform.start(spec).await {
            eprintln!("casebook: {err}");
            stop_pushing.cancel();
            platform.stop_all(config.shutdown.drain_timeout).await;
            return Ok(ExitCode::FAILURE);
        }
    }
    // The first line is the control-plane URL, for people and for scripts.
    say!(
        "casebook control plane: {}",
        casebook_control::access::index_url(&control.http_url(), config.control.token.as_deref())
    );
    print_listeners(platform, &built.registry, &config);
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

fn print_listeners(platform: &Platform, registry: &CaseRegistry, config: &Config) {
    let mut views = platform.list();
    // Grouped by service: a service's instances side by side, in region order.
    views.sort_by(|a, b| {
        (&a.info.service, &a.started_at_ms, &a.info.instance_id).cmp(&(
            &b.info.service,
            &b.started_at_ms,
            &b.info.instance_id,
        ))
    });
    let width = |f: fn(&casebook_kit::runtime::InstanceView) -> usize, min: usize| {
        views.iter().map(f).max().unwrap_or(0).max(min)
    };
    let service_w = width(|v| v.info.service.len(), "service".len());
    let id_w = width(|v| v.info.instance_id.len(), "instance".len());
    say!();
    say!(
        "  {:<service_w$} {:<id_w$} {:<10} {:<12} address",
        "service",
        "instance",
        "region",
        "zone"
    );
    for view in &views {
        let address = match registry.service(&view.info.service) {
            Ok(decl) => decl.show_address(view.info.address),
            // The control plane: its URL.
            Err(_) => view.info.http_url(),
        };
        say!(
            "  {:<service_w$} {:<id_w$} {:<10} {:<12} {}",
            view.info.service,
            view.info.instance_id,
            view.info.region,
            view.info.zone,
            address,
        );
        for listener in &view.listeners {
            say!(
                "  {:<service_w$} {:<id_w$} {:<10} {:<12} {} {}",
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
