//! Driver state between regional replicas: a last-writer-wins register per driver,
//! disseminated by foca (SWIM membership + custom broadcasts).
//!
//! # Role
//! A [`Replica`] owns one foca instance, the [`Registers`] (every driver's latest
//! state this replica knows, local or learned), its timers on the injected clock
//! and a [`Transport`] to send through. Foca does no I/O: the replica drains its
//! runtime after every call — packets to the transport (dropped while the replica
//! is isolated), timers into an ordered queue that [`Replica::step`] fires when
//! the clock reaches them, membership notifications into a resync.
//!
//! # Guarantees
//! - **A CRDT merge.** A driver's register keeps the state with the greatest
//!   `(ts, status, lat bits, lng bits)`: the driver's own timestamp first, the
//!   rest a deterministic tie-break, so merging is commutative, associative and
//!   idempotent and every replica that saw the same states holds the same value.
//! - **Coalesced, bounded dissemination.** Local pings wait in a pending map (one
//!   entry per driver: only the latest matters) of at most `max_pending` drivers;
//!   they are handed to foca only while its broadcast backlog is below
//!   `backlog_target`, where a newer state of a driver replaces the older one
//!   ([`Invalidates`]). A packet is foca's `max_packet_size` (1,400 bytes). A
//!   pending map that is full is not lost: it schedules a resync.
//! - **Anti-entropy.** When a member comes up or renews its identity (a start,
//!   or the end of a partition), when isolation ends, and every `resync_every`, the replica walks
//!   its local drivers (those that pinged it) and offers each again; receivers
//!   keep only what is newer. After a heal every replica converges.
//! - **Reachability.** Region R is reachable when foca lists an active (alive or
//!   suspect) member whose identity names R. An isolated replica reaches no one.
//!
//! # Deliberately absent
//! - Encryption or authentication of gossip packets (loopback / trusted network).
//! - Server-owned statuses (dispatched, on trip) are not gossiped: what travels is
//!   what the driver's app reported.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroU32};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use casebook_kit::clock::SharedClock;
use foca::{
    AccumulatingRuntime, BroadcastHandler, Foca, Identity, Invalidates, OwnedNotification,
    PostcardCodec, State, Timer,
};
use parking_lot::Mutex;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::index::{DriverStatus, LatLng};

/// Bytes of one encoded driver state.
pub const STATE_BYTES: usize = 34;
/// The first byte of an encoded state: its format.
const WIRE_VERSION: u8 = 1;
/// Transmissions of each broadcast item at least (foca's `max_transmissions`).
pub const MIN_TRANSMISSIONS: u8 = 6;
/// Timers one [`Replica::step`] fires at most (foca never schedules at zero
/// delay; this only bounds a step).
const MAX_TIMERS_PER_STEP: usize = 4_096;

// ------------------------------------------------------------------ states

/// One driver's state as a replica holds and gossips it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriverState {
    pub driver: u64,
    pub lat: f64,
    pub lng: f64,
    /// The driver's own timestamp (what last-writer-wins orders by).
    pub ts: u64,
    /// What the driver's app reported.
    pub status: DriverStatus,
}

/// Why bytes are not a driver state.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WireError {
    #[error("driver state: {0} bytes, expected {STATE_BYTES}")]
    Length(usize),
    #[error("driver state: format {0}, expected {WIRE_VERSION}")]
    Version(u8),
    #[error("driver state: status byte {0} is not a status")]
    Status(u8),
    #[error("driver state: {0}")]
    Position(String),
}

fn status_byte(s: DriverStatus) -> u8 {
    match s {
        DriverStatus::Offline => 0,
        DriverStatus::Available => 1,
        DriverStatus::Dispatched => 2,
        DriverStatus::OnTrip => 3,
    }
}

impl DriverState {
    /// The position (validated when the state was made or decoded).
    pub fn position(&self) -> Option<LatLng> {
        LatLng::new(self.lat, self.lng).ok()
    }

    /// Last-writer-wins order: the driver's timestamp, then a deterministic
    /// tie-break so two replicas never keep different values for one `ts`.
    fn order(&self) -> (u64, u8, u64, u64) {
        (
            self.ts,
            status_byte(self.status),
            self.lat.to_bits(),
            self.lng.to_bits(),
        )
    }

