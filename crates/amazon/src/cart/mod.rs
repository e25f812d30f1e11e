//! The cart: an add-wins CRDT map (ORSWOT-style) on one replica per zone, and the
//! coordinator behind `/v1/carts` in the `amazon` service.
//!
//! (Skeleton: the cart helper fills this module.)

use std::fmt;
use std::sync::Arc;

use axum::Router;
use casebook_kit::runtime::{BoxFuture, StartError};
use serde::{Deserialize, Serialize};

use crate::service::AreaEnv;

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
}

/// Opens the cart's coordinator and returns its routes.
pub async fn mount(_env: &AreaEnv<'_>) -> Result<MountedCart, StartError> {
    Err(StartError::Other(anyhow::anyhow!(
        "the cart is not built yet"
    )))
}

/// The `amazon-cart` service's name: one replica per zone of the first region.
pub const CART_SERVICE: &str = "amazon-cart";

/// The `amazon-cart` replica's factory.
#[derive(Debug)]
pub struct CartReplicaService {
    pub config: crate::config::AmazonConfig,
    pub resolver: Arc<casebook_kit::resolve::Resolver>,
}

impl casebook_kit::runtime::ServiceFactory for CartReplicaService {
    fn name(&self) -> &str {
        CART_SERVICE
    }

    fn start<'a>(
        &'a self,
        _ctx: &'a casebook_kit::runtime::InstanceContext,
    ) -> BoxFuture<'a, Result<std::net::SocketAddr, StartError>> {
        Box::pin(async move {
            Err(StartError::Other(anyhow::anyhow!(
                "the cart is not built yet"
            )))
        })
    }
}
