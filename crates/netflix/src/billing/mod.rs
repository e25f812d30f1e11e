//! Billing (`netflix-billing`, :8089): plans, subscriptions, invoices and
//! payments against a simulated payment provider ([`provider`]) that declines,
//! fails and times out at configured rates.
//!
//! | route | what it does |
//! |---|---|
//! | `GET /api/v1/billing/plans` | `{"plans": [...], "currency": "usd", "period_ms"}` |
//! | `POST /api/v1/billing/subscribe` | `{"plan"}` with a required `Idempotency-Key` → 201 `{"subscription", "invoice", "payment"}` |
//! | `GET /api/v1/billing/subscription` | `{"subscription": {...} \| null}` |
//! | `GET /api/v1/billing/invoices?limit=n` | `{"invoices": [...]}`, newest first (`limit` 1..=100, default 20) |
//! | `POST /api/v1/billing/cancel` | 200 `{"subscription"}` (status `canceled`); again → the same; none → 404 `no_subscription` |
//! | `GET /internal/v1/entitlement/{account}` | `{"account", "active", "plan"}` (not routed by the gateway) |
//!
//! The caller is `x-user-id` (set by the gateway only): missing → 401
//! `unauthenticated`.
//!
//! **A charge happens once**, however often the client, the gateway or a
//! replica retries, and across restarts:
//! 1. The kit's idempotency store ([`casebook_kit::idempotency`]), keys scoped
//!    per account, replays a finished subscribe byte-identical
//!    (`idempotent-replayed: true`), refuses the key with another body (422) or
//!    while it runs (409).
//! 2. The store's in-flight claims are not durable, and replicas do not share
//!    it, so the SQL store is the truth: the payment row (unique per account and
//!    key) is written before the provider is called, and the provider is always
//!    called with a key derived from that row. A retry after a crash, a restart
//!    or on another replica finds the row and charges under the same provider
//!    key, which the provider dedups.
//! 3. A charge that times out is reconciled: the provider is asked for the
//!    key's result, and charged again with the same key if it has none.
//!
//! Answers: 201 paid; 402 `payment_declined` (the subscription is not
//! changed; the same key replays the 402, a new key may try again); 502
//! `payment_provider_unavailable` / 504 `payment_provider_timeout` when the
//! provider gave no result after `provider.attempts` calls — not recorded, so
//! the same key resumes the same payment; 400 naming `plan`; 409
//! `already_subscribed` to an active plan. Only 201 and 402 are recorded under
//! the key (as Stripe does, a refused or unfinished request leaves the key
//! usable).
//!
//! Changing plan is a subscribe to another plan: a new invoice for a full
//! period from now, no proration and no refund of the old one. A subscription
//! whose period ended is `past_due` (renewal charges are not built); a
//! canceled one stays entitled until its period ends. Other headers than
//! `content-type` are not replayed (the kit's store keeps only that).
//!
//! Metrics: `casebook_netflix_billing_charges_total{outcome}` (`charged`,
//! `declined`, `unavailable`, `timeout`, `reconciled`: a timed-out charge whose
//! lookup found the result) and `casebook_netflix_billing_provider_seconds{call}`
//! (`charge`, `lookup`; on the injected clock).
//!
//! Grows with clients: the idempotency store (bounded by its `max_keys`, 24 h
//! retention), the SQL rows (one subscription per account, an invoice and a
//! payment per subscribe), the simulated provider's ledger (bounded by
//! [`provider::DEFAULT_MAX_CHARGES`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use casebook_kit::case::CaseEnv;
use casebook_kit::clock::SharedClock;
use casebook_kit::config::ConfigError;
use casebook_kit::idempotency::{IdempotencyConfig, IdempotencyStore};
use casebook_kit::runtime::{BoxFuture, InstanceContext, ServiceFactory, StartError, serve_http};
use casebook_kit::wal::{Wal, WalConfig};
use serde::{Deserialize, Serialize};

use crate::config::NetflixConfig;

pub mod api;
pub mod provider;
pub mod store;

use provider::{Pause, SimulatedProvider, Simulation};
use store::Store;

