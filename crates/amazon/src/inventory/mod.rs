//! Inventory and reservations that never oversell and lose nothing acknowledged;
//! orders and checkout on top (in [`crate::orders`]).
//!
//! | module | what it is |
//! |---|---|
//! | [`model`] | SKUs, stock levels, reservations, outcomes, errors |
//! | [`store`] | [`InventoryStore`]: the seam a PostgreSQL store implements later |
//! | [`embedded`] | [`WalInventory`]: sharded locks, the kit's WAL (group commit), snapshots |
//! | [`http`] | `/v1/inventory`, `/v1/reservations` |
//!
//! # Guarantees (of the area, whatever the store)
//! - Never oversell: a SKU's `available` never goes below zero, and units move
//!   only between available, reserved and confirmed (tested by the conservation
//!   checker in [`crate::check`] over histories with `kill -9`).
//! - Nothing acknowledged is lost: every reserve, confirm, release and expiry is
//!   durable before any answer reflects it.
//! - One effect per idempotency key, and the first answer replayed to every retry,
//!   across restarts (the key is written with the reservation).
//! - Expiry on the injected clock: a sweep every `sweep_every`, and lazily by any
//!   request that needs the stock of a due reservation or looks at one.
//!
//! # Not guaranteed
//! - Reservations and keys ended more than `reservation_retention` ago are
//!   forgotten: their ids answer 404 and their keys execute anew.
//! - Throughput on one SKU is bounded by one lock; the WAL's group commit is what
//!   keeps it far above one `fdatasync` per reservation.

pub mod embedded;
pub mod http;
pub mod model;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use casebook_kit::runtime::StartError;
use casebook_kit::wal::WalConfig;

pub use self::embedded::{EmbeddedConfig, WalInventory};
pub use self::store::InventoryStore;
use crate::cart::CartLines;
use crate::config::AmazonConfig;
use crate::service::AreaEnv;

/// Expiries per sweep (the rest wait for the next tick).
const SWEEP_BUDGET: usize = 10_000;
/// How often ended reservations and old keys are forgotten.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// The embedded store's configuration from `[amazon]`.
pub fn embedded_config(config: &AmazonConfig) -> EmbeddedConfig {
    EmbeddedConfig {
        shards: config.inventory_shards,
        max_reservations: config.max_reservations,
        max_keys: config.max_idempotency_keys,
        retention: config.reservation_retention,
        snapshot_after_records: config.snapshot_after_records,
        wal: WalConfig::default(),
    }
}

/// The API's limits from `[amazon]`.
pub fn limits(config: &AmazonConfig) -> http::Limits {
    http::Limits {
        max_line_qty: config.max_line_qty,
        default_ttl: config.reservation_ttl,
        max_ttl: config.max_reservation_ttl,
    }
}

/// Opens the inventory (under the instance's data directory, `inventory/`), starts
/// its sweeper, mounts orders and checkout on it, and returns the routes.
pub async fn mount(
    env: &AreaEnv<'_>,
    cart: Arc<dyn CartLines>,
) -> Result<MountedInventory, StartError> {
    let dir = env.ctx.data_dir().join("inventory");
    let clock = env.ctx.clock().clone();
    let config = embedded_config(env.config);
    let inventory = tokio::task::spawn_blocking(move || WalInventory::open(&dir, config, clock))
        .await
        .map_err(anyhow::Error::from)??;
    let recovery = inventory.recovery();
    tracing::info!(
        snapshot_at = ?recovery.snapshot_at,
        replayed = recovery.replayed,
        skus = recovery.skus,
        reservations = recovery.reservations,
        keys = recovery.keys,
        "inventory recovered"
    );
    let store: Arc<dyn InventoryStore> = Arc::new(inventory.clone());
    let (orders, order_events) = crate::orders::mount(env, store.clone(), cart).await?;
    spawn_maintenance(env, inventory);
    let api = http::InventoryApi {
        store,
        limits: limits(env.config),
    };
    Ok(MountedInventory {
        router: http::router(api).merge(orders),
        order_events,
    })
}

/// The inventory area as the `amazon` service mounts it.
#[derive(Debug)]
pub struct MountedInventory {
    /// Stock, reservations, checkout and orders.
    pub router: Router,
    /// Where `OrderPlaced` events are relayed (the recommender reads them).
    pub order_events: Arc<dyn casebook_kit::events::EventBus>,
}

/// The sweeper: expiries every `sweep_every`, forgetting every minute, a snapshot
/// whenever enough records followed the last one.
fn spawn_maintenance(env: &AreaEnv<'_>, inventory: WalInventory) {
    let stop = env.ctx.shutdown_token();
    let every = env.config.sweep_every;
    env.ctx.spawn(async move {
        let mut sweep = tokio::time::interval(every);
        let mut purge = tokio::time::interval(PURGE_EVERY);
        for timer in [&mut sweep, &mut purge] {
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = sweep.tick() => {
                    if let Err(error) = inventory.expire_due(SWEEP_BUDGET).await {
                        tracing::warn!(%error, "reservation sweep failed");
                    }
                    if inventory.snapshot_due() {
                        match inventory.snapshot().await {
                            Ok(at) => tracing::debug!(at, "inventory snapshot written"),
                            Err(error) => tracing::warn!(%error, "inventory snapshot failed"),
                        }
                    }
                    metrics::gauge!("amazon_reservations_held").set(inventory.held() as f64);
                }
                _ = purge.tick() => {
                    let (reservations, keys) = inventory.purge();
                    tracing::debug!(reservations, keys, "forgot ended reservations and old keys");
                }
            }
        }
    });
}
