//! Regional chat nodes working as one service: who is where, and how a stanza
//! crosses from one node to another.
//!
//! Every chat node of a process shares one [`Cluster`] (held by the domain): a
//! [`Directory`] of live nodes (id, epoch, client and link addresses, load) and the
//! [`registry`] mapping a bare JID to the nodes holding its sessions. Each node
//! runs a [`link`]: a listener for other nodes' links and, per peer, one outgoing
//! TCP connection carrying all its traffic to that peer in batches, acknowledged by
//! the receiver.
//!
//! Guarantees: a node is in the directory from [`Directory::join`] until its
//! membership ends (its heartbeat task dies with the instance, so a kill or stop
//! removes it at once) or its lease lapses on the injected clock (a hung node);
//! each join gets a fresh epoch, so a restarted node is never mistaken for its
//! previous life (the link hello names the epoch it expects). Nothing is lost when
//! a peer fails: see [`link`]. Deliberately absent: nodes in other processes (the
//! directory and registry are in-process; the [`registry::SessionRegistry`] trait
//! and the link's TCP wire are what a multi-process deployment would keep),
//! rebalancing sessions between nodes.
//!
//! | module | role |
//! |---|---|
//! | [`registry`] | `SessionRegistry` (bare JID → nodes) and its sharded in-process implementation |
//! | [`frame`] | the link's length-prefixed binary frames: hello, batch, ack, reject |
//! | [`link`] | the node-to-node link: per-peer bounded queue, batching, acks, reconnect, offline diversion |

pub mod frame;
pub mod link;
pub mod registry;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use casebook_kit::clock::SharedClock;
use parking_lot::{Mutex, RwLock};

use registry::EmbeddedRegistry;

/// How long a node stays in the directory without renewing.
pub const LEASE: Duration = Duration::from_secs(10);

/// One life of one node: its instance id and the epoch it joined with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeRef {
    pub id: String,
    pub epoch: u64,
}

/// What a node tells the directory when it joins.
#[derive(Debug, Clone)]
pub struct MemberSpec {
    pub id: String,
    pub region: String,
    /// Where clients connect (named by `<see-other-host/>`).
    pub client_addr: SocketAddr,
    /// Where other nodes' links connect.
    pub link_addr: SocketAddr,
    /// The node's live connection count.
    pub live: Arc<AtomicUsize>,
    pub max_connections: usize,
}

/// A live node as the directory lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub node: NodeRef,
    pub region: String,
    pub client_addr: SocketAddr,
    pub link_addr: SocketAddr,
    pub connections: usize,
    pub max_connections: usize,
}

#[derive(Debug)]
struct Member {
    spec: MemberSpec,
    epoch: u64,
    renewed: Instant,
}

/// The live nodes of this process.
#[derive(Debug)]
pub struct Directory {
    clock: SharedClock,
    lease: Duration,
    members: RwLock<HashMap<String, Member>>,
    next_epoch: AtomicU64,
}

impl Directory {
    pub fn new(clock: SharedClock, lease: Duration) -> Self {
        Self {
            clock,
            lease,
            members: RwLock::default(),
            next_epoch: AtomicU64::new(0),
        }
    }

