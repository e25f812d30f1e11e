//! The platform: which services exist, and their running instances.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::http::ListenerLimits;
use super::slots::{Slot, audit_service_dir, audit_unregistered, try_claim};
use crate::clock::SharedClock;
use crate::topology::{InstanceInfo, Placement, Topology};

/// A boxed future, as trait objects return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How long a graceful stop waits for discovery to hear of it.
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(2);

/// A kind of service the platform can run: the control plane, a gateway, a chat node.
pub trait ServiceFactory: Send + Sync + fmt::Debug + 'static {
    /// The service's name, e.g. `control`.
    fn name(&self) -> &str;

    /// Starts one instance: binds its listeners (the main one on
    /// [`InstanceContext::listen_addr`]), spawns its tasks with
    /// [`InstanceContext::spawn`], and returns the main address once it is serving.
    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>>;
}

/// Registers running instances with discovery.
pub trait Registrar: Send + Sync + fmt::Debug + 'static {
    /// Registers `info` and keeps its lease renewed until the [`Lease`] is released
    /// (graceful stop) or dropped (kill: renewals stop and the lease expires).
    fn register(&self, info: InstanceInfo) -> Box<dyn Lease>;
}

/// A live registration.
pub trait Lease: Send + fmt::Debug {
    /// Stops renewing and cancels the registration.
    fn release(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// What to start.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    pub service: String,
    /// Defaults to `{service}-{zone}-{n}`.
    pub instance_id: Option<String>,
    pub placement: Placement,
    /// Where the main listener binds; port 0 picks a free one.
    pub listen: SocketAddr,
    pub version: String,
    /// How a user changes the port, shown when it is taken (e.g. `--control-port`).
    pub port_hint: Option<String>,
}

/// Where an instance is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum InstanceState {
    Starting,
    Running,
    Stopping,
    /// Stopped gracefully.
    Stopped,
    /// Killed: tasks aborted, sockets closed, registration left to expire.
    Killed,
    /// Failed to start.
    Failed(String),
}

impl InstanceState {
    /// Starting or running: what counts as an instance of its service now.
    pub fn is_live(&self) -> bool {
        matches!(self, Self::Starting | Self::Running)
    }
}

/// An instance as listed by [`Platform::list`].
#[derive(Debug, Clone, Serialize)]
pub struct InstanceView {
    #[serde(flatten)]
    pub info: InstanceInfo,
    #[serde(flatten)]
    pub state: InstanceState,
    /// Milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// The order of starts in this platform: a later start has a larger number, even
    /// within one millisecond or on a stopped clock (what "the newest" means).
    pub start_seq: u64,
    /// The placement slot whose data the instance uses (see [`Slot`]).
    pub slot: Slot,
    pub data_dir: PathBuf,
    /// Every listener the instance published besides its main address (e.g. a chat
    /// node's TLS and WebSocket ports), in publication order.
    pub listeners: Vec<NamedListener>,
}

/// A secondary listener of an instance: what it speaks and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamedListener {
    /// What it serves, e.g. `xmpp-tls` or `xmpp-websocket`.
    pub name: String,
    pub address: SocketAddr,
}

/// The most (service, version) pairs that may be declared bad at once.
pub const MAX_BAD_BUILDS: usize = 256;

/// The outcome of a graceful stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StopReport {
    pub instance_id: String,
    /// Whether every task finished within the drain deadline (if not, the rest
    /// were killed).
    pub drained: bool,
}

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for {instance}: {source}{}", hint_text(.addr, .source, .hint))]
pub struct BindError {
    pub addr: SocketAddr,
    pub instance: String,
    pub hint: Option<String>,
    #[source]
    pub source: std::io::Error,
}

fn hint_text(addr: &SocketAddr, source: &std::io::Error, hint: &Option<String>) -> String {
    match (source.kind(), hint) {
        (std::io::ErrorKind::AddrInUse, Some(hint)) => {
            format!(" — port {} is taken; change it with {hint}", addr.port())
        }
        _ => String::new(),
    }
}

/// Why an instance did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("unknown service `{service}` (known: {known})")]
    UnknownService { service: String, known: String },
    #[error("placement {region}/{zone} is not in the topology")]
    UnknownPlacement { region: String, zone: String },
    #[error("instance `{0}` is already running")]
    AlreadyRunning(String),
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

