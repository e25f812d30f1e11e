//! The kit's [`EventBus`] on NATS JetStream: one stream per topic, one durable pull
//! consumer per consumer group.
//!
//! Mapping. Topic `t` is the stream `<stream_prefix><esc(t)>` capturing the one
//! subject `<subject_prefix>.<esc(t)>`, where `esc` maps `_` to `_5F` and `.` to
//! `_2E` (injective; stream names and subject tokens may not contain dots). One
//! stream per topic, not one shared stream with a subject per topic, because the
//! contract wants offsets dense per topic: in a stream of its own a topic's
//! messages are every sequence from the first retained one, so **offset = stream
//! sequence − 1**; in a shared stream the topics' sequences interleave. Nothing but
//! the retention limits deletes from these streams (never `delete_message`), and
//! limits remove the oldest messages only, so retained offsets stay dense.
//! Group `g` of topic `t` is the durable pull consumer `esc(g)` on the topic's
//! stream, `AckPolicy::All`: its ack floor is the group's committed offset.
//!
//! - `publish`: a JetStream publish with `Nats-Msg-Id = Event::id`, resolved on the
//!   stream's ack (stored, and replicated as the stream is configured); the offset
//!   is the acked sequence − 1. A re-publish of an id within the duplicate window
//!   ([`NatsConfig::duplicate_window`]) is not stored again and resolves to the
//!   offset of the first copy.
//! - `fetch`: a no-wait pull of up to `max`; when it is empty the call waits —
//!   without holding the group — on a core subscription to the topic's subject (and
//!   at most [`WAIT_RECHECK`]), then pulls again. The group's cursor lives in this
//!   bus instance: deliveries below it (JetStream redeliveries after `ack_wait`)
//!   are dropped; a delivery above it (a gap: a pull whose caller was cancelled
//!   took it) resets the consumer to the committed offset and pulls again.
//! - `commit(next)`: acks the delivery at offset `next − 1` with a confirmed
//!   ("double") ack, which with `AckPolicy::All` acks everything before it. When
//!   this instance holds no such delivery (not fetched here, or a commit backwards)
//!   the consumer is recreated to start at `next` (its ack floor is then `next`).
//! - `committed`: the consumer's ack floor, asked of the server.
//! - `seek(o)`: deletes and recreates the consumer starting at sequence `o + 1`;
//!   the cursor moves to `o`.
//! - `read`: an ephemeral pull consumer (`AckPolicy::None`, starting at `o + 1`,
//!   removed after the read, and by the server after [`EPHEMERAL_IDLE`] if the
//!   delete is lost), one no-wait pull of up to `max`.
//! - A bus instance taking up a group (its first call on it) whose consumer shows
//!   deliveries beyond its ack floor — fetched and not committed by an earlier
//!   instance — recreates it at the ack floor, so those events come back at once
//!   rather than after `ack_wait`: that is the contract's restart.
//!
//! # Guaranteed
//! - A publish that returns `Ok(offset)` is in the stream (file storage) at that
//!   offset; offsets in a topic are dense and ordered from the first retained one.
//! - At-least-once per group: whatever a group fetched and did not commit is
//!   delivered again to the next bus instance that takes the group up, and — if a
//!   fetch's caller is cancelled after the server handed it events — to this one.
//! - De-duplication of re-published event ids within the duplicate window (the
//!   embedded [`WalBus`](casebook_kit::events::WalBus) appends them again).
//!
//! # Not guaranteed
//! - Exactly-once: consumers still de-duplicate by `Event::id`.
//! - Several live bus instances on one group: each keeps its own cursor and a new
//!   one resets the consumer to the committed offset; one consumer per group, as
//!   the contract intends.
//! - A commit beyond this instance's cursor also moves the cursor there (the
//!   consumer is recreated at that offset); `WalBus` keeps its cursor.
//! - Retention: events beyond [`NatsConfig`]'s limits (messages, bytes, age) are
//!   dropped oldest first whether or not a group has committed them; a group behind
//!   them resumes at the oldest retained event. Existing streams keep the
//!   configuration they were created with.
//! - A group may hold at most [`NatsConfig::max_ack_pending`] fetched and
//!   uncommitted events; beyond that its fetches wait until it commits.
//! - No TLS or credentials: the engines are on loopback.
//!
//! Server: 2.9.0 or newer, with JetStream (checked at connect). 2.9 brought the
//! consumer-create API with the name in the subject (`$JS.API.CONSUMER.CREATE.
//! <stream>.<consumer>`), which this client uses, and `inactive_threshold` on
//! ephemeral pull consumers, which `read` relies on.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{
    self, Context,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
    message::PublishMessage,
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
};
use casebook_kit::events::{BusError, Delivery, Event, EventBus, validate_name};
use futures::StreamExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;

