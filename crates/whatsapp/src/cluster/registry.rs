//! The session registry: which nodes hold sessions of a bare JID.
//!
//! [`SessionRegistry`] is the seam: its methods return futures so that a remote
//! store (Redis: a set per bare JID, keys expiring with the node's lease) fits
//! behind it. [`EmbeddedRegistry`] is the in-process implementation shared by every
//! node of the process through the domain's [`Cluster`](super::Cluster): sharded
//! (one lock per shard, chosen by a hash of the bare JID), so registrations on
//! different users do not contend; its futures are ready at once.
//!
//! Guarantees: an entry (bare JID, node, resource, available) exists between the
//! router's `register` (at bind, and again at each availability change) and its
//! `unregister` (at unbind), so full-JID routing knows the one node that holds the
//! resource and bare-JID routing knows which nodes have an available resource;
//! `lookup` never returns a node that the [`Directory`](super::Directory) says is
//! dead (killed, stopped, or whose lease lapsed) — such entries are dropped as they
//! are met, and all of a departing node's entries are purged when it leaves.
//! Bounded: at most [`MAX_NODES_PER_USER`] nodes and
//! [`MAX_RESOURCES_PER_ACCOUNT`](crate::node::router::MAX_RESOURCES_PER_ACCOUNT)
//! resources per node for one bare JID. Not here: priorities (the receiving node
//! applies them), presence payloads.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use casebook_kit::runtime::BoxFuture;
use parking_lot::Mutex;

use super::{Directory, NodeRef};
use crate::node::router::MAX_RESOURCES_PER_ACCOUNT;

/// Most distinct nodes one account may be registered on.
pub const MAX_NODES_PER_USER: usize = 64;
const SHARDS: usize = 64;

/// The sessions of one bare JID on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub node: NodeRef,
    /// (resource, available), in bind order.
    pub resources: Vec<(String, bool)>,
}

impl Located {
    /// Whether `resource` is bound there.
    pub fn has(&self, resource: &str) -> bool {
        self.resources.iter().any(|(r, _)| r == resource)
    }

    /// Whether some resource there is available.
    pub fn any_available(&self) -> bool {
        self.resources.iter().any(|(_, a)| *a)
    }
}

/// Bare JID → the nodes (and resources) holding its sessions.
pub trait SessionRegistry: Send + Sync + std::fmt::Debug + 'static {
    /// `bare/resource` is bound on `node` (available or not); repeated on changes.
    fn register(
        &self,
        bare: &str,
        resource: &str,
        available: bool,
        node: &NodeRef,
    ) -> BoxFuture<'static, ()>;
    /// `bare/resource` is no longer bound on `node`.
    fn unregister(&self, bare: &str, resource: &str, node: &NodeRef) -> BoxFuture<'static, ()>;
    /// The live nodes holding sessions of `bare`.
    fn lookup(&self, bare: &str) -> BoxFuture<'static, Vec<Located>>;

    /// The routing hot path's synchronous answer, when the implementation has one
    /// (the embedded registry; a remote one's local cache): the live nodes other
    /// than `except` holding sessions of `bare`. `None` means "ask [`lookup`]".
    ///
    /// [`lookup`]: SessionRegistry::lookup
    fn lookup_except_now(&self, bare: &str, except: &NodeRef) -> Option<Vec<Located>> {
        let _ = (bare, except);
        None
    }
}