/// The service's name in discovery.
pub const BILLING_SERVICE: &str = "netflix-billing";
/// The most plans a configuration may list.
pub const MAX_PLANS: usize = 32;
/// The most provider calls one request makes.
pub const MAX_ATTEMPTS: u32 = 10;
/// The idempotency WAL's segment size (its records are small answers).
const WAL_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// How often the idempotency store drops responses past retention.
const COMPACT_EVERY: Duration = Duration::from_secs(600);

/// A plan on offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// `[a-z0-9_-]`, 1..=32 characters: what `subscribe` names.
    pub id: String,
    pub name: String,
    /// The price of one period, in cents.
    pub price_cents: i64,
    /// Concurrent streams.
    pub streams: u32,
    /// The best quality played (`720p`, `1080p`, `4k`).
    pub quality: String,
}

/// Basic, standard and premium.
pub fn default_plans() -> Vec<Plan> {
    let plan = |id: &str, name: &str, price_cents, streams, quality: &str| Plan {
        id: id.to_owned(),
        name: name.to_owned(),
        price_cents,
        streams,
        quality: quality.to_owned(),
    };
    vec![
        plan("basic", "Basic", 999, 1, "720p"),
        plan("standard", "Standard", 1549, 2, "1080p"),
        plan("premium", "Premium", 2299, 4, "4k"),
    ]
}

/// `[netflix.billing.provider]`: the simulated payment provider and how the
/// service calls it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    /// Share of charges declined (0..=1).
    pub decline_rate: f64,
    /// Share of calls answered "unavailable" (0..=1).
    pub failure_rate: f64,
    /// Share of charges that never answer, made or not (0..=1).
    pub timeout_rate: f64,
    /// The provider's latency per call.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// How long the service waits for one call.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Calls per request before answering 502/504 (1..=10).
    pub attempts: u32,
    /// The simulation's seed.
    pub seed: u64,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            decline_rate: 0.0,
            failure_rate: 0.0,
            timeout_rate: 0.0,
            latency: Duration::from_millis(20),
            // Attempts × timeout stays inside the gateway's 1 s route timeout.
            timeout: Duration::from_millis(250),
            attempts: 3,
            seed: 1,
        }
    }
}

impl ProviderConfig {
    /// The simulation these settings describe.
    pub fn simulation(&self) -> Simulation {
        Simulation {
            decline_rate: self.decline_rate,
            failure_rate: self.failure_rate,
            timeout_rate: self.timeout_rate,
            latency: self.latency,
            seed: self.seed,
            ..Simulation::default()
        }
    }
}

/// The `[netflix.billing]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BillingConfig {
    /// The SQL store: unset = SQLite at `<data_dir>/netflix/billing.db`;
    /// `postgres://…` or `mysql://…` (MariaDB, fleet mode).
    pub database: Option<String>,
    pub plans: Vec<Plan>,
    /// A billing period.
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    pub provider: ProviderConfig,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            database: None,
            plans: default_plans(),
            period: Duration::from_secs(30 * 24 * 3600),
            provider: ProviderConfig::default(),
        }
    }
}

