//! The node-to-node link: stanzas for sessions on another node of the cluster.
//!
//! Sending: per peer node, one bounded queue and one task owning one TCP
//! connection to the peer's link listener (multiplexed: every session's traffic to
//! that peer shares it). The task coalesces whatever is queued into one batch frame
//! per write (at most [`frame::MAX_BATCH`] entries / [`MAX_BATCH_BYTES`]), keeps at
//! most [`MAX_IN_FLIGHT_BATCHES`] unacknowledged batches (while one is in flight
//! the queue fills, which is what makes the next batch large), and reconnects with
//! capped exponential backoff while the peer is a live member of the directory.
//!
//! Receiving: each accepted link connection is verified by its hello (it must name
//! this node and this epoch), then every batch is delivered to local sessions and
//! acknowledged with the seqs that found nobody.
//!
//! Guarantees (nothing lost): a stanza is accepted for a peer only while the link
//! to it is up and its queue has room, otherwise the router reports `NoSession` at
//! once and the caller stores the message offline. After acceptance, a message
//! marked store-on-fail (no other copy was delivered) that the peer answers "gone"
//! for, or that is unacknowledged when the connection breaks, or still queued when
//! the peer leaves the directory, is stored in the recipient's offline store by
//! this (sending) node, and the recipient's nodes are nudged to flush it. This is
//! at-least-once: a batch delivered by a peer that died before acknowledging it is
//! stored again (clients de-duplicate by id; the offline store itself keeps one
//! copy per sender + id, and a missing id is derived from the stanza's bytes so
//! two diverted copies collapse). A malformed frame from either side drops that
//! connection (and only it). Not here: iq/presence failure bounces (a diverted
//! non-message is dropped and counted), ordering between different peers,
//! encryption of the link.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use casebook_kit::runtime::InstanceContext;
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::frame::{self, Entry, FLAG_MESSAGE, FLAG_STORE_ON_FAIL, Frame, Op};
use super::registry::{Located, SessionRegistry};
use super::{Cluster, LinkStats, NodeRef};
use crate::node::router::Delivery;
use crate::offline::{NewMessage, OfflineStore};
use crate::xml::{Limits, StreamEvent, StreamParser, stream_open};

/// Entries queued to one peer before the link refuses more (→ offline).
pub const PEER_QUEUE: usize = 8192;
/// Bytes of stanzas in one batch frame.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Batches written and not yet acknowledged, per peer.
pub const MAX_IN_FLIGHT_BATCHES: usize = 2;
/// How long a hello or an ack may take before the connection counts as broken.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const READ_CHUNK: usize = 64 * 1024;

/// One peer as the sending side sees it.
#[derive(Debug, Clone)]
struct Peer {
    node: NodeRef,
    tx: mpsc::Sender<Entry>,
    /// Set while the peer cannot be reached: the router refuses at once.
    down: Arc<AtomicBool>,
    /// Recipients whose nudge could not be sent: re-sent when the link is back.
    renudge: Renudge,
}

/// Bare JIDs to nudge once the link to a peer is up again (bounded).
#[derive(Debug, Clone, Default)]
struct Renudge(Arc<Mutex<std::collections::HashSet<String>>>);

/// Most recipients remembered for a re-nudge per peer; beyond it they flush at
/// their next login.
const MAX_RENUDGE: usize = 4096;

impl Renudge {
    fn remember(&self, bare: &str) {
        let mut set = self.0.lock();
        if set.len() < MAX_RENUDGE {
            set.insert(bare.to_owned());
        }
    }

    fn take(&self) -> Vec<String> {
        self.0.lock().drain().collect()
    }
}

/// What the link hands entries to on its own node: the node's local sessions.
/// The chat node implements it, so the link never reaches into the node's state.
pub trait LocalSessions: Send + Sync + std::fmt::Debug + 'static {
    /// Delivers `stanza` to the session `bare/resource`.
    fn to_full(&self, bare: &str, resource: &str, stanza: &str) -> Delivery;
    /// Delivers `stanza` to the sessions of `bare` (RFC 6121 rules).
    fn to_bare(&self, bare: &str, stanza: &str) -> Delivery;
    /// Tells this node's sessions of `bare` to flush their offline backlog;
    /// returns how many were told.
    fn nudge_local(&self, bare: &str) -> usize;
    /// A message for `bare` was stored offline: nudge every session of `bare`,
    /// here and on other nodes.
    fn stored_offline(&self, bare: &str);
}

