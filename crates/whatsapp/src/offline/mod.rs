//! The offline store: store-and-forward for recipients who are not connected,
//! as log-structured shards on the kit's WAL.
//!
//! A recipient (bare JID) maps to one of N shards by stable hash; each shard is its
//! own [`Wal`] in `dir/shard-NN`. A message is one `Stored` record; acknowledgement
//! and expiry write `Removed` tombstones (see [`mod@record`]). On open every shard's
//! log is replayed to rebuild the in-memory index.
//!
//! # Guarantees
//! - **Durable before acknowledged.** [`OfflineStore::store`] returns only once the
//!   message's record is durable (the WAL's group commit), so the server may then
//!   acknowledge the sender's stanza (XEP-0198 `<a/>`).
//! - **Per-recipient order.** [`OfflineStore::pending`] returns a recipient's messages
//!   in the order the log fixed them ([`OfflineSeq`] ascending), across restarts and
//!   compactions (a message moved by compaction keeps its seq).
//! - **Removed only when acknowledged**, durably: [`OfflineStore::ack`] writes the
//!   tombstone before it forgets the messages, so a restart never brings them back.
//! - **One copy per (recipient, sender, id)** among pending messages: a resend of a
//!   message still pending (or still being stored) is not stored again.
//! - **Bounded:** per-recipient message cap and total pending-bytes cap refuse new
//!   messages with [`OfflineError::RecipientFull`] / [`OfflineError::StoreFull`];
//!   compaction work per [`OfflineStore::compact_step`] is bounded by
//!   [`OfflineConfig::compact_batch`].
//! - **Log-structured cleaning:** segments holding no pending message (and no record
//!   of a store still in flight) are deleted;
//!   when the oldest segment is at most half live, its live messages are copied to
//!   the head so it can be deleted.
//! - Retention runs on the injected clock's wall time: older messages are not
//!   delivered, and are tombstoned by `compact_step`.
//!
//! # Not guaranteed
//! - Payloads are kept in memory (bounded by `max_total_bytes`) as well as on disk:
//!   flushing a backlog reads no disk, at the price of RAM equal to the pending bytes.
//! - De-duplication covers pending messages only: a resend that arrives after the
//!   recipient acknowledged the first copy is stored (and delivered) again; the
//!   recipient's client de-duplicates by stanza id.
//! - Cancelling a [`OfflineStore::store`] future does not withdraw the record: it may
//!   reappear after a restart (the sender was never acknowledged, so at-least-once).
//! - A fully live oldest segment is never rewritten (that would only move it); disk
//!   therefore holds the live data plus, per shard, dead records in segments that
//!   are less than half dead, plus the active segment and its preallocated spare.
//! - The shard count is fixed at creation: opening with another count is refused.
//! - Expiry trusts the wall clock: a clock stepped back after a restart can make a
//!   message expired in memory but not yet tombstoned live again.

pub mod record;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use casebook_kit::clock::SharedClock;
use casebook_kit::partition::hashing::{fast_range, stable_hash_bytes};
use casebook_kit::wal::{Wal, WalConfig, WalError};
use parking_lot::Mutex;
use tokio::sync::{RwLock, watch};

use record::{DecodeError, ORIGIN_SELF, OfflineRecord, STORED_OVERHEAD};

/// Longest JID accepted (RFC 7622: localpart, domainpart, resourcepart ≤ 1023 each).
pub const MAX_JID_BYTES: usize = 3071;
/// Longest message id accepted.
pub const MAX_ID_BYTES: usize = 1024;
/// The most seqs one `Removed` tombstone carries (bigger removals write several).
const MAX_REMOVED_PER_RECORD: usize = 4096;
/// The most shards a store may have.
pub const MAX_SHARDS: usize = 1024;

/// A message's position in its recipient's order: the WAL seq (within its shard)
/// of the record that first stored it. Stable across restarts and compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OfflineSeq(pub u64);

/// How the store is laid out and bounded.
#[derive(Debug, Clone)]
pub struct OfflineConfig {
    /// Number of shards (each its own WAL directory). Fixed once created.
    pub shards: usize,
    /// The configuration of every shard's WAL.
    pub wal: WalConfig,
    /// Most pending messages one recipient may have.
    pub max_per_recipient: usize,
    /// Most pending bytes (record size: payload, JIDs, id and framing) in the store.
    pub max_total_bytes: u64,
    /// How long an undelivered message is kept (on the injected clock's wall time).
    pub retention: Duration,
    /// Most messages one `compact_step` expires, and most it copies forward.
    pub compact_batch: usize,
}

