//! Event sourcing: aggregates as event streams with optimistic concurrency,
//! snapshots, and projections (CQRS read models) fed from the bus.
//!
//! The store keeps its log in an [`Outbox`]: each append is one outbox entry whose
//! events go to the store's topic, so "stored" and "will be published" are one
//! atomic fact; the outbox [`Relay`] feeds the bus and
//! [`ProjectionRunner`]s consume it.
//!
//! # Guarantees
//! - **Optimistic concurrency.** [`EventStore::append`] with an `expected_version`
//!   that is not the aggregate's current version is rejected with
//!   [`EventStoreError::Conflict`]; nothing is merged. Appends to one aggregate are
//!   serialised; appends to different aggregates share the WAL's group commit.
//! - An append is durable (all its events, atomically) when it returns `Ok`.
//! - [`EventStore::load`] folds the latest snapshot and the events after it; a
//!   snapshot is written every `snapshot_every` events, and only events since the
//!   last snapshot stay in memory.
//! - Each event carries the header `aggregate-version`.
//! - A projection's read model and its offset are saved together atomically, so a
//!   restart resumes exactly where the last save stopped, and an event store's
//!   events re-published by its relay are applied once.
//!
//! # Not guaranteed
//! - Snapshots are an optimisation: a failed snapshot write is logged, not returned.
//! - Exactly-once projection of events without an `aggregate-version` header (events
//!   published straight to the bus): those are de-duplicated by id over a bounded
//!   in-memory window only. Events from an [`EventStore`] are de-duplicated exactly:
//!   the runner saves the highest version applied per aggregate with its state.
//! - The aggregate type must fold deterministically; the store cannot check that.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::events::{BusError, Checkpoint, Deduplicator, Delivery, Event, EventBus, validate_name};
use crate::outbox::{OutboundEvent, Outbox, Relay};
use crate::wal::{Durability, WalConfig};

/// Header stamped on every stored event: its version within the aggregate.
pub const AGGREGATE_VERSION: &str = "aggregate-version";
/// The most events one append may carry.
pub const MAX_EVENTS_PER_APPEND: usize = 1000;

/// The state of one aggregate, rebuilt by folding its events.
pub trait Aggregate: Default + Clone + Serialize + DeserializeOwned + Send + 'static {
    fn apply(&mut self, event: &Event);
}

/// What can go wrong with the store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EventStoreError {
    #[error("aggregate {aggregate} is at version {actual}, not the expected {expected}")]
    Conflict {
        aggregate: String,
        expected: u64,
        actual: u64,
    },
    #[error("invalid append: {0}")]
    Invalid(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Settings of a store.
#[derive(Debug, Clone)]
pub struct EventStoreConfig {
    /// The bus topic the events are published to.
    pub topic: String,
    /// Snapshot an aggregate every this many events (at least 1).
    pub snapshot_every: u64,
    pub wal: WalConfig,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Change<A> {
    Append {
        aggregate: String,
        first_version: u64,
    },
    Snapshot {
        aggregate: String,
        version: u64,
        state: A,
    },
}

#[derive(Debug)]
struct Stream<A> {
    version: u64,
    snapshot: Option<(u64, A)>,
    /// Events after the snapshot.
    tail: Vec<Event>,
}

impl<A: Aggregate> Stream<A> {
    fn new() -> Self {
        Self {
            version: 0,
            snapshot: None,
            tail: Vec::new(),
        }
    }

    fn fold(&self) -> A {
        let mut state = self
            .snapshot
            .as_ref()
            .map(|(_, s)| s.clone())
            .unwrap_or_default();
        for event in &self.tail {
            state.apply(event);
        }
        state
    }

    fn snapshot_version(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |(v, _)| *v)
    }
}

/// An event store for aggregates of type `A`. Cheap to clone.
pub struct EventStore<A> {
    inner: Arc<Inner<A>>,
}

struct Inner<A> {
    outbox: Outbox,
    topic: String,
    snapshot_every: u64,
    streams: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Stream<A>>>>>,
}

impl<A> Clone for EventStore<A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<A> fmt::Debug for EventStore<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStore")
            .field("topic", &self.inner.topic)
            .field("snapshot_every", &self.inner.snapshot_every)
            .field("aggregates", &self.inner.streams.lock().len())
            .finish()
    }
}

fn corrupt(reason: impl fmt::Display) -> EventStoreError {
    EventStoreError::Corrupt(reason.to_string())
}