/// The in-process registry.
#[derive(Debug)]
pub struct EmbeddedRegistry {
    directory: Arc<Directory>,
    shards: Vec<Mutex<HashMap<String, Vec<Located>>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl EmbeddedRegistry {
    pub fn new(directory: Arc<Directory>) -> Self {
        Self {
            directory,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: Default::default(),
        }
    }

    fn shard(&self, bare: &str) -> &Mutex<HashMap<String, Vec<Located>>> {
        &self.shards[(self.hasher.hash_one(bare) as usize) % SHARDS]
    }

    /// Synchronous [`SessionRegistry::register`].
    pub fn register_now(&self, bare: &str, resource: &str, available: bool, node: &NodeRef) {
        let mut shard = self.shard(bare).lock();
        let nodes = shard.entry(bare.to_owned()).or_default();
        // A node that restarted under the same id replaces its older epoch.
        nodes.retain(|l| l.node.id != node.id || l.node.epoch == node.epoch);
        let at = match nodes.iter().position(|l| l.node == *node) {
            Some(at) => at,
            None => {
                if nodes.len() >= MAX_NODES_PER_USER {
                    nodes.retain(|l| self.directory.is_live(&l.node));
                }
                if nodes.len() >= MAX_NODES_PER_USER {
                    return;
                }
                nodes.push(Located {
                    node: node.clone(),
                    resources: Vec::new(),
                });
                nodes.len() - 1
            }
        };
        let resources = &mut nodes[at].resources;
        if let Some(entry) = resources.iter_mut().find(|(r, _)| r == resource) {
            entry.1 = available;
        } else if resources.len() < MAX_RESOURCES_PER_ACCOUNT {
            resources.push((resource.to_owned(), available));
        }
    }

    /// Synchronous [`SessionRegistry::unregister`].
    pub fn unregister_now(&self, bare: &str, resource: &str, node: &NodeRef) {
        let mut shard = self.shard(bare).lock();
        if let Some(nodes) = shard.get_mut(bare) {
            for located in nodes.iter_mut().filter(|l| l.node == *node) {
                located.resources.retain(|(r, _)| r != resource);
            }
            nodes.retain(|l| !l.resources.is_empty());
            if nodes.is_empty() {
                shard.remove(bare);
            }
        }
    }

    /// Synchronous [`SessionRegistry::lookup`]; drops dead nodes' entries it meets.
    pub fn lookup_now(&self, bare: &str) -> Vec<Located> {
        let mut shard = self.shard(bare).lock();
        let Some(nodes) = shard.get_mut(bare) else {
            return Vec::new();
        };
        nodes.retain(|l| self.directory.is_live(&l.node));
        let found = nodes.clone();
        if nodes.is_empty() {
            shard.remove(bare);
        }
        found
    }

    /// Removes every entry of `node` (it left: killed or stopped). Returns how many
    /// bare JIDs it was registered under.
    pub fn purge(&self, node: &NodeRef) -> usize {
        let mut removed = 0;
        for shard in &self.shards {
            shard.lock().retain(|_, nodes| {
                let before = nodes.len();
                nodes.retain(|l| l.node != *node);
                removed += before - nodes.len();
                !nodes.is_empty()
            });
        }
        removed
    }

    /// Registered (bare JID, node) pairs, dead nodes included until met or purged.
    pub fn entries(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().values().map(Vec::len).sum::<usize>())
            .sum()
    }
}

