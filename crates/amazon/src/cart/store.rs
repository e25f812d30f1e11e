//! A replica's durable store of carts: the kit's outbox (a WAL) as the log,
//! periodic snapshots, the carts in memory, their digest, and the hints.
//!
//! # Layout (under the replica's data directory)
//! - `actor.id`: the replica's [`ActorId`], made at the first start (a checkpoint:
//!   written whole or not at all). A wiped directory gets a new id, so its dots can
//!   never collide with the old ones.
//! - `log/`: the [`Outbox`]: every change is one record — the carts it changed
//!   (whole states), the hints it made or handed off, and the cart events it
//!   caused (published to `bus/` by the relay; at least once).
//! - `carts.snapshot`: every cart and hint, with the log position a replay starts
//!   from (the kit's [`Checkpoint`]: temp file, checksum, rename).
//! - `bus/`: the embedded event bus, topic [`EVENTS_TOPIC`].
//!
//! # Guarantees
//! - **Durable before visible.** A write (and a merge from a peer) is appended
//!   and synced before memory changes, so nothing is read, pushed or answered that
//!   a crash could take back; in particular no dot of this replica can reach a
//!   peer and then be made again for something else after a restart.
//! - **Writes of one cart are serialised** (an async shard lock per user, held
//!   across the append): each takes the next dot of this actor.
//! - **Replay is a merge.** Records hold whole states, merged in any order; a
//!   replay that starts early or repeats a record changes nothing.
//! - **Bounded restart.** A restart loads the snapshot and replays the log after
//!   its low-water mark; the log is compacted below it (never below what the
//!   relay has not published).
//! - **The digest** is one XOR of `stable_hash(user, state)` per bucket
//!   ([`BUCKETS`] buckets by the stable hash of the user), kept current on every
//!   change, so anti-entropy compares 1,024 numbers instead of every cart.
//!
//! # Not guaranteed
//! - Carts are never deleted: an emptied cart keeps its clock (it carries the
//!   removes to the other replicas). The store grows with the number of users.
//! - Storage errors fail the write (503 upstream) and leave memory unchanged; the
//!   log itself then refuses further writes (the kit's fail-stop).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use casebook_kit::clock::SharedClock;
use casebook_kit::events::{BusError, Checkpoint, Event, EventBus, WalBus};
use casebook_kit::locks::{AsyncShardedLocks, ShardedLocks};
use casebook_kit::outbox::{OutboundEvent, Outbox, Relay};
use casebook_kit::partition::stable_hash;
use casebook_kit::wal::{Durability, WalConfig};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::config::CartConfig;
use super::crdt::{ActorId, Cart, Limits};
use super::hints::Hints;
use super::model::wire_limits;
use super::wire::{Op, UserCart};

/// Digest buckets (and the shards of the in-memory map: a bucket is a shard).
pub const BUCKETS: usize = 1_024;
/// The bus topic of cart events.
pub const EVENTS_TOPIC: &str = "amazon.cart";
/// Shards of the per-user write locks.
const WRITER_SHARDS: usize = 4_096;
/// Log records read per replay step.
const REPLAY_CHUNK: usize = 256;
/// A merge's record is cut when its carts pass about this many bytes.
const RECORD_TARGET_BYTES: usize = 512 * 1024;
/// A cart's deferred removes beyond which a new remove that would wait is refused.
pub const MAX_LOCAL_DEFERRED: usize = 64;
/// Outbox entries a relay publishes per step.
const RELAY_BATCH: usize = 256;

/// The log's configuration: 16 MiB segments, records up to 4 MiB.
pub fn wal_config(durability: Durability) -> WalConfig {
    WalConfig {
        segment_bytes: 16 * 1024 * 1024,
        max_record_bytes: 4 * 1024 * 1024,
        durability,
        ..WalConfig::default()
    }
}

/// Why the store refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The log or a checkpoint failed: nothing was changed.
    #[error("the cart log failed: {0}")]
    Storage(String),
    /// A new line in a cart that has `max` lines.
    #[error("the cart already has {max} lines; remove one before adding {sku}")]
    CartFull { sku: String, max: usize },
    /// A remove that would wait for unseen writes, while many already wait.
    #[error(
        "{MAX_LOCAL_DEFERRED} removes of this cart already wait for writes this replica has not seen"
    )]
    TooManyPendingRemoves,
    /// A request outside the bounds (the caller's fault).
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// What is on disk cannot be read back.
    #[error("the cart store in {dir} is unreadable: {reason}")]
    Corrupt { dir: String, reason: String },
}