    /// Whether `self` wins over `other` (strictly).
    pub fn supersedes(&self, other: &Self) -> bool {
        self.order() > other.order()
    }

    /// The fixed 34-byte wire form (version, driver, lat, lng, ts, status; LE).
    pub fn encode(&self) -> [u8; STATE_BYTES] {
        let mut out = [0u8; STATE_BYTES];
        out[0] = WIRE_VERSION;
        out[1..9].copy_from_slice(&self.driver.to_le_bytes());
        out[9..17].copy_from_slice(&self.lat.to_le_bytes());
        out[17..25].copy_from_slice(&self.lng.to_le_bytes());
        out[25..33].copy_from_slice(&self.ts.to_le_bytes());
        out[33] = status_byte(self.status);
        out
    }

    /// Parses [`Self::encode`]'s form; anything else is refused.
    pub fn decode(data: &[u8]) -> Result<Self, WireError> {
        if data.len() != STATE_BYTES {
            return Err(WireError::Length(data.len()));
        }
        if data[0] != WIRE_VERSION {
            return Err(WireError::Version(data[0]));
        }
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&data[at..at + 8]);
            b
        };
        let status = match data[33] {
            0 => DriverStatus::Offline,
            1 => DriverStatus::Available,
            2 => DriverStatus::Dispatched,
            3 => DriverStatus::OnTrip,
            other => return Err(WireError::Status(other)),
        };
        let state = Self {
            driver: u64::from_le_bytes(word(1)),
            lat: f64::from_le_bytes(word(9)),
            lng: f64::from_le_bytes(word(17)),
            ts: u64::from_le_bytes(word(25)),
            status,
        };
        LatLng::new(state.lat, state.lng).map_err(|e| WireError::Position(e.to_string()))?;
        Ok(state)
    }
}

/// A register and where its value came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Register {
    pub state: DriverState,
    /// True when the value was a ping to this replica, false when learned.
    pub local: bool,
}

/// Every driver's latest known state, and the learned states not yet applied.
#[derive(Debug)]
pub struct Registers {
    map: BTreeMap<u64, Register>,
    max_drivers: usize,
    learned: VecDeque<DriverState>,
    max_learned: usize,
    /// Learned states dropped because the learned queue was full (the
    /// registers still hold them).
    pub learned_dropped: u64,
    /// States refused because `max_drivers` were known.
    pub refused_full: u64,
    /// States learned from peers that were newer than what was held.
    pub learned_total: u64,
    /// States from peers refused for a timestamp beyond the clock skew.
    pub refused_future: u64,
}

impl Registers {
    pub fn new(max_drivers: usize, max_learned: usize) -> Self {
        Self {
            map: BTreeMap::new(),
            max_drivers,
            learned: VecDeque::new(),
            max_learned,
            learned_dropped: 0,
            refused_full: 0,
            learned_total: 0,
            refused_future: 0,
        }
    }

    /// Merges `state`; true when it won (it is now the register's value).
    pub fn merge(&mut self, state: DriverState, local: bool) -> bool {
        let full = self.map.len() >= self.max_drivers;
        match self.map.get_mut(&state.driver) {
            Some(held) if !state.supersedes(&held.state) => false,
            Some(held) => {
                *held = Register { state, local };
                self.note_learned(state, local);
                true
            }
            None if full => {
                self.refused_full += 1;
                false
            }
            None => {
                self.map.insert(state.driver, Register { state, local });
                self.note_learned(state, local);
                true
            }
        }
    }

    fn note_learned(&mut self, state: DriverState, local: bool) {
        if local {
            return;
        }
        self.learned_total += 1;
        if self.learned.len() >= self.max_learned {
            self.learned.pop_front();
            self.learned_dropped += 1;
        }
        self.learned.push_back(state);
    }

