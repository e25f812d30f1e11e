//! Events between services: the envelope, the bus trait, an embedded durable bus on
//! the WAL, checkpoints, and consumer-side de-duplication.
//!
//! # Guarantees (of the [`EventBus`] contract)
//! - A publish that returns `Ok(offset)` is durable in its topic at that offset;
//!   offsets in a topic are dense and ordered.
//! - **At-least-once** per consumer group: [`EventBus::fetch`] delivers from the
//!   group's cursor, which starts at its committed offset; whatever was fetched but
//!   not [committed](EventBus::commit) before a restart is delivered again.
//! - Replay: [`EventBus::seek`] moves a group to any retained offset, and
//!   [`EventBus::read`] reads a topic without a group.
//!
//! # Not guaranteed
//! - Exactly-once. Consumers de-duplicate by [`Event::id`] ([`Deduplicator`]) or make
//!   their effects idempotent.
//! - Ordering across topics, and fair sharing between several consumers of one group:
//!   the embedded bus hands each fetch the next events of the group; commits are
//!   cumulative, so one consumer per group is the intended shape.
//!
//! The trait is shaped after NATS JetStream pull consumers (publish with ack, fetch
//! a batch, ack up to a sequence); `casebook-engines` implements it on JetStream.
//! Both implementations run the same suite, [`contract`].

mod checkpoint;
#[doc(hidden)]
pub mod contract;
mod dedup;
mod wal_bus;

pub use checkpoint::Checkpoint;
pub use dedup::Deduplicator;
pub use wal_bus::WalBus;

use std::collections::BTreeMap;
use std::fmt;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::wal::WalError;

/// The header carrying W3C trace context through the bus.
pub const TRACEPARENT: &str = "traceparent";

/// An event as it travels: identity, type, key, time, payload and trace headers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique per event, stable across redeliveries and re-publishes: the key for
    /// consumer-side de-duplication.
    pub id: String,
    /// What happened, e.g. `trip.requested`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The entity it concerns (aggregate id, user id, ...).
    pub key: String,
    /// Wall-clock milliseconds since the Unix epoch when it happened.
    pub time_ms: u64,
    pub payload: serde_json::Value,
    /// Trace context and other metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

impl Event {
    /// A new event with a random id, stamped by `clock`, carrying the current
    /// request's trace context (if any) as a `traceparent` header.
    pub fn new(
        event_type: impl Into<String>,
        key: impl Into<String>,
        payload: serde_json::Value,
        clock: &dyn Clock,
    ) -> Self {
        let mut headers = BTreeMap::new();
        if let Some(trace) = crate::telemetry::current() {
            headers.insert(TRACEPARENT.to_string(), trace.child_traceparent());
        }
        Self {
            id: format!("{:032x}", rand::random::<u128>()),
            event_type: event_type.into(),
            key: key.into(),
            time_ms: clock.wall_millis(),
            payload,
            headers,
        }
    }
}

/// An event read from a topic, with its offset there.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub offset: u64,
    pub event: Event,
}

/// What can go wrong on the bus.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    #[error("invalid {what} name {name:?}: use 1-128 characters from [A-Za-z0-9._-]")]
    InvalidName { what: &'static str, name: String },
    #[error("offset {offset} is beyond the end of topic {topic} ({end})")]
    OffsetBeyondEnd {
        topic: String,
        offset: u64,
        end: u64,
    },
    #[error("event at offset {offset} of {topic} is unreadable: {reason}")]
    Corrupt {
        topic: String,
        offset: u64,
        reason: String,
    },
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: String, reason: String },
    #[error(transparent)]
    Log(#[from] WalError),
    /// An external engine (e.g. NATS JetStream) refused or failed a call.
    #[error("{engine}: {reason}")]
    Engine {
        engine: &'static str,
        reason: String,
    },
}

/// Validates a topic or group name.
pub fn validate_name(what: &'static str, name: &str) -> Result<(), BusError> {
    let ok = (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(BusError::InvalidName {
            what,
            name: name.to_string(),
        })
    }
}

/// A durable publish/subscribe log of topics with consumer groups.
pub trait EventBus: Send + Sync + fmt::Debug {
    /// Appends `event` to `topic`; resolves once durable, to its offset.
    fn publish<'a>(&'a self, topic: &'a str, event: Event) -> BoxFuture<'a, Result<u64, BusError>>;

    /// The next events (at most `max`) for `group` on `topic`, waiting until there is
    /// at least one. Advances the group's in-memory cursor, not its committed offset.
    fn fetch<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, BusError>>;

    /// Records durably that `group` has processed everything before `next_offset`.
    fn commit<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
        next_offset: u64,
    ) -> BoxFuture<'a, Result<(), BusError>>;

    /// The group's committed offset (0 for a new group).
    fn committed<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<u64, BusError>>;

    /// Moves `group` to `offset` (cursor and committed offset), to replay or skip.
    fn seek<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, Result<(), BusError>>;

    /// Reads up to `max` events from `offset` without a group; never waits.
    fn read<'a>(
        &'a self,
        topic: &'a str,
        offset: u64,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, BusError>>;
}
