//! The chat node: the `chat` service, serving XMPP client-to-server over TCP, TLS and WebSocket.
//!
//! One tokio task per connection (spawned in the instance's group, so a kill cuts
//! every connection), a bounded output queue per session, a cap on connections
//! (beyond it: `<resource-constraint/>` stream error and close), RFC 6120
//! negotiation with SASL (SCRAM-SHA-256/-1; PLAIN only when `allow_insecure_plain`),
//! resource binding, routing inside the node through the [`router::Router`] and
//! store-and-forward through the [`crate::offline::OfflineStore`].
//!
//! Also served: STARTTLS on the client port, direct TLS (XEP-0368) on `tls_port`
//! and RFC 7395 WebSocket on `ws_port` ([`tls`], `listeners`, `websocket`); the
//! connection cap counts every transport together.
//!
//! Guarantees: see [`conn`] (and XEP-0198 in `conn::sm`) and [`router`].
//! Deliberately absent in this slice: routing between nodes.
//!
//! | module | role |
//! |---|---|
//! | [`conn`] | one connection: negotiation, SASL, bind, stanza handling, offline flush; rosters and presence (RFC 6121), carbons, MAM, in-band registration; its transport |
//! | [`tls`] | the rustls server configuration, the generated self-signed certificate |
//! | [`router`] | the session table and bounded, never-blocking delivery |
//! | [`stanza`] | JIDs, stanza error replies, XEP-0082 stamps, extra stream errors |

pub mod conn;
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
use casebook_kit::runtime::{BoxFuture, InstanceContext, ServiceFactory, StartError, serve_tcp};
use casebook_kit::wal::WalConfig;
use serde::{Deserialize, Serialize};

use crate::archive::{Archive, ArchiveConfig};
use crate::auth::{Accounts, AccountsConfig, LimiterConfig, LoginLimiter};
use crate::offline::{OfflineConfig, OfflineStore};
use crate::roster::{RosterConfig, RosterStore};
use router::Router;

/// The chat node's service name.
pub const CHAT_SERVICE: &str = "chat";
/// XEP-0203 delayed delivery.
pub const DELAY_NS: &str = "urn:xmpp:delay";
/// Largest accepted `max_stanza_bytes` (the offline WAL record must hold one).
pub const MAX_STANZA_BYTES: usize = 192 * 1024;
/// Most connections one node may be configured for.
pub const MAX_CONNECTIONS: usize = 1_000_000;
/// Largest per-session output queue, in stanzas.
pub const MAX_OUTBOUND_QUEUE: usize = 65_536;

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

impl WhatsappConfig {
    /// Checks every bound; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        crate::auth::parse_bare_jid(&format!("x@{}", self.domain))
            .map_err(|e| format!("whatsapp.domain: {e}"))?;
        if self.domain != self.domain.to_ascii_lowercase() {
            return Err("whatsapp.domain: must be lower case".into());
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.max_connections) {
            return Err(format!(
                "whatsapp.max_connections: must be in 1..={MAX_CONNECTIONS}"
            ));
        }
        if !(1024..=MAX_STANZA_BYTES).contains(&self.max_stanza_bytes) {
            return Err(format!(
                "whatsapp.max_stanza_bytes: must be in 1024..={MAX_STANZA_BYTES}"
            ));
        }
        if !(1..=MAX_OUTBOUND_QUEUE).contains(&self.outbound_queue) {
            return Err(format!(
                "whatsapp.outbound_queue: must be in 1..={MAX_OUTBOUND_QUEUE}"
            ));
        }
        if self.sm_resume_timeout > MAX_SM_RESUME_TIMEOUT {
            return Err(format!(
                "whatsapp.sm_resume_timeout: must be at most {}s",
                MAX_SM_RESUME_TIMEOUT.as_secs()
            ));
        }
        if !(16..=MAX_SM_UNACKED).contains(&self.sm_max_unacked) {
            return Err(format!(
                "whatsapp.sm_max_unacked: must be in 16..={MAX_SM_UNACKED}"
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
}

/// The `chat` service.
#[derive(Debug)]
pub struct ChatNode {
    settings: ChatSettings,
    domain: tokio::sync::OnceCell<Arc<Domain>>,
}

impl ChatNode {
    pub fn new(settings: ChatSettings) -> Self {
        Self {
            settings,
            domain: tokio::sync::OnceCell::new(),
        }
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
        registrations: conn::RegistrationLimiter::new(clock, Default::default()),
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
            let shared = Arc::new(Shared {
                config: self.settings.config.clone(),
                domain: domain.clone(),
                router: Router::default(),
                resumable: conn::sm::Registry::default(),
                clock: ctx.clock().clone(),
            });
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            ctx.spawn(domain_upkeep(domain.clone(), ctx.shutdown_token()));
            ctx.spawn(conn::sm::sweep(shared.clone(), ctx.shutdown_token()));
            let live = Arc::new(AtomicUsize::new(0));
            listeners::start(ctx, &shared, &live).await?;
            let shutdown = ctx.shutdown_token();
            serve_tcp(ctx, listener, move |stream, peer| {
                let shared = shared.clone();
                // Taken here, on the accept loop, so the cap holds for a burst too.
                let slot = Slot(live.clone());
                let admitted = live.fetch_add(1, Ordering::AcqRel) < shared.config.max_connections;
                let slot = admitted.then_some(slot);
                let shutdown = shutdown.clone();
                async move {
                    if let Some(_slot) = slot {
                        conn::serve(shared, stream, peer, shutdown).await;
                    } else {
                        metrics::counter!("whatsapp_connections_refused_total").increment(1);
                        conn::refuse(stream, &shared.config.domain, "resource-constraint").await;
                    }
                }
            });
            Ok(address)
        })
    }
}
