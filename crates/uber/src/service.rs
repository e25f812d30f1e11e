//! The `uber` service: the HTTP API of [`crate::api`] on `[uber] http_port`
//! (8090), with its timers, as a [`ServiceFactory`] the platform starts.
//!
//! Each start opens an [`Engine`] over the instance's data dir (the trip store
//! replays, the read models resume from their checkpoints), serves
//! [`crate::api::router`] through the kit's `serve_http` (`/health`, `/metrics`,
//! request ids), and runs three tasks in the instance's group: the matcher's tick
//! (batch window, offer timeouts) every `tick_every`, the index's sweep and
//! rebalance every `sweep_every`, and the relay of the location outbox and the
//! trip events to the bus. The decisions are all on the injected clock inside the
//! engines; the tokio intervals only set how often they are asked.
//!
//! A stopped instance drops its engine with its tasks; a start on the same
//! instance id reopens the same stores. A kill -9 of the process is not exercised
//! here (the stores' own tests cover torn writes).

use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use casebook_kit::runtime::{BoxFuture, InstanceContext, ServiceFactory, StartError, serve_http};
use parking_lot::Mutex;

use crate::api::{ApiConfig, Engine, router};
use crate::config::UberConfig;

/// The service's name.
pub const UBER_SERVICE: &str = "uber";

/// The `uber` service factory.
#[derive(Debug)]
pub struct UberService {
    config: ApiConfig,
    /// The engine of the instance started last, while it runs (tests and tools
    /// look inside; holding it does not keep a stopped instance's stores open).
    last: Mutex<Weak<Engine>>,
}

impl UberService {
    pub fn new(config: ApiConfig) -> Self {
        Self {
            config,
            last: Mutex::new(Weak::new()),
        }
    }

    /// The service as `[uber]` configures it.
    pub fn from_config(config: &UberConfig) -> Self {
        let mut api = ApiConfig {
            max_batch: config.max_location_batch,
            city: config.city.clone(),
            ..ApiConfig::default()
        };
        api.index.stale_after = std::time::Duration::from_secs(config.driver_stale_secs);
        Self::new(api)
    }

    /// The running engine of the instance started last, if it still runs.
    pub fn engine(&self) -> Option<Arc<Engine>> {
        self.last.lock().upgrade()
    }
}

impl ServiceFactory for UberService {
    fn name(&self) -> &str {
        UBER_SERVICE
    }

    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            let dir = ctx.data_dir().to_path_buf();
            let config = self.config.clone();
            let clock = ctx.clock().clone();
            // Opening replays the trip store: file I/O, off the async workers.
            let engine = tokio::task::spawn_blocking(move || Engine::open(&dir, config, clock))
                .await
                .map_err(anyhow::Error::from)??;
            *self.last.lock() = Arc::downgrade(&engine);
            serve_http(ctx, listener, router(engine.clone()));

            let shutdown = ctx.shutdown_token();
            let timers = engine.clone();
            let stop = shutdown.clone();
            ctx.spawn(async move {
                let mut tick = tokio::time::interval(timers.config().tick_every);
                let mut sweep = tokio::time::interval(timers.config().sweep_every);
                for every in [&mut tick, &mut sweep] {
                    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                }
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => timers.tick(),
                        _ = sweep.tick() => timers.maintain(),
                    }
                }
            });
            ctx.spawn(engine.relay(shutdown));
            Ok(address)
        })
    }
}