    pub fn get(&self, driver: u64) -> Option<Register> {
        self.map.get(&driver).copied()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every register, by driver id.
    pub fn iter(&self) -> impl Iterator<Item = &Register> {
        self.map.values()
    }

    /// The first local register at or after driver `from`.
    fn next_local(&self, from: u64) -> Option<DriverState> {
        self.map
            .range(from..)
            .find(|(_, r)| r.local)
            .map(|(_, r)| r.state)
    }
}

// ---------------------------------------------------------------- identity

/// A replica's identity in the cluster: its gossip address, its region, and a
/// bump that grows on every rejoin (the newest identity of an address wins).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeId {
    pub addr: SocketAddr,
    pub region: String,
    pub bump: u64,
}

impl NodeId {
    /// What an announce to a seed is addressed to: foca accepts an announce for
    /// any identity with the receiver's address.
    fn seed(addr: SocketAddr) -> Self {
        Self {
            addr,
            region: String::new(),
            bump: 0,
        }
    }
}

impl Identity for NodeId {
    type Addr = SocketAddr;

    // Declared down (e.g. after a partition), a replica rejoins as a newer self.
    fn renew(&self) -> Option<Self> {
        Some(Self {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}

/// Foca's custom-broadcast key: the driver (a newer state replaces an older one
/// still waiting in foca's backlog).
#[derive(Debug, Clone, Copy)]
pub struct DriverKey(u64);

impl Invalidates for DriverKey {
    fn invalidates(&self, other: &Self) -> bool {
        // Only newer states become keys (see `receive_item`).
        self.0 == other.0
    }
}

/// Decodes broadcast items and merges them into the registers: only a state
/// newer than the register's is disseminated further.
#[derive(Debug)]
struct Handler {
    registers: Arc<Mutex<Registers>>,
    clock: SharedClock,
    /// [`GossipConfig::max_clock_skew`].
    max_clock_skew: Duration,
}

impl BroadcastHandler<NodeId> for Handler {
    type Key = DriverKey;
    type Error = WireError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&NodeId>,
    ) -> Result<Option<DriverKey>, WireError> {
        let state = DriverState::decode(data)?;
        if sender.is_none() {
            // Our own offer: already merged when it was published.
            return Ok(Some(DriverKey(state.driver)));
        }
        let skew_ms = u64::try_from(self.max_clock_skew.as_millis()).unwrap_or(u64::MAX);
        if state.ts > self.clock.wall_millis().saturating_add(skew_ms) {
            // Latest wins by the driver's timestamp: one far ahead would pin
            // the register (and the index behind it) forever. Not merged, not
            // passed on; the packet's other items still count.
            self.registers.lock().refused_future += 1;
            return Ok(None);
        }
        let newer = self.registers.lock().merge(state, false);
        Ok(newer.then_some(DriverKey(state.driver)))
    }
}

// --------------------------------------------------------------- transport

/// Where a replica's packets go. `send` must not block (it runs under the
/// replica's lock): a full queue drops the packet, as UDP would.
pub trait Transport: Send + Sync + std::fmt::Debug {
    fn send(&self, to: SocketAddr, data: Bytes);
}

/// An in-memory network for deterministic tests: packets wait in one queue until
/// the test delivers them; an isolated address sends and receives nothing.
#[derive(Debug, Default)]
pub struct MemNetwork {
    inner: Mutex<MemInner>,
}

#[derive(Debug, Default)]
struct MemInner {
    queue: VecDeque<(SocketAddr, SocketAddr, Bytes)>,
    cut: BTreeSet<SocketAddr>,
    dropped: u64,
}

/// Most packets the in-memory network holds (more are dropped, like a full
/// socket buffer).
pub const MEM_QUEUE: usize = 100_000;

impl MemNetwork {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The transport of the replica at `me`.
    pub fn endpoint(self: &Arc<Self>, me: SocketAddr) -> Arc<dyn Transport> {
        Arc::new(MemEndpoint {
            net: self.clone(),
            me,
        })
    }

    /// Cuts `addr` off (or reconnects it): packets from or to it are dropped.
    pub fn isolate(&self, addr: SocketAddr, isolated: bool) {
        let mut inner = self.inner.lock();
        if isolated {
            inner.cut.insert(addr);
        } else {
            inner.cut.remove(&addr);
        }
    }

    /// The packets waiting, as `(to, data)`, minus those a cut drops now.
    pub fn take(&self) -> Vec<(SocketAddr, Bytes)> {
        let mut inner = self.inner.lock();
        let queue = std::mem::take(&mut inner.queue);
        let mut out = Vec::with_capacity(queue.len());
        for (from, to, data) in queue {
            if inner.cut.contains(&from) || inner.cut.contains(&to) {
                inner.dropped += 1;
            } else {
                out.push((to, data));
            }
        }
        out
    }

    /// Packets dropped by cuts or a full queue.
    pub fn dropped(&self) -> u64 {
        self.inner.lock().dropped
    }
}

#[derive(Debug)]
struct MemEndpoint {
    net: Arc<MemNetwork>,
    me: SocketAddr,
}

impl Transport for MemEndpoint {
    fn send(&self, to: SocketAddr, data: Bytes) {
        let mut inner = self.net.inner.lock();
        if inner.queue.len() >= MEM_QUEUE || inner.cut.contains(&self.me) {
            inner.dropped += 1;
            return;
        }
        inner.queue.push_back((self.me, to, data));
    }
}

// ----------------------------------------------------------------- replica

/// How a replica gossips.
#[derive(Debug, Clone)]
pub struct GossipConfig {
    /// Replicas expected (foca sizes retransmissions and suspicion by it).
    pub cluster_size: u32,
    /// Drivers whose latest local state waits to be handed to foca, at most.
    pub max_pending: usize,
    /// States kept in foca's broadcast backlog before more are handed over.
    pub backlog_target: usize,
    /// Learned states waiting to be applied to the engine, at most.
    pub max_learned: usize,
    /// Drivers one replica knows, at most.
    pub max_drivers: usize,
    /// Broadcast rounds one step runs at most (each sends one packet of up to
    /// 1,400 bytes to each of up to 3 active members).
    pub broadcasts_per_step: usize,
    /// How often seeds that are not up members are announced to.
    pub rejoin_every: Duration,
    /// How often every local driver is offered again (anti-entropy).
    pub resync_every: Duration,
    /// Seed of foca's random choices (deterministic tests).
    pub rng_seed: u64,
    /// How far ahead of this replica's wall clock a learned state's timestamp
    /// may be (beyond: refused, see the index's rule of the same name).
    pub max_clock_skew: Duration,
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            cluster_size: 3,
            max_pending: 65_536,
            backlog_target: 512,
            max_learned: 65_536,
            max_drivers: 1_000_000,
            // 8 rounds × 2 peers of 1,400 B per 20 ms step: bursts far below a
            // default 208 KiB socket receive buffer (32 overflowed it on loopback).
            broadcasts_per_step: 8,
            rejoin_every: Duration::from_secs(2),
            resync_every: Duration::from_secs(30),
            rng_seed: 0x5eed,
            max_clock_skew: Duration::from_secs(300),
        }
    }
}

