//! The embedded [`InventoryStore`]: state in memory under sharded locks, every
//! decision in the kit's WAL before anyone hears of it, snapshots to bound
//! recovery.
//!
//! # How a decision is taken
//! 1. A keyed request claims its idempotency key ([`keys`]); a decided key
//!    replays its first outcome instead.
//! 2. A place in the WAL's queue is reserved ([`Wal::reserve_append`]; this is
//!    where back-pressure waits, before any lock).
//! 3. Under the snapshot barrier (read side) and the locks of the SKUs' shards
//!    (`casebook_kit::locks`, ascending order), the request is checked against the
//!    state, its effects are applied through [`Shard::apply`], and its record —
//!    effects plus the key and its outcome — is queued into the reserved place.
//!    Nothing in this step awaits, so no lock is held across an `.await`.
//! 4. The locks are released; the caller awaits its record's durability
//!    (group commit: one `fdatasync` for every record queued meanwhile) and only
//!    then answers.
//!
//! # Guarantees
//! - **Log order is decision order per SKU**: a record is queued while its SKUs'
//!   shards are locked, and the WAL writes records in the order they were queued.
//!   Because the log's durable part is a prefix, an answered decision implies that
//!   every decision it depended on is durable too.
//! - **Nothing unrecorded is reported.** Every answer — reads included — waits for
//!   the last record that changed the SKUs it reports ([`state::Ack`]), so a crash
//!   can never take back something a client saw.
//! - **A key and its effect are one record**: after a crash, a retry finds the
//!   key with the reservation it made, or neither.
//! - **Fail closed.** A WAL error (the log is fail-stop after one) marks the store
//!   failed: that decision and every later request answer
//!   [`InventoryError::Unavailable`] (503). Decisions whose records did not reach
//!   the disk are lost with the memory at restart; none was ever acknowledged.
//! - **Bounded recovery.** After `snapshot_after_records` records the state is
//!   written whole (decisions held back for the copy) with the WAL position it
//!   reflects; then the WAL is cut before that position. Start-up reads the
//!   snapshot and replays at most the records after it.
//! - **Bounded memory**: at most `max_reservations` reservations held (active or
//!   kept after they ended) and `max_keys` idempotency keys; beyond, new ones are
//!   refused (`Full`, 503), never evicted. Ended reservations and decided keys are
//!   forgotten `retention` after they ended (on the injected clock).
//!
//! # Not guaranteed
//! - A snapshot pauses decisions while the state is copied (milliseconds per
//!   hundred thousand reservations); reads go on.
//! - A reservation is expired by the sweep or lazily by the next request that
//!   needs its stock (or looks at it), not at the exact millisecond of its TTL.
//! - Reservation ids are unique but not dense or ordered by time across SKUs.

mod keys;
pub(crate) mod record;
pub(crate) mod snapshot;
pub(crate) mod state;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use casebook_kit::clock::SharedClock;
use casebook_kit::events::Checkpoint;
use casebook_kit::locks::{MultiGuard, ShardedLocks};
use casebook_kit::runtime::BoxFuture;
use casebook_kit::wal::{Wal, WalConfig};
use parking_lot::{Mutex, RwLock};

use self::keys::{Begin, DecidedKey, Keys};
use self::record::{Effect, KeyOutcome, KeyRecord, MAX_EFFECTS, Record};
use self::snapshot::{Image, SavedHeld, SavedSku};
use self::state::{Ack, Held, Shard};
use super::model::{
    InventoryError, Replayable, Reservation, ReservationId, ReservationState, ReserveOutcome,
    ReserveRequest, Sku, StockLevel, TtlRule,
};
use super::store::InventoryStore;

/// Records read per step of the replay at start.
const REPLAY_CHUNK: usize = 4096;
/// Due reservations a request expires on its way (the sweep does the rest).
const LAZY_EXPIRY_BUDGET: usize = 256;
/// Expiries per sweep record.
const SWEEP_BATCH: usize = 512;

/// How the embedded store is sized and kept.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// Lock shards over the SKUs (and over the idempotency keys).
    pub shards: usize,
    /// Reservations held at most (active, or ended and not yet forgotten).
    pub max_reservations: usize,
    /// Idempotency keys held at most.
    pub max_keys: usize,
    /// How long ended reservations and decided keys are kept.
    pub retention: Duration,
    /// A snapshot is taken once this many records follow the last one.
    pub snapshot_after_records: u64,
    pub wal: WalConfig,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            shards: 256,
            max_reservations: 5_000_000,
            max_keys: 5_000_000,
            retention: Duration::from_secs(24 * 3600),
            snapshot_after_records: 1_000_000,
            wal: WalConfig::default(),
        }
    }
}