impl Default for OfflineConfig {
    fn default() -> Self {
        Self {
            shards: 16,
            wal: WalConfig {
                // 16 shards each preallocate an active segment and a spare: keep them small.
                segment_bytes: 4 * 1024 * 1024,
                max_record_bytes: 256 * 1024,
                ..WalConfig::default()
            },
            max_per_recipient: 20_000,
            max_total_bytes: 256 * 1024 * 1024,
            retention: Duration::from_secs(30 * 24 * 3600),
            compact_batch: 1024,
        }
    }
}

impl OfflineConfig {
    fn validate(&self) -> Result<(), OfflineError> {
        let invalid = |msg: &str| Err(OfflineError::InvalidConfig(msg.into()));
        if self.shards == 0 || self.shards > MAX_SHARDS {
            return invalid("shards must be in 1..=1024");
        }
        if self.max_per_recipient == 0 || self.max_total_bytes == 0 {
            return invalid("max_per_recipient and max_total_bytes must be positive");
        }
        if self.compact_batch == 0 || self.compact_batch > 65_536 {
            return invalid("compact_batch must be in 1..=65536");
        }
        if self.retention.is_zero() {
            return invalid("retention must be positive");
        }
        if self.wal.max_record_bytes < STORED_OVERHEAD + 64 {
            return invalid("wal.max_record_bytes is too small to hold a message");
        }
        Ok(())
    }
}

/// A message to store for an offline recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The stanza id, unique per sender.
    pub id: String,
    /// The recipient's bare JID.
    pub recipient: String,
    /// The sender's JID.
    pub sender: String,
    /// The serialized stanza.
    pub payload: Bytes,
}

/// A pending message, as delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineMessage {
    pub seq: OfflineSeq,
    pub id: String,
    pub recipient: String,
    pub sender: String,
    /// Wall-clock milliseconds when the store accepted it (for XEP-0203 `<delay/>`).
    pub stamp_ms: u64,
    pub payload: Bytes,
}

/// A message named by its sender and id (the de-duplication key within a recipient).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageKey {
    pub sender: String,
    pub id: String,
}

/// What a recipient acknowledges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// Every pending message with seq ≤ this one.
    UpTo(OfflineSeq),
    /// These messages (unknown ones are ignored).
    Messages(Vec<MessageKey>),
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("invalid offline store config: {0}")]
    InvalidConfig(String),
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{recipient} already has {cap} offline messages pending")]
    RecipientFull { recipient: String, cap: usize },
    #[error("offline store full: {used} of {cap} bytes pending, {needed} more refused")]
    StoreFull { needed: u64, used: u64, cap: u64 },
    #[error("offline shard {shard}: {source}")]
    Wal {
        shard: usize,
        #[source]
        source: WalError,
    },
    #[error("offline shard {shard}: record {seq} is not an offline record: {reason}")]
    Corrupt {
        shard: usize,
        seq: u64,
        reason: DecodeError,
    },
    #[error("offline store directory {path}: {message}")]
    Layout { path: PathBuf, message: String },
}

/// What one [`OfflineStore::compact_step`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// The shard it worked on.
    pub shard: usize,
    /// Messages removed because retention ran out.
    pub expired: usize,
    /// Live messages copied to the head of the log.
    pub rewritten: usize,
    /// WAL segments deleted.
    pub segments_freed: usize,
}

#[derive(Debug, Clone)]
struct Entry {
    /// The WAL seq of the record currently holding the message.
    position: u64,
    id: String,
    sender: String,
    stamp_ms: u64,
    payload: Bytes,
}

/// Bytes a message counts against `max_total_bytes`: its record size.
fn cost(recipient: &str, sender: &str, id: &str, payload: usize) -> u64 {
    (STORED_OVERHEAD + recipient.len() + sender.len() + id.len() + payload) as u64
}

#[derive(Debug, Default)]
struct Queue {
    /// seq → message, in delivery order.
    messages: BTreeMap<u64, Entry>,
    by_key: HashMap<MessageKey, u64>,
    /// Stores in flight, counted against the per-recipient cap.
    reserved: usize,
}

