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
//! Pricing is found through discovery ([`UberService::with_resolver`]): each
//! replica quotes the nearest `UP` instance of `uber-pricing` as seen from its own
//! zone, so the same code works in one process (`casebook up`) and as separate
//! processes (`casebook serve`). Tests may pin a URL instead
//! ([`UberService::set_pricing_url`]). The decisions are all on the injected clock inside the
//! engines; the tokio intervals only set how often they are asked.
//!
//! # Regions
//! With [`UberService::with_regions`] every instance is its region's replica
//! (its placement's region): it binds a UDP socket for foca on `[uber]
//! gossip_port + i` (region *i*; 0 = a free port), published as the `gossip`
//! listener, attaches a [`Regional`] to its engine and runs one more task — the
//! gossip loop: datagrams in → [`Replica::handle_packet`], the replica's packets
//! out through a bounded queue (full: dropped, as UDP would), a step every
//! [`GOSSIP_STEP`] (20 ms), learned driver states applied to the engine. Seeds are the
//! other regions' configured gossip ports plus the addresses of the replicas
//! this process started (so free ports work in one process).
//!
//! While the instance's region is evacuated (the platform's flag, which
//! discovery's region override sets) the API answers a regional refusal
//! ([`crate::region::evacuated`]): 503 naming a replica in another region.
//!
//! A stopped instance drops its engine with its tasks; a start on the same
//! instance id reopens the same stores. A kill -9 of the process is not exercised
//! here (the stores' own tests cover torn writes).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use casebook_kit::config::ConfigError;
use casebook_kit::ports::regional_port;
use casebook_kit::runtime::{BoxFuture, InstanceContext, ServiceFactory, StartError, serve_http};
use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use casebook_kit::resolve::Resolver;
use casebook_kit::topology::Placement;

use crate::api::{ApiConfig, Engine, router};
use crate::config::{GOSSIP_PORT_STRIDE, UberConfig};
use crate::pricing::PricingTarget;
use crate::region::evacuated::LocalReplicas;
use crate::region::{GossipConfig, RegionMap, Regional, RegionalRefusal, Replica, Transport};

/// How often a replica's gossip timers and queues are stepped (the decisions
/// are on the injected clock; this only sets how often they are asked).
pub const GOSSIP_STEP: Duration = Duration::from_millis(20);
/// Datagrams read in one go before anything else runs (the socket's receive
/// buffer is what overflows when a reader falls behind).
const RECV_BURST: usize = 256;
/// Outbound gossip datagrams waiting for the socket, at most.
pub const GOSSIP_QUEUE: usize = 4_096;
/// How a user changes the gossip port, shown when it is taken.
pub const GOSSIP_PORT_HINT: &str = "CASEBOOK_UBER__GOSSIP_PORT or `gossip_port` in [uber]";

/// What makes instances regional replicas.
#[derive(Debug, Clone)]
pub struct RegionSetup {
    /// Cities → regions (its region list is the topology's, in order).
    pub map: Arc<RegionMap>,
    /// The host gossip sockets bind on.
    pub host: IpAddr,
    /// Region 0's gossip port; region *i* uses `+ i`; 0: free ports.
    pub gossip_port: u16,
    /// How replicas gossip (the cluster size is set from the regions).
    pub gossip: GossipConfig,
}

/// The service's name.
pub const UBER_SERVICE: &str = "uber";

/// The `uber` service factory.
#[derive(Debug)]
pub struct UberService {
    config: ApiConfig,
    /// The engine of the instance started last, while it runs (tests and tools
    /// look inside; holding it does not keep a stopped instance's stores open).
    last: Mutex<Weak<Engine>>,
    /// A pinned pricing URL for the next start (wins over discovery).
    pricing_url: Mutex<Option<String>>,
    /// How instances find pricing through discovery.
    resolver: Option<Arc<Resolver>>,
    /// Regional replicas, when set.
    regions: Option<RegionSetup>,
    /// The gossip address and engine of each region's replica started here.
    replicas: Registry,
    /// The HTTP address of each region's replica started here (named by a
    /// regional refusal when discovery names none).
    http: LocalReplicas,
}

/// Region → the gossip address and engine of its replica started here.
type Registry = Arc<Mutex<BTreeMap<String, (SocketAddr, Weak<Engine>)>>>;