/// A node's end of the cluster: forwarding to peers and serving their links.
#[derive(Debug)]
pub struct NodeLink {
    pub(crate) me: NodeRef,
    cluster: Arc<Cluster>,
    offline: OfflineStore,
    ctx: InstanceContext,
    local: OnceLock<Weak<dyn LocalSessions>>,
    peers: Mutex<HashMap<String, Peer>>,
    stats: Arc<LinkStats>,
    max_stanza_bytes: usize,
}

impl NodeLink {
    pub(crate) fn new(
        me: NodeRef,
        cluster: Arc<Cluster>,
        offline: OfflineStore,
        ctx: InstanceContext,
        max_stanza_bytes: usize,
    ) -> Self {
        let stats = cluster.link_stats(&me.id);
        Self {
            me,
            cluster,
            offline,
            ctx,
            local: OnceLock::new(),
            peers: Mutex::default(),
            stats,
            max_stanza_bytes,
        }
    }

    /// The node's local sessions, once they exist (local delivery and nudges).
    pub(crate) fn set_local(&self, sessions: Weak<dyn LocalSessions>) {
        let _ = self.local.set(sessions);
    }

    fn local(&self) -> Option<Arc<dyn LocalSessions>> {
        self.local.get().and_then(Weak::upgrade)
    }

    /// The other live nodes holding sessions of `bare`. The embedded registry
    /// answers at once; a registry that cannot answer without waiting counts as
    /// "nobody elsewhere" (the caller then stores offline: safe, not lost).
    pub(crate) fn elsewhere(&self, bare: &str) -> Vec<Located> {
        let registry: &dyn SessionRegistry = &*self.cluster.registry;
        registry
            .lookup_except_now(bare, &self.me)
            .unwrap_or_else(|| {
                let mut found = registry.lookup(bare).now_or_never().unwrap_or_default();
                found.retain(|l| l.node != self.me);
                found
            })
    }

    pub(crate) fn register(&self, bare: &str, resource: &str, available: bool) {
        let registry: &dyn SessionRegistry = &*self.cluster.registry;
        self.drive(registry.register(bare, resource, available, &self.me));
    }

    pub(crate) fn unregister(&self, bare: &str, resource: &str) {
        let registry: &dyn SessionRegistry = &*self.cluster.registry;
        self.drive(registry.unregister(bare, resource, &self.me));
    }

    /// Runs a registry write now if it is ready (the embedded one always is), else
    /// in the instance's group: a remote registry then keeps the order of one
    /// session's register and unregister itself.
    fn drive(&self, mut fut: casebook_kit::runtime::BoxFuture<'static, ()>) {
        if (&mut fut).now_or_never().is_none() {
            self.ctx.spawn(fut);
        }
    }

    /// Forwards to the node holding `bare/resource`, if another one does.
    pub(crate) fn forward_full(&self, bare: &str, resource: &str, stanza: &str) -> Delivery {
        let Some(target) = self.elsewhere(bare).into_iter().find(|l| l.has(resource)) else {
            return Delivery::NoSession;
        };
        let flags = if is_message(stanza) {
            FLAG_MESSAGE | FLAG_STORE_ON_FAIL
        } else {
            0
        };
        let entry = Entry {
            op: Op::Full,
            flags,
            bare: bare.to_owned(),
            resource: resource.to_owned(),
            stanza: stanza.to_owned(),
        };
        if self.enqueue(&target.node, entry) {
            Delivery::Delivered(1)
        } else {
            Delivery::NoSession
        }
    }

    /// Forwards to every other node with an available resource of `bare`;
    /// `delivered_here` says whether a local copy already went out (then a failure
    /// elsewhere needs no offline copy). Returns how many nodes accepted it.
    pub(crate) fn forward_bare(&self, bare: &str, stanza: &str, delivered_here: bool) -> usize {
        let targets: Vec<Located> = self
            .elsewhere(bare)
            .into_iter()
            .filter(Located::any_available)
            .collect();
        let message = is_message(stanza);
        let mut flags = if message { FLAG_MESSAGE } else { 0 };
        if message && !delivered_here {
            flags |= FLAG_STORE_ON_FAIL;
        }
        targets
            .iter()
            .filter(|target| {
                self.enqueue(
                    &target.node,
                    Entry {
                        op: Op::Bare,
                        flags,
                        bare: bare.to_owned(),
                        resource: String::new(),
                        stanza: stanza.to_owned(),
                    },
                )
            })
            .count()
    }