impl From<BusError> for StoreError {
    fn from(e: BusError) -> Self {
        Self::Storage(e.to_string())
    }
}

/// Zone → users, as records and snapshots carry hints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HintSet {
    pub zone: String,
    pub users: Vec<String>,
}

/// One record of the log (the outbox entry's `change`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogRecord {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    carts: Vec<UserCart>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    hints: Vec<HintSet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    handed_off: Vec<HintSet>,
}

/// The snapshot file's body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotBody {
    /// Format version.
    v: u32,
    replay_from: u64,
    carts: Vec<UserCart>,
    hints: Vec<HintSet>,
}

#[derive(Debug, Default)]
struct Shard {
    carts: HashMap<String, Stored>,
    /// XOR of the carts' hashes.
    digest: u64,
}

#[derive(Debug)]
struct Stored {
    cart: Cart,
    hash: u64,
}

/// The hash of one cart in the digest: stable across processes and builds.
pub fn cart_hash(user: &str, cart: &Cart) -> u64 {
    stable_hash(&(user, cart))
}

/// What a start found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Carts in the snapshot (0 without one).
    pub snapshot_carts: usize,
    /// Log records replayed after it.
    pub replayed: usize,
    /// Carts held after the replay.
    pub carts: usize,
    /// Hints pending after the replay.
    pub hints: usize,
}

/// What a snapshot wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotReport {
    pub carts: usize,
    pub replay_from: u64,
    pub bytes: usize,
    /// Log segments deleted below the replay start.
    pub segments_dropped: usize,
}

/// One replica's carts. See the module docs.
#[derive(Debug)]
pub struct CartStore {
    actor: ActorId,
    outbox: Outbox,
    bus: WalBus,
    snapshot: Checkpoint,
    shards: ShardedLocks<Shard>,
    writers: AsyncShardedLocks,
    /// Changes between their commit and their install: the log position each
    /// registered → how many (the snapshot's low-water mark).
    in_flight: Mutex<BTreeMap<u64, usize>>,
    hints: Mutex<Hints>,
    /// The last snapshot's replay start (0 without one).
    snapshot_from: std::sync::atomic::AtomicU64,
    limits: Limits,
    max_line_qty: u32,
    max_lines: usize,
    clock: SharedClock,
}

/// A change between its commit and its install; dropping it ends that.
struct Pin<'a> {
    store: &'a CartStore,
    from: u64,
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.store.in_flight.lock();
        if let Some(n) = in_flight.get_mut(&self.from) {
            *n -= 1;
            if *n == 0 {
                in_flight.remove(&self.from);
            }
        }
    }
}

fn corrupt(dir: &Path, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        dir: dir.display().to_string(),
        reason: reason.to_string(),
    }
}

/// About how many bytes `cart` takes in a record (to cut records, not exact).
fn approx_bytes(user: &str, cart: &Cart) -> usize {
    let dots: usize = cart
        .lines()
        .map(|(sku, _)| sku.len() + 8 + cart.line(sku).map_or(0, |l| l.dots().count()) * 40)
        .sum();
    64 + user.len() + cart.clock().len() * 32 + dots + cart.deferred_count() * 256
}

