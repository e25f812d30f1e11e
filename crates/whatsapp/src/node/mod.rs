//! The chat node: the `chat` service, serving XMPP client-to-server over TCP, TLS and WebSocket.
//!
//! One tokio task per connection (spawned in the instance's group, so a kill cuts
//! every connection), a bounded output queue per session, a cap on connections
//! (beyond it: `<see-other-host/>` naming the least-loaded other node with room
//! in a region that is not evacuated, else `<resource-constraint/>` with a
//! `<retry-after/>` hint, then close), RFC 6120
//! negotiation with SASL (SCRAM-SHA-256/-1; PLAIN only when `allow_insecure_plain`),
//! resource binding, routing through the [`router::Router`] (to other nodes of the
//! process over the [`crate::cluster::link`]) and store-and-forward through the
//! [`crate::offline::OfflineStore`].
//!
//! Several nodes per process: one per region of the topology (`casebook up`), each
//! on its own ports ([`WhatsappConfig::node_ports`]: node *i* on the configured
//! ports + *i*·100) plus an internal link listener on a free port, published as
//! `chat-link`.
//!
//! Also served: STARTTLS on the client port, direct TLS (XEP-0368) on `tls_port`
//! and RFC 7395 WebSocket on `ws_port` ([`tls`], `listeners`, `websocket`); the
//! connection cap counts every transport together. One node per region
//! ([`crate::cluster`]): node *i* serves every port + *i*·100, routes to the others
//! over the node link, and a full node points new clients to the least-loaded one.
//!
//! Guarantees: see [`conn`] (and XEP-0198 in `conn::sm`), [`router`] and
//! [`crate::cluster`].
//!
//! | module | role |
//! |---|---|
//! | [`evacuate`] | while the node's region is evacuated: new clients refused with `<see-other-host/>` to another region, bound sessions moved off in bounded batches |
//! | [`conn`] | one connection: negotiation, SASL, bind, stanza handling, offline flush; rosters and presence (RFC 6121), carbons, MAM, in-band registration; its transport |
//! | [`tls`] | the rustls server configuration, the generated self-signed certificate |
//! | [`router`] | the session table and bounded, never-blocking delivery |
//! | [`stanza`] | JIDs, stanza error replies, XEP-0082 stamps, extra stream errors |

pub mod conn;
pub mod evacuate;
mod listeners;
pub mod router;
pub mod stanza;
pub mod tls;
mod websocket;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use casebook_kit::clock::SharedClock;
use casebook_kit::config::ConfigError;
use casebook_kit::ports::PortPlan;
use casebook_kit::runtime::{BoxFuture, InstanceContext, ServiceFactory, StartError, serve_tcp};
use casebook_kit::wal::WalConfig;
use serde::{Deserialize, Serialize};

use crate::archive::{Archive, ArchiveConfig};
use crate::auth::{Accounts, AccountsConfig, LimiterConfig, LoginLimiter};
use crate::cluster::link::{LocalSessions, NodeLink};
use crate::cluster::{Cluster, MemberSpec, Membership};
use crate::offline::{OfflineConfig, OfflineStore};
use crate::roster::{RosterConfig, RosterStore};
use router::Router;

/// The chat node's service name.
pub const CHAT_SERVICE: &str = "chat";
pub use crate::xmpp::{CASEBOOK_XMPP_NS, DELAY_NS};
/// Largest accepted `max_stanza_bytes` (the offline WAL record must hold one).
pub const MAX_STANZA_BYTES: usize = 192 * 1024;
/// Most connections one node may be configured for.
pub const MAX_CONNECTIONS: usize = 1_000_000;
/// Largest per-session output queue, in stanzas.
pub const MAX_OUTBOUND_QUEUE: usize = 65_536;
/// Port distance between consecutive nodes of one process (5222, 5322, 5422, …).
pub const NODE_PORT_STRIDE: u16 = 100;
/// The `<retry-after/>` a full cluster suggests, in seconds.
pub const RETRY_AFTER_SECS: u32 = 5;