#[derive(Debug, Default)]
struct ShardState {
    queues: HashMap<String, Queue>,
    /// WAL position → (recipient, seq) of every pending message: what pins segments.
    positions: BTreeMap<u64, (String, u64)>,
    /// (recipient, key) → closed when that store finishes; holds back a resend.
    in_flight: HashMap<(String, MessageKey), watch::Receiver<()>>,
    /// For each store in flight, the WAL's durable frontier when it reserved: a
    /// lower bound of the seq its record gets. Compaction never truncates past the
    /// smallest, so a record written but not yet indexed keeps its segment.
    in_flight_floors: BTreeMap<u64, usize>,
}

impl ShardState {
    fn insert(&mut self, recipient: &str, seq: u64, entry: Entry) {
        self.positions
            .insert(entry.position, (recipient.to_owned(), seq));
        let queue = self.queues.entry(recipient.to_owned()).or_default();
        let key = MessageKey {
            sender: entry.sender.clone(),
            id: entry.id.clone(),
        };
        let previous = queue.by_key.insert(key, seq);
        debug_assert!(previous.is_none(), "one pending copy per key");
        let previous = queue.messages.insert(seq, entry);
        debug_assert!(previous.is_none(), "seqs are unique within a shard");
    }

    /// Removes a message; returns its cost if it was pending.
    fn remove(&mut self, recipient: &str, seq: u64) -> Option<u64> {
        let queue = self.queues.get_mut(recipient)?;
        let entry = queue.messages.remove(&seq)?;
        let removed = self.positions.remove(&entry.position);
        debug_assert!(removed.is_some(), "every pending message has a position");
        queue.by_key.remove(&MessageKey {
            sender: entry.sender.clone(),
            id: entry.id.clone(),
        });
        if queue.messages.is_empty() && queue.reserved == 0 {
            self.queues.remove(recipient);
        }
        Some(cost(
            recipient,
            &entry.sender,
            &entry.id,
            entry.payload.len(),
        ))
    }

    /// Moves a message to a new WAL position (compaction copied it there).
    fn relocate(&mut self, recipient: &str, seq: u64, to: u64) -> bool {
        let Some(entry) = self
            .queues
            .get_mut(recipient)
            .and_then(|q| q.messages.get_mut(&seq))
        else {
            return false;
        };
        let from = std::mem::replace(&mut entry.position, to);
        let pinned = self.positions.remove(&from);
        debug_assert!(pinned.is_some());
        self.positions.insert(to, (recipient.to_owned(), seq));
        true
    }
}

#[derive(Debug)]
struct Shard {
    wal: Wal,
    state: Mutex<ShardState>,
    /// Acks and expiry hold it shared, compaction's copy-forward exclusively, so a
    /// message is never copied forward past the tombstone that removes it.
    gate: RwLock<()>,
}

/// The offline store. Cheap to clone.
#[derive(Clone)]
pub struct OfflineStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Vec<Shard>,
    config: OfflineConfig,
    clock: SharedClock,
    used_bytes: AtomicU64,
    pending: AtomicU64,
    next_compact: AtomicUsize,
    /// Tests park stores here between their append and their index update.
    #[cfg(test)]
    pause_after_append: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
}

impl fmt::Debug for OfflineStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OfflineStore")
            .field("shards", &self.inner.shards.len())
            .field("pending", &self.inner.pending.load(Ordering::Relaxed))
            .field("used_bytes", &self.inner.used_bytes.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn validate_text(
    field: &'static str,
    value: &str,
    max: usize,
    no_slash: bool,
) -> Result<(), OfflineError> {
    let invalid = |reason: String| Err(OfflineError::Invalid { field, reason });
    if value.is_empty() {
        return invalid("must not be empty".into());
    }
    if value.len() > max {
        return invalid(format!("{} bytes, the limit is {max}", value.len()));
    }
    if value.chars().any(char::is_control) {
        return invalid("must not contain control characters".into());
    }
    if no_slash && value.contains('/') {
        return invalid("must be a bare JID (no /resource)".into());
    }
    Ok(())
}

/// The directory of shard `index`.
pub fn shard_dir(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("shard-{index:02}"))
}

