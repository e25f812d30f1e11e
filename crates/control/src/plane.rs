//! The control plane as a service the platform runs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use casebook_kit::config::ConfigError;
use casebook_kit::resilience::breaker::{BreakerRegistry, breakers_router};
use casebook_kit::runtime::{
    BoxFuture, InstanceContext, ServiceFactory, StartError, WeakPlatform, serve_http,
};
use casebook_kit::topology::Topology;
use serde::{Deserialize, Serialize};

use crate::access::{self, AccessPolicy, Token};
use crate::admin::{self, AdminState};
use crate::alerts::{self, Alerts, AlertsConfig};
use crate::autoscaler::{self, Autoscaler, AutoscalerConfig, StoreSignal};
use crate::chaos::{self, Chaos, ChaosConfig, LatencyInjector};
use crate::deploy::{self, DeployConfig, Deployer, PlatformFleet, StoreMetrics};
use crate::discovery::{self, DiscoveryConfig, Registry};
use crate::metrics_store::{self, MetricsStore, MetricsStoreConfig};
use crate::toxiproxy::{self, Toxiproxy};

/// The control plane's service name.
pub const CONTROL_SERVICE: &str = "control";

/// The `[control]` table of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Address the control plane (and, by default, every service) binds.
    pub host: IpAddr,
    /// The control plane's port.
    pub port: u16,
    /// The zone the control plane's instance is placed in; the first zone of the
    /// first region when unset.
    pub zone: Option<String>,
    /// The installation's token (see `docs/security.md`). Normally unset here: it is
    /// read from (or created in) `DATA_DIR/control.token`; set it (e.g. with
    /// `CASEBOOK_CONTROL__TOKEN`) to call a control plane whose data directory this
    /// process cannot read. Never printed by `casebook config`.
    #[serde(skip_serializing)]
    pub token: Option<Token>,
    /// Binding beyond loopback serves the admin API without TLS to the network; it
    /// is refused unless this is `true`.
    pub allow_insecure_bind: bool,
    /// Ports the admin API may start instances on (besides port 0 and the ports of
    /// instances this platform has run), e.g. `"20000-29999"`; never below 1024.
    pub instance_ports: PortRange,
    /// The port of the Toxiproxy-compatible API, on `host`. Unset: 8474, or a free
    /// port when the control plane itself runs on a free port (port 0). `0`: a free
    /// port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toxiproxy_port: Option<u16>,
}

/// An inclusive range of ports, written `"LOW-HIGH"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
}

/// The lowest port the admin API ever starts an instance on (below are privileged).
pub const LOWEST_INSTANCE_PORT: u16 = 1024;

impl PortRange {
    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.low, self.high)
    }
}

impl TryFrom<String> for PortRange {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let parse = |part: &str| {
            part.trim()
                .parse::<u16>()
                .map_err(|_| format!("`{text}` is not `LOW-HIGH` with ports 1024-65535"))
        };
        let (low, high) = text
            .split_once('-')
            .ok_or_else(|| format!("`{text}` is not `LOW-HIGH`, e.g. `20000-29999`"))?;
        let range = PortRange {
            low: parse(low)?,
            high: parse(high)?,
        };
        if range.low < LOWEST_INSTANCE_PORT {
            return Err(format!(
                "`{text}` reaches below {LOWEST_INSTANCE_PORT} (privileged ports)"
            ));
        }
        if range.low > range.high {
            return Err(format!("`{text}`: LOW is above HIGH"));
        }
        Ok(range)
    }
}

impl From<PortRange> for String {
    fn from(range: PortRange) -> String {
        range.to_string()
    }
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 7700,
            zone: None,
            token: None,
            allow_insecure_bind: false,
            instance_ports: PortRange {
                low: 20000,
                high: 29999,
            },
            toxiproxy_port: None,
        }
    }
}

impl ControlConfig {
    /// Where the control plane listens.
    pub fn listen(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// Checks what serde cannot: a bind beyond loopback needs `allow_insecure_bind`.
    /// The error names the dotted key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_bind(self.host, self.allow_insecure_bind)
    }

