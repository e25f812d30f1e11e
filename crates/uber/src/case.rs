//! The Uber case's face towards the binary: its services, where they run and on
//! which ports (see `casebook_kit::case`).
//!
//! | service | spread | default port | what it serves |
//! |---|---|---|---|
//! | `uber-pricing` | one instance | 8091 | surge multipliers and quotes |
//! | `uber` | one replica per region | 8090 + 100 × region | ingest, rides, offers, trips; gossip on UDP 7946 + region |
//! | `geo-resp` | one instance | 6380 | the Redis-compatible GEO port; its `drivers` key is the first region's replica's index |
//!
//! Pricing comes first: the replicas find it through discovery when they quote.

use std::sync::Arc;

use casebook_kit::case::{AddressKind, Case, CaseEnv, ServiceDecl, Spread};
use casebook_kit::config::ConfigError;
use casebook_kit::ports::PortPlan;

use crate::config::UberConfig;
use crate::pricing::{PricingConfig, PricingService};
use crate::resp::server::GeoResp;
use crate::service::UberService;

/// The case's name, as `casebook up --case` and `casebook load` take it.
pub const CASE: &str = "uber";

/// The Uber case as `[uber]` configures it.
pub fn case(config: &UberConfig, env: &CaseEnv) -> Result<Case, ConfigError> {
    let regions = env.topology.region_names();
    let uber = Arc::new(UberService::regional_from_config(
        config, &regions, env.host,
    )?);
    // The RESP port's live key reads the index of the replica in the RESP port's
    // own region: the first, where it is placed.
    let engine_of = Arc::downgrade(&uber);
    let resp_region = regions.first().cloned().unwrap_or_default();
    let geo_resp = GeoResp::from_config_live(
        config,
        Arc::new(move || {
            let uber = engine_of.upgrade()?;
            let engine = uber.engine_of(&resp_region).or_else(|| uber.engine())?;
            Some(engine.index().clone())
        }),
    );
    let pricing = PricingService::new(PricingConfig::default())
        .map_err(|e| ConfigError::new("uber.pricing_port", e))?;
    Ok(Case {
        name: CASE.to_owned(),
        services: vec![
            ServiceDecl {
                factory: Arc::new(pricing),
                spread: Spread::Single,
                ports: PortPlan::new(config.pricing_port, 0),
                port_key: "uber.pricing_port".to_owned(),
                port_hint: "CASEBOOK_UBER__PRICING_PORT or `pricing_port` in [uber]".to_owned(),
                label: "uber pricing".to_owned(),
                address: AddressKind::Http,
            },
            ServiceDecl {
                factory: uber,
                spread: Spread::PerRegion,
                ports: PortPlan::new(config.http_port, 100),
                port_key: "uber.http_port".to_owned(),
                port_hint: "CASEBOOK_UBER__HTTP_PORT or `http_port` in [uber]".to_owned(),
                label: "uber api".to_owned(),
                address: AddressKind::Http,
            },
            ServiceDecl {
                factory: Arc::new(geo_resp),
                spread: Spread::Single,
                ports: PortPlan::new(config.resp_port, 0),
                port_key: "uber.resp_port".to_owned(),
                port_hint: "CASEBOOK_UBER__RESP_PORT or `resp_port` in [uber]".to_owned(),
                label: "redis (RESP geo)".to_owned(),
                address: AddressKind::Tcp,
            },
        ],
    })
}