/// The `[whatsapp]` table of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WhatsappConfig {
    /// The client-to-server port (XMPP's 5222).
    pub port: u16,
    /// The domain this node serves (`user@domain`).
    pub domain: String,
    /// Offer and accept SASL PLAIN over the unencrypted stream (testing only).
    pub allow_insecure_plain: bool,
    /// Most simultaneous connections; the next one gets `<resource-constraint/>`.
    pub max_connections: usize,
    /// Largest stanza a client may send; a larger one is a `<policy-violation/>`.
    pub max_stanza_bytes: usize,
    /// Stanzas queued to one session before it counts as a slow reader and is dropped.
    pub outbound_queue: usize,
    /// Direct TLS port (XEP-0368, 5223); 0 picks a free port.
    pub tls_port: u16,
    /// RFC 7395 WebSocket port (5280, path `/xmpp-websocket`); 0 picks a free port.
    pub ws_port: u16,
    /// PEM certificate chain; without it (and `tls_key`) a self-signed one is
    /// generated under the domain dir on first start.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Offer STARTTLS as `<required/>` and refuse SASL before it (TCP port).
    pub require_encryption: bool,
    /// From accept to a bound session; past it, `<connection-timeout/>`.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Without any input for this long, `<connection-timeout/>`.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Sustained stanzas per second one connection may send (reading pauses beyond).
    pub max_stanzas_per_second: u32,
    /// Stanzas one connection may send at once above the sustained rate.
    pub stanza_burst: u32,
    /// Sustained bytes per second one connection may send (reading pauses beyond).
    pub max_bytes_per_second: u32,
    /// XEP-0077 in-band registration (account creation by anyone who can connect).
    pub allow_registration: bool,
    /// Keep a server-side history (XEP-0313 MAM, XEP-0359 stanza-ids). Costs one
    /// archive record per chat message; off, the node keeps no message history (as
    /// WhatsApp's servers did) and MAM is not offered.
    pub archive_messages: bool,
    /// XEP-0198: how long a dropped session stays resumable (its stanzas queueing)
    /// before its unacknowledged messages go to the offline store.
    #[serde(with = "humantime_serde")]
    pub sm_resume_timeout: Duration,
    /// XEP-0198: stanzas sent to one session and not yet acknowledged; a session
    /// that would exceed it is closed with `<resource-constraint/>`.
    pub sm_max_unacked: usize,
}

impl Default for WhatsappConfig {
    fn default() -> Self {
        Self {
            port: 5222,
            domain: "localhost".to_owned(),
            allow_insecure_plain: false,
            max_connections: 10_000,
            max_stanza_bytes: 64 * 1024,
            outbound_queue: 256,
            tls_port: 5223,
            ws_port: 5280,
            tls_cert: None,
            tls_key: None,
            require_encryption: false,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_stanzas_per_second: 100,
            stanza_burst: 200,
            max_bytes_per_second: 1024 * 1024,
            allow_registration: false,
            archive_messages: true,
            sm_resume_timeout: Duration::from_secs(300),
            sm_max_unacked: 1024,
        }
    }
}

/// The listening ports of one node of the process (0: a free port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePorts {
    /// Client-to-server (plain TCP, STARTTLS).
    pub c2s: u16,
    /// Direct TLS (XEP-0368).
    pub tls: u16,
    /// RFC 7395 WebSocket.
    pub ws: u16,
}

