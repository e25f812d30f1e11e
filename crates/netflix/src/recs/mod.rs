//! Recommendations and search (`netflix-recs`, :8088): home rows and full-text search.
//!
//! (Skeleton: the service answers 501 until its module lands.)

use std::net::SocketAddr;

use axum::Router;
use casebook_kit::api::ApiError;
use casebook_kit::case::CaseEnv;
use casebook_kit::config::ConfigError;
use casebook_kit::runtime::{BoxFuture, InstanceContext, ServiceFactory, StartError, serve_http};
use serde::{Deserialize, Serialize};

use crate::config::NetflixConfig;

/// The service's name in discovery.
pub const RECS_SERVICE: &str = "netflix-recs";

/// The `[netflix.recs]` table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecsConfig {}

impl RecsConfig {
    /// Checks every key; the error names the first one at fault under `key`.
    pub fn validate(&self, _key: &str) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// The platform's factory for `netflix-recs`.
#[derive(Debug)]
pub struct RecsService {
    #[allow(dead_code)]
    config: NetflixConfig,
}

impl RecsService {
    pub fn new(config: &NetflixConfig, _env: &CaseEnv) -> Result<Self, ConfigError> {
        Ok(Self {
            config: config.clone(),
        })
    }
}

impl ServiceFactory for RecsService {
    fn name(&self) -> &str {
        RECS_SERVICE
    }

    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            let router = Router::new().fallback(|| async {
                ApiError::new(http::StatusCode::NOT_IMPLEMENTED, "not built yet")
            });
            serve_http(ctx, listener, router);
            Ok(address)
        })
    }
}

/// The cached popular rows the gateway answers `home` and `search` with when this
/// service cannot (flagged `"fallback": true`): computed once, at start, from the
/// catalog the configuration generates.
pub fn popular_fallback(_config: &NetflixConfig) -> serde_json::Value {
    serde_json::json!({ "rows": [], "fallback": true })
}
