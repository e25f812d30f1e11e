//! The transactional outbox: a domain change and the events it causes, committed as
//! one WAL record, and a relay that publishes the events and marks them sent.
//!
//! # Guarantees
//! - **Atomic.** [`Outbox::commit`] writes the change and its events as a single
//!   record: after any crash either both are in the log or neither is.
//! - **Every committed event is published at least once**, in commit order: the relay
//!   publishes an entry's events, then advances a durable "sent" checkpoint; after a
//!   crash it resumes from the checkpoint.
//! - Compaction never drops unsent entries ([`Outbox::truncate_before`] is clamped to
//!   the checkpoint).
//!
//! # Not guaranteed
//! - Exactly-once publication. A crash between publishing and checkpointing
//!   re-publishes those events with the same ids; consumers de-duplicate by
//!   [`Event::id`](crate::events::Event) (see [`Deduplicator`](crate::events::Deduplicator)).
//! - The outbox is the domain's log of changes: the atomicity covers state that lives
//!   in (or is rebuilt from) [`Outbox::entries`]. It cannot make a write to some
//!   other database atomic with it.
//! - Retries: a failed publish stops [`Relay::run`] with the error; the caller picks
//!   the retry policy.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::events::{BusError, Checkpoint, Event, EventBus, validate_name};
use crate::wal::{Wal, WalConfig};

/// An event bound for a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboundEvent {
    pub topic: String,
    pub event: Event,
}

/// A committed domain change and its events.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// Its position in the outbox log.
    pub seq: u64,
    pub change: serde_json::Value,
    pub events: Vec<OutboundEvent>,
}

#[derive(Serialize, Deserialize)]
struct StoredEntry {
    change: serde_json::Value,
    events: Vec<OutboundEvent>,
}

/// The bytes of one outbox entry on the WAL.
pub(crate) fn encode_entry(change: serde_json::Value, events: Vec<OutboundEvent>) -> Vec<u8> {
    serde_json::to_vec(&StoredEntry { change, events })
        .expect("JSON values and events always serialise")
}

/// Reads back what [`encode_entry`] wrote; anything else is [`BusError::Corrupt`].
pub(crate) fn decode_entry(seq: u64, payload: &[u8]) -> Result<OutboxEntry, BusError> {
    let stored: StoredEntry = serde_json::from_slice(payload).map_err(|e| BusError::Corrupt {
        topic: "outbox".into(),
        offset: seq,
        reason: e.to_string(),
    })?;
    Ok(OutboxEntry {
        seq,
        change: stored.change,
        events: stored.events,
    })
}

/// The outbox: a WAL of entries plus the relay's checkpoint. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    wal: Wal,
    sent: Checkpoint,
    /// Serialises relays, so two never publish the same entries concurrently.
    relay_lock: tokio::sync::Mutex<()>,
}