/// Everything an instance's code needs from the runtime. Cheap to clone.
#[derive(Clone)]
pub struct InstanceContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    spec: InstanceSpec,
    instance_id: String,
    address: OnceLock<SocketAddr>,
    listeners: parking_lot::Mutex<Vec<NamedListener>>,
    slot: Slot,
    /// The slot's on-disk lock, held until the slot is released.
    slot_lock: parking_lot::Mutex<Option<std::fs::File>>,
    listener_limits: ListenerLimits,
    /// Set when the instance's (service, version) was declared bad at its start.
    bad_build: Option<super::BadBuild>,
    data_dir: PathBuf,
    clock: SharedClock,
    /// The platform's region flags (shared).
    evacuations: super::Evacuations,
    shutdown: CancellationToken,
    kill: CancellationToken,
    tasks: TaskTracker,
}

impl fmt::Debug for InstanceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceContext")
            .field("instance_id", &self.inner.instance_id)
            .finish_non_exhaustive()
    }
}

impl InstanceContext {
    /// Who this instance is. The address is the bound one once the service has
    /// started, the requested one before.
    pub fn info(&self) -> InstanceInfo {
        let spec = &self.inner.spec;
        InstanceInfo {
            service: spec.service.clone(),
            instance_id: self.inner.instance_id.clone(),
            region: spec.placement.region.clone(),
            zone: spec.placement.zone.clone(),
            address: self.inner.address.get().copied().unwrap_or(spec.listen),
            version: spec.version.clone(),
        }
    }

    /// Publishes a secondary listener (shown by `casebook up` and the admin API).
    pub fn publish_listener(&self, name: &str, address: SocketAddr) {
        self.inner.listeners.lock().push(NamedListener {
            name: name.to_owned(),
            address,
        });
    }

    /// The secondary listeners published so far.
    pub fn listeners(&self) -> Vec<NamedListener> {
        self.inner.listeners.lock().clone()
    }

    /// Where the main listener should bind.
    pub fn listen_addr(&self) -> SocketAddr {
        self.inner.spec.listen
    }

    /// This instance's directory for durable state (created on start): its slot's,
    /// so an instance started in place of an ended one finds that one's data.
    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// The placement slot this instance holds.
    pub fn slot(&self) -> &Slot {
        &self.inner.slot
    }

    /// The bounds of this instance's listeners: its service's, as set with
    /// [`Platform::set_listener_limits`], else the defaults. What
    /// [`crate::runtime::serve_http`] applies.
    pub fn listener_limits(&self) -> &ListenerLimits {
        &self.inner.listener_limits
    }

    /// The bad build this instance runs, if its (service, version) was declared
    /// bad when it started ([`Platform::declare_bad_build`]).
    pub fn bad_build(&self) -> Option<super::BadBuild> {
        self.inner.bad_build
    }

    /// The clock this instance runs on.
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// Whether this instance's region is evacuated, now and as it changes: the
    /// platform's flag for its region ([`Platform::set_region_evacuated`]).
    pub fn region_evacuated(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner
            .evacuations
            .watch(&self.inner.spec.placement.region)
    }

    /// Every region's evacuation flag (to pick a serving region elsewhere).
    pub fn evacuations(&self) -> &super::Evacuations {
        &self.inner.evacuations
    }

    /// Binds a TCP listener, with an error that names the instance and how to
    /// change the port.
    pub async fn bind(&self, addr: SocketAddr) -> Result<TcpListener, BindError> {
        TcpListener::bind(addr).await.map_err(|source| BindError {
            addr,
            instance: self.inner.instance_id.clone(),
            hint: self.inner.spec.port_hint.clone(),
            source,
        })
    }

    /// Spawns a task in this instance's group. A kill drops it at its next poll.
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let kill = self.inner.kill.clone();
        // Boxed: moved into the `select!` below, an unboxed future would sit in the
        // wrapper's state twice (measured: 5.3 KB per chat connection).
        let fut = Box::pin(fut);
        self.inner.tasks.spawn(async move {
            tokio::select! {
                biased;
                _ = kill.cancelled() => {}
                _ = fut => {}
            }
        });
    }

    /// Cancelled when a graceful stop begins: stop accepting, finish, flush.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Whether a stop (graceful or not) has begun.
    pub fn is_stopping(&self) -> bool {
        self.inner.shutdown.is_cancelled() || self.inner.kill.is_cancelled()
    }

    fn begin_kill(&self) {
        self.inner.shutdown.cancel();
        self.inner.kill.cancel();
        self.inner.tasks.close();
    }
}

