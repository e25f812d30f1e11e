//! The `uber` service: the HTTP API of [`crate::api`] on `[uber] http_port`
//! (8090), with its timers, as a [`ServiceFactory`] the platform starts.
//!
//! Each start opens an [`Engine`] over the instance's data dir (the trip store
//! replays, the read models resume from their checkpoints), serves
//! [`crate::api::router`] through the kit's `serve_http` (`/health`, `/metrics`,
//! request ids), and runs three tasks in the instance's group: the matcher's tick
//! (batch window, offer timeouts) every `tick_every`, the index's sweep and
//! rebalance every `sweep_every`, a snapshot of the index every
//! `snapshot_every` (the start restores it, replays the location outbox after
//! it and reconciles driver statuses with the trips: [`Engine::reconcile_drivers`]), the relay of the location outbox and the
//! trip events to the bus, and the sender of pricing signals
//! ([`crate::pricewire::PriceWire::run`]).
//!
//! Pricing is found at a URL: `[uber] pricing_url` (default
//! `http://127.0.0.1:8091`), or the one handed over with
//! [`UberService::set_pricing_url`] before a start — `casebook up` starts pricing
//! first and passes its real address (its port may be 0). The decisions are all on the injected clock inside the
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
    /// Where the next start finds pricing (overrides `config.pricing.url`).
    pricing_url: Mutex<Option<String>>,
}

impl UberService {
    pub fn new(config: ApiConfig) -> Self {
        Self {
            pricing_url: Mutex::new(config.pricing.url.clone()),
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
        api.snapshot_every = std::time::Duration::from_secs(config.location_snapshot_secs);
        api.pricing.url = Some(config.pricing_url.clone());
        Self::new(api)
    }

    /// The pricing service the next start calls (a running instance keeps its own).
    pub fn set_pricing_url(&self, url: impl Into<String>) {
        *self.pricing_url.lock() = Some(url.into());
    }

    /// The pricing URL the next start will use.
    pub fn pricing_url(&self) -> Option<String> {
        self.pricing_url.lock().clone()
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
            let mut config = self.config.clone();
            config.pricing.url = self.pricing_url();
            let clock = ctx.clock().clone();
            // Opening replays the trip store: file I/O, off the async workers.
            let engine = tokio::task::spawn_blocking(move || Engine::open(&dir, config, clock))
                .await
                .map_err(anyhow::Error::from)??;
            let moved = engine.reconcile_drivers().await?;
            let recovery = engine.recovery();
            tracing::info!(
                snapshot = recovery.snapshot_drivers,
                replayed = recovery.replayed_updates,
                restored = recovery.index.restored,
                reconciled = moved,
                "driver index rebuilt from the location store"
            );
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
            // Snapshots on their own task: writing one may take a while, and the
            // matcher's tick must not wait for it.
            let snapshots = engine.clone();
            let stop = shutdown.clone();
            ctx.spawn(async move {
                let mut every = tokio::time::interval(snapshots.config().snapshot_every);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                every.reset(); // the first a period after start, not at once
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = every.tick() => {}
                    }
                    let engine = snapshots.clone();
                    match tokio::task::spawn_blocking(move || engine.snapshot_locations()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => tracing::warn!(%error, "location snapshot failed"),
                        Err(error) => tracing::warn!(%error, "location snapshot task failed"),
                    }
                }
            });
            ctx.spawn(engine.pricing().clone().run(shutdown.clone()));
            ctx.spawn(engine.relay(shutdown));
            Ok(address)
        })
    }
}