/// The most events one fetch or read returns (as [`casebook_kit::events::WalBus`]).
pub const MAX_FETCH: usize = 10_000;
/// The oldest server this bus works with.
pub const MIN_SERVER: (u64, u64, u64) = (2, 9, 0);
/// A waiting fetch pulls again at least this often, even without a wake-up.
pub const WAIT_RECHECK: Duration = Duration::from_secs(1);
/// The server removes a `read`'s ephemeral consumer after this long unused.
pub const EPHEMERAL_IDLE: Duration = Duration::from_secs(30);
/// The longest stream name this bus makes (a directory name on the server).
const MAX_STREAM_NAME: usize = 200;
const ENGINE: &str = "nats";
/// Tries at creating a stream whose store the server failed to make.
const CREATE_ATTEMPTS: u32 = 5;

/// Where the bus keeps its topics, and their retention.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// Prefix of every stream's name (`CASEBOOK_EV_`).
    pub stream_prefix: String,
    /// Prefix of every topic's subject (`casebook.events`).
    pub subject_prefix: String,
    /// Retention per topic: most messages kept (1 000 000).
    pub max_messages: i64,
    /// Retention per topic: most bytes kept (1 GiB).
    pub max_bytes: i64,
    /// Retention per topic: oldest message kept (7 days).
    pub max_age: Duration,
    /// How long a published id is remembered for de-duplication (2 minutes).
    pub duplicate_window: Duration,
    /// Stream replicas (1: a single server).
    pub replicas: usize,
    /// How long a fetched, uncommitted event waits before JetStream redelivers it
    /// (60 s). Redeliveries to the instance that fetched it are dropped.
    pub ack_wait: Duration,
    /// Fetched and uncommitted events per group (100 000).
    pub max_ack_pending: i64,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            stream_prefix: "CASEBOOK_EV_".into(),
            subject_prefix: "casebook.events".into(),
            max_messages: 1_000_000,
            max_bytes: 1 << 30,
            max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
            replicas: 1,
            ack_wait: Duration::from_secs(60),
            max_ack_pending: 100_000,
        }
    }
}

/// The kit's event bus on NATS JetStream. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NatsBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: async_nats::Client,
    js: Context,
    config: NatsConfig,
    server_version: String,
    topics: Mutex<HashMap<String, Arc<Topic>>>,
}

#[derive(Debug)]
struct Topic {
    name: String,
    subject: String,
    stream: stream::Stream,
    groups: Mutex<HashMap<String, Arc<Group>>>,
}

#[derive(Debug)]
struct Group {
    consumer_name: String,
    /// Held across the group's server calls (never a sync lock across an await).
    state: tokio::sync::Mutex<GroupState>,
}

#[derive(Debug)]
struct GroupState {
    consumer: PullConsumer,
    /// The next offset this instance hands out.
    cursor: u64,
    /// Deliveries at or above the committed offset, by offset: what a commit acks.
    delivered: BTreeMap<u64, jetstream::Message>,
}

fn engine(reason: impl std::fmt::Display) -> BusError {
    BusError::Engine {
        engine: ENGINE,
        reason: reason.to_string(),
    }
}

/// `_` → `_5F`, `.` → `_2E`: an injective map from valid topic and group names to
/// stream, consumer and subject-token names.
fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '_' => out.push_str("_5F"),
            '.' => out.push_str("_2E"),
            c => out.push(c),
        }
    }
    out
}