impl GossipConfig {
    /// Checks every bound; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=1024).contains(&self.cluster_size) {
            return Err("gossip.cluster_size: must be in 1..=1024".into());
        }
        for (name, v) in [
            ("max_pending", self.max_pending),
            ("backlog_target", self.backlog_target),
            ("max_learned", self.max_learned),
            ("max_drivers", self.max_drivers),
            ("broadcasts_per_step", self.broadcasts_per_step),
        ] {
            if v == 0 {
                return Err(format!("gossip.{name}: must be positive"));
            }
        }
        if self.rejoin_every.is_zero() || self.resync_every.is_zero() {
            return Err("gossip.rejoin_every, gossip.resync_every: must be positive".into());
        }
        Ok(())
    }
}

/// A member as `GET /v1/regions` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberView {
    pub addr: SocketAddr,
    pub region: String,
    /// `alive`, `suspect` or `down`.
    pub state: &'static str,
}

/// Counters of one replica.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GossipStats {
    pub packets_sent: u64,
    pub packets_received: u64,
    pub packets_dropped_isolated: u64,
    pub packets_refused: u64,
    pub states_offered: u64,
    pub pending_overflows: u64,
    pub resyncs: u64,
    pub states_learned: u64,
    pub learned_dropped: u64,
    pub drivers_refused_full: u64,
    /// Learned states refused: their timestamp was beyond the clock skew.
    pub states_refused_future: u64,
    pub pending: usize,
    pub backlog: usize,
    pub drivers_known: usize,
}