impl OfflineStore {
    /// Opens (creating if needed) the store in `dir`, replaying every shard's log.
    pub fn open(
        dir: impl AsRef<Path>,
        config: OfflineConfig,
        clock: SharedClock,
    ) -> Result<Self, OfflineError> {
        config.validate()?;
        let dir = dir.as_ref();
        let layout_err = |message: String| OfflineError::Layout {
            path: dir.to_path_buf(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| layout_err(e.to_string()))?;
        let existing = std::fs::read_dir(dir)
            .map_err(|e| layout_err(e.to_string()))?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("shard-"))
            .count();
        if existing != 0 && existing != config.shards {
            return Err(layout_err(format!(
                "holds {existing} shards but the config asks for {}; the shard count is fixed",
                config.shards
            )));
        }
        let cutoff = clock
            .wall_millis()
            .saturating_sub(config.retention.as_millis() as u64);
        let mut shards = Vec::with_capacity(config.shards);
        let (mut used, mut pending) = (0u64, 0u64);
        for index in 0..config.shards {
            let wal = Wal::open(shard_dir(dir, index), config.wal.clone()).map_err(|source| {
                OfflineError::Wal {
                    shard: index,
                    source,
                }
            })?;
            let state = replay(index, &wal, cutoff)?;
            for (recipient, queue) in &state.queues {
                pending += queue.messages.len() as u64;
                used += queue
                    .messages
                    .values()
                    .map(|e| cost(recipient, &e.sender, &e.id, e.payload.len()))
                    .sum::<u64>();
            }
            shards.push(Shard {
                wal,
                state: Mutex::new(state),
                gate: RwLock::new(()),
            });
        }
        let store = Self {
            inner: Arc::new(Inner {
                shards,
                config,
                clock,
                used_bytes: AtomicU64::new(used),
                pending: AtomicU64::new(pending),
                next_compact: AtomicUsize::new(0),
                #[cfg(test)]
                pause_after_append: Mutex::new(None),
            }),
        };
        store.publish_gauges();
        Ok(store)
    }

    fn shard_index(&self, recipient: &str) -> usize {
        fast_range(
            stable_hash_bytes(recipient.as_bytes()),
            self.inner.shards.len(),
        )
    }

    /// The shard a recipient's messages live in.
    pub fn shard_of(&self, recipient: &str) -> usize {
        self.shard_index(recipient)
    }

    fn publish_gauges(&self) {
        metrics::gauge!("offline_pending_messages")
            .set(self.inner.pending.load(Ordering::Relaxed) as f64);
        metrics::gauge!("offline_pending_bytes")
            .set(self.inner.used_bytes.load(Ordering::Relaxed) as f64);
    }

    /// Stores a message; returns once it is durable. A message whose (recipient,
    /// sender, id) is already pending is not stored again: its seq is returned.
    pub async fn store(&self, msg: NewMessage) -> Result<OfflineSeq, OfflineError> {
        validate_text("recipient", &msg.recipient, MAX_JID_BYTES, true)?;
        validate_text("sender", &msg.sender, MAX_JID_BYTES, false)?;
        validate_text("id", &msg.id, MAX_ID_BYTES, false)?;
        let needed = cost(&msg.recipient, &msg.sender, &msg.id, msg.payload.len());
        let max_record = self.inner.config.wal.max_record_bytes as u64;
        if needed > max_record {
            return Err(OfflineError::Invalid {
                field: "payload",
                reason: format!("record of {needed} bytes exceeds the limit of {max_record}"),
            });
        }
        let index = self.shard_index(&msg.recipient);
        let shard = &self.inner.shards[index];
        let key = MessageKey {
            sender: msg.sender.clone(),
            id: msg.id.clone(),
        };
        let flight_key = (msg.recipient.clone(), key);
        let (done, floor) = loop {
            let mut wait = {
                let mut state = shard.state.lock();
                if let Some(&seq) = state
                    .queues
                    .get(&msg.recipient)
                    .and_then(|q| q.by_key.get(&flight_key.1))
                {
                    metrics::counter!("offline_duplicates_total").increment(1);
                    return Ok(OfflineSeq(seq));
                }
                match state.in_flight.get(&flight_key) {
                    Some(rx) => rx.clone(),
                    None => {
                        // Read before the append is queued, so it is ≤ the record's seq.
                        let floor = shard.wal.next_seq();
                        break (self.reserve(&mut state, &flight_key, needed, floor)?, floor);
                    }
                }
            };
            // Another store of the same message is in flight: wait for its outcome
            // (the channel closes when it finishes), then look again.
            let _ = wait.changed().await;
        };
        let reservation = Reservation {
            store: self,
            index,
            key: Some(flight_key),
            needed,
            floor,
            _done: done,
        };
        let stamp_ms = self.inner.clock.wall_millis();
        let bytes = record::encode_stored(
            ORIGIN_SELF,
            stamp_ms,
            &msg.recipient,
            &msg.sender,
            &msg.id,
            &msg.payload,
        );
        let position = shard
            .wal
            .append(bytes)
            .await
            .map_err(|source| OfflineError::Wal {
                shard: index,
                source,
            })?;
        #[cfg(test)]
        {
            let pause = self.inner.pause_after_append.lock().clone();
            if let Some(pause) = pause {
                let _ = pause.acquire().await;
            }
        }
        reservation.commit(Entry {
            position,
            id: msg.id,
            sender: msg.sender,
            stamp_ms,
            payload: msg.payload,
        });
        metrics::counter!("offline_stored_total").increment(1);
        self.publish_gauges();
        Ok(OfflineSeq(position))
    }

