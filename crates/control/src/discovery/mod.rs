//! Discovery with Eureka's semantics: the registry every instance registers with.
//!
//! - [`Registry`] is the logic, synchronous and driven by an injected clock: leases,
//!   eviction, self-preservation, zone-aware queries.
//! - [`api::router`] serves it over HTTP under `/api/discovery`, mirroring Eureka's REST
//!   API; the JSON types and the client live in `casebook_kit::discovery`.
//! - [`rewrites`]: the address-rewrite table a fault proxy feeds to steer the
//!   service query (`GET /apps/{service}`) through itself.
//! - [`spawn_maintenance`] runs the registry's periodic work (eviction, renewal
//!   threshold updates) on tokio timers in production; tests call the same clock-driven
//!   methods directly.
//!
//! Guarantees: an instance whose lease is not expired is never evicted; an expired
//! lease is evicted within one eviction interval unless self-preservation holds
//! (or the per-run eviction limit defers it to a later run); every answer reflects
//! every write acknowledged before it (one lock, no response cache).
//!
//! Wiring: the control plane ([`crate::plane`]) creates the [`Registry`] at start,
//! mounts [`api::router`] and runs [`spawn_maintenance`] until its shutdown; every
//! instance, the control plane included, registers through the platform's
//! `casebook_kit::discovery::DiscoveryRegistrar` (a `LeaseKeeper` each: released on
//! graceful stop, dropped on kill so the lease expires).
//!
//! Deliberately absent, compared with Eureka: peer replication between discovery
//! servers (there is one control plane), the response cache (answers are computed
//! under the lock; cheap at casebook's scale), delta fetches, and Eureka's doubled
//! lease expiry (see [`registry`]).

pub mod api;
pub mod registry;
pub mod rewrites;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use registry::{EvictionReport, Registry, RegistryError};
pub use rewrites::{AddressRewrites, Rewrite};

/// The `[discovery]` table of the configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// How often clients renew (Eureka: `leaseRenewalIntervalInSeconds`); the
    /// expected renewal rate is computed from it.
    #[serde(with = "humantime_serde")]
    pub renew_interval: Duration,
    /// How long a lease lasts without renewal, unless the registration asks for its own.
    #[serde(with = "humantime_serde")]
    pub lease_duration: Duration,
    /// How often expired leases are evicted.
    #[serde(with = "humantime_serde")]
    pub eviction_interval: Duration,
    /// The fraction of expected renewals below which self-preservation holds
    /// (Eureka: `renewalPercentThreshold`).
    pub renewal_threshold: f64,
    /// How often the expected number of clients is recomputed from the registry.
    #[serde(with = "humantime_serde")]
    pub threshold_update_interval: Duration,
    /// Whether self-preservation may suspend eviction at all.
    pub self_preservation: bool,
    /// At most `size − floor(size × eviction_limit_fraction)` evictions per run.
    pub eviction_limit_fraction: f64,
    /// The most instances the registry holds; registrations beyond it are refused.
    pub max_instances: usize,
    /// The most instances of one service; new registrations beyond it get 429.
    pub max_instances_per_service: usize,
    /// The most instances one caller (source address) registers; beyond, 429. On
    /// one host every process is the same caller (127.0.0.1).
    pub max_instances_per_source: usize,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            renew_interval: Duration::from_secs(30),
            lease_duration: Duration::from_secs(90),
            eviction_interval: Duration::from_secs(60),
            renewal_threshold: 0.85,
            threshold_update_interval: Duration::from_secs(15 * 60),
            self_preservation: true,
            eviction_limit_fraction: 0.85,
            max_instances: 100_000,
            max_instances_per_service: 1_000,
            max_instances_per_source: 2_000,
        }
    }
}

/// A configuration value that cannot work, naming its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[discovery] {key}: {reason}")]
pub struct ConfigError {
    /// The key at fault, as written in the `[discovery]` table.
    pub key: &'static str,
    pub reason: String,
}

/// The longest any discovery duration may be; longer is certainly a typo.
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