    /// Adds (or replaces) a node under a fresh epoch.
    pub fn join(&self, spec: MemberSpec) -> NodeRef {
        let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed) + 1;
        let node = NodeRef {
            id: spec.id.clone(),
            epoch,
        };
        self.members.write().insert(
            spec.id.clone(),
            Member {
                spec,
                epoch,
                renewed: self.clock.now(),
            },
        );
        node
    }

    /// Extends `node`'s lease; `false` if it is no longer a member.
    pub fn renew(&self, node: &NodeRef) -> bool {
        match self.members.write().get_mut(&node.id) {
            Some(m) if m.epoch == node.epoch => {
                m.renewed = self.clock.now();
                true
            }
            _ => false,
        }
    }

    /// Removes `node` (only that life of it).
    pub fn leave(&self, node: &NodeRef) {
        let mut members = self.members.write();
        if members.get(&node.id).is_some_and(|m| m.epoch == node.epoch) {
            members.remove(&node.id);
        }
    }

    fn alive(&self, member: &Member, now: Instant) -> bool {
        now.saturating_duration_since(member.renewed) < self.lease
    }

    /// Whether this life of the node is a member with a current lease.
    pub fn is_live(&self, node: &NodeRef) -> bool {
        let now = self.clock.now();
        self.members
            .read()
            .get(&node.id)
            .is_some_and(|m| m.epoch == node.epoch && self.alive(m, now))
    }

    /// The live node `node`, if it is one.
    pub fn get(&self, node: &NodeRef) -> Option<NodeView> {
        let now = self.clock.now();
        self.members
            .read()
            .get(&node.id)
            .filter(|m| m.epoch == node.epoch && self.alive(m, now))
            .map(view)
    }

    /// Every live node, by id.
    pub fn nodes(&self) -> Vec<NodeView> {
        let now = self.clock.now();
        let mut nodes: Vec<NodeView> = self
            .members
            .read()
            .values()
            .filter(|m| self.alive(m, now))
            .map(view)
            .collect();
        nodes.sort_by(|a, b| a.node.id.cmp(&b.node.id));
        nodes
    }

    /// The live node other than `me` with room and the lowest load (connections as
    /// a fraction of its maximum), for `<see-other-host/>`.
    pub fn least_loaded_other(&self, me: &str) -> Option<NodeView> {
        self.least_loaded_where(me, |_| true)
    }

    /// [`Directory::least_loaded_other`] among the nodes `keep` accepts (those of
    /// regions that are not evacuated, for a node whose region is).
    pub fn least_loaded_where(
        &self,
        me: &str,
        keep: impl Fn(&NodeView) -> bool,
    ) -> Option<NodeView> {
        self.nodes()
            .into_iter()
            .filter(|n| n.node.id != me && n.connections < n.max_connections && keep(n))
            .min_by(|a, b| {
                // a.conn / a.max < b.conn / b.max, without floats.
                (a.connections as u128 * b.max_connections as u128)
                    .cmp(&(b.connections as u128 * a.max_connections as u128))
                    .then_with(|| a.node.id.cmp(&b.node.id))
            })
    }
}

fn view(m: &Member) -> NodeView {
    NodeView {
        node: NodeRef {
            id: m.spec.id.clone(),
            epoch: m.epoch,
        },
        region: m.spec.region.clone(),
        client_addr: m.spec.client_addr,
        link_addr: m.spec.link_addr,
        connections: m.spec.live.load(Ordering::Acquire),
        max_connections: m.spec.max_connections,
    }
}

/// Counters of one node's outgoing links (all peers together).
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Entries written to peers.
    pub frames_sent: AtomicU64,
    /// Batch frames written (one `write` each).
    pub batches_sent: AtomicU64,
    /// Connections established to peers.
    pub connects: AtomicU64,
    /// Connects that failed, connections that broke, malformed answers.
    pub failures: AtomicU64,
    /// Messages the link stored offline because the peer could not take them.
    pub diverted_offline: AtomicU64,
    /// Link connections this node accepted then dropped for a protocol error.
    pub inbound_refused: AtomicU64,
}

/// Every node of one domain in this process: directory, registry, link counters.
#[derive(Debug)]
pub struct Cluster {
    pub directory: Arc<Directory>,
    pub registry: Arc<EmbeddedRegistry>,
    stats: Mutex<HashMap<String, Arc<LinkStats>>>,
}

impl Cluster {
    pub fn new(clock: SharedClock) -> Self {
        let directory = Arc::new(Directory::new(clock, LEASE));
        Self {
            registry: Arc::new(EmbeddedRegistry::new(directory.clone())),
            directory,
            stats: Mutex::default(),
        }
    }

    /// The link counters of the node with this instance id (kept across restarts).
    pub fn link_stats(&self, node_id: &str) -> Arc<LinkStats> {
        self.stats
            .lock()
            .entry(node_id.to_owned())
            .or_default()
            .clone()
    }
}

/// A node's membership: renewed by the task that holds it, ended when that task
/// ends (graceful stop) or is dropped (kill), purging the node's registry entries.
#[derive(Debug)]
pub(crate) struct Membership {
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) node: NodeRef,
}

impl Membership {
    /// Renews the lease until `shutdown`; the membership ends with this future.
    pub(crate) async fn keep(self, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(LEASE / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if !self.cluster.directory.renew(&self.node) {
                        tracing::warn!(node = %self.node.id, "membership lost");
                        return;
                    }
                    metrics::gauge!("whatsapp_cluster_nodes")
                        .set(self.cluster.directory.nodes().len() as f64);
                }
            }
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.cluster.directory.leave(&self.node);
        let purged = self.cluster.registry.purge(&self.node);
        tracing::info!(node = %self.node.id, epoch = self.node.epoch, purged, "node left the cluster");
    }
}
