//! The gateway as a platform service: a [`ServiceFactory`] whose instances serve
//! the proxy, `/admin/routes`, `/health` and `/metrics` through the kit's
//! `serve_http` (request ids and trace context, connection bound, header timeout).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::routing::get;
use casebook_kit::config::ConfigError;
use casebook_kit::resilience::breaker::BreakerRegistry;
use casebook_kit::resolve::Resolver;
use casebook_kit::runtime::{BoxFuture, InstanceContext, ServiceFactory, StartError, serve_http};
use casebook_kit::topology::Placement;
use http::{Request, Response};
use parking_lot::Mutex;

use super::admin::AdminView;
use super::auth::{ApiKeys, Authenticator, JwtKey, TokenIssuer, TokenVerifier};
use super::config::GatewayConfig;
use super::endpoint::{Gateway, RouteDeps};
use super::filters::{FilterChain, FilterDeps};
use super::proxy::proxy_client;
use super::routes::ADMIN_ROUTES_PATH;

/// The gateway service: one configuration, any number of instances.
#[derive(Debug)]
pub struct GatewayService {
    config: GatewayConfig,
    resolver: Arc<Resolver>,
    key: Arc<JwtKey>,
    breakers: Option<BreakerRegistry>,
    /// The core of the instance started last (tests and benchmarks read it).
    last: Mutex<Option<Arc<Gateway>>>,
}

impl GatewayService {
    /// A gateway routing by `config`, resolving services through `resolver`, and
    /// verifying tokens signed with `key`. `config` is validated (under the key
    /// `gateway`; a case validates its own table first, under its own key).
    pub fn new(
        config: GatewayConfig,
        resolver: Arc<Resolver>,
        key: Arc<JwtKey>,
    ) -> Result<Self, ConfigError> {
        config.validate("gateway")?;
        Ok(Self {
            config,
            resolver,
            key,
            breakers: None,
            last: Mutex::new(None),
        })
    }

    /// Keeps the routes' breakers in `registry` (default: a new one per instance,
    /// on the instance's clock), e.g. to serve them at `/api/breakers` too.
    pub fn with_breakers(mut self, registry: BreakerRegistry) -> Self {
        self.breakers = Some(registry);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Mints tokens the gateway accepts (the user service's half), on `clock`.
    pub fn issuer(&self, clock: casebook_kit::clock::SharedClock) -> TokenIssuer {
        TokenIssuer::new(self.key.clone(), &self.config.jwt, clock)
    }

    /// The core of the instance started last, if any.
    pub fn gateway(&self) -> Option<Arc<Gateway>> {
        self.last.lock().clone()
    }

    /// The gateway core of an instance at `near`, on `clock`.
    pub fn build(
        &self,
        near: Placement,
        clock: casebook_kit::clock::SharedClock,
    ) -> anyhow::Result<Gateway> {
        let verifier = TokenVerifier::new(self.key.clone(), &self.config.jwt, clock.clone());
        let deps = FilterDeps {
            authenticator: Authenticator::new(verifier, ApiKeys::new(&self.config.api_keys)),
            clock: clock.clone(),
        };
        let chain = FilterChain::build(&self.config, &deps)?;
        let routes = RouteDeps {
            client: proxy_client(),
            resolver: self.resolver.clone(),
            near,
            breakers: self
                .breakers
                .clone()
                .unwrap_or_else(|| BreakerRegistry::new(clock.clone())),
            clock,
        };
        Gateway::new(&self.config, chain, &routes)
    }
}

/// The router of one gateway: `/admin/routes`, and every other path proxied.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route(ADMIN_ROUTES_PATH, get(admin_routes))
        .fallback(proxy)
        .with_state(gateway)
}

async fn admin_routes(State(gateway): State<Arc<Gateway>>) -> axum::Json<AdminView> {
    axum::Json(AdminView::of(&gateway))
}

async fn proxy(State(gateway): State<Arc<Gateway>>, request: Request<Body>) -> Response<Body> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), |c| c.0);
    gateway.handle(request, peer).await
}

impl ServiceFactory for GatewayService {
    fn name(&self) -> &str {
        &self.config.service
    }

    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            let info = ctx.info();
            let near = Placement {
                region: info.region,
                zone: info.zone,
            };
            let gateway = Arc::new(self.build(near, ctx.clock().clone())?);
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            *self.last.lock() = Some(gateway.clone());
            serve_http(ctx, listener, router(gateway));
            Ok(address)
        })
    }
}