    /// Asks the other nodes holding available sessions of `bare` to flush its
    /// offline backlog. Returns how many accepted the nudge.
    pub(crate) fn nudge_elsewhere(&self, bare: &str) -> usize {
        self.elsewhere(bare)
            .iter()
            .filter(|l| l.any_available())
            .filter(|l| {
                self.enqueue(
                    &l.node,
                    Entry {
                        op: Op::Nudge,
                        flags: 0,
                        bare: bare.to_owned(),
                        resource: String::new(),
                        stanza: String::new(),
                    },
                )
            })
            .count()
    }

    /// Queues `entry` for `node`; `false` when the peer is down, gone or full.
    fn enqueue(&self, node: &NodeRef, entry: Entry) -> bool {
        if entry.wire_len() > frame::MAX_FRAME_BYTES / 2 {
            return false;
        }
        let peer = {
            let mut peers = self.peers.lock();
            match peers.get(&node.id) {
                Some(peer) if peer.node == *node && !peer.tx.is_closed() => peer.clone(),
                _ => {
                    let Some(view) = self.cluster.directory.get(node) else {
                        // A departed peer's finished sender: forget it (bounded map).
                        if peers.get(&node.id).is_some_and(|p| p.tx.is_closed()) {
                            peers.remove(&node.id);
                        }
                        return false;
                    };
                    let peer = self.spawn_peer(node.clone(), view.link_addr);
                    peers.insert(node.id.clone(), peer.clone());
                    peer
                }
            }
        };
        if peer.down.load(Ordering::Acquire) {
            if entry.op == Op::Nudge {
                peer.renudge.remember(&entry.bare);
            }
            return false;
        }
        match peer.tx.try_send(entry) {
            Ok(()) => true,
            Err(error) => {
                metrics::counter!("whatsapp_link_queue_full_total").increment(1);
                let entry = error.into_inner();
                if entry.op == Op::Nudge {
                    peer.renudge.remember(&entry.bare);
                }
                false
            }
        }
    }

    fn spawn_peer(&self, node: NodeRef, addr: SocketAddr) -> Peer {
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        let peer = Peer {
            node: node.clone(),
            tx,
            down: Arc::new(AtomicBool::new(false)),
            renudge: Renudge::default(),
        };
        let sender = Sender {
            me: self.me.clone(),
            peer: node,
            addr,
            rx,
            down: peer.down.clone(),
            renudge: peer.renudge.clone(),
            tx: peer.tx.downgrade(),
            cluster: self.cluster.clone(),
            offline: self.offline.clone(),
            local: self.local.get().cloned(),
            stats: self.stats.clone(),
            max_stanza_bytes: self.max_stanza_bytes,
            shutdown: self.ctx.shutdown_token(),
        };
        self.ctx.spawn(sender.run());
        peer
    }

    /// Serves other nodes' links on `listener` (in the instance's task group).
    pub(crate) fn serve(self: &Arc<Self>, listener: TcpListener) {
        let link = self.clone();
        casebook_kit::runtime::serve_tcp(&self.ctx, listener, move |stream, peer| {
            let link = link.clone();
            async move {
                if let Err(error) = link.receive(stream).await {
                    link.stats.inbound_refused.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("whatsapp_link_inbound_errors_total").increment(1);
                    tracing::warn!(%peer, %error, "link connection dropped");
                }
            }
        });
    }

