//! Orders and checkout: a cart becomes an order through reservations, and the
//! order goes out as an `OrderPlaced` event through the kit's outbox.
//!
//! | module | what it is |
//! |---|---|
//! | [`store`] | [`Order`], [`OrderStore`]: the seam a PostgreSQL store implements later |
//! | [`embedded`] | [`OutboxOrders`]: the kit's outbox as the primary store, snapshots, the relay to the kit's event bus |
//! | [`checkout`] | [`Checkout`]: reserve all lines → place the order (pivot) → confirm → clean the cart |
//! | [`http`] | `/v1/checkout/{user}`, `/v1/orders/{id}`, `/v1/users/{user}/orders` |

pub mod checkout;
pub mod embedded;
pub mod http;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use casebook_kit::runtime::StartError;
use casebook_kit::wal::WalConfig;

pub use self::checkout::{Checkout, CheckoutError, CheckoutLimits};
pub use self::embedded::{ORDERS_TOPIC, OutboxOrders};
pub use self::store::{Order, OrderLine, OrderStore};
use crate::cart::CartLines;
use crate::inventory::InventoryStore;
use crate::service::AreaEnv;

/// How often unconfirmed orders are confirmed again and old keys forgotten.
const MAINTAIN_EVERY: Duration = Duration::from_secs(5);

/// Opens the order store (`orders/` under the instance's data directory), confirms
/// what a crash left unconfirmed, starts the relay and maintenance, and returns the
/// routes with the bus `OrderPlaced` events are relayed to (topic [`ORDERS_TOPIC`]).
pub async fn mount(
    env: &AreaEnv<'_>,
    inventory: Arc<dyn InventoryStore>,
    cart: Arc<dyn CartLines>,
) -> Result<(Router, Arc<dyn casebook_kit::events::EventBus>), StartError> {
    let dir = env.ctx.data_dir().join("orders");
    let clock = env.ctx.clock().clone();
    let retention = env.config.reservation_retention;
    let orders = tokio::task::spawn_blocking(move || {
        OutboxOrders::open(&dir, WalConfig::default(), clock, retention)
    })
    .await
    .map_err(anyhow::Error::from)??;
    let store: Arc<dyn OrderStore> = Arc::new(orders.clone());
    let events: Arc<dyn casebook_kit::events::EventBus> = Arc::new(orders.bus().clone());
    let checkout = Arc::new(Checkout::new(
        inventory,
        store.clone(),
        cart,
        CheckoutLimits {
            max_lines: env.config.max_checkout_lines,
            max_line_qty: env.config.max_line_qty,
            hold: env.config.reservation_ttl,
        },
    ));
    // Before serving: an order placed before a crash gets its stock confirmed first.
    let reconciled = checkout.reconcile().await;
    tracing::info!(reconciled, "orders recovered");
    env.ctx
        .spawn(orders.clone().relay(env.ctx.shutdown_token()));
    let stop = env.ctx.shutdown_token();
    let maintained = checkout.clone();
    env.ctx.spawn(async move {
        let mut every = tokio::time::interval(MAINTAIN_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            maintained.reconcile().await;
            orders.purge();
            if orders.snapshot_due() {
                let snapshotting = orders.clone();
                match tokio::task::spawn_blocking(move || snapshotting.snapshot()).await {
                    Ok(Ok(at)) => tracing::debug!(at, "orders snapshot written"),
                    Ok(Err(error)) => {
                        tracing::warn!(error = %format!("{error:#}"), "orders snapshot failed")
                    }
                    Err(error) => tracing::warn!(%error, "orders snapshot task failed"),
                }
            }
        }
    });
    let router = http::router(http::OrdersApi {
        checkout,
        orders: store,
    });
    Ok((router, events))
}
