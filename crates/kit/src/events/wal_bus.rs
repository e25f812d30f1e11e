//! The embedded bus: one WAL per topic, one checkpoint file per consumer group.
//!
//! Layout: `<dir>/<topic>/log/*.wal` and `<dir>/<topic>/groups/<group>.offset`.
//! Events are stored as JSON envelopes; a topic's offsets are its WAL seqs.
//! Publishes to one topic share that topic's group commit.
//!
//! Reads run on the calling task (they hit the page cache); a commit costs a file
//! sync and a directory sync (on a blocking thread), so commit per batch.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::Mutex;

use super::{BusError, Checkpoint, Delivery, Event, EventBus, validate_name};
use crate::wal::{Durability, Wal, WalConfig, WalReader};

/// The most events one fetch or read returns.
pub const MAX_FETCH: usize = 10_000;

/// An embedded, durable event bus on the WAL. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WalBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    config: WalConfig,
    topics: Mutex<HashMap<String, Arc<Topic>>>,
}

#[derive(Debug)]
struct Topic {
    name: String,
    dir: PathBuf,
    wal: Wal,
    durability: Durability,
    groups: Mutex<HashMap<String, Arc<Group>>>,
}

#[derive(Debug)]
struct Group {
    checkpoint: Checkpoint,
    /// Held across the checkpoint write, so concurrent commits land in order.
    committed: tokio::sync::Mutex<u64>,
    cursor: tokio::sync::Mutex<WalReader>,
}

impl Group {
    /// Stores the committed offset; the file syncs run off the async workers.
    async fn store(&self, offset: u64) -> Result<(), BusError> {
        let mut committed = self.committed.lock().await;
        let checkpoint = self.checkpoint.clone();
        tokio::task::spawn_blocking(move || checkpoint.store(offset))
            .await
            .map_err(|e| BusError::Checkpoint {
                path: "(commit task)".into(),
                reason: e.to_string(),
            })??;
        *committed = offset;
        Ok(())
    }
}

impl WalBus {
    /// A bus storing its topics under `dir`, each a WAL configured by `config`.
    pub fn open(dir: impl Into<PathBuf>, config: WalConfig) -> Result<Self, BusError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| BusError::Checkpoint {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                dir,
                config,
                topics: Mutex::new(HashMap::new()),
            }),
        })
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, BusError> {
        validate_name("topic", name)?;
        let mut topics = self.inner.topics.lock();
        if let Some(topic) = topics.get(name) {
            return Ok(topic.clone());
        }
        let dir = self.inner.dir.join(name);
        let wal = Wal::open(dir.join("log"), self.inner.config.clone())?;
        let topic = Arc::new(Topic {
            name: name.to_string(),
            dir,
            wal,
            durability: self.inner.config.durability,
            groups: Mutex::new(HashMap::new()),
        });
        topics.insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    /// The offset the next event published to `topic` will get.
    pub fn end_offset(&self, topic: &str) -> Result<u64, BusError> {
        Ok(self.topic(topic)?.wal.next_seq())
    }

    /// Compaction: drops whole segments of `topic` below `offset`. The caller decides
    /// when every group that matters has committed past it.
    pub fn truncate_before(&self, topic: &str, offset: u64) -> Result<usize, BusError> {
        Ok(self.topic(topic)?.wal.truncate_before(offset)?)
    }
}

impl Topic {
    fn group(&self, name: &str) -> Result<Arc<Group>, BusError> {
        validate_name("group", name)?;
        let mut groups = self.groups.lock();
        if let Some(group) = groups.get(name) {
            return Ok(group.clone());
        }
        let checkpoint = Checkpoint::new(
            self.dir.join("groups").join(format!("{name}.offset")),
            // Checkpoints are exactly as durable as the log they point into.
            self.durability,
        );
        // A group whose offset was compacted away resumes at the oldest retained event.
        let committed = checkpoint.load()?.unwrap_or(0).max(self.wal.first_seq());
        let group = Arc::new(Group {
            checkpoint,
            committed: tokio::sync::Mutex::new(committed),
            cursor: tokio::sync::Mutex::new(self.wal.reader(committed)?),
        });
        groups.insert(name.to_string(), group.clone());
        Ok(group)
    }

    fn decode(&self, record: crate::wal::Record) -> Result<Delivery, BusError> {
        let event = serde_json::from_slice(&record.payload).map_err(|e| BusError::Corrupt {
            topic: self.name.clone(),
            offset: record.seq,
            reason: e.to_string(),
        })?;
        Ok(Delivery {
            offset: record.seq,
            event,
        })
    }

    fn check_offset(&self, offset: u64) -> Result<(), BusError> {
        let end = self.wal.next_seq();
        if offset > end {
            return Err(BusError::OffsetBeyondEnd {
                topic: self.name.clone(),
                offset,
                end,
            });
        }
        Ok(())
    }
}

fn clamp(max: usize) -> usize {
    max.clamp(1, MAX_FETCH)
}

impl EventBus for WalBus {
    fn publish<'a>(&'a self, topic: &'a str, event: Event) -> BoxFuture<'a, Result<u64, BusError>> {
        Box::pin(async move {
            let topic = self.topic(topic)?;
            let bytes = serde_json::to_vec(&event).expect("an Event always serialises");
            Ok(topic.wal.append(bytes).await?)
        })
    }

    fn fetch<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, BusError>> {
        Box::pin(async move {
            let topic = self.topic(topic)?;
            let group = topic.group(group)?;
            let mut durable = topic.wal.watch_durable();
            loop {
                let position = {
                    let mut cursor = group.cursor.lock().await;
                    let mut batch = Vec::new();
                    while batch.len() < clamp(max) {
                        match cursor.next_record()? {
                            Some(record) => batch.push(topic.decode(record)?),
                            None => break,
                        }
                    }
                    if !batch.is_empty() {
                        return Ok(batch);
                    }
                    cursor.position()
                };
                // Wait without holding the cursor, so seek and other fetches proceed.
                // The sender lives in the topic's WAL, which outlives this call.
                let _ = durable.wait_for(|&next| next > position).await;
            }
        })
    }

    fn commit<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
        next_offset: u64,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let topic = self.topic(topic)?;
            topic.check_offset(next_offset)?;
            topic.group(group)?.store(next_offset).await
        })
    }

    fn committed<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<u64, BusError>> {
        Box::pin(async move {
            let group = self.topic(topic)?.group(group)?;
            Ok(*group.committed.lock().await)
        })
    }

    fn seek<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let topic = self.topic(topic)?;
            topic.check_offset(offset)?;
            let reader = topic.wal.reader(offset)?;
            let group = topic.group(group)?;
            let mut cursor = group.cursor.lock().await;
            group.store(offset).await?;
            *cursor = reader;
            Ok(())
        })
    }

    fn read<'a>(
        &'a self,
        topic: &'a str,
        offset: u64,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, BusError>> {
        Box::pin(async move {
            let topic = self.topic(topic)?;
            topic.check_offset(offset)?;
            topic
                .wal
                .read(offset, clamp(max))?
                .into_iter()
                .map(|record| topic.decode(record))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests;
