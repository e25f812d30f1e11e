//! The user service (`netflix-users`, :8086): accounts, profiles, viewing history, login.
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
pub const USERS_SERVICE: &str = "netflix-users";

/// The `[netflix.users]` table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsersConfig {}

impl UsersConfig {
    /// Checks every key; the error names the first one at fault under `key`.
    pub fn validate(&self, _key: &str) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// The platform's factory for `netflix-users`.
#[derive(Debug)]
pub struct UsersService {
    #[allow(dead_code)]
    config: NetflixConfig,
}

impl UsersService {
    pub fn new(
        config: &NetflixConfig,
        _env: &CaseEnv,
        _jwt: std::sync::Arc<casebook_edge::gateway::JwtKey>,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            config: config.clone(),
        })
    }
}

impl ServiceFactory for UsersService {
    fn name(&self) -> &str {
        USERS_SERVICE
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