/// `"2.9.10"` (or `"2.10.0-beta.1"`) → (2, 9, 10).
fn parse_version(version: &str) -> Option<(u64, u64, u64)> {
    let core = version.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

fn clamp(max: usize) -> usize {
    max.clamp(1, MAX_FETCH)
}

impl NatsBus {
    /// Connects to `url` (e.g. `nats://127.0.0.1:4222`) and checks the server: at
    /// least [`MIN_SERVER`], with JetStream enabled for this account.
    pub async fn connect(url: &str, config: NatsConfig) -> Result<Self, BusError> {
        let client = async_nats::connect(url)
            .await
            .map_err(|e| engine(format!("connect to {url}: {e}")))?;
        let info = client.server_info();
        let version = info.version.clone();
        match parse_version(&version) {
            Some(v) if v >= MIN_SERVER => {}
            _ => {
                return Err(engine(format!(
                    "server {version} at {url} is too old: this bus needs NATS {}.{}.{}+ \
                     (consumer create with the name in the subject, inactive_threshold on \
                     ephemeral pull consumers)",
                    MIN_SERVER.0, MIN_SERVER.1, MIN_SERVER.2
                )));
            }
        }
        // Asked raw: this client's account-info type wants fields 2.9 does not send.
        let no_js = |why: String| {
            engine(format!(
                "server {version} at {url}: JetStream is not available ({why}); \
                 start nats-server with -js"
            ))
        };
        let reply = client
            .request("$JS.API.INFO", Default::default())
            .await
            .map_err(|e| no_js(e.to_string()))?;
        let reply: serde_json::Value =
            serde_json::from_slice(&reply.payload).map_err(|e| no_js(e.to_string()))?;
        if let Some(error) = reply.get("error") {
            return Err(no_js(error.to_string()));
        }
        let js = jetstream::new(client.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                js,
                config,
                server_version: version,
                topics: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The server's version, as it announced itself at connect.
    pub fn server_version(&self) -> &str {
        &self.inner.server_version
    }

    /// The stream that holds `topic`.
    pub fn stream_name(&self, topic: &str) -> Result<String, BusError> {
        validate_name("topic", topic)?;
        let name = format!("{}{}", self.inner.config.stream_prefix, escape(topic));
        if name.len() > MAX_STREAM_NAME {
            return Err(engine(format!(
                "topic {topic:?} makes a stream name of {} bytes (at most {MAX_STREAM_NAME})",
                name.len()
            )));
        }
        Ok(name)
    }

    /// Deletes every stream whose name starts with the configured prefix (tests).
    pub async fn delete_streams(&self) -> Result<usize, BusError> {
        let mut names = self.inner.js.stream_names();
        let mut doomed = Vec::new();
        while let Some(name) = names.next().await {
            let name = name.map_err(engine)?;
            if name.starts_with(&self.inner.config.stream_prefix) {
                doomed.push(name);
            }
        }
        for name in &doomed {
            self.inner.js.delete_stream(name).await.map_err(engine)?;
        }
        self.inner.topics.lock().clear();
        Ok(doomed.len())
    }

    async fn topic(&self, name: &str) -> Result<Arc<Topic>, BusError> {
        if let Some(topic) = self.inner.topics.lock().get(name) {
            return Ok(topic.clone());
        }
        let stream_name = self.stream_name(name)?;
        let config = &self.inner.config;
        let subject = format!("{}.{}", config.subject_prefix, escape(name));
        let stream_config = stream::Config {
            name: stream_name.clone(),
            subjects: vec![subject.clone()],
            max_messages: config.max_messages,
            max_bytes: config.max_bytes,
            max_age: config.max_age,
            duplicate_window: config.duplicate_window,
            num_replicas: config.replicas,
            storage: StorageType::File,
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            ..Default::default()
        };
        let mut attempt = 1;
        let stream = loop {
            match self
                .inner
                .js
                .get_or_create_stream(stream_config.clone())
                .await
            {
                Ok(stream) => break stream,
                // 2.9 removes an account's stream directory with its last stream; a
                // create racing that delete fails to make its store (10049). Retried.
                Err(e) if attempt < CREATE_ATTEMPTS && e.to_string().contains("10049") => {
                    tracing::debug!(stream = %stream_name, attempt, "stream create raced a delete: {e}");
                    tokio::time::sleep(Duration::from_millis(20 * attempt as u64)).await;
                    attempt += 1;
                }
                Err(e) => return Err(engine(format!("stream {stream_name}: {e}"))),
            }
        };
        let topic = Arc::new(Topic {
            name: name.to_string(),
            subject,
            stream,
            groups: Mutex::new(HashMap::new()),
        });
        Ok(self
            .inner
            .topics
            .lock()
            .entry(name.to_string())
            .or_insert(topic)
            .clone())
    }

    async fn group(&self, topic: &Topic, name: &str) -> Result<Arc<Group>, BusError> {
        validate_name("group", name)?;
        if let Some(group) = topic.groups.lock().get(name) {
            return Ok(group.clone());
        }
        let consumer_name = escape(name);
        let existing = match topic.stream.consumer_info(&consumer_name).await {
            Ok(info) => Some(info),
            Err(e) if e.to_string().contains("not found") => None,
            Err(e) => return Err(engine(format!("consumer {consumer_name}: {e}"))),
        };
        let (consumer, committed) = match existing {
            // Taking the group up: whatever an earlier instance fetched and did not
            // commit comes back now, not after ack_wait.
            Some(info) if info.delivered.stream_sequence > committed_from(&info) => {
                let committed = committed_from(&info);
                (
                    self.recreate(topic, &consumer_name, committed).await?,
                    committed,
                )
            }
            Some(info) => {
                let consumer = topic
                    .stream
                    .get_consumer(&consumer_name)
                    .await
                    .map_err(engine)?;
                (consumer, committed_from(&info))
            }
            None => (self.recreate(topic, &consumer_name, 0).await?, 0),
        };
        let group = Arc::new(Group {
            consumer_name,
            state: tokio::sync::Mutex::new(GroupState {
                consumer,
                cursor: committed,
                delivered: BTreeMap::new(),
            }),
        });
        Ok(topic
            .groups
            .lock()
            .entry(name.to_string())
            .or_insert(group)
            .clone())
    }

    /// (Re)creates the group's consumer so that its first delivery is `offset` and
    /// its ack floor (the committed offset) is `offset`.
    async fn recreate(
        &self,
        topic: &Topic,
        consumer_name: &str,
        offset: u64,
    ) -> Result<PullConsumer, BusError> {
        match topic.stream.delete_consumer(consumer_name).await {
            Ok(_) => {}
            Err(e) if e.to_string().contains("not found") => {}
            Err(e) => return Err(engine(format!("delete consumer {consumer_name}: {e}"))),
        }
        let deliver_policy = if offset == 0 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: offset + 1,
            }
        };
        topic
            .stream
            .create_consumer(pull::Config {
                durable_name: Some(consumer_name.to_string()),
                deliver_policy,
                ack_policy: AckPolicy::All,
                ack_wait: self.inner.config.ack_wait,
                max_ack_pending: self.inner.config.max_ack_pending,
                filter_subject: topic.subject.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| engine(format!("create consumer {consumer_name}: {e}")))
    }

    /// The offset the next event published to `topic` will get.
    pub async fn end_offset(&self, topic: &str) -> Result<u64, BusError> {
        let topic = self.topic(topic).await?;
        end_of(&topic).await
    }

    fn decode(topic: &Topic, message: &jetstream::Message) -> Result<Delivery, BusError> {
        let seq = message.info().map_err(engine)?.stream_sequence;
        let offset = seq - 1;
        let event: Event =
            serde_json::from_slice(&message.payload).map_err(|e| BusError::Corrupt {
                topic: topic.name.clone(),
                offset,
                reason: e.to_string(),
            })?;
        Ok(Delivery { offset, event })
    }

    /// One no-wait pull for the group.
    async fn pull_once(
        &self,
        topic: &Topic,
        group: &Group,
        max: usize,
    ) -> Result<Pulled, BusError> {
        let mut state = group.state.lock().await;
        let mut batch = state
            .consumer
            .fetch()
            .max_messages(max)
            .messages()
            .await
            .map_err(engine)?;
        let mut out = Vec::new();
        let mut gap = false;
        while let Some(message) = batch.next().await {
            let message = message.map_err(engine)?;
            let delivery = Self::decode(topic, &message)?;
            if delivery.offset < state.cursor {
                // A redelivery of something this instance already handed out.
                state.delivered.insert(delivery.offset, message);
                continue;
            }
            if delivery.offset > state.cursor && !gap {
                // Retention may have dropped what lies between; otherwise a
                // cancelled pull took it.
                let first = first_of(topic).await?;
                if first > state.cursor && delivery.offset <= first {
                    state.cursor = first;
                } else {
                    gap = true;
                }
            }
            if gap {
                continue;
            }
            state.cursor = delivery.offset + 1;
            state.delivered.insert(delivery.offset, message);
            out.push(delivery);
        }
        if gap {
            let committed = committed_of(topic, &group.consumer_name).await?;
            tracing::warn!(
                topic = %topic.name,
                consumer = %group.consumer_name,
                cursor = state.cursor,
                committed,
                "a delivery went missing; resetting the group to its committed offset"
            );
            state.consumer = self
                .recreate(topic, &group.consumer_name, committed)
                .await?;
            state.delivered.clear();
            if out.is_empty() {
                // Nothing handed out yet from this pull: redeliveries refill it.
                return Ok(Pulled::Reset);
            }
        }
        Ok(if out.is_empty() {
            Pulled::Nothing
        } else {
            Pulled::Batch(out)
        })
    }
}

/// What one pull for a group came to.
#[derive(Debug)]
enum Pulled {
    Batch(Vec<Delivery>),
    /// Nothing new was available.
    Nothing,
    /// A gap reset the group's consumer: pull again at once.
    Reset,
}

async fn stream_state(topic: &Topic) -> Result<stream::State, BusError> {
    Ok(topic
        .stream
        .get_info()
        .await
        .map_err(|e| engine(format!("stream info of {}: {e}", topic.name)))?
        .state)
}

/// The offset the next publish gets: the last sequence (offset = sequence − 1).
async fn end_of(topic: &Topic) -> Result<u64, BusError> {
    Ok(stream_state(topic).await?.last_sequence)
}

/// The oldest retained offset.
async fn first_of(topic: &Topic) -> Result<u64, BusError> {
    Ok(stream_state(topic).await?.first_sequence.saturating_sub(1))
}

async fn committed_of(topic: &Topic, consumer_name: &str) -> Result<u64, BusError> {
    let info = topic
        .stream
        .consumer_info(consumer_name)
        .await
        .map_err(|e| engine(format!("consumer {consumer_name}: {e}")))?;
    Ok(committed_from(&info))
}

/// A group's committed offset: its consumer's ack floor (a stream sequence, so the
/// next offset), but never below where the consumer was made to start — a server
/// reports an ack floor of 0 until the first ack of a consumer created at a start
/// sequence (seen on 2.9).
fn committed_from(info: &jetstream::consumer::Info) -> u64 {
    let start = match info.config.deliver_policy {
        DeliverPolicy::ByStartSequence { start_sequence } => start_sequence.saturating_sub(1),
        _ => 0,
    };
    info.ack_floor.stream_sequence.max(start)
}

async fn check_offset(topic: &Topic, offset: u64) -> Result<(), BusError> {
    let end = end_of(topic).await?;
    if offset > end {
        return Err(BusError::OffsetBeyondEnd {
            topic: topic.name.clone(),
            offset,
            end,
        });
    }
    Ok(())
}

impl EventBus for NatsBus {
    fn publish<'a>(&'a self, topic: &'a str, event: Event) -> BoxFuture<'a, Result<u64, BusError>> {
        Box::pin(async move {
            let topic = self.topic(topic).await?;
            let bytes = serde_json::to_vec(&event).expect("an Event always serialises");
            let ack = self
                .inner
                .js
                .send_publish(
                    topic.subject.clone(),
                    PublishMessage::build()
                        .payload(bytes.into())
                        .message_id(&event.id),
                )
                .await
                .map_err(|e| engine(format!("publish to {}: {e}", topic.subject)))?
                .await
                .map_err(|e| engine(format!("publish ack from {}: {e}", topic.subject)))?;
            if ack.duplicate {
                tracing::debug!(topic = %topic.name, id = %event.id, seq = ack.sequence, "duplicate publish");
            }
            Ok(ack.sequence - 1)
        })
    }

    fn fetch<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, BusError>> {
        Box::pin(async move {
            let topic = self.topic(topic).await?;
            let group = self.group(&topic, group).await?;
            loop {
                // Subscribed before the pull, so a publish after it wakes us.
                let mut wake = self
                    .inner
                    .client
                    .subscribe(topic.subject.clone())
                    .await
                    .map_err(engine)?;
                match self.pull_once(&topic, &group, clamp(max)).await? {
                    Pulled::Batch(batch) => return Ok(batch),
                    Pulled::Reset => continue,
                    Pulled::Nothing => {}
                }
                // Wait without holding the group, so commit and seek proceed.
                let _ = tokio::time::timeout(WAIT_RECHECK, wake.next()).await;
                drop(wake);
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
            let topic = self.topic(topic).await?;
            let group = self.group(&topic, group).await?;
            check_offset(&topic, next_offset).await?;
            let mut state = group.state.lock().await;
            let acked = match next_offset.checked_sub(1) {
                Some(last) => match state.delivered.get(&last) {
                    Some(message) => {
                        message.double_ack().await.map_err(|e| {
                            engine(format!("ack of offset {last} on {}: {e}", topic.name))
                        })?;
                        true
                    }
                    None => false,
                },
                None => false,
            };
            if !acked {
                let committed = committed_of(&topic, &group.consumer_name).await?;
                if committed == next_offset {
                    return Ok(());
                }
                state.consumer = self
                    .recreate(&topic, &group.consumer_name, next_offset)
                    .await?;
                state.delivered.clear();
                state.cursor = state.cursor.max(next_offset);
                return Ok(());
            }
            state.delivered = state.delivered.split_off(&next_offset);
            Ok(())
        })
    }

    fn committed<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<u64, BusError>> {
        Box::pin(async move {
            let topic = self.topic(topic).await?;
            let group = self.group(&topic, group).await?;
            committed_of(&topic, &group.consumer_name).await
        })
    }

    fn seek<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let topic = self.topic(topic).await?;
            let group = self.group(&topic, group).await?;
            check_offset(&topic, offset).await?;
            let mut state = group.state.lock().await;
            state.consumer = self.recreate(&topic, &group.consumer_name, offset).await?;
            state.delivered.clear();
            state.cursor = offset;
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
            let topic = self.topic(topic).await?;
            let end = end_of(&topic).await?;
            if offset > end {
                return Err(BusError::OffsetBeyondEnd {
                    topic: topic.name.clone(),
                    offset,
                    end,
                });
            }
            if offset == end {
                return Ok(Vec::new());
            }
            let max = clamp(max).min((end - offset) as usize);
            let consumer: PullConsumer = topic
                .stream
                .create_consumer(pull::Config {
                    deliver_policy: DeliverPolicy::ByStartSequence {
                        start_sequence: offset + 1,
                    },
                    ack_policy: AckPolicy::None,
                    inactive_threshold: EPHEMERAL_IDLE,
                    filter_subject: topic.subject.clone(),
                    ..Default::default()
                })
                .await
                .map_err(|e| engine(format!("read consumer on {}: {e}", topic.name)))?;
            let result = async {
                let mut batch = consumer
                    .fetch()
                    .max_messages(max)
                    .messages()
                    .await
                    .map_err(engine)?;
                let mut out = Vec::with_capacity(max);
                while let Some(message) = batch.next().await {
                    out.push(Self::decode(&topic, &message.map_err(engine)?)?);
                }
                Ok(out)
            }
            .await;
            let name = consumer.cached_info().name.clone();
            if let Err(e) = topic.stream.delete_consumer(&name).await {
                tracing::debug!(consumer = %name, "read consumer left to expire: {e}");
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_is_injective_on_the_troublesome_characters() {
        assert_eq!(escape("order.placed_v1"), "order_2Eplaced_5Fv1");
        assert_ne!(escape("a_2E"), escape("a."));
        assert_ne!(escape("a_"), escape("a."));
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("2.9.10"), Some((2, 9, 10)));
        assert_eq!(parse_version("2.10.0-beta.1"), Some((2, 10, 0)));
        assert_eq!(parse_version("2.9"), Some((2, 9, 0)));
        assert!(parse_version("2.8.4").unwrap() < MIN_SERVER);
        assert_eq!(parse_version("junk"), None);
    }
}
