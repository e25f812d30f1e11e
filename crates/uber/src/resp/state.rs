//! The state commands work on: the shared [`Server`] (keyspace, limits,
//! counters, clock) and each connection's [`Session`]. The connection loop
//! (`server`) and the commands (`cmd`) both use this module and not each other.
//!
//! Guarantees: the keyspace is behind one `parking_lot` lock, which does not
//! poison, so a command that panics while holding it leaves every other
//! connection served (the keys it was changing may be left half-changed; the
//! memory estimate of that key may drift). The keyspace keeps an estimate of
//! its stored bytes, exact with respect to its own formula (see
//! [`Keyspace::used_bytes`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use casebook_kit::clock::{SharedClock, SystemClock};
use parking_lot::RwLock;

use super::frame::Proto;
use super::limits::{BufferBudget, Limits};
use super::live::LiveKey;
use crate::geo::store::{GeoStore, SortedGeoSet};

/// Makes the store for a new key.
pub type StoreFactory = fn() -> Box<dyn GeoStore>;

/// The default store: a sorted set.
pub fn sorted_set() -> Box<dyn GeoStore> {
    Box::new(SortedGeoSet::default())
}

/// What a key costs beyond its name and its store's own estimate.
const KEY_OVERHEAD: usize = 96;

/// The keys of database 0, each a geo set, and an estimate of the bytes they
/// take.
#[derive(Debug, Default)]
pub struct Keyspace {
    keys: HashMap<Bytes, Box<dyn GeoStore>>,
    used_bytes: usize,
}

fn cost(key: &[u8], store: &dyn GeoStore) -> usize {
    key.len() + KEY_OVERHEAD + store.memory_bytes()
}

impl Keyspace {
    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Estimated bytes of stored data: per key its name plus a fixed overhead
    /// plus its store's [`GeoStore::memory_bytes`].
    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    pub fn get(&self, key: &[u8]) -> Option<&dyn GeoStore> {
        self.keys.get(key).map(|store| &**store)
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.keys.contains_key(key)
    }

    /// Runs `change` on `key`'s store, creating it with `create` when missing
    /// (`None`: a missing key is left missing and `None` returned); a store left
    /// empty is deleted, as Redis deletes an emptied key.
    pub fn update<R>(
        &mut self,
        key: &Bytes,
        create: Option<StoreFactory>,
        change: impl FnOnce(&mut dyn GeoStore) -> R,
    ) -> Option<R> {
        if !self.keys.contains_key(key) {
            let store = create?();
            self.used_bytes += cost(key, &*store);
            self.keys.insert(key.clone(), store);
        }
        // Changed in place: a change that panics leaves the key where it was.
        let store = self.keys.get_mut(key).expect("present or just created");
        let before = cost(key, &**store);
        let result = change(&mut **store);
        self.used_bytes = self.used_bytes - before + cost(key, &**store);
        if store.is_empty() {
            self.remove(key);
        }
        Some(result)
    }

    /// Sets `key` to `store` (replacing what was there).
    pub fn insert(&mut self, key: Bytes, store: Box<dyn GeoStore>) {
        self.remove(&key);
        self.used_bytes += cost(&key, &*store);
        self.keys.insert(key, store);
    }

    /// Deletes `key`; whether it existed.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        match self.keys.remove(key) {
            Some(store) => {
                self.used_bytes -= cost(key, &*store);
                true
            }
            None => false,
        }
    }

    /// Empties the keyspace, returning what it held (to be dropped outside the lock).
    pub fn take(&mut self) -> Keyspace {
        std::mem::take(self)
    }
}

/// State shared by every connection.
#[derive(Debug)]
pub struct Server {
    pub keys: RwLock<Keyspace>,
    pub new_store: StoreFactory,
    pub limits: Limits,
    pub started: Instant,
    pub port: AtomicU64,
    pub clients: AtomicUsize,
    next_client_id: AtomicU64,
    /// Request bytes buffered by all connections.
    pub buffered: BufferBudget,
    /// The key served from the driver index, if any.
    pub live: Option<LiveKey>,
    /// The instance's clock (idle timeouts); the system clock until
    /// [`set_clock`](Self::set_clock).
    clock: RwLock<SharedClock>,
}

impl Default for Server {
    fn default() -> Self {
        Self::new(Limits::default(), sorted_set)
    }
}

impl Server {
    pub fn new(limits: Limits, new_store: StoreFactory) -> Self {
        Self {
            keys: RwLock::new(Keyspace::default()),
            new_store,
            limits,
            started: Instant::now(),
            port: AtomicU64::new(0),
            clients: AtomicUsize::new(0),
            next_client_id: AtomicU64::new(1),
            buffered: BufferBudget::new(limits.buffer_budget_bytes),
            live: None,
            clock: RwLock::new(SystemClock::shared()),
        }
    }

    /// Serves `live` from the driver index instead of a sorted set.
    pub fn with_live(mut self, live: LiveKey) -> Self {
        self.live = Some(live);
        self
    }

    /// Uses `clock` for idle timeouts.
    pub fn with_clock(self, clock: SharedClock) -> Self {
        self.set_clock(clock);
        self
    }

    /// Uses `clock` for idle timeouts of connections accepted from now on.
    pub fn set_clock(&self, clock: SharedClock) {
        *self.clock.write() = clock;
    }

    pub fn clock(&self) -> SharedClock {
        self.clock.read().clone()
    }

    /// The live key, if `key` is it.
    pub fn live_key(&self, key: &[u8]) -> Option<&LiveKey> {
        self.live.as_ref().filter(|live| live.name == key)
    }

    /// Whether stored data is over `maxmemory` (writes are then refused).
    pub fn over_maxmemory(&self) -> bool {
        self.limits.max_memory_bytes != 0
            && self.limits.over_maxmemory(self.keys.read().used_bytes())
    }

    /// A new connection's session.
    pub fn new_session(&self) -> Session {
        Session {
            proto: Proto::Resp2,
            id: self.next_client_id.fetch_add(1, Ordering::Relaxed),
            name: None,
        }
    }
}

/// Per-connection state.
#[derive(Debug)]
pub struct Session {
    pub proto: Proto,
    pub id: u64,
    pub name: Option<Bytes>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::store::AddMode;

    #[test]
    fn the_estimate_follows_adds_removes_and_deletes() {
        let mut keys = Keyspace::default();
        let key = Bytes::from("k");
        keys.update(&key, Some(sorted_set), |set| {
            set.add(Bytes::from("a"), 1.0, AddMode::Upsert);
            set.add(Bytes::from("bb"), 2.0, AddMode::Upsert);
        });
        let two = keys.used_bytes();
        assert!(two > 0);
        keys.update(&key, None, |set| set.remove(b"bb"));
        assert!(keys.used_bytes() < two);
        keys.update(&key, None, |set| set.remove(b"a"));
        assert_eq!((keys.len(), keys.used_bytes()), (0, 0), "an emptied key is gone");
        assert_eq!(keys.update(&key, None, |set| set.len()), None);
        let mut set = sorted_set();
        set.add(Bytes::from("a"), 1.0, AddMode::Upsert);
        keys.insert(key.clone(), set);
        assert!(keys.used_bytes() > 0);
        assert!(keys.remove(&key));
        assert_eq!(keys.used_bytes(), 0);
    }
}
