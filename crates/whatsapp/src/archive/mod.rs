//! The message archive behind XEP-0313 (MAM): per user, the messages they sent and
//! received, each with a server-assigned stable id (also the XEP-0359 stanza-id
//! stamped on the delivered message), queried by counterpart and time range with
//! RSM (XEP-0059) paging.
//!
//! Storage: one log on the kit's WAL (group commit), one record per archived
//! message holding every owner's copy (sender and recipient), so both copies are
//! durable with one append; an in-memory index per owner, rebuilt by replay.
//! Bounds, judged on the injected clock: at most `max_per_user` messages per owner
//! (the oldest go first) and none older than `max_age`. Disk is reclaimed by
//! [`Archive::compact_step`]: the live copies of the oldest segment are copied
//! forward (same ids) and the segment is deleted. Account deletion writes a
//! tombstone that replay honours.
//!
//! Guarantees: [`Archive::store`] returns once the record is durable
//! ([`Archive::submit`] once the id is assigned, the append running beside the
//! caller; a query waits for earlier submissions); ids are
//! unique and increase in the order they were issued; a query sees only messages
//! inside both bounds. Deliberately absent: MAM preferences (`<prefs/>`),
//! full-text search, a tier for cold history (the index holds payloads in memory,
//! bounded by `max_per_user` × users), archiving of groupchat.

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use casebook_kit::clock::SharedClock;
use casebook_kit::wal::{Wal, WalConfig, WalError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Bounds and layout.
#[derive(Debug, Clone)]
pub struct ArchiveConfig {
    /// Most messages kept per owner.
    pub max_per_user: usize,
    /// Messages older than this are dropped.
    pub max_age: Duration,
    /// The largest page a query may ask for (`max` above it is capped).
    pub max_page: usize,
    pub wal: WalConfig,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            max_per_user: 10_000,
            max_age: Duration::from_secs(90 * 24 * 3600),
            max_page: 100,
            wal: WalConfig {
                segment_bytes: 8 * 1024 * 1024,
                max_record_bytes: 512 * 1024,
                ..WalConfig::default()
            },
        }
    }
}

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive log: {0}")]
    Wal(#[from] WalError),
    #[error("archive record {seq}: {reason}")]
    Corrupt { seq: u64, reason: String },
    #[error("no archived message has id {0:?}")]
    UnknownId(String),
    #[error("archive record too large")]
    TooLarge,
}

/// One owner's copy of a message to archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copy {
    /// The archive's owner (bare JID).
    pub owner: String,
    /// The counterpart (full JID when known).
    pub with: String,
}

/// The log's records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", deny_unknown_fields)]
pub enum Record {
    /// A message and its copies.
    #[serde(rename = "m")]
    Message {
        id: u64,
        stamp_ms: u64,
        copies: Vec<Copy>,
        payload: String,
    },
    /// Everything of `owner` before this record is gone.
    #[serde(rename = "d")]
    Deleted { owner: String },
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("records serialise")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// One archived message as a query returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    pub id: u64,
    pub stamp_ms: u64,
    pub with: String,
    pub payload: Arc<str>,
    /// The log record holding it (moves on copy-forward).
    seq: u64,
}

impl Archived {
    /// The id as it appears on the wire (stanza-id, result id, RSM).
    pub fn wire_id(&self) -> String {
        wire_id(self.id)
    }
}

/// `id` as it appears on the wire: fixed-width hex, so ids sort as strings too.
pub fn wire_id(id: u64) -> String {
    format!("{id:016x}")
}

/// Parses a wire id.
pub fn parse_wire_id(text: &str) -> Option<u64> {
    (text.len() == 16)
        .then(|| u64::from_str_radix(text, 16).ok())
        .flatten()
}

/// A query's filters and paging (XEP-0313 form fields + XEP-0059).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Bare JID (any resource) or full JID (exactly).
    pub with: Option<String>,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    pub after: Option<String>,
    /// `Some(None)`: the last page (`<before/>`).
    pub before: Option<Option<String>>,
    pub max: Option<usize>,
}