    /// Reserves room for one message (caps) and marks it in flight.
    fn reserve(
        &self,
        state: &mut ShardState,
        flight_key: &(String, MessageKey),
        needed: u64,
        floor: u64,
    ) -> Result<watch::Sender<()>, OfflineError> {
        let cap = self.inner.config.max_per_recipient;
        let queued = state
            .queues
            .get(&flight_key.0)
            .map_or(0, |q| q.messages.len() + q.reserved);
        if queued >= cap {
            metrics::counter!("offline_refused_total", "reason" => "recipient_full").increment(1);
            return Err(OfflineError::RecipientFull {
                recipient: flight_key.0.clone(),
                cap,
            });
        }
        let max = self.inner.config.max_total_bytes;
        let before = self.inner.used_bytes.fetch_add(needed, Ordering::AcqRel);
        if before + needed > max {
            self.inner.used_bytes.fetch_sub(needed, Ordering::AcqRel);
            metrics::counter!("offline_refused_total", "reason" => "store_full").increment(1);
            return Err(OfflineError::StoreFull {
                needed,
                used: before,
                cap: max,
            });
        }
        state
            .queues
            .entry(flight_key.0.clone())
            .or_default()
            .reserved += 1;
        let (done, wait) = watch::channel(());
        state.in_flight.insert(flight_key.clone(), wait);
        *state.in_flight_floors.entry(floor).or_default() += 1;
        Ok(done)
    }

    /// Up to `limit` pending, unexpired messages of `recipient`, in order.
    pub fn pending(&self, recipient: &str, limit: usize) -> Vec<OfflineMessage> {
        self.pending_after(recipient, None, limit)
    }

    /// Like [`OfflineStore::pending`], starting after `after` (for paging through a
    /// backlog without acknowledging it first).
    pub fn pending_after(
        &self,
        recipient: &str,
        after: Option<OfflineSeq>,
        limit: usize,
    ) -> Vec<OfflineMessage> {
        let cutoff = self.expiry_cutoff();
        let shard = &self.inner.shards[self.shard_index(recipient)];
        let state = shard.state.lock();
        let Some(queue) = state.queues.get(recipient) else {
            return Vec::new();
        };
        let from = after.map_or(std::ops::Bound::Unbounded, |s| {
            std::ops::Bound::Excluded(s.0)
        });
        queue
            .messages
            .range((from, std::ops::Bound::Unbounded))
            .filter(|(_, e)| e.stamp_ms > cutoff)
            .take(limit)
            .map(|(&seq, e)| OfflineMessage {
                seq: OfflineSeq(seq),
                id: e.id.clone(),
                recipient: recipient.to_owned(),
                sender: e.sender.clone(),
                stamp_ms: e.stamp_ms,
                payload: e.payload.clone(),
            })
            .collect()
    }