    /// One inbound link connection: hello, then batches until it closes.
    async fn receive(&self, mut stream: TcpStream) -> anyhow::Result<()> {
        let _ = stream.set_nodelay(true);
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let hello = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_frame(&mut stream, &mut buf))
            .await
            .map_err(|_| anyhow::anyhow!("no hello"))??;
        let Some(Frame::Hello {
            to_node, to_epoch, ..
        }) = hello
        else {
            anyhow::bail!("expected a hello, got {hello:?}");
        };
        if to_node != self.me.id || to_epoch != self.me.epoch {
            let mut out = BytesMut::new();
            frame::encode(
                &Frame::Reject {
                    reason: format!("this is {} epoch {}", self.me.id, self.me.epoch),
                },
                &mut out,
            );
            let _ = stream.write_all(&out).await;
            anyhow::bail!("hello for {to_node} epoch {to_epoch}");
        }
        let mut expected = 1u64;
        let mut out = BytesMut::new();
        let shutdown = self.ctx.shutdown_token();
        loop {
            // A stopping node closes its inbound links: senders divert what is
            // unacknowledged, and stop routing here once the node leaves.
            let frame = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                frame = read_frame(&mut stream, &mut buf) => frame?,
            };
            let Some(frame) = frame else {
                return Ok(());
            };
            let Frame::Batch { first_seq, entries } = frame else {
                anyhow::bail!("expected a batch, got another frame");
            };
            if first_seq != expected {
                anyhow::bail!("batch seq {first_seq}, expected {expected}");
            }
            let shared = self.local();
            let mut gone = Vec::new();
            for (i, entry) in entries.iter().enumerate() {
                let seq = first_seq + i as u64;
                let delivered = shared.as_deref().is_some_and(|s| deliver_here(s, entry));
                if !delivered && entry.op != Op::Nudge {
                    gone.push(seq);
                }
            }
            expected = first_seq + entries.len() as u64;
            out.clear();
            frame::encode(
                &Frame::Ack {
                    upto: expected - 1,
                    gone,
                },
                &mut out,
            );
            stream.write_all(&out).await?;
        }
    }
}

fn is_message(stanza: &str) -> bool {
    stanza.starts_with("<message")
}

/// Delivers one entry to this node's sessions; `false` when nobody took it.
fn deliver_here(sessions: &dyn LocalSessions, entry: &Entry) -> bool {
    let delivered = match entry.op {
        Op::Full => {
            let mut d = sessions.to_full(&entry.bare, &entry.resource, &entry.stanza);
            if d == Delivery::NoSession && entry.flags & FLAG_MESSAGE != 0 {
                // RFC 6121 §8.5.3.2.1: the resource vanished; treat as bare.
                d = sessions.to_bare(&entry.bare, &entry.stanza);
            }
            d != Delivery::NoSession
        }
        Op::Bare => sessions.to_bare(&entry.bare, &entry.stanza) != Delivery::NoSession,
        Op::Nudge => sessions.nudge_local(&entry.bare) > 0,
    };
    metrics::counter!("whatsapp_link_entries_received_total").increment(1);
    delivered
}

/// Reads until one frame is whole; `Ok(None)` on a clean close between frames.
async fn read_frame(stream: &mut TcpStream, buf: &mut BytesMut) -> anyhow::Result<Option<Frame>> {
    loop {
        if let Some(frame) = frame::decode(buf)? {
            return Ok(Some(frame));
        }
        buf.reserve(READ_CHUNK);
        if stream.read_buf(buf).await? == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            anyhow::bail!("connection closed inside a frame");
        }
    }
}

/// The sending task of one peer.
struct Sender {
    me: NodeRef,
    peer: NodeRef,
    addr: SocketAddr,
    rx: mpsc::Receiver<Entry>,
    down: Arc<AtomicBool>,
    renudge: Renudge,
    /// To queue re-nudges; weak, so the queue still closes when the node drops it.
    tx: mpsc::WeakSender<Entry>,
    cluster: Arc<Cluster>,
    offline: OfflineStore,
    local: Option<Weak<dyn LocalSessions>>,
    stats: Arc<LinkStats>,
    max_stanza_bytes: usize,
    shutdown: tokio_util::sync::CancellationToken,
}

/// Why a connection ended.
enum Broke {
    /// The peer left the directory: stop for good.
    PeerGone,
    /// Every handle to the queue is gone, or this node is stopping.
    Closed,
    /// I/O or protocol failure: reconnect.
    Failed(anyhow::Error),
}