impl SessionRegistry for EmbeddedRegistry {
    fn register(
        &self,
        bare: &str,
        resource: &str,
        available: bool,
        node: &NodeRef,
    ) -> BoxFuture<'static, ()> {
        self.register_now(bare, resource, available, node);
        Box::pin(std::future::ready(()))
    }

    fn unregister(&self, bare: &str, resource: &str, node: &NodeRef) -> BoxFuture<'static, ()> {
        self.unregister_now(bare, resource, node);
        Box::pin(std::future::ready(()))
    }

    fn lookup(&self, bare: &str) -> BoxFuture<'static, Vec<Located>> {
        Box::pin(std::future::ready(self.lookup_now(bare)))
    }

    fn lookup_except_now(&self, bare: &str, except: &NodeRef) -> Option<Vec<Located>> {
        let mut shard = self.shard(bare).lock();
        let Some(nodes) = shard.get_mut(bare) else {
            return Some(Vec::new());
        };
        nodes.retain(|l| self.directory.is_live(&l.node));
        // Only the other nodes are copied: a user on this node alone costs nothing.
        let found = nodes
            .iter()
            .filter(|l| l.node != *except)
            .cloned()
            .collect();
        if nodes.is_empty() {
            shard.remove(bare);
        }
        Some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use casebook_kit::clock::ManualClock;
    use futures::FutureExt;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    fn member(directory: &Directory, id: &str) -> NodeRef {
        directory.join(super::super::MemberSpec {
            id: id.into(),
            region: "r".into(),
            client_addr: "127.0.0.1:1".parse().unwrap(),
            link_addr: "127.0.0.1:2".parse().unwrap(),
            live: Arc::new(AtomicUsize::new(0)),
            max_connections: 10,
        })
    }

    fn nodes(found: &[Located]) -> Vec<NodeRef> {
        found.iter().map(|l| l.node.clone()).collect()
    }

    #[test]
    fn lookups_skip_dead_nodes_and_leases_lapse_on_the_clock() {
        let clock = ManualClock::new();
        let directory = Arc::new(Directory::new(clock.shared(), Duration::from_secs(5)));
        let registry = EmbeddedRegistry::new(directory.clone());
        let a = member(&directory, "a");
        let b = member(&directory, "b");
        registry
            .register("u@d", "phone", false, &a)
            .now_or_never()
            .unwrap();
        registry
            .register("u@d", "phone", true, &a)
            .now_or_never()
            .unwrap();
        registry
            .register("u@d", "desk", true, &b)
            .now_or_never()
            .unwrap();
        let found = registry.lookup("u@d").now_or_never().unwrap();
        assert_eq!(nodes(&found), [a.clone(), b.clone()]);
        assert_eq!(found[0].resources, [("phone".to_owned(), true)]);
        assert_eq!(
            nodes(&registry.lookup_except_now("u@d", &a).unwrap()),
            vec![b.clone()]
        );
        assert!(found[1].has("desk") && !found[1].has("phone"));

        // b stops renewing: after the lease it is dead and forgotten.
        clock.advance(Duration::from_secs(3));
        directory.renew(&a);
        clock.advance(Duration::from_secs(3));
        assert_eq!(nodes(&registry.lookup_now("u@d")), vec![a.clone()]);
        assert_eq!(registry.entries(), 1, "the dead entry was dropped");

        // a restarts under the same id: the new epoch replaces the old one.
        directory.leave(&a);
        assert!(registry.lookup_now("u@d").is_empty());
        let a2 = member(&directory, "a");
        assert_ne!(a2.epoch, a.epoch);
        registry.register_now("u@d", "r", true, &a2);
        registry.register_now("v@d", "r", true, &a2);
        assert_eq!(nodes(&registry.lookup_now("u@d")), vec![a2.clone()]);
        assert_eq!(registry.purge(&a2), 2);
        assert_eq!(registry.entries(), 0);
    }

    #[test]
    fn unregister_removes_only_that_resource_of_that_node() {
        let directory = Arc::new(Directory::new(
            ManualClock::new().shared(),
            Duration::from_secs(5),
        ));
        let registry = EmbeddedRegistry::new(directory.clone());
        let a = member(&directory, "a");
        let b = member(&directory, "b");
        registry.register_now("u@d", "x", true, &a);
        registry.register_now("u@d", "y", false, &a);
        registry.register_now("u@d", "x", true, &b);
        registry.unregister_now("u@d", "x", &a);
        let found = registry.lookup_now("u@d");
        assert_eq!(found[0].resources, [("y".to_owned(), false)]);
        assert!(!found[0].any_available());
        registry.unregister_now("u@d", "y", &a);
        assert_eq!(nodes(&registry.lookup_now("u@d")), vec![b.clone()]);
        registry.unregister_now("u@d", "x", &b);
        assert_eq!(registry.entries(), 0);
    }
}
