//! All breakers of a process, readable as one list (served at `/api/breakers`).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use parking_lot::RwLock;

use super::core::{BreakerConfig, BreakerStats, CircuitBreaker};
use crate::clock::{SharedClock, SystemClock};
use crate::resilience::ConfigError;

/// The breakers of a process, by dependency name. Cloning shares it.
#[derive(Debug, Clone)]
pub struct BreakerRegistry {
    clock: SharedClock,
    breakers: Arc<RwLock<BTreeMap<String, CircuitBreaker>>>,
}

impl BreakerRegistry {
    /// An empty registry whose breakers run on `clock`.
    pub fn new(clock: SharedClock) -> Self {
        Self {
            clock,
            breakers: Arc::default(),
        }
    }

    /// The process-wide registry on the system clock, used by
    /// [`crate::resilience::stack::ResilientClient::for_dependency`].
    pub fn global() -> &'static BreakerRegistry {
        static GLOBAL: OnceLock<BreakerRegistry> = OnceLock::new();
        GLOBAL.get_or_init(|| BreakerRegistry::new(SystemClock::shared()))
    }

    /// The breaker for `name`, created with `config` on first use. One dependency
    /// has one breaker: later calls return the existing one whatever `config` says.
    pub fn get_or_create(
        &self,
        name: &str,
        config: &BreakerConfig,
    ) -> Result<CircuitBreaker, ConfigError> {
        if let Some(b) = self.breakers.read().get(name) {
            return Ok(b.clone());
        }
        let mut map = self.breakers.write();
        if let Some(b) = map.get(name) {
            return Ok(b.clone());
        }
        let breaker = CircuitBreaker::new(name, config.clone(), self.clock.clone())?;
        map.insert(name.to_owned(), breaker.clone());
        Ok(breaker)
    }

    /// The clock the breakers run on.
    pub fn clock(&self) -> SharedClock {
        self.clock.clone()
    }

    /// The breaker for `name`, if one exists.
    pub fn get(&self, name: &str) -> Option<CircuitBreaker> {
        self.breakers.read().get(name).cloned()
    }

    /// Every breaker's dashboard view, sorted by name.
    pub fn snapshot(&self) -> Vec<BreakerStats> {
        let breakers: Vec<CircuitBreaker> = self.breakers.read().values().cloned().collect();
        breakers.iter().map(CircuitBreaker::stats).collect()
    }
}

/// `GET /api/breakers`: the registry's snapshot as JSON.
pub fn breakers_router(registry: BreakerRegistry) -> Router {
    Router::new()
        .route("/api/breakers", get(list_breakers))
        .with_state(registry)
}

async fn list_breakers(State(registry): State<BreakerRegistry>) -> Json<Vec<BreakerStats>> {
    Json(registry.snapshot())
}