impl WhatsappConfig {
    /// Each client-facing listener's dotted key and its plan across regions
    /// (`base + 100 × i`). The node-to-node link is not here: it is internal, on a
    /// free port found through the cluster directory.
    pub fn port_plans(&self) -> [(&'static str, PortPlan); 3] {
        [
            ("whatsapp.port", PortPlan::new(self.port, NODE_PORT_STRIDE)),
            (
                "whatsapp.tls_port",
                PortPlan::new(self.tls_port, NODE_PORT_STRIDE),
            ),
            (
                "whatsapp.ws_port",
                PortPlan::new(self.ws_port, NODE_PORT_STRIDE),
            ),
        ]
    }

    /// Every listening port of node `index` (0 = the first region's node), from
    /// [`WhatsappConfig::port_plans`]. Call [`WhatsappConfig::validate_nodes`]
    /// first: past 65535 this panics rather than quietly picking a free port.
    pub fn node_ports(&self, index: usize) -> NodePorts {
        let [c2s, tls, ws] = self.port_plans().map(|(key, plan)| {
            plan.port(index)
                .unwrap_or_else(|| panic!("{key} for node {index}: checked by validate_nodes"))
        });
        NodePorts { c2s, tls, ws }
    }

    /// Checks that `nodes` nodes' listeners all fit below port 65536; the error
    /// names the key.
    pub fn validate_nodes(&self, nodes: usize) -> Result<(), ConfigError> {
        self.port_plans()
            .iter()
            .try_for_each(|(key, plan)| plan.check(key, nodes))
    }

    /// Checks every bound; the error names the dotted key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::auth::parse_bare_jid(&format!("x@{}", self.domain))
            .map_err(|e| ConfigError::new("whatsapp.domain", e.to_string()))?;
        if self.domain != self.domain.to_ascii_lowercase() {
            return Err(ConfigError::new("whatsapp.domain", "must be lower case"));
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.max_connections) {
            return Err(ConfigError::new(
                "whatsapp.max_connections",
                format!("must be in 1..={MAX_CONNECTIONS}"),
            ));
        }
        if !(1024..=MAX_STANZA_BYTES).contains(&self.max_stanza_bytes) {
            return Err(ConfigError::new(
                "whatsapp.max_stanza_bytes",
                format!("must be in 1024..={MAX_STANZA_BYTES}"),
            ));
        }
        if !(1..=MAX_OUTBOUND_QUEUE).contains(&self.outbound_queue) {
            return Err(ConfigError::new(
                "whatsapp.outbound_queue",
                format!("must be in 1..={MAX_OUTBOUND_QUEUE}"),
            ));
        }
        if self.sm_resume_timeout > MAX_SM_RESUME_TIMEOUT {
            return Err(ConfigError::new(
                "whatsapp.sm_resume_timeout",
                format!(
                    "must be at most {}",
                    humantime::format_duration(MAX_SM_RESUME_TIMEOUT)
                ),
            ));
        }
        if !(16..=MAX_SM_UNACKED).contains(&self.sm_max_unacked) {
            return Err(ConfigError::new(
                "whatsapp.sm_max_unacked",
                format!("must be in 16..={MAX_SM_UNACKED}"),
            ));
        }
        self.validate_transport()
    }
}

/// Longest XEP-0198 resumption window.
pub const MAX_SM_RESUME_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Largest XEP-0198 unacknowledged-stanza bound.
pub const MAX_SM_UNACKED: usize = 65_536;

/// What the node is built with.
#[derive(Debug, Clone)]
pub struct ChatSettings {
    pub config: WhatsappConfig,
    /// The platform's data dir: where `casebook whatsapp add-user` keeps accounts
    /// (`<dir>/whatsapp/<domain>/accounts.json`), shared by every chat instance.
    pub accounts_root: PathBuf,
}

/// State of one domain, shared by every chat instance of this process (regional
/// nodes included): accounts, the failed-login limiter, the offline store. Opened by
/// the first instance that starts, kept open by the [`ChatNode`] factory, so a node
/// that is killed and restarted finds it as it was (a process crash is what the
/// durable parts are for).
#[derive(Debug)]
pub(crate) struct Domain {
    pub(crate) accounts: Arc<Accounts>,
    pub(crate) limiter: Arc<LoginLimiter>,
    pub(crate) offline: OfflineStore,
    /// TLS for STARTTLS and the direct-TLS port, loaded once per process.
    pub(crate) tls: Arc<rustls::ServerConfig>,
    /// The injected clock (rate limits).
    pub(crate) clock: SharedClock,
    /// Bounds SASL computations running at once on the blocking pool.
    pub(crate) sasl_slots: Arc<tokio::sync::Semaphore>,
    /// Rosters and pending subscription requests (RFC 6121).
    pub(crate) rosters: Arc<RosterStore>,
    /// The XEP-0313 message archive.
    pub(crate) archive: Arc<Archive>,
    /// XEP-0077 registration attempts per address.
    pub(crate) registrations: conn::RegistrationLimiter,
    /// The nodes of this domain in this process: directory, registry, link stats.
    pub(crate) cluster: Arc<Cluster>,
    /// Whether some instance is doing the upkeep (see [`UpkeepTurn`]).
    upkeep: Arc<AtomicBool>,
}