type Swim = Foca<NodeId, PostcardCodec, StdRng, Handler>;

struct Inner {
    foca: Swim,
    runtime: AccumulatingRuntime<NodeId>,
    timers: BTreeMap<(Instant, u64), Timer<NodeId>>,
    seq: u64,
    pending: BTreeMap<u64, DriverState>,
    /// The next driver id a running resync offers from.
    resync: Option<u64>,
    next_rejoin: Instant,
    next_resync: Instant,
    seeds: Vec<SocketAddr>,
    stats: GossipStats,
}

/// One regional replica's gossip: membership, registers, dissemination.
pub struct Replica {
    inner: Mutex<Inner>,
    registers: Arc<Mutex<Registers>>,
    transport: Arc<dyn Transport>,
    clock: SharedClock,
    isolated: AtomicBool,
    config: GossipConfig,
    region: String,
    addr: SocketAddr,
    dropped_isolated_in: AtomicU64,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("region", &self.region)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// A replica of `region` at `addr` (its identity's bump is `bump`: give a
    /// restarted process a larger one, e.g. the wall clock in milliseconds).
    pub fn new(
        region: &str,
        addr: SocketAddr,
        bump: u64,
        config: GossipConfig,
        clock: SharedClock,
        transport: Arc<dyn Transport>,
    ) -> Result<Arc<Self>, String> {
        config.validate()?;
        let registers = Arc::new(Mutex::new(Registers::new(
            config.max_drivers,
            config.max_learned,
        )));
        let mut swim_config = foca::Config::new_lan(
            NonZeroU32::new(config.cluster_size).expect("validated positive"),
        );
        // With few members, foca's default (log10 of the size) sends an item
        // twice; probes and acks to one peer spend transmissions too, so an item
        // could retire before the other peer heard it. Six keeps the loss on
        // loopback near 0.1 % (the resync covers the rest).
        swim_config.max_transmissions = swim_config
            .max_transmissions
            .max(NonZeroU8::new(MIN_TRANSMISSIONS).expect("non-zero"));
        let me = NodeId {
            addr,
            region: region.to_owned(),
            bump,
        };
        let foca = Foca::with_custom_broadcast(
            me,
            swim_config,
            StdRng::seed_from_u64(config.rng_seed),
            PostcardCodec,
            Handler {
                registers: registers.clone(),
                clock: clock.clone(),
                max_clock_skew: config.max_clock_skew,
            },
        );
        let now = clock.now();
        Ok(Arc::new(Self {
            inner: Mutex::new(Inner {
                foca,
                runtime: AccumulatingRuntime::new(),
                timers: BTreeMap::new(),
                seq: 0,
                pending: BTreeMap::new(),
                resync: None,
                next_rejoin: now,
                next_resync: now + config.resync_every,
                seeds: Vec::new(),
                stats: GossipStats::default(),
            }),
            registers,
            transport,
            clock,
            isolated: AtomicBool::new(false),
            config,
            region: region.to_owned(),
            addr,
            dropped_isolated_in: AtomicU64::new(0),
        }))
    }

    /// This replica's region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// This replica's gossip address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The addresses announced to while they are not up members (the other
    /// replicas). Replaces the previous list; a changed list is announced to at
    /// the next step.
    pub fn set_seeds(&self, seeds: Vec<SocketAddr>) {
        let seeds: Vec<SocketAddr> = seeds.into_iter().filter(|s| *s != self.addr).collect();
        let mut inner = self.inner.lock();
        if inner.seeds != seeds {
            inner.seeds = seeds;
            inner.next_rejoin = self.clock.now();
        }
    }

    /// Cuts the replica off (chaos): nothing goes out or comes in while isolated.
    /// Ending the isolation announces to the seeds at once and resyncs.
    pub fn set_isolated(&self, isolated: bool) {
        let was = self.isolated.swap(isolated, Ordering::SeqCst);
        if was && !isolated {
            let mut inner = self.inner.lock();
            inner.next_rejoin = self.clock.now();
            inner.resync = Some(0);
            inner.stats.resyncs += 1;
        }
    }