/// The gossip seeds of the replica of region `index`: the other regions'
/// configured ports and the other replicas started in this process.
fn seeds_of(setup: &RegionSetup, index: usize, registry: &Registry) -> Vec<SocketAddr> {
    let mut seeds: Vec<SocketAddr> = Vec::new();
    if setup.gossip_port != 0 {
        for j in (0..setup.map.regions().len()).filter(|j| *j != index) {
            if let Some(port) = regional_port(setup.gossip_port, GOSSIP_PORT_STRIDE, j) {
                seeds.push(SocketAddr::new(setup.host, port));
            }
        }
    }
    let own = &setup.map.regions()[index];
    for (region, (addr, _)) in registry.lock().iter() {
        if region != own && !seeds.contains(addr) {
            seeds.push(*addr);
        }
    }
    seeds
}

impl UberService {
    pub fn new(config: ApiConfig) -> Self {
        let pinned = match &config.pricing.target {
            Some(PricingTarget::Url(url)) => Some(url.clone()),
            _ => None,
        };
        Self {
            pricing_url: Mutex::new(pinned),
            resolver: None,
            config,
            last: Mutex::new(Weak::new()),
            regions: None,
            replicas: Arc::new(Mutex::new(BTreeMap::new())),
            http: LocalReplicas::default(),
        }
    }

    /// Finds pricing through discovery from each instance's placement.
    pub fn with_resolver(mut self, resolver: Arc<Resolver>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Makes every instance its region's replica.
    pub fn with_regions(mut self, setup: RegionSetup) -> Self {
        self.regions = Some(setup);
        self
    }

    /// The running engine of `region`'s replica started by this service.
    pub fn engine_of(&self, region: &str) -> Option<Arc<Engine>> {
        self.replicas.lock().get(region)?.1.upgrade()
    }

    /// Binds the gossip socket and makes `engine` its region's replica.
    async fn start_replica(
        &self,
        setup: &RegionSetup,
        ctx: &InstanceContext,
        engine: &Arc<Engine>,
    ) -> Result<(), StartError> {
        let region = ctx.info().region;
        let index = setup
            .map
            .regions()
            .iter()
            .position(|r| *r == region)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "region `{region}` is not in the uber region map ({})",
                    setup.map.regions().join(", ")
                )
            })?;
        let port = regional_port(setup.gossip_port, GOSSIP_PORT_STRIDE, index)
            .ok_or_else(|| anyhow::anyhow!("uber.gossip_port: region {index} is beyond 65535"))?;
        let bind = SocketAddr::new(setup.host, port);
        let socket = UdpSocket::bind(bind).await.map_err(|e| {
            anyhow::anyhow!(
                "{}: gossip port {bind} (udp) is taken or not bindable: {e}; change it with {GOSSIP_PORT_HINT}",
                ctx.info().instance_id
            )
        })?;
        let addr =
            casebook_kit::resolve::callable(socket.local_addr().map_err(anyhow::Error::from)?);
        ctx.publish_listener("gossip (udp)", addr);
        let (tx, rx) = mpsc::channel(GOSSIP_QUEUE);
        let clock = ctx.clock().clone();
        // A restarted replica must win over its previous identity: the wall
        // clock in milliseconds grows across restarts.
        let bump = clock.wall_millis();
        let gossip = GossipConfig {
            cluster_size: u32::try_from(setup.map.regions().len()).unwrap_or(u32::MAX),
            rng_seed: bump ^ index as u64,
            ..setup.gossip.clone()
        };
        let replica = Replica::new(
            &region,
            addr,
            bump,
            gossip,
            clock,
            Arc::new(UdpTransport { tx }),
        )
        .map_err(anyhow::Error::msg)?;
        engine
            .attach_region(Regional {
                map: setup.map.clone(),
                replica: replica.clone(),
            })
            .map_err(anyhow::Error::msg)?;
        self.replicas
            .lock()
            .insert(region.clone(), (addr, Arc::downgrade(engine)));
        let seeds = {
            let setup = setup.clone();
            let registry = self.replicas.clone();
            move || seeds_of(&setup, index, &registry)
        };
        replica.set_seeds(seeds());
        ctx.spawn(run_gossip(
            engine.clone(),
            replica,
            socket,
            rx,
            seeds,
            ctx.shutdown_token(),
        ));
        Ok(())
    }

    /// The service as `[uber]` configures it, one replica per region of
    /// `regions` (the topology's, in order). A `[uber]` table that passed
    /// [`UberConfig::validate_regions`] gives a map.
    pub fn regional_from_config(
        config: &UberConfig,
        regions: &[String],
        host: IpAddr,
    ) -> Result<Self, ConfigError> {
        let map = config.validate_regions(regions)?;
        Ok(Self::from_config(config).with_regions(RegionSetup {
            map: Arc::new(map),
            host,
            gossip_port: config.gossip_port,
            gossip: GossipConfig {
                max_clock_skew: config.max_clock_skew,
                ..GossipConfig::default()
            },
        }))
    }

    /// The service as `[uber]` configures it.
    pub fn from_config(config: &UberConfig) -> Self {
        let mut api = ApiConfig {
            max_batch: config.max_location_batch,
            city: config.city.clone(),
            ..ApiConfig::default()
        };
        api.index.stale_after = config.driver_stale;
        api.index.max_clock_skew = config.max_clock_skew;
        api.snapshot_every = config.location_snapshot;
        Self::new(api)
    }

    /// Pins the pricing service the next start calls, instead of discovery (a
    /// running instance keeps its own).
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
            config.pricing.target = match (self.pricing_url(), &self.resolver) {
                (Some(url), _) => Some(PricingTarget::Url(url)),
                (None, Some(resolver)) => {
                    let info = ctx.info();
                    Some(PricingTarget::Discovered {
                        resolver: resolver.clone(),
                        near: Placement {
                            region: info.region,
                            zone: info.zone,
                        },
                    })
                }
                (None, None) => None,
            };
            let clock = ctx.clock().clone();
            // Opening replays the trip store: file I/O, off the async workers.
            let engine = tokio::task::spawn_blocking(move || Engine::open(&dir, config, clock))
                .await
                .map_err(anyhow::Error::from)??;
            *self.last.lock() = Arc::downgrade(&engine);
            if let Some(setup) = &self.regions {
                self.start_replica(setup, ctx, &engine).await?;
            }
            // After the region is attached: reconciling also applies its rule.
            let moved = engine.reconcile_drivers().await?;
            let recovery = engine.recovery();
            tracing::info!(
                snapshot = recovery.snapshot_drivers,
                replayed = recovery.replayed_updates,
                restored = recovery.index.restored,
                reconciled = moved,
                "driver index rebuilt from the location store"
            );
            let info = ctx.info();
            self.http.lock().insert(
                info.region.clone(),
                casebook_kit::resolve::callable(address),
            );
            // While the region is evacuated the API refuses, naming another region.
            let refusal = RegionalRefusal::new(ctx, self.http.clone());
            if let Some(resolver) = &self.resolver {
                ctx.spawn(refusal.clone().follow_discovery(
                    resolver.clone(),
                    UBER_SERVICE,
                    Placement {
                        region: info.region,
                        zone: info.zone,
                    },
                    ctx.shutdown_token(),
                ));
            }
            serve_http(ctx, listener, refusal.layer(router(engine.clone())));

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

