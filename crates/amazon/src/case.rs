//! The Amazon case's face towards the binary: its services, where they run and on
//! which ports (see `casebook_kit::case`).
//!
//! | service | spread | default port | what it serves |
//! |---|---|---|---|
//! | `amazon-cart` | one replica per zone of the first region | free (discovery) | the cart replicas: CRDT state, hints, anti-entropy |
//! | `amazon` | one instance | 8100 | the API: carts, inventory, reservations, checkout, orders |
//!
//! The replicas come first: the API coordinates the cart over them. With
//! `amazon.inventory_only` only `amazon` runs, without the cart.

use std::sync::Arc;

use casebook_kit::case::{AddressKind, Case, CaseEnv, ServiceDecl, Spread};
use casebook_kit::config::ConfigError;
use casebook_kit::ports::PortPlan;

use crate::cart::CartReplicaService;
use crate::config::AmazonConfig;
use crate::service::AmazonService;

/// The case's name, as `casebook up --case` and `casebook load` take it.
pub const CASE: &str = "amazon";

/// The Amazon case as `[amazon]` configures it.
pub fn case(config: &AmazonConfig, env: &CaseEnv) -> Result<Case, ConfigError> {
    config.validate()?;
    let mut services = Vec::with_capacity(2);
    if !config.inventory_only {
        services.push(ServiceDecl {
            factory: Arc::new(CartReplicaService::new(
                config.clone(),
                env.resolver.clone(),
            )),
            spread: Spread::ZonesOfFirstRegion,
            ports: PortPlan::new(config.cart_port, 1),
            port_key: "amazon.cart_port".to_owned(),
            port_hint: "CASEBOOK_AMAZON__CART_PORT or `cart_port` in [amazon]".to_owned(),
            label: "amazon cart replica".to_owned(),
            address: AddressKind::Http,
        });
    }
    services.push(ServiceDecl {
        factory: Arc::new(AmazonService::new(config.clone(), env.resolver.clone())),
        spread: Spread::Single,
        ports: PortPlan::new(config.http_port, 0),
        port_key: "amazon.http_port".to_owned(),
        port_hint: "CASEBOOK_AMAZON__HTTP_PORT or `http_port` in [amazon]".to_owned(),
        label: "amazon api".to_owned(),
        address: AddressKind::Http,
    });
    Ok(Case {
        name: CASE.to_owned(),
        services,
    })
}