impl<A: Aggregate> EventStore<A> {
    /// Opens the store in `dir`, rebuilding every aggregate from its latest snapshot
    /// and the events after it.
    pub fn open(dir: impl AsRef<Path>, config: EventStoreConfig) -> Result<Self, EventStoreError> {
        validate_name("topic", &config.topic)?;
        let outbox = Outbox::open(dir, config.wal)?;
        let mut streams: HashMap<String, Stream<A>> = HashMap::new();
        let mut from = outbox.first_seq();
        loop {
            let entries = outbox.entries(from, 1024)?;
            let Some(last) = entries.last() else { break };
            from = last.seq + 1;
            for entry in entries {
                let change: Change<A> = serde_json::from_value(entry.change)
                    .map_err(|e| corrupt(format!("entry {}: {e}", entry.seq)))?;
                match change {
                    Change::Append {
                        aggregate,
                        first_version,
                    } => {
                        let stream = streams.entry(aggregate.clone()).or_insert_with(Stream::new);
                        if first_version != stream.version + 1 {
                            return Err(corrupt(format!(
                                "{aggregate}: entry {} starts at version {first_version} after {}",
                                entry.seq, stream.version
                            )));
                        }
                        stream.version += entry.events.len() as u64;
                        stream
                            .tail
                            .extend(entry.events.into_iter().map(|o| o.event));
                    }
                    Change::Snapshot {
                        aggregate,
                        version,
                        state,
                    } => {
                        let stream = streams.entry(aggregate.clone()).or_insert_with(Stream::new);
                        // A snapshot covers events up to `version`: drop those from the tail.
                        let covered = version.saturating_sub(stream.snapshot_version()) as usize;
                        if covered > stream.tail.len() {
                            return Err(corrupt(format!(
                                "{aggregate}: snapshot at {version} beyond its events"
                            )));
                        }
                        stream.tail.drain(..covered);
                        stream.snapshot = Some((version, state));
                    }
                }
            }
        }
        let streams = streams
            .into_iter()
            .map(|(id, stream)| (id, Arc::new(tokio::sync::Mutex::new(stream))))
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                outbox,
                topic: config.topic,
                snapshot_every: config.snapshot_every.max(1),
                streams: Mutex::new(streams),
            }),
        })
    }

    fn stream(&self, aggregate: &str) -> Arc<tokio::sync::Mutex<Stream<A>>> {
        self.inner
            .streams
            .lock()
            .entry(aggregate.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Stream::new())))
            .clone()
    }

    /// Appends `events` to `aggregate` if it is at `expected_version` (0 for a new
    /// aggregate). Returns the new version.
    pub async fn append(
        &self,
        aggregate: &str,
        expected_version: u64,
        mut events: Vec<Event>,
    ) -> Result<u64, EventStoreError> {
        if aggregate.is_empty() || aggregate.len() > 255 {
            return Err(EventStoreError::Invalid(
                "aggregate id must be 1-255 bytes".into(),
            ));
        }
        if events.is_empty() || events.len() > MAX_EVENTS_PER_APPEND {
            return Err(EventStoreError::Invalid(format!(
                "an append carries 1-{MAX_EVENTS_PER_APPEND} events, not {}",
                events.len()
            )));
        }
        if let Some(other) = events.iter().find(|e| e.key != aggregate) {
            return Err(EventStoreError::Invalid(format!(
                "event {} has key {:?}, not the aggregate id {aggregate:?}",
                other.id, other.key
            )));
        }
        let stream = self.stream(aggregate);
        let mut stream = stream.lock().await;
        if stream.version != expected_version {
            return Err(EventStoreError::Conflict {
                aggregate: aggregate.to_string(),
                expected: expected_version,
                actual: stream.version,
            });
        }
        let first_version = stream.version + 1;
        for (i, event) in events.iter_mut().enumerate() {
            event.headers.insert(
                AGGREGATE_VERSION.into(),
                (first_version + i as u64).to_string(),
            );
        }
        let change = serde_json::to_value(Change::<A>::Append {
            aggregate: aggregate.to_string(),
            first_version,
        })
        .expect("a change always serialises");
        let outbound = events
            .iter()
            .map(|event| OutboundEvent {
                topic: self.inner.topic.clone(),
                event: event.clone(),
            })
            .collect();
        self.inner.outbox.commit(change, outbound).await?;
        stream.version += events.len() as u64;
        stream.tail.extend(events);
        let version = stream.version;
        if version - stream.snapshot_version() >= self.inner.snapshot_every {
            let state = stream.fold();
            let change = Change::Snapshot {
                aggregate: aggregate.to_string(),
                version,
                state: state.clone(),
            };
            let change = serde_json::to_value(&change).map_err(corrupt)?;
            match self.inner.outbox.commit(change, Vec::new()).await {
                Ok(_) => {
                    stream.snapshot = Some((version, state));
                    stream.tail.clear();
                }
                Err(error) => {
                    tracing::warn!(%error, aggregate, version, "snapshot not written");
                }
            }
        }
        Ok(version)
    }

    /// The aggregate's current state and version (default state, version 0, if it
    /// has no events).
    pub async fn load(&self, aggregate: &str) -> (A, u64) {
        let stream = self.stream(aggregate);
        let stream = stream.lock().await;
        (stream.fold(), stream.version)
    }

    /// Events held in memory for `aggregate` (those after its latest snapshot).
    pub async fn events_since_snapshot(&self, aggregate: &str) -> usize {
        self.stream(aggregate).lock().await.tail.len()
    }

    /// The relay publishing this store's events to `bus`.
    pub fn relay(&self, bus: Arc<dyn EventBus>, max_batch: usize) -> Relay {
        self.inner.outbox.relay(bus, max_batch)
    }

    /// The topic events are published to.
    pub fn topic(&self) -> &str {
        &self.inner.topic
    }
}