/// State shared by every connection of one instance (one node).
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: WhatsappConfig,
    pub(crate) domain: Arc<Domain>,
    pub(crate) router: Router,
    /// Resumable XEP-0198 sessions of this node, attached or detached.
    pub(crate) resumable: conn::sm::Registry,
    /// The injected clock (resumption windows).
    pub(crate) clock: SharedClock,
    /// The node's region (its placement's).
    pub(crate) region: String,
    /// The platform's flag for this node's region ([`evacuate`]).
    pub(crate) evacuated: tokio::sync::watch::Receiver<bool>,
    /// Every region's flag: a node elsewhere is named only if its region serves.
    pub(crate) evacuations: casebook_kit::runtime::Evacuations,
}

impl Shared {
    /// Whether this node's region is evacuated now: new connections are refused.
    pub(crate) fn is_evacuated(&self) -> bool {
        *self.evacuated.borrow()
    }
}

/// The link delivers to this node's sessions through its router.
impl LocalSessions for Shared {
    fn to_full(&self, bare: &str, resource: &str, stanza: &str) -> router::Delivery {
        self.router.local_to_full(bare, resource, stanza)
    }

    fn to_bare(&self, bare: &str, stanza: &str) -> router::Delivery {
        self.router.local_to_bare(bare, stanza)
    }

    fn nudge_local(&self, bare: &str) -> usize {
        self.router.local_nudge(bare)
    }

    fn stored_offline(&self, bare: &str) {
        self.router.nudge_offline(bare);
    }
}

/// The `chat` service.
#[derive(Debug)]
pub struct ChatNode {
    settings: ChatSettings,
    domain: tokio::sync::OnceCell<Arc<Domain>>,
    /// The topology: a node's index (hence its ports) is its region's position.
    topology: Option<casebook_kit::topology::Topology>,
}

impl ChatNode {
    pub fn new(settings: ChatSettings) -> Self {
        Self {
            settings,
            domain: tokio::sync::OnceCell::new(),
            topology: None,
        }
    }

    /// Numbers nodes by region (the node in the topology's region *i* is node *i*);
    /// without it every node is node 0.
    pub fn with_topology(mut self, topology: casebook_kit::topology::Topology) -> Self {
        self.topology = Some(topology);
        self
    }

    /// The index of the node placed in `region` (0 without a topology).
    pub fn node_index(&self, region: &str) -> Result<usize, anyhow::Error> {
        match &self.topology {
            None => Ok(0),
            Some(topology) => topology
                .region_index(region)
                .ok_or_else(|| anyhow::anyhow!("region `{region}` is not in the topology")),
        }
    }

    /// The cluster of this process's nodes, once the first one started.
    pub fn cluster(&self) -> Option<Arc<Cluster>> {
        self.domain.get().map(|d| d.cluster.clone())
    }

    /// The domain's state, opened on first use.
    async fn domain(&self, clock: SharedClock) -> anyhow::Result<Arc<Domain>> {
        self.domain
            .get_or_try_init(|| async {
                let settings = self.settings.clone();
                tokio::task::spawn_blocking(move || open_domain(&settings, clock).map(Arc::new))
                    .await?
            })
            .await
            .cloned()
    }
}