impl Outbox {
    /// Opens the outbox in `dir` (`log/` for entries, `relay.offset` for progress).
    pub fn open(dir: impl AsRef<Path>, config: WalConfig) -> Result<Self, BusError> {
        let dir = dir.as_ref();
        let durability = config.durability;
        let wal = Wal::open(dir.join("log"), config)?;
        Ok(Self {
            inner: Arc::new(Inner {
                wal,
                sent: Checkpoint::new(dir.join("relay.offset"), durability),
                relay_lock: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Commits a change and its events atomically; resolves once durable, to the
    /// entry's seq.
    pub async fn commit(
        &self,
        change: serde_json::Value,
        events: Vec<OutboundEvent>,
    ) -> Result<u64, BusError> {
        for outbound in &events {
            validate_name("topic", &outbound.topic)?;
        }
        Ok(self.inner.wal.append(encode_entry(change, events)).await?)
    }

    /// Up to `max` entries from `from`, for rebuilding domain state.
    pub fn entries(&self, from: u64, max: usize) -> Result<Vec<OutboxEntry>, BusError> {
        self.inner
            .wal
            .read(from, max)?
            .into_iter()
            .map(|record| decode_entry(record.seq, &record.payload))
            .collect()
    }

    /// The first seq not yet relayed.
    pub fn sent_up_to(&self) -> Result<u64, BusError> {
        Ok(self
            .inner
            .sent
            .load()?
            .unwrap_or(0)
            .max(self.inner.wal.first_seq()))
    }

    /// The seq the next committed entry will get.
    pub fn next_seq(&self) -> u64 {
        self.inner.wal.next_seq()
    }

    /// The first seq still stored.
    pub fn first_seq(&self) -> u64 {
        self.inner.wal.first_seq()
    }

    /// Compaction: drops whole segments below `seq`, but never unsent entries.
    pub fn truncate_before(&self, seq: u64) -> Result<usize, BusError> {
        let limit = seq.min(self.sent_up_to()?);
        Ok(self.inner.wal.truncate_before(limit)?)
    }

    /// A relay publishing this outbox's events to `bus`, `max_batch` entries at a time.
    pub fn relay(&self, bus: Arc<dyn EventBus>, max_batch: usize) -> Relay {
        Relay {
            outbox: self.clone(),
            bus,
            max_batch: max_batch.clamp(1, 10_000),
        }
    }
}

/// Publishes outbox events and marks them sent.
#[derive(Debug, Clone)]
pub struct Relay {
    outbox: Outbox,
    bus: Arc<dyn EventBus>,
    max_batch: usize,
}

impl Relay {
    /// Publishes the events of up to `max_batch` unsent entries, then marks those
    /// entries sent. Returns how many entries were relayed (0: nothing pending).
    pub async fn relay_once(&self) -> Result<usize, BusError> {
        let _one_relay = self.outbox.inner.relay_lock.lock().await;
        let from = self.outbox.sent_up_to()?;
        let entries = self.outbox.entries(from, self.max_batch)?;
        let Some(last) = entries.last().map(|e| e.seq) else {
            return Ok(0);
        };
        for entry in &entries {
            for outbound in &entry.events {
                self.bus
                    .publish(&outbound.topic, outbound.event.clone())
                    .await?;
            }
        }
        self.outbox.inner.sent.store(last + 1)?;
        Ok(entries.len())
    }

    /// Relays until `shutdown` resolves, waiting for new entries when idle.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), BusError> {
        tokio::pin!(shutdown);
        let mut committed = self.outbox.inner.wal.watch_durable();
        loop {
            if self.relay_once().await? > 0 {
                continue;
            }
            let sent = self.outbox.sent_up_to()?;
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                _ = committed.wait_for(|&next| next > sent) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::events::{Deduplicator, WalBus};
    use crate::wal::Durability;

    fn config() -> WalConfig {
        WalConfig {
            segment_bytes: 8 * 1024,
            max_record_bytes: 4096,
            durability: Durability::NoSync,
            ..WalConfig::default()
        }
    }

    fn order(clock: &ManualClock, n: u64) -> (serde_json::Value, Vec<OutboundEvent>) {
        let change = serde_json::json!({ "order": n, "status": "placed" });
        let events = vec![
            OutboundEvent {
                topic: "orders".into(),
                event: Event::new(
                    "order.placed",
                    format!("o{n}"),
                    serde_json::json!({ "n": n }),
                    clock,
                ),
            },
            OutboundEvent {
                topic: "billing".into(),
                event: Event::new(
                    "invoice.due",
                    format!("o{n}"),
                    serde_json::json!({ "n": n }),
                    clock,
                ),
            },
        ];
        (change, events)
    }

    #[tokio::test]
    async fn change_and_events_commit_together_and_the_relay_publishes_them_once_marked() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let bus = WalBus::open(dir.path().join("bus"), config()).unwrap();
        let outbox = Outbox::open(dir.path().join("outbox"), config()).unwrap();
        for n in 0..3 {
            let (change, events) = order(&clock, n);
            assert_eq!(outbox.commit(change, events).await.unwrap(), n);
        }
        let entries = outbox.entries(0, 10).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1].change["order"], 1);
        assert_eq!(entries[1].events.len(), 2);

        let relay = outbox.relay(Arc::new(bus.clone()), 2);
        assert_eq!(relay.relay_once().await.unwrap(), 2);
        assert_eq!(outbox.sent_up_to().unwrap(), 2);
        assert_eq!(relay.relay_once().await.unwrap(), 1);
        assert_eq!(relay.relay_once().await.unwrap(), 0);
        let published = bus.read("orders", 0, 10).await.unwrap();
        assert_eq!(published.len(), 3);
        assert_eq!(published[2].event, entries[2].events[0].event);
        assert_eq!(bus.read("billing", 0, 10).await.unwrap().len(), 3);
        assert!(matches!(
            outbox
                .commit(
                    serde_json::json!(null),
                    vec![OutboundEvent {
                        topic: "bad topic".into(),
                        event: order(&clock, 9).1[0].event.clone()
                    }]
                )
                .await,
            Err(BusError::InvalidName { .. })
        ));
    }

    #[tokio::test]
    async fn a_crash_before_marking_sent_republishes_and_consumers_dedupe() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let bus = WalBus::open(dir.path().join("bus"), config()).unwrap();
        {
            let outbox = Outbox::open(dir.path().join("outbox"), config()).unwrap();
            for n in 0..4 {
                let (change, events) = order(&clock, n);
                outbox.commit(change, events).await.unwrap();
            }
            outbox
                .relay(Arc::new(bus.clone()), 100)
                .relay_once()
                .await
                .unwrap();
        }
        // Simulate the crash: the publish happened, the checkpoint write did not.
        Checkpoint::new(dir.path().join("outbox/relay.offset"), Durability::NoSync)
            .store(1)
            .unwrap();
        let outbox = Outbox::open(dir.path().join("outbox"), config()).unwrap();
        assert_eq!(
            outbox
                .relay(Arc::new(bus.clone()), 100)
                .relay_once()
                .await
                .unwrap(),
            3
        );

        let delivered = bus.fetch("orders", "shipping", 100).await.unwrap();
        assert_eq!(
            delivered.len(),
            7,
            "at least once: entries 1..4 went out twice"
        );
        let mut dedup = Deduplicator::new(100);
        let unique: Vec<u64> = delivered
            .iter()
            .filter(|d| dedup.first_time(&d.event.id))
            .map(|d| d.event.payload["n"].as_u64().unwrap())
            .collect();
        assert_eq!(unique, vec![0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn compaction_keeps_unsent_entries() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let outbox = Outbox::open(dir.path(), config()).unwrap();
        for n in 0..40 {
            let (change, events) = order(&clock, n);
            outbox.commit(change, events).await.unwrap();
        }
        assert_eq!(outbox.truncate_before(40).unwrap(), 0, "nothing sent yet");
        assert_eq!(outbox.first_seq(), 0);
        let bus = WalBus::open(dir.path().join("bus"), config()).unwrap();
        outbox.relay(Arc::new(bus), 30).relay_once().await.unwrap();
        assert!(outbox.truncate_before(40).unwrap() > 0);
        assert!(outbox.first_seq() <= 30);
        assert_eq!(outbox.entries(30, 100).unwrap().len(), 10);
    }

    #[tokio::test]
    async fn run_relays_new_commits_until_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let bus = WalBus::open(dir.path().join("bus"), config()).unwrap();
        let outbox = Outbox::open(dir.path().join("outbox"), config()).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let relay = tokio::spawn(outbox.relay(Arc::new(bus.clone()), 10).run(async {
            let _ = stopped.await;
        }));
        let (change, events) = order(&clock, 5);
        outbox.commit(change, events).await.unwrap();
        // The consumer waits for the relay's publish; no sleeping.
        let got = bus.fetch("orders", "g", 10).await.unwrap();
        assert_eq!(got[0].event.payload["n"], 5);
        stop.send(()).unwrap();
        relay.await.unwrap().unwrap();
    }
}