    /// How many messages `recipient` has pending (expired ones not yet compacted
    /// away included).
    pub fn count(&self, recipient: &str) -> usize {
        let shard = &self.inner.shards[self.shard_index(recipient)];
        shard
            .state
            .lock()
            .queues
            .get(recipient)
            .map_or(0, |q| q.messages.len())
    }

    /// Messages pending in the whole store.
    pub fn total_pending(&self) -> u64 {
        self.inner.pending.load(Ordering::Relaxed)
    }

    /// Bytes pending in the whole store (what `max_total_bytes` bounds).
    pub fn used_bytes(&self) -> u64 {
        self.inner.used_bytes.load(Ordering::Relaxed)
    }

    /// Segment files of each shard's WAL (for operators and tests).
    pub fn segment_counts(&self) -> Vec<usize> {
        self.inner
            .shards
            .iter()
            .map(|s| s.wal.segment_starts().len())
            .collect()
    }

    /// Removes acknowledged messages durably; returns how many this call removed.
    pub async fn ack(&self, recipient: &str, ack: Ack) -> Result<usize, OfflineError> {
        validate_text("recipient", recipient, MAX_JID_BYTES, true)?;
        let index = self.shard_index(recipient);
        let shard = &self.inner.shards[index];
        let _gate = shard.gate.read().await;
        let seqs: Vec<u64> = {
            let state = shard.state.lock();
            let Some(queue) = state.queues.get(recipient) else {
                return Ok(0);
            };
            match &ack {
                Ack::UpTo(up_to) => queue.messages.range(..=up_to.0).map(|(&s, _)| s).collect(),
                Ack::Messages(keys) => keys
                    .iter()
                    .filter_map(|k| queue.by_key.get(k).copied())
                    .collect(),
            }
        };
        let removed = self.remove_durably(index, recipient, &seqs).await?;
        metrics::counter!("offline_acked_total").increment(removed as u64);
        Ok(removed)
    }

    /// Writes tombstones for `seqs`, then forgets them. Caller holds the gate shared.
    async fn remove_durably(
        &self,
        index: usize,
        recipient: &str,
        seqs: &[u64],
    ) -> Result<usize, OfflineError> {
        if seqs.is_empty() {
            return Ok(0);
        }
        let shard = &self.inner.shards[index];
        // A tombstone must fit a WAL record; the recipient has a stored message, so
        // its name plus one seq fits (a Stored record is larger).
        let room = (self.inner.config.wal.max_record_bytes)
            .saturating_sub(record::removed_len(recipient, 0));
        let per_record = (room / 8).clamp(1, MAX_REMOVED_PER_RECORD);
        for chunk in seqs.chunks(per_record) {
            shard
                .wal
                .append(record::encode_removed(recipient, chunk))
                .await
                .map_err(|source| OfflineError::Wal {
                    shard: index,
                    source,
                })?;
        }
        let (mut removed, mut freed) = (0usize, 0u64);
        {
            let mut state = shard.state.lock();
            for &seq in seqs {
                if let Some(bytes) = state.remove(recipient, seq) {
                    removed += 1;
                    freed += bytes;
                }
            }
        }
        self.inner.used_bytes.fetch_sub(freed, Ordering::AcqRel);
        self.inner
            .pending
            .fetch_sub(removed as u64, Ordering::AcqRel);
        self.publish_gauges();
        Ok(removed)
    }

    fn expiry_cutoff(&self) -> u64 {
        self.inner
            .clock
            .wall_millis()
            .saturating_sub(self.inner.config.retention.as_millis() as u64)
    }

    /// One bounded round of maintenance on the next shard (round robin): expire
    /// messages past retention, delete segments holding no pending message, and
    /// when the oldest segment is at most half live, copy up to `compact_batch` of
    /// its messages to the head. The owner calls it on a timer.
    pub async fn compact_step(&self) -> Result<CompactReport, OfflineError> {
        let index =
            self.inner.next_compact.fetch_add(1, Ordering::Relaxed) % self.inner.shards.len();
        self.compact_shard(index).await
    }