struct Entry {
    ctx: InstanceContext,
    state: InstanceState,
    lease: Option<Box<dyn Lease>>,
    started_at: SystemTime,
    start_seq: u64,
    /// Until its stop, kill or failed start has ended every task, an instance holds
    /// its slot: no other instance gets that directory meanwhile.
    holds_slot: bool,
}

/// The data-root audits done so far.
#[derive(Debug, Default)]
struct Audited {
    /// For services not registered (done at the first start of any instance).
    unregistered: bool,
    /// Services whose own directory has been audited.
    services: BTreeSet<String>,
}

/// The services the process can run and the instances it runs. Cheap to clone.
#[derive(Clone)]
pub struct Platform {
    inner: Arc<PlatformInner>,
}

struct PlatformInner {
    topology: Topology,
    data_dir: PathBuf,
    clock: SharedClock,
    factories: RwLock<BTreeMap<String, Arc<dyn ServiceFactory>>>,
    registrar: RwLock<Option<Arc<dyn Registrar>>>,
    instances: Mutex<BTreeMap<String, Entry>>,
    seq: AtomicU64,
    /// Which audits of the data root have run (see [`Slot`]); the lock orders each
    /// audit before any instance of the service claims a slot.
    audited: tokio::sync::Mutex<Audited>,
    /// What the audits found that is not a slot, left in place.
    orphaned: Mutex<Vec<PathBuf>>,
    /// Per-service listener bounds; services not listed get the defaults.
    listener_limits: RwLock<BTreeMap<String, ListenerLimits>>,
    /// Builds declared bad, by (service, version); bounded by [`MAX_BAD_BUILDS`].
    bad_builds: RwLock<BTreeMap<(String, String), super::BadBuild>>,
    /// Set once [`Platform::stop_all`] begins.
    shutting_down: std::sync::atomic::AtomicBool,
    /// Which regions are evacuated (see [`super::evacuation`]).
    evacuations: super::Evacuations,
}

impl fmt::Debug for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Platform")
            .field("data_dir", &self.inner.data_dir)
            .field("instances", &self.inner.instances.lock().len())
            .finish_non_exhaustive()
    }
}

/// A handle that does not keep the platform alive, for services (like the control
/// plane) that the platform itself holds.
#[derive(Clone)]
pub struct WeakPlatform {
    inner: std::sync::Weak<PlatformInner>,
}

impl fmt::Debug for WeakPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WeakPlatform")
    }
}

impl WeakPlatform {
    /// The platform, if it still exists.
    pub fn upgrade(&self) -> Option<Platform> {
        self.inner.upgrade().map(|inner| Platform { inner })
    }
}

impl Platform {
    /// A handle that does not keep the platform alive.
    pub fn downgrade(&self) -> WeakPlatform {
        WeakPlatform {
            inner: Arc::downgrade(&self.inner),
        }
    }

