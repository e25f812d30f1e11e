//! Address rewrites: the one hook through which a fault proxy steers callers.
//!
//! Discovery owns the table; whoever puts a proxy in front of an instance (the
//! Toxiproxy-compatible module) feeds it. When an instance's registered address is
//! in the table, [`Registry::instances`](super::Registry::instances) — the answer
//! callers resolve services with — names the proxy's address instead, and says so in
//! the instance's metadata ([`PROXIED_BY`], [`PROXIED_FROM`]): the kit's client
//! reads metadata as an open map, so the answer's shape does not change.
//!
//! Only the service query is rewritten: `GET /apps`, `GET /apps/{service}/{id}` and
//! everything the admin API and the autoscaler read stay the registered truth, so
//! instance management never talks to a proxy by mistake.
//!
//! Bounds: at most [`MAX_REWRITES`] entries (a replacement beyond it keeps the
//! first ones, in address order). Callers cache answers (the kit's resolver: 5 s), so
//! a change reaches them within that cache's lifetime, not at once.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use casebook_kit::discovery::InstanceView;
use parking_lot::RwLock;

/// Metadata key naming what proxies a rewritten instance, e.g. `toxiproxy:redis`.
pub const PROXIED_BY: &str = "proxied_by";
/// Metadata key keeping a rewritten instance's registered address.
pub const PROXIED_FROM: &str = "proxied_from";
/// The most rewrites the table holds.
pub const MAX_REWRITES: usize = 4096;

/// Where calls to one registered address go instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// The address callers are given instead of the registered one.
    pub to: SocketAddr,
    /// Who asked, for the answer's metadata, e.g. `toxiproxy:redis`.
    pub by: String,
}

/// The shared table: registered address → rewrite. Cheap to clone (one `Arc`).
#[derive(Debug, Clone, Default)]
pub struct AddressRewrites {
    table: Arc<RwLock<HashMap<SocketAddr, Rewrite>>>,
}

impl AddressRewrites {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the whole table (the feeder recomputes it from its own state, so a
    /// lost update cannot leave a stale entry behind).
    pub fn replace(&self, rewrites: BTreeMap<SocketAddr, Rewrite>) {
        let table: HashMap<_, _> = rewrites.into_iter().take(MAX_REWRITES).collect();
        *self.table.write() = table;
    }

    /// The rewrite of `address`, if any.
    pub fn get(&self, address: SocketAddr) -> Option<Rewrite> {
        self.table.read().get(&address).cloned()
    }

    /// Entries now.
    pub fn len(&self) -> usize {
        self.table.read().len()
    }

    /// Whether nothing is rewritten.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies the table to one answer's instances in place.
    pub fn apply(&self, instances: &mut [InstanceView]) {
        let table = self.table.read();
        if table.is_empty() {
            return;
        }
        for view in instances {
            if let Some(rewrite) = table.get(&view.instance.address) {
                view.metadata
                    .insert(PROXIED_FROM.to_owned(), view.instance.address.to_string());
                view.metadata
                    .insert(PROXIED_BY.to_owned(), rewrite.by.clone());
                view.instance.address = rewrite.to;
            }
        }
    }
}