impl DiscoveryConfig {
    /// Checks every value is usable, naming the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: String| Err(ConfigError { key, reason });
        for (key, value) in [
            ("renew_interval", self.renew_interval),
            ("lease_duration", self.lease_duration),
            ("eviction_interval", self.eviction_interval),
            ("threshold_update_interval", self.threshold_update_interval),
        ] {
            if value.is_zero() {
                return bad(key, "must be longer than zero".into());
            }
            if value > MAX_DURATION {
                return bad(key, format!("must be at most {MAX_DURATION:?}"));
            }
        }
        if self.lease_duration <= self.renew_interval {
            return bad(
                "lease_duration",
                format!(
                    "must be longer than renew_interval ({:?}), or every lease expires between renewals",
                    self.renew_interval
                ),
            );
        }
        // `!(a && b)` so that NaN is refused too.
        if !(self.renewal_threshold > 0.0 && self.renewal_threshold <= 1.0) {
            return bad(
                "renewal_threshold",
                format!("must be in (0, 1], got {}", self.renewal_threshold),
            );
        }
        if !(self.eviction_limit_fraction >= 0.0 && self.eviction_limit_fraction < 1.0) {
            return bad(
                "eviction_limit_fraction",
                format!(
                    "must be in [0, 1) (1 would never evict), got {}",
                    self.eviction_limit_fraction
                ),
            );
        }
        for (key, value) in [
            ("max_instances", self.max_instances),
            ("max_instances_per_service", self.max_instances_per_service),
            ("max_instances_per_source", self.max_instances_per_source),
        ] {
            if value == 0 {
                return bad(key, "must be at least 1".into());
            }
        }
        Ok(())
    }
}

/// Runs the registry's periodic work until `cancel` fires: every
/// `min(eviction_interval, threshold_update_interval)` it calls
/// [`Registry::run_due_maintenance`], which evicts and recomputes the renewal threshold
/// when each is due on the registry's clock.
///
/// The intervals come from the registry's own configuration (one place for them).
pub fn spawn_maintenance(registry: Arc<Registry>, cancel: CancellationToken) -> JoinHandle<()> {
    let config = registry.config();
    let period = config
        .eviction_interval
        .min(config.threshold_update_interval);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; nothing is due at start.
        ticker.tick().await;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ticker.tick() => {
                    let report = registry.run_due_maintenance();
                    if let Some(eviction) = report {
                        if !eviction.evicted.is_empty() {
                            tracing::info!(
                                evicted = eviction.evicted.len(),
                                expired = eviction.expired,
                                "discovery evicted expired leases"
                            );
                        } else if eviction.self_preservation && eviction.expired > 0 {
                            tracing::warn!(
                                expired = eviction.expired,
                                "discovery self-preservation: expired leases kept"
                            );
                        }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_eurekas_and_valid() {
        let config = DiscoveryConfig::default();
        config.validate().unwrap();
        assert_eq!(config.renew_interval, Duration::from_secs(30));
        assert_eq!(config.lease_duration, Duration::from_secs(90));
        assert_eq!(config.eviction_interval, Duration::from_secs(60));
        assert_eq!(config.threshold_update_interval, Duration::from_secs(900));
    }

    #[test]
    fn parses_humantime_and_refuses_unknown_keys() {
        let config: DiscoveryConfig =
            serde_json::from_str(r#"{"renew_interval":"5s","lease_duration":"15s"}"#).unwrap();
        assert_eq!(config.renew_interval, Duration::from_secs(5));
        assert_eq!(config.lease_duration, Duration::from_secs(15));
        assert_eq!(config.eviction_interval, Duration::from_secs(60));
        let err = serde_json::from_str::<DiscoveryConfig>(r#"{"renew_intervall":"5s"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("renew_intervall"), "{err}");
        let err = serde_json::from_str::<DiscoveryConfig>(r#"{"renew_interval":"soon"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("soon") || err.contains("time unit"), "{err}");
    }

    #[test]
    fn validation_names_the_bad_key() {
        let key = |config: DiscoveryConfig| config.validate().unwrap_err().key;
        let base = DiscoveryConfig::default;
        assert_eq!(
            key(DiscoveryConfig {
                renew_interval: Duration::ZERO,
                ..base()
            }),
            "renew_interval"
        );
        assert_eq!(
            key(DiscoveryConfig {
                lease_duration: Duration::from_secs(30),
                ..base()
            }),
            "lease_duration"
        );
        assert_eq!(
            key(DiscoveryConfig {
                renewal_threshold: f64::NAN,
                ..base()
            }),
            "renewal_threshold"
        );
        assert_eq!(
            key(DiscoveryConfig {
                eviction_limit_fraction: 1.0,
                ..base()
            }),
            "eviction_limit_fraction"
        );
        assert_eq!(
            key(DiscoveryConfig {
                threshold_update_interval: Duration::from_secs(30 * 24 * 3600),
                ..base()
            }),
            "threshold_update_interval"
        );
        assert_eq!(
            key(DiscoveryConfig {
                max_instances: 0,
                ..base()
            }),
            "max_instances"
        );
    }
}
