//! Wiring: which services this binary can run, built from the configuration.

use std::sync::Arc;

use casebook_control::{ControlPlane, ControlSettings};
use casebook_kit::clock::SystemClock;
use casebook_kit::discovery::{DiscoveryClient, DiscoveryRegistrar};
use casebook_kit::metrics_push::{self, MetricsPusher};
use casebook_kit::runtime::{InstanceSpec, Platform};
use casebook_kit::topology::Placement;
use casebook_uber::pricing::{PRICING_SERVICE, PricingConfig, PricingService};
use casebook_uber::resp::server::{GEO_RESP_SERVICE, GeoResp};
use casebook_uber::service::{UBER_SERVICE, UberService};
use casebook_whatsapp::node::{CHAT_SERVICE, ChatNode, ChatSettings};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// How a user changes the control plane's port, shown when it is taken.
pub const CONTROL_PORT_HINT: &str = "--control-port, CASEBOOK_CONTROL__PORT or `port` in [control]";

/// A platform with every service of this binary registered.
pub fn build(config: &Config) -> Platform {
    build_with_uber(config).0
}

/// [`build`], and the `uber` service registered in it: `casebook up` hands it the
/// address of the pricing instance it started ([`UberService::set_pricing_url`]).
pub fn build_with_uber(config: &Config) -> (Platform, Arc<UberService>) {
    let platform = Platform::new(
        config.topology.clone(),
        config.data_dir.clone(),
        SystemClock::shared(),
    );
    platform.register_service(Arc::new(ControlPlane::new(
        platform.downgrade(),
        ControlSettings {
            topology: config.topology.clone(),
            discovery: config.discovery.clone(),
            metrics_store: config.metrics_store.clone(),
            drain: config.shutdown.drain_timeout,
            control: config.control.clone(),
            http_services: vec![UBER_SERVICE.to_owned(), PRICING_SERVICE.to_owned()],
        },
    )));
    platform.register_service(Arc::new(
        ChatNode::new(ChatSettings {
            config: config.whatsapp.clone(),
            // The account commands (`casebook whatsapp add-user`) use the same root.
            accounts_root: config.data_dir.clone(),
        })
        // Node i (in region i) listens on the configured ports + i * 100.
        .with_regions(region_names(config)),
    ));
    // One replica per region (instance i on http_port + 100 i, gossip on
    // gossip_port + i); the regional settings were checked when the config loaded.
    let uber = Arc::new(
        UberService::regional_from_config(&config.uber, &region_names(config), config.control.host)
            .expect("[uber] regions validated when the configuration was loaded"),
    );
    // The RESP port's live key (`drivers`) reads the index of the uber replica
    // in the RESP port's own region (the first: where `up` places it).
    let engine_of = Arc::downgrade(&uber);
    let resp_region = region_names(config).into_iter().next().unwrap_or_default();
    platform.register_service(Arc::new(GeoResp::from_config_live(
        &config.uber,
        Arc::new(move || {
            let uber = engine_of.upgrade()?;
            let engine = uber.engine_of(&resp_region).or_else(|| uber.engine())?;
            Some(engine.index().clone())
        }),
    )));
    platform.register_service(uber.clone());
    platform.register_service(Arc::new(
        PricingService::new(PricingConfig::default()).expect("the default pricing config is valid"),
    ));
    (platform, uber)
}

/// How a user changes the RESP geo port, shown when it is taken.
pub const UBER_RESP_PORT_HINT: &str = "CASEBOOK_UBER__RESP_PORT or `resp_port` in [uber]";
/// How a user changes the Uber HTTP API's port, shown when it is taken.
pub const UBER_HTTP_PORT_HINT: &str = "CASEBOOK_UBER__HTTP_PORT or `http_port` in [uber]";
/// How a user changes the pricing service's port, shown when it is taken.
pub const PRICING_PORT_HINT: &str = "CASEBOOK_UBER__PRICING_PORT or `pricing_port` in [uber]";

/// The spec of the RESP geo port's instance (`[uber]` resp_port).
pub fn geo_resp_spec(config: &Config) -> anyhow::Result<InstanceSpec> {
    first_zone_spec(
        config,
        GEO_RESP_SERVICE,
        config.uber.resp_port,
        UBER_RESP_PORT_HINT,
    )
}

