//! The `amazon` service: the case's HTTP API on `[amazon] http_port` (8100).
//!
//! Each area of the API (the cart, the inventory with its reservations, orders and
//! checkout) is a module with a `mount` function that opens the area's stores under
//! the instance's data directory, spawns its tasks in the instance's group, and
//! returns its routes; this service merges them on one listener served by the
//! kit's `serve_http` (`/health`, `/metrics`, request ids).

use std::net::SocketAddr;
use std::sync::Arc;

use casebook_kit::resolve::Resolver;
use casebook_kit::runtime::{BoxFuture, InstanceContext, ServiceFactory, StartError, serve_http};

use crate::cart::{CartLine, CartLines, CartUnavailable};
use crate::config::AmazonConfig;
use crate::{cart, inventory};

/// The service's name.
pub const AMAZON_SERVICE: &str = "amazon";

/// What every area is mounted with.
#[derive(Debug)]
pub struct AreaEnv<'a> {
    pub ctx: &'a InstanceContext,
    pub config: &'a AmazonConfig,
    /// How the API finds the cart replicas (and any other service).
    pub resolver: Arc<Resolver>,
}

/// The `amazon` service's factory.
#[derive(Debug)]
pub struct AmazonService {
    config: AmazonConfig,
    resolver: Arc<Resolver>,
}

impl AmazonService {
    pub fn new(config: AmazonConfig, resolver: Arc<Resolver>) -> Self {
        Self { config, resolver }
    }
}

impl ServiceFactory for AmazonService {
    fn name(&self) -> &str {
        AMAZON_SERVICE
    }

    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            let env = AreaEnv {
                ctx,
                config: &self.config,
                resolver: self.resolver.clone(),
            };
            let router = if self.config.inventory_only {
                inventory::mount(&env, Arc::new(NoCart)).await?
            } else {
                let cart = cart::mount(&env).await?;
                let inventory = inventory::mount(&env, cart.lines.clone()).await?;
                cart.router.merge(inventory)
            };
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            serve_http(ctx, listener, router);
            Ok(address)
        })
    }
}

/// The cart when `amazon.inventory_only` leaves it out: checkout answers 503
/// `cart_unavailable`.
#[derive(Debug)]
struct NoCart;

impl CartLines for NoCart {
    fn lines<'a>(
        &'a self,
        _user: &'a str,
    ) -> BoxFuture<'a, Result<Vec<CartLine>, CartUnavailable>> {
        Box::pin(async {
            Err(CartUnavailable(
                "the cart is not served (amazon.inventory_only)".into(),
            ))
        })
    }

    fn remove_bought<'a>(
        &'a self,
        _user: &'a str,
        _bought: &'a [CartLine],
    ) -> BoxFuture<'a, Result<(), CartUnavailable>> {
        Box::pin(async {
            Err(CartUnavailable(
                "the cart is not served (amazon.inventory_only)".into(),
            ))
        })
    }
}