    pub fn new(topology: Topology, data_dir: impl Into<PathBuf>, clock: SharedClock) -> Self {
        Self {
            inner: Arc::new(PlatformInner {
                data_dir: data_dir.into(),
                clock,
                factories: RwLock::default(),
                registrar: RwLock::default(),
                instances: Mutex::default(),
                seq: AtomicU64::new(0),
                audited: tokio::sync::Mutex::default(),
                orphaned: Mutex::default(),
                listener_limits: RwLock::default(),
                bad_builds: RwLock::default(),
                shutting_down: std::sync::atomic::AtomicBool::new(false),
                evacuations: super::Evacuations::new(&topology),
                topology,
            }),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// Marks `region` evacuated or serving again; every instance placed there
    /// sees it through [`InstanceContext::region_evacuated`]. Discovery calls it
    /// where it keeps the region override; returns whether the flag changed.
    pub fn set_region_evacuated(&self, region: &str, evacuated: bool) -> bool {
        self.inner.evacuations.set(region, evacuated)
    }

    /// The platform's region flags, to hand to whatever keeps region overrides.
    pub fn evacuations(&self) -> &super::Evacuations {
        &self.inner.evacuations
    }

    /// Makes a service startable by name.
    pub fn register_service(&self, factory: Arc<dyn ServiceFactory>) {
        self.inner
            .factories
            .write()
            .insert(factory.name().to_owned(), factory);
    }

    /// Sets the listener bounds (connection limit, header-read timeout) of
    /// `service`'s instances started from now on: the hook for a per-service config.
    pub fn set_listener_limits(&self, service: &str, limits: ListenerLimits) {
        self.inner
            .listener_limits
            .write()
            .insert(service.to_owned(), limits);
    }

    /// Declares `version` of `service` bad (`Some`) or good again (`None`):
    /// instances started with it from now on serve through
    /// [`super::bad_build::layer`]. Refused past [`MAX_BAD_BUILDS`] declarations.
    pub fn declare_bad_build(
        &self,
        service: &str,
        version: &str,
        build: Option<super::BadBuild>,
    ) -> Result<(), String> {
        let mut builds = self.inner.bad_builds.write();
        let key = (service.to_owned(), version.to_owned());
        match build {
            Some(build) => {
                if builds.len() >= MAX_BAD_BUILDS && !builds.contains_key(&key) {
                    return Err(format!(
                        "at most {MAX_BAD_BUILDS} bad builds may be declared"
                    ));
                }
                builds.insert(key, build);
            }
            None => {
                builds.remove(&key);
            }
        }
        Ok(())
    }

    /// The bad build declared for `version` of `service`, if any.
    pub fn bad_build(&self, service: &str, version: &str) -> Option<super::BadBuild> {
        self.inner
            .bad_builds
            .read()
            .get(&(service.to_owned(), version.to_owned()))
            .copied()
    }

    /// The services that can be started, by name.
    pub fn services(&self) -> Vec<String> {
        self.inner.factories.read().keys().cloned().collect()
    }

    /// Registers with discovery every running instance that has no registration yet,
    /// and every instance that starts from now on.
    ///
    /// Setting it after the first start is what lets the control plane register
    /// with itself once its address is known (it may bind port 0).
    pub fn set_registrar(&self, registrar: Arc<dyn Registrar>) {
        *self.inner.registrar.write() = Some(registrar.clone());
        let mut instances = self.inner.instances.lock();
        for entry in instances.values_mut() {
            if entry.state == InstanceState::Running && entry.lease.is_none() {
                entry.lease = Some(registrar.register(entry.ctx.info()));
            }
        }
    }

    /// Starts an instance and returns who it is once it is serving.
    pub async fn start(&self, spec: InstanceSpec) -> Result<InstanceInfo, StartError> {
        let factory = self
            .inner
            .factories
            .read()
            .get(&spec.service)
            .cloned()
            .ok_or_else(|| StartError::UnknownService {
                service: spec.service.clone(),
                known: self.services().join(", "),
            })?;
        let Placement { region, zone } = &spec.placement;
        if !self.inner.topology.contains(region, zone) {
            return Err(StartError::UnknownPlacement {
                region: region.clone(),
                zone: zone.clone(),
            });
        }
        let start_seq = self.inner.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let instance_id = spec
            .instance_id
            .clone()
            .unwrap_or_else(|| format!("{}-{}-{start_seq}", spec.service, zone));
        // Before any slot is claimed, so adopted directories take the lowest ordinals.
        self.audit_service(&spec.service).await?;
        let ctx = {
            let mut instances = self.inner.instances.lock();
            if instances
                .get(&instance_id)
                .is_some_and(|e| e.state.is_live())
            {
                return Err(StartError::AlreadyRunning(instance_id));
            }
            // The lowest ordinal of this service in this zone that no instance holds.
            let held: BTreeSet<u32> = instances
                .values()
                .filter(|e| e.holds_slot)
                .map(|e| &e.ctx.inner.slot)
                .filter(|slot| slot.service == spec.service && slot.zone == *zone)
                .map(|slot| slot.ordinal)
                .collect();
            let mut slot = Slot {
                service: spec.service.clone(),
                region: region.clone(),
                zone: zone.clone(),
                ordinal: 0,
            };
            // Skipping those another process holds (its lock is taken).
            let slot_lock = loop {
                if held.contains(&slot.ordinal) {
                    slot.ordinal += 1;
                    continue;
                }
                let dir = slot.dir(&self.inner.data_dir);
                match try_claim(&dir) {
                    Ok(Some(lock)) => break lock,
                    Ok(None) => slot.ordinal += 1,
                    Err(e) => {
                        return Err(StartError::Other(anyhow::anyhow!(
                            "cannot claim data slot {slot} in {}: {e}",
                            dir.display()
                        )));
                    }
                }
            };
            let ctx = InstanceContext {
                inner: Arc::new(ContextInner {
                    data_dir: slot.dir(&self.inner.data_dir),
                    slot,
                    slot_lock: parking_lot::Mutex::new(Some(slot_lock)),
                    listener_limits: self
                        .inner
                        .listener_limits
                        .read()
                        .get(&spec.service)
                        .cloned()
                        .unwrap_or_default(),
                    bad_build: self.bad_build(&spec.service, &spec.version),
                    spec,
                    instance_id: instance_id.clone(),
                    address: OnceLock::new(),
                    listeners: parking_lot::Mutex::new(Vec::new()),
                    clock: self.inner.clock.clone(),
                    evacuations: self.inner.evacuations.clone(),
                    shutdown: CancellationToken::new(),
                    kill: CancellationToken::new(),
                    tasks: TaskTracker::new(),
                }),
            };
            instances.insert(
                instance_id.clone(),
                Entry {
                    ctx: ctx.clone(),
                    state: InstanceState::Starting,
                    lease: None,
                    started_at: self.inner.clock.wall(),
                    start_seq,
                    holds_slot: true,
                },
            );
            ctx
        };
        let started = factory.start(&ctx).await;
        let address = match started {
            Ok(address) => address,
            Err(err) => {
                ctx.begin_kill();
                ctx.inner.tasks.wait().await;
                self.set_state(&instance_id, InstanceState::Failed(err.to_string()));
                self.release_slot(&instance_id, start_seq);
                return Err(err);
            }
        };
        let _ = ctx.inner.address.set(address);
        let info = ctx.info();
        let lease = self
            .inner
            .registrar
            .read()
            .clone()
            .map(|r| r.register(info.clone()));
        let mut instances = self.inner.instances.lock();
        let entry = instances
            .get_mut(&instance_id)
            .expect("a starting instance stays listed");
        entry.state = InstanceState::Running;
        entry.lease = lease;
        tracing::info!(instance = %instance_id, %address, "instance running");
        Ok(info)
    }

    /// Stops an instance gracefully: deregister, stop accepting, drain in-flight
    /// work for at most `drain`, then kill what is left.
    pub async fn stop(&self, instance_id: &str, drain: Duration) -> Option<StopReport> {
        let (ctx, lease, start_seq) = {
            let mut instances = self.inner.instances.lock();
            let entry = instances.get_mut(instance_id)?;
            if !entry.state.is_live() {
                return Some(StopReport {
                    instance_id: instance_id.to_owned(),
                    drained: true,
                });
            }
            entry.state = InstanceState::Stopping;
            (entry.ctx.clone(), entry.lease.take(), entry.start_seq)
        };
        if let Some(lease) = lease
            && tokio::time::timeout(DEREGISTER_TIMEOUT, lease.release())
                .await
                .is_err()
        {
            tracing::warn!(instance = instance_id, "deregistration timed out");
        }
        ctx.inner.shutdown.cancel();
        ctx.inner.tasks.close();
        let drained = tokio::time::timeout(drain, ctx.inner.tasks.wait())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(
                instance = instance_id,
                ?drain,
                "drain deadline passed; killing the rest"
            );
            ctx.begin_kill();
            ctx.inner.tasks.wait().await;
        }
        self.set_state(instance_id, InstanceState::Stopped);
        self.release_slot(instance_id, start_seq);
        tracing::info!(instance = instance_id, drained, "instance stopped");
        Some(StopReport {
            instance_id: instance_id.to_owned(),
            drained,
        })
    }

    /// Kills an instance at once: every task dropped, every socket closed, the
    /// registration left to expire. Returns `false` for an unknown instance.
    pub async fn kill(&self, instance_id: &str) -> bool {
        let (ctx, lease, start_seq) = {
            let mut instances = self.inner.instances.lock();
            let Some(entry) = instances.get_mut(instance_id) else {
                return false;
            };
            if entry.state.is_live() || entry.state == InstanceState::Stopping {
                entry.state = InstanceState::Killed;
            }
            (entry.ctx.clone(), entry.lease.take(), entry.start_seq)
        };
        drop(lease); // renewals stop; the lease expires as a crashed instance's would
        ctx.begin_kill();
        ctx.inner.tasks.wait().await;
        self.release_slot(instance_id, start_seq);
        tracing::info!(instance = instance_id, "instance killed");
        true
    }

    /// Stops every live instance gracefully, service by service in the reverse
    /// order of their first start (so the control plane, started first, stops
    /// last and hears everyone else deregister); instances of one service stop
    /// concurrently.
    pub async fn stop_all(&self, drain: Duration) -> Vec<StopReport> {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        let mut by_service: Vec<(u64, String, Vec<String>)> = Vec::new();
        for (id, entry) in self.inner.instances.lock().iter() {
            if !entry.state.is_live() {
                continue;
            }
            let service = &entry.ctx.inner.spec.service;
            match by_service.iter_mut().find(|(_, s, _)| s == service) {
                Some(group) => {
                    group.0 = group.0.min(entry.start_seq);
                    group.2.push(id.clone());
                }
                None => by_service.push((entry.start_seq, service.clone(), vec![id.clone()])),
            }
        }
        by_service.sort_by_key(|(first, _, _)| std::cmp::Reverse(*first));
        let mut reports = Vec::new();
        for (_, _, ids) in by_service {
            let stops = ids.iter().map(|id| self.stop(id, drain));
            reports.extend(futures::future::join_all(stops).await.into_iter().flatten());
        }
        reports
    }

    /// Whether [`Platform::stop_all`] has begun: whoever replaces or adds instances on
    /// their own (an autoscaler) stands down, rather than start what is being stopped.
    /// Starting is not refused: this only informs.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// Every instance started so far, running or not, in id order.
    pub fn list(&self) -> Vec<InstanceView> {
        self.inner
            .instances
            .lock()
            .values()
            .map(|e| InstanceView {
                info: e.ctx.info(),
                state: e.state.clone(),
                started_at_ms: e
                    .started_at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
                start_seq: e.start_seq,
                slot: e.ctx.inner.slot.clone(),
                data_dir: e.ctx.inner.data_dir.clone(),
                listeners: e.ctx.listeners(),
            })
            .collect()
    }

    /// One instance's state.
    pub fn state(&self, instance_id: &str) -> Option<InstanceState> {
        self.inner
            .instances
            .lock()
            .get(instance_id)
            .map(|e| e.state.clone())
    }

    /// Data found by the audits that is not a placement slot (each also logged at
    /// WARN), left in place for an operator.
    pub fn orphaned_data(&self) -> Vec<PathBuf> {
        self.inner.orphaned.lock().clone()
    }

    /// Audits the service's data directory on its first start (adopting the layout
    /// before slots, reporting strays).
    async fn audit_service(&self, service: &str) -> Result<(), StartError> {
        let service = service.to_owned();
        let mut audited = self.inner.audited.lock().await;
        if !audited.unregistered {
            let root = self.inner.data_dir.clone();
            let topology = self.inner.topology.clone();
            let registered = self.services();
            let orphaned = tokio::task::spawn_blocking(move || {
                audit_unregistered(&root, &registered, &topology)
            })
            .await
            .map_err(anyhow::Error::from)?
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot audit the data root {}: {e}",
                    self.inner.data_dir.display()
                )
            })?;
            self.inner.orphaned.lock().extend(orphaned);
            audited.unregistered = true;
        }
        if !audited.services.contains(&service) {
            let root = self.inner.data_dir.clone();
            let topology = self.inner.topology.clone();
            let name = service.clone();
            let audit =
                tokio::task::spawn_blocking(move || audit_service_dir(&root, &name, &topology))
                    .await
                    .map_err(anyhow::Error::from)?
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "cannot audit the data of service {service} under {}: {e}",
                            self.inner.data_dir.display()
                        )
                    })?;
            self.inner.orphaned.lock().extend(audit.orphaned);
            audited.services.insert(service);
        }
        Ok(())
    }

    /// Lets the slot go once the instance that started as `start_seq` has ended
    /// every task (an entry replaced by a later start under the same id is not
    /// touched).
    fn release_slot(&self, instance_id: &str, start_seq: u64) {
        if let Some(entry) = self.inner.instances.lock().get_mut(instance_id)
            && entry.start_seq == start_seq
        {
            entry.holds_slot = false;
            entry.ctx.inner.slot_lock.lock().take();
        }
    }

    fn set_state(&self, instance_id: &str, state: InstanceState) {
        if let Some(entry) = self.inner.instances.lock().get_mut(instance_id) {
            // A kill during a graceful stop wins: it is what happened last.
            if entry.state != InstanceState::Killed || matches!(state, InstanceState::Failed(_)) {
                entry.state = state;
            }
        }
    }
}