/// What opening the store found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// The WAL position the snapshot reflected, if there was one.
    pub snapshot_at: Option<u64>,
    /// Records replayed after it.
    pub replayed: u64,
    pub skus: usize,
    pub reservations: usize,
    pub keys: usize,
}

/// The embedded inventory store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WalInventory {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    clock: SharedClock,
    config: EmbeddedConfig,
    wal: Wal,
    /// Decisions hold it shared; a snapshot's copy holds it exclusively.
    barrier: RwLock<()>,
    shards: ShardedLocks<Shard>,
    /// Reservation id → its SKU (whose shard holds it).
    index: ShardedLocks<HashMap<u64, Sku>>,
    keys: Arc<Keys>,
    next_id: AtomicU64,
    /// The WAL's next seq when opened: record `seq_base + n` is the n-th queued since.
    seq_base: u64,
    queued: AtomicU64,
    /// The last record queued, for a snapshot to wait on.
    last_ack: Mutex<Option<Ack>>,
    held_count: AtomicUsize,
    failure: OnceLock<String>,
    snapshot_file: Checkpoint,
    snapshot_at: AtomicU64,
    snapshotting: tokio::sync::Mutex<()>,
    recovery: Recovery,
}

/// A decision in progress: the locked shards and what has been applied.
struct Decision<'g> {
    guard: MultiGuard<'g, parking_lot::Mutex<Shard>>,
    at_ms: u64,
    effects: Vec<Effect>,
    touched: Vec<Sku>,
    reserved: Vec<(u64, Sku)>,
    key: Option<KeyRecord>,
}

impl Decision<'_> {
    fn shard(&mut self, sku: &Sku) -> &mut Shard {
        self.guard
            .get_mut(sku)
            .expect("a decision touches only the SKUs it locked")
    }

    fn apply(&mut self, sku: &Sku, effect: Effect) -> Result<(), InventoryError> {
        let at_ms = self.at_ms;
        self.shard(sku)
            .apply(&effect, at_ms)
            .map_err(|e| InventoryError::Unavailable(format!("internal: {e}")))?;
        if let Effect::Reserve { id, .. } = &effect {
            self.reserved.push((id.0, sku.clone()));
        }
        if !self.touched.contains(sku) {
            self.touched.push(sku.clone());
        }
        self.effects.push(effect);
        Ok(())
    }

    /// Expires due reservations in `sku`'s shard (of any of its SKUs).
    fn expire_due_near(&mut self, sku: &Sku, limit: usize) -> Result<(), InventoryError> {
        let at_ms = self.at_ms;
        let shard = self.shard(sku);
        let due: Vec<(ReservationId, Sku)> = shard
            .due_at(at_ms, limit)
            .into_iter()
            .map(|id| (id, shard.held[&id.0].sku.clone()))
            .collect();
        for (id, owner) in due {
            self.apply(&owner, Effect::Expire { id })?;
        }
        Ok(())
    }

    fn counters(&mut self, sku: &Sku) -> Option<StockLevel> {
        let state = self.shard(sku).skus.get(sku)?;
        Some(StockLevel {
            sku: sku.to_string(),
            available: state.available,
            reserved: state.reserved,
            confirmed: state.confirmed,
        })
    }
}

fn unique(skus: impl IntoIterator<Item = Sku>) -> Vec<Sku> {
    let mut out: Vec<Sku> = Vec::new();
    for sku in skus {
        if !out.contains(&sku) {
            out.push(sku);
        }
    }
    out
}

