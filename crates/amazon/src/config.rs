//! The `[amazon]` table of the configuration, validated with [`ConfigError`]s naming
//! the dotted key. Durations are humantime strings (`"15m"`).

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
    /// Whether the shedder runs at all; `false` serves every request it is sent
    /// however loaded it is (for measuring what shedding buys, not for production).
    pub shed_enabled: bool,
    /// The cart's limits and replication (`[amazon.cart]`).
    pub cart: CartConfig,

    // Inventory, reservations, orders and checkout.
    /// Serve inventory, reservations and orders without the cart: no
    /// `amazon-cart` replicas, no `/v1/carts`, and checkout answers 503
    /// `cart_unavailable`. For running the transactional core alone.
    pub inventory_only: bool,
    /// Lock shards over SKUs and idempotency keys (1..=65536).
    pub inventory_shards: usize,
    /// A reservation's TTL when the request names none (1 s to `max_reservation_ttl`);
    /// also how long checkout holds stock before its order commits.
    #[serde(with = "humantime_serde")]
    pub reservation_ttl: Duration,
    /// The longest TTL a reservation request may ask for (at most 30 days).
    #[serde(with = "humantime_serde")]
    pub max_reservation_ttl: Duration,
    /// The most units of one line: a reservation or a cart line at checkout
    /// (1..=1,000,000; more: 400 naming `qty`).
    pub max_line_qty: u32,
    /// The most lines one checkout reserves (1..=1024).
    pub max_checkout_lines: usize,
    /// How long ended reservations, decided idempotency keys and checkout keys are
    /// kept (1 min to 30 days); a key retried later executes anew.
    #[serde(with = "humantime_serde")]
    pub reservation_retention: Duration,
    /// Reservations held at most (active, or ended within the retention); beyond,
    /// new ones get 503 `store_full`.
    pub max_reservations: usize,
    /// Idempotency keys held at most; beyond, new keys get 503 `store_full`.
    pub max_idempotency_keys: usize,
    /// Records after which the inventory writes a snapshot and cuts its log: the
    /// most a restart replays (1,000..=100,000,000).
    pub snapshot_after_records: u64,
    /// How often due reservations are expired and old ones forgotten (10 ms to 1 min).
    #[serde(with = "humantime_serde")]
    pub sweep_every: Duration,
}

impl Default for AmazonConfig {
    fn default() -> Self {
        Self {
            http_port: 8100,
            cart_port: 0,
            catalog_skus: 10_000,
            recs_batch_every: crate::service::DEFAULT_BATCH_EVERY,
            shed: ShedConfig::default(),
            shed_enabled: true,
            cart: CartConfig::default(),
            inventory_only: false,
            inventory_shards: 256,
            reservation_ttl: Duration::from_secs(15 * 60),
            max_reservation_ttl: Duration::from_secs(24 * 3600),
            max_line_qty: 100,
            max_checkout_lines: 50,
            reservation_retention: Duration::from_secs(24 * 3600),
            max_reservations: 5_000_000,
            max_idempotency_keys: 5_000_000,
            snapshot_after_records: 1_000_000,
            sweep_every: Duration::from_secs(1),
        }
    }
}

fn within(key: &str, value: Duration, min: Duration, max: Duration) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::new(
            format!("amazon.{key}"),
            format!(
                "must be between {} and {}, got {}",
                humantime::format_duration(min),
                humantime::format_duration(max),
                humantime::format_duration(value)
            ),
        ));
    }
    Ok(())
}

fn count(key: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if !(min..=max).contains(&value) {
        return Err(ConfigError::new(
            format!("amazon.{key}"),
            format!("must be in {min}..={max}, got {value}"),
        ));
    }
    Ok(())
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
        const DAY: Duration = Duration::from_secs(24 * 3600);
        count(
            "inventory_shards",
            self.inventory_shards as u64,
            1,
            casebook_kit::locks::MAX_SHARDS as u64,
        )?;
        within(
            "max_reservation_ttl",
            self.max_reservation_ttl,
            Duration::from_secs(1),
            30 * DAY,
        )?;
        within(
            "reservation_ttl",
            self.reservation_ttl,
            Duration::from_secs(1),
            self.max_reservation_ttl,
        )?;
        count("max_line_qty", u64::from(self.max_line_qty), 1, 1_000_000)?;
        count(
            "max_checkout_lines",
            self.max_checkout_lines as u64,
            1,
            casebook_kit::locks::MAX_KEYS_PER_ACQUIRE as u64,
        )?;
        within(
            "reservation_retention",
            self.reservation_retention,
            Duration::from_secs(60),
            30 * DAY,
        )?;
        count("max_reservations", self.max_reservations as u64, 1, 1 << 32)?;
        count(
            "max_idempotency_keys",
            self.max_idempotency_keys as u64,
            1,
            1 << 32,
        )?;
        count(
            "snapshot_after_records",
            self.snapshot_after_records,
            1_000,
            100_000_000,
        )?;
        within(
            "sweep_every",
            self.sweep_every,
            Duration::from_millis(10),
            Duration::from_secs(60),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_their_key() {
        AmazonConfig::default().validate().unwrap();
        let config: AmazonConfig = toml::from_str(
            r#"
            reservation_ttl = "1h"
            max_reservation_ttl = "30m"
            "#,
        )
        .unwrap();
        assert_eq!(
            config.validate().unwrap_err().key(),
            "amazon.reservation_ttl"
        );
        let config = AmazonConfig {
            max_line_qty: 0,
            ..AmazonConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().key(), "amazon.max_line_qty");
        let config = AmazonConfig {
            inventory_shards: 0,
            ..AmazonConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err().key(),
            "amazon.inventory_shards"
        );
    }
}