/// The replica's packets, to the gossip loop's socket through a bounded queue.
#[derive(Debug)]
struct UdpTransport {
    tx: mpsc::Sender<(SocketAddr, Bytes)>,
}

impl Transport for UdpTransport {
    fn send(&self, to: SocketAddr, data: Bytes) {
        if self.tx.try_send((to, data)).is_err() {
            metrics::counter!("uber_gossip_dropped_total").increment(1);
        }
    }
}

/// One replica's gossip I/O until `shutdown`: datagrams in, queued packets out,
/// a step every [`GOSSIP_STEP`] (seeds refreshed), learned states applied.
async fn run_gossip(
    engine: Arc<Engine>,
    replica: Arc<Replica>,
    socket: UdpSocket,
    mut outbound: mpsc::Receiver<(SocketAddr, Bytes)>,
    seeds: impl Fn() -> Vec<SocketAddr> + Send + 'static,
    shutdown: CancellationToken,
) {
    // Foca's packets are at most 1,400 bytes; a larger datagram is cut and
    // then refused by foca's decoder.
    let mut buf = vec![0u8; 2_048];
    let mut step = tokio::time::interval(GOSSIP_STEP);
    step.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, _)) => {
                    replica.handle_packet(&buf[..n]);
                    // Empty the receive buffer before sending or stepping.
                    for _ in 0..RECV_BURST {
                        match socket.try_recv_from(&mut buf) {
                            Ok((n, _)) => replica.handle_packet(&buf[..n]),
                            Err(_) => break,
                        }
                    }
                }
                Err(error) => tracing::debug!(%error, "gossip receive"),
            },
            Some((to, data)) = outbound.recv() => {
                if let Err(error) = socket.send_to(&data, to).await {
                    tracing::debug!(%error, %to, "gossip send");
                }
            }
            _ = step.tick() => {
                replica.set_seeds(seeds());
                replica.step();
            }
        }
        let learned = replica.take_learned();
        if !learned.is_empty() {
            engine.apply_remote(&learned);
        }
    }
}