/// Counts a live connection; released on drop, however the task ends.
#[derive(Debug)]
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The offline store of one instance: few, small shards (a node's backlog, not a
/// data warehouse).
fn offline_config(max_stanza_bytes: usize) -> OfflineConfig {
    OfflineConfig {
        shards: 4,
        wal: WalConfig {
            segment_bytes: 4 * 1024 * 1024,
            max_record_bytes: (max_stanza_bytes * 2).max(64 * 1024),
            ..WalConfig::default()
        },
        ..OfflineConfig::default()
    }
}

/// The archive of one domain: a record holds one stanza and its two copies.
fn archive_config(max_stanza_bytes: usize) -> ArchiveConfig {
    let defaults = ArchiveConfig::default();
    ArchiveConfig {
        wal: WalConfig {
            max_record_bytes: (max_stanza_bytes * 2).max(64 * 1024),
            ..defaults.wal.clone()
        },
        ..defaults
    }
}

/// Where the domain's durable state lives: beside its accounts file.
pub fn domain_dir(accounts_root: &std::path::Path, domain: &str) -> PathBuf {
    accounts_root.join("whatsapp").join(domain)
}

fn open_domain(settings: &ChatSettings, clock: SharedClock) -> anyhow::Result<Domain> {
    let config = &settings.config;
    config.validate().map_err(anyhow::Error::msg)?;
    let accounts = Accounts::open(
        &settings.accounts_root,
        &config.domain,
        AccountsConfig {
            registration_enabled: config.allow_registration,
            ..AccountsConfig::default()
        },
    )?;
    let limiter = LoginLimiter::new(clock.clone(), LimiterConfig::default())
        .map_err(|e| anyhow::anyhow!("{}", e.0))?;
    let rosters = RosterStore::open(
        domain_dir(&settings.accounts_root, &config.domain).join("rosters"),
        RosterConfig::default(),
    )?;
    let archive = Archive::open(
        domain_dir(&settings.accounts_root, &config.domain).join("archive"),
        archive_config(config.max_stanza_bytes),
        clock.clone(),
    )?;
    let offline = OfflineStore::open(
        domain_dir(&settings.accounts_root, &config.domain).join("offline"),
        offline_config(config.max_stanza_bytes),
        clock.clone(),
    )?;
    let tls = tls::server_config(config, &domain_dir(&settings.accounts_root, &config.domain))?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Ok(Domain {
        accounts: Arc::new(accounts),
        limiter: Arc::new(limiter),
        offline,
        tls,
        clock: clock.clone(),
        sasl_slots: Arc::new(tokio::sync::Semaphore::new(cores)),
        rosters: Arc::new(rosters),
        archive: Arc::new(archive),
        registrations: conn::RegistrationLimiter::new(clock.clone(), Default::default()),
        cluster: Arc::new(Cluster::new(clock)),
        upkeep: Arc::new(AtomicBool::new(false)),
    })
}

/// How often one offline shard is compacted (expiry and log cleaning): the store
/// round-robins shards, each step bounded by `compact_batch`.
const COMPACT_EVERY: Duration = Duration::from_secs(5);

/// How often the account file is re-read, so `casebook whatsapp add-user` (another
/// process) takes effect on a running node.
const RELOAD_ACCOUNTS_EVERY: Duration = Duration::from_secs(2);

/// Held by the one instance doing the domain's upkeep; released when its task ends
/// (stop or kill), so another instance takes over at its next tick.
#[derive(Debug)]
struct UpkeepTurn(Arc<AtomicBool>);

impl UpkeepTurn {
    fn take(flag: &Arc<AtomicBool>) -> Option<Self> {
        (!flag.swap(true, Ordering::AcqRel)).then(|| Self(flag.clone()))
    }
}

impl Drop for UpkeepTurn {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The domain's periodic upkeep: re-read accounts, run bounded offline compaction
/// steps. Every instance runs this loop; only the holder of the [`UpkeepTurn`] acts.
/// Only the cadence is here; what expires is decided on the injected clock inside
/// the store.
async fn domain_upkeep(domain: Arc<Domain>, shutdown: tokio_util::sync::CancellationToken) {
    let mut reload = tokio::time::interval(RELOAD_ACCOUNTS_EVERY);
    reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut compact = tokio::time::interval(COMPACT_EVERY);
    compact.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut turn: Option<UpkeepTurn> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = reload.tick() => {
                turn = turn.or_else(|| UpkeepTurn::take(&domain.upkeep));
                if turn.is_some() {
                    reload_accounts(&domain.accounts).await;
                }
            }
            _ = compact.tick() => {
                turn = turn.or_else(|| UpkeepTurn::take(&domain.upkeep));
                if turn.is_some()
                    && let Err(error) = domain.offline.compact_step().await
                {
                    tracing::warn!(%error, "offline compaction step failed");
                }
                if turn.is_some()
                    && let Err(error) = domain.archive.compact_step().await
                {
                    tracing::warn!(%error, "archive compaction step failed");
                }
            }
        }
    }
}

async fn reload_accounts(accounts: &Arc<Accounts>) {
    let reloaded = {
        let accounts = accounts.clone();
        tokio::task::spawn_blocking(move || accounts.reload()).await
    };
    match reloaded {
        Ok(Ok(_)) => {}
        // Keep serving the last good set: a half-edited file must not lock everyone out.
        Ok(Err(error)) => tracing::warn!(%error, "account reload failed"),
        Err(error) => tracing::warn!(%error, "account reload task failed"),
    }
}