impl Sender {
    async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        loop {
            if self.shutdown.is_cancelled() || !self.cluster.directory.is_live(&self.peer) {
                self.down.store(true, Ordering::Release);
                self.rx.close();
                self.divert_queued().await;
                return;
            }
            match self.connect().await {
                Ok(stream) => {
                    self.stats.connects.fetch_add(1, Ordering::Relaxed);
                    self.down.store(false, Ordering::Release);
                    self.renudge_now();
                    backoff = BACKOFF_MIN;
                    let mut unacked = VecDeque::new();
                    let broke = self.pump(stream, &mut unacked).await;
                    // Whatever the peer did not acknowledge may not have reached anyone.
                    for (_, entry) in unacked {
                        self.divert(entry).await;
                    }
                    match broke {
                        Broke::Closed => {
                            // Stopping: what is still queued goes offline, nothing lost.
                            self.down.store(true, Ordering::Release);
                            self.rx.close();
                            self.divert_queued().await;
                            return;
                        }
                        Broke::PeerGone => continue,
                        Broke::Failed(error) => {
                            self.failed(&error);
                        }
                    }
                }
                Err(error) => self.failed(&error),
            }
            // Down: refuse new entries at once and divert what waits, then back off.
            self.down.store(true, Ordering::Release);
            self.divert_queued().await;
            tokio::select! {
                _ = self.shutdown.cancelled() => {}
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn failed(&self, error: &anyhow::Error) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("whatsapp_link_failures_total").increment(1);
        tracing::debug!(peer = %self.peer.id, %error, "link to peer failed");
    }

    async fn connect(&self) -> anyhow::Result<TcpStream> {
        let mut stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(self.addr))
            .await
            .map_err(|_| anyhow::anyhow!("connect timed out"))??;
        stream.set_nodelay(true)?;
        let mut out = BytesMut::new();
        frame::encode(
            &Frame::Hello {
                version: frame::VERSION,
                from_node: self.me.id.clone(),
                from_epoch: self.me.epoch,
                to_node: self.peer.id.clone(),
                to_epoch: self.peer.epoch,
            },
            &mut out,
        );
        stream.write_all(&out).await?;
        Ok(stream)
    }