impl WalInventory {
    /// Opens the store in `dir` (`log/` for the WAL, `snapshot` for the latest
    /// snapshot), recovering the state: the snapshot, then the records after it.
    /// Blocking file I/O: call it off the async workers.
    pub fn open(
        dir: &Path,
        config: EmbeddedConfig,
        clock: SharedClock,
    ) -> anyhow::Result<WalInventory> {
        let wal = Wal::open(dir.join("log"), config.wal.clone())
            .with_context(|| format!("inventory log in {}", dir.display()))?;
        let snapshot_path: PathBuf = dir.join("snapshot");
        let snapshot_file = Checkpoint::new(&snapshot_path, config.wal.durability);
        let image = match snapshot_file
            .load_bytes()
            .with_context(|| format!("inventory snapshot {}", snapshot_path.display()))?
        {
            Some(bytes) => Some(Image::decode(&bytes).map_err(|e| {
                anyhow::anyhow!("inventory snapshot {}: {e}", snapshot_path.display())
            })?),
            None => None,
        };
        let replay_from = image.as_ref().map_or(0, |i| i.replay_from);
        if replay_from < wal.first_seq() || replay_from > wal.next_seq() {
            anyhow::bail!(
                "inventory log in {} holds records {}..{} but the snapshot continues at {} \
                 (records are missing; restore the directory from a backup)",
                dir.display(),
                wal.first_seq(),
                wal.next_seq(),
                replay_from
            );
        }
        let retention_ms = u64::try_from(config.retention.as_millis()).unwrap_or(u64::MAX);
        let inner = Inner {
            shards: ShardedLocks::new(config.shards).context("inventory shards")?,
            index: ShardedLocks::new(config.shards).context("inventory shards")?,
            keys: Arc::new(Keys::new(config.shards, config.max_keys, retention_ms)),
            barrier: RwLock::new(()),
            next_id: AtomicU64::new(1),
            seq_base: 0,
            queued: AtomicU64::new(0),
            last_ack: Mutex::new(None),
            held_count: AtomicUsize::new(0),
            failure: OnceLock::new(),
            snapshot_file,
            snapshot_at: AtomicU64::new(replay_from),
            snapshotting: tokio::sync::Mutex::new(()),
            recovery: Recovery {
                snapshot_at: image.as_ref().map(|i| i.replay_from),
                replayed: 0,
                skus: 0,
                reservations: 0,
                keys: 0,
            },
            clock,
            config,
            wal,
        };
        let mut inner = inner;
        if let Some(image) = image {
            inner.restore(image);
        }
        let mut reader = inner.wal.reader(replay_from)?;
        let mut replayed = 0;
        loop {
            let mut progressed = false;
            for _ in 0..REPLAY_CHUNK {
                let Some(entry) = reader.next_record()? else {
                    break;
                };
                let record = Record::decode(&entry.payload)
                    .and_then(|record| inner.replay(&record).map(|()| record))
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "inventory log in {}: record {}: {e}",
                            dir.display(),
                            entry.seq
                        )
                    })?;
                drop(record);
                replayed += 1;
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        inner.seq_base = inner.wal.next_seq();
        inner.recovery.replayed = replayed;
        inner.recovery.skus = (0..inner.shards.shard_count())
            .map(|i| inner.shards.lock_shard(i).expect("in range").skus.len())
            .sum();
        inner.recovery.reservations = inner.held_count.load(Ordering::Relaxed);
        inner.recovery.keys = inner.keys.len();
        Ok(WalInventory {
            inner: Arc::new(inner),
        })
    }

    /// What opening found.
    pub fn recovery(&self) -> Recovery {
        self.inner.recovery
    }

    /// The failure that closed the store, if one did.
    pub fn failure(&self) -> Option<&str> {
        self.inner.failure.get().map(String::as_str)
    }

    /// Records queued since the last snapshot.
    pub fn records_since_snapshot(&self) -> u64 {
        (self.inner.seq_base + self.inner.queued.load(Ordering::Relaxed))
            .saturating_sub(self.inner.snapshot_at.load(Ordering::Relaxed))
    }

    /// Whether a snapshot is due (`snapshot_after_records` since the last).
    pub fn snapshot_due(&self) -> bool {
        self.records_since_snapshot() >= self.inner.config.snapshot_after_records.max(1)
    }

    /// Writes a snapshot of the whole state, then drops the WAL segments before
    /// it. Returns the WAL position it reflects. One at a time.
    pub async fn snapshot(&self) -> Result<u64, InventoryError> {
        let _one = self.inner.snapshotting.lock().await;
        let inner = self.inner.clone();
        let (image, last) = tokio::task::spawn_blocking(move || inner.capture())
            .await
            .map_err(|e| InventoryError::Unavailable(e.to_string()))?;
        // Only durable state may be written: wait for the last record it reflects.
        if let Some(last) = last {
            last.durable().await.map_err(|e| self.inner.fail(e))?;
        }
        let inner = self.inner.clone();
        let at = image.replay_from;
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            inner.snapshot_file.store_bytes(&image.encode())?;
            inner.wal.truncate_before(image.replay_from)?;
            Ok(())
        })
        .await
        .map_err(|e| InventoryError::Unavailable(e.to_string()))?
        // A failed snapshot changes nothing: the WAL still holds every record.
        .map_err(|e| InventoryError::Unavailable(format!("snapshot: {e:#}")))?;
        self.inner.snapshot_at.store(at, Ordering::Relaxed);
        metrics::counter!("amazon_inventory_snapshots_total").increment(1);
        Ok(at)
    }

    /// Forgets ended reservations and decided keys older than the retention;
    /// returns how many of each.
    pub fn purge(&self) -> (usize, usize) {
        let inner = &self.inner;
        let now = inner.clock.wall_millis();
        let retention_ms = u64::try_from(inner.config.retention.as_millis()).unwrap_or(u64::MAX);
        let cutoff = now.saturating_sub(retention_ms);
        let mut forgotten = 0;
        for i in 0..inner.shards.shard_count() {
            let gone = inner
                .shards
                .lock_shard(i)
                .expect("in range")
                .forget_ended(cutoff);
            for id in &gone {
                inner.index.lock(id).remove(id);
            }
            forgotten += gone.len();
        }
        inner.held_count.fetch_sub(forgotten, Ordering::Relaxed);
        (forgotten, inner.keys.purge(now))
    }

    /// Reservations held now (active, or ended and not yet forgotten).
    pub fn held(&self) -> usize {
        self.inner.held_count.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn fail(&self, error: impl std::fmt::Display) -> InventoryError {
        let message = error.to_string();
        if self.failure.set(message.clone()).is_ok() {
            tracing::error!(%message, "inventory storage failed: refusing every request until restart");
            metrics::counter!("amazon_inventory_storage_failures_total").increment(1);
        }
        InventoryError::Unavailable(message)
    }

    fn check_open(&self) -> Result<(), InventoryError> {
        match self.failure.get() {
            Some(message) => Err(InventoryError::Unavailable(message.clone())),
            None => Ok(()),
        }
    }

    fn sku_of(&self, id: ReservationId) -> Result<Sku, InventoryError> {
        self.index
            .lock(&id.0)
            .get(&id.0)
            .cloned()
            .ok_or(InventoryError::UnknownReservation(id))
    }

    /// Takes one decision over `skus` (see the module notes). `decide` checks
    /// before it applies: an `Err` from it must leave the state unchanged (if it
    /// did not, the store fails closed). `on_queued` runs once the record is queued,
    /// still under the snapshot barrier.
    async fn decide<T>(
        &self,
        skus: &[Sku],
        decide: impl FnOnce(&mut Decision<'_>) -> Result<T, InventoryError>,
        on_queued: impl FnOnce(&T, u64, &Ack),
    ) -> Result<T, InventoryError> {
        self.check_open()?;
        let slot = self.wal.reserve_append().await.map_err(|e| self.fail(e))?;
        let (value, waits) = {
            let _barrier = self.barrier.read();
            self.check_open()?;
            let guard = self
                .shards
                .lock_many(skus.iter())
                .map_err(|e| InventoryError::Unavailable(e.to_string()))?;
            let mut decision = Decision {
                guard,
                at_ms: self.clock.wall_millis(),
                effects: Vec::new(),
                touched: Vec::new(),
                reserved: Vec::new(),
                key: None,
            };
            let value = match decide(&mut decision) {
                Ok(value) => value,
                Err(error) => {
                    if !decision.effects.is_empty() {
                        drop(decision);
                        return Err(
                            self.fail(format!("a refused decision had changed state: {error}"))
                        );
                    }
                    return Err(error);
                }
            };
            if decision.effects.is_empty() && decision.key.is_none() {
                // Nothing to record: answer once what the answer reflects is durable.
                let waits: Vec<Ack> = skus
                    .iter()
                    .filter_map(|sku| {
                        decision
                            .shard(sku)
                            .skus
                            .get(sku)
                            .and_then(|s| s.last_ack.clone())
                    })
                    .collect();
                (value, waits)
            } else {
                let at_ms = decision.at_ms;
                let record = Record {
                    at_ms,
                    key: decision.key.take(),
                    effects: std::mem::take(&mut decision.effects),
                };
                let ack = match slot.append(record.encode()) {
                    Ok(ack) => Ack::new(ack),
                    Err(error) => {
                        drop(decision);
                        return Err(self.fail(error));
                    }
                };
                for sku in std::mem::take(&mut decision.touched) {
                    if let Some(state) = decision.shard(&sku).skus.get_mut(&sku) {
                        state.last_ack = Some(ack.clone());
                    }
                }
                let reserved = std::mem::take(&mut decision.reserved);
                drop(decision);
                self.held_count.fetch_add(reserved.len(), Ordering::Relaxed);
                for (id, sku) in reserved {
                    self.index.lock(&id).insert(id, sku);
                }
                *self.last_ack.lock() = Some(ack.clone());
                self.queued.fetch_add(1, Ordering::Relaxed);
                on_queued(&value, at_ms, &ack);
                (value, vec![ack])
            }
        };
        for ack in waits {
            ack.durable().await.map_err(|e| self.fail(e))?;
        }
        Ok(value)
    }

    /// Puts the state of a snapshot in place (at open, before any request).
    fn restore(&mut self, image: Image) {
        self.next_id.store(image.next_id, Ordering::Relaxed);
        for saved in image.skus {
            let mut shard = self.shards.lock(&saved.sku);
            let state = shard.skus.entry(saved.sku).or_default();
            state.available = saved.available;
            state.reserved = saved.reserved;
            state.confirmed = saved.confirmed;
        }
        for saved in image.held {
            let held = Held {
                sku: saved.sku.clone(),
                qty: saved.qty,
                created_ms: saved.created_ms,
                expires_ms: saved.expires_ms,
                state: saved.state,
                order: saved.order.as_deref().map(Arc::from),
                ended_ms: saved.ended_ms,
            };
            let mut shard = self.shards.lock(&saved.sku);
            if held.state == ReservationState::Active {
                shard.due.insert((held.expires_ms, saved.id));
            }
            shard.held.insert(saved.id, held);
            self.index.lock(&saved.id).insert(saved.id, saved.sku);
            self.held_count.fetch_add(1, Ordering::Relaxed);
        }
        for key in image.keys {
            self.keys.restore(key);
        }
    }

    /// Applies one record read back from the WAL.
    fn replay(&self, record: &Record) -> Result<(), String> {
        let mut made = Vec::new();
        for effect in &record.effects {
            let sku = match effect {
                Effect::SetStock { sku, .. } | Effect::Reserve { sku, .. } => sku.clone(),
                Effect::Confirm { id, .. } | Effect::Release { id } | Effect::Expire { id } => {
                    self.sku_of(*id).map_err(|e| e.to_string())?
                }
            };
            self.shards.lock(&sku).apply(effect, record.at_ms)?;
            if let Effect::Reserve {
                id,
                qty,
                expires_ms,
                ..
            } = effect
            {
                self.index.lock(&id.0).insert(id.0, sku.clone());
                self.held_count.fetch_add(1, Ordering::Relaxed);
                self.next_id.fetch_max(id.0 + 1, Ordering::Relaxed);
                made.push(Reservation {
                    id: *id,
                    sku,
                    qty: *qty,
                    state: ReservationState::Active,
                    created_at_ms: record.at_ms,
                    expires_at_ms: *expires_ms,
                    order_id: None,
                });
            }
        }
        if let Some(key) = &record.key {
            let outcome = match &key.outcome {
                KeyOutcome::Reserved => ReserveOutcome::Reserved(made),
                KeyOutcome::Insufficient {
                    sku,
                    requested,
                    available,
                } => ReserveOutcome::Insufficient {
                    sku: sku.clone(),
                    requested: *requested,
                    available: *available,
                },
            };
            self.keys.restore(DecidedKey {
                scope: key.scope,
                key: key.key.clone(),
                fingerprint: key.fingerprint,
                at_ms: record.at_ms,
                outcome: Arc::new(outcome),
            });
        }
        Ok(())
    }

    /// Copies the whole state with decisions held back; returns it with the last
    /// record it reflects (to wait for before writing it).
    fn capture(&self) -> (Image, Option<Ack>) {
        let _barrier = self.barrier.write();
        let mut image = Image {
            replay_from: self.seq_base + self.queued.load(Ordering::Relaxed),
            next_id: self.next_id.load(Ordering::Relaxed),
            saved_at_ms: self.clock.wall_millis(),
            ..Image::default()
        };
        for i in 0..self.shards.shard_count() {
            let shard = self.shards.lock_shard(i).expect("in range");
            image
                .skus
                .extend(shard.skus.iter().map(|(sku, s)| SavedSku {
                    sku: sku.clone(),
                    available: s.available,
                    reserved: s.reserved,
                    confirmed: s.confirmed,
                }));
            image
                .held
                .extend(shard.held.iter().map(|(&id, h)| SavedHeld {
                    id,
                    sku: h.sku.clone(),
                    qty: h.qty,
                    created_ms: h.created_ms,
                    expires_ms: h.expires_ms,
                    state: h.state,
                    order: h.order.as_deref().map(str::to_owned),
                    ended_ms: h.ended_ms,
                }));
        }
        image.keys = self.keys.decided();
        let last = self.last_ack.lock().clone();
        (image, last)
    }
}

impl InventoryStore for WalInventory {
    fn set_stock<'a>(
        &'a self,
        sku: &'a Sku,
        available: u64,
    ) -> BoxFuture<'a, Result<StockLevel, InventoryError>> {
        Box::pin(async move {
            self.inner
                .decide(
                    std::slice::from_ref(sku),
                    |d| {
                        d.apply(
                            sku,
                            Effect::SetStock {
                                sku: sku.clone(),
                                available,
                            },
                        )?;
                        Ok(d.counters(sku).expect("just set"))
                    },
                    |_, _, _| {},
                )
                .await
        })
    }

    fn stock<'a>(&'a self, sku: &'a Sku) -> BoxFuture<'a, Result<StockLevel, InventoryError>> {
        Box::pin(async move {
            let inner = &self.inner;
            inner.check_open()?;
            let (level, last) = {
                let shard = inner.shards.lock(sku);
                let state = shard
                    .skus
                    .get(sku)
                    .ok_or_else(|| InventoryError::UnknownSku(sku.clone()))?;
                let level = StockLevel {
                    sku: sku.to_string(),
                    available: state.available,
                    reserved: state.reserved,
                    confirmed: state.confirmed,
                };
                (level, state.last_ack.clone())
            };
            if let Some(last) = last {
                last.durable().await.map_err(|e| inner.fail(e))?;
            }
            Ok(level)
        })
    }

    fn reserve(
        &self,
        request: ReserveRequest,
    ) -> BoxFuture<'_, Result<Replayable<ReserveOutcome>, InventoryError>> {
        Box::pin(async move {
            let inner = &self.inner;
            inner.check_open()?;
            if request.lines.is_empty() || request.lines.len() > MAX_EFFECTS / 2 {
                return Err(InventoryError::Unavailable(format!(
                    "a request reserves 1 to {} lines",
                    MAX_EFFECTS / 2
                )));
            }
            let claim = match inner.keys.begin(&request.key, inner.clock.wall_millis())? {
                Begin::Replay(outcome) => {
                    metrics::counter!("amazon_reservation_requests_total", "outcome" => "replayed")
                        .increment(1);
                    return Ok(Replayable {
                        value: (*outcome).clone(),
                        replayed: true,
                    });
                }
                Begin::Execute(claim) => claim,
            };
            let skus = unique(request.lines.iter().map(|l| l.sku.clone()));
            let ttl_ms = u64::try_from(request.ttl.as_millis()).unwrap_or(u64::MAX);
            let max_held = inner.config.max_reservations;
            let key = request.key.clone();
            let outcome = inner
                .decide(
                    &skus,
                    |d| {
                        // Units asked per SKU, in first-seen order.
                        let mut need: Vec<(Sku, u64)> = Vec::with_capacity(skus.len());
                        for line in &request.lines {
                            match need.iter_mut().find(|(s, _)| *s == line.sku) {
                                Some((_, n)) => *n += u64::from(line.qty),
                                None => need.push((line.sku.clone(), u64::from(line.qty))),
                            }
                        }
                        for (sku, _) in &need {
                            if !d.shard(sku).skus.contains_key(sku) {
                                return Err(InventoryError::UnknownSku(sku.clone()));
                            }
                        }
                        if inner.held_count.load(Ordering::Relaxed) + request.lines.len() > max_held
                        {
                            return Err(InventoryError::Full("reservation"));
                        }
                        let short = |d: &mut Decision<'_>| {
                            need.iter().find_map(|(sku, n)| {
                                let available = d.shard(sku).skus[sku].available;
                                (available < *n).then(|| (sku.clone(), *n, available))
                            })
                        };
                        let mut missing = short(d);
                        if missing.is_some() {
                            // Stock held by reservations past their TTL comes back first.
                            for (sku, _) in &need {
                                d.expire_due_near(sku, LAZY_EXPIRY_BUDGET)?;
                            }
                            missing = short(d);
                        }
                        let outcome = match missing {
                            Some((sku, requested, available)) => {
                                d.key = Some(KeyRecord {
                                    scope: key.scope,
                                    key: key.key.clone(),
                                    fingerprint: key.fingerprint,
                                    outcome: KeyOutcome::Insufficient {
                                        sku: sku.clone(),
                                        requested,
                                        available,
                                    },
                                });
                                ReserveOutcome::Insufficient {
                                    sku,
                                    requested,
                                    available,
                                }
                            }
                            None => {
                                let expires_ms = d.at_ms.saturating_add(ttl_ms);
                                let mut made = Vec::with_capacity(request.lines.len());
                                for line in &request.lines {
                                    let id = ReservationId(
                                        inner.next_id.fetch_add(1, Ordering::Relaxed),
                                    );
                                    d.apply(
                                        &line.sku,
                                        Effect::Reserve {
                                            id,
                                            sku: line.sku.clone(),
                                            qty: line.qty,
                                            expires_ms,
                                        },
                                    )?;
                                    made.push(Reservation {
                                        id,
                                        sku: line.sku.clone(),
                                        qty: line.qty,
                                        state: ReservationState::Active,
                                        created_at_ms: d.at_ms,
                                        expires_at_ms: expires_ms,
                                        order_id: None,
                                    });
                                }
                                d.key = Some(KeyRecord {
                                    scope: key.scope,
                                    key: key.key.clone(),
                                    fingerprint: key.fingerprint,
                                    outcome: KeyOutcome::Reserved,
                                });
                                ReserveOutcome::Reserved(made)
                            }
                        };
                        Ok(Arc::new(outcome))
                    },
                    |outcome, at_ms, ack| claim.decide(outcome.clone(), at_ms, ack.clone()),
                )
                .await?;
            let label = match &*outcome {
                ReserveOutcome::Reserved(_) => "reserved",
                ReserveOutcome::Insufficient { .. } => "insufficient",
            };
            metrics::counter!("amazon_reservation_requests_total", "outcome" => label).increment(1);
            Ok(Replayable {
                value: (*outcome).clone(),
                replayed: false,
            })
        })
    }

    fn reservation(&self, id: ReservationId) -> BoxFuture<'_, Result<Reservation, InventoryError>> {
        Box::pin(async move {
            let inner = &self.inner;
            inner.check_open()?;
            let sku = inner.sku_of(id)?;
            let now = inner.clock.wall_millis();
            let seen = {
                let shard = inner.shards.lock(&sku);
                let view = shard
                    .view(id)
                    .ok_or(InventoryError::UnknownReservation(id))?;
                let due = view.state == ReservationState::Active && view.expires_at_ms <= now;
                (!due).then(|| (view, shard.skus.get(&sku).and_then(|s| s.last_ack.clone())))
            };
            if let Some((view, last)) = seen {
                if let Some(last) = last {
                    last.durable().await.map_err(|e| inner.fail(e))?;
                }
                return Ok(view);
            }
            // Past its TTL: expire it (recorded) before showing it.
            inner
                .decide(
                    std::slice::from_ref(&sku),
                    |d| {
                        let at_ms = d.at_ms;
                        let held = d
                            .shard(&sku)
                            .held
                            .get(&id.0)
                            .ok_or(InventoryError::UnknownReservation(id))?;
                        if held.state == ReservationState::Active && held.expires_ms <= at_ms {
                            d.apply(&sku, Effect::Expire { id })?;
                            metrics::counter!("amazon_reservations_expired_total").increment(1);
                        }
                        d.shard(&sku)
                            .view(id)
                            .ok_or(InventoryError::UnknownReservation(id))
                    },
                    |_, _, _| {},
                )
                .await
        })
    }

    fn confirm<'a>(
        &'a self,
        ids: &'a [ReservationId],
        order_id: Option<&'a str>,
        ttl: TtlRule,
    ) -> BoxFuture<'a, Result<Vec<Reservation>, InventoryError>> {
        Box::pin(async move {
            let inner = &self.inner;
            inner.check_open()?;
            let mut unique_ids: Vec<ReservationId> = Vec::with_capacity(ids.len());
            for id in ids {
                if !unique_ids.contains(id) {
                    unique_ids.push(*id);
                }
            }
            let mut owners = Vec::with_capacity(unique_ids.len());
            for id in &unique_ids {
                owners.push((*id, inner.sku_of(*id)?));
            }
            let skus = unique(owners.iter().map(|(_, sku)| sku.clone()));
            inner
                .decide(
                    &skus,
                    |d| {
                        let at_ms = d.at_ms;
                        let mut expire = Vec::new();
                        let mut confirm = Vec::new();
                        let mut conflict = None;
                        for (id, sku) in &owners {
                            let held = d
                                .shard(sku)
                                .held
                                .get(&id.0)
                                .ok_or(InventoryError::UnknownReservation(*id))?;
                            let refuse = |state| InventoryError::Conflict { id: *id, state };
                            match held.state {
                                ReservationState::Active
                                    if ttl == TtlRule::Enforce && held.expires_ms <= at_ms =>
                                {
                                    expire.push((*id, sku.clone()));
                                    conflict.get_or_insert(refuse(ReservationState::Expired));
                                }
                                ReservationState::Active => confirm.push((*id, sku.clone())),
                                ReservationState::Confirmed
                                    if order_id.is_none() || held.order.as_deref() == order_id => {}
                                state => {
                                    conflict.get_or_insert(refuse(state));
                                }
                            }
                        }
                        for (id, sku) in expire {
                            d.apply(&sku, Effect::Expire { id })?;
                            metrics::counter!("amazon_reservations_expired_total").increment(1);
                        }
                        if let Some(conflict) = conflict {
                            return Ok(Err(conflict));
                        }
                        for (id, sku) in confirm {
                            d.apply(
                                &sku,
                                Effect::Confirm {
                                    id,
                                    order: order_id.map(str::to_owned),
                                },
                            )?;
                        }
                        Ok(Ok(owners
                            .iter()
                            .map(|(id, sku)| d.shard(sku).view(*id).expect("held"))
                            .collect()))
                    },
                    |_, _, _| {},
                )
                .await?
        })
    }

    fn release(&self, id: ReservationId) -> BoxFuture<'_, Result<Reservation, InventoryError>> {
        Box::pin(async move {
            let inner = &self.inner;
            inner.check_open()?;
            let sku = inner.sku_of(id)?;
            inner
                .decide(
                    std::slice::from_ref(&sku),
                    |d| {
                        let at_ms = d.at_ms;
                        let held = d
                            .shard(&sku)
                            .held
                            .get(&id.0)
                            .ok_or(InventoryError::UnknownReservation(id))?;
                        match held.state {
                            ReservationState::Active if held.expires_ms <= at_ms => {
                                d.apply(&sku, Effect::Expire { id })?;
                                metrics::counter!("amazon_reservations_expired_total").increment(1);
                            }
                            ReservationState::Active => d.apply(&sku, Effect::Release { id })?,
                            ReservationState::Confirmed => {
                                return Ok(Err(InventoryError::Conflict {
                                    id,
                                    state: ReservationState::Confirmed,
                                }));
                            }
                            ReservationState::Released | ReservationState::Expired => {}
                        }
                        Ok(Ok(d.shard(&sku).view(id).expect("held")))
                    },
                    |_, _, _| {},
                )
                .await?
        })
    }

    fn expire_due(&self, budget: usize) -> BoxFuture<'_, Result<usize, InventoryError>> {
        Box::pin(async move {
            let inner = &self.inner;
            inner.check_open()?;
            let mut expired = 0;
            for index in 0..inner.shards.shard_count() {
                if expired >= budget {
                    break;
                }
                let now = inner.clock.wall_millis();
                let due: Vec<(ReservationId, Sku)> = {
                    let shard = inner.shards.lock_shard(index).expect("in range");
                    shard
                        .due_at(now, (budget - expired).min(SWEEP_BATCH))
                        .into_iter()
                        .map(|id| (id, shard.held[&id.0].sku.clone()))
                        .collect()
                };
                if due.is_empty() {
                    continue;
                }
                let skus = unique(due.iter().map(|(_, sku)| sku.clone()));
                expired += inner
                    .decide(
                        &skus,
                        |d| {
                            let at_ms = d.at_ms;
                            let mut n = 0;
                            for (id, sku) in &due {
                                let still_due = d.shard(sku).held.get(&id.0).is_some_and(|h| {
                                    h.state == ReservationState::Active && h.expires_ms <= at_ms
                                });
                                if still_due {
                                    d.apply(sku, Effect::Expire { id: *id })?;
                                    n += 1;
                                }
                            }
                            Ok(n)
                        },
                        |_, _, _| {},
                    )
                    .await?;
            }
            if expired > 0 {
                metrics::counter!("amazon_reservations_expired_total").increment(expired as u64);
            }
            Ok(expired)
        })
    }
}

#[cfg(test)]
mod tests;
