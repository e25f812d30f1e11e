//! A cart replica (`amazon-cart`): one per zone of the region, each holding every
//! cart in its [`CartStore`], converging with the others.
//!
//! # How replicas converge
//! - **Push on write.** A write taken here is durable, then queued for every peer
//!   (bounded queue per peer); one pusher sends the queued carts' current states in
//!   batches. A peer the push cannot reach is marked *down*: the batch becomes
//!   hints for its zone, later writes carry a hint for it in their own record, and
//!   whatever is queued for it meanwhile becomes hints too.
//! - **Hinted handoff.** Every `handoff_every` (injected clock), for each zone with
//!   hints whose replica discovery lists, the hinted carts go over in batches; a
//!   delivered batch is recorded and its hints dropped. A zone with no hints left
//!   is up again: pushing resumes.
//! - **Anti-entropy.** Every `anti_entropy_every`, with each peer: the digests
//!   (1,024 bucket XORs) are compared, and up to `anti_entropy_buckets` differing
//!   buckets reconciled — the peer answers its carts that differ and asks for
//!   ours; both sides end with the merge. The backstop for whatever push and hints
//!   missed (a dropped hint, a full queue, a partition no write noticed).
//! - **Snapshots** every `snapshot_every`, and one at a graceful stop.
//!
//! The decisions are on the injected clock; the tokio intervals only set how
//! often they are asked ([`POKE`]). Tests run a round directly
//! ([`Replica::handoff_round`], [`Replica::anti_entropy_round`]).
//!
//! # Not guaranteed
//! - One replica per zone: a second instance in a zone is another address of the
//!   same zone to peers (pushes reach whichever answers first), not a fourth copy.
//! - A push lost with its peer's answer (the peer merged, the pusher saw a
//!   timeout) is hinted and sent again: harmless, merges are idempotent.

mod routes;
mod sync;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use casebook_kit::clock::SharedClock;
use casebook_kit::resolve::Resolver;
use casebook_kit::runtime::{BoxFuture, InstanceContext, ServiceFactory, StartError, serve_http};
use casebook_kit::topology::Placement;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::CART_SERVICE;
use super::config::CartConfig;
use super::peers::ReplicaDirectory;
use super::store::{CartStore, Recovery};

pub use routes::router;

/// How often the background tasks ask whether their work is due.
pub const POKE: Duration = Duration::from_millis(50);

/// A piece of periodic work, due on the injected clock.
#[derive(Debug)]
struct Every {
    every: Duration,
    next: Mutex<Instant>,
}

impl Every {
    fn new(every: Duration, now: Instant) -> Self {
        Self {
            every,
            next: Mutex::new(now + every),
        }
    }

    /// Whether the work is due at `now`; if so, the next one is `every` later.
    fn due(&self, now: Instant) -> bool {
        let mut next = self.next.lock();
        if now < *next {
            return false;
        }
        *next = now + self.every;
        true
    }
}

/// Carts waiting to be pushed to one zone's replica.
#[derive(Debug, Default)]
struct PushQueue {
    order: std::collections::VecDeque<String>,
    queued: std::collections::HashSet<String>,
}

/// One running replica.
#[derive(Debug)]
pub struct Replica {
    store: Arc<CartStore>,
    zone: String,
    config: CartConfig,
    peers: ReplicaDirectory,
    clock: SharedClock,
    queues: Mutex<HashMap<String, PushQueue>>,
    /// Carts a full queue could not take (anti-entropy delivers them).
    overflowed: std::sync::atomic::AtomicU64,
    wake_pusher: Notify,
    /// Zones whose replica a push could not reach, until a handoff succeeds.
    down: Mutex<BTreeSet<String>>,
    handoff: Every,
    anti_entropy: Every,
    snapshots: Every,
    /// Where each peer's next anti-entropy round starts among differing buckets.
    ae_cursor: Mutex<HashMap<String, usize>>,
}

impl Replica {
    /// A replica over `store`, in `zone`, finding its peers through `resolver`.
    pub fn new(
        store: Arc<CartStore>,
        placement: &Placement,
        config: CartConfig,
        resolver: Arc<Resolver>,
        clock: SharedClock,
    ) -> Self {
        let now = clock.now();
        let peers = ReplicaDirectory::new(
            resolver,
            placement.clone(),
            Some(placement.zone.clone()),
            clock.clone(),
            config.discovery_refresh,
            config.replica_timeout,
        );
        Self {
            store,
            zone: placement.zone.clone(),
            peers,
            handoff: Every::new(config.handoff_every, now),
            anti_entropy: Every::new(config.anti_entropy_every, now),
            snapshots: Every::new(config.snapshot_every, now),
            config,
            clock,
            queues: Mutex::new(HashMap::new()),
            overflowed: std::sync::atomic::AtomicU64::new(0),
            wake_pusher: Notify::new(),
            down: Mutex::new(BTreeSet::new()),
            ae_cursor: Mutex::new(HashMap::new()),
        }
    }

    /// The replica's store.
    pub fn store(&self) -> &Arc<CartStore> {
        &self.store
    }