/// A page of results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub messages: Vec<Archived>,
    /// Whether this is the last page in the paging direction.
    pub complete: bool,
    /// How many messages match the filters.
    pub count: usize,
}

#[derive(Debug, Default)]
struct State {
    users: HashMap<String, VecDeque<Archived>>,
}

/// The archive of one domain.
#[derive(Debug)]
pub struct Archive {
    wal: Wal,
    state: Mutex<State>,
    next_id: AtomicU64,
    clock: SharedClock,
    config: ArchiveConfig,
    /// Stores and deletions hold it shared; copy-forward exclusively, so nothing
    /// changes under the cleaner.
    gate: tokio::sync::RwLock<()>,
    /// Ids submitted by [`Archive::submit`] and not yet applied.
    pending: Mutex<std::collections::BTreeSet<u64>>,
    /// Every id below it is applied (or failed): what a query waits for.
    settled: tokio::sync::watch::Sender<u64>,
    /// Bounds the submitted-but-unwritten records.
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// Most records [`Archive::submit`] lets wait for the log at once; beyond it the
/// submitter waits (backpressure, not memory).
pub const MAX_IN_FLIGHT: usize = 4096;

/// How long a query waits for earlier submissions to settle before it answers
/// with what is there.
const SETTLE_WAIT: Duration = Duration::from_secs(2);

impl Archive {
    /// Opens (creating) the archive in `dir`, replaying its log.
    pub fn open(
        dir: impl AsRef<Path>,
        config: ArchiveConfig,
        clock: SharedClock,
    ) -> Result<Self, ArchiveError> {
        let wal = Wal::open(dir, config.wal.clone())?;
        let archive = Self {
            wal,
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
            clock,
            config,
            gate: tokio::sync::RwLock::new(()),
            pending: Mutex::new(Default::default()),
            settled: tokio::sync::watch::Sender::new(1),
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
        };
        archive.replay()?;
        Ok(archive)
    }

    pub fn config(&self) -> &ArchiveConfig {
        &self.config
    }

    fn cutoff(&self) -> u64 {
        self.clock
            .wall_millis()
            .saturating_sub(self.config.max_age.as_millis() as u64)
    }

    fn replay(&self) -> Result<(), ArchiveError> {
        let mut reader = self.wal.reader(self.wal.first_seq())?;
        let mut max_id = 0;
        while let Some(record) = reader.next_record()? {
            let decoded =
                Record::decode(&record.payload).map_err(|reason| ArchiveError::Corrupt {
                    seq: record.seq,
                    reason,
                })?;
            if let Record::Message { id, .. } = &decoded {
                max_id = max_id.max(*id);
            }
            self.apply(decoded, record.seq);
        }
        self.next_id.store(max_id + 1, Ordering::Relaxed);
        self.settled.send_replace(max_id + 1);
        Ok(())
    }

    /// Applies a durable record to the index.
    fn apply(&self, record: Record, seq: u64) {
        let cutoff = self.cutoff();
        let mut state = self.state.lock();
        match record {
            Record::Deleted { owner } => {
                state.users.remove(&owner);
            }
            Record::Message {
                id,
                stamp_ms,
                copies,
                payload,
            } => {
                if stamp_ms <= cutoff {
                    return;
                }
                let payload: Arc<str> = payload.into();
                for copy in copies {
                    let entries = state.users.entry(copy.owner).or_default();
                    let entry = Archived {
                        id,
                        stamp_ms,
                        with: copy.with,
                        payload: payload.clone(),
                        seq,
                    };
                    // Copied forward (same id): the newer location wins.
                    match entries.binary_search_by_key(&id, |e| e.id) {
                        Ok(at) => entries[at] = entry,
                        Err(at) => entries.insert(at, entry),
                    }
                    while entries.len() > self.config.max_per_user {
                        entries.pop_front();
                    }
                }
            }
        }
    }