    pub fn is_isolated(&self) -> bool {
        self.isolated.load(Ordering::SeqCst)
    }

    /// Local pings: merged into the registers, then queued for dissemination.
    pub fn publish(&self, states: impl IntoIterator<Item = DriverState>) {
        let won: Vec<DriverState> = {
            let mut registers = self.registers.lock();
            states
                .into_iter()
                .filter(|s| registers.merge(*s, true))
                .collect()
        };
        if won.is_empty() {
            return;
        }
        let mut inner = self.inner.lock();
        for s in won {
            let len = inner.pending.len();
            match inner.pending.entry(s.driver) {
                std::collections::btree_map::Entry::Occupied(mut e) => {
                    e.insert(s);
                }
                std::collections::btree_map::Entry::Vacant(e) if len < self.config.max_pending => {
                    e.insert(s);
                }
                std::collections::btree_map::Entry::Vacant(_) => {
                    // The register has it: a resync will offer it.
                    inner.stats.pending_overflows += 1;
                    if inner.resync.is_none() {
                        inner.resync = Some(0);
                        inner.stats.resyncs += 1;
                    }
                }
            }
        }
    }

    /// One packet from the network (dropped while isolated).
    pub fn handle_packet(&self, data: &[u8]) {
        if self.is_isolated() {
            self.dropped_isolated_in.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut inner = self.inner.lock();
        inner.stats.packets_received += 1;
        let Inner { foca, runtime, .. } = &mut *inner;
        if let Err(error) = foca.handle_data(data, &mut *runtime) {
            inner.stats.packets_refused += 1;
            tracing::debug!(%error, region = %self.region, "gossip packet refused");
        }
        self.drain(&mut inner);
    }

    /// Fires the timers due on the clock, announces to missing seeds, hands
    /// pending states to foca and broadcasts them.
    pub fn step(&self) {
        let now = self.clock.now();
        let mut inner = self.inner.lock();
        for _ in 0..MAX_TIMERS_PER_STEP {
            let Some(entry) = inner.timers.first_entry() else {
                break;
            };
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            let Inner { foca, runtime, .. } = &mut *inner;
            if let Err(error) = foca.handle_timer(timer, &mut *runtime) {
                tracing::debug!(%error, region = %self.region, "gossip timer");
            }
            self.drain(&mut inner);
        }
        let isolated = self.is_isolated();
        if now >= inner.next_rejoin {
            inner.next_rejoin = now + self.config.rejoin_every;
            if !isolated {
                let up: BTreeSet<SocketAddr> =
                    inner.foca.iter_members().map(|m| m.id().addr).collect();
                let missing: Vec<SocketAddr> = inner
                    .seeds
                    .iter()
                    .filter(|s| !up.contains(s))
                    .copied()
                    .collect();
                for seed in missing {
                    let Inner { foca, runtime, .. } = &mut *inner;
                    if let Err(error) = foca.announce(NodeId::seed(seed), &mut *runtime) {
                        tracing::debug!(%error, "gossip announce");
                    }
                    self.drain(&mut inner);
                }
            }
        }
        if now >= inner.next_resync {
            inner.next_resync = now + self.config.resync_every;
            if inner.resync.is_none() {
                inner.resync = Some(0);
                inner.stats.resyncs += 1;
            }
        }
        if isolated {
            // Offered states would only burn their transmissions on a cut link.
            return;
        }
        // Piggybacking on foca's own messages alone carries a few dozen states
        // per 200 ms; explicit broadcasts, bounded per step, keep up with pings.
        for _ in 0..self.config.broadcasts_per_step {
            self.pump(&mut inner);
            if inner.foca.custom_broadcast_backlog() == 0 {
                break;
            }
            let Inner { foca, runtime, .. } = &mut *inner;
            if let Err(error) = foca.broadcast(&mut *runtime) {
                tracing::debug!(%error, "gossip broadcast");
            }
            self.drain(&mut inner);
        }
    }

    /// Hands pending states, then a running resync's, to foca up to the target.
    fn pump(&self, inner: &mut Inner) {
        while inner.foca.custom_broadcast_backlog() < self.config.backlog_target {
            let next = if let Some((_, s)) = inner.pending.pop_first() {
                s
            } else if let Some(from) = inner.resync {
                match self.registers.lock().next_local(from) {
                    Some(s) => {
                        inner.resync = s.driver.checked_add(1);
                        s
                    }
                    None => {
                        inner.resync = None;
                        break;
                    }
                }
            } else {
                break;
            };
            match inner.foca.add_broadcast(&next.encode()) {
                Ok(_) => inner.stats.states_offered += 1,
                Err(error) => tracing::warn!(%error, "gossip offer refused"),
            }
        }
    }

    /// Acts on what foca asked for during the last call.
    fn drain(&self, inner: &mut Inner) {
        let isolated = self.is_isolated();
        while let Some((to, data)) = inner.runtime.to_send() {
            if isolated {
                inner.stats.packets_dropped_isolated += 1;
            } else {
                inner.stats.packets_sent += 1;
                self.transport.send(to.addr, data);
            }
        }
        let now = self.clock.now();
        while let Some((after, timer)) = inner.runtime.to_schedule() {
            inner.seq += 1;
            let seq = inner.seq;
            inner.timers.insert((now + after, seq), timer);
        }
        while let Some(notification) = inner.runtime.to_notify() {
            match notification {
                OwnedNotification::MemberUp(id) => {
                    tracing::info!(region = %self.region, peer = %id.region, addr = %id.addr, "gossip member up");
                    self.restart_resync(inner);
                }
                // A peer or we rejoined under a new identity: what was sent to the
                // old one was refused. A (re)joined peer may have missed states:
                // offer ours again, from the start.
                OwnedNotification::Rename(_, id) | OwnedNotification::Rejoin(id) => {
                    tracing::info!(region = %self.region, peer = %id.region, addr = %id.addr, "gossip identity renewed");
                    self.restart_resync(inner);
                }
                OwnedNotification::MemberDown(id) => {
                    tracing::info!(region = %self.region, peer = %id.region, addr = %id.addr, "gossip member down");
                }
                other => tracing::debug!(region = %self.region, ?other, "gossip notification"),
            }
        }
    }

    /// Offers every local driver again, from the first (a running resync
    /// restarts: a peer that just (re)joined missed its beginning).
    fn restart_resync(&self, inner: &mut Inner) {
        inner.resync = Some(0);
        inner.stats.resyncs += 1;
    }

    /// Whether `region` is reachable: our own always; another while foca lists
    /// an active member of it (and we are not isolated).
    pub fn reachable(&self, region: &str) -> bool {
        if region == self.region {
            return true;
        }
        if self.is_isolated() {
            return false;
        }
        self.inner
            .lock()
            .foca
            .iter_members()
            .any(|m| m.id().region == region)
    }

    /// Every member foca knows, down ones included.
    pub fn members(&self) -> Vec<MemberView> {
        let inner = self.inner.lock();
        let mut out: Vec<MemberView> = inner
            .foca
            .iter_membership_state()
            .map(|m| MemberView {
                addr: m.id().addr,
                region: m.id().region.clone(),
                state: match m.state() {
                    State::Alive => "alive",
                    State::Suspect => "suspect",
                    State::Down => "down",
                },
            })
            .collect();
        out.sort_by(|a, b| (&a.region, a.addr).cmp(&(&b.region, b.addr)));
        out
    }

    /// A driver's register.
    pub fn driver(&self, driver: u64) -> Option<Register> {
        self.registers.lock().get(driver)
    }

    /// Every register (a copy).
    pub fn registers(&self) -> Vec<Register> {
        self.registers.lock().iter().copied().collect()
    }

    /// The learned states not yet taken, oldest first.
    pub fn take_learned(&self) -> Vec<DriverState> {
        self.registers.lock().learned.drain(..).collect()
    }

    /// The counters, with the queue lengths of now.
    pub fn stats(&self) -> GossipStats {
        let inner = self.inner.lock();
        let registers = self.registers.lock();
        let mut stats = inner.stats.clone();
        stats.packets_dropped_isolated += self.dropped_isolated_in.load(Ordering::Relaxed);
        stats.states_learned = registers.learned_total;
        stats.learned_dropped = registers.learned_dropped;
        stats.drivers_refused_full = registers.refused_full;
        stats.states_refused_future = registers.refused_future;
        stats.pending = inner.pending.len();
        stats.backlog = inner.foca.custom_broadcast_backlog();
        stats.drivers_known = registers.len();
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(driver: u64, ts: u64, lat: f64) -> DriverState {
        DriverState {
            driver,
            lat,
            lng: -122.4,
            ts,
            status: DriverStatus::Available,
        }
    }

    #[test]
    fn states_round_trip_and_garbage_is_refused() {
        let s = state(7, 42, 37.7);
        assert_eq!(DriverState::decode(&s.encode()).unwrap(), s);
        assert_eq!(DriverState::decode(&[1; 3]), Err(WireError::Length(3)));
        let mut bad = s.encode();
        bad[0] = 9;
        assert_eq!(DriverState::decode(&bad), Err(WireError::Version(9)));
        let mut bad = s.encode();
        bad[33] = 7;
        assert_eq!(DriverState::decode(&bad), Err(WireError::Status(7)));
        let mut bad = s.encode();
        bad[9..17].copy_from_slice(&f64::NAN.to_le_bytes());
        assert!(matches!(
            DriverState::decode(&bad),
            Err(WireError::Position(_))
        ));
    }

    #[test]
    fn merge_is_last_writer_wins_and_order_free() {
        let states = [
            state(1, 5, 37.1),
            state(1, 9, 37.2),
            state(1, 9, 37.3), // same ts: the tie-break decides, the same everywhere
            state(1, 7, 37.4),
        ];
        let mut finals = Vec::new();
        // Every order of delivery (and a duplicate) ends in the same value.
        for perm in [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]] {
            let mut r = Registers::new(10, 10);
            for i in perm {
                r.merge(states[i], false);
                r.merge(states[i], false);
            }
            finals.push(r.get(1).unwrap().state);
        }
        assert!(finals.iter().all(|f| *f == finals[0]), "{finals:?}");
        assert_eq!(finals[0].ts, 9);
    }

    #[test]
    fn registers_are_bounded_and_learned_states_queue_boundedly() {
        let mut r = Registers::new(2, 1);
        assert!(r.merge(state(1, 1, 1.0), false));
        assert!(r.merge(state(2, 1, 1.0), false));
        assert!(!r.merge(state(3, 1, 1.0), false));
        assert_eq!(r.refused_full, 1);
        assert_eq!(r.learned.len(), 1);
        assert_eq!(r.learned_dropped, 1);
        // A newer state of a known driver still wins at the bound.
        assert!(r.merge(state(1, 2, 1.0), true));
    }

    #[test]
    fn a_learned_state_from_beyond_the_clock_skew_is_not_merged_nor_passed_on() {
        use casebook_kit::clock::{Clock, ManualClock};
        let clock = ManualClock::new();
        let registers = Arc::new(Mutex::new(Registers::new(10, 10)));
        let mut handler = Handler {
            registers: registers.clone(),
            clock: clock.shared(),
            max_clock_skew: Duration::from_secs(300),
        };
        let peer = NodeId {
            addr: "127.0.0.1:7947".parse().unwrap(),
            region: "eu-west".to_owned(),
            bump: 1,
        };
        let now = clock.wall_millis();
        let mut receive = |bytes: &[u8]| {
            handler
                .receive_item(bytes, Some(&peer))
                .map(|key| key.map(|k| k.0))
        };
        assert_eq!(receive(&state(1, u64::MAX, 37.7).encode()), Ok(None));
        assert_eq!(receive(&state(1, now + 300_001, 37.7).encode()), Ok(None));
        assert!(registers.lock().get(1).is_none());
        assert_eq!(registers.lock().refused_future, 2);
        // Within the skew: learned, and disseminated further.
        assert_eq!(
            receive(&state(1, now + 300_000, 37.7).encode()),
            Ok(Some(1))
        );
        assert_eq!(registers.lock().get(1).unwrap().state.ts, now + 300_000);
    }
}
