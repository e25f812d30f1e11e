//! The `[amazon.cart]` table: the cart's limits and the pace of its replication,
//! validated with [`ConfigError`]s naming the dotted key. Durations are humantime
//! strings (`anti_entropy_every = "5s"`).

use std::time::Duration;

use casebook_kit::config::ConfigError;
use casebook_kit::wal::Durability;
use serde::{Deserialize, Serialize};

/// The most a line may be configured to hold.
pub const MAX_LINE_QTY_LIMIT: u32 = 10_000;
/// The most lines a cart may be configured to hold.
pub const MAX_LINES_LIMIT: usize = 1_000;

/// The `[amazon.cart]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CartConfig {
    /// The most one line holds, and the most one request may add or set (more:
    /// 400 naming `qty`). An add past it fills the line and stops there.
    pub max_line_qty: u32,
    /// The most lines one cart holds; an add of a new SKU to a full cart is a 409
    /// (`cart_full`).
    pub max_lines: usize,
    /// A replica compares digests with each peer this often (the backstop that
    /// finds whatever push and hints missed).
    #[serde(with = "humantime_serde")]
    pub anti_entropy_every: Duration,
    /// Digest buckets (of 1,024) a replica reconciles with one peer per round.
    pub anti_entropy_buckets: usize,
    /// How often a replica tries to hand its hints to the replicas they name.
    #[serde(with = "humantime_serde")]
    pub handoff_every: Duration,
    /// How often a replica writes a snapshot of its carts (a restart replays its
    /// log only from the last one on).
    #[serde(with = "humantime_serde")]
    pub snapshot_every: Duration,
    /// Hints one replica keeps at most (one per cart and intended replica); past
    /// it a hint is dropped and counted, and anti-entropy delivers that cart.
    pub hint_capacity: usize,
    /// Carts waiting to be pushed to one peer at most; past it anti-entropy
    /// delivers them.
    pub push_queue: usize,
    /// Carts per push, handoff or anti-entropy request.
    pub batch: usize,
    /// One call from the API to a replica, or between replicas, gives up after this.
    #[serde(with = "humantime_serde")]
    pub replica_timeout: Duration,
    /// The replica list is asked of discovery again when it is this old.
    #[serde(with = "humantime_serde")]
    pub discovery_refresh: Duration,
    /// Cart events each replica's bus keeps (older ones are compacted away).
    pub event_retention: u64,
    /// Whether the replicas' logs fsync before acknowledging; only tests turn it off.
    #[serde(skip)]
    pub durability: Durability,
}

impl Default for CartConfig {
    fn default() -> Self {
        Self {
            max_line_qty: 100,
            max_lines: 50,
            anti_entropy_every: Duration::from_secs(5),
            anti_entropy_buckets: 64,
            handoff_every: Duration::from_secs(1),
            snapshot_every: Duration::from_secs(30),
            hint_capacity: 100_000,
            push_queue: 16_384,
            batch: 256,
            replica_timeout: Duration::from_millis(250),
            discovery_refresh: Duration::from_secs(1),
            event_retention: 1_000_000,
            durability: Durability::Sync,
        }
    }
}

impl CartConfig {
    /// Checks every key; the error names the first one at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad =
            |key: &str, reason: String| Err(ConfigError::new(format!("amazon.cart.{key}"), reason));
        if !(1..=MAX_LINE_QTY_LIMIT).contains(&self.max_line_qty) {
            return bad(
                "max_line_qty",
                format!("must be in 1..={MAX_LINE_QTY_LIMIT}"),
            );
        }
        if !(1..=MAX_LINES_LIMIT).contains(&self.max_lines) {
            return bad("max_lines", format!("must be in 1..={MAX_LINES_LIMIT}"));
        }
        if !(1..=crate::cart::store::BUCKETS).contains(&self.anti_entropy_buckets) {
            return bad(
                "anti_entropy_buckets",
                format!("must be in 1..={}", crate::cart::store::BUCKETS),
            );
        }
        if !(1..=10_000_000).contains(&self.hint_capacity) {
            return bad("hint_capacity", "must be in 1..=10000000".into());
        }
        if !(1..=1_000_000).contains(&self.push_queue) {
            return bad("push_queue", "must be in 1..=1000000".into());
        }
        if !(1..=1_024).contains(&self.batch) {
            return bad("batch", "must be in 1..=1024".into());
        }
        if self.event_retention == 0 {
            return bad("event_retention", "must be at least 1".into());
        }
        let ms = Duration::from_millis(1);
        let hour = Duration::from_secs(3_600);
        for (key, value, least) in [
            ("anti_entropy_every", self.anti_entropy_every, ms * 10),
            ("handoff_every", self.handoff_every, ms * 10),
            ("snapshot_every", self.snapshot_every, ms * 100),
            ("replica_timeout", self.replica_timeout, ms),
            ("discovery_refresh", self.discovery_refresh, ms * 10),
        ] {
            if value < least || value > hour {
                return bad(key, format!("must be between {least:?} and 1h"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid_and_errors_name_the_key() {
        CartConfig::default().validate().unwrap();
        let config = CartConfig {
            max_line_qty: 0,
            ..CartConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err().key(),
            "amazon.cart.max_line_qty"
        );
        let config = CartConfig {
            replica_timeout: Duration::ZERO,
            ..CartConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err().key(),
            "amazon.cart.replica_timeout"
        );
        let parsed: CartConfig = toml_like(r#"{"max_lines": 5, "handoff_every": "2s"}"#);
        assert_eq!(parsed.max_lines, 5);
        assert_eq!(parsed.handoff_every, Duration::from_secs(2));
    }

    fn toml_like(json: &str) -> CartConfig {
        serde_json::from_str(json).unwrap()
    }
}