impl ServiceFactory for ChatNode {
    fn name(&self) -> &str {
        CHAT_SERVICE
    }

    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            let domain = self.domain(ctx.clock().clone()).await?;
            let info = ctx.info();
            let index = self.node_index(&info.region)?;
            self.settings
                .config
                .validate_nodes(index + 1)
                .map_err(anyhow::Error::from)?;
            let ports = self.settings.config.node_ports(index);
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            // The link is internal: a free port, found through the cluster directory.
            let link_listener = ctx.bind(SocketAddr::new(ctx.listen_addr().ip(), 0)).await?;
            let link_addr = link_listener.local_addr().map_err(anyhow::Error::from)?;
            ctx.publish_listener("chat-link", link_addr);
            tracing::info!(node = %info.instance_id, %address, %link_addr, configured = ports.c2s, "chat node listening");
            ctx.spawn(domain_upkeep(domain.clone(), ctx.shutdown_token()));
            let live = Arc::new(AtomicUsize::new(0));
            let cluster = domain.cluster.clone();
            let me = cluster.directory.join(MemberSpec {
                id: info.instance_id.clone(),
                region: info.region.clone(),
                client_addr: address,
                link_addr,
                live: live.clone(),
                max_connections: self.settings.config.max_connections,
            });
            // Held by a task of this instance: a kill or stop ends the membership.
            ctx.spawn(
                Membership {
                    cluster: cluster.clone(),
                    node: me.clone(),
                }
                .keep(ctx.shutdown_token()),
            );
            let link = Arc::new(NodeLink::new(
                me.clone(),
                cluster.clone(),
                domain.offline.clone(),
                ctx.clone(),
                self.settings.config.max_stanza_bytes,
            ));
            let shared = Arc::new(Shared {
                config: self.settings.config.clone(),
                domain: domain.clone(),
                router: Router::default(),
                resumable: conn::sm::Registry::default(),
                clock: ctx.clock().clone(),
                region: info.region.clone(),
                evacuated: ctx.region_evacuated(),
                evacuations: ctx.evacuations().clone(),
            });
            shared.router.attach(link.clone());
            let sessions: Arc<dyn LocalSessions> = shared.clone();
            link.set_local(Arc::downgrade(&sessions));
            link.serve(link_listener);
            ctx.spawn(conn::sm::sweep(shared.clone(), ctx.shutdown_token()));
            ctx.spawn(evacuate::run(
                shared.clone(),
                ctx.region_evacuated(),
                ctx.shutdown_token(),
            ));
            // TLS and WebSocket listeners: after the router is attached, so every
            // session they bind is in the cluster's registry.
            listeners::start(ctx, ports, &shared, &live).await?;
            let sessions = shared.clone();
            let stopping = ctx.shutdown_token();
            ctx.spawn(async move {
                // Per-node session gauge (the registry is per process).
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                let node = sessions_node(&sessions);
                loop {
                    tokio::select! {
                        _ = stopping.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    metrics::gauge!("whatsapp_node_sessions", "node" => node.clone())
                        .set(sessions.router.session_count() as f64);
                }
            });
            let shutdown = ctx.shutdown_token();
            serve_tcp(ctx, listener, move |stream, peer| {
                let shared = shared.clone();
                let slot = listeners::admit(&shared, &live);
                let shutdown = shutdown.clone();
                let refusal = slot.is_none().then(|| {
                    let reached = stream.local_addr().ok().map(|a| a.ip());
                    if shared.is_evacuated() {
                        evacuate::refusal(&shared, reached)
                    } else {
                        capacity_refusal(&cluster, &me.id, &shared.evacuations, reached)
                    }
                });
                async move {
                    if let Some(_slot) = slot {
                        conn::serve(shared, stream, peer, shutdown).await;
                    } else {
                        metrics::counter!("whatsapp_connections_refused_total").increment(1);
                        let refusal = refusal.unwrap_or_default();
                        conn::refuse(stream, &shared.config.domain, &refusal).await;
                    }
                }
            });
            Ok(address)
        })
    }
}

fn sessions_node(shared: &Shared) -> String {
    shared
        .router
        .node()
        .map(|n| n.id.clone())
        .unwrap_or_default()
}