    /// [`OfflineStore::compact_step`] on one given shard.
    pub async fn compact_shard(&self, index: usize) -> Result<CompactReport, OfflineError> {
        let Some(shard) = self.inner.shards.get(index) else {
            return Err(OfflineError::Invalid {
                field: "shard",
                reason: format!(
                    "{index} is not below the shard count {}",
                    self.inner.shards.len()
                ),
            });
        };
        let batch = self.inner.config.compact_batch;
        let mut report = CompactReport {
            shard: index,
            ..CompactReport::default()
        };
        let wal_err = |source| OfflineError::Wal {
            shard: index,
            source,
        };

        // 1. Retention.
        let cutoff = self.expiry_cutoff();
        let expired: Vec<(String, Vec<u64>)> = {
            let state = shard.state.lock();
            let mut budget = batch;
            let mut out = Vec::new();
            for (recipient, queue) in &state.queues {
                if budget == 0 {
                    break;
                }
                // Stamps follow seq order (unless the wall clock stepped back), so
                // the expired messages are a prefix: scan only that.
                let seqs: Vec<u64> = queue
                    .messages
                    .iter()
                    .take_while(|(_, e)| e.stamp_ms <= cutoff)
                    .take(budget)
                    .map(|(&s, _)| s)
                    .collect();
                budget -= seqs.len();
                if !seqs.is_empty() {
                    out.push((recipient.clone(), seqs));
                }
            }
            out
        };
        if !expired.is_empty() {
            let _gate = shard.gate.read().await;
            for (recipient, seqs) in &expired {
                report.expired += self.remove_durably(index, recipient, seqs).await?;
            }
            metrics::counter!("offline_expired_total").increment(report.expired as u64);
        }

        // 2. Free segments, copying live messages out of a mostly dead oldest one.
        let _gate = shard.gate.write().await;
        report.segments_freed += self.truncate_unpinned(shard).map_err(wal_err)?;
        let starts = shard.wal.segment_starts();
        if let [oldest, next, ..] = starts[..] {
            let (live, to_copy) = {
                let state = shard.state.lock();
                let pinned = state.positions.range(..next);
                let live = pinned.clone().count() as u64;
                let to_copy: Vec<(u64, String, u64, Entry)> = pinned
                    .take(batch)
                    .map(|(&position, (recipient, seq))| {
                        let entry = state.queues[recipient].messages[seq].clone();
                        (position, recipient.clone(), *seq, entry)
                    })
                    .collect();
                (live, to_copy)
            };
            if live * 2 <= next - oldest && !to_copy.is_empty() {
                let mut copies = tokio::task::JoinSet::new();
                for (i, (_, recipient, seq, entry)) in to_copy.iter().enumerate() {
                    let wal = shard.wal.clone();
                    let bytes = record::encode_stored(
                        *seq,
                        entry.stamp_ms,
                        recipient,
                        &entry.sender,
                        &entry.id,
                        &entry.payload,
                    );
                    copies.spawn(async move { (i, wal.append(bytes).await) });
                }
                let mut moved = Vec::with_capacity(to_copy.len());
                let mut failure = None;
                while let Some(joined) = copies.join_next().await {
                    let (i, result) = joined.expect("append tasks do not panic");
                    match result {
                        Ok(to) => moved.push((i, to)),
                        Err(e) => failure = Some(e),
                    }
                }
                {
                    let mut state = shard.state.lock();
                    for &(i, to) in &moved {
                        let (_, recipient, seq, _) = &to_copy[i];
                        let relocated = state.relocate(recipient, *seq, to);
                        debug_assert!(relocated, "the write gate keeps copied messages pending");
                    }
                }
                report.rewritten = moved.len();
                if let Some(e) = failure {
                    return Err(wal_err(e));
                }
                report.segments_freed += self.truncate_unpinned(shard).map_err(wal_err)?;
                metrics::counter!("offline_rewritten_total").increment(report.rewritten as u64);
            }
        }
        if report.segments_freed > 0 {
            metrics::counter!("offline_compactions_total").increment(report.segments_freed as u64);
        }
        Ok(report)
    }

    /// Deletes every segment before the oldest pending message's record (or the
    /// oldest record a store in flight may have written).
    fn truncate_unpinned(&self, shard: &Shard) -> Result<usize, WalError> {
        let oldest_live = {
            let state = shard.state.lock();
            let pinned = state.positions.keys().next().copied();
            let in_flight = state.in_flight_floors.keys().next().copied();
            // Read under the lock: a store reserving later gets a floor ≥ this.
            let head = shard.wal.next_seq();
            [pinned, in_flight]
                .into_iter()
                .flatten()
                .fold(head, u64::min)
        };
        shard.wal.truncate_before(oldest_live)
    }
}