impl BillingConfig {
    /// Checks every key; the error names the first one at fault under `key`.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let at = |name: &str| format!("{key}.{name}");
        if let Some(url) = &self.database
            && crate::sql::Dialect::of_url(url).is_none()
        {
            return Err(ConfigError::new(
                at("database"),
                "must be a sqlite://, postgres:// or mysql:// URL",
            ));
        }
        if self.plans.is_empty() || self.plans.len() > MAX_PLANS {
            return Err(ConfigError::new(
                at("plans"),
                format!("must list 1..={MAX_PLANS} plans"),
            ));
        }
        for (i, plan) in self.plans.iter().enumerate() {
            let at = |name: &str| format!("{key}.plans[{i}].{name}");
            let id_ok = (1..=32).contains(&plan.id.len())
                && plan.id.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !id_ok {
                return Err(ConfigError::new(
                    at("id"),
                    "must be 1..=32 characters of a-z, 0-9, _ and -",
                ));
            }
            if self.plans[..i].iter().any(|other| other.id == plan.id) {
                return Err(ConfigError::new(
                    at("id"),
                    format!("{:?} is listed twice", plan.id),
                ));
            }
            if plan.name.trim().is_empty() || plan.name.len() > 64 {
                return Err(ConfigError::new(at("name"), "must be 1..=64 characters"));
            }
            if !(1..=1_000_000).contains(&plan.price_cents) {
                return Err(ConfigError::new(
                    at("price_cents"),
                    "must be 1..=1000000 (cents)",
                ));
            }
            if !(1..=16).contains(&plan.streams) {
                return Err(ConfigError::new(at("streams"), "must be 1..=16"));
            }
            if plan.quality.is_empty() || plan.quality.len() > 16 {
                return Err(ConfigError::new(at("quality"), "must be 1..=16 characters"));
            }
        }
        if self.period < Duration::from_secs(60) || self.period > Duration::from_secs(366 * 86400) {
            return Err(ConfigError::new(at("period"), "must be 1m..=366days"));
        }
        let provider = &self.provider;
        let rates = [
            ("decline_rate", provider.decline_rate),
            ("failure_rate", provider.failure_rate),
            ("timeout_rate", provider.timeout_rate),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(ConfigError::new(
                    at(&format!("provider.{name}")),
                    "must be within 0..=1",
                ));
            }
        }
        if rates.iter().map(|(_, rate)| rate).sum::<f64>() > 1.0 {
            return Err(ConfigError::new(
                at("provider.timeout_rate"),
                "decline_rate + failure_rate + timeout_rate must not exceed 1",
            ));
        }
        if provider.latency > Duration::from_secs(60) {
            return Err(ConfigError::new(
                at("provider.latency"),
                "must be at most 60s",
            ));
        }
        if provider.timeout.is_zero() || provider.timeout > Duration::from_secs(60) {
            return Err(ConfigError::new(
                at("provider.timeout"),
                "must be within 1ms..=60s",
            ));
        }
        if !(1..=MAX_ATTEMPTS).contains(&provider.attempts) {
            return Err(ConfigError::new(
                at("provider.attempts"),
                format!("must be 1..={MAX_ATTEMPTS}"),
            ));
        }
        Ok(())
    }

    /// The store's URL: the configured one, or the embedded SQLite file.
    pub fn database_url(&self, data_dir: &Path) -> String {
        self.database
            .clone()
            .unwrap_or_else(|| crate::sql::sqlite_url(&data_dir.join("netflix").join("billing.db")))
    }
}

/// The billing service's state: what its HTTP API ([`api::router`]) serves.
#[derive(Debug)]
pub struct Billing {
    pub(crate) plans: Vec<Plan>,
    pub(crate) period: Duration,
    pub(crate) timeout: Duration,
    pub(crate) attempts: u32,
    pub(crate) store: Store,
    pub(crate) idempotency: IdempotencyStore,
    pub(crate) provider: Arc<SimulatedProvider>,
    pub(crate) clock: SharedClock,
    pub(crate) pause: Pause,
}

impl Billing {
    /// Opens the SQL store (`config.database`, or SQLite under `data_dir`) and
    /// the idempotency store (`<data_dir>/netflix/billing-idempotency`).
    pub async fn open(
        config: &BillingConfig,
        data_dir: &Path,
        provider: Arc<SimulatedProvider>,
        clock: SharedClock,
        pause: Pause,
    ) -> anyhow::Result<Self> {
        let store = Store::open(&config.database_url(data_dir))
            .await
            .context("opening the billing database")?;
        let wal_dir = data_dir.join("netflix").join("billing-idempotency");
        std::fs::create_dir_all(&wal_dir)
            .with_context(|| format!("creating {}", wal_dir.display()))?;
        let wal = Wal::open(
            &wal_dir,
            WalConfig {
                segment_bytes: WAL_SEGMENT_BYTES,
                ..WalConfig::default()
            },
        )
        .with_context(|| format!("opening the idempotency log in {}", wal_dir.display()))?;
        let idempotency = IdempotencyStore::open(wal, clock.clone(), IdempotencyConfig::default())
            .context("replaying the idempotency log")?;
        Ok(Self {
            plans: config.plans.clone(),
            period: config.period,
            timeout: config.provider.timeout,
            attempts: config.provider.attempts,
            store,
            idempotency,
            provider,
            clock,
            pause,
        })
    }