    /// Its zone.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// The zones of the peers it knows (its last list from discovery).
    pub fn peer_zones(&self) -> Vec<String> {
        self.peers
            .cached_zones()
            .into_iter()
            .map(|z| z.zone)
            .collect()
    }

    /// Zones it considers down.
    pub fn down_zones(&self) -> Vec<String> {
        self.down.lock().iter().cloned().collect()
    }

    /// Runs the replica's background work in `ctx`'s task group: the event relay,
    /// the pusher, handoff, anti-entropy and snapshots.
    pub fn spawn_tasks(self: &Arc<Self>, ctx: &InstanceContext) {
        let relay = self.store.relay();
        let shutdown = ctx.shutdown_token();
        ctx.spawn(async move {
            loop {
                let stop = shutdown.clone();
                match relay
                    .clone()
                    .run(async move { stop.cancelled().await })
                    .await
                {
                    Ok(()) => return,
                    Err(error) => {
                        tracing::warn!(%error, "cart event relay failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        let me = self.clone();
        let shutdown = ctx.shutdown_token();
        ctx.spawn(async move {
            tokio::select! {
                () = me.run_pusher() => {}
                () = shutdown.cancelled() => {}
            }
        });
        for work in [
            Work::Peers,
            Work::Handoff,
            Work::AntiEntropy,
            Work::Snapshot,
        ] {
            let me = self.clone();
            let shutdown = ctx.shutdown_token();
            ctx.spawn(async move {
                let mut poke = tokio::time::interval(POKE);
                poke.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => {
                            if work == Work::Snapshot {
                                me.snapshot_now().await;
                            }
                            return;
                        }
                        _ = poke.tick() => me.run_if_due(work).await,
                    }
                }
            });
        }
    }

    async fn run_if_due(&self, work: Work) {
        let now = self.clock.now();
        match work {
            // Asks discovery again once the list is `discovery_refresh` old.
            Work::Peers => self.peers.refresh_if_stale().await,
            Work::Handoff if self.handoff.due(now) => {
                self.handoff_round().await;
            }
            Work::AntiEntropy if self.anti_entropy.due(now) => {
                self.anti_entropy_round().await;
            }
            Work::Snapshot if self.snapshots.due(now) && self.store.changed_since_snapshot() => {
                self.snapshot_now().await;
            }
            _ => {}
        }
    }

    /// Writes a snapshot and compacts the log and the event topic.
    pub async fn snapshot_now(&self) {
        match self.store.snapshot().await {
            Ok(report) => tracing::debug!(?report, zone = %self.zone, "cart snapshot written"),
            Err(error) => tracing::warn!(%error, zone = %self.zone, "cart snapshot failed"),
        }
        if let Err(error) = self.store.compact_events(self.config.event_retention) {
            tracing::warn!(%error, "cart event compaction failed");
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    Peers,
    Handoff,
    AntiEntropy,
    Snapshot,
}

/// The `amazon-cart` replica's factory.
#[derive(Debug)]
pub struct CartReplicaService {
    pub config: crate::config::AmazonConfig,
    pub resolver: Arc<Resolver>,
    /// The replica started last in each zone, while it runs (tests look inside;
    /// holding the map does not keep a stopped replica's store open).
    pub started: Mutex<HashMap<String, Weak<Replica>>>,
}

impl CartReplicaService {
    pub fn new(config: crate::config::AmazonConfig, resolver: Arc<Resolver>) -> Self {
        Self {
            config,
            resolver,
            started: Mutex::new(HashMap::new()),
        }
    }

    /// The running replica of `zone` started by this factory, if any.
    pub fn replica(&self, zone: &str) -> Option<Arc<Replica>> {
        self.started.lock().get(zone).and_then(Weak::upgrade)
    }
}

/// Opens the store on the blocking pool (it replays the log).
async fn open_store(
    ctx: &InstanceContext,
    config: &CartConfig,
) -> Result<(CartStore, Recovery), StartError> {
    let dir = ctx.data_dir().join("cart");
    let config = config.clone();
    let clock = ctx.clock().clone();
    tokio::task::spawn_blocking(move || CartStore::open(&dir, &config, clock))
        .await
        .map_err(|e| StartError::Other(anyhow::anyhow!("opening the cart store: {e}")))?
        .map_err(|e| StartError::Other(anyhow::Error::from(e)))
}

impl ServiceFactory for CartReplicaService {
    fn name(&self) -> &str {
        CART_SERVICE
    }

    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            let config = self.config.cart.clone();
            let (store, recovery) = open_store(ctx, &config).await?;
            let info = ctx.info();
            tracing::info!(
                zone = %info.zone,
                actor = %store.actor(),
                ?recovery,
                "cart replica opened its store"
            );
            let placement = Placement {
                region: info.region,
                zone: info.zone,
            };
            let replica = Arc::new(Replica::new(
                Arc::new(store),
                &placement,
                config,
                self.resolver.clone(),
                ctx.clock().clone(),
            ));
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            replica.spawn_tasks(ctx);
            serve_http(ctx, listener, router(replica.clone()));
            self.started
                .lock()
                .insert(placement.zone, Arc::downgrade(&replica));
            Ok(address)
        })
    }
}