/// A store's claim on room and on its key; released on drop unless committed.
struct Reservation<'a> {
    store: &'a OfflineStore,
    index: usize,
    key: Option<(String, MessageKey)>,
    needed: u64,
    /// Its entry in `in_flight_floors`.
    floor: u64,
    /// Dropped with the reservation: wakes resends of the same message.
    _done: watch::Sender<()>,
}

impl Reservation<'_> {
    fn release(&mut self, entry: Option<Entry>) {
        let Some((recipient, key)) = self.key.take() else {
            return;
        };
        let shard = &self.store.inner.shards[self.index];
        let mut state = shard.state.lock();
        state.in_flight.remove(&(recipient.clone(), key));
        match state.in_flight_floors.get_mut(&self.floor) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                state.in_flight_floors.remove(&self.floor);
            }
            None => debug_assert!(false, "every reservation registered its floor"),
        }
        let queue = state
            .queues
            .get_mut(&recipient)
            .expect("a reserved recipient keeps its queue");
        debug_assert!(queue.reserved > 0);
        queue.reserved -= 1;
        match entry {
            Some(entry) => {
                let seq = entry.position;
                state.insert(&recipient, seq, entry);
                self.store.inner.pending.fetch_add(1, Ordering::AcqRel);
            }
            None => {
                if queue.messages.is_empty() && queue.reserved == 0 {
                    state.queues.remove(&recipient);
                }
                self.store
                    .inner
                    .used_bytes
                    .fetch_sub(self.needed, Ordering::AcqRel);
            }
        }
    }

    fn commit(mut self, entry: Entry) {
        self.release(Some(entry));
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.release(None);
    }
}

impl fmt::Debug for Reservation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("shard", &self.index)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Rebuilds a shard's index from its log.
fn replay(index: usize, wal: &Wal, cutoff: u64) -> Result<ShardState, OfflineError> {
    let wal_err = |source| OfflineError::Wal {
        shard: index,
        source,
    };
    let mut state = ShardState::default();
    let mut reader = wal.reader(wal.first_seq()).map_err(wal_err)?;
    while let Some(rec) = reader.next_record().map_err(wal_err)? {
        let decoded = record::decode(&rec.payload).map_err(|reason| OfflineError::Corrupt {
            shard: index,
            seq: rec.seq,
            reason,
        })?;
        match decoded {
            OfflineRecord::Stored {
                origin,
                stamp_ms,
                recipient,
                sender,
                id,
                payload,
            } => {
                let seq = if origin == ORIGIN_SELF {
                    rec.seq
                } else {
                    origin
                };
                if seq > rec.seq {
                    return Err(OfflineError::Corrupt {
                        shard: index,
                        seq: rec.seq,
                        reason: DecodeError::OriginAhead { origin },
                    });
                }
                if stamp_ms <= cutoff {
                    continue;
                }
                let key = MessageKey { sender, id };
                let existing = state
                    .queues
                    .get(&recipient)
                    .and_then(|q| q.by_key.get(&key))
                    .copied();
                match existing {
                    // A copy made by compaction: the message now lives here.
                    Some(pending) if pending == seq => {
                        state.relocate(&recipient, seq, rec.seq);
                    }
                    // A second store of a pending message: one copy is kept.
                    Some(_) => {}
                    // A copy never follows the tombstone of its message (compaction
                    // copies under the exclusive gate), so this is a new message or
                    // a copy whose earlier records were truncated.
                    None => {
                        insert_replayed(
                            &mut state, &recipient, seq, rec.seq, key, stamp_ms, payload,
                        );
                    }
                }
            }
            OfflineRecord::Removed { recipient, seqs } => {
                for seq in seqs {
                    state.remove(&recipient, seq);
                }
            }
        }
    }
    Ok(state)
}

fn insert_replayed(
    state: &mut ShardState,
    recipient: &str,
    seq: u64,
    position: u64,
    key: MessageKey,
    stamp_ms: u64,
    payload: Vec<u8>,
) {
    state.insert(
        recipient,
        seq,
        Entry {
            position,
            id: key.id,
            sender: key.sender,
            stamp_ms,
            payload: Bytes::from(payload),
        },
    );
}

#[cfg(test)]
mod tests;
