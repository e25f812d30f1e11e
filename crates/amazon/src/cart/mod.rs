//! The cart: "add to cart can never be forgotten or rejected" (Dynamo).
//!
//! An add-wins CRDT map from SKU to quantity in the manner of Riak's ORSWOT
//! ([`crdt`]), held by one replica per zone of the region (`amazon-cart`,
//! [`replica`]), each durable on the kit's WAL ([`store`]), converging by push on
//! write, hinted handoff and anti-entropy; and the coordinator behind `/v1/carts`
//! in the `amazon` service ([`coordinator`], [`api`]), which sends a write to the
//! first replica that can take it and merges what the replicas answer to a read.
//!
//! | module | what it is |
//! |---|---|
//! | [`crdt`] | the CRDT: actors, dots, version vectors, lines, merge, the quantity rule |
//! | [`model`] | ids, quantities, the context token, the cart view, error codes |
//! | [`config`] | `[amazon.cart]` |
//! | [`store`] | a replica's durable store: log (outbox), snapshots, digest, hints |
//! | [`hints`] | the bounded hint index |
//! | [`wire`] | the internal API between coordinator and replicas |
//! | [`peers`] | finding and calling replicas (discovery, the kit's stack) |
//! | [`replica`] | the `amazon-cart` service: routes, push, handoff, anti-entropy |
//! | [`coordinator`] | reads and writes over the replicas; [`CartLines`] for checkout |
//! | [`api`] | `/v1/carts` |
//! | [`fuzzing`] | the invariants the cart's fuzz target checks |
//!
//! Guarantees, in short (each module says more, `docs/notes/amazon/cart.md` says
//! why): an acknowledged write is durable on the replica that took it; an add is
//! refused only when no replica of the region can take it (503 `cart_unavailable`);
//! a concurrent add and remove keep the item; an observed remove never brings it
//! back; every acknowledged write reaches every replica (push, then hints, then
//! anti-entropy); every change's events (`ItemAdded`, `QuantityChanged`,
//! `ItemRemoved`) are in the same log record as the change and published at least
//! once to the replica's bus (topic `amazon.cart`).

pub mod api;
pub mod config;
pub mod coordinator;
pub mod crdt;
pub mod fuzzing;
pub mod hints;
pub mod model;
pub mod peers;
pub mod replica;
pub mod store;
pub mod wire;

use std::fmt;
use std::sync::Arc;

use axum::Router;
use casebook_kit::runtime::{BoxFuture, StartError};
use casebook_kit::topology::Placement;
use serde::{Deserialize, Serialize};

use crate::service::AreaEnv;

pub use config::CartConfig;
pub use coordinator::{AddObserver, Coordinator};
pub use replica::{CartReplicaService, Replica};

/// One line of a cart as checkout sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLine {
    pub sku: String,
    pub qty: u32,
}

/// The cart could not be read or written (no replica answered).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the cart is unavailable: {0}")]
pub struct CartUnavailable(pub String);

/// What checkout needs of the cart: the lines a user sees now, and removing the
/// lines just bought (an observed remove: an add made concurrently survives).
pub trait CartLines: Send + Sync + fmt::Debug + 'static {
    fn lines<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Vec<CartLine>, CartUnavailable>>;
    fn remove_bought<'a>(
        &'a self,
        user: &'a str,
        bought: &'a [CartLine],
    ) -> BoxFuture<'a, Result<(), CartUnavailable>>;
}

/// The cart area as the `amazon` service mounts it.
#[derive(Debug)]
pub struct MountedCart {
    pub router: Router,
    pub lines: Arc<dyn CartLines>,
    pub coordinator: Arc<Coordinator>,
}

/// Opens the cart's coordinator and returns its routes: it finds the replicas
/// through discovery, as seen from the API's own zone.
pub async fn mount(env: &AreaEnv<'_>) -> Result<MountedCart, StartError> {
    let config = env.config.cart.clone();
    let info = env.ctx.info();
    let directory = peers::ReplicaDirectory::new(
        env.resolver.clone(),
        Placement {
            region: info.region,
            zone: info.zone,
        },
        None,
        env.ctx.clock().clone(),
        config.discovery_refresh,
        config.replica_timeout,
    );
    let coordinator = Arc::new(Coordinator::new(directory, config, Some(env.ctx.clone())));
    // Keeps the replica list current, so no request waits for discovery.
    let refresher = coordinator.clone();
    let shutdown = env.ctx.shutdown_token();
    env.ctx.spawn(async move {
        let mut poke = tokio::time::interval(replica::POKE);
        poke.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = poke.tick() => refresher.refresh_replicas_if_stale().await,
            }
        }
    });
    Ok(MountedCart {
        router: api::router(coordinator.clone()),
        lines: coordinator.clone(),
        coordinator,
    })
}

/// The `amazon-cart` service's name: one replica per zone of the first region.
pub const CART_SERVICE: &str = "amazon-cart";