impl CartStore {
    /// Opens (creating if needed) the store in `dir`, loading the snapshot and
    /// replaying the log after it.
    pub fn open(
        dir: &Path,
        config: &CartConfig,
        clock: SharedClock,
    ) -> Result<(Self, Recovery), StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Storage(e.to_string()))?;
        let durability = config.durability;
        let actor_file = Checkpoint::new(dir.join("actor.id"), durability);
        let actor = match actor_file.load()? {
            Some(id) => ActorId(id),
            None => {
                let actor = ActorId::random();
                actor_file.store(actor.0)?;
                actor
            }
        };
        let outbox = Outbox::open(dir.join("log"), wal_config(durability))?;
        let bus = WalBus::open(dir.join("bus"), wal_config(durability))?;
        let store = Self {
            actor,
            outbox,
            bus,
            snapshot: Checkpoint::new(dir.join("carts.snapshot"), durability),
            shards: ShardedLocks::new(BUCKETS).expect("a valid shard count"),
            writers: AsyncShardedLocks::new(WRITER_SHARDS).expect("a valid shard count"),
            in_flight: Mutex::new(BTreeMap::new()),
            hints: Mutex::new(Hints::new(config.hint_capacity)),
            snapshot_from: std::sync::atomic::AtomicU64::new(0),
            limits: wire_limits(config.max_lines),
            max_line_qty: config.max_line_qty,
            max_lines: config.max_lines,
            clock,
        };
        let recovery = store.recover(dir)?;
        Ok((store, recovery))
    }

    fn recover(&self, dir: &Path) -> Result<Recovery, StoreError> {
        let mut recovery = Recovery::default();
        let mut from = self.outbox.first_seq();
        if let Some(bytes) = self.snapshot.load_bytes()? {
            let body: SnapshotBody = serde_json::from_slice(&bytes)
                .map_err(|e| corrupt(dir, format!("carts.snapshot: {e}")))?;
            if body.v != 1 {
                return Err(corrupt(dir, format!("carts.snapshot: version {}", body.v)));
            }
            if body.replay_from < self.outbox.first_seq() {
                return Err(corrupt(
                    dir,
                    format!(
                        "the snapshot replays from {} but the log starts at {}",
                        body.replay_from,
                        self.outbox.first_seq()
                    ),
                ));
            }
            recovery.snapshot_carts = body.carts.len();
            for UserCart { user, cart } in &body.carts {
                self.install(user, cart);
            }
            let mut hints = self.hints.lock();
            for set in &body.hints {
                for user in &set.users {
                    hints.add(&set.zone, user);
                }
            }
            from = body.replay_from;
            self.snapshot_from
                .store(body.replay_from, std::sync::atomic::Ordering::Relaxed);
        }
        loop {
            let entries = self.outbox.entries(from, REPLAY_CHUNK)?;
            let Some(last) = entries.last().map(|e| e.seq) else {
                break;
            };
            for entry in entries {
                let record: LogRecord = serde_json::from_value(entry.change)
                    .map_err(|e| corrupt(dir, format!("log record {}: {e}", entry.seq)))?;
                self.apply_record(&record);
                recovery.replayed += 1;
            }
            from = last + 1;
        }
        recovery.carts = self.len();
        recovery.hints = self.hints.lock().total();
        Ok(recovery)
    }

    fn apply_record(&self, record: &LogRecord) {
        for UserCart { user, cart } in &record.carts {
            self.install(user, cart);
        }
        let mut hints = self.hints.lock();
        for set in &record.hints {
            for user in &set.users {
                hints.add(&set.zone, user);
            }
        }
        for set in &record.handed_off {
            hints.remove(&set.zone, &set.users);
        }
    }

    /// This replica's actor id.
    pub fn actor(&self) -> ActorId {
        self.actor
    }

    /// The log (an outbox: its entries' events go to the bus).
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The replica's event bus.
    pub fn bus(&self) -> &WalBus {
        &self.bus
    }

    /// The relay publishing the log's cart events to the bus.
    pub fn relay(&self) -> Relay {
        self.outbox
            .relay(Arc::new(self.bus.clone()) as Arc<dyn EventBus>, RELAY_BATCH)
    }

    /// The bounds states from elsewhere are checked against.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Carts held.
    pub fn len(&self) -> usize {
        (0..BUCKETS)
            .map(|b| self.shards.lock_shard(b).map_or(0, |s| s.carts.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `user`'s cart, if this replica holds one.
    pub fn get(&self, user: &str) -> Option<Cart> {
        self.shards
            .lock(user)
            .carts
            .get(user)
            .map(|s| s.cart.clone())
    }

    /// The digest bucket of `user`.
    pub fn bucket_of(&self, user: &str) -> usize {
        self.shards.shard_of(user)
    }

    /// Merges `cart` into memory, keeping the digest current; returns the result.
    fn install(&self, user: &str, cart: &Cart) -> Cart {
        let mut shard = self.shards.lock(user);
        let shard = &mut *shard;
        let (old, merged) = match shard.carts.get_mut(user) {
            Some(stored) => {
                stored.cart.merge(cart);
                let old = stored.hash;
                stored.hash = cart_hash(user, &stored.cart);
                (old, stored)
            }
            None => {
                let stored = Stored {
                    cart: cart.clone(),
                    hash: cart_hash(user, cart),
                };
                shard.carts.insert(user.to_owned(), stored);
                (0, shard.carts.get_mut(user).expect("just inserted"))
            }
        };
        shard.digest ^= old ^ merged.hash;
        merged.cart.clone()
    }

    /// Registers a change about to commit (see [`Pin`]).
    fn begin(&self) -> Pin<'_> {
        let mut in_flight = self.in_flight.lock();
        // Read under the lock, so a snapshot's low-water mark (also taken under it)
        // is never above the position of a change about to commit.
        let from = self.outbox.next_seq();
        *in_flight.entry(from).or_default() += 1;
        Pin { store: self, from }
    }

    /// Applies a write's operations to `user`'s cart as this replica's actor:
    /// `observed` (the coordinator's read) merged first, then each operation in
    /// order; the new state, the hints and the cart events are one durable record.
    /// All or nothing: a refused operation writes nothing. Returns the cart as this
    /// replica holds it afterwards.
    pub async fn write(
        &self,
        user: &str,
        ops: &[Op],
        observed: Option<&Cart>,
        hints: &[String],
    ) -> Result<Cart, StoreError> {
        if let Some(observed) = observed {
            observed
                .check(&self.limits)
                .map_err(|reason| StoreError::Invalid {
                    field: "observed",
                    reason,
                })?;
        }
        let _writer = self.writers.lock(user).await;
        let stored = self.get(user).unwrap_or_default();
        let mut cart = stored.clone();
        if let Some(observed) = observed {
            cart.merge(observed);
        }
        let mut events = Vec::new();
        for op in ops {
            self.apply_op(user, &mut cart, op, &mut events)?;
        }
        // What a peer would refuse is not written (only a cart swollen by
        // concurrent writers on every replica gets here).
        cart.check(&self.limits)
            .map_err(|reason| StoreError::Invalid {
                field: "cart",
                reason,
            })?;
        if cart == stored && hints.is_empty() {
            return Ok(cart);
        }
        let record = LogRecord {
            carts: vec![UserCart {
                user: user.to_owned(),
                cart: cart.clone(),
            }],
            hints: hints
                .iter()
                .map(|zone| HintSet {
                    zone: zone.clone(),
                    users: vec![user.to_owned()],
                })
                .collect(),
            handed_off: Vec::new(),
        };
        let change = serde_json::to_value(&record).expect("records always serialise");
        let _pin = self.begin();
        self.outbox.commit(change, events).await?;
        let held = self.install(user, &cart);
        let mut pending = self.hints.lock();
        for zone in hints {
            pending.add(zone, user);
        }
        Ok(held)
    }

    fn apply_op(
        &self,
        user: &str,
        cart: &mut Cart,
        op: &Op,
        events: &mut Vec<OutboundEvent>,
    ) -> Result<(), StoreError> {
        let sku = op.sku();
        super::crdt::check_sku(sku, self.limits.max_sku_len).map_err(|reason| {
            StoreError::Invalid {
                field: "sku",
                reason,
            }
        })?;
        let before = cart.quantity(sku).min(self.max_line_qty);
        let had = cart.contains(sku);
        let new_line = !had && !matches!(op, Op::Remove { .. });
        if new_line && cart.line_count() >= self.max_lines {
            return Err(StoreError::CartFull {
                sku: sku.to_owned(),
                max: self.max_lines,
            });
        }
        let check_qty = |qty: u32| {
            if (1..=self.max_line_qty).contains(&qty) {
                Ok(qty)
            } else {
                Err(StoreError::Invalid {
                    field: "qty",
                    reason: format!("must be between 1 and {}", self.max_line_qty),
                })
            }
        };
        match op {
            Op::Add { qty, .. } => {
                let added = cart.add(self.actor, sku, check_qty(*qty)?, self.max_line_qty);
                if added > 0 {
                    let qty = cart.quantity(sku).min(self.max_line_qty);
                    events.push(self.event(
                        "ItemAdded",
                        user,
                        json!({ "user": user, "sku": sku, "added": added, "qty": qty }),
                    ));
                }
            }
            Op::Set { qty, .. } => {
                cart.set(self.actor, sku, check_qty(*qty)?);
                let qty = cart.quantity(sku).min(self.max_line_qty);
                if !had {
                    events.push(self.event(
                        "ItemAdded",
                        user,
                        json!({ "user": user, "sku": sku, "added": qty, "qty": qty }),
                    ));
                } else if qty != before {
                    events.push(self.event(
                        "QuantityChanged",
                        user,
                        json!({ "user": user, "sku": sku, "from": before, "qty": qty }),
                    ));
                }
            }
            Op::Remove { context, .. } => {
                let waits = !cart.clock().descends(context);
                if waits && cart.deferred_count() >= MAX_LOCAL_DEFERRED {
                    return Err(StoreError::TooManyPendingRemoves);
                }
                context
                    .check(&self.limits)
                    .map_err(|reason| StoreError::Invalid {
                        field: "context",
                        reason,
                    })?;
                cart.remove(sku, context);
                let qty = cart.quantity(sku).min(self.max_line_qty);
                if had && !cart.contains(sku) {
                    events.push(self.event(
                        "ItemRemoved",
                        user,
                        json!({ "user": user, "sku": sku, "qty": before }),
                    ));
                } else if had && qty != before {
                    events.push(self.event(
                        "QuantityChanged",
                        user,
                        json!({ "user": user, "sku": sku, "from": before, "qty": qty }),
                    ));
                }
            }
        }
        Ok(())
    }

    fn event(&self, kind: &str, user: &str, payload: serde_json::Value) -> OutboundEvent {
        OutboundEvent {
            topic: EVENTS_TOPIC.to_owned(),
            event: Event::new(kind, user, payload, &*self.clock),
        }
    }

    /// Merges states from elsewhere (a peer's push or handoff, read repair,
    /// anti-entropy); what changes anything is made durable first. Returns how many
    /// carts changed. Every state is checked first; one bad state refuses them all.
    pub async fn merge(&self, carts: &[UserCart]) -> Result<usize, StoreError> {
        for UserCart { user, cart } in carts {
            super::model::check_user(user).map_err(|e| StoreError::Invalid {
                field: "user",
                reason: e.error,
            })?;
            cart.check(&self.limits)
                .map_err(|reason| StoreError::Invalid {
                    field: "carts",
                    reason: format!("{user}: {reason}"),
                })?;
        }
        let changed: Vec<&UserCart> = carts
            .iter()
            .filter(|uc| {
                self.shards
                    .lock(uc.user.as_str())
                    .carts
                    .get(&uc.user)
                    .is_none_or(|s| s.cart.would_change(&uc.cart))
            })
            .collect();
        if changed.is_empty() {
            return Ok(0);
        }
        let _pin = self.begin();
        let mut record = LogRecord::default();
        let mut bytes = 0;
        for uc in &changed {
            bytes += approx_bytes(&uc.user, &uc.cart);
            record.carts.push((*uc).clone());
            if bytes >= RECORD_TARGET_BYTES {
                self.commit(std::mem::take(&mut record)).await?;
                bytes = 0;
            }
        }
        if !record.carts.is_empty() {
            self.commit(record).await?;
        }
        for uc in &changed {
            self.install(&uc.user, &uc.cart);
        }
        Ok(changed.len())
    }

    async fn commit(&self, record: LogRecord) -> Result<u64, StoreError> {
        let change = serde_json::to_value(&record).expect("records always serialise");
        Ok(self.outbox.commit(change, Vec::new()).await?)
    }

    /// Records durably that `zone` must get these users' carts.
    pub async fn add_hints(&self, zone: &str, users: &[String]) -> Result<(), StoreError> {
        if users.is_empty() {
            return Ok(());
        }
        let record = LogRecord {
            hints: vec![HintSet {
                zone: zone.to_owned(),
                users: users.to_vec(),
            }],
            ..LogRecord::default()
        };
        self.commit(record).await?;
        let mut hints = self.hints.lock();
        for user in users {
            hints.add(zone, user);
        }
        Ok(())
    }

    /// Records durably that `zone` has these users' carts now.
    pub async fn hints_delivered(&self, zone: &str, users: &[String]) -> Result<(), StoreError> {
        if users.is_empty() {
            return Ok(());
        }
        let record = LogRecord {
            handed_off: vec![HintSet {
                zone: zone.to_owned(),
                users: users.to_vec(),
            }],
            ..LogRecord::default()
        };
        self.commit(record).await?;
        self.hints.lock().remove(zone, users);
        Ok(())
    }

    /// The hint store (read it, do not hold the guard across an await).
    pub fn hints(&self) -> parking_lot::MutexGuard<'_, Hints> {
        self.hints.lock()
    }

    /// The digest: one XOR of cart hashes per bucket.
    pub fn digest(&self) -> Vec<u64> {
        (0..BUCKETS)
            .map(|b| self.shards.lock_shard(b).map_or(0, |s| s.digest))
            .collect()
    }

    /// `(user, hash)` of every cart in `bucket`, by user.
    pub fn bucket_listing(&self, bucket: usize) -> Vec<(String, u64)> {
        let Some(shard) = self.shards.lock_shard(bucket) else {
            return Vec::new();
        };
        let mut listing: Vec<(String, u64)> = shard
            .carts
            .iter()
            .map(|(user, s)| (user.clone(), s.hash))
            .collect();
        drop(shard);
        listing.sort_unstable();
        listing
    }

    /// Compares a peer's listing of `bucket` with this replica's: this replica's
    /// carts the peer lacks or holds differently (at most `max`; `more` if there
    /// were more), and the users whose carts this replica lacks or holds
    /// differently (it wants them).
    pub fn compare_bucket(
        &self,
        bucket: usize,
        theirs: &[(String, u64)],
        max: usize,
    ) -> (Vec<UserCart>, Vec<String>, bool) {
        let Some(shard) = self.shards.lock_shard(bucket) else {
            return (Vec::new(), Vec::new(), false);
        };
        let their: HashMap<&str, u64> = theirs.iter().map(|(u, h)| (u.as_str(), *h)).collect();
        let mut give = Vec::new();
        let mut more = false;
        for (user, stored) in &shard.carts {
            if their.get(user.as_str()) != Some(&stored.hash) {
                if give.len() == max {
                    more = true;
                    break;
                }
                give.push(UserCart {
                    user: user.clone(),
                    cart: stored.cart.clone(),
                });
            }
        }
        let want = theirs
            .iter()
            .filter(|(user, hash)| {
                shard
                    .carts
                    .get(user.as_str())
                    .is_none_or(|s| s.hash != *hash)
            })
            .map(|(user, _)| user.clone())
            .collect();
        (give, want, more)
    }

    /// Writes a snapshot of every cart and hint and compacts the log below its
    /// replay start. The file is written on the blocking pool; nothing there holds
    /// the store.
    pub async fn snapshot(&self) -> Result<SnapshotReport, StoreError> {
        let replay_from = {
            let in_flight = self.in_flight.lock();
            let end = self.outbox.next_seq();
            in_flight.keys().next().map_or(end, |&first| first.min(end))
        };
        let mut carts = Vec::new();
        for b in 0..BUCKETS {
            if let Some(shard) = self.shards.lock_shard(b) {
                carts.extend(shard.carts.iter().map(|(user, s)| UserCart {
                    user: user.clone(),
                    cart: s.cart.clone(),
                }));
            }
        }
        let hints = self
            .hints
            .lock()
            .all()
            .into_iter()
            .map(|(zone, users)| HintSet { zone, users })
            .collect();
        let count = carts.len();
        let checkpoint = self.snapshot.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            let body = SnapshotBody {
                v: 1,
                replay_from,
                carts,
                hints,
            };
            let bytes = serde_json::to_vec(&body).expect("snapshots always serialise");
            checkpoint.store_bytes(&bytes).map(|()| bytes.len())
        })
        .await
        .map_err(|e| StoreError::Storage(format!("snapshot task: {e}")))??;
        self.snapshot_from
            .store(replay_from, std::sync::atomic::Ordering::Relaxed);
        let segments_dropped = self.outbox.truncate_before(replay_from)?;
        Ok(SnapshotReport {
            carts: count,
            replay_from,
            bytes,
            segments_dropped,
        })
    }

    /// Whether anything was logged since the last snapshot's replay start.
    pub fn changed_since_snapshot(&self) -> bool {
        self.outbox.next_seq()
            > self
                .snapshot_from
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Drops bus events older than the newest `keep`.
    pub fn compact_events(&self, keep: u64) -> Result<usize, StoreError> {
        let end = self.bus.end_offset(EVENTS_TOPIC)?;
        Ok(self
            .bus
            .truncate_before(EVENTS_TOPIC, end.saturating_sub(keep))?)
    }
}
