//! The Netflix case's face towards the binary: its services, where they run and on
//! which ports (see `casebook_kit::case`).
//!
//! | service | spread | default port | what it serves |
//! |---|---|---|---|
//! | `netflix-origin` | one instance | 8082 | objects (playlists, segments) and catalog metadata |
//! | `netflix-pipeline` | one instance | 8083 | uploads and encodes titles into HLS, publishes them to the origin |
//! | `netflix-edge` | one per region | 8084 + 100 × region | the regional edge: memory + disk cache, pulls from the origin |
//! | `netflix-isp` | one per region | 8085 + 100 × region | the ISP cache: small, memory, pulls from the regional edge; players fetch here |
//! | `netflix-playback` | one instance | 8081 | catalog, playback sessions, steering, signed manifests, QoE events |
//! | `netflix-users` | one instance | 8086 | accounts, profiles, viewing history, login (JWTs the gateway verifies) |
//! | `netflix-catalog` | one instance | 8087 | the generated catalog and the pipeline's playable titles |
//! | `netflix-recs` | one instance | 8088 | home rows and full-text search (tantivy) |
//! | `netflix-billing` | one instance | 8089 | plans, subscriptions, invoices, payments (idempotent) |
//! | `netflix-gateway` | one instance | 8080 | the API gateway: every service above behind `/api/v1/…` |
//!
//! Upstreams come first: each tier finds the next through discovery.

use std::sync::Arc;
use std::time::Duration;

use casebook_edge::cdn::{FillSchedule, FillSource, TierConfig, TierService, Upstream};
use casebook_edge::signing::SigningKey;
use casebook_kit::case::{AddressKind, Case, CaseEnv, ServiceDecl, Spread};
use casebook_kit::config::ConfigError;
use casebook_kit::ports::PortPlan;

use casebook_edge::gateway::{GatewayService, JwtKey};

use crate::billing::BillingService;
use crate::catalog::CatalogService;
use crate::config::{EDGE_PORT_STRIDE, NetflixConfig};
use crate::origin::store::Origin;
use crate::origin::{ORIGIN_SERVICE, OriginService};
use crate::pipeline::PipelineService;
use crate::playback::PlaybackService;
use crate::recs::RecsService;
use crate::users::UsersService;

/// The case's name, as `casebook up --case` and `casebook load` take it.
pub const CASE: &str = "netflix";
/// The regional edge's service name.
pub const EDGE_SERVICE: &str = "netflix-edge";
/// The ISP cache's service name.
pub const ISP_SERVICE: &str = "netflix-isp";
/// How often a CDN tier runs a scheduled fill round.
pub const FILL_EVERY: Duration = Duration::from_secs(300);
/// How many of the catalog's titles a fill round pre-positions.
pub const FILL_TITLES: usize = 10;

/// The key that signs playback URLs, shared by playback and the edges.
pub fn signing_key(config: &NetflixConfig, env: &CaseEnv) -> Result<SigningKey, ConfigError> {
    let path = config
        .signing_key_file
        .clone()
        .unwrap_or_else(|| env.data_dir.join("netflix").join("signing.key"));
    SigningKey::load_or_create(&path)
        .map_err(|e| ConfigError::new("netflix.signing_key_file", format!("{e:#}")))
}

/// The key that signs and verifies the users' bearer tokens, shared by the user
/// service (which issues them) and the gateway (which checks them).
pub fn jwt_key(config: &NetflixConfig, env: &CaseEnv) -> Result<Arc<JwtKey>, ConfigError> {
    let path = config.gateway.jwt.key_file(&env.data_dir.join("netflix"));
    JwtKey::load_or_create(&path)
        .map(Arc::new)
        .map_err(|e| ConfigError::new("netflix.gateway.jwt.secret_file", format!("{e:#}")))
}