    /// Archives `payload` for every copy's owner; returns the id once durable.
    pub async fn store(&self, copies: Vec<Copy>, payload: String) -> Result<u64, ArchiveError> {
        let _gate = self.gate.read().await;
        let id = {
            let mut pending = self.pending.lock();
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            pending.insert(id);
            id
        };
        let record = Record::Message {
            id,
            stamp_ms: self.clock.wall_millis(),
            copies,
            payload,
        };
        let bytes = record.encode();
        if bytes.len() > self.config.wal.max_record_bytes {
            self.settle(id);
            return Err(ArchiveError::TooLarge);
        }
        let appended = self.wal.append(bytes).await;
        if let Ok(seq) = appended {
            self.apply(record, seq);
            metrics::counter!("whatsapp_archived_total").increment(1);
        }
        self.settle(id);
        appended?;
        Ok(id)
    }

    /// Archives like [`Archive::store`] but returns the id as soon as it is
    /// assigned; the append and the index update finish in a task of their own, so
    /// a sender's messages are not serialised on the log's fsync. Queries wait for
    /// submissions made before them ([`Archive::query_settled`]). At most
    /// [`MAX_IN_FLIGHT`] submissions wait for the log; beyond, this waits.
    pub async fn submit(
        self: &Arc<Self>,
        copies: Vec<Copy>,
        payload: String,
    ) -> Result<u64, ArchiveError> {
        let permit = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let id = {
            // Under the pending lock, so the watermark never passes an id that is
            // assigned but not yet registered.
            let mut pending = self.pending.lock();
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            pending.insert(id);
            id
        };
        let record = Record::Message {
            id,
            stamp_ms: self.clock.wall_millis(),
            copies,
            payload,
        };
        let bytes = record.encode();
        if bytes.len() > self.config.wal.max_record_bytes {
            self.settle(id);
            return Err(ArchiveError::TooLarge);
        }
        let archive = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let appended = {
                let _gate = archive.gate.read().await;
                match archive.wal.append(bytes).await {
                    Ok(seq) => {
                        archive.apply(record, seq);
                        Ok(())
                    }
                    Err(error) => Err(error),
                }
            };
            match appended {
                Ok(()) => metrics::counter!("whatsapp_archived_total").increment(1),
                Err(error) => tracing::warn!(%error, id, "message not archived"),
            }
            archive.settle(id);
        });
        Ok(id)
    }

    fn settle(&self, id: u64) {
        let mut pending = self.pending.lock();
        pending.remove(&id);
        let mark = pending
            .first()
            .copied()
            .unwrap_or_else(|| self.next_id.load(Ordering::Relaxed));
        self.settled.send_if_modified(|current| {
            let moved = mark > *current;
            if moved {
                *current = mark;
            }
            moved
        });
    }

    /// [`Archive::query`] once everything submitted before the call is applied
    /// (bounded wait: past it, the answer is what is there).
    pub async fn query_settled(&self, owner: &str, query: &Query) -> Result<Page, ArchiveError> {
        let target = self.next_id.load(Ordering::Relaxed);
        let mut settled = self.settled.subscribe();
        let _ = tokio::time::timeout(SETTLE_WAIT, settled.wait_for(|&mark| mark >= target)).await;
        self.query(owner, query)
    }

    /// Deletes `owner`'s archive (account removal); durable on return.
    pub async fn delete(&self, owner: &str) -> Result<(), ArchiveError> {
        let _gate = self.gate.read().await;
        let record = Record::Deleted {
            owner: owner.to_owned(),
        };
        let seq = self.wal.append(record.encode()).await?;
        self.apply(record, seq);
        Ok(())
    }

    /// How many messages `owner` has (inside the age bound).
    pub fn count(&self, owner: &str) -> usize {
        let cutoff = self.cutoff();
        self.state
            .lock()
            .users
            .get(owner)
            .map_or(0, |e| e.iter().filter(|m| m.stamp_ms > cutoff).count())
    }

    /// Runs `query` over `owner`'s archive.
    pub fn query(&self, owner: &str, query: &Query) -> Result<Page, ArchiveError> {
        let cutoff = self.cutoff();
        let state = self.state.lock();
        let empty = VecDeque::new();
        let entries = state.users.get(owner).unwrap_or(&empty);
        let anchor = |id: &str| {
            parse_wire_id(id)
                .filter(|id| entries.binary_search_by_key(id, |e| e.id).is_ok())
                .ok_or_else(|| ArchiveError::UnknownId(id.to_owned()))
        };
        let after = query.after.as_deref().map(anchor).transpose()?;
        let before = match &query.before {
            Some(Some(id)) => Some(Some(anchor(id)?)),
            Some(None) => Some(None),
            None => None,
        };
        let matches: Vec<&Archived> = entries
            .iter()
            .filter(|e| e.stamp_ms > cutoff)
            .filter(|e| query.start_ms.is_none_or(|s| e.stamp_ms >= s))
            .filter(|e| query.end_ms.is_none_or(|t| e.stamp_ms <= t))
            .filter(|e| match &query.with {
                None => true,
                Some(with) if with.contains('/') => e.with == *with,
                Some(with) => e.with.split('/').next() == Some(with.as_str()),
            })
            .collect();
        let count = matches.len();
        let max = query
            .max
            .unwrap_or(self.config.max_page)
            .min(self.config.max_page);
        let (page, complete): (Vec<&Archived>, bool) = match before {
            Some(before) => {
                let upto = match before {
                    Some(id) => matches.partition_point(|e| e.id < id),
                    None => matches.len(),
                };
                let from = upto.saturating_sub(max);
                (matches[from..upto].to_vec(), from == 0)
            }
            None => {
                let from = after.map_or(0, |id| matches.partition_point(|e| e.id <= id));
                let upto = (from + max).min(matches.len());
                (matches[from..upto].to_vec(), upto == matches.len())
            }
        };
        Ok(Page {
            messages: page.into_iter().cloned().collect(),
            complete,
            count,
        })
    }

    /// One bounded step of upkeep: drops what is past the age bound from the index,
    /// then, when the log has more than one segment, copies the oldest segment's
    /// live copies forward and deletes it. Returns the segments deleted.
    pub async fn compact_step(&self) -> Result<usize, ArchiveError> {
        let cutoff = self.cutoff();
        self.state.lock().users.retain(|_, entries| {
            while entries.front().is_some_and(|e| e.stamp_ms <= cutoff) {
                entries.pop_front();
            }
            !entries.is_empty()
        });
        let starts = self.wal.segment_starts();
        let [oldest, next, ..] = starts.as_slice() else {
            return Ok(0);
        };
        let (oldest, next) = (*oldest, *next);
        let _gate = self.gate.write().await;
        // Live copies in the oldest segment, grouped by id.
        let mut live: std::collections::BTreeMap<u64, (u64, Vec<Copy>, Arc<str>)> =
            Default::default();
        for (owner, entries) in &self.state.lock().users {
            for entry in entries.iter().filter(|e| e.seq >= oldest && e.seq < next) {
                live.entry(entry.id)
                    .or_insert_with(|| (entry.stamp_ms, Vec::new(), entry.payload.clone()))
                    .1
                    .push(Copy {
                        owner: owner.clone(),
                        with: entry.with.clone(),
                    });
            }
        }
        for (id, (stamp_ms, copies, payload)) in live {
            let record = Record::Message {
                id,
                stamp_ms,
                copies,
                payload: payload.to_string(),
            };
            let seq = self.wal.append(record.encode()).await?;
            self.apply(record, seq);
        }
        Ok(self.wal.truncate_before(next)?)
    }
}
