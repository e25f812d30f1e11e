//! The `amazon` service: the case's HTTP API on `[amazon] http_port` (8100).
//!
//! Each area of the API (the cart; the inventory with its reservations, orders and
//! checkout; the catalog; recommendations; feature flags) is a module with a
//! `mount` or `router` function that opens the area's stores under the instance's
//! data directory, spawns its tasks in the instance's group, and returns its
//! routes; this service merges them on one listener served by the kit's
//! `serve_http` (`/health`, `/metrics`, request ids), behind one priority
//! shedder ([`route_priority`]): reservations and checkout are `critical`, the
//! cart `normal`, browsing and recommendations `low` — under overload the
//! storefront degrades from the edges inwards, and a purchase is the last thing
//! refused.
//!
//! One event bus per instance (`bus/` in its data dir) carries every area's
//! events: cart events and orders go out through each area's outbox, views are
//! published directly, and the recommender's speed and batch layers read all three.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::Request;
use casebook_kit::events::{EventBus, WalBus};
use casebook_kit::resilience::shed::{LoadShedLayer, LoadShedder, RequestMetaLayer, handle_error};
use casebook_kit::resilience::{Priority, set_priority};
use casebook_kit::resolve::Resolver;
use casebook_kit::runtime::{BoxFuture, InstanceContext, ServiceFactory, StartError, serve_http};
use casebook_kit::wal::WalConfig;
use tower::ServiceBuilder;
use tower::util::MapRequestLayer;

use crate::cart::{CartLine, CartLines, CartUnavailable};
use crate::config::AmazonConfig;
use crate::flags::{Flag, FlagStore, RECS_STRATEGY_FLAG, Variant};
use crate::orders::ORDERS_TOPIC;
use crate::recs::Recs;
use crate::recs::interaction::ADD_EVENT;
use crate::{cart, catalog, flags, inventory, recs};

/// The service's name.
pub const AMAZON_SERVICE: &str = "amazon";
/// The topic cart events go to.
pub const CART_TOPIC: &str = "amazon.cart";
/// The topic product views go to.
pub const VIEWS_TOPIC: &str = "amazon.views";

/// What every area is mounted with.
#[derive(Debug)]
pub struct AreaEnv<'a> {
    pub ctx: &'a InstanceContext,
    pub config: &'a AmazonConfig,
    /// How the API finds the cart replicas (and any other service).
    pub resolver: Arc<Resolver>,
    /// The instance's event bus.
    pub bus: Arc<dyn EventBus>,
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