    /// The SQL store (tests and operators read payments from it).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Closes the SQL pool.
    pub async fn close(&self) {
        self.store.close().await;
    }
}

/// The platform's factory for `netflix-billing`.
#[derive(Debug)]
pub struct BillingService {
    config: BillingConfig,
    data_dir: PathBuf,
    /// Outlives the instance's restarts, as a real provider would.
    provider: Arc<SimulatedProvider>,
}

impl BillingService {
    pub fn new(config: &NetflixConfig, env: &CaseEnv) -> Result<Self, ConfigError> {
        config.billing.validate("netflix.billing")?;
        Ok(Self {
            provider: Arc::new(SimulatedProvider::new(
                config.billing.provider.simulation(),
                Pause::tokio(),
            )),
            config: config.billing.clone(),
            data_dir: env.data_dir.clone(),
        })
    }
}

impl ServiceFactory for BillingService {
    fn name(&self) -> &str {
        BILLING_SERVICE
    }

    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            let billing = Arc::new(
                Billing::open(
                    &self.config,
                    &self.data_dir,
                    self.provider.clone(),
                    ctx.clock().clone(),
                    Pause::tokio(),
                )
                .await?,
            );
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            ctx.spawn(compact(billing.idempotency.clone(), ctx.shutdown_token()));
            serve_http(ctx, listener, api::router(billing));
            Ok(address)
        })
    }
}

/// Drops expired idempotent responses every [`COMPACT_EVERY`].
async fn compact(store: IdempotencyStore, shutdown: tokio_util::sync::CancellationToken) {
    let mut ticks = tokio::time::interval(COMPACT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticks.tick() => {
                if let Err(error) = store.compact() {
                    tracing::warn!(%error, "billing idempotency compaction failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_errors_name_the_key() {
        BillingConfig::default()
            .validate("netflix.billing")
            .unwrap();
        type Breakage = Box<dyn Fn(&mut BillingConfig)>;
        let cases: Vec<(Breakage, &str)> = vec![
            (
                Box::new(|c| c.provider.failure_rate = 1.5),
                "netflix.billing.provider.failure_rate",
            ),
            (
                Box::new(|c| c.provider.timeout_rate = -0.1),
                "netflix.billing.provider.timeout_rate",
            ),
            (
                Box::new(|c| {
                    c.provider.decline_rate = 0.6;
                    c.provider.timeout_rate = 0.6;
                }),
                "netflix.billing.provider.timeout_rate",
            ),
            (
                Box::new(|c| c.provider.timeout = Duration::ZERO),
                "netflix.billing.provider.timeout",
            ),
            (
                Box::new(|c| c.provider.attempts = 0),
                "netflix.billing.provider.attempts",
            ),
            (
                Box::new(|c| c.plans[1].price_cents = 0),
                "netflix.billing.plans[1].price_cents",
            ),
            (
                Box::new(|c| c.plans[2].id = "basic".into()),
                "netflix.billing.plans[2].id",
            ),
            (
                Box::new(|c| c.plans[0].id = "Basic Plan".into()),
                "netflix.billing.plans[0].id",
            ),
            (Box::new(|c| c.plans.clear()), "netflix.billing.plans"),
            (
                Box::new(|c| c.database = Some("redis://x".into())),
                "netflix.billing.database",
            ),
            (
                Box::new(|c| c.period = Duration::from_secs(1)),
                "netflix.billing.period",
            ),
        ];
        for (break_it, key) in cases {
            let mut config = BillingConfig::default();
            break_it(&mut config);
            let error = config.validate("netflix.billing").unwrap_err();
            assert_eq!(error.key(), key, "{error}");
        }
    }

    #[test]
    fn the_table_reads_with_durations_and_default_plans() {
        let config: BillingConfig = serde_json::from_value(serde_json::json!({
            "period": "7days",
            "provider": { "failure_rate": 0.1, "timeout": "500ms" },
        }))
        .unwrap();
        assert_eq!(config.period, Duration::from_secs(7 * 86400));
        assert_eq!(config.provider.timeout, Duration::from_millis(500));
        assert_eq!(config.plans, default_plans());
        config.validate("netflix.billing").unwrap();
    }
}
