//! Wiring: the control plane and the registered cases, built from the configuration.
//!
//! The only place that names the cases is [`cases`]; everything else (`up`,
//! `serve`, `load`) iterates the [`CaseRegistry`].

use std::sync::Arc;

use casebook_control::{ControlPlane, ControlSettings};
use casebook_kit::case::{AddressKind, Case, CaseEnv, CaseRegistry};
use casebook_kit::clock::SystemClock;
use casebook_kit::config::ConfigError;
use casebook_kit::discovery::{DiscoveryClient, DiscoveryRegistrar};
use casebook_kit::metrics_push::{self, MetricsPusher};
use casebook_kit::resolve::Resolver;
use casebook_kit::runtime::{InstanceSpec, Platform};
use casebook_kit::topology::Placement;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// How a user changes the control plane's port, shown when it is taken.
pub const CONTROL_PORT_HINT: &str = "--control-port, CASEBOOK_CONTROL__PORT or `port` in [control]";

/// The platform with the control plane and every case registered.
#[derive(Debug)]
pub struct Built {
    pub platform: Platform,
    pub registry: CaseRegistry,
    /// How instances find each other; attached to discovery once the control
    /// plane's address is known ([`attach_discovery`]).
    pub resolver: Arc<Resolver>,
}

/// Every case this binary runs, in start order. The one place a case is named.
fn cases(config: &Config, env: &CaseEnv) -> Result<Vec<Case>, ConfigError> {
    Ok(vec![
        casebook_whatsapp::case::case(&config.whatsapp, env)?,
        casebook_uber::case::case(&config.uber, env)?,
        casebook_amazon::case::case(&config.amazon, env)?,
        casebook_netflix::case::case(&config.netflix, env)?,
    ])
}

/// Builds the platform: the control plane, then every case's services. Two services
/// with one name are an error here, before anything starts.
pub fn build(config: &Config) -> anyhow::Result<Built> {
    let clock = SystemClock::shared();
    let platform = Platform::new(
        config.topology.clone(),
        config.data_dir.clone(),
        clock.clone(),
    );
    let resolver = Arc::new(Resolver::detached(clock));
    let env = CaseEnv {
        topology: config.topology.clone(),
        host: config.control.host,
        data_dir: config.data_dir.clone(),
        resolver: resolver.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let registry = CaseRegistry::new(&env, cases(config, &env)?)?;
    if let Ok(decl) = registry.service(casebook_control::CONTROL_SERVICE) {
        anyhow::bail!(
            "service `{}` is declared by a case, but the control plane is called that",
            decl.name()
        );
    }
    // The control plane's index links only the services whose main address speaks HTTP.
    let http_services = registry
        .services()
        .filter(|d| d.address == AddressKind::Http)
        .map(|d| d.name().to_owned())
        .collect();
    // A policy without a placement scales a service within its declared spread.
    let mut autoscaler = config.autoscaler.clone();
    for decl in registry.services() {
        autoscaler.declared.insert(
            decl.name().to_owned(),
            casebook_control::autoscaler::config::PlacementRule::of_spread(
                decl.spread,
                &config.topology,
            ),
        );
    }
    platform.register_service(Arc::new(ControlPlane::new(
        platform.downgrade(),
        ControlSettings {
            topology: config.topology.clone(),
            discovery: config.discovery.clone(),
            metrics_store: config.metrics_store.clone(),
            drain: config.shutdown.drain_timeout,
            control: config.control.clone(),
            http_services,
            autoscaler,
            chaos: config.chaos.clone(),
            // None: the control plane's own fault proxy.
            latency_injector: None,
            deploy: config.deploy.clone(),
            alerts: config.alerts.clone(),
        },
    )));
    platform.set_listener_limits(casebook_control::CONTROL_SERVICE, config.http.clone());
    for decl in registry.services() {
        platform.register_service(decl.factory.clone());
        platform.set_listener_limits(decl.name(), config.http.clone());
    }
    Ok(Built {
        platform,
        registry,
        resolver,
    })
}

/// Pushes this process's metrics to the control plane's store until `cancel`.
pub fn push_metrics(config: &Config, control_url: &str, node: &str, cancel: CancellationToken) {
    if config.metrics_push.enabled {
        MetricsPusher::new(control_url, metrics_push::node_tags(node))
            .with_step(config.metrics_push.step)
            .with_token(config.control.token.as_deref())
            .run(cancel);
    }
}

/// Registers every instance, running and to come, with the discovery server at
/// `control_url`, and resolves services through it.
pub fn attach_discovery(built: &Built, config: &Config, control_url: &str) {
    let client = DiscoveryClient::new(control_url).with_token(config.control.token.as_deref());
    built.resolver.attach(Arc::new(client.clone()));
    built
        .platform
        .set_registrar(Arc::new(DiscoveryRegistrar::new(
            client,
            config.discovery.renew_interval,
        )));
}

/// The placement of a zone, or of the first zone when none is named.
pub fn placement(config: &Config, zone: Option<&str>) -> anyhow::Result<Placement> {
    match zone {
        Some(zone) => {
            let region = config
                .topology
                .region_of(zone)
                .ok_or_else(|| anyhow::anyhow!("zone `{zone}` is not in the topology"))?;
            Ok(Placement {
                region: region.to_owned(),
                zone: zone.to_owned(),
            })
        }
        None => Ok(config.topology.spread(0)),
    }
}

/// The spec of the control plane's instance.
pub fn control_spec(config: &Config) -> anyhow::Result<InstanceSpec> {
    Ok(InstanceSpec {
        service: casebook_control::CONTROL_SERVICE.to_owned(),
        instance_id: None,
        placement: placement(config, config.control.zone.as_deref())?,
        listen: config.control.listen(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        port_hint: Some(CONTROL_PORT_HINT.to_owned()),
    })
}