/// The Netflix case as `[netflix]` configures it.
pub fn case(config: &NetflixConfig, env: &CaseEnv) -> Result<Case, ConfigError> {
    config.validate()?;
    let key = signing_key(config, env)?;
    let jwt = jwt_key(config, env)?;
    // One store for the origin and the pipeline, case-level (not an instance slot).
    let origin = Origin::open(config, &env.data_dir)?;
    let decl = |factory: Arc<dyn casebook_kit::runtime::ServiceFactory>,
                spread: Spread,
                ports: PortPlan,
                key_name: &str,
                label: &str| ServiceDecl {
        factory,
        spread,
        ports,
        port_key: format!("netflix.{key_name}"),
        port_hint: format!(
            "CASEBOOK_NETFLIX__{} or `{key_name}` in [netflix]",
            key_name.to_uppercase()
        ),
        label: label.to_owned(),
        address: AddressKind::Http,
    };
    // `prefix` names the tier's keys in `[netflix]` (`edge` → `netflix.edge_memory_bytes`).
    let tier = |service: &str, upstream: &str, memory_bytes: u64, disk_bytes: u64, prefix: &str| {
        let mut config =
            TierConfig::new(service, Upstream::Service(upstream.to_owned()), key.clone());
        config.memory_bytes = memory_bytes;
        config.disk_bytes = disk_bytes;
        // Open Connect style: every tier pre-positions the catalog's first titles,
        // read from the origin, a round every few minutes.
        config.fill = Some(FillSchedule {
            source: FillSource::Service {
                service: ORIGIN_SERVICE.to_owned(),
                path: "/v1/titles".to_owned(),
            },
            every: FILL_EVERY,
            window_utc_hours: None,
            max_titles: FILL_TITLES,
        });
        config
            .validate()
            .map_err(|e| ConfigError::new(format!("netflix.{prefix}_{}", e.key()), e.message()))?;
        Ok::<_, ConfigError>(Arc::new(TierService {
            config,
            resolver: env.resolver.clone(),
        }))
    };
    Ok(Case {
        name: CASE.to_owned(),
        services: vec![
            decl(
                Arc::new(OriginService::new(
                    config.clone(),
                    origin.clone(),
                    env.data_dir.clone(),
                )),
                Spread::Single,
                PortPlan::new(config.origin_port, 0),
                "origin_port",
                "netflix origin",
            ),
            decl(
                Arc::new(PipelineService::new(
                    config.clone(),
                    origin,
                    env.data_dir.clone(),
                )),
                Spread::Single,
                PortPlan::new(config.pipeline_port, 0),
                "pipeline_port",
                "netflix pipeline",
            ),
            decl(
                tier(
                    EDGE_SERVICE,
                    ORIGIN_SERVICE,
                    config.edge_memory_bytes,
                    config.edge_disk_bytes,
                    "edge",
                )?,
                Spread::PerRegion,
                PortPlan::new(config.edge_port, EDGE_PORT_STRIDE),
                "edge_port",
                "netflix regional edge",
            ),
            decl(
                tier(ISP_SERVICE, EDGE_SERVICE, config.isp_memory_bytes, 0, "isp")?,
                Spread::PerRegion,
                PortPlan::new(config.isp_port, EDGE_PORT_STRIDE),
                "isp_port",
                "netflix isp cache",
            ),
            decl(
                Arc::new(PlaybackService::new(
                    config.clone(),
                    key.clone(),
                    env.resolver.clone(),
                    env.topology.clone(),
                )),
                Spread::Single,
                PortPlan::new(config.playback_port, 0),
                "playback_port",
                "netflix playback",
            ),
            decl(
                Arc::new(UsersService::new(config, env, jwt.clone())?),
                Spread::Single,
                PortPlan::new(config.users_port, 0),
                "users_port",
                "netflix users",
            ),
            decl(
                Arc::new(CatalogService::new(config, env)?),
                Spread::Single,
                PortPlan::new(config.catalog_port, 0),
                "catalog_port",
                "netflix catalog",
            ),
            decl(
                Arc::new(RecsService::new(config, env)?),
                Spread::Single,
                PortPlan::new(config.recs_port, 0),
                "recs_port",
                "netflix recommendations and search",
            ),
            decl(
                Arc::new(BillingService::new(config, env)?),
                Spread::Single,
                PortPlan::new(config.billing_port, 0),
                "billing_port",
                "netflix billing",
            ),
            decl(
                Arc::new(
                    GatewayService::new(
                        crate::gateway::resolved_gateway(config),
                        env.resolver.clone(),
                        jwt,
                    )
                    .map_err(|e| ConfigError::new(format!("netflix.{}", e.key()), e.message()))?,
                ),
                Spread::Single,
                PortPlan::new(config.gateway_port, 0),
                "gateway_port",
                "netflix api gateway",
            ),
        ],
    })
}