    /// Moves entries from the queue onto the connection until it breaks.
    async fn pump(&mut self, stream: TcpStream, unacked: &mut VecDeque<(u64, Entry)>) -> Broke {
        let (mut reader, mut writer) = stream.into_split();
        let mut next_seq = 1u64;
        // Last seq of each batch in flight.
        let mut in_flight: VecDeque<u64> = VecDeque::new();
        let mut rbuf = BytesMut::with_capacity(4096);
        let mut out = BytesMut::new();
        let mut liveness = tokio::time::interval(Duration::from_millis(500));
        liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let can_send = in_flight.len() < MAX_IN_FLIGHT_BATCHES;
            tokio::select! {
                read = reader.read_buf(&mut rbuf) => {
                    match read {
                        Ok(0) => return Broke::Failed(anyhow::anyhow!("peer closed the link")),
                        Err(error) => return Broke::Failed(error.into()),
                        Ok(_) => {}
                    }
                    loop {
                        match frame::decode(&mut rbuf) {
                            Ok(None) => break,
                            Ok(Some(Frame::Ack { upto, gone })) => {
                                if upto >= next_seq {
                                    return Broke::Failed(anyhow::anyhow!("ack beyond what was sent"));
                                }
                                self.acked(upto, &gone, unacked).await;
                                while in_flight.front().is_some_and(|last| *last <= upto) {
                                    in_flight.pop_front();
                                }
                            }
                            Ok(Some(Frame::Reject { reason })) => {
                                // The peer is another life of that node: this one is gone.
                                tracing::info!(peer = %self.peer.id, %reason, "link rejected");
                                self.cluster.directory.leave(&self.peer);
                                return Broke::PeerGone;
                            }
                            Ok(Some(other)) => {
                                return Broke::Failed(anyhow::anyhow!("unexpected frame {other:?}"));
                            }
                            Err(error) => return Broke::Failed(error.into()),
                        }
                    }
                }
                first = self.rx.recv(), if can_send => {
                    let Some(first) = first else { return Broke::Closed };
                    let mut bytes = first.wire_len();
                    let mut batch = vec![first];
                    while batch.len() < frame::MAX_BATCH && bytes < MAX_BATCH_BYTES {
                        match self.rx.try_recv() {
                            Ok(entry) => {
                                bytes += entry.wire_len();
                                batch.push(entry);
                            }
                            Err(_) => break,
                        }
                    }
                    let count = batch.len() as u64;
                    let frame = Frame::Batch { first_seq: next_seq, entries: batch };
                    out.clear();
                    frame::encode(&frame, &mut out);
                    let Frame::Batch { entries, .. } = frame else { unreachable!() };
                    for (i, entry) in entries.into_iter().enumerate() {
                        unacked.push_back((next_seq + i as u64, entry));
                    }
                    next_seq += count;
                    in_flight.push_back(next_seq - 1);
                    if let Err(error) = writer.write_all(&out).await {
                        return Broke::Failed(error.into());
                    }
                    self.stats.batches_sent.fetch_add(1, Ordering::Relaxed);
                    self.stats.frames_sent.fetch_add(count, Ordering::Relaxed);
                    metrics::counter!("whatsapp_link_batches_sent_total").increment(1);
                    metrics::counter!("whatsapp_link_frames_sent_total").increment(count);
                    metrics::histogram!("whatsapp_link_batch_size").record(count as f64);
                }
                _ = self.shutdown.cancelled() => return Broke::Closed,
                _ = liveness.tick() => {
                    if !self.cluster.directory.is_live(&self.peer) {
                        return Broke::PeerGone;
                    }
                }
            }
        }
    }

    /// Drops acknowledged entries; diverts the ones the peer could not deliver.
    async fn acked(&self, upto: u64, gone: &[u64], unacked: &mut VecDeque<(u64, Entry)>) {
        while unacked.front().is_some_and(|(seq, _)| *seq <= upto) {
            let (seq, entry) = unacked.pop_front().expect("checked");
            if gone.contains(&seq) {
                self.divert(entry).await;
            }
        }
    }

    async fn divert_queued(&mut self) {
        while let Ok(entry) = self.rx.try_recv() {
            self.divert(entry).await;
        }
    }

    /// Queues a nudge for every recipient whose nudge could not be sent while the
    /// link was down: what was stored offline meanwhile reaches sessions that are
    /// online on the peer without waiting for their next login.
    fn renudge_now(&self) {
        let Some(tx) = self.tx.upgrade() else {
            return;
        };
        for bare in self.renudge.take() {
            let nudge = Entry {
                op: Op::Nudge,
                flags: 0,
                bare,
                resource: String::new(),
                stanza: String::new(),
            };
            if let Err(error) = tx.try_send(nudge) {
                self.renudge.remember(&error.into_inner().bare);
            }
        }
    }

    /// Stores a message the peer could not take in the recipient's offline store
    /// (if no other copy was delivered), then nudges the recipient's nodes. A nudge
    /// that did not get through is remembered for the next connection.
    async fn divert(&self, entry: Entry) {
        if entry.op == Op::Nudge {
            self.renudge.remember(&entry.bare);
            return;
        }
        if entry.flags & FLAG_STORE_ON_FAIL == 0 {
            metrics::counter!("whatsapp_link_dropped_total").increment(1);
            return;
        }
        let limits = Limits {
            max_stanza_bytes: self.max_stanza_bytes + 4096,
            ..Limits::default()
        };
        // The stanza was written for a `jabber:client` stream: parse it inside one.
        let wire = format!("{}{}", stream_open(&[]), entry.stanza);
        let mut events = Vec::new();
        let parsed = StreamParser::new(limits).feed_events(wire.as_bytes(), &mut events);
        let Some(StreamEvent::Stanza(element)) = parsed.ok().and_then(|()| events.pop()) else {
            tracing::warn!("unparsable stanza on the link dropped");
            return;
        };
        // Only normal and chat messages are stored (RFC 6121 §8.5.2.2), as locally.
        if !matches!(element.attr("type"), None | Some("normal") | Some("chat")) {
            metrics::counter!("whatsapp_link_dropped_total").increment(1);
            return;
        }
        let id = element.attr("id").map(str::to_owned).unwrap_or_else(|| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            entry.stanza.hash(&mut h);
            format!("cb-link-{:016x}", h.finish())
        });
        let stored = self
            .offline
            .store(NewMessage {
                id,
                recipient: entry.bare.clone(),
                sender: element.attr("from").unwrap_or_default().to_owned(),
                payload: Bytes::from(element.to_xml()),
            })
            .await;
        match stored {
            Ok(_) => {
                self.stats.diverted_offline.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("whatsapp_messages_diverted_offline_total").increment(1);
                if let Some(sessions) = self.local.as_ref().and_then(Weak::upgrade) {
                    sessions.stored_offline(&entry.bare);
                }
            }
            Err(error) => {
                tracing::error!(%error, recipient = %entry.bare, "a diverted message could not be stored");
            }
        }
    }
}