    /// The Toxiproxy API's port when the control plane listens on `control_port`
    /// (see [`ControlConfig::toxiproxy_port`]).
    pub fn toxiproxy_port_for(&self, control_port: u16) -> u16 {
        match self.toxiproxy_port {
            Some(port) => port,
            None if control_port == 0 => 0,
            None => crate::toxiproxy::DEFAULT_PORT,
        }
    }

    /// The control plane's base URL as other services reach it.
    pub fn url(&self) -> String {
        let address = casebook_kit::resolve::callable(SocketAddr::new(self.host, self.port));
        format!("http://{address}")
    }
}

/// Refuses a bind beyond loopback unless forced: the admin API has no TLS.
fn check_bind(host: IpAddr, allow_insecure_bind: bool) -> Result<(), ConfigError> {
    if host.is_loopback() || allow_insecure_bind {
        return Ok(());
    }
    Err(ConfigError::new(
        "control.host",
        format!(
            "{host} is beyond loopback and the control plane has no TLS: its token and \
             admin API would cross the network in clear; bind 127.0.0.1, or set \
             control.allow_insecure_bind = true to do it anyway"
        ),
    ))
}

/// What the control plane is configured with.
#[derive(Debug, Clone)]
pub struct ControlSettings {
    pub topology: Topology,
    pub discovery: DiscoveryConfig,
    pub metrics_store: MetricsStoreConfig,
    /// The default drain deadline of stops it is asked for.
    pub drain: Duration,
    /// The `[control]` table: token, bind rule, instance ports.
    pub control: ControlConfig,
    /// Services whose main address speaks HTTP (the index links their `/health`);
    /// the control plane is always one.
    pub http_services: Vec<String>,
    /// The `[autoscaler]` table: policies, schedule, loop interval.
    pub autoscaler: AutoscalerConfig,
    /// The `[chaos]` table: experiment history, the monkey.
    pub chaos: ChaosConfig,
    /// Latency Monkey's way to a fault proxy; `None`: this control plane's own.
    pub latency_injector: Option<Arc<dyn LatencyInjector>>,
    /// The `[deploy]` table: canary share, analysis, judge.
    pub deploy: DeployConfig,
    /// The `[alerts]` table: rules and their runbooks.
    pub alerts: AlertsConfig,
}

/// Every table at its default, the default topology, a 10 s drain (the shipped
/// `shutdown.drain_timeout`), this plane's own fault proxy: what tests start from.
impl Default for ControlSettings {
    fn default() -> Self {
        Self {
            topology: Topology::default(),
            discovery: DiscoveryConfig::default(),
            metrics_store: MetricsStoreConfig::default(),
            drain: Duration::from_secs(10),
            control: ControlConfig::default(),
            http_services: Vec::new(),
            autoscaler: AutoscalerConfig::default(),
            chaos: ChaosConfig::default(),
            latency_injector: None,
            deploy: DeployConfig::default(),
            alerts: AlertsConfig::default(),
        }
    }
}

/// The control plane service.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    platform: WeakPlatform,
    settings: ControlSettings,
}

impl ControlPlane {
    /// A control plane administering `platform` (held weakly: the platform holds
    /// the control plane).
    pub fn new(platform: WeakPlatform, settings: ControlSettings) -> Self {
        Self { platform, settings }
    }

    fn router(&self, parts: Parts) -> Router {
        let Parts {
            registry,
            store,
            autoscaler,
            chaos,
            deployer,
            alerts,
            own_instance_id,
        } = parts;
        admin::router(AdminState {
            platform: self.platform.clone(),
            topology: self.settings.topology.clone(),
            default_drain: self.settings.drain,
            registry: registry.clone(),
            own_instance_id,
            instance_ports: self.settings.control.instance_ports,
            http_services: self.settings.http_services.clone(),
        })
        .merge(discovery::api::router(registry))
        .merge(metrics_store::api::router(store))
        .merge(autoscaler::api::router(autoscaler))
        .merge(chaos::api::router(chaos))
        .merge(deploy::api::router(deployer))
        .merge(alerts::api::router(alerts))
        // The Hystrix-style view of every breaker in this process.
        .merge(breakers_router(BreakerRegistry::global().clone()))
    }
}