/// A read model built from a topic.
pub trait Projection: Send + 'static {
    /// The projection's state, saved with its checkpoint.
    type State: Serialize + DeserializeOwned + Send;
    /// Applies one event.
    fn apply(&mut self, delivery: &Delivery);
    /// The state to save.
    fn state(&self) -> Self::State;
    /// Restores saved state (at startup).
    fn restore(&mut self, state: Self::State);
}

#[derive(Serialize, Deserialize)]
struct Saved<S> {
    offset: u64,
    state: S,
    /// Highest `aggregate-version` applied per aggregate.
    versions: HashMap<String, u64>,
}

/// Feeds a [`Projection`] from a bus topic and saves its state with its offset.
pub struct ProjectionRunner<P> {
    bus: Arc<dyn EventBus>,
    topic: String,
    group: String,
    projection: P,
    checkpoint: Checkpoint,
    offset: u64,
    versions: HashMap<String, u64>,
    dedup: Deduplicator,
    batch: usize,
}

impl<P> fmt::Debug for ProjectionRunner<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("offset", &self.offset)
            .field("checkpoint", &self.checkpoint)
            .finish_non_exhaustive()
    }
}

impl<P: Projection> ProjectionRunner<P> {
    /// A runner for `projection` named `name` (its consumer group and checkpoint file
    /// `<dir>/<name>.projection`), restoring saved state if there is any.
    pub fn open(
        bus: Arc<dyn EventBus>,
        topic: &str,
        name: &str,
        mut projection: P,
        dir: impl AsRef<Path>,
        durability: Durability,
    ) -> Result<Self, EventStoreError> {
        validate_name("topic", topic)?;
        validate_name("projection", name)?;
        let checkpoint =
            Checkpoint::new(dir.as_ref().join(format!("{name}.projection")), durability);
        let mut offset = 0;
        let mut versions = HashMap::new();
        if let Some(bytes) = checkpoint.load_bytes()? {
            let saved: Saved<P::State> = serde_json::from_slice(&bytes)
                .map_err(|e| corrupt(format!("projection {name}: {e}")))?;
            offset = saved.offset;
            versions = saved.versions;
            projection.restore(saved.state);
        }
        Ok(Self {
            bus,
            topic: topic.to_string(),
            group: name.to_string(),
            projection,
            checkpoint,
            offset,
            versions,
            dedup: Deduplicator::new(10_000),
            batch: 512,
        })
    }

    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// The next offset to apply.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Applies what is available now (one batch) and saves; returns events applied.
    pub async fn step(&mut self) -> Result<usize, EventStoreError> {
        let deliveries = self.bus.read(&self.topic, self.offset, self.batch).await?;
        self.apply_and_save(&deliveries)
    }

    /// Applies events as they arrive until `shutdown` resolves; returns the projection.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<P, EventStoreError> {
        tokio::pin!(shutdown);
        self.bus.seek(&self.topic, &self.group, self.offset).await?;
        loop {
            tokio::select! {
                () = &mut shutdown => return Ok(self.projection),
                fetched = self.bus.fetch(&self.topic, &self.group, self.batch) => {
                    let deliveries = fetched?;
                    self.apply_and_save(&deliveries)?;
                    self.bus.commit(&self.topic, &self.group, self.offset).await?;
                }
            }
        }
    }

    fn apply_and_save(&mut self, deliveries: &[Delivery]) -> Result<usize, EventStoreError> {
        let Some(last) = deliveries.last() else {
            return Ok(0);
        };
        let mut applied = 0;
        for delivery in deliveries {
            debug_assert!(delivery.offset >= self.offset);
            let event = &delivery.event;
            let version = event
                .headers
                .get(AGGREGATE_VERSION)
                .and_then(|v| v.parse().ok());
            let fresh = match version {
                Some(version) => {
                    let applied = self.versions.entry(event.key.clone()).or_insert(0);
                    let fresh = version > *applied;
                    *applied = (*applied).max(version);
                    fresh
                }
                None => self.dedup.first_time(&event.id),
            };
            if fresh {
                self.projection.apply(delivery);
                applied += 1;
            }
        }
        self.offset = last.offset + 1;
        self.save()?;
        Ok(applied)
    }

    /// Writes state and offset together, atomically.
    fn save(&self) -> Result<(), EventStoreError> {
        let saved = Saved {
            offset: self.offset,
            state: self.projection.state(),
            versions: self.versions.clone(),
        };
        let bytes = serde_json::to_vec(&saved).map_err(corrupt)?;
        Ok(self.checkpoint.store_bytes(&bytes)?)
    }
}

#[cfg(test)]
mod tests;