/// The flags an instance starts with: the recommendation A/B test, half and half.
fn default_flags() -> Vec<Flag> {
    vec![Flag {
        name: RECS_STRATEGY_FLAG.to_owned(),
        description: "recommendation strategy: the speed+batch blend vs popular items".to_owned(),
        variants: vec![
            Variant {
                name: "blend".to_owned(),
                percent: 50,
            },
            Variant {
                name: "popular".to_owned(),
                percent: 50,
            },
        ],
        salt: String::new(),
    }]
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
            let dir = ctx.data_dir();
            let bus: Arc<dyn EventBus> = Arc::new(
                WalBus::open(dir.join("bus"), WalConfig::default()).map_err(anyhow::Error::from)?,
            );
            let env = AreaEnv {
                ctx,
                config: &self.config,
                resolver: self.resolver.clone(),
                bus: bus.clone(),
            };
            let flags = Arc::new(
                FlagStore::open(&dir.join("flags"), ctx.clock().clone(), &default_flags())
                    .map_err(anyhow::Error::from)?,
            );
            let (cart_router, cart_lines, coordinator) = if self.config.inventory_only {
                (Router::new(), Arc::new(NoCart) as Arc<dyn CartLines>, None)
            } else {
                let cart = cart::mount(&env).await?;
                (cart.router, cart.lines, Some(cart.coordinator))
            };
            let inventory = inventory::mount(&env, cart_lines).await?;
            let recs = Arc::new(Recs::open(
                &dir.join("recs"),
                vec![
                    (bus.clone(), CART_TOPIC.to_owned()),
                    (inventory.order_events.clone(), ORDERS_TOPIC.to_owned()),
                    (bus.clone(), VIEWS_TOPIC.to_owned()),
                ],
                Some(flags.clone()),
                ctx.clock().clone(),
            )?);
            if let Some(coordinator) = coordinator {
                let (recs, bus) = (recs.clone(), bus.clone());
                coordinator.observe_adds(cart::AddObserver(Arc::new(
                    move |user: &str, sku: &str| {
                        let (recs, bus) = (recs.clone(), bus.clone());
                        let (user, sku) = (user.to_owned(), sku.to_owned());
                        tokio::spawn(async move {
                            recs.record(bus.as_ref(), CART_TOPIC, ADD_EVENT, &user, &sku)
                                .await;
                        });
                    },
                )));
            }
            for source in 0..recs.sources() {
                ctx.spawn(recs.clone().run_speed(source, ctx.shutdown_token()));
            }
            ctx.spawn(
                recs.clone()
                    .run_batch(self.config.recs_batch_every, ctx.shutdown_token()),
            );
            let shedder = LoadShedder::new(
                AMAZON_SERVICE,
                self.config.shed.clone(),
                ctx.clock().clone(),
            )
            .map_err(|e| anyhow::anyhow!("amazon.shed: {e}"))?;
            let shed = ServiceBuilder::new()
                .layer(HandleErrorLayer::new(handle_error))
                .layer(RequestMetaLayer::new(ctx.clock().clone()))
                .layer(MapRequestLayer::new(route_priority))
                .layer(LoadShedLayer::shared(shedder));
            let router = cart_router
                .merge(inventory.router)
                .merge(catalog::router(
                    catalog::Catalog::new(self.config.catalog_skus),
                    Some(catalog::Views {
                        recs: recs.clone(),
                        bus: bus.clone(),
                        topic: VIEWS_TOPIC.to_owned(),
                    }),
                ))
                .merge(recs::api::router(recs))
                .merge(flags::api::router(flags));
            let router = if self.config.shed_enabled {
                router.layer(shed)
            } else {
                router
            };
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            serve_http(ctx, listener, router);
            Ok(address)
        })
    }
}

/// The route decides the priority (a client's `x-priority` header cannot raise
/// it): reservations and checkout are critical, the cart normal, browsing and
/// recommendations low; other routes (inventory admin, orders, flags) keep the
/// header's or the default, `normal`.
pub fn route_priority<B>(mut request: Request<B>) -> Request<B> {
    let path = request.uri().path();
    let priority = if path.starts_with("/v1/reservations") || path.starts_with("/v1/checkout/") {
        Some(Priority::Critical)
    } else if path.starts_with("/v1/carts/") {
        Some(Priority::Normal)
    } else if path.starts_with("/v1/products") || path.starts_with("/v1/recommendations/") {
        Some(Priority::Low)
    } else {
        None
    };
    if let Some(p) = priority {
        set_priority(&mut request, p);
    }
    request
}

/// How often the batch layer recomputes its model by default.
pub const DEFAULT_BATCH_EVERY: Duration = Duration::from_secs(600);

#[cfg(test)]
mod tests {
    use super::*;
    use casebook_kit::resilience::Priority;

    fn priority(path: &str) -> Option<Priority> {
        let request = route_priority(Request::builder().uri(path).body(()).unwrap());
        request.extensions().get::<Priority>().copied()
    }

    #[test]
    fn purchases_are_critical_carts_normal_browsing_low() {
        assert_eq!(priority("/v1/reservations"), Some(Priority::Critical));
        assert_eq!(
            priority("/v1/reservations/r1/confirm"),
            Some(Priority::Critical)
        );
        assert_eq!(priority("/v1/checkout/alice"), Some(Priority::Critical));
        assert_eq!(priority("/v1/carts/alice/items"), Some(Priority::Normal));
        assert_eq!(priority("/v1/products/sku-00001"), Some(Priority::Low));
        assert_eq!(priority("/v1/recommendations/alice"), Some(Priority::Low));
        assert_eq!(priority("/v1/flags/recs-strategy"), None);
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