/// What the control plane's routes serve, each part behind its own module's router.
struct Parts {
    registry: Arc<Registry>,
    store: Arc<MetricsStore>,
    autoscaler: Arc<Autoscaler>,
    chaos: Arc<Chaos>,
    deployer: Arc<Deployer>,
    alerts: Arc<Alerts>,
    own_instance_id: String,
}

impl ControlPlane {
    /// The configured token, or the installation's (created at the first start).
    fn token(&self) -> anyhow::Result<Token> {
        if let Some(token) = &self.settings.control.token {
            return Ok(token.clone());
        }
        let platform = self
            .platform
            .upgrade()
            .ok_or_else(|| anyhow::anyhow!("the platform is shutting down"))?;
        Ok(access::load_or_create(platform.data_dir())?)
    }
}

impl ControlPlane {
    /// A policy naming a service this platform cannot start is kept (its service
    /// may be registered later) but said at start: its every start would fail.
    fn warn_of_unknown_services(&self) {
        let Some(platform) = self.platform.upgrade() else {
            return;
        };
        let known = platform.services();
        for policy in &self.settings.autoscaler.policies {
            if !known.contains(&policy.service) {
                tracing::warn!(service = %policy.service, known = %known.join(", "),
                    "autoscaler policy for a service this platform cannot start");
            }
        }
    }
}

/// Frees series that left the hour even while nothing is published (ingest sweeps
/// only the shards it touches).
async fn sweep_idle_series(
    store: Arc<MetricsStore>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs(60));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticks.tick() => store.sweep(),
        }
    }
}

impl ControlPlane {
    /// The Toxiproxy-compatible API on its own port of the control plane's host,
    /// steering discovery's answers through `registry`'s rewrites.
    async fn start_toxiproxy(
        &self,
        ctx: &InstanceContext,
        registry: &Registry,
        token: &Token,
    ) -> anyhow::Result<Toxiproxy> {
        let control = &self.settings.control;
        let toxiproxy = Toxiproxy::new(
            toxiproxy::Limits {
                allow_beyond_loopback: control.allow_insecure_bind,
                ..toxiproxy::Limits::default()
            },
            registry.rewrites().clone(),
        );
        let host = ctx.listen_addr().ip();
        let want = SocketAddr::new(host, control.toxiproxy_port_for(ctx.listen_addr().port()));
        let listener = tokio::net::TcpListener::bind(want).await.map_err(|err| {
            anyhow::anyhow!(
                "the Toxiproxy API cannot listen on {want}: {err}; set control.toxiproxy_port \
                 (CASEBOOK_CONTROL__TOXIPROXY_PORT; 0 for a free port)"
            )
        })?;
        let bound = listener.local_addr()?;
        tracing::info!(address = %bound, "Toxiproxy API listening");
        // Stock Toxiproxy clients send no token: none is asked on loopback, and any
        // browser (`Origin`) is refused.
        let policy = AccessPolicy::browserless_on_loopback(bound, token.clone());
        serve_http(
            ctx,
            listener,
            policy.protect(toxiproxy::api::router(toxiproxy.clone())),
        );
        Ok(toxiproxy)
    }
}

