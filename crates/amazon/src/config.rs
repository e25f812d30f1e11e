//! The `[amazon]` table of the configuration, validated with [`ConfigError`]s naming
//! the dotted key.

use std::time::Duration;

use casebook_kit::config::ConfigError;
use casebook_kit::resilience::shed::ShedConfig;
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
    /// Products in the catalog (`sku-00000` …, at most 99,999).
    pub catalog_skus: usize,
    /// How often the recommendations' batch layer recomputes its model (it also
    /// runs at start when there is none, and on `POST /v1/recommendations/rebuild`).
    #[serde(with = "humantime_serde")]
    pub recs_batch_every: Duration,
    /// The priority shedder in front of every route.
    pub shed: ShedConfig,
    /// The cart's limits and replication (`[amazon.cart]`).
    pub cart: CartConfig,
}

impl Default for AmazonConfig {
    fn default() -> Self {
        Self {
            http_port: 8100,
            cart_port: 0,
            catalog_skus: 10_000,
            recs_batch_every: crate::service::DEFAULT_BATCH_EVERY,
            shed: ShedConfig::default(),
            cart: CartConfig::default(),
        }
    }
}

impl AmazonConfig {
    /// Checks every key; the error names the first one at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=99_999).contains(&self.catalog_skus) {
            return Err(ConfigError::new("amazon.catalog_skus", "1 to 99,999"));
        }
        if self.recs_batch_every < Duration::from_secs(1) {
            return Err(ConfigError::new("amazon.recs_batch_every", "at least 1s"));
        }
        self.shed
            .validate()
            .map_err(|e| ConfigError::new(format!("amazon.shed.{}", e.field), e.reason))?;
        self.cart.validate()?;
        Ok(())
    }
}