/// The spec of one Uber API replica: in `zone` (default: the first region's first
/// zone), on its region's port (`[uber]` http_port + 100 × the region's index).
pub fn uber_spec(config: &Config, zone: Option<&str>) -> anyhow::Result<InstanceSpec> {
    let placement = placement(config, zone)?;
    let index = region_names(config)
        .iter()
        .position(|r| *r == placement.region)
        .unwrap_or(0);
    Ok(InstanceSpec {
        service: UBER_SERVICE.to_owned(),
        instance_id: None,
        placement,
        listen: std::net::SocketAddr::new(config.control.host, config.uber.http_port_of(index)),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        port_hint: Some(UBER_HTTP_PORT_HINT.to_owned()),
    })
}

/// One Uber API replica per region of the topology, in region order: what
/// `casebook up` starts (they gossip driver state to each other).
pub fn uber_specs(config: &Config) -> anyhow::Result<Vec<InstanceSpec>> {
    per_region(config, uber_spec)
}

/// `spec` in each region's first zone, in region order.
fn per_region(
    config: &Config,
    spec: impl Fn(&Config, Option<&str>) -> anyhow::Result<InstanceSpec>,
) -> anyhow::Result<Vec<InstanceSpec>> {
    config
        .topology
        .regions
        .iter()
        .map(|region| {
            let zone = region
                .zones
                .first()
                .ok_or_else(|| anyhow::anyhow!("region `{}` has no zones", region.name))?;
            spec(config, Some(zone))
        })
        .collect()
}

/// The spec of the surge pricing service's instance (`[uber]` pricing_port).
pub fn pricing_spec(config: &Config) -> anyhow::Result<InstanceSpec> {
    first_zone_spec(
        config,
        PRICING_SERVICE,
        config.uber.pricing_port,
        PRICING_PORT_HINT,
    )
}

/// One instance of `service` on the control plane's host at `port`, in the first
/// zone, with `hint` shown if the port is taken.
fn first_zone_spec(
    config: &Config,
    service: &str,
    port: u16,
    hint: &str,
) -> anyhow::Result<InstanceSpec> {
    Ok(InstanceSpec {
        service: service.to_owned(),
        instance_id: None,
        placement: placement(config, None)?,
        listen: std::net::SocketAddr::new(config.control.host, port),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        port_hint: Some(hint.to_owned()),
    })
}

/// How a user changes the chat node's port, shown when it is taken.
pub const WHATSAPP_PORT_HINT: &str =
    "--whatsapp-port, CASEBOOK_WHATSAPP__PORT or `port` in [whatsapp]";

fn region_names(config: &Config) -> Vec<String> {
    config
        .topology
        .regions
        .iter()
        .map(|r| r.name.clone())
        .collect()
}

/// The spec of one chat node: in `zone` (default: the first region's first zone),
/// on the control plane's host, on its region's ports
/// ([`WhatsappConfig::node_ports`](casebook_whatsapp::node::WhatsappConfig::node_ports):
/// the `[whatsapp]` ports + 100 × the region's index).
pub fn chat_spec(config: &Config, zone: Option<&str>) -> anyhow::Result<InstanceSpec> {
    let placement = placement(config, zone)?;
    let regions = region_names(config);
    config
        .whatsapp
        .validate_nodes(regions.len())
        .map_err(anyhow::Error::msg)?;
    let index = regions
        .iter()
        .position(|r| *r == placement.region)
        .unwrap_or(0);
    Ok(InstanceSpec {
        service: CHAT_SERVICE.to_owned(),
        instance_id: None,
        placement,
        listen: std::net::SocketAddr::new(
            config.control.host,
            config.whatsapp.node_ports(index).c2s,
        ),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        port_hint: Some(WHATSAPP_PORT_HINT.to_owned()),
    })
}

/// One chat node per region of the topology, in region order (the first on the
/// configured ports): what `casebook up` starts.
pub fn chat_specs(config: &Config) -> anyhow::Result<Vec<InstanceSpec>> {
    per_region(config, chat_spec)
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
/// `control_url`.
pub fn attach_discovery(platform: &Platform, config: &Config, control_url: &str) {
    platform.set_registrar(Arc::new(DiscoveryRegistrar::new(
        DiscoveryClient::new(control_url).with_token(config.control.token.as_deref()),
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