/// The `<stream:error/>` for a connection beyond `max_connections`: send the client
/// to the least-loaded other node with room in a region that is not evacuated
/// (RFC 6120 §4.9.3.19 `<see-other-host/>`, `host:port`, IPv6 in brackets; a node
/// listening on the unspecified address is named by the address the client
/// `reached` this one at), or, when every such node is full,
/// `<resource-constraint/>` with an application-specific `<retry-after
/// seconds="…"/>` (§4.9.4).
pub(crate) fn capacity_refusal(
    cluster: &Cluster,
    me: &str,
    evacuations: &casebook_kit::runtime::Evacuations,
    reached: Option<std::net::IpAddr>,
) -> String {
    match cluster
        .directory
        .least_loaded_where(me, |n| !evacuations.is_evacuated(&n.region))
    {
        Some(other) => see_other_host(other.client_addr, reached),
        None => busy_refusal(),
    }
}

/// `<see-other-host/>` naming `other` (as the client `reached` this node when
/// `other` listens on the unspecified address).
pub(crate) fn see_other_host(other: SocketAddr, reached: Option<std::net::IpAddr>) -> String {
    use crate::xml::{Element, STREAM_ERRORS_NS, STREAMS_NS, write_stanza};
    metrics::counter!("whatsapp_see_other_host_total").increment(1);
    write_stanza(&Element::new("error", STREAMS_NS).with_child(
        Element::new("see-other-host", STREAM_ERRORS_NS).with_text(other_host(other, reached)),
    ))
}

/// `<resource-constraint/>` with the application-namespaced retry-after: what a
/// full node answers when no other node has room (and on the TLS and WebSocket
/// ports, whose clients a client-port `<see-other-host/>` would misdirect).
pub(crate) fn busy_refusal() -> String {
    use crate::xml::{Element, STREAM_ERRORS_NS, STREAMS_NS, write_stanza};
    write_stanza(
        &Element::new("error", STREAMS_NS)
            .with_child(Element::new("resource-constraint", STREAM_ERRORS_NS))
            .with_child(
                Element::new("retry-after", CASEBOOK_XMPP_NS)
                    .with_attr("seconds", RETRY_AFTER_SECS.to_string()),
            ),
    )
}

fn other_host(mut other: SocketAddr, reached: Option<std::net::IpAddr>) -> String {
    if other.ip().is_unspecified()
        && let Some(ip) = reached
    {
        other.set_ip(ip);
    }
    other.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ports_step_by_a_hundred_and_zero_stays_free() {
        let config = WhatsappConfig::default();
        assert_eq!(
            config.node_ports(2),
            NodePorts {
                c2s: 5422,
                tls: 5423,
                ws: 5480
            }
        );
        let free = WhatsappConfig {
            port: 0,
            tls_port: 0,
            ws_port: 0,
            ..WhatsappConfig::default()
        };
        assert_eq!(
            free.node_ports(7),
            NodePorts {
                c2s: 0,
                tls: 0,
                ws: 0
            }
        );
        assert!(config.validate_nodes(3).is_ok());
        // Every listener is checked, not only the client port.
        for (key, high) in [
            (
                "whatsapp.port",
                WhatsappConfig {
                    port: 65_500,
                    ..WhatsappConfig::default()
                },
            ),
            (
                "whatsapp.tls_port",
                WhatsappConfig {
                    tls_port: 65_500,
                    ..WhatsappConfig::default()
                },
            ),
            (
                "whatsapp.ws_port",
                WhatsappConfig {
                    ws_port: 65_500,
                    ..WhatsappConfig::default()
                },
            ),
        ] {
            assert!(high.validate_nodes(1).is_ok());
            assert_eq!(high.validate_nodes(2).unwrap_err().key(), key);
        }
    }

    #[test]
    fn see_other_host_names_a_reachable_address() {
        let reached = Some("10.1.2.3".parse().unwrap());
        assert_eq!(
            other_host("0.0.0.0:5322".parse().unwrap(), reached),
            "10.1.2.3:5322"
        );
        assert_eq!(
            other_host("127.0.0.1:5322".parse().unwrap(), reached),
            "127.0.0.1:5322"
        );
        assert_eq!(
            other_host("[::1]:5422".parse().unwrap(), None),
            "[::1]:5422"
        );
    }
}
