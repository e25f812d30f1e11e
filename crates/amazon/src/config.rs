//! The `[amazon]` table of the configuration, validated with [`ConfigError`]s naming
//! the dotted key.

use casebook_kit::config::ConfigError;
use serde::{Deserialize, Serialize};

use crate::cart::CartConfig;

/// The `[amazon]` table of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmazonConfig {
    /// The HTTP API's port (`amazon` service).
    pub http_port: u16,
    /// The cart replicas' port (`amazon-cart`, one per zone); 0: a free port each,
    /// found through discovery.
    pub cart_port: u16,
    /// The cart's limits and replication (`[amazon.cart]`).
    pub cart: CartConfig,
}

impl Default for AmazonConfig {
    fn default() -> Self {
        Self {
            http_port: 8100,
            cart_port: 0,
            cart: CartConfig::default(),
        }
    }
}

impl AmazonConfig {
    /// Checks every key; the error names the first one at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.cart.validate()?;
        Ok(())
    }
}