impl ServiceFactory for ControlPlane {
    fn name(&self) -> &str {
        CONTROL_SERVICE
    }

    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            // Refused before binding anything: no TLS, so no clear-text admin API on
            // the network unless forced.
            check_bind(
                ctx.listen_addr().ip(),
                self.settings.control.allow_insecure_bind,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let token = self.token()?;
            // Each control-plane instance starts with an empty registry, as a restarted
            // Eureka server does: instances re-register on their next renewal's 404.
            let registry = Arc::new(
                Registry::new(
                    self.settings.discovery.clone(),
                    self.settings.topology.clone(),
                    ctx.clock().clone(),
                )
                .map_err(anyhow::Error::from)?,
            );
            // The platform's region flags follow this registry's region overrides.
            registry.attach_evacuations(ctx.evacuations().clone());
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            discovery::spawn_maintenance(registry.clone(), ctx.shutdown_token());
            // The store is in memory (one hour of 1 s steps): a restart starts it empty.
            let store = Arc::new(MetricsStore::with_config(
                ctx.clock().clone(),
                self.settings.metrics_store.clone(),
            ));
            ctx.spawn(sweep_idle_series(store.clone(), ctx.shutdown_token()));
            // Scales on the store's request metrics, acting on this platform.
            let autoscaler = Arc::new(Autoscaler::new(
                &self.settings.autoscaler,
                Arc::new(StoreSignal::new(store.clone())),
                self.platform.clone(),
                ctx.clock().clone(),
                self.settings.drain,
            ));
            // Canaries judged on the store's per-instance request metrics.
            let deployer = Arc::new(Deployer::new(
                self.settings.deploy.clone(),
                Arc::new(PlatformFleet::new(
                    self.platform.clone(),
                    registry.clone(),
                    self.settings.drain,
                )),
                Arc::new(StoreMetrics::new(store.clone())),
                ctx.clock().clone(),
            ));
            self.warn_of_unknown_services();
            let toxiproxy = self.start_toxiproxy(ctx, &registry, &token).await?;
            // Latency Monkey goes through this plane's own fault proxy unless the
            // settings name another injector.
            let injector = self.settings.latency_injector.clone().or_else(|| {
                Some(Arc::new(toxiproxy::ProxyInjector::new(
                    toxiproxy.clone(),
                    registry.clone(),
                )) as Arc<dyn LatencyInjector>)
            });
            // Experiments roll back when the control plane stops.
            let chaos = Arc::new(Chaos::new(
                &self.settings.chaos,
                chaos::FaultEnv {
                    platform: self.platform.clone(),
                    registry: registry.clone(),
                    measure: Arc::new(chaos::StoreMeasure::new(store.clone(), ctx.clock().clone())),
                    clock: ctx.clock().clone(),
                    injector,
                },
                ctx.shutdown_token(),
            ));
            // Rules on the store's values; runbooks act on this platform, through the
            // autoscaler and the deployer's rollback.
            let alerts = Arc::new(Alerts::new(
                &self.settings.alerts,
                Arc::new(alerts::StoreSource::new(store.clone(), ctx.clock().clone())),
                Arc::new(alerts::Effectors::new(
                    Arc::new(alerts::PlatformRestarter::new(
                        self.platform.clone(),
                        self.settings.drain,
                    )),
                    Some(autoscaler.clone()),
                    Some(deployer.clone() as Arc<dyn alerts::DeployRollback>),
                    Arc::new(alerts::HttpWebhook),
                )),
                self.platform.clone(),
                ctx.clock().clone(),
            ));
            alerts.set_external_url(format!(
                "http://{}",
                casebook_kit::resolve::callable(address)
            ));
            let router = self.router(Parts {
                registry,
                store,
                autoscaler: autoscaler.clone(),
                chaos: chaos.clone(),
                deployer: deployer.clone(),
                alerts: alerts.clone(),
                own_instance_id: ctx.info().instance_id,
            });
            let policy = AccessPolicy::for_bound(address, token);
            serve_http(ctx, listener, policy.protect(router));
            ctx.spawn(toxiproxy.run_until(ctx.shutdown_token()));
            // After `serve_http` has installed the metrics recorder its decisions go to.
            ctx.spawn(autoscaler.run(ctx.shutdown_token()));
            chaos.start_configured_monkey();
            ctx.spawn(deployer.run(ctx.shutdown_token()));
            ctx.spawn(alerts.run(ctx.shutdown_token()));
            Ok(address)
        })
    }
}
