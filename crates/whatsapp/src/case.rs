//! The WhatsApp case's face towards the binary: its services, where they run and
//! on which ports (see `casebook_kit::case`).
//!
//! | service | spread | default port | what it serves |
//! |---|---|---|---|
//! | `chat` | one node per region | 5222 + 100 × region | XMPP c2s (plus TLS, WebSocket and the internal node link on their own ports) |

use std::sync::Arc;

use casebook_kit::case::{AddressKind, Case, CaseEnv, ServiceDecl, Spread};
use casebook_kit::config::ConfigError;
use casebook_kit::ports::PortPlan;

use crate::node::{ChatNode, ChatSettings, NODE_PORT_STRIDE, WhatsappConfig};

/// The case's name, as `casebook up --case` and `casebook load` take it.
pub const CASE: &str = "whatsapp";

/// The WhatsApp case as `[whatsapp]` configures it.
pub fn case(config: &WhatsappConfig, env: &CaseEnv) -> Result<Case, ConfigError> {
    let regions = env.topology.region_names();
    config.validate_nodes(regions.len())?;
    let node = ChatNode::new(ChatSettings {
        config: config.clone(),
        // The account commands (`casebook whatsapp add-user`) use the same root.
        accounts_root: env.data_dir.clone(),
    })
    .with_topology(env.topology.clone());
    Ok(Case {
        name: CASE.to_owned(),
        services: vec![ServiceDecl {
            factory: Arc::new(node),
            spread: Spread::PerRegion,
            ports: PortPlan::new(config.port, NODE_PORT_STRIDE),
            port_key: "whatsapp.port".to_owned(),
            port_hint: "--whatsapp-port, CASEBOOK_WHATSAPP__PORT or `port` in [whatsapp]"
                .to_owned(),
            label: "xmpp c2s".to_owned(),
            address: AddressKind::Tcp,
        }],
    })
}
